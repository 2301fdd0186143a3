//! A hierarchical timing wheel of slot deadlines, run by whichever queue operation claims it.
//!
//! # Shape
//!
//! `levels` levels of 256 buckets each (tokio's wheel has 64); a bucket of level `k` spans
//! `256^k` ticks. An entry is a slot index; each slot has at most one entry, linked into its
//! bucket's doubly linked list through the slot's [`Link`], so filing and unlinking are O(1) and
//! allocate nothing. An entry is filed at level `k` when its deadline shares all 8-bit digits
//! above `k` with `elapsed` (the tick the wheel has run up to) and differs at digit `k`. Hence
//! every entry of level `k` is later than every entry of level `k-1`, and the next bucket to run
//! is the first occupied one (found from a 256-bit `occupied` mask) of the lowest occupied level.
//! Running a bucket whose start has come either fires an entry (its filed tick has come) or
//! re-files it at a lower level (cascading). A deadline further away than half the wheel's range
//! is filed at the furthest half-range point and re-filed from there; the queue sizes the wheel
//! so that only a wheel that has been idle a long time ever does this.
//!
//! Each touch of an entry (filing it, re-filing it a level down, firing it) is a cache miss
//! once the pending entries outgrow the caches, so the width of a level is a trade: 256
//! buckets (1 KB of heads and a 4-word mask per level, 4 levels for 12 h at 1 ms) file every
//! deadline from 256 ms to 65 s at level 1, one cascade from firing; 64 buckets filed the
//! default 30 s timeout at level 2, two cascades from firing. The precision contract (at most
//! one tick late) needs an entry in a level-0 bucket, or at the exact start tick of a higher
//! bucket, before it fires, so one cascade is the fewest for a deadline beyond level 0.
//!
//! # The wheel never decides; the queue does
//!
//! The wheel does not know message states. When an entry's filed tick comes, it asks the queue's
//! `visit(slot, now)` callback, which reads the slot's *current* state and deadline: a settled
//! lease (the slot is free or ready) is dropped, an extended one answers its new deadline and is
//! re-filed, a due one is expired by the callback with a CAS (on a queue with a message
//! time-to-live, a waiting message's entry is also due at its expiry, and a ready one is
//! re-filed until then: see [`super::ttl`]). Settling a lease therefore never
//! unlinks anything, and the filed tick is only ever a lower bound of the real deadline.
//!
//! # Who may write what
//!
//! Everything but `Link::filed`'s readers and the inbox belongs to the thread that holds the
//! claim (`claimed`, taken by CAS into a [`Claim`] guard whose drop lets go with `Release`,
//! also when a visit unwinds): those fields are atomics accessed
//! `Relaxed` only so that the crate needs no `unsafe` here; the claim's acquire/release orders
//! them between successive owners. Threads that only file work never wait for the claim: they
//! leave it in the inbox, and the owner re-checks the inbox after releasing the claim. A
//! receive that needs due work another thread holds the wheel for waits for that run (see
//! [`super::queue`]); so the owner's visits must stay short and run no user code: they CAS
//! slot words, push to rings, and move a dead letter into the other queue by its own send
//! (which may run that queue's wheel, but never waits for a claim). No body is cloned or
//! dropped under the claim. Should a visit still panic (a broken invariant), the [`Claim`]
//! guard lets go; the entries of the bucket being run that were not visited yet are lost.
//!
//! # Telling the wheel about a new, earlier deadline
//!
//! A queue operation that sets a deadline (receive, change_visibility, send_delayed) stores it,
//! issues a `SeqCst` fence and reads `filed` for the slot. If the slot is filed at or before the
//! new deadline nothing more is needed (the entry fires first and is re-filed). Otherwise it
//! calls [`Wheel::notify`], which pushes the slot onto the inbox: a stack linked through the
//! slots' `Link::inbox_next` (no memory of its own, and never full), which any thread pushes
//! to and the owner takes whole with one swap. A slot is in it at most once: the notifier that
//! moves its `inbox_next` from `OUT` to `LINKING` by CAS pushes it, any later one finds it
//! marked and leaves, until the owner takes it out (it reads its link, then stores `OUT`).
//! The owner, before visiting an entry, stores `filed = NEVER` and fences; so either it reads the
//! new deadline, or the operation reads `NEVER` and notifies (Dekker's pattern: a `SeqCst`
//! fence on each side between its store and its load; the accesses themselves may be
//! `Relaxed`, so a visit costs one full barrier). An operation that reads an older `filed`
//! than the owner's latest store is covered the same way: what it read comes before the
//! owner's `NEVER`, so that visit reads its deadline. The inbox owner stores `OUT` before reading the deadline, for the same reason.
//!
//! A `change_visibility` that moved its lease's deadline earlier then runs the wheel itself
//! only if its deadline comes before `next_due` ([`Wheel::needs_run_for`]); otherwise the run
//! that `next_due` already calls for, at or before the deadline, drains the inbox first and
//! files it (or fires it, if its tick has come). (A new lease or delay runs the wheel at
//! once: its slot, unfiled in the inbox until then, would make every lease of it meanwhile
//! notice again.) The look at `next_due` comes after a fence that follows the push, against the
//! owner's store of `next_due`, letting go, fence and look at the inbox: either the notifier
//! sees that owner's `next_due` (and runs the wheel if it is later than its deadline), or the
//! owner's re-check sees the push and runs again. So a shortened lease (the common notice)
//! costs its caller a push, and the wheel's work on it is done in the next run, with others.
//!
//! A `change_visibility` that only moves its lease's deadline later (every value it replaced,
//! by CAS, was at or before its own) skips the fence and the look: the slot is filed at or
//! before the deadline it replaced (every deadline that moved earlier was noticed), or a notice
//! is pending whose visit reads the deadline afterwards, or the owner is visiting it and files
//! whichever of the two deadlines it reads; each is at or before the new one, so the entry
//! still comes first and is re-filed. Extending, what heartbeats do, then touches only the
//! slot (loom models 4c and `extend_races_wheel_firing`).
//!
//! # Waking sleepers: every change of `next_due`
//!
//! Parked receivers nap until `next_due` (see [`super::waiters`]), so every store that changes
//! it must be reported. Only the claim holder stores it, by a `swap` whose old value is the one
//! it replaces; [`Wheel::run`] returns whether any of its stores changed the value. Comparing
//! with a value read before taking the claim is wrong: one run may go round twice (the first
//! turn drops a settled lease, `D0 -> NEVER`; a notice left meanwhile makes the second file
//! `D`), and `D0 -> D` with `D > D0` looks like no news, while a receiver that read `NEVER`
//! between the turns sleeps its whole wait.

