//! The worker pool and the batch consumer: settling by outcome, backoff, dead-lettering, panics,
//! heartbeats and the graceful stop. Queue time is a `ManualClock` wherever it matters; the
//! only wall-clock waits are for the worker threads to catch up (bounded, see `wait_until`).

mod common;

use common::wait_until;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use visq::{Backoff, Builder, Consumer, ConsumerBuilder, Lease, ManualClock, Queue};

const TICK: Duration = Duration::from_millis(1);
const VISIBILITY: Duration = Duration::from_secs(10);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A queue's settings for these tests: 1,024 messages, 10 s leases, 1 ms ticks, on `clock`.
fn builder<T>(clock: &ManualClock) -> Builder<T> {
    Queue::builder()
        .capacity(1024)
        .visibility_timeout(VISIBILITY)
        .tick(TICK)
        .clock(clock.clone())
}

fn queue(clock: &ManualClock) -> Arc<Queue<u32>> {
    Arc::new(builder(clock).build().unwrap())
}

/// A backoff without jitter: 10 s, 20 s, 40 s, ...
fn backoff() -> Backoff {
    Backoff {
        base: secs(10),
        factor: 2.0,
        cap: secs(3600),
        jitter: 0.0,
    }
}

/// A pool on `clock` that polls often, so the tests run fast.
fn pool<T: Clone + Send + 'static>(q: &Arc<Queue<T>>, clock: &ManualClock) -> ConsumerBuilder<T> {
    Consumer::builder(q.clone())
        .visibility_timeout(VISIBILITY)
        .backoff(backoff())
        .poll_wait(Duration::from_millis(5))
        .clock(clock.clone())
}

/// Holds handlers until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    entered: AtomicUsize,
}

impl Gate {
    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let (_open, waited) = self
            .opened
            .wait_timeout_while(open, secs(10), |open| !*open)
            .unwrap();
        assert!(!waited.timed_out(), "the test never opened the gate");
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

/// Sends `messages` messages and starts a gated pool that prefetches them all; returns once the
/// first handler waits at the gate, with every message leased.
fn prefetching_at_the_gate(
    q: &Arc<Queue<u32>>,
    clock: &ManualClock,
    messages: u32,
) -> (Consumer<u32>, Arc<Gate>) {
    for n in 0..messages {
        q.send(n).unwrap();
    }
    let gate = Arc::new(Gate::default());
    let consumer = start_gated(pool(q, clock).prefetch(messages as usize), &gate);
    wait_until("the first handler runs", || gate.entered() == 1);
    assert_eq!(q.stats().in_flight, messages as usize, "all prefetched");
    (consumer, gate)
}

/// Starts `pool` with a handler that waits at `gate`, then succeeds.
fn start_gated(pool: ConsumerBuilder<u32>, gate: &Arc<Gate>) -> Consumer<u32> {
    let gate = gate.clone();
    pool.start(move |_: &u32| {
        gate.pass();
        Ok::<(), &str>(())
    })
    .unwrap()
}

#[test]
fn every_message_is_handled_once_and_deleted() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let consumer = {
        let seen = seen.clone();
        pool(&q, &clock)
            .workers(4)
            .prefetch(8)
            .start(move |n: &u32| {
                assert!(seen.lock().unwrap().insert(*n), "{n} handled twice");
                Ok::<(), &str>(())
            })
    }
    .unwrap();
    for n in 0..1000 {
        q.send(n).unwrap();
    }
    wait_until("all are processed", || consumer.stats().processed == 1000);
    assert!(consumer.stop(secs(10)));
    assert_eq!(seen.lock().unwrap().len(), 1000);
    let stats = q.stats();
    assert_eq!((stats.deleted, stats.ready, stats.in_flight), (1000, 0, 0));
    assert_eq!(consumer.stats().failed, 0);
}

