//! A body type that counts its creations, clones and drops, to prove a queue drops every body
//! exactly once. Shared by the test binaries that account for bodies: each includes this file
//! as a module. Each test makes its own `Counts`, so tests may run in parallel.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Default, Debug)]
pub struct Counts {
    created: AtomicUsize,
    cloned: AtomicUsize,
    dropped: AtomicUsize,
    /// While set, the next clone panics (and clears it).
    pub panic_on_clone: AtomicBool,
}

impl Counts {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    fn cloned(&self) -> usize {
        self.cloned.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Bodies alive now: made (new or clone) and not yet dropped.
    pub fn live(&self) -> isize {
        (self.created() + self.cloned()) as isize - self.dropped() as isize
    }

    /// `(created, cloned, dropped)`.
    pub fn all(&self) -> (usize, usize, usize) {
        (self.created(), self.cloned(), self.dropped())
    }
}

/// A body that counts itself in its `Counts`.
#[derive(Debug)]
pub struct Body {
    pub value: u32,
    counts: Arc<Counts>,
}

impl Body {
    pub fn new(counts: &Arc<Counts>, value: u32) -> Self {
        counts.created.fetch_add(1, Ordering::SeqCst);
        Self {
            value,
            counts: counts.clone(),
        }
    }
}

impl Clone for Body {
    fn clone(&self) -> Self {
        if self.counts.panic_on_clone.swap(false, Ordering::SeqCst) {
            panic!("clone refused (expected by the test)");
        }
        self.counts.cloned.fetch_add(1, Ordering::SeqCst);
        Self {
            value: self.value,
            counts: self.counts.clone(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.counts.dropped.fetch_add(1, Ordering::SeqCst);
    }
}
