//! One trait per family of queue, so every workload is written once:
//!
//! * [`Lease`]: queues with visibility timeouts (visq, the lock-based reference, the tutorial
//!   design): send, receive (a lease), delete / release / change_visibility by receipt.
//! * [`Handoff`]: plain MPMC queues (crossbeam-channel bounded, crossbeam-queue `ArrayQueue`):
//!   push and pop, no lease; the speed limit of a good queue with weaker guarantees.
//!
//! [`Contender`] names them all for tables, plots and dispatch.

use super::lockref::{LockDelivery, LockRef, Order};
use super::tutorial::{Tutorial, TutorialDelivery, DEFAULT_POLL};
use super::{Backoff, Payload};
use std::time::{Duration, Instant};
use visq::ManualClock;

/// Settings every queue is built from.
#[derive(Clone, Debug)]
pub struct Config {
    pub capacity: usize,
    pub visibility_timeout: Duration,
    /// Drive deadlines from this clock (visq and the lock-based reference only).
    pub clock: Option<ManualClock>,
    /// The tutorial design's poll interval.
    pub poll: Duration,
    /// visq's latency sampling: one message in this many (0: off; visq only).
    pub latency_sample: u32,
    /// visq's priority levels (1: none; visq only, the reference's order decides its own).
    pub priorities: u8,
    /// visq's message-group lanes (`None`: an ungrouped queue; visq only).
    pub group_lanes: Option<usize>,
}

impl Config {
    /// `capacity` messages, 30 s visibility timeout, the monotonic clock, the tutorial's 1 s poll.
    pub fn new(capacity: usize) -> Self {
        Config {
            capacity,
            visibility_timeout: Duration::from_secs(30),
            clock: None,
            poll: DEFAULT_POLL,
            latency_sample: 0,
            priorities: 1,
            group_lanes: None,
        }
    }

    pub fn priorities(mut self, levels: u8) -> Self {
        self.priorities = levels;
        self
    }

    pub fn group_lanes(mut self, lanes: usize) -> Self {
        self.group_lanes = Some(lanes);
        self
    }

    pub fn sample_latencies(mut self, one_in: u32) -> Self {
        self.latency_sample = one_in;
        self
    }

    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }
}

/// A queue with leases and receipts.
pub trait Lease<T: Payload>: Send + Sync + Sized {
    type Delivery: Send;
    type Receipt: Clone + Send;
    const NAME: &'static str;
    fn build(config: &Config) -> Self;
    /// Non-blocking; gives the body back when full.
    fn send(&self, body: T) -> Result<(), T>;
    fn try_receive(&self) -> Option<Self::Delivery>;
    fn receive(&self, wait: Duration) -> Option<Self::Delivery>;
    fn receive_batch(&self, out: &mut Vec<Self::Delivery>, max: usize, wait: Duration) -> usize;
    fn body(delivery: &Self::Delivery) -> &T;
    fn receipt(delivery: &Self::Delivery) -> Self::Receipt;
    /// The ack; true when it took effect.
    fn delete(&self, delivery: &Self::Delivery) -> bool;
    fn change_visibility(&self, receipt: &Self::Receipt, timeout: Duration) -> bool;
    fn release(&self, receipt: &Self::Receipt) -> bool;
    fn close(&self);
}

impl<T: Payload> Lease<T> for visq::Queue<T> {
    type Delivery = visq::Delivery<T>;
    type Receipt = visq::Receipt;
    const NAME: &'static str = "visq";

    fn build(config: &Config) -> Self {
        let mut builder = visq::Queue::builder()
            .capacity(config.capacity)
            .visibility_timeout(config.visibility_timeout)
            .sample_latencies(config.latency_sample);
        if let Some(clock) = &config.clock {
            builder = builder.clock(clock.clone());
        }
        if config.priorities > 1 {
            builder = builder.priorities(config.priorities);
        }
        if let Some(lanes) = config.group_lanes {
            builder = builder.message_groups(lanes);
        }
        builder.build().expect("valid settings")
    }

    #[inline]
    fn send(&self, body: T) -> Result<(), T> {
        visq::Queue::send(self, body)
            .map(drop)
            .map_err(visq::SendError::into_inner)
    }

    #[inline]
    fn try_receive(&self) -> Option<Self::Delivery> {
        visq::Queue::try_receive(self)
    }

    #[inline]
    fn receive(&self, wait: Duration) -> Option<Self::Delivery> {
        visq::Queue::receive(self, wait)
    }

    #[inline]
    fn receive_batch(&self, out: &mut Vec<Self::Delivery>, max: usize, wait: Duration) -> usize {
        visq::Queue::receive_batch(self, out, max, wait)
    }

