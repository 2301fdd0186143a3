//! The SQS adapter against a real SQS-compatible server: moto, started by `.ci/moto.sh start`
//! (`eval "$(.ci/moto.sh start)"` sets VISQ_SQS_ENDPOINT). Without VISQ_SQS_ENDPOINT each test
//! prints a skip line naming the variable and returns, unless VISQ_REQUIRE_BROKERS=1, where it
//! fails.
//!
//! Every test uses fresh queue names (a prefix, the process id and a counter) and deletes its
//! queues at the end. moto has its own clock: where a test needs time to pass (a long poll
//! that a later send ends), it waits real time, a few hundred milliseconds, and says so.
//! Redelivery is driven by releases (visibility zero), never by waiting for a lease to end.
#![cfg(feature = "sqs")]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use visq::{
    Backend, BackendError, Feature, Handle, Incoming, Limit, Outgoing, ReceiveCount, Sqs,
    SqsBuilder,
};

const SECOND: Duration = Duration::from_secs(1);

/// The server's URL, or `None` after printing why the test is skipped.
fn endpoint() -> Option<String> {
    match std::env::var("VISQ_SQS_ENDPOINT") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("VISQ_REQUIRE_BROKERS").as_deref() == Ok("1") => {
            panic!("VISQ_REQUIRE_BROKERS=1 but VISQ_SQS_ENDPOINT is not set")
        }
        _ => {
            // Straight to stderr, past the test harness's capture, so every run shows it.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: VISQ_SQS_ENDPOINT is not set (run `eval \"$(.ci/moto.sh start)\"` to \
                 test the SQS adapter against moto)"
            );
            None
        }
    }
}

/// A queue name no other test or run uses.
fn fresh_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("visq-{prefix}-{}-{n}", std::process::id())
}

/// An `Sqs` on fresh queues, deleted when dropped.
struct Fresh(Sqs);

impl Fresh {
    fn build(builder: SqsBuilder) -> Self {
        Self(builder.build().expect("the queues are created"))
    }
}

impl std::ops::Deref for Fresh {
    type Target = Sqs;
    fn deref(&self) -> &Sqs {
        &self.0
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Err(error) = self.0.delete_queues() {
            eprintln!("could not delete {}: {error}", self.0.name());
        }
    }
}

/// A fresh standard queue named after `prefix`, configured by `configure`; `None` when skipped.
fn queue(prefix: &str, configure: impl FnOnce(SqsBuilder) -> SqsBuilder) -> Option<Fresh> {
    let url = endpoint()?;
    Some(Fresh::build(configure(
        Sqs::builder(&fresh_name(prefix)).endpoint_url(&url),
    )))
}

fn text(message: &[u8]) -> Outgoing<Vec<u8>> {
    Outgoing::new(message.to_vec())
}

/// Receives until `expected` messages came or `attempts` one-second long polls came back
/// empty-handed in a row.
fn receive_some(backend: &dyn Backend<Body = Vec<u8>>, expected: usize) -> Vec<Incoming<Vec<u8>>> {
    let mut got = Vec::new();
    let mut empty = 0;
    while got.len() < expected && empty < 5 {
        let wanted = expected - got.len();
        let n = backend
            .receive(&mut got, wanted, SECOND, None)
            .expect("receive");
        empty = if n == 0 { empty + 1 } else { 0 };
    }
    got
}

fn assert_empty(backend: &dyn Backend<Body = Vec<u8>>) {
    let mut got = Vec::new();
    backend.receive(&mut got, 10, SECOND, None).unwrap();
    assert!(got.is_empty(), "expected nothing, got {got:?}");
}

fn body_of(incoming: &Incoming<Vec<u8>>) -> String {
    String::from_utf8(incoming.body.clone()).unwrap()
}

