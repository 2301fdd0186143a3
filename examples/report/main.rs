//! The benchmark report: a shorter run of every benchmark in `benches/` (throughput, latency,
//! timing wheel, memory, the async front, message groups, priorities and at-most-once), visq
//! beside its baselines in the same run, written to `results/README.md` with SVG plots, and the
//! same workload on each backend (`backends.rs`).
//!
//! ```sh
//! cargo run --release --example report              # a few minutes on 2 cores
//! cargo run --release --example report -- --quick   # a smoke run (fewer, shorter repeats)
//! cargo run --release --example report -- --reps 7 --out /tmp/results
//! cargo run --release --example report -- --quick --features-only   # one section, to stdout
//! ```
//!
//! Every cell is repeated (5 times by default, latency included; `--reps N` sets both) and
//! reported as median and min-max; ratios are computed repeat by repeat between runs made back
//! to back, so they compare like with like even when the machine's speed drifts. Every run is
//! bounded in time.
//! The baselines and workloads are the benches' own (`benches/common`), included here by path.

mod async_front;
mod backends;
mod bounds;
#[path = "../../benches/common/mod.rs"]
mod common;
mod features;
mod svg;
mod write;

use common::adapters::{Config, Contender, Lease};
use common::latency::{self, Latency, Pace, Spec};
use common::lockref::LockRef;
use common::memory::{self, Counting, Memory, PAYLOADS};
use common::throughput::{self, Shape, CAPACITY, SHAPES, SWEEP, TUTORIAL_POLL};
use common::wheel::{AnyFixture, Op, PENDING};
use common::{Body64, Payload};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: Counting<mimalloc::MiMalloc> = Counting(mimalloc::MiMalloc);

/// How much to run.
pub struct Plan {
    pub reps: usize,
    /// Repeats of each latency cell (issue 10: at least 5).
    pub latency_reps: usize,
    /// Messages per throughput run (the tutorial design gets a tenth).
    pub messages: u64,
    /// Messages per uncontended measurement (the tutorial design gets a tenth).
    pub uncontended_ops: u64,
    /// Scales the latency runs' message counts.
    pub latency_scale: f64,
    /// Leases and change_visibility calls per wheel measurement.
    pub wheel_ops: u64,
    /// Expiries per wheel measurement: at least this, and at least one full visibility cycle
    /// (every pending lease expires once, so every cascade of the wheel is paid once).
    pub wheel_expiries: u64,
    pub quick: bool,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            reps: 5,
            latency_reps: 5,
            messages: 500_000,
            uncontended_ops: 1_000_000,
            latency_scale: 1.0,
            wheel_ops: 200_000,
            wheel_expiries: 100_000,
            quick: false,
        }
    }

    fn quick() -> Plan {
        Plan {
            reps: 2,
            latency_reps: 1,
            messages: 40_000,
            uncontended_ops: 200_000,
            latency_scale: 0.2,
            wheel_ops: 20_000,
            wheel_expiries: 20_000,
            quick: true,
        }
    }

    fn messages(&self, contender: Contender) -> u64 {
        match contender {
            Contender::Tutorial => self.messages / 10,
            _ => self.messages,
        }
    }

    fn uncontended_ops(&self, contender: Contender) -> u64 {
        match contender {
            Contender::Tutorial => self.uncontended_ops / 10,
            _ => self.uncontended_ops,
        }
    }

    /// The latency runs (issue 10): 10 k, 100 k and 1 M msgs/s at capacities 1024 and 2^20,
    /// and 100 k msgs/s at 65,536 for the capacity sweep; about a second of sending each.
    pub fn latency_specs(&self) -> Vec<Spec> {
        let scaled = |n: f64| (n * self.latency_scale).max(1_000.0) as u64;
        let spec = |rate: u64, messages: f64, capacity: usize| Spec {
            pace: Pace::Rate(rate),
            messages: scaled(messages),
            capacity,
            limit: Duration::from_secs(5),
        };
        let (small, large) = (SWEEP[0], SWEEP[2]);
        vec![
            spec(10_000, 10_000.0, small),
            spec(10_000, 10_000.0, large),
            spec(100_000, 100_000.0, small),
            spec(100_000, 100_000.0, SWEEP[1]),
            spec(100_000, 100_000.0, large),
            spec(1_000_000, 500_000.0, small),
            spec(1_000_000, 500_000.0, large),
        ]
    }

    /// The queues of a latency cell: visq, crossbeam-channel and the lock-based reference
    /// everywhere; the tutorial design (at its default 1 s poll) in [`TUTORIAL_LATENCY`] only.
    pub fn latency_contenders(spec: &Spec) -> Vec<Contender> {
        let mut all = Contender::SWEPT.to_vec();
        if (spec.pace, spec.capacity) == TUTORIAL_LATENCY {
            all.push(Contender::Tutorial);
        }
        all
    }
}

