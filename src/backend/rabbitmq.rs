//! RabbitMQ as a [`Backend`] (cargo feature `rabbitmq`): [`RabbitMq`], one durable quorum
//! queue spoken to over AMQP 0.9.1 with [`lapin`] behind the blocking trait, and
//! [`RabbitMqTopic`], a fanout exchange. What maps to what, and what RabbitMQ cannot do, is
//! documented on [`RabbitMq`], where users read it.

use super::contract::{
    Accepted, Backend, BackendError, Capabilities, CountKind, Feature, Handle, Incoming, Limit,
    MessageKey, Outgoing, ReceiveCount, Refused,
};
use crate::MAX_TIMEOUT;
use futures_core::Stream;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind,
};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;

/// Entries published before their confirms are awaited; a larger batch is sent in chunks.
const MAX_BATCH: usize = 256;
/// RabbitMQ's default `max_message_size` (3.8 to 3.13: 128 MiB).
const MAX_BODY_BYTES: usize = 128 << 20;
/// Unsettled deliveries per consumer unless [`RabbitMqBuilder::prefetch`] says otherwise.
const DEFAULT_PREFETCH: u16 = 10;
/// How long a connection attempt may take before the call fails as transient.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a send waits for the broker's confirms unless
/// [`RabbitMqBuilder::confirm_timeout`] says otherwise.
const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an unused delay queue outlives its TTL before the broker deletes it.
const DELAY_QUEUE_IDLE: Duration = Duration::from_secs(60);
/// The header in which a quorum queue counts earlier deliveries.
const DELIVERY_COUNT: &str = "x-delivery-count";
/// AMQP `delivery_mode` for a message written to disk.
const PERSISTENT: u8 = 2;
/// Reply code of a normal close.
const REPLY_SUCCESS: u16 = 200;

/// Numbers every connection of every handle in this process, so a receipt names exactly one.
static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

/// Configures a [`RabbitMq`]: `RabbitMq::builder(url, queue)`, then
/// [`build`](RabbitMqBuilder::build).
#[derive(Clone, Debug)]
pub struct RabbitMqBuilder {
    url: String,
    queue: String,
    max_receives: Option<u32>,
    prefetch: u16,
    fanout: Option<String>,
    confirm_timeout: Duration,
}

impl RabbitMqBuilder {
    /// Dead-letter a message when it comes back after its `max_receives`th delivery: declares
    /// the exchange `{queue}.dlx` and the queue `{queue}.dlq`, and gives the queue
    /// `x-delivery-limit = max_receives - 1`. Zero is refused by `build`.
    pub fn max_receives(mut self, max_receives: u32) -> Self {
        self.max_receives = Some(max_receives);
        self
    }

    /// How many unsettled deliveries the broker pushes to this handle at most (`basic.qos`),
    /// 10 by default (the most one SQS receive returns). What the broker has pushed and no
    /// receive has taken yet counts as delivered if the handle goes (see [`RabbitMq`]). Zero
    /// (AMQP's "unlimited") is refused by `build`.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// How long a send waits for the broker to take its messages (30 s by default): past it,
    /// the entries not yet confirmed are [`BackendError::Transient`] (they may still arrive).
    /// A broker under a memory or disk alarm blocks publishers until the alarm clears. Zero is
    /// refused by `build`.
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Binds the queue to the durable fanout exchange `exchange` (declared if missing), so it
    /// gets a copy of every [`RabbitMqTopic::publish`] to it.
    pub fn fanout(mut self, exchange: &str) -> Self {
        self.fanout = Some(exchange.to_owned());
        self
    }

    /// Connects and declares what the queue needs (idempotently: the same declaration again
    /// changes nothing; one with other arguments than an existing queue's is
    /// [`BackendError::Fatal`]). [`BackendError::Transient`] when the broker cannot be reached.
    pub fn build(self) -> Result<RabbitMq, BackendError> {
        self.check()?;
        let topology = QueueTopology {
            dead_letters: self
                .max_receives
                .map(|max_receives| DeadLetters::of(&self.queue, max_receives)),
            queue: self.queue,
            prefetch: self.prefetch,
            fanout: self.fanout,
        };
        let link = Link::new(
            Arc::new(runtime()?),
            self.url,
            format!("visq queue {}", topology.queue),
            self.confirm_timeout,
        );
        let rabbit = RabbitMq::new(link, topology);
        rabbit.link.session(&rabbit.topology)?;
        Ok(rabbit)
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.max_receives == Some(0) {
            return Err(BackendError::Fatal(
                "max_receives must be at least 1".into(),
            ));
        }
        if self.confirm_timeout.is_zero() {
            return Err(BackendError::Fatal(
                "confirm_timeout must be above zero".into(),
            ));
        }
        if self.prefetch == 0 {
            return Err(BackendError::Fatal(
                "prefetch must be at least 1: 0 would let the broker push without bound".into(),
            ));
        }
        if self.queue.is_empty() || self.queue.starts_with("amq.") {
            return Err(BackendError::Fatal(format!(
                "queue name {:?}: empty names and the amq. prefix belong to the broker",
                self.queue
            )));
        }
        // The longest name the adapter derives must fit an AMQP short string.
        short(&delay_queue_name(&self.queue, MAX_TIMEOUT))?;
        if let Some(exchange) = &self.fanout {
            short(exchange)?;
        }
        Ok(())
    }
}

