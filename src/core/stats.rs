//! What a queue holds and has done.
//!
//! # How the totals are read
//!
//! The hot path bumps one counter: `sent`, whose `fetch_add` also gives each accepted message
//! its id (on its own cache line, shared by producers only). Receives and deletes are derived:
//!
//! * `received`: every ready-ring pop is a receive, less the pops that were no delivery (a
//!   panicking clone, a dead-letter inspection or redrive, a pop on a time-to-live queue that
//!   passes over or sweeps away a killed message), counted in `not_received`.
//! * `deleted`: every message counted in `sent` is held now, or was moved to the dead-letter
//!   queue (`dead_lettered`) or redriven (`redriven`), or dropped when its time-to-live ended
//!   on a queue without a dead-letter queue (`ttl_dropped`, see `super::ttl`), or was deleted.
//!   So `deleted = sent - held - dead_lettered - redriven - ttl_dropped`, where `held` counts
//!   the slots that are not `Free` (less the slots killed by their time-to-live whose body is
//!   gone, tag `BODY_GONE`), and also the `Free` slots a sender has popped and not yet
//!   published (tag `FILLING`).
//!
//! That difference must never count a send, a move or a redrive as a delete while it runs:
//!
//! * A sender marks its slot `FILLING` before its `fetch_add` on `sent` (`Release`), and
//!   `Queue::stats` loads `sent` (`Acquire`) before it scans the slots. Every write of `sent` is
//!   an RMW, so a load that counts a send synchronizes with it, and the scan then sees that
//!   slot `FILLING` or a later state of it: held, or `Free` again after a real delete.
//! * A move, redrive or time-to-live drop bumps its counter before it stores `Free`, or sets
//!   `BODY_GONE`, in the slot (`Release`), and the scan (`Acquire` loads) comes before the
//!   counters are read: a scan that sees the slot `Free` (or its body gone) also sees the
//!   bump.
//!
//! So `deleted` is never too high; it may be too low by one for each send, move or redrive
//! running at that moment (a message held or counted twice), and exact at rest. The loom model
//! S1 (`loom-tests/tests/stats.rs`) checks this with a move and a redrive that sends into the
//! queue whose stats are read; L3 (`loom-tests/tests/ttl.rs`) with a time-to-live kill, whose
//! body is dropped by one thread while another pops its index.
//!
//! The free slots are a stack (`super::free`), whose one head has no positions to count, so
//! `sent` and `deleted` are no longer read from a ring's positions as they were before.

use crate::core::sync::{AtomicU64, Ordering};
use crossbeam_utils::CachePadded;
use std::time::Duration;

/// What [`Builder::build`](crate::Builder::build) allocated for a queue, in bytes, part by part
/// (from [`Queue::memory`](crate::Queue::memory)). Nothing is allocated after `build`, so this
/// is the queue's whole heap footprint for as long as it lives, however many messages it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Memory {
    /// The slab: one slot per message of capacity, the body's storage included. Beside the
    /// body a slot holds its lifecycle word, its deadline, the message id and the time since
    /// which it is visible (or leased), 8 bytes each, and its receive count and free-stack
    /// link, 4 bytes each: 40 bytes, plus the body's alignment padding (none for an 8-byte
    /// body: a `Queue<u64>` slot is 48 bytes).
    pub slots: usize,
    /// The ready rings (slot indices): one per priority level
    /// ([`Builder::priorities`](crate::Builder::priorities)), each with room for every slot,
    /// plus, with more than one level, one byte per slot for its level and the rings' table.
    /// The free slots are a stack linked through the slots, so they cost nothing beyond
    /// [`Memory::slots`].
    pub rings: usize,
    /// For a queue with [`Builder::message_ttl`](crate::Builder::message_ttl): each slot's
    /// expiry tick (8 bytes per slot) and, without a dead-letter queue, a ring of killed
    /// messages whose bodies wait to be dropped (8 bytes per slot, rounded up to a power of
    /// two). 0 otherwise.
    pub ttl: usize,
    /// The timing wheel: its per-slot links (the inbox of notices runs through them) and its
    /// levels.
    pub wheel: usize,
    /// Death records, one per slot, for a queue that has a dead-letter queue or is one.
    pub death_records: usize,
    /// The latency recorder, with [`Builder::sample_latencies`](crate::Builder::sample_latencies).
    pub latency: usize,
    /// The lanes of message groups, with
    /// [`Builder::message_groups`](crate::Builder::message_groups): per lane 12 bytes (its two
    /// list ends and its token), per slot and per lane a 4-byte link (see
    /// [`Queue::group_lane`](crate::Queue::group_lane)); 0 without groups.
    pub groups: usize,
    /// The number of slots (the capacity).
    pub capacity: usize,
}

