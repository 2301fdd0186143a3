//! [`SqsBuilder`]: the queue's options, its credentials, and the queues it creates.

use super::connection::{Connection, Endpoint};
use super::{errors, wire, Sqs};
use crate::BackendError;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The longest a queue name may be on SQS, `.fifo` included.
const MAX_NAME_CHARS: usize = 80;
/// The redrive policy's `maxReceiveCount` range on SQS.
const MAX_RECEIVES: u32 = 1000;
/// How long the dead-letter queue keeps a message: 14 days, SQS's longest.
const DEAD_LETTER_RETENTION_SECONDS: u32 = 14 * 24 * 60 * 60;

/// Options for an [`Sqs`] backend; [`SqsBuilder::build`] connects and creates the queues.
///
/// ```no_run
/// use std::time::Duration;
/// use visq::Sqs;
/// // A local server (moto, see .ci/moto.sh); leave out endpoint_url for AWS itself.
/// let jobs = Sqs::builder("jobs")
///     .endpoint_url("http://127.0.0.1:4566")
///     .visibility_timeout(Duration::from_secs(30))
///     .max_receives(5) // redrive to "jobs-dlq" after 5 receives
///     .build()?;
/// # Ok::<(), visq::BackendError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SqsBuilder {
    queue: String,
    endpoint_url: Option<String>,
    region: String,
    credentials: Option<(String, String)>,
    visibility: Duration,
    max_receives: Option<u32>,
    fifo: bool,
}

impl SqsBuilder {
    pub(super) fn new(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            endpoint_url: None,
            region: "us-east-1".to_owned(),
            credentials: None,
            visibility: Duration::from_secs(30),
            max_receives: None,
            fifo: false,
        }
    }

    /// Talks to the server at `url` (a local one such as moto) instead of AWS's endpoint for
    /// the region.
    pub fn endpoint_url(mut self, url: &str) -> Self {
        self.endpoint_url = Some(url.to_owned());
        self
    }

    /// The AWS region; default `us-east-1`.
    pub fn region(mut self, region: &str) -> Self {
        self.region = region.to_owned();
        self
    }

    /// The access key id and secret. Default: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    /// (with `AWS_SESSION_TOKEN` if set) from the environment, else `test`/`test` when an
    /// endpoint URL is set (local servers take any); with neither, `build` fails.
    pub fn credentials(mut self, key: &str, secret: &str) -> Self {
        self.credentials = Some((key.to_owned(), secret.to_owned()));
        self
    }

    /// The queue's visibility timeout: how long a receive leases a message when it does not
    /// say; default 30 s, at most 12 hours, rounded up to whole seconds.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility = timeout;
        self
    }

    /// Dead-letters a message after `receives` receives (1 to 1000): the queue gets a
    /// redrive policy to a dead-letter queue named `{queue}-dlq` (`{queue}-dlq.fifo` for a
    /// FIFO queue), created with it and keeping messages 14 days.
    pub fn max_receives(mut self, receives: u32) -> Self {
        self.max_receives = Some(receives);
        self
    }

    /// A FIFO queue: the name gets `.fifo` (unless it has it), message groups and
    /// deduplication ids work, per-message delays do not.
    pub fn fifo(mut self, fifo: bool) -> Self {
        self.fifo = fifo;
        self
    }

    /// Checks the options, connects, and creates the queue (and its dead-letter queue) if
    /// missing; an existing queue gets this builder's visibility timeout and redrive policy.
    pub fn build(self) -> Result<Sqs, BackendError> {
        let base = self.queue.strip_suffix(".fifo").unwrap_or(&self.queue);
        let name = self.full_name(base);
        check_name(&name)?;
        let dead_letter_name = self.full_name(&format!("{base}-dlq"));
        if let Some(receives) = self.max_receives {
            check_name(&dead_letter_name)?;
            if !(1..=MAX_RECEIVES).contains(&receives) {
                return Err(BackendError::Fatal(format!(
                    "max_receives is {receives}; SQS takes 1 to {MAX_RECEIVES}"
                )));
            }
        }
        if self.visibility.is_zero() {
            return Err(BackendError::Fatal(
                "a zero visibility timeout leases nothing".into(),
            ));
        }
        let visibility = wire::visibility_seconds(self.visibility)?;
        let connection = Arc::new(Connection::open(self.endpoint()?)?);

        let mut attributes = HashMap::from([(
            QueueAttributeName::VisibilityTimeout,
            visibility.to_string(),
        )]);
        let dead_letters = match self.max_receives {
            Some(receives) => {
                let mut dlq_attributes = attributes.clone();
                dlq_attributes.insert(
                    QueueAttributeName::MessageRetentionPeriod,
                    DEAD_LETTER_RETENTION_SECONDS.to_string(),
                );
                let url = create_queue(&connection, &dead_letter_name, self.fifo, dlq_attributes)?;
                let arn = queue_arn(&connection, &url)?;
                attributes.insert(
                    QueueAttributeName::RedrivePolicy,
                    format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":{receives}}}"#),
                );
                let queue = Sqs::new(
                    Arc::clone(&connection),
                    dead_letter_name,
                    url,
                    self.fifo,
                    Duration::from_secs(visibility as u64),
                    None,
                );
                Some((Arc::new(queue), receives))
            }
            None => None,
        };
        let url = create_queue(&connection, &name, self.fifo, attributes)?;
        Ok(Sqs::new(
            connection,
            name,
            url,
            self.fifo,
            Duration::from_secs(visibility as u64),
            dead_letters,
        ))
    }

    fn full_name(&self, base: &str) -> String {
        if self.fifo {
            format!("{base}.fifo")
        } else {
            base.to_owned()
        }
    }

    fn endpoint(&self) -> Result<Endpoint, BackendError> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let (credentials, session_token) = match &self.credentials {
            Some(given) => (given.clone(), None),
            None => match (
                from_env("AWS_ACCESS_KEY_ID"),
                from_env("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Some(key), Some(secret)) => ((key, secret), from_env("AWS_SESSION_TOKEN")),
                _ if self.endpoint_url.is_some() => (("test".to_owned(), "test".to_owned()), None),
                _ => {
                    return Err(BackendError::Fatal(
                        "no SQS credentials: call .credentials(key, secret) or set \
                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                            .into(),
                    ))
                }
            },
        };
        Ok(Endpoint {
            url: self.endpoint_url.clone(),
            region: self.region.clone(),
            credentials,
            session_token,
        })
    }
}

