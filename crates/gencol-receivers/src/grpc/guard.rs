//! What a gRPC request passes before tonic reads its message: the bearer token (the
//! `authorization` metadata, as OTLP exporters send it), then, as the message arrives,
//! its size against `max_request_body_size` and its bytes against the memory budget every
//! receiver shares (`service.limits.max_inflight_memory`).
//!
//! The size is judged from the length the sender declares in the message's 5-byte prefix,
//! before the message is read, so a sender cannot make gencol hold more than the limit
//! (tonic itself would allocate what is declared, up to its own limit). The answer is
//! `RESOURCE_EXHAUSTED`, what gRPC servers send for a message over their limit.
//!
//! A compressed message (`grpc-encoding: gzip`, `zstd` or `deflate`) is handed on still
//! compressed, marked with [`Compressed`]: the handler inflates it as the HTTP side does
//! (`crate::http::expand`), stopping past `max_request_body_size` and paying the memory
//! budget as the output grows, where tonic would inflate it unaccounted for.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::{Either, Ready, ready};
use gencol_engine::{Consumer, RefusedReason};
use gencol_model::budget::{Charge, MemoryBudget};
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::http::{BearerAuth, Compression, Refusal};

/// gRPC's `Content-Encoding`.
const GRPC_ENCODING: &str = "grpc-encoding";

/// gRPC's length prefix: a compression flag and a 4-byte big-endian length.
const PREFIX: usize = 5;

/// How the message of a request is compressed (a request extension; absent when it is not).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compressed(pub Compression);

#[derive(Clone)]
pub(crate) struct GuardLayer {
    pub auth: Option<BearerAuth>,
    /// `max_request_body_size`: the largest message, as sent and once inflated.
    pub max_message: usize,
    pub memory: MemoryBudget,
    /// Refusals are counted in its receiver statistics.
    pub consumer: Consumer,
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { settings: self.clone(), inner }
    }
}

#[derive(Clone)]
pub(crate) struct Guard<S> {
    settings: GuardLayer,
    inner: S,
}

impl<S> Service<Request<Body>> for Guard<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let s = &self.settings;
        if let Some(Err(e)) = s.auth.as_ref().map(|auth| auth.check(req.headers())) {
            s.consumer.stats().refused(RefusedReason::Unauthorized, 1);
            return Either::Left(ready(Ok(Status::unauthenticated(e.grpc_message()).into_http())));
        }
        let (mut parts, body) = req.into_parts();
        let encoding =
            parts.headers.get(GRPC_ENCODING).and_then(|v| v.to_str().ok()).map(Compression::from_grpc_encoding);
        let compressed = match encoding {
            Some(Some(Compression::None)) | None => false,
            Some(Some(compression)) => {
                // tonic sees an uncompressed message of compressed bytes; see the module docs.
                parts.headers.remove(GRPC_ENCODING);
                parts.extensions.insert(Compressed(compression));
                true
            }
            // Left for tonic to refuse, naming the encodings it takes.
            Some(None) => false,
        };
        let body = Metered {
            inner: body,
            max_message: s.max_message,
            charge: Charge::new(&s.memory),
            prefix: Vec::with_capacity(PREFIX),
            seen: 0,
            consumer: Some(s.consumer.clone()),
            compressed,
        };
        Either::Right(self.inner.call(Request::from_parts(parts, Body::new(body))))
    }
}

/// A request body that stops at the limits; see the module docs.
struct Metered {
    inner: Body,
    max_message: usize,
    /// What the bytes received hold of the memory budget, given back when tonic is done
    /// with the body.
    charge: Charge,
    /// The first bytes, until the length prefix is known.
    prefix: Vec<u8>,
    seen: usize,
    /// Taken when a refusal is counted: a body fails once.
    consumer: Option<Consumer>,
    /// The message's compressed flag is to be cleared (its bytes go on compressed).
    compressed: bool,
}

