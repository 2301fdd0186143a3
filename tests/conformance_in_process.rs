//! The conformance suite (tests/conformance/mod.rs) on the in-process queue: a
//! `Queue<Vec<u8>>` on a `ManualClock`, so time passes without waiting.

mod conformance;

use conformance::{Setup, StaleReceipts, Subject, Target, Time};
use std::sync::Arc;
use std::time::Duration;
use visq::{
    Accepted, Backend, BackendError, Capabilities, Handle, Incoming, ManualClock, Outgoing, Queue,
    ReceiveCount, Refused,
};

/// Room for every case's messages.
const CAPACITY: usize = 1024;

/// A queue as the setup asks, on `clock`, with a dead-letter queue when it asks for a limit.
fn queue(setup: &Setup, clock: &ManualClock, tick: Duration) -> Result<Queue<Vec<u8>>, String> {
    let mut builder = Queue::builder()
        .capacity(CAPACITY)
        .visibility_timeout(setup.visibility)
        .tick(tick)
        .clock(clock.clone());
    if let Some(max_receives) = setup.max_receives {
        let dlq: Arc<Queue<Vec<u8>>> = Arc::new(
            Queue::builder()
                .capacity(CAPACITY)
                .tick(tick)
                .clock(clock.clone())
                .build()
                .map_err(|error| format!("{} (dead letters): {error}", setup.name))?,
        );
        builder = builder.dead_letter(dlq, max_receives);
    }
    builder
        .build()
        .map_err(|error| format!("{}: {error}", setup.name))
}

#[test]
fn the_in_process_queue_conforms() {
    let clock = ManualClock::new();
    let tick = Duration::from_millis(1);
    let time = Time::Manual {
        clock: clock.clone(),
        tick,
    };
    conformance::run(Target {
        backend: "in-process",
        time,
        stale_receipts: StaleReceipts::Refused,
        known_gaps: &[(
            "wait_over_limit",
            "src/backend/in_process.rs passes any wait to Queue::receive although \
             capabilities().max_wait is MAX_TIMEOUT; reported to the lead",
        )],
        // Nothing outlives a queue: dropping it is the teardown.
        build: Box::new(move |setup| {
            Ok(Subject::new(Arc::new(queue(setup, &clock, tick)?), || {
                Ok(())
            }))
        }),
    });
}

/// A fault planted in an otherwise correct backend, for checking that the suite fails it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `delete` answers `Ok` and deletes nothing.
    DeleteDoesNothing,
    /// `change_visibility` answers `Ok` and changes nothing (unless zero).
    ChangeVisibilityDoesNothing,
    /// `release` answers `Ok` and releases nothing.
    ReleaseDoesNothing,
    /// A receipt that names no lease is accepted by `delete`.
    StaleReceiptAccepted,
    /// Groups and attributes are dropped instead of refused.
    FeaturesDropped,
    /// Delays are dropped.
    DelayDropped,
    /// Receive counts are one too high.
    CountsOneHigh,
    /// A lease asked for on receive ends two ticks early.
    LeasesEndEarly,
    /// `delete_batch` answers its results in reverse order.
    BatchResultsReversed,
    /// A refused send hands back an empty body.
    RefusedBodyLost,
}

/// The in-process queue with one [`Fault`].
struct Faulty {
    queue: Queue<Vec<u8>>,
    fault: Fault,
    tick: Duration,
}

