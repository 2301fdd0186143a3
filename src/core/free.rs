//! The free slots: a lock-free LIFO stack of slot indices (a Treiber stack with a tagged head).
//!
//! # Why a stack
//!
//! A send takes the slot that was freed last, so the slots in use are the few that messages
//! in flight have just used, still in the caches, whatever the capacity. A FIFO ring of free
//! slots hands out the least recently used one instead: every send then touches a cold slot
//! and the working set is the whole slab, along with the wheel entries that deleted leases
//! leave behind in every slot they used. Measured on one thread (issue 10): with the ring a
//! send+receive+delete cost 1.34x as much at capacity 2^20 as at 1,024; with the stack 0.99x.
//! The working set then follows the messages in flight: a queue that really holds a million
//! messages still touches a million slots.
//!
//! # Why not per-thread magazines
//!
//! Issue 10 tried Bonwick and Adams' magazines over this stack as a depot (commit `953bb47`,
//! reverted): each thread freed into and took from its own cache line of two chains, and the
//! shared head was touched once per chain. Measured against this stack on the 2-core VM
//! (interleaved runs, 5 repeats, medians; the machine shared, so noisy), one producer and one
//! consumer gained 1.43x at capacity 1,024 but nothing at 2^20; four of each lost (0.57x at
//! 1,024), because sends on a full queue had to look into, own and wait for other threads'
//! magazines to keep `Full` exact; and a lone thread paid 15% more instructions per
//! send+receive+delete (459 against 398, callgrind). The head's cache-line transfers stay the
//! bound of this design for one producer and one consumer.
//!
//! # Algorithm
//!
//! `head` packs `(tag << 32) | index` into one `AtomicU64`; `index` is the top of the stack or
//! [`NIL`]. Each slot has a link word (`Slot::next_free`, in the slot's own padding) that
//! names the slot below it while the slot is on the stack.
//!
//! * **push(i)**: read `head`, store its index into `i`'s link, CAS `head` from what was read
//!   to `(tag + 1, i)` with `Release` (so the next popper happens-after everything the pusher
//!   did to the slot, such as taking its body out); retry on failure.
//! * **pop**: read `head` (`Acquire`); if its index is `NIL` the stack is empty. Otherwise read
//!   the top's link and CAS `head` from what was read to `(tag + 1, link)` (`Acquire`: the
//!   popper owns the slot from here); retry with the value the CAS found.
//!
//! **ABA.** A popper reads `(t, A)` and `A`'s link `B`, then stalls; meanwhile others pop `A`,
//! pop `B` and push `A` back. Without the tag its CAS would find `A` on top again, succeed, and
//! make `B`, now held by a sender, the top: two senders would then own `B`. Every successful
//! CAS adds one to the tag, so the head after those three operations is `(t + 3, A)` and the
//! stalled CAS fails. A stale CAS could succeed only if exactly a multiple of 2^32 operations
//! ran during one popper's stall between two of its own instructions.
//!
//! **The link a popper reads.** Links are written only by the thread pushing that slot, which
//! owns it. A popper reads the top's link after an `Acquire` load of `head`; every write of
//! `head` is an RMW, so that load synchronizes with the push that stored the link (a release
//! sequence), and the link read is that push's or a later one's. A later one means the slot
//! was popped and pushed again meanwhile, which moved the tag, so the CAS that would use a
//! stale link fails. The link is an atomic because such a racing read is possible.
//!
//! **Exactness.** `pop` reports the stack empty only when it read a `NIL` head: at that moment
//! every slot was taken by a thread (held by a message, or between the CAS out of `InFlight`
//! and the push of a delete), exactly as the free ring it replaced reported full.
//!
//! Who may write what: `head` only by CAS (pushers and poppers), a link only by the thread
//! that pushes its slot.
//!
//! The loom model `aba_on_the_free_stack` (loom-tests/tests/free.rs) drives the ABA
//! interleaving above through the queue's API and catches a tag that does not move.

