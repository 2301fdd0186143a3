//! Integration tests for every item of the public API contract (`shared/API.md`).
//!
//! Queue time is driven only by `ManualClock`; the only wall-clock waits are the `wait`
//! arguments of blocking receives, whose wall-clock behaviour is itself under test.

use std::collections::HashSet;
use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use visq::{
    BuildError, Delivery, ManualClock, MessageId, Queue, Receipt, ReceiptError, SendError, Stats,
    MAX_CAPACITY, MAX_TIMEOUT,
};

const TICK: Duration = Duration::from_millis(1);
const NANO: Duration = Duration::from_nanos(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A queue on `clock` with a 1 ms tick.
fn queue<T>(clock: &ManualClock, capacity: usize, visibility: Duration) -> Queue<T> {
    Queue::builder()
        .capacity(capacity)
        .visibility_timeout(visibility)
        .tick(TICK)
        .clock(clock.clone())
        .build()
        .expect("valid settings")
}

/// A queue on `clock` with a 1 ms tick and a dead-letter queue.
fn queue_with_dlq<T>(
    clock: &ManualClock,
    capacity: usize,
    visibility: Duration,
    dlq: &Arc<Queue<T>>,
    max_receives: u32,
) -> Queue<T> {
    Queue::builder()
        .capacity(capacity)
        .visibility_timeout(visibility)
        .dead_letter(dlq.clone(), max_receives)
        .tick(TICK)
        .clock(clock.clone())
        .build()
        .expect("valid settings")
}

/// Moves `clock` forward to the absolute time `to` (it must not be behind).
fn set_time(clock: &ManualClock, to: Duration) {
    let now = clock.now();
    assert!(to >= now, "the test tried to move the clock backwards");
    clock.advance(to - now);
}

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

// ---------------------------------------------------------------------------------------------
// Static guarantees
// ---------------------------------------------------------------------------------------------

fn assert_send_sync<T: Send + Sync>() {}
fn assert_message_id_traits<T: Copy + Eq + Ord + Hash + Debug + Display>() {}
fn assert_receipt_traits<T: Copy + Eq + Debug>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
fn assert_clone<T: Clone>() {}

// Compile-time assertions: these fail the build, not a test, when violated.
const _: fn() = || {
    assert_send_sync::<Queue<u64>>();
    assert_send_sync::<Queue<String>>();
    assert_send_sync::<Queue<Arc<Vec<u8>>>>();
    assert_send_sync::<ManualClock>();
    assert_message_id_traits::<MessageId>();
    assert_receipt_traits::<Receipt>();
    assert_error::<BuildError>();
    assert_error::<ReceiptError>();
    assert_error::<SendError<String>>();
    assert_clone::<ManualClock>();
};

#[test]
fn queue_is_send_and_sync_and_shares_across_threads() {
    assert_send_sync::<Queue<String>>();
    let q: Arc<Queue<String>> = Arc::new(Queue::builder().capacity(8).build().unwrap());
    let q2 = q.clone();
    thread::spawn(move || q2.send("from another thread".to_string()).unwrap())
        .join()
        .unwrap();
    assert_eq!(q.try_receive().unwrap().body(), "from another thread");
}

#[test]
fn max_timeout_is_at_least_twelve_hours() {
    assert!(MAX_TIMEOUT >= Duration::from_secs(12 * 60 * 60));
    const { assert!(MAX_CAPACITY >= 1) };
}

// ---------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------

#[test]
fn build_rejects_zero_capacity() {
    let err = Queue::<u32>::builder().capacity(0).build().unwrap_err();
    assert_eq!(err, BuildError::ZeroCapacity);
}

#[test]
fn build_rejects_capacity_over_max() {
    let err = Queue::<u32>::builder()
        .capacity(MAX_CAPACITY + 1)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::CapacityTooLarge(MAX_CAPACITY + 1));
    let err = Queue::<u32>::builder()
        .capacity(usize::MAX)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::CapacityTooLarge(usize::MAX));
}

#[test]
fn build_rejects_zero_tick() {
    let err = Queue::<u32>::builder()
        .tick(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::ZeroTick);
}

#[test]
fn build_rejects_tick_under_min_tick_and_takes_min_tick() {
    let err = Queue::<u32>::builder()
        .tick(visq::MIN_TICK - NANO)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::TickTooShort);
    let q = Queue::<u32>::builder()
        .tick(visq::MIN_TICK)
        .build()
        .unwrap();
    q.send(1).unwrap();
    assert_eq!(*q.try_receive().unwrap().body(), 1);
}

#[test]
fn build_rejects_tick_over_max_timeout() {
    let err = Queue::<u32>::builder()
        .tick(MAX_TIMEOUT + NANO)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::TickTooLong);
    let err = Queue::<u32>::builder()
        .tick(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::TickTooLong);
    // The limit itself is allowed.
    let q = Queue::<u32>::builder()
        .capacity(4)
        .tick(MAX_TIMEOUT)
        .build()
        .unwrap();
    assert_eq!(q.capacity(), 4);
}

#[test]
fn build_rejects_bad_visibility_timeout() {
    let err = Queue::<u32>::builder()
        .visibility_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::InvalidVisibilityTimeout);
    let err = Queue::<u32>::builder()
        .visibility_timeout(MAX_TIMEOUT + NANO)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::InvalidVisibilityTimeout);
    let err = Queue::<u32>::builder()
        .visibility_timeout(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::InvalidVisibilityTimeout);
    Queue::<u32>::builder()
        .capacity(4)
        .visibility_timeout(MAX_TIMEOUT)
        .build()
        .unwrap();
    Queue::<u32>::builder()
        .capacity(4)
        .visibility_timeout(NANO)
        .build()
        .unwrap();
}

#[test]
fn build_rejects_zero_max_receives() {
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(4).build().unwrap());
    let err = Queue::<u32>::builder()
        .dead_letter(dlq.clone(), 0)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::ZeroMaxReceives);
    Queue::<u32>::builder()
        .capacity(4)
        .dead_letter(dlq, 1)
        .build()
        .unwrap();
}

#[test]
fn build_errors_display_and_are_errors() {
    let all = [
        BuildError::ZeroCapacity,
        BuildError::CapacityTooLarge(MAX_CAPACITY + 1),
        BuildError::ZeroTick,
        BuildError::TickTooShort,
        BuildError::TickTooLong,
        BuildError::InvalidVisibilityTimeout,
        BuildError::ZeroMaxReceives,
    ];
    let texts: HashSet<String> = all.iter().map(|e| e.to_string()).collect();
    assert_eq!(texts.len(), all.len(), "each error has its own message");
    assert!(texts.iter().all(|t| !t.is_empty()));
    let boxed: Box<dyn std::error::Error> = Box::new(BuildError::ZeroTick);
    assert!(!boxed.to_string().is_empty());
}

#[test]
fn capacity_reports_the_configured_capacity_and_defaults_to_1024() {
    for capacity in [1, 7, 1000, 4096] {
        let q: Queue<u8> = Queue::builder().capacity(capacity).build().unwrap();
        assert_eq!(q.capacity(), capacity);
    }
    let q: Queue<u8> = Queue::builder().build().unwrap();
    assert_eq!(q.capacity(), 1024);
}

#[test]
fn default_visibility_timeout_is_30_seconds() {
    let clock = ManualClock::new();
    let q: Queue<u8> = Queue::builder().clock(clock.clone()).build().unwrap();
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    set_time(&clock, Duration::from_secs(30) - NANO);
    assert!(q.try_receive().is_none());
    set_time(&clock, Duration::from_secs(30) + TICK);
    let again = q.try_receive().unwrap();
    assert_eq!((again.id(), again.receive_count()), (d.id(), 2));
}

#[test]
fn capacity_counts_ready_delayed_and_in_flight() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 3, ms(100));
    q.send(1).unwrap();
    let _leased = q.try_receive().unwrap();
    q.send_delayed(2, ms(50)).unwrap();
    q.send(3).unwrap();
    let s = q.stats();
    assert_eq!((s.ready, s.delayed, s.in_flight), (1, 1, 1));
    assert_eq!(q.send(4), Err(SendError::Full(4)));
    assert_eq!(q.send_delayed(5, ms(1)), Err(SendError::Full(5)));
}

