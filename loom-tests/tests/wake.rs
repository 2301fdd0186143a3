//! Model 8: a receiver parking while something makes it runnable. A lost wake-up would leave
//! it blocked forever, which loom reports (its condition variable never times out).
#![cfg(loom)]

mod common;

use common::{check, check_bounded, drops_every_body, tiny_queue, Body, LEASE, TICK};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;
use visq::{ManualClock, Queue};

const FOREVER: Duration = Duration::from_secs(24 * 3600);

/// A receiver blocked in `receive` until a message comes; it answers the receive count.
fn parked_receiver(q: &Arc<Queue<Body>>) -> thread::JoinHandle<Option<u32>> {
    let q = q.clone();
    thread::spawn(move || q.receive(FOREVER).map(|d| d.receive_count()))
}

/// 8a: a send wakes the parked receiver.
#[test]
fn send_wakes_parked_receiver() {
    check("send_wakes_parked_receiver", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let receiver = {
            let q = q.clone();
            thread::spawn(move || q.receive(FOREVER).map(|d| d.body().value))
        };
        q.send(Body::new(1, &live)).unwrap();
        assert_eq!(receiver.join().unwrap(), Some(1));
        drops_every_body(q, &live);
    });
}

/// 8b: a close wakes the parked receiver, which returns `None`.
#[test]
fn close_wakes_parked_receiver() {
    check("close_wakes_parked_receiver", || {
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let receiver = {
            let q = q.clone();
            thread::spawn(move || q.receive(FOREVER).is_none())
        };
        q.close();
        assert!(receiver.join().unwrap());
    });
}

/// 8c: a lease expiring (found by another thread's operation after the clock moved) wakes the
/// parked receiver, which gets the message again.
#[test]
fn expiry_wakes_parked_receiver() {
    check("expiry_wakes_parked_receiver", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        q.send(Body::new(1, &live)).unwrap();
        q.try_receive().unwrap();
        let receiver = parked_receiver(&q);
        clock.advance(LEASE + TICK);
        // Runs the wheel, or finds the receiver running it (which then re-checks the clock).
        q.stats();
        assert_eq!(receiver.join().unwrap(), Some(2));
        assert_eq!(q.stats().expired, 1);
        drops_every_body(q, &live);
    });
}

/// 8d: a receiver that parks while another thread leases a message wakes for that lease's
/// deadline. The receiver may read the wheel's next due tick (none yet: a whole-wait nap)
/// before the lease files its deadline and register as a sleeper only after, when there was
/// nobody to tell; its re-check must then see that the next due tick moved. The lease is
/// abandoned and nothing else runs the wheel: only the receiver's own nap ending at the
/// deadline (a timer loom may fire at any moment, see `Waiters::sleep`) gets the message out.
/// Bounded at 3 preemptions: the receiver goes round its loop on every "timer", which costs
/// 229,464 interleavings (25 s) at 5 against 24,274 (2.8 s) at 3; the fault is caught at 2.
#[test]
fn lease_deadline_wakes_receiver_parked_meanwhile() {
    check_bounded("lease_deadline_wakes_receiver_parked_meanwhile", 3, || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        let receiver = parked_receiver(&q);
        q.send(Body::new(1, &live)).unwrap();
        // Leases the message (unless the receiver got it first) and abandons the lease.
        let abandoned = q.try_receive().is_some();
        clock.advance(LEASE + TICK);
        let expected = if abandoned { 2 } else { 1 };
        assert_eq!(receiver.join().unwrap(), Some(expected));
        drops_every_body(q, &live);
    });
}

/// 8e: the wheel owner tells sleepers about every change of the next due tick it makes, also
/// when one run goes round twice: the first turn drops a settled lease's entry (next due
/// tick: none), a lease taken meanwhile leaves its notice in the inbox, and the second turn
/// files it. A receiver that read "none" between the two turns and parked for its whole wait
/// must be woken by the second turn (a check against the value read before the claim saw
/// "first deadline -> later deadline" and woke nobody). Three threads, any of which may end
/// up running the wheel; bounded at 2 preemptions (see loom-tests/README.md for the cost).
#[test]
fn second_turn_of_a_wheel_run_wakes_receiver() {
    check_bounded("second_turn_of_a_wheel_run_wakes_receiver", 2, || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        // A settled lease whose wheel entry is due: the next wheel run drops it.
        q.send(Body::new(0, &live)).unwrap();
        let settled = q.try_receive().unwrap();
        q.delete(settled.receipt()).unwrap();
        drop(settled);
        q.send(Body::new(1, &live)).unwrap();
        clock.advance(LEASE + TICK);
        let leaser = {
            let q = q.clone();
            // Leases the message (unless the receiver got it first) and abandons the lease.
            thread::spawn(move || q.try_receive().is_some())
        };
        let receiver = parked_receiver(&q);
        q.stats();
        let abandoned = leaser.join().unwrap();
        clock.advance(LEASE + TICK);
        let expected = if abandoned { 2 } else { 1 };
        assert_eq!(receiver.join().unwrap(), Some(expected));
        drops_every_body(q, &live);
    });
}

/// 8f: a receive made after a lease's deadline gets the message even while another thread
/// holds the wheel and has not fired it yet: it runs the wheel itself, or waits (parked, not
/// spinning) for the holder's run, which wakes it by changing the next due tick.
#[test]
fn receive_waits_for_the_thread_holding_the_due_wheel() {
    check("receive_waits_for_the_thread_holding_the_due_wheel", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        q.send(Body::new(1, &live)).unwrap();
        q.try_receive().unwrap();
        clock.advance(LEASE + TICK);
        let receiver = {
            let q = q.clone();
            thread::spawn(move || q.try_receive().map(|d| d.receive_count()))
        };
        // Runs the wheel (expiring the lease), or finds the receiver running it.
        q.stats();
        assert_eq!(receiver.join().unwrap(), Some(2), "the lease was due");
        drops_every_body(q, &live);
    });
}

/// 8g (issue 10): a delete frees a slot for a sender blocked in `send_timeout` on a full
/// queue, and wakes it. The sender may find the queue full, then register as a sleeper only
/// after the delete freed the slot and looked for sleepers (there were none): its re-check
/// after registering must see the free slot. Its nap only a notification may end, so a lost
/// wake-up is a deadlock.
#[test]
fn delete_wakes_blocked_sender() {
    check("delete_wakes_blocked_sender", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        q.send(Body::new(1, &live)).unwrap();
        let leased = q.try_receive().unwrap();
        let sender = {
            let (q, live) = (q.clone(), live.clone());
            thread::spawn(move || q.send_timeout(Body::new(2, &live), FOREVER).is_ok())
        };
        q.delete(leased.receipt()).unwrap();
        drop(leased);
        assert!(sender.join().unwrap(), "sent into the freed slot");
        assert_eq!(q.try_receive().map(|d| d.body().value), Some(2));
        drops_every_body(q, &live);
    });
}

/// 8h (issue 10): a close wakes a sender blocked in `send_timeout`, which gets its body back.
#[test]
fn close_wakes_blocked_sender() {
    check("close_wakes_blocked_sender", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        q.send(Body::new(1, &live)).unwrap();
        let sender = {
            let (q, live) = (q.clone(), live.clone());
            thread::spawn(move || match q.send_timeout(Body::new(2, &live), FOREVER) {
                Err(visq::SendError::Closed(body)) => body.value,
                other => panic!("{:?}", other.map_err(|e| e.into_inner().value)),
            })
        };
        q.close();
        assert_eq!(sender.join().unwrap(), 2);
        drops_every_body(q, &live);
    });
}
