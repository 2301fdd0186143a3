//! Errors. Every error that refuses a body hands it back.

use std::fmt;

/// Memory that could not be allocated while building a queue. Every allocation of
/// [`Builder::build`](crate::Builder::build) is made through [`try_boxed_slice`], so a failed
/// one comes back as this (and then as [`BuildError::CapacityTooLarge`]), never as an abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

/// `len` values made by `make(index)`, in a boxed slice whose memory is reserved fallibly
/// (exactly `len`, so turning the vector into a box allocates nothing more).
pub(crate) fn try_boxed_slice<E>(
    len: usize,
    make: impl FnMut(usize) -> E,
) -> Result<Box<[E]>, OutOfMemory> {
    let mut values = Vec::new();
    values.try_reserve_exact(len).map_err(|_| OutOfMemory)?;
    values.extend((0..len).map(make));
    Ok(values.into_boxed_slice())
}

/// Why a queue could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// `capacity(0)`.
    ZeroCapacity,
    /// The capacity is over [`MAX_CAPACITY`](crate::MAX_CAPACITY) or its memory could not be
    /// allocated. The number is the capacity of the queue being built, or, when the memory
    /// that failed was the dead-letter queue's death records (made when a queue is first
    /// attached as a dead-letter queue), the dead-letter queue's capacity.
    CapacityTooLarge(usize),
    /// `tick(Duration::ZERO)`.
    ZeroTick,
    /// A tick shorter than [`MIN_TICK`](crate::MIN_TICK), but not zero.
    TickTooShort,
    /// The tick is longer than [`MAX_TIMEOUT`](crate::MAX_TIMEOUT).
    TickTooLong,
    /// The visibility timeout is zero or longer than [`MAX_TIMEOUT`](crate::MAX_TIMEOUT).
    InvalidVisibilityTimeout,
    /// `dead_letter(_, 0)`.
    ZeroMaxReceives,
    /// `priorities(levels)` with `levels` of 0 or over
    /// [`MAX_PRIORITY_LEVELS`](crate::MAX_PRIORITY_LEVELS).
    InvalidPriorityLevels(u8),
    /// `message_groups(0)`, or more lanes than [`MAX_CAPACITY`](crate::MAX_CAPACITY).
    InvalidGroupLanes(usize),
    /// A message time-to-live of zero or over [`MAX_MESSAGE_TTL`](crate::MAX_MESSAGE_TTL).
    InvalidMessageTtl,
    /// `message_ttl` together with `message_groups`: a message waiting behind its group's
    /// head cannot be expired on time without breaking the group's order, so the two are not
    /// offered together.
    TtlWithGroups,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroCapacity => write!(f, "capacity must be at least 1"),
            Self::CapacityTooLarge(n) => write!(
                f,
                "capacity {n} is over the maximum of {} or could not be allocated",
                crate::MAX_CAPACITY
            ),
            Self::ZeroTick => write!(f, "tick must be longer than zero"),
            Self::TickTooShort => write!(f, "tick must be at least MIN_TICK (1 µs)"),
            Self::TickTooLong => write!(f, "tick must not be longer than MAX_TIMEOUT"),
            Self::InvalidVisibilityTimeout => {
                write!(
                    f,
                    "visibility timeout must be longer than zero and at most MAX_TIMEOUT"
                )
            }
            Self::ZeroMaxReceives => write!(f, "dead-letter max_receives must be at least 1"),
            Self::InvalidPriorityLevels(levels) => write!(
                f,
                "priority levels must be 1 to {}, not {levels}",
                crate::MAX_PRIORITY_LEVELS
            ),
            Self::InvalidGroupLanes(lanes) => write!(
                f,
                "message group lanes must be 1 to {}, not {lanes}",
                crate::MAX_CAPACITY
            ),
            Self::TtlWithGroups => {
                write!(f, "message_ttl and message_groups cannot be used together")
            }
            Self::InvalidMessageTtl => {
                write!(
                    f,
                    "message time-to-live must be longer than zero and at most MAX_MESSAGE_TTL"
                )
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// Why a body was not queued. The body always comes back: see [`SendError::into_inner`].
#[derive(Clone, PartialEq, Eq)]
pub enum SendError<T> {
    /// The queue holds `capacity` messages.
    Full(T),
    /// The queue was closed.
    Closed(T),
    /// The delay is longer than [`MAX_TIMEOUT`](crate::MAX_TIMEOUT).
    DelayTooLong(T),
    /// A [`SendOptions`](crate::SendOptions) the queue cannot honour, and why.
    Invalid(T, InvalidSend),
}

/// Why [`Queue::send_with`](crate::Queue::send_with) refused its options
/// ([`SendError::Invalid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidSend {
    /// The priority is not below the queue's
    /// [`Builder::priorities`](crate::Builder::priorities) levels.
    PriorityOutOfRange {
        /// The priority asked for.
        priority: u8,
        /// The queue's levels (priorities `0..levels`).
        levels: u8,
    },
    /// A group on a queue built without
    /// [`Builder::message_groups`](crate::Builder::message_groups).
    NoMessageGroups,
    /// A delay on a grouped message: a group's messages are delivered in send order, so one
    /// cannot wait behind its own delay (as SQS FIFO queues refuse per-message delays).
    DelayedGroupMessage,
    /// A time-to-live on a queue built without
    /// [`Builder::message_ttl`](crate::Builder::message_ttl).
    NoMessageTtl,
    /// A time-to-live of zero or over [`MAX_MESSAGE_TTL`](crate::MAX_MESSAGE_TTL).
    TtlOutOfRange,
}