/// A RabbitMQ quorum queue as a [`Backend`] of byte bodies (cargo feature `rabbitmq`), spoken
/// to over AMQP 0.9.1 with the `lapin` client, behind the blocking trait.
///
/// The adapter owns a tokio runtime with one worker thread: lapin runs its socket, heartbeats
/// and consumer on it; each trait call blocks the caller on it (a call from inside an async
/// runtime, where blocking would stall it, is refused with [`BackendError::Fatal`]: use
/// `spawn_blocking`). It holds one connection, opened by [`RabbitMqBuilder::build`] and
/// opened again by the next call after it is lost (a broker restart, a dropped connection).
///
/// | trait | AMQP |
/// |---|---|
/// | `send_batch` | `basic.publish` to the queue (persistent, `mandatory`) on a channel in confirm mode; the whole batch is published, then every confirm awaited |
/// | `send` with a delay | the same publish to a delay queue (below) |
/// | `receive` | a `basic.consume` started by the first receive, with `basic.qos(prefetch)`; the call waits for the first delivery and takes what else has arrived, up to `max` |
/// | `delete` | `basic.ack` |
/// | `release`, `hand_back`, `change_visibility(.., 0)` | `basic.nack` with `requeue` |
/// | `dead_letter` | `basic.nack` without `requeue`: the dead-letter exchange takes it |
/// | `dead_letter_queue` | the queue `{queue}.dlq`, as a backend of its own |
///
/// # What RabbitMQ does differently
///
/// * **Leases do not expire.** A delivery stays with this connection until it is settled or
///   the connection closes (then the broker requeues it), whatever `visibility` the receive
///   asked for: the argument is checked against [`Capabilities::max_visibility`] and otherwise
///   ignored. A lease cannot be made longer or shorter: `change_visibility` with a non-zero
///   timeout is [`BackendError::Unsupported`]`(`[`Feature::ExtendLease`]`)`; zero is a release.
///   The broker's own `consumer_timeout` (30 minutes by default) closes a channel that holds
///   a delivery longer; its receipts are then [`BackendError::Stale`].
/// * **Prefetch bounds what is in flight.** Once a receive has started the consumer, the broker
///   pushes up to `prefetch` unsettled deliveries to this connection; those not yet handed out
///   by a receive wait in the adapter and are invisible to other consumers until this handle is
///   dropped or its connection closes; RabbitMQ 3.x then counts them as delivered (every
///   return to a quorum queue counts), so keep `prefetch` near the batch a receive takes. A
///   handle that only sends never consumes.
/// * **Receive counts are exact.** The queue is a quorum queue: `x-delivery-count` counts the
///   earlier deliveries that came back (absent on the first), so a delivery carries
///   [`ReceiveCount::Exact`]`(x-delivery-count + 1)`. Every return counts: a release, a
///   [`Backend::hand_back`] (not uncharged here) and a lost connection.
/// * **Dead-lettering is the broker's.** With [`RabbitMqBuilder::max_receives`] `M`, the queue
///   gets `x-delivery-limit = M - 1` (a quorum queue's limit `N` allows `N + 1` deliveries) and
///   a dead-letter exchange `{queue}.dlx` (fanout) bound to the durable quorum queue
///   `{queue}.dlq`. The broker moves a message there when it comes back after its `M`th
///   delivery. [`Backend::dead_letter`] nacks without requeue; RabbitMQ records the cause in
///   the message's `x-death` header (`rejected`, or `delivery_limit`) but keeps no free-text
///   reason, so `reason` is lost. Quorum queues dead-letter at most once: a message is lost if
///   the dead-letter queue is gone. Without `max_receives` there is no dead-letter exchange
///   and `dead_letter` is [`BackendError::Unsupported`]`(`[`Feature::DeadLetter`]`)`.
///   RabbitMQ 4.0 and later give quorum queues a default delivery limit of 20 and then *drop*
///   the message when there is no dead-letter exchange: set `max_receives` there.
/// * **Delays without a plugin.** Per-message TTLs expire only at the head of a queue (a short
///   delay waits behind a long one), so a send delayed by `d` goes to a queue
///   `{queue}.delay.{ms}` (`ms` = `d` in milliseconds, rounded up so it never fires early) with
///   `x-message-ttl = ms` that dead-letters back into the queue. The queue is declared by each
///   delayed send (which also keeps it alive) and deletes itself (`x-expires`) a minute after it
///   was last used. The delay is RabbitMQ's: it may come out a little late, never early.
/// * **Attributes travel as headers** of string values. Names starting with `x-` belong to
///   RabbitMQ and are refused on send and left out on receive.
/// * **No message groups or deduplication ids:** an entry with either is refused with
///   [`BackendError::Unsupported`] and its body handed back.
/// * **Unroutable is an error.** Every publish is `mandatory`: a message no queue takes (the
///   queue was deleted, a topic nobody subscribes to) comes back as
///   [`BackendError::Fatal`] with its body, instead of being confirmed and dropped.
///
/// # Receipts and errors
///
/// A receipt is the delivery tag together with the number of the connection that received it.
/// A receipt of an earlier connection, of another handle, one already settled, or one whose
/// settle fails because the connection is gone is [`BackendError::Stale`] (the broker requeues
/// what a lost connection held), and nothing is sent for it: an unknown tag would make the
/// broker close the channel. A broker that cannot be reached is [`BackendError::Transient`];
/// so is a publish the broker nacks or does not confirm within
/// [`RabbitMqBuilder::confirm_timeout`] (it may
/// then still arrive). What the broker refuses (a queue declared with other arguments, a
/// deleted queue) is [`BackendError::Fatal`] with its message.
///
/// # Topics
///
/// [`RabbitMq::topic`] gives a [`RabbitMqTopic`]: a durable fanout exchange. Each subscriber is
/// a queue built with [`RabbitMqTopic::subscriber`] (bound to the exchange); a publish is
/// copied by the broker into every bound queue, and refused when none is bound.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use visq::{Backend, Outgoing, RabbitMq};
///
/// let jobs = RabbitMq::builder("amqp://guest:guest@127.0.0.1:5672/%2f", "jobs")
///     .max_receives(5)
///     .prefetch(16)
///     .build()?;
/// jobs.send(Outgoing::new(b"resize 42".to_vec())).map_err(|refused| refused.error)?;
/// let mut got = Vec::new();
/// jobs.receive(&mut got, 10, Duration::from_secs(1), None)?;
/// for message in &got {
///     jobs.delete(&message.handle)?;
/// }
/// # Ok::<(), visq::BackendError>(())
/// ```
pub struct RabbitMq {
    link: Link,
    topology: QueueTopology,
    ids: IdSource,
    /// Delays (in ms) this handle has sent with: their queues, for `purge` and
    /// `delete_queues`.
    delays: Mutex<BTreeSet<u64>>,
    dead_letter_queue: OnceLock<Arc<RabbitMq>>,
}

