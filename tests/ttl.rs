//! Message time-to-live (`Builder::message_ttl`, `SendOptions::ttl`): a message whose
//! time-to-live ends while it waits (ready or delayed) goes to the dead-letter queue with
//! `DeathCause::TimeToLive`, or is dropped and counted without one; never early, at most one
//! tick late, with no receive needed; a lease is never cut short, and a message whose
//! time-to-live ended during its lease dies when the lease ends. Queue time is driven by
//! `ManualClock`, except in the stress test at the end, which runs on the real clock (a 1 ms
//! time-to-live, a few hundred milliseconds in all) because it races real threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use visq::{
    BuildError, DeathCause, InvalidSend, ManualClock, Nack, Queue, SendError, SendOptions,
    MAX_MESSAGE_TTL,
};

#[path = "support/counted_body.rs"]
mod counted_body;

use counted_body::{Body, Counts};

const TICK: Duration = Duration::from_millis(1);
const TTL: Duration = Duration::from_millis(10);
const LEASE: Duration = Duration::from_millis(50);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ttl_queue<T>(clock: &ManualClock, capacity: usize, dlq: Option<&Arc<Queue<T>>>) -> Queue<T> {
    let builder = Queue::builder()
        .capacity(capacity)
        .tick(TICK)
        .visibility_timeout(LEASE)
        .message_ttl(TTL)
        .clock(clock.clone());
    match dlq {
        Some(dlq) => builder.dead_letter(dlq.clone(), 100).build().unwrap(),
        None => builder.build().unwrap(),
    }
}

fn dead_letter_queue<T>(clock: &ManualClock, capacity: usize) -> Arc<Queue<T>> {
    Arc::new(
        Queue::builder()
            .capacity(capacity)
            .clock(clock.clone())
            .build()
            .unwrap(),
    )
}

/// `(ready, delayed, in_flight, ttl_expired, deleted)` of `q` now.
fn counts<T>(q: &Queue<T>) -> (usize, usize, usize, u64, u64) {
    let s = q.stats();
    (s.ready, s.delayed, s.in_flight, s.ttl_expired, s.deleted)
}

#[test]
fn a_message_received_a_tick_before_its_deadline_is_delivered() {
    let clock = ManualClock::new();
    let q: Queue<u32> = ttl_queue(&clock, 8, None);
    q.send(1).unwrap();
    clock.advance(TTL - TICK);
    assert_eq!(q.stats().ready, 1, "not early");
    let d = q.try_receive().expect("delivered before the deadline tick");
    assert_eq!(*d.body(), 1);
    q.delete(d.receipt()).unwrap();
    assert_eq!(counts(&q), (0, 0, 0, 0, 1));
}

#[test]
fn a_tick_after_its_deadline_a_waiting_message_is_gone_without_any_receive() {
    let clock = ManualClock::new();
    let dlq = dead_letter_queue(&clock, 8);
    let q: Queue<u32> = ttl_queue(&clock, 8, Some(&dlq));
    let id = q.send(7).unwrap();
    clock.advance(TTL + TICK);
    let s = q.stats();
    assert_eq!((s.ready, s.delayed, s.in_flight), (0, 0, 0), "{s:?}");
    assert_eq!(
        (s.ttl_expired, s.dead_lettered, s.deleted, s.received),
        (1, 1, 0, 0)
    );
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].body, letters[0].id, letters[0].receive_count),
        (7, id, 0)
    );
    assert_eq!(letters[0].cause, DeathCause::TimeToLive);
    assert_eq!(letters[0].source, q.id());
    assert!(q.try_receive().is_none());
}

#[test]
fn without_a_dead_letter_queue_an_expired_message_is_dropped_and_counted() {
    let clock = ManualClock::new();
    let bodies = Counts::new();
    let q: Queue<Body> = ttl_queue(&clock, 8, None);
    q.send(Body::new(&bodies, 1)).unwrap();
    q.send(Body::new(&bodies, 2)).unwrap();
    clock.advance(TTL + TICK);
    assert_eq!(counts(&q), (0, 0, 0, 2, 0), "dropped is not deleted");
    assert_eq!(
        bodies.all(),
        (2, 0, 2),
        "both bodies dropped, once, by the wheel's run"
    );
    assert!(q.try_receive().is_none());
    assert_eq!(
        q.stats().received,
        0,
        "popping the killed indices is no delivery"
    );
    // Their slots are reused.
    for n in 0..8 {
        q.send(Body::new(&bodies, n)).unwrap();
    }
    drop(q);
    assert_eq!(bodies.live(), 0);
}