#[test]
fn a_batch_of_25_is_sent_in_calls_of_10_and_every_message_arrives_once() {
    let Some(sqs) = queue("split", |b| b) else {
        return;
    };
    assert_eq!(sqs.capabilities().max_batch, 10);
    let batch: Vec<_> = (0..25)
        .map(|i| text(format!("job {i}").as_bytes()))
        .collect();
    let results = sqs.send_batch(batch);
    assert_eq!(results.len(), 25);
    let ids: HashSet<_> = results
        .into_iter()
        .map(|result| result.expect("every entry is sent").id)
        .collect();
    assert_eq!(ids.len(), 25, "each message has its own id");

    let got = receive_some(&*sqs, 25);
    let bodies: HashSet<_> = got.iter().map(body_of).collect();
    let sent: HashSet<_> = (0..25).map(|i| format!("job {i}")).collect();
    assert_eq!(bodies, sent);
    assert_eq!(got.len(), 25, "no message came twice");
    for chunk in got.chunks(10) {
        let handles: Vec<_> = chunk.iter().map(|m| m.handle.clone()).collect();
        assert!(sqs.delete_batch(&handles).iter().all(Result::is_ok));
    }
    assert_empty(&*sqs);
}

#[test]
fn batch_calls_answer_entry_by_entry() {
    let Some(sqs) = queue("entries", |b| b) else {
        return;
    };
    let too_big = vec![b'x'; 256 * 1024 + 1];
    let results = sqs.send_batch(vec![
        text(b"first"),
        Outgoing::new(too_big.clone()),
        text(b"late").delay(Duration::from_secs(16 * 60)),
        text(b"grouped").group("g"),
        text(b"second"),
    ]);
    assert!(results[0].is_ok());
    let refused = results[1].as_ref().unwrap_err();
    assert_eq!(
        refused.error,
        BackendError::Limit {
            limit: Limit::BodyBytes,
            max: 256 * 1024,
            got: 256 * 1024 + 1
        }
    );
    assert_eq!(refused.body, too_big, "the refused body comes back");
    assert!(matches!(
        results[2].as_ref().unwrap_err().error,
        BackendError::Limit {
            limit: Limit::DelayMillis,
            ..
        }
    ));
    assert_eq!(
        results[3].as_ref().unwrap_err().error,
        BackendError::Unsupported(Feature::Groups),
        "groups are for FIFO queues"
    );
    assert!(results[4].is_ok());

    let got = receive_some(&*sqs, 2);
    assert_eq!(got.len(), 2);
    let (a, b) = (got[0].handle.clone(), got[1].handle.clone());
    let bogus = Handle::text("not-a-receipt-handle");

    let changed = sqs.change_visibility_batch(&[
        (a.clone(), 30 * SECOND),
        (bogus.clone(), 10 * SECOND),
        (b.clone(), Duration::from_secs(13 * 60 * 60)),
        (Handle::tag(1, 1), 10 * SECOND),
    ]);
    assert_eq!(changed[0], Ok(()));
    assert_eq!(
        changed[1],
        Err(BackendError::Stale),
        "SQS refuses this entry alone"
    );
    assert!(matches!(
        changed[2],
        Err(BackendError::Limit {
            limit: Limit::VisibilityMillis,
            ..
        })
    ));
    assert_eq!(
        changed[3],
        Err(BackendError::Stale),
        "another backend's receipt"
    );

    let deleted = sqs.delete_batch(&[a, bogus, b]);
    assert_eq!(deleted, vec![Ok(()), Err(BackendError::Stale), Ok(())]);
    assert_empty(&*sqs);
}

