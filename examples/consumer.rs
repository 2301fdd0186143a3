//! A worker pool: four threads, retries with exponential backoff, a dead-letter queue for the
//! messages that never succeed, a panicking handler that does not kill its worker, a slow
//! handler kept alive by the heartbeat, and a graceful stop.
//!
//! `cargo run --release --example consumer`

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use visq::{Backoff, Consumer, Queue};

const JOBS: u32 = 20_000;
const VISIBILITY: Duration = Duration::from_millis(200);
const MAX_RECEIVES: u32 = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dead_letters: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(1024).build()?);
    let jobs: Arc<Queue<u32>> = Arc::new(
        Queue::builder()
            .capacity(JOBS as usize)
            .visibility_timeout(VISIBILITY)
            .dead_letter(dead_letters.clone(), MAX_RECEIVES)
            .build()?,
    );
    for job in 0..JOBS {
        jobs.send(job)?;
    }
    // Quiet panics from the handler (the pool catches them; this only keeps the output short).
    std::panic::set_hook(Box::new(|_| {}));

    let started = Instant::now();
    let pool = Consumer::builder(jobs.clone())
        .workers(4)
        .prefetch(16)
        .visibility_timeout(VISIBILITY) // the queue's settings
        .max_receives(MAX_RECEIVES)
        .backoff(Backoff {
            base: Duration::from_millis(5),
            factor: 2.0,
            cap: Duration::from_millis(50),
            jitter: 0.5,
        })
        .start(|job: &u32| match job {
            7 => {
                thread::sleep(VISIBILITY * 3); // slow: outlives its lease three times over
                Ok(())
            }
            job if job % 1000 == 1 => Err("poison message"), // never succeeds
            job if job % 100 == 2 => panic!("handler bug"),  // panics every time
            _ => Ok(()),
        })?;

    let expected_dead = u64::from(JOBS / 1000 + JOBS / 100);
    while pool.stats().processed + pool.stats().dead_lettered < u64::from(JOBS) {
        thread::sleep(Duration::from_millis(1));
    }
    let finished = pool.stop(Duration::from_secs(5));
    let stats = pool.stats();
    println!(
        "{JOBS} jobs in {:?}, stopped cleanly: {finished}",
        started.elapsed()
    );
    println!("{stats:#?}");
    println!("dead letters: {}", dead_letters.stats().ready);
    assert_eq!(stats.processed, u64::from(JOBS) - expected_dead);
    assert_eq!(stats.dead_lettered, expected_dead);
    assert_eq!(dead_letters.stats().ready as u64, expected_dead);
    assert!(stats.extended >= 1, "the slow job was kept alive");
    assert_eq!(stats.lease_lost, 0);
    Ok(())
}
