//! What `POST /v1/traces` does with a request, per the OTLP/HTTP spec: the answer
//! comes in the request's encoding (JSON or protobuf); errors carry a
//! `google.rpc.Status`; 503 with `Retry-After` when a pipeline is full, which OTLP
//! exporters retry. The shared layers (`crate::http`) refuse before the body is decoded;
//! the handler here decodes, checks ids and hands the spans on.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use gencol_engine::{Consumer, RefusedReason};
use gencol_model::SpanItem;
use gencol_model::budget::Meter;
use gencol_model::otlp::{DecodeFailure, decode_json_metered, decode_proto_metered, from_request_metered, span_count};
use http::{HeaderMap, Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tower::Service;

use crate::http::{ACK_PATIENCE, Body, Dialect, INLINE_DECODE_LIMIT, Refusal, Reserved, answer, media_type};

/// The one path this receiver serves.
pub(crate) const PATH: &str = "/v1/traces";

/// The 404 message.
pub(crate) const NOT_FOUND: &str = "not found: post OTLP traces to /v1/traces";

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

    /// What the content layer reads: one of the two, or the 415 message.
    pub(crate) fn required(media: Option<&str>) -> Result<Encoding, String> {
        Encoding::from_media_type(media).ok_or_else(|| {
            format!(
                "unsupported Content-Type `{}`: send application/json or application/x-protobuf",
                media.unwrap_or_default()
            )
        })
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

/// Refusals as `google.rpc.Status`, in the encoding the sender speaks (JSON when it
/// said neither).
#[derive(Clone, Copy)]
pub(crate) struct OtlpDialect;

impl Dialect for OtlpDialect {
    const BUSY_JSON: &'static str = r#"{"code":14,"message":"too many connections: every connection this receiver allows (max_connections) is serving a request; retry"}"#;
    type Context = Encoding;

    fn context(&self, headers: &HeaderMap) -> Encoding {
        Encoding::from_media_type(media_type(headers).as_deref()).unwrap_or(Encoding::Json)
    }

    fn refusal(&self, encoding: Encoding, refusal: Refusal) -> Response<Body> {
        status_answer(encoding, refusal)
    }
}

/// What is left of a request once the shared layers let it through: decode, set aside
/// the spans no backend would take, hand on the rest. Shared by all connections of one
/// receiver.
#[derive(Clone)]
pub(crate) struct OtlpHandler(pub Arc<Handler>);

/// What a handler knows, shared by the clones a request makes of the receiver's stack.
pub(crate) struct Handler {
    pub consumer: Consumer,
    /// `max_spans_per_request`.
    pub max_spans: usize,
}

/// The spans a request carried, and the summary of those left out as undeliverable.
struct Decoded {
    spans: Vec<SpanItem>,
    rejected: Option<ExportTracePartialSuccess>,
}

impl Service<Request<Reserved>> for OtlpHandler {
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
        let encoding = OtlpDialect.context(req.headers());
        let rejected = self.accept(encoding, req.into_body()).await?;
        Ok(success_answer(encoding, rejected))
    }

    /// Decodes a request with room reserved for it, hands on its spans, and counts them;
    /// returns what was left out as undeliverable. Shared by OTLP/HTTP and OTLP/gRPC.
    pub(crate) async fn accept(
        &self,
        encoding: Encoding,
        reserved: Reserved,
    ) -> Result<Option<ExportTracePartialSuccess>, Refusal> {
        let Reserved { bytes: body, charge, reservation } = reserved;
        let mut meter = Meter::new(charge, self.max_spans, "spans", "max_spans_per_request");
        let (decoded, meter) = if body.len() <= INLINE_DECODE_LIMIT {
            (decode(&body, encoding, &mut meter), meter)
        } else {
            tokio::task::spawn_blocking(move || (decode(&body, encoding, &mut meter), meter)).await.map_err(|e| {
                tracing::error!(error = %e, "decoding OTLP traces failed");
                Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error while decoding the request")
            })?
        };
        let Decoded { spans, rejected } = decoded?;
        let accepted = spans.len();
        let invalid = rejected.as_ref().map_or(0, |p| usize::try_from(p.rejected_spans).unwrap_or(0));
        let kept = (!spans.is_empty()).then(|| reservation.send(spans)).flatten();
        // The spans are the pipeline's now (and count against its own budget).
        drop(meter);
        if let Some(kept) = kept {
            kept.wait(ACK_PATIENCE).await.map_err(|reason| {
                tracing::debug!("spans not kept, answering 503: {reason}");
                let message = format!("the spans could not be kept, retry: {reason}");
                Refusal { records: accepted + invalid, ..Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message) }
            })?;
        }
        self.consumer.stats().accepted(accepted);
        self.consumer.stats().refused(RefusedReason::Invalid, invalid);
        Ok(rejected)
    }
}

