//! Worker pools: threads that receive, run a handler and settle, with retries, heartbeats and a
//! graceful stop. Built on [`Lease`] over the public API of a [`Queue`] or of any [`Backend`]:
//! one pool, generic over its [`ConsumerSource`] (the in-process queue, or `dyn Backend`).
//!
//! # A lease, from its receive to its settlement
//!
//! Each worker has a set of receipts in `Shared::held`, which the heartbeat thread extends
//! (`change_visibility` by the pool's timeout) once its oldest is `fraction` of a timeout
//! old. The rules that keep every lease covered, however long a batch gathers, a prefetch
//! waits or a handler runs:
//!
//! * **Covered from its receive.** Every receive call's deliveries join the set as
//!   soon as the call returns, also while a batch is still gathering, and are dated by a pool
//!   clock reading taken *before* the call: the queue started the lease at or after that
//!   reading, so the heartbeat can only be early, never late. The set's date is the earliest
//!   of its members' (`Held::renewed_at`), and an extension re-dates the whole set from a
//!   reading taken before it extends.
//! * **Scheduled on the shorter timeout.** The first lease is the queue's (on a backend the
//!   pool asks for its own), later ones the pool's, so the heartbeat fires at `fraction` of
//!   the shorter of the two. A zero pool
//!   timeout is refused by `start` (it would make every extension a release).
//! * **Out of the set before it is settled** (`Holding::take`), so the heartbeat never
//!   changes the visibility of a lease a worker is settling.
//! * **Given back unused when nobody started it.** What a stopping worker received but did
//!   not start goes back by [`Queue::hand_back`], not by a release: its receive is not
//!   charged, so it is never dead-lettered for an attempt nobody made (on a backend that
//!   charges every hand-back this is the one rule that cannot hold: see [`Consumer`]).
//!
//! A worker survives panics outside the handler too: a body's `Clone` panicking in a receive
//! (the queue puts that message back; the worker keeps what the call had received and waits
//! `poll_wait` before receiving again, so a body that always panics is no hot loop) and a
//! body's `Drop` panicking as a settled lease is dropped (the settlement has happened; the
//! rest of the chunk is settled as usual). Both are counted in
//! [`ConsumerStats::body_panics`].
//!
//! The pool's dead-letter limit must be the queue's: the pool releases a message at once on
//! its last receive only because the queue then moves it to its dead-letter queue (on a
//! backend, it sends it there with [`Backend::dead_letter`]). A limit the
//! queue does not share would redeliver it at once, with no backoff (a hot loop), so `start`
//! refuses it.
//!
//! # On a backend
//!
//! What the pool does where a backend cannot do something is documented on [`Consumer`]
//! (section "On a backend"), where users read it.
//!
//! # Stopping
//!
//! [`Consumer::stop`] and the drop wait for the workers to exit, which a worker cannot do for
//! itself: called from one of the pool's own workers (a handler stopping its pool), they only
//! stop receiving and return at once (a thread-local names the pool a worker thread belongs
//! to). The heartbeat then runs until the last worker exits. After a `stop`, the drop does not
//! wait again: the stop's deadline bounds the shutdown.

use super::dedup::{Fnv, IdWindow, Recorded, DEFAULT_CONTENTION_WAIT};
use super::lease::LeaseSource;
use super::{lock, Clock};
use crate::{
    Backend, BackendError, Delivery, Feature, Incoming, Lease, ManualClock, Nack, Queue,
    MAX_TIMEOUT,
};
use std::any::Any;
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::marker::PhantomData;
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
    pub(crate) fn jittered(&self, failures: u32, unit: f64) -> Duration {
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        self.delay(failures).mul_f64(1.0 - jitter * unit)
    }

    /// The fate of an attempt that failed on the message's `receive_count`th receive: the
    /// dead-letter queue on its last receive (`max_receives`), else a retry after the
    /// jittered backoff. Both pools decide by this.
    pub(crate) fn after_failure(
        &self,
        receive_count: u32,
        max_receives: Option<u32>,
        random: &mut XorShift,
    ) -> Retry {
        if is_last_receive(receive_count, max_receives) {
            Retry::GiveUp
        } else {
            Retry::After(self.jittered(receive_count, random.unit()))
        }
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
    /// dead-letter queue (on a backend: sent there by [`Backend::dead_letter`]).
    pub dead_lettered: u64,
    /// Failures that were panics (also counted in `failed`).
    pub panicked: u64,
    /// Lease extensions made by the heartbeat.
    pub extended: u64,
    /// Messages received but not started when the pool stopped, given back at once with
    /// [`Queue::hand_back`]: their receive is not charged against the dead-letter limit (on a
    /// backend, [`Backend::hand_back`]: charged where the backend cannot do otherwise). A
    /// lease that had already expired (the queue redelivers it) is not counted here.
    pub released_unstarted: u64,
    /// Settlements the queue refused because the lease had already ended (it expired, so the
    /// message will be, or was, delivered again).
    pub lease_lost: u64,
    /// Panics of a body's `Clone` (in a receive) or `Drop` (as a settled lease is dropped)
    /// that a worker caught and survived; see [`Consumer`].
    pub body_panics: u64,
    /// Receive calls a backend failed (transient or not), each followed by a backoff; see
    /// the module docs. Always 0 on a [`Queue`].
    pub receive_errors: u64,
    /// Settlements a backend refused for another reason than a lease already gone (a
    /// transient or fatal error; those are in `lease_lost`). Always 0 on a [`Queue`].
    pub settle_errors: u64,
    /// Failed messages whose backoff the worker waited out itself, holding the lease, on a
    /// backend that cannot delay a nack (then released; also counted in `retried`). Always 0
    /// on a [`Queue`].
    pub backoffs_waited: u64,
    /// With [`ConsumerBuilder::exactly_once`]: deliveries of a message whose handler had
    /// already succeeded within the window, settled (deleted) without running the handler.
    /// Always 0 without it.
    pub duplicates_skipped: u64,
    /// With [`ConsumerBuilder::exactly_once`]: successes the window could not remember (its
    /// table had no room for the id, or another worker's recording of the same id stayed in
    /// flight past 10 ms). Such a message is deleted as usual, but should that delete lose
    /// to expiry, its redelivery would run the handler again. Always 0 without it.
    pub successes_unremembered: u64,
}

