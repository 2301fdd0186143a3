//! The at-most-once receive (`Queue::try_take`) racing a leasing receiver and a sender over
//! the slot it frees (model T1), and racing the wheel run that makes a delayed message
//! visible (model T2), and a blocking take racing a send and a close (model T3). See
//! `src/core/queue.rs` (`Queue::pop_and_take`).
#![cfg(loom)]

mod common;

use common::{check, drops_every_body, tiny_queue, Body, TICK};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;
use visq::ManualClock;

const FOREVER: Duration = Duration::from_secs(24 * 3600);

/// Model T1: a take (main thread) races a receive that deletes what it gets and then sends
/// into the one-slot queue (spawned). The ready-ring pop decides who gets the message: exactly
/// one of them has it, with receive count 1 (the take may then get the second message, sent
/// after the receiver's delete). The spawned send gets the slot only once the
/// take or the delete has emptied it (loom's cell tracking checks that the taker has moved the
/// body out before a sender can write the freed slot). Stats: one receive and one delete for
/// the first message, whoever got it; each body dropped once.
#[test]
fn take_races_receive_and_send() {
    check("take_races_receive_and_send", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        q.send(Body::new(1, &live)).unwrap();

        let receiver = {
            let (q, live) = (q.clone(), live.clone());
            thread::spawn(move || {
                let received = q.try_receive().map(|d| {
                    q.delete(d.receipt()).expect("a fresh lease");
                    (d.receive_count(), d.into_body().value)
                });
                let sent = q.send(Body::new(2, &live)).is_ok();
                (received, sent)
            })
        };
        let taken = q
            .try_take()
            .map(|t| (t.receive_count(), t.into_body().value));
        let (received, sent) = receiver.join().unwrap();

        let took_the_second = match (taken, received) {
            (Some((1, 1)), None) | (None, Some((1, 1))) => false,
            // The receiver got the first, deleted it and sent the second, which the take got.
            (Some((1, 2)), Some((1, 1))) => true,
            other => panic!("each message handed out once, the first first: {other:?}"),
        };
        if received.is_some() {
            assert!(sent, "the delete freed the slot before the send");
        }
        let handed_out = 1 + u64::from(took_the_second);
        let stats = q.stats();
        assert_eq!(stats.received, handed_out);
        assert_eq!(stats.deleted, handed_out, "each taken or deleted, once");
        assert_eq!(stats.sent, 1 + u64::from(sent));
        assert_eq!(stats.ready as u64, stats.sent - handed_out);
        drops_every_body(q, &live);
    });
}

/// Model T2: a delayed message comes due (the clock is past its delay) and a take (spawned)
/// races the main thread, which runs the wheel (`stats`) that makes it visible. The take must
/// get it: it was due before the take began, so the take runs the wheel itself or waits for
/// the holder's run, and then pops. The slot is then free again.
#[test]
fn take_races_delay_ending() {
    check("take_races_delay_ending", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        q.send_delayed(Body::new(7, &live), TICK).unwrap();
        clock.advance(2 * TICK);
        let taker = {
            let q = q.clone();
            thread::spawn(move || q.try_take().map(|t| t.into_body().value))
        };
        // Runs the wheel (making the message visible), or finds the taker running it.
        q.stats();
        assert_eq!(taker.join().unwrap(), Some(7), "the delay had ended");
        let stats = q.stats();
        assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 0));
        assert_eq!((stats.received, stats.deleted), (1, 1));
        q.send(Body::new(8, &live)).expect("the slot is free again");
        drops_every_body(q, &live);
    });
}

/// Model T3: a blocking take (spawned) waits on an empty queue while the main thread sends one
/// message and closes the queue. A close only stops sends: the take must get the message if it
/// was sent (it always is here, before the close), and it must never sleep through the close
/// (a lost wake-up would leave it blocked forever, which loom reports as a deadlock). A second
/// take on the closed, drained queue returns at once.
#[test]
fn take_races_send_and_close() {
    check("take_races_send_and_close", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let taker = {
            let q = q.clone();
            thread::spawn(move || {
                let first = q.take(FOREVER).map(|t| t.into_body().value);
                let second = q.take(FOREVER).map(|t| t.into_body().value);
                (first, second)
            })
        };
        q.send(Body::new(5, &live)).unwrap();
        q.close();
        assert_eq!(
            taker.join().unwrap(),
            (Some(5), None),
            "the close drains what was sent, then ends the wait"
        );
        let stats = q.stats();
        assert_eq!((stats.sent, stats.received, stats.deleted), (1, 1, 1));
        drops_every_body(q, &live);
    });
}