// ---------------------------------------------------------------------------------------------
// SendError
// ---------------------------------------------------------------------------------------------

#[test]
fn send_full_gives_the_body_back_and_room_makes_it_succeed() {
    let clock = ManualClock::new();
    let q: Queue<String> = queue(&clock, 2, ms(100));
    let first = q.send("a".to_string()).unwrap();
    q.send("b".to_string()).unwrap();
    let before = q.stats();
    let err = q.send("c".to_string()).unwrap_err();
    assert!(matches!(err, SendError::Full(ref body) if body == "c"));
    assert_eq!(err.into_inner(), "c");
    let err = q.send_delayed("d".to_string(), ms(5)).unwrap_err();
    assert_eq!(err, SendError::Full("d".to_string()));
    assert_eq!(
        q.stats(),
        with_refusals(&before, 2, 0),
        "a refused send changes nothing but its count"
    );
    assert_eq!(before.sent, 2);

    let d = q.try_receive().unwrap();
    assert_eq!(d.id(), first);
    // Still full: the leased message is held.
    assert_eq!(q.send("e".to_string()).unwrap_err().into_inner(), "e");
    q.delete(d.receipt()).unwrap();
    q.send("f".to_string()).unwrap();
    assert_eq!(q.stats().sent, 3);
}

#[test]
fn send_closed_gives_the_body_back() {
    let clock = ManualClock::new();
    let q: Queue<String> = queue(&clock, 4, ms(100));
    assert!(!q.is_closed());
    q.close();
    assert!(q.is_closed());
    let err = q.send("x".to_string()).unwrap_err();
    assert_eq!(err, SendError::Closed("x".to_string()));
    assert_eq!(err.into_inner(), "x");
    let err = q.send_delayed("y".to_string(), ms(10)).unwrap_err();
    assert_eq!(err, SendError::Closed("y".to_string()));
    assert_eq!(err.into_inner(), "y");
    assert_eq!(q.stats().sent, 0);
}

#[test]
fn send_delayed_too_long_gives_the_body_back() {
    let clock = ManualClock::new();
    let q: Queue<String> = queue(&clock, 4, ms(100));
    let err = q
        .send_delayed("late".to_string(), MAX_TIMEOUT + NANO)
        .unwrap_err();
    assert_eq!(err, SendError::DelayTooLong("late".to_string()));
    assert_eq!(err.into_inner(), "late");
    let err = q
        .send_delayed("later".to_string(), Duration::MAX)
        .unwrap_err();
    assert_eq!(err.into_inner(), "later");
    let s = q.stats();
    assert_eq!((s.sent, s.ready, s.delayed), (0, 0, 0));

    // MAX_TIMEOUT itself is allowed and honoured.
    q.send_delayed("max".to_string(), MAX_TIMEOUT).unwrap();
    set_time(&clock, MAX_TIMEOUT - TICK);
    assert!(q.try_receive().is_none());
    assert_eq!(q.stats().delayed, 1);
    set_time(&clock, MAX_TIMEOUT + TICK);
    assert_eq!(q.try_receive().unwrap().body(), "max");
}

#[test]
fn send_errors_display_without_needing_debug_bodies() {
    struct Opaque;
    let errors = [
        SendError::Full(Opaque),
        SendError::Closed(Opaque),
        SendError::DelayTooLong(Opaque),
    ];
    let texts: HashSet<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(texts.len(), 3);
    for e in &errors {
        assert!(!format!("{e:?}").is_empty());
    }
    for e in errors {
        let Opaque = e.into_inner();
    }
}

// ---------------------------------------------------------------------------------------------
// Ids and order
// ---------------------------------------------------------------------------------------------

#[test]
fn fifo_without_redelivery_or_delay() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 1024, ms(100));
    let ids: Vec<MessageId> = (0..1000).map(|n| q.send(n).unwrap()).collect();
    for (n, id) in ids.iter().enumerate() {
        let d = q.try_receive().unwrap();
        assert_eq!(*d.body(), n as u32);
        assert_eq!(d.id(), *id);
        assert_eq!(d.receive_count(), 1);
    }
    assert!(q.try_receive().is_none());
}

#[test]
fn fifo_across_slot_reuse() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 3, ms(100));
    let mut next_sent = 0;
    let mut next_received = 0;
    for round in 0..200 {
        while q.send(next_sent).is_ok() {
            next_sent += 1;
        }
        for _ in 0..(1 + round % 3) {
            let d = q.try_receive().unwrap();
            assert_eq!(*d.body(), next_received);
            next_received += 1;
            q.delete(d.receipt()).unwrap();
        }
    }
}

#[test]
fn message_ids_grow_in_send_order() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 4, ms(100));
    let mut last: Option<MessageId> = None;
    let mut seen = HashSet::new();
    for n in 0..500u32 {
        let id = if n % 3 == 0 {
            q.send_delayed(n, ms(1)).unwrap()
        } else {
            q.send(n).unwrap()
        };
        if let Some(last) = last {
            assert!(id > last, "{id} after {last}");
        }
        assert!(seen.insert(id), "ids are unique");
        assert_eq!(id.to_string(), id.get().to_string());
        last = Some(id);
        clock.advance(TICK);
        let d = q.try_receive().unwrap();
        assert_eq!((d.id(), *d.body()), (id, n));
        q.delete(d.receipt()).unwrap();
    }
}

#[test]
fn message_id_is_copy_ord_hash_display() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    let a = q.send(1).unwrap();
    let b = q.send(2).unwrap();
    let copy = a;
    assert_eq!(a, copy);
    assert!(a < b);
    assert_eq!(a.cmp(&b), std::cmp::Ordering::Less);
    assert_ne!(format!("{a}"), format!("{b}"));
    assert!(!format!("{a:?}").is_empty());
    let set: HashSet<MessageId> = [a, b, copy].into_iter().collect();
    assert_eq!(set.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Delays and leases: precision
// ---------------------------------------------------------------------------------------------

#[test]
fn send_delayed_is_invisible_until_the_delay_has_passed() {
    let clock = ManualClock::new();
    let q: Queue<&str> = queue(&clock, 8, ms(100));
    let id = q.send_delayed("later", ms(50)).unwrap();
    assert!(q.try_receive().is_none());
    let s = q.stats();
    assert_eq!((s.ready, s.delayed, s.in_flight, s.sent), (0, 1, 0, 1));
    assert_eq!(s.oldest_ready_age, None);

    set_time(&clock, ms(50) - TICK);
    assert!(q.try_receive().is_none(), "visible at delay - tick");
    set_time(&clock, ms(50) - NANO);
    assert!(q.try_receive().is_none(), "visible before the delay passed");
    set_time(&clock, ms(50) + TICK);
    let s = q.stats();
    assert_eq!((s.ready, s.delayed), (1, 0));
    let d = q.try_receive().unwrap();
    assert_eq!((d.id(), *d.body(), d.receive_count()), (id, "later", 1));
}

#[test]
fn send_delayed_precision_with_a_coarse_unaligned_tick() {
    let clock = ManualClock::new();
    let tick = ms(10);
    let q: Queue<u8> = Queue::builder()
        .capacity(4)
        .tick(tick)
        .clock(clock.clone())
        .build()
        .unwrap();
    clock.advance(Duration::from_micros(3_700));
    let sent_at = clock.now();
    let delay = ms(25);
    q.send_delayed(1, delay).unwrap();
    set_time(&clock, sent_at + delay - tick);
    assert!(q.try_receive().is_none());
    set_time(&clock, sent_at + delay - NANO);
    assert!(q.try_receive().is_none(), "fired early");
    set_time(&clock, sent_at + delay + tick);
    assert_eq!(*q.try_receive().unwrap().body(), 1);
}

#[test]
fn zero_delay_is_a_plain_send() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send_delayed(9, Duration::ZERO).unwrap();
    assert_eq!(q.stats().ready, 1);
    assert_eq!(*q.try_receive().unwrap().body(), 9);
}

