//! Model-based property test of issue 11's features: priorities, FIFO message groups and
//! message time-to-live, with receive counts, leases, delays, release / nack with a delay /
//! hand_back / delete / try_take / receive_batch, a dead-letter queue with `max_receives`, and
//! `stats()`. Random configurations and single-threaded operation sequences on a queue driven
//! by a `ManualClock`, compared step by step with a plain reference model. tests/model.rs does
//! the same for the plain queue in more depth (forged receipts, `change_visibility`, a full
//! dead-letter queue, `oldest_ready_age`); this file leaves those to it.
//!
//! Semantics the model encodes (API.md, the issue-11 contract, and the crate's timing rules):
//!
//! * Time is counted in ticks: now is `floor(nanos / tick)`; a deadline `d` from `n` nanos is
//!   tick `max(ceil((n + d) / tick), floor(n / tick) + 1)` (leases, delays and TTLs alike; a
//!   TTL counts from the send); a deadline `D` is due once `now >= D`.
//! * The wheel runs (due deadlines are processed) at the start of a send that passes its checks,
//!   in every `try_receive` / `try_take` / `receive_batch` with `max > 0`, and in `stats`.
//!   `delete`, `release` and `hand_back` do not run it; a nack with a delay may (it files a
//!   deadline), and on a TTL queue any end of a lease may (it may file the TTL): the test then
//!   calls `stats()` so that both sides agree the run has happened (before the operation on a
//!   TTL queue, where the order of the released message and the run's messages would be
//!   unknown; after it for a nack, whose message is not in the ready ring).
//! * Ready ring: one per priority level; a receive takes from the highest level that has a
//!   visible message, FIFO within it. Sends, releases, hand-backs and a group's next message
//!   join the back of their level one by one (exact). All the messages one wheel run makes
//!   visible join their level as one *group* whose order is not part of the contract, so a
//!   receive may return any member of the front group. A receive may pop before or after the
//!   wheel run it makes (the contract only promises what operations that returned before it
//!   made visible), so it may return a candidate of either state; either way the model has
//!   run the wheel afterwards.
//! * Groups: a group maps to a lane (`Queue::group_lane`); a lane's messages are delivered in
//!   send order, one at a time: only its head is ever ready, leased or (nacked) delayed, the
//!   rest wait behind it. The next message becomes the head, and joins the back of its level,
//!   when the head is deleted, taken or moved to the dead-letter queue. A released, expired,
//!   handed-back or nacked head stays the head. `stats()` must count the messages waiting
//!   behind a head as `ready` or `delayed` (the contract does not say which).
//! * TTL: a waiting (ready or delayed) message whose TTL deadline has come is never delivered;
//!   the wheel moves it to the dead-letter queue (or drops it) and counts it in `ttl_expired`
//!   (and in `dead_lettered` when moved; a drop is not a delete). A leased message is not
//!   expired while leased; if its TTL has passed when its lease ends (release, nack, hand_back,
//!   expiry), it dies then. When a message also reached `max_receives` it goes to the
//!   dead-letter queue either way, and which of the two is counted in `ttl_expired` is not
//!   fixed: the model allows both.
//! * Room: a message killed by its TTL while its entry waits in the ready ring behind a live
//!   one keeps its slot until a pop reaches the entry (src/core/ttl.rs, "Capacity", and
//!   `Builder::message_ttl`): the one documented case of `Full` with fewer than `capacity`
//!   messages held (the plain test
//!   `a_message_killed_behind_a_live_one_takes_room_until_that_one_is_received`). The proptest
//!   accepts a `Full` that such entries explain.
//! * Dead letters: a message received `max_receives` times whose lease ends (release, nack,
//!   expiry; not hand_back) moves to the dead-letter queue. That queue is never full here.
//! * Receipts: the current lease's receipt is valid until its deadline tick, `Expired` from
//!   then on (also after the wheel made the message visible, until its next lease); a receipt
//!   of an older or settled lease is `Stale`; for a message gone after its lease expired
//!   either answer is accepted (as in tests/model.rs).
//! * Sends are checked in this order: priority, group (none on the queue, or with a delay),
//!   TTL (none on the queue, or out of range), delay too long, closed, full; the body comes
//!   back with each refusal. Ids grow in send order.

#[path = "support/model_checks.rs"]
mod model_checks;

use model_checks::{
    check_id_grows, check_verdict, deadline_at, tick_at, Issued, Receipts, Verdict,
};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::Config as ProptestConfig;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use visq::{
    DeathCause, InvalidSend, ManualClock, MessageId, Nack, Queue, Receipt, ReceiptError, SendError,
    SendOptions, MAX_MESSAGE_TTL, MAX_TIMEOUT,
};

const MS: u64 = 1_000_000;
const MAX_NANOS: u64 = MAX_TIMEOUT.as_nanos() as u64;
const MAX_TTL_NANOS: u64 = MAX_MESSAGE_TTL.as_nanos() as u64;
/// More than any case sends: the dead-letter queue never refuses a message here.
const DEAD_LETTER_CAPACITY: usize = 1024;

const STALE: &[ReceiptError] = &[ReceiptError::Stale];
const EXPIRED: &[ReceiptError] = &[ReceiptError::Expired];
const STALE_OR_EXPIRED: &[ReceiptError] = &[ReceiptError::Stale, ReceiptError::Expired];

/// Small adapters from the queue's API to the model's terms.
mod api {
    use visq::{DeathCause, Queue, Stats};

    /// The lane of group `key`.
    pub fn group_lane(q: &Queue<u32>, key: u64) -> usize {
        q.group_lane(key).expect("a grouped queue")
    }

    /// `Stats::ttl_expired`.
    pub fn ttl_expired(stats: &Stats) -> u64 {
        stats.ttl_expired
    }

    /// Whether a dead letter died of its TTL.
    pub fn died_of_ttl(cause: &DeathCause) -> bool {
        matches!(cause, DeathCause::TimeToLive)
    }
}

// ---------------------------------------------------------------------------------------------
// Generated input

#[derive(Clone, Debug)]
struct Config {
    capacity: usize,
    visibility_nanos: u64,
    tick_nanos: u64,
    /// Priority levels (1: none).
    levels: u8,
    /// Lanes of message groups and the group keys sends choose from.
    groups: Option<(usize, Vec<u64>)>,
    /// The queue's message TTL.
    ttl_nanos: Option<u64>,
    /// `max_receives` of a dead-letter queue.
    max_receives: Option<u32>,
    /// Close the queue before this step.
    close_at: Option<usize>,
}

impl Config {
    /// A configuration with none of the features: 1 ms ticks, 5 ms leases, room for 8.
    fn plain() -> Self {
        Self {
            capacity: 8,
            visibility_nanos: 5 * MS,
            tick_nanos: MS,
            levels: 1,
            groups: None,
            ttl_nanos: None,
            max_receives: None,
            close_at: None,
        }
    }
}

/// One send: through `send` / `send_delayed` when `options` is false (and it sets nothing
/// else), through `send_with` otherwise.
#[derive(Clone, Debug, Default)]
struct SendSpec {
    priority: u8,
    /// Index into the configuration's group keys (on an ungrouped queue: the key itself).
    group: Option<usize>,
    delay: u64,
    ttl: Option<u64>,
    options: bool,
}

impl SendSpec {
    fn at(priority: u8) -> Self {
        Self {
            priority,
            options: true,
            ..Self::default()
        }
    }

    fn in_group(group: usize) -> Self {
        Self {
            group: Some(group),
            options: true,
            ..Self::default()
        }
    }

