//! A bounded MPMC ring of slot indices (Dmitry Vyukov's bounded MPMC queue, with the sequence
//! stamp and the value packed into one 64-bit word per cell).
//!
//! # Algorithm
//!
//! `head` and `tail` are 64-bit positions that only grow; position `p` lives in cell
//! `p & mask`. Each cell holds one `AtomicU64`:
//!
//! | bits 63..32            | bits 31..0 | meaning                                       |
//! |------------------------|------------|-----------------------------------------------|
//! | `stamp = p as u32`     | unused     | empty, waiting for the push at position `p`   |
//! | `stamp = (p+1) as u32` | value      | full, waiting for the pop at position `p`     |
//!
//! A pusher reads `tail = t`; if its cell's stamp is `t` it claims the position with a CAS on
//! `tail`, then publishes `(t+1, value)` with a `Release` store. A popper reads `head = h`; if the
//! stamp is `h+1` it claims `h` with a CAS on `head`, reads the value (the `Acquire` stamp load
//! made it visible), and frees the cell for the next lap by storing stamp `h + capacity`.
//!
//! Stamps are truncated to 32 bits. A stale truncated stamp can only make a thread *try* a CAS
//! on the full 64-bit `head`/`tail`, which then fails, so truncation never lets two threads
//! claim one position; before reporting "full" or "empty" the thread re-reads the index to make
//! sure it was not looking at a stale lap.
//!
//! A cell can lag its index: a popper that won `head` but has not yet freed its cell, or a
//! pusher that won `tail` but has not yet written it. A thread that meets such a cell reports
//! "full" (or "empty") only if the indices say so (`tail - head` is the capacity, or zero);
//! otherwise it spins until the lagging thread finishes its two-instruction step, as crossbeam's
//! `ArrayQueue` does. Without that, a ring with room could report itself full, and one with
//! values empty.
//!
//! The ring has at least two cells. With one, `p + 1` and `p + capacity` coincide: the stamp of
//! "full, waiting for the pop at `p`" equals that of "empty, waiting for the push at `p + 1`",
//! so a push would take a full cell and overwrite its value. A ring asked for one value gets
//! two cells, and reports full only when both are taken.
//!
//! In this crate every slot index is in at most one ring at a time and each ring has room for
//! every index, so `push` never finds the ring full; it still reports it rather than assume it.
//!
//! Who may write what: `head` is written only by CAS from poppers, `tail` only by CAS from
//! pushers, a cell only by the thread that claimed its position.

