//! Time: the monotonic clock, the [`ManualClock`] for tests, and ticks.
//!
//! The queue counts time in whole ticks since it was built. A deadline is the first tick at or
//! after the wanted instant (rounded *up*), and "now" is the last tick boundary at or before the
//! current instant (rounded *down*), so a deadline is never seen as passed early and is seen as
//! passed at most one tick late.
//!
//! # Exact and recent time
//!
//! Reading the monotonic clock costs 19-25 ns on the machines this was measured on
//! (`clock_gettime(CLOCK_MONOTONIC)` 18.7 ns, `Instant::now` 25.3 ns), more than a
//! crossbeam-channel send and receive together. So there are two readings:
//!
//! * [`Ticks::now_nanos`], exact: for everything that *sets* a deadline (receive,
//!   change_visibility, send_delayed) and for running the wheel, where the precision contract
//!   needs it. Read from the processor's time-stamp counter where that is safe (next section),
//!   the monotonic clock otherwise.
//! * [`Ticks::recent_nanos`], never later than the monotonic clock (on Linux
//!   `CLOCK_MONOTONIC_COARSE`, about 4-6 ns; the exact reading elsewhere and for the manual
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
//!
//! # The time-stamp counter (x86-64 Linux)
//!
//! `rdtsc` and a multiply cost about 10 ns against 18.7 ns for `clock_gettime` on the machine
//! this was measured on (2-core AMD EPYC VM, best of 5 runs of 2*10^7 readings). It is used
//! only where the counter is safe to use as a clock:
//!
//! * the processor reports an invariant counter (CPUID leaf `0x8000_0007`, EDX bit 8: it ticks
//!   at a constant rate in every power state), and
//! * the kernel's own clock source is `tsc`
//!   (`/sys/devices/system/clocksource/clocksource0/current_clocksource`): the kernel checked
//!   at boot that the counters of all cores agree, and `CLOCK_MONOTONIC` is itself computed
//!   from the counter, so the counter is no worse across cores than the clock it stands for,
//! * and the environment variable `VISQ_CLOCK` is not `monotonic` (an escape hatch, read once).
//!
//! Everywhere else (other architectures and systems, a VM that hides the invariant bit, a
//! `kvm-clock` or `hpet` clock source, loom) the exact reading is the monotonic clock.
//!
//! **Calibration.** At the first build of a queue in the process (once, shared by every queue),
//! the counter is read around a monotonic reading twice, [`CALIBRATION`] (10 ms) apart, by a
//! sleep: `build()` takes 10 ms longer that once. Each bracket (`rdtsc`, `clock_gettime`,
//! `rdtsc`; the narrowest of 8) pins the counter value that goes with the monotonic reading to
//! within half the bracket's width; the counter is not used if a bracket is wider than
//! [`BRACKET_LIMIT`] (200 ns; 40-60 ns measured). The rate is the ratio of the two intervals,
//! as a 32.32 fixed-point number of nanoseconds per count; its relative error is at most the
//! two half-widths over the interval, `2 * 10^-5` at worst.
//!
//! **Re-anchoring.** A reading is `anchor_nanos + (count - anchor_count) * rate`, used only
//! within [`REANCHOR`] (10 ms) of counts of its anchor. The first reader past that takes a new
//! anchor (a fresh bracket) and re-measures the rate over the interval since the last one, so
//! the rate follows the monotonic clock's (which NTP may adjust) and the error never builds up.
//! A reading is within `SKEW` of the monotonic clock: half a bracket plus the rate error
//! ([`RATE_ERROR_PPB`], `8 * 10^-5`: the brackets' `2 * 10^-5` twice over, plus as much again
//! for a change in the monotonic clock's rate between two intervals) over one interval,
//! `100 ns + 800 ns`, rounded up to [`SKEW`] = 1 us. Each re-anchor checks the assumption: if
//! the old anchor's prediction misses the fresh bracket by more than the allowed error, the
//! counter is dropped for good and every later reading is the monotonic clock's. The anchor is
//! published under a sequence lock; a reader that meets an update in progress, or a reader
//! held up so long that its counter value is out of reach of the anchor, reads the monotonic
//! clock instead of waiting. A re-anchor can move readings back by up to the skew; everything
//! that compares readings tolerates that (the wheel's run point only moves forward, ages
//! saturate at zero).
//!
//! **Deadlines are rounded up by twice the skew.** [`Ticks::deadline`] adds a margin of
//! `2 * SKEW` (2 us) before rounding up. Let `m(t)` be the monotonic clock and `r(t)` the
//! counter's reading, `|r - m| <= skew`. A lease read at
//! `r0` gets deadline tick `D` with `D * tick >= r0 + timeout + 2 * skew`, and the wheel fires
//! it only once some reading `r1 >= D * tick`. Then
//! `m1 - m0 >= (r1 - skew) - (r0 + skew) >= timeout`: never early in monotonic time. It may be
//! late by the rounding (under one tick) plus up to `4 * skew` (4 us, 0.4% of the default 1 ms
//! tick). [`Ticks::has_passed`] compares the same way,
//! so a receipt is never refused as expired before its lease has run for its timeout either.
//! The manual clock and the monotonic clock have no skew and no margin: their deadlines are
//! exactly as before.

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

