//! Deduplication: exactly-once-style sends. A [`DedupQueue`] wraps a [`Queue`] and remembers,
//! for a window (5 minutes by default, as SQS FIFO queues do), which dedup ids it has sent and
//! under which [`MessageId`]; sending an id again within the window sends nothing and returns
//! the original id.
//!
//! Built on the public [`Queue`] API. The memory is one table of atomics allocated by
//! [`DedupBuilder::build`]; a send allocates nothing and takes no lock.
//!
//! The table and its algorithm are `IdWindow`, which records any action under a `u64` id, not
//! only a send: the worker pool's exactly-once option
//! ([`ConsumerBuilder::exactly_once`](crate::ConsumerBuilder::exactly_once)) uses it to
//! remember the messages whose handler succeeded.
//!
//! # The table
//!
//! Open addressing over `buckets` entries (four per id of [`DedupBuilder::capacity`], rounded up
//! to a power of two). A bucket is a `meta` word, in an array of its own so that a scan reads
//! the words of a window from a few cache lines, and three more `AtomicU64`s beside it in a
//! second array (32 bytes, aligned, so read with one cache miss):
//!
//! * `meta`: `gen` (37 bits) | `fp` (24 bits) | `state` (3 bits);
//! * `key`: the dedup id (a full `u64`; the only thing compared to decide "same id");
//! * `id`: the [`MessageId`] sent for it (the value an `IdWindow` recording returned);
//! * `expiry`: when the entry stops counting, in nanoseconds on the wrapper's clock.
//!
//! A dedup id `k` is mixed (the SplitMix64 finaliser, a bijection) into `h`; its *home* is
//! bucket `h mod buckets` and its *window* the [`PROBE`] buckets from its home on (or the whole
//! table, if smaller); `fp` is the top 24 bits of `h`. An entry for `k` may sit anywhere in
//! `k`'s window. Every operation scans the whole window and nothing beyond it, so no probe is
//! unbounded; a window with no reusable bucket is [`DedupSendError::TableFull`].
//!
//! # States, and who may write what
//!
//! | state      | meaning                                                | written by |
//! |------------|--------------------------------------------------------|------------|
//! | `FREE`     | holds nothing                                          | the owner, leaving |
//! | `RESERVED` | claimed for an id with fingerprint `fp`, being checked | any sender, claiming a `FREE` or expired `DONE` bucket (CAS, `gen + 1`) |
//! | `COLLIDED` | a `RESERVED` claim that lost to a claim in a lower bucket for the same `fp` | that other claimant (CAS from `RESERVED`) |
//! | `SENDING`  | committed: its owner is in `Queue::send`               | the owner (CAS from `RESERVED`) |
//! | `DONE`     | `key` was sent as `id`; counts until `expiry`          | the owner (store from `SENDING`) |
//!
//! The thread whose CAS moved a bucket to `RESERVED` *owns* it until it stores `FREE` or
//! `DONE`; only the owner writes `key`, `id` and `expiry`, and only while it owns the bucket.
//! Besides the owner, the only writes to an owned bucket are a claimant's
//! `RESERVED -> COLLIDED` CAS. A `DONE` bucket has no owner; once its expiry has passed anyone
//! may claim it (CAS from that exact `DONE` word). `gen` grows with every claim, so a `meta`
//! word does not come back (not before 2^37 claims of one bucket) and a CAS from a word read
//! earlier fails if anything happened to the bucket meanwhile.
//!
//! Reading a `DONE` entry is a seqlock read: `meta` (SeqCst), then `key`, `id`, `expiry`
//! (Acquire), then `meta` again; the entry is taken only if `meta` did not change. The owner
//! writes those three (Release) after its claim and before its `DONE` store, so a reader that
//! saw a newer owner's write also sees `meta` changed.
//!
//! # Sending `body` under dedup id `k`
//!
//! 1. **Look.** Scan the window. A `DONE` entry for `k` that has not expired: a duplicate,
//!    return its id. Otherwise, a `RESERVED` or `SENDING` bucket with `k`'s fingerprint (an
//!    in-flight send of `k`, or rarely of an id sharing its 24-bit fingerprint): wait for it to
//!    change, then start again. Otherwise note the first reusable bucket (`FREE`, or `DONE`
//!    and expired). If there is none but some bucket is in flight for another id
//!    (`RESERVED`, `COLLIDED` or `SENDING`: it will become `FREE` or `DONE`), wait for it to
//!    change and start again: a send in flight is not a live entry, and it may leave (a
//!    duplicate, a lost race, a refused send). Only when every bucket holds a live entry, or
//!    the wait for one in flight runs out of patience, [`DedupSendError::TableFull`] (or
//!    `Closed`, if the queue is closed).
//! 2. **Claim** it: CAS `meta` to `RESERVED(gen + 1, fp)`, then store `key`. A failed CAS
//!    means another claim or release of that bucket won: start again at once (no wait; the
//!    other thread made progress, so this is lock-free, and a send never gives up with
//!    `Contended` because of another id).
//! 3. **Check** every other bucket of the window again, now that the claim is visible:
//!    * a live `DONE` entry for `k` (an id sent meanwhile): leave, return its id;
//!    * a `SENDING` bucket with `k`'s fingerprint, or a `RESERVED` one in a *lower bucket
//!      index* than ours: leave (store `FREE`), wait for it to change, start again;
//!    * a `RESERVED` one in a higher bucket index: kill it, CAS `RESERVED -> COLLIDED`
//!      (if the CAS fails, look at that bucket again; one that keeps changing, or a `DONE`
//!      entry that changes while read, makes us leave and start again: leaving is always
//!      safe).
//! 4. **Commit**: CAS our bucket `RESERVED -> SENDING`. If it fails, a lower claim killed
//!    ours (`COLLIDED`): store `FREE` and start again (step 1 then finds the killer and waits).
//! 5. **Send**: `Queue::send` (or `send_delayed`). On success read the clock again, store
//!    `id` and `expiry = (clock after the send) + window`, then `DONE`; on failure (`Full`,
//!    `Closed`) store `FREE`, so that a retry can send, and hand the body back.
//!
//! **Why two senders of one id cannot both send.** Every `meta` access is `SeqCst`, and a
//! `SeqCst` fence separates each claim from its check, so claims and checks fall in one total
//! order (the fence is what loom, which models `SeqCst` accesses as acquire/release, needs to
//! see it too). Say claims X (bucket `i`) and Y (bucket `j`) for id `k` both commit. Each
//! checked the other's bucket after making its own claim. If Y's check of `i` came after X's
//! claim, Y saw X's claim (`RESERVED`, or after X committed, `SENDING` or
//! `DONE`): Y left, or (when `i > j`) killed X, so X's commit failed, or found X committed when
//! its kill CAS failed and left. Either way a contradiction. Otherwise Y's check of `i` came
//! before X's claim, so Y's claim came before X's check of `j`, and the same argument with the
//! roles swapped gives the contradiction. Since everyone uses the same order (bucket index),
//! only a lower claim kills a higher one, and the lowest claim for `k` is never killed: it
//! commits, or finds a committed one and leaves, so someone always makes progress. A
//! fingerprint shared by two different ids only makes one of them wait or retry, never
//! suppresses a message: "duplicate" is decided by comparing the full `key` of a `DONE` entry.
//!
//! The loom models in `loom-tests/tests/dedup.rs` check this: two sends of one id racing a
//! clock advance that lets them claim different buckets, and a refused send releasing its
//! claim to a waiting duplicate. Removing the check, the kill, the lower-bucket rule, the
//! `SENDING` or `DONE` cases of the check, the fence, or the release after a refused send
//! each makes a model fail.
//!
//! **What a loser does while the winner is in flight.** It waits for the winner's bucket to
//! change: a few rounds of spinning (1, 2, 4 ... 64 spin hints), then yielding the thread.
//! The winner's in-flight window is one `Queue::send` (tens of nanoseconds; more when that
//! send runs the queue's timing wheel), so the wait is long only when the winner's thread is
//! descheduled. The whole send, every restart included,
//! gives up after [`DedupBuilder::contention_wait`] (10 ms by default) of wall-clock time with
//! [`DedupSendError::Contended`] and the body: nothing was sent by this call, and a retry
//! returns the winner's id if the winner's send went through. No thread waits while it owns a
//! `RESERVED` bucket (it leaves first), and the owner of a `SENDING` bucket waits for nobody,
//! so waits never form a cycle.
//!
//! # Time
//!
//! `now` is read once per attempt from the builder's [`ManualClock`] if one was given (the
//! queue's own clock is not exposed), else from [`Instant`], and used to judge which entries
//! are live. The expiry of a new entry is computed from a second reading taken *after*
//! `Queue::send` returned, so the window counts from the send, not from the start of the
//! attempt (which may be a long spin or a wheel run earlier). An entry counts while
//! `now < expiry`, so a resend exactly `window` after the original sends again. Nanoseconds
//! saturate at `u64::MAX`: an expiry that saturates is [`NEVER`] and counts forever, so that
//! at a saturated clock (time cannot pass any further) ids are still deduplicated. Expired
//! entries are not cleared by anyone; they are simply reusable, by the next send whose window
//! holds them.

