//! FIFO message groups (`Builder::message_groups`, `SendOptions::group`): order per group, one
//! message of a group out at a time, what lets the next one out, lanes and their sharing,
//! fairness, ungrouped messages, refused options, memory, no allocation, the worker pool and
//! the in-process backend over a grouped queue, and a bounded stress of 4 threads.
//!
//! Queue time is a `ManualClock` everywhere; the only wall-clock waits are bounded waits for
//! other threads (the pool's workers, the stress threads) to get somewhere.

mod common;
#[path = "support/counted_body.rs"]
mod counted_body;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/rng.rs"]
mod rng;

use common::wait_until;
use counted_body::{Body, Counts};
use counting_alloc::no_alloc;
use rng::Rng;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use visq::{
    Backend, BackendError, BuildError, Consumer, DeathCause, Feature, GroupKey, InvalidSend,
    ManualClock, Nack, Outgoing, Queue, SendError, SendOptions,
};

const VISIBILITY: Duration = Duration::from_secs(30);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A grouped queue of `lanes` lanes on `clock`.
fn grouped<T>(lanes: usize, clock: &ManualClock) -> Queue<T> {
    Queue::builder()
        .capacity(4096)
        .message_groups(lanes)
        .visibility_timeout(VISIBILITY)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn in_group(key: u64) -> SendOptions {
    SendOptions::new().group(key)
}

/// A key on another lane than `key`'s, and one on the same lane (other than `key`).
fn keys_around(q: &Queue<u32>, key: u64) -> (u64, u64) {
    let lane = q.group_lane(key).unwrap();
    let other = (key + 1..)
        .find(|k| q.group_lane(*k) != Some(lane))
        .unwrap();
    let sharing = (key + 1..)
        .find(|k| q.group_lane(*k) == Some(lane))
        .unwrap();
    (other, sharing)
}

/// Receives one message (which must be there) and deletes it; returns its body.
fn receive_and_delete(q: &Queue<u32>) -> u32 {
    let d = q.try_receive().expect("a visible message");
    q.delete(d.receipt()).unwrap();
    *d.body()
}

#[test]
fn a_group_is_delivered_in_send_order_one_at_a_time() {
    let q = grouped(16, &ManualClock::new());
    for n in 0..100 {
        q.send_with(n, &in_group(7)).unwrap();
    }
    assert_eq!(q.stats().ready, 100, "waiting messages count as ready");
    for n in 0..100 {
        let d = q.try_receive().expect("the group's next");
        assert_eq!(*d.body(), n, "send order");
        assert!(
            q.try_receive().is_none(),
            "the next is invisible while {n} is leased"
        );
        q.delete(d.receipt()).unwrap();
    }
    assert!(q.try_receive().is_none());
    let stats = q.stats();
    assert_eq!((stats.sent, stats.deleted, stats.ready), (100, 100, 0));
}

#[test]
fn the_next_is_let_out_by_a_move_to_the_dead_letter_queue() {
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().build().unwrap());
    let q: Queue<u32> = Queue::builder()
        .message_groups(4)
        .dead_letter(dlq.clone(), 2)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    for n in 0..3 {
        q.send_with(n, &in_group(1)).unwrap();
    }
    // Released on its last allowed receive: moved, and the next is out.
    q.release(q.try_receive().unwrap().receipt()).unwrap();
    let second = q.try_receive().unwrap();
    assert_eq!((*second.body(), second.receive_count()), (0, 2));
    assert!(q.try_receive().is_none());
    q.release(second.receipt()).unwrap();
    assert_eq!(*dlq.try_receive().unwrap().body(), 0);
    // Rejected: moved at once, and the next is out.
    let d = q.try_receive().unwrap();
    assert_eq!(*d.body(), 1);
    assert!(q.try_receive().is_none());
    q.reject(d.receipt(), "cannot decode").unwrap();
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert!(matches!(letters[0].cause, DeathCause::Rejected { .. }));
    assert_eq!(*q.try_receive().unwrap().body(), 2);
}

