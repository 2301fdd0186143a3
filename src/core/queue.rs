//! The queue: a slab of slots, a ready ring, a free stack and a timing wheel.
//!
//! # Lifecycle
//!
//! ```text
//!            send                 receive                    delete
//!  Free ──────────────▶ Ready ──────────────▶ InFlight ─────────────────▶ Free
//!    │  send_delayed      ▲  ▲   release / expiry │  │ change_visibility (same lease)
//!    └──────▶ Delayed ────┘  └────────────────────┘  └──▶ InFlight
//!              (wheel) ▲     (or to the dead-letter queue → Free)
//!                      └──── InFlight: nack after a delay (or to the dead-letter queue → Free)
//!  Ready ──▶ Free: redrive (the body moves to another queue), or take (at-most-once: the
//!                 body moves to the taker), or a time-to-live that ended (see `super::ttl`;
//!                 so do Delayed, and InFlight whose lease ends after its time-to-live)
//! ```
//!
//! A slot's index moves between the *free stack* (`Free` slots; LIFO, so a send reuses the
//! slot freed last, still in the caches) and the *ready ring* (`Ready` slots; on a queue with
//! message groups a grouped message waits, `Ready`, in its lane until it is let out to the
//! ring, see [`super::groups`]); `InFlight` and
//! `Delayed` slots are in neither but may have a wheel entry. See [`super::slot`] for the
//! lifecycle word and body ownership, [`super::free`] for the stack, [`super::ring`] for the ring,
//! [`super::wheel`] for deadlines and [`super::waiters`] for blocking.
//!
//! # Races, and why each ends with exactly one winner
//!
//! * **delete / release / change_visibility / expiry on one lease**: each is a CAS from the
//!   exact `InFlight(epoch, version)` word it validated. The first CAS to land changes the word;
//!   the others fail, re-read it and find another epoch or state (`Stale` / `Expired`), or, for
//!   a change_visibility that only bumped the version, re-validate and retry. Only the winner
//!   touches the body or the rings.
//! * **change_visibility racing the wheel firing the old deadline**: the new deadline is stored
//!   before the version CAS; the wheel loads the word, then the deadline, then CASes the word it
//!   loaded. If the extension's CAS landed first, the wheel's CAS fails and it re-reads the new
//!   deadline; if the wheel's landed first, the extension's fails and it reports `Expired`.
//!   A shortened lease tells the wheel (see [`super::wheel`]) so it fires on time.
//! * **Forged or stale receipts while a receiver clones the body**: the receiver clones while
//!   the slot is `Ready` and popped (owned by it alone), before it publishes `InFlight`, so no
//!   receipt can reach the slot during the clone.
//! * **ABA on slot reuse**: each lease bumps the epoch, so a receipt from an earlier lease of a
//!   reused slot fails validation (up to the 36-bit wrap documented on [`crate::Receipt`]).
//! * **Two senders popping the same free slot (ABA on the free stack)**: the stack's head
//!   carries a tag that every push and pop moves, so a pop that read a stale link fails its
//!   CAS (see [`super::free`]; loom model `aba_on_the_free_stack`).
//! * **Receipts of another queue**: each queue counts its slots' epochs from its own origin, so
//!   queues used in lockstep issue different receipts (see [`super::slot`], "Receipts of other
//!   queues", for the bound on the rest).
//! * **Dead-letter move racing delete**: the move happens only after a CAS out of `InFlight`
//!   (by expiry or release), which a racing delete then loses. A full dead-letter queue gives
//!   the body back; it is written back and the slot waits, `Delayed`, to retry.
//! * **hand_back racing expiry, delete or release**: [`Queue::hand_back`] is one more CAS from
//!   the exact `InFlight` word, so exactly one of them wins. Only the winner, now the slot's
//!   owner, writes the receive count: a hand-back that lost never restores the count of a
//!   lease that expired (whose redelivery must count that receive), and an expiry that lost
//!   never sees the restored count. It never checks the dead-letter limit, so unused work is
//!   never dead-lettered by it. Loom model `hand_back_races_expiry`.
//! * **A receive while another thread holds the wheel**: only the claim holder fires
//!   deadlines (see [`super::wheel`]). A `try_receive` reads `next_due`, pops, and only if the
//!   pop finds nothing reads the clock (an empty poll with nothing on the wheel reads none).
//!   If `next_due` has come by that reading, another thread may hold the wheel and be about to
//!   make a due message visible: it waits until the wheel has been run up to that tick
//!   (`wait_for_wheel`, which runs it itself if nobody holds it), then pops once more. A pop
//!   that succeeds reads the clock once, after the clone, for the lease start, and runs the
//!   wheel first if that reading finds it due. A `receive_batch` clones everything it takes
//!   first and then reads the clock once for all those leases (each still starts after its
//!   clone); a clone that panics part-way gives back the messages cloned before it
//!   (`GiveBackUnleased`), which were popped and owned but not yet leased. Waiting, it runs the wheel itself once the claim
//!   is free, and otherwise spins and yields briefly, then parks until the holder's run
//!   changes `next_due` (every run at or past the due tick does, and wakes all sleepers) or
//!   the holder lets go. The look at `next_due` comes before the pop: the holder may make the
//!   message visible and publish a later `next_due` between an empty pop and a look after it
//!   (the clock, read after the pop, is only later, which makes "due" only likelier). So a
//!   message due by the time of the call is received.
//!   The wait lasts as long as the holder's run, which is short and runs no user code, but a
//!   descheduled holder prolongs it: here, and only here, the crate blocks rather than being
//!   lock-free. A parked receiver that finds the due tick passed (the wheel held) sleeps until
//!   woken, never for a nap of zero (a spin).
//! * **A take racing receivers, the wheel, senders**: [`Queue::try_take`] pops the ready
//!   ring like a receive, so the pop alone decides who gets a message; a `Ready` slot has no
//!   lease or receipt, and on a queue without a time-to-live no wheel entry (with one, the pop
//!   claims the slot against the wheel's kill first, see [`super::ttl`]), so nothing else can
//!   reach the popped slot, which goes
//!   straight to `Free` (a plain store) once its body is moved out, and only then onto the
//!   free stack for a sender (loom model T1, `take_races_receive_and_send`). An empty pop
//!   waits for a due wheel as a receive's does, through the same `try_pop` (model T2,
//!   `take_races_delay_ending`). A close only stops sends: takes drain what is held.
//! * **A send into a message group's lane racing the freeing of its head** (delete, a move to
//!   the dead-letter queue, a take, a redrive): the lane's token decides who lets the next
//!   message out. The head keeps the token while it lives (released, expired, handed back or
//!   nacked, it stays the head); the thread that frees it inherits the token in
//!   `free_slot`, reading the slot's lane before the slot goes back on the free stack. A
//!   sender links its message and then swaps the token; a holder that finds nothing linked
//!   swaps the token back and then re-checks the link: the swaps' order makes exactly one of
//!   them publish (see [`super::groups`], "The idle race"; loom models G1 to G3). A message
//!   waiting in a lane is `Ready` in its word but in no ring, so nothing else reaches it.
//! * **A receive scanning the priority levels while messages become visible**: a pop tries
//!   the top level, and if that looks empty runs a due wheel and tries the levels from the
//!   highest down ([`super::ready`]); each level's ring decides its own pops, so a message is
//!   popped once whatever level the scan is at. A message pushed to a level the scan has
//!   already passed is left for the next receive (the documented concurrency caveat of
//!   [`Builder::priorities`](crate::Builder::priorities)), never lost. A message keeps its
//!   level: every push reads the slot's level byte, written by the send while it owned the
//!   slot, so a release racing a scan puts it back at its own level. A sleeper's re-check
//!   looks at every level (`has_unclaimed`), since a push wakes only sleepers registered
//!   before it. Loom models P1 and P2.
//! * **A time-to-live kill racing a receive** (queues with a message time-to-live only; see
//!   [`super::ttl`]): the wheel kills a waiting message whose index may be in the ready ring,
//!   so there a popper claims the slot with an atomic OR of `POPPED` before touching the body,
//!   and the wheel kills with a CAS from the exact unclaimed `Ready` word: exactly one wins.
//!   The loser never touches the body; a popper that lost moves on to the next index, and of
//!   the killer and that popper, whichever is second frees the slot (loom models L1 to L3). A
//!   popper that claims an expired message kills it itself. Every CAS that ends a lease or a
//!   delay sets `POPPED` in the `Ready` word it takes, so the wheel never kills a slot a
//!   thread owns outside the ring; publishing it clears the bit.
//! * **Lost wake-ups and close**: see [`super::waiters`]; `close` sets the flag and wakes every
//!   sleeper, and a sleeper checks the flag after registering. Sleepers are threads and
//!   futures alike ([`super::async_front`]: a future registers a waker node by the same steps
//!   and re-checks with the same [`Queue::receiver_should_wake`]; loom models A1 to A6). Every push to the ready ring
//!   wakes one sleeper: a publish, and also a message given back because its clone panicked
//!   (`GiveBackOnUnwind`), which a parked receiver would otherwise see only when its nap ends.
//! * **A blocked send**: [`Queue::send_timeout`] on a full queue parks among the queue's
//!   second `Waiters`, the senders'. Every push to the free stack goes through `free_slot`,
//!   which wakes one of them (delete, a move to the dead-letter queue, a redrive out of this
//!   queue); a parked sender re-checks, after registering, whether the free stack has a slot
//!   or the queue closed, so a slot freed between its failed send and its registration is not
//!   slept through (the argument of [`super::waiters`]; loom model 8g). `close` wakes every
//!   sender.

use crate::core::clock::{ManualClock, Ticks};
use crate::core::deaths::{Death, DeathCause, DeathRecords, Nack, QueueId};
use crate::core::error::{
    try_boxed_slice, BuildError, InvalidSend, OutOfMemory, ReceiptError, SendError,
};
use crate::core::free::FreeStack;
use crate::core::groups::Lanes;
use crate::core::message::{Delivery, MessageId, Receipt, Taken};
use crate::core::metrics::{Latencies, LatencyRecorder};
use crate::core::ready::ReadyRings;
use crate::core::send_options::{GroupKey, SendOptions};
use crate::core::slot::{epoch_origin, Slot, State, Word, ENDED_BY_EXPIRY, FILLING};
use crate::core::stats::{bump, count_refusal, Counters, Memory, RateWindow, Stats};
use crate::core::sync::{lock, AtomicBool, Mutex, Ordering};
use crate::core::ttl::{holds_body, unclaimed, Ttl, BODY_GONE, KILLED, POPPED};
use crate::core::waiters::{Backoff, Waiters};
use crate::core::wheel::{Refile, Wheel, NEVER};
use crate::{MAX_MESSAGE_TTL, MAX_TIMEOUT};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often a message that could not be moved to a full dead-letter queue tries again.
const DEAD_LETTER_RETRY: Duration = Duration::from_millis(10);
/// The longest single sleep of a blocking receive (it re-checks and sleeps again).
const LONGEST_NAP: Duration = Duration::from_secs(3600);

/// A waiting receiver's nap (see [`Queue::receiver_nap`]).
pub(crate) struct Nap {
    /// How long it may sleep: its wait, cut at the wheel's next due tick.
    pub(crate) length: Duration,
    /// The wheel's next due tick the length was computed from.
    pub(crate) next_due: u64,
    /// Whether the nap ends at a wheel deadline (its end is itself a wake-up to rely on).
    pub(crate) ends_at_deadline: bool,
}

