//! Configuring and building a queue.

use crate::clock::ManualClock;
use crate::error::BuildError;
use crate::queue::Queue;
use crate::{MAX_CAPACITY, MAX_TIMEOUT};
use std::sync::Arc;
use std::time::Duration;

/// Where a queue sends messages that were received too often.
pub(crate) struct DeadLetter<T> {
    pub(crate) queue: Arc<Queue<T>>,
    pub(crate) max_receives: u32,
}

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
    pub(crate) capacity: usize,
    pub(crate) visibility_timeout: Duration,
    pub(crate) dead_letter: Option<DeadLetter<T>>,
    pub(crate) tick: Duration,
    pub(crate) clock: Option<ManualClock>,
    pub(crate) latency_sample: u32,
}

impl<T> Default for Builder<T> {
    fn default() -> Self {
        Self {
            capacity: 1024,
            visibility_timeout: Duration::from_secs(30),
            dead_letter: None,
            tick: Duration::from_millis(1),
            clock: None,
            latency_sample: 0,
        }
    }
}

impl<T> Builder<T> {
    /// The most messages held at once: ready, delayed and in flight together (default 1024,
    /// at most [`MAX_CAPACITY`]). All their memory is allocated by [`Builder::build`].
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How long a received message stays invisible to other receivers (default 30 s, at most
    /// [`MAX_TIMEOUT`]).
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// After a message has been received `max_receives` times, the next time it becomes
    /// visible again (expiry or release) it is moved to `queue` instead. If `queue` is full or
    /// closed, the message stays here, invisible, and the move is retried every 10 ms (counted
    /// in [`Stats::dead_letter_retries`](crate::Stats)). Both queues then keep a death record
    /// per slot (56 bytes on 64-bit targets, allocated by this `build`) for
    /// [`Queue::dead_letters`].
    pub fn dead_letter(mut self, queue: Arc<Queue<T>>, max_receives: u32) -> Self {
        self.dead_letter = Some(DeadLetter {
            queue,
            max_receives,
        });
        self
    }

    /// The timing wheel's resolution (default 1 ms): deadlines fire at most one tick late and
    /// never early.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Take time from `clock` instead of the monotonic clock (for deterministic tests).
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
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
        self.latency_sample = one_in;
        self
    }

    /// Checks the settings and allocates the queue: every allocation is made here and every
    /// one is fallible, so memory that cannot be had (the slots, the rings, the wheel, the
    /// latency recorder, the death records of this queue and of a dead-letter queue attached
    /// for the first time) is [`BuildError::CapacityTooLarge`], never an abort.
    pub fn build(self) -> Result<Queue<T>, BuildError> {
        if self.capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if self.capacity > MAX_CAPACITY {
            return Err(BuildError::CapacityTooLarge(self.capacity));
        }
        if self.tick.is_zero() {
            return Err(BuildError::ZeroTick);
        }
        if self.tick > MAX_TIMEOUT {
            return Err(BuildError::TickTooLong);
        }
        if self.visibility_timeout.is_zero() || self.visibility_timeout > MAX_TIMEOUT {
            return Err(BuildError::InvalidVisibilityTimeout);
        }
        if matches!(
            self.dead_letter,
            Some(DeadLetter {
                max_receives: 0,
                ..
            })
        ) {
            return Err(BuildError::ZeroMaxReceives);
        }
        Queue::allocate(self)
    }
}