use crate::core::error::{try_boxed_slice, OutOfMemory};
use crate::core::sync::{spin_loop, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

/// A bounded lock-free MPMC ring of `u32` values.
pub(crate) struct IndexRing {
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
    cells: Box<[AtomicU64]>,
    mask: u64,
}

#[inline(always)]
fn pack(stamp: u64, value: u32) -> u64 {
    (stamp << 32) | u64::from(value)
}

/// `stamp_of(cell) - expected`, as a signed distance between 32-bit truncated positions.
#[inline(always)]
fn stamp_distance(cell: u64, expected: u64) -> i32 {
    ((cell >> 32) as u32).wrapping_sub(expected as u32) as i32
}

impl IndexRing {
    /// Bytes of the ring's cells (allocated by `with_capacity`).
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.cells)
    }

    /// A ring with room for at least `capacity` values (rounded up to a power of two, and to
    /// at least two: see the module docs).
    /// `OutOfMemory` if its cells cannot be allocated.
    pub(crate) fn with_capacity(capacity: usize) -> Result<Self, OutOfMemory> {
        let size = capacity.max(2).next_power_of_two();
        let cells = try_boxed_slice(size, |p| AtomicU64::new(pack(p as u64, 0)))?;
        Ok(Self {
            head: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
            cells,
            mask: size as u64 - 1,
        })
    }

    /// Appends `value`; gives it back when the ring is full.
    #[inline]
    pub(crate) fn push(&self, value: u32) -> Result<(), u32> {
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[(tail & self.mask) as usize];
            let current = cell.load(Ordering::Acquire);
            match stamp_distance(current, tail) {
                0 => match self.tail.compare_exchange_weak(
                    tail,
                    tail + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        cell.store(pack(tail + 1, value), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => tail = now,
                },
                distance if distance < 0 => {
                    // The cell still holds the value from one lap ago. Unless `tail` moved, that
                    // is a full ring only if that value has not been popped; if its pop has
                    // claimed `head` but not yet freed the cell, wait for it rather than report
                    // a ring with room as full.
                    let now = self.tail.load(Ordering::Relaxed);
                    if now != tail {
                        tail = now;
                    } else if tail.saturating_sub(self.head.load(Ordering::SeqCst)) > self.mask {
                        return Err(value);
                    } else {
                        spin_loop();
                    }
                }
                _ => tail = self.tail.load(Ordering::Relaxed),
            }
        }
    }

    /// Removes the oldest value, with the position it was pushed at (positions count pops from
    /// zero and only grow). `None` when the ring is empty.
    #[inline]
    pub(crate) fn pop(&self) -> Option<(u64, u32)> {
        self.pop_if(|_| true)
    }

    /// [`IndexRing::pop`], but only if `take` says yes to the oldest value; `None` also when it
    /// says no. `take` may be asked about a value another thread pops meanwhile (that pop
    /// then wins the CAS on `head`), so it must only read.
    #[inline(always)]
    pub(crate) fn pop_if(&self, take: impl Fn(u32) -> bool) -> Option<(u64, u32)> {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[(head & self.mask) as usize];
            let current = cell.load(Ordering::Acquire);
            match stamp_distance(current, head + 1) {
                0 if !take(current as u32) => {
                    // Refused; unless `head` moved (that value is gone), stop here.
                    let now = self.head.load(Ordering::Relaxed);
                    if now == head {
                        return None;
                    }
                    head = now;
                }
                0 => match self.head.compare_exchange_weak(
                    head,
                    head + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        cell.store(pack(head + self.mask + 1, 0), Ordering::Release);
                        return Some((head, current as u32));
                    }
                    Err(now) => head = now,
                },
                distance if distance < 0 => {
                    // Nothing pushed at `head` yet. Unless `head` moved, that is an empty ring
                    // only if no push has claimed the position; if one has but not yet written
                    // the cell, wait for it rather than report a ring with values as empty.
                    let now = self.head.load(Ordering::Relaxed);
                    if now != head {
                        head = now;
                    } else if self.tail.load(Ordering::SeqCst) <= head {
                        return None;
                    } else {
                        spin_loop();
                    }
                }
                _ => head = self.head.load(Ordering::Relaxed),
            }
        }
    }

    /// How many values were ever popped (exact when nothing runs concurrently).
    pub(crate) fn pops(&self) -> u64 {
        self.head.load(Ordering::SeqCst)
    }

    /// How many values were ever pushed (exact when nothing runs concurrently).
    pub(crate) fn pushes(&self) -> u64 {
        self.tail.load(Ordering::SeqCst)
    }

    /// [`IndexRing::pushes`], read with a read-modify-write that changes nothing (`AcqRel`).
    /// Every write to `tail` is a read-modify-write, so any push whose claim comes later in
    /// `tail`'s order reads from this one's release sequence and happens after everything the
    /// caller did before; a push that came earlier is counted. Sleepers re-check a ring with
    /// it, which spares the pushing side a fence (see `super::waiters`).
    pub(crate) fn pushes_acquired(&self) -> u64 {
        self.tail.fetch_add(0, Ordering::AcqRel)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_full() {
        let ring = IndexRing::with_capacity(3).unwrap();
        for v in 0..4 {
            ring.push(v).unwrap();
        }
        assert_eq!(ring.push(9), Err(9));
        for (p, v) in (0..4).enumerate() {
            assert_eq!(ring.pop(), Some((p as u64, v)));
        }
        assert_eq!(ring.pop(), None);
    }

    /// A ring asked for room for one value still tells full from empty: with one cell the
    /// stamp of "full, waiting for the pop at p" equals that of "empty, waiting for the push
    /// at p + 1", so it took every push and overwrote values. It gets two cells instead.
    #[test]
    fn a_ring_for_one_value_reports_full() {
        let ring = IndexRing::with_capacity(1).unwrap();
        ring.push(1).unwrap();
        ring.push(2).unwrap();
        assert_eq!(ring.push(3), Err(3));
        assert_eq!(ring.pop(), Some((0, 1)));
        assert_eq!(ring.pop(), Some((1, 2)));
        assert_eq!(ring.pop(), None);
    }

    #[test]
    fn many_laps_keep_order() {
        let ring = IndexRing::with_capacity(2).unwrap();
        for v in 0..10_000u32 {
            ring.push(v).unwrap();
            assert_eq!(ring.pop(), Some((u64::from(v), v)));
        }
    }

    #[test]
    fn concurrent_values_each_popped_once() {
        const PER_THREAD: u32 = 20_000;
        let ring = IndexRing::with_capacity(64).unwrap();
        let seen: Vec<AtomicU64> = (0..2 * PER_THREAD).map(|_| AtomicU64::new(0)).collect();
        std::thread::scope(|s| {
            for t in 0..2 {
                let ring = &ring;
                s.spawn(move || {
                    for v in t * PER_THREAD..(t + 1) * PER_THREAD {
                        while ring.push(v).is_err() {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for _ in 0..2 {
                let (ring, seen) = (&ring, &seen);
                s.spawn(move || {
                    let mut got = 0;
                    while got < PER_THREAD {
                        if let Some((_, v)) = ring.pop() {
                            seen[v as usize].fetch_add(1, Ordering::Relaxed);
                            got += 1;
                        } else {
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }
}

#[cfg(all(test, not(loom)))]
mod cycling_tests {
    use super::*;

    /// The crate's use: every index is always in the ring or held by one thread, so a push of
    /// a popped index must never find the ring full, however the threads interleave.
    #[test]
    fn cycling_indices_never_find_the_ring_full() {
        for size in [1usize, 2, 4, 64] {
            let ring = IndexRing::with_capacity(size).unwrap();
            for i in 0..size as u32 {
                ring.push(i).unwrap();
            }
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let ring = &ring;
                    s.spawn(move || {
                        for n in 0..200_000u32 {
                            if let Some((_, v)) = ring.pop() {
                                if n % 64 == 0 {
                                    std::thread::yield_now();
                                }
                                ring.push(v).expect("a popped index always fits back");
                            }
                        }
                    });
                }
            });
        }
    }
}
