//! Metrics (issue 5, item 8): the oldest lease's age, refusal counts, per-second rates and the
//! optional latency histograms. Time is a `ManualClock` throughout, except in the one
//! multi-threaded test, which asserts counts only.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use visq::{ManualClock, Nack, Queue, Rates, Receipt, ReceiptError, SendError, MAX_TIMEOUT};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn queue(clock: &ManualClock, capacity: usize) -> Queue<u32> {
    Queue::builder()
        .capacity(capacity)
        .visibility_timeout(secs(10))
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn with_histograms(clock: &ManualClock) -> Queue<u32> {
    Queue::builder()
        .capacity(64)
        .visibility_timeout(secs(10))
        .sample_latencies(1)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn oldest_in_flight_age_is_the_longest_held_lease() {
    let clock = ManualClock::new();
    let q = queue(&clock, 8);
    assert_eq!(q.stats().oldest_in_flight_age, None);
    q.send(1).unwrap();
    q.send(2).unwrap();
    let first = q.try_receive().unwrap();
    clock.advance(secs(3));
    let second = q.try_receive().unwrap();
    clock.advance(secs(2));
    assert_eq!(q.stats().oldest_in_flight_age, Some(secs(5)));
    // Extending a lease does not make it younger: the age counts from the receive.
    q.change_visibility(first.receipt(), secs(60)).unwrap();
    assert_eq!(q.stats().oldest_in_flight_age, Some(secs(5)));
    q.delete(first.receipt()).unwrap();
    assert_eq!(q.stats().oldest_in_flight_age, Some(secs(2)));
    q.release(second.receipt()).unwrap();
    assert_eq!(q.stats().oldest_in_flight_age, None);
    // A redelivery's age starts again at its receive.
    clock.advance(secs(4));
    let again = q.try_receive().unwrap();
    clock.advance(secs(1));
    assert_eq!(q.stats().oldest_in_flight_age, Some(secs(1)));
    assert_eq!(q.stats().oldest_ready_age, None);
    q.delete(again.receipt()).unwrap();
}

#[test]
fn refused_sends_and_receipts_are_counted_each_once() {
    let clock = ManualClock::new();
    let q = queue(&clock, 1);
    q.send(1).unwrap();
    assert_eq!(q.send(2), Err(SendError::Full(2)));
    assert_eq!(
        q.send_delayed(3, MAX_TIMEOUT + ms(1)),
        Err(SendError::DelayTooLong(3))
    );
    let d = q.try_receive().unwrap();
    assert_eq!(
        q.change_visibility(d.receipt(), MAX_TIMEOUT + ms(1)),
        Err(ReceiptError::TimeoutTooLong)
    );
    assert_eq!(
        q.nack(d.receipt(), Nack::after(MAX_TIMEOUT + ms(1))),
        Err(ReceiptError::TimeoutTooLong)
    );
    clock.advance(secs(11));
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Expired));
    // change_visibility(0) is a release: counted once, not twice.
    assert_eq!(
        q.change_visibility(d.receipt(), Duration::ZERO),
        Err(ReceiptError::Expired)
    );
    q.close();
    assert_eq!(q.send(4), Err(SendError::Closed(4)));
    let stats = q.stats();
    assert_eq!((stats.refused_sends, stats.refused_receipts), (3, 4));
    // Successes are not refusals.
    let d = q.try_receive().unwrap();
    q.delete(d.receipt()).unwrap();
    let stats = q.stats();
    assert_eq!((stats.refused_sends, stats.refused_receipts), (3, 4));
}

