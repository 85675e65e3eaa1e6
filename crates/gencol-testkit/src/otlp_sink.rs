//! An OTLP/HTTP traces destination that decodes and keeps everything it receives.
//!
//! End-to-end tests point a gencol exporter at [`OtlpSink::url`] and then assert on the spans
//! that arrived, the headers and encodings used, and how the exporter reacted to scripted
//! failures. Users run the same sink from the `gencol-testkit otlp` command to see offline
//! what their pipeline would send.
//!
//! The sink is deliberately stricter than most backends: OTLP/JSON with unknown (e.g.
//! snake_case) keys and spans with malformed ids are refused with a 400 naming the problem,
//! because a lenient backend would silently drop such data in production.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::otlp_json::first_unknown_field;
use crate::server::{
    Answer, DEFAULT_MAX_BODY_BYTES, Gate, Handler, Journal, Listener, Outcome, PendingGuard, ReadRequest, Rejection,
    Reply, RequestHead, Script, decode_content_encoding, media_type,
};

/// The OTLP/HTTP default traces path, served unless [`SinkOptions::path`] says otherwise.
pub const DEFAULT_TRACES_PATH: &str = "/v1/traces";

/// How a request body was encoded, as told by its `Content-Type`. Successful answers use the
/// same encoding, as the OTLP/HTTP spec requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json` (OTLP/JSON).
    Json,
    /// `application/x-protobuf` (binary protobuf).
    Protobuf,
}

impl Encoding {
    /// Short lower-case name for logs: `json` or `protobuf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Protobuf => "protobuf",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/x-protobuf",
        }
    }
}

/// Settings of a sink; `SinkOptions::default()` is what [`OtlpSink::start`] uses.
#[derive(Clone, Debug)]
pub struct SinkOptions {
    /// Address to bind; port 0 picks a free port so parallel tests never collide.
    pub addr: SocketAddr,
    /// The only path served; other paths get 404, which catches exporters that build the URL
    /// wrongly (e.g. appending `/v1/traces` twice).
    pub path: String,
    /// A header every request must carry with exactly this value (name case-insensitive),
    /// else 401; lets tests prove that configured credentials are sent.
    pub expect_header: Option<(String, String)>,
    /// The answer used whenever no scripted answer is queued, e.g. a permanent
    /// `Answer::status(503)` for "destination down" or `Answer::delay(..)` for "always slow".
    /// `None` gives the sink's normal verdict.
    pub fallback: Option<Answer>,
    /// Largest accepted body, compressed or decompressed, before answering 413.
    pub max_body_bytes: usize,
    /// A span name this destination refuses: any request holding a span of that name is
    /// answered 400 as a whole (as backends do for a span they find invalid), the rest
    /// are taken. Lets tests prove that one bad span does not sink its batch.
    pub refuse_span_name: Option<String>,
    /// Serve HTTPS with this certificate chain and key (PEM), for exporters' `tls`.
    pub tls: Option<TlsIdentity>,
}

/// A server certificate chain and its private key, PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity")
    }
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            path: DEFAULT_TRACES_PATH.to_owned(),
            expect_header: None,
            fallback: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            refuse_span_name: None,
            tls: None,
        }
    }
}

impl SinkOptions {
    /// Serves HTTPS with `identity` ([`SinkOptions::tls`]).
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Sets [`SinkOptions::addr`].
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Sets [`SinkOptions::path`].
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets [`SinkOptions::expect_header`].
    pub fn expect_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.expect_header = Some((name.into(), value.into()));
        self
    }

    /// Sets [`SinkOptions::fallback`].
    pub fn fallback(mut self, answer: Answer) -> Self {
        self.fallback = Some(answer);
        self
    }

    /// Sets [`SinkOptions::max_body_bytes`].
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Sets [`SinkOptions::refuse_span_name`].
    pub fn refuse_span_name(mut self, name: impl Into<String>) -> Self {
        self.refuse_span_name = Some(name.into());
        self
    }
}

