//! Dead letters and the tools around them: `Queue::nack` (delay and reason), death records
//! (`Queue::dead_letters`: cause, reason, source, id, receive count, age), `Queue::redrive`,
//! and the `Consumer` passing its handler's failure text as the reason.
//!
//! Queue time is a `ManualClock` throughout: nothing here sleeps to let queue time pass. The
//! only wall-clock waits are for the consumer's worker threads to catch up (`wait_until`).

mod common;
// Installs the counting allocator as this binary's global allocator: `measure` proves that
// death reasons are freed exactly once. It counts only on the measuring thread.
#[path = "support/counting_alloc.rs"]
#[allow(dead_code)]
mod counting_alloc;

use common::wait_until;
use counting_alloc::measure;
use std::borrow::Cow;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use visq::{
    Backoff, Consumer, DeadLetter, DeathCause, ManualClock, MessageId, Nack, Queue, QueueId,
    ReceiptError, SendError, MAX_TIMEOUT,
};

const TICK: Duration = Duration::from_millis(1);
const VISIBILITY: Duration = Duration::from_secs(10);
/// How often a message refused by a full dead-letter queue tries again (documented).
const RETRY: Duration = Duration::from_millis(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A plain queue on `clock` (to be used as a dead-letter queue or a redrive target).
fn plain<T>(clock: &ManualClock, capacity: usize) -> Arc<Queue<T>> {
    Arc::new(
        Queue::builder()
            .capacity(capacity)
            .visibility_timeout(VISIBILITY)
            .tick(TICK)
            .clock(clock.clone())
            .build()
            .unwrap(),
    )
}

/// A queue on `clock` whose messages go to `dlq` after `max_receives` receives.
fn source<T>(clock: &ManualClock, dlq: &Arc<Queue<T>>, max_receives: u32) -> Queue<T> {
    Queue::builder()
        .capacity(16)
        .visibility_timeout(VISIBILITY)
        .dead_letter(dlq.clone(), max_receives)
        .tick(TICK)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Sends `body` to `q`, which must have nothing else visible, receives it once and gives it
/// back with `nack`. With a dead-letter limit of 1, that kills it. Returns its id.
fn kill<T: Clone>(q: &Queue<T>, body: T, nack: Nack) -> MessageId {
    let id = q.send(body).unwrap();
    let d = q.try_receive().unwrap();
    assert_eq!((d.id(), d.receive_count()), (id, 1));
    q.nack(d.receipt(), nack).unwrap();
    id
}

/// Everything a dead letter says, as one comparable value.
fn summary<T: Clone>(l: &DeadLetter<T>) -> (T, QueueId, MessageId, u32, Duration, DeathCause) {
    (
        l.body.clone(),
        l.source,
        l.id,
        l.receive_count,
        l.dead_for,
        l.cause.clone(),
    )
}

fn released(reason: Option<&'static str>) -> DeathCause {
    DeathCause::Released {
        reason: reason.map(Cow::Borrowed),
    }
}

fn bodies<T: Clone>(letters: &[DeadLetter<T>]) -> Vec<T> {
    letters.iter().map(|l| l.body.clone()).collect()
}

/// Receives and deletes everything visible in `q`, returning the bodies and receive counts.
fn drain<T: Clone>(q: &Queue<T>) -> Vec<(T, u32)> {
    let mut out = Vec::new();
    while let Some(d) = q.try_receive() {
        q.delete(d.receipt()).unwrap();
        out.push((d.body().clone(), d.receive_count()));
    }
    out
}

// ----------------------------------------------------------------------------------------------
// How messages die, and what their records say
// ----------------------------------------------------------------------------------------------

#[test]
fn expiry_records_cause_count_id_source_and_age_on_the_dlqs_own_clock() {
    // The source and the dead-letter queue run on different clocks.
    let source_clock = ManualClock::new();
    let dlq_clock = ManualClock::new();
    dlq_clock.advance(secs(100)); // the DLQ is built at 100 s on its clock
    let dlq = plain(&dlq_clock, 8);
    let q = source(&source_clock, &dlq, 2);
    assert_ne!(q.id(), dlq.id());
    assert_eq!(q.max_receives(), Some(2));

    q.send("other").unwrap();
    let id = q.send("slow").unwrap();
    let other = q.try_receive().unwrap();
    q.delete(other.receipt()).unwrap();
    let first = q.try_receive().unwrap();
    assert_eq!((first.id(), first.receive_count()), (id, 1));
    source_clock.advance(VISIBILITY);
    let second = q.try_receive().expect("the first lease expired");
    assert_eq!((second.id(), second.receive_count()), (id, 2));
    dlq_clock.advance(secs(3)); // the DLQ's clock moves on its own meanwhile
    source_clock.advance(VISIBILITY);
    assert!(q.try_receive().is_none(), "the second expiry moved it");

    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.in_flight, s.expired, s.dead_lettered),
        (0, 0, 0, 2, 1)
    );
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        ("slow", q.id(), id, 2, Duration::ZERO, DeathCause::Expired)
    );

    // Its age runs on the DLQ's clock: the source's clock does not count.
    dlq_clock.advance(secs(7));
    source_clock.advance(secs(3600));
    let letters = dlq.dead_letters(10);
    assert_eq!(letters[0].dead_for, secs(7));
    assert_eq!(letters[0].cause, DeathCause::Expired);
    // Both receipts are stale now that the message left the source.
    assert_eq!(q.delete(second.receipt()), Err(ReceiptError::Stale));
    assert_eq!(q.delete(first.receipt()), Err(ReceiptError::Stale));
}

#[test]
fn release_on_the_last_receive_records_released_without_reason() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 2);
    let id = q.send(5u32).unwrap();
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap(); // first receive: back at once
    let d = q.try_receive().unwrap();
    assert_eq!((d.id(), d.receive_count()), (id, 2));
    clock.advance(ms(250));
    q.release(d.receipt()).unwrap(); // the last: dies at once
    assert!(q.try_receive().is_none());
    let s = q.stats();
    assert_eq!((s.released, s.expired, s.dead_lettered), (2, 0, 1));

    clock.advance(ms(40));
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        (5, q.id(), id, 2, ms(40), released(None))
    );
}

