//! The one backend trait and the types it speaks: what a queue must offer so that the worker
//! pool, the lease guard and the dead-letter tools run on it unchanged.
//!
//! The trait is synchronous and object-safe (`dyn Backend<Body = Vec<u8>>` works), shaped after
//! the operations the three backends share: SQS's `SendMessageBatch`, `ReceiveMessage`,
//! `DeleteMessageBatch` and `ChangeMessageVisibilityBatch`, RabbitMQ's publish, `basic.get`/
//! consume, ack and nack, and visq's own send, receive, delete and `change_visibility`. Each
//! backend says what it can do in its [`Capabilities`]; a call it cannot honour gets
//! [`BackendError::Unsupported`] naming the [`Feature`], never a silent no-op.
//!
//! Bodies are the backend's own type: `T` for the in-process [`Queue`](crate::Queue), bytes for
//! the brokers. A typed layer over bytes encodes and decodes them.

use crate::{MessageId, Receipt};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A message queue the patterns can run on: the in-process [`Queue`](crate::Queue), or a broker.
///
/// Every call may block for network round trips (brokers) but never longer than the call says
/// (`receive` waits at most `wait` plus a round trip). Batch calls answer with one result per
/// entry, in the order given.
pub trait Backend: Send + Sync {
    /// What a message carries: `T` in process, `Vec<u8>` on a broker.
    type Body;

    /// What this backend can do, and its limits. Fixed for the backend's life.
    fn capabilities(&self) -> Capabilities;

    /// Sends every entry; one result per entry, in order. A refused entry's body comes back in
    /// its [`Refused`].
    fn send_batch(
        &self,
        batch: Vec<Outgoing<Self::Body>>,
    ) -> Vec<Result<Accepted, Refused<Self::Body>>>;

    /// Sends one message.
    fn send(&self, message: Outgoing<Self::Body>) -> Result<Accepted, Refused<Self::Body>> {
        let mut results = self.send_batch(vec![message]);
        results
            .pop()
            .expect("send_batch answers with one result per entry")
    }

    /// Receives up to `max` messages into `out`, waiting up to `wait` while there are none (a
    /// long poll). Each is leased for `visibility`, or the backend's default when `None`.
    /// Returns how many were appended.
    fn receive(
        &self,
        out: &mut Vec<Incoming<Self::Body>>,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<usize, BackendError>;

    /// Acknowledges: the message is gone for good.
    fn delete(&self, receipt: &Handle) -> Result<(), BackendError>;

    /// Deletes every entry; one result per entry, in order.
    fn delete_batch(&self, receipts: &[Handle]) -> Vec<Result<(), BackendError>> {
        receipts
            .iter()
            .map(|receipt| self.delete(receipt))
            .collect()
    }

    /// Moves the lease's deadline to `now + timeout`; zero gives the message back at once (a
    /// release, as on SQS). A backend that cannot shorten or extend answers
    /// [`Feature::ShortenLease`] or [`Feature::ExtendLease`].
    fn change_visibility(&self, receipt: &Handle, timeout: Duration) -> Result<(), BackendError>;

    /// [`Backend::change_visibility`] for every entry; one result per entry, in order.
    fn change_visibility_batch(
        &self,
        entries: &[(Handle, Duration)],
    ) -> Vec<Result<(), BackendError>> {
        entries
            .iter()
            .map(|(receipt, timeout)| self.change_visibility(receipt, *timeout))
            .collect()
    }

    /// The nack: visible again at once, this receive counted.
    fn release(&self, receipt: &Handle) -> Result<(), BackendError> {
        self.change_visibility(receipt, Duration::ZERO)
    }

    /// Gives back a message nobody worked on. Where the backend can
    /// ([`Capabilities::uncharged_hand_back`]) the receive is not counted; elsewhere this is a
    /// [`Backend::release`] and the receive counts towards the dead-letter limit.
    fn hand_back(&self, receipt: &Handle) -> Result<(), BackendError> {
        self.release(receipt)
    }

    /// Moves the message to the dead-letter queue now, with `reason` where the backend keeps
    /// one (for a body that cannot be decoded, or a handler's last failure).
    /// [`Feature::DeadLetter`] where there is no dead-letter queue.
    fn dead_letter(&self, receipt: &Handle, reason: &str) -> Result<(), BackendError>;

    /// The dead-letter queue, as a backend of its own, for inspection and redrive; `None`
    /// where there is none.
    fn dead_letter_queue(&self) -> Option<Arc<dyn Backend<Body = Self::Body>>>;

    /// After how many receives a message goes to the dead-letter queue, if it does.
    fn dead_letter_limit(&self) -> Option<u32>;

    /// Whether the backend has stopped taking messages for good (a closed in-process queue).
    /// Receivers stop once it is closed and nothing is left. Brokers answer `false`.
    fn is_closed(&self) -> bool {
        false
    }
}

/// A message to send, with its options.
///
/// ```
/// use std::time::Duration;
/// use visq::Outgoing;
/// let job = Outgoing::new(b"resize 42".to_vec())
///     .delay(Duration::from_secs(5))
///     .attribute("tenant", "acme");
/// # let _ = job;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing<B> {
    /// The body.
    pub body: B,
    /// Invisible until this has passed ([`Capabilities::max_delay`]).
    pub delay: Duration,
    /// FIFO message group ([`Feature::Groups`]).
    pub group: Option<String>,
    /// Deduplication id ([`Feature::Dedup`]).
    pub dedup_id: Option<String>,
    /// String attributes carried beside the body ([`Feature::Attributes`]).
    pub attributes: Vec<(String, String)>,
}

