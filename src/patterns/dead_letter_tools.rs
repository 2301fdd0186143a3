//! Dead-letter tools over any [`Backend`]: look at dead letters without consuming them, and
//! move them back to where they came from once the cause is fixed.
//!
//! Reached as `visq::dead_letters::{inspect, redrive}`. They take a backend's dead-letter
//! queue as a backend of its own ([`Backend::dead_letter_queue`], or a broker's DLQ built by
//! its adapter). The in-process queue keeps its own richer tools, which see the death records
//! and count nothing: [`Queue::dead_letters`](crate::Queue::dead_letters) and
//! [`Queue::redrive`](crate::Queue::redrive).
//!
//! Both work by receiving, so on a broker they count receives on the dead-letter queue and
//! hold what they look at for a short lease ([`TOOL_LEASE`]; none where leases do not expire).
//! They receive without waiting: a broker that samples on a short poll (SQS) may show fewer
//! than it holds; call again.

use crate::{Backend, BackendError, Incoming, Outgoing};
use std::time::Duration;

/// How long [`inspect`] and [`redrive`] lease what they receive, where leases expire: if the
/// process dies halfway, the dead letters are visible again this soon.
pub const TOOL_LEASE: Duration = Duration::from_secs(10);

/// Up to `max` of the messages in `dead_letters`, received and given back at once
/// ([`Backend::hand_back`]) so that they stay there: their handles are spent. Each look is a
/// receive, so it counts where the backend's hand-back is charged
/// ([`Capabilities::uncharged_hand_back`](crate::Capabilities::uncharged_hand_back)).
///
/// A receive that fails gives back what was received so far and returns the error.
///
/// ```
/// use std::sync::Arc;
/// use visq::{dead_letters, Backend, Queue};
///
/// let dlq: Arc<Queue<&str>> = Arc::new(Queue::builder().build()?);
/// let q: Queue<&str> = Queue::builder().dead_letter(dlq.clone(), 1).build()?;
/// q.send("poison").unwrap();
/// q.release(q.try_receive().unwrap().receipt()).unwrap(); // its one receive: dead
///
/// let dead = Backend::dead_letter_queue(&q).unwrap(); // through the trait, as on a broker
/// let letters = dead_letters::inspect(&*dead, 10)?;
/// assert_eq!(letters.len(), 1);
/// assert_eq!(letters[0].body, "poison");
/// assert_eq!(dlq.stats().ready, 1, "still there");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect<T>(
    dead_letters: &dyn Backend<Body = T>,
    max: usize,
) -> Result<Vec<Incoming<T>>, BackendError> {
    let mut seen = Vec::new();
    let received = receive_up_to(dead_letters, &mut seen, max);
    for letter in &seen {
        // A refusal means the lease is gone already: the message is visible again anyway.
        let _ = dead_letters.hand_back(&letter.handle);
    }
    received.map(|()| seen)
}

/// What a [`redrive`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveOutcome {
    /// Messages sent to the target (each then deleted from the dead-letter queue, or counted
    /// in `not_deleted`).
    pub moved: usize,
    /// Of those, the ones whose delete from the dead-letter queue failed: they are on the
    /// target *and* will be visible in the dead-letter queue again (at-least-once).
    pub not_deleted: usize,
    /// Why it stopped before `max`, if it did for an error: a receive that failed, or a send
    /// the target refused (that message was given back to the dead-letter queue, unchanged).
    pub stopped: Option<BackendError>,
}

/// Moves up to `max` messages from `from` (a dead-letter queue) to `to` (the queue they died
/// in, or any other): each is sent to `to` (body, attributes and group; delay none, receive
/// count starting afresh) and only then deleted from `from`, so none is ever lost. It is
/// at-least-once: a crash, or a delete that fails, between the two leaves a copy in both
/// ([`RedriveOutcome::not_deleted`]).
///
/// The first send `to` refuses stops the redrive: that message and the rest of its batch are
/// given back to `from`, and the refusal is in [`RedriveOutcome::stopped`].
///
/// ```
/// use std::sync::Arc;
/// use visq::{dead_letters, Backend, Queue};
///
/// let dlq: Arc<Queue<&str>> = Arc::new(Queue::builder().build()?);
/// let q: Arc<Queue<&str>> = Arc::new(Queue::builder().dead_letter(dlq.clone(), 1).build()?);
/// q.send("retry me").unwrap();
/// q.release(q.try_receive().unwrap().receipt()).unwrap(); // dead
///
/// let source: Arc<dyn Backend<Body = &str>> = q.clone();
/// let dead = source.dead_letter_queue().unwrap();
/// let outcome = dead_letters::redrive(&*dead, &*source, 10);
/// assert_eq!((outcome.moved, outcome.stopped), (1, None));
/// assert_eq!(*q.try_receive().unwrap().body(), "retry me");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn redrive<T>(
    from: &dyn Backend<Body = T>,
    to: &dyn Backend<Body = T>,
    max: usize,
) -> RedriveOutcome {
    let mut outcome = RedriveOutcome {
        moved: 0,
        not_deleted: 0,
        stopped: None,
    };
    let mut batch = Vec::new();
    while outcome.moved < max && outcome.stopped.is_none() {
        if let Err(error) = receive_up_to(from, &mut batch, max - outcome.moved) {
            outcome.stopped = Some(error);
        }
        if batch.is_empty() {
            break;
        }
        for letter in batch.drain(..) {
            if outcome.stopped.is_some() {
                let _ = from.hand_back(&letter.handle);
                continue;
            }
            let handle = letter.handle.clone();
            match to.send(resend(letter)) {
                Ok(_) => {
                    outcome.moved += 1;
                    if from.delete(&handle).is_err() {
                        outcome.not_deleted += 1;
                    }
                }
                Err(refused) => {
                    // Still leased here, unchanged: give it back for a later redrive.
                    let _ = from.hand_back(&handle);
                    outcome.stopped = Some(refused.error);
                }
            }
        }
    }
    outcome
}

/// Receives up to `max` from `backend` into `out` without waiting, in calls of at most its
/// batch size, each leased for [`TOOL_LEASE`]; stops at the first call that finds nothing.
fn receive_up_to<T>(
    backend: &dyn Backend<Body = T>,
    out: &mut Vec<Incoming<T>>,
    max: usize,
) -> Result<(), BackendError> {
    let capabilities = backend.capabilities();
    let visibility = capabilities
        .leases_expire
        .then(|| TOOL_LEASE.min(capabilities.max_visibility));
    let per_call = capabilities.max_batch.max(1);
    let start = out.len();
    while out.len() - start < max {
        let wanted = (max - (out.len() - start)).min(per_call);
        if backend.receive(out, wanted, Duration::ZERO, visibility)? == 0 {
            break;
        }
    }
    Ok(())
}

/// A dead letter as a new message: its body, attributes and group.
fn resend<T>(letter: Incoming<T>) -> Outgoing<T> {
    let mut message = Outgoing::new(letter.body);
    message.attributes = letter.attributes;
    message.group = letter.group;
    message
}
