//! The RabbitMQ adapter against a real broker: `eval "$(.ci/rabbitmq.sh start)"`, then
//! `cargo test --features rabbitmq --test rabbitmq`.
//!
//! Without `VISQ_RABBITMQ_URL` each test prints a skip line naming the variable and passes,
//! unless `VISQ_REQUIRE_BROKERS=1` (CI), where it fails. The broker keeps its own time: where a
//! test must see that something has *not* happened yet it waits real time, a few hundred
//! milliseconds at most, and says so. Each test uses fresh queue names and deletes them.
#![cfg(feature = "rabbitmq")]

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use visq::{
    Backend, BackendError, CountKind, Feature, Handle, Incoming, Limit, Outgoing, RabbitMq,
    RabbitMqBuilder, ReceiveCount, MAX_TIMEOUT,
};

/// How long a receive that should find nothing waits (real time: the broker's clock).
const QUIET: Duration = Duration::from_millis(300);
/// How long a receive that should find something waits at most.
const PATIENT: Duration = Duration::from_secs(5);

/// Tests share the node; the one that restarts it runs alone.
static NODE: RwLock<()> = RwLock::new(());

/// The broker's URL and a shared hold on its node, for as long as the test runs.
struct Broker {
    url: String,
    _shared: RwLockReadGuard<'static, ()>,
}

impl std::ops::Deref for Broker {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

fn url() -> Option<Broker> {
    let url = broker_url()?;
    let shared = NODE.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    Some(Broker {
        url,
        _shared: shared,
    })
}

fn broker_url() -> Option<String> {
    match std::env::var("VISQ_RABBITMQ_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("VISQ_REQUIRE_BROKERS").as_deref() == Ok("1") {
                panic!("VISQ_REQUIRE_BROKERS=1 but VISQ_RABBITMQ_URL is not set");
            }
            // Straight to stderr, past libtest's capture, so the skip shows in a plain run.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: VISQ_RABBITMQ_URL is not set; start a broker with \
                 `eval \"$(.ci/rabbitmq.sh start)\"` to run this test"
            );
            None
        }
    }
}

