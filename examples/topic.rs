//! Pub/sub: one topic, three subscriptions with their own queues and settings; a filter; a
//! subscription that fills up is named, and the body comes back to retry just there.
//!
//! `cargo run --release --example topic`

use std::thread;
use std::time::Duration;
use visq::{Consumer, Queue, SubscriptionId, Topic};

#[derive(Clone, Debug)]
struct Order {
    id: u32,
    amount: u32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orders: Topic<Order> = Topic::new();
    let billing = orders.subscribe(Queue::builder().capacity(10_000))?;
    let fraud = orders.subscribe_filtered(
        Queue::builder()
            .capacity(1_000)
            .visibility_timeout(Duration::from_secs(300)),
        |order: &Order| order.amount >= 900,
    )?;
    // A slow subscriber with little room.
    let audit = orders.subscribe(Queue::builder().capacity(16))?;
    let auditor = Consumer::builder(audit.queue().clone()).start(|_: &Order| {
        thread::sleep(Duration::from_micros(50));
        Ok::<(), &str>(())
    })?;

    let mut retries = 0;
    for id in 0..2_000 {
        let mut order = Order {
            id,
            amount: id * 7 % 1000,
        };
        // Publish; where it was refused, retry there only, with the body that came back.
        let mut targets: Option<Vec<SubscriptionId>> = None;
        loop {
            let published = match &targets {
                None => orders.publish(order),
                Some(ids) => orders.publish_to(ids, order),
            };
            match published {
                Ok(_) => break,
                Err(refused) => {
                    retries += 1;
                    targets = Some(refused.refused_ids());
                    order = refused.into_inner();
                    thread::sleep(Duration::from_micros(100));
                }
            }
        }
    }
    while auditor.stats().processed < 2_000 {
        thread::sleep(Duration::from_millis(1));
    }
    auditor.stop(Duration::from_secs(5));

    let big = fraud.try_receive().expect("some orders are big");
    println!(
        "first big order: #{} for {}",
        big.body().id,
        big.body().amount
    );
    println!(
        "billing got {}, fraud got {}, audit handled {}; {retries} publishes were retried for a full audit queue",
        billing.stats().ready,
        fraud.stats().ready + fraud.stats().in_flight,
        auditor.stats().processed,
    );
    assert_eq!(billing.stats().ready, 2_000);
    Ok(())
}
