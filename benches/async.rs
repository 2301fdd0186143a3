//! The async front (issue 12) under a multi-threaded tokio runtime: visq's async lifecycle
//! (send_async, receive_async, delete) against tokio::sync::mpsc, async-channel and flume
//! (bounded, plain handoff) and against visq's sync receive; 1P1C and 4P4C throughput, and
//! send-to-receive latency at 100 k msgs/s. See `common/async_front.rs`.
//!
//! Run: `cargo bench --bench async` (`-- --quick` for a short run). Prints the median and
//! min-max of 5 runs per cell.

#[path = "common/mod.rs"]
mod common;

use common::async_front::{latency, throughput, ASYNC_CONTENDERS};
use common::median_min_max;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (runs, messages, latency_messages) = if quick {
        (1, 20_000, 10_000)
    } else {
        (5, 400_000, 200_000)
    };
    for (producers, consumers) in [(1, 1), (4, 4)] {
        println!("\nlifecycle throughput, {producers}P{consumers}C, capacity 1024 (M msgs/s)");
        for contender in ASYNC_CONTENDERS {
            let rates: Vec<f64> = (0..runs)
                .filter_map(|_| throughput(contender, producers, consumers, messages))
                .map(|r| r / 1e6)
                .collect();
            let (median, min, max) = median_min_max(&rates);
            if rates.is_empty() {
                println!("  {:<42} did not finish", contender.name());
            } else {
                println!(
                    "  {:<42} {median:>7.2}  ({min:.2}-{max:.2})",
                    contender.name()
                );
            }
        }
    }
    println!("\nsend-to-receive latency at 100 k msgs/s, capacity 1024 (us: p50 / p99 / p99.9)");
    for contender in ASYNC_CONTENDERS {
        let runs: Vec<[f64; 3]> = (0..runs)
            .filter_map(|_| latency(contender, 100_000, latency_messages))
            .collect();
        let pick = |i: usize| {
            let values: Vec<f64> = runs.iter().map(|r| r[i] / 1e3).collect();
            if values.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", median_min_max(&values).0)
            }
        };
        println!(
            "  {:<42} {} / {} / {}",
            contender.name(),
            pick(0),
            pick(1),
            pick(2)
        );
    }
}
