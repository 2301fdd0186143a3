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
    /// [`SendOptions::priority`](crate::SendOptions::priority) (default 1 level: no priorities;
    /// at most [`MAX_PRIORITY_LEVELS`]). Messages of one level are delivered in the order they
    /// became visible; a message given back or expired keeps its priority.
    pub fn priorities(mut self, levels: u8) -> Self {
        self.settings.priority_levels = levels;
        self
    }

    /// FIFO message groups, as SQS FIFO queues' `MessageGroupId`: the messages sent with one
    /// [`SendOptions::group`](crate::SendOptions::group) are delivered in send order, at most
    /// one of them leased at a time, over `lanes` lanes (rounded up to a power of two) that
    /// groups are hashed to. See [`Queue::send_with`] for the exact guarantees.
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
