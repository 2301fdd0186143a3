//! The typed layer: `Typed` over a backend of bytes (here a `Queue<Vec<u8>>` in process, on a
//! `ManualClock`), with the `Utf8` codec, a codec of the test's own that can fail to encode,
//! and (with the cargo feature `json`) the `Json` codec. A body that does not decode never
//! reaches a handler: it goes to the dead-letter queue with the decode error as its reason,
//! or is released and counted where there is none.

mod common;
#[path = "support/limited_backend.rs"]
#[allow(dead_code)]
mod limited_backend;

use common::wait_until;
use limited_backend::Limited;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use visq::{
    Backend, BackendError, Codec, Consumer, DeathCause, DecodeError, EncodeError, Incoming,
    ManualClock, Outgoing, Queue, Typed, Utf8,
};

const TICK: Duration = Duration::from_millis(1);
const VISIBILITY: Duration = Duration::from_secs(10);

type Bytes = Arc<Queue<Vec<u8>>>;

fn bytes_queue(clock: &ManualClock, capacity: usize) -> Bytes {
    Arc::new(
        Queue::builder()
            .capacity(capacity)
            .visibility_timeout(VISIBILITY)
            .tick(TICK)
            .clock(clock.clone())
            .build()
            .unwrap(),
    )
}

/// A bytes queue with a dead-letter queue after 5 receives, and that queue.
fn bytes_queue_with_dlq(clock: &ManualClock) -> (Bytes, Bytes) {
    let dlq = bytes_queue(clock, 64);
    let q = Queue::builder()
        .capacity(64)
        .visibility_timeout(VISIBILITY)
        .tick(TICK)
        .dead_letter(dlq.clone(), 5)
        .clock(clock.clone())
        .build()
        .unwrap();
    (Arc::new(q), dlq)
}

type Strings = Typed<Queue<Vec<u8>>, Utf8, String>;

fn receive_all<T>(backend: &dyn Backend<Body = T>) -> Vec<Incoming<T>> {
    let mut out = Vec::new();
    backend.receive(&mut out, 64, Duration::ZERO, None).unwrap();
    out
}

#[test]
fn values_round_trip_with_their_options() {
    let clock = ManualClock::new();
    let bytes = bytes_queue(&clock, 64);
    let typed: Strings = Typed::new(bytes.clone(), Utf8);
    let sent = typed.send_batch(vec![
        Outgoing::new("now".to_string()),
        Outgoing::new("later".to_string()).delay(Duration::from_secs(5)),
    ]);
    assert!(sent.iter().all(Result::is_ok));
    // On the wire: UTF-8 bytes.
    assert_eq!(bytes.stats().ready, 1);
    let now = receive_all(&typed);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].body, "now");
    assert_eq!(now[0].receive_count.at_least(), 1);
    typed.delete(&now[0].handle).unwrap();
    clock.advance(Duration::from_secs(5) + TICK);
    let later = receive_all(&typed);
    assert_eq!(later[0].body, "later");
    // Settlements pass through: a release makes it visible again, counted.
    typed.release(&later[0].handle).unwrap();
    assert_eq!(receive_all(&typed)[0].receive_count.at_least(), 2);
    assert_eq!(typed.undecodable(), 0);
}

#[test]
fn an_undecodable_body_goes_to_the_dead_letter_queue_with_the_reason() {
    let clock = ManualClock::new();
    let (bytes, dlq) = bytes_queue_with_dlq(&clock);
    let typed: Strings = Typed::new(bytes.clone(), Utf8);
    bytes.send(b"good".to_vec()).unwrap();
    bytes.send(vec![0xff, 0xfe]).unwrap();
    bytes.send(b"also good".to_vec()).unwrap();
    let received = receive_all(&typed);
    let bodies: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["good", "also good"]);
    assert_eq!((typed.undecodable(), typed.undecodable_released()), (1, 0));
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body, vec![0xff, 0xfe]);
    match &letters[0].cause {
        DeathCause::Rejected { reason } => {
            assert!(
                reason.starts_with("body does not decode: not UTF-8"),
                "{reason}"
            )
        }
        other => panic!("dead-lettered as {other:?}"),
    }
    // Its lease ended there: only the two good ones are in flight.
    assert_eq!(bytes.stats().in_flight, 2);
}

