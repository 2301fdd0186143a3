//! Lease guards: a delivery that settles itself if its holder does not.
//!
//! A [`Lease`] is a delivery tied to where it came from: an in-process [`Queue`] (the default,
//! a [`Delivery`] settled by [`Receipt`]) or any [`Backend`] (a [`BackendLease`]: an
//! [`Incoming`] settled by [`Handle`]). Settling consumes it ([`Lease::ack`], [`Lease::nack`],
//! [`Lease::nack_after`], [`Lease::dead_letter`], or [`Lease::hand_back`] for work nobody
//! started); dropping it unsettled releases the message at once, so a handler that returns
//! early or panics does not leave its message stuck until the visibility deadline. Everything
//! here is built on the public receipt API of each source, which keeps working for callers who
//! prefer to settle by receipt.
//!
//! The two sources differ where the backends do, and [`LeaseSource`] says how:
//!
//! | | [`Queue`] | `dyn` [`Backend`] |
//! |---|---|---|
//! | errors | [`ReceiptError`] | [`BackendError`] ([`BackendError::Stale`] for a lease gone) |
//! | [`Lease::receive_count`] | exact | [`ReceiveCount::at_least`](crate::ReceiveCount::at_least) |
//! | [`Lease::nack_with`]'s reason | kept in the dead-letter record | not carried: use [`Lease::dead_letter`] |
//! | [`Lease::nack_after`], [`Lease::extend`] | always | [`BackendError::Unsupported`] where the backend cannot change a lease (RabbitMQ); the lease stays live and the drop releases it |
//! | [`Lease::hand_back`] | uncounted | uncounted only where [`Capabilities::uncharged_hand_back`](crate::Capabilities::uncharged_hand_back) |

use crate::{
    Backend, BackendError, Delivery, Handle, Incoming, Limit, Nack, Queue, Receipt, ReceiptError,
};
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

/// Where a [`Lease`] comes from and how it is settled: implemented by the in-process
/// [`Queue<T>`] and by `dyn Backend<Body = T>` (every backend, through an
/// `Arc<dyn Backend<Body = T>>` or a `&dyn Backend<Body = T>`), and by nothing else (the
/// trait is sealed). Its methods are the crate's own; users settle through [`Lease`].
pub trait LeaseSource<T>: sealed::Sealed {
    /// What a receive hands out: a [`Delivery<T>`] or an [`Incoming<T>`].
    type Delivery;
    /// What settles it: a [`Receipt`] or a [`Handle`].
    type Receipt: Clone + Send + Sync;
    /// Why a settlement was refused: a [`ReceiptError`] or a [`BackendError`].
    type Error: fmt::Debug + fmt::Display;

    /// The delivery's body.
    #[doc(hidden)]
    fn body(delivery: &Self::Delivery) -> &T;
    /// The delivery's receive count, at least (see the module table).
    #[doc(hidden)]
    fn receive_count(delivery: &Self::Delivery) -> u32;
    /// The delivery's receipt.
    #[doc(hidden)]
    fn receipt(delivery: &Self::Delivery) -> Self::Receipt;
    /// The ack.
    #[doc(hidden)]
    fn delete(&self, receipt: &Self::Receipt) -> Result<(), Self::Error>;
    /// The nack: visible again at once.
    #[doc(hidden)]
    fn release(&self, receipt: &Self::Receipt) -> Result<(), Self::Error>;
    /// A nack after `nack.delay`, with its reason where the source keeps one.
    #[doc(hidden)]
    fn nack(&self, receipt: &Self::Receipt, nack: Nack) -> Result<(), Self::Error>;
    /// Gives back unused work.
    #[doc(hidden)]
    fn hand_back(&self, receipt: &Self::Receipt) -> Result<(), Self::Error>;
    /// Moves the lease's deadline to `timeout` from now.
    #[doc(hidden)]
    fn change_visibility(
        &self,
        receipt: &Self::Receipt,
        timeout: Duration,
    ) -> Result<(), Self::Error>;
    /// To the dead-letter queue now, with `reason`.
    #[doc(hidden)]
    fn dead_letter(&self, receipt: &Self::Receipt, reason: &str) -> Result<(), Self::Error>;
    /// Whether `error` refused the call itself (a timeout over a limit, a change the source
    /// cannot make) and left the lease live.
    #[doc(hidden)]
    fn lease_still_live(error: &Self::Error) -> bool;
    /// Whether `error` says the lease had already ended (expired, settled elsewhere).
    #[doc(hidden)]
    fn lease_gone(error: &Self::Error) -> bool;
}

