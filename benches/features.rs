//! Issue 11's features, each beside visq's plain queue and the lock-based reference extended to
//! the feature, in the same run (workloads: `common/features.rs`):
//!
//! * `features/groups-{1,16,10000}/{1P1C,2P2C}/{1024,1048576}/*`: send with a group (message `n` in
//!   group `n % N`, N = 1, 16, 10,000), receive, delete; visq built with 4x the groups that
//!   can hold messages at once in lanes.
//! * `features/priorities/{1P1C,2P2C}/{1024,1048576}/*`: send with a random priority of 4,
//!   receive, delete.
//! * `features/at-most-once/{uncontended,1P1C}/{1024,1048576}/*`: send and take against
//!   send, receive and delete.
//!
//! Run: `cargo bench --bench features` (filter with `-- groups`, `-- uncontended`, ...). The
//! report's section of the same cells is `examples/report/features.rs`.

#[path = "common/mod.rs"]
mod common;

use common::features::{self, Contender, Threads};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Messages per measured threaded run.
const MESSAGES: u64 = 50_000;
/// The longest one run may take before the bench gives up on it.
const LIMIT: Duration = Duration::from_secs(60);

fn bench(c: &mut Criterion) {
    for cell in features::cells() {
        let mut group = c.benchmark_group(format!("features/{}", cell.key()));
        if let Threads::Shape(_) = cell.threads {
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(2))
                .sampling_mode(SamplingMode::Flat)
                .throughput(Throughput::Elements(MESSAGES));
        } else {
            group.throughput(Throughput::Elements(1));
        }
        for contender in Contender::ALL {
            group.bench_function(contender.name(cell.feature), |b| {
                b.iter_custom(|iters| match cell.threads {
                    Threads::Uncontended => features::uncontended(&cell, contender, iters),
                    Threads::Shape(_) => (0..iters)
                        .map(|_| {
                            features::throughput(&cell, contender, MESSAGES, LIMIT).unwrap_or_else(
                                || panic!("{}: did not finish", contender.name(cell.feature)),
                            )
                        })
                        .sum(),
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
