//! End to end: `gencol test-connection` and `gencol run --test-connections` against real
//! test destinations on 127.0.0.1 (the OTLP sink and the Ramp-like endpoint): one line
//! per exporter, `ok` or `FAILED` with the destination's status and body, the exit code,
//! and nothing secret printed.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gencol_testkit::{Answer, OtlpSink, SinkOptions};

const RAMP_KEY: &str = "rk_test_TcKey1234567";
const OTLP_TOKEN: &str = "otlp-token-9f8e7d6c";
const WRONG_TOKEN: &str = "otlp-token-WRONG-0000";

/// A config with the given exporters, all in one pipeline fed by a generations receiver
/// on `port`.
fn config_on(dir: &Path, port: u16, exporters: &[(&str, String)]) -> std::path::PathBuf {
    let mut yaml =
        format!("receivers:\n  generations:\n    endpoint: 127.0.0.1:{port}\nprocessors:\n  namespace:\nexporters:\n");
    for (id, body) in exporters {
        yaml.push_str(&format!("  {id}:\n{body}"));
    }
    let ids: Vec<&str> = exporters.iter().map(|(id, _)| *id).collect();
    yaml.push_str(&format!(
        "service:\n  pipelines:\n    traces:\n      receivers: [generations]\n      processors: [namespace]\n      exporters: [{}]\n",
        ids.join(", ")
    ));
    let path = dir.join("gencol.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn config(dir: &Path, exporters: &[(&str, String)]) -> std::path::PathBuf {
    config_on(dir, free_port(), exporters)
}

fn otlp(url: &str, token: &str) -> String {
    format!("    endpoint: {url}\n    headers: {{Authorization: \"Bearer {token}\"}}\n")
}

fn ramp(url: &str) -> String {
    format!("    api_key: \"${{env:RAMP_API_KEY}}\"\n    base_url: {url}\n")
}

/// Runs gencol to its exit (killed after 30 s, which fails the test).
fn gencol(args: &[&str]) -> Output {
    let mut child = Command::new(gencol_bin())
        .args(args)
        .env("RAMP_API_KEY", RAMP_KEY)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_no_secret(out: &str) {
    for secret in [RAMP_KEY, OTLP_TOKEN, WRONG_TOKEN] {
        assert!(!out.contains(secret), "a secret was printed:\n{out}");
    }
}

async fn otlp_sink() -> OtlpSink {
    OtlpSink::start_with(SinkOptions::default().expect_header("authorization", format!("Bearer {OTLP_TOKEN}")))
        .await
        .unwrap()
}

/// Runs the blocking CLI off the async runtime, so the sinks keep answering.
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || gencol(&args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
}

fn args(list: &[&str], config: &Path) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.splice(1..1, ["--config".to_owned(), config.display().to_string()]);
    v
}

#[tokio::test]
async fn healthy_destinations_pass_with_a_marked_test_span() {
    let (sink, ramp_sink) = (otlp_sink().await, OtlpSink::start_with(SinkOptions::ramp(RAMP_KEY)).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[("otlp/a", otlp(&sink.url(), OTLP_TOKEN)), ("ramp", ramp(&ramp_sink.url()))]);
    let out = run(args(&["test-connection"], &cfg)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "otlp/a: ok (200 OK)\nramp: ok (200 OK)\n");
    assert_no_secret(&format!("{stdout}{stderr}"));

    for (name, s) in [("otlp", &sink), ("ramp", &ramp_sink)] {
        let requests = s.requests();
        assert_eq!(requests.len(), 1, "{name}: one test request");
        let r = &requests[0];
        assert_eq!(r.header("x-test-connection"), Some("true"), "{name}");
        let spans = r.spans();
        assert_eq!(spans.len(), 1, "{name}");
        assert_eq!(spans[0].attr_bool("gencol.test_connection"), Some(true), "{name}");
    }
    assert_eq!(ramp_sink.requests()[0].header("authorization"), Some(format!("Bearer {RAMP_KEY}").as_str()));
}

#[tokio::test]
async fn a_401_fails_naming_the_exporter_with_status_and_body() {
    let (sink, ramp_sink) = (otlp_sink().await, OtlpSink::start_with(SinkOptions::ramp(RAMP_KEY)).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &[
            ("otlp/a", otlp(&sink.url(), OTLP_TOKEN)),
            ("otlp/x", otlp(&sink.url(), WRONG_TOKEN)),
            ("ramp", ramp(&ramp_sink.url())),
        ],
    );
    let out = run(args(&["test-connection"], &cfg)).await;
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "otlp/a: ok (200 OK)");
    assert!(lines[1].starts_with("otlp/x: FAILED: 401 "), "{stdout}");
    // The body excerpt: the destination's own reason.
    assert!(lines[1].contains("wrong value for header authorization"), "{stdout}");
    assert!(lines[1].ends_with(&format!("(from {})", sink.url())), "{stdout}");
    assert_eq!(lines[2], "ramp: ok (200 OK)");
    assert_no_secret(&format!("{stdout}{stderr}"));
}

