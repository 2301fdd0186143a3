//! Configuring and building a queue.

use crate::core::clock::ManualClock;
use crate::core::error::BuildError;
use crate::core::queue::{DeadLetterTarget, Queue, Settings};
use crate::{MAX_CAPACITY, MAX_TIMEOUT};
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
        Queue::allocate(self.settings)
    }
}
