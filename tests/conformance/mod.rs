//! The conformance suite: one set of tests every [`Backend`] must pass, written against
//! `dyn Backend<Body = Vec<u8>>` only.
//!
//! A runner (`tests/conformance_<backend>.rs`) describes its backend in a [`Target`]: a factory
//! that builds a fresh, empty backend for each case from a [`Setup`], how time passes there
//! ([`Time`]: a `ManualClock` in process, real waiting on a broker) and what the backend
//! promises about stale receipts ([`StaleReceipts`]). [`run`] then runs every case in
//! [`CASES`], each on fresh queues that it deletes at the end, and prints a summary.
//!
//! Each case reads [`Backend::capabilities`] and tests what the backend says it does: a
//! feature it lacks must be refused with [`BackendError::Unsupported`] (never a silent
//! no-op), a limit it has must be enforced with [`BackendError::Limit`] and the body handed
//! back. Where a case cannot test something on a backend it prints one line saying what it did
//! not run and why; nothing is skipped silently. The lines and the summary are written to the
//! process's stderr directly, past the test harness's capture, so they show in every run.
//!
//! Set `VISQ_CONFORMANCE_ONLY=<part of a case name>` to run only the matching cases.

use std::fmt::Debug;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use visq::{
    Backend, BackendError, Capabilities, CountKind, Feature, Handle, Incoming, Limit, ManualClock,
    Outgoing, Receipt, ReceiveCount, Refused,
};

/// The backend every case speaks to.
pub type Bytes = dyn Backend<Body = Vec<u8>>;

/// What a case asks the runner's factory for: a fresh, empty backend on queues of its own.
#[derive(Clone, Debug)]
pub struct Setup {
    /// A queue name no other case or run uses: a prefix, the process id, a counter and the
    /// case's name (at most 60 characters, letters, digits, `-` and `_`).
    pub name: String,
    /// Dead-letter after this many receives (a dead-letter queue the backend creates), or none.
    pub max_receives: Option<u32>,
    /// The backend's default visibility timeout, for receives that name none.
    #[allow(dead_code)] // RabbitMQ has no visibility timeout to set
    pub visibility: Duration,
}

/// A backend built for one case, and how to remove its queues afterwards.
pub struct Subject {
    backend: Arc<Bytes>,
    teardown: Box<dyn FnOnce() -> Result<(), String>>,
}

impl Subject {
    /// `backend`, whose queues `teardown` deletes.
    pub fn new(
        backend: Arc<Bytes>,
        teardown: impl FnOnce() -> Result<(), String> + 'static,
    ) -> Self {
        Self {
            backend,
            teardown: Box::new(teardown),
        }
    }
}

/// How time passes on a backend.
// Each runner uses one variant: the in-process one the manual clock, the brokers real time.
#[allow(dead_code)]
pub enum Time {
    /// In process: every queue the factory builds reads this clock; a deadline fires at most
    /// one `tick` late.
    Manual {
        /// The clock the queues read.
        clock: ManualClock,
        /// The queues' timing-wheel tick.
        tick: Duration,
    },
    /// On a broker: its own clock, so time passes by waiting (the cases keep it short).
    Real {
        /// How late after a deadline the broker may still hide a message (its timer's
        /// resolution plus a round trip).
        slack: Duration,
        /// How long a receive waits before "nothing is there" is believed.
        quiet: Duration,
    },
}

/// A point in a backend's time, to measure deadlines from.
#[derive(Clone, Copy, Debug)]
pub enum Mark {
    /// A reading of the manual clock.
    Manual(Duration),
    /// A wall-clock instant.
    Real(Instant),
}

impl Time {
    /// The lease or delay the cases use: long beside the clock's resolution, short on a broker.
    pub fn lease(&self) -> Duration {
        match self {
            Self::Manual { .. } => Duration::from_secs(10),
            // SQS counts visibility and delay in whole seconds; two leave room to look at a
            // hidden message before its deadline.
            Self::Real { .. } => Duration::from_secs(2),
        }
    }

    /// The default visibility timeout the cases ask for: longer than any case runs.
    pub fn default_visibility(&self) -> Duration {
        match self {
            Self::Manual { .. } => Duration::from_secs(300),
            Self::Real { .. } => Duration::from_secs(30),
        }
    }

    /// Now.
    pub fn mark(&self) -> Mark {
        match self {
            Self::Manual { clock, .. } => Mark::Manual(clock.now()),
            Self::Real { .. } => Mark::Real(Instant::now()),
        }
    }

    /// Lets time pass until `after` has passed since `mark`, plus the backend's slack: a
    /// deadline of `mark + after` is then due everywhere.
    pub fn pass_overdue(&self, mark: Mark, after: Duration) {
        match (self, mark) {
            (Self::Manual { clock, tick }, Mark::Manual(at)) => {
                let target = at + after + *tick;
                clock.advance(target.saturating_sub(clock.now()));
            }
            (Self::Real { slack, .. }, Mark::Real(at)) => {
                let target = at + after + *slack;
                std::thread::sleep(target.saturating_duration_since(Instant::now()));
            }
            _ => unreachable!("a mark of another kind of time"),
        }
    }

    /// Lets time pass to just before `mark + after` where time can be set (one tick before,
    /// in process); on a broker it does not wait. [`Time::is_before`] says whether that
    /// deadline is still ahead.
    pub fn pass_to_just_before(&self, mark: Mark, after: Duration) {
        if let (Self::Manual { clock, tick }, Mark::Manual(at)) = (self, mark) {
            let target = (at + after).saturating_sub(*tick);
            clock.advance(target.saturating_sub(clock.now()));
        }
    }

    /// Whether `mark + after` is still ahead.
    pub fn is_before(&self, mark: Mark, after: Duration) -> bool {
        match (self, mark) {
            (Self::Manual { clock, .. }, Mark::Manual(at)) => clock.now() < at + after,
            (Self::Real { .. }, Mark::Real(at)) => Instant::now() < at + after,
            _ => unreachable!("a mark of another kind of time"),
        }
    }

    /// How long a receive that expects a message may wait for it (it returns as soon as one
    /// is there; in process a visible message is there at once).
    pub fn expect_wait(&self) -> Duration {
        match self {
            Self::Manual { .. } => Duration::from_millis(200),
            Self::Real { .. } => Duration::from_secs(10),
        }
    }

    /// How long a receive waits before "nothing is there" is believed: nothing in process
    /// (everything visible is visible at once), `quiet` on a broker.
    pub fn quiet(&self) -> Duration {
        match self {
            Self::Manual { .. } => Duration::ZERO,
            Self::Real { quiet, .. } => *quiet,
        }
    }
}

