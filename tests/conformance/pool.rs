//! The worker pool over the trait: the same `Consumer` on every backend, end to end and
//! through a graceful stop. Waiting here is for the pool's threads (wall clock, bounded), never
//! to let queue time pass: the pool retries at once (a zero backoff).

use super::{bodies, send_text, sorted, text, Ctx};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use visq::{Backoff, Consumer};

/// The pool's cases.
pub const CASES: &[super::Case] = &[
    ("worker_pool_end_to_end", worker_pool_end_to_end),
    ("worker_pool_graceful_stop", worker_pool_graceful_stop),
];

/// How long a case waits for the pool's threads before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Retries at once: a failed message is released, not delayed.
const AT_ONCE: Backoff = Backoff {
    base: Duration::ZERO,
    factor: 1.0,
    cap: Duration::ZERO,
    jitter: 0.0,
};

/// Polls `done` every millisecond until it holds; fails after [`PATIENCE`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Ten jobs and a poison message through a pool of two workers: every job is handled once and
/// deleted; the poison message fails, is retried, and on its last allowed receive goes to the
/// dead-letter queue (where the backend has one).
fn worker_pool_end_to_end(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(Some(2));
    let dead_letters = b.capabilities().native_dead_letter;
    let jobs: Vec<String> = (0..10).map(|n| format!("job {n}")).collect();
    for job in &jobs {
        send_text(&*b, job);
    }
    if dead_letters {
        send_text(&*b, "poison");
    } else {
        ctx.not_run("a poison message's dead-lettering: capabilities.native_dead_letter is false");
    }
    let handled = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&handled);
    let pool = Consumer::backend_builder(Arc::clone(&b))
        .workers(2)
        .backoff(AT_ONCE)
        .start(move |body: &Vec<u8>| {
            if body == b"poison" {
                return Err("poison");
            }
            seen.lock().unwrap().push(text(body));
            Ok(())
        })
        .expect("the pool starts");
    let expected_dead = u64::from(dead_letters);
    wait_until(
        "every job is processed and the poison dead-lettered",
        || {
            let stats = pool.stats();
            stats.processed == jobs.len() as u64 && stats.dead_lettered == expected_dead
        },
    );
    assert!(pool.stop(Duration::from_secs(10)), "the pool stops in time");
    let stats = pool.stats();
    assert_eq!(
        sorted(handled.lock().unwrap().clone()),
        sorted(jobs),
        "each job handled once"
    );
    assert_eq!(
        (stats.failed, stats.retried),
        (2 * expected_dead, expected_dead),
        "the poison message failed twice, retried once: {stats:?}"
    );
    ctx.assert_nothing(&*b, "the pool deleted every job");
    if dead_letters {
        let dlq = b
            .dead_letter_queue()
            .expect("a backend that dead-letters has a dead-letter queue");
        let dead = ctx.receive_one(&*dlq, None);
        assert_eq!(text(&dead.body), "poison");
        dlq.delete(&dead.handle)
            .unwrap_or_else(|error| panic!("delete from the dead-letter queue: {error}"));
    }
}

/// A pool stopped while a handler runs lets it finish (its message is deleted), gives back
/// what it received but did not start, and loses nothing: the rest can be received again.
fn worker_pool_graceful_stop(ctx: &mut Ctx<'_>) {
    let b = ctx.backend(None);
    for job in ["first", "second", "third"] {
        send_text(&*b, job);
    }
    let (started, handler_started) = mpsc::channel();
    let (go_on, handler_may_finish) = mpsc::channel::<()>();
    let started = Mutex::new(started);
    let handler_may_finish = Mutex::new(handler_may_finish);
    let pool = Consumer::backend_builder(Arc::clone(&b))
        .workers(1)
        .prefetch(3)
        .start(move |body: &Vec<u8>| {
            started.lock().unwrap().send(text(body)).unwrap();
            handler_may_finish
                .lock()
                .unwrap()
                .recv_timeout(PATIENCE)
                .map_err(|_| "never told to finish")
        })
        .expect("the pool starts");
    let running = handler_started
        .recv_timeout(PATIENCE)
        .expect("a handler starts");
    pool.stop_receiving();
    go_on.send(()).unwrap();
    assert!(pool.stop(Duration::from_secs(10)), "the pool stops in time");
    let stats = pool.stats();
    assert_eq!(
        stats.processed, 1,
        "the running handler finished: {stats:?}"
    );
    assert!(
        handler_started.try_recv().is_err(),
        "no handler starts after stop_receiving"
    );
    let rest = ctx.receive_n(&*b, 2, None);
    let mut expected: Vec<String> = ["first", "second", "third"]
        .iter()
        .map(|s| s.to_string())
        .filter(|s| *s != running)
        .collect();
    expected.sort();
    assert_eq!(
        sorted(bodies(&rest)),
        expected,
        "the unstarted messages were given back"
    );
    for delivery in &rest {
        b.delete(&delivery.handle)
            .unwrap_or_else(|error| panic!("delete: {error}"));
    }
    ctx.assert_nothing(&*b, "the finished message was deleted");
}
