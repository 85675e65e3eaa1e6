//! An `otlp` exporter to an HTTPS destination whose certificate a private CA signed (made
//! in the test with rcgen): trusted through `tls.ca_file`, refused with a clear error
//! without it, and config mistakes in `tls` refused at their place.

mod common;

use std::time::Duration;

use common::*;
use gencol_testkit::{OtlpSink, SinkOptions, TlsIdentity};

/// A CA (PEM) and a server identity for 127.0.0.1 signed by it.
fn private_ca() -> (String, TlsIdentity) {
    let ca = TestCa::new();
    let server = ca.server();
    (ca.pem, server)
}

fn config(sink: &OtlpSink, tls: &str) -> String {
    format!(
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{{GEN_PORT}}\nexporters:\n  otlp/secure:\n    endpoint: {}\n    retry: {{initial_interval: 100ms}}\n{tls}service:\n  shutdown_timeout: 5s\n  pipelines:\n    traces: {{receivers: [generations], exporters: [otlp/secure]}}\n",
        sink.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_in_ca_file_is_trusted() {
    let (ca_pem, identity) = private_ca();
    let sink = OtlpSink::start_with(SinkOptions::default().tls(identity)).await.unwrap();
    assert!(sink.url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let gencol = Gencol::start(&config(&sink, &format!("    tls: {{ca_file: \"{}\"}}\n", ca_file.display())));
    let (status, _) = post_json(&gencol.generations_url(), &generation("tls-1")).await;
    assert_eq!(status, 202);
    let spans = sink.wait_for_spans(1, Duration::from_secs(15)).await;
    assert_eq!(spans.len(), 1, "{}", gencol.stderr());
    assert_eq!(spans[0].attr_str("gen_ai.response.id"), Some("tls-1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_ca_the_connection_test_fails_and_says_why() {
    let (_, identity) = private_ca();
    let sink = OtlpSink::start_with(SinkOptions::default().tls(identity)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gencol.yaml");
    std::fs::write(&path, config(&sink, "").replace("{GEN_PORT}", &free_port().to_string())).unwrap();
    let line = failed_connection_test(path, "otlp/secure").await;
    assert!(line.to_lowercase().contains("certificate"), "the error names the certificate problem: {line}");
    assert!(sink.requests().is_empty(), "nothing was sent over an unverified connection");
}

#[test]
fn tls_mistakes_are_refused_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let head = "receivers:\n  generations: {}\nexporters:\n  otlp/secure:\n    endpoint: https://127.0.0.1:9/v1/traces\n    tls:\n";
    let tail = "service:\n  pipelines:\n    traces: {receivers: [generations], exporters: [otlp/secure]}\n";
    let cases = [
        ("      ca_file: missing.pem\n".to_owned(), 7, "tls.ca_file: cannot read missing.pem"),
        (format!("      ca_file: \"{}\"\n", not_pem.display()), 7, "holds no PEM certificate"),
        ("      cert_file: client.pem\n".to_owned(), 7, "tls.cert_file needs tls.key_file"),
        ("      ca_fille: x\n".to_owned(), 7, "ca_fille"),
    ];
    for (tls, line, message) in cases {
        assert_refused_at(&dir.path().join("gencol.yaml"), &format!("{head}{tls}{tail}"), &[], line, message);
    }
}
