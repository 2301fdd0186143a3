//! The patterns on any backend: the worker pool (`Consumer::backend_builder`) and the
//! dead-letter tools (`visq::dead_letters`) over the `Backend` trait, on the in-process queue
//! seen through the trait and on a test wrapper that removes capabilities (as RabbitMQ lacks
//! them) or injects transient failures (`support/limited_backend.rs`).
//!
//! Queue time is a `ManualClock`; the only wall-clock waits are for worker threads to catch up
//! (`wait_until`, bounded) and, on a backend that cannot delay a nack, the pool's own backoff
//! wait, which is what those tests measure (a few milliseconds).

mod common;
#[path = "support/limited_backend.rs"]
#[allow(dead_code)]
mod limited_backend;

use common::wait_until;
use limited_backend::Limited;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use visq::{
    dead_letters, Backend, BackendError, BackendLease, Backoff, Consumer, ConsumerBuilder,
    DeathCause, Lease, ManualClock, Outgoing, Queue,
};

const TICK: Duration = Duration::from_millis(1);
const VISIBILITY: Duration = Duration::from_secs(10);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn queue(clock: &ManualClock) -> Arc<Queue<u32>> {
    Arc::new(
        Queue::builder()
            .capacity(1024)
            .visibility_timeout(VISIBILITY)
            .tick(TICK)
            .clock(clock.clone())
            .build()
            .unwrap(),
    )
}

/// A queue whose messages go to a dead-letter queue after `max_receives`, and that queue.
fn queue_with_dlq(clock: &ManualClock, max_receives: u32) -> (Arc<Queue<u32>>, Arc<Queue<u32>>) {
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().clock(clock.clone()).build().unwrap());
    let q = Queue::builder()
        .capacity(1024)
        .visibility_timeout(VISIBILITY)
        .tick(TICK)
        .dead_letter(dlq.clone(), max_receives)
        .clock(clock.clone())
        .build()
        .unwrap();
    (Arc::new(q), dlq)
}

/// A backoff without jitter: 10 s, 20 s, 40 s, ...
fn backoff(base: Duration) -> Backoff {
    Backoff {
        base,
        factor: 2.0,
        cap: secs(3600),
        jitter: 0.0,
    }
}

type Pool = ConsumerBuilder<u32, dyn Backend<Body = u32>>;

/// A pool over `backend` on `clock` that polls often, so the tests run fast.
fn pool(backend: Arc<dyn Backend<Body = u32>>, clock: &ManualClock) -> Pool {
    Consumer::backend_builder(backend)
        .visibility_timeout(VISIBILITY)
        .backoff(backoff(secs(10)))
        .poll_wait(Duration::from_millis(5))
        .clock(clock.clone())
}

fn send(backend: &dyn Backend<Body = u32>, body: u32) {
    backend.send(Outgoing::new(body)).unwrap();
}

/// Holds handlers until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    entered: AtomicU32,
}

impl Gate {
    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn entered(&self) -> u32 {
        self.entered.load(Ordering::SeqCst)
    }
}

// ---- the pool over the trait ------------------------------------------------------------

#[test]
fn processes_every_message_through_the_trait() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let consumer = {
        let seen = seen.clone();
        pool(q.clone(), &clock)
            .workers(3)
            .prefetch(4)
            .start(move |n: &u32| {
                assert!(seen.lock().unwrap().insert(*n), "{n} handled twice");
                Ok::<(), &str>(())
            })
            .unwrap()
    };
    for n in 0..300 {
        send(&*q, n);
    }
    wait_until("all are processed", || consumer.stats().processed == 300);
    assert!(consumer.stop(secs(10)));
    assert_eq!(seen.lock().unwrap().len(), 300);
    let stats = q.stats();
    assert_eq!((stats.deleted, stats.ready, stats.in_flight), (300, 0, 0));
    let pool = consumer.stats();
    assert_eq!(
        (pool.failed, pool.receive_errors, pool.settle_errors),
        (0, 0, 0)
    );
}