/// A fresh queue name: the test's, a counter and the process id.
fn fresh(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "visq-test.{test}.{}.{}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

/// A queue deleted (with its dead-letter and delay queues) when the test ends, pass or fail.
struct Fresh(RabbitMq);

impl Fresh {
    fn new(builder: RabbitMqBuilder) -> Self {
        Self(
            builder
                .build()
                .expect("the broker at VISQ_RABBITMQ_URL takes the declarations"),
        )
    }
}

impl std::ops::Deref for Fresh {
    type Target = RabbitMq;
    fn deref(&self) -> &RabbitMq {
        &self.0
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = self.0.delete_queues();
    }
}

fn send(queue: &RabbitMq, body: &str) {
    queue
        .send(Outgoing::new(body.as_bytes().to_vec()))
        .expect("confirmed");
}

/// Receives exactly one message, waiting up to [`PATIENT`].
fn one(queue: &dyn Backend<Body = Vec<u8>>) -> Incoming<Vec<u8>> {
    let mut got = Vec::new();
    queue.receive(&mut got, 1, PATIENT, None).unwrap();
    assert_eq!(got.len(), 1, "a message within {PATIENT:?}");
    got.pop().unwrap()
}

/// Asserts nothing is delivered within [`QUIET`] (real time).
fn nothing(queue: &dyn Backend<Body = Vec<u8>>) {
    nothing_within(queue, QUIET);
}

/// Asserts nothing is delivered within `wait` (real time).
fn nothing_within(queue: &dyn Backend<Body = Vec<u8>>, wait: Duration) {
    let mut got = Vec::new();
    queue.receive(&mut got, 10, wait, None).unwrap();
    let bodies: Vec<_> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert!(got.is_empty(), "expected nothing, got {bodies:?}");
}

fn body(message: &Incoming<Vec<u8>>) -> &str {
    std::str::from_utf8(&message.body).unwrap()
}

/// rabbitmqctl against the node `.ci/rabbitmq.sh` started for VISQ_RABBITMQ_URL's port; its
/// output.
fn ctl(args: &[&str]) -> String {
    let url = std::env::var("VISQ_RABBITMQ_URL").unwrap();
    let port = url
        .rsplit(':')
        .next()
        .and_then(|tail| tail.split('/').next())
        .expect("a port in VISQ_RABBITMQ_URL");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/rabbitmq.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("ctl")
        .args(args)
        .env("VISQ_RABBITMQ_PORT", port)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "`.ci/rabbitmq.sh ctl {args:?}` failed ({}): this test needs the node that script started",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Closes, on the broker, the connection of the handle for `queue` (and no other test's).
fn drop_connection_of(queue: &str) {
    let listing = ctl(&["-q", "list_connections", "pid", "client_properties"]);
    let name = format!("visq queue {queue}");
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains(&name))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        pids.len(),
        1,
        "one connection named {name:?} in:\n{listing}"
    );
    ctl(&[
        "close_connection",
        pids[0],
        "visq test: drop the connection",
    ]);
}

#[test]
fn capabilities_are_honest() {
    let Some(url) = url() else { return };
    let plain = Fresh::new(RabbitMq::builder(&url, &fresh("caps")));
    let caps = plain.capabilities();
    assert!(!caps.leases_expire && !caps.extend_lease && !caps.shorten_lease);
    assert!(!caps.groups && !caps.dedup && caps.attributes);
    assert!(!caps.native_dead_letter && !caps.uncharged_hand_back);
    assert_eq!(caps.receive_count, CountKind::Exact);
    assert!(plain.dead_letter_queue().is_none());
    assert_eq!(plain.dead_letter_limit(), None);
    let limited = Fresh::new(RabbitMq::builder(&url, &fresh("caps")).max_receives(4));
    assert!(limited.capabilities().native_dead_letter);
    assert_eq!(limited.dead_letter_limit(), Some(4));
    assert!(limited.dead_letter_queue().is_some());
}

#[test]
fn confirmed_sends_arrive_in_order_with_attributes_and_are_deleted_once() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("basic")));
    let accepted = queue
        .send(Outgoing::new(b"first".to_vec()).attribute("tenant", "acme"))
        .expect("the broker confirmed it");
    send(&queue, "second");
    send(&queue, "third");
    let mut got = Vec::new();
    while got.len() < 3 {
        assert!(queue.receive(&mut got, 10, PATIENT, None).unwrap() > 0);
    }
    let bodies: Vec<_> = got.iter().map(body).collect();
    assert_eq!(bodies, ["first", "second", "third"]);
    assert_eq!(got[0].id, accepted.id);
    assert_eq!(
        got[0].attributes,
        [("tenant".to_string(), "acme".to_string())]
    );
    assert!(got[1].attributes.is_empty());
    assert!(got
        .iter()
        .all(|m| m.receive_count == ReceiveCount::Exact(1)));
    for message in &got {
        queue.delete(&message.handle).unwrap();
    }
    assert_eq!(queue.delete(&got[0].handle), Err(BackendError::Stale));
    assert_eq!(queue.release(&got[1].handle), Err(BackendError::Stale));
    nothing(&*queue);
}