#[test]
fn a_delayed_message_does_not_hold_back_later_sends() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send_delayed(1, ms(20)).unwrap();
    q.send(2).unwrap();
    assert_eq!(*q.try_receive().unwrap().body(), 2);
    assert!(q.try_receive().is_none());
    clock.advance(ms(21));
    assert_eq!(*q.try_receive().unwrap().body(), 1);
}

#[test]
fn lease_expires_at_its_deadline_within_one_tick() {
    let clock = ManualClock::new();
    let q: Queue<&str> = queue(&clock, 8, ms(100));
    let id = q.send("job").unwrap();
    let first = q.try_receive().unwrap();
    assert_eq!(first.receive_count(), 1);
    assert_eq!(q.stats().in_flight, 1);

    set_time(&clock, ms(100) - TICK);
    assert!(q.try_receive().is_none(), "visible at deadline - tick");
    set_time(&clock, ms(100) - NANO);
    assert!(q.try_receive().is_none(), "visible before the deadline");
    assert_eq!(q.stats().in_flight, 1);
    set_time(&clock, ms(100) + TICK);
    let second = q.try_receive().unwrap();
    assert_eq!(
        (second.id(), *second.body(), second.receive_count()),
        (id, "job", 2)
    );
    assert_ne!(second.receipt(), first.receipt());
    let s = q.stats();
    assert_eq!((s.expired, s.received, s.in_flight, s.ready), (1, 2, 1, 0));
}

/// A body whose clone takes queue time: it moves the manual clock on by its duration.
struct SlowClone(Duration, ManualClock);

impl Clone for SlowClone {
    fn clone(&self) -> Self {
        self.1.advance(self.0);
        Self(self.0, self.1.clone())
    }
}

#[test]
fn lease_starts_after_the_clone_not_before() {
    // The receiver cannot use the message before the clone is done, so the lease must cover
    // the whole timeout from then on: a lease timed from a clock reading made before the
    // clone came out shorter by the clone's time.
    let clock = ManualClock::new();
    let q: Queue<SlowClone> = queue(&clock, 4, ms(100));
    q.send(SlowClone(ms(40), clock.clone())).unwrap();
    let d = q.try_receive().unwrap();
    assert_eq!(clock.now(), ms(40), "the clone took 40 ms");
    set_time(&clock, ms(140) - NANO);
    assert!(
        q.try_receive().is_none(),
        "the lease ended before 100 ms had passed"
    );
    assert_eq!(q.delete(d.receipt()), Ok(()));
}

#[test]
fn lease_precision_with_a_coarse_unaligned_tick() {
    let clock = ManualClock::new();
    let tick = ms(10);
    let vis = ms(95);
    let q: Queue<u8> = Queue::builder()
        .capacity(4)
        .tick(tick)
        .visibility_timeout(vis)
        .clock(clock.clone())
        .build()
        .unwrap();
    q.send(1).unwrap();
    clock.advance(Duration::from_micros(12_345));
    let leased_at = clock.now();
    let d = q.try_receive().unwrap();
    set_time(&clock, leased_at + vis - tick);
    assert!(q.try_receive().is_none());
    set_time(&clock, leased_at + vis - NANO);
    assert!(q.try_receive().is_none(), "fired early");
    q.delete(d.receipt())
        .expect("the receipt is valid before the deadline");
    // Again with a lease that is not deleted.
    q.send(2).unwrap();
    let leased_at = clock.now();
    q.try_receive().unwrap();
    set_time(&clock, leased_at + vis + tick);
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
}

/// Moves the clock on from where it is until every message (body `n`, due at `due_ms[n]` ms) has
/// been received, each step a jump of up to `max_jump_ms`, one ms before the next deadline, or
/// onto it. Checks that no message comes early, none comes twice, each comes with
/// `receive_count`, and none that is due stays invisible; deletes each; runs `after_step(now)`
/// after every step.
fn drain_on_time(
    q: &Queue<usize>,
    clock: &ManualClock,
    rng: &mut Rng,
    due_ms: &[u64],
    max_jump_ms: u64,
    receive_count: u32,
    mut after_step: impl FnMut(u64),
) {
    let mut seen = vec![false; due_ms.len()];
    let mut received = 0;
    let mut now = clock.now().as_millis() as u64;
    while received < due_ms.len() {
        let next_due = due_ms
            .iter()
            .zip(&seen)
            .filter(|(_, s)| !**s)
            .map(|(d, _)| *d)
            .min()
            .unwrap();
        let to = match rng.below(5) {
            0 => now + 1 + rng.below(max_jump_ms),
            1 if next_due > now + 1 => next_due - 1,
            _ => next_due,
        };
        now = to.max(now + 1);
        set_time(clock, ms(now));
        while let Some(d) = q.try_receive() {
            let n = *d.body();
            assert!(
                due_ms[n] <= now,
                "message due at {} ms came at {now} ms",
                due_ms[n]
            );
            assert!(!seen[n], "delivered twice");
            assert_eq!(d.receive_count(), receive_count);
            seen[n] = true;
            received += 1;
            q.delete(d.receipt()).unwrap();
        }
        for (n, &due) in due_ms.iter().enumerate() {
            assert!(
                due > now || seen[n],
                "message due at {due} ms not visible at {now} ms"
            );
        }
        after_step(now);
    }
}

#[test]
fn every_delay_fires_on_its_tick_across_wheel_levels() {
    // Delays from 1 ms to ~7 min at 1 ms ticks span four wheel levels; the clock moves in
    // steps that stop one tick before, exactly on and after deadlines, and in long jumps.
    const N: usize = 1500;
    let clock = ManualClock::new();
    let q: Queue<usize> = queue(&clock, N, ms(1000));
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut due_ms = Vec::with_capacity(N);
    for n in 0..N {
        let delay = match n % 4 {
            0 => 1 + rng.below(64),
            1 => 1 + rng.below(4096),
            2 => 1 + rng.below(262_144),
            _ => 1 + rng.below(420_000),
        };
        q.send_delayed(n, ms(delay)).unwrap();
        due_ms.push(delay);
    }
    drain_on_time(&q, &clock, &mut rng, &due_ms, 20_000, 1, |now| {
        let pending = due_ms.iter().filter(|&&d| d > now).count();
        assert_eq!(q.stats().delayed, pending);
    });
    assert_eq!(q.stats().deleted, N as u64);
}

#[test]
fn every_lease_fires_on_its_tick_after_extends_and_shortens() {
    const N: usize = 800;
    let clock = ManualClock::new();
    let q: Queue<usize> = queue(&clock, N, Duration::from_secs(600));
    for n in 0..N {
        q.send(n).unwrap();
    }
    let mut rng = Rng::new(0xDEAD_BEEF_1234_5678);
    let mut due_ms = vec![0u64; N];
    let mut receipts = Vec::with_capacity(N);
    for _ in 0..N {
        let d = q.try_receive().unwrap();
        receipts.push((*d.body(), d.receipt()));
    }
    // Half the clock's life passes, then every lease is moved: earlier or later.
    set_time(&clock, ms(5_000));
    for &(n, receipt) in &receipts {
        let timeout = match n % 3 {
            0 => 1 + rng.below(100),           // much shorter
            1 => 1 + rng.below(600_000),       // either
            _ => 600_000 + rng.below(600_000), // longer
        };
        q.change_visibility(receipt, ms(timeout)).unwrap();
        due_ms[n] = 5_000 + timeout;
    }
    drain_on_time(&q, &clock, &mut rng, &due_ms, 30_000, 2, |_| {});
    let s = q.stats();
    assert_eq!((s.expired, s.deleted, s.in_flight), (N as u64, N as u64, 0));
}

#[test]
fn lease_of_max_timeout_expires_on_time() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 2, MAX_TIMEOUT);
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    set_time(&clock, MAX_TIMEOUT - TICK);
    assert!(q.try_receive().is_none());
    set_time(&clock, MAX_TIMEOUT + TICK);
    let again = q.try_receive().unwrap();
    assert_eq!((again.id(), again.receive_count()), (d.id(), 2));
}