/// What a [`Consumer`] runs on: the in-process [`Queue<T>`] or `dyn Backend<Body = T>`
/// (sealed, like [`LeaseSource`]). Its methods are the crate's own.
pub trait ConsumerSource<T>: LeaseSource<T> + Send + Sync {
    /// Receives up to `max` into `out`, waiting up to `wait` (at most
    /// [`ConsumerSource::max_wait`]); leased for `visibility` (`None`: the source's default),
    /// where the source takes one (a [`Queue`] leases for its own timeout).
    #[doc(hidden)]
    fn receive_into(
        &self,
        out: &mut Vec<Self::Delivery>,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<usize, BackendError>;
    /// The delivery's message id as the exactly-once window remembers it.
    #[doc(hidden)]
    fn message_key(delivery: &Self::Delivery) -> u64;
    /// The longest wait one receive may make.
    #[doc(hidden)]
    fn max_wait(&self) -> Duration;
    /// The first lease a receive gives, for a pool whose own timeout is `pool`.
    #[doc(hidden)]
    fn first_lease(&self, pool: Duration) -> Duration;
    /// The most one receive may ask for, and so the largest batch.
    #[doc(hidden)]
    fn max_batch(&self) -> usize;
    /// The longest visibility timeout the pool may ask for.
    #[doc(hidden)]
    fn max_visibility(&self) -> Duration;
    /// Whether leases end by themselves, and so need a heartbeat.
    #[doc(hidden)]
    fn leases_expire(&self) -> bool;
    /// Whether a lease can be extended (the heartbeat).
    #[doc(hidden)]
    fn can_extend(&self) -> bool;
    /// Whether a nack can be delayed (the backoff) by moving the lease's deadline.
    #[doc(hidden)]
    fn can_delay_nack(&self) -> bool;
    /// The dead-letter limit.
    #[doc(hidden)]
    fn dead_letter_limit(&self) -> Option<u32>;
    /// Whether the source has stopped for good.
    #[doc(hidden)]
    fn is_closed(&self) -> bool;
    /// Ends a lease on its last receive: to the dead-letter queue, with `reason`.
    #[doc(hidden)]
    fn give_up(&self, receipt: &Self::Receipt, reason: Option<String>) -> Result<(), Self::Error>;
}

impl<T: Clone + Send> ConsumerSource<T> for Queue<T> {
    fn message_key(delivery: &Delivery<T>) -> u64 {
        delivery.id().get()
    }

    fn receive_into(
        &self,
        out: &mut Vec<Self::Delivery>,
        max: usize,
        wait: Duration,
        _visibility: Option<Duration>,
    ) -> Result<usize, BackendError> {
        Ok(self.receive_batch(out, max, wait))
    }

    fn max_wait(&self) -> Duration {
        MAX_TIMEOUT
    }

    fn first_lease(&self, _pool: Duration) -> Duration {
        self.visibility_timeout()
    }

    fn max_batch(&self) -> usize {
        self.capacity()
    }

    fn max_visibility(&self) -> Duration {
        MAX_TIMEOUT
    }

    fn leases_expire(&self) -> bool {
        true
    }

    fn can_extend(&self) -> bool {
        true
    }

    fn can_delay_nack(&self) -> bool {
        true
    }

    fn dead_letter_limit(&self) -> Option<u32> {
        self.max_receives()
    }

    fn is_closed(&self) -> bool {
        Queue::is_closed(self)
    }

    /// A release with the reason: the queue moves the message to its dead-letter queue.
    fn give_up(&self, receipt: &Self::Receipt, reason: Option<String>) -> Result<(), Self::Error> {
        let nack = Nack {
            delay: Duration::ZERO,
            reason: reason.map(Cow::Owned),
        };
        self.nack(*receipt, nack)
    }
}

impl<T: Send + 'static> ConsumerSource<T> for dyn Backend<Body = T> {
    /// An in-process id as is; a broker's id by its [`dedup_hash`](crate::dedup_hash), hashed
    /// from its `Display` without allocating.
    fn message_key(delivery: &Incoming<T>) -> u64 {
        if let Some(id) = delivery.id.as_local() {
            return id.get();
        }
        let mut hash = Fnv::default();
        // Writing into `Fnv` cannot fail.
        let _ = write!(hash, "{}", delivery.id);
        hash.0
    }

