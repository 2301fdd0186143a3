//! SQS's errors sorted into the three a caller must tell apart (see [`BackendError`]):
//!
//! | what SQS said | [`BackendError`] |
//! |---|---|
//! | `ReceiptHandleIsInvalid`, `MessageNotInflight`, an `InvalidParameterValue` about the receipt handle (AWS's "the receipt handle has expired") | `Stale` |
//! | throttling (`ThrottlingException`, `RequestThrottled`, `KmsThrottled`, ...), `ServiceUnavailable`, `InternalError`, any 5xx or 429, a time-out, a connection that failed or broke, a response that could not be read | `Transient` |
//! | anything else (a missing queue, a bad attribute, bad credentials, ...) | `Fatal`, with SQS's code and message |
//!
//! The SDK has already retried throttling and transient failures a few times (its standard
//! retry policy) before an error reaches this mapping.

use crate::BackendError;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::BatchResultErrorEntry;

/// Codes that say the receipt handle does not name a live lease.
const STALE_CODES: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
];

/// Codes that say "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "AWS.SimpleQueueService.RequestThrottled",
    "KmsThrottled",
    "KMS.ThrottlingException",
    "ServiceUnavailable",
    "AWS.SimpleQueueService.ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
];

/// A whole call that failed.
pub(super) fn from_sdk<E>(error: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ServiceError(service) => {
            let code = error.code().unwrap_or_default();
            let message = error.message().unwrap_or_default();
            let status = service.raw().status().as_u16();
            return classify(code, message, status >= 500 || status == 429);
        }
        _ => false,
    };
    let text = DisplayErrorContext(&error).to_string();
    if transient {
        BackendError::Transient(text)
    } else {
        BackendError::Fatal(text)
    }
}

/// One entry of a batch call that SQS refused. `SenderFault: false` means the fault was on
/// SQS's side, so the entry may succeed when tried again.
pub(super) fn from_entry(entry: &BatchResultErrorEntry) -> BackendError {
    classify(
        entry.code(),
        entry.message().unwrap_or_default(),
        !entry.sender_fault(),
    )
}

fn classify(code: &str, message: &str, server_fault: bool) -> BackendError {
    let about_receipt =
        code == "InvalidParameterValue" && message.to_ascii_lowercase().contains("receipt handle");
    if STALE_CODES.contains(&code) || about_receipt {
        BackendError::Stale
    } else if TRANSIENT_CODES.contains(&code) || server_fault {
        BackendError::Transient(format!("{code}: {message}"))
    } else {
        BackendError::Fatal(format!("{code}: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_codes_are_stale() {
        assert_eq!(
            classify("ReceiptHandleIsInvalid", "", false),
            BackendError::Stale
        );
        assert_eq!(
            classify("AWS.SimpleQueueService.MessageNotInflight", "", false),
            BackendError::Stale
        );
        assert_eq!(
            classify(
                "InvalidParameterValue",
                "Value x for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired.",
                false
            ),
            BackendError::Stale
        );
    }

    #[test]
    fn throttles_and_server_faults_are_transient() {
        assert!(classify("ThrottlingException", "slow down", false).is_transient());
        assert!(classify("SomethingNew", "oops", true).is_transient());
    }

    #[test]
    fn the_rest_is_fatal_with_the_code() {
        let error = classify(
            "AWS.SimpleQueueService.NonExistentQueue",
            "no such queue",
            false,
        );
        assert_eq!(
            error,
            BackendError::Fatal("AWS.SimpleQueueService.NonExistentQueue: no such queue".into())
        );
        assert_eq!(
            classify("InvalidParameterValue", "bad delay", false),
            BackendError::Fatal("InvalidParameterValue: bad delay".into())
        );
    }
}