#[test]
fn foreign_and_made_up_receipts_are_stale() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("foreign")));
    let other = Fresh::new(RabbitMq::builder(&url, &fresh("foreign")));
    send(&other, "theirs");
    let theirs = one(&*other);
    send(&queue, "ours");
    let ours = one(&*queue);
    assert_eq!(queue.delete(&theirs.handle), Err(BackendError::Stale));
    assert_eq!(
        queue.delete(&Handle::text("nope")),
        Err(BackendError::Stale)
    );
    let (connection, tag) = ours.handle.as_tag().unwrap();
    // An unknown tag on our own connection: refused here, never sent (the broker would close
    // the channel for it), so the real lease still settles.
    assert_eq!(
        queue.delete(&Handle::tag(connection, tag + 1000)),
        Err(BackendError::Stale)
    );
    assert_eq!(
        queue.delete(&Handle::tag(connection + 1000, tag)),
        Err(BackendError::Stale)
    );
    queue.delete(&ours.handle).unwrap();
    other.delete(&theirs.handle).unwrap();
}

#[test]
fn unroutable_sends_are_errors_with_the_body_back() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("unroutable")));
    queue.delete_queues().unwrap();
    queue
        .delete_queues()
        .expect("deleting what is gone changes nothing");
    let refused = queue
        .send(Outgoing::new(b"lost?".to_vec()))
        .expect_err("no queue takes it");
    assert_eq!(refused.body, b"lost?");
    assert!(
        matches!(&refused.error, BackendError::Fatal(m) if m.contains("unroutable")),
        "{:?}",
        refused.error
    );
}

#[test]
fn entries_are_checked_one_by_one_in_batches_larger_than_a_chunk() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("batch")).prefetch(500));
    let n = queue.capabilities().max_batch + 44;
    let mut batch: Vec<_> = (0..n)
        .map(|i| Outgoing::new(i.to_string().into_bytes()))
        .collect();
    batch[3] = Outgoing::new(b"grouped".to_vec()).group("g");
    batch[4] = Outgoing::new(b"deduped".to_vec()).dedup_id("d");
    batch[5] = Outgoing::new(b"reserved".to_vec()).attribute("x-death", "mine");
    batch[n - 1] = Outgoing::new(b"too late".to_vec()).delay(MAX_TIMEOUT + Duration::from_secs(1));
    let results = queue.send_batch(batch);
    assert_eq!(results.len(), n);
    let refusal = |i: usize| results[i].as_ref().unwrap_err();
    assert_eq!(refusal(3).error, BackendError::Unsupported(Feature::Groups));
    assert_eq!(refusal(3).body, b"grouped");
    assert_eq!(refusal(4).error, BackendError::Unsupported(Feature::Dedup));
    assert!(matches!(refusal(5).error, BackendError::Fatal(_)));
    assert!(matches!(
        refusal(n - 1).error,
        BackendError::Limit {
            limit: Limit::DelayMillis,
            ..
        }
    ));
    let sent = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(sent, n - 4);
    // Every accepted message is there, once.
    let mut got = Vec::new();
    while got.len() < sent {
        assert!(queue.receive(&mut got, n, PATIENT, None).unwrap() > 0);
    }
    let mut bodies: Vec<usize> = got.iter().map(|m| body(m).parse().unwrap()).collect();
    bodies.sort_unstable();
    let expected: Vec<usize> = (0..n - 1).filter(|i| !(3..=5).contains(i)).collect();
    assert_eq!(bodies, expected);
    let handles: Vec<Handle> = got.iter().map(|m| m.handle.clone()).collect();
    assert!(queue.delete_batch(&handles).iter().all(Result::is_ok));
    nothing(&*queue);
}

#[test]
fn a_release_redelivers_with_the_next_count_and_leases_cannot_be_moved() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("release")));
    send(&queue, "again");
    let first = one(&*queue);
    assert_eq!(first.receive_count, ReceiveCount::Exact(1));
    assert_eq!(
        queue.change_visibility(&first.handle, Duration::from_secs(60)),
        Err(BackendError::Unsupported(Feature::ExtendLease))
    );
    queue.release(&first.handle).unwrap();
    assert_eq!(queue.delete(&first.handle), Err(BackendError::Stale));
    let second = one(&*queue);
    assert_eq!(
        (body(&second), second.receive_count),
        ("again", ReceiveCount::Exact(2))
    );
    assert_eq!(second.id, first.id);
    // Zero is a release, and so is a hand-back here (it counts).
    queue
        .change_visibility(&second.handle, Duration::ZERO)
        .unwrap();
    let third = one(&*queue);
    assert_eq!(third.receive_count, ReceiveCount::Exact(3));
    queue.hand_back(&third.handle).unwrap();
    let fourth = one(&*queue);
    assert_eq!(fourth.receive_count, ReceiveCount::Exact(4));
    queue.delete(&fourth.handle).unwrap();
    nothing(&*queue);
}