#[test]
fn a_receive_that_pops_an_expired_message_before_the_wheel_ran_expires_it_and_moves_on() {
    let clock = ManualClock::new();
    let bodies = Counts::new();
    let q: Queue<Body> = ttl_queue(&clock, 8, None);
    q.send(Body::new(&bodies, 1)).unwrap();
    q.send_with(Body::new(&bodies, 2), &SendOptions::new().ttl(ms(100)))
        .unwrap();
    clock.advance(TTL);
    // The receive pops first and runs the wheel only after: the claim sees the expiry.
    let d = q.try_receive().expect("the second message is still alive");
    assert_eq!(d.body().value, 2);
    let s = q.stats();
    assert_eq!((s.ttl_expired, s.received, s.in_flight), (1, 1, 1));
    assert_eq!(bodies.dropped(), 1);
    // The same with a take.
    q.send(Body::new(&bodies, 3)).unwrap();
    clock.advance(TTL);
    assert!(q.try_take().is_none());
    assert_eq!(q.stats().ttl_expired, 2);
}

#[test]
fn a_batch_receive_passes_over_killed_and_expired_messages() {
    let clock = ManualClock::new();
    let q: Queue<u32> = ttl_queue(&clock, 16, None);
    let short = SendOptions::new().ttl(ms(2));
    for n in 0..8 {
        if n % 2 == 0 {
            q.send_with(n, &short).unwrap();
        } else {
            q.send(n).unwrap();
        }
    }
    clock.advance(ms(2));
    q.stats(); // the wheel kills the even ones inside the ready ring
    let mut batch = Vec::with_capacity(8);
    assert_eq!(q.receive_batch(&mut batch, 8, Duration::ZERO), 4);
    let bodies: Vec<u32> = batch.iter().map(|d| *d.body()).collect();
    assert_eq!(bodies, [1, 3, 5, 7], "in send order, the dead passed over");
    let s = q.stats();
    assert_eq!((s.received, s.in_flight, s.ttl_expired), (4, 4, 4));
}

#[test]
fn per_message_ttl_shorter_and_longer_than_the_queues() {
    let clock = ManualClock::new();
    let q: Queue<u32> = ttl_queue(&clock, 8, None);
    assert_eq!(q.message_ttl(), Some(TTL));
    q.send_with(1, &SendOptions::new().ttl(ms(3))).unwrap();
    q.send(2).unwrap();
    q.send_with(3, &SendOptions::new().ttl(ms(30))).unwrap();
    clock.advance(ms(2));
    assert_eq!(counts(&q).0, 3);
    clock.advance(ms(2)); // 4 ms: the 3 ms message is gone
    assert_eq!(counts(&q).3, 1);
    clock.advance(ms(5)); // 9 ms: the queue's 10 ms not yet
    assert_eq!(counts(&q), (2, 0, 0, 1, 0));
    clock.advance(ms(2)); // 11 ms
    assert_eq!(counts(&q), (1, 0, 0, 2, 0));
    clock.advance(ms(18)); // 29 ms
    assert_eq!(*q.try_receive().unwrap().body(), 3);
}

#[test]
fn a_delayed_message_whose_ttl_ends_during_its_delay_dies_unseen() {
    let clock = ManualClock::new();
    let dlq = dead_letter_queue(&clock, 8);
    let q: Queue<u32> = ttl_queue(&clock, 8, Some(&dlq));
    q.send_with(1, &SendOptions::new().delay(ms(40))).unwrap();
    q.send_with(2, &SendOptions::new().delay(ms(5))).unwrap();
    clock.advance(TTL - TICK);
    assert_eq!(counts(&q), (1, 1, 0, 0, 0));
    clock.advance(TICK + TICK); // past the 10 ms time-to-live, long before the 40 ms delay
    assert_eq!(counts(&q), (0, 0, 0, 2, 0));
    let causes: Vec<_> = dlq.dead_letters(10).into_iter().map(|l| l.cause).collect();
    assert_eq!(causes, [DeathCause::TimeToLive, DeathCause::TimeToLive]);
    clock.advance(ms(40));
    assert!(q.try_receive().is_none());
}