/// A lock-free MPMC message queue with visibility timeouts. See the [crate docs](crate).
pub struct Queue<T> {
    pub(crate) slots: Box<[Slot<T>]>,
    pub(crate) free: FreeStack,
    pub(crate) ready: ReadyRings,
    pub(crate) wheel: Wheel,
    pub(crate) waiters: Waiters,
    /// Senders blocked in [`Queue::send_timeout`] (or waiting in `send_async`) while the
    /// queue is full.
    pub(crate) senders: Waiters,
    pub(crate) time: Ticks,
    visibility_timeout: Duration,
    dead_letter: Option<DeadLetterTarget<T>>,
    dead_letter_retry_ticks: u64,
    closed: AtomicBool,
    pub(crate) counters: Counters,
    id: QueueId,
    /// Why and when each held message died, for a queue with a dead-letter queue or that is
    /// one; see [`super::deaths`].
    pub(crate) deaths: OnceLock<DeathRecords>,
    latency: Option<LatencyRecorder>,
    rate_window: Mutex<RateWindow>,
    /// The lanes of message groups, for a queue built with them; see [`super::groups`].
    groups: Option<Lanes>,
    /// Expiry ticks and graves, for a queue with a message time-to-live (see [`super::ttl`]).
    pub(crate) ttl: Option<Ttl>,
}

// SAFETY: the queue owns its bodies (`T: Send` lets them move to whichever thread drops, moves
// or clones them), and every access to a body is made by the slot's single owner of the moment
// (see `super::slot`), so sharing `&Queue` across threads never gives two threads the same body
// at once; everything else in the queue is atomics and a lock.
unsafe impl<T: Send> Send for Queue<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Queue<T> {}

/// A queue's settings, as [`Builder`](crate::Builder) collects and checks them.
pub(crate) struct Settings<T> {
    pub(crate) capacity: usize,
    pub(crate) visibility_timeout: Duration,
    pub(crate) dead_letter: Option<DeadLetterTarget<T>>,
    pub(crate) tick: Duration,
    pub(crate) clock: Option<ManualClock>,
    pub(crate) latency_sample: u32,
    /// Priority levels (1: none).
    pub(crate) priority_levels: u8,
    /// Lanes of message groups, if the queue has groups.
    pub(crate) group_lanes: Option<usize>,
    /// The default message time-to-live, if messages have one.
    pub(crate) message_ttl: Option<Duration>,
}

/// Where a queue sends messages that were received too often.
pub(crate) struct DeadLetterTarget<T> {
    pub(crate) queue: Arc<Queue<T>>,
    pub(crate) max_receives: u32,
}

impl<T> Queue<T> {
    /// Allocates all the queue's memory for checked `settings` (see
    /// [`Builder::build`](crate::Builder::build)). Every allocation is fallible, and a failed
    /// one is [`BuildError::CapacityTooLarge`].
    pub(crate) fn allocate(settings: Settings<T>) -> Result<Self, BuildError> {
        let capacity = settings.capacity;
        let too_large = |OutOfMemory| BuildError::CapacityTooLarge(capacity);
        let id = QueueId::next();
        let origin = epoch_origin(id.serial());
        let slots = try_boxed_slice(capacity, |_| Slot::new(origin)).map_err(too_large)?;
        let free = FreeStack::new();
        // Slot 0 on top: a new queue fills its slots in index order.
        for index in (0..capacity as u32).rev() {
            free.push(index, &slots[index as usize].next_free);
        }
        let ready = ReadyRings::new(capacity, settings.priority_levels).map_err(too_large)?;
        let time = Ticks::new(settings.clock, settings.tick);
        let levels = Wheel::levels_for(time.ticks_in(MAX_TIMEOUT));
        let wheel = Wheel::new(capacity, levels).map_err(too_large)?;
        let latency = (settings.latency_sample > 0)
            .then(|| LatencyRecorder::new(capacity, settings.latency_sample))
            .transpose()
            .map_err(too_large)?;
        let groups = settings
            .group_lanes
            .map(|lanes| Lanes::new(capacity, lanes))
            .transpose()
            .map_err(too_large)?;
        let ttl = settings
            .message_ttl
            .map(|ttl| Ttl::new(capacity, ttl, settings.dead_letter.is_some()))
            .transpose()
            .map_err(too_large)?;
        let deaths = OnceLock::new();
        if let Some(dead_letter) = &settings.dead_letter {
            let _ = deaths.set(DeathRecords::new(capacity).map_err(too_large)?);
            let dlq = &dead_letter.queue;
            if dlq.deaths.get().is_none() {
                // The dead-letter queue's records are made when it is first attached. Two
                // builds attaching it at once may both make them: the first `set` wins.
                let records = DeathRecords::new(dlq.capacity())
                    .map_err(|OutOfMemory| BuildError::CapacityTooLarge(dlq.capacity()))?;
                let _ = dlq.deaths.set(records);
            }
        }
        Ok(Self {
            slots,
            free,
            ready,
            wheel,
            waiters: Waiters::new(),
            senders: Waiters::new(),
            dead_letter_retry_ticks: time.ticks_in(DEAD_LETTER_RETRY).max(1),
            time,
            visibility_timeout: settings.visibility_timeout,
            dead_letter: settings.dead_letter,
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            id,
            deaths,
            latency,
            rate_window: Mutex::new(RateWindow::default()),
            groups,
            ttl,
        })
    }

