//! After `build()`, deduplicated sends allocate nothing (for a body whose drop does not free):
//! new ids, duplicates, keyed sends, refusals of every kind, lookups and stats. Counted by a
//! global allocator that counts, on the measuring thread only, every allocation, reallocation
//! and deallocation made inside a measured region (as in `tests/no_alloc.rs`).

use std::sync::Arc;
use std::time::Duration;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{measure, no_alloc};
use visq::{DedupQueue, DedupSendError, ManualClock, Queue, Sent, MAX_TIMEOUT};

#[test]
fn the_counter_sees_allocations_and_the_build_allocates() {
    let (v, allocations, _) = measure(|| Vec::<u64>::with_capacity(10));
    assert_eq!(allocations, 1);
    let ((), _, deallocations) = measure(|| drop(v));
    assert_eq!(deallocations, 1);
    let queue = Arc::new(Queue::<u64>::builder().capacity(8).build().unwrap());
    let (dedup, allocations, _) = measure(|| DedupQueue::new(queue).unwrap());
    assert!(allocations >= 2, "the table's two arrays: {allocations}");
    drop(dedup);
}

#[test]
fn deduplicated_sends_allocate_nothing() {
    let clock = ManualClock::new();
    let queue = Arc::new(
        Queue::<u64>::builder()
            .capacity(4_096)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let dedup = DedupQueue::builder(queue.clone())
        .capacity(4_096)
        .window(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    // The monotonic clock too.
    let monotonic = DedupQueue::builder(queue.clone())
        .capacity(64)
        .build()
        .unwrap();

    for round in 0..3u64 {
        for key in 0..1_000u64 {
            let id = round * 1_000 + key;
            let sent = no_alloc("a new id", || dedup.send(id, key).unwrap());
            assert!(matches!(sent, Sent::New(_)));
            let again = no_alloc("a duplicate", || dedup.send(id, key).unwrap());
            assert_eq!(again, Sent::Duplicate(sent.id()));
            no_alloc("a lookup", || assert_eq!(dedup.lookup(id), Some(sent.id())));
        }
        no_alloc("a keyed send", || {
            assert!(dedup.send_keyed("order-1", round).is_ok());
            assert!(dedup.send_keyed(b"order-1", round).unwrap().is_duplicate());
        });
        no_alloc("a delayed send", || {
            dedup
                .send_delayed(u64::MAX - round, round, Duration::from_secs(1))
                .unwrap()
        });
        no_alloc("the monotonic clock", || {
            monotonic.send(round, round).unwrap();
            assert!(monotonic.send(round, round).unwrap().is_duplicate());
        });
        no_alloc("stats", || dedup.stats());
        // Empty the queue for the next round; let the ids expire so their buckets are reused.
        while let Some(delivery) = queue.try_receive() {
            queue.delete(delivery.receipt()).unwrap();
        }
        clock.advance(Duration::from_secs(61));
    }

    // Refusals: a full queue, a delay too long, a full table, a closed queue.
    let small_queue = Arc::new(
        Queue::<u64>::builder()
            .capacity(1)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let small = DedupQueue::builder(small_queue.clone())
        .capacity(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    no_alloc("refusals", || {
        small.send(1, 1).unwrap();
        assert_eq!(small.send(2, 2), Err(DedupSendError::Full(2)));
        assert_eq!(
            small.send_delayed(3, 3, MAX_TIMEOUT * 2),
            Err(DedupSendError::DelayTooLong(3))
        );
    });
    let delivery = small_queue.try_receive().unwrap();
    small_queue.delete(delivery.receipt()).unwrap();
    let mut key = 10;
    let refused = no_alloc("filling the table", || loop {
        match small.send(key, key) {
            Ok(_) => {
                let delivery = small_queue.try_receive().unwrap();
                small_queue.delete(delivery.receipt()).unwrap();
                key += 1;
            }
            Err(refused) => break refused,
        }
    });
    assert_eq!(refused, DedupSendError::TableFull(key));
    small_queue.close();
    no_alloc("a closed queue", || {
        assert_eq!(small.send(key, 0), Err(DedupSendError::Closed(0)));
    });
}
