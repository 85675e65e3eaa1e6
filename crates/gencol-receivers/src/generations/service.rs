//! What `POST /v1/generations` does with a request, answering exactly per SPEC §2:
//! 202 with the accepted count and the rejected records, 400 when nothing is usable,
//! 401 before the body is read, 413, 415, and 503 when a pipeline is full (nothing
//! of the request kept, so the sender's retry is the only copy). A body with many bad
//! records lists the first [`MAX_LISTED_REJECTIONS`] and counts the rest
//! (`rejected_total`), so the answer stays small.

use std::sync::Arc;

use bytes::Bytes;
use gencol_engine::{Consumer, RefusedReason};
use gencol_model::budget::{Exceeded, MemoryBudget, Meter};
use gencol_model::{DecodeError, DecodedSpans, MAX_LISTED_REJECTIONS, Origin, RecordError, decode_spans};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::http::{
    ACK_PATIENCE, BearerAuth, Body, BodyLimits, Endpoint, INLINE_DECODE_LIMIT, RESERVE_PATIENCE, compression, json,
    json_error, media_type, read_body, with_status_headers,
};

/// The one path this receiver serves.
pub(crate) const PATH: &str = "/v1/generations";

/// How the records are laid out in the body.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    /// One object or an array of objects.
    Json,
    /// One object a line.
    Ndjson,
}

impl Form {
    /// A missing `Content-Type` is read as JSON: gateways posting with a bare
    /// `curl -d` should not have to learn about headers first.
    fn from_media_type(media: Option<&str>) -> Result<Form, String> {
        match media {
            None | Some("application/json") => Ok(Form::Json),
            Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => Ok(Form::Ndjson),
            Some(other) => Err(format!(
                "unsupported Content-Type `{other}`: send application/json (an object or an array) or application/x-ndjson"
            )),
        }
    }
}

/// The request handler of one `generations` receiver; shared by all its connections.
pub(crate) struct GenerationsService {
    pub consumer: Consumer,
    /// Resource and scope of every span this receiver makes, built once.
    pub origin: Arc<Origin>,
    pub auth: Option<BearerAuth>,
    pub body: BodyLimits,
    /// `max_records_per_request`.
    pub max_records: usize,
    /// What requests of every receiver may hold at once (`service.limits.max_inflight_memory`).
    pub memory: MemoryBudget,
}

#[derive(Serialize)]
struct Accepted<'a> {
    accepted: usize,
    rejected: &'a [RecordError],
    /// Only when `rejected` does not list them all.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_total: Option<usize>,
}

#[derive(Serialize)]
struct Refused<'a> {
    error: &'a str,
    rejected: &'a [RecordError],
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_total: Option<usize>,
}

/// `rejected_total` when the list was cut.
fn total_if_cut(listed: &[RecordError], total: usize) -> Option<usize> {
    (total > listed.len()).then_some(total)
}

impl Endpoint for GenerationsService {
    const BUSY_JSON: &'static str = r#"{"error":"too many connections: every connection this receiver allows (max_connections) is serving a request; retry"}"#;

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        with_status_headers(self.answer(req).await)
    }
}

