//! Lease guards: a delivery that settles itself if its holder does not.
//!
//! A [`Lease`] is a [`Delivery`] tied to the queue it came from. Settling consumes it
//! ([`Lease::ack`], [`Lease::nack`], [`Lease::nack_after`], or [`Lease::hand_back`] for work
//! nobody started); dropping it unsettled releases the
//! message at once, so a handler that returns early or panics does not leave its message stuck
//! until the visibility deadline. Everything here is built on the public receipt API, which
//! keeps working for callers who prefer to settle by [`Receipt`].

use crate::{Delivery, Nack, Queue, Receipt, ReceiptError};
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

/// A delivery that must be settled: acknowledged, given back, or given back later.
///
/// Dereferences to its [`Delivery`] (`id()`, `receive_count()`, `body()`, `receipt()`).
/// Dropping a lease that was not settled releases the message at once, like [`Lease::nack`]
/// (a no-op if the lease has already expired or been settled through its receipt).
///
/// ```
/// use std::time::Duration;
/// use visq::Queue;
///
/// let q: Queue<&str> = Queue::builder().build()?;
/// q.send("job").unwrap();
///
/// {
///     let lease = q.try_receive_lease().unwrap();
///     assert_eq!(*lease.body(), "job");
///     // The handler bails out without settling: the message is released on drop...
/// }
/// // ...and is visible again at once, counted.
/// let lease = q.try_receive_lease().unwrap();
/// assert_eq!(lease.receive_count(), 2);
/// lease.extend(Duration::from_secs(60))?; // need more time
/// lease.ack()?;                            // done: deleted
/// assert!(q.try_receive().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a lease releases its message at once"]
pub struct Lease<'q, T> {
    delivery: Delivery<T>,
    unsettled: ReleaseOnDrop<'q, T>,
}

/// Releases `receipt` on drop unless disarmed. Kept apart from the delivery so that a settled
/// lease can still move its delivery out.
struct ReleaseOnDrop<'q, T> {
    queue: &'q Queue<T>,
    receipt: Receipt,
    armed: bool,
}

impl<T> Drop for ReleaseOnDrop<'_, T> {
    fn drop(&mut self) {
        if self.armed {
            // A lease that is already gone (expired, settled by receipt) refuses this and
            // nothing changes, which is what a drop wants.
            let _ = self.queue.release(self.receipt);
        }
    }
}

impl<'q, T> Lease<'q, T> {
    /// Wraps a delivery received from `queue` (for example by [`Queue::receive_batch`]).
    pub fn new(queue: &'q Queue<T>, delivery: Delivery<T>) -> Self {
        let unsettled = ReleaseOnDrop {
            queue,
            receipt: delivery.receipt(),
            armed: true,
        };
        Self {
            delivery,
            unsettled,
        }
    }

    /// The queue the message came from.
    pub fn queue(&self) -> &'q Queue<T> {
        self.unsettled.queue
    }

    /// Acknowledges the message: it is deleted and never delivered again
    /// ([`Queue::delete`]).
    pub fn ack(self) -> Result<(), ReceiptError> {
        self.settle(Queue::delete)
    }

    /// Gives the message back: visible again at once, or moved to the dead-letter queue if it
    /// has been received too often ([`Queue::release`]).
    pub fn nack(self) -> Result<(), ReceiptError> {
        self.settle(Queue::release)
    }

    /// Gives the message back after `delay`: it stays invisible for `delay` from now, then is
    /// delivered again (or dead-lettered). A zero delay is [`Lease::nack`]. A delay over
    /// [`MAX_TIMEOUT`](crate::MAX_TIMEOUT) is refused with [`ReceiptError::TimeoutTooLong`]
    /// and the message is released at once instead.
    pub fn nack_after(self, delay: Duration) -> Result<(), ReceiptError> {
        self.nack_with(Nack::after(delay))
    }

    /// Gives the message back as `nack` says: after its delay, with its reason (kept in the
    /// dead-letter record if this was the last receive allowed); see [`Queue::nack`].
    ///
    /// ```
    /// use visq::{Nack, Queue};
    /// let q: Queue<&str> = Queue::builder().build().unwrap();
    /// q.send("job").unwrap();
    /// let lease = q.try_receive_lease().unwrap();
    /// lease.nack_with(Nack::now().reason("database unavailable")).unwrap();
    /// ```
    pub fn nack_with(self, nack: Nack) -> Result<(), ReceiptError> {
        self.settle(|queue, receipt| queue.nack(receipt, nack))
    }

    /// Gives back a message that no handler saw, as if it had not been received: visible
    /// again at once with its receive count restored, never dead-lettered by this
    /// ([`Queue::hand_back`]). Not a nack: a failed attempt should [`Lease::nack`].
    pub fn hand_back(self) -> Result<(), ReceiptError> {
        self.settle(Queue::hand_back)
    }

    /// Keeps the lease for `timeout` from now ([`Queue::change_visibility`]), longer or
    /// shorter. A zero timeout releases the message; the lease is then spent, and settling it
    /// afterwards fails with [`ReceiptError::Stale`].
    pub fn extend(&self, timeout: Duration) -> Result<(), ReceiptError> {
        self.queue().change_visibility(self.receipt(), timeout)
    }

    /// The delivery, no longer guarded: settle it by its receipt, SQS style.
    pub fn into_delivery(mut self) -> Delivery<T> {
        self.unsettled.armed = false;
        self.delivery
    }

    /// Runs one settlement. If it was refused for its timeout, the lease is still live and is
    /// dropped like an unsettled one (released); any other refusal means the lease is gone
    /// already, and nothing more is tried (or counted as refused).
    fn settle(
        mut self,
        settlement: impl FnOnce(&Queue<T>, Receipt) -> Result<(), ReceiptError>,
    ) -> Result<(), ReceiptError> {
        let result = settlement(self.queue(), self.receipt());
        self.unsettled.armed = result == Err(ReceiptError::TimeoutTooLong);
        result
    }
}

impl<T> Deref for Lease<'_, T> {
    type Target = Delivery<T>;

    fn deref(&self) -> &Delivery<T> {
        &self.delivery
    }
}

impl<T: fmt::Debug> fmt::Debug for Lease<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> Queue<T> {
    /// [`Queue::try_receive`], guarded: the next visible message as a [`Lease`], if there is
    /// one, without blocking.
    ///
    /// ```
    /// let q: visq::Queue<u32> = visq::Queue::builder().build().unwrap();
    /// q.send(7).unwrap();
    /// let lease = q.try_receive_lease().unwrap();
    /// assert_eq!(*lease.body(), 7);
    /// lease.ack().unwrap();
    /// ```
    pub fn try_receive_lease(&self) -> Option<Lease<'_, T>> {
        self.try_receive()
            .map(|delivery| Lease::new(self, delivery))
    }

    /// [`Queue::receive`], guarded: waits up to `wait` (wall-clock time) for a visible message
    /// and returns it as a [`Lease`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let q: visq::Queue<u32> = visq::Queue::builder().build().unwrap();
    /// assert!(q.receive_lease(Duration::from_millis(1)).is_none());
    /// q.send(7).unwrap();
    /// let lease = q.receive_lease(Duration::from_secs(1)).unwrap();
    /// lease.nack_after(Duration::from_secs(5)).unwrap(); // try again in 5 s
    /// ```
    pub fn receive_lease(&self, wait: Duration) -> Option<Lease<'_, T>> {
        self.receive(wait)
            .map(|delivery| Lease::new(self, delivery))
    }
}
