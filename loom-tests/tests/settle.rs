//! Settlements racing each other and the wheel: exactly one takes effect.
#![cfg(loom)]

mod common;

use common::{check, tiny_queue, Body, LEASE, TICK};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;
use visq::{ManualClock, Queue, ReceiptError};

/// Receives the one message of `q` on `clock`, forgetting the body.
fn lease(q: &Queue<Body>) -> visq::Receipt {
    q.try_receive().expect("a visible message").receipt()
}

/// Asserts the queue holds nothing and every body was dropped once.
fn assert_empty_and_dropped(q: Arc<Queue<Body>>, live: &AtomicUsize) {
    let stats = q.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
    drop(q);
    assert_eq!(live.load(Ordering::SeqCst), 0, "every body dropped once");
}

/// Deletes the message's second delivery: the one a racing thread already received
/// (`redelivered`), or else the one visible now.
fn delete_second_delivery(q: &Queue<Body>, redelivered: Option<visq::Receipt>) {
    match redelivered {
        Some(again) => q.delete(again).unwrap(),
        None => drain_one(q, 2),
    }
}

/// Deletes whatever `q` delivers now, asserting there is exactly one and its receive count.
fn drain_one(q: &Queue<Body>, receive_count: u32) {
    let d = q.try_receive().expect("the message is visible again");
    assert_eq!(d.receive_count(), receive_count);
    q.delete(d.receipt()).unwrap();
    assert!(q.try_receive().is_none());
}

/// Runs `q.change_visibility(receipt, timeout)` on a new thread.
fn spawn_change_visibility(
    q: &Arc<Queue<Body>>,
    receipt: visq::Receipt,
    timeout: Duration,
) -> thread::JoinHandle<Result<(), ReceiptError>> {
    let q = q.clone();
    thread::spawn(move || q.change_visibility(receipt, timeout))
}

/// Model 2: delete racing lease expiry. The delete wins and the message is gone, or expiry
/// wins and the message is delivered again; never both, never neither.
#[test]
fn delete_races_expiry() {
    check("delete_races_expiry", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let receipt = lease(&q);

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
            Ok(()) => {
                assert!(redelivered.is_none(), "deleted and redelivered");
                assert!(q.try_receive().is_none(), "deleted and still visible");
            }
            Err(e) => {
                assert!(matches!(e, ReceiptError::Expired | ReceiptError::Stale));
                delete_second_delivery(&q, redelivered);
            }
        }
        let stats = q.stats();
        assert_eq!(
            stats.deleted + stats.expired,
            if deleted.is_ok() { 1 } else { 2 }
        );
        assert_empty_and_dropped(q, &live);
    });
}

/// Model 3: release racing expiry. Exactly one of them ends the lease; the message is visible
/// exactly once afterwards, with receive count 2.
#[test]
fn release_races_expiry() {
    check("release_races_expiry", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let receipt = lease(&q);

        let expirer = {
            let (q, clock) = (q.clone(), clock.clone());
            thread::spawn(move || {
                clock.advance(LEASE + TICK);
                q.stats().expired
            })
        };
        let released = q.release(receipt);
        expirer.join().unwrap();

        let stats = q.stats();
        assert_eq!(
            stats.released + stats.expired,
            1,
            "exactly one ended the lease"
        );
        assert_eq!(released.is_ok(), stats.released == 1);
        drain_one(&q, 2);
        assert_empty_and_dropped(q, &live);
    });
}

/// Model 4a: extending a lease while the wheel fires its old deadline. A successful extension
/// is never followed by a redelivery before the new deadline; a failed one means the lease
/// expired.
#[test]
fn extend_races_wheel_firing() {
    check("extend_races_wheel_firing", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let receipt = lease(&q);

        let wheel = {
            let (q, clock) = (q.clone(), clock.clone());
            thread::spawn(move || {
                clock.advance(LEASE);
                q.try_receive().map(|d| d.receipt())
            })
        };
        let extended = q.change_visibility(receipt, 3 * TICK);
        let redelivered = wheel.join().unwrap();

        match extended {
            Ok(()) => {
                assert!(redelivered.is_none(), "extended, yet redelivered");
                assert!(q.try_receive().is_none());
                q.delete(receipt).unwrap();
            }
            Err(e) => {
                // Expired, or Stale if the message was already delivered again.
                assert!(matches!(e, ReceiptError::Expired | ReceiptError::Stale));
                delete_second_delivery(&q, redelivered);
            }
        }
        assert_empty_and_dropped(q, &live);
    });
}

