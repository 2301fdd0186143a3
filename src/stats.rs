//! What a queue holds and has done.

use crate::sync::{AtomicU64, Ordering};
use crossbeam_utils::CachePadded;
use std::time::Duration;

/// A snapshot of a queue, from [`Queue::stats`](crate::Queue::stats).
///
/// Exact when no operation runs concurrently; otherwise each field is a value it had during
/// the call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages visible now.
    pub ready: usize,
    /// Messages waiting for their delay (or for room in a full dead-letter queue).
    pub delayed: usize,
    /// Messages leased now.
    pub in_flight: usize,
    /// Messages accepted by `send` / `send_delayed` (total).
    pub sent: u64,
    /// Deliveries handed out (total, redeliveries included).
    pub received: u64,
    /// Leases ended by `delete` (total).
    pub deleted: u64,
    /// Leases ended by `release` or `change_visibility(.., 0)` (total).
    pub released: u64,
    /// Leases ended by their deadline passing (total).
    pub expired: u64,
    /// Messages moved to the dead-letter queue (total).
    pub dead_lettered: u64,
    /// Attempts to move a message to the dead-letter queue that found it full or closed
    /// (total); each such message stays held and is retried.
    pub dead_letter_retries: u64,
    /// Messages moved out of this queue by [`Queue::redrive`](crate::Queue::redrive) (total).
    pub redriven: u64,
    /// How long the oldest visible message has been visible.
    pub oldest_ready_age: Option<Duration>,
}

/// Counters of the rarer events, each on its own cache line. Sends, receives and deletes, the
/// hot path, are counted by ring positions instead (see `Queue::stats`).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) released: CachePadded<AtomicU64>,
    pub(crate) expired: CachePadded<AtomicU64>,
    pub(crate) dead_lettered: CachePadded<AtomicU64>,
    pub(crate) dead_letter_retries: CachePadded<AtomicU64>,
    /// Ready-ring pops that were no delivery: a clone of the body panicked, or dead-letter
    /// inspection or redrive looked at the message.
    pub(crate) not_received: CachePadded<AtomicU64>,
    pub(crate) redriven: CachePadded<AtomicU64>,
}

/// Counts one event.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// The counted totals, into `stats`.
    pub(crate) fn fill(&self, stats: &mut Stats) {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        stats.released = read(&self.released);
        stats.expired = read(&self.expired);
        stats.dead_lettered = read(&self.dead_lettered);
        stats.dead_letter_retries = read(&self.dead_letter_retries);
        stats.redriven = read(&self.redriven);
    }
}
