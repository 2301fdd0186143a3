//! Metrics: a worker pool drains a queue fed at a steady pace while a monitor prints what
//! `stats()` says twice a second (rates, oldest ready message, oldest lease, refusals); at the
//! end, the latency percentiles (send to receive, receive to delete = handler time, send to
//! delete) and the pool's own counts.
//!
//! `cargo run --release --example metrics` (about 2 seconds)

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use visq::{Backoff, Consumer, Latency, Queue};

const MESSAGES: u32 = 10_000;
const SEND_FOR: Duration = Duration::from_millis(1500);
const MAX_RECEIVES: u32 = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dead_letters: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(256).build()?);
    let queue: Arc<Queue<u32>> = Arc::new(
        Queue::builder()
            .capacity(4096)
            .visibility_timeout(Duration::from_secs(5))
            .dead_letter(dead_letters.clone(), MAX_RECEIVES)
            .sample_latencies(1) // every message: this example is about the numbers, not speed
            .build()?,
    );

    // Handlers take 20-100 us; every 500th message always fails and ends as a dead letter.
    let pool = Consumer::builder(queue.clone())
        .workers(2)
        .max_receives(MAX_RECEIVES)
        .backoff(Backoff {
            base: Duration::from_millis(2),
            factor: 2.0,
            cap: Duration::from_millis(20),
            jitter: 0.2,
        })
        .start(|n: &u32| {
            let started = Instant::now();
            let work = Duration::from_micros(20 + u64::from(n % 5) * 20);
            while started.elapsed() < work {
                std::hint::spin_loop();
            }
            if n % 500 == 0 {
                Err(format!("message {n} is malformed"))
            } else {
                Ok(())
            }
        })?;

    // The producer: MESSAGES spread evenly over SEND_FOR.
    let producer = {
        let queue = queue.clone();
        thread::spawn(move || {
            let start = Instant::now();
            for n in 1..=MESSAGES {
                let due = SEND_FOR.mul_f64(f64::from(n) / f64::from(MESSAGES));
                while start.elapsed() < due {
                    thread::yield_now();
                }
                queue.send(n).expect("room: the pool keeps up");
            }
        })
    };

    // The monitor.
    let expected_dead = u64::from(MESSAGES / 500);
    let all_done = || {
        let stats = pool.stats();
        stats.processed + stats.dead_lettered == u64::from(MESSAGES)
    };
    println!(
        "  t    sent/s   recv/s    del/s  err/s  ready  in flight  oldest ready  oldest lease"
    );
    let start = Instant::now();
    while !all_done() {
        thread::sleep(Duration::from_millis(500));
        let s = queue.stats();
        println!(
            "{:4.1}s {:8.0} {:8.0} {:8.0} {:6.1} {:6} {:10} {:>13} {:>13}",
            start.elapsed().as_secs_f64(),
            s.rates.sent,
            s.rates.received,
            s.rates.deleted,
            s.rates.errors,
            s.ready,
            s.in_flight,
            format!("{:?}", s.oldest_ready_age.unwrap_or_default()),
            format!("{:?}", s.oldest_in_flight_age.unwrap_or_default()),
        );
    }
    producer.join().expect("the producer finished");
    assert!(
        pool.stop(Duration::from_secs(5)),
        "the pool stopped in time"
    );

    let latencies = queue.latencies().expect("built with latency histograms");
    println!("\nlatency            count       p50       p99     p99.9       max");
    let row = |name: &str, l: &Latency| {
        println!(
            "{name:<16} {:7} {:>9} {:>9} {:>9} {:>9}",
            l.count,
            format!("{:.1?}", l.p50),
            format!("{:.1?}", l.p99),
            format!("{:.1?}", l.p999),
            format!("{:.1?}", l.max)
        )
    };
    row("send→receive", &latencies.send_to_receive);
    row("receive→delete", &latencies.receive_to_delete);
    row("send→delete", &latencies.send_to_delete);

    let pool_stats = pool.stats();
    println!(
        "\npool: processed {}, failed {}, retried {}, dead-lettered {}",
        pool_stats.processed, pool_stats.failed, pool_stats.retried, pool_stats.dead_lettered
    );
    let letters = dead_letters.dead_letters(3);
    for letter in &letters {
        println!(
            "dead letter {} after {} receives: {:?}",
            letter.id, letter.receive_count, letter.cause
        );
    }

    // Every message is accounted for: deleted once, or dead-lettered after MAX_RECEIVES tries.
    let processed = u64::from(MESSAGES) - expected_dead;
    assert_eq!(pool_stats.processed, processed);
    assert_eq!(pool_stats.dead_lettered, expected_dead);
    assert_eq!(pool_stats.failed, expected_dead * u64::from(MAX_RECEIVES));
    assert_eq!(
        pool_stats.retried,
        expected_dead * u64::from(MAX_RECEIVES - 1)
    );
    assert_eq!(latencies.send_to_delete.count, processed);
    assert_eq!(latencies.send_to_receive.count, u64::from(MESSAGES));
    assert_eq!(dead_letters.stats().ready as u64, expected_dead);
    assert_eq!(letters.len(), 3);
    Ok(())
}
