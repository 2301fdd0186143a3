//! Writing `results/README.md` and its plots from the measurements.

use super::common::adapters::Contender;
use super::common::latency::QUANTILES;
use super::common::median_min_max;
use super::common::memory::{Memory, HELD};
use super::common::throughput::{CAPACITY, TUTORIAL_POLL};
use super::common::tutorial::DEFAULT_POLL;
use super::common::wheel::Op;
use super::svg::{self, Series};
use super::{HistogramCost, LatencyCell, Plan, Results, Runs, WheelCell, Workload, SAMPLINGS};
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
fn stats(values: &[f64]) -> Option<(f64, f64, f64)> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    (!finite.is_empty()).then(|| median_min_max(&finite))
}

/// Per-repeat ratios `f(a, b)` of two queues' runs, paired repeat by repeat.
fn ratios(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Option<(f64, f64, f64)> {
    let paired: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f(x, y))
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    stats(&paired)
}

fn runs_of(runs: &Runs, contender: Contender) -> &[f64] {
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

fn fmt_rate(r: f64) -> String {
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

fn fmt_ratio_stats(s: Option<(f64, f64, f64)>) -> String {
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

fn latency_cell(results: &Results, rate: u64) -> Option<&LatencyCell> {
    results
        .latency
        .iter()
        .find(|c| c.spec.pace == super::Pace::Rate(rate))
}

/// Median over runs of a percentile (index into QUANTILES) of send-to-receive.
fn latency_median(
    cell: &LatencyCell,
    contender: Contender,
    quantile: usize,
    delete: bool,
) -> Option<f64> {
    let runs = &cell.runs.iter().find(|(c, _)| *c == contender)?.1;
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|r| {
            if delete {
                r.delete.map(|d| d[quantile] as f64)
            } else {
                Some(r.receive[quantile] as f64)
            }
        })
        .collect();
    stats(&values).map(|s| s.0)
}

fn wheel_median(results: &Results, op: Op, pending: usize, contender: Contender) -> Option<f64> {
    results
        .wheel
        .iter()
        .find(|c| c.op == op && c.pending == pending)
        .and_then(|c| median_of(&c.runs, contender))
}

fn breakdown_median(results: &Results, op: &str, contender: Contender) -> Option<f64> {
    results
        .uncontended
        .breakdown
        .iter()
        .find(|(name, _)| *name == op)
        .and_then(|(_, runs)| median_of(runs, contender))
}

fn targets(results: &Results) -> Vec<Target> {
    let mut all = Vec::new();
    let unc = &results.uncontended;
    let visq_unc = median_of(&unc.lifecycle, Contender::Visq);
    let chan_unc = median_of(&unc.lifecycle, Contender::Channel);
    let clock = stats(&unc.clock_read).map(|s| s.0);
    let split =
        |op: &str| breakdown_median(results, op, Contender::Visq).map_or("–".into(), fmt_ns);
    let share = clock
        .zip(visq_unc)
        .map_or("–".into(), |(c, v)| format!("{:.0}%", 100.0 * c / v));
    let where_time_goes = format!(
        "Uncontended, one lifecycle costs {} for visq against {} for crossbeam-channel's \
         send+recv. visq's operations timed on their own (1024 in a row): send {}, receive {}, \
         delete {}. The receive is the expensive one: it reads the exact monotonic clock to set \
         the deadline (`Instant::now()` costs {} here, {share} of the whole lifecycle) and files \
         the deadline (a `SeqCst` fence and a read of the slot's wheel link). Per message visq \
         also makes four ring operations (free pop, ready push, ready pop, free push), each a CAS \
         on a shared index, a `SeqCst` fence in send (to see sleeping receivers) and a CAS of the \
         slot's lifecycle word in delete, where a channel makes two slot operations.",
        visq_unc.map_or("–".into(), fmt_ns),
        chan_unc.map_or("–".into(), fmt_ns),
        split("send"),
        split("receive"),
        split("delete"),
        clock.map_or("–".into(), fmt_ns),
    );

    // 1. Lifecycle 1P1C against crossbeam-channel's raw handoff.
    let w11 = workload(results, "1P1C", 1, "u64");
    let s = w11.and_then(|w| speedup(w, Contender::Channel));
    all.push(Target {
        what: "lifecycle 1P1C ≥ 0.5× crossbeam-channel's raw handoff (same run; batch 1, u64)"
            .into(),
        measured: fmt_ratio_stats(s),
        met: s.map(|s| s.0 >= 0.5),
        why: format!(
            "visq does three operations per message (send, receive, delete) where the channel does \
             two, and a receive also sets a deadline. {where_time_goes}"
        ),
    });
    // 2-4. Against the lock-based reference and the tutorial.
    for (threads, bar) in [("1P1C", 5.0), ("4P4C", 10.0)] {
        let s = workload(results, threads, 1, "u64").and_then(|w| speedup(w, Contender::LockRef));
        all.push(Target {
            what: format!("≥ {bar}× the lock-based reference at {threads} (batch 1, u64)"),
            measured: fmt_ratio_stats(s),
            met: s.map(|s| s.0 >= bar),
            why: if threads == "4P4C" {
                format!(
                    "with 8 threads on {} cores most threads are descheduled at any moment; \
                     the reference's mutex parks waiters in the kernel and hands over in batches, \
                     while visq's producers on a full queue and its consumers on an empty one \
                     spin and yield, and a preempted thread in the middle of a ring operation \
                     delays the others. The gap to the reference is set by the scheduler more \
                     than by either queue here; on a machine with 8 or more cores the ratio is \
                     the one that counts.",
                    std::thread::available_parallelism().map_or(1, usize::from)
                )
            } else {
                format!(
                    "the reference is cheap when uncontended ({} per message against visq's {}), \
                     and at 1P1C its two threads take the one lock three times per message between \
                     them (send; receive; delete), mostly without waiting for each other. When the \
                     machine is busy the two threads often share one core: the reference then hands \
                     over without cross-core traffic while visq's waiting side spins and yields, \
                     which narrows the gap (see the spread of the repeats). {where_time_goes}",
                    median_of(&unc.lifecycle, Contender::LockRef).map_or("–".into(), fmt_ns),
                    visq_unc.map_or("–".into(), fmt_ns),
                )
            },
        });
    }
    let s = w11.and_then(|w| speedup(w, Contender::Tutorial));
    all.push(Target {
        what: "≥ 100× the tutorial design (1P1C, batch 1, u64)".into(),
        measured: fmt_ratio_stats(s),
        met: s.map(|s| s.0 >= 100.0),
        why: format!(
            "per message the tutorial design makes {} allocations (formatted id and receipt \
             strings and their clones, a HashMap entry), hashes a string key with SipHash and \
             shifts its ready `Vec` (`remove(0)`), all under one lock: {} uncontended, about \
             {} visq's {}. A 100× gap would need it at about {} per message. The throughput runs \
             give it a 1 ms poll (its default is {} s) and keep its consumers busy, so they never \
             sleep; with the default poll an idle consumer waits up to a second (see the latency \
             tables), which is where the design loses by orders of magnitude.",
            results
                .memory
                .iter()
                .find(|m| m.contender == Contender::Tutorial && m.payload == "u64")
                .map_or("several".into(), |m| format!(
                    "{:.1}",
                    m.allocations_per_message
                )),
            median_of(&unc.lifecycle, Contender::Tutorial).map_or("–".into(), fmt_ns),
            median_of(&unc.lifecycle, Contender::Tutorial)
                .zip(visq_unc)
                .map_or("–".into(), |(t, v)| fmt_ratio(t / v)),
            visq_unc.map_or("–".into(), fmt_ns),
            visq_unc.map_or("–".into(), |v| fmt_ns(v * 100.0)),
            DEFAULT_POLL.as_secs(),
        ),
    });
    // 5. Uncontended cost.
    all.push(Target {
        what: "uncontended send+receive+delete ≤ 25 ns".into(),
        measured: visq_unc.map_or("–".into(), fmt_ns),
        met: visq_unc.map(|v| v <= 25.0),
        why: where_time_goes.clone(),
    });
    // 6. Latency against crossbeam-channel's blocking receive.
    for rate in [100_000u64, 1_000_000] {
        let Some(cell) = latency_cell(results, rate) else {
            continue;
        };
        let v50 = latency_median(cell, Contender::Visq, 0, false);
        let c50 = latency_median(cell, Contender::Channel, 0, false);
        let v99 = latency_median(cell, Contender::Visq, 2, false);
        let c99 = latency_median(cell, Contender::Channel, 2, false);
        let met = match (v50, c50, v99, c99) {
            (Some(v50), Some(c50), Some(v99), Some(c99)) => Some(v50 <= c50 && v99 <= c99),
            _ => None,
        };
        all.push(Target {
            what: format!(
                "send-to-receive p50 and p99 no worse than crossbeam-channel's blocking receive at {}",
                cell.spec.pace.label()
            ),
            measured: format!(
                "p50 {} vs {}, p99 {} vs {}",
                v50.map_or("–".into(), fmt_ns),
                c50.map_or("–".into(), fmt_ns),
                v99.map_or("–".into(), fmt_ns),
                c99.map_or("–".into(), fmt_ns)
            ),
            met,
            why: format!(
                "both consumers spin briefly, yield, then park on a futex; who wins a percentile \
                 depends on how long each spins before it parks (a parked consumer costs a \
                 futex wake-up, several µs, on the producer's next send) and, on a 2-core \
                 machine with other work, on the scheduler. The tails (p99 and beyond) are \
                 dominated by preemption of the producer or the consumer, which the queue does \
                 not control; compare the medians of several runs.{}",
                if c50.is_some_and(|c| c > DISTURBED_P50_NS) {
                    " In this run even crossbeam-channel's median was in the milliseconds: the \
                     machine was busy, and this cell says nothing about the queues."
                } else {
                    ""
                }
            ),
        });
    }
    // 7-8. Allocations and memory.
    let visq_mem = results
        .memory
        .iter()
        .find(|m| m.contender == Contender::Visq && m.payload == "u64");
    all.push(Target {
        what: "0 allocations per message".into(),
        measured: visq_mem.map_or("–".into(), |m| {
            format!("{:.3}", m.allocations_per_message)
        }),
        met: visq_mem.map(|m| m.allocations_per_message == 0.0),
        why: "an allocation was counted in the send, receive, delete loop; see the memory table."
            .into(),
    });
    all.push(Target {
        what: "≤ 32 B of queue overhead per held message beyond the body".into(),
        measured: visq_mem.map_or("–".into(), |m| {
            format!(
                "{} per slot allocated by build(), {} beyond the 8 B body",
                fmt_bytes(m.build_per_message()),
                fmt_bytes(m.overhead_per_message())
            )
        }),
        met: visq_mem.map(|m| m.overhead_per_message() <= 32.0),
        why: "all of it is allocated by build() for every slot, used or not: the slot itself \
              (64-bit lifecycle word, deadline, message id, receive count, two timestamps: \
              ready-since for the lease start and visible-since for stats' oldest age, plus the \
              body), an 8 B cell for the slot's index in each of three rings (free, ready, and \
              the wheel's inbox, each rounded up to a power of two), and the wheel's per-slot \
              link (filed tick, previous, next, bucket, pending flag). Dropping the two \
              timestamps and the id (derivable from ring positions) and packing the link would \
              be the way under 32 B; the lock-based reference spends less because it keeps no \
              per-slot wheel link and no inbox."
            .into(),
    });
    // 9-10. The wheel.
    for op in Op::ALL {
        let small = wheel_median(results, op, 1_000, Contender::Visq);
        let large = wheel_median(results, op, 1_000_000, Contender::Visq);
        let heap = wheel_median(results, op, 1_000_000, Contender::LockRef);
        let growth = small.zip(large).map(|(s, l)| l / s);
        all.push(Target {
            what: format!(
                "timing wheel: {} flat within 2× from 1 k to 1 M pending",
                op.label()
            ),
            measured: match (small, large, growth) {
                (Some(s), Some(l), Some(g)) => {
                    format!("{} → {} ({})", fmt_ns(s), fmt_ns(l), fmt_ratio(g))
                }
                _ => "–".into(),
            },
            met: growth.map(|g| g <= 2.0),
            why: "the wheel's own work per deadline is O(1), but each operation also touches its \
                  slot, its wheel link and (for expiry) the ready ring at a random index: with \
                  1 M slots that is ~100 MB of slab and links, far beyond the caches, so the \
                  growth is cache misses on the slot, not the wheel's algorithm. The BinaryHeap \
                  reference pays the same misses plus its O(log n) sifts."
                .into(),
        });
        let ratio = large.zip(heap).map(|(v, h)| h / v);
        all.push(Target {
            what: format!("timing wheel: {} ≥ 5× cheaper than a BinaryHeap at 1 M pending", op.label()),
            measured: match (large, heap, ratio) {
                (Some(v), Some(h), Some(r)) => format!("{} vs {} ({})", fmt_ns(v), fmt_ns(h), fmt_ratio(r)),
                _ => "–".into(),
            },
            met: ratio.map(|r| r >= 5.0),
            why: match op {
                Op::Lease => "a new lease's deadline is the latest one (now + the visibility \
                              timeout), so pushing it on a min-heap sifts up zero or one level: \
                              the heap's insert is O(1) in this workload too, and both sides pay \
                              mostly for the receive around it (ring, slot, clone, clock)."
                    .into(),
                Op::Change => "about three quarters of the random changes extend the lease, which \
                               visq does without moving the wheel entry (it fires at its old tick \
                               and is re-filed then) and the heap does with an O(1) push of a late \
                               deadline (plus an amortized compaction of stale entries); a \
                               shortened lease goes through visq's inbox and a wheel run. With \
                               100 k or more pending, every call is a cache miss on a random slot: \
                               visq then touches the slot and, in a separate array, its wheel link \
                               (and for a shortened lease the bucket neighbours), the reference \
                               its slot and the heap's hot end, so visq pays more misses per call."
                    .into(),
                Op::Expire => "the heap pops each due entry with an O(log n) sift-down over a \
                               16 MB array, while the wheel unlinks from a bucket list; but the \
                               wheel also cascades every entry through its levels (a 30 s deadline \
                               is filed two levels up and moved down twice), each move a cache miss \
                               on the entry's link, and making the message visible costs both the \
                               same ring push and slot update."
                    .into(),
            },
        });
    }
    // Issue 5: latency histograms cost less than 10% of throughput.
    let ratios = histogram_throughput_ratios(&results.histogram_cost);
    let worst = ratios
        .iter()
        .filter_map(|(label, r)| r.map(|r| (label, r)))
        .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0));
    all.push(Target {
        what: format!(
            "latency histograms sampling one message in {} cost < 10% of throughput (issue 5)",
            SAMPLINGS[2]
        ),
        measured: worst.map_or("–".into(), |(label, r)| {
            format!(
                "worst shape {label}: sampled ÷ off {}",
                fmt_ratio_stats(Some(r))
            )
        }),
        met: worst.map(|(_, r)| r.0 >= 0.9),
        why: "with histograms on, `send` reads the exact clock (the coarse one otherwise) and \
              `delete` reads it too, and each message makes three `fetch_add`s on shared \
              histogram buckets, whose cache lines move between the consumer threads."
            .into(),
    });
    all
}

