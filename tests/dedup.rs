//! Deduplication: a dedup id sent within the window sends nothing and returns the original
//! message's id; the window expires on the clock; a full table or a refused send hands the body
//! back and records nothing; racing sends of one id send exactly one message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;
use visq::{
    dedup_hash, DedupBuildError, DedupQueue, DedupSendError, DedupStats, ManualClock, MessageId,
    Queue, Sent, MAX_TIMEOUT,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A queue of `queue_capacity` and a dedup front of `capacity` ids with a 60 s window, both on
/// one manual clock.
fn setup<T>(queue_capacity: usize, capacity: usize) -> (ManualClock, DedupQueue<T>) {
    let clock = ManualClock::new();
    let queue = Arc::new(
        Queue::builder()
            .capacity(queue_capacity)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let dedup = DedupQueue::builder(queue)
        .capacity(capacity)
        .window(secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    (clock, dedup)
}

#[test]
fn a_duplicate_within_the_window_returns_the_original_id_and_sends_nothing() {
    let (clock, d) = setup::<String>(16, 16);
    let first = d.send(1, "one".to_string()).unwrap();
    let Sent::New(id) = first else {
        panic!("the first send is new: {first:?}")
    };
    assert!(!first.is_duplicate());
    let other = d.send(2, "two".to_string()).unwrap();
    assert_ne!(other.id(), id);

    clock.advance(secs(30));
    let again = d.send(1, "one, retried".to_string()).unwrap();
    assert_eq!(again, Sent::Duplicate(id));
    assert!(again.is_duplicate());
    assert_eq!(again.id(), id);
    assert_eq!(d.lookup(1), Some(id));
    assert_eq!(d.lookup(3), None);

    let stats = d.queue().stats();
    assert_eq!((stats.sent, stats.ready), (2, 2));
    assert_eq!(d.stats().duplicates, 1);

    // Receiving and deleting the message does not forget its dedup id.
    let delivery = d.queue().try_receive().unwrap();
    assert_eq!((delivery.id(), delivery.body().as_str()), (id, "one"));
    d.queue().delete(delivery.receipt()).unwrap();
    assert_eq!(
        d.send(1, "one, late".to_string()).unwrap(),
        Sent::Duplicate(id)
    );
    assert_eq!(d.queue().stats().sent, 2);
    assert_eq!(d.stats().duplicates, 2);
}

#[test]
fn after_the_window_the_same_id_sends_again() {
    let (clock, d) = setup::<u32>(16, 16);
    let first = d.send(7, 1).unwrap().id();
    // One nanosecond before the window ends: still a duplicate.
    clock.advance(secs(60) - Duration::from_nanos(1));
    assert_eq!(d.send(7, 2).unwrap(), Sent::Duplicate(first));
    // At the end of the window: forgotten, sent again, and remembered anew.
    clock.advance(Duration::from_nanos(1));
    assert_eq!(d.lookup(7), None);
    let second = d.send(7, 3).unwrap();
    assert!(matches!(second, Sent::New(id) if id > first));
    // The new entry's window counts from the new send.
    clock.advance(secs(59));
    assert_eq!(d.send(7, 4).unwrap(), Sent::Duplicate(second.id()));
    clock.advance(secs(1));
    assert!(matches!(d.send(7, 5).unwrap(), Sent::New(_)));
    let bodies: Vec<u32> = std::iter::from_fn(|| d.queue().try_receive())
        .map(|delivery| *delivery.body())
        .collect();
    assert_eq!(bodies, vec![1, 3, 5]);
}

#[test]
fn defaults_follow_sqs_fifo_and_the_queue() {
    let queue = Arc::new(Queue::<u8>::builder().capacity(100).build().unwrap());
    let d = DedupQueue::new(queue.clone()).unwrap();
    assert_eq!(d.window(), Duration::from_secs(5 * 60));
    assert_eq!(d.capacity(), 100);
    assert!(Arc::ptr_eq(d.queue(), &queue));
    // The monotonic clock: a duplicate sent at once is found.
    let id = d.send(1, 1).unwrap().id();
    assert_eq!(d.send(1, 2).unwrap(), Sent::Duplicate(id));
    assert!(format!("{d:?}").contains("DedupQueue"));

    assert_eq!(
        DedupQueue::builder(queue.clone())
            .capacity(0)
            .build()
            .unwrap_err(),
        DedupBuildError::ZeroCapacity
    );
    assert_eq!(
        DedupQueue::builder(queue.clone())
            .window(Duration::ZERO)
            .build()
            .unwrap_err(),
        DedupBuildError::ZeroWindow
    );
    for too_large in [usize::MAX / 2, usize::MAX] {
        assert!(matches!(
            DedupQueue::builder(queue.clone()).capacity(too_large).build(),
            Err(DedupBuildError::CapacityTooLarge(n)) if n == too_large
        ));
    }
}

#[test]
fn keyed_sends_hash_byte_strings_into_the_id_space() {
    let (_, d) = setup::<&str>(16, 16);
    let id = d.send_keyed("order-1", "a").unwrap().id();
    assert_eq!(
        d.send_keyed(String::from("order-1"), "b").unwrap(),
        Sent::Duplicate(id)
    );
    assert_eq!(
        d.send_keyed(b"order-1".as_slice(), "c").unwrap(),
        Sent::Duplicate(id)
    );
    assert_eq!(
        d.send(dedup_hash(b"order-1"), "d").unwrap(),
        Sent::Duplicate(id)
    );
    assert!(matches!(
        d.send_keyed("order-2", "e").unwrap(),
        Sent::New(_)
    ));
    assert_eq!(d.queue().stats().sent, 2);
}

#[test]
fn a_full_table_refuses_with_the_body_and_never_evicts_a_live_id() {
    // Capacity 1: four buckets, and every id may use every one of them.
    let (clock, d) = setup::<String>(64, 1);
    let mut ids = Vec::new();
    let mut key = 0;
    let refused = loop {
        match d.send(key, format!("body {key}")) {
            Ok(sent) => ids.push(sent.id()),
            Err(refused) => break refused,
        }
        key += 1;
        assert!(key <= 64, "the table never filled up");
    };
    assert!(ids.len() >= d.capacity());
    assert_eq!(ids.len(), 4);
    assert_eq!(refused, DedupSendError::TableFull(format!("body {key}")));
    assert_eq!(
        refused.to_string(),
        "the deduplication table has no room for this id"
    );
    assert_eq!(format!("{refused:?}"), "TableFull(..)");
    assert_eq!(refused.into_inner(), format!("body {key}"));
    assert_eq!(d.stats().table_full, 1);
    assert_eq!(d.queue().stats().sent, 4);

    // Every live id is still remembered: duplicates are found, not refused.
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(
            d.send(k as u64, String::new()).unwrap(),
            Sent::Duplicate(*id)
        );
    }
    // Once the entries expire, their buckets are reused.
    clock.advance(secs(60));
    assert!(matches!(
        d.send(key, "late".to_string()).unwrap(),
        Sent::New(_)
    ));
    assert_eq!(d.queue().stats().sent, 5);
}

#[test]
fn a_refused_send_releases_the_reservation() {
    // A queue with room for one message.
    let (_, d) = setup::<u32>(1, 16);
    let first = d.send(1, 10).unwrap().id();
    assert_eq!(d.send(2, 20), Err(DedupSendError::Full(20)));
    assert_eq!(d.lookup(2), None);
    assert_eq!(d.stats().refused, 1);
    // Make room; the retry of id 2 is sent, not taken for a duplicate.
    let delivery = d.queue().try_receive().unwrap();
    assert_eq!(delivery.id(), first);
    d.queue().delete(delivery.receipt()).unwrap();
    let second = d.send(2, 21).unwrap();
    assert!(matches!(second, Sent::New(id) if id != first));
    assert_eq!(d.send(2, 22).unwrap(), Sent::Duplicate(second.id()));

    // Closed: the body comes back and nothing is recorded; a live id is still a duplicate.
    d.queue().close();
    assert_eq!(d.send(3, 30), Err(DedupSendError::Closed(30)));
    assert_eq!(d.lookup(3), None);
    assert_eq!(d.send(2, 23).unwrap(), Sent::Duplicate(second.id()));
    assert_eq!(d.stats().refused, 2);
    assert_eq!(
        DedupSendError::Closed(30).to_string(),
        "the queue is closed"
    );
}

#[test]
fn send_delayed_deduplicates_and_checks_the_delay() {
    let (clock, d) = setup::<u32>(16, 16);
    let id = d.send_delayed(5, 1, secs(10)).unwrap().id();
    assert_eq!(d.send_delayed(5, 2, secs(10)).unwrap(), Sent::Duplicate(id));
    assert_eq!(d.send(5, 3).unwrap(), Sent::Duplicate(id));
    assert_eq!(
        d.send_delayed(6, 4, MAX_TIMEOUT + Duration::from_nanos(1)),
        Err(DedupSendError::DelayTooLong(4))
    );
    assert_eq!(d.lookup(6), None);
    assert!(d.queue().try_receive().is_none());
    clock.advance(secs(10));
    assert_eq!(d.queue().try_receive().unwrap().id(), id);
}

/// Many threads send overlapping dedup ids at once, some in the same order (racing on every
/// id), some in other orders: exactly one message is sent per id, and every send of an id
/// returns that message's id. No sleeping: the threads run flat out from a barrier.
#[test]
fn racing_sends_of_one_id_send_exactly_one_message() {
    const THREADS: usize = 8;
    const IDS: u64 = 2_000;
    const ROUNDS: u64 = 3;
    let (clock, d) = setup::<(u64, usize)>(IDS as usize, IDS as usize);
    let d = Arc::new(d);
    for round in 0..ROUNDS {
        let base = round * IDS;
        let barrier = Arc::new(Barrier::new(THREADS));
        let results: Vec<Vec<(u64, MessageId)>> = (0..THREADS)
            .map(|t| {
                let d = d.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    let mut order: Vec<u64> = (base..base + IDS).collect();
                    match t % 4 {
                        0 | 1 => {}                     // the same order: a race on every id
                        2 => order.reverse(),           // meets the others in the middle
                        _ => order.rotate_left(t * 97), // a shifted order
                    }
                    barrier.wait();
                    let mut seen = Vec::with_capacity(order.len());
                    for key in order {
                        let mut body = (key, t);
                        let sent = loop {
                            match d.send(key, body) {
                                Ok(sent) => break sent,
                                // The racing sender was descheduled for longer than the
                                // contention wait: retry, as a caller would.
                                Err(DedupSendError::Contended(back)) => body = back,
                                Err(other) => panic!("send of {key}: {other}"),
                            }
                        };
                        seen.push((key, sent.id()));
                    }
                    seen
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect();

        // Exactly one message per id, all of this round's ids.
        let mut sent: HashMap<u64, MessageId> = HashMap::new();
        while let Some(delivery) = d.queue().try_receive() {
            let (key, _) = *delivery.body();
            assert!(
                sent.insert(key, delivery.id()).is_none(),
                "id {key} was sent twice"
            );
            d.queue().delete(delivery.receipt()).unwrap();
        }
        assert_eq!(sent.len() as u64, IDS, "round {round}");
        // Every send of an id returned the one message sent for it.
        for seen in &results {
            assert_eq!(seen.len() as u64, IDS);
            for (key, id) in seen {
                assert_eq!(sent.get(key), Some(id), "id {key}");
            }
        }
        // Let this round's ids expire so the next round reuses the buckets.
        clock.advance(secs(60));
    }
    let stats = d.stats();
    assert_eq!(d.queue().stats().sent, ROUNDS * IDS, "stats: {stats:?}");
    // Every send that was not the one that went through was a duplicate (contended retries
    // are counted separately and ended in a duplicate or the send).
    assert_eq!(stats.duplicates, ROUNDS * IDS * (THREADS as u64 - 1));
    assert_eq!((stats.table_full, stats.refused), (0, 0));
}

/// Racing sends of a few ids into a queue that keeps refusing (full) while one thread drains
/// it: no id is ever sent twice, a refused send never leaves its id recorded (so every id is
/// sent in the end), and every refusal hands the body back.
#[test]
fn racing_sends_into_a_full_queue_never_send_an_id_twice() {
    const THREADS: usize = 6;
    const IDS: u64 = 8;
    // Room for half the ids.
    let (_, d) = setup::<u64>(IDS as usize / 4, 2);
    let d = Arc::new(d);
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let senders: Vec<_> = (0..THREADS)
        .map(|_| {
            let (d, stop, barrier) = (d.clone(), stop.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let mut full = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for key in 0..IDS {
                        match d.send(key, key) {
                            Ok(_)
                            | Err(DedupSendError::Contended(_))
                            | Err(DedupSendError::TableFull(_)) => {}
                            Err(DedupSendError::Full(body)) => {
                                assert_eq!(body, key);
                                full += 1;
                            }
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
                full
            })
        })
        .collect();
    barrier.wait();
    // Drain: every message received must be an id not seen before.
    let mut received = Vec::new();
    while received.len() < IDS as usize {
        match d.queue().try_receive() {
            Some(delivery) => {
                let key = *delivery.body();
                assert!(!received.contains(&key), "id {key} was sent twice");
                received.push(key);
                d.queue().delete(delivery.receipt()).unwrap();
            }
            None => thread::yield_now(),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let full: u64 = senders.into_iter().map(|s| s.join().unwrap()).sum();
    // Every id is live now, so nothing more was sent.
    assert!(d.queue().try_receive().is_none());
    received.sort_unstable();
    assert_eq!(received, (0..IDS).collect::<Vec<_>>());
    assert_eq!(d.queue().stats().sent, IDS);
    assert_eq!(d.stats().refused, full);
}

/// Issue 9, item 16: at a saturated `ManualClock` the entry's expiry saturated to `now`, so it
/// never counted and nothing was deduplicated. An expiry that saturates now counts forever
/// (time cannot pass any further).
#[test]
fn at_a_saturated_clock_ids_are_still_deduplicated() {
    let (clock, d) = setup::<u32>(8, 8);
    clock.advance(Duration::MAX);
    let first = d.send(1, 10).unwrap();
    assert!(matches!(first, Sent::New(_)));
    assert_eq!(d.send(1, 11).unwrap(), Sent::Duplicate(first.id()));
    assert_eq!(d.lookup(1), Some(first.id()));
    clock.advance(secs(3600));
    assert_eq!(d.send(1, 12).unwrap(), Sent::Duplicate(first.id()));
    assert_eq!(d.queue().stats().sent, 1);
}

/// Issue 9, item 16: the entry's expiry was computed from the clock reading taken at the start
/// of the attempt, so the window came out short by however long the send took. Here another
/// thread runs the clock while each send goes through, then stops; the entry must count for
/// a full window after the queue's own reading of the send (`Stats::oldest_ready_age`).
#[test]
fn the_window_counts_from_the_send_not_from_before_it() {
    const SENDS: u64 = 500;
    // The advancer's states, set by the test thread (RUN, PAUSE, QUIT) and by it (PAUSED).
    const RUN: u8 = 0;
    const PAUSE: u8 = 1;
    const PAUSED: u8 = 2;
    const QUIT: u8 = 3;
    let (clock, d) = setup::<u64>(8, 8);
    let window = d.window();
    let state = AtomicU8::new(PAUSED);
    let pause = || {
        state.store(PAUSE, Ordering::SeqCst);
        while state.load(Ordering::SeqCst) != PAUSED {
            thread::yield_now();
        }
    };
    thread::scope(|scope| {
        scope.spawn(|| loop {
            match state.load(Ordering::SeqCst) {
                RUN => clock.advance(Duration::from_nanos(100)),
                PAUSE => state.store(PAUSED, Ordering::SeqCst),
                QUIT => break,
                _ => thread::yield_now(),
            }
        });
        // Ends the advancer however the loop ends (a failed assertion included).
        let _quit = OnDrop(|| state.store(QUIT, Ordering::SeqCst));
        for key in 0..SENDS {
            // Send only once the clock is seen running.
            let before = clock.now();
            state.store(RUN, Ordering::SeqCst);
            while clock.now() == before {
                thread::yield_now();
            }
            let sent = d.send(key, key).unwrap();
            pause();
            // With the clock still, the queue's reading of the send is exactly now - age.
            let sent_at = clock.now() - d.queue().stats().oldest_ready_age.unwrap();
            let delivery = d.queue().try_receive().unwrap();
            d.queue().delete(delivery.receipt()).unwrap();
            // A nanosecond before `sent_at + window` the entry still counts.
            clock.advance(sent_at + window - Duration::from_nanos(1) - clock.now());
            assert_eq!(
                d.lookup(key),
                Some(sent.id()),
                "send {key}: the window came out short"
            );
            clock.advance(window);
        }
    });
}

/// Runs its closure when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Issue 9, item 16: a send that lost the race for a free bucket to a send of *another* id
/// counted that as contention, so with `contention_wait(ZERO)` it gave up with `Contended`,
/// which the docs reserve for racing sends of the same id. Distinct ids that fit the table
/// (here 32 ids, 32 buckets, every id may use every bucket) must all go through. (No two ids
/// of a round share a fingerprint, checked offline, so none has reason to wait for another.)
#[test]
fn distinct_ids_that_fit_never_get_contended_or_table_full() {
    const THREADS: usize = 4;
    const EACH: u64 = 8;
    const ROUNDS: u64 = 300;
    let clock = ManualClock::new();
    let queue = Arc::new(
        Queue::builder()
            .capacity(THREADS * EACH as usize)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let d = DedupQueue::builder(queue)
        .capacity(EACH as usize)
        .window(secs(60))
        .contention_wait(Duration::ZERO)
        .clock(clock.clone())
        .build()
        .unwrap();
    let barrier = Barrier::new(THREADS);
    for round in 0..ROUNDS {
        thread::scope(|scope| {
            for t in 0..THREADS as u64 {
                let (d, barrier) = (&d, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for n in 0..EACH {
                        let key = (round * THREADS as u64 + t) * EACH + n;
                        match d.send(key, key) {
                            Ok(Sent::New(_)) => {}
                            other => panic!("round {round}, id {key}: {other:?}"),
                        }
                    }
                });
            }
        });
        for _ in 0..THREADS as u64 * EACH {
            let delivery = d.queue().try_receive().unwrap();
            d.queue().delete(delivery.receipt()).unwrap();
        }
        clock.advance(secs(60));
    }
    assert_eq!(d.stats(), DedupStats::default());
}
