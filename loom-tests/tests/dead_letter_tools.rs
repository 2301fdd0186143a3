//! Models 12 to 17: `nack` with a delay racing expiry and delete, and the dead-letter tools
//! (`dead_letters`, `redrive`) racing receivers of the dead-letter queue.
#![cfg(loom)]

mod common;

use common::{check, tiny_queue, Body, LEASE, TICK};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use visq::{DeathCause, ManualClock, MessageId, Nack, Queue, ReceiptError, SendError, Stats};

/// A dead-letter queue of `capacity` slots (a std `Arc`, as the builder takes it: its reference
/// count is not part of the model).
fn dead_letter_queue(capacity: usize, clock: &ManualClock) -> std::sync::Arc<Queue<Body>> {
    std::sync::Arc::new(tiny_queue(capacity, clock))
}

/// A one-slot queue with a one-tick lease whose messages go to `dlq` after `max_receives`
/// receives.
fn source_queue(
    clock: &ManualClock,
    dlq: &std::sync::Arc<Queue<Body>>,
    max_receives: u32,
) -> Arc<Queue<Body>> {
    Arc::new(
        Queue::builder()
            .capacity(1)
            .tick(TICK)
            .visibility_timeout(LEASE)
            .dead_letter(dlq.clone(), max_receives)
            .clock(clock.clone())
            .build()
            .unwrap(),
    )
}

/// Sends `value` to `q` (whose `max_receives` is 1) and kills it: the first receive nacks it
/// with the reason "bad", so it moves to the dead-letter queue at once. Returns its id in `q`.
fn kill(q: &Queue<Body>, value: u32, live: &Arc<AtomicUsize>) -> MessageId {
    let before = q.stats().dead_lettered;
    let id = q.send(Body::new(value, live)).unwrap();
    let d = q.try_receive().unwrap();
    q.nack(d.receipt(), Nack::now().reason("bad")).unwrap();
    assert_eq!(q.stats().dead_lettered, before + 1);
    id
}

/// The stats of a quiescent queue, checked: nothing is left `Delayed`, and every message it
/// accepted is still held or has left exactly once (deleted, dead-lettered or redriven).
fn balanced(q: &Queue<Body>) -> Stats {
    let s = q.stats();
    assert_eq!(s.delayed, 0, "nothing waits when the models end");
    assert_eq!(
        s.sent,
        (s.ready + s.in_flight) as u64 + s.deleted + s.dead_lettered + s.redriven,
        "every accepted message is held or has left exactly once: {s:?}"
    );
    s
}

/// Receives the one visible message of `q`, asserting its body and receive count, deletes it,
/// and asserts nothing else is visible.
fn drain_one(q: &Queue<Body>, value: u32, receive_count: u32) {
    let d = q.try_receive().expect("the message is visible");
    assert_eq!((d.body().value, d.receive_count()), (value, receive_count));
    q.delete(d.receipt()).unwrap();
    assert!(q.try_receive().is_none(), "delivered twice");
}

/// Receives and deletes every message visible in `q`; returns their `(value, receive count)`,
/// sorted.
fn drain_all(q: &Queue<Body>) -> Vec<(u32, u32)> {
    let mut seen = Vec::new();
    while let Some(d) = q.try_receive() {
        seen.push((d.body().value, d.receive_count()));
        q.delete(d.receipt()).unwrap();
    }
    seen.sort_unstable();
    seen
}

