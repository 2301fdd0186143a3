//! Time: the monotonic clock, the [`ManualClock`] for tests, and ticks.
//!
//! The queue counts time in whole ticks since it was built. A deadline is the first tick at or
//! after the wanted instant (rounded *up*), and "now" is the last tick boundary at or before the
//! current instant (rounded *down*), so a deadline is never seen as passed early and is seen as
//! passed at most one tick late.
//!
//! # Exact and recent time
//!
//! Reading the monotonic clock costs 23-26 ns on the machines this was measured on, more than
//! all the rest of a send, receive and delete together. So there are two readings:
//!
//! * [`Ticks::now_nanos`], exact: for everything that *sets* a deadline (receive,
//!   change_visibility, send_delayed) and for running the wheel, where the precision contract
//!   needs it.
//! * [`Ticks::recent_nanos`], never later than the exact time (on Linux
//!   `CLOCK_MONOTONIC_COARSE`, about 6 ns; the exact reading elsewhere and for the manual
//!   clock). Used where an early reading is harmless: a plain send's "ready since" (a lower
//!   bound is what the lease start wants; the stats' ages may read a few ms old), deciding
//!   whether the wheel is due from a send, and [`Ticks::has_passed`].
//!
//! The coarse clock is the kernel's time as of its last timekeeping update. Its resolution
//! (`clock_getres`) is 4 ms on the machine this was measured on, but its lag behind the exact
//! clock is not bounded by the resolution: 1.0-5.2 ms was measured there, and a kernel that
//! skips ticks could lag further. So [`Ticks::has_passed`] trusts the recent reading only for
//! "passed" (always true if the recent reading says so) and for "not passed" when the deadline
//! is more than [`COARSE_LAG_BOUND`] (one second, 190 times the worst lag measured) ahead of
//! it; nearer the deadline it reads the exact clock. A lease is typically settled long before
//! its deadline, so delete and release almost never pay for the exact reading.

use crate::core::sync::{Arc, AtomicU64, Ordering};
use std::time::Duration;

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

/// How far behind the exact clock the recent reading is assumed to stay at most; see the
/// module docs.
pub(crate) const COARSE_LAG_BOUND: Duration = Duration::from_secs(1);

/// Where a queue takes its time from.
#[derive(Debug)]
enum Source {
    Monotonic,
    Manual(ManualClock),
}

/// A queue's clock, in nanoseconds and ticks since the queue was built.
#[derive(Debug)]
pub(crate) struct Ticks {
    source: Source,
    /// The source's reading at build time.
    origin: u64,
    tick_nanos: u64,
    /// How many ticks [`Ticks::recent_nanos`] is assumed to lag the exact time at most, plus one
    /// for rounding (0 for the manual clock, whose readings are all exact).
    lag_ticks: u64,
}

/// The monotonic clock, exact and recent readings, in nanoseconds since an arbitrary origin.
#[cfg(target_os = "linux")]
mod monotonic {
    fn read(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on every Linux
        // since 2.6.32, and `clock_gettime` only writes `ts`.
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        debug_assert_eq!(rc, 0);
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }

    pub(super) fn exact() -> u64 {
        read(libc::CLOCK_MONOTONIC)
    }

    /// The same clock as [`exact`], as of the kernel's last timekeeping update: never later.
    pub(super) fn recent() -> u64 {
        read(libc::CLOCK_MONOTONIC_COARSE)
    }

    /// [`super::COARSE_LAG_BOUND`], or "never trust it" if the coarse clock is missing.
    pub(super) fn lag_bound() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `read`; `clock_getres` only writes `ts`.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        if rc != 0 {
            return u64::MAX;
        }
        super::COARSE_LAG_BOUND.as_nanos() as u64
    }
}

/// Elsewhere, `Instant` for both readings.
#[cfg(not(target_os = "linux"))]
mod monotonic {
    use std::sync::OnceLock;
    use std::time::Instant;

    static ORIGIN: OnceLock<Instant> = OnceLock::new();

    pub(super) fn exact() -> u64 {
        let origin = ORIGIN.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn recent() -> u64 {
        exact()
    }

    pub(super) fn lag_bound() -> u64 {
        0
    }
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
                lag_ticks: 0,
            },
            None => Self {
                source: Source::Monotonic,
                // The recent reading is never ahead of the exact one: starting from it
                // keeps every reading at or after the origin.
                origin: monotonic::recent(),
                tick_nanos,
                lag_ticks: monotonic::lag_bound()
                    .div_ceil(tick_nanos)
                    .saturating_add(1),
            },
        }
    }

    /// Nanoseconds since the queue was built, exact.
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        match &self.source {
            Source::Monotonic => monotonic::exact().saturating_sub(self.origin),
            Source::Manual(clock) => self.manual_nanos(clock),
        }
    }

    /// Nanoseconds since the queue was built, never later than [`Ticks::now_nanos`]; cheaper
    /// (see the module docs).
    #[inline]
    pub(crate) fn recent_nanos(&self) -> u64 {
        match &self.source {
            Source::Monotonic => monotonic::recent().saturating_sub(self.origin),
            Source::Manual(clock) => self.manual_nanos(clock),
        }
    }

    #[inline]
    fn manual_nanos(&self, clock: &ManualClock) -> u64 {
        clock
            .nanos
            .load(Ordering::SeqCst)
            .saturating_sub(self.origin)
    }

    /// Whether the tick `deadline` has come (exactly as [`Ticks::now_nanos`] would say), reading
    /// the exact clock only when the recent reading is too close to the deadline to tell.
    #[inline]
    pub(crate) fn has_passed(&self, deadline: u64) -> bool {
        let recent = self.tick_of(self.recent_nanos());
        if recent >= deadline {
            return true;
        }
        if deadline > recent.saturating_add(self.lag_ticks) {
            return false;
        }
        self.tick_of(self.now_nanos()) >= deadline
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
            Source::Monotonic => Some(Duration::from_nanos(
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
    fn recent_never_passes_exact_and_has_passed_agrees_with_exact() {
        let ticks = Ticks::new(None, Duration::from_micros(10));
        for _ in 0..10_000 {
            let recent = ticks.recent_nanos();
            let exact = ticks.now_nanos();
            assert!(recent <= exact, "recent {recent} after exact {exact}");
            let now = ticks.tick_of(exact);
            assert!(ticks.has_passed(now), "a tick read before has passed");
            assert!(ticks.has_passed(0));
            // Far enough ahead that even a slow machine cannot reach it during the loop.
            assert!(!ticks.has_passed(now + 1_000_000));
        }
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