/// How long the time-stamp counter is calibrated against the monotonic clock, once per
/// process; see the module docs.
#[cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux", not(loom))),
    allow(dead_code)
)]
pub(crate) const CALIBRATION: Duration = Duration::from_millis(10);
/// The widest bracket (counter, monotonic reading, counter) accepted, in nanoseconds: it pins
/// the counter value of the monotonic reading to within half of it.
pub(crate) const BRACKET_LIMIT: u64 = 200;
/// How far (in nanoseconds of counts) a reading may be from its anchor before a new anchor is
/// taken.
pub(crate) const REANCHOR: u64 = 10_000_000;
/// The largest relative rate error allowed between the counter's rate as last measured and
/// the monotonic clock's over the next [`REANCHOR`]: `2 * BRACKET_LIMIT / REANCHOR` from the
/// brackets plus as much again for a change in the monotonic clock's rate (NTP's frequency
/// corrections), in parts per 10^9.
pub(crate) const RATE_ERROR_PPB: u64 = 2 * (2 * BRACKET_LIMIT * 1_000_000_000 / REANCHOR);
/// The most a counter reading may differ from the monotonic clock: half a bracket plus the
/// rate error over one re-anchor interval (`100 + 80_000 * 10^-9 * 10^7` = 900 ns), rounded up.
#[cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux", not(loom))),
    allow(dead_code)
)]
pub(crate) const SKEW: u64 = 1_000;

/// Where a queue takes its time from.
#[derive(Debug)]
enum Source {
    Monotonic,
    /// The time-stamp counter, mapped to the monotonic clock (see the module docs).
    #[cfg_attr(
        not(all(target_arch = "x86_64", target_os = "linux", not(loom))),
        allow(dead_code)
    )]
    Counter(&'static Scale),
    Manual(ManualClock),
}

/// A queue's clock, in nanoseconds and ticks since the queue was built.
#[derive(Debug)]
pub(crate) struct Ticks {
    source: Source,
    /// The source's reading at build time.
    origin: u64,
    tick_nanos: u64,
    /// Divides by `tick_nanos` with a multiply: a queue's hot paths turn readings into ticks
    /// several times per message, and a 64-bit division costs tens of cycles.
    per_tick: Divisor,
    /// How many ticks [`Ticks::recent_nanos`] is assumed to lag the exact time at most, plus one
    /// for rounding (0 for the manual clock, whose readings are all exact).
    lag_ticks: u64,
    /// Nanoseconds added to every deadline before rounding up: twice the most an exact reading
    /// may differ from the monotonic clock (0 unless the source is the counter).
    margin: u64,
}

