//! Throughput of the full lifecycle: producers send, consumers receive (one at a time or in
//! batches) and delete. For the handoff queues the lifecycle is push then pop.
//!
//! A run spawns the threads, lines them up on a barrier, and times from the first producer's
//! start to the moment the last consumer has settled its last message. Producers send
//! `messages` in all; the last producer to finish then sends one STOP message per consumer
//! (they come after every real message, FIFO). Producers facing a full queue back off (spin,
//! then yield); crossbeam-channel's producers use its plain blocking `send` and its consumers its
//! plain blocking `recv`, as its users would (the STOP message ends them, no timeout needed).

use super::adapters::{Array, Channel, Config, Contender, Handoff, Lease};
use super::lockref::LockRef;
use super::tutorial::Tutorial;
use super::{Backoff, Payload, STOP};
use std::hint::black_box;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// Queue capacity in the throughput runs (crossbeam-channel `bounded(1024)`, and so on).
pub const CAPACITY: usize = 1024;
/// The capacities of the capacity sweep (issue 10): uncontended cost, 1P1C throughput and
/// latency at each, every queue built with the same capacity.
pub const SWEEP: [usize; 3] = [CAPACITY, 65_536, 1 << 20];
/// How long a consumer's receive waits before it re-checks whether the run has failed.
pub const WAIT: Duration = Duration::from_millis(20);
/// The tutorial design's poll interval in the throughput runs: 1 ms, a thousand times shorter
/// than its default, so that its throughput shows its locking and allocation rather than its
/// sleeping (a favour to the baseline, never a handicap).
pub const TUTORIAL_POLL: Duration = Duration::from_millis(1);

/// Producers, consumers and receive batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub producers: usize,
    pub consumers: usize,
    pub batch: usize,
}

impl Shape {
    pub const fn new(producers: usize, consumers: usize, batch: usize) -> Self {
        Shape {
            producers,
            consumers,
            batch,
        }
    }

    /// "1P1C", "4P4C".
    pub fn threads(&self) -> String {
        format!("{}P{}C", self.producers, self.consumers)
    }

    /// "1P1C batch 32".
    pub fn label(&self) -> String {
        format!("{} batch {}", self.threads(), self.batch)
    }
}

/// The thread shapes of the issue: 1P1C, 2P2C, 4P4C, each with receive batch 1 and 32.
pub const SHAPES: [Shape; 6] = [
    Shape::new(1, 1, 1),
    Shape::new(1, 1, 32),
    Shape::new(2, 2, 1),
    Shape::new(2, 2, 32),
    Shape::new(4, 4, 1),
    Shape::new(4, 4, 32),
];

/// The `part`-th of `parts` nearly equal shares of `0..total`.
fn share(total: u64, parts: usize, part: usize) -> Range<u64> {
    let parts = parts as u64;
    let part = part as u64;
    (total * part / parts)..(total * (part + 1) / parts)
}

/// Runs `messages` through `contender`, built with `capacity`, in `shape`; the time it took,
/// or `None` if the run did not finish within `limit`.
pub fn lifecycle<P: Payload>(
    contender: Contender,
    capacity: usize,
    shape: Shape,
    messages: u64,
    limit: Duration,
) -> Option<Duration> {
    let config = Config::new(capacity).poll(TUTORIAL_POLL);
    match contender {
        Contender::Visq => lease_lifecycle::<visq::Queue<P>, P>(&config, shape, messages, limit),
        Contender::LockRef => lease_lifecycle::<LockRef<P>, P>(&config, shape, messages, limit),
        Contender::Tutorial => lease_lifecycle::<Tutorial<P>, P>(&config, shape, messages, limit),
        Contender::Channel => handoff_lifecycle::<Channel<P>, P>(capacity, shape, messages, limit),
        Contender::Array => handoff_lifecycle::<Array<P>, P>(capacity, shape, messages, limit),
    }
}

/// Sends `body`, backing off while the queue is full; false if the run failed meanwhile.
pub fn send_until<Q: Lease<P>, P: Payload>(
    q: &Q,
    body: P,
    deadline: Instant,
    failed: &AtomicBool,
) -> bool {
    send_until_with(|body| q.send(body), body, deadline, failed)
}

/// [`send_until`] with `send` as the send (one that gives the body back when full).
pub fn send_until_with<P>(
    send: impl Fn(P) -> Result<(), P>,
    mut body: P,
    deadline: Instant,
    failed: &AtomicBool,
) -> bool {
    let mut backoff = Backoff::new();
    let mut tries = 0u32;
    loop {
        match send(body) {
            Ok(()) => return true,
            Err(refused) => body = refused,
        }
        backoff.snooze();
        // Look at the clock only now and then: it costs as much as a send.
        tries = tries.wrapping_add(1);
        if tries % 64 == 0 && (failed.load(Ordering::Relaxed) || Instant::now() > deadline) {
            failed.store(true, Ordering::Relaxed);
            return false;
        }
    }
}