#[test]
fn one_advance_makes_every_passed_deadline_visible_to_the_next_operation() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 300, ms(500));
    for n in 0..100 {
        q.send(n).unwrap();
    }
    for _ in 0..100 {
        q.try_receive().unwrap();
    }
    for n in 100..300 {
        q.send_delayed(n, ms(1 + u64::from(n) * 37 % 10_000))
            .unwrap();
    }
    clock.advance(Duration::from_secs(11));
    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.in_flight, s.expired),
        (300, 0, 0, 100)
    );
}

#[test]
fn dropping_a_delivery_does_not_delete_the_message() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 2, ms(100));
    let id = q.send(1).unwrap();
    let _ = q.try_receive().unwrap(); // the delivery is dropped here
    assert_eq!(q.stats().in_flight, 1);
    clock.advance(ms(101));
    let d = q.try_receive().unwrap();
    assert_eq!((d.id(), d.receive_count()), (id, 2));
}

// ---------------------------------------------------------------------------------------------
// Receipts: errors, and refusals change nothing
// ---------------------------------------------------------------------------------------------

/// Asserts `receipt` is refused with `expected` by delete, release and change_visibility, and
/// that the refusals change nothing.
fn assert_refused<T>(q: &Queue<T>, receipt: Receipt, expected: ReceiptError) {
    let before = q.stats();
    assert_eq!(q.delete(receipt), Err(expected), "delete");
    assert_eq!(q.release(receipt), Err(expected), "release");
    assert_eq!(
        q.change_visibility(receipt, ms(5)),
        Err(expected),
        "change_visibility"
    );
    assert_eq!(
        q.change_visibility(receipt, Duration::ZERO),
        Err(expected),
        "change_visibility(0)"
    );
    assert_eq!(
        q.stats(),
        with_refusals(&before, 0, 4),
        "a refused receipt changed the queue, or was not counted"
    );
}

/// `stats` with `sends` more refused sends and `receipts` more refused receipts: all a refusal
/// may change.
fn with_refusals(stats: &Stats, sends: u64, receipts: u64) -> Stats {
    let mut stats = stats.clone();
    stats.refused_sends += sends;
    stats.refused_receipts += receipts;
    stats
}

#[test]
fn receipt_stale_after_delete() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    q.delete(d.receipt()).unwrap();
    assert_refused(&q, d.receipt(), ReceiptError::Stale);
    let s = q.stats();
    assert_eq!((s.deleted, s.ready, s.in_flight, s.delayed), (1, 0, 0, 0));
    // Never delivered again.
    clock.advance(Duration::from_secs(3600));
    assert!(q.try_receive().is_none());
    assert_refused(&q, d.receipt(), ReceiptError::Stale);
}

#[test]
fn receipt_stale_after_release() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap();
    assert_refused(&q, d.receipt(), ReceiptError::Stale);
    let again = q.try_receive().unwrap();
    assert_eq!(again.receive_count(), 2);
    assert_refused(&q, d.receipt(), ReceiptError::Stale);
    q.delete(again.receipt()).unwrap();
}

#[test]
fn receipt_expired_then_stale_after_redelivery() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    clock.advance(ms(101));
    // Before any operation has run the wheel.
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Expired));
    assert_eq!(q.release(d.receipt()), Err(ReceiptError::Expired));
    assert_eq!(
        q.change_visibility(d.receipt(), ms(500)),
        Err(ReceiptError::Expired)
    );
    // After the wheel has made it visible again (stats runs it).
    assert_eq!(q.stats().ready, 1);
    assert_refused(&q, d.receipt(), ReceiptError::Expired);
    let again = q.try_receive().unwrap();
    assert_eq!(again.receive_count(), 2);
    assert_refused(&q, d.receipt(), ReceiptError::Stale);
    q.delete(again.receipt()).unwrap();
    assert_eq!(q.stats().deleted, 1);
}

#[test]
fn receipt_extended_just_before_its_deadline_expires_at_the_new_one() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    set_time(&clock, ms(100) - NANO);
    q.change_visibility(d.receipt(), ms(100)).unwrap();
    set_time(&clock, ms(200) - TICK);
    assert!(q.try_receive().is_none());
    set_time(&clock, ms(200) + TICK);
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Expired));
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
}

#[test]
fn never_issued_receipts_are_stale_and_change_nothing() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 4, ms(100));
    // A fresh queue: nothing was ever issued.
    for raw in [0, 1, 3, 4, u64::MAX, 1 << 63, 1 << 28, (1 << 28) | 1] {
        assert_refused(&q, Receipt::from_u64(raw), ReceiptError::Stale);
    }
    q.send(7).unwrap();
    q.send(8).unwrap();
    let live = q.try_receive().unwrap();
    // Slot indices out of range for a 4-slot queue (receipts name the slot in the low bits,
    // below MAX_CAPACITY).
    let slot_mask = MAX_CAPACITY as u64 - 1;
    for slot in [4, 5, 1000, slot_mask] {
        let forged = (live.receipt().to_u64() & !slot_mask) | slot;
        assert_refused(&q, Receipt::from_u64(forged), ReceiptError::Stale);
    }
    // The live lease with another epoch, and every other bit flipped.
    for bit in 0..64 {
        let forged = Receipt::from_u64(live.receipt().to_u64() ^ (1 << bit));
        assert_refused(&q, forged, ReceiptError::Stale);
    }
    // Arbitrary values.
    let mut rng = Rng::new(42);
    for _ in 0..5_000 {
        let raw = rng.next_u64();
        if raw == live.receipt().to_u64() {
            continue;
        }
        let before = q.stats();
        assert_eq!(q.delete(Receipt::from_u64(raw)), Err(ReceiptError::Stale));
        assert_eq!(q.release(Receipt::from_u64(raw)), Err(ReceiptError::Stale));
        assert_eq!(q.stats(), with_refusals(&before, 0, 2));
    }
    // Slots in range with arbitrary epochs.
    for _ in 0..5_000 {
        let raw = (rng.next_u64() & !slot_mask) | rng.below(4);
        if raw == live.receipt().to_u64() {
            continue;
        }
        let before = q.stats();
        assert_eq!(q.delete(Receipt::from_u64(raw)), Err(ReceiptError::Stale));
        assert_eq!(
            q.change_visibility(Receipt::from_u64(raw), ms(1)),
            Err(ReceiptError::Stale)
        );
        assert_eq!(q.stats(), with_refusals(&before, 0, 2));
    }
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.deleted, s.released), (1, 1, 0, 0));
    // The real lease was untouched.
    q.delete(live.receipt()).unwrap();
    assert_eq!(*q.try_receive().unwrap().body(), 8);
}

#[test]
fn receipt_from_an_earlier_use_of_a_reused_slot_is_stale() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 1, ms(100));
    let mut old = Vec::new();
    for n in 0..50 {
        q.send(n).unwrap();
        let d = q.try_receive().unwrap();
        for &receipt in &old {
            assert_refused(&q, receipt, ReceiptError::Stale);
        }
        old.push(d.receipt());
        if n % 2 == 0 {
            q.delete(d.receipt()).unwrap();
        } else {
            q.release(d.receipt()).unwrap();
            let again = q.try_receive().unwrap();
            old.push(again.receipt());
            q.delete(again.receipt()).unwrap();
        }
    }
}

#[test]
fn timeout_too_long_is_refused_and_changes_nothing() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    let before = q.stats();
    assert_eq!(
        q.change_visibility(d.receipt(), MAX_TIMEOUT + NANO),
        Err(ReceiptError::TimeoutTooLong)
    );
    assert_eq!(
        q.change_visibility(d.receipt(), Duration::MAX),
        Err(ReceiptError::TimeoutTooLong)
    );
    assert_eq!(q.stats(), with_refusals(&before, 0, 2));
    // The lease still ends at its original deadline.
    set_time(&clock, ms(100) - TICK);
    assert!(q.try_receive().is_none());
    set_time(&clock, ms(100) + TICK);
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
}