#[test]
fn nack_records_a_static_reason_as_given() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let id = kill(&q, "bad", Nack::now().reason("cannot parse"));
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        (
            "bad",
            q.id(),
            id,
            1,
            Duration::ZERO,
            released(Some("cannot parse"))
        )
    );
    // A `&'static str` is kept borrowed: recording it cost nothing.
    assert!(matches!(
        letters[0].cause,
        DeathCause::Released {
            reason: Some(Cow::Borrowed("cannot parse"))
        }
    ));
    assert_eq!(q.stats().released, 1);
}

#[test]
fn nack_records_an_owned_reason_as_given() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let order = 42;
    let id = kill(
        &q,
        "bad",
        Nack::now().reason(format!("order {order} has no customer")),
    );
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    let DeathCause::Released {
        reason: Some(Cow::Owned(reason)),
    } = &letters[0].cause
    else {
        panic!("not an owned reason: {:?}", letters[0].cause);
    };
    assert_eq!(reason, "order 42 has no customer");
    assert_eq!(
        (letters[0].id, letters[0].source, letters[0].receive_count),
        (id, q.id(), 1)
    );
}

#[test]
fn a_lease_nacked_with_a_reason_records_it() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let id = q.send("job").unwrap();
    let lease = q.try_receive_lease().unwrap();
    lease
        .nack_with(Nack::after(secs(5)).reason("database unavailable"))
        .unwrap();
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        (
            "job",
            q.id(),
            id,
            1,
            Duration::ZERO,
            released(Some("database unavailable"))
        )
    );
}

#[test]
fn a_delayed_nack_on_the_last_receive_dies_at_once() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 2);
    let id = q.send("x").unwrap();
    let d = q.try_receive().unwrap();
    q.nack(d.receipt(), Nack::after(ms(50))).unwrap(); // not the last: waits
    assert_eq!(q.stats().delayed, 1);
    clock.advance(ms(50));
    let d = q.try_receive().unwrap();
    assert_eq!(d.receive_count(), 2);

    q.nack(d.receipt(), Nack::after(secs(3600)).reason("gave up"))
        .unwrap();
    // Gone from the source at once, not after the hour.
    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.in_flight, s.dead_lettered, s.released),
        (0, 0, 0, 1, 2)
    );
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        (
            "x",
            q.id(),
            id,
            2,
            Duration::ZERO,
            released(Some("gave up"))
        )
    );
    let moved = dlq.try_receive().expect("visible in the DLQ at once");
    assert_eq!((*moved.body(), moved.receive_count()), ("x", 1));
    // Nothing is left to come back in the source after the delay.
    clock.advance(secs(3600) + TICK);
    assert!(q.try_receive().is_none());
    assert_eq!(q.stats().dead_lettered, 1);
}

#[test]
fn a_delayed_nack_before_the_last_receive_hides_the_message_for_exactly_the_delay() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 3);
    let id = q.send("later").unwrap();
    clock.advance(ms(3)); // not on a round time
    let d = q.try_receive().unwrap();
    clock.advance(ms(2));
    let delay = ms(700);
    q.nack(d.receipt(), Nack::after(delay).reason("not yet"))
        .unwrap();
    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.in_flight, s.released, s.dead_lettered),
        (0, 1, 0, 1, 0)
    );

    clock.advance(delay - TICK);
    assert!(q.try_receive().is_none(), "visible a tick early");
    assert_eq!(q.stats().delayed, 1);
    clock.advance(TICK * 2);
    let again = q.try_receive().expect("visible a tick after the delay");
    assert_eq!((again.id(), again.receive_count()), (id, 2));
    // The reason of a nack that did not kill is not kept anywhere.
    assert!(dlq.dead_letters(10).is_empty());
    assert_eq!(dlq.stats().sent, 0);
}

#[test]
fn a_nack_delay_over_max_timeout_is_refused_and_changes_nothing() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1); // a nack that landed would kill it
    q.send(1u32).unwrap();
    let d = q.try_receive().unwrap();
    let before = q.stats();
    assert_eq!(
        q.nack(d.receipt(), Nack::after(MAX_TIMEOUT + TICK).reason("x")),
        Err(ReceiptError::TimeoutTooLong)
    );
    let mut expected = before.clone();
    expected.refused_receipts += 1; // counted as a refusal, and nothing else changed
    assert_eq!(q.stats(), expected);
    assert_eq!((before.in_flight, before.released), (1, 0));
    assert!(dlq.dead_letters(10).is_empty());
    // The lease is still held by the receipt, and a delay of exactly MAX_TIMEOUT is accepted.
    assert!(q.try_receive().is_none());
    q.change_visibility(d.receipt(), secs(1)).unwrap();
    q.nack(d.receipt(), Nack::after(MAX_TIMEOUT)).unwrap();
    assert_eq!(q.stats().dead_lettered, 1);
}

#[test]
fn a_nacked_receipt_is_spent() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 3);
    q.send(1u32).unwrap();

    let d = q.try_receive().unwrap();
    q.nack(d.receipt(), Nack::now()).unwrap();
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Stale));

    let d = q.try_receive().unwrap();
    assert_eq!(d.receive_count(), 2);
    q.nack(d.receipt(), Nack::after(secs(5)).reason("later"))
        .unwrap();
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Stale));
    assert_eq!(q.nack(d.receipt(), Nack::now()), Err(ReceiptError::Stale));
    assert_eq!(
        q.change_visibility(d.receipt(), secs(1)),
        Err(ReceiptError::Stale)
    );
    assert_eq!(q.stats().delayed, 1, "the refused calls changed nothing");

    clock.advance(secs(5));
    let d = q.try_receive().unwrap();
    assert_eq!(d.receive_count(), 3);
    q.nack(d.receipt(), Nack::now().reason("dead")).unwrap(); // the last: moved
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Stale));
    assert_eq!(q.nack(d.receipt(), Nack::now()), Err(ReceiptError::Stale));
    let s = q.stats();
    assert_eq!((s.released, s.deleted, s.dead_lettered), (3, 0, 1));
}