/// Runs the threads of one lifecycle run: each producer sends its share with `produce`, the
/// last producer to finish sends one STOP per consumer with `stop`, each consumer runs
/// `consume` (which returns when it got a STOP). The time is taken by the threads themselves:
/// from the earliest producer start to the latest consumer stop, so a descheduled main thread
/// cannot distort it.
pub fn run_threads(
    shape: Shape,
    messages: u64,
    produce: impl Fn(Range<u64>) + Sync,
    stop: impl Fn() + Sync,
    consume: impl Fn() -> Instant + Sync,
) -> Duration {
    let barrier = Barrier::new(shape.producers + shape.consumers);
    let producers_left = AtomicUsize::new(shape.producers);
    thread::scope(|s| {
        let (barrier, producers_left) = (&barrier, &producers_left);
        let (produce, stop, consume) = (&produce, &stop, &consume);
        let producers: Vec<_> = (0..shape.producers)
            .map(|p| {
                let range = share(messages, shape.producers, p);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    produce(range);
                    if producers_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        stop();
                    }
                    start
                })
            })
            .collect();
        let consumers: Vec<_> = (0..shape.consumers)
            .map(|_| {
                s.spawn(move || {
                    barrier.wait();
                    consume()
                })
            })
            .collect();
        let start = producers
            .into_iter()
            .map(|p| p.join().expect("producer"))
            .min()
            .expect("a producer");
        let end = consumers
            .into_iter()
            .map(|c| c.join().expect("consumer"))
            .max()
            .expect("a consumer");
        end.saturating_duration_since(start)
    })
}

fn lease_lifecycle<Q: Lease<P>, P: Payload>(
    config: &Config,
    shape: Shape,
    messages: u64,
    limit: Duration,
) -> Option<Duration> {
    let deadline = Instant::now() + limit;
    let q = Q::build(config);
    let failed = AtomicBool::new(false);
    let elapsed = run_threads(
        shape,
        messages,
        |range| {
            for n in range {
                if !send_until(&q, P::make(n), deadline, &failed) {
                    return;
                }
            }
        },
        || {
            for _ in 0..shape.consumers {
                send_until(&q, P::make(STOP), deadline, &failed);
            }
        },
        || lease_consumer(&q, shape.batch, deadline, &failed),
    );
    (!failed.load(Ordering::Relaxed)).then_some(elapsed)
}

/// Receives and deletes until it gets a STOP; returns when it got it.
fn lease_consumer<Q: Lease<P>, P: Payload>(
    q: &Q,
    batch: usize,
    deadline: Instant,
    failed: &AtomicBool,
) -> Instant {
    let mut out = Vec::with_capacity(batch);
    let mut stops = 0u32;
    let mut rounds = 0u32;
    loop {
        let mut got = false;
        if batch <= 1 {
            if let Some(delivery) = q.receive(WAIT) {
                got = true;
                if black_box(Q::body(&delivery)).seq() == STOP {
                    stops += 1;
                }
                q.delete(&delivery);
            }
        } else {
            q.receive_batch(&mut out, batch, WAIT);
            for delivery in out.drain(..) {
                got = true;
                if black_box(Q::body(&delivery)).seq() == STOP {
                    stops += 1;
                }
                q.delete(&delivery);
            }
        }
        if stops > 0 {
            let end = Instant::now();
            // A batch may have taken another consumer's STOP: pass it on.
            for _ in 1..stops {
                send_until(q, P::make(STOP), deadline, failed);
            }
            return end;
        }
        rounds = rounds.wrapping_add(1);
        if (!got || rounds % 1024 == 0)
            && (failed.load(Ordering::Relaxed) || Instant::now() > deadline)
        {
            failed.store(true, Ordering::Relaxed);
            return Instant::now();
        }
    }
}

fn handoff_lifecycle<H: Handoff<P>, P: Payload>(
    capacity: usize,
    shape: Shape,
    messages: u64,
    limit: Duration,
) -> Option<Duration> {
    let deadline = Instant::now() + limit;
    let q = H::build(capacity);
    let failed = AtomicBool::new(false);
    let elapsed = run_threads(
        shape,
        messages,
        |range| {
            for n in range {
                if !push_until(&q, P::make(n), deadline, &failed) {
                    return;
                }
            }
        },
        || {
            for _ in 0..shape.consumers {
                push_until(&q, P::make(STOP), deadline, &failed);
            }
        },
        || handoff_consumer(&q, shape.batch, deadline, &failed),
    );
    (!failed.load(Ordering::Relaxed)).then_some(elapsed)
}