#[test]
fn the_delivery_limit_moves_a_message_to_the_dead_letter_queue_after_max_receives() {
    let Some(url) = url() else { return };
    for max_receives in [1, 3] {
        let queue = Fresh::new(RabbitMq::builder(&url, &fresh("limit")).max_receives(max_receives));
        send(&queue, "poison");
        for receive in 1..=max_receives {
            let message = one(&*queue);
            assert_eq!(message.receive_count, ReceiveCount::Exact(receive));
            queue.release(&message.handle).unwrap();
        }
        // The release after the last allowed receive dead-lettered it.
        nothing(&*queue);
        let dlq = queue.dead_letter_queue().unwrap();
        let dead = one(&*dlq);
        assert_eq!(body(&dead), "poison");
        assert_eq!(dead.receive_count, ReceiveCount::Exact(1));
        dlq.delete(&dead.handle).unwrap();
        nothing(&*dlq);
    }
}

#[test]
fn dead_letter_moves_a_message_at_once_where_there_is_a_dead_letter_queue() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("reject")).max_receives(5));
    send(&queue, "undecodable");
    let message = one(&*queue);
    queue
        .dead_letter(&message.handle, "does not decode")
        .unwrap();
    assert_eq!(
        queue.dead_letter(&message.handle, "twice"),
        Err(BackendError::Stale)
    );
    nothing(&*queue);
    let dlq = queue.dead_letter_queue().unwrap();
    let dead = one(&*dlq);
    assert_eq!((body(&dead), &dead.id), ("undecodable", &message.id));
    dlq.delete(&dead.handle).unwrap();

    let plain = Fresh::new(RabbitMq::builder(&url, &fresh("reject")));
    send(&plain, "kept");
    let message = one(&*plain);
    assert_eq!(
        plain.dead_letter(&message.handle, "no dlq"),
        Err(BackendError::Unsupported(Feature::DeadLetter))
    );
    plain.delete(&message.handle).unwrap();
}

#[test]
fn delays_never_fire_early_and_a_short_one_does_not_wait_behind_a_long_one() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("delay")));
    let start = Instant::now();
    let results = queue.send_batch(vec![
        Outgoing::new(b"long".to_vec()).delay(Duration::from_millis(1200)),
        Outgoing::new(b"short".to_vec()).delay(Duration::from_millis(300)),
        Outgoing::new(b"now".to_vec()),
        Outgoing::new(b"short too".to_vec()).delay(Duration::from_millis(300)),
    ]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let now = one(&*queue);
    assert_eq!(body(&now), "now");
    let short = one(&*queue);
    let short_at = start.elapsed();
    assert_eq!(body(&short), "short");
    assert!(
        short_at >= Duration::from_millis(300),
        "came out early: {short_at:?}"
    );
    assert!(
        short_at < Duration::from_millis(1200),
        "waited behind the long one: {short_at:?}"
    );
    let short_too = one(&*queue);
    assert_eq!(body(&short_too), "short too");
    let long = one(&*queue);
    let long_at = start.elapsed();
    assert_eq!(body(&long), "long");
    assert!(
        long_at >= Duration::from_millis(1200),
        "came out early: {long_at:?}"
    );
    assert_eq!(long.receive_count, ReceiveCount::Exact(1));
    for message in [now, short, short_too, long] {
        queue.delete(&message.handle).unwrap();
    }
}

