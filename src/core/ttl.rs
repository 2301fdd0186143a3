//! Message time-to-live: killing a message that waited too long, even inside the ready ring.
//!
//! A queue built with [`Builder::message_ttl`](crate::Builder::message_ttl) gives every
//! message an *expiry tick* at its send (`Ticks::deadline` of the send's exact time plus its
//! time-to-live, so never early), kept per slot in [`Ttl`] for the message's whole life in the
//! queue. A message whose expiry tick comes while it *waits* (`Ready` or `Delayed`) dies:
//! it moves to the dead-letter queue with [`DeathCause::TimeToLive`](crate::DeathCause), or,
//! on a queue without one, its body is dropped; both are counted in
//! [`Stats::ttl_expired`](crate::Stats). A leased (`InFlight`) message is never cut short: its
//! lease end (release, expiry, hand-back, nack) checks the expiry tick and kills it then
//! instead of making it visible. A plain queue has no [`Ttl`] (see "Cost" below).
//!
//! # The wheel
//!
//! While `Ready` or `Delayed`, a slot's wheel entry is due no later than its expiry tick: a
//! `Delayed` slot is filed at the earlier of its delay's end and its expiry, a `Ready` slot is
//! filed at its expiry when it is published. The wheel's visit of a `Ready` slot whose expiry
//! has come kills it. So a message dies at most one tick late with nobody receiving: any
//! operation that runs the wheel a tick after the expiry (a `stats()` call too) sees it gone.
//!
//! # The claim: receivers against the wheel
//!
//! On a plain queue the ready ring owns a `Ready` slot and its pop alone makes the popper the
//! owner, with no write to the slot's word. That cannot stay so here: the wheel must be able to
//! kill a message whose index sits in the ring, and a ring cannot remove an index from its
//! middle. So on a time-to-live queue a popper *claims* the slot: an atomic OR of the tag bit
//! `POPPED` into the word; the wheel kills with a CAS from the exact unclaimed `Ready` word to
//! one with `KILLED` set. Both change the word, so exactly one of them comes first:
//!
//! * the popper first: it owns the slot as on a plain queue (the wheel's CAS fails, and its
//!   visits of a `POPPED` slot only re-file it). If the message's expiry tick has come by
//!   then (the wheel has not run yet), the popper does not deliver it: it kills it itself
//!   (it owns body and index, so nobody else is involved), and pops again;
//! * the wheel first: it owns the body (moves it to the dead-letter queue, or hands it to
//!   `graves`, below), but the index is still in the ring. The slot is freed by whichever
//!   of the two parties comes second: the killer, when it is done with the body, ORs in
//!   `BODY_GONE`; the popper ORs in `POPPED`. Each reads the word as it was before its own OR:
//!   the one that finds the other's bit set frees the slot (and the popper pops again). A
//!   popper that finds `KILLED` never touches the body.
//!
//! A thread that ends a lease or a delay owns a `Ready` word that is in no ring yet; it sets
//! `POPPED` with its CAS (as every such CAS does, on every queue), so the wheel leaves the
//! slot to it. Publishing a slot `Ready` clears `POPPED` (and a popper that gives a slot back
//! to the ring, for a panicking clone or a dead-letter inspection, clears its claim first).
//!
//! # Bodies the wheel kills
//!
//! The wheel's claim holder runs no user code (see [`super::wheel`]), so it does not drop a
//! killed body: on a queue without a dead-letter queue it pushes the slot index to `graves`, a
//! ring sized for every slot, and the thread that ran the wheel drops the bodies there once
//! the claim is let go and no other thread holds it (every claim holder does this after its
//! run, so a grave waits at most until the end of the run that follows its push). That thread
//! may be in the middle of an operation of its own (a send into this queue from another
//! queue's dead-letter move or redrive, a receive about to lease), holding a body or a slot,
//! so a panic from a body's `Drop` there is caught and discarded: the slot was freed first,
//! and the body counts as dropped. One case
//! still drops user bodies under a claim: this queue's run nested in another queue's visit (a
//! move into this queue, as its dead-letter queue, runs its wheel) drops this queue's graves
//! under the other queue's claim; only a dead-letter queue with a time-to-live and no
//! dead-letter queue of its own does that. A move to the dead-letter queue is the dead-letter
//! queue's own send, as for every other move; a refused move keeps the body (`KILLED`, no
//! `BODY_GONE`: the wheel's) and is retried by the wheel, as other refused moves are. Stats count a killed slot whose body is still here as
//! `delayed` (as they count other messages waiting for a dead-letter move), and one whose
//! body is gone not at all.
//!
//! # Accounting
//!
//! `ttl_dropped` is bumped before `BODY_GONE` (or `Free`) is published, as `dead_lettered` is,
//! so `Stats::deleted = sent - held - dead_lettered - redriven - ttl_dropped` keeps the
//! argument of [`super::stats`] ("How the totals are read"). A move counts in `dead_lettered`,
//! and also in `ttl_dead_lettered` when its death record's cause is `TimeToLive` (a message
//! waiting for a move of another cause keeps that cause, whatever its expiry).
//!
//! # Capacity
//!
//! A killed slot whose index is still in the ready ring is reused once a popper reaches it.
//! Receivers pop it on their way; and every killer, once done with a body, pops the killed
//! indices at the head of the ring (never a live one: `IndexRing::pop_if`), so a queue that
//! nobody receives from gets its capacity back with no help from the senders, whose path
//! stays that of a plain queue. A slot killed behind a live message still waiting in the ring
//! is reused once that message is received (a claim that delivers sweeps the killed slots
//! now at the head) or dies; until then it counts against the capacity.
//!
//! # Cost
//!
//! A plain queue pays a test of the `Option` in three places: the send (one out-of-line call
//! does all of a time-to-live send), the publish of a ready message that is not a send, the
//! pop (the claim is out of line). Callgrind, single-threaded, capacity 1024, `ManualClock`
//! (issue 11, before and after TTL): send+receive+delete 396 -> 408 instructions, send+take
//! 212 -> 222 (with the TTL
//! code inlined it was +28 / +26). A time-to-live queue pays an exact clock reading per send,
//! the claim (an atomic OR) and an expiry check per pop, and a wheel entry per message: 631
//! and 444 instructions in the same runs. Why the claim rather than a ring that can remove
//! from its middle: the ready ring stays the plain queue's Vyukov ring, unchanged, and a
//! receive on a time-to-live queue pays one read-modify-write it would otherwise not.

