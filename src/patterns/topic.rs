//! Publish/subscribe: a [`Topic`] fans each message out to the queues subscribed to it.

use crate::{BuildError, Builder, Queue, SendError};
use std::fmt;
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// A fan-out point: every message published goes, as a clone, to each subscription's own
/// queue, which has its own capacity, visibility timeout and dead-letter settings.
///
/// A subscription may filter: it gets only the messages its predicate accepts. A subscription
/// that does not get a message (its queue is full or closed, or its filter or the body's
/// `Clone` panicked) never loses it silently: [`Topic::publish`] names every subscription
/// that got it and every one that did not, hands the body back, and [`Topic::publish_to`]
/// retries just those that did not.
///
/// # Publishing runs no caller code under a lock
///
/// The subscription list is an immutable snapshot (`Arc<[Route]>`) behind a lock that is held
/// only to copy or swap that `Arc`: a publish takes the current snapshot and releases the lock
/// before it runs any filter, clone or send; subscribing and unsubscribing build a new
/// snapshot and swap it in, and drop the old one (perhaps the last handle on a removed
/// filter or queue) only after releasing the lock. So a filter or a `Clone` may itself subscribe, unsubscribe or
/// publish, and a panic in one poisons nothing. The price: a publish works on the
/// subscriptions of the moment it started. One that started before an `unsubscribe` returned
/// may still deliver to that subscription; one that starts after it never does.
///
/// A panic in a filter or in the body's `Clone` is caught and contained to its subscription:
/// that subscription is named in [`PublishError::panicked`], the publish goes on with the
/// others, and the panic's payload is dropped (the panic hook has reported it already).
///
/// ```
/// use visq::{Queue, Topic};
///
/// let orders: Topic<u32> = Topic::new();
/// let billing = orders.subscribe(Queue::builder().capacity(100))?;
/// let big = orders.subscribe_filtered(Queue::builder().capacity(1), |amount| *amount >= 1000)?;
///
/// assert_eq!(orders.publish(5).unwrap(), 1);     // billing only
/// assert_eq!(orders.publish(2000).unwrap(), 2);  // both
/// let refused = orders.publish(3000).unwrap_err(); // `big` is full
/// assert_eq!(refused.refused_ids(), vec![big.id()]);
/// assert_eq!(refused.delivered, vec![billing.id()]);
///
/// assert_eq!(*billing.try_receive().unwrap().body(), 5);
/// big.delete(big.try_receive().unwrap().receipt()).unwrap();
/// // Retry only where it was refused, with the body that came back.
/// orders.publish_to(&refused.refused_ids(), refused.body).unwrap();
/// assert_eq!(*big.try_receive().unwrap().body(), 3000);
/// # Ok::<(), visq::BuildError>(())
/// ```
pub struct Topic<T> {
    /// The current snapshot of the subscriptions; the lock guards only the `Arc`.
    routes: RwLock<Arc<[Route<T>]>>,
    next_id: AtomicU64,
}

/// One subscription as the topic keeps it.
struct Route<T> {
    id: SubscriptionId,
    queue: Arc<Queue<T>>,
    filter: Option<Arc<Filter<T>>>,
}

// Not derived: that would ask for `T: Clone`.
impl<T> Clone for Route<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            queue: self.queue.clone(),
            filter: self.filter.clone(),
        }
    }
}

type Filter<T> = dyn Fn(&T) -> bool + Send + Sync;

/// Names a subscription within its topic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A subscriber's handle: its id and its queue, which it dereferences to.
#[derive(Clone, Debug)]
pub struct Subscription<T> {
    id: SubscriptionId,
    queue: Arc<Queue<T>>,
}

impl<T> Subscription<T> {
    /// The subscription's id within its topic.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The subscription's queue.
    pub fn queue(&self) -> &Arc<Queue<T>> {
        &self.queue
    }
}

impl<T> Deref for Subscription<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

/// What a subscription's queue can be given as: a [`Builder`] (built on subscribing), a
/// [`Queue`], or an `Arc<Queue>` shared with others.
pub trait SubscriberQueue<T> {
    /// The queue, built if need be.
    fn into_queue(self) -> Result<Arc<Queue<T>>, BuildError>;
}

impl<T> SubscriberQueue<T> for Builder<T> {
    fn into_queue(self) -> Result<Arc<Queue<T>>, BuildError> {
        self.build().map(Arc::new)
    }
}

impl<T> SubscriberQueue<T> for Queue<T> {
    fn into_queue(self) -> Result<Arc<Queue<T>>, BuildError> {
        Ok(Arc::new(self))
    }
}

impl<T> SubscriberQueue<T> for Arc<Queue<T>> {
    fn into_queue(self) -> Result<Arc<Queue<T>>, BuildError> {
        Ok(self)
    }
}

/// A message that some subscriptions did not get. The others did: they are named in
/// [`PublishError::delivered`].
pub struct PublishError<T> {
    /// The body, back to the caller.
    pub body: T,
    /// Each subscription whose queue refused the message, and why (`Full` or `Closed`).
    pub refused: Vec<(SubscriptionId, SendError<()>)>,
    /// Each subscription whose filter, or the body's `Clone` for it, panicked: it did not get
    /// the message.
    pub panicked: Vec<SubscriptionId>,
    /// The subscriptions that got the message, in subscription order.
    pub delivered: Vec<SubscriptionId>,
}