#[test]
fn the_next_is_let_out_by_a_take_and_a_redrive() {
    let q = grouped(4, &ManualClock::new());
    for n in 0..3 {
        q.send_with(n, &in_group(1)).unwrap();
    }
    assert_eq!(q.try_take().unwrap().into_body(), 0);
    assert_eq!(q.try_take().unwrap().into_body(), 1);
    // Redriven away (as out of a dead-letter queue): the lane goes idle, then takes more.
    let target: Queue<u32> = Queue::builder().build().unwrap();
    assert_eq!(q.redrive(&target, None, 10).moved, 1);
    assert_eq!(*target.try_receive().unwrap().body(), 2);
    q.send_with(3, &in_group(1)).unwrap();
    assert_eq!(receive_and_delete(&q), 3);
}

#[test]
fn release_expiry_and_hand_back_redeliver_the_head_first() {
    let clock = ManualClock::new();
    let q = grouped(4, &clock);
    for n in 0..2 {
        q.send_with(n, &in_group(9)).unwrap();
    }
    let d = q.try_receive().unwrap();
    q.release(d.receipt()).unwrap();
    let d = q.try_receive().unwrap();
    assert_eq!(
        (*d.body(), d.receive_count()),
        (0, 2),
        "released: again first"
    );
    assert!(q.try_receive().is_none());
    clock.advance(VISIBILITY);
    let d = q.try_receive().expect("the lease expired");
    assert_eq!(
        (*d.body(), d.receive_count()),
        (0, 3),
        "expired: again first"
    );
    assert!(q.try_receive().is_none());
    q.hand_back(d.receipt()).unwrap();
    let d = q.try_receive().unwrap();
    // The hand-back undoes its receive: the count is the expired lease's again.
    assert_eq!(
        (*d.body(), d.receive_count()),
        (0, 3),
        "handed back: again first"
    );
    q.delete(d.receipt()).unwrap();
    assert_eq!(receive_and_delete(&q), 1);
}

#[test]
fn a_nack_with_a_delay_holds_the_group() {
    let clock = ManualClock::new();
    let q = grouped(4, &clock);
    for n in 0..2 {
        q.send_with(n, &in_group(3)).unwrap();
    }
    let d = q.try_receive().unwrap();
    q.nack(d.receipt(), Nack::after(secs(5))).unwrap();
    assert!(q.try_receive().is_none(), "the group waits out the delay");
    clock.advance(secs(4));
    assert!(q.try_receive().is_none());
    clock.advance(secs(1));
    let d = q.try_receive().unwrap();
    assert_eq!((*d.body(), d.receive_count()), (0, 2));
    q.delete(d.receipt()).unwrap();
    assert_eq!(receive_and_delete(&q), 1);
}

#[test]
fn groups_on_different_lanes_are_delivered_in_parallel() {
    let q = grouped(16, &ManualClock::new());
    let (other, _) = keys_around(&q, 1);
    for n in 0..2 {
        q.send_with(n, &in_group(1)).unwrap();
        q.send_with(10 + n, &in_group(other)).unwrap();
    }
    let first = q.try_receive().unwrap();
    let second = q.try_receive().unwrap();
    assert_eq!(
        (*first.body(), *second.body()),
        (0, 10),
        "both heads at once"
    );
    assert!(q.try_receive().is_none(), "and one per group");
    q.delete(second.receipt()).unwrap();
    assert_eq!(receive_and_delete(&q), 11);
    q.delete(first.receipt()).unwrap();
    assert_eq!(receive_and_delete(&q), 1);
}

#[test]
fn groups_sharing_a_lane_are_one_ordered_sequence() {
    let q = grouped(16, &ManualClock::new());
    let (_, sharing) = keys_around(&q, 1);
    q.send_with(0, &in_group(1)).unwrap();
    q.send_with(100, &in_group(sharing)).unwrap();
    q.send_with(1, &in_group(1)).unwrap();
    let d = q.try_receive().unwrap();
    assert_eq!(*d.body(), 0);
    assert!(
        q.try_receive().is_none(),
        "the other group waits behind the lane's head"
    );
    q.delete(d.receipt()).unwrap();
    assert_eq!(
        receive_and_delete(&q),
        100,
        "lane order: send order across the groups"
    );
    assert_eq!(receive_and_delete(&q), 1);
}