/// Model 12 (a): a delayed nack racing the expiry of the same lease, which another thread's
/// operation fires after the clock has passed the deadline. Exactly one of them ends the
/// lease. If the nack wins, the message stays invisible for the delay and is then delivered
/// again with receive count 2; if the expiry wins, it is delivered again at once. Never both
/// (a duplicate), never neither (a lost message).
#[test]
fn delayed_nack_races_expiry() {
    check("delayed_nack_races_expiry", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let dlq = dead_letter_queue(1, &clock);
        let q = source_queue(&clock, &dlq, 2);
        q.send(Body::new(1, &live)).unwrap();
        let receipt = q.try_receive().unwrap().receipt(); // deadline tick 1

        let nacker = {
            let q = q.clone();
            // A deadline at tick 3 or later: after the clock the main thread sets.
            thread::spawn(move || q.nack(receipt, Nack::after(3 * TICK).reason("busy")))
        };
        clock.advance(LEASE + TICK); // tick 2: the lease has run out
        let redelivered = q.try_receive(); // runs the wheel
        let nacked = nacker.join().unwrap();

        let stats = q.stats();
        assert_eq!(
            stats.released + stats.expired,
            1,
            "exactly one ended the lease"
        );
        assert_eq!(nacked.is_ok(), stats.released == 1);
        match nacked {
            Ok(()) => {
                assert!(
                    redelivered.is_none(),
                    "nacked, yet visible before the delay"
                );
                assert_eq!(stats.delayed, 1);
                clock.advance(3 * TICK); // tick 5: past any deadline the nack can have set
                drain_one(&q, 1, 2);
            }
            Err(e) => {
                assert!(matches!(e, ReceiptError::Expired | ReceiptError::Stale));
                let d = redelivered.expect("expired, so visible again at once");
                assert_eq!((d.body().value, d.receive_count()), (1, 2));
                q.delete(d.receipt()).unwrap();
                drop(d);
                clock.advance(3 * TICK);
                assert!(q.try_receive().is_none(), "delivered twice");
            }
        }
        let stats = balanced(&q);
        assert_eq!((stats.sent, stats.received, stats.deleted), (1, 2, 1));
        assert_eq!(balanced(&dlq).sent, 0);
        drop(q);
        drop(dlq);
        assert_eq!(live.load(Ordering::SeqCst), 0, "every body dropped once");
    });
}

/// Model 13 (a): the same race on the message's last receive (`max_receives` 1): whichever
/// ends the lease moves the message to the dead-letter queue, exactly once, with its own
/// cause: the nack's reason if the nack won, `Expired` otherwise. A send racing the move gets
/// the source's one slot only once the move has taken the body out and freed it.
#[test]
fn nack_on_last_receive_races_expiry() {
    check("nack_on_last_receive_races_expiry", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let dlq = dead_letter_queue(1, &clock);
        let q = source_queue(&clock, &dlq, 1);
        let id = q.send(Body::new(1, &live)).unwrap();
        let receipt = q.try_receive().unwrap().receipt();

        let nacker = {
            let q = q.clone();
            thread::spawn(move || q.nack(receipt, Nack::after(3 * TICK).reason("busy")))
        };
        clock.advance(LEASE + TICK);
        let redelivered = q.try_receive().map(|d| d.receive_count());
        // The one slot is free again once the move has landed.
        let sent = q.send(Body::new(2, &live)).is_ok();
        let nacked = nacker.join().unwrap();

        assert_eq!(
            redelivered, None,
            "a message past max_receives was delivered"
        );
        let stats = balanced(&q);
        assert_eq!(stats.released + stats.expired, 1);
        assert_eq!(nacked.is_ok(), stats.released == 1);
        assert_eq!(stats.dead_lettered, 1);
        assert_eq!(stats.sent, 1 + u64::from(sent));
        assert_eq!(drain_all(&q), if sent { vec![(2, 1)] } else { vec![] });

        let letters = dlq.dead_letters(4);
        assert_eq!(letters.len(), 1, "moved exactly once");
        let letter = &letters[0];
        assert_eq!(
            (
                letter.body.value,
                letter.source,
                letter.id,
                letter.receive_count
            ),
            (1, q.id(), id, 1)
        );
        let cause = if nacked.is_ok() {
            DeathCause::Released {
                reason: Some("busy".into()),
            }
        } else {
            DeathCause::Expired
        };
        assert_eq!(letter.cause, cause);
        drop(letters);
        drain_one(&dlq, 1, 1);
        balanced(&dlq);
        drop(q);
        drop(dlq);
        assert_eq!(live.load(Ordering::SeqCst), 0, "every body dropped once");
    });
}

