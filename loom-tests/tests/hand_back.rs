//! `Queue::hand_back` (a lease given back unused) racing the lease's expiry: exactly one ends
//! the lease, and only the winner touches the receive count.
#![cfg(loom)]

mod common;

use common::{check, drops_every_body, tiny_queue, Body, LEASE, TICK};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use visq::{ManualClock, ReceiptError};

/// Model 18: a hand-back racing expiry. If the hand-back wins, the message is visible again
/// as if never received (receive count 1 on the next delivery) and `released == 1`; if
/// expiry wins, the hand-back fails `Expired`/`Stale`, `expired == 1`, and the redelivery
/// counts both receives (2). Never both, never neither; each body is dropped once.
///
/// Bounded by the default `LOOM_MAX_PREEMPTIONS` (two threads, one message).
#[test]
fn hand_back_races_expiry() {
    check("hand_back_races_expiry", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let receipt = q.try_receive().expect("a visible message").receipt();

        let expirer = {
            let (q, clock) = (q.clone(), clock.clone());
            thread::spawn(move || {
                clock.advance(LEASE + TICK);
                q.stats().expired
            })
        };
        let handed_back = q.hand_back(receipt);
        expirer.join().unwrap();

        let stats = q.stats();
        assert_eq!(
            stats.released + stats.expired,
            1,
            "exactly one ended the lease"
        );
        let expected_count = match handed_back {
            Ok(()) => {
                assert_eq!(stats.released, 1);
                1
            }
            Err(e) => {
                assert!(matches!(e, ReceiptError::Expired | ReceiptError::Stale));
                assert_eq!(stats.expired, 1);
                2
            }
        };
        let d = q.try_receive().expect("the message is visible again");
        assert_eq!(
            d.receive_count(),
            expected_count,
            "the count restored by the winner only"
        );
        q.delete(d.receipt()).unwrap();
        assert!(q.try_receive().is_none(), "visible exactly once");
        let stats = q.stats();
        assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
        drop(d);
        drops_every_body(q, &live);
    });
}