impl<B> Outgoing<B> {
    /// A message with no delay, group, dedup id or attributes.
    pub fn new(body: B) -> Self {
        Self {
            body,
            delay: Duration::ZERO,
            group: None,
            dedup_id: None,
            attributes: Vec::new(),
        }
    }

    /// Sets the delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the message group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the deduplication id.
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }

    /// Adds an attribute.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((name.into(), value.into()));
        self
    }

    /// The same options around another body (the typed layer's encoding step).
    pub fn map_body<C>(self, f: impl FnOnce(B) -> C) -> Outgoing<C> {
        Outgoing {
            body: f(self.body),
            delay: self.delay,
            group: self.group,
            dedup_id: self.dedup_id,
            attributes: self.attributes,
        }
    }
}

/// What a send returns when the backend has taken the message: its id there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Accepted {
    /// The id the backend gave the message.
    pub id: MessageKey,
}

/// A send that did not happen: why, and the body, handed back.
#[derive(Clone, PartialEq, Eq)]
pub struct Refused<B> {
    /// Why.
    pub error: BackendError,
    /// The body that was not sent.
    pub body: B,
}

impl<B> fmt::Debug for Refused<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<B> fmt::Display for Refused<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send refused: {}", self.error)
    }
}

impl<B> std::error::Error for Refused<B> {}

/// A received message: leased until settled through its [`Handle`] or until its visibility
/// timeout passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming<B> {
    /// The message's id on its backend.
    pub id: MessageKey,
    /// The body.
    pub body: B,
    /// Attributes sent with it (empty where the backend has none).
    pub attributes: Vec<(String, String)>,
    /// How many times it has been received, as exactly as the backend knows.
    pub receive_count: ReceiveCount,
    /// Its message group, if it was sent with one.
    pub group: Option<String>,
    /// The receipt that settles this lease.
    pub handle: Handle,
}

impl<B> Incoming<B> {
    /// The same delivery around another body (the typed layer's decoding step).
    pub fn map_body<C>(self, f: impl FnOnce(B) -> C) -> Incoming<C> {
        Incoming {
            id: self.id,
            body: f(self.body),
            attributes: self.attributes,
            receive_count: self.receive_count,
            group: self.group,
            handle: self.handle,
        }
    }
}

/// How many times a message has been received, as exactly as its backend knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiveCount {
    /// Counted by the backend itself, exactly (visq, RabbitMQ quorum queues).
    Exact(u32),
    /// The backend's estimate (SQS's `ApproximateReceiveCount`).
    Approximate(u32),
    /// Only whether it was delivered before (RabbitMQ classic queues' `redelivered`).
    Redelivered(bool),
}

impl ReceiveCount {
    /// The count to act on: the number itself, or 1 or 2 for a bare "redelivered" flag (at
    /// least that many receives happened).
    pub fn at_least(self) -> u32 {
        match self {
            Self::Exact(n) | Self::Approximate(n) => n,
            Self::Redelivered(false) => 1,
            Self::Redelivered(true) => 2,
        }
    }
}

/// How a backend counts receives: which [`ReceiveCount`] variant its deliveries carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CountKind {
    /// [`ReceiveCount::Exact`].
    Exact,
    /// [`ReceiveCount::Approximate`].
    Approximate,
    /// [`ReceiveCount::Redelivered`].
    RedeliveredFlag,
}

