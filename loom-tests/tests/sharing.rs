//! Slots, rings and the wheel shared between threads.
#![cfg(loom)]

mod common;

use common::{check, drops_every_body, tiny_queue, Body, LEASE, TICK};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use visq::{ManualClock, Receipt, ReceiptError, SendError};

/// Model 1: send racing receive on a nearly full ring. The sender's second send fails with
/// `Full` only if the receiver had not yet deleted; every accepted message is received exactly
/// once, in send order, and every body is dropped once (refused ones come back to the caller).
#[test]
fn send_races_receive_when_nearly_full() {
    check("send_races_receive_when_nearly_full", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();

        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let d = q
                    .try_receive()
                    .expect("message 1 was sent before the spawn");
                assert_eq!(d.body().value, 1);
                q.delete(d.receipt()).unwrap();
            })
        };
        q.send(Body::new(2, &live)).expect("one slot is free");
        let third = match q.send(Body::new(3, &live)) {
            Ok(_) => true,
            Err(SendError::Full(body)) => {
                assert_eq!(body.value, 3, "the refused body comes back");
                false
            }
            Err(other) => panic!("unexpected {other:?}"),
        };
        consumer.join().unwrap();

        let mut expected = vec![2];
        if third {
            expected.push(3);
        }
        for value in expected {
            let d = q
                .try_receive()
                .expect("every accepted message is delivered");
            assert_eq!(d.body().value, value, "FIFO");
            q.delete(d.receipt()).unwrap();
        }
        assert!(q.try_receive().is_none());
        drops_every_body(q, &live);
    });
}

/// Model 6: a forged receipt (guessing the epoch the next lease will get) deletes while the
/// receiver clones the body. Loom checks every access to the body cell: the clone never
/// overlaps the drop. The guess may win (it is then the only settlement) or fail.
#[test]
fn forged_receipt_races_receiver_clone() {
    check("forged_receipt_races_receiver_clone", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        q.send(Body::new(1, &live)).unwrap();
        // Slot 0, epoch 1: exactly the receipt the first receive will issue.
        let guess = Receipt::from_u64(1 << 28);

        let forger = {
            let q = q.clone();
            thread::spawn(move || q.delete(guess))
        };
        let delivery = q.try_receive().expect("the message is visible");
        assert_eq!(delivery.body().value, 1, "the clone is intact");
        assert_eq!(delivery.receipt(), guess);
        let forged = forger.join().unwrap();

        let own = q.delete(delivery.receipt());
        match forged {
            Ok(()) => assert_eq!(own, Err(ReceiptError::Stale)),
            Err(e) => {
                assert_eq!(e, ReceiptError::Stale);
                assert_eq!(own, Ok(()));
            }
        }
        assert_eq!(q.stats().deleted, 1);
        drop(delivery);
        drops_every_body(q, &live);
    });
}

/// Model 7: two threads run the wheel at once (both receive after the leases expired). Each
/// expired message is made visible exactly once and delivered to exactly one receiver, and the
/// new leases (filed while the other thread may hold the wheel, so through its inbox) are
/// still on the wheel: both expire once their deadline has passed.
#[test]
fn two_threads_run_the_wheel() {
    check("two_threads_run_the_wheel", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();
        q.send(Body::new(2, &live)).unwrap();
        q.try_receive().unwrap();
        q.try_receive().unwrap();
        clock.advance(LEASE + TICK);

        let other = {
            let q = q.clone();
            thread::spawn(move || q.try_receive().map(|d| (d.body().value, d.receipt())))
        };
        let mine = q.try_receive().map(|d| (d.body().value, d.receipt()));
        let theirs = other.join().unwrap();

        let mut got: Vec<_> = mine.into_iter().chain(theirs).collect();
        while let Some(d) = q.try_receive() {
            got.push((d.body().value, d.receipt()));
        }
        got.sort_by_key(|&(value, _)| value);
        assert_eq!(got.iter().map(|&(v, _)| v).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(q.stats().expired, 2);

        // The second leases are on the wheel: once due, both expire and are visible again.
        clock.advance(LEASE + TICK);
        let stats = q.stats();
        assert_eq!(
            (stats.ready, stats.in_flight, stats.expired),
            (2, 0, 4),
            "a lease was lost"
        );
        drops_every_body(q, &live);
    });
}

/// Model 7b: a lease taken while another thread holds the wheel, which it runs only to expire
/// the one lease there was. The new lease's notice can reach the wheel only through the inbox,
/// after the owner drained it and with nothing else filed (so the owner publishes "nothing
/// due"): the owner must find it when it lets go of the claim. Once the lease's deadline has
/// passed, the next operation finds the wheel due and redelivers the message. A notice left in
/// the inbox instead would wait for the next wheel run, and on a queue where nothing else
/// happens there is none: `next_due` says nothing is due, so no operation runs the wheel, and a
/// blocked receiver sleeps its whole wait (loom: the final receive, made blocking, deadlocks).
#[test]
fn lease_while_other_thread_holds_the_wheel() {
    check("lease_while_other_thread_holds_the_wheel", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        q.send(Body::new(1, &live)).unwrap();
        q.try_receive().unwrap();
        clock.advance(LEASE);

        let receiver = {
            let q = q.clone();
            thread::spawn(move || q.try_receive().map(|d| d.receive_count()))
        };
        // Runs the wheel (expiring the first lease), or finds the receiver running it.
        q.stats();
        // `None` when this thread held the wheel and had not yet made the message visible.
        let leased = receiver.join().unwrap();
        assert!(matches!(leased, None | Some(2)), "{leased:?}");

        // Past the second lease's deadline: the wheel knows it, so it expires now.
        clock.advance(LEASE);
        let d = q
            .try_receive()
            .expect("the lease taken while the other thread held the wheel expires once due");
        assert_eq!(d.receive_count(), if leased.is_some() { 3 } else { 2 });
        let expired = q.stats().expired;
        assert_eq!(expired, if leased.is_some() { 2 } else { 1 });
        drop(d);
        drops_every_body(q, &live);
    });
}
