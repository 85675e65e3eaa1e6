//! Hot reload (SPEC §12) against the real binary: SIGHUP and `--watch` swap a new config
//! in under steady traffic without losing an accepted generation or closing the
//! listening socket; a broken config, or one whose Test Connection fails, keeps the old
//! one running, says why at `FILE:LINE:COLUMN`, and is counted.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use gencol_testkit::SinkOptions;

const WAIT: Duration = Duration::from_secs(30);
/// The steady load the reloads happen under (SPEC test: 500 generations/s).
const RATE: u64 = 500;
const SENDERS: u64 = 4;

/// SPEC §3: the generation span's id.
fn gen_span_id(id: &str) -> String {
    sha_hex(&format!("gencol:gen:{id}"), 8)
}

struct Settings<'a> {
    sink: &'a str,
    team: &'a str,
    window: &'a str,
    queue: &'a str,
    /// Another exporter (its YAML under `exporters:`, and its id).
    second: Option<(&'a str, &'a str)>,
    metrics_port: u16,
    health_port: Option<u16>,
}

impl<'a> Settings<'a> {
    /// A memory queue, a 100 ms window, no health check, one exporter.
    fn plain(sink: &'a str, team: &'a str, metrics_port: u16) -> Self {
        Settings { sink, team, window: "100ms", queue: "", second: None, metrics_port, health_port: None }
    }
}

fn config(s: &Settings<'_>) -> String {
    let (second_yaml, second_id) = match s.second {
        Some((yaml, id)) => (yaml.to_owned(), format!(", {id}")),
        None => (String::new(), String::new()),
    };
    let (health, health_ext) = match s.health_port {
        Some(p) => {
            (format!("extensions:\n  health_check:\n    endpoint: 127.0.0.1:{p}\n"), "  extensions: [health_check]\n")
        }
        None => (String::new(), ""),
    };
    format!(
        r#"{health}receivers:
  generations:
    endpoint: 127.0.0.1:{{GEN_PORT}}
processors:
  hierarchy:
    group_window: {window}
  namespace: {{}}
exporters:
  otlp/sink:
    endpoint: {sink}
    headers:
      x-team: {team}
    retry:
      initial_interval: 100ms
{queue}
{second_yaml}
service:
{health_ext}  shutdown_timeout: 10s
  data_dir: {{DIR}}/data
  telemetry:
    metrics:
      prometheus:
        endpoint: 127.0.0.1:{metrics_port}
  pipelines:
    traces:
      receivers: [generations]
      processors: [hierarchy, namespace]
      exporters: [otlp/sink{second_id}]
"#,
        window = s.window,
        sink = s.sink,
        team = s.team,
        queue = s.queue,
        metrics_port = s.metrics_port,
    )
}

/// Writes `yaml` over the running gencol's config file, with its ports and directory.
fn rewrite(gencol: &Gencol, yaml: &str) {
    let yaml = yaml
        .replace("{GEN_PORT}", &gencol.generations_port.to_string())
        .replace("{OTLP_PORT}", &gencol.otlp_port.to_string())
        .replace("{DIR}", &gencol.dir.path().display().to_string());
    // Written whole and renamed over the file, as editors and config tools do.
    let tmp = gencol.dir.path().join("gencol.yaml.new");
    std::fs::write(&tmp, yaml).expect("write config");
    std::fs::rename(&tmp, gencol.config_path()).expect("replace config");
}

fn hangup(gencol: &Gencol) {
    let pid = gencol.pid().expect("running");
    let sent = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill");
    assert!(sent.success());
}