/// A message's id on its backend: visq's [`MessageId`], or a broker's string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageKey(KeyRepr);

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyRepr {
    Local(MessageId),
    Text(Arc<str>),
}

impl MessageKey {
    /// The id of an in-process message.
    pub fn local(id: MessageId) -> Self {
        Self(KeyRepr::Local(id))
    }

    /// A broker's id.
    pub fn text(id: impl Into<Arc<str>>) -> Self {
        Self(KeyRepr::Text(id.into()))
    }

    /// The in-process id, if this is one.
    pub fn as_local(&self) -> Option<MessageId> {
        match &self.0 {
            KeyRepr::Local(id) => Some(*id),
            KeyRepr::Text(_) => None,
        }
    }
}

impl fmt::Display for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            KeyRepr::Local(id) => id.fmt(f),
            KeyRepr::Text(id) => f.write_str(id),
        }
    }
}

/// The receipt of one lease on any backend: a visq [`Receipt`], a RabbitMQ delivery tag on one
/// connection, or an SQS receipt handle.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle(HandleRepr);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum HandleRepr {
    Local(u64),
    Tag { connection: u64, tag: u64 },
    Text(Arc<str>),
}

impl Handle {
    /// An in-process receipt.
    pub fn local(receipt: Receipt) -> Self {
        Self(HandleRepr::Local(receipt.to_u64()))
    }

    /// A delivery tag, valid only on the connection (or channel) numbered `connection`.
    pub fn tag(connection: u64, tag: u64) -> Self {
        Self(HandleRepr::Tag { connection, tag })
    }

    /// A receipt handle string.
    pub fn text(handle: impl Into<Arc<str>>) -> Self {
        Self(HandleRepr::Text(handle.into()))
    }

    /// The in-process receipt, if this is one.
    pub fn as_local(&self) -> Option<Receipt> {
        match &self.0 {
            HandleRepr::Local(raw) => Some(Receipt::from_u64(*raw)),
            _ => None,
        }
    }

    /// The connection number and delivery tag, if this is one.
    pub fn as_tag(&self) -> Option<(u64, u64)> {
        match &self.0 {
            HandleRepr::Tag { connection, tag } => Some((*connection, *tag)),
            _ => None,
        }
    }

    /// The receipt handle string, if this is one.
    pub fn as_text(&self) -> Option<&str> {
        match &self.0 {
            HandleRepr::Text(handle) => Some(handle),
            _ => None,
        }
    }
}

/// What a backend can do, and its limits. Checked locally before any call reaches the backend:
/// a call over a limit gets [`BackendError::Limit`], one needing a missing feature
/// [`BackendError::Unsupported`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Entries per batch call (sends, deletes, visibility changes); larger batches are split
    /// by the backend where it says so in its docs, refused otherwise.
    pub max_batch: usize,
    /// Largest body in bytes, if there is a limit.
    pub max_body_bytes: Option<usize>,
    /// Longest send delay; `None` when sends cannot be delayed.
    pub max_delay: Option<Duration>,
    /// Longest visibility timeout (and lease extension).
    pub max_visibility: Duration,
    /// Longest long-poll wait one receive call makes.
    pub max_wait: Duration,
    /// Whether a lease can be made longer ([`Feature::ExtendLease`]).
    pub extend_lease: bool,
    /// Whether a lease can be made shorter than it is, but not zero ([`Feature::ShortenLease`]).
    /// A release (zero) works everywhere.
    pub shorten_lease: bool,
    /// Whether a lease ends by itself when its visibility timeout passes. RabbitMQ's do not:
    /// a delivery is held until it is settled or its connection closes.
    pub leases_expire: bool,
    /// How receives are counted.
    pub receive_count: CountKind,
    /// Whether the backend moves messages to a dead-letter queue itself after a receive limit.
    pub native_dead_letter: bool,
    /// Whether [`Backend::hand_back`] leaves the receive uncounted.
    pub uncharged_hand_back: bool,
    /// FIFO message groups ([`Feature::Groups`]).
    pub groups: bool,
    /// Deduplication ids ([`Feature::Dedup`]).
    pub dedup: bool,
    /// Attributes beside the body ([`Feature::Attributes`]).
    pub attributes: bool,
}

