//! One message slot of the slab: its lifecycle word and the message it holds.
//!
//! # The lifecycle word
//!
//! Each slot has one `AtomicU64`, packed as
//!
//! | bits 63..28  | bits 27..2 | bits 1..0 |
//! |--------------|------------|-----------|
//! | epoch (36)   | tag (26)   | state (2) |
//!
//! | state      | body     | who owns the slot                                                    |
//! |------------|----------|----------------------------------------------------------------------|
//! | `Free`     | empty    | the free stack, or the thread that popped it from there              |
//! | `Ready`    | written  | the ready ring, or the thread that popped it, or the thread that made it ready and has not pushed it yet |
//! | `InFlight` | written  | nobody: any thread may try a CAS out of it (delete, release, hand_back, change_visibility with the receipt; expiry from the wheel) |
//! | `Delayed`  | written  | nobody: only the wheel's CAS to `Ready` leaves it                      |
//!
//! The *epoch* counts leases: a receive moves `Ready(e)` to `InFlight(e+1)` and hands out the
//! receipt `(slot, e+1)`. Every transition out of `InFlight` is a CAS whose expected value is
//! the whole word, so a receipt whose epoch or state does not match changes nothing. The epoch
//! is 36 bits and wraps: a receipt from 2^36 leases ago *of the same slot* would match again.
//! At 100 million leases per second spread over even 1,024 slots that takes about 8 days, so
//! a stale receipt would have to be kept that long; the receipt documents this.
//!
//! # Receipts of other queues
//!
//! A receipt names a slot and an epoch, not a queue, so another queue's receipt is refused
//! only if its epoch is not that of the slot's lease here. Queues used in lockstep (every
//! subscriber queue of a topic) lease the same slots in the same order, so their epochs must
//! not *count* the same: each queue starts all its slots at its own *epoch origin*
//! ([`epoch_origin`]), `seed + serial * W` modulo 2^36, where `serial` numbers the queues of
//! the process in build order ([`QueueId`](crate::QueueId)), `seed` is random per process and
//! `W` is 2^36 divided by the golden ratio (odd). Leasing changes only the epoch's count from
//! the origin, so a receipt of queue A matches the lease of the same slot in queue B only if
//! that slot's lease count in B differs from the receipt's in A by exactly `o_A - o_B`
//! (mod 2^36):
//!
//! * Queues in lockstep (equal counts) never match each other: their origins differ.
//! * Two queues built `n` apart (n < 2^16, checked by a unit test) have origins at least
//!   2^36 / (12 n) apart both ways round the circle: consecutive ones about 2.6e10, queues a
//!   thousand builds apart at least 5.7 million. A foreign receipt can match only after the
//!   two slots' lease counts have drifted apart by at least that much, and then only at the
//!   one exact drift while the lease is live.
//! * A receipt from another process (or a queue of an earlier run) has an origin independent of
//!   this one, so it matches a live lease with probability at most 2^-36 (about 1.5e-11) per
//!   use, as does an arbitrary `u64`.
//!
//! Under loom every origin is 0, so models can name the receipt a receive will issue.
//!
//! The *tag* means, in `InFlight`, the lease version: each `change_visibility` stores the new
//! deadline and then bumps the version by CAS, so an expiry that read the old deadline fails
//! its CAS and re-reads. In `Ready` and `Delayed` the tag records how the last lease ended
//! ([`ENDED_BY_EXPIRY`] or 0), which lets a late receipt tell "expired" from "settled". In
//! `Free` it is 0, or [`FILLING`] while a sender owns the slot.
//!
//! Three more `Ready` tag bits belong to message time-to-live ([`super::ttl`], whose module
//! docs give the protocol); a late receipt reads only the [`ENDED_BY_EXPIRY`] bit
//! ([`Word::ended_by`]), so they never make it answer `Stale` where it answered `Expired`:
//!
//! * `POPPED`: a thread owns the `Ready` slot outside the ready ring: a receiver that popped
//!   and claimed it, or the thread that ended its lease or delay and has not published it
//!   yet. The wheel leaves such a slot alone. Publishing it `Ready` clears the bit.
//! * `KILLED`: on a time-to-live queue, its time-to-live ended while it waited; its body
//!   belongs to whoever killed it (not to a popper), its index may still be in the ring.
//! * `BODY_GONE`: the killer is done with the body (moved or dropped). Whichever of the
//!   killer and the popper of the index comes second frees the slot.
//!
//! # The deadline
//!
//! `deadline` holds the tick at which the lease or the delay ends, stamped with the low 16 bits
//! of the epoch that set it: its owner sets it before publishing `InFlight` or `Delayed`, and a
//! `change_visibility` moves it only by a CAS from a value with its own lease's stamp
//! ([`Slot::change_deadline`]), so a call whose lease has ended cannot move the next lease's
//! deadline, even one equal to its own.
//!
//! # Who may touch the body
//!
//! Only the slot's owner (per the table): the sender writes it while it holds a `Free` slot
//! popped from the free stack; a receiver clones it while it holds a `Ready` slot popped from the
//! ready ring, *before* publishing `InFlight`; the winner of a CAS out of `InFlight` drops or
//! moves it. No thread ever reads the body of an `InFlight` slot, so a forged receipt racing a
//! receiver, or a receipt racing expiry, cannot free a body someone is reading.