#[test]
fn a_message_goes_to_the_dead_letter_queue_after_max_receives() {
    let Some(sqs) = queue("redrive", |b| b.max_receives(2)) else {
        return;
    };
    assert!(sqs.capabilities().native_dead_letter);
    assert_eq!(sqs.dead_letter_limit(), Some(2));
    sqs.send(text(b"poison").attribute("tenant", "acme"))
        .unwrap();
    for receive in 1..=2 {
        let got = receive_some(&*sqs, 1);
        assert_eq!(got.len(), 1, "receive {receive}");
        assert_eq!(got[0].receive_count, ReceiveCount::Approximate(receive));
        sqs.release(&got[0].handle).unwrap();
    }
    // The third receive finds it over the limit: SQS moves it instead of delivering it.
    assert_empty(&*sqs);
    let dead_letters = sqs.dead_letter_queue().expect("a dead-letter queue");
    let dead = receive_some(&*dead_letters, 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"poison");
    assert_eq!(
        dead[0].attributes,
        vec![("tenant".to_owned(), "acme".to_owned())]
    );
    dead_letters.delete(&dead[0].handle).unwrap();
}

#[test]
fn dead_letter_copies_with_the_reason_then_deletes() {
    let Some(sqs) = queue("dead-letter", |b| b.max_receives(5)) else {
        return;
    };
    sqs.send(Outgoing::new(vec![0xff, 0x00, 0x7f]).attribute("tenant", "acme"))
        .unwrap();
    let got = receive_some(&*sqs, 1);
    assert_eq!(got.len(), 1);
    sqs.dead_letter(&got[0].handle, "body does not decode")
        .unwrap();
    assert_empty(&*sqs);
    assert_eq!(
        sqs.dead_letter(&got[0].handle, "again"),
        Err(BackendError::Stale),
        "a settled receipt is not copied twice"
    );
    let dead_letters = sqs.dead_letter_queue().unwrap();
    let dead = receive_some(&*dead_letters, 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].body,
        vec![0xff, 0x00, 0x7f],
        "binary bodies survive the copy"
    );
    assert_eq!(
        dead[0].attributes,
        vec![
            ("tenant".to_owned(), "acme".to_owned()),
            (
                Sqs::DEAD_LETTER_REASON.to_owned(),
                "body does not decode".to_owned()
            ),
        ]
    );
    dead_letters.delete(&dead[0].handle).unwrap();
}

#[test]
fn without_max_receives_there_is_no_dead_letter_queue() {
    let Some(sqs) = queue("no-dlq", |b| b) else {
        return;
    };
    assert!(!sqs.capabilities().native_dead_letter);
    assert!(sqs.dead_letter_queue().is_none());
    assert_eq!(sqs.dead_letter_limit(), None);
    sqs.send(text(b"x")).unwrap();
    let got = receive_some(&*sqs, 1);
    assert_eq!(
        sqs.dead_letter(&got[0].handle, "no"),
        Err(BackendError::Unsupported(Feature::DeadLetter))
    );
    sqs.delete(&got[0].handle).unwrap();
}

#[test]
fn purge_empties_the_queue_and_its_dead_letter_queue() {
    let Some(sqs) = queue("purge", |b| b.max_receives(3)) else {
        return;
    };
    let sent = sqs.send_batch(vec![text(b"1"), text(b"2"), text(b"3")]);
    assert!(sent.iter().all(Result::is_ok));
    let dead_letters = sqs.dead_letter_queue().unwrap();
    dead_letters.send(text(b"dead")).unwrap();
    sqs.purge().unwrap();
    assert_empty(&*sqs);
    assert_empty(&*dead_letters);
}

/// On a FIFO queue the dead-letter copy goes to `{queue}-dlq.fifo` in the original's group.
#[test]
fn a_fifo_dead_letter_keeps_its_group() {
    let Some(url) = endpoint() else {
        return;
    };
    let sqs = Fresh::build(
        Sqs::builder(&fresh_name("fifo-dl"))
            .endpoint_url(&url)
            .fifo(true)
            .max_receives(4),
    );
    sqs.send(text(b"bad").group("orders")).unwrap();
    let got = receive_some(&*sqs, 1);
    sqs.dead_letter(&got[0].handle, "handler gave up").unwrap();
    let dead = receive_some(&*sqs.dead_letter_queue().unwrap(), 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"bad");
    assert_eq!(dead[0].group.as_deref(), Some("orders"));
    assert_empty(&*sqs);
}