use crate::core::deaths::DeathCause;
use crate::core::error::{try_boxed_slice, OutOfMemory};
use crate::core::queue::Queue;
use crate::core::ring::IndexRing;
use crate::core::send_options::SendOptions;
use crate::core::slot::{State, Word};
use crate::core::stats::bump;
use crate::core::sync::{AtomicU64, Ordering};
use crate::core::wheel::Refile;
use std::time::Duration;

/// `Ready` tag bit: a thread owns the slot outside the ready ring (see the module docs).
pub(crate) const POPPED: u32 = 4;
/// `Ready` tag bit: the message's time-to-live ended while it waited; the killer owns the body.
pub(crate) const KILLED: u32 = 8;
/// `Ready` tag bit: the killer is done with the body of a `KILLED` slot.
pub(crate) const BODY_GONE: u32 = 16;

/// Whether a slot with this word holds a body (on drop of the queue).
pub(crate) fn holds_body(word: Word) -> bool {
    word.state() != State::Free && word.tag() & BODY_GONE == 0
}

/// `word` as a popper publishes it back to the ready ring: its claim cleared.
pub(crate) fn unclaimed(word: Word) -> Word {
    word.with(word.state(), word.tag() & !POPPED)
}

/// A time-to-live queue's per-slot expiry ticks, default and graves.
pub(crate) struct Ttl {
    /// The default time-to-live (`Builder::message_ttl`).
    pub(crate) default: Duration,
    /// Per slot, the tick at which its message's time-to-live ends; written by the sender
    /// while it owns the slot, read by whoever reads the word after it was published.
    expires: Box<[AtomicU64]>,
    /// Slots killed by the wheel whose bodies wait to be dropped after its run; a queue with
    /// a dead-letter queue has none (its killed bodies move there).
    graves: Option<IndexRing>,
}

impl Ttl {
    /// The expiry ticks for `capacity` slots, and graves unless the queue has a dead-letter
    /// queue.
    pub(crate) fn new(
        capacity: usize,
        default: Duration,
        dead_letter: bool,
    ) -> Result<Self, OutOfMemory> {
        Ok(Self {
            default,
            expires: try_boxed_slice(capacity, |_| AtomicU64::new(0))?,
            graves: if dead_letter {
                None
            } else {
                Some(IndexRing::with_capacity(capacity)?)
            },
        })
    }

