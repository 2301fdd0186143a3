//! Multi-threaded stress tests: producers and consumers hammer one queue while the consumers
//! delete, release, extend, shorten or abandon their leases at random, and queue time is a
//! shared [`ManualClock`] that the threads themselves advance (nothing sleeps to let queue time
//! pass; the few sleeps below only pace a helper thread in wall-clock time).
//!
//! Every test is bounded in work (a fixed number of messages and a hard iteration cap per
//! thread) and in wall-clock time: a soft deadline fails the test with a diagnosis, and a
//! watchdog fails it if the threads do not even come back (a hang).
//!
//! # What is checked, and why each check is sound with expiry
//!
//! Each message `m` (its body carries `m` and a checksum) has a [`Track`]:
//!
//! * **Exactly once.** `deletes[m]` counts successful deletes and `dead[m]` appearances in the
//!   dead-letter queue; at the end each message has exactly one of the two, and a deleted
//!   message's deleted lease is its last one. A delivery of a lease newer than the deleted one
//!   fails at once (bookings may run late, so an *older* lease booked after the delete is fine).
//! * **One valid lease at a time.** `receive_count` numbers the leases of a message (1, 2, ...,
//!   by contract), so `latest[m]` keeps the highest lease number handed out (`fetch_max` right
//!   after the receive). A newer lease can only exist once the older one has ended, and an
//!   ended lease's receipt must be refused, so a settle (`delete`, `release`,
//!   `change_visibility`) that returns `Ok` must have read `latest[m] ==` its own lease number
//!   *before* the call (a larger value means a second lease was issued while this one was still
//!   valid); after a successful delete it must still be equal (no lease can follow a delete).
//!   Lease numbers of a message must also be unique (a lease handed out twice) and, at the end,
//!   exactly `1..=deliveries`.
//! * **Lease deadlines, from the holder's side.** A lease taken at queue time `t0` with timeout
//!   `v` has its deadline in `[t0 + v, ceil_tick(t0 + v)]`; the holder reads the clock before
//!   (`c0 <= t0`) and after (`c1 >= t0`) the receive, so `lb = c0 + v` and
//!   `ub = ceil_tick(c1 + v)` bound it (the same after a successful `change_visibility`).
//!   Any refusal (`Expired` / `Stale`) of the holder's receipt must come with the clock at
//!   `>= lb` after the call (the lease cannot have ended earlier), and any `Ok` with the clock
//!   `< ub` before the call (it cannot still be valid later). Some actions deliberately run the
//!   clock past `ub` and then require a refusal; others run it up to just before `lb` (after
//!   an extension, past the original deadline) so that a wrong refusal shows.
//! * **Never visible early.** Per message, under a mutex, the lower bound of when it may next
//!   become visible: `c0 + v` for the newest recorded lease, lowered (before the call) by a
//!   release or a shortening and raised after a successful extension; a send_delayed sets
//!   `c_send + delay`. A newer lease must be received with the clock after the receive at or
//!   past that bound.
//! * **Stats identities**, derived from the source: every lease ends exactly once, by delete
//!   (`deleted`), release or `change_visibility(.., 0)` (`released`) or its deadline
//!   (`expired`); so at rest `received == deleted + released + expired`, and every message
//!   sent is deleted or dead-lettered: `sent == deleted + dead_lettered`, with
//!   `ready == delayed == in_flight == 0`. The totals must also equal the test's own counts of
//!   successful receives, deletes and releases.
//! * **Bodies**: each live body (in the queue or cloned into a delivery) is counted; after the
//!   queues and every delivery are dropped the count is zero (nothing leaked or dropped twice).

use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst,
};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use visq::{Delivery, ManualClock, Queue, Receipt, ReceiptError, SendError, Stats, MAX_TIMEOUT};

const TICK: Duration = Duration::from_millis(1);
const VISIBILITY: Duration = Duration::from_millis(20);
/// Hard cap on the loop iterations of any one thread; hitting it fails the test.
const ITERATION_CAP: u64 = 10_000_000;
/// Soft wall-clock deadline of one scenario; hitting it fails the test with a diagnosis.
const DEADLINE: Duration = Duration::from_secs(40);
/// If the scenario's threads have not come back by then, the test fails as a hang.
const WATCHDOG: Duration = Duration::from_secs(90);
const BATCH_MAX: usize = 16;

// ---------------------------------------------------------------------------------------------
// Small helpers: a PRNG, the body type, nanosecond clock arithmetic.

/// splitmix64: tiny, seedable, good enough to pick actions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A random duration in `[0, max]`.
    fn upto(&mut self, max: Duration) -> Duration {
        Duration::from_nanos(self.below(nanos(max) + 1))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("test durations fit in u64 nanoseconds")
}

/// `x` rounded up to a whole tick.
fn ceil_tick(x: u64) -> u64 {
    x.div_ceil(nanos(TICK)) * nanos(TICK)
}

fn checksum(m: u64) -> u64 {
    m.wrapping_mul(0x2545_F491_4F6C_DD1D).rotate_left(23) ^ 0x5A5A_0F0F_A5A5_F0F0
}

/// A message body that counts how many copies of it are alive (in the queue or in deliveries).
struct Body {
    m: u64,
    check: u64,
    live: Arc<AtomicI64>,
}

impl Body {
    fn new(m: u64, live: &Arc<AtomicI64>) -> Self {
        live.fetch_add(1, SeqCst);
        Self {
            m,
            check: checksum(m),
            live: live.clone(),
        }
    }
}

