//! What `POST /v1/traces` does with a request, per the OTLP/HTTP spec: the answer
//! comes in the request's encoding (JSON or protobuf); errors carry a
//! `google.rpc.Status`; 503 with `Retry-After` when a pipeline is full, which OTLP
//! exporters retry.

use bytes::Bytes;
use gencol_engine::Consumer;
use gencol_model::SpanItem;
use gencol_model::otlp::{decode_json, decode_proto, from_request, span_count};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;

use crate::http::{
    ACK_PATIENCE, BearerAuth, Body, BodyError, Endpoint, INLINE_DECODE_LIMIT, RESERVE_PATIENCE, answer, compression,
    media_type, read_body, with_status_headers,
};

/// The one path this receiver serves.
pub(crate) const PATH: &str = "/v1/traces";

const JSON: &str = "application/json";
const PROTOBUF: &str = "application/x-protobuf";

/// The two OTLP/HTTP encodings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    fn from_media_type(media: Option<&str>) -> Option<Encoding> {
        match media? {
            JSON => Some(Encoding::Json),
            PROTOBUF => Some(Encoding::Protobuf),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => JSON,
            Encoding::Protobuf => PROTOBUF,
        }
    }
}

/// `google.rpc.Status`, the error body OTLP/HTTP prescribes; only the fields we fill.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The request handler of one `otlp` receiver; shared by all its connections.
pub(crate) struct OtlpService {
    pub consumer: Consumer,
    pub auth: Option<BearerAuth>,
    pub max_body: usize,
}

/// Why a request was refused: the HTTP status and a message for the sender.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into() }
    }
}

/// The spans a request carried, and how many were left out as unusable.
struct Decoded {
    spans: Vec<SpanItem>,
    invalid: usize,
}

impl Endpoint for OtlpService {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        // Errors go back in the encoding the sender speaks; JSON when it said neither.
        let encoding = Encoding::from_media_type(media_type(req.headers()).as_deref());
        let resp = match self.answer(req, encoding).await {
            Ok(resp) => resp,
            Err(refusal) => status_answer(encoding.unwrap_or(Encoding::Json), refusal),
        };
        with_status_headers(resp)
    }
}

impl OtlpService {
    async fn answer(&self, req: Request<Incoming>, encoding: Option<Encoding>) -> Result<Response<Body>, Refusal> {
        if req.uri().path() != PATH {
            return Err(Refusal::new(StatusCode::NOT_FOUND, "not found: post OTLP traces to /v1/traces"));
        }
        if req.method() != Method::POST {
            return Err(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use POST"));
        }
        if let Some(auth) = &self.auth {
            auth.check(req.headers()).map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
        }
        let Some(encoding) = encoding else {
            let shown = media_type(req.headers()).unwrap_or_default();
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type `{shown}`: send application/json or application/x-protobuf"),
            ));
        };
        let compression =
            compression(req.headers()).map_err(|m| Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, m))?;
        let body = read_body(req, self.max_body, compression).await.map_err(|e| match e {
            BodyError::TooLarge { .. } => Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            e => Refusal::new(StatusCode::BAD_REQUEST, e.to_string()),
        })?;

        // Room first: under overload the answer is a 503, not a decoded batch thrown away.
        let reservation = self.consumer.reserve(body.len(), RESERVE_PATIENCE).await.map_err(|full| {
            tracing::debug!(pipeline = %full.pipeline, "pipeline full: answering 503");
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "pipeline full, retry")
        })?;
        let decoded = if body.len() <= INLINE_DECODE_LIMIT {
            decode(&body, encoding)
        } else {
            tokio::task::spawn_blocking(move || decode(&body, encoding)).await.map_err(|e| {
                tracing::error!(error = %e, "decoding OTLP traces failed");
                Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error while decoding the request")
            })?
        };
        let Decoded { spans, invalid } = decoded.map_err(|m| Refusal::new(StatusCode::BAD_REQUEST, m))?;
        if !spans.is_empty()
            && let Some(kept) = reservation.send(spans)
        {
            kept.wait(ACK_PATIENCE).await.map_err(|reason| {
                tracing::debug!("spans not kept, answering 503: {reason}");
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, format!("the spans could not be kept, retry: {reason}"))
            })?;
        }
        let partial = (invalid > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: invalid as i64,
            error_message: invalid_spans_message(invalid),
        });
        Ok(success_answer(encoding, partial))
    }
}