/// What a backend promises about a receipt that no longer names a live lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // each runner names the one its backend promises
pub enum StaleReceipts {
    /// Every such receipt gets [`BackendError::Stale`] and changes nothing (visq, RabbitMQ).
    Refused,
    /// A receipt that once named the message may still settle it, and one of a deleted
    /// message may answer `Ok` (Amazon SQS: "if you don't provide the most recently received
    /// receipt handle ... the request succeeds, but the message might not be deleted"; the
    /// moto server deletes the message with any receipt it ever issued for it). A receipt
    /// never issued is still refused.
    MayStillSettle,
}

/// A backend under test, as its runner describes it.
pub struct Target {
    /// The backend's name in the output.
    pub backend: &'static str,
    /// How time passes there.
    pub time: Time,
    /// What it promises about stale receipts.
    pub stale_receipts: StaleReceipts,
    /// Checks known to fail on this backend today, each with why: `(case, reason)`. Such a
    /// case still runs; its failure is reported as a known gap and does not fail the run, and
    /// a pass fails the run until the entry is removed.
    pub known_gaps: &'static [(&'static str, &'static str)],
    /// Builds a fresh, empty backend.
    pub build: Factory,
}

/// Builds a fresh, empty backend for a case, or says why it could not.
pub type Factory = Box<dyn Fn(&Setup) -> Result<Subject, String>>;

/// The VISQ_REQUIRE_BROKERS switch for a broker runner: the value of `var` (the broker's
/// address) when set; when not, a failure if `VISQ_REQUIRE_BROKERS=1`, else a skip line naming
/// the variable and how to start the server, and `None`.
#[allow(dead_code)] // used by the broker runners only
pub fn broker_address(var: &str, backend: &str, start: &str) -> Option<String> {
    if let Some(value) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return Some(value);
    }
    assert!(
        std::env::var("VISQ_REQUIRE_BROKERS").as_deref() != Ok("1"),
        "VISQ_REQUIRE_BROKERS=1 but {var} is not set"
    );
    say(&format!(
        "conformance on {backend}: SKIPPED, {var} is not set (start a server with \
         `source <({start} start)`, or set VISQ_REQUIRE_BROKERS=1 to make this a failure)"
    ));
    None
}

/// One case: a name and the test.
pub type Case = (&'static str, fn(&mut Ctx<'_>));

// The worker pool over the trait (`Consumer::backend_builder`) comes with the patterns' branch.
// Until it is merged, the pool's cases are compiled out by the always-false `cfg(any())` below
// and in `all_cases`, and `run` says so (`POOL_CASES`). The merge makes `mod pool` unconditional,
// has `all_cases` chain `pool::CASES`, and drops `POOL_CASES` and its note.
#[cfg(any())]
mod pool;

/// Every case: [`CASES`], then the worker pool's.
fn all_cases() -> Vec<Case> {
    #[cfg(any())]
    let pool = pool::CASES;
    #[cfg(not(any()))]
    let pool: &[Case] = &[];
    CASES.iter().chain(pool).copied().collect()
}

/// Whether the worker pool's cases are compiled in.
const POOL_CASES: bool = cfg!(any());

/// Every case but the worker pool's, in the order they run.
pub const CASES: &[Case] = &[
    ("send_receive_delete", send_receive_delete),
    ("receive_up_to_max", receive_up_to_max),
    ("long_poll_returns_on_send", long_poll_returns_on_send),
    ("receive_counts", receive_counts),
    ("visibility_expiry", visibility_expiry),
    ("extend_lease", extend_lease),
    ("shorten_lease", shorten_lease),
    (
        "change_visibility_zero_releases",
        change_visibility_zero_releases,
    ),
    ("release", release),
    ("hand_back", hand_back),
    ("delayed_send", delayed_send),
    ("batch_send_mixed", batch_send_mixed),
    ("batch_send_over_limit", batch_send_over_limit),
    ("batch_delete_mixed", batch_delete_mixed),
    (
        "batch_change_visibility_mixed",
        batch_change_visibility_mixed,
    ),
    ("limits", limits),
    ("wait_over_limit", wait_over_limit),
    ("optional_features", optional_features),
    (
        "dead_letter_after_max_receives",
        dead_letter_after_max_receives,
    ),
    ("dead_letter_now", dead_letter_now),
    ("stale_receipts", stale_receipts),
    ("stale_after_expiry", stale_after_expiry),
];

/// Runs every case (or those `VISQ_CONFORMANCE_ONLY` names) on `target`, printing a line per
/// case and a summary; panics if any failed.
pub fn run(target: Target) {
    let only = std::env::var("VISQ_CONFORMANCE_ONLY").ok();
    let started = Instant::now();
    let (mut passed, mut failed, mut gaps, mut partial) = (0, Vec::new(), 0, 0);
    if !POOL_CASES {
        say(&format!(
            "  note    worker_pool_end_to_end and worker_pool_graceful_stop on {}: not compiled \
             in on this branch (they need Consumer::backend_builder; tests/conformance/pool.rs)",
            target.backend
        ));
    }
    for (name, case) in all_cases() {
        if only.as_deref().is_some_and(|only| !name.contains(only)) {
            continue;
        }
        let case_started = Instant::now();
        let (outcome, notes) = run_case(&target, name, case, true);
        let took = case_started.elapsed().as_secs_f64();
        let gap = target
            .known_gaps
            .iter()
            .find(|(case, _)| *case == name)
            .map(|(_, why)| *why);
        match (outcome, gap) {
            (Ok(()), None) => {
                passed += 1;
                partial += usize::from(notes > 0);
                say(&format!("  ok      {name} ({took:.1} s)"));
            }
            (Err(why), Some(gap)) => {
                gaps += 1;
                say(&format!("  KNOWN GAP {name}: {why} [{gap}]"));
            }
            (Ok(()), Some(gap)) => {
                say(&format!(
                    "  FAILED  {name}: listed as a known gap ({gap}) but it passes: remove it \
                     from the runner's known_gaps"
                ));
                failed.push(name);
            }
            (Err(why), None) => {
                say(&format!("  FAILED  {name} ({took:.1} s): {why}"));
                failed.push(name);
            }
        }
    }
    say(&format!(
        "conformance on {}: {passed} passed ({partial} of them with parts not run, said above), \
         {} failed, {gaps} known gaps, in {:.1} s",
        target.backend,
        failed.len(),
        started.elapsed().as_secs_f64()
    ));
    assert!(
        failed.is_empty(),
        "conformance on {}: failed: {}",
        target.backend,
        failed.join(", ")
    );
}

/// Whether the case named `name` fails on `target`, run without printing: for checking that
/// the suite catches a broken backend.
#[allow(dead_code)] // used by the in-process runner only
pub fn fails(target: &Target, name: &str) -> bool {
    let (_, case) = all_cases()
        .into_iter()
        .find(|(case, _)| *case == name)
        .unwrap_or_else(|| panic!("no case is named {name}"));
    run_case(target, name, case, false).0.is_err()
}

