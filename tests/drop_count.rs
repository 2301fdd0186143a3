//! Every body a queue takes is dropped exactly once: counted with a body type that records its
//! creations, clones and drops. Each test has its own counters, so tests may run in parallel.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use visq::{ManualClock, Queue, SendError};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[path = "support/counted_body.rs"]
mod counted_body;
#[path = "support/rng.rs"]
mod rng;
use counted_body::{Body, Counts};
use rng::Rng;

fn queue(clock: &ManualClock, capacity: usize) -> Queue<Body> {
    Queue::builder()
        .capacity(capacity)
        .visibility_timeout(ms(100))
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn dropping_the_queue_drops_ready_delayed_and_in_flight_bodies() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let q = queue(&clock, 16);
    for n in 0..3 {
        q.send(Body::new(&counts, n)).unwrap(); // ready
    }
    for n in 3..5 {
        q.send_delayed(Body::new(&counts, n), ms(50)).unwrap(); // delayed
    }
    let leased: Vec<_> = (0..2).map(|_| q.try_receive().unwrap()).collect(); // in flight
    let s = q.stats();
    assert_eq!((s.ready, s.delayed, s.in_flight), (1, 2, 2));
    assert_eq!(counts.all(), (5, 2, 0));
    drop(leased);
    assert_eq!(
        counts.all(),
        (5, 2, 2),
        "dropping deliveries drops only the clones"
    );
    drop(q);
    assert_eq!(counts.all(), (5, 2, 7));
    assert_eq!(counts.live(), 0);
}

#[test]
fn dropping_an_untouched_or_empty_queue_drops_nothing_extra() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    drop(queue(&clock, 4));
    let q = queue(&clock, 4);
    q.send(Body::new(&counts, 1)).unwrap();
    let d = q.try_receive().unwrap();
    q.delete(d.receipt()).unwrap();
    drop(d);
    assert_eq!(counts.all(), (1, 1, 2));
    drop(q);
    assert_eq!(counts.all(), (1, 1, 2));
}

#[test]
fn delete_drops_the_held_body_once() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let q = queue(&clock, 4);
    q.send(Body::new(&counts, 1)).unwrap();
    let d = q.try_receive().unwrap();
    assert_eq!(counts.all(), (1, 1, 0));
    q.delete(d.receipt()).unwrap();
    assert_eq!(counts.all(), (1, 1, 1), "delete drops the queue's body");
    // A second delete (stale) drops nothing.
    assert!(q.delete(d.receipt()).is_err());
    assert_eq!(counts.dropped(), 1);
    let body = d.into_body();
    assert_eq!(body.value, 1);
    drop(body);
    assert_eq!(counts.all(), (1, 1, 2));
    drop(q);
    assert_eq!(counts.live(), 0);
    assert_eq!(counts.dropped(), 2);
}

#[test]
fn refused_full_send_gives_the_body_back_undropped() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let q = queue(&clock, 1);
    q.send(Body::new(&counts, 1)).unwrap();
    let err = q.send(Body::new(&counts, 2)).unwrap_err();
    assert!(matches!(err, SendError::Full(_)));
    assert_eq!(counts.dropped(), 0, "a refused body was dropped");
    let back = err.into_inner();
    assert_eq!(back.value, 2);
    assert_eq!(counts.dropped(), 0);
    drop(back);
    assert_eq!(counts.dropped(), 1);
    // Dropping the error itself drops the body once.
    let err = q.send_delayed(Body::new(&counts, 3), ms(5)).unwrap_err();
    assert!(matches!(err, SendError::Full(_)));
    drop(err);
    assert_eq!(counts.all(), (3, 0, 2));
    drop(q);
    assert_eq!(counts.all(), (3, 0, 3));
    assert_eq!(counts.live(), 0);
}

#[test]
fn refused_closed_and_too_long_sends_give_the_body_back_undropped() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let q = queue(&clock, 4);
    let err = q
        .send_delayed(Body::new(&counts, 0), visq::MAX_TIMEOUT + ms(1))
        .unwrap_err();
    assert!(matches!(err, SendError::DelayTooLong(_)));
    assert_eq!(counts.dropped(), 0);
    assert_eq!(err.into_inner().value, 0);
    assert_eq!(counts.dropped(), 1);

    q.send(Body::new(&counts, 1)).unwrap();
    q.close();
    let err = q.send(Body::new(&counts, 2)).unwrap_err();
    assert!(matches!(err, SendError::Closed(_)));
    assert_eq!(counts.dropped(), 1);
    assert_eq!(err.into_inner().value, 2);
    assert_eq!(counts.dropped(), 2);
    let err = q.send_delayed(Body::new(&counts, 3), ms(1)).unwrap_err();
    assert!(matches!(err, SendError::Closed(_)));
    drop(err);
    assert_eq!(counts.all(), (4, 0, 3));
    drop(q);
    assert_eq!(counts.all(), (4, 0, 4));
}