impl std::fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMq")
            .field("queue", &self.topology.queue)
            .finish_non_exhaustive()
    }
}

impl RabbitMq {
    /// A handle on `topology` through `link`, not yet connected.
    fn new(link: Link, topology: QueueTopology) -> Self {
        Self {
            link,
            topology,
            ids: IdSource::new(),
            delays: Mutex::new(BTreeSet::new()),
            dead_letter_queue: OnceLock::new(),
        }
    }

    /// Starts configuring the queue `queue` on the broker at `url`
    /// (`amqp://user:password@host:port/vhost`, the vhost URL-encoded: `%2f` is `/`).
    pub fn builder(url: &str, queue: &str) -> RabbitMqBuilder {
        RabbitMqBuilder {
            url: url.to_owned(),
            queue: queue.to_owned(),
            max_receives: None,
            prefetch: DEFAULT_PREFETCH,
            fanout: None,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
        }
    }

    /// The durable fanout exchange `exchange` on the broker at `url`, declared if missing.
    pub fn topic(url: &str, exchange: &str) -> Result<RabbitMqTopic, BackendError> {
        if exchange.is_empty() || exchange.starts_with("amq.") {
            return Err(BackendError::Fatal(format!(
                "exchange name {exchange:?}: empty names and the amq. prefix belong to the broker"
            )));
        }
        short(exchange)?;
        let topic = RabbitMqTopic {
            link: Link::new(
                Arc::new(runtime()?),
                url.to_owned(),
                format!("visq topic {exchange}"),
                DEFAULT_CONFIRM_TIMEOUT,
            ),
            topology: FanoutExchange(exchange.to_owned()),
            ids: IdSource::new(),
        };
        topic.link.session(&topic.topology)?;
        Ok(topic)
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.topology.queue
    }

    /// Empties the queue, its dead-letter queue and the delay queues this handle sent through.
    /// Deliveries held unsettled by consumers are not in the queue and stay.
    pub fn purge(&self) -> Result<(), BackendError> {
        let session = self.link.session(&self.topology)?;
        for queue in self.own_queues() {
            self.link.run(async {
                let channel = session
                    .connection
                    .create_channel()
                    .await
                    .map_err(broker_error)?;
                let purged = channel
                    .queue_purge(short(&queue)?, QueuePurgeOptions::default())
                    .await;
                let _ = channel.close(REPLY_SUCCESS, "purged".into()).await;
                match purged {
                    // A delay queue that has expired has nothing to purge. (The broker closes
                    // the channel for it: each purge gets its own.)
                    Err(error) if is_not_found(&error) => Ok(()),
                    other => other.map(drop).map_err(broker_error),
                }
            })?;
        }
        Ok(())
    }

    /// Deletes the queue, its dead-letter queue and exchange, its fanout binding (the exchange
    /// itself stays: [`RabbitMqTopic::delete`]) and the delay queues this handle sent through,
    /// with whatever they hold. Sends to the queue are then unroutable; a later
    /// reconnection declares it again.
    pub fn delete_queues(&self) -> Result<(), BackendError> {
        let session = self.link.session(&self.topology)?;
        let queues = self.own_queues();
        let exchange = self
            .topology
            .dead_letters
            .as_ref()
            .map(|names| names.exchange.clone());
        self.link.run(async {
            let channel = session
                .connection
                .create_channel()
                .await
                .map_err(broker_error)?;
            for queue in &queues {
                channel
                    .queue_delete(short(queue)?, QueueDeleteOptions::default())
                    .await
                    .map_err(broker_error)?;
            }
            if let Some(exchange) = exchange {
                channel
                    .exchange_delete(short(&exchange)?, ExchangeDeleteOptions::default())
                    .await
                    .map_err(broker_error)?;
            }
            let _ = channel.close(REPLY_SUCCESS, "deleted".into()).await;
            Ok(())
        })
    }

    /// The queue, its dead-letter queue, and the delay queues this handle has used.
    fn own_queues(&self) -> Vec<String> {
        let queue = &self.topology;
        let mut names = vec![queue.queue.clone()];
        names.extend(queue.dead_letters.as_ref().map(|dl| dl.queue.clone()));
        names.extend(
            lock(&self.delays)
                .iter()
                .map(|ms| delay_queue_name(&queue.queue, Duration::from_millis(*ms))),
        );
        names
    }

    /// `basic.nack` of one lease: back to its queue with `requeue`, else to the dead-letter
    /// exchange.
    fn nack(&self, receipt: &Handle, requeue: bool) -> Result<(), BackendError> {
        self.settle(receipt, |acker| async move {
            acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue,
                })
                .await
        })
    }

    /// Settles one lease: takes its acker (so a second settle of the same receipt is stale
    /// without a word to the broker) and runs `settle` with it.
    fn settle<F, Fut>(&self, receipt: &Handle, settle: F) -> Result<(), BackendError>
    where
        F: FnOnce(Acker) -> Fut,
        Fut: Future<Output = lapin::Result<bool>>,
    {
        let (connection, tag) = receipt.as_tag().ok_or(BackendError::Stale)?;
        // Before the acker is taken: a refused call leaves the lease as it was.
        refuse_inside_async()?;
        let session = self.link.current().ok_or(BackendError::Stale)?;
        let consumer = session.consumer.get().ok_or(BackendError::Stale)?;
        if session.number != connection {
            return Err(BackendError::Stale);
        }
        let acker = lock(&consumer.leases)
            .remove(&tag)
            .ok_or(BackendError::Stale)?;
        self.link.run(async move {
            match settle(acker).await {
                Ok(true) => Ok(()),
                // Already used, or its channel is gone (the broker requeues what it held).
                Ok(false) | Err(_) => Err(BackendError::Stale),
            }
        })
    }

    /// The routing key for a delay, after declaring its delay queue.
    fn declare_delay(&self, session: &Session, delay: Duration) -> Result<String, BackendError> {
        let queue = &self.topology.queue;
        let name = delay_queue_name(queue, delay);
        let ttl = delay_millis(delay);
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), long_int(ttl));
        arguments.insert(
            "x-expires".into(),
            long_int(ttl + DELAY_QUEUE_IDLE.as_millis() as u64),
        );
        arguments.insert("x-dead-letter-exchange".into(), string(""));
        arguments.insert("x-dead-letter-routing-key".into(), string(queue));
        self.link.run(async {
            session
                .publisher
                .queue_declare(short(&name)?, durable_queue(), arguments)
                .await
                .map_err(broker_error)
        })?;
        lock(&self.delays).insert(ttl);
        Ok(name)
    }
}