use super::Clock;
use crate::core::sync::{fence, spin_loop, yield_now, AtomicU64, Ordering};
use crate::{InvalidSend, ManualClock, MessageId, Queue, SendError, MAX_TIMEOUT};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many buckets, from an id's home on, may hold its entry (the whole table if smaller).
const PROBE: usize = 32;

/// Buckets per id of [`DedupBuilder::capacity`] (then rounded up to a power of two): a load of
/// at most 1/4 keeps a full window rare (see [`DedupBuilder::capacity`]).
const BUCKETS_PER_ID: usize = 4;

/// The default window, as SQS FIFO queues.
const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The default bound on waiting for a racing send of the same id.
pub(crate) const DEFAULT_CONTENTION_WAIT: Duration = Duration::from_millis(10);

/// Spinning rounds (1, 2, 4 ... 64 spin hints) before a waiter starts yielding.
const SPIN_ROUNDS: u32 = 7;

/// An expiry that never comes: `now + window` saturated (see "Time" in the module docs).
const NEVER: u64 = u64::MAX;

/// How often the check of step 3 re-reads one bucket that keeps changing before leaving.
const RECHECKS: usize = 4;

// The `meta` word: gen | fp | state.
const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const FP_BITS: u32 = 24;
const FP_MASK: u64 = (1 << FP_BITS) - 1;
const GEN_SHIFT: u32 = STATE_BITS + FP_BITS;

const FREE: u64 = 0;
const RESERVED: u64 = 1;
const COLLIDED: u64 = 2;
const SENDING: u64 = 3;
const DONE: u64 = 4;

/// One bucket's `meta` word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Meta(u64);

impl Meta {
    fn state(self) -> u64 {
        self.0 & STATE_MASK
    }

    fn fp(self) -> u64 {
        (self.0 >> STATE_BITS) & FP_MASK
    }

    /// A claim of this bucket for fingerprint `fp`: the next generation, `RESERVED`.
    fn claimed(self, fp: u64) -> Self {
        let next = (self.0 >> GEN_SHIFT).wrapping_add(1) << GEN_SHIFT;
        Self(next | (fp & FP_MASK) << STATE_BITS | RESERVED)
    }

    /// The same generation and fingerprint in `state`.
    fn with_state(self, state: u64) -> Self {
        Self((self.0 & !STATE_MASK) | state)
    }

    /// The same generation, `FREE`.
    fn freed(self) -> Self {
        Self((self.0 >> GEN_SHIFT) << GEN_SHIFT | FREE)
    }
}

/// The SplitMix64 finaliser: a bijection of `u64` that spreads every input bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The dedup id [`DedupQueue::send_keyed`] uses for a byte string: its 64-bit FNV-1a hash.
///
/// Two different keys get the same id with a chance of about 2^-64 per pair, and then the
/// second is taken for a duplicate of the first. FNV is not keyed: if untrusted parties choose
/// the keys, one could craft a collision to suppress another's message; hash such keys with a
/// keyed hash of your own and use [`DedupQueue::send`].
///
/// ```
/// assert_eq!(visq::dedup_hash(b"order-42"), visq::dedup_hash("order-42".as_bytes()));
/// assert_ne!(visq::dedup_hash(b"order-42"), visq::dedup_hash(b"order-43"));
/// ```
pub fn dedup_hash(key: &[u8]) -> u64 {
    let mut hash = Fnv::default();
    hash.add(key);
    hash.0
}

