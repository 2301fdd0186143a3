//! Latency, one producer and one consumer, recorded in hdrhistograms (nanoseconds):
//!
//! * **send-to-receive**: from the message's send time to the moment `receive` returned it;
//! * **send-to-delete**: to the moment `delete` returned (lease queues only).
//!
//! Pacing: at a fixed offered rate the producer sends message `i` at `start + i / rate`
//! (spinning until then) and stamps it with that *intended* time, so a producer held back by
//! a slow or full queue counts against the queue (no coordinated omission). In a burst, the
//! producer sends `size` messages back to back (each stamped when its send starts), waits
//! until the consumer has them all, pauses so the consumer goes idle, and repeats.
//!
//! The consumer waits the way each queue's users wait (issue 10's workload): visq and the
//! lock-based reference loop `receive_batch(max 1, wait 100 ms)` then `delete`;
//! crossbeam-channel's consumer calls its plain blocking `recv` (a STOP message ends it, so no
//! timeout variant is needed); the tutorial design polls at its default 1 s (its
//! `receive_batch` with a 1 s wait sleeps one whole poll); `ArrayQueue` spins, then yields.
//! Every queue is built with the [`Spec`]'s capacity.

use super::adapters::{Array, Channel, Config, Contender, Handoff, Lease};
use super::lockref::LockRef;
use super::throughput::send_until;
use super::tutorial::{Tutorial, DEFAULT_POLL};
use super::{Backoff, STOP};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// How long a lease queue's consumer waits in one `receive_batch` (issue 10's workload).
pub const CONSUMER_WAIT: Duration = Duration::from_millis(100);
/// The percentiles reported, with their labels.
pub const QUANTILES: [(&str, f64); 6] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
    ("max", 1.0),
];

/// How the producer paces its sends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// This many messages per second, evenly spaced.
    Rate(u64),
    /// `size` messages back to back, then wait for the consumer to take them, then `pause`.
    Burst { size: u64, pause: Duration },
}

impl Pace {
    pub fn label(&self) -> String {
        match self {
            Pace::Rate(rate) if rate % 1_000_000 == 0 => format!("{} M msgs/s", rate / 1_000_000),
            Pace::Rate(rate) if rate % 1_000 == 0 => format!("{} k msgs/s", rate / 1_000),
            Pace::Rate(rate) => format!("{rate} msgs/s"),
            Pace::Burst { size, pause } => {
                format!("bursts of {size}, {} ms apart", pause.as_millis())
            }
        }
    }

    pub fn key(&self) -> String {
        match self {
            Pace::Rate(rate) => format!("rate-{rate}"),
            Pace::Burst { size, .. } => format!("burst-{size}"),
        }
    }
}

/// One latency run's parameters.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub pace: Pace,
    /// Messages to send in all.
    pub messages: u64,
    /// The capacity every queue is built with.
    pub capacity: usize,
    /// The producer stops sending after this long (the run is then marked incomplete).
    pub limit: Duration,
}

/// What one run measured.
pub struct Latency {
    pub receive: Histogram<u64>,
    /// Send-to-delete, for queues with a delete step.
    pub delete: Option<Histogram<u64>>,
    pub sent: u64,
    /// Whether every planned message was sent within the limit.
    pub complete: bool,
    pub elapsed: Duration,
    /// How long the producer and the consumer (in that order) were runnable but not running
    /// during the run (the kernel's run-queue wait, `/proc/thread-self/schedstat`); `None`
    /// where the kernel does not report it. A stall that the threads' own scheduler caused (a thread
    /// woken onto a busy core, or preempted) shows here; one from outside the guest (the
    /// hypervisor running another guest on the vCPU) does not.
    pub runqueue_wait: Option<[Duration; 2]>,
}

/// The calling thread's total run-queue wait so far: the second field of
/// `/proc/thread-self/schedstat` (Linux with schedstats), in nanoseconds.
fn runqueue_wait_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The run-queue wait of the calling thread from `start` (a [`runqueue_wait_ns`] reading) on.
fn runqueue_wait_since(start: Option<u64>) -> Option<u64> {
    Some(runqueue_wait_ns()?.saturating_sub(start?))
}

/// The producer's and the consumer's run-queue waits, if both were measured.
fn both_waits(producer: Option<u64>, consumer: Option<u64>) -> Option<[Duration; 2]> {
    Some([producer?, consumer?].map(Duration::from_nanos))
}