#[test]
fn dead_lettered_bodies_move_without_a_drop_and_drop_with_the_dlq() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let dlq = Arc::new(queue(&clock, 4));
    let q = Queue::builder()
        .capacity(4)
        .visibility_timeout(ms(100))
        .dead_letter(dlq.clone(), 2)
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    q.send(Body::new(&counts, 1)).unwrap();
    q.send(Body::new(&counts, 2)).unwrap();
    // Both are received twice; the second lease of one ends by release, the other's by expiry.
    drop(q.try_receive().unwrap());
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap();
    drop(d);
    clock.advance(ms(101));
    let a = q.try_receive().unwrap();
    let b = q.try_receive().unwrap();
    assert_eq!((a.receive_count(), b.receive_count()), (2, 2));
    q.release(b.receipt()).unwrap();
    clock.advance(ms(101));
    assert!(q.try_receive().is_none());
    drop((a, b));
    assert_eq!(q.stats().dead_lettered, 2);
    assert_eq!(counts.all(), (2, 4, 4), "the move dropped a body");

    drop(q);
    assert_eq!(counts.dropped(), 4, "the source queue dropped a moved body");
    assert_eq!(dlq.stats().ready, 2);
    let dlq = Arc::try_unwrap(dlq).expect("the last reference");
    drop(dlq);
    assert_eq!(counts.all(), (2, 4, 6));
    assert_eq!(counts.live(), 0);
}

#[test]
fn a_full_dead_letter_queue_keeps_the_body_and_drops_it_once() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let dlq = Arc::new(queue(&clock, 1));
    dlq.send(Body::new(&counts, 0)).unwrap();
    let q = Queue::builder()
        .capacity(2)
        .visibility_timeout(ms(100))
        .dead_letter(dlq.clone(), 1)
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    q.send(Body::new(&counts, 1)).unwrap();
    q.send(Body::new(&counts, 2)).unwrap();
    let d1 = q.try_receive().unwrap();
    let d2 = q.try_receive().unwrap();
    q.release(d1.receipt()).unwrap();
    clock.advance(ms(101)); // d2 expires; d1's retry is refused again
    assert_eq!(q.stats().dead_letter_retries, 3);
    clock.advance(ms(30)); // both retried and refused
    let s = q.stats();
    assert_eq!(
        (s.delayed, s.dead_lettered, s.dead_letter_retries),
        (2, 0, 5)
    );
    drop((d1, d2));
    assert_eq!(counts.all(), (3, 2, 2), "a refused move dropped a body");

    // Room for one: exactly one moves.
    let filler = dlq.try_receive().unwrap();
    dlq.delete(filler.receipt()).unwrap();
    drop(filler);
    assert_eq!(counts.all(), (3, 3, 4));
    clock.advance(ms(20));
    let s = q.stats();
    assert_eq!((s.delayed, s.dead_lettered), (1, 1));
    assert_eq!(counts.dropped(), 4);

    // Dropping the source drops the body still held; the DLQ drops the moved one.
    drop(q);
    assert_eq!(counts.dropped(), 5);
    drop(Arc::try_unwrap(dlq).expect("the last reference"));
    assert_eq!(counts.all(), (3, 3, 6));
    assert_eq!(counts.live(), 0);
}

#[test]
fn expiry_and_redelivery_clone_and_never_drop_the_held_body() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let q = queue(&clock, 4);
    q.send(Body::new(&counts, 7)).unwrap();
    for round in 1..=5usize {
        let d = q.receive(Duration::ZERO).unwrap();
        assert_eq!(d.receive_count(), round as u32);
        assert_eq!(d.body().value, 7);
        drop(d);
        clock.advance(ms(101)); // expire
        assert_eq!(q.stats().expired, round as u64);
        assert_eq!(counts.all(), (1, round, round));
    }
    // Release and change_visibility(0) also keep the held body.
    let released = q.try_receive().unwrap();
    q.release(released.receipt()).unwrap();
    drop(released);
    let zeroed = q.try_receive().unwrap();
    q.change_visibility(zeroed.receipt(), Duration::ZERO)
        .unwrap();
    drop(zeroed);
    assert_eq!(counts.all(), (1, 7, 7));
    let mut batch = Vec::new();
    assert_eq!(q.receive_batch(&mut batch, 4, Duration::ZERO), 1);
    assert_eq!(counts.all(), (1, 8, 7));
    q.delete(batch[0].receipt()).unwrap();
    assert_eq!(counts.all(), (1, 8, 8));
    drop(batch);
    assert_eq!(counts.all(), (1, 8, 9));
    drop(q);
    assert_eq!(counts.all(), (1, 8, 9));
    assert_eq!(counts.live(), 0);
}

