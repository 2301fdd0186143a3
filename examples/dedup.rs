//! Deduplication: producers that retry (and an upstream that delivers twice) send every order
//! two or three times, from several threads at once; the dedup window lets each order through
//! once, and the worker pool charges each order once. Then the window, on a manual clock: an
//! id is forgotten after it.
//!
//! `cargo run --release --example dedup`

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use visq::{Consumer, DedupQueue, DedupSendError, ManualClock, Queue, Sent};

#[derive(Clone, Debug)]
struct Charge {
    order: u64,
    cents: u64,
}

const ORDERS: u64 = 50_000;
const PRODUCERS: u64 = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let queue: Arc<Queue<Charge>> = Arc::new(Queue::builder().capacity(65_536).build()?);
    // Room for every order id of one window (5 minutes by default).
    let charges = Arc::new(
        DedupQueue::builder(queue.clone())
            .capacity(65_536)
            .build()?,
    );

    // The worker pool charges each order it receives; a second charge would be a bug.
    let charged = Arc::new(Mutex::new(HashSet::new()));
    let total_cents = Arc::new(AtomicU64::new(0));
    let pool = {
        let (charged, total_cents) = (charged.clone(), total_cents.clone());
        Consumer::builder(queue.clone())
            .workers(2)
            .start(move |charge: &Charge| {
                let first = charged.lock().unwrap().insert(charge.order);
                assert!(first, "order {} charged twice", charge.order);
                total_cents.fetch_add(charge.cents, Ordering::Relaxed);
                Ok::<(), &str>(())
            })?
    };

    // Each producer sends the orders `p, p + PRODUCERS, ...` and, like an upstream that
    // delivers at least once, half of its neighbour's too: most orders arrive two or three
    // times, often at the same moment from two threads.
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let charges = charges.clone();
            thread::spawn(move || {
                let (mut new, mut duplicates) = (0u64, 0u64);
                for order in 0..ORDERS {
                    let mine = order % PRODUCERS == p;
                    let neighbours = order % PRODUCERS == (p + 1) % PRODUCERS && order % 2 == 0;
                    if !mine && !neighbours {
                        continue;
                    }
                    for _attempt in 0..if mine { 2 } else { 1 } {
                        let mut charge = Charge {
                            order,
                            cents: 100 + order % 900,
                        };
                        loop {
                            match charges.send(order, charge) {
                                Ok(Sent::New(_)) => new += 1,
                                Ok(Sent::Duplicate(_)) => duplicates += 1,
                                // The queue is full (the pool is behind) or a racing send of
                                // the same order is stuck: try again with the body we got back.
                                Err(
                                    DedupSendError::Full(back) | DedupSendError::Contended(back),
                                ) => {
                                    charge = back;
                                    thread::yield_now();
                                    continue;
                                }
                                Err(other) => panic!("order {order}: {other}"),
                            }
                            break;
                        }
                    }
                }
                (new, duplicates)
            })
        })
        .collect();
    let (mut new, mut duplicates) = (0, 0);
    for producer in producers {
        let (n, d) = producer.join().unwrap();
        new += n;
        duplicates += d;
    }
    while pool.stats().processed < ORDERS {
        thread::sleep(Duration::from_millis(1));
    }
    pool.stop(Duration::from_secs(5));

    println!(
        "{} sends from {PRODUCERS} threads: {new} orders queued, {duplicates} duplicates suppressed",
        new + duplicates
    );
    let expected_cents: u64 = (0..ORDERS).map(|order| 100 + order % 900).sum();
    println!(
        "the pool charged {} orders, each once, {} cents in all; dedup stats: {:?}",
        charged.lock().unwrap().len(),
        total_cents.load(Ordering::Relaxed),
        charges.stats()
    );
    assert_eq!(total_cents.load(Ordering::Relaxed), expected_cents);
    assert_eq!(new, ORDERS);
    assert_eq!(charged.lock().unwrap().len() as u64, ORDERS);
    assert_eq!(queue.stats().sent, ORDERS);

    // The window, on a manual clock shared by the queue and the dedup table.
    let clock = ManualClock::new();
    let queue: Arc<Queue<&str>> = Arc::new(Queue::builder().clock(clock.clone()).build()?);
    let mail = DedupQueue::builder(queue)
        .window(Duration::from_secs(300))
        .clock(clock.clone())
        .build()?;
    let first = mail.send_keyed("welcome:alice", "Welcome, Alice!")?;
    clock.advance(Duration::from_secs(299));
    let retry = mail.send_keyed("welcome:alice", "Welcome, Alice!")?;
    clock.advance(Duration::from_secs(1));
    let later = mail.send_keyed("welcome:alice", "Welcome back, Alice!")?;
    println!("at 0 s: {first:?}; at 299 s: {retry:?}; at 300 s, the window over: {later:?}");
    assert_eq!(retry, Sent::Duplicate(first.id()));
    assert!(!later.is_duplicate());
    println!("done in {:.2?}", started.elapsed());
    Ok(())
}
