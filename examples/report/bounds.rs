//! The report's account of what bounds the lifecycle (issue 10): the cost on this machine of
//! the primitives a lifecycle is made of, and how much of the 1P1C and 4P4C lifecycle time goes
//! to moving cache lines between cores. Every figure is measured in the run, except the
//! number of full barriers per lifecycle, which is counted from each queue's code
//! ([`BARRIERS`]).

use crate::common::adapters::Contender;
use crate::common::throughput::{Shape, CAPACITY, SHAPES};
use crate::write::{fmt_ns, fmt_ratio_stats, ratios, runs_of, stats};
use crate::{Plan, Runs};
use std::fmt::Write;
use std::hint::black_box;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The queues whose runs are repeated on one CPU.
const PINNED: [Contender; 3] = [Contender::Visq, Contender::Channel, Contender::LockRef];
/// The workloads run on one CPU and on two: 1P1C and 4P4C, batch 1 (u64).
const PINNED_SHAPES: [Shape; 2] = [SHAPES[0], SHAPES[4]];

/// Full barriers (locked read-modify-writes and `SeqCst` fences) per uncontended lifecycle,
/// counted from each queue's code on the path the uncontended run takes, step by step.
pub const BARRIERS: [(Contender, u32, &str); 3] = [
    (
        Contender::Visq,
        7,
        "send 3 (free-stack pop CAS, the `sent` counter's fetch_add that numbers the message, \
         ready-ring tail CAS); receive 2 (ready-ring head CAS, the `SeqCst` fence that files \
         the lease's deadline with the timing wheel); delete 2 (the lease word's CAS, \
         free-stack push CAS)",
    ),
    (
        Contender::Channel,
        2,
        "send: the tail CAS; recv: the head CAS (its 'is anybody waiting' checks are plain \
         `SeqCst` loads)",
    ),
    (
        Contender::LockRef,
        6,
        "a lock (CAS) and an unlock (swap) of the `Mutex` for each of send, receive and delete",
    ),
];

/// One workload's lifecycle runs (batch 1, u64, capacity [`CAPACITY`]), M msgs/s, with every
/// thread pinned to one CPU and with the threads placed by the scheduler (two CPUs here).
pub struct Cores {
    pub shape: Shape,
    pub one_cpu: Runs,
    pub free: Runs,
}

/// What the section measures: ns per primitive, and 1P1C and 4P4C M msgs/s on one CPU and on
/// two.
pub struct Bounds {
    /// ns per uncontended compare-and-swap (a locked instruction).
    pub rmw: Vec<f64>,
    /// ns per store followed by a `SeqCst` fence.
    pub fence: Vec<f64>,
    /// ns per one-way transfer of a cache line between two threads (half a ping-pong).
    pub transfer: Vec<f64>,
    /// The runs of each of [`PINNED_SHAPES`], in that order.
    pub cores: Vec<Cores>,
    /// Why the one-CPU runs are missing, if they are.
    pub not_pinned: Option<String>,
}

/// Runs the section's measurements, repeats interleaved.
pub fn measure(plan: &Plan) -> Bounds {
    let mut bounds = Bounds {
        rmw: Vec::new(),
        fence: Vec::new(),
        transfer: Vec::new(),
        cores: PINNED_SHAPES
            .iter()
            .map(|&shape| Cores {
                shape,
                one_cpu: PINNED.iter().map(|&c| (c, Vec::new())).collect(),
                free: PINNED.iter().map(|&c| (c, Vec::new())).collect(),
            })
            .collect(),
        not_pinned: None,
    };
    let ops = if plan.quick { 1_000_000 } else { 10_000_000 };
    for _ in 0..plan.reps {
        let line = AtomicU64::new(0);
        bounds.rmw.push(per_op(ops, |i| {
            let _ = line.compare_exchange(black_box(i), i + 1, Ordering::AcqRel, Ordering::Relaxed);
        }));
        bounds.fence.push(per_op(ops, |i| {
            line.store(black_box(i), Ordering::Relaxed);
            fence(Ordering::SeqCst);
        }));
        bounds.transfer.push(ping_pong(ops / 10));
    }
    let messages = plan.messages;
    for _ in 0..plan.reps {
        for cores in &mut bounds.cores {
            let shape = cores.shape;
            for (i, &contender) in PINNED.iter().enumerate() {
                cores.free[i]
                    .1
                    .push(crate::rate::<u64>(contender, CAPACITY, shape, messages));
                match on_one_cpu(|| crate::rate::<u64>(contender, CAPACITY, shape, messages)) {
                    Ok(rate) => cores.one_cpu[i].1.push(rate),
                    Err(why) => bounds.not_pinned = Some(why),
                }
            }
        }
    }
    bounds
}

