//! The cost of deadline bookkeeping with many pending deadlines, measured through the public
//! API: visq (hierarchical timing wheel) against the lock-based reference (`BinaryHeap`).
//!
//! A [`Fixture`] holds `pending` in-flight messages whose deadlines are spread evenly over the
//! next visibility timeout (30 s): it leases them one by one while a [`ManualClock`] advances
//! `30 s / pending` between leases, as a queue receiving at a steady rate would. Then:
//!
//! * **lease** (insert): send a chunk of messages (untimed), time `try_receive` of each (which
//!   files a deadline), delete them (untimed). Per receive.
//! * **expire**: advance the clock so that about 64 deadlines pass, time the one `try_receive`
//!   that processes them all (and leases one of them), then re-lease the rest (untimed) so that
//!   `pending` stays the same and deadlines stay spread. Per expired lease.
//! * **change_visibility** (lease extension): on random pending leases, set a random new
//!   timeout between 1 ms and 60 s (about a quarter shorten the lease, the rest extend it).
//!   The clock stands still, so every receipt stays valid. Per call.
//!
//! Every measured operation goes through the whole queue (ring or list, slot, clock read), not
//! the wheel alone; the wheel is internal to visq. Growth from 1 k to 1 M pending is what the
//! benchmark shows.

use super::adapters::{Config, Contender, Lease};
use super::lockref::LockRef;
use super::Rng;
use std::time::{Duration, Instant};
use visq::ManualClock;

/// The visibility timeout of the fixtures.
pub const VISIBILITY: Duration = Duration::from_secs(30);
/// The pending-deadline counts of the issue.
pub const PENDING: [usize; 3] = [1_000, 100_000, 1_000_000];
/// Messages per timed chunk of leases or changes.
const CHUNK: u64 = 1024;
/// Deadlines passing per expiry step.
const EXPIRIES_PER_STEP: f64 = 64.0;

/// The three measured operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lease,
    Expire,
    Change,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Lease, Op::Expire, Op::Change];

    pub fn label(self) -> &'static str {
        match self {
            Op::Lease => "lease (receive, files a deadline)",
            Op::Expire => "expiry (per expired lease)",
            Op::Change => "change_visibility (random 1 ms..60 s)",
        }
    }

    /// A short name for plot labels.
    pub fn short(self) -> &'static str {
        match self {
            Op::Lease => "lease",
            Op::Expire => "expiry",
            Op::Change => "change vis.",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Op::Lease => "lease",
            Op::Expire => "expire",
            Op::Change => "change_visibility",
        }
    }
}

/// `pending` in-flight messages with spread deadlines on one queue; see the module docs.
pub struct Fixture<Q: Lease<u64>> {
    q: Q,
    clock: ManualClock,
    receipts: Vec<Q::Receipt>,
    pending: usize,
    rng: Rng,
    next: u64,
    batch: Vec<Q::Delivery>,
    /// change_visibility calls that were refused (must stay 0).
    pub refused: u64,
}

impl<Q: Lease<u64>> Fixture<Q> {
    /// Builds the queue and leases `pending` messages; keeps their receipts if asked (for
    /// change_visibility).
    pub fn new(pending: usize, keep_receipts: bool) -> Self {
        let clock = ManualClock::new();
        let config = Config::new(pending + CHUNK as usize)
            .visibility_timeout(VISIBILITY)
            .clock(clock.clone());
        let q = Q::build(&config);
        let step = VISIBILITY / pending as u32;
        let mut receipts = Vec::with_capacity(if keep_receipts { pending } else { 0 });
        for i in 0..pending {
            assert!(q.send(i as u64).is_ok(), "room for every pending message");
            let delivery = q.try_receive().expect("the message just sent");
            if keep_receipts {
                receipts.push(Q::receipt(&delivery));
            }
            if i + 1 < pending {
                clock.advance(step);
            }
        }
        Fixture {
            q,
            clock,
            receipts,
            pending,
            rng: Rng::new(0x9E37_79B9_7F4A_7C15),
            next: pending as u64,
            batch: Vec::with_capacity(CHUNK as usize),
            refused: 0,
        }
    }

    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Timed: `ops` receives, each filing a deadline.
    pub fn lease(&mut self, ops: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < ops {
            let chunk = CHUNK.min(ops - done);
            for _ in 0..chunk {
                assert!(self.q.send(self.next).is_ok(), "room for a chunk");
                self.next += 1;
            }
            let start = Instant::now();
            for _ in 0..chunk {
                self.batch
                    .push(self.q.try_receive().expect("the message just sent"));
            }
            total += start.elapsed();
            for delivery in self.batch.drain(..) {
                self.q.delete(&delivery);
            }
            done += chunk;
        }
        total
    }

