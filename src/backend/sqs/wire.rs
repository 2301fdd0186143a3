//! What goes over the wire: bytes as SQS text, attributes, and the limits SQS sets, checked
//! before any call is made.
//!
//! # Bodies
//!
//! An SQS body is text of at least one character, drawn from `#x9 | #xA | #xD | #x20-#xD7FF |
//! #xE000-#xFFFD | #x10000-#x10FFFF`. The trait's bodies are bytes, so:
//!
//! | the bytes | the body sent | the `visq.encoding` attribute |
//! |---|---|---|
//! | UTF-8 text of those characters, not empty | the text itself | none |
//! | anything else, not empty | their standard base64 | `base64` |
//! | empty | `-` | `empty` |
//!
//! A receive reverses it and leaves the `visq.encoding` attribute out of
//! [`Incoming::attributes`](crate::Incoming). A message some other producer sent is taken as
//! its text; one whose `visq.encoding` cannot be decoded is delivered as its text with the
//! attribute left in, for the consumer to see.
//!
//! # Limits
//!
//! | limit | [`Limit`] | checked on |
//! |---|---|---|
//! | 10 attributes per message, the encoding marker included | none: [`BackendError::Fatal`] | each send entry |
//! | 256 KiB per message: the body as sent plus each attribute's name, type (`String`) and value, as SQS counts it | `BodyBytes` | each send entry |
//! | 10 entries per call | `BatchEntries` | `delete_batch`, `change_visibility_batch` (`send_batch` splits instead) |
//! | 15 minutes of delay | `DelayMillis` | each send entry |
//! | 12 hours of visibility | `VisibilityMillis` | receive, change visibility |
//! | 20 s of long-poll wait | `WaitMillis` | receive |
//!
//! SQS counts time in whole seconds. A delay or a visibility timeout is rounded **up** to the
//! next second (a deadline is never early, and at most one second late); a long-poll wait is
//! rounded **down** (a receive never waits longer than asked).

use crate::{BackendError, Limit};
use aws_sdk_sqs::types::MessageAttributeValue;
use aws_smithy_types::base64;
use std::collections::HashMap;
use std::time::Duration;

/// Largest message SQS takes by default, in bytes: body plus attributes.
pub(super) const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Most entries in one batch call, and most messages in one receive.
pub(super) const MAX_BATCH: usize = 10;
/// Most message attributes SQS takes on one message.
pub(super) const MAX_ATTRIBUTES: usize = 10;
/// Longest per-message delay.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Longest visibility timeout.
pub(super) const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// Longest long-poll wait.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(20);

/// The attribute that says how a body was encoded (module docs).
const ENCODING: &str = "visq.encoding";
const BASE64: &str = "base64";
const EMPTY: &str = "empty";
/// The body an empty message is sent with.
const EMPTY_BODY: &str = "-";
/// The only attribute data type the adapter sends.
const STRING: &str = "String";

/// A message as SQS takes it.
pub(super) struct WireMessage {
    /// The body text.
    pub(super) body: String,
    /// The message attributes, the encoding marker included.
    pub(super) attributes: HashMap<String, MessageAttributeValue>,
}

impl WireMessage {
    /// Encodes `body` and `attributes`; [`Limit::BodyBytes`] when the result is over SQS's
    /// size limit. The bytes are copied: the caller keeps them to hand back on a refusal.
    pub(super) fn encode(
        body: &[u8],
        attributes: &[(String, String)],
    ) -> Result<Self, BackendError> {
        let (text, encoding) = match std::str::from_utf8(body) {
            Ok("") => (EMPTY_BODY.to_owned(), Some(EMPTY)),
            Ok(text) if text.chars().all(is_sqs_text) => (text.to_owned(), None),
            _ => (base64::encode(body), Some(BASE64)),
        };
        let mut wire = Self {
            body: text,
            attributes: HashMap::with_capacity(attributes.len() + 1),
        };
        for (name, value) in attributes {
            wire.attributes
                .insert(name.clone(), string_attribute(value));
        }
        if let Some(encoding) = encoding {
            wire.attributes
                .insert(ENCODING.to_owned(), string_attribute(encoding));
        }
        if wire.attributes.len() > MAX_ATTRIBUTES {
            return Err(BackendError::Fatal(format!(
                "SQS takes at most {MAX_ATTRIBUTES} attributes on a message; this one has {} \
                 (a body that is not SQS text uses one for its encoding)",
                wire.attributes.len()
            )));
        }
        BackendError::check_limit(
            Limit::BodyBytes,
            MAX_MESSAGE_BYTES as u64,
            wire.size() as u64,
        )?;
        Ok(wire)
    }