/// Decodes straight from the received bytes. A request that is not empty yet holds no
/// span is refused: it is almost always OTLP/JSON written with snake_case keys
/// (`resource_spans`), which the decoder skips as unknown fields, and accepting it
/// would silently drop the sender's data.
fn decode(body: &Bytes, encoding: Encoding) -> Result<Decoded, String> {
    let (request, empty) = match encoding {
        Encoding::Json => (
            decode_json(body).map_err(|e| format!("cannot decode the OTLP/JSON body: {e}"))?,
            body.trim_ascii().is_empty(),
        ),
        Encoding::Protobuf => {
            (decode_proto(body).map_err(|e| format!("cannot decode the OTLP/protobuf body: {e}"))?, body.is_empty())
        }
    };
    if span_count(&request) == 0 {
        if empty {
            return Ok(Decoded { spans: Vec::new(), invalid: 0 });
        }
        return Err(match encoding {
            Encoding::Json => {
                "the request holds no spans: OTLP/JSON keys are camelCase (`resourceSpans`, `scopeSpans`, \
                               `traceId`, `spanId`); snake_case keys such as `resource_spans` are ignored"
                    .to_owned()
            }
            Encoding::Protobuf => "the request holds no spans".to_owned(),
        });
    }
    let mut spans = from_request(request);
    let before = spans.len();
    spans.retain(|item| valid_id(&item.span.trace_id, 16) && valid_id(&item.span.span_id, 8));
    let invalid = before - spans.len();
    if spans.is_empty() {
        return Err(invalid_spans_message(invalid));
    }
    Ok(Decoded { spans, invalid })
}

/// A span without a real trace or span id cannot be delivered anywhere (every OTLP
/// backend refuses it), so it is reported back instead of forwarded.
fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

fn invalid_spans_message(invalid: usize) -> String {
    format!(
        "{invalid} span(s) rejected: `traceId` must be 32 hex digits and `spanId` 16 hex digits, not all zero \
         (OTLP/JSON keys are camelCase)"
    )
}

/// 200 with an `ExportTraceServiceResponse` in the request's encoding.
fn success_answer(encoding: Encoding, partial: Option<ExportTracePartialSuccess>) -> Response<Body> {
    let body: Bytes = match (encoding, partial) {
        // The common case needs no serialiser: an empty message is `{}` / no bytes.
        (Encoding::Json, None) => Bytes::from_static(b"{}"),
        (Encoding::Protobuf, None) => Bytes::new(),
        (Encoding::Json, partial) => {
            serde_json::to_vec(&ExportTraceServiceResponse { partial_success: partial }).unwrap_or_default().into()
        }
        (Encoding::Protobuf, partial) => ExportTraceServiceResponse { partial_success: partial }.encode_to_vec().into(),
    };
    answer(StatusCode::OK, encoding.content_type(), body)
}

/// An error answer: `google.rpc.Status` as protobuf, or its JSON form.
fn status_answer(encoding: Encoding, refusal: Refusal) -> Response<Body> {
    let status = RpcStatus { code: grpc_code(refusal.status), message: refusal.message };
    let body: Bytes = match encoding {
        Encoding::Json => serde_json::json!({ "code": status.code, "message": status.message }).to_string().into(),
        Encoding::Protobuf => status.encode_to_vec().into(),
    };
    answer(refusal.status, encoding.content_type(), body)
}

/// The gRPC status code that means the same as an HTTP status.
fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::NOT_FOUND => 5,                                        // NOT_FOUND
        StatusCode::PAYLOAD_TOO_LARGE => 8,                                // RESOURCE_EXHAUSTED
        StatusCode::METHOD_NOT_ALLOWED => 12,                              // UNIMPLEMENTED
        StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
        StatusCode::UNAUTHORIZED => 16,                                    // UNAUTHENTICATED
        _ => 13,                                                           // INTERNAL
    }
}
