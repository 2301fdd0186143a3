//! Amazon SQS as a [`Backend`] (cargo feature `sqs`): the same consumers run on a queue in
//! another process, or on AWS, through blocking calls.
//!
//! | module | what it is |
//! |---|---|
//! | `builder` | [`SqsBuilder`]: options, credentials, creating the queue and its dead-letter queue |
//! | `connection` | the SDK client and the small tokio runtime behind the blocking calls |
//! | `wire` | bytes as SQS text, attributes, SQS's limits and whole seconds |
//! | `errors` | SQS's errors as [`BackendError`]s |
//!
//! What each call does on SQS, and what SQS cannot do, is documented on [`Sqs`] itself.

mod builder;
mod connection;
mod errors;
mod wire;

pub use builder::SqsBuilder;

use super::contract::{
    Accepted, Backend, BackendError, Capabilities, CountKind, Feature, Handle, Incoming,
    MessageKey, Outgoing, ReceiveCount, Refused,
};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use connection::Connection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wire::WireMessage;

/// The group of a FIFO send that names none.
const DEFAULT_GROUP: &str = "default";

/// An Amazon SQS queue (or a local SQS-compatible server's) as a [`Backend`] of bytes.
///
/// Built with [`Sqs::builder`]. Share it behind an `Arc`: all calls take `&self` and may run
/// from many threads at once, but not from inside an async runtime (they block; such a call
/// gets [`BackendError::Fatal`]).
///
/// # The trait's calls on SQS
///
/// | trait | SQS |
/// |---|---|
/// | `send_batch` | `SendMessageBatch`, split into calls of at most 10 entries and 256 KiB (concurrent on a standard queue; one after another on a FIFO queue, so a group keeps its order, stopping at a call that fails whole: the entries not sent get its error); an entry over a limit, or asking what the queue cannot do, is refused before any call |
/// | `receive` | `ReceiveMessage` of up to 10 messages (a larger `max` gets 10), long-polling up to 20 s, with `ApproximateReceiveCount`, the message group and every message attribute |
/// | `delete`, `delete_batch` | `DeleteMessage`, `DeleteMessageBatch` (at most 10 entries: [`Limit::BatchEntries`](crate::Limit::BatchEntries) beyond) |
/// | `change_visibility`, `change_visibility_batch`, `release` | `ChangeMessageVisibility`, `ChangeMessageVisibilityBatch` (at most 10); zero is a release, and the next receive counts one more |
/// | `dead_letter` | a copy sent to the dead-letter queue, then the original deleted (below) |
/// | `dead_letter_queue` | the `{queue}-dlq` queue, as an `Sqs` of its own |
///
/// Batch calls answer per entry: SQS's per-entry failures keep their own error, a failure of
/// the whole call is every entry's.
///
/// # What SQS cannot do, and how the adapter says so
///
/// * **Bodies are text**: bytes that are not SQS text (or are empty) travel as base64 with a
///   `visq.encoding` attribute, which the receive removes; such a body counts a third larger
///   against the 256 KiB limit, and leaves room for 9 attributes of its own instead of 10.
/// * **Time is whole seconds**: delays and visibility timeouts are rounded up to the next
///   second (a deadline is never early, at most a second late), long-poll waits down (a wait
///   under a second is a short poll).
/// * **Receive counts are approximate** ([`ReceiveCount::Approximate`], SQS's
///   `ApproximateReceiveCount`).
/// * **A hand-back is a release**: SQS counts every receive, so [`Backend::hand_back`] charges
///   one ([`Capabilities::uncharged_hand_back`] is `false`).
/// * **Groups and deduplication ids only on FIFO queues**: on a standard queue an entry with
///   either is refused with [`BackendError::Unsupported`] and its body handed back. On a FIFO
///   queue an entry without a group goes to the group `default`, and one without a
///   deduplication id gets a unique one (a body sent twice is two messages).
/// * **No per-message delay on FIFO queues**: a delayed entry is refused with
///   [`Feature::Delay`] ([`Capabilities::max_delay`] is `None`).
/// * **No "dead-letter now"**: [`Backend::dead_letter`] first extends the lease (so a stale
///   receipt is refused before anything is copied), then sends a copy to the dead-letter
///   queue, with the original's attributes, group, and the reason in the
///   [`Sqs::DEAD_LETTER_REASON`] attribute, then deletes the original. That is at-least-once: if
///   the delete fails after the copy was sent, the error is returned and the message is in
///   the dead-letter queue *and* comes back when its lease ends. The copy needs the body,
///   which SQS cannot look up by receipt: a queue with a dead-letter queue keeps what it
///   received until the lease is settled or its deadline passes (a map under a lock, touched
///   once per received message and once per settlement, never across a request), so only a
///   receipt this `Sqs` received can be dead-lettered; any other is [`BackendError::Stale`].
///   Without `max_receives` there is no dead-letter queue: [`Feature::DeadLetter`].
/// * **A stale receipt may be accepted**: AWS documents that a delete with an old receipt
///   handle "succeeds but the message might not be deleted". A receipt the server rejects is
///   [`BackendError::Stale`].
///
/// # Against moto
///
/// The tests run on moto (`.ci/moto.sh`), which differs from AWS where it matters here: FIFO
/// deduplication only covers messages still in the queue (AWS: five minutes, deleted or not),
/// an old receipt handle deletes the redelivered message, a repeated delete succeeds, the
/// size limit is 1 MiB (the adapter checks 256 KiB itself), and receives racing on one queue
/// can both be handed the same message (its `ReceiveMessage` takes no lock; seen with four
/// receiving threads, the message counted twice). Standard SQS queues are at-least-once too.
///
/// Every call blocks the calling thread for at least one round trip (its own small tokio runtime
/// drives the SDK: two worker threads; requests time out after 60 s per attempt, 3 s to
/// connect, with the SDK's standard retries). Hot-path rules of the in-process queue (no lock, no
/// allocation) do not apply to a network client: each request allocates.
pub struct Sqs {
    connection: Arc<Connection>,
    name: String,
    url: String,
    fifo: bool,
    /// The queue's visibility timeout, for the deadline of a receive that names none.
    visibility: Duration,
    max_receives: Option<u32>,
    dead_letters: Option<Arc<Sqs>>,
    /// What this queue received, by receipt handle, for [`Backend::dead_letter`]'s copy;
    /// kept only when there is a dead-letter queue.
    received: Mutex<Received>,
}