/// Exact division of a `u64` by a divisor fixed at build time, by a multiply and a shift
/// (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994,
/// theorem 4.2): with `l = ceil(log2 d)` and `m = ceil(2^(63 + l) / d)`,
/// `2^(63 + l) <= m * d < 2^(63 + l) + 2^l`, so `floor(n / d) = floor(m * n / 2^(63 + l))` for
/// every `n < 2^63`, and `m < 2^64`. Larger dividends (saturated readings, never a real clock's)
/// take the hardware division.
#[derive(Clone, Copy, Debug)]
struct Divisor {
    divisor: u64,
    multiplier: u64,
    shift: u32,
}

impl Divisor {
    /// `divisor` must be at least 1.
    fn new(divisor: u64) -> Self {
        debug_assert!(divisor >= 1);
        let l = 64 - (divisor - 1).leading_zeros();
        let shift = 63 + l;
        let multiplier = (1u128 << shift).div_ceil(u128::from(divisor));
        Self {
            divisor,
            multiplier: u64::try_from(multiplier).expect("m < 2^64 (see the type's docs)"),
            shift,
        }
    }

    #[inline]
    fn divide(self, n: u64) -> u64 {
        if n >> 63 != 0 {
            return n / self.divisor;
        }
        ((u128::from(self.multiplier) * u128::from(n)) >> self.shift) as u64
    }
}

/// A counter value and a monotonic reading taken between two reads of the counter: `count` is
/// the midpoint, `width` the counts between the two reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bracket {
    pub(crate) count: u64,
    pub(crate) nanos: u64,
    pub(crate) width: u64,
}

/// `nanos / counts` as a 32.32 fixed-point number, if it is positive and fits.
fn rate_of(nanos: u64, counts: u64) -> Option<u64> {
    let rate = (u128::from(nanos) << 32).checked_div(u128::from(counts))?;
    u64::try_from(rate).ok().filter(|&rate| rate > 0)
}

/// `counts` times a 32.32 `rate`, in nanoseconds (saturating).
fn scaled(counts: u64, rate: u64) -> u64 {
    u64::try_from((u128::from(counts) * u128::from(rate)) >> 32).unwrap_or(u64::MAX)
}

/// `nanos` in counts at a 32.32 `rate` (saturating).
fn unscaled(nanos: u64, rate: u64) -> u64 {
    u64::try_from((u128::from(nanos) << 32) / u128::from(rate.max(1))).unwrap_or(u64::MAX)
}

/// The map from counter values to monotonic nanoseconds: an anchor (a [`Bracket`]) and a rate,
/// published under a sequence lock; see the module docs ("Re-anchoring").
///
/// Its atomics are std's, not [`crate::core::sync`]'s: a scale is built only outside loom (the
/// models read the monotonic or manual clock), and lives in a process-wide static.
#[derive(Debug)]
pub(crate) struct Scale {
    /// Even while the anchor is stable, odd while it is being replaced; left odd for good once
    /// the counter is found off the monotonic clock (every reading then falls back).
    seq: std::sync::atomic::AtomicU64,
    anchor_count: std::sync::atomic::AtomicU64,
    anchor_nanos: std::sync::atomic::AtomicU64,
    /// Nanoseconds per count, 32.32 fixed point.
    rate: std::sync::atomic::AtomicU64,
    /// [`REANCHOR`] in counts at `rate`.
    reach: std::sync::atomic::AtomicU64,
}

#[cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux", not(loom))),
    allow(dead_code)
)]
impl Scale {
    /// The scale from two brackets taken [`CALIBRATION`] apart, if they make sense (both
    /// narrower than [`BRACKET_LIMIT`], both clocks moved forward).
    pub(crate) fn calibrate(first: Bracket, second: Bracket) -> Option<Self> {
        use std::sync::atomic::AtomicU64;
        let counts = second.count.checked_sub(first.count)?;
        let nanos = second.nanos.checked_sub(first.nanos)?;
        let rate = rate_of(nanos, counts)?;
        if scaled(first.width.max(second.width), rate) > BRACKET_LIMIT {
            return None;
        }
        Some(Self {
            seq: AtomicU64::new(0),
            anchor_count: AtomicU64::new(second.count),
            anchor_nanos: AtomicU64::new(second.nanos),
            rate: AtomicU64::new(rate),
            reach: AtomicU64::new(unscaled(REANCHOR, rate)),
        })
    }