#[test]
fn a_failure_backs_off_by_a_delayed_nack() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let attempts = Arc::new(AtomicU32::new(0));
    let consumer = {
        let attempts = attempts.clone();
        pool(q.clone(), &clock)
            .start(
                move |_: &u32| match attempts.fetch_add(1, Ordering::SeqCst) {
                    0 => Err("not yet"),
                    _ => Ok(()),
                },
            )
            .unwrap()
    };
    send(&*q, 7);
    wait_until("the failure is retried", || consumer.stats().retried == 1);
    // Invisible for the backoff (10 s), not a tick less; then the pool gets it again.
    clock.advance(secs(10) - TICK);
    assert!(q.try_receive().is_none());
    clock.advance(TICK * 2);
    wait_until("the second attempt succeeds", || {
        consumer.stats().processed == 1
    });
    assert!(consumer.stop(secs(10)));
    let stats = consumer.stats();
    assert_eq!(
        (stats.failed, stats.retried, stats.backoffs_waited),
        (1, 1, 0)
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(q.stats().deleted, 1);
}

#[test]
fn the_last_failure_goes_to_the_dead_letter_queue_with_its_reason() {
    let clock = ManualClock::new();
    let (q, dlq) = queue_with_dlq(&clock, 2);
    let consumer = pool(q.clone(), &clock)
        .backoff(backoff(Duration::ZERO))
        .start(|n: &u32| Err(format!("cannot handle {n}")))
        .unwrap();
    send(&*q, 5);
    wait_until("it is dead-lettered", || {
        consumer.stats().dead_lettered == 1
    });
    assert!(consumer.stop(secs(10)));
    let stats = consumer.stats();
    assert_eq!((stats.failed, stats.retried), (2, 1));
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].receive_count, 2);
    assert_eq!(
        letters[0].cause,
        DeathCause::Rejected {
            reason: "cannot handle 5".into()
        }
    );
}

#[test]
fn transient_receive_errors_back_off_and_are_counted() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let backend = Arc::new(Limited::new(q.clone(), |_| {}));
    backend.failing_receives.store(3, Ordering::SeqCst);
    let backoff = Backoff {
        base: Duration::from_millis(2),
        factor: 2.0,
        cap: Duration::from_millis(20),
        jitter: 0.0,
    };
    let started = Instant::now();
    let consumer = pool(backend.clone(), &clock)
        .backoff(backoff)
        .start(|_: &u32| Ok::<(), &str>(()))
        .unwrap();
    for n in 0..5 {
        send(&*q, n);
    }
    wait_until("all are processed", || consumer.stats().processed == 5);
    assert!(consumer.stop(secs(10)));
    let elapsed = started.elapsed();
    assert_eq!(consumer.stats().receive_errors, 3);
    assert_eq!(q.stats().deleted, 5);
    // No hot loop: after each failure the worker waited at least `poll_wait` (5 ms), after
    // each empty poll it long-polled 5 ms; so calls are bounded by the time taken.
    let calls = backend.receive_calls.load(Ordering::SeqCst);
    let bound = 10 + 2 * elapsed.as_millis() as u64 / 5;
    assert!(calls <= bound, "{calls} receive calls in {elapsed:?}");
}

#[test]
fn a_failed_receive_waits_the_pools_backoff() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let backend = Arc::new(Limited::new(q.clone(), |_| {}));
    backend.failing_receives.store(1, Ordering::SeqCst);
    send(&*q, 1);
    let backoff_wait = Duration::from_millis(50);
    let started = Instant::now();
    let consumer = pool(backend.clone(), &clock)
        .backoff(backoff(backoff_wait))
        .start(|_: &u32| Ok::<(), &str>(()))
        .unwrap();
    wait_until("it is processed", || consumer.stats().processed == 1);
    let elapsed = started.elapsed();
    assert!(consumer.stop(secs(10)));
    // The message was there from the start: only the backoff after the failure delayed it.
    assert!(elapsed >= backoff_wait, "processed after {elapsed:?}");
    assert_eq!(consumer.stats().receive_errors, 1);
}

