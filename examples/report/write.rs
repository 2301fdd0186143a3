//! Writing `results/README.md` and its plots from the measurements.

use super::common::adapters::Contender;
use super::common::latency::{CONSUMER_WAIT, QUANTILES};
use super::common::median_min_max;
use super::common::memory::HELD;
use super::common::throughput::{CAPACITY, SWEEP, TUTORIAL_POLL};
use super::common::tutorial::DEFAULT_POLL;
use super::common::wheel::Op;
use super::svg::{self, Series};
use super::{
    HistogramCost, LatencyCell, LatencyRun, Plan, Results, Runs, SweepCell, WheelCell, Workload,
    SAMPLINGS,
};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where and when the report ran.
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub date: String,
    pub kernel: String,
    pub rustc: String,
    pub load: String,
    pub command: String,
}

impl Machine {
    pub fn detect(command: &str) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, name)| name.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            date: utc_now(),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            rustc,
            load: fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| "unknown".into()),
            command: command.to_string(),
        }
    }
}

/// "2026-11-28 04:40 UTC", from the system clock (civil-from-days, no date crate).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

// ---------------------------------------------------------------------------------------------
// Numbers.

/// Median, min and max of the finite values, or `None`.
pub fn stats(values: &[f64]) -> Option<(f64, f64, f64)> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    (!finite.is_empty()).then(|| median_min_max(&finite))
}

/// Per-repeat ratios `f(a, b)` of two queues' runs, paired repeat by repeat.
pub fn ratios(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Option<(f64, f64, f64)> {
    let paired: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f(x, y))
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    stats(&paired)
}

/// `contender`'s values in `runs` (empty if it has none).
pub fn runs_of(runs: &Runs, contender: Contender) -> &[f64] {
    runs.iter()
        .find(|(c, _)| *c == contender)
        .map_or(&[][..], |(_, v)| v.as_slice())
}

fn median_of(runs: &Runs, contender: Contender) -> Option<f64> {
    stats(runs_of(runs, contender)).map(|s| s.0)
}

pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "–".into()
    } else if ns < 10.0 {
        format!("{ns:.2} ns")
    } else if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// For charts: powers of ten (the axis ticks) as "100 ns", "1 µs", "10 ms", "1 s"; other
/// values as [`fmt_ns`].
fn fmt_ns_tick(ns: f64) -> String {
    let exponent = ns.log10();
    if !ns.is_finite() || ns <= 0.0 || (exponent - exponent.round()).abs() > 1e-9 {
        return fmt_ns(ns);
    }
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    if value >= 1.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value} {unit}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "–".into()
    } else if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        "–".into()
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else if r >= 0.1 {
        format!("{r:.2}")
    } else {
        format!("{r:.3}")
    }
}

pub fn fmt_ratio_stats(s: Option<(f64, f64, f64)>) -> String {
    match s {
        Some((m, lo, hi)) => format!("{} ({}–{})", fmt_ratio(m), fmt_ratio(lo), fmt_ratio(hi)),
        None => "–".into(),
    }
}

fn fmt_bytes(b: f64) -> String {
    format!("{b:.1} B")
}

/// A crossbeam-channel median send-to-receive latency above this, at a fixed offered rate,
/// means the machine was too busy for the latency cells to mean anything.
const DISTURBED_P50_NS: f64 = 100_000.0;
/// A one-minute load average above this at the start is reported as a busy machine.
const BUSY_LOAD: f64 = 0.5;

// ---------------------------------------------------------------------------------------------
// Targets.

struct Target {
    what: String,
    measured: String,
    /// `None`: not measured.
    met: Option<bool>,
    why: String,
}

fn workload<'a>(
    results: &'a Results,
    threads: &str,
    batch: usize,
    payload: &str,
) -> Option<&'a Workload> {
    results
        .workloads
        .iter()
        .find(|w| w.shape.threads() == threads && w.shape.batch == batch && w.payload == payload)
}

/// visq's throughput over `baseline`'s in a workload, per repeat.
fn speedup(w: &Workload, baseline: Contender) -> Option<(f64, f64, f64)> {
    ratios(
        runs_of(&w.runs, Contender::Visq),
        runs_of(&w.runs, baseline),
        |v, b| v / b,
    )
}

fn latency_cell(results: &Results, rate: u64, capacity: usize) -> Option<&LatencyCell> {
    results
        .latency
        .iter()
        .find(|c| c.spec.pace == super::Pace::Rate(rate) && c.spec.capacity == capacity)
}

/// One percentile (index into QUANTILES) of send-to-receive (or send-to-delete), per repeat.
fn latency_runs(
    cell: &LatencyCell,
    contender: Contender,
    quantile: usize,
    delete: bool,
) -> Vec<f64> {
    runs_in_cell(cell, contender)
        .iter()
        .filter_map(|r| {
            if delete {
                r.delete.map(|d| d[quantile] as f64)
            } else {
                Some(r.receive[quantile] as f64)
            }
        })
        .collect()
}

/// `contender`'s repeats in a latency cell.
fn runs_in_cell(cell: &LatencyCell, contender: Contender) -> &[LatencyRun] {
    cell.runs
        .iter()
        .find(|(c, _)| *c == contender)
        .map_or(&[][..], |(_, runs)| runs.as_slice())
}

/// Median over runs of a percentile (index into QUANTILES).
fn latency_median(
    cell: &LatencyCell,
    contender: Contender,
    quantile: usize,
    delete: bool,
) -> Option<f64> {
    stats(&latency_runs(cell, contender, quantile, delete)).map(|s| s.0)
}

fn wheel_cell(results: &Results, op: Op, pending: usize) -> Option<&WheelCell> {
    results
        .wheel
        .iter()
        .find(|c| c.op == op && c.pending == pending)
}

fn breakdown_median(results: &Results, op: &str, contender: Contender) -> Option<f64> {
    results
        .uncontended
        .breakdown
        .iter()
        .find(|(name, _)| *name == op)
        .and_then(|(_, runs)| median_of(runs, contender))
}

/// crossbeam-channel's 1P1C (batch 1, u64) M msgs/s in the throughput workloads: the median
/// that target 3 compares visq with.
fn channel_one_to_one(results: &Results) -> Option<f64> {
    workload(results, "1P1C", 1, "u64").and_then(|w| median_of(&w.runs, Contender::Channel))
}

/// visq's consumer-side work per message: a receive and a delete, each timed on its own.
fn consumer_ns(results: &Results) -> Option<f64> {
    breakdown_median(results, "receive", Contender::Visq)
        .zip(breakdown_median(results, "delete", Contender::Visq))
        .map(|(r, d)| r + d)
}