/// Waits until gencol's log holds `needle` `times` times; panics with the log if not.
async fn wait_log(gencol: &Gencol, needle: &str, times: usize) {
    let deadline = Instant::now() + WAIT;
    while gencol.stderr().matches(needle).count() < times {
        assert!(Instant::now() < deadline, "no `{needle}` (x{times}) in the log:\n{}", gencol.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `gencol_config_reloads_total{result}` as scraped now.
async fn reloads(metrics_port: u16, result: &str) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("gencol_config_reloads_total{{result=\"{result}\"");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .next()
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[derive(Default)]
struct SendStats {
    /// Connections refused or reset: a listener that went away.
    connection_errors: AtomicU64,
    /// 503s, sent again as a gateway would.
    refusals: AtomicU64,
}

/// SENDERS tasks posting RATE generations a second in all until `until`; each id is
/// sent until it is accepted (2xx). Returns the accepted generations' span ids.
fn steady_load(
    url: String,
    prefix: &'static str,
    until: Instant,
    stats: Arc<SendStats>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..SENDERS)
        .map(|s| {
            let (url, stats) = (url.clone(), stats.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut pace = tokio::time::interval(Duration::from_secs_f64(SENDERS as f64 / RATE as f64));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut ids = Vec::new();
                let mut n = s;
                while Instant::now() < until {
                    pace.tick().await;
                    let id = format!("{prefix}-{n:06}");
                    let body = serde_json::to_vec(&generation(&id)).expect("json");
                    loop {
                        match client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                        {
                            Ok(r) if r.status().is_success() => break,
                            Ok(r) if r.status().as_u16() == 503 => {
                                stats.refusals.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Ok(r) => panic!("{id}: unexpected answer {}", r.status()),
                            Err(e) => {
                                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                                eprintln!("{id}: {e}");
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    ids.push(gen_span_id(&id));
                    n += SENDERS;
                }
                ids
            })
        })
        .collect()
}

async fn accepted(senders: Vec<tokio::task::JoinHandle<Vec<String>>>) -> Vec<String> {
    let mut want = Vec::new();
    for s in senders {
        want.extend(s.await.expect("sender"));
    }
    want
}

/// The `x-team` header of every request the sink got, with when it arrived.
fn teams(sink: &PortSink) -> Vec<(Instant, String)> {
    sink.sink().requests().iter().map(|r| (r.received_at, r.header("x-team").unwrap_or("-").to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_header_under_steady_load_loses_nothing_and_keeps_the_socket() {
    let mut sink = PortSink::start(SinkOptions::default()).await;
    let metrics_port = free_port();
    let url = sink.url();
    let settings = |team| Settings::plain(&url, team, metrics_port);
    let gencol = Gencol::start(&config(&settings("old")));
    let stats = Arc::new(SendStats::default());
    let until = Instant::now() + Duration::from_secs(5);
    let senders = steady_load(gencol.generations_url(), "hdr", until, stats.clone());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    rewrite(&gencol, &config(&settings("new")));
    hangup(&gencol);
    wait_log(&gencol, "configuration reloaded", 1).await;
    let reloaded_at = Instant::now();
    let want = accepted(senders).await;

    sink.assert_all_arrive(&want, Duration::from_secs(60), "generations accepted around a reload", &gencol).await;
    assert_eq!(
        stats.connection_errors.load(Ordering::Relaxed),
        0,
        "the listening socket stayed open\n{}",
        gencol.stderr()
    );
    let teams = teams(&sink);
    assert!(teams.iter().any(|(_, t)| t == "old"), "requests before the reload carry the old header");
    // Sends in flight at the swap finish with the settings they started with.
    let late: Vec<&(Instant, String)> =
        teams.iter().filter(|(at, _)| *at > reloaded_at + Duration::from_millis(500)).collect();
    assert!(!late.is_empty(), "requests after the reload");
    assert!(late.iter().all(|(_, t)| t == "new"), "after the reload every request has the new header: {late:?}");
    assert_eq!(reloads(metrics_port, "success").await, 1);
    assert_eq!(reloads(metrics_port, "failure").await, 0);
    eprintln!(
        "{} generations accepted over a reload at {RATE}/s, {} answered 503 first",
        want.len(),
        stats.refusals.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_keeps_the_old_one_running_and_names_every_error_at_its_place() {
    let mut sink = PortSink::start(SinkOptions::default()).await;
    let metrics_port = free_port();
    let url = sink.url();
    let settings = |team| Settings::plain(&url, team, metrics_port);
    let gencol = Gencol::start(&config(&settings("old")));
    let first = format!("broken-{}", 1);
    assert_eq!(post_json(&gencol.generations_url(), &generation(&first)).await.0, 202);

    // Two mistakes: an unknown exporter type and a duration that is none.
    let broken = config(&settings("new"))
        .replace("      initial_interval: 100ms\n", "      initial_interval: soon\n")
        .replace("  namespace: {}\n", "  namespace: {}\n  batchy: {}\n");
    rewrite(&gencol, &broken);
    hangup(&gencol);
    wait_log(&gencol, "reload refused", 1).await;
    let log = gencol.stderr();
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no error about `{needle}` in the log:\n{log}"))
            .to_owned()
    };
    let duration_error = at("soon");
    let type_error = at("batchy");
    for line in [&duration_error, &type_error] {
        let located = line.split("gencol.yaml:").nth(1).and_then(|rest| {
            let mut parts = rest.split(':');
            Some((parts.next()?.parse::<u32>().ok()?, parts.next()?.parse::<u32>().ok()?))
        });
        assert!(located.is_some(), "the error is at FILE:LINE:COLUMN: {line}");
    }
    assert_eq!(reloads(metrics_port, "failure").await, 1);
    assert_eq!(reloads(metrics_port, "success").await, 0);

    // The old config still runs: accepted, delivered, with the old header.
    let second = "broken-2".to_owned();
    assert_eq!(post_json(&gencol.generations_url(), &generation(&second)).await.0, 202);
    let want = [gen_span_id(&first), gen_span_id(&second)];
    sink.assert_all_arrive(&want, WAIT, "generations sent around a refused reload", &gencol).await;
    assert!(teams(&sink).iter().all(|(_, t)| t == "old"));

    // Fixed: the next SIGHUP takes it.
    rewrite(&gencol, &config(&settings("new")));
    hangup(&gencol);
    wait_log(&gencol, "configuration reloaded", 1).await;
    let third = "broken-3".to_owned();
    assert_eq!(post_json(&gencol.generations_url(), &generation(&third)).await.0, 202);
    sink.assert_all_arrive(&[gen_span_id(&third)], WAIT, "a generation after the fixed reload", &gencol).await;
    assert_eq!(teams(&sink).last().map(|(_, t)| t.as_str()), Some("new"));
    assert_eq!(reloads(metrics_port, "success").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_test_connection_fails_is_refused_and_health_names_the_exporter() {
    let mut sink = PortSink::start(SinkOptions::default()).await;
    let (metrics_port, health_port) = (free_port(), free_port());
    let url = sink.url();
    let dead = format!("http://127.0.0.1:{}/v1/traces", free_port());
    let settings = |sink| Settings { health_port: Some(health_port), ..Settings::plain(sink, "t", metrics_port) };
    let gencol = Gencol::start_configs(&[], &config(&settings(&url)), &["--test-connections"], &[]);
    let health = format!("http://127.0.0.1:{health_port}/");
    let probe = || async {
        let r = reqwest::get(&health).await.expect("health answers");
        let status = r.status().as_u16();
        (status, serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap_or_default()).unwrap_or_default())
    };
    assert_eq!(probe().await.0, 200);

    rewrite(&gencol, &config(&settings(&dead)));
    hangup(&gencol);
    wait_log(&gencol, "reload refused", 1).await;
    let (status, body) = probe().await;
    assert_eq!(status, 503, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("otlp/sink") && reason.contains("Test Connection"), "{reason}");
    assert!(gencol.stderr().contains("Test Connection FAILED: exporter `otlp/sink`"), "{}", gencol.stderr());
    assert_eq!(reloads(metrics_port, "failure").await, 1);

    // The old destination still gets everything.
    assert_eq!(post_json(&gencol.generations_url(), &generation("tc-1")).await.0, 202);
    sink.assert_all_arrive(&[gen_span_id("tc-1")], WAIT, "a generation after a refused reload", &gencol).await;

    // A reload that passes makes gencol ready again.
    rewrite(&gencol, &config(&settings(&url)).replace("x-team: t", "x-team: u"));
    hangup(&gencol);
    wait_log(&gencol, "configuration reloaded", 1).await;
    assert_eq!(probe().await, (200, serde_json::json!({"status": "ready"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_when_the_file_changes() {
    let mut sink = PortSink::start(SinkOptions::default()).await;
    let metrics_port = free_port();
    let url = sink.url();
    let settings = |team| Settings::plain(&url, team, metrics_port);
    let gencol = Gencol::start_configs(&[], &config(&settings("old")), &["--watch"], &[]);
    assert_eq!(post_json(&gencol.generations_url(), &generation("watch-1")).await.0, 202);
    sink.assert_all_arrive(&[gen_span_id("watch-1")], WAIT, "before the change", &gencol).await;

    rewrite(&gencol, &config(&settings("new")));
    wait_log(&gencol, "reloading the configuration (a config file changed)", 1).await;
    wait_log(&gencol, "configuration reloaded", 1).await;
    assert_eq!(post_json(&gencol.generations_url(), &generation("watch-2")).await.0, 202);
    sink.assert_all_arrive(&[gen_span_id("watch-2")], WAIT, "after the change", &gencol).await;
    assert_eq!(teams(&sink).last().map(|(_, t)| t.as_str()), Some("new"));
    // Nothing changed since: no second reload.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(gencol.stderr().matches("reloading the configuration").count(), 1, "{}", gencol.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_rebuilds_a_disk_queued_pipeline_and_adds_an_exporter_loses_nothing() {
    let mut sink = PortSink::start(SinkOptions::default()).await;
    let mut second = PortSink::start(SinkOptions::default()).await;
    let metrics_port = free_port();
    let (url, second_url) = (sink.url(), second.url());
    let second_yaml =
        format!("  otlp/second:\n    endpoint: {second_url}\n    retry:\n      initial_interval: 100ms\n");
    let disk = "    queue:\n      kind: disk\n";
    let before = Settings { queue: disk, ..Settings::plain(&url, "t", metrics_port) };
    let gencol = Gencol::start(&config(&before));
    let stats = Arc::new(SendStats::default());
    let until = Instant::now() + Duration::from_secs(5);
    let senders = steady_load(gencol.generations_url(), "rebuild", until, stats.clone());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Another window (the pipeline's `hierarchy` state on disk passes to the new one) and
    // another exporter (the pipeline is built anew; the disk queue stays).
    let after = Settings { window: "250ms", second: Some((&second_yaml, "otlp/second")), ..before };
    rewrite(&gencol, &config(&after));
    hangup(&gencol);
    wait_log(&gencol, "configuration reloaded", 1).await;
    // Generations accepted after the swap also go to the new exporter: these are sent
    // once the swap is logged, and again until the load ends.
    let late_stats = Arc::new(SendStats::default());
    let late_until = Instant::now().max(until) + Duration::from_millis(500);
    let late_senders = steady_load(gencol.generations_url(), "rebuild-late", late_until, late_stats.clone());
    let mut want = accepted(senders).await;
    let late = accepted(late_senders).await;
    assert!(!late.is_empty());
    want.extend(late.iter().cloned());

    sink.assert_all_arrive(&want, Duration::from_secs(60), "generations accepted around the rebuild", &gencol).await;
    second
        .assert_all_arrive(&late, Duration::from_secs(60), "generations sent after the exporter was added", &gencol)
        .await;
    assert_eq!(stats.connection_errors.load(Ordering::Relaxed), 0, "{}", gencol.stderr());
    assert!(!gencol.stderr().contains("lost"), "{}", gencol.stderr());
}