// ----------------------------------------------------------------------------------------------
// Looking at dead letters
// ----------------------------------------------------------------------------------------------

#[test]
fn dead_letters_changes_no_count_order_or_stats() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let ids = ["a", "b", "c"].map(|body| kill(&q, body, Nack::now()));
    // One of them has been received in the DLQ once and given back.
    let d = dlq.try_receive().unwrap();
    assert_eq!(*d.body(), "a");
    dlq.release(d.receipt()).unwrap();
    clock.advance(ms(5));

    let before = dlq.stats();
    assert_eq!(
        (before.ready, before.sent, before.received, before.released),
        (3, 3, 1, 1)
    );
    for _ in 0..3 {
        let letters = dlq.dead_letters(10);
        assert_eq!(bodies(&letters), ["b", "c", "a"]);
        assert_eq!(
            letters.iter().map(|l| l.id).collect::<Vec<_>>(),
            [ids[1], ids[2], ids[0]]
        );
        assert!(letters.iter().all(|l| l.receive_count == 1));
        assert!(letters.iter().all(|l| l.dead_for == ms(5)));
        assert_eq!(dlq.stats(), before, "looking changed the stats");
    }
    // Receiving sees the same order, and counts as if nobody had looked.
    assert_eq!(drain(&dlq), [("b", 1), ("c", 1), ("a", 2)]);
    let s = dlq.stats();
    assert_eq!((s.ready, s.received, s.deleted), (0, 4, 3));
    assert!(dlq.dead_letters(10).is_empty());
}

#[test]
fn dead_letters_respects_max() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    for body in ["a", "b", "c", "d"] {
        kill(&q, body, Nack::now());
    }
    let before = dlq.stats();
    // Which ones is the business of `dead_letters_stopped_by_max_keeps_the_order`; here, how
    // many, each listed once.
    for (max, listed) in [
        (2, 2),
        (1, 1),
        (0, 0),
        (3, 3),
        (4, 4),
        (5, 4),
        (usize::MAX, 4),
    ] {
        let mut letters = bodies(&dlq.dead_letters(max));
        assert_eq!(letters.len(), listed, "max {max}");
        letters.sort_unstable();
        letters.dedup();
        assert_eq!(letters.len(), listed, "max {max}: listed twice");
    }
    let mut all = bodies(&dlq.dead_letters(10));
    all.sort_unstable();
    assert_eq!(all, ["a", "b", "c", "d"]);
    assert_eq!(dlq.stats(), before);
    assert_eq!((before.ready, before.received), (4, 0));
}

#[test]
fn dead_letters_stopped_by_max_keeps_the_order() {
    // "receive counts, leases and order are left as they were", even when `max` stops the
    // look before the end.
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    for body in ["a", "b", "c"] {
        kill(&q, body, Nack::now());
    }
    assert_eq!(bodies(&dlq.dead_letters(1)), ["a"]);
    assert_eq!(bodies(&dlq.dead_letters(10)), ["a", "b", "c"]);
    assert_eq!(drain(&dlq), [("a", 1), ("b", 1), ("c", 1)]);
}

#[test]
fn messages_sent_directly_to_the_dlq_are_no_dead_letters_but_redrive_none_moves_them() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let other = plain(&clock, 8);
    dlq.send("direct-1").unwrap();
    let dead_id = kill(&q, "dead", Nack::now().reason("r"));
    dlq.send("direct-2").unwrap();

    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        (
            "dead",
            q.id(),
            dead_id,
            1,
            Duration::ZERO,
            released(Some("r"))
        )
    );
    // `max` counts dead letters, not the messages skipped.
    assert_eq!(bodies(&dlq.dead_letters(1)), ["dead"]);

    // Redriving one source's letters leaves the direct messages.
    let r = dlq.redrive(&other, Some(q.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (1, None));
    assert_eq!(drain(&other), [("dead", 1)]);
    // Nothing died in `other` or in the DLQ itself.
    let r = dlq.redrive(&other, Some(dlq.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (0, None));
    assert_eq!(dlq.stats().ready, 2);

    // `None` moves everything visible, direct messages included, in order.
    let r = dlq.redrive(&other, None, usize::MAX);
    assert_eq!((r.moved, r.refused), (2, None));
    assert_eq!(drain(&other), [("direct-1", 1), ("direct-2", 1)]);
    let s = dlq.stats();
    assert_eq!((s.ready, s.redriven, s.received, s.deleted), (0, 3, 0, 0));
}

#[test]
fn a_queue_without_dead_letters_lists_and_redrives_nothing_by_source() {
    let clock = ManualClock::new();
    let lonely = plain::<u32>(&clock, 4);
    let other = plain(&clock, 4);
    lonely.send(1).unwrap();
    assert!(lonely.dead_letters(10).is_empty());
    let r = lonely.redrive(&other, Some(lonely.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (0, None));
    assert_eq!(lonely.stats().ready, 1);
    let r = lonely.redrive(&other, None, usize::MAX);
    assert_eq!((r.moved, r.refused), (1, None));
    assert_eq!(drain(&other), [(1, 1)]);
}

// ----------------------------------------------------------------------------------------------
// Redrive
// ----------------------------------------------------------------------------------------------

#[test]
fn redrive_to_the_source_starts_over_with_a_new_id_and_receive_count() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 2);
    let old_id = q.send(9u32).unwrap();
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap();
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap(); // second receive: dead
    assert_eq!(dlq.dead_letters(10)[0].receive_count, 2);

    let r = dlq.redrive(&q, Some(q.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (1, None));
    assert!(dlq.dead_letters(10).is_empty());
    assert_eq!(dlq.stats().ready, 0);

    let again = q.try_receive().unwrap();
    assert_eq!((*again.body(), again.receive_count()), (9, 1));
    assert_ne!(again.id(), old_id);
    assert_eq!((old_id.get(), again.id().get()), (0, 1));
    // A fresh count: one more receive is allowed before it dies again.
    q.release(again.receipt()).unwrap();
    let last = q.try_receive().unwrap();
    assert_eq!((last.id(), last.receive_count()), (again.id(), 2));
    q.nack(last.receipt(), Nack::now().reason("still broken"))
        .unwrap();
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        (
            9,
            q.id(),
            again.id(),
            2,
            Duration::ZERO,
            released(Some("still broken"))
        )
    );
    let s = q.stats();
    assert_eq!((s.sent, s.dead_lettered, s.received), (2, 2, 4));
}

