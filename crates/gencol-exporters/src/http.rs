//! OTLP/HTTP sending shared by every exporter that speaks it (`otlp`, `ramp`):
//! encoding, gzip, headers, and the OTLP spec's answer classification.
//!
//! Error messages are what `gencol test-connection` prints and what delivery logs, so
//! they follow one shape: `<status> <body excerpt> (from <endpoint>)` when the
//! destination answered, `cannot reach <endpoint>: <cause>` when it did not. Neither
//! may carry a secret: the endpoint is shown without query (a user may put a key there;
//! userinfo is refused at config load), and every text the destination sends back is
//! passed through the exporter's [`SecretMask`] (header values, keys, query values, in
//! any escaping, case or base64) before it is cut to an excerpt.
//!
//! Redirects are never followed: a 3xx would carry the credentials (headers, query) to
//! whatever host the destination names, or turn the POST into a GET that loses the
//! batch. It is a permanent error naming where it pointed, so the user fixes the URL.

use std::cell::RefCell;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::{Compress, Compression as GzLevel, FlushCompress, Status};
use gencol_engine::ExportError;
use gencol_engine::SecretMask;
use gencol_engine::secrets::{header_secrets, url_secrets};
use gencol_model::SpanItem;
use gencol_model::otlp;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// How an OTLP/HTTP destination is reached.
#[derive(Clone)]
pub struct OtlpHttpSettings {
    pub endpoint: reqwest::Url,
    /// The setting the endpoint was written in (`endpoint`, `base_url`), for hints.
    pub endpoint_key: &'static str,
    /// Sent with every request; values are secrets and never logged.
    pub headers: Vec<(String, String)>,
    pub protobuf: bool,
    pub gzip: bool,
    /// A private CA, a client certificate, or no verification (`tls`).
    pub tls: ClientTls,
}

/// `tls:` of an exporter, as written: a private CA to trust (beside the system's), a client
/// certificate for mTLS, or, for tests only, no verification at all.
#[derive(Clone, Debug, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// [`TlsSettings`] with its files read and parsed, at config load.
#[derive(Clone, Default)]
pub struct ClientTls {
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
    insecure: bool,
    /// The files as read, for clients other than reqwest's (the gRPC exporter's rustls).
    pub(crate) pem: std::sync::Arc<TlsPem>,
}

/// The PEM text of `tls:` files, checked by [`TlsSettings::load`].
#[derive(Default)]
pub(crate) struct TlsPem {
    pub ca: Option<Vec<u8>>,
    /// Certificate chain and private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub insecure: bool,
}

impl TlsSettings {
    /// Reads the files (relative to `base_dir`, the config file's folder). `Err` names the
    /// setting at fault and what is wrong.
    pub fn load(&self, base_dir: &std::path::Path) -> Result<ClientTls, (&'static str, String)> {
        let read = |key: &'static str, file: &str| {
            std::fs::read(base_dir.join(file)).map_err(|e| (key, format!("tls.{key}: cannot read {file}: {e}")))
        };
        let mut roots = Vec::new();
        let mut pem = TlsPem { insecure: self.insecure_skip_verify, ..TlsPem::default() };
        if let Some(file) = &self.ca_file {
            let ca = read("ca_file", file)?;
            roots = reqwest::Certificate::from_pem_bundle(&ca)
                .map_err(|e| ("ca_file", format!("tls.ca_file: {file} holds no PEM certificate: {e}")))?;
            if roots.is_empty() {
                return Err(("ca_file", format!("tls.ca_file: {file} holds no PEM certificate")));
            }
            pem.ca = Some(ca);
        }
        let identity = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let (cert, key) = (read("cert_file", cert)?, read("key_file", key)?);
                let mut both = cert.clone();
                both.push(b'\n');
                both.extend_from_slice(&key);
                let identity = reqwest::Identity::from_pem(&both).map_err(|e| {
                    ("cert_file", format!("tls.cert_file and tls.key_file do not make a client certificate (PEM): {e}"))
                })?;
                pem.identity = Some((cert, key));
                Some(identity)
            }
            (Some(_), None) => return Err(("cert_file", "tls.cert_file needs tls.key_file (its private key)".into())),
            (None, Some(_)) => return Err(("key_file", "tls.key_file needs tls.cert_file (its certificate)".into())),
        };
        Ok(ClientTls { roots, identity, insecure: self.insecure_skip_verify, pem: std::sync::Arc::new(pem) })
    }
}

