//! The conformance suite (tests/conformance/mod.rs) on Amazon SQS, against the SQS-compatible
//! server that `VISQ_SQS_ENDPOINT` names (`source <(.ci/moto.sh start)` starts moto and sets
//! it). Without it the test prints a skip line naming the variable, or fails when
//! `VISQ_REQUIRE_BROKERS=1`.
//!
//! Time passes by waiting on the server's clock: the cases use 2 s leases and delays (SQS
//! counts both in whole seconds), and believe "nothing there" after a 1 s long poll. Each case
//! creates its own standard queues (a fresh name with the process id and a counter) and
//! deletes them at the end.
//!
//! Where SQS promises less than visq the suite tests what SQS promises: an old receipt may
//! still settle a message (AWS: "the request succeeds, but the message might not be deleted";
//! moto deletes it), so stale receipts are checked as `Ok` or `Stale` with nothing lost or
//! duplicated; a receipt that was never issued is still `Stale`.
#![cfg(feature = "sqs")]

mod conformance;

use conformance::{Setup, StaleReceipts, Subject, Target, Time};
use std::sync::Arc;
use std::time::Duration;
use visq::Sqs;

fn sqs(endpoint: &str, setup: &Setup) -> Result<Subject, String> {
    // Credentials: from the environment, else the local server's "test"/"test".
    let mut builder = Sqs::builder(&setup.name)
        .endpoint_url(endpoint)
        .visibility_timeout(setup.visibility);
    if let Some(max_receives) = setup.max_receives {
        builder = builder.max_receives(max_receives);
    }
    let sqs = Arc::new(
        builder
            .build()
            .map_err(|error| format!("{}: {error}", setup.name))?,
    );
    let queues = Arc::clone(&sqs);
    Ok(Subject::new(sqs, move || {
        queues.delete_queues().map_err(|error| error.to_string())
    }))
}

#[test]
fn sqs_conforms() {
    let Some(endpoint) = conformance::broker_address("VISQ_SQS_ENDPOINT", "SQS", ".ci/moto.sh")
    else {
        return;
    };
    conformance::run(Target {
        backend: "SQS",
        time: Time::Real {
            // Visibility and delays are whole seconds on the server.
            slack: Duration::from_secs(1),
            quiet: Duration::from_secs(1),
        },
        stale_receipts: StaleReceipts::MayStillSettle,
        build: Box::new(move |setup| sqs(&endpoint, setup)),
    });
}
