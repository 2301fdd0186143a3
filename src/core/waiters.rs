//! Parking for blocking receivers (and for blocked senders: a queue has one `Waiters` for
//! each side).
//!
//! The lock-free paths never take this module's lock unless a thread is asleep: a notifier
//! issues a `SeqCst` fence after making a message visible (or a slot free) and reads
//! `sleepers`; a sleeper increments `sleepers` under the lock, issues a `SeqCst` fence and then
//! re-checks whether it still has to sleep. Either the notifier sees the sleeper (and takes the
//! lock, which the sleeper holds until it is inside `wait`, so the notification cannot fall
//! between the re-check and the wait; the notifier lets go of the lock before it notifies, so
//! the woken thread never blocks on it again), or the sleeper's re-check sees the change. This
//! is the lost-wake-up argument of crossbeam-channel's `SyncWaker`, with a condition variable
//! in place of its waker list.
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
//! Same store-buffer pattern as above, on `next_due` instead of the ready ring: either the
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

use crate::core::sync::{fence, lock, yield_now, AtomicUsize, Condvar, Mutex, Ordering};
use std::time::Duration;

pub(crate) struct Waiters {
    sleepers: AtomicUsize,
    lock: Mutex<()>,
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
            lock: Mutex::new(()),
            wake: Condvar::new(),
            #[cfg(test)]
            naps: AtomicUsize::new(0),
        }
    }

    /// Wakes one sleeper, if any. Call after making a message visible (or, for blocked
    /// senders, a slot free).
    #[inline]
    pub(crate) fn notify_one(&self) {
        fence(Ordering::SeqCst);
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

    /// Takes and drops the lock, then notifies. A sleeper counted in `sleepers` holds the lock
    /// from its registration until it is inside `wait`, so once we have had the lock it waits
    /// (or has already left): the notification cannot fall between its re-check and its wait.
    /// Notifying after letting go means the woken thread does not find the lock still held by
    /// us and block on it a second time.
    #[cold]
    fn wake_up(&self, all: bool) {
        drop(lock(&self.lock));
        if all {
            self.wake.notify_all();
        } else {
            self.wake.notify_one();
        }
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
        self.sleepers.load(Ordering::SeqCst)
    }

    /// Holds the lock, so that a receiver that has computed its nap cannot register yet (a
    /// test's way to widen the window between the two).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> crate::core::sync::MutexGuard<'_, ()> {
        lock(&self.lock)
    }

    /// How many times a receiver went to sleep (a test's way to see a spin).
    #[cfg(test)]
    pub(crate) fn naps(&self) -> usize {
        self.naps.load(Ordering::Relaxed)
    }
}
