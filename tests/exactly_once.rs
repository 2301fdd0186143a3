//! Exactly-once processing: `ConsumerBuilder::exactly_once` remembers the messages whose
//! handler succeeded and settles a redelivery of one without running the handler again. The
//! case driven here is the one the option exists for: the handler succeeds, but its lease
//! expires before the delete (the handler itself advances the `ManualClock` past the lease,
//! with the heartbeat off), so the delete loses and the queue delivers the message again.
//! Queue time is a `ManualClock`; the only wall-clock waits are for the worker threads to catch
//! up (bounded, see `wait_until`).

mod common;

use common::wait_until;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use visq::{Backend, Backoff, Consumer, ConsumerStats, ManualClock, Queue};

const TICK: Duration = Duration::from_millis(1);
const VISIBILITY: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(60);

fn queue(clock: &ManualClock) -> Arc<Queue<u32>> {
    Arc::new(
        Queue::builder()
            .capacity(64)
            .visibility_timeout(VISIBILITY)
            .tick(TICK)
            .clock(clock.clone())
            .build()
            .unwrap(),
    )
}

/// A backoff without jitter: 10 s, 20 s, ...
fn backoff() -> Backoff {
    Backoff {
        base: Duration::from_secs(10),
        factor: 2.0,
        cap: Duration::from_secs(3600),
        jitter: 0.0,
    }
}

/// A handler that counts its runs per message (bodies 0 to 3) and, on a message's first run,
/// advances the clock by that message's `first_run_takes`: a handler slow enough for its
/// lease to expire before the pool's delete.
struct Handler {
    clock: ManualClock,
    runs: [AtomicU32; 4],
    first_run_takes: [Duration; 4],
    /// Messages whose first run fails (returns `Err`).
    first_run_fails: [bool; 4],
}

impl Handler {
    fn new(clock: &ManualClock) -> Self {
        Self {
            clock: clock.clone(),
            runs: Default::default(),
            first_run_takes: [Duration::ZERO; 4],
            first_run_fails: [false; 4],
        }
    }

    fn handle(&self, body: &u32) -> Result<(), &'static str> {
        let body = *body as usize;
        let first = self.runs[body].fetch_add(1, Ordering::SeqCst) == 0;
        if first {
            self.clock.advance(self.first_run_takes[body]);
            if self.first_run_fails[body] {
                return Err("first run fails");
            }
        }
        Ok(())
    }

    fn runs(&self, body: usize) -> u32 {
        self.runs[body].load(Ordering::SeqCst)
    }
}

/// The scenario on whichever pool `start` starts: message 1's handler succeeds but takes
/// longer than the lease, so its delete loses to expiry; the redelivery is skipped and
/// deleted, counted, and the handler ran once.
fn delete_lost_to_expiry_is_skipped_on_redelivery(
    q: &Arc<Queue<u32>>,
    clock: &ManualClock,
    start: impl FnOnce(Arc<Handler>) -> Box<dyn Fn() -> ConsumerStats>,
) {
    let mut handler = Handler::new(clock);
    handler.first_run_takes[1] = VISIBILITY + TICK;
    let handler = Arc::new(handler);
    q.send(1).unwrap();
    let stats = start(handler.clone());
    wait_until("the redelivery is skipped", || {
        stats().duplicates_skipped == 1
    });
    let pool = stats();
    assert_eq!(handler.runs(1), 1, "the handler ran once");
    assert_eq!((pool.processed, pool.lease_lost), (1, 1), "{pool:?}");
    let queue = q.stats();
    assert_eq!(
        queue.received, 2,
        "delivered twice: the redelivery was real"
    );
    assert_eq!(queue.expired, 1);
    wait_until("the duplicate is deleted", || q.stats().deleted == 1);
    let queue = q.stats();
    assert_eq!((queue.ready, queue.in_flight, queue.delayed), (0, 0, 0));
}

#[test]
fn on_a_queue_a_redelivery_after_a_lost_delete_is_skipped_and_deleted() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let pool = Consumer::builder(q.clone())
        .heartbeat(0.0)
        .poll_wait(Duration::from_millis(5))
        .clock(clock.clone())
        .exactly_once(16, WINDOW);
    delete_lost_to_expiry_is_skipped_on_redelivery(&q, &clock, |handler| {
        let consumer = pool.start(move |body: &u32| handler.handle(body)).unwrap();
        Box::new(move || consumer.stats())
    });
}

