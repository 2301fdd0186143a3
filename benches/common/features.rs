//! Issue 11's workloads: FIFO message groups, priorities and at-most-once receive, each run on
//! visq with the feature, on visq's plain queue, and on the lock-based reference extended to
//! the feature (`lockref_features.rs`; plain `lockref.rs` for at-most-once), in the same run.
//!
//! * **Groups** (1, 16 and 10,000): message `n` goes to group `n % groups`; send with its
//!   group, receive, delete. visq is built with [`lanes`]: 4x the groups that can hold messages
//!   at once (all of them, or `capacity` if fewer), rounded up to a power of two, the rule its
//!   docs recommend. The plain queue gets the same sends without a group.
//! * **Priorities** (4 levels): message `n` gets priority `PRIORITIES[n % 4096]`, a fixed
//!   random table (drawn once, outside the timed loop, the same for every queue); send with
//!   it, receive, delete. The plain queue ignores it.
//! * **At-most-once**: send and `take` (visq's `try_take`/`take`; the reference's, which frees
//!   the slot as it hands the body over) against send, receive and delete on visq's plain
//!   queue.
//!
//! Threads: 1P1C and 2P2C (receive batch 1) for groups and priorities; uncontended (one
//! thread, one message at a time) and 1P1C for at-most-once. A threaded run ends when the consumers have
//! settled `messages` in all (counted; the last one closes the queue, which wakes the others):
//! a STOP message cannot end a grouped or prioritised run, since it would not come last.
//! Every run is bounded by a deadline and reports `None` past it or if any message is
//! unaccounted for.

use super::adapters::{Config, Lease};
use super::lockref::{Fifo, LockRef, Order, Tag};
use super::lockref_features::{Groups, Priorities};
use super::throughput::{run_threads, send_until_with, Shape, CAPACITY, WAIT};
use super::Rng;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The group counts of the grouped cells.
pub const GROUP_COUNTS: [u64; 3] = [1, 16, 10_000];
/// Priority levels of the priority cells.
pub const LEVELS: u8 = 4;
/// The capacities every cell runs at.
pub const CAPACITIES: [usize; 2] = [CAPACITY, 1 << 20];
/// The threaded shapes: 1P1C and 2P2C, receive batch 1 (at-most-once: 1P1C only).
pub const SHAPES: [Shape; 2] = [Shape::new(1, 1, 1), Shape::new(2, 2, 1)];
/// Entries of the priority table (message `n` takes entry `n % PRIORITY_TABLE`).
const PRIORITY_TABLE: usize = 4096;

/// What a cell measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Messages spread over this many groups.
    Groups(u64),
    /// [`LEVELS`] priorities, drawn at random.
    Priorities,
    /// `take` against receive and delete.
    AtMostOnce,
}

impl Feature {
    /// "16 groups", "4 priorities", "at-most-once".
    pub fn label(self) -> String {
        match self {
            Feature::Groups(1) => "1 group".into(),
            Feature::Groups(n) => format!("{} groups", thousands(n)),
            Feature::Priorities => format!("{LEVELS} priorities"),
            Feature::AtMostOnce => "at-most-once".into(),
        }
    }

    /// "groups-16", "priorities", "at-most-once": for benchmark ids.
    pub fn key(self) -> String {
        match self {
            Feature::Groups(n) => format!("groups-{n}"),
            Feature::Priorities => "priorities".into(),
            Feature::AtMostOnce => "at-most-once".into(),
        }
    }
}

/// `10000` as "10,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The queues of every cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Contender {
    /// visq with the cell's feature (at-most-once: `take`).
    Visq,
    /// visq's plain queue: no groups, no priorities; receive and delete.
    VisqPlain,
    /// The lock-based reference with the cell's feature.
    LockRef,
}

impl Contender {
    pub const ALL: [Contender; 3] = [Contender::Visq, Contender::VisqPlain, Contender::LockRef];