/// Model 14 (a): a delayed nack racing a delete with the same receipt, and then the wheel,
/// which the deleting thread runs (the clock is past the lease's deadline, and perhaps the
/// nack's) while the nack may still be storing its deadline and filing it. Exactly one
/// settlement wins; a nacked message is delivered again once, with receive count 2.
#[test]
fn delayed_nack_races_delete() {
    check("delayed_nack_races_delete", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let dlq = dead_letter_queue(1, &clock);
        let q = source_queue(&clock, &dlq, 2);
        q.send(Body::new(1, &live)).unwrap();
        let receipt = q.try_receive().unwrap().receipt();

        let nacker = {
            let q = q.clone();
            thread::spawn(move || q.nack(receipt, Nack::after(TICK)))
        };
        let deleted = q.delete(receipt);
        clock.advance(LEASE + TICK); // tick 2
        q.stats(); // runs the wheel
        let nacked = nacker.join().unwrap();

        assert!(
            deleted.is_ok() != nacked.is_ok(),
            "exactly one settlement wins: {deleted:?} {nacked:?}"
        );
        if deleted.is_ok() {
            // Stale, or Expired if it read the lease before the delete and the clock after
            // the advance.
            assert!(matches!(
                nacked,
                Err(ReceiptError::Stale | ReceiptError::Expired)
            ));
        } else {
            assert_eq!(deleted, Err(ReceiptError::Stale));
            // The nack's deadline is tick 1 or tick 3: by tick 3 it has come.
            clock.advance(TICK);
            drain_one(&q, 1, 2);
        }
        let stats = balanced(&q);
        assert_eq!((stats.sent, stats.deleted, stats.expired), (1, 1, 0));
        assert_eq!(stats.released, u64::from(nacked.is_ok()));
        assert_eq!(balanced(&dlq).sent, 0);
        drop(q);
        drop(dlq);
        assert_eq!(live.load(Ordering::SeqCst), 0, "every body dropped once");
    });
}

/// Model 15 (b): `dead_letters` racing a receiver that receives and deletes twice, on a
/// dead-letter queue holding two dead letters. The inspector owns each slot while it clones
/// the body and reads the death record (loom checks that nobody frees either meanwhile), so
/// every letter it returns is whole: the body and record of one message. A receive finds
/// nothing only while the inspector holds the last letter. Inspection is no delivery: a letter
/// nobody received is listed, and is still visible afterwards with receive count 1. Every
/// letter is delivered at most once, and every clone and body is dropped exactly once.
#[test]
fn dead_letters_races_receive_and_delete() {
    check("dead_letters_races_receive_and_delete", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let dlq = dead_letter_queue(2, &clock);
        let q = source_queue(&clock, &dlq, 1);
        let ids = [kill(&q, 1, &live), kill(&q, 2, &live)];
        clock.advance(TICK);

        let inspector = {
            let dlq = dlq.clone();
            thread::spawn(move || dlq.dead_letters(4))
        };
        let mut received = Vec::new();
        for _ in 0..2 {
            if let Some(d) = dlq.try_receive() {
                assert_eq!(d.receive_count(), 1);
                received.push(d.body().value);
                dlq.delete(d.receipt()).unwrap();
            }
        }
        let letters = inspector.join().unwrap();

        assert!(
            !received.is_empty(),
            "the inspector holds one letter at a time"
        );
        received.sort_unstable();
        received.dedup();
        let kept: Vec<(u32, u32)> = (1..=2)
            .filter(|v| !received.contains(v))
            .map(|v| (v, 1))
            .collect();
        let mut listed: Vec<u32> = letters.iter().map(|l| l.body.value).collect();
        listed.sort_unstable();
        listed.dedup();
        assert_eq!(listed.len(), letters.len(), "a letter listed twice");
        for &(value, _) in &kept {
            assert!(
                listed.contains(&value),
                "a letter nobody received was not listed"
            );
        }
        for letter in &letters {
            let value = letter.body.value;
            assert_eq!(
                (letter.source, letter.id, letter.receive_count),
                (q.id(), ids[value as usize - 1], 1),
                "torn: the record is not the body's"
            );
            assert_eq!(letter.dead_for, TICK);
            assert_eq!(
                letter.cause,
                DeathCause::Released {
                    reason: Some("bad".into())
                }
            );
        }
        drop(letters);
        assert_eq!(drain_all(&dlq), kept, "looking was no delivery");
        let stats = balanced(&dlq);
        assert_eq!((stats.sent, stats.received, stats.deleted), (2, 2, 2));
        drop(q);
        drop(dlq);
        assert_eq!(live.load(Ordering::SeqCst), 0, "every body dropped once");
    });
}

