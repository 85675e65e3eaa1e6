//! Machinery shared by every fake destination in this crate: the loopback HTTP/1.1 listener,
//! scripted answers, the request journal tests wait on, and the gatekeeping (path, method,
//! required header) and body handling (size limit, `Content-Encoding`) all endpoints need.
//!
//! Endpoints (the OTLP sink now; Ramp- and Raindrop-like ones later) only decide what a body
//! means and what a successful answer looks like; everything a test scripts about misbehaviour
//! lives here so that it works the same way for every destination.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// Largest body (compressed or not) an endpoint accepts before answering 413, so a runaway
/// exporter or a gzip bomb cannot exhaust the memory of the test process.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One answer a test wants a destination to give, used in place of the destination's normal
/// behaviour so that retry, back-off, timeout and error-logging paths of an exporter can be
/// exercised deterministically.
///
/// An answer without an explicit status (see [`Answer::delay`]) keeps the destination's own
/// verdict (200 for a good body, 400/415 for a bad one) and only changes timing or adds
/// headers. An answer with a status is given whatever the body contained.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub(crate) status: Option<u16>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Bytes>,
    pub(crate) delay: Option<Duration>,
    pub(crate) close: bool,
    pub(crate) partial_success: Option<(i64, String)>,
}

impl Answer {
    /// Forces this HTTP status, e.g. `Answer::status(503)` to simulate an overloaded backend.
    /// A forced 2xx still carries the endpoint's normal success body (in the request's
    /// encoding); a forced non-2xx without [`Answer::body`] carries a short text body.
    ///
    /// # Panics
    /// If `code` is not a valid HTTP status (100..=999); this is a test-authoring mistake.
    pub fn status(code: u16) -> Answer {
        assert!(StatusCode::from_u16(code).is_ok(), "Answer::status({code}): not a valid HTTP status code");
        Answer { status: Some(code), ..Answer::default() }
    }

    /// A slow destination: sleeps `delay` and then gives the normal verdict, to exercise an
    /// exporter's timeout and to prove that one slow destination does not hold up others.
    pub fn delay(delay: Duration) -> Answer {
        Answer { delay: Some(delay), ..Answer::default() }
    }

    /// Drops the connection after reading the request, without any response, which is what
    /// a crashing proxy or a reset looks like to a client (a connection error, not a status).
    pub fn close() -> Answer {
        Answer { close: true, ..Answer::default() }
    }

    /// Adds `Retry-After: <seconds>` so tests can check that exporters honour it.
    pub fn retry_after(self, seconds: u64) -> Answer {
        self.header("retry-after", &seconds.to_string())
    }

    /// Adds a response header.
    ///
    /// # Panics
    /// If `name` or `value` is not a valid HTTP header name/value.
    pub fn header(mut self, name: &str, value: &str) -> Answer {
        assert!(
            HeaderName::try_from(name).is_ok() && HeaderValue::try_from(value).is_ok(),
            "Answer::header({name:?}, {value:?}): not a valid HTTP header"
        );
        self.headers.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Replaces the response body, e.g. to check that an exporter logs a backend's error
    /// message. Sent as `text/plain` unless a `content-type` header was added.
    pub fn body(mut self, body: impl Into<Bytes>) -> Answer {
        self.body = Some(body.into());
        self
    }

    /// Waits `delay` before giving this answer (a slow 503, or a hang followed by a close).
    pub fn with_delay(mut self, delay: Duration) -> Answer {
        self.delay = Some(delay);
        self
    }

    /// Makes a successful answer an OTLP partial success, which an exporter must log but must
    /// not retry.
    pub fn partial_success(mut self, rejected_spans: i64, message: impl Into<String>) -> Answer {
        self.partial_success = Some((rejected_spans, message.into()));
        self
    }
}

/// What a destination did with a request, so tests can assert on retries and failures and not
/// only on the data that got through.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The request is still being answered (e.g. an [`Answer::delay`] is in progress).
    Pending,
    /// A response was sent.
    Replied {
        /// HTTP status sent.
        status: u16,
        /// Response headers set by the destination (lower-cased names), in order.
        headers: Vec<(String, String)>,
        /// Response body sent.
        body: Bytes,
    },
    /// The connection was closed without a response, as scripted by [`Answer::close`].
    Closed,
    /// The client went away (e.g. its timeout fired) before the answer was given.
    Abandoned,
}

impl Outcome {
    /// The HTTP status sent, if a response was sent at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Replied { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the client was told its data was accepted (any 2xx).
    pub fn is_success(&self) -> bool {
        self.status().is_some_and(|s| (200..300).contains(&s))
    }

    /// Whether the answer is final (not [`Outcome::Pending`]).
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Pending)
    }
}

/// The HTTP-level facts of a request, shared by every endpoint's record type.
#[derive(Clone, Debug)]
pub(crate) struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub received_at: Instant,
}