    /// Its name in a cell of `feature`.
    pub fn name(self, feature: Feature) -> &'static str {
        match (self, feature) {
            (Contender::Visq, Feature::Groups(_)) => "visq, grouped",
            (Contender::Visq, Feature::Priorities) => "visq, 4 priorities",
            (Contender::Visq, Feature::AtMostOnce) => "visq take",
            (Contender::VisqPlain, Feature::AtMostOnce) => "visq receive+delete",
            (Contender::VisqPlain, _) => "visq plain",
            (Contender::LockRef, Feature::Groups(_)) => "lock-based ref, grouped",
            (Contender::LockRef, Feature::Priorities) => "lock-based ref, 4 priorities",
            (Contender::LockRef, Feature::AtMostOnce) => "lock-based ref take",
        }
    }
}

/// How a cell's threads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// One thread: send, then receive and delete (or take) that message, in a loop.
    Uncontended,
    /// Producers and consumers on their own threads.
    Shape(Shape),
}

impl Threads {
    /// "uncontended", "1P1C".
    pub fn label(self) -> String {
        match self {
            Threads::Uncontended => "uncontended".into(),
            Threads::Shape(shape) => shape.threads(),
        }
    }
}

/// One cell: a feature, its threads, the capacity every queue is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub feature: Feature,
    pub threads: Threads,
    pub capacity: usize,
}

impl Cell {
    /// "groups-16/2P2C/1048576": for benchmark ids.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.feature.key(),
            self.threads.label(),
            self.capacity
        )
    }
}

/// Every cell of the benchmarks, in report order: groups, priorities, at-most-once; each at
/// every capacity of [`CAPACITIES`].
pub fn cells() -> Vec<Cell> {
    let mut all = Vec::new();
    let features = GROUP_COUNTS
        .iter()
        .map(|&n| Feature::Groups(n))
        .chain([Feature::Priorities, Feature::AtMostOnce]);
    for feature in features {
        let threads = if feature == Feature::AtMostOnce {
            vec![Threads::Uncontended, Threads::Shape(SHAPES[0])]
        } else {
            SHAPES.iter().map(|&s| Threads::Shape(s)).collect()
        };
        for &capacity in &CAPACITIES {
            for &threads in &threads {
                all.push(Cell {
                    feature,
                    threads,
                    capacity,
                });
            }
        }
    }
    all
}

/// The lanes visq is built with for `groups` groups at `capacity`: 4x the groups that can hold
/// messages at once (at most `capacity` can), rounded up to a power of two.
pub fn lanes(groups: u64, capacity: usize) -> usize {
    let holding = usize::try_from(groups).map_or(capacity, |g| g.min(capacity));
    (4 * holding).next_power_of_two()
}

/// How a consumer settles what it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settle {
    ReceiveDelete,
    Take,
}

/// What each message is sent with.
struct Tags {
    groups: Option<u64>,
    /// Message `n`'s priority is `priorities[n % PRIORITY_TABLE]` (empty: 0).
    priorities: Vec<u8>,
}

impl Tags {
    fn new(feature: Feature, contender: Contender) -> Self {
        let plain = Tags {
            groups: None,
            priorities: Vec::new(),
        };
        match (feature, contender) {
            (_, Contender::VisqPlain) | (Feature::AtMostOnce, _) => plain,
            (Feature::Groups(groups), _) => Tags {
                groups: Some(groups),
                ..plain
            },
            (Feature::Priorities, _) => {
                let mut rng = Rng::new(0x5eed_0011);
                Tags {
                    priorities: (0..PRIORITY_TABLE)
                        .map(|_| rng.below(u64::from(LEVELS)) as u8)
                        .collect(),
                    ..plain
                }
            }
        }
    }

    #[inline]
    fn of(&self, n: u64) -> Tag {
        Tag {
            priority: if self.priorities.is_empty() {
                0
            } else {
                self.priorities[n as usize % PRIORITY_TABLE]
            },
            group: self.groups.map(|groups| n % groups),
        }
    }
}

