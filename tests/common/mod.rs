//! Helpers shared by the integration tests of the patterns built on the queue.

use std::time::{Duration, Instant};

/// Waits (wall-clock, polling every millisecond) until `done()` holds, for a worker thread to
/// catch up; fails the test after 10 s. Never used to let *queue* time pass: that is the
/// `ManualClock`'s job.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
