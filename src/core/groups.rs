//! FIFO message groups: lanes of ordered messages, each letting one message out at a time.
//!
//! A queue built with [`Builder::message_groups`](crate::Builder::message_groups)`(lanes)` has
//! `lanes` lanes (a power of two). A grouped send hashes its [`GroupKey`] to a lane
//! ([`Lanes::lane_of`]); the lane keeps its messages in send order and lets exactly one of
//! them, its *head*, into the ready ring at a time. The head is receivable, leased, released,
//! expired, handed back or nacked like any message; only when it leaves for good (deleted,
//! moved to the dead-letter queue, taken, redriven away: every freeing goes through
//! `Queue::free_slot`) does the lane let the next one out, which joins the *back* of the ready
//! ring. So a lane never has two messages ready or leased, and lanes with work are served
//! round-robin by the ring's FIFO order.
//!
//! # A lane: an intrusive MPSC list and a token
//!
//! Each lane is Dmitry Vyukov's intrusive MPSC queue (non-blocking variant, with a stub node)
//! over slot indices, plus a `scheduled` flag, the lane's *token*:
//!
//! * **Nodes and links.** `links` has one `u32` per slot and one per lane (that lane's stub,
//!   node `capacity + lane`): the index of the node after it in its lane, or [`NONE`]. All
//!   fixed at build, so a send allocates nothing, and a group with no messages costs nothing
//!   (a group is only a key; its lane exists either way).
//! * **Push** (any sender): `link[node] = NONE; prev = tail.swap(node); link[prev] = node`.
//!   Between the swap and the link the push is *half done*: the list is cut at `prev`.
//! * **Pop** (the token holder only): from the lane's `first` node, skipping the stub; it
//!   returns a node only once the link after it is written, pushing the stub behind the last
//!   node when needed, so a popped node is out of the list for good (nothing links to or from
//!   it any more). Finding the list empty, or cut by a half-done push, it reports the node whose
//!   link it found missing.
//! * **The token.** Whoever holds `scheduled` (set) is the only one who may pop. A popped node
//!   is the lane's head: it is published to the ready ring and *keeps the token* for as long as
//!   it lives. Its link, no longer needed as a link, then holds [`HEAD_OF`]` | lane`, so that the
//!   thread that frees it ([`Lanes::leave`]) knows its lane without a field of its own; that
//!   thread inherits the token and pops the next.
//!
//! # The idle race, and why exactly one publishes
//!
//! A token holder that finds nothing to pop must give the token up, while a sender may be
//! pushing: its message must not be stranded (nobody publishes it) nor published twice (two
//! heads). The holder gives the token up (`scheduled.swap(false)`) and *then re-checks the link
//! it found missing*; the sender writes its link and *then* tries to take the token
//! (`scheduled.swap(true)`: it has it if the swap read `false`). Every write of the flag is a
//! read-modify-write (`AcqRel`), so the writes fall in one modification order, each reading the
//! one before it. Either the sender's swap comes after the holder's give-up: it reads `false`
//! and the sender takes the token and pops. Or it comes before: then the holder's swap reads
//! the sender's `true` (or a later swap's, which continues the sender's release sequence), so
//! the holder's re-check happens after the sender's link and sees it, and the holder tries to
//! take the token back and pops. If both happen, both swap and one reads `false`: at most one
//! popper at a time, and at least one whenever a linked message waits. (A store and a load on
//! each side would need `SeqCst` to exclude both missing each other, the store-buffer pattern;
//! the swaps need only acquire and release, which is also what loom models exactly.) A re-check can look at a node that moved on meanwhile (popped,
//! published, even freed and reused by another message); then it only takes the token when the
//! lane is idle, and a pop under the token is always right, so a spurious retry costs a pop and
//! nothing else. A half-done push whose sender is descheduled between its swap and its link
//! holds up its lane (only that lane; every other lane and the ungrouped messages go on) until
//! it links: there, and only there, groups wait on another thread, as Vyukov's queue does.
//! Loom models G1 to G3 (`loom-tests/tests/groups.rs`).
//!
//! # Lanes and groups
//!
//! Groups are hashed to lanes by Fibonacci hashing (the key times 2^64 / φ, the top bits), a
//! fixed function of key and lane count; groups that share a lane are delivered as one ordered
//! sequence (each in its own order, none in parallel with the others). Memory: per lane 12
//! bytes (its tail, its first node, its token; not padded, so neighbouring lanes share cache
//! lines), per slot and per lane a 4-byte link.

