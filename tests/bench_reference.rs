//! The benchmarks' extended lock-based reference (`benches/common/lockref_features.rs`) keeps
//! the contract's priority and group semantics, so the feature benchmarks compare like with
//! like: priorities highest first and FIFO within a level; a group's messages in send order,
//! one ready or leased at a time, a released head delivered again first, groups round-robin.

#[path = "../benches/common/mod.rs"]
mod common;

use common::lockref::{LockRef, Tag};
use common::lockref_features::{Groups, Priorities};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn tag(priority: u8, group: Option<u64>) -> Tag {
    Tag { priority, group }
}

#[test]
fn priorities_highest_first_fifo_within_a_level() {
    let q: LockRef<u32, Priorities> = LockRef::with_order(16, LEASE, None);
    for (body, priority) in [(0, 0), (1, 3), (2, 1), (3, 3), (4, 0)] {
        q.send_tagged(body, tag(priority, None)).unwrap();
    }
    let first = q.try_receive().unwrap();
    assert_eq!(first.body, 1);
    // Released, it goes to the back of its own level: after 3, before the lower levels.
    q.release(first.receipt).unwrap();
    let order: Vec<u32> = std::iter::from_fn(|| q.try_take()).collect();
    assert_eq!(order, [3, 1, 2, 0, 4]);
}

#[test]
fn groups_one_at_a_time_in_send_order_round_robin() {
    let q: LockRef<u32, Groups> = LockRef::with_order(16, LEASE, None);
    for (body, group) in [(10, 1), (11, 1), (20, 2), (12, 1), (21, 2)] {
        q.send_tagged(body, tag(0, Some(group))).unwrap();
    }
    q.send_tagged(99, tag(0, None)).unwrap();
    let a = q.try_receive().unwrap();
    let b = q.try_receive().unwrap();
    let alone = q.try_receive().unwrap();
    assert_eq!((a.body, b.body, alone.body), (10, 20, 99));
    // Each group has its head leased: nothing else is ready.
    assert!(q.try_receive().is_none());
    // A released head is delivered again before the rest of its group.
    q.release(a.receipt).unwrap();
    let again = q.try_receive().unwrap();
    assert_eq!(again.body, 10);
    q.delete(again.receipt).unwrap();
    q.delete(b.receipt).unwrap();
    q.delete(alone.receipt).unwrap();
    // Group 1's next joined the back first, then group 2's.
    let order: Vec<u32> = std::iter::from_fn(|| q.try_take()).collect();
    assert_eq!(order, [11, 21, 12]);
    assert!(q.is_empty());
}

#[test]
fn an_expired_group_head_is_delivered_again_before_its_group() {
    let clock = visq::ManualClock::new();
    let q: LockRef<u32, Groups> = LockRef::with_order(16, LEASE, Some(clock.clone()));
    for body in [10, 11] {
        q.send_tagged(body, tag(0, Some(1))).unwrap();
    }
    q.send_tagged(20, tag(0, Some(2))).unwrap();
    let head = q.try_receive().unwrap();
    assert_eq!(head.body, 10);
    clock.advance(LEASE + Duration::from_millis(1));
    // Group 2 was ready first; then group 1's expired head, not its next message.
    assert_eq!(q.try_take(), Some(20));
    let again = q.try_receive().unwrap();
    assert_eq!((again.body, again.receive_count), (10, 2));
    assert!(
        q.try_receive().is_none(),
        "one message of a group at a time"
    );
    q.delete(again.receipt).unwrap();
    assert_eq!(q.try_take(), Some(11));
}
