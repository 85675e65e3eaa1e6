//! Delivery against a real HTTP destination: OTLP retry classification, Retry-After,
//! and a clean SIGTERM that drains what was accepted.

mod common;

use std::time::Duration;

use common::*;
use gencol_testkit::{Answer, OtlpSink};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn retryable_503_with_retry_after_is_delivered_once_after_the_wait() {
    let sink = OtlpSink::start().await.unwrap();
    sink.script([Answer::status(503).retry_after(1), Answer::status(503).retry_after(1)]);
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "100ms", "", ""));
    assert_eq!(post_json(&gencol.generations_url(), &generation("r-1")).await.0, 202);
    let spans = sink.wait_for_spans(1, WAIT).await;
    assert_eq!(spans.len(), 1);
    let reqs = sink.requests();
    assert_eq!(reqs.len(), 3, "two refusals, one success");
    assert!(reqs[2].received_at - reqs[0].received_at >= Duration::from_secs(2), "Retry-After honoured");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.spans().len(), 1, "delivered once");
}

#[tokio::test]
async fn permanent_400_is_not_retried_and_is_logged_with_the_body() {
    let sink = OtlpSink::start().await.unwrap();
    sink.script([Answer::status(400).body("bad attribute")]);
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "100ms", "", ""));
    assert_eq!(post_json(&gencol.generations_url(), &generation("p-1")).await.0, 202);
    sink.wait_for_requests(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.requests().len(), 1, "not retried");
    let deadline = std::time::Instant::now() + WAIT;
    while !gencol.stderr().contains("bad attribute") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gencol.stderr().contains("400") && gencol.stderr().contains("bad attribute"), "{}", gencol.stderr());
}

#[tokio::test]
async fn connection_refused_is_retried_until_the_destination_comes_up() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    let gencol = Gencol::start(&pipeline_to_sink(&url, "100ms", "", ""));
    assert_eq!(post_json(&gencol.generations_url(), &generation("c-1")).await.0, 202);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let sink =
        OtlpSink::start_with(gencol_testkit::SinkOptions::default().addr(([127, 0, 0, 1], port).into())).await.unwrap();
    let spans = sink.wait_for_spans(1, WAIT).await;
    assert_eq!(spans.len(), 1);
}

// Multi-threaded: `stop` blocks this thread while the in-process sink must keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_accepted_data_and_exits_zero() {
    let sink = OtlpSink::start().await.unwrap();
    // Group window longer than the test: only shutdown releases the root span.
    let mut gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "60s", "", ""));
    let mut g = generation("s-1");
    g["request"]["trace"] = serde_json::json!({"trace_name": "Shutdown Flow"});
    assert_eq!(post_json(&gencol.generations_url(), &g).await.0, 202);
    sink.wait_for_spans(1, WAIT).await;
    assert!(gencol.stop(), "clean exit:\n{}", gencol.stderr());
    let names: Vec<String> = sink.spans().iter().map(|s| s.span.name.clone()).collect();
    assert!(
        names.contains(&"Shutdown Flow".to_owned()),
        "held root released at shutdown: {names:?}\n{}",
        gencol.stderr()
    );
}

#[tokio::test]
async fn otlp_pass_through_and_snake_case_is_a_400() {
    let sink = OtlpSink::start().await.unwrap();
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "100ms", "", ""));
    let body = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "app"}}]},
        "scopeSpans": [{"scope": {"name": "x"}, "spans": [{"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
        "name": "chat gpt-4o", "kind": 3, "startTimeUnixNano": "1795341600000000000", "endTimeUnixNano": "1795341601000000000",
        "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}]}]}]}]});
    let (st, _) = post_json(&gencol.otlp_url(), &body).await;
    assert_eq!(st, 200);
    let spans = sink.wait_for_spans(1, WAIT).await;
    assert_eq!(spans[0].span.name, "chat gpt-4o");
    assert_eq!(spans[0].resource_attr_str("service.name"), Some("app"));
    let snake = serde_json::json!({"resource_spans": [{"scope_spans": [{"spans": [{"name": "x"}]}]}]});
    let (st, b) = post_json(&gencol.otlp_url(), &snake).await;
    assert_eq!(st, 400, "{b}");
}

/// One span a destination refuses must not sink the spans of other requests batched with
/// it: gencol splits the refused batch and delivers everything else (issue: poison isolation).
#[tokio::test]
async fn one_refused_span_does_not_sink_the_other_requests_batched_with_it() {
    let sink = OtlpSink::start_with(gencol_testkit::SinkOptions::default().refuse_span_name("poison")).await.unwrap();
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "100ms", "", ""));
    let span = |trace: usize, i: usize, name: &str| {
        serde_json::json!({"traceId": format!("{:032x}", trace + 1), "spanId": format!("{:016x}", trace * 100 + i + 1),
            "name": name, "kind": 3, "startTimeUnixNano": "1795341600000000000", "endTimeUnixNano": "1795341601000000000"})
    };
    let body = |spans: Vec<serde_json::Value>| {
        serde_json::json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "app"}}]},
            "scopeSpans": [{"scope": {"name": "x"}, "spans": spans}]}]})
    };
    // Eleven requests at once, so they go out in one batch: ten of ten good spans, and one
    // holding the span the destination refuses among good ones.
    let url = gencol.otlp_url();
    let mut posts = Vec::new();
    for r in 0..11 {
        let spans = (0..10).map(|i| span(r, i, if r == 10 && i == 4 { "poison" } else { "good" })).collect();
        let (url, body) = (url.clone(), body(spans));
        posts.push(tokio::spawn(async move { post_json(&url, &body).await.0 }));
    }
    for p in posts {
        assert_eq!(p.await.unwrap(), 200);
    }
    let spans = sink.wait_for_spans(109, WAIT).await;
    let mut ids: Vec<String> = spans.iter().map(|s| s.span_id_hex()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 109, "every good span arrived");
    assert!(spans.iter().all(|s| s.span.name == "good"), "the refused span is not stored");
    assert!(
        sink.requests().iter().any(|r| r.status() == Some(400) && r.span_count() > 1),
        "a batch holding the refused span and others was refused first"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !gencol.stderr().contains("refused 1 of") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stderr = gencol.stderr();
    assert_eq!(stderr.matches("refused 1 of").count(), 1, "one line for the refused span: {stderr}");
    assert!(stderr.contains("invalid span `poison`"), "the destination's reason is logged: {stderr}");
}