impl Capabilities {
    /// Checks a receive's arguments against these limits: a `visibility`, if given, must be
    /// nonzero (a zero lease leases nothing: [`BackendError::Fatal`]) and at most
    /// [`Capabilities::max_visibility`]; `wait` at most [`Capabilities::max_wait`]
    /// ([`BackendError::Limit`]).
    pub fn check_receive(
        &self,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<(), BackendError> {
        if let Some(visibility) = visibility {
            if visibility.is_zero() {
                return Err(BackendError::Fatal(
                    "a zero visibility timeout leases nothing".into(),
                ));
            }
            BackendError::check_duration(Limit::VisibilityMillis, self.max_visibility, visibility)?;
        }
        BackendError::check_duration(Limit::WaitMillis, self.max_wait, wait)
    }

    /// Whether `feature` is available.
    pub fn supports(&self, feature: Feature) -> bool {
        match feature {
            Feature::Delay => self.max_delay.is_some(),
            Feature::ExtendLease => self.extend_lease,
            Feature::ShortenLease => self.shorten_lease,
            Feature::Groups => self.groups,
            Feature::Dedup => self.dedup,
            Feature::Attributes => self.attributes,
            Feature::DeadLetter => self.native_dead_letter,
        }
    }
}

/// Something a backend may lack; named by [`BackendError::Unsupported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// Delayed sends.
    Delay,
    /// Making a lease longer.
    ExtendLease,
    /// Making a lease shorter, other than a release.
    ShortenLease,
    /// FIFO message groups.
    Groups,
    /// Deduplication ids.
    Dedup,
    /// Attributes.
    Attributes,
    /// A dead-letter queue.
    DeadLetter,
}

/// A limit a call went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Body size in bytes.
    BodyBytes,
    /// Entries in one batch call.
    BatchEntries,
    /// Send delay, in milliseconds.
    DelayMillis,
    /// Visibility timeout, in milliseconds.
    VisibilityMillis,
    /// Long-poll wait, in milliseconds.
    WaitMillis,
}

/// Why a backend call failed. The three a caller must tell apart: the receipt is no longer
/// valid ([`BackendError::Stale`]: do not retry, the message will come back or is gone), a
/// transient failure ([`BackendError::is_transient`]: retry later), or anything else (fatal
/// for this call: fix the call or the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendError {
    /// The receipt does not name a live lease: the message was deleted, released, redelivered
    /// or dead-lettered, its deadline passed, it was never issued, or its connection is gone.
    Stale,
    /// The backend cannot do this.
    Unsupported(Feature),
    /// The call goes over a limit: `limit`, at most `max`, the call asked for `got`.
    Limit {
        /// Which limit.
        limit: Limit,
        /// The most allowed.
        max: u64,
        /// What the call asked for.
        got: u64,
    },
    /// The queue holds as many messages as it can (in process); retry later.
    Full,
    /// The queue is closed for good (in process).
    Closed,
    /// The backend could not be reached or answered "try again" (a lost connection, a
    /// throttle, a timeout); retry later.
    Transient(String),
    /// Anything else the backend refused, with its message.
    Fatal(String),
}

impl BackendError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Full | Self::Transient(_))
    }

    /// A [`BackendError::Limit`] if `got` is over `max`.
    pub fn check_limit(limit: Limit, max: u64, got: u64) -> Result<(), Self> {
        if got > max {
            Err(Self::Limit { limit, max, got })
        } else {
            Ok(())
        }
    }

    /// A [`BackendError::Limit`] in milliseconds if `got` is longer than `max`.
    pub fn check_duration(limit: Limit, max: Duration, got: Duration) -> Result<(), Self> {
        Self::check_limit(limit, millis(max), millis(got))
    }

    /// The [`BackendError::Limit`] in milliseconds of a duration `got` over `max`.
    pub fn duration_over(limit: Limit, max: Duration, got: Duration) -> Self {
        Self::Limit {
            limit,
            max: millis(max),
            got: millis(got),
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stale => f.write_str("the receipt no longer names a live lease"),
            Self::Unsupported(feature) => write!(f, "this backend does not support {feature:?}"),
            Self::Limit { limit, max, got } => {
                write!(f, "{limit:?} is {got}, over the limit of {max}")
            }
            Self::Full => f.write_str("the queue is full"),
            Self::Closed => f.write_str("the queue is closed"),
            Self::Transient(message) => write!(f, "transient backend failure: {message}"),
            Self::Fatal(message) => write!(f, "backend failure: {message}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
