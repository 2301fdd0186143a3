//! Latency percentiles (hdrhistogram), one producer and one consumer: send-to-receive and
//! send-to-delete at fixed offered rates (10 k, 100 k and 1 M msgs/s, at capacities 1024 and
//! 2^20) and in bursts, for visq and every baseline (crossbeam-channel's plain blocking `recv`
//! is the main comparison). See `common/latency.rs` for the pacing and what is measured.
//!
//! Run: `cargo bench --bench latency` (optionally `-- visq` or `-- channel` to pick queues by
//! key or name). Prints one table per pace and capacity; each cell merges 5 runs, and a line
//! per queue gives the median and the worst of the runs' p50 and p99.

#[path = "common/mod.rs"]
mod common;

use common::adapters::Contender;
use common::latency::{self, Latency, Pace, Spec, QUANTILES};
use common::median_min_max;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs per cell (issue 10: at least 5, reported as the median and the worst).
const RUNS: usize = 5;

/// 10 k, 100 k and 1 M msgs/s at capacities 1024 and 2^20, then bursts of 1000 at 1024.
fn specs() -> Vec<Spec> {
    let limit = Duration::from_secs(15);
    let mut specs = Vec::new();
    for capacity in [1024, 1 << 20] {
        for (rate, messages) in [(10_000, 20_000), (100_000, 200_000), (1_000_000, 1_000_000)] {
            specs.push(Spec {
                pace: Pace::Rate(rate),
                messages,
                capacity,
                limit,
            });
        }
    }
    specs.push(Spec {
        pace: Pace::Burst {
            size: 1_000,
            pause: Duration::from_millis(1),
        },
        messages: 100_000,
        capacity: 1024,
        limit,
    });
    specs
}

fn micros(nanos: u64) -> String {
    format!("{:.2}", nanos as f64 / 1000.0)
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let chosen: Vec<Contender> = Contender::ALL
        .into_iter()
        .filter(|c| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| c.key().contains(f.as_str()) || c.name().contains(f.as_str()))
        })
        .collect();
    let header: Vec<&str> = QUANTILES.iter().map(|(label, _)| *label).collect();
    for spec in specs() {
        println!(
            "\n## 1P1C, {}, capacity {} (µs; {RUNS} runs merged)\n",
            spec.pace.label(),
            spec.capacity
        );
        println!(
            "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}   sent",
            "queue / measure", header[0], header[1], header[2], header[3], header[4], header[5]
        );
        for &contender in &chosen {
            let mut runs: Vec<Latency> = (0..RUNS).map(|_| latency::run(contender, spec)).collect();
            let per_run: Vec<[u64; 6]> = runs
                .iter()
                .map(|r| Latency::percentiles(&r.receive))
                .collect();
            let mut first = runs.remove(0);
            for run in &runs {
                first.receive.add(&run.receive).expect("same bounds");
                if let (Some(total), Some(more)) = (first.delete.as_mut(), run.delete.as_ref()) {
                    total.add(more).expect("same bounds");
                }
            }
            let sent: u64 = first.sent + runs.iter().map(|r| r.sent).sum::<u64>();
            let complete = first.complete && runs.iter().all(|r| r.complete);
            let mut rows = vec![("send-to-receive", &first.receive)];
            if let Some(delete) = &first.delete {
                rows.push(("send-to-delete", delete));
            }
            for (what, histogram) in rows {
                let p = Latency::percentiles(histogram);
                println!(
                    "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}   {}{}",
                    format!("{} {what}", contender.name()),
                    micros(p[0]),
                    micros(p[1]),
                    micros(p[2]),
                    micros(p[3]),
                    micros(p[4]),
                    micros(p[5]),
                    sent,
                    if complete {
                        ""
                    } else {
                        " (stopped at the time limit)"
                    }
                );
            }
            let spread = |q: usize| {
                let values: Vec<f64> = per_run.iter().map(|p| p[q] as f64).collect();
                let (median, _, worst) = median_min_max(&values);
                format!(
                    "median {}, worst {}",
                    micros(median as u64),
                    micros(worst as u64)
                )
            };
            println!(
                "{:<40} p50 {}; p99 {}",
                format!("{} send-to-receive per run", contender.name()),
                spread(0),
                spread(2)
            );
        }
    }
}