    fn with_ttl(ttl: u64) -> Self {
        Self {
            ttl: Some(ttl),
            options: true,
            ..Self::default()
        }
    }
}

/// Which receipt a settling operation uses.
#[derive(Clone, Copy, Debug)]
enum Pick {
    /// A lease not settled yet, whether its deadline has passed or not (index modulo their
    /// number); the latest receipt when there is none.
    Live(usize),
    /// The k-th most recent receipt (0: the latest); a forged one before there are that many.
    Recent(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Send(SendSpec),
    Receive,
    ReceiveBatch(usize),
    TryTake,
    Delete(Pick),
    Release(Pick),
    Nack(Pick, u64),
    HandBack(Pick),
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
enum Gone {
    Deleted,
    Taken,
    DeadLettered,
    Dropped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MState {
    /// Behind its lane's head.
    Queued,
    /// In the ready ring of its level.
    Ready,
    /// Sent or nacked with a delay: visible from tick `deadline`.
    Delayed {
        deadline: u64,
    },
    /// Leased until tick `deadline`.
    InFlight {
        deadline: u64,
    },
    Gone(Gone),
}

#[derive(Debug)]
struct MMsg {
    body: u32,
    level: usize,
    lane: Option<usize>,
    /// The tick its TTL ends at.
    ttl_deadline: Option<u64>,
    receive_count: u32,
    /// Leases handed out so far; a receipt names the lease it came from.
    leases: u32,
    state: MState,
    last_end: End,
    /// Why it went to the dead-letter queue.
    death: Option<Death>,
    /// Received from the dead-letter queue.
    drained: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    sent: u64,
    received: u64,
    deleted: u64,
    released: u64,
    expired: u64,
    dead_lettered: u64,
    ttl_expired: u64,
}

/// Why a message went to the dead-letter queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    /// Its TTL passed.
    Ttl,
    /// Its receive limit, as its last lease ended (`Expired` or `Released`).
    Limit(End),
    /// Both at once: either cause may be recorded.
    TtlOrLimit(End),
}

/// What became of a message whose lease ended.
enum AfterLease {
    /// It stays, to be made visible (or delayed) by the caller.
    Stays,
    /// It died (TTL or receive limit); its lane's next head, if any, is now ready and must be
    /// put in the ring by the caller.
    Died(Option<usize>),
}

struct Model {
    capacity: usize,
    visibility_nanos: u64,
    tick_nanos: u64,
    levels: u8,
    grouped: bool,
    /// The lane of each group key (by index).
    lane_of: Vec<usize>,
    queue_ttl: Option<u64>,
    max_receives: Option<u32>,
    closed: bool,
    now: u64,
    /// Every message ever sent, in send order.
    msgs: Vec<MMsg>,
    /// Per level: ready messages in groups, the groups in FIFO order, any order inside one.
    ready: Vec<VecDeque<Vec<usize>>>,
    /// Per lane: its messages in send order, the head first.
    lanes: HashMap<usize, VecDeque<usize>>,
    /// Messages in the dead-letter queue now.
    dead_letter_held: usize,
    counts: Counts,
    /// Deaths that `ttl_expired` may or may not count (TTL and receive limit at once).
    ttl_slack: u64,
}

impl Model {
    fn new(cfg: &Config, lane_of: Vec<usize>) -> Self {
        Self {
            capacity: cfg.capacity,
            visibility_nanos: cfg.visibility_nanos,
            tick_nanos: cfg.tick_nanos,
            levels: cfg.levels,
            grouped: cfg.groups.is_some(),
            lane_of,
            queue_ttl: cfg.ttl_nanos,
            max_receives: cfg.max_receives,
            closed: false,
            now: 0,
            msgs: Vec::new(),
            ready: vec![VecDeque::new(); cfg.levels as usize],
            lanes: HashMap::new(),
            dead_letter_held: 0,
            counts: Counts::default(),
            ttl_slack: 0,
        }
    }

    fn tick(&self) -> u64 {
        tick_at(self.now, self.tick_nanos)
    }

    fn deadline(&self, after: u64) -> u64 {
        deadline_at(self.now, after, self.tick_nanos)
    }

    fn ttl_passed(&self, i: usize) -> bool {
        self.msgs[i].ttl_deadline.is_some_and(|d| d <= self.tick())
    }

    fn held(&self) -> usize {
        self.msgs
            .iter()
            .filter(|m| !matches!(m.state, MState::Gone(_)))
            .count()
    }

    /// Whether a deadline (lease, delay or TTL of a waiting message) has come that the wheel
    /// has not processed yet.
    fn has_due(&self) -> bool {
        let t = self.tick();
        self.msgs.iter().enumerate().any(|(i, m)| match m.state {
            MState::InFlight { deadline } => deadline <= t,
            MState::Delayed { deadline } => deadline <= t || self.ttl_passed(i),
            MState::Ready => self.ttl_passed(i),
            _ => false,
        })
    }

    /// Why a send of `body` as `spec` is refused before it reaches the queue's slots (so
    /// before any wheel run), if it is.
    fn refusal(&self, spec: &SendSpec, body: u32) -> Option<SendError<u32>> {
        let invalid = |why| Some(SendError::Invalid(body, why));
        if spec.priority >= self.levels {
            return invalid(InvalidSend::PriorityOutOfRange {
                priority: spec.priority,
                levels: self.levels,
            });
        }
        if spec.group.is_some() {
            if !self.grouped {
                return invalid(InvalidSend::NoMessageGroups);
            }
            if spec.delay > 0 {
                return invalid(InvalidSend::DelayedGroupMessage);
            }
        }
        if let Some(ttl) = spec.ttl {
            if self.queue_ttl.is_none() {
                return invalid(InvalidSend::NoMessageTtl);
            }
            if ttl == 0 || ttl > MAX_TTL_NANOS {
                return invalid(InvalidSend::TtlOutOfRange);
            }
        }
        if spec.delay > MAX_NANOS {
            return Some(SendError::DelayTooLong(body));
        }
        if self.closed {
            return Some(SendError::Closed(body));
        }
        None
    }

    /// Records an accepted send (the caller has run the wheel and checked room); returns the
    /// message's index.
    fn send(&mut self, body: u32, spec: &SendSpec) -> usize {
        let i = self.msgs.len();
        let lane = spec.group.map(|k| self.lane_of[k]);
        self.msgs.push(MMsg {
            body,
            level: spec.priority as usize,
            lane,
            ttl_deadline: spec.ttl.or(self.queue_ttl).map(|ttl| self.deadline(ttl)),
            receive_count: 0,
            leases: 0,
            state: MState::Queued,
            last_end: End::NoLease,
            death: None,
            drained: false,
        });
        self.counts.sent += 1;
        if let Some(lane) = lane {
            let lane = self.lanes.entry(lane).or_default();
            lane.push_back(i);
            if lane.len() == 1 {
                self.push_ready(i);
            }
        } else if spec.delay == 0 {
            self.push_ready(i);
        } else {
            self.msgs[i].state = MState::Delayed {
                deadline: self.deadline(spec.delay),
            };
        }
        i
    }

    /// Makes `i` ready at the back of its level, on its own.
    fn push_ready(&mut self, i: usize) {
        self.msgs[i].state = MState::Ready;
        self.ready[self.msgs[i].level].push_back(vec![i]);
    }

    /// Pops the ready `i` off its level's ring, and with it the entries of killed messages
    /// in the groups ahead of it (a killed entry in its own group may or may not have been
    /// popped first: it is kept, an upper bound).
    fn unready(&mut self, i: usize) {
        let msgs = &self.msgs;
        let ring = &mut self.ready[msgs[i].level];
        let (g, at) = ring
            .iter()
            .enumerate()
            .find_map(|(g, group)| group.iter().position(|&j| j == i).map(|at| (g, at)))
            .expect("a ready message is in its level's ring");
        ring[g].remove(at);
        for group in ring.range_mut(..g) {
            group.retain(|&j| msgs[j].state == MState::Ready);
        }
        ring.retain(|group| !group.is_empty());
    }

    /// Entries of messages killed by their TTL while in the ready ring that may not have been
    /// popped yet: their slots are reused only once popped (see the semantics notes).
    fn killed_in_ring(&self) -> usize {
        self.ready
            .iter()
            .flatten()
            .flatten()
            .filter(|&&i| self.msgs[i].state != MState::Ready)
            .count()
    }

    /// The messages a receive may return before any wheel run: from the highest level with
    /// one whose TTL has not passed, the first group holding such messages (a receive skips,
    /// and expires, those whose TTL has passed).
    fn candidates(&self) -> Vec<usize> {
        for ring in self.ready.iter().rev() {
            for group in ring {
                let live: Vec<usize> = group
                    .iter()
                    .copied()
                    .filter(|&i| self.msgs[i].state == MState::Ready && !self.ttl_passed(i))
                    .collect();
                if !live.is_empty() {
                    return live;
                }
            }
        }
        Vec::new()
    }

    fn ready_count(&self) -> usize {
        self.ready.iter().flatten().map(Vec::len).sum::<usize>() - self.killed_in_ring()
    }

    /// Ends `i`'s life as `gone`; if it headed a lane, that lane's next message becomes the
    /// head, ready, and is returned for the caller to put in the ring.
    fn retire(&mut self, i: usize, gone: Gone) -> Option<usize> {
        self.msgs[i].state = MState::Gone(gone);
        let lane = self.lanes.get_mut(&self.msgs[i].lane?)?;
        assert_eq!(lane.pop_front(), Some(i), "only a lane's head leaves it");
        let next = *lane.front()?;
        self.msgs[next].state = MState::Ready;
        Some(next)
    }

    fn move_to_dead_letters(&mut self, i: usize, death: Death) -> Option<usize> {
        self.msgs[i].death = Some(death);
        self.counts.dead_lettered += 1;
        self.dead_letter_held += 1;
        self.retire(i, Gone::DeadLettered)
    }

    /// `i`'s TTL has passed while it waits (or as its lease ends): to the dead-letter queue,
    /// or dropped.
    fn ttl_death(&mut self, i: usize) -> Option<usize> {
        self.counts.ttl_expired += 1;
        if self.max_receives.is_some() {
            self.move_to_dead_letters(i, Death::Ttl)
        } else {
            self.retire(i, Gone::Dropped)
        }
    }

    /// `i`'s lease has just ended: it dies if its TTL has passed or (unless it was handed
    /// back, which `counts` says) it has been received `max_receives` times.
    fn end_of_lease(&mut self, i: usize, counts: bool) -> AfterLease {
        let ttl = self.ttl_passed(i);
        let limit = counts
            && self
                .max_receives
                .is_some_and(|max| self.msgs[i].receive_count >= max);
        let end = self.msgs[i].last_end;
        match (ttl, limit) {
            (true, true) => {
                self.ttl_slack += 1;
                AfterLease::Died(self.move_to_dead_letters(i, Death::TtlOrLimit(end)))
            }
            (true, false) => AfterLease::Died(self.ttl_death(i)),
            (false, true) => AfterLease::Died(self.move_to_dead_letters(i, Death::Limit(end))),
            (false, false) => AfterLease::Stays,
        }
    }

    /// One run of the timing wheel now. `extra`, a message made ready by the same operation at
    /// a point the model does not fix relative to the run, joins the run's group of its level.
    fn run_wheel_joined(&mut self, extra: Option<usize>) {
        let t = self.tick();
        let mut groups = vec![Vec::new(); self.levels as usize];
        if let Some(x) = extra {
            groups[self.msgs[x].level].push(x);
        }
        for i in 0..self.msgs.len() {
            let visible = match self.msgs[i].state {
                MState::InFlight { deadline } if deadline <= t => {
                    self.counts.expired += 1;
                    self.msgs[i].last_end = End::Expired;
                    match self.end_of_lease(i, true) {
                        AfterLease::Stays => Some(i),
                        AfterLease::Died(next) => next,
                    }
                }
                // Killed where it stands: its entry stays in the ring until popped.
                MState::Ready
                    if self.ttl_passed(i) && !groups.iter().flatten().any(|&j| j == i) =>
                {
                    self.ttl_death(i)
                }
                MState::Delayed { .. } if self.ttl_passed(i) => self.ttl_death(i),
                MState::Delayed { deadline } if deadline <= t => Some(i),
                _ => None,
            };
            if let Some(v) = visible {
                self.msgs[v].state = MState::Ready;
                groups[self.msgs[v].level].push(v);
            }
        }
        for (ring, group) in self.ready.iter_mut().zip(groups) {
            if !group.is_empty() {
                ring.push_back(group);
            }
        }
    }

    fn run_wheel(&mut self) {
        self.run_wheel_joined(None);
    }

    /// Leases the ready `i`; returns its lease number.
    fn lease(&mut self, i: usize) -> u32 {
        self.unready(i);
        let deadline = self.deadline(self.visibility_nanos);
        let msg = &mut self.msgs[i];
        msg.receive_count += 1;
        msg.leases += 1;
        msg.state = MState::InFlight { deadline };
        self.counts.received += 1;
        msg.leases
    }

    /// Takes the ready `i` for good (at-most-once); returns its lane's next head, which the
    /// caller makes ready along with the wheel run the take makes.
    fn take(&mut self, i: usize) -> Option<usize> {
        self.unready(i);
        self.msgs[i].receive_count += 1;
        self.counts.received += 1;
        self.counts.deleted += 1;
        self.retire(i, Gone::Taken)
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
            (MState::Ready | MState::Delayed { .. }, End::Expired) => Verdict::Refused(EXPIRED),
            (MState::Gone(_), End::Expired) => Verdict::Refused(STALE_OR_EXPIRED),
            _ => Verdict::Refused(STALE),
        }
    }

    fn delete(&mut self, i: usize) {
        self.counts.deleted += 1;
        self.msgs[i].last_end = End::Deleted;
        if let Some(next) = self.retire(i, Gone::Deleted) {
            self.push_ready(next);
        }
    }

    /// Ends `i`'s lease by a release (a nack with no delay).
    fn release(&mut self, i: usize) {
        self.counts.released += 1;
        self.msgs[i].last_end = End::Released;
        match self.end_of_lease(i, true) {
            AfterLease::Stays => self.push_ready(i),
            AfterLease::Died(next) => next.into_iter().for_each(|n| self.push_ready(n)),
        }
    }

    /// Ends `i`'s lease by a nack with a nonzero `delay`.
    fn nack_after(&mut self, i: usize, delay: u64) {
        self.counts.released += 1;
        self.msgs[i].last_end = End::Released;
        match self.end_of_lease(i, true) {
            AfterLease::Stays => {
                self.msgs[i].state = MState::Delayed {
                    deadline: self.deadline(delay),
                }
            }
            AfterLease::Died(next) => next.into_iter().for_each(|n| self.push_ready(n)),
        }
    }

    /// Ends `i`'s lease by a hand-back: its receive count restored, never to the dead-letter
    /// queue for that count.
    fn hand_back(&mut self, i: usize) {
        self.counts.released += 1;
        self.msgs[i].last_end = End::Released;
        self.msgs[i].receive_count -= 1;
        match self.end_of_lease(i, false) {
            AfterLease::Stays => self.push_ready(i),
            AfterLease::Died(next) => next.into_iter().for_each(|n| self.push_ready(n)),
        }
    }

    /// `(ready, waiting behind a lane's head, delayed, in flight)` now.
    fn holdings(&self) -> (usize, usize, usize, usize) {
        let mut h = (0, 0, 0, 0);
        for msg in &self.msgs {
            match msg.state {
                MState::Ready => h.0 += 1,
                MState::Queued => h.1 += 1,
                MState::Delayed { .. } => h.2 += 1,
                MState::InFlight { .. } => h.3 += 1,
                MState::Gone(_) => {}
            }
        }
        h
    }
}

// ---------------------------------------------------------------------------------------------
// Driving the real queue and the model side by side

struct Harness {
    clock: ManualClock,
    q: Queue<u32>,
    dlq: Option<Arc<Queue<u32>>>,
    /// The group keys sends choose from.
    keys: Vec<u64>,
    m: Model,
    receipts: Receipts,
    ids: HashMap<MessageId, usize>,
    by_body: HashMap<u32, usize>,
    last_id: Option<MessageId>,
    next_body: u32,
}

impl Harness {
    fn new(cfg: &Config) -> Self {
        let clock = ManualClock::new();
        let dlq = cfg.max_receives.map(|_| {
            Arc::new(
                Queue::<u32>::builder()
                    .capacity(DEAD_LETTER_CAPACITY)
                    .clock(clock.clone())
                    .build()
                    .expect("dead-letter queue"),
            )
        });
        let mut builder = Queue::<u32>::builder()
            .capacity(cfg.capacity)
            .visibility_timeout(Duration::from_nanos(cfg.visibility_nanos))
            .tick(Duration::from_nanos(cfg.tick_nanos))
            .clock(clock.clone())
            .priorities(cfg.levels);
        if let Some((lanes, _)) = &cfg.groups {
            builder = builder.message_groups(*lanes);
        }
        if let Some(ttl) = cfg.ttl_nanos {
            builder = builder.message_ttl(Duration::from_nanos(ttl));
        }
        if let (Some(max), Some(dlq)) = (cfg.max_receives, &dlq) {
            builder = builder.dead_letter(dlq.clone(), max);
        }
        let q = builder.build().expect("queue");
        let keys = cfg.groups.as_ref().map_or(Vec::new(), |(_, k)| k.clone());
        let lane_of = keys.iter().map(|&k| api::group_lane(&q, k)).collect();
        Self {
            clock,
            q,
            dlq,
            keys,
            m: Model::new(cfg, lane_of),
            receipts: Receipts::default(),
            ids: HashMap::new(),
            by_body: HashMap::new(),
            last_id: None,
            next_body: 1000,
        }
    }

