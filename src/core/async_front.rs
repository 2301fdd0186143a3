//! The async front: receiving and sending from async code without blocking the executor.
//!
//! [`Queue::receive_async`], [`Queue::receive_batch_async`] and [`Queue::send_async`] try the
//! lock-free path first, exactly as their blocking counterparts do; only when there is nothing
//! to receive (no room to send) does the future wait. It then leaves its task's waker in a
//! node that lives inside the future and is linked into the queue's waiter list (see
//! [`super::waiters`], "Async waiters"), counted in the same `sleepers` word that a sender
//! loads once to see whether anybody waits. So waiting allocates nothing, a send with nobody
//! waiting costs what it cost before, and threads parked in [`Queue::receive`] and futures
//! waiting in [`Queue::receive_async`] on one queue are all woken (by a message each, a close,
//! or a change of the wheel's next deadline).
//!
//! Before it registers, a wait yields to the executor a few times (it wakes itself and returns
//! `Pending`, [`YIELDS_BEFORE_WAITING`]), the async form of a parked receive's brief spin: a
//! message that comes within a few executor turns costs no registration, notification or timer.
//!
//! # Time: the caller's timer, for the wait and for the wheel
//!
//! The library has no timer thread and depends on no runtime. A waiting future needs a timer
//! for two things: the end of its `wait`, and the wheel's next deadline (a lease that expires
//! or a delay that ends makes a message visible, and nobody notifies for that: a parked thread
//! wakes for it because its nap ends then). The caller lends the future its runtime's timer,
//! as a [`Timer`]: any `Fn(Duration) -> impl Future<Output = ()>`, such as
//! `tokio::time::sleep`. The future then sleeps, registered, until the earlier of its wait's
//! end and the wheel's next due tick (the nap of a parked thread, [`Queue::receive`]); when
//! that sleep ends it looks at the queue again, which runs the wheel if it is due. A change of
//! the next due tick while it waits wakes it as it wakes parked threads, and it sleeps again
//! for the new nap. The sleep is made only when the future registers and replaced only when a
//! nap must end earlier, so a future woken by messages makes no new timer per message.
//!
//! A deadline then reaches the future as late as the runtime's timer fires (tokio's: up to
//! about a millisecond after the requested instant), on top of the wheel's one tick.
//!
//! One look at the queue (`try_receive`, inside a poll) may wait briefly for another thread
//! that holds the wheel with a due deadline: the one place the crate blocks (see
//! [`super::queue`], "A receive while another thread holds the wheel"); it lasts as long as
//! that thread's run, which runs no user code.
//!
//! With a [`ManualClock`](crate::ManualClock) the wheel's deadlines are not wall-clock time:
//! a waiting future wakes for them when another operation on the queue runs the wheel after
//! the clock moved (as a parked thread does), and its `wait` is still wall-clock time.
//!
//! # Cancel safety
//!
//! Dropping a future at any `.await` point loses no message and leaves no waiter registered:
//!
//! * a delivery exists only once the future returns it (`try_receive` runs inside one poll);
//! * the node is unlinked (and uncounted) by the drop, under the list's lock;
//! * a future that was woken and is dropped before it looked at the queue again passes the
//!   wake-up on to the next waiter, thread or future, so the message it was woken for is not
//!   left with every other waiter asleep.
//!
//! A dropped [`Queue::send_async`] drops the body it had not yet queued with it, as a dropped
//! `tokio::sync::mpsc::Sender::send` does; a send that runs out of `wait` or finds the queue
//! closed hands it back.
//!
//! Loom models `async_*` (loom-tests/tests/async_front.rs) check registration against a send
//! and against a close, the drop of a woken future and the passing on of its wake-up.

