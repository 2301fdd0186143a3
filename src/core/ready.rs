//! The ready messages, by priority level: one ready ring ([`IndexRing`]) per level, and, on a
//! queue with more than one level, each slot's level.
//!
//! # Levels
//!
//! A queue built with [`Builder::priorities`](crate::Builder::priorities)`(levels)` has one
//! ring per level, each with room for every slot (all the ready messages may be of one level).
//! A message's level is recorded in its slot's byte when it is sent (every send writes it,
//! since slots are reused: a plain send and a dead letter moved in write level 0) and read by
//! every push, so a message made visible again (release, expiry, hand-back, nack, a delay
//! ending, a give-back after a panicking clone, a dead-letter inspection) goes to the back of
//! its own level. The byte is written and read only by the slot's owner of the moment, and
//! ownership passes with the happens-before edges of the slot word and the rings (see
//! [`super::slot`]), so relaxed accesses suffice; it is an atomic only so that no `unsafe` is
//! needed and loom sees it.
//!
//! # The scan
//!
//! A pop tries the highest level's ring first, a field of its own tried before any indexing.
//! On a queue with one level that is all: a pop costs what a pop of one ring costs, and a push
//! and a send's level record cost one branch each (no level bytes exist). On a queue with
//! levels whose top level looks empty, the pop first lets the queue make visible what its
//! wheel has due by now (so a message whose delay or lease has ended competes at its own level
//! rather than wait behind a lower one), then scans the levels below the top from the highest
//! down (the top again first, if that made anything visible) and takes from the first that
//! yields one. So a pop of level `l` pays one empty look at each level above it.
//!
//! Sequentially this is exact: a pop never takes a level-`l` message while a higher level has
//! one. Concurrently the scan is not atomic: a push to a level the scan has already passed is
//! left for the next pop (it is not lost: nothing is removed from a ring but by a pop that
//! returns it). A sleeper's re-check looks at every level (`Queue::receiver_should_wake`).

use crate::core::error::{try_boxed_slice, OutOfMemory};
use crate::core::ring::IndexRing;
use crate::core::sync::{AtomicU8, Ordering};

/// The ready rings of a queue, one per priority level, and each slot's level.
pub(crate) struct ReadyRings {
    /// The highest level's ring (the only one of a queue without priorities).
    top: IndexRing,
    /// The rings of levels `0..top`, lowest first; empty for a queue with one level.
    lower: Box<[IndexRing]>,
    /// Each slot's level, when there are levels below the top; empty otherwise.
    level_of: Box<[AtomicU8]>,
}

impl ReadyRings {
    /// Rings for `levels` levels (at least 1), each with room for `capacity` slot indices,
    /// and, for more than one level, a level byte per slot.
    /// `OutOfMemory` if any of them cannot be allocated.
    pub(crate) fn new(capacity: usize, levels: u8) -> Result<Self, OutOfMemory> {
        let lower_levels = usize::from(levels.max(1)) - 1;
        let mut lower = Vec::new();
        lower
            .try_reserve_exact(lower_levels)
            .map_err(|_| OutOfMemory)?;
        for _ in 0..lower_levels {
            lower.push(IndexRing::with_capacity(capacity)?);
        }
        let level_of = if lower_levels == 0 {
            Box::default()
        } else {
            try_boxed_slice(capacity, |_| AtomicU8::new(0))?
        };
        Ok(Self {
            top: IndexRing::with_capacity(capacity)?,
            lower: lower.into_boxed_slice(),
            level_of,
        })
    }

    /// Whether there is more than one level.
    #[inline(always)]
    fn has_levels(&self) -> bool {
        !self.lower.is_empty()
    }

    /// Records `level` (checked to be below the queue's levels) as the level of the owned slot
    /// `index`, for every later push of it. Nothing to record with one level.
    #[inline(always)]
    pub(crate) fn set_level(&self, index: u32, level: u8) {
        if self.has_levels() {
            self.record_level(index, level);
        }
    }

    /// [`ReadyRings::set_level`] on a queue with levels (out of line: a queue with one level
    /// pays only the branch).
    #[inline(never)]
    fn record_level(&self, index: u32, level: u8) {
        self.level_of[index as usize].store(level, Ordering::Relaxed);
    }

    /// The ring of the owned slot `index`'s level.
    #[inline(always)]
    fn ring_of(&self, index: u32) -> &IndexRing {
        if !self.has_levels() {
            return &self.top;
        }
        self.lower_ring_of(index)
    }

