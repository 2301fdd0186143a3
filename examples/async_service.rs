//! A small tokio service on the async front: request handlers enqueue jobs with `send_async`
//! (waiting for room when the queue is full, never blocking an executor thread), an
//! `AsyncConsumer` processes them with `async fn` handlers, at most 32 at once, with retries,
//! a dead-letter queue and a graceful stop; a monitor task watches the dead letters through
//! `receive_async`.
//!
//! `cargo run --release --example async_service`

use std::sync::Arc;
use std::time::{Duration, Instant};
use visq::{AsyncConsumer, Backoff, Queue};

const REQUESTS: u32 = 20_000;

#[derive(Clone, Debug)]
struct Job {
    order: u32,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dead_letters: Arc<Queue<Job>> = Arc::new(Queue::builder().capacity(1024).build()?);
    let jobs: Arc<Queue<Job>> = Arc::new(
        Queue::builder()
            .capacity(256) // small on purpose: senders wait for room
            .visibility_timeout(Duration::from_secs(5))
            .dead_letter(dead_letters.clone(), 3)
            .build()?,
    );
    let start = Instant::now();

    // The "request handlers": four tasks, each enqueueing its share of the orders.
    let front: Vec<_> = (0..4)
        .map(|task| {
            let jobs = jobs.clone();
            tokio::spawn(async move {
                for order in (task..REQUESTS).step_by(4) {
                    jobs.send_async(Job { order }, Duration::from_secs(5), tokio::time::sleep)
                        .await
                        .expect("the workers keep up within 5 s");
                }
            })
        })
        .collect();

    // The workers: async handlers, 32 at once. Every 1000th order fails for good; every
    // 97th fails once and succeeds when retried.
    let pool = AsyncConsumer::builder(jobs.clone())
        .concurrency(32)
        .backoff(Backoff {
            base: Duration::from_millis(10),
            factor: 2.0,
            cap: Duration::from_millis(100),
            jitter: 0.0,
        });
    let stopper = pool.stopper();
    let workers = tokio::spawn(pool.run(tokio::time::sleep, |delivery| async move {
        let job = delivery.body();
        tokio::task::yield_now().await; // stands for an await on a database or a service
        match job.order {
            n if n % 1000 == 999 => Err(format!("order {n} is invalid")),
            n if n % 97 == 0 && delivery.receive_count() == 1 => Err("flaky upstream".into()),
            _ => Ok(()),
        }
    }));

    // The monitor: reports each dead letter as it arrives.
    let monitor = {
        let dead_letters = dead_letters.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(letter) = dead_letters
                .receive_async(Duration::from_secs(10), tokio::time::sleep)
                .await
            {
                seen += 1;
                dead_letters.delete(letter.receipt()).ok();
            }
            seen
        })
    };

    for task in front {
        task.await?;
    }
    // Everything is queued. Stop once it has all been settled (retries included).
    while jobs.stats().ready + jobs.stats().delayed + jobs.stats().in_flight > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stopper.stop();
    let stats = workers.await?;
    dead_letters.close();
    let dead = monitor.await?;
    println!(
        "{REQUESTS} orders in {:.0?}: {} processed, {} failures ({} retried, {} dead-lettered), \
         {dead} dead letters seen by the monitor",
        start.elapsed(),
        stats.processed,
        stats.failed,
        stats.retried,
        stats.dead_lettered,
    );
    assert_eq!(stats.processed + stats.dead_lettered, u64::from(REQUESTS));
    assert_eq!(dead, REQUESTS / 1000);
    Ok(())
}