use crate::core::error::{try_boxed_slice, OutOfMemory};
use crate::core::sync::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

/// "No tick": not filed, or no deadline pending.
pub(crate) const NEVER: u64 = u64::MAX;
const NIL: u32 = u32::MAX;
/// `Link::inbox_next` of a slot that is not in the inbox.
const OUT: u32 = u32::MAX;
/// The inbox's bottom: `Link::inbox_next` of its last slot, and the empty inbox's top.
const END: u32 = u32::MAX - 1;
/// `Link::inbox_next` of a slot whose notifier has claimed it and is pushing it.
const LINKING: u32 = u32::MAX - 2;
/// Buckets per level: 256, so that a deadline up to 65 s away (at the default 1 ms tick: the
/// default 30 s visibility timeout included) is filed at level 1 and cascades once before it
/// fires, where 64 buckets filed it at level 2 and cascaded it twice (see "Shape").
const BUCKETS: u32 = 1 << DIGIT_BITS;
/// 64 buckets (one mask word) under loom: every atomic load is a scheduling point there, and
/// the four-word scan of each level pushed model 7 past loom's 1,000 branches per execution.
/// The models check the claim, the inbox and the fences, which do not depend on the width;
/// the multi-word mask is owner-only code, covered by the unit tests.
const DIGIT_BITS: u32 = if cfg!(loom) { 6 } else { 8 };
/// 64-bit words of a level's `occupied` mask.
const MASK_WORDS: usize = (BUCKETS / 64) as usize;

