//! At-most-once receive (`Queue::try_take` / `Queue::take`): the message leaves the queue as it
//! is handed over, is never delivered again, moves its body out (no clone), is counted as
//! received and deleted, allocates nothing, and races other receivers without losing or
//! duplicating anything. Queue time is driven by `ManualClock`; the only real waits are the
//! short `take(wait)` timeouts, which are wall-clock by the API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;
use visq::{ManualClock, Queue, ReceiptError};

#[path = "support/counted_body.rs"]
mod counted_body;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counted_body::{Body, Counts};
use counting_alloc::no_alloc;

const TICK: Duration = Duration::from_millis(1);
const LEASE: Duration = Duration::from_secs(5);

fn queue<T>(capacity: usize, clock: &ManualClock) -> Queue<T> {
    Queue::builder()
        .capacity(capacity)
        .visibility_timeout(LEASE)
        .tick(TICK)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn a_take_removes_the_message_in_send_order_and_moves_the_body() {
    let counts = Counts::new();
    let q: Queue<Body> = queue(4, &ManualClock::new());
    let first = q.send(Body::new(&counts, 1)).unwrap();
    let second = q.send(Body::new(&counts, 2)).unwrap();
    let taken = q.try_take().unwrap();
    assert_eq!(
        (taken.id(), taken.receive_count(), taken.body().value),
        (first, 1, 1)
    );
    drop(taken);
    let taken = q.try_take().unwrap();
    assert_eq!((taken.id(), taken.into_body().value), (second, 2));
    assert!(q.try_take().is_none());
    assert!(
        q.try_receive().is_none(),
        "taken messages are gone, not leased"
    );
    let (created, cloned, dropped) = counts.all();
    assert_eq!(
        (created, cloned, dropped),
        (2, 0, 2),
        "moved out, never cloned"
    );
}

#[test]
fn a_take_is_counted_as_received_and_deleted_and_frees_the_slot() {
    let q: Queue<u32> = queue(1, &ManualClock::new());
    q.send(1).unwrap();
    q.try_take().unwrap();
    let stats = q.stats();
    assert_eq!((stats.sent, stats.received, stats.deleted), (1, 1, 1));
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
    q.send(2).expect("the only slot is free again");
}

#[test]
fn a_take_of_a_redelivered_message_reports_its_receive_count() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(2, &clock);
    q.send(9).unwrap();
    let lease = q.try_receive().unwrap();
    clock.advance(LEASE + TICK);
    let taken = q.try_take().expect("visible again after its lease expired");
    assert_eq!((taken.receive_count(), *taken.body()), (2, 9));
    assert!(matches!(
        q.delete(lease.receipt()),
        Err(ReceiptError::Expired | ReceiptError::Stale)
    ));
    let stats = q.stats();
    assert_eq!((stats.received, stats.expired, stats.deleted), (2, 1, 1));
}

#[test]
fn a_delayed_message_is_taken_at_its_deadline_never_a_tick_early() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(2, &clock);
    q.send_delayed(3, Duration::from_millis(10)).unwrap();
    clock.advance(Duration::from_millis(10) - TICK);
    assert!(q.try_take().is_none(), "a tick before the deadline");
    clock.advance(2 * TICK);
    assert_eq!(q.try_take().unwrap().into_body(), 3);
}

#[test]
fn take_waits_and_returns_none_after_wait_or_at_once_when_closed() {
    let q: Arc<Queue<u32>> = Arc::new(queue(2, &ManualClock::new()));
    // Wall-clock waits (the API's `wait` is wall-clock): kept to a few milliseconds.
    assert!(q.take(Duration::from_millis(2)).is_none());
    let sender = {
        let q = q.clone();
        thread::spawn(move || q.send(4).unwrap())
    };
    assert_eq!(q.take(Duration::from_secs(10)).unwrap().into_body(), 4);
    sender.join().unwrap();
    q.send(5).unwrap();
    q.close();
    assert_eq!(
        q.take(Duration::from_secs(10)).unwrap().into_body(),
        5,
        "drains"
    );
    let started = std::time::Instant::now();
    assert!(q.take(Duration::from_secs(10)).is_none());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once on a closed queue"
    );
}

