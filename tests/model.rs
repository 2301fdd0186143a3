//! Model-based property test: random single-threaded operation sequences on a queue driven by a
//! `ManualClock`, checked step by step against a plain reference model.
//!
//! The model keeps every message ever sent (state ready / delayed / in flight / deleted /
//! dead-letter-bound, deadline tick, receive count, lease number, how its last lease ended), a
//! FIFO of *groups* of ready messages, the dead-letter queue's fill level and the retry ticks of
//! messages waiting for room in it, and every counter of `Stats`.
//!
//! Semantics it encodes (from API.md, confirmed against the source):
//!
//! * Time is counted in ticks; now is `floor(nanos / tick)`; a deadline `d` from `n` nanos is
//!   tick `max(ceil((n + d) / tick), floor(n / tick) + 1)`; a lease or delay with deadline tick
//!   `D` is due once `now >= D`.
//! * Due deadlines are processed ("the wheel runs") at the start of `send` / `send_delayed` (on an
//!   open queue, delay in range), `try_receive` and `stats`. `delete`, `release` and
//!   `change_visibility` never process other messages' deadlines first; they validate the
//!   receipt against the clock (`Expired` once the lease's deadline tick has come, even before
//!   the wheel has seen it). `change_visibility` and a `release` that finds the dead-letter queue
//!   full *may* run the wheel (it depends on where the slot is filed, which the contract does not
//!   fix); when the model has unprocessed due deadlines at that point, the test calls `stats()`
//!   at once so both sides agree the run has happened.
//! * Ordering: plain sends and releases join the ready FIFO one by one, in order (exact). All the
//!   messages one wheel run makes visible join as one group in which the order is not part of
//!   the contract, so a receive may return any member of the front group.
//! * Receipts: a receipt from an older lease of the message (redelivered) or of a settled lease
//!   (deleted, released) or never issued (forged) is `Stale`; the current lease is `Expired`
//!   once its deadline tick has come, and stays `Expired` after the wheel made it visible, until
//!   the message is received again, also while it waits for room in a full dead-letter queue.
//!   Once such a message has been moved to the dead-letter queue (or may have been: see below),
//!   either `Stale` or `Expired` is accepted: the contract does not say which (the crate answers
//!   `Stale`, treating the move like a redelivery).
//! * Dead letters: a message with `receive_count >= max_receives` that becomes visible (expiry
//!   or release) is offered to the dead-letter queue; if that is full it stays held, counted as
//!   delayed and in `dead_letter_retries`, and is offered again `ceil(10 ms / tick)` ticks later.
//!   When one wheel run offers more messages than there are places, which of them got the places
//!   is not observable beyond the counts, and the model forgets it.
//! * `change_visibility` with a timeout over `MAX_TIMEOUT` is `TimeoutTooLong` for any receipt;
//!   a zero timeout is a `release`.
//! * Ids grow in send order (only that is checked, not their values); receipts are never
//!   issued twice; `oldest_ready_age` counts from the send or release, or for a message the
//!   wheel made visible from the start of its deadline's tick.
//!
//! Stats are compared after most steps (not all: skipping some leaves due deadlines unprocessed
//! for the next operations, which exercises the lazy wheel) and always at the end.

#[path = "support/model_checks.rs"]
mod model_checks;