mod sealed {
    /// Keeps [`super::LeaseSource`] to the crate's two sources.
    pub trait Sealed {}
    impl<T> Sealed for crate::Queue<T> {}
    impl<T> Sealed for dyn crate::Backend<Body = T> {}
}

impl<T> LeaseSource<T> for Queue<T> {
    type Delivery = Delivery<T>;
    type Receipt = Receipt;
    type Error = ReceiptError;

    fn body(delivery: &Delivery<T>) -> &T {
        delivery.body()
    }

    fn receive_count(delivery: &Delivery<T>) -> u32 {
        delivery.receive_count()
    }

    fn receipt(delivery: &Delivery<T>) -> Receipt {
        delivery.receipt()
    }

    fn delete(&self, receipt: &Receipt) -> Result<(), ReceiptError> {
        Queue::delete(self, *receipt)
    }

    fn release(&self, receipt: &Receipt) -> Result<(), ReceiptError> {
        Queue::release(self, *receipt)
    }

    fn nack(&self, receipt: &Receipt, nack: Nack) -> Result<(), ReceiptError> {
        Queue::nack(self, *receipt, nack)
    }

    fn hand_back(&self, receipt: &Receipt) -> Result<(), ReceiptError> {
        Queue::hand_back(self, *receipt)
    }

    fn change_visibility(&self, receipt: &Receipt, timeout: Duration) -> Result<(), ReceiptError> {
        Queue::change_visibility(self, *receipt, timeout)
    }

    fn dead_letter(&self, receipt: &Receipt, reason: &str) -> Result<(), ReceiptError> {
        self.reject(*receipt, reason.to_owned())
    }

    fn lease_still_live(error: &ReceiptError) -> bool {
        matches!(
            error,
            ReceiptError::TimeoutTooLong | ReceiptError::NoDeadLetterQueue
        )
    }

    fn lease_gone(error: &ReceiptError) -> bool {
        matches!(error, ReceiptError::Stale | ReceiptError::Expired)
    }
}

impl<T> LeaseSource<T> for dyn Backend<Body = T> {
    type Delivery = Incoming<T>;
    type Receipt = Handle;
    type Error = BackendError;

    fn body(delivery: &Incoming<T>) -> &T {
        &delivery.body
    }

    fn receive_count(delivery: &Incoming<T>) -> u32 {
        delivery.receive_count.at_least()
    }

    fn receipt(delivery: &Incoming<T>) -> Handle {
        delivery.handle.clone()
    }

    fn delete(&self, receipt: &Handle) -> Result<(), BackendError> {
        Backend::delete(self, receipt)
    }

    fn release(&self, receipt: &Handle) -> Result<(), BackendError> {
        Backend::release(self, receipt)
    }

    /// A release, or a visibility change to the delay; the reason is not carried (a backend
    /// keeps a reason only through [`Backend::dead_letter`]).
    fn nack(&self, receipt: &Handle, nack: Nack) -> Result<(), BackendError> {
        if nack.delay.is_zero() {
            Backend::release(self, receipt)
        } else {
            Backend::change_visibility(self, receipt, nack.delay)
        }
    }

    fn hand_back(&self, receipt: &Handle) -> Result<(), BackendError> {
        Backend::hand_back(self, receipt)
    }

    fn change_visibility(&self, receipt: &Handle, timeout: Duration) -> Result<(), BackendError> {
        Backend::change_visibility(self, receipt, timeout)
    }

    fn dead_letter(&self, receipt: &Handle, reason: &str) -> Result<(), BackendError> {
        Backend::dead_letter(self, receipt, reason)
    }

    fn lease_still_live(error: &BackendError) -> bool {
        matches!(
            error,
            BackendError::Unsupported(_)
                | BackendError::Limit {
                    limit: Limit::VisibilityMillis,
                    ..
                }
        )
    }