use crate::core::message::{Delivery, MessageId};
use crate::core::queue::{Nap, Queue};
use crate::core::send_options::SendOptions;
use crate::core::stats::count_refusal;
use crate::core::sync::yield_now;
use crate::core::waiters::{WaitNode, Waiters};
use crate::core::wheel::NEVER;
use crate::SendError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The longest single sleep a waiting future asks its timer for (it looks again and sleeps
/// on): a wait of days is many naps, and any wait fits a timer's range.
const LONGEST_NAP: Duration = Duration::from_secs(3600);
/// How many times one poll looks again, after a registration found something to do, before
/// it yields to the executor (waking itself at once) instead of going round again.
const LOOKS_PER_POLL: u32 = 8;
/// How many times a wait yields to the executor (waking itself at once) before it registers
/// and arms a timer: a message that comes within a few executor turns (a busy producer) is
/// then taken without a registration, a notification and a timer (which, for tokio, means
/// the timer driver's lock twice), the async counterpart of a parked receive's brief spin
/// (at most a few microseconds of executor time per wait). Measured (1P1C lifecycle, tokio,
/// 2 workers, 2-core VM under load, noisy): 4.0-4.4 M msgs/s with none, 4.8-5.0 with 64.
/// None under loom, where a yield is only a scheduling point.
const YIELDS_BEFORE_WAITING: u32 = 64;
/// How much earlier a new nap must end than the one in progress for the timer to be asked
/// again: the two are the same deadline read through two clocks a few microseconds apart
/// (and runtime timers are millisecond-grained), so a re-poll keeps its sleep.
const NAP_SLACK: Duration = Duration::from_micros(100);

/// A runtime's timer, lent to a waiting future: `sleep(d)` is a future that completes once
/// `d` of wall-clock time has passed (later is fine; earlier only costs a look at the queue).
///
/// The library has no timer thread and depends on no runtime, so a future that waits in
/// [`Queue::receive_async`], [`Queue::send_async`] or a [`Deliveries`] stream sleeps with
/// this timer: registered among the queue's waiters, until the earlier of its wait's end and
/// the queue's next wheel deadline (a lease that expires or a delay that ends, for which
/// nobody sends a notification). When that sleep ends it looks at the queue again, which runs
/// the wheel if it is due: so an async receiver sees expiries and delays exactly when a
/// parked [`Queue::receive`] does. A change of the next deadline while it waits wakes it, and
/// it sleeps again for the new nap; otherwise a nap in progress is kept, so a future woken by
/// messages makes no new timer per message. With a [`ManualClock`](crate::ManualClock) the
/// deadlines are not wall-clock time: a waiting future wakes for them when an operation on the
/// queue runs the wheel after the clock moved.
///
/// Every `Fn(Duration) -> F` where `F` is a `Future<Output = ()>` is a timer, so
/// `tokio::time::sleep`, `async_io::Timer::after` (mapped to `()`) or a test's own function
/// can be passed as is. A timer that never completes (`|_| std::future::pending()`) makes a
/// wait that only a message, a close or another operation's wheel run ends.
pub trait Timer {
    /// The future `sleep` returns.
    type Sleep: Future<Output = ()>;

    /// A future that completes once `duration` has passed.
    fn sleep(&self, duration: Duration) -> Self::Sleep;
}

impl<F, S> Timer for F
where
    F: Fn(Duration) -> S,
    S: Future<Output = ()>,
{
    type Sleep = S;

    fn sleep(&self, duration: Duration) -> S {
        self(duration)
    }
}

impl<T> Queue<T> {
    /// Leases the next visible message, waiting up to `wait` (wall-clock time, measured by
    /// `timer`) without blocking the thread: the async [`Queue::receive`]. Resolves to `None`
    /// after `wait`, or at once on a closed queue with nothing visible.
    ///
    /// `timer` is the runtime's sleep, for example `tokio::time::sleep`; it times the `wait`
    /// and the wheel's next deadline (see the [module docs](crate::Timer) on time). Cancel
    /// safe: dropping the future loses no message and leaves no waiter behind.
    ///
    /// ```
    /// # use std::{future::Future, pin::pin, task::{Context, Poll, Waker}, time::Duration};
    /// let q: visq::Queue<u32> = visq::Queue::builder().build().unwrap();
    /// q.send(7).unwrap();
    /// // Any executor; here one poll, with a timer that is never needed.
    /// let mut receive = pin!(q.receive_async(Duration::from_secs(1), |_| std::future::pending()));
    /// let mut cx = Context::from_waker(Waker::noop());
    /// let Poll::Ready(Some(delivery)) = receive.as_mut().poll(&mut cx) else { panic!() };
    /// assert_eq!(*delivery.body(), 7);
    /// ```
    pub fn receive_async<Tm: Timer>(&self, wait: Duration, timer: Tm) -> ReceiveAsync<'_, T, Tm>
    where
        T: Clone,
    {
        ReceiveAsync(Waited::new(Receiving(self), wait, timer))
    }

    /// Appends up to `max` deliveries to `out` and returns how many, waiting up to `wait`
    /// only while it has none: the async [`Queue::receive_batch`]. Allocates nothing when
    /// `out` has room for `max` more. Cancel safe: while it waits it holds no delivery.
    pub async fn receive_batch_async<Tm: Timer>(
        &self,
        out: &mut Vec<Delivery<T>>,
        max: usize,
        wait: Duration,
        timer: Tm,
    ) -> usize
    where
        T: Clone,
    {
        if max == 0 {
            return 0;
        }
        let taken = self.receive_batch(out, max, Duration::ZERO);
        if taken > 0 || wait.is_zero() {
            return taken;
        }
        match self.receive_async(wait, timer).await {
            Some(first) => {
                out.push(first);
                1 + self.receive_batch(out, max - 1, Duration::ZERO)
            }
            None => 0,
        }
    }

    /// Queues `body`, visible at once, waiting up to `wait` (wall-clock time, measured by
    /// `timer`) while the queue is full: the async [`Queue::send_timeout`]. Fails with
    /// [`SendError::Full`] once `wait` has passed with the queue still full and with
    /// [`SendError::Closed`] as soon as the queue is closed; the body comes back. Dropping
    /// the future before it resolves drops the body with it.
    pub fn send_async<Tm: Timer>(
        &self,
        body: T,
        wait: Duration,
        timer: Tm,
    ) -> SendAsync<'_, T, Tm> {
        SendAsync(Waited::new(
            Sending {
                queue: self,
                body: Some(body),
            },
            wait,
            timer,
        ))
    }

    /// The deliveries of this queue, one after another, as they come: an endless
    /// [`Queue::receive_async`] that ends only once the queue is closed and nothing is visible.
    /// With the `stream` feature it is a `futures_core::Stream`; without it, call
    /// [`Deliveries::next`]. One waiter node serves every item: no allocation per item.
    ///
    /// ```
    /// # use std::{future::Future, pin::pin, task::{Context, Poll, Waker}};
    /// let q: visq::Queue<u32> = visq::Queue::builder().build().unwrap();
    /// q.send(1).unwrap();
    /// q.send(2).unwrap();
    /// q.close();
    /// let mut deliveries = pin!(q.delivery_stream(|_| std::future::pending()));
    /// let mut cx = Context::from_waker(Waker::noop());
    /// let mut bodies = Vec::new();
    /// while let Poll::Ready(Some(d)) = pin!(deliveries.as_mut().next()).poll(&mut cx) {
    ///     bodies.push(*d.body());
    ///     q.delete(d.receipt()).unwrap();
    /// }
    /// assert_eq!(bodies, [1, 2]); // and then the end: closed, drained
    /// ```
    pub fn delivery_stream<Tm: Timer>(&self, timer: Tm) -> Deliveries<'_, T, Tm>
    where
        T: Clone,
    {
        Deliveries(Waited::endless(Receiving(self), timer))
    }

    /// How many receivers wait now: threads parked in [`Queue::receive`] and futures
    /// registered by [`Queue::receive_async`] (a future that was woken, or dropped, no longer
    /// counts). Exact when nothing else runs; for tests and monitoring.
    pub fn waiting_receivers(&self) -> usize {
        self.waiters.waiting()
    }

    /// How many senders wait now for room: threads in [`Queue::send_timeout`] and futures in
    /// [`Queue::send_async`], counted as [`Queue::waiting_receivers`] counts.
    pub fn waiting_senders(&self) -> usize {
        self.senders.waiting()
    }
}

