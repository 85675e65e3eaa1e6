//! The HTTP plumbing both receivers share, so that they treat connections, tokens,
//! sizes and compression the same way and differ only in what a body means:
//! the listen loop (HTTP/1.1 keep-alive, `TCP_NODELAY`, graceful shutdown), the
//! bearer check, and reading a body under a limit that also bounds what gzip
//! expands to.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use gencol_engine::CancellationToken;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// What every answer carries: small, fully built bodies.
pub(crate) type Body = Full<Bytes>;

/// A client that opens a connection and never finishes its headers would otherwise
/// hold a connection (and a task) forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Bodies up to this size are decoded on the connection's own task; larger ones go
/// to the blocking pool so that one 10 MiB batch (schema checks are CPU work) does
/// not stall every other connection served by the same worker thread.
pub(crate) const INLINE_DECODE_LIMIT: usize = 256 * 1024;

/// How long a request waits for room in a full pipeline before the answer is 503.
pub(crate) const RESERVE_PATIENCE: Duration = Duration::from_millis(500);

/// How long a request waits for its batch to be on disk (disk queues) before the answer
/// is 503: far longer than an fsync, short enough that the sender's own timeout is not
/// what ends the request.
pub(crate) const ACK_PATIENCE: Duration = Duration::from_secs(20);

/// Why a receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
}

/// The bearer tokens a client may present. Tokens are secrets: they are never
/// logged, echoed in answers, or shown by `Debug`.
#[derive(Clone)]
pub(crate) struct BearerAuth {
    tokens: Arc<[Vec<u8>]>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerAuth({} tokens)", self.tokens.len())
    }
}

/// Why a request was not let in; the message says what to fix without the token.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("invalid bearer token")]
    Invalid,
}

impl BearerAuth {
    pub fn new(tokens: Vec<String>) -> Result<Self, String> {
        if tokens.is_empty() {
            return Err(
                "auth.bearer_tokens must list at least one token (leave out `auth` for no authentication)".into()
            );
        }
        // An unset `${env:TOKEN}` becomes "", which would let anyone in who sends
        // `Bearer ` with nothing after it.
        if let Some(i) = tokens.iter().position(|t| t.trim().is_empty()) {
            return Err(format!("auth.bearer_tokens[{i}] is empty (is its environment variable set?)"));
        }
        // Trimmed like the presented token, so a stray space in YAML cannot lock everyone out.
        Ok(BearerAuth { tokens: tokens.iter().map(|t| t.trim().as_bytes().to_vec()).collect() })
    }

    /// Checks `Authorization: Bearer <token>` against every configured token.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?.as_bytes();
        let value = value.trim_ascii();
        let presented = match value.split_first_chunk::<7>() {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
            _ => return Err(AuthError::Missing),
        };
        // Every token is compared in full, so timing tells neither which token was
        // close nor how much of it matched.
        let mut ok = false;
        for token in self.tokens.iter() {
            ok |= constant_time_eq(presented, token);
        }
        if ok { Ok(()) } else { Err(AuthError::Invalid) }
    }
}

/// Compares in time that depends only on the presented length, never on where the
/// first difference is or on the secret's length. `expected` is never empty
/// (checked in [`BearerAuth::new`]).
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, b) in presented.iter().enumerate() {
        diff |= b ^ expected[i % expected.len()];
    }
    std::hint::black_box(diff) == 0
}

/// `Content-Type` without parameters (`; charset=utf-8`), lower-cased; `None` when
/// absent; `Some("")` when not readable as text.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?;
    let text = value.to_str().unwrap_or("");
    Some(text.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// How the body is compressed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

/// `Content-Encoding`; `Err` carries the encoding we do not support.
pub(crate) fn compression(headers: &HeaderMap) -> Result<Compression, String> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Compression::None);
    };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(Compression::None),
        "gzip" | "x-gzip" => Ok(Compression::Gzip),
        _ => Err(format!("unsupported Content-Encoding `{text}`: send gzip or no encoding")),
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body is larger than max_request_body_size ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    Read(#[from] hyper::Error),
    #[error("request body is not valid gzip: {0}")]
    BadGzip(std::io::Error),
}

/// Reads the whole body, refusing more than `limit` bytes before and after gzip.
/// The declared `Content-Length` is checked first so an oversized upload is refused
/// without reading it.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    compression: Compression,
) -> Result<Bytes, BodyError> {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let raw = collect_limited(req.into_body(), limit, declared).await?;
    match compression {
        Compression::None => Ok(raw),
        Compression::Gzip => gunzip(&raw, limit),
    }
}

