//! The lease guard: settling consumes it, dropping it unsettled releases the message at once.
//! On a `Queue` and, as `BackendLease`, on any backend (the queue through the trait, and a test
//! wrapper without RabbitMQ's missing capabilities). Queue time is a `ManualClock`.

#[path = "support/limited_backend.rs"]
#[allow(dead_code)]
mod limited_backend;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use visq::{Lease, ManualClock, Queue, ReceiptError};

const TICK: Duration = Duration::from_millis(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn queue(clock: &ManualClock) -> Queue<u32> {
    Queue::builder()
        .capacity(16)
        .visibility_timeout(secs(10))
        .tick(TICK)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn ack_deletes() {
    let q = queue(&ManualClock::new());
    q.send(1).unwrap();
    let lease = q.try_receive_lease().unwrap();
    assert_eq!((*lease.body(), lease.receive_count()), (1, 1));
    lease.ack().unwrap();
    assert!(q.try_receive().is_none());
    let stats = q.stats();
    assert_eq!((stats.deleted, stats.released, stats.in_flight), (1, 0, 0));
}

#[test]
fn dropping_an_unsettled_lease_releases_at_once() {
    let q = queue(&ManualClock::new());
    q.send(1).unwrap();
    drop(q.try_receive_lease().unwrap());
    // No time has passed: only a release can have made it visible.
    let again = q.try_receive_lease().unwrap();
    assert_eq!(again.receive_count(), 2);
    assert_eq!(q.stats().released, 1);
}

#[test]
fn a_panicking_handler_releases_its_lease() {
    let q = queue(&ManualClock::new());
    q.send(1).unwrap();
    let handled = catch_unwind(AssertUnwindSafe(|| {
        let _lease = q.try_receive_lease().unwrap();
        panic!("handler crashed");
    }));
    assert!(handled.is_err());
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
}

#[test]
fn nack_makes_it_visible_now() {
    let q = queue(&ManualClock::new());
    q.send(1).unwrap();
    q.try_receive_lease().unwrap().nack().unwrap();
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
    assert_eq!(q.stats().released, 1);
}

#[test]
fn nack_after_redelivers_after_the_delay_not_before() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    q.send(1).unwrap();
    q.try_receive_lease().unwrap().nack_after(secs(5)).unwrap();
    clock.advance(secs(5) - TICK);
    assert!(q.try_receive().is_none());
    clock.advance(TICK * 2);
    assert_eq!(q.try_receive_lease().unwrap().receive_count(), 2);
}

#[test]
fn nack_after_too_long_is_refused_and_releases() {
    let q = queue(&ManualClock::new());
    q.send(1).unwrap();
    let lease = q.try_receive_lease().unwrap();
    let too_long = visq::MAX_TIMEOUT + secs(1);
    assert_eq!(
        lease.nack_after(too_long),
        Err(ReceiptError::TimeoutTooLong)
    );
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
}

#[test]
fn extend_keeps_the_lease() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    q.send(1).unwrap();
    let lease = q.try_receive_lease().unwrap();
    lease.extend(secs(60)).unwrap();
    clock.advance(secs(59));
    assert!(q.try_receive().is_none());
    lease.ack().unwrap();
    assert_eq!(q.stats().deleted, 1);
}

#[test]
fn extend_to_zero_releases_and_spends_the_lease() {
    let q = queue(&ManualClock::new());
    q.send(1).unwrap();
    let lease = q.try_receive_lease().unwrap();
    lease.extend(Duration::ZERO).unwrap();
    let next = q.try_receive_lease().unwrap();
    assert_eq!(lease.ack(), Err(ReceiptError::Stale));
    // Neither the failed ack nor the drop touched the next lease.
    assert_eq!(q.stats().in_flight, 1);
    next.ack().unwrap();
}

#[test]
fn settling_an_expired_lease_fails_and_leaves_the_next_lease_alone() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    q.send(1).unwrap();
    let first = q.try_receive_lease().unwrap();
    clock.advance(secs(11));
    let second = q.try_receive_lease().unwrap();
    assert_eq!(second.receive_count(), 2);
    assert_eq!(first.ack(), Err(ReceiptError::Stale));
    assert_eq!(q.stats().in_flight, 1);
    second.ack().unwrap();
    assert_eq!(q.stats().deleted, 1);
}

#[test]
fn into_delivery_disarms_the_guard() {
    let q = queue(&ManualClock::new());
    q.send(1).unwrap();
    let delivery = q.try_receive_lease().unwrap().into_delivery();
    assert!(
        q.try_receive().is_none(),
        "still leased after the guard is gone"
    );
    q.delete(delivery.receipt()).unwrap();
}