impl Memory {
    /// All the parts together.
    pub fn total(&self) -> usize {
        self.slots
            + self.rings
            + self.wheel
            + self.death_records
            + self.latency
            + self.groups
            + self.ttl
    }

    /// [`Memory::total`] per slot.
    pub fn per_slot(&self) -> f64 {
        self.total() as f64 / self.capacity as f64
    }
}

/// A snapshot of a queue, from [`Queue::stats`](crate::Queue::stats).
///
/// Exact when no operation runs concurrently; otherwise each field is a value it had during
/// the call, except that `received` may be one too high for each dead-letter inspection or
/// redrive running at that moment, and may count a delivery whose body's clone is panicking,
/// and `deleted` may be one too low (never too high) for each send, move to the dead-letter
/// queue, redrive or time-to-live drop running at that moment.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages visible now.
    pub ready: usize,
    /// Messages waiting for their delay (or for room in a full dead-letter queue, or, killed by
    /// their time-to-live, for their move or drop to finish).
    pub delayed: usize,
    /// Messages leased now.
    pub in_flight: usize,
    /// Messages accepted by `send` / `send_delayed`, and dead letters moved in from queues
    /// that use this one as their dead-letter queue (total).
    pub sent: u64,
    /// Deliveries handed out (total, redeliveries included), at-most-once takes
    /// ([`Queue::try_take`](crate::Queue::try_take)) included.
    pub received: u64,
    /// Leases ended by `delete`, and messages removed by an at-most-once take (total).
    pub deleted: u64,
    /// Leases ended by `release`, `nack`, `change_visibility(.., 0)` or `hand_back` (total).
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
    /// Messages whose time-to-live ([`Builder::message_ttl`](crate::Builder::message_ttl),
    /// [`SendOptions::ttl`](crate::SendOptions::ttl)) ended while they waited to be received
    /// (ready or delayed), or before their lease ended: moved to the dead-letter queue with
    /// [`DeathCause::TimeToLive`](crate::DeathCause::TimeToLive) (those are counted in
    /// `dead_lettered` too), or, on a queue without one, dropped (those are not deletes:
    /// `deleted` does not count them) (total). A message is counted once it has left: a move
    /// refused by a full dead-letter queue is counted when a retry lands.
    pub ttl_expired: u64,
    /// Sends refused: full, closed, or a delay too long (total).
    pub refused_sends: u64,
    /// Receipts refused by `delete`, `release`, `nack` or `change_visibility`: stale, expired,
    /// or a timeout too long (total).
    pub refused_receipts: u64,
    /// How long the oldest visible message has been visible.
    pub oldest_ready_age: Option<Duration>,
    /// How long the oldest current lease has been held (since its receive): a stuck or slow
    /// handler shows here long before its deadline.
    pub oldest_in_flight_age: Option<Duration>,
    /// Events per second over the last completed window (see [`Rates`]).
    pub rates: Rates,
}

/// Events per second, on the queue's clock, over the last completed *window*: the span between
/// two [`Queue::stats`](crate::Queue::stats) calls at least one second apart (the first window
/// starts when the queue is built). Calls within a second of the window's start return the
/// previous window's rates; all zero until the first window completes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Rates {
    /// Sends accepted per second.
    pub sent: f64,
    /// Deliveries per second.
    pub received: f64,
    /// Deletes per second.
    pub deleted: f64,
    /// Expired leases per second.
    pub expired: f64,
    /// Refused sends and receipts per second.
    pub errors: f64,
}