#[test]
fn failures_back_off_exponentially_then_succeed() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let attempts = Arc::new(AtomicU32::new(0));
    let consumer = {
        let attempts = attempts.clone();
        pool(&q, &clock).start(
            move |_: &u32| match attempts.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err("not yet"),
                _ => Ok(()),
            },
        )
    }
    .unwrap();
    q.send(7).unwrap();

    wait_until("the first failure is retried", || {
        consumer.stats().retried == 1
    });
    // Invisible for the first backoff (10 s), then the pool gets it again.
    clock.advance(secs(10) - TICK);
    assert!(q.try_receive().is_none());
    clock.advance(TICK * 2);
    wait_until("the second failure is retried", || {
        consumer.stats().retried == 2
    });
    // The second backoff is twice as long.
    clock.advance(secs(20) - TICK);
    assert!(q.try_receive().is_none());
    clock.advance(TICK * 2);
    wait_until("the third attempt succeeds", || {
        consumer.stats().processed == 1
    });

    assert!(consumer.stop(secs(10)));
    let stats = consumer.stats();
    assert_eq!(
        (stats.failed, stats.retried, stats.dead_lettered),
        (2, 2, 0)
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(q.stats().deleted, 1);
}

#[test]
fn the_dead_letter_limit_takes_over_from_backoff() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().clock(clock.clone()).build().unwrap());
    let q = Arc::new(
        Queue::builder()
            .visibility_timeout(VISIBILITY)
            .dead_letter(dlq.clone(), 2)
            .tick(TICK)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let consumer = pool(&q, &clock)
        .max_receives(2)
        .start(|_: &u32| Err::<(), _>("always"))
        .unwrap();
    q.send(7).unwrap();
    wait_until("the first failure is retried", || {
        consumer.stats().retried == 1
    });
    clock.advance(secs(10) + TICK);
    // The second failure is the last allowed receive: released at once, without backoff.
    wait_until("it is dead-lettered", || {
        consumer.stats().dead_lettered == 1
    });
    assert!(consumer.stop(secs(10)));
    assert_eq!(*dlq.try_receive().unwrap().body(), 7);
    let stats = q.stats();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_lettered),
        (0, 0, 1)
    );
    let stats = consumer.stats();
    assert_eq!(
        (stats.failed, stats.retried, stats.dead_lettered),
        (2, 1, 1)
    );
}

#[test]
fn a_panicking_handler_keeps_its_worker_and_gives_the_message_back() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let panicked_once = Arc::new(AtomicBool::new(false));
    let consumer = {
        let panicked_once = panicked_once.clone();
        pool(&q, &clock).workers(1).start(move |n: &u32| {
            if *n == 0 && !panicked_once.swap(true, Ordering::SeqCst) {
                panic!("handler bug (expected by the test)");
            }
            Ok::<(), &str>(())
        })
    }
    .unwrap();
    for n in 0..3 {
        q.send(n).unwrap();
    }
    // The only worker survived the panic: it handled the other two.
    wait_until("the others are processed", || {
        consumer.stats().processed == 2
    });
    let stats = consumer.stats();
    assert_eq!((stats.panicked, stats.failed, stats.retried), (1, 1, 1));
    clock.advance(secs(10) + TICK);
    wait_until("the retry succeeds", || consumer.stats().processed == 3);
    assert!(consumer.stop(secs(10)));
    assert_eq!(q.stats().deleted, 3);
}

#[test]
fn the_heartbeat_keeps_a_slow_handlers_lease() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let gate = Arc::new(Gate::default());
    let consumer = start_gated(pool(&q, &clock).heartbeat(0.5), &gate);
    q.send(1).unwrap();
    wait_until("the handler runs", || gate.entered() == 1);

    clock.advance(secs(6)); // past half the timeout
    wait_until("the heartbeat extends", || consumer.stats().extended >= 1);
    clock.advance(secs(6)); // past the original deadline (10 s)
    assert!(
        q.try_receive().is_none(),
        "the lease expired despite the heartbeat"
    );
    assert_eq!(q.stats().expired, 0);

    gate.open();
    wait_until("the handler finishes", || consumer.stats().processed == 1);
    assert!(consumer.stop(secs(10)));
    assert_eq!(consumer.stats().lease_lost, 0);
    assert_eq!(q.stats().deleted, 1);
}

