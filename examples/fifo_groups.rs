//! FIFO message groups: each customer's orders go through their steps in order, one step at a
//! time, while a pool of four workers serves the customers in parallel. The group is the
//! customer; the pool needs no option for it. Prints each customer's steps as processed and
//! checks them against the send order.
//!
//! `cargo run --release --example fifo_groups`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use visq::{Consumer, Queue, SendOptions};

const CUSTOMERS: [&str; 6] = ["ada", "bo", "cy", "dee", "eli", "fay"];
const STEPS: [&str; 4] = ["placed", "paid", "packed", "shipped"];
const ORDERS_PER_CUSTOMER: u32 = 3;

/// One step of one order: what the queue carries.
#[derive(Clone, Debug)]
struct Event {
    customer: &'static str,
    order: u32,
    step: &'static str,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Lanes: at least 4x the customers with messages at once (see `Builder::message_groups`).
    let events: Arc<Queue<Event>> = Arc::new(
        Queue::builder()
            .capacity(1024)
            .message_groups(4 * CUSTOMERS.len())
            .build()?,
    );
    let mut sent = 0u64;
    for order in 1..=ORDERS_PER_CUSTOMER {
        for step in STEPS {
            for customer in CUSTOMERS {
                let event = Event {
                    customer,
                    order,
                    step,
                };
                events.send_with(event, &SendOptions::new().group(customer))?;
                sent += 1;
            }
        }
    }

    let processed: Arc<Mutex<BTreeMap<&str, Vec<String>>>> = Arc::default();
    // Customers being served right now, and the most at once.
    let (running, most_at_once) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    let pool = {
        let (processed, running, most_at_once) =
            (processed.clone(), running.clone(), most_at_once.clone());
        Consumer::builder(events.clone())
            .workers(4)
            .start(move |event: &Event| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most_at_once.fetch_max(now, Ordering::SeqCst);
                // A little work, so that customers visibly overlap.
                thread::sleep(Duration::from_micros(200));
                running.fetch_sub(1, Ordering::SeqCst);
                let step = format!("{}:{}", event.order, event.step);
                processed
                    .lock()
                    .unwrap()
                    .entry(event.customer)
                    .or_default()
                    .push(step);
                Ok::<(), &str>(())
            })?
    };
    while pool.stats().processed < sent {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the pool is stuck"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert!(pool.stop(Duration::from_secs(5)));
    println!(
        "{sent} events of {} customers in {:?}",
        CUSTOMERS.len(),
        started.elapsed()
    );

    let expected: Vec<String> = (1..=ORDERS_PER_CUSTOMER)
        .flat_map(|order| STEPS.iter().map(move |step| format!("{order}:{step}")))
        .collect();
    for (customer, steps) in processed.lock().unwrap().iter() {
        println!("{customer:>4}: {}", steps.join(" "));
        assert_eq!(steps, &expected, "{customer}'s steps in send order");
    }
    println!(
        "every customer's steps in order; up to {} customers served at once",
        most_at_once.load(Ordering::SeqCst)
    );
    Ok(())
}
