//! Request-reply: correlation, many requests in flight, and late replies that are counted, not
//! misdelivered. Request timeouts are wall-clock by design; the waits here are bounded.

mod common;

use common::wait_until;
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use visq::{
    responder, Consumer, Queue, Reply, Request, RequestError, Requester, SendError, TimedOut,
};

type Requests = Arc<Queue<Request<u64, u64>>>;

const LONG: Duration = Duration::from_secs(10);

fn queues(capacity: usize) -> (Requests, Arc<Queue<Reply<u64>>>) {
    let requests = Arc::new(Queue::builder().capacity(capacity).build().unwrap());
    let replies = Arc::new(Queue::builder().capacity(capacity).build().unwrap());
    (requests, replies)
}

/// Serves one request by hand with `f`, deleting it once replied.
fn serve_one(requests: &Queue<Request<u64, u64>>, f: impl Fn(u64) -> u64) {
    let lease = requests.receive_lease(LONG).expect("a request");
    lease.body().reply(f(*lease.body().body())).unwrap();
    lease.ack().unwrap();
}

#[test]
fn a_request_gets_its_reply() {
    let (requests, replies) = queues(16);
    let server = Consumer::builder(requests.clone())
        .start(responder(|n: &u64| n + 1))
        .unwrap();
    let client = Requester::new(requests.clone(), replies).unwrap();
    assert_eq!(client.request(41, LONG), Ok(42));
    assert_eq!((client.in_flight(), client.late_replies()), (0, 0));
    assert!(server.stop(LONG));
    assert_eq!(requests.stats().deleted, 1);
}

#[test]
fn many_threads_with_many_requests_each_get_their_own_replies() {
    let (requests, replies) = queues(1024);
    let server = Consumer::builder(requests.clone())
        .workers(4)
        .start(responder(|n: &u64| n * 3))
        .unwrap();
    let client = Requester::new(requests, replies).unwrap();
    thread::scope(|scope| {
        for t in 0..8 {
            let client = &client;
            scope.spawn(move || {
                for i in 0..50 {
                    let n = t * 1000 + i;
                    assert_eq!(client.request(n, LONG), Ok(n * 3));
                }
            });
        }
    });
    assert!(server.stop(LONG));
    assert_eq!(server.stats().processed, 400);
    assert_eq!(client.late_replies(), 0);
}

#[test]
fn replies_out_of_order_reach_the_right_requests() {
    let (requests, replies) = queues(256);
    let client = Requester::new(requests.clone(), replies).unwrap();
    let pending: Vec<_> = (0..100).map(|n| client.send(n).unwrap()).collect();
    assert_eq!(client.in_flight(), 100);
    // Reply to all of them, newest first.
    let mut received: Vec<_> = std::iter::from_fn(|| requests.try_receive_lease()).collect();
    received.reverse();
    for lease in received {
        lease.body().reply(lease.body().body() + 1000).unwrap();
        lease.ack().unwrap();
    }
    for (n, reply) in pending.into_iter().enumerate() {
        assert_eq!(reply.wait(LONG), Ok(n as u64 + 1000));
    }
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn a_reply_after_a_timeout_is_counted_late_not_misdelivered() {
    let (requests, replies) = queues(16);
    let client = Requester::new(requests.clone(), replies).unwrap();
    // Nobody serves yet: the requester gives up.
    assert_eq!(
        client.request(1, Duration::from_millis(10)),
        Err(RequestError::TimedOut)
    );
    assert_eq!(client.in_flight(), 0);
    // The next request is in flight when the late reply (2) comes: it must get its own (20).
    let next = client.send(2).unwrap();
    serve_one(&requests, |n| n * 2);
    wait_until("the late reply is counted", || client.late_replies() == 1);
    serve_one(&requests, |n| n * 10);
    assert_eq!(next.wait(LONG), Ok(20));
    assert_eq!(client.late_replies(), 1);
}

#[test]
fn dropping_a_pending_reply_gives_up_on_it() {
    let (requests, replies) = queues(16);
    let client = Requester::new(requests.clone(), replies.clone()).unwrap();
    drop(client.send(5).unwrap());
    assert_eq!(client.in_flight(), 0);
    serve_one(&requests, |n| n);
    wait_until("the late reply is counted", || client.late_replies() == 1);
    assert_eq!(
        replies.stats().deleted,
        1,
        "the late reply is not left behind"
    );
}

#[test]
fn a_wait_that_times_out_returns_timed_out() {
    let (requests, replies) = queues(16);
    let client = Requester::new(requests, replies).unwrap();
    let pending = client.send(5).unwrap();
    assert_eq!(pending.wait(Duration::from_millis(1)), Err(TimedOut));
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn a_full_request_queue_hands_the_body_back() {
    let (requests, replies) = queues(1);
    let client = Requester::new(requests, replies).unwrap();
    let _first = client.send(1).unwrap();
    assert_eq!(
        client.request(2, LONG),
        Err(RequestError::Send(SendError::Full(2)))
    );
    assert_eq!(client.in_flight(), 1);
}

#[test]
fn a_requester_gone_settles_its_requests_without_a_reply() {
    let (requests, replies) = queues(16);
    let client = Requester::new(requests.clone(), replies.clone()).unwrap();
    drop(client.send(1).unwrap());
    drop(client);
    assert!(replies.is_closed());
    let lease = requests.try_receive_lease().unwrap();
    assert_eq!(lease.body().reply(2), Err(SendError::Closed(2)));
    // The responder adapter settles such a request: nobody waits for it.
    let serve = responder(|n: &u64| n * 2);
    assert_eq!(serve(lease.body()), Ok(()));
}

/// Issue 9, item 14: a requester on a closed reply queue could never get a reply (every
/// request timed out while responders, seeing `Closed`, deleted the requests).
#[test]
fn a_closed_reply_queue_is_refused() {
    let (requests, replies) = queues(16);
    replies.close();
    let refused = Requester::new(requests, replies).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    assert!(refused.to_string().contains("closed"), "{refused}");
}

/// Issue 9, item 14: two requesters sharing one reply queue both numbered their requests from
/// 0, so a reply that the other requester's dispatcher took was delivered to the wrong
/// request. Now a misrouted reply matches nothing there and is counted late.
#[test]
fn requesters_sharing_a_reply_queue_never_get_each_others_replies() {
    const EACH: u64 = 50;
    let (requests, replies) = queues(4 * EACH as usize);
    let a = Requester::new(requests.clone(), replies.clone()).unwrap();
    let b = Requester::new(requests.clone(), replies).unwrap();
    // Bodies name their requester: a's are 0.., b's 1000..; the reply is the body itself.
    // The order alternates (b0 a0 a1 b1 b2 a2 ...), so that whichever dispatcher takes a
    // reply, it often finds its own request of the same number still waiting.
    let mut pending = Vec::new();
    for n in 0..EACH {
        let order = if n % 2 == 0 {
            [(&b, 1000 + n), (&a, n)]
        } else {
            [(&a, n), (&b, 1000 + n)]
        };
        for (requester, body) in order {
            pending.push((body, requester.send(body).unwrap()));
        }
    }
    for _ in 0..2 * EACH {
        serve_one(&requests, |n| n);
    }
    // Every reply is routed by one of the two dispatchers, delivered or counted late.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut delivered = 0;
    for (body, reply) in pending {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Ok(reply) = reply.wait(left) {
            assert_eq!(reply, body, "a reply reached another requester's request");
            delivered += 1;
        }
    }
    let late = a.late_replies() + b.late_replies();
    assert_eq!(
        delivered + late,
        2 * EACH,
        "delivered {delivered}, late {late}"
    );
}