#[test]
fn on_a_backend_a_redelivery_after_a_lost_delete_is_skipped_and_deleted() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let backend: Arc<dyn Backend<Body = u32>> = q.clone();
    let pool = Consumer::backend_builder(backend)
        .visibility_timeout(VISIBILITY)
        .heartbeat(0.0)
        .poll_wait(Duration::from_millis(5))
        .clock(clock.clone())
        .exactly_once(16, WINDOW);
    delete_lost_to_expiry_is_skipped_on_redelivery(&q, &clock, |handler| {
        let consumer = pool.start(move |body: &u32| handler.handle(body)).unwrap();
        Box::new(move || consumer.stats())
    });
}

#[test]
fn without_the_option_the_redelivery_runs_the_handler_again() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let mut handler = Handler::new(&clock);
    handler.first_run_takes[1] = VISIBILITY + TICK;
    let handler = Arc::new(handler);
    q.send(1).unwrap();
    let consumer = {
        let handler = handler.clone();
        Consumer::builder(q.clone())
            .heartbeat(0.0)
            .poll_wait(Duration::from_millis(5))
            .clock(clock.clone())
            .start(move |body: &u32| handler.handle(body))
            .unwrap()
    };
    wait_until("processed twice", || consumer.stats().processed == 2);
    assert_eq!(handler.runs(1), 2);
    assert_eq!(consumer.stats().duplicates_skipped, 0);
}

/// Messages 1 and 2 are received together (prefetch 2) and both lose their delete to expiry.
/// Message 1's success is remembered at once; message 2's first run then takes longer than
/// the window, so by the redeliveries message 1's entry has expired (its handler runs again,
/// as documented) while message 2's is live (skipped).
#[test]
fn once_the_window_has_passed_a_redelivery_runs_again() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let mut handler = Handler::new(&clock);
    handler.first_run_takes[1] = VISIBILITY + TICK;
    handler.first_run_takes[2] = WINDOW + TICK;
    let handler = Arc::new(handler);
    q.send(1).unwrap();
    q.send(2).unwrap();
    let consumer = {
        let handler = handler.clone();
        Consumer::builder(q.clone())
            .heartbeat(0.0)
            .prefetch(2)
            .poll_wait(Duration::from_millis(5))
            .clock(clock.clone())
            .exactly_once(16, WINDOW)
            .start(move |body: &u32| handler.handle(body))
            .unwrap()
    };
    wait_until("both settled", || {
        let stats = consumer.stats();
        stats.processed == 3 && stats.duplicates_skipped == 1
    });
    assert_eq!(handler.runs(1), 2, "message 1's window had passed");
    assert_eq!(handler.runs(2), 1, "message 2's was live");
    let stats = consumer.stats();
    assert_eq!((stats.lease_lost, stats.successes_unremembered), (2, 0));
    wait_until("all deleted", || q.stats().deleted == 2);
}

#[test]
fn a_failed_run_is_not_remembered_and_is_retried() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let mut handler = Handler::new(&clock);
    handler.first_run_fails[3] = true;
    let handler = Arc::new(handler);
    q.send(3).unwrap();
    let consumer = {
        let handler = handler.clone();
        Consumer::builder(q.clone())
            .heartbeat(0.0)
            .backoff(backoff())
            .poll_wait(Duration::from_millis(5))
            .clock(clock.clone())
            .exactly_once(16, WINDOW)
            .start(move |body: &u32| handler.handle(body))
            .unwrap()
    };
    wait_until("the first run failed", || consumer.stats().retried == 1);
    clock.advance(Duration::from_secs(10));
    wait_until("the retry succeeded", || consumer.stats().processed == 1);
    assert_eq!(handler.runs(3), 2);
    assert_eq!(consumer.stats().duplicates_skipped, 0);
    wait_until("deleted", || q.stats().deleted == 1);
}

#[test]
fn a_zero_capacity_or_window_is_refused_by_start() {
    let q = queue(&ManualClock::new());
    for (capacity, window) in [(0, WINDOW), (16, Duration::ZERO)] {
        let refused = Consumer::builder(q.clone())
            .exactly_once(capacity, window)
            .start(|_: &u32| Ok::<(), &str>(()));
        let error = refused.expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    }
}