    /// The monotonic time at counter value `count`, or `None` if the caller must read the
    /// monotonic clock itself (an update in progress, a reading that found its anchor too far
    /// and lost the race to replace it, a counter found off the clock). `bracket` takes a new
    /// anchor, called only by the reader that replaces it.
    #[inline]
    pub(crate) fn nanos(
        &self,
        count: u64,
        bracket: impl FnOnce() -> Option<Bracket>,
    ) -> Option<u64> {
        use std::sync::atomic::{fence, Ordering};
        let seq = self.seq.load(Ordering::Acquire);
        let anchor_count = self.anchor_count.load(Ordering::Relaxed);
        let anchor_nanos = self.anchor_nanos.load(Ordering::Relaxed);
        let rate = self.rate.load(Ordering::Relaxed);
        let reach = self.reach.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if seq & 1 == 1 || self.seq.load(Ordering::Relaxed) != seq {
            return None;
        }
        if count >= anchor_count {
            let ahead = count - anchor_count;
            if ahead <= reach {
                return Some(anchor_nanos.saturating_add(scaled(ahead, rate)));
            }
            self.reanchor(seq, bracket)
        } else {
            // Read before the anchor was replaced (the reader was held up in between).
            let behind = anchor_count - count;
            (behind <= reach).then(|| anchor_nanos.saturating_sub(scaled(behind, rate)))
        }
    }

    /// Replaces the anchor (published at `seq`) by a fresh bracket and re-measures the rate
    /// over the span between the two; leaves `seq` odd for good if the counter has drifted
    /// from the monotonic clock by more than the rate error allows. Returns the new anchor's
    /// time, or `None` as [`Scale::nanos`] does.
    #[cold]
    fn reanchor(&self, seq: u64, bracket: impl FnOnce() -> Option<Bracket>) -> Option<u64> {
        use std::sync::atomic::{fence, Ordering};
        if self
            .seq
            .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        fence(Ordering::Release);
        let anchor_count = self.anchor_count.load(Ordering::Relaxed);
        let anchor_nanos = self.anchor_nanos.load(Ordering::Relaxed);
        let rate = self.rate.load(Ordering::Relaxed);
        let reach = self.reach.load(Ordering::Relaxed);
        let fresh = bracket().filter(|b| {
            scaled(b.width, rate) <= BRACKET_LIMIT
                && b.count > anchor_count
                && b.nanos > anchor_nanos
        });
        let Some(fresh) = fresh else {
            // No usable bracket (held up while taking it): keep the anchor, try again later.
            self.seq.store(seq + 2, Ordering::Release);
            return None;
        };
        let span = fresh.count - anchor_count;
        let elapsed = fresh.nanos - anchor_nanos;
        if span <= 4 * reach {
            // The anchor was used up to `reach` ahead: check what its rate predicted.
            let predicted = anchor_nanos.saturating_add(scaled(span, rate));
            let allowed = BRACKET_LIMIT + elapsed.saturating_mul(RATE_ERROR_PPB) / 1_000_000_000;
            if predicted.abs_diff(fresh.nanos) > allowed {
                return None; // `seq` stays odd: the counter is not used again.
            }
        }
        let rate = rate_of(elapsed, span).unwrap_or(rate);
        self.anchor_count.store(fresh.count, Ordering::Relaxed);
        self.anchor_nanos.store(fresh.nanos, Ordering::Relaxed);
        self.rate.store(rate, Ordering::Relaxed);
        self.reach
            .store(unscaled(REANCHOR, rate), Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
        Some(fresh.nanos)
    }
}

/// The time-stamp counter, where the module docs say it may be used.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
mod counter {
    use super::{monotonic, Bracket, Scale, CALIBRATION};
    use std::sync::OnceLock;

