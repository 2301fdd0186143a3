//! The patterns users reach for, built on the core's public API.
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
//! | `async_consumer` | [`AsyncConsumer`](crate::AsyncConsumer): the async worker pool, `async fn` handlers up to a concurrency limit, on the queue's async front |
//! | `topic` | [`Topic`](crate::Topic): pub/sub fan-out to subscriber queues |
//! | `request_reply` | [`Requester`](crate::Requester) and [`responder`](crate::responder) |
//! | `dedup` | [`DedupQueue`](crate::DedupQueue): sends deduplicated by id within a window |

use crate::ManualClock;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) mod async_consumer;
pub(crate) mod consumer;
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
