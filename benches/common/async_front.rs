//! The async front's workloads (issue 12), under a multi-threaded tokio runtime: lifecycle
//! throughput (1P1C and 4P4C, every message received and, for visq, deleted) and
//! send-to-receive latency at a fixed offered rate, for visq's async front against
//! `tokio::sync::mpsc` (bounded), `async-channel` (bounded) and `flume` (bounded) doing a plain
//! handoff, and against visq's own sync receive (threads).
//!
//! Ending a run: producers send their share, then the queue is closed (visq) or the senders
//! dropped (the channels); consumers receive until the end is reported. Every run is bounded
//! by a deadline: past it, the run stops and reports `None`.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use visq::Queue;

/// Channel and queue capacity in every async run.
pub const CAPACITY: usize = 1024;
/// The longest an async run may take.
const LIMIT: Duration = Duration::from_secs(20);
const LONG: Duration = Duration::from_secs(3600);

/// The contenders of the async section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncContender {
    /// visq: `send_async`, `receive_async`, `delete` (the whole lifecycle), tokio tasks.
    VisqAsync,
    /// visq: `send_timeout`, `receive`, `delete`, plain threads (the sync front).
    VisqSync,
    /// `tokio::sync::mpsc::channel(CAPACITY)`; several consumers share the one receiver
    /// behind a `tokio::sync::Mutex` (it has a single consumer).
    TokioMpsc,
    /// `async_channel::bounded(CAPACITY)`.
    AsyncChannel,
    /// `flume::bounded(CAPACITY)`, `send_async` / `recv_async`.
    Flume,
}

pub const ASYNC_CONTENDERS: [AsyncContender; 5] = [
    AsyncContender::VisqAsync,
    AsyncContender::VisqSync,
    AsyncContender::TokioMpsc,
    AsyncContender::AsyncChannel,
    AsyncContender::Flume,
];

impl AsyncContender {
    pub fn name(self) -> &'static str {
        match self {
            Self::VisqAsync => "visq async (lifecycle)",
            Self::VisqSync => "visq sync receive (lifecycle, threads)",
            Self::TokioMpsc => "tokio::sync::mpsc bounded (handoff)",
            Self::AsyncChannel => "async-channel bounded (handoff)",
            Self::Flume => "flume bounded (handoff)",
        }
    }
}