impl fmt::Display for InvalidSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PriorityOutOfRange { priority, levels } => write!(
                f,
                "priority {priority} is out of range: the queue has levels 0 to {}",
                levels - 1
            ),
            Self::NoMessageGroups => write!(f, "the queue was built without message groups"),
            Self::DelayedGroupMessage => write!(f, "a grouped message cannot be delayed"),
            Self::NoMessageTtl => write!(f, "the queue was built without a message time-to-live"),
            Self::TtlOutOfRange => {
                write!(
                    f,
                    "a time-to-live must be longer than zero and at most MAX_MESSAGE_TTL"
                )
            }
        }
    }
}

impl<T> SendError<T> {
    /// The body that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(body)
            | Self::Closed(body)
            | Self::DelayTooLong(body)
            | Self::Invalid(body, _) => body,
        }
    }

    /// The same refusal with the body changed by `f`: for callers that wrap bodies.
    ///
    /// ```
    /// use visq::SendError;
    /// let refused: SendError<(u32, &str)> = SendError::Full((7, "job"));
    /// assert_eq!(refused.map(|(_, job)| job), SendError::Full("job"));
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> SendError<U> {
        match self {
            Self::Full(body) => SendError::Full(f(body)),
            Self::Closed(body) => SendError::Closed(f(body)),
            Self::DelayTooLong(body) => SendError::DelayTooLong(f(body)),
            Self::Invalid(body, why) => SendError::Invalid(f(body), why),
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => write!(f, "Full(..)"),
            Self::Closed(_) => write!(f, "Closed(..)"),
            Self::DelayTooLong(_) => write!(f, "DelayTooLong(..)"),
            Self::Invalid(_, why) => write!(f, "Invalid(.., {why:?})"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => write!(f, "the queue is full"),
            Self::Closed(_) => write!(f, "the queue is closed"),
            Self::DelayTooLong(_) => write!(f, "the delay is longer than MAX_TIMEOUT"),
            Self::Invalid(_, why) => write!(f, "{why}"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why a receipt was refused. A refused receipt changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptError {
    /// The lease was settled (deleted or released), the message was delivered again or has
    /// left the queue (deleted, or moved to the dead-letter queue), or the receipt was never
    /// issued.
    Stale,
    /// The lease's deadline has passed (and the message is still in this queue, not yet
    /// delivered again).
    Expired,
    /// `change_visibility` was asked for a timeout over [`MAX_TIMEOUT`](crate::MAX_TIMEOUT).
    TimeoutTooLong,
    /// [`Queue::reject`](crate::Queue::reject) on a queue built without a dead-letter queue:
    /// the message would have nowhere to go.
    NoDeadLetterQueue,
}

impl fmt::Display for ReceiptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stale => write!(
                f,
                "the receipt is stale: settled, redelivered or never issued"
            ),
            Self::Expired => write!(f, "the lease's visibility deadline has passed"),
            Self::TimeoutTooLong => write!(f, "the timeout is longer than MAX_TIMEOUT"),
            Self::NoDeadLetterQueue => write!(f, "the queue has no dead-letter queue"),
        }
    }
}

impl std::error::Error for ReceiptError {}
