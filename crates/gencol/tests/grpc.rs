//! OTLP/gRPC end to end: the official OpenTelemetry Python SDK sending to gencol's gRPC
//! port, gencol → gencol over gRPC with mTLS and a bearer token, and the statuses the
//! binary answers with (tonic's client, as OTLP/gRPC exporters see them).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::*;
use gencol_testkit::{Answer, OtlpSink, SinkOptions};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_types::StatusExt;

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const TOKEN: &str = "grpc-test-token-5a9c";

/// An `otlp` receiver with both protocols (gRPC on `{GEN_PORT}`, which the test harness
/// waits for) feeding an `otlp` exporter to `sink`.
fn receiver_config(sink: &str, receiver_extra: &str, exporter_extra: &str) -> String {
    format!(
        "receivers:\n  otlp:\n    endpoint: 127.0.0.1:{{OTLP_PORT}}\n    grpc: {{endpoint: 127.0.0.1:{{GEN_PORT}}}}\n    auth: {{bearer_tokens: [\"{TOKEN}\"]}}\n{receiver_extra}\
exporters:\n  otlp/sink:\n    endpoint: {sink}\n    retry: {{initial_interval: 100ms}}\n{exporter_extra}\
service:\n  shutdown_timeout: 5s\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [otlp/sink]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_over_grpc_and_http_delivers_identical_spans() {
    let python = tokio::task::spawn_blocking(test_python).await.unwrap();
    let sink = OtlpSink::start().await.unwrap();
    let mut gencol = Gencol::start(&receiver_config(&sink.url(), "", ""));
    gencol.wait_port(gencol.otlp_port);
    // Each span goes out twice, through both of the SDK's OTLP exporters: gRPC with gzip,
    // and HTTP/protobuf. gencol forwards both copies to the sink.
    let script = r#"
import os
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

token = os.environ["TOKEN"]
provider = TracerProvider(resource=Resource.create({"service.name": "python-app", "deployment.environment": "test"}))
provider.add_span_processor(SimpleSpanProcessor(GrpcExporter(
    endpoint="127.0.0.1:" + os.environ["GRPC_PORT"], insecure=True,
    headers=(("authorization", "Bearer " + token),), compression=Compression.Gzip, timeout=10)))
provider.add_span_processor(SimpleSpanProcessor(HttpExporter(
    endpoint="http://127.0.0.1:" + os.environ["HTTP_PORT"] + "/v1/traces",
    headers={"Authorization": "Bearer " + token}, timeout=10)))
tracer = provider.get_tracer("gencol-test", "1.0")
for i in range(5):
    with tracer.start_as_current_span("chat %d" % i) as parent:
        parent.set_attribute("gen_ai.request.model", "openai/gpt-4o")
        parent.set_attribute("gen_ai.usage.input_tokens", 100 + i)
        parent.set_attribute("gen_ai.usage.total_cost", 0.25 * i)
        parent.set_attribute("tags", ["a", "b"])
        with tracer.start_as_current_span("tool call") as child:
            child.add_event("retrieved", {"docs": 3})
provider.shutdown()
print("sent")
"#;
    let (grpc_port, http_port) = (gencol.generations_port.to_string(), gencol.otlp_port.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("-c")
            .arg(script)
            .env("TOKEN", TOKEN)
            .env("GRPC_PORT", grpc_port)
            .env("HTTP_PORT", http_port)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK script failed:\n{stderr}");
    assert!(!stderr.contains("Failed to export"), "an exporter reported a failure:\n{stderr}");

    let spans = sink.wait_for_spans(20, Duration::from_secs(20)).await;
    assert_eq!(spans.len(), 20, "10 spans, each sent over both protocols:\n{}", gencol.stderr());
    let mut by_id: BTreeMap<Vec<u8>, Vec<_>> = BTreeMap::new();
    for s in spans {
        by_id.entry(s.span.span_id.clone()).or_default().push(s);
    }
    assert_eq!(by_id.len(), 10);
    for copies in by_id.values() {
        assert_eq!(copies.len(), 2);
        let (a, b) = (&copies[0], &copies[1]);
        assert_eq!(a.span, b.span, "the same span, field for field, over gRPC and over HTTP");
        assert_eq!(a.resource, b.resource);
        assert_eq!(a.scope, b.scope);
    }
    let chat = by_id.values().map(|c| &c[0]).find(|s| s.span.name == "chat 3").expect("chat 3");
    assert_eq!(chat.attr_i64("gen_ai.usage.input_tokens"), Some(103));
    assert_eq!(chat.attr_str("gen_ai.request.model"), Some("openai/gpt-4o"));
    assert_eq!(chat.scope.as_ref().map(|s| s.name.as_str()), Some("gencol-test"));
    let service = chat.resource.as_ref().and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"));
    assert!(format!("{service:?}").contains("python-app"));
}

fn request(id: u8, name_len: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![id; 16],
                    span_id: vec![id; 8],
                    name: "x".repeat(name_len),
                    start_time_unix_nano: 1_764_000_000_000_000_000,
                    end_time_unix_nano: 1_764_000_001_000_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A client of gencol's gRPC port.
async fn client(port: u16) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    tonic::client::Grpc::new(channel)
}

/// One Export call, as an OTLP/gRPC exporter makes it.
async fn export<M: prost::Message + Send + Sync + 'static>(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    req: M,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(req);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<M, ExportTraceServiceResponse>::default();
    grpc.unary(request, PathAndQuery::from_static(EXPORT), codec).await.map(drop)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_answers_from_the_binary_and_it_lives_on() {
    // A destination that never answers in time and a one-batch queue: the pipeline fills.
    let sink =
        OtlpSink::start_with(SinkOptions::default().fallback(Answer::delay(Duration::from_secs(30)))).await.unwrap();
    let mut gencol = Gencol::start(&receiver_config(
        &sink.url(),
        "    max_request_body_size: 64KiB\n",
        "    timeout: 60s\n    queue: {max_items: 1, when_full: block, consumers: 1}\n",
    ));
    let mut grpc = client(gencol.generations_port).await;

    let err = export(&mut grpc, request(1, 10), Some("wrong")).await.expect_err("wrong token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!err.message().contains(TOKEN));
    let err = export(&mut grpc, request(1, 10), None).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);

    let err = export(&mut grpc, request(2, 100 * 1024), Some(TOKEN)).await.expect_err("oversized");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_request_body_size"), "{}", err.message());

    // Garbage: a message that is not an ExportTraceServiceRequest (a bare varint field
    // cut short), sent with a codec that writes raw bytes.
    let mut broken = ExportTraceServiceRequest::default();
    broken.resource_spans.push(ResourceSpans::default());
    let mut garbage = prost::Message::encode_to_vec(&broken);
    garbage.extend_from_slice(&[0x0a, 0xff, 0xff, 0xff]);
    let err = export(&mut grpc, Raw(garbage), Some(TOKEN)).await.expect_err("garbage");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let mut unavailable = None;
    for i in 0..5000u32 {
        match export(&mut grpc, request((i % 200) as u8 + 10, 10), Some(TOKEN)).await {
            Ok(()) => {}
            Err(e) => {
                unavailable = Some(e);
                break;
            }
        }
    }
    let err = unavailable.expect("a full pipeline refuses");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.get_details_retry_info().and_then(|r| r.retry_delay).is_some(), "RetryInfo says when to retry");
    assert!(gencol.is_running(), "{}", gencol.stderr());
}

/// A message sent as the bytes it holds (to send what is not a valid request).
#[derive(Clone, Default)]
struct Raw(Vec<u8>);

impl prost::Message for Raw {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        _tag: u32,
        _wire_type: prost::encoding::WireType,
        _buf: &mut impl bytes::Buf,
        _ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        Ok(())
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gencol_to_gencol_over_grpc_with_mtls_keeps_every_span() {
    let sink = OtlpSink::start().await.unwrap();
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let (ca_file, server_cert, server_key) = ca.write(certs.path(), "server", &ca.server());
    let (_, client_cert, client_key) = ca.write(certs.path(), "client", &ca.client());

    // The second tier: OTLP/gRPC in, over TLS that requires a client certificate.
    let tls = format!(
        "    tls: {{cert_file: \"{server_cert}\", key_file: \"{server_key}\", client_ca_file: \"{ca_file}\", min_version: \"1.3\"}}\n"
    );
    let mut tier2 = Gencol::start(&receiver_config(&sink.url(), &tls, ""));
    tier2.wait_port(tier2.otlp_port);
    // The first tier: generation records in, OTLP/gRPC out to the second.
    let tier1 = Gencol::start(
        &[
            "receivers:\n  generations: {endpoint: 127.0.0.1:{GEN_PORT}}\nprocessors:\n  namespace: {}\n".to_owned(),
            "exporters:\n  otlp/tier2:\n    protocol: grpc\n".to_owned(),
            format!("    endpoint: https://localhost:{}\n", tier2.generations_port),
            format!("    headers: {{authorization: \"Bearer {TOKEN}\"}}\n"),
            format!("    tls: {{ca_file: \"{ca_file}\", cert_file: \"{client_cert}\", key_file: \"{client_key}\"}}\n"),
            "    retry: {initial_interval: 100ms}\n".to_owned(),
            "service:\n  shutdown_timeout: 5s\n  pipelines:\n".to_owned(),
            "    traces: {receivers: [generations], processors: [namespace], exporters: [otlp/tier2]}\n".to_owned(),
        ]
        .concat(),
    );

    let client = reqwest::Client::new();
    let mut want = BTreeSet::new();
    for i in 0..300 {
        let id = format!("g2g-{i}");
        let body = serde_json::to_vec(&generation(&id)).unwrap();
        let (status, _, _) = post_with(&client, &tier1.generations_url(), "application/json", body, &[]).await;
        assert_eq!(status, 202);
        want.insert(id);
    }
    let spans = sink.wait_for_spans(want.len(), Duration::from_secs(30)).await;
    let got: BTreeSet<String> =
        spans.iter().filter_map(|s| s.attr_str("gen_ai.response.id")).map(str::to_owned).collect();
    assert_eq!(got, want, "tier 1:\n{}\ntier 2:\n{}", tier1.stderr(), tier2.stderr());
    let unique: BTreeSet<&Vec<u8>> = spans.iter().map(|s| &s.span.span_id).collect();
    assert_eq!(unique.len(), spans.len(), "no span twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grpc_exporter_refuses_an_untrusted_server_clearly() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let (_, server_cert, server_key) = ca.write(certs.path(), "server", &ca.server());
    let sink = OtlpSink::start().await.unwrap();
    let tls = format!("    tls: {{cert_file: \"{server_cert}\", key_file: \"{server_key}\"}}\n");
    let tier2 = Gencol::start(&receiver_config(&sink.url(), &tls, ""));
    // No ca_file: the private CA is not trusted.
    let path = certs.path().join("tier1.yaml");
    std::fs::write(
        &path,
        format!(
            "receivers:\n  generations: {{endpoint: 127.0.0.1:{}}}\nexporters:\n  otlp/tier2:\n    protocol: grpc\n    endpoint: https://127.0.0.1:{}\n    headers: {{authorization: \"Bearer {TOKEN}\"}}\n\
service:\n  pipelines:\n    traces: {{receivers: [generations], exporters: [otlp/tier2]}}\n",
            free_port(),
            tier2.generations_port
        ),
    )
    .unwrap();
    let line = failed_connection_test(path, "otlp/tier2").await;
    assert!(line.to_lowercase().contains("certificate"), "the error names the certificate problem: {line}");
    assert!(!line.contains(TOKEN));
    assert!(sink.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_tls_certificates_are_replaced_without_a_restart() {
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let certs = tempfile::tempdir().unwrap();
    let (_, cert, key) = old_ca.write(certs.path(), "server", &old_ca.server());
    let sink = OtlpSink::start().await.unwrap();
    let tls = format!("    tls: {{cert_file: \"{cert}\", key_file: \"{key}\"}}\n");
    let mut tier2 = Gencol::start(&receiver_config(&sink.url(), &tls, ""));
    let pid = tier2.pid();
    // A sender that trusts only the new CA: refused until the files are replaced.
    let (new_ca_file, _, _) = new_ca.write(certs.path(), "new", &new_ca.client());
    let path = certs.path().join("tier1.yaml");
    std::fs::write(
        &path,
        [
            format!("receivers:\n  generations: {{endpoint: 127.0.0.1:{}}}\n", free_port()),
            "exporters:\n  otlp/tier2:\n    protocol: grpc\n".to_owned(),
            format!("    endpoint: https://localhost:{}\n", tier2.generations_port),
            format!("    headers: {{authorization: \"Bearer {TOKEN}\"}}\n    tls: {{ca_file: \"{new_ca_file}\"}}\n"),
            "service:\n  pipelines:\n    traces: {receivers: [generations], exporters: [otlp/tier2]}\n".to_owned(),
        ]
        .concat(),
    )
    .unwrap();
    let line = failed_connection_test(path.clone(), "otlp/tier2").await;
    assert!(line.to_lowercase().contains("certificate"), "{line}");

    let replacement = new_ca.server();
    std::fs::write(&cert, &replacement.cert_chain_pem).unwrap();
    std::fs::write(&key, &replacement.key_pem).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (code, stdout) = connection_test(path.clone()).await;
        if code == Some(0) {
            assert!(stdout.contains("otlp/tier2: ok"), "{stdout}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not picked up:\n{stdout}\n{}",
            tier2.stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(tier2.pid(), pid);
    assert!(tier2.is_running());
    // The connection test's span reached the sink through the renewed port.
    assert_eq!(sink.wait_for_spans(1, Duration::from_secs(10)).await.len(), 1);
}
