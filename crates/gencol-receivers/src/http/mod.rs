//! The HTTP stack both receivers share, so that they treat connections, tokens, sizes,
//! time and memory the same way and differ only in what a body means. The listen loop
//! and its bound on connections ([`connections`]) hand each request to a stack of
//! `tower` layers, one concern each, outermost first:
//!
//! | layer | concern | refuses with |
//! |---|---|---|
//! | [`AnswerLayer`] | renders a refusal in the receiver's dialect, counts it, adds `Retry-After` & co. | — |
//! | [`RouteLayer`] | the one path and method | 404, 405 |
//! | [`AuthLayer`] | the bearer token | 401 |
//! | [`ContentLayer`] | `Content-Type` and `Content-Encoding` | 415 |
//! | [`ReadLayer`] | reading the body within its size, time and memory | 408, 413, 501, 503 |
//! | [`DecompressLayer`] | gzip, within the same limits | 400, 413 |
//! | [`ReserveLayer`] | room in every pipeline, all or nothing | 503 |
//!
//! What is left for a receiver is its handler: a `Service<Request<Reserved>>` that
//! decodes the body and hands on the spans. [`stack`] composes the layers around it.

mod answer;
mod auth;
mod connections;
mod content;
mod decompress;
mod read;
mod reserve;
mod route;

use std::time::Duration;

use bytes::Bytes;
use gencol_engine::Consumer;
use gencol_model::budget::MemoryBudget;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use tower::{Service, ServiceBuilder};

pub(crate) use answer::{AnswerLayer, Dialect, Refusal};
pub(crate) use auth::{AuthLayer, BearerAuth};
pub(crate) use connections::{ConnectionLimits, HttpService, refuse, serve};
pub(crate) use content::{ContentLayer, media_type};
pub(crate) use decompress::{Compression, DecompressLayer, expand};
pub(crate) use read::{BodyLimits, ReadLayer};
pub(crate) use reserve::{ReserveLayer, Reserved, reserve};
pub(crate) use route::RouteLayer;

/// What every answer carries: small, fully built bodies.
pub(crate) type Body = Full<Bytes>;

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
    #[error("cannot serve TLS on {endpoint}: {message}")]
    Tls { endpoint: String, message: String },
}

/// What one receiver's stack is made from, besides its handler.
pub(crate) struct StackSettings<D, P> {
    pub dialect: D,
    /// The one path served; a request elsewhere gets 404 with this message.
    pub path: &'static str,
    pub not_found: &'static str,
    pub auth: Option<BearerAuth>,
    /// Reads `Content-Type` (without parameters, lower-cased) into what the handler
    /// needs to know of it; `Err` is the 415 message.
    pub content: P,
    pub body: BodyLimits,
    /// What requests of every receiver may hold at once (`service.limits.max_inflight_memory`).
    pub memory: MemoryBudget,
}

/// The shared layers around a receiver's `handler`: what the listen loop serves.
pub(crate) fn stack<D, P, K, H>(settings: StackSettings<D, P>, consumer: Consumer, handler: H) -> impl HttpService
where
    D: Dialect,
    P: Fn(Option<&str>) -> Result<K, String> + Clone + Send + Sync + 'static,
    K: Clone + Send + Sync + 'static,
    H: Service<http::Request<Reserved>, Response = Response<Body>, Error = Refusal, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static,
{
    ServiceBuilder::new()
        .layer(AnswerLayer::new(settings.dialect, consumer.clone()))
        .layer(RouteLayer::post(settings.path, settings.not_found))
        .layer(AuthLayer::new(settings.auth))
        .layer(ContentLayer::new(settings.content))
        .layer(ReadLayer::new(settings.body, settings.memory))
        .layer(DecompressLayer::new(settings.body.max_body))
        .layer(ReserveLayer::new(consumer, RESERVE_PATIENCE))
        .service(handler)
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

#[cfg(test)]
pub(crate) mod testing {
    //! What the layers' unit tests share: an inner service that records what reached it.

    use std::sync::{Arc, Mutex};

    use http::{Request, Response, StatusCode};
    use tower::Service;

    use super::{Body, Refusal};

    /// Headers from name/value pairs; a repeated name is appended, as a client sends it.
    pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_str(v).expect("test header"));
        }
        h
    }

    /// The requests a [`recorder`] was handed.
    pub(crate) type Seen<T> = Arc<Mutex<Vec<Request<T>>>>;

    /// Answers 200 to everything and keeps each request it was handed.
    pub(crate) fn recorder<T: Send + 'static>()
    -> (impl Service<Request<T>, Response = Response<Body>, Error = Refusal, Future: Send> + Clone, Seen<T>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        let svc = tower::service_fn(move |req: Request<T>| {
            keep.lock().expect("test lock").push(req);
            async { Ok::<_, Refusal>(super::answer(StatusCode::OK, "text/plain", "ok")) }
        });
        (svc, seen)
    }
}
