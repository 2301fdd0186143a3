//! Model 8: a receiver parking while something makes it runnable. A lost wake-up would leave
//! it blocked forever, which loom reports (its condition variable never times out).
#![cfg(loom)]

mod common;

use common::{check, tiny_queue, Body, LEASE, TICK};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;
use visq::ManualClock;

const FOREVER: Duration = Duration::from_secs(24 * 3600);

/// 8a: a send wakes the parked receiver.
#[test]
fn send_wakes_parked_receiver() {
    check("send_wakes_parked_receiver", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let receiver = {
            let q = q.clone();
            thread::spawn(move || q.receive(FOREVER).map(|d| d.body().value))
        };
        q.send(Body::new(1, &live)).unwrap();
        assert_eq!(receiver.join().unwrap(), Some(1));
        drop(q);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    });
}

/// 8b: a close wakes the parked receiver, which returns `None`.
#[test]
fn close_wakes_parked_receiver() {
    check("close_wakes_parked_receiver", || {
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let receiver = {
            let q = q.clone();
            thread::spawn(move || q.receive(FOREVER).is_none())
        };
        q.close();
        assert!(receiver.join().unwrap());
    });
}

/// 8c: a lease expiring (found by another thread's operation after the clock moved) wakes the
/// parked receiver, which gets the message again.
#[test]
fn expiry_wakes_parked_receiver() {
    check("expiry_wakes_parked_receiver", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        q.send(Body::new(1, &live)).unwrap();
        q.try_receive().unwrap();
        let receiver = {
            let q = q.clone();
            thread::spawn(move || q.receive(FOREVER).map(|d| d.receive_count()))
        };
        clock.advance(LEASE + TICK);
        // Runs the wheel, or finds the receiver running it (which then re-checks the clock).
        q.stats();
        assert_eq!(receiver.join().unwrap(), Some(2));
        assert_eq!(q.stats().expired, 1);
        drop(q);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    });
}