/// One request as the sink saw it, kept whatever the answer was, so tests can assert on
/// retries, headers and encodings as well as on the data.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Headers with lower-cased names; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// `Content-Type` exactly as sent.
    pub content_type: Option<String>,
    /// `Content-Encoding` exactly as sent.
    pub content_encoding: Option<String>,
    /// The encoding the content type names, if it is one the sink understands.
    pub encoding: Option<Encoding>,
    /// The body as it came over the wire (possibly gzip-compressed).
    pub raw_body: Bytes,
    /// Length of [`ReceivedRequest::raw_body`].
    pub raw_len: usize,
    /// The body after undoing `Content-Encoding`; `None` if that failed.
    pub body: Option<Bytes>,
    /// Length of [`ReceivedRequest::body`].
    pub decompressed_len: Option<usize>,
    /// The decoded export request, when the body was valid OTLP.
    pub decoded: Option<ExportTraceServiceRequest>,
    /// Why the body was refused (unsupported type, bad gzip, invalid OTLP), if it was.
    pub decode_error: Option<String>,
    /// When the request head arrived; differences between retries show the back-off.
    pub received_at: Instant,
    /// What the sink answered.
    pub answer: Outcome,
}

impl ReceivedRequest {
    /// A header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The HTTP status answered, if a response was sent.
    pub fn status(&self) -> Option<u16> {
        self.answer.status()
    }

    /// Whether the sink told the client its data was accepted (2xx).
    pub fn is_success(&self) -> bool {
        self.answer.is_success()
    }

    /// Number of spans in the decoded body (0 when it did not decode).
    pub fn span_count(&self) -> usize {
        self.decoded.as_ref().map_or(0, span_count)
    }

    /// The decoded spans of this request, whatever the answer was.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.decoded.as_ref().map(flatten).unwrap_or_default()
    }
}

fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

/// A span with the resource and scope it was sent under, so a test can check one span without
/// walking the OTLP nesting.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// The span itself.
    pub span: Span,
    /// The resource of the `ResourceSpans` it came in.
    pub resource: Option<Resource>,
    /// The instrumentation scope of the `ScopeSpans` it came in.
    pub scope: Option<InstrumentationScope>,
}

impl ReceivedSpan {
    /// The value of a span attribute.
    pub fn attr(&self, key: &str) -> Option<&AnyValue> {
        find_attr(&self.span.attributes, key)
    }

    /// A string span attribute; `None` if missing or of another type, so a type mistake in
    /// an exporter fails the test instead of being papered over.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(value_str)
    }

    /// An integer span attribute (`intValue`); doubles do not count.
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        match self.attr(key)?.value.as_ref()? {
            any_value::Value::IntValue(v) => Some(*v),
            _ => None,
        }
    }

    /// A floating-point span attribute (`doubleValue`); integers do not count.
    pub fn attr_f64(&self, key: &str) -> Option<f64> {
        match self.attr(key)?.value.as_ref()? {
            any_value::Value::DoubleValue(v) => Some(*v),
            _ => None,
        }
    }

    /// A boolean span attribute.
    pub fn attr_bool(&self, key: &str) -> Option<bool> {
        match self.attr(key)?.value.as_ref()? {
            any_value::Value::BoolValue(v) => Some(*v),
            _ => None,
        }
    }

    /// An array-of-strings span attribute; `None` if any element is not a string.
    pub fn attr_str_array(&self, key: &str) -> Option<Vec<&str>> {
        match self.attr(key)?.value.as_ref()? {
            any_value::Value::ArrayValue(array) => array.values.iter().map(value_str).collect(),
            _ => None,
        }
    }

    /// The value of a resource attribute.
    pub fn resource_attr(&self, key: &str) -> Option<&AnyValue> {
        find_attr(&self.resource.as_ref()?.attributes, key)
    }

    /// A string resource attribute (e.g. `service.name`).
    pub fn resource_attr_str(&self, key: &str) -> Option<&str> {
        self.resource_attr(key).and_then(value_str)
    }

    /// The instrumentation scope name, if a scope was sent.
    pub fn scope_name(&self) -> Option<&str> {
        self.scope.as_ref().map(|s| s.name.as_str())
    }

    /// The trace id as lower-case hex, the form used in OTLP/JSON and in UIs.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.span.trace_id)
    }

    /// The span id as lower-case hex.
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span.span_id)
    }

    /// The parent span id as lower-case hex; `None` for a root span (empty parent).
    pub fn parent_span_id_hex(&self) -> Option<String> {
        (!self.span.parent_span_id.is_empty()).then(|| to_hex(&self.span.parent_span_id))
    }
}

fn find_attr<'a>(attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref())
}

