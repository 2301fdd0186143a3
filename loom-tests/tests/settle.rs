//! Settlements racing each other and the wheel: exactly one takes effect.
#![cfg(loom)]

mod common;

use common::{check, tiny_queue, Body, LEASE, TICK};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use visq::{ManualClock, ReceiptError};

/// (2) delete racing lease expiry: the delete wins and the message is gone, or expiry wins and
/// the message is delivered again; never both, never neither.
#[test]
fn delete_races_expiry() {
    check("delete_races_expiry", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let first = q.try_receive().unwrap();
        let receipt = first.receipt();
        drop(first);

        let expirer = {
            let (q, clock) = (q.clone(), clock.clone());
            thread::spawn(move || {
                clock.advance(LEASE + TICK);
                q.try_receive().map(|d| d.receipt())
            })
        };
        let deleted = q.delete(receipt);
        let redelivered = expirer.join().unwrap();

        match deleted {
            Ok(()) => assert!(redelivered.is_none(), "deleted and redelivered"),
            Err(e) => {
                assert!(matches!(e, ReceiptError::Expired | ReceiptError::Stale));
                let again = redelivered.or_else(|| q.try_receive().map(|d| d.receipt()));
                let again = again.expect("neither deleted nor redelivered");
                q.delete(again).unwrap();
            }
        }
        let stats = q.stats();
        assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
        drop(q);
        assert_eq!(live.load(Ordering::SeqCst), 0, "every body dropped once");
    });
}
