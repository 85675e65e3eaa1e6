//! The limit: an HTTP/1.1 server that reads each request body in full, throws it away
//! and answers as the real receiver would (202 for generations, 200 `{}` for OTLP). It
//! runs as its own process, pinned and measured like the others, on the same hyper
//! and tokio setup gencol's receivers use, so "gencol / null" is the share of a core's
//! HTTP capacity that gencol's own work leaves.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves on `listen` until killed. Uses the default multi-thread runtime, as `gencol`
/// does: pinned to one core it gets one worker.
pub fn serve(listen: &str) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(discard))
                    .await;
            });
        }
    })
}

async fn discard(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let generations = req.uri().path() == "/v1/generations";
    // Read every byte, as a real receiver must, then drop it.
    let read = req.into_body().collect().await;
    let (status, body): (StatusCode, &'static [u8]) = match (read, generations) {
        (Err(_), _) => (StatusCode::BAD_REQUEST, b"{}"),
        (Ok(_), true) => (StatusCode::ACCEPTED, br#"{"accepted":1,"rejected":[]}"#),
        (Ok(_), false) => (StatusCode::OK, b"{}"),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
