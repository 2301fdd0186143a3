//! Priority levels ([`visq::Builder::priorities`]): order across and within levels, a message
//! keeping its level for life in its queue, every receive form honouring levels, dead letters
//! and redriven messages at level 0, refused options, one level behaving as before, a bounded
//! concurrent stress that accounts for every message, and no allocation on the hot path.
//!
//! Queue time is driven with `ManualClock`; nothing here sleeps to let queue time pass.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use visq::{Delivery, InvalidSend, ManualClock, Nack, Queue, SendError, SendOptions};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

fn at(priority: u8) -> SendOptions {
    SendOptions::new().priority(priority)
}

fn queue(levels: u8, clock: &ManualClock) -> Queue<&'static str> {
    Queue::builder()
        .capacity(16)
        .priorities(levels)
        .visibility_timeout(Duration::from_secs(10))
        .tick(Duration::from_millis(1))
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Takes everything visible now, in delivery order.
fn drain<T>(q: &Queue<T>) -> Vec<T> {
    std::iter::from_fn(|| q.try_take().map(|taken| taken.into_body())).collect()
}

#[test]
fn highest_level_first_and_fifo_within_a_level() {
    let q = queue(4, &ManualClock::new());
    assert_eq!(q.priority_levels(), 4);
    for (body, priority) in [
        ("a0", 0),
        ("b2", 2),
        ("c3", 3),
        ("d0", 0),
        ("e2", 2),
        ("f1", 1),
        ("g3", 3),
    ] {
        q.send_with(body, &at(priority)).unwrap();
    }
    q.send("h0").unwrap(); // a plain send is level 0
    let order: Vec<_> = std::iter::from_fn(|| q.try_receive().map(|d| *d.body())).collect();
    assert_eq!(order, ["c3", "g3", "b2", "e2", "f1", "a0", "d0", "h0"]);
}

#[test]
fn a_message_given_back_keeps_its_level_and_goes_to_its_back() {
    let clock = ManualClock::new();
    let q = queue(2, &clock);
    q.send_with("hi-1", &at(1)).unwrap();
    q.send_with("hi-2", &at(1)).unwrap();
    q.send("lo-1").unwrap();

    // Released: back of level 1, still before level 0.
    let first = q.try_receive().unwrap();
    assert_eq!(*first.body(), "hi-1");
    q.release(first.receipt()).unwrap();
    let second = q.try_receive().unwrap();
    assert_eq!(*second.body(), "hi-2");
    let again = q.try_receive().unwrap();
    assert_eq!((*again.body(), again.receive_count()), ("hi-1", 2));

    // Handed back (unused): back of level 1.
    q.hand_back(second.receipt()).unwrap();
    // Expired: `hi-1`'s lease runs out, and it comes back at level 1, after `hi-2`.
    clock.advance(Duration::from_secs(10));
    let order: Vec<_> = std::iter::from_fn(|| q.try_receive()).collect();
    let bodies: Vec<_> = order.iter().map(|d| *d.body()).collect();
    assert_eq!(bodies, ["hi-2", "hi-1", "lo-1"]);

    // Nacked with a delay: invisible for the delay, then level 1 again, before level 0 that
    // was visible all along.
    let [hi_2, hi_1, lo_1] = <[Delivery<&str>; 3]>::try_from(order).ok().unwrap();
    q.nack(hi_1.receipt(), Nack::after(Duration::from_secs(5)))
        .unwrap();
    q.release(lo_1.receipt()).unwrap();
    q.delete(hi_2.receipt()).unwrap();
    q.send("lo-2").unwrap();
    let lo = q.try_receive().unwrap();
    assert_eq!(*lo.body(), "lo-1", "hi-1 is still delayed");
    q.release(lo.receipt()).unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(drain(&q), ["hi-1", "lo-2", "lo-1"]);
}

#[test]
fn a_delayed_send_becomes_visible_at_its_level() {
    let clock = ManualClock::new();
    let q = queue(3, &clock);
    q.send_with("late-2", &at(2).delay(Duration::from_secs(1)))
        .unwrap();
    q.send_with("now-1", &at(1)).unwrap();
    q.send("now-0").unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(drain(&q), ["late-2", "now-1", "now-0"]);
}

/// A receive made once a higher-level lease has expired gets that message, not the lower
/// level's that was visible all along: the expiry ranks by its level as soon as it is due,
/// even if nothing has run the wheel since.
#[test]
fn an_expired_lease_outranks_lower_levels_once_due() {
    let clock = ManualClock::new();
    let q = queue(3, &clock);
    q.send_with("hi", &at(2)).unwrap();
    let abandoned = q.try_receive().unwrap();
    assert_eq!(*abandoned.body(), "hi");
    q.send("lo").unwrap();
    clock.advance(Duration::from_secs(10) - Duration::from_millis(1));
    let early = q.try_receive().unwrap();
    assert_eq!(*early.body(), "lo", "not expired a tick early");
    q.release(early.receipt()).unwrap();
    clock.advance(Duration::from_millis(1));
    let again = q.try_receive().unwrap();
    assert_eq!((*again.body(), again.receive_count()), ("hi", 2));
}