#[test]
fn a_leased_message_outlives_its_ttl_and_dies_when_its_lease_ends() {
    let clock = ManualClock::new();
    let dlq = dead_letter_queue(&clock, 8);
    let q: Queue<u32> = ttl_queue(&clock, 8, Some(&dlq));
    for n in 0..5 {
        q.send(n).unwrap();
    }
    let leases: Vec<_> = (0..5).map(|_| q.try_receive().unwrap()).collect();
    clock.advance(TTL + ms(5));
    assert_eq!(
        counts(&q),
        (0, 0, 5, 0, 0),
        "a lease is never cut short by its TTL"
    );
    // Each way a lease can end, after the time-to-live: it dies instead of coming back.
    q.release(leases[0].receipt()).unwrap();
    q.hand_back(leases[1].receipt()).unwrap();
    q.nack(leases[2].receipt(), Nack::after(ms(5))).unwrap();
    q.change_visibility(leases[3].receipt(), Duration::ZERO)
        .unwrap();
    assert_eq!(counts(&q), (0, 0, 1, 4, 0));
    // The last one by expiry, a tick after its deadline.
    clock.advance(LEASE);
    assert_eq!(counts(&q), (0, 0, 0, 5, 0));
    assert!(q.try_receive().is_none());
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 5);
    let mut causes_and_counts: Vec<_> = letters
        .into_iter()
        .map(|l| (l.cause, l.receive_count))
        .collect();
    causes_and_counts.sort_by_key(|(_, count)| *count);
    // The hand-back took its receive off again.
    let expected = [0, 1, 1, 1, 1].map(|count| (DeathCause::TimeToLive, count));
    assert_eq!(causes_and_counts, expected);
    // The late receipt of the lease that expired: its slot is free again.
    assert_eq!(
        q.delete(leases[4].receipt()),
        Err(visq::ReceiptError::Stale)
    );
}

#[test]
fn a_lease_that_ends_before_the_ttl_makes_the_message_visible_and_the_ttl_still_counts() {
    let clock = ManualClock::new();
    let q: Queue<u32> = ttl_queue(&clock, 8, None);
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    clock.advance(ms(4));
    q.release(d.receipt()).unwrap();
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
    // Expired by its lease's deadline at 54 ms, long after its TTL: dies then.
    clock.advance(LEASE);
    assert_eq!(counts(&q), (0, 0, 0, 1, 0));
}

#[test]
fn a_full_dead_letter_queue_keeps_the_message_and_the_move_is_retried() {
    let clock = ManualClock::new();
    let dlq = dead_letter_queue(&clock, 1);
    let q: Queue<u32> = ttl_queue(&clock, 8, Some(&dlq));
    dlq.send(99).unwrap();
    q.send(1).unwrap(); // killed in the ready ring
    q.send_with(2, &SendOptions::new().delay(ms(20))).unwrap(); // killed while delayed
    clock.advance(TTL + TICK);
    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.ttl_expired),
        (0, 2, 0),
        "held, waiting: {s:?}"
    );
    assert!(s.dead_letter_retries >= 2);
    assert!(
        q.try_receive().is_none(),
        "a killed message is never delivered"
    );
    let d = dlq.try_receive().unwrap();
    dlq.delete(d.receipt()).unwrap();
    clock.advance(ms(10)); // the retry
    let s = q.stats();
    assert_eq!(
        (s.delayed, s.ttl_expired, s.dead_lettered),
        (1, 1, 1),
        "{s:?}"
    );
    let d = dlq.try_receive().unwrap();
    assert_eq!(*d.body(), 1);
    dlq.delete(d.receipt()).unwrap();
    clock.advance(ms(10));
    let s = q.stats();
    assert_eq!(
        (s.delayed, s.ttl_expired, s.dead_lettered, s.deleted),
        (0, 2, 2, 0)
    );
    assert_eq!(dlq.dead_letters(10)[0].cause, DeathCause::TimeToLive);
    // Every slot is free again: the queue takes its capacity.
    for n in 0..8 {
        q.send(n).unwrap();
    }
}