/// A received message as it came over the wire, until its lease is settled or over.
#[derive(Clone)]
struct Kept {
    body: String,
    attributes: HashMap<String, MessageAttributeValue>,
    group: Option<String>,
    id: String,
    /// When its lease ends by this process's clock (later than SQS's, which started first).
    deadline: Instant,
}

#[derive(Default)]
struct Received {
    by_receipt: HashMap<Arc<str>, Kept>,
    /// When leases past their deadline are next dropped from the map.
    next_sweep: Option<Instant>,
}

impl Sqs {
    /// The attribute a copy made by [`Backend::dead_letter`] carries its reason in.
    pub const DEAD_LETTER_REASON: &'static str = "visq.dead-letter-reason";

    /// Options for the queue named `queue`; [`SqsBuilder::build`] connects.
    pub fn builder(queue: &str) -> SqsBuilder {
        SqsBuilder::new(queue)
    }

    fn new(
        connection: Arc<Connection>,
        name: String,
        url: String,
        fifo: bool,
        visibility: Duration,
        dead_letters: Option<(Arc<Sqs>, u32)>,
    ) -> Self {
        let (dead_letters, max_receives) = dead_letters.unzip();
        Self {
            connection,
            name,
            url,
            fifo,
            visibility,
            max_receives,
            dead_letters,
            received: Mutex::new(Received::default()),
        }
    }

    /// The queue's name (with `.fifo` on a FIFO queue).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Empties the queue and its dead-letter queue. AWS allows one purge per queue every 60
    /// seconds, and may take that long to finish one.
    pub fn purge(&self) -> Result<(), BackendError> {
        let client = self.connection.client();
        self.connection
            .run(client.purge_queue().queue_url(&self.url).send())?
            .map_err(errors::from_sdk)?;
        self.keep(|received| received.by_receipt.clear());
        match &self.dead_letters {
            Some(dead_letters) => dead_letters.purge(),
            None => Ok(()),
        }
    }