#[test]
fn a_reused_slot_takes_the_level_of_its_new_message() {
    let q = queue(2, &ManualClock::new());
    q.send_with("hi", &at(1)).unwrap();
    assert_eq!(drain(&q), ["hi"]);
    // The free stack is LIFO: the plain send reuses the slot that held a level-1 message.
    q.send("plain").unwrap();
    q.send_with("hi-again", &at(1)).unwrap();
    assert_eq!(drain(&q), ["hi-again", "plain"]);
}

/// A body whose clone panics while `PANICKY` is set.
#[derive(Debug, PartialEq)]
struct Fragile(&'static str);

static PANICKY: AtomicBool = AtomicBool::new(false);

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(!PANICKY.load(Ordering::Relaxed), "clone failed");
        Fragile(self.0)
    }
}

/// A message given back because its clone panicked goes back to its own level, ahead of the
/// lower levels (and to the back of its level).
#[test]
fn a_message_given_back_by_a_panicking_clone_keeps_its_level() {
    let q: Queue<Fragile> = Queue::builder().priorities(2).build().unwrap();
    q.send(Fragile("lo")).unwrap();
    q.send_with(Fragile("hi-1"), &at(1)).unwrap();
    q.send_with(Fragile("hi-2"), &at(1)).unwrap();
    PANICKY.store(true, Ordering::Relaxed);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.try_receive()));
    PANICKY.store(false, Ordering::Relaxed);
    assert!(unwound.is_err());
    let order: Vec<_> = std::iter::from_fn(|| q.try_receive().map(|d| d.body().0)).collect();
    assert_eq!(order, ["hi-2", "hi-1", "lo"]);
    assert_eq!(q.stats().received, 3, "the panicked pop was no delivery");
}

#[test]
fn take_and_receive_batch_honour_levels() {
    let q = queue(3, &ManualClock::new());
    for (body, priority) in [("a0", 0), ("b1", 1), ("c2", 2), ("d1", 1), ("e0", 0)] {
        q.send_with(body, &at(priority)).unwrap();
    }
    assert_eq!(q.take(Duration::ZERO).unwrap().into_body(), "c2");
    let mut batch = Vec::with_capacity(8);
    assert_eq!(q.receive_batch(&mut batch, 3, Duration::ZERO), 3);
    let bodies: Vec<_> = batch.iter().map(|d| *d.body()).collect();
    assert_eq!(bodies, ["b1", "d1", "a0"]);
    // A message sent at a higher level after the batch comes before the rest of level 0.
    q.send_with("f2", &at(2)).unwrap();
    assert_eq!(
        q.try_take().map(|t| t.into_body()),
        Some("f2"),
        "the batch left e0 at level 0"
    );
    assert_eq!(drain(&q), ["e0"]);
}

#[test]
fn dead_letters_enter_at_level_0_and_are_inspected_highest_first() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<&str>> = Arc::new(queue(2, &clock));
    let q: Queue<&str> = Queue::builder()
        .capacity(8)
        .priorities(2)
        .clock(clock.clone())
        .dead_letter(dlq.clone(), 1)
        .build()
        .unwrap();
    // The dead-letter queue already holds one message of each level, sent to it directly.
    dlq.send("dlq-0").unwrap();
    dlq.send_with("dlq-1", &at(1)).unwrap();
    // A level-1 message dies on its first release: it enters the dead-letter queue at level 0,
    // behind the level-0 message already there.
    q.send_with("dead-1", &at(1)).unwrap();
    q.release(q.try_receive().unwrap().receipt()).unwrap();
    assert_eq!(dlq.stats().ready, 3);
    // Inspection looks level by level, highest first; only dead letters have records.
    let letters: Vec<_> = dlq.dead_letters(8).into_iter().map(|l| l.body).collect();
    assert_eq!(letters, ["dead-1"]);
    // It changed nothing: order is still level 1, then level 0 in arrival order.
    let order: Vec<_> = std::iter::from_fn(|| dlq.try_receive()).collect();
    let bodies: Vec<_> = order.iter().map(|d| *d.body()).collect();
    assert_eq!(bodies, ["dlq-1", "dlq-0", "dead-1"]);
    for delivery in &order {
        dlq.release(delivery.receipt()).unwrap();
    }

    // Redriven back to the source: a new message there, at level 0 (behind a level-1 one).
    q.send("q-0").unwrap();
    let moved = dlq.redrive(&q, Some(q.id()), usize::MAX);
    assert_eq!((moved.moved, moved.refused), (1, None));
    q.send_with("q-1", &at(1)).unwrap();
    assert_eq!(drain(&q), ["q-1", "q-0", "dead-1"]);
    // The other messages of the dead-letter queue kept their levels and order.
    assert_eq!(drain(&*dlq), ["dlq-1", "dlq-0"]);
}

