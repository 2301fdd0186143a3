//! The SDK client and the runtime it runs on, behind blocking calls.
//!
//! aws-sdk-sqs is async. The adapter owns a small multi-thread tokio runtime (two worker
//! threads run the connection pool's I/O and timers) and each blocking trait call drives its
//! request with [`Runtime::block_on`] on the caller's own thread, so any number of threads
//! can call at once; a call made of several requests (a batch send split in calls of ten)
//! runs them concurrently on the workers. A call made from inside an async runtime (where blocking would stall the
//! runtime, and tokio would panic) is refused with a [`BackendError::Fatal`] that says to move
//! it onto a blocking thread.
//!
//! The client is configured explicitly, without `aws-config`: behavior version
//! [`BehaviorVersion::v2026_11_17`] (pinned, so an SDK upgrade does not change retries or
//! time-outs under the adapter), HTTPS through hyper and rustls on ring, the SDK's standard
//! retries (three attempts, for throttling and transient failures), a 3 s connect time-out and
//! a 60 s time-out per attempt (a 20 s long poll fits three times over).

use crate::BackendError;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use std::future::Future;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Where and as whom the client connects.
pub(super) struct Endpoint {
    /// A local server's URL; `None` for AWS itself (the region's endpoint).
    pub(super) url: Option<String>,
    /// The region requests are signed for.
    pub(super) region: String,
    /// Access key id and secret.
    pub(super) credentials: (String, String),
    /// A session token, for temporary credentials.
    pub(super) session_token: Option<String>,
}

/// The client and its runtime, shared by a queue and its dead-letter queue.
pub(super) struct Connection {
    /// Always `Some` until the drop, which takes it to shut it down without blocking.
    runtime: Option<Runtime>,
    client: Client,
}

impl Connection {
    /// Starts the runtime and configures the client. Makes no request.
    pub(super) fn open(endpoint: Endpoint) -> Result<Self, BackendError> {
        refuse_inside_async()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("visq-sqs")
            .enable_all()
            .build()
            .map_err(|error| {
                BackendError::Fatal(format!("cannot start the SQS runtime: {error}"))
            })?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let (key, secret) = endpoint.credentials;
        let mut config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::v2026_11_17())
            .region(Region::new(endpoint.region))
            .credentials_provider(Credentials::new(
                key,
                secret,
                endpoint.session_token,
                None,
                "visq",
            ))
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(url) = endpoint.url {
            config = config.endpoint_url(url);
        }
        Ok(Self {
            runtime: Some(runtime),
            client: Client::from_conf(config.build()),
        })
    }

    /// The SDK client.
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    fn runtime(&self) -> &Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime is only taken by the drop")
    }

    /// Runs `request` to completion on the calling thread.
    pub(super) fn run<F: Future>(&self, request: F) -> Result<F::Output, BackendError> {
        refuse_inside_async()?;
        Ok(self.runtime().block_on(request))
    }

    /// Runs every request at once (on the runtime's workers) and waits for all; their
    /// outputs in order. A request that panicked is answered with a [`BackendError::Fatal`].
    pub(super) fn run_all<F>(
        &self,
        requests: Vec<F>,
    ) -> Result<Vec<Result<F::Output, BackendError>>, BackendError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        refuse_inside_async()?;
        let runtime = self.runtime();
        let running: Vec<_> = requests
            .into_iter()
            .map(|request| runtime.spawn(request))
            .collect();
        Ok(runtime.block_on(async {
            let mut outputs = Vec::with_capacity(running.len());
            for request in running {
                outputs.push(request.await.map_err(|error| {
                    BackendError::Fatal(format!("an SQS request did not finish: {error}"))
                }));
            }
            outputs
        }))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // A plain drop blocks until the workers stop, and panics inside an async context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A blocking call from inside an async runtime would stall it (and tokio panics on it).
fn refuse_inside_async() -> Result<(), BackendError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        Err(BackendError::Fatal(
            "the SQS backend blocks: call it from a plain thread (tokio::task::spawn_blocking), \
             not from inside an async runtime"
                .into(),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Endpoint {
        Endpoint {
            url: Some("http://127.0.0.1:9".into()),
            region: "us-east-1".into(),
            credentials: ("test".into(), "test".into()),
            session_token: None,
        }
    }

    #[test]
    fn blocking_calls_are_refused_inside_an_async_runtime_not_a_panic() {
        let connection = Connection::open(local()).unwrap();
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outer.block_on(async {
            assert!(matches!(
                connection.run(async { 1 }),
                Err(BackendError::Fatal(message)) if message.contains("spawn_blocking")
            ));
            assert!(matches!(
                connection.run_all(vec![async { 1 }]),
                Err(BackendError::Fatal(_))
            ));
            assert!(matches!(
                Connection::open(local()),
                Err(BackendError::Fatal(_))
            ));
            // Dropping one in here does not panic either.
            drop(connection);
        });
    }

    #[test]
    fn run_all_answers_in_order() {
        let connection = Connection::open(local()).unwrap();
        let outputs = connection
            .run_all((0..5).map(|i| async move { i * 10 }).collect())
            .unwrap();
        assert_eq!(outputs, (0..5).map(|i| Ok(i * 10)).collect::<Vec<_>>());
    }
}
