//! End to end: the shipped `pipelines/posthog.yaml`, run by the real gencol binary, turns
//! generations (and GenAI spans received over OTLP) into the `$ai_generation` events of
//! PostHog's LLM analytics, which a PostHog-like capture endpoint checking PostHog's schema
//! accepts; every mapped field matches the record (README "PostHog"), privacy mode leaves
//! the content out, a 429 is retried after its `Retry-After`, and the project API key never
//! reaches a log line or a test-connection message.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use gencol_testkit::{Answer, PostHogSink};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(15);
const KEY: &str = "phc_Zt7wQ2nV5xK8mB3cJ6pR9sLd";
const SEED_ID: &str = "gen-1795341912-fz1g3QwhZyyAC0gzg7UK";

fn posthog_yaml() -> PathBuf {
    repo_root().join("pipelines/posthog.yaml")
}

/// Merged over `pipelines/posthog.yaml`: free ports, the OTLP receiver as a second source,
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
  posthog:
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

fn start(sink: &PostHogSink, exporter_extra: &str) -> Gencol {
    Gencol::start_configs(
        &[&posthog_yaml()],
        &overrides(exporter_extra),
        // Debug logs include the HTTP client's own lines: the key must not be in those either.
        &["--log-level", "debug"],
        &[("POSTHOG_API_KEY", KEY), ("POSTHOG_HOST", &sink.url())],
    )
}

/// Waits a little past the group window, so anything else that was going to arrive has.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

/// The event uuid README documents: SHA-256 of `gencol:event:` + the generation id, its
/// first 16 bytes as an RFC 9562 version 8 UUID.
fn event_uuid(generation_id: &str) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&Sha256::digest(format!("gencol:event:{generation_id}").as_bytes())[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn event_by_uuid(events: &[Value], uuid: &str) -> Value {
    events.iter().find(|e| e["uuid"] == uuid).cloned().unwrap_or_else(|| panic!("no event {uuid} in {events:#?}"))
}

#[tokio::test]
async fn the_seed_and_a_failed_generation_arrive_with_every_mapped_field() {
    let sink = PostHogSink::start(KEY).await.unwrap();
    let mut gencol = start(&sink, "");
    let failed = json!({"id": "gen-failed-1", "created_at": "2026-11-22T10:06:00.000Z",
        "completed_at": "2026-11-22T10:06:00.100Z", "provider": "OpenAI",
        "request": {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                    "trace": {"trace_id": "expense_analysis_001", "generation_name": "Analyze Report"}},
        "error": {"status": 429, "message": "Rate limit exceeded"}});
    let (status, body) = post_json(&gencol.generations_url(), &json!([example("raindrop-seed.json"), failed])).await;
    assert_eq!((status, body), (202, json!({"accepted": 2, "rejected": []})));

    let events = sink.wait_for_events(2, WAIT).await;
    settle().await;
    // `trace_name` makes hierarchy add a root span "Time Check": not a generation, no event.
    assert_eq!(sink.events().len(), 2, "one event per generation: {:#?}", sink.events());

    let seed = event_by_uuid(&events, &event_uuid(SEED_ID));
    let trace = sha_hex(&format!("gencol:trace:{SEED_ID}"), 16);
    assert_eq!(
        seed,
        json!({
            "event": "$ai_generation",
            "distinct_id": "user_35",
            "timestamp": "2026-11-22T10:05:12.000Z",
            "uuid": event_uuid(SEED_ID),
            "properties": {
                "$ai_trace_id": trace,
                "$ai_span_id": sha_hex(&format!("gencol:gen:{SEED_ID}"), 8),
                // Under the root span hierarchy made for trace_name.
                "$ai_parent_id": sha_hex(&format!("gencol:root:{trace}:Time Check"), 8),
                "$ai_session_id": "session_abc",
                "$ai_model": "anthropic/claude-sonnet-4",
                "$ai_provider": "Anthropic",
                "$ai_input": [{"role": "user", "content": "What time is it?"}],
                "$ai_output_choices": [{"role": "assistant",
                    "content": "I can't see a clock, but you can check the time on your device."}],
                "$ai_input_tokens": 12,
                "$ai_output_tokens": 30,
                "$ai_cache_read_input_tokens": 0,
                "$ai_reasoning_tokens": 0,
                "$ai_total_cost_usd": 0.0021,
                "$ai_latency": 1.25,
                "$ai_time_to_first_token": 0.84,
                "$ai_is_error": false,
                "trace_name": "Time Check",
                "feature": "assistant",
                "$lib": "gencol",
                "$lib_version": env!("CARGO_PKG_VERSION")
            }
        })
    );

    let failed = event_by_uuid(&events, &event_uuid("gen-failed-1"));
    assert_eq!(failed["distinct_id"], "anonymous");
    let p = &failed["properties"];
    assert_eq!(p["$process_person_profile"], false, "no user: no person profile");
    assert_eq!(p["$ai_trace_id"], "expense_analysis_001", "the client's trace id as sent");
    assert_eq!(p["$ai_span_name"], "Analyze Report");
    assert_eq!(
        (p["$ai_is_error"].as_bool(), p["$ai_error"].as_str(), p["$ai_http_status"].as_i64()),
        (Some(true), Some("Rate limit exceeded"), Some(429))
    );
    assert_eq!(p["$ai_latency"], 0.1);
    assert!(p.get("$ai_output_choices").is_none() && p.get("$ai_input_tokens").is_none(), "{p:#}");

    for r in sink.requests() {
        assert_eq!((r.path.as_str(), r.status()), ("/batch/", Some(200)));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), None);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((body["api_key"].as_str(), body["historical_migration"].as_bool()), (Some(KEY), Some(false)));
    }
    gencol.logs_without(KEY);
}