use crate::core::sync::{AtomicU32, AtomicU64, Ordering, UnsafeCell};
use std::mem::MaybeUninit;

/// 2^36 divided by the golden ratio, made odd: successive multiples spread evenly round the
/// epoch circle (see the module docs).
const ORIGIN_STEP: u64 = 42_470_972_311;

/// The epoch at which every slot of the `serial`-th queue of the process starts; see the
/// module docs ("Receipts of other queues").
pub(crate) fn epoch_origin(serial: u64) -> u64 {
    if cfg!(loom) {
        return 0;
    }
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0u64)
    });
    seed.wrapping_add(serial.wrapping_mul(ORIGIN_STEP)) & EPOCH_MASK
}

/// The four lifecycle states; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Free = 0,
    Ready = 1,
    InFlight = 2,
    Delayed = 3,
}

const STATE_BITS: u32 = 2;
const TAG_BITS: u32 = 26;
pub(crate) const EPOCH_BITS: u32 = 36;
const TAG_SHIFT: u32 = STATE_BITS;
const EPOCH_SHIFT: u32 = STATE_BITS + TAG_BITS;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
pub(crate) const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;

/// Low bits of the epoch kept with each deadline (see [`Slot::change_deadline`]).
const STAMP_BITS: u32 = 16;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
/// The latest deadline tick a slot can hold: 2^48 - 1, 8.9 years of queue time at the
/// shortest tick, [`MIN_TICK`](crate::MIN_TICK).
pub(crate) const MAX_DEADLINE_TICK: u64 = u64::MAX >> STAMP_BITS;

/// `deadline` with the low bits of `epoch`.
fn stamped(deadline: u64, epoch: u64) -> u64 {
    debug_assert!(deadline <= MAX_DEADLINE_TICK);
    (deadline << STAMP_BITS) | (epoch & STAMP_MASK)
}

/// Tag of a non-`InFlight` slot whose last lease ended by expiry.
pub(crate) const ENDED_BY_EXPIRY: u32 = 1;

/// Tag of a `Free` slot that a sender has popped from the free stack and not yet published:
/// its message is counted in `Stats::sent` already, so `Queue::stats` counts it as held (see
/// `super::stats`, "How the totals are read"). Every other `Free` slot has tag 0.
pub(crate) const FILLING: u32 = 2;

/// A decoded lifecycle word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Word(u64);