/// FIFO: order within a group, and a deduplication id drops a repeat. moto's deduplication is
/// narrower than AWS's (it only covers messages still in the queue, AWS five minutes deleted or
/// not), so the repeat here is sent while the original is still queued, which both promise.
#[test]
fn fifo_keeps_group_order_and_drops_a_repeated_dedup_id() {
    let Some(url) = endpoint() else {
        return;
    };
    let sqs = Fresh::build(
        Sqs::builder(&fresh_name("fifo"))
            .endpoint_url(&url)
            .fifo(true),
    );
    assert!(sqs.name().ends_with(".fifo"));
    let capabilities = sqs.capabilities();
    assert!(capabilities.groups && capabilities.dedup);
    assert_eq!(capabilities.max_delay, None);

    let results = sqs.send_batch(vec![
        text(b"a1").group("a").dedup_id("a1"),
        text(b"b1").group("b").dedup_id("b1"),
        text(b"a2").group("a").dedup_id("a2"),
        text(b"a1 again").group("a").dedup_id("a1"),
        text(b"a3").group("a").dedup_id("a3"),
        text(b"same body").group("c"),
        text(b"same body").group("c"),
        text(b"delayed").group("a").delay(SECOND),
    ]);
    assert!(results[..7].iter().all(Result::is_ok), "{results:?}");
    let refused = results[7].as_ref().unwrap_err();
    assert_eq!(refused.error, BackendError::Unsupported(Feature::Delay));
    assert_eq!(refused.body, b"delayed");

    // Each message is deleted as it comes, so a group held while one of its messages is in
    // flight cannot stall the loop.
    let mut order = Vec::new();
    let mut empty = 0;
    while empty < 3 {
        let mut got = Vec::new();
        sqs.receive(&mut got, 10, SECOND, None).unwrap();
        empty = if got.is_empty() { empty + 1 } else { 0 };
        for message in got {
            order.push((message.group.clone().unwrap(), body_of(&message)));
            sqs.delete(&message.handle).unwrap();
        }
    }
    let in_group = |group: &str| -> Vec<String> {
        order
            .iter()
            .filter(|(g, _)| g == group)
            .map(|(_, body)| body.clone())
            .collect()
    };
    assert_eq!(
        in_group("a"),
        ["a1", "a2", "a3"],
        "in order, the repeat dropped"
    );
    assert_eq!(in_group("b"), ["b1"]);
    assert_eq!(
        in_group("c"),
        ["same body", "same body"],
        "without a dedup id, equal bodies are two messages"
    );
}

/// A FIFO batch larger than one call keeps its order across the calls it is split into.
#[test]
fn a_fifo_batch_of_25_arrives_in_order() {
    let Some(url) = endpoint() else {
        return;
    };
    let sqs = Fresh::build(
        Sqs::builder(&fresh_name("fifo-split"))
            .endpoint_url(&url)
            .fifo(true),
    );
    let sent: Vec<String> = (0..25).map(|i| format!("step {i}")).collect();
    let batch = sent.iter().map(|body| text(body.as_bytes())).collect();
    assert!(sqs.send_batch(batch).iter().all(Result::is_ok));
    let mut order = Vec::new();
    let mut empty = 0;
    while order.len() < sent.len() && empty < 3 {
        let mut got = Vec::new();
        sqs.receive(&mut got, 10, SECOND, None).unwrap();
        empty = if got.is_empty() { empty + 1 } else { 0 };
        for message in got {
            assert_eq!(message.group.as_deref(), Some("default"));
            order.push(body_of(&message));
            sqs.delete(&message.handle).unwrap();
        }
    }
    assert_eq!(order, sent);
}

