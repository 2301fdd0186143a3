//! Parking for blocking receivers, threads and futures alike (and for blocked senders: a queue
//! has one `Waiters` for each side).
//!
//! The lock-free paths never take this module's lock unless a waiter (a sleeping thread, a
//! registered future) is counted. A sleeper
//! increments `sleepers` under the lock, issues a `SeqCst` fence and then re-checks whether it
//! still has to sleep; a notifier makes its change, then reads `sleepers`. Either the notifier
//! sees the sleeper (and takes the lock, which the sleeper holds until it is inside `wait`, so
//! the notification cannot fall between the re-check and the wait; the notifier lets go of
//! the lock before it notifies, so the woken thread never blocks on it again), or the
//! sleeper's re-check sees the change. This is the lost-wake-up argument of
//! crossbeam-channel's `SyncWaker`, with a condition variable in place of its waker list.
//! What makes "either ... or" hold depends on the change:
//!
//! * **A push to a ring** (a message made visible, for receivers; a slot freed, for blocked
//!   senders), on every send and every delete: no fence on the notifying side
//!   ([`Waiters::notify_one_after_rmw`]). The push claims its position with a
//!   read-modify-write of the ring's `tail` (for free slots: an `AcqRel` CAS of the free
//!   stack's head), then loads `sleepers`; the sleeper's re-check, after its increment of
//!   `sleepers`, reads `tail` (the head) with a read-modify-write that changes nothing
//!   (`IndexRing::pushes_acquired`, `FreeStack::has_free_acquired`). All writes to either are
//!   read-modify-writes, so the two are ordered in its modification order: if the sleeper's comes first, the
//!   push reads from its release sequence, so the increment happens before the notifier's
//!   load of `sleepers`, which sees it; if the push comes first, the re-check counts it.
//!   (Plain `SeqCst` loads on both sides would do in the C++ model, as in crossbeam-channel,
//!   but loom does not model them: loom-tests/README.md, f08g-fence.)
//! * **Anything else** (a close, a change of the wheel's `next_due`): [`Waiters::notify_all`]
//!   issues a `SeqCst` fence after the change and before reading `sleepers`, which pairs with
//!   the sleeper's fence (the store-buffer pattern, fences on both sides).
//!
//! # Async waiters: an intrusive list under the same lock
//!
//! A future waiting for a message (see [`super::async_front`]) cannot block a thread; it
//! leaves its task's [`Waker`] in a [`WaitNode`] that lives inside the future itself, linked
//! into this lock's list: waiting allocates nothing, whatever the number of waiters (the
//! scheme of tokio's `Notify`). A linked node is counted in `sleepers` exactly as a sleeping
//! thread is, and registers by the same steps (under the lock: increment `sleepers`, fence,
//! re-check, then link), so the notifier's one load of `sleepers` and the lost-wake-up argument
//! above cover sync and async waiters alike.
//!
//! * **Who wakes whom.** `notify_one` pops the first linked node (FIFO), marks it woken, takes
//!   its count out of `sleepers` and wakes its waker after letting go of the lock; with no
//!   node linked it signals the condition variable (a sleeping thread, if any). `notify_all`
//!   wakes every thread and every node linked when it began (nodes that re-register meanwhile
//!   go to the back and are not woken twice by one call). So threads and futures waiting on one
//!   queue are all woken, by a close, a deadline change or a message each.
//! * **Cancel safety.** A node is only ever touched under the lock. Its future, when it
//!   finishes or is dropped, takes the lock and unlinks it if it is still linked (uncounting
//!   it), so no pointer to a dropped node stays in the list. A node that was woken and whose
//!   future is dropped before it looked again at the queue *passes the wake-up on*: the wake-up
//!   stood for a message (or a closing, or a deadline) that somebody must now see, so the
//!   drop wakes the next waiter as the notifier would have.
//!
//! # Deadlines: the nap and `next_due`
//!
//! Nobody notifies when a deadline passes; a parked receiver wakes for it because its nap ends
//! at the wheel's next due tick. The nap is computed from a value `seen` of `next_due` read
//! *before* registering, so a deadline filed between that read and the registration (another
//! thread's lease, while there was no sleeper to tell) would be slept through. Hence:
//!
//! * only the wheel's claim holder writes `next_due`, and a wheel run reports whether it
//!   changed it, comparing each store with the value that store replaced (see
//!   [`super::wheel`]); the queue then wakes every sleeper (`notify_all`, fence first);
//! * the re-check after registering asks, besides the rest, whether `next_due != seen`.
//!
//! The fence pattern of the list above, on `next_due`: either the
//! run's fence comes first and the re-check reads the new value (the receiver does not sleep
//! and computes a new nap), or the receiver's fence comes first and the run sees the sleeper
//! and notifies it (taking the lock, so not before the receiver waits). So a deadline `D`
//! filed at any time ends every nap that would have outlasted it: filing it either moves
//! `next_due` to `D` or earlier (a change: the sleeper wakes and naps until `D`), or finds it
//! at or before `D` already, and the nap computed from that value ends by `D`.
//!
//! A change to a *later* `next_due` (the wheel ran past the old one) wakes sleepers too: a
//! receiver that found work due while another thread held the wheel sleeps until that
//! thread's run changes `next_due`, instead of napping for zero (a spin; see
//! [`super::queue`]).

