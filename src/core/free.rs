//! The free slots: per-thread magazines over a shared depot (Bonwick and Adams' magazine
//! allocator, with slots in place of objects).
//!
//! # Why magazines
//!
//! A send takes a free slot and a delete gives one back. With one shared free stack every
//! message touched its head twice, once from the sending thread and once from the deleting
//! one, so with a producer and a consumer on two cores the head's cache line crossed between
//! them twice per message: a perf profile of such a run (issue 10) put about 78% of the
//! producer's samples and 90% of the consumer's delete in that stack. Here each thread works
//! on a *magazine* of its own, and the shared *depot* is touched once per chain of
//! [`FreeSlots::magazine_size`] frees, not once per message.
//!
//! The slot a thread freed last is the one it takes next (a magazine is a stack), so one
//! thread alone reuses the same few slots whatever the capacity, and a consumer's chain goes
//! whole to a producer, the newest slot on top: the working set still follows the messages in
//! flight. (Measured on one thread in issue 10: the FIFO free ring that came before the free
//! stack made a send+receive+delete cost 1.34x as much at capacity 2^20 as at 1,024; LIFO
//! reuse, 0.99x.)
//!
//! # Layout
//!
//! * A **chain** is a list of free slots linked through their `next_free` words, ending with
//!   [`NIL`]. Only the thread that holds a chain reads or writes its links.
//! * A **magazine** (one cache line) holds up to two chains, as Bonwick's per-CPU layer
//!   holds a *loaded* and a *previous* magazine: one word that anyone may read and only its
//!   owner writes (the loaded chain's top and length, the previous chain's length, a `BUSY`
//!   bit and a version), and the previous chain's top, which only the owner touches. A queue
//!   has [`MAGAZINES`] of them (see [`shape`]); a thread's *home* is the magazine its thread
//!   number (given out in order of first use) selects.
//! * The **depot** is a lock-free stack of chains (a Treiber stack with a tagged head, as the
//!   free stack before it): `head` packs `(tag << 32) | top of the first chain`, and a
//!   chain's header (its length and the next chain's top) lives in its top slot's
//!   [`Slot::chain_header`], the message id's word, unused while the slot is free.
//!
//! # Algorithm
//!
//! * **Owning a magazine** is one `fetch_or(BUSY)` (`Acquire`): whoever finds the bit clear
//!   owns the magazine until it stores the new word with the bit clear (`Release`). Nobody
//!   waits for the bit on the hot path: a thread that finds it set goes elsewhere. Every
//!   change an owner makes moves the word's version.
//! * **put(i)** (every freeing of a slot): own the home magazine and link `i` on top of the
//!   loaded chain. If the loaded chain is full (`magazine_size`), it is first put aside as
//!   the previous one, and a full previous chain goes whole to the depot (one CAS). If the
//!   home is busy (another thread with the same home is inside it), push `i` to the depot as
//!   a chain of one.
//! * **take()** (every send): own the home magazine and pop the loaded chain's top, else the
//!   previous chain's, else pop a chain from the depot (one CAS) and take its top. Otherwise
//!   (home busy, or home and depot empty), the slow path [`FreeSlots::take_elsewhere`]: any
//!   magazine that holds slots, or could carry a chain from the depot, is owned in turn and
//!   popped, so a slot parked in another thread's magazine is found.
//!
//! With two chains a thread whose sends and frees alternate at a chain's boundary never
//! touches the depot (a magazine of one chain would send it a chain and take it back on
//! every message); a consumer sends one chain to the depot per `magazine_size` deletes, and
//! a producer takes one per `magazine_size` sends.
//!
//! # Full is exact
//!
//! `take` reports no slot only when, at one instant, every slot was held by a message or by a
//! thread between the CAS that ended its message and the `put` that frees it (as with the
//! free stack before). The slow path reports no slot only after reading the depot's head
//! (empty), then every magazine, twice, then the head again, and finding no magazine busy or
//! holding a slot, and each word the same both times. Every write of the head moves its
//! 32-bit tag and every change of a magazine moves its version, so at the instant between the
//! two passes every word was as read: the depot and every magazine empty and no magazine
//! owned. A chain moves between the depot and a magazine only while that magazine is owned,
//! so no free slot was in a thread's hands either. A changed reading means another thread
//! made progress: the path tries again. One wait remains: when a magazine is busy and no
//! slot was found elsewhere, the path yields and tries again, as the owner may be about to
//! show a slot; the owner is inside a few instructions of this module, never user code. A
//! version is 16 bits: only 65,536 changes of one magazine between one stalled sender's two
//! passes (and the magazine empty at both) could hide a change from it, and the worst that
//! does is one refusal while a slot is free (the body comes back).
//!
//! # ABA
//!
//! *On the depot*: a popper reads `(t, A)` and `A`'s header (next chain `B`), then stalls;
//! meanwhile others pop `A`, pop `B` and push `A` back. Without the tag its CAS would install
//! `B`, now in a magazine, as the depot's top: its slots would be handed out twice. Every
//! successful CAS adds one to the tag, so the stalled CAS fails. The header a popper reads
//! comes after an `Acquire` load of the head, and every write of the head is an RMW, so it
//! reads the header stored by the push of that head or a later one; a later one means the
//! chain was popped since, which moved the tag. The header is an atomic because of that race.
//! *On a magazine*: none; only its owner pops it.
//!
//! # Blocked senders
//!
//! A sender blocked in `send_timeout` re-checks, after registering, with
//! [`FreeSlots::has_free_acquired`]: a read-modify-write that changes nothing (`AcqRel`) of
//! the depot's head and of every magazine. Every `put` makes an RMW of one of them (the
//! `fetch_or` that owns its magazine, or the depot CAS) before it looks for sleepers: either
//! the re-check comes first in that word's modification order, and the `put`'s RMW
//! (`Acquire`) reads from its release sequence, or from a later owner's `Release` store that
//! itself happens after it, so the `put` sees the sleeper; or the `put`'s RMW comes first,
//! and the re-check sees the slot, or the magazine busy (counted as "maybe free": the sender
//! tries again).
//!
//! Loom models (loom-tests/tests/free.rs): `aba_on_the_free_stack` (a send racing sends and
//! deletes), `depot_exchange_aba` (a chain sent back to the depot while a refill is stalled)
//! and `full_is_exact_with_slots_in_magazines` (no send is refused while a slot is free, and
//! none is handed out twice).