    /// The receipt a pick names, and the lease it belongs to if it was ever issued.
    fn resolve(&self, pick: Pick) -> (Receipt, Option<(usize, u32)>) {
        let issued = &self.receipts.issued;
        let chosen = match pick {
            Pick::Live(k) => {
                let live: Vec<usize> = (0..issued.len())
                    .filter(|&j| {
                        let r = &issued[j];
                        let msg = &self.m.msgs[r.msg];
                        r.lease == msg.leases && matches!(msg.state, MState::InFlight { .. })
                    })
                    .collect();
                match live.len() {
                    0 => issued.len().checked_sub(1),
                    n => Some(live[k % n]),
                }
            }
            Pick::Recent(k) => issued.len().checked_sub(k + 1),
        };
        match chosen {
            Some(j) => {
                let r = &issued[j];
                (r.receipt, Some((r.msg, r.lease)))
            }
            // Nothing issued yet: a forged receipt.
            None => self.receipts.lookup(0x5eed_0000_0000),
        }
    }

    fn check_stats(&mut self, ctx: &str) -> Result<(), TestCaseError> {
        let s = self.q.stats();
        self.m.run_wheel();
        let (ready, queued, delayed, in_flight) = self.m.holdings();
        prop_assert_eq!(s.in_flight, in_flight, "in_flight {}", ctx);
        prop_assert_eq!(
            s.ready + s.delayed,
            ready + queued + delayed,
            "ready + delayed (model: {} ready, {} behind their group's head, {} delayed) {}",
            ready,
            queued,
            delayed,
            ctx
        );
        prop_assert!(
            (ready..=ready + queued).contains(&s.ready),
            "ready {} (model: {} ready, {} behind their group's head) {}",
            s.ready,
            ready,
            queued,
            ctx
        );
        prop_assert_eq!(
            self.m.ready_count(),
            ready,
            "model ring out of step {}",
            ctx
        );
        let c = &self.m.counts;
        let got = Counts {
            sent: s.sent,
            received: s.received,
            deleted: s.deleted,
            released: s.released,
            expired: s.expired,
            dead_lettered: s.dead_lettered,
            ttl_expired: c.ttl_expired,
        };
        prop_assert_eq!(&got, c, "totals {}", ctx);
        let ttl_expired = api::ttl_expired(&s);
        prop_assert!(
            (c.ttl_expired..=c.ttl_expired + self.m.ttl_slack).contains(&ttl_expired),
            "ttl_expired {} (model {} + up to {}) {}",
            ttl_expired,
            c.ttl_expired,
            self.m.ttl_slack,
            ctx
        );
        if let Some(dlq) = &self.dlq {
            let d = dlq.stats();
            prop_assert_eq!(d.ready, self.m.dead_letter_held, "dead letters {}", ctx);
            prop_assert_eq!(d.sent, c.dead_lettered, "dead letters sent {}", ctx);
        }
        Ok(())
    }