fn value_str(value: &AnyValue) -> Option<&str> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// Lower-case hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn flatten(req: &ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                out.push(ReceivedSpan { span: span.clone(), resource: rs.resource.clone(), scope: ss.scope.clone() });
            }
        }
    }
    out
}

fn accepted_spans(requests: &[ReceivedRequest]) -> Vec<ReceivedSpan> {
    requests.iter().filter(|r| r.is_success()).filter_map(|r| r.decoded.as_ref()).flat_map(flatten).collect()
}

/// A running OTLP/HTTP traces sink on the loopback interface. Dropping it (or calling
/// [`OtlpSink::shutdown`]) stops the server and closes open connections.
#[derive(Debug)]
pub struct OtlpSink {
    listener: Listener,
    path: String,
    inner: Arc<Inner>,
    /// Served over TLS ([`SinkOptions::tls`]).
    https: bool,
}

#[derive(Debug)]
struct Inner {
    gate: Gate,
    script: Script,
    journal: Journal<ReceivedRequest>,
    max_body_bytes: usize,
    refuse_span_name: Option<String>,
}

impl OtlpSink {
    /// Starts a sink on `127.0.0.1` with a free port and the default path.
    pub async fn start() -> std::io::Result<OtlpSink> {
        OtlpSink::start_with(SinkOptions::default()).await
    }

    /// Starts a sink with the given options.
    pub async fn start_with(opts: SinkOptions) -> std::io::Result<OtlpSink> {
        if !opts.path.starts_with('/') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("sink path must start with '/': {:?}", opts.path),
            ));
        }
        let inner = Arc::new(Inner {
            gate: Gate { path: opts.path.clone(), expect_header: opts.expect_header },
            script: Script::new(opts.fallback),
            journal: Journal::new(),
            max_body_bytes: opts.max_body_bytes,
            refuse_span_name: opts.refuse_span_name,
        });
        let handler_inner = inner.clone();
        let handler: Handler = Arc::new(move |req| Box::pin(handle(handler_inner.clone(), req)));
        let tls = opts.tls.map(|t| crate::server::tls_acceptor(&t.cert_chain_pem, &t.key_pem)).transpose()?;
        let https = tls.is_some();
        let listener = Listener::start_tls(opts.addr, opts.max_body_bytes, handler, tls).await?;
        Ok(OtlpSink { listener, path: opts.path, inner, https })
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// The full traces URL to configure as an exporter's `endpoint`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr(), self.path)
    }

    /// Queues answers for the next requests that pass the path/method/header checks, in
    /// order; once used up, the fallback (normally 200) applies again.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.script.push(answers);
    }

    /// Every request received so far, in arrival order, including refused ones.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.inner.journal.snapshot()
    }

    /// Spans of the requests that were answered 2xx: what a backend would have stored.
    /// Retried batches that were refused first appear once per successful delivery.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        accepted_spans(&self.inner.journal.snapshot())
    }

    /// Waits until at least `n` spans were accepted, or `timeout` passed; returns the
    /// accepted spans either way, so the test's own assertion explains what is missing.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let found = self
            .inner
            .journal
            .wait_until(timeout, |requests| {
                let spans = accepted_spans(requests);
                (spans.len() >= n).then_some(spans)
            })
            .await;
        found.unwrap_or_else(|| self.spans())
    }

    /// Waits until at least `n` requests have been received and answered (any outcome other
    /// than pending), or `timeout` passed; returns all requests either way.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        self.inner.journal.wait_for_answered(n, timeout).await
    }

    /// Waits for the `index`-th request (0-based, arrival order) to be answered; `None` if it
    /// has not been by `timeout`. Lets a printer or a test follow requests one by one.
    pub async fn wait_for_request(&self, index: usize, timeout: Duration) -> Option<ReceivedRequest> {
        self.inner.journal.wait_for_index(index, timeout).await
    }

    /// Stops the server; same as dropping the sink, spelled out for readability in tests.
    pub fn shutdown(self) {
        drop(self);
    }
}

/// What decoding made of a request body.
struct Decoding {
    encoding: Option<Encoding>,
    body: Option<Bytes>,
    result: Result<ExportTraceServiceRequest, Rejection>,
}

