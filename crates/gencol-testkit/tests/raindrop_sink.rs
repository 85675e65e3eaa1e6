//! The Raindrop-like sink over real HTTP on 127.0.0.1: the ingest's answers, the journal,
//! and scripted failures.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use gencol_testkit::{Answer, Outcome, RAINDROP_MAX_BODY_BYTES, RaindropOptions, RaindropSink};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const KEY: &str = "rd-test-key-123";
const WAIT: Duration = Duration::from_secs(5);

/// Sends `method path` over a fresh HTTP/1.1 connection with a plain hyper client.
async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut builder = http::Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::from(body))).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// POSTs a batch as the exporter does, with the right key.
async fn track(sink: &RaindropSink, body: &Value) -> (u16, String) {
    let auth = format!("Bearer {KEY}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    send(sink.addr(), "POST", "/v1/events/track", &headers, body.to_string().into_bytes()).await
}

fn event(id: &str) -> Value {
    json!({"event_id": id, "user_id": "user_35", "event": "ai_generation", "timestamp": "2026-11-22T10:00:00.000Z",
           "properties": {"feature": "assistant"}, "ai_data": {"input": "What time is it?", "output": "Ten."},
           "attachments": []})
}

#[tokio::test]
async fn gatekeeping_comes_before_the_body() {
    let sink = RaindropSink::start(KEY).await.expect("sink");
    let body = json!([event("e1")]).to_string().into_bytes();
    let (status, answer) = send(sink.addr(), "POST", "/v1/events/track", &[], body.clone()).await;
    assert_eq!(status, 401, "{answer}");
    let wrong = [("authorization", "Bearer nope"), ("content-type", "application/json")];
    assert_eq!(send(sink.addr(), "POST", "/v1/events/track", &wrong, body.clone()).await.0, 401);
    let basic = [("authorization", KEY), ("content-type", "application/json")];
    assert_eq!(send(sink.addr(), "POST", "/v1/events/track", &basic, body.clone()).await.0, 401, "Bearer is required");
    let auth = format!("Bearer {KEY}");
    let good = [("authorization", auth.as_str()), ("content-type", "application/json")];
    assert_eq!(send(sink.addr(), "POST", "/v1/events/track_partial", &good, body.clone()).await.0, 404);
    assert_eq!(send(sink.addr(), "GET", "/v1/events/track", &good, Vec::new()).await.0, 405);
    assert!(sink.events().is_empty());
    assert_eq!(sink.requests().len(), 5, "refused requests are recorded too");
    for r in sink.requests() {
        let printed = r.render(1, r.received_at);
        assert!(!printed.contains(KEY), "the key is never printed: {printed}");
    }
}

#[tokio::test]
async fn answers_like_the_ingest() {
    let sink = RaindropSink::start(KEY).await.expect("sink");
    let (status, answer) = track(&sink, &json!({"event_id": "e"})).await;
    assert_eq!(status, 400);
    assert!(answer.contains("JSON array"), "{answer}");

    let mut unknown = event("e2");
    unknown["ai_data"]["prompt"] = json!("x");
    let (status, answer) = track(&sink, &json!([event("e1"), unknown])).await;
    assert_eq!(status, 400);
    assert!(answer.contains("[1].ai_data.prompt: unknown key"), "{answer}");

    let auth = format!("Bearer {KEY}");
    let gzip = [("authorization", auth.as_str()), ("content-type", "application/json"), ("content-encoding", "gzip")];
    let body = json!([event("e3")]).to_string().into_bytes();
    assert_eq!(send(sink.addr(), "POST", "/v1/events/track", &gzip, body).await.0, 400, "no gzip");

    let mut big = event("e4");
    big["properties"]["blob"] = json!("x".repeat(RAINDROP_MAX_BODY_BYTES));
    assert_eq!(track(&sink, &json!([big])).await.0, 413);

    assert_eq!(track(&sink, &json!([event("e5"), event("e6")])).await, (204, String::new()));

    let requests = sink.requests();
    assert!(requests[3].body_len > RAINDROP_MAX_BODY_BYTES, "an oversized body is recorded with its real size");
    assert!(requests[1].error.as_deref().is_some_and(|e| e.contains("[1].ai_data.prompt")));
    assert_eq!(requests[4].event_count(), 2);
    assert_eq!(sink.events().len(), 2, "only accepted events count");
    assert_eq!(sink.events()[0]["event_id"], "e5");
    let printed = requests[4].render(5, requests[0].received_at);
    assert!(
        printed.contains("-> 204") && printed.contains("event e5") && printed.contains("What time is it?"),
        "{printed}"
    );
}

#[tokio::test]
async fn scripted_failures_then_the_normal_verdict() {
    let sink = RaindropSink::start(KEY).await.expect("sink");
    sink.script([Answer::status(503).retry_after(1), Answer::status(429), Answer::delay(Duration::from_millis(300))]);
    let batch = json!([event("e1")]);
    assert_eq!(track(&sink, &batch).await.0, 503);
    assert_eq!(track(&sink, &batch).await.0, 429);
    assert!(sink.events().is_empty(), "refused deliveries store nothing");
    let started = std::time::Instant::now();
    assert_eq!(track(&sink, &batch).await.0, 204);
    assert!(started.elapsed() >= Duration::from_millis(300), "the delay was applied");
    assert_eq!(sink.wait_for_events(1, WAIT).await.len(), 1);
    let Outcome::Replied { headers, .. } = &sink.requests()[0].answer else { panic!("answered") };
    assert!(headers.contains(&("retry-after".to_owned(), "1".to_owned())));
}

#[tokio::test]
async fn a_fallback_answers_every_request() {
    let sink = RaindropSink::start_with(RaindropOptions::new(KEY).fallback(Answer::status(500))).await.expect("sink");
    for _ in 0..3 {
        assert_eq!(track(&sink, &json!([event("e1")])).await.0, 500);
    }
    assert_eq!(sink.wait_for_requests(3, WAIT).await.len(), 3);
    assert!(sink.events().is_empty());
}