impl Backend for Faulty {
    type Body = Vec<u8>;

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.queue.capabilities();
        if self.fault == Fault::FeaturesDropped {
            capabilities.groups = false;
            capabilities.attributes = false;
        }
        capabilities
    }

    fn send_batch(&self, batch: Vec<Outgoing<Vec<u8>>>) -> Vec<Result<Accepted, Refused<Vec<u8>>>> {
        let batch = batch.into_iter().map(|mut message| {
            match self.fault {
                Fault::FeaturesDropped => {
                    message.group = None;
                    message.attributes.clear();
                }
                Fault::DelayDropped => message.delay = Duration::ZERO,
                _ => {}
            }
            message
        });
        let mut results = self.queue.send_batch(batch.collect());
        if self.fault == Fault::RefusedBodyLost {
            for refused in results.iter_mut().filter_map(|r| r.as_mut().err()) {
                refused.body.clear();
            }
        }
        results
    }

    fn receive(
        &self,
        out: &mut Vec<Incoming<Vec<u8>>>,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<usize, BackendError> {
        let visibility = match (self.fault, visibility) {
            (Fault::LeasesEndEarly, Some(v)) => Some(v - 2 * self.tick),
            _ => visibility,
        };
        let start = out.len();
        let taken = Backend::receive(&self.queue, out, max, wait, visibility)?;
        if self.fault == Fault::CountsOneHigh {
            for delivery in &mut out[start..] {
                if let ReceiveCount::Exact(n) = delivery.receive_count {
                    delivery.receive_count = ReceiveCount::Exact(n + 1);
                }
            }
        }
        Ok(taken)
    }

    fn delete(&self, receipt: &Handle) -> Result<(), BackendError> {
        if self.fault == Fault::DeleteDoesNothing {
            return Ok(());
        }
        match (self.fault, Backend::delete(&self.queue, receipt)) {
            (Fault::StaleReceiptAccepted, Err(BackendError::Stale)) => Ok(()),
            (_, result) => result,
        }
    }

    fn delete_batch(&self, receipts: &[Handle]) -> Vec<Result<(), BackendError>> {
        let mut results: Vec<_> = receipts.iter().map(|r| self.delete(r)).collect();
        if self.fault == Fault::BatchResultsReversed {
            results.reverse();
        }
        results
    }

    fn change_visibility(&self, receipt: &Handle, timeout: Duration) -> Result<(), BackendError> {
        if self.fault == Fault::ChangeVisibilityDoesNothing && !timeout.is_zero() {
            return Ok(());
        }
        Backend::change_visibility(&self.queue, receipt, timeout)
    }

    fn release(&self, receipt: &Handle) -> Result<(), BackendError> {
        if self.fault == Fault::ReleaseDoesNothing {
            return Ok(());
        }
        Backend::release(&self.queue, receipt)
    }

    fn hand_back(&self, receipt: &Handle) -> Result<(), BackendError> {
        Backend::hand_back(&self.queue, receipt)
    }

    fn dead_letter(&self, receipt: &Handle, reason: &str) -> Result<(), BackendError> {
        Backend::dead_letter(&self.queue, receipt, reason)
    }

    fn dead_letter_queue(&self) -> Option<Arc<dyn Backend<Body = Vec<u8>>>> {
        Backend::dead_letter_queue(&self.queue)
    }

    fn dead_letter_limit(&self) -> Option<u32> {
        Backend::dead_letter_limit(&self.queue)
    }
}

/// Each planted fault fails the suite, in the case named beside it: the suite can fail.
#[test]
fn the_suite_fails_a_broken_backend() {
    let planted = [
        (Fault::DeleteDoesNothing, "send_receive_delete"),
        (Fault::ChangeVisibilityDoesNothing, "extend_lease"),
        (Fault::ChangeVisibilityDoesNothing, "shorten_lease"),
        (Fault::ReleaseDoesNothing, "release"),
        (Fault::StaleReceiptAccepted, "stale_receipts"),
        (Fault::StaleReceiptAccepted, "batch_delete_mixed"),
        (Fault::FeaturesDropped, "optional_features"),
        (Fault::DelayDropped, "delayed_send"),
        (Fault::CountsOneHigh, "receive_counts"),
        (Fault::LeasesEndEarly, "visibility_expiry"),
        (Fault::BatchResultsReversed, "batch_delete_mixed"),
        (Fault::RefusedBodyLost, "batch_send_mixed"),
    ];
    for (fault, caught_by) in planted {
        let clock = ManualClock::new();
        let tick = Duration::from_millis(1);
        let target = Target {
            backend: "in-process with a planted fault",
            time: Time::Manual {
                clock: clock.clone(),
                tick,
            },
            stale_receipts: StaleReceipts::Refused,
            known_gaps: &[],
            build: Box::new(move |setup| {
                let queue = queue(setup, &clock, tick)?;
                let faulty = Faulty { queue, fault, tick };
                Ok(Subject::new(Arc::new(faulty), || Ok(())))
            }),
        };
        assert!(
            conformance::fails(&target, caught_by),
            "{fault:?} was not caught by {caught_by}"
        );
    }
}