/// Models 16 and 17 (c): `redrive` back to the source racing a receive and then a send on the
/// full, one-slot dead-letter queue. The source has room (16: the dead letter moves unless
/// received first) or is full (17: the redrive is refused and writes the body back). The dead
/// letter ends in exactly one place: received from the dead-letter queue, moved to the source
/// as a new message (receive count 0 there), or still in the dead-letter queue after a refusal.
/// The send gets the slot only once the dead letter has left it; a redrive that runs after it
/// skips that message (not a dead letter). Bodies are dropped exactly once, and the stats of
/// both queues balance.
fn redrive_model(target_full: bool) {
    let live = Arc::new(AtomicUsize::new(0));
    let clock = ManualClock::new();
    let dlq = dead_letter_queue(1, &clock);
    let q = source_queue(&clock, &dlq, 1);
    kill(&q, 1, &live);
    if target_full {
        q.send(Body::new(3, &live)).unwrap();
    }

    let redriver = {
        let (dlq, q) = (dlq.clone(), q.clone());
        thread::spawn(move || dlq.redrive(&q, Some(q.id()), usize::MAX))
    };
    let received = match dlq.try_receive() {
        Some(d) => {
            assert_eq!((d.body().value, d.receive_count()), (1, 1));
            dlq.delete(d.receipt()).unwrap();
            true
        }
        None => false, // the redrive holds it
    };
    let sent = match dlq.send(Body::new(2, &live)) {
        Ok(_) => true,
        Err(refused) => {
            assert!(matches!(refused, SendError::Full(_)));
            false
        }
    };
    let redriven = redriver.join().unwrap();

    let in_dlq = drain_all(&dlq);
    let in_source = drain_all(&q);
    let left = in_dlq.contains(&(1, 1));
    let moved = in_source.contains(&(1, 1));
    assert_eq!(
        usize::from(received) + redriven.moved + usize::from(left),
        1,
        "the dead letter is in exactly one place: received {received}, {redriven:?}, left {left}"
    );
    assert_eq!(moved, redriven.moved == 1);
    if target_full {
        assert_eq!(redriven.moved, 0);
        assert_eq!(in_source, [(3, 1)]);
    } else {
        assert_eq!(redriven.refused, None, "the source had room");
        assert_eq!(in_source.len(), redriven.moved);
    }
    if !received && redriven.moved == 0 {
        assert!(matches!(redriven.refused, Some(SendError::Full(()))));
    }
    assert_eq!(in_dlq.contains(&(2, 1)), sent);
    assert_eq!(in_dlq.len(), usize::from(left) + usize::from(sent));
    if received {
        assert!(sent, "the dead letter was deleted: its slot was free");
    }

    let stats = balanced(&dlq);
    assert_eq!(stats.sent, 1 + u64::from(sent));
    assert_eq!(stats.redriven, redriven.moved as u64);
    assert_eq!(stats.received, in_dlq.len() as u64 + u64::from(received));
    let stats = balanced(&q);
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(
        stats.sent,
        1 + u64::from(target_full) + redriven.moved as u64
    );
    drop(q);
    drop(dlq);
    assert_eq!(live.load(Ordering::SeqCst), 0, "every body dropped once");
}

/// Model 16 (c): the source has room.
#[test]
fn redrive_races_receive_and_send() {
    check("redrive_races_receive_and_send", || redrive_model(false));
}

/// Model 17 (c): the source is full, so a redrive that gets the dead letter is refused and
/// writes its body back.
#[test]
fn refused_redrive_races_receive_and_send() {
    check("refused_redrive_races_receive_and_send", || {
        redrive_model(true)
    });
}
