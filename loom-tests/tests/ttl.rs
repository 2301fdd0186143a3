//! Message time-to-live (`src/core/ttl.rs`): the wheel's kill of a message whose index is in
//! the ready ring racing a receive that pops that index (model L1), the same with a full
//! dead-letter queue whose move is retried (L2), a release past the time-to-live racing the
//! lease's expiry (L2b), and the stats read while a kill runs (L3).
#![cfg(loom)]

mod common;

use common::{check, drops_every_body, Body, LEASE, TICK};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use visq::{DeathCause, ManualClock, Queue};

/// A one-slot queue on `clock` whose messages live one tick (and whose leases last ten, so
/// that a receive's delete does not race its own lease's end), with `dlq` as its dead-letter
/// queue if given.
fn ttl_queue(clock: &ManualClock, dlq: Option<&std::sync::Arc<Queue<Body>>>) -> Queue<Body> {
    let builder = Queue::builder()
        .capacity(1)
        .tick(TICK)
        .visibility_timeout(10 * LEASE)
        .message_ttl(TICK)
        .clock(clock.clone());
    match dlq {
        Some(dlq) => builder.dead_letter(dlq.clone(), 10),
        None => builder,
    }
    .build()
    .expect("valid settings")
}

/// A thread that receives once, deletes what it got and answers its body's value.
fn receive_and_delete(q: &Arc<Queue<Body>>) -> thread::JoinHandle<Option<u32>> {
    let q = q.clone();
    thread::spawn(move || {
        q.try_receive().map(|d| {
            q.delete(d.receipt()).expect("a fresh lease");
            d.into_body().value
        })
    })
}

/// Model L1: the message's time-to-live ends (the main thread advances the clock and runs the
/// wheel, which kills it in the ready ring and drops its body after the run) while a receive
/// (spawned) pops its index. Exactly one owns the body: the receive delivers it (it claimed
/// it before the clock moved) or it dies once (killed by the wheel, or by the receive that
/// claimed it after its expiry), never both. The one slot is freed exactly once: a send then
/// fits, and a second does not.
#[test]
fn ttl_kill_races_receive() {
    check("ttl_kill_races_receive", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(ttl_queue(&clock, None));
        q.send(Body::new(1, &live)).unwrap();

        let receiver = receive_and_delete(&q);
        clock.advance(TICK);
        q.stats(); // runs the wheel
        let received = receiver.join().unwrap();

        let stats = q.stats();
        match received {
            Some(1) => assert_eq!((stats.deleted, stats.ttl_expired), (1, 0)),
            None => assert_eq!(
                (stats.deleted, stats.ttl_expired, stats.received),
                (0, 1, 0)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 0));
        q.send(Body::new(2, &live))
            .expect("the slot was freed (or is reclaimed from the ring)");
        assert!(q.send(Body::new(3, &live)).is_err(), "freed once only");
        drops_every_body(q, &live);
    });
}

/// Model L2: as L1, with a full dead-letter queue: the wheel's kill finds it full, keeps the
/// body (the message is held, never delivered), and the move is retried once there is room;
/// meanwhile the receive pops the killed index and leaves it to the killer, which frees the
/// slot after the retried move (or the receive claimed the message before its expiry and
/// delivered it). Exactly one of delivered and dead-lettered (with `TimeToLive`), once.
#[test]
fn ttl_kill_with_full_dead_letter_queue_races_receive() {
    check("ttl_kill_with_full_dead_letter_queue_races_receive", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let dlq = std::sync::Arc::new(common::tiny_queue(1, &clock));
        dlq.send(Body::new(0, &live)).unwrap(); // full
        let q = Arc::new(ttl_queue(&clock, Some(&dlq)));
        q.send(Body::new(1, &live)).unwrap();

        let receiver = receive_and_delete(&q);
        clock.advance(TICK);
        q.stats(); // runs the wheel: the kill, refused by the full dead-letter queue
        let received = receiver.join().unwrap();

        // Make room, and let the retry run.
        let filler = dlq.try_receive().unwrap();
        dlq.delete(filler.receipt()).unwrap();
        drop(filler);
        clock.advance(TICK);
        let stats = q.stats();
        assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 0));
        let letters = dlq.dead_letters(2);
        match received {
            Some(1) => {
                assert_eq!(
                    (stats.deleted, stats.ttl_expired, stats.dead_lettered),
                    (1, 0, 0)
                );
                assert!(letters.is_empty());
            }
            None => {
                assert_eq!(
                    (stats.deleted, stats.ttl_expired, stats.dead_lettered),
                    (0, 1, 1)
                );
                assert_eq!(letters.len(), 1);
                assert_eq!(
                    (letters[0].body.value, &letters[0].cause),
                    (1, &DeathCause::TimeToLive)
                );
            }
            other => panic!("{other:?}"),
        }
        drop(letters);
        q.send(Body::new(2, &live)).expect("the slot was freed");
        assert!(q.send(Body::new(3, &live)).is_err(), "freed once only");
        drop(q);
        drop(dlq);
        assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0);
    });
}