/// One slot's place in the wheel.
struct Link {
    /// The tick the slot is filed at, or `NEVER`. Written by the owner, read by anyone.
    filed: AtomicU64,
    /// The slot's place in the inbox: [`OUT`] while it is not in it, else the slot below it
    /// ([`END`] at the bottom, [`LINKING`] while its notifier is pushing it).
    inbox_next: AtomicU32,
    // Owner-only from here on.
    next: AtomicU32,
    prev: AtomicU32,
    bucket: AtomicU32,
}

struct Level {
    /// One bit per bucket, set while its list is not empty.
    occupied: [AtomicU64; MASK_WORDS],
    heads: [AtomicU32; BUCKETS as usize],
}

impl Level {
    /// Sets or clears `bucket`'s bit in `occupied` (owner only, so a load and a store: no
    /// locked instruction).
    fn mark(&self, bucket: u32, occupied: bool) {
        let word = &self.occupied[(bucket / 64) as usize];
        let bit = 1u64 << (bucket % 64);
        let bits = word.load(Ordering::Relaxed);
        word.store(
            if occupied { bits | bit } else { bits & !bit },
            Ordering::Relaxed,
        );
    }

    /// The first occupied bucket at or after `position`, going round.
    #[allow(clippy::modulo_one)] // one mask word under loom
    fn first_occupied_from(&self, position: u32) -> Option<u32> {
        let start = (position / 64) as usize;
        let low = position % 64;
        (0..=MASK_WORDS).find_map(|turn| {
            let index = (start + turn) % MASK_WORDS;
            let mut bits = self.occupied[index].load(Ordering::Relaxed);
            if turn == 0 {
                bits &= !0u64 << low; // at or after `position`
            } else if turn == MASK_WORDS {
                bits &= !(!0u64 << low); // back round to the bits before it
            }
            (bits != 0).then(|| index as u32 * 64 + bits.trailing_zeros())
        })
    }
}

/// The timing wheel; see the module docs.
pub(crate) struct Wheel {
    claimed: CachePadded<AtomicBool>,
    /// The earliest tick at which running the wheel can do anything (a lower bound of the next
    /// deadline), or `NEVER`. Published by the owner, read by every queue operation.
    next_due: CachePadded<AtomicU64>,
    /// The top of the inbox: a stack of notified slots, linked through `Link::inbox_next`
    /// (pushed by any thread, taken whole by the owner), or [`END`].
    inbox: CachePadded<AtomicU32>,
    elapsed: AtomicU64,
    levels: Box<[Level]>,
    links: Box<[Link]>,
}

/// The claim on a wheel: its holder alone runs it. Dropping the guard lets go (with `Release`,
/// so the next holder sees everything this one wrote), also when a visit unwinds.
pub(crate) struct Claim<'a>(&'a AtomicBool);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What the queue says about a slot whose filed tick has come: file it again at this tick, or
/// drop it (`None`).
pub(crate) type Refile = Option<u64>;

