//! End to end: the shipped `pipelines/raindrop.yaml`, run by the real gencol binary, turns
//! generations (and GenAI spans received over OTLP) into Raindrop events that a Raindrop-like
//! ingest with the real one's rules accepts; retries, rejections, truncation and batching
//! behave as RAINDROP.md says, and the write key never reaches a log line.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use gencol_testkit::{Answer, RAINDROP_MAX_BODY_BYTES, RAINDROP_MAX_TEXT_CHARS, RaindropSink};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);
const KEY: &str = "rdk_live_Hq3vN8xZ2pW7kT5m";
const MARKER: &str = "...[truncated by gencol]";

fn raindrop_yaml() -> PathBuf {
    repo_root().join("pipelines/raindrop.yaml")
}

/// Merged over `pipelines/raindrop.yaml`: free ports, the OTLP receiver as a second source,
/// a short group window and fast retries, so the test runs the shipped pipeline.
fn overrides(exporter_extra: &str) -> String {
    format!(
        r#"
receivers:
  generations:
    endpoint: 127.0.0.1:{{GEN_PORT}}
  otlp:
    endpoint: 127.0.0.1:{{OTLP_PORT}}
processors:
  hierarchy:
    group_window: 300ms
exporters:
  raindrop:
    retry:
      initial_interval: 100ms
{exporter_extra}
service:
  shutdown_timeout: 5s
  pipelines:
    traces:
      receivers: [generations, otlp]
"#
    )
}

fn start(sink: &RaindropSink, exporter_extra: &str) -> Gencol {
    Gencol::start_configs(
        &[&raindrop_yaml()],
        &overrides(exporter_extra),
        // Debug logs include the HTTP client's own lines: the key must not be in those either.
        &["--log-level", "debug"],
        &[("RAINDROP_WRITE_KEY", KEY), ("RAINDROP_BASE_URL", &sink.url())],
    )
}

/// Stops gencol (it must exit cleanly) and returns everything it wrote, checked for the key.
fn logs(gencol: &mut Gencol) -> String {
    gencol.logs_without(KEY)
}

/// Waits a little past the group window, so anything else that was going to arrive has.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

#[tokio::test]
async fn the_seed_example_arrives_as_the_documented_event() {
    let sink = RaindropSink::start(KEY).await.unwrap();
    let mut gencol = start(&sink, "");
    let (status, body) = post_json(&gencol.generations_url(), &example("raindrop-seed.json")).await;
    assert_eq!((status, body), (202, json!({"accepted": 1, "rejected": []})));

    let events = sink.wait_for_events(1, WAIT).await;
    settle().await;
    // `trace_name` makes hierarchy add a root span "Time Check": it is not a generation,
    // so it makes no event.
    assert_eq!(sink.events().len(), 1, "one event per generation: {:#?}", sink.events());
    let e = &events[0];
    assert_eq!(e["event_id"], "gen-1795341912-fz1g3QwhZyyAC0gzg7UK");
    assert_eq!(e["user_id"], "user_35");
    assert_eq!(e["event"], "ai_generation");
    assert_eq!(e["timestamp"], "2026-11-22T10:05:12.000Z");
    assert_eq!(
        e["ai_data"],
        json!({"model": "anthropic/claude-sonnet-4", "input": "What time is it?",
               "output": "I can't see a clock, but you can check the time on your device.", "convo_id": "session_abc"})
    );
    let p = &e["properties"];
    assert_eq!(p["feature"], "assistant", "custom trace keys as is, no namespace");
    assert_eq!(p["trace_name"], "Time Check");
    assert!(p.get("trace_id").is_none(), "the client sent no trace_id");
    assert_eq!(p["model"], "anthropic/claude-sonnet-4");
    assert_eq!(p["provider"], "Anthropic");
    assert_eq!(p["total_cost"], 0.0021);
    assert_eq!(
        (p["prompt_tokens"].as_i64(), p["completion_tokens"].as_i64(), p["total_tokens"].as_i64()),
        (Some(12), Some(30), Some(42))
    );
    assert_eq!(p["duration_ms"], 1250);
    assert_eq!(p["finish_reason"], "stop");
    assert_eq!(p["$context"]["library"]["name"], "gencol");
    assert_eq!(e["attachments"], json!([]));

    let requests = sink.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(requests[0].header("content-encoding"), None);
    logs(&mut gencol);
}