#[test]
fn without_a_heartbeat_a_slow_handler_loses_its_lease() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let gate = Arc::new(Gate::default());
    let consumer = start_gated(pool(&q, &clock).heartbeat(0.0), &gate);
    q.send(1).unwrap();
    wait_until("the handler runs", || gate.entered() == 1);
    clock.advance(secs(11));
    let redelivered = q.try_receive().expect("the lease expired");
    assert_eq!(redelivered.receive_count(), 2);
    q.delete(redelivered.receipt()).unwrap();

    gate.open();
    wait_until("the late ack is refused", || {
        consumer.stats().lease_lost == 1
    });
    assert!(consumer.stop(secs(10)));
    assert_eq!(consumer.stats().extended, 0);
}

#[test]
fn stop_lets_the_running_handler_finish_and_releases_the_unstarted() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let (consumer, gate) = prefetching_at_the_gate(&q, &clock, 3);

    consumer.stop_receiving();
    gate.open();
    assert!(
        consumer.stop(secs(10)),
        "the handler finished within the deadline"
    );

    let stats = consumer.stats();
    assert_eq!((stats.processed, stats.released_unstarted), (1, 2));
    assert_eq!(gate.entered(), 1, "nothing started after the stop");
    let stats = q.stats();
    assert_eq!((stats.deleted, stats.ready, stats.in_flight), (1, 2, 0));
}

#[test]
fn stop_gives_up_on_a_stuck_handler_at_the_deadline() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let gate = Arc::new(Gate::default());
    let consumer = start_gated(pool(&q, &clock), &gate);
    q.send(1).unwrap();
    wait_until("the handler runs", || gate.entered() == 1);
    assert!(!consumer.stop(Duration::from_millis(20)));
    // The handler is left to finish and settle on its own.
    gate.open();
    wait_until("the late handler settles", || q.stats().deleted == 1);
    assert_eq!(consumer.stats().processed, 1);
}

#[test]
fn batches_are_cut_at_size_or_when_the_wait_ends() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    for n in 0..10 {
        q.send(n).unwrap();
    }
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let sizes = sizes.clone();
        pool(&q, &clock)
            .start_batch(
                4,
                Duration::from_millis(20),
                move |batch: &[Lease<'_, u32>]| {
                    sizes.lock().unwrap().push(batch.len());
                    // Per message: even ones succeed, odd ones fail.
                    batch
                        .iter()
                        .map(|m| {
                            if *m.body() % 2 == 0 {
                                Ok(())
                            } else {
                                Err("odd")
                            }
                        })
                        .collect()
                },
            )
            .unwrap()
    };
    wait_until("all are handled", || {
        let stats = consumer.stats();
        stats.processed + stats.failed == 10
    });
    assert!(consumer.stop(secs(10)));
    assert_eq!(*sizes.lock().unwrap(), [4, 4, 2]);
    let stats = consumer.stats();
    assert_eq!((stats.processed, stats.failed, stats.retried), (5, 5, 5));
    let stats = q.stats();
    assert_eq!(
        (stats.deleted, stats.in_flight, stats.delayed),
        (5, 0, 5),
        "failures back off, their leases ended"
    );
}

#[test]
fn a_batch_gathers_what_arrives_within_the_wait() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let sizes = sizes.clone();
        pool(&q, &clock)
            .start_batch(3, secs(10), move |batch: &[Lease<'_, u32>]| {
                sizes.lock().unwrap().push(batch.len());
                vec![Ok::<(), &str>(()); batch.len()]
            })
            .unwrap()
    };
    q.send(0).unwrap();
    wait_until("the first is received", || q.stats().in_flight == 1);
    q.send(1).unwrap();
    q.send(2).unwrap();
    wait_until("the batch is handled", || consumer.stats().processed == 3);
    assert!(consumer.stop(secs(10)));
    assert_eq!(*sizes.lock().unwrap(), [3]);
}