#[test]
fn a_panicking_clone_loses_and_leaks_nothing() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let q = queue(&clock, 4);
    q.send(Body::new(&counts, 1)).unwrap();
    counts.panic_on_clone.store(true, Ordering::SeqCst);
    let result = catch_unwind(AssertUnwindSafe(|| q.try_receive()));
    assert!(result.is_err());
    assert_eq!(counts.all(), (1, 0, 0));
    // The message is still there and still receivable.
    let d = q.try_receive().expect("the message survived the panic");
    assert_eq!((d.body().value, d.receive_count()), (1, 1));
    q.delete(d.receipt()).unwrap();
    drop(d);
    drop(q);
    assert_eq!(counts.all(), (1, 1, 2));
    assert_eq!(counts.live(), 0);
}

#[test]
fn many_messages_through_every_path_leave_nothing_alive() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let dlq = Arc::new(queue(&clock, 8));
    let q = Queue::builder()
        .capacity(32)
        .visibility_timeout(ms(50))
        .dead_letter(dlq.clone(), 3)
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut rng = Rng::new(0x1234_5678_9ABC_DEF1);
    let mut rand = move |n: u64| rng.below(n);
    let mut held = Vec::new();
    for n in 0..5_000u32 {
        match rand(8) {
            0 | 1 => drop(q.send(Body::new(&counts, n))),
            2 => drop(q.send_delayed(Body::new(&counts, n), ms(1 + rand(200)))),
            3 => held.extend(q.try_receive()),
            4 if !held.is_empty() => {
                let d: visq::Delivery<Body> = held.swap_remove(rand(held.len() as u64) as usize);
                let _ = match rand(3) {
                    0 => q.delete(d.receipt()),
                    1 => q.release(d.receipt()),
                    _ => q.change_visibility(d.receipt(), ms(rand(100))),
                };
            }
            5 => clock.advance(ms(rand(40))),
            6 if rand(8) == 0 => {
                // Drain the DLQ now and then so that it is sometimes full, sometimes not.
                if let Some(d) = dlq.try_receive() {
                    dlq.delete(d.receipt()).unwrap();
                }
            }
            _ => {
                if held.len() > 64 {
                    held.clear();
                }
            }
        }
    }
    let s = q.stats();
    assert!(
        s.expired > 0 && s.dead_lettered > 0 && s.dead_letter_retries > 0,
        "{s:?}"
    );
    drop(held);
    drop(q);
    drop(Arc::try_unwrap(dlq).expect("the last reference"));
    assert_eq!(counts.live(), 0, "{:?}", counts.all());
}

#[test]
fn racing_threads_drop_every_body_exactly_once() {
    let counts = Counts::new();
    let clock = ManualClock::new();
    let dlq = Arc::new(queue(&clock, 16));
    let q = Queue::builder()
        .capacity(64)
        .visibility_timeout(ms(5))
        .dead_letter(dlq.clone(), 3)
        .tick(ms(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (q, dlq, clock, counts) = (&q, &dlq, &clock, &counts);
            s.spawn(move || {
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut rand = move |n: u64| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state % n
                };
                let mut held = Vec::new();
                for n in 0..3_000u32 {
                    match rand(10) {
                        0 | 1 => drop(q.send(Body::new(counts, n))),
                        2 => drop(q.send_delayed(Body::new(counts, n), ms(rand(10)))),
                        3 | 4 => held.extend(q.try_receive()),
                        5 | 6 if !held.is_empty() => {
                            let d: visq::Delivery<Body> =
                                held.swap_remove(rand(held.len() as u64) as usize);
                            // Other threads hold no copy of this receipt, but expiry races it.
                            let _ = match rand(3) {
                                0 => q.delete(d.receipt()),
                                1 => q.release(d.receipt()),
                                _ => q.change_visibility(d.receipt(), ms(rand(8))),
                            };
                        }
                        7 if t == 0 => clock.advance(ms(rand(4))),
                        8 => {
                            if let Some(d) = dlq.try_receive() {
                                let _ = dlq.delete(d.receipt());
                            }
                        }
                        _ => {
                            if held.len() > 16 {
                                held.clear();
                            }
                        }
                    }
                }
            });
        }
    });
    let s = q.stats();
    assert!(s.expired > 0 && s.dead_lettered > 0, "{s:?}");
    drop(q);
    drop(Arc::try_unwrap(dlq).expect("the last reference"));
    assert_eq!(counts.live(), 0, "{:?}", counts.all());
}