/// ns per call of `op`, over `n` calls.
fn per_op(n: u64, op: impl Fn(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        op(i);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// ns per one-way cache-line transfer: two threads take turns writing one atomic, each
/// spinning until the other's write arrives; a round trip moves the line twice.
fn ping_pong(rounds: u64) -> f64 {
    let line = Arc::new(crossbeam_utils::CachePadded::new(AtomicU64::new(0)));
    let other = {
        let line = line.clone();
        std::thread::spawn(move || {
            for i in 0..rounds {
                while line.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                line.store(2 * i + 2, Ordering::Release);
            }
        })
    };
    let start = Instant::now();
    for i in 0..rounds {
        line.store(2 * i + 1, Ordering::Release);
        while line.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed();
    other.join().expect("the ping-pong thread");
    elapsed.as_nanos() as f64 / rounds as f64 / 2.0
}

/// Runs `run` on a thread pinned to the first CPU this process may use; the threads it spawns
/// inherit the pinning, so a lifecycle run's producers and consumers share that CPU.
#[cfg(target_os = "linux")]
fn on_one_cpu(run: impl FnOnce() -> f64 + Send) -> Result<f64, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: `cpu_set_t` is plain data, valid all zero; `sched_getaffinity` and
                // `sched_setaffinity` read and write only the set passed with its size, and pid 0
                // names the calling thread.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    let size = std::mem::size_of::<libc::cpu_set_t>();
                    if libc::sched_getaffinity(0, size, &mut set) != 0 {
                        return Err("sched_getaffinity failed".to_string());
                    }
                    let first = (0..libc::CPU_SETSIZE as usize)
                        .find(|&cpu| libc::CPU_ISSET(cpu, &set))
                        .ok_or("no CPU in this process's affinity mask")?;
                    let mut one: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(first, &mut one);
                    if libc::sched_setaffinity(0, size, &one) != 0 {
                        return Err("sched_setaffinity failed".to_string());
                    }
                }
                Ok(run())
            })
            .join()
            .expect("the pinned run")
    })
}

#[cfg(not(target_os = "linux"))]
fn on_one_cpu(_run: impl FnOnce() -> f64 + Send) -> Result<f64, String> {
    Err("pinning threads to a CPU is only done on Linux".to_string())
}

fn median(values: &[f64]) -> Option<f64> {
    stats(values).map(|s| s.0)
}

/// ns per message of a run at `rate` M msgs/s.
fn ns_per_message(rate: f64) -> f64 {
    1e3 / rate
}

/// One sentence for the targets' reasons: the barrier model against the measured uncontended
/// cost (`uncontended`: median ns per lifecycle by queue).
pub fn barrier_summary(bounds: &Bounds, uncontended: impl Fn(Contender) -> Option<f64>) -> String {
    let Some(rmw) = median(&bounds.rmw) else {
        return String::new();
    };
    let parts: Vec<String> = BARRIERS
        .iter()
        .map(|&(c, n, _)| {
            format!(
                "{} {n} ({} of {})",
                c.name(),
                fmt_ns(f64::from(n) * rmw),
                uncontended(c).map_or("?".into(), fmt_ns)
            )
        })
        .collect();
    format!(
        "Full barriers per lifecycle, counted from the code, times the {} that one costs here, \
         against the measured lifecycle: {}. The barriers alone put visq at {:.1}× \
         crossbeam-channel's send+recv; ≤ 2× would need at most 4 per lifecycle, and a lease \
         that any thread may settle or expire needs more (see 'What bounds the lifecycle').",
        fmt_ns(rmw),
        parts.join("; "),
        f64::from(BARRIERS[0].1) * rmw / uncontended(Contender::Channel).unwrap_or(f64::NAN),
    )
}