    #[inline]
    fn body(delivery: &Self::Delivery) -> &T {
        delivery.body()
    }

    #[inline]
    fn receipt(delivery: &Self::Delivery) -> Self::Receipt {
        delivery.receipt()
    }

    #[inline]
    fn delete(&self, delivery: &Self::Delivery) -> bool {
        visq::Queue::delete(self, delivery.receipt()).is_ok()
    }

    #[inline]
    fn change_visibility(&self, receipt: &Self::Receipt, timeout: Duration) -> bool {
        visq::Queue::change_visibility(self, *receipt, timeout).is_ok()
    }

    #[inline]
    fn release(&self, receipt: &Self::Receipt) -> bool {
        visq::Queue::release(self, *receipt).is_ok()
    }

    fn close(&self) {
        visq::Queue::close(self)
    }
}

impl<T: Payload, R: Order> Lease<T> for LockRef<T, R> {
    type Delivery = LockDelivery<T>;
    type Receipt = u64;
    const NAME: &'static str = "lock-based ref";

    fn build(config: &Config) -> Self {
        LockRef::with_order(
            config.capacity,
            config.visibility_timeout,
            config.clock.clone(),
        )
    }

    #[inline]
    fn send(&self, body: T) -> Result<(), T> {
        LockRef::send(self, body).map(drop)
    }

    #[inline]
    fn try_receive(&self) -> Option<Self::Delivery> {
        LockRef::try_receive(self)
    }

    #[inline]
    fn receive(&self, wait: Duration) -> Option<Self::Delivery> {
        LockRef::receive(self, wait)
    }

    #[inline]
    fn receive_batch(&self, out: &mut Vec<Self::Delivery>, max: usize, wait: Duration) -> usize {
        LockRef::receive_batch(self, out, max, wait)
    }

    #[inline]
    fn body(delivery: &Self::Delivery) -> &T {
        &delivery.body
    }

    #[inline]
    fn receipt(delivery: &Self::Delivery) -> Self::Receipt {
        delivery.receipt
    }

    #[inline]
    fn delete(&self, delivery: &Self::Delivery) -> bool {
        LockRef::delete(self, delivery.receipt).is_ok()
    }

    #[inline]
    fn change_visibility(&self, receipt: &Self::Receipt, timeout: Duration) -> bool {
        LockRef::change_visibility(self, *receipt, timeout).is_ok()
    }

    #[inline]
    fn release(&self, receipt: &Self::Receipt) -> bool {
        LockRef::release(self, *receipt).is_ok()
    }

    fn close(&self) {
        LockRef::close(self)
    }
}

impl<T: Payload> Lease<T> for Tutorial<T> {
    type Delivery = TutorialDelivery<T>;
    type Receipt = String;
    const NAME: &'static str = "tutorial";

    fn build(config: &Config) -> Self {
        Tutorial::new(config.capacity, config.visibility_timeout, config.poll)
    }

    fn send(&self, body: T) -> Result<(), T> {
        Tutorial::send(self, body).map(drop)
    }

    fn try_receive(&self) -> Option<Self::Delivery> {
        Tutorial::try_receive(self)
    }

    fn receive(&self, wait: Duration) -> Option<Self::Delivery> {
        Tutorial::receive(self, wait)
    }

    fn receive_batch(&self, out: &mut Vec<Self::Delivery>, max: usize, wait: Duration) -> usize {
        Tutorial::receive_batch(self, out, max, wait)
    }

    fn body(delivery: &Self::Delivery) -> &T {
        &delivery.body
    }

    fn receipt(delivery: &Self::Delivery) -> Self::Receipt {
        delivery.receipt.clone()
    }

    fn delete(&self, delivery: &Self::Delivery) -> bool {
        Tutorial::delete(self, &delivery.receipt)
    }

    fn change_visibility(&self, receipt: &Self::Receipt, timeout: Duration) -> bool {
        Tutorial::change_visibility(self, receipt, timeout)
    }

    fn release(&self, receipt: &Self::Receipt) -> bool {
        Tutorial::release(self, receipt)
    }

    fn close(&self) {
        Tutorial::close(self)
    }
}

/// A plain MPMC queue: push and pop, no lease.
pub trait Handoff<T: Payload>: Send + Sync + Sized {
    const NAME: &'static str;
    fn build(capacity: usize) -> Self;
    /// Waits for room, the way this queue's users wait; false if it gave up (only a queue
    /// that polls gives up, at `deadline`).
    fn push(&self, value: T, deadline: Instant) -> bool;
    /// Waits for a value, the way this queue's users wait; `None` if it gave up (only a queue
    /// that polls gives up, at `deadline`).
    fn pop(&self, deadline: Instant) -> Option<T>;
    fn try_pop(&self) -> Option<T>;
}