#[test]
fn redrive_with_two_sources_moves_only_the_named_ones() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q1 = source(&clock, &dlq, 1);
    let q2 = source(&clock, &dlq, 1);
    assert_ne!(q1.id(), q2.id());
    let one_a = kill(&q1, "one-a", Nack::now());
    let two_a = kill(&q2, "two-a", Nack::now().reason("two"));
    let one_b = kill(&q1, "one-b", Nack::now());
    let letters = dlq.dead_letters(10);
    assert_eq!(
        letters.iter().map(|l| (l.source, l.id)).collect::<Vec<_>>(),
        [(q1.id(), one_a), (q2.id(), two_a), (q1.id(), one_b)]
    );

    let r = dlq.redrive(&q1, Some(q1.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (2, None));
    assert_eq!(drain(&q1), [("one-a", 1), ("one-b", 1)]);
    assert!(q2.try_receive().is_none());
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        (
            "two-a",
            q2.id(),
            two_a,
            1,
            Duration::ZERO,
            released(Some("two"))
        )
    );
    assert_eq!(dlq.stats().redriven, 2);
}

#[test]
fn redrive_respects_max() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    for body in ["a", "b", "c"] {
        kill(&q, body, Nack::now());
    }
    let r = dlq.redrive(&q, Some(q.id()), 2);
    assert_eq!((r.moved, r.refused), (2, None));
    assert_eq!(drain(&q), [("a", 1), ("b", 1)]);
    assert_eq!(bodies(&dlq.dead_letters(10)), ["c"]);
    let r = dlq.redrive(&q, Some(q.id()), 0);
    assert_eq!((r.moved, r.refused), (0, None));
    let r = dlq.redrive(&q, None, 0);
    assert_eq!((r.moved, r.refused), (0, None));
    assert_eq!(bodies(&dlq.dead_letters(10)), ["c"]);
    let r = dlq.redrive(&q, None, 1);
    assert_eq!((r.moved, r.refused), (1, None));
    assert_eq!(drain(&q), [("c", 1)]);
}

#[test]
fn redrive_into_a_full_target_stops_and_keeps_the_message_unchanged() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let ids = [
        kill(&q, "a", Nack::now().reason("ra")),
        kill(&q, "b", Nack::now().reason("rb")),
        kill(&q, "c", Nack::now()),
    ];
    clock.advance(ms(30));
    let target = plain(&clock, 2);
    target.send("filler").unwrap();

    let r = dlq.redrive(&target, None, usize::MAX);
    assert_eq!((r.moved, r.refused), (1, Some(SendError::Full(()))));
    assert_eq!(target.stats().ready, 2);
    // The refused message and the one after it are still here, records intact.
    let mut letters: Vec<_> = dlq.dead_letters(10).iter().map(summary).collect();
    letters.sort_by_key(|l| l.2);
    assert_eq!(
        letters,
        [
            ("b", q.id(), ids[1], 1, ms(30), released(Some("rb"))),
            ("c", q.id(), ids[2], 1, ms(30), released(None)),
        ]
    );
    let s = dlq.stats();
    assert_eq!((s.ready, s.redriven, s.received, s.deleted), (2, 1, 0, 0));
    // Full again at once: nothing moves, nothing changes.
    let r = dlq.redrive(&target, Some(q.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (0, Some(SendError::Full(()))));
    assert_eq!(dlq.stats(), s);

    // Room again: the rest goes.
    assert_eq!(drain(&target), [("filler", 1), ("a", 1)]);
    let r = dlq.redrive(&target, None, usize::MAX);
    assert_eq!((r.moved, r.refused), (2, None));
    let mut moved: Vec<_> = drain(&target).into_iter().map(|(b, _)| b).collect();
    moved.sort_unstable();
    assert_eq!(moved, ["b", "c"]);
    assert_eq!(dlq.stats().redriven, 3);
}

#[test]
fn redrive_stopped_by_a_full_target_keeps_the_order_of_what_is_left() {
    // The refused message "stays here, unchanged", which includes its place in the line.
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    for body in ["a", "b", "c", "d"] {
        kill(&q, body, Nack::now());
    }
    let target = plain(&clock, 1);
    let r = dlq.redrive(&target, None, usize::MAX);
    assert_eq!((r.moved, r.refused), (1, Some(SendError::Full(()))));
    assert_eq!(bodies(&dlq.dead_letters(10)), ["b", "c", "d"]);
    assert_eq!(drain(&dlq), [("b", 1), ("c", 1), ("d", 1)]);
}

#[test]
fn redrive_into_a_closed_target_is_refused() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let id = kill(&q, "a", Nack::now().reason("why"));
    q.close();
    let r = dlq.redrive(&q, Some(q.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (0, Some(SendError::Closed(()))));
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        ("a", q.id(), id, 1, Duration::ZERO, released(Some("why")))
    );
    let s = dlq.stats();
    assert_eq!((s.ready, s.redriven, s.received, s.deleted), (1, 0, 0, 0));
    assert_eq!(q.stats().sent, 1);
}

