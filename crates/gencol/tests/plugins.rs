//! Exporter plugins end to end: the example plugins (`webhook`, `jsonl`) and three
//! misbehaving test plugins (panic, hang, wrong ABI version) are built, loaded from
//! YAML by the real binary, and must deliver, fail clearly, or be contained while the
//! other exporters keep delivering.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use gencol_testkit::{Answer, OtlpSink, SinkOptions};

const WAIT: Duration = Duration::from_secs(20);

/// The plugin crates of the workspace, as `cargo build -p` names them.
const PLUGIN_PACKAGES: [&str; 5] = [
    "gencol-webhook",
    "gencol-jsonl",
    "gencol-test-plugin-panic",
    "gencol-test-plugin-hang",
    "gencol-test-plugin-wrong-abi",
];

/// Builds the plugin libraries (once per test run, with the profile and target
/// directory of the gencol binary under test) and returns the directory holding them.
fn plugin_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = Path::new(gencol_bin()).parent().expect("the binary's directory").to_path_buf();
        let target_dir = profile_dir.parent().expect("the target directory");
        let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let profile = if profile == "debug" { "dev" } else { profile };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root()).args(["build", "--quiet", "--profile", profile, "--target-dir"]).arg(target_dir);
        for p in PLUGIN_PACKAGES {
            cmd.args(["-p", p]);
        }
        let out = cmd.output().expect("run cargo to build the plugins");
        assert!(out.status.success(), "building the plugins failed:\n{}", String::from_utf8_lossy(&out.stderr));
        profile_dir
    })
}

/// The built library of a plugin crate (`gencol_webhook` → `libgencol_webhook.so`).
fn plugin(lib_name: &str) -> PathBuf {
    let file = format!("{}{lib_name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let path = plugin_dir().join(file);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_owned()
}

/// Runs `gencol ARGS...` to completion off the async runtime (an in-process sink may
/// have to answer it).
async fn gencol(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(gencol_bin()).args(&args).env_remove("RUST_LOG").output().expect("run gencol")
    })
    .await
    .expect("gencol finished")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// gencol's log without the terminal colours around field names.
fn log(g: &Gencol) -> String {
    let raw = g.stderr();
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(start) = rest.find("\x1b[") {
        out.push_str(&rest[..start]);
        rest = rest[start..].find('m').map_or("", |end| &rest[start + end + 1..]);
    }
    out.push_str(rest);
    out
}