impl OtlpHttpSettings {
    /// `host:port` the endpoint reaches, to detect a loop back into gencol's own receivers.
    pub fn target_addr(&self) -> Option<String> {
        let u = &self.endpoint;
        Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
    }
}

/// Hand-written so that a stray `{:?}` can never print a header value (a credential).
impl std::fmt::Debug for OtlpHttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, _)| (k.as_str(), "***")).collect();
        f.debug_struct("OtlpHttpSettings")
            .field("endpoint", &redacted_url(&self.endpoint))
            .field("endpoint_key", &self.endpoint_key)
            .field("headers", &headers)
            .field("protobuf", &self.protobuf)
            .field("gzip", &self.gzip)
            .field("tls", &(!self.tls.roots.is_empty(), self.tls.identity.is_some(), self.tls.insecure))
            .finish()
    }
}

/// Sends OTLP export requests to one endpoint over a pooled keep-alive client.
pub struct OtlpHttpSender {
    client: reqwest::Client,
    destination: Destination,
    headers: HeaderMap,
    protobuf: bool,
    gzip: bool,
    exporter: String,
    /// Compressors kept between sends (see [`gzip`]); a send that is cancelled midway
    /// drops its own.
    compressors: std::sync::Mutex<Vec<Compress>>,
}

/// Checks header names and values without revealing the values in messages.
pub fn check_headers(headers: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("header name `{k}` is not a valid HTTP header name"))?;
        let mut value = HeaderValue::from_str(v).map_err(|_| {
            format!("the value of header `{k}` is not a valid HTTP header value (it must be visible ASCII)")
        })?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

