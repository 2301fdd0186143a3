//! A batch consumer: messages handled in batches of up to 100, or whatever arrived within
//! 150 ms; each message in a batch succeeds or fails on its own. The gather is longer than half
//! the 200 ms lease: the pool's heartbeat extends the leases of a batch while it gathers, so
//! none expires under it.
//!
//! `cargo run --release --example batch_consumer`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use visq::{Backoff, Consumer, Lease, Queue};

const ROWS: u64 = 50_000;
const VISIBILITY: Duration = Duration::from_millis(200);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: Arc<Queue<u64>> = Arc::new(
        Queue::builder()
            .capacity(4096)
            .visibility_timeout(VISIBILITY)
            .build()?,
    );
    let batches = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writer = {
        let batches = batches.clone();
        Consumer::builder(rows.clone())
            .workers(2)
            .backoff(Backoff {
                base: Duration::from_millis(1),
                ..Backoff::default()
            })
            .start_batch(
                100,
                Duration::from_millis(150),
                move |batch: &[Lease<'_, u64>]| {
                    batches.fetch_add(1, Ordering::Relaxed);
                    // A bulk insert where a row fails the first time it is tried.
                    batch
                        .iter()
                        .map(|row| {
                            let bad = *row.body() % 997 == 0 && row.receive_count() == 1;
                            if bad {
                                Err("constraint violation")
                            } else {
                                Ok(())
                            }
                        })
                        .collect()
                },
            )?
    };

    // A producer that sends in bursts, so batches are sometimes cut by size, sometimes by time.
    for row in 0..ROWS {
        let mut row = row;
        while let Err(full) = rows.send(row) {
            row = full.into_inner();
            thread::yield_now();
        }
        if row % 10_000 == 0 {
            thread::sleep(Duration::from_millis(10));
        }
    }
    while writer.stats().processed < ROWS {
        thread::sleep(Duration::from_millis(1));
    }
    writer.stop(Duration::from_secs(5));
    let stats = writer.stats();
    let batches = batches.load(Ordering::Relaxed);
    println!(
        "{ROWS} rows in {batches} batches (about {} a batch) in {:?}; {} failed once and were retried",
        ROWS / batches as u64,
        started.elapsed(),
        stats.retried
    );
    assert_eq!(stats.retried, ROWS.div_ceil(997));
    assert_eq!(rows.stats().deleted, ROWS);
    assert_eq!(
        rows.stats().expired,
        0,
        "a lease expired while its batch gathered"
    );
    assert_eq!(stats.lease_lost, 0);
    Ok(())
}