fn decode(head: &RequestHead, raw: &Result<Bytes, Rejection>, limit: usize) -> Decoding {
    let mut found_encoding = None;
    let mut decompressed = None;
    let result = (|| {
        let raw = raw.as_ref().map_err(Clone::clone)?;
        let content_type = head.header("content-type").ok_or_else(|| {
            Rejection::new(415, "missing Content-Type (use application/json or application/x-protobuf)")
        })?;
        let encoding = match media_type(content_type).as_str() {
            "application/json" => Encoding::Json,
            "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
            other => {
                return Err(Rejection::new(
                    415,
                    format!("unsupported Content-Type {other:?} (use application/json or application/x-protobuf)"),
                ));
            }
        };
        found_encoding = Some(encoding);
        let body = decode_content_encoding(head.header("content-encoding"), raw, limit)?;
        decompressed = Some(body.clone());
        let request = match encoding {
            Encoding::Protobuf => ExportTraceServiceRequest::decode(body.as_ref())
                .map_err(|e| Rejection::new(400, format!("invalid OTLP protobuf body: {e}")))?,
            Encoding::Json => decode_json(&body)?,
        };
        check_ids(&request)?;
        Ok(request)
    })();
    Decoding { encoding: found_encoding, body: decompressed, result }
}

fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, Rejection> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Rejection::new(400, format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(Rejection::new(400, "invalid OTLP/JSON body: expected an object with resourceSpans"));
    }
    if let Some(problem) = first_unknown_field(&value) {
        return Err(Rejection::new(400, format!("invalid OTLP/JSON body: {problem}")));
    }
    let request: ExportTraceServiceRequest =
        serde_json::from_slice(body).map_err(|e| Rejection::new(400, format!("invalid OTLP/JSON body: {e}")))?;
    // Unknown keys are caught above; this guards against a body that only looks non-empty.
    let has_content = value.as_object().is_some_and(|m| !m.is_empty());
    let declares_empty = value.get("resourceSpans").and_then(|v| v.as_array()).is_some_and(|a| a.is_empty());
    if request.resource_spans.is_empty() && has_content && !declares_empty {
        return Err(Rejection::new(400, "invalid OTLP/JSON body: non-empty body without resourceSpans"));
    }
    Ok(request)
}

/// OTLP requires 16-byte trace ids and 8-byte span ids; collectors refuse others, so an
/// exporter that gets them wrong must fail its tests.
fn check_ids(request: &ExportTraceServiceRequest) -> Result<(), Rejection> {
    let spans = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans);
    for span in spans {
        let bad = |what: &str, id: &[u8], want: usize| {
            Rejection::new(
                400,
                format!(
                    "span {:?}: {what} must be {want} bytes and not all zero, got {} bytes ({})",
                    span.name,
                    id.len(),
                    to_hex(id)
                ),
            )
        };
        let valid = |id: &[u8], want: usize| id.len() == want && id.iter().any(|b| *b != 0);
        if !valid(&span.trace_id, 16) {
            return Err(bad("traceId", &span.trace_id, 16));
        }
        if !valid(&span.span_id, 8) {
            return Err(bad("spanId", &span.span_id, 8));
        }
        if !span.parent_span_id.is_empty() && !valid(&span.parent_span_id, 8) {
            return Err(bad("parentSpanId", &span.parent_span_id, 8));
        }
    }
    Ok(())
}

/// `google.rpc.Status`, the body OTLP/HTTP prescribes for error responses.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