    /// [`ReadyRings::ring_of`] on a queue with levels below the top.
    #[inline(never)]
    fn lower_ring_of(&self, index: u32) -> &IndexRing {
        let level = self.level_of[index as usize].load(Ordering::Relaxed);
        // The top level is the one `lower` does not have.
        self.lower.get(usize::from(level)).unwrap_or(&self.top)
    }

    /// Appends the owned slot `index` to the back of its level; gives it back if that ring is
    /// full (never, in this crate: each ring has room for every slot).
    #[inline]
    pub(crate) fn push(&self, index: u32) -> Result<(), u32> {
        self.ring_of(index).push(index)
    }

    /// Removes the oldest index of the highest level that has one, with its position in that
    /// level's ring. `None` when every level looked empty as the scan passed it. On a queue
    /// with levels whose top level looks empty, `before_lower_levels` runs first (once): the
    /// queue makes visible what its wheel has due by now, and answers whether it ran the
    /// wheel; if it did, the scan starts again from the top, else from the level below it.
    #[inline]
    pub(crate) fn pop(&self, before_lower_levels: impl FnOnce() -> bool) -> Option<(u64, u32)> {
        match self.top.pop() {
            Some(popped) => Some(popped),
            None if !self.has_levels() => None,
            None => self.pop_lower_levels(before_lower_levels()),
        }
    }

    /// The rest of a [`ReadyRings::pop`] that found the top level empty: the levels below it
    /// from the highest down, after the top once more if `top_again`.
    fn pop_lower_levels(&self, top_again: bool) -> Option<(u64, u32)> {
        if top_again {
            if let Some(popped) = self.top.pop() {
                return Some(popped);
            }
        }
        self.lower.iter().rev().find_map(IndexRing::pop)
    }

    /// How many levels there are (1 for a queue without priorities).
    pub(crate) fn level_count(&self) -> u8 {
        // At most `MAX_PRIORITY_LEVELS` (16), checked by the builder.
        1 + self.lower.len() as u8
    }

    /// Each level's ring, from the highest down.
    pub(crate) fn levels(&self) -> impl Iterator<Item = &IndexRing> {
        std::iter::once(&self.top).chain(self.lower.iter().rev())
    }

    /// How many indices were ever popped, all levels together (exact when nothing runs
    /// concurrently).
    pub(crate) fn pops(&self) -> u64 {
        self.levels().map(IndexRing::pops).sum()
    }

    /// Bytes of every level's ring, of the table of the rings below the top, and of the level
    /// bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.levels().map(IndexRing::heap_bytes).sum::<usize>()
            + std::mem::size_of_val(&*self.lower)
            + std::mem::size_of_val(&*self.level_of)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_level_has_no_level_bytes_and_is_one_ring() {
        let ready = ReadyRings::new(4, 1).unwrap();
        ready.set_level(0, 0);
        assert!(ready.level_of.is_empty() && ready.lower.is_empty());
        assert_eq!(ready.heap_bytes(), ready.top.heap_bytes());
        for index in [2, 0, 1] {
            ready.push(index).unwrap();
        }
        let popped: Vec<u32> = std::iter::from_fn(|| ready.pop(|| false).map(|(_, i)| i)).collect();
        assert_eq!(popped, [2, 0, 1]);
        assert_eq!(ready.pops(), 3);
    }

    #[test]
    fn pops_the_highest_level_first_and_fifo_within_one() {
        let ready = ReadyRings::new(8, 3).unwrap();
        for (index, level) in [(0, 0), (1, 2), (2, 1), (3, 0), (4, 2), (5, 1)] {
            ready.set_level(index, level);
            ready.push(index).unwrap();
        }
        let popped: Vec<u32> = std::iter::from_fn(|| ready.pop(|| false).map(|(_, i)| i)).collect();
        assert_eq!(popped, [1, 4, 2, 5, 0, 3]);
        assert_eq!(ready.pops(), 6);
        // A slot keeps its level until it is set again.
        ready.push(2).unwrap();
        ready.push(0).unwrap();
        assert_eq!(ready.pop(|| false), Some((2, 2)));
        ready.set_level(2, 0);
        ready.push(2).unwrap();
        assert_eq!(ready.pop(|| false).map(|(_, i)| i), Some(0));
        assert_eq!(ready.pop(|| false).map(|(_, i)| i), Some(2));
    }

    #[test]
    fn memory_counts_every_ring_and_the_level_bytes() {
        let one = ReadyRings::new(1024, 1).unwrap().heap_bytes();
        let four = ReadyRings::new(1024, 4).unwrap();
        assert_eq!(
            four.heap_bytes(),
            4 * one + 3 * std::mem::size_of::<IndexRing>() + 1024
        );
    }
}