#[test]
fn missing_outcomes_and_panics_fail_batch_messages() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    for n in 0..6 {
        q.send(n).unwrap();
    }
    let consumer = pool(&q, &clock)
        .start_batch(3, Duration::ZERO, |batch: &[Lease<'_, u32>]| {
            if *batch[0].body() == 0 {
                vec![Ok::<(), &str>(())] // one outcome for three messages
            } else {
                panic!("batch handler bug (expected by the test)")
            }
        })
        .unwrap();
    wait_until("both batches are handled", || {
        let stats = consumer.stats();
        stats.processed + stats.failed == 6
    });
    assert!(consumer.stop(secs(10)));
    let stats = consumer.stats();
    assert_eq!((stats.processed, stats.failed, stats.panicked), (1, 5, 3));
    assert_eq!(q.stats().deleted, 1);
}

/// A queue on `clock` whose messages go to a fresh dead-letter queue after `max_receives`.
fn queue_with_dlq(clock: &ManualClock, max_receives: u32) -> (Arc<Queue<u32>>, Arc<Queue<u32>>) {
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().clock(clock.clone()).build().unwrap());
    let q = builder(clock).dead_letter(dlq.clone(), max_receives);
    (Arc::new(q.build().unwrap()), dlq)
}

fn ok<T>(_: &T) -> Result<(), &'static str> {
    Ok(())
}

fn invalid_input<T>(started: std::io::Result<Consumer<T>>) -> bool {
    started.is_err_and(|e| e.kind() == std::io::ErrorKind::InvalidInput)
}

/// Asserts each of `q`'s messages is visible with receive count 1, as if never received.
fn assert_all_unreceived(q: &Queue<u32>, messages: usize) {
    for _ in 0..messages {
        let d = q.try_receive().expect("given back, visible");
        assert_eq!(d.receive_count(), 1, "the unused receive was charged");
    }
    assert!(q.try_receive().is_none());
}

#[test]
fn stop_hands_prefetched_messages_back_without_charging_a_receive() {
    let clock = ManualClock::new();
    let (q, dlq) = queue_with_dlq(&clock, 1);
    let (consumer, gate) = prefetching_at_the_gate(&q, &clock, 10);
    consumer.stop_receiving();
    gate.open();
    assert!(consumer.stop(secs(10)));
    let stats = consumer.stats();
    assert_eq!((stats.processed, stats.released_unstarted), (1, 9));
    assert_eq!(dlq.stats().sent, 0, "unstarted messages were dead-lettered");
    assert_all_unreceived(&q, 9);
}

#[test]
fn stop_hands_a_gathering_batch_back_without_charging_a_receive() {
    let clock = ManualClock::new();
    let (q, dlq) = queue_with_dlq(&clock, 1);
    let consumer = pool(&q, &clock)
        .start_batch(5, secs(30), |batch: &[Lease<'_, u32>]| {
            vec![Ok::<(), &str>(()); batch.len()]
        })
        .unwrap();
    q.send(1).unwrap();
    wait_until("the batch is gathering", || q.stats().in_flight == 1);
    assert!(consumer.stop(secs(10)));
    assert_eq!(consumer.stats().released_unstarted, 1);
    assert_eq!(
        dlq.stats().sent,
        0,
        "the unstarted message was dead-lettered"
    );
    assert_all_unreceived(&q, 1);
}

#[test]
fn a_batch_being_gathered_is_heartbeated_from_its_receive() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let counts = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let counts = counts.clone();
        pool(&q, &clock)
            .heartbeat(0.5)
            .start_batch(2, secs(30), move |batch: &[Lease<'_, u32>]| {
                let mut counts = counts.lock().unwrap();
                counts.extend(batch.iter().map(|lease| lease.receive_count()));
                vec![Ok::<(), &str>(()); batch.len()]
            })
            .unwrap()
    };
    q.send(0).unwrap();
    wait_until("the batch is gathering", || q.stats().in_flight == 1);
    clock.advance(secs(6)); // past half the timeout, still gathering
    wait_until("the heartbeat extends the gathered lease", || {
        consumer.stats().extended >= 1
    });
    clock.advance(secs(6)); // past the original deadline (10 s)
    assert!(
        q.try_receive().is_none(),
        "the lease lapsed while gathering"
    );
    q.send(1).unwrap();
    wait_until("the batch is handled", || consumer.stats().processed == 2);
    assert!(consumer.stop(secs(10)));
    assert_eq!(*counts.lock().unwrap(), [1, 1]);
    assert_eq!((q.stats().expired, q.stats().deleted), (0, 2));
}

