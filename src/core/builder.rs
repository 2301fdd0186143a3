//! Configuring and building a queue.

use crate::core::clock::ManualClock;
use crate::core::error::BuildError;
use crate::core::queue::{DeadLetterTarget, Queue, Settings};
use crate::{MAX_CAPACITY, MAX_MESSAGE_TTL, MAX_PRIORITY_LEVELS, MAX_TIMEOUT};
use std::sync::Arc;
use std::time::Duration;

/// Settings for a [`Queue`]; made by [`Queue::builder`].
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use visq::Queue;
///
/// let dlq: Arc<Queue<String>> = Arc::new(Queue::builder().capacity(16).build()?);
/// let q: Queue<String> = Queue::builder()
///     .capacity(1024)
///     .visibility_timeout(Duration::from_secs(10))
///     .dead_letter(dlq.clone(), 3)
///     .tick(Duration::from_millis(5))
///     .build()?;
/// assert_eq!(q.capacity(), 1024);
/// # Ok::<(), visq::BuildError>(())
/// ```
pub struct Builder<T> {
    settings: Settings<T>,
}

impl<T> Queue<T> {
    /// Settings for a new queue, with the defaults documented on [`Builder`].
    pub fn builder() -> Builder<T> {
        Builder::default()
    }
}

impl<T> Default for Builder<T> {
    fn default() -> Self {
        let settings = Settings {
            capacity: 1024,
            visibility_timeout: Duration::from_secs(30),
            dead_letter: None,
            tick: Duration::from_millis(1),
            clock: None,
            latency_sample: 0,
            priority_levels: 1,
            group_lanes: None,
            message_ttl: None,
        };
        Self { settings }
    }
}