    fn lease_gone(error: &BackendError) -> bool {
        *error == BackendError::Stale
    }
}

/// A lease on a message received from any [`Backend`]; see [`Lease`].
///
/// The backend is a `'static` trait object, as behind an `Arc<dyn Backend<Body = T>>`: a
/// function that takes the backend by reference to make leases writes
/// `&(dyn Backend<Body = T> + 'static)` (a bare `&dyn Backend` there means a shorter one).
pub type BackendLease<'b, T> = Lease<'b, T, dyn Backend<Body = T>>;

/// A delivery that must be settled: acknowledged, given back, or given back later.
///
/// Dereferences to its delivery: a [`Delivery`] (`id()`, `receipt()`, ...) for a lease on a
/// [`Queue`], an [`Incoming`] (`id`, `handle`, `attributes`, ...) for a [`BackendLease`];
/// [`Lease::body`] and [`Lease::receive_count`] work on both. Dropping a lease that was not
/// settled releases the message at once, like [`Lease::nack`] (a no-op if the lease has
/// already expired or been settled through its receipt).
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
///
/// The same guard over any backend (here the in-process queue seen through the trait, as a
/// broker would be):
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use visq::{Backend, BackendLease, Lease, Outgoing, Queue};
///
/// let backend: Arc<dyn Backend<Body = String>> = Arc::new(Queue::builder().build()?);
/// backend.send(Outgoing::new("job".to_string())).unwrap();
/// let mut received = Vec::new();
/// backend.receive(&mut received, 1, Duration::ZERO, None)?;
/// let lease: BackendLease<'_, String> = Lease::new(&*backend, received.pop().unwrap());
/// assert_eq!((lease.body().as_str(), lease.receive_count()), ("job", 1));
/// lease.ack()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a lease releases its message at once"]
pub struct Lease<'q, T, S: ?Sized + LeaseSource<T> = Queue<T>> {
    delivery: S::Delivery,
    unsettled: ReleaseOnDrop<'q, T, S>,
}

/// Releases `receipt` on drop unless disarmed. Kept apart from the delivery so that a settled
/// lease can still move its delivery out.
struct ReleaseOnDrop<'q, T, S: ?Sized + LeaseSource<T>> {
    source: &'q S,
    receipt: S::Receipt,
    armed: bool,
}

impl<T, S: ?Sized + LeaseSource<T>> Drop for ReleaseOnDrop<'_, T, S> {
    fn drop(&mut self) {
        if self.armed {
            // A lease that is already gone (expired, settled by receipt) refuses this and
            // nothing changes, which is what a drop wants.
            let _ = self.source.release(&self.receipt);
        }
    }
}

impl<'q, T, S: ?Sized + LeaseSource<T>> Lease<'q, T, S> {
    /// Wraps a delivery received from `source`: a [`Queue`] (for example by
    /// [`Queue::receive_batch`]) or a `&dyn Backend` (by [`Backend::receive`]).
    pub fn new(source: &'q S, delivery: S::Delivery) -> Self {
        let unsettled = ReleaseOnDrop {
            source,
            receipt: S::receipt(&delivery),
            armed: true,
        };
        Self {
            delivery,
            unsettled,
        }
    }