#[tokio::test]
async fn a_genai_span_received_over_otlp_becomes_an_event() {
    let sink = PostHogSink::start(KEY).await.unwrap();
    let mut gencol = start(&sink, "");
    let body = genai_otlp_request("summarize");
    let (status, answer) = post_json(&gencol.otlp_url(), &body).await;
    assert_eq!(status, 200, "{answer}");

    let events = sink.wait_for_events(1, WAIT).await;
    settle().await;
    assert_eq!(sink.events().len(), 1, "the HTTP span is not a generation: {:#?}", sink.events());
    let e = &events[0];
    assert_eq!(e["uuid"], event_uuid("chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"), "from the response id");
    assert_eq!(
        (e["distinct_id"].as_str(), e["timestamp"].as_str()),
        (Some("user_35"), Some("2026-11-22T10:00:00.000Z"))
    );
    let p = &e["properties"];
    assert_eq!(p["$ai_trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        (p["$ai_span_id"].as_str(), p["$ai_parent_id"].as_str()),
        (Some("00f067aa0ba902b8"), Some("00f067aa0ba902b7"))
    );
    assert_eq!(p["$ai_span_name"], "summarize", "a name the app chose");
    assert_eq!((p["$ai_model"].as_str(), p["$ai_provider"].as_str()), (Some("gpt-4o-2024-08-06"), Some("openai")));
    assert_eq!(p["$ai_input"], json!([{"role": "user", "content": "What time is it?"}]));
    assert_eq!(p["$ai_output_choices"], json!([{"role": "assistant", "content": "Ten."}]));
    assert_eq!((p["$ai_input_tokens"].as_i64(), p["$ai_output_tokens"].as_i64()), (Some(12), Some(3)));
    assert_eq!(p["$ai_latency"], 1.5);
    assert_eq!((p["$ai_session_id"].as_str(), p["feature"].as_str()), (Some("session_abc"), Some("assistant")));
    gencol.logs_without(KEY);
}

#[tokio::test]
async fn privacy_mode_drops_the_content_but_keeps_tokens_cost_and_model() {
    let sink = PostHogSink::start(KEY).await.unwrap();
    let mut gencol = start(&sink, "    privacy_mode: true\n");
    assert_eq!(post_json(&gencol.generations_url(), &example("raindrop-seed.json")).await.0, 202);
    let events = sink.wait_for_events(1, WAIT).await;
    assert_eq!(events.len(), 1);
    let p = &events[0]["properties"];
    assert!(p.get("$ai_input").is_none() && p.get("$ai_output_choices").is_none(), "{p:#}");
    assert_eq!((p["$ai_input_tokens"].as_i64(), p["$ai_output_tokens"].as_i64()), (Some(12), Some(30)));
    assert_eq!(
        (p["$ai_total_cost_usd"].as_f64(), p["$ai_model"].as_str()),
        (Some(0.0021), Some("anthropic/claude-sonnet-4"))
    );
    assert_eq!((p["$ai_latency"].as_f64(), p["feature"].as_str()), (Some(1.25), Some("assistant")));
    assert_eq!(events[0]["distinct_id"], "user_35");
    let body = String::from_utf8_lossy(&sink.requests()[0].body).into_owned();
    assert!(!body.contains("What time is it?") && !body.contains("clock"), "no content anywhere: {body}");
    gencol.logs_without(KEY);
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_and_delivered_once() {
    let sink = PostHogSink::start(KEY).await.unwrap();
    sink.script([Answer::status(429).retry_after(1)]);
    let mut gencol = start(&sink, "");
    assert_eq!(post_json(&gencol.generations_url(), &example("raindrop-seed.json")).await.0, 202);

    let events = sink.wait_for_events(1, WAIT).await;
    settle().await;
    let requests = sink.requests();
    assert_eq!(requests.iter().map(|r| r.status()).collect::<Vec<_>>(), [Some(429), Some(200)]);
    assert_eq!((events.len(), sink.events().len()), (1, 1), "delivered once");
    let waited = requests[1].received_at.duration_since(requests[0].received_at);
    assert!(waited >= Duration::from_secs(1), "Retry-After: 1, waited only {waited:?}");
    assert_eq!(requests[0].body, requests[1].body, "the same event, same uuid, each time");
    let logs = gencol.logs_without(KEY);
    assert!(logs.contains("will retry"), "{logs}");
}

#[tokio::test]
async fn test_connection_passes_and_a_wrong_key_fails_clearly_without_showing_it() {
    let sink = PostHogSink::start(KEY).await.unwrap();
    let run = |key: &'static str| {
        let host = sink.url();
        tokio::task::spawn_blocking(move || {
            shipped_connection_test(&posthog_yaml(), "posthog", &[("POSTHOG_API_KEY", key), ("POSTHOG_HOST", &host)])
        })
    };
    // A blocking child process; the sink keeps serving on the runtime meanwhile.
    let (ok, out) = run(KEY).await.unwrap();
    assert!(ok && out.contains("posthog: ok (200 OK)"), "{out}");
    assert_eq!(sink.requests()[0].header("x-test-connection"), Some("true"));
    let event = &sink.events()[0];
    assert_eq!(
        (event["event"].as_str(), event["properties"]["gencol.test_connection"].as_bool()),
        (Some("gencol_test_connection"), Some(true))
    );

    let wrong = "phc_WRONGwrongWRONGwrong";
    let (ok, out) = run(wrong).await.unwrap();
    assert!(!ok && out.contains("posthog: FAILED: 401 API key is not valid"), "{out}");
    assert!(!out.contains(wrong) && !out.contains(KEY), "{out}");
    assert_eq!(sink.events().len(), 1, "nothing from the wrong key was kept");
}