use crate::core::sync::{
    fence, lock, spin_loop, yield_now, AtomicBool, AtomicUsize, Condvar, Mutex, MutexGuard,
    Ordering, UnsafeCell,
};
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::ptr;
use std::task::Waker;
use std::time::{Duration, Instant};

/// Re-checks a blocking call makes spinning (doubling the spin each time), then yielding,
/// before it parks. None under loom, where a spin is only a scheduling point.
const SPIN_ATTEMPTS: u32 = if cfg!(loom) { 0 } else { 6 };
const YIELD_ATTEMPTS: u32 = if cfg!(loom) { 0 } else { 4 };
/// How long the lookout (see [`Backoff`]) keeps yielding before it parks: about what one park
/// costs in wall time on the project's 2-vCPU VM (the futex wait, and the wake-up of an idle
/// vCPU: a consumer that parked for 97% of the messages at 10 k msgs/s saw a p50
/// send-to-receive of 41.5 µs), so that staying awake costs at most what parking would (the
/// classic spin-then-block rule).
const STAY_AWAKE: Duration = Duration::from_micros(50);

/// A blocking call's wait between re-checks, before it parks: it spins (doubling), then
/// yields a few times. One waiter of a [`Waiters`] at a time, the *lookout*, keeps yielding
/// until [`STAY_AWAKE`] has passed since it began to yield.
///
/// Why a lookout: every park is a later wake-up, and a woken thread may be placed on the busy
/// core of the thread that woke it (on 2 cores, the producer's) and wait there for a
/// scheduler tick (4 ms): the millisecond tails of issue 10. A lone consumer whose messages
/// come less than about `STAY_AWAKE` apart (100 k msgs/s and up) is the lookout and never
/// parks, where the plain budget (about 9 µs) parked it for 42% of the messages at
/// 100 k msgs/s. Only one: with more waiters than cores (4P4C on 2), more yielding waiters
/// take the time the threads with work need, while parking every waiter early makes every send
/// pay a futex wake-up.
pub(crate) struct Backoff<'a> {
    attempt: u32,
    /// The waiters whose lookout this waiter may become (`None`: never).
    waiters: Option<&'a Waiters>,
    /// When this waiter became the lookout, while it is.
    lookout_since: Option<Instant>,
}

impl<'a> Backoff<'a> {
    /// A backoff that may become the lookout of `waiters`.
    pub(crate) fn new(waiters: &'a Waiters) -> Self {
        Self {
            attempt: 0,
            waiters: Some(waiters),
            lookout_since: None,
        }
    }

    /// A backoff that never becomes a lookout.
    pub(crate) fn brief() -> Self {
        Self {
            attempt: 0,
            waiters: None,
            lookout_since: None,
        }
    }

    /// Waits a little and returns `true` (re-check, then call again), or returns `false` once
    /// it is time to park (and from then on always `false`: a parked waiter never spins).
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        self.attempt = self.attempt.saturating_add(1);
        // Under loom both bounds are 0, which makes these comparisons always false there.
        #[allow(clippy::absurd_extreme_comparisons)]
        if self.attempt <= SPIN_ATTEMPTS {
            (0..1u32 << self.attempt).for_each(|_| spin_loop());
            return true;
        }
        #[allow(clippy::absurd_extreme_comparisons)]
        if self.attempt <= SPIN_ATTEMPTS + YIELD_ATTEMPTS {
            if self.attempt == SPIN_ATTEMPTS + 1 {
                self.try_to_be_lookout();
            }
            yield_now();
            return true;
        }
        match self.lookout_since {
            Some(since) if since.elapsed() < STAY_AWAKE => {
                yield_now();
                true
            }
            _ => {
                self.stop_looking_out();
                false
            }
        }
    }

    fn try_to_be_lookout(&mut self) {
        if let Some(waiters) = self.waiters {
            if !waiters.lookout.swap(true, Ordering::Relaxed) {
                self.lookout_since = Some(Instant::now());
            }
        }
    }

    fn stop_looking_out(&mut self) {
        if let (Some(waiters), Some(_)) = (self.waiters, self.lookout_since.take()) {
            waiters.lookout.store(false, Ordering::Relaxed);
        }
    }
}