    /// Deletes the queue and its dead-letter queue, messages and all. Tries both; the first
    /// error, if any.
    pub fn delete_queues(&self) -> Result<(), BackendError> {
        let client = self.connection.client();
        let deleted = self
            .connection
            .run(client.delete_queue().queue_url(&self.url).send())
            .and_then(|sent| sent.map(drop).map_err(errors::from_sdk));
        let dead_letters_deleted = match &self.dead_letters {
            Some(dead_letters) => dead_letters.delete_queues(),
            None => Ok(()),
        };
        deleted.and(dead_letters_deleted)
    }

    /// Why `entry` cannot be sent to this queue, if it cannot (before encoding it).
    fn unsupported(&self, entry: &Outgoing<Vec<u8>>) -> Option<BackendError> {
        let missing = if self.fifo {
            (!entry.delay.is_zero()).then_some(Feature::Delay)
        } else if entry.group.is_some() {
            Some(Feature::Groups)
        } else if entry.dedup_id.is_some() {
            Some(Feature::Dedup)
        } else {
            None
        };
        missing.map(BackendError::Unsupported)
    }

    /// `entry` as a batch entry named `id`, or why it cannot be sent.
    fn send_entry(
        &self,
        id: usize,
        entry: &Outgoing<Vec<u8>>,
    ) -> Result<(SendMessageBatchRequestEntry, usize), BackendError> {
        if let Some(error) = self.unsupported(entry) {
            return Err(error);
        }
        let delay = wire::delay_seconds(entry.delay)?;
        let message = WireMessage::encode(&entry.body, &entry.attributes)?;
        let size = message.size();
        let mut request = SendMessageBatchRequestEntry::builder()
            .id(id.to_string())
            .message_body(message.body)
            .set_message_attributes(Some(message.attributes).filter(|a| !a.is_empty()));
        if self.fifo {
            let group = entry.group.as_deref().unwrap_or(DEFAULT_GROUP);
            let dedup = entry.dedup_id.clone().unwrap_or_else(unique_dedup_id);
            request = request
                .message_group_id(group)
                .message_deduplication_id(dedup);
        } else if delay > 0 {
            request = request.delay_seconds(delay);
        }
        let request = request
            .build()
            .map_err(|error| BackendError::Fatal(error.to_string()))?;
        Ok((request, size))
    }

    /// Runs `f` on the kept messages.
    fn keep<R>(&self, f: impl FnOnce(&mut Received) -> R) -> R {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        let mut received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut received)
    }

    /// Keeps what a receive got, for a later dead-letter copy, and drops what has expired.
    fn remember(&self, kept: Vec<(Arc<str>, Kept)>) {
        let now = Instant::now();
        let visibility = self.visibility;
        self.keep(|received| {
            if received.next_sweep.map_or(true, |at| at <= now) {
                received.by_receipt.retain(|_, kept| kept.deadline > now);
                received.next_sweep = Some(now + visibility);
            }
            received.by_receipt.extend(kept);
        });
    }

    /// A settlement of `receipt` took effect: it is not kept any longer, or, for a new
    /// visibility, kept until its new deadline.
    fn settled(&self, receipt: &str, new_visibility: Option<Duration>) {
        if self.dead_letters.is_none() {
            return;
        }
        self.keep(|received| match new_visibility.filter(|v| !v.is_zero()) {
            Some(visibility) => {
                if let Some(kept) = received.by_receipt.get_mut(receipt) {
                    kept.deadline = Instant::now() + visibility;
                }
            }
            None => {
                received.by_receipt.remove(receipt);
            }
        });
    }

    fn delete_one(&self, receipt: &str) -> Result<(), BackendError> {
        let client = self.connection.client();
        self.connection
            .run(
                client
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(receipt)
                    .send(),
            )?
            .map_err(errors::from_sdk)?;
        self.settled(receipt, None);
        Ok(())
    }

    fn change_one(&self, receipt: &str, timeout: Duration) -> Result<(), BackendError> {
        let seconds = wire::visibility_seconds(timeout)?;
        let client = self.connection.client();
        self.connection
            .run(
                client
                    .change_message_visibility()
                    .queue_url(&self.url)
                    .receipt_handle(receipt)
                    .visibility_timeout(seconds)
                    .send(),
            )?
            .map_err(errors::from_sdk)?;
        self.settled(receipt, Some(timeout));
        Ok(())
    }
}

impl std::fmt::Debug for Sqs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqs")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("fifo", &self.fifo)
            .field("max_receives", &self.max_receives)
            .finish_non_exhaustive()
    }
}

