//! Publish/subscribe: a [`Topic`] fans each message out to the queues subscribed to it.

use crate::{BuildError, Builder, Queue, SendError};
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// A fan-out point: every message published goes, as a clone, to each subscription's own
/// queue, which has its own capacity, visibility timeout and dead-letter settings.
///
/// A subscription may filter: it gets only the messages its predicate accepts. A subscription
/// that refuses a message (full or closed) never loses it silently: [`Topic::publish`] names
/// every subscription that did not get it and hands the body back, and
/// [`Topic::publish_to`] retries just those.
///
/// Publishing takes a read lock on the subscription list (subscribing takes the write lock);
/// the sends themselves are the queues' lock-free sends.
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
/// assert_eq!(refused.delivered, 1);
///
/// assert_eq!(*billing.try_receive().unwrap().body(), 5);
/// big.delete(big.try_receive().unwrap().receipt()).unwrap();
/// // Retry only where it was refused, with the body that came back.
/// orders.publish_to(&refused.refused_ids(), refused.body).unwrap();
/// assert_eq!(*big.try_receive().unwrap().body(), 3000);
/// # Ok::<(), visq::BuildError>(())
/// ```
pub struct Topic<T> {
    routes: RwLock<Vec<Route<T>>>,
    next_id: AtomicU64,
}

/// One subscription as the topic keeps it.
struct Route<T> {
    id: SubscriptionId,
    queue: Arc<Queue<T>>,
    filter: Option<Box<Filter<T>>>,
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

/// A message that some subscriptions did not get. The others did.
pub struct PublishError<T> {
    /// The body, back to the caller.
    pub body: T,
    /// Each subscription that refused the message, and why (`Full` or `Closed`).
    pub refused: Vec<(SubscriptionId, SendError<()>)>,
    /// How many subscriptions got the message.
    pub delivered: usize,
}

impl<T> PublishError<T> {
    /// The subscriptions that refused the message, for [`Topic::publish_to`].
    pub fn refused_ids(&self) -> Vec<SubscriptionId> {
        self.refused.iter().map(|&(id, _)| id).collect()
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
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} subscription(s) refused the message ({} got it)",
            self.refused.len(),
            self.delivered
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
            routes: RwLock::new(Vec::new()),
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
        self.add(queue, Some(Box::new(filter)))
    }

    fn add(
        &self,
        queue: impl SubscriberQueue<T>,
        filter: Option<Box<Filter<T>>>,
    ) -> Result<Subscription<T>, BuildError> {
        let queue = queue.into_queue()?;
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.routes_mut().push(Route {
            id,
            queue: queue.clone(),
            filter,
        });
        Ok(Subscription { id, queue })
    }

    /// Ends a subscription: it gets no more messages (its queue keeps what it holds).
    /// Returns whether it was subscribed.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let mut routes = self.routes_mut();
        let before = routes.len();
        routes.retain(|route| route.id != id);
        routes.len() < before
    }

    /// How many subscriptions the topic has.
    pub fn subscriptions(&self) -> usize {
        self.routes().len()
    }

    fn routes(&self) -> std::sync::RwLockReadGuard<'_, Vec<Route<T>>> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn routes_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Route<T>>> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone> Topic<T> {
    /// Sends a clone of `body` to every subscription whose filter accepts it. Returns how many
    /// got it, or, if any refused it, a [`PublishError`] with the body, the refusals and the
    /// count of those that got it.
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
        let mut delivered = 0;
        let mut refused = Vec::new();
        for route in self.routes().iter() {
            if !chosen(route.id) || route.filter.as_ref().is_some_and(|accepts| !accepts(&body)) {
                continue;
            }
            match route.queue.send(body.clone()) {
                Ok(_) => delivered += 1,
                Err(error) => refused.push((route.id, error.map(drop))),
            }
        }
        if refused.is_empty() {
            Ok(delivered)
        } else {
            Err(PublishError {
                body,
                refused,
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
