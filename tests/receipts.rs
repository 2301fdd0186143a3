//! Receipts belong to the queue that issued them: a receipt from one queue is refused by every
//! other and changes nothing there, even for queues used in lockstep (same capacity, same
//! sends and receives in the same order), which hand out the same slot at the same moment.

use std::time::Duration;
use visq::{ManualClock, Nack, Queue, ReceiptError, Stats, Topic};

const CAPACITY: usize = 8;
const ROUNDS: usize = 3_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `before` with `refused` more refused receipts and nothing else changed.
fn with_refused_receipts(before: &Stats, refused: u64) -> Stats {
    let mut want = before.clone();
    want.refused_receipts += refused;
    want
}

/// Every way of settling `foreign` (a receipt `queue` did not issue) is refused and changes
/// nothing in `queue`.
fn assert_foreign_refused(queue: &Queue<u64>, foreign: visq::Receipt, what: &str) {
    let before = queue.stats();
    let refused = |result: Result<(), ReceiptError>, op: &str| {
        assert!(
            matches!(result, Err(ReceiptError::Stale | ReceiptError::Expired)),
            "{what}: {op} of a foreign receipt answered {result:?}"
        );
    };
    refused(
        queue.change_visibility(foreign, ms(50)),
        "change_visibility",
    );
    refused(queue.nack(foreign, Nack::after(ms(5))), "nack");
    refused(queue.release(foreign), "release");
    refused(queue.delete(foreign), "delete");
    assert_eq!(queue.stats(), with_refused_receipts(&before, 4), "{what}");
}

/// Queues of one capacity used in lockstep over thousands of leases: at every step each queue
/// holds a live lease on the same slot as the others, and every cross-queue settlement fails.
/// The rounds end their leases in each way (delete, release, delayed nack, expiry) so that
/// slots are reused and epochs advance the same way in every queue.
#[test]
fn receipts_of_queues_in_lockstep_are_refused_by_each_other() {
    let clock = ManualClock::new();
    let queues: Vec<Queue<u64>> = (0..3)
        .map(|_| {
            Queue::builder()
                .capacity(CAPACITY)
                .visibility_timeout(ms(100))
                .clock(clock.clone())
                .build()
                .unwrap()
        })
        .collect();
    for round in 0..ROUNDS as u64 {
        let deliveries: Vec<_> = queues
            .iter()
            .map(|q| {
                q.send(round).unwrap();
                q.try_receive().expect("a message is visible")
            })
            .collect();
        for (x, delivery) in deliveries.iter().enumerate() {
            for (y, other) in queues.iter().enumerate() {
                if x != y {
                    let what = format!("round {round}: receipt of queue {x} on queue {y}");
                    assert_foreign_refused(other, delivery.receipt(), &what);
                }
            }
        }
        for (q, delivery) in queues.iter().zip(&deliveries) {
            let receipt = delivery.receipt();
            match round % 4 {
                0 => q.delete(receipt).unwrap(),
                1 => q.release(receipt).unwrap(),
                2 => q.nack(receipt, Nack::after(ms(1))).unwrap(),
                _ => {}
            }
        }
        // Leases left alone expire, delayed nacks come due; the next receives see them first.
        clock.advance(ms(101));
        for q in &queues {
            while let Some(d) = q.try_receive() {
                q.delete(d.receipt()).unwrap();
            }
        }
    }
    for q in &queues {
        let s = q.stats();
        assert_eq!(
            (s.sent, s.deleted, s.ready, s.in_flight),
            (ROUNDS as u64, ROUNDS as u64, 0, 0)
        );
    }
}

/// Every subscriber queue of a topic gets each message at the same moment: their receipts
/// for the same publication must still be refused by each other.
#[test]
fn receipts_of_topic_subscribers_are_refused_by_each_other() {
    // A manual clock only so that stats taken around a refusal can be compared whole.
    let clock = ManualClock::new();
    let topic: Topic<u64> = Topic::new();
    let subscriptions: Vec<_> = (0..3)
        .map(|_| {
            topic
                .subscribe(Queue::builder().capacity(CAPACITY).clock(clock.clone()))
                .unwrap()
        })
        .collect();
    for n in 0..ROUNDS as u64 {
        assert_eq!(topic.publish(n).unwrap(), subscriptions.len());
        let deliveries: Vec<_> = subscriptions
            .iter()
            .map(|s| s.queue().try_receive().expect("published"))
            .collect();
        for (x, delivery) in deliveries.iter().enumerate() {
            for (y, other) in subscriptions.iter().enumerate() {
                if x != y {
                    let what = format!("publication {n}: subscriber {x}'s receipt on {y}");
                    assert_foreign_refused(other.queue(), delivery.receipt(), &what);
                }
            }
        }
        for (s, delivery) in subscriptions.iter().zip(&deliveries) {
            assert_eq!(*delivery.body(), n);
            s.queue().delete(delivery.receipt()).unwrap();
        }
    }
}
