//! The patterns users reach for, built on the core's public API or on any
//! [`Backend`](crate::Backend).
//!
//! Each module here uses the [`Queue`](crate::Queue) only through its public methods, as a user
//! would (plus `core::sync`, so that atomics of their own are loom-checked too); none reaches
//! into slots, rings or the wheel. A pattern that needs something the public API cannot do gets
//! a public core operation first (as [`Queue::hand_back`](crate::Queue::hand_back) for work no
//! handler saw), never a private back door.
//!
//! | module | pattern |
//! |---|---|
//! | `lease` | [`Lease`](crate::Lease): a delivery that settles by being consumed, released on drop |
//! | `consumer` | [`Consumer`](crate::Consumer): worker pool and batch consumer (backoff, heartbeat, panic safety, graceful stop) |
//! | `dead_letter_tools` | [`visq::dead_letters`](crate::dead_letters): inspect and redrive dead letters on any backend |
//! | `async_consumer` | [`AsyncConsumer`](crate::AsyncConsumer): the async worker pool, `async fn` handlers up to a concurrency limit, on the queue's async front |
//! | `topic` | [`Topic`](crate::Topic): pub/sub fan-out to subscriber queues |
//! | `request_reply` | [`Requester`](crate::Requester) and [`responder`](crate::responder) |
//! | `dedup` | [`DedupQueue`](crate::DedupQueue): sends deduplicated by id within a window |
//!
//! # What runs on which backend
//!
//! | pattern | in-process [`Queue`](crate::Queue) | any [`Backend`](crate::Backend) (RabbitMQ, SQS, a [`Typed`](crate::Typed) layer) |
//! |---|---|---|
//! | [`Lease`](crate::Lease) | `Lease<'_, T>`, [`Queue::try_receive_lease`](crate::Queue::try_receive_lease) | [`BackendLease`](crate::BackendLease) (`Lease::new(&*backend, incoming)`); `extend`/`nack_after` refused where leases cannot change (RabbitMQ), the drop then releases |
//! | [`Consumer`](crate::Consumer) | [`Consumer::builder`](crate::Consumer::builder) | [`Consumer::backend_builder`](crate::Consumer::backend_builder): the same pool; no heartbeat where leases do not expire, the worker waits the backoff out where a nack cannot be delayed, hand-back charged where the backend charges it (see the `consumer` module docs) |
//! | dead-letter tools | [`Queue::dead_letters`](crate::Queue::dead_letters), [`Queue::redrive`](crate::Queue::redrive) (death records, nothing counted) | [`dead_letters::inspect`](crate::dead_letters::inspect), [`dead_letters::redrive`](crate::dead_letters::redrive) (by receiving: counted, at-least-once) |
//! | `Topic`, request-reply, `DedupQueue` | yes | in process only (a broker has its own fan-out and dedup ids: see its adapter) |
//!
//! Switching a consumer from in process to a broker is one line: `Consumer::builder(queue)`
//! becomes `Consumer::backend_builder(backend)`; a batch handler's `&[Lease<'_, T>]` becomes
//! `&[BackendLease<'_, T>]`.

use crate::ManualClock;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) mod async_consumer;
pub(crate) mod consumer;
// `pub` so that the crate root can re-export it whole, as `visq::dead_letters`.
pub mod dead_letter_tools;
pub(crate) mod dedup;
pub(crate) mod lease;
pub(crate) mod request_reply;
pub(crate) mod topic;

/// Locks `mutex`, ignoring poisoning: every section under the locks of the patterns leaves its
/// data whole.
fn lock<V>(mutex: &Mutex<V>) -> MutexGuard<'_, V> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a pattern's "now" comes from: the [`ManualClock`] its queue runs on (given to the
/// pattern's builder), or the monotonic clock, counted from the pattern's start.
#[derive(Debug)]
enum Clock {
    Monotonic(Instant),
    Manual(ManualClock),
}

impl Clock {
    fn new(manual: Option<ManualClock>) -> Self {
        match manual {
            Some(clock) => Self::Manual(clock),
            None => Self::Monotonic(Instant::now()),
        }
    }

    fn now(&self) -> Duration {
        match self {
            Self::Monotonic(start) => start.elapsed(),
            Self::Manual(clock) => clock.now(),
        }
    }

    /// [`Clock::now`] in nanoseconds, saturating.
    fn nanos(&self) -> u64 {
        u64::try_from(self.now().as_nanos()).unwrap_or(u64::MAX)
    }
}