#[test]
fn redrive_keeps_the_dlq_counters_exact() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let other = plain(&clock, 8);
    for body in ["a", "b", "c", "d"] {
        kill(&q, body, Nack::now());
    }
    dlq.send("direct").unwrap();
    // One dead letter is handled in the DLQ and deleted, one released there.
    let d = dlq.try_receive().unwrap();
    dlq.delete(d.receipt()).unwrap();
    let d = dlq.try_receive().unwrap();
    dlq.release(d.receipt()).unwrap();
    dlq.dead_letters(10);

    let r = dlq.redrive(&q, Some(q.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (3, None));
    let s = dlq.stats();
    assert_eq!(
        (s.ready, s.sent, s.received, s.deleted, s.released, s.redriven),
        (1, 5, 2, 1, 1, 3)
    );
    assert_eq!(s.dead_lettered, 0);
    let r = dlq.redrive(&other, None, usize::MAX);
    assert_eq!((r.moved, r.refused), (1, None));
    let s = dlq.stats();
    assert_eq!(
        (s.ready, s.sent, s.received, s.deleted, s.redriven),
        (0, 5, 2, 1, 4)
    );

    let s = q.stats();
    assert_eq!((s.sent, s.ready, s.dead_lettered, s.deleted), (7, 3, 4, 0));
    assert_eq!(drain(&q).len(), 3);
    assert_eq!(q.stats().deleted, 3);
    // The freed DLQ slots are reused normally.
    for n in 0..8 {
        dlq.send("refill")
            .unwrap_or_else(|e| panic!("send {n}: {e}"));
    }
    assert_eq!(dlq.stats().sent, 13);
}

// ----------------------------------------------------------------------------------------------
// Full and chained dead-letter queues
// ----------------------------------------------------------------------------------------------

#[test]
fn a_full_dlq_keeps_the_message_delayed_retrying_with_its_record() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 1);
    dlq.send("filler").unwrap();
    let q = source(&clock, &dlq, 2);
    let id = q.send("x").unwrap();
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap();
    clock.advance(ms(4));
    let d = q.try_receive().unwrap();
    assert_eq!((d.id(), d.receive_count()), (id, 2));
    q.nack(d.receipt(), Nack::after(secs(60)).reason("poison"))
        .unwrap();
    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.in_flight, s.dead_lettered),
        (0, 1, 0, 0)
    );
    assert_eq!(s.dead_letter_retries, 1);

    // Retries every 10 ms of the source's clock, refused each time.
    clock.advance(RETRY - TICK);
    assert_eq!(q.stats().dead_letter_retries, 1);
    clock.advance(TICK);
    assert_eq!(q.stats().dead_letter_retries, 2);
    for _ in 0..3 {
        clock.advance(RETRY);
        q.stats();
    }
    let s = q.stats();
    assert_eq!(
        (s.delayed, s.dead_letter_retries, s.dead_lettered),
        (1, 5, 0)
    );
    assert!(
        q.try_receive().is_none(),
        "a waiting message is not delivered"
    );
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Stale));

    // Room appears: the next retry moves it, with the cause and reason of its death.
    let filler = dlq.try_receive().unwrap();
    dlq.delete(filler.receipt()).unwrap();
    clock.advance(RETRY - TICK);
    assert_eq!(q.stats().dead_lettered, 0);
    clock.advance(TICK);
    let s = q.stats();
    assert_eq!(
        (s.delayed, s.dead_letter_retries, s.dead_lettered),
        (0, 5, 1)
    );
    clock.advance(ms(3));
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        ("x", q.id(), id, 2, ms(3), released(Some("poison")))
    );
}

#[test]
fn a_full_dlq_keeps_an_expiry_record_too() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 1);
    dlq.send("filler").unwrap();
    let q = source(&clock, &dlq, 1);
    let id = q.send("x").unwrap();
    let _lost = q.try_receive().unwrap();
    clock.advance(VISIBILITY);
    assert!(q.try_receive().is_none());
    assert_eq!(q.stats().dead_letter_retries, 1);
    let filler = dlq.try_receive().unwrap();
    dlq.delete(filler.receipt()).unwrap();
    clock.advance(RETRY);
    assert_eq!(q.stats().dead_lettered, 1);
    let letters = dlq.dead_letters(10);
    assert_eq!(
        summary(&letters[0]),
        ("x", q.id(), id, 1, Duration::ZERO, DeathCause::Expired)
    );
}

#[test]
fn a_dlq_with_its_own_dlq_names_itself_as_the_second_source() {
    let clock = ManualClock::new();
    let dlq2 = plain(&clock, 8);
    let dlq1: Arc<Queue<&str>> = Arc::new(source(&clock, &dlq2, 1));
    let q = source(&clock, &dlq1, 1);
    let id = kill(&q, "m", Nack::now().reason("first"));
    let letters = dlq1.dead_letters(10);
    assert_eq!(
        summary(&letters[0]),
        ("m", q.id(), id, 1, Duration::ZERO, released(Some("first")))
    );

    clock.advance(ms(8));
    let d = dlq1.try_receive().unwrap();
    assert_eq!(d.receive_count(), 1);
    dlq1.nack(d.receipt(), Nack::now().reason("second"))
        .unwrap();
    assert!(dlq1.dead_letters(10).is_empty());
    assert_eq!(dlq1.stats().dead_lettered, 1);

    clock.advance(ms(2));
    let letters = dlq2.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        ("m", dlq1.id(), d.id(), 1, ms(2), released(Some("second")))
    );
    // Only the latest death counts: redriving by the first source finds nothing.
    let r = dlq2.redrive(&q, Some(q.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (0, None));
    let r = dlq2.redrive(&dlq1, Some(dlq1.id()), usize::MAX);
    assert_eq!((r.moved, r.refused), (1, None));
    // Back in the first DLQ as a plain message: no dead letter any more.
    assert!(dlq1.dead_letters(10).is_empty());
    assert_eq!(drain(&dlq1), [("m", 1)]);
}