#[test]
fn the_heartbeat_runs_on_the_queues_timeout_when_it_is_shorter() {
    let clock = ManualClock::new();
    let q = queue(&clock); // 10 s leases
    let gate = Arc::new(Gate::default());
    let consumer = start_gated(
        pool(&q, &clock).visibility_timeout(secs(60)).heartbeat(0.5),
        &gate,
    );
    q.send(1).unwrap();
    wait_until("the handler runs", || gate.entered() == 1);
    clock.advance(secs(6)); // past half the queue's timeout, far from half the pool's
    wait_until("the heartbeat extends the first lease", || {
        consumer.stats().extended >= 1
    });
    clock.advance(secs(6));
    assert!(q.try_receive().is_none(), "the queue's first lease lapsed");
    gate.open();
    wait_until("the handler finishes", || consumer.stats().processed == 1);
    assert!(consumer.stop(secs(10)));
    assert_eq!((q.stats().expired, q.stats().deleted), (0, 1));
}

#[test]
fn a_zero_pool_visibility_timeout_is_refused() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let zero = pool(&q, &clock).visibility_timeout(Duration::ZERO);
    assert!(invalid_input(zero.start(ok)));
}

#[test]
fn a_pool_dead_letter_limit_the_queue_does_not_share_is_refused() {
    let clock = ManualClock::new();
    let no_dlq = queue(&clock);
    assert!(invalid_input(
        pool(&no_dlq, &clock).max_receives(1).start(ok)
    ));
    let (q, _dlq) = queue_with_dlq(&clock, 3);
    assert!(invalid_input(pool(&q, &clock).max_receives(2).start(ok)));
    assert!(invalid_input(pool(&q, &clock).max_receives(4).start(ok)));
    let same = pool(&q, &clock).max_receives(3).start(ok).unwrap();
    assert!(same.stop(secs(10)));
}

#[test]
fn huge_sizes_are_capped_and_absurd_worker_counts_refused() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let handles_three = |consumer: Consumer<u32>, what: &str| {
        for n in 0..3 {
            q.send(n).unwrap();
        }
        wait_until(what, || consumer.stats().processed == 3);
        assert!(consumer.stop(secs(10)));
    };
    let prefetching = pool(&q, &clock).prefetch(usize::MAX).start(ok).unwrap();
    handles_three(prefetching, "a huge prefetch handles them");
    let batching = pool(&q, &clock)
        .start_batch(usize::MAX, Duration::ZERO, |batch: &[Lease<'_, u32>]| {
            vec![Ok::<(), &str>(()); batch.len()]
        })
        .unwrap();
    handles_three(batching, "a huge batch size handles them");
    assert!(invalid_input(
        pool(&q, &clock).workers(usize::MAX).start(ok)
    ));
}

#[test]
fn drop_after_a_stop_that_gave_up_does_not_wait_again() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let gate = Arc::new(Gate::default());
    let consumer = start_gated(pool(&q, &clock), &gate);
    q.send(1).unwrap();
    wait_until("the handler runs", || gate.entered() == 1);
    assert!(!consumer.stop(Duration::from_millis(20)));
    let dropping = Instant::now();
    drop(consumer);
    assert!(
        dropping.elapsed() < secs(5),
        "the drop waited for the stuck handler"
    );
    gate.open();
    wait_until("the late handler settles", || q.stats().deleted == 1);
}