/// crossbeam-channel `bounded(capacity)`, both ends kept together, used as its users use it:
/// `push` is the plain blocking `send`, `pop` the plain blocking `recv`. Neither reads the
/// clock (the `_deadline`/`_timeout` variants do, on every call, which would slow the baseline
/// down), so neither gives up: the workloads end every consumer with a STOP message, and a
/// channel never refuses a send while its receiver lives.
pub struct Channel<T> {
    tx: crossbeam_channel::Sender<T>,
    rx: crossbeam_channel::Receiver<T>,
}

impl<T: Payload> Handoff<T> for Channel<T> {
    const NAME: &'static str = "crossbeam-channel";

    fn build(capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        Channel { tx, rx }
    }

    #[inline]
    fn push(&self, value: T, _deadline: Instant) -> bool {
        self.tx.send(value).is_ok()
    }

    #[inline]
    fn pop(&self, _deadline: Instant) -> Option<T> {
        self.rx.recv().ok()
    }

    #[inline]
    fn try_pop(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// crossbeam-queue `ArrayQueue`: lock-free and non-blocking, so both sides back off (spin,
/// then yield) while it is full or empty.
pub struct Array<T>(crossbeam_queue::ArrayQueue<T>);

impl<T: Payload> Handoff<T> for Array<T> {
    const NAME: &'static str = "ArrayQueue";

    fn build(capacity: usize) -> Self {
        Array(crossbeam_queue::ArrayQueue::new(capacity))
    }

    #[inline]
    fn push(&self, mut value: T, deadline: Instant) -> bool {
        let mut backoff = Backoff::new();
        let mut tries = 0u32;
        while let Err(refused) = self.0.push(value) {
            value = refused;
            backoff.snooze();
            tries = tries.wrapping_add(1);
            if tries % 64 == 0 && Instant::now() > deadline {
                return false;
            }
        }
        true
    }

    #[inline]
    fn pop(&self, deadline: Instant) -> Option<T> {
        if let Some(value) = self.0.pop() {
            return Some(value);
        }
        let mut backoff = Backoff::new();
        let mut tries = 0u32;
        loop {
            if let Some(value) = self.0.pop() {
                return Some(value);
            }
            tries = tries.wrapping_add(1);
            if tries % 64 == 0 && Instant::now() >= deadline {
                return None;
            }
            backoff.snooze();
        }
    }

    #[inline]
    fn try_pop(&self) -> Option<T> {
        self.0.pop()
    }
}

/// Every queue the benchmarks compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Contender {
    Visq,
    Channel,
    Array,
    LockRef,
    Tutorial,
}

impl Contender {
    pub const ALL: [Contender; 5] = [
        Contender::Visq,
        Contender::Channel,
        Contender::Array,
        Contender::LockRef,
        Contender::Tutorial,
    ];
    /// The queues of the capacity sweep and the latency runs: visq, its handoff baseline and
    /// the lock-based reference.
    pub const SWEPT: [Contender; 3] = [Contender::Visq, Contender::Channel, Contender::LockRef];
    /// The queues with leases.
    pub const LEASING: [Contender; 3] = [Contender::Visq, Contender::LockRef, Contender::Tutorial];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Visq => "visq",
            Contender::Channel => "crossbeam-channel",
            Contender::Array => "ArrayQueue",
            Contender::LockRef => "lock-based ref",
            Contender::Tutorial => "tutorial",
        }
    }

    /// A name without spaces, for ids and command lines.
    pub fn key(self) -> &'static str {
        match self {
            Contender::Visq => "visq",
            Contender::Channel => "channel",
            Contender::Array => "arrayqueue",
            Contender::LockRef => "lockref",
            Contender::Tutorial => "tutorial",
        }
    }

    pub fn from_key(key: &str) -> Option<Contender> {
        Contender::ALL.into_iter().find(|c| c.key() == key)
    }

    /// Whether it has leases (and so a delete step).
    pub fn leases(self) -> bool {
        Contender::LEASING.contains(&self)
    }

    /// A colour for plots.
    pub fn colour(self) -> &'static str {
        match self {
            Contender::Visq => "#d62728",
            Contender::Channel => "#1f77b4",
            Contender::Array => "#17becf",
            Contender::LockRef => "#ff7f0e",
            Contender::Tutorial => "#7f7f7f",
        }
    }
}
