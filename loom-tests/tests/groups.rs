//! FIFO message groups: a lane's token and list under concurrency (see `src/core/groups.rs`,
//! "The idle race"). G1: a send into a lane races the delete of its head. G2: two sends into an
//! idle lane at once. G3: a send races the expiry (the wheel) of the head's lease.
#![cfg(loom)]

mod common;

use common::{check, drops_every_body, Body, LEASE, TICK};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use visq::{ManualClock, Queue, SendOptions};

/// A grouped queue of `capacity` slots and one lane on `clock` (one-tick leases).
fn grouped_queue(capacity: usize, clock: &ManualClock) -> Arc<Queue<Body>> {
    let q = Queue::builder()
        .capacity(capacity)
        .message_groups(1)
        .tick(TICK)
        .visibility_timeout(LEASE)
        .clock(clock.clone())
        .build()
        .expect("valid settings");
    Arc::new(q)
}

fn send_in_group(q: &Queue<Body>, value: u32, live: &Arc<AtomicUsize>) {
    let options = SendOptions::new().group(1u64);
    q.send_with(Body::new(value, live), &options)
        .expect("room for every message");
}

/// Receives the one visible message, which must be `value` with `count`, checks that nothing
/// else of the group is visible (one head), and deletes it.
fn receive_only(q: &Queue<Body>, value: u32, count: u32, what: &str) {
    let d = q
        .try_receive()
        .unwrap_or_else(|| panic!("{what}: nothing visible"));
    assert_eq!(
        (d.body().value, d.receive_count()),
        (value, count),
        "{what}"
    );
    assert!(q.try_receive().is_none(), "{what}: two heads of one group");
    q.delete(d.receipt()).expect("a fresh lease");
}

/// Model G1 (the idle race): the head is leased; a send into its lane (spawned) races the
/// head's delete (main), which lets the lane's next out or, finding the push half done, gives
/// the token up. Exactly one of them publishes the new message: it is then visible once, and
/// the lane takes and lets out a third message after it; each body dropped once.
#[test]
fn send_races_delete_of_the_head() {
    check("send_races_delete_of_the_head", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = grouped_queue(3, &ManualClock::new());
        send_in_group(&q, 1, &live);
        let head = q.try_receive().expect("the head");
        let sender = {
            let (q, live) = (q.clone(), live.clone());
            thread::spawn(move || send_in_group(&q, 2, &live))
        };
        q.delete(head.receipt()).expect("a fresh lease");
        drop(head);
        sender.join().unwrap();
        receive_only(&q, 2, 1, "the message sent during the delete");
        send_in_group(&q, 3, &live);
        receive_only(&q, 3, 1, "the lane still works");
        let stats = q.stats();
        assert_eq!((stats.sent, stats.deleted, stats.ready), (3, 3, 0));
        drops_every_body(q, &live);
    });
}

/// Model G2: two sends into an idle lane at once (main and spawned). Exactly one message is
/// let out, the first to enter the lane; the other follows once it is deleted; each body
/// dropped once.
#[test]
fn two_sends_into_an_idle_lane() {
    check("two_sends_into_an_idle_lane", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = grouped_queue(2, &ManualClock::new());
        let sender = {
            let (q, live) = (q.clone(), live.clone());
            thread::spawn(move || send_in_group(&q, 2, &live))
        };
        send_in_group(&q, 1, &live);
        sender.join().unwrap();
        let first = q.try_receive().expect("one of the two is let out");
        assert!(q.try_receive().is_none(), "two heads of one group");
        let first_value = first.body().value;
        q.delete(first.receipt()).expect("a fresh lease");
        drop(first);
        receive_only(
            &q,
            3 - first_value,
            1,
            "the other, after the first's delete",
        );
        drops_every_body(q, &live);
    });
}

/// Model G3: the head's lease has passed its deadline; the main thread runs the wheel
/// (`stats`), which expires it, while a send into its lane (spawned) pushes a second message.
/// The expired head stays the group's head: it is delivered again (receive count 2) before the
/// second, which is invisible until the head is deleted; each body dropped once.
#[test]
fn send_races_expiry_of_the_head() {
    check("send_races_expiry_of_the_head", || {
        let live = Arc::new(AtomicUsize::new(0));
        let clock = ManualClock::new();
        let q = grouped_queue(2, &clock);
        send_in_group(&q, 1, &live);
        drop(q.try_receive().expect("the head, leased and abandoned"));
        clock.advance(2 * TICK);
        let sender = {
            let (q, live) = (q.clone(), live.clone());
            thread::spawn(move || send_in_group(&q, 2, &live))
        };
        q.stats();
        sender.join().unwrap();
        receive_only(&q, 1, 2, "the expired head, again first");
        receive_only(&q, 2, 1, "the second, after the head's delete");
        drops_every_body(q, &live);
    });
}