/// Runs one case and deletes its queues: what went wrong, and how many notes it printed.
fn run_case(
    target: &Target,
    name: &str,
    case: fn(&mut Ctx<'_>),
    loud: bool,
) -> (Result<(), String>, usize) {
    let mut ctx = Ctx {
        target,
        case: name,
        subjects: Vec::new(),
        notes: 0,
        loud,
    };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| case(&mut ctx)));
    let teardown = ctx.teardown();
    (outcome.map_err(panic_message).and(teardown), ctx.notes)
}

/// Writes a line to stderr directly, past the test harness's capture.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".to_string())
}

/// What a case has: its target, and the backends it built (deleted when it ends).
pub struct Ctx<'a> {
    target: &'a Target,
    case: &'a str,
    subjects: Vec<Subject>,
    notes: usize,
    loud: bool,
}

impl Ctx<'_> {
    /// A fresh, empty backend on new queues.
    fn backend(&mut self, max_receives: Option<u32>) -> Arc<Bytes> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut name = format!("visq-{}-{n}-{}", std::process::id(), self.case);
        name.truncate(60);
        let setup = Setup {
            name,
            max_receives,
            visibility: self.time().default_visibility(),
        };
        let subject = (self.target.build)(&setup)
            .unwrap_or_else(|error| panic!("building a backend for {setup:?}: {error}"));
        let backend = Arc::clone(&subject.backend);
        self.subjects.push(subject);
        backend
    }

    fn time(&self) -> &Time {
        &self.target.time
    }

    fn stale_receipts(&self) -> StaleReceipts {
        self.target.stale_receipts
    }

    /// Says what this case did not run on this backend, and why.
    fn not_run(&mut self, what: &str) {
        self.notes += 1;
        if self.loud {
            say(&format!(
                "  note    {} on {}: {what}",
                self.case, self.target.backend
            ));
        }
    }

    /// Deletes the queues of every backend the case built.
    fn teardown(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        for subject in self.subjects.drain(..) {
            drop(subject.backend);
            if let Err(error) = (subject.teardown)() {
                errors.push(error);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("deleting the case's queues: {}", errors.join("; ")))
        }
    }

    /// Receives until `n` messages came or [`Time::expect_wait`] passed; fails with fewer.
    /// Every delivery's receive count is of the kind the capabilities name.
    fn receive_n(
        &self,
        backend: &Bytes,
        n: usize,
        visibility: Option<Duration>,
    ) -> Vec<Incoming<Vec<u8>>> {
        let give_up = Instant::now() + self.time().expect_wait();
        let max_wait = backend.capabilities().max_wait;
        let mut got = Vec::new();
        while got.len() < n {
            let left = give_up.saturating_duration_since(Instant::now());
            let wait = left.min(max_wait);
            let want = n - got.len();
            backend
                .receive(&mut got, want, wait, visibility)
                .unwrap_or_else(|error| panic!("receive: {error}"));
            if left.is_zero() {
                break;
            }
        }
        assert_eq!(
            got.len(),
            n,
            "received {} of {n} messages within {:?}: {:?}",
            got.len(),
            self.time().expect_wait(),
            bodies(&got)
        );
        let kind = backend.capabilities().receive_count;
        for delivery in &got {
            assert_count_kind(kind, delivery.receive_count);
        }
        got
    }

    fn receive_one(&self, backend: &Bytes, visibility: Option<Duration>) -> Incoming<Vec<u8>> {
        self.receive_n(backend, 1, visibility).remove(0)
    }

    /// Fails if a receive gets anything within [`Time::quiet`].
    fn assert_nothing(&self, backend: &Bytes, why: &str) {
        let mut got = Vec::new();
        backend
            .receive(&mut got, 10, self.time().quiet(), None)
            .unwrap_or_else(|error| panic!("receive: {error}"));
        assert!(got.is_empty(), "{why}, yet received {:?}", bodies(&got));
    }

    /// Checks that nothing is visible while `mark + after` is ahead: in process just before
    /// it, on a broker right away (a receive that only returns after the deadline proves
    /// nothing and fails as a stall).
    fn assert_hidden_until(&self, backend: &Bytes, mark: Mark, after: Duration, what: &str) {
        let time = self.time();
        time.pass_to_just_before(mark, after);
        let mut got = Vec::new();
        backend
            .receive(&mut got, 10, Duration::ZERO, None)
            .unwrap_or_else(|error| panic!("receive: {error}"));
        if !got.is_empty() {
            assert!(
                !time.is_before(mark, after),
                "{what} was visible before its deadline: {:?}",
                bodies(&got)
            );
            panic!("inconclusive: the machine stalled past the deadline of {what} while looking");
        }
    }

    /// Checks a receipt that no longer names a live lease, as the backend promises: `Stale`,
    /// or where a stale receipt may still settle ([`StaleReceipts::MayStillSettle`]), `Ok`
    /// or `Stale`. Returns whether it was accepted.
    fn assert_stale(&self, result: Result<(), BackendError>, what: &str) -> bool {
        match (self.stale_receipts(), result) {
            (_, Err(BackendError::Stale)) => false,
            (StaleReceipts::MayStillSettle, Ok(())) => true,
            (_, other) => panic!("{what}: expected Err(Stale), got {other:?}"),
        }
    }
}

/// Fails unless the count is of the kind the backend's capabilities name.
fn assert_count_kind(kind: CountKind, count: ReceiveCount) {
    let matches = matches!(
        (kind, count),
        (CountKind::Exact, ReceiveCount::Exact(_))
            | (CountKind::Approximate, ReceiveCount::Approximate(_))
            | (CountKind::RedeliveredFlag, ReceiveCount::Redelivered(_))
    );
    assert!(
        matches,
        "capabilities say receive counts are {kind:?}, a delivery carries {count:?}"
    );
}