#[test]
fn prefetch_bounds_what_is_in_flight() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("prefetch")).prefetch(2));
    for i in 0..5 {
        send(&queue, &i.to_string());
    }
    let mut held = Vec::new();
    while held.len() < 2 {
        queue.receive(&mut held, 10, PATIENT, None).unwrap();
    }
    // Two unsettled: the broker pushes no third.
    nothing(&*queue);
    assert_eq!(held.len(), 2);
    let mut seen = Vec::new();
    while let Some(message) = held.pop() {
        seen.push(body(&message).to_owned());
        queue.delete(&message.handle).unwrap();
        if seen.len() + held.len() < 5 {
            // One settled, one more may come.
            queue.receive(&mut held, 10, PATIENT, None).unwrap();
            assert!(
                held.len() <= 2,
                "more than prefetch in flight: {}",
                held.len()
            );
        }
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "4"]);
}

#[test]
fn receipts_of_a_lost_connection_are_stale_and_the_message_comes_back() {
    let Some(url) = url() else { return };
    let name = fresh("reconnect");
    let queue = Fresh::new(RabbitMq::builder(&url, &name));
    send(&queue, "survivor");
    let before = one(&*queue);
    drop_connection_of(&name);
    // The adapter notices the loss on its next call and reconnects; the broker has requeued
    // the unsettled delivery, counted.
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENT;
    while got.is_empty() && Instant::now() < deadline {
        match queue.receive(&mut got, 1, Duration::from_millis(200), None) {
            Ok(_) => {}
            Err(error) => assert!(error.is_transient(), "{error:?}"),
        }
    }
    let after = got.pop().expect("redelivered after reconnecting");
    assert_eq!((body(&after), &after.id), ("survivor", &before.id));
    assert_eq!(after.receive_count, ReceiveCount::Exact(2));
    assert_eq!(queue.delete(&before.handle), Err(BackendError::Stale));
    queue.delete(&after.handle).unwrap();
    nothing(&*queue);
}

#[test]
fn purge_empties_the_queue_and_its_delay_queues() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("purge")).max_receives(2));
    send(&queue, "a");
    send(&queue, "b");
    queue
        .send(Outgoing::new(b"later".to_vec()).delay(Duration::from_millis(200)))
        .unwrap();
    queue.purge().unwrap();
    // Past the delay (real time): the delayed one was purged from its delay queue.
    nothing_within(&*queue, Duration::from_millis(600));
    nothing(&*queue.dead_letter_queue().unwrap());
}

#[test]
fn a_fanout_topic_copies_each_message_to_every_subscriber() {
    let Some(url) = url() else { return };
    let topic = RabbitMq::topic(&url, &fresh("topic")).unwrap();
    let refused = topic
        .publish(Outgoing::new(b"nobody".to_vec()))
        .expect_err("no subscriber: unroutable");
    assert_eq!(refused.body, b"nobody");
    let a = Fresh::new(topic.subscriber(&fresh("sub")));
    let b = Fresh::new(topic.subscriber(&fresh("sub")));
    topic.publish(Outgoing::new(b"news".to_vec())).unwrap();
    for subscriber in [&a, &b] {
        let message = one(&**subscriber);
        assert_eq!(body(&message), "news");
        subscriber.delete(&message.handle).unwrap();
    }
    assert_eq!(
        topic
            .publish(Outgoing::new(b"later".to_vec()).delay(Duration::from_secs(1)))
            .unwrap_err()
            .error,
        BackendError::Unsupported(Feature::Delay)
    );
    drop((a, b));
    topic.delete().unwrap();
}