    /// Bytes of the expiry ticks and the graves (allocated by `new`).
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.expires)
            + self.graves.as_ref().map_or(0, IndexRing::heap_bytes)
    }

    #[inline]
    fn expires(&self, index: u32) -> u64 {
        self.expires[index as usize].load(Ordering::Relaxed)
    }
}

impl<T> Queue<T> {
    /// Publishes a message just sent into the owned slot `index` (word `free`, sent at
    /// `now`) on a time-to-live queue: sets its expiry tick from the send's `options` (the
    /// queue's default unless they name one, counted from the exact time now), then publishes
    /// it ready, or delayed, filed on the wheel at the earlier of its delay's end and its
    /// expiry. Out of line, so that a plain queue's send carries none of it.
    #[inline(never)]
    pub(crate) fn publish_sent_with_ttl(
        &self,
        index: u32,
        free: Word,
        now: u64,
        options: &SendOptions,
    ) {
        let Some(ttl) = &self.ttl else {
            return;
        };
        let length = options.ttl.unwrap_or(ttl.default);
        let expires = self.time.deadline(self.time.now_nanos(), length);
        ttl.expires[index as usize].store(expires, Ordering::Relaxed);
        if options.delay.is_zero() {
            self.publish_ready(index, free, now);
        } else {
            let deadline = self.time.deadline(now, options.delay);
            self.slots[index as usize].publish_delayed(free, 0, deadline);
            self.schedule(index, deadline.min(expires));
        }
    }

    /// Files the slot `index`, just published `Ready`, on the wheel at its expiry (a
    /// time-to-live queue's [`Queue::publish_ready`]); out of line, as
    /// [`Queue::publish_sent_with_ttl`].
    #[inline(never)]
    pub(crate) fn schedule_expiry(&self, index: u32) {
        if let Some(ttl) = &self.ttl {
            self.schedule(index, ttl.expires(index));
        }
    }

    /// The tick by which the wheel must visit the `Delayed` slot `index` whose delay ends at
    /// `deadline`: the earlier of that and its expiry.
    #[inline]
    pub(crate) fn delayed_until(&self, index: u32, deadline: u64) -> u64 {
        self.ttl
            .as_ref()
            .map_or(deadline, |ttl| deadline.min(ttl.expires(index)))
    }

    /// Whether the time-to-live of the message in slot `index` has ended at the tick `now`.
    #[inline]
    pub(crate) fn ttl_ended_at(&self, index: u32, now: u64) -> bool {
        self.ttl
            .as_ref()
            .is_some_and(|ttl| ttl.expires(index) <= now)
    }

    /// Whether the time-to-live of the message in slot `index` has ended now (the exact clock,
    /// read only near the expiry; see `Ticks::has_passed`).
    #[inline]
    pub(crate) fn ttl_ended(&self, index: u32) -> bool {
        self.ttl
            .as_ref()
            .is_some_and(|ttl| self.time.has_passed(ttl.expires(index)))
    }

    /// Pops the ready rings (the highest level first, as a receive does) and returns the index
    /// and word of the slot this thread now owns, as a receive or take needs it. On a
    /// time-to-live queue, claims it, passing over (and freeing, when second) killed slots and
    /// killing an expired one itself; the pops that deliver nothing are counted in
    /// `not_received`.
    #[inline(always)]
    pub(crate) fn pop_ready(&self) -> Option<(u32, Word)> {
        self.pop_and_claim(|| {
            let (_, index) = self.ready.pop(|| self.run_wheel_before_lower_levels())?;
            Some(index)
        })
    }

    /// [`Queue::pop_ready`] from one level's `ring` only, and only below its position `end`
    /// (a dead-letter inspection or redrive walks each level once, up to where it stood when
    /// the walk began; a pass over killed messages moves the position too).
    pub(crate) fn pop_ready_before(&self, ring: &IndexRing, end: u64) -> Option<(u32, Word)> {
        self.pop_and_claim(|| {
            if ring.pops() >= end {
                return None;
            }
            ring.pop().map(|(_, index)| index)
        })
    }