/// The 64-bit FNV-1a hash of [`dedup_hash`], fed piece by piece; as a [`fmt::Write`] it hashes
/// what is formatted into it (a key's `Display`) without allocating.
pub(crate) struct Fnv(pub(crate) u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        self.0 = bytes.iter().fold(self.0, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        });
    }
}

impl fmt::Write for Fnv {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.add(text.as_bytes());
        Ok(())
    }
}

/// What a [`DedupQueue`] send did.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Sent {
    /// The body was sent as a new message with this id.
    New(MessageId),
    /// The dedup id was sent within the window as this message; nothing was sent now and the
    /// body was dropped.
    Duplicate(MessageId),
}

impl Sent {
    /// The message's id: the new one, or the original one for a duplicate.
    pub fn id(self) -> MessageId {
        match self {
            Self::New(id) | Self::Duplicate(id) => id,
        }
    }

    /// Whether nothing was sent because the dedup id was a duplicate.
    pub fn is_duplicate(self) -> bool {
        matches!(self, Self::Duplicate(_))
    }
}

/// Why a [`DedupQueue`] send sent nothing. The body always comes back:
/// [`DedupSendError::into_inner`].
#[derive(Clone, PartialEq, Eq)]
pub enum DedupSendError<T> {
    /// The queue holds `capacity` messages ([`SendError::Full`]). The dedup id was not
    /// recorded: a retry can send.
    Full(T),
    /// The queue was closed ([`SendError::Closed`]); also reported instead of `TableFull`
    /// when both apply. A live id is still a duplicate ([`Sent::Duplicate`]) after the close.
    Closed(T),
    /// The delay is longer than [`MAX_TIMEOUT`].
    DelayTooLong(T),
    /// Every bucket the dedup id may use holds a live entry for another id (or a send of
    /// another id that stayed in flight for longer than [`DedupBuilder::contention_wait`]):
    /// the table is too small for the ids sent within one window (see
    /// [`DedupBuilder::capacity`]). Nothing was sent; a retry succeeds once entries expire.
    TableFull(T),
    /// Another send of the same dedup id (or, rarely, of an id sharing its table
    /// neighbourhood and fingerprint) stayed in flight for longer than
    /// [`DedupBuilder::contention_wait`]. Nothing was sent by this call; a retry returns the
    /// other send's id if it went through, or sends.
    Contended(T),
    /// Options the queue cannot honour ([`SendError::Invalid`]).
    Invalid(T, InvalidSend),
}

impl<T> DedupSendError<T> {
    /// The body that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(body)
            | Self::Closed(body)
            | Self::DelayTooLong(body)
            | Self::TableFull(body)
            | Self::Contended(body)
            | Self::Invalid(body, _) => body,
        }
    }
}

impl<T> From<SendError<T>> for DedupSendError<T> {
    fn from(refused: SendError<T>) -> Self {
        match refused {
            SendError::Full(body) => Self::Full(body),
            SendError::Closed(body) => Self::Closed(body),
            SendError::DelayTooLong(body) => Self::DelayTooLong(body),
            SendError::Invalid(body, why) => Self::Invalid(body, why),
        }
    }
}

impl<T> fmt::Debug for DedupSendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => write!(f, "Full(..)"),
            Self::Closed(_) => write!(f, "Closed(..)"),
            Self::DelayTooLong(_) => write!(f, "DelayTooLong(..)"),
            Self::TableFull(_) => write!(f, "TableFull(..)"),
            Self::Contended(_) => write!(f, "Contended(..)"),
            Self::Invalid(_, why) => write!(f, "Invalid(.., {why:?})"),
        }
    }
}

impl<T> fmt::Display for DedupSendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => write!(f, "the queue is full"),
            Self::Closed(_) => write!(f, "the queue is closed"),
            Self::DelayTooLong(_) => write!(f, "the delay is longer than MAX_TIMEOUT"),
            Self::TableFull(_) => write!(f, "the deduplication table has no room for this id"),
            Self::Contended(_) => write!(
                f,
                "another send of this deduplication id stayed in flight too long"
            ),
            Self::Invalid(_, why) => write!(f, "{why}"),
        }
    }
}

impl<T> std::error::Error for DedupSendError<T> {}

/// Why a [`DedupQueue`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DedupBuildError {
    /// `capacity(0)`.
    ZeroCapacity,
    /// The table for this capacity is too large to address or could not be allocated.
    CapacityTooLarge(usize),
    /// `window(Duration::ZERO)`.
    ZeroWindow,
}

impl fmt::Display for DedupBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroCapacity => write!(f, "deduplication capacity must be at least 1"),
            Self::CapacityTooLarge(n) => {
                write!(f, "deduplication capacity {n} could not be allocated")
            }
            Self::ZeroWindow => write!(f, "deduplication window must be longer than zero"),
        }
    }
}

impl std::error::Error for DedupBuildError {}