impl Backend for RabbitMq {
    type Body = Vec<u8>;

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch: MAX_BATCH,
            max_body_bytes: Some(MAX_BODY_BYTES),
            max_delay: Some(MAX_TIMEOUT),
            max_visibility: MAX_TIMEOUT,
            max_wait: MAX_TIMEOUT,
            extend_lease: false,
            shorten_lease: false,
            leases_expire: false,
            receive_count: CountKind::Exact,
            native_dead_letter: self.topology.dead_letters.is_some(),
            uncharged_hand_back: false,
            groups: false,
            dedup: false,
            attributes: true,
        }
    }

    /// Publishes every entry in chunks of [`Capabilities::max_batch`], each chunk's confirms
    /// awaited together. Entries are checked first; a refused one does not stop the others.
    fn send_batch(&self, batch: Vec<Outgoing<Vec<u8>>>) -> Vec<Result<Accepted, Refused<Vec<u8>>>> {
        let session = match self.link.session(&self.topology) {
            Ok(session) => session,
            Err(error) => return refuse_all(batch, error),
        };
        let queue = self.topology.queue.clone();
        // Each delay queue is declared once per call.
        let mut delay_queues = HashMap::new();
        let mut results = Vec::with_capacity(batch.len());
        let mut entries = batch.into_iter().peekable();
        while entries.peek().is_some() {
            let mut chunk = Vec::with_capacity(MAX_BATCH);
            for entry in entries.by_ref().take(MAX_BATCH) {
                // Checked before a delay queue is declared for it.
                let route = check_entry(&entry).and_then(|properties| {
                    let routing_key = if entry.delay.is_zero() {
                        queue.clone()
                    } else {
                        check_delay(entry.delay)?;
                        match delay_queues.get(&entry.delay) {
                            Some(name) => String::clone(name),
                            None => {
                                let name = self.declare_delay(&session, entry.delay)?;
                                delay_queues.insert(entry.delay, name.clone());
                                name
                            }
                        }
                    };
                    Ok(Route {
                        routing_key,
                        properties,
                    })
                });
                chunk.push((entry, route));
            }
            results.extend(self.link.publish(&session, "", chunk, &self.ids));
        }
        results
    }

    /// Waits up to `wait` for a first delivery, then takes what else has arrived, up to `max`.
    /// `visibility` is checked (not zero, at most [`Capabilities::max_visibility`]) and
    /// otherwise ignored: RabbitMQ leases do not expire.
    fn receive(
        &self,
        out: &mut Vec<Incoming<Vec<u8>>>,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<usize, BackendError> {
        self.capabilities().check_receive(wait, visibility)?;
        if max == 0 {
            return Ok(0);
        }
        let session = self.link.session(&self.topology)?;
        let queue = &self.topology;
        let consumer = self.link.run(session.consumer.get_or_try_init(|| {
            Consumer::start(&session.connection, &queue.queue, queue.prefetch)
        }))?;
        let (deliveries, ended) = self
            .link
            .run(async { Ok(consumer.take(max, wait).await) })?;
        let mut leases = lock(&consumer.leases);
        for delivery in &deliveries {
            leases.insert(delivery.delivery_tag, delivery.acker.clone());
        }
        drop(leases);
        let taken = deliveries.len();
        out.extend(
            deliveries
                .into_iter()
                .map(|delivery| incoming(session.number, delivery)),
        );
        if taken == 0 && ended {
            return Err(BackendError::Transient(
                "the broker ended the consumer (queue deleted, or channel closed); the next call reconnects".into(),
            ));
        }
        Ok(taken)
    }

    fn delete(&self, receipt: &Handle) -> Result<(), BackendError> {
        self.settle(receipt, |acker| async move {
            acker.ack(BasicAckOptions::default()).await
        })
    }

    /// Zero releases the message; any other timeout is
    /// [`BackendError::Unsupported`]`(`[`Feature::ExtendLease`]`)`: a RabbitMQ delivery has no
    /// deadline to move.
    fn change_visibility(&self, receipt: &Handle, timeout: Duration) -> Result<(), BackendError> {
        if timeout.is_zero() {
            self.release(receipt)
        } else {
            Err(BackendError::Unsupported(Feature::ExtendLease))
        }
    }

    fn release(&self, receipt: &Handle) -> Result<(), BackendError> {
        self.nack(receipt, true)
    }

    /// `basic.nack` without requeue: the broker moves the message to `{queue}.dlq`. RabbitMQ
    /// keeps no free-text reason (its `x-death` header says `rejected`): `reason` is lost.
    fn dead_letter(&self, receipt: &Handle, _reason: &str) -> Result<(), BackendError> {
        if self.topology.dead_letters.is_none() {
            return Err(BackendError::Unsupported(Feature::DeadLetter));
        }
        self.nack(receipt, false)
    }

    /// `{queue}.dlq` as a backend of its own (sharing this handle's runtime, with its own
    /// connection, opened by its first call).
    fn dead_letter_queue(&self) -> Option<Arc<dyn Backend<Body = Vec<u8>>>> {
        let names = self.topology.dead_letters.as_ref()?;
        let dlq = self.dead_letter_queue.get_or_init(|| {
            let topology = QueueTopology {
                queue: names.queue.clone(),
                dead_letters: None,
                prefetch: self.topology.prefetch,
                fanout: None,
            };
            let link = Link::new(
                Arc::clone(self.link.runtime()),
                self.link.url.clone(),
                format!("visq queue {}", topology.queue),
                self.link.confirm_timeout,
            );
            Arc::new(RabbitMq::new(link, topology))
        });
        Some(Arc::clone(dlq) as Arc<dyn Backend<Body = Vec<u8>>>)
    }

    fn dead_letter_limit(&self) -> Option<u32> {
        self.topology
            .dead_letters
            .as_ref()
            .map(|dead_letters| dead_letters.max_receives)
    }
}