#[test]
fn an_expired_dead_letter_in_a_dlq_keeps_its_record() {
    // A dead letter received in its DLQ and let expire (the DLQ has no limit) is still one.
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let id = kill(&q, "m", Nack::now().reason("r"));
    let d = dlq.try_receive().unwrap();
    assert!(
        dlq.dead_letters(10).is_empty(),
        "a leased one is not listed"
    );
    clock.advance(VISIBILITY);
    assert_eq!(dlq.stats().expired, 1); // `stats` runs the DLQ's wheel
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        summary(&letters[0]),
        ("m", q.id(), id, 1, VISIBILITY, released(Some("r")))
    );
    assert_eq!(dlq.delete(d.receipt()), Err(ReceiptError::Expired));
    let again = dlq.try_receive().unwrap();
    assert_eq!(again.receive_count(), 2);
    dlq.delete(again.receipt()).unwrap();
    assert!(dlq.dead_letters(10).is_empty());
}

/// A DLQ with one dead letter from a new source whose lease in the DLQ has just expired, with
/// no call on the DLQ since (a DLQ typically sees little traffic). Returns the letter's id too.
fn dlq_with_a_just_expired_lease() -> (Arc<Queue<&'static str>>, Queue<&'static str>, MessageId) {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let id = kill(&q, "m", Nack::now().reason("r"));
    let d = dlq.try_receive().unwrap(); // someone looks at it by receiving, and goes away
    assert_eq!(d.receive_count(), 1);
    clock.advance(VISIBILITY);
    (dlq, q, id)
}

#[test]
fn dead_letters_lists_a_dead_letter_whose_lease_just_expired() {
    // "Up to `max` of the dead letters visible in this queue": once the lease's deadline has
    // passed the message is visible (a receive would get it), so it is listed, as `stats`
    // counts it ready, without another call having to run the DLQ's timing wheel first.
    let (dlq, q, id) = dlq_with_a_just_expired_lease();
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1, "the expired dead letter is not listed");
    assert_eq!(
        summary(&letters[0]),
        ("m", q.id(), id, 1, VISIBILITY, released(Some("r")))
    );
    assert_eq!(dlq.stats().ready, 1);
}

#[test]
fn redrive_moves_a_dead_letter_whose_lease_just_expired() {
    let (dlq, q, _) = dlq_with_a_just_expired_lease();
    let r = dlq.redrive(&q, Some(q.id()), usize::MAX);
    assert_eq!(
        (r.moved, r.refused),
        (1, None),
        "the expired dead letter was not redriven"
    );
    assert_eq!(drain(&q), [("m", 1)]);
}

// ----------------------------------------------------------------------------------------------
// Ownership: bodies and reasons are dropped exactly once; a panicking clone loses nothing
// ----------------------------------------------------------------------------------------------

#[path = "support/counted_body.rs"]
mod counted_body;
use counted_body::{Body, Counts};

#[test]
fn every_body_is_dropped_once_across_inspect_redrive_delete_and_drop() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let dlq: Arc<Queue<Body>> = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    let other: Arc<Queue<Body>> = plain(&clock, 8);
    let die = |value: u32, nack: Nack| {
        q.send(Body::new(&counts, value)).unwrap();
        let d = q.try_receive().unwrap();
        q.nack(d.receipt(), nack).unwrap();
        // `d` (a clone) drops here
    };
    die(1, Nack::now().reason(format!("owned {}", 1)));
    die(2, Nack::now().reason("static"));
    die(3, Nack::after(secs(1)));
    die(4, Nack::now().reason(String::from("owned 4")));
    assert_eq!(counts.all(), (4, 4, 4));
    assert_eq!(counts.live(), 4);

    // Looking clones: the clones are the caller's and drop with the list.
    let letters = dlq.dead_letters(10);
    assert_eq!(
        letters.iter().map(|l| l.body.value).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(counts.all(), (4, 8, 4));
    drop(letters);
    assert_eq!(counts.all(), (4, 8, 8));

    // Redrive moves bodies without a clone or a drop.
    let r = dlq.redrive(&other, None, 2);
    assert_eq!((r.moved, r.refused), (2, None));
    assert_eq!(counts.all(), (4, 8, 8));
    // A refused redrive gives the body back to the DLQ, undropped.
    other.close();
    let r = dlq.redrive(&other, None, usize::MAX);
    assert_eq!((r.moved, r.refused), (0, Some(SendError::Closed(()))));
    assert_eq!(counts.all(), (4, 8, 8));

    // Deleting in the DLQ drops the body once.
    let d = dlq.try_receive().unwrap();
    assert!(matches!(d.body().value, 3 | 4), "{}", d.body().value);
    dlq.delete(d.receipt()).unwrap();
    assert_eq!(counts.all(), (4, 9, 9));
    drop(d);
    assert_eq!(counts.all(), (4, 9, 10));

    // Dropping the queues drops what they hold: one in the DLQ, two in `other`.
    drop(q); // holds nothing, drops nothing
    assert_eq!(counts.all(), (4, 9, 10));
    drop(Arc::try_unwrap(dlq).expect("the last reference"));
    assert_eq!(counts.all(), (4, 9, 11));
    drop(Arc::try_unwrap(other).expect("the last reference"));
    assert_eq!(counts.all(), (4, 9, 13));
    assert_eq!(counts.live(), 0);
}

#[test]
fn a_full_dlq_retry_drops_nothing_and_the_source_drop_drops_the_waiting_body() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let dlq: Arc<Queue<Body>> = plain(&clock, 1);
    dlq.send(Body::new(&counts, 0)).unwrap();
    let q = source(&clock, &dlq, 1);
    q.send(Body::new(&counts, 1)).unwrap();
    let d = q.try_receive().unwrap();
    q.nack(d.receipt(), Nack::now().reason(format!("owned {}", 1)))
        .unwrap();
    drop(d);
    for _ in 0..5 {
        clock.advance(RETRY);
        q.stats();
    }
    assert_eq!(q.stats().dead_letter_retries, 6);
    assert_eq!(counts.all(), (2, 1, 1));
    drop(q);
    assert_eq!(counts.all(), (2, 1, 2));
    drop(Arc::try_unwrap(dlq).expect("the last reference"));
    assert_eq!(counts.all(), (2, 1, 3));
}

