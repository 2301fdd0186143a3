//! Dead letters: looking at them without receiving them, and redriving them to a queue that
//! will process them again. Why each died is in its death record (`deaths`).
//!
//! # Looking and redriving without receiving
//!
//! [`Queue::dead_letters`] and [`Queue::redrive`] pop slot indices from the ready rings, the
//! highest priority level first (see [`super::ready`]), which makes the caller the slot's
//! owner exactly as a receive does, but they take no lease: a looked-at message goes back to
//! the tail of its level's ring unchanged (same epoch, receive count, ids and level), and a
//! redriven one is sent to the target (as a plain send: at level 0 there) and its slot freed. While one of
//! them holds a message, that message is invisible to receivers for the length of one clone or
//! send; a receiver that finds the ring empty meanwhile is woken by the push back. Each pop is
//! counted as not-a-delivery so that [`Stats::received`](crate::Stats) stays exact.

use crate::core::deaths::DeathCause;
use crate::core::deaths::QueueId;
use crate::core::error::SendError;
use crate::core::message::MessageId;
use crate::core::queue::{GiveBackOnUnwind, Queue};
use crate::core::ring::IndexRing;
use crate::core::slot::State;
use crate::core::stats::bump;
use std::collections::HashSet;
use std::time::Duration;

/// A dead letter as seen by [`Queue::dead_letters`]: a clone of its body and its death record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter<T> {
    /// A clone of the body.
    pub body: T,
    /// The queue it died in; compare with [`Queue::id`].
    pub source: QueueId,
    /// Its id in the queue it died in (the id its handlers saw).
    pub id: MessageId,
    /// How many times it had been received there.
    pub receive_count: u32,
    /// How long ago it was moved here, on this queue's clock.
    pub dead_for: Duration,
    /// How its last lease ended.
    pub cause: DeathCause,
}

/// The outcome of a redrive.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Redriven {
    /// Messages moved to the target (new messages there, receive count 0).
    pub moved: usize,
    /// Why the redrive stopped early, if it did: the target was full or closed. The message
    /// it refused is still here, unchanged.
    pub refused: Option<SendError<()>>,
}

impl<T> Queue<T> {
    /// Up to `max` of the dead letters visible in this queue (messages that died in another
    /// queue and were moved here), oldest first, without receiving them: receive counts,
    /// leases and order are left as they were. Messages sent here directly are skipped. On a
    /// queue with [priority levels](crate::Builder::priorities) the levels are looked at from
    /// the highest down, as receives take them (dead letters themselves arrive at level 0).
    ///
    /// Each message is held for the length of one clone, invisible to receivers meanwhile;
    /// messages leased or delayed now are not listed, nor those another `dead_letters` or
    /// `redrive` holds at that moment. The order is kept exactly when no receiver runs
    /// concurrently. O(visible messages); allocates the list and a set of the slots seen.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use visq::{DeathCause, ManualClock, Nack, Queue};
    ///
    /// let clock = ManualClock::new();
    /// let dlq: Arc<Queue<&str>> = Arc::new(Queue::builder().clock(clock.clone()).build()?);
    /// let q: Queue<&str> = Queue::builder()
    ///     .dead_letter(dlq.clone(), 1)
    ///     .clock(clock.clone())
    ///     .build()?;
    /// let id = q.send("bad input").unwrap();
    /// let d = q.try_receive().unwrap();
    /// q.nack(d.receipt(), Nack::now().reason("cannot parse")).unwrap();
    /// clock.advance(Duration::from_secs(60));
    ///
    /// let letters = dlq.dead_letters(10);
    /// assert_eq!(letters.len(), 1);
    /// assert_eq!((letters[0].body, letters[0].id, letters[0].source), ("bad input", id, q.id()));
    /// assert_eq!(letters[0].receive_count, 1);
    /// assert_eq!(letters[0].dead_for, Duration::from_secs(60));
    /// assert_eq!(letters[0].cause, DeathCause::Released { reason: Some("cannot parse".into()) });
    /// assert_eq!(dlq.try_receive().unwrap().receive_count(), 1); // still unreceived
    /// # Ok::<(), visq::BuildError>(())
    /// ```
    pub fn dead_letters(&self, max: usize) -> Vec<DeadLetter<T>>
    where
        T: Clone,
    {
        let mut letters = Vec::new();
        let Some(records) = self.deaths.get() else {
            return letters;
        };
        let now = self.time.now_nanos();
        self.visit_ready(|index| {
            if letters.len() == max {
                return Visit::Stop;
            }
            // SAFETY: `visit_ready` hands us slot `index` popped from the ready ring: we own it.
            if let Some(death) = unsafe { records.get(index) } {
                letters.push(DeadLetter {
                    // SAFETY: as above; the body of a `Ready` slot is written.
                    body: unsafe { self.slots[index as usize].clone_body() },
                    source: death.source,
                    id: death.id,
                    receive_count: death.receive_count,
                    dead_for: Duration::from_nanos(now.saturating_sub(death.died_at)),
                    cause: death.cause,
                });
            }
            Visit::Keep
        });
        letters
    }