    /// The most messages the queue holds at once.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How long a received message stays invisible unless its lease is changed.
    pub fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }

    /// This queue's identity, as named by the dead letters that died in it
    /// ([`DeadLetter::source`](crate::DeadLetter)).
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// The receive count after which a message goes to the dead-letter queue, if it has one.
    pub fn max_receives(&self) -> Option<u32> {
        self.dead_letter.as_ref().map(|d| d.max_receives)
    }

    /// The dead-letter queue given to [`Builder::dead_letter`](crate::Builder::dead_letter),
    /// if there is one.
    pub fn dead_letter_queue(&self) -> Option<&Arc<Queue<T>>> {
        self.dead_letter.as_ref().map(|d| &d.queue)
    }

    /// Queues `body`, visible at once. Fails with the body when the queue is full or closed.
    ///
    /// ```
    /// let q: visq::Queue<&str> = visq::Queue::builder().capacity(1).build().unwrap();
    /// let first = q.send("a").unwrap();
    /// assert_eq!(q.send("b").unwrap_err(), visq::SendError::Full("b"));
    /// assert_eq!(q.try_receive().unwrap().id(), first);
    /// ```
    #[inline]
    pub fn send(&self, body: T) -> Result<MessageId, SendError<T>> {
        let sent = self.enqueue(body, &SendOptions::PLAIN, |_| {});
        count_refusal(&self.counters.refused_sends, sent)
    }

    /// Queues `body`, visible at once, waiting up to `wait` (wall-clock time) while the queue
    /// is full. Fails with [`SendError::Full`] once `wait` has passed with the queue still
    /// full, and with [`SendError::Closed`] at once, or as soon as the queue is closed while
    /// it waits; the body always comes back.
    ///
    /// Spins and yields briefly (one sender at a time for up to 50 µs), then parks; a parked
    /// sender uses no CPU and wakes when a slot is freed (a [`Queue::delete`], a move to the
    /// dead-letter queue, a [`redrive`](Queue::redrive) out of this queue) or the queue is
    /// closed. While the queue has room it costs what [`Queue::send`] costs.
    ///
    /// ```
    /// use std::{sync::Arc, thread, time::Duration};
    /// use visq::{Queue, SendError};
    /// let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(1).build().unwrap());
    /// q.send(1).unwrap();
    /// // Full, and nobody deletes: the wait runs out and the body comes back.
    /// let refused = q.send_timeout(2, Duration::from_millis(1));
    /// assert_eq!(refused, Err(SendError::Full(2)));
    /// // A consumer deletes the first message: the blocked send goes through.
    /// let consumer = {
    ///     let q = q.clone();
    ///     thread::spawn(move || q.delete(q.receive(Duration::from_secs(10)).unwrap().receipt()))
    /// };
    /// q.send_timeout(3, Duration::from_secs(10)).expect("a slot was freed within the wait");
    /// consumer.join().unwrap().unwrap();
    /// ```
    pub fn send_timeout(&self, body: T, wait: Duration) -> Result<MessageId, SendError<T>> {
        let sent = match self.enqueue(body, &SendOptions::PLAIN, |_| {}) {
            Err(SendError::Full(body)) if !wait.is_zero() => self.send_blocking(body, wait),
            sent => sent,
        };
        count_refusal(&self.counters.refused_sends, sent)
    }

    /// The rest of a [`Queue::send_timeout`] that found the queue full: retries, backing off
    /// and then parking among the `senders` until a slot is freed, the queue closes or `wait`
    /// (counted from now) has passed.
    #[cold]
    fn send_blocking(&self, mut body: T, wait: Duration) -> Result<MessageId, SendError<T>> {
        let start = Instant::now();
        let mut backoff = Backoff::new(&self.senders);
        loop {
            let Some(left) = wait
                .checked_sub(start.elapsed())
                .filter(|left| !left.is_zero())
            else {
                return Err(SendError::Full(body));
            };
            if !backoff.snooze() {
                // Woken by `free_slot` (or `close`); the re-check covers a slot freed, or a
                // close, between the failed send and the registration (see `super::waiters`).
                self.senders.sleep(left.min(LONGEST_NAP), false, || {
                    self.free.has_free_acquired() || self.is_closed()
                });
            }
            match self.enqueue(body, &SendOptions::PLAIN, |_| {}) {
                Err(SendError::Full(refused)) => body = refused,
                sent => return sent,
            }
        }
    }

    /// Frees the owned slot `index` (its body moved out, its word `Free`): puts it on the free
    /// stack and wakes a blocked sender, if any, for it. Every freeing goes through here.
    #[inline]
    pub(crate) fn free_slot(&self, index: u32) {
        if let Some(groups) = &self.groups {
            return self.free_grouped_slot(groups, index);
        }
        self.push_free(index);
    }

    /// [`Queue::free_slot`] on a queue with message groups: if the slot was its lane's head,
    /// this thread inherits the lane's token and lets the next message out (see
    /// [`super::groups`]). The lane is read before the push: a sender reusing the slot would
    /// overwrite the link that names it. Never inlined, so that the plain queue's delete and
    /// take pay one test for groups.
    #[inline(never)]
    fn free_grouped_slot(&self, groups: &Lanes, index: u32) {
        let next_of_group = groups.leave(index);
        self.push_free(index);
        if let Some(next) = next_of_group {
            self.publish_head(next, self.time.recent_nanos());
        }
    }

    /// Puts the owned, `Free` slot `index` on the free stack and wakes a blocked sender.
    #[inline(always)]
    fn push_free(&self, index: u32) {
        self.free.push(index, &self.slots[index as usize].next_free);
        self.senders.notify_one_after_rmw();
    }

    /// Queues `body`, invisible until `delay` has passed on the queue's clock (at most
    /// [`MAX_TIMEOUT`]; a zero delay is a plain [`Queue::send`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use visq::{ManualClock, Queue, SendError};
    /// let clock = ManualClock::new();
    /// let q: Queue<&str> = Queue::builder().clock(clock.clone()).build().unwrap();
    /// q.send_delayed("later", Duration::from_secs(10)).unwrap();
    /// assert!(q.try_receive().is_none());
    /// clock.advance(Duration::from_secs(10));
    /// assert_eq!(*q.try_receive().unwrap().body(), "later");
    /// let too_long = q.send_delayed("never", Duration::from_secs(13 * 3600));
    /// assert_eq!(too_long.unwrap_err(), SendError::DelayTooLong("never"));
    /// ```
    pub fn send_delayed(&self, body: T, delay: Duration) -> Result<MessageId, SendError<T>> {
        let sent = if delay > MAX_TIMEOUT {
            Err(SendError::DelayTooLong(body))
        } else {
            self.enqueue(body, &SendOptions::PLAIN.delay(delay), |_| {})
        };
        count_refusal(&self.counters.refused_sends, sent)
    }

    /// Queues `body` as `options` say: after its delay, at its priority, in its message group,
    /// with its time-to-live. Refused with [`SendError::Invalid`] (the body handed back) for
    /// an option this queue was not built for: a priority not below
    /// [`Builder::priorities`](crate::Builder::priorities), a group without
    /// [`Builder::message_groups`](crate::Builder::message_groups) or with a delay, a
    /// time-to-live without [`Builder::message_ttl`](crate::Builder::message_ttl) or out of
    /// range; and as [`Queue::send_delayed`] otherwise.
    ///
    /// **Message groups** ([`SendOptions::group`] on a queue built with
    /// [`Builder::message_groups`](crate::Builder::message_groups); the full statement is
    /// there): a group's messages are delivered in send order (one thread's sends in program
    /// order, concurrent sends in the order they enter the lane), at most one of them ready or
    /// leased at a time; the next becomes visible only when the current one is deleted, moved
    /// to the dead-letter queue or taken, while a released, expired, handed-back or nacked one
    /// stays first (a nack's delay holds the group). The guarantees hold per lane: groups
    /// hashed to one lane ([`Queue::group_lane`]) are one ordered sequence, not parallel;
    /// use lanes of at least 4 times the groups holding messages at once. Fairness: a lane has
    /// at most one message in the ready ring and its next joins the back, so once a lane's
    /// head is visible, at most (the other messages visible at that moment) deliveries happen
    /// before it. A message without a group is a group of its own, ordered with nothing.
    ///
    /// ```
    /// use visq::{InvalidSend, Queue, SendError, SendOptions};
    /// let q: Queue<&str> = Queue::builder().priorities(4).build().unwrap();
    /// q.send_with("urgent", &SendOptions::new().priority(3)).unwrap();
    /// let too_high = q.send_with("x", &SendOptions::new().priority(4));
    /// let why = InvalidSend::PriorityOutOfRange { priority: 4, levels: 4 };
    /// assert_eq!(too_high.unwrap_err(), SendError::Invalid("x", why));
    /// ```
    pub fn send_with(&self, body: T, options: &SendOptions) -> Result<MessageId, SendError<T>> {
        let sent = match self.check_options(options) {
            Err(why) => Err(SendError::Invalid(body, why)),
            Ok(()) if options.delay > MAX_TIMEOUT => Err(SendError::DelayTooLong(body)),
            Ok(()) => self.enqueue(body, options, |_| {}),
        };
        count_refusal(&self.counters.refused_sends, sent)
    }

    /// Whether this queue can honour `options` (see [`Queue::send_with`]).
    fn check_options(&self, options: &SendOptions) -> Result<(), InvalidSend> {
        let levels = self.priority_levels();
        if options.priority >= levels {
            return Err(InvalidSend::PriorityOutOfRange {
                priority: options.priority,
                levels,
            });
        }
        if options.group.is_some() {
            if self.groups.is_none() {
                return Err(InvalidSend::NoMessageGroups);
            }
            if !options.delay.is_zero() {
                return Err(InvalidSend::DelayedGroupMessage);
            }
        }
        if let Some(ttl) = options.ttl {
            if self.ttl.is_none() {
                return Err(InvalidSend::NoMessageTtl);
            }
            if ttl.is_zero() || ttl > MAX_MESSAGE_TTL {
                return Err(InvalidSend::TtlOutOfRange);
            }
        }
        Ok(())
    }

    /// The priority levels the queue was built with
    /// ([`Builder::priorities`](crate::Builder::priorities); 1 when it has none).
    pub fn priority_levels(&self) -> u8 {
        self.ready.level_count()
    }

    /// The lanes of message groups, if the queue was built with
    /// [`Builder::message_groups`](crate::Builder::message_groups): the number asked for,
    /// rounded up to a power of two.
    pub fn group_lanes(&self) -> Option<usize> {
        self.groups.as_ref().map(Lanes::count)
    }

    /// The lane that message group `group` maps to (`None` on a queue without groups): a fixed
    /// function of the key and the number of lanes, the same in every process and run. Groups
    /// on one lane are delivered as one ordered sequence (see
    /// [`Builder::message_groups`](crate::Builder::message_groups)).
    ///
    /// ```
    /// let q: visq::Queue<u8> = visq::Queue::builder().message_groups(16).build().unwrap();
    /// let lane = q.group_lane("customer-42").unwrap();
    /// assert!(lane < 16);
    /// assert_eq!(q.group_lane("customer-42"), Some(lane));
    /// let plain: visq::Queue<u8> = visq::Queue::builder().build().unwrap();
    /// assert_eq!(plain.group_lane("customer-42"), None);
    /// ```
    pub fn group_lane(&self, group: impl Into<GroupKey>) -> Option<usize> {
        let groups = self.groups.as_ref()?;
        Some(groups.lane_of(group.into()) as usize)
    }

    /// The default message time-to-live, if the queue was built with
    /// [`Builder::message_ttl`](crate::Builder::message_ttl).
    pub fn message_ttl(&self) -> Option<Duration> {
        self.ttl.as_ref().map(|ttl| ttl.default)
    }

    /// Takes a message that died in another queue, with its death record (taken out of
    /// `death` only if the message is accepted).
    fn accept_dead_letter(&self, body: T, death: &mut Option<Death>) -> Result<(), SendError<T>> {
        self.enqueue(body, &SendOptions::PLAIN, |index| {
            let records = self
                .deaths
                .get()
                .expect("a dead-letter queue has death records");
            if let Some(mut death) = death.take() {
                death.died_at = self.time.now_nanos();
                // SAFETY: `enqueue` calls this while it owns the slot, before publishing it.
                unsafe { records.put(index, death) };
            }
        })
        .map(drop)
    }

    /// Queues `body` as `options` say (checked by the caller); `before_publish` runs with the slot index while this
    /// thread still owns the slot, and only if the message is accepted.
    #[inline]
    pub(crate) fn enqueue(
        &self,
        body: T,
        options: &SendOptions,
        before_publish: impl FnOnce(u32),
    ) -> Result<MessageId, SendError<T>> {
        let delay = options.delay;
        if self.is_closed() {
            return Err(SendError::Closed(body));
        }
        // A plain send only needs a lower bound of the time (see `super::clock`).
        let now = if delay.is_zero() {
            self.time.recent_nanos()
        } else {
            self.time.now_nanos()
        };
        self.run_wheel_if_due(now);
        let Some(index) = self.free.pop(|index| &self.slots[index as usize].next_free) else {
            return Err(SendError::Full(body));
        };
        self.ready.set_level(index, options.priority);
        let slot = &self.slots[index as usize];
        let free = slot.load().with(State::Free, 0);
        // Marked before it is counted (`Release`), so that `stats` never counts it as sent
        // and deleted (see `super::stats`, "How the totals are read").
        slot.store(free.with(State::Free, FILLING));
        let id = self.counters.sent.fetch_add(1, Ordering::Release);
        // A sampled message's latency is measured from the exact time.
        let sampled = self.latency.as_ref().filter(|l| l.samples(id));
        let now = if sampled.is_some() && delay.is_zero() {
            self.time.now_nanos()
        } else {
            now
        };
        // SAFETY: `index` came off the free stack, so this thread owns the `Free` slot and its
        // body is empty.
        unsafe { slot.write_body(body) };
        slot.id.store(id, Ordering::Relaxed);
        slot.receive_count.store(0, Ordering::Relaxed);
        if let Some(latency) = sampled {
            latency.sent(index, now);
        }
        before_publish(index);
        if let (Some(group), Some(groups)) = (options.group, &self.groups) {
            // Waiting in its lane: `Ready` (counted as ready) but in no ring, so nothing else
            // reaches the slot until the lane publishes it (see `super::groups`).
            slot.visible_since.store(now, Ordering::Relaxed);
            slot.store(free.with(State::Ready, 0));
            if let Some(head) = groups.enter(index, groups.lane_of(group)) {
                self.publish_head(head, now);
            }
        } else if self.ttl.is_some() {
            self.publish_sent_with_ttl(index, free, now, options);
        } else if delay.is_zero() {
            self.push_ready(index, free, now);
        } else {
            let deadline = self.time.deadline(now, delay);
            slot.publish_delayed(free, 0, deadline);
            self.schedule(index, deadline);
        }
        Ok(MessageId(id))
    }

    /// Leases the next visible message, if there is one, without blocking.
    ///
    /// The message stays invisible to other receivers until its visibility deadline; settle it
    /// with [`Queue::delete`], [`Queue::release`] or [`Queue::change_visibility`].
    ///
    /// ```
    /// let q: visq::Queue<u8> = visq::Queue::builder().build().unwrap();
    /// q.send(1).unwrap();
    /// let delivery = q.try_receive().unwrap();
    /// assert_eq!((*delivery.body(), delivery.receive_count()), (1, 1));
    /// assert!(q.try_receive().is_none()); // leased
    /// q.delete(delivery.receipt()).unwrap();
    /// ```
    #[inline]
    pub fn try_receive(&self) -> Option<Delivery<T>>
    where
        T: Clone,
    {
        self.try_pop(|| self.pop_and_lease())
    }

    /// Removes the next visible message and hands it over, without blocking: an at-most-once
    /// receive (RabbitMQ's auto-ack). There is no lease and no receipt: the body is moved out,
    /// not cloned (so `T` need not be `Clone`), and the slot is free again before this
    /// returns. If the taker then fails to process it, the message is lost, never redelivered;
    /// use [`Queue::try_receive`] and [`Queue::delete`] where doing work twice beats losing it.
    ///
    /// It costs less than a receive plus a delete: one pop of the ready ring, one move of the
    /// body and one push of the free stack, with no clone, no clock reading for a lease, no
    /// wheel entry and, on a queue without a time-to-live, no atomic read-modify-write on the
    /// slot's word (with one, the claim every pop makes there). [`Queue::stats`] counts it as
    /// received and deleted. Takes no lock and allocates nothing.
    ///
    /// ```
    /// let q: visq::Queue<String> = visq::Queue::builder().build().unwrap();
    /// let id = q.send("once".to_string()).unwrap();
    /// let taken = q.try_take().unwrap();
    /// assert_eq!((taken.id(), taken.receive_count()), (id, 1));
    /// assert_eq!(taken.into_body(), "once");
    /// assert!(q.try_take().is_none()); // gone for good, not leased
    /// let stats = q.stats();
    /// assert_eq!((stats.received, stats.deleted, stats.in_flight), (1, 1, 0));
    /// ```
    #[inline]
    pub fn try_take(&self) -> Option<Taken<T>> {
        self.try_pop(|| self.pop_and_take())
    }

    /// Removes the next visible message and hands it over, waiting up to `wait` (wall-clock
    /// time) for one: the blocking form of [`Queue::try_take`], which waits as
    /// [`Queue::receive`] does (spins briefly, then parks). Returns `None` after `wait`, or at
    /// once on a closed queue with nothing visible.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q: visq::Queue<u32> = visq::Queue::builder().build().unwrap();
    /// q.send(7).unwrap();
    /// assert_eq!(q.take(Duration::from_millis(10)).unwrap().into_body(), 7);
    /// assert!(q.take(Duration::from_millis(1)).is_none());
    /// ```
    pub fn take(&self, wait: Duration) -> Option<Taken<T>> {
        self.wait_for(wait, || self.try_take())
    }

    /// The common path of [`Queue::try_receive`] and [`Queue::try_take`]: `pop` once, and if
    /// it finds nothing while the wheel is due, make sure the due messages are visible and
    /// `pop` once more.
    #[inline(always)]
    fn try_pop<R>(&self, pop: impl Fn() -> Option<R>) -> Option<R> {
        // Read before the pop: the holder of the wheel may make the message visible and
        // publish a later `next_due` between our empty pop and a look made after it.
        let next_due = self.wheel.next_due();
        if let Some(popped) = pop() {
            return Some(popped);
        }
        // An empty poll reads the clock only if the wheel has something pending.
        if next_due == NEVER {
            return None;
        }
        let now = self.time.now_nanos();
        if self.time.tick_of(now) < next_due {
            return None;
        }
        self.try_pop_after_wheel(now, pop)
    }

    /// The rest of a [`Queue::try_pop`] that found nothing while the wheel was due at
    /// `now`: another thread may hold the wheel (if this one did not run it) and be about to
    /// make a message visible that is due by now. Waits until the wheel has been run up to
    /// `now`'s tick, then tries once more.
    #[cold]
    fn try_pop_after_wheel<R>(&self, now: u64, pop: impl Fn() -> Option<R>) -> Option<R> {
        self.wait_for_wheel(self.time.tick_of(now));
        pop()
    }

    /// Pops a visible message and frees its slot, moving the body out: the pop of a
    /// [`Queue::try_take`].
    ///
    /// The pop (with its time-to-live claim, on such a queue) makes this thread the slot's
    /// owner (a `Ready` slot has no lease, so no receipt or lease expiry can reach it, and a
    /// time-to-live kill loses to the claim), so the slot goes straight from `Ready` to
    /// `Free` with a plain store, as a redrive frees it. The stats need no counter: the pop
    /// counts as a receive and the `Free` slot as a delete (see [`super::stats`]).
    #[inline(always)]
    fn pop_and_take(&self) -> Option<Taken<T>> {
        let (index, ready) = self.pop_ready()?;
        let slot = &self.slots[index as usize];
        debug_assert_eq!(ready.state(), State::Ready);
        let receive_count = slot.receive_count.load(Ordering::Relaxed).saturating_add(1);
        let id = slot.id.load(Ordering::Relaxed);
        if let Some(latency) = self.latency.as_ref().filter(|l| l.samples(id)) {
            let now = self.time.now_nanos();
            if receive_count == 1 {
                latency.first_received(index, now);
            }
            latency.deleted(index, now, now);
        }
        // SAFETY: `index` came out of the ready ring, so this thread owns the `Ready` slot and
        // its body is written. We move the body out and treat the cell as empty from here on.
        let body = unsafe { slot.take_body() };
        if let Some(records) = self.deaths.get() {
            // SAFETY: this thread owns the slot (above).
            drop(unsafe { records.take(index) });
        }
        slot.store(ready.with(State::Free, 0));
        self.free_slot(index);
        // Nothing reads the clock for a take, so run the wheel here, as a send does, if a
        // cheap reading finds it due.
        self.run_wheel_if_due(self.time.recent_nanos());
        Some(Taken {
            id: MessageId(id),
            receive_count,
            body,
        })
    }

    /// What a pop on a queue with priority levels does when the top level looks empty, before
    /// it scans the others: runs the wheel if a recent reading (never later than the clock)
    /// finds it due, so that a message whose delay or lease has ended by then competes at its
    /// own level rather than wait behind what is visible at lower ones.
    /// With nothing on the wheel it reads no clock. Returns whether it ran the wheel.
    #[inline(never)]
    pub(crate) fn run_wheel_before_lower_levels(&self) -> bool {
        let due = self.wheel.next_due() != NEVER
            && self
                .wheel
                .is_due(self.time.tick_of(self.time.recent_nanos()));
        if due {
            self.run_wheel();
        }
        due
    }

    /// Waits until the wheel has been run up to `tick` (its next due tick is later): runs it
    /// when nobody holds it; while another thread does, spins and yields briefly, then parks
    /// until that thread's run changes `next_due` (which wakes every sleeper, see
    /// [`super::waiters`]) or it lets go.
    fn wait_for_wheel(&self, tick: u64) {
        let mut backoff = Backoff::brief();
        loop {
            let next_due = self.wheel.next_due();
            if tick < next_due {
                return;
            }
            if !self.wheel.is_running() {
                self.run_wheel();
                continue;
            }
            if !backoff.snooze() {
                self.waiters.sleep(LONGEST_NAP, false, || {
                    self.wheel.next_due() != next_due || !self.wheel.is_running()
                });
            }
        }
    }

    /// Pops a visible message and leases it: the pop of a [`Queue::try_receive`], with no
    /// look at the wheel beforehand. The clock is read once, after the clone: the lease starts
    /// there, so the clone does not eat into it.
    #[inline]
    fn pop_and_lease(&self) -> Option<Delivery<T>>
    where
        T: Clone,
    {
        let (delivery, lease) = self.pop_and_clone()?;
        let index = delivery.receipt.slot() as u32;
        self.publish_lease(index, lease, delivery.receive_count, self.lease_start());
        Some(delivery)
    }

    /// Pops a visible message and clones its body into a delivery whose lease is not published
    /// yet: this thread still owns the `Ready` slot, until [`Queue::publish_lease`] (or, for a
    /// batch that unwinds, [`GiveBackUnleased`]). Also returns the lease word to publish.
    #[inline(always)]
    fn pop_and_clone(&self) -> Option<(Delivery<T>, Word)>
    where
        T: Clone,
    {
        let (index, ready) = self.pop_ready()?;
        let slot = &self.slots[index as usize];
        debug_assert_eq!(ready.state(), State::Ready);
        // A panicking clone must not strand the message outside the ready ring.
        let give_back = GiveBackOnUnwind {
            queue: self,
            index,
            count_not_received: true,
        };
        // SAFETY: `index` came out of the ready ring, so this thread owns the `Ready` slot and
        // its body is written; nothing else reads or writes the body until `InFlight` is
        // published by `publish_lease`.
        let body = unsafe { slot.clone_body() };
        std::mem::forget(give_back);
        let receive_count = slot.receive_count.load(Ordering::Relaxed).saturating_add(1);
        slot.receive_count.store(receive_count, Ordering::Relaxed);
        let lease = ready.next_lease();
        let delivery = Delivery {
            // Read while this thread still owns the slot: once `InFlight` is published the
            // lease can expire and the slot be recycled for another message.
            id: MessageId(slot.id.load(Ordering::Relaxed)),
            receipt: Receipt::new(index, lease.epoch()),
            receive_count,
            body,
        };
        Some((delivery, lease))
    }

    /// The reading a lease starts from, made after the clone: the clock now, after running the
    /// wheel first if it is due (so that the run does not eat into the lease either).
    #[inline(always)]
    fn lease_start(&self) -> u64 {
        let now = self.time.now_nanos();
        if self.wheel.is_due(self.time.tick_of(now)) {
            self.run_wheel();
            return self.time.now_nanos();
        }
        now
    }

    /// Publishes `lease` on the popped, cloned slot `index` (delivered for the
    /// `receive_count`th time; see [`Queue::pop_and_clone`]) from the reading `now`, made after
    /// its clone.
    #[inline(always)]
    fn publish_lease(&self, index: u32, lease: Word, receive_count: u32, now: u64) {
        let slot = &self.slots[index as usize];
        // The lease starts no earlier than the message became visible (`visible_since` may be
        // a reading of another thread's, which the exact clock here never trails by more than
        // its skew; the `max` keeps the rule local).
        let leased_at = now.max(slot.visible_since.load(Ordering::Relaxed));
        let deadline = self.time.deadline(leased_at, self.visibility_timeout);
        slot.set_deadline(lease, deadline);
        // While `InFlight`, `visible_since` holds when the lease began.
        slot.visible_since.store(leased_at, Ordering::Relaxed);
        if let (Some(latency), 1) = (&self.latency, receive_count) {
            if latency.samples(slot.id.load(Ordering::Relaxed)) {
                latency.first_received(index, leased_at);
            }
        }
        slot.store(lease);
        self.schedule(index, deadline);
    }

    /// Leases the next visible message, waiting up to `wait` (wall-clock time) for one.
    ///
    /// Spins and yields briefly (one receiver at a time, the lookout, for up to 50 µs), then
    /// parks; a parked receiver uses no CPU and wakes for a send, a close, or the next
    /// deadline on the queue's wheel (an expiring lease). Returns `None` after `wait`, or at
    /// once on a closed queue with nothing visible.
    ///
    /// ```
    /// use std::{sync::Arc, thread, time::Duration};
    /// let q: Arc<visq::Queue<u32>> = Arc::new(visq::Queue::builder().build().unwrap());
    /// let producer = { let q = q.clone(); thread::spawn(move || q.send(5).unwrap()) };
    /// let delivery = q.receive(Duration::from_secs(10)).expect("sent within the wait");
    /// assert_eq!(*delivery.body(), 5);
    /// producer.join().unwrap();
    /// assert!(q.receive(Duration::from_millis(1)).is_none());
    /// ```
    pub fn receive(&self, wait: Duration) -> Option<Delivery<T>>
    where
        T: Clone,
    {
        self.wait_for(wait, || self.try_receive())
    }

    /// The common path of [`Queue::receive`] and [`Queue::take`]: one `attempt`, then, unless
    /// `wait` is zero or the queue was closed before the attempt, [`Queue::receive_blocking`].
    ///
    /// "Closed with nothing visible" is judged by a close seen *before* an attempt that found
    /// nothing: a close seen only after it may have followed a send the attempt missed, and
    /// returning then would leave that message behind (loom model T3).
    #[inline]
    fn wait_for<R>(&self, wait: Duration, attempt: impl Fn() -> Option<R>) -> Option<R> {
        let closed = self.is_closed();
        match attempt() {
            Some(received) => Some(received),
            None if wait.is_zero() || closed => None,
            None => self.receive_blocking(wait, attempt),
        }
    }

    /// Repeats `attempt` until it succeeds, the queue is closed with nothing visible, or
    /// `wait` (counted from now) has passed, backing off and then parking among the receivers.
    #[cold]
    fn receive_blocking<R>(&self, wait: Duration, attempt: impl Fn() -> Option<R>) -> Option<R> {
        let start = Instant::now();
        let mut backoff = Backoff::new(&self.waiters);
        loop {
            // Read before the attempt: see `Queue::wait_for`.
            let closed = self.is_closed();
            if let Some(received) = attempt() {
                return Some(received);
            }
            if closed {
                return None;
            }
            let left = wait
                .checked_sub(start.elapsed())
                .filter(|left| !left.is_zero())?;
            if !backoff.snooze() {
                let nap = self.receiver_nap(left);
                self.waiters.sleep(nap.length, nap.ends_at_deadline, || {
                    self.receiver_should_wake(nap.next_due)
                });
            }
        }
    }

    /// How long a receiver with `left` to wait may sleep: until the wheel's next due tick at
    /// the latest. Its re-check after registering is [`Queue::receiver_should_wake`] with
    /// the returned `next_due`.
    pub(crate) fn receiver_nap(&self, left: Duration) -> Nap {
        let now = self.time.now_nanos();
        // The nap is computed from this value, so any later change of it (a deadline filed
        // earlier, the wheel run past it) must wake us: the re-check compares, and the wheel
        // run that changes it wakes every sleeper (see `super::waiters`).
        let next_due = self.wheel.next_due();
        // If it has passed, another thread holds the wheel (we would have run it): its run
        // changes `next_due` and wakes us. A nap until the passed due tick would be a nap of
        // zero, round and round: a spin.
        let due = self.time.tick_of(now) >= next_due;
        let until_due = if due {
            None
        } else {
            self.time.wall_time_until(now, next_due)
        };
        Nap {
            length: until_due.map_or(left, |due| due.min(left)).min(LONGEST_NAP),
            next_due,
            // Due wheel work is a reason to stay up only if nobody is running the wheel: a
            // running owner finishes it and wakes us if it makes a message visible.
            ends_at_deadline: next_due != NEVER && !due,
        }
    }

    /// A registered receiver's re-check (see [`super::waiters`]): whether a message may be
    /// visible, the queue closed, the wheel's next due tick moved from `next_due` (the value
    /// its nap was computed from), or due wheel work is left with nobody to run it.
    pub(crate) fn receiver_should_wake(&self, next_due: u64) -> bool {
        has_unclaimed(&self.ready)
            || self.is_closed()
            || self.wheel.next_due() != next_due
            || (self.wheel.is_due(self.time.tick_of(self.time.now_nanos()))
                && !self.wheel.is_running())
    }

    /// Appends up to `max` deliveries to `out` and returns how many; waits up to `wait` only
    /// while it has none. Allocates nothing when `out` has room for `max` more.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q: visq::Queue<u32> = visq::Queue::builder().build().unwrap();
    /// for n in 0..5 { q.send(n).unwrap(); }
    /// let mut batch = Vec::with_capacity(8);
    /// assert_eq!(q.receive_batch(&mut batch, 8, Duration::from_millis(10)), 5);
    /// ```
    pub fn receive_batch(&self, out: &mut Vec<Delivery<T>>, max: usize, wait: Duration) -> usize
    where
        T: Clone,
    {
        let mut taken = self.take_visible(out, max);
        if taken == 0 && max > 0 {
            if let Some(delivery) = self.receive(wait) {
                out.push(delivery);
                taken = 1 + self.take_visible(out, max - 1);
            }
        }
        taken
    }

    /// Appends up to `max` visible messages to `out`: one [`Queue::try_receive`] (which looks
    /// at the wheel if it finds nothing), then pops and clones while there are more, and
    /// publishes their leases from one clock reading made after the last clone (each lease
    /// still starts after its own clone).
    fn take_visible(&self, out: &mut Vec<Delivery<T>>, max: usize) -> usize
    where
        T: Clone,
    {
        if max == 0 {
            return 0;
        }
        let Some(first) = self.try_receive() else {
            return 0;
        };
        out.push(first);
        let from = out.len();
        let mut unleased = GiveBackUnleased {
            queue: self,
            out,
            from,
        };
        while unleased.out.len() - from < max - 1 {
            let Some((delivery, _)) = self.pop_and_clone() else {
                break;
            };
            unleased.out.push(delivery);
        }
        // The clones are done: nothing is given back from here on.
        let end = unleased.out.len();
        unleased.from = end;
        if end > from {
            let now = self.lease_start();
            for delivery in &unleased.out[from..end] {
                let index = delivery.receipt.slot() as u32;
                // Still the popped slot's owner: its word is the `Ready` word it was popped
                // with, whose next lease the receipt names.
                let lease = self.slots[index as usize].load().next_lease();
                self.publish_lease(index, lease, delivery.receive_count, now);
            }
        }
        1 + end - from
    }

    /// Acknowledges a delivery: the message is removed and never delivered again.
    ///
    /// Fails with [`ReceiptError::Stale`] or [`ReceiptError::Expired`] (and changes nothing)
    /// unless `receipt` is the current, unexpired lease.
    ///
    /// ```
    /// let q: visq::Queue<u8> = visq::Queue::builder().build().unwrap();
    /// q.send(1).unwrap();
    /// let receipt = q.try_receive().unwrap().receipt();
    /// assert_eq!(q.delete(receipt), Ok(()));
    /// assert_eq!(q.delete(receipt), Err(visq::ReceiptError::Stale));
    /// ```
    #[inline]
    pub fn delete(&self, receipt: Receipt) -> Result<(), ReceiptError> {
        let ended = self.end_lease(receipt, |lease| lease.with(State::Free, 0));
        let (index, lease) = count_refusal(&self.counters.refused_receipts, ended)?;
        let slot = &self.slots[index as usize];
        if let Some(latency) = &self.latency {
            if latency.samples(slot.id.load(Ordering::Relaxed)) {
                let leased_at = slot.visible_since.load(Ordering::Relaxed);
                latency.deleted(index, leased_at, self.time.now_nanos());
            }
        }
        // SAFETY: our CAS took the slot out of `InFlight`, so this thread owns it; its body is
        // written. We move the body out and treat the cell as empty from here on.
        let body = unsafe { slot.take_body() };
        if let Some(records) = self.deaths.get() {
            // SAFETY: this thread owns the slot (above).
            drop(unsafe { records.take(index) });
        }
        debug_assert_eq!(slot.load(), lease.with(State::Free, 0));
        self.free_slot(index);
        drop(body);
        Ok(())
    }

    /// Gives a delivery back: the message is visible again at once (or moves to the
    /// dead-letter queue, if it has been received too often).
    ///
    /// ```
    /// let q: visq::Queue<u8> = visq::Queue::builder().build().unwrap();
    /// q.send(1).unwrap();
    /// let first = q.try_receive().unwrap();
    /// q.release(first.receipt()).unwrap();
    /// assert_eq!(q.try_receive().unwrap().receive_count(), 2);
    /// ```
    #[inline]
    pub fn release(&self, receipt: Receipt) -> Result<(), ReceiptError> {
        self.nack(receipt, Nack::now())
    }

    /// Gives a delivery back as `nack` says: visible again after its delay (at once for
    /// [`Nack::now`]), and the lease ends now, so the receipt is spent. If the message has been
    /// received too often it moves to the dead-letter queue at once, whatever the delay, with
    /// the nack's reason in its [`DeadLetter`](crate::DeadLetter) record. A delay over
    /// [`MAX_TIMEOUT`] is refused with [`ReceiptError::TimeoutTooLong`] and changes nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use visq::{ManualClock, Nack, Queue};
    /// let clock = ManualClock::new();
    /// let q: Queue<u8> = Queue::builder().clock(clock.clone()).build().unwrap();
    /// q.send(1).unwrap();
    /// let d = q.try_receive().unwrap();
    /// q.nack(d.receipt(), Nack::after(Duration::from_secs(5)).reason("busy")).unwrap();
    /// assert!(q.try_receive().is_none());
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(q.try_receive().unwrap().receive_count(), 2);
    /// ```
    #[inline]
    pub fn nack(&self, receipt: Receipt, nack: Nack) -> Result<(), ReceiptError> {
        let ended = if nack.delay > MAX_TIMEOUT {
            Err(ReceiptError::TimeoutTooLong)
        } else {
            self.end_lease(receipt, |lease| lease.with(State::Ready, POPPED))
        };
        let (index, lease) = count_refusal(&self.counters.refused_receipts, ended)?;
        bump(&self.counters.released);
        let owned = lease.with(State::Ready, POPPED);
        let cause = DeathCause::Released {
            reason: nack.reason,
        };
        let refile = if self.ttl_ended(index) {
            self.kill_owned(index, owned, self.time.now_nanos(), false)
        } else if nack.delay.is_zero() {
            let now = self.time.recent_nanos();
            self.make_visible(index, owned, now, now, cause)
        } else if self.dead_letter_due(index) {
            self.move_to_dead_letter(index, owned, self.time.now_nanos(), cause)
        } else {
            let deadline = self.time.deadline(self.time.now_nanos(), nack.delay);
            self.slots[index as usize].publish_delayed(owned, 0, deadline);
            Some(self.delayed_until(index, deadline))
        };
        if let Some(deadline) = refile {
            self.schedule(index, deadline);
        }
        Ok(())
    }

    /// Sends a delivery to the dead-letter queue now, whatever its receive count, with `reason`
    /// in its [`DeadLetter`](crate::DeadLetter) record ([`DeathCause::Rejected`]): for a body
    /// that cannot be decoded or a failure no retry can help. The receipt is spent. Counted
    /// in `released` (the lease ended) and `dead_lettered` (the move), like a last release.
    ///
    /// Refused with [`ReceiptError::NoDeadLetterQueue`] (changing nothing) on a queue built
    /// without one, and like [`Queue::release`] unless `receipt` is the current, unexpired
    /// lease. If the dead-letter queue is full the message is kept and the move retried, as
    /// for every move there.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use visq::{DeathCause, Queue};
    /// let dlq: Arc<Queue<&str>> = Arc::new(Queue::builder().build().unwrap());
    /// let q: Queue<&str> = Queue::builder().dead_letter(dlq.clone(), 5).build().unwrap();
    /// q.send("{not json").unwrap();
    /// let d = q.try_receive().unwrap();
    /// q.reject(d.receipt(), "cannot decode").unwrap();
    /// let letters = dlq.dead_letters(10);
    /// assert_eq!(letters[0].cause, DeathCause::Rejected { reason: "cannot decode".into() });
    /// ```
    pub fn reject(
        &self,
        receipt: Receipt,
        reason: impl Into<Cow<'static, str>>,
    ) -> Result<(), ReceiptError> {
        if self.dead_letter.is_none() {
            return Err(ReceiptError::NoDeadLetterQueue);
        }
        let ended = self.end_lease(receipt, |lease| lease.with(State::Ready, POPPED));
        let (index, lease) = count_refusal(&self.counters.refused_receipts, ended)?;
        bump(&self.counters.released);
        let cause = DeathCause::Rejected {
            reason: reason.into(),
        };
        let owned = lease.with(State::Ready, POPPED);
        let now = self.time.now_nanos();
        if let Some(retry_at) = self.move_to_dead_letter(index, owned, now, cause) {
            self.schedule(index, retry_at);
        }
        Ok(())
    }

    // ---- hand_back: a lease given back unused (issue 9, item 2) ------------------------------

    /// Gives back a delivery that *no handler saw*: the message is visible again at once with
    /// its receive count restored, as if this receive had not happened, and the receipt is
    /// spent. Use it for work fetched ahead (a prefetch, a gathered batch) that is returned
    /// unstarted, for example by a worker pool that stops.
    ///
    /// This is not a nack: an attempt that failed must be [`Queue::release`]d or
    /// [`Queue::nack`]ed, so that it counts towards the dead-letter limit. A hand-back never
    /// moves the message to the dead-letter queue, even on what was its last allowed receive.
    /// The message goes to the back of the visible messages, not to its old place. In
    /// [`Stats`], the lease counts as ended in `released` and the delivery stays counted in
    /// `received` (totals of what happened; only the message's own count is restored).
    ///
    /// Fails like [`Queue::release`] (and changes nothing) unless `receipt` is the current,
    /// unexpired lease.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use visq::Queue;
    /// let dlq: Arc<Queue<u8>> = Arc::new(Queue::builder().build().unwrap());
    /// let q: Queue<u8> = Queue::builder().dead_letter(dlq.clone(), 1).build().unwrap();
    /// q.send(1).unwrap();
    /// let unstarted = q.try_receive().unwrap(); // its last receive before the dlq...
    /// q.hand_back(unstarted.receipt()).unwrap(); // ...given back unused
    /// assert_eq!(q.try_receive().unwrap().receive_count(), 1);
    /// assert!(dlq.try_receive().is_none());
    /// ```
    pub fn hand_back(&self, receipt: Receipt) -> Result<(), ReceiptError> {
        let ended = self.end_lease(receipt, |lease| lease.with(State::Ready, POPPED));
        let (index, lease) = count_refusal(&self.counters.refused_receipts, ended)?;
        bump(&self.counters.released);
        let slot = &self.slots[index as usize];
        // Our CAS out of `InFlight` made this thread the slot's owner, the only writer of the
        // count; the receive being undone added one to it.
        let received = slot.receive_count.load(Ordering::Relaxed);
        slot.receive_count
            .store(received.saturating_sub(1), Ordering::Relaxed);
        let owned = lease.with(State::Ready, POPPED);
        if self.ttl_ended(index) {
            if let Some(retry_at) = self.kill_owned(index, owned, self.time.now_nanos(), false) {
                self.schedule(index, retry_at);
            }
            return Ok(());
        }
        self.publish_ready(index, owned, self.time.recent_nanos());
        Ok(())
    }

    // ---- end of hand_back ----------------------------------------------------------------

    /// Sets the lease's deadline to `timeout` from now, longer or shorter. A zero timeout is
    /// [`Queue::release`]. The receipt stays valid until the new deadline.
    ///
    /// A call that shortens a lease can race its own new deadline: if that deadline passes
    /// before the call finishes and a wheel run fires it first, the lease expires at the new
    /// deadline and the call answers [`ReceiptError::Expired`] (or `Stale` once the message is
    /// received again). The lease never ends before the earlier of its old and new deadlines.
    ///
    /// One receipt used by two threads at once (one settling it while the other changes its
    /// visibility) is a race the caller should avoid: exactly one settlement still wins, but if
    /// the message's next lease or delay happens to end on the very tick this lease's deadline
    /// had, the losing call can move that deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use visq::{ManualClock, Queue};
    /// let clock = ManualClock::new();
    /// let q: Queue<u8> = Queue::builder()
    ///     .visibility_timeout(Duration::from_secs(1))
    ///     .clock(clock.clone())
    ///     .build()
    ///     .unwrap();
    /// q.send(1).unwrap();
    /// let d = q.try_receive().unwrap();
    /// q.change_visibility(d.receipt(), Duration::from_secs(60)).unwrap();
    /// clock.advance(Duration::from_secs(30));
    /// assert!(q.try_receive().is_none()); // still leased
    /// q.delete(d.receipt()).unwrap();
    /// ```
    pub fn change_visibility(
        &self,
        receipt: Receipt,
        timeout: Duration,
    ) -> Result<(), ReceiptError> {
        if timeout.is_zero() {
            return self.release(receipt);
        }
        let extended = if timeout > MAX_TIMEOUT {
            Err(ReceiptError::TimeoutTooLong)
        } else {
            self.extend_lease(receipt, timeout)
        };
        count_refusal(&self.counters.refused_receipts, extended)
    }

    /// [`Queue::change_visibility`] with a nonzero timeout of at most [`MAX_TIMEOUT`].
    fn extend_lease(&self, receipt: Receipt, timeout: Duration) -> Result<(), ReceiptError> {
        let now = self.time.now_nanos();
        let deadline = self.time.deadline(now, timeout);
        let slot = self.slots.get(receipt.slot()).ok_or(ReceiptError::Stale)?;
        // Whether some deadline this call replaced was later than its own: only then may the
        // wheel have the slot filed too late (see "Telling the wheel" in `super::wheel`).
        let mut moved_earlier = false;
        loop {
            let lease = self.validate(receipt, slot)?;
            // The deadline is shared with whoever leases the slot next, so it changes only by
            // a CAS from a value of this lease's (see `Slot::change_deadline`): a call whose
            // lease ended meanwhile must not move the next lease's deadline.
            let Some(replaced) = slot.change_deadline(lease, deadline) else {
                continue;
            };
            moved_earlier |= replaced > deadline;
            if slot.cas(lease, lease.next_version()).is_ok() {
                if moved_earlier {
                    self.schedule_earlier(receipt.slot() as u32, deadline);
                }
                return Ok(());
            }
        }
    }

    /// Closes the queue: sends fail with [`SendError::Closed`] (blocked
    /// [`Queue::send_timeout`]s too); receivers drain what is held; blocked receivers with
    /// nothing visible return `None`.
    ///
    /// ```
    /// let q: visq::Queue<u8> = visq::Queue::builder().build().unwrap();
    /// q.send(1).unwrap();
    /// q.close();
    /// assert!(q.is_closed());
    /// assert_eq!(q.send(2), Err(visq::SendError::Closed(2)));
    /// assert_eq!(*q.try_receive().unwrap().body(), 1); // drains
    /// ```
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.waiters.notify_all();
        self.senders.notify_all();
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Counts and totals. Reads every slot (O(capacity)), allocates nothing.
    ///
    /// ```
    /// let q: visq::Queue<u8> = visq::Queue::builder().build().unwrap();
    /// q.send(1).unwrap();
    /// q.send(2).unwrap();
    /// let d = q.try_receive().unwrap();
    /// q.delete(d.receipt()).unwrap();
    /// let stats = q.stats();
    /// assert_eq!((stats.ready, stats.in_flight, stats.sent, stats.deleted), (1, 0, 2, 1));
    /// ```
    pub fn stats(&self) -> Stats {
        let now = self.time.now_nanos();
        self.run_wheel_if_due(now);
        let mut stats = Stats::default();
        // Read before the slots (`Acquire`): see `super::stats` ("How the totals are read").
        let sent = self.counters.sent.load(Ordering::Acquire);
        let mut filling = 0;
        let (mut oldest_ready_since, mut oldest_lease_since) = (None, None);
        let earliest = |oldest: Option<u64>, slot: &Slot<T>| {
            let since = slot.visible_since.load(Ordering::Relaxed);
            Some(oldest.map_or(since, |oldest| oldest.min(since)))
        };
        for slot in self.slots.iter() {
            let word = slot.load();
            match word.state() {
                State::Free if word.tag() == FILLING => filling += 1,
                State::Free => {}
                // Killed by its time-to-live: held until its body has moved or been dropped.
                State::Ready if word.tag() & KILLED != 0 => {
                    stats.delayed += usize::from(word.tag() & BODY_GONE == 0);
                }
                State::Ready => {
                    stats.ready += 1;
                    oldest_ready_since = earliest(oldest_ready_since, slot);
                }
                State::InFlight => {
                    stats.in_flight += 1;
                    oldest_lease_since = earliest(oldest_lease_since, slot);
                }
                State::Delayed => stats.delayed += 1,
            }
        }
        let age = |since: Option<u64>| since.map(|s| Duration::from_nanos(now.saturating_sub(s)));
        stats.oldest_ready_age = age(oldest_ready_since);
        stats.oldest_in_flight_age = age(oldest_lease_since);
        // Receives are counted by the ready ring's positions, deletes by what left: every
        // message counted in `sent` is held, or was moved or redriven (counted before its slot
        // showed `Free`), or deleted (see `super::stats`, "How the totals are read").
        self.counters.fill(&mut stats);
        stats.sent = sent;
        stats.received = self.deliveries();
        let held = (stats.ready + stats.delayed + stats.in_flight + filling) as u64;
        stats.deleted = sent
            .saturating_sub(held)
            .saturating_sub(stats.dead_lettered + stats.redriven + self.counters.ttl_dropped());
        stats.rates = lock(&self.rate_window).rates(&stats, now);
        stats
    }

    /// The latency histograms, if the queue was built with
    /// [`Builder::sample_latencies`](crate::Builder::sample_latencies): a copy taken now
    /// (allocates; O(buckets)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use visq::{ManualClock, Queue};
    /// let clock = ManualClock::new();
    /// let q: Queue<u8> = Queue::builder().sample_latencies(1).clock(clock.clone()).build()?;
    /// q.send(1).unwrap();
    /// clock.advance(Duration::from_millis(3));
    /// let d = q.try_receive().unwrap();
    /// clock.advance(Duration::from_millis(7));
    /// q.delete(d.receipt()).unwrap();
    /// let latencies = q.latencies().unwrap();
    /// assert_eq!(latencies.send_to_receive.count, 1);
    /// let ms = |d: Duration| d.as_secs_f64() * 1e3;
    /// assert!((ms(latencies.send_to_receive.p50) - 3.0).abs() < 0.03); // within 1%
    /// assert!((ms(latencies.receive_to_delete.max) - 7.0).abs() < 0.07);
    /// assert!((ms(latencies.send_to_delete.p99) - 10.0).abs() < 0.1);
    /// # Ok::<(), visq::BuildError>(())
    /// ```
    pub fn latencies(&self) -> Option<Latencies> {
        self.latency.as_ref().map(LatencyRecorder::snapshot)
    }

    /// The bytes `build()` allocated for this queue, part by part (O(1), allocates nothing).
    ///
    /// ```
    /// let q: visq::Queue<u64> = visq::Queue::builder().capacity(1024).build().unwrap();
    /// let memory = q.memory();
    /// assert!(memory.slots >= 1024 * std::mem::size_of::<u64>());
    /// assert_eq!(memory.death_records, 0); // no dead-letter queue
    /// println!("{:.1} bytes per slot", memory.per_slot());
    /// ```
    pub fn memory(&self) -> Memory {
        Memory {
            slots: std::mem::size_of_val(&*self.slots),
            rings: self.ready.heap_bytes(),
            wheel: self.wheel.heap_bytes(),
            death_records: self.deaths.get().map_or(0, DeathRecords::heap_bytes),
            latency: self.latency.as_ref().map_or(0, LatencyRecorder::heap_bytes),
            groups: self.groups.as_ref().map_or(0, Lanes::heap_bytes),
            ttl: self.ttl.as_ref().map_or(0, Ttl::heap_bytes),
            capacity: self.capacity(),
        }
    }

    /// Deliveries so far: ready-ring pops less those that were no delivery. An inspection bumps
    /// `not_received` right after its pop, so the two are read until that count holds still
    /// across the read of the pops (a few tries at most; then the count may include the pops
    /// inspections are about to count). Saturating, as relaxed loads of two variables may be
    /// reordered on weaker machines than x86.
    fn deliveries(&self) -> u64 {
        let not_received = || self.counters.not_received.load(Ordering::SeqCst);
        let mut before = not_received();
        for _ in 0..8 {
            let pops = self.ready.pops();
            let after = not_received();
            if after == before {
                return pops.saturating_sub(after);
            }
            before = after;
        }
        self.ready.pops().saturating_sub(not_received())
    }

    /// Validates `receipt` and CASes its lease from `InFlight` to `end(lease)`, retrying while
    /// only the lease version moved. Returns the slot index and the lease word it replaced.
    #[inline]
    fn end_lease(
        &self,
        receipt: Receipt,
        end: impl Fn(Word) -> Word,
    ) -> Result<(u32, Word), ReceiptError> {
        let slot = self.slots.get(receipt.slot()).ok_or(ReceiptError::Stale)?;
        loop {
            let lease = self.validate(receipt, slot)?;
            if slot.cas(lease, end(lease)).is_ok() {
                return Ok((receipt.slot() as u32, lease));
            }
        }
    }

    /// The slot's word if `receipt` is its current, unexpired lease.
    #[inline]
    fn validate(&self, receipt: Receipt, slot: &Slot<T>) -> Result<Word, ReceiptError> {
        let word = slot.load();
        if word.epoch() != receipt.epoch() {
            return Err(ReceiptError::Stale);
        }
        match word.state() {
            State::InFlight if self.time.has_passed(slot.deadline()) => Err(ReceiptError::Expired),
            State::InFlight => Ok(word),
            State::Ready | State::Delayed if word.ended_by() == ENDED_BY_EXPIRY => {
                Err(ReceiptError::Expired)
            }
            _ => Err(ReceiptError::Stale),
        }
    }

    /// Makes the owned, `Ready` slot `index` (word `ready`) visible, or moves it to the
    /// dead-letter queue if it has been received too often (`cause` says how its lease ended).
    /// If the dead-letter queue refuses, the slot is left `Delayed` and the tick to retry at is
    /// returned for the caller to file. `visible_since` is when it became receivable (for
    /// stats), `now` the current time.
    fn make_visible(
        &self,
        index: u32,
        ready: Word,
        now: u64,
        visible_since: u64,
        cause: DeathCause,
    ) -> Refile {
        if self.dead_letter_due(index) {
            return self.move_to_dead_letter(index, ready, now, cause);
        }
        self.publish_ready(index, ready, visible_since);
        None
    }

    /// Whether the owned slot `index` has been received as often as the dead-letter settings
    /// allow.
    #[inline]
    fn dead_letter_due(&self, index: u32) -> bool {
        self.dead_letter.as_ref().is_some_and(|dead_letter| {
            self.slots[index as usize]
                .receive_count
                .load(Ordering::Relaxed)
                >= dead_letter.max_receives
        })
    }

    /// Moves the owned slot `index` (word `ready`, not in any ring) to the dead-letter queue
    /// with its death record, or, if that queue refuses, keeps it `Delayed` with the record and
    /// returns the tick to retry at.
    #[cold]
    fn move_to_dead_letter(&self, index: u32, ready: Word, now: u64, cause: DeathCause) -> Refile {
        let slot = &self.slots[index as usize];
        match self.try_dead_letter(index, now, cause) {
            Ok(()) => {
                slot.store(ready.with(State::Free, 0));
                self.free_slot(index);
                None
            }
            Err(retry_at) => {
                slot.publish_delayed(ready, ready.ended_by(), retry_at);
                Some(retry_at)
            }
        }
    }

    /// Moves the body of the owned slot `index` to the dead-letter queue with its death record
    /// (counted before the caller shows the slot `Free`), or, if that queue refuses, writes
    /// body and record back and returns the tick to retry at.
    #[cold]
    pub(crate) fn try_dead_letter(
        &self,
        index: u32,
        now: u64,
        cause: DeathCause,
    ) -> Result<(), u64> {
        let slot = &self.slots[index as usize];
        let dead_letter = self
            .dead_letter
            .as_ref()
            .expect("only with a dead-letter queue");
        let records = self.deaths.get().expect("a source queue has death records");
        let rejected = matches!(cause, DeathCause::Rejected { .. });
        // SAFETY: the caller owns the slot. A record naming this queue is the one kept by an
        // earlier refused move; any other is from a death elsewhere (this queue being a
        // dead-letter queue too) and is superseded.
        let death = match unsafe { records.take(index) } {
            Some(waiting) if waiting.source == self.id => waiting,
            _ => Death {
                source: self.id,
                id: MessageId(slot.id.load(Ordering::Relaxed)),
                receive_count: slot.receive_count.load(Ordering::Relaxed),
                died_at: 0,
                cause,
            },
        };
        let of_ttl = matches!(death.cause, DeathCause::TimeToLive);
        let mut death = Some(death);
        // SAFETY: the caller owns the slot and its body is written; it is either moved on for
        // good (the slot then becomes `Free`) or written back below.
        let body = unsafe { slot.take_body() };
        match dead_letter.queue.accept_dead_letter(body, &mut death) {
            Ok(()) => {
                // Counted before the slot shows `Free`: see `super::stats` ("How the totals
                // are read").
                bump(&self.counters.dead_lettered);
                if of_ttl {
                    bump(&self.counters.ttl_dead_lettered);
                }
                Ok(())
            }
            Err(refused) => {
                // SAFETY: still the owner; the cell is empty since `take_body`, and the record
                // was not taken by the refusing queue.
                unsafe {
                    slot.write_body(refused.into_inner());
                    records.put(index, death.expect("kept on refusal"));
                }
                bump(&self.counters.dead_letter_retries);
                if rejected {
                    // The retry goes through `make_visible`, which moves only messages at the
                    // receive limit: raise the count to it (the record keeps the true count).
                    // Still the owner, the count's only writer.
                    let count = slot.receive_count.load(Ordering::Relaxed);
                    slot.receive_count
                        .store(count.max(dead_letter.max_receives), Ordering::Relaxed);
                }
                Err(self.time.tick_of(now) + self.dead_letter_retry_ticks)
            }
        }
    }

    /// Publishes the owned slot `index` as `Ready` (receivable since `visible_since`, and not
    /// leased before then) and pushes it to the ready ring; on a time-to-live queue, files it
    /// on the wheel at its expiry.
    #[inline]
    pub(crate) fn publish_ready(&self, index: u32, owned: Word, visible_since: u64) {
        self.push_ready(index, owned, visible_since);
        if self.ttl.is_some() {
            self.schedule_expiry(index);
        }
    }

    /// [`Queue::publish_ready`] without the wheel entry at the expiry: for a queue without a
    /// time-to-live.
    #[inline]
    fn push_ready(&self, index: u32, owned: Word, visible_since: u64) {
        let slot = &self.slots[index as usize];
        slot.visible_since.store(visible_since, Ordering::Relaxed);
        slot.store(owned.with(State::Ready, owned.ended_by()));
        self.ready
            .push(index)
            .expect("the ready ring has room for every slot");
        self.waiters.notify_one_after_rmw();
    }

    /// Publishes `head`, a message that its lane has just let out (see [`super::groups`]), to
    /// the back of the ready ring, receivable since `now`. Its slot is `Ready` and owned by this
    /// thread, which holds the lane's token.
    fn publish_head(&self, head: u32, now: u64) {
        let word = self.slots[head as usize].load();
        self.publish_ready(head, word, now);
    }

    /// Pushes the popped slot `index`, which this thread owns, back to the ready rings, to the
    /// back of its own level, its claim cleared (see [`super::ttl`]), and wakes a sleeping
    /// receiver for it as any other push to the ready rings does: a message a dead-letter
    /// inspection looked at, or one given back because its clone panicked.
    pub(crate) fn push_back_ready(&self, index: u32) {
        let slot = &self.slots[index as usize];
        slot.store(unclaimed(slot.load()));
        self.ready
            .push(index)
            .expect("the ready ring has room for every slot");
        self.waiters.notify_one_after_rmw();
    }

    /// Makes sure the wheel will look at slot `index` by tick `deadline`, which was just stored
    /// along with the state that makes it live.
    #[inline]
    pub(crate) fn schedule(&self, index: u32, deadline: u64) {
        if self.wheel.needs_notice(index, deadline) {
            self.wheel.notify(index);
            self.run_wheel();
        }
    }

    /// [`Queue::schedule`] for a lease that a `change_visibility` moved earlier: the wheel is
    /// run now only if `deadline` comes before `next_due`; otherwise the run `next_due` calls
    /// for files it (see "Telling the wheel" in [`super::wheel`]), so a shortening costs its
    /// caller a push. Not for a new lease or delay: the slot would stay in the inbox, unfiled,
    /// until that run, and each of its leases meanwhile would pay the notice again.
    fn schedule_earlier(&self, index: u32, deadline: u64) {
        if self.wheel.needs_notice(index, deadline) {
            self.wheel.notify(index);
            if self.wheel.needs_run_for(deadline) {
                self.run_wheel();
            }
        }
    }

    #[inline]
    pub(crate) fn run_wheel_if_due(&self, now: u64) {
        if self.wheel.is_due(self.time.tick_of(now)) {
            self.run_wheel();
        }
    }

    #[cold]
    fn run_wheel(&self) {
        let changed_next_due = self.wheel.run(
            || self.time.tick_of(self.time.now_nanos()),
            |index, now| self.visit(index, now),
        );
        if changed_next_due {
            self.waiters.notify_all();
        }
        self.drop_graves();
    }

    /// The wheel's question about slot `index` at tick `now`: expire it or end its delay if its
    /// deadline has come, or answer the deadline to re-file at; `None` for settled slots.
    fn visit(&self, index: u32, now: u64) -> Refile {
        let slot = &self.slots[index as usize];
        loop {
            let word = slot.load();
            let ended_by = match word.state() {
                State::Free => return None,
                State::Ready => match self.visit_ready_ttl(index, word, now) {
                    Some(refile) => return refile,
                    None => continue,
                },
                State::InFlight => ENDED_BY_EXPIRY,
                State::Delayed => word.tag(),
            };
            // A delayed message whose time-to-live has ended dies now, its delay over or not.
            let waiting = word.state() == State::Delayed;
            let ttl_ended = waiting && self.ttl_ended_at(index, now);
            let deadline = slot.deadline();
            if deadline > now && !ttl_ended {
                return Some(if waiting {
                    self.delayed_until(index, deadline)
                } else {
                    deadline
                });
            }
            let ready = word.with(State::Ready, ended_by | POPPED);
            if slot.cas(word, ready).is_ok() {
                if word.state() == State::InFlight {
                    bump(&self.counters.expired);
                }
                let now_tick = now;
                let now = self.time.start_of(now);
                if ttl_ended || self.ttl_ended_at(index, now_tick) {
                    return self.kill_owned(index, ready, now, true);
                }
                let visible_since = self.time.start_of(deadline).min(now);
                return self.make_visible(index, ready, now, visible_since, DeathCause::Expired);
            }
        }
    }
}

