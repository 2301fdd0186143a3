//! The async worker pool: `async fn` handlers run concurrently, up to a limit, inside one
//! future that the caller spawns or awaits on its runtime (the library spawns nothing and
//! depends on no runtime; the [`Timer`] it is lent paces the heartbeat and the waits).
//!
//! The pool receives with the queue's async front (one [`Deliveries`](crate::Deliveries)
//! stream, so waiting allocates nothing) whenever fewer than `concurrency` handlers run, and
//! settles each message as the threaded [`Consumer`](crate::Consumer) does:
//!
//! * **success**: deleted (`processed`; a delete the queue refuses, the lease having ended,
//!   is counted in `lease_lost`);
//! * **failure** (an `Err`, or a panic while the handler's future is polled, counted in
//!   `panicked` too): given back after [`Backoff::delay`] of its receive count (`retried`), or,
//!   on the queue's last allowed receive, released at once with the error as the reason, for
//!   the queue to move to its dead-letter queue (`dead_lettered`);
//! * **heartbeat**: every `heartbeat` fraction of the pool's visibility timeout, the leases of
//!   handlers running for at least that long are extended by that timeout (`extended`);
//! * **stop**: [`AsyncStopper::stop`] (or the queue's closing) stops receiving at once (the
//!   stream is dropped, so a wake-up it got is passed on to another receiver); the handlers
//!   running finish and are settled, then the pool's future resolves to its totals. Nothing
//!   is received that is not started, so nothing is handed back.
//!
//! The handlers run on the thread that polls the pool's future: concurrency, not parallelism
//! (run one pool per core for that). A handler that blocks the thread blocks the pool.

use super::consumer::{panic_reason, Retry, XorShift};
use super::{lock, Clock};
use crate::{
    Backoff, ConsumerStats, Delivery, ManualClock, Nack, Queue, Receipt, Timer, MAX_TIMEOUT,
};
use std::fmt;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Settings for an [`AsyncConsumer`]; made by [`AsyncConsumer::builder`].
#[derive(Debug)]
pub struct AsyncConsumer<T> {
    queue: Arc<Queue<T>>,
    concurrency: usize,
    backoff: Backoff,
    heartbeat: f64,
    visibility_timeout: Duration,
    clock: Option<ManualClock>,
    stop: Arc<StopSignal>,
}

/// Stops an [`AsyncConsumer`]'s run from anywhere (another task, a signal handler's thread).
#[derive(Clone, Debug)]
pub struct AsyncStopper(Arc<StopSignal>);

#[derive(Debug, Default)]
struct StopSignal {
    stopping: AtomicBool,
    /// The run's waker, to wake it for the stop.
    waker: Mutex<Option<Waker>>,
}

impl AsyncStopper {
    /// Stops receiving; the run's future resolves once the handlers running have finished
    /// and been settled.
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
        if let Some(waker) = lock(&self.0.waker).take() {
            waker.wake();
        }
    }
}

impl<T> AsyncConsumer<T> {
    /// A pool on `queue` with the defaults: 16 handlers at once, the threaded pool's
    /// [`Backoff`] default, a heartbeat at half of the queue's visibility timeout.
    pub fn builder(queue: Arc<Queue<T>>) -> Self {
        let visibility_timeout = queue.visibility_timeout();
        Self {
            queue,
            concurrency: 16,
            backoff: Backoff::default(),
            heartbeat: 0.5,
            visibility_timeout,
            clock: None,
            stop: Arc::default(),
        }
    }