#[test]
fn a_panicking_handler_on_a_backend_is_retried_and_the_worker_lives() {
    let clock = ManualClock::new();
    let (q, dlq) = queue_with_dlq(&clock, 2);
    let consumer = pool(q.clone(), &clock)
        .backoff(backoff(Duration::ZERO))
        .start(|n: &u32| -> Result<(), &str> { panic!("handler crashed on {n}") })
        .unwrap();
    send(&*q, 3);
    wait_until("it is dead-lettered", || {
        consumer.stats().dead_lettered == 1
    });
    // The worker survived both panics and still takes work.
    send(&*q, 4);
    wait_until("the next one is tried", || consumer.stats().failed >= 3);
    assert!(consumer.stop(secs(10)));
    assert!(consumer.stats().panicked >= 3);
    match &dlq.dead_letters(1)[0].cause {
        DeathCause::Rejected { reason } => {
            assert_eq!(reason, "the handler panicked: handler crashed on 3")
        }
        other => panic!("dead-lettered as {other:?}"),
    }
}

#[test]
fn where_leases_never_expire_no_visibility_is_asked() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    // Leases "never expire" but the queue under it is not told: the wrapper refuses any
    // receive that asks for a visibility, a fatal error; the pool must not ask.
    let backend = Arc::new(Limited::new(q.clone(), |c| c.leases_expire = false));
    let consumer = pool(backend.clone(), &clock)
        .start(|_: &u32| Ok::<(), &str>(()))
        .unwrap();
    send(&*q, 1);
    wait_until("it is processed", || consumer.stats().processed == 1);
    assert!(consumer.stop(secs(10)));
    assert_eq!(
        consumer.stats().receive_errors,
        0,
        "a visibility was asked for"
    );
}

#[test]
fn where_leases_never_expire_any_visibility_setting_starts() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    // A broker without visibility timeouts may say its longest is zero.
    let backend = Arc::new(Limited::new(q.clone(), |c| {
        c.leases_expire = false;
        c.max_visibility = Duration::ZERO;
    }));
    for visibility in [None, Some(Duration::ZERO), Some(secs(3600))] {
        let mut builder = Consumer::backend_builder(backend.clone()).clock(clock.clone());
        if let Some(visibility) = visibility {
            builder = builder.visibility_timeout(visibility);
        }
        let consumer = builder.start(|_: &u32| Ok::<(), &str>(())).unwrap();
        assert!(consumer.stop(secs(10)), "{visibility:?}");
    }
}

#[test]
fn where_leases_never_expire_no_heartbeat_runs() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let backend = Arc::new(Limited::like_rabbitmq(q.clone()));
    let gate = Arc::new(Gate::default());
    let consumer = {
        let gate = gate.clone();
        pool(backend.clone(), &clock)
            .start(move |_: &u32| {
                gate.pass();
                Ok::<(), &str>(())
            })
            .unwrap()
    };
    send(&*q, 1);
    wait_until("the handler runs", || gate.entered() == 1);
    // Far past any heartbeat's schedule (half of 10 s), on the pool's clock too. (The queue
    // under the wrapper does expire leases: 10 s; the point is that nobody tried to extend.)
    clock.advance(secs(6));
    // Wall time for a would-be heartbeat thread to try (it polls every few milliseconds);
    // queue time is the clock's.
    std::thread::sleep(Duration::from_millis(200));
    gate.open();
    wait_until("it is settled", || {
        let stats = consumer.stats();
        stats.processed + stats.lease_lost == 1
    });
    assert!(consumer.stop(secs(10)));
    let stats = consumer.stats();
    assert_eq!(stats.extended, 0);
    assert_eq!(backend.visibility_changes.load(Ordering::SeqCst), 0);
    assert_eq!(stats.receive_errors, 0, "a visibility was asked for");
}

#[test]
fn a_heartbeat_extends_backend_leases() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let gate = Arc::new(Gate::default());
    let consumer = {
        let gate = gate.clone();
        pool(q.clone(), &clock)
            .start(move |_: &u32| {
                gate.pass();
                Ok::<(), &str>(())
            })
            .unwrap()
    };
    send(&*q, 1);
    wait_until("the handler runs", || gate.entered() == 1);
    clock.advance(secs(6));
    wait_until("the lease is extended", || consumer.stats().extended >= 1);
    // 12 s after the receive, past the first 10 s lease: still the pool's.
    clock.advance(secs(6));
    assert!(q.try_receive().is_none());
    assert_eq!(q.stats().in_flight, 1);
    gate.open();
    wait_until("it is processed", || consumer.stats().processed == 1);
    assert!(consumer.stop(secs(10)));
    assert_eq!((consumer.stats().lease_lost, q.stats().deleted), (0, 1));
}