#[test]
fn change_visibility_accepts_max_timeout() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    q.change_visibility(d.receipt(), MAX_TIMEOUT).unwrap();
    set_time(&clock, MAX_TIMEOUT - TICK);
    assert!(q.try_receive().is_none());
    q.delete(d.receipt()).unwrap();
}

#[test]
fn receipt_round_trips_through_u64() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send(1).unwrap();
    q.send(2).unwrap();
    let a = q.try_receive().unwrap();
    let b = q.try_receive().unwrap();
    assert_ne!(a.receipt(), b.receipt());
    assert_ne!(a.receipt().to_u64(), b.receipt().to_u64());
    let copy = a.receipt();
    assert_eq!(copy, a.receipt());
    assert!(!format!("{copy:?}").is_empty());
    let restored = Receipt::from_u64(a.receipt().to_u64());
    assert_eq!(restored, a.receipt());
    assert_eq!(restored.to_u64(), a.receipt().to_u64());
    q.delete(restored).unwrap();
    q.release(Receipt::from_u64(b.receipt().to_u64())).unwrap();
    assert_eq!(q.stats().deleted, 1);
    assert_eq!(q.stats().released, 1);
}

// ---------------------------------------------------------------------------------------------
// Settling: change_visibility, release
// ---------------------------------------------------------------------------------------------

#[test]
fn change_visibility_extends_the_lease() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    set_time(&clock, ms(50));
    q.change_visibility(d.receipt(), ms(200)).unwrap(); // new deadline: 250 ms
    set_time(&clock, ms(100) + TICK);
    assert!(q.try_receive().is_none(), "the original deadline fired");
    assert_eq!(q.stats().in_flight, 1);
    set_time(&clock, ms(250) - TICK);
    assert!(q.try_receive().is_none(), "visible at new deadline - tick");
    set_time(&clock, ms(250) + TICK);
    let again = q.try_receive().unwrap();
    assert_eq!(again.receive_count(), 2);
    assert_eq!(q.stats().expired, 1);
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Stale));
}

#[test]
fn extended_receipt_stays_valid_until_the_new_deadline() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    q.change_visibility(d.receipt(), ms(300)).unwrap();
    set_time(&clock, ms(200));
    assert!(q.try_receive().is_none());
    q.change_visibility(d.receipt(), ms(300)).unwrap(); // 500 ms
    set_time(&clock, ms(499));
    assert!(q.try_receive().is_none());
    q.delete(d.receipt()).unwrap();
    let s = q.stats();
    assert_eq!((s.deleted, s.expired, s.in_flight), (1, 0, 0));
    clock.advance(Duration::from_secs(10));
    assert!(q.try_receive().is_none());
}

#[test]
fn change_visibility_shortens_the_lease_and_fires_on_time() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, Duration::from_secs(30));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    q.change_visibility(d.receipt(), ms(50)).unwrap();
    set_time(&clock, ms(50) - TICK);
    assert!(q.try_receive().is_none());
    set_time(&clock, ms(50) - NANO);
    assert!(q.try_receive().is_none());
    q.delete(d.receipt())
        .expect("the shortened receipt is valid before its deadline");
    // Again without deleting: the shortened lease expires long before 30 s.
    q.send(2).unwrap();
    let start = clock.now();
    let d = q.try_receive().unwrap();
    q.change_visibility(d.receipt(), ms(50)).unwrap();
    set_time(&clock, start + ms(50) + TICK);
    let again = q.try_receive().unwrap();
    assert_eq!((*again.body(), again.receive_count()), (2, 2));
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Stale));
}

#[test]
fn change_visibility_shortens_a_lease_after_the_wheel_has_moved_on() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, Duration::from_secs(10));
    q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    set_time(&clock, ms(5_000));
    assert_eq!(q.stats().in_flight, 1); // runs the wheel up to 5 s
    q.change_visibility(d.receipt(), Duration::from_secs(1))
        .unwrap(); // 6 s
    q.change_visibility(d.receipt(), ms(20)).unwrap(); // 5.020 s
    set_time(&clock, ms(5_020) - TICK);
    assert!(q.try_receive().is_none());
    set_time(&clock, ms(5_020) + TICK);
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
}

#[test]
fn change_visibility_zero_releases() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    let id = q.send(1).unwrap();
    let d = q.try_receive().unwrap();
    q.change_visibility(d.receipt(), Duration::ZERO).unwrap();
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.released, s.expired), (1, 0, 1, 0));
    assert_refused(&q, d.receipt(), ReceiptError::Stale);
    let again = q.try_receive().unwrap();
    assert_eq!((again.id(), again.receive_count()), (id, 2));
}

#[test]
fn release_makes_the_message_visible_at_once_behind_others() {
    let clock = ManualClock::new();
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    let a = q.send(1).unwrap();
    let b = q.send(2).unwrap();
    let d = q.try_receive().unwrap();
    assert_eq!(d.id(), a);
    q.release(d.receipt()).unwrap();
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.released, s.received), (2, 0, 1, 1));
    // No time has passed; the released message went to the back.
    let first = q.try_receive().unwrap();
    assert_eq!((first.id(), first.receive_count()), (b, 1));
    let second = q.try_receive().unwrap();
    assert_eq!(
        (second.id(), second.receive_count(), *second.body()),
        (a, 2, 1)
    );
}

// ---------------------------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------------------------

#[test]
fn dead_letter_after_max_receives_by_expiry() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<&str>> = Arc::new(queue(&clock, 4, ms(100)));
    let q = queue_with_dlq(&clock, 4, ms(100), &dlq, 2);
    q.send("poison").unwrap();
    assert_eq!(q.try_receive().unwrap().receive_count(), 1);
    clock.advance(ms(101));
    assert_eq!(q.try_receive().unwrap().receive_count(), 2);
    assert_eq!(dlq.stats().sent, 0);
    clock.advance(ms(101));
    assert!(q.try_receive().is_none(), "delivered a third time");
    let s = q.stats();
    assert_eq!(
        (
            s.ready,
            s.delayed,
            s.in_flight,
            s.expired,
            s.dead_lettered,
            s.received,
            s.dead_letter_retries
        ),
        (0, 0, 0, 2, 1, 2, 0)
    );
    let ds = dlq.stats();
    assert_eq!((ds.sent, ds.ready), (1, 1));
    let dead = dlq.try_receive().unwrap();
    assert_eq!((*dead.body(), dead.receive_count()), ("poison", 1));
    // The slot is free again.
    for n in 0..4 {
        q.send(["a", "b", "c", "d"][n]).unwrap();
    }
}

#[test]
fn dead_letter_after_max_receives_by_release() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(queue(&clock, 4, ms(100)));
    let q = queue_with_dlq(&clock, 4, ms(100), &dlq, 3);
    q.send(5).unwrap();
    for count in 1..=3 {
        let d = q.try_receive().unwrap();
        assert_eq!(d.receive_count(), count);
        q.release(d.receipt()).unwrap();
    }
    assert!(q.try_receive().is_none());
    let s = q.stats();
    assert_eq!(
        (s.ready, s.delayed, s.in_flight, s.released, s.dead_lettered),
        (0, 0, 0, 3, 1)
    );
    assert_eq!(*dlq.try_receive().unwrap().body(), 5);
}

#[test]
fn dead_letter_with_max_receives_one_and_change_visibility_zero() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(queue(&clock, 4, ms(100)));
    let q = queue_with_dlq(&clock, 4, ms(100), &dlq, 1);
    q.send(5).unwrap();
    let d = q.try_receive().unwrap();
    q.change_visibility(d.receipt(), Duration::ZERO).unwrap();
    assert!(q.try_receive().is_none());
    assert_eq!(q.stats().dead_lettered, 1);
    assert_refused(&q, d.receipt(), ReceiptError::Stale);
    assert_eq!(*dlq.try_receive().unwrap().body(), 5);
}