#[test]
fn bad_configuration_is_an_error_and_an_unreachable_broker_is_transient() {
    let Some(url) = url() else { return };
    let err = |builder: RabbitMqBuilder| builder.build().unwrap_err();
    assert!(matches!(
        err(RabbitMq::builder(&url, "q").prefetch(0)),
        BackendError::Fatal(_)
    ));
    assert!(matches!(
        err(RabbitMq::builder(&url, "q").max_receives(0)),
        BackendError::Fatal(_)
    ));
    assert!(matches!(
        err(RabbitMq::builder(&url, &"q".repeat(300))),
        BackendError::Fatal(_)
    ));
    assert!(matches!(
        err(RabbitMq::builder(&url, "")),
        BackendError::Fatal(_)
    ));
    // Nothing listens on port 1.
    let down = err(RabbitMq::builder("amqp://guest:guest@127.0.0.1:1/%2f", "q"));
    assert!(down.is_transient(), "{down:?}");
    // The same queue declared with other arguments: the broker's refusal, fatal.
    let name = fresh("clash");
    let _queue = Fresh::new(RabbitMq::builder(&url, &name));
    assert!(matches!(
        err(RabbitMq::builder(&url, &name).max_receives(3)),
        BackendError::Fatal(_)
    ));
}

#[test]
fn receive_checks_its_arguments() {
    let Some(url) = url() else { return };
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("args")));
    let mut got = Vec::new();
    assert_eq!(queue.receive(&mut got, 0, QUIET, None), Ok(0));
    assert!(matches!(
        queue.receive(&mut got, 1, QUIET, Some(Duration::ZERO)),
        Err(BackendError::Fatal(_))
    ));
    assert!(matches!(
        queue.receive(&mut got, 1, QUIET, Some(MAX_TIMEOUT * 2)),
        Err(BackendError::Limit {
            limit: Limit::VisibilityMillis,
            ..
        })
    ));
    assert!(matches!(
        queue.receive(&mut got, 1, MAX_TIMEOUT * 2, None),
        Err(BackendError::Limit {
            limit: Limit::WaitMillis,
            ..
        })
    ));
    // A visibility is accepted and cannot be honoured: the lease does not expire.
    send(&queue, "held");
    queue
        .receive(&mut got, 1, PATIENT, Some(Duration::from_millis(1)))
        .unwrap();
    let message = got.pop().expect("the message");
    // Its 1 ms visibility passes during this 300 ms wait (real time): still held.
    nothing(&*queue);
    queue.delete(&message.handle).unwrap();
}

#[test]
fn after_a_broker_restart_the_adapter_reconnects_and_old_receipts_are_stale() {
    let Some(url) = broker_url() else { return };
    let _alone = NODE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("restart")).max_receives(5));
    send(&queue, "durable");
    let before = one(&*queue);
    ctl(&["stop_app"]);
    let down = queue
        .send(Outgoing::new(b"while down".to_vec()))
        .expect_err("no broker");
    assert!(down.error.is_transient(), "{:?}", down.error);
    assert_eq!(down.body, b"while down");
    ctl(&["start_app"]);
    ctl(&["await_startup"]);
    // The quorum queue and its persistent message survived; the next calls reconnect.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.is_empty() && Instant::now() < deadline {
        if let Err(error) = queue.receive(&mut got, 1, Duration::from_millis(500), None) {
            assert!(error.is_transient(), "{error:?}");
        }
    }
    let after = got.pop().expect("redelivered after the restart");
    assert_eq!((body(&after), &after.id), ("durable", &before.id));
    assert!(
        after.receive_count.at_least() >= 2,
        "{:?}",
        after.receive_count
    );
    assert_eq!(queue.delete(&before.handle), Err(BackendError::Stale));
    queue.delete(&after.handle).unwrap();
    nothing(&*queue);
}