    /// One `pop`, claimed on a time-to-live queue (see [`Queue::pop_ready`]).
    #[inline(always)]
    fn pop_and_claim(&self, pop: impl Fn() -> Option<u32>) -> Option<(u32, Word)> {
        let index = pop()?;
        if self.ttl.is_some() {
            return self.claim_popped(index, pop);
        }
        Some((index, self.slots[index as usize].load()))
    }

    /// The claim of [`Queue::pop_ready`] on a time-to-live queue, from the popped `index` on;
    /// `pop` pops the next index when this one delivers nothing.
    #[inline(never)]
    fn claim_popped(&self, mut index: u32, pop: impl Fn() -> Option<u32>) -> Option<(u32, Word)> {
        loop {
            let slot = &self.slots[index as usize];
            let before = slot.set_tag_bits(POPPED);
            debug_assert_eq!(before.state(), State::Ready);
            debug_assert_eq!(before.tag() & POPPED, 0, "one popper per index");
            let claimed = before.with(State::Ready, before.tag() | POPPED);
            if before.tag() & KILLED == 0 && !self.ttl_ended(index) {
                // Killed slots queued right behind this one get their capacity back now.
                self.reclaim_killed();
                return Some((index, claimed));
            }
            bump(&self.counters.not_received);
            if before.tag() & KILLED == 0 {
                // Ours, and expired with the wheel not run yet: never delivered late.
                if let Some(retry_at) =
                    self.kill_owned(index, claimed, self.time.now_nanos(), false)
                {
                    self.schedule(index, retry_at);
                }
            } else if before.tag() & BODY_GONE != 0 {
                // The killer is done with the body: we come second and free the slot.
                self.free_killed(index, claimed);
            }
            index = pop()?;
        }
    }

    /// Kills the message in the owned, `Ready` slot `index` (word `owned`, `POPPED`, in no
    /// ring): moves it to the dead-letter queue and frees the slot, or, if the dead-letter
    /// queue refuses, leaves it `KILLED` for the wheel to retry at the returned tick. Without a
    /// dead-letter queue, drops the body and frees the slot, or, `in_visit` (the caller holds
    /// the wheel's claim and runs no user code), leaves the drop to the graves.
    pub(crate) fn kill_owned(&self, index: u32, owned: Word, now: u64, in_visit: bool) -> Refile {
        let slot = &self.slots[index as usize];
        let killed = owned.with(State::Ready, owned.tag() | POPPED | KILLED);
        if self.dead_letter_queue().is_some() {
            match self.try_dead_letter(index, now, DeathCause::TimeToLive) {
                Ok(()) => {
                    self.free_killed(index, killed);
                    None
                }
                Err(retry_at) => {
                    // From here the body is the wheel's (see the module docs).
                    slot.store(killed);
                    Some(retry_at)
                }
            }
        } else if in_visit {
            slot.store(killed);
            self.bury(index);
            None
        } else {
            // SAFETY: the caller owns the slot and its body is written; we move it out, and
            // the slot is freed (its body empty) before the drop.
            let body = unsafe { slot.take_body() };
            self.forget_record(index);
            // Counted before the slot shows `Free`: see `super::stats`.
            bump(&self.counters.ttl_dropped);
            self.free_killed(index, killed);
            drop(body);
            None
        }
    }

    /// The wheel's visit of the `Ready` slot `index` (word `word`) at tick `now`: kill it if
    /// its expiry has come, retry the move of a killed one the wheel owns, or answer when to
    /// look again; `Some(None)` at once on a plain queue. `None`: the word changed under the
    /// kill's CAS, so the caller must read it again (it may have been leased meanwhile).
    pub(crate) fn visit_ready_ttl(&self, index: u32, word: Word, now: u64) -> Option<Refile> {
        let Some(ttl) = &self.ttl else {
            return Some(None);
        };
        let tag = word.tag();
        let now_nanos = self.time.start_of(now);
        if tag & KILLED != 0 {
            if tag & BODY_GONE != 0 || ttl.graves.is_some() {
                return Some(None); // waiting for its popper, or in the graves
            }
            return Some(self.dead_letter_killed(index, now_nanos));
        }
        let expires = ttl.expires(index);
        if tag & POPPED != 0 {
            // Owned by a popper or by the thread that ended its lease: look again later (it
            // may be given back to the ring unexpired).
            return Some(Some(expires.max(now + 1)));
        }
        if expires > now {
            return Some(Some(expires));
        }
        let slot = &self.slots[index as usize];
        slot.cas(word, word.with(State::Ready, tag | KILLED)).ok()?;
        Some(match &ttl.graves {
            Some(_) => {
                self.bury(index);
                None
            }
            None => self.dead_letter_killed(index, now_nanos),
        })
    }

