//! Pub/sub: fan-out to per-subscription queues, filters, and refusals that hand the body back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;
use visq::{BuildError, ManualClock, Queue, SendError, Topic};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn every_subscription_gets_a_clone_in_its_own_queue() {
    let clock = ManualClock::new();
    let topic: Topic<String> = Topic::new();
    let short = topic
        .subscribe(
            Queue::builder()
                .visibility_timeout(secs(1))
                .clock(clock.clone()),
        )
        .unwrap();
    let long = topic
        .subscribe(
            Queue::builder()
                .visibility_timeout(secs(60))
                .clock(clock.clone()),
        )
        .unwrap();
    assert_ne!(short.id(), long.id());
    assert_eq!(topic.publish("event".to_string()).unwrap(), 2);

    let from_short = short.try_receive().unwrap();
    let from_long = long.try_receive().unwrap();
    assert_eq!(
        (from_short.body().as_str(), from_long.body().as_str()),
        ("event", "event")
    );
    // Each queue keeps its own visibility timeout.
    clock.advance(secs(2));
    assert_eq!(short.try_receive().unwrap().receive_count(), 2);
    assert!(long.try_receive().is_none());
}

#[test]
fn filters_choose_what_a_subscription_gets() {
    let topic: Topic<u32> = Topic::new();
    let all = topic.subscribe(Queue::builder()).unwrap();
    let even = topic
        .subscribe_filtered(Queue::builder(), |n| n % 2 == 0)
        .unwrap();
    for n in 0..6 {
        let expected = if n % 2 == 0 { 2 } else { 1 };
        assert_eq!(topic.publish(n).unwrap(), expected);
    }
    assert_eq!(all.stats().ready, 6);
    let evens: Vec<u32> = std::iter::from_fn(|| even.try_receive().map(|d| *d.body())).collect();
    assert_eq!(evens, [0, 2, 4]);
}

#[test]
fn a_full_subscription_is_named_and_the_body_comes_back() {
    let topic: Topic<String> = Topic::new();
    let roomy = topic.subscribe(Queue::builder().capacity(8)).unwrap();
    let tiny = topic.subscribe(Queue::builder().capacity(1)).unwrap();
    topic.publish("first".to_string()).unwrap();

    let refused = topic.publish("second".to_string()).unwrap_err();
    assert_eq!(refused.refused, [(tiny.id(), SendError::Full(()))]);
    assert_eq!(refused.delivered, [roomy.id()]);
    assert!(refused.panicked.is_empty());
    assert_eq!(refused.body, "second");
    assert_eq!(roomy.stats().ready, 2);

    // Make room, then retry where it was refused: `roomy` gets no duplicate.
    let first = tiny.try_receive().unwrap();
    tiny.delete(first.receipt()).unwrap();
    let ids = refused.refused_ids();
    assert_eq!(topic.publish_to(&ids, refused.into_inner()).unwrap(), 1);
    assert_eq!(roomy.stats().ready, 2);
    assert_eq!(tiny.try_receive().unwrap().body(), "second");
}

#[test]
fn a_closed_subscription_is_named() {
    let topic: Topic<u8> = Topic::new();
    let closed = topic.subscribe(Queue::builder()).unwrap();
    closed.close();
    let refused = topic.publish(1).unwrap_err();
    assert_eq!(refused.refused, [(closed.id(), SendError::Closed(()))]);
    assert!(refused.delivered.is_empty());
    assert_eq!(refused.body, 1);
}

#[test]
fn unsubscribing_stops_delivery() {
    let topic: Topic<u8> = Topic::new();
    let sub = topic.subscribe(Queue::builder()).unwrap();
    assert_eq!(topic.subscriptions(), 1);
    assert!(topic.unsubscribe(sub.id()));
    assert!(!topic.unsubscribe(sub.id()));
    assert_eq!(topic.publish(1).unwrap(), 0);
    assert!(sub.try_receive().is_none());
}

#[test]
fn subscribes_builders_queues_and_shared_queues() {
    let topic: Topic<u8> = Topic::new();
    assert_eq!(
        topic.subscribe(Queue::builder().capacity(0)).unwrap_err(),
        BuildError::ZeroCapacity
    );
    let shared: Arc<Queue<u8>> = Arc::new(Queue::builder().build().unwrap());
    let sub = topic.subscribe(shared.clone()).unwrap();
    assert!(Arc::ptr_eq(sub.queue(), &shared));
    topic.subscribe(Queue::builder().build().unwrap()).unwrap();
    assert_eq!(topic.publish(3).unwrap(), 2);
    assert_eq!(*shared.try_receive().unwrap().body(), 3);
}

#[test]
fn each_subscription_has_its_own_dead_letter_settings() {
    let topic: Topic<u8> = Topic::new();
    let dlq: Arc<Queue<u8>> = Arc::new(Queue::builder().build().unwrap());
    let strict = topic
        .subscribe(Queue::builder().dead_letter(dlq.clone(), 1))
        .unwrap();
    let lenient = topic.subscribe(Queue::builder()).unwrap();
    topic.publish(9).unwrap();
    strict
        .release(strict.try_receive().unwrap().receipt())
        .unwrap();
    lenient
        .release(lenient.try_receive().unwrap().receipt())
        .unwrap();
    assert_eq!(*dlq.try_receive().unwrap().body(), 9);
    assert!(strict.try_receive().is_none());
    assert_eq!(lenient.try_receive().unwrap().receive_count(), 2);
}