#[test]
fn a_full_queue_reuses_the_slots_of_messages_killed_in_its_ready_ring() {
    let clock = ManualClock::new();
    let q: Queue<u32> = ttl_queue(&clock, 2, None);
    q.send(1).unwrap();
    q.send(2).unwrap();
    assert_eq!(q.send(3), Err(SendError::Full(3)));
    clock.advance(TTL + TICK);
    assert_eq!(counts(&q), (0, 0, 0, 2, 0));
    // Nobody popped their indices: the sender reclaims them.
    q.send(3).unwrap();
    q.send(4).unwrap();
    assert_eq!(q.send(5), Err(SendError::Full(5)));
    assert_eq!(*q.try_receive().unwrap().body(), 3);
}

#[test]
fn sent_and_deleted_balance_at_rest() {
    let clock = ManualClock::new();
    let bodies = Counts::new();
    let q: Queue<Body> = ttl_queue(&clock, 64, None);
    let mut deleted = 0;
    for round in 0..20u32 {
        for n in 0..3 {
            q.send(Body::new(&bodies, round * 3 + n)).unwrap();
        }
        // One deleted, one leased past its TTL and released, one left to expire.
        let d = q.try_receive().unwrap();
        q.delete(d.receipt()).unwrap();
        deleted += 1;
        let d = q.try_receive().unwrap();
        clock.advance(TTL + TICK);
        q.release(d.receipt()).unwrap();
        let s = q.stats();
        assert_eq!(
            (s.sent, s.deleted, s.ttl_expired),
            (u64::from(round + 1) * 3, deleted, u64::from(round + 1) * 2),
            "{s:?}"
        );
        assert_eq!((s.ready, s.delayed, s.in_flight), (0, 0, 0));
    }
    drop(q);
    assert_eq!(bodies.live(), 0);
}

#[test]
fn options_the_queue_cannot_honour_are_refused_with_the_body() {
    let clock = ManualClock::new();
    let plain: Queue<u32> = Queue::builder().clock(clock.clone()).build().unwrap();
    assert_eq!(
        plain.send_with(1, &SendOptions::new().ttl(ms(5))),
        Err(SendError::Invalid(1, InvalidSend::NoMessageTtl))
    );
    let q: Queue<u32> = ttl_queue(&clock, 8, None);
    for ttl in [Duration::ZERO, MAX_MESSAGE_TTL + Duration::from_nanos(1)] {
        assert_eq!(
            q.send_with(2, &SendOptions::new().ttl(ttl)),
            Err(SendError::Invalid(2, InvalidSend::TtlOutOfRange))
        );
    }
    q.send_with(3, &SendOptions::new().ttl(MAX_MESSAGE_TTL))
        .unwrap();
    let s = q.stats();
    assert_eq!((s.sent, s.refused_sends, s.ready), (1, 2, 1));
    let refused = Queue::<u32>::builder().message_ttl(Duration::ZERO).build();
    assert_eq!(refused.unwrap_err(), BuildError::InvalidMessageTtl);
    let refused = Queue::<u32>::builder()
        .message_ttl(ms(5))
        .message_groups(4)
        .build();
    assert_eq!(refused.unwrap_err(), BuildError::TtlWithGroups);
}

#[test]
fn the_longest_ttl_is_honoured_past_the_wheels_range() {
    // 14 days at a 1 ms tick is beyond what the wheel files at once (it re-files from half
    // its range); the message is alive a tick before its deadline and gone a tick after.
    let clock = ManualClock::new();
    let q: Queue<u32> = ttl_queue(&clock, 8, None);
    q.send_with(1, &SendOptions::new().ttl(MAX_MESSAGE_TTL))
        .unwrap();
    let day = Duration::from_secs(86_400);
    for _ in 0..13 {
        clock.advance(day);
        assert_eq!(counts(&q).0, 1);
    }
    clock.advance(day - TICK);
    assert_eq!(counts(&q).0, 1);
    clock.advance(TICK + TICK);
    assert_eq!(counts(&q), (0, 0, 0, 1, 0));
}