#[test]
fn a_receive_that_released_a_poison_body_waits_out_its_wait() {
    let clock = ManualClock::new();
    let bytes = bytes_queue(&clock, 64);
    let typed: Strings = Typed::new(bytes.clone(), Utf8);
    bytes.send(vec![0xc3]).unwrap();
    let wait = Duration::from_millis(30);
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    assert_eq!(typed.receive(&mut out, 10, wait, None).unwrap(), 0);
    assert!(
        started.elapsed() >= wait,
        "returned after {:?}",
        started.elapsed()
    );
    assert_eq!(typed.undecodable(), 1, "received it once, not in a loop");
}

#[test]
fn without_a_dead_letter_queue_an_undecodable_body_is_released_and_counted() {
    let clock = ManualClock::new();
    let bytes = bytes_queue(&clock, 64);
    let typed: Strings = Typed::new(bytes.clone(), Utf8);
    bytes.send(vec![0xc3]).unwrap();
    assert!(receive_all(&typed).is_empty());
    assert!(receive_all(&typed).is_empty());
    assert_eq!((typed.undecodable(), typed.undecodable_released()), (2, 2));
    // Still there, visible, each look counted.
    let raw = bytes.try_receive().unwrap();
    assert_eq!(
        (raw.body().as_slice(), raw.receive_count()),
        (&[0xc3][..], 3)
    );
}

/// `u32`s as decimal text; 13 cannot be encoded.
struct Decimal;

impl Codec<u32> for Decimal {
    fn encode(&self, value: &u32) -> Result<Vec<u8>, EncodeError> {
        if *value == 13 {
            return Err(EncodeError::new("unlucky"));
        }
        Ok(value.to_string().into_bytes())
    }

    fn decode(&self, bytes: &[u8]) -> Result<u32, DecodeError> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| DecodeError::new("not a decimal u32"))
    }
}

#[test]
fn a_value_that_does_not_encode_is_handed_back_and_the_rest_are_sent() {
    let clock = ManualClock::new();
    let bytes = bytes_queue(&clock, 2);
    let typed: Typed<Queue<Vec<u8>>, Decimal, u32> = Typed::new(bytes.clone(), Decimal);
    let results = typed.send_batch(vec![
        Outgoing::new(1),
        Outgoing::new(13),
        Outgoing::new(2),
        Outgoing::new(3), // the queue holds 2: refused by the backend
    ]);
    assert!(results[0].is_ok() && results[2].is_ok());
    let unlucky = results[1].as_ref().unwrap_err();
    assert_eq!(unlucky.body, 13);
    assert!(
        matches!(&unlucky.error, BackendError::Fatal(why) if why.contains("unlucky")),
        "{unlucky:?}"
    );
    let full = results[3].as_ref().unwrap_err();
    assert_eq!((full.body, &full.error), (3, &BackendError::Full));
    assert_eq!(bytes.stats().ready, 2);
    let bodies: Vec<u32> = receive_all(&typed).into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, [1, 2]);
}

#[test]
fn the_dead_letter_queue_is_typed_too() {
    let clock = ManualClock::new();
    let (bytes, _dlq) = bytes_queue_with_dlq(&clock);
    let typed: Strings = Typed::new(bytes.clone(), Utf8);
    typed.send(Outgoing::new("doomed".to_string())).unwrap();
    let got = receive_all(&typed);
    typed.dead_letter(&got[0].handle, "gave up").unwrap();
    let dead = typed.dead_letter_queue().unwrap();
    assert_eq!(receive_all(&*dead)[0].body, "doomed");
    assert_eq!(typed.dead_letter_limit(), Some(5));
}

