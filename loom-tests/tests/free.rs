//! The free-slot stack (`src/core/free.rs`) shared between senders and deleters.
#![cfg(loom)]

mod common;

use common::{check, drops_every_body, tiny_queue, Body};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use visq::{ManualClock, SendError};

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
        drops_every_body(q, &live);
    });
}
