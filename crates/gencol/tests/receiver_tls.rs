//! TLS on the receivers (HTTP side; the gRPC side is in grpc.rs): a client trusting the
//! test CA gets through, plain HTTP to the TLS port gets a plain refusal, mTLS refuses a
//! client without a certificate and takes one with it, and replaced certificate files are
//! used without a restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gencol_testkit::OtlpSink;

fn client(ca: &TestCa, identity: Option<&gencol_testkit::TlsIdentity>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        let pem = format!("{}\n{}", id.cert_chain_pem, id.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

fn config(sink: &str, tls: &str) -> String {
    format!(
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{{GEN_PORT}}\n{tls}\
exporters:\n  otlp/sink: {{endpoint: \"{sink}\", retry: {{initial_interval: 100ms}}}}\n\
service:\n  shutdown_timeout: 5s\n  pipelines:\n    traces: {{receivers: [generations], exporters: [otlp/sink]}}\n"
    )
}

async fn post_generation(client: &reqwest::Client, port: u16, id: &str) -> Result<u16, reqwest::Error> {
    let resp = client
        .post(format!("https://localhost:{port}/v1/generations"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&generation(id)).unwrap())
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_the_ca_works_and_plain_http_is_told_to_use_tls() {
    let sink = OtlpSink::start().await.unwrap();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = ca.write(dir.path(), "server", &ca.server());
    let mut gencol =
        Gencol::start(&config(&sink.url(), &format!("    tls: {{cert_file: \"{cert}\", key_file: \"{key}\"}}\n")));
    let port = gencol.generations_port;

    assert_eq!(post_generation(&client(&ca, None), port, "tls-1").await.unwrap(), 202);
    // A client that does not trust the CA cannot connect.
    let stranger = client(&TestCa::new(), None);
    let err = post_generation(&stranger, port, "tls-2").await.expect_err("untrusted");
    assert!(format!("{err:?}").to_lowercase().contains("certificate"), "{err:?}");

    // Plain HTTP to the TLS port: a plain answer saying what to do, not a hang or a reset.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/generations"))
        .body("{}")
        .send()
        .await
        .expect("a plain answer");
    assert_eq!(plain.status().as_u16(), 400);
    assert!(plain.text().await.unwrap().contains("speaks TLS"));

    let spans = sink.wait_for_spans(1, Duration::from_secs(15)).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].attr_str("gen_ai.response.id"), Some("tls-1"));
    assert!(gencol.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_refuses_a_client_without_a_certificate() {
    let sink = OtlpSink::start().await.unwrap();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, cert, key) = ca.write(dir.path(), "server", &ca.server());
    let tls = format!("    tls: {{cert_file: \"{cert}\", key_file: \"{key}\", client_ca_file: \"{ca_file}\"}}\n");
    let gencol = Gencol::start(&config(&sink.url(), &tls));
    let port = gencol.generations_port;

    let err = post_generation(&client(&ca, None), port, "m-1").await.expect_err("no client certificate");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    // A certificate from another CA is refused too.
    let other = TestCa::new();
    assert!(post_generation(&client(&ca, Some(&other.client())), port, "m-2").await.is_err());
    assert_eq!(post_generation(&client(&ca, Some(&ca.client())), port, "m-3").await.unwrap(), 202);
    let spans = sink.wait_for_spans(1, Duration::from_secs(15)).await;
    let ids: Vec<_> = spans.iter().filter_map(|s| s.attr_str("gen_ai.response.id")).collect();
    assert_eq!(ids, ["m-3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn replaced_certificate_files_are_used_without_a_restart() {
    let sink = OtlpSink::start().await.unwrap();
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = old_ca.write(dir.path(), "server", &old_ca.server());
    let mut gencol =
        Gencol::start(&config(&sink.url(), &format!("    tls: {{cert_file: \"{cert}\", key_file: \"{key}\"}}\n")));
    let port = gencol.generations_port;
    let pid = gencol.pid();
    assert_eq!(post_generation(&client(&old_ca, None), port, "r-1").await.unwrap(), 202);

    // A half-written replacement (the key first) does not load: the old pair stays.
    let replacement = new_ca.server();
    std::fs::write(&key, &replacement.key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(post_generation(&client(&old_ca, None), port, "r-2").await.unwrap(), 202);
    std::fs::write(&cert, &replacement.cert_chain_pem).unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match post_generation(&client(&new_ca, None), port, "r-3").await {
            Ok(status) => {
                assert_eq!(status, 202);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the new certificate was not picked up: {e:?}\n{}", gencol.stderr()),
        }
    }
    assert!(post_generation(&client(&old_ca, None), port, "r-4").await.is_err(), "the old certificate is gone");
    assert_eq!(gencol.pid(), pid, "same process");
    assert!(gencol.is_running());
    let stderr = gencol.stderr();
    assert!(stderr.contains("do not load"), "the half-written pair was reported:\n{stderr}");
    assert!(stderr.contains("certificate files changed; new connections use them"), "{stderr}");
    let spans = sink.wait_for_spans(3, Duration::from_secs(15)).await;
    assert_eq!(spans.len(), 3);
}

#[test]
fn tls_mistakes_are_refused_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (_, cert, key) = ca.write(dir.path(), "server", &ca.server());
    let cases = [
        (format!("    tls: {{cert_file: missing.crt, key_file: \"{key}\"}}\n"), "tls.cert_file: cannot read"),
        (format!("    tls: {{cert_file: \"{cert}\", key_file: \"{cert}\"}}\n"), "tls.key_file"),
        (format!("    tls: {{cert_file: \"{cert}\", key_file: \"{key}\", min_version: \"1.1\"}}\n"), "min_version"),
        (format!("    tls: {{cert_file: \"{cert}\"}}\n"), "key_file"),
    ];
    for (tls, message) in cases {
        let yaml = config("http://127.0.0.1:9/v1/traces", &tls).replace("{GEN_PORT}", "4999");
        assert_refused_at(&dir.path().join("gencol.yaml"), &yaml, &[], 4, message);
    }
}