impl OtlpHttpSender {
    pub fn new(exporter: &str, s: &OtlpHttpSettings) -> Result<Self, String> {
        let headers = check_headers(&s.headers)?;
        let secrets = s.headers.iter().flat_map(|(_, value)| header_secrets(value));
        Ok(OtlpHttpSender {
            client: http_client(&s.tls)?,
            destination: Destination::new(s.endpoint.clone(), s.endpoint_key, secrets),
            headers,
            protobuf: s.protobuf,
            gzip: s.gzip,
            exporter: exporter.to_owned(),
            compressors: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Encodes and sends a batch of spans once, straight from the items (no copy of
    /// the spans: a batch is sent again on retry, so it is only ever borrowed).
    pub async fn send_items(&self, batch: &[SpanItem]) -> Result<(), ExportError> {
        let body = if !self.protobuf {
            self.encode_json_in_parts(batch).await
        } else if batch.len() < LARGE_BATCH_SPANS {
            let body = otlp::encode_items_proto(batch);
            if self.gzip { gzip(&body) } else { body }
        } else {
            // Encoding and compressing a large batch takes milliseconds of CPU. In
            // `block_in_place` the worker's other tasks move to another thread meanwhile;
            // the batch is still only borrowed.
            let encode = || {
                let body = otlp::encode_items_proto(batch);
                if self.gzip { gzip(&body) } else { body }
            };
            if multi_thread_runtime() { tokio::task::block_in_place(encode) } else { encode() }
        };
        self.send_encoded(body, false).await.map(|_| ())
    }

    /// OTLP/JSON for a batch, encoded and compressed a part at a time, handing the thread
    /// back to the runtime between parts: receiver requests that arrive meanwhile wait
    /// for one part (a fraction of a millisecond), not for the whole batch, even when
    /// gencol has a single core. (A second thread for the work would share that core with
    /// the receivers by time slices of milliseconds.) Every batch goes this way: thirty
    /// generation spans with their content already take a millisecond or more.
    ///
    /// A part is 32 KiB, or an eighth of the batch when that is more: a batch grows past
    /// a few hundred spans only when the exporter falls behind, and then its parts must be
    /// large enough that it keeps up with receivers that always have work.
    async fn encode_json_in_parts(&self, batch: &[SpanItem]) -> Vec<u8> {
        let mut writer = otlp::JsonItemsWriter::new(batch);
        let mut out = Vec::new();
        let mut budget = PART_BYTES;
        let mut written = 0;
        let mut next_budget = |part_len: usize, spans: usize| {
            written += part_len;
            // Bytes a span so far, times the batch, an eighth of it.
            (written / spans.max(1) * batch.len() / 8).max(PART_BYTES)
        };
        if !self.gzip {
            loop {
                let before = out.len();
                if writer.write_some(&mut out, budget) {
                    return out;
                }
                budget = next_budget(out.len() - before, writer.spans_written());
                tokio::task::yield_now().await;
            }
        }
        let mut gz = self.compressors.lock().ok().and_then(|mut c| c.pop()).unwrap_or_else(new_gzip);
        gz.reset();
        let mut part = Vec::with_capacity(PART_BYTES * 2);
        loop {
            part.clear();
            let done = writer.write_some(&mut part, budget);
            budget = next_budget(part.len(), writer.spans_written());
            if deflate_into(&mut gz, &part, &mut out, done).is_err() {
                // Deflating into a Vec has no failure mode; should the library report one,
                // the batch is encoded again in one go with a new compressor.
                return gzip_once(&otlp::encode_items_json(batch));
            }
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
        if let Ok(mut kept) = self.compressors.lock() {
            kept.push(gz);
        }
        out
    }

    /// Encodes and sends one request once. `test` marks it `X-Test-Connection: true`.
    /// Returns the status line on success.
    pub async fn send(&self, req: &ExportTraceServiceRequest, test: bool) -> Result<String, ExportError> {
        let body = if self.protobuf { otlp::encode_proto(req) } else { otlp::encode_json(req) };
        let body = if self.gzip { gzip(&body) } else { body };
        self.send_encoded(body, test).await
    }

    /// Sends a body already encoded (and compressed when `gzip` is set) once.
    async fn send_encoded(&self, body: Vec<u8>, test: bool) -> Result<String, ExportError> {
        let mut request = self
            .client
            .post(self.destination.url.clone())
            .headers(self.headers.clone())
            .header("content-type", if self.protobuf { "application/x-protobuf" } else { "application/json" });
        if self.gzip {
            request = request.header("content-encoding", "gzip");
        }
        if test {
            request = request.header("x-test-connection", "true");
        }
        let answer = send_once(request.body(Bytes::from(body)), &self.destination).await?;
        if answer.status.is_success() {
            self.log_partial_success(&answer.content_type, &answer.body);
            return Ok(answer.status_line());
        }
        // OTLP/HTTP: only these are worth sending again; a 500 means the data is at fault.
        let retryable = matches!(answer.status.as_u16(), 429 | 502 | 503 | 504);
        Err(answer.into_error(retryable, &self.destination))
    }

    /// A 200 may still say some spans were rejected; that is logged once per answer,
    /// with the destination's message masked and cut, never retried.
    fn log_partial_success(&self, content_type: &str, body: &[u8]) {
        if let Some((rejected_spans, message)) = partial_success(content_type, body) {
            log_partial_success(&self.exporter, &self.destination.mask, rejected_spans, &message);
        }
    }
}

/// Logs a destination's partial success once (OTLP/HTTP and OTLP/gRPC alike), its message
/// masked of the exporter's secrets and cut.
pub(crate) fn log_partial_success(exporter: &str, mask: &SecretMask, rejected_spans: i64, message: &str) {
    let message = mask.excerpt(message, EXCERPT_BYTES);
    let message = if message.is_empty() { "(no message)".to_owned() } else { message };
    tracing::warn!(exporter = %exporter, rejected_spans, "destination accepted the batch partially: {message}");
}

/// `partialSuccess` of an OTLP answer, when it reports rejected spans or a message:
/// `(rejectedSpans, errorMessage)`. OTLP/JSON writes 64-bit integers as strings
/// (`"rejectedSpans": "1"`), and some servers as numbers; both are read, as are the
/// protobuf field names (`rejected_spans`) that JSON mappings also accept.
fn partial_success(content_type: &str, body: &[u8]) -> Option<(i64, String)> {
    if body.is_empty() {
        return None;
    }
    let (rejected, message) = if content_type.starts_with("application/x-protobuf") {
        let p = ExportTraceServiceResponse::decode(body).ok()?.partial_success?;
        (p.rejected_spans, p.error_message)
    } else {
        let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
        let field = |v: &serde_json::Value, camel: &str, snake: &str| v.get(camel).or_else(|| v.get(snake)).cloned();
        let p = field(&answer, "partialSuccess", "partial_success")?;
        let rejected = match field(&p, "rejectedSpans", "rejected_spans") {
            Some(serde_json::Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
            Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0),
            _ => 0,
        };
        let message = match field(&p, "errorMessage", "error_message") {
            Some(serde_json::Value::String(s)) => s,
            _ => String::new(),
        };
        (rejected, message)
    };
    (rejected != 0 || !message.is_empty()).then_some((rejected, message))
}

/// Where an exporter sends, how messages show it, and the secrets to keep out of them.
pub(crate) struct Destination {
    pub url: reqwest::Url,
    /// The URL as messages show it (see [`redacted_url`]).
    pub shown: String,
    /// The setting the URL was written in (`endpoint`, `base_url`), named in hints.
    pub key: &'static str,
    /// Every secret of the exporter (`secrets` given, plus the URL's query values),
    /// built once here and applied to every text the destination sends back.
    pub mask: SecretMask,
}

impl Destination {
    pub fn new(url: reqwest::Url, key: &'static str, secrets: impl IntoIterator<Item = String>) -> Destination {
        let mask = SecretMask::new(secrets.into_iter().chain(url_secrets(url.as_str())));
        Destination { shown: redacted_url(&url), url, key, mask }
    }
}

/// The HTTP client of an exporter. It never follows a redirect (see the module docs): a
/// 3xx comes back as an answer, which [`HttpAnswer::into_error`] turns into a message.
pub(crate) fn http_client(tls: &ClientTls) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("gencol/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    for root in &tls.roots {
        builder = builder.add_root_certificate(root.clone());
    }
    if let Some(identity) = &tls.identity {
        builder = builder.identity(identity.clone());
    }
    if tls.insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| format!("cannot create HTTP client: {e}"))
}

/// Most bytes of an answer's body read: enough for any error text or OTLP
/// partial-success answer, and a destination cannot make gencol hold more.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Most bytes of a destination's text in one message.
pub(crate) const EXCERPT_BYTES: usize = 512;

/// One HTTP answer, its body read up to [`MAX_ANSWER_BYTES`].
pub(crate) struct HttpAnswer {
    pub status: reqwest::StatusCode,
    pub retry_after: Option<Duration>,
    pub content_type: String,
    pub location: Option<String>,
    pub body: Bytes,
    /// Whether `body` is the whole body (not cut at the limit or by a broken connection).
    pub complete: bool,
}

impl HttpAnswer {
    /// `200 OK`, for `test-connection`.
    pub fn status_line(&self) -> String {
        format!("{} {}", self.status.as_u16(), self.status.canonical_reason().unwrap_or("")).trim().to_owned()
    }

    /// A failed answer as an export error. Status first: `test-connection` prints it as
    /// `FAILED: <status> <excerpt>`; secrets the destination echoes are masked. A 3xx is
    /// permanent and names where it pointed (scheme, host and port only).
    pub fn into_error(self, retryable: bool, destination: &Destination) -> ExportError {
        let Destination { shown, key, mask, .. } = destination;
        if self.status.is_redirection() {
            let target = self.location.as_deref().and_then(|l| destination.url.join(l.trim()).ok());
            let message = match target {
                Some(target) => format!(
                    "{} (redirect to {} not followed: exporters do not follow redirects; set {key} to the final URL) (from {shown})",
                    self.status_line(),
                    mask.mask(&origin(&target)),
                ),
                None => format!(
                    "{} (redirect not followed: exporters do not follow redirects, and this one has no usable Location; set {key} to the final URL) (from {shown})",
                    self.status_line(),
                ),
            };
            return ExportError::permanent(message);
        }
        let message = format!("{} {} (from {shown})", self.status.as_u16(), self.excerpt(mask));
        if retryable {
            ExportError::Retryable { message, retry_after: self.retry_after }
        } else if refuses_content(self.status) {
            ExportError::refused(message)
        } else {
            ExportError::permanent(message)
        }
    }

    /// The start of the body as one line, secrets masked before it is cut.
    fn excerpt(&self, mask: &SecretMask) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut text: &str = &text;
        if !self.complete {
            // The body stops mid-way, maybe inside a secret too cut to be recognised:
            // that end is never shown.
            let mut end = text.len().saturating_sub(mask.margin());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text = &text[..end];
        }
        let mut shown = mask.excerpt(text, EXCERPT_BYTES);
        if shown.is_empty() && self.complete {
            return "(empty body)".into();
        }
        if !self.complete && !shown.ends_with('…') {
            shown.push('…');
        }
        shown
    }
}

/// `scheme://host[:port]` of a URL: where a redirect pointed, without the path, query
/// or userinfo a key could be in.
fn origin(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown
}

/// Statuses that refuse what a request holds rather than the request itself (auth, path):
/// a part of the batch may pass, so the engine splits it to find what is refused.
fn refuses_content(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 413 | 422)
}

/// Sends a request once and reads the answer. Not reaching the destination is retryable;
/// the message names only the redacted endpoint, since reqwest's names the full URL.
pub(crate) async fn send_once(
    request: reqwest::RequestBuilder,
    destination: &Destination,
) -> Result<HttpAnswer, ExportError> {
    let mut response = request.send().await.map_err(|e| {
        let cause = destination.mask.mask(&error_chain(&e.without_url()));
        ExportError::retryable(format!("cannot reach {}: {cause}", destination.shown))
    })?;
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let retry_after = header("retry-after").as_deref().and_then(parse_retry_after);
    let content_type = header("content-type").unwrap_or_default();
    let location = header("location");
    let status = response.status();
    let mut body = Vec::new();
    let mut complete = true;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_ANSWER_BYTES - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    complete = false;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    Ok(HttpAnswer { status, retry_after, content_type, location, body: Bytes::from(body), complete })
}

/// Protobuf batches of at least this many spans are encoded and compressed off the worker
/// thread; smaller ones take less than a millisecond in one go.
const LARGE_BATCH_SPANS: usize = 32;

/// OTLP/JSON written between two yields to the runtime: about 0.1–0.2 ms of encoding
/// and compressing.
const PART_BYTES: usize = 32 * 1024;

/// `block_in_place` needs a multi-threaded runtime (gencol's); tests may drive an
/// exporter from a single-threaded one.
fn multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

fn new_gzip() -> Compress {
    Compress::new_gzip(GzLevel::fast(), 15)
}

/// Compresses `input` into `out`, and ends the gzip stream when `finish` is set.
fn deflate_into(gz: &mut Compress, input: &[u8], out: &mut Vec<u8>, finish: bool) -> Result<(), flate2::CompressError> {
    let flush = if finish { FlushCompress::Finish } else { FlushCompress::None };
    let start = gz.total_in();
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(16 * 1024));
        }
        let consumed = usize::try_from(gz.total_in() - start).unwrap_or(input.len()).min(input.len());
        let status = gz.compress_vec(&input[consumed..], out, flush)?;
        let all_in = gz.total_in() - start == input.len() as u64;
        // Without `finish`, done once every byte is in and the output was not full (so
        // nothing is waiting for room); with it, done at the end of the stream.
        if status == Status::StreamEnd || (!finish && all_in && out.len() < out.capacity()) {
            return Ok(());
        }
    }
}