fn grpc_code(status: u16) -> i32 {
    match status {
        400 | 413 => 3,        // INVALID_ARGUMENT
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 | 405 | 415 => 12, // UNIMPLEMENTED
        429 => 8,              // RESOURCE_EXHAUSTED
        502..=504 => 14,       // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

type Body = (Vec<(String, String)>, Bytes);

/// An error body in the request's encoding (a `Status` message), or plain text when the
/// encoding is unknown.
fn error_body(status: u16, message: &str, encoding: Option<Encoding>) -> Body {
    match encoding {
        Some(Encoding::Json) => {
            let body = serde_json::json!({"code": grpc_code(status), "message": message});
            (content_type(Encoding::Json.content_type()), Bytes::from(body.to_string()))
        }
        Some(Encoding::Protobuf) => {
            let body = RpcStatus { code: grpc_code(status), message: message.to_owned() };
            (content_type(Encoding::Protobuf.content_type()), Bytes::from(body.encode_to_vec()))
        }
        None => (content_type("text/plain; charset=utf-8"), Bytes::from(format!("{message}\n"))),
    }
}

/// An `ExportTraceServiceResponse` in the request's encoding (JSON when unknown).
fn success_body(encoding: Option<Encoding>, partial: Option<&(i64, String)>) -> Body {
    match encoding {
        Some(Encoding::Protobuf) => {
            use opentelemetry_proto::tonic::collector::trace::v1::{
                ExportTracePartialSuccess, ExportTraceServiceResponse,
            };
            let response = ExportTraceServiceResponse {
                partial_success: partial.map(|(rejected, message)| ExportTracePartialSuccess {
                    rejected_spans: *rejected,
                    error_message: message.clone(),
                }),
            };
            (content_type(Encoding::Protobuf.content_type()), Bytes::from(response.encode_to_vec()))
        }
        _ => {
            let body = match partial {
                None => "{}".to_owned(),
                Some((rejected, message)) => serde_json::json!({
                    "partialSuccess": {"rejectedSpans": rejected, "errorMessage": message}
                })
                .to_string(),
            };
            (content_type(Encoding::Json.content_type()), Bytes::from(body))
        }
    }
}

fn content_type(value: &str) -> Vec<(String, String)> {
    vec![("content-type".to_owned(), value.to_owned())]
}

/// The response for a request that passed the gate, given the scripted (or default) answer.
fn compose(answer: Answer, decoding: &Decoding) -> Reply {
    let encoding = decoding.encoding;
    let (status, (mut headers, mut body)) = match (answer.status, &decoding.result) {
        (Some(status), _) if (200..300).contains(&status) => {
            (status, success_body(encoding, answer.partial_success.as_ref()))
        }
        (Some(status), _) => {
            (status, error_body(status, &format!("gencol-testkit: scripted status {status}"), encoding))
        }
        (None, Ok(_)) => (200, success_body(encoding, answer.partial_success.as_ref())),
        (None, Err(rejection)) => (rejection.status, error_body(rejection.status, &rejection.message, encoding)),
    };
    if let Some(custom) = answer.body {
        body = custom;
        headers = content_type("text/plain; charset=utf-8");
    }
    if answer.headers.iter().any(|(n, _)| n == "content-type") {
        headers.retain(|(n, _)| n != "content-type");
    }
    headers.extend(answer.headers);
    Reply::Respond { status, headers, body }
}

fn set_answer(request: &mut ReceivedRequest, outcome: Outcome) {
    request.answer = outcome;
}

async fn handle(inner: Arc<Inner>, req: ReadRequest) -> Reply {
    let ReadRequest { head, body: raw } = req;
    let decoding = decode(&head, &raw, inner.max_body_bytes);
    let raw_body = raw.unwrap_or_default();
    let record = ReceivedRequest {
        content_type: head.header("content-type").map(str::to_owned),
        content_encoding: head.header("content-encoding").map(str::to_owned),
        method: head.method.clone(),
        path: head.path.clone(),
        query: head.query.clone(),
        headers: head.headers.clone(),
        encoding: decoding.encoding,
        raw_len: raw_body.len(),
        raw_body,
        decompressed_len: decoding.body.as_ref().map(Bytes::len),
        body: decoding.body.clone(),
        decoded: decoding.result.as_ref().ok().cloned(),
        decode_error: decoding.result.as_ref().err().map(|r| r.message.clone()),
        received_at: head.received_at,
        answer: Outcome::Pending,
    };
    let index = inner.journal.push(record);
    let guard = PendingGuard::new(&inner.journal, index, set_answer);

    let refused = inner.refuse_span_name.as_deref().filter(|name| {
        decoding.result.as_ref().is_ok_and(|req| {
            req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).any(|s| s.name == *name)
        })
    });
    let reply = if let Some(rejection) = inner.gate.check(&head) {
        let (headers, body) = error_body(rejection.status, &rejection.message, decoding.encoding);
        Reply::Respond { status: rejection.status, headers, body }
    } else if let Some(name) = refused {
        let message = format!("invalid span `{name}`: the request was rejected");
        let (headers, body) = error_body(400, &message, decoding.encoding);
        Reply::Respond { status: 400, headers, body }
    } else {
        let answer = inner.script.next().unwrap_or_default();
        if let Some(delay) = answer.delay {
            tokio::time::sleep(delay).await;
        }
        if answer.close { Reply::Close } else { compose(answer, &decoding) }
    };
    guard.finish(reply.outcome());
    reply
}

impl crate::server::Answered for ReceivedRequest {
    fn outcome(&self) -> &Outcome {
        &self.answer
    }
}