#[test]
fn dead_letter_skips_deleted_messages() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(queue(&clock, 4, ms(100)));
    let q = queue_with_dlq(&clock, 4, ms(100), &dlq, 1);
    q.send(5).unwrap();
    let d = q.try_receive().unwrap();
    q.delete(d.receipt()).unwrap();
    clock.advance(ms(500));
    assert_eq!(q.stats().dead_lettered, 0);
    assert_eq!(dlq.stats().sent, 0);
}

#[test]
fn full_dead_letter_queue_keeps_the_message_until_there_is_room() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<&str>> = Arc::new(queue(&clock, 1, ms(100)));
    dlq.send("filler").unwrap();
    let q = queue_with_dlq(&clock, 4, ms(100), &dlq, 1);
    q.send("poison").unwrap();
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap();

    // The move was refused: the message is held, invisible, counted as delayed.
    assert!(q.try_receive().is_none());
    let s = q.stats();
    assert_eq!(
        (
            s.ready,
            s.delayed,
            s.in_flight,
            s.released,
            s.dead_lettered,
            s.dead_letter_retries
        ),
        (0, 1, 0, 1, 0, 1)
    );
    assert_refused(&q, d.receipt(), ReceiptError::Stale);
    assert_eq!(dlq.stats().sent, 1);

    // Still full 10 ms later: retried and refused again.
    clock.advance(ms(10));
    assert!(q.try_receive().is_none());
    let s = q.stats();
    assert_eq!(
        (s.delayed, s.dead_lettered, s.dead_letter_retries),
        (1, 0, 2)
    );

    // Make room; the next retry moves it.
    let filler = dlq.try_receive().unwrap();
    dlq.delete(filler.receipt()).unwrap();
    clock.advance(ms(10));
    assert!(q.try_receive().is_none());
    let s = q.stats();
    assert_eq!(
        (
            s.ready,
            s.delayed,
            s.in_flight,
            s.dead_lettered,
            s.dead_letter_retries
        ),
        (0, 0, 0, 1, 2)
    );
    let dead = dlq.try_receive().unwrap();
    assert_eq!((*dead.body(), dead.receive_count()), ("poison", 1));
    // The source slot is free.
    for _ in 0..4 {
        q.send("again").unwrap();
    }
}

#[test]
fn full_dead_letter_queue_after_expiry_keeps_the_message() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(queue(&clock, 1, ms(100)));
    dlq.send(0).unwrap();
    let q = queue_with_dlq(&clock, 2, ms(100), &dlq, 1);
    q.send(7).unwrap();
    let d = q.try_receive().unwrap();
    clock.advance(ms(101));
    assert!(q.try_receive().is_none());
    let s = q.stats();
    assert_eq!(
        (
            s.delayed,
            s.in_flight,
            s.expired,
            s.dead_lettered,
            s.dead_letter_retries
        ),
        (1, 0, 1, 0, 1)
    );
    assert_refused(&q, d.receipt(), ReceiptError::Expired);
    // Capacity still counts it.
    q.send(8).unwrap();
    assert_eq!(q.send(9), Err(SendError::Full(9)));

    let filler = dlq.try_receive().unwrap();
    dlq.delete(filler.receipt()).unwrap();
    clock.advance(ms(10));
    let s = q.stats();
    assert_eq!((s.ready, s.delayed, s.dead_lettered), (1, 0, 1));
    assert_eq!(*dlq.try_receive().unwrap().body(), 7);
    assert_eq!(*q.try_receive().unwrap().body(), 8);
}

// ---------------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------------

#[test]
fn close_refuses_sends_but_receivers_drain() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 8, ms(100));
    q.send(1).unwrap();
    q.send(2).unwrap();
    q.send_delayed(3, ms(50)).unwrap();
    let leased = q.try_receive().unwrap();
    q.close();
    q.close(); // idempotent
    assert!(q.is_closed());
    assert_eq!(q.send(4).unwrap_err().into_inner(), 4);

    assert_eq!(*q.receive(Duration::from_secs(10)).unwrap().body(), 2);
    clock.advance(ms(50));
    let delayed = q.try_receive().unwrap();
    assert_eq!(*delayed.body(), 3);
    q.delete(delayed.receipt()).unwrap();
    // Leases still settle and expire after close.
    q.release(leased.receipt()).unwrap();
    let again = q.try_receive().unwrap();
    assert_eq!((*again.body(), again.receive_count()), (1, 2));
    clock.advance(ms(101));
    let mut batch = Vec::new();
    assert_eq!(q.receive_batch(&mut batch, 10, Duration::from_secs(10)), 2);
    let s = q.stats();
    assert_eq!(
        (s.sent, s.deleted, s.released, s.expired, s.in_flight),
        (3, 1, 1, 2, 2)
    );
}

#[test]
fn receive_on_a_closed_empty_queue_returns_none_at_once() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 8, ms(100));
    q.send(1).unwrap();
    let _leased = q.try_receive().unwrap(); // held but not visible
    q.close();
    let start = Instant::now();
    assert!(q.receive(Duration::from_secs(10)).is_none());
    let mut batch = Vec::new();
    assert_eq!(q.receive_batch(&mut batch, 4, Duration::from_secs(10)), 0);
    assert!(batch.is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn close_wakes_a_blocked_receiver() {
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(4).build().unwrap());
    let start = Instant::now();
    let receiver = {
        let q = q.clone();
        thread::spawn(move || q.receive(Duration::from_secs(10)))
    };
    // Give the receiver a moment to park (it returns `None` either way).
    thread::sleep(ms(50));
    q.close();
    assert!(receiver.join().unwrap().is_none());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Blocking receives
// ---------------------------------------------------------------------------------------------

#[test]
fn receive_times_out_on_an_empty_queue() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 4, ms(100));
    let start = Instant::now();
    assert!(q.receive(ms(20)).is_none());
    let took = start.elapsed();
    assert!(took >= ms(20), "returned after {took:?}");
    assert!(took < Duration::from_secs(5), "returned after {took:?}");
    assert!(q.receive(Duration::ZERO).is_none());
}

#[test]
fn receive_returns_at_once_when_a_message_is_visible() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 4, ms(100));
    q.send(3).unwrap();
    let start = Instant::now();
    let d = q.receive(Duration::from_secs(10)).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!((*d.body(), d.receive_count()), (3, 1));
    assert_eq!(q.stats().in_flight, 1);
}

#[test]
fn blocking_receive_is_woken_by_a_send() {
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(4).build().unwrap());
    let start = Instant::now();
    let receiver = {
        let q = q.clone();
        thread::spawn(move || q.receive(Duration::from_secs(10)))
    };
    // Give the receiver a moment to park; it gets the message either way.
    thread::sleep(ms(50));
    let id = q.send(11).unwrap();
    let d = receiver.join().unwrap().expect("woken with the message");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!((d.id(), *d.body()), (id, 11));
}

#[test]
fn blocking_receives_each_get_one_message() {
    let start = Instant::now();
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(16).build().unwrap());
    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || q.receive(Duration::from_secs(10)).map(Delivery::into_body))
        })
        .collect();
    thread::sleep(ms(20));
    for n in 0..4 {
        q.send(n).unwrap();
    }
    let mut got: Vec<u32> = receivers
        .into_iter()
        .map(|r| r.join().unwrap().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a waiter missed its wake-up"
    );
}

#[test]
fn a_waiter_sees_what_a_manual_clock_advance_made_visible() {
    let clock = ManualClock::new();
    let q: Arc<Queue<u32>> = Arc::new(queue(&clock, 4, ms(100)));
    q.send_delayed(5, Duration::from_secs(60)).unwrap();
    let receiver = {
        let q = q.clone();
        thread::spawn(move || q.receive(ms(300)))
    };
    clock.advance(Duration::from_secs(61));
    let d = receiver
        .join()
        .unwrap()
        .expect("the waiter saw the delayed message");
    assert_eq!(*d.body(), 5);
}

