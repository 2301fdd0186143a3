//! The handles a caller gets for a message: its id, a receipt for one lease, and the delivery.

use crate::core::slot::{EPOCH_BITS, EPOCH_MASK};
use std::fmt;

/// A message's id, unique within its queue; ids grow in send order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct MessageId(pub(crate) u64);

impl MessageId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Proof of one lease on one message: a slot index and the lease's epoch.
///
/// A receipt is valid from its receive until the message is deleted, released, or its deadline
/// passes. Any other receipt, including one made from an arbitrary `u64`, is refused with an
/// error and changes nothing. Epochs are 36 bits: a receipt kept while the *same slot* is leased
/// 2^36 more times would become valid again, which at a hundred million leases a second on a
/// queue of a thousand slots takes about eight days.
///
/// A receipt of another queue is refused too. Each queue counts its epochs from its own origin,
/// so queues used in lockstep (the subscriber queues of a [`Topic`](crate::Topic)) never issue
/// the same receipts. Between two queues of one process, a receipt of one can match a lease of
/// the other only once the same slot's lease counts in the two queues have drifted apart by one
/// exact amount, at least 2^36 / (12 n) leases for queues built `n` apart (for n < 2^16); a
/// receipt from another process, or an arbitrary `u64`, matches a live lease with probability
/// at most 2^-36 (about 1.5e-11) per use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Receipt(u64);

/// Bits of a receipt that name the slot; the rest hold the epoch.
pub(crate) const SLOT_BITS: u32 = 64 - EPOCH_BITS;

impl Receipt {
    pub(crate) fn new(slot: u32, epoch: u64) -> Self {
        debug_assert!(u64::from(slot) < 1 << SLOT_BITS && epoch <= EPOCH_MASK);
        Self((epoch << SLOT_BITS) | u64::from(slot))
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 & ((1 << SLOT_BITS) - 1)) as usize
    }

    pub(crate) fn epoch(self) -> u64 {
        self.0 >> SLOT_BITS
    }

    /// The receipt as a number, for storing or sending elsewhere.
    pub fn to_u64(self) -> u64 {
        self.0
    }

    /// A receipt from a number made by [`Receipt::to_u64`]. Any `u64` is accepted; one that
    /// was never issued is refused by the queue with [`ReceiptError::Stale`](crate::ReceiptError).
    pub fn from_u64(value: u64) -> Self {
        Self(value)
    }
}

/// One delivery of a message: a clone of its body and the receipt for this lease.
///
/// Dropping a delivery does not delete the message; settle it with the receipt.
#[derive(Clone, Debug)]
pub struct Delivery<T> {
    pub(crate) id: MessageId,
    pub(crate) receipt: Receipt,
    pub(crate) receive_count: u32,
    pub(crate) body: T,
}

impl<T> Delivery<T> {
    /// The message's id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The receipt for this lease.
    pub fn receipt(&self) -> Receipt {
        self.receipt
    }

    /// How many times the message has been delivered, this delivery included (1 the first
    /// time).
    pub fn receive_count(&self) -> u32 {
        self.receive_count
    }

    /// The body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The body, by value.
    pub fn into_body(self) -> T {
        self.body
    }
}

/// A message removed from its queue as it was handed over, by
/// [`Queue::try_take`](crate::Queue::try_take) or [`Queue::take`](crate::Queue::take): an
/// at-most-once receive. It has no receipt: there is nothing left to settle.
#[derive(Debug)]
pub struct Taken<T> {
    pub(crate) id: MessageId,
    pub(crate) receive_count: u32,
    pub(crate) body: T,
}

impl<T> Taken<T> {
    /// The message's id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// How many times the message was handed out, this time included: 1 unless earlier
    /// leases of it (by a receive) ended without a delete.
    pub fn receive_count(&self) -> u32 {
        self.receive_count
    }

    /// The body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The body, moved out.
    pub fn into_body(self) -> T {
        self.body
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn receipt_round_trips(slot in 0u32..(1 << SLOT_BITS), epoch in 0u64..=EPOCH_MASK) {
            let receipt = Receipt::new(slot, epoch);
            prop_assert_eq!(receipt.slot(), slot as usize);
            prop_assert_eq!(receipt.epoch(), epoch);
            prop_assert_eq!(Receipt::from_u64(receipt.to_u64()), receipt);
        }
    }

    #[test]
    fn message_id_displays_as_number() {
        assert_eq!(MessageId(42).to_string(), "42");
        assert!(MessageId(1) < MessageId(2));
    }
}