/// Whether any level of `ready` looked non-empty at the moment of the call (a sleeper's
/// re-check: a push is counted once it has claimed its position, even if a pop would still
/// wait for it to write its cell). Each level's pushes are read with a read-modify-write, which
/// is what lets a push notify without a fence (see [`super::waiters`]); it must look at every
/// level, since a push to any of them notifies only sleepers registered before it.
fn has_unclaimed(ready: &ReadyRings) -> bool {
    ready.levels().any(|ring| {
        let taken = ring.pops();
        ring.pushes_acquired() > taken
    })
}

/// Pushes `index` back to the ready rings (to the back of its own level) if dropped (on
/// unwind), its claim cleared (see [`super::ttl`]), counting the pop in `not_received` (if the
/// popper has not counted it already), and wakes a sleeping receiver for it as any other push
/// to the ready rings does; forgotten on success.
pub(crate) struct GiveBackOnUnwind<'a, T> {
    pub(crate) queue: &'a Queue<T>,
    /// The popped slot.
    pub(crate) index: u32,
    /// Whether to count the pop in `not_received` (false if the popper has counted it).
    pub(crate) count_not_received: bool,
}

impl<T> Drop for GiveBackOnUnwind<'_, T> {
    fn drop(&mut self) {
        if self.count_not_received {
            bump(&self.queue.counters.not_received);
        }
        self.queue.push_back_ready(self.index);
    }
}

