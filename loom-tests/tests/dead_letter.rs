//! Model 9: the dead-letter move racing a delete, with the dead-letter queue full.
#![cfg(loom)]

mod common;

use common::{check, dead_lettering_after_one_receive, tiny_queue, Body, LEASE, TICK};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use visq::ManualClock;

/// The delete wins (nothing moves) or the expiry wins (the move finds the dead-letter queue
/// full, the message waits, and moves once there is room); never both, never lost.
#[test]
fn dead_letter_move_races_delete_with_full_dlq() {
    check("dead_letter_move_races_delete_with_full_dlq", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let dlq = std::sync::Arc::new(tiny_queue(1, &clock));
        dlq.send(Body::new(0, &live)).unwrap(); // full
        let q = dead_lettering_after_one_receive(&dlq, &clock);
        q.send(Body::new(1, &live)).unwrap();
        let receipt = q.try_receive().unwrap().receipt();

        let expirer = {
            let (q, clock) = (q.clone(), clock.clone());
            thread::spawn(move || {
                clock.advance(LEASE + TICK);
                q.stats();
            })
        };
        let deleted = q.delete(receipt).is_ok();
        expirer.join().unwrap();

        // Make room in the dead-letter queue and let a retry happen.
        let filler = dlq.try_receive().unwrap();
        assert_eq!(filler.body().value, 0);
        dlq.delete(filler.receipt()).unwrap();
        drop(filler);
        clock.advance(TICK);
        let stats = q.stats();
        assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
        let moved = dlq.try_receive().map(|d| d.body().value);
        if deleted {
            assert_eq!((stats.deleted, stats.dead_lettered, moved), (1, 0, None));
        } else {
            assert_eq!((stats.deleted, stats.dead_lettered, moved), (0, 1, Some(1)));
            assert!(
                stats.dead_letter_retries >= 1,
                "the first move found the DLQ full"
            );
        }
        drop(q);
        drop(dlq);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    });
}