#[test]
fn a_worker_pool_never_sees_an_undecodable_body() {
    let clock = ManualClock::new();
    let (bytes, dlq) = bytes_queue_with_dlq(&clock);
    let typed: Arc<dyn Backend<Body = String>> = Arc::new(Strings::new(bytes.clone(), Utf8));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let seen = seen.clone();
        Consumer::backend_builder(typed.clone())
            .visibility_timeout(VISIBILITY)
            .poll_wait(Duration::from_millis(5))
            .clock(clock.clone())
            .start(move |body: &String| {
                seen.lock().unwrap().push(body.clone());
                Ok::<(), &str>(())
            })
            .unwrap()
    };
    for n in 0..10 {
        typed.send(Outgoing::new(format!("job {n}"))).unwrap();
        if n % 3 == 0 {
            bytes.send(vec![0x80, n]).unwrap();
        }
    }
    wait_until("the good ones are processed", || {
        consumer.stats().processed == 10
    });
    wait_until("the bad ones are dead", || dlq.stats().ready == 4);
    assert!(consumer.stop(Duration::from_secs(10)));
    assert_eq!(seen.lock().unwrap().len(), 10);
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|body| body.starts_with("job ")));
    let stats = consumer.stats();
    assert_eq!(
        (stats.failed, stats.body_panics, stats.receive_errors),
        (0, 0, 0)
    );
    assert_eq!((bytes.stats().ready, bytes.stats().in_flight), (0, 0));
}

#[test]
fn on_a_backend_without_dead_letters_the_pool_keeps_going() {
    let clock = ManualClock::new();
    let bytes = bytes_queue(&clock, 64);
    let limited: Arc<dyn Backend<Body = Vec<u8>>> = Arc::new(Limited::like_rabbitmq(bytes.clone()));
    let typed = Arc::new(Typed::<_, _, String>::new(limited, Utf8));
    let consumer = Consumer::backend_builder(typed.clone() as Arc<dyn Backend<Body = String>>)
        .poll_wait(Duration::from_millis(5))
        .clock(clock.clone())
        .start(|_: &String| Ok::<(), &str>(()))
        .unwrap();
    let started = std::time::Instant::now();
    bytes.send(vec![0xff]).unwrap();
    typed.send(Outgoing::new("fine".to_string())).unwrap();
    wait_until("the good one is processed", || {
        consumer.stats().processed == 1
    });
    wait_until("the bad one is seen again", || typed.undecodable() >= 3);
    assert!(consumer.stop(Duration::from_secs(10)));
    let elapsed = started.elapsed();
    assert_eq!(typed.undecodable(), typed.undecodable_released());
    // No hot loop: a receive that released it slept out its 5 ms wait.
    let looks = typed.undecodable();
    assert!(
        looks <= 2 + elapsed.as_millis() as u64 / 5,
        "{looks} looks in {elapsed:?}"
    );
    assert_eq!(bytes.stats().deleted, 1);
}

#[cfg(feature = "json")]
mod json {
    use super::*;
    use std::collections::BTreeMap;
    use visq::Json;

    type Jobs = Typed<Queue<Vec<u8>>, Json, (u32, String)>;

    #[test]
    fn values_travel_as_json() {
        let clock = ManualClock::new();
        let (bytes, dlq) = bytes_queue_with_dlq(&clock);
        let typed: Jobs = Typed::new(bytes.clone(), Json);
        typed
            .send(Outgoing::new((7, "resize".to_string())))
            .unwrap();
        bytes.send(b"{\"not\": \"a tuple\"}".to_vec()).unwrap();
        let received = receive_all(&typed);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].body, (7, "resize".to_string()));
        let letters = dlq.dead_letters(10);
        assert_eq!(letters.len(), 1);
        assert!(matches!(&letters[0].cause, DeathCause::Rejected { reason }
            if reason.starts_with("body does not decode: invalid type: map")));
        // On the wire, plain JSON.
        typed.release(&received[0].handle).unwrap();
        let raw = bytes.try_receive().unwrap();
        assert_eq!(raw.body().as_slice(), b"[7,\"resize\"]");
    }

    #[test]
    fn a_value_json_cannot_write_is_handed_back() {
        let clock = ManualClock::new();
        let bytes = bytes_queue(&clock, 8);
        type PairKeyed = BTreeMap<(u8, u8), u8>;
        let typed: Typed<Queue<Vec<u8>>, Json, PairKeyed> = Typed::new(bytes.clone(), Json);
        let value = BTreeMap::from([((1, 2), 3)]);
        let refused = typed.send(Outgoing::new(value.clone())).unwrap_err();
        assert_eq!(refused.body, value);
        assert!(matches!(refused.error, BackendError::Fatal(_)));
        assert_eq!(bytes.stats().sent, 0);
    }
}