/// The deliveries a batch has popped and cloned but not leased yet (`out[from..]`): if a
/// later clone unwinds, each is given back to the ready ring as if it had never been popped
/// (its receive count restored, its pop counted as no delivery, a sleeper woken) and dropped
/// from `out`. Once all clones are done, `from` is moved to the end: nothing to give back.
struct GiveBackUnleased<'a, T> {
    queue: &'a Queue<T>,
    out: &'a mut Vec<Delivery<T>>,
    from: usize,
}

impl<T> Drop for GiveBackUnleased<'_, T> {
    fn drop(&mut self) {
        let q = self.queue;
        for delivery in self.out.drain(self.from..) {
            let index = delivery.receipt.slot() as u32;
            // This thread still owns the popped `Ready` slot (its lease was never published).
            let slot = &q.slots[index as usize];
            slot.receive_count
                .store(delivery.receive_count - 1, Ordering::Relaxed);
            drop(GiveBackOnUnwind {
                queue: q,
                index,
                count_not_received: true,
            });
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        for slot in self.slots.iter_mut() {
            if holds_body(slot.word_exclusive()) {
                // SAFETY: `&mut self` excludes every other access; a slot that is not `Free`
                // (nor killed with its body gone) holds a written body, dropped here once.
                unsafe { slot.drop_body() };
            }
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.capacity())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::core::clock::ManualClock;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::AtomicBool as StdAtomicBool;
    use std::sync::Arc;
    use std::thread;

    /// Waits (wall-clock, bounded) until `done()` holds, for another thread to get somewhere.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < give_up, "timed out waiting until {what}");
            thread::yield_now();
        }
    }

    /// A body whose clone runs `on_clone` first (which may panic or wait).
    struct Hooked(Arc<dyn Fn() + Send + Sync>);

    impl Clone for Hooked {
        fn clone(&self) -> Self {
            (self.0)();
            Self(self.0.clone())
        }
    }

    /// A queue on `clock` (1 ms tick, 10 ms leases) whose one message's lease has just
    /// expired (the wheel is due), with the wheel's claim held by the caller, standing for
    /// another thread that is running the wheel and has not yet fired that lease.
    fn due_lease_while_the_wheel_is_held(clock: &ManualClock) -> Arc<Queue<u32>> {
        let q: Arc<Queue<u32>> = Arc::new(
            Queue::builder()
                .tick(Duration::from_millis(1))
                .visibility_timeout(Duration::from_millis(10))
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        q.send(1).unwrap();
        q.try_receive().expect("leased, then abandoned");
        clock.advance(Duration::from_millis(11));
        q
    }

    /// LIFO reuse (see `super::free`): a send takes the slot freed last, so a queue that
    /// holds few messages keeps using the same few slots, whatever its capacity.
    #[test]
    fn a_send_reuses_the_slot_freed_last() {
        let q: Queue<u32> = Queue::builder().capacity(1 << 16).build().unwrap();
        let slot_of = |q: &Queue<u32>| {
            let d = q.try_receive().unwrap();
            let slot = d.receipt().slot();
            q.delete(d.receipt()).unwrap();
            slot
        };
        q.send(1).unwrap();
        q.send(2).unwrap();
        let (first, second) = (q.try_receive().unwrap(), q.try_receive().unwrap());
        q.delete(second.receipt()).unwrap();
        q.delete(first.receipt()).unwrap();
        q.send(3).unwrap();
        assert_eq!(slot_of(&q), first.receipt().slot(), "the slot freed last");
        for n in 0..1000 {
            q.send(n).unwrap();
            assert_eq!(slot_of(&q), first.receipt().slot());
        }
        let ids: Vec<_> = (0..3).map(|n| q.send(n).unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids grow in send order"
        );
    }

    /// `Full` is exact: refused only while `capacity` messages are held, and each delete, move
    /// or redrive makes room for exactly one more; `sent` and `deleted` exact at rest.
    #[test]
    fn full_is_exact_and_totals_balance_at_rest() {
        let clock = ManualClock::new();
        let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(2).build().unwrap());
        let q: Queue<u32> = Queue::builder()
            .capacity(3)
            .clock(clock.clone())
            .dead_letter(dlq.clone(), 1)
            .build()
            .unwrap();
        for n in 0..3 {
            q.send(n).unwrap();
        }
        assert_eq!(q.send(9), Err(SendError::Full(9)));
        let d = q.try_receive().unwrap();
        q.delete(d.receipt()).unwrap();
        q.send(3).unwrap();
        assert_eq!(q.send(9), Err(SendError::Full(9)));
        let d = q.try_receive().unwrap();
        q.release(d.receipt()).unwrap(); // its last receive: moved to `dlq`
        q.send(4).unwrap();
        assert_eq!(q.send(9), Err(SendError::Full(9)));
        let d = q.try_receive().unwrap();
        q.change_visibility(d.receipt(), Duration::from_secs(60))
            .unwrap();
        let stats = q.stats();
        assert_eq!((stats.sent, stats.deleted, stats.dead_lettered), (5, 1, 1));
        assert_eq!((stats.ready, stats.in_flight), (2, 1));
        assert_eq!(dlq.redrive(&q, None, 1).refused, Some(SendError::Full(())));
        let d = q.try_receive().unwrap();
        q.delete(d.receipt()).unwrap();
        assert_eq!(dlq.redrive(&q, None, 1).moved, 1);
        let (stats, dead) = (q.stats(), dlq.stats());
        assert_eq!((stats.sent, stats.deleted, stats.ready), (6, 2, 2));
        assert_eq!((dead.sent, dead.redriven, dead.deleted), (1, 1, 0));
    }

    #[test]
    fn receive_at_deadline_plus_tick_waits_for_the_thread_running_the_wheel() {
        let clock = ManualClock::new();
        let q = due_lease_while_the_wheel_is_held(&clock);
        let claim = q.wheel.claim().expect("nobody else runs it");
        let receiver = {
            let q = q.clone();
            thread::spawn(move || q.try_receive().map(|d| d.receive_count()))
        };
        wait_until("the receiver waits for the wheel", || {
            q.waiters.sleepers() == 1 || receiver.is_finished()
        });
        // The holder finishes: it lets go, and its run (here the next one) fires the lease.
        drop(claim);
        q.stats();
        assert_eq!(
            receiver.join().unwrap(),
            Some(2),
            "the lease had expired a tick before the receive"
        );
    }

    #[test]
    fn receiver_waiting_for_the_thread_running_the_wheel_parks_instead_of_spinning() {
        // The monotonic clock: with it a receiver computes its nap from the wall time until
        // the wheel's next due tick, which is zero once that tick has passed. One 1 ms lease
        // is left to expire (a wall-clock wait of about 2 ms).
        let q: Arc<Queue<u32>> = Arc::new(
            Queue::builder()
                .tick(Duration::from_millis(1))
                .visibility_timeout(Duration::from_millis(1))
                .build()
                .unwrap(),
        );
        q.send(1).unwrap();
        q.try_receive().expect("leased, then abandoned");
        let claim = q.wheel.claim().expect("nobody else runs it");
        wait_until("the lease's deadline passes", || {
            q.wheel.is_due(q.time.tick_of(q.time.now_nanos()))
        });
        let receiver = {
            let q = q.clone();
            thread::spawn(move || {
                q.receive(Duration::from_secs(10))
                    .map(|d| d.receive_count())
            })
        };
        wait_until("the receiver parks", || q.waiters.sleepers() == 1);
        // Wall-clock time is what is under test here: a parked receiver's naps while the
        // wheel stays held (a spin napped for zero, thousands of times).
        thread::sleep(Duration::from_millis(100));
        let naps = q.waiters.naps();
        drop(claim);
        q.stats();
        assert_eq!(receiver.join().unwrap(), Some(2));
        assert!(naps <= 2, "{naps} naps in 100 ms: the receiver spins");
    }

    #[test]
    fn receiver_wakes_for_a_deadline_filed_between_its_nap_and_its_registration() {
        // The monotonic clock: a parked receiver wakes for a deadline only through its nap
        // ending then. Wall-clock time is what is under test (the 50 ms lease's expiry).
        let q: Arc<Queue<u32>> = Arc::new(
            Queue::builder()
                .tick(Duration::from_millis(1))
                .visibility_timeout(Duration::from_millis(50))
                .build()
                .unwrap(),
        );
        let registration = q.waiters.hold();
        let receiver = {
            let q = q.clone();
            thread::spawn(move || {
                let start = Instant::now();
                let got = q
                    .receive(Duration::from_secs(10))
                    .map(|d| d.receive_count());
                (got, start.elapsed())
            })
        };
        // The receiver has read `next_due` (nothing due: a nap of its whole wait) and waits
        // for the lock to register.
        wait_until("the receiver computes its nap", || q.waiters.naps() == 1);
        q.send(1).unwrap();
        q.try_receive().expect("leased, then abandoned");
        drop(registration);
        let (got, waited) = receiver.join().unwrap();
        assert_eq!(got, Some(2), "the abandoned lease expires and is delivered");
        assert!(
            waited < Duration::from_secs(2),
            "woken for the 50 ms deadline, not after its wait ({waited:?})"
        );
    }

    #[test]
    fn delete_wakes_a_parked_sender() {
        let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(1).build().unwrap());
        q.send(1).unwrap();
        let sender = {
            let q = q.clone();
            thread::spawn(move || q.send_timeout(2, Duration::from_secs(30)).map(drop))
        };
        wait_until("the sender parks", || q.senders.sleepers() == 1);
        let leased = q.try_receive().unwrap();
        q.delete(leased.receipt()).unwrap();
        assert_eq!(sender.join().unwrap(), Ok(()), "woken, not timed out");
        assert_eq!(*q.try_receive().unwrap().body(), 2);
    }

    #[test]
    fn message_given_back_by_a_panicking_clone_wakes_a_parked_receiver() {
        let q: Arc<Queue<Hooked>> = Arc::new(Queue::builder().build().unwrap());
        let parked = Arc::new(StdAtomicBool::new(false));
        let panic_once = Arc::new(StdAtomicBool::new(true));
        let hook = {
            let (q, parked, panic_once) = (q.clone(), parked.clone(), panic_once.clone());
            move || {
                if panic_once.swap(false, Ordering::SeqCst) {
                    // The message is out of the ready ring: let the other receiver find the
                    // queue empty and park, then fail.
                    parked.store(true, Ordering::SeqCst);
                    wait_until("the second receiver parks", || q.waiters.sleepers() == 1);
                    panic!("clone fails");
                }
            }
        };
        q.send(Hooked(Arc::new(hook))).unwrap();
        let receiver = {
            let (q, parked) = (q.clone(), parked.clone());
            thread::spawn(move || {
                wait_until("the first receiver pops", || parked.load(Ordering::SeqCst));
                let start = Instant::now();
                let got = q.receive(Duration::from_secs(10)).is_some();
                (got, start.elapsed())
            })
        };
        let first = catch_unwind(AssertUnwindSafe(|| q.try_receive()));
        assert!(first.is_err(), "the first clone panics");
        let (got, waited) = receiver.join().unwrap();
        assert!(got, "the message given back is delivered");
        assert!(
            waited < Duration::from_secs(2),
            "the parked receiver was woken at once, not after its wait ({waited:?})"
        );
    }
}
