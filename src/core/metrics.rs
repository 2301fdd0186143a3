//! Optional latency histograms: send-to-receive, send-to-delete and receive-to-delete (the
//! handler's time), recorded on the hot path without a lock.
//!
//! # Recording
//!
//! Each histogram is a fixed array of `AtomicU64` bucket counts (log-linear: exact below 256 ns,
//! then 128 buckets per power of two, so a bucket is at most 1/128 of its value wide, under 1%).
//! Recording is one `fetch_add` on one bucket; nothing is allocated or locked. The send time of
//! each held message lives in `sent_at`, one word per slot, written by the sender while it owns
//! the slot and read by whoever owns it later (the slot's owner rules, see [`super::slot`]).
//!
//! For a sampled message `send` reads the exact clock instead of the coarse one and `delete`
//! reads it once: that and the three bucket increments are the cost, paid by one message in
//! `one_in` (the others pay a hash of the id and a branch); measured in results/README.md.
//!
//! # Reading
//!
//! [`Queue::latencies`](crate::Queue::latencies) copies the buckets into
//! [`hdrhistogram::Histogram`]s (each bucket's count at its midpoint); counts recorded during the
//! copy may or may not be in it.

use crate::core::error::{try_boxed_slice, OutOfMemory};
use crate::core::sync::{AtomicU64, Ordering};
use hdrhistogram::Histogram;
use std::time::Duration;

/// Bits of sub-bucket resolution per power of two.
const SUB_BITS: u32 = 7;
/// Values from `1 << LARGEST_BITS` nanoseconds (about 3.3 days) up share the last bucket.
const LARGEST_BITS: u32 = 48;
const BUCKETS: usize = ((LARGEST_BITS - SUB_BITS + 1) << SUB_BITS) as usize;
/// The sparsest sampling: one message in 2^24.
pub(crate) const MAX_SAMPLE_ONE_IN: u32 = 1 << 24;

/// The bucket of a value in nanoseconds: the value itself below `2 << SUB_BITS`, above that
/// its top `SUB_BITS + 1` bits plus `SUB_BITS` bits' worth of bucket sets per power of two.
fn bucket_of(nanos: u64) -> usize {
    let nanos = nanos.min((1 << LARGEST_BITS) - 1);
    let bits = u64::BITS - nanos.leading_zeros();
    let shift = bits.saturating_sub(SUB_BITS + 1);
    (((shift as u64) << SUB_BITS) + (nanos >> shift)) as usize
}

/// The smallest value in `bucket` and the bucket's width.
fn bucket_range(bucket: usize) -> (u64, u64) {
    let bucket = bucket as u64;
    let shift = (bucket >> SUB_BITS).saturating_sub(1);
    let top = bucket - (shift << SUB_BITS);
    (top << shift, 1 << shift)
}

/// One histogram of durations, recorded lock-free.
struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
}

impl AtomicHistogram {
    fn new() -> Result<Self, OutOfMemory> {
        Ok(Self {
            buckets: try_boxed_slice(BUCKETS, |_| AtomicU64::new(0))?,
        })
    }

    #[inline]
    fn record(&self, nanos: u64) {
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Latency {
        // Auto-resizing: it grows to the largest value recorded, no further.
        let mut histogram =
            Histogram::<u64>::new(3).expect("3 significant figures is a valid precision");
        for (bucket, count) in self.buckets.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let (low, width) = bucket_range(bucket);
                histogram
                    .record_n(low + width / 2, count)
                    .expect("an auto-resizing histogram takes every value under 2^48");
            }
        }
        Latency::from_histogram(histogram)
    }
}

/// The recorders of one queue and the send time of each slot's message.
pub(crate) struct LatencyRecorder {
    /// A message is sampled when its hashed id, shifted right by one and then by this, is
    /// zero: the top log2(one_in) bits of the hash (none for one in 1).
    sample_shift: u32,
    sent_at: Box<[AtomicU64]>,
    send_to_receive: AtomicHistogram,
    send_to_delete: AtomicHistogram,
    receive_to_delete: AtomicHistogram,
}

