//! How one message is sent: [`SendOptions`] (delay, priority, message group, time-to-live) and
//! the [`GroupKey`] that names a message group.
//!
//! [`Queue::send_with`](crate::Queue::send_with) checks the options against what the queue
//! was built with ([`Builder::priorities`](crate::Builder::priorities),
//! [`Builder::message_groups`](crate::Builder::message_groups),
//! [`Builder::message_ttl`](crate::Builder::message_ttl)) and refuses, with the body handed
//! back, an option the queue cannot honour ([`SendError::Invalid`](crate::SendError::Invalid)).

use std::time::Duration;

/// The options of one send, for [`Queue::send_with`](crate::Queue::send_with). The default is
/// a plain [`Queue::send`](crate::Queue::send): no delay, priority 0, no group, the queue's
/// time-to-live.
///
/// ```
/// use std::time::Duration;
/// use visq::SendOptions;
/// let urgent = SendOptions::new().priority(3);
/// let in_order = SendOptions::new().group("customer-42");
/// let later = SendOptions::new().delay(Duration::from_secs(5));
/// # let _ = (urgent, in_order, later);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    pub(crate) delay: Duration,
    pub(crate) priority: u8,
    pub(crate) group: Option<GroupKey>,
    pub(crate) ttl: Option<Duration>,
}

impl SendOptions {
    /// A plain send's options, as a constant (the hot path builds none).
    pub(crate) const PLAIN: SendOptions = SendOptions {
        delay: Duration::ZERO,
        priority: 0,
        group: None,
        ttl: None,
    };

    /// A plain send's options (the [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Invisible until `delay` has passed on the queue's clock (at most
    /// [`MAX_TIMEOUT`](crate::MAX_TIMEOUT)), as [`Queue::send_delayed`](crate::Queue::send_delayed).
    pub const fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The priority level, `0` (the default, lowest) to `levels - 1` (highest) of a queue built
    /// with [`Builder::priorities`](crate::Builder::priorities)`(levels)`.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// The message group, on a queue built with
    /// [`Builder::message_groups`](crate::Builder::message_groups): the messages of one group
    /// are delivered in send order, one at a time.
    pub fn group(mut self, group: impl Into<GroupKey>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// This message's time-to-live, counted from its send, instead of the queue's
    /// [`Builder::message_ttl`](crate::Builder::message_ttl), shorter or longer; the same
    /// rules apply (see there). Only on a queue built with `message_ttl`
    /// ([`InvalidSend::NoMessageTtl`](crate::InvalidSend::NoMessageTtl) otherwise), more than
    /// 0 and at most [`MAX_MESSAGE_TTL`](crate::MAX_MESSAGE_TTL)
    /// ([`InvalidSend::TtlOutOfRange`](crate::InvalidSend::TtlOutOfRange)). With a delay, it
    /// counts from the send too: a message whose time-to-live ends during its delay is never
    /// delivered.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// The name of a message group: a 64-bit key. Strings are hashed to one with a fixed hash
/// (the same key in every process and run), so `"customer-42"` always names the same group.
///
/// ```
/// use visq::GroupKey;
/// assert_eq!(GroupKey::from("customer-42"), GroupKey::from("customer-42".to_string()));
/// assert_eq!(GroupKey::from(7u64).value(), 7);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey(u64);

impl GroupKey {
    /// The key as a number.
    pub fn value(self) -> u64 {
        self.0
    }
}

impl From<u64> for GroupKey {
    fn from(key: u64) -> Self {
        Self(key)
    }
}

impl From<&str> for GroupKey {
    /// FNV-1a over the name's bytes: a fixed function, so the same in every process, run and
    /// Rust release (which `DefaultHasher` does not promise).
    fn from(name: &str) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let key = name.bytes().fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        });
        Self(key)
    }
}

impl From<&String> for GroupKey {
    fn from(name: &String) -> Self {
        Self::from(name.as_str())
    }
}

impl From<String> for GroupKey {
    fn from(name: String) -> Self {
        Self::from(name.as_str())
    }
}
