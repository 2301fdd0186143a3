//! Deadline bookkeeping with 1 k, 100 k and 1 M pending deadlines, through the public API:
//! visq's timing wheel against the lock-based reference's `BinaryHeap`. Per operation: a lease
//! (receive, which files a deadline), an expiry, a change_visibility. See `common/wheel.rs`.
//!
//! Run: `cargo bench --bench wheel` (filter with `-- expire`, `-- 1000000`, ...).

#[path = "common/mod.rs"]
mod common;

use common::wheel::{AnyFixture, Op, PENDING};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn wheel(c: &mut Criterion) {
    for op in Op::ALL {
        for pending in PENDING {
            let mut group = c.benchmark_group(format!("wheel/{}/{pending}", op.key()));
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(1))
                .throughput(Throughput::Elements(1));
            for contender in AnyFixture::CONTENDERS {
                // Built on first use (inside the routine, but outside the time it reports), so
                // a filtered-out benchmark never pays for its million-message fixture.
                let mut fixture = None;
                group.bench_function(contender.name(), |b| {
                    b.iter_custom(|iters| {
                        fixture
                            .get_or_insert_with(|| {
                                AnyFixture::new(contender, pending, op == Op::Change)
                            })
                            .run(op, iters)
                    })
                });
                if let Some(fixture) = &fixture {
                    assert_eq!(fixture.refused(), 0, "every change_visibility applied");
                }
            }
            group.finish();
        }
    }
}

criterion_group!(benches, wheel);
criterion_main!(benches);