/// One sentence for the targets' reasons: 1P1C on one CPU against two, and the consumer's
/// own work as a ceiling (`consumer_ns`: visq's receive + delete, timed on their own) against
/// crossbeam-channel's 1P1C throughput (`channel`: the median target 3 uses, M msgs/s).
pub fn one_to_one_summary(
    bounds: &Bounds,
    consumer_ns: Option<f64>,
    channel: Option<f64>,
) -> String {
    let (Some(one), Some(free)) = medians(&bounds.cores[0], Contender::Visq) else {
        return String::new();
    };
    let ceiling = consumer_ns.map(|ns| 1e3 / ns);
    format!(
        "visq's 1P1C runs at {one:.2} M msgs/s with both threads on one CPU and {free:.2} M/s on \
         two, in the same run: {} per message goes to moving cache lines between the cores \
         (one transfer costs {} here). And the consumer's own work (receive + delete, {}) caps \
         1P1C at {} M msgs/s even with no transfer at all: {} crossbeam-channel's {} M/s in the \
         throughput runs (see 'What bounds the lifecycle').",
        fmt_ns(ns_per_message(free) - ns_per_message(one)),
        median(&bounds.transfer).map_or("?".into(), fmt_ns),
        consumer_ns.map_or("?".into(), fmt_ns),
        ceiling.map_or("?".into(), |c| format!("{c:.1}")),
        ceiling
            .zip(channel)
            .map_or("?".into(), |(c, ch)| format!("{:.2}×", c / ch)),
        channel.map_or("?".into(), |c| format!("{c:.1}")),
    )
}

/// One sentence for the 4P4C target's reason: visq and the lock-based reference on one CPU and
/// on two, and what 3× the reference would leave per message for moving cache lines.
pub fn four_to_four_summary(bounds: &Bounds) -> String {
    let cores = &bounds.cores[1];
    let (Some(one), Some(free)) = medians(cores, Contender::Visq) else {
        return String::new();
    };
    let (Some(ref_one), Some(ref_free)) = medians(cores, Contender::LockRef) else {
        return String::new();
    };
    let transfer = median(&bounds.transfer);
    let (visq_ns, budget) = (ns_per_message(free), ns_per_message(3.0 * ref_free));
    let bound = if budget < visq_ns {
        format!(
            "3× the reference would leave visq {} per message on two CPUs, {} less than \
             measured{}",
            fmt_ns(budget),
            fmt_ns(visq_ns - budget),
            transfer.map_or(String::new(), |t| format!(
                ", about {:.1} cache-line transfers of {} each",
                (visq_ns - budget) / t,
                fmt_ns(t)
            )),
        )
    } else {
        "In these runs visq reached 3× the reference on two CPUs".to_string()
    };
    format!(
        "Same run, 4P4C (8 threads) with every thread pinned to one CPU and placed by the \
         scheduler: visq {one:.2} and {free:.2} M msgs/s ({} per message more on two CPUs), the \
         lock-based reference {ref_one:.2} and {ref_free:.2}. On one CPU, where nothing crosses \
         cores, visq is {:.1}× the reference; on two its threads move the free stack's head, the \
         ready ring's head and tail and the slots between the cores on every message, while the \
         reference's threads queue on its lock either way. {bound} (see 'What bounds the \
         lifecycle').",
        fmt_ns(visq_ns - ns_per_message(one)),
        one / ref_one,
    )
}

/// The medians of `contender`'s runs on one CPU and on two.
fn medians(cores: &Cores, contender: Contender) -> (Option<f64>, Option<f64>) {
    (
        median(runs_of(&cores.one_cpu, contender)),
        median(runs_of(&cores.free, contender)),
    )
}