#[tokio::test]
async fn a_genai_span_received_over_otlp_becomes_an_event() {
    let sink = RaindropSink::start(KEY).await.unwrap();
    let mut gencol = start(&sink, "");
    let body = genai_otlp_request("chat gpt-4o");
    let (status, answer) = post_json(&gencol.otlp_url(), &body).await;
    assert_eq!(status, 200, "{answer}");

    let events = sink.wait_for_events(1, WAIT).await;
    settle().await;
    assert_eq!(sink.events().len(), 1, "the HTTP span is not a generation: {:#?}", sink.events());
    let e = &events[0];
    assert_eq!(e["event_id"], "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT");
    assert_eq!(e["user_id"], "user_35");
    assert_eq!(e["event"], "ai_generation");
    assert_eq!(e["timestamp"], "2026-11-22T10:00:00.000Z");
    assert_eq!(
        e["ai_data"],
        json!({"model": "gpt-4o-2024-08-06", "input": "What time is it?", "output": "Ten.", "convo_id": "session_abc"})
    );
    let p = &e["properties"];
    assert_eq!(p["feature"], "assistant");
    assert_eq!(p["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(p.get("trace_name").is_none());
    assert_eq!(
        (p["prompt_tokens"].as_i64(), p["total_tokens"].as_i64(), p["duration_ms"].as_i64()),
        (Some(12), Some(15), Some(1500))
    );
    assert_eq!(p["provider"], "openai");
    logs(&mut gencol);
}

#[tokio::test]
async fn privacy_mode_sends_everything_but_input_and_output() {
    let sink = RaindropSink::start(KEY).await.unwrap();
    let mut gencol = start(&sink, "    privacy_mode: true\n");
    assert_eq!(post_json(&gencol.generations_url(), &example("raindrop-seed.json")).await.0, 202);
    let events = sink.wait_for_events(1, WAIT).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["ai_data"], json!({"model": "anthropic/claude-sonnet-4", "convo_id": "session_abc"}));
    assert_eq!((e["user_id"].as_str(), e["properties"]["feature"].as_str()), (Some("user_35"), Some("assistant")));
    assert_eq!(e["properties"]["total_tokens"], 42);
    let body = String::from_utf8_lossy(&sink.requests()[0].body).into_owned();
    assert!(!body.contains("What time is it?") && !body.contains("clock"), "no content anywhere: {body}");
    logs(&mut gencol);
}

#[tokio::test]
async fn retries_503_honouring_retry_after_then_delivers_once() {
    let sink = RaindropSink::start(KEY).await.unwrap();
    sink.script([Answer::status(503).retry_after(1), Answer::status(503).retry_after(1)]);
    let mut gencol = start(&sink, "");
    assert_eq!(post_json(&gencol.generations_url(), &example("raindrop-seed.json")).await.0, 202);

    let events = sink.wait_for_events(1, WAIT).await;
    settle().await;
    let requests = sink.requests();
    assert_eq!(requests.iter().map(|r| r.status()).collect::<Vec<_>>(), [Some(503), Some(503), Some(204)]);
    assert_eq!(events.len(), 1);
    assert_eq!(sink.events().len(), 1, "delivered once");
    let waited = requests[2].received_at.duration_since(requests[0].received_at);
    assert!(waited >= Duration::from_secs(2), "Retry-After: 1 twice, waited only {waited:?}");
    assert_eq!(requests[0].body, requests[2].body, "the same event each time");
    let logs = logs(&mut gencol);
    assert!(logs.contains("will retry"), "{logs}");
}

#[tokio::test]
async fn a_400_is_not_retried_and_is_logged_with_its_body() {
    let sink = RaindropSink::start(KEY).await.unwrap();
    sink.script([Answer::status(400).body("{\"error\":\"event_id gen-x: project is paused\"}")]);
    let mut gencol = start(&sink, "");
    assert_eq!(post_json(&gencol.generations_url(), &example("raindrop-seed.json")).await.0, 202);
    sink.wait_for_requests(1, WAIT).await;
    settle().await;
    assert_eq!(sink.requests().len(), 1, "a 400 is permanent: one request only");
    assert!(sink.events().is_empty());
    let logs = logs(&mut gencol);
    let line = logs.lines().find(|l| l.contains("not retrying")).unwrap_or_else(|| panic!("no error line:\n{logs}"));
    assert!(line.contains("400") && line.contains("project is paused"), "{line}");
}

#[tokio::test]
async fn a_3mb_completion_is_truncated_with_the_marker_and_bodies_stay_under_1_mib() {
    let sink = RaindropSink::start(KEY).await.unwrap();
    let mut gencol = start(&sink, "");
    let mut record = example("raindrop-seed.json");
    record["response"]["choices"][0]["message"]["content"] = json!("x".repeat(3_000_000));
    let (status, body) = post_json(&gencol.generations_url(), &record).await;
    assert_eq!(status, 202, "{body}");

    let events = sink.wait_for_events(1, WAIT).await;
    assert_eq!(
        events.len(),
        1,
        "{:?}",
        sink.requests().iter().map(|r| (r.status(), r.error.clone())).collect::<Vec<_>>()
    );
    let output = events[0]["ai_data"]["output"].as_str().expect("output");
    let input = events[0]["ai_data"]["input"].as_str().expect("input");
    assert!(output.ends_with(MARKER), "the marker ends the cut text");
    assert_eq!(output.chars().count(), RAINDROP_MAX_TEXT_CHARS, "the marker counts inside the limit");
    assert_eq!(output.trim_end_matches(MARKER), "x".repeat(RAINDROP_MAX_TEXT_CHARS - MARKER.len()));
    assert_eq!(input, "What time is it?");
    for r in sink.requests() {
        assert!(r.body_len <= RAINDROP_MAX_BODY_BYTES, "a request of {} bytes", r.body_len);
    }
    logs(&mut gencol);
}

#[tokio::test]
async fn many_generations_go_in_batches_of_batch_size() {
    let sink = RaindropSink::start(KEY).await.unwrap();
    let mut gencol = start(&sink, "    batch_size: 50\n");
    let records: Vec<Value> = (0..120).map(|i| generation(&format!("gen-batch-{i:03}"))).collect();
    let (status, body) = post_json(&gencol.generations_url(), &Value::Array(records)).await;
    assert_eq!(status, 202, "{body}");

    let events = sink.wait_for_events(120, WAIT).await;
    settle().await;
    assert_eq!(events.len(), 120);
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["event_id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 120, "every generation once");
    let counts: Vec<usize> = sink.requests().iter().map(|r| r.event_count()).collect();
    assert_eq!(counts, [50, 50, 20]);
    logs(&mut gencol);
}

/// `gencol test-connection` on the shipped pipeline: what the seed's "Test Connection" does.
fn test_connection(base_url: &str, key: &str) -> (bool, String) {
    shipped_connection_test(
        &raindrop_yaml(),
        "raindrop",
        &[("RAINDROP_WRITE_KEY", key), ("RAINDROP_BASE_URL", base_url)],
    )
}

#[tokio::test]
async fn test_connection_sends_one_marked_event_and_reports_failures_without_the_key() {
    let sink = RaindropSink::start(KEY).await.unwrap();
    let url = sink.url();
    // A blocking child process; the sink keeps serving on the runtime meanwhile.
    let (ok, out) = tokio::task::spawn_blocking(move || test_connection(&url, KEY)).await.unwrap();
    assert!(ok && out.contains("raindrop: ok (204 No Content)"), "{out}");
    let request = &sink.requests()[0];
    assert_eq!(request.header("x-test-connection"), Some("true"));
    let event = &sink.events()[0];
    assert_eq!(
        (event["event"].as_str(), event["properties"]["gencol.test_connection"].as_bool()),
        (Some("gencol_test_connection"), Some(true))
    );

    let wrong = "rdk_live_WRONGWRONGWRONG";
    let url = sink.url();
    let (ok, out) = tokio::task::spawn_blocking(move || test_connection(&url, wrong)).await.unwrap();
    assert!(!ok && out.contains("raindrop: FAILED: 401"), "{out}");
    assert!(!out.contains(wrong) && !out.contains(KEY), "{out}");
}
