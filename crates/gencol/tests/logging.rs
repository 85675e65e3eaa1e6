//! `service.telemetry.logs`: the level and the format (text or JSON) of gencol's own log,
//! and what wins over them (`--log-level`, `RUST_LOG`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use gencol_testkit::{Answer, OtlpSink, SinkOptions};

const WAIT: Duration = Duration::from_secs(20);

fn with_logs(sink_url: &str, logs: &str) -> String {
    pipeline_to_sink(sink_url, "100ms", "", "").replace(
        "service:\n  shutdown_timeout: 5s\n",
        &format!("service:\n  shutdown_timeout: 5s\n  telemetry:\n    logs: {logs}\n"),
    )
}

async fn wait_for(gencol: &Gencol, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    while !gencol.stderr().contains(what) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gencol.stderr()
}

#[tokio::test]
async fn the_configs_level_and_json_format_are_used() {
    // A destination that refuses every request for good: gencol logs an error.
    let sink =
        OtlpSink::start_with(SinkOptions::default().fallback(Answer::status(401).body("no such key"))).await.unwrap();
    let yaml = with_logs(&sink.url(), "{level: warn, format: json}");
    assert!(yaml.contains("format: json"), "{yaml}");
    let gencol = Gencol::start(&yaml);
    assert_eq!(post_json(&gencol.generations_url(), &generation("log-1")).await.0, 202);
    let stderr = wait_for(&gencol, "no such key").await;
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}\n{stderr}"));
        let level = entry["level"].as_str().unwrap_or_default();
        assert!(level == "WARN" || level == "ERROR", "level warn keeps out {level}: {line}");
    }
    let refused = lines.iter().find(|l| l.contains("no such key")).expect("the refusal is logged");
    let entry: serde_json::Value = serde_json::from_str(refused).unwrap();
    assert_eq!(entry["level"], "ERROR", "{refused}");
    assert_eq!(entry["fields"]["exporter"], "otlp/sink", "fields stay structured: {refused}");
    assert!(!stderr.contains("listening"), "info lines are below the level: {stderr}");
}

#[tokio::test]
async fn log_level_on_the_command_line_wins_over_the_configs() {
    let sink = OtlpSink::start().await.unwrap();
    let yaml = with_logs(&sink.url(), "{level: error}");
    let gencol = Gencol::start_configs(&[], &yaml, &["--log-level", "info"], &[]);
    let stderr = wait_for(&gencol, "listening").await;
    assert!(stderr.contains("INFO") && stderr.contains("listening"), "--log-level info wins: {stderr}");
    assert!(!stderr.trim_start().starts_with('{'), "text is the default format: {stderr}");

    // And the config's level applies when nothing overrides it.
    let quiet = Gencol::start(&yaml);
    assert_eq!(post_json(&quiet.generations_url(), &generation("log-2")).await.0, 202);
    sink.wait_for_spans(1, WAIT).await;
    assert!(!quiet.stderr().contains("listening"), "level error: {}", quiet.stderr());
}
