//! Reading a request body within its limits: size, time (idle and in total) and memory.
//! Every byte held is first taken from the process-wide [`MemoryBudget`] through the
//! request's [`Charge`], which goes on with the body ([`Received`]) until the receiver
//! lets go of what it decoded; a sender that stalls is cut off instead of holding its
//! connection and its half body forever.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use gencol_model::budget::{Charge, Exceeded, MemoryBudget};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::Refusal;

/// What a receiver allows one request's body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BodyLimits {
    /// `max_request_body_size`: bytes as received, and again once decompressed.
    pub max_body: usize,
    /// `read_timeout`: the whole body, counted from the end of the headers.
    pub read_timeout: Duration,
    /// `read_idle_timeout`: the longest pause while the body arrives.
    pub read_idle_timeout: Duration,
}

/// A body read in full, and what it holds of the memory budget.
#[derive(Debug)]
pub(crate) struct Received {
    pub bytes: Bytes,
    pub charge: Charge,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body is larger than max_request_body_size ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
    #[error("request body is not valid {encoding}: {source}")]
    Corrupt { encoding: &'static str, source: std::io::Error },
    #[error(
        "the request body did not arrive within {setting} ({after:?}): the connection is closed; send the whole \
         body without pausing"
    )]
    TimedOut { setting: &'static str, after: Duration },
    #[error(
        "unsupported Transfer-Encoding `{0}`: only `chunked` is supported; to compress the body, send \
         `Content-Encoding: gzip`"
    )]
    TransferEncoding(String),
    #[error(transparent)]
    Memory(Exceeded),
}

impl BodyError {
    /// The HTTP status that says what went wrong.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } | BodyError::Memory(Exceeded::TooLarge { .. } | Exceeded::Items { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            BodyError::Memory(Exceeded::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::TimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::TransferEncoding(_) => StatusCode::NOT_IMPLEMENTED,
            BodyError::Read(_) | BodyError::Corrupt { .. } => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<BodyError> for Refusal {
    fn from(e: BodyError) -> Self {
        Refusal::new(e.status(), e.to_string())
    }
}

/// Reads the whole body into a [`Received`] before the inner service sees the request.
#[derive(Clone)]
pub(crate) struct ReadLayer {
    limits: BodyLimits,
    memory: MemoryBudget,
}

impl ReadLayer {
    pub fn new(limits: BodyLimits, memory: MemoryBudget) -> Self {
        ReadLayer { limits, memory }
    }
}

impl<S> Layer<S> for ReadLayer {
    type Service = Read<S>;

    fn layer(&self, inner: S) -> Read<S> {
        Read { limits: self.limits, memory: self.memory.clone(), inner }
    }
}

#[derive(Clone)]
pub(crate) struct Read<S> {
    limits: BodyLimits,
    memory: MemoryBudget,
    inner: S,
}

impl<S, B> Service<Request<B>> for Read<S>
where
    S: Service<Request<Received>, Error = Refusal> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = S::Response;
    type Error = Refusal;
    type Future = BoxFuture<'static, Result<S::Response, Refusal>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Refusal>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's usual hand-over).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let (limits, memory) = (self.limits, self.memory.clone());
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let received = read_body(&parts.headers, body, &limits, &memory).await?;
            inner.call(Request::from_parts(parts, received)).await
        })
    }
}

/// Reads the whole body, refusing more than `max_body` bytes and paying `memory` for
/// every byte held. The declared `Content-Length` is checked and paid for first, so an
/// oversized upload, or one there is no room for, is refused without reading it.
async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limits: &BodyLimits,
    memory: &MemoryBudget,
) -> Result<Received, BodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    transfer_codings(headers)?;
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let declared = match declared {
        Some(n) if n > limits.max_body as u64 => return Err(BodyError::TooLarge { limit: limits.max_body }),
        Some(n) => Some(n as usize),
        None => None,
    };
    let mut charge = Charge::new(memory);
    if let Some(n) = declared {
        charge.take(n).map_err(BodyError::Memory)?;
    }
    let bytes = collect_limited(body, limits, declared, &mut charge).await?;
    Ok(Received { bytes, charge })
}

/// Refuses a transfer coding other than `chunked`: hyper reads the chunks and would
/// hand on a `gzip, chunked` body still compressed, as if it were plain.
fn transfer_codings(headers: &HeaderMap) -> Result<(), BodyError> {
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let mut codings = text.split(',').map(str::trim).filter(|c| !c.is_empty());
        if codings.any(|c| !c.eq_ignore_ascii_case("chunked")) {
            return Err(BodyError::TransferEncoding(text.trim().to_owned()));
        }
    }
    Ok(())
}

