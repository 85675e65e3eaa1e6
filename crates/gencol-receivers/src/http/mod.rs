//! The HTTP plumbing both receivers share, so that they treat connections, tokens,
//! sizes, time and memory the same way and differ only in what a body means: the listen
//! loop and its bound on connections ([`connections`]), the bearer check ([`auth`]),
//! and reading a body within its size, time and memory limits ([`body`]).

mod auth;
mod body;
mod connections;

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

pub(crate) use auth::BearerAuth;
pub(crate) use body::{BodyLimits, compression, media_type, read_body};
pub(crate) use connections::{ConnectionLimits, serve};

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
/// `Retry-After` on 503, `Connection: close` on 408.
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
        // The body did not arrive in time: the rest of it is not waited for.
        StatusCode::REQUEST_TIMEOUT => {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}

/// What a receiver does with one request; the listen loop is the same for all.
pub(crate) trait Endpoint: Send + Sync + 'static {
    /// The JSON body of the 503 a connection gets when every connection of the listener
    /// is busy (written before anything is read, so in JSON whatever the sender speaks).
    const BUSY_JSON: &'static str;

    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}