/// Model 4b: shortening a lease while the wheel runs: the shortened deadline fires on time even
/// though the wheel had the slot filed at the original, later one.
#[test]
fn shorten_races_wheel_run() {
    check("shorten_races_wheel_run", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q: Arc<Queue<Body>> = Arc::new(
            Queue::builder()
                .capacity(2)
                .tick(TICK)
                .visibility_timeout(4 * TICK)
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        q.send(Body::new(1, &live)).unwrap();
        let receipt = lease(&q);

        let wheel = {
            let (q, clock) = (q.clone(), clock.clone());
            thread::spawn(move || {
                clock.advance(TICK);
                q.try_receive().map(|d| d.receipt())
            })
        };
        q.change_visibility(receipt, TICK).unwrap();
        let shortened_by = clock.now();
        let redelivered = wheel.join().unwrap();

        // The new deadline is at most one tick after the call returned: by then it must fire.
        let due = shortened_by + TICK;
        clock.advance(due.saturating_sub(clock.now()));
        delete_second_delivery(&q, redelivered);
        assert_empty_and_dropped(q, &live);
    });
}

/// Model 4c: shortening a lease while the wheel visits it. The lease was extended first, which
/// tells the wheel nothing (the slot stays filed at the original, earlier deadline); when that
/// tick comes the wheel visits the slot and re-files it at the extended deadline. Shortening
/// the lease meanwhile must still fire on time, whether the wheel has the slot filed earlier
/// (no notice needed), is visiting it (the wheel's `filed = NEVER` + fence against the
/// operation's deadline store + fence), or has re-filed it at the extended, later deadline
/// (a notice is needed).
#[test]
fn shorten_races_wheel_visit() {
    check("shorten_races_wheel_visit", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let receipt = lease(&q); // deadline tick 1, filed at 1
        q.change_visibility(receipt, 4 * TICK).unwrap(); // deadline tick 4, still filed at 1
        clock.advance(TICK); // the filed tick has come; the lease has not ended

        let wheel = {
            let q = q.clone();
            // Runs the wheel: visits the slot and re-files it at its deadline.
            thread::spawn(move || q.try_receive().map(|d| d.receipt()))
        };
        q.change_visibility(receipt, TICK).unwrap(); // deadline tick 2
        let redelivered = wheel.join().unwrap();
        assert!(redelivered.is_none(), "redelivered before any deadline");

        // The shortened deadline has come: the wheel must fire it now, not at tick 4.
        clock.advance(TICK);
        drain_one(&q, 2);
        assert_empty_and_dropped(q, &live);
    });
}

/// A queue on `clock` holding one leased message whose deadline is tick 4 and which the wheel
/// has filed at tick 4 (leased with deadline tick 1, extended to tick 4, which told the wheel
/// nothing, then re-filed by the wheel's visit at tick 1); the clock is at tick 1.
fn lease_filed_at_tick_4(
    clock: &ManualClock,
    live: &Arc<AtomicUsize>,
) -> (Arc<Queue<Body>>, visq::Receipt) {
    let q = Arc::new(tiny_queue(2, clock));
    q.send(Body::new(1, live)).unwrap();
    let receipt = lease(&q);
    q.change_visibility(receipt, 4 * TICK).unwrap();
    clock.advance(TICK);
    assert!(q.try_receive().is_none()); // runs the wheel: re-filed at tick 4
    (q, receipt)
}

/// Model 4d: two threads shorten the same lease at once to the same tick (a worker and its
/// heartbeat), below the tick the wheel has the slot filed at. The second deadline CAS replaces
/// the first one's equal value, which is no move earlier; so if the first call's version CAS
/// fails because of the second, the first must still tell the wheel on its retry (it replaced
/// a later deadline on its first try), or nobody does. The lease ends at the shortened tick,
/// once.
#[test]
fn two_shortenings_race_into_the_inbox() {
    check("two_shortenings_race_into_the_inbox", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let (q, receipt) = lease_filed_at_tick_4(&clock, &live);

        let shorten = || spawn_change_visibility(&q, receipt, TICK); // deadline tick 2
        let (a, b) = (shorten(), shorten());
        assert_eq!((a.join().unwrap(), b.join().unwrap()), (Ok(()), Ok(())));

        // Tick 2: the shortened lease has ended, not the one filed at tick 4.
        clock.advance(TICK);
        drain_one(&q, 2);
        assert_empty_and_dropped(q, &live);
    });
}

/// Model 4e: two changes of the same lease to different ticks, both before the tick the wheel
/// has the slot filed at: whichever lands second extends or shortens the first. A call that
/// only replaced earlier deadlines skips the wheel (no fence, no look at `filed`); when the
/// later target lands first, both calls move the deadline earlier and both notify, and the
/// slot enters the wheel's inbox once (the notifier whose CAS marks it pushes it). Whatever
/// the order, the lease ends by the later of the two deadlines, not before the earlier one,
/// and is redelivered once.
#[test]
fn shorten_races_extend() {
    check("shorten_races_extend", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let (q, receipt) = lease_filed_at_tick_4(&clock, &live);

        let change = |timeout| spawn_change_visibility(&q, receipt, timeout);
        let (shorten, extend) = (change(TICK), change(2 * TICK)); // ticks 2 and 3
        assert_eq!(
            (shorten.join().unwrap(), extend.join().unwrap()),
            (Ok(()), Ok(()))
        );
        assert!(
            q.try_receive().is_none(),
            "redelivered before either deadline"
        );

        clock.advance(2 * TICK); // tick 3: both deadlines have come
        drain_one(&q, 2);
        assert_empty_and_dropped(q, &live);
    });
}