    fn receive_into(
        &self,
        out: &mut Vec<Incoming<T>>,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<usize, BackendError> {
        self.receive(out, max, wait, visibility)
    }

    fn max_wait(&self) -> Duration {
        self.capabilities().max_wait
    }

    fn first_lease(&self, pool: Duration) -> Duration {
        pool
    }

    fn max_batch(&self) -> usize {
        self.capabilities().max_batch.max(1)
    }

    fn max_visibility(&self) -> Duration {
        self.capabilities().max_visibility
    }

    fn leases_expire(&self) -> bool {
        self.capabilities().leases_expire
    }

    fn can_extend(&self) -> bool {
        self.capabilities().extend_lease
    }

    fn can_delay_nack(&self) -> bool {
        let capabilities = self.capabilities();
        capabilities.extend_lease && capabilities.shorten_lease
    }

    fn dead_letter_limit(&self) -> Option<u32> {
        Backend::dead_letter_limit(self)
    }

    fn is_closed(&self) -> bool {
        Backend::is_closed(self)
    }

    /// [`Backend::dead_letter`] with the reason; a release where the backend has no such
    /// call, for its own limit to act on.
    fn give_up(&self, receipt: &Self::Receipt, reason: Option<String>) -> Result<(), Self::Error> {
        let reason = reason.as_deref().unwrap_or("failed on its last receive");
        match self.dead_letter(receipt, reason) {
            Err(BackendError::Unsupported(Feature::DeadLetter)) => self.release(receipt),
            settled => settled,
        }
    }
}

/// The handler as the workers see it: a chunk of leases in, one success flag per lease out.
/// A single-message handler sees chunks of one.
/// A handler's verdict on one lease: on failure, the error's text if the message is on its
/// last receive (it becomes the dead letter's reason), `None` otherwise (no text is made).
type Outcome = Result<(), Option<String>>;
type Handler<T, S> = dyn Fn(&[Lease<'_, T, S>], &mut Vec<Outcome>) + Send + Sync;

/// Settings for a [`Consumer`]; made by [`Consumer::builder`] (a [`Queue`]) or
/// [`Consumer::backend_builder`] (any [`Backend`]).
pub struct ConsumerBuilder<T, S: ?Sized + LeaseSource<T> = Queue<T>> {
    queue: Arc<S>,
    /// The handlers' body type (`S` names it only through its trait).
    body: PhantomData<fn(&T)>,
    workers: usize,
    visibility_timeout: Duration,
    max_receives: Option<u32>,
    backoff: Backoff,
    heartbeat: f64,
    poll_wait: Duration,
    prefetch: usize,
    clock: Option<ManualClock>,
    /// [`ConsumerBuilder::exactly_once`]: how many ids, for how long.
    exactly_once: Option<(usize, Duration)>,
}

impl<T, S: ?Sized + LeaseSource<T>> fmt::Debug for ConsumerBuilder<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("workers", &self.workers)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("max_receives", &self.max_receives)
            .field("backoff", &self.backoff)
            .field("heartbeat", &self.heartbeat)
            .field("poll_wait", &self.poll_wait)
            .field("prefetch", &self.prefetch)
            .field("exactly_once", &self.exactly_once)
            .finish_non_exhaustive()
    }
}

impl<T, S> ConsumerBuilder<T, S>
where
    T: Send + 'static,
    S: ?Sized + ConsumerSource<T> + 'static,
{
    /// How many worker threads (default 1, at least 1, at most 4,096: [`ConsumerBuilder::start`]
    /// refuses more with [`io::ErrorKind::InvalidInput`]).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The lease length the heartbeat works with: the length of each extension (default: the
    /// queue's [`Queue::visibility_timeout`]). The heartbeat is scheduled on the shorter of this
    /// and the queue's timeout, which gives each message its first lease. Zero is refused by
    /// [`ConsumerBuilder::start`] with [`io::ErrorKind::InvalidInput`].
    ///
    /// On a backend it is also each receive's lease (default 30 s); one over the backend's
    /// [`Capabilities::max_visibility`](crate::Capabilities::max_visibility) is refused by
    /// `start`. Where leases do not expire it is not used (and not checked).
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout.min(MAX_TIMEOUT);
        self
    }

    /// The queue's dead-letter `max_receives` (default: the queue's [`Queue::max_receives`], a
    /// backend's [`Backend::dead_letter_limit`]).
    /// A message that fails on its
    /// `max_receives`-th receive is released at once, without backoff, for the queue to move to
    /// its dead-letter queue, and counted in [`ConsumerStats::dead_lettered`]. Without it,
    /// every failure backs off.
    ///
    /// It must be the queue's own limit: [`ConsumerBuilder::start`] refuses any other value
    /// (or any value on a queue without a dead-letter queue) with
    /// [`io::ErrorKind::InvalidInput`], because the queue would deliver such a "last"
    /// failure again at once.
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

