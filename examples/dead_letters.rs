//! Dead letters, start to finish: a worker pool whose handler has a bug that rejects some
//! orders; those "poison" orders end up in the dead-letter queue with the handler's error as
//! their reason; we inspect them without receiving them, fix the bug, redrive them back to
//! the orders queue, and watch them go through.
//!
//! `cargo run --release --example dead_letters`

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use visq::{Backoff, Consumer, DeathCause, Queue};

/// Two attempts per order, then it is dead.
const MAX_RECEIVES: u32 = 2;

#[derive(Clone, Debug)]
struct Order {
    number: u32,
    /// Negative for a return, which the buggy handler does not understand.
    quantity: i32,
}

/// The handler's failure; its `Display` text becomes the dead letter's reason.
struct Rejected(String);

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dead_letters: Arc<Queue<Order>> = Arc::new(Queue::builder().capacity(64).build()?);
    let orders: Arc<Queue<Order>> = Arc::new(
        Queue::builder()
            .capacity(256)
            .visibility_timeout(Duration::from_secs(5))
            .dead_letter(dead_letters.clone(), MAX_RECEIVES)
            .build()?,
    );

    // Orders 1..=20; three of them are returns.
    let returns = [4, 11, 17];
    for number in 1..=20 {
        let quantity = if returns.contains(&number) { -1 } else { 3 };
        orders.send(Order { number, quantity })?;
    }

    // The pool: handled counts each order that went through, by number.
    let handled: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let bug_fixed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let pool = {
        let (handled, bug_fixed) = (handled.clone(), bug_fixed.clone());
        Consumer::builder(orders.clone())
            .workers(2)
            .poll_wait(Duration::from_millis(5)) // notice the stop quickly
            .backoff(Backoff {
                base: Duration::from_millis(2), // retry soon: this is a demo
                factor: 2.0,
                cap: Duration::from_millis(10),
                jitter: 0.0,
            })
            .start(move |order: &Order| {
                if order.quantity < 0 && !bug_fixed.load(Ordering::SeqCst) {
                    return Err(Rejected(format!(
                        "order {}: quantity {} is not positive",
                        order.number, order.quantity
                    )));
                }
                *handled.lock().unwrap().entry(order.number).or_default() += 1;
                Ok(())
            })?
    };

    // The good orders go through; each return fails twice and dies.
    wait_until(|| {
        let stats = pool.stats();
        stats.processed == 17 && stats.dead_lettered == 3
    });
    thread::sleep(Duration::from_millis(20)); // let the dead letters age a little

    // Inspect the dead letters without receiving them: bodies, records, ages.
    println!("dead letters after {:?}:", started.elapsed());
    let letters = dead_letters.dead_letters(usize::MAX);
    for letter in &letters {
        let reason = match &letter.cause {
            DeathCause::Released {
                reason: Some(reason),
            } => reason.to_string(),
            DeathCause::Released { reason: None } => "released, no reason".to_string(),
            DeathCause::Expired => "lease expired".to_string(),
            _ => "other".to_string(),
        };
        assert_eq!(letter.source, orders.id());
        assert_eq!(letter.receive_count, MAX_RECEIVES);
        println!(
            "  order {:>2} (id {:>2} in {}): received {}x, dead for {:>5.1} ms: {reason}",
            letter.body.number,
            letter.id.get(),
            letter.source,
            letter.receive_count,
            letter.dead_for.as_secs_f64() * 1e3,
        );
    }
    let mut dead: Vec<u32> = letters.iter().map(|l| l.body.number).collect();
    dead.sort_unstable();
    assert_eq!(dead, returns);
    // Looking did not receive them.
    assert_eq!(dead_letters.stats().received, 0);

    // Fix the bug, then send the dead letters back where they died, as new messages.
    bug_fixed.store(true, Ordering::SeqCst);
    let redriven = dead_letters.redrive(&orders, Some(orders.id()), usize::MAX);
    println!(
        "redriven: {} (refused: {:?})",
        redriven.moved, redriven.refused
    );
    assert_eq!((redriven.moved, redriven.refused), (3, None));

    wait_until(|| pool.stats().processed == 20);
    assert!(
        pool.stop(Duration::from_secs(5)),
        "the pool stopped in time"
    );
    let stats = pool.stats();
    println!("pool: {stats:?}");
    println!("done in {:?}", started.elapsed());

    // Every order went through exactly once; nothing is left anywhere.
    let handled = handled.lock().unwrap();
    assert_eq!(handled.len(), 20);
    assert!(handled.values().all(|&n| n == 1), "{handled:?}");
    assert_eq!(
        (
            stats.processed,
            stats.failed,
            stats.retried,
            stats.dead_lettered
        ),
        (20, 6, 3, 3)
    );
    let (o, d) = (orders.stats(), dead_letters.stats());
    assert_eq!((o.ready, o.delayed, o.in_flight, o.deleted), (0, 0, 0, 20));
    assert_eq!((d.ready, d.redriven, d.deleted), (0, 3, 0));
    Ok(())
}

/// Polls `done` every millisecond (wall clock); gives up after five seconds.
fn wait_until(mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < give_up, "timed out");
        thread::sleep(Duration::from_millis(1));
    }
}