    /// Applies one operation to both; returns whether the queue may have run its wheel in a
    /// way the model cannot place (the caller then syncs with `stats()`).
    fn apply(&mut self, op: &Op, ctx: &str) -> Result<bool, TestCaseError> {
        // On a TTL queue the end of a lease may file the message's TTL and so run the wheel;
        // leave it nothing due (see the semantics notes).
        let ends_lease = matches!(op, Op::Release(_) | Op::Nack(..) | Op::HandBack(_));
        if ends_lease && self.m.queue_ttl.is_some() && self.m.has_due() {
            self.check_stats(&format!("{ctx} (sync before)"))?;
        }
        match op {
            Op::Send(spec) => self.send(spec, ctx)?,
            Op::Receive => {
                let pre = self.m.candidates();
                let got = self.q.try_receive();
                self.receive_one(got, &pre, ctx)?;
            }
            Op::ReceiveBatch(max) => self.receive_batch(*max, ctx)?,
            Op::TryTake => self.take(ctx)?,
            Op::Delete(pick) => {
                let (receipt, target) = self.resolve(*pick);
                let verdict = self.m.verdict(target);
                if let Some(i) = check_verdict(self.q.delete(receipt), &verdict, ctx)? {
                    self.m.delete(i);
                }
            }
            Op::Release(pick) => {
                let (receipt, target) = self.resolve(*pick);
                let verdict = self.m.verdict(target);
                if let Some(i) = check_verdict(self.q.release(receipt), &verdict, ctx)? {
                    self.m.release(i);
                }
            }
            Op::HandBack(pick) => {
                let (receipt, target) = self.resolve(*pick);
                let verdict = self.m.verdict(target);
                if let Some(i) = check_verdict(self.q.hand_back(receipt), &verdict, ctx)? {
                    self.m.hand_back(i);
                }
            }
            Op::Nack(pick, delay) => {
                let (receipt, target) = self.resolve(*pick);
                let got = self
                    .q
                    .nack(receipt, Nack::after(Duration::from_nanos(*delay)));
                if *delay > MAX_NANOS {
                    prop_assert_eq!(got, Err(ReceiptError::TimeoutTooLong), "{}", ctx);
                    return Ok(false);
                }
                let verdict = self.m.verdict(target);
                match check_verdict(got, &verdict, ctx)? {
                    Some(i) if *delay == 0 => self.m.release(i),
                    Some(i) => {
                        self.m.nack_after(i, *delay);
                        // Filing the new deadline may run the queue's wheel.
                        return Ok(true);
                    }
                    None => {}
                }
            }
            Op::Advance(by) => {
                self.clock.advance(Duration::from_nanos(*by));
                self.m.now += by;
            }
            Op::DrainDeadLetters => self.drain_dead_letters(ctx)?,
            Op::Stats => self.check_stats(ctx)?,
        }
        Ok(false)
    }

