//! The async front: receive_async, receive_batch_async, send_async and the delivery stream;
//! cancel safety (a dropped future loses no message, leaves no waiter, passes a wake-up on);
//! sync and async waiters on one queue; deadlines reaching async waiters. Queue time is a
//! `ManualClock` throughout; futures are polled by hand (a flag waker) where the test is about
//! what one poll does, and run on tokio where it is about a whole exchange.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};
use visq::{ManualClock, Queue, SendError};

const LONG: Duration = Duration::from_secs(3600);
const TICK: Duration = Duration::from_millis(1);
const LEASE: Duration = Duration::from_secs(30);

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Flag(AtomicUsize);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Flag {
    fn new() -> (Arc<Self>, Waker) {
        let flag = Arc::new(Self::default());
        let waker = Waker::from(flag.clone());
        (flag, waker)
    }
    fn woken(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn poll_once<F: Future>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

/// Polls a waiting future until it has registered: a wait first yields to the executor a few
/// times (waking itself at once), then registers and stays pending with no wake-up of its
/// own. The flag's count is put back to zero for the test's own counting.
fn wait_registered<F: Future>(mut future: Pin<&mut F>, flag: &Flag, waker: &Waker) {
    for _ in 0..1000 {
        let before = flag.woken();
        if poll_once(future.as_mut(), waker).is_ready() {
            panic!("expected the future to wait");
        }
        if flag.woken() == before {
            flag.0.store(0, Ordering::SeqCst);
            return;
        }
    }
    panic!("the future never registered");
}

/// A timer that never fires: the wait ends only by a message, a close or a wheel run.
fn never(_: Duration) -> std::future::Pending<()> {
    std::future::pending()
}

fn manual_queue(capacity: usize, clock: &ManualClock) -> Queue<u32> {
    Queue::builder()
        .capacity(capacity)
        .tick(TICK)
        .visibility_timeout(LEASE)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Waits (wall-clock, bounded) until `done()` holds, for another thread to get somewhere.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        thread::yield_now();
    }
}

#[test]
fn a_visible_message_is_received_on_the_first_poll_without_registering() {
    let q = manual_queue(4, &ManualClock::new());
    q.send(7).unwrap();
    let (flag, waker) = Flag::new();
    let mut receive = pin!(q.receive_async(LONG, never));
    let Poll::Ready(Some(d)) = poll_once(receive.as_mut(), &waker) else {
        panic!("the message was visible");
    };
    assert_eq!((*d.body(), d.receive_count()), (7, 1));
    assert_eq!(q.waiting_receivers(), 0);
    assert_eq!(flag.woken(), 0);
}

#[test]
fn a_send_wakes_a_waiting_future_which_then_gets_the_message() {
    let q = manual_queue(4, &ManualClock::new());
    let (flag, waker) = Flag::new();
    let mut receive = pin!(q.receive_async(LONG, never));
    wait_registered(receive.as_mut(), &flag, &waker);
    assert_eq!(q.waiting_receivers(), 1, "registered");
    q.send(1).unwrap();
    assert_eq!(flag.woken(), 1, "the send woke it");
    assert_eq!(q.waiting_receivers(), 0, "a woken future no longer counts");
    let Poll::Ready(Some(d)) = poll_once(receive.as_mut(), &waker) else {
        panic!("woken for a message");
    };
    assert_eq!(*d.body(), 1);
    assert_eq!(q.waiting_receivers(), 0);
}

#[test]
fn a_dropped_waiting_future_leaves_no_waiter_and_loses_no_message() {
    let q = manual_queue(4, &ManualClock::new());
    let (flag, waker) = Flag::new();
    {
        let mut receive = pin!(q.receive_async(LONG, never));
        wait_registered(receive.as_mut(), &flag, &waker);
        assert_eq!(q.waiting_receivers(), 1);
    }
    assert_eq!(q.waiting_receivers(), 0, "the drop unlinked it");
    q.send(1).unwrap();
    assert_eq!(flag.woken(), 0, "nobody left to wake");
    let d = q.try_receive().expect("the message is still there");
    assert_eq!((*d.body(), d.receive_count()), (1, 1));
}

#[test]
fn a_woken_future_dropped_before_it_looks_passes_the_wake_up_on() {
    let q = manual_queue(4, &ManualClock::new());
    let (first_flag, first_waker) = Flag::new();
    let (second_flag, second_waker) = Flag::new();
    let mut second = pin!(q.receive_async(LONG, never));
    {
        let mut first = pin!(q.receive_async(LONG, never));
        wait_registered(first.as_mut(), &first_flag, &first_waker);
        wait_registered(second.as_mut(), &second_flag, &second_waker);
        assert_eq!(q.waiting_receivers(), 2);
        q.send(1).unwrap();
        assert_eq!(first_flag.woken(), 1, "first registered, first woken");
        assert_eq!(second_flag.woken(), 0);
        // Dropped without looking: the message it was woken for must not wait for nothing.
    }
    assert_eq!(second_flag.woken(), 1, "the wake-up was passed on");
    let Poll::Ready(Some(d)) = poll_once(second.as_mut(), &second_waker) else {
        panic!("the second future gets the message");
    };
    assert_eq!(*d.body(), 1);
    assert_eq!(q.waiting_receivers(), 0);
}

#[test]
fn a_woken_future_that_looked_and_found_nothing_registers_again() {
    let q = manual_queue(4, &ManualClock::new());
    let (flag, waker) = Flag::new();
    let mut receive = pin!(q.receive_async(LONG, never));
    wait_registered(receive.as_mut(), &flag, &waker);
    q.send(1).unwrap();
    // Someone else takes it first.
    let taken = q.try_receive().unwrap();
    assert_eq!(flag.woken(), 1, "woken for the first message");
    // Woken, it looks, finds nothing and registers again at once (no more yields).
    assert!(poll_once(receive.as_mut(), &waker).is_pending());
    assert_eq!(flag.woken(), 1, "no yield: registered");
    assert_eq!(q.waiting_receivers(), 1, "waiting again");
    q.delete(taken.receipt()).unwrap();
    q.send(2).unwrap();
    assert_eq!(flag.woken(), 2);
    let Poll::Ready(Some(d)) = poll_once(receive.as_mut(), &waker) else {
        panic!("woken for the second message");
    };
    assert_eq!(*d.body(), 2);
}

#[test]
fn close_wakes_every_waiting_future_and_they_resolve_to_none() {
    let q = manual_queue(4, &ManualClock::new());
    let flags: Vec<_> = (0..3).map(|_| Flag::new()).collect();
    let mut futures: Vec<_> = (0..3)
        .map(|_| Box::pin(q.receive_async(LONG, never)))
        .collect();
    for (future, (flag, waker)) in futures.iter_mut().zip(&flags) {
        wait_registered(future.as_mut(), flag, waker);
    }
    assert_eq!(q.waiting_receivers(), 3);
    q.close();
    for (future, (flag, waker)) in futures.iter_mut().zip(&flags) {
        assert_eq!(flag.woken(), 1);
        assert!(matches!(
            poll_once(future.as_mut(), waker),
            Poll::Ready(None)
        ));
    }
    assert_eq!(q.waiting_receivers(), 0);
}

#[test]
fn an_expiring_lease_wakes_a_waiting_future_through_another_operations_wheel_run() {
    let clock = ManualClock::new();
    let q = manual_queue(4, &clock);
    q.send(1).unwrap();
    let abandoned = q.try_receive().unwrap();
    let (flag, waker) = Flag::new();
    let mut receive = pin!(q.receive_async(LONG, never));
    wait_registered(receive.as_mut(), &flag, &waker);
    clock.advance(LEASE - TICK);
    q.stats(); // runs the wheel: nothing due yet
    assert!(
        poll_once(receive.as_mut(), &waker).is_pending(),
        "never early"
    );
    clock.advance(TICK * 2);
    q.stats(); // runs the wheel: the lease expires, the message is visible again
    assert!(flag.woken() >= 1, "the wheel run woke the future");
    let Poll::Ready(Some(d)) = poll_once(receive.as_mut(), &waker) else {
        panic!("the expired lease's message");
    };
    assert_eq!((d.id(), d.receive_count()), (abandoned.id(), 2));
}

#[test]
fn a_delay_ending_wakes_a_waiting_future_never_early() {
    let clock = ManualClock::new();
    let q = manual_queue(4, &clock);
    q.send_delayed(9, Duration::from_secs(10)).unwrap();
    let (flag, waker) = Flag::new();
    let mut receive = pin!(q.receive_async(LONG, never));
    wait_registered(receive.as_mut(), &flag, &waker);
    clock.advance(Duration::from_secs(10) - TICK);
    q.stats(); // runs the wheel: not yet
    assert!(
        poll_once(receive.as_mut(), &waker).is_pending(),
        "never early"
    );
    clock.advance(TICK * 2);
    q.stats(); // the delay has ended: visible, and the waiting future is woken
    assert!(flag.woken() >= 1);
    let Poll::Ready(Some(d)) = poll_once(receive.as_mut(), &waker) else {
        panic!("the delayed message");
    };
    assert_eq!((*d.body(), d.receive_count()), (9, 1));
}

/// A timer that records each nap it is asked for and completes when told.
#[derive(Clone, Default)]
struct RecordingTimer {
    asked: Arc<Mutex<Vec<Duration>>>,
    fire: Arc<AtomicUsize>,
}

impl RecordingTimer {
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        self.asked.lock().unwrap().push(d);
        let (fire, at) = (self.fire.clone(), self.fire.load(Ordering::SeqCst));
        std::future::poll_fn(move |_| {
            if fire.load(Ordering::SeqCst) > at {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

#[test]
fn a_waiting_future_naps_until_the_wheels_next_deadline_not_its_whole_wait() {
    // The monotonic clock: the nap is wall-clock time until the lease's deadline. Nothing here
    // waits for it; the test looks at what the future asked its timer for.
    let q: Queue<u32> = Queue::builder()
        .tick(TICK)
        .visibility_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    q.send(1).unwrap();
    let _leased = q.try_receive().unwrap();
    let timer = RecordingTimer::default();
    let (flag, waker) = Flag::new();
    let mut receive = pin!(q.receive_async(LONG, |d| timer.sleep(d)));
    wait_registered(receive.as_mut(), &flag, &waker);
    let asked = timer.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0] <= Duration::from_millis(202) && asked[0] > Duration::from_millis(100),
        "napped {:?}: until the lease's deadline",
        asked[0]
    );
    // Polled again (say, a spurious wake-up): the nap in progress is kept, not remade.
    assert!(poll_once(receive.as_mut(), &waker).is_pending());
    assert_eq!(timer.asked.lock().unwrap().len(), 1);
}

#[test]
fn the_wait_ends_when_the_timer_says_so_and_the_future_resolves_to_none() {
    let q = manual_queue(4, &ManualClock::new());
    let (_, waker) = Flag::new();
    // A zero wait: one look, no registration.
    let mut now = pin!(q.receive_async(Duration::ZERO, never));
    assert!(matches!(poll_once(now.as_mut(), &waker), Poll::Ready(None)));
    assert_eq!(q.waiting_receivers(), 0);
    // A 1 ns wait is over by the time its timer fires.
    let timer = RecordingTimer::default();
    let mut short = pin!(q.receive_async(Duration::from_nanos(1), |d| timer.sleep(d)));
    let mut first = poll_once(short.as_mut(), &waker);
    for _ in 0..1000 {
        if first.is_ready() || !timer.asked.lock().unwrap().is_empty() {
            break;
        }
        first = poll_once(short.as_mut(), &waker); // the yields before it registers
    }
    if first.is_pending() {
        timer.fire.fetch_add(1, Ordering::SeqCst);
        assert!(matches!(
            poll_once(short.as_mut(), &waker),
            Poll::Ready(None)
        ));
    } else {
        assert!(matches!(first, Poll::Ready(None)));
    }
    assert_eq!(
        q.waiting_receivers(),
        0,
        "a finished future leaves nothing registered"
    );
}

#[test]
fn sync_and_async_receivers_waiting_on_one_queue_are_both_woken() {
    let q: Arc<Queue<u32>> = Arc::new(manual_queue(4, &ManualClock::new()));
    let parked = {
        let q = q.clone();
        thread::spawn(move || q.receive(Duration::from_secs(30)).map(|d| *d.body()))
    };
    let (flag, waker) = Flag::new();
    let mut receive = pin!(q.receive_async(LONG, never));
    wait_registered(receive.as_mut(), &flag, &waker);
    wait_until("the thread parks too", || q.waiting_receivers() == 2);
    q.send(1).unwrap();
    q.send(2).unwrap();
    let from_thread = parked.join().unwrap().expect("the parked thread was woken");
    assert_eq!(flag.woken(), 1, "the future was woken");
    let Poll::Ready(Some(d)) = poll_once(receive.as_mut(), &waker) else {
        panic!("the future gets the other message");
    };
    let mut got = [from_thread, *d.body()];
    got.sort();
    assert_eq!(got, [1, 2]);
}

#[test]
fn send_async_waits_for_room_and_hands_the_body_back_on_close() {
    let q = manual_queue(1, &ManualClock::new());
    q.send(1).unwrap();
    let (flag, waker) = Flag::new();
    {
        let mut send = pin!(q.send_async(2, LONG, never));
        wait_registered(send.as_mut(), &flag, &waker);
        assert_eq!(q.waiting_senders(), 1);
        let d = q.try_receive().unwrap();
        q.delete(d.receipt()).unwrap();
        assert_eq!(flag.woken(), 1, "the delete woke the sender");
        assert!(matches!(
            poll_once(send.as_mut(), &waker),
            Poll::Ready(Ok(_))
        ));
    }
    assert_eq!(*q.try_receive().unwrap().body(), 2);
    // Full again (the message is leased): a zero wait hands the body back at once.
    let mut refused = pin!(q.send_async(3, Duration::ZERO, never));
    assert!(matches!(
        poll_once(refused.as_mut(), &waker),
        Poll::Ready(Err(SendError::Full(3)))
    ));
    let mut closing = pin!(q.send_async(4, LONG, never));
    wait_registered(closing.as_mut(), &flag, &waker);
    q.close();
    assert!(matches!(
        poll_once(closing.as_mut(), &waker),
        Poll::Ready(Err(SendError::Closed(4)))
    ));
    assert_eq!(q.waiting_senders(), 0);
}

#[test]
fn receive_batch_async_waits_for_the_first_then_takes_what_is_visible() {
    let q = manual_queue(8, &ManualClock::new());
    let mut out = Vec::with_capacity(4);
    let (flag, waker) = Flag::new();
    {
        let mut batch = pin!(q.receive_batch_async(&mut out, 4, LONG, never));
        wait_registered(batch.as_mut(), &flag, &waker);
        for n in 0..6 {
            q.send(n).unwrap();
        }
        assert!(flag.woken() >= 1);
        assert!(matches!(poll_once(batch.as_mut(), &waker), Poll::Ready(4)));
    }
    let bodies: Vec<u32> = out.iter().map(|d| *d.body()).collect();
    assert_eq!(bodies, [0, 1, 2, 3]);
}

#[test]
fn a_tokio_service_receives_everything_sent_through_the_async_front() {
    // A multi-thread runtime: 4 producers, 4 consumers, some of whose receives are cancelled
    // by short runtime timeouts (a cancelled future must lose nothing). Bounded: 4 x 500
    // messages, each accounted for once.
    const PER_PRODUCER: u32 = 500;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(64).build().unwrap());
    let seen: Vec<u32> = runtime.block_on(async {
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let q = q.clone();
                tokio::spawn(async move {
                    for n in 0..PER_PRODUCER {
                        q.send_async(p * PER_PRODUCER + n, LONG, tokio::time::sleep)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..4)
            .map(|c| {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut attempt = 0u32;
                    loop {
                        attempt += 1;
                        let receive = q.receive_async(LONG, tokio::time::sleep);
                        // Every third receive is cancelled after 50 us unless it is done.
                        let delivery = if (attempt + c) % 3 == 0 {
                            match tokio::time::timeout(Duration::from_micros(50), receive).await {
                                Ok(delivery) => delivery,
                                Err(_) => continue,
                            }
                        } else {
                            receive.await
                        };
                        let Some(d) = delivery else { break };
                        got.push(*d.body());
                        q.delete(d.receipt()).unwrap();
                    }
                    got
                })
            })
            .collect();
        for producer in producers {
            producer.await.unwrap();
        }
        q.close();
        let mut seen = Vec::new();
        for consumer in consumers {
            seen.extend(consumer.await.unwrap());
        }
        seen
    });
    let mut seen = seen;
    seen.sort_unstable();
    let expected: Vec<u32> = (0..4 * PER_PRODUCER).collect();
    assert_eq!(
        seen, expected,
        "every message received and deleted exactly once"
    );
    assert_eq!(q.waiting_receivers(), 0);
    let stats = q.stats();
    assert_eq!(
        (stats.sent, stats.deleted, stats.received),
        (2000, 2000, 2000)
    );
}

#[test]
fn the_delivery_stream_yields_in_send_order_and_ends_once_closed_and_drained() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(16).build().unwrap());
    let bodies = runtime.block_on(async {
        let producer = {
            let q = q.clone();
            tokio::spawn(async move {
                for n in 0..100 {
                    q.send_async(n, LONG, tokio::time::sleep).await.unwrap();
                    if n % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                q.close();
            })
        };
        let mut bodies = Vec::new();
        let mut deliveries = pin!(q.delivery_stream(tokio::time::sleep));
        while let Some(d) = deliveries.as_mut().next().await {
            bodies.push(*d.body());
            q.delete(d.receipt()).unwrap();
        }
        producer.await.unwrap();
        bodies
    });
    assert_eq!(bodies, (0..100).collect::<Vec<_>>());
}

#[test]
fn threads_and_futures_consuming_one_queue_together_account_for_every_message() {
    // Two parked-thread consumers and two async consumers (a 2-worker tokio runtime) on one
    // 32-slot queue, two async producers: 2 x 1000 messages, each received and deleted once.
    const PER_PRODUCER: u32 = 1000;
    let q: Arc<Queue<u32>> = Arc::new(Queue::builder().capacity(32).build().unwrap());
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(d) = q.receive(Duration::from_secs(30)) {
                    got.push(*d.body());
                    q.delete(d.receipt()).unwrap();
                }
                got
            })
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let mut seen: Vec<u32> = runtime.block_on(async {
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let q = q.clone();
                tokio::spawn(async move {
                    for n in 0..PER_PRODUCER {
                        q.send_async(p * PER_PRODUCER + n, LONG, tokio::time::sleep)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(d) = q.receive_async(LONG, tokio::time::sleep).await {
                        got.push(*d.body());
                        q.delete(d.receipt()).unwrap();
                    }
                    got
                })
            })
            .collect();
        for producer in producers {
            producer.await.unwrap();
        }
        q.close();
        let mut seen = Vec::new();
        for consumer in consumers {
            seen.extend(consumer.await.unwrap());
        }
        seen
    });
    for consumer in threads {
        seen.extend(consumer.join().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..2 * PER_PRODUCER).collect::<Vec<_>>());
    assert_eq!((q.waiting_receivers(), q.waiting_senders()), (0, 0));
}

#[cfg(feature = "stream")]
#[test]
fn the_delivery_stream_is_a_futures_core_stream() {
    use futures_core::Stream;
    let q = manual_queue(4, &ManualClock::new());
    let (flag, waker) = Flag::new();
    let mut deliveries = pin!(q.delivery_stream(never));
    let mut cx = Context::from_waker(&waker);
    for _ in 0..1000 {
        assert!(deliveries.as_mut().poll_next(&mut cx).is_pending());
        if q.waiting_receivers() == 1 {
            break;
        }
    }
    assert_eq!(q.waiting_receivers(), 1, "registered");
    let woken = flag.woken();
    q.send(3).unwrap();
    assert_eq!(flag.woken(), woken + 1);
    let Poll::Ready(Some(d)) = deliveries.as_mut().poll_next(&mut cx) else {
        panic!("the message");
    };
    assert_eq!(*d.body(), 3);
    q.close();
    assert!(matches!(
        deliveries.as_mut().poll_next(&mut cx),
        Poll::Ready(None)
    ));
}