impl<T> PublishError<T> {
    /// The subscriptions that did not get the message (refused, then panicked), for
    /// [`Topic::publish_to`].
    pub fn refused_ids(&self) -> Vec<SubscriptionId> {
        let refused = self.refused.iter().map(|&(id, _)| id);
        refused.chain(self.panicked.iter().copied()).collect()
    }

    /// The body that was not delivered everywhere.
    pub fn into_inner(self) -> T {
        self.body
    }
}

impl<T> fmt::Debug for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishError")
            .field("refused", &self.refused)
            .field("panicked", &self.panicked)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} subscription(s) refused the message, {} panicked in its filter or clone ({} got it)",
            self.refused.len(),
            self.panicked.len(),
            self.delivered.len()
        )
    }
}

impl<T> std::error::Error for PublishError<T> {}

impl<T> Default for Topic<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Topic<T> {
    /// A topic with no subscriptions.
    pub fn new() -> Self {
        Self {
            routes: RwLock::new(Arc::new([])),
            next_id: AtomicU64::new(0),
        }
    }

    /// Subscribes `queue` (a [`Builder`], a [`Queue`] or an `Arc<Queue>`) to every message
    /// published from now on. Fails only when a builder's settings do.
    pub fn subscribe(&self, queue: impl SubscriberQueue<T>) -> Result<Subscription<T>, BuildError> {
        self.add(queue, None)
    }

    /// Subscribes `queue` to the messages published from now on that `filter` accepts.
    pub fn subscribe_filtered(
        &self,
        queue: impl SubscriberQueue<T>,
        filter: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Result<Subscription<T>, BuildError> {
        self.add(queue, Some(Arc::new(filter)))
    }

    fn add(
        &self,
        queue: impl SubscriberQueue<T>,
        filter: Option<Arc<Filter<T>>>,
    ) -> Result<Subscription<T>, BuildError> {
        let queue = queue.into_queue()?;
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let route = Route {
            id,
            queue: queue.clone(),
            filter,
        };
        self.update(|routes| routes.iter().cloned().chain([route]).collect());
        Ok(Subscription { id, queue })
    }

    /// Ends a subscription: publishes that start after this returns no longer deliver to it
    /// (one already under way may still: see the type's docs); its queue keeps what it holds.
    /// Returns whether it was subscribed.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let mut found = false;
        self.update(|routes| {
            found = routes.iter().any(|route| route.id == id);
            routes
                .iter()
                .filter(|route| route.id != id)
                .cloned()
                .collect()
        });
        found
    }

    /// How many subscriptions the topic has.
    pub fn subscriptions(&self) -> usize {
        self.routes().len()
    }

    /// The current snapshot; the lock is released before this returns.
    fn routes(&self) -> Arc<[Route<T>]> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Swaps in the snapshot `change` makes from the current one. Runs no caller code under
    /// the lock (`change` only copies routes), so it cannot deadlock with a filter or clone:
    /// the old snapshot is dropped after the lock is released, since it may hold the last
    /// handle on a removed subscription's filter or queue, whose drops are caller code.
    fn update(&self, change: impl FnOnce(&[Route<T>]) -> Arc<[Route<T>]>) {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let new = change(&routes);
        let old = std::mem::replace(&mut *routes, new);
        drop(routes);
        drop(old);
    }
}

impl<T: Clone> Topic<T> {
    /// Sends a clone of `body` to every subscription whose filter accepts it. Returns how many
    /// got it, or, if any did not (its queue refused, or its filter or the clone panicked), a
    /// [`PublishError`] with the body, those that did not get it and those that did.
    pub fn publish(&self, body: T) -> Result<usize, PublishError<T>> {
        self.deliver(body, |_| true)
    }

    /// [`Topic::publish`], to the listed subscriptions only (their filters still apply):
    /// for retrying the refusals of a [`PublishError`].
    pub fn publish_to(&self, ids: &[SubscriptionId], body: T) -> Result<usize, PublishError<T>> {
        self.deliver(body, |id| ids.contains(&id))
    }

    fn deliver(
        &self,
        body: T,
        chosen: impl Fn(SubscriptionId) -> bool,
    ) -> Result<usize, PublishError<T>> {
        let mut delivered = Vec::new();
        let mut refused = Vec::new();
        let mut panicked = Vec::new();
        for route in self.routes().iter().filter(|route| chosen(route.id)) {
            // Caller code (filter, clone) may panic: contain it to this subscription. Nothing
            // of ours is left half-done by an unwind here: no lock is held, nothing is sent.
            let copy = panic::catch_unwind(AssertUnwindSafe(|| {
                let accepted = route.filter.as_ref().map_or(true, |accepts| accepts(&body));
                accepted.then(|| body.clone())
            }));
            match copy {
                Ok(None) => {}
                Ok(Some(copy)) => match route.queue.send(copy) {
                    Ok(_) => delivered.push(route.id),
                    Err(error) => refused.push((route.id, error.map(drop))),
                },
                Err(_payload) => panicked.push(route.id),
            }
        }
        if refused.is_empty() && panicked.is_empty() {
            Ok(delivered.len())
        } else {
            Err(PublishError {
                body,
                refused,
                panicked,
                delivered,
            })
        }
    }
}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<SubscriptionId> = self.routes().iter().map(|route| route.id).collect();
        f.debug_struct("Topic")
            .field("subscriptions", &ids)
            .finish()
    }
}
