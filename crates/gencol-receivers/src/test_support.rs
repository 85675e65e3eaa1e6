//! What the receivers' tests share: a real `Consumer` over a channel the test reads,
//! and a small HTTP/1.1 client (hyper's, or raw bytes when a test must control
//! exactly what is sent, e.g. headers without the body they announce).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gencol_engine::{Consumer, PipelineInput, PipelineMessage};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A consumer feeding one pipeline, `traces`, through a channel of `capacity`.
pub(crate) fn pipeline(capacity: usize) -> (Consumer, mpsc::Receiver<PipelineMessage>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Consumer::new(vec![PipelineInput::new("traces", tx)]), rx)
}

/// An answer as the test sees it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One keep-alive connection to a receiver.
pub(crate) struct Client {
    send: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to the receiver");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(conn);
        Client { send, addr }
    }

    /// POSTs `body` to `path` with extra `headers`.
    pub async fn post(&mut self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
        let mut req = Request::post(path).header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Full::new(body.into())).expect("valid request")).await
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        self.send.ready().await.expect("connection ready");
        let resp = tokio::time::timeout(Duration::from_secs(10), self.send.send_request(req))
            .await
            .expect("answer within 10s")
            .expect("answer");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("answer body").to_bytes();
        Answer { status: parts.status, headers: parts.headers, body }
    }
}

/// POSTs on a fresh connection.
pub(crate) async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Answer {
    Client::connect(addr).await.post(path, headers, body).await
}

/// Sends `raw` bytes as they are and returns what came back before the server
/// closed, the answer was complete, or 2s passed. For what a well-behaved client
/// cannot send: headers announcing a body that never comes, a hand-made chunked body.
pub(crate) async fn raw_request(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw.as_bytes()).await.expect("send the request");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") && complete(&got) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `raw` and then nothing more, keeping the connection open, and returns what came
/// back until the server closed the connection; `None` when it did not close within
/// `within` (a generous bound: the tests assert what happens, not how fast).
pub(crate) async fn until_closed(addr: SocketAddr, raw: &[u8], within: Duration) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("send the request");
    read_until_closed(&mut stream, within).await
}

/// What the server sends on `stream` until it closes it; `None` if still open after `within`.
pub(crate) async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether a raw answer with a `content-length` has all its body.
fn complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    body.len() >= len
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("in memory");
    enc.finish().expect("in memory")
}

/// Everything in the channel right now (the receiver answered before the test reads).
pub(crate) fn drain(rx: &mut mpsc::Receiver<PipelineMessage>) -> Vec<PipelineMessage> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}
