//! Shared pieces of the loom models: a tiny queue and a body that counts its drops.
#![allow(dead_code)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use std::time::{Duration, Instant};
use visq::{ManualClock, Queue};

/// One tick of the models' queues: with a 12 h maximum timeout, a one-minute tick gives a
/// two-level wheel.
pub const TICK: Duration = Duration::from_secs(60);
/// The models' visibility timeout: one tick.
pub const LEASE: Duration = TICK;

/// A message body that counts how many of its instances are alive.
#[derive(Debug)]
pub struct Body {
    pub value: u32,
    live: Arc<AtomicUsize>,
}

impl Body {
    pub fn new(value: u32, live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Self {
            value,
            live: live.clone(),
        }
    }
}

impl Clone for Body {
    fn clone(&self) -> Self {
        Self::new(self.value, &self.live)
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A queue of `capacity` slots on a manual clock, with a one-tick visibility timeout.
pub fn tiny_queue(capacity: usize, clock: &ManualClock) -> Queue<Body> {
    Queue::builder()
        .capacity(capacity)
        .tick(TICK)
        .visibility_timeout(LEASE)
        .clock(clock.clone())
        .build()
        .expect("valid settings")
}

/// Drops the queue and checks that every body went with it, exactly once.
pub fn drops_every_body(q: Arc<Queue<Body>>, live: &AtomicUsize) {
    drop(q);
    assert_eq!(live.load(Ordering::SeqCst), 0, "every body dropped once");
}

/// Runs `f` under `loom::model` and prints how many interleavings it explored and how long
/// that took (shown with `--nocapture`).
pub fn check(name: &str, f: impl Fn() + Sync + Send + 'static) {
    check_with(name, loom::model::Builder::new(), f);
}

/// [`check`] with at most `bound` preemptions, whatever `LOOM_MAX_PREEMPTIONS` says: for
/// models whose cost at the default bound is out of proportion (say why at the model).
pub fn check_bounded(name: &str, bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    check_with(name, builder, f);
}

/// The most branch points one execution may take. Loom's default, 1,000, guards against spin
/// loops (an unbounded spin exceeds any limit); the TTL model L2 runs two queues, two wheel
/// runs and a dead-letter inspection and takes more than 1,000 on its longest path (the same
/// 88,449 interleavings pass at 2,000), so the limit is doubled for every model.
const MAX_BRANCHES: usize = 2_000;

fn check_with(name: &str, mut builder: loom::model::Builder, f: impl Fn() + Sync + Send + 'static) {
    builder.max_branches = builder.max_branches.max(MAX_BRANCHES);
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    RUNS.store(0, std::sync::atomic::Ordering::Relaxed);
    builder.check(move || {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    eprintln!(
        "{name}: {} interleavings in {:.2?}",
        RUNS.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed()
    );
}

/// A one-slot queue on `clock` (as [`tiny_queue`]) whose messages go, on their first
/// receive's end, to `dlq` (a std `Arc`, which the builder takes: the dead-letter queue's
/// reference count is not part of the model).
pub fn dead_lettering_after_one_receive(
    dlq: &std::sync::Arc<Queue<Body>>,
    clock: &ManualClock,
) -> Arc<Queue<Body>> {
    let q = Queue::builder()
        .capacity(1)
        .tick(TICK)
        .visibility_timeout(LEASE)
        .dead_letter(dlq.clone(), 1)
        .clock(clock.clone())
        .build()
        .expect("valid settings");
    Arc::new(q)
}
