//! The async front allocates nothing per wait: a future's waiter node lives inside the future,
//! so registering, being woken, receiving (or sending into room freed meanwhile), a second
//! wait on the same future and the drop of a registered future are all allocation-free, for a
//! waker whose clone does not allocate and a timer whose sleep does not. Counted by the
//! thread-local counting allocator (`tests/support/counting_alloc.rs`); nothing here spawns
//! threads.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::no_alloc;
use visq::{ManualClock, Queue};

const LONG: Duration = Duration::from_secs(3600);

/// A waker that counts wake-ups; cloning it bumps a reference count (no allocation).
#[derive(Default)]
struct Flag(AtomicUsize);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn never(_: Duration) -> std::future::Pending<()> {
    std::future::pending()
}

#[test]
fn waiting_registering_waking_and_cancelling_allocate_nothing() {
    let q: Queue<u64> = Queue::builder()
        .capacity(1)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut receive = pin!(q.receive_async(LONG, never));
    no_alloc("poll until registered", || {
        while q.waiting_receivers() == 0 {
            assert!(receive.as_mut().poll(&mut cx).is_pending());
        }
    });
    no_alloc("a send that wakes the future", || q.send(1).unwrap());
    assert!(flag.0.load(Ordering::SeqCst) > 0);
    let d = no_alloc("the woken future's receive", || {
        match receive.as_mut().poll(&mut cx) {
            Poll::Ready(Some(d)) => d,
            _ => panic!("woken for the message"),
        }
    });
    // Full (the message is leased): a send waits, registered, and a delete lets it in.
    let mut send = pin!(q.send_async(2, LONG, never));
    no_alloc("a send waiting for room", || {
        while q.waiting_senders() == 0 {
            assert!(send.as_mut().poll(&mut cx).is_pending());
        }
    });
    no_alloc("the delete that wakes it", || {
        q.delete(d.receipt()).unwrap()
    });
    no_alloc("the woken send", || {
        assert!(matches!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    });
    // A registered future dropped (in place, on the stack): unlinked without allocating.
    let d = q.try_receive().unwrap();
    let mut slot = pin!(Some(q.receive_async(LONG, never)));
    no_alloc("poll and drop a registered future", || {
        while q.waiting_receivers() == 0 {
            let receive = slot.as_mut().as_pin_mut().unwrap();
            assert!(receive.poll(&mut cx).is_pending());
        }
        slot.set(None);
    });
    assert_eq!(q.waiting_receivers(), 0);
    q.delete(d.receipt()).unwrap();
}