/// SQS's rule for queue names: 1 to 80 characters, ASCII letters, digits, `-` and `_`, and a
/// `.fifo` suffix on FIFO queues.
fn check_name(name: &str) -> Result<(), BackendError> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    let valid = !base.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(BackendError::Fatal(format!(
            "{name:?} is not an SQS queue name: 1 to {MAX_NAME_CHARS} characters, letters, \
             digits, '-' and '_', then '.fifo' for a FIFO queue"
        )))
    }
}

/// Creates the queue, or sets `attributes` on it if it exists with others; its URL.
fn create_queue(
    connection: &Connection,
    name: &str,
    fifo: bool,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, BackendError> {
    let client = connection.client();
    let mut creation = attributes.clone();
    if fifo {
        creation.insert(QueueAttributeName::FifoQueue, "true".into());
        // The adapter gives every send without a deduplication id a unique one: a body sent
        // twice is two messages, as on the other backends.
        creation.insert(
            QueueAttributeName::ContentBasedDeduplication,
            "false".into(),
        );
    }
    let created = connection.run(
        client
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(creation))
            .send(),
    )?;
    match created {
        Ok(output) => output
            .queue_url
            .ok_or_else(|| BackendError::Fatal(format!("CreateQueue {name} answered no URL"))),
        Err(error) if error.code() == Some("QueueAlreadyExists") => {
            let url = connection
                .run(client.get_queue_url().queue_name(name).send())?
                .map_err(errors::from_sdk)?
                .queue_url
                .ok_or_else(|| {
                    BackendError::Fatal(format!("GetQueueUrl {name} answered no URL"))
                })?;
            connection
                .run(
                    client
                        .set_queue_attributes()
                        .queue_url(&url)
                        .set_attributes(Some(attributes))
                        .send(),
                )?
                .map_err(errors::from_sdk)?;
            Ok(url)
        }
        Err(error) => Err(errors::from_sdk(error)),
    }
}

fn queue_arn(connection: &Connection, url: &str) -> Result<String, BackendError> {
    let output = connection
        .run(
            connection
                .client()
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send(),
        )?
        .map_err(errors::from_sdk)?;
    output
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| BackendError::Fatal(format!("GetQueueAttributes {url} answered no ARN")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_sqs_rules() {
        assert!(check_name("jobs-1_a").is_ok());
        assert!(check_name("jobs.fifo").is_ok());
        assert!(check_name(&"a".repeat(80)).is_ok());
        assert!(check_name(&"a".repeat(81)).is_err());
        assert!(check_name("").is_err());
        assert!(check_name(".fifo").is_err());
        assert!(check_name("jobs.v2").is_err());
        assert!(check_name("jöbs").is_err());
    }
}