    fn send(&mut self, spec: &SendSpec, ctx: &str) -> Result<(), TestCaseError> {
        let body = self.next_body;
        self.next_body += 1;
        let got = if spec.options {
            let mut options = SendOptions::new()
                .priority(spec.priority)
                .delay(Duration::from_nanos(spec.delay));
            if let Some(k) = spec.group {
                options = options.group(self.keys.get(k).copied().unwrap_or(k as u64));
            }
            if let Some(ttl) = spec.ttl {
                options = options.ttl(Duration::from_nanos(ttl));
            }
            self.q.send_with(body, &options)
        } else if spec.delay == 0 {
            self.q.send(body)
        } else {
            self.q.send_delayed(body, Duration::from_nanos(spec.delay))
        };
        if let Some(refused) = self.m.refusal(spec, body) {
            prop_assert_eq!(got, Err(refused), "{}", ctx);
            return Ok(());
        }
        self.m.run_wheel();
        let held = self.m.held();
        if held == self.m.capacity {
            prop_assert_eq!(got, Err(SendError::Full(body)), "{}", ctx);
            return Ok(());
        }
        if got == Err(SendError::Full(body)) && held + self.m.killed_in_ring() >= self.m.capacity {
            // The documented limit: see
            // `a_message_killed_behind_a_live_one_takes_room_until_that_one_is_received`.
            return Ok(());
        }
        let id = match got {
            Ok(id) => id,
            Err(e) => return Err(TestCaseError::fail(format!("send refused: {e:?} {ctx}"))),
        };
        check_id_grows(&mut self.last_id, id, ctx)?;
        let i = self.m.send(body, spec);
        self.ids.insert(id, i);
        self.by_body.insert(body, i);
        Ok(())
    }

    /// The model's message for a delivered id.
    fn message(&self, id: MessageId, ctx: &str) -> Result<usize, TestCaseError> {
        self.ids
            .get(&id)
            .copied()
            .ok_or_else(|| TestCaseError::fail(format!("unknown id {id} {ctx}")))
    }

    /// Checks that a receive (try_receive, try_take, or a batch's first) which got `got`
    /// returned a candidate from before (`pre`) or after its wheel run, and runs the model's
    /// wheel. Returns the message, still ready in the model.
    fn received(
        &mut self,
        got: Option<(MessageId, u32, u32)>,
        pre: &[usize],
        ctx: &str,
    ) -> Result<Option<usize>, TestCaseError> {
        self.m.run_wheel();
        let post = self.m.candidates();
        let Some((id, body, receive_count)) = got else {
            prop_assert!(
                post.is_empty() && pre.is_empty(),
                "nothing received, model has {:?} / {:?} {}",
                pre,
                post,
                ctx
            );
            return Ok(None);
        };
        let i = self.message(id, ctx)?;
        prop_assert!(
            pre.contains(&i) || post.contains(&i),
            "received message {} (level {}), model's next are {:?} before its wheel run, {:?} \
             after {}",
            i,
            self.m.msgs[i].level,
            pre,
            post,
            ctx
        );
        self.check_delivery(i, body, receive_count, ctx)?;
        Ok(Some(i))
    }

    /// Checks what a delivery of message `i` carries.
    fn check_delivery(
        &self,
        i: usize,
        body: u32,
        receive_count: u32,
        ctx: &str,
    ) -> Result<(), TestCaseError> {
        let msg = &self.m.msgs[i];
        prop_assert_eq!(body, msg.body, "body of message {} {}", i, ctx);
        prop_assert_eq!(
            receive_count,
            msg.receive_count + 1,
            "receive count of message {} {}",
            i,
            ctx
        );
        Ok(())
    }

    fn receive_one(
        &mut self,
        got: Option<visq::Delivery<u32>>,
        pre: &[usize],
        ctx: &str,
    ) -> Result<(), TestCaseError> {
        let seen = got.as_ref().map(|d| (d.id(), *d.body(), d.receive_count()));
        if let (Some(i), Some(d)) = (self.received(seen, pre, ctx)?, got) {
            self.leased(i, d.receipt(), ctx)?;
        }
        Ok(())
    }

    /// Records the lease of `i` under `receipt`.
    fn leased(&mut self, i: usize, receipt: Receipt, ctx: &str) -> Result<(), TestCaseError> {
        let lease = self.m.lease(i);
        let issued = Issued {
            receipt,
            msg: i,
            lease,
        };
        self.receipts.record(issued, ctx)
    }

    fn receive_batch(&mut self, max: usize, ctx: &str) -> Result<(), TestCaseError> {
        let pre = self.m.candidates();
        let mut out = Vec::with_capacity(max);
        let n = self.q.receive_batch(&mut out, max, Duration::ZERO);
        prop_assert_eq!(n, out.len(), "batch count {}", ctx);
        if max == 0 {
            prop_assert_eq!(n, 0, "{}", ctx);
            return Ok(());
        }
        let mut deliveries = out.into_iter();
        self.receive_one(deliveries.next(), &pre, ctx)?;
        // The rest are popped after the first receive ran the wheel.
        for d in deliveries {
            let next = self.m.candidates();
            let i = self.message(d.id(), ctx)?;
            prop_assert!(
                next.contains(&i),
                "batch received {}, model's next are {:?} {}",
                i,
                next,
                ctx
            );
            self.check_delivery(i, *d.body(), d.receive_count(), ctx)?;
            self.leased(i, d.receipt(), ctx)?;
        }
        if n < max {
            prop_assert!(
                self.m.candidates().is_empty(),
                "batch of {} stopped at {} with {:?} visible {}",
                max,
                n,
                self.m.candidates(),
                ctx
            );
        }
        Ok(())
    }

    fn take(&mut self, ctx: &str) -> Result<(), TestCaseError> {
        let pre = self.m.candidates();
        let got = self.q.try_take();
        let Some(taken) = got else {
            return self.received(None, &pre, ctx).map(drop);
        };
        let i = self.message(taken.id(), ctx)?;
        if pre.contains(&i) {
            // Popped before the wheel run: the lane's next head and the run's messages join
            // their ring in an order the contract does not fix.
            self.check_delivery(i, *taken.body(), taken.receive_count(), ctx)?;
            let next = self.m.take(i);
            self.m.run_wheel_joined(next);
        } else {
            // Popped after the wheel run (the ring had nothing before it): the next head
            // comes after the run's messages.
            let seen = (taken.id(), *taken.body(), taken.receive_count());
            self.received(Some(seen), &pre, ctx)?;
            if let Some(next) = self.m.take(i) {
                self.m.push_ready(next);
            }
        }
        Ok(())
    }