#[test]
fn concurrent_receivers_on_two_connections_get_every_message_exactly_once() {
    let Some(url) = url() else { return };
    const MESSAGES: usize = 400;
    const THREADS_PER_HANDLE: usize = 3;
    let name = fresh("concurrent");
    let first = Fresh::new(RabbitMq::builder(&url, &name).prefetch(8));
    let second = Fresh::new(RabbitMq::builder(&url, &name).prefetch(8));
    let batch = (0..MESSAGES)
        .map(|i| Outgoing::new(i.to_string().into_bytes()))
        .collect();
    assert!(first.send_batch(batch).iter().all(Result::is_ok));
    let taken = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for handle in [&first, &second] {
            for _ in 0..THREADS_PER_HANDLE {
                let taken = &taken;
                scope.spawn(move || {
                    let mut got = Vec::new();
                    // Bounded: stops at the first quiet receive (every message sent already).
                    loop {
                        got.clear();
                        handle.receive(&mut got, 5, QUIET, None).unwrap();
                        if got.is_empty() {
                            return;
                        }
                        for message in &got {
                            handle.delete(&message.handle).unwrap();
                            taken
                                .lock()
                                .unwrap()
                                .push(body(message).parse::<usize>().unwrap());
                        }
                    }
                });
            }
        }
    });
    let mut taken = taken.into_inner().unwrap();
    taken.sort_unstable();
    assert_eq!(taken, (0..MESSAGES).collect::<Vec<_>>());
    nothing(&*first);
}

#[test]
fn a_broker_that_blocks_publishers_makes_sends_transient_after_the_confirm_timeout() {
    let Some(url) = broker_url() else { return };
    let _alone = NODE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let timeout = Duration::from_millis(500);
    let queue = Fresh::new(RabbitMq::builder(&url, &fresh("alarm")).confirm_timeout(timeout));
    // A memory alarm: the broker stops reading from publishing connections.
    ctl(&["set_vm_memory_high_watermark", "0.000001"]);
    let start = Instant::now();
    let blocked = queue.send(Outgoing::new(b"held up".to_vec()));
    let took = start.elapsed();
    ctl(&["set_vm_memory_high_watermark", "0.4"]);
    let refused = blocked.expect_err("no confirm while the alarm is on");
    assert!(refused.error.is_transient(), "{:?}", refused.error);
    assert_eq!(refused.body, b"held up");
    assert!(
        took >= timeout && took < timeout * 10,
        "gave up after {took:?}"
    );
    // Once the alarm clears the held-up publish may still arrive, as the error says.
    let mut got = Vec::new();
    queue
        .receive(&mut got, 1, Duration::from_secs(2), None)
        .unwrap();
    for message in &got {
        assert_eq!(body(message), "held up");
        queue.delete(&message.handle).unwrap();
    }
    send(&queue, "after the alarm");
    let after = one(&*queue);
    assert_eq!(body(&after), "after the alarm");
    queue.delete(&after.handle).unwrap();
}

#[test]
fn deliveries_pushed_but_not_taken_come_back_counted_when_the_handle_goes() {
    let Some(url) = url() else { return };
    let name = fresh("prefetched");
    let keeper = Fresh::new(RabbitMq::builder(&url, &name));
    for body in ["taken", "pushed"] {
        send(&keeper, body);
    }
    {
        let early = RabbitMq::builder(&url, &name).prefetch(2).build().unwrap();
        let taken = one(&early);
        assert_eq!(body(&taken), "taken");
        // Wait (real time) until the broker has pushed the second one to this handle too.
        nothing(&*keeper);
        // Dropped with one lease unsettled and one delivery never handed out.
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        assert!(keeper.receive(&mut got, 2, PATIENT, None).unwrap() > 0);
    }
    let counts: Vec<_> = got.iter().map(|m| (body(m), m.receive_count)).collect();
    // RabbitMQ 3.x counts every return to a quorum queue, a pushed one no receive took too.
    assert_eq!(
        counts,
        [
            ("taken", ReceiveCount::Exact(2)),
            ("pushed", ReceiveCount::Exact(2))
        ]
    );
    for message in &got {
        keeper.delete(&message.handle).unwrap();
    }
}