/// The future of [`Queue::receive_async`].
#[must_use = "futures do nothing unless polled"]
pub struct ReceiveAsync<'a, T: Clone, Tm: Timer>(Waited<Receiving<'a, T>, Tm>);

impl<T: Clone, Tm: Timer> Future for ReceiveAsync<'_, T, Tm> {
    type Output = Option<Delivery<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: a structural projection to the only field, never moved out of.
        unsafe { self.map_unchecked_mut(|f| &mut f.0) }.poll(cx)
    }
}

/// The deliveries of a queue as they come; made by [`Queue::delivery_stream`]. Ends (`None`)
/// once the queue is closed with nothing visible. Cancel safe between items and within one:
/// dropping it loses no message and leaves no waiter behind.
#[must_use = "streams do nothing unless polled"]
pub struct Deliveries<'a, T: Clone, Tm: Timer>(Waited<Receiving<'a, T>, Tm>);

impl<'a, T: Clone, Tm: Timer> Deliveries<'a, T, Tm> {
    /// The next delivery (`None`: closed and drained), for loops without the `Stream` trait:
    /// `while let Some(d) = deliveries.as_mut().next().await`.
    pub fn next(self: Pin<&mut Self>) -> NextDelivery<'_, 'a, T, Tm> {
        NextDelivery(self)
    }