    /// Moves up to `max` dead letters to `to`, as new messages there (receive count 0, new
    /// ids): every visible message here if `only_from` is `None`, else only those that died
    /// in the queue `only_from` names (to send them back to their source, pass its
    /// [`Queue::id`] and the queue itself as `to`). Stops early if `to` refuses one (full or
    /// closed); that message stays here, unchanged. The order of what stays is kept exactly
    /// when no receiver runs concurrently. On a queue with
    /// [priority levels](crate::Builder::priorities) the levels are taken from the highest
    /// down; a redriven message enters `to` at level 0, as a plain send. Allocates only its set
    /// of slots seen.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use visq::Queue;
    ///
    /// let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().build()?);
    /// let q: Queue<u32> = Queue::builder().dead_letter(dlq.clone(), 1).build()?;
    /// q.send(7).unwrap();
    /// q.release(q.try_receive().unwrap().receipt()).unwrap(); // dead on its first release
    /// assert!(q.try_receive().is_none());
    ///
    /// // The bug is fixed: send it back for another try.
    /// let redriven = dlq.redrive(&q, Some(q.id()), usize::MAX);
    /// assert_eq!((redriven.moved, redriven.refused), (1, None));
    /// let again = q.try_receive().unwrap();
    /// assert_eq!((*again.body(), again.receive_count()), (7, 1));
    /// # Ok::<(), visq::BuildError>(())
    /// ```
    pub fn redrive(&self, to: &Queue<T>, only_from: Option<QueueId>, max: usize) -> Redriven {
        let mut redriven = Redriven {
            moved: 0,
            refused: None,
        };
        let records = self.deaths.get();
        self.visit_ready(|index| {
            if redriven.moved == max {
                return Visit::Stop;
            }
            if let Some(only_from) = only_from {
                // SAFETY: `visit_ready` hands us slot `index`, owned (popped from the ready ring).
                let source = records.and_then(|records| unsafe { records.source(index) });
                if source != Some(only_from) {
                    return Visit::Keep;
                }
            }
            // SAFETY: as above; the body of a `Ready` slot is written, and it is either sent
            // on for good (the slot is then freed) or written back. Nothing in between can
            // unwind with the cell empty: `send` moves the body, never clones or drops it, and
            // the only user code it can run, the drop of `to`'s bodies killed by a time-to-live
            // when it runs `to`'s wheel, cannot unwind out of it (see `super::ttl`), so
            // `visit_ready`'s give-back guard cannot push an empty slot.
            let body = unsafe { self.slots[index as usize].take_body() };
            match to.send(body) {
                Ok(_) => {
                    redriven.moved += 1;
                    Visit::Remove
                }
                Err(refused) => {
                    redriven.refused = Some(refused.map(|body| {
                        // SAFETY: still the owner, and the cell is empty since the take.
                        unsafe { self.slots[index as usize].write_body(body) }
                    }));
                    Visit::Stop
                }
            }
        });
        redriven
    }
}