impl Drop for Backoff<'_> {
    fn drop(&mut self) {
        self.stop_looking_out();
    }
}

/// The sleepers of one side of a queue: threads parked on `wake`, and futures whose
/// [`WaitNode`]s are linked in the list under `lock`.
pub(crate) struct Waiters {
    /// Sleeping threads plus linked nodes: the one word a notifier loads.
    sleepers: AtomicUsize,
    /// Whether a waiter is the lookout of its [`Backoff`] (yielding, awake).
    lookout: AtomicBool,
    lock: Mutex<WaitList>,
    wake: Condvar,
    /// How many times [`Waiters::sleep`] was called, counted before it takes the lock (a
    /// test's way to see a spin, or that a receiver has computed its nap).
    #[cfg(test)]
    naps: AtomicUsize,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            sleepers: AtomicUsize::new(0),
            lookout: AtomicBool::new(false),
            lock: Mutex::new(WaitList {
                head: ptr::null(),
                tail: ptr::null(),
                linked: 0,
            }),
            wake: Condvar::new(),
            #[cfg(test)]
            naps: AtomicUsize::new(0),
        }
    }

    /// Wakes one sleeper, if any, with no fence: only after a push to a ring, which the
    /// sleepers' re-check reads with `IndexRing::pushes_acquired` (see the module docs).
    #[inline]
    pub(crate) fn notify_one_after_rmw(&self) {
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.wake_up(false);
        }
    }

    /// Wakes every sleeper, if any (close, or an earlier wheel deadline).
    pub(crate) fn notify_all(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.wake_up(true);
        }
    }

    /// Wakes one waiter (the first linked future, or else a sleeping thread) or, for `all`,
    /// every thread and every future linked now. A sleeping thread holds the lock from its
    /// registration until it is inside `wait`, so once we have had the lock it waits (or has
    /// already left): the notification cannot fall between its re-check and its wait. Wakers
    /// and the condition variable are woken after letting go of the lock, so that the woken
    /// never find it still held by us (and a waker that runs its task at once cannot deadlock
    /// on it).
    #[cold]
    fn wake_up(&self, all: bool) {
        if !all {
            let woken = self.pop_linked(&mut lock(&self.lock));
            match woken {
                Some(waker) => waker.wake(),
                None => self.wake.notify_one(),
            }
            return;
        }
        // Wake the nodes linked now, a few wakers at a time (no allocation): a node that
        // re-registers meanwhile goes to the back, beyond `left`, and is not woken twice.
        let mut left = lock(&self.lock).linked;
        self.wake.notify_all();
        while left > 0 {
            let mut batch: [Option<Waker>; WAKE_BATCH] = Default::default();
            {
                let mut list = lock(&self.lock);
                for waker in batch.iter_mut().take(left.min(WAKE_BATCH)) {
                    *waker = self.pop_linked(&mut list);
                }
            }
            let popped = batch.iter().filter(|w| w.is_some()).count();
            batch.into_iter().flatten().for_each(Waker::wake);
            if popped < left.min(WAKE_BATCH) {
                return; // the list ran dry: the others unlinked themselves
            }
            left -= popped;
        }
    }

    /// Unlinks the first node, if any, marks it woken and uncounts it; returns its waker.
    fn pop_linked(&self, list: &mut MutexGuard<'_, WaitList>) -> Option<Waker> {
        let first = list.head;
        if first.is_null() {
            return None;
        }
        // SAFETY: a linked node is alive (its future unlinks it, under this lock, before it
        // is dropped or moved: it is pinned) and we hold the lock that guards its links.
        let waker = unsafe { list.unlink(first) };
        // SAFETY: as above; the node is no longer linked, and marked woken for its future.
        unsafe {
            (*first)
                .links
                .with_mut(|links| (*links).state = NodeState::Woken)
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        waker
    }

    /// Links `node` with `waker` unless `should_wake()` (checked after counting it among the
    /// sleepers, under the lock, as [`Waiters::sleep`] does) says there is something to do.
    /// Returns whether it is linked: `false` means look again now. A node already linked is
    /// unlinked first and registers afresh (its future looked at the queue again).
    ///
    /// `should_wake` must not notify (it runs under the lock).
    pub(crate) fn register(
        &self,
        node: Pin<&WaitNode>,
        waker: &Waker,
        should_wake: impl FnOnce() -> bool,
    ) -> bool {
        let node: *const WaitNode = &*node;
        let mut list = lock(&self.lock);
        // SAFETY: the node is pinned (it stays where it is until its future's drop, which
        // unlinks it under this lock) and we hold the lock that guards its links.
        unsafe {
            if (*node).links.with(|links| (*links).state) == NodeState::Linked {
                drop(list.unlink(node));
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
            (*node)
                .links
                .with_mut(|links| (*links).state = NodeState::Idle);
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // Pairs with the notifier's fence (store-buffer pattern, fences on both sides).
        fence(Ordering::SeqCst);
        if should_wake() {
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        // SAFETY: as above; the node is not linked.
        unsafe { list.link_last(node, waker.clone()) };
        true
    }

    /// Takes `node` out of the list for good (its future has finished or is being dropped).
    /// If it had been woken and its future never looked at the queue since (`woken_unused`),
    /// the wake-up is passed on to the next waiter. Returns whether it had been woken.
    pub(crate) fn cancel(&self, node: Pin<&WaitNode>, woken_unused: bool) -> bool {
        let node: *const WaitNode = &*node;
        let mut list = lock(&self.lock);
        // SAFETY: the node is pinned and alive (the caller is its future), and we hold the
        // lock that guards its links.
        let state = unsafe { (*node).links.with(|links| (*links).state) };
        match state {
            NodeState::Idle => false,
            NodeState::Linked => {
                // SAFETY: as above; it is linked in this list.
                drop(unsafe { list.unlink(node) });
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                // SAFETY: as above.
                unsafe {
                    (*node)
                        .links
                        .with_mut(|links| (*links).state = NodeState::Idle)
                };
                false
            }
            NodeState::Woken => {
                // SAFETY: as above.
                unsafe {
                    (*node)
                        .links
                        .with_mut(|links| (*links).state = NodeState::Idle)
                };
                if woken_unused {
                    let next = self.pop_linked(&mut list);
                    drop(list);
                    match next {
                        Some(waker) => waker.wake(),
                        None => self.wake.notify_one(),
                    }
                }
                true
            }
        }
    }

    /// How many threads and futures are waiting (an observation: exact when nothing else
    /// runs).
    pub(crate) fn waiting(&self) -> usize {
        self.sleepers.load(Ordering::SeqCst)
    }

    /// Sleeps up to `timeout` unless `should_wake()` (checked after registering) says there is
    /// something to do. `should_wake` must not notify (it runs under the lock). Returns after a
    /// notification, a spurious wake-up or the timeout: the caller re-checks and decides.
    ///
    /// `ends_at_deadline` says that the nap ends when a wheel deadline comes, that is, that its
    /// timeout is itself a wake-up the caller relies on. Loom does not model time (its
    /// `wait_timeout` never times out), so under loom such a nap does not block: it stands for
    /// a timer that may fire at any moment, which is what the caller's re-check allows. A nap
    /// that only a notification may end blocks under loom as it does here, so a lost
    /// notification shows up as a deadlock.
    pub(crate) fn sleep(
        &self,
        timeout: Duration,
        ends_at_deadline: bool,
        should_wake: impl FnOnce() -> bool,
    ) {
        #[cfg(test)]
        self.naps.fetch_add(1, Ordering::Relaxed);
        let guard = lock(&self.lock);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // Pairs with the notifier's fence (store-buffer pattern, fences on both sides).
        fence(Ordering::SeqCst);
        if !should_wake() {
            if cfg!(loom) && ends_at_deadline {
                drop(guard);
                yield_now();
            } else {
                drop(self.wake.wait_timeout(guard, timeout));
            }
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many receivers are registered to sleep (a test's way to know one has parked).
    #[cfg(test)]
    pub(crate) fn sleepers(&self) -> usize {
        self.waiting()
    }

    /// Holds the lock, so that a receiver that has computed its nap cannot register yet (a
    /// test's way to widen the window between the two).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> MutexGuard<'_, WaitList> {
        lock(&self.lock)
    }

    /// How many times a receiver went to sleep (a test's way to see a spin).
    #[cfg(test)]
    pub(crate) fn naps(&self) -> usize {
        self.naps.load(Ordering::Relaxed)
    }
}

/// How many wakers `notify_all` takes out of the list per hold of the lock.
const WAKE_BATCH: usize = 8;

/// The list of linked [`WaitNode`]s (guarded by the [`Waiters`] lock), first linked first.
pub(crate) struct WaitList {
    head: *const WaitNode,
    tail: *const WaitNode,
    /// How many nodes are linked.
    linked: usize,
}

// SAFETY: the list only holds pointers to nodes that are `Sync` (their links are only touched
// under the lock that guards the list), and it is only reached through that lock.
unsafe impl Send for WaitList {}

impl WaitList {
    /// Appends the unlinked `node` with `waker`, marked linked.
    ///
    /// # Safety
    /// The caller holds the lock, and `node` is alive, pinned and not linked.
    unsafe fn link_last(&mut self, node: *const WaitNode, waker: Waker) {
        let tail = self.tail;
        // SAFETY: the caller's promise.
        unsafe {
            (*node).links.with_mut(|links| {
                *links = Links {
                    prev: tail,
                    next: ptr::null(),
                    waker: Some(waker),
                    state: NodeState::Linked,
                }
            });
        }
        if tail.is_null() {
            self.head = node;
        } else {
            // SAFETY: the tail is a linked node, alive (see `Waiters::pop_linked`).
            unsafe { (*tail).links.with_mut(|links| (*links).next = node) };
        }
        self.tail = node;
        self.linked += 1;
    }

    /// Unlinks the linked `node`, leaving its state to the caller; returns its waker.
    ///
    /// # Safety
    /// The caller holds the lock, and `node` is alive and linked in this list.
    unsafe fn unlink(&mut self, node: *const WaitNode) -> Option<Waker> {
        // SAFETY: the caller's promise; its neighbours are linked, so alive too.
        unsafe {
            let (prev, next, waker) = (*node).links.with_mut(|links| {
                let links = &mut *links;
                let taken = (links.prev, links.next, links.waker.take());
                links.prev = ptr::null();
                links.next = ptr::null();
                taken
            });
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).links.with_mut(|links| (*links).next = next);
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*next).links.with_mut(|links| (*links).prev = prev);
            }
            self.linked -= 1;
            waker
        }
    }
}

/// Where a waiting future leaves its waker: lives inside the future (pinned), linked into a
/// [`Waiters`] list while the future waits. Everything in it is guarded by that list's lock.
pub(crate) struct WaitNode {
    links: UnsafeCell<Links>,
    _pinned: PhantomPinned,
}

// SAFETY: the links are only read or written under the lock of the list the node is linked
// into (see `Waiters::register`, `cancel`, `pop_linked`), which orders every access.
unsafe impl Send for WaitNode {}
// SAFETY: as above.
unsafe impl Sync for WaitNode {}

impl WaitNode {
    pub(crate) fn new() -> Self {
        Self {
            links: UnsafeCell::new(Links {
                prev: ptr::null(),
                next: ptr::null(),
                waker: None,
                state: NodeState::Idle,
            }),
            _pinned: PhantomPinned,
        }
    }
}

impl std::fmt::Debug for WaitNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitNode").finish_non_exhaustive()
    }
}

