//! After `build()`, deduplicated sends allocate nothing (for a body whose drop does not free):
//! new ids, duplicates, keyed sends, refusals of every kind, lookups and stats. Counted by a
//! global allocator that counts, on the measuring thread only, every allocation, reallocation
//! and deallocation made inside a measured region (as in `tests/no_alloc.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;
use visq::{DedupQueue, DedupSendError, ManualClock, Queue, Sent, MAX_TIMEOUT};

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static DEALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    // `try_with`: never panic inside the allocator, even while thread-locals are torn down.
    let measuring = MEASURING.try_with(Cell::get).unwrap_or(false);
    if measuring {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments; the counting touches
// only const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCATIONS);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(&ALLOCATIONS);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(&ALLOCATIONS);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(&DEALLOCATIONS);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the (allocations + reallocations, deallocations) this
/// thread made meanwhile.
fn measure<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    ALLOCATIONS.with(|c| c.set(0));
    DEALLOCATIONS.with(|c| c.set(0));
    MEASURING.with(|m| m.set(true));
    let result = f();
    MEASURING.with(|m| m.set(false));
    (
        result,
        ALLOCATIONS.with(Cell::get),
        DEALLOCATIONS.with(Cell::get),
    )
}

/// Runs `f`, asserting that it neither allocated nor freed; returns its result.
#[track_caller]
fn no_alloc<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let (result, allocations, deallocations) = measure(f);
    assert_eq!(
        (allocations, deallocations),
        (0, 0),
        "{what}: (allocations, deallocations)"
    );
    result
}

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
