//! The lock-based reference: visq's semantics (leases, receipts that go stale, visibility
//! deadlines, release, change_visibility, long-poll receive) behind one `Mutex`, written the
//! way a competent engineer would in an hour:
//!
//! * a `Vec` slab of slots with a lease generation each, allocated up front for `capacity`;
//! * a `Vec` free list and a ready list of slot indices in delivery order: a `VecDeque` here
//!   ([`Fifo`]); the [`Order`] trait lets `lockref_features.rs` put priorities and message
//!   groups in its place;
//! * a `BinaryHeap` of `(deadline, slot, generation)` with lazy deletion: settling a lease
//!   leaves its entry behind, and an entry whose generation or deadline no longer matches is
//!   skipped when it reaches the top. The heap is compacted (stale entries dropped, O(n)) when
//!   it holds more than twice the live leases plus 1024, so its size stays bounded and the
//!   compaction costs O(1) amortized per lease;
//! * a `Condvar` for blocked receivers, notified outside the lock and only when someone sleeps;
//!   a sleeper wakes by itself at the next deadline;
//! * expiry is processed by receivers, under the same lock, before they look at the ready list;
//! * the clock is read before taking the lock, to keep the critical sections short.
//!
//! No delayed sends and no dead-letter queue: the benchmarks do not exercise them.
//! At-most-once (`try_take`, `take`) frees the slot as it hands the body over.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use visq::ManualClock;

/// Where the reference takes time from: the monotonic clock, or a [`ManualClock`] (the wheel
/// benchmarks drive both queues from one).
pub enum Clock {
    Wall(Instant),
    Manual(ManualClock),
}

impl Clock {
    pub fn new(manual: Option<ManualClock>) -> Self {
        match manual {
            Some(clock) => Clock::Manual(clock),
            None => Clock::Wall(Instant::now()),
        }
    }

    /// Nanoseconds since the queue was built (or on the manual clock).
    #[inline]
    pub fn now(&self) -> u64 {
        match self {
            Clock::Wall(start) => super::nanos(start.elapsed()),
            Clock::Manual(clock) => super::nanos(clock.now()),
        }
    }

    fn is_wall(&self) -> bool {
        matches!(self, Clock::Wall(_))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Free,
    Ready,
    InFlight,
}

struct Slot<T> {
    body: Option<T>,
    /// Lease generation: bumped by each receive; a receipt names `(slot, generation)`.
    generation: u32,
    state: State,
    receive_count: u32,
    /// Nanoseconds at which the current lease ends.
    deadline: u64,
    id: u64,
}

struct Inner<T, R> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    ready: R,
    /// `(deadline, slot, generation)`, earliest first; may hold stale entries.
    deadlines: BinaryHeap<Reverse<(u64, u32, u32)>>,
    in_flight: usize,
    sleepers: usize,
    next_id: u64,
    closed: bool,
}

/// One delivery: a clone of the body and the receipt for this lease.
#[derive(Clone, Debug)]
pub struct LockDelivery<T> {
    pub receipt: u64,
    pub id: u64,
    pub receive_count: u32,
    pub body: T,
}

/// Why a receipt was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LockReceiptError {
    Stale,
    Expired,
}

/// What a message was sent with, for the orders that use it: its priority (higher first) and
/// its message group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tag {
    pub priority: u8,
    pub group: Option<u64>,
}

impl Tag {
    /// A plain send's tag: priority 0, no group.
    pub const PLAIN: Tag = Tag {
        priority: 0,
        group: None,
    };
}

/// The order in which the reference delivers ready messages (slot indices), and what makes a
/// message ready. Every call is made under the queue's lock.
pub trait Order: Send + 'static {
    /// An empty order for a queue of `capacity` slots, all memory allocated now where it can be.
    fn new(capacity: usize) -> Self;
    /// A message was sent into slot `index` with `tag`; true if it became ready (false: it
    /// waits behind its group's head).
    fn sent(&mut self, index: u32, tag: Tag) -> bool;
    /// The lease on slot `index` ended without a delete (release or expiry): ready again.
    fn requeue(&mut self, index: u32);
    /// The message in slot `index` left the queue (deleted or taken); true if another
    /// message became ready (the next of its group).
    fn removed(&mut self, index: u32) -> bool;
    /// The next message to deliver, no longer ready.
    fn pop(&mut self) -> Option<u32>;
    fn is_empty(&self) -> bool;
}

/// The plain reference's order: first ready, first delivered (tags ignored).
pub struct Fifo(VecDeque<u32>);

impl Order for Fifo {
    fn new(capacity: usize) -> Self {
        Fifo(VecDeque::with_capacity(capacity))
    }

    #[inline]
    fn sent(&mut self, index: u32, _tag: Tag) -> bool {
        self.0.push_back(index);
        true
    }

    #[inline]
    fn requeue(&mut self, index: u32) {
        self.0.push_back(index);
    }

    #[inline]
    fn removed(&mut self, _index: u32) -> bool {
        false
    }