// ---------------------------------------------------------------------------------------------
// The README.

pub fn write(out: &Path, machine: &Machine, plan: &Plan, results: &Results) -> io::Result<PathBuf> {
    fs::create_dir_all(out)?;
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
        "**Queues.** `visq`; `crossbeam-channel` `bounded({CAPACITY})` and crossbeam-queue \
         `ArrayQueue` doing a plain handoff (push, pop: no lease, no delete, weaker guarantees); \
         the **lock-based reference** with visq's semantics (`Mutex` over a slab with \
         generations, `VecDeque` of ready slots, `BinaryHeap` of deadlines, `Condvar` for \
         waits); the **tutorial** design (one `Mutex`, a `Vec` of ready messages, a \
         `HashMap<String, _>` of in-flight ones keyed by a formatted receipt, a reaper thread \
         once a second, polling consumers: {} ms poll in the throughput runs, its default {} s \
         in the latency runs). Code: `benches/common/`.\n",
        TUTORIAL_POLL.as_millis(),
        DEFAULT_POLL.as_secs()
    );

    // Targets.
    let targets = targets(results);
    let _ = writeln!(w, "## Targets (issue 4)\n");
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

    uncontended_section(w, results);
    throughput_section(w, out, results)?;
    latency_section(w, out, results)?;
    histogram_cost_section(w, &results.histogram_cost);
    wheel_section(w, out, results)?;
    memory_section(w, &results.memory);

    let _ = writeln!(
        w,
        "\n## How to reproduce\n\n```sh\n{}\ncargo bench                      # all criterion benches (longer)\n\
         cargo bench --bench lifecycle    # throughput and uncontended cost\n\
         cargo bench --bench latency      # latency percentiles\n\
         cargo bench --bench wheel        # deadline bookkeeping at 1 k / 100 k / 1 M pending\n\
         cargo bench --bench memory       # bytes per held message, peak RSS, allocations\n```",
        machine.command
    );
    let readme = out.join("README.md");
    fs::write(&readme, md)?;
    Ok(readme)
}