/// What a [`DedupQueue`] has refused or suppressed so far. Every field is a total; sends that
/// went through are counted by the queue's own [`Queue::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DedupStats {
    /// Sends that found their dedup id live and sent nothing ([`Sent::Duplicate`]).
    pub duplicates: u64,
    /// Sends refused with [`DedupSendError::TableFull`].
    pub table_full: u64,
    /// Sends refused with [`DedupSendError::Contended`].
    pub contended: u64,
    /// Sends the queue refused (`Full`, `Closed` or `DelayTooLong`).
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Counters {
    duplicates: CachePadded<AtomicU64>,
    table_full: CachePadded<AtomicU64>,
    contended: CachePadded<AtomicU64>,
    refused: CachePadded<AtomicU64>,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Configures a [`DedupQueue`]; made by [`DedupQueue::builder`].
#[derive(Debug)]
pub struct DedupBuilder<T> {
    queue: Arc<Queue<T>>,
    capacity: usize,
    window: Duration,
    contention_wait: Duration,
    clock: Option<ManualClock>,
}

impl<T> DedupBuilder<T> {
    /// How many dedup ids the table is sized to remember at once, that is, how many distinct
    /// ids are sent within one window at most. Default: the queue's capacity.
    ///
    /// The table has `4 * capacity` buckets rounded up to a power of two, 40 bytes each,
    /// allocated by [`DedupBuilder::build`]; nothing grows later. An id's entry lives in one of
    /// the 32 buckets from its hashed home on; when all of those hold live entries for other
    /// ids, its send fails with [`DedupSendError::TableFull`]. With at most `capacity` live ids
    /// (a load of at most 1/4) that is very rare (uniform hashing puts it near 10^-9 per send);
    /// more ids than `capacity` make it more likely, never silent. With a capacity of 8 or
    /// less, every id may use every bucket, so the table holds exactly its bucket count: a
    /// send is refused with `TableFull` only when that many other ids are live, or are being
    /// sent and stay in flight past [`DedupBuilder::contention_wait`].
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How long a dedup id is remembered after the send that recorded it: a send of the same
    /// id earlier than `window` later is a duplicate; one at or after it sends again.
    /// Default: 5 minutes, as SQS FIFO queues.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The longest a send waits, in wall-clock time, for another send of the same dedup id to
    /// finish before giving up with [`DedupSendError::Contended`]. Default: 10 ms. The wait
    /// spins briefly, then yields the thread; it only lasts long when the other sender's thread
    /// is descheduled in the middle of its send. The same wait applies when a full table has a
    /// send of another id in flight (room may come when it finishes). Zero gives up at the
    /// first conflict.
    pub fn contention_wait(mut self, wait: Duration) -> Self {
        self.contention_wait = wait;
        self
    }

    /// Takes "now" from `clock` instead of the monotonic clock, for deterministic tests. Give
    /// it the clock the queue was built with, so that the window and the queue's deadlines
    /// move together.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Allocates the table.
    pub fn build(self) -> Result<DedupQueue<T>, DedupBuildError> {
        Ok(DedupQueue {
            ids: IdWindow::new(self.capacity, self.window, self.contention_wait, self.clock)?,
            counters: Counters::default(),
            queue: self.queue,
        })
    }
}

/// A bounded, lock-free memory of which `u64` ids were recorded within a window: the table
/// and algorithm of the module docs, with the action recorded (step 5) left to the caller.
/// [`DedupQueue`] records sends under dedup ids; the worker pool's exactly-once option
/// ([`ConsumerBuilder::exactly_once`](crate::ConsumerBuilder::exactly_once)) records the
/// message ids whose handler succeeded.
#[derive(Debug)]
pub(crate) struct IdWindow {
    table: Table,
    /// The window in nanoseconds (saturated).
    window: u64,
    window_duration: Duration,
    contention_wait: Duration,
    clock: Clock,
    capacity: usize,
}

/// What [`IdWindow::record`] did with an id.
pub(crate) enum Recorded<B, E> {
    /// The action ran and succeeded; its value is recorded for the window.
    New(u64),
    /// The id was live: the action did not run (the input is dropped); the recorded value.
    Duplicate(u64),
    /// The action ran and failed: nothing recorded.
    Failed(E),
    /// No room for the id (every bucket of its probe window live): the action did not run.
    TableFull(B),
    /// Another recording of the id stayed in flight past the contention wait: the action did
    /// not run.
    Contended(B),
}

impl IdWindow {
    /// Allocates a table for `capacity` ids remembered for `window` (see
    /// [`DedupBuilder::capacity`], [`DedupBuilder::window`],
    /// [`DedupBuilder::contention_wait`], [`DedupBuilder::clock`]).
    pub(crate) fn new(
        capacity: usize,
        window: Duration,
        contention_wait: Duration,
        clock: Option<ManualClock>,
    ) -> Result<Self, DedupBuildError> {
        if capacity == 0 {
            return Err(DedupBuildError::ZeroCapacity);
        }
        if window.is_zero() {
            return Err(DedupBuildError::ZeroWindow);
        }
        let too_large = DedupBuildError::CapacityTooLarge(capacity);
        let buckets = capacity
            .checked_mul(BUCKETS_PER_ID)
            .and_then(usize::checked_next_power_of_two)
            .ok_or_else(|| too_large.clone())?;
        fn array<E>(len: usize, new: impl Fn() -> E) -> Option<Box<[E]>> {
            let mut array = Vec::new();
            array.try_reserve_exact(len).ok()?;
            array.extend((0..len).map(|_| new()));
            Some(array.into_boxed_slice())
        }
        let meta = array(buckets, || AtomicU64::new(0)).ok_or_else(|| too_large.clone())?;
        let data = array(buckets, Data::default).ok_or(too_large)?;
        Ok(Self {
            table: Table {
                meta,
                data,
                mask: buckets - 1,
                probe: PROBE.min(buckets),
            },
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            window_duration: window,
            contention_wait,
            clock: Clock::new(clock),
            capacity,
        })
    }

    /// How long an id is remembered.
    pub(crate) fn window(&self) -> Duration {
        self.window_duration
    }

    /// The number of ids the table was sized for.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value recorded for `key` if its entry is live now. A recording of `key` racing
    /// this may or may not be seen.
    pub(crate) fn lookup(&self, key: u64) -> Option<u64> {
        let now = self.clock.nanos();
        let (fp, home) = self.place(key);
        (0..self.table.probe).find_map(|offset| {
            let bucket = self.table.bucket(home, offset);
            let meta = self.table.load(bucket);
            if meta.state() != DONE || meta.fp() != fp {
                return None;
            }
            self.table
                .read(bucket, meta)
                .filter(|entry| entry.key == key && entry.live(now))
                .map(|entry| entry.id)
        })
    }

    /// `key`'s fingerprint and home bucket.
    fn place(&self, key: u64) -> (u64, usize) {
        let hash = mix(key);
        (hash >> (64 - FP_BITS), hash as usize & self.table.mask)
    }

    /// The algorithm of the module docs, with `act` as step 5: runs `act(input)` unless `key`
    /// is live, at most once among racing recordings of `key`, and on success records the
    /// value it returns for the window (counted from after `act` returned).
    pub(crate) fn record<B, E>(
        &self,
        key: u64,
        input: B,
        act: impl FnOnce(B) -> Result<u64, E>,
    ) -> Recorded<B, E> {
        let table = &self.table;
        let (fp, home) = self.place(key);
        let mut patience = Patience::new(self.contention_wait);
        loop {
            let now = self.clock.nanos();
            // 1. Look.
            let (own, seen) = match table.look(key, fp, home, now) {
                Look::Duplicate(value) => return Recorded::Duplicate(value),
                Look::Busy(bucket, meta) => {
                    if !patience.wait(table, bucket, meta) {
                        break;
                    }
                    continue;
                }
                Look::Full(in_flight) => {
                    // Room may come: wait for the recording in flight to finish.
                    if in_flight.is_some_and(|(bucket, meta)| patience.wait(table, bucket, meta)) {
                        continue;
                    }
                    return Recorded::TableFull(input);
                }
                Look::Reusable(bucket, meta) => (bucket, meta),
            };
            // 2. Claim. Losing the CAS means someone else's claim or release went through:
            // look again at once.
            let mine = seen.claimed(fp);
            if table.cas(own, seen, mine).is_err() {
                continue;
            }
            table.data[own].key.store(key, Ordering::Release);
            // Orders the claim before the check's loads for every thread alike (the argument
            // in the module docs needs a total order of claims and checks; on x86 the CAS
            // already is a full barrier).
            fence(Ordering::SeqCst);
            // 3. Check.
            match table.check(key, fp, home, own, now) {
                Check::Clear => {}
                Check::Duplicate(value) => {
                    table.store(own, mine.freed());
                    return Recorded::Duplicate(value);
                }
                Check::Busy(bucket, meta) => {
                    table.store(own, mine.freed());
                    if !patience.wait(table, bucket, meta) {
                        break;
                    }
                    continue;
                }
            }
            // 4. Commit.
            let sending = mine.with_state(SENDING);
            if table.cas(own, mine, sending).is_err() {
                // COLLIDED by a claim in a lower bucket: only we write it now.
                table.store(own, mine.freed());
                if !patience.pause() {
                    break;
                }
                continue;
            }
            // 5. Act. If `act` panics, the guard frees the bucket so the id is not stuck
            // `SENDING`.
            let leave = FreeOnDrop {
                table,
                bucket: own,
                meta: sending,
            };
            return match act(input) {
                Ok(value) => {
                    std::mem::forget(leave);
                    let data = &table.data[own];
                    // The window counts from the action (see "Time" in the module docs).
                    let done = self.clock.nanos().max(now);
                    data.id.store(value, Ordering::Release);
                    data.expiry
                        .store(done.saturating_add(self.window), Ordering::Release);
                    table.store(own, sending.with_state(DONE));
                    Recorded::New(value)
                }
                Err(failed) => {
                    drop(leave);
                    Recorded::Failed(failed)
                }
            };
        }
        Recorded::Contended(input)
    }
}

/// The buckets: the `meta` words, scanned, and beside them what an entry holds, read only
/// for a bucket whose `meta` asks for it (see the module docs).
#[derive(Debug)]
struct Table {
    meta: Box<[AtomicU64]>,
    data: Box<[Data]>,
    mask: usize,
    probe: usize,
}

/// What a bucket holds besides its `meta` word: one half cache line, read with one miss.
#[derive(Debug, Default)]
#[repr(align(32))]
struct Data {
    key: AtomicU64,
    id: AtomicU64,
    expiry: AtomicU64,
}

/// A `DONE` entry as read consistently.
struct Entry {
    key: u64,
    id: u64,
    expiry: u64,
}

impl Entry {
    /// Whether the entry still counts at `now`.
    fn live(&self, now: u64) -> bool {
        now < self.expiry || self.expiry == NEVER
    }
}

/// What step 1 (look) found.
enum Look {
    /// A live entry for the id, with its recorded value.
    Duplicate(u64),
    /// Wait for bucket `.0` to move off `.1`, then start again.
    Busy(usize, Meta),
    /// Claim bucket `.0` from `.1`.
    Reusable(usize, Meta),
    /// No reusable bucket. `Some`: bucket `.0` is in flight for another id (it reads `.1`),
    /// so room may come; `None`: every bucket holds a live entry.
    Full(Option<(usize, Meta)>),
}

/// What step 3 (check) found.
enum Check {
    Clear,
    /// A live entry for the id, with its recorded value.
    Duplicate(u64),
    Busy(usize, Meta),
}

impl Table {
    fn load(&self, bucket: usize) -> Meta {
        Meta(self.meta[bucket].load(Ordering::SeqCst))
    }

    fn cas(&self, bucket: usize, from: Meta, to: Meta) -> Result<(), Meta> {
        self.meta[bucket]
            .compare_exchange(from.0, to.0, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
            .map_err(Meta)
    }

    fn store(&self, bucket: usize, meta: Meta) {
        self.meta[bucket].store(meta.0, Ordering::SeqCst);
    }

    /// The bucket `offset` places after `home`, wrapping.
    fn bucket(&self, home: usize, offset: usize) -> usize {
        (home + offset) & self.mask
    }

    /// The entry of a bucket whose `meta` read `seen` (a `DONE` word), or `None` if the bucket
    /// changed meanwhile: a seqlock read, see the module docs.
    fn read(&self, bucket: usize, seen: Meta) -> Option<Entry> {
        let entry = Entry {
            key: self.data[bucket].key.load(Ordering::Acquire),
            id: self.data[bucket].id.load(Ordering::Acquire),
            expiry: self.data[bucket].expiry.load(Ordering::Acquire),
        };
        (self.load(bucket) == seen).then_some(entry)
    }

    /// Step 1. `Busy` is returned only after the whole window was scanned without finding a
    /// live entry for `key`.
    fn look(&self, key: u64, fp: u64, home: usize, now: u64) -> Look {
        let mut reusable = None;
        let mut busy = None;
        let mut in_flight = None;
        for offset in 0..self.probe {
            let bucket = self.bucket(home, offset);
            let meta = self.load(bucket);
            match meta.state() {
                FREE => {
                    reusable.get_or_insert((bucket, meta));
                }
                RESERVED | SENDING if meta.fp() == fp => {
                    busy.get_or_insert((bucket, meta));
                }
                DONE if meta.fp() == fp || reusable.is_none() => match self.read(bucket, meta) {
                    // Changed under us: wait for nothing, look again.
                    None => {
                        busy.get_or_insert((bucket, meta));
                    }
                    Some(entry) if entry.live(now) => {
                        if entry.key == key {
                            return Look::Duplicate(entry.id);
                        }
                    }
                    Some(_) => {
                        reusable.get_or_insert((bucket, meta));
                    }
                },
                // DONE when we have a reusable bucket already and the fingerprint differs.
                DONE => {}
                // COLLIDED (its owner frees it), other ids' claims and sends.
                _ => {
                    in_flight.get_or_insert((bucket, meta));
                }
            }
        }
        match (busy, reusable) {
            (Some((bucket, meta)), _) => Look::Busy(bucket, meta),
            (None, Some((bucket, meta))) => Look::Reusable(bucket, meta),
            (None, None) => Look::Full(in_flight),
        }
    }

    /// Step 3, for our claim `mine` of bucket `own`.
    fn check(&self, key: u64, fp: u64, home: usize, own: usize, now: u64) -> Check {
        for offset in 0..self.probe {
            let bucket = self.bucket(home, offset);
            if bucket == own {
                continue;
            }
            let mut settled = false;
            let mut meta = self.load(bucket);
            for _ in 0..RECHECKS {
                // A different fingerprint is a different id, in any state.
                if meta.fp() != fp {
                    settled = true;
                    break;
                }
                match meta.state() {
                    FREE | COLLIDED => {
                        settled = true;
                        break;
                    }
                    DONE => match self.read(bucket, meta) {
                        Some(entry) if entry.key == key && entry.live(now) => {
                            return Check::Duplicate(entry.id);
                        }
                        Some(_) => {
                            settled = true;
                            break;
                        }
                        None => meta = self.load(bucket),
                    },
                    SENDING => return Check::Busy(bucket, meta),
                    RESERVED if bucket < own => return Check::Busy(bucket, meta),
                    RESERVED => match self.cas(bucket, meta, meta.with_state(COLLIDED)) {
                        Ok(()) => {
                            settled = true;
                            break;
                        }
                        Err(now_seen) => meta = now_seen,
                    },
                    _ => unreachable!("a meta word holds one of five states"),
                }
            }
            if !settled {
                // Kept changing: leaving is always safe.
                return Check::Busy(bucket, meta);
            }
        }
        Check::Clear
    }
}

/// Stores `FREE` into an owned bucket when dropped: a send that fails (or unwinds) leaves.
struct FreeOnDrop<'a> {
    table: &'a Table,
    bucket: usize,
    meta: Meta,
}

impl Drop for FreeOnDrop<'_> {
    fn drop(&mut self) {
        self.table.store(self.bucket, self.meta.freed());
    }
}