    /// How long each receive long-polls (default 100 ms, at least 1 ms, wall-clock; at most a
    /// backend's [`Capabilities::max_wait`](crate::Capabilities::max_wait)). A stop is noticed
    /// within this time.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait.max(Duration::from_millis(1));
        self
    }

    /// How many messages a single-message worker receives at once (default 1, at least 1, at
    /// most the queue's capacity or a backend's
    /// [`Capabilities::max_batch`](crate::Capabilities::max_batch)). The ones not yet started
    /// are heartbeated like the running one, and given back unused by a stop
    /// ([`Queue::hand_back`], [`Backend::hand_back`]).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// The queue's [`ManualClock`], if it has one: the heartbeat measures lease ages on it.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Exactly-once processing (an idempotent consumer): the pool remembers, for `window`, the
    /// id of each message whose handler succeeded, up to `capacity` ids at once, and settles a
    /// later delivery of a remembered message (deletes it) without running the handler again,
    /// counted in [`ConsumerStats::duplicates_skipped`].
    ///
    /// The case it covers: a handler succeeded, but its delete lost the race with the lease's
    /// expiry (a slow handler, a paused process), so the queue delivers the message again.
    /// The id is remembered *before* the delete, so such a redelivery, received at any time
    /// within `window` of the success, is skipped. The guarantee, exactly: the handler runs at
    /// most once for a message among the deliveries received within `window` after its first
    /// success was remembered. Not covered, so the handler may still run twice: a redelivery
    /// received while the first run is still going (its lease expired mid-run, with the
    /// heartbeat off or late), one received after `window` has passed (documented: it runs
    /// again, and a success is remembered anew), and a success the window could not remember
    /// ([`ConsumerStats::successes_unremembered`]). A failed or panicking handler is not
    /// remembered: the message is retried as usual.
    ///
    /// Ids are the messages' own: [`MessageId`](crate::MessageId) on a [`Queue`]; on a
    /// backend the [`MessageKey`](crate::MessageKey), an in-process id as is, a broker's id
    /// by its 64-bit [`dedup_hash`](crate::dedup_hash) (two ids colliding, about 2^-64 per
    /// pair, would make the second look like a duplicate). A message *sent twice* is two
    /// messages with two ids: pair this with [`DedupQueue`](crate::DedupQueue) for sends.
    ///
    /// Memory: the dedup table's, sized by `capacity` as
    /// [`DedupBuilder::capacity`](crate::DedupBuilder::capacity) describes (4 buckets of 40
    /// bytes per id, rounded up to a power of two), allocated by `start`; nothing is
    /// allocated per message and no lock is taken. Time is the pool's clock
    /// ([`ConsumerBuilder::clock`]). A zero `capacity` or `window`, or a capacity too large
    /// to allocate, is refused by `start` with [`io::ErrorKind::InvalidInput`].
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use visq::{Consumer, Queue};
    ///
    /// let q: Arc<Queue<u32>> = Arc::new(Queue::builder().build()?);
    /// let consumer = Consumer::builder(q.clone())
    ///     .exactly_once(1024, Duration::from_secs(600))
    ///     .start(|_: &u32| Ok::<(), &str>(()))?;
    /// q.send(1).unwrap();
    /// while consumer.stats().processed < 1 {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// consumer.stop(Duration::from_secs(5));
    /// assert_eq!(consumer.stats().duplicates_skipped, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exactly_once(mut self, capacity: usize, window: Duration) -> Self {
        self.exactly_once = Some((capacity, window));
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
    pub fn start<E, F>(self, handler: F) -> io::Result<Consumer<T, S>>
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

    /// Starts the pool with a handler for batches: up to `size` messages (at most the queue's
    /// capacity or a backend's [`Capabilities::max_batch`](crate::Capabilities::max_batch)),
    /// or whatever arrived within `max_wait` (wall-clock) of the first. Leases are
    /// heartbeated from their receive, also while the batch gathers. The handler returns one
    /// outcome per lease, in order; each is settled on its own, and a lease without an outcome
    /// counts as failed. A panic fails the whole batch.
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
    ) -> io::Result<Consumer<T, S>>
    where
        E: fmt::Display,
        F: Fn(&[Lease<'_, T, S>]) -> Vec<Result<(), E>> + Send + Sync + 'static,
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

    /// Refuses settings the pool cannot work with; see each setting.
    fn check(&self) -> io::Result<()> {
        let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        if self.workers > MAX_WORKERS {
            return invalid(format!(
                "{} workers: at most {MAX_WORKERS} are allowed",
                self.workers
            ));
        }
        // Where leases do not expire the pool neither asks for nor extends one: any value does.
        let leases_expire = self.queue.leases_expire();
        if leases_expire && self.visibility_timeout.is_zero() {
            return invalid("a zero visibility timeout: every extension would release".into());
        }
        let most = self.queue.max_visibility();
        if leases_expire && self.visibility_timeout > most {
            return invalid(format!(
                "a visibility timeout of {:?}: the backend allows at most {most:?}",
                self.visibility_timeout
            ));
        }
        let queues = self.queue.dead_letter_limit();
        if self.max_receives != queues {
            return invalid(format!(
                "max_receives {:?} is not the queue's dead-letter limit ({queues:?}): the \
                 queue would deliver each last failure again at once",
                self.max_receives
            ));
        }
        Ok(())
    }

    fn spawn(self, fetch: Fetch, handler: Box<Handler<T, S>>) -> io::Result<Consumer<T, S>> {
        self.check()?;
        let succeeded = self
            .exactly_once
            .map(|(capacity, window)| {
                IdWindow::new(
                    capacity,
                    window,
                    DEFAULT_CONTENTION_WAIT,
                    self.clock.clone(),
                )
            })
            .transpose()
            .map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("exactly_once: {e}"))
            })?;
        // The first lease is the queue's, every extension the pool's: keep up with the shorter.
        let lease = self
            .visibility_timeout
            .min(self.queue.first_lease(self.visibility_timeout));
        // No heartbeat where leases do not expire (nothing to extend) or cannot be extended.
        let heartbeat_on = self.heartbeat > 0.0
            && self.heartbeat < 1.0
            && self.queue.leases_expire()
            && self.queue.can_extend();
        let heartbeat_after = heartbeat_on.then(|| lease.mul_f64(self.heartbeat));
        let most = self.queue.max_batch();
        let fetch = Fetch {
            max: fetch.max.min(most),
            chunk: fetch.chunk.min(most),
            ..fetch
        };
        let delay_nacks = self.queue.can_delay_nack();
        // Where leases do not expire, ask for none.
        let receive_visibility = self
            .queue
            .leases_expire()
            .then_some(self.visibility_timeout);
        let poll_wait = self
            .poll_wait
            .min(self.queue.max_wait())
            .max(Duration::from_millis(1));
        let shared = Arc::new(Shared {
            delay_nacks,
            receive_visibility,
            queue: self.queue,
            handler,
            fetch,
            poll_wait,
            visibility_timeout: self.visibility_timeout,
            max_receives: self.max_receives,
            backoff: self.backoff,
            clock: Clock::new(self.clock),
            succeeded,
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
            stopped: AtomicBool::new(false),
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
///   does not end the worker, and neither does a body's `Clone` or `Drop` panicking in a
///   receive or a settlement (counted in [`ConsumerStats::body_panics`]);
/// * a *heartbeat* thread extends the leases a worker holds, from their receive on (also
///   while a batch gathers or a prefetched message waits), once they are older than a
///   fraction of the visibility timeout, so a slow handler keeps its message;
/// * [`Consumer::stop`] stops receiving, lets running handlers finish within a deadline and
///   gives back whatever was received but not started, uncharged ([`Queue::hand_back`]).
/// * with [`ConsumerBuilder::exactly_once`], a message whose handler already succeeded
///   within the window (its delete lost to expiry) is deleted when delivered again, without
///   running the handler ([`ConsumerStats::duplicates_skipped`]).
///
/// The pool takes the queue's visibility timeout and dead-letter limit from the queue (and
/// refuses a dead-letter limit of its own that differs); a test
/// that drives the queue with a [`ManualClock`] also gives it to the pool
/// with [`ConsumerBuilder::clock`].
///
/// # On a backend
///
/// [`Consumer::backend_builder`] runs the same pool on any `Arc<dyn Backend<Body = T>>` (a
/// broker adapter, a [`Typed`](crate::Typed) layer over one, or the in-process queue seen
/// through the trait). The pool reads the backend's [`Capabilities`](crate::Capabilities) once,
/// at start, and degrades as follows, never silently:
///
/// * **Leases.** Each receive asks for the pool's visibility timeout (default 30 s, at most
///   `max_visibility`: a longer one is refused by `start`). Where leases do not expire
///   (`leases_expire == false`, RabbitMQ: a delivery is held until settled or its connection
///   closes) no visibility is asked for and no heartbeat runs: there is nothing to extend.
///   Where leases expire but cannot be extended, no heartbeat runs either, and a handler
///   slower than the visibility timeout loses its lease (counted in
///   [`ConsumerStats::lease_lost`] when it settles).
/// * **Backoff.** Where a lease cannot be moved (`extend_lease` and `shorten_lease` both
///   needed, as a delayed nack may be shorter or longer than the lease), the failing worker
///   waits the backoff out itself, holding the message, then releases it (counted in
///   [`ConsumerStats::backoffs_waited`]). A stop cuts the wait short. The pool then works one
///   worker short for the length of the wait, but a failing message never bounces straight
///   back (a hot loop on the broker).
/// * **Last failure.** On the last receive before the backend's dead-letter limit
///   ([`Backend::dead_letter_limit`], which a pool's `max_receives` must equal), the message
///   goes to [`Backend::dead_letter`] with the handler's error as the reason; where that is
///   [`Feature::DeadLetter`]-unsupported, it is released for the backend's own limit to act.
///   The receive count is [`ReceiveCount::at_least`](crate::ReceiveCount::at_least): an
///   approximate count (SQS) may make a last attempt look like an earlier one (the backend's
///   redrive policy still moves it), and a bare "redelivered" flag never reaches a limit above
///   2, so such a message backs off and the broker's own limit moves it.
/// * **Hand-back.** Unstarted work goes back by [`Backend::hand_back`]; where
///   `uncharged_hand_back` is false (the brokers) that is a release and the receive counts
///   towards the dead-letter limit: keep `prefetch` at 1 there if that matters.
/// * **Errors.** A receive that fails ([`BackendError::is_transient`] or not) is counted in
///   [`ConsumerStats::receive_errors`] and followed by the pool's [`Backoff`] (by consecutive
///   failures, at least `poll_wait`, cut short by a stop): no crash, no hot loop. A settlement
///   refused because the lease is gone counts in `lease_lost`, as in process; any other
///   refusal (a transient or fatal backend error) in [`ConsumerStats::settle_errors`]; the
///   message then comes back when its lease runs out.
///
/// The in-process pool ([`Consumer::builder`]) is the same code with [`Queue`] as the source:
/// its receive buffers and leases allocate nothing per message.
///
/// # Dropping
///
/// Dropping a consumer stops it like [`Consumer::stop`] without a deadline: it waits for the
/// running handlers, unless [`Consumer::stop`] was called already (its deadline bounds the
/// shutdown; the drop does not wait again). Called from one of the pool's own handlers (a
/// handler that shuts its pool down), `stop` and the drop only stop receiving and return at
/// once: the calling worker finishes its handler and exits like the others.
pub struct Consumer<T, S: ?Sized + LeaseSource<T> = Queue<T>> {
    shared: Arc<Shared<T, S>>,
    /// Whether [`Consumer::stop`] was called, so that the drop does not wait again.
    stopped: AtomicBool,
}

impl<T: Clone + Send + 'static> Consumer<T> {
    /// Settings for a pool over `queue`, with the defaults documented on each setting.
    pub fn builder(queue: Arc<Queue<T>>) -> ConsumerBuilder<T> {
        let visibility_timeout = queue.visibility_timeout();
        ConsumerBuilder::new(queue, visibility_timeout)
    }
}

impl<T: Send + 'static> Consumer<T, dyn Backend<Body = T>> {
    /// Settings for a pool over any backend, with the defaults documented on each setting
    /// (the visibility timeout is 30 s, or the backend's longest if that is shorter). The
    /// handlers see [`BackendLease`](crate::BackendLease)s; what the pool does where the
    /// backend cannot do something is in [`Consumer`]'s docs, section "On a backend".
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use visq::{Backend, Consumer, Outgoing, Queue};
    ///
    /// // Any backend: a broker adapter, or (here) the in-process queue through the trait.
    /// let backend: Arc<dyn Backend<Body = u32>> = Arc::new(Queue::builder().build()?);
    /// for n in 0..10 {
    ///     backend.send(Outgoing::new(n)).unwrap();
    /// }
    /// let consumer = Consumer::backend_builder(backend.clone())
    ///     .workers(2)
    ///     .start(|n: &u32| if n % 2 == 0 { Ok(()) } else { Err("odd") })?;
    /// while consumer.stats().processed + consumer.stats().failed < 10 {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// assert!(consumer.stop(Duration::from_secs(5)));
    /// assert_eq!(consumer.stats().processed, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backend_builder(
        backend: Arc<dyn Backend<Body = T>>,
    ) -> ConsumerBuilder<T, dyn Backend<Body = T>> {
        let capabilities = backend.capabilities();
        let visibility_timeout = if capabilities.leases_expire {
            DEFAULT_BACKEND_VISIBILITY.min(capabilities.max_visibility)
        } else {
            DEFAULT_BACKEND_VISIBILITY
        };
        ConsumerBuilder::new(backend, visibility_timeout)
    }
}

