//! After `build()`, the hot operations allocate nothing (for a `T` whose clone does not
//! allocate): counted by a global allocator that counts, on the measuring thread only, every
//! allocation, reallocation and deallocation made inside a measured region.
//!
//! Each test measures only its own thread (the counters are thread-local), and no test spawns
//! threads, so the harness running tests side by side cannot disturb the counts.

use std::sync::Arc;
use std::time::Duration;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{measure, no_alloc};
use visq::{Delivery, ManualClock, Nack, Queue, Receipt, ReceiptError, SendError, MAX_TIMEOUT};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

#[test]
fn the_counter_sees_allocations() {
    let (v, allocations, _) = measure(|| Vec::<u64>::with_capacity(10));
    assert_eq!(allocations, 1);
    let ((), _, deallocations) = measure(|| drop(v));
    assert_eq!(deallocations, 1);
    let (s, allocations, _) = measure(|| format!("{}", 12345));
    assert!(allocations >= 1);
    drop(s);
    // And the build does allocate, so measuring it would fail.
    let (q, allocations, _) = measure(|| Queue::<u64>::builder().capacity(8).build().unwrap());
    assert!(allocations > 0);
    drop(q);
}

#[test]
fn each_operation_allocates_nothing() {
    let clock = ManualClock::new();
    let q: Queue<u64> = Queue::builder()
        .capacity(8)
        .visibility_timeout(Duration::from_secs(5))
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut batch: Vec<Delivery<u64>> = Vec::with_capacity(8);

    let id = no_alloc("send", || q.send(1).unwrap());
    no_alloc("send_delayed", || q.send_delayed(2, ms(10)).unwrap());
    let d = no_alloc("try_receive", || q.try_receive().unwrap());
    assert_eq!((d.id(), *d.body()), (id, 1));
    assert!(no_alloc("try_receive on nothing visible", || q.try_receive()).is_none());
    assert!(no_alloc("receive(0)", || q.receive(Duration::ZERO)).is_none());
    no_alloc("delete", || q.delete(d.receipt()).unwrap());
    q.send(0).unwrap();
    let unused = q.try_receive().unwrap();
    no_alloc("hand_back", || q.hand_back(unused.receipt()).unwrap());
    let again = q.try_receive().unwrap();
    assert_eq!(
        again.receive_count(),
        1,
        "a hand-back restores the receive count"
    );
    q.delete(again.receipt()).unwrap();
    assert_eq!(
        no_alloc("stale delete", || q.delete(d.receipt())),
        Err(ReceiptError::Stale)
    );
    assert_eq!(
        no_alloc("forged receipt", || q.release(Receipt::from_u64(u64::MAX))),
        Err(ReceiptError::Stale)
    );

    clock.advance(ms(10));
    for n in 3..6 {
        q.send(n).unwrap();
    }
    let taken = no_alloc("receive_batch", || {
        q.receive_batch(&mut batch, 8, Duration::ZERO)
    });
    assert_eq!(taken, 4);
    assert_eq!(
        batch.iter().map(|d| *d.body()).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    let receipts: Vec<Receipt> = batch.drain(..).map(|d| d.receipt()).collect();

    no_alloc("change_visibility extend", || {
        q.change_visibility(receipts[0], Duration::from_secs(60))
            .unwrap()
    });
    no_alloc("change_visibility shorten", || {
        q.change_visibility(receipts[0], ms(5)).unwrap()
    });
    no_alloc("change_visibility far", || {
        q.change_visibility(receipts[1], MAX_TIMEOUT).unwrap()
    });
    no_alloc("change_visibility zero", || {
        q.change_visibility(receipts[2], Duration::ZERO).unwrap()
    });
    assert_eq!(
        no_alloc("change_visibility too long", || q
            .change_visibility(receipts[1], MAX_TIMEOUT * 2)),
        Err(ReceiptError::TimeoutTooLong)
    );
    no_alloc("release", || q.release(receipts[3]).unwrap());
    no_alloc("advance", || clock.advance(ms(6)));
    let stats = no_alloc("stats", || q.stats());
    assert_eq!(
        (stats.ready, stats.in_flight, stats.expired, stats.released),
        (3, 1, 1, 3), // released: the hand-back, the zero change_visibility, the release
    );
    assert_eq!(
        no_alloc("expired receipt", || q.delete(receipts[0])),
        Err(ReceiptError::Expired)
    );
    let n = no_alloc("receive_batch of redeliveries", || {
        q.receive_batch(&mut batch, 8, Duration::ZERO)
    });
    assert_eq!(n, 3);
    for d in batch.drain(..) {
        no_alloc("delete", || q.delete(d.receipt()).unwrap());
    }

    for n in 0..7 {
        q.send(n).unwrap();
    }
    assert!(matches!(
        no_alloc("full send", || q.send(99)),
        Err(SendError::Full(99))
    ));
    assert!(matches!(
        no_alloc("delay too long", || q.send_delayed(98, MAX_TIMEOUT * 2)),
        Err(SendError::DelayTooLong(98))
    ));
    no_alloc("capacity", || assert_eq!(q.capacity(), 8));
    no_alloc("close", || q.close());
    assert!(no_alloc("is_closed", || q.is_closed()));
    assert!(matches!(
        no_alloc("closed send", || q.send(97)),
        Err(SendError::Closed(97))
    ));
    while let Some(d) = no_alloc("drain after close", || q.receive(Duration::from_secs(10))) {
        no_alloc("delete after close", || q.delete(d.receipt()).unwrap());
    }
    // The leased message is still held; nothing is visible: a closed queue answers at once.
    assert!(no_alloc("receive on closed", || q.receive(Duration::from_secs(10))).is_none());
    assert_eq!(q.stats().in_flight, 1);
}

#[test]
fn ten_thousand_mixed_operations_allocate_nothing() {
    const CAPACITY: usize = 256;
    const OPERATIONS: u64 = 12_000;
    /// Bodies with this bit were sent with a delay of more than 64^3 ticks (a level-3 wheel
    /// entry that cascades down as it comes due).
    const LONG: u64 = 1 << 40;
    let clock = ManualClock::new();
    let q: Queue<u64> = Queue::builder()
        .capacity(CAPACITY)
        .visibility_timeout(Duration::from_secs(5))
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut rng = Rng::new(0x0123_4567_89AB_CDEF);
    let mut held: Vec<Receipt> = Vec::with_capacity(CAPACITY);
    let mut batch: Vec<Delivery<u64>> = Vec::with_capacity(32);

    #[derive(Default, Debug)]
    struct Tally {
        sent: u64,
        sent_delayed: u64,
        full: u64,
        received: u64,
        long_fired: u64,
        deleted: u64,
        extended: u64,
        shortened: u64,
        released: u64,
        nacked: u64,
        refused_receipts: u64,
        advanced: u64,
        stats: u64,
    }
    let mut tally = Tally::default();

    let ((), allocations, deallocations) = measure(|| {
        let note_received = |d: &Delivery<u64>, held: &mut Vec<Receipt>, tally: &mut Tally| {
            tally.received += 1;
            if d.body() & LONG != 0 && d.receive_count() == 1 {
                tally.long_fired += 1;
            }
            if held.len() == held.capacity() {
                held.swap_remove(0);
            }
            held.push(d.receipt());
        };
        for n in 0..OPERATIONS {
            match rng.below(100) {
                0..=19 => match q.send(n) {
                    Ok(_) => tally.sent += 1,
                    Err(SendError::Full(_)) => tally.full += 1,
                    Err(e) => panic!("{e}"),
                },
                20..=29 => {
                    let delay = match rng.below(4) {
                        0 => 1 + rng.below(64),
                        1 => 1 + rng.below(262_144),
                        2 => 262_145 + rng.below(4_000_000),
                        _ => 1 + rng.below(MAX_TIMEOUT.as_millis() as u64),
                    };
                    let body = if delay > 262_144 { n | LONG } else { n };
                    match q.send_delayed(body, ms(delay)) {
                        Ok(_) => tally.sent_delayed += 1,
                        Err(SendError::Full(_)) => tally.full += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                30..=44 => {
                    if let Some(d) = q.try_receive() {
                        note_received(&d, &mut held, &mut tally);
                    }
                }
                45..=49 => {
                    let max = 1 + rng.below(32) as usize;
                    q.receive_batch(&mut batch, max, Duration::ZERO);
                    for d in batch.drain(..) {
                        note_received(&d, &mut held, &mut tally);
                    }
                }
                50..=79 if !held.is_empty() => {
                    // Mostly the newest receipt (likely still valid), sometimes any.
                    let receipt = if rng.below(4) == 0 {
                        held.swap_remove(rng.below(held.len() as u64) as usize)
                    } else {
                        held.pop().unwrap()
                    };
                    let result = match rng.below(10) {
                        0..=4 => q.delete(receipt).map(|()| tally.deleted += 1),
                        5 | 6 => q
                            .change_visibility(receipt, ms(5_001 + rng.below(3_600_000)))
                            .map(|()| tally.extended += 1),
                        7 => q
                            .change_visibility(receipt, ms(1 + rng.below(5_000)))
                            .map(|()| tally.shortened += 1),
                        8 if n % 2 == 0 => q.release(receipt).map(|()| tally.released += 1),
                        // A nack with a delay (up to 5 s) and a static reason.
                        8 => q
                            .nack(
                                receipt,
                                Nack::after(ms(1 + n % 5_000)).reason("retry later"),
                            )
                            .map(|()| tally.nacked += 1),
                        _ => q
                            .change_visibility(receipt, Duration::ZERO)
                            .map(|()| tally.released += 1),
                    };
                    match result {
                        // A lease that is still valid goes back to the pile.
                        Ok(()) if held.len() < held.capacity() && rng.below(2) == 0 => {
                            held.push(receipt)
                        }
                        Ok(()) => {}
                        Err(_) => tally.refused_receipts += 1,
                    }
                }
                80..=94 => {
                    let by = match rng.below(100) {
                        0..=94 => rng.below(50),
                        95..=98 => 1_000 + rng.below(10_000),
                        _ => 3_600_000 + rng.below(10 * 3_600_000),
                    };
                    clock.advance(ms(by));
                    tally.advanced += 1;
                }
                _ => {
                    let s = q.stats();
                    assert!(s.ready + s.delayed + s.in_flight <= CAPACITY);
                    tally.stats += 1;
                }
            }
        }
    });
    assert_eq!((allocations, deallocations), (0, 0), "after {tally:?}");

    // The run covered what it claims to.
    let s = q.stats();
    assert_eq!(s.sent, tally.sent + tally.sent_delayed);
    assert_eq!(s.received, tally.received);
    assert_eq!(s.deleted, tally.deleted);
    assert_eq!(s.released, tally.released + tally.nacked);
    assert!(s.sent > 2 * CAPACITY as u64, "slots reused: {s:?}");
    assert!(s.expired > 100, "{s:?}");
    assert!(tally.full > 0 && tally.long_fired > 10, "{tally:?}");
    assert!(
        tally.extended > 100 && tally.shortened > 50 && tally.refused_receipts > 50,
        "{tally:?}"
    );
    assert!(
        tally.deleted > 500 && tally.released > 50 && tally.nacked > 50 && tally.stats > 100,
        "{tally:?}"
    );
}

#[test]
fn dead_letter_moves_and_retries_allocate_nothing() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u64>> = Arc::new(
        Queue::builder()
            .capacity(2)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let q: Queue<u64> = Queue::builder()
        .capacity(64)
        .visibility_timeout(ms(100))
        .dead_letter(dlq.clone(), 2)
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut batch: Vec<Delivery<u64>> = Vec::with_capacity(64);
    let ((), allocations, deallocations) = measure(|| {
        for round in 0..200u64 {
            for n in 0..8 {
                q.send(round * 8 + n).unwrap();
            }
            // Two receives each: the first ends by release, the second by expiry or release.
            q.receive_batch(&mut batch, 64, Duration::ZERO);
            for d in batch.drain(..) {
                q.release(d.receipt()).unwrap();
            }
            q.receive_batch(&mut batch, 64, Duration::ZERO);
            for (i, d) in batch.drain(..).enumerate() {
                if i % 2 == 0 {
                    q.release(d.receipt()).unwrap();
                }
            }
            clock.advance(ms(101));
            // Make room in the DLQ, two at a time; held messages retry every 10 ms.
            for _ in 0..6 {
                while let Some(d) = dlq.try_receive() {
                    dlq.delete(d.receipt()).unwrap();
                }
                clock.advance(ms(10));
                q.stats();
            }
        }
        // Let every held message through.
        for _ in 0..100 {
            while let Some(d) = dlq.try_receive() {
                dlq.delete(d.receipt()).unwrap();
            }
            clock.advance(ms(10));
            q.stats();
        }
        while let Some(d) = dlq.try_receive() {
            dlq.delete(d.receipt()).unwrap();
        }
    });
    assert_eq!((allocations, deallocations), (0, 0));
    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.in_flight, s.dead_lettered),
        (0, 0, 0, 1600)
    );
    assert!(s.dead_letter_retries > 100, "{s:?}");
    assert_eq!(dlq.stats().deleted, 1600);
}

#[test]
fn nack_with_a_delay_and_a_static_reason_allocates_nothing() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u64>> = Arc::new(
        Queue::builder()
            .capacity(1)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let q: Queue<u64> = Queue::builder()
        .capacity(8)
        .visibility_timeout(Duration::from_secs(5))
        .dead_letter(dlq.clone(), 2)
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    q.send(1).unwrap();
    q.send(2).unwrap();

    // Not the last receive: the message waits out the delay; the reason is not kept.
    let d = q.try_receive().unwrap();
    no_alloc("nack after, with a reason", || {
        q.nack(d.receipt(), Nack::after(ms(20)).reason("busy"))
            .unwrap()
    });
    assert_eq!(
        no_alloc("nack of a spent receipt", || q
            .nack(d.receipt(), Nack::after(ms(20)).reason("busy"))),
        Err(ReceiptError::Stale)
    );
    let d2 = q.try_receive().unwrap();
    assert_eq!(*d2.body(), 2);
    assert_eq!(
        no_alloc("nack too long", || q
            .nack(d2.receipt(), Nack::after(MAX_TIMEOUT * 2).reason("never"))),
        Err(ReceiptError::TimeoutTooLong)
    );
    no_alloc("nack now, with a reason", || {
        q.nack(d2.receipt(), Nack::now().reason("again")).unwrap()
    });
    clock.advance(ms(20));
    let (a, b) = (q.try_receive().unwrap(), q.try_receive().unwrap());
    assert_eq!((a.receive_count(), b.receive_count()), (2, 2));

    // The last receive: dies at once, whatever the delay, its reason recorded in the DLQ.
    no_alloc("nack on the last receive: moved with its reason", || {
        q.nack(a.receipt(), Nack::after(ms(500)).reason("poison"))
            .unwrap()
    });
    assert_eq!(q.stats().dead_lettered, 1);
    // The DLQ (capacity 1) is full now: the move is refused, the record kept for the retry.
    no_alloc("nack on the last receive: refused by a full DLQ", || {
        q.nack(b.receipt(), Nack::after(ms(500)).reason("poison"))
            .unwrap()
    });
    assert_eq!(q.stats().dead_letter_retries, 1);
    no_alloc("retries", || {
        for _ in 0..3 {
            clock.advance(ms(10));
            q.stats();
        }
    });
    assert_eq!(q.stats().dead_letter_retries, 4);
    // Deleting the dead letter drops its record; the waiting one then moves.
    let dead = dlq.try_receive().unwrap();
    no_alloc("delete of a dead letter", || {
        dlq.delete(dead.receipt()).unwrap()
    });
    no_alloc("the retry that lands", || {
        clock.advance(ms(10));
        q.stats();
    });
    let s = q.stats();
    assert_eq!((s.dead_lettered, s.delayed, s.released), (2, 0, 4));
    assert_eq!(dlq.dead_letters(1).len(), 1);
}

#[test]
fn latency_histograms_and_stats_allocate_nothing() {
    let clock = ManualClock::new();
    let q: Queue<u64> = Queue::builder()
        .capacity(8)
        .sample_latencies(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    for round in 0..100 {
        no_alloc("send, histograms on", || q.send(round).unwrap());
        clock.advance(ms(1));
        let d = no_alloc("try_receive, histograms on", || q.try_receive().unwrap());
        clock.advance(ms(2));
        no_alloc("delete, histograms on", || q.delete(d.receipt()).unwrap());
        if round % 10 == 0 {
            // Closes a rate window every tenth round.
            clock.advance(Duration::from_secs(1));
            no_alloc("stats with rates", || q.stats());
        }
    }
    // Reading the histograms allocates (it copies them); recording never did.
    let latencies = q.latencies().unwrap();
    assert_eq!(latencies.send_to_delete.count, 100);
}

#[test]
fn ttl_sends_receives_and_kills_allocate_nothing() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u64>> = Arc::new(
        Queue::builder()
            .capacity(4096)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let with_dlq: Queue<u64> = Queue::builder()
        .capacity(64)
        .message_ttl(ms(10))
        .dead_letter(dlq.clone(), 100)
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let dropping: Queue<u64> = Queue::builder()
        .capacity(64)
        .message_ttl(ms(10))
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let ttl = visq::SendOptions::new().ttl(ms(5));
    let ((), allocations, deallocations) = measure(|| {
        for round in 0..100u64 {
            for q in [&with_dlq, &dropping] {
                // One received and deleted, one leased past its TTL, one killed by the wheel
                // in the ready ring, one expired by the receive that pops it.
                q.send_with(round, &ttl).unwrap();
                let d = q.try_receive().unwrap();
                q.delete(d.receipt()).unwrap();
                q.send(round).unwrap();
                let leased = q.try_receive().unwrap();
                q.send_with(round, &ttl).unwrap();
                clock.advance(ms(6));
                q.stats(); // the wheel kills it
                q.send_with(round, &ttl).unwrap();
                clock.advance(ms(6));
                assert!(q.try_receive().is_none(), "expired, and popped past");
                q.release(leased.receipt()).unwrap(); // 12 ms: dies now
            }
            while let Some(d) = dlq.try_receive() {
                dlq.delete(d.receipt()).unwrap();
            }
        }
    });
    assert_eq!((allocations, deallocations), (0, 0));
    for q in [&with_dlq, &dropping] {
        let s = q.stats();
        assert_eq!((s.ready, s.delayed, s.in_flight), (0, 0, 0));
        assert_eq!((s.sent, s.deleted, s.ttl_expired), (400, 100, 300));
    }
}
