//! Backends: one trait, so the same consumers run in process or on a broker.
//!
//! This layer sits between the core and the patterns: it may use the core; the patterns may use
//! it (the worker pool, the lease guard and the dead-letter tools run on any backend); the
//! core never does.
//!
//! | module | what it is |
//! |---|---|
//! | `contract` | the [`Backend`](crate::Backend) trait and the types it speaks: messages out and in, receipts ([`Handle`](crate::Handle)), [`Capabilities`](crate::Capabilities), [`BackendError`](crate::BackendError) |
//! | `in_process` | the in-process [`Queue`](crate::Queue) as a backend |
//! | `rabbitmq` | `RabbitMq`, `RabbitMqTopic` (feature `rabbitmq`): RabbitMQ quorum queues and a fanout exchange over lapin, behind the blocking trait |
//! | `sqs` | `Sqs` (feature `sqs`): Amazon SQS over aws-sdk-sqs, behind the blocking trait |
//! | `typed` | [`Typed`](crate::Typed): a backend of values over a backend of bytes, with a [`Codec`](crate::Codec) |
//!
//! A new backend is a new module here implementing the trait, behind its own cargo feature
//! when it needs dependencies the default build does not have.

pub(crate) mod contract;
pub(crate) mod in_process;
#[cfg(feature = "rabbitmq")]
pub(crate) mod rabbitmq;
#[cfg(feature = "sqs")]
pub(crate) mod sqs;
pub(crate) mod typed;
