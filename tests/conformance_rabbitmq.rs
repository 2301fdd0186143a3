//! The conformance suite (tests/conformance/mod.rs) on RabbitMQ, against the server that
//! `VISQ_RABBITMQ_URL` names (`source <(.ci/rabbitmq.sh start)` starts one and sets it).
//! Without it the test prints a skip line naming the variable, or fails when
//! `VISQ_REQUIRE_BROKERS=1`.
//!
//! Time passes by waiting on the broker's clock: the cases use 2 s leases and delays, and
//! believe "nothing there" after a 1 s wait. Each case declares its own queues (a fresh name
//! with the process id and a counter) and deletes them at the end.
#![cfg(feature = "rabbitmq")]

mod conformance;

use conformance::{Setup, StaleReceipts, Subject, Target, Time};
use std::sync::Arc;
use std::time::Duration;
use visq::RabbitMq;

fn rabbit(url: &str, setup: &Setup) -> Result<Subject, String> {
    // RabbitMQ leases do not expire (capabilities.leases_expire is false), so the setup's
    // default visibility has nothing to set.
    let mut builder = RabbitMq::builder(url, &setup.name);
    if let Some(max_receives) = setup.max_receives {
        builder = builder.max_receives(max_receives);
    }
    let rabbit = Arc::new(
        builder
            .build()
            .map_err(|error| format!("{}: {error}", setup.name))?,
    );
    let queues = Arc::clone(&rabbit);
    Ok(Subject::new(rabbit, move || {
        queues.delete_queues().map_err(|error| error.to_string())
    }))
}

#[test]
fn rabbitmq_conforms() {
    let Some(url) = conformance::broker_address("VISQ_RABBITMQ_URL", "RabbitMQ", ".ci/rabbitmq.sh")
    else {
        return;
    };
    conformance::run(Target {
        backend: "RabbitMQ",
        time: Time::Real {
            // Delays are per-delay TTL queues dead-lettering back: a hop and a confirm late.
            slack: Duration::from_secs(1),
            quiet: Duration::from_secs(1),
        },
        // Delivery tags are tracked per connection: an unknown or settled one is refused.
        stale_receipts: StaleReceipts::Refused,
        build: Box::new(move |setup| rabbit(&url, setup)),
    });
}