#[test]
fn receive_batch_appends_up_to_max() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 8, ms(100));
    for n in 0..5 {
        q.send(n).unwrap();
    }
    q.send(99).unwrap();
    let mut out = vec![q.try_receive().unwrap()];
    assert_eq!(*out[0].body(), 0);
    assert_eq!(q.receive_batch(&mut out, 3, Duration::from_secs(10)), 3);
    assert_eq!(
        out.iter().map(|d| *d.body()).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        q.receive_batch(&mut out, 10, Duration::from_secs(10)),
        2,
        "does not wait for more"
    );
    assert_eq!(
        out.iter().map(|d| *d.body()).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 99]
    );
    assert!(out.iter().all(|d| d.receive_count() == 1));
    let s = q.stats();
    assert_eq!((s.in_flight, s.ready, s.received), (6, 0, 6));

    // max 0 takes nothing and does not wait.
    q.send(100).unwrap();
    let start = Instant::now();
    assert_eq!(q.receive_batch(&mut out, 0, Duration::from_secs(10)), 0);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(out.len(), 6);
    assert_eq!(q.stats().ready, 1);
    assert_eq!(q.receive_batch(&mut out, 5, Duration::ZERO), 1);

    // Empty: waits about `wait`, then returns 0.
    let start = Instant::now();
    assert_eq!(q.receive_batch(&mut out, 5, ms(20)), 0);
    assert!(start.elapsed() >= ms(20));
    assert_eq!(out.len(), 7);
    // Every receipt is live and distinct.
    let receipts: HashSet<u64> = out.iter().map(|d| d.receipt().to_u64()).collect();
    assert_eq!(receipts.len(), 7);
    for d in &out {
        q.delete(d.receipt()).unwrap();
    }
}

#[test]
fn receive_batch_is_woken_by_a_send() {
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(4).build().unwrap());
    let start = Instant::now();
    let receiver = {
        let q = q.clone();
        thread::spawn(move || {
            let mut out = Vec::with_capacity(4);
            let n = q.receive_batch(&mut out, 4, Duration::from_secs(10));
            (n, out)
        })
    };
    thread::sleep(ms(50));
    q.send(1).unwrap();
    let (n, out) = receiver.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(n >= 1);
    assert_eq!(out.len(), n);
    assert_eq!(*out[0].body(), 1);
}

// ---------------------------------------------------------------------------------------------
// Stats, deliveries, clock
// ---------------------------------------------------------------------------------------------

#[test]
fn stats_count_every_field_exactly() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 16, ms(100));
    assert_eq!(q.stats(), Stats::default());

    for n in 0..6 {
        q.send(n).unwrap();
    }
    q.send_delayed(6, ms(500)).unwrap();
    q.send_delayed(7, ms(500)).unwrap();
    let a = q.try_receive().unwrap();
    let b = q.try_receive().unwrap();
    let c = q.try_receive().unwrap();
    let _d = q.try_receive().unwrap();
    q.delete(a.receipt()).unwrap();
    q.release(b.receipt()).unwrap();
    q.change_visibility(c.receipt(), Duration::ZERO).unwrap();
    clock.advance(ms(100)); // `_d` expires
    let s = q.stats();
    assert_eq!(s.ready, 5); // 4, 5, 1, 2, 3
    assert_eq!(s.delayed, 2);
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.sent, 8);
    assert_eq!(s.received, 4);
    assert_eq!(s.deleted, 1);
    assert_eq!(s.released, 2);
    assert_eq!(s.expired, 1);
    assert_eq!(s.dead_lettered, 0);
    assert_eq!(s.dead_letter_retries, 0);
    assert_eq!(s.oldest_ready_age, Some(ms(100)));
    // Stats are a snapshot: reading them changes nothing.
    assert_eq!(q.stats(), s);
    assert_eq!(s.clone(), s);
    assert!(!format!("{s:?}").is_empty());
}

#[test]
fn oldest_ready_age_follows_the_oldest_visible_message() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 8, ms(1000));
    assert_eq!(q.stats().oldest_ready_age, None);
    q.send(1).unwrap();
    assert_eq!(q.stats().oldest_ready_age, Some(Duration::ZERO));
    clock.advance(ms(7));
    q.send(2).unwrap();
    clock.advance(ms(3));
    assert_eq!(q.stats().oldest_ready_age, Some(ms(10)));
    let first = q.try_receive().unwrap();
    assert_eq!(q.stats().oldest_ready_age, Some(ms(3)));
    let second = q.try_receive().unwrap();
    assert_eq!(q.stats().oldest_ready_age, None);
    clock.advance(ms(5));
    q.release(first.receipt()).unwrap();
    clock.advance(ms(4));
    assert_eq!(q.stats().oldest_ready_age, Some(ms(4)));
    q.delete(second.receipt()).unwrap();
}

#[test]
fn delivery_accessors() {
    let clock = ManualClock::new();
    let q: Queue<String> = queue(&clock, 4, ms(100));
    let id = q.send("body".to_string()).unwrap();
    let d = q.try_receive().unwrap();
    assert_eq!(d.id(), id);
    assert_eq!(d.receive_count(), 1);
    assert_eq!(d.body(), "body");
    let receipt = d.receipt();
    assert_eq!(d.receipt(), receipt);
    let body: String = d.into_body();
    assert_eq!(body, "body");
    // The receipt outlives the delivery.
    q.release(receipt).unwrap();
    let d = q.try_receive().unwrap();
    assert_eq!((d.id(), d.receive_count()), (id, 2));
    q.delete(d.receipt()).unwrap();
}

#[test]
fn manual_clock_clones_share_one_time() {
    let clock = ManualClock::new();
    assert_eq!(clock.now(), Duration::ZERO);
    let other = clock.clone();
    clock.advance(ms(5));
    assert_eq!(other.now(), ms(5));
    other.advance(Duration::from_secs(2));
    assert_eq!(clock.now(), ms(2_005));
    let third = other.clone();
    thread::spawn(move || third.advance(ms(1))).join().unwrap();
    assert_eq!(clock.now(), ms(2_006));
    assert_eq!(ManualClock::default().now(), Duration::ZERO);
}

#[test]
fn queue_follows_a_clock_that_was_already_running() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(1_000));
    let q: Queue<u8> = queue(&clock, 4, ms(100));
    q.send_delayed(1, ms(30)).unwrap();
    let driver = clock.clone();
    driver.advance(ms(29));
    assert!(q.try_receive().is_none());
    driver.advance(ms(2));
    assert_eq!(*q.try_receive().unwrap().body(), 1);
}

#[test]
fn two_queues_on_one_clock() {
    let clock = ManualClock::new();
    let a: Queue<u8> = queue(&clock, 4, ms(100));
    let b: Queue<u8> = queue(&clock, 4, ms(100));
    a.send_delayed(1, ms(10)).unwrap();
    b.send_delayed(2, ms(10)).unwrap();
    clock.advance(ms(11));
    assert_eq!(*a.try_receive().unwrap().body(), 1);
    assert_eq!(*b.try_receive().unwrap().body(), 2);
}

#[test]
fn deadlines_stay_exact_after_long_idle_periods() {
    // An idle wheel is not run; the first deadline after a long pause must still be exact.
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 8, ms(100));
    let day = Duration::from_secs(86_400);
    for idle in [day, day * 7, day * 30, day * 365, day * 365 * 50] {
        clock.advance(idle);
        let start = clock.now();
        q.send_delayed(1, MAX_TIMEOUT).unwrap();
        q.send_delayed(2, ms(50)).unwrap();
        q.send(3).unwrap();
        let c = q.try_receive().unwrap();
        assert_eq!(*c.body(), 3);
        set_time(&clock, start + ms(50) - TICK);
        assert!(
            q.try_receive().is_none(),
            "delay fired early after {idle:?} idle"
        );
        set_time(&clock, start + ms(50) + TICK);
        let b = q.try_receive().expect("delay fired late");
        assert_eq!(*b.body(), 2);
        q.delete(b.receipt()).unwrap();
        set_time(&clock, start + ms(100) - TICK);
        assert!(
            q.try_receive().is_none(),
            "lease expired early after {idle:?} idle"
        );
        set_time(&clock, start + ms(100) + TICK);
        let c2 = q.try_receive().expect("lease expired late");
        assert_eq!((*c2.body(), c2.receive_count()), (3, 2));
        q.delete(c2.receipt()).unwrap();
        set_time(&clock, start + MAX_TIMEOUT - TICK);
        assert!(
            q.try_receive().is_none(),
            "long delay fired early after {idle:?} idle"
        );
        set_time(&clock, start + MAX_TIMEOUT + TICK);
        let a = q.try_receive().expect("long delay fired late");
        assert_eq!(*a.body(), 1);
        q.delete(a.receipt()).unwrap();
        assert_eq!(q.stats().delayed + q.stats().ready + q.stats().in_flight, 0);
    }
}