    /// Moves the body of the killed slot `index`, which the caller (the wheel's claim holder)
    /// owns, to the dead-letter queue; hands the slot off if it moved, or answers the retry.
    fn dead_letter_killed(&self, index: u32, now: u64) -> Refile {
        match self.try_dead_letter(index, now, DeathCause::TimeToLive) {
            Ok(()) => {
                self.hand_off(index);
                None
            }
            Err(retry_at) => Some(retry_at),
        }
    }

    /// The killer's end of the hand-off: the body is gone (counted); frees the slot if its
    /// index has been popped already, or else pops it (and any killed slots before it) if it
    /// is at the head of the ready ring.
    fn hand_off(&self, index: u32) {
        let slot = &self.slots[index as usize];
        let before = slot.set_tag_bits(BODY_GONE);
        if before.tag() & POPPED != 0 {
            self.free_killed(index, before);
        }
        self.reclaim_killed();
    }

    /// Frees the killed slot `index` (word `word`), whose body is gone and whose index is out
    /// of the ring: the second party of the hand-off, or a killer that popped it itself.
    fn free_killed(&self, index: u32, word: Word) {
        self.slots[index as usize].store(word.with(State::Free, 0));
        self.free_slot(index);
    }

    /// Drops the death record of the owned slot `index`, if the queue keeps them.
    fn forget_record(&self, index: u32) {
        if let Some(records) = self.deaths.get() {
            // SAFETY: the caller owns the slot.
            drop(unsafe { records.take(index) });
        }
    }

    /// Leaves the body of the killed slot `index` to the graves (the caller holds the wheel).
    fn bury(&self, index: u32) {
        let graves = self.ttl.as_ref().and_then(|t| t.graves.as_ref());
        let pushed = graves
            .expect("a queue without a dead-letter queue has graves")
            .push(index);
        debug_assert!(pushed.is_ok(), "the graves have room for every slot");
    }

    /// Drops the bodies in the graves, unless a thread holds the wheel (it may be this one,
    /// inside a visit; whoever holds it does this after its run). Called after every run.
    pub(crate) fn drop_graves(&self) {
        let Some(graves) = self.ttl.as_ref().and_then(|t| t.graves.as_ref()) else {
            return;
        };
        while !self.wheel.is_running() {
            let Some((_, index)) = graves.pop() else {
                return;
            };
            let slot = &self.slots[index as usize];
            // SAFETY: the killer handed the body over through the graves, and each index is
            // popped from there once: this thread owns it; the cell is empty afterwards
            // (`BODY_GONE`).
            let body = unsafe { slot.take_body() };
            self.forget_record(index);
            // Counted before `BODY_GONE` is published: see `super::stats`.
            bump(&self.counters.ttl_dropped);
            self.hand_off(index);
            // This runs at the end of any wheel run, inside operations that may own a slot or
            // hold a body of their own at that moment (a move into this queue as a dead-letter
            // queue, a redrive's send, a receive's lease): a panic from a body's `Drop` must not
            // unwind through them, so it is caught here and the body counts as dropped.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(body)));
        }
    }

    /// Pops killed slots off the head of each level's ready ring (never a live one) and frees those
    /// whose bodies are gone (the others are left to their killers): a killer's last step, so
    /// that a queue nobody receives from gets its capacity back.
    fn reclaim_killed(&self) {
        // Only a `Ready` word has these tag bits (an `InFlight` word's tag is its lease
        // version): a slot popped and leased meanwhile is never taken for a killed one (and
        // that pop has moved `head`, so this one's CAS would fail anyway).
        let is_killed = |index: u32| {
            let word = self.slots[index as usize].load();
            word.state() == State::Ready && word.tag() & KILLED != 0
        };
        for ring in self.ready.levels() {
            while let Some((_, index)) = ring.pop_if(is_killed) {
                bump(&self.counters.not_received);
                let before = self.slots[index as usize].set_tag_bits(POPPED);
                if before.tag() & BODY_GONE != 0 {
                    self.free_killed(index, before);
                }
            }
        }
    }
}
