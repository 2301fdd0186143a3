//! Request-reply over two queues: requests carry a correlation id and the queue to reply to.

use super::lock;
use crate::{MessageId, Queue, SendError};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Names one request; its reply carries the same id.
///
/// Ids are unique within the process (one counter for every [`Requester`]), so a reply that
/// reaches the wrong requester (two requesters sharing a reply queue, say) matches none of its
/// requests and is counted late, never delivered to the wrong request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct CorrelationId(u64);

impl CorrelationId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A request as responders receive it: the body, its correlation id and where to reply.
#[derive(Clone, Debug)]
pub struct Request<Q, R> {
    correlation_id: CorrelationId,
    reply_to: Arc<Queue<Reply<R>>>,
    body: Q,
}

impl<Q, R> Request<Q, R> {
    /// The request's correlation id.
    pub fn correlation_id(&self) -> CorrelationId {
        self.correlation_id
    }

    /// The request's body.
    pub fn body(&self) -> &Q {
        &self.body
    }

    /// Sends `body` to the requester as this request's reply. Fails with the body when the
    /// reply queue is full, or closed because the requester is gone.
    pub fn reply(&self, body: R) -> Result<MessageId, SendError<R>> {
        let reply = Reply {
            correlation_id: self.correlation_id,
            body,
        };
        self.reply_to
            .send(reply)
            .map_err(|refused| refused.map(|reply| reply.body))
    }
}

/// A reply on its way back: the body and the correlation id of its request.
#[derive(Clone, Debug)]
pub struct Reply<R> {
    correlation_id: CorrelationId,
    body: R,
}

impl<R> Reply<R> {
    /// The correlation id of the request this answers.
    pub fn correlation_id(&self) -> CorrelationId {
        self.correlation_id
    }

    /// The reply's body.
    pub fn body(&self) -> &R {
        &self.body
    }
}

/// A [`Consumer`](crate::Consumer) handler that serves requests with `handler` and sends its
/// result back as the reply.
///
/// A full reply queue fails the request, so the consumer retries it after its backoff (running
/// `handler` again). A closed reply queue means the requester is gone: the request is settled,
/// nobody waits for it.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use visq::{responder, Consumer, Queue, Reply, Request, Requester};
///
/// let requests: Arc<Queue<Request<u64, u64>>> = Arc::new(Queue::builder().build()?);
/// let replies: Arc<Queue<Reply<u64>>> = Arc::new(Queue::builder().build()?);
/// let server = Consumer::builder(requests.clone())
///     .workers(2)
///     .start(responder(|n: &u64| n * n))?;
///
/// let client = Requester::new(requests, replies)?;
/// assert_eq!(client.request(12, Duration::from_secs(5)).unwrap(), 144);
/// server.stop(Duration::from_secs(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn responder<Q, R, F>(
    handler: F,
) -> impl Fn(&Request<Q, R>) -> Result<(), SendError<R>> + Send + Sync + 'static
where
    F: Fn(&Q) -> R + Send + Sync + 'static,
{
    move |request| match request.reply(handler(request.body())) {
        Ok(_) | Err(SendError::Closed(_)) => Ok(()),
        Err(refused) => Err(refused),
    }
}

