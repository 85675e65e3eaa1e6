//! The `health_check` extension (SPEC §12): 503 with a reason while gencol starts (and tests
//! its destinations) or drains, 200 `{"status":"ready"}` once every receiver listens.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gencol_testkit::{Answer, OtlpSink, SinkOptions};

const WAIT: Duration = Duration::from_secs(20);

fn with_health(yaml: &str, port: u16) -> String {
    let yaml = yaml.replace(
        "service:\n  shutdown_timeout: 5s\n",
        "service:\n  shutdown_timeout: 5s\n  extensions: [health_check]\n",
    );
    format!("extensions:\n  health_check:\n    endpoint: 127.0.0.1:{port}\n{yaml}")
}

/// The health check's status and body, or `None` while nothing listens.
async fn probe(url: &str) -> Option<(u16, serde_json::Value)> {
    let resp = reqwest::Client::new().get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.ok()?;
    Some((status, serde_json::from_slice(&body).unwrap_or_default()))
}

/// Probes until `want` holds for an answer, or WAIT passes; returns the last answer.
async fn probe_until(url: &str, want: impl Fn(&(u16, serde_json::Value)) -> bool) -> Option<(u16, serde_json::Value)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = probe(url).await;
        if answer.as_ref().is_some_and(&want) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_testing_destinations_ready_when_listening_not_ready_while_draining() {
    // Every answer of the destination takes 1.5 s: the Test Connection, and the deliveries
    // a drain waits for.
    let sink = OtlpSink::start_with(SinkOptions::default().fallback(Answer::delay(Duration::from_millis(1500))))
        .await
        .unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let yaml = with_health(&pipeline_to_sink(&sink.url(), "100ms", "", ""), port);
    let starting = tokio::task::spawn_blocking(move || Gencol::start_configs(&[], &yaml, &["--test-connections"], &[]));

    let testing = probe_until(&url, |_| true).await.expect("the health check listens while the test runs");
    assert_eq!(testing.0, 503, "{testing:?}");
    assert_eq!(testing.1["status"], "not ready", "{testing:?}");
    let reason = testing.1["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("testing the connections"), "{reason}");

    let gencol = starting.await.unwrap();
    let ready = probe_until(&url, |(s, _)| *s == 200).await;
    assert_eq!(ready, Some((200, serde_json::json!({"status": "ready"}))));
    assert_eq!(post_json(&gencol.generations_url(), &generation("health-1")).await.0, 202);
    assert_eq!(reqwest::get(format!("http://127.0.0.1:{port}/nope")).await.unwrap().status().as_u16(), 404);

    // SIGTERM right after a generation was accepted: its delivery (1.5 s) is drained, and
    // draining is not ready.
    sink.wait_for_spans(1, WAIT).await;
    assert_eq!(post_json(&gencol.generations_url(), &generation("health-2")).await.0, 202);
    let pid = gencol.pid().expect("running");
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(killed.success());
    let draining = probe_until(&url, |(s, _)| *s == 503).await;
    let (status, body) =
        draining.unwrap_or_else(|| panic!("the health check answers while gencol drains\n{}", gencol.stderr()));
    assert_eq!(status, 503, "{body}");
    assert!(body["reason"].as_str().unwrap_or_default().contains("draining"), "{body}");
}