    pub(crate) fn poll_delivery(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Delivery<T>>> {
        // SAFETY: a structural projection to the only field, never moved out of.
        unsafe { self.map_unchecked_mut(|d| &mut d.0) }.poll(cx)
    }
}

/// The future of [`Deliveries::next`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct NextDelivery<'s, 'a, T: Clone, Tm: Timer>(Pin<&'s mut Deliveries<'a, T, Tm>>);

impl<T: Clone, Tm: Timer> Future for NextDelivery<'_, '_, T, Tm> {
    type Output = Option<Delivery<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll_delivery(cx)
    }
}

#[cfg(feature = "stream")]
impl<T: Clone, Tm: Timer> futures_core::Stream for Deliveries<'_, T, Tm> {
    type Item = Delivery<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery<T>>> {
        self.poll_delivery(cx)
    }
}

impl<T: Clone, Tm: Timer> std::fmt::Debug for Deliveries<'_, T, Tm> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries").finish_non_exhaustive()
    }
}

/// The future of [`Queue::send_async`].
#[must_use = "futures do nothing unless polled"]
pub struct SendAsync<'a, T, Tm: Timer>(Waited<Sending<'a, T>, Tm>);

impl<T, Tm: Timer> Future for SendAsync<'_, T, Tm> {
    type Output = Result<MessageId, SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: a structural projection to the only field, never moved out of.
        unsafe { self.map_unchecked_mut(|f| &mut f.0) }.poll(cx)
    }
}

impl<T: Clone, Tm: Timer> std::fmt::Debug for ReceiveAsync<'_, T, Tm> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveAsync").finish_non_exhaustive()
    }
}

impl<T, Tm: Timer> std::fmt::Debug for SendAsync<'_, T, Tm> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendAsync").finish_non_exhaustive()
    }
}

/// What a waiting future waits to do: one attempt (lock-free, never waiting), what to answer
/// when the wait is over, and how the waiters of its side decide to nap and to wake.
pub(crate) trait Attempt {
    type Output;

    /// Tries once; `Some` when done (done also means closed, for a receive).
    fn attempt(&mut self) -> Option<Self::Output>;

    /// The answer once the wait has run out.
    fn give_up(&mut self) -> Self::Output;