/// What the feature workloads need beyond [`Lease`]: a send with a tag, and at-most-once.
trait Featured: Lease<u64> {
    fn send_tagged(&self, body: u64, tag: Tag) -> Result<(), u64>;
    fn try_take(&self) -> Option<u64>;
    fn take(&self, wait: Duration) -> Option<u64>;
}

impl Featured for visq::Queue<u64> {
    #[inline]
    fn send_tagged(&self, body: u64, tag: Tag) -> Result<(), u64> {
        if tag == Tag::PLAIN {
            return Lease::send(self, body);
        }
        let mut options = visq::SendOptions::new().priority(tag.priority);
        if let Some(group) = tag.group {
            options = options.group(group);
        }
        self.send_with(body, &options)
            .map(drop)
            .map_err(visq::SendError::into_inner)
    }

    #[inline]
    fn try_take(&self) -> Option<u64> {
        visq::Queue::try_take(self).map(visq::Taken::into_body)
    }

    #[inline]
    fn take(&self, wait: Duration) -> Option<u64> {
        visq::Queue::take(self, wait).map(visq::Taken::into_body)
    }
}

impl<R: Order> Featured for LockRef<u64, R> {
    #[inline]
    fn send_tagged(&self, body: u64, tag: Tag) -> Result<(), u64> {
        LockRef::send_tagged(self, body, tag).map(drop)
    }

    #[inline]
    fn try_take(&self) -> Option<u64> {
        LockRef::try_take(self)
    }

    #[inline]
    fn take(&self, wait: Duration) -> Option<u64> {
        LockRef::take(self, wait)
    }
}

/// The settings of `contender`'s queue in `cell`.
fn config(cell: &Cell, contender: Contender) -> Config {
    let config = Config::new(cell.capacity);
    match (contender, cell.feature) {
        (Contender::Visq, Feature::Groups(groups)) => {
            config.group_lanes(lanes(groups, cell.capacity))
        }
        (Contender::Visq, Feature::Priorities) => config.priorities(LEVELS),
        _ => config,
    }
}

fn settle(cell: &Cell, contender: Contender) -> Settle {
    match (contender, cell.feature) {
        (Contender::Visq | Contender::LockRef, Feature::AtMostOnce) => Settle::Take,
        _ => Settle::ReceiveDelete,
    }
}

/// Time for `messages` through `cell` (threaded) on `contender`; `None` if the run passed
/// `limit` or lost count.
pub fn throughput(
    cell: &Cell,
    contender: Contender,
    messages: u64,
    limit: Duration,
) -> Option<Duration> {
    let Threads::Shape(shape) = cell.threads else {
        return None;
    };
    let tags = Tags::new(cell.feature, contender);
    let settle = settle(cell, contender);
    let config = config(cell, contender);
    let run = Run {
        shape,
        messages,
        limit,
        tags: &tags,
        settle,
    };
    match (contender, cell.feature) {
        (Contender::Visq | Contender::VisqPlain, _) => run.on(&visq::Queue::build(&config)),
        (Contender::LockRef, Feature::Groups(_)) => run.on(&LockRef::<u64, Groups>::build(&config)),
        (Contender::LockRef, Feature::Priorities) => {
            run.on(&LockRef::<u64, Priorities>::build(&config))
        }
        (Contender::LockRef, Feature::AtMostOnce) => run.on(&LockRef::<u64, Fifo>::build(&config)),
    }
}