    /// The size SQS counts against [`MAX_MESSAGE_BYTES`].
    pub(super) fn size(&self) -> usize {
        let attributes: usize = self
            .attributes
            .iter()
            .map(|(name, value)| {
                name.len()
                    + value.data_type().len()
                    + value.string_value().map_or(0, str::len)
                    + value.binary_value().map_or(0, |blob| blob.as_ref().len())
            })
            .sum();
        self.body.len() + attributes
    }
}

/// A received body and its attributes, decoded back into bytes and string pairs. Binary and
/// list attributes (which the adapter never sends) are left out.
pub(super) fn decode(
    body: String,
    attributes: Option<&HashMap<String, MessageAttributeValue>>,
) -> (Vec<u8>, Vec<(String, String)>) {
    let mut pairs: Vec<(String, String)> = attributes
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name.clone(), value.string_value()?.to_owned())))
        .collect();
    pairs.sort();
    let marker = pairs.iter().position(|(name, _)| name == ENCODING);
    let decoded = marker.and_then(|at| match pairs[at].1.as_str() {
        EMPTY => Some(Vec::new()),
        BASE64 => base64::decode(&body).ok(),
        _ => None,
    });
    match (marker, decoded) {
        (Some(at), Some(bytes)) => {
            pairs.remove(at);
            (bytes, pairs)
        }
        _ => (body.into_bytes(), pairs),
    }
}

/// A string attribute value.
pub(super) fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(STRING)
        .string_value(value)
        .build()
        .expect("the data type, the one required field, is set")
}

/// A delay in whole seconds, rounded up; [`Limit::DelayMillis`] over 15 minutes.
pub(super) fn delay_seconds(delay: Duration) -> Result<i32, BackendError> {
    check(Limit::DelayMillis, MAX_DELAY, delay)?;
    Ok(seconds_up(delay))
}

/// A visibility timeout in whole seconds, rounded up; [`Limit::VisibilityMillis`] over 12 hours.
pub(super) fn visibility_seconds(timeout: Duration) -> Result<i32, BackendError> {
    check(Limit::VisibilityMillis, MAX_VISIBILITY, timeout)?;
    Ok(seconds_up(timeout))
}

/// A long-poll wait in whole seconds, rounded down; [`Limit::WaitMillis`] over 20 s.
pub(super) fn wait_seconds(wait: Duration) -> Result<i32, BackendError> {
    check(Limit::WaitMillis, MAX_WAIT, wait)?;
    // At most 20 after the check.
    Ok(wait.as_secs() as i32)
}

/// [`Limit::BatchEntries`] over 10 entries.
pub(super) fn check_batch(entries: usize) -> Result<(), BackendError> {
    BackendError::check_limit(Limit::BatchEntries, MAX_BATCH as u64, entries as u64)
}

/// Compares the durations themselves (not their milliseconds, which would let 12 h + 0.5 ms
/// through to be rounded up past the limit); reports milliseconds, rounded up.
fn check(limit: Limit, max: Duration, got: Duration) -> Result<(), BackendError> {
    if got > max {
        let got = millis(got) + u64::from(got.subsec_nanos() % 1_000_000 > 0);
        Err(BackendError::Limit {
            limit,
            max: millis(max),
            got,
        })
    } else {
        Ok(())
    }
}

