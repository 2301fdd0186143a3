//! The lock-free core: the [`Queue`](crate::Queue) and the structures it is made of.
//!
//! Everything on the hot path lives here, and nothing here knows about the patterns or the
//! backends above it. The modules depend on each other in one direction only, listed from the
//! bottom up (a module may use those above it in this list, never those below):
//!
//! | module | what it is |
//! |---|---|
//! | `sync` | the one door to atomics, cells and locks (loom's under `--cfg loom`) |
//! | `clock`, `error` | queue time (the monotonic clock or a [`ManualClock`](crate::ManualClock), in ticks); the error types and fallible allocation |
//! | `slot` | one slab slot: its lifecycle word and the body it owns |
//! | `message` | ids, receipts (slot and lease epoch), deliveries |
//! | `send_options` | how one message is sent: delay, priority, message group, time-to-live |
//! | `free` | the free slots: a LIFO stack (tagged head) linked through the slots, so a send reuses the slot freed last |
//! | `groups` | FIFO message groups: lanes of ordered slot indices (intrusive MPSC lists), each letting one message, its head, into the ready ring at a time |
//! | `ring` | the bounded MPMC ring of slot indices (ready messages, one per priority level) |
//! | `ready` | the ready messages, by priority level: a ring per level (the highest tried first) and each slot's level |
//! | `wheel` | the hierarchical timing wheel of deadlines (leases, delays, retries) |
//! | `waiters` | parking and waking blocked receivers and senders: threads, and futures (an intrusive list of waker nodes) |
//! | `deaths`, `stats`, `metrics` | records and counters kept beside the slots: why a message died, event counts, latency histograms |
//! | `queue` | `Queue`: send, receive, settle, expiry and the races between them |
//! | `ttl` | (the queue's own extension, an `impl Queue` that `queue` calls into) message time-to-live: expiry ticks, the receivers' claim on a popped slot against the wheel's kill, the hand-off that frees a killed slot whose index is still in the ready ring |
//! | `async_front` | the async front: [`Queue::receive_async`](crate::Queue::receive_async), `send_async`, the [`Timer`](crate::Timer) a waiting future sleeps with, the [`Deliveries`](crate::Queue::delivery_stream) stream |
//! | `builder` | [`Builder`](crate::Builder): settings, validated, then `Queue` allocated |
//! | `dead_letters` | looking at and redriving dead letters, on top of the queue's rings |
//!
//! A change to how messages move between states belongs in `queue` (and `slot` for the word);
//! a change to when deadlines fire in `wheel`; a new setting in `builder`.

pub(crate) mod sync;

pub(crate) mod clock;
pub(crate) mod error;

pub(crate) mod slot;

pub(crate) mod message;
pub(crate) mod send_options;

pub(crate) mod free;
pub(crate) mod groups;

pub(crate) mod ready;
pub(crate) mod ring;
pub(crate) mod waiters;
pub(crate) mod wheel;

pub(crate) mod deaths;
pub(crate) mod metrics;
pub(crate) mod stats;

pub(crate) mod queue;
pub(crate) mod ttl;

pub(crate) mod async_front;

pub(crate) mod builder;
pub(crate) mod dead_letters;
