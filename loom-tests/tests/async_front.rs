//! Models A1-A5 (issue 12): the async front's waker registration races. A waiting future
//! links a node (with its waker) into the queue's waiter list; a lost wake-up leaves
//! `loom::future::block_on` parked forever, which loom reports as a deadlock.
#![cfg(loom)]

mod common;

use common::{check, drops_every_body, tiny_queue, Body};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use visq::{ManualClock, Queue};

const FOREVER: Duration = Duration::from_secs(24 * 3600);

/// The models' timer: never fires (no model waits for a deadline or for its wait's end).
fn never(_: Duration) -> std::future::Pending<()> {
    std::future::pending()
}

/// A future receiving on `q` in a thread of its own, run by loom's `block_on`; answers the
/// body received.
fn async_receiver(q: &Arc<Queue<Body>>) -> thread::JoinHandle<Option<u32>> {
    let q = q.clone();
    thread::spawn(move || {
        loom::future::block_on(q.receive_async(FOREVER, never)).map(|d| d.body().value)
    })
}

/// A1: a send wakes a future that registers at the same time. The future may find the queue
/// empty, then register only after the send pushed the message and looked for waiters (there
/// were none): its re-check after registering must see the message.
#[test]
fn async_register_races_send() {
    check("async_register_races_send", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let receiver = async_receiver(&q);
        q.send(Body::new(1, &live)).unwrap();
        assert_eq!(receiver.join().unwrap(), Some(1));
        assert_eq!(q.waiting_receivers(), 0);
        drops_every_body(q, &live);
    });
}

/// A2: a close wakes a future that registers at the same time; it resolves to `None`.
#[test]
fn async_register_races_close() {
    check("async_register_races_close", || {
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let receiver = async_receiver(&q);
        q.close();
        assert_eq!(receiver.join().unwrap(), None);
        assert_eq!(q.waiting_receivers(), 0);
    });
}

/// A7: a send and then a close race a future that registers: it resolves to the message,
/// never to `None` with the message still visible (the close drains), and leaves no waiter.
#[test]
fn async_register_races_send_and_close() {
    check("async_register_races_send_and_close", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let receiver = async_receiver(&q);
        q.send(Body::new(1, &live)).unwrap();
        q.close();
        assert_eq!(receiver.join().unwrap(), Some(1), "the close drains");
        assert_eq!(q.waiting_receivers(), 0);
        drops_every_body(q, &live);
    });
}

/// A3: a future that registered, may be woken by a racing send, and is then dropped without
/// looking again: it leaves no waiter counted, and the message is still there, received once.
#[test]
fn async_woken_future_dropped() {
    check("async_woken_future_dropped", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let dropper = {
            let q = q.clone();
            thread::spawn(move || {
                let mut receive = pin!(q.receive_async(FOREVER, never));
                let polled = receive
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()));
                // Received at once (the send came first), or registered, then dropped.
                match polled {
                    Poll::Ready(d) => d.map(|d| d.body().value),
                    Poll::Pending => None,
                }
            })
        };
        q.send(Body::new(1, &live)).unwrap();
        let got_early = dropper.join().unwrap();
        assert_eq!(
            q.waiting_receivers(),
            0,
            "the dropped future left a waiter counted"
        );
        if got_early.is_none() {
            let d = q.try_receive().expect("the message is still there");
            assert_eq!((d.body().value, d.receive_count()), (1, 1));
        }
        drops_every_body(q, &live);
    });
}

/// A4: a wake-up given to a future that is dropped before it looks again is passed on: a
/// second future waiting (in another thread) gets the message. Without the passing on, the
/// send's one wake-up goes to the dropped future and the second sleeps forever.
#[test]
fn async_wake_up_passed_on() {
    check("async_wake_up_passed_on", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        let mut first = Box::pin(q.receive_async(FOREVER, never));
        let first_poll = first.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(first_poll.is_pending(), "nothing sent yet: registered");
        let second = async_receiver(&q);
        q.send(Body::new(1, &live)).unwrap();
        drop(first);
        assert_eq!(second.join().unwrap(), Some(1));
        assert_eq!(q.waiting_receivers(), 0);
        drops_every_body(q, &live);
    });
}

/// A5: a delete frees a slot for a future waiting in `send_async` on a full queue, and wakes
/// it, however its registration and the delete interleave.
#[test]
fn async_sender_registers_races_delete() {
    check("async_sender_registers_races_delete", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(1, &ManualClock::new()));
        q.send(Body::new(1, &live)).unwrap();
        let leased = q.try_receive().unwrap();
        let sender = {
            let (q, live) = (q.clone(), live.clone());
            thread::spawn(move || {
                loom::future::block_on(q.send_async(Body::new(2, &live), FOREVER, never)).is_ok()
            })
        };
        q.delete(leased.receipt()).unwrap();
        drop(leased);
        assert!(sender.join().unwrap(), "sent into the freed slot");
        assert_eq!(q.try_receive().map(|d| d.body().value), Some(2));
        assert_eq!(q.waiting_senders(), 0);
        drops_every_body(q, &live);
    });
}

/// A6: a thread parked in `receive` and a future waiting in `receive_async` on one queue are
/// both woken: the main thread registers the future (one poll), then sends two messages while
/// the spawned thread parks or receives; the first send must wake the future (linked before
/// it), the thread gets the other message (woken, or finding it), and the future then gets
/// one. A notification that only ever signals the condition variable leaves the future's
/// waker untouched.
#[test]
fn async_and_parked_receivers_both_woken() {
    check("async_and_parked_receivers_both_woken", || {
        let live = Arc::new(AtomicUsize::new(0));
        let q = Arc::new(tiny_queue(2, &ManualClock::new()));
        let parked = {
            let q = q.clone();
            thread::spawn(move || q.receive(FOREVER).map(|d| d.body().value))
        };
        let woken = std::sync::Arc::new(WakeCount::default());
        let waker = Waker::from(woken.clone());
        let mut waiting = Box::pin(q.receive_async(FOREVER, never));
        assert!(waiting
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        q.send(Body::new(1, &live)).unwrap();
        q.send(Body::new(2, &live)).unwrap();
        assert!(
            woken.0.load(std::sync::atomic::Ordering::SeqCst) >= 1,
            "the future was not woken"
        );
        // The thread first: while it waits no lease is out, so its naps have no deadline
        // (one would make it a timer loom fires at every step: see `Waiters::sleep`).
        let from_thread = parked.join().unwrap();
        let from_future = loom::future::block_on(waiting.as_mut()).map(|d| d.body().value);
        let mut got = [from_thread, from_future];
        got.sort();
        assert_eq!(got, [Some(1), Some(2)]);
        drop(waiting);
        drops_every_body(q, &live);
    });
}

/// A waker that counts its wake-ups (outside the model: only the main thread wakes it).
#[derive(Default)]
struct WakeCount(std::sync::atomic::AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