/// Waits until the log of a running gencol contains `needle`.
async fn wait_for_log(g: &Gencol, needle: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if log(g).contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A pipeline from `generations` through `namespace` to `exporters`, with their settings.
fn pipeline(plugins: &[PathBuf], exporters: &str, names: &[&str]) -> String {
    let plugins: Vec<String> = plugins.iter().map(|p| format!("  - {}", path_str(p))).collect();
    format!(
        "plugins:\n{}\nreceivers:\n  generations:\n    endpoint: 127.0.0.1:{{GEN_PORT}}\nprocessors:\n  namespace: {{}}\nexporters:\n{exporters}\nservice:\n  shutdown_timeout: 2s\n  pipelines:\n    traces:\n      receivers: [generations]\n      processors: [namespace]\n      exporters: [{}]\n",
        plugins.join("\n"),
        names.join(", ")
    )
}

// Multi-threaded: the sink answers while `test-connection` runs as a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_plugin_delivers_otlp_json_with_headers_and_privacy_mode() {
    let sink = OtlpSink::start_with(SinkOptions::default().path("/hooks/llm").expect_header("x-api-key", "k-123"))
        .await
        .unwrap();
    let exporters = format!(
        "  webhook:\n    url: {}\n    method: POST\n    headers:\n      X-Api-Key: ${{env:HOOK_KEY}}\n    privacy_mode: true\n    retry: {{initial_interval: 100ms}}",
        sink.url()
    );
    let yaml = pipeline(&[plugin("gencol_webhook")], &exporters, &["webhook"]);
    let gencol = Gencol::start_with_env(&yaml, &[("HOOK_KEY", "k-123")]);
    assert_eq!(post_json(&gencol.generations_url(), &generation("wh-1")).await.0, 202);
    let spans = sink.wait_for_spans(1, WAIT).await;
    assert_eq!(spans.len(), 1, "{}", gencol.stderr());
    let span = &spans[0];
    assert_eq!(span.attr_str("gen_ai.response.id"), Some("wh-1"));
    assert_eq!(span.attr_str("gen_ai.request.model"), Some("openai/gpt-4o"));
    assert!(span.attr("gen_ai.prompt").is_none(), "privacy_mode strips content for a plugin exporter too");
    let request = &sink.requests()[0];
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(request.header("x-test-connection"), None);

    // Test Connection: an empty OTLP payload marked as a test, through the same plugin.
    let config = path_str(&gencol.dir.path().join("gencol.yaml"));
    let mut cmd = vec!["test-connection".to_owned(), "--config".to_owned(), config];
    cmd.push("webhook".to_owned());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(gencol_bin()).args(&cmd).env("HOOK_KEY", "k-123").output().expect("run gencol")
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("webhook: ok"), "{stdout}");
    let test = sink.requests().into_iter().find(|r| r.header("x-test-connection") == Some("true"));
    let test = test.expect("a request marked X-Test-Connection: true");
    assert_eq!(test.span_count(), 0);
    assert_eq!(test.body.as_deref(), Some(&br#"{"resourceSpans":[]}"#[..]));
}

// Multi-threaded: the sinks answer while `test-connection` runs as a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_errors_mask_echoed_secrets_and_redirects_are_not_followed() {
    const KEY: &str = "wk-Key/7Yt+Secret";
    // The key echoed over and over (once JSON-escaped), so that one echo lies across
    // gencol's 2 KiB cut of a plugin message, whatever the text before it.
    let echo: String = (0..300).map(|i| format!("{i}:{KEY} ")).collect::<String>() + &KEY.replace('/', "\\/");
    let path = "/hooks/llm";
    let echoing = OtlpSink::start_with(
        SinkOptions::default().path(path).expect_header("x-api-key", KEY).fallback(Answer::status(401).body(echo)),
    )
    .await
    .unwrap();
    let target = OtlpSink::start_with(SinkOptions::default().path(path)).await.unwrap();
    let location = format!("{}?token={KEY}", target.url());
    let redirecting = OtlpSink::start_with(
        SinkOptions::default().path(path).fallback(Answer::status(307).header("location", &location)),
    )
    .await
    .unwrap();
    let exporters = format!(
        "  webhook/echo:\n    url: {}\n    headers: {{X-Api-Key: \"{KEY}\"}}\n  webhook/redirect:\n    url: {}\n    headers: {{X-Api-Key: \"{KEY}\"}}",
        echoing.url(),
        redirecting.url()
    );
    let yaml = pipeline(&[plugin("gencol_webhook")], &exporters, &["webhook/echo", "webhook/redirect"])
        .replace("{GEN_PORT}", &free_port().to_string());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gencol.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = gencol(vec!["test-connection".into(), "--config".into(), path_str(&config)]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");

    let echoed = stdout.lines().find(|l| l.starts_with("webhook/echo: FAILED: ")).expect("a line for webhook/echo");
    assert!(echoed.contains("rejected the batch: HTTP 401: 0:*** 1:*** 2:***"), "{echoed}");
    assert!(echoed.ends_with('…') && echoed.len() < 2300, "cut to 2 KiB after masking: {} bytes", echoed.len());
    assert_eq!(echoing.requests().len(), 1);
    assert_eq!(echoing.requests()[0].header("x-api-key"), Some(KEY), "the destination got the key to echo");

    let redirected = stdout.lines().find(|l| l.starts_with("webhook/redirect: ")).expect("a line for webhook/redirect");
    let target_origin = target.url().trim_end_matches(path).to_owned();
    assert_eq!(
        redirected,
        format!(
            "webhook/redirect: FAILED: {} answered HTTP 307 (redirect to {target_origin} not followed: exporters do not follow redirects; set url to the final URL)",
            redirecting.url()
        )
    );
    assert!(target.requests().is_empty(), "the redirect target got a request");

    let all = format!("{stdout}\n{stderr}");
    for form in [&KEY[..5], "Secret", "wk-key\\/7", "d2stS2V5"] {
        assert!(!all.to_lowercase().contains(&form.to_lowercase()), "{form} printed:\n{all}");
    }
}

#[tokio::test]
async fn jsonl_plugin_appends_a_line_per_span_and_rotates_by_size() {
    // `path` is relative: it resolves against the config file's directory.
    let exporters = "  jsonl:\n    path: out/spans.jsonl\n    max_size: 3KiB\n    max_files: 20";
    let yaml = pipeline(&[plugin("gencol_jsonl")], exporters, &["jsonl"]);
    let gencol = Gencol::start(&yaml);
    let ids: Vec<String> = (0..8).map(|i| format!("jl-{i}")).collect();
    for id in &ids {
        assert_eq!(post_json(&gencol.generations_url(), &generation(id)).await.0, 202);
    }
    let dir = gencol.dir.path().join("out");
    let read_all = || -> Vec<(String, String)> {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        files.sort();
        files.iter().map(|f| (path_str(f), std::fs::read_to_string(f).unwrap_or_default())).collect()
    };
    let deadline = Instant::now() + WAIT;
    let mut files = read_all();
    while files.iter().map(|(_, t)| t.lines().count()).sum::<usize>() < ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        files = read_all();
    }
    let mut seen = Vec::new();
    for (name, content) in &files {
        assert!(content.len() <= 3 * 1024, "{name} holds {} bytes, more than max_size", content.len());
        for line in content.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("each line is one JSON object");
            assert_eq!(v["trace_id"].as_str().map(str::len), Some(32), "{line}");
            assert_eq!(v["resource"]["service.name"], "gencol", "{line}");
            seen.push(v["attributes"]["gen_ai.response.id"].as_str().unwrap_or_default().to_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, ids, "every span once, in {files:?}\n{}", gencol.stderr());
    assert!(files.len() > 1, "rotated at 3KiB: {:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    assert!(files.iter().any(|(n, _)| n.ends_with("spans.jsonl.1")), "rotated files are numbered");
}

#[tokio::test]
async fn plugin_settings_errors_are_reported_at_their_yaml_lines() {
    // The plugin path is relative to the config file, as `plugins:` paths are.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("gencol_webhook"), dir.path().join("webhook.so")).unwrap();
    let yaml = "\
plugins: [./webhook.so]
receivers:
  generations:
exporters:
  webhook/a:
    url: ftp://example.com
    method: PUT
  webhook/b:
    url: https://example.com/hook
    headers:
      X-Token: \"tok\\nen\"
  webhook/c:
    url: https://example.com/hook
    verb: POST
  webhook/d:
    timeout: 5s
service:
  pipelines:
    traces:
      receivers: [generations]
      exporters: [webhook/a, webhook/b, webhook/c, webhook/d]
";
    let config = dir.path().join("gencol.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = gencol(vec!["validate".into(), "--config".into(), path_str(&config)]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    let file = path_str(&config);
    for expected in [
        format!("{file}:6:10: url: must be an http:// or https:// URL with a host, not ftp://"),
        format!("{file}:11:16: headers.X-Token: the value is not a valid HTTP header value"),
        format!("{file}:14:5: unknown key `verb` (expected one of: url, method, headers)"),
        format!("{file}:16:5: missing key `url`"),
    ] {
        assert!(stderr.contains(&expected), "expected `{expected}` in:\n{stderr}");
    }
    assert!(!stderr.contains("tok"), "a header value is never quoted:\n{stderr}");
    assert!(stderr.contains("4 errors in the configuration"), "{stderr}");
}

#[tokio::test]
async fn loading_failures_are_reported_at_their_plugins_entry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a library").unwrap();
    std::fs::create_dir(dir.path().join("copy")).unwrap();
    let copy = dir.path().join("copy/libgencol_webhook.so");
    std::fs::copy(plugin("gencol_webhook"), &copy).unwrap();
    let yaml = format!(
        "\
plugins:
  - missing/libgone.so
  - notes.txt
  - {wrong_abi}
  - {webhook}
  - copy/libgencol_webhook.so
receivers:
  generations:
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [generations]
      exporters: [debug]
",
        wrong_abi = path_str(&plugin("gencol_test_plugin_wrong_abi")),
        webhook = path_str(&plugin("gencol_webhook")),
    );
    let config = dir.path().join("gencol.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = gencol(vec!["validate".into(), "--config".into(), path_str(&config)]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    let file = path_str(&config);
    let base = path_str(&dir.path().canonicalize().unwrap());
    let abi = gencol_plugin_abi::GENCOL_PLUGIN_ABI_VERSION;
    for expected in [
        format!("{file}:2:5: plugins[0]: plugin file not found: "),
        format!("{file}:3:5: plugins[1]: cannot load plugin "),
        format!("{file}:4:5: plugins[2]: plugin "),
        format!("was built for gencol plugin ABI version 999, but this gencol speaks ABI version {abi}"),
        format!("{file}:6:5: plugins[4]: exporter type `webhook` is registered twice"),
        format!("plugin {base}/copy/libgencol_webhook.so"),
    ] {
        assert!(stderr.contains(&expected), "expected `{expected}` in:\n{stderr}");
    }
    assert!(stderr.contains("missing/libgone.so"), "{stderr}");
    assert!(stderr.contains("not a dynamic library"), "{stderr}");
}

#[tokio::test]
async fn components_lists_plugin_types_with_path_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = pipeline(&[plugin("gencol_webhook"), plugin("gencol_jsonl")], "  debug:", &["debug"])
        .replace("{GEN_PORT}", "4320");
    let config = dir.path().join("gencol.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = gencol(vec!["components".into(), "--config".into(), path_str(&config)]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let version = env!("CARGO_PKG_VERSION");
    for (kind, lib) in [("webhook", "gencol_webhook"), ("jsonl", "gencol_jsonl")] {
        let path = path_str(&plugin(lib).canonicalize().unwrap());
        let line = stdout.lines().find(|l| l.split_whitespace().nth(1) == Some(kind));
        let line = line.unwrap_or_else(|| panic!("no `{kind}` line in:\n{stdout}"));
        assert!(line.starts_with("exporter"), "{line}");
        assert!(line.contains(&format!("plugin {path} {version}")), "{line}");
    }
    assert!(stdout.lines().any(|l| l.contains("otlp") && l.contains("built-in")), "{stdout}");
    // Without --config: built-in types only.
    let (stdout, _) = text(&gencol(vec!["components".into()]).await);
    assert!(!stdout.contains("webhook"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_is_caught_counted_and_retried_while_others_deliver() {
    let sink = OtlpSink::start().await.unwrap();
    let exporters = format!(
        "  otlp/sink:\n    endpoint: {}\n  panicking:\n    panics: 2\n    delivered_file: delivered.txt\n    retry: {{initial_interval: 100ms, max_interval: 200ms}}",
        sink.url()
    );
    let yaml = pipeline(&[plugin("gencol_test_plugin_panic")], &exporters, &["otlp/sink", "panicking"]);
    let mut gencol = Gencol::start(&yaml);
    assert_eq!(post_json(&gencol.generations_url(), &generation("pa-1")).await.0, 202);
    assert_eq!(sink.wait_for_spans(1, WAIT).await.len(), 1, "the other exporter delivers");

    // The batch survived both panics and was delivered by the third attempt.
    let delivered = gencol.dir.path().join("delivered.txt");
    let deadline = Instant::now() + WAIT;
    while !delivered.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_to_string(&delivered).unwrap_or_default().lines().count(), 1, "{}", gencol.stderr());
    let text = log(&gencol);
    assert!(text.contains("plugin panicked in export"), "{text}");
    assert!(text.contains("test plugin panics on purpose"), "{text}");
    assert!(text.contains("panics_total=2"), "{text}");

    // Still running and delivering.
    assert_eq!(post_json(&gencol.generations_url(), &generation("pa-2")).await.0, 202);
    assert_eq!(sink.wait_for_spans(2, WAIT).await.len(), 2);
    assert!(gencol.stop(), "clean exit:\n{}", gencol.stderr());
    assert!(log(&gencol).contains("exporter=panicking sent=2 failed=0 dropped=0 retries=2"), "{}", log(&gencol));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_connection_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        pipeline(&[plugin("gencol_test_plugin_panic")], "  panicking:", &["panicking"]).replace("{GEN_PORT}", "4320");
    let config = dir.path().join("gencol.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = gencol(vec!["test-connection".into(), "--config".into(), path_str(&config)]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "a failed test, not a crash:\n{stdout}\n{stderr}");
    assert!(stdout.contains("panicking: FAILED") && stdout.contains("panicked"), "{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_plugin_times_out_while_others_deliver_and_sigterm_still_stops() {
    let sink = OtlpSink::start().await.unwrap();
    let exporters = format!(
        "  otlp/sink:\n    endpoint: {}\n  hanging:\n    timeout: 300ms\n    retry: {{initial_interval: 100ms, max_interval: 200ms}}",
        sink.url()
    );
    let yaml = pipeline(&[plugin("gencol_test_plugin_hang")], &exporters, &["otlp/sink", "hanging"]);
    let mut gencol = Gencol::start(&yaml);
    for i in 0..3 {
        assert_eq!(post_json(&gencol.generations_url(), &generation(&format!("h-{i}"))).await.0, 202);
    }
    assert_eq!(sink.wait_for_spans(3, WAIT).await.len(), 3, "the other exporter delivers:\n{}", gencol.stderr());
    assert!(wait_for_log(&gencol, "no answer within 300ms").await, "timeout logged:\n{}", gencol.stderr());
    assert!(
        wait_for_log(&gencol, "calls are still running inside the plugin").await,
        "the stuck plugin is named:\n{}",
        gencol.stderr()
    );
    // Still accepting and delivering while the plugin's threads are stuck.
    assert_eq!(post_json(&gencol.generations_url(), &generation("h-late")).await.0, 202);
    assert_eq!(sink.wait_for_spans(4, WAIT).await.len(), 4);

    let started = Instant::now();
    assert!(gencol.stop(), "clean exit:\n{}", gencol.stderr());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "stopped in {took:?}, shutdown_timeout is 2s:\n{}", gencol.stderr());
    assert!(log(&gencol).contains("exporter stopped exporter=hanging sent=0"), "{}", log(&gencol));
}

#[tokio::test]
async fn shipped_plugin_pipelines_validate_with_the_built_plugins() {
    for name in ["webhook.yaml", "jsonl.yaml"] {
        let config = repo_root().join("pipelines").join(name);
        let out = tokio::task::spawn_blocking(move || {
            Command::new(gencol_bin())
                .args(["validate", "--config"])
                .arg(&config)
                .env("GENCOL_PLUGIN_DIR", plugin_dir())
                .env("WEBHOOK_URL", "https://example.com/hooks/llm")
                .env_remove("RUST_LOG")
                .output()
                .expect("run gencol")
        })
        .await
        .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(stdout.contains("configuration is valid"), "{name}: {stdout}");
    }
}

#[tokio::test]
async fn test_connection_of_a_hanging_plugin_fails_and_gencol_exits() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = pipeline(&[plugin("gencol_test_plugin_hang")], "  hanging:\n    timeout: 300ms", &["hanging"])
        .replace("{GEN_PORT}", "4320");
    let config = dir.path().join("gencol.yaml");
    std::fs::write(&config, yaml).unwrap();
    let started = Instant::now();
    let out = gencol(vec!["test-connection".into(), "--config".into(), path_str(&config)]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("hanging: FAILED") && stdout.contains("no answer within 300ms"), "{stdout}\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "the stuck plugin thread does not keep gencol alive");
}

/// SPEC §7's disk queue serves plugin exporters like built-in ones: what got a 202 while
/// the webhook's destination was down survives a SIGKILL and arrives after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_exporter_gets_a_disk_queue_whose_records_survive_sigkill() {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let url = format!("http://{addr}/hooks/llm");
    let exporters = format!(
        "  webhook:\n    url: {url}\n    retry: {{initial_interval: 100ms, max_interval: 500ms}}\n    queue: {{kind: disk, dir: {{DIR}}/queue}}"
    );
    let yaml = pipeline(&[plugin("gencol_webhook")], &exporters, &["webhook"]);
    let mut gencol = Gencol::start(&yaml);
    let ids: Vec<String> = (0..20).map(|i| format!("plugin-disk-{i}")).collect();
    for id in &ids {
        assert_eq!(post_json(&gencol.generations_url(), &generation(id)).await.0, 202, "{}", gencol.stderr());
    }
    // The destination is down: everything answered 202 is only on disk when gencol dies.
    gencol.kill();
    let sink = OtlpSink::start_with(SinkOptions::default().addr(addr).path("/hooks/llm")).await.unwrap();
    gencol.restart();
    let spans = sink.wait_for_spans(ids.len(), WAIT).await;
    let got: std::collections::BTreeSet<&str> = spans.iter().filter_map(|s| s.attr_str("gen_ai.response.id")).collect();
    for id in &ids {
        assert!(got.contains(id.as_str()), "{id} missing after the restart:\n{}", gencol.stderr());
    }
}
