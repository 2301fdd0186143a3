//! Worker pools: threads that receive, run a handler and settle, with retries, heartbeats and a
//! graceful stop. Built on the public [`Queue`] API and [`Lease`].

use crate::{Delivery, Lease, ManualClock, Nack, Queue, Receipt, ReceiptError, MAX_TIMEOUT};
use std::any::Any;
use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Exponential backoff between attempts: the `n`-th failure of a message waits
/// `base * factor^(n - 1)`, at most `cap`, less a random part of up to `jitter` of it.
///
/// ```
/// use std::time::Duration;
/// use visq::Backoff;
///
/// let backoff = Backoff {
///     base: Duration::from_secs(1),
///     factor: 2.0,
///     cap: Duration::from_secs(10),
///     jitter: 0.0,
/// };
/// assert_eq!(backoff.delay(1), Duration::from_secs(1));
/// assert_eq!(backoff.delay(3), Duration::from_secs(4));
/// assert_eq!(backoff.delay(9), Duration::from_secs(10)); // capped
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The wait after a message's first failure.
    pub base: Duration,
    /// How much longer each further wait is (below 1 counts as 1).
    pub factor: f64,
    /// The longest wait (and never more than [`MAX_TIMEOUT`]).
    pub cap: Duration,
    /// The share of each wait taken off at random, in `0.0..=1.0`: a wait `d` becomes a
    /// uniform pick from `d * (1 - jitter) ..= d`, so failing messages do not retry in step.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 1 s, doubling, capped at 5 minutes, with 20% jitter.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(5 * 60),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The wait after a message's `failures`-th failure (1 for the first), before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let cap = self.cap.min(MAX_TIMEOUT);
        let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let growth = self.factor.max(1.0).powi(exponent);
        // A zero base stays zero however large the growth (0 * infinity would be NaN, which
        // `min` would turn into the cap); `min` turns any other overflow into the cap.
        let seconds = if self.base.is_zero() {
            0.0
        } else {
            self.base.as_secs_f64() * growth
        };
        Duration::try_from_secs_f64(seconds.min(cap.as_secs_f64())).unwrap_or(cap)
    }

    /// [`Backoff::delay`] with jitter, `unit` being a uniform pick from `0.0..1.0`.
    fn jittered(&self, failures: u32, unit: f64) -> Duration {
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        self.delay(failures).mul_f64(1.0 - jitter * unit)
    }
}

/// What a [`Consumer`] has done so far. Every field is a total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages whose handler succeeded (and that were then deleted, unless the lease was
    /// lost: see `lease_lost`).
    pub processed: u64,
    /// Messages whose handler failed: returned an error, panicked, or (in a batch) got no
    /// outcome.
    pub failed: u64,
    /// Failed messages given back after a backoff, to be tried again.
    pub retried: u64,
    /// Failed messages on their last allowed receive, released for the queue to move to its
    /// dead-letter queue.
    pub dead_lettered: u64,
    /// Failures that were panics (also counted in `failed`).
    pub panicked: u64,
    /// Lease extensions made by the heartbeat.
    pub extended: u64,
    /// Messages received but not started when the pool stopped, released at once.
    pub released_unstarted: u64,
    /// Settlements the queue refused because the lease had already ended (it expired, so the
    /// message will be, or was, delivered again).
    pub lease_lost: u64,
}