/// A durable fanout exchange: every message published to it is copied into each queue bound
/// to it. Made by [`RabbitMq::topic`].
pub struct RabbitMqTopic {
    link: Link,
    topology: FanoutExchange,
    ids: IdSource,
}

impl std::fmt::Debug for RabbitMqTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqTopic")
            .field("exchange", &self.exchange())
            .finish_non_exhaustive()
    }
}

impl RabbitMqTopic {
    /// A builder for the subscriber queue `queue`, bound to this exchange by its `build`.
    pub fn subscriber(&self, queue: &str) -> RabbitMqBuilder {
        RabbitMq::builder(&self.link.url, queue).fanout(self.exchange())
    }

    /// Publishes `message` to every bound queue (persistent, confirmed). With no queue bound
    /// the message is unroutable: [`BackendError::Fatal`], body handed back. A delay is
    /// [`BackendError::Unsupported`]`(`[`Feature::Delay`]`)`: delays live in each queue.
    pub fn publish(&self, message: Outgoing<Vec<u8>>) -> Result<Accepted, Refused<Vec<u8>>> {
        if !message.delay.is_zero() {
            return Err(Refused {
                error: BackendError::Unsupported(Feature::Delay),
                body: message.body,
            });
        }
        let session = match self.link.session(&self.topology) {
            Ok(session) => session,
            Err(error) => {
                return Err(Refused {
                    error,
                    body: message.body,
                })
            }
        };
        let route = check_entry(&message).map(|properties| Route {
            routing_key: String::new(),
            properties,
        });
        let mut results =
            self.link
                .publish(&session, self.exchange(), vec![(message, route)], &self.ids);
        results.pop().expect("one result per entry")
    }

    /// Deletes the exchange (bound queues stay, unbound).
    pub fn delete(&self) -> Result<(), BackendError> {
        let session = self.link.session(&self.topology)?;
        self.link.run(async {
            session
                .publisher
                .exchange_delete(short(self.exchange())?, ExchangeDeleteOptions::default())
                .await
                .map_err(broker_error)?;
            Ok(())
        })
    }

    fn exchange(&self) -> &str {
        &self.topology.0
    }
}

/// What a handle declares on every new connection (idempotently).
trait Topology {
    async fn declare(&self, channel: &Channel) -> Result<(), BackendError>;
}

/// A queue: its name and what is declared with it.
struct QueueTopology {
    queue: String,
    dead_letters: Option<DeadLetters>,
    prefetch: u16,
    fanout: Option<String>,
}

/// Where a queue with a receive limit sends what comes back once too often.
struct DeadLetters {
    max_receives: u32,
    exchange: String,
    queue: String,
}

impl DeadLetters {
    fn of(queue: &str, max_receives: u32) -> Self {
        Self {
            max_receives,
            exchange: format!("{queue}.dlx"),
            queue: format!("{queue}.dlq"),
        }
    }
}

/// A durable fanout exchange, by name.
struct FanoutExchange(String);

impl Topology for FanoutExchange {
    async fn declare(&self, channel: &Channel) -> Result<(), BackendError> {
        declare_fanout(channel, &self.0).await
    }
}

