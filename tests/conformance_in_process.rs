//! The conformance suite (tests/conformance/mod.rs) on the in-process queue: a
//! `Queue<Vec<u8>>` on a `ManualClock`, so time passes without waiting.

mod conformance;

use conformance::{Setup, StaleReceipts, Subject, Target, Time};
use std::sync::Arc;
use std::time::Duration;
use visq::{ManualClock, Queue};

/// Room for every case's messages.
const CAPACITY: usize = 1024;

fn queue(setup: &Setup, clock: &ManualClock, tick: Duration) -> Result<Subject, String> {
    let mut builder = Queue::builder()
        .capacity(CAPACITY)
        .visibility_timeout(setup.visibility)
        .tick(tick)
        .clock(clock.clone());
    if let Some(max_receives) = setup.max_receives {
        let dlq: Arc<Queue<Vec<u8>>> = Arc::new(
            Queue::builder()
                .capacity(CAPACITY)
                .tick(tick)
                .clock(clock.clone())
                .build()
                .map_err(|error| format!("{} (dead letters): {error}", setup.name))?,
        );
        builder = builder.dead_letter(dlq, max_receives);
    }
    let queue: Queue<Vec<u8>> = builder
        .build()
        .map_err(|error| format!("{}: {error}", setup.name))?;
    // Nothing outlives the queue: dropping it is the teardown.
    Ok(Subject::new(Arc::new(queue), || Ok(())))
}

#[test]
fn the_in_process_queue_conforms() {
    let clock = ManualClock::new();
    let tick = Duration::from_millis(1);
    let time = Time::Manual {
        clock: clock.clone(),
        tick,
    };
    conformance::run(Target {
        backend: "in-process",
        time,
        stale_receipts: StaleReceipts::Refused,
        known_gaps: &[(
            "wait_over_limit",
            "src/backend/in_process.rs passes any wait to Queue::receive although \
             capabilities().max_wait is MAX_TIMEOUT; reported to the lead",
        )],
        build: Box::new(move |setup| queue(setup, &clock, tick)),
    });
}