#[test]
fn where_a_nack_cannot_be_delayed_the_worker_waits_the_backoff_out() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let backend = Arc::new(Limited::like_rabbitmq(q.clone()));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let backoff_wait = Duration::from_millis(30);
    let consumer = {
        let attempts = attempts.clone();
        pool(backend.clone(), &clock)
            .backoff(backoff(backoff_wait))
            .start(move |_: &u32| {
                let mut attempts = attempts.lock().unwrap();
                attempts.push(Instant::now());
                if attempts.len() == 1 {
                    Err("not yet")
                } else {
                    Ok(())
                }
            })
            .unwrap()
    };
    send(&*q, 1);
    wait_until("the second attempt succeeds", || {
        consumer.stats().processed == 1
    });
    assert!(consumer.stop(secs(10)));
    let stats = consumer.stats();
    assert_eq!(
        (stats.failed, stats.retried, stats.backoffs_waited),
        (1, 1, 1)
    );
    assert_eq!(backend.visibility_changes.load(Ordering::SeqCst), 0);
    let attempts = attempts.lock().unwrap();
    let gap = attempts[1] - attempts[0];
    assert!(gap >= backoff_wait, "retried after {gap:?}");
    assert_eq!(q.stats().deleted, 1);
}

#[test]
fn a_stop_cuts_a_backoff_wait_short_and_releases() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let backend = Arc::new(Limited::like_rabbitmq(q.clone()));
    let consumer = pool(backend.clone(), &clock)
        .backoff(backoff(secs(3600)))
        .start(|_: &u32| Err("always"))
        .unwrap();
    send(&*q, 1);
    wait_until("the worker waits out a backoff", || {
        consumer.stats().backoffs_waited == 1
    });
    let stopping = Instant::now();
    assert!(consumer.stop(secs(10)));
    assert!(
        stopping.elapsed() < secs(5),
        "the hour-long wait was not cut"
    );
    assert_eq!(consumer.stats().retried, 1);
    let again = q.try_receive().expect("released on the way out");
    assert_eq!(again.receive_count(), 2);
}

#[test]
fn unstarted_work_is_handed_back_charged_where_the_backend_charges() {
    for charged in [false, true] {
        let clock = ManualClock::new();
        let q = queue(&clock);
        let backend = Arc::new(Limited::new(q.clone(), |c| {
            c.uncharged_hand_back = !charged;
        }));
        let gate = Arc::new(Gate::default());
        let consumer = {
            let gate = gate.clone();
            pool(backend.clone(), &clock)
                .prefetch(3)
                .start(move |_: &u32| {
                    gate.pass();
                    Ok::<(), &str>(())
                })
                .unwrap()
        };
        for n in 0..3 {
            send(&*q, n);
        }
        wait_until("the first handler runs", || gate.entered() == 1);
        assert_eq!(q.stats().in_flight, 3, "all prefetched");
        consumer.stop_receiving();
        gate.open();
        assert!(consumer.stop(secs(10)));
        assert_eq!(consumer.stats().released_unstarted, 2);
        let counts: Vec<u32> = (0..2)
            .map(|_| q.try_receive().unwrap().receive_count())
            .collect();
        let expected = if charged { 2 } else { 1 };
        assert_eq!(counts, [expected, expected], "charged: {charged}");
    }
}

#[test]
fn settle_failures_are_counted_by_kind() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let backend = Arc::new(Limited::new(q.clone(), |_| {}));
    backend.failing_deletes.store(1, Ordering::SeqCst);
    let handled = Arc::new(AtomicU32::new(0));
    let consumer = {
        let handled = handled.clone();
        let clock = clock.clone();
        pool(backend.clone(), &clock)
            .heartbeat(0.0)
            .start(move |_: &u32| {
                // The second attempt outlives its lease: its ack finds the lease gone.
                if handled.fetch_add(1, Ordering::SeqCst) == 1 {
                    clock.advance(VISIBILITY + TICK);
                }
                Ok::<(), &str>(())
            })
            .unwrap()
    };
    send(&*q, 1);
    // First attempt: the delete fails (transient): a settle error, the message stays leased.
    wait_until("the first ack fails", || {
        consumer.stats().settle_errors == 1
    });
    clock.advance(VISIBILITY + TICK);
    // Second attempt: lease lost. Third: deleted.
    wait_until("a later attempt is deleted", || q.stats().deleted == 1);
    assert!(consumer.stop(secs(10)));
    let stats = consumer.stats();
    assert_eq!(
        (stats.processed, stats.settle_errors, stats.lease_lost),
        (3, 1, 1)
    );
}