/// Writes the section.
pub fn section(
    w: &mut String,
    bounds: &Bounds,
    uncontended: impl Fn(Contender) -> Option<f64>,
    consumer_ns: Option<f64>,
    channel_one_to_one: Option<f64>,
) {
    let _ = writeln!(w, "\n## What bounds the lifecycle\n");
    let _ = writeln!(
        w,
        "The primitives a lifecycle is made of, timed on this machine (median of the repeats, \
         min–max):\n\n| primitive | ns |\n|---|---|"
    );
    let cell = |values: &[f64]| {
        stats(values).map_or("not measured".into(), |(m, lo, hi)| {
            format!("{} ({}–{})", fmt_ns(m), fmt_ns(lo), fmt_ns(hi))
        })
    };
    let _ = writeln!(
        w,
        "| a compare-and-swap on an uncontended line (a locked instruction) | {} |",
        cell(&bounds.rmw)
    );
    let _ = writeln!(
        w,
        "| a store and a `SeqCst` fence | {} |",
        cell(&bounds.fence)
    );
    let _ = writeln!(
        w,
        "| one transfer of a cache line between two threads (half a ping-pong round trip) | {} |\n",
        cell(&bounds.transfer)
    );
    let _ = writeln!(
        w,
        "**Barriers.** Full barriers per uncontended lifecycle, counted from each queue's code, \
         against the measured uncontended lifecycle (capacity {CAPACITY}):\n\n\
         | queue | barriers | × one CAS | measured lifecycle | where |\n|---|---|---|---|---|"
    );
    let rmw = median(&bounds.rmw);
    for (contender, n, steps) in BARRIERS {
        let _ = writeln!(
            w,
            "| {} | {n} | {} | {} | {steps} |",
            contender.name(),
            rmw.map_or("?".into(), |r| fmt_ns(f64::from(n) * r)),
            uncontended(contender).map_or("?".into(), fmt_ns),
        );
    }
    let _ = writeln!(
        w,
        "\nA lease that any thread may settle, and the timing wheel may expire, takes ownership \
         of the message three times (send, receive, delete), each a read-modify-write that \
         another thread may race; the slab adds the free-slot claim and release, and the lease \
         its deadline filing. crossbeam-channel's handoff has two such steps.\n"
    );
    let _ = writeln!(
        w,
        "**Cores.** 1P1C and 4P4C lifecycle (batch 1, u64, capacity {CAPACITY}) with every \
         thread pinned to one CPU, and placed by the scheduler (two CPUs here), repeats \
         interleaved; M msgs/s and ns per message:\n"
    );
    if let Some(why) = &bounds.not_pinned {
        let _ = writeln!(w, "(The one-CPU runs are missing: {why}.)\n");
    }
    let _ = writeln!(
        w,
        "| workload | queue | one CPU | two CPUs | two ÷ one (time per message, per repeat) | ns per message on two CPUs minus on one |\n|---|---|---|---|---|---|"
    );
    for (cores, contender) in bounds
        .cores
        .iter()
        .flat_map(|cores| PINNED.iter().map(move |&c| (cores, c)))
    {
        let (one, free) = (
            runs_of(&cores.one_cpu, contender),
            runs_of(&cores.free, contender),
        );
        let rate = |v: &[f64]| {
            stats(v).map_or("—".into(), |(m, lo, hi)| {
                format!("{m:.2} ({lo:.2}–{hi:.2})")
            })
        };
        let extra = median(free).zip(median(one)).map_or("—".into(), |(f, o)| {
            fmt_ns(ns_per_message(f) - ns_per_message(o))
        });
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {extra} |",
            cores.shape.threads(),
            contender.name(),
            rate(one),
            rate(free),
            fmt_ratio_stats(ratios(one, free, |o, f| o / f)),
        );
    }
    let _ = writeln!(
        w,
        "\nOn one CPU nothing crosses cores, so the difference is what the second core costs: \
         each line that the producer writes and the consumer then touches (or the other way \
         round) moves. For visq that is, per message, the free stack's head (the producer pops \
         it, the consumer's delete pushes to it), the slot (written by the send, leased and \
         freed by the consumer, then reused at once by the next send: slots are reused last in, \
         first out, so that the working set follows the messages in flight, target 1) and the \
         ready ring's cell. crossbeam-channel's producer runs ahead of its consumer and moves a \
         line per several messages.\n"
    );
    let _ = writeln!(
        w,
        "{}\n",
        one_to_one_summary(bounds, consumer_ns, channel_one_to_one)
    );
    let _ = writeln!(w, "{}\n", four_to_four_summary(bounds));
}