impl RequestHead {
    fn from_request(req: &Request<Incoming>, received_at: Instant) -> RequestHead {
        RequestHead {
            method: req.method().as_str().to_owned(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            headers: collect_headers(req.headers()),
            received_at,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// Lower-cases names and joins repeated headers with ", " (HTTP list semantics) so tests can
/// look headers up by name without caring about case or repetition.
fn collect_headers(headers: &http::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// Header names whose values must never be printed: credentials of the user's destinations.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "authorization"
        || name == "proxy-authorization"
        || name == "cookie"
        || name.contains("key")
        || name.contains("token")
        || name.contains("secret")
}

/// A header value fit for printing: secrets are replaced by `***`.
pub fn masked_header_value<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret_header(name) { "***" } else { value }
}

/// A reason to refuse a request: status and a message for the client.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rejection {
    pub status: u16,
    pub message: String,
}

impl Rejection {
    pub fn new(status: u16, message: impl Into<String>) -> Rejection {
        Rejection { status, message: message.into() }
    }
}

/// Undoes `Content-Encoding` (gzip or none), bounded by `limit` bytes of output.
pub(crate) fn decode_content_encoding(encoding: Option<&str>, raw: &Bytes, limit: usize) -> Result<Bytes, Rejection> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw.clone()),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::new();
            let decoder = flate2::read::MultiGzDecoder::new(&raw[..]);
            // One byte over the limit tells "too large" apart from "exactly the limit".
            let mut bounded = decoder.take(limit as u64 + 1);
            bounded.read_to_end(&mut out).map_err(|e| Rejection::new(400, format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(Rejection::new(413, format!("decompressed body exceeds {limit} bytes")));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => {
            Err(Rejection::new(415, format!("unsupported Content-Encoding {other:?} (supported: gzip, identity)")))
        }
    }
}

/// The media type of a `Content-Type` value without parameters, lower-cased
/// (`application/json; charset=utf-8` → `application/json`).
pub(crate) fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Static checks every endpoint applies before looking at the body: the one path it serves,
/// POST only, and an optional required header (the credential a destination expects).
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    pub path: String,
    pub expect_header: Option<(String, String)>,
}

impl Gate {
    pub fn check(&self, head: &RequestHead) -> Option<Rejection> {
        if head.path != self.path {
            return Some(Rejection::new(404, format!("no endpoint at {} (this sink serves {})", head.path, self.path)));
        }
        if head.method != "POST" {
            return Some(Rejection::new(405, format!("method {} not allowed (use POST)", head.method)));
        }
        if let Some((name, value)) = &self.expect_header {
            match head.header(name) {
                Some(got) if got == value => {}
                Some(_) => {
                    return Some(Rejection::new(401, format!("wrong value for header {name}")));
                }
                None => {
                    return Some(Rejection::new(401, format!("missing required header {name}")));
                }
            }
        }
        None
    }
}

/// Answers queued by a test, consumed one per request, then `fallback` for every later one.
#[derive(Debug, Default)]
pub(crate) struct Script {
    queue: Mutex<VecDeque<Answer>>,
    fallback: Option<Answer>,
}

impl Script {
    pub fn new(fallback: Option<Answer>) -> Script {
        Script { queue: Mutex::new(VecDeque::new()), fallback }
    }

    pub fn push(&self, answers: impl IntoIterator<Item = Answer>) {
        lock(&self.queue).extend(answers);
    }

    pub fn next(&self) -> Option<Answer> {
        lock(&self.queue).pop_front().or_else(|| self.fallback.clone())
    }
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not make every later
/// assertion fail with an unrelated poison error.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything an endpoint has received, with a change signal so tests can wait for
/// "n requests" or "n spans" instead of sleeping.
/// A recorded request that carries the answer it got.
pub(crate) trait Answered {
    fn outcome(&self) -> &Outcome;
}

#[derive(Debug)]
pub(crate) struct Journal<T> {
    entries: Mutex<Vec<T>>,
    changed: watch::Sender<u64>,
}

impl<T: Clone> Journal<T> {
    pub fn new() -> Journal<T> {
        Journal { entries: Mutex::new(Vec::new()), changed: watch::Sender::new(0) }
    }

    pub fn push(&self, entry: T) -> usize {
        let index = {
            let mut entries = lock(&self.entries);
            entries.push(entry);
            entries.len() - 1
        };
        self.changed.send_modify(|v| *v += 1);
        index
    }

    pub fn update(&self, index: usize, f: impl FnOnce(&mut T)) {
        if let Some(entry) = lock(&self.entries).get_mut(index) {
            f(entry);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn snapshot(&self) -> Vec<T> {
        lock(&self.entries).clone()
    }

    /// Runs `check` on the entries after every change until it yields a value or `timeout`
    /// passes; then returns `None`.
    pub async fn wait_until<R>(&self, timeout: Duration, mut check: impl FnMut(&[T]) -> Option<R>) -> Option<R> {
        // Subscribing before checking means no change between the check and the wait is lost.
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = check(&lock(&self.entries)) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // Timed out; the sender lives as long as `self`, so no other error can occur.
                _ => return check(&lock(&self.entries)),
            }
        }
    }