#[test]
fn lanes_are_rounded_up_and_a_fixed_function_of_the_key() {
    let q: Queue<u32> = Queue::builder().message_groups(10).build().unwrap();
    assert_eq!(q.group_lanes(), Some(16));
    let again: Queue<u32> = Queue::builder().message_groups(16).build().unwrap();
    let one: Queue<u32> = Queue::builder().message_groups(1).build().unwrap();
    let mut used = HashSet::new();
    for key in 0..1000u64 {
        let lane = q.group_lane(key).unwrap();
        assert!(lane < 16);
        assert_eq!(again.group_lane(key), Some(lane));
        assert_eq!(one.group_lane(key), Some(0));
        used.insert(lane);
    }
    assert_eq!(used.len(), 16, "keys spread over every lane");
    assert_eq!(q.group_lane("a"), q.group_lane(GroupKey::from("a")));
    let plain: Queue<u32> = Queue::builder().build().unwrap();
    assert_eq!((plain.group_lanes(), plain.group_lane(1)), (None, None));
}

/// Fairness: once a lane's head is visible, at most (the other messages visible then)
/// deliveries come before it; a hot group with 1,000 queued messages has one of them visible.
#[test]
fn a_hot_group_does_not_delay_another_groups_head_beyond_the_bound() {
    let q = grouped(16, &ManualClock::new());
    let (other, _) = keys_around(&q, 1);
    for n in 0..1000 {
        q.send_with(n, &in_group(1)).unwrap();
    }
    for n in 0..3 {
        q.send(2000 + n).unwrap();
    }
    // Three deliveries go through; each hot one lets the next out at the back of the ring.
    let mut hot_left = 1000;
    for _ in 0..3 {
        let d = q.try_receive().unwrap();
        hot_left -= u32::from(*d.body() < 1000);
        q.delete(d.receipt()).unwrap();
    }
    q.send_with(5000, &in_group(other)).unwrap();
    // Visible besides the new head: all ready but the new head and the hot group's waiting.
    let visible_before = q.stats().ready - 1 - (hot_left as usize - 1);
    assert_eq!(
        visible_before, 2,
        "the hot group's head and one ungrouped message"
    );
    let mut deliveries_before = 0;
    let mut hot_next = None;
    loop {
        let d = q.try_receive().unwrap();
        let body = *d.body();
        q.delete(d.receipt()).unwrap();
        if body == 5000 {
            break;
        }
        if body < 1000 {
            if let Some(expected) = hot_next {
                assert_eq!(body, expected);
            }
            hot_next = Some(body + 1);
        }
        deliveries_before += 1;
    }
    assert!(
        deliveries_before <= visible_before,
        "{deliveries_before} deliveries before the new head, {visible_before} were visible"
    );
}

#[test]
fn ungrouped_messages_on_a_grouped_queue_are_ordered_with_nothing() {
    let q = grouped(4, &ManualClock::new());
    q.send_with(0, &in_group(1)).unwrap();
    q.send_with(1, &in_group(1)).unwrap();
    for n in 10..13 {
        q.send(n).unwrap();
    }
    let got: Vec<_> = (0..4).map(|_| q.try_receive().unwrap()).collect();
    let bodies: Vec<_> = got.iter().map(|d| *d.body()).collect();
    assert_eq!(
        bodies,
        [0, 10, 11, 12],
        "all ungrouped at once, beside the group's head"
    );
    assert!(q.try_receive().is_none());
    for d in got {
        q.delete(d.receipt()).unwrap();
    }
    assert_eq!(receive_and_delete(&q), 1);
}