/// Time for `ops` messages through `cell` on one thread (one message at a time, after 1,000
/// for warm-up) on `contender`.
pub fn uncontended(cell: &Cell, contender: Contender, ops: u64) -> Duration {
    let tags = Tags::new(cell.feature, contender);
    let settle = settle(cell, contender);
    let config = config(cell, contender);
    match (contender, cell.feature) {
        (Contender::Visq | Contender::VisqPlain, _) => {
            one_thread(&visq::Queue::build(&config), &tags, settle, ops)
        }
        (Contender::LockRef, Feature::Groups(_)) => {
            one_thread(&LockRef::<u64, Groups>::build(&config), &tags, settle, ops)
        }
        (Contender::LockRef, Feature::Priorities) => one_thread(
            &LockRef::<u64, Priorities>::build(&config),
            &tags,
            settle,
            ops,
        ),
        (Contender::LockRef, Feature::AtMostOnce) => {
            one_thread(&LockRef::<u64, Fifo>::build(&config), &tags, settle, ops)
        }
    }
}

fn one_thread<Q: Featured>(q: &Q, tags: &Tags, settle: Settle, ops: u64) -> Duration {
    let once = |n: u64| {
        if q.send_tagged(n, tags.of(n)).is_err() {
            panic!("{}: an empty queue refused a send", Q::NAME);
        }
        match settle {
            Settle::Take => {
                black_box(q.try_take().expect("the message just sent"));
            }
            Settle::ReceiveDelete => {
                let delivery = q.try_receive().expect("the message just sent");
                black_box(Q::body(&delivery));
                assert!(q.delete(&delivery), "{}: a fresh lease refused", Q::NAME);
            }
        }
    };
    for n in 0..1000 {
        once(n);
    }
    let start = Instant::now();
    for n in 0..ops {
        once(n);
    }
    start.elapsed()
}

/// One threaded run's settings.
struct Run<'a> {
    shape: Shape,
    messages: u64,
    limit: Duration,
    tags: &'a Tags,
    settle: Settle,
}

impl Run<'_> {
    fn on<Q: Featured>(&self, q: &Q) -> Option<Duration> {
        let deadline = Instant::now() + self.limit;
        let failed = AtomicBool::new(false);
        let settled = AtomicU64::new(0);
        let elapsed = run_threads(
            self.shape,
            self.messages,
            |range| {
                for n in range {
                    let send = |body| q.send_tagged(body, self.tags.of(n));
                    if !send_until_with(send, n, deadline, &failed) {
                        q.close();
                        return;
                    }
                }
            },
            || {},
            || self.consume(q, &settled, deadline, &failed),
        );
        let complete = settled.load(Ordering::Relaxed) == self.messages;
        (complete && !failed.load(Ordering::Relaxed)).then_some(elapsed)
    }

    /// Settles messages until `messages` are settled in all. The consumer that settles the
    /// last one returns the time it did and closes the queue; the others return the time they
    /// started (so the run's end is the last settle).
    fn consume<Q: Featured>(
        &self,
        q: &Q,
        settled: &AtomicU64,
        deadline: Instant,
        failed: &AtomicBool,
    ) -> Instant {
        let start = Instant::now();
        let mut rounds = 0u32;
        loop {
            let got = match self.settle {
                Settle::Take => q.take(WAIT).map(black_box).is_some(),
                Settle::ReceiveDelete => match q.receive(WAIT) {
                    Some(delivery) => {
                        black_box(Q::body(&delivery));
                        if !q.delete(&delivery) {
                            // A 30 s lease cannot end in a bounded run: count it as lost.
                            failed.store(true, Ordering::Relaxed);
                        }
                        true
                    }
                    None => false,
                },
            };
            if got && settled.fetch_add(1, Ordering::AcqRel) + 1 == self.messages {
                let end = Instant::now();
                q.close();
                return end;
            }
            rounds = rounds.wrapping_add(1);
            if !got || rounds % 1024 == 0 {
                if settled.load(Ordering::Acquire) >= self.messages {
                    return start;
                }
                if failed.load(Ordering::Relaxed) || Instant::now() > deadline {
                    failed.store(true, Ordering::Relaxed);
                    q.close();
                    return start;
                }
            }
        }
    }
}