/// The shortest window [`Rates`] are measured over.
const RATE_WINDOW_NANOS: u64 = 1_000_000_000;

/// The open rate window: when it started, the totals then, and the last window's rates.
#[derive(Default)]
pub(crate) struct RateWindow {
    start: u64,
    totals: [u64; 5],
    rates: Rates,
}

impl RateWindow {
    /// The rates for `stats` taken at `now` (nanoseconds, queue clock): closes the window and
    /// opens the next if it is at least a second old.
    pub(crate) fn rates(&mut self, stats: &Stats, now: u64) -> Rates {
        let totals = [
            stats.sent,
            stats.received,
            stats.deleted,
            stats.expired,
            stats.refused_sends + stats.refused_receipts,
        ];
        let elapsed = now.saturating_sub(self.start);
        if elapsed >= RATE_WINDOW_NANOS {
            let seconds = elapsed as f64 / 1e9;
            let per_second = |i: usize| totals[i].saturating_sub(self.totals[i]) as f64 / seconds;
            self.rates = Rates {
                sent: per_second(0),
                received: per_second(1),
                deleted: per_second(2),
                expired: per_second(3),
                errors: per_second(4),
            };
            self.start = now;
            self.totals = totals;
        }
        self.rates
    }
}

/// The event counters, each on its own cache line. Receives and deletes are derived instead
/// (see "How the totals are read").
#[derive(Default)]
pub(crate) struct Counters {
    /// Messages accepted; each one's id is this count before it.
    pub(crate) sent: CachePadded<AtomicU64>,
    pub(crate) released: CachePadded<AtomicU64>,
    pub(crate) expired: CachePadded<AtomicU64>,
    pub(crate) dead_lettered: CachePadded<AtomicU64>,
    pub(crate) dead_letter_retries: CachePadded<AtomicU64>,
    /// Ready-ring pops that were no delivery: a clone of the body panicked, dead-letter
    /// inspection or redrive looked at the message, or (time-to-live) the pop passed over or
    /// swept away a killed message.
    pub(crate) not_received: CachePadded<AtomicU64>,
    pub(crate) redriven: CachePadded<AtomicU64>,
    /// Messages whose time-to-live ended, dropped (no dead-letter queue).
    pub(crate) ttl_dropped: CachePadded<AtomicU64>,
    /// Messages whose time-to-live ended, moved to the dead-letter queue (also in
    /// `dead_lettered`).
    pub(crate) ttl_dead_lettered: CachePadded<AtomicU64>,
    pub(crate) refused_sends: CachePadded<AtomicU64>,
    pub(crate) refused_receipts: CachePadded<AtomicU64>,
}

/// Counts one event.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Passes `result` on, counting it in `refusals` if it is an error.
#[inline]
pub(crate) fn count_refusal<V, E>(refusals: &AtomicU64, result: Result<V, E>) -> Result<V, E> {
    if result.is_err() {
        bump(refusals);
    }
    result
}

impl Counters {
    /// Messages dropped when their time-to-live ended (see "How the totals are read").
    pub(crate) fn ttl_dropped(&self) -> u64 {
        self.ttl_dropped.load(Ordering::Relaxed)
    }

    /// The counted totals, into `stats`.
    pub(crate) fn fill(&self, stats: &mut Stats) {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        stats.released = read(&self.released);
        stats.expired = read(&self.expired);
        stats.dead_lettered = read(&self.dead_lettered);
        stats.dead_letter_retries = read(&self.dead_letter_retries);
        stats.redriven = read(&self.redriven);
        stats.ttl_expired = read(&self.ttl_dropped) + read(&self.ttl_dead_lettered);
        stats.refused_sends = read(&self.refused_sends);
        stats.refused_receipts = read(&self.refused_receipts);
    }
}
