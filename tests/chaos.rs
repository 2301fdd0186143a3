//! A randomized multi-threaded test that mixes every queue operation on a real clock with tiny
//! timeouts (tick 1 ms, leases of a few ms): sends and delayed sends, every kind of receive,
//! delete, release, nack with delays, change_visibility both ways, abandoned leases, close,
//! stats, dead letters into a small dead-letter queue that is often full, and receipts that the
//! queue did not issue (another queue's, and forged ones). Issue 9, "memory safety under real
//! concurrency"; `.ci/run` also runs it under AddressSanitizer.
//!
//! Bounded: a fixed number of operations per thread and a wall-clock budget (whichever ends
//! first), then a bounded drain. The seed is printed; rerun one with `VISQ_CHAOS_SEED=<seed>`.
//!
//! # What is checked
//!
//! Every message body carries a number unique to it (its `value`), so the test knows which
//! message each delivery, delete and drained leftover is:
//!
//! * **Bodies**: every body made (sent, or cloned into a delivery) is dropped exactly once,
//!   once the queues and every delivery are gone ([`Counts::live`] is 0).
//! * **A settled receipt stays settled**: after a delete, release, nack or
//!   `change_visibility(.., 0)` with a queue's own receipt returns `Ok`, settling that receipt
//!   again must fail.
//! * **Each message ends exactly once**: a message is deleted with its own queue's receipt at
//!   most once, or is still held at the end (drained from its queue or the dead-letter queue),
//!   never both and never twice; and every message sent is one of those, except the ones that
//!   a forged receipt deleted (a forged receipt built from a real slot number and a guessed
//!   lease count can be bit for bit one the queue issued: such a delete removed *some* message
//!   of that queue, so the count of those is subtracted rather than attributed). No value that was never sent ever shows up.
//! * **At rest**, each queue is empty and its stats add up: `sent == deleted + dead_lettered`
//!   and `received == deleted + released + expired`, and `sent` is the test's own count.
//!
//! * **Foreign receipts never succeed**: a receipt of one queue settles nothing in the other.

#[path = "support/counted_body.rs"]
mod counted_body;
#[path = "support/rng.rs"]
mod rng;

use counted_body::{Body, Counts};
use rng::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use visq::{Delivery, Nack, Queue, Receipt, SendError};

const THREADS: usize = 4;
const OPS_PER_THREAD: usize = 25_000;
/// Wall-clock budget of the mixed phase (the drain has its own).
const BUDGET: Duration = Duration::from_secs(3);
const DRAIN_BUDGET: Duration = Duration::from_secs(5);
const CAPACITY: usize = 32;
const DLQ_CAPACITY: usize = 4;
/// Receives before a return goes to the dead-letter queue (main queue only).
const MAX_RECEIVES: u32 = 2;
/// Deliveries a thread holds at most.
const HELD: usize = 12;
/// Every value the run can send: at most one send per operation.
const VALUES: usize = THREADS * OPS_PER_THREAD;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The two queues under test: `MAIN` dead-letters into `DLQ`; `OTHER` has the same shape and
/// no dead-letter queue. Each thread uses both, so receipts of one are foreign to the other.
const MAIN: usize = 0;
const OTHER: usize = 1;
const DLQ: usize = 2;

/// What the threads record; everything indexed by a message's value.
struct Book {
    /// Which queue a value was sent to (`usize::MAX`: never sent).
    sent_to: Vec<AtomicUsize>,
    /// Deletes of a value with its own queue's receipt that returned `Ok`.
    deleted: Vec<AtomicUsize>,
    /// Times a value was drained at the end.
    drained: Vec<AtomicUsize>,
    /// Sends that returned `Ok`, per queue.
    sends: [AtomicU64; 2],
    /// Settles with a receipt that queue did not issue which returned `Ok`: (any kind, deletes).
    foreign_ok: AtomicU64,
    forged_deletes: AtomicU64,
    /// Operations done, for the report.
    ops: AtomicU64,
    next_value: AtomicUsize,
}