/// A backend pool's visibility timeout unless set: SQS's default.
const DEFAULT_BACKEND_VISIBILITY: Duration = Duration::from_secs(30);

impl<T, S: ?Sized + ConsumerSource<T>> ConsumerBuilder<T, S> {
    /// The defaults, over `queue`.
    fn new(queue: Arc<S>, visibility_timeout: Duration) -> Self {
        Self {
            visibility_timeout,
            max_receives: queue.dead_letter_limit(),
            queue,
            body: PhantomData,
            workers: 1,
            backoff: Backoff::default(),
            heartbeat: 0.5,
            poll_wait: Duration::from_millis(100),
            prefetch: 1,
            clock: None,
            exactly_once: None,
        }
    }
}

impl<T, S: ?Sized + LeaseSource<T>> Consumer<T, S> {
    /// What the pool has done so far.
    pub fn stats(&self) -> ConsumerStats {
        self.shared.counters.snapshot()
    }

    /// Stops receiving, without waiting: each worker finishes the handler it runs, gives back
    /// what it received but did not start ([`Queue::hand_back`]), and exits. Leases stay
    /// heartbeated until [`Consumer::stop`] or until the last worker exits.
    pub fn stop_receiving(&self) {
        let shared = &self.shared;
        // Under the lifecycle lock, so that a worker waiting out a backoff
        // (`Shared::wait_unless_stopping`) either sees the flag or is woken.
        let lifecycle = shared.lifecycle();
        shared.stopping.store(true, Ordering::SeqCst);
        drop(lifecycle);
        shared.changed.notify_all();
    }

