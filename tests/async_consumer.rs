//! The async worker pool: settles by outcome (delete, retry after backoff, dead-letter on the
//! last receive), survives handler panics, respects its concurrency limit, extends long
//! handlers' leases, and stops gracefully. Queue time is a `ManualClock`; the pool runs on a
//! current-thread tokio runtime, whose timer only paces the heartbeat.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use visq::{AsyncConsumer, Backoff, DeathCause, ManualClock, Queue};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn settles_by_outcome_retries_after_backoff_and_dead_letters_on_the_last_receive() {
    let clock = ManualClock::new();
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().build().unwrap());
    let q: Arc<Queue<u32>> = Arc::new(
        Queue::builder()
            .clock(clock.clone())
            .dead_letter(dlq.clone(), 2)
            .build()
            .unwrap(),
    );
    for n in 0..6 {
        q.send(n).unwrap();
    }
    let backoff = Backoff {
        base: Duration::from_secs(5),
        factor: 1.0,
        cap: Duration::from_secs(5),
        jitter: 0.0,
    };
    let pool = AsyncConsumer::builder(q.clone())
        .concurrency(3)
        .backoff(backoff);
    let stopper = pool.stopper();
    let rt = runtime();
    let first = rt.block_on(async {
        let run = tokio::spawn(pool.run(tokio::time::sleep, |d| async move {
            match *d.body() {
                n if n % 3 == 0 => Err(format!("{n} fails")),
                4 => panic!("4 panics"),
                _ => Ok(()),
            }
        }));
        // Wait (runtime turns, not queue time) until every message was tried once.
        while q.stats().in_flight + q.stats().ready > 0 {
            tokio::task::yield_now().await;
        }
        stopper.stop();
        run.await.unwrap()
    });
    assert_eq!((first.processed, first.failed, first.panicked), (3, 3, 1));
    assert_eq!(
        (first.retried, first.dead_lettered, first.lease_lost),
        (3, 0, 0)
    );
    assert_eq!(
        q.stats().delayed,
        3,
        "retried after the backoff, not at once"
    );
    // The backoff passes: the second (last) receive of each fails again: dead-lettered.
    clock.advance(Duration::from_secs(5));
    let pool = AsyncConsumer::builder(q.clone()).backoff(backoff);
    q.close();
    let second = rt.block_on(pool.run(tokio::time::sleep, |d| async move {
        match *d.body() {
            4 => panic!("4 panics"),
            n => Err(format!("{n} fails")),
        }
    }));
    assert_eq!((second.failed, second.dead_lettered), (3, 3));
    let letters = dlq.dead_letters(10);
    assert_eq!(letters.len(), 3);
    assert!(letters.iter().any(|l| l.cause
        == DeathCause::Released {
            reason: Some("the handler panicked: 4 panics".into())
        }));
    assert!(letters.iter().any(|l| l.cause
        == DeathCause::Released {
            reason: Some("0 fails".into())
        }));
}

#[test]
fn never_runs_more_handlers_than_its_concurrency_limit() {
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().build().unwrap());
    for n in 0..40 {
        q.send(n).unwrap();
    }
    q.close();
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stats = runtime().block_on({
        let (running, most) = (running.clone(), most.clone());
        AsyncConsumer::builder(q.clone())
            .concurrency(4)
            .run(tokio::time::sleep, move |_| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            })
    });
    assert_eq!(stats.processed, 40);
    assert_eq!(most.load(Ordering::SeqCst), 4, "four at once, never more");
    assert_eq!(q.stats().deleted, 40);
    assert_eq!(q.waiting_receivers(), 0);
}

#[test]
fn a_stop_lets_running_handlers_finish_and_receives_nothing_more() {
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().build().unwrap());
    for n in 0..10 {
        q.send(n).unwrap();
    }
    let pool = AsyncConsumer::builder(q.clone()).concurrency(2);
    let stopper = pool.stopper();
    let (release, gate) = tokio::sync::watch::channel(false);
    let stats = runtime().block_on(async {
        let run = tokio::spawn(pool.run(tokio::time::sleep, move |_| {
            let mut gate = gate.clone();
            async move {
                gate.wait_for(|open| *open).await.unwrap();
                Ok::<(), String>(())
            }
        }));
        while q.stats().in_flight < 2 {
            tokio::task::yield_now().await;
        }
        stopper.stop();
        release.send(true).unwrap();
        run.await.unwrap()
    });
    assert_eq!(
        stats.processed, 2,
        "the two running finished; nothing more received"
    );
    let s = q.stats();
    assert_eq!((s.ready, s.in_flight, s.deleted), (8, 0, 2));
    assert_eq!(q.waiting_receivers(), 0, "the pool's stream was dropped");
}

/// A timer whose sleep ends at the executor's next turn, whatever it is asked for: the
/// heartbeat then looks at the (manual) clock on every turn.
fn next_turn(_: Duration) -> impl std::future::Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

#[test]
fn the_heartbeat_extends_a_long_handlers_lease() {
    // A 20 s lease, a heartbeat at 25% (5 s); the handler runs while the manual clock moves
    // 4 x 6 s: without extensions its lease would have expired.
    let clock = ManualClock::new();
    let q: Arc<Queue<u32>> = Arc::new(
        Queue::builder()
            .visibility_timeout(Duration::from_secs(20))
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    q.send(1).unwrap();
    q.close();
    let (release, gate) = tokio::sync::watch::channel(false);
    let pool = AsyncConsumer::builder(q.clone())
        .heartbeat(0.25)
        .clock(clock.clone());
    let stats = runtime().block_on(async {
        let run = tokio::spawn(pool.run(next_turn, move |_| {
            let mut gate = gate.clone();
            async move {
                gate.wait_for(|open| *open).await.unwrap();
                Ok::<(), String>(())
            }
        }));
        while q.stats().in_flight == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..4 {
            clock.advance(Duration::from_secs(6));
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            assert_eq!(q.stats().in_flight, 1, "still leased");
        }
        release.send(true).unwrap();
        run.await.unwrap()
    });
    assert_eq!((stats.processed, stats.lease_lost), (1, 0));
    assert_eq!(stats.extended, 4, "one extension per 6 s step");
    let s = q.stats();
    assert_eq!((s.expired, s.deleted), (0, 1));
}