    /// The counter now.
    #[inline]
    pub(super) fn read() -> u64 {
        // SAFETY: `rdtsc` exists on every x86-64 processor and only reads the counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// The narrowest of a few brackets.
    pub(super) fn bracket() -> Option<Bracket> {
        (0..8)
            .map(|_| {
                let before = read();
                let nanos = monotonic::exact();
                let after = read();
                let width = after.checked_sub(before)?;
                Some(Bracket {
                    count: before + width / 2,
                    nanos,
                    width,
                })
            })
            .min_by_key(|b| b.map_or(u64::MAX, |b| b.width))
            .flatten()
    }

    /// Whether the processor and the kernel vouch for the counter, and `VISQ_CLOCK` does not
    /// ask for the monotonic clock (reading an unset variable allocates nothing; a set one
    /// allocates its value's copy once, during the first build).
    fn usable() -> bool {
        if std::env::var_os("VISQ_CLOCK").is_some_and(|v| v == "monotonic") {
            return false;
        }
        // SAFETY: `cpuid` exists on every x86-64 processor; leaf 0x8000_0000 says which
        // extended leaves exist, and 0x8000_0007 is read only if it does. (Newer compilers
        // consider `__cpuid` safe; the crate's minimum version does not.)
        #[allow(unused_unsafe)]
        let invariant = unsafe {
            core::arch::x86_64::__cpuid(0x8000_0000).eax >= 0x8000_0007
                && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
        };
        invariant && kernel_uses_tsc()
    }

    /// Whether the kernel's clock source is `tsc`. Reads into a stack buffer: `build()`, which
    /// calibrates, allocates nothing but what [`crate::Queue::memory`] reports.
    fn kernel_uses_tsc() -> bool {
        use std::io::Read;
        let mut source = [0u8; 16];
        std::fs::File::open("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .and_then(|mut file| file.read(&mut source))
            .is_ok_and(|read| source[..read].trim_ascii() == b"tsc")
    }

    /// The process's scale, calibrated at the first call (which sleeps [`CALIBRATION`]), or
    /// `None` where the counter is not to be used.
    pub(super) fn scale() -> Option<&'static Scale> {
        static SCALE: OnceLock<Option<Scale>> = OnceLock::new();
        SCALE
            .get_or_init(|| {
                if !usable() {
                    return None;
                }
                let first = bracket()?;
                std::thread::sleep(CALIBRATION);
                let second = bracket()?;
                Scale::calibrate(first, second)
            })
            .as_ref()
    }

    /// Monotonic nanoseconds now, from the counter through `scale` when it can.
    #[inline]
    pub(super) fn nanos(scale: &Scale) -> u64 {
        scale
            .nanos(read(), bracket)
            .unwrap_or_else(monotonic::exact)
    }
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
                per_tick: Divisor::new(tick_nanos),
                lag_ticks: 0,
                margin: 0,
            },
            None => {
                #[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
                let (source, margin) = match counter::scale() {
                    Some(scale) => (Source::Counter(scale), 2 * SKEW),
                    None => (Source::Monotonic, 0),
                };
                #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom))))]
                let (source, margin) = (Source::Monotonic, 0);
                Self {
                    source,
                    // The recent reading is never ahead of the monotonic one: starting from it
                    // keeps every reading at or after the origin (a counter reading up to
                    // `SKEW` behind saturates to it).
                    origin: monotonic::recent(),
                    tick_nanos,
                    per_tick: Divisor::new(tick_nanos),
                    lag_ticks: monotonic::lag_bound()
                        .div_ceil(tick_nanos)
                        .saturating_add(1),
                    margin,
                }
            }
        }
    }

    /// Nanoseconds since the queue was built, exact.
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        match &self.source {
            Source::Monotonic => monotonic::exact().saturating_sub(self.origin),
            #[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
            Source::Counter(scale) => counter::nanos(scale).saturating_sub(self.origin),
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom))))]
            Source::Counter(_) => monotonic::exact().saturating_sub(self.origin),
            Source::Manual(clock) => self.manual_nanos(clock),
        }
    }

    /// Nanoseconds since the queue was built, never later than [`Ticks::now_nanos`]; cheaper
    /// (see the module docs).
    #[inline]
    pub(crate) fn recent_nanos(&self) -> u64 {
        match &self.source {
            Source::Monotonic | Source::Counter(_) => {
                monotonic::recent().saturating_sub(self.origin)
            }
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
        self.per_tick.divide(nanos)
    }

    /// The deadline tick for `after` from `nanos`: the first tick boundary at or after
    /// `nanos + after` plus the margin for the counter's skew (rounded up; see the module
    /// docs), and always at least one tick after `nanos`' tick so a nonzero timeout never takes
    /// effect at once.
    #[inline]
    pub(crate) fn deadline(&self, nanos: u64, after: Duration) -> u64 {
        let after = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        let target = nanos.saturating_add(after).saturating_add(self.margin);
        let below = self.per_tick.divide(target);
        let rounded_up = below + u64::from(below * self.tick_nanos != target);
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
            Source::Monotonic | Source::Counter(_) => Some(Duration::from_nanos(
                self.start_of(tick).saturating_sub(nanos),
            )),
            Source::Manual(_) => None,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The multiply-and-shift division equals the hardware's for divisors from 1 ns to 12 h
    /// (powers of two, their neighbours, round numbers, random ones) and dividends up to and
    /// past 2^63.
    #[test]
    fn divisor_divides_exactly() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut divisors = vec![1, 2, 3, 7, 1_000, 1_000_000, 999_983, 43_200_000_000_000];
        for k in 1..46 {
            divisors.extend([(1u64 << k) - 1, 1 << k, (1 << k) + 1]);
        }
        divisors.extend((0..200).map(|_| 1 + random() % 43_200_000_000_000));
        for d in divisors {
            let divisor = Divisor::new(d);
            let mut dividends = vec![0, 1, d - 1, d, d + 1, (1 << 63) - 1, 1 << 63, u64::MAX];
            dividends.extend((0..200).map(|_| random() >> 1));
            dividends.extend((0..50).map(|_| (random() % ((1 << 62) / d)) * d));
            for n in dividends {
                assert_eq!(divisor.divide(n), n / d, "{n} / {d}");
            }
        }
    }

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
            // A counter reading may trail the monotonic clock by up to the skew.
            assert!(
                recent <= exact + SKEW,
                "recent {recent} after exact {exact}"
            );
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

    /// A fake counter running at 3 counts per nanosecond from `start`.
    fn fake(start: u64, nanos: u64) -> Bracket {
        Bracket {
            count: start + 3 * nanos,
            nanos,
            width: 90,
        }
    }

    #[test]
    fn a_calibrated_scale_maps_counts_to_nanoseconds() {
        let scale = Scale::calibrate(fake(1_000, 5_000), fake(1_000, 10_005_000)).unwrap();
        let never = || -> Option<Bracket> { panic!("no re-anchor within reach") };
        // 3 counts a nanosecond: 3,000 counts past the anchor are 1 us past its time.
        let anchor = fake(1_000, 10_005_000).count;
        assert_eq!(scale.nanos(anchor, never), Some(10_005_000));
        let one_us = scale.nanos(anchor + 3_000, never).unwrap();
        assert!(one_us.abs_diff(10_006_000) <= 1, "{one_us}");
        let before = scale.nanos(anchor - 3_000, never).unwrap();
        assert!(before.abs_diff(10_004_000) <= 1, "{before}");
        // Too wide a bracket (300 counts = 100 ns each side is fine, 900 is not).
        let wide = Bracket {
            width: 900,
            ..fake(1_000, 10_005_000)
        };
        assert!(Scale::calibrate(fake(1_000, 5_000), wide).is_none());
        // A counter that ran backwards, or a clock that did not move.
        assert!(Scale::calibrate(fake(1_000, 10_005_000), fake(1_000, 5_000)).is_none());
    }

    #[test]
    fn a_reading_past_reach_reanchors_and_follows_a_slow_rate_change() {
        let scale = Scale::calibrate(fake(0, 0), fake(0, REANCHOR)).unwrap();
        // 15 ms on, the monotonic clock ran 10 ppm slower than the counter says (within the
        // allowed rate error): the reader past reach takes the new anchor and its time.
        let fresh = Bracket {
            nanos: 5 * REANCHOR / 2 - 150,
            ..fake(0, 5 * REANCHOR / 2)
        };
        assert_eq!(scale.nanos(fresh.count, || Some(fresh)), Some(fresh.nanos));
        // From there the new rate (over the last 10 ms) is used, without a new bracket.
        let later = scale
            .nanos(fresh.count + 3_000_000, || panic!("within reach"))
            .unwrap();
        assert!(later.abs_diff(fresh.nanos + 1_000_000) <= 20, "{later}");
        // A bracket that fails (held up) keeps the old anchor; the reader falls back.
        let far = fresh.count + 6 * REANCHOR;
        assert_eq!(scale.nanos(far, || None), None);
        assert!(scale
            .nanos(fresh.count + 3, || panic!("within reach"))
            .is_some());
    }

    #[test]
    fn a_counter_off_the_monotonic_clock_is_dropped_for_good() {
        let scale = Scale::calibrate(fake(0, 0), fake(0, REANCHOR)).unwrap();
        // 10 ms on, the monotonic clock is 5 us behind the counter's prediction: more than the
        // bracket and rate error allow (about 1 us), so the counter is not used again.
        let off = Bracket {
            nanos: 2 * REANCHOR + 5_000,
            ..fake(0, 2 * REANCHOR)
        };
        assert_eq!(scale.nanos(off.count + 3, || Some(off)), None);
        assert_eq!(scale.nanos(fake(0, REANCHOR).count, || None), None);
        assert_eq!(scale.nanos(off.count, || Some(off)), None);
    }

    #[test]
    fn the_skew_margin_keeps_deadlines_from_firing_early() {
        // The queue's exact readings `r` may be up to SKEW either side of the monotonic clock
        // `m`. A lease read at r0 = m0 + SKEW (the counter ahead) must not fire before
        // m0 + timeout even when the reading at firing time is r1 = m1 + SKEW... and with the
        // counter behind at the start and ahead at the end, the worst case.
        let clock = ManualClock::new();
        let tick = Duration::from_millis(1);
        let ticks = Ticks {
            margin: 2 * SKEW,
            ..Ticks::new(Some(clock.clone()), tick)
        };
        let timeout = Duration::from_millis(30);
        for m0 in (0..3_000_000u64).step_by(977) {
            // Read SKEW ahead at the start (a later deadline would be safe anyway: take the
            // reading that gives the earliest deadline, SKEW behind).
            let r0 = m0.saturating_sub(SKEW);
            let deadline = ticks.deadline(r0, timeout);
            // The first monotonic time at which a reading SKEW ahead reaches the deadline.
            let fires_at = ticks.start_of(deadline).saturating_sub(SKEW);
            assert!(
                fires_at >= m0 + timeout.as_nanos() as u64,
                "fires at {fires_at} for a lease from {m0}"
            );
            // And late by at most a tick plus four skews.
            let latest = ticks.start_of(deadline) + SKEW;
            assert!(latest <= m0 + timeout.as_nanos() as u64 + 1_000_000 + 4 * SKEW);
        }
        // The manual clock has no margin: deadlines exactly as without a counter.
        let plain = Ticks::new(Some(clock), tick);
        assert_eq!(plain.deadline(0, timeout), 30);
        assert_eq!(ticks.deadline(0, timeout), 31);
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn counter_readings_stay_within_the_skew_of_the_monotonic_clock() {
        let Some(scale) = counter::scale() else {
            return; // no usable counter here: the monotonic clock is the only source
        };
        for _ in 0..100_000 {
            let before = monotonic::exact();
            let reading = counter::nanos(scale);
            let after = monotonic::exact();
            assert!(
                reading + SKEW >= before && reading <= after + SKEW,
                "{before} <= {reading} <= {after} (within {SKEW} ns)"
            );
        }
    }
}