/// A pool whose handler, on message 0, calls `on_pill` with the pool itself.
fn pool_with_pill(
    q: &Arc<Queue<u32>>,
    clock: &ManualClock,
    on_pill: impl Fn(&Mutex<Option<Consumer<u32>>>) + Send + Sync + 'static,
) -> Arc<Mutex<Option<Consumer<u32>>>> {
    let slot = Arc::new(Mutex::new(None));
    let consumer = {
        let slot = slot.clone();
        pool(q, clock).workers(2).start(move |n: &u32| {
            if *n == 0 {
                on_pill(&slot);
            }
            Ok::<(), &str>(())
        })
    }
    .unwrap();
    *slot.lock().unwrap() = Some(consumer);
    slot
}

#[test]
fn dropping_the_consumer_from_its_own_handler_only_stops_receiving() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let _slot = pool_with_pill(&q, &clock, |slot| drop(slot.lock().unwrap().take()));
    q.send(0).unwrap();
    wait_until("the pill is handled and deleted", || q.stats().deleted == 1);
    // Every worker and the heartbeat end, letting go of the queue.
    wait_until("the pool's threads end", || Arc::strong_count(&q) == 1);
}

#[test]
fn stop_from_a_handler_returns_at_once() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let took = Arc::new(Mutex::new(None));
    let slot = {
        let took = took.clone();
        pool_with_pill(&q, &clock, move |slot| {
            let started = Instant::now();
            let finished = slot.lock().unwrap().as_ref().unwrap().stop(secs(10));
            *took.lock().unwrap() = Some((finished, started.elapsed()));
        })
    };
    q.send(0).unwrap();
    wait_until("the pill is handled and deleted", || q.stats().deleted == 1);
    let (finished, elapsed) = took.lock().unwrap().unwrap();
    assert!(!finished, "the calling worker cannot have finished");
    assert!(elapsed < secs(5), "stop waited for its own caller");
    drop(slot.lock().unwrap().take());
    wait_until("the pool's threads end", || Arc::strong_count(&q) == 1);
}

/// A body whose `Clone` or `Drop` panics once, for the value `fuse` names.
#[derive(Debug)]
struct Fragile {
    value: u32,
    fuse: Arc<Fuse>,
}

#[derive(Debug, Default)]
struct Fuse {
    clone_of: Option<u32>,
    drop_of: Option<u32>,
    blown: AtomicBool,
}

impl Fuse {
    fn blows(&self, armed_for: Option<u32>, value: u32) -> bool {
        armed_for == Some(value) && !self.blown.swap(true, Ordering::SeqCst)
    }
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        if self.fuse.blows(self.fuse.clone_of, self.value) {
            panic!("clone of {} (expected by the test)", self.value);
        }
        Self {
            value: self.value,
            fuse: self.fuse.clone(),
        }
    }
}

impl Drop for Fragile {
    fn drop(&mut self) {
        if self.fuse.blows(self.fuse.drop_of, self.value) {
            panic!("drop of {} (expected by the test)", self.value);
        }
    }
}

fn fragile_queue(clock: &ManualClock, fuse: &Arc<Fuse>) -> Arc<Queue<Fragile>> {
    let q = Arc::new(builder(clock).build().unwrap());
    for value in 0..3 {
        let fuse = fuse.clone();
        q.send(Fragile { value, fuse }).unwrap();
    }
    q
}

#[test]
fn a_panicking_clone_in_a_receive_keeps_the_worker_and_what_it_received() {
    let clock = ManualClock::new();
    let fuse = Arc::new(Fuse {
        clone_of: Some(1),
        ..Fuse::default()
    });
    let q = fragile_queue(&clock, &fuse);
    let handled = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let handled = handled.clone();
        pool(&q, &clock)
            .prefetch(3)
            .start(move |body: &Fragile| {
                handled.lock().unwrap().push(body.value);
                Ok::<(), &str>(())
            })
            .unwrap()
    };
    wait_until("all three are handled", || consumer.stats().processed == 3);
    assert!(consumer.stop(secs(10)));
    let mut handled = handled.lock().unwrap().clone();
    handled.sort_unstable();
    assert_eq!(handled, [0, 1, 2]);
    assert_eq!(consumer.stats().body_panics, 1);
    let stats = q.stats();
    assert_eq!((stats.deleted, stats.expired, stats.released), (3, 0, 0));
}

