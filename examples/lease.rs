//! Lease guards: handlers that bail out (an early return, an error, a panic) leave nothing
//! stuck, because an unsettled lease releases its message when dropped.
//!
//! `cargo run --release --example lease`

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;
use visq::{Lease, Queue};

/// Handles one job. Returns early on bad input without settling: the lease's drop releases it.
fn handle(lease: Lease<'_, String>) -> Result<(), String> {
    let job = lease.body().clone();
    if job.starts_with("flaky") && lease.receive_count() == 1 {
        return Err(format!("{job}: failed on the first try, retrying"));
    }
    if job.starts_with("crash") && lease.receive_count() == 1 {
        panic!("{job}: the handler crashed");
    }
    if job.starts_with("slow") {
        lease
            .extend(Duration::from_secs(60))
            .map_err(|e| e.to_string())?; // need more time
    }
    if job.starts_with("later") && lease.receive_count() == 1 {
        lease
            .nack_after(Duration::from_millis(50))
            .map_err(|e| e.to_string())?;
        return Err(format!("{job}: not ready, try again in 50 ms"));
    }
    lease.ack().map_err(|e| e.to_string())?;
    println!("done: {job}");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let q: Queue<String> = Queue::builder().capacity(64).build()?;
    for job in [
        "plain 1", "flaky 2", "crash 3", "slow 4", "later 5", "plain 6",
    ] {
        q.send(job.to_string())?;
    }
    std::panic::set_hook(Box::new(|info| println!("panic: {info}")));

    while let Some(lease) = q.receive_lease(Duration::from_millis(200)) {
        match catch_unwind(AssertUnwindSafe(|| handle(lease))) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => println!("gave back: {why}"),
            Err(_) => println!("gave back after a panic"),
        }
    }
    let stats = q.stats();
    println!(
        "deleted {}, released {}, held {}",
        stats.deleted,
        stats.released,
        stats.ready + stats.delayed + stats.in_flight
    );
    assert_eq!(stats.deleted, 6);
    Ok(())
}