struct Links {
    prev: *const WaitNode,
    next: *const WaitNode,
    waker: Option<Waker>,
    state: NodeState,
}

/// Where a node is: `Idle` (not linked, no wake-up pending), `Linked` (counted in `sleepers`)
/// or `Woken` (unlinked and uncounted by a notifier, its future not yet told).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Idle,
    Linked,
    Woken,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Snoozes until `backoff` says to park; returns how many snoozes said to wait.
    fn until_parked(backoff: &mut Backoff<'_>) -> u32 {
        let mut waited = 0;
        while backoff.snooze() {
            waited += 1;
        }
        waited
    }

    #[test]
    fn one_lookout_at_a_time_and_parked_waiters_never_spin_again() {
        let waiters = Waiters::new();
        let mut first = Backoff::new(&waiters);
        for _ in 0..=SPIN_ATTEMPTS {
            assert!(first.snooze());
        }
        assert!(first.lookout_since.is_some(), "the first waiter looks out");
        // A second waiter meanwhile gets the brief budget only.
        let mut second = Backoff::new(&waiters);
        assert_eq!(until_parked(&mut second), SPIN_ATTEMPTS + YIELD_ATTEMPTS);
        assert!(!second.snooze(), "a parked waiter never spins again");
        // The lookout lets go when it is dropped (it got a message), and the next waiter
        // may look out.
        drop(first);
        let mut third = Backoff::new(&waiters);
        for _ in 0..=SPIN_ATTEMPTS {
            assert!(third.snooze());
        }
        assert!(third.lookout_since.is_some());
        // A brief backoff never looks out, even with no lookout about.
        drop(third);
        let mut brief = Backoff::brief();
        assert_eq!(until_parked(&mut brief), SPIN_ATTEMPTS + YIELD_ATTEMPTS);
        assert!(!waiters.lookout.load(Ordering::Relaxed));
    }
}