#[tokio::test]
async fn unreachable_and_slow_destinations_fail_with_the_reason() {
    let slow =
        OtlpSink::start_with(SinkOptions::default().fallback(Answer::delay(Duration::from_secs(5)))).await.unwrap();
    let dead_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &[
            ("otlp/dead", format!("    endpoint: http://127.0.0.1:{dead_port}/v1/traces?key=QuerySecret\n")),
            ("otlp/slow", format!("    endpoint: {}\n    timeout: 300ms\n", slow.url())),
        ],
    );
    let started = Instant::now();
    let out = run(args(&["test-connection"], &cfg)).await;
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4), "the exporter's timeout bounds the test");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}{stderr}");
    assert!(
        lines[0].starts_with(&format!("otlp/dead: FAILED: cannot reach http://127.0.0.1:{dead_port}/v1/traces?***: ")),
        "{stdout}"
    );
    assert!(!stdout.contains("QuerySecret"), "{stdout}");
    assert_eq!(lines[1], "otlp/slow: FAILED: no answer within 300ms (the exporter's timeout)");
}

#[tokio::test]
async fn naming_exporters_tests_only_those() {
    let (sink, ramp_sink) = (otlp_sink().await, OtlpSink::start_with(SinkOptions::ramp(RAMP_KEY)).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[("otlp/x", otlp(&sink.url(), WRONG_TOKEN)), ("ramp", ramp(&ramp_sink.url()))]);
    let out = run(args(&["test-connection", "ramp"], &cfg)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "the failing otlp/x was not tested: {stdout}{stderr}");
    assert_eq!(stdout, "ramp: ok (200 OK)\n");
    assert!(sink.requests().is_empty(), "otlp/x got a request");
    assert_eq!(ramp_sink.requests().len(), 1);

    let out = run(args(&["test-connection", "otlp/nope"], &cfg)).await;
    let (stdout, _) = text(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(stdout.starts_with("otlp/nope: FAILED: no exporter `otlp/nope` in the configuration"), "{stdout}");
}

#[tokio::test]
async fn run_with_test_connections_refuses_to_start_when_one_fails() {
    let (sink, ramp_sink) = (otlp_sink().await, OtlpSink::start_with(SinkOptions::ramp(RAMP_KEY)).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg =
        config_on(dir.path(), port, &[("otlp/x", otlp(&sink.url(), WRONG_TOKEN)), ("ramp", ramp(&ramp_sink.url()))]);

    let out = run(args(&["run", "--test-connections"], &cfg)).await;
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("otlp/x: FAILED: 401 ")), "{stdout}");
    assert!(stdout.lines().any(|l| l == "ramp: ok (200 OK)"), "{stdout}");
    assert!(stderr.contains("not starting"), "{stderr}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "the receiver never listened");
    assert_no_secret(&format!("{stdout}{stderr}"));
}

// Multi-threaded: starting gencol blocks this thread while it tests the sinks, which
// must keep answering on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_test_connections_starts_when_all_pass() {
    let (sink, ramp_sink) = (otlp_sink().await, OtlpSink::start_with(SinkOptions::ramp(RAMP_KEY)).await.unwrap());
    let exporters =
        format!("exporters:\n  otlp/a:\n{}  ramp:\n{}", otlp(&sink.url(), OTLP_TOKEN), ramp(&ramp_sink.url()));
    let yaml = format!(
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{{GEN_PORT}}\nprocessors:\n  namespace:\n{exporters}service:\n  shutdown_timeout: 5s\n  pipelines:\n    traces:\n      receivers: [generations]\n      processors: [namespace]\n      exporters: [otlp/a, ramp]\n"
    );
    let mut gencol = Gencol::start_configs(&[], &yaml, &["--test-connections"], &[("RAMP_API_KEY", RAMP_KEY)]);
    let (status, _) = post_json(&gencol.generations_url(), &generation("gen-after-test")).await;
    assert_eq!(status, 202);
    // The test span first, then the real one.
    let spans = ramp_sink.wait_for_spans(2, Duration::from_secs(15)).await;
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].attr_bool("gencol.test_connection"), Some(true));
    assert_eq!(spans[1].attr_str("gen_ai.response.id"), Some("gen-after-test"));
    assert_eq!(sink.wait_for_spans(2, Duration::from_secs(15)).await.len(), 2);
    assert!(gencol.stop());
    let stdout = gencol.stdout();
    assert!(stdout.starts_with("otlp/a: ok (200 OK)\nramp: ok (200 OK)\n"), "{stdout}");
    assert_no_secret(&format!("{stdout}{}", gencol.stderr()));
}