impl Clone for Body {
    fn clone(&self) -> Self {
        self.live.fetch_add(1, SeqCst);
        Self {
            m: self.m,
            check: self.check,
            live: self.live.clone(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let before = self.live.fetch_sub(1, SeqCst);
        assert!(
            before > 0,
            "a body was dropped more often than it was created"
        );
    }
}

/// Sets the abort flag if the thread holding it panics, so that the other threads stop.
struct AbortOnPanic<'a>(&'a AtomicBool);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, SeqCst);
        }
    }
}

/// Runs `f` on its own thread and fails the test if it does not finish within `limit`.
fn with_watchdog<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, finished) = mpsc::channel();
    let handle = thread::spawn(move || {
        let result = f();
        let _ = done.send(());
        result
    });
    match finished.recv_timeout(limit) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang: the scenario's threads did not come back within {limit:?}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `try_receive` only.
    Try,
    /// `receive(wait)` when holding nothing, `try_receive` otherwise; `close()` at the end.
    Blocking(Duration),
    /// `receive_batch(.., up to BATCH_MAX, 0 or 1 ms)`.
    Batch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Delete,
    Release,
    ZeroVisibility,
    Extend,
    Shorten,
    TooLong,
    Abandon,
    Late,
    Wait,
    Forge,
    Hold,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    name: &'static str,
    seed: u64,
    messages: usize,
    producers: usize,
    consumers: usize,
    capacity: usize,
    mode: Mode,
    /// `(dead-letter queue capacity, max_receives)`.
    dead_letter: Option<(usize, u32)>,
    /// Percent of sends that are `send_delayed`.
    delayed_percent: u64,
    weights: &'static [(Action, u32)],
    max_held: usize,
    /// Consumers advance the clock (at random, and when they find nothing).
    consumers_drive_clock: bool,
    /// A helper thread advances the clock and pokes the queue with `stats()`.
    ticker: bool,
    /// Producers pause between bursts (so blocking consumers really block).
    paced_producers: bool,
}

const MIXED: &[(Action, u32)] = &[
    (Action::Delete, 40),
    (Action::Release, 8),
    (Action::ZeroVisibility, 4),
    (Action::Extend, 10),
    (Action::Shorten, 6),
    (Action::TooLong, 2),
    (Action::Abandon, 12),
    (Action::Late, 3),
    (Action::Wait, 8),
    (Action::Forge, 3),
    (Action::Hold, 4),
];

const DEAD_LETTER_HEAVY: &[(Action, u32)] = &[
    (Action::Delete, 30),
    (Action::Release, 14),
    (Action::ZeroVisibility, 4),
    (Action::Extend, 6),
    (Action::Shorten, 6),
    (Action::Abandon, 24),
    (Action::Late, 4),
    (Action::Wait, 6),
    (Action::Forge, 2),
    (Action::Hold, 4),
];

/// Leases that keep moving their deadlines and running out, on very few slots: every
/// `change_visibility` races expiry and the slot's next lease.
const DEADLINE_CHURN: &[(Action, u32)] = &[
    (Action::Delete, 6),
    (Action::Release, 4),
    (Action::Extend, 12),
    (Action::Shorten, 34),
    (Action::Abandon, 8),
    (Action::Late, 10),
    (Action::Wait, 16),
    (Action::Hold, 10),
];

