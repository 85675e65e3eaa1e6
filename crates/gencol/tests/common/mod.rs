//! Runs the real `gencol` binary on 127.0.0.1 for end-to-end tests.

#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub fn gencol_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gencol")
}

/// The repository root (for examples/ and pipelines/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// A running gencol. Killed on drop; `stop` sends SIGTERM and returns its output.
pub struct Gencol {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub generations_port: u16,
    pub otlp_port: u16,
}

impl Gencol {
    /// Writes `yaml` (with `{GEN_PORT}` and `{OTLP_PORT}` filled in) and runs
    /// `gencol run --config` on it, waiting until the generations port answers.
    pub fn start(yaml: &str) -> Gencol {
        Self::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gencol {
        Self::start_configs(&[], yaml, &[], env)
    }

    /// `gencol run ARGS... --config FILE... --config <yaml>`: the `files` (e.g. a shipped
    /// pipeline) first, then `yaml` (ports filled in as in [`Gencol::start`]) merged over
    /// them, so a test can run `pipelines/*.yaml` on free ports with short windows.
    pub fn start_configs(files: &[&Path], yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Gencol {
        // A port found free can be taken by a parallel test before gencol binds it; gencol
        // then refuses to start (no half-start), and the test starts it again on new ports.
        let mut attempts = 1;
        loop {
            let mut g = Self::spawn(files, yaml, args, env);
            match g.wait_listening(g.generations_port) {
                Ok(()) => return g,
                Err(e) if attempts < 3 && e.contains("cannot listen") => attempts += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn spawn(files: &[&Path], yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Gencol {
        let generations_port = free_port();
        let otlp_port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let yaml =
            yaml.replace("{GEN_PORT}", &generations_port.to_string()).replace("{OTLP_PORT}", &otlp_port.to_string());
        let config = dir.path().join("gencol.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).expect("stdout log");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log");
        let mut cmd = Command::new(gencol_bin());
        cmd.arg("run").args(args);
        for file in files {
            cmd.arg("--config").arg(file);
        }
        cmd.arg("--config").arg(&config).stdout(stdout).stderr(stderr).env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn gencol");
        Gencol { child: Some(child), dir, generations_port, otlp_port }
    }

    fn wait_listening(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("gencol exited early ({status}):\n{}", self.stderr()));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("gencol did not listen on {port} within 20s:\n{}", self.stderr()))
    }

    pub fn generations_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/generations", self.generations_port)
    }

    pub fn otlp_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.otlp_port)
    }

    pub fn stderr(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.dir.path().join("stderr.log")).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    pub fn stdout(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.dir.path().join("stdout.log")).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// SIGTERM, then wait (up to 30 s) for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        false
    }
}

impl Drop for Gencol {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// POSTs a body and returns (status, body as JSON or Null, headers).
pub async fn post(
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    post_with(&reqwest::Client::new(), url, content_type, body, extra).await
}

/// Like [`post`], on a given client (keep-alive across many requests).
pub async fn post_with(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut req = client.post(url).header("content-type", content_type).body(body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request reaches gencol");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null), headers)
}

pub async fn post_json(url: &str, value: &serde_json::Value) -> (u16, serde_json::Value) {
    let (s, b, _) = post(url, "application/json", serde_json::to_vec(value).expect("json"), &[]).await;
    (s, b)
}

/// A generation record read from examples/generations.
pub fn example(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join("examples/generations").join(name)).expect("example record");
    serde_json::from_str(&text).expect("example is JSON")
}

/// A small valid generation with a unique id.
pub fn generation(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "created_at": "2026-11-22T10:00:00.000Z",
        "completed_at": "2026-11-22T10:00:01.250Z",
        "provider": "OpenAI",
        "request": {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]},
        "response": {"model": "openai/gpt-4o-2024-08-06",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there."}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.0001}}
    })
}

/// First `n` bytes of SHA-256 of `s`, hex: how SPEC §3 derives ids.
pub fn sha_hex(s: &str, n: usize) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..n])
}

/// A pipeline: generations → hierarchy(window) → namespace [→ extra processors] → otlp sink.
pub fn pipeline_to_sink(sink_url: &str, group_window: &str, extra_processors: &str, exporter_extra: &str) -> String {
    format!(
        r#"
receivers:
  generations:
    endpoint: 127.0.0.1:{{GEN_PORT}}
  otlp:
    endpoint: 127.0.0.1:{{OTLP_PORT}}
processors:
  hierarchy:
    group_window: {group_window}
  namespace: {{}}
{extra_processors}
exporters:
  otlp/sink:
    endpoint: {sink_url}
    retry:
      initial_interval: 100ms
{exporter_extra}
service:
  shutdown_timeout: 5s
  pipelines:
    traces:
      receivers: [generations, otlp]
      processors: [hierarchy, namespace{names}]
      exporters: [otlp/sink]
"#,
        names = if extra_processors.contains("privacy") { ", privacy" } else { "" }
    )
}