fn uncontended_section(w: &mut String, results: &Results) {
    let unc = &results.uncontended;
    let _ = writeln!(w, "\n## Uncontended cost\n");
    let _ = writeln!(
        w,
        "One thread, one message at a time: send, receive, delete (push, pop for the handoff \
         queues), u64 body. Lower is better.\n"
    );
    let _ = writeln!(
        w,
        "| queue | ns per message | min–max | this ÷ visq |\n|---|---|---|---|"
    );
    let visq = runs_of(&unc.lifecycle, Contender::Visq);
    for (contender, values) in &unc.lifecycle {
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

/// Throughput with histograms on ÷ off, per shape: (label, median, min, max).
/// Median, min and max.
type Spread = (f64, f64, f64);

/// Throughput sampling one in 32 ÷ off, per shape: (label, spread).
fn histogram_throughput_ratios(cost: &HistogramCost) -> Vec<(String, Option<Spread>)> {
    cost.throughput
        .iter()
        .map(|(shape, [off, _, sampled])| (shape.label(), ratios(sampled, off, |on, off| on / off)))
        .collect()
}

fn histogram_cost_section(w: &mut String, cost: &HistogramCost) {
    let _ = writeln!(w, "\n## Latency histograms: what they cost\n");
    let _ = writeln!(
        w,
        "visq with `.sample_latencies(n)` against the same queue without, runs alternating (off, \
         n = {}, n = {}) and paired repeat by repeat; each cell is the median (min–max) and, for \
         the sampled runs, their ratio to *off*. A sampled message costs an exact clock read in \
         `send` (instead of the coarse one) and in `delete`, and three bucket increments \
         (`fetch_add`, no lock); the others cost a hash of the id and a branch.\n",
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
         time at a fixed offered rate (so a producer held back by the queue counts against it), \
         or from the start of its send in bursts. The consumer blocks in each queue's own \
         blocking receive (crossbeam-channel's `recv_timeout` is the main comparison). \
         Capacity {}. Percentiles are medians over the runs; p50 and p99 also show min–max. \
         The tutorial design polls at its default {} s here.\n",
        super::common::latency::CAPACITY,
        DEFAULT_POLL.as_secs()
    );
    let labels: Vec<String> = QUANTILES.iter().map(|(l, _)| l.to_string()).collect();
    for cell in &results.latency {
        let file = format!("latency-{}.svg", cell.spec.pace.key());
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
                &format!("1P1C latency, {} (log scale)", cell.spec.pace.label()),
                "percentile",
                "latency",
                &labels,
                &series,
                &fmt_ns_tick,
            ),
        )?;
        let _ = writeln!(w, "### {}\n", cell.spec.pace.label());
        let _ = writeln!(
            w,
            "![latency percentiles, {}]({file})\n",
            cell.spec.pace.label()
        );
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

fn memory_section(w: &mut String, memory: &[Memory]) {
    let _ = writeln!(w, "\n## Memory\n");
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
    for m in memory {
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