fn seed(default: u64) -> u64 {
    std::env::var("VISQ_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Per-message ledger and shared state.

#[derive(Default)]
struct Visibility {
    /// Lease numbers (receive counts) seen for the message.
    leases: Vec<u32>,
    /// The newest lease recorded here (0: none yet).
    lease: u32,
    /// Clock nanoseconds before which the message cannot become visible again.
    earliest: u64,
}

#[derive(Default)]
struct Track {
    deletes: AtomicU32,
    /// The lease number that was deleted (0: none).
    deleted_lease: AtomicU32,
    dead: AtomicU32,
    deliveries: AtomicU32,
    /// Highest receive count handed out.
    latest: AtomicU32,
    /// Message id + 1 (0: not seen yet).
    id: AtomicU64,
    visibility: Mutex<Visibility>,
}

/// One lease held by a consumer, with bounds (clock nanoseconds) on its deadline.
struct Lease {
    delivery: Delivery<Body>,
    lb: u64,
    ub: u64,
}

impl Lease {
    fn m(&self) -> usize {
        self.delivery.body().m as usize
    }

    fn lease_no(&self) -> u32 {
        self.delivery.receive_count()
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Delete,
    Release,
    Change(Duration),
}

#[derive(Default, Debug)]
struct Counts {
    deliveries: AtomicU64,
    ok_deletes: AtomicU64,
    ok_releases: AtomicU64,
    ok_changes: AtomicU64,
    refused: AtomicU64,
    abandons: AtomicU64,
    lates: AtomicU64,
    full: AtomicU64,
    delayed_sends: AtomicU64,
    dead_drained: AtomicU64,
    empty_receives: AtomicU64,
    timed_out_receives: AtomicU64,
    /// Blocking receives that waited 2 ms or more before getting a message.
    long_receives: AtomicU64,
}

struct Shared {
    cfg: Config,
    q: Queue<Body>,
    dlq: Option<Arc<Queue<Body>>>,
    clock: ManualClock,
    tracks: Vec<Track>,
    live: Arc<AtomicI64>,
    next_message: AtomicUsize,
    settled: AtomicUsize,
    abort: AtomicBool,
    counts: Counts,
    /// Per consumer that finished: when it did, and when its last (empty) blocking receive
    /// started.
    consumer_exits: Mutex<Vec<(Instant, Option<Instant>)>>,
}

impl Shared {
    fn new(cfg: Config) -> Self {
        let clock = ManualClock::new();
        let dlq = cfg.dead_letter.map(|(capacity, _)| {
            // The dead-letter queue runs on the wall clock: the drainer deletes at once.
            Arc::new(
                Queue::builder()
                    .capacity(capacity)
                    .build()
                    .expect("valid dead-letter queue"),
            )
        });
        let mut builder = Queue::builder()
            .capacity(cfg.capacity)
            .visibility_timeout(VISIBILITY)
            .tick(TICK)
            .clock(clock.clone());
        if let (Some(dlq), Some((_, max_receives))) = (&dlq, cfg.dead_letter) {
            builder = builder.dead_letter(dlq.clone(), max_receives);
        }
        Self {
            cfg,
            q: builder.build().expect("valid queue"),
            dlq,
            clock,
            tracks: (0..cfg.messages).map(|_| Track::default()).collect(),
            live: Arc::new(AtomicI64::new(0)),
            next_message: AtomicUsize::new(0),
            settled: AtomicUsize::new(0),
            abort: AtomicBool::new(false),
            counts: Counts::default(),
            consumer_exits: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> u64 {
        nanos(self.clock.now())
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn all_settled(&self) -> bool {
        self.settled.load(SeqCst) == self.cfg.messages
    }

    fn aborted(&self) -> bool {
        self.abort.load(SeqCst)
    }

    fn track(&self, body: &Body) -> &Track {
        assert_eq!(
            body.check,
            checksum(body.m),
            "corrupt body for message {}",
            body.m
        );
        self.tracks
            .get(body.m as usize)
            .unwrap_or_else(|| panic!("unknown message {}", body.m))
    }

    /// Records the id that `send` returned or a delivery carried; all must agree.
    fn record_id(&self, m: usize, id: visq::MessageId, from: &str) {
        let id = id.get() + 1;
        if let Err(seen) = self.tracks[m].id.compare_exchange(0, id, SeqCst, SeqCst) {
            assert_eq!(
                seen - 1,
                id - 1,
                "message {m}: {from} carries id {} but it was seen before with id {}",
                id - 1,
                seen - 1
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // Producing.

    fn produce(&self, index: usize) {
        let _guard = AbortOnPanic(&self.abort);
        let mut rng =
            Rng::new(self.cfg.seed ^ (0x1000 + index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let mut last_id = None;
        let mut iterations = 0u64;
        loop {
            let m = self.next_message.fetch_add(1, SeqCst);
            if m >= self.cfg.messages {
                return;
            }
            let mut body = Body::new(m as u64, &self.live);
            let delay = if rng.chance(self.cfg.delayed_percent) {
                Some(rng.upto(Duration::from_millis(30)))
            } else {
                None
            };
            if delay.is_some() && rng.chance(5) {
                match self.q.send_delayed(body, MAX_TIMEOUT + TICK) {
                    Err(SendError::DelayTooLong(back)) => body = back,
                    Err(other) => panic!("send_delayed over MAX_TIMEOUT: {other:?}"),
                    Ok(id) => panic!("send_delayed over MAX_TIMEOUT was accepted as {id}"),
                }
                assert_eq!(body.m, m as u64, "DelayTooLong gave back another body");
            }
            {
                let start = self.now();
                let mut v = self.tracks[m].visibility.lock().unwrap();
                v.earliest = delay.map_or(0, |d| start + nanos(d));
            }
            let mut fulls = 0u64;
            let id = loop {
                iterations += 1;
                assert!(
                    iterations < ITERATION_CAP,
                    "{}: producer {index} hit the iteration cap",
                    self.cfg.name
                );
                if self.aborted() {
                    return;
                }
                let sent = match delay {
                    Some(d) => self.q.send_delayed(body, d),
                    None => self.q.send(body),
                };
                match sent {
                    Ok(id) => break id,
                    Err(SendError::Full(back)) => {
                        assert_eq!(back.m, m as u64, "Full gave back another body");
                        body = back;
                        self.counts.full.fetch_add(1, SeqCst);
                        fulls += 1;
                        if fulls % 32 == 0 {
                            // Everything may be leased and abandoned: let time pass.
                            self.advance(rng.upto(Duration::from_millis(2)));
                        }
                        thread::yield_now();
                    }
                    Err(other) => panic!("send failed: {other:?}"),
                }
            };
            if delay.is_some() {
                self.counts.delayed_sends.fetch_add(1, SeqCst);
            }
            if let Some(last) = last_id {
                assert!(id > last, "ids must grow in send order: {last} then {id}");
            }
            last_id = Some(id);
            self.record_id(m, id, "send");
            if self.cfg.paced_producers && rng.chance(10) {
                thread::sleep(Duration::from_micros(rng.below(300)));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Receiving.

    /// Books a delivery received with the clock at `c0` before and `c1` after the call.
    fn on_receive(&self, delivery: Delivery<Body>, c0: u64, c1: u64) -> Lease {
        let track = self.track(delivery.body());
        let m = delivery.body().m as usize;
        let n = delivery.receive_count();
        assert!(n >= 1, "receive_count starts at 1");
        if let Some((_, max_receives)) = self.cfg.dead_letter {
            assert!(
                n <= max_receives,
                "message {m} delivered a {n}th time with max_receives {max_receives}"
            );
        }
        // This booking may run late (after the lease expired and a newer one was settled), so
        // only a delivery of a lease *newer* than the deleted one is a redelivery.
        let deleted = track.deleted_lease.load(SeqCst);
        assert!(
            deleted == 0 || n < deleted,
            "message {m} delivered (lease {n}) after lease {deleted} was deleted"
        );
        self.record_id(m, delivery.id(), "a delivery");
        track.deliveries.fetch_add(1, SeqCst);
        track.latest.fetch_max(n, SeqCst);
        {
            let mut v = track.visibility.lock().unwrap();
            assert!(
                !v.leases.contains(&n),
                "lease {n} of message {m} handed out twice"
            );
            v.leases.push(n);
            if n > v.lease {
                assert!(
                    c1 >= v.earliest,
                    "message {m} visible early: lease {n} received with the clock at {c1} ns, \
                     but it could not become visible before {} ns",
                    v.earliest
                );
                v.lease = n;
                v.earliest = c0 + nanos(VISIBILITY);
            }
        }
        self.counts.deliveries.fetch_add(1, SeqCst);
        Lease {
            delivery,
            lb: c0 + nanos(VISIBILITY),
            ub: ceil_tick(c1 + nanos(VISIBILITY)),
        }
    }

    /// Receives according to the mode; appends to `held`; returns how many were received.
    fn receive(
        &self,
        held: &mut Vec<Lease>,
        batch: &mut Vec<Delivery<Body>>,
        last_empty_wait: &mut Option<Instant>,
        rng: &mut Rng,
    ) -> usize {
        let c0 = self.now();
        match self.cfg.mode {
            Mode::Try => match self.q.try_receive() {
                Some(d) => {
                    let c1 = self.now();
                    held.push(self.on_receive(d, c0, c1));
                    1
                }
                None => 0,
            },
            Mode::Blocking(wait) => {
                let got = if held.is_empty() {
                    let started = Instant::now();
                    let got = self.q.receive(wait);
                    let took = started.elapsed();
                    if got.is_none() {
                        *last_empty_wait = Some(started);
                        if !self.q.is_closed() && took >= wait {
                            self.counts.timed_out_receives.fetch_add(1, SeqCst);
                        }
                    } else if took >= Duration::from_millis(2) {
                        self.counts.long_receives.fetch_add(1, SeqCst);
                    }
                    got
                } else {
                    self.q.try_receive()
                };
                match got {
                    Some(d) => {
                        let c1 = self.now();
                        held.push(self.on_receive(d, c0, c1));
                        1
                    }
                    None => 0,
                }
            }
            Mode::Batch => {
                assert!(batch.is_empty());
                let capacity = batch.capacity();
                let max = 1 + rng.below(BATCH_MAX as u64) as usize;
                let wait = if rng.chance(30) {
                    Duration::from_millis(1)
                } else {
                    Duration::ZERO
                };
                let n = self.q.receive_batch(batch, max, wait);
                let c1 = self.now();
                assert_eq!(
                    n,
                    batch.len(),
                    "receive_batch's count differs from what it appended"
                );
                assert!(n <= max, "receive_batch returned {n} > max {max}");
                assert_eq!(
                    batch.capacity(),
                    capacity,
                    "receive_batch grew a Vec that had room"
                );
                for d in batch.drain(..) {
                    held.push(self.on_receive(d, c0, c1));
                }
                n
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Settling.

    /// Runs `op` on the lease's receipt with the checks described in the module docs.
    fn apply(&self, lease: &Lease, op: Op) -> (Result<(), ReceiptError>, u64, u64) {
        let m = lease.m();
        let n = lease.lease_no();
        let track = &self.tracks[m];
        let receipt = lease.delivery.receipt();
        let before = self.now();
        // A release or a new deadline may make the message visible earlier: lower the bound
        // first (harmless if the call then fails).
        let lower_to = match op {
            Op::Delete => None,
            Op::Release => Some(before),
            Op::Change(t) => Some(before + nanos(t)),
        };
        if let Some(at) = lower_to {
            let mut v = track.visibility.lock().unwrap();
            if v.lease == n {
                v.earliest = v.earliest.min(at);
            }
        }
        let latest_before = track.latest.load(SeqCst);
        let result = match op {
            Op::Delete => self.q.delete(receipt),
            Op::Release => self.q.release(receipt),
            Op::Change(t) => self.q.change_visibility(receipt, t),
        };
        let after = self.now();
        match result {
            Ok(()) => {
                assert!(
                    before < lease.ub,
                    "{op:?} of message {m} lease {n} succeeded with the clock at {before} ns, \
                     past the lease's deadline (at most {} ns)",
                    lease.ub
                );
                assert_eq!(
                    latest_before, n,
                    "{op:?} of message {m} lease {n} succeeded although lease {latest_before} had \
                     already been handed out: two valid leases at once"
                );
            }
            Err(ReceiptError::Expired | ReceiptError::Stale) => {
                // A change that fails may still have moved the deadline: it writes the new
                // deadline before it bumps the lease version, and a wheel run that reads the new
                // deadline once it has passed expires the lease and wins the version race (the
                // call then reports `Expired`, or `Stale` once the message is received again).
                // So a refused change's own deadline bounds the lease too.
                let lb = match op {
                    Op::Change(t) => lease.lb.min(before + nanos(t)),
                    Op::Delete | Op::Release => lease.lb,
                };
                assert!(
                    after >= lb,
                    "{op:?} of message {m} lease {n} refused ({result:?}) with the clock at {after} \
                     ns, before the lease's deadline (at least {lb} ns)"
                );
                self.counts.refused.fetch_add(1, SeqCst);
            }
            Err(unexpected @ (ReceiptError::TimeoutTooLong | ReceiptError::NoDeadLetterQueue)) => {
                panic!("{op:?}: unexpected {unexpected:?}")
            }
        }
        (result, before, after)
    }

    fn delete(&self, lease: &Lease, rng: &mut Rng) {
        let (result, _, _) = self.apply(lease, Op::Delete);
        if result.is_ok() {
            let m = lease.m();
            let track = &self.tracks[m];
            let latest = track.latest.load(SeqCst);
            assert_eq!(
                latest,
                lease.lease_no(),
                "message {m} leased again (lease {latest}) around its delete"
            );
            let deletes = track.deletes.fetch_add(1, SeqCst);
            assert_eq!(deletes, 0, "message {m} deleted twice");
            track.deleted_lease.store(lease.lease_no(), SeqCst);
            assert_eq!(
                track.dead.load(SeqCst),
                0,
                "message {m} deleted and dead-lettered"
            );
            self.counts.ok_deletes.fetch_add(1, SeqCst);
            self.settled.fetch_add(1, SeqCst);
            if rng.chance(10) {
                let receipt = lease.delivery.receipt();
                assert_eq!(
                    self.q.delete(receipt),
                    Err(ReceiptError::Stale),
                    "second delete of message {m}"
                );
            }
        }
    }

    fn release(&self, lease: &Lease, op: Op, rng: &mut Rng) {
        let (result, _, _) = self.apply(lease, op);
        if result.is_ok() {
            self.counts.ok_releases.fetch_add(1, SeqCst);
            if rng.chance(10) {
                let receipt = lease.delivery.receipt();
                assert_eq!(
                    self.q.delete(receipt),
                    Err(ReceiptError::Stale),
                    "delete after release of message {}",
                    lease.m()
                );
            }
        }
    }

    /// `change_visibility(.., timeout)`; keeps the lease (with new bounds) if it succeeded.
    fn change(&self, mut lease: Lease, timeout: Duration) -> Option<Lease> {
        let (result, before, after) = self.apply(&lease, Op::Change(timeout));
        result.ok()?;
        self.counts.ok_changes.fetch_add(1, SeqCst);
        lease.lb = before + nanos(timeout);
        lease.ub = ceil_tick(after + nanos(timeout));
        let mut v = self.tracks[lease.m()].visibility.lock().unwrap();
        if v.lease == lease.lease_no() {
            v.earliest = before + nanos(timeout);
        }
        drop(v);
        Some(lease)
    }

    fn pick(&self, rng: &mut Rng) -> Action {
        let total: u32 = self.cfg.weights.iter().map(|&(_, w)| w).sum();
        let mut at = rng.below(u64::from(total)) as u32;
        for &(action, weight) in self.cfg.weights {
            if at < weight {
                return action;
            }
            at -= weight;
        }
        unreachable!()
    }

    /// Does something with a held lease; `Some` if the consumer keeps holding it.
    fn act(&self, lease: Lease, rng: &mut Rng) -> Option<Lease> {
        match self.pick(rng) {
            Action::Delete => {
                self.delete(&lease, rng);
                None
            }
            Action::Release => {
                self.release(&lease, Op::Release, rng);
                None
            }
            Action::ZeroVisibility => {
                self.release(&lease, Op::Change(Duration::ZERO), rng);
                None
            }
            Action::Extend => self.change(lease, VISIBILITY + rng.upto(VISIBILITY)),
            Action::Shorten => self.change(lease, TICK + rng.upto(Duration::from_millis(3))),
            Action::TooLong => {
                let receipt = lease.delivery.receipt();
                assert_eq!(
                    self.q.change_visibility(receipt, MAX_TIMEOUT + TICK),
                    Err(ReceiptError::TimeoutTooLong)
                );
                Some(lease)
            }
            Action::Abandon => {
                self.counts.abandons.fetch_add(1, SeqCst);
                None
            }
            Action::Late => {
                // Run the clock to the latest the deadline can be; the receipt must then fail.
                let now = self.now();
                if now < lease.ub {
                    self.advance(Duration::from_nanos(lease.ub - now) + rng.upto(TICK));
                }
                let op = match rng.below(3) {
                    0 => Op::Delete,
                    1 => Op::Release,
                    _ => Op::Change(VISIBILITY),
                };
                let (result, _, _) = self.apply(&lease, op);
                assert!(result.is_err(), "{op:?} after the deadline succeeded");
                self.counts.lates.fetch_add(1, SeqCst);
                None
            }
            Action::Wait => {
                // Let time pass, but not past the earliest the deadline can be.
                let now = self.now();
                if lease.lb > now + 1 {
                    self.advance(rng.upto(Duration::from_nanos(lease.lb - now - 1)));
                }
                Some(lease)
            }
            Action::Forge => {
                let real = lease.delivery.receipt().to_u64();
                for forged in [real ^ (1 << 63), rng.next()] {
                    let forged = Receipt::from_u64(forged);
                    assert_eq!(
                        self.q.delete(forged),
                        Err(ReceiptError::Stale),
                        "forged delete"
                    );
                    assert_eq!(
                        self.q.release(forged),
                        Err(ReceiptError::Stale),
                        "forged release"
                    );
                    assert_eq!(
                        self.q.change_visibility(forged, TICK),
                        Err(ReceiptError::Stale),
                        "forged change_visibility"
                    );
                }
                Some(lease)
            }
            Action::Hold => Some(lease),
        }
    }

    fn consume(&self, index: usize) {
        let _guard = AbortOnPanic(&self.abort);
        let mut rng =
            Rng::new(self.cfg.seed ^ (0x2000 + index as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        let mut held: Vec<Lease> = Vec::new();
        let mut batch = Vec::with_capacity(BATCH_MAX);
        let mut last_empty_wait = None;
        let mut iterations = 0u64;
        loop {
            iterations += 1;
            assert!(
                iterations < ITERATION_CAP,
                "{}: consumer {index} hit the iteration cap",
                self.cfg.name
            );
            if self.aborted() {
                return;
            }
            let finished = match self.cfg.mode {
                Mode::Blocking(_) => self.q.is_closed(),
                Mode::Try | Mode::Batch => self.all_settled(),
            };
            if finished {
                break;
            }
            if self.cfg.consumers_drive_clock && rng.chance(20) {
                self.advance(rng.upto(TICK));
            }
            if held.len() < self.cfg.max_held && (held.is_empty() || rng.chance(50)) {
                if self.receive(&mut held, &mut batch, &mut last_empty_wait, &mut rng) == 0 {
                    self.counts.empty_receives.fetch_add(1, SeqCst);
                    if self.cfg.consumers_drive_clock {
                        self.advance(rng.upto(Duration::from_millis(3)));
                    }
                    thread::yield_now();
                }
            } else {
                let lease = held.swap_remove(rng.below(held.len() as u64) as usize);
                if let Some(lease) = self.act(lease, &mut rng) {
                    held.push(lease);
                }
            }
        }
        // Every message is settled, so no lease held now can still be valid.
        for lease in held {
            let (result, _, _) = self.apply(&lease, Op::Delete);
            assert!(
                result.is_err(),
                "message {} still deletable after everything was settled",
                lease.m()
            );
        }
        self.consumer_exits
            .lock()
            .unwrap()
            .push((Instant::now(), last_empty_wait));
    }

    /// Drains the dead-letter queue.
    fn drain_dead_letters(&self) {
        let _guard = AbortOnPanic(&self.abort);
        let dlq = self.dlq.as_ref().expect("a dead-letter queue");
        let mut iterations = 0u64;
        while !self.all_settled() && !self.aborted() {
            iterations += 1;
            assert!(
                iterations < ITERATION_CAP,
                "{}: drainer hit the iteration cap",
                self.cfg.name
            );
            let Some(d) = dlq.try_receive() else {
                thread::yield_now();
                continue;
            };
            let track = self.track(d.body());
            let m = d.body().m as usize;
            assert_eq!(
                d.receive_count(),
                1,
                "dead letter {m} delivered twice from the dead-letter queue"
            );
            let dead = track.dead.fetch_add(1, SeqCst);
            assert_eq!(dead, 0, "message {m} dead-lettered twice");
            assert_eq!(
                track.deletes.load(SeqCst),
                0,
                "message {m} dead-lettered after its delete"
            );
            dlq.delete(d.receipt())
                .expect("deleting a fresh dead-letter delivery");
            self.counts.dead_drained.fetch_add(1, SeqCst);
            self.settled.fetch_add(1, SeqCst);
        }
    }

    /// Advances the clock in small steps and pokes the queue so expiries take effect.
    fn tick(&self) {
        let _guard = AbortOnPanic(&self.abort);
        let mut rng = Rng::new(self.cfg.seed ^ 0x3000);
        let mut iterations = 0u64;
        while !self.q.is_closed() && !self.all_settled() && !self.aborted() {
            iterations += 1;
            assert!(
                iterations < ITERATION_CAP,
                "{}: ticker hit the iteration cap",
                self.cfg.name
            );
            self.advance(rng.upto(Duration::from_millis(2)));
            let _ = self.q.stats(); // any queue operation runs the timing wheel when it is due
                                    // Wall-clock pacing of this helper only; queue time moves by `advance` alone.
            thread::sleep(Duration::from_micros(200));
        }
    }

    // -----------------------------------------------------------------------------------------
    // The final accounting.

    fn verify(&self) -> Stats {
        let cfg = &self.cfg;
        let stats = self.q.stats();
        let counts = &self.counts;
        let mut ids = Vec::with_capacity(cfg.messages);
        let (mut deleted, mut dead) = (0u64, 0u64);
        for (m, track) in self.tracks.iter().enumerate() {
            let (deletes, dead_letters) = (track.deletes.load(SeqCst), track.dead.load(SeqCst));
            assert!(
                (deletes, dead_letters) == (1, 0) || (deletes, dead_letters) == (0, 1),
                "message {m}: deleted {deletes} times, dead-lettered {dead_letters} times"
            );
            deleted += u64::from(deletes);
            dead += u64::from(dead_letters);
            let deliveries = track.deliveries.load(SeqCst);
            assert!(deliveries >= 1, "message {m} settled without a delivery");
            let latest = track.latest.load(SeqCst);
            assert_eq!(
                latest, deliveries,
                "message {m}: {deliveries} deliveries but highest lease {latest}"
            );
            let mut leases = track.visibility.lock().unwrap().leases.clone();
            leases.sort_unstable();
            assert!(
                leases.iter().copied().eq(1..=deliveries),
                "message {m}: leases {leases:?}"
            );
            if deletes == 1 {
                let last = track.deleted_lease.load(SeqCst);
                assert_eq!(
                    last, deliveries,
                    "message {m}: lease {last} deleted, but {deliveries} deliveries"
                );
            }
            if dead_letters == 1 {
                let (_, max_receives) = cfg
                    .dead_letter
                    .expect("dead letters only with a dead-letter queue");
                assert_eq!(
                    deliveries, max_receives,
                    "message {m} dead-lettered after {deliveries} deliveries"
                );
            }
            let id = track.id.load(SeqCst);
            assert_ne!(id, 0, "message {m} never got an id");
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), cfg.messages, "message ids are not unique");

        let n = cfg.messages as u64;
        let load = |c: &AtomicU64| c.load(SeqCst);
        assert_eq!(deleted + dead, n);
        assert_eq!(
            (stats.ready, stats.delayed, stats.in_flight),
            (0, 0, 0),
            "{stats:?}"
        );
        assert_eq!(stats.oldest_ready_age, None, "{stats:?}");
        assert_eq!(stats.sent, n, "{stats:?}");
        assert_eq!(stats.deleted, deleted, "{stats:?}");
        assert_eq!(stats.deleted, load(&counts.ok_deletes), "{stats:?}");
        assert_eq!(stats.dead_lettered, dead, "{stats:?}");
        assert_eq!(stats.received, load(&counts.deliveries), "{stats:?}");
        assert_eq!(stats.released, load(&counts.ok_releases), "{stats:?}");
        // Every lease ends exactly once: deleted, released, or expired.
        assert_eq!(
            stats.received,
            stats.deleted + stats.released + stats.expired,
            "{stats:?}"
        );
        // Every message sent is deleted or dead-lettered.
        assert_eq!(stats.sent, stats.deleted + stats.dead_lettered, "{stats:?}");
        // Abandoned leases and leases run past their deadline can only have expired.
        assert!(
            stats.expired >= load(&counts.abandons) + load(&counts.lates),
            "{stats:?} {counts:?}"
        );
        if cfg.dead_letter.is_none() {
            assert_eq!(stats.dead_letter_retries, 0, "{stats:?}");
        }
        assert!(
            self.q.try_receive().is_none(),
            "a message is left after everything was settled"
        );

        if let Some(dlq) = &self.dlq {
            let d = dlq.stats();
            assert_eq!(d.sent, dead, "dead-letter queue: {d:?}");
            assert_eq!(d.received, dead, "dead-letter queue: {d:?}");
            assert_eq!(d.deleted, dead, "dead-letter queue: {d:?}");
            assert_eq!(
                (d.ready, d.delayed, d.in_flight),
                (0, 0, 0),
                "dead-letter queue: {d:?}"
            );
            assert_eq!(load(&counts.dead_drained), dead);
        }
        // Much later, still nothing: no delayed or stranded message comes back.
        self.advance(MAX_TIMEOUT);
        let later = self.q.stats();
        assert_eq!(
            (later.ready, later.delayed, later.in_flight),
            (0, 0, 0),
            "{later:?}"
        );
        assert_eq!(later.received, stats.received, "{later:?}");
        assert!(self.q.try_receive().is_none());
        stats
    }
}

// ---------------------------------------------------------------------------------------------
// Running a scenario.

/// What a scenario did, for test-specific assertions.
struct Summary {
    stats: Stats,
    full: u64,
    delayed_sends: u64,
}

fn run(cfg: Config) -> Summary {
    with_watchdog(WATCHDOG, move || run_scenario(cfg))
}

fn run_scenario(cfg: Config) -> Summary {
    println!(
        "{}: seed {} (override with VISQ_STRESS_SEED)",
        cfg.name, cfg.seed
    );
    let started = Instant::now();
    let s = Shared::new(cfg);
    let mut closed_at = None;
    let mut timed_out = false;
    thread::scope(|scope| {
        for i in 0..cfg.producers {
            let s = &s;
            scope.spawn(move || s.produce(i));
        }
        for i in 0..cfg.consumers {
            let s = &s;
            scope.spawn(move || s.consume(i));
        }
        if cfg.dead_letter.is_some() {
            scope.spawn(|| s.drain_dead_letters());
        }
        if cfg.ticker {
            scope.spawn(|| s.tick());
        }
        // Coordinator: wait (wall clock) for everything to be settled, or give up.
        loop {
            if s.aborted() {
                break;
            }
            if s.all_settled() {
                if let Mode::Blocking(_) = cfg.mode {
                    closed_at = Some(Instant::now());
                    s.q.close();
                }
                break;
            }
            if started.elapsed() > DEADLINE {
                timed_out = true;
                s.abort.store(true, SeqCst);
                if let Mode::Blocking(_) = cfg.mode {
                    s.q.close(); // so that blocked consumers come back
                }
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
    });
    assert!(
        !timed_out,
        "{}: deadline of {DEADLINE:?} hit with {} of {} messages settled; counts {:?}; stats {:?}",
        cfg.name,
        s.settled.load(SeqCst),
        cfg.messages,
        s.counts,
        s.q.stats()
    );
    assert!(!s.aborted(), "{}: aborted", cfg.name);

    if let Some(closed_at) = closed_at {
        let Mode::Blocking(wait) = cfg.mode else {
            unreachable!()
        };
        let exits = s.consumer_exits.lock().unwrap().clone();
        assert_eq!(
            exits.len(),
            cfg.consumers,
            "every consumer must come back after close()"
        );
        for &(exit, _) in &exits {
            let after = exit.saturating_duration_since(closed_at);
            assert!(
                after < Duration::from_secs(3),
                "a blocked consumer took {after:?} to notice close()"
            );
        }
        // At least one consumer was parked in receive(wait) when close() came: it started
        // waiting before the close and came back long before its wait ran out.
        let parked = exits
            .iter()
            .filter(|(_, started)| started.is_some_and(|started| started < closed_at))
            .count();
        assert!(
            parked >= 1,
            "no consumer was blocked in receive() at close()"
        );
        println!("{}: {parked} consumers were parked at close()", cfg.name);
        assert_eq!(
            s.counts.timed_out_receives.load(SeqCst),
            0,
            "a blocking receive slept its whole {wait:?} while messages were still to come (lost wake-up?)"
        );
        // Closed: sends fail with the body back; receives return at once.
        match s.q.send(Body::new(u64::MAX, &s.live)) {
            Err(SendError::Closed(body)) => assert_eq!(body.m, u64::MAX),
            other => panic!("send after close: {:?}", other.map_err(|e| e.to_string())),
        }
        let t = Instant::now();
        assert!(s.q.receive(wait).is_none());
        let mut out = Vec::with_capacity(4);
        assert_eq!(s.q.receive_batch(&mut out, 4, wait), 0);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "receive on a closed, empty queue waited"
        );
        assert!(s.q.is_closed());
    }

    let stats = s.verify();
    let live = s.live.clone();
    println!(
        "{}: {:?} in {:?}\n  stats {stats:?}\n  counts {:?}",
        cfg.name,
        cfg.mode,
        started.elapsed(),
        s.counts
    );
    let summary = Summary {
        stats,
        full: s.counts.full.load(SeqCst),
        delayed_sends: s.counts.delayed_sends.load(SeqCst),
    };
    drop(s);
    assert_eq!(live.load(SeqCst), 0, "bodies leaked or dropped twice");
    summary
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Three producers (a fifth of the sends delayed), three non-blocking consumers holding up to
/// four leases each, every kind of settlement, the consumers driving the clock.
#[test]
fn mixed_settlement_with_try_receive() {
    let summary = run(Config {
        name: "mixed_settlement_with_try_receive",
        seed: seed(0x5EED_0001),
        messages: 40_000,
        producers: 3,
        consumers: 3,
        capacity: 256,
        mode: Mode::Try,
        dead_letter: None,
        delayed_percent: 20,
        weights: MIXED,
        max_held: 4,
        consumers_drive_clock: true,
        ticker: false,
        paced_producers: false,
    });
    // Every kind of lease ending happened.
    let st = &summary.stats;
    assert!(
        st.deleted > 0 && st.released > 0 && st.expired > 0,
        "{st:?}"
    );
    assert!(summary.delayed_sends > 0);
}

/// Consumers block in `receive(10 s)` when they hold nothing; a ticker thread advances the
/// clock and pokes the queue so abandoned leases expire; `close()` at the end must bring every
/// blocked consumer back at once, and no blocking receive may sleep its whole wait meanwhile.
#[test]
fn blocking_receive_then_close() {
    let summary = run(Config {
        name: "blocking_receive_then_close",
        seed: seed(0x5EED_0002),
        messages: 20_000,
        producers: 2,
        consumers: 3,
        capacity: 256,
        mode: Mode::Blocking(Duration::from_secs(10)),
        dead_letter: None,
        delayed_percent: 10,
        weights: MIXED,
        max_held: 2,
        consumers_drive_clock: false,
        ticker: true,
        paced_producers: true,
    });
    assert!(
        summary.stats.expired > 0,
        "the ticker made abandoned leases expire: {:?}",
        summary.stats
    );
}

/// Consumers take batches of 1 to 16 (waiting 0 or 1 ms) and settle them at random.
#[test]
fn receive_batch_consumers() {
    let summary = run(Config {
        name: "receive_batch_consumers",
        seed: seed(0x5EED_0003),
        messages: 40_000,
        producers: 2,
        consumers: 3,
        capacity: 128,
        mode: Mode::Batch,
        dead_letter: None,
        delayed_percent: 10,
        weights: MIXED,
        max_held: 8,
        consumers_drive_clock: true,
        ticker: false,
        paced_producers: false,
    });
    assert!(
        summary.stats.expired > 0 && summary.stats.released > 0,
        "{:?}",
        summary.stats
    );
}

/// Capacity 4: producers meet `Full` all the time and retry with the body they got back.
#[test]
fn tiny_capacity_full_is_frequent() {
    let summary = run(Config {
        name: "tiny_capacity_full_is_frequent",
        seed: seed(0x5EED_0004),
        messages: 20_000,
        producers: 3,
        consumers: 3,
        capacity: 4,
        mode: Mode::Try,
        dead_letter: None,
        delayed_percent: 10,
        weights: MIXED,
        max_held: 2,
        consumers_drive_clock: true,
        ticker: false,
        paced_producers: false,
    });
    assert!(
        summary.full >= 100,
        "Full should be frequent at capacity 4, got {} times",
        summary.full
    );
}

/// `max_receives` 2 into a dead-letter queue of capacity 4 (so moves are often refused and
/// retried): every message is deleted exactly once or dead-lettered exactly once (after exactly
/// two deliveries), never both.
#[test]
fn dead_letter_after_two_receives() {
    let summary = run(Config {
        name: "dead_letter_after_two_receives",
        seed: seed(0x5EED_0005),
        messages: 30_000,
        producers: 2,
        consumers: 3,
        capacity: 128,
        mode: Mode::Try,
        dead_letter: Some((4, 2)),
        delayed_percent: 10,
        weights: DEAD_LETTER_HEAVY,
        max_held: 4,
        consumers_drive_clock: true,
        ticker: false,
        paced_producers: false,
    });
    let st = &summary.stats;
    assert!(
        st.dead_lettered > 0 && st.deleted > 0,
        "both outcomes must occur: {st:?}"
    );
}

/// Two slots, four consumers, and leases that mostly shorten, extend, wait and run out: each
/// `change_visibility` races the wheel expiring the lease and the next consumer leasing the
/// slot again. A lease's deadline must stay exactly what its own holder made it (the
/// holder-side bounds of the module docs).
#[test]
fn deadline_churn_on_two_slots() {
    let summary = run(Config {
        name: "deadline_churn_on_two_slots",
        seed: seed(0x5EED_0006),
        messages: 4_000,
        producers: 1,
        consumers: 4,
        capacity: 2,
        mode: Mode::Try,
        dead_letter: None,
        delayed_percent: 10,
        weights: DEADLINE_CHURN,
        max_held: 2,
        consumers_drive_clock: true,
        ticker: false,
        paced_producers: false,
    });
    assert!(
        summary.stats.expired > summary.stats.deleted,
        "{:?}",
        summary.stats
    );
}
