//! A port of the classic tutorial design of a visibility-timeout queue, kept faithful on
//! purpose (it is the baseline "what most people write first"):
//!
//! * one `Mutex` over everything;
//! * ready messages in a `Vec`, received from the front (`remove(0)`, so FIFO);
//! * in-flight messages in a `HashMap<String, _>` keyed by a receipt string formatted from the
//!   message id and a counter; message ids are strings too;
//! * a background thread that wakes once a second and moves expired messages back to the
//!   ready list (so a lease expires up to a second late);
//! * consumers that poll: `receive(wait)` tries, and sleeps `poll` between tries (the
//!   tutorial's default is one second).
//!
//! The only additions are a capacity (so producers see "full" as with the other queues) and
//! a prompt shutdown of the background thread when the queue is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The tutorial's poll interval.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// How often the background thread looks for expired messages.
pub const REAPER_INTERVAL: Duration = Duration::from_secs(1);

/// A message as the tutorial stores it.
#[derive(Clone, Debug)]
pub struct Message<T> {
    pub id: String,
    pub body: T,
    pub receive_count: u32,
}

struct InFlight<T> {
    message: Message<T>,
    visible_at: Instant,
}

/// What a consumer gets.
#[derive(Clone, Debug)]
pub struct TutorialDelivery<T> {
    pub id: String,
    pub receipt: String,
    pub body: T,
    pub receive_count: u32,
}

struct State<T> {
    ready: Vec<Message<T>>,
    in_flight: HashMap<String, InFlight<T>>,
    next_id: u64,
    next_receipt: u64,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    stop: Mutex<bool>,
    stop_signal: Condvar,
}

/// The tutorial queue; see the module docs.
pub struct Tutorial<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    reaper: Option<JoinHandle<()>>,
    visibility_timeout: Duration,
    capacity: usize,
    poll: Duration,
}

impl<T: Clone + Send + 'static> Tutorial<T> {
    /// A queue holding at most `capacity` messages, whose consumers poll every `poll`.
    pub fn new(capacity: usize, visibility_timeout: Duration, poll: Duration) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ready: Vec::new(),
                in_flight: HashMap::new(),
                next_id: 0,
                next_receipt: 0,
                closed: false,
            }),
            stop: Mutex::new(false),
            stop_signal: Condvar::new(),
        });
        let reaper = {
            let shared = shared.clone();
            thread::spawn(move || reap(&shared))
        };
        Tutorial {
            shared,
            reaper: Some(reaper),
            visibility_timeout,
            capacity,
            poll,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn send(&self, body: T) -> Result<String, T> {
        let mut state = self.lock();
        if state.closed || state.ready.len() + state.in_flight.len() >= self.capacity {
            return Err(body);
        }
        let id = format!("msg-{}", state.next_id);
        state.next_id += 1;
        state.ready.push(Message {
            id: id.clone(),
            body,
            receive_count: 0,
        });
        Ok(id)
    }

    pub fn try_receive(&self) -> Option<TutorialDelivery<T>> {
        let mut state = self.lock();
        if state.ready.is_empty() {
            return None;
        }
        let mut message = state.ready.remove(0);
        message.receive_count += 1;
        let receipt = format!("{}-{}", message.id, state.next_receipt);
        state.next_receipt += 1;
        let delivery = TutorialDelivery {
            id: message.id.clone(),
            receipt: receipt.clone(),
            body: message.body.clone(),
            receive_count: message.receive_count,
        };
        state.in_flight.insert(
            receipt,
            InFlight {
                message,
                visible_at: Instant::now() + self.visibility_timeout,
            },
        );
        Some(delivery)
    }

    /// Polls: tries, then sleeps `poll` (or what is left of `wait`) and tries again.
    pub fn receive(&self, wait: Duration) -> Option<TutorialDelivery<T>> {
        let end = Instant::now() + wait;
        loop {
            if let Some(delivery) = self.try_receive() {
                return Some(delivery);
            }
            if self.lock().closed {
                return None;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            thread::sleep(self.poll.min(left));
        }
    }

    /// Up to `max` deliveries: waits (polling) for the first, then takes what is there.
    pub fn receive_batch(
        &self,
        out: &mut Vec<TutorialDelivery<T>>,
        max: usize,
        wait: Duration,
    ) -> usize {
        if max == 0 {
            return 0;
        }
        let Some(first) = self.receive(wait) else {
            return 0;
        };
        out.push(first);
        let mut taken = 1;
        while taken < max {
            let Some(delivery) = self.try_receive() else {
                break;
            };
            out.push(delivery);
            taken += 1;
        }
        taken
    }

    pub fn delete(&self, receipt: &str) -> bool {
        self.lock().in_flight.remove(receipt).is_some()
    }

    pub fn change_visibility(&self, receipt: &str, timeout: Duration) -> bool {
        match self.lock().in_flight.get_mut(receipt) {
            Some(entry) => {
                entry.visible_at = Instant::now() + timeout;
                true
            }
            None => false,
        }
    }

    pub fn release(&self, receipt: &str) -> bool {
        let mut state = self.lock();
        match state.in_flight.remove(receipt) {
            Some(entry) => {
                state.ready.push(entry.message);
                true
            }
            None => false,
        }
    }

    pub fn close(&self) {
        self.lock().closed = true;
    }
}

/// The background thread: once a second, move every expired message back to the ready list.
fn reap<T>(shared: &Shared<T>) {
    let mut stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        stop = shared
            .stop_signal
            .wait_timeout(stop, REAPER_INTERVAL)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        if *stop {
            return;
        }
        let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let expired: Vec<String> = state
            .in_flight
            .iter()
            .filter(|(_, entry)| entry.visible_at <= now)
            .map(|(receipt, _)| receipt.clone())
            .collect();
        for receipt in expired {
            if let Some(entry) = state.in_flight.remove(&receipt) {
                state.ready.push(entry.message);
            }
        }
    }
}

impl<T: Send + 'static> Drop for Tutorial<T> {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.stop_signal.notify_all();
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
    }
}