#[test]
fn a_take_on_a_dead_letter_source_drops_no_record_of_another_message() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(queue(4, &clock));
    let q: Queue<u32> = Queue::builder()
        .capacity(2)
        .visibility_timeout(LEASE)
        .tick(TICK)
        .clock(clock.clone())
        .dead_letter(dlq.clone(), 1)
        .build()
        .unwrap();
    q.send(1).unwrap();
    q.try_receive().unwrap();
    clock.advance(LEASE + TICK);
    q.send(2).unwrap();
    // The first message went to the dead-letter queue at its expiry; a take there carries it.
    assert_eq!(q.try_take().unwrap().into_body(), 2);
    assert_eq!(dlq.try_take().unwrap().into_body(), 1);
    assert_eq!(q.stats().dead_lettered, 1);
}

#[test]
fn take_allocates_nothing() {
    let clock = ManualClock::new();
    let q: Queue<u64> = queue(8, &clock);
    q.send(1).unwrap();
    q.send_delayed(2, Duration::from_millis(3)).unwrap();
    assert_eq!(
        no_alloc("try_take", || q.try_take()).unwrap().into_body(),
        1
    );
    assert!(no_alloc("try_take on nothing visible", || q.try_take()).is_none());
    assert!(no_alloc("take(0)", || q.take(Duration::ZERO)).is_none());
    clock.advance(Duration::from_millis(3));
    let due = no_alloc("try_take of a message the wheel makes visible", || {
        q.try_take()
    });
    assert_eq!(due.unwrap().into_body(), 2);
}

/// Takers and leasing receivers race over one queue: every message is handed out exactly once
/// (a take, or a receive followed by a delete), none twice, none lost; every body dropped once.
#[test]
fn takers_and_receivers_share_every_message_exactly_once() {
    const MESSAGES: u32 = 20_000;
    const EACH: usize = 2;
    let counts = Counts::new();
    let q: Arc<Queue<Body>> = Arc::new(queue(256, &ManualClock::new()));
    let seen: Arc<Vec<AtomicUsize>> =
        Arc::new((0..MESSAGES).map(|_| AtomicUsize::new(0)).collect());
    let start = Arc::new(Barrier::new(2 * EACH + 1));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for taker in [true, false] {
        for _ in 0..EACH {
            let (q, seen, start, done) = (q.clone(), seen.clone(), start.clone(), done.clone());
            workers.push(thread::spawn(move || {
                start.wait();
                let mut mine = 0u32;
                while done.load(Ordering::SeqCst) < MESSAGES as usize {
                    let value = if taker {
                        q.take(Duration::from_millis(1))
                            .map(|t| t.into_body().value)
                    } else {
                        q.receive(Duration::from_millis(1)).map(|d| {
                            q.delete(d.receipt())
                                .expect("the lease is far from expiring");
                            d.body().value
                        })
                    };
                    if let Some(value) = value {
                        seen[value as usize].fetch_add(1, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                        mine += 1;
                    }
                }
                mine
            }));
        }
    }
    start.wait();
    for value in 0..MESSAGES {
        let mut body = Body::new(&counts, value);
        loop {
            match q.send(body) {
                Ok(_) => break,
                Err(full) => {
                    body = full.into_inner();
                    thread::yield_now();
                }
            }
        }
    }
    let per_worker: Vec<u32> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(per_worker.iter().sum::<u32>(), MESSAGES);
    assert!(
        seen.iter().all(|n| n.load(Ordering::SeqCst) == 1),
        "each exactly once"
    );
    let stats = q.stats();
    assert_eq!(
        (stats.sent, stats.received, stats.deleted),
        (MESSAGES as u64, MESSAGES as u64, MESSAGES as u64)
    );
    drop(q);
    assert_eq!(counts.live(), 0, "every body dropped once");
}
