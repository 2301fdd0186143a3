//! Throughput of the full message lifecycle (send, receive, delete), visq beside its baselines
//! in the same run: crossbeam-channel `bounded(capacity)` (plain blocking `send` and `recv`)
//! and crossbeam-queue `ArrayQueue` doing a plain handoff (no lease), the lock-based reference,
//! and the tutorial design. Capacity 1024 unless the name says otherwise.
//!
//! * `uncontended/{1024,65536,1048576}/*`: one thread, one message at a time: send, receive,
//!   delete (push, pop), every queue built with that capacity (the capacity sweep; the
//!   tutorial design and `ArrayQueue` at 1024 only).
//! * `lifecycle/{1P1C,2P2C,4P4C}/batch {1,32}/{u64,64 B}/*`: producers and consumers on their
//!   own threads; time from start to the last message deleted.
//! * `lifecycle/1P1C batch 1/u64/{65536,1048576}/*`: the capacity sweep's 1P1C runs (visq,
//!   crossbeam-channel and the lock-based reference built with that capacity).
//!
//! At-most-once (`take`) against receive and delete is in `benches/features.rs`.
//!
//! Run: `cargo bench --bench lifecycle` (filter with `-- 1P1C`, `-- visq`, ...). The shorter
//! version of everything, with tables and plots, is `cargo run --release --example report`.

#[path = "common/mod.rs"]
mod common;

use common::adapters::{Array, Channel, Config, Contender, Handoff, Lease};
use common::lockref::LockRef;
use common::throughput::{
    self, handoff_once, lease_once, Shape, CAPACITY, SHAPES, SWEEP, TUTORIAL_POLL,
};
use common::tutorial::Tutorial;
use common::{Body64, Payload};
use criterion::{criterion_group, criterion_main, Bencher, Criterion, SamplingMode, Throughput};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Messages per measured run, by queue (the tutorial design is about 100x slower).
fn messages(contender: Contender) -> u64 {
    match contender {
        Contender::Tutorial => 5_000,
        _ => 50_000,
    }
}

/// The longest one run may take before the bench gives up on it.
const LIMIT: Duration = Duration::from_secs(60);

fn bench_lease<Q: Lease<u64>>(b: &mut Bencher<'_>, capacity: usize) {
    let q = Q::build(&Config::new(capacity).poll(TUTORIAL_POLL));
    let mut n = 0;
    b.iter(|| {
        lease_once(&q, n);
        n += 1;
    });
}

fn bench_handoff<H: Handoff<u64>>(b: &mut Bencher<'_>, capacity: usize) {
    let q = H::build(capacity);
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    let mut n = 0;
    b.iter(|| {
        handoff_once(&q, n, deadline);
        n += 1;
    });
}

fn uncontended(c: &mut Criterion) {
    for capacity in SWEEP {
        let mut group = c.benchmark_group(format!("uncontended/{capacity}"));
        group.throughput(Throughput::Elements(1));
        let contenders: &[Contender] = if capacity == CAPACITY {
            &Contender::ALL
        } else {
            &Contender::SWEPT
        };
        for &contender in contenders {
            group.bench_function(contender.name(), |b| match contender {
                Contender::Visq => bench_lease::<visq::Queue<u64>>(b, capacity),
                Contender::LockRef => bench_lease::<LockRef<u64>>(b, capacity),
                Contender::Tutorial => bench_lease::<Tutorial<u64>>(b, capacity),
                Contender::Channel => bench_handoff::<Channel<u64>>(b, capacity),
                Contender::Array => bench_handoff::<Array<u64>>(b, capacity),
            });
        }
        group.finish();
    }
}

/// `shape` on queues of `capacity`: every queue at [`CAPACITY`], the queues of
/// [`Contender::SWEPT`] at the others (group `lifecycle/SHAPE/PAYLOAD`, with `/CAPACITY`
/// appended for those).
fn threaded<P: Payload>(c: &mut Criterion, shape: Shape, capacity: usize) {
    let name = format!("lifecycle/{}/{}", shape.label(), P::NAME);
    let (name, contenders): (String, &[Contender]) = if capacity == CAPACITY {
        (name, &Contender::ALL)
    } else {
        (format!("{name}/{capacity}"), &Contender::SWEPT)
    };
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat);
    for &contender in contenders {
        let messages = messages(contender);
        group.throughput(Throughput::Elements(messages));
        group.bench_function(contender.name(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        throughput::lifecycle::<P>(contender, capacity, shape, messages, LIMIT)
                            .unwrap_or_else(|| panic!("{} did not finish", contender.name()))
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

fn lifecycle(c: &mut Criterion) {
    for shape in SHAPES {
        threaded::<u64>(c, shape, CAPACITY);
        threaded::<Body64>(c, shape, CAPACITY);
    }
}

/// The capacity sweep's 1P1C runs: batch 1, u64, at the larger capacities of [`SWEEP`] (1024
/// is in `lifecycle`).
fn sweep(c: &mut Criterion) {
    for capacity in &SWEEP[1..] {
        threaded::<u64>(c, SHAPES[0], *capacity);
    }
}

criterion_group!(benches, uncontended, lifecycle, sweep);
criterion_main!(benches);
