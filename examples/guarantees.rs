//! The three delivery guarantees side by side: the same 1,000 payments, charged by the same
//! worker code, with the same failures injected, under
//!
//! * **at-most-once**: `Queue::try_take` removes each payment as it hands it over (no lease,
//!   nothing to acknowledge);
//! * **at-least-once**: a `Consumer` pool leases each payment and deletes it after the charge;
//! * **exactly-once processing**: the same pool with `ConsumerBuilder::exactly_once`, which
//!   remembers the payments it charged and settles a redelivery of one without charging again.
//!
//! The failures, on the first handling of 2% of the payments (the same ones in every run):
//!
//! * a **crash before the charge** (payments 17, 117, 217, ...): the worker dies after
//!   receiving the payment and before charging it;
//! * a **stall after the charge** (payments 42, 142, 242, ...): the worker charges the card,
//!   then freezes (a GC pause, a stopped VM) before its acknowledgement reaches the queue.
//!
//! Either way the worker is gone for twice the visibility timeout, so a lease it holds runs out:
//! the handler advances the queues' `ManualClock` by that much, so the run is deterministic and
//! waits for no queue time. One worker per run, so that a freeze ends no other worker's lease.
//! The expected outcome, asserted at the end:
//!
//! | | lost | charged twice |
//! |---|---|---|
//! | at-most-once | the crashed ones | none |
//! | at-least-once | none | the stalled ones |
//! | exactly-once | none | none (the redeliveries arrive within the window) |
//!
//! `cargo run --example guarantees`

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use visq::{Consumer, ConsumerStats, ManualClock, Queue};

const PAYMENTS: u32 = 1_000;
const VISIBILITY: Duration = Duration::from_secs(30);
/// How long a failed worker is gone: its lease, if it holds one, runs out meanwhile.
const GONE: Duration = Duration::from_secs(60);
/// The exactly-once window: longer than all the freezes of a run together (20 of [`GONE`]:
/// 20 minutes of queue time), so each redelivery arrives within it.
const WINDOW: Duration = Duration::from_secs(3 * 3600);
/// The longest a run may take in wall-clock time (it takes milliseconds).
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// A payment to charge once.
#[derive(Clone, Debug)]
struct Payment {
    id: u32,
    cents: u64,
}

/// The failure injected into a payment's first handling, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    CrashBeforeCharge,
    StallAfterCharge,
}

fn failure(id: u32) -> Option<Failure> {
    match id % 100 {
        17 => Some(Failure::CrashBeforeCharge),
        42 => Some(Failure::StallAfterCharge),
        _ => None,
    }
}

/// The worker code every run shares: charges payments into a ledger, failing as [`failure`]
/// says on a payment's first handling.
struct Worker {
    clock: ManualClock,
    /// How many times each payment was handled.
    handled: Vec<AtomicU32>,
    /// How many times each payment was charged: the effect that must happen once.
    charged: Vec<AtomicU32>,
}

impl Worker {
    fn new(clock: &ManualClock) -> Self {
        let counters = || (0..PAYMENTS).map(|_| AtomicU32::new(0)).collect();
        Worker {
            clock: clock.clone(),
            handled: counters(),
            charged: counters(),
        }
    }

    /// Handles one payment. `Err`: the worker crashed before charging.
    fn charge(&self, payment: &Payment) -> Result<(), &'static str> {
        let id = payment.id as usize;
        let first = self.handled[id].fetch_add(1, Ordering::SeqCst) == 0;
        let failure = failure(payment.id).filter(|_| first);
        if failure == Some(Failure::CrashBeforeCharge) {
            self.clock.advance(GONE);
            return Err("crashed before charging");
        }
        assert!(payment.cents > 0);
        self.charged[id].fetch_add(1, Ordering::SeqCst);
        if failure == Some(Failure::StallAfterCharge) {
            // Charged; frozen before the acknowledgement: the lease runs out meanwhile.
            self.clock.advance(GONE);
        }
        Ok(())
    }

    /// (lost, charged once, charged twice or more).
    fn outcome(&self) -> (u32, u32, u32) {
        let mut counts = (0, 0, 0);
        for charged in &self.charged {
            match charged.load(Ordering::SeqCst) {
                0 => counts.0 += 1,
                1 => counts.1 += 1,
                _ => counts.2 += 1,
            }
        }
        counts
    }
}

