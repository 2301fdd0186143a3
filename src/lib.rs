//! visq: a lock-free, allocation-light, in-process message queue with SQS-style visibility
//! timeouts.
//!
//! A [`Queue`] holds up to `capacity` messages in a slab allocated by [`Builder::build`].
//! Receiving *leases* a message: it stays in the queue, invisible to other receivers, until its
//! visibility deadline; the [`Delivery`] carries a [`Receipt`] that settles the lease:
//!
//! * [`Queue::delete`] acknowledges it (the message is gone);
//! * [`Queue::release`] gives it back (visible again at once);
//! * [`Queue::change_visibility`] moves the deadline, earlier or later;
//! * doing nothing lets the deadline pass: the message is delivered again with a higher
//!   [`Delivery::receive_count`], or moved to a dead-letter queue after too many receives.
//!
//! A queue can also be built with priority levels ([`Builder::priorities`]), FIFO message
//! groups ([`Builder::message_groups`]: each group in send order, one message at a time) and a
//! message time-to-live ([`Builder::message_ttl`]); [`Queue::send_with`] takes a message's
//! [`SendOptions`]. [`Queue::try_take`] is an at-most-once receive (no lease).
//!
//! Delays and deadlines live in a hierarchical timing wheel that the queue's own operations run;
//! there is no background thread. `send`, `receive`, `delete`, `change_visibility` and
//! `release` take no lock and allocate nothing (a blocking receive takes a lock only to sleep).
//!
//! ```
//! use std::time::Duration;
//! use visq::{ManualClock, Queue, ReceiptError};
//!
//! let clock = ManualClock::new();
//! let q: Queue<String> = Queue::builder()
//!     .capacity(1024)
//!     .visibility_timeout(Duration::from_secs(30))
//!     .clock(clock.clone())
//!     .build()?;
//!
//! q.send("hello".to_string()).unwrap();
//! let first = q.try_receive().unwrap();
//! assert_eq!(first.body(), "hello");
//!
//! // Not settled in time: the receipt has expired and the message comes back, counted.
//! clock.advance(Duration::from_secs(31));
//! assert_eq!(q.delete(first.receipt()), Err(ReceiptError::Expired));
//! let second = q.try_receive().unwrap();
//! assert_eq!(second.receive_count(), 2);
//! // Once redelivered, the old receipt is stale.
//! assert_eq!(q.delete(first.receipt()), Err(ReceiptError::Stale));
//! q.delete(second.receipt()).unwrap();
//! assert!(q.try_receive().is_none());
//! # Ok::<(), visq::BuildError>(())
//! ```
//!
//! # How it works
//!
//! The crate has three layers, one folder each, and each uses only the ones below it:
//!
//! * `core/`: the lock-free core: the queue and what it is made of (slots, rings, timing
//!   wheel, waiters, clock, the loom-swappable `sync` door), with the records and counters kept
//!   beside the slots (death records, stats, latency histograms).
//! * `backend/`: the [`Backend`] trait (what a queue must offer for the patterns to run on
//!   it), the in-process queue as one, and the broker adapters behind cargo features.
//! * `patterns/`: lease guard, worker pool, pub/sub, request-reply, deduplication, built on
//!   the core's public API or on any [`Backend`].
//!
//! The algorithm, its states and who may write what are documented module by module (the
//! slot lifecycle word and body ownership in `core::slot`, the rings in `core::ring`, the
//! timing wheel in `core::wheel`, parking in `core::waiters`, the races between operations in
//! `core::queue`); each folder's `mod.rs` says what lives there and what it may use. Build the
//! docs with `--document-private-items` to read them.
#![warn(missing_docs, unsafe_op_in_unsafe_fn, rust_2018_idioms)]

// The layers, bottom up: each may use those before it, never those after.
mod backend;
mod core;
mod patterns;

pub use crate::backend::contract::{
    Accepted, Backend, BackendError, Capabilities, CountKind, Feature, Handle, Incoming, Limit,
    MessageKey, Outgoing, ReceiveCount, Refused,
};
#[cfg(feature = "rabbitmq")]
pub use crate::backend::rabbitmq::{RabbitMq, RabbitMqBuilder, RabbitMqTopic};
#[cfg(feature = "sqs")]
pub use crate::backend::sqs::{Sqs, SqsBuilder};
#[cfg(feature = "json")]
pub use crate::backend::typed::Json;
pub use crate::backend::typed::{Codec, DecodeError, EncodeError, Typed, Utf8};
pub use crate::core::async_front::{Deliveries, NextDelivery, ReceiveAsync, SendAsync, Timer};
pub use crate::core::builder::Builder;
pub use crate::core::clock::ManualClock;
pub use crate::core::dead_letters::{DeadLetter, Redriven};
pub use crate::core::deaths::{DeathCause, Nack, QueueId};
pub use crate::core::error::{BuildError, InvalidSend, ReceiptError, SendError};
pub use crate::core::message::{Delivery, MessageId, Receipt, Taken};
pub use crate::core::metrics::{Latencies, Latency};
pub use crate::core::queue::Queue;
pub use crate::core::send_options::{GroupKey, SendOptions};
pub use crate::core::stats::{Memory, Rates, Stats};
pub use crate::patterns::async_consumer::{AsyncConsumer, AsyncStopper};
pub use crate::patterns::consumer::{
    Backoff, Consumer, ConsumerBuilder, ConsumerSource, ConsumerStats,
};
pub use crate::patterns::dead_letter_tools as dead_letters;

pub use crate::patterns::dedup::{
    dedup_hash, DedupBuildError, DedupBuilder, DedupQueue, DedupSendError, DedupStats, Sent,
};
pub use crate::patterns::lease::{BackendLease, Lease, LeaseSource};
pub use crate::patterns::request_reply::{
    responder, CorrelationId, PendingReply, Reply, Request, RequestError, Requester, TimedOut,
};
pub use crate::patterns::topic::{
    PublishError, SubscriberQueue, Subscription, SubscriptionId, Topic,
};

use std::time::Duration;

/// The longest visibility timeout, lease extension or send delay: 12 hours.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);

/// The shortest timing-wheel tick ([`Builder::tick`]): 1 µs. A slot keeps its deadline tick
/// in 48 bits, which at this tick is 8.9 years of a queue's life.
pub const MIN_TICK: Duration = Duration::from_micros(1);

/// The longest message time-to-live ([`Builder::message_ttl`], [`SendOptions::ttl`]): 14 days,
/// SQS's longest retention period.
pub const MAX_MESSAGE_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// The most priority levels a queue can have ([`Builder::priorities`]).
pub const MAX_PRIORITY_LEVELS: u8 = 16;

/// The largest capacity a queue can be built with (2^28 messages): receipts name the slot in
/// 28 bits.
pub const MAX_CAPACITY: usize = 1 << crate::core::message::SLOT_BITS;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