    /// Timed: the processing of (about) `ops` expiries, scaled to exactly `ops`.
    pub fn expire(&mut self, ops: u64) -> Duration {
        let advance = VISIBILITY.mul_f64(EXPIRIES_PER_STEP / self.pending as f64);
        let mut total = Duration::ZERO;
        let mut expired = 0u64;
        while expired < ops.max(1) {
            self.clock.advance(advance);
            let start = Instant::now();
            let first = self.q.try_receive();
            total += start.elapsed();
            if first.is_none() {
                continue;
            }
            // Re-lease the rest; dropping a delivery does not settle it, so each message stays
            // in flight with its new deadline.
            let mut count = 1;
            while self.q.try_receive().is_some() {
                count += 1;
            }
            expired += count;
        }
        total.mul_f64(ops as f64 / expired as f64)
    }

    /// Timed: `ops` change_visibility calls on random pending leases.
    pub fn change(&mut self, ops: u64) -> Duration {
        assert_eq!(
            self.receipts.len(),
            self.pending,
            "a fixture built with its receipts"
        );
        let mut total = Duration::ZERO;
        let mut done = 0;
        let pending = self.pending as u64;
        while done < ops {
            let chunk = CHUNK.min(ops - done);
            let start = Instant::now();
            for _ in 0..chunk {
                let receipt = &self.receipts[self.rng.below(pending) as usize];
                let timeout = Duration::from_millis(1 + self.rng.below(60_000));
                if !self.q.change_visibility(receipt, timeout) {
                    self.refused += 1;
                }
            }
            total += start.elapsed();
            done += chunk;
        }
        total
    }

    /// Runs `op` for `ops` operations; the time they took.
    pub fn run(&mut self, op: Op, ops: u64) -> Duration {
        match op {
            Op::Lease => self.lease(ops),
            Op::Expire => self.expire(ops),
            Op::Change => self.change(ops),
        }
    }
}

/// A fixture of either measured queue.
pub enum AnyFixture {
    Visq(Box<Fixture<visq::Queue<u64>>>),
    LockRef(Box<Fixture<LockRef<u64>>>),
}

impl AnyFixture {
    /// The queues measured here: visq and the lock-based reference.
    pub const CONTENDERS: [Contender; 2] = [Contender::Visq, Contender::LockRef];

    pub fn new(contender: Contender, pending: usize, keep_receipts: bool) -> Self {
        match contender {
            Contender::Visq => AnyFixture::Visq(Box::new(Fixture::new(pending, keep_receipts))),
            Contender::LockRef => {
                AnyFixture::LockRef(Box::new(Fixture::new(pending, keep_receipts)))
            }
            other => panic!("no wheel fixture for {}", other.name()),
        }
    }

    pub fn run(&mut self, op: Op, ops: u64) -> Duration {
        match self {
            AnyFixture::Visq(f) => f.run(op, ops),
            AnyFixture::LockRef(f) => f.run(op, ops),
        }
    }

    pub fn refused(&self) -> u64 {
        match self {
            AnyFixture::Visq(f) => f.refused,
            AnyFixture::LockRef(f) => f.refused,
        }
    }
}