impl Topology for QueueTopology {
    async fn declare(&self, channel: &Channel) -> Result<(), BackendError> {
        let mut arguments = quorum();
        if let Some(names) = &self.dead_letters {
            channel
                .exchange_declare(
                    short(&names.exchange)?,
                    ExchangeKind::Fanout,
                    durable_exchange(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker_error)?;
            channel
                .queue_declare(short(&names.queue)?, durable_queue(), quorum())
                .await
                .map_err(broker_error)?;
            channel
                .queue_bind(
                    short(&names.queue)?,
                    short(&names.exchange)?,
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker_error)?;
            arguments.insert("x-dead-letter-exchange".into(), string(&names.exchange));
            // A quorum queue's limit N allows N + 1 deliveries.
            arguments.insert(
                "x-delivery-limit".into(),
                long_int(u64::from(names.max_receives - 1)),
            );
        }
        channel
            .queue_declare(short(&self.queue)?, durable_queue(), arguments)
            .await
            .map_err(broker_error)?;
        if let Some(exchange) = &self.fanout {
            declare_fanout(channel, exchange).await?;
            channel
                .queue_bind(
                    short(&self.queue)?,
                    short(exchange)?,
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker_error)?;
        }
        Ok(())
    }
}

async fn declare_fanout(channel: &Channel, exchange: &str) -> Result<(), BackendError> {
    channel
        .exchange_declare(
            short(exchange)?,
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(broker_error)?;
    Ok(())
}

/// Where an entry that passed its checks goes, and with what properties.
struct Route {
    routing_key: String,
    properties: BasicProperties,
}

/// An entry to publish and its route, or why it is refused.
type Routed = (Outgoing<Vec<u8>>, Result<Route, BackendError>);

/// One handle's connection: the runtime it runs on, and the current session, replaced when
/// it is lost.
struct Link {
    /// Shared with the dead-letter queue's handle; `None` only while dropping.
    runtime: Option<Arc<Runtime>>,
    url: String,
    /// The connection's name on the broker (`rabbitmqctl list_connections client_properties`).
    name: String,
    confirm_timeout: Duration,
    session: Mutex<Option<Arc<Session>>>,
}

/// One connection: its number (in receipts), a channel in confirm mode for publishing and
/// declaring, and the consumer, started by the first receive.
struct Session {
    number: u64,
    connection: Connection,
    publisher: Channel,
    consumer: OnceCell<Consumer>,
}

impl Session {
    fn healthy(&self) -> bool {
        self.connection.status().connected()
            && self.publisher.status().connected()
            && self.consumer.get().map_or(true, Consumer::healthy)
    }
}

impl Link {
    fn new(runtime: Arc<Runtime>, url: String, name: String, confirm_timeout: Duration) -> Self {
        Self {
            runtime: Some(runtime),
            url,
            name,
            confirm_timeout,
            session: Mutex::new(None),
        }
    }

    fn runtime(&self) -> &Arc<Runtime> {
        self.runtime
            .as_ref()
            .expect("only the drop takes the runtime")
    }

    /// Runs `future` to its end, blocking this thread; refused inside an async runtime.
    fn run<T>(
        &self,
        future: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        refuse_inside_async()?;
        self.runtime().block_on(future)
    }

    /// The current session, if there is one (healthy or not): what receipts are checked
    /// against.
    fn current(&self) -> Option<Arc<Session>> {
        lock(&self.session).clone()
    }

    /// A healthy session: the current one, or a new connection with `topology` declared on
    /// it. The lost one is closed; its receipts are stale from now on.
    fn session(&self, topology: &impl Topology) -> Result<Arc<Session>, BackendError> {
        let mut slot = lock(&self.session);
        if let Some(session) = slot.as_ref().filter(|session| session.healthy()) {
            return Ok(Arc::clone(session));
        }
        if let Some(lost) = slot.take() {
            self.runtime().spawn(async move {
                let _ = lost
                    .connection
                    .close(REPLY_SUCCESS, "reconnecting".into())
                    .await;
            });
        }
        let session = Arc::new(self.run(self.connect(topology))?);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    async fn connect(&self, topology: &impl Topology) -> Result<Session, BackendError> {
        let connection = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(
                &self.url,
                ConnectionProperties::default().with_connection_name(self.name.clone().into()),
            ),
        )
        .await
        .map_err(|_| {
            BackendError::Transient(format!(
                "no connection to RabbitMQ within {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|error| match broker_error(error) {
            // A refused login or a bad vhost is the configuration's fault, not the network's.
            BackendError::Fatal(message) => {
                BackendError::Fatal(format!("connecting to RabbitMQ: {message}"))
            }
            BackendError::Transient(message) => {
                BackendError::Transient(format!("connecting to RabbitMQ: {message}"))
            }
            other => other,
        })?;
        let publisher = connection.create_channel().await.map_err(broker_error)?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(broker_error)?;
        topology.declare(&publisher).await?;
        Ok(Session {
            number: CONNECTIONS.fetch_add(1, Ordering::Relaxed),
            connection,
            publisher,
            consumer: OnceCell::new(),
        })
    }

    /// Publishes each routed entry to `exchange`, then awaits every confirm; one result per
    /// entry, in order. The whole call has `confirm_timeout`: a broker that blocks
    /// publishers (a memory or disk alarm) or does not confirm makes the rest transient.
    fn publish(
        &self,
        session: &Session,
        exchange: &str,
        entries: Vec<Routed>,
        ids: &IdSource,
    ) -> Vec<Result<Accepted, Refused<Vec<u8>>>> {
        if let Err(error) = refuse_inside_async() {
            let bodies = entries.into_iter().map(|(entry, _)| entry);
            return refuse_all(bodies.collect(), error);
        }
        self.runtime().block_on(async {
            let deadline = tokio::time::Instant::now() + self.confirm_timeout;
            let mut pending = Vec::with_capacity(entries.len());
            for (entry, route) in entries {
                let id = ids.next();
                let sent = match route {
                    Err(error) => Err(error),
                    Ok(route) => {
                        let publish = publish_one(
                            &session.publisher,
                            exchange,
                            &route.routing_key,
                            &entry.body,
                            route.properties.with_message_id(id.clone().into()),
                        );
                        tokio::time::timeout_at(deadline, publish)
                            .await
                            .unwrap_or_else(|_| Err(unconfirmed(self.confirm_timeout)))
                    }
                };
                pending.push((entry.body, id, sent));
            }
            let mut results = Vec::with_capacity(pending.len());
            for (body, id, sent) in pending {
                let confirmed = match sent {
                    Ok(confirm) => tokio::time::timeout_at(deadline, await_confirm(confirm))
                        .await
                        .unwrap_or_else(|_| Err(unconfirmed(self.confirm_timeout))),
                    Err(error) => Err(error),
                };
                results.push(match confirmed {
                    Ok(()) => Ok(Accepted {
                        id: MessageKey::text(id),
                    }),
                    Err(error) => Err(Refused { error, body }),
                });
            }
            results
        })
    }
}

impl Drop for Link {
    /// Closes the connection (the broker requeues what it held), waiting a second at most;
    /// inside an async runtime, where it must not block, the broker sees the socket close
    /// instead. The runtime, with its last handle, stops without blocking either way.
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if let Some(session) = lock(&self.session).take() {
            if refuse_inside_async().is_ok() {
                let _ = runtime.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(1),
                        session.connection.close(REPLY_SUCCESS, "bye".into()),
                    )
                    .await
                });
            }
        }
        if let Ok(runtime) = Arc::try_unwrap(runtime) {
            runtime.shutdown_background();
        }
    }
}

/// A blocking call from inside an async runtime would stall it (and tokio panics on it).
fn refuse_inside_async() -> Result<(), BackendError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        Err(BackendError::Fatal(
            "the RabbitMQ backend blocks: call it from a plain thread \
             (tokio::task::spawn_blocking), not from inside an async runtime"
                .into(),
        ))
    } else {
        Ok(())
    }
}