    /// The waiters of this side of the queue.
    fn side(&self) -> &Waiters;

    /// The nap of a waiter with `left` to wait (see [`Queue::receiver_nap`]).
    fn nap(&self, left: Duration) -> Nap;

    /// The re-check after registering, for a nap computed from `next_due`.
    fn should_wake(&self, next_due: u64) -> bool;
}

/// Receiving: [`Queue::try_receive`], done on a closed queue.
pub(crate) struct Receiving<'a, T>(pub(crate) &'a Queue<T>);

impl<T: Clone> Attempt for Receiving<'_, T> {
    type Output = Option<Delivery<T>>;

    fn attempt(&mut self) -> Option<Self::Output> {
        // Read before the receive, as a blocking receive does (see `Queue::wait_for`).
        let closed = self.0.is_closed();
        match self.0.try_receive() {
            Some(delivery) => Some(Some(delivery)),
            None if closed => Some(None),
            None => None,
        }
    }

    fn give_up(&mut self) -> Self::Output {
        None
    }

    fn side(&self) -> &Waiters {
        &self.0.waiters
    }

    fn nap(&self, left: Duration) -> Nap {
        self.0.receiver_nap(left)
    }

    fn should_wake(&self, next_due: u64) -> bool {
        self.0.receiver_should_wake(next_due)
    }
}

/// Sending: one `enqueue`; the body stays here while the queue is full.
struct Sending<'a, T> {
    queue: &'a Queue<T>,
    /// `None` once handed to the queue or back to the caller.
    body: Option<T>,
}

impl<T> Attempt for Sending<'_, T> {
    type Output = Result<MessageId, SendError<T>>;

    fn attempt(&mut self) -> Option<Self::Output> {
        let body = self.body.take().expect("polled after it resolved");
        match self.queue.enqueue(body, &SendOptions::PLAIN, |_| {}) {
            Err(SendError::Full(body)) => {
                self.body = Some(body);
                None
            }
            sent => Some(count_refusal(&self.queue.counters.refused_sends, sent)),
        }
    }

    fn give_up(&mut self) -> Self::Output {
        let body = self.body.take().expect("polled after it resolved");
        count_refusal(
            &self.queue.counters.refused_sends,
            Err(SendError::Full(body)),
        )
    }

    fn side(&self) -> &Waiters {
        &self.queue.senders
    }

    fn nap(&self, left: Duration) -> Nap {
        // A slot is freed by a delete or a move, never by a deadline alone: no wheel here.
        Nap {
            length: left,
            next_due: NEVER,
            ends_at_deadline: false,
        }
    }

    fn should_wake(&self, _next_due: u64) -> bool {
        self.queue.free.has_free_acquired() || self.queue.is_closed()
    }
}

/// A future that waits to do `A`'s attempt: the machinery shared by the receive and send
/// futures and the stream. Pinned: `node` may be linked into the queue's waiter list, and
/// `nap` is the timer's sleep, which may need pinning too.
pub(crate) struct Waited<A: Attempt, Tm: Timer> {
    op: A,
    timer: Tm,
    /// How long to wait (`None`: for ever).
    wait: Option<Duration>,
    /// When the wait ends, counted from the first look after the yields (read then, so that
    /// a receive that finds a message at once, or within the yields, reads no clock).
    ends_at: Option<Instant>,
    /// Yields made in this wait (see [`YIELDS_BEFORE_WAITING`]).
    yields: u32,
    node: WaitNode,
    /// Whether `node` may be in the list (registered since the last finish).
    registered: bool,
    /// The current nap and when it ends.
    nap: Option<Tm::Sleep>,
    nap_ends_at: Option<Instant>,
}

impl<A: Attempt, Tm: Timer> Waited<A, Tm> {
    pub(crate) fn new(op: A, wait: Duration, timer: Tm) -> Self {
        Self {
            op,
            timer,
            wait: Some(wait),
            ends_at: None,
            yields: 0,
            node: WaitNode::new(),
            registered: false,
            nap: None,
            nap_ends_at: None,
        }
    }