impl Latency {
    /// The [`QUANTILES`] of `histogram`, in nanoseconds.
    pub fn percentiles(histogram: &Histogram<u64>) -> [u64; 6] {
        QUANTILES.map(|(_, q)| {
            if q >= 1.0 {
                histogram.max()
            } else {
                histogram.value_at_quantile(q)
            }
        })
    }
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

#[inline]
fn now_ns(base: Instant) -> u64 {
    super::nanos(base.elapsed())
}

/// Runs `spec` on `contender`, body `u64` (the send stamp).
pub fn run(contender: Contender, spec: Spec) -> Latency {
    let config = Config::new(spec.capacity);
    match contender {
        Contender::Visq => lease_latency::<visq::Queue<u64>>(&config, spec, CONSUMER_WAIT),
        Contender::LockRef => lease_latency::<LockRef<u64>>(&config, spec, CONSUMER_WAIT),
        Contender::Tutorial => lease_latency::<Tutorial<u64>>(&config, spec, DEFAULT_POLL),
        Contender::Channel => handoff_latency::<Channel<u64>>(spec),
        Contender::Array => handoff_latency::<Array<u64>>(spec),
    }
}

/// The producer's side, shared by both families: `send(stamp) -> sent?` with its own backoff
/// and deadline; `received` is the consumer's running count.
fn produce(
    spec: Spec,
    base: Instant,
    received: &AtomicU64,
    mut send: impl FnMut(u64) -> bool,
) -> (u64, bool) {
    let limit = super::nanos(spec.limit);
    let start = now_ns(base);
    let mut sent = 0;
    match spec.pace {
        Pace::Rate(rate) => {
            let rate = u128::from(rate.max(1));
            for i in 0..spec.messages {
                let intended = start + u64::try_from(u128::from(i) * 1_000_000_000 / rate).unwrap();
                let mut now = now_ns(base);
                while now < intended {
                    std::hint::spin_loop();
                    now = now_ns(base);
                }
                if now - start > limit || !send(intended) {
                    return (sent, false);
                }
                sent += 1;
            }
        }
        Pace::Burst { size, pause } => {
            while sent < spec.messages {
                for _ in 0..size.min(spec.messages - sent) {
                    if !send(now_ns(base)) {
                        return (sent, false);
                    }
                    sent += 1;
                }
                let mut backoff = Backoff::new();
                while received.load(Ordering::Acquire) < sent {
                    backoff.snooze();
                    if now_ns(base) - start > limit {
                        return (sent, false);
                    }
                }
                thread::sleep(pause);
                if now_ns(base) - start > limit {
                    return (sent, sent == spec.messages);
                }
            }
        }
    }
    (sent, true)
}

/// A lease queue's run; its consumer loops `receive_batch(max 1, wait)`, then `delete`.
fn lease_latency<Q: Lease<u64>>(config: &Config, spec: Spec, wait: Duration) -> Latency {
    let q = Q::build(config);
    let base = Instant::now();
    // The consumer gives up this long after the producer's limit.
    let give_up = base + spec.limit + Duration::from_secs(5);
    let received = AtomicU64::new(0);
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let (q, received, barrier) = (&q, &received, &barrier);
        let consumer = s.spawn(move || {
            let (mut to_receive, mut to_delete) = (histogram(), histogram());
            let mut count = 0;
            let mut out = Vec::with_capacity(1);
            barrier.wait();
            let waited = runqueue_wait_ns();
            loop {
                if q.receive_batch(&mut out, 1, wait) == 0 {
                    if Instant::now() > give_up {
                        break;
                    }
                    continue;
                }
                let got = now_ns(base);
                let delivery = out.pop().expect("the delivery just received");
                let stamp = *Q::body(&delivery);
                q.delete(&delivery);
                if stamp == STOP {
                    break;
                }
                let deleted = now_ns(base);
                to_receive.saturating_record(got.saturating_sub(stamp).max(1));
                to_delete.saturating_record(deleted.saturating_sub(stamp).max(1));
                count += 1;
                received.store(count, Ordering::Release);
            }
            (to_receive, to_delete, runqueue_wait_since(waited))
        });
        barrier.wait();
        let started = Instant::now();
        let waited = runqueue_wait_ns();
        let gave_up = AtomicBool::new(false);
        let send = |stamp: u64| send_until(q, stamp, give_up, &gave_up);
        let (sent, complete) = produce(spec, base, received, send);
        send_until(q, STOP, give_up, &gave_up);
        let producer_waited = runqueue_wait_since(waited);
        let (to_receive, to_delete, consumer_waited) = consumer.join().expect("consumer");
        Latency {
            receive: to_receive,
            delete: Some(to_delete),
            sent,
            complete,
            elapsed: started.elapsed(),
            runqueue_wait: both_waits(producer_waited, consumer_waited),
        }
    })
}

fn handoff_latency<H: Handoff<u64>>(spec: Spec) -> Latency {
    let q = H::build(spec.capacity);
    let base = Instant::now();
    let give_up = base + spec.limit + Duration::from_secs(5);
    let received = AtomicU64::new(0);
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let (q, received, barrier) = (&q, &received, &barrier);
        let consumer = s.spawn(move || {
            let mut to_receive = histogram();
            let mut count = 0;
            barrier.wait();
            let waited = runqueue_wait_ns();
            loop {
                match q.pop(give_up) {
                    Some(STOP) => break,
                    Some(stamp) => {
                        let got = now_ns(base);
                        to_receive.saturating_record(got.saturating_sub(stamp).max(1));
                        count += 1;
                        received.store(count, Ordering::Release);
                    }
                    // Only a polling queue gives up, and only at `give_up`.
                    None => break,
                }
            }
            (to_receive, runqueue_wait_since(waited))
        });
        barrier.wait();
        let started = Instant::now();
        let waited = runqueue_wait_ns();
        let (sent, complete) = produce(spec, base, received, |stamp| q.push(stamp, give_up));
        q.push(STOP, give_up);
        let producer_waited = runqueue_wait_since(waited);
        let (to_receive, consumer_waited) = consumer.join().expect("consumer");
        Latency {
            receive: to_receive,
            delete: None,
            sent,
            complete,
            elapsed: started.elapsed(),
            runqueue_wait: both_waits(producer_waited, consumer_waited),
        }
    })
}