/// A FIFO batch stops at a call that fails whole: the later calls are not sent, so nothing
/// overtakes the entries the caller will send again. (The first call fails whole: one of its
/// entries names an empty message group, which moto refuses for the request.)
#[test]
fn a_fifo_batch_stops_at_a_call_that_fails() {
    let Some(url) = endpoint() else {
        return;
    };
    let sqs = Fresh::build(
        Sqs::builder(&fresh_name("fifo-stop"))
            .endpoint_url(&url)
            .fifo(true),
    );
    let mut batch: Vec<_> = (0..15).map(|i| text(format!("{i}").as_bytes())).collect();
    batch[0] = text(b"0").group("");
    let results = sqs.send_batch(batch);
    let first = results[0].as_ref().unwrap_err().error.clone();
    assert!(matches!(first, BackendError::Fatal(_)), "{first:?}");
    for (i, result) in results.iter().enumerate() {
        let refused = result.as_ref().unwrap_err();
        assert_eq!(refused.error, first, "entry {i}");
        assert_eq!(refused.body, format!("{i}").as_bytes());
    }
    assert_empty(&*sqs);
}

/// Forwards TCP to `target` and counts the bytes sent towards it.
struct CountingProxy {
    url: String,
    bytes: Arc<AtomicU64>,
}

