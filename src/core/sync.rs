//! The one door to concurrency primitives.
//!
//! Every atomic, `UnsafeCell`, lock, spin hint and `Arc` the crate uses comes from here. Under
//! `--cfg loom` they are loom's, so the model checker sees every access, including every access
//! to a message body; otherwise they are std's, wrapped to speak loom's closure-based
//! `UnsafeCell` API so the rest of the crate is written once.

#[cfg(loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    hint::spin_loop,
    sync::{
        atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize},
        Arc, Condvar, Mutex, MutexGuard,
    },
};

#[cfg(not(loom))]
pub(crate) use std::{
    hint::spin_loop,
    sync::{
        atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize},
        Arc, Condvar, Mutex, MutexGuard,
    },
};

pub(crate) use std::sync::atomic::Ordering;

/// `std::cell::UnsafeCell` with loom's `with` / `with_mut` access API.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a unique pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Gives the processor (or, under loom, the scheduler) a chance to run someone else.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Locks `mutex`, ignoring poisoning: no section under the core's locks can leave its data
/// half-updated by a panic (the sleepers' lock guards a unit; the rate window is updated by
/// plain arithmetic).
pub(crate) fn lock<V>(mutex: &Mutex<V>) -> MutexGuard<'_, V> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