/// A bounded wait: spin, then yield, until `limit` of wall-clock time has passed.
struct Patience {
    limit: Duration,
    round: u32,
    since: Option<Instant>,
}

impl Patience {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            round: 0,
            since: None,
        }
    }

    /// Waits a little; `false` once the limit has passed.
    fn pause(&mut self) -> bool {
        if self.limit.is_zero() {
            return false;
        }
        // Under loom every wait is a yield, so the model checker runs someone else.
        if cfg!(not(loom)) && self.round < SPIN_ROUNDS {
            for _ in 0..1u32 << self.round {
                spin_loop();
            }
            self.round += 1;
            return true;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.limit {
            return false;
        }
        yield_now();
        true
    }

    /// Waits until bucket `bucket` no longer reads `seen`; `false` if the limit passed first.
    fn wait(&mut self, table: &Table, bucket: usize, seen: Meta) -> bool {
        loop {
            if table.load(bucket) != seen {
                return true;
            }
            if !self.pause() {
                return false;
            }
        }
    }
}

/// A [`Queue`] whose sends carry a dedup id: a send whose id was sent within the window sends
/// nothing and returns the original message's id ([`Sent::Duplicate`]), as SQS FIFO queues do
/// with `MessageDeduplicationId`.
///
/// * The guarantee: while an id's entry is live (`window` after the send that recorded it),
///   no second message is sent for it, however many threads send it at once; exactly one of
///   racing sends goes through and the others get its id (or, past
///   [`DedupBuilder::contention_wait`], [`DedupSendError::Contended`] with the body).
/// * A send the queue refuses (`Full`, `Closed`) records nothing: a retry can send.
/// * Memory is bounded and allocated by [`DedupBuilder::build`]; sends allocate nothing and
///   take no lock. When the table has no room for an id, the send fails with
///   [`DedupSendError::TableFull`] and the body; nothing is lost silently and live entries are
///   never evicted.
/// * Dedup ids are `u64`s ([`DedupQueue::send`]); [`DedupQueue::send_keyed`] takes byte
///   strings and hashes them with [`dedup_hash`]. Both share one id space.
/// * Only sends through this `DedupQueue` are deduplicated; receive, delete and the rest go to
///   the queue itself ([`DedupQueue::queue`]). Deleting a message does not forget its id.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use visq::{DedupQueue, ManualClock, Queue, Sent};
///
/// let clock = ManualClock::new();
/// let queue: Arc<Queue<&str>> = Arc::new(Queue::builder().clock(clock.clone()).build()?);
/// let orders = DedupQueue::builder(queue.clone())
///     .window(Duration::from_secs(300))
///     .clock(clock.clone())
///     .build()?;
///
/// let first = orders.send(42, "charge order 42").unwrap();
/// assert!(matches!(first, Sent::New(_)));
/// // A producer retrying after a timeout: nothing is sent, the original id comes back.
/// let again = orders.send(42, "charge order 42").unwrap();
/// assert_eq!(again, Sent::Duplicate(first.id()));
/// assert_eq!(queue.stats().ready, 1);
///
/// // String keys work too.
/// let a = orders.send_keyed("invoice-7", "mail invoice 7").unwrap();
/// assert!(orders.send_keyed("invoice-7", "mail invoice 7").unwrap().is_duplicate());
///
/// // After the window the id is forgotten.
/// clock.advance(Duration::from_secs(300));
/// assert!(matches!(orders.send(42, "charge order 42").unwrap(), Sent::New(_)));
/// assert_eq!(orders.stats().duplicates, 2);
/// # let _ = a;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DedupQueue<T> {
    queue: Arc<Queue<T>>,
    ids: IdWindow,
    counters: Counters,
}