impl Wheel {
    /// Bytes of the wheel's per-slot links and its levels (allocated by `new`).
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.links) + std::mem::size_of_val(&*self.levels)
    }

    /// The number of levels needed so that half the wheel's range covers `max_ticks` (and at
    /// least one).
    pub(crate) fn levels_for(max_ticks: u64) -> u32 {
        let needed = u128::from(max_ticks) * 2 + 2;
        let mut levels = 1;
        while (1u128 << (DIGIT_BITS * levels)) < needed {
            levels += 1;
        }
        levels
    }

    /// A wheel for `slots` slots, starting at tick 0; `OutOfMemory` if its links or levels
    /// cannot be allocated.
    pub(crate) fn new(slots: usize, levels: u32) -> Result<Self, OutOfMemory> {
        let links = try_boxed_slice(slots, |_| Link {
            filed: AtomicU64::new(NEVER),
            inbox_next: AtomicU32::new(OUT),
            next: AtomicU32::new(NIL),
            prev: AtomicU32::new(NIL),
            bucket: AtomicU32::new(NIL),
        })?;
        let levels = try_boxed_slice(levels as usize, |_| Level {
            occupied: std::array::from_fn(|_| AtomicU64::new(0)),
            heads: std::array::from_fn(|_| AtomicU32::new(NIL)),
        })?;
        Ok(Self {
            claimed: CachePadded::new(AtomicBool::new(false)),
            next_due: CachePadded::new(AtomicU64::new(NEVER)),
            inbox: CachePadded::new(AtomicU32::new(END)),
            elapsed: AtomicU64::new(0),
            levels,
            links,
        })
    }

    /// Whether running the wheel at tick `now` could fire something.
    #[inline]
    pub(crate) fn is_due(&self, now: u64) -> bool {
        now >= self.next_due.load(Ordering::Acquire)
    }

    /// Whether some thread holds the claim now. It re-checks for due work before it stops
    /// running, and its run changes `next_due` if it fires or re-files anything, which the
    /// queue tells sleepers about: a receiver that needs its work waits for that.
    pub(crate) fn is_running(&self) -> bool {
        self.claimed.load(Ordering::SeqCst)
    }

    /// Takes the claim, if no other thread holds it. The claim is let go when the guard is
    /// dropped, on unwind too.
    pub(crate) fn claim(&self) -> Option<Claim<'_>> {
        self.claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            // Lazily: a guard made for a failed CAS would let go of another thread's claim.
            .then(|| Claim(&self.claimed))
    }

    /// The earliest tick at which the wheel may have work, or `NEVER`.
    pub(crate) fn next_due(&self) -> u64 {
        self.next_due.load(Ordering::Acquire)
    }

    /// Whether `slot` must be told about a new deadline `deadline` that was just stored: true
    /// unless it is already filed at or before it. The caller must have stored the deadline
    /// (and the state that makes it live) before calling.
    #[inline]
    pub(crate) fn needs_notice(&self, slot: u32, deadline: u64) -> bool {
        fence(Ordering::SeqCst);
        self.links[slot as usize].filed.load(Ordering::SeqCst) > deadline
    }

    /// Whether the wheel must run now for a slot just left in the inbox (by this thread or
    /// an earlier one) with deadline `deadline`: only if `deadline` comes before `next_due`.
    /// Otherwise the run that `next_due` calls for, at or before `deadline`, takes the slot out
    /// of the inbox first (see "Telling the wheel" in the module docs).
    pub(crate) fn needs_run_for(&self, deadline: u64) -> bool {
        // Pairs with the fence an owner issues between letting go and re-checking the inbox:
        // either this load sees the `next_due` that owner stored, or its re-check sees the
        // push.
        fence(Ordering::SeqCst);
        self.next_due.load(Ordering::SeqCst) > deadline
    }

    /// Leaves `slot` in the inbox for the owner to (re)file from its current deadline, unless
    /// it is there already.
    pub(crate) fn notify(&self, slot: u32) {
        let link = &self.links[slot as usize].inbox_next;
        // `SeqCst`: the owner clears the mark, fences and then reads the deadline; this
        // caller stored the deadline and fenced before its look at `filed`.
        if link
            .compare_exchange(OUT, LINKING, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        // A push onto a stack that is only ever pushed to or taken whole: no ABA (whatever
        // the top is when the CAS succeeds, the link stored before it names that top).
        let mut top = self.inbox.load(Ordering::Relaxed);
        loop {
            link.store(top, Ordering::Relaxed);
            match self
                .inbox
                .compare_exchange_weak(top, slot, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => top = now,
            }
        }
    }

    /// Runs the wheel up to the tick `now()` returns, if no other thread is running it; returns
    /// at once otherwise (that thread re-checks for new work when it lets go).
    ///
    /// `visit(slot, now)` is called for every slot whose filed tick has come and for every
    /// slot in the inbox; see the module docs for what it must answer. Returns `true` when
    /// this call changed the next due tick (see "Waking sleepers" in the module docs): the
    /// caller must then wake every sleeper, whose naps were computed from the old value.
    pub(crate) fn run(
        &self,
        now: impl Fn() -> u64,
        mut visit: impl FnMut(u32, u64) -> Refile,
    ) -> bool {
        // Orders the caller's inbox push before its look at `claimed`, pairing with the fence
        // an owner issues between letting go and re-checking the inbox.
        fence(Ordering::SeqCst);
        let mut changed = false;
        while let Some(claim) = self.claim() {
            // Never behind the run point: a reading may be earlier than the one an earlier run
            // went by (the time-stamp counter's may step back by up to twice its skew, several
            // ticks for a tick under a microsecond), and a deadline re-filed behind the run
            // point would wait a whole turn of its level. The run point is itself a reading
            // already made, so going by it fires nothing early.
            let tick = now().max(self.elapsed.load(Ordering::Relaxed));
            let filed = self.drain_inbox(tick, &mut visit);
            // `next_due` is never later than the first occupied bucket's start (every turn
            // ends by storing that start, or the earlier of the old value and the starts of
            // the entries it filed). So when even the earlier of it and `filed` is still to
            // come, no bucket is due: skip the search of the levels, twice.
            let next = self.next_due.load(Ordering::Relaxed).min(filed);
            let next = if next <= tick {
                self.run_buckets(tick, &mut visit);
                self.first_bucket().map_or(NEVER, |(_, _, start)| start)
            } else {
                debug_assert!(self.first_bucket().map_or(NEVER, |(_, _, start)| start) >= next);
                self.advance_to(tick);
                next
            };
            // Only the claim holder writes `next_due`, so the value replaced is the one every
            // sleeper computed its nap from since the last store: compare with that, never with
            // a value read before the claim (which several turns of this loop may have moved).
            changed |= self.next_due.swap(next, Ordering::SeqCst) != next;
            drop(claim);
            // Work left while we held the claim: notices (pushed after our drain) or time that
            // passed. Whoever pushed it saw the claim taken and left; take it again.
            fence(Ordering::SeqCst);
            if self.inbox.load(Ordering::SeqCst) == END && !self.is_due(now()) {
                break;
            }
        }
        changed
    }

    /// Visits every slot in the inbox; returns the earliest start of the buckets it filed
    /// them in (`NEVER` if none).
    fn drain_inbox(&self, now: u64, visit: &mut impl FnMut(u32, u64) -> Refile) -> u64 {
        let mut earliest = NEVER;
        let mut next = self.inbox.swap(END, Ordering::Acquire);
        while next != END {
            let slot = next;
            let link = &self.links[slot as usize];
            // Read before the slot leaves the inbox: a notifier may push it again at once.
            next = link.inbox_next.load(Ordering::Relaxed);
            // Relaxed: the fence in `visit_and_refile` orders it before the deadline's read.
            link.inbox_next.store(OUT, Ordering::Relaxed);
            if link.filed.load(Ordering::Relaxed) != NEVER {
                self.unlink(slot);
            }
            if let Some(start) = self.visit_and_refile(slot, now, visit) {
                earliest = earliest.min(start);
            }
        }
        earliest
    }

    /// Moves the run point to `now` when no bucket starts at or before it.
    fn advance_to(&self, now: u64) {
        self.elapsed.store(
            now.max(self.elapsed.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }

    fn run_buckets(&self, now: u64, visit: &mut impl FnMut(u32, u64) -> Refile) {
        while let Some((level, bucket, start)) = self.first_bucket() {
            if start > now {
                break;
            }
            self.elapsed.store(
                start.max(self.elapsed.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            let mut slot = self.take_bucket(level, bucket);
            while slot != NIL {
                let link = &self.links[slot as usize];
                let next = link.next.load(Ordering::Relaxed);
                let filed = link.filed.load(Ordering::Relaxed);
                if filed > now {
                    self.insert(slot, filed);
                } else {
                    self.visit_and_refile(slot, now, visit);
                }
                slot = next;
            }
        }
        self.advance_to(now);
    }

    /// Marks `slot` unfiled, then asks the queue what to do with it; returns the start of the
    /// bucket it is filed in again, if it is.
    fn visit_and_refile(
        &self,
        slot: u32,
        now: u64,
        visit: &mut impl FnMut(u32, u64) -> Refile,
    ) -> Option<u64> {
        // The fence, not the store's ordering, is what pairs with the fence of a thread that
        // sets a deadline (module docs): one full barrier per visit, not two.
        self.links[slot as usize]
            .filed
            .store(NEVER, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let deadline = visit(slot, now)?;
        debug_assert!(deadline > now, "visit answers only deadlines still to come");
        Some(self.insert(slot, deadline.max(now + 1)))
    }

    /// The first occupied bucket of the lowest occupied level: `(level, bucket, start tick)`.
    fn first_bucket(&self) -> Option<(usize, u32, u64)> {
        let elapsed = self.elapsed.load(Ordering::Relaxed);
        self.levels.iter().enumerate().find_map(|(level, l)| {
            let shift = DIGIT_BITS * level as u32;
            let position = ((elapsed >> shift) & u64::from(BUCKETS - 1)) as u32;
            let bucket = l.first_occupied_from(position)?;
            let span = 1u64 << shift;
            let level_start = elapsed & !((span << DIGIT_BITS) - 1);
            let mut start = level_start + u64::from(bucket) * span;
            if bucket < position {
                start += span << DIGIT_BITS; // the bucket's next turn
            }
            Some((level, bucket, start))
        })
    }

    /// Files `slot` at tick `at` (`at > elapsed`); returns the start of its bucket (later than
    /// `elapsed`: the entry's digits above its level are `elapsed`'s, and its digit at the
    /// level is greater).
    fn insert(&self, slot: u32, at: u64) -> u64 {
        let elapsed = self.elapsed.load(Ordering::Relaxed);
        let top = self.levels.len() - 1;
        let half_range = 1u64 << (DIGIT_BITS * (top as u32 + 1) - 1);
        let placed = at.min(elapsed + half_range);
        let differing = (elapsed ^ placed) | u64::from(BUCKETS - 1);
        let level = ((63 - differing.leading_zeros()) / DIGIT_BITS) as usize;
        let level = level.min(top);
        let bucket = ((placed >> (DIGIT_BITS * level as u32)) & u64::from(BUCKETS - 1)) as u32;

        let link = &self.links[slot as usize];
        let head = &self.levels[level].heads[bucket as usize];
        let old_head = head.load(Ordering::Relaxed);
        link.next.store(old_head, Ordering::Relaxed);
        link.prev.store(NIL, Ordering::Relaxed);
        link.bucket
            .store(level as u32 * BUCKETS + bucket, Ordering::Relaxed);
        if old_head != NIL {
            self.links[old_head as usize]
                .prev
                .store(slot, Ordering::Relaxed);
        }
        head.store(slot, Ordering::Relaxed);
        self.levels[level].mark(bucket, true);
        // Relaxed: a thread that reads an older value (an earlier filing, or `NEVER`) is
        // covered by the fences; see "Telling the wheel" in the module docs.
        link.filed.store(placed, Ordering::Relaxed);
        placed & !((1u64 << (DIGIT_BITS * level as u32)) - 1)
    }

    /// Removes `slot` from its bucket's list.
    fn unlink(&self, slot: u32) {
        let link = &self.links[slot as usize];
        let (next, prev) = (
            link.next.load(Ordering::Relaxed),
            link.prev.load(Ordering::Relaxed),
        );
        let id = link.bucket.load(Ordering::Relaxed);
        let (level, bucket) = ((id / BUCKETS) as usize, id % BUCKETS);
        if prev == NIL {
            self.levels[level].heads[bucket as usize].store(next, Ordering::Relaxed);
            if next == NIL {
                self.levels[level].mark(bucket, false);
            }
        } else {
            self.links[prev as usize]
                .next
                .store(next, Ordering::Relaxed);
        }
        if next != NIL {
            self.links[next as usize]
                .prev
                .store(prev, Ordering::Relaxed);
        }
        // The visit that follows stores `NEVER` again and fences.
        link.filed.store(NEVER, Ordering::Relaxed);
    }

    /// Empties a bucket, returning the head of its list.
    fn take_bucket(&self, level: usize, bucket: u32) -> u32 {
        self.levels[level].mark(bucket, false);
        let head = &self.levels[level].heads[bucket as usize];
        let first = head.load(Ordering::Relaxed);
        head.store(NIL, Ordering::Relaxed);
        first
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    /// A wheel over `deadlines`, whose visit fires (records) due slots and re-files the rest.
    struct Harness {
        wheel: Wheel,
        deadlines: RefCell<Vec<u64>>,
        fired: RefCell<Vec<(u32, u64)>>,
        now: Cell<u64>,
    }

    impl Harness {
        fn new(slots: usize, levels: u32) -> Self {
            Self {
                wheel: Wheel::new(slots, levels).unwrap(),
                deadlines: RefCell::new(vec![NEVER; slots]),
                fired: RefCell::new(Vec::new()),
                now: Cell::new(0),
            }
        }

        fn set(&self, slot: u32, deadline: u64) {
            self.deadlines.borrow_mut()[slot as usize] = deadline;
            if self.wheel.needs_notice(slot, deadline) {
                self.wheel.notify(slot);
            }
        }

        fn run_to(&self, tick: u64) {
            self.now.set(tick);
            self.wheel.run(
                || self.now.get(),
                |slot, now| {
                    let deadline = self.deadlines.borrow()[slot as usize];
                    if deadline == NEVER {
                        None
                    } else if deadline > now {
                        Some(deadline)
                    } else {
                        self.deadlines.borrow_mut()[slot as usize] = NEVER;
                        self.fired.borrow_mut().push((slot, now));
                        None
                    }
                },
            );
        }
    }

    #[test]
    fn levels_cover_twice_the_span() {
        assert_eq!(Wheel::levels_for(0), 1);
        assert_eq!(Wheel::levels_for(127), 1);
        assert_eq!(Wheel::levels_for(128), 2);
        // 12 h at 1 ms.
        assert_eq!(Wheel::levels_for(43_200_000), 4);
    }

    #[test]
    fn every_deadline_fires_on_its_tick_stepping_one_tick_at_a_time() {
        let h = Harness::new(200, 3);
        let mut expected = BTreeMap::new();
        for slot in 0..200u32 {
            let deadline = 1 + u64::from(slot).pow(3) % 150_000;
            h.set(slot, deadline);
            expected.insert(slot, deadline);
        }
        h.run_to(0);
        for tick in 1..=150_001 {
            h.run_to(tick);
        }
        let fired: BTreeMap<u32, u64> = h.fired.borrow().iter().copied().collect();
        assert_eq!(fired, expected);
    }

    /// A run whose clock reading is behind the run point (the time-stamp counter's readings
    /// may step back by up to twice its skew after a re-anchor, several ticks when the tick is
    /// under a microsecond): a deadline between the reading and the run point is filed from
    /// the run point, not behind it, where it would wait a whole turn of a level.
    #[test]
    fn a_run_with_a_reading_behind_the_run_point_fires_at_most_one_tick_late() {
        let h = Harness::new(2, 2);
        h.run_to(0);
        h.run_to(256);
        h.set(0, 255); // set from a reading two ticks behind (tick 253)
        h.run_to(253);
        h.run_to(257);
        assert_eq!(
            h.fired.borrow().iter().map(|&(s, _)| s).collect::<Vec<_>>(),
            [0]
        );
        h.set(1, 250); // same level-1 digit as the run point: a turn of level 0 late before
        h.run_to(248);
        h.run_to(258);
        assert_eq!(h.fired.borrow().len(), 2);
    }

    #[test]
    fn jumping_ahead_fires_everything_due_and_nothing_else() {
        let h = Harness::new(4, 2);
        h.set(0, 5);
        h.set(1, 700);
        h.set(2, 4000);
        h.run_to(0);
        h.run_to(701);
        let fired: Vec<u32> = h.fired.borrow().iter().map(|&(s, _)| s).collect();
        assert_eq!(fired, vec![0, 1]);
        assert!(h.wheel.next_due() > 701 && h.wheel.next_due() <= 4000);
        h.run_to(3999);
        assert_eq!(h.fired.borrow().len(), 2);
        h.run_to(4000);
        assert_eq!(h.fired.borrow().len(), 3);
        assert_eq!(h.wheel.next_due(), NEVER);
    }

    #[test]
    fn shortening_refiles_and_extending_is_lazy() {
        let h = Harness::new(2, 3);
        h.set(0, 10_000);
        h.run_to(0);
        // Shorter: needs a notice, fires on time.
        h.set(0, 50);
        h.run_to(49);
        assert!(h.fired.borrow().is_empty());
        h.run_to(50);
        assert_eq!(*h.fired.borrow(), vec![(0, 50)]);
        // Longer: no notice; the earlier entry is re-filed when it comes due.
        h.set(1, 100);
        h.run_to(60);
        assert!(!h.wheel.needs_notice(1, 300));
        h.set(1, 300);
        h.run_to(100);
        h.run_to(299);
        assert_eq!(h.fired.borrow().len(), 1);
        h.run_to(300);
        assert_eq!(h.fired.borrow()[1], (1, 300));
    }

    /// The inbox takes each notified slot once, however often it is notified before a run,
    /// visits every slot notified, and takes a slot again once a run has taken it out.
    #[test]
    fn the_inbox_visits_each_notified_slot_once() {
        let wheel = Wheel::new(8, 2).unwrap();
        for slot in [3, 5, 3, 0, 5, 7] {
            wheel.notify(slot);
        }
        let visits = |wheel: &Wheel| {
            let mut visited = Vec::new();
            wheel.run(
                || 0,
                |slot, _| {
                    visited.push(slot);
                    None
                },
            );
            visited.sort_unstable();
            visited
        };
        assert_eq!(visits(&wheel), vec![0, 3, 5, 7]);
        assert_eq!(visits(&wheel), Vec::<u32>::new());
        wheel.notify(3);
        assert_eq!(visits(&wheel), vec![3]);
    }

    #[test]
    fn a_visit_that_unwinds_lets_go_of_the_claim() {
        let h = Harness::new(2, 2);
        h.set(0, 5);
        h.run_to(0);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.wheel.run(|| 5, |_, _| panic!("a visit fails"))
        }));
        assert!(unwound.is_err());
        assert!(!h.wheel.is_running(), "the claim is let go on unwind");
        h.set(1, 7);
        h.run_to(7);
        assert_eq!(h.fired.borrow().as_slice(), &[(1, 7)], "the wheel runs on");
    }

    #[test]
    fn far_deadlines_are_clamped_and_refiled() {
        // One level: 256 ticks of range, half of it usable.
        let h = Harness::new(1, 1);
        h.set(0, 1_000);
        h.run_to(0);
        let mut tick = 0;
        while h.fired.borrow().is_empty() {
            tick += 7;
            h.run_to(tick);
        }
        assert_eq!(h.fired.borrow()[0].0, 0);
        assert!((1_000..1_007).contains(&h.fired.borrow()[0].1));
    }
}