async fn collect_limited(mut body: Incoming, limit: usize, declared: Option<u64>) -> Result<Bytes, BodyError> {
    // The usual body is one frame: hand it on as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(BodyError::TooLarge { limit });
        }
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            None => rest.extend_from_slice(&data),
            Some(prev) => {
                let hint = declared.map_or(0, |n| n as usize).max(prev.len() + data.len());
                rest.reserve(hint);
                rest.extend_from_slice(&prev);
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(b) => b,
        None => Bytes::from(rest),
    })
}

/// Decompresses, stopping one byte past `limit` so a small zip bomb cannot expand
/// into gigabytes.
fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, BodyError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    MultiGzDecoder::new(compressed).take(limit as u64 + 1).read_to_end(&mut out).map_err(BodyError::BadGzip)?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// An answer with a body and its content type.
pub(crate) fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    answer(status, "application/json", body)
}

/// `{"error": "..."}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, serde_json::json!({ "error": message }).to_string())
}

/// Adds the headers a status asks for: `Allow` on 405, `WWW-Authenticate` on 401,
/// `Retry-After` on 503.
pub(crate) fn with_status_headers(mut resp: Response<Body>) -> Response<Body> {
    let status = resp.status();
    let headers = resp.headers_mut();
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        }
        StatusCode::UNAUTHORIZED => {
            headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    resp
}

/// What a receiver does with one request; the listen loop is the same for all.
pub(crate) trait Endpoint: Send + Sync + 'static {
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// Binds `endpoint` and serves `service` on it until `shutdown` is cancelled; then
/// stops accepting, lets requests in flight finish, and closes idle keep-alive
/// connections. Returns the bound address (port 0 becomes the real port).
pub(crate) async fn serve<E: Endpoint>(
    endpoint: &str,
    service: Arc<E>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ReceiverError> {
    let bind_err = |source| ReceiverError::Bind { endpoint: endpoint.to_owned(), source };
    let listener = TcpListener::bind(endpoint).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let task = tokio::spawn(accept_loop(listener, service, shutdown));
    Ok((addr, task))
}

async fn accept_loop<E: Endpoint>(listener: TcpListener, service: Arc<E>, shutdown: CancellationToken) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true).timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow with every client.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Answers are small and written at once; waiting for Nagle only adds latency.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, %peer, "cannot set TCP_NODELAY");
                }
                let service = service.clone();
                let conn = http.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| {
                        let service = service.clone();
                        async move { Ok::<_, Infallible>(service.handle(req).await) }
                    }),
                );
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    tokio::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        () = shutdown.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("test header"));
        }
        h
    }

    #[test]
    fn bearer_tokens() {
        let auth = BearerAuth::new(vec!["s3cret".into(), "other-token".into()]).expect("valid");
        assert_eq!(auth.check(&headers(&[("authorization", "Bearer s3cret")])), Ok(()));
        assert_eq!(auth.check(&headers(&[("authorization", "bearer  other-token ")])), Ok(()));
        assert_eq!(auth.check(&headers(&[("authorization", "Bearer s3cre")])), Err(AuthError::Invalid));
        assert_eq!(auth.check(&headers(&[("authorization", "Bearer s3cret2")])), Err(AuthError::Invalid));
        assert_eq!(auth.check(&headers(&[("authorization", "Bearer ")])), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers(&[("authorization", "Basic czNjcmV0")])), Err(AuthError::Missing));
        assert_eq!(auth.check(&HeaderMap::new()), Err(AuthError::Missing));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn content_headers() {
        assert_eq!(
            media_type(&headers(&[("content-type", "Application/JSON; charset=utf-8")])).as_deref(),
            Some("application/json")
        );
        assert_eq!(media_type(&HeaderMap::new()), None);
        assert_eq!(compression(&headers(&[("content-encoding", "GZIP")])), Ok(Compression::Gzip));
        assert_eq!(compression(&HeaderMap::new()), Ok(Compression::None));
        assert!(compression(&headers(&[("content-encoding", "br")])).is_err());
    }

    #[test]
    fn gunzip_limits_the_expanded_size() {
        use flate2::{Compression as Level, write::GzEncoder};
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), Level::best());
        enc.write_all(&vec![b'a'; 100_000]).expect("in memory");
        let gz = enc.finish().expect("in memory");
        assert!(gz.len() < 1_000);
        assert!(matches!(gunzip(&gz, 99_999), Err(BodyError::TooLarge { limit: 99_999 })));
        assert_eq!(gunzip(&gz, 100_000).expect("fits").len(), 100_000);
        assert!(matches!(gunzip(b"not gzip", 100), Err(BodyError::BadGzip(_))));
    }
}