    /// Looks at every dead letter (each one's death record against the model), then
    /// receives and deletes the first.
    fn drain_dead_letters(&mut self, ctx: &str) -> Result<(), TestCaseError> {
        let Some(dlq) = &self.dlq else { return Ok(()) };
        let letters = dlq.dead_letters(DEAD_LETTER_CAPACITY);
        prop_assert_eq!(
            letters.len(),
            self.m.dead_letter_held,
            "dead letters {}",
            ctx
        );
        for letter in &letters {
            let Some(&i) = self.by_body.get(&letter.body) else {
                return Err(TestCaseError::fail(format!(
                    "unknown dead letter {} {ctx}",
                    letter.body
                )));
            };
            let msg = &self.m.msgs[i];
            prop_assert!(
                msg.state == MState::Gone(Gone::DeadLettered) && !msg.drained,
                "message {} in the dead-letter queue: {:?} {}",
                i,
                msg,
                ctx
            );
            prop_assert_eq!(
                self.ids.get(&letter.id),
                Some(&i),
                "dead letter's id {}",
                ctx
            );
            prop_assert_eq!(
                letter.receive_count,
                msg.receive_count,
                "dead letter {}'s receive count {}",
                i,
                ctx
            );
            let ttl = api::died_of_ttl(&letter.cause);
            let limit = |end: End| {
                matches!(
                    (&letter.cause, end),
                    (DeathCause::Expired, End::Expired)
                        | (DeathCause::Released { .. }, End::Released)
                )
            };
            let fits = match msg.death {
                Some(Death::Ttl) => ttl,
                Some(Death::Limit(end)) => limit(end),
                Some(Death::TtlOrLimit(end)) => ttl || limit(end),
                None => false,
            };
            prop_assert!(
                fits,
                "dead letter {} recorded {:?}, model: {:?} {}",
                i,
                letter.cause,
                msg.death,
                ctx
            );
        }
        let Some(delivery) = dlq.try_receive() else {
            prop_assert!(letters.is_empty(), "dead letters not received {}", ctx);
            return Ok(());
        };
        let Some(&i) = self.by_body.get(delivery.body()) else {
            return Err(TestCaseError::fail(format!(
                "unknown dead letter {} {ctx}",
                delivery.body()
            )));
        };
        prop_assert!(!self.m.msgs[i].drained, "dead letter {} twice {}", i, ctx);
        self.m.msgs[i].drained = true;
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
    let dropped = if h.dlq.is_some() {
        0
    } else {
        api::ttl_expired(&s)
    };
    prop_assert_eq!(
        s.sent,
        s.deleted + s.dead_lettered + dropped + held,
        "messages unaccounted for"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Delays and timeouts: zero, fractions of a tick, a few ticks, long, `MAX_TIMEOUT` and over.
fn span() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => Just(0u64),
        4 => 1..=3 * MS,
        4 => 0..=40 * MS,
        1 => 0..=120_000 * MS,
        1 => Just(MAX_NANOS),
        1 => (MAX_NANOS + 1)..=(2 * MAX_NANOS),
    ]
}

/// Message TTLs: fractions of a tick, a few ticks, long, `MAX_MESSAGE_TTL`.
fn ttl_span() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 1..=2 * MS,
        6 => 1..=30 * MS,
        1 => 0..=3_600_000 * MS,
        1 => Just(MAX_TTL_NANOS),
    ]
}

/// Clock steps: none, fractions of a tick, whole ticks, a few leases, hours.
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
        2 => (0usize..4).prop_map(Pick::Recent),
    ]
}

/// Sends for `cfg`: mostly valid, now and then one the queue must refuse (a priority out of
/// range, a group on an ungrouped queue or with a delay, a TTL without a queue TTL or out of
/// range).
fn send_spec(cfg: &Config) -> BoxedStrategy<SendSpec> {
    let levels = cfg.levels;
    let keys = cfg.groups.as_ref().map_or(0, |(_, keys)| keys.len());
    let ttl_queue = cfg.ttl_nanos.is_some();
    let group = if keys > 0 {
        prop::option::weighted(0.75, 0..keys).boxed()
    } else {
        prop::option::weighted(0.01, 0..8usize).boxed()
    };
    let ttl = if ttl_queue {
        prop_oneof![
            20 => prop::option::weighted(0.5, ttl_span()),
            1 => Just(Some(0u64)),
            1 => Just(Some(MAX_TTL_NANOS + 1)),
        ]
        .boxed()
    } else {
        prop::option::weighted(0.01, ttl_span()).boxed()
    };
    (
        prop_oneof![30 => 0..levels, 1 => Just(levels)],
        group,
        prop_oneof![3 => Just(0u64), 1 => span()],
        // Whether a grouped send keeps its delay (and is refused for it).
        prop::bool::weighted(0.03),
        ttl,
        prop::bool::weighted(0.7),
    )
        .prop_map(
            |(priority, group, delay, keep_delay, ttl, options)| SendSpec {
                priority,
                group,
                delay: if group.is_some() && !keep_delay {
                    0
                } else {
                    delay
                },
                ttl,
                options: options || priority > 0 || group.is_some() || ttl.is_some(),
            },
        )
        .boxed()
}

