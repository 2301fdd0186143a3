//! The in-process [`Queue`] as a [`Backend`]: the trait's calls mapped onto the queue's own.
//!
//! | trait | queue |
//! |---|---|
//! | `send_batch` | `send`, or `send_delayed` for an entry with a delay, or `send_with` a [`SendOptions::group`] for an entry with a group (on a queue built with [`Builder::message_groups`](crate::Builder::message_groups)) |
//! | `receive` | `receive` for the first message (the long poll), `try_receive` for the rest; a `visibility` other than the queue's is a `change_visibility` right after |
//! | `delete`, `change_visibility`, `release`, `hand_back` | the same-named calls |
//! | `dead_letter` | [`Queue::reject`] |
//! | `dead_letter_queue` | the queue given to [`Builder::dead_letter`](crate::Builder::dead_letter) |
//!
//! The queue has no deduplication ids or attributes (a [`DedupQueue`](crate::DedupQueue)
//! deduplicates in process), and message groups only when built with them: an entry with any
//! of these it lacks is refused with [`BackendError::Unsupported`] and its body handed back.
//! A grouped queue keeps a group's 64-bit [`GroupKey`](crate::GroupKey), not its name, so
//! [`Incoming::group`] is `None` on a receive. Receipts of other backends are
//! [`BackendError::Stale`].
//!
//! The trait's `Vec`s and [`Handle`]s cost what they cost; code that needs the queue's
//! allocation-free hot path calls the queue directly.

use super::contract::{
    Accepted, Backend, BackendError, Capabilities, CountKind, Feature, Handle, Incoming, Limit,
    MessageKey, Outgoing, Refused,
};
use crate::{Delivery, Queue, ReceiptError, SendError, SendOptions, MAX_TIMEOUT};
use std::sync::Arc;
use std::time::Duration;

