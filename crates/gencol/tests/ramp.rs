//! End to end: the shipped `pipelines/ramp.yaml`, run by the real gencol binary, delivers
//! the Ramp page's example to a Ramp-like endpoint (Ramp's path, bearer key required) as
//! the spans Ramp reads, and never writes the key into a log line.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use gencol_testkit::{Answer, OtlpSink, RAMP_PATH, ReceivedSpan, SinkOptions};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);
const KEY: &str = "rk_live_Zq8xW3vN5mK2pT7y";
const CONTENT_KEYS: [&str; 4] =
    ["gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.prompt", "gen_ai.completion"];

fn ramp_yaml() -> PathBuf {
    repo_root().join("pipelines/ramp.yaml")
}

/// Merged over `pipelines/ramp.yaml`: a free port, a short group window and fast retries,
/// so the test runs the shipped pipeline, not a copy of it.
fn overrides(exporter_extra: &str) -> String {
    format!(
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{{GEN_PORT}}\nprocessors:\n  hierarchy:\n    group_window: 300ms\nexporters:\n  ramp:\n    retry:\n      initial_interval: 100ms\n{exporter_extra}service:\n  shutdown_timeout: 5s\n"
    )
}

fn start(ramp_url: &str, key: &str, exporter_extra: &str) -> Gencol {
    Gencol::start_configs(
        &[&ramp_yaml()],
        &overrides(exporter_extra),
        // Debug logs include the HTTP client's own lines: the key must not be in those either.
        &["--log-level", "debug"],
        &[("RAMP_API_KEY", key), ("RAMP_BASE_URL", ramp_url)],
    )
}

fn span<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans.iter().find(|s| s.span.name == name).unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

fn logs(gencol: &mut Gencol) -> String {
    assert!(gencol.stop(), "gencol exits 0 on SIGTERM:\n{}", gencol.stderr());
    format!("{}\n{}", gencol.stdout(), gencol.stderr())
}

#[tokio::test]
async fn ramp_receives_the_seed_example_with_bearer_auth() {
    let ramp = OtlpSink::start_with(SinkOptions::ramp(KEY)).await.unwrap();
    let mut gencol = start(&ramp.url(), KEY, "");
    let (status, body) = post_json(&gencol.generations_url(), &example("ramp-seed.json")).await;
    assert_eq!((status, body), (202, json!({"accepted": 1, "rejected": []})));

    let spans = ramp.wait_for_spans(2, WAIT).await;
    assert_eq!(spans.len(), 2, "root + generation: {spans:#?}");
    let root = span(&spans, "Expense Processing Pipeline");
    let generation = span(&spans, "Analyze Report");
    assert_eq!(generation.trace_id_hex(), "a5475f808fa6162b8e6ef2f8c7720f77");
    assert_eq!(generation.parent_span_id_hex(), Some(root.span_id_hex()));

    // What Ramp reads (seed: token usage, cost, model, user, session, custom metadata).
    assert_eq!(generation.attr_str("gen_ai.request.model"), Some("openai/gpt-4o"));
    assert_eq!(generation.attr_str("gen_ai.response.model"), Some("openai/gpt-4o-2024-08-06"));
    assert_eq!(generation.attr_str("gen_ai.provider.name"), Some("OpenAI"));
    assert_eq!(generation.attr_i64("gen_ai.usage.input_tokens"), Some(236));
    assert_eq!(generation.attr_i64("gen_ai.usage.output_tokens"), Some(214));
    assert_eq!(generation.attr_i64("gen_ai.usage.total_tokens"), Some(450));
    assert_eq!(generation.attr_i64("gen_ai.usage.input_tokens.cached"), Some(0));
    assert_eq!(generation.attr_i64("gen_ai.usage.output_tokens.reasoning"), Some(0));
    assert_eq!(generation.attr_f64("gen_ai.usage.total_cost"), Some(0.00273));
    assert_eq!(generation.attr_str("user.id"), Some("user_12345"));
    assert_eq!(generation.attr_str("session.id"), Some("session_abc"));
    assert_eq!(generation.attr_str("trace.metadata.department"), Some("finance"));
    assert_eq!(generation.attr_str("trace.metadata.cost_center"), Some("CC-1234"));
    assert_eq!(generation.span.start_time_unix_nano, 1_795_341_600_000_000_000);
    assert_eq!(generation.span.end_time_unix_nano, 1_795_341_603_118_000_000);
    // Without privacy_mode the content goes too (seed: "unless Privacy Mode is enabled").
    for key in CONTENT_KEYS {
        assert!(generation.attr_str(key).is_some(), "{key} is sent");
    }

    let requests = ramp.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.path, RAMP_PATH);
        assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(r.content_type.as_deref(), Some("application/json"), "OTLP/HTTP JSON");
        assert_eq!(r.content_encoding, None, "uncompressed");
        assert_eq!(r.status(), Some(200));
    }
    let logs = logs(&mut gencol);
    assert!(!logs.contains(KEY), "the API key is in the logs:\n{logs}");
}

