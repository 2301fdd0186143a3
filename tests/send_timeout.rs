//! `Queue::send_timeout` (issue 10): a send that waits while the queue is full and is woken by
//! whatever frees a slot. Every outcome here is decided by the operations, never by how long a
//! thread sleeps: a sender that was not woken waits out its (long) wait and gets `Full` back,
//! which fails the test.

use std::sync::Arc;
use std::thread;
use std::time::Duration;
use visq::{Queue, SendError};

/// Long enough that a sender which was not woken fails its test by getting `Full` back.
const LONG: Duration = Duration::from_secs(30);

fn full_queue(capacity: usize) -> Arc<Queue<u32>> {
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(capacity).build().unwrap());
    for n in 0..capacity as u32 {
        q.send(n).unwrap();
    }
    q
}

/// Sends `body` with `send_timeout(LONG)` on another thread.
fn blocked_sender(
    q: &Arc<Queue<u32>>,
    body: u32,
) -> thread::JoinHandle<Result<(), SendError<u32>>> {
    let q = q.clone();
    thread::spawn(move || q.send_timeout(body, LONG).map(drop))
}

#[test]
fn with_room_it_is_a_send() {
    let q: Queue<u32> = Queue::builder().capacity(2).build().unwrap();
    let first = q.send_timeout(1, Duration::ZERO).unwrap();
    let second = q.send_timeout(2, LONG).unwrap();
    assert!(first < second);
    assert_eq!(q.stats().sent, 2);
    assert_eq!(q.stats().refused_sends, 0);
}

#[test]
fn a_full_queue_gives_the_body_back_after_the_wait_and_counts_one_refusal() {
    let q = full_queue(1);
    assert_eq!(q.send_timeout(7, Duration::ZERO), Err(SendError::Full(7)));
    assert_eq!(
        q.send_timeout(8, Duration::from_millis(5)),
        Err(SendError::Full(8))
    );
    let stats = q.stats();
    assert_eq!((stats.sent, stats.refused_sends), (1, 2));
}

#[test]
fn a_closed_queue_refuses_at_once_and_a_close_wakes_a_blocked_sender() {
    let q = full_queue(1);
    let sender = blocked_sender(&q, 2);
    q.close();
    assert_eq!(sender.join().unwrap(), Err(SendError::Closed(2)));
    assert_eq!(q.send_timeout(3, LONG), Err(SendError::Closed(3)));
}

#[test]
fn a_delete_wakes_a_blocked_sender() {
    let q = full_queue(1);
    let sender = blocked_sender(&q, 2);
    let leased = q.try_receive().unwrap();
    q.delete(leased.receipt()).unwrap();
    assert_eq!(sender.join().unwrap(), Ok(()));
    assert_eq!(*q.try_receive().unwrap().body(), 2);
}

#[test]
fn a_move_to_the_dead_letter_queue_wakes_a_blocked_sender() {
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().build().unwrap());
    let q: Arc<Queue<u32>> = Arc::new(
        Queue::builder()
            .capacity(1)
            .dead_letter(dlq.clone(), 1)
            .build()
            .unwrap(),
    );
    q.send(1).unwrap();
    let sender = blocked_sender(&q, 2);
    // Received once: its release moves it to the dead-letter queue and frees its slot.
    q.release(q.try_receive().unwrap().receipt()).unwrap();
    assert_eq!(sender.join().unwrap(), Ok(()));
    assert_eq!(*dlq.try_receive().unwrap().body(), 1);
    assert_eq!(*q.try_receive().unwrap().body(), 2);
}

#[test]
fn a_redrive_out_of_the_queue_wakes_a_blocked_sender() {
    let dlq: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(1).build().unwrap());
    let q: Queue<u32> = Queue::builder()
        .dead_letter(dlq.clone(), 1)
        .build()
        .unwrap();
    q.send(1).unwrap();
    q.release(q.try_receive().unwrap().receipt()).unwrap();
    // The dead-letter queue is full now; a sender blocks on it.
    let sender = blocked_sender(&dlq, 2);
    assert_eq!(dlq.redrive(&q, None, usize::MAX).moved, 1);
    assert_eq!(sender.join().unwrap(), Ok(()));
    assert_eq!(*dlq.try_receive().unwrap().body(), 2);
}

#[test]
fn many_blocked_senders_each_get_a_freed_slot() {
    const SENDERS: u32 = 4;
    let q = full_queue(2);
    let senders: Vec<_> = (0..SENDERS).map(|n| blocked_sender(&q, 100 + n)).collect();
    let mut received = Vec::new();
    while received.len() < (2 + SENDERS) as usize {
        let delivery = q.receive(LONG).expect("every blocked send goes through");
        received.push(*delivery.body());
        q.delete(delivery.receipt()).unwrap();
    }
    for sender in senders {
        assert_eq!(sender.join().unwrap(), Ok(()));
    }
    received.sort_unstable();
    assert_eq!(received, vec![0, 1, 100, 101, 102, 103]);
    assert_eq!(q.stats().refused_sends, 0);
}