impl Word {
    pub(crate) fn new(state: State, tag: u32, epoch: u64) -> Self {
        debug_assert!(u64::from(tag) <= TAG_MASK && epoch <= EPOCH_MASK);
        Self((epoch << EPOCH_SHIFT) | (u64::from(tag) << TAG_SHIFT) | state as u64)
    }

    pub(crate) fn state(self) -> State {
        match self.0 & STATE_MASK {
            0 => State::Free,
            1 => State::Ready,
            2 => State::InFlight,
            _ => State::Delayed,
        }
    }

    pub(crate) fn tag(self) -> u32 {
        ((self.0 >> TAG_SHIFT) & TAG_MASK) as u32
    }

    pub(crate) fn epoch(self) -> u64 {
        self.0 >> EPOCH_SHIFT
    }

    /// How the last lease ended, as a late receipt reads it: [`ENDED_BY_EXPIRY`] or 0 (the
    /// other tag bits of a `Ready` word are the time-to-live protocol's; see the module docs).
    pub(crate) fn ended_by(self) -> u32 {
        self.tag() & ENDED_BY_EXPIRY
    }

    /// The same epoch in another state with another tag.
    pub(crate) fn with(self, state: State, tag: u32) -> Self {
        Self::new(state, tag, self.epoch())
    }

    /// The next lease's word: `InFlight`, epoch + 1 (wrapping), version 0.
    pub(crate) fn next_lease(self) -> Self {
        Self::new(State::InFlight, 0, (self.epoch() + 1) & EPOCH_MASK)
    }

    /// The same lease with its version bumped (wrapping).
    pub(crate) fn next_version(self) -> Self {
        Self::new(
            State::InFlight,
            (self.tag() + 1) & TAG_MASK as u32,
            self.epoch(),
        )
    }
}