impl<T> DedupQueue<T> {
    /// A builder for a deduplicating front of `queue`.
    pub fn builder(queue: Arc<Queue<T>>) -> DedupBuilder<T> {
        DedupBuilder {
            capacity: queue.capacity(),
            queue,
            window: DEFAULT_WINDOW,
            contention_wait: DEFAULT_CONTENTION_WAIT,
            clock: None,
        }
    }

    /// A deduplicating front of `queue` with the defaults: a 5 minute window and room for as
    /// many ids as the queue holds messages.
    pub fn new(queue: Arc<Queue<T>>) -> Result<Self, DedupBuildError> {
        Self::builder(queue).build()
    }

    /// Sends `body` unless `dedup_id` was sent within the window, visible at once.
    ///
    /// `Ok(Sent::New(id))` when sent; `Ok(Sent::Duplicate(id))` with the original message's id
    /// (dropping `body`) when `dedup_id` is live. Errors hand the body back and record nothing.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use visq::{DedupQueue, Queue};
    /// let dedup = DedupQueue::new(Arc::new(Queue::builder().build()?))?;
    /// let id = dedup.send(7, "job").unwrap().id();
    /// assert_eq!(dedup.send(7, "same job").unwrap().id(), id);
    /// assert_eq!(dedup.queue().stats().ready, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, dedup_id: u64, body: T) -> Result<Sent, DedupSendError<T>> {
        self.send_with(dedup_id, body, |queue, body| queue.send(body))
    }

    /// [`DedupQueue::send`] with the message invisible until `delay` has passed on the
    /// queue's clock ([`Queue::send_delayed`]). A delay over
    /// [`MAX_TIMEOUT`] fails with [`DedupSendError::DelayTooLong`] before
    /// the id is looked up.
    pub fn send_delayed(
        &self,
        dedup_id: u64,
        body: T,
        delay: Duration,
    ) -> Result<Sent, DedupSendError<T>> {
        if delay > MAX_TIMEOUT {
            bump(&self.counters.refused);
            return Err(DedupSendError::DelayTooLong(body));
        }
        self.send_with(dedup_id, body, |queue, body| {
            queue.send_delayed(body, delay)
        })
    }

    /// [`DedupQueue::send`] with a byte-string key (a `&str`, `String`, `&[u8]` ...), hashed
    /// to a dedup id with [`dedup_hash`].
    pub fn send_keyed(
        &self,
        dedup_key: impl AsRef<[u8]>,
        body: T,
    ) -> Result<Sent, DedupSendError<T>> {
        self.send(dedup_hash(dedup_key.as_ref()), body)
    }

    /// The id of the message sent for `dedup_id` if its entry is live now; sends nothing. A
    /// send of `dedup_id` racing this may or may not be seen.
    pub fn lookup(&self, dedup_id: u64) -> Option<MessageId> {
        self.ids.lookup(dedup_id).map(MessageId)
    }

    /// The queue this sends to: receive, delete and the rest go to it directly.
    pub fn queue(&self) -> &Arc<Queue<T>> {
        &self.queue
    }

    /// How long a dedup id is remembered.
    pub fn window(&self) -> Duration {
        self.ids.window()
    }

    /// The number of ids the table was sized for ([`DedupBuilder::capacity`]).
    pub fn capacity(&self) -> usize {
        self.ids.capacity()
    }

    /// Counts of duplicates suppressed and sends refused.
    pub fn stats(&self) -> DedupStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DedupStats {
            duplicates: read(&self.counters.duplicates),
            table_full: read(&self.counters.table_full),
            contended: read(&self.counters.contended),
            refused: read(&self.counters.refused),
        }
    }

    /// [`IdWindow::record`] with `send` as the action, counted.
    fn send_with(
        &self,
        key: u64,
        body: T,
        send: impl FnOnce(&Queue<T>, T) -> Result<MessageId, SendError<T>>,
    ) -> Result<Sent, DedupSendError<T>> {
        let recorded = self
            .ids
            .record(key, body, |body| send(&self.queue, body).map(|id| id.0));
        match recorded {
            Recorded::New(id) => Ok(Sent::New(MessageId(id))),
            Recorded::Duplicate(id) => {
                bump(&self.counters.duplicates);
                Ok(Sent::Duplicate(MessageId(id)))
            }
            Recorded::Failed(refused) => {
                bump(&self.counters.refused);
                Err(refused.into())
            }
            // A closed queue would refuse anyway: say so, it is the more useful answer.
            Recorded::TableFull(body) if self.queue.is_closed() => {
                bump(&self.counters.refused);
                Err(DedupSendError::Closed(body))
            }
            Recorded::TableFull(body) => {
                bump(&self.counters.table_full);
                Err(DedupSendError::TableFull(body))
            }
            Recorded::Contended(body) => {
                bump(&self.counters.contended);
                Err(DedupSendError::Contended(body))
            }
        }
    }
}