#[test]
fn rates_are_per_second_over_windows_of_at_least_a_second() {
    let clock = ManualClock::new();
    let q = Queue::builder()
        .capacity(64)
        .visibility_timeout(secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(q.stats().rates, Rates::default(), "no window has completed");

    // Window 1, from the build to t = 2 s.
    let mut leases = Vec::new();
    for n in 0..10 {
        q.send(n).unwrap();
        leases.push(q.try_receive().unwrap().receipt());
    }
    for receipt in leases.drain(..6) {
        q.delete(receipt).unwrap();
    }
    assert_eq!(
        q.delete(Receipt::from_u64(u64::MAX)),
        Err(ReceiptError::Stale)
    );
    assert_eq!(
        q.send_delayed(99, MAX_TIMEOUT * 2),
        Err(SendError::DelayTooLong(99))
    );
    clock.advance(ms(900));
    assert_eq!(
        q.stats().rates,
        Rates::default(),
        "still in the first window"
    );
    clock.advance(ms(1100));
    let rates = q.stats().rates;
    assert_eq!(
        (rates.sent, rates.received, rates.deleted, rates.errors),
        (5.0, 5.0, 3.0, 1.0)
    );
    // The four undeleted leases ended at t = 1 s; the stats call at t = 2 s ran the wheel.
    assert_eq!(rates.expired, 2.0);

    // Within a second of the window's start: the same rates again.
    clock.advance(ms(500));
    q.send(100).unwrap();
    assert_eq!(q.stats().rates, rates);

    // Window 2, from t = 2 s to t = 6 s: one send and nothing else.
    clock.advance(ms(3500));
    let rates = q.stats().rates;
    assert_eq!(
        (
            rates.sent,
            rates.received,
            rates.deleted,
            rates.expired,
            rates.errors
        ),
        (0.25, 0.0, 0.0, 0.0, 0.0)
    );
}

#[test]
fn without_the_setting_there_are_no_histograms() {
    let clock = ManualClock::new();
    assert!(queue(&clock, 4).latencies().is_none());
}

/// Asserts `got` is within 1% of `want` (the histograms' resolution).
fn assert_close(got: Duration, want: Duration, what: &str) {
    let (got, want) = (got.as_nanos() as f64, want.as_nanos() as f64);
    assert!(
        (got - want).abs() <= want * 0.01,
        "{what}: got {got} ns, want {want} ns"
    );
}

#[test]
fn histograms_record_each_message_once_with_its_times() {
    let clock = ManualClock::new();
    let q = with_histograms(&clock);
    // Message n waits n ms to be received and is then held 2n ms before its delete.
    for n in 1..=100u64 {
        q.send(n as u32).unwrap();
        clock.advance(ms(n));
        let d = q.try_receive().unwrap();
        assert_eq!(u64::from(*d.body()), n);
        clock.advance(ms(2 * n));
        q.delete(d.receipt()).unwrap();
    }
    let latencies = q.latencies().unwrap();
    let (to_receive, to_delete, held) = (
        &latencies.send_to_receive,
        &latencies.send_to_delete,
        &latencies.receive_to_delete,
    );
    assert_eq!(
        (to_receive.count, to_delete.count, held.count),
        (100, 100, 100)
    );
    assert_close(to_receive.p50, ms(50), "send-to-receive p50");
    assert_close(to_receive.p99, ms(99), "send-to-receive p99");
    assert_close(to_receive.max, ms(100), "send-to-receive max");
    assert_close(to_delete.p50, ms(150), "send-to-delete p50");
    assert_close(to_delete.max, ms(300), "send-to-delete max");
    assert_close(held.p50, ms(100), "receive-to-delete p50");
    assert_close(held.p999, ms(200), "receive-to-delete p99.9");
    assert_eq!(to_receive.histogram.len(), 100);
}

#[test]
fn redeliveries_count_once_and_failed_deletes_not_at_all() {
    let clock = ManualClock::new();
    let q = with_histograms(&clock);
    q.send(7).unwrap();
    clock.advance(ms(4));
    let first = q.try_receive().unwrap();
    clock.advance(secs(11)); // the lease expires
    assert_eq!(q.delete(first.receipt()), Err(ReceiptError::Expired));
    let second = q.try_receive().unwrap();
    assert_eq!(second.receive_count(), 2);
    clock.advance(ms(6));
    q.delete(second.receipt()).unwrap();
    let latencies = q.latencies().unwrap();
    assert_eq!(latencies.send_to_receive.count, 1, "first receive only");
    assert_close(latencies.send_to_receive.max, ms(4), "send-to-receive");
    assert_eq!(latencies.send_to_delete.count, 1);
    assert_close(
        latencies.send_to_delete.max,
        ms(4) + secs(11) + ms(6),
        "send-to-delete, the redelivery included",
    );
    assert_close(
        latencies.receive_to_delete.max,
        ms(6),
        "receive-to-delete, the lease that deleted",
    );
}

#[test]
fn a_delayed_send_counts_its_delay_in_send_to_receive() {
    let clock = ManualClock::new();
    let q = with_histograms(&clock);
    q.send_delayed(1, secs(2)).unwrap();
    clock.advance(secs(2) + ms(1));
    let d = q.try_receive().unwrap();
    q.delete(d.receipt()).unwrap();
    let latencies = q.latencies().unwrap();
    // The lease starts when the message became visible, at the start of its deadline's tick.
    assert_close(latencies.send_to_receive.max, secs(2), "send-to-receive");
}

#[test]
fn histograms_account_for_every_message_under_contention() {
    const PER_PRODUCER: u32 = 20_000;
    let q: Arc<Queue<u32>> = Arc::new(
        Queue::builder()
            .capacity(256)
            .sample_latencies(1)
            .build()
            .unwrap(),
    );
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                for n in 0..PER_PRODUCER {
                    let mut body = n;
                    while let Err(refused) = q.send(body) {
                        body = refused.into_inner();
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let all_deleted = Arc::new(AtomicU32::new(0));
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let (q, all_deleted) = (q.clone(), all_deleted.clone());
            thread::spawn(move || {
                let mut deleted = 0u32;
                let give_up = Instant::now() + secs(30);
                while all_deleted.load(Ordering::SeqCst) < 2 * PER_PRODUCER {
                    assert!(Instant::now() < give_up, "messages went missing");
                    if let Some(d) = q.receive(ms(10)) {
                        q.delete(d.receipt()).unwrap();
                        all_deleted.fetch_add(1, Ordering::SeqCst);
                        deleted += 1;
                    }
                }
                deleted
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let deleted: u32 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(deleted, 2 * PER_PRODUCER);
    let latencies = q.latencies().unwrap();
    let expected = u64::from(2 * PER_PRODUCER);
    assert_eq!(latencies.send_to_receive.count, expected);
    assert_eq!(latencies.send_to_delete.count, expected);
    assert_eq!(latencies.receive_to_delete.count, expected);
    assert!(latencies.send_to_delete.p50 >= latencies.receive_to_delete.p50);
}

#[test]
fn sampling_records_about_one_in_n_and_the_same_messages_throughout() {
    let clock = ManualClock::new();
    let q: Queue<u32> = Queue::builder()
        .capacity(64)
        .sample_latencies(3) // rounded up to one in 4
        .clock(clock.clone())
        .build()
        .unwrap();
    for n in 0..4000 {
        q.send(n).unwrap();
        clock.advance(ms(1));
        let d = q.try_receive().unwrap();
        clock.advance(ms(1));
        q.delete(d.receipt()).unwrap();
    }
    let latencies = q.latencies().unwrap();
    let sampled = latencies.send_to_receive.count;
    assert!(
        (800..=1200).contains(&sampled),
        "{sampled} of 4000 sampled, want about 1000"
    );
    // A message is in or out of the sample for all three measurements.
    assert_eq!(latencies.send_to_delete.count, sampled);
    assert_eq!(latencies.receive_to_delete.count, sampled);
    assert_close(latencies.send_to_receive.max, ms(1), "send-to-receive");
    assert_close(latencies.send_to_delete.p50, ms(2), "send-to-delete");

    let off: Queue<u32> = Queue::builder().sample_latencies(0).build().unwrap();
    assert!(off.latencies().is_none());
}

#[test]
fn any_sampling_setting_builds_and_the_sparsest_records_almost_nothing() {
    for one_in in [2, 1 << 24, (1 << 24) + 1, 1 << 31, u32::MAX] {
        let q: Queue<u32> = Queue::builder()
            .capacity(4)
            .sample_latencies(one_in)
            .build()
            .unwrap();
        for n in 0..1000 {
            q.send(n).unwrap();
            let d = q.try_receive().unwrap();
            q.delete(d.receipt()).unwrap();
        }
        let count = q.latencies().unwrap().send_to_delete.count;
        if one_in >= 1 << 24 {
            assert!(count <= 1, "one in {one_in}: {count} of 1000 sampled");
        } else {
            assert!((350..=650).contains(&count), "one in 2: {count} of 1000");
        }
    }
}

#[test]
fn stats_stay_consistent_while_dead_letters_are_inspected() {
    // An inspected-only dead-letter queue: every ready-ring pop is an inspection, none a
    // delivery. `received` may count the one inspection in progress, never a wrapped negative
    // (it once did: the subtraction underflowed).
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(8).build().unwrap());
    let q: Queue<u32> = Queue::builder()
        .dead_letter(dlq.clone(), 1)
        .build()
        .unwrap();
    for n in 0..4 {
        q.send(n).unwrap();
        q.release(q.try_receive().unwrap().receipt()).unwrap();
    }
    let inspector = {
        let dlq = dlq.clone();
        thread::spawn(move || {
            for _ in 0..20_000 {
                assert_eq!(dlq.dead_letters(100).len(), 4);
            }
        })
    };
    while !inspector.is_finished() {
        let stats = dlq.stats();
        assert!(stats.received <= 1 && stats.deleted == 0, "{stats:?}");
    }
    inspector.join().unwrap();
    let stats = dlq.stats();
    assert_eq!((stats.sent, stats.received, stats.ready), (4, 0, 4));
}