/// A multi-threaded tokio runtime with `workers` worker threads.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// Messages per second through `producers` x `consumers`, `messages` in all; `None` if the
/// run passed its deadline.
pub fn throughput(
    contender: AsyncContender,
    producers: usize,
    consumers: usize,
    messages: u64,
) -> Option<f64> {
    let per_producer = messages / producers as u64;
    let total = per_producer * producers as u64;
    let received = Arc::new(AtomicU64::new(0));
    let start;
    match contender {
        AsyncContender::VisqSync => {
            let q: Arc<Queue<u64>> = Arc::new(Queue::builder().capacity(CAPACITY).build().ok()?);
            start = Instant::now();
            std::thread::scope(|s| {
                let senders: Vec<_> = (0..producers)
                    .map(|_| {
                        let q = &q;
                        s.spawn(move || {
                            for n in 0..per_producer {
                                if q.send_timeout(n, LIMIT).is_err() {
                                    return;
                                }
                            }
                        })
                    })
                    .collect();
                for _ in 0..consumers {
                    let (q, received) = (&q, &received);
                    s.spawn(move || {
                        while let Some(d) = q.receive(LIMIT) {
                            q.delete(d.receipt()).unwrap();
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                for sender in senders {
                    sender.join().unwrap();
                }
                q.close();
            });
        }
        _ => {
            let rt = runtime(2);
            // Built before the clock starts, as the sync run's queue is (the first build in a
            // process calibrates the time-stamp counter); the runtime's building is not timed
            // either.
            let q: Arc<Queue<u64>> = Arc::new(Queue::builder().capacity(CAPACITY).build().ok()?);
            start = Instant::now();
            rt.block_on(run_async(
                contender,
                q,
                producers,
                consumers,
                per_producer,
                received.clone(),
            ));
        }
    }
    let elapsed = start.elapsed();
    (received.load(Ordering::Relaxed) == total && elapsed < LIMIT)
        .then(|| total as f64 / elapsed.as_secs_f64())
}

async fn run_async(
    contender: AsyncContender,
    q: Arc<Queue<u64>>,
    producers: usize,
    consumers: usize,
    per_producer: u64,
    received: Arc<AtomicU64>,
) {
    let mut tasks = Vec::new();
    let count = move |received: &AtomicU64| received.fetch_add(1, Ordering::Relaxed);
    match contender {
        AsyncContender::VisqAsync => {
            let mut senders = Vec::new();
            for _ in 0..producers {
                let q = q.clone();
                senders.push(tokio::spawn(async move {
                    for n in 0..per_producer {
                        if q.send_async(n, LIMIT, tokio::time::sleep).await.is_err() {
                            return;
                        }
                    }
                }));
            }
            for _ in 0..consumers {
                let (q, received) = (q.clone(), received.clone());
                tasks.push(tokio::spawn(async move {
                    while let Some(d) = q.receive_async(LIMIT, tokio::time::sleep).await {
                        q.delete(d.receipt()).unwrap();
                        count(&received);
                    }
                }));
            }
            for sender in senders {
                sender.await.unwrap();
            }
            q.close();
        }
        AsyncContender::TokioMpsc => {
            let (tx, rx) = tokio::sync::mpsc::channel::<u64>(CAPACITY);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..producers {
                let tx = tx.clone();
                tasks.push(tokio::spawn(async move {
                    for n in 0..per_producer {
                        if tx.send(n).await.is_err() {
                            return;
                        }
                    }
                }));
            }
            drop(tx);
            for _ in 0..consumers {
                let (rx, received) = (rx.clone(), received.clone());
                tasks.push(tokio::spawn(async move {
                    while let Some(_n) = rx.lock().await.recv().await {
                        count(&received);
                    }
                }));
            }
        }
        AsyncContender::AsyncChannel => {
            let (tx, rx) = async_channel::bounded::<u64>(CAPACITY);
            for _ in 0..producers {
                let tx = tx.clone();
                tasks.push(tokio::spawn(async move {
                    for n in 0..per_producer {
                        if tx.send(n).await.is_err() {
                            return;
                        }
                    }
                }));
            }
            drop(tx);
            for _ in 0..consumers {
                let (rx, received) = (rx.clone(), received.clone());
                tasks.push(tokio::spawn(async move {
                    while let Ok(_n) = rx.recv().await {
                        count(&received);
                    }
                }));
            }
        }
        AsyncContender::Flume => {
            let (tx, rx) = flume::bounded::<u64>(CAPACITY);
            for _ in 0..producers {
                let tx = tx.clone();
                tasks.push(tokio::spawn(async move {
                    for n in 0..per_producer {
                        if tx.send_async(n).await.is_err() {
                            return;
                        }
                    }
                }));
            }
            drop(tx);
            for _ in 0..consumers {
                let (rx, received) = (rx.clone(), received.clone());
                tasks.push(tokio::spawn(async move {
                    while let Ok(_n) = rx.recv_async().await {
                        count(&received);
                    }
                }));
            }
        }
        AsyncContender::VisqSync => unreachable!("runs on threads"),
    }
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    let _ = tokio::time::timeout(LIMIT, all).await;
}

/// Send-to-receive latency percentiles (p50, p99, p99.9, in ns) at `rate` msgs/s: one
/// producer thread paced to a schedule (it spins to each send time; the message carries its
/// intended send time), one consumer (a tokio task for the async
/// contenders, a thread for visq sync). `None` if the run passed its deadline.
pub fn latency(contender: AsyncContender, rate: u64, messages: u64) -> Option<[f64; 3]> {
    let origin = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let stamp = move || origin.elapsed().as_nanos() as u64;
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    // The producer: spins to each scheduled send time and stamps the message with that
    // *intended* time, so a producer held back by a slow or full queue counts against the
    // queue (no coordinated omission; as `common/latency.rs`).
    let produce = |send: &mut dyn FnMut(u64) -> bool| {
        let start = stamp();
        let limit = LIMIT.as_nanos() as u64;
        for n in 0..messages {
            let intended = start + n * interval.as_nanos() as u64;
            while stamp() < intended {
                std::hint::spin_loop();
            }
            if !send(intended) || stamp() - start > limit {
                return;
            }
        }
    };
    let mut record = |sent: u64| {
        let _ = histogram.record(stamp().saturating_sub(sent).max(1));
    };
    match contender {
        AsyncContender::VisqSync | AsyncContender::VisqAsync => {
            let q: Arc<Queue<u64>> = Arc::new(Queue::builder().capacity(CAPACITY).build().ok()?);
            std::thread::scope(|s| {
                let producer = s.spawn(|| {
                    produce(&mut |t| q.send_timeout(t, LIMIT).is_ok());
                    q.close();
                });
                if contender == AsyncContender::VisqSync {
                    while let Some(d) = q.receive(LIMIT) {
                        record(*d.body());
                        q.delete(d.receipt()).unwrap();
                    }
                } else {
                    runtime(2).block_on(async {
                        while let Some(d) = q.receive_async(LIMIT, tokio::time::sleep).await {
                            record(*d.body());
                            q.delete(d.receipt()).unwrap();
                        }
                    });
                }
                producer.join().unwrap();
            });
        }
        AsyncContender::TokioMpsc => {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAPACITY);
            std::thread::scope(|s| {
                s.spawn(move || produce(&mut |t| tx.blocking_send(t).is_ok()));
                runtime(2).block_on(async {
                    while let Some(t) = rx.recv().await {
                        record(t);
                    }
                });
            });
        }
        AsyncContender::AsyncChannel => {
            let (tx, rx) = async_channel::bounded::<u64>(CAPACITY);
            std::thread::scope(|s| {
                s.spawn(move || produce(&mut |t| tx.send_blocking(t).is_ok()));
                runtime(2).block_on(async {
                    while let Ok(t) = rx.recv().await {
                        record(t);
                    }
                });
            });
        }
        AsyncContender::Flume => {
            let (tx, rx) = flume::bounded::<u64>(CAPACITY);
            std::thread::scope(|s| {
                s.spawn(move || produce(&mut |t| tx.send(t).is_ok()));
                runtime(2).block_on(async {
                    while let Ok(t) = rx.recv_async().await {
                        record(t);
                    }
                });
            });
        }
    }
    (histogram.len() == messages)
        .then(|| [0.5, 0.99, 0.999].map(|q| histogram.value_at_quantile(q) as f64))
}