/// Builds a source and its DLQ on `clock`, kills a message in the source with `reason`, and
/// hands back the DLQ (the source is dropped).
fn dlq_holding_a_death(clock: &ManualClock, reason: Nack) -> Queue<u32> {
    let dlq = plain(clock, 8);
    let q = source(clock, &dlq, 1);
    kill(&q, 7, reason);
    drop(q);
    Arc::try_unwrap(dlq).expect("the last reference")
}

#[test]
fn an_owned_reason_is_freed_exactly_once_across_inspect_redrive_delete_and_drop() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = source(&clock, &dlq, 2);
    let other = plain(&clock, 8);
    // Every region below starts and ends with the queues empty: what it allocated (the
    // reason, the list and its clones of reasons, `visit_ready`'s set of slots seen) it must
    // have freed, exactly. (Owned reasons are made by `to_string`, one exact allocation, so
    // no reallocation muddles the counts.)
    let inspect_and_redrive = || {
        q.send(1).unwrap();
        let d = q.try_receive().unwrap();
        q.release(d.receipt()).unwrap();
        let d = q.try_receive().unwrap();
        q.nack(d.receipt(), Nack::now().reason("owned".to_string()))
            .unwrap(); // the String moves into the DLQ's record
        let letters = dlq.dead_letters(10).len(); // a clone of it, dropped with the list
        let redriven = dlq.redrive(&other, None, usize::MAX).moved; // the record drops
        (letters, redriven)
    };
    // Warm up: whatever a first use sets up for good is not counted below.
    assert_eq!(inspect_and_redrive(), (1, 1));
    assert_eq!(drain(&other), [(1, 1)]);
    let (moved, allocations, deallocations) = measure(inspect_and_redrive);
    assert_eq!(moved, (1, 1));
    assert!(allocations >= 2, "the reason and its clone: {allocations}");
    assert_eq!(allocations, deallocations, "reason kept or freed twice");
    assert_eq!(drain(&other), [(1, 1)]);

    let (_, allocations, deallocations) = measure(|| {
        q.send(2).unwrap();
        let d = q.try_receive().unwrap();
        q.nack(d.receipt(), Nack::now().reason("first".to_string()))
            .unwrap(); // not the last receive: this reason drops at once
        let d = q.try_receive().unwrap();
        q.nack(
            d.receipt(),
            Nack::after(secs(9)).reason("second".to_string()),
        )
        .unwrap(); // the last: dies with it
        let d = dlq.try_receive().unwrap();
        dlq.delete(d.receipt()).unwrap(); // the record drops
    });
    assert_eq!(
        (allocations, deallocations),
        (2, 2),
        "reason kept or freed twice"
    );
    assert_eq!((q.stats().dead_lettered, dlq.stats().deleted), (3, 1));

    // A reason still held when the DLQ is dropped is freed with it: one deallocation more
    // than for the same DLQ holding a static reason.
    let with_static = dlq_holding_a_death(&clock, Nack::now().reason("static"));
    let with_owned = dlq_holding_a_death(&clock, Nack::now().reason(String::from("owned")));
    assert_eq!(with_static.dead_letters(1).len(), 1);
    assert_eq!(with_owned.dead_letters(1).len(), 1);
    let ((), _, freed_static) = measure(|| drop(with_static));
    let ((), _, freed_owned) = measure(|| drop(with_owned));
    assert_eq!(freed_owned, freed_static + 1);
}

#[test]
fn a_panicking_clone_in_dead_letters_keeps_the_message_and_the_stats() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let dlq: Arc<Queue<Body>> = plain(&clock, 8);
    let q = source(&clock, &dlq, 1);
    for value in [1, 2] {
        q.send(Body::new(&counts, value)).unwrap();
        let d = q.try_receive().unwrap();
        q.nack(d.receipt(), Nack::now().reason(format!("reason {value}")))
            .unwrap();
    }
    let before = dlq.stats();
    assert_eq!((before.ready, before.received, before.sent), (2, 0, 2));
    let counted = counts.all();

    counts.panic_on_clone.store(true, Ordering::SeqCst);
    let looked = catch_unwind(AssertUnwindSafe(|| dlq.dead_letters(10)));
    assert!(looked.is_err(), "the clone panicked");
    assert_eq!(
        counts.all(),
        counted,
        "a panicking clone made or dropped a body"
    );
    assert_eq!(dlq.stats(), before, "a panicking clone changed the stats");

    // Both messages are still there, listed and received as before.
    let letters = dlq.dead_letters(10);
    let mut listed: Vec<_> = letters
        .iter()
        .map(|l| (l.body.value, l.receive_count, l.cause.clone()))
        .collect();
    listed.sort_by_key(|l| l.0);
    assert_eq!(
        listed,
        [
            (
                1,
                1,
                DeathCause::Released {
                    reason: Some("reason 1".into())
                }
            ),
            (
                2,
                1,
                DeathCause::Released {
                    reason: Some("reason 2".into())
                }
            ),
        ]
    );
    drop(letters);
    let mut received = Vec::new();
    while let Some(d) = dlq.try_receive() {
        received.push((d.body().value, d.receive_count()));
        dlq.delete(d.receipt()).unwrap();
    }
    received.sort_unstable();
    assert_eq!(received, [(1, 1), (2, 1)]);
    let s = dlq.stats();
    assert_eq!((s.ready, s.received, s.deleted), (0, 2, 2));
    drop(q);
    drop(dlq);
    assert_eq!(counts.live(), 0);
}

// ----------------------------------------------------------------------------------------------
// The consumer's reasons
// ----------------------------------------------------------------------------------------------

/// An error whose `Display` differs from its `Debug`.
#[derive(Debug)]
struct BadInput {
    value: u32,
    attempt: u32,
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad input {} (attempt {})", self.value, self.attempt)
    }
}