#[test]
fn a_lease_left_over_a_long_idle_period_comes_back_once() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 8, ms(100));
    q.send(1).unwrap();
    let first = q.try_receive().unwrap();
    clock.advance(Duration::from_secs(86_400 * 40));
    assert_eq!(q.delete(first.receipt()), Err(ReceiptError::Expired));
    let again = q.try_receive().unwrap();
    assert_eq!(again.receive_count(), 2);
    assert!(q.try_receive().is_none());
    assert_eq!(q.stats().expired, 1);
}

#[test]
fn exactly_one_of_delete_release_and_expiry_takes_effect_when_they_race() {
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 4, ms(10));
    let mut outcomes = [0u32; 3]; // deleted, released, expired
    for round in 0..500u32 {
        q.send(round).unwrap();
        let d = q.try_receive().unwrap();
        assert_eq!((*d.body(), d.receive_count()), (round, 1));
        let receipt = d.receipt();
        let before = q.stats();
        let (deleted, released) = thread::scope(|s| {
            let deleter = s.spawn(|| q.delete(receipt));
            let releaser = s.spawn(|| q.release(receipt));
            if round % 2 == 0 {
                clock.advance(ms(11));
                q.stats();
            }
            (deleter.join().unwrap(), releaser.join().unwrap())
        });
        let after = q.stats();
        let effects = (
            after.deleted - before.deleted,
            after.released - before.released,
            after.expired - before.expired,
        );
        assert_eq!(
            effects.0 + effects.1 + effects.2,
            1,
            "round {round}: {effects:?}"
        );
        assert_eq!(u64::from(deleted.is_ok()), effects.0, "round {round}");
        assert_eq!(u64::from(released.is_ok()), effects.1, "round {round}");
        for result in [deleted, released] {
            assert!(matches!(
                result,
                Ok(()) | Err(ReceiptError::Stale) | Err(ReceiptError::Expired)
            ));
        }
        if effects.0 == 1 {
            outcomes[0] += 1;
            assert!(
                q.try_receive().is_none(),
                "round {round}: delivered after delete"
            );
        } else {
            outcomes[if effects.1 == 1 { 1 } else { 2 }] += 1;
            let again = q.try_receive().expect("released or expired: visible again");
            assert_eq!((*again.body(), again.receive_count()), (round, 2));
            q.delete(again.receipt()).unwrap();
            assert!(q.try_receive().is_none());
        }
    }
    // Which settlement wins depends on the scheduler, so no mix of outcomes is required here
    // (a 2-core machine under load can let one thread win every round); the loom models
    // `delete_races_expiry` and `release_races_expiry` explore every interleaving.
    assert_eq!(outcomes.iter().sum::<u32>(), 500);
}

#[test]
fn concurrent_senders_and_receivers_deliver_every_message_exactly_once() {
    const PRODUCERS: u32 = 3;
    const PER_PRODUCER: u32 = 5_000;
    let q: Queue<u32> = Queue::builder().capacity(64).build().unwrap();
    let seen: Vec<std::sync::atomic::AtomicU32> = (0..PRODUCERS * PER_PRODUCER)
        .map(|_| std::sync::atomic::AtomicU32::new(0))
        .collect();
    let done = std::sync::atomic::AtomicU32::new(0);
    let start = Instant::now();
    thread::scope(|s| {
        for p in 0..PRODUCERS {
            let q = &q;
            s.spawn(move || {
                let mut last = None;
                for n in p * PER_PRODUCER..(p + 1) * PER_PRODUCER {
                    let mut body = n;
                    let id = loop {
                        match q.send(body) {
                            Ok(id) => break id,
                            Err(SendError::Full(back)) => {
                                body = back;
                                thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    };
                    assert!(Some(id) > last, "ids grow in send order within a thread");
                    last = Some(id);
                }
            });
        }
        for _ in 0..3 {
            let (q, seen, done) = (&q, &seen, &done);
            s.spawn(move || {
                while done.load(std::sync::atomic::Ordering::SeqCst) < PRODUCERS * PER_PRODUCER {
                    if let Some(d) = q.receive(ms(20)) {
                        // Every third delivery is given back once, to be delivered again.
                        if d.receive_count() == 1 && d.body() % 3 == 0 {
                            q.release(d.receipt()).unwrap();
                            continue;
                        }
                        seen[*d.body() as usize].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        q.delete(d.receipt()).unwrap();
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert!(seen
        .iter()
        .all(|c| c.load(std::sync::atomic::Ordering::SeqCst) == 1));
    let s = q.stats();
    let total = u64::from(PRODUCERS * PER_PRODUCER);
    assert_eq!(
        (s.sent, s.deleted, s.ready, s.in_flight, s.expired),
        (total, total, 0, 0, 0)
    );
    assert_eq!(
        s.released,
        (0..PRODUCERS * PER_PRODUCER).filter(|n| n % 3 == 0).count() as u64
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn oldest_ready_age_counts_from_the_deadline_not_from_the_first_look() {
    // A message is visible from its deadline (within a tick): a receive at any time after it
    // would have got it. The age must not restart at whichever operation first noticed it.
    let clock = ManualClock::new();
    let q: Queue<u32> = queue(&clock, 4, ms(100));
    q.send_delayed(1, ms(50)).unwrap();
    set_time(&clock, ms(150));
    let age = q.stats().oldest_ready_age.expect("visible");
    assert!(
        age + TICK >= ms(100) && age <= ms(100),
        "delayed message visible since 50 ms, age at 150 ms: {age:?}"
    );
    let d = q.try_receive().unwrap();
    // Lease deadline 250 ms; first looked at 280 ms.
    set_time(&clock, ms(280));
    let age = q.stats().oldest_ready_age.expect("visible");
    assert!(
        age + TICK >= ms(30) && age <= ms(30),
        "lease expired at 250 ms, age at 280 ms: {age:?}"
    );
    assert_eq!(q.delete(d.receipt()), Err(ReceiptError::Expired));
}

/// `Stats::deleted` is derived: what was sent less what is held and the other ways a message
/// leaves (dead-letter moves, redrives), which each send into the other queue. While another thread dead-letters and redrives one
/// message round and round, and nothing deletes, both queues must report no deletes at all.
#[test]
fn deleted_counts_no_phantom_deletes_while_messages_are_dead_lettered_and_redriven() {
    const CYCLES: u32 = 20_000;
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(4).build().unwrap());
    let q: Queue<u32> = Queue::builder()
        .capacity(4)
        .dead_letter(dlq.clone(), 1)
        .build()
        .unwrap();
    q.send(7).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let reads = thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..CYCLES {
                let d = q.try_receive().expect("the message is back in the source");
                q.release(d.receipt()).unwrap(); // its last receive: to the dead-letter queue
                assert_eq!(dlq.redrive(&q, None, 1).moved, 1);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut reads = 0u64;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let (source, dead) = (q.stats(), dlq.stats());
            assert_eq!(
                (source.deleted, dead.deleted),
                (0, 0),
                "{source:?}\n{dead:?}"
            );
            reads += 1;
        }
        reads
    });
    let (source, dead) = (q.stats(), dlq.stats());
    assert_eq!(
        (
            source.dead_lettered,
            dead.redriven,
            source.deleted,
            dead.deleted
        ),
        (u64::from(CYCLES), u64::from(CYCLES), 0, 0)
    );
    assert!(reads > 0);
}