#[test]
fn a_queue_without_ttl_keeps_its_messages() {
    let clock = ManualClock::new();
    let q: Queue<u32> = Queue::builder().clock(clock.clone()).build().unwrap();
    q.send(1).unwrap();
    clock.advance(MAX_MESSAGE_TTL * 2);
    let s = q.stats();
    assert_eq!((s.ready, s.ttl_expired), (1, 0));
    assert_eq!(q.memory().ttl, 0);
    assert_eq!(q.message_ttl(), None);
    assert_eq!(*q.try_receive().unwrap().body(), 1);
    let with_ttl: Queue<u32> = ttl_queue(&clock, 1024, None);
    assert!(
        with_ttl.memory().ttl >= 2 * 1024 * 8,
        "expiry ticks and graves"
    );
}

#[test]
fn dead_letter_inspection_on_a_ttl_queue_skips_killed_messages() {
    // A dead-letter queue with a time-to-live of its own: dead letters expire there too.
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(ttl_queue(&clock, 8, None));
    let q: Queue<u32> = Queue::builder()
        .clock(clock.clone())
        .tick(TICK)
        .visibility_timeout(LEASE)
        .dead_letter(dlq.clone(), 1)
        .build()
        .unwrap();
    q.send(1).unwrap();
    q.send(2).unwrap();
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap(); // to the dead-letter queue at 0 ms
    clock.advance(ms(6));
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap(); // at 6 ms
    assert_eq!(dlq.dead_letters(10).len(), 2);
    clock.advance(ms(5)); // the first has lived 11 ms there
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.iter().map(|l| l.body).collect::<Vec<_>>(), [2]);
    assert_eq!(dlq.stats().ttl_expired, 1);
    assert_eq!(dlq.redrive(&q, None, 10).moved, 1);
    assert_eq!(*q.try_receive().unwrap().body(), 2);
}

