//! First numbers: the full message lifecycle (send, receive, delete), uncontended and with one
//! producer and one consumer thread, beside crossbeam-channel's plain handoff in the same run.
//!
//! Run: `cargo bench --bench lifecycle`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::thread;
use std::time::Duration;
use visq::Queue;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Messages per measured batch in the two-thread benchmarks.
const MESSAGES: u64 = 100_000;

fn queue(capacity: usize) -> Queue<u64> {
    Queue::builder()
        .capacity(capacity)
        .build()
        .expect("valid settings")
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(1));
    let q = queue(1024);
    group.bench_function("visq send+receive+delete", |b| {
        b.iter(|| {
            q.send(black_box(7)).unwrap();
            let delivery = q.try_receive().unwrap();
            q.delete(delivery.receipt()).unwrap();
        })
    });
    let (tx, rx) = crossbeam_channel::bounded(1024);
    group.bench_function("crossbeam-channel send+recv", |b| {
        b.iter(|| {
            tx.send(black_box(7u64)).unwrap();
            black_box(rx.recv().unwrap());
        })
    });
    group.finish();
}

fn one_producer_one_consumer(c: &mut Criterion) {
    let mut group = c.benchmark_group("1p1c");
    group.throughput(Throughput::Elements(MESSAGES));
    group.sample_size(20);
    group.bench_function("visq lifecycle", |b| {
        b.iter_batched(
            || queue(1024),
            |q| {
                thread::scope(|s| {
                    s.spawn(|| {
                        for n in 0..MESSAGES {
                            let mut body = n;
                            while let Err(refused) = q.send(body) {
                                body = refused.into_inner();
                                std::hint::spin_loop();
                            }
                        }
                    });
                    for _ in 0..MESSAGES {
                        let delivery = q.receive(Duration::from_secs(10)).expect("a message");
                        q.delete(delivery.receipt()).unwrap();
                    }
                });
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("crossbeam-channel bounded(1024) handoff", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded(1024);
            thread::scope(|s| {
                s.spawn(move || {
                    for n in 0..MESSAGES {
                        tx.send(n).unwrap();
                    }
                });
                for _ in 0..MESSAGES {
                    black_box(rx.recv().unwrap());
                }
            });
        })
    });
    group.finish();
}

criterion_group!(benches, uncontended, one_producer_one_consumer);
criterion_main!(benches);