    /// The queue or backend the message came from.
    pub fn queue(&self) -> &'q S {
        self.unsettled.source
    }

    /// The body.
    pub fn body(&self) -> &T {
        S::body(&self.delivery)
    }

    /// How many times the message has been received, this time included: exact on a
    /// [`Queue`], [`ReceiveCount::at_least`](crate::ReceiveCount::at_least) on a backend.
    pub fn receive_count(&self) -> u32 {
        S::receive_count(&self.delivery)
    }

    /// Acknowledges the message: it is deleted and never delivered again
    /// ([`Queue::delete`], [`Backend::delete`]).
    pub fn ack(self) -> Result<(), S::Error> {
        self.settle(|source, receipt| source.delete(receipt))
    }

    /// Gives the message back: visible again at once, or moved to the dead-letter queue if it
    /// has been received too often ([`Queue::release`], [`Backend::release`]).
    pub fn nack(self) -> Result<(), S::Error> {
        self.settle(|source, receipt| source.release(receipt))
    }

    /// Gives the message back after `delay`: it stays invisible for `delay` from now, then is
    /// delivered again (or dead-lettered). A zero delay is [`Lease::nack`]. A delay over
    /// [`MAX_TIMEOUT`](crate::MAX_TIMEOUT) (a backend's
    /// [`Capabilities::max_visibility`](crate::Capabilities::max_visibility)) is refused and
    /// the message is released at once instead; so is a delay on a backend that cannot change
    /// a lease ([`BackendError::Unsupported`]).
    pub fn nack_after(self, delay: Duration) -> Result<(), S::Error> {
        self.nack_with(Nack::after(delay))
    }

    /// Gives the message back as `nack` says: after its delay, with its reason (kept in the
    /// dead-letter record by a [`Queue`] if this was the last receive allowed; see
    /// [`Queue::nack`]; a backend does not carry it: see [`Lease::dead_letter`]).
    ///
    /// ```
    /// use visq::{Nack, Queue};
    /// let q: Queue<&str> = Queue::builder().build().unwrap();
    /// q.send("job").unwrap();
    /// let lease = q.try_receive_lease().unwrap();
    /// lease.nack_with(Nack::now().reason("database unavailable")).unwrap();
    /// ```
    pub fn nack_with(self, nack: Nack) -> Result<(), S::Error> {
        self.settle(|source, receipt| source.nack(receipt, nack))
    }

    /// Moves the message to the dead-letter queue now, whatever its receive count, with
    /// `reason` where the source keeps one ([`Queue::reject`], [`Backend::dead_letter`]).
    /// Where there is no dead-letter queue it is refused ([`ReceiptError::NoDeadLetterQueue`],
    /// [`BackendError::Unsupported`]) and the lease, still live, is released by the drop.
    pub fn dead_letter(self, reason: &str) -> Result<(), S::Error> {
        self.settle(|source, receipt| source.dead_letter(receipt, reason))
    }

    /// Gives back a message that no handler saw, as if it had not been received: visible
    /// again at once, never dead-lettered by this on a [`Queue`] ([`Queue::hand_back`]); on a
    /// backend without [`Capabilities::uncharged_hand_back`](crate::Capabilities::uncharged_hand_back)
    /// the receive still counts. Not a nack: a failed attempt should [`Lease::nack`].
    pub fn hand_back(self) -> Result<(), S::Error> {
        self.settle(|source, receipt| source.hand_back(receipt))
    }

    /// Keeps the lease for `timeout` from now ([`Queue::change_visibility`],
    /// [`Backend::change_visibility`]), longer or shorter. A zero timeout releases the
    /// message; the lease is then spent, and settling it afterwards fails as stale. A backend
    /// that cannot change a lease answers [`BackendError::Unsupported`] (RabbitMQ, whose
    /// leases do not expire: there is nothing to extend).
    pub fn extend(&self, timeout: Duration) -> Result<(), S::Error> {
        self.queue()
            .change_visibility(&self.unsettled.receipt, timeout)
    }

    /// The delivery, no longer guarded: settle it by its receipt, SQS style.
    pub fn into_delivery(mut self) -> S::Delivery {
        self.unsettled.armed = false;
        self.delivery
    }

    /// Runs one settlement. If it was refused for itself (a timeout over the limit, a change
    /// the source cannot make, no dead-letter queue), the lease is still live and is dropped
    /// like an unsettled one (released); any other refusal means the lease is gone already,
    /// or the source failed, and nothing more is tried (or counted as refused).
    pub(super) fn settle(
        mut self,
        settlement: impl FnOnce(&S, &S::Receipt) -> Result<(), S::Error>,
    ) -> Result<(), S::Error> {
        let result = settlement(self.queue(), &self.unsettled.receipt);
        self.unsettled.armed = result.as_ref().is_err_and(S::lease_still_live);
        result
    }
}

impl<T, S: ?Sized + LeaseSource<T>> Deref for Lease<'_, T, S> {
    type Target = S::Delivery;

    fn deref(&self) -> &S::Delivery {
        &self.delivery
    }
}

impl<T, S: ?Sized + LeaseSource<T>> fmt::Debug for Lease<'_, T, S>
where
    S::Delivery: fmt::Debug,
{
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