    /// How many handlers may run at once (at least 1).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The wait before a failed message is tried again, by its receive count.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The lease a heartbeat extends to (default: the queue's visibility timeout; clamped to
    /// between 1 ms and [`MAX_TIMEOUT`]).
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        self
    }

    /// Extend a running handler's lease once it is this fraction of the visibility timeout
    /// old (default 0.5; clamped to between 0.05 and 0.95).
    pub fn heartbeat(mut self, fraction: f64) -> Self {
        self.heartbeat = if fraction.is_nan() {
            0.5
        } else {
            fraction.clamp(0.05, 0.95)
        };
        self
    }

    /// The clock the heartbeat reads the age of leases from: give the [`ManualClock`] the
    /// queue runs on (default: the monotonic clock). The heartbeat's pace is the run's timer.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// A handle that stops the run.
    pub fn stopper(&self) -> AsyncStopper {
        AsyncStopper(self.stop.clone())
    }

    /// Runs the pool until it is stopped or the queue is closed and drained; resolves to its
    /// totals. `handler` gets each delivery (its body, id and receive count) and answers
    /// `Ok` (delete it) or `Err` (try again after a backoff, or dead-letter it on its last
    /// receive, the error's text its reason).
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use visq::{AsyncConsumer, Queue};
    /// # use std::{future::Future, pin::pin, task::{Context, Poll, Waker}};
    /// let q: Arc<Queue<u32>> = Arc::new(Queue::builder().build().unwrap());
    /// for n in 0..10 {
    ///     q.send(n).unwrap();
    /// }
    /// q.close(); // the run ends once the queue is drained
    /// let pool = AsyncConsumer::builder(q.clone()).concurrency(4);
    /// let run = pool.run(|_| std::future::pending(), |d| async move {
    ///     if *d.body() % 2 == 0 { Ok(()) } else { Err("odd") }
    /// });
    /// // Any executor (tokio's `spawn` or `block_on`); here, polled by hand.
    /// let Poll::Ready(stats) = pin!(run).poll(&mut Context::from_waker(Waker::noop())) else {
    ///     panic!("every handler finishes at once");
    /// };
    /// assert_eq!((stats.processed, stats.failed, stats.retried), (5, 5, 5));
    /// ```
    pub async fn run<Tm, F, Fut, E>(self, timer: Tm, handler: F) -> ConsumerStats
    where
        T: Clone,
        Tm: Timer + Clone,
        F: Fn(Delivery<T>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        let queue = &*self.queue;
        let clock = Clock::new(self.clock.clone());
        let beat = self.visibility_timeout.mul_f64(self.heartbeat);
        let mut stats = ConsumerStats::default();
        let mut random = XorShift::seeded(0);
        let mut stream = pin!(Some(queue.delivery_stream(timer.clone())));
        let mut heartbeat = pin!(None::<Tm::Sleep>);
        let slots: Vec<Option<Running<Fut>>> = (0..self.concurrency).map(|_| None).collect();
        // Pinned in place once: each handler's future stays in its slot until it is done.
        let mut slots: Pin<Box<[Option<Running<Fut>>]>> = Box::into_pin(slots.into_boxed_slice());
        poll_fn(|cx| {
            self.stop.waker_for(cx);
            loop {
                let mut progressed = false;
                // SAFETY: the slots are never moved: each is only replaced in place.
                let running = unsafe { slots.as_mut().get_unchecked_mut() };
                for slot in running.iter_mut() {
                    let Some(task) = slot.as_mut() else { continue };
                    // SAFETY: `task.future` stays in its pinned slot until it is dropped there.
                    let future = unsafe { Pin::new_unchecked(&mut task.future) };
                    let outcome = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                        Ok(Poll::Pending) => continue,
                        Ok(Poll::Ready(Ok(()))) => Ok(()),
                        Ok(Poll::Ready(Err(e))) => Err((e.to_string(), false)),
                        Err(payload) => Err((panic_reason(&*payload), true)),
                    };
                    let (receipt, receive_count) = (task.receipt, task.receive_count);
                    *slot = None;
                    self.settle(receipt, receive_count, outcome, &mut stats, &mut random);
                    progressed = true;
                }
                let stopping = self.stop.stopping.load(Ordering::SeqCst);
                if stopping && stream.is_some() {
                    // Dropped now: a wake-up it got goes on to another receiver.
                    stream.set(None);
                }
                if let Some(free) = running.iter_mut().find(|slot| slot.is_none()) {
                    if let Some(deliveries) = stream.as_mut().as_pin_mut() {
                        match Pin::new(&mut deliveries.next()).poll(cx) {
                            Poll::Ready(Some(delivery)) => {
                                let (receipt, receive_count) =
                                    (delivery.receipt(), delivery.receive_count());
                                match catch_unwind(AssertUnwindSafe(|| handler(delivery))) {
                                    Ok(future) => {
                                        *free = Some(Running {
                                            future,
                                            receipt,
                                            receive_count,
                                            renewed_at: clock.now(),
                                        })
                                    }
                                    Err(payload) => {
                                        let failed = Err((panic_reason(&*payload), true));
                                        self.settle(
                                            receipt,
                                            receive_count,
                                            failed,
                                            &mut stats,
                                            &mut random,
                                        );
                                    }
                                }
                                progressed = true;
                            }
                            Poll::Ready(None) => stream.set(None), // closed and drained
                            Poll::Pending => {}
                        }
                    }
                }
                if stream.is_none() && running.iter().all(Option::is_none) {
                    return Poll::Ready(stats);
                }
                if progressed {
                    continue;
                }
                // Idle: arm the heartbeat while handlers run, and extend what is due.
                if running.iter().any(Option::is_some) {
                    if heartbeat.is_none() {
                        heartbeat.set(Some(timer.sleep(beat)));
                    }
                    let beat_due = heartbeat.as_mut().as_pin_mut().map(|s| s.poll(cx));
                    if beat_due == Some(Poll::Ready(())) {
                        heartbeat.set(None);
                        self.extend_due(running, clock.now(), beat, &mut stats);
                        continue;
                    }
                }
                return Poll::Pending;
            }
        })
        .await
    }

    /// Settles one handled message by its outcome (`Err((reason, panicked))`).
    fn settle(
        &self,
        receipt: Receipt,
        receive_count: u32,
        outcome: Result<(), (String, bool)>,
        stats: &mut ConsumerStats,
        random: &mut XorShift,
    ) {
        let queue = &*self.queue;
        let settled = match outcome {
            Ok(()) => {
                stats.processed += 1;
                queue.delete(receipt)
            }
            Err((reason, panicked)) => {
                stats.failed += 1;
                stats.panicked += u64::from(panicked);
                match self
                    .backoff
                    .after_failure(receive_count, queue.max_receives(), random)
                {
                    Retry::GiveUp => {
                        stats.dead_lettered += 1;
                        queue.nack(receipt, Nack::now().reason(reason))
                    }
                    Retry::After(delay) => {
                        stats.retried += 1;
                        queue.nack(receipt, Nack::after(delay))
                    }
                }
            }
        };
        stats.lease_lost += u64::from(settled.is_err());
    }

    /// Extends the leases of the handlers that have run for `beat` since their last renewal.
    fn extend_due<Fut>(
        &self,
        running: &mut [Option<Running<Fut>>],
        now: Duration,
        beat: Duration,
        stats: &mut ConsumerStats,
    ) {
        for task in running.iter_mut().flatten() {
            if now.saturating_sub(task.renewed_at) >= beat
                && self
                    .queue
                    .change_visibility(task.receipt, self.visibility_timeout)
                    .is_ok()
            {
                task.renewed_at = now;
                stats.extended += 1;
            }
        }
    }
}

impl StopSignal {
    /// Keeps the run's current waker, for [`AsyncStopper::stop`].
    fn waker_for(&self, cx: &Context<'_>) {
        let mut waker = lock(&self.waker);
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
    }
}

/// A handler's future in its slot, with what settling it needs.
struct Running<Fut> {
    future: Fut,
    receipt: Receipt,
    receive_count: u32,
    /// When its lease was taken or last extended (on the pool's clock).
    renewed_at: Duration,
}