    #[inline]
    fn pop(&mut self) -> Option<u32> {
        self.0.pop_front()
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The lock-based reference queue; see the module docs. `R` is its delivery order: [`Fifo`]
/// unless a workload needs priorities or message groups.
pub struct LockRef<T, R = Fifo> {
    inner: Mutex<Inner<T, R>>,
    wake: Condvar,
    clock: Clock,
    visibility: u64,
}

fn receipt(slot: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

impl<T: Clone> LockRef<T> {
    /// A queue for `capacity` messages, all memory allocated now.
    pub fn new(capacity: usize, visibility_timeout: Duration, clock: Option<ManualClock>) -> Self {
        Self::with_order(capacity, visibility_timeout, clock)
    }
}

impl<T: Clone, R: Order> LockRef<T, R> {
    /// A queue for `capacity` messages delivered in the order `R`, all memory allocated now.
    pub fn with_order(
        capacity: usize,
        visibility_timeout: Duration,
        clock: Option<ManualClock>,
    ) -> Self {
        let slots = (0..capacity)
            .map(|_| Slot {
                body: None,
                generation: 0,
                state: State::Free,
                receive_count: 0,
                deadline: 0,
                id: 0,
            })
            .collect();
        LockRef {
            inner: Mutex::new(Inner {
                slots,
                free: (0..capacity as u32).rev().collect(),
                ready: R::new(capacity),
                deadlines: BinaryHeap::with_capacity(capacity),
                in_flight: 0,
                sleepers: 0,
                next_id: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            clock: Clock::new(clock),
            visibility: super::nanos(visibility_timeout),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T, R>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `body`; gives it back when full or closed.
    pub fn send(&self, body: T) -> Result<u64, T> {
        self.send_tagged(body, Tag::PLAIN)
    }

    /// Queues `body` with `tag` (its priority and group, for the orders that use them); gives
    /// it back when full or closed.
    pub fn send_tagged(&self, body: T, tag: Tag) -> Result<u64, T> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(body);
        }
        let Some(index) = inner.free.pop() else {
            return Err(body);
        };
        let id = inner.next_id;
        inner.next_id += 1;
        let slot = &mut inner.slots[index as usize];
        slot.body = Some(body);
        slot.state = State::Ready;
        slot.receive_count = 0;
        slot.id = id;
        let wake = inner.ready.sent(index, tag) && inner.sleepers > 0;
        drop(inner);
        if wake {
            self.wake.notify_one();
        }
        Ok(id)
    }

    /// Leases the next visible message without blocking.
    pub fn try_receive(&self) -> Option<LockDelivery<T>> {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        self.lease(&mut inner, now)
    }

    /// Leases the next visible message, waiting up to `wait` for one.
    pub fn receive(&self, wait: Duration) -> Option<LockDelivery<T>> {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if let Some(delivery) = self.lease(&mut inner, now) {
            return Some(delivery);
        }
        let mut inner = self.wait_for_ready(inner, wait)?;
        let now = self.clock.now();
        self.lease(&mut inner, now)
    }

    /// Appends up to `max` deliveries, waiting up to `wait` only while it has none.
    pub fn receive_batch(
        &self,
        out: &mut Vec<LockDelivery<T>>,
        max: usize,
        wait: Duration,
    ) -> usize {
        let mut now = self.clock.now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if inner.ready.is_empty() && max > 0 {
            match self.wait_for_ready(inner, wait) {
                Some(woken) => inner = woken,
                None => return 0,
            }
            now = self.clock.now();
        }
        let mut taken = 0;
        while taken < max {
            let Some(delivery) = self.lease(&mut inner, now) else {
                break;
            };
            out.push(delivery);
            taken += 1;
        }
        taken
    }

    /// Sleeps until a message is ready (returning the guard) or `wait` passes (`None`).
    fn wait_for_ready<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner<T, R>>,
        wait: Duration,
    ) -> Option<MutexGuard<'a, Inner<T, R>>> {
        let end = Instant::now() + wait;
        loop {
            if !inner.ready.is_empty() {
                return Some(inner);
            }
            if inner.closed {
                return None;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let now = self.clock.now();
            let nap = match inner.deadlines.peek() {
                Some(&Reverse((deadline, _, _))) if self.clock.is_wall() => {
                    left.min(Duration::from_nanos(deadline.saturating_sub(now)))
                }
                _ => left,
            };
            inner.sleepers += 1;
            inner = self
                .wake
                .wait_timeout(inner, nap)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
            inner.sleepers -= 1;
            let now = self.clock.now();
            self.expire(&mut inner, now);
        }
    }

    /// Moves every lease whose deadline has come back to the ready list.
    fn expire(&self, inner: &mut Inner<T, R>, now: u64) {
        let mut woken = 0;
        while let Some(&Reverse((deadline, index, generation))) = inner.deadlines.peek() {
            if deadline > now {
                break;
            }
            inner.deadlines.pop();
            let slot = &mut inner.slots[index as usize];
            if slot.state == State::InFlight
                && slot.generation == generation
                && slot.deadline == deadline
            {
                slot.state = State::Ready;
                inner.in_flight -= 1;
                inner.ready.requeue(index);
                woken += 1;
            }
        }
        if woken > 1 && inner.sleepers > 0 {
            self.wake.notify_all();
        }
    }

    fn lease(&self, inner: &mut Inner<T, R>, now: u64) -> Option<LockDelivery<T>> {
        let index = inner.ready.pop()?;
        let deadline = now + self.visibility;
        let slot = &mut inner.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = State::InFlight;
        slot.receive_count += 1;
        slot.deadline = deadline;
        let delivery = LockDelivery {
            receipt: receipt(index, slot.generation),
            id: slot.id,
            receive_count: slot.receive_count,
            body: slot.body.clone().expect("a ready slot holds a body"),
        };
        let generation = slot.generation;
        inner.in_flight += 1;
        Self::file(inner, deadline, index, generation);
        Some(delivery)
    }

    fn file(inner: &mut Inner<T, R>, deadline: u64, index: u32, generation: u32) {
        if inner.deadlines.len() > 2 * inner.in_flight + 1024 {
            let slots = &inner.slots;
            inner
                .deadlines
                .retain(|&Reverse((deadline, index, generation))| {
                    let slot = &slots[index as usize];
                    slot.state == State::InFlight
                        && slot.generation == generation
                        && slot.deadline == deadline
                });
        }
        inner.deadlines.push(Reverse((deadline, index, generation)));
    }

    /// The slot of `receipt` if it is the current, unexpired lease.
    fn validate(
        &self,
        inner: &Inner<T, R>,
        receipt: u64,
        now: u64,
    ) -> Result<u32, LockReceiptError> {
        let index = receipt as u32;
        let generation = (receipt >> 32) as u32;
        let slot = inner
            .slots
            .get(index as usize)
            .ok_or(LockReceiptError::Stale)?;
        if slot.generation != generation || slot.state != State::InFlight {
            return Err(LockReceiptError::Stale);
        }
        if slot.deadline <= now {
            return Err(LockReceiptError::Expired);
        }
        Ok(index)
    }

    /// Acknowledges a delivery.
    pub fn delete(&self, receipt: u64) -> Result<(), LockReceiptError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let index = self.validate(&inner, receipt, now)?;
        let slot = &mut inner.slots[index as usize];
        let body = slot.body.take();
        slot.state = State::Free;
        inner.in_flight -= 1;
        inner.free.push(index);
        let wake = inner.ready.removed(index) && inner.sleepers > 0;
        drop(inner);
        drop(body);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// At-most-once: removes the next visible message and hands its body over (no lease, no
    /// receipt), without blocking.
    pub fn try_take(&self) -> Option<T> {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        self.remove_next(inner)
    }

    /// [`LockRef::try_take`], waiting up to `wait` for a message.
    pub fn take(&self, wait: Duration) -> Option<T> {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if inner.ready.is_empty() {
            inner = self.wait_for_ready(inner, wait)?;
        }
        self.remove_next(inner)
    }

    /// Frees the next ready message's slot and returns its body (dropping the lock first).
    fn remove_next(&self, mut inner: MutexGuard<'_, Inner<T, R>>) -> Option<T> {
        let index = inner.ready.pop()?;
        let slot = &mut inner.slots[index as usize];
        let body = slot.body.take();
        slot.state = State::Free;
        inner.free.push(index);
        let wake = inner.ready.removed(index) && inner.sleepers > 0;
        drop(inner);
        if wake {
            self.wake.notify_one();
        }
        body
    }

    /// Makes a delivery visible again at once.
    pub fn release(&self, receipt: u64) -> Result<(), LockReceiptError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let index = self.validate(&inner, receipt, now)?;
        inner.slots[index as usize].state = State::Ready;
        inner.in_flight -= 1;
        inner.ready.requeue(index);
        let wake = inner.sleepers > 0;
        drop(inner);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Moves the lease's deadline to `timeout` from now (zero releases it).
    pub fn change_visibility(
        &self,
        receipt: u64,
        timeout: Duration,
    ) -> Result<(), LockReceiptError> {
        if timeout.is_zero() {
            return self.release(receipt);
        }
        let now = self.clock.now();
        let mut inner = self.lock();
        let index = self.validate(&inner, receipt, now)?;
        let deadline = now + super::nanos(timeout);
        let slot = &mut inner.slots[index as usize];
        slot.deadline = deadline;
        let generation = slot.generation;
        let earliest = inner.deadlines.peek().map(|&Reverse((d, _, _))| d);
        Self::file(&mut inner, deadline, index, generation);
        // A sleeper naps until the earliest deadline; wake it if that moved earlier.
        let wake = inner.sleepers > 0 && earliest.is_some_and(|earliest| deadline < earliest);
        drop(inner);
        if wake {
            self.wake.notify_all();
        }
        Ok(())
    }

    /// Stops sends; wakes blocked receivers.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Messages held (ready + in flight).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.slots.len() - inner.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