impl Metered {
    /// The reason to stop reading, if `data` (the next part) crosses a limit.
    fn check(&mut self, data: &Bytes) -> Result<(), Refusal> {
        if self.prefix.is_empty() && !data.is_empty() && data[0] > 1 {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "not a gRPC message: its compressed flag is neither 0 nor 1",
            ));
        }
        if self.prefix.len() < PREFIX {
            let take = (PREFIX - self.prefix.len()).min(data.len());
            self.prefix.extend_from_slice(&data[..take]);
            if self.prefix.len() == PREFIX {
                let declared = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
                let declared = usize::try_from(declared).unwrap_or(usize::MAX);
                if declared > self.max_message {
                    return Err(too_large(declared, self.max_message));
                }
            }
        }
        self.seen = self.seen.saturating_add(data.len());
        // More than one message's worth: an export request is a single message.
        if self.seen > self.max_message.saturating_add(PREFIX) {
            return Err(too_large(self.seen - PREFIX, self.max_message));
        }
        self.charge.take(data.len()).map_err(Refusal::from)
    }
}

fn too_large(size: usize, max: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the message is {size} bytes, more than this receiver takes (max_request_body_size: {max} bytes)"),
    )
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let first = this.prefix.is_empty();
        let frame = match frame.into_data() {
            Ok(mut data) => {
                if let Err(refusal) = this.check(&data) {
                    return Poll::Ready(Some(Err(this.refuse(refusal))));
                }
                if first && this.compressed && data.first() == Some(&1) {
                    let mut cleared = bytes::BytesMut::from(data);
                    cleared[0] = 0;
                    data = cleared.freeze();
                }
                Frame::data(data)
            }
            Err(frame) => frame,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Metered {
    /// Counts the refusal (once) and words it as a status.
    fn refuse(&mut self, refusal: Refusal) -> Status {
        if let Some(consumer) = self.consumer.take()
            && let Some(reason) = crate::refused_reason(refusal.status)
        {
            consumer.stats().refused(reason, refusal.records);
        }
        tracing::debug!("gRPC request refused: {}", refusal.message);
        super::status(&refusal)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tonic::Code;

    use super::*;
    use crate::test_support::pipeline;

    fn framed(len: u32, body: &[u8]) -> Bytes {
        let mut b = vec![0u8];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(body);
        Bytes::from(b)
    }

    fn metered(max: usize, memory: &MemoryBudget, consumer: &Consumer) -> impl FnOnce(Bytes) -> Metered {
        let (memory, consumer) = (memory.clone(), consumer.clone());
        move |bytes| Metered {
            inner: Body::new(http_body_util::Full::new(bytes)),
            max_message: max,
            charge: Charge::new(&memory),
            prefix: Vec::new(),
            seen: 0,
            consumer: Some(consumer),
            compressed: false,
        }
    }

    #[tokio::test]
    async fn the_declared_length_is_judged_before_the_message_is_read() {
        let (consumer, _pipeline) = pipeline(10);
        let memory = MemoryBudget::new(1 << 20);
        let ok = metered(100, &memory, &consumer)(framed(3, b"abc")).collect().await.expect("within");
        assert_eq!(ok.to_bytes().len(), 8);
        assert_eq!(memory.in_use(), 0, "given back once the body is gone");

        // A prefix that declares 4 GiB is refused with nothing else read.
        let err = metered(100, &memory, &consumer)(framed(u32::MAX, b"")).collect().await.expect_err("declared");
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("4294967295 bytes") && err.message().contains("max_request_body_size"));
        // More bytes than one message of the limit.
        let err = metered(4, &memory, &consumer)(framed(3, b"abcdefgh")).collect().await.expect_err("longer");
        assert_eq!(err.code(), Code::ResourceExhausted);

        // Memory others hold: retry later.
        let full = MemoryBudget::new(10);
        let mut others = Charge::new(&full);
        others.take(6).expect("room");
        let err = metered(100, &full, &consumer)(framed(3, b"abc")).collect().await.expect_err("memory");
        assert_eq!(err.code(), Code::Unavailable);
        assert!(tonic_types::StatusExt::get_details_retry_info(&err).is_some());
    }
}
