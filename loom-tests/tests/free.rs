//! The free-slot stack (`src/core/free.rs`) shared between senders and deleters.
#![cfg(loom)]

mod common;

use common::{check, check_bounded, tiny_queue, Body};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use visq::{ManualClock, Queue, SendError};

/// Model F1: ABA on the free stack's head. The main thread's send pops the top slot (0, whose
/// link names slot 1); the spawned thread sends twice (taking slots 0 and 1, or one of them
/// if the main thread's send came first), receives one message and deletes it (pushing its
/// slot back on top). If the main thread stalls between reading slot 0's link and its CAS, the
/// head is slot 0 again when it resumes, but slot 1 is now held: the CAS must fail (the tag
/// moved), or two messages end up in slot 1. Afterwards, exactly as many more sends are
/// accepted as there are free slots, every accepted message is delivered once, and every body
/// is dropped once; no body cell is accessed concurrently.
#[test]
fn aba_on_the_free_stack() {
    check("aba_on_the_free_stack", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        const CAPACITY: usize = 2;
        let q = Arc::new(tiny_queue(CAPACITY, &clock));

        let other = {
            let (q, live) = (q.clone(), live.clone());
            thread::spawn(move || {
                let mut accepted = vec![];
                for value in [1, 2] {
                    match q.send(Body::new(value, &live)) {
                        Ok(_) => accepted.push(value),
                        Err(SendError::Full(_)) => {}
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                }
                let d = q.try_receive().expect("this thread sent one at least");
                let deleted = d.body().value;
                q.delete(d.receipt()).unwrap();
                (accepted, deleted)
            })
        };
        let mine = q.send(Body::new(3, &live)).is_ok();
        let (mut accepted, deleted) = other.join().unwrap();
        if mine {
            accepted.push(3);
        }
        accepted.retain(|&value| value != deleted);
        let held = accepted.len();
        assert!(held <= CAPACITY);

        let mut extra = 0;
        while q.send(Body::new(10 + extra, &live)).is_ok() {
            accepted.push(10 + extra);
            extra += 1;
            assert!(
                held + extra as usize <= CAPACITY,
                "a send was accepted with every slot held"
            );
        }
        assert_eq!(held + extra as usize, CAPACITY, "a free slot was lost");

        let mut delivered = vec![];
        while let Some(d) = q.try_receive() {
            delivered.push(d.body().value);
            q.delete(d.receipt()).unwrap();
        }
        delivered.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(delivered, accepted, "every held message is delivered once");
        drop(q);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    });
}

/// Sends until the queue refuses one, then receives and deletes everything; checks that the
/// queue took exactly as many as it had free slots, that every accepted message was delivered
/// once, and that every body was dropped once.
fn fill_then_drain(q: Arc<Queue<Body>>, mut accepted: Vec<u32>, live: &Arc<AtomicUsize>) {
    let held = accepted.len();
    let capacity = q.capacity();
    let mut extra = 0;
    while q.send(Body::new(100 + extra, live)).is_ok() {
        accepted.push(100 + extra);
        extra += 1;
        assert!(
            held + extra as usize <= capacity,
            "a send was accepted with every slot held"
        );
    }
    assert_eq!(held + extra as usize, capacity, "a free slot was lost");
    let mut delivered = vec![];
    while let Some(d) = q.try_receive() {
        delivered.push(d.body().value);
        q.delete(d.receipt()).unwrap();
    }
    delivered.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(delivered, accepted, "every held message is delivered once");
    drop(q);
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

/// Model F2: a chain goes back to the depot while a refill that read the depot's head is
/// stalled (the ABA of magazine exchange). Under loom chains hold one slot and a magazine
/// two, so the depot starts as the chains [0], [1], [2]. The main thread's send refills its
/// empty magazine from the depot: it reads the head (slot 0 on top) and slot 0's header
/// (slot 1 below). Meanwhile the spawned thread sends three messages (taking chains 0, 1 and
/// 2, or what the main thread left), receives and deletes them: its magazine fills, and the
/// third delete sends chain [0] back to the depot, on top again. A stalled CAS that succeeded
/// would make slot 1, held in the spawned thread's magazine, the depot's top: two owners.
/// Afterwards the queue delivers each held message once, accepts a send once empty and drops
/// each body once; no body cell is accessed concurrently. Known gap: at this bound and with
/// this light check, the model does not catch a depot tag that never moves (see
/// loom-tests/README.md, F2).
#[test]
fn depot_exchange_aba() {
    // Bound 2: the spawned thread's nine operations make each execution long, and at the
    // default bound the model runs for more than 400 s (see loom-tests/README.md).
    check_bounded("depot_exchange_aba", 2, || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(3, &clock));
        let other = {
            let (q, live) = (q.clone(), live.clone());
            thread::spawn(move || {
                let mut accepted = vec![];
                for value in [1, 2, 3] {
                    if q.send(Body::new(value, &live)).is_ok() {
                        accepted.push(value);
                    }
                }
                let mut deleted = vec![];
                while let Some(d) = q.try_receive() {
                    deleted.push(d.body().value);
                    q.delete(d.receipt()).unwrap();
                }
                (accepted, deleted)
            })
        };
        let mine = q.send(Body::new(4, &live)).is_ok();
        let (mut accepted, deleted) = other.join().unwrap();
        if mine {
            accepted.push(4);
        }
        accepted.retain(|value| !deleted.contains(value));
        // Lighter than `fill_then_drain`, whose longer executions exceed loom's branch limit
        // here: a slot handed out twice shows as a concurrent access to its body, or as a
        // message lost or delivered twice.
        let mut delivered = vec![];
        while let Some(d) = q.try_receive() {
            delivered.push(d.body().value);
            q.delete(d.receipt()).unwrap();
        }
        delivered.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(delivered, accepted, "every held message is delivered once");
        assert!(q.send(Body::new(9, &live)).is_ok(), "a free slot was lost");
        drop(q);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    });
}

/// Model F3: `Full` is exact with slots parked in magazines. The queue has two slots and the
/// main thread fills it. The spawned thread receives one message and deletes it: the slot
/// goes into the spawned thread's magazine, out of the main thread's home and of the depot.
/// The main thread then sends: it must find that slot whenever the delete has returned before
/// the send began (`SendError::Full` only with both slots held), and a send that finds it
/// must be its only owner. Afterwards the queue accepts exactly as many sends as it has free
/// slots, delivers each held message once and drops each body once.
#[test]
fn full_is_exact_with_slots_in_magazines() {
    check("full_is_exact_with_slots_in_magazines", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();
        q.send(Body::new(2, &live)).unwrap();
        let deleted = Arc::new(AtomicUsize::new(0));
        let other = {
            let (q, deleted) = (q.clone(), deleted.clone());
            thread::spawn(move || {
                let d = q.try_receive().expect("two messages are ready");
                let value = d.body().value;
                q.delete(d.receipt()).unwrap();
                deleted.store(1, Ordering::SeqCst);
                value
            })
        };
        let freed_before = deleted.load(Ordering::SeqCst) == 1;
        let mine = q.send(Body::new(3, &live)).is_ok();
        assert!(
            mine || !freed_before,
            "refused while the deleted message's slot was free"
        );
        let gone = other.join().unwrap();
        let mut accepted = vec![1, 2];
        accepted.retain(|&value| value != gone);
        if mine {
            accepted.push(3);
        }
        fill_then_drain(q, accepted, &live);
    });
}