impl<T: Clone + Send + Sync + 'static> Backend for Queue<T> {
    type Body = T;

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch: self.capacity(),
            max_body_bytes: None,
            max_delay: Some(MAX_TIMEOUT),
            max_visibility: MAX_TIMEOUT,
            max_wait: MAX_TIMEOUT,
            extend_lease: true,
            shorten_lease: true,
            leases_expire: true,
            receive_count: CountKind::Exact,
            native_dead_letter: self.max_receives().is_some(),
            uncharged_hand_back: true,
            groups: self.group_lanes().is_some(),
            dedup: false,
            attributes: false,
        }
    }

    fn send_batch(&self, batch: Vec<Outgoing<T>>) -> Vec<Result<Accepted, Refused<T>>> {
        batch
            .into_iter()
            .map(|entry| self.send_one(entry))
            .collect()
    }

    fn send(&self, message: Outgoing<T>) -> Result<Accepted, Refused<T>> {
        self.send_one(message)
    }

    fn receive(
        &self,
        out: &mut Vec<Incoming<T>>,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<usize, BackendError> {
        Backend::capabilities(self).check_receive(wait, visibility)?;
        if max == 0 {
            return Ok(0);
        }
        let mut taken = 0;
        let mut next = self.receive(wait);
        while let Some(delivery) = next {
            if let Some(visibility) = visibility.filter(|v| *v != self.visibility_timeout()) {
                // Only this receiver knows the receipt yet; a refusal means the lease is
                // already over, so the message is not ours to hand out.
                if Queue::change_visibility(self, delivery.receipt(), visibility).is_err() {
                    next = self.next_if_wanted(taken, max);
                    continue;
                }
            }
            out.push(incoming(delivery));
            taken += 1;
            next = self.next_if_wanted(taken, max);
        }
        Ok(taken)
    }

    fn delete(&self, receipt: &Handle) -> Result<(), BackendError> {
        let receipt = receipt.as_local().ok_or(BackendError::Stale)?;
        Queue::delete(self, receipt).map_err(receipt_error)
    }

    fn change_visibility(&self, receipt: &Handle, timeout: Duration) -> Result<(), BackendError> {
        BackendError::check_duration(Limit::VisibilityMillis, MAX_TIMEOUT, timeout)?;
        let receipt = receipt.as_local().ok_or(BackendError::Stale)?;
        Queue::change_visibility(self, receipt, timeout).map_err(receipt_error)
    }

    fn release(&self, receipt: &Handle) -> Result<(), BackendError> {
        let receipt = receipt.as_local().ok_or(BackendError::Stale)?;
        Queue::release(self, receipt).map_err(receipt_error)
    }

    fn hand_back(&self, receipt: &Handle) -> Result<(), BackendError> {
        let receipt = receipt.as_local().ok_or(BackendError::Stale)?;
        Queue::hand_back(self, receipt).map_err(receipt_error)
    }

    fn dead_letter(&self, receipt: &Handle, reason: &str) -> Result<(), BackendError> {
        let receipt = receipt.as_local().ok_or(BackendError::Stale)?;
        self.reject(receipt, reason.to_owned())
            .map_err(receipt_error)
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn Backend<Body = T>>> {
        Queue::dead_letter_queue(self).map(|queue| Arc::clone(queue) as Arc<dyn Backend<Body = T>>)
    }

    fn dead_letter_limit(&self) -> Option<u32> {
        self.max_receives()
    }

    fn is_closed(&self) -> bool {
        Queue::is_closed(self)
    }
}

impl<T: Clone> Queue<T> {
    /// One entry of a trait send: refused whole if it asks for what the queue lacks.
    fn send_one(&self, entry: Outgoing<T>) -> Result<Accepted, Refused<T>> {
        let missing = if entry.group.is_some() && self.group_lanes().is_none() {
            Some(Feature::Groups)
        } else if entry.dedup_id.is_some() {
            Some(Feature::Dedup)
        } else if !entry.attributes.is_empty() {
            Some(Feature::Attributes)
        } else {
            None
        };
        if let Some(feature) = missing {
            return Err(Refused {
                error: BackendError::Unsupported(feature),
                body: entry.body,
            });
        }
        let sent = if let Some(group) = &entry.group {
            let options = SendOptions::new().group(group).delay(entry.delay);
            self.send_with(entry.body, &options)
        } else if entry.delay.is_zero() {
            Queue::send(self, entry.body)
        } else {
            self.send_delayed(entry.body, entry.delay)
        };
        let delay = entry.delay;
        sent.map(|id| Accepted {
            id: MessageKey::local(id),
        })
        .map_err(|refused| {
            let error = match &refused {
                SendError::Full(_) => BackendError::Full,
                SendError::Closed(_) => BackendError::Closed,
                SendError::DelayTooLong(_) => {
                    BackendError::duration_over(Limit::DelayMillis, MAX_TIMEOUT, delay)
                }
                SendError::Invalid(_, why) => BackendError::Fatal(why.to_string()),
            };
            Refused {
                error,
                body: refused.into_inner(),
            }
        })
    }

    /// The next message for a trait receive that has `taken` of `max`, without waiting.
    fn next_if_wanted(&self, taken: usize, max: usize) -> Option<Delivery<T>> {
        if taken < max {
            self.try_receive()
        } else {
            None
        }
    }
}

fn incoming<T>(delivery: Delivery<T>) -> Incoming<T> {
    Incoming {
        id: MessageKey::local(delivery.id()),
        receive_count: super::contract::ReceiveCount::Exact(delivery.receive_count()),
        handle: Handle::local(delivery.receipt()),
        attributes: Vec::new(),
        group: None,
        body: delivery.into_body(),
    }
}

fn receipt_error(error: ReceiptError) -> BackendError {
    match error {
        ReceiptError::Stale | ReceiptError::Expired => BackendError::Stale,
        // Timeouts are checked against MAX_TIMEOUT before any queue call.
        ReceiptError::TimeoutTooLong => BackendError::Fatal(error.to_string()),
        ReceiptError::NoDeadLetterQueue => BackendError::Unsupported(Feature::DeadLetter),
    }
}