use crate::core::error::{try_boxed_slice, OutOfMemory};
use crate::core::send_options::GroupKey;
use crate::core::sync::{AtomicBool, AtomicU32, Ordering};

/// No node: the end of a list, and the link of a slot in no lane (free, or ungrouped).
const NONE: u32 = u32::MAX;
/// Set in the link of a lane's head (published, out of the list) above the lane's number. Slot
/// and lane numbers are below 2^28 (`MAX_CAPACITY`), so a node index never has it set.
const HEAD_OF: u32 = 1 << 31;
/// 2^64 / φ, odd: Fibonacci hashing's multiplier, which spreads keys that differ in any bit
/// over the top bits.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// One lane: the two ends of its list and its token.
struct Lane {
    /// The node pushed last (the producers' end). Starts at the lane's stub.
    tail: AtomicU32,
    /// The node to pop from (the token holder's end; only the holder reads or writes it, and
    /// the token's hand-over orders those accesses). Starts at the lane's stub.
    first: AtomicU32,
    /// The token: set while a thread pops or the lane's head is out (ready or leased).
    scheduled: AtomicBool,
}

/// The lanes of a grouped queue and the links of its slots. See the module docs.
pub(crate) struct Lanes {
    lanes: Box<[Lane]>,
    /// `capacity` slot links, then one stub link per lane.
    links: Box<[AtomicU32]>,
    /// The number of slots: the stub of lane `l` is node `capacity + l`.
    capacity: u32,
    /// log2 of the number of lanes.
    lane_bits: u32,
}

impl Lanes {
    /// Lanes for a queue of `capacity` slots: `lanes` rounded up to a power of two (both at
    /// most `MAX_CAPACITY`, checked by the builder).
    pub(crate) fn new(capacity: usize, lanes: usize) -> Result<Self, OutOfMemory> {
        let lanes = lanes.next_power_of_two();
        debug_assert!(capacity <= crate::MAX_CAPACITY && lanes <= crate::MAX_CAPACITY);
        let stub = |lane: usize| (capacity + lane) as u32;
        let lane_array = try_boxed_slice(lanes, |lane| Lane {
            tail: AtomicU32::new(stub(lane)),
            first: AtomicU32::new(stub(lane)),
            scheduled: AtomicBool::new(false),
        })?;
        let links = try_boxed_slice(capacity + lanes, |_| AtomicU32::new(NONE))?;
        Ok(Self {
            lanes: lane_array,
            links,
            capacity: capacity as u32,
            lane_bits: lanes.trailing_zeros(),
        })
    }

    /// The number of lanes (a power of two).
    pub(crate) fn count(&self) -> usize {
        self.lanes.len()
    }

    /// The lane of group `key`: the top `log2(lanes)` bits of `key` times [`FIBONACCI`].
    #[inline]
    pub(crate) fn lane_of(&self, key: GroupKey) -> u32 {
        let mixed = key.value().wrapping_mul(FIBONACCI);
        // One lane: a shift by 64, which `checked_shr` refuses.
        mixed.checked_shr(64 - self.lane_bits).unwrap_or(0) as u32
    }