/// Checks a delivery's receive count against the number of receives that happened, as
/// exactly as the backend's kind of count promises: `Exact` equal; `Approximate` (SQS's
/// estimate) at least that many; a `Redelivered` flag set from the second receive on.
fn assert_count(delivery: &Incoming<Vec<u8>>, receives: u32) {
    let ok = match delivery.receive_count {
        ReceiveCount::Exact(n) => n == receives,
        ReceiveCount::Approximate(n) => n >= receives,
        ReceiveCount::Redelivered(flag) => flag == (receives > 1),
    };
    assert!(
        ok,
        "after {receives} receives, {:?} carries {:?}",
        text(&delivery.body),
        delivery.receive_count
    );
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn bodies(deliveries: &[Incoming<Vec<u8>>]) -> Vec<String> {
    deliveries.iter().map(|d| text(&d.body)).collect()
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Sends one message; fails if refused.
fn send(backend: &Bytes, message: Outgoing<Vec<u8>>) -> visq::MessageKey {
    backend
        .send(message)
        .unwrap_or_else(|refused| panic!("send: {refused}"))
        .id
}

fn send_text(backend: &Bytes, body: &str) -> visq::MessageKey {
    send(backend, Outgoing::new(body.as_bytes().to_vec()))
}

/// Fails unless the send was refused with `error` and the body came back intact.
fn assert_refused<T>(result: Result<T, Refused<Vec<u8>>>, error: &BackendError, body: &[u8])
where
    T: Debug,
{
    match result {
        Err(refused) => {
            assert_eq!(&refused.error, error, "why the send was refused");
            assert!(refused.body == body, "the refused body came back changed");
        }
        Ok(accepted) => {
            panic!("expected a refusal with {error:?}, the send was accepted: {accepted:?}")
        }
    }
}

/// A receipt of the same kind as `real` that was never issued.
fn forged(real: &Handle) -> Handle {
    if let Some(receipt) = real.as_local() {
        // Another lease epoch of the same slot.
        Handle::local(Receipt::from_u64(receipt.to_u64() ^ (1 << 62)))
    } else if let Some((connection, tag)) = real.as_tag() {
        Handle::tag(connection, tag + 1_000_000)
    } else {
        let text = real.as_text().expect("a handle is local, a tag or text");
        Handle::text(format!("{text}forged"))
    }
}

/// A receipt of another kind than `real` (another backend's).
fn foreign(real: &Handle) -> Handle {
    if real.as_local().is_some() {
        Handle::text("a-receipt-of-another-backend")
    } else if real.as_tag().is_some() {
        Handle::local(Receipt::from_u64(1))
    } else {
        Handle::tag(0, 1)
    }
}

// ===== the cases =====

/// Sends three messages, receives each once with a first-receive count and the id its send
/// returned, deletes them, and finds the queue empty, also after their leases would have
/// ended.
fn send_receive_delete(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let names = ["alpha", "beta", "gamma"];
    let ids: Vec<_> = names.iter().map(|name| send_text(&*b, name)).collect();
    assert_eq!(
        sorted(ids.clone())
            .windows(2)
            .filter(|w| w[0] == w[1])
            .count(),
        0,
        "ids are distinct: {ids:?}"
    );
    // Where leases expire, a short one: a deleted message must not come back after it.
    let expire = b.capabilities().leases_expire;
    let lease = ctx.time().lease();
    let got = ctx.receive_n(&*b, 3, expire.then_some(lease));
    let mark = ctx.time().mark();
    assert_eq!(sorted(bodies(&got)), names, "the bodies sent");
    assert_eq!(
        sorted(got.iter().map(|d| d.id.clone()).collect()),
        sorted(ids),
        "each delivery carries the id its send returned"
    );
    for delivery in &got {
        assert_count(delivery, 1);
        assert_eq!(delivery.group, None, "sent without a group");
        b.delete(&delivery.handle)
            .unwrap_or_else(|error| panic!("delete: {error}"));
    }
    ctx.assert_nothing(&*b, "every message was deleted");
    if expire {
        ctx.time().pass_overdue(mark, lease);
        ctx.assert_nothing(
            &*b,
            "a deleted message does not come back when its lease ends",
        );
    }
}

/// A receive takes at most `max`; more receives take the rest; a batch delete settles all.
fn receive_up_to_max(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let names = ["m1", "m2", "m3", "m4", "m5"];
    for name in names {
        send_text(&*b, name);
    }
    let mut first = Vec::new();
    let took = b
        .receive(&mut first, 2, ctx.time().expect_wait(), None)
        .unwrap_or_else(|error| panic!("receive: {error}"));
    assert!(
        (1..=2).contains(&took) && first.len() == took,
        "a receive of at most 2 returned {took} and appended {}",
        first.len()
    );
    let rest = ctx.receive_n(&*b, names.len() - took, None);
    let all: Vec<_> = first.into_iter().chain(rest).collect();
    assert_eq!(sorted(bodies(&all)), names, "every message once");
    let handles: Vec<Handle> = all.iter().map(|d| d.handle.clone()).collect();
    let results = b.delete_batch(&handles);
    assert_eq!(results.len(), handles.len(), "one result per entry");
    assert!(
        results.iter().all(Result::is_ok),
        "every delete: {results:?}"
    );
    ctx.assert_nothing(&*b, "every message was deleted");
}

/// A long poll returns as soon as a message arrives, not at the end of its wait. The send
/// happens while the receive waits or just before it starts; either way it must not sit out
/// its wait.
fn long_poll_returns_on_send(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let wait = b.capabilities().max_wait.min(Duration::from_secs(10));
    let receiver = Arc::clone(&b);
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let mut got = Vec::new();
        let result = receiver.receive(&mut got, 1, wait, None);
        (result, got, started.elapsed())
    });
    send_text(&*b, "wake up");
    let (result, got, took) = waiting.join().expect("the receiving thread");
    assert_eq!(result, Ok(1), "the long poll received the message");
    assert!(
        took < wait / 2,
        "the long poll took {took:?} of its {wait:?} wait"
    );
    b.delete(&got[0].handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
}

/// Three receives of one message (released in between) carry counts 1, 2, 3 as the backend's
/// kind of count promises (see [`assert_count`]).
fn receive_counts(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let kind = b.capabilities().receive_count;
    send_text(&*b, "counted");
    for receives in 1..=3 {
        let delivery = ctx.receive_one(&*b, None);
        assert_count(&delivery, receives);
        if receives < 3 {
            b.release(&delivery.handle)
                .unwrap_or_else(|error| panic!("release: {error}"));
        } else {
            b.delete(&delivery.handle)
                .unwrap_or_else(|error| panic!("delete: {error}"));
        }
    }
    if kind == CountKind::RedeliveredFlag {
        ctx.not_run("counts beyond \"redelivered\": the backend only flags a redelivery");
    }
}

/// An unsettled lease ends at its deadline, not before: the message comes back with a higher
/// count. Where leases do not expire (RabbitMQ), checks that the lease still holds after its
/// timeout instead.
fn visibility_expiry(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let lease = ctx.time().lease();
    send_text(&*b, "forgotten");
    if !b.capabilities().leases_expire {
        ctx.not_run(
            "expiry and redelivery: capabilities.leases_expire is false (a delivery is held \
             until settled or its connection closes); checked that the lease holds past a \
             visibility timeout instead",
        );
        let first = ctx.receive_one(&*b, None);
        let mark = ctx.time().mark();
        ctx.time().pass_overdue(mark, lease);
        ctx.assert_nothing(&*b, "a lease that does not expire is still held");
        b.delete(&first.handle)
            .unwrap_or_else(|error| panic!("the held lease's delete: {error}"));
        return;
    }
    let first = ctx.receive_one(&*b, Some(lease));
    let mark = ctx.time().mark();
    assert_count(&first, 1);
    ctx.assert_hidden_until(&*b, mark, lease, "a leased message");
    ctx.time().pass_overdue(mark, lease);
    let second = ctx.receive_one(&*b, None);
    assert_eq!(second.id, first.id, "the same message comes back");
    assert_eq!(second.body, first.body);
    assert_count(&second, 2);
    b.delete(&second.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
    ctx.assert_nothing(&*b, "the message was deleted");
}

/// Whether `error` is the refusal of a lease change the backend cannot make: `feature`, or
/// either lease feature where the backend can neither extend nor shorten (it cannot tell
/// which the call asks for without knowing the lease).
fn is_lease_refusal(caps: &Capabilities, feature: Feature, error: &BackendError) -> bool {
    match error {
        BackendError::Unsupported(f) if *f == feature => true,
        BackendError::Unsupported(Feature::ExtendLease | Feature::ShortenLease) => {
            !caps.extend_lease && !caps.shorten_lease
        }
        _ => false,
    }
}

/// A lease made longer holds past its first deadline and ends at the new one. Where leases
/// cannot be extended, the call is refused with `Unsupported` and the lease is unchanged.
fn extend_lease(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let caps = b.capabilities();
    let lease = ctx.time().lease();
    send_text(&*b, "slow job");
    if !caps.extend_lease {
        ctx.not_run("extending a lease: capabilities.extend_lease is false; checked the refusal");
        let held = ctx.receive_one(&*b, None);
        let refusal = b
            .change_visibility(&held.handle, ctx.time().default_visibility() * 2)
            .expect_err("extending a lease on a backend that cannot");
        assert!(
            is_lease_refusal(&caps, Feature::ExtendLease, &refusal),
            "expected Unsupported(ExtendLease), got {refusal:?}"
        );
        b.delete(&held.handle)
            .unwrap_or_else(|error| panic!("the refused lease still deletes: {error}"));
        return;
    }
    let first = ctx.receive_one(&*b, Some(lease));
    let mark = ctx.time().mark();
    b.change_visibility(&first.handle, 2 * lease)
        .unwrap_or_else(|error| panic!("change_visibility (extend): {error}"));
    let extended = ctx.time().mark();
    ctx.time().pass_overdue(mark, lease);
    ctx.assert_hidden_until(
        &*b,
        extended,
        2 * lease,
        "a message whose lease was extended",
    );
    ctx.time().pass_overdue(extended, 2 * lease);
    let second = ctx.receive_one(&*b, None);
    assert_eq!(second.id, first.id);
    assert_count(&second, 2);
    b.delete(&second.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
}

/// A lease made shorter ends at the new deadline. Where leases cannot be shortened, the call
/// is refused with `Unsupported` and the lease is unchanged.
fn shorten_lease(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let caps = b.capabilities();
    let lease = ctx.time().lease();
    send_text(&*b, "quick job");
    if !caps.shorten_lease {
        ctx.not_run("shortening a lease: capabilities.shorten_lease is false; checked the refusal");
        let held = ctx.receive_one(&*b, None);
        let refusal = b
            .change_visibility(&held.handle, lease)
            .expect_err("shortening a lease on a backend that cannot");
        assert!(
            is_lease_refusal(&caps, Feature::ShortenLease, &refusal),
            "expected Unsupported(ShortenLease), got {refusal:?}"
        );
        b.delete(&held.handle)
            .unwrap_or_else(|error| panic!("the refused lease still deletes: {error}"));
        return;
    }
    let first = ctx.receive_one(&*b, Some(ctx.time().default_visibility()));
    b.change_visibility(&first.handle, lease)
        .unwrap_or_else(|error| panic!("change_visibility (shorten): {error}"));
    let mark = ctx.time().mark();
    ctx.assert_hidden_until(&*b, mark, lease, "a message whose lease was shortened");
    ctx.time().pass_overdue(mark, lease);
    let second = ctx.receive_one(&*b, None);
    assert_eq!(second.id, first.id);
    assert_count(&second, 2);
    b.delete(&second.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
}

/// `change_visibility(.., 0)` gives the message back at once, counted (every backend).
fn change_visibility_zero_releases(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    send_text(&*b, "again");
    let first = ctx.receive_one(&*b, None);
    b.change_visibility(&first.handle, Duration::ZERO)
        .unwrap_or_else(|error| panic!("change_visibility(0): {error}"));
    let second = ctx.receive_one(&*b, None);
    assert_eq!(second.id, first.id);
    assert_count(&second, 2);
    b.delete(&second.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
}

/// `release` gives the message back at once, counted.
fn release(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    send_text(&*b, "nacked");
    let first = ctx.receive_one(&*b, None);
    b.release(&first.handle)
        .unwrap_or_else(|error| panic!("release: {error}"));
    let second = ctx.receive_one(&*b, None);
    assert_eq!(second.id, first.id);
    assert_eq!(second.body, first.body);
    assert_count(&second, 2);
    b.delete(&second.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
    ctx.assert_nothing(&*b, "the message was deleted");
}

/// `hand_back` gives the message back at once; the receive is uncounted exactly where the
/// capabilities say so.
fn hand_back(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let uncharged = b.capabilities().uncharged_hand_back;
    send_text(&*b, "unstarted");
    let first = ctx.receive_one(&*b, None);
    b.hand_back(&first.handle)
        .unwrap_or_else(|error| panic!("hand_back: {error}"));
    let second = ctx.receive_one(&*b, None);
    assert_eq!(second.id, first.id);
    if uncharged {
        assert_count(&second, 1);
    } else {
        ctx.not_run(
            "an uncounted hand-back: capabilities.uncharged_hand_back is false; checked that \
             it counts as a release",
        );
        assert_count(&second, 2);
    }
    b.delete(&second.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
}

/// A delayed message stays hidden until its delay has passed, while an undelayed one sent
/// after it is received at once. Where sends cannot be delayed, the send is refused with
/// `Unsupported(Delay)` and the body handed back.
fn delayed_send(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let lease = ctx.time().lease();
    let Some(max_delay) = b.capabilities().max_delay else {
        ctx.not_run("delayed delivery: capabilities.max_delay is None; checked the refusal");
        let body = b"later".to_vec();
        assert_refused(
            b.send(Outgoing::new(body.clone()).delay(lease)),
            &BackendError::Unsupported(Feature::Delay),
            &body,
        );
        ctx.assert_nothing(&*b, "a refused send sends nothing");
        return;
    };
    let delay = lease.min(max_delay);
    send(&*b, Outgoing::new(b"later".to_vec()).delay(delay));
    let mark = ctx.time().mark();
    send_text(&*b, "now");
    let now = ctx.receive_one(&*b, None);
    assert_eq!(text(&now.body), "now", "the undelayed message first");
    b.delete(&now.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
    ctx.assert_hidden_until(&*b, mark, delay, "a delayed message");
    ctx.time().pass_overdue(mark, delay);
    let later = ctx.receive_one(&*b, None);
    assert_eq!(text(&later.body), "later");
    assert_count(&later, 1);
    b.delete(&later.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
}

/// An entry every backend must refuse, and the refusal: a delay over the maximum, or any
/// delay where there is none.
fn refused_entry(caps: &Capabilities, body: &[u8]) -> (Outgoing<Vec<u8>>, BackendError) {
    match caps.max_delay {
        Some(max) => {
            let delay = max + Duration::from_secs(1);
            let error = BackendError::Limit {
                limit: Limit::DelayMillis,
                max: millis(max),
                got: millis(delay),
            };
            (Outgoing::new(body.to_vec()).delay(delay), error)
        }
        None => (
            Outgoing::new(body.to_vec()).delay(Duration::from_secs(1)),
            BackendError::Unsupported(Feature::Delay),
        ),
    }
}

/// A batch send answers one result per entry, in order: a refused entry in the middle gets its
/// error and its body back, the entries around it are sent.
fn batch_send_mixed(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let (bad, error) = refused_entry(&b.capabilities(), b"refused");
    let results = b.send_batch(vec![
        Outgoing::new(b"first".to_vec()),
        bad,
        Outgoing::new(b"third".to_vec()),
    ]);
    assert_eq!(results.len(), 3, "one result per entry");
    let mut results = results.into_iter();
    let first = results.next().unwrap();
    assert!(first.is_ok(), "entry 0: {first:?}");
    assert_refused(results.next().unwrap(), &error, b"refused");
    let third = results.next().unwrap();
    assert!(third.is_ok(), "entry 2: {third:?}");
    let got = ctx.receive_n(&*b, 2, None);
    assert_eq!(sorted(bodies(&got)), ["first", "third"]);
    for delivery in &got {
        b.delete(&delivery.handle)
            .unwrap_or_else(|error| panic!("delete: {error}"));
    }
    ctx.assert_nothing(&*b, "the refused entry was not sent");
}

/// A batch of `max_batch + 1` entries is either split by the backend (every entry sent) or
/// refused whole with `Limit(BatchEntries)`, every body handed back; never half of each.
fn batch_send_over_limit(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let max = b.capabilities().max_batch;
    if max > 100 {
        ctx.not_run(&format!(
            "a batch over max_batch: max_batch is {max}, too many to send in a test"
        ));
        return;
    }
    let n = max + 1;
    let names: Vec<String> = (0..n).map(|i| format!("entry {i}")).collect();
    let batch = names
        .iter()
        .map(|name| Outgoing::new(name.as_bytes().to_vec()))
        .collect();
    let results = b.send_batch(batch);
    assert_eq!(results.len(), n, "one result per entry");
    if results.iter().all(Result::is_ok) {
        let got = ctx.receive_n(&*b, n, None);
        assert_eq!(sorted(bodies(&got)), sorted(names));
        let handles: Vec<Handle> = got.iter().map(|d| d.handle.clone()).collect();
        for chunk in handles.chunks(max) {
            assert!(b.delete_batch(chunk).iter().all(Result::is_ok));
        }
    } else {
        let error = BackendError::Limit {
            limit: Limit::BatchEntries,
            max: max as u64,
            got: n as u64,
        };
        for (result, name) in results.into_iter().zip(&names) {
            assert_refused(result, &error, name.as_bytes());
        }
    }
    ctx.assert_nothing(&*b, "every message was deleted or refused");
}

/// Receives the messages named `names` (each once) and returns them in that order.
fn receive_named(ctx: &Ctx<'_>, b: &Bytes, names: &[&str]) -> Vec<Incoming<Vec<u8>>> {
    let mut got = ctx.receive_n(b, names.len(), None);
    names
        .iter()
        .map(|name| {
            let at = got
                .iter()
                .position(|d| d.body == name.as_bytes())
                .unwrap_or_else(|| panic!("{name} was not received"));
            got.remove(at)
        })
        .collect()
}

/// A batch delete answers one result per entry, in order: the receipt of a message deleted
/// before and a receipt never issued, in the middle, are refused as stale (or, where stale
/// receipts may still settle, the first may answer `Ok`); the entries around them delete.
fn batch_delete_mixed(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    for name in ["w", "x", "y", "z"] {
        send_text(&*b, name);
    }
    let got = receive_named(ctx, &*b, &["w", "x", "y", "z"]);
    b.delete(&got[1].handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
    let results = b.delete_batch(&[
        got[0].handle.clone(),
        got[1].handle.clone(),
        forged(&got[0].handle),
        got[2].handle.clone(),
        got[3].handle.clone(),
    ]);
    assert_eq!(results.len(), 5, "one result per entry");
    assert_eq!(results[0], Ok(()), "entry 0, a live receipt");
    ctx.assert_stale(results[1].clone(), "entry 1, a deleted message's receipt");
    assert_eq!(
        results[2],
        Err(BackendError::Stale),
        "entry 2, a receipt never issued"
    );
    assert_eq!(results[3], Ok(()), "entry 3, a live receipt");
    assert_eq!(results[4], Ok(()), "entry 4, a live receipt");
    ctx.assert_nothing(&*b, "every message was deleted");
}

/// A batch visibility change answers one result per entry, in order: live receipts are
/// released (zero works everywhere), a deleted message's receipt and one never issued are
/// refused as stale.
fn batch_change_visibility_mixed(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    for name in ["a", "b", "c"] {
        send_text(&*b, name);
    }
    let got = receive_named(ctx, &*b, &["a", "b", "c"]);
    b.delete(&got[1].handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
    let results = b.change_visibility_batch(&[
        (got[0].handle.clone(), Duration::ZERO),
        (got[1].handle.clone(), Duration::ZERO),
        (forged(&got[0].handle), Duration::ZERO),
        (got[2].handle.clone(), Duration::ZERO),
    ]);
    assert_eq!(results.len(), 4, "one result per entry");
    assert_eq!(results[0], Ok(()), "entry 0, a live receipt");
    ctx.assert_stale(results[1].clone(), "entry 1, a deleted message's receipt");
    assert_eq!(
        results[2],
        Err(BackendError::Stale),
        "entry 2, a receipt never issued"
    );
    assert_eq!(results[3], Ok(()), "entry 3, a live receipt");
    let again = receive_named(ctx, &*b, &["a", "c"]);
    for delivery in &again {
        assert_count(delivery, 2);
        b.delete(&delivery.handle)
            .unwrap_or_else(|error| panic!("delete: {error}"));
    }
    ctx.assert_nothing(&*b, "every message was deleted");
}

/// Whether `limit` is one a test can go over (a backend with no real limit names a huge one).
fn finite(limit: Duration) -> bool {
    limit < Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Calls over the backend's limits get `Limit` naming the limit, its maximum and what was
/// asked, change nothing, and hand a refused body back: body size, delay, visibility on
/// receive and on change.
fn limits(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let caps = b.capabilities();
    send_text(&*b, "within limits");

    match caps.max_body_bytes {
        Some(max) => {
            let big = vec![b'x'; max + 1];
            let error = BackendError::Limit {
                limit: Limit::BodyBytes,
                max: max as u64,
                got: max as u64 + 1,
            };
            assert_refused(b.send(Outgoing::new(big.clone())), &error, &big);
        }
        None => ctx.not_run("a body over the size limit: capabilities.max_body_bytes is None"),
    }

    let (bad, error) = refused_entry(&caps, b"delayed too long");
    assert_refused(b.send(bad), &error, b"delayed too long");

    if !caps.leases_expire {
        ctx.not_run(
            "a receive visibility over the limit: leases do not expire, so a receive's \
             visibility is not used",
        );
    } else if finite(caps.max_visibility) {
        let asked = caps.max_visibility + Duration::from_secs(1);
        let mut out = Vec::new();
        let result = b.receive(&mut out, 1, Duration::ZERO, Some(asked));
        assert_eq!(
            result,
            Err(BackendError::Limit {
                limit: Limit::VisibilityMillis,
                max: millis(caps.max_visibility),
                got: millis(asked),
            }),
            "a receive with a visibility over the limit"
        );
        assert!(out.is_empty(), "a refused receive takes nothing");
    } else {
        ctx.not_run("a receive visibility over the limit: max_visibility is unbounded");
    }

    let held = ctx.receive_one(&*b, None);
    assert_eq!(text(&held.body), "within limits");
    assert_count(&held, 1);
    if finite(caps.max_visibility) {
        let asked = caps.max_visibility + Duration::from_secs(1);
        let refusal = b
            .change_visibility(&held.handle, asked)
            .expect_err("a visibility change over the limit");
        let limit = BackendError::Limit {
            limit: Limit::VisibilityMillis,
            max: millis(caps.max_visibility),
            got: millis(asked),
        };
        assert!(
            refusal == limit || is_lease_refusal(&caps, Feature::ExtendLease, &refusal),
            "expected {limit:?} (or Unsupported(ExtendLease) where leases cannot be \
             extended), got {refusal:?}"
        );
    } else {
        ctx.not_run("a visibility change over the limit: max_visibility is unbounded");
    }
    b.delete(&held.handle)
        .unwrap_or_else(|error| panic!("the lease survives refused calls: {error}"));
    ctx.assert_nothing(&*b, "refused sends send nothing");
}

/// A receive whose wait is over `max_wait` gets `Limit(WaitMillis)` and takes nothing. (A
/// message is waiting, so a backend that does not check returns it at once and fails here
/// rather than waiting for hours.)
fn wait_over_limit(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let max = b.capabilities().max_wait;
    if !finite(max) {
        ctx.not_run("a wait over the limit: max_wait is unbounded");
        return;
    }
    send_text(&*b, "waiting");
    let asked = max + Duration::from_secs(1);
    let mut out = Vec::new();
    let result = b.receive(&mut out, 1, asked, None);
    let taken = out.len();
    for delivery in out {
        b.delete(&delivery.handle)
            .unwrap_or_else(|error| panic!("delete: {error}"));
    }
    assert_eq!(
        result,
        Err(BackendError::Limit {
            limit: Limit::WaitMillis,
            max: millis(max),
            got: millis(asked),
        }),
        "a receive with a wait over the limit"
    );
    assert_eq!(taken, 0, "a refused receive takes nothing");
}

/// Message groups, deduplication ids and attributes: carried where the capabilities say so;
/// elsewhere refused with `Unsupported(feature)`, the body handed back and nothing sent.
fn optional_features(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let caps = b.capabilities();

    let body = b"grouped".to_vec();
    let grouped = Outgoing::new(body.clone()).group("g1");
    if caps.groups {
        send(&*b, grouped);
        let got = ctx.receive_one(&*b, None);
        assert_eq!(got.group.as_deref(), Some("g1"), "the group comes back");
        b.delete(&got.handle)
            .unwrap_or_else(|error| panic!("delete: {error}"));
    } else {
        assert_refused(
            b.send(grouped),
            &BackendError::Unsupported(Feature::Groups),
            &body,
        );
    }

    let body = b"with attributes".to_vec();
    let attributed = Outgoing::new(body.clone()).attribute("tenant", "acme");
    if caps.attributes {
        send(&*b, attributed);
        let got = ctx.receive_one(&*b, None);
        assert!(
            got.attributes
                .contains(&("tenant".to_string(), "acme".to_string())),
            "the attribute comes back: {:?}",
            got.attributes
        );
        b.delete(&got.handle)
            .unwrap_or_else(|error| panic!("delete: {error}"));
    } else {
        assert_refused(
            b.send(attributed),
            &BackendError::Unsupported(Feature::Attributes),
            &body,
        );
    }

    let body = b"deduplicated".to_vec();
    let deduplicated = || Outgoing::new(body.clone()).dedup_id("order-42");
    if caps.dedup {
        // While the first copy is still queued (the moto server's deduplication covers only
        // that; SQS and visq cover a 5-minute window).
        send(&*b, deduplicated());
        send(&*b, deduplicated());
        let got = ctx.receive_one(&*b, None);
        b.delete(&got.handle)
            .unwrap_or_else(|error| panic!("delete: {error}"));
    } else {
        assert_refused(
            b.send(deduplicated()),
            &BackendError::Unsupported(Feature::Dedup),
            &body,
        );
    }
    ctx.assert_nothing(
        &*b,
        "refused sends send nothing and a deduplicated send sends once",
    );
}

/// With a dead-letter limit of 2, a message given back twice goes to the dead-letter queue
/// instead of a third delivery. Where the backend has no native dead-lettering, says so.
fn dead_letter_after_max_receives(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(Some(2));
    if !b.capabilities().native_dead_letter {
        ctx.not_run(
            "dead-lettering after max receives: capabilities.native_dead_letter is false even \
             with a dead-letter limit",
        );
        return;
    }
    assert_eq!(b.dead_letter_limit(), Some(2), "the limit asked for");
    let dlq = b
        .dead_letter_queue()
        .expect("a backend that dead-letters has a dead-letter queue");
    send_text(&*b, "poison");
    for receives in 1..=2 {
        let delivery = ctx.receive_one(&*b, None);
        assert_count(&delivery, receives);
        b.release(&delivery.handle)
            .unwrap_or_else(|error| panic!("release: {error}"));
    }
    ctx.assert_nothing(
        &*b,
        "a message received max_receives times is dead-lettered",
    );
    let dead = ctx.receive_one(&*dlq, None);
    assert_eq!(
        text(&dead.body),
        "poison",
        "the message is in the dead-letter queue"
    );
    dlq.delete(&dead.handle)
        .unwrap_or_else(|error| panic!("delete from the dead-letter queue: {error}"));
    ctx.assert_nothing(&*dlq, "the dead letter was deleted");
}

/// `dead_letter(receipt, reason)` moves the message to the dead-letter queue now, and its
/// receipt is stale after; on a backend without a dead-letter queue the call is refused with
/// `Unsupported(DeadLetter)` and the lease is unchanged.
fn dead_letter_now(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(Some(5));
    if b.capabilities().native_dead_letter {
        let dlq = b
            .dead_letter_queue()
            .expect("a backend that dead-letters has a dead-letter queue");
        send_text(&*b, "undecodable");
        let delivery = ctx.receive_one(&*b, None);
        b.dead_letter(&delivery.handle, "conformance: the body does not decode")
            .unwrap_or_else(|error| panic!("dead_letter: {error}"));
        ctx.assert_nothing(&*b, "a dead-lettered message is gone from its queue");
        let dead = ctx.receive_one(&*dlq, None);
        assert_eq!(text(&dead.body), "undecodable");
        ctx.assert_stale(
            b.delete(&delivery.handle),
            "a dead-lettered message's receipt",
        );
        dlq.delete(&dead.handle)
            .unwrap_or_else(|error| panic!("delete from the dead-letter queue: {error}"));
    } else {
        ctx.not_run(
            "dead_letter with a dead-letter queue: capabilities.native_dead_letter is false \
             even with a dead-letter limit",
        );
    }

    let plain = ctx.backend(None);
    assert_eq!(plain.dead_letter_limit(), None, "no limit asked for");
    if plain.dead_letter_queue().is_some() {
        ctx.not_run("dead_letter's refusal: this backend has a dead-letter queue without a limit");
        return;
    }
    send_text(&*plain, "no dead-letter queue");
    let delivery = ctx.receive_one(&*plain, None);
    assert_eq!(
        plain.dead_letter(&delivery.handle, "no dead-letter queue"),
        Err(BackendError::Unsupported(Feature::DeadLetter)),
        "dead_letter without a dead-letter queue"
    );
    plain
        .delete(&delivery.handle)
        .unwrap_or_else(|error| panic!("the lease survives a refused dead_letter: {error}"));
    ctx.assert_nothing(&*plain, "the message was deleted");
}

/// Receipts that no longer name a live lease: of a deleted message, of a released one, of one
/// redelivered since, one never issued and one of another backend. Each gets `Stale` and
/// changes nothing, except where the backend promises less
/// ([`StaleReceipts::MayStillSettle`]: SQS), which the case states and checks instead that no
/// message is lost or duplicated.
fn stale_receipts(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    let settle_anyway = ctx.stale_receipts() == StaleReceipts::MayStillSettle;
    if settle_anyway {
        ctx.not_run(
            "Stale for every old receipt: this backend documents that an old receipt may \
             still settle (SQS); checked Ok-or-Stale and that nothing is lost or duplicated",
        );
    }

    // Deleted.
    send_text(&*b, "deleted");
    let deleted = ctx.receive_one(&*b, None);
    b.delete(&deleted.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
    ctx.assert_stale(
        b.delete(&deleted.handle),
        "deleting a deleted message again",
    );
    ctx.assert_stale(b.release(&deleted.handle), "releasing a deleted message");
    ctx.assert_stale(
        b.change_visibility(&deleted.handle, Duration::ZERO),
        "changing a deleted message's visibility",
    );
    ctx.assert_nothing(&*b, "the deleted message stays deleted");

    // Released, then redelivered.
    send_text(&*b, "released");
    let first = ctx.receive_one(&*b, None);
    b.release(&first.handle)
        .unwrap_or_else(|error| panic!("release: {error}"));
    let deleted_by_old = ctx.assert_stale(b.delete(&first.handle), "a released lease's receipt");
    if deleted_by_old {
        // SQS: the old receipt may or may not have deleted it.
        let mut rest = Vec::new();
        b.receive(&mut rest, 10, ctx.time().quiet(), None)
            .unwrap_or_else(|error| panic!("receive: {error}"));
        assert!(rest.len() <= 1, "one message at most: {:?}", bodies(&rest));
        for delivery in rest {
            b.delete(&delivery.handle)
                .unwrap_or_else(|error| panic!("delete: {error}"));
        }
    } else {
        let second = ctx.receive_one(&*b, None);
        assert_eq!(second.id, first.id, "a stale delete changed nothing");
        assert_count(&second, 2);
        ctx.assert_stale(
            b.delete(&first.handle),
            "a redelivered message's old receipt",
        );
        ctx.assert_stale(b.release(&first.handle), "releasing with the old receipt");
        // Where the old receipt was accepted the message may be gone; the new one then
        // settles nothing.
        let result = b.delete(&second.handle);
        if !settle_anyway {
            assert_eq!(result, Ok(()), "the current receipt still deletes");
        }
    }
    ctx.assert_nothing(&*b, "the released message was deleted once");

    // Never issued, and another backend's.
    send_text(&*b, "held");
    let held = ctx.receive_one(&*b, None);
    for (what, receipt) in [
        ("a receipt never issued", forged(&held.handle)),
        ("another backend's receipt", foreign(&held.handle)),
    ] {
        assert_eq!(
            b.delete(&receipt),
            Err(BackendError::Stale),
            "delete with {what}"
        );
        assert_eq!(
            b.release(&receipt),
            Err(BackendError::Stale),
            "release with {what}"
        );
        assert_eq!(
            b.change_visibility(&receipt, Duration::ZERO),
            Err(BackendError::Stale),
            "change_visibility with {what}"
        );
    }
    b.delete(&held.handle)
        .unwrap_or_else(|error| panic!("bogus receipts changed the live lease: {error}"));
    ctx.assert_nothing(&*b, "the held message was deleted");
}

/// A receipt whose lease expired is stale: it settles nothing, and the message comes back.
fn stale_after_expiry(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    if !b.capabilities().leases_expire {
        ctx.not_run("receipts of expired leases: capabilities.leases_expire is false");
        return;
    }
    let lease = ctx.time().lease();
    send_text(&*b, "expired");
    let first = ctx.receive_one(&*b, Some(lease));
    let mark = ctx.time().mark();
    ctx.time().pass_overdue(mark, lease);
    let accepted = ctx.assert_stale(b.delete(&first.handle), "an expired lease's receipt");
    if accepted {
        ctx.not_run(
            "an expired receipt's refusal: this backend may still settle with it (SQS); \
             checked that the message is then gone or comes back once",
        );
        let mut rest = Vec::new();
        b.receive(&mut rest, 10, ctx.time().quiet(), None)
            .unwrap_or_else(|error| panic!("receive: {error}"));
        assert!(rest.len() <= 1, "one message at most: {:?}", bodies(&rest));
        for delivery in rest {
            b.delete(&delivery.handle)
                .unwrap_or_else(|error| panic!("delete: {error}"));
        }
        return;
    }
    let second = ctx.receive_one(&*b, None);
    assert_eq!(second.id, first.id, "the expired message comes back");
    assert_count(&second, 2);
    b.delete(&second.handle)
        .unwrap_or_else(|error| panic!("delete: {error}"));
}
