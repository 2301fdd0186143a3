//! Death records: why and when each held message died, kept per slot beside the slab.
//!
//! A queue that has a dead-letter queue, and a queue that is one, keep a *death record* per
//! slot ([`DeathRecords`], allocated by the source queue's `build`, never on a hot path). The
//! record follows the slot's owner rules (see [`super::slot`]): only the thread that owns
//! the slot at the moment reads or writes it.
//!
//! | queue role | slot                                   | record                                  |
//! |------------|----------------------------------------|-----------------------------------------|
//! | any        | `Free`                                 | `None`                                  |
//! | dead-letter queue | holds a message that died elsewhere | `Some`: written by the move, before the slot is published `Ready`; kept through later leases; dropped by `delete`, redrive, or a further move |
//! | source     | `Delayed`, waiting for room in a full dead-letter queue | `Some(death)` with `source` = this queue: kept for the retry, so the cause and reason survive the wait |
//! | source     | `Ready` and `KILLED` by its time-to-live (see `super::ttl`), waiting for room | the same, with cause `TimeToLive` |

use crate::core::error::{try_boxed_slice, OutOfMemory};
use crate::core::message::MessageId;
use crate::core::sync::UnsafeCell;
use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A queue's identity, unique in the process: tells which queue a dead letter died in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct QueueId(u64);

impl QueueId {
    /// A fresh identity.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The queue's number in build order within the process (from 1).
    pub(crate) fn serial(self) -> u64 {
        self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "queue#{}", self.0)
    }
}

/// How a message's last lease ended, when that end sent it to the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeathCause {
    /// Nobody settled the last lease before its deadline (a crashed or stuck handler).
    Expired,
    /// The last receiver gave the message back
    /// ([`Queue::release`](crate::Queue::release) or [`Queue::nack`](crate::Queue::nack)),
    /// with the reason it gave, if any.
    Released {
        /// The reason passed with [`Nack::reason`].
        reason: Option<Cow<'static, str>>,
    },
    /// A receiver sent it to the dead-letter queue on purpose, whatever its receive count
    /// ([`Queue::reject`](crate::Queue::reject)): a body that cannot be decoded, a message no
    /// retry can help.
    Rejected {
        /// The reason given to the reject.
        reason: Cow<'static, str>,
    },
    /// Its time-to-live ([`Builder::message_ttl`](crate::Builder::message_ttl) or
    /// [`SendOptions::ttl`](crate::SendOptions::ttl), counted from its send) ended while it
    /// waited to be received, ready or delayed (moved at most one tick after the deadline
    /// tick, with no receive needed), or before its lease ended (moved when the lease ended,
    /// never before: a lease is never cut short). Counted in
    /// [`Stats::ttl_expired`](crate::Stats::ttl_expired).
    TimeToLive,
}

/// How to give a delivery back with [`Queue::nack`](crate::Queue::nack): when it becomes
/// visible again, and why it failed (kept if this was its last receive and it goes to the
/// dead-letter queue).
///
/// ```
/// use std::time::Duration;
/// use visq::Nack;
/// let retry_later = Nack::after(Duration::from_secs(5)).reason("upstream timed out");
/// let now = Nack::now();
/// # let _ = (retry_later, now);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nack {
    pub(crate) delay: Duration,
    pub(crate) reason: Option<Cow<'static, str>>,
}

impl Nack {
    /// Visible again at once, like [`Queue::release`](crate::Queue::release).
    pub fn now() -> Self {
        Self::default()
    }

    /// Invisible for `delay` (at most [`MAX_TIMEOUT`](crate::MAX_TIMEOUT)), then visible.
    pub fn after(delay: Duration) -> Self {
        Self {
            delay,
            reason: None,
        }
    }

    /// Why the handler failed; recorded in the [`DeadLetter`](crate::DeadLetter) if the
    /// message dies of it. A `&'static str` costs nothing; a `String` is kept as given.
    pub fn reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// What is known about a message that died: where, which message, after how many receives,
/// when, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Death {
    pub(crate) source: QueueId,
    pub(crate) id: MessageId,
    pub(crate) receive_count: u32,
    /// Nanoseconds on the dead-letter queue's clock at the move; set when the move lands.
    pub(crate) died_at: u64,
    pub(crate) cause: DeathCause,
}

/// One death record per slot; see the module docs for who may touch which.
pub(crate) struct DeathRecords {
    cells: Box<[UnsafeCell<Option<Death>>]>,
}

impl DeathRecords {
    /// Bytes of the records (one per slot).
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.cells)
    }

    /// Empty records for `slots` slots; `OutOfMemory` if they cannot be allocated.
    pub(crate) fn new(slots: usize) -> Result<Self, OutOfMemory> {
        Ok(Self {
            cells: try_boxed_slice(slots, |_| UnsafeCell::new(None))?,
        })
    }

    /// Stores `death` as slot `index`'s record, dropping any older one.
    ///
    /// # Safety
    /// The caller owns slot `index` (see [`super::slot`]).
    pub(crate) unsafe fn put(&self, index: u32, death: Death) {
        // SAFETY: the slot's owner is the only thread touching its record (precondition).
        self.cells[index as usize].with_mut(|cell| unsafe { *cell = Some(death) });
    }

    /// Takes slot `index`'s record out, leaving `None`.
    ///
    /// # Safety
    /// As for [`Self::put`].
    pub(crate) unsafe fn take(&self, index: u32) -> Option<Death> {
        // SAFETY: as in `put`.
        self.cells[index as usize].with_mut(|cell| unsafe { (*cell).take() })
    }

    /// The queue slot `index`'s message died in, if it has a record.
    ///
    /// # Safety
    /// As for [`Self::put`].
    pub(crate) unsafe fn source(&self, index: u32) -> Option<QueueId> {
        // SAFETY: as in `put`.
        self.cells[index as usize].with(|cell| unsafe { (*cell).as_ref().map(|d| d.source) })
    }

    /// A copy of slot `index`'s record.
    ///
    /// # Safety
    /// As for [`Self::put`].
    pub(crate) unsafe fn get(&self, index: u32) -> Option<Death> {
        // SAFETY: as in `put`; a shared reference lives only for the clone.
        self.cells[index as usize].with(|cell| unsafe { (*cell).clone() })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_death_record_costs_at_most_a_cache_line_per_slot() {
        // Every slot of a queue that has or is a dead-letter queue carries one.
        let size = std::mem::size_of::<UnsafeCell<Option<Death>>>();
        println!("death record: {size} bytes per slot");
        assert!(size <= 64, "{size} bytes");
    }
}