/// 2 senders and 2 receivers on the real clock (tick 100 µs, TTL 1 ms), 20,000 messages; the
/// receivers pause 2 ms (real time, the only way to let a real clock's TTL pass) every 2,000
/// receives, so that many messages expire while others are received: every message is
/// delivered and deleted exactly once or dead-lettered by its TTL exactly once, and every body
/// is dropped once. Bounded: it fails after 60 s.
#[test]
fn stress_every_message_is_delivered_once_or_dies_of_its_ttl_once() {
    const SENDERS: u32 = 2;
    const PER_SENDER: u32 = 10_000;
    let bodies = Counts::new();
    let dlq: Arc<Queue<Body>> = Arc::new(Queue::builder().capacity(32_768).build().unwrap());
    let q: Arc<Queue<Body>> = Arc::new(
        Queue::builder()
            .capacity(1024)
            .tick(Duration::from_micros(100))
            .message_ttl(Duration::from_millis(1))
            .visibility_timeout(Duration::from_secs(60))
            .dead_letter(dlq.clone(), 100)
            .build()
            .unwrap(),
    );
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let senders_done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let give_up = Instant::now() + Duration::from_secs(60);
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (q, bodies, sent) = (q.clone(), bodies.clone(), sent.clone());
            thread::spawn(move || {
                for n in 0..PER_SENDER {
                    let mut body = Body::new(&bodies, s * PER_SENDER + n);
                    loop {
                        match q.send(body) {
                            Ok(_) => break,
                            Err(SendError::Full(back)) => {
                                assert!(Instant::now() < give_up, "stuck full");
                                body = back;
                                thread::yield_now();
                            }
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let receivers: Vec<_> = (0..2)
        .map(|r: usize| {
            let (q, deleted, done) = (q.clone(), deleted.clone(), senders_done.clone());
            thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    match q.try_receive() {
                        Some(d) => {
                            mine.push(d.body().value);
                            q.delete(d.receipt()).unwrap();
                            if mine.len() % 2_000 == 1_000 * r {
                                thread::sleep(Duration::from_millis(2));
                            }
                        }
                        None if done.load(Ordering::SeqCst) && q.stats().ready == 0 => break,
                        None => thread::yield_now(),
                    }
                    assert!(Instant::now() < give_up, "receivers stuck");
                }
                deleted.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    senders_done.store(true, Ordering::SeqCst);
    for r in receivers {
        r.join().unwrap();
    }
    // Let every last message die or be received: wait (real time) for the TTL to pass.
    while q.stats().delayed + q.stats().ready > 0 {
        assert!(Instant::now() < give_up, "messages left");
        thread::sleep(Duration::from_millis(1));
        while let Some(d) = q.try_receive() {
            deleted.lock().unwrap().push(d.body().value);
            q.delete(d.receipt()).unwrap();
        }
    }
    let mut seen = vec![0u8; (SENDERS * PER_SENDER) as usize];
    let deleted = std::mem::take(&mut *deleted.lock().unwrap());
    for v in &deleted {
        seen[*v as usize] += 1;
    }
    let mut dead = 0u64;
    while let Some(d) = dlq.try_receive() {
        seen[d.body().value as usize] += 1;
        dead += 1;
        dlq.delete(d.receipt()).unwrap();
    }
    assert!(seen.iter().all(|&n| n == 1), "each message exactly once");
    let s = q.stats();
    assert_eq!(s.sent, u64::from(SENDERS * PER_SENDER));
    assert_eq!((s.ready, s.delayed, s.in_flight), (0, 0, 0));
    assert_eq!((s.ttl_expired, s.dead_lettered), (dead, dead));
    assert_eq!(s.deleted, deleted.len() as u64);
    assert!(
        dead > 0 && !deleted.is_empty(),
        "both fates happened: {dead} dead"
    );
    drop(q);
    drop(dlq);
    assert_eq!(bodies.live(), 0, "every body dropped once");
    println!(
        "stress: {} delivered, {dead} died of their TTL",
        deleted.len()
    );
}

/// A redrive or an inspection walks each level once and leaves the order of what stays as it
/// was, also when killed messages sit between the live ones in the ready ring (their positions
/// are passed inside the claim, which a count of pops would miss: the walk then went round
/// once more and moved a message it had seen to the back).
#[test]
fn a_redrive_that_keeps_everything_leaves_the_order_with_killed_messages_inside() {
    let clock = ManualClock::new();
    let q: Queue<&str> = ttl_queue(&clock, 8, None);
    let to: Queue<&str> = ttl_queue(&clock, 8, None);
    let long = SendOptions::new().ttl(ms(3_600_000));
    q.send_with("a", &long).unwrap();
    q.send_with("killed", &SendOptions::new().ttl(ms(1)))
        .unwrap();
    q.send_with("b", &long).unwrap();
    q.send_with("c", &long).unwrap();
    clock.advance(ms(2));
    assert_eq!(q.stats().ttl_expired, 1, "killed in the ring, behind a");
    // No message here died anywhere: a redrive restricted to a source keeps them all.
    let redriven = q.redrive(&to, Some(to.id()), usize::MAX);
    assert_eq!(redriven.moved, 0);
    assert!(
        q.dead_letters(1).is_empty(),
        "no death records: nothing listed"
    );
    let order: Vec<&str> = std::iter::from_fn(|| q.try_take().map(|t| t.into_body())).collect();
    assert_eq!(order, ["a", "b", "c"]);
}

/// A body whose `Drop` panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("a body's drop panics");
        }
    }
}

/// The wheel's dropped bodies are dropped at the end of whichever operation ran the wheel (a
/// send into this queue from a move or a redrive, a receive's lease, `stats`), which may hold
/// a body or a slot of its own at that moment: a panicking `Drop` there is caught, and the
/// operation goes on.
#[test]
fn a_panicking_drop_of_an_expired_body_does_not_unwind_through_the_operation_that_ran_the_wheel() {
    let clock = ManualClock::new();
    let q: Queue<PanicsOnDrop> = ttl_queue(&clock, 4, None);
    assert!(q.send(PanicsOnDrop).is_ok());
    clock.advance(TTL + TICK);
    let stats = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.stats()));
    let stats = stats.expect("the drop's panic stays inside the wheel's clean-up");
    assert_eq!((stats.ttl_expired, stats.ready), (1, 0));
    // The slot was freed before the drop: the queue goes on.
    std::mem::forget(q.send(PanicsOnDrop));
    assert_eq!(q.stats().ready, 1);
    std::mem::forget(q.try_take().map(|t| t.into_body()));
}