/// gzip at the fastest level, with one compressor per thread reset between bodies:
/// setting a deflate state up allocates and clears a few hundred KiB, which for an
/// export of a handful of spans costs as much as compressing them.
fn gzip(body: &[u8]) -> Vec<u8> {
    thread_local! {
        static GZIP: RefCell<Compress> = RefCell::new(new_gzip());
    }
    GZIP.with_borrow_mut(|gz| {
        gz.reset();
        let mut out = Vec::with_capacity(body.len() / 3 + 64);
        match deflate_into(gz, body, &mut out, true) {
            Ok(()) => out,
            // Deflating a byte slice into a Vec has no failure mode; if the library ever
            // reports one, the stream is started afresh with a new compressor.
            Err(_) => {
                *gz = new_gzip();
                gzip_once(body)
            }
        }
    })
}

fn gzip_once(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 3 + 64), GzLevel::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(v.trim())?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
    Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.unix_timestamp()).ok()?))
}

/// A URL fit for messages: scheme, host, port and path, without userinfo, query or
/// fragment, where a user may have put a key (`?api_key=...`). A cut query shows as `?***`.
pub fn redacted_url(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push_str("?***");
    }
    shown
}

/// [`redacted_url`] for text that may not even parse (shown in config errors).
fn redacted_url_text(s: &str) -> String {
    if let Ok(url) = reqwest::Url::parse(s) {
        return redacted_url(&url);
    }
    let (before_query, had_query) = match s.split_once('?') {
        Some((before, _)) => (before, true),
        None => (s, false),
    };
    let mut shown = match before_query.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => before_query.to_owned(),
        },
        None => before_query.to_owned(),
    };
    if had_query {
        shown.push_str("?***");
    }
    shown
}