use crate::core::error::{try_boxed_slice, OutOfMemory};
use crate::core::slot::Slot;
use crate::core::sync::{yield_now, AtomicU32, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

/// The end of a chain, and the top of an empty depot or magazine.
pub(crate) const NIL: u32 = u32::MAX;

/// A magazine word's fields, low bits first: the loaded chain's top (32 bits) and length
/// (8), the previous chain's length (7), [`BUSY`], and the version (16), moved by every
/// release that changed the contents (its carry falls off the top).
const LEN_SHIFT: u32 = 32;
const LEN_MASK: u64 = 0xff;
const PREVIOUS_LEN_SHIFT: u32 = 40;
const PREVIOUS_LEN_MASK: u64 = 0x7f;
/// Both lengths: non-zero when the magazine holds a slot.
const LENGTHS: u64 = 0x7fff << LEN_SHIFT;
/// Set while a thread owns the magazine.
const BUSY: u64 = 1 << 47;
const VERSION_ONE: u64 = 1 << 48;
const VERSION_MASK: u64 = !((1 << 48) - 1);

/// The most slots a chain in a magazine collects before it is put aside (it fits in the
/// 7-bit length of the previous chain).
const MAX_MAGAZINE: usize = 64;
/// How many magazines a queue has: threads beyond this many share homes (and then meet
/// busy magazines, which costs a push to the depot or a look elsewhere, not a wait).
const MAGAZINES: usize = 16;

/// One magazine: a word that anyone may read and only its owner writes (see the module docs),
/// and the previous chain's top, which only the owner reads or writes.
struct Magazine {
    word: AtomicU64,
    previous_top: AtomicU32,
}

/// The free slots of one queue; see the module docs.
pub(crate) struct FreeSlots {
    /// The depot's head: `(tag << 32) | top chain`, or `NIL` as the top when it is empty.
    depot: CachePadded<AtomicU64>,
    /// The magazines, a power of two of them.
    magazines: Box<[CachePadded<Magazine>]>,
    /// How many frees fill a chain in a magazine.
    pub(crate) magazine_size: u32,
}

/// How many magazines, and how many slots each chain collects, for `capacity` slots:
/// [`MAGAZINES`] magazines (a fixed number: asking the system for its cores would allocate
/// once per process during a build, outside the build's fallible allocations), and chains
/// short enough that the slots parked in magazines (two chains each) are at most a quarter of
/// the capacity, so a send seldom has to look in other threads' magazines before the queue
/// is really full. Under loom: two magazines and chains of one slot, so that with a handful
/// of messages the models park slots in a magazine (two frees) and send chains back to the
/// depot (three).
fn shape(capacity: usize) -> (usize, u32) {
    if cfg!(loom) {
        return (2, 1);
    }
    let size = (capacity / (8 * MAGAZINES)).clamp(1, MAX_MAGAZINE);
    (MAGAZINES, size as u32)
}

#[inline(always)]
fn pack_head(tag: u64, top: u32) -> u64 {
    (tag << 32) | u64::from(top)
}

/// The depot head after one more operation, with `top` on top.
#[inline(always)]
fn next_head(head: u64, top: u32) -> u64 {
    pack_head((head >> 32).wrapping_add(1), top)
}

/// A chain's header: its length and the top of the chain below it in the depot.
#[inline(always)]
fn header(len: u32, below: u32) -> u64 {
    (u64::from(len) << 32) | u64::from(below)
}

/// This thread's number, given out in the order threads first free or take a slot.
#[cfg(not(loom))]
#[inline(always)]
fn thread_number() -> usize {
    use std::cell::Cell;
    thread_local! {
        static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    /// Gives this thread the next number.
    #[cold]
    fn first_use() -> usize {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let number = NEXT.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
        // A thread whose locals are being destroyed (a queue used from a thread-local's
        // destructor) keeps this number for this one call.
        let _ = NUMBER.try_with(|cell| cell.set(number));
        number
    }
    match NUMBER.try_with(Cell::get) {
        Ok(number) if number != usize::MAX => number,
        _ => first_use(),
    }
}

/// This thread's number under loom: loom's thread-locals and a counter that loom makes anew
/// for every execution, so each execution numbers its threads afresh.
#[cfg(loom)]
fn thread_number() -> usize {
    use loom::sync::atomic::AtomicUsize;
    use std::cell::Cell;
    loom::lazy_static! {
        static ref NEXT: AtomicUsize = AtomicUsize::new(0);
    }
    loom::thread_local! {
        static NUMBER: Cell<usize> = Cell::new(usize::MAX);
    }
    NUMBER.with(|number| {
        if number.get() == usize::MAX {
            number.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        number.get()
    })
}

/// A magazine this thread owns (it set `BUSY`); its word, as this thread changes it, is
/// stored back with `BUSY` clear when this is dropped. Every change moves the version.
struct Owned<'a> {
    magazine: &'a Magazine,
    word: u64,
}

/// One slot more in the loaded chain, or one less (`wrapping_neg`), with the version moved on.
const LOADED_ONE: u64 = 1 << LEN_SHIFT;
const TOP_MASK: u64 = u32::MAX as u64;

impl<'a> Owned<'a> {
    /// Owns `magazine` if no other thread does.
    #[inline]
    fn try_own(magazine: &'a Magazine) -> Option<Self> {
        let word = magazine.word.fetch_or(BUSY, Ordering::Acquire);
        (word & BUSY == 0).then(|| Self { magazine, word })
    }

    fn len(&self) -> u32 {
        ((self.word >> LEN_SHIFT) & LEN_MASK) as u32
    }

    fn previous_len(&self) -> u32 {
        ((self.word >> PREVIOUS_LEN_SHIFT) & PREVIOUS_LEN_MASK) as u32
    }

    fn holds(&self) -> bool {
        self.word & LENGTHS != 0
    }

    /// Pops the loaded chain's top slot, after loading the previous chain if the loaded one
    /// is empty.
    #[inline]
    fn pop<T>(&mut self, slots: &[Slot<T>]) -> Option<u32> {
        if self.word as u32 == NIL {
            let previous = self.previous_len();
            if previous == 0 {
                return None;
            }
            let top = self.magazine.previous_top.load(Ordering::Relaxed);
            self.word =
                (self.word & VERSION_MASK) | (u64::from(previous) << LEN_SHIFT) | u64::from(top);
        }
        let index = self.word as u32;
        let below = slots[index as usize].next_free.load(Ordering::Relaxed);
        self.word = ((self.word & !TOP_MASK)
            .wrapping_sub(LOADED_ONE)
            .wrapping_add(VERSION_ONE))
            | u64::from(below);
        Some(index)
    }

    /// Links the owned slot `index` on top of the loaded chain.
    #[inline]
    fn push<T>(&mut self, index: u32, slots: &[Slot<T>]) {
        slots[index as usize]
            .next_free
            .store(self.word as u32, Ordering::Relaxed);
        self.word =
            ((self.word & !TOP_MASK) + LOADED_ONE).wrapping_add(VERSION_ONE) | u64::from(index);
    }

    /// Puts the loaded chain aside as the previous one (which is empty) and loads nothing.
    fn put_aside(&mut self) {
        debug_assert_eq!(self.previous_len(), 0);
        self.magazine
            .previous_top
            .store(self.word as u32, Ordering::Relaxed);
        self.word = (self.word & VERSION_MASK).wrapping_add(VERSION_ONE)
            | (u64::from(self.len()) << PREVIOUS_LEN_SHIFT)
            | u64::from(NIL);
    }

    /// Makes the chain that starts at `top` (`len` slots, owned by the caller) the loaded one
    /// of the empty magazine.
    fn load(&mut self, top: u32, len: u32) {
        debug_assert!(!self.holds());
        self.word = (self.word & VERSION_MASK).wrapping_add(VERSION_ONE)
            | (u64::from(len) << LEN_SHIFT)
            | u64::from(top);
    }
}

impl Drop for Owned<'_> {
    #[inline]
    fn drop(&mut self) {
        // A plain store: a thread whose `fetch_or` finds `BUSY` writes back what it read, and
        // an RMW reads the latest value in the word's modification order, so it can neither
        // follow this store and see `BUSY` nor precede it and outlast it. Loom does not model
        // that atomicity of RMWs against plain stores (the reason `Slot::set_deadline` swaps):
        // it lets such an RMW's `BUSY` outlast the release, so under loom the release swaps.
        #[cfg(not(loom))]
        self.magazine.word.store(self.word, Ordering::Release);
        #[cfg(loom)]
        self.magazine.word.swap(self.word, Ordering::Release);
    }
}

impl FreeSlots {
    /// The free slots of a queue whose slots are `slots`, all free: the depot holds them in
    /// chains, slot 0 on top, so a new queue fills its slots in index order.
    pub(crate) fn new<T>(slots: &[Slot<T>]) -> Result<Self, OutOfMemory> {
        let (magazines, magazine_size) = shape(slots.len());
        let free = Self {
            depot: CachePadded::new(AtomicU64::new(pack_head(0, NIL))),
            magazines: try_boxed_slice(magazines, |_| {
                CachePadded::new(Magazine {
                    word: AtomicU64::new(u64::from(NIL)),
                    previous_top: AtomicU32::new(NIL),
                })
            })?,
            magazine_size,
        };
        let size = magazine_size as usize;
        let chains = slots.len().div_ceil(size);
        for chain in (0..chains).rev() {
            let first = chain * size;
            let end = (first + size).min(slots.len());
            for (index, slot) in slots[first..end].iter().enumerate() {
                let next = first + index + 1;
                let next = if next < end { next as u32 } else { NIL };
                slot.next_free.store(next, Ordering::Relaxed);
            }
            free.push_chain(first as u32, (end - first) as u32, slots);
        }
        Ok(free)
    }

    /// The bytes this allocated: the magazines, one cache line each.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.magazines)
    }

    /// This thread's home magazine.
    #[inline]
    fn home(&self) -> usize {
        thread_number() & (self.magazines.len() - 1)
    }

    /// Pushes the chain that starts at `top` (`len` slots, owned by the caller) to the depot.
    fn push_chain<T>(&self, top: u32, len: u32, slots: &[Slot<T>]) {
        let mut head = self.depot.load(Ordering::Relaxed);
        loop {
            slots[top as usize]
                .chain_header()
                .store(header(len, head as u32), Ordering::Relaxed);
            // `AcqRel`: a blocked sender's re-check that comes earlier in the head's order
            // must happen before this push's look for sleepers (module docs).
            match self.depot.compare_exchange_weak(
                head,
                next_head(head, top),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Pops the depot's top chain into the empty magazine `into`; false if the depot is empty.
    fn refill<T>(&self, into: &mut Owned<'_>, slots: &[Slot<T>]) -> bool {
        let mut head = self.depot.load(Ordering::Acquire);
        loop {
            let top = head as u32;
            if top == NIL {
                return false;
            }
            let chain = slots[top as usize].chain_header().load(Ordering::Relaxed);
            match self.depot.compare_exchange_weak(
                head,
                next_head(head, chain as u32),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    into.load(top, (chain >> 32) as u32);
                    return true;
                }
                Err(now) => head = now,
            }
        }
    }

    /// Frees the owned slot `index` (its body moved out, its word `Free`) into this thread's
    /// magazine; see the module docs.
    #[inline]
    pub(crate) fn put<T>(&self, index: u32, slots: &[Slot<T>]) {
        let Some(mut home) = Owned::try_own(&self.magazines[self.home()]) else {
            slots[index as usize]
                .next_free
                .store(NIL, Ordering::Relaxed);
            self.push_chain(index, 1, slots);
            return;
        };
        if home.len() >= self.magazine_size {
            let previous = home.previous_len();
            if previous > 0 {
                let top = home.magazine.previous_top.load(Ordering::Relaxed);
                self.push_chain(top, previous, slots);
                home.word &= !(PREVIOUS_LEN_MASK << PREVIOUS_LEN_SHIFT);
            }
            home.put_aside();
        }
        home.push(index, slots);
    }

    /// Takes a free slot (the caller owns it from then on): the one this thread freed last if
    /// its magazine has one; `None` only when every slot is held (module docs, "Full is
    /// exact").
    #[inline]
    pub(crate) fn take<T>(&self, slots: &[Slot<T>]) -> Option<u32> {
        let home = self.home();
        if let Some(mut owned) = Owned::try_own(&self.magazines[home]) {
            if let Some(index) = owned.pop(slots) {
                return Some(index);
            }
            if self.refill(&mut owned, slots) {
                return owned.pop(slots);
            }
        }
        self.take_elsewhere(home, slots)
    }

    /// The rest of [`Self::take`]: the home magazine was busy, or it and the depot were empty.
    #[cold]
    fn take_elsewhere<T>(&self, home: usize, slots: &[Slot<T>]) -> Option<u32> {
        let mask = self.magazines.len() - 1;
        loop {
            let depot = self.depot.load(Ordering::Acquire);
            let mut busy = false;
            for k in 0..self.magazines.len() {
                let magazine = &self.magazines[(home + k) & mask];
                let seen = magazine.word.load(Ordering::Acquire);
                if seen & BUSY != 0 {
                    busy = true;
                    continue;
                }
                if seen & LENGTHS == 0 && self.depot.load(Ordering::Acquire) as u32 == NIL {
                    continue;
                }
                let Some(mut owned) = Owned::try_own(magazine) else {
                    busy = true;
                    continue;
                };
                if let Some(index) = owned.pop(slots) {
                    return Some(index);
                }
                if self.refill(&mut owned, slots) {
                    return owned.pop(slots);
                }
            }
            if !busy && depot as u32 == NIL && self.confirms_empty(depot) {
                return None;
            }
            if busy {
                yield_now();
            }
        }
    }

    /// Whether the depot still reads `depot` (empty) and every magazine is empty and idle, in
    /// two passes that read exactly the same (module docs, "Full is exact").
    fn confirms_empty(&self, depot: u64) -> bool {
        let mut first = [0u64; MAGAZINES];
        for pass in 0..2 {
            if self.depot.load(Ordering::Acquire) != depot {
                return false;
            }
            for (magazine, first) in self.magazines.iter().zip(first.iter_mut()) {
                let seen = magazine.word.load(Ordering::Acquire);
                if seen & (BUSY | LENGTHS) != 0 || (pass == 1 && seen != *first) {
                    return false;
                }
                *first = seen;
            }
        }
        self.depot.load(Ordering::Acquire) == depot
    }

    /// Whether a slot looked free (or a magazine busy) at the moment of the call, read with
    /// read-modify-writes that change nothing (`AcqRel`) of the depot's head and of every
    /// magazine: a blocked sender's re-check, which spares the freeing side a fence (module
    /// docs, "Blocked senders"; `super::waiters`).
    pub(crate) fn has_free_acquired(&self) -> bool {
        let depot = self.depot.fetch_add(0, Ordering::AcqRel);
        let mut free = depot as u32 != NIL;
        for magazine in self.magazines.iter() {
            free |= magazine.word.fetch_add(0, Ordering::AcqRel) & (BUSY | LENGTHS) != 0;
        }
        free
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::core::slot::Slot;
    use std::sync::atomic::AtomicBool;

    /// Slots whose bodies these tests never touch.
    struct Slots(Vec<Slot<()>>);

    // SAFETY: a `Slot` is not `Sync` only because of its body cell, which these tests never
    // access; every other field is an atomic.
    unsafe impl Sync for Slots {}

    impl std::ops::Deref for Slots {
        type Target = [Slot<()>];
        fn deref(&self) -> &[Slot<()>] {
            &self.0
        }
    }

    fn slots(n: usize) -> Slots {
        Slots((0..n).map(|_| Slot::new(0)).collect())
    }

    #[test]
    fn a_new_queue_hands_out_slots_in_index_order_then_refuses() {
        let slots = slots(300);
        let free = FreeSlots::new(&slots).unwrap();
        for expected in 0..300 {
            assert_eq!(free.take(&slots), Some(expected));
        }
        assert_eq!(free.take(&slots), None);
    }

    #[test]
    fn the_slot_freed_last_is_taken_first() {
        let slots = slots(1 << 12);
        let free = FreeSlots::new(&slots).unwrap();
        let taken: Vec<u32> = (0..10).map(|_| free.take(&slots).unwrap()).collect();
        for &index in &taken {
            free.put(index, &slots);
        }
        for &index in taken.iter().rev() {
            assert_eq!(free.take(&slots), Some(index));
        }
    }

    /// Slots freed by one thread into its magazine, below a full magazine's size, are found by
    /// another thread's take once everything else is held.
    #[test]
    fn slots_parked_in_another_threads_magazine_are_found() {
        let slots = slots(1 << 10);
        let free = FreeSlots::new(&slots).unwrap();
        let all: Vec<u32> = std::iter::from_fn(|| free.take(&slots)).collect();
        assert_eq!(all.len(), 1 << 10);
        assert!(free.magazine_size > 3, "the test parks 3 slots");
        std::thread::scope(|s| {
            s.spawn(|| {
                for &index in &all[..3] {
                    free.put(index, &slots);
                }
            });
        });
        let mut found: Vec<u32> = std::iter::from_fn(|| free.take(&slots)).collect();
        found.sort_unstable();
        assert_eq!(found, all[..3]);
    }

    /// Every index is free or held by one thread; each is owned by one thread at a time
    /// (checked by a flag per index), and none is lost; threads outnumber magazines, so homes
    /// are shared and busy magazines are met.
    #[test]
    fn cycling_slots_are_owned_once_and_never_lost() {
        const N: usize = 64;
        let slots = slots(N);
        let owned: Vec<AtomicBool> = (0..N).map(|_| AtomicBool::new(false)).collect();
        let free = FreeSlots::new(&slots).unwrap();
        let threads = 2 * free.magazines.len() + 1;
        std::thread::scope(|s| {
            for _ in 0..threads {
                let (free, slots, owned) = (&free, &slots, &owned);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for n in 0..20_000u32 {
                        if n % 3 != 2 {
                            if let Some(i) = free.take(slots) {
                                assert!(
                                    !owned[i as usize].swap(true, Ordering::SeqCst),
                                    "owned twice"
                                );
                                mine.push(i);
                            }
                        }
                        if n % 3 == 2 || mine.len() > 4 {
                            while let Some(i) = mine.pop() {
                                owned[i as usize].store(false, Ordering::SeqCst);
                                free.put(i, slots);
                            }
                        }
                    }
                    for i in mine {
                        owned[i as usize].store(false, Ordering::SeqCst);
                        free.put(i, slots);
                    }
                });
            }
        });
        let mut all: Vec<u32> = std::iter::from_fn(|| free.take(&slots)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..N as u32).collect::<Vec<_>>());
    }
}