#[test]
fn options_a_queue_cannot_honour_are_refused_with_the_body() {
    let plain: Queue<u32> = Queue::builder().build().unwrap();
    assert_eq!(
        plain.send_with(1, &in_group(1)),
        Err(SendError::Invalid(1, InvalidSend::NoMessageGroups))
    );
    let q = grouped(4, &ManualClock::new());
    assert_eq!(
        q.send_with(2, &in_group(1).delay(secs(1))),
        Err(SendError::Invalid(2, InvalidSend::DelayedGroupMessage))
    );
    assert_eq!(q.stats().refused_sends, 1);
    let zero = Queue::<u32>::builder().message_groups(0).build();
    assert_eq!(zero.unwrap_err(), BuildError::InvalidGroupLanes(0));
    let too_many = Queue::<u32>::builder()
        .message_groups(visq::MAX_CAPACITY + 1)
        .build();
    assert!(matches!(too_many, Err(BuildError::InvalidGroupLanes(_))));
}

#[test]
fn memory_shows_the_lanes() {
    let q: Queue<u64> = Queue::builder()
        .capacity(1000)
        .message_groups(60)
        .build()
        .unwrap();
    let memory = q.memory();
    assert_eq!(memory.groups, 64 * 12 + (1000 + 64) * 4);
    assert!(memory.total() >= memory.slots + memory.groups);
    let plain: Queue<u64> = Queue::builder().capacity(1000).build().unwrap();
    assert_eq!(plain.memory().groups, 0);
}

#[test]
fn grouped_operations_allocate_nothing() {
    let clock = ManualClock::new();
    let q: Queue<u64> = Queue::builder()
        .capacity(8)
        .message_groups(4)
        .clock(clock.clone())
        .build()
        .unwrap();
    let options = in_group(5);
    no_alloc("grouped send (idle lane)", || {
        q.send_with(1, &options).unwrap()
    });
    no_alloc("grouped send (busy lane)", || {
        q.send_with(2, &options).unwrap()
    });
    no_alloc("grouped send (busy lane)", || {
        q.send_with(3, &options).unwrap()
    });
    let d = no_alloc("try_receive", || q.try_receive().unwrap());
    no_alloc("release of a head", || q.release(d.receipt()).unwrap());
    let d = no_alloc("try_receive", || q.try_receive().unwrap());
    no_alloc("hand_back of a head", || q.hand_back(d.receipt()).unwrap());
    let d = no_alloc("try_receive", || q.try_receive().unwrap());
    assert_eq!(*d.body(), 1);
    no_alloc("delete of a head (lets the next out)", || {
        q.delete(d.receipt()).unwrap()
    });
    let taken = no_alloc("try_take of a head", || q.try_take().unwrap());
    assert_eq!(taken.into_body(), 2);
    no_alloc("ungrouped send", || q.send(4).unwrap());
    let d = q.try_receive().unwrap();
    assert_eq!(*d.body(), 3);
    no_alloc("delete (lane may go idle)", || {
        q.delete(d.receipt()).unwrap()
    });
}

/// A pool over a grouped queue: each group in order and one at a time, groups in parallel
/// (each worker holding one message: two groups' first messages wait for each other).
#[test]
fn a_pool_processes_each_group_in_order_and_groups_in_parallel() {
    pool_over_groups(1, true);
}

/// With prefetch, a worker may hold the heads of several groups and run them one after the
/// other: still each group in order.
#[test]
fn a_prefetching_pool_processes_each_group_in_order() {
    pool_over_groups(4, false);
}