/// Decodes straight from the received bytes, paying `meter` for what is made. A request
/// that is not empty yet holds no span is refused: it is almost always OTLP/JSON written
/// with snake_case keys (`resource_spans`), which the decoder skips as unknown fields, and
/// accepting it would silently drop the sender's data.
fn decode(body: &Bytes, encoding: Encoding, meter: &mut Meter) -> Result<Decoded, Refusal> {
    // The text decoding copies out of the body (strings, ids) is never longer than it.
    meter.pay(body.len())?;
    let invalid =
        |what: &str, e: String| Refusal::new(StatusCode::BAD_REQUEST, format!("cannot decode the {what} body: {e}"));
    let (request, empty) = match encoding {
        Encoding::Json => (decode_json_metered(body, meter), body.trim_ascii().is_empty()),
        Encoding::Protobuf => (decode_proto_metered(body, meter), body.is_empty()),
    };
    let request = request.map_err(|e| match (e, encoding) {
        (DecodeFailure::Exceeded(e), _) => Refusal::from(e),
        (DecodeFailure::Invalid(e), Encoding::Json) => invalid("OTLP/JSON", e),
        (DecodeFailure::Invalid(e), Encoding::Protobuf) => invalid("OTLP/protobuf", e),
    })?;
    if span_count(&request) == 0 {
        if empty {
            return Ok(Decoded { spans: Vec::new(), rejected: None });
        }
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            match encoding {
                Encoding::Json => {
                    "the request holds no spans: OTLP/JSON keys are camelCase (`resourceSpans`, `scopeSpans`, \
                     `traceId`, `spanId`); snake_case keys such as `resource_spans` are ignored"
                }
                Encoding::Protobuf => "the request holds no spans",
            },
        ));
    }
    let mut spans = from_request_metered(request, meter)?;
    let mut rejected = Rejected::default();
    let mut index = 0;
    spans.retain_mut(|item| {
        // An all-zero parent is OTLP's "no parent": sent as a root, as backends read it.
        let parent = &mut item.span.parent_span_id;
        if parent.len() == 8 && parent.iter().all(|b| *b == 0) {
            parent.clear();
        }
        let bad = bad_id(&item.span);
        if let Some(bad) = bad {
            rejected.add(bad, index, &item.span);
        }
        index += 1;
        bad.is_none()
    });
    if rejected.total == 0 {
        return Ok(Decoded { spans, rejected: None });
    }
    let message = rejected.message(index);
    if spans.is_empty() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, message));
    }
    let rejected = ExportTracePartialSuccess { rejected_spans: rejected.total as i64, error_message: message };
    Ok(Decoded { spans, rejected: Some(rejected) })
}

/// What makes a span undeliverable: OTLP backends refuse a whole batch holding one, so
/// it is reported back to its sender instead of forwarded.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BadId {
    /// The trace id is not 16 bytes, or all zero.
    Trace(usize),
    /// The span id is not 8 bytes, or all zero.
    Span(usize),
    /// The parent span id is neither empty (a root) nor 8 bytes.
    Parent(usize),
    /// A link's trace id is not 16 bytes, or all zero.
    LinkTrace(usize),
    /// A link's span id is not 8 bytes, or all zero.
    LinkSpan(usize),
}