/// Pushes (waiting for room); false, and the run marked failed, if the queue gave up.
fn push_until<H: Handoff<P>, P: Payload>(
    q: &H,
    value: P,
    deadline: Instant,
    failed: &AtomicBool,
) -> bool {
    let pushed = q.push(value, deadline);
    if !pushed {
        failed.store(true, Ordering::Relaxed);
    }
    pushed
}

fn handoff_consumer<H: Handoff<P>, P: Payload>(
    q: &H,
    batch: usize,
    deadline: Instant,
    failed: &AtomicBool,
) -> Instant {
    let mut stops = 0u32;
    let mut rounds = 0u32;
    loop {
        let mut got = false;
        if let Some(value) = q.pop(deadline) {
            got = true;
            if black_box(&value).seq() == STOP {
                stops += 1;
            }
            for _ in 1..batch {
                let Some(value) = q.try_pop() else {
                    break;
                };
                if black_box(&value).seq() == STOP {
                    stops += 1;
                }
            }
        }
        if stops > 0 {
            let end = Instant::now();
            for _ in 1..stops {
                push_until(q, P::make(STOP), deadline, failed);
            }
            return end;
        }
        rounds = rounds.wrapping_add(1);
        if (!got || rounds % 1024 == 0)
            && (failed.load(Ordering::Relaxed) || Instant::now() > deadline)
        {
            failed.store(true, Ordering::Relaxed);
            return Instant::now();
        }
    }
}

/// Uncontended cost of one lifecycle on one thread (send, receive, delete; or push, pop), in
/// nanoseconds per message, over `ops` messages, on a queue built with `capacity`.
pub fn uncontended<P: Payload>(contender: Contender, capacity: usize, ops: u64) -> f64 {
    let config = Config::new(capacity).poll(TUTORIAL_POLL);
    match contender {
        Contender::Visq => lease_uncontended(&visq::Queue::<P>::build(&config), ops),
        Contender::LockRef => lease_uncontended(&LockRef::<P>::build(&config), ops),
        Contender::Tutorial => lease_uncontended(&Tutorial::<P>::build(&config), ops),
        Contender::Channel => handoff_uncontended(&Channel::<P>::build(capacity), ops),
        Contender::Array => handoff_uncontended(&Array::<P>::build(capacity), ops),
    }
}

/// [`uncontended`] for visq sampling the latencies of one message in `latency_sample` (0: off).
pub fn visq_uncontended(latency_sample: u32, ops: u64) -> f64 {
    let config = Config::new(CAPACITY).sample_latencies(latency_sample);
    lease_uncontended(&visq::Queue::<u64>::build(&config), ops)
}

/// [`lifecycle`] for visq (u64 bodies) sampling the latencies of one message in
/// `latency_sample` (0: off).
pub fn visq_lifecycle(
    latency_sample: u32,
    shape: Shape,
    messages: u64,
    limit: Duration,
) -> Option<Duration> {
    let config = Config::new(CAPACITY).sample_latencies(latency_sample);
    lease_lifecycle::<visq::Queue<u64>, u64>(&config, shape, messages, limit)
}

/// One send, receive and delete, on one thread.
#[inline]
pub fn lease_once<Q: Lease<P>, P: Payload>(q: &Q, n: u64) {
    if q.send(P::make(n)).is_err() {
        panic!("{}: an empty queue refused a send", Q::NAME);
    }
    let delivery = q.try_receive().expect("the message just sent");
    black_box(Q::body(&delivery));
    q.delete(&delivery);
}

/// One push and pop (crossbeam-channel: `send` and `recv`), on one thread.
#[inline]
pub fn handoff_once<H: Handoff<P>, P: Payload>(q: &H, n: u64, deadline: Instant) {
    assert!(
        q.push(P::make(n), deadline),
        "{}: an empty queue refused a push",
        H::NAME
    );
    black_box(q.pop(deadline).expect("the value just pushed"));
}

fn lease_uncontended<Q: Lease<P>, P: Payload>(q: &Q, ops: u64) -> f64 {
    for n in 0..1000 {
        lease_once(q, n);
    }
    let start = Instant::now();
    for n in 0..ops {
        lease_once(q, n);
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn handoff_uncontended<H: Handoff<P>, P: Payload>(q: &H, ops: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3600);
    for n in 0..1000 {
        handoff_once(q, n, deadline);
    }
    let start = Instant::now();
    for n in 0..ops {
        handoff_once(q, n, deadline);
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}