/// Whole seconds, rounded up. Only called on durations checked against a limit of at most
/// 12 hours, so the result fits.
fn seconds_up(duration: Duration) -> i32 {
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    whole as i32
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whether SQS takes `c` in a body.
fn is_sqs_text(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(
        body: &[u8],
        attributes: &[(String, String)],
    ) -> (Vec<u8>, Vec<(String, String)>) {
        let wire = WireMessage::encode(body, attributes).unwrap();
        decode(wire.body, Some(&wire.attributes))
    }

    #[test]
    fn text_travels_as_itself() {
        let wire = WireMessage::encode("héllo\tworld\n".as_bytes(), &[]).unwrap();
        assert_eq!(wire.body, "héllo\tworld\n");
        assert!(wire.attributes.is_empty());
    }

    #[test]
    fn bytes_sqs_refuses_travel_as_base64_and_come_back() {
        let attributes = vec![("tenant".to_owned(), "acme".to_owned())];
        for body in [
            &b"\x00\x01\xff"[..],
            b"\x07bell",
            "\u{FFFF}".as_bytes(),
            b"",
        ] {
            assert_eq!(
                round_trip(body, &attributes),
                (body.to_vec(), attributes.clone())
            );
        }
        assert_eq!(WireMessage::encode(b"\xff", &[]).unwrap().body, "/w==");
    }

    #[test]
    fn a_body_with_a_marker_it_does_not_match_stays_text() {
        let mut attributes = HashMap::new();
        attributes.insert(ENCODING.to_owned(), string_attribute(BASE64));
        let (body, pairs) = decode("not base64!".to_owned(), Some(&attributes));
        assert_eq!(body, b"not base64!");
        assert_eq!(pairs, vec![(ENCODING.to_owned(), BASE64.to_owned())]);
    }

    #[test]
    fn the_size_limit_counts_the_body_as_sent_and_the_attributes() {
        assert!(WireMessage::encode(&vec![b'x'; MAX_MESSAGE_BYTES], &[]).is_ok());
        let over = WireMessage::encode(&vec![b'x'; MAX_MESSAGE_BYTES + 1], &[]);
        assert!(matches!(
            over,
            Err(BackendError::Limit { limit: Limit::BodyBytes, got, .. }) if got == MAX_MESSAGE_BYTES as u64 + 1
        ));
        // "k" + "String" + "v" = 8 bytes of attribute.
        let attribute = [("k".to_owned(), "v".to_owned())];
        assert!(WireMessage::encode(&vec![b'x'; MAX_MESSAGE_BYTES - 8], &attribute).is_ok());
        assert!(WireMessage::encode(&vec![b'x'; MAX_MESSAGE_BYTES - 7], &attribute).is_err());
        // Base64 grows the body by a third, and the marker costs 25 bytes ("visq.encoding",
        // "String", "base64"): 4 * 65,529 + 25 <= 256 KiB < 4 * 65,530 + 25.
        assert!(WireMessage::encode(&vec![0u8; 3 * 65_529], &[]).is_ok());
        assert!(WireMessage::encode(&vec![0u8; 3 * 65_529 + 1], &[]).is_err());
    }

    #[test]
    fn ten_attributes_fit_the_marker_counts() {
        let ten: Vec<_> = (0..10).map(|i| (format!("a{i}"), "v".to_owned())).collect();
        assert!(WireMessage::encode(b"text", &ten).is_ok());
        assert!(matches!(
            WireMessage::encode(b"\xff", &ten),
            Err(BackendError::Fatal(message)) if message.contains("11")
        ));
    }

    #[test]
    fn durations_round_towards_the_safe_side() {
        assert_eq!(delay_seconds(Duration::from_millis(1500)), Ok(2));
        assert_eq!(delay_seconds(MAX_DELAY), Ok(900));
        assert!(delay_seconds(MAX_DELAY + Duration::from_millis(1)).is_err());
        assert_eq!(visibility_seconds(Duration::from_millis(1)), Ok(1));
        assert_eq!(visibility_seconds(MAX_VISIBILITY), Ok(43_200));
        assert_eq!(
            visibility_seconds(MAX_VISIBILITY + Duration::from_micros(500)),
            Err(BackendError::Limit {
                limit: Limit::VisibilityMillis,
                max: 43_200_000,
                got: 43_200_001
            })
        );
        assert_eq!(wait_seconds(Duration::from_millis(1999)), Ok(1));
        assert_eq!(wait_seconds(MAX_WAIT), Ok(20));
        assert_eq!(
            wait_seconds(MAX_WAIT + Duration::from_millis(1)),
            Err(BackendError::Limit {
                limit: Limit::WaitMillis,
                max: 20_000,
                got: 20_001
            })
        );
    }
}
