//! Model S1: `Stats::deleted` racing a dead-letter move and a redrive (see "How the totals are
//! read" in `src/core/stats.rs`): neither is ever counted as a delete.
#![cfg(loom)]

mod common;

use common::{check, dead_lettering_after_one_receive, tiny_queue, Body};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use visq::ManualClock;

/// The spawned thread releases a message on its last receive (it moves to the dead-letter
/// queue) and redrives it back; nothing is ever deleted. Stats read meanwhile, from either
/// queue, never report a delete.
#[test]
fn stats_never_count_a_dead_letter_move_or_redrive_as_a_delete() {
    check(
        "stats_never_count_a_dead_letter_move_or_redrive_as_a_delete",
        || {
            let live = Arc::new(AtomicUsize::new(0));
            let clock = ManualClock::new();
            let dlq = std::sync::Arc::new(tiny_queue(1, &clock));
            let q = dead_lettering_after_one_receive(&dlq, &clock);
            q.send(Body::new(1, &live)).unwrap();
            let receipt = q.try_receive().unwrap().receipt();

            let mover = {
                let (q, dlq) = (q.clone(), dlq.clone());
                thread::spawn(move || {
                    q.release(receipt).unwrap(); // its last receive: moves to `dlq`
                    assert_eq!(dlq.redrive(&q, None, 1).moved, 1);
                })
            };
            assert_eq!(q.stats().deleted, 0, "a move counted as a delete");
            assert_eq!(dlq.stats().deleted, 0, "a redrive counted as a delete");
            mover.join().unwrap();

            let (source, dead) = (q.stats(), dlq.stats());
            assert_eq!(
                (source.dead_lettered, source.deleted, source.ready),
                (1, 0, 1)
            );
            assert_eq!((dead.redriven, dead.deleted, dead.ready), (1, 0, 0));
            drop((q, dlq));
            assert_eq!(live.load(Ordering::SeqCst), 0);
        },
    );
}