impl<T> fmt::Debug for DedupQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupQueue")
            .field("queue", &self.queue)
            .field("capacity", &self.ids.capacity)
            .field("buckets", &self.ids.table.meta.len())
            .field("window", &self.ids.window_duration)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn dedup(capacity: usize, wait: Duration) -> (ManualClock, DedupQueue<u32>) {
        let clock = ManualClock::new();
        let queue = Arc::new(
            Queue::builder()
                .capacity(64)
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        let dedup = DedupQueue::builder(queue)
            .capacity(capacity)
            .contention_wait(wait)
            .clock(clock.clone())
            .build()
            .unwrap();
        (clock, dedup)
    }

    /// The inverse of `mix`.
    fn unmix(mut x: u64) -> u64 {
        fn unshift(y: u64, by: u32) -> u64 {
            let mut x = y;
            for _ in 0..64 / by {
                x = y ^ (x >> by);
            }
            x
        }
        fn inverse(a: u64) -> u64 {
            // Newton's iteration doubles the correct low bits each step.
            let mut x = a;
            for _ in 0..6 {
                x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
            }
            x
        }
        x = unshift(x, 31);
        x = x.wrapping_mul(inverse(0x94d0_49bb_1331_11eb));
        x = unshift(x, 27);
        x = x.wrapping_mul(inverse(0xbf58_476d_1ce4_e5b9));
        unshift(x, 30)
    }

    #[test]
    fn unmix_inverts_mix() {
        for k in [0, 1, 42, u64::MAX, 0xdead_beef_1234_5678] {
            assert_eq!(unmix(mix(k)), k);
        }
    }

    /// The bucket holding `key`'s entry, by scanning every bucket.
    fn bucket_of(dedup: &DedupQueue<u32>, key: u64) -> usize {
        let table = &dedup.ids.table;
        (0..table.meta.len())
            .find(|&b| {
                table.load(b).state() != FREE && table.data[b].key.load(Ordering::SeqCst) == key
            })
            .unwrap()
    }

    #[test]
    fn meta_words() {
        let free = Meta(0);
        let claim = free.claimed(0xab_cdef);
        assert_eq!(
            (claim.state(), claim.fp(), claim.0 >> GEN_SHIFT),
            (RESERVED, 0xab_cdef, 1)
        );
        let done = claim.with_state(SENDING).with_state(DONE);
        assert_eq!((done.state(), done.fp()), (DONE, 0xab_cdef));
        let again = done.claimed(5);
        assert_eq!(
            (again.state(), again.fp(), again.0 >> GEN_SHIFT),
            (RESERVED, 5, 2)
        );
        assert_eq!(again.freed(), Meta(2 << GEN_SHIFT));
        // The generation wraps without touching the other fields.
        let last = Meta(!STATE_MASK);
        assert_eq!(last.claimed(1), Meta(1 << STATE_BITS | RESERVED));
    }

    #[test]
    fn table_sizes() {
        let (_, d) = dedup(1, Duration::ZERO);
        assert_eq!((d.ids.table.meta.len(), d.ids.table.probe), (4, 4));
        let (_, d) = dedup(100, Duration::ZERO);
        assert_eq!((d.ids.table.meta.len(), d.ids.table.probe), (512, PROBE));
    }

    /// A send that is stuck in flight (its bucket held `SENDING`): a second send of the same id
    /// waits, gives up with `Contended`, sends nothing, and goes through once the first leaves.
    #[test]
    fn a_stuck_send_makes_the_next_one_contended() {
        let (_, d) = dedup(4, Duration::from_millis(5));
        let first = d.send(9, 1).unwrap().id();
        let bucket = bucket_of(&d, 9);
        let done = d.ids.table.load(bucket);
        // Pretend the entry is being sent again right now.
        let sending = done.claimed(done.fp()).with_state(SENDING);
        d.ids.table.store(bucket, sending);
        assert_eq!(d.send(9, 2), Err(DedupSendError::Contended(2)));
        assert_eq!(d.stats().contended, 1);
        // The stuck sender fails and frees its bucket: the id can be sent again.
        d.ids.table.store(bucket, sending.freed());
        let second = d.send(9, 3).unwrap();
        assert!(matches!(second, Sent::New(id) if id != first));
        assert_eq!(d.queue().stats().ready, 2);
    }

    /// A claim in a higher bucket is killed by one in a lower bucket; a claim that sees a lower
    /// claim leaves and waits.
    #[test]
    fn the_lower_claim_wins() {
        let (_, d) = dedup(1, Duration::ZERO);
        let key = 77;
        let (fp, home) = d.ids.place(key);
        let low = d.ids.table.bucket(home, 0);
        let high = d.ids.table.bucket(home, 1);
        let (low, high) = (low.min(high), low.max(high));
        let claim_low = d.ids.table.load(low).claimed(fp);
        let claim_high = d.ids.table.load(high).claimed(fp);
        d.ids.table.store(low, claim_low);
        d.ids.table.store(high, claim_high);
        // The higher claim sees the lower one and leaves.
        assert!(matches!(
            d.ids.table.check(key, fp, home, high, 0),
            Check::Busy(b, m) if b == low && m == claim_low
        ));
        // The lower claim kills the higher one and may commit.
        assert!(matches!(
            d.ids.table.check(key, fp, home, low, 0),
            Check::Clear
        ));
        assert_eq!(d.ids.table.load(high), claim_high.with_state(COLLIDED));
        assert!(d
            .ids
            .table
            .cas(high, claim_high, claim_high.with_state(SENDING))
            .is_err());
    }

    /// Issue 9, item 16: a bucket in flight for another id is not a live entry. A table whose
    /// other buckets are all live waited for nothing and answered `TableFull` at once; now it
    /// waits (up to `contention_wait`) for the send in flight to leave, and takes its bucket.
    #[test]
    fn a_send_in_flight_for_another_id_is_waited_for_not_table_full() {
        let (_, d) = dedup(1, Duration::from_secs(10));
        assert_eq!(d.ids.table.meta.len(), 4);
        for key in 1..=3 {
            d.send(key, key as u32).unwrap();
        }
        let free = (0..4)
            .find(|&b| d.ids.table.load(b).state() == FREE)
            .unwrap();
        // Another id's send is in flight in the last free bucket (a claim that will leave,
        // as a duplicate or a refused send does).
        let (other_fp, _) = d.ids.place(99);
        let claim = d.ids.table.load(free).claimed(other_fp).with_state(SENDING);
        d.ids.table.store(free, claim);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // Wall-clock time is the thing under test: the waiter must still be waiting.
                std::thread::sleep(Duration::from_millis(20));
                d.ids.table.store(free, claim.freed());
            });
            assert!(matches!(d.send(4, 4), Ok(Sent::New(_))));
        });
        assert_eq!(d.stats().table_full, 0);
        // With every bucket live, it is full at once; one that stays in flight past the wait
        // makes it full too.
        assert_eq!(d.send(5, 5), Err(DedupSendError::TableFull(5)));
        let (_, d) = dedup(1, Duration::from_millis(1));
        for key in 1..=3 {
            d.send(key, key as u32).unwrap();
        }
        let free = (0..4)
            .find(|&b| d.ids.table.load(b).state() == FREE)
            .unwrap();
        d.ids.table.store(
            free,
            d.ids.table.load(free).claimed(other_fp).with_state(SENDING),
        );
        assert_eq!(d.send(4, 4), Err(DedupSendError::TableFull(4)));
        assert_eq!(
            d.stats(),
            DedupStats {
                table_full: 1,
                ..DedupStats::default()
            }
        );
    }

    #[test]
    fn fingerprint_twins_do_not_suppress_each_other() {
        // Two ids that share home and fingerprint but differ: both are sent.
        let (_, d) = dedup(1, Duration::from_millis(5));
        let twin = unmix(mix(1) ^ (1 << 20));
        assert_eq!(d.ids.place(twin), d.ids.place(1));
        assert_ne!(twin, 1);
        let a = d.send(1, 10).unwrap();
        let b = d.send(twin, 20).unwrap();
        assert!(matches!((a, b), (Sent::New(x), Sent::New(y)) if x != y));
        assert_eq!(d.lookup(1), Some(a.id()));
        assert_eq!(d.lookup(twin), Some(b.id()));
        assert!(d.send(twin, 21).unwrap().is_duplicate());
    }
}