    /// A wait that never runs out (for a stream).
    pub(crate) fn endless(op: A, timer: Tm) -> Self {
        let mut waited = Self::new(op, Duration::ZERO, timer);
        waited.wait = None;
        waited
    }

    pub(crate) fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
        // SAFETY: `node` and `nap` are only ever used pinned (below and in `Drop`), and
        // nothing is moved out of `self`.
        let Self {
            op,
            timer,
            wait,
            ends_at,
            yields,
            node,
            registered,
            nap,
            nap_ends_at,
        } = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above: `node` stays where it is until `self` is dropped.
        let node = unsafe { Pin::new_unchecked(&*node) };
        // SAFETY: as above for `nap`, which is only replaced in place (`Pin::set`).
        let mut nap = unsafe { Pin::new_unchecked(nap) };
        // Done (the attempt answered, or the wait ran out right after an attempt): unlinks
        // the node, keeping any wake-up it got (the attempt just made used it), and drops the
        // nap, ready for another wait (a stream's next item).
        let finish = |op: &A, registered: &mut bool, mut nap: Pin<&mut Option<Tm::Sleep>>| {
            if std::mem::take(registered) {
                op.side().cancel(node, false);
            }
            nap.set(None);
        };
        for _ in 0..LOOKS_PER_POLL {
            if let Some(done) = op.attempt() {
                finish(op, registered, nap);
                (*nap_ends_at, *ends_at, *yields) = (None, None, 0);
                return Poll::Ready(done);
            }
            // A zero wait gives up at once; any other first yields (reading no clock).
            if *wait == Some(Duration::ZERO) {
                finish(op, registered, nap);
                (*nap_ends_at, *ends_at, *yields) = (None, None, 0);
                return Poll::Ready(op.give_up());
            }
            if !*registered && !cfg!(loom) && *yields < YIELDS_BEFORE_WAITING {
                *yields += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let left = match wait {
                None => LONGEST_NAP,
                Some(length) => match ends_at.or_else(|| Instant::now().checked_add(*length)) {
                    Some(end) => {
                        *ends_at = Some(end);
                        end.saturating_duration_since(Instant::now())
                    }
                    None => {
                        *wait = None; // beyond the clock's range: for ever
                        LONGEST_NAP
                    }
                },
            };
            if left.is_zero() {
                finish(op, registered, nap);
                (*nap_ends_at, *ends_at, *yields) = (None, None, 0);
                return Poll::Ready(op.give_up());
            }
            let planned = op.nap(left.min(LONGEST_NAP));
            if !op
                .side()
                .register(node, cx.waker(), || op.should_wake(planned.next_due))
            {
                continue;
            }
            *registered = true;
            let ends = Instant::now().checked_add(planned.length);
            let sooner = match (ends, *nap_ends_at) {
                (Some(ends), Some(current)) => ends + NAP_SLACK < current,
                (ends, current) => ends < current,
            };
            if nap.is_none() || sooner {
                nap.set(Some(timer.sleep(planned.length)));
                *nap_ends_at = ends;
            }
            let slept = nap.as_mut().as_pin_mut().map(|sleep| sleep.poll(cx));
            if slept != Some(Poll::Ready(())) {
                return Poll::Pending;
            }
            // The nap is over: a deadline may be due, or the wait over. Look again.
            nap.set(None);
            *nap_ends_at = None;
        }
        // Something to do each time, yet nothing done (say, the wheel held by a descheduled
        // thread): let the executor run others and come back. Under loom the other threads
        // run only at a yield, so this is one (a real executor thread is not yielded).
        if cfg!(loom) {
            yield_now();
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<A: Attempt, Tm: Timer> Drop for Waited<A, Tm> {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: `self` was pinned while it could be registered, and is dropped in place.
            let node = unsafe { Pin::new_unchecked(&self.node) };
            self.op.side().cancel(node, true);
        }
    }
}
