//! Code shared by the bench binaries (`benches/*.rs`) and the report (`examples/report`):
//! the baselines, one adapter trait per family of queue, and the workloads. Each binary
//! includes this module with `#[path]`, so there is one copy of every baseline and workload.
//!
//! * [`lockref`]: the lock-based reference with visq's semantics (what a competent engineer
//!   writes in an hour); [`lockref_features`] extends it to priorities and message groups.
//! * [`tutorial`]: a port of the classic tutorial design (one mutex, a `Vec`, a
//!   `HashMap<String, _>`, a reaper thread, polling consumers).
//! * [`adapters`]: the [`adapters::Lease`] trait (visq, lockref, tutorial) and the
//!   [`adapters::Handoff`] trait (crossbeam-channel, crossbeam-queue's `ArrayQueue`).
//! * [`throughput`], [`latency`], [`wheel`], [`memory`]: the workloads; [`async_front`]: the
//!   async front's, against tokio's, async-channel's and flume's channels; [`features`]:
//!   message groups, priorities and at-most-once receive (issue 11).
//!
//! Every workload is bounded in time: a run that cannot finish by its deadline stops and says
//! so instead of hanging.
#![allow(dead_code)]

pub mod adapters;
pub mod async_front;
pub mod features;
pub mod latency;
pub mod lockref;
pub mod lockref_features;
pub mod memory;
pub mod throughput;
pub mod tutorial;
pub mod wheel;

use std::time::Duration;

/// The seq number that tells a consumer to stop (never a real message's).
pub const STOP: u64 = u64::MAX;

/// A message body the workloads can make from a sequence number (or a timestamp) and read it
/// back from.
pub trait Payload: Clone + Send + Sync + 'static {
    /// Short name for tables ("u64", "64 B").
    const NAME: &'static str;
    /// A body carrying `seq`.
    fn make(seq: u64) -> Self;
    /// The `seq` it carries.
    fn seq(&self) -> u64;
}

impl Payload for u64 {
    const NAME: &'static str = "u64";
    #[inline]
    fn make(seq: u64) -> Self {
        seq
    }
    #[inline]
    fn seq(&self) -> u64 {
        *self
    }
}

/// A 64-byte body (a small job description): `Clone` is a 64-byte copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Body64(pub [u8; 64]);

impl Payload for Body64 {
    const NAME: &'static str = "64 B";
    #[inline]
    fn make(seq: u64) -> Self {
        let mut bytes = [0x5a; 64];
        bytes[..8].copy_from_slice(&seq.to_le_bytes());
        Body64(bytes)
    }
    #[inline]
    fn seq(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

/// Spin, then yield: what a producer does while a non-blocking `send` says "full" (and an
/// `ArrayQueue` consumer while it is empty).
pub struct Backoff(u32);

impl Backoff {
    pub fn new() -> Self {
        Backoff(0)
    }

    #[inline]
    pub fn snooze(&mut self) {
        if self.0 < 6 {
            for _ in 0..1u32 << self.0 {
                std::hint::spin_loop();
            }
            self.0 += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Median, minimum and maximum of `values` (NaN for none).
pub fn median_min_max(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

#[path = "../../tests/support/rng.rs"]
mod rng;
pub use rng::Rng;

/// Nanoseconds in `d`, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
