//! The `otlp` receiver's gRPC port over real HTTP/2, with tonic's client: what OTLP/gRPC
//! exporters send (gzip, bearer metadata) and the statuses they act on.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use gencol_config::ByteSize;
use gencol_engine::{CancellationToken, PipelineMessage};
use gencol_model::budget::MemoryBudget;
use gencol_model::otlp::encode_proto;
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::sync::mpsc;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::OtlpReceiverConfig;
use super::config::{GrpcSettings, OtlpReceiverSettings};
use super::tests::{received, request, span};
use crate::grpc::codec::RawCodec;
use crate::settings::AuthSettings;
use crate::test_support::pipeline;

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

async fn start(settings: OtlpReceiverSettings, capacity: usize) -> (SocketAddr, mpsc::Receiver<PipelineMessage>) {
    let settings = OtlpReceiverSettings {
        endpoint: "127.0.0.1:0".into(),
        grpc: Some(GrpcSettings { endpoint: "127.0.0.1:0".into() }),
        ..settings
    };
    let config = OtlpReceiverConfig { id: "otlp/test".into(), checked: settings.check(Path::new(".")).expect("valid") };
    let (consumer, rx) = pipeline(capacity);
    let (_, grpc, _task) =
        config.bind(consumer, MemoryBudget::new(256 << 20), CancellationToken::new()).await.expect("bind");
    (grpc.expect("gRPC served"), rx)
}

/// One unary call, as OTLP/gRPC exporters make it.
async fn call(
    addr: SocketAddr,
    path: &'static str,
    body: Bytes,
    token: Option<&str>,
    compression: Option<CompressionEncoding>,
) -> Result<Bytes, Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Some(compression) = compression {
        grpc = grpc.send_compressed(compression);
    }
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(body);
    if let Some(token) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    }
    grpc.unary(req, PathAndQuery::from_static(path), RawCodec).await.map(tonic::Response::into_inner)
}

async fn export(addr: SocketAddr, body: Bytes) -> Result<Bytes, Status> {
    call(addr, EXPORT, body, None, None).await
}

#[tokio::test]
async fn spans_sent_over_grpc_arrive_as_over_http() {
    let auth = AuthSettings { bearer_tokens: vec!["s3cret".into()] };
    let (addr, mut rx) = start(OtlpReceiverSettings { auth: Some(auth), ..Default::default() }, 16).await;
    let req = request(vec![span(1), span(2)]);
    let answer = call(addr, EXPORT, encode_proto(&req).into(), Some("s3cret"), Some(CompressionEncoding::Gzip))
        .await
        .expect("exported");
    assert_eq!(ExportTraceServiceResponse::decode(answer).expect("response"), ExportTraceServiceResponse::default());
    let spans = received(&mut rx);
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].span, span(1));
    assert_eq!(spans[0].origin.resource, req.resource_spans[0].resource.clone().expect("resource"));
    assert_eq!(spans[0].origin.scope.name, "broadcast");

    for token in [None, Some("wrong")] {
        let err = call(addr, EXPORT, encode_proto(&req).into(), token, None).await.expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}");
        assert!(!err.message().contains("s3cret"));
    }
    assert!(received(&mut rx).is_empty());
}

#[tokio::test]
async fn bad_messages_are_invalid_argument_and_bad_spans_a_partial_success() {
    let (addr, mut rx) = start(OtlpReceiverSettings::default(), 16).await;
    let err = export(addr, Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])).await.expect_err("garbage");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("protobuf"), "{}", err.message());

    let mut broken = span(5);
    broken.trace_id.clear();
    let answer = export(addr, encode_proto(&request(vec![span(4), broken])).into()).await.expect("partly");
    let partial = ExportTraceServiceResponse::decode(answer).expect("response").partial_success.expect("partial");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("traceId"), "{}", partial.error_message);
    assert_eq!(received(&mut rx).len(), 1);

    let err = call(addr, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", Bytes::new(), None, None)
        .await
        .expect_err("traces only");
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_without_retry_info() {
    let settings = OtlpReceiverSettings { max_request_body_size: ByteSize(4096), ..Default::default() };
    let (addr, mut rx) = start(settings, 16).await;
    let mut big = span(6);
    big.name = "x".repeat(8192);
    let err = export(addr, encode_proto(&request(vec![big.clone()])).into()).await.expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("max_request_body_size"), "{}", err.message());
    assert!(err.get_details_retry_info().is_none(), "not to be sent again");
    // Small once compressed, over the limit once inflated, in either encoding.
    for compression in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let body = encode_proto(&request(vec![big.clone()])).into();
        let err = call(addr, EXPORT, body, None, Some(compression)).await.expect_err("inflated");
        assert_eq!(err.code(), Code::ResourceExhausted, "{compression:?}");
        assert!(err.message().contains("max_request_body_size"), "{}", err.message());
    }
    assert!(received(&mut rx).is_empty());

    // The receiver goes on; a zstd message within the limits is taken.
    let body = encode_proto(&request(vec![span(7)])).into();
    call(addr, EXPORT, body, None, Some(CompressionEncoding::Zstd)).await.expect("zstd");
    let spans = received(&mut rx);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].span, span(7));
}

#[tokio::test]
async fn a_full_pipeline_is_unavailable_with_retry_info() {
    let (addr, mut rx) = start(OtlpReceiverSettings::default(), 1).await;
    let body: Bytes = encode_proto(&request(vec![span(8)])).into();
    export(addr, body.clone()).await.expect("room for one");
    let err = export(addr, body).await.expect_err("full");
    assert_eq!(err.code(), Code::Unavailable);
    let retry = err.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(crate::grpc::RETRY_DELAY));
    assert_eq!(received(&mut rx).len(), 1);
}

#[test]
fn grpc_settings_are_checked() {
    let same =
        OtlpReceiverSettings { grpc: Some(GrpcSettings { endpoint: "127.0.0.1:4318".into() }), ..Default::default() };
    let e = same.check(Path::new(".")).expect_err("one port, two protocols");
    assert_eq!(e.key, "grpc");
    assert!(e.message.contains("own port"), "{}", e.message);
    let bad = OtlpReceiverSettings { grpc: Some(GrpcSettings { endpoint: "4317".into() }), ..Default::default() };
    assert_eq!(bad.check(Path::new(".")).expect_err("no host").key, "grpc");
}