/// The sending side: sends requests and waits for their replies on a reply queue of its own.
///
/// A dispatcher thread receives from the reply queue and hands each reply to the request
/// waiting for it, so any number of requests, from any number of threads, can be in flight
/// at once. A reply whose requester has given up (timed out, or dropped its
/// [`PendingReply`]) is deleted and counted in [`Requester::late_replies`]; it never reaches
/// another request.
///
/// The requester should be the only receiver of its reply queue: a reply taken by another
/// receiver never reaches its request (another requester counts it late, since correlation
/// ids are unique in the process), so its request times out. Dropping it closes the reply
/// queue (responders replying afterwards get [`SendError::Closed`]) and ends the dispatcher.
///
/// ```
/// use std::{sync::Arc, thread, time::Duration};
/// use visq::{Queue, Reply, Request, Requester};
///
/// let requests: Arc<Queue<Request<String, usize>>> = Arc::new(Queue::builder().build()?);
/// let replies: Arc<Queue<Reply<usize>>> = Arc::new(Queue::builder().build()?);
/// let client = Requester::new(requests.clone(), replies)?;
///
/// // Two requests in flight at once.
/// let first = client.send("hello".to_string()).unwrap();
/// let second = client.send("visq".to_string()).unwrap();
///
/// // A responder, by hand: reply, then delete the request.
/// for _ in 0..2 {
///     let lease = requests.receive_lease(Duration::from_secs(5)).unwrap();
///     let request = lease.body();
///     request.reply(request.body().len()).unwrap();
///     lease.ack().unwrap();
/// }
/// assert_eq!(second.wait(Duration::from_secs(5)), Ok(4));
/// assert_eq!(first.wait(Duration::from_secs(5)), Ok(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Requester<Q, R> {
    requests: Arc<Queue<Request<Q, R>>>,
    replies: Arc<Queue<Reply<R>>>,
    waiting: Arc<Waiting<R>>,
    dispatcher: Option<JoinHandle<()>>,
}

/// The next [`CorrelationId`], for every requester of the process alike.
static NEXT_CORRELATION_ID: AtomicU64 = AtomicU64::new(0);

/// The requests waiting for replies, and the count of replies nobody waited for.
struct Waiting<R> {
    senders: Mutex<HashMap<CorrelationId, Sender<R>>>,
    late: AtomicU64,
}

impl<R> Waiting<R> {
    fn senders(&self) -> MutexGuard<'_, HashMap<CorrelationId, Sender<R>>> {
        lock(&self.senders)
    }

    /// Hands `reply` to its request, or counts it late if nobody waits for it. The hand-over
    /// happens under the lock, so a request that finds its entry gone knows its reply is in
    /// its channel.
    fn route(&self, reply: Reply<R>) {
        let mut senders = self.senders();
        match senders.remove(&reply.correlation_id) {
            // The receiver lives at least as long as the entry (see `PendingReply::give_up`).
            Some(sender) => drop(sender.send(reply.body)),
            None => {
                self.late.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<Q, R: Clone + Send + 'static> Requester<Q, R> {
    /// A requester that sends to `requests` and takes replies from `replies`, which it must
    /// be the only one to receive from. Starts the dispatcher thread.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] if `replies` is closed (no reply could ever
    /// come back), or with the error of spawning the thread.
    pub fn new(
        requests: Arc<Queue<Request<Q, R>>>,
        replies: Arc<Queue<Reply<R>>>,
    ) -> io::Result<Self> {
        if replies.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the reply queue is closed: no reply could come back",
            ));
        }
        let waiting = Arc::new(Waiting {
            senders: Mutex::new(HashMap::new()),
            late: AtomicU64::new(0),
        });
        let dispatcher = {
            let (replies, waiting) = (replies.clone(), waiting.clone());
            thread::Builder::new()
                .name("visq-replies".into())
                .spawn(move || {
                    // Replies are drained even after a close; then `None` means done.
                    while let Some(reply) = next_reply(&replies) {
                        waiting.route(reply);
                    }
                })?
        };
        Ok(Self {
            requests,
            replies,
            waiting,
            dispatcher: Some(dispatcher),
        })
    }
}

/// The next reply, deleted from `replies`; `None` once the queue is closed and drained.
fn next_reply<R: Clone>(replies: &Queue<Reply<R>>) -> Option<Reply<R>> {
    loop {
        if let Some(delivery) = replies.receive(Duration::from_secs(1)) {
            // A failed delete means the lease expired: the reply comes again, counted late.
            let _ = replies.delete(delivery.receipt());
            return Some(delivery.into_body());
        }
        if replies.is_closed() {
            return None;
        }
    }
}