fn payments_queue(clock: &ManualClock) -> Result<Arc<Queue<Payment>>, Box<dyn Error>> {
    let q = Queue::builder()
        .capacity(PAYMENTS as usize)
        .visibility_timeout(VISIBILITY)
        .clock(clock.clone())
        .build()?;
    for id in 0..PAYMENTS {
        q.send(Payment {
            id,
            cents: 100 + u64::from(id),
        })
        .map_err(|e| format!("send: {e}"))?;
    }
    Ok(Arc::new(q))
}

/// At-most-once: take, then charge.
fn at_most_once() -> Result<Worker, Box<dyn Error>> {
    let clock = ManualClock::new();
    let q = payments_queue(&clock)?;
    let worker = Worker::new(&clock);
    while let Some(taken) = q.try_take() {
        // A crash loses the payment: it left the queue when it was taken.
        let _ = worker.charge(taken.body());
    }
    Ok(worker)
}

/// At-least-once (and, with `exactly_once`, exactly-once processing): a one-worker pool.
fn pooled(exactly_once: bool) -> Result<(Worker, ConsumerStats), Box<dyn Error>> {
    let clock = ManualClock::new();
    let q = payments_queue(&clock)?;
    let worker = Arc::new(Worker::new(&clock));
    let mut builder = Consumer::builder(q.clone())
        .workers(1)
        // A crashed or frozen worker does not heartbeat either.
        .heartbeat(0.0)
        .poll_wait(Duration::from_millis(2))
        .clock(clock.clone());
    if exactly_once {
        builder = builder.exactly_once(PAYMENTS as usize, WINDOW);
    }
    let pool = {
        let worker = worker.clone();
        builder.start(move |payment: &Payment| worker.charge(payment))?
    };
    // Wall-clock waits for the worker thread only; queue time is the manual clock's.
    let started = Instant::now();
    while q.stats().deleted < u64::from(PAYMENTS) {
        if started.elapsed() > RUN_LIMIT {
            return Err(format!("the pool did not finish: {:?}", q.stats()).into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    if !pool.stop(Duration::from_secs(5)) {
        return Err("the pool did not stop".into());
    }
    let stats = pool.stats();
    drop(pool);
    let worker = Arc::try_unwrap(worker).map_err(|_| "the pool still holds the worker")?;
    Ok((worker, stats))
}

fn main() -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let crashes = (0..PAYMENTS)
        .filter(|&id| failure(id) == Some(Failure::CrashBeforeCharge))
        .count() as u32;
    let stalls = (0..PAYMENTS)
        .filter(|&id| failure(id) == Some(Failure::StallAfterCharge))
        .count() as u32;
    println!(
        "{PAYMENTS} payments; on first handling, {crashes} crash before the charge and {stalls} \
         stall after it (each worker gone for {} s, leases last {} s)\n",
        GONE.as_secs(),
        VISIBILITY.as_secs()
    );
    println!(
        "{:<16} {:>6} {:>13} {:>14}   pool",
        "guarantee", "lost", "charged once", "charged twice"
    );
    let row = |name: &str, (lost, once, twice): (u32, u32, u32), pool: &str| {
        println!("{name:<16} {lost:>6} {once:>13} {twice:>14}   {pool}");
    };

    let most = at_most_once()?.outcome();
    row("at-most-once", most, "-");

    let (worker, stats) = pooled(false)?;
    let least = worker.outcome();
    row(
        "at-least-once",
        least,
        &format!(
            "{} leases lost, {} charges repeated",
            stats.lease_lost, least.2
        ),
    );

    let (worker, stats) = pooled(true)?;
    let exactly = worker.outcome();
    row(
        "exactly-once",
        exactly,
        &format!(
            "{} leases lost, {} redeliveries skipped",
            stats.lease_lost, stats.duplicates_skipped
        ),
    );

    // At-most-once loses the crashed payments and charges none twice.
    assert_eq!(most, (crashes, PAYMENTS - crashes, 0), "at-most-once");
    // At-least-once loses none and charges the stalled ones twice.
    assert_eq!(least, (0, PAYMENTS - stalls, stalls), "at-least-once");
    // Exactly-once loses none and charges none twice: the stalled ones' redeliveries are
    // skipped.
    assert_eq!(exactly, (0, PAYMENTS, 0), "exactly-once");
    assert_eq!(stats.duplicates_skipped, u64::from(stalls));
    println!(
        "\nas expected ({:.0} ms wall-clock)",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