/// A pool on `clock` that polls often, with a backoff without jitter: 10 s, 20 s, ...
fn pool_for(q: &Arc<Queue<u32>>, clock: &ManualClock) -> visq::ConsumerBuilder<u32> {
    Consumer::builder(q.clone())
        .backoff(Backoff {
            base: secs(10),
            factor: 2.0,
            cap: secs(3600),
            jitter: 0.0,
        })
        .poll_wait(ms(5))
        .clock(clock.clone())
}

#[test]
fn a_consumer_passes_the_handlers_error_text_from_the_last_attempt() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = Arc::new(source(&clock, &dlq, 2));
    let attempts = Arc::new(AtomicU32::new(0));
    let consumer = {
        let attempts = attempts.clone();
        pool_for(&q, &clock)
            .start(move |n: &u32| {
                Err::<(), _>(BadInput {
                    value: *n,
                    attempt: attempts.fetch_add(1, Ordering::SeqCst) + 1,
                })
            })
            .unwrap()
    };
    let id = q.send(7).unwrap();
    wait_until("the first failure is retried", || {
        consumer.stats().retried == 1
    });
    assert!(dlq.dead_letters(10).is_empty());
    clock.advance(secs(10) + TICK);
    wait_until("the last failure is dead-lettered", || {
        consumer.stats().dead_lettered == 1
    });
    assert!(consumer.stop(secs(10)));

    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].body,
            letters[0].source,
            letters[0].id,
            letters[0].receive_count
        ),
        (7, q.id(), id, 2)
    );
    assert_eq!(
        letters[0].cause,
        DeathCause::Released {
            reason: Some("bad input 7 (attempt 2)".into())
        }
    );
    let stats = consumer.stats();
    assert_eq!(
        (
            stats.failed,
            stats.retried,
            stats.dead_lettered,
            stats.panicked
        ),
        (2, 1, 1, 0)
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[test]
fn a_consumer_passes_a_panic_message_as_the_reason() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 8);
    let q = Arc::new(source(&clock, &dlq, 1));
    let consumer = pool_for(&q, &clock)
        .start(|n: &u32| -> Result<(), &str> {
            if *n == 1 {
                panic!("static panic (expected by the test)");
            }
            panic!("formatted panic {n} (expected by the test)")
        })
        .unwrap();
    let one = q.send(1).unwrap();
    let two = q.send(2).unwrap();
    wait_until("both are dead-lettered", || {
        consumer.stats().dead_lettered == 2
    });
    assert!(consumer.stop(secs(10)));

    let mut letters: Vec<_> = dlq
        .dead_letters(10)
        .iter()
        .map(|l| (l.body, l.id, l.receive_count, l.cause.clone()))
        .collect();
    letters.sort_by_key(|l| l.0);
    assert_eq!(
        letters,
        [
            (
                1,
                one,
                1,
                DeathCause::Released {
                    reason: Some(
                        "the handler panicked: static panic (expected by the test)".into()
                    )
                }
            ),
            (
                2,
                two,
                1,
                DeathCause::Released {
                    reason: Some(
                        "the handler panicked: formatted panic 2 (expected by the test)".into()
                    )
                }
            ),
        ]
    );
    let stats = consumer.stats();
    assert_eq!(
        (
            stats.failed,
            stats.panicked,
            stats.dead_lettered,
            stats.retried
        ),
        (2, 2, 2, 0)
    );
}

#[test]
fn reject_moves_a_first_delivery_to_the_dlq_with_its_reason() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 4);
    let q = source(&clock, &dlq, 5);
    let id = q.send("{not json").unwrap();
    let d = q.try_receive().unwrap();
    q.reject(d.receipt(), "cannot decode").unwrap();
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Stale));
    assert!(
        q.try_receive().is_none(),
        "a rejected message is not redelivered"
    );
    let s = q.stats();
    assert_eq!(
        (s.ready, s.in_flight, s.released, s.dead_lettered),
        (0, 0, 1, 1)
    );
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].id, letters[0].receive_count), (id, 1));
    assert_eq!(
        letters[0].cause,
        DeathCause::Rejected {
            reason: "cannot decode".into()
        }
    );
}

#[test]
fn reject_without_a_dlq_is_refused_and_keeps_the_lease() {
    let clock = ManualClock::new();
    let q: Queue<&str> = Queue::builder().clock(clock.clone()).build().unwrap();
    q.send("x").unwrap();
    let d = q.try_receive().unwrap();
    assert_eq!(
        q.reject(d.receipt(), "poison"),
        Err(ReceiptError::NoDeadLetterQueue)
    );
    q.delete(d.receipt()).unwrap();
}

#[test]
fn reject_with_a_spent_receipt_changes_nothing() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 4);
    let q = source(&clock, &dlq, 5);
    q.send("x").unwrap();
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap();
    assert_eq!(q.reject(d.receipt(), "late"), Err(ReceiptError::Stale));
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
    assert!(dlq.try_receive().is_none());
}

#[test]
fn a_reject_refused_by_a_full_dlq_is_retried_and_never_redelivered() {
    let clock = ManualClock::new();
    let dlq = plain(&clock, 1);
    dlq.send("filler").unwrap();
    let q = source(&clock, &dlq, 5);
    let id = q.send("x").unwrap();
    let d = q.try_receive().unwrap();
    q.reject(d.receipt(), "poison").unwrap();
    for _ in 0..3 {
        clock.advance(RETRY);
        assert!(
            q.try_receive().is_none(),
            "a waiting reject is not delivered"
        );
    }
    assert_eq!(q.stats().dead_lettered, 0);
    let filler = dlq.try_receive().unwrap();
    dlq.delete(filler.receipt()).unwrap();
    clock.advance(RETRY);
    assert!(q.try_receive().is_none());
    assert_eq!(q.stats().dead_lettered, 1);
    let letters = dlq.dead_letters(10);
    assert_eq!(
        (
            letters[0].id,
            letters[0].receive_count,
            letters[0].cause.clone()
        ),
        (
            id,
            1,
            DeathCause::Rejected {
                reason: "poison".into()
            }
        )
    );
}