impl<Q, R> Requester<Q, R> {
    /// Sends a request; wait for its reply with [`PendingReply::wait`]. Fails with the body
    /// when the request queue is full or closed.
    pub fn send(&self, body: Q) -> Result<PendingReply<'_, R>, SendError<Q>> {
        let correlation_id = CorrelationId(NEXT_CORRELATION_ID.fetch_add(1, Ordering::Relaxed));
        let (sender, receiver) = mpsc::channel();
        // Registered before sending, so that even the fastest reply finds it.
        self.waiting.senders().insert(correlation_id, sender);
        let pending = PendingReply {
            correlation_id,
            receiver,
            waiting: &self.waiting,
        };
        let request = Request {
            correlation_id,
            reply_to: self.replies.clone(),
            body,
        };
        match self.requests.send(request) {
            Ok(_) => Ok(pending),
            Err(refused) => {
                pending.give_up();
                Err(refused.map(|request| request.body))
            }
        }
    }

    /// Sends a request and waits up to `timeout` (wall-clock) for its reply.
    pub fn request(&self, body: Q, timeout: Duration) -> Result<R, RequestError<Q>> {
        let pending = self.send(body).map_err(RequestError::Send)?;
        pending
            .wait(timeout)
            .map_err(|TimedOut| RequestError::TimedOut)
    }

    /// Replies that arrived after their requester gave up (or for requests this requester
    /// never sent), deleted without being delivered.
    pub fn late_replies(&self) -> u64 {
        self.waiting.late.load(Ordering::Relaxed)
    }

    /// How many requests are waiting for their replies now.
    pub fn in_flight(&self) -> usize {
        self.waiting.senders().len()
    }
}

impl<Q, R> Drop for Requester<Q, R> {
    fn drop(&mut self) {
        self.replies.close();
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.join();
        }
    }
}

impl<Q, R> fmt::Debug for Requester<Q, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requester")
            .field("in_flight", &self.in_flight())
            .field("late_replies", &self.late_replies())
            .finish_non_exhaustive()
    }
}

/// A request in flight, waiting for its reply. Dropping it gives up: a reply that comes
/// afterwards is counted late.
#[must_use = "dropping a pending reply gives up on it"]
pub struct PendingReply<'r, R> {
    correlation_id: CorrelationId,
    receiver: Receiver<R>,
    waiting: &'r Waiting<R>,
}

impl<R> PendingReply<'_, R> {
    /// The request's correlation id.
    pub fn correlation_id(&self) -> CorrelationId {
        self.correlation_id
    }

    /// Waits up to `timeout` (wall-clock) for the reply.
    pub fn wait(self, timeout: Duration) -> Result<R, TimedOut> {
        if let Ok(reply) = self.receiver.recv_timeout(timeout) {
            return Ok(reply);
        }
        // It may have been handed over between the timeout and now.
        self.give_up().ok_or(TimedOut)
    }

    /// Stops waiting. Returns the reply if it was handed over just before.
    fn give_up(&self) -> Option<R> {
        let handed_over = self
            .waiting
            .senders()
            .remove(&self.correlation_id)
            .is_none();
        if handed_over {
            self.receiver.try_recv().ok()
        } else {
            None
        }
    }
}

impl<R> Drop for PendingReply<'_, R> {
    fn drop(&mut self) {
        // A reply handed over but never read arrived after its requester gave up.
        if self.give_up().is_some() {
            self.waiting.late.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<R> fmt::Debug for PendingReply<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReply")
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

/// No reply came within the wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no reply within the wait")
    }
}

impl std::error::Error for TimedOut {}

/// Why [`Requester::request`] returned no reply.
#[derive(Clone, PartialEq, Eq)]
pub enum RequestError<Q> {
    /// The request was not sent; the body is in the error.
    Send(SendError<Q>),
    /// The request was sent but no reply came within the wait; a reply coming later is
    /// counted in [`Requester::late_replies`].
    TimedOut,
}

impl<Q> fmt::Debug for RequestError<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(error) => f.debug_tuple("Send").field(error).finish(),
            Self::TimedOut => write!(f, "TimedOut"),
        }
    }
}

impl<Q> fmt::Display for RequestError<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(error) => write!(f, "the request was not sent: {error}"),
            Self::TimedOut => write!(f, "{TimedOut}"),
        }
    }
}

impl<Q> std::error::Error for RequestError<Q> {}