async fn collect_limited<B>(
    mut body: B,
    limits: &BodyLimits,
    declared: Option<usize>,
    charge: &mut Charge,
) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let deadline = Instant::now() + limits.read_timeout;
    // The usual body is one frame: hand it on as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut total = 0usize;
    loop {
        let idle_until = Instant::now() + limits.read_idle_timeout;
        let frame = match tokio::time::timeout_at(idle_until.min(deadline), body.frame()).await {
            Ok(Some(frame)) => frame.map_err(|e| BodyError::Read(e.into()))?,
            Ok(None) => break,
            Err(_) if idle_until < deadline => {
                return Err(BodyError::TimedOut { setting: "read_idle_timeout", after: limits.read_idle_timeout });
            }
            Err(_) => return Err(BodyError::TimedOut { setting: "read_timeout", after: limits.read_timeout }),
        };
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > limits.max_body {
            return Err(BodyError::TooLarge { limit: limits.max_body });
        }
        // A body of unknown length (chunked) is paid for as it arrives; hyper holds one
        // with a `Content-Length` to that length, which was paid for already.
        if declared.is_none() {
            charge.take(data.len()).map_err(BodyError::Memory)?;
        }
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            None => rest.extend_from_slice(&data),
            Some(prev) => {
                let hint = declared.unwrap_or(0).max(prev.len() + data.len());
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{Channel, Full};
    use tower::ServiceExt;

    use super::*;
    use crate::http::testing::{headers, recorder};

    const LIMITS: BodyLimits = BodyLimits {
        max_body: 1000,
        read_timeout: Duration::from_secs(30),
        read_idle_timeout: Duration::from_secs(10),
    };

    #[test]
    fn only_the_chunked_transfer_coding_is_read() {
        assert!(transfer_codings(&HeaderMap::new()).is_ok());
        assert!(transfer_codings(&headers(&[("transfer-encoding", "chunked")])).is_ok());
        assert!(transfer_codings(&headers(&[("transfer-encoding", "Chunked")])).is_ok());
        for refused in [&[("transfer-encoding", "gzip, chunked")][..], &[("transfer-encoding", "deflate")]] {
            let e = transfer_codings(&headers(refused)).expect_err("refused");
            assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
            assert!(e.to_string().contains("Content-Encoding: gzip"), "{e}");
        }
        let two_headers = headers(&[("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")]);
        assert!(transfer_codings(&two_headers).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_body_reaches_the_handler_read_and_paid_for() {
        let (inner, seen) = recorder::<Received>();
        let memory = MemoryBudget::new(10_000);
        let svc = ReadLayer::new(LIMITS, memory.clone()).layer(inner);
        let req = Request::builder().header("content-length", "5").body(Full::new(Bytes::from_static(b"hello")));
        svc.oneshot(req.expect("request")).await.expect("read");
        let seen = seen.lock().expect("test lock");
        assert_eq!(seen[0].body().bytes, Bytes::from_static(b"hello"));
        assert_eq!(seen[0].body().charge.held(), 5);
        assert_eq!(memory.in_use(), 5, "held until the handler lets go");
    }

    #[tokio::test(start_paused = true)]
    async fn too_large_is_refused_before_reading_when_declared_and_while_reading_when_not() {
        let (inner, seen) = recorder::<Received>();
        let svc = ReadLayer::new(LIMITS, MemoryBudget::new(10_000)).layer(inner);
        // Declared too large: refused without reading (the body never arrives here).
        let (_tx, body) = Channel::<Bytes, std::io::Error>::new(1);
        let req = Request::builder().header("content-length", "1001").body(body).expect("request");
        let e = svc.clone().oneshot(req).await.expect_err("too large");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Chunked, and too large once read.
        let req = Request::new(Full::new(Bytes::from(vec![b'x'; 1001])));
        let e = svc.clone().oneshot(req).await.expect_err("too large");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("max_request_body_size (1000 bytes)"), "{}", e.message);
        // Larger than the whole process-wide budget: 413; no room left in it now: 503,
        // the sender retries.
        let memory = MemoryBudget::new(999);
        let svc = ReadLayer::new(LIMITS, memory.clone()).layer(recorder::<Received>().0);
        let e = svc.clone().oneshot(Request::new(Full::new(Bytes::from(vec![b'x'; 1000])))).await.expect_err("no room");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let memory = MemoryBudget::new(2000);
        let mut other = Charge::new(&memory);
        other.take(1500).expect("room");
        let svc = ReadLayer::new(LIMITS, memory.clone()).layer(recorder::<Received>().0);
        let e = svc.clone().oneshot(Request::new(Full::new(Bytes::from(vec![b'x'; 1000])))).await.expect_err("busy");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(memory.in_use(), 1500, "what the refused request took was given back");
        assert!(seen.lock().expect("test lock").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_that_pauses_is_cut_off_after_read_idle_timeout() {
        let svc = ReadLayer::new(LIMITS, MemoryBudget::new(10_000)).layer(recorder::<Received>().0);
        let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(1);
        let started = Instant::now();
        let sender = tokio::spawn(async move {
            tx.send_data(Bytes::from_static(b"part")).await.expect("sent");
            // Then nothing: the connection stays open and silent.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let e = svc.oneshot(Request::new(body)).await.expect_err("stalled");
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        assert!(e.message.contains("read_idle_timeout (10s)"), "{}", e.message);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_that_trickles_is_cut_off_after_read_timeout() {
        let svc = ReadLayer::new(LIMITS, MemoryBudget::new(10_000)).layer(recorder::<Received>().0);
        let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(1);
        let started = Instant::now();
        // A byte every 9 s never trips the idle timeout; the whole body is still late.
        let sender = tokio::spawn(async move {
            loop {
                if tx.send_data(Bytes::from_static(b"x")).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(9)).await;
            }
        });
        let e = svc.oneshot(Request::new(body)).await.expect_err("too slow");
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        assert!(e.message.contains("read_timeout (30s)"), "{}", e.message);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        sender.abort();
    }
}