/// The latency cell the tutorial design runs in (10 k msgs/s, capacity 2^20: room for the
/// messages that pile up during its 1 s polls).
pub const TUTORIAL_LATENCY: (Pace, usize) = (Pace::Rate(10_000), SWEEP[2]);

/// Per-repeat values of one queue in one cell (NaN where a run failed).
pub type Runs = Vec<(Contender, Vec<f64>)>;

/// The queues measured at `capacity` in the capacity sweeps: every queue at the smallest, the
/// three of [`Contender::SWEPT`] at the others.
pub fn swept(capacity: usize) -> &'static [Contender] {
    if capacity == SWEEP[0] {
        &Contender::ALL
    } else {
        &Contender::SWEPT
    }
}

/// One capacity's runs.
pub struct SweepCell {
    pub capacity: usize,
    pub runs: Runs,
}

/// Throughput of one workload, M msgs/s.
pub struct Workload {
    pub shape: Shape,
    pub payload: &'static str,
    pub runs: Runs,
}

impl Workload {
    pub fn label(&self) -> String {
        format!("{} / {}", self.shape.label(), self.payload)
    }
}

/// Uncontended costs, ns per message, and the per-operation breakdown.
pub struct Uncontended {
    /// Send+receive+delete (push+pop), one cell per capacity of [`SWEEP`], repeats interleaved
    /// across capacities and queues.
    pub lifecycle: Vec<SweepCell>,
    /// `(operation, per queue ns)`: send, receive, delete, each timed over 1024 in a row.
    pub breakdown: Vec<(&'static str, Runs)>,
    /// `Instant::now()`, ns per call.
    pub clock_read: Vec<f64>,
}

/// One latency run's percentiles (ns).
pub struct LatencyRun {
    pub receive: [u64; 6],
    pub delete: Option<[u64; 6]>,
    pub sent: u64,
    pub complete: bool,
    /// The producer's and the consumer's run-queue wait during the run.
    pub runqueue_wait: Option<[Duration; 2]>,
}

pub struct LatencyCell {
    pub spec: Spec,
    pub runs: Vec<(Contender, Vec<LatencyRun>)>,
}

/// ns per operation with `pending` deadlines.
pub struct WheelCell {
    pub op: Op,
    pub pending: usize,
    pub runs: Runs,
}

pub struct Results {
    pub uncontended: Uncontended,
    /// What bounds the lifecycle: primitives' costs, 1P1C on one CPU and on two.
    pub bounds: bounds::Bounds,
    pub histogram_cost: HistogramCost,
    pub workloads: Vec<Workload>,
    /// 1P1C batch 1 u64 throughput (M msgs/s), one cell per capacity of [`SWEEP`], repeats
    /// interleaved across capacities and queues.
    pub sweep: Vec<SweepCell>,
    /// visq's own account of its memory at 2^20 slots: plain, and with a dead-letter queue.
    pub parts: [(&'static str, visq::Memory); 2],
    pub latency: Vec<LatencyCell>,
    pub wheel: Vec<WheelCell>,
    pub memory: Vec<Memory>,
    /// The async front against the async channels (issue 12).
    pub async_front: Vec<async_front::AsyncRow>,
    /// Message groups, priorities, at-most-once (issue 11).
    pub features: Vec<features::FeatureCell>,
    pub elapsed: Duration,
}

fn progress(what: &str, started: Instant) {
    eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
}

fn main() {
    memory::child_main_if_asked();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut plan = Plan::full();
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    let mut features_only = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => plan = Plan::quick(),
            "--features-only" => features_only = true,
            "--reps" => {
                plan.reps = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .expect("--reps N");
                plan.latency_reps = plan.reps;
            }
            "--out" => out = PathBuf::from(it.next().expect("--out DIR")),
            "--help" | "-h" => {
                eprintln!("usage: cargo run --release --example report -- [--quick] [--reps N] [--out DIR] [--features-only]");
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    if features_only {
        print!("{}", features::report(&plan));
        return;
    }
    let command = std::iter::once("cargo run --release --example report".to_string())
        .chain((!args.is_empty()).then(|| format!("-- {}", args.join(" "))))
        .collect::<Vec<_>>()
        .join(" ");
    let machine = write::Machine::detect(&command);
    let started = Instant::now();

    progress("uncontended", started);
    let uncontended = measure_uncontended(&plan);
    progress("what bounds the lifecycle", started);
    let bounds = bounds::measure(&plan);
    progress("capacity sweep, 1P1C", started);
    let sweep = measure_sweep(&plan);
    let mut workloads = Vec::new();
    for shape in SHAPES {
        progress(&format!("throughput {} / u64", shape.label()), started);
        workloads.push(measure_workload::<u64>(&plan, shape));
        progress(&format!("throughput {} / 64 B", shape.label()), started);
        workloads.push(measure_workload::<Body64>(&plan, shape));
    }
    let mut latency = Vec::new();
    for spec in plan.latency_specs() {
        progress(
            &format!("latency, {}, capacity {}", spec.pace.label(), spec.capacity),
            started,
        );
        latency.push(measure_latency(&plan, spec));
    }
    progress("latency histograms: cost", started);
    let histogram_cost = measure_histogram_cost(&plan);
    progress("timing wheel", started);
    let wheel = measure_wheel(&plan);
    progress("memory", started);
    let memory = measure_memory();
    let parts = memory::visq_parts();
    progress("backends", started);
    let backends = backends::measure(plan.quick, plan.reps);
    progress("async front", started);
    let async_front = async_front::measure(&plan);
    progress("message groups, priorities, at-most-once", started);
    let features = features::measure(&plan);
    let results = Results {
        uncontended,
        bounds,
        histogram_cost,
        workloads,
        sweep,
        parts,
        latency,
        wheel,
        memory,
        async_front,
        features,
        elapsed: started.elapsed(),
    };
    progress("writing", started);
    match write::write(&out, &machine, &plan, &results)
        .and_then(|readme| backends.add_to(&readme).map(|()| readme))
    {
        Ok(readme) => eprintln!(
            "wrote {} (and its plots) in {:.0} s",
            readme.display(),
            results.elapsed.as_secs_f64()
        ),
        Err(error) => {
            eprintln!("could not write {}: {error}", out.display());
            std::process::exit(1);
        }
    }
}

/// Empty cells for every capacity of [`SWEEP`], each with the queues `contenders` names.
fn sweep_cells(contenders: fn(usize) -> &'static [Contender]) -> Vec<SweepCell> {
    SWEEP
        .iter()
        .map(|&capacity| SweepCell {
            capacity,
            runs: contenders(capacity)
                .iter()
                .map(|&c| (c, Vec::new()))
                .collect(),
        })
        .collect()
}

fn measure_uncontended(plan: &Plan) -> Uncontended {
    let mut lifecycle = sweep_cells(swept);
    for _ in 0..plan.reps {
        for cell in lifecycle.iter_mut() {
            for (contender, values) in cell.runs.iter_mut() {
                values.push(throughput::uncontended::<u64>(
                    *contender,
                    cell.capacity,
                    plan.uncontended_ops(*contender),
                ));
            }
        }
    }
    let names = ["send", "receive", "delete"];
    let mut breakdown: Vec<(&'static str, Runs)> = names
        .iter()
        .map(|&name| {
            (
                name,
                Contender::LEASING
                    .iter()
                    .map(|&c| (c, Vec::new()))
                    .collect(),
            )
        })
        .collect();
    for _ in 0..plan.reps {
        for (i, &contender) in Contender::LEASING.iter().enumerate() {
            let ops = match contender {
                Contender::Visq => split::<visq::Queue<u64>>(plan.uncontended_ops / 4),
                Contender::LockRef => split::<LockRef<u64>>(plan.uncontended_ops / 4),
                _ => split::<common::tutorial::Tutorial<u64>>(plan.uncontended_ops / 40),
            };
            for (op, ns) in ops.into_iter().enumerate() {
                breakdown[op].1[i].1.push(ns);
            }
        }
    }
    let mut clock_read = Vec::new();
    for _ in 0..plan.reps {
        let n = 1_000_000;
        let start = Instant::now();
        for _ in 0..n {
            black_box(Instant::now());
        }
        clock_read.push(start.elapsed().as_nanos() as f64 / n as f64);
    }
    Uncontended {
        lifecycle,
        breakdown,
        clock_read,
    }
}

/// ns per send, per receive and per delete, each timed over 1024 in a row.
fn split<Q: Lease<u64>>(ops: u64) -> [f64; 3] {
    let q = Q::build(&Config::new(CAPACITY).poll(TUTORIAL_POLL));
    let chunk = 1024u64;
    let rounds = (ops / chunk).max(1);
    let mut deliveries = Vec::with_capacity(chunk as usize);
    let mut times = [Duration::ZERO; 3];
    for round in 0..=rounds {
        let start = Instant::now();
        for n in 0..chunk {
            assert!(q.send(n).is_ok(), "room for a chunk");
        }
        let sent = start.elapsed();
        let start = Instant::now();
        for _ in 0..chunk {
            deliveries.push(q.try_receive().expect("a message"));
        }
        let received = start.elapsed();
        let start = Instant::now();
        for delivery in &deliveries {
            q.delete(delivery);
        }
        let deleted = start.elapsed();
        deliveries.clear();
        if round > 0 {
            // Round 0 warms up.
            times[0] += sent;
            times[1] += received;
            times[2] += deleted;
        }
    }
    times.map(|t| t.as_nanos() as f64 / (rounds * chunk) as f64)
}

/// M msgs/s of one lifecycle run (NaN if it did not finish).
fn rate<P: Payload>(contender: Contender, capacity: usize, shape: Shape, messages: u64) -> f64 {
    throughput::lifecycle::<P>(
        contender,
        capacity,
        shape,
        messages,
        Duration::from_secs(30),
    )
    .map_or(f64::NAN, |d| messages as f64 / d.as_secs_f64() / 1e6)
}

/// 1P1C batch 1 u64 throughput at every capacity of [`SWEEP`] (the queues of
/// [`Contender::SWEPT`]; the others' 1P1C runs are in the throughput workloads).
fn measure_sweep(plan: &Plan) -> Vec<SweepCell> {
    let shape = SHAPES[0];
    let mut cells = sweep_cells(|_| &Contender::SWEPT);
    for _ in 0..plan.reps {
        for cell in cells.iter_mut() {
            for (contender, values) in cell.runs.iter_mut() {
                let messages = plan.messages(*contender);
                values.push(rate::<u64>(*contender, cell.capacity, shape, messages));
            }
        }
    }
    cells
}

fn measure_workload<P: Payload>(plan: &Plan, shape: Shape) -> Workload {
    for contender in Contender::ALL {
        // Warm-up: threads, allocator, page faults.
        let _ = rate::<P>(contender, CAPACITY, shape, plan.messages(contender) / 4);
    }
    let mut runs: Runs = Contender::ALL.iter().map(|&c| (c, Vec::new())).collect();
    for _ in 0..plan.reps {
        for (contender, values) in runs.iter_mut() {
            values.push(rate::<P>(
                *contender,
                CAPACITY,
                shape,
                plan.messages(*contender),
            ));
        }
    }
    Workload {
        shape,
        payload: P::NAME,
        runs,
    }
}

/// visq with its latency histograms off and sampling as [`SAMPLINGS`] says, runs alternating:
/// uncontended ns per message, and M messages/s in the shapes of [`HISTOGRAM_SHAPES`].
pub struct HistogramCost {
    /// One list per entry of [`SAMPLINGS`], one value per repeat each.
    pub uncontended: [Vec<f64>; 3],
    pub throughput: Vec<(Shape, [Vec<f64>; 3])>,
}

/// `sample_latencies` settings compared: off, every message, one in 32.
pub const SAMPLINGS: [u32; 3] = [0, 1, 32];

/// The throughput shapes the histograms' cost is measured in (u64 bodies).
pub const HISTOGRAM_SHAPES: [Shape; 3] = [SHAPES[0], SHAPES[1], SHAPES[2]];

fn measure_histogram_cost(plan: &Plan) -> HistogramCost {
    let mut uncontended = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..plan.reps {
        for (sample, values) in SAMPLINGS.into_iter().zip(uncontended.iter_mut()) {
            values.push(throughput::visq_uncontended(sample, plan.uncontended_ops));
        }
    }
    let limit = Duration::from_secs(30);
    let throughput = HISTOGRAM_SHAPES
        .iter()
        .map(|&shape| {
            let _ = throughput::visq_lifecycle(1, shape, plan.messages / 4, limit);
            let mut rates = [Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..plan.reps {
                for (sample, values) in SAMPLINGS.into_iter().zip(rates.iter_mut()) {
                    let rate = throughput::visq_lifecycle(sample, shape, plan.messages, limit)
                        .map_or(f64::NAN, |d| plan.messages as f64 / d.as_secs_f64() / 1e6);
                    values.push(rate);
                }
            }
            (shape, rates)
        })
        .collect();
    HistogramCost {
        uncontended,
        throughput,
    }
}

fn measure_latency(plan: &Plan, spec: Spec) -> LatencyCell {
    let mut runs: Vec<(Contender, Vec<LatencyRun>)> = Plan::latency_contenders(&spec)
        .into_iter()
        .map(|c| (c, Vec::new()))
        .collect();
    for _ in 0..plan.latency_reps {
        for (contender, values) in runs.iter_mut() {
            let run = latency::run(*contender, spec);
            values.push(LatencyRun {
                receive: Latency::percentiles(&run.receive),
                delete: run.delete.as_ref().map(Latency::percentiles),
                sent: run.sent,
                complete: run.complete,
                runqueue_wait: run.runqueue_wait,
            });
        }
    }
    LatencyCell { spec, runs }
}

fn measure_wheel(plan: &Plan) -> Vec<WheelCell> {
    let mut cells = Vec::new();
    let contenders = AnyFixture::CONTENDERS;
    for pending in PENDING {
        let mut fixtures: Vec<AnyFixture> = contenders
            .iter()
            .map(|&c| AnyFixture::new(c, pending, false))
            .collect();
        for op in [Op::Lease, Op::Expire] {
            let ops = match op {
                Op::Expire => plan.wheel_expiries.max(pending as u64),
                _ => plan.wheel_ops,
            };
            cells.push(wheel_cell(plan, op, pending, ops, &mut fixtures));
        }
        drop(fixtures);
        let mut fixtures: Vec<AnyFixture> = contenders
            .iter()
            .map(|&c| AnyFixture::new(c, pending, true))
            .collect();
        cells.push(wheel_cell(
            plan,
            Op::Change,
            pending,
            plan.wheel_ops,
            &mut fixtures,
        ));
        for fixture in &fixtures {
            assert_eq!(fixture.refused(), 0, "every change_visibility applied");
        }
    }
    cells
}

fn wheel_cell(
    plan: &Plan,
    op: Op,
    pending: usize,
    ops: u64,
    fixtures: &mut [AnyFixture],
) -> WheelCell {
    for fixture in fixtures.iter_mut() {
        fixture.run(op, (ops / 10).max(1));
    }
    let mut runs: Runs = AnyFixture::CONTENDERS
        .iter()
        .map(|&c| (c, Vec::new()))
        .collect();
    for _ in 0..plan.reps {
        for (fixture, (_, values)) in fixtures.iter_mut().zip(runs.iter_mut()) {
            let took = fixture.run(op, ops);
            values.push(took.as_nanos() as f64 / ops as f64);
        }
    }
    WheelCell { op, pending, runs }
}

fn measure_memory() -> Vec<Memory> {
    let mut all = Vec::new();
    for contender in Contender::LEASING {
        for payload in PAYLOADS {
            if let Some(m) = memory::measure(contender, payload) {
                all.push(m);
            } else {
                eprintln!(
                    "memory: the child for {} / {payload} failed",
                    contender.name()
                );
            }
        }
    }
    all
}
