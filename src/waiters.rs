//! Parking for blocking receivers.
//!
//! The lock-free paths never take this module's lock unless a receiver is asleep: a notifier
//! issues a `SeqCst` fence after making a message visible and reads `sleepers`; a receiver
//! increments `sleepers` under the lock, issues a `SeqCst` fence and then re-checks whether it
//! still has to sleep. Either the notifier sees the sleeper (and takes the lock, which the receiver holds
//! until it is inside `wait`, so the notification cannot fall between the re-check and the
//! wait), or the receiver's re-check sees the message. This is the lost-wake-up argument of
//! crossbeam-channel's `SyncWaker`, with a condition variable in place of its waker list.

use crate::sync::{fence, lock, AtomicUsize, Condvar, Mutex, Ordering};
use std::time::Duration;

pub(crate) struct Waiters {
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Wakes one sleeping receiver, if any. Call after making a message visible.
    #[inline]
    pub(crate) fn notify_one(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            let _guard = lock(&self.lock);
            self.wake.notify_one();
        }
    }

    /// Wakes every sleeping receiver, if any (close, or an earlier wheel deadline).
    pub(crate) fn notify_all(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            let _guard = lock(&self.lock);
            self.wake.notify_all();
        }
    }

    /// Sleeps up to `timeout` unless `should_wake()` (checked after registering) says there is
    /// something to do. `should_wake` must not notify (it runs under the lock). Returns after a
    /// notification, a spurious wake-up or the timeout: the caller re-checks and decides.
    pub(crate) fn sleep(&self, timeout: Duration, should_wake: impl FnOnce() -> bool) {
        let guard = lock(&self.lock);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // Pairs with the notifier's fence (store-buffer pattern, fences on both sides).
        fence(Ordering::SeqCst);
        if !should_wake() {
            drop(self.wake.wait_timeout(guard, timeout));
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many receivers are registered to sleep (a test's way to know one has parked).
    #[cfg(test)]
    pub(crate) fn sleepers(&self) -> usize {
        self.sleepers.load(Ordering::SeqCst)
    }
}