/// Model L3: `stats` (spawned) reads while the main thread's wheel run kills the message and
/// drops its body, and a receive pops its index. No message is ever deleted here, so
/// `deleted` must read 0 whatever the interleaving (a dropped message is not a delete), and
/// `ttl_expired` at most 1; at rest, everything is exact.
#[test]
fn stats_while_a_ttl_kill_runs() {
    check("stats_while_a_ttl_kill_runs", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(ttl_queue(&clock, None));
        q.send(Body::new(1, &live)).unwrap();
        clock.advance(TICK);

        let reader = {
            let q = q.clone();
            thread::spawn(move || {
                let stats = q.stats();
                (stats.deleted, stats.ttl_expired)
            })
        };
        let received = q.try_receive().is_some();
        let (deleted, ttl_expired) = reader.join().unwrap();
        assert!(!received, "expired before the receive");
        assert_eq!(deleted, 0, "a dropped message is never counted as deleted");
        assert!(ttl_expired <= 1);
        let stats = q.stats();
        assert_eq!((stats.deleted, stats.ttl_expired, stats.sent), (0, 1, 1));
        drops_every_body(q, &live);
    });
}

/// Model L2b: a message with a one-tick time-to-live is leased for two ticks; a tick later
/// (its time-to-live over, its lease not) a release (spawned) races the main thread, which
/// moves the clock to the lease's deadline and runs the wheel that fires it. Exactly one ends
/// the lease (`released + expired == 1`, the release `Ok` exactly when it counted), and
/// whichever does finds the time-to-live over and kills the message instead of making it
/// visible, while the wheel may visit the slot: it dies once (`ttl_expired == 1`), is never
/// delivered again, and its slot is freed once.
#[test]
fn release_after_ttl_races_lease_expiry() {
    check("release_after_ttl_races_lease_expiry", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(
            Queue::builder()
                .capacity(1)
                .tick(TICK)
                .visibility_timeout(2 * LEASE)
                .message_ttl(TICK)
                .clock(clock.clone())
                .build()
                .expect("valid settings"),
        );
        q.send(Body::new(1, &live)).unwrap();
        let receipt = q.try_receive().unwrap().receipt();
        clock.advance(TICK);

        let releaser = {
            let q = q.clone();
            thread::spawn(move || q.release(receipt).is_ok())
        };
        clock.advance(TICK);
        q.stats(); // fires the lease's deadline
        let released = releaser.join().unwrap();

        let stats = q.stats();
        assert_eq!(stats.released + stats.expired, 1, "one end of the lease");
        assert_eq!(released, stats.released == 1);
        assert_eq!(
            (stats.ttl_expired, stats.deleted, stats.received),
            (1, 0, 1)
        );
        assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 0));
        assert!(q.try_receive().is_none(), "never delivered again");
        q.send(Body::new(2, &live)).expect("the slot was freed");
        assert!(q.send(Body::new(3, &live)).is_err(), "freed once only");
        drops_every_body(q, &live);
    });
}
