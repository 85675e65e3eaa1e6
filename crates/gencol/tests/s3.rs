//! The `s3` exporter against a real S3 API server: moto in server mode (`moto_server`, from
//! the tests' virtual environment, see crates/gencol/tests/python/requirements.txt), with
//! the objects read back through boto3 (crates/gencol/tests/python/s3_tool.py).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A `moto_server` on 127.0.0.1; killed on drop. With `iam`, every request after the
/// first three (which make a user and its keys) must be signed with real keys.
struct Moto {
    child: Child,
    port: u16,
    python: PathBuf,
}

impl Moto {
    fn start(iam: bool) -> Moto {
        let python = test_python();
        let port = free_port();
        let mut cmd = Command::new(python.with_file_name("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if iam {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let child = cmd.spawn().expect("start moto_server");
        let moto = Moto { child, port, python };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn tool(&self, args: &[&str]) -> Value {
        let script = repo_root().join("crates/gencol/tests/python/s3_tool.py");
        let out = Command::new(&self.python).arg(script).arg(self.url()).args(args).output().expect("run s3_tool.py");
        assert!(out.status.success(), "s3_tool.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("s3_tool.py prints JSON")
    }

    /// Makes `bucket`; returns keys that may write it.
    fn setup(&self, bucket: &str, iam: bool) -> (String, String) {
        let mut args = vec!["setup", bucket];
        if iam {
            args.push("--iam");
        }
        let keys = self.tool(&args);
        (keys["access_key_id"].as_str().unwrap().to_owned(), keys["secret_access_key"].as_str().unwrap().to_owned())
    }

    /// Every object of the bucket: key → (content type, lines).
    fn objects(&self, bucket: &str) -> BTreeMap<String, (String, Vec<Value>)> {
        let all = self.tool(&["dump", bucket, "test", "test"]);
        all.as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let lines = o["text"].as_str().unwrap().lines().map(|l| serde_json::from_str(l).expect("JSON line"));
                (
                    o["key"].as_str().unwrap().to_owned(),
                    (o["content_type"].as_str().unwrap_or("").to_owned(), lines.collect()),
                )
            })
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Between gencol and moto: passes every request on, but for the first PUT under each
/// top-level prefix it throws S3's answer away and answers 503 SlowDown instead, as a
/// connection lost after the write would: the object is stored, gencol does not know it.
struct LossyProxy {
    addr: SocketAddr,
    lost: Arc<Mutex<Vec<String>>>,
}

impl LossyProxy {
    async fn start(upstream: String) -> LossyProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lost: Arc<Mutex<Vec<String>>> = Arc::default();
        let client = reqwest::Client::new();
        let seen = lost.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (client, upstream, lost) = (client.clone(), upstream.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let (client, upstream, lost) = (client.clone(), upstream.clone(), lost.clone());
                        async move { Ok::<_, hyper::Error>(forward(req, &client, &upstream, &lost).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        LossyProxy { addr, lost }
    }
}

async fn forward(
    req: hyper::Request<Incoming>,
    client: &reqwest::Client,
    upstream: &str,
    lost: &Mutex<Vec<String>>,
) -> hyper::Response<Full<Bytes>> {
    let (head, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = head.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let mut out = client.request(head.method.clone(), format!("{upstream}{path}")).body(body);
    for (name, value) in &head.headers {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let answer = out.send().await.expect("moto answers");
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    // `/{bucket}/{top}/...`
    let top = path.split('/').nth(2).unwrap_or("").to_owned();
    if head.method == hyper::Method::PUT && status.is_success() && !path.contains("_gencol_test_connection") {
        let mut lost = lost.lock().unwrap();
        if !lost.iter().any(|p| p.split('/').nth(2) == Some(top.as_str())) {
            lost.push(path);
            return hyper::Response::builder()
                .status(503)
                .body(Full::new(Bytes::from_static(
                    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                )))
                .unwrap();
        }
    }
    let mut response = hyper::Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response = response.header(name, value);
        }
    }
    response.body(Full::new(bytes)).unwrap()
}

/// A generation at `hour`:`minute` on 2026-11-22 (UTC).
fn generation_at(id: &str, hour: u32, minute: u32) -> Value {
    let mut g = generation(id);
    g["created_at"] = format!("2026-11-22T{hour:02}:{minute:02}:00.000Z").into();
    g["completed_at"] = format!("2026-11-22T{hour:02}:{minute:02}:01.250Z").into();
    g["request"]["trace"] = serde_json::json!({"feature": "archive-test"});
    g
}

fn span_of(line: &Value) -> &Value {
    &line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_land_once_as_partitioned_gzip_ndjson_across_a_lost_answer_and_privacy_mode_drops_content() {
    let moto = Moto::start(false);
    let (ak, sk) = moto.setup("archive", false);
    let proxy = LossyProxy::start(moto.url()).await;
    let endpoint = format!("http://{}", proxy.addr);
    let yaml = format!(
        r#"
receivers:
  generations:
    endpoint: 127.0.0.1:{{GEN_PORT}}
processors:
  namespace:
exporters:
  s3:
    bucket: archive
    prefix: gencol/all
    endpoint: {endpoint}
    region: us-east-1
    access_key_id: {ak}
    secret_access_key: {sk}
    max_object_age: 1s
    queue: {{kind: disk}}
    retry: {{initial_interval: 100ms, max_interval: 500ms}}
  s3/private:
    bucket: archive
    prefix: private
    endpoint: {endpoint}
    access_key_id: {ak}
    secret_access_key: {sk}
    max_object_age: 1s
    privacy_mode: true
    retry: {{initial_interval: 100ms, max_interval: 500ms}}
service:
  data_dir: "{{DIR}}/data"
  pipelines:
    traces:
      receivers: [generations]
      processors: [namespace]
      exporters: [s3, s3/private]
"#
    );
    let gencol = Gencol::start(&yaml);
    // 40 generations over two hours of 2026-11-22.
    let mut want = BTreeSet::new();
    for i in 0..40u32 {
        let id = format!("gen-s3-{i:03}");
        let (status, body) = post_json(&gencol.generations_url(), &generation_at(&id, 10 + i % 2, i)).await;
        assert_eq!(status, 202, "{body}");
        want.insert(id);
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let objects = loop {
        let objects = moto.objects("archive");
        let lines = |prefix: &str| -> usize {
            objects.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, (_, l))| l.len()).sum()
        };
        if lines("gencol/all/") >= 40 && lines("private/") >= 40 {
            break objects;
        }
        assert!(Instant::now() < deadline, "objects so far: {:?}\n{}", objects.keys(), gencol.stderr());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The proxy lost one answer per prefix after S3 stored the object: gencol wrote it again.
    let lost = proxy.lost.lock().unwrap().clone();
    assert_eq!(lost.len(), 2, "{lost:?}");

    for (prefix, private) in [("gencol/all/", false), ("private/", true)] {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (key, (content_type, lines)) in objects.iter().filter(|(k, _)| k.starts_with(prefix)) {
            assert_eq!(content_type, "application/gzip", "{key}");
            assert!(key.ends_with(".ndjson.gz"), "{key}");
            for line in lines {
                let span = span_of(line);
                let id = attribute(span, "gen_ai.response.id").unwrap()["stringValue"].as_str().unwrap().to_owned();
                *seen.entry(id.clone()).or_default() += 1;
                // Its partition is the hour the generation started.
                let n: u32 = id.trim_start_matches("gen-s3-").parse().unwrap();
                let hour = format!("{prefix}year=2026/month=11/day=22/hour={:02}/", 10 + n % 2);
                assert!(key.starts_with(&hour), "{id} in {key}, want under {hour}");
                assert_eq!(line["resourceSpans"].as_array().unwrap().len(), 1);
                assert!(line["resourceSpans"][0]["resource"]["attributes"].is_array(), "the resource is on every line");
                assert_eq!(attribute(span, "gen_ai.usage.input_tokens").unwrap()["intValue"], "10");
                assert_eq!(
                    attribute(span, "trace.metadata.feature").unwrap_or_else(|| panic!("{span}"))["stringValue"],
                    "archive-test"
                );
                let content = ["gen_ai.input.messages", "gen_ai.output.messages"].map(|k| attribute(span, k).is_some());
                assert_eq!(content, [!private, !private], "{prefix} {id}: content present = {content:?}");
            }
        }
        // Every generation once, though a batch of each prefix was written twice.
        assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), want, "{prefix}");
        assert!(seen.values().all(|&n| n == 1), "{prefix}: {seen:?}");
    }
    assert!(!gencol.stderr().contains(&sk), "the secret key reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_writes_a_marked_object_and_names_refused_credentials_and_missing_buckets() {
    let moto = Moto::start(true);
    let (ak, sk) = moto.setup("archive", true);
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, bucket: &str, secret: &str| {
        let path = dir.path().join(name);
        let yaml = format!(
            "receivers:\n  generations:\n    endpoint: 127.0.0.1:{}\nexporters:\n  s3:\n    bucket: {bucket}\n    endpoint: {}\n    access_key_id: {ak}\n    secret_access_key: \"{secret}\"\nservice:\n  pipelines:\n    traces:\n      receivers: [generations]\n      exporters: [s3]\n",
            free_port(),
            moto.url()
        );
        std::fs::write(&path, yaml).unwrap();
        path
    };

    let (code, out) = connection_test(config("good.yaml", "archive", &sk)).await;
    assert_eq!(code, Some(0), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("s3: ok (wrote _gencol_test_connection/"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("to s3://archive/ at http://127.0.0.1:"), "{line}");

    let wrong_secret = "WRONGsecretWRONGsecretWRONGsecret1234567";
    let refused = failed_connection_test(config("wrong.yaml", "archive", wrong_secret), "s3").await;
    assert!(refused.contains("access refused (403 SignatureDoesNotMatch"), "{refused}");
    assert!(refused.contains("check access_key_id and secret_access_key"), "{refused}");
    assert!(!refused.contains(wrong_secret) && !refused.contains(&sk), "{refused}");

    let missing = failed_connection_test(config("missing.yaml", "no-such-bucket", &sk), "s3").await;
    assert!(missing.contains("NoSuchBucket"), "{missing}");
    assert!(missing.contains("check that the bucket exists"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_s3_pipeline_archives_generations_with_keys_from_the_aws_environment() {
    let moto = Moto::start(false);
    moto.setup("gencol-archive", false);
    let gencol = Gencol::start_configs(
        &[&repo_root().join("pipelines/s3.yaml")],
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{GEN_PORT}\nexporters:\n  s3:\n    max_object_age: 1s\nservice:\n  data_dir: \"{DIR}/data\"\n",
        &[],
        &[
            ("S3_BUCKET", "gencol-archive"),
            ("S3_ENDPOINT", &moto.url()),
            ("AWS_ACCESS_KEY_ID", "AKIAGENCOLTEST"),
            ("AWS_SECRET_ACCESS_KEY", "gencol-test-secret-0123456789"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    for i in 0..5 {
        let (status, body) = post_json(&gencol.generations_url(), &generation_at(&format!("gen-pipe-{i}"), 9, i)).await;
        assert_eq!(status, 202, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let objects = moto.objects("gencol-archive");
        let lines: usize = objects.values().map(|(_, l)| l.len()).sum();
        if lines >= 5 {
            assert!(
                objects.keys().all(|k| k.starts_with("gencol/generations/year=2026/month=11/day=22/hour=09/")),
                "{:?}",
                objects.keys()
            );
            assert_eq!(lines, 5);
            break;
        }
        assert!(Instant::now() < deadline, "objects so far: {:?}\n{}", objects.keys(), gencol.stderr());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!gencol.stderr().contains("gencol-test-secret-0123456789"));
}
