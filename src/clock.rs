//! Time: the monotonic clock, the [`ManualClock`] for tests, and ticks.
//!
//! The queue counts time in whole ticks since it was built. A deadline is the first tick at or
//! after the wanted instant (rounded *up*), and "now" is the last tick boundary at or before the
//! current instant (rounded *down*), so a deadline is never seen as passed early and is seen as
//! passed at most one tick late.

use crate::sync::{Arc, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A clock that moves only when told to, for deterministic tests.
///
/// Clones share one clock. A queue built with `.clock(clock.clone())` takes its deadlines and
/// delays from it; the `wait` of a blocking receive is still wall-clock time.
///
/// ```
/// use std::time::Duration;
/// use visq::{ManualClock, Queue};
///
/// let clock = ManualClock::new();
/// let q: Queue<u32> = Queue::builder().clock(clock.clone()).build().unwrap();
/// q.send_delayed(7, Duration::from_secs(5)).unwrap();
/// assert!(q.try_receive().is_none());
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(*q.try_receive().unwrap().body(), 7);
/// assert_eq!(clock.now(), Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let mut current = self.nanos.load(Ordering::Relaxed);
        while let Err(now) = self.nanos.compare_exchange_weak(
            current,
            current.saturating_add(by),
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            current = now;
        }
    }

    /// The time elapsed on this clock since it was created.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a queue takes its time from.
#[derive(Debug)]
enum Source {
    Monotonic(Instant),
    Manual(ManualClock),
}

/// A queue's clock, in nanoseconds and ticks since the queue was built.
#[derive(Debug)]
pub(crate) struct Ticks {
    source: Source,
    /// Nanoseconds the manual clock showed at build time (0 for the monotonic source).
    origin: u64,
    tick_nanos: u64,
}

impl Ticks {
    /// `tick` must be at least one nanosecond and fit in `u64` nanoseconds (the builder checks).
    pub(crate) fn new(manual: Option<ManualClock>, tick: Duration) -> Self {
        let tick_nanos = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1);
        match manual {
            Some(clock) => Self {
                origin: clock.nanos.load(Ordering::SeqCst),
                source: Source::Manual(clock),
                tick_nanos,
            },
            None => Self {
                source: Source::Monotonic(Instant::now()),
                origin: 0,
                tick_nanos,
            },
        }
    }

    /// Nanoseconds since the queue was built.
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        match &self.source {
            Source::Monotonic(start) => {
                u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
            Source::Manual(clock) => clock
                .nanos
                .load(Ordering::SeqCst)
                .saturating_sub(self.origin),
        }
    }

    /// The current tick: whole ticks elapsed since build (rounded down).
    #[inline]
    pub(crate) fn tick_of(&self, nanos: u64) -> u64 {
        nanos / self.tick_nanos
    }

    /// The deadline tick for `after` from `nanos`: the first tick boundary at or after
    /// `nanos + after` (rounded up), and always at least one tick after `nanos`' tick so a
    /// nonzero timeout never takes effect at once.
    #[inline]
    pub(crate) fn deadline(&self, nanos: u64, after: Duration) -> u64 {
        let after = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        let target = nanos.saturating_add(after);
        let rounded_up = target.div_ceil(self.tick_nanos);
        rounded_up.max(self.tick_of(nanos) + 1)
    }

    /// Nanoseconds at which `tick` starts.
    pub(crate) fn start_of(&self, tick: u64) -> u64 {
        tick.saturating_mul(self.tick_nanos)
    }

    /// How many ticks a duration spans, rounded up.
    pub(crate) fn ticks_in(&self, span: Duration) -> u64 {
        u64::try_from(span.as_nanos().div_ceil(u128::from(self.tick_nanos))).unwrap_or(u64::MAX)
    }

    /// The wall-clock time from `nanos` until `tick` starts (zero if it has); meaningful for
    /// the monotonic source only, so the manual source reports `None`.
    pub(crate) fn wall_time_until(&self, nanos: u64, tick: u64) -> Option<Duration> {
        match self.source {
            Source::Monotonic(_) => Some(Duration::from_nanos(
                self.start_of(tick).saturating_sub(nanos),
            )),
            Source::Manual(_) => None,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_and_now_rounds_down() {
        let clock = ManualClock::new();
        let ticks = Ticks::new(Some(clock.clone()), Duration::from_millis(10));
        clock.advance(Duration::from_millis(15));
        let now = ticks.now_nanos();
        assert_eq!(ticks.tick_of(now), 1);
        // 15 ms + 20 ms = 35 ms, first boundary at or after it is 40 ms = tick 4.
        assert_eq!(ticks.deadline(now, Duration::from_millis(20)), 4);
        // A tiny timeout still lands on a later tick.
        assert_eq!(ticks.deadline(now, Duration::from_nanos(1)), 2);
        assert_eq!(ticks.ticks_in(Duration::from_millis(25)), 3);
    }

    #[test]
    fn manual_clock_origin_is_build_time() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(100));
        let ticks = Ticks::new(Some(clock.clone()), Duration::from_millis(1));
        assert_eq!(ticks.now_nanos(), 0);
        clock.advance(Duration::from_millis(3));
        assert_eq!(ticks.tick_of(ticks.now_nanos()), 3);
        assert_eq!(ticks.wall_time_until(0, 5), None);
    }
}