/// One slab slot. Fields other than the body are atomics so that stats can read them while
/// their owner writes them; see the module docs for who writes what.
///
/// Laid out for size: with an 8-byte body a slot is 48 bytes (the free-stack link fills what
/// would be the receive count's padding). Every field is read or written on the send and
/// receive paths (the id and `visible_since` too: a send writes both, a receive reads the id
/// for its delivery and reads and writes `visible_since` for the lease start), so they stay
/// together. A hot/cold split (a 32-byte slot, the id and timestamp in a 16-byte side array)
/// was measured in issue 10: same bytes per slot, the same cache misses per message with a
/// million held (callgrind's simulated caches: 2.1 D1 and 1.9 LL misses per send+receive+delete
/// either way), 18 more instructions per message, and no gain in one-producer/one-consumer
/// runs. Aligning slots to 64 bytes (against false sharing between neighbouring slots) cost
/// 16 bytes per slot and showed no difference either.
pub(crate) struct Slot<T> {
    word: AtomicU64,
    /// Tick at which the lease (`InFlight`) or the delay (`Delayed`) ends, stamped with the
    /// low bits of the epoch that wrote it (see [`Slot::change_deadline`]).
    deadline: AtomicU64,
    /// The message id (written by the sender).
    pub(crate) id: AtomicU64,
    /// While `Ready`: nanoseconds (queue time) since which the message has been receivable, for
    /// `Stats::oldest_ready_age`, and the earliest time its next lease may start: the start of
    /// its deadline's tick when the wheel made it ready (perhaps long after, if no operation
    /// ran the wheel), otherwise when it was published. While `InFlight`: when the lease began,
    /// for `Stats::oldest_in_flight_age` and latencies.
    pub(crate) visible_since: AtomicU64,
    /// Deliveries so far (written by the owner; a hand-back takes its delivery off again).
    pub(crate) receive_count: AtomicU32,
    /// While the slot is on the free stack: the slot below it (see [`super::free`]).
    pub(crate) next_free: AtomicU32,
    body: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    /// A `Free` slot whose first lease will have epoch `origin + 1`.
    pub(crate) fn new(origin: u64) -> Self {
        Self {
            word: AtomicU64::new(Word::new(State::Free, 0, origin).0),
            deadline: AtomicU64::new(0),
            id: AtomicU64::new(0),
            visible_since: AtomicU64::new(0),
            receive_count: AtomicU32::new(0),
            next_free: AtomicU32::new(0),
            body: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Sets the deadline of a slot the caller owns (before publishing the state that makes it
    /// live), stamped with `owned`'s epoch. A plain store: a late
    /// [`Slot::change_deadline`] of an earlier lease that lands after it fails on the stamp.
    /// `Release`, paired with that call's `Acquire` load: a late call that reads this value
    /// then reads a word no older than this one's owner had, so its next validation fails
    /// (without it, it could re-read its ended lease's word forever).
    ///
    /// Under loom the store is a swap: loom 0.7 does not hold a plain store to RMW atomicity
    /// (tokio-rs/loom#254: the store can squeeze between the read and the write of another
    /// thread's CAS), so it reports the late CAS overwriting this value, which the memory
    /// model rules out. The swap is the same write with that atomicity made explicit; on x86
    /// it would cost a locked instruction on every receive.
    #[inline]
    pub(crate) fn set_deadline(&self, owned: Word, deadline: u64) {
        let value = stamped(deadline, owned.epoch());
        if cfg!(loom) {
            self.deadline.swap(value, Ordering::AcqRel);
        } else {
            self.deadline.store(value, Ordering::Release);
        }
    }

    /// The deadline tick last set (read `Relaxed`: the caller orders it by the word it read
    /// before, or checks the word again after).
    #[inline]
    pub(crate) fn deadline(&self) -> u64 {
        self.deadline.load(Ordering::Relaxed) >> STAMP_BITS
    }

    /// Moves the deadline of `lease` to `deadline`, if the cell still holds a deadline of that
    /// lease: a CAS from a value stamped with its epoch. Returns the deadline it replaced;
    /// `None` if the cell belongs to another lease (this one has ended) or changed under the
    /// CAS (the caller re-validates).
    ///
    /// # Why the stamp
    ///
    /// The cell is shared by all the leases of the slot. A `change_visibility` reads its lease's
    /// deadline and CASes it; if meanwhile its lease ended and the next receive stored a deadline
    /// that happens to be *equal* (same tick: a release and a receive within one tick), a CAS on
    /// the bare tick would succeed and move the next lease's deadline (loom model 11b,
    /// `late_change_visibility_races_same_tick_release`, caught this). With the epoch's low 16
    /// bits in the value, the late CAS fails: the next lease's value carries another stamp. It
    /// could match again only 65,536 leases of the same slot later, *and* with a deadline in
    /// the very tick the late call read, all while that call is stalled between its load and
    /// its CAS (the same kind of wrap as the epoch's; see the module docs).
    #[inline]
    pub(crate) fn change_deadline(&self, lease: Word, deadline: u64) -> Option<u64> {
        let current = self.deadline.load(Ordering::Acquire);
        if current & STAMP_MASK != lease.epoch() & STAMP_MASK {
            return None;
        }
        self.deadline
            .compare_exchange(
                current,
                stamped(deadline, lease.epoch()),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .ok()
            .map(|replaced| replaced >> STAMP_BITS)
    }

    /// Publishes the owned slot (word `owned`) as `Delayed` with `tag` until tick `deadline`:
    /// the deadline is written first, so whoever sees `Delayed` reads this deadline. The caller
    /// then makes sure the wheel will visit the slot.
    #[inline]
    pub(crate) fn publish_delayed(&self, owned: Word, tag: u32, deadline: u64) {
        self.set_deadline(owned, deadline);
        self.store(owned.with(State::Delayed, tag));
    }

    #[inline]
    pub(crate) fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// Publishes `word`; only the slot's owner may store (everyone else uses [`Self::cas`]).
    #[inline]
    pub(crate) fn store(&self, word: Word) {
        self.word.store(word.0, Ordering::Release);
    }

    /// Compare-and-swap of the whole word; on failure returns the current word.
    #[inline]
    pub(crate) fn cas(&self, current: Word, new: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(current.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Word)
    }

    /// Sets `bits` in the tag (an atomic OR, so racing setters of different bits each learn
    /// what the other did first); returns the word before.
    #[inline]
    pub(crate) fn set_tag_bits(&self, bits: u32) -> Word {
        Word(
            self.word
                .fetch_or(u64::from(bits) << TAG_SHIFT, Ordering::AcqRel),
        )
    }

    /// Reads the word of a slot that the caller has exclusive access to (`&mut`).
    pub(crate) fn word_exclusive(&mut self) -> Word {
        self.load()
    }

    /// Moves `body` into the slot.
    ///
    /// # Safety
    /// The caller owns the slot and its body is empty (a `Free` slot it popped from the free
    /// stack, or a body it took out with [`Self::take_body`]).
    #[inline]
    pub(crate) unsafe fn write_body(&self, body: T) {
        // SAFETY: the caller owns the slot, so no other thread accesses the cell now.
        self.body.with_mut(|cell| unsafe { (*cell).write(body) });
    }

    /// Clones the body.
    ///
    /// # Safety
    /// The caller owns the slot (it popped it from the ready ring) and the body is written.
    #[inline]
    pub(crate) unsafe fn clone_body(&self) -> T
    where
        T: Clone,
    {
        // SAFETY: the body is initialised (precondition) and no other thread writes or drops it
        // while the caller owns the slot, so a shared reference is valid for the clone.
        self.body
            .with(|cell| unsafe { (*cell).assume_init_ref().clone() })
    }

    /// Moves the body out, leaving the slot's body empty.
    ///
    /// # Safety
    /// The caller owns the slot, the body is written, and the caller will not read it again
    /// before writing a new one.
    #[inline]
    pub(crate) unsafe fn take_body(&self) -> T {
        // SAFETY: initialised and exclusively accessed (preconditions); the caller treats the
        // cell as empty afterwards, so the value is moved out exactly once.
        self.body
            .with_mut(|cell| unsafe { (*cell).assume_init_read() })
    }

    /// Drops the body in place, leaving it empty.
    ///
    /// # Safety
    /// As for [`Self::take_body`].
    #[inline]
    pub(crate) unsafe fn drop_body(&self) {
        // SAFETY: initialised and exclusively accessed (preconditions); dropped exactly once
        // because the caller treats the cell as empty afterwards.
        self.body
            .with_mut(|cell| unsafe { (*cell).assume_init_drop() });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn word_fields_round_trip(state in 0u8..4, tag in 0u32..(1 << TAG_BITS), epoch in 0u64..(1 << EPOCH_BITS)) {
            let state = [State::Free, State::Ready, State::InFlight, State::Delayed][state as usize];
            let word = Word::new(state, tag, epoch);
            prop_assert_eq!(word.state(), state);
            prop_assert_eq!(word.tag(), tag);
            prop_assert_eq!(word.epoch(), epoch);
        }
    }

    /// The bound the module docs give: queues built `n` apart start at least 2^36 / (12 n)
    /// apart on the epoch circle, in both directions.
    #[test]
    fn epoch_origins_of_queues_built_n_apart_are_far_apart() {
        for n in 1..1u64 << 16 {
            let gap = epoch_origin(n).wrapping_sub(epoch_origin(0)) & EPOCH_MASK;
            let distance = gap.min((1 << EPOCH_BITS) - gap);
            assert!(distance * 12 * n >= 1 << EPOCH_BITS, "n = {n}: {distance}");
        }
    }

    #[test]
    fn epoch_and_version_wrap() {
        let last = Word::new(State::Ready, 0, EPOCH_MASK);
        assert_eq!(last.next_lease(), Word::new(State::InFlight, 0, 0));
        let lease = Word::new(State::InFlight, TAG_MASK as u32, 5);
        assert_eq!(lease.next_version(), Word::new(State::InFlight, 0, 5));
    }
}
