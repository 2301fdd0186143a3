//! Deduplication (`src/patterns/dedup.rs`): two sends of one dedup id racing a clock advance that
//! expires another id's entry, so that the two may claim *different* buckets (the race that the
//! claim-then-check protocol exists for).
#![cfg(loom)]

mod common;

use common::{check, TICK};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;
use visq::{DedupQueue, DedupSendError, ManualClock, Queue, Sent};

const WINDOW: Duration = Duration::from_secs(60);

/// A copy of `src/patterns/dedup.rs`'s `mix`, to place ids in the table. If the two drift apart the
/// model still passes but no longer sets up the two-bucket race.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Model D1: id `J` sits, live until `WINDOW`, in the home bucket of id `K` (a 4-bucket table).
/// At `WINDOW / 2`, two threads send `K` while the main thread advances the clock to `WINDOW`. A sender that
/// looks before the advance skips the live `J` and claims the next bucket; one that looks
/// after it reuses `J`'s bucket. Whatever the interleaving, exactly one message is sent for
/// `K` and both sends return its id.
#[test]
fn same_id_races_expiry_into_two_buckets() {
    const K: u64 = 1;
    let home = |k: u64| mix(k) & 3;
    let j = (2..).find(|&j| home(j) == home(K)).unwrap();
    check("same_id_races_expiry_into_two_buckets", move || {
        let clock = ManualClock::new();
        // The public API takes a std `Arc` (its count is not part of the race).
        let queue: std::sync::Arc<Queue<u32>> = std::sync::Arc::new(
            Queue::builder()
                .capacity(4)
                .tick(TICK)
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        let dedup = Arc::new(
            DedupQueue::builder(queue.clone())
                .capacity(1) // 4 buckets, each id may use all of them
                .window(WINDOW)
                .contention_wait(Duration::from_secs(3600))
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        dedup.send(j, 0).unwrap();
        // J expires at WINDOW; a K sent from now on is live until at least 1.5 * WINDOW.
        clock.advance(WINDOW / 2);

        let senders: Vec<_> = [1, 2]
            .into_iter()
            .map(|body| {
                let dedup = dedup.clone();
                thread::spawn(move || dedup.send(K, body).unwrap())
            })
            .collect();
        clock.advance(WINDOW / 2);
        let results: Vec<Sent> = senders.into_iter().map(|s| s.join().unwrap()).collect();

        let new: Vec<_> = results.iter().filter(|s| !s.is_duplicate()).collect();
        assert_eq!(
            new.len(),
            1,
            "exactly one send of K went through: {results:?}"
        );
        assert_eq!(results[0].id(), results[1].id(), "both got its id");
        assert_eq!(queue.stats().sent, 2, "J and one K");
    });
}

/// Model D2: a send that the queue refuses releases its claim while another send of the same
/// id waits on it. The queue (capacity 1) holds one message that the main thread deletes
/// during the race, so each send of `K` may find it full or not. Whatever the interleaving: at
/// most one message for `K`, every `Ok` names it, every `Full` hands the body back, and if
/// neither went through `K` is not recorded (a retry can send).
#[test]
fn refused_send_releases_its_claim_to_a_waiting_duplicate() {
    const K: u64 = 1;
    check(
        "refused_send_releases_its_claim_to_a_waiting_duplicate",
        move || {
            let clock = ManualClock::new();
            let queue: std::sync::Arc<Queue<u32>> = std::sync::Arc::new(
                Queue::builder()
                    .capacity(1)
                    .tick(TICK)
                    .clock(clock.clone())
                    .build()
                    .unwrap(),
            );
            let dedup = Arc::new(
                DedupQueue::builder(queue.clone())
                    .capacity(1)
                    .window(WINDOW)
                    .contention_wait(Duration::from_secs(3600))
                    .clock(clock.clone())
                    .build()
                    .unwrap(),
            );
            queue.send(0).unwrap();

            let senders: Vec<_> = [1, 2]
                .into_iter()
                .map(|body| {
                    let dedup = dedup.clone();
                    thread::spawn(move || match dedup.send(K, body) {
                        Ok(sent) => Some(sent),
                        Err(DedupSendError::Full(back)) => {
                            assert_eq!(back, body, "the refused body comes back");
                            None
                        }
                        Err(other) => panic!("unexpected {other:?}"),
                    })
                })
                .collect();
            let first = queue.try_receive().unwrap();
            assert_eq!(*first.body(), 0);
            queue.delete(first.receipt()).unwrap();
            let results: Vec<Option<Sent>> =
                senders.into_iter().map(|s| s.join().unwrap()).collect();

            let held = queue.try_receive();
            let sent: Vec<Sent> = results.iter().flatten().copied().collect();
            match &held {
                Some(delivery) => {
                    assert!(!sent.is_empty());
                    assert!(sent.iter().all(|s| s.id() == delivery.id()), "{results:?}");
                    assert_eq!(sent.iter().filter(|s| !s.is_duplicate()).count(), 1);
                    assert_eq!(dedup.lookup(K), Some(delivery.id()));
                }
                None => {
                    assert!(sent.is_empty(), "{results:?}");
                    assert_eq!(
                        dedup.lookup(K),
                        None,
                        "a refused send leaves nothing recorded"
                    );
                }
            }
            assert!(queue.try_receive().is_none(), "at most one message for K");
        },
    );
}