use model_checks::{
    check_id_grows, check_verdict, deadline_at, tick_at, Issued, Receipts, Verdict,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use visq::{ManualClock, MessageId, Nack, Queue, Receipt, ReceiptError, SendError, MAX_TIMEOUT};

const MS: u64 = 1_000_000;
const MAX_NANOS: u64 = MAX_TIMEOUT.as_nanos() as u64;
const DEAD_LETTER_RETRY_NANOS: u64 = 10 * MS;

const STALE: &[ReceiptError] = &[ReceiptError::Stale];
const EXPIRED: &[ReceiptError] = &[ReceiptError::Expired];
const STALE_OR_EXPIRED: &[ReceiptError] = &[ReceiptError::Stale, ReceiptError::Expired];

// ---------------------------------------------------------------------------------------------
// Generated input

#[derive(Clone, Debug)]
struct Config {
    capacity: usize,
    visibility_nanos: u64,
    tick_nanos: u64,
    /// `(max_receives, dead-letter queue capacity)`.
    dead_letter: Option<(u32, usize)>,
    /// Close the queue before this step.
    close_at: Option<usize>,
}

/// Which receipt an operation uses.
#[derive(Clone, Copy, Debug)]
enum Pick {
    /// The receipt of the k-th most recent delivery (0 = the latest); before there are that
    /// many, a forged one.
    Recent(usize),
    /// Any receipt issued so far (index modulo their number); before any, a forged one.
    Any(usize),
    /// A receipt of a lease that has not been settled (index modulo their number), whether
    /// its deadline has passed or not; `Recent(0)` when there is none.
    Live(usize),
    /// A receipt made from an arbitrary number.
    Forged(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Send,
    SendDelayed(u64),
    Receive,
    Delete(Pick),
    Release(Pick),
    /// `nack` with this delay (no reason: reasons are checked in tests/dead_letter_tools.rs).
    Nack(Pick, u64),
    ChangeVisibility(Pick, u64),
    Advance(u64),
    DrainDeadLetters,
    Stats,
}

/// A step: the operation, and whether to compare `stats()` after it.
type Step = (Op, bool);

// ---------------------------------------------------------------------------------------------
// The reference model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    NoLease,
    Expired,
    Released,
    Deleted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MState {
    /// Visible since `since` nanos (for a message the wheel made visible: the start of its
    /// deadline's tick, however late the wheel ran).
    Ready {
        since: u64,
    },
    /// Sent with a delay, visible from tick `deadline`.
    Delayed {
        deadline: u64,
    },
    /// Leased until tick `deadline`.
    InFlight {
        deadline: u64,
    },
    Deleted,
    /// Offered to the dead-letter queue: moved there, or held waiting for room.
    DeadLetter(Fate),
}

/// Where a message offered to the dead-letter queue is. When one wheel run offers more messages
/// than there is room for, which of them got the places is not observable, so the model
/// forgets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Waiting,
    Moved,
    Unknown,
}

#[derive(Debug)]
struct MMsg {
    body: u32,
    receive_count: u32,
    /// Leases handed out so far; a receipt names the lease it came from.
    leases: u32,
    state: MState,
    last_end: End,
    /// Received from the dead-letter queue.
    drained: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Snapshot {
    ready: usize,
    delayed: usize,
    in_flight: usize,
    sent: u64,
    received: u64,
    deleted: u64,
    released: u64,
    expired: u64,
    dead_lettered: u64,
    dead_letter_retries: u64,
    oldest_ready_age: Option<Duration>,
}

struct Model {
    capacity: usize,
    visibility_nanos: u64,
    tick_nanos: u64,
    max_receives: Option<u32>,
    dead_letter_capacity: usize,
    retry_ticks: u64,
    closed: bool,
    now: u64,
    /// Every message ever sent, in send order.
    msgs: Vec<MMsg>,
    /// Ready messages: groups in FIFO order, any order inside a group.
    ready: VecDeque<Vec<usize>>,
    /// Messages held because the dead-letter queue was full: retry tick and, where known, which.
    dead_letter_waiting: Vec<(u64, Option<usize>)>,
    /// Messages in the dead-letter queue now.
    dead_letter_held: usize,
    counts: Snapshot,
}

impl Model {
    fn new(cfg: &Config) -> Self {
        Self {
            capacity: cfg.capacity,
            visibility_nanos: cfg.visibility_nanos,
            tick_nanos: cfg.tick_nanos,
            max_receives: cfg.dead_letter.map(|(max, _)| max),
            dead_letter_capacity: cfg.dead_letter.map_or(0, |(_, cap)| cap),
            retry_ticks: DEAD_LETTER_RETRY_NANOS.div_ceil(cfg.tick_nanos).max(1),
            closed: false,
            now: 0,
            msgs: Vec::new(),
            ready: VecDeque::new(),
            dead_letter_waiting: Vec::new(),
            dead_letter_held: 0,
            counts: Snapshot::default(),
        }
    }

    fn tick(&self) -> u64 {
        tick_at(self.now, self.tick_nanos)
    }

    fn deadline(&self, after: u64) -> u64 {
        deadline_at(self.now, after, self.tick_nanos)
    }

    fn goes_to_dead_letters(&self, receive_count: u32) -> bool {
        self.max_receives.is_some_and(|max| receive_count >= max)
    }

    fn held(&self) -> usize {
        let live = self
            .msgs
            .iter()
            .filter(|m| {
                matches!(
                    m.state,
                    MState::Ready { .. } | MState::Delayed { .. } | MState::InFlight { .. }
                )
            })
            .count();
        live + self.dead_letter_waiting.len()
    }

    /// Whether a deadline has come that the wheel has not processed yet.
    fn has_due(&self) -> bool {
        let t = self.tick();
        self.msgs.iter().any(|m| match m.state {
            MState::InFlight { deadline } | MState::Delayed { deadline } => deadline <= t,
            _ => false,
        }) || self
            .dead_letter_waiting
            .iter()
            .any(|&(retry, _)| retry <= t)
    }

    /// Offers messages (`None`: one of the waiting messages whose identity is not known) to
    /// the dead-letter queue at tick `t`.
    fn offer_dead_letters(&mut self, offered: Vec<Option<usize>>, t: u64) {
        let room = self.dead_letter_capacity - self.dead_letter_held;
        let moved = offered.len().min(room);
        let refused = offered.len() - moved;
        self.dead_letter_held += moved;
        self.counts.dead_lettered += moved as u64;
        self.counts.dead_letter_retries += refused as u64;
        let retry = t + self.retry_ticks;
        let fate = match (moved, refused) {
            (_, 0) => Fate::Moved,
            (0, _) => Fate::Waiting,
            _ => Fate::Unknown,
        };
        for &i in offered.iter().flatten() {
            self.msgs[i].state = MState::DeadLetter(fate);
        }
        match fate {
            Fate::Moved => {}
            Fate::Waiting => self
                .dead_letter_waiting
                .extend(offered.into_iter().map(|i| (retry, i))),
            Fate::Unknown => self
                .dead_letter_waiting
                .extend(std::iter::repeat((retry, None)).take(refused)),
        }
    }

    /// One run of the timing wheel at the current time.
    fn run_wheel(&mut self) {
        let t = self.tick();
        let max_receives = self.max_receives;
        let tick_nanos = self.tick_nanos;
        let mut group = Vec::new();
        let mut offered = Vec::new();
        for (i, msg) in self.msgs.iter_mut().enumerate() {
            match msg.state {
                MState::InFlight { deadline } if deadline <= t => {
                    self.counts.expired += 1;
                    msg.last_end = End::Expired;
                    if max_receives.is_some_and(|max| msg.receive_count >= max) {
                        offered.push(Some(i));
                    } else {
                        msg.state = MState::Ready {
                            since: deadline * tick_nanos,
                        };
                        group.push(i);
                    }
                }
                MState::Delayed { deadline } if deadline <= t => {
                    msg.state = MState::Ready {
                        since: deadline * tick_nanos,
                    };
                    group.push(i);
                }
                _ => {}
            }
        }
        let (due, waiting) = self
            .dead_letter_waiting
            .iter()
            .partition(|&&(retry, _)| retry <= t);
        self.dead_letter_waiting = waiting;
        offered.extend(due.into_iter().map(|(_, i): (u64, Option<usize>)| i));
        self.offer_dead_letters(offered, t);
        if !group.is_empty() {
            self.ready.push_back(group);
        }
    }

    /// Records a send (the caller has run the wheel and checked room).
    fn send(&mut self, body: u32, delay: u64) {
        let i = self.msgs.len();
        let state = if delay == 0 {
            self.ready.push_back(vec![i]);
            MState::Ready { since: self.now }
        } else {
            MState::Delayed {
                deadline: self.deadline(delay),
            }
        };
        self.msgs.push(MMsg {
            body,
            receive_count: 0,
            leases: 0,
            state,
            last_end: End::NoLease,
            drained: false,
        });
        self.counts.sent += 1;
    }

    /// Leases `i` (taken from the front group); returns its lease number.
    fn receive(&mut self, i: usize) -> u32 {
        let deadline = self.deadline(self.visibility_nanos);
        let msg = &mut self.msgs[i];
        msg.receive_count += 1;
        msg.leases += 1;
        msg.state = MState::InFlight { deadline };
        self.counts.received += 1;
        msg.leases
    }

    fn verdict(&self, target: Option<(usize, u32)>) -> Verdict {
        let Some((i, lease)) = target else {
            return Verdict::Refused(STALE);
        };
        let msg = &self.msgs[i];
        if lease != msg.leases {
            return Verdict::Refused(STALE);
        }
        match (msg.state, msg.last_end) {
            (MState::InFlight { deadline }, _) if deadline <= self.tick() => {
                Verdict::Refused(EXPIRED)
            }
            (MState::InFlight { .. }, _) => Verdict::Valid(i),
            (MState::Ready { .. } | MState::Delayed { .. }, End::Expired) => {
                Verdict::Refused(EXPIRED)
            }
            (MState::DeadLetter(Fate::Waiting), End::Expired) => Verdict::Refused(EXPIRED),
            (MState::DeadLetter(_), End::Expired) => Verdict::Refused(STALE_OR_EXPIRED),
            _ => Verdict::Refused(STALE),
        }
    }

    fn delete(&mut self, i: usize) {
        let msg = &mut self.msgs[i];
        msg.state = MState::Deleted;
        msg.last_end = End::Deleted;
        self.counts.deleted += 1;
    }

    /// Ends `i`'s lease by release; true when the dead-letter queue refused it (the queue may
    /// then have run its wheel).
    fn release(&mut self, i: usize) -> bool {
        self.counts.released += 1;
        self.msgs[i].last_end = End::Released;
        if self.goes_to_dead_letters(self.msgs[i].receive_count) {
            let retries = self.counts.dead_letter_retries;
            self.offer_dead_letters(vec![Some(i)], self.tick());
            self.counts.dead_letter_retries > retries
        } else {
            self.msgs[i].state = MState::Ready { since: self.now };
            self.ready.push_back(vec![i]);
            false
        }
    }

    /// Ends `i`'s lease by a nack with a nonzero `delay`: delayed, or to the dead-letter queue
    /// at once if that was its last receive; true as for [`Model::release`].
    fn nack_after(&mut self, i: usize, delay: u64) -> bool {
        if self.goes_to_dead_letters(self.msgs[i].receive_count) {
            return self.release(i);
        }
        self.counts.released += 1;
        self.msgs[i].last_end = End::Released;
        self.msgs[i].state = MState::Delayed {
            deadline: self.deadline(delay),
        };
        false
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = self.counts.clone();
        s.delayed = self.dead_letter_waiting.len();
        let mut oldest: Option<u64> = None;
        for msg in &self.msgs {
            match msg.state {
                MState::Ready { since } => {
                    s.ready += 1;
                    oldest = Some(oldest.map_or(since, |o| o.min(since)));
                }
                MState::Delayed { .. } => s.delayed += 1,
                MState::InFlight { .. } => s.in_flight += 1,
                MState::Deleted | MState::DeadLetter(_) => {}
            }
        }
        s.oldest_ready_age = oldest.map(|since| Duration::from_nanos(self.now - since));
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Driving the real queue and the model side by side

struct Harness {
    clock: ManualClock,
    q: Queue<u32>,
    dlq: Option<Arc<Queue<u32>>>,
    m: Model,
    receipts: Receipts,
    ids: BTreeMap<MessageId, usize>,
    by_body: HashMap<u32, usize>,
    last_id: Option<MessageId>,
    next_body: u32,
}

fn snapshot_of(s: &visq::Stats) -> Snapshot {
    Snapshot {
        ready: s.ready,
        delayed: s.delayed,
        in_flight: s.in_flight,
        sent: s.sent,
        received: s.received,
        deleted: s.deleted,
        released: s.released,
        expired: s.expired,
        dead_lettered: s.dead_lettered,
        dead_letter_retries: s.dead_letter_retries,
        oldest_ready_age: s.oldest_ready_age,
    }
}

impl Harness {
    fn new(cfg: &Config) -> Self {
        let clock = ManualClock::new();
        let dlq = cfg.dead_letter.map(|(_, cap)| {
            Arc::new(
                Queue::<u32>::builder()
                    .capacity(cap)
                    .clock(clock.clone())
                    .build()
                    .expect("dead-letter queue"),
            )
        });
        let mut builder = Queue::<u32>::builder()
            .capacity(cfg.capacity)
            .visibility_timeout(Duration::from_nanos(cfg.visibility_nanos))
            .tick(Duration::from_nanos(cfg.tick_nanos))
            .clock(clock.clone());
        if let (Some((max_receives, _)), Some(dlq)) = (cfg.dead_letter, &dlq) {
            builder = builder.dead_letter(dlq.clone(), max_receives);
        }
        Self {
            clock,
            q: builder.build().expect("queue"),
            dlq,
            m: Model::new(cfg),
            receipts: Receipts::default(),
            ids: BTreeMap::new(),
            by_body: HashMap::new(),
            last_id: None,
            next_body: 1000,
        }
    }

    /// The receipt a pick names, and the lease it belongs to if it was ever issued.
    fn resolve(&self, pick: Pick) -> (Receipt, Option<(usize, u32)>) {
        let issued = &self.receipts.issued;
        let live = |k: usize| {
            let live: Vec<&Issued> = issued
                .iter()
                .filter(|r| {
                    let msg = &self.m.msgs[r.msg];
                    r.lease == msg.leases && matches!(msg.state, MState::InFlight { .. })
                })
                .collect();
            (!live.is_empty()).then(|| live[k % live.len()].receipt.to_u64())
        };
        let raw = match pick {
            Pick::Live(k) => match live(k) {
                Some(raw) => raw,
                None => return self.resolve(Pick::Recent(0)),
            },
            Pick::Recent(k) if issued.len() > k => issued[issued.len() - 1 - k].receipt.to_u64(),
            Pick::Any(i) if !issued.is_empty() => issued[i % issued.len()].receipt.to_u64(),
            Pick::Recent(k) => k as u64,
            Pick::Any(i) => i as u64,
            Pick::Forged(raw) => raw,
        };
        self.receipts.lookup(raw)
    }

    fn check_stats(&mut self, ctx: &str) -> Result<(), TestCaseError> {
        let got = snapshot_of(&self.q.stats());
        self.m.run_wheel();
        let want = self.m.snapshot();
        prop_assert_eq!(&got, &want, "stats differ {}", ctx);
        let ready_in_groups: usize = self.m.ready.iter().map(Vec::len).sum();
        prop_assert_eq!(
            ready_in_groups,
            want.ready,
            "model ready ring out of step {}",
            ctx
        );
        if let Some(dlq) = &self.dlq {
            let d = dlq.stats();
            prop_assert_eq!(
                d.ready,
                self.m.dead_letter_held,
                "dead-letter queue holds {}",
                ctx
            );
            prop_assert_eq!(
                d.sent,
                self.m.counts.dead_lettered,
                "dead-letter queue sent {}",
                ctx
            );
        }
        Ok(())
    }

    /// Applies one operation to both; returns whether the queue may have run its wheel in a way
    /// the model cannot place (the caller then syncs with `stats()`).
    fn apply(&mut self, op: &Op, ctx: &str) -> Result<bool, TestCaseError> {
        match *op {
            Op::Send => self.send(None, ctx).map(|()| false),
            Op::SendDelayed(delay) => self.send(Some(delay), ctx).map(|()| false),
            Op::Receive => self.receive(ctx).map(|()| false),
            Op::Delete(pick) => {
                let (receipt, target) = self.resolve(pick);
                let verdict = self.m.verdict(target);
                let got = self.q.delete(receipt);
                if let Some(i) = check_verdict(got, &verdict, ctx)? {
                    self.m.delete(i);
                }
                Ok(false)
            }
            Op::Release(pick) => {
                let (receipt, target) = self.resolve(pick);
                let verdict = self.m.verdict(target);
                let got = self.q.release(receipt);
                match check_verdict(got, &verdict, ctx)? {
                    Some(i) => Ok(self.m.release(i)),
                    None => Ok(false),
                }
            }
            Op::Nack(pick, delay) => {
                let (receipt, target) = self.resolve(pick);
                let got = self
                    .q
                    .nack(receipt, Nack::after(Duration::from_nanos(delay)));
                if delay > MAX_NANOS {
                    prop_assert_eq!(got, Err(ReceiptError::TimeoutTooLong), "{}", ctx);
                    return Ok(false);
                }
                let verdict = self.m.verdict(target);
                match check_verdict(got, &verdict, ctx)? {
                    Some(i) if delay == 0 => Ok(self.m.release(i)),
                    // Filing the new deadline may run the queue's wheel.
                    Some(i) => {
                        self.m.nack_after(i, delay);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            Op::ChangeVisibility(pick, timeout) => {
                let (receipt, target) = self.resolve(pick);
                let got = self
                    .q
                    .change_visibility(receipt, Duration::from_nanos(timeout));
                if timeout > MAX_NANOS {
                    prop_assert_eq!(got, Err(ReceiptError::TimeoutTooLong), "{}", ctx);
                    return Ok(false);
                }
                let verdict = self.m.verdict(target);
                match check_verdict(got, &verdict, ctx)? {
                    Some(i) if timeout == 0 => Ok(self.m.release(i)),
                    Some(i) => {
                        let deadline = self.m.deadline(timeout);
                        self.m.msgs[i].state = MState::InFlight { deadline };
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            Op::Advance(by) => {
                self.clock.advance(Duration::from_nanos(by));
                self.m.now += by;
                Ok(false)
            }
            Op::DrainDeadLetters => self.drain_dead_letters(ctx).map(|()| false),
            Op::Stats => self.check_stats(ctx).map(|()| false),
        }
    }

    fn send(&mut self, delay: Option<u64>, ctx: &str) -> Result<(), TestCaseError> {
        let body = self.next_body;
        self.next_body += 1;
        let got = match delay {
            None => self.q.send(body),
            Some(delay) => self.q.send_delayed(body, Duration::from_nanos(delay)),
        };
        let delay = delay.unwrap_or(0);
        if delay > MAX_NANOS {
            prop_assert_eq!(got, Err(SendError::DelayTooLong(body)), "{}", ctx);
            return Ok(());
        }
        if self.m.closed {
            prop_assert_eq!(got, Err(SendError::Closed(body)), "{}", ctx);
            return Ok(());
        }
        self.m.run_wheel();
        if self.m.held() == self.m.capacity {
            prop_assert_eq!(got, Err(SendError::Full(body)), "{}", ctx);
            return Ok(());
        }
        let id = match got {
            Ok(id) => id,
            Err(e) => return Err(TestCaseError::fail(format!("send refused: {e:?} {ctx}"))),
        };
        check_id_grows(&mut self.last_id, id, ctx)?;
        self.ids.insert(id, self.m.msgs.len());
        self.by_body.insert(body, self.m.msgs.len());
        self.m.send(body, delay);
        Ok(())
    }

    fn receive(&mut self, ctx: &str) -> Result<(), TestCaseError> {
        let got = self.q.try_receive();
        self.m.run_wheel();
        let Some(delivery) = got else {
            prop_assert!(
                self.m.ready.is_empty(),
                "nothing received, model has {:?} {}",
                self.m.ready,
                ctx
            );
            return Ok(());
        };
        let Some(&i) = self.ids.get(&delivery.id()) else {
            return Err(TestCaseError::fail(format!(
                "unknown id {} {ctx}",
                delivery.id()
            )));
        };
        let front = self.m.ready.front_mut();
        let Some(group) = front else {
            return Err(TestCaseError::fail(format!(
                "received {i} but model has nothing ready {ctx}"
            )));
        };
        let Some(at) = group.iter().position(|&j| j == i) else {
            return Err(TestCaseError::fail(format!(
                "received message {i}, model's next are {group:?} {ctx}"
            )));
        };
        group.swap_remove(at);
        if group.is_empty() {
            self.m.ready.pop_front();
        }
        prop_assert_eq!(
            *delivery.body(),
            self.m.msgs[i].body,
            "body of message {} {}",
            i,
            ctx
        );
        prop_assert_eq!(
            delivery.receive_count(),
            self.m.msgs[i].receive_count + 1,
            "receive count {}",
            ctx
        );
        let lease = self.m.receive(i);
        let issued = Issued {
            receipt: delivery.receipt(),
            msg: i,
            lease,
        };
        self.receipts.record(issued, ctx)
    }

    fn drain_dead_letters(&mut self, ctx: &str) -> Result<(), TestCaseError> {
        let Some(dlq) = &self.dlq else { return Ok(()) };
        let got = dlq.try_receive();
        let Some(delivery) = got else {
            prop_assert_eq!(
                self.m.dead_letter_held,
                0,
                "dead-letter queue looked empty {}",
                ctx
            );
            return Ok(());
        };
        prop_assert!(
            self.m.dead_letter_held > 0,
            "dead-letter queue should be empty {}",
            ctx
        );
        let Some(&i) = self.by_body.get(delivery.body()) else {
            return Err(TestCaseError::fail(format!(
                "unknown dead letter {} {ctx}",
                delivery.body()
            )));
        };
        let msg = &mut self.m.msgs[i];
        prop_assert!(
            matches!(msg.state, MState::DeadLetter(Fate::Moved | Fate::Unknown)) && !msg.drained,
            "message {} in the dead-letter queue: {:?} {}",
            i,
            msg,
            ctx
        );
        msg.drained = true;
        msg.state = MState::DeadLetter(Fate::Moved);
        prop_assert_eq!(delivery.receive_count(), 1, "{}", ctx);
        prop_assert_eq!(dlq.delete(delivery.receipt()), Ok(()), "{}", ctx);
        self.m.dead_letter_held -= 1;
        Ok(())
    }
}

fn run_case(cfg: &Config, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(cfg);
    for (n, (op, check)) in steps.iter().enumerate() {
        if cfg.close_at == Some(n) {
            h.q.close();
            h.m.closed = true;
        }
        let ctx = format!("at step {n}: {op:?} (clock {} ns)", h.m.now);
        let may_have_run = h.apply(op, &ctx)?;
        if *check || (may_have_run && h.m.has_due()) {
            h.check_stats(&ctx)?;
        }
    }
    h.check_stats("at the end")?;
    // Everything still held is dropped with the queue; nothing was lost on the way.
    let s = h.q.stats();
    let held = (s.ready + s.delayed + s.in_flight) as u64;
    prop_assert_eq!(
        s.sent,
        s.deleted + s.dead_lettered + held,
        "messages unaccounted for"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Timeouts and delays: zero, fractions of a tick, a few ticks, long, `MAX_TIMEOUT` and over.
fn span() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => Just(0u64),
        4 => 1..=3 * MS,
        4 => 0..=40 * MS,
        2 => 0..=120_000 * MS,
        1 => 0..=MAX_NANOS,
        1 => Just(MAX_NANOS),
        1 => (MAX_NANOS + 1)..=(2 * MAX_NANOS),
    ]
}

/// Clock steps: none, fractions of a tick, whole ticks, a few visibility timeouts, past
/// `MAX_TIMEOUT`.
fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(MS),
        4 => 0..=2 * MS,
        4 => 0..=30 * MS,
        1 => 0..=60_000 * MS,
        1 => 0..=50_000_000 * MS,
    ]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        5 => any::<usize>().prop_map(Pick::Live),
        3 => (0usize..3).prop_map(Pick::Recent),
        2 => any::<usize>().prop_map(Pick::Any),
        1 => prop_oneof![any::<u64>(), Just(0u64), Just(u64::MAX)].prop_map(Pick::Forged),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Send),
        3 => span().prop_map(Op::SendDelayed),
        8 => Just(Op::Receive),
        6 => pick().prop_map(Op::Delete),
        3 => pick().prop_map(Op::Release),
        3 => (pick(), span()).prop_map(|(p, d)| Op::Nack(p, d)),
        4 => (pick(), span()).prop_map(|(p, t)| Op::ChangeVisibility(p, t)),
        5 => advance().prop_map(Op::Advance),
        1 => Just(Op::DrainDeadLetters),
        1 => Just(Op::Stats),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![1 => 1usize..=2, 4 => 3usize..=16],
        prop_oneof![2 => Just(MS), 1 => Just(10 * MS), 3 => 200_000u64..=20 * MS],
        prop_oneof![6 => Just(MS), 1 => Just(250_000u64), 1 => Just(3 * MS)],
        prop::option::weighted(0.4, (2u32..=3, 1usize..=3)),
        prop::option::weighted(0.15, 0usize..200),
    )
        .prop_map(
            |(capacity, visibility_nanos, tick_nanos, dead_letter, close_at)| Config {
                capacity,
                visibility_nanos,
                tick_nanos,
                dead_letter,
                close_at,
            },
        )
}

proptest! {
    // 256 cases unless PROPTEST_CASES says otherwise; no regression file is written (failures
    // found so far are kept as the named tests below).
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn queue_matches_model(
        cfg in config(),
        steps in prop::collection::vec((op(), prop::bool::weighted(0.6)), 1..=200),
    ) {
        run_case(&cfg, &steps)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed sequences (readable examples of what the model checks)

fn plain(capacity: usize, visibility_ms: u64, dead_letter: Option<(u32, usize)>) -> Config {
    Config {
        capacity,
        visibility_nanos: visibility_ms * MS,
        tick_nanos: MS,
        dead_letter,
        close_at: None,
    }
}

#[test]
fn fifo_expiry_and_stale_receipts() {
    use Op::*;
    let steps: Vec<Step> = [
        Send,
        Send,
        Send,
        Receive,
        Receive,
        Advance(10 * MS),
        Delete(Pick::Recent(0)),
        Release(Pick::Recent(1)),
        Receive,
        Receive,
        Receive,
        Delete(Pick::Recent(3)),
        ChangeVisibility(Pick::Recent(0), 0),
        ChangeVisibility(Pick::Recent(1), MAX_NANOS + 1),
        ChangeVisibility(Pick::Recent(1), MAX_NANOS),
        Delete(Pick::Forged(0)),
    ]
    .into_iter()
    .map(|op| (op, true))
    .collect();
    run_case(&plain(4, 5, None), &steps).unwrap();
}

#[test]
fn dead_letters_wait_for_room() {
    use Op::*;
    let mut steps = vec![Send, Send, Send];
    for _ in 0..2 {
        steps.extend([Receive, Receive, Receive, Advance(6 * MS)]);
    }
    steps.extend([
        Stats,
        Advance(10 * MS),
        Stats,
        DrainDeadLetters,
        Advance(10 * MS),
        Stats,
    ]);
    let steps: Vec<Step> = steps.into_iter().map(|op| (op, false)).collect();
    run_case(&plain(4, 5, Some((2, 1))), &steps).unwrap();
}

#[test]
fn settling_before_the_wheel_has_run() {
    use Op::*;
    // The first lease's deadline passes; delete sees it expired before any wheel run; a release
    // of the second (extended) lease goes ahead of the expired message in the ready ring.
    let steps: Vec<Step> = [
        Send,
        Send,
        Receive,
        Receive,
        ChangeVisibility(Pick::Recent(0), 100 * MS),
        Advance(7 * MS),
        Delete(Pick::Recent(1)),
        Release(Pick::Recent(0)),
        Receive,
        Receive,
    ]
    .into_iter()
    .map(|op| (op, false))
    .collect();
    run_case(&plain(4, 5, None), &steps).unwrap();
}
