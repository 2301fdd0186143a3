//! `build()` allocates all of a queue's memory, and every one of its allocations is fallible:
//! when any of them fails, `build()` returns `BuildError::CapacityTooLarge` instead of
//! aborting the process.
//!
//! This binary installs an allocator that, on the measuring thread only, can be told to fail
//! every allocation after the first `n`. Each test builds a queue once unlimited to count its
//! allocations, then once for every `n` below that count, so that each allocation site is the
//! one that fails in some run. An infallible allocation that fails aborts the whole binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;
use visq::{BuildError, Builder, Queue, MAX_CAPACITY};

struct FailAfter;

thread_local! {
    /// How many more allocations may succeed on this thread; `None`: no limit, not counted.
    static LEFT: Cell<Option<u64>> = const { Cell::new(None) };
    /// Allocations attempted on this thread while a limit was set.
    static ATTEMPTS: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated on this thread while a limit was set.
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Counts `bytes` more allocated on this thread, if a limit is set.
fn count_bytes(bytes: usize) {
    if let Ok(Some(_)) = LEFT.try_with(Cell::get) {
        let _ = BYTES.try_with(|b| b.set(b.get() + bytes as u64));
    }
}

/// Whether this allocation may go ahead (counting it if a limit is set).
fn may_allocate() -> bool {
    // `try_with`: never panic inside the allocator, even while thread-locals are torn down.
    let Ok(Some(left)) = LEFT.try_with(Cell::get) else {
        return true;
    };
    let _ = ATTEMPTS.try_with(|a| a.set(a.get() + 1));
    if left == 0 {
        return false;
    }
    let _ = LEFT.try_with(|l| l.set(Some(left - 1)));
    true
}

// SAFETY: every method either forwards to `System` with the caller's arguments or returns null,
// which `GlobalAlloc` allows for a failed allocation; the bookkeeping touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for FailAfter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !may_allocate() {
            return std::ptr::null_mut();
        }
        count_bytes(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !may_allocate() {
            return std::ptr::null_mut();
        }
        count_bytes(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !may_allocate() {
            return std::ptr::null_mut();
        }
        count_bytes(new_size.saturating_sub(layout.size()));
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: FailAfter = FailAfter;

/// Runs `f` with at most `limit` successful allocations on this thread (`None`: no limit);
/// returns its result and the allocations it attempted.
fn with_allocation_limit<R>(limit: Option<u64>, f: impl FnOnce() -> R) -> (R, u64) {
    let (result, attempts, _) = counting(limit, f);
    (result, attempts)
}

/// [`with_allocation_limit`], also returning the bytes allocated.
fn counting<R>(limit: Option<u64>, f: impl FnOnce() -> R) -> (R, u64, u64) {
    ATTEMPTS.with(|a| a.set(0));
    BYTES.with(|b| b.set(0));
    LEFT.with(|l| l.set(Some(limit.unwrap_or(u64::MAX))));
    let result = f();
    LEFT.with(|l| l.set(None));
    (result, ATTEMPTS.with(Cell::get), BYTES.with(Cell::get))
}

/// Builds the queue `settings()` describes (the settings are made outside the limit) once
/// unlimited and then with each of its allocations failing in turn: each failing build must
/// return `CapacityTooLarge`.
fn every_allocation_of_build_is_fallible(what: &str, settings: impl Fn() -> Builder<u64>) {
    let builder = settings();
    let (built, allocations) = with_allocation_limit(None, || builder.build());
    built.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(allocations > 0, "{what}");
    for n in 0..allocations {
        let builder = settings();
        let (built, _) = with_allocation_limit(Some(n), || builder.build());
        match built {
            Err(BuildError::CapacityTooLarge(_)) => {}
            other => panic!("{what}: allocation {n} of {allocations} failed: {other:?}"),
        }
    }
    println!("{what}: {allocations} allocations, each failed once");
}

#[test]
fn a_failed_allocation_of_a_plain_queue_is_a_build_error() {
    every_allocation_of_build_is_fallible("plain", || Queue::builder().capacity(1000));
}

#[test]
fn a_failed_allocation_of_the_latency_recorder_is_a_build_error() {
    every_allocation_of_build_is_fallible("sampled", || {
        Queue::builder().capacity(100).sample_latencies(1)
    });
}

/// With a dead-letter queue, the source's death records and, made when the dead-letter queue
/// is first attached, the dead-letter queue's records.
#[test]
fn a_failed_allocation_of_death_records_is_a_build_error() {
    every_allocation_of_build_is_fallible("with a dead-letter queue", || {
        let dlq = Arc::new(Queue::builder().capacity(300).build().unwrap());
        Queue::builder()
            .capacity(100)
            .dead_letter(dlq, 3)
            .sample_latencies(4)
    });
}

/// `Queue::memory` names every byte `build()` allocates, with and without latency recorders
/// and death records (a dead-letter queue's records, made by the first build that attaches
/// it, are the dead-letter queue's).
#[test]
fn memory_names_every_byte_build_allocates() {
    let (plain, _, bytes) = counting(None, || Queue::<u64>::builder().capacity(1000).build());
    let memory = plain.unwrap().memory();
    assert_eq!(memory.total() as u64, bytes, "{memory:?}");
    assert_eq!(
        (memory.capacity, memory.death_records, memory.latency),
        (1000, 0, 0)
    );

    let dlq = Arc::new(Queue::<u64>::builder().capacity(300).build().unwrap());
    let settings = Queue::builder()
        .capacity(100)
        .dead_letter(dlq.clone(), 3)
        .sample_latencies(4);
    let (source, _, bytes) = counting(None, || settings.build());
    let memory = source.unwrap().memory();
    let dlq_records = dlq.memory().death_records;
    assert!(memory.death_records > 0 && memory.latency > 0 && dlq_records > 0);
    assert_eq!((memory.total() + dlq_records) as u64, bytes, "{memory:?}");
}

/// Without an injected failure: a capacity whose bytes overflow or exceed any memory.
#[test]
fn a_capacity_too_large_to_allocate_is_a_build_error() {
    let huge = Queue::<[u8; 1 << 20]>::builder()
        .capacity(MAX_CAPACITY)
        .visibility_timeout(Duration::from_secs(1))
        .build();
    assert_eq!(
        huge.unwrap_err(),
        BuildError::CapacityTooLarge(MAX_CAPACITY)
    );
}
