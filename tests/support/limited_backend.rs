//! A test backend: an in-process queue seen through the `Backend` trait, with capabilities
//! taken away (as a broker lacks them) and failures injected on demand. Shared by the test
//! binaries of the patterns on any backend; each includes this file as a module.
//!
//! What each removed capability does here:
//! * `extend_lease` or `shorten_lease` false: any non-zero `change_visibility` is
//!   `Unsupported(ExtendLease)` (a release, zero, still works), as on RabbitMQ;
//! * `leases_expire` false: a receive that asks for a visibility timeout is refused (a pool
//!   must not ask), and the queue under it should have a lease longer than the test;
//! * `uncharged_hand_back` false: `hand_back` is a `release` (charged);
//! * `native_dead_letter` false: `dead_letter` is `Unsupported(DeadLetter)` and there is no
//!   dead-letter queue or limit.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use visq::{
    Accepted, Backend, BackendError, Capabilities, Feature, Handle, Incoming, Outgoing, Refused,
};

pub struct Limited<T> {
    inner: Arc<dyn Backend<Body = T>>,
    capabilities: Capabilities,
    /// The next this many receives fail with a transient error.
    pub failing_receives: AtomicU32,
    /// The receive call with this number (1 for the first, 0 for none) fails with a
    /// transient error.
    pub failing_receive_call: AtomicU64,
    /// The next this many deletes fail with a transient error.
    pub failing_deletes: AtomicU32,
    /// Receive calls made, failed ones included.
    pub receive_calls: AtomicU64,
    /// Non-zero visibility changes asked for (refused or not).
    pub visibility_changes: AtomicU64,
}

impl<T: Send + 'static> Limited<T> {
    /// `inner` with its own capabilities, changed by `limit`.
    pub fn new(inner: Arc<dyn Backend<Body = T>>, limit: impl FnOnce(&mut Capabilities)) -> Self {
        let mut capabilities = inner.capabilities();
        limit(&mut capabilities);
        Self {
            inner,
            capabilities,
            failing_receives: AtomicU32::new(0),
            failing_receive_call: AtomicU64::new(0),
            failing_deletes: AtomicU32::new(0),
            receive_calls: AtomicU64::new(0),
            visibility_changes: AtomicU64::new(0),
        }
    }

    /// Like RabbitMQ: leases neither expire nor change, hand-backs are charged, and (here) no
    /// dead-letter queue.
    pub fn like_rabbitmq(inner: Arc<dyn Backend<Body = T>>) -> Self {
        Self::new(inner, |c| {
            c.extend_lease = false;
            c.shorten_lease = false;
            c.leases_expire = false;
            c.uncharged_hand_back = false;
            c.native_dead_letter = false;
        })
    }
}

/// Takes one from `counter` if it is above zero; whether it did.
fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl<T: Send + 'static> Backend for Limited<T> {
    type Body = T;

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    fn send_batch(&self, batch: Vec<Outgoing<T>>) -> Vec<Result<Accepted, Refused<T>>> {
        self.inner.send_batch(batch)
    }

    fn receive(
        &self,
        out: &mut Vec<Incoming<T>>,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<usize, BackendError> {
        let call = self.receive_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if take_one(&self.failing_receives)
            || self.failing_receive_call.load(Ordering::SeqCst) == call
        {
            return Err(BackendError::Transient("injected receive failure".into()));
        }
        if visibility.is_some() && !self.capabilities.leases_expire {
            return Err(BackendError::Fatal(
                "asked for a visibility timeout on a backend whose leases do not expire".into(),
            ));
        }
        BackendError::check_limit(
            visq::Limit::BatchEntries,
            self.capabilities.max_batch as u64,
            max as u64,
        )?;
        self.inner.receive(out, max, wait, visibility)
    }

    fn delete(&self, receipt: &Handle) -> Result<(), BackendError> {
        if take_one(&self.failing_deletes) {
            return Err(BackendError::Transient("injected delete failure".into()));
        }
        self.inner.delete(receipt)
    }

    fn change_visibility(&self, receipt: &Handle, timeout: Duration) -> Result<(), BackendError> {
        if timeout.is_zero() {
            return self.inner.release(receipt);
        }
        self.visibility_changes.fetch_add(1, Ordering::SeqCst);
        if !(self.capabilities.extend_lease && self.capabilities.shorten_lease) {
            return Err(BackendError::Unsupported(Feature::ExtendLease));
        }
        self.inner.change_visibility(receipt, timeout)
    }

    fn hand_back(&self, receipt: &Handle) -> Result<(), BackendError> {
        if self.capabilities.uncharged_hand_back {
            self.inner.hand_back(receipt)
        } else {
            self.inner.release(receipt)
        }
    }

    fn dead_letter(&self, receipt: &Handle, reason: &str) -> Result<(), BackendError> {
        if !self.capabilities.native_dead_letter {
            return Err(BackendError::Unsupported(Feature::DeadLetter));
        }
        self.inner.dead_letter(receipt, reason)
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn Backend<Body = T>>> {
        if self.capabilities.native_dead_letter {
            self.inner.dead_letter_queue()
        } else {
            None
        }
    }

    fn dead_letter_limit(&self) -> Option<u32> {
        if self.capabilities.native_dead_letter {
            self.inner.dead_letter_limit()
        } else {
            None
        }
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}
