//! The destination every exporter under test sends to: it answers at once and keeps the
//! bodies with their arrival time; spans are counted after the run by decoding them
//! (gzip, OTLP/JSON or protobuf). Decoding after the run keeps the work off the
//! generator's core while it is timing answers; the process under test is on another
//! core either way.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::net::TcpListener;

/// One export request as it arrived.
pub struct Delivery {
    pub at: Instant,
    pub gzip: bool,
    pub protobuf: bool,
    pub body: Bytes,
}

/// A running sink; clones share the same store.
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Delivery>>>,
}

impl Sink {
    /// Listens on a free port of 127.0.0.1, on the current runtime.
    pub async fn start() -> std::io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let sink = Sink { addr: listener.local_addr()?, received: Arc::default() };
        let store = sink.received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let store = store.clone();
                        async move { Ok::<_, Infallible>(receive(req, &store).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(sink)
    }

    /// Everything received since the last call.
    pub fn take(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.received.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// When the latest body arrived, if any arrived since the last [`Sink::take`].
    pub fn last_arrival(&self) -> Option<Instant> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).last().map(|d| d.at)
    }
}

async fn receive(req: Request<Incoming>, store: &Mutex<Vec<Delivery>>) -> Response<Full<Bytes>> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let gzip = header(CONTENT_ENCODING).contains("gzip");
    let protobuf = header(CONTENT_TYPE).contains("protobuf");
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST, protobuf, Bytes::new());
    };
    store.lock().unwrap_or_else(|p| p.into_inner()).push(Delivery { at: Instant::now(), gzip, protobuf, body });
    // An empty ExportTraceServiceResponse: full success, in the request's encoding.
    answer(StatusCode::OK, protobuf, if protobuf { Bytes::new() } else { Bytes::from_static(b"{}") })
}

fn answer(status: StatusCode, protobuf: bool, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let content_type = if protobuf { "application/x-protobuf" } else { "application/json" };
    resp.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}

/// Spans in one delivery; `Err` when it is not OTLP at all (counted as a failure).
pub fn count_spans(d: &Delivery) -> Result<usize, String> {
    let plain;
    let body: &[u8] = if d.gzip {
        let mut out = Vec::with_capacity(d.body.len() * 4);
        MultiGzDecoder::new(&d.body[..]).read_to_end(&mut out).map_err(|e| format!("bad gzip: {e}"))?;
        plain = out;
        &plain
    } else {
        &d.body
    };
    if d.protobuf {
        let req = CountedRequest::decode(body).map_err(|e| format!("bad OTLP/protobuf: {e}"))?;
        Ok(req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum())
    } else {
        let req: CountedJson = serde_json::from_slice(body).map_err(|e| format!("bad OTLP/JSON: {e}"))?;
        Ok(req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum())
    }
}

// Just enough of ExportTraceServiceRequest to count spans without building them.

#[derive(Clone, PartialEq, Message)]
struct CountedRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<CountedResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct CountedResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<CountedScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct CountedScopeSpans {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<Bytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountedJson {
    #[serde(default)]
    resource_spans: Vec<CountedJsonResource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountedJsonResource {
    #[serde(default)]
    scope_spans: Vec<CountedJsonScope>,
}

#[derive(Deserialize)]
struct CountedJsonScope {
    #[serde(default)]
    spans: Vec<IgnoredAny>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{BodyKind, BodyPool};
    use std::io::Write;

    #[test]
    fn counts_spans_in_every_encoding() {
        let pool = BodyPool::new(BodyKind::OtlpJson, 10, 3);
        let json = pool.next_body();
        let req = gencol_model::otlp::decode_json(&json).expect("OTLP/JSON");
        let proto = Bytes::from(gencol_model::otlp::encode_proto(&req));
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).expect("in memory");
            Bytes::from(e.finish().expect("in memory"))
        };
        for (gzip, protobuf, body) in [
            (false, false, json.clone()),
            (true, false, gz(&json)),
            (false, true, proto.clone()),
            (true, true, gz(&proto)),
        ] {
            let d = Delivery { at: Instant::now(), gzip, protobuf, body };
            assert_eq!(count_spans(&d), Ok(10), "gzip={gzip} protobuf={protobuf}");
        }
    }
}