    /// Waits until at least `n` requests were answered (any final outcome), or `timeout`
    /// passed; returns all requests either way.
    pub async fn wait_for_answered(&self, n: usize, timeout: Duration) -> Vec<T>
    where
        T: Answered,
    {
        let found = self
            .wait_until(timeout, |requests| {
                let done = requests.iter().filter(|r| r.outcome().is_final()).count();
                (done >= n).then(|| requests.to_vec())
            })
            .await;
        found.unwrap_or_else(|| self.snapshot())
    }

    /// Waits for the `index`-th request (0-based, arrival order) to be answered; `None` if
    /// it has not been by `timeout`.
    pub async fn wait_for_index(&self, index: usize, timeout: Duration) -> Option<T>
    where
        T: Answered,
    {
        self.wait_until(timeout, |requests| requests.get(index).filter(|r| r.outcome().is_final()).cloned()).await
    }
}

/// Marks a journal entry [`Outcome::Abandoned`] if the handling future is dropped (the client
/// hung up during a delay), so the journal never keeps a stale `Pending`.
pub(crate) struct PendingGuard<'a, T, F: Fn(&mut T, Outcome)> {
    journal: &'a Journal<T>,
    index: usize,
    set_outcome: F,
    armed: bool,
}

impl<'a, T: Clone, F: Fn(&mut T, Outcome)> PendingGuard<'a, T, F> {
    pub fn new(journal: &'a Journal<T>, index: usize, set_outcome: F) -> Self {
        PendingGuard { journal, index, set_outcome, armed: true }
    }

    pub fn finish(mut self, outcome: Outcome) {
        self.armed = false;
        self.journal.update(self.index, |e| (self.set_outcome)(e, outcome));
    }
}

impl<T, F: Fn(&mut T, Outcome)> Drop for PendingGuard<'_, T, F> {
    fn drop(&mut self) {
        if self.armed {
            let index = self.index;
            if let Some(entry) = lock(&self.journal.entries).get_mut(index) {
                (self.set_outcome)(entry, Outcome::Abandoned);
            }
            self.journal.changed.send_modify(|v| *v += 1);
        }
    }
}

/// What an endpoint's handler reports back to the listener.
pub(crate) enum Reply {
    Respond { status: u16, headers: Vec<(String, String)>, body: Bytes },
    Close,
}

impl Reply {
    pub fn outcome(&self) -> Outcome {
        match self {
            Reply::Respond { status, headers, body } => {
                Outcome::Replied { status: *status, headers: headers.clone(), body: body.clone() }
            }
            Reply::Close => Outcome::Closed,
        }
    }
}

/// A fully read request handed to an endpoint.
pub(crate) struct ReadRequest {
    pub head: RequestHead,
    /// The body as received, or the reason it could not be read in full.
    pub body: Result<Bytes, Rejection>,
}

/// The error a connection's service returns to make hyper drop the connection unanswered.
#[derive(Debug)]
struct CloseConnection;

impl fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection closed by script")
    }
}

impl std::error::Error for CloseConnection {}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(ReadRequest) -> BoxFuture<Reply> + Send + Sync>;

/// A listening server; dropping it stops accepting and closes every open connection.
#[derive(Debug)]
pub(crate) struct Listener {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Listener {
    /// Binds `addr` and serves every connection with `handler` until dropped.
    pub async fn start(addr: SocketAddr, max_body_bytes: usize, handler: Handler) -> std::io::Result<Listener> {
        Self::start_tls(addr, max_body_bytes, handler, None).await
    }

    /// [`Listener::start`], over TLS when `tls` is given.
    pub async fn start_tls(
        addr: SocketAddr,
        max_body_bytes: usize,
        handler: Handler,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, max_body_bytes, handler, tls));
        Ok(Listener { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, max_body_bytes: usize, handler: Handler, tls: Option<TlsAcceptor>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    match tls.clone() {
                        None => connections.spawn(serve_connection(stream, max_body_bytes, handler)),
                        // A client that does not trust the certificate fails the handshake:
                        // nothing to serve.
                        Some(tls) => connections.spawn(async move {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve_connection(stream, max_body_bytes, handler).await;
                            }
                        }),
                    };
                }
                // Typically EMFILE; back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection<S>(stream: S, max_body_bytes: usize, handler: Handler)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        async move {
            let received_at = Instant::now();
            let head = RequestHead::from_request(&req, received_at);
            let body = match Limited::new(req.into_body(), max_body_bytes).collect().await {
                Ok(collected) => Ok(collected.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    Err(Rejection::new(413, format!("body exceeds {max_body_bytes} bytes")))
                }
                // The client went away mid-body: there is nobody to answer.
                Err(_) => return Err(CloseConnection),
            };
            match handler(ReadRequest { head, body }).await {
                Reply::Respond { status, headers, body } => Ok(build_response(status, &headers, body)),
                Reply::Close => Err(CloseConnection),
            }
        }
    });
    // Errors here are client disconnects or scripted closes; both are already recorded.
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

/// A TLS acceptor presenting `cert_chain_pem` with `key_pem`.
pub(crate) fn tls_acceptor(cert_chain_pem: &str, key_pem: &str) -> std::io::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("certificate PEM: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| invalid(format!("key PEM: {e}")))?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(TlsAcceptor::from(std::sync::Arc::new(config)))
}

fn build_response(status: u16, headers: &[(String, String)], body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