#[test]
fn a_dead_letter_inspection_stopped_early_keeps_every_level_in_order() {
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().priorities(3).build().unwrap());
    let q: Queue<u32> = Queue::builder()
        .priorities(3)
        .dead_letter(dlq.clone(), 1)
        .build()
        .unwrap();
    for body in 0..4 {
        q.send(body).unwrap();
        q.release(q.try_receive().unwrap().receipt()).unwrap();
    }
    dlq.send_with(10, &at(2)).unwrap();
    dlq.send_with(11, &at(1)).unwrap();
    // Stops after two dead letters: both of level 0, after passing the higher levels.
    let letters: Vec<_> = dlq.dead_letters(2).into_iter().map(|l| l.body).collect();
    assert_eq!(letters, [0, 1]);
    assert_eq!(drain(&*dlq), [10, 11, 0, 1, 2, 3]);
}

#[test]
fn a_priority_out_of_range_is_refused_with_the_body_back() {
    let q = queue(3, &ManualClock::new());
    match q.send_with("too high", &at(3)) {
        Err(SendError::Invalid(body, why)) => {
            assert_eq!(body, "too high");
            assert_eq!(
                why,
                InvalidSend::PriorityOutOfRange {
                    priority: 3,
                    levels: 3
                }
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let plain = queue(1, &ManualClock::new());
    assert!(matches!(
        plain.send_with("no levels", &at(1)),
        Err(SendError::Invalid(
            "no levels",
            InvalidSend::PriorityOutOfRange {
                priority: 1,
                levels: 1
            }
        ))
    ));
    assert_eq!((q.stats().sent, plain.stats().sent), (0, 0));
    assert_eq!(plain.stats().refused_sends, 1);
}

#[test]
fn one_level_is_a_plain_fifo_queue() {
    let clock = ManualClock::new();
    let q = queue(1, &clock);
    assert_eq!(q.priority_levels(), 1);
    for body in ["a", "b", "c"] {
        q.send_with(body, &at(0)).unwrap();
    }
    let a = q.try_receive().unwrap();
    q.release(a.receipt()).unwrap();
    assert_eq!(drain(&q), ["b", "c", "a"]);
    // Memory: one ring, no level bytes; each further level adds a ring and the bytes.
    let one = q.memory().rings;
    let four = queue(4, &clock).memory().rings;
    assert!(four >= 4 * one + 16, "{four} vs {one}");
}

/// A body that counts its drops: the queue's own copy in `originals`, a receiver's clone in
/// `clones`, by message number.
struct Tracked {
    number: u32,
    clone: bool,
    drops: Arc<Drops>,
}

struct Drops {
    originals: Vec<AtomicU32>,
    clones: Vec<AtomicU32>,
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Tracked {
            number: self.number,
            clone: true,
            drops: self.drops.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let counts = if self.clone {
            &self.drops.clones
        } else {
            &self.drops.originals
        };
        counts[self.number as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Sets the flag when its thread unwinds, so that a failed check in one thread of the stress
/// stops the others (a sender waiting for room, a receiver waiting for messages) instead of
/// leaving them waiting for ever.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

const LEVELS: u8 = 4;
const SENDERS: u32 = 2;
const PER_SENDER: u32 = 10_000;
const TOTAL: u32 = SENDERS * PER_SENDER;

/// Message `number`'s sender, level and place in its sender's sequence of that level.
fn describe(number: u32) -> (u32, u8, u32) {
    let (sender, seq) = (number / PER_SENDER, number % PER_SENDER);
    // A pseudo-random level per message, so levels interleave unevenly.
    let level = (seq.wrapping_mul(2_654_435_761) >> 29) as u8 % LEVELS;
    (sender, level, seq)
}

/// 2 senders and 2 receivers (one receiving and deleting, one taking) on a 4-level queue
/// smaller than the traffic: every message is delivered once and deleted once, every body
/// the queue held is dropped once (and every clone a receiver got), and each receiver sees
/// each sender's messages of one level in that sender's order.
#[test]
fn stress_two_senders_two_receivers_four_levels() {
    let q: Arc<Queue<Tracked>> = Arc::new(
        Queue::builder()
            .capacity(256)
            .priorities(LEVELS)
            .visibility_timeout(Duration::from_secs(600))
            .build()
            .unwrap(),
    );
    let drops = Arc::new(Drops {
        originals: (0..TOTAL).map(|_| AtomicU32::new(0)).collect(),
        clones: (0..TOTAL).map(|_| AtomicU32::new(0)).collect(),
    });
    let delivered: Vec<AtomicU32> = (0..TOTAL).map(|_| AtomicU32::new(0)).collect();
    let received = AtomicUsize::new(0);
    let give_up = Instant::now() + Duration::from_secs(120);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for sender in 0..SENDERS {
            let (q, drops, stop) = (&q, &drops, &stop);
            s.spawn(move || {
                let _stop_on_panic = StopOnPanic(stop);
                for seq in 0..PER_SENDER {
                    let number = sender * PER_SENDER + seq;
                    let mut body = Tracked {
                        number,
                        clone: false,
                        drops: drops.clone(),
                    };
                    let options = at(describe(number).1);
                    loop {
                        match q.send_with(body, &options) {
                            Ok(_) => break,
                            Err(SendError::Full(back)) => body = back,
                            Err(_) => panic!("send refused"),
                        }
                        assert!(!stop.load(Ordering::Relaxed), "another thread failed");
                        std::thread::yield_now();
                    }
                }
            });
        }
        for receiver in 0..2 {
            let (q, delivered, received, stop) = (&q, &delivered, &received, &stop);
            s.spawn(move || {
                let _stop_on_panic = StopOnPanic(stop);
                // Per (sender, level): the last sequence number this receiver saw.
                let mut last = [[None::<u32>; LEVELS as usize]; SENDERS as usize];
                while received.load(Ordering::Relaxed) < TOTAL as usize {
                    assert!(!stop.load(Ordering::Relaxed), "another thread failed");
                    assert!(
                        Instant::now() < give_up,
                        "not every message arrived in time"
                    );
                    let wait = Duration::from_millis(5);
                    let number = if receiver == 0 {
                        let Some(delivery) = q.receive(wait) else {
                            continue;
                        };
                        assert_eq!(delivery.receive_count(), 1, "no lease ended");
                        let number = delivery.body().number;
                        q.delete(delivery.receipt()).unwrap();
                        number
                    } else {
                        let Some(taken) = q.take(wait) else {
                            continue;
                        };
                        taken.body().number
                    };
                    delivered[number as usize].fetch_add(1, Ordering::Relaxed);
                    received.fetch_add(1, Ordering::Relaxed);
                    let (sender, level, seq) = describe(number);
                    let previous = &mut last[sender as usize][level as usize];
                    assert!(
                        previous.map_or(true, |p| p < seq),
                        "sender {sender}, level {level}: {seq} after {previous:?}"
                    );
                    *previous = Some(seq);
                }
            });
        }
    });
    assert!(delivered.iter().all(|d| d.load(Ordering::Relaxed) == 1));
    let stats = q.stats();
    assert_eq!(
        (
            stats.sent,
            stats.received,
            stats.deleted,
            stats.ready,
            stats.in_flight
        ),
        (u64::from(TOTAL), u64::from(TOTAL), u64::from(TOTAL), 0, 0)
    );
    drop(q);
    assert!(drops
        .originals
        .iter()
        .all(|d| d.load(Ordering::Relaxed) == 1));
    // Receiver 0 cloned what it received; receiver 1 took the originals.
    let cloned: u32 = drops.clones.iter().map(|d| d.load(Ordering::Relaxed)).sum();
    assert!(cloned > 0 && cloned < TOTAL, "{cloned} clones");
    assert!(drops.clones.iter().all(|d| d.load(Ordering::Relaxed) <= 1));
}

#[test]
fn send_with_and_receive_allocate_nothing() {
    let clock = ManualClock::new();
    let q: Queue<u64> = Queue::builder()
        .capacity(8)
        .priorities(4)
        .clock(clock.clone())
        .build()
        .unwrap();
    let options: Vec<SendOptions> = (0..4).map(at).collect();
    for round in 0..3u64 {
        for (level, options) in options.iter().enumerate() {
            counting_alloc::no_alloc("send_with", || q.send_with(level as u64, options)).unwrap();
        }
        for expected in (0..4).rev() {
            let d = counting_alloc::no_alloc("try_receive", || q.try_receive()).unwrap();
            assert_eq!(*d.body(), expected, "round {round}");
            counting_alloc::no_alloc("release", || q.release(d.receipt())).unwrap();
            let d = counting_alloc::no_alloc("receive", || q.receive(Duration::ZERO)).unwrap();
            counting_alloc::no_alloc("delete", || q.delete(d.receipt())).unwrap();
        }
        assert!(counting_alloc::no_alloc("empty receive", || q.try_receive()).is_none());
    }
}