async fn publish_one(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<lapin::PublisherConfirm, BackendError> {
    let confirm = channel
        .basic_publish(
            short(exchange)?,
            short(routing_key)?,
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            properties,
        )
        .await
        .map_err(broker_error)?;
    Ok(confirm)
}

fn unconfirmed(timeout: Duration) -> BackendError {
    BackendError::Transient(format!(
        "no publisher confirm within {timeout:?}; the message may still arrive"
    ))
}

async fn await_confirm(confirm: lapin::PublisherConfirm) -> Result<(), BackendError> {
    let confirmation = confirm
        .await
        .map_err(|error| BackendError::Transient(format!("publish not confirmed: {error}")))?;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(BackendError::Fatal(format!(
                "unroutable: no queue took the message (routing key {:?}: {} {})",
                returned.delivery.routing_key.as_str(),
                returned.reply_code,
                returned.reply_text.as_str()
            )))
        }
        Confirmation::Nack(None) => Err(BackendError::Transient(
            "the broker refused the message (publisher nack)".into(),
        )),
        Confirmation::NotRequested => Err(BackendError::Fatal(
            "the publishing channel is not in confirm mode".into(),
        )),
    }
}

/// The consumer of one session: deliveries pushed by the broker wait in lapin's consumer
/// stream, in queue order, until a receive takes them; `leases` holds the ackers of those
/// handed out and not yet settled.
struct Consumer {
    channel: Channel,
    deliveries: tokio::sync::Mutex<lapin::Consumer>,
    /// Set once the stream has ended (cancelled by the broker, or its channel closed).
    ended: AtomicBool,
    leases: Mutex<HashMap<u64, Acker>>,
}

impl Consumer {
    async fn start(
        connection: &Connection,
        queue: &str,
        prefetch: u16,
    ) -> Result<Self, BackendError> {
        let channel = connection.create_channel().await.map_err(broker_error)?;
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(broker_error)?;
        let deliveries = channel
            .basic_consume(
                short(queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker_error)?;
        Ok(Self {
            channel,
            deliveries: tokio::sync::Mutex::new(deliveries),
            ended: AtomicBool::new(false),
            leases: Mutex::new(HashMap::new()),
        })
    }

    fn healthy(&self) -> bool {
        self.channel.status().connected() && !self.ended.load(Ordering::Acquire)
    }

    /// Up to `max` deliveries, waiting up to `wait` for the first; and whether the consumer
    /// has ended.
    async fn take(&self, max: usize, wait: Duration) -> (Vec<Delivery>, bool) {
        let mut taken = Vec::new();
        let _ = tokio::time::timeout(wait, async {
            let mut deliveries = self.deliveries.lock().await;
            let mut next =
                std::future::poll_fn(|cx| Pin::new(&mut *deliveries).poll_next(cx)).await;
            while let Some(Ok(delivery)) = next {
                taken.push(delivery);
                if taken.len() == max {
                    return;
                }
                // What has already arrived, without waiting.
                next = match std::future::poll_fn(|cx| {
                    Poll::Ready(Pin::new(&mut *deliveries).poll_next(cx))
                })
                .await
                {
                    Poll::Ready(item) => item,
                    Poll::Pending => return,
                };
            }
            // The stream ended, or failed (its channel is gone).
            self.ended.store(true, Ordering::Release);
        })
        .await;
        (taken, self.ended.load(Ordering::Acquire))
    }
}

/// Process-unique message ids: a prefix from the process id and the time the handle was made,
/// then a counter.
struct IdSource {
    prefix: String,
    next: AtomicU64,
}

impl IdSource {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        Self {
            prefix: format!("{:x}.{:x}", std::process::id(), nanos),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}.{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// The checks an entry must pass before it is published, and its properties (persistent,
/// attributes as headers) when it does.
fn check_entry(entry: &Outgoing<Vec<u8>>) -> Result<BasicProperties, BackendError> {
    if entry.group.is_some() {
        return Err(BackendError::Unsupported(Feature::Groups));
    }
    if entry.dedup_id.is_some() {
        return Err(BackendError::Unsupported(Feature::Dedup));
    }
    BackendError::check_limit(
        Limit::BodyBytes,
        MAX_BODY_BYTES as u64,
        entry.body.len() as u64,
    )?;
    let properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
    if entry.attributes.is_empty() {
        return Ok(properties);
    }
    let mut headers = FieldTable::default();
    for (name, value) in &entry.attributes {
        if name.starts_with("x-") {
            return Err(BackendError::Fatal(format!(
                "attribute {name:?}: names starting with x- belong to RabbitMQ"
            )));
        }
        headers.insert(short(name)?, string(value));
    }
    Ok(properties.with_headers(headers))
}

fn check_delay(delay: Duration) -> Result<(), BackendError> {
    BackendError::check_duration(Limit::DelayMillis, MAX_TIMEOUT, delay)
}

/// A delay in whole milliseconds, rounded up: a TTL never fires early.
fn delay_millis(delay: Duration) -> u64 {
    delay
        .as_nanos()
        .div_ceil(1_000_000)
        .try_into()
        .unwrap_or(u64::MAX)
}

fn delay_queue_name(queue: &str, delay: Duration) -> String {
    format!("{queue}.delay.{}", delay_millis(delay))
}

/// The trait's view of one delivery.
fn incoming(connection: u64, delivery: Delivery) -> Incoming<Vec<u8>> {
    let headers = delivery.properties.headers().as_ref();
    let earlier = headers
        .and_then(|headers| headers.inner().get(DELIVERY_COUNT))
        .and_then(integer)
        .unwrap_or(0);
    let attributes = headers
        .map(|headers| {
            headers
                .inner()
                .iter()
                .filter(|(name, _)| !name.as_str().starts_with("x-"))
                .filter_map(|(name, value)| text(value).map(|value| (name.to_string(), value)))
                .collect()
        })
        .unwrap_or_default();
    let id = match delivery.properties.message_id() {
        Some(id) => MessageKey::text(id.as_str()),
        None => MessageKey::text(format!("{connection}.{}", delivery.delivery_tag)),
    };
    Incoming {
        id,
        body: delivery.data,
        attributes,
        receive_count: ReceiveCount::Exact(earlier.saturating_add(1)),
        group: None,
        handle: Handle::tag(connection, delivery.delivery_tag),
    }
}

fn integer(value: &AMQPValue) -> Option<u32> {
    let wide: i64 = match value {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    };
    u32::try_from(wide).ok()
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn refuse_all(
    batch: Vec<Outgoing<Vec<u8>>>,
    error: BackendError,
) -> Vec<Result<Accepted, Refused<Vec<u8>>>> {
    batch
        .into_iter()
        .map(|entry| {
            Err(Refused {
                error: error.clone(),
                body: entry.body,
            })
        })
        .collect()
}

/// The runtime a handle (and its dead-letter queue) runs on: one worker thread.
fn runtime() -> Result<Runtime, BackendError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("visq-rabbitmq")
        .enable_all()
        .build()
        .map_err(|error| BackendError::Fatal(format!("starting the adapter's runtime: {error}")))
}

/// An AMQP short string (at most 255 bytes), or a clear error instead of lapin's panic.
fn short(s: &str) -> Result<ShortString, BackendError> {
    ShortString::try_new(s)
        .map_err(|_| BackendError::Fatal(format!("{s:?} is longer than AMQP's 255-byte names")))
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn long_int(n: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX))
}

fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), string("quorum"));
    arguments
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// A poisoned lock only means another caller panicked; the map and slot stay consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the broker answered that the queue or exchange does not exist.
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(refusal)
        if *refusal.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// What the broker refused is fatal for the call; a connection the broker closed (a restart, an