impl Backend for Sqs {
    type Body = Vec<u8>;

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch: wire::MAX_BATCH,
            max_body_bytes: Some(wire::MAX_MESSAGE_BYTES),
            max_delay: (!self.fifo).then_some(wire::MAX_DELAY),
            max_visibility: wire::MAX_VISIBILITY,
            max_wait: wire::MAX_WAIT,
            extend_lease: true,
            shorten_lease: true,
            leases_expire: true,
            receive_count: CountKind::Approximate,
            native_dead_letter: self.max_receives.is_some(),
            uncharged_hand_back: false,
            groups: self.fifo,
            dedup: self.fifo,
            attributes: true,
        }
    }

    fn send_batch(&self, batch: Vec<Outgoing<Vec<u8>>>) -> Vec<Result<Accepted, Refused<Vec<u8>>>> {
        let mut results: Vec<Option<Result<Accepted, BackendError>>> =
            Vec::with_capacity(batch.len());
        // Calls of at most 10 entries and 256 KiB, in order.
        let mut chunks: Vec<Vec<SendMessageBatchRequestEntry>> = Vec::new();
        let mut chunk_bytes = 0;
        for (index, entry) in batch.iter().enumerate() {
            match self.send_entry(index, entry) {
                Ok((request, size)) => {
                    let fits = chunks.last().is_some_and(|chunk| {
                        chunk.len() < wire::MAX_BATCH
                            && chunk_bytes + size <= wire::MAX_MESSAGE_BYTES
                    });
                    if !fits {
                        chunks.push(Vec::with_capacity(wire::MAX_BATCH));
                        chunk_bytes = 0;
                    }
                    chunk_bytes += size;
                    chunks.last_mut().expect("pushed above").push(request);
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        // One call per chunk.
        let client = self.connection.client();
        let (ids, calls): (Vec<Vec<usize>>, Vec<_>) = chunks
            .into_iter()
            .map(|chunk| {
                let ids = chunk
                    .iter()
                    .map(|entry| entry.id().parse().expect("ids are indices"))
                    .collect();
                let call = client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(chunk))
                    .send();
                (ids, call)
            })
            .unzip();
        // A FIFO queue's calls go one after another (concurrent ones could land out of order),
        // and stop at the first that fails whole: a later call must not overtake it.
        let outputs: Vec<Result<_, BackendError>> = if self.fifo {
            let mut failed: Option<BackendError> = None;
            calls
                .into_iter()
                .map(|call| {
                    if let Some(error) = &failed {
                        return Err(error.clone());
                    }
                    let output = self
                        .connection
                        .run(call)
                        .and_then(|sent| sent.map_err(errors::from_sdk));
                    if let Err(error) = &output {
                        failed = Some(error.clone());
                    }
                    output
                })
                .collect()
        } else {
            match self.connection.run_all(calls) {
                Ok(outputs) => outputs
                    .into_iter()
                    .map(|output| output.and_then(|sent| sent.map_err(errors::from_sdk)))
                    .collect(),
                Err(error) => ids.iter().map(|_| Err(error.clone())).collect(),
            }
        };
        for (ids, output) in ids.into_iter().zip(outputs) {
            let mut answered = output.map(|output| send_answers(&output));
            for index in ids {
                results[index] = Some(match &mut answered {
                    Ok(answers) => answers.remove(&index.to_string()).unwrap_or_else(|| {
                        Err(BackendError::Fatal(
                            "SQS gave no result for this entry".into(),
                        ))
                    }),
                    Err(error) => Err(error.clone()),
                });
            }
        }
        results
            .into_iter()
            .zip(batch)
            .map(|(result, entry)| {
                result
                    .expect("every entry was refused or sent")
                    .map_err(|error| Refused {
                        error,
                        body: entry.body,
                    })
            })
            .collect()
    }

    fn receive(
        &self,
        out: &mut Vec<Incoming<Vec<u8>>>,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<usize, BackendError> {
        let wait_seconds = wire::wait_seconds(wait)?;
        let visibility_seconds = match visibility {
            Some(timeout) if timeout.is_zero() => {
                return Err(BackendError::Fatal(
                    "a zero visibility timeout leases nothing".into(),
                ))
            }
            Some(timeout) => Some(wire::visibility_seconds(timeout)?),
            None => None,
        };
        if max == 0 {
            return Ok(0);
        }
        let client = self.connection.client();
        let output = self
            .connection
            .run(
                client
                    .receive_message()
                    .queue_url(&self.url)
                    .max_number_of_messages(max.min(wire::MAX_BATCH) as i32)
                    .wait_time_seconds(wait_seconds)
                    .set_visibility_timeout(visibility_seconds)
                    .message_system_attribute_names(
                        MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                    .message_attribute_names("All")
                    .send(),
            )?
            .map_err(errors::from_sdk)?;
        let deadline = Instant::now() + visibility.unwrap_or(self.visibility);
        let mut kept = Vec::new();
        let before = out.len();
        for message in output.messages.unwrap_or_default() {
            let (Some(receipt), Some(id)) = (message.receipt_handle, message.message_id) else {
                continue;
            };
            let system = message.attributes.unwrap_or_default();
            let count = system
                .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|count| count.parse().ok())
                .unwrap_or(1);
            let group = system
                .get(&MessageSystemAttributeName::MessageGroupId)
                .cloned();
            let body = message.body.unwrap_or_default();
            let receipt: Arc<str> = receipt.into();
            let wire_body = self.dead_letters.is_some().then(|| body.clone());
            let (bytes, attributes) = wire::decode(body, message.message_attributes.as_ref());
            if let Some(body) = wire_body {
                kept.push((
                    Arc::clone(&receipt),
                    Kept {
                        body,
                        attributes: message.message_attributes.unwrap_or_default(),
                        group: group.clone(),
                        id: id.clone(),
                        deadline,
                    },
                ));
            }
            out.push(Incoming {
                id: MessageKey::text(id),
                body: bytes,
                attributes,
                receive_count: ReceiveCount::Approximate(count),
                group,
                handle: Handle::text(receipt),
            });
        }
        if !kept.is_empty() {
            self.remember(kept);
        }
        Ok(out.len() - before)
    }

    fn delete(&self, receipt: &Handle) -> Result<(), BackendError> {
        self.delete_one(receipt.as_text().ok_or(BackendError::Stale)?)
    }

    fn delete_batch(&self, receipts: &[Handle]) -> Vec<Result<(), BackendError>> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(index, receipt)| {
                let receipt = receipt.as_text().ok_or(BackendError::Stale)?;
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .map_err(|error| BackendError::Fatal(error.to_string()))
            })
            .collect();
        self.settle_batch(
            receipts.iter().map(|r| (r, None)).collect(),
            entries,
            |entries| {
                let client = self.connection.client();
                let output = self
                    .connection
                    .run(
                        client
                            .delete_message_batch()
                            .queue_url(&self.url)
                            .set_entries(Some(entries))
                            .send(),
                    )?
                    .map_err(errors::from_sdk)?;
                Ok(batch_answers(
                    output.successful().iter().map(|ok| ok.id()),
                    output.failed(),
                ))
            },
        )
    }

    fn change_visibility(&self, receipt: &Handle, timeout: Duration) -> Result<(), BackendError> {
        // The limit first: a foreign receipt with a bad timeout is told about the timeout.
        wire::visibility_seconds(timeout)?;
        self.change_one(receipt.as_text().ok_or(BackendError::Stale)?, timeout)
    }

    fn change_visibility_batch(
        &self,
        entries: &[(Handle, Duration)],
    ) -> Vec<Result<(), BackendError>> {
        let requests = entries
            .iter()
            .enumerate()
            .map(|(index, (receipt, timeout))| {
                let seconds = wire::visibility_seconds(*timeout)?;
                let receipt = receipt.as_text().ok_or(BackendError::Stale)?;
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(seconds)
                    .build()
                    .map_err(|error| BackendError::Fatal(error.to_string()))
            })
            .collect();
        let settlements = entries.iter().map(|(r, t)| (r, Some(*t))).collect();
        self.settle_batch(settlements, requests, |requests| {
            let client = self.connection.client();
            let output = self
                .connection
                .run(
                    client
                        .change_message_visibility_batch()
                        .queue_url(&self.url)
                        .set_entries(Some(requests))
                        .send(),
                )?
                .map_err(errors::from_sdk)?;
            Ok(batch_answers(
                output.successful().iter().map(|ok| ok.id()),
                output.failed(),
            ))
        })
    }

    fn dead_letter(&self, receipt: &Handle, reason: &str) -> Result<(), BackendError> {
        let dead_letters = self
            .dead_letters
            .as_ref()
            .ok_or(BackendError::Unsupported(Feature::DeadLetter))?;
        let receipt = receipt.as_text().ok_or(BackendError::Stale)?;
        // Kept until the delete below: a failed copy can be tried again.
        let kept = self
            .keep(|received| received.by_receipt.get(receipt).cloned())
            .ok_or(BackendError::Stale)?;
        // Long enough for the copy and the delete; refused if the lease is over.
        self.change_one(receipt, self.visibility)?;
        let mut attributes = kept.attributes;
        if !reason.is_empty() {
            attributes.insert(
                Self::DEAD_LETTER_REASON.to_owned(),
                wire::string_attribute(reason),
            );
        }
        let client = self.connection.client();
        let mut copy = client
            .send_message()
            .queue_url(&dead_letters.url)
            .message_body(kept.body)
            .set_message_attributes(Some(attributes).filter(|a| !a.is_empty()));
        if self.fifo {
            // Derived from the original's id: a retried dead-letter is one copy on AWS.
            copy = copy
                .message_group_id(kept.group.as_deref().unwrap_or(DEFAULT_GROUP))
                .message_deduplication_id(format!("dead-letter-{}", kept.id));
        }
        self.connection
            .run(copy.send())?
            .map_err(errors::from_sdk)?;
        self.delete_one(receipt)
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn Backend<Body = Vec<u8>>>> {
        self.dead_letters
            .as_ref()
            .map(|queue| Arc::clone(queue) as Arc<dyn Backend<Body = Vec<u8>>>)
    }

    fn dead_letter_limit(&self) -> Option<u32> {
        self.max_receives
    }
}

impl Sqs {
    /// A batch of settlements: refuses more than 10 entries whole, answers the entries that
    /// could not be built with their error, sends the rest in one `call`, and forgets (or
    /// re-dates) the kept messages whose settlement took effect.
    fn settle_batch<E>(
        &self,
        settlements: Vec<(&Handle, Option<Duration>)>,
        entries: Vec<Result<E, BackendError>>,
        call: impl FnOnce(Vec<E>) -> Result<HashMap<String, Result<(), BackendError>>, BackendError>,
    ) -> Vec<Result<(), BackendError>> {
        if let Err(error) = wire::check_batch(entries.len()) {
            return vec![Err(error); entries.len()];
        }
        let mut results: Vec<Option<Result<(), BackendError>>> = Vec::with_capacity(entries.len());
        let mut ready = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => {
                    ready.push(entry);
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let mut answered = if ready.is_empty() {
            Ok(HashMap::new())
        } else {
            call(ready)
        };
        results
            .into_iter()
            .zip(settlements)
            .enumerate()
            .map(|(index, (result, (receipt, visibility)))| {
                let result = result.unwrap_or_else(|| match &mut answered {
                    Ok(answers) => answers.remove(&index.to_string()).unwrap_or_else(|| {
                        Err(BackendError::Fatal(
                            "SQS gave no result for this entry".into(),
                        ))
                    }),
                    Err(error) => Err(error.clone()),
                });
                if result.is_ok() {
                    if let Some(receipt) = receipt.as_text() {
                        self.settled(receipt, visibility);
                    }
                }
                result
            })
            .collect()
    }
}

/// A batch send's per-entry answers, by entry id.
fn send_answers(
    output: &aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput,
) -> HashMap<String, Result<Accepted, BackendError>> {
    let accepted = output.successful().iter().map(|sent| {
        let id = MessageKey::text(sent.message_id());
        (sent.id().to_owned(), Ok(Accepted { id }))
    });
    let failed = output
        .failed()
        .iter()
        .map(|entry| (entry.id().to_owned(), Err(errors::from_entry(entry))));
    accepted.chain(failed).collect()
}

/// A batch settlement's per-entry answers, by entry id.
fn batch_answers<'a>(
    successful: impl Iterator<Item = &'a str>,
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
) -> HashMap<String, Result<(), BackendError>> {
    successful
        .map(|id| (id.to_owned(), Ok(())))
        .chain(
            failed
                .iter()
                .map(|entry| (entry.id().to_owned(), Err(errors::from_entry(entry)))),
        )
        .collect()
}

/// A deduplication id no other send has: this process, the time, and a counter.
fn unique_dedup_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("visq-{:x}-{nanos:x}-{n:x}", std::process::id())
}