impl<T> Builder<T> {
    /// The most messages held at once: ready, delayed and in flight together (default 1024,
    /// at most [`MAX_CAPACITY`]). All their memory is allocated by [`Builder::build`].
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.settings.capacity = capacity;
        self
    }

    /// How long a received message stays invisible to other receivers (default 30 s, at most
    /// [`MAX_TIMEOUT`]).
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.settings.visibility_timeout = timeout;
        self
    }

    /// After a message has been received `max_receives` times, the next time it becomes
    /// visible again (expiry or release) it is moved to `queue` instead. If `queue` is full or
    /// closed, the message stays here, invisible, and the move is retried every 10 ms (counted
    /// in [`Stats::dead_letter_retries`](crate::Stats)). Both queues then keep a death record
    /// per slot (56 bytes on 64-bit targets, allocated by this `build`) for
    /// [`Queue::dead_letters`].
    pub fn dead_letter(mut self, queue: Arc<Queue<T>>, max_receives: u32) -> Self {
        self.settings.dead_letter = Some(DeadLetterTarget {
            queue,
            max_receives,
        });
        self
    }

    /// The timing wheel's resolution (default 1 ms): deadlines fire at most one tick late and
    /// never early. Where the queue reads time from the CPU's time-stamp counter (an
    /// invariant TSC that the kernel uses as its clock source; `VISQ_CLOCK=monotonic` turns it
    /// off), a deadline is rounded up by 2 µs to cover the counter's skew from the monotonic
    /// clock, so against the monotonic clock it fires at most one tick and 4 µs late.
    /// At least [`MIN_TICK`](crate::MIN_TICK) (1 µs): `build` refuses a shorter one with
    /// [`BuildError::TickTooShort`] (and a zero one with [`BuildError::ZeroTick`]).
    pub fn tick(mut self, tick: Duration) -> Self {
        self.settings.tick = tick;
        self
    }

    /// Take time from `clock` instead of the monotonic clock (for deterministic tests).
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.settings.clock = Some(clock);
        self
    }

    /// Record latency histograms (send-to-receive, send-to-delete and receive-to-delete, read
    /// with [`Queue::latencies`]) for about one message in `one_in`: 0 is off (the default),
    /// 1 every message; others are rounded up to a power of two, at most 2^24. Messages are picked by a hash
    /// of their id, so the sample follows no pattern of the traffic.
    ///
    /// Recording takes no lock and allocates nothing. A sampled message costs an exact clock
    /// read in `send` and in `delete` and three counter increments (about 55 ns in all on the
    /// machine of results/README.md, where one lifecycle costs about as much again); the
    /// others cost a hash and a branch. One in 32 keeps the throughput cost under 10% there
    /// (measured in results/README.md); 1 records every message and halves the uncontended
    /// throughput. Memory: about 130 KiB and 8 bytes per slot, allocated here.
    pub fn sample_latencies(mut self, one_in: u32) -> Self {
        self.settings.latency_sample = one_in;
        self
    }

    /// Delivers higher-priority visible messages first: priorities `0` (the default, lowest)
    /// to `levels - 1` (highest), given per message with
    /// [`SendOptions::priority`](crate::SendOptions::priority) and checked by
    /// [`Queue::send_with`] (default 1 level: no priorities; at most [`MAX_PRIORITY_LEVELS`]).
    ///
    /// Order: every receive form ([`Queue::try_receive`], [`Queue::receive`],
    /// [`Queue::receive_batch`], [`Queue::try_take`], [`Queue::take`], the async front, and
    /// [`Queue::dead_letters`] / [`Queue::redrive`] on a queue with levels) takes from the
    /// highest level that has a visible message; within a level, messages come in the order
    /// they became visible there (FIFO).
    ///
    /// Exact when sequential: a receive never returns a message of level `l` while a message
    /// of a higher level was visible before the receive began (made visible by an operation
    /// that returned before it). Under concurrency, a message made visible while a receive
    /// scans the levels may be passed over by that one receive: it is not lost, it is the next
    /// receive's.
    ///
    /// A message keeps its priority for life in its queue: a release, an expired lease, a
    /// [`Queue::hand_back`], a [`Queue::nack`] (after its delay) and the end of a send's delay
    /// all put it at the back of its own level. A dead letter enters the dead-letter queue at
    /// level 0, and a redriven message enters its target at level 0.
    ///
    /// Starvation: priority is strict, with no aging. Lower levels get deliveries only while
    /// every higher level has nothing visible, so a steady stream of high-priority messages
    /// that the receivers never catch up with starves the lower levels for as long as it
    /// lasts; keep the high levels for work that is rare or short.
    ///
    /// Cost: one ready ring per level, each with room for every slot, and one byte per slot
    /// for its level (only with more than one level), all in
    /// [`Memory::rings`](crate::Memory::rings). A receive tries the levels from the highest
    /// down, so it pays one empty look per level above the one it takes from (and, when the
    /// top level is empty, a cheap clock reading to make due delays and leases visible first);
    /// with one level a message costs two branches more than before priorities existed.
    ///
    /// ```
    /// use visq::{Queue, SendOptions};
    /// let q: Queue<&str> = Queue::builder().priorities(3).build()?;
    /// q.send("low").unwrap();
    /// q.send_with("high", &SendOptions::new().priority(2)).unwrap();
    /// q.send_with("middle", &SendOptions::new().priority(1)).unwrap();
    /// let order: Vec<&str> = std::iter::from_fn(|| q.try_take().map(|t| t.into_body())).collect();
    /// assert_eq!(order, ["high", "middle", "low"]);
    /// # Ok::<(), visq::BuildError>(())
    /// ```
    pub fn priorities(mut self, levels: u8) -> Self {
        self.settings.priority_levels = levels;
        self
    }

    /// FIFO message groups, as SQS FIFO queues' `MessageGroupId`: the messages sent with one
    /// [`SendOptions::group`](crate::SendOptions::group) are delivered in send order, one at a
    /// time, over `lanes` lanes (rounded up to a power of two, at most [`MAX_CAPACITY`]) that
    /// groups are hashed to.
    ///
    /// * **Order.** A group's messages are delivered in send order: sends from one thread in
    ///   program order, concurrent sends in the order they enter the group's lane.
    /// * **One at a time.** At most one message of a group is ready or leased at a time, its
    ///   *head*. The next becomes visible only when the head is deleted, moved to the
    ///   dead-letter queue (any cause, [`Queue::reject`] included) or taken
    ///   ([`Queue::try_take`]; a [`redrive`](Queue::redrive) out of the queue too). A released,
    ///   expired, handed-back or nacked head stays the head: it is delivered again before the
    ///   rest of its group; a [`nack`](Queue::nack) with a delay makes the group wait out the
    ///   delay.
    /// * **Lanes and sharing.** Groups are hashed to lanes ([`Queue::group_lane`], a fixed
    ///   function of key and lane count) and the guarantees hold per *lane*: groups that share
    ///   a lane are delivered as one ordered sequence (each still in its own order and one at a
    ///   time, but not in parallel with each other). With `L` lanes and `G` groups holding
    ///   messages at once, a given group shares its lane with probability about `G/L`: use
    ///   `lanes` of at least 4 times the groups expected to hold messages at once. Groups on
    ///   different lanes are delivered in parallel.
    /// * **Fairness.** A lane has at most one message in the ready ring, and its next message
    ///   joins the *back* of the ready ring (of its priority level), so lanes with ready work are
    ///   served round-robin: once a lane's head is visible, at most as many deliveries as there
    ///   were other messages visible at that moment happen before it. One hot group with
    ///   thousands of messages queued has one of them visible at a time.
    /// * **Ungrouped messages.** A message sent without a group on a grouped queue is a group
    ///   of its own: delivered as on a plain queue, ordered with nothing. A grouped message
    ///   with a delay is refused ([`InvalidSend::DelayedGroupMessage`](crate::InvalidSend)).
    ///   The queue keeps a message's lane, not its key: a message moved to the dead-letter
    ///   queue, or redriven, arrives there without a group.
    /// * **Priorities.** With [`Builder::priorities`], a lane's head joins the ring of its own
    ///   priority when it becomes visible; a group's order is send order whatever the
    ///   priorities.
    /// * **Memory** is fixed at build ([`Memory::groups`](crate::Memory::groups)): per lane
    ///   12 bytes, per slot and per lane a 4-byte link; a send allocates nothing and a group
    ///   with no messages costs nothing. Sends, receives and settles take no lock. A message
    ///   waiting behind its head counts as ready in [`Queue::stats`].
    /// * **Worker pools.** A [`Consumer`](crate::Consumer) over a grouped queue needs no
    ///   option: it processes each group in order and groups in parallel. With
    ///   [`prefetch`](crate::ConsumerBuilder::prefetch) above 1 a worker may hold the heads of
    ///   several groups and run them one after the other.
    ///
    /// ```
    /// use visq::{Queue, SendOptions};
    /// let q: Queue<&str> = Queue::builder().message_groups(64).build().unwrap();
    /// let alice = SendOptions::new().group("alice");
    /// q.send_with("alice: order", &alice).unwrap();
    /// q.send_with("alice: pay", &alice).unwrap();
    /// let first = q.try_receive().unwrap();
    /// assert_eq!(*first.body(), "alice: order");
    /// assert!(q.try_receive().is_none()); // "pay" waits for "order" to be deleted
    /// q.delete(first.receipt()).unwrap();
    /// assert_eq!(*q.try_receive().unwrap().body(), "alice: pay");
    /// ```
    pub fn message_groups(mut self, lanes: usize) -> Self {
        self.settings.group_lanes = Some(lanes);
        self
    }

    /// A time-to-live for every message (as RabbitMQ's `x-message-ttl` and SQS's retention
    /// period), counted from its send: a message still waiting to be received (ready, or
    /// delayed) when it passes goes to the dead-letter queue (cause
    /// [`DeathCause::TimeToLive`](crate::DeathCause::TimeToLive)), or, on a queue without one,
    /// is dropped (its body dropped); both are counted in
    /// [`Stats::ttl_expired`](crate::Stats::ttl_expired), and a dropped message is not a
    /// delete. More than 0 and at most [`MAX_MESSAGE_TTL`] (else
    /// [`BuildError::InvalidMessageTtl`]); not with [`Builder::message_groups`]
    /// ([`BuildError::TtlWithGroups`]). [`SendOptions::ttl`](crate::SendOptions::ttl) sets one
    /// message's instead.
    ///
    /// * Deadlines are in ticks as everywhere (rounded up): never early (a receive before the
    ///   deadline tick gets the message) and at most one tick late (any operation that runs
    ///   the wheel a tick after the deadline, a [`Queue::stats`] call too, finds it gone, with
    ///   no receive needed). A receive that finds a message whose deadline tick has come
    ///   before the wheel ran does not deliver it: it expires it the same way and moves on.
    /// * A leased message is never expired while leased (as RabbitMQ keeps unacked messages):
    ///   if its time-to-live has passed when its lease ends (release, expiry, hand-back, nack),
    ///   it dies then instead of becoming visible again.
    /// * If the dead-letter queue is full, the message is held (counted in `delayed`, never
    ///   delivered) and the move retried, as every move there is.
    /// * A message that dies in the ready ring leaves its index there until a receive passes
    ///   over it, or, if it is at the ring's head, until its move or drop is done (which
    ///   frees the dead at the head, no receive needed); only one that died behind a message
    ///   still waiting takes up room until that message is received or dies.
    /// * Cost: each slot keeps its expiry tick (8 bytes), and without a dead-letter queue a
    ///   ring of killed messages whose bodies wait for the wheel's run to end (8 bytes per
    ///   slot; [`Memory::ttl`](crate::Memory::ttl)). Each receive claims the message it pops
    ///   with one atomic OR and checks its expiry; each message is filed on the wheel at its
    ///   expiry. A queue without a time-to-live pays none of this.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use visq::{DeathCause, ManualClock, Queue};
    /// let clock = ManualClock::new();
    /// let dlq: Arc<Queue<&str>> = Arc::new(Queue::builder().build().unwrap());
    /// let q: Queue<&str> = Queue::builder()
    ///     .message_ttl(Duration::from_secs(60))
    ///     .dead_letter(dlq.clone(), 5)
    ///     .clock(clock.clone())
    ///     .build()
    ///     .unwrap();
    /// q.send("stale").unwrap();
    /// clock.advance(Duration::from_secs(61));
    /// assert_eq!(q.stats().ttl_expired, 1); // no receive needed
    /// assert_eq!(dlq.dead_letters(1)[0].cause, DeathCause::TimeToLive);
    /// ```
    pub fn message_ttl(mut self, ttl: Duration) -> Self {
        self.settings.message_ttl = Some(ttl);
        self
    }

    /// Checks the settings and allocates the queue: every allocation is made here and every
    /// one is fallible, so memory that cannot be had (the slots, the rings, the wheel, the
    /// latency recorder, the death records of this queue and of a dead-letter queue attached
    /// for the first time) is [`BuildError::CapacityTooLarge`], never an abort.
    pub fn build(self) -> Result<Queue<T>, BuildError> {
        if self.settings.capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if self.settings.capacity > MAX_CAPACITY {
            return Err(BuildError::CapacityTooLarge(self.settings.capacity));
        }
        if self.settings.tick.is_zero() {
            return Err(BuildError::ZeroTick);
        }
        if self.settings.tick < crate::MIN_TICK {
            return Err(BuildError::TickTooShort);
        }
        if self.settings.tick > MAX_TIMEOUT {
            return Err(BuildError::TickTooLong);
        }
        if self.settings.visibility_timeout.is_zero()
            || self.settings.visibility_timeout > MAX_TIMEOUT
        {
            return Err(BuildError::InvalidVisibilityTimeout);
        }
        if matches!(
            self.settings.dead_letter,
            Some(DeadLetterTarget {
                max_receives: 0,
                ..
            })
        ) {
            return Err(BuildError::ZeroMaxReceives);
        }
        let levels = self.settings.priority_levels;
        if levels == 0 || levels > MAX_PRIORITY_LEVELS {
            return Err(BuildError::InvalidPriorityLevels(levels));
        }
        if let Some(lanes) = self.settings.group_lanes {
            if lanes == 0 || lanes > MAX_CAPACITY {
                return Err(BuildError::InvalidGroupLanes(lanes));
            }
        }
        if self.settings.message_ttl.is_some() && self.settings.group_lanes.is_some() {
            return Err(BuildError::TtlWithGroups);
        }
        if let Some(ttl) = self.settings.message_ttl {
            if ttl.is_zero() || ttl > MAX_MESSAGE_TTL {
                return Err(BuildError::InvalidMessageTtl);
            }
        }
        Queue::allocate(self.settings)
    }
}