fn pool_over_groups(prefetch: usize, rendezvous: bool) {
    const GROUPS: u64 = 8;
    const PER_GROUP: u32 = 50;
    let clock = ManualClock::new();
    let q: Arc<Queue<(u64, u32)>> = Arc::new(
        Queue::builder()
            .capacity(1024)
            .message_groups(64)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    // Two groups on different lanes whose first messages wait for each other: they can only
    // both finish if two workers run them at once.
    let first = 0u64;
    let second = (1..GROUPS)
        .find(|k| q.group_lane(*k) != q.group_lane(first))
        .unwrap();
    let met = Arc::new(AtomicUsize::new(0));
    let busy: Arc<Vec<AtomicBool>> =
        Arc::new((0..GROUPS).map(|_| AtomicBool::new(false)).collect());
    let order: Arc<Mutex<Vec<Vec<u32>>>> = Arc::new(Mutex::new(vec![Vec::new(); GROUPS as usize]));
    let consumer = {
        let (met, busy, order) = (met.clone(), busy.clone(), order.clone());
        Consumer::builder(q.clone())
            .workers(4)
            .prefetch(prefetch)
            .poll_wait(Duration::from_millis(5))
            .clock(clock.clone())
            .start(move |&(group, n): &(u64, u32)| {
                assert!(
                    !busy[group as usize].swap(true, Ordering::SeqCst),
                    "two messages of group {group} at once"
                );
                if rendezvous && n == 0 && (group == first || group == second) {
                    met.fetch_add(1, Ordering::SeqCst);
                    wait_until("the other group's first message runs at once", || {
                        met.load(Ordering::SeqCst) == 2
                    });
                }
                order.lock().unwrap()[group as usize].push(n);
                busy[group as usize].store(false, Ordering::SeqCst);
                Ok::<(), &str>(())
            })
            .unwrap()
    };
    for n in 0..PER_GROUP {
        for group in 0..GROUPS {
            q.send_with((group, n), &in_group(group)).unwrap();
        }
    }
    let total = u64::from(PER_GROUP) * GROUPS;
    wait_until("all are processed", || consumer.stats().processed == total);
    assert!(consumer.stop(secs(10)));
    let expected: Vec<u32> = (0..PER_GROUP).collect();
    for (group, seen) in order.lock().unwrap().iter().enumerate() {
        assert_eq!(seen, &expected, "group {group} in send order");
    }
    let stats = q.stats();
    assert_eq!((stats.deleted, stats.ready, stats.in_flight), (total, 0, 0));
}

#[test]
fn the_in_process_backend_sends_groups_on_a_grouped_queue() {
    let clock = ManualClock::new();
    let q: Queue<u32> = grouped(16, &clock);
    let b: &dyn Backend<Body = u32> = &q;
    assert!(b.capabilities().groups);
    for n in 0..3 {
        b.send(Outgoing::new(n).group("customer-1")).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(
        b.receive(&mut out, 10, Duration::ZERO, None).unwrap(),
        1,
        "one at a time"
    );
    assert_eq!(out[0].body, 0);
    b.delete(&out[0].handle).unwrap();
    out.clear();
    b.receive(&mut out, 10, Duration::ZERO, None).unwrap();
    assert_eq!(out.iter().map(|m| m.body).collect::<Vec<_>>(), [1]);

    let plain: Queue<u32> = Queue::builder().build().unwrap();
    let b: &dyn Backend<Body = u32> = &plain;
    assert!(!b.capabilities().groups);
    let refused = b.send(Outgoing::new(9).group("customer-1")).unwrap_err();
    assert_eq!(refused.error, BackendError::Unsupported(Feature::Groups));
    assert_eq!(refused.body, 9);
}

/// 2 senders, 2 receivers, 64 groups over 16 lanes, 20,000 messages, each receive released
/// (about one in four) or deleted at random: per group the deletes come in send order and at
/// no time are two messages of a group leased; every message is accounted for and every body
/// dropped once. Bounded: fails after 60 s of wall-clock time.
#[test]
fn stress_order_and_one_lease_per_group_under_concurrency() {
    const GROUPS: usize = 64;
    const MESSAGES: u32 = 20_000;
    let counts = Counts::new();
    let clock = ManualClock::new();
    let q: Arc<Queue<Body>> = Arc::new(
        Queue::builder()
            .capacity(1024)
            .message_groups(16)
            .visibility_timeout(VISIBILITY)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let give_up = Instant::now() + secs(60);
    let leased: Arc<Vec<AtomicBool>> =
        Arc::new((0..GROUPS).map(|_| AtomicBool::new(false)).collect());
    let next_deleted: Arc<Vec<AtomicU64>> =
        Arc::new((0..GROUPS).map(|_| AtomicU64::new(0)).collect());
    let deleted = Arc::new(AtomicU64::new(0));
    let released = Arc::new(AtomicU64::new(0));
    // Sender `s` sends the groups `g` with `g % 2 == s`, so each group's send order is one
    // thread's program order. Body: `seq * GROUPS + group`.
    let senders: Vec<_> = (0..2usize)
        .map(|s| {
            let (q, counts) = (q.clone(), counts.clone());
            thread::spawn(move || {
                let mut rng = Rng::new(s as u64 + 1);
                let mut seqs = [0u32; GROUPS];
                for _ in 0..MESSAGES / 2 {
                    let group = 2 * rng.below(GROUPS as u64 / 2) as usize + s;
                    let value = seqs[group] * GROUPS as u32 + group as u32;
                    seqs[group] += 1;
                    let mut body = Body::new(&counts, value);
                    let options = SendOptions::new().group(group as u64);
                    loop {
                        match q.send_with(body, &options) {
                            Ok(_) => break,
                            Err(SendError::Full(back)) => body = back,
                            Err(other) => panic!("send refused: {other:?}"),
                        }
                        assert!(Instant::now() < give_up, "senders stuck on a full queue");
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let receivers: Vec<_> = (0..2u64)
        .map(|r| {
            let (q, leased, next_deleted, deleted, released) = (
                q.clone(),
                leased.clone(),
                next_deleted.clone(),
                deleted.clone(),
                released.clone(),
            );
            thread::spawn(move || {
                let mut rng = Rng::new(100 + r);
                while deleted.load(Ordering::SeqCst) < u64::from(MESSAGES) {
                    assert!(Instant::now() < give_up, "receivers stuck");
                    let Some(d) = q.try_receive() else {
                        thread::yield_now();
                        continue;
                    };
                    let group = (d.body().value % GROUPS as u32) as usize;
                    let seq = u64::from(d.body().value / GROUPS as u32);
                    assert!(
                        !leased[group].swap(true, Ordering::SeqCst),
                        "two messages of group {group} leased at once"
                    );
                    let expected = next_deleted[group].load(Ordering::SeqCst);
                    assert_eq!(seq, expected, "group {group}: its head, in send order");
                    if rng.below(4) == 0 {
                        leased[group].store(false, Ordering::SeqCst);
                        q.release(d.receipt()).unwrap();
                        released.fetch_add(1, Ordering::SeqCst);
                    } else {
                        next_deleted[group].store(expected + 1, Ordering::SeqCst);
                        leased[group].store(false, Ordering::SeqCst);
                        q.delete(d.receipt()).unwrap();
                        deleted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for thread in senders.into_iter().chain(receivers) {
        thread.join().unwrap();
    }
    let stats = q.stats();
    assert_eq!(stats.sent, u64::from(MESSAGES));
    assert_eq!(stats.deleted, u64::from(MESSAGES));
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
    assert_eq!(
        stats.received,
        u64::from(MESSAGES) + released.load(Ordering::SeqCst)
    );
    let per_group: u64 = next_deleted.iter().map(|n| n.load(Ordering::SeqCst)).sum();
    assert_eq!(per_group, u64::from(MESSAGES));
    drop(q);
    assert_eq!(
        counts.live(),
        0,
        "every body dropped once: {:?}",
        counts.all()
    );
}

/// A head whose clone panics goes back to the ring and stays the head; dropping a queue with
/// messages waiting in lanes drops each body once.
#[test]
fn a_panicking_clone_keeps_the_head_and_a_drop_frees_the_waiting() {
    let counts = Counts::new();
    let q: Queue<Body> = Queue::builder()
        .message_groups(4)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    for n in 0..3 {
        q.send_with(Body::new(&counts, n), &in_group(1)).unwrap();
    }
    counts.panic_on_clone.store(true, Ordering::SeqCst);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.try_receive()));
    assert!(panicked.is_err(), "the clone panicked");
    let d = q.try_receive().expect("given back");
    assert_eq!(
        (d.body().value, d.receive_count()),
        (0, 1),
        "still the head"
    );
    assert!(q.try_receive().is_none());
    drop(d);
    drop(q);
    assert_eq!(
        counts.live(),
        0,
        "every body dropped once: {:?}",
        counts.all()
    );
}