/// Parses an `http(s)://host[:port]/path` setting (`key`); errors show the value
/// redacted and end with `hint` (what to write instead).
///
/// A user or password in the URL is refused, and `credential_hint` says where the
/// credential goes instead: reqwest would send it as Basic auth to every request, where
/// no header setting shows it, and a destination echoing it back would have to be
/// caught in base64. The message shows the URL without them.
pub fn parse_http_url(key: &str, s: &str, hint: &str, credential_hint: &str) -> Result<reqwest::Url, String> {
    let shown = redacted_url_text(s);
    let url = reqwest::Url::parse(s).map_err(|e| format!("{key} `{shown}` is not a URL ({e}): {hint}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{key} `{shown}` must be an http:// or https:// URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{key} `{shown}` must not contain a user name or password (`user:password@`): remove them and {credential_hint}"
        ));
    }
    Ok(url)
}

pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_written_in_parts_is_one_valid_stream() {
        use std::io::Read;
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("span {} ", i * 7919 % 1013).into_bytes()).collect();
        let mut gz = new_gzip();
        for _ in 0..2 {
            gz.reset();
            let mut out = Vec::new();
            let parts: Vec<&[u8]> = text.chunks(PART_BYTES).collect();
            for (i, part) in parts.iter().enumerate() {
                deflate_into(&mut gz, part, &mut out, i + 1 == parts.len()).expect("deflates");
            }
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut plain).expect("one valid gzip stream");
            assert!(plain == text, "the parts decompress to the whole text");
        }
    }

    #[test]
    fn gzip_reuses_its_compressor_and_stays_valid() {
        use std::io::Read;
        let large: Vec<u8> = (0..300_000u32).flat_map(|i| (i * 7919 % 251).to_le_bytes()).collect();
        for body in [&b""[..], b"{\"resourceSpans\":[]}", &large, b"again, after a large one"] {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&gzip(body)[..]).read_to_end(&mut plain).expect("valid gzip");
            assert_eq!(plain, body);
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn urls_in_messages_lose_userinfo_and_query() {
        let url = reqwest::Url::parse("https://user:pw@api.example.com:8443/v1/traces?api_key=s3cret#x").unwrap();
        assert_eq!(redacted_url(&url), "https://api.example.com:8443/v1/traces?***");
        let url = reqwest::Url::parse("http://127.0.0.1:4318/v1/traces").unwrap();
        assert_eq!(redacted_url(&url), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(redacted_url_text("http://u:pw@host:port/x?key=s3cret"), "http://***@host:port/x?***");
        let err = parse_http_url("base_url", "http//host/x?key=s3cret", "write a URL", "").unwrap_err();
        assert!(err.starts_with("base_url `http//host/x?***` is not a URL") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn userinfo_is_refused_without_showing_it() {
        for url in ["https://bob:hunter2pw@api.example.com/v1/traces?k=v", "https://bob@api.example.com/v1/traces"] {
            let err = parse_http_url("endpoint", url, "", "put it in `headers`").unwrap_err();
            assert_eq!(
                err,
                format!(
                    "endpoint `https://api.example.com/v1/traces{}` must not contain a user name or password (`user:password@`): remove them and put it in `headers`",
                    if url.contains('?') { "?***" } else { "" }
                )
            );
        }
    }

    fn destination(secrets: &[&str]) -> Destination {
        let url = reqwest::Url::parse("http://127.0.0.1:9/v1/traces?token=query-secret-1").unwrap();
        Destination::new(url, "endpoint", secrets.iter().map(|s| s.to_string()))
    }

    fn answer(status: u16, body: &str, location: Option<&str>) -> HttpAnswer {
        HttpAnswer {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            content_type: "text/plain".into(),
            location: location.map(str::to_owned),
            body: Bytes::from(body.to_owned()),
            complete: true,
        }
    }

    #[test]
    fn echoed_credentials_are_masked_before_the_cut() {
        let key = "rk_live_abcdef123";
        let d = destination(&header_secrets(&format!("Bearer {key}")).iter().map(String::as_str).collect::<Vec<_>>());
        let body = format!("invalid key {key} for llm (Bearer {key}), query-secret-1");
        let message = answer(401, &body, None).into_error(false, &d).to_string();
        assert_eq!(message, "401 invalid key *** for llm (***), *** (from http://127.0.0.1:9/v1/traces?***)");
        // One character of the key past the cut: before, the rest was shown.
        let body = format!("{}{key}{}", "x".repeat(EXCERPT_BYTES - key.len() + 1), "y".repeat(600));
        let message = answer(400, &body, None).into_error(false, &d).to_string();
        assert!(!message.contains(&key[..4]) && message.contains("x***y") && message.contains("y… (from"), "{message}");
        assert_eq!(
            answer(400, " \n", None).into_error(false, &d).to_string(),
            "400 (empty body) (from http://127.0.0.1:9/v1/traces?***)"
        );
    }

    #[test]
    fn a_body_read_in_part_never_shows_its_cut_end() {
        let key = "rk_live_abcdef123";
        let d = destination(&[key]);
        let mut cut = answer(400, &format!("short {}", &key[..10]), None);
        cut.complete = false;
        let message = cut.into_error(false, &d).to_string();
        assert!(!message.contains(&key[..6]) && message.starts_with("400 …"), "{message}");
    }

    #[test]
    fn redirects_are_permanent_and_name_only_the_origin() {
        let d = destination(&["rk_live_abcdef123"]);
        let err = answer(307, "see elsewhere", Some("http://u:pw@127.0.0.1:5555/v1/traces?token=rk_live_abcdef123"))
            .into_error(true, &d);
        assert_eq!(
            err,
            ExportError::permanent(
                "307 Temporary Redirect (redirect to http://127.0.0.1:5555 not followed: exporters do not follow redirects; set endpoint to the final URL) (from http://127.0.0.1:9/v1/traces?***)"
            )
        );
        let relative = answer(301, "", Some("/v2/traces")).into_error(false, &d).to_string();
        assert!(
            relative.starts_with("301 Moved Permanently (redirect to http://127.0.0.1:9 not followed"),
            "{relative}"
        );
        let nowhere = answer(302, "", None).into_error(false, &d).to_string();
        assert!(nowhere.contains("has no usable Location; set endpoint to the final URL"), "{nowhere}");
        // A host that spells a secret is masked too.
        let sneaky = answer(302, "", Some("http://rk_live_abcdef123.evil.example/")).into_error(false, &d).to_string();
        assert!(
            !sneaky.contains("rk_live") && sneaky.contains("redirect to http://***.evil.example not followed"),
            "{sneaky}"
        );
    }

    #[test]
    fn partial_success_counts_as_number_or_string() {
        let json = |body: &str| partial_success("application/json", body.as_bytes());
        assert_eq!(json(r#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"bad"}}"#), Some((1, "bad".into())));
        assert_eq!(json(r#"{"partialSuccess":{"rejectedSpans":2}}"#), Some((2, String::new())));
        assert_eq!(json(r#"{"partial_success":{"rejected_spans":"3"}}"#), Some((3, String::new())));
        assert_eq!(json(r#"{"partialSuccess":{"errorMessage":"warn only"}}"#), Some((0, "warn only".into())));
        assert_eq!(json(r#"{"partialSuccess":{}}"#), None);
        assert_eq!(json("{}"), None);
        assert_eq!(json("not json"), None);
        let proto = ExportTraceServiceResponse {
            partial_success: Some(opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                rejected_spans: 4,
                error_message: "p".into(),
            }),
        };
        assert_eq!(partial_success("application/x-protobuf", &proto.encode_to_vec()), Some((4, "p".into())));
    }

    #[test]
    fn settings_debug_hides_header_values() {
        let s = OtlpHttpSettings {
            endpoint: reqwest::Url::parse("http://h/v1/traces?token=abc").unwrap(),
            endpoint_key: "endpoint",
            headers: vec![("Authorization".into(), "Bearer topsecret".into())],
            protobuf: false,
            gzip: false,
            tls: Default::default(),
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("topsecret") && !shown.contains("abc"), "{shown}");
    }

    #[test]
    fn header_errors_never_show_values() {
        let err = check_headers(&[("Authorization".into(), "Bearer sec\nret".into())]).unwrap_err();
        assert!(!err.contains("sec"), "{err}");
    }
}
