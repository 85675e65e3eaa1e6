//! The gRPC side of a receiver (OTLP/gRPC on 4317), served by `tonic` on HTTP/2 with the
//! same limits as the HTTP side: one concern per file.
//!
//! | part | concern | refuses with |
//! |---|---|---|
//! | [`listener`] | the port: TLS (reloaded certificates), `max_connections`, graceful shutdown | — |
//! | [`guard`] | the bearer token; the message's size, read against the memory budget | `UNAUTHENTICATED`, `RESOURCE_EXHAUSTED`, `UNAVAILABLE` |
//! | [`codec`] | the message as the bytes it was sent (the receiver decodes it, metered) | — |
//!
//! [`status`] turns the refusals the HTTP side words as status codes into gRPC statuses,
//! with `RetryInfo` on the retryable one, as the OTLP spec asks.

pub(crate) mod codec;
pub(crate) mod guard;
pub(crate) mod listener;

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::http::Refusal;

/// How long a sender refused for backpressure is asked to wait (`RetryInfo`), as
/// `Retry-After: 1` on the HTTP side.
pub(crate) const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The gRPC status for a refusal, by the HTTP status it would have on the HTTP side.
/// `UNAVAILABLE` (a full pipeline, memory held by other requests) carries `RetryInfo`;
/// `RESOURCE_EXHAUSTED` (a message over the limits) does not, so OTLP senders do not
/// send it again.
pub(crate) fn status(refusal: &Refusal) -> Status {
    let code = Code::from_i32(crate::otlp::grpc_code(refusal.status));
    if code == Code::Unavailable {
        return Status::with_error_details(code, &refusal.message, ErrorDetails::with_retry_info(Some(RETRY_DELAY)));
    }
    Status::new(code, &refusal.message)
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn refusals_map_to_the_codes_otlp_senders_act_on() {
        let busy = status(&Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "pipeline full, retry"));
        assert_eq!(busy.code(), Code::Unavailable);
        assert_eq!(busy.message(), "pipeline full, retry");
        let retry = busy.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(RETRY_DELAY));
        for (http, grpc) in [
            (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted),
            (StatusCode::BAD_REQUEST, Code::InvalidArgument),
            (StatusCode::UNAUTHORIZED, Code::Unauthenticated),
            (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
        ] {
            let s = status(&Refusal::new(http, "x"));
            assert_eq!(s.code(), grpc, "{http}");
            assert!(s.get_details_retry_info().is_none(), "{http}: not retryable");
        }
    }
}