/// Model 5: a stale receipt (from before a redelivery) used concurrently with the new holder's
/// delete: the stale one always fails, the current one always succeeds.
#[test]
fn stale_receipt_races_new_holder() {
    check("stale_receipt_races_new_holder", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(2, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let stale = lease(&q);
        clock.advance(LEASE + TICK);
        let current = lease(&q);

        let old_holder = {
            let q = q.clone();
            thread::spawn(move || (q.delete(stale), q.release(stale)))
        };
        let deleted = q.delete(current);
        let (stale_delete, stale_release) = old_holder.join().unwrap();

        assert_eq!(deleted, Ok(()));
        assert_eq!(stale_delete, Err(ReceiptError::Stale));
        assert_eq!(stale_release, Err(ReceiptError::Stale));
        assert_empty_and_dropped(q, &live);
    });
}

/// Model 10: slot reuse after delete (ABA): a receipt for a deleted message never acts on the
/// next message stored in the same slot.
#[test]
fn stale_receipt_after_slot_reuse() {
    check("stale_receipt_after_slot_reuse", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let old = lease(&q);
        q.delete(old).unwrap();

        let stale_holder = {
            let q = q.clone();
            thread::spawn(move || {
                (
                    q.delete(old),
                    q.release(old),
                    q.change_visibility(old, TICK),
                )
            })
        };
        q.send(Body::new(2, &live)).unwrap();
        let d = q.try_receive().unwrap();
        assert_eq!(d.body().value, 2);
        let current = d.receipt();
        drop(d);
        let stale = stale_holder.join().unwrap();

        assert_eq!(stale.0, Err(ReceiptError::Stale));
        assert_eq!(stale.1, Err(ReceiptError::Stale));
        assert_eq!(stale.2, Err(ReceiptError::Stale));
        q.delete(current).unwrap();
        assert_empty_and_dropped(q, &live);
    });
}

/// Model 11: a change_visibility with a receipt that is valid when it starts, racing the lease's
/// expiry and the message's next receive (say a heartbeat thread extending a lease that has just
/// run out). Whatever it returns, it must leave the new holder's lease alone: the new receipt
/// stays valid until its own deadline.
///
/// This caught a real bug: `change_visibility` stored the new deadline before its version CAS,
/// i.e. before it knew the lease was still current, so a late call overwrote the deadline of
/// the slot's next lease. It now changes the deadline only by a CAS from this lease's own
/// deadline, confirmed by re-reading the word.
#[test]
fn late_change_visibility_races_next_lease() {
    check("late_change_visibility_races_next_lease", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let old = lease(&q); // deadline tick 1

        let old_holder = spawn_change_visibility(&q, old, TICK);
        clock.advance(LEASE + TICK); // tick 2: the old lease has ended
        let d = q
            .try_receive()
            .expect("the expired message is visible again");
        assert_eq!(d.receive_count(), 2);
        let current = d.receipt();
        drop(d);
        let late = old_holder.join().unwrap();

        // Whether the late call landed first (it then set the deadline it already had, tick 1)
        // or failed, the new lease runs to tick 3 and its receipt is valid at tick 2.
        assert!(matches!(
            late,
            Ok(()) | Err(ReceiptError::Expired | ReceiptError::Stale)
        ));
        assert_eq!(
            q.delete(current),
            Ok(()),
            "the new holder's lease was cut short"
        );
        assert_empty_and_dropped(q, &live);
    });
}

/// Model 11b: a late change_visibility racing the end of its lease by a release and the
/// message's next receive *in the same tick*, so that the next lease's deadline equals the
/// deadline the late call read. The late call must still leave the new lease's deadline alone.
#[test]
fn late_change_visibility_races_same_tick_release() {
    check("late_change_visibility_races_same_tick_release", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = Arc::new(tiny_queue(1, &clock));
        q.send(Body::new(1, &live)).unwrap();
        let old = lease(&q); // deadline tick 1

        let old_holder = spawn_change_visibility(&q, old, 3 * TICK);
        q.release(old).ok();
        let d = q.try_receive();
        let late = old_holder.join().unwrap();
        assert!(matches!(
            late,
            Ok(()) | Err(ReceiptError::Expired | ReceiptError::Stale)
        ));
        if let Some(d) = d {
            let current = d.receipt();
            drop(d);
            clock.advance(LEASE + TICK); // tick 2: the new lease (deadline tick 1) has ended
            assert_eq!(
                q.delete(current),
                Err(ReceiptError::Expired),
                "the new holder's lease was moved by a call on the old one"
            );
        }
        while let Some(d) = q.try_receive() {
            q.delete(d.receipt()).unwrap();
        }
        assert_empty_and_dropped(q, &live);
    });
}