#[test]
fn batches_are_at_most_the_backends_batch() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let backend = Arc::new(Limited::new(q.clone(), |c| c.max_batch = 2));
    let largest = Arc::new(AtomicU32::new(0));
    let consumer = {
        let largest = largest.clone();
        pool(backend.clone(), &clock)
            .start_batch(
                10,
                Duration::from_millis(5),
                move |batch: &[BackendLease<'_, u32>]| {
                    largest.fetch_max(batch.len() as u32, Ordering::SeqCst);
                    batch
                        .iter()
                        .map(|lease| {
                            if lease.body() % 3 == 0 {
                                Err("three")
                            } else {
                                Ok(())
                            }
                        })
                        .collect()
                },
            )
            .unwrap()
    };
    for n in 1..=20 {
        send(&*q, n);
    }
    wait_until("all are handled once", || {
        let stats = consumer.stats();
        stats.processed + stats.failed >= 20
    });
    assert!(consumer.stop(secs(10)));
    assert!(largest.load(Ordering::SeqCst) <= 2);
    let stats = consumer.stats();
    assert_eq!(
        (stats.processed, stats.failed, stats.receive_errors),
        (14, 6, 0)
    );
}

#[test]
fn start_refuses_settings_the_backend_cannot_honour() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let invalid = |started: std::io::Result<Consumer<u32, dyn Backend<Body = u32>>>| {
        started.is_err_and(|e| e.kind() == std::io::ErrorKind::InvalidInput)
    };
    let short = Arc::new(Limited::new(q.clone(), |c| c.max_visibility = secs(60)));
    assert!(invalid(
        pool(short.clone(), &clock)
            .visibility_timeout(secs(61))
            .start(|_: &u32| Ok::<(), &str>(()))
    ));
    // The default visibility (30 s) fits under the backend's longest.
    let consumer = Consumer::backend_builder(short)
        .start(|_: &u32| Ok::<(), &str>(()))
        .unwrap();
    assert!(consumer.stop(secs(10)));
    // A dead-letter limit the backend does not have.
    assert!(invalid(
        pool(q.clone(), &clock)
            .max_receives(3)
            .start(|_: &u32| Ok::<(), &str>(()))
    ));
}

#[test]
fn the_in_process_pool_still_takes_a_queue_lease_type() {
    // One pool, two sources: the in-process handler's leases are `Lease<'_, T>` (Delivery
    // inside), the backend's `BackendLease<'_, T>` (Incoming inside).
    let clock = ManualClock::new();
    let q = queue(&clock);
    let consumer = Consumer::builder(q.clone())
        .clock(clock.clone())
        .poll_wait(Duration::from_millis(5))
        .start_batch(2, Duration::ZERO, |batch: &[Lease<'_, u32>]| {
            // A `Delivery` underneath: its receipt is the queue's.
            let receipts: HashSet<u64> = batch.iter().map(|l| l.receipt().to_u64()).collect();
            assert_eq!(receipts.len(), batch.len());
            vec![Ok::<(), &str>(()); batch.len()]
        })
        .unwrap();
    q.send(1).unwrap();
    wait_until("it is processed", || consumer.stats().processed == 1);
    assert!(consumer.stop(secs(10)));
}

// ---- dead-letter tools over the trait ---------------------------------------------------

/// `n` messages (bodies 0..n) dead-lettered from `q` into its dead-letter queue.
fn kill(q: &Queue<u32>, n: u32) {
    for body in 0..n {
        q.send(body).unwrap();
        let d = q.try_receive().unwrap();
        q.reject(d.receipt(), "poison").unwrap();
    }
}

