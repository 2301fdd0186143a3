//! What the two model-based proptests share (`tests/model.rs`, the plain queue, and
//! `tests/model_features.rs`, priorities, groups and time-to-live): the reference's tick
//! arithmetic, the receipts the queue has handed out, the verdict on a receipt and its check,
//! and the check that ids grow in send order.

use proptest::prelude::*;
use std::collections::HashMap;
use visq::{MessageId, Receipt, ReceiptError};

/// The tick at `now` nanoseconds, for a tick of `tick_nanos`.
pub fn tick_at(now: u64, tick_nanos: u64) -> u64 {
    now / tick_nanos
}

/// The deadline tick of a wait of `after` nanoseconds from `now`, as the queue computes it:
/// rounded up to a tick, and never before the next tick.
pub fn deadline_at(now: u64, after: u64, tick_nanos: u64) -> u64 {
    (now + after)
        .div_ceil(tick_nanos)
        .max(tick_at(now, tick_nanos) + 1)
}

/// What the queue must answer to a receipt.
#[derive(Debug)]
pub enum Verdict {
    /// The current, unexpired lease of this message.
    Valid(usize),
    /// Refused with one of these errors.
    Refused(&'static [ReceiptError]),
}

/// Checks a settling operation's answer against the verdict; returns the message if the
/// receipt was valid.
pub fn check_verdict(
    got: Result<(), ReceiptError>,
    verdict: &Verdict,
    ctx: &str,
) -> Result<Option<usize>, TestCaseError> {
    match *verdict {
        Verdict::Valid(i) => {
            prop_assert_eq!(got, Ok(()), "valid receipt refused {}", ctx);
            Ok(Some(i))
        }
        Verdict::Refused(allowed) => {
            prop_assert!(
                matches!(got, Err(e) if allowed.contains(&e)),
                "got {:?}, want one of {:?} {}",
                got,
                allowed,
                ctx
            );
            Ok(None)
        }
    }
}

/// A receipt the queue handed out: for which message, and for which of its leases.
pub struct Issued {
    pub receipt: Receipt,
    pub msg: usize,
    pub lease: u32,
}

/// Every receipt the queue has handed out, in order, and by its raw value.
#[derive(Default)]
pub struct Receipts {
    pub issued: Vec<Issued>,
    by_raw: HashMap<u64, usize>,
}

impl Receipts {
    /// Records a receipt just handed out; fails if the queue had handed out the same one
    /// before.
    pub fn record(&mut self, issued: Issued, ctx: &str) -> Result<(), TestCaseError> {
        let raw = issued.receipt.to_u64();
        prop_assert!(
            !self.by_raw.contains_key(&raw),
            "receipt {:#x} issued twice {}",
            raw,
            ctx
        );
        self.by_raw.insert(raw, self.issued.len());
        self.issued.push(issued);
        Ok(())
    }

    /// The receipt with the raw value `raw`, and the lease it belongs to if it was ever
    /// handed out (a forged one belongs to none).
    pub fn lookup(&self, raw: u64) -> (Receipt, Option<(usize, u32)>) {
        match self.by_raw.get(&raw) {
            Some(&j) => {
                let issued = &self.issued[j];
                (issued.receipt, Some((issued.msg, issued.lease)))
            }
            None => (Receipt::from_u64(raw), None),
        }
    }
}

/// Checks that `id` comes after the last id sent (ids grow in send order), and makes it the
/// last.
pub fn check_id_grows(
    last: &mut Option<MessageId>,
    id: MessageId,
    ctx: &str,
) -> Result<(), TestCaseError> {
    prop_assert!(
        last.map_or(true, |last| id > last),
        "id {} not after {:?} {}",
        id,
        last,
        ctx
    );
    *last = Some(id);
    Ok(())
}