fn op(cfg: &Config) -> impl Strategy<Value = Op> {
    prop_oneof![
        7 => send_spec(cfg).prop_map(Op::Send),
        7 => Just(Op::Receive),
        2 => (0usize..=4).prop_map(Op::ReceiveBatch),
        2 => Just(Op::TryTake),
        6 => pick().prop_map(Op::Delete),
        2 => pick().prop_map(Op::Release),
        2 => (pick(), span()).prop_map(|(p, d)| Op::Nack(p, d)),
        1 => pick().prop_map(Op::HandBack),
        5 => advance().prop_map(Op::Advance),
        1 => Just(Op::DrainDeadLetters),
        1 => Just(Op::Stats),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    let levels = 1u8..=4;
    let lanes = prop_oneof![Just(1usize), Just(2), Just(64)];
    let keys = prop::collection::vec(any::<u64>(), 1..=8);
    let groups = prop::option::weighted(0.5, (lanes, keys));
    let ttl = prop::option::weighted(0.5, prop_oneof![4 => 1..=20 * MS, 1 => 0..=3_600_000 * MS]);
    (
        prop_oneof![1 => 1usize..=2, 4 => 3usize..=12],
        prop_oneof![2 => Just(5 * MS), 1 => Just(10 * MS), 3 => 200_000u64..=20 * MS],
        prop_oneof![6 => Just(MS), 1 => Just(250_000u64), 1 => Just(3 * MS)],
        levels,
        groups,
        ttl,
        prop::option::weighted(0.4, 1u32..=3),
        prop::option::weighted(0.1, 0usize..150),
    )
        .prop_map(
            |(capacity, visibility, tick, levels, groups, ttl, max_receives, close_at)| Config {
                capacity,
                visibility_nanos: visibility,
                tick_nanos: tick,
                levels,
                // TTL is never combined with groups (refused at build).
                ttl_nanos: ttl.filter(|_| groups.is_none()),
                groups,
                max_receives,
                close_at,
            },
        )
}

fn case() -> impl Strategy<Value = (Config, Vec<Step>)> {
    config().prop_flat_map(|cfg| {
        let steps = prop::collection::vec((op(&cfg), prop::bool::weighted(0.5)), 1..=150);
        (Just(cfg), steps)
    })
}

proptest! {
    // 1024 cases unless PROPTEST_CASES says otherwise (about 8 s in debug with priorities and
    // groups merged in, 6 s with TTL); no regression file is written (failures found are kept
    // as named tests below).
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            ProptestConfig::default().cases
        } else {
            1024
        },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn queue_matches_model((cfg, steps) in case()) {
        run_case(&cfg, &steps)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The reference on its own, against hand-worked cases (so that a wrong reference is not taken
// for a queue bug)

/// Sends `body` as `spec` to the model as the harness does (the wheel runs first); returns its
/// index.
fn model_send(m: &mut Model, body: u32, spec: SendSpec) -> usize {
    assert!(m.refusal(&spec, body).is_none(), "a valid send");
    m.run_wheel();
    assert!(m.held() < m.capacity, "room");
    m.send(body, &spec)
}

/// The bodies a receive may return now (after its wheel run), sorted.
fn model_candidates(m: &mut Model) -> Vec<u32> {
    m.run_wheel();
    let mut bodies: Vec<u32> = m.candidates().iter().map(|&i| m.msgs[i].body).collect();
    bodies.sort_unstable();
    bodies
}

/// Receives (leases) the one message a receive may return now, if any; its body.
fn model_receive(m: &mut Model) -> Option<u32> {
    m.run_wheel();
    let candidates = m.candidates();
    assert!(candidates.len() <= 1, "unambiguous: {candidates:?}");
    let &i = candidates.first()?;
    m.lease(i);
    Some(m.msgs[i].body)
}

fn index_of(m: &Model, body: u32) -> usize {
    m.msgs.iter().position(|msg| msg.body == body).unwrap()
}

fn advance_model(m: &mut Model, by: u64) {
    m.now += by;
}

#[test]
fn reference_priorities_are_strict_and_fifo_within_a_level() {
    let mut m = Model::new(
        &Config {
            levels: 3,
            ..Config::plain()
        },
        Vec::new(),
    );
    for (body, priority) in [(1, 0), (2, 2), (3, 1), (4, 2)] {
        model_send(&mut m, body, SendSpec::at(priority));
    }
    assert_eq!(model_receive(&mut m), Some(2));
    // Released, it goes to the back of its own level: behind 4, ahead of the lower levels.
    m.release(index_of(&m, 2));
    assert_eq!(model_receive(&mut m), Some(4));
    assert_eq!(model_receive(&mut m), Some(2));
    assert_eq!(m.msgs[index_of(&m, 2)].receive_count, 2);
    assert_eq!(model_receive(&mut m), Some(3));
    assert_eq!(model_receive(&mut m), Some(1));
    assert_eq!(model_receive(&mut m), None);
    let expected = Counts {
        sent: 4,
        received: 5,
        released: 1,
        ..Counts::default()
    };
    assert_eq!(m.counts, expected);
}

#[test]
fn reference_one_wheel_run_is_one_unordered_group_per_level() {
    let mut m = Model::new(
        &Config {
            levels: 2,
            ..Config::plain()
        },
        Vec::new(),
    );
    let delayed = |priority| SendSpec {
        delay: 2 * MS,
        ..SendSpec::at(priority)
    };
    model_send(&mut m, 1, delayed(0));
    model_send(&mut m, 2, delayed(1));
    model_send(&mut m, 3, delayed(1));
    model_send(&mut m, 4, SendSpec::at(0));
    model_send(&mut m, 5, delayed(0));
    assert_eq!(
        m.candidates(),
        vec![index_of(&m, 4)],
        "before the delays end"
    );
    advance_model(&mut m, 2 * MS);
    assert!(m.has_due());
    // A receive that pops before its wheel run gets 4; after it, 2 or 3.
    assert_eq!(m.candidates(), vec![index_of(&m, 4)]);
    assert_eq!(model_candidates(&mut m), vec![2, 3]);
    m.lease(index_of(&m, 3));
    assert_eq!(model_candidates(&mut m), vec![2]);
    m.lease(index_of(&m, 2));
    // Level 0: 4 was ready before the run, then 1 and 5 in either order.
    assert_eq!(model_candidates(&mut m), vec![4]);
    m.lease(index_of(&m, 4));
    assert_eq!(model_candidates(&mut m), vec![1, 5]);
}

#[test]
fn reference_groups_deliver_each_lane_in_order_one_at_a_time() {
    // Keys 0 and 1 share lane 0; key 2 has lane 1.
    let mut m = Model::new(
        &Config {
            groups: Some((2, vec![10, 11, 12])),
            ..Config::plain()
        },
        vec![0, 0, 1],
    );
    model_send(&mut m, 1, SendSpec::in_group(0));
    model_send(&mut m, 2, SendSpec::in_group(0));
    model_send(&mut m, 3, SendSpec::in_group(1));
    model_send(&mut m, 4, SendSpec::in_group(2));
    model_send(&mut m, 5, SendSpec::default());
    assert_eq!(m.holdings(), (3, 2, 0, 0), "1, 4 and 5 ready; 2 and 3 wait");
    assert_eq!(model_receive(&mut m), Some(1));
    assert_eq!(model_receive(&mut m), Some(4));
    assert_eq!(model_receive(&mut m), Some(5));
    assert_eq!(model_receive(&mut m), None, "lane 0's head is leased");
    // A released head stays its lane's head; a deleted one makes way for the next.
    m.release(index_of(&m, 4));
    m.delete(index_of(&m, 1));
    assert_eq!(model_receive(&mut m), Some(4));
    assert_eq!(model_receive(&mut m), Some(2));
    m.delete(index_of(&m, 2));
    assert_eq!(
        model_receive(&mut m),
        Some(3),
        "key 1 shares lane 0, after key 0"
    );
    assert_eq!(m.holdings(), (0, 0, 0, 3));
}

#[test]
fn reference_a_nacked_or_expired_head_holds_its_group() {
    let mut m = Model::new(
        &Config {
            groups: Some((1, vec![7])),
            ..Config::plain()
        },
        vec![0],
    );
    model_send(&mut m, 1, SendSpec::in_group(0));
    model_send(&mut m, 2, SendSpec::in_group(0));
    assert_eq!(model_receive(&mut m), Some(1));
    m.nack_after(index_of(&m, 1), 3 * MS);
    assert_eq!(
        model_receive(&mut m),
        None,
        "the group waits out the nack's delay"
    );
    assert_eq!(m.holdings(), (0, 1, 1, 0));
    advance_model(&mut m, 3 * MS);
    assert_eq!(model_receive(&mut m), Some(1));
    advance_model(&mut m, 5 * MS);
    assert_eq!(
        model_receive(&mut m),
        Some(1),
        "expired, delivered again first"
    );
    assert_eq!(m.msgs[0].receive_count, 3);
    assert_eq!(m.counts.expired, 1);
    // Taken at-most-once: the next message becomes the head.
    m.release(0);
    m.run_wheel();
    let next = m.take(0);
    assert_eq!(next, Some(1));
    m.run_wheel_joined(next);
    assert_eq!(model_receive(&mut m), Some(2));
}

#[test]
fn reference_a_dead_lettered_head_makes_way_but_a_handed_back_one_does_not() {
    let mut m = Model::new(
        &Config {
            groups: Some((1, vec![7])),
            max_receives: Some(1),
            ..Config::plain()
        },
        vec![0],
    );
    model_send(&mut m, 1, SendSpec::in_group(0));
    model_send(&mut m, 2, SendSpec::in_group(0));
    assert_eq!(model_receive(&mut m), Some(1));
    m.hand_back(0);
    assert_eq!(m.msgs[0].receive_count, 0, "its receive undone");
    assert_eq!(model_receive(&mut m), Some(1));
    m.release(0);
    assert_eq!(m.msgs[0].state, MState::Gone(Gone::DeadLettered));
    assert_eq!(model_receive(&mut m), Some(2));
    assert_eq!((m.counts.dead_lettered, m.dead_letter_held), (1, 1));
}

#[test]
fn reference_ttl_is_never_early_and_processed_on_its_tick() {
    let mut m = Model::new(
        &Config {
            ttl_nanos: Some(5 * MS),
            ..Config::plain()
        },
        Vec::new(),
    );
    model_send(&mut m, 1, SendSpec::default());
    model_send(&mut m, 2, SendSpec::default());
    advance_model(&mut m, 5 * MS - 1);
    assert!(!m.has_due());
    assert_eq!(model_receive(&mut m), Some(1), "before the deadline tick");
    advance_model(&mut m, 1);
    assert!(m.has_due());
    assert!(m.candidates().is_empty(), "a receive must not deliver 2");
    m.run_wheel();
    assert_eq!(m.msgs[1].state, MState::Gone(Gone::Dropped));
    assert_eq!((m.counts.ttl_expired, m.counts.deleted), (1, 0));
    assert_eq!(
        m.holdings(),
        (0, 0, 0, 1),
        "the leased one is not expired by TTL"
    );
}

#[test]
fn reference_ttl_kills_at_the_end_of_a_lease_and_while_delayed() {
    let mut m = Model::new(
        &Config {
            ttl_nanos: Some(3 * MS),
            visibility_nanos: 10 * MS,
            max_receives: Some(5),
            ..Config::plain()
        },
        Vec::new(),
    );
    model_send(&mut m, 1, SendSpec::default());
    // Its own TTL, longer than the queue's, and a delay that outlives it.
    let delayed = SendSpec {
        delay: 8 * MS,
        ..SendSpec::with_ttl(6 * MS)
    };
    model_send(&mut m, 2, delayed);
    assert_eq!(model_receive(&mut m), Some(1));
    advance_model(&mut m, 5 * MS);
    m.run_wheel();
    assert_eq!(
        m.holdings(),
        (0, 0, 1, 1),
        "leased past its TTL, still leased"
    );
    m.release(0);
    assert_eq!(m.msgs[0].state, MState::Gone(Gone::DeadLettered));
    advance_model(&mut m, MS);
    m.run_wheel();
    assert_eq!(m.msgs[1].state, MState::Gone(Gone::DeadLettered));
    let expected = Counts {
        sent: 2,
        received: 1,
        released: 1,
        dead_lettered: 2,
        ttl_expired: 2,
        ..Counts::default()
    };
    assert_eq!((&m.counts, m.ttl_slack), (&expected, 0));
}

#[test]
fn reference_ttl_and_receive_limit_at_once_leave_the_count_open() {
    let mut m = Model::new(
        &Config {
            ttl_nanos: Some(2 * MS),
            max_receives: Some(1),
            ..Config::plain()
        },
        Vec::new(),
    );
    model_send(&mut m, 1, SendSpec::default());
    assert_eq!(model_receive(&mut m), Some(1));
    advance_model(&mut m, 6 * MS);
    m.run_wheel();
    assert_eq!(m.msgs[0].state, MState::Gone(Gone::DeadLettered));
    assert_eq!((m.counts.expired, m.counts.dead_lettered), (1, 1));
    assert_eq!((m.counts.ttl_expired, m.ttl_slack), (0, 1));
}

#[test]
fn reference_receipts_expire_then_go_stale() {
    let mut m = Model::new(&Config::plain(), Vec::new());
    model_send(&mut m, 1, SendSpec::default());
    model_receive(&mut m);
    assert!(matches!(m.verdict(Some((0, 1))), Verdict::Valid(0)));
    advance_model(&mut m, 5 * MS);
    assert!(matches!(m.verdict(Some((0, 1))), Verdict::Refused(EXPIRED)));
    m.run_wheel();
    assert!(matches!(m.verdict(Some((0, 1))), Verdict::Refused(EXPIRED)));
    model_receive(&mut m);
    assert!(matches!(m.verdict(Some((0, 1))), Verdict::Refused(STALE)));
    m.delete(0);
    assert!(matches!(m.verdict(Some((0, 2))), Verdict::Refused(STALE)));
    assert!(matches!(m.verdict(None), Verdict::Refused(STALE)));
}

#[test]
fn reference_refusals_come_in_the_queues_order() {
    let m = Model::new(
        &Config {
            levels: 2,
            ..Config::plain()
        },
        Vec::new(),
    );
    let refused = |spec: SendSpec| m.refusal(&spec, 9);
    let why = |why| Some(SendError::Invalid(9, why));
    let too_high = SendSpec {
        group: Some(0),
        ..SendSpec::at(2)
    };
    let out_of_range = InvalidSend::PriorityOutOfRange {
        priority: 2,
        levels: 2,
    };
    assert_eq!(refused(too_high), why(out_of_range));
    assert_eq!(
        refused(SendSpec::in_group(0)),
        why(InvalidSend::NoMessageGroups)
    );
    assert_eq!(
        refused(SendSpec::with_ttl(MS)),
        why(InvalidSend::NoMessageTtl)
    );
    let too_late = SendSpec {
        delay: MAX_NANOS + 1,
        ..SendSpec::default()
    };
    assert_eq!(refused(too_late), Some(SendError::DelayTooLong(9)));
    assert_eq!(refused(SendSpec::at(1)), None);
}

// ---------------------------------------------------------------------------------------------
// Deviations found (minimal sequences, for the owners)

/// The one case where `SendError::Full` comes with fewer than `capacity` messages held
/// (documented on `Builder::message_ttl` and in src/core/ttl.rs, "Capacity"): a message killed
/// by its TTL while a live one waits ahead of it in the ready ring keeps its slot until that
/// one is received, whose claim sweeps the killed slot behind it. Shrunk from
/// `queue_matches_model`.
#[test]
fn a_message_killed_behind_a_live_one_takes_room_until_that_one_is_received() {
    let clock = ManualClock::new();
    let q: Queue<u32> = Queue::builder()
        .capacity(2)
        .tick(Duration::from_millis(1))
        .message_ttl(Duration::from_secs(3600))
        .clock(clock.clone())
        .build()
        .unwrap();
    q.send(1).unwrap();
    let short = SendOptions::new().ttl(Duration::from_millis(1));
    q.send_with(2, &short).unwrap();
    clock.advance(Duration::from_millis(2));
    let stats = q.stats();
    assert_eq!((stats.ready, api::ttl_expired(&stats)), (1, 1));
    assert_eq!(
        q.send(3),
        Err(SendError::Full(3)),
        "the killed slot is behind message 1"
    );
    let first = q.try_receive().expect("message 1 is live");
    assert_eq!(*first.body(), 1);
    assert!(
        q.send(3).is_ok(),
        "the receive swept the killed slot behind it"
    );
}