#[test]
fn inspect_looks_without_consuming() {
    let clock = ManualClock::new();
    let (q, dlq) = queue_with_dlq(&clock, 5);
    kill(&q, 3);
    let dead = Backend::dead_letter_queue(&*q).unwrap();
    let letters = dead_letters::inspect(&*dead, 2).unwrap();
    assert_eq!(letters.iter().map(|l| l.body).collect::<Vec<_>>(), [0, 1]);
    let all = dead_letters::inspect(&*dead, 10).unwrap();
    assert_eq!(all.len(), 3);
    // Still there, visible, and (an uncharged hand-back in process) never counted.
    assert_eq!((dlq.stats().ready, dlq.stats().in_flight), (3, 0));
    assert_eq!(dlq.try_receive().unwrap().receive_count(), 1);
}

#[test]
fn inspect_counts_a_receive_where_hand_backs_are_charged() {
    let clock = ManualClock::new();
    let dlq = queue(&clock);
    send(&*dlq, 9);
    let charged = Limited::new(dlq.clone(), |c| c.uncharged_hand_back = false);
    assert_eq!(dead_letters::inspect(&charged, 10).unwrap()[0].body, 9);
    assert_eq!(dlq.try_receive().unwrap().receive_count(), 2);
}

#[test]
fn inspect_gives_back_what_it_had_when_a_receive_fails() {
    let clock = ManualClock::new();
    let dlq = queue(&clock);
    for n in 0..4 {
        send(&*dlq, n);
    }
    // Two per call: the first call succeeds, the second fails.
    let flaky = Limited::new(dlq.clone(), |c| c.max_batch = 2);
    flaky.failing_receive_call.store(2, Ordering::SeqCst);
    assert!(matches!(
        dead_letters::inspect(&flaky, 4),
        Err(BackendError::Transient(_))
    ));
    assert_eq!((dlq.stats().ready, dlq.stats().in_flight), (4, 0));
    // Calls of two, until it has all.
    assert_eq!(dead_letters::inspect(&flaky, 4).unwrap().len(), 4);
    assert_eq!(flaky.receive_calls.load(Ordering::SeqCst), 4);
}

#[test]
fn redrive_moves_up_to_max_back_to_the_source() {
    let clock = ManualClock::new();
    let (q, dlq) = queue_with_dlq(&clock, 5);
    kill(&q, 5);
    let source: Arc<dyn Backend<Body = u32>> = q.clone();
    let dead = source.dead_letter_queue().unwrap();
    let outcome = dead_letters::redrive(&*dead, &*source, 3);
    assert_eq!(
        (outcome.moved, outcome.not_deleted, outcome.stopped),
        (3, 0, None)
    );
    assert_eq!(dlq.stats().ready, 2);
    let mut back: Vec<u32> = (0..3).map(|_| *q.try_receive().unwrap().body()).collect();
    back.sort_unstable();
    assert_eq!(back, [0, 1, 2]);
    let rest = dead_letters::redrive(&*dead, &*source, 10);
    assert_eq!((rest.moved, dlq.stats().ready), (2, 0));
}

#[test]
fn redrive_stops_at_a_refusal_and_loses_nothing() {
    let clock = ManualClock::new();
    let (q, dlq) = queue_with_dlq(&clock, 5);
    kill(&q, 3);
    let full: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(1).build().unwrap());
    let outcome = dead_letters::redrive(&*Backend::dead_letter_queue(&*q).unwrap(), &*full, 10);
    assert_eq!(outcome.moved, 1);
    assert_eq!(outcome.stopped, Some(BackendError::Full));
    // Two left, given back uncounted, none lost.
    assert_eq!((dlq.stats().ready, dlq.stats().in_flight), (2, 0));
    assert_eq!(dlq.try_receive().unwrap().receive_count(), 1);
    assert_eq!(full.stats().ready, 1);
}

#[test]
fn redrive_is_at_least_once_when_a_delete_fails() {
    let clock = ManualClock::new();
    let dlq = queue(&clock);
    let target = queue(&clock);
    send(&*dlq, 4);
    let flaky = Limited::new(dlq.clone(), |_| {});
    flaky.failing_deletes.store(1, Ordering::SeqCst);
    let outcome = dead_letters::redrive(&flaky, &*target, 10);
    assert_eq!((outcome.moved, outcome.not_deleted), (1, 1));
    // On the target, and still leased in the dead-letter queue: back there after the lease.
    assert_eq!(*target.try_receive().unwrap().body(), 4);
    clock.advance(dead_letters::TOOL_LEASE + TICK);
    assert_eq!(*dlq.try_receive().unwrap().body(), 4);
}