/// The handler as the workers see it: a chunk of leases in, one success flag per lease out.
/// A single-message handler sees chunks of one.
/// A handler's verdict on one lease: on failure, the error's text if the message is on its
/// last receive (it becomes the dead letter's reason), `None` otherwise (no text is made).
type Outcome = Result<(), Option<String>>;
type Handler<T> = dyn Fn(&[Lease<'_, T>], &mut Vec<Outcome>) + Send + Sync;

/// Settings for a [`Consumer`]; made by [`Consumer::builder`].
pub struct ConsumerBuilder<T> {
    queue: Arc<Queue<T>>,
    workers: usize,
    visibility_timeout: Duration,
    max_receives: Option<u32>,
    backoff: Backoff,
    heartbeat: f64,
    poll_wait: Duration,
    prefetch: usize,
    clock: Option<ManualClock>,
}

impl<T> fmt::Debug for ConsumerBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("workers", &self.workers)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("max_receives", &self.max_receives)
            .field("backoff", &self.backoff)
            .field("heartbeat", &self.heartbeat)
            .field("poll_wait", &self.poll_wait)
            .field("prefetch", &self.prefetch)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + 'static> ConsumerBuilder<T> {
    /// How many worker threads (default 1, at least 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The lease length the heartbeat works with: its schedule and the length of each extension
    /// (default: the queue's [`Queue::visibility_timeout`]).
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout.min(MAX_TIMEOUT);
        self
    }

    /// The queue's dead-letter `max_receives` (default: the queue's [`Queue::max_receives`]).
    /// A message that fails on its
    /// `max_receives`-th receive is released at once, without backoff, for the queue to move to
    /// its dead-letter queue, and counted in [`ConsumerStats::dead_lettered`]. Without it,
    /// every failure backs off, and the queue still dead-letters in its own time.
    pub fn max_receives(mut self, max_receives: u32) -> Self {
        self.max_receives = Some(max_receives);
        self
    }

    /// The waits between attempts (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Extend a worker's leases once they are older than `fraction` of the visibility timeout
    /// (default 0.5). A fraction outside `0.0 < fraction < 1.0` turns the heartbeat off.
    pub fn heartbeat(mut self, fraction: f64) -> Self {
        self.heartbeat = fraction;
        self
    }

    /// How long each receive long-polls (default 100 ms, at least 1 ms, wall-clock). A stop is
    /// noticed within this time.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait.max(Duration::from_millis(1));
        self
    }

    /// How many messages a single-message worker receives at once (default 1, at least 1). The
    /// ones not yet started are heartbeated like the running one, and released by a stop.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// The queue's [`ManualClock`], if it has one: the heartbeat measures lease ages on it.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Starts the pool with a handler for one message at a time. `Ok` deletes the message;
    /// `Err` or a panic gives it back (see [`Consumer`]).
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use visq::{Consumer, Queue};
    ///
    /// let q: Arc<Queue<u32>> = Arc::new(Queue::builder().build()?);
    /// for n in 0..10 {
    ///     q.send(n).unwrap();
    /// }
    /// let consumer = Consumer::builder(q.clone())
    ///     .workers(2)
    ///     .start(|n: &u32| if n % 2 == 0 { Ok(()) } else { Err("odd") })?;
    /// while consumer.stats().processed + consumer.stats().failed < 10 {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// assert!(consumer.stop(Duration::from_secs(5)));
    /// let stats = consumer.stats();
    /// assert_eq!((stats.processed, stats.failed, stats.retried), (5, 5, 5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start<E, F>(self, handler: F) -> io::Result<Consumer<T>>
    where
        E: fmt::Display,
        F: Fn(&T) -> Result<(), E> + Send + Sync + 'static,
    {
        let max_receives = self.max_receives;
        let fetch = Fetch {
            max: self.prefetch,
            gather: Duration::ZERO,
            chunk: 1,
        };
        self.spawn(
            fetch,
            Box::new(move |leases, outcomes| {
                outcomes.extend(leases.iter().map(|lease| {
                    handler(lease.body()).map_err(|e| reason_if_last(lease, max_receives, e))
                }));
            }),
        )
    }

    /// Starts the pool with a handler for batches: up to `size` messages, or whatever arrived
    /// within `max_wait` (wall-clock) of the first. The handler returns one outcome per lease,
    /// in order; each is settled on its own, and a lease without an outcome counts as failed.
    /// A panic fails the whole batch.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use visq::{Consumer, Lease, Queue};
    ///
    /// let q: Arc<Queue<u32>> = Arc::new(Queue::builder().build()?);
    /// for n in 0..10 {
    ///     q.send(n).unwrap();
    /// }
    /// let consumer = Consumer::builder(q.clone()).start_batch(
    ///     4,
    ///     Duration::from_millis(5),
    ///     |batch: &[Lease<'_, u32>]| {
    ///         assert!(batch.len() <= 4);
    ///         batch.iter().map(|m| if *m.body() < 7 { Ok(()) } else { Err("too big") }).collect()
    ///     },
    /// )?;
    /// while consumer.stats().processed + consumer.stats().failed < 10 {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// consumer.stop(Duration::from_secs(5));
    /// assert_eq!((consumer.stats().processed, consumer.stats().failed), (7, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_batch<E, F>(
        self,
        size: usize,
        max_wait: Duration,
        handler: F,
    ) -> io::Result<Consumer<T>>
    where
        E: fmt::Display,
        F: Fn(&[Lease<'_, T>]) -> Vec<Result<(), E>> + Send + Sync + 'static,
    {
        let max_receives = self.max_receives;
        let size = size.max(1);
        let fetch = Fetch {
            max: size,
            gather: max_wait,
            chunk: size,
        };
        self.spawn(
            fetch,
            Box::new(move |leases, outcomes| {
                let results = handler(leases).into_iter().zip(leases);
                outcomes.extend(results.map(|(result, lease)| {
                    result.map_err(|e| reason_if_last(lease, max_receives, e))
                }));
            }),
        )
    }

    fn spawn(self, fetch: Fetch, handler: Box<Handler<T>>) -> io::Result<Consumer<T>> {
        let heartbeat_after = (self.heartbeat > 0.0 && self.heartbeat < 1.0)
            .then(|| self.visibility_timeout.mul_f64(self.heartbeat));
        let shared = Arc::new(Shared {
            queue: self.queue,
            handler,
            fetch,
            poll_wait: self.poll_wait,
            visibility_timeout: self.visibility_timeout,
            max_receives: self.max_receives,
            backoff: self.backoff,
            clock: match self.clock {
                Some(clock) => Clock::Manual(clock),
                None => Clock::Monotonic(Instant::now()),
            },
            stopping: AtomicBool::new(false),
            held: (0..self.workers).map(|_| Mutex::default()).collect(),
            counters: Counters::default(),
            lifecycle: Mutex::new(Lifecycle {
                live_workers: 0,
                heartbeat_on: heartbeat_after.is_some(),
            }),
            changed: Condvar::new(),
        });
        // From here on, dropping `consumer` (on a failed spawn) stops what was started.
        let consumer = Consumer {
            shared: shared.clone(),
        };
        for index in 0..self.workers {
            let worker = shared.clone();
            shared.lifecycle().live_workers += 1;
            let spawned = thread::Builder::new()
                .name(format!("visq-worker-{index}"))
                .spawn(move || worker.work(index));
            if let Err(error) = spawned {
                shared.lifecycle().live_workers -= 1;
                return Err(error);
            }
        }
        if let Some(after) = heartbeat_after {
            let shared = shared.clone();
            thread::Builder::new()
                .name("visq-heartbeat".into())
                .spawn(move || shared.heartbeat(after))?;
        }
        Ok(consumer)
    }
}

/// A pool of worker threads consuming one queue.
///
/// Each worker long-polls the queue, holds what it received as [`Lease`]s, runs the handler
/// and settles by the outcome:
///
/// * success deletes the message;
/// * failure (an `Err`, a panic, or a batch outcome missing) gives it back after an
///   exponential [`Backoff`] (by `change_visibility`), or at once when it has reached the
///   queue's dead-letter limit, so that the queue moves it to its dead-letter queue. A panic
///   does not end the worker;
/// * a *heartbeat* thread extends the leases a worker holds once they are older than a
///   fraction of the visibility timeout, so a slow handler keeps its message;
/// * [`Consumer::stop`] stops receiving, lets running handlers finish within a deadline and
///   releases whatever was received but not started.
///
/// The pool takes the queue's visibility timeout and dead-letter limit from the queue; a test
/// that drives the queue with a [`ManualClock`] also gives it to the pool
/// with [`ConsumerBuilder::clock`].
///
/// Dropping a consumer stops it like [`Consumer::stop`] without a deadline: it waits for the
/// running handlers.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Clone + Send + 'static> Consumer<T> {
    /// Settings for a pool over `queue`, with the defaults documented on each setting.
    pub fn builder(queue: Arc<Queue<T>>) -> ConsumerBuilder<T> {
        ConsumerBuilder {
            visibility_timeout: queue.visibility_timeout(),
            max_receives: queue.max_receives(),
            queue,
            workers: 1,
            backoff: Backoff::default(),
            heartbeat: 0.5,
            poll_wait: Duration::from_millis(100),
            prefetch: 1,
            clock: None,
        }
    }
}