impl Book {
    fn new() -> Self {
        let column = |fill: usize| (0..VALUES).map(|_| AtomicUsize::new(fill)).collect();
        Self {
            sent_to: column(usize::MAX),
            deleted: column(0),
            drained: column(0),
            sends: [AtomicU64::new(0), AtomicU64::new(0)],
            foreign_ok: AtomicU64::new(0),
            forged_deletes: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            next_value: AtomicUsize::new(0),
        }
    }
}

/// A delivery a thread holds, with the queue (`MAIN` / `OTHER` / `DLQ`) that issued it.
struct Held {
    queue: usize,
    delivery: Delivery<Body>,
}

struct Run {
    queues: [Arc<Queue<Body>>; 3],
    counts: Arc<Counts>,
    book: Book,
    closed: AtomicBool,
}

fn seed() -> u64 {
    std::env::var("VISQ_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

impl Run {
    fn new() -> Self {
        let build = |capacity: usize| {
            Queue::builder()
                .capacity(capacity)
                .tick(ms(1))
                .visibility_timeout(ms(3))
        };
        let dlq = Arc::new(build(DLQ_CAPACITY).build().unwrap());
        let main = build(CAPACITY)
            .dead_letter(dlq.clone(), MAX_RECEIVES)
            .build()
            .unwrap();
        let other = build(CAPACITY).build().unwrap();
        Self {
            queues: [Arc::new(main), Arc::new(other), dlq],
            counts: Counts::new(),
            book: Book::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// One thread's share of the mixed phase; returns the deliveries it still holds.
    fn worker(&self, index: usize, seed: u64, start: &Barrier) -> Vec<Held> {
        let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut held: Vec<Held> = Vec::new();
        let mut batch = Vec::with_capacity(4);
        start.wait();
        let began = Instant::now();
        for op in 0..OPS_PER_THREAD {
            if began.elapsed() > BUDGET {
                break;
            }
            self.book.ops.fetch_add(1, Ordering::Relaxed);
            // The main queue closes once, three quarters of the way through thread 0's share.
            if index == 0 && op == OPS_PER_THREAD * 3 / 4 {
                // Flagged first, so that a `Closed` refusal always finds the flag set.
                self.closed.store(true, Ordering::SeqCst);
                self.queues[MAIN].close();
            }
            let target = if rng.below(3) == 0 { OTHER } else { MAIN };
            let queue = &self.queues[target];
            match rng.below(100) {
                0..=14 => self.send(target, Duration::ZERO),
                15..=19 => self.send(target, ms(rng.below(6))),
                20..=29 if held.len() < HELD => {
                    if let Some(delivery) = queue.try_receive() {
                        held.push(Held {
                            queue: target,
                            delivery,
                        });
                    }
                }
                30..=33 if held.len() < HELD => {
                    if let Some(delivery) = queue.receive(ms(rng.below(3))) {
                        held.push(Held {
                            queue: target,
                            delivery,
                        });
                    }
                }
                34..=38 if held.len() < HELD => {
                    let max = 1 + rng.below(4) as usize;
                    queue.receive_batch(&mut batch, max, ms(rng.below(2)));
                    held.extend(batch.drain(..).map(|delivery| Held {
                        queue: target,
                        delivery,
                    }));
                }
                39..=41 if held.len() < HELD => {
                    // The dead-letter queue: take what died, delete it.
                    if let Some(delivery) = self.queues[DLQ].try_receive() {
                        held.push(Held {
                            queue: DLQ,
                            delivery,
                        });
                        let last = held.len() - 1;
                        self.settle(&mut held, last, 0, &mut rng);
                    }
                }
                42..=71 if !held.is_empty() => {
                    let pick = rng.below(held.len() as u64) as usize;
                    let how = rng.below(8);
                    self.settle(&mut held, pick, how, &mut rng);
                }
                72..=77 if !held.is_empty() => {
                    // Another queue's receipt: a settle that must change nothing there.
                    let pick = &held[rng.below(held.len() as u64) as usize];
                    let foreign = if pick.queue == MAIN { OTHER } else { MAIN };
                    self.foreign(foreign, pick.delivery.receipt(), &mut rng);
                }
                78..=81 => {
                    // A forged receipt: a real slot, a small epoch.
                    let slot = rng.below(CAPACITY as u64);
                    let receipt = Receipt::from_u64(rng.below(64) << 28 | slot);
                    if queue.delete(receipt).is_ok() {
                        self.book.forged_deletes.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = queue.release(Receipt::from_u64(rng.next_u64()));
                }
                82..=84 => {
                    let stats = queue.stats();
                    let held_now = stats.ready + stats.delayed + stats.in_flight;
                    assert!(held_now <= queue.capacity(), "{stats:?}");
                    let dead = self.queues[DLQ].dead_letters(2);
                    assert!(dead.len() <= 2);
                }
                85..=89 if !held.is_empty() => {
                    // Abandon a lease: its deadline will return it.
                    let pick = rng.below(held.len() as u64) as usize;
                    held.swap_remove(pick);
                }
                _ => {}
            }
        }
        held
    }

    fn send(&self, target: usize, delay: Duration) {
        let value = self.book.next_value.fetch_add(1, Ordering::Relaxed);
        assert!(value < VALUES);
        let body = Body::new(&self.counts, value as u32);
        let queue = &self.queues[target];
        match queue.send_delayed(body, delay) {
            Ok(_) => {
                self.book.sent_to[value].store(target, Ordering::SeqCst);
                self.book.sends[target].fetch_add(1, Ordering::Relaxed);
            }
            Err(SendError::Full(body)) => assert_eq!(body.value, value as u32),
            Err(SendError::Closed(body)) => {
                assert!(target == MAIN && self.closed.load(Ordering::SeqCst));
                assert_eq!(body.value, value as u32);
            }
            Err(other) => panic!("send of {value}: {other:?}"),
        }
    }

    /// Settles `held[pick]` with its own queue's receipt, in the way `how` (0..8) names; one
    /// that ends the lease is then checked to stay settled.
    fn settle(&self, held: &mut Vec<Held>, pick: usize, how: u64, rng: &mut Rng) {
        let Held {
            queue: issuer,
            delivery,
        } = &held[pick];
        let (issuer, receipt) = (*issuer, delivery.receipt());
        let value = delivery.body().value as usize;
        let queue = &self.queues[issuer];
        let (result, ends) = match how {
            0..=2 => (queue.delete(receipt), true),
            3 => (queue.release(receipt), true),
            4 => {
                let nack = Nack::after(ms(rng.below(6))).reason("chaos");
                (queue.nack(receipt, nack), true)
            }
            5 => (
                queue.change_visibility(receipt, ms(1 + rng.below(10))),
                false,
            ),
            6 => (
                queue.change_visibility(receipt, Duration::from_micros(rng.below(2_000) + 1)),
                false,
            ),
            _ => (queue.change_visibility(receipt, Duration::ZERO), true),
        };
        if result.is_ok() && how <= 2 {
            let before = self.book.deleted[value].fetch_add(1, Ordering::SeqCst);
            assert_eq!(
                before, 0,
                "message {value} deleted twice with its own receipts"
            );
        }
        if result.is_err() || ends {
            let settled = held.swap_remove(pick);
            if result.is_ok() {
                let again = if rng.below(2) == 0 {
                    queue.delete(receipt)
                } else {
                    queue.release(receipt)
                };
                assert!(again.is_err(), "a settled receipt of {value} settled again");
            }
            drop(settled);
        }
    }

    /// A settle of `queue` with a receipt it did not issue.
    fn foreign(&self, queue: usize, receipt: Receipt, rng: &mut Rng) {
        let queue = &self.queues[queue];
        let result = match rng.below(4) {
            0 => queue.delete(receipt),
            1 => queue.release(receipt),
            2 => queue.nack(receipt, Nack::after(ms(1))),
            _ => queue.change_visibility(receipt, ms(5)),
        };
        if result.is_ok() {
            self.book.foreign_ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes every message left in the three queues (waiting out leases and delays), deleting
    /// each and counting its value as drained.
    fn drain(&self) {
        let began = Instant::now();
        loop {
            let mut empty = true;
            for queue in &self.queues {
                let stats = queue.stats();
                if stats.ready + stats.delayed + stats.in_flight > 0 {
                    empty = false;
                }
                // A receive's wait: leases and delays end on the real clock within a few ms.
                while let Some(delivery) = queue.receive(ms(2)) {
                    let value = delivery.body().value as usize;
                    // A delete that comes too late (lease expired) leaves it for a later pass.
                    if queue.delete(delivery.receipt()).is_ok() {
                        self.book.drained[value].fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            if empty {
                return;
            }
            assert!(
                began.elapsed() < DRAIN_BUDGET,
                "the queues did not drain: {:?}",
                self.queues.each_ref().map(|q| q.stats())
            );
        }
    }

    /// The checks of the module docs, at rest.
    fn check(&self) {
        let book = &self.book;
        let mut accounted = 0;
        let mut sent = 0;
        for value in 0..VALUES {
            let deleted = book.deleted[value].load(Ordering::SeqCst);
            let drained = book.drained[value].load(Ordering::SeqCst);
            if book.sent_to[value].load(Ordering::SeqCst) == usize::MAX {
                assert_eq!((deleted, drained), (0, 0), "value {value} was never sent");
                continue;
            }
            sent += 1;
            assert!(
                deleted + drained <= 1,
                "message {value}: deleted {deleted} times, drained {drained} times"
            );
            accounted += deleted + drained;
        }
        let unattributed = book.forged_deletes.load(Ordering::SeqCst);
        assert_eq!(
            accounted as u64 + unattributed,
            sent as u64,
            "messages lost: {sent} sent, {accounted} deleted or drained, {unattributed} deleted \
             by forged receipts"
        );
        assert_eq!(
            book.foreign_ok.load(Ordering::SeqCst),
            0,
            "a receipt from another queue settled a message"
        );
        for (index, queue) in self.queues.iter().enumerate() {
            let s = queue.stats();
            assert_eq!(
                (s.ready, s.delayed, s.in_flight),
                (0, 0, 0),
                "queue {index}: {s:?}"
            );
            assert_eq!(
                s.received,
                s.deleted + s.released + s.expired,
                "queue {index}: {s:?}"
            );
            if index != DLQ {
                assert_eq!(
                    s.sent,
                    book.sends[index].load(Ordering::SeqCst),
                    "queue {index}"
                );
                assert_eq!(s.sent, s.deleted + s.dead_lettered, "queue {index}: {s:?}");
            }
        }
    }
}

/// The mixed phase, the drain and the checks, for one seed.
fn chaos() {
    let seed = seed();
    println!("chaos seed {seed} (rerun with VISQ_CHAOS_SEED={seed})");
    let run = Run::new();
    let start = Barrier::new(THREADS);
    let held: Vec<Held> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|index| {
                let (run, start) = (&run, &start);
                scope.spawn(move || run.worker(index, seed, start))
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    // What the threads still hold is abandoned: those leases expire and come back.
    drop(held);
    run.drain();
    let book = &run.book;
    println!(
        "{} ops; sent {:?}; foreign settles ok {}; deleted by forged receipts {}; main {:?}",
        book.ops.load(Ordering::SeqCst),
        book.sends.each_ref().map(|n| n.load(Ordering::SeqCst)),
        book.foreign_ok.load(Ordering::SeqCst),
        book.forged_deletes.load(Ordering::SeqCst),
        run.queues[MAIN].stats(),
    );
    run.check();
    let Run { queues, counts, .. } = run;
    drop(queues);
    assert_eq!(
        counts.live(),
        0,
        "bodies made, cloned, dropped: {:?}",
        counts.all()
    );
}

#[test]
fn every_operation_mixed_on_a_real_clock_loses_and_duplicates_nothing() {
    chaos();
}
