//! Priority levels (`src/core/ready.rs`): a parked receiver woken by a send at a level its
//! re-check must look at (model P1), and a receive scanning the levels while a release puts a
//! message back at the higher level and a send arrives at the lower (model P2).
#![cfg(loom)]

mod common;

use common::{check, drops_every_body, Body, LEASE, TICK};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;
use visq::{ManualClock, Queue, SendOptions};

const FOREVER: Duration = Duration::from_secs(24 * 3600);

/// A queue of `capacity` slots and two priority levels, as `common::tiny_queue`.
fn two_level_queue(capacity: usize) -> Queue<Body> {
    Queue::builder()
        .capacity(capacity)
        .priorities(2)
        .tick(TICK)
        .visibility_timeout(LEASE)
        .clock(ManualClock::new())
        .build()
        .expect("valid settings")
}

fn high() -> SendOptions {
    SendOptions::new().priority(1)
}

/// Model P1: a receiver parks on an empty two-level queue while the main thread sends at the
/// higher level. The receiver may find the queue empty and register only after the send's
/// push found no sleeper, so its re-check after registering must look at the level the
/// message went to (every level): the receiver is woken and receives it.
#[test]
fn send_at_higher_level_wakes_parked_receiver() {
    check("send_at_higher_level_wakes_parked_receiver", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(two_level_queue(1));
        let receiver = {
            let q = q.clone();
            thread::spawn(move || q.receive(FOREVER).map(|d| d.body().value))
        };
        q.send_with(Body::new(1, &live), &high()).unwrap();
        assert_eq!(receiver.join().unwrap(), Some(1), "woken for the message");
        drops_every_body(q, &live);
    });
}

/// Model P2: message 1 (level 1) is leased; then a spawned thread releases it (back to the
/// higher level), another sends message 2 at level 0, and the main thread's receive scans the
/// levels meanwhile. The scan may pass over a message made visible while it runs, but every
/// message is received exactly once (the scan's or the drain's after the joins), the released
/// one with receive count 2; and when the scan got nothing, the released message comes out
/// first: it kept its level.
#[test]
fn receive_scans_levels_while_release_and_send_race() {
    check("receive_scans_levels_while_release_and_send_race", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(two_level_queue(2));
        q.send_with(Body::new(1, &live), &high()).unwrap();
        let leased = q.try_receive().expect("visible").receipt();

        let scanner = {
            let q = q.clone();
            thread::spawn(move || q.try_receive().map(|d| (d.body().value, d.receive_count())))
        };
        let releaser = {
            let q = q.clone();
            thread::spawn(move || q.release(leased).expect("a fresh lease"))
        };
        q.send(Body::new(2, &live)).expect("room for it");
        let scanned = scanner.join().unwrap();
        releaser.join().unwrap();
        let drained: Vec<_> = std::iter::from_fn(|| q.try_receive())
            .map(|d| (d.body().value, d.receive_count()))
            .collect();

        match scanned {
            None => assert_eq!(
                drained,
                [(1, 2), (2, 1)],
                "the released message kept level 1"
            ),
            Some((1, 2)) => assert_eq!(drained, [(2, 1)]),
            Some((2, 1)) => assert_eq!(drained, [(1, 2)]),
            other => panic!("each message received once: {other:?}, then {drained:?}"),
        }
        let stats = q.stats();
        assert_eq!((stats.sent, stats.received, stats.in_flight), (2, 3, 2));
        drops_every_body(q, &live);
    });
}
