//! What `POST /v1/generations` does with a request, answering exactly per SPEC §2:
//! 202 with the accepted count and the rejected records, 400 when nothing is usable,
//! 413, and 503 when the records cannot be kept (nothing of the request kept, so the
//! sender's retry is the only copy). The shared layers (`crate::http`) have answered
//! 401, 404, 405, 408, 413, 415 and a full pipeline's 503 before. A body with many bad
//! records lists the first [`MAX_LISTED_REJECTIONS`] and counts the rest
//! (`rejected_total`), so the answer stays small.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use gencol_engine::{Consumer, RefusedReason};
use gencol_model::budget::Meter;
use gencol_model::{DecodeError, DecodedSpans, MAX_LISTED_REJECTIONS, Origin, RecordError, decode_spans};
use http::{HeaderMap, Request, Response, StatusCode};
use serde::Serialize;
use tower::Service;

use crate::http::{ACK_PATIENCE, Body, Dialect, INLINE_DECODE_LIMIT, Refusal, Reserved, json, json_error, media_type};

/// The one path this receiver serves.
pub(crate) const PATH: &str = "/v1/generations";

/// The 404 message.
pub(crate) const NOT_FOUND: &str = "not found: post generation records to /v1/generations";

/// How the records are laid out in the body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Form {
    /// One object or an array of objects.
    Json,
    /// One object a line.
    Ndjson,
}

impl Form {
    /// A missing `Content-Type` is read as JSON: gateways posting with a bare
    /// `curl -d` should not have to learn about headers first.
    pub(crate) fn from_media_type(media: Option<&str>) -> Result<Form, String> {
        match media {
            None | Some("application/json") => Ok(Form::Json),
            Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => Ok(Form::Ndjson),
            Some(other) => Err(format!(
                "unsupported Content-Type `{other}`: send application/json (an object or an array) or application/x-ndjson"
            )),
        }
    }
}

/// Refusals as `{"error": "..."}`.
#[derive(Clone, Copy)]
pub(crate) struct GenerationsDialect;

impl Dialect for GenerationsDialect {
    const BUSY_JSON: &'static str = r#"{"error":"too many connections: every connection this receiver allows (max_connections) is serving a request; retry"}"#;
    type Context = ();

    fn context(&self, _headers: &HeaderMap) {}

    fn refusal(&self, (): (), refusal: Refusal) -> Response<Body> {
        json_error(refusal.status, &refusal.message)
    }
}

/// What is left of a request once the shared layers let it through (SPEC §2): decode
/// the records, hand the valid ones on, answer 202 with the rejected ones, or 400 when
/// none is usable. Shared by all connections of one receiver.
#[derive(Clone)]
pub(crate) struct GenerationsHandler(pub Arc<Handler>);

/// What a handler knows, shared by the clones a request makes of the receiver's stack.
pub(crate) struct Handler {
    pub consumer: Consumer,
    /// Resource and scope of every span this receiver makes, built once.
    pub origin: Arc<Origin>,
    /// `max_records_per_request`.
    pub max_records: usize,
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

impl Service<Request<Reserved>> for GenerationsHandler {
    type Response = Response<Body>;
    type Error = Refusal;
    type Future = BoxFuture<'static, Result<Response<Body>, Refusal>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Refusal>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Reserved>) -> Self::Future {
        let this = self.0.clone();
        Box::pin(async move { this.answer(req).await })
    }
}

impl Handler {
    async fn answer(&self, req: Request<Reserved>) -> Result<Response<Body>, Refusal> {
        // ContentLayer refused any other media type.
        let form = Form::from_media_type(media_type(req.headers()).as_deref()).unwrap_or(Form::Json);
        let Reserved { bytes: body, charge, reservation } = req.into_body();
        let mut meter = Meter::new(charge, self.max_records, "records", "max_records_per_request");
        let (decoded, meter) = if body.len() <= INLINE_DECODE_LIMIT {
            (decode(&body, form, &self.origin, &mut meter), meter)
        } else {
            let origin = self.origin.clone();
            tokio::task::spawn_blocking(move || (decode(&body, form, &origin, &mut meter), meter)).await.map_err(
                |e| {
                    tracing::error!(error = %e, "decoding generation records failed");
                    Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error while decoding the records")
                },
            )?
        };
        let DecodedSpans { spans, rejected, rejected_total } = match decoded {
            Ok(d) => d,
            Err(DecodeError::Exceeded(e)) => return Err(Refusal::from(e)),
            Err(e) => {
                self.count_refused(RefusedReason::Invalid, 1);
                return Ok(refused(&e.to_string(), &[], 0));
            }
        };
        if spans.is_empty() {
            self.count_refused(RefusedReason::Invalid, rejected_total.max(1));
            return Ok(refused(&none_valid_message(&rejected, rejected_total), &rejected, rejected_total));
        }
        let accepted = spans.len();
        let kept = reservation.send(spans);
        // The spans are the pipeline's now (and count against its own budget).
        drop(meter);
        if let Some(kept) = kept
            && let Err(reason) = kept.wait(ACK_PATIENCE).await
        {
            tracing::debug!("records not kept, answering 503: {reason}");
            let message = format!("the records could not be kept, retry: {reason}");
            return Err(Refusal {
                records: accepted + rejected_total,
                ..Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message)
            });
        }
        self.consumer.stats().accepted(accepted);
        self.count_refused(RefusedReason::Invalid, rejected_total);
        if !rejected.is_empty() {
            tracing::debug!(accepted, rejected = rejected_total, first = %rejected[0].error, "some generation records were rejected");
        }
        let answer =
            Accepted { accepted, rejected: &rejected, rejected_total: total_if_cut(&rejected, rejected_total) };
        Ok(json(StatusCode::ACCEPTED, to_json(&answer)))
    }

    /// Counted where the answer is decided, for answers that are not refusals (a 400
    /// listing the rejected records, or a 202 with some rejected).
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