    /// The bytes allocated for the lanes and the links.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.lanes) + std::mem::size_of_val(&*self.links)
    }

    /// Puts the owned, filled slot `index` at the back of `lane`. Returns the lane's next head
    /// (this message or an earlier one) if this call took the lane's token and popped one: the
    /// caller publishes it to the ready ring.
    #[inline]
    pub(crate) fn enter(&self, index: u32, lane: u32) -> Option<u32> {
        self.push(lane, index);
        self.take_token(lane)?;
        self.next_head(lane)
    }

    /// The slot `index`, owned and about to be freed, leaves for good: if it was a lane's head,
    /// this thread inherits that lane's token and pops its next head, returned for the caller
    /// to publish. Must run before the slot goes back on the free stack (a sender reusing it
    /// would overwrite its link, which names its lane).
    #[inline]
    pub(crate) fn leave(&self, index: u32) -> Option<u32> {
        let link = &self.links[index as usize];
        let word = link.load(Ordering::Relaxed);
        if word == NONE || word & HEAD_OF == 0 {
            return None;
        }
        // A free slot's link is `NONE` (an ungrouped send then touches nothing here).
        link.store(NONE, Ordering::Relaxed);
        self.next_head(word & !HEAD_OF)
    }

    /// Vyukov's push of `node` (a slot, or the lane's stub) onto `lane`.
    fn push(&self, lane: u32, node: u32) {
        self.links[node as usize].store(NONE, Ordering::Relaxed);
        let prev = self.lanes[lane as usize].tail.swap(node, Ordering::AcqRel);
        // Between the swap and this store the push is half done. The sender's `take_token`
        // after it releases it to the holder's re-check (see the module docs, "The idle race").
        self.links[prev as usize].store(node, Ordering::Release);
    }

    /// Takes `lane`'s token if it is free. A swap even when it is not: the write that the
    /// holder's give-up reads (see the module docs, "The idle race").
    fn take_token(&self, lane: u32) -> Option<()> {
        let held = self.lanes[lane as usize]
            .scheduled
            .swap(true, Ordering::AcqRel);
        (!held).then_some(())
    }

    /// With `lane`'s token held: pops the lane's next head and marks it as the head (the token
    /// stays held, by the head), or, with nothing to pop, gives the token up and re-checks (see
    /// the module docs, "The idle race").
    fn next_head(&self, lane: u32) -> Option<u32> {
        loop {
            match self.pop(lane) {
                Ok(head) => {
                    self.links[head as usize].store(HEAD_OF | lane, Ordering::Relaxed);
                    return Some(head);
                }
                Err(missing) => {
                    self.lanes[lane as usize]
                        .scheduled
                        .swap(false, Ordering::AcqRel);
                    if self.links[missing as usize].load(Ordering::Acquire) == NONE {
                        return None;
                    }
                    // Linked meanwhile: its sender may have found the token still held.
                    self.take_token(lane)?;
                }
            }
        }
    }

    /// Vyukov's pop, by the holder of `lane`'s token: the first node after the stub whose link
    /// is written, or `Err(node)` with the node whose link was missing (the list is empty, or
    /// cut there by a half-done push).
    fn pop(&self, lane: u32) -> Result<u32, u32> {
        let state = &self.lanes[lane as usize];
        let stub = self.capacity + lane;
        let link = |node: u32| self.links[node as usize].load(Ordering::Acquire);
        let mut first = state.first.load(Ordering::Relaxed);
        let mut next = link(first);
        if first == stub {
            if next == NONE {
                return Err(first);
            }
            state.first.store(next, Ordering::Relaxed);
            first = next;
            next = link(first);
        }
        if next == NONE {
            if state.tail.load(Ordering::Acquire) != first {
                // A push swapped the tail after `first` and has not linked it yet.
                return Err(first);
            }
            // `first` is the last node: put the stub behind it so that it can leave the list.
            self.push(lane, stub);
            next = link(first);
            if next == NONE {
                // A sender's push came between the look at the tail and the stub's.
                return Err(first);
            }
        }
        state.first.store(next, Ordering::Relaxed);
        Ok(first)
    }
}