impl CountingProxy {
    /// The accept loop runs until the test process ends.
    fn start(target: &str) -> Self {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_socket_addrs()
            .expect("the endpoint is host:port")
            .next()
            .expect("the endpoint resolves");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&bytes);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    return;
                };
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let counted = Arc::clone(&counted);
                thread::spawn(move || pipe(client, server, Some(&counted)));
                thread::spawn(move || pipe(server2, client2, None));
            }
        });
        Self { url, bytes }
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, counted: Option<&AtomicU64>) {
    let mut buffer = [0; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buffer) {
        if let Some(counted) = counted {
            counted.fetch_add(n as u64, Ordering::SeqCst);
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn limits_are_checked_before_any_request() {
    let Some(url) = endpoint() else {
        return;
    };
    let proxy = CountingProxy::start(&url);
    let sqs = Fresh::build(Sqs::builder(&fresh_name("limits")).endpoint_url(&proxy.url));
    let fifo = Fresh::build(
        Sqs::builder(&fresh_name("limits"))
            .endpoint_url(&proxy.url)
            .fifo(true),
    );
    let handle = Handle::text("some-receipt");
    let eleven = vec![handle.clone(); 11];
    let over = |limit, max, got| BackendError::Limit { limit, max, got };
    let refused =
        |result: Result<visq::Accepted, visq::Refused<Vec<u8>>>| result.unwrap_err().error;
    let before = proxy.bytes();

    assert_eq!(
        refused(sqs.send(Outgoing::new(vec![b'x'; 256 * 1024 + 1]))),
        over(Limit::BodyBytes, 262_144, 262_145)
    );
    assert_eq!(
        refused(sqs.send(text(b"x").delay(Duration::from_millis(900_001)))),
        over(Limit::DelayMillis, 900_000, 900_001)
    );
    assert_eq!(
        refused(sqs.send(text(b"x").dedup_id("d"))),
        BackendError::Unsupported(Feature::Dedup)
    );
    assert_eq!(
        refused(fifo.send(text(b"x").delay(SECOND))),
        BackendError::Unsupported(Feature::Delay)
    );
    let mut out = Vec::new();
    assert_eq!(
        sqs.receive(&mut out, 1, Duration::from_millis(20_001), None),
        Err(over(Limit::WaitMillis, 20_000, 20_001))
    );
    assert_eq!(
        sqs.receive(&mut out, 1, SECOND, Some(Duration::from_secs(43_201))),
        Err(over(Limit::VisibilityMillis, 43_200_000, 43_201_000))
    );
    assert_eq!(
        sqs.change_visibility(&handle, Duration::from_secs(43_201)),
        Err(over(Limit::VisibilityMillis, 43_200_000, 43_201_000))
    );
    assert_eq!(
        sqs.delete_batch(&eleven),
        vec![Err(over(Limit::BatchEntries, 10, 11)); 11]
    );
    let eleven_changes: Vec<_> = eleven.iter().map(|h| (h.clone(), SECOND)).collect();
    assert_eq!(
        sqs.change_visibility_batch(&eleven_changes),
        vec![Err(over(Limit::BatchEntries, 10, 11)); 11]
    );
    assert_eq!(sqs.receive(&mut out, 0, SECOND, None), Ok(0));
    assert_eq!(proxy.bytes(), before, "no request went out");

    // The proxy does count: a real call goes through it.
    sqs.receive(&mut out, 1, Duration::ZERO, None).unwrap();
    assert!(proxy.bytes() > before);
}

#[test]
fn visibility_zero_releases_and_the_next_receive_counts_one_more() {
    let Some(sqs) = queue("release", |b| b.visibility_timeout(60 * SECOND)) else {
        return;
    };
    sqs.send(text(b"again")).unwrap();
    let first = receive_some(&*sqs, 1);
    assert_eq!(first[0].receive_count, ReceiveCount::Approximate(1));
    assert_empty(&*sqs); // leased for 60 s
    sqs.change_visibility(&first[0].handle, Duration::ZERO)
        .unwrap();
    let second = receive_some(&*sqs, 1);
    assert_eq!(second.len(), 1, "visible again at once");
    assert_eq!(second[0].receive_count, ReceiveCount::Approximate(2));
    assert_eq!(second[0].id, first[0].id);
    sqs.release(&second[0].handle).unwrap();
    let third = receive_some(&*sqs, 1);
    assert_eq!(third[0].receive_count, ReceiveCount::Approximate(3));
    sqs.delete(&third[0].handle).unwrap();
    assert_eq!(
        sqs.change_visibility(&third[0].handle, SECOND),
        Err(BackendError::Stale),
        "a deleted message's receipt"
    );
}

/// Waits real time: the send comes 300 ms into a 10 s long poll, which must end then.
#[test]
fn a_long_poll_returns_as_soon_as_a_message_arrives() {
    let Some(sqs) = queue("long-poll", |b| b) else {
        return;
    };
    let sqs = Arc::new(sqs);
    let receiver = Arc::clone(&sqs);
    let started = Instant::now();
    let polling = thread::spawn(move || {
        let mut got = Vec::new();
        receiver
            .receive(&mut got, 10, Duration::from_secs(10), None)
            .unwrap();
        (got, started.elapsed())
    });
    thread::sleep(Duration::from_millis(300));
    sqs.send(text(b"wake up")).unwrap();
    let (got, waited) = polling.join().unwrap();
    assert_eq!(got.len(), 1, "the poll returned with the message");
    assert_eq!(got[0].body, b"wake up");
    assert!(waited < Duration::from_secs(5), "returned after {waited:?}");
    sqs.delete(&got[0].handle).unwrap();
}

/// Four threads share one `Sqs` (one runtime, one client): every one of 200 messages is
/// received and deleted. Bounded: each thread stops after three empty one-second polls.
/// moto's racing receives can hand one message to two threads (see the `Sqs` docs), so a
/// message may be seen more than once; none may be missed.
#[test]
fn threads_sharing_one_backend_account_for_every_message() {
    let Some(sqs) = queue("threads", |b| b) else {
        return;
    };
    let sent: HashSet<String> = (0..200).map(|i| format!("m{i}")).collect();
    for chunk in sent.iter().collect::<Vec<_>>().chunks(50) {
        let batch = chunk.iter().map(|body| text(body.as_bytes())).collect();
        assert!(sqs.send_batch(batch).iter().all(Result::is_ok));
    }
    let sqs = Arc::new(sqs);
    let seen: Vec<Vec<String>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let sqs = Arc::clone(&sqs);
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    let mut empty = 0;
                    while empty < 3 {
                        let mut got = Vec::new();
                        sqs.receive(&mut got, 10, SECOND, None).unwrap();
                        empty = if got.is_empty() { empty + 1 } else { 0 };
                        let handles: Vec<_> = got.iter().map(|m| m.handle.clone()).collect();
                        for result in sqs.delete_batch(&handles) {
                            // A message handed to two receivers may be deleted by the other.
                            assert!(matches!(result, Ok(()) | Err(BackendError::Stale)));
                        }
                        seen.extend(got.iter().map(body_of));
                    }
                    seen
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let all: Vec<String> = seen.into_iter().flatten().collect();
    let distinct: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(distinct, sent, "every message was received");
    eprintln!(
        "{} receives for {} messages ({} seen twice, moto's racing receives)",
        all.len(),
        sent.len(),
        all.len() - sent.len()
    );
    assert_empty(&**sqs);
}

#[test]
fn bodies_and_attributes_round_trip_whatever_the_bytes() {
    let Some(sqs) = queue("bytes", |b| b) else {
        return;
    };
    let bodies: Vec<Vec<u8>> = vec![
        b"plain text".to_vec(),
        "ünïcödé 🦀".as_bytes().to_vec(),
        vec![0, 1, 2, 0xfe, 0xff],
        b"\x07 bell is not SQS text".to_vec(),
        Vec::new(),
    ];
    let batch = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| Outgoing::new(body.clone()).attribute("n", i.to_string()))
        .collect();
    assert!(sqs.send_batch(batch).iter().all(Result::is_ok));
    let mut got = receive_some(&*sqs, bodies.len());
    assert_eq!(got.len(), bodies.len());
    got.sort_by_key(|m| m.attributes[0].1.parse::<usize>().unwrap());
    for (i, message) in got.iter().enumerate() {
        assert_eq!(message.body, bodies[i]);
        assert_eq!(message.attributes, vec![("n".to_owned(), i.to_string())]);
        assert_eq!(message.group, None);
        sqs.delete(&message.handle).unwrap();
    }
}

#[test]
fn building_again_on_existing_queues_updates_them() {
    let Some(url) = endpoint() else {
        return;
    };
    let name = fresh_name("again");
    // Left for `again` (the same queue) to delete.
    let first = Sqs::builder(&name).endpoint_url(&url).build().unwrap();
    let again = Fresh::build(
        Sqs::builder(&name)
            .endpoint_url(&url)
            .visibility_timeout(5 * SECOND)
            .max_receives(3),
    );
    assert_eq!(again.url(), first.url(), "the existing queue is reused");
    assert_eq!(again.dead_letter_limit(), Some(3));
    assert!(again.dead_letter_queue().is_some());
    // The redrive policy the second build set is in force.
    again.send(text(b"twice")).unwrap();
    for _ in 1..=3 {
        let got = receive_some(&*again, 1);
        again.release(&got[0].handle).unwrap();
    }
    assert_empty(&*again);
    assert_eq!(
        receive_some(&*again.dead_letter_queue().unwrap(), 1).len(),
        1
    );
}

#[test]
fn bad_options_are_refused_before_connecting() {
    let builder = || Sqs::builder("ok").endpoint_url("http://127.0.0.1:9");
    let fatal = |result: Result<Sqs, BackendError>| matches!(result, Err(BackendError::Fatal(_)));
    assert!(fatal(
        Sqs::builder("has space")
            .endpoint_url("http://127.0.0.1:9")
            .build()
    ));
    assert!(fatal(builder().max_receives(0).build()));
    assert!(fatal(builder().max_receives(1001).build()));
    assert!(fatal(builder().visibility_timeout(Duration::ZERO).build()));
    assert!(matches!(
        builder()
            .visibility_timeout(Duration::from_secs(43_201))
            .build(),
        Err(BackendError::Limit {
            limit: Limit::VisibilityMillis,
            ..
        })
    ));
}

#[test]
fn an_unreachable_server_is_a_transient_error() {
    // A port nobody listens on: bound, then freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let result = Sqs::builder("unreachable")
        .endpoint_url(&format!("http://127.0.0.1:{port}"))
        .build();
    match result {
        Err(error) => assert!(error.is_transient(), "{error}"),
        Ok(_) => panic!("nothing listens on port {port}"),
    }
}