/// The run-queue waits of `contender`'s repeats in `cell` (producer + consumer), as a list.
fn runqueue_waits(cell: &LatencyCell, contender: Contender) -> String {
    let waits: Option<Vec<String>> = runs_in_cell(cell, contender)
        .iter()
        .map(|run| {
            run.runqueue_wait.map(|[producer, consumer]| {
                format!(
                    "{} + {}",
                    fmt_ns(producer.as_nanos() as f64),
                    fmt_ns(consumer.as_nanos() as f64)
                )
            })
        })
        .collect();
    waits.map_or("not reported by this kernel".into(), |w| w.join(", "))
}

fn sweep_runs(cells: &[SweepCell], capacity: usize, contender: Contender) -> &[f64] {
    cells
        .iter()
        .find(|c| c.capacity == capacity)
        .map_or(&[][..], |c| runs_of(&c.runs, contender))
}

/// The uncontended runs at the smallest capacity (where every queue ran).
fn uncontended_runs(results: &Results) -> &Runs {
    &results.uncontended.lifecycle[0].runs
}

fn fmt_opt_ns(ns: Option<f64>) -> String {
    ns.map_or("–".into(), fmt_ns)
}

/// Per-repeat values as "a, b, c".
fn fmt_list(values: &[f64], fmt: fn(f64) -> String) -> String {
    values
        .iter()
        .map(|&v| fmt(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Below this measured ratio a "≥" target is missed (and above it a "≤" one).
fn verdict(s: Option<Spread>, at_least: Option<f64>, at_most: Option<f64>) -> Option<bool> {
    s.map(|(m, _, _)| match (at_least, at_most) {
        (Some(a), _) if m < a => false,
        (_, Some(b)) if m > b => false,
        _ => true,
    })
}

/// Peak RSS growth per held message of `contender` (u64 body), or "–".
fn peak_rss(results: &Results, contender: Contender) -> String {
    results
        .memory
        .iter()
        .find(|m| m.contender == contender && m.payload == "u64")
        .map_or("–".into(), |m| fmt_bytes(m.peak_rss_per_message()))
}

fn targets(results: &Results) -> Vec<Target> {
    let mut all = Vec::new();
    let unc = uncontended_runs(results);
    let visq_unc = median_of(unc, Contender::Visq);
    let chan_unc = median_of(unc, Contender::Channel);
    let clock = stats(&results.uncontended.clock_read).map(|s| s.0);
    let split = |op: &str| fmt_opt_ns(breakdown_median(results, op, Contender::Visq));
    let where_time_goes = format!(
        "Uncontended at capacity {CAPACITY}, one lifecycle costs {} for visq against {} for \
         crossbeam-channel's send+recv and {} for the lock-based reference; visq's operations \
         timed on their own (1024 in a row): send {}, receive {}, delete {}; one \
         `Instant::now()` costs {} here.",
        fmt_opt_ns(visq_unc),
        fmt_opt_ns(chan_unc),
        fmt_opt_ns(median_of(unc, Contender::LockRef)),
        split("send"),
        split("receive"),
        split("delete"),
        fmt_opt_ns(clock),
    );
    let (small, large) = (SWEEP[0], SWEEP[SWEEP.len() - 1]);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    // 1. Capacity-independent cost: visq at 2^20 within 1.2× of visq at 1024.
    let sweep_growth = |cells: &[SweepCell], lower_is_better: bool, c: Contender| {
        let (at_small, at_large) = (sweep_runs(cells, small, c), sweep_runs(cells, large, c));
        ratios(at_large, at_small, |l, s| {
            if lower_is_better {
                l / s
            } else {
                s / l
            }
        })
    };
    for (what, cells, lower_is_better, fmt) in [
        (
            "uncontended send+receive+delete",
            &results.uncontended.lifecycle,
            true,
            fmt_ns as fn(f64) -> String,
        ),
        (
            "1P1C lifecycle throughput (batch 1, u64)",
            &results.sweep,
            false,
            fmt_rate,
        ),
    ] {
        let s = sweep_growth(cells, lower_is_better, Contender::Visq);
        let others = [Contender::Channel, Contender::LockRef]
            .iter()
            .map(|&c| {
                format!(
                    "{} {}",
                    c.name(),
                    fmt_ratio_stats(sweep_growth(cells, lower_is_better, c))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        all.push(Target {
            what: format!("1. {what}: capacity 2^20 within 1.2× of capacity {small}"),
            measured: format!("{} (cost at 2^20 ÷ cost at {small})", fmt_ratio_stats(s)),
            met: verdict(s, None, Some(1.2)),
            why: format!(
                "visq per repeat at {small}: {}; at 2^20: {}. The same ratio for the other queues \
                 in the same run: {others}. A cost that grows with the capacity while the \
                 messages in flight stay the same means the queue's working set follows the \
                 capacity (see the capacity sweep).",
                fmt_list(sweep_runs(cells, small, Contender::Visq), fmt),
                fmt_list(sweep_runs(cells, large, Contender::Visq), fmt),
            ),
        });
    }
    let p99_growth = |c: Contender| {
        latency_cell(results, 100_000, small)
            .zip(latency_cell(results, 100_000, large))
            .and_then(|(s, l)| {
                ratios(
                    &latency_runs(l, c, 2, false),
                    &latency_runs(s, c, 2, false),
                    |l, s| l / s,
                )
            })
    };
    let s = p99_growth(Contender::Visq);
    all.push(Target {
        what: format!(
            "1. p99 send-to-receive at 100 k msgs/s: capacity 2^20 within 1.2× of capacity {small}"
        ),
        measured: format!("{} (p99 at 2^20 ÷ p99 at {small})", fmt_ratio_stats(s)),
        met: verdict(s, None, Some(1.2)),
        why: format!(
            "crossbeam-channel's p99 moved by {} between the same capacities in the same run; \
             a p99 set by a few stalls per run moves with them (see the latency tables' \
             per-repeat ranges).",
            fmt_ratio_stats(p99_growth(Contender::Channel))
        ),
    });

    // 2. Uncontended cost against crossbeam-channel's send+recv.
    let s = ratios(
        runs_of(unc, Contender::Visq),
        runs_of(unc, Contender::Channel),
        |v, c| v / c,
    );
    let at_large = ratios(
        sweep_runs(&results.uncontended.lifecycle, large, Contender::Visq),
        sweep_runs(&results.uncontended.lifecycle, large, Contender::Channel),
        |v, c| v / c,
    );
    all.push(Target {
        what: format!(
            "2. uncontended send+receive+delete ≤ 2× crossbeam-channel's send+recv (capacity {small})"
        ),
        measured: format!(
            "{} (at 2^20: {})",
            fmt_ratio_stats(s),
            fmt_ratio_stats(at_large)
        ),
        met: verdict(s, None, Some(2.0)),
        why: format!(
            "{where_time_goes} {}",
            crate::bounds::barrier_summary(&results.bounds, |c| median_of(unc, c))
        ),
    });
    let one_to_one = crate::bounds::one_to_one_summary(
        &results.bounds,
        consumer_ns(results),
        channel_one_to_one(results),
    );

    // 3. Lifecycle throughput against crossbeam-channel's raw handoff and the reference.
    for (threads, baseline, bar) in [
        ("1P1C", Contender::Channel, 0.5),
        ("1P1C", Contender::LockRef, 5.0),
        ("4P4C", Contender::LockRef, 3.0),
    ] {
        let w = workload(results, threads, 1, "u64");
        let s = w.and_then(|w| speedup(w, baseline));
        let rates =
            |c: Contender| w.map_or("–".into(), |w| fmt_list(runs_of(&w.runs, c), fmt_rate));
        all.push(Target {
            what: format!(
                "3. {threads} lifecycle ≥ {bar}× {} (batch 1, u64, capacity {CAPACITY})",
                if baseline == Contender::Channel {
                    "crossbeam-channel's raw handoff (plain send/recv)"
                } else {
                    "the lock-based reference"
                }
            ),
            measured: fmt_ratio_stats(s),
            met: verdict(s, Some(bar), None),
            why: format!(
                "M msgs/s per repeat, visq: {}; {}: {} ({} threads on {cores} cores). {}",
                rates(Contender::Visq),
                baseline.name(),
                rates(baseline),
                if threads == "4P4C" { 8 } else { 2 },
                if threads == "1P1C" {
                    one_to_one.clone()
                } else {
                    crate::bounds::four_to_four_summary(&results.bounds)
                }
            ),
        });
    }

    // 4. Latency against crossbeam-channel's plain blocking recv.
    for rate in [10_000u64, 100_000, 1_000_000] {
        for capacity in [small, large] {
            let Some(cell) = latency_cell(results, rate, capacity) else {
                continue;
            };
            let p = |c: Contender, q: usize| stats(&latency_runs(cell, c, q, false));
            let (v50, c50) = (p(Contender::Visq, 0), p(Contender::Channel, 0));
            let (v99, c99) = (p(Contender::Visq, 2), p(Contender::Channel, 2));
            let met = match (v50, c50, v99, c99) {
                (Some(v50), Some(c50), Some(v99), Some(c99)) => {
                    Some(v99.0 <= c99.0 && v99.2 <= c99.2 && v50.0 <= 1.2 * c50.0)
                }
                _ => None,
            };
            let fmt_pair = |v: Option<Spread>, c: Option<Spread>, pick: fn(Spread) -> f64| {
                format!("{} vs {}", fmt_opt_ns(v.map(pick)), fmt_opt_ns(c.map(pick)))
            };
            let per_repeat = |q: usize| {
                fmt_ratio_stats(ratios(
                    &latency_runs(cell, Contender::Visq, q, false),
                    &latency_runs(cell, Contender::Channel, q, false),
                    |v, c| v / c,
                ))
            };
            all.push(Target {
                what: format!(
                    "4. {}, capacity {capacity}: send-to-receive p99 ≤ crossbeam-channel's (median and worst of the repeats), p50 within 1.2×",
                    cell.spec.pace.label()
                ),
                measured: format!(
                    "p99 visq ÷ channel {} per repeat; p99 median {}, worst {}; p50 median {} \
                     (visq vs channel), p50 ÷ {}",
                    per_repeat(2),
                    fmt_pair(v99, c99, |s| s.0),
                    fmt_pair(v99, c99, |s| s.2),
                    fmt_pair(v50, c50, |s| s.0),
                    per_repeat(0),
                ),
                met,
                why: format!(
                    "p99 per repeat, visq: {}; crossbeam-channel: {}; the lock-based reference: \
                     {}. A p99 in the milliseconds at these rates is a stall of the consumer or \
                     the producer (a receiver parked and woken late, or a preempted thread: one \
                     scheduler tick is several ms), not the queue's per-message cost. How long \
                     the producer + the consumer sat runnable but not running (their run-queue \
                     wait) in the same repeats, visq: {}; crossbeam-channel: {}: where a \
                     millisecond p99 comes with a wait far below a millisecond, the stall came \
                     from outside this machine's scheduler (the hypervisor).{}",
                    fmt_list(&latency_runs(cell, Contender::Visq, 2, false), fmt_ns),
                    fmt_list(&latency_runs(cell, Contender::Channel, 2, false), fmt_ns),
                    fmt_list(&latency_runs(cell, Contender::LockRef, 2, false), fmt_ns),
                    runqueue_waits(cell, Contender::Visq),
                    runqueue_waits(cell, Contender::Channel),
                    if c50.is_some_and(|c| c.0 > DISTURBED_P50_NS) {
                        " In this run even crossbeam-channel's median was above 100 µs: the \
                         machine was busy, and this cell says little about the queues."
                    } else {
                        ""
                    }
                ),
            });
        }
    }

    // 5. Memory per slot.
    let body = std::mem::size_of::<u64>() as f64;
    let [(_, plain), (_, with_dlq)] = &results.parts;
    let per = |m: &visq::Memory, bytes: usize| fmt_bytes(bytes as f64 / m.capacity as f64);
    all.push(Target {
        what: "5. ≤ 40 B of queue memory per slot beyond the body (capacity 2^20, u64, `Queue::memory()`)"
            .into(),
        measured: format!(
            "{} (with a dead-letter queue: {})",
            fmt_bytes(plain.per_slot() - body),
            fmt_bytes(with_dlq.per_slot() - body)
        ),
        met: Some(plain.per_slot() - body <= 40.0),
        why: format!(
            "per slot: slots {} (the {body} B body included), rings {}, wheel {}, death records {} \
             (only with a dead-letter queue: {}), latency recorder {}. Peak RSS per held message \
             with {} in flight, u64 body: visq {}, the lock-based reference {}. See the memory \
             section. What 40 B would have to hold: the lease word, the deadline, the message \
             id (ids grow in send order), the receive count, a free-stack link and a ready-ring \
             entry are 8 + 8 + 8 + 4 + 4 + 8 = 40 B by themselves, before any index of the \
             deadlines (the wheel's per-slot link, 24 B, its notice inbox threaded through \
             it) and the lease start that the ages in `Stats` and the latency metrics read \
             (8 B).",
            per(plain, plain.slots),
            per(plain, plain.rings),
            per(plain, plain.wheel),
            per(plain, plain.death_records),
            per(with_dlq, with_dlq.death_records),
            per(plain, plain.latency),
            pending_label(HELD),
            peak_rss(results, Contender::Visq),
            peak_rss(results, Contender::LockRef),
        ),
    });

    // 6. The wheel at 1 M pending.
    for op in [Op::Expire, Op::Change] {
        let cell = wheel_cell(results, op, 1_000_000);
        let s = cell.and_then(|c| {
            ratios(
                runs_of(&c.runs, Contender::LockRef),
                runs_of(&c.runs, Contender::Visq),
                |h, v| h / v,
            )
        });
        let med = |c: Contender| fmt_opt_ns(cell.and_then(|cell| median_of(&cell.runs, c)));
        all.push(Target {
            what: format!(
                "6. timing wheel at 1 M pending: {} ≥ 3× cheaper than the BinaryHeap reference",
                op.label()
            ),
            measured: format!(
                "{} (heap ÷ visq; {} vs {})",
                fmt_ratio_stats(s),
                med(Contender::Visq),
                med(Contender::LockRef)
            ),
            met: verdict(s, Some(3.0), None),
            why: "every measured operation goes through the whole queue (receive or \
                  change_visibility: ring, slot, clock), not the bookkeeping alone; with 1 M \
                  pending each touches a random slot far beyond the caches, on both sides. \
                  Counted with valgrind's cache simulator (`bash benches/cache_misses.sh`, \
                  results/cache-misses.md): the reference's change_visibility misses the \
                  last level fewer than 3 times per call, one of them for the receipt's own \
                  slot, which visq must touch too; so even a wheel that cost nothing would \
                  leave visq under 3× cheaper there. See the timing-wheel section for 1 k and \
                  100 k pending."
                .into(),
        });
    }

    // The tutorial design's two targets (replacing the retired "100×").
    let w11 = workload(results, "1P1C", 1, "u64");
    let s = w11.and_then(|w| speedup(w, Contender::Tutorial));
    all.push(Target {
        what:
            "tutorial: ≥ 10× its 1P1C lifecycle throughput (batch 1, u64; it polls every 1 ms here)"
                .into(),
        measured: fmt_ratio_stats(s),
        met: verdict(s, Some(10.0), None),
        why: format!(
            "uncontended, the tutorial design costs {} per message against visq's {}. {}",
            fmt_opt_ns(median_of(unc, Contender::Tutorial)),
            fmt_opt_ns(visq_unc),
            one_to_one
        ),
    });
    let cell = latency_cell(results, 10_000, large)
        .filter(|c| (c.spec.pace, c.spec.capacity) == super::TUTORIAL_LATENCY);
    let s = cell.and_then(|c| {
        ratios(
            &latency_runs(c, Contender::Tutorial, 0, false),
            &latency_runs(c, Contender::Visq, 0, false),
            |t, v| t / v,
        )
    });
    all.push(Target {
        what: format!(
            "tutorial: ≥ 1000× better p50 send-to-receive at its default {} s poll (10 k msgs/s, capacity 2^20)",
            DEFAULT_POLL.as_secs()
        ),
        measured: format!(
            "{} (tutorial p50 ÷ visq p50; {} vs {})",
            fmt_ratio_stats(s),
            fmt_opt_ns(cell.and_then(|c| latency_median(c, Contender::Tutorial, 0, false))),
            fmt_opt_ns(cell.and_then(|c| latency_median(c, Contender::Visq, 0, false))),
        ),
        met: verdict(s, Some(1000.0), None),
        why: "the tutorial's consumer sleeps a whole poll whenever it finds nothing, so its \
              median wait is about half a poll; visq's p50 is in the table above."
            .into(),
    });

    // 7. Still no allocation per message.
    let visq_mem = results
        .memory
        .iter()
        .find(|m| m.contender == Contender::Visq && m.payload == "u64");
    all.push(Target {
        what: "7. 0 allocations per message (send, receive, delete)".into(),
        measured: visq_mem.map_or("–".into(), |m| {
            format!("{:.3}", m.allocations_per_message)
        }),
        met: visq_mem.map(|m| m.allocations_per_message == 0.0),
        why: "an allocation was counted in the send, receive, delete loop; see the memory table."
            .into(),
    });
    all
}

// ---------------------------------------------------------------------------------------------
// The README.

pub fn write(out: &Path, machine: &Machine, plan: &Plan, results: &Results) -> io::Result<PathBuf> {
    fs::create_dir_all(out)?;
    remove_latency_plots(out)?;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# visq benchmark results\n");
    let _ = writeln!(
        w,
        "Written by `{}` in {:.0} s{}. Every number below comes from that one run; the \
         benchmarks themselves are `cargo bench` (criterion, longer runs).\n",
        machine.command,
        results.elapsed.as_secs_f64(),
        if plan.quick {
            " (a --quick smoke run: too short to quote)"
        } else {
            ""
        }
    );
    let _ = writeln!(w, "| machine | |\n|---|---|");
    let _ = writeln!(w, "| date | {} |", machine.date);
    let _ = writeln!(w, "| CPU | {} |", machine.cpu);
    let _ = writeln!(w, "| cores | {} |", machine.cores);
    let _ = writeln!(w, "| kernel | {} |", machine.kernel);
    let _ = writeln!(w, "| compiler | {} |", machine.rustc);
    let _ = writeln!(w, "| load average at start | {} |", machine.load);
    let _ = writeln!(w, "| allocator | mimalloc (all queues) |\n");
    let one_minute_load = machine
        .load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok());
    if let Some(load) = one_minute_load.filter(|&l| l > BUSY_LOAD) {
        let _ = writeln!(
            w,
            "**The machine was busy** (load average {load:.2} at the start, on {} cores): the \
             benchmark threads shared cores with other work, which moves every cell, and the \
             contended and latency cells most. Treat this run as a check that the report works, \
             not as the numbers to quote.\n",
            machine.cores
        );
    }
    let _ = writeln!(
        w,
        "**Noise.** Each cell was run {} times ({} for latency) and is reported as the median with \
         min–max. The same cell can move by up to 2× between runs on a small shared machine, so \
         compare queues by the *ratios*, which are computed repeat by repeat between runs made \
         back to back (median and min–max of those per-repeat ratios), never across reports.\n",
        plan.reps, plan.latency_reps
    );
    let _ = writeln!(
        w,
        "**Queues.** `visq`; `crossbeam-channel` `bounded(capacity)` used as its users use it \
         (plain blocking `send` and `recv`; a STOP message ends a consumer, so no timeout \
         variant is needed) and crossbeam-queue `ArrayQueue` (spin, then yield), both doing a \
         plain handoff (push, pop: no lease, no delete, weaker guarantees); the **lock-based \
         reference** with visq's semantics (`Mutex` over a `Vec` slab with a LIFO free list and \
         lease generations, `VecDeque` of ready slots, `BinaryHeap` of deadlines, `Condvar` for \
         waits); the **tutorial** design (one `Mutex`, a `Vec` of ready messages, a \
         `HashMap<String, _>` of in-flight ones keyed by a formatted receipt, a reaper thread \
         once a second, polling consumers: {} ms poll in the throughput runs, its default {} s \
         in the latency runs). Code: `benches/common/`.\n",
        TUTORIAL_POLL.as_millis(),
        DEFAULT_POLL.as_secs()
    );

    // Targets.
    let targets = targets(results);
    let _ = writeln!(w, "## Targets (issue 10)\n");
    let _ = writeln!(
        w,
        "| target | measured (median, min–max) | |\n|---|---|---|"
    );
    for t in &targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(w, "| {} | {} | {verdict} |", t.what, t.measured);
    }
    let missed: Vec<&Target> = targets.iter().filter(|t| t.met == Some(false)).collect();
    if !missed.is_empty() {
        let _ = writeln!(w, "\n### Why the missed ones are missed\n");
        for t in missed {
            let _ = writeln!(w, "- **{}** ({}): {}", t.what, t.measured, t.why);
        }
    }

    sweep_section(w, results);
    uncontended_section(w, results);
    let unc = uncontended_runs(results);
    crate::bounds::section(
        w,
        &results.bounds,
        |c| median_of(unc, c),
        consumer_ns(results),
        channel_one_to_one(results),
    );
    throughput_section(w, out, results)?;
    latency_section(w, out, results)?;
    histogram_cost_section(w, &results.histogram_cost);
    wheel_section(w, out, results)?;
    memory_section(w, results);
    crate::async_front::section(w, &results.async_front);
    crate::features::section(w, &results.features);

    let _ = writeln!(
        w,
        "\n## How to reproduce\n\n```sh\n{}\ncargo bench                      # all criterion benches (longer)\n\
         cargo bench --bench lifecycle    # throughput and uncontended cost, capacity sweep\n\
         cargo bench --bench latency      # latency at 10 k / 100 k / 1 M msgs/s, capacities 1024 and 2^20\n\
         cargo bench --bench wheel        # deadline bookkeeping at 1 k / 100 k / 1 M pending\n\
         cargo bench --bench memory       # bytes per slot by part, per held message, peak RSS, allocations\n\
         cargo bench --bench async        # the async front against tokio mpsc, async-channel, flume\n\
         cargo bench --bench features     # message groups, priorities, at-most-once (issue 11)\n```",
        machine.command
    );
    let readme = out.join("README.md");
    fs::write(&readme, md)?;
    Ok(readme)
}

/// Removes the latency plots of an earlier report (their cells may have changed), so that the
/// folder holds only the plots this report links.
fn remove_latency_plots(out: &Path) -> io::Result<()> {
    for entry in fs::read_dir(out)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("latency-") && name.ends_with(".svg") {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The capacity sweep: uncontended cost, 1P1C throughput and p99 at 100 k msgs/s, each
/// queue built with the capacity of the row.
fn sweep_section(w: &mut String, results: &Results) {
    let _ = writeln!(w, "\n## Capacity sweep\n");
    let _ = writeln!(
        w,
        "Every queue built with the capacity of the row (crossbeam-channel `bounded(capacity)`), \
         the same workloads otherwise; repeats interleaved across capacities and queues, ratios \
         per repeat (median, min–max). *visq ÷ at {}*: visq's value over its own at the smallest \
         capacity.\n",
        SWEEP[0]
    );
    let table = |w: &mut String,
                 title: &str,
                 cells: &[SweepCell],
                 fmt: fn(f64) -> String,
                 ratio: fn(f64, f64) -> f64| {
        let _ = writeln!(w, "### {title}\n");
        let _ = writeln!(
            w,
            "| capacity | visq | crossbeam-channel | lock-based ref | visq ÷ channel | visq ÷ ref | visq ÷ at {} |\n|---|---|---|---|---|---|---|",
            SWEEP[0]
        );
        for cell in cells {
            let cell_of = |c: Contender| {
                stats(runs_of(&cell.runs, c)).map_or("–".into(), |(m, lo, hi)| {
                    format!("{} ({}–{})", fmt(m), fmt(lo), fmt(hi))
                })
            };
            let visq = runs_of(&cell.runs, Contender::Visq);
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell.capacity,
                cell_of(Contender::Visq),
                cell_of(Contender::Channel),
                cell_of(Contender::LockRef),
                fmt_ratio_stats(ratios(visq, runs_of(&cell.runs, Contender::Channel), ratio)),
                fmt_ratio_stats(ratios(visq, runs_of(&cell.runs, Contender::LockRef), ratio)),
                fmt_ratio_stats(ratios(
                    visq,
                    sweep_runs(cells, SWEEP[0], Contender::Visq),
                    ratio
                )),
            );
        }
        let _ = writeln!(w);
    };
    table(
        w,
        "Uncontended send+receive+delete (push+pop), ns per message (cost ratios: visq ÷ other)",
        &results.uncontended.lifecycle,
        fmt_ns,
        |v, o| v / o,
    );
    table(
        w,
        "1P1C lifecycle, batch 1, u64, M msgs/s (throughput ratios: visq ÷ other, higher is better; last column: below 1 is slower than at the smallest capacity)",
        &results.sweep,
        fmt_rate,
        |v, o| v / o,
    );
    let _ = writeln!(
        w,
        "### p99 send-to-receive at 100 k msgs/s (median of the repeats, min–max)\n"
    );
    let _ = writeln!(
        w,
        "| capacity | visq | crossbeam-channel | lock-based ref | visq ÷ channel (per repeat) |\n|---|---|---|---|---|"
    );
    for capacity in SWEEP {
        let Some(cell) = latency_cell(results, 100_000, capacity) else {
            continue;
        };
        let cell_of = |c: Contender| {
            stats(&latency_runs(cell, c, 2, false)).map_or("–".into(), |(m, lo, hi)| {
                format!("{} ({}–{})", fmt_ns(m), fmt_ns(lo), fmt_ns(hi))
            })
        };
        let _ = writeln!(
            w,
            "| {capacity} | {} | {} | {} | {} |",
            cell_of(Contender::Visq),
            cell_of(Contender::Channel),
            cell_of(Contender::LockRef),
            fmt_ratio_stats(ratios(
                &latency_runs(cell, Contender::Visq, 2, false),
                &latency_runs(cell, Contender::Channel, 2, false),
                |v, c| v / c
            )),
        );
    }
}

fn uncontended_section(w: &mut String, results: &Results) {
    let unc = &results.uncontended;
    let lifecycle = uncontended_runs(results);
    let _ = writeln!(w, "\n## Uncontended cost\n");
    let _ = writeln!(
        w,
        "One thread, one message at a time: send, receive, delete (push, pop for the handoff \
         queues: crossbeam-channel's `send` and `recv`), u64 body, capacity {CAPACITY}. Lower is \
         better.\n"
    );
    let _ = writeln!(
        w,
        "| queue | ns per message | min–max | this ÷ visq |\n|---|---|---|---|"
    );
    let visq = runs_of(lifecycle, Contender::Visq);
    for (contender, values) in lifecycle {
        let Some((m, lo, hi)) = stats(values) else {
            continue;
        };
        let ratio = if *contender == Contender::Visq {
            "—".into()
        } else {
            fmt_ratio_stats(ratios(values, visq, |b, v| b / v))
        };
        let _ = writeln!(
            w,
            "| {} | {} | {}–{} | {ratio} |",
            name(*contender),
            fmt_ns(m),
            fmt_ns(lo),
            fmt_ns(hi)
        );
    }
    let _ = writeln!(
        w,
        "\nWhere the time goes: each operation timed on its own, 1024 in a row (the queue fills, \
         then drains; ns per operation, median of the repeats):\n"
    );
    let _ = writeln!(w, "| queue | send | receive | delete |\n|---|---|---|---|");
    for contender in Contender::LEASING {
        let cell = |op: &str| breakdown_median(results, op, contender).map_or("–".into(), fmt_ns);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            name(contender),
            cell("send"),
            cell("receive"),
            cell("delete")
        );
    }
    if let Some((m, lo, hi)) = stats(&unc.clock_read) {
        let _ = writeln!(
            w,
            "\nFor scale: `Instant::now()` (the exact monotonic clock) costs {} ({}–{}) per call on this machine.",
            fmt_ns(m),
            fmt_ns(lo),
            fmt_ns(hi)
        );
    }
}

/// Median, min and max.
type Spread = (f64, f64, f64);

fn histogram_cost_section(w: &mut String, cost: &HistogramCost) {
    let _ = writeln!(w, "\n## Latency histograms: what they cost\n");
    let _ = writeln!(
        w,
        "visq with `.sample_latencies(n)` against the same queue without, runs alternating (off, \
         n = {}, n = {}) and paired repeat by repeat; each cell is the median (min–max) and, for \
         the sampled runs, their ratio to *off* (below 1: sampling costs throughput).\n",
        SAMPLINGS[1], SAMPLINGS[2]
    );
    let _ = writeln!(
        w,
        "| workload | off | every message | ÷ off | one in {} | ÷ off |\n|---|---|---|---|---|---|",
        SAMPLINGS[2]
    );
    let row = |w: &mut String, label: String, runs: &[Vec<f64>; 3], fmt: fn(f64) -> String| {
        let cell = |values: &[f64]| {
            stats(values).map_or("–".into(), |(m, lo, hi)| {
                format!("{} ({}–{})", fmt(m), fmt(lo), fmt(hi))
            })
        };
        let ratio = |values: &[f64]| fmt_ratio_stats(ratios(values, &runs[0], |on, off| on / off));
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {} | {} |",
            cell(&runs[0]),
            cell(&runs[1]),
            ratio(&runs[1]),
            cell(&runs[2]),
            ratio(&runs[2])
        );
    };
    row(
        w,
        "uncontended (ns per message)".into(),
        &cost.uncontended,
        fmt_ns,
    );
    for (shape, runs) in &cost.throughput {
        row(
            w,
            format!("{} u64 (M msgs/s)", shape.label()),
            runs,
            fmt_rate,
        );
    }
}

fn name(contender: Contender) -> String {
    if contender == Contender::Visq {
        "**visq**".into()
    } else {
        contender.name().into()
    }
}

fn throughput_section(w: &mut String, out: &Path, results: &Results) -> io::Result<()> {
    let _ = writeln!(w, "\n## Throughput: the full lifecycle\n");
    let _ = writeln!(
        w,
        "Producers send, consumers receive (one at a time, or `receive_batch` of 32) and delete; \
         for the handoff queues, push and pop. Capacity {CAPACITY}. Time from the start barrier \
         to the last message settled. M msgs/s, higher is better. \"visq ÷ this\" is visq's \
         throughput over this queue's, repeat by repeat.\n"
    );
    let groups: Vec<String> = results.workloads.iter().map(short_label).collect();
    let series: Vec<Series> = Contender::ALL
        .iter()
        .map(|&c| Series {
            name: c.name().into(),
            colour: c.colour().into(),
            values: results
                .workloads
                .iter()
                .map(|w| median_of(&w.runs, c))
                .collect(),
            range: results
                .workloads
                .iter()
                .map(|w| stats(runs_of(&w.runs, c)).map(|s| (s.1, s.2)))
                .collect(),
            dashed: false,
        })
        .collect();
    fs::write(
        out.join("throughput.svg"),
        svg::bars(
            "Lifecycle throughput (M msgs/s, log scale; whiskers: min–max)",
            "M msgs/s",
            &groups,
            &series,
            &fmt_rate,
        ),
    )?;
    let _ = writeln!(w, "![throughput by workload and queue](throughput.svg)\n");
    // Overview.
    let _ = write!(w, "| workload |");
    for c in Contender::ALL {
        let _ = write!(w, " {} |", c.name());
    }
    let _ = write!(w, "\n|---|");
    for _ in Contender::ALL {
        let _ = write!(w, "---|");
    }
    let _ = writeln!(w);
    for workload in &results.workloads {
        let _ = write!(w, "| {} |", workload.label());
        for c in Contender::ALL {
            let _ = write!(
                w,
                " {} |",
                median_of(&workload.runs, c).map_or("–".into(), fmt_rate)
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "\n(medians, M msgs/s; the tables below give min–max and ratios)"
    );
    for workload in &results.workloads {
        let _ = writeln!(w, "\n### {}\n", workload.label());
        let _ = writeln!(
            w,
            "| queue | M msgs/s | min–max | visq ÷ this (min–max) |\n|---|---|---|---|"
        );
        let visq = runs_of(&workload.runs, Contender::Visq);
        for (contender, values) in &workload.runs {
            let failed = values.iter().filter(|v| !v.is_finite()).count();
            let Some((m, lo, hi)) = stats(values) else {
                let _ = writeln!(w, "| {} | did not finish | | |", name(*contender));
                continue;
            };
            let ratio = if *contender == Contender::Visq {
                "—".into()
            } else {
                fmt_ratio_stats(ratios(visq, values, |v, b| v / b))
            };
            let note = if failed > 0 {
                format!(" ({failed} runs did not finish)")
            } else {
                String::new()
            };
            let _ = writeln!(
                w,
                "| {} | {}{note} | {}–{} | {ratio} |",
                name(*contender),
                fmt_rate(m),
                fmt_rate(lo),
                fmt_rate(hi)
            );
        }
    }
    Ok(())
}

fn short_label(w: &Workload) -> String {
    format!("{} b{} / {}", w.shape.threads(), w.shape.batch, w.payload)
}

fn latency_section(w: &mut String, out: &Path, results: &Results) -> io::Result<()> {
    let _ = writeln!(w, "\n## Latency, 1P1C\n");
    let _ = writeln!(
        w,
        "Send-to-receive and send-to-delete (lease queues), from the message's *intended* send \
         time at a fixed offered rate, so a producer held back by the queue counts against it. \
         One producer busy-waits to its \
         schedule; visq's and the lock-based reference's consumer loops `receive_batch(max 1, \
         wait {} ms)` then `delete`, crossbeam-channel's calls its plain blocking `recv` (the \
         main comparison), the tutorial design polls at its default {} s (in one cell only). \
         Every queue is built with the cell's capacity. Percentiles are medians over the \
         repeats; p50 and p99 also show min–max (the max is the worst repeat).\n",
        CONSUMER_WAIT.as_millis(),
        DEFAULT_POLL.as_secs()
    );
    let labels: Vec<String> = QUANTILES.iter().map(|(l, _)| l.to_string()).collect();
    for cell in &results.latency {
        let file = format!(
            "latency-{}-cap-{}.svg",
            cell.spec.pace.key(),
            cell.spec.capacity
        );
        let title = format!(
            "{}, capacity {}",
            cell.spec.pace.label(),
            cell.spec.capacity
        );
        let mut series = Vec::new();
        for (contender, runs) in &cell.runs {
            series.push(Series {
                name: format!("{} receive", contender.name()),
                colour: contender.colour().into(),
                values: (0..6)
                    .map(|q| {
                        stats(&runs.iter().map(|r| r.receive[q] as f64).collect::<Vec<_>>())
                            .map(|s| s.0)
                    })
                    .collect(),
                range: Vec::new(),
                dashed: false,
            });
            if contender.leases() {
                series.push(Series {
                    name: format!("{} delete", contender.name()),
                    colour: contender.colour().into(),
                    values: (0..6)
                        .map(|q| {
                            stats(
                                &runs
                                    .iter()
                                    .filter_map(|r| r.delete.map(|d| d[q] as f64))
                                    .collect::<Vec<_>>(),
                            )
                            .map(|s| s.0)
                        })
                        .collect(),
                    range: Vec::new(),
                    dashed: true,
                });
            }
        }
        fs::write(
            out.join(&file),
            svg::lines(
                &format!("1P1C latency, {title} (log scale)"),
                "percentile",
                "latency",
                &labels,
                &series,
                &fmt_ns_tick,
            ),
        )?;
        let _ = writeln!(w, "### {title}\n");
        let _ = writeln!(w, "![latency percentiles, {title}]({file})\n");
        let _ = writeln!(
            w,
            "| queue | measure | p50 | p90 | p99 | p99.9 | p99.99 | max | p50 min–max | p99 min–max | sent per run |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for (contender, runs) in &cell.runs {
            let mut rows: Vec<(&str, Vec<[u64; 6]>)> =
                vec![("send→receive", runs.iter().map(|r| r.receive).collect())];
            if contender.leases() {
                rows.push((
                    "send→delete",
                    runs.iter().filter_map(|r| r.delete).collect(),
                ));
            }
            let complete = runs.iter().all(|r| r.complete);
            let sent =
                stats(&runs.iter().map(|r| r.sent as f64).collect::<Vec<_>>()).map_or(0.0, |s| s.0);
            for (measure, percentiles) in rows {
                let column = |q: usize| percentiles.iter().map(|p| p[q] as f64).collect::<Vec<_>>();
                let med = |q: usize| stats(&column(q)).map_or("–".into(), |s| fmt_ns(s.0));
                let range = |q: usize| {
                    stats(&column(q))
                        .map_or("–".into(), |s| format!("{}–{}", fmt_ns(s.1), fmt_ns(s.2)))
                };
                let _ = writeln!(
                    w,
                    "| {} | {measure} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}{} |",
                    name(*contender),
                    med(0),
                    med(1),
                    med(2),
                    med(3),
                    med(4),
                    med(5),
                    range(0),
                    range(2),
                    sent,
                    if complete {
                        String::new()
                    } else {
                        format!(" of {} (time limit)", cell.spec.messages)
                    }
                );
            }
        }
        if let (super::Pace::Rate(_), Some(p50)) = (
            cell.spec.pace,
            latency_median(cell, Contender::Channel, 0, false),
        ) {
            if p50 > DISTURBED_P50_NS {
                let _ = writeln!(
                    w,
                    "\n**This cell was disturbed:** even crossbeam-channel's median was {}. The \
                     producer busy-waits for each send time and so occupies a core; on a 2-core \
                     machine with any other load, the producer or the consumer is preempted for \
                     milliseconds and every queue shows it. Rerun on a quiet machine before \
                     reading latency from this table.",
                    fmt_ns(p50)
                );
            }
        }
        let _ = writeln!(w);
    }
    Ok(())
}

fn wheel_section(w: &mut String, out: &Path, results: &Results) -> io::Result<()> {
    let _ = writeln!(
        w,
        "\n## Deadline bookkeeping: timing wheel against a BinaryHeap\n"
    );
    let _ = writeln!(
        w,
        "Through the public API, with a `ManualClock`: `pending` leases in flight with deadlines \
         spread evenly over the 30 s visibility timeout. *lease*: a receive, which files a \
         deadline; *expiry*: advance the clock past ~64 deadlines and time the one receive that \
         expires them (per expired lease; then the rest are re-leased, untimed, and each run \
         covers at least one full cycle, so every cascade is paid); *change_visibility*: a random \
         pending lease gets a random timeout in 1 ms..60 s. ns per operation, lower is better; \
         each includes the queue around the bookkeeping (ring, slot, clock). The BinaryHeap is \
         the lock-based reference's.\n"
    );
    let groups: Vec<String> = results
        .wheel
        .iter()
        .map(|c| format!("{} / {}", c.op.short(), pending_label(c.pending)))
        .collect();
    let series: Vec<Series> = [Contender::Visq, Contender::LockRef]
        .iter()
        .map(|&c| Series {
            name: if c == Contender::Visq {
                "visq (timing wheel)".into()
            } else {
                "lock-based ref (BinaryHeap)".into()
            },
            colour: c.colour().into(),
            values: results
                .wheel
                .iter()
                .map(|cell| median_of(&cell.runs, c))
                .collect(),
            range: results
                .wheel
                .iter()
                .map(|cell| stats(runs_of(&cell.runs, c)).map(|s| (s.1, s.2)))
                .collect(),
            dashed: false,
        })
        .collect();
    fs::write(
        out.join("wheel.svg"),
        svg::bars(
            "Deadline bookkeeping, ns per operation by pending deadlines (log scale)",
            "ns per operation",
            &groups,
            &series,
            &fmt_ns_tick,
        ),
    )?;
    let _ = writeln!(w, "![timing wheel against BinaryHeap](wheel.svg)\n");
    let _ = writeln!(
        w,
        "| operation | pending | visq | min–max | BinaryHeap ref | min–max | heap ÷ visq (min–max) |\n|---|---|---|---|---|---|---|"
    );
    for cell in &results.wheel {
        let v = stats(runs_of(&cell.runs, Contender::Visq));
        let h = stats(runs_of(&cell.runs, Contender::LockRef));
        let r = ratios(
            runs_of(&cell.runs, Contender::LockRef),
            runs_of(&cell.runs, Contender::Visq),
            |h, v| h / v,
        );
        let fmt = |s: Option<(f64, f64, f64)>| match s {
            Some((m, lo, hi)) => (fmt_ns(m), format!("{}–{}", fmt_ns(lo), fmt_ns(hi))),
            None => ("–".into(), "–".into()),
        };
        let (vm, vr) = fmt(v);
        let (hm, hr) = fmt(h);
        let _ = writeln!(
            w,
            "| {} | {} | {vm} | {vr} | {hm} | {hr} | {} |",
            cell.op.label(),
            pending_label(cell.pending),
            fmt_ratio_stats(r)
        );
    }
    let _ = writeln!(w, "\nGrowth from 1 k to 1 M pending (median ÷ median):\n");
    let _ = writeln!(w, "| operation | visq | BinaryHeap ref |\n|---|---|---|");
    for op in Op::ALL {
        let growth = |c: Contender| {
            let cell = |p: usize| -> Option<&WheelCell> {
                results.wheel.iter().find(|x| x.op == op && x.pending == p)
            };
            cell(1_000)
                .and_then(|s| median_of(&s.runs, c))
                .zip(cell(1_000_000).and_then(|l| median_of(&l.runs, c)))
                .map_or("–".into(), |(s, l)| fmt_ratio(l / s))
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            op.label(),
            growth(Contender::Visq),
            growth(Contender::LockRef)
        );
    }
    Ok(())
}

fn pending_label(pending: usize) -> String {
    match pending {
        p if p >= 1_000_000 && p % 1_000_000 == 0 => format!("{} M", p / 1_000_000),
        p if p >= 1_000 && p % 1_000 == 0 => format!("{} k", p / 1_000),
        p => p.to_string(),
    }
}

fn memory_section(w: &mut String, results: &Results) {
    let _ = writeln!(w, "\n## Memory\n");
    let _ = writeln!(
        w,
        "### visq per slot, itemised (`Queue::memory()`, capacity 2^20, u64 body)\n\n\
         What `build()` allocated, part by part, divided by the capacity; nothing is allocated \
         after `build()`. *beyond the body*: the total minus the {} B body.\n",
        std::mem::size_of::<u64>()
    );
    let _ = writeln!(
        w,
        "| queue | slots | rings | wheel | death records | latency recorder | total | beyond the body |\n|---|---|---|---|---|---|---|---|"
    );
    for (what, m) in &results.parts {
        let per = |bytes: usize| fmt_bytes(bytes as f64 / m.capacity as f64);
        let _ = writeln!(
            w,
            "| {what} | {} | {} | {} | {} | {} | {} | {} |",
            per(m.slots),
            per(m.rings),
            per(m.wheel),
            per(m.death_records),
            per(m.latency),
            fmt_bytes(m.per_slot()),
            fmt_bytes(m.per_slot() - std::mem::size_of::<u64>() as f64)
        );
    }
    let _ = writeln!(w, "\n### Held messages, against the baselines\n");
    let _ = writeln!(
        w,
        "Each row is a fresh process holding {} messages in flight (received, not deleted), \
         counted by a counting global allocator: *build()*: bytes `build()` allocated for a \
         capacity of {}, per slot; *held*: all bytes allocated from before `build()` until every \
         message is in flight, per message; *beyond the body*: held minus the body's size; \
         *peak RSS*: growth of `VmHWM` over the process's RSS before `build()`, per message; \
         *allocations*: per send, receive, delete in steady state.\n",
        pending_label(HELD),
        pending_label(HELD)
    );
    let _ = writeln!(
        w,
        "| queue | body | build() per slot | held per message | beyond the body | peak RSS per message | allocations per message |\n|---|---|---|---|---|---|---|"
    );
    for m in &results.memory {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {:.2} |",
            name(m.contender),
            m.payload,
            fmt_bytes(m.build_per_message()),
            fmt_bytes(m.held_per_message()),
            fmt_bytes(m.overhead_per_message()),
            fmt_bytes(m.peak_rss_per_message()),
            m.allocations_per_message
        );
    }
}