impl BadId {
    const KINDS: usize = 5;

    fn kind(self) -> usize {
        match self {
            BadId::Trace(_) => 0,
            BadId::Span(_) => 1,
            BadId::Parent(_) => 2,
            BadId::LinkTrace(_) => 3,
            BadId::LinkSpan(_) => 4,
        }
    }

    /// The rule broken, in OTLP/JSON's terms.
    fn rule(self) -> &'static str {
        match self {
            BadId::Trace(_) => "a `traceId` that is not 16 bytes (32 hex digits) or is all zero",
            BadId::Span(_) => "a `spanId` that is not 8 bytes (16 hex digits) or is all zero",
            BadId::Parent(_) => "a `parentSpanId` that is neither empty (a root span) nor 8 bytes (16 hex digits)",
            BadId::LinkTrace(_) => "a link whose `traceId` is not 16 bytes or is all zero",
            BadId::LinkSpan(_) => "a link whose `spanId` is not 8 bytes or is all zero",
        }
    }

    /// What this span has instead.
    fn found(self) -> String {
        let (len, right_len) = match self {
            BadId::Trace(n) | BadId::LinkTrace(n) => (n, Some(16)),
            BadId::Span(n) | BadId::LinkSpan(n) => (n, Some(8)),
            BadId::Parent(n) => (n, None),
        };
        match len {
            0 => "missing".to_owned(),
            n if Some(n) == right_len => "all zero".to_owned(),
            n => format!("{n} bytes"),
        }
    }
}

/// The first id of a span that destinations would refuse, if any.
fn bad_id(span: &Span) -> Option<BadId> {
    let valid = |id: &[u8], len: usize| id.len() == len && id.iter().any(|b| *b != 0);
    if !valid(&span.trace_id, 16) {
        return Some(BadId::Trace(span.trace_id.len()));
    }
    if !valid(&span.span_id, 8) {
        return Some(BadId::Span(span.span_id.len()));
    }
    if !(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8) {
        return Some(BadId::Parent(span.parent_span_id.len()));
    }
    for link in &span.links {
        if !valid(&link.trace_id, 16) {
            return Some(BadId::LinkTrace(link.trace_id.len()));
        }
        if !valid(&link.span_id, 8) {
            return Some(BadId::LinkSpan(link.span_id.len()));
        }
    }
    None
}

/// The spans of one request left out, counted by what is wrong with them; the first of
/// each kind is named, so the message stays short however many there are.
#[derive(Default)]
struct Rejected {
    total: usize,
    by_kind: [Option<(usize, BadId, usize, String)>; BadId::KINDS],
}

impl Rejected {
    fn add(&mut self, bad: BadId, index: usize, span: &Span) {
        self.total += 1;
        match &mut self.by_kind[bad.kind()] {
            Some((count, ..)) => *count += 1,
            slot @ None => {
                let name: String = span.name.chars().take(64).collect();
                *slot = Some((1, bad, index, name));
            }
        }
    }

    fn message(&self, spans: usize) -> String {
        let reasons: Vec<String> = self
            .by_kind
            .iter()
            .flatten()
            .map(|(count, bad, index, name)| {
                format!("{count} with {} (first: span {index} of the request, `{name}`: {})", bad.rule(), bad.found())
            })
            .collect();
        format!(
            "{} of {spans} span(s) rejected and not forwarded: {}. OTLP/JSON ids are hex strings (`traceId`: 32 \
             digits, `spanId`: 16) under camelCase keys",
            self.total,
            reasons.join("; ")
        )
    }
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
pub(crate) fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::REQUEST_TIMEOUT => 4,                                  // DEADLINE_EXCEEDED
        StatusCode::NOT_FOUND => 5,                                        // NOT_FOUND
        StatusCode::PAYLOAD_TOO_LARGE => 8,                                // RESOURCE_EXHAUSTED
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => 12, // UNIMPLEMENTED
        StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
        StatusCode::UNAUTHORIZED => 16,                                    // UNAUTHENTICATED
        _ => 13,                                                           // INTERNAL
    }
}
