//! Request-reply: a pool of responders, eight client threads with requests in flight at once,
//! and a reply that comes after its requester gave up, counted instead of misdelivered.
//!
//! `cargo run --release --example request_reply`

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use visq::{responder, Consumer, Queue, Reply, Request, RequestError, Requester};

const CLIENTS: u64 = 8;
const REQUESTS: u64 = 2_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: Arc<Queue<Request<u64, u64>>> =
        Arc::new(Queue::builder().capacity(4096).build()?);
    let replies: Arc<Queue<Reply<u64>>> = Arc::new(Queue::builder().capacity(4096).build()?);

    let server = Consumer::builder(requests.clone())
        .workers(4)
        .start(responder(|n: &u64| {
            if *n == u64::MAX {
                thread::sleep(Duration::from_millis(50)); // too slow for its requester
            }
            n.wrapping_mul(*n)
        }))?;
    let client = Requester::new(requests, replies)?;

    let started = Instant::now();
    thread::scope(|scope| {
        for c in 0..CLIENTS {
            let client = &client;
            scope.spawn(move || {
                for i in 0..REQUESTS {
                    let n = c * REQUESTS + i;
                    let squared = client.request(n, Duration::from_secs(5)).expect("a reply");
                    assert_eq!(squared, n * n, "a reply for another request");
                }
            });
        }
    });
    let elapsed = started.elapsed();
    println!(
        "{} round trips from {CLIENTS} threads in {elapsed:?} ({:.0} a second)",
        CLIENTS * REQUESTS,
        (CLIENTS * REQUESTS) as f64 / elapsed.as_secs_f64()
    );

    // A requester that does not wait long enough.
    let gave_up = client.request(u64::MAX, Duration::from_millis(5));
    assert_eq!(gave_up, Err(RequestError::TimedOut));
    while client.late_replies() == 0 {
        thread::sleep(Duration::from_millis(1));
    }
    println!("late replies counted: {}", client.late_replies());
    assert_eq!(client.request(3, Duration::from_secs(5)), Ok(9));
    server.stop(Duration::from_secs(5));
    Ok(())
}