impl LatencyRecorder {
    /// Bytes of the per-slot send times and the three histograms' buckets.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.sent_at)
            + [
                &self.send_to_receive,
                &self.send_to_delete,
                &self.receive_to_delete,
            ]
            .iter()
            .map(|histogram| std::mem::size_of_val(&*histogram.buckets))
            .sum::<usize>()
    }

    /// Recorders for `slots` slots, sampling one message in `one_in`, clamped to
    /// 1..=[`MAX_SAMPLE_ONE_IN`] and rounded up to a power of two; `OutOfMemory` if they
    /// cannot be allocated.
    pub(crate) fn new(slots: usize, one_in: u32) -> Result<Self, OutOfMemory> {
        let bits = one_in
            .clamp(1, MAX_SAMPLE_ONE_IN)
            .next_power_of_two()
            .trailing_zeros();
        Ok(Self {
            sample_shift: 63 - bits,
            sent_at: try_boxed_slice(slots, |_| AtomicU64::new(0))?,
            send_to_receive: AtomicHistogram::new()?,
            send_to_delete: AtomicHistogram::new()?,
            receive_to_delete: AtomicHistogram::new()?,
        })
    }

    /// Whether the message with id `id` is in the sample: a Fibonacci hash of the id, so that
    /// the sample follows no period of the traffic.
    #[inline]
    pub(crate) fn samples(&self, id: u64) -> bool {
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1) >> self.sample_shift == 0
    }

    /// Slot `index` was sent at `now` (nanoseconds, queue clock). Called by the sender, who
    /// owns the slot.
    #[inline]
    pub(crate) fn sent(&self, index: u32, now: u64) {
        self.sent_at[index as usize].store(now, Ordering::Relaxed);
    }

    /// Slot `index`'s message was received for the first time at `now`. Called by the
    /// receiver while it owns the slot.
    #[inline]
    pub(crate) fn first_received(&self, index: u32, now: u64) {
        let sent_at = self.sent_at[index as usize].load(Ordering::Relaxed);
        self.send_to_receive.record(now.saturating_sub(sent_at));
    }

    /// Slot `index`'s message, leased at `leased_at`, was deleted at `now`. Called by the
    /// deleter, who owns the slot.
    #[inline]
    pub(crate) fn deleted(&self, index: u32, leased_at: u64, now: u64) {
        let sent_at = self.sent_at[index as usize].load(Ordering::Relaxed);
        self.send_to_delete.record(now.saturating_sub(sent_at));
        self.receive_to_delete.record(now.saturating_sub(leased_at));
    }

    pub(crate) fn snapshot(&self) -> Latencies {
        Latencies {
            send_to_receive: self.send_to_receive.snapshot(),
            send_to_delete: self.send_to_delete.snapshot(),
            receive_to_delete: self.receive_to_delete.snapshot(),
        }
    }
}

/// The latency histograms of a queue built with
/// [`Builder::sample_latencies`](crate::Builder::sample_latencies), from
/// [`Queue::latencies`](crate::Queue::latencies). Times are on the queue's clock.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Latencies {
    /// From `send` to the first receive (a delayed message's delay included).
    pub send_to_receive: Latency,
    /// From `send` to `delete`: the message's whole stay, redeliveries included.
    pub send_to_delete: Latency,
    /// From the receive to the `delete` of the lease that deleted it: the handler's time.
    pub receive_to_delete: Latency,
}

/// One latency distribution: its common percentiles and the full histogram (values in
/// nanoseconds, within 1% of the recorded ones; values of 2^48 ns, about 3.3 days, and more are
/// recorded as 2^48 ns).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Latency {
    /// How many values were recorded.
    pub count: u64,
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The 99.9th percentile.
    pub p999: Duration,
    /// The largest value.
    pub max: Duration,
    /// Every recorded value, in nanoseconds, for other percentiles or merging.
    pub histogram: Histogram<u64>,
}

impl Latency {
    fn from_histogram(histogram: Histogram<u64>) -> Self {
        let at = |quantile: f64| Duration::from_nanos(histogram.value_at_quantile(quantile));
        Self {
            count: histogram.len(),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_nanos(histogram.max()),
            histogram,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_value_lands_in_a_bucket_that_holds_it_and_is_under_one_percent_wide(nanos in 0u64..(1 << LARGEST_BITS)) {
            let bucket = bucket_of(nanos);
            prop_assert!(bucket < BUCKETS);
            let (low, width) = bucket_range(bucket);
            prop_assert!(low <= nanos && nanos < low + width, "{nanos} not in [{low}, +{width})");
            prop_assert!(width == 1 || width * 128 <= low);
        }

        #[test]
        fn percentiles_match_a_direct_histogram_within_one_percent(values in proptest::collection::vec(1u64..10_000_000_000, 1..400)) {
            let ours = AtomicHistogram::new().unwrap();
            let mut direct = Histogram::<u64>::new(3).unwrap();
            for &v in &values {
                ours.record(v);
                direct.record(v).unwrap();
            }
            let latency = ours.snapshot();
            prop_assert_eq!(latency.count, values.len() as u64);
            for (got, quantile) in [(latency.p50, 0.5), (latency.p99, 0.99), (latency.p999, 0.999), (latency.max, 1.0)] {
                let want = direct.value_at_quantile(quantile) as f64;
                let got = got.as_nanos() as f64;
                prop_assert!((got - want).abs() <= want * 0.01 + 1.0, "q{quantile}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn buckets_are_contiguous_and_cover_every_value() {
        let mut next = 0;
        for bucket in 0..BUCKETS {
            let (low, width) = bucket_range(bucket);
            assert_eq!(low, next, "bucket {bucket}");
            next = low + width;
        }
        assert_eq!(next, 1 << LARGEST_BITS);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }
}