#[tokio::test]
async fn privacy_mode_on_ramp_sends_usage_but_no_content() {
    let ramp = OtlpSink::start_with(SinkOptions::ramp(KEY)).await.unwrap();
    let mut gencol = start(&ramp.url(), KEY, "    privacy_mode: true\n");
    let (status, _) = post_json(&gencol.generations_url(), &example("ramp-seed.json")).await;
    assert_eq!(status, 202);
    let spans = ramp.wait_for_spans(2, WAIT).await;
    let generation = span(&spans, "Analyze Report");
    for key in CONTENT_KEYS {
        assert_eq!(generation.attr(key), None, "{key} must not reach Ramp in privacy mode");
    }
    let text = format!("{spans:?}");
    assert!(!text.contains("expense auditor") && !text.contains("ER-2026-1147"), "content leaked: {text}");
    assert_eq!(generation.attr_i64("gen_ai.usage.input_tokens"), Some(236));
    assert_eq!(generation.attr_f64("gen_ai.usage.total_cost"), Some(0.00273));
    assert_eq!(generation.attr_str("gen_ai.request.model"), Some("openai/gpt-4o"));
    assert_eq!(generation.attr_str("user.id"), Some("user_12345"));
    assert_eq!(generation.attr_str("trace.metadata.cost_center"), Some("CC-1234"));
    logs(&mut gencol);
}

#[tokio::test]
async fn failures_are_logged_with_the_answer_but_never_a_secret() {
    let ramp = OtlpSink::start_with(SinkOptions::ramp(KEY)).await.unwrap();
    // A destination that echoes the key in its error body, and a base_url whose query
    // holds another secret: neither may reach a log line, the status and answer must.
    ramp.script([Answer::status(503).body(format!("overloaded, try later (key {KEY})"))]);
    let url = format!("{}?token=QuerySecret42", ramp.url());
    let mut gencol = start(&url, KEY, "");
    let (status, _) = post_json(&gencol.generations_url(), &generation("gen-ramp-retry")).await;
    assert_eq!(status, 202);
    let spans = ramp.wait_for_spans(1, WAIT).await;
    assert_eq!(spans.len(), 1, "delivered after the retry");
    let statuses: Vec<Option<u16>> = ramp.requests().iter().map(|r| r.status()).collect();
    assert_eq!(statuses, vec![Some(503), Some(200)]);

    let logs = logs(&mut gencol);
    let retry_line = logs.lines().find(|l| l.contains("will retry")).unwrap_or_else(|| panic!("{logs}"));
    assert!(retry_line.contains("503 overloaded, try later (key ***)"), "{retry_line}");
    assert!(retry_line.contains(&format!("{RAMP_PATH}?***")), "{retry_line}");
    assert!(!logs.contains(KEY), "the API key is in the logs:\n{logs}");
    assert!(!logs.contains("QuerySecret42"), "the URL query is in the logs:\n{logs}");
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_ramp_and_stays_out_of_the_logs() {
    let ramp = OtlpSink::start_with(SinkOptions::ramp(KEY)).await.unwrap();
    let wrong = "rk_live_WrongKey0000000";
    let mut gencol = start(&ramp.url(), wrong, "");
    let (status, _) = post_json(&gencol.generations_url(), &generation("gen-ramp-401")).await;
    assert_eq!(status, 202);
    let requests = ramp.wait_for_requests(1, WAIT).await;
    assert_eq!(requests[0].status(), Some(401));
    // Give the exporter a moment to log the rejection before stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = logs(&mut gencol);
    let line = logs.lines().find(|l| l.contains("not retrying")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("ramp") && line.contains("401 "), "{line}");
    assert!(!logs.contains(wrong) && !logs.contains(KEY), "a key is in the logs:\n{logs}");
}