#[test]
fn wraps_batch_deliveries() {
    let q = queue(&ManualClock::new());
    for n in 0..4 {
        q.send(n).unwrap();
    }
    let mut batch = Vec::new();
    q.receive_batch(&mut batch, 4, Duration::ZERO);
    let leases: Vec<Lease<'_, u32>> = batch.into_iter().map(|d| Lease::new(&q, d)).collect();
    assert!(std::ptr::eq(leases[0].queue(), &q));
    for lease in leases {
        if *lease.body() % 2 == 0 {
            lease.ack().unwrap();
        } // odd ones are dropped: released
    }
    let stats = q.stats();
    assert_eq!((stats.deleted, stats.released, stats.ready), (2, 2, 2));
}

#[test]
fn receive_lease_long_polls() {
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().build().unwrap());
    assert!(q.receive_lease(Duration::from_millis(1)).is_none());
    let producer = {
        let q = q.clone();
        thread::spawn(move || q.send(9).unwrap())
    };
    let lease = q.receive_lease(secs(10)).expect("sent within the wait");
    assert_eq!(*lease.body(), 9);
    lease.ack().unwrap();
    producer.join().unwrap();
}

#[test]
fn a_refused_settlement_is_counted_once_and_not_retried() {
    let clock = ManualClock::new();
    let q: Queue<u32> = Queue::builder()
        .visibility_timeout(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    q.send(1).unwrap();
    let lease = q.try_receive_lease().unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(lease.ack(), Err(ReceiptError::Expired));
    assert_eq!(q.stats().refused_receipts, 1, "the drop tried again");
    // A refused timeout leaves the lease live: the drop releases it, at once.
    let lease = q.try_receive_lease().unwrap();
    assert_eq!(
        lease.nack_after(visq::MAX_TIMEOUT * 2),
        Err(ReceiptError::TimeoutTooLong)
    );
    let again = q.try_receive().unwrap();
    assert_eq!(again.receive_count(), 3);
}

/// A queue on `clock` whose messages go to `dlq` after their first receive.
fn queue_with_one_receive(clock: &ManualClock, dlq: &Arc<Queue<u32>>) -> Queue<u32> {
    Queue::builder()
        .capacity(16)
        .visibility_timeout(secs(10))
        .tick(TICK)
        .dead_letter(dlq.clone(), 1)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn hand_back_restores_the_receive_count_and_never_dead_letters() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().clock(clock.clone()).build().unwrap());
    let q = queue_with_one_receive(&clock, &dlq);
    q.send(1).unwrap();
    let unused = q.try_receive().unwrap();
    assert_eq!(unused.receive_count(), 1, "its last receive before the dlq");
    q.hand_back(unused.receipt()).unwrap();
    assert!(dlq.try_receive().is_none(), "a hand-back is no attempt");
    // Visible at once, as if never received.
    let again = q.try_receive().unwrap();
    assert_eq!(again.receive_count(), 1);
    // The spent receipt changes nothing; the lease ended like a release in the stats.
    assert_eq!(q.hand_back(unused.receipt()), Err(ReceiptError::Stale));
    assert_eq!(q.delete(unused.receipt()), Err(ReceiptError::Stale));
    let stats = q.stats();
    assert_eq!(
        (
            stats.received,
            stats.released,
            stats.in_flight,
            stats.dead_lettered
        ),
        (2, 1, 1, 0)
    );
    // An ordinary release of the same message now does go to the dead-letter queue.
    q.release(again.receipt()).unwrap();
    assert_eq!(*dlq.try_receive().unwrap().body(), 1);
}

#[test]
fn hand_back_refuses_expired_and_forged_receipts() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    q.send(1).unwrap();
    let first = q.try_receive().unwrap();
    clock.advance(secs(11));
    assert_eq!(q.hand_back(first.receipt()), Err(ReceiptError::Expired));
    let second = q.try_receive().unwrap();
    assert_eq!(second.receive_count(), 2);
    assert_eq!(q.hand_back(first.receipt()), Err(ReceiptError::Stale));
    assert_eq!(
        q.hand_back(visq::Receipt::from_u64(u64::MAX)),
        Err(ReceiptError::Stale)
    );
    // The refusals left the current lease alone; handing it back undoes only the second
    // receive, so the next one is the second again.
    q.hand_back(second.receipt()).unwrap();
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
    assert_eq!(q.stats().refused_receipts, 3);
}

#[test]
fn lease_hand_back_gives_unused_work_back_uncounted() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().clock(clock.clone()).build().unwrap());
    let q = queue_with_one_receive(&clock, &dlq);
    q.send(1).unwrap();
    q.try_receive_lease().unwrap().hand_back().unwrap();
    assert!(dlq.try_receive().is_none());
    let lease = q.try_receive_lease().unwrap();
    assert_eq!(lease.receive_count(), 1);
    lease.ack().unwrap();
}