impl GenerationsService {
    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path() != PATH {
            return json_error(StatusCode::NOT_FOUND, "not found: post generation records to /v1/generations");
        }
        if req.method() != Method::POST {
            return json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use POST");
        }
        // Before anything else is looked at, so a stranger learns nothing and no
        // byte of an unauthenticated body is read.
        if let Some(auth) = &self.auth
            && let Err(e) = auth.check(req.headers())
        {
            self.count_refused(RefusedReason::Unauthorized, 1);
            return json_error(StatusCode::UNAUTHORIZED, &e.to_string());
        }
        let form = match Form::from_media_type(media_type(req.headers()).as_deref()) {
            Ok(f) => f,
            Err(message) => {
                self.count_refused(RefusedReason::UnsupportedMediaType, 1);
                return json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &message);
            }
        };
        let compression = match compression(req.headers()) {
            Ok(c) => c,
            Err(message) => {
                self.count_refused(RefusedReason::UnsupportedMediaType, 1);
                return json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &message);
            }
        };
        let (body, charge) = match read_body(req, &self.body, compression, &self.memory).await {
            Ok(b) => b,
            Err(e) => {
                let status = e.status();
                if let Some(reason) = crate::refused_reason(status) {
                    self.count_refused(reason, 1);
                }
                return json_error(status, &e.to_string());
            }
        };

        // Room first: under overload the answer is a 503, not a decoded batch thrown away.
        let reservation = match self.consumer.reserve(body.len(), RESERVE_PATIENCE).await {
            Ok(r) => r,
            Err(full) => {
                tracing::debug!(pipeline = %full.pipeline, "pipeline full: answering 503");
                self.count_refused(RefusedReason::Backpressure, 1);
                return json_error(StatusCode::SERVICE_UNAVAILABLE, "pipeline full, retry");
            }
        };
        let mut meter = Meter::new(charge, self.max_records, "records", "max_records_per_request");
        let (decoded, meter) = if body.len() <= INLINE_DECODE_LIMIT {
            (decode(&body, form, &self.origin, &mut meter), meter)
        } else {
            let origin = self.origin.clone();
            match tokio::task::spawn_blocking(move || (decode(&body, form, &origin, &mut meter), meter)).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "decoding generation records failed");
                    return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error while decoding the records");
                }
            }
        };
        let DecodedSpans { spans, rejected, rejected_total } = match decoded {
            Ok(d) => d,
            Err(DecodeError::Exceeded(e)) => {
                let reason =
                    if matches!(e, Exceeded::Busy) { RefusedReason::Backpressure } else { RefusedReason::TooLarge };
                self.count_refused(reason, 1);
                return exceeded(&e);
            }
            Err(e) => {
                self.count_refused(RefusedReason::Invalid, 1);
                return refused(&e.to_string(), &[], 0);
            }
        };
        if spans.is_empty() {
            self.count_refused(RefusedReason::Invalid, rejected_total.max(1));
            return refused(&none_valid_message(&rejected, rejected_total), &rejected, rejected_total);
        }
        let accepted = spans.len();
        let kept = reservation.send(spans);
        // The spans are the pipeline's now (and count against its own budget).
        drop(meter);
        if let Some(kept) = kept
            && let Err(reason) = kept.wait(ACK_PATIENCE).await
        {
            tracing::debug!("records not kept, answering 503: {reason}");
            self.count_refused(RefusedReason::Backpressure, accepted + rejected_total);
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the records could not be kept, retry: {reason}"),
            );
        }
        self.consumer.stats().accepted(accepted);
        self.count_refused(RefusedReason::Invalid, rejected_total);
        if !rejected.is_empty() {
            tracing::debug!(accepted, rejected = rejected_total, first = %rejected[0].error, "some generation records were rejected");
        }
        let answer =
            Accepted { accepted, rejected: &rejected, rejected_total: total_if_cut(&rejected, rejected_total) };
        json(StatusCode::ACCEPTED, to_json(&answer))
    }
}
impl GenerationsService {
    /// Counted where the answer is decided; a request refused before its body is read
    /// counts as one record.
    fn count_refused(&self, reason: RefusedReason, records: usize) {
        self.consumer.stats().refused(reason, records);
    }
}

/// Decodes straight from the received bytes and builds one span per valid record,
/// paying `meter` for what is made.
fn decode(body: &Bytes, form: Form, origin: &Arc<Origin>, meter: &mut Meter) -> Result<DecodedSpans, DecodeError> {
    // The text decoding copies out of the body is never longer than it.
    meter.pay(body.len()).map_err(DecodeError::Exceeded)?;
    decode_spans(body, form == Form::Ndjson, origin, meter)
}

/// 413 for a request over its record or memory limit, 503 when others hold the memory.
fn exceeded(e: &Exceeded) -> Response<Body> {
    let status = match e {
        Exceeded::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Exceeded::Items { .. } | Exceeded::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    };
    json_error(status, &e.to_string())
}

/// The 400 message: names the first bad record's index and field path.
fn none_valid_message(rejected: &[RecordError], total: usize) -> String {
    match rejected {
        [] => "no generation records in the body: send one object, an array of objects, or NDJSON".to_owned(),
        [only] if total == 1 => format!("no valid generation: {}", only.error),
        [first, ..] => {
            let listed = if total > rejected.len() {
                format!(", the first {MAX_LISTED_REJECTIONS} listed in `rejected`")
            } else {
                ", see `rejected`".to_owned()
            };
            format!("no valid generation among {total} records: {} (and {} more{listed})", first.error, total - 1)
        }
    }
}

fn refused(error: &str, rejected: &[RecordError], total: usize) -> Response<Body> {
    json(StatusCode::BAD_REQUEST, to_json(&Refused { error, rejected, rejected_total: total_if_cut(rejected, total) }))
}

/// Serialising these plain structs (strings and numbers only) cannot fail.
fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(Form::from_media_type(None), Ok(Form::Json));
        assert_eq!(Form::from_media_type(Some("application/json")), Ok(Form::Json));
        assert_eq!(Form::from_media_type(Some("application/x-ndjson")), Ok(Form::Ndjson));
        assert_eq!(Form::from_media_type(Some("application/jsonl")), Ok(Form::Ndjson));
        assert!(Form::from_media_type(Some("text/plain")).is_err());
        assert!(Form::from_media_type(Some("")).is_err());
    }

    #[test]
    fn none_valid_names_the_first_problem() {
        let r = |index, e: &str| RecordError { index, error: e.to_owned() };
        assert_eq!(
            none_valid_message(&[r(3, "[3].request.model: missing")], 1),
            "no valid generation: [3].request.model: missing"
        );
        let many = none_valid_message(&[r(0, "[0].id: missing"), r(1, "[1].id: missing")], 2);
        assert!(many.contains("[0].id: missing") && many.contains("1 more, see `rejected`"), "{many}");
        let cut = none_valid_message(&[r(0, "[0].id: missing")], 5000);
        assert!(cut.contains("among 5000 records") && cut.contains("the first 100 listed"), "{cut}");
    }
}
