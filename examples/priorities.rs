//! Priority levels: a thumbnail service where paid-tier jobs go before the free tier's backlog,
//! and a handful of "urgent" jobs (an account's own avatar, shown as soon as it is uploaded)
//! before both. A pool of two workers drains a backlog of free jobs; paid and urgent jobs
//! arrive while it works. A paid job that fails once is retried at its own level, still ahead
//! of the free backlog.
//!
//! `cargo run --release --example priorities`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use visq::{Backoff, Consumer, Queue, SendOptions};

const FREE: u32 = 2_000;
const PAID: u32 = 200;
const URGENT: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    Free = 0,
    Paid = 1,
    Urgent = 2,
}

#[derive(Clone, Debug)]
struct Thumbnail {
    tier: Tier,
    image: u32,
}

/// Stands for resizing an image: some microseconds of work.
fn render(job: &Thumbnail) -> u64 {
    (0..10_000u64).fold(u64::from(job.image), |h, i| {
        h.rotate_left(5) ^ i.wrapping_mul(0x9E37_79B9)
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: Arc<Queue<Thumbnail>> = Arc::new(
        Queue::builder()
            .capacity(4096)
            .priorities(3) // 0 free, 1 paid, 2 urgent
            .visibility_timeout(Duration::from_secs(5))
            .build()?,
    );
    let send = |tier: Tier, image: u32| {
        let options = SendOptions::new().priority(tier as u8);
        jobs.send_with(Thumbnail { tier, image }, &options)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    for image in 0..FREE {
        send(Tier::Free, image)?;
    }

    // Completion order, as the workers finish jobs.
    let done: Arc<Mutex<Vec<Tier>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let pool = {
        let done = done.clone();
        let failed_once = AtomicBool::new(false);
        Consumer::builder(jobs.clone())
            .workers(2)
            // Retry at once (a real service would back off; see `Backoff`).
            .backoff(Backoff {
                base: Duration::ZERO,
                factor: 1.0,
                cap: Duration::ZERO,
                jitter: 0.0,
            })
            .start(move |job: &Thumbnail| {
                std::hint::black_box(render(job));
                // Paid image 0 fails its first try: the retry keeps its level.
                if job.tier == Tier::Paid
                    && job.image == 0
                    && !failed_once.swap(true, Ordering::Relaxed)
                {
                    return Err("upstream storage timed out");
                }
                done.lock().unwrap().push(job.tier);
                Ok(())
            })?
    };

    // Paid and urgent jobs arrive once the workers are busy with the free backlog.
    while done.lock().unwrap().len() < 100 {
        thread::sleep(Duration::from_micros(200));
    }
    let free_done_before_paid = done.lock().unwrap().len();
    for image in 0..PAID {
        send(Tier::Paid, image)?;
        if image % 40 == 0 && image / 40 < URGENT {
            send(Tier::Urgent, image / 40)?;
        }
    }

    let total = (FREE + PAID + URGENT) as usize;
    while pool.stats().processed < total as u64 {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(pool.stop(Duration::from_secs(5)));
    let elapsed = started.elapsed();
    let done = done.lock().unwrap();

    // Where each tier's jobs finished, counted from the moment paid jobs arrived.
    let finished_by = |tier: Tier| {
        done.iter()
            .enumerate()
            .skip(free_done_before_paid)
            .filter(|(_, t)| **t == tier)
            .map(|(position, _)| position - free_done_before_paid + 1)
            .max()
            .unwrap_or(0)
    };
    let free_waiting = FREE as usize - free_done_before_paid;
    println!(
        "{total} thumbnails by 2 workers in {elapsed:.0?}; {free_done_before_paid} free jobs \
         were done when {PAID} paid and {URGENT} urgent jobs arrived behind {free_waiting} \
         waiting free jobs"
    );
    println!(
        "completions counted from their arrival: the last urgent job was number {}, the last \
         paid job number {} (one paid job failed once and was retried at its level), the last \
         free job number {}",
        finished_by(Tier::Urgent),
        finished_by(Tier::Paid),
        finished_by(Tier::Free)
    );
    let stats = pool.stats();
    println!(
        "pool: processed {}, failed {}, retried {}",
        stats.processed, stats.failed, stats.retried
    );
    // Strict priority, no aging: once paid jobs are visible, free jobs get only the deliveries
    // already under way (one per worker) and any made while no paid job was visible (between
    // two of this thread's sends, if a worker was faster). So the paid jobs finish long before
    // the free backlog that was waiting when they arrived.
    assert!(finished_by(Tier::Paid) < free_waiting);
    assert_eq!((stats.failed, stats.retried), (1, 1));
    Ok(())
}