impl<T> Consumer<T> {
    /// What the pool has done so far.
    pub fn stats(&self) -> ConsumerStats {
        self.shared.counters.snapshot()
    }

    /// Stops receiving, without waiting: each worker finishes the handler it runs, releases
    /// what it received but did not start, and exits. Leases stay heartbeated until
    /// [`Consumer::stop`].
    pub fn stop_receiving(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    /// Stops the pool gracefully: stops receiving, waits up to `deadline` (wall-clock) for the
    /// running handlers, releases anything received but not started, then stops the heartbeat.
    ///
    /// Returns whether every worker finished in time. Handlers still running at the deadline
    /// are left to finish and settle on their own, but their leases are no longer extended: a
    /// handler that outlives its lease has its message delivered again elsewhere.
    pub fn stop(&self, deadline: Duration) -> bool {
        self.shutdown(Some(deadline))
    }

    fn shutdown(&self, deadline: Option<Duration>) -> bool {
        self.stop_receiving();
        let shared = &self.shared;
        let end = deadline.and_then(|deadline| Instant::now().checked_add(deadline));
        let mut lifecycle = shared.lifecycle();
        while lifecycle.live_workers > 0 {
            lifecycle = match end {
                None => shared
                    .changed
                    .wait(lifecycle)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(end) => {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let waited = shared.changed.wait_timeout(lifecycle, left);
                    waited.unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        lifecycle.heartbeat_on = false;
        shared.changed.notify_all();
        lifecycle.live_workers == 0
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shutdown(None);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// How a worker receives: up to `max` messages, gathering for up to `gather` after the first,
/// handed to the handler `chunk` at a time.
struct Fetch {
    max: usize,
    gather: Duration,
    chunk: usize,
}

/// What the workers, the heartbeat and the [`Consumer`] handle share.
struct Shared<T> {
    queue: Arc<Queue<T>>,
    handler: Box<Handler<T>>,
    fetch: Fetch,
    poll_wait: Duration,
    visibility_timeout: Duration,
    max_receives: Option<u32>,
    backoff: Backoff,
    clock: Clock,
    stopping: AtomicBool,
    /// Per worker, the receipts it holds (received, not yet settled). A receipt leaves this
    /// set, under its lock, before it is settled, so the heartbeat never changes the
    /// visibility of a lease that a worker is settling.
    held: Box<[Mutex<Held>]>,
    counters: Counters,
    lifecycle: Mutex<Lifecycle>,
    /// Signalled when `lifecycle` changes.
    changed: Condvar,
}

/// One worker's leases, for the heartbeat.
#[derive(Default)]
struct Held {
    receipts: Vec<Receipt>,
    /// When the oldest of `receipts` was received or last extended, on the pool's clock.
    renewed_at: Duration,
}

struct Lifecycle {
    live_workers: usize,
    heartbeat_on: bool,
}

/// The clock lease ages are measured on: the queue's.
enum Clock {
    Monotonic(Instant),
    Manual(ManualClock),
}

impl Clock {
    fn now(&self) -> Duration {
        match self {
            Self::Monotonic(start) => start.elapsed(),
            Self::Manual(clock) => clock.now(),
        }
    }
}

/// Locks `mutex`, ignoring poisoning: every section under the locks of the patterns built on
/// the queue leaves its data whole.
pub(crate) fn lock<V>(mutex: &Mutex<V>) -> MutexGuard<'_, V> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T> Shared<T> {
    fn lifecycle(&self) -> MutexGuard<'_, Lifecycle> {
        lock(&self.lifecycle)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The heartbeat thread: every so often, extends each worker's leases once the oldest is
    /// `after` old. Runs until the consumer stops.
    fn heartbeat(&self, after: Duration) {
        let period = (after / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        let mut lifecycle = self.lifecycle();
        while lifecycle.heartbeat_on {
            drop(lifecycle);
            let now = self.clock.now();
            for held in self.held.iter() {
                let mut held = lock(held);
                if held.receipts.is_empty() || now.saturating_sub(held.renewed_at) < after {
                    continue;
                }
                for &receipt in &held.receipts {
                    if self
                        .queue
                        .change_visibility(receipt, self.visibility_timeout)
                        .is_ok()
                    {
                        bump(&self.counters.extended);
                    }
                }
                held.renewed_at = now;
            }
            lifecycle = self.lifecycle();
            if lifecycle.heartbeat_on {
                let waited = self.changed.wait_timeout(lifecycle, period);
                lifecycle = waited.unwrap_or_else(|p| p.into_inner()).0;
            }
        }
    }
}

impl<T: Clone> Shared<T> {
    /// One worker thread: receive, handle chunk by chunk, settle; on stop, release the rest.
    fn work(&self, index: usize) {
        let _exit = WorkerExit(self);
        let mut received = Vec::with_capacity(self.fetch.max);
        let mut holding = Holding {
            shared: self,
            index,
            leases: Vec::with_capacity(self.fetch.max),
        };
        let mut outcomes = Vec::with_capacity(self.fetch.chunk);
        let mut random = XorShift::seeded(index);
        while !self.stopping() {
            self.receive(&mut received);
            holding.add(&mut received);
            while !holding.leases.is_empty() && !self.stopping() {
                let chunk = self.fetch.chunk.min(holding.leases.len());
                let panic = catch_unwind(AssertUnwindSafe(|| {
                    (self.handler)(&holding.leases[..chunk], &mut outcomes)
                }))
                .err()
                .map(|payload| panic_reason(&*payload));
                if panic.is_some() {
                    outcomes.clear();
                }
                let mut outcomes = outcomes.drain(..);
                for lease in holding.take(chunk) {
                    let outcome = match (&panic, outcomes.next()) {
                        (None, Some(outcome)) => outcome,
                        (None, None) => Err(Some("the handler gave no outcome".to_string())),
                        (Some(panic), _) => Err(Some(panic.clone())),
                    };
                    self.settle(lease, outcome, panic.is_some(), &mut random);
                }
            }
        }
        // `holding` drops here and releases what was received but not started.
    }

    /// Receives into `out`: long-polls for a first message, then gathers more for up to
    /// `fetch.gather`, waking at least every `poll_wait` to notice a stop.
    fn receive(&self, out: &mut Vec<Delivery<T>>) {
        let max = self.fetch.max;
        if self.queue.receive_batch(out, max, self.poll_wait) == 0 {
            return;
        }
        // `None`: gathering for longer than `Instant` can count, in effect forever.
        let end = Instant::now().checked_add(self.fetch.gather);
        while out.len() < max && !self.stopping() {
            let left = end.map_or(Duration::MAX, |end| {
                end.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                break;
            }
            let wanted = max - out.len();
            self.queue
                .receive_batch(out, wanted, left.min(self.poll_wait));
        }
    }

    /// Settles one lease by its handler's outcome.
    fn settle(&self, lease: Lease<'_, T>, outcome: Outcome, panicked: bool, random: &mut XorShift) {
        let counters = &self.counters;
        let settled = match outcome {
            Ok(()) => {
                bump(&counters.processed);
                lease.ack()
            }
            Err(reason) => self.fail(lease, reason, panicked, random),
        };
        if settled.is_err() {
            bump(&counters.lease_lost);
        }
    }

    /// Gives a failed lease back: after a backoff, or, on its last receive, to the dead-letter
    /// queue with `reason`.
    fn fail(
        &self,
        lease: Lease<'_, T>,
        reason: Option<String>,
        panicked: bool,
        random: &mut XorShift,
    ) -> Result<(), ReceiptError> {
        let counters = &self.counters;
        bump(&counters.failed);
        if panicked {
            bump(&counters.panicked);
        }
        if is_last_attempt(&lease, self.max_receives) {
            let nack = Nack {
                delay: Duration::ZERO,
                reason: reason.map(Cow::Owned),
            };
            lease
                .nack_with(nack)
                .map(|()| bump(&counters.dead_lettered))
        } else {
            let delay = self.backoff.jittered(lease.receive_count(), random.unit());
            lease.nack_after(delay).map(|()| bump(&counters.retried))
        }
    }
}

/// The text of a handler's error, made only when `lease` is on its last receive (the text then
/// goes with the message to the dead-letter queue).
fn reason_if_last<T>(
    lease: &Lease<'_, T>,
    max_receives: Option<u32>,
    error: impl fmt::Display,
) -> Option<String> {
    is_last_attempt(lease, max_receives).then(|| error.to_string())
}

/// Whether `lease` is its message's last receive before the dead-letter queue takes over.
fn is_last_attempt<T>(lease: &Lease<'_, T>, max_receives: Option<u32>) -> bool {
    max_receives.is_some_and(|max| lease.receive_count() >= max)
}

/// What a caught panic said, as a dead letter's reason.
fn panic_reason(payload: &(dyn Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("the handler panicked: {message}")
}

/// A worker's unsettled leases, mirrored, in the same order, by its receipts in
/// `Shared::held` for the heartbeat. Dropping it releases the leases that are left (received,
/// not started), after taking them out of the heartbeat's sight.
struct Holding<'a, T> {
    shared: &'a Shared<T>,
    index: usize,
    leases: Vec<Lease<'a, T>>,
}

impl<'a, T> Holding<'a, T> {
    /// Takes over `received`, emptying it.
    fn add(&mut self, received: &mut Vec<Delivery<T>>) {
        if received.is_empty() {
            return;
        }
        let mut held = lock(&self.shared.held[self.index]);
        if held.receipts.is_empty() {
            held.renewed_at = self.shared.clock.now();
        }
        held.receipts.extend(received.iter().map(Delivery::receipt));
        drop(held);
        let queue = &*self.shared.queue;
        self.leases.extend(
            received
                .drain(..)
                .map(|delivery| Lease::new(queue, delivery)),
        );
    }

    /// The first `n` leases, to settle: out of the heartbeat's sight first, so that it never
    /// changes the visibility of a lease being settled.
    fn take(&mut self, n: usize) -> std::vec::Drain<'_, Lease<'a, T>> {
        lock(&self.shared.held[self.index]).receipts.drain(..n);
        self.leases.drain(..n)
    }
}

impl<T> Drop for Holding<'_, T> {
    fn drop(&mut self) {
        lock(&self.shared.held[self.index]).receipts.clear();
        let unstarted = self.leases.len() as u64;
        self.shared
            .counters
            .released_unstarted
            .fetch_add(unstarted, Ordering::Relaxed);
        // The leases drop after this: each releases its message at once.
    }
}

/// Counts a worker out when its thread ends, however it ends.
struct WorkerExit<'a, T>(&'a Shared<T>);

impl<T> Drop for WorkerExit<'_, T> {
    fn drop(&mut self) {
        self.0.lifecycle().live_workers -= 1;
        self.0.changed.notify_all();
    }
}

#[derive(Default)]
struct Counters {
    processed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    panicked: AtomicU64,
    extended: AtomicU64,
    released_unstarted: AtomicU64,
    lease_lost: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> ConsumerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ConsumerStats {
            processed: read(&self.processed),
            failed: read(&self.failed),
            retried: read(&self.retried),
            dead_lettered: read(&self.dead_lettered),
            panicked: read(&self.panicked),
            extended: read(&self.extended),
            released_unstarted: read(&self.released_unstarted),
            lease_lost: read(&self.lease_lost),
        }
    }
}

/// A small PRNG for jitter (xorshift64*), seeded per worker from std's random hasher keys.
struct XorShift(u64);

impl XorShift {
    fn seeded(index: usize) -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_usize(index);
        Self(hasher.finish() | 1)
    }

    /// A uniform pick from `0.0..1.0`.
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        bits as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_survives_silly_settings() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            factor: 3.0,
            cap: Duration::from_secs(1),
            jitter: 0.0,
        };
        assert_eq!(backoff.delay(0), Duration::from_millis(100));
        assert_eq!(backoff.delay(2), Duration::from_millis(300));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
        let silly = Backoff {
            factor: f64::NAN,
            jitter: f64::NAN,
            cap: Duration::MAX,
            ..backoff
        };
        assert_eq!(silly.delay(5), Duration::from_millis(100));
        assert_eq!(silly.jittered(5, 0.99), Duration::from_millis(100));
        let huge = Backoff {
            factor: 1e300,
            cap: Duration::MAX,
            ..backoff
        };
        assert_eq!(huge.delay(40), MAX_TIMEOUT);
    }

    #[test]
    fn a_zero_base_never_waits() {
        let zero = Backoff {
            base: Duration::ZERO,
            factor: 2.0,
            cap: Duration::from_secs(60),
            jitter: 0.0,
        };
        // 2^1999 overflows to infinity: 0 * infinity must not become the cap.
        for failures in [1, 2, 2000, u32::MAX] {
            assert_eq!(zero.delay(failures), Duration::ZERO, "failure {failures}");
        }
    }

    #[test]
    fn jitter_takes_off_at_most_its_share() {
        let backoff = Backoff {
            base: Duration::from_secs(10),
            jitter: 0.5,
            ..Backoff::default()
        };
        let mut random = XorShift::seeded(0);
        for _ in 0..1000 {
            let unit = random.unit();
            assert!((0.0..1.0).contains(&unit));
            let delay = backoff.jittered(1, unit);
            assert!(delay > Duration::from_secs(5) && delay <= Duration::from_secs(10));
        }
    }
}