// ---- leases on a backend ----------------------------------------------------------------

mod on_a_backend {
    use super::limited_backend::Limited;
    use super::*;
    use visq::{Backend, BackendError, BackendLease, DeathCause, Feature, Outgoing};

    type Shared = Arc<dyn Backend<Body = u32>>;

    /// `q` through the trait, with one message (body 1) sent.
    fn backend_with_one(q: Arc<Queue<u32>>) -> Shared {
        let backend: Shared = q;
        backend.send(Outgoing::new(1)).unwrap();
        backend
    }

    fn lease(backend: &Shared) -> BackendLease<'_, u32> {
        let mut out = Vec::new();
        backend.receive(&mut out, 1, Duration::ZERO, None).unwrap();
        Lease::new(&**backend, out.pop().expect("a message is visible"))
    }

    #[test]
    fn ack_deletes_and_drop_releases() {
        let q = Arc::new(queue(&ManualClock::new()));
        let backend = backend_with_one(q.clone());
        drop(lease(&backend));
        let again = lease(&backend);
        assert_eq!((*again.body(), again.receive_count()), (1, 2));
        assert!(std::ptr::eq(again.queue(), &*backend));
        again.ack().unwrap();
        let stats = q.stats();
        assert_eq!((stats.released, stats.deleted, stats.in_flight), (1, 1, 0));
    }

    #[test]
    fn nack_after_and_extend_move_the_deadline() {
        let clock = ManualClock::new();
        let q = Arc::new(queue(&clock));
        let backend = backend_with_one(q.clone());
        lease(&backend).nack_after(secs(5)).unwrap();
        clock.advance(secs(5) - TICK);
        assert!(q.try_receive().is_none());
        clock.advance(TICK * 2);
        let held = lease(&backend);
        held.extend(secs(60)).unwrap();
        clock.advance(secs(59));
        assert!(q.try_receive().is_none());
        held.ack().unwrap();
    }

    #[test]
    fn hand_back_is_uncharged_where_the_backend_says_so() {
        let clock = ManualClock::new();
        let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().clock(clock.clone()).build().unwrap());
        let q = Arc::new(queue_with_one_receive(&clock, &dlq));
        let backend = backend_with_one(q.clone());
        lease(&backend).hand_back().unwrap();
        assert!(dlq.try_receive().is_none(), "a hand-back is no attempt");
        assert_eq!(lease(&backend).receive_count(), 1);
    }

    #[test]
    fn dead_letter_moves_it_now_with_the_reason() {
        let clock = ManualClock::new();
        let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().clock(clock.clone()).build().unwrap());
        let q = Arc::new(queue_with_one_receive(&clock, &dlq));
        let backend = backend_with_one(q.clone());
        lease(&backend).dead_letter("cannot parse").unwrap();
        let letters = dlq.dead_letters(1);
        assert_eq!(
            letters[0].cause,
            DeathCause::Rejected {
                reason: "cannot parse".into()
            }
        );
    }

    #[test]
    fn a_lease_gone_is_stale_and_not_retried() {
        let clock = ManualClock::new();
        let q = Arc::new(queue(&clock));
        let backend = backend_with_one(q.clone());
        let first = lease(&backend);
        clock.advance(secs(11));
        assert_eq!(first.ack(), Err(BackendError::Stale));
        assert_eq!(q.stats().refused_receipts, 1, "the drop tried again");
        assert_eq!(lease(&backend).receive_count(), 2);
    }

    #[test]
    fn where_a_lease_cannot_change_the_refusal_leaves_it_live_and_the_drop_releases() {
        let clock = ManualClock::new();
        let q = Arc::new(queue(&clock));
        let backend: Shared = Arc::new(Limited::like_rabbitmq(q.clone()));
        backend.send(Outgoing::new(1)).unwrap();
        let held = lease(&backend);
        assert_eq!(
            held.extend(secs(60)),
            Err(BackendError::Unsupported(Feature::ExtendLease))
        );
        assert_eq!(
            held.nack_after(secs(5)),
            Err(BackendError::Unsupported(Feature::ExtendLease))
        );
        // Released at once by the re-armed drop, not after 5 s.
        let again = lease(&backend);
        assert_eq!(again.receive_count(), 2);
        // No dead-letter queue: refused, released too.
        assert_eq!(
            again.dead_letter("no"),
            Err(BackendError::Unsupported(Feature::DeadLetter))
        );
        assert_eq!(lease(&backend).receive_count(), 3);
    }
}