#[test]
fn a_panicking_drop_in_a_delete_settles_the_rest_of_the_chunk() {
    let clock = ManualClock::new();
    let fuse = Arc::new(Fuse {
        drop_of: Some(1),
        ..Fuse::default()
    });
    let q = fragile_queue(&clock, &fuse);
    let handled = Arc::new(AtomicUsize::new(0));
    let consumer = {
        let handled = handled.clone();
        pool(&q, &clock)
            .start_batch(3, Duration::ZERO, move |batch: &[Lease<'_, Fragile>]| {
                handled.fetch_add(batch.len(), Ordering::SeqCst);
                vec![Ok::<(), &str>(()); batch.len()]
            })
            .unwrap()
    };
    wait_until("all three are deleted", || q.stats().deleted == 3);
    assert!(consumer.stop(secs(10)));
    assert_eq!(
        handled.load(Ordering::SeqCst),
        3,
        "a message was handled twice"
    );
    assert_eq!(consumer.stats().body_panics, 1);
    let stats = q.stats();
    assert_eq!((stats.released, stats.ready, stats.in_flight), (0, 0, 0));
}

/// A stop that gave up turns the heartbeat off, so the prefetched, unstarted leases can expire
/// under the still-running handler; the worker's hand-back of them is then refused. They were
/// not given back (the queue redelivers them as expired), so they must not be counted in
/// `released_unstarted`.
#[test]
fn unstarted_leases_that_expired_are_not_counted_as_given_back() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let (consumer, gate) = prefetching_at_the_gate(&q, &clock, 3);
    assert!(!consumer.stop(Duration::from_millis(20)));
    clock.advance(VISIBILITY + TICK); // all three leases lapse: nobody extends them now
    gate.open();
    // The late ack and both hand-backs are refused.
    wait_until("the worker settles and exits", || {
        q.stats().refused_receipts == 3
    });
    let stats = consumer.stats();
    assert_eq!((stats.processed, stats.lease_lost), (1, 1));
    assert_eq!(
        stats.released_unstarted, 0,
        "expired leases counted as given back"
    );
    let queue_stats = q.stats();
    assert_eq!((queue_stats.expired, queue_stats.released), (3, 0));
}

/// CPU time (user and system, in clock ticks) that thread `tid` of this process has used.
#[cfg(target_os = "linux")]
fn cpu_ticks(tid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // The fields after the command name (which is in parentheses) start with the state.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A closed queue's receive returns at once when nothing is visible, so a worker that simply
/// long-polled it again spun a core until the pool stopped (a closed queue can still deliver
/// what is leased or delayed, so the worker keeps polling, at the pace of `poll_wait`). The
/// wall-clock wait is the thing under test: the worker's CPU time over half a second.
#[cfg(target_os = "linux")]
#[test]
fn an_idle_worker_on_a_closed_queue_does_not_spin() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let worker = Arc::new(Mutex::new(String::new()));
    let consumer = {
        let worker = worker.clone();
        pool(&q, &clock)
            .start(move |_: &u32| {
                let me = std::fs::read_link("/proc/thread-self").unwrap();
                *worker.lock().unwrap() = me.file_name().unwrap().to_str().unwrap().to_string();
                Ok::<(), &str>(())
            })
            .unwrap()
    };
    q.send(1).unwrap();
    wait_until("the worker handles the message", || {
        consumer.stats().processed == 1
    });
    q.close();
    let worker = worker.lock().unwrap().clone();
    let before = cpu_ticks(&worker);
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_ticks(&worker) - before;
    assert!(consumer.stop(secs(10)));
    // Ticks are 10 ms: a spinning worker uses most of the 50, a polling one next to none.
    assert!(
        used < 10,
        "the idle worker used {used} ticks of CPU in 500 ms"
    );
}