use crate::core::sync::{AtomicU32, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

/// The index of an empty stack's top, and of the link of the bottom slot.
pub(crate) const NIL: u32 = u32::MAX;

/// A lock-free LIFO stack of slot indices whose links live in the slots; see the module docs.
pub(crate) struct FreeStack {
    head: CachePadded<AtomicU64>,
}

#[inline(always)]
fn pack(tag: u64, index: u32) -> u64 {
    (tag << 32) | u64::from(index)
}

/// The head after one more operation, with `index` on top.
#[inline(always)]
fn next_head(head: u64, index: u32) -> u64 {
    pack((head >> 32).wrapping_add(1), index)
}

impl FreeStack {
    /// An empty stack.
    pub(crate) fn new() -> Self {
        Self {
            head: CachePadded::new(AtomicU64::new(pack(0, NIL))),
        }
    }

    /// Pushes `index`, whose link is `link`; the caller owns the slot and gives it up.
    #[inline]
    pub(crate) fn push(&self, index: u32, link: &AtomicU32) {
        debug_assert_ne!(index, NIL);
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            link.store(head as u32, Ordering::Relaxed);
            // `AcqRel`: a blocked sender's re-check (`has_free_acquired`) that comes earlier in
            // the head's order must happen before this push's look for sleepers.
            match self.head.compare_exchange_weak(
                head,
                next_head(head, index),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Whether a slot looked free at the moment of the call, read with a read-modify-write that
    /// changes nothing (`AcqRel`). Every write to the head is a read-modify-write, so a push
    /// that comes later in the head's order reads from this one's release sequence and happens
    /// after everything the caller did before (a blocked sender's registration); a push that
    /// came earlier is seen, unless a pop has taken its slot since. Blocked senders re-check
    /// with it, which spares the freeing side a fence (see `super::waiters`).
    pub(crate) fn has_free_acquired(&self) -> bool {
        self.head.fetch_add(0, Ordering::AcqRel) as u32 != NIL
    }

    /// Pops the index on top (the caller owns its slot from then on), reading links with
    /// `link_of`; `None` when the stack is empty.
    #[inline]
    pub(crate) fn pop<'a>(&self, link_of: impl Fn(u32) -> &'a AtomicU32) -> Option<u32> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let index = head as u32;
            if index == NIL {
                return None;
            }
            let below = link_of(index).load(Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                next_head(head, below),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(index),
                Err(now) => head = now,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn links(n: usize) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(NIL)).collect()
    }

    #[test]
    fn last_in_first_out() {
        let links = links(4);
        let stack = FreeStack::new();
        assert_eq!(stack.pop(|i| &links[i as usize]), None);
        for i in 0..4 {
            stack.push(i, &links[i as usize]);
        }
        for i in (0..4).rev() {
            assert_eq!(stack.pop(|i| &links[i as usize]), Some(i));
        }
        assert_eq!(stack.pop(|i| &links[i as usize]), None);
    }

    /// The crate's use: every index is on the stack or held by one thread; each popped index
    /// is owned by one thread at a time (checked by a flag per index), and none is lost.
    #[test]
    fn cycling_indices_are_owned_once_and_never_lost() {
        const N: usize = 8;
        let links = links(N);
        let owned: Vec<std::sync::atomic::AtomicBool> = (0..N)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        let stack = FreeStack::new();
        for i in 0..N as u32 {
            stack.push(i, &links[i as usize]);
        }
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (stack, links, owned) = (&stack, &links, &owned);
                s.spawn(move || {
                    for n in 0..100_000u32 {
                        if let Some(i) = stack.pop(|i| &links[i as usize]) {
                            assert!(
                                !owned[i as usize].swap(true, Ordering::SeqCst),
                                "owned twice"
                            );
                            if n % 64 == 0 {
                                std::thread::yield_now();
                            }
                            owned[i as usize].store(false, Ordering::SeqCst);
                            stack.push(i, &links[i as usize]);
                        }
                    }
                });
            }
        });
        let mut all: Vec<u32> = std::iter::from_fn(|| stack.pop(|i| &links[i as usize])).collect();
        all.sort_unstable();
        assert_eq!(all, (0..N as u32).collect::<Vec<_>>());
    }
}