#[test]
fn concurrent_publishers_reach_every_subscription() {
    let topic: Arc<Topic<u32>> = Arc::new(Topic::new());
    let subs: Vec<_> = (0..3)
        .map(|_| topic.subscribe(Queue::builder().capacity(4000)).unwrap())
        .collect();
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let topic = topic.clone();
            thread::spawn(move || {
                for n in 0..1000 {
                    assert_eq!(topic.publish(p * 1000 + n).unwrap(), 3);
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    for sub in &subs {
        assert_eq!(sub.stats().ready, 4000);
    }
}

/// A body whose `Clone` panics while `refuse` is set.
#[derive(Debug)]
struct Fragile {
    value: u32,
    refuse: Arc<AtomicBool>,
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(
            !self.refuse.swap(false, Ordering::SeqCst),
            "clone refused (expected by the test)"
        );
        Self {
            value: self.value,
            refuse: self.refuse.clone(),
        }
    }
}

/// Issue 9, item 8: a `Clone` that panicked part-way through a fan-out escaped `publish`,
/// leaving some subscriptions with the message and no word of which.
#[test]
fn a_panicking_clone_is_named_and_the_others_still_get_it() {
    let topic: Topic<Fragile> = Topic::new();
    let first = topic.subscribe(Queue::builder()).unwrap();
    let refuse = Arc::new(AtomicBool::new(false));
    // The second subscription's filter arms the panic for its own clone, once.
    let (arm, once) = (refuse.clone(), AtomicBool::new(true));
    let second = topic
        .subscribe_filtered(Queue::builder(), move |_| {
            arm.store(once.swap(false, Ordering::SeqCst), Ordering::SeqCst);
            true
        })
        .unwrap();
    let third = topic.subscribe(Queue::builder()).unwrap();

    let body = Fragile { value: 7, refuse };
    let error = topic.publish(body).unwrap_err();
    assert_eq!(error.delivered, [first.id(), third.id()]);
    assert_eq!(error.panicked, [second.id()]);
    assert!(error.refused.is_empty());
    assert!(error.to_string().contains("1 panicked"), "{error}");
    assert_eq!(first.try_receive().unwrap().body().value, 7);
    assert_eq!(third.try_receive().unwrap().body().value, 7);
    assert!(second.try_receive().is_none());

    // The retry reaches only the one that missed it.
    let ids = error.refused_ids();
    assert_eq!(ids, [second.id()]);
    assert_eq!(topic.publish_to(&ids, error.body).unwrap(), 1);
    assert_eq!(second.try_receive().unwrap().body().value, 7);
    assert_eq!((first.stats().ready, third.stats().ready), (0, 0));

    // A panicking filter is contained the same way, and the topic still works afterwards.
    let touchy = topic
        .subscribe_filtered(Queue::builder(), |_: &Fragile| panic!("filter refused"))
        .unwrap();
    let refuse = Arc::new(AtomicBool::new(false));
    let error = topic.publish(Fragile { value: 8, refuse }).unwrap_err();
    assert_eq!(error.panicked, [touchy.id()]);
    assert_eq!(error.delivered, [first.id(), second.id(), third.id()]);
    assert!(topic.unsubscribe(touchy.id()));
    assert_eq!(topic.publish(error.body).unwrap(), 3);
}

/// Runs `work` on a thread and fails (instead of hanging) if it does not finish in time.
fn finishes_within<R: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (done, result) = mpsc::channel();
    thread::spawn(move || done.send(work()).unwrap());
    result
        .recv_timeout(limit)
        .expect("deadlocked: it did not finish in time")
}

/// Issue 9, item 8: filters (and clones) ran under the subscription list's read lock, so a
/// filter that subscribed or unsubscribed deadlocked on the write lock.
#[test]
fn a_filter_may_subscribe_and_unsubscribe() {
    let topic: Arc<Topic<u32>> = Arc::new(Topic::new());
    let added = Arc::new(AtomicUsize::new(0));
    let weak: Weak<Topic<u32>> = Arc::downgrade(&topic);
    let counter = added.clone();
    let watcher = topic
        .subscribe_filtered(Queue::builder(), move |n| {
            // Each message asks for a new subscription and drops the one made for the last.
            let topic = weak.upgrade().unwrap();
            let sub = topic.subscribe(Queue::builder()).unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            assert!(topic.unsubscribe(sub.id()));
            *n > 0
        })
        .unwrap();
    let publisher = topic.clone();
    let sent = finishes_within(Duration::from_secs(10), move || {
        (0..3).map(|n| publisher.publish(n).unwrap()).sum::<usize>()
    });
    assert_eq!(sent, 2);
    assert_eq!(added.load(Ordering::SeqCst), 3);
    assert_eq!(watcher.stats().ready, 2);
    assert_eq!(topic.subscriptions(), 1);
}

/// Runs `on_drop` when dropped: caller code that runs when the topic lets go of a filter.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// `unsubscribe` drops the topic's last handle on the subscription's filter (and on its queue,
/// with the bodies it holds): that drop is caller code too and must not run under the
/// subscription list's lock, or a drop that uses the topic deadlocks.
#[test]
fn a_filter_dropped_by_unsubscribe_may_use_the_topic() {
    let topic: Arc<Topic<u32>> = Arc::new(Topic::new());
    let weak: Weak<Topic<u32>> = Arc::downgrade(&topic);
    let seen = Arc::new(AtomicUsize::new(usize::MAX));
    let on_drop = {
        let seen = seen.clone();
        OnDrop(move || {
            let topic = weak.upgrade().unwrap();
            seen.store(topic.subscriptions(), Ordering::SeqCst);
        })
    };
    let sub = topic
        .subscribe_filtered(Queue::builder(), move |_| {
            let _keep = &on_drop;
            true
        })
        .unwrap();
    let unsubscriber = topic.clone();
    assert!(finishes_within(Duration::from_secs(5), move || {
        unsubscriber.unsubscribe(sub.id())
    }));
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}