/// operator's `close_connection`) and anything else about the connection is transient (the
/// next call reconnects).
fn broker_error(error: lapin::Error) -> BackendError {
    match error.kind() {
        ErrorKind::ProtocolError(refusal)
            if *refusal.kind() != AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED) =>
        {
            BackendError::Fatal(error.to_string())
        }
        _ => BackendError::Transient(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(headers: Option<FieldTable>) -> Incoming<Vec<u8>> {
        let mut delivery = Delivery::mock(7, "".into(), "q".into(), false, b"body".to_vec());
        if let Some(headers) = headers {
            delivery.properties = delivery.properties.with_headers(headers);
        }
        incoming(3, delivery)
    }

    #[test]
    fn blocking_calls_inside_an_async_runtime_are_refused_not_a_panic() {
        let topology = QueueTopology {
            queue: "q".into(),
            dead_letters: None,
            prefetch: DEFAULT_PREFETCH,
            fanout: None,
        };
        // Nothing listens on port 1: nothing here may get as far as connecting.
        let link = Link::new(
            Arc::new(runtime().unwrap()),
            "amqp://127.0.0.1:1/%2f".into(),
            "test".into(),
            DEFAULT_CONFIRM_TIMEOUT,
        );
        let rabbit = RabbitMq::new(link, topology);
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outer.block_on(async move {
            let refused = rabbit.send(Outgoing::new(b"kept".to_vec())).unwrap_err();
            assert!(
                matches!(refused.error, BackendError::Fatal(_)),
                "{refused:?}"
            );
            assert_eq!(refused.body, b"kept");
            let mut out = Vec::new();
            let received = rabbit.receive(&mut out, 1, Duration::ZERO, None);
            assert!(matches!(received, Err(BackendError::Fatal(_))));
            assert!(matches!(
                rabbit.delete(&Handle::tag(1, 1)),
                Err(BackendError::Fatal(_))
            ));
            assert!(matches!(rabbit.purge(), Err(BackendError::Fatal(_))));
            // Dropped here, inside the runtime: no blocking close, no panic.
            drop(rabbit);
        });
        let built = outer.block_on(async {
            RabbitMq::builder("amqp://127.0.0.1:1/%2f", "q")
                .build()
                .map(drop)
        });
        assert!(matches!(built, Err(BackendError::Fatal(_))), "{built:?}");
    }

    #[test]
    fn a_delay_rounds_up_to_whole_milliseconds() {
        assert_eq!(delay_millis(Duration::from_millis(300)), 300);
        assert_eq!(delay_millis(Duration::from_micros(300_001)), 301);
        assert_eq!(delay_millis(Duration::from_nanos(1)), 1);
        assert_eq!(
            delay_queue_name("jobs", Duration::from_micros(1500)),
            "jobs.delay.2"
        );
    }

    #[test]
    fn the_receive_count_is_one_more_than_x_delivery_count() {
        assert_eq!(delivered(None).receive_count, ReceiveCount::Exact(1));
        for value in [
            AMQPValue::LongLongInt(2),
            AMQPValue::LongInt(2),
            AMQPValue::ShortUInt(2),
        ] {
            let mut headers = FieldTable::default();
            headers.insert(DELIVERY_COUNT.into(), value);
            assert_eq!(
                delivered(Some(headers)).receive_count,
                ReceiveCount::Exact(3)
            );
        }
    }

    #[test]
    fn attributes_are_the_string_headers_not_rabbitmqs_own() {
        let mut headers = FieldTable::default();
        headers.insert("tenant".into(), string("acme"));
        headers.insert("x-death".into(), string("rabbit's"));
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(1));
        headers.insert("flag".into(), AMQPValue::Boolean(true));
        let message = delivered(Some(headers));
        assert_eq!(
            message.attributes,
            [("tenant".to_owned(), "acme".to_owned())]
        );
        assert_eq!(message.handle, Handle::tag(3, 7));
        // No message id from the publisher: one made from the connection and the tag.
        assert_eq!(message.id.to_string(), "3.7");
    }

    #[test]
    fn entries_rabbitmq_cannot_carry_are_refused_before_publishing() {
        let entry = |f: fn(Outgoing<Vec<u8>>) -> Outgoing<Vec<u8>>| {
            check_entry(&f(Outgoing::new(b"b".to_vec()))).map(drop)
        };
        assert_eq!(
            entry(|e| e.group("g")),
            Err(BackendError::Unsupported(Feature::Groups))
        );
        assert_eq!(
            entry(|e| e.dedup_id("d")),
            Err(BackendError::Unsupported(Feature::Dedup))
        );
        assert!(matches!(
            entry(|e| e.attribute("x-mine", "v")),
            Err(BackendError::Fatal(_))
        ));
        assert!(matches!(
            entry(|e| e.attribute("n".repeat(256), "v")),
            Err(BackendError::Fatal(_))
        ));
        assert_eq!(entry(|e| e.attribute("tenant", "acme")), Ok(()));
    }
}
