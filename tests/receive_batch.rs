//! `receive_batch` clones every message it takes before it publishes their leases from one
//! clock reading: the leases all start then (after every clone), and a clone that panics
//! part-way gives back the messages cloned before it as if they had never been popped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use visq::{ManualClock, Queue};

/// A body whose clone panics when `bomb` is set and it is number `armed`.
struct Body {
    n: u32,
    armed: u32,
    bomb: Arc<AtomicBool>,
}

impl Clone for Body {
    fn clone(&self) -> Self {
        if self.n == self.armed && self.bomb.swap(false, Ordering::SeqCst) {
            panic!("clone of {} fails", self.n);
        }
        Body {
            n: self.n,
            armed: self.armed,
            bomb: self.bomb.clone(),
        }
    }
}

fn queue(clock: &ManualClock) -> Queue<Body> {
    Queue::builder()
        .tick(Duration::from_millis(1))
        .visibility_timeout(Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn a_batch_leases_every_message_from_the_same_start() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let bomb = Arc::new(AtomicBool::new(false));
    for n in 0..5 {
        q.send(Body {
            n,
            armed: u32::MAX,
            bomb: bomb.clone(),
        })
        .ok()
        .unwrap();
    }
    let mut out = Vec::with_capacity(8);
    assert_eq!(q.receive_batch(&mut out, 8, Duration::ZERO), 5);
    let ns: Vec<u32> = out.iter().map(|d| d.body().n).collect();
    assert_eq!(ns, [0, 1, 2, 3, 4], "in send order");
    // Never early: a tick before the timeout all five are still leased...
    clock.advance(Duration::from_millis(9_999));
    assert!(q.try_receive().is_none());
    // ...and within a tick after it all five are visible again, together.
    clock.advance(Duration::from_millis(2));
    out.clear();
    assert_eq!(q.receive_batch(&mut out, 8, Duration::ZERO), 5);
    assert!(out.iter().all(|d| d.receive_count() == 2));
}

#[test]
fn a_clone_that_panics_mid_batch_gives_back_the_messages_cloned_before_it() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let bomb = Arc::new(AtomicBool::new(true));
    for n in 0..4 {
        // Message 2's clone panics once: 0 is taken by the batch's first receive (leased at
        // once), 1 is cloned and waits for its lease, 2 fails.
        q.send(Body {
            n,
            armed: 2,
            bomb: bomb.clone(),
        })
        .ok()
        .unwrap();
    }
    let mut out = Vec::with_capacity(8);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        q.receive_batch(&mut out, 8, Duration::ZERO)
    }));
    assert!(unwound.is_err(), "the clone of message 2 panics");
    assert_eq!(
        out.len(),
        1,
        "only the first delivery, whose lease was published, is kept"
    );
    assert_eq!(out[0].body().n, 0);
    let stats = q.stats();
    assert_eq!((stats.ready, stats.in_flight), (3, 1));
    assert_eq!(stats.received, 1, "the given-back pops are no deliveries");
    // Messages 1 and 2 come back as never received (count 1), and so does 3.
    let mut again: Vec<(u32, u32)> = std::iter::from_fn(|| q.try_receive())
        .map(|d| (d.body().n, d.receive_count()))
        .collect();
    again.sort_unstable();
    assert_eq!(again, [(1, 1), (2, 1), (3, 1)]);
    assert!(
        q.delete(out[0].receipt()).is_ok(),
        "the kept lease is valid"
    );
    assert_eq!(q.stats().received, 4);
}
