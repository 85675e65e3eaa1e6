//! What `POST /v1/generations` does with a request, answering exactly per SPEC §2:
//! 202 with the accepted count and the rejected records, 400 when nothing is usable,
//! 401 before the body is read, 413, 415, and 503 when a pipeline is full (nothing
//! of the request kept, so the sender's retry is the only copy).

use std::sync::Arc;

use bytes::Bytes;
use gencol_engine::Consumer;
use gencol_model::{DecodeError, Origin, RecordError, SpanItem, decode_body, generation_span};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::http::{
    ACK_PATIENCE, BearerAuth, Body, BodyError, Endpoint, INLINE_DECODE_LIMIT, RESERVE_PATIENCE, compression, json,
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
    pub max_body: usize,
}

#[derive(Serialize)]
struct Accepted<'a> {
    accepted: usize,
    rejected: &'a [RecordError],
}

#[derive(Serialize)]
struct Refused<'a> {
    error: &'a str,
    rejected: &'a [RecordError],
}

/// The spans made from the valid records, and the records that were not valid.
struct Decoded {
    spans: Vec<SpanItem>,
    rejected: Vec<RecordError>,
}

impl Endpoint for GenerationsService {
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
            return json_error(StatusCode::UNAUTHORIZED, &e.to_string());
        }
        let form = match Form::from_media_type(media_type(req.headers()).as_deref()) {
            Ok(f) => f,
            Err(message) => return json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &message),
        };
        let compression = match compression(req.headers()) {
            Ok(c) => c,
            Err(message) => return json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &message),
        };
        let body = match read_body(req, self.max_body, compression).await {
            Ok(b) => b,
            Err(e @ BodyError::TooLarge { .. }) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
        };

        // Room first: under overload the answer is a 503, not a decoded batch thrown away.
        let reservation = match self.consumer.reserve(body.len(), RESERVE_PATIENCE).await {
            Ok(r) => r,
            Err(full) => {
                tracing::debug!(pipeline = %full.pipeline, "pipeline full: answering 503");
                return json_error(StatusCode::SERVICE_UNAVAILABLE, "pipeline full, retry");
            }
        };
        let decoded = if body.len() <= INLINE_DECODE_LIMIT {
            decode(&body, form, &self.origin)
        } else {
            let origin = self.origin.clone();
            match tokio::task::spawn_blocking(move || decode(&body, form, &origin)).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "decoding generation records failed");
                    return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error while decoding the records");
                }
            }
        };
        let Decoded { spans, rejected } = match decoded {
            Ok(d) => d,
            Err(e) => return refused(&e.to_string(), &[]),
        };
        if spans.is_empty() {
            return refused(&none_valid_message(&rejected), &rejected);
        }
        let accepted = spans.len();
        if let Some(kept) = reservation.send(spans)
            && let Err(reason) = kept.wait(ACK_PATIENCE).await
        {
            tracing::debug!("records not kept, answering 503: {reason}");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the records could not be kept, retry: {reason}"),
            );
        }
        if !rejected.is_empty() {
            tracing::debug!(accepted, rejected = rejected.len(), first = %rejected[0].error, "some generation records were rejected");
        }
        json(StatusCode::ACCEPTED, to_json(&Accepted { accepted, rejected: &rejected }))
    }
}

/// Decodes straight from the received bytes and builds one span per valid record.
fn decode(body: &Bytes, form: Form, origin: &Arc<Origin>) -> Result<Decoded, DecodeError> {
    let batch = decode_body(body, form == Form::Ndjson)?;
    let spans = batch.generations.iter().map(|g| generation_span(g, origin)).collect();
    Ok(Decoded { spans, rejected: batch.rejected })
}

/// The 400 message: names the first bad record's index and field path.
fn none_valid_message(rejected: &[RecordError]) -> String {
    match rejected {
        [] => "no generation records in the body: send one object, an array of objects, or NDJSON".to_owned(),
        [only] => format!("no valid generation: {}", only.error),
        [first, rest @ ..] => format!(
            "no valid generation among {} records: {} (and {} more, see `rejected`)",
            rejected.len(),
            first.error,
            rest.len()
        ),
    }
}

fn refused(error: &str, rejected: &[RecordError]) -> Response<Body> {
    json(StatusCode::BAD_REQUEST, to_json(&Refused { error, rejected }))
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
            none_valid_message(&[r(3, "[3].request.model: missing")]),
            "no valid generation: [3].request.model: missing"
        );
        let many = none_valid_message(&[r(0, "[0].id: missing"), r(1, "[1].id: missing")]);
        assert!(many.contains("[0].id: missing") && many.contains("1 more"), "{many}");
    }
}