    /// Stops the pool gracefully: stops receiving, waits up to `deadline` (wall-clock) for the
    /// running handlers, gives back anything received but not started, then stops the
    /// heartbeat.
    ///
    /// Returns whether every worker finished in time. Handlers still running at the deadline
    /// are left to finish and settle on their own, but their leases are no longer extended: a
    /// handler that outlives its lease has its message delivered again elsewhere.
    ///
    /// Called from one of the pool's own handlers, it only stops receiving and returns `false`
    /// at once (a worker cannot wait for itself to exit).
    pub fn stop(&self, deadline: Duration) -> bool {
        self.stopped.store(true, Ordering::SeqCst);
        self.shutdown(Some(deadline))
    }

    fn shutdown(&self, deadline: Option<Duration>) -> bool {
        self.stop_receiving();
        let shared = &self.shared;
        if shared.is_this_threads_pool() {
            return false;
        }
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

impl<T, S: ?Sized + LeaseSource<T>> Drop for Consumer<T, S> {
    fn drop(&mut self) {
        if self.stopped.load(Ordering::SeqCst) {
            self.stop_receiving();
        } else {
            self.shutdown(None);
        }
    }
}

impl<T, S: ?Sized + LeaseSource<T>> fmt::Debug for Consumer<T, S> {
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
struct Shared<T, S: ?Sized + LeaseSource<T>> {
    queue: Arc<S>,
    handler: Box<Handler<T, S>>,
    fetch: Fetch,
    poll_wait: Duration,
    visibility_timeout: Duration,
    max_receives: Option<u32>,
    backoff: Backoff,
    /// Whether a failed lease's backoff is a delayed nack (else the worker waits it out).
    delay_nacks: bool,
    /// The visibility each receive asks for: the pool's, or none where leases do not expire.
    receive_visibility: Option<Duration>,
    clock: Clock,
    /// With [`ConsumerBuilder::exactly_once`]: the ids of the messages whose handler
    /// succeeded, for the window.
    succeeded: Option<IdWindow>,
    stopping: AtomicBool,
    /// Per worker, the receipts it holds (received, not yet settled). A receipt leaves this
    /// set, under its lock, before it is settled, so the heartbeat never changes the
    /// visibility of a lease that a worker is settling.
    held: Box<[Mutex<Held<S::Receipt>>]>,
    counters: Counters,
    lifecycle: Mutex<Lifecycle>,
    /// Signalled when `lifecycle` changes.
    changed: Condvar,
}

/// One worker's leases, for the heartbeat.
struct Held<R> {
    receipts: Vec<R>,
    /// No later than the earliest time any of `receipts` was received or last extended, on
    /// the pool's clock (see the module docs).
    renewed_at: Duration,
}

impl<R> Default for Held<R> {
    fn default() -> Self {
        Self {
            receipts: Vec::new(),
            renewed_at: Duration::ZERO,
        }
    }
}

/// The most worker threads a pool may have.
const MAX_WORKERS: usize = 4096;

thread_local! {
    /// The pool this thread is a worker of (the address of its `Shared`), or 0.
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

struct Lifecycle {
    live_workers: usize,
    heartbeat_on: bool,
}

impl<T, S: ?Sized + LeaseSource<T>> Shared<T, S> {
    fn lifecycle(&self) -> MutexGuard<'_, Lifecycle> {
        lock(&self.lifecycle)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// This pool's identity for [`WORKER_OF`].
    fn address(&self) -> usize {
        self as *const Self as *const () as usize
    }

    /// Whether the calling thread is one of this pool's workers.
    fn is_this_threads_pool(&self) -> bool {
        WORKER_OF.with(Cell::get) == self.address()
    }

    /// Runs `f`, catching a panic of a body's `Clone` or `Drop` outside the handler: counted,
    /// and `None` returned, so the worker carries on.
    fn survive<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let survived = catch_unwind(AssertUnwindSafe(f)).ok();
        if survived.is_none() {
            bump(&self.counters.body_panics);
        }
        survived
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
                for receipt in &held.receipts {
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

impl<T, S: ?Sized + ConsumerSource<T>> Shared<T, S> {
    /// One worker thread: receive, handle chunk by chunk, settle; on stop, release the rest.
    fn work(&self, index: usize) {
        WORKER_OF.with(|pool| pool.set(self.address()));
        let _exit = WorkerExit(self);
        let mut received = Vec::with_capacity(self.fetch.max);
        let mut holding = Holding {
            shared: self,
            index,
            leases: Vec::with_capacity(self.fetch.max),
        };
        let mut outcomes = Vec::with_capacity(self.fetch.chunk);
        let mut random = XorShift::seeded(index);
        let mut receive_failures = 0;
        while !self.stopping() {
            self.receive(
                &mut holding,
                &mut received,
                &mut receive_failures,
                &mut random,
            );
            while !holding.leases.is_empty() && !self.stopping() {
                self.skip_duplicates(&mut holding);
                if holding.leases.is_empty() {
                    break;
                }
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
                    let panicked = panic.is_some();
                    self.survive(|| self.settle(lease, outcome, panicked, &mut random));
                }
            }
        }
        // `holding` drops here and gives back what was received but not started.
    }

    /// Receives into the empty `holding`: long-polls for a first message, then gathers more
    /// for up to `fetch.gather`, waking at least every `poll_wait` to notice a stop. A failed
    /// first receive is followed by the pool's backoff (`failures` counts them in a row); a
    /// failed receive while gathering ends the gathering.
    fn receive(
        &self,
        holding: &mut Holding<'_, T, S>,
        received: &mut Vec<S::Delivery>,
        failures: &mut u32,
        random: &mut XorShift,
    ) {
        let max = self.fetch.max;
        match self.receive_into(holding, received, max, self.poll_wait) {
            Ok(taken) => {
                *failures = 0;
                if taken == 0 {
                    return;
                }
            }
            Err(()) => {
                *failures = failures.saturating_add(1);
                let wait = self.backoff.jittered(*failures, random.unit());
                self.wait_unless_stopping(wait.max(self.poll_wait));
                return;
            }
        }
        // `None`: gathering for longer than `Instant` can count, in effect forever.
        let end = Instant::now().checked_add(self.fetch.gather);
        while holding.leases.len() < max && !self.stopping() {
            let left = end.map_or(Duration::MAX, |end| {
                end.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                break;
            }
            let wanted = max - holding.leases.len();
            let wait = left.min(self.poll_wait);
            if self.receive_into(holding, received, wanted, wait).is_err() {
                *failures = failures.saturating_add(1);
                break;
            }
        }
    }

    /// One receive of up to `max` (at most the source's batch), waiting up to `wait`, whose
    /// deliveries join `holding` (and the heartbeat's set) at once, dated from before the
    /// call; returns how many, or `Err` for a receive the backend failed (counted). A body's
    /// `Clone` panicking in it keeps what the call had received, and the worker waits
    /// `poll_wait` before it receives again; a closed queue with nothing visible is waited on
    /// for `wait` here, as its receive does not wait.
    fn receive_into(
        &self,
        holding: &mut Holding<'_, T, S>,
        received: &mut Vec<S::Delivery>,
        max: usize,
        wait: Duration,
    ) -> Result<usize, ()> {
        let since = self.clock.now();
        let max = max.min(self.fetch.max);
        let survived = self.survive(|| {
            self.queue
                .receive_into(received, max, wait, self.receive_visibility)
        });
        let taken = received.len();
        holding.add(received, since);
        match survived {
            None => thread::sleep(self.poll_wait),
            Some(Err(_)) => {
                bump(&self.counters.receive_errors);
                return Err(());
            }
            Some(Ok(_)) if taken == 0 && self.queue.is_closed() => {
                // A closed queue's receive returns at once when nothing is visible. What is
                // leased or delayed may still become visible, so keep polling, but at an open
                // queue's pace: an idle worker must not spin.
                thread::sleep(wait);
            }
            Some(Ok(_)) => {}
        }
        Ok(taken)
    }

    /// Waits up to `wait` (wall-clock), or until the pool stops receiving.
    fn wait_unless_stopping(&self, wait: Duration) {
        let end = Instant::now().checked_add(wait);
        let mut lifecycle = self.lifecycle();
        while !self.stopping() {
            let left = end.map_or(Duration::MAX, |end| {
                end.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                break;
            }
            let waited = self.changed.wait_timeout(lifecycle, left);
            lifecycle = waited.unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Settles one lease by its handler's outcome.
    fn settle(
        &self,
        lease: Lease<'_, T, S>,
        outcome: Outcome,
        panicked: bool,
        random: &mut XorShift,
    ) {
        let counters = &self.counters;
        let settled = match outcome {
            Ok(()) => {
                bump(&counters.processed);
                // Remembered before the delete, which may lose to expiry (see
                // `ConsumerBuilder::exactly_once`).
                self.remember_success(&lease);
                lease.ack()
            }
            Err(reason) => self.fail(lease, reason, panicked, random),
        };
        self.count_settle_error(settled.err());
    }

    /// Counts a settlement the source refused: the lease was gone, or another error.
    fn count_settle_error(&self, error: Option<S::Error>) {
        if let Some(error) = error {
            if S::lease_gone(&error) {
                bump(&self.counters.lease_lost);
            } else {
                bump(&self.counters.settle_errors);
            }
        }
    }

    /// With [`ConsumerBuilder::exactly_once`], settles (deletes) each lease of the next chunk
    /// whose message's handler already succeeded within the window, without running the
    /// handler; the leases after it move up into the chunk and are looked at in turn. Each
    /// lease is looked up just before its chunk runs, the latest moment.
    fn skip_duplicates(&self, holding: &mut Holding<'_, T, S>) {
        let Some(succeeded) = &self.succeeded else {
            return;
        };
        let mut index = 0;
        while index < self.fetch.chunk.min(holding.leases.len()) {
            if succeeded
                .lookup(S::message_key(&holding.leases[index]))
                .is_none()
            {
                index += 1;
                continue;
            }
            let duplicate = holding.remove(index);
            bump(&self.counters.duplicates_skipped);
            let settled = self.survive(|| duplicate.ack());
            self.count_settle_error(settled.and_then(Result::err));
        }
    }

    /// With [`ConsumerBuilder::exactly_once`], remembers that `lease`'s handler succeeded.
    fn remember_success(&self, lease: &Lease<'_, T, S>) {
        let Some(succeeded) = &self.succeeded else {
            return;
        };
        let recorded = succeeded.record(S::message_key(lease), (), |()| Ok::<u64, Infallible>(0));
        match recorded {
            // Already remembered: a run that overlapped another's (see the option's docs).
            Recorded::New(_) | Recorded::Duplicate(_) => {}
            Recorded::TableFull(()) | Recorded::Contended(()) => {
                bump(&self.counters.successes_unremembered);
            }
            Recorded::Failed(never) => match never {},
        }
    }

    /// Gives a failed lease back: after a backoff, or, on its last receive, to the dead-letter
    /// queue with `reason`.
    fn fail(
        &self,
        lease: Lease<'_, T, S>,
        reason: Option<String>,
        panicked: bool,
        random: &mut XorShift,
    ) -> Result<(), S::Error> {
        let counters = &self.counters;
        bump(&counters.failed);
        if panicked {
            bump(&counters.panicked);
        }
        let retry = self
            .backoff
            .after_failure(lease.receive_count(), self.max_receives, random);
        let Retry::After(delay) = retry else {
            return lease
                .settle(|source, receipt| source.give_up(receipt, reason))
                .map(|()| bump(&counters.dead_lettered));
        };
        if self.delay_nacks {
            lease.nack_after(delay).map(|()| bump(&counters.retried))
        } else {
            // The backend cannot hold the message back for us: hold it here, then release.
            bump(&counters.backoffs_waited);
            self.wait_unless_stopping(delay);
            lease.nack().map(|()| bump(&counters.retried))
        }
    }
}

/// The text of a handler's error, made only when `lease` is on its last receive (the text then
/// goes with the message to the dead-letter queue).
fn reason_if_last<T, S: ?Sized + LeaseSource<T>>(
    lease: &Lease<'_, T, S>,
    max_receives: Option<u32>,
    error: impl fmt::Display,
) -> Option<String> {
    is_last_attempt(lease, max_receives).then(|| error.to_string())
}

/// Whether `lease` is its message's last receive before the dead-letter queue takes over.
fn is_last_attempt<T, S: ?Sized + LeaseSource<T>>(
    lease: &Lease<'_, T, S>,
    max_receives: Option<u32>,
) -> bool {
    is_last_receive(lease.receive_count(), max_receives)
}

/// Whether a message received `receive_count` times is on its last receive before the
/// dead-letter queue takes over (`max_receives`, if there is one).
fn is_last_receive(receive_count: u32, max_receives: Option<u32>) -> bool {
    max_receives.is_some_and(|max| receive_count >= max)
}

/// What a pool (threaded or async) does with a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Retry {
    /// The last receive: the message goes to the dead-letter queue.
    GiveUp,
    /// Given back, to be visible again after this backoff.
    After(Duration),
}

/// What a caught panic said, as a dead letter's reason.
pub(crate) fn panic_reason(payload: &(dyn Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("the handler panicked: {message}")
}

/// A worker's unsettled leases, mirrored, in the same order, by its receipts in
/// `Shared::held` for the heartbeat. Dropping it gives back the leases that are left
/// (received, not started) unused, after taking them out of the heartbeat's sight.
struct Holding<'a, T, S: ?Sized + LeaseSource<T>> {
    shared: &'a Shared<T, S>,
    index: usize,
    leases: Vec<Lease<'a, T, S>>,
}

impl<'a, T, S: ?Sized + LeaseSource<T>> Holding<'a, T, S> {
    /// Takes over `received` (leased no earlier than `since`, on the pool's clock), emptying
    /// it.
    fn add(&mut self, received: &mut Vec<S::Delivery>, since: Duration) {
        if received.is_empty() {
            return;
        }
        let mut held = lock(&self.shared.held[self.index]);
        held.renewed_at = if held.receipts.is_empty() {
            since
        } else {
            held.renewed_at.min(since)
        };
        held.receipts.extend(received.iter().map(S::receipt));
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
    fn take(&mut self, n: usize) -> std::vec::Drain<'_, Lease<'a, T, S>> {
        lock(&self.shared.held[self.index]).receipts.drain(..n);
        self.leases.drain(..n)
    }

    /// The lease at `index`, to settle: out of the heartbeat's sight first, as for
    /// [`Holding::take`].
    fn remove(&mut self, index: usize) -> Lease<'a, T, S> {
        lock(&self.shared.held[self.index]).receipts.remove(index);
        self.leases.remove(index)
    }
}

impl<T, S: ?Sized + LeaseSource<T>> Drop for Holding<'_, T, S> {
    fn drop(&mut self) {
        let shared = self.shared;
        lock(&shared.held[self.index]).receipts.clear();
        for lease in self.leases.drain(..) {
            let delivery = lease.into_delivery();
            // A refusal means the lease is gone already (it expired, for example after a stop
            // that gave up turned the heartbeat off): nothing was given back, nothing counted.
            if shared.queue.hand_back(&S::receipt(&delivery)).is_ok() {
                bump(&shared.counters.released_unstarted);
            }
            // The body's `Drop` may panic: survived, as for a settled lease.
            shared.survive(|| drop(delivery));
        }
    }
}

/// Counts a worker out when its thread ends, however it ends; the last one out stops the
/// heartbeat (which a stop from a worker thread leaves running).
struct WorkerExit<'a, T, S: ?Sized + LeaseSource<T>>(&'a Shared<T, S>);

impl<T, S: ?Sized + LeaseSource<T>> Drop for WorkerExit<'_, T, S> {
    fn drop(&mut self) {
        let mut lifecycle = self.0.lifecycle();
        lifecycle.live_workers -= 1;
        if lifecycle.live_workers == 0 {
            lifecycle.heartbeat_on = false;
        }
        drop(lifecycle);
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
    body_panics: AtomicU64,
    receive_errors: AtomicU64,
    settle_errors: AtomicU64,
    backoffs_waited: AtomicU64,
    duplicates_skipped: AtomicU64,
    successes_unremembered: AtomicU64,
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
            body_panics: read(&self.body_panics),
            receive_errors: read(&self.receive_errors),
            settle_errors: read(&self.settle_errors),
            backoffs_waited: read(&self.backoffs_waited),
            duplicates_skipped: read(&self.duplicates_skipped),
            successes_unremembered: read(&self.successes_unremembered),
        }
    }
}

/// A small PRNG for jitter (xorshift64*), seeded per worker from std's random hasher keys.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn seeded(index: usize) -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_usize(index);
        Self(hasher.finish() | 1)
    }

    /// A uniform pick from `0.0..1.0`.
    pub(crate) fn unit(&mut self) -> f64 {
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