/// What [`Queue::visit_ready`] does with a message after looking at it.
pub(crate) enum Visit {
    /// Back to the tail of the ready ring, unchanged; go on.
    Keep,
    /// Its body has been moved out: free the slot (and its death record); go on.
    Remove,
    /// Back to the ring, unchanged; stop here.
    Stop,
}

impl<T> Queue<T> {
    /// Pops each message visible now once, level by level from the highest down (so in the
    /// order receives would take them when nothing else runs), and hands its slot to `look`,
    /// the owner until it answers. Stops when `look` says so. Within a level it also moves on
    /// to the next level at a slot it has already seen (the level's ring has come round) or
    /// after as many pops as that ring held when the level was reached; on an early stop the
    /// messages of that level not looked at are rotated past too, so the ring keeps its order.
    /// A message looked at goes back to the back of its own level. No pop is a delivery: each
    /// is counted in `not_received`.
    fn visit_ready(&self, mut look: impl FnMut(u32) -> Visit) {
        // Leases and delays that have ended are visible to a receive now, so here too.
        self.run_wheel_if_due(self.time.now_nanos());
        let mut seen = HashSet::new();
        for ring in self.ready.levels() {
            seen.clear();
            if !self.visit_level(ring, &mut seen, &mut look) {
                return;
            }
        }
    }

    /// [`Queue::visit_ready`] in one level's `ring`; false if `look` said stop.
    fn visit_level(
        &self,
        ring: &IndexRing,
        seen: &mut HashSet<u32>,
        look: &mut impl FnMut(u32) -> Visit,
    ) -> bool {
        // Every message in the ring now sits below position `end`, and the messages looked at
        // go back behind it, so the walk stops there. Positions, not a count of pops: a pop
        // on a time-to-live queue may pass over killed messages (see `super::ttl`).
        let end = ring.pushes();
        while let Some((index, _)) = self.pop_ready_before(ring, end) {
            bump(&self.counters.not_received);
            // `None`: seen already, the ring has come round.
            let visit = seen.insert(index).then(|| {
                // A panicking clone or send must not strand the message outside the ring.
                let give_back = GiveBackOnUnwind {
                    queue: self,
                    index,
                    count_not_received: false,
                };
                let visit = look(index);
                std::mem::forget(give_back);
                visit
            });
            match visit {
                Some(Visit::Keep) => self.push_back_ready(index),
                Some(Visit::Remove) => self.free_redriven(index),
                Some(Visit::Stop) | None => {
                    self.push_back_ready(index);
                    self.rotate_past(ring, end, seen);
                    return visit.is_none();
                }
            }
        }
        true
    }

    /// Moves the messages below position `end` from the head of the level `ring` to its tail,
    /// unlooked at, stopping once it has moved one in `seen` (the ring has come round:
    /// concurrent receives took some, and the order is then only as good as theirs).
    fn rotate_past(&self, ring: &IndexRing, end: u64, seen: &HashSet<u32>) {
        while let Some((index, _)) = self.pop_ready_before(ring, end) {
            bump(&self.counters.not_received);
            self.push_back_ready(index);
            if seen.contains(&index) {
                return;
            }
        }
    }

    /// Frees the owned slot `index`, whose body has been moved out, and its death record.
    fn free_redriven(&self, index: u32) {
        let slot = &self.slots[index as usize];
        if let Some(records) = self.deaths.get() {
            // SAFETY: the caller owns the slot.
            drop(unsafe { records.take(index) });
        }
        // Counted before the slot shows `Free`: see `super::stats` ("How the totals are read").
        bump(&self.counters.redriven);
        slot.store(slot.load().with(State::Free, 0));
        self.free_slot(index);
    }
}
