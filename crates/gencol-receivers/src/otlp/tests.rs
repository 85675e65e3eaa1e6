//! The `otlp` receiver over real HTTP: both encodings, gzip, and the OTLP/HTTP answers.

use std::net::SocketAddr;

use gencol_config::ByteSize;
use gencol_engine::{CancellationToken, PipelineMessage};
use gencol_model::SpanItem;
use gencol_model::attributes as attr;
use gencol_model::budget::MemoryBudget;
use gencol_model::otlp::{encode_json, encode_proto};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;
use tokio::sync::mpsc;

use super::OtlpReceiverConfig;
use super::config::OtlpReceiverSettings;
use super::service::RpcStatus;
use crate::settings::AuthSettings;
use crate::test_support::{Answer, drain, gzip, pipeline, post, raw_request};

const PATH: &str = "/v1/traces";
const JSON: (&str, &str) = ("content-type", "application/json");
const PROTO: (&str, &str) = ("content-type", "application/x-protobuf");

async fn start_with(settings: OtlpReceiverSettings, capacity: usize) -> (SocketAddr, mpsc::Receiver<PipelineMessage>) {
    start_with_memory(settings, capacity, MemoryBudget::new(256 << 20)).await
}

async fn start_with_memory(
    settings: OtlpReceiverSettings,
    capacity: usize,
    memory: MemoryBudget,
) -> (SocketAddr, mpsc::Receiver<PipelineMessage>) {
    let settings = OtlpReceiverSettings { endpoint: "127.0.0.1:0".into(), ..settings };
    let config = OtlpReceiverConfig {
        id: "otlp/test".into(),
        checked: settings.check(std::path::Path::new(".")).expect("valid settings"),
    };
    let (consumer, rx) = pipeline(capacity);
    // Dropped tokens never cancel: the server lives as long as the test's runtime.
    let (addr, _, _task) = config.bind(consumer, memory, CancellationToken::new()).await.expect("bind");
    (addr, rx)
}

async fn start() -> (SocketAddr, mpsc::Receiver<PipelineMessage>) {
    start_with(OtlpReceiverSettings::default(), 16).await
}

pub(super) fn span(n: u8) -> Span {
    Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        parent_span_id: vec![0xab; 8],
        name: format!("chat gpt-4o #{n}"),
        kind: 3,
        start_time_unix_nano: 1_764_000_000_000_000_000,
        end_time_unix_nano: 1_764_000_001_250_000_000,
        attributes: vec![
            attr::string("gen_ai.request.model", "openai/gpt-4o"),
            attr::int("gen_ai.usage.input_tokens", 1200),
            attr::double("gen_ai.usage.total_cost", 0.0105),
            attr::boolean("gen_ai.request.stream", false),
        ],
        ..Default::default()
    }
}

pub(super) fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr::string("service.name", "openrouter")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "broadcast".into(),
                    version: "1".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
    }
}

pub(super) fn received(rx: &mut mpsc::Receiver<PipelineMessage>) -> Vec<SpanItem> {
    drain(rx).into_iter().flat_map(|m| m.items).collect()
}

fn rpc_status(a: &Answer) -> RpcStatus {
    RpcStatus::decode(a.body.as_ref()).expect("a google.rpc.Status body")
}

#[tokio::test]
async fn json_and_protobuf_give_the_same_spans() {
    let (addr, mut rx) = start().await;
    let req = request(vec![span(1), span(2)]);

    let a = post(addr, PATH, &[JSON], encode_json(&req)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.json(), json!({}));
    let from_json = received(&mut rx);

    let a = post(addr, PATH, &[PROTO], encode_proto(&req)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(
        ExportTraceServiceResponse::decode(a.body.as_ref()).expect("response"),
        ExportTraceServiceResponse::default()
    );
    let from_proto = received(&mut rx);

    assert_eq!(from_json.len(), 2);
    assert_eq!(from_proto.len(), 2);
    for (j, p) in from_json.iter().zip(&from_proto) {
        assert_eq!(j.span, p.span);
        assert_eq!(j.origin, p.origin);
        assert!(j.generation.is_none());
    }
    assert_eq!(from_json[0].span, span(1));
    assert_eq!(from_json[0].origin.resource, req.resource_spans[0].resource.clone().expect("resource"));
    assert_eq!(from_json[0].origin.scope.name, "broadcast");
    assert_eq!(from_json[0].origin.resource_schema_url, "https://opentelemetry.io/schemas/1.26.0");
}

#[tokio::test]
async fn gzip_in_both_encodings() {
    let (addr, mut rx) = start().await;
    let req = request(vec![span(3)]);
    let a = post(addr, PATH, &[PROTO, ("content-encoding", "gzip")], gzip(&encode_proto(&req))).await;
    assert_eq!(a.status, 200);
    let a = post(
        addr,
        PATH,
        &[("content-type", "application/json; charset=utf-8"), ("content-encoding", "gzip")],
        gzip(&encode_json(&req)),
    )
    .await;
    assert_eq!(a.status, 200);
    let spans = received(&mut rx);
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].span, spans[1].span);
}

#[tokio::test]
async fn snake_case_json_is_400_and_says_keys_are_camel_case() {
    let (addr, mut rx) = start().await;
    let body = json!({"resource_spans": [{"scope_spans": [{"spans": [{
        "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331", "name": "chat"
    }]}]}]});
    let a = post(addr, PATH, &[JSON], body.to_string()).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let status = a.json();
    assert_eq!(status["code"], 3);
    let message = status["message"].as_str().expect("message");
    assert!(message.contains("camelCase") && message.contains("resourceSpans"), "{message}");
    assert!(received(&mut rx).is_empty());
}

#[tokio::test]
async fn undecodable_bodies_are_400_in_the_request_encoding() {
    let (addr, mut rx) = start().await;
    let a = post(addr, PATH, &[JSON], "{\"resourceSpans\": [").await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["code"], 3);

    let a = post(addr, PATH, &[PROTO], vec![0xff, 0xff, 0xff, 0xff]).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.header("content-type"), Some("application/x-protobuf"));
    let status = rpc_status(&a);
    assert_eq!(status.code, 3);
    assert!(status.message.contains("protobuf"), "{}", status.message);
    assert!(received(&mut rx).is_empty());
}

#[tokio::test]
async fn an_empty_request_is_200_and_feeds_nothing() {
    let (addr, mut rx) = start().await;
    assert_eq!(post(addr, PATH, &[PROTO], Vec::new()).await.status, 200);
    assert!(drain(&mut rx).is_empty(), "no empty batch is sent down the pipeline");
}

#[tokio::test]
async fn spans_without_ids_are_a_partial_success() {
    let (addr, mut rx) = start().await;
    let mut broken = span(5);
    broken.trace_id.clear();
    let req = request(vec![span(4), broken]);
    let a = post(addr, PATH, &[PROTO], encode_proto(&req)).await;
    assert_eq!(a.status, 200);
    let partial =
        ExportTraceServiceResponse::decode(a.body.as_ref()).expect("response").partial_success.expect("partial");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("traceId"));
    assert_eq!(received(&mut rx).len(), 1);

    let a = post(addr, PATH, &[JSON], encode_json(&req)).await;
    assert_eq!(a.status, 200);
    let body: ExportTraceServiceResponse = serde_json::from_slice(&a.body).expect("OTLP/JSON response");
    assert_eq!(body.partial_success.expect("partial").rejected_spans, 1);

    let mut only_broken = span(6);
    only_broken.span_id = vec![0; 8];
    let a = post(addr, PATH, &[PROTO], encode_proto(&request(vec![only_broken]))).await;
    assert_eq!(a.status, 400);
    let message = rpc_status(&a).message;
    assert!(message.contains("a `spanId` that is not 8 bytes (16 hex digits) or is all zero"), "{message}");
    assert!(message.ends_with("`chat gpt-4o #6`: all zero). OTLP/JSON ids are hex strings (`traceId`: 32 digits, `spanId`: 16) under camelCase keys"), "{message}");
    let mut short_trace = span(7);
    short_trace.trace_id = vec![7; 8];
    let a = post(addr, PATH, &[PROTO], encode_proto(&request(vec![short_trace]))).await;
    assert!(rpc_status(&a).message.contains("`chat gpt-4o #7`: 8 bytes"), "{}", rpc_status(&a).message);
}

/// Ids of the wrong length are rejected span by span, with the reason, and never
/// forwarded; the other spans of the request go on (SPEC §2: partial success).
#[tokio::test]
async fn spans_with_ids_of_the_wrong_length_are_rejected_alone() {
    let (addr, mut rx) = start().await;
    let mut three = span(10);
    three.parent_span_id = vec![1, 2, 3];
    let mut five = span(11);
    five.parent_span_id = vec![1, 2, 3, 4, 5];
    let mut bad_link = span(12);
    bad_link.links = vec![Link { trace_id: vec![1; 16], span_id: vec![2; 4], ..Default::default() }];
    let mut root = span(13);
    root.parent_span_id = vec![0; 8];
    let req = request(vec![span(9), three, five, bad_link, root]);
    for (encoding, body) in [(PROTO, encode_proto(&req)), (JSON, encode_json(&req))] {
        let a = post(addr, PATH, &[encoding], body).await;
        assert_eq!(a.status, 200, "{encoding:?}");
        let partial = if encoding == PROTO {
            ExportTraceServiceResponse::decode(a.body.as_ref()).expect("response").partial_success
        } else {
            serde_json::from_slice::<ExportTraceServiceResponse>(&a.body).expect("response").partial_success
        }
        .expect("partial success");
        assert_eq!(partial.rejected_spans, 3);
        let message = &partial.error_message;
        assert!(message.starts_with("3 of 5 span(s) rejected and not forwarded"), "{message}");
        assert!(
            message.contains("2 with a `parentSpanId` that is neither empty (a root span) nor 8 bytes"),
            "{message}"
        );
        assert!(message.contains("(first: span 1 of the request, `chat gpt-4o #10`: 3 bytes)"), "{message}");
        assert!(message.contains("1 with a link whose `spanId` is not 8 bytes or is all zero"), "{message}");
        assert!(message.contains("`chat gpt-4o #12`: 4 bytes"), "{message}");
        let kept = received(&mut rx);
        let ids: Vec<u8> = kept.iter().map(|i| i.span.span_id[0]).collect();
        assert_eq!(ids, [9, 13], "{encoding:?}: the valid spans, the root included");
        assert!(kept[1].span.parent_span_id.is_empty(), "an all-zero parent is sent as none");
    }
}

#[tokio::test]
async fn more_spans_than_allowed_is_413() {
    let settings = OtlpReceiverSettings { max_spans_per_request: 10, ..Default::default() };
    let (addr, mut rx) = start_with(settings, 16).await;
    let req = request((1..=11).map(span).collect());
    for (encoding, body) in [(PROTO, encode_proto(&req)), (JSON, encode_json(&req))] {
        let a = post(addr, PATH, &[encoding], body).await;
        assert_eq!(a.status, 413, "{encoding:?}");
        let status = if encoding == PROTO {
            rpc_status(&a)
        } else {
            serde_json::from_value::<RpcStatusJson>(a.json()).expect("status").into()
        };
        assert_eq!(status.code, 8);
        assert!(status.message.contains("more than 10 spans (max_spans_per_request)"), "{}", status.message);
    }
    let ten = request((1..=10).map(span).collect());
    assert_eq!(post(addr, PATH, &[PROTO], encode_proto(&ten)).await.status, 200);
    assert_eq!(received(&mut rx).len(), 10);
}

#[derive(serde::Deserialize)]
struct RpcStatusJson {
    code: i32,
    message: String,
}

impl From<RpcStatusJson> for RpcStatus {
    fn from(s: RpcStatusJson) -> Self {
        RpcStatus { code: s.code, message: s.message }
    }
}

#[tokio::test]
async fn refusals_401_404_405_413_415() {
    let settings = OtlpReceiverSettings {
        auth: Some(AuthSettings { bearer_tokens: vec!["otlp-secret".into()] }),
        max_request_body_size: ByteSize(1024),
        ..Default::default()
    };
    let (addr, mut rx) = start_with(settings, 16).await;
    let auth = ("authorization", "Bearer otlp-secret");
    let small = encode_proto(&request(vec![span(7)]));

    let a = post(addr, PATH, &[PROTO], small.clone()).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    assert_eq!(rpc_status(&a).code, 16);
    let a = post(addr, PATH, &[JSON, ("authorization", "Bearer otlp-secreT")], "{}").await;
    assert_eq!(a.status, 401);
    assert!(!String::from_utf8_lossy(&a.body).contains("otlp-secre"));

    assert_eq!(post(addr, "/v1/logs", &[PROTO, auth], small.clone()).await.status, 404);
    let a = post(addr, PATH, &[("content-type", "text/plain"), auth], "x").await;
    assert_eq!(a.status, 415);
    assert_eq!(a.json()["code"], 3);
    assert_eq!(post(addr, PATH, &[auth], small.clone()).await.status, 415, "Content-Type is required");
    assert_eq!(post(addr, PATH, &[PROTO, auth, ("content-encoding", "br")], small.clone()).await.status, 415);
    // zstd, which the OTLP spec allows, is read.
    let zstd_body = zstd::encode_all(&small[..], 3).expect("in memory");
    assert_eq!(post(addr, PATH, &[PROTO, auth, ("content-encoding", "zstd")], zstd_body).await.status, 200);

    let big = encode_proto(&request((1..40).map(span).collect()));
    assert!(big.len() > 1024);
    let a = post(addr, PATH, &[PROTO, auth], big.clone()).await;
    assert_eq!(a.status, 413);
    assert_eq!(rpc_status(&a).code, 8);
    assert_eq!(post(addr, PATH, &[PROTO, auth, ("content-encoding", "gzip")], gzip(&big)).await.status, 413);
    let raw = raw_request(addr, "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer otlp-secret\r\ncontent-length: 999999\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");

    let mut client = crate::test_support::Client::connect(addr).await;
    let get =
        http::Request::get(PATH).header("host", "x").header(auth.0, auth.1).body(Default::default()).expect("request");
    let a = client.send(get).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("POST"));

    assert_eq!(post(addr, PATH, &[PROTO, auth], small).await.status, 200);
    assert_eq!(received(&mut rx).len(), 2, "the zstd body and this one; nothing refused");
}

#[tokio::test]
async fn a_full_pipeline_is_503_with_retry_after() {
    let (addr, mut rx) = start_with(OtlpReceiverSettings::default(), 1).await;
    let body = encode_proto(&request(vec![span(8)]));
    assert_eq!(post(addr, PATH, &[PROTO], body.clone()).await.status, 200);
    let a = post(addr, PATH, &[PROTO], body.clone()).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(rpc_status(&a).code, 14);
    let a = post(addr, PATH, &[JSON], encode_json(&request(vec![span(9)]))).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json(), json!({"code": 14, "message": "pipeline full, retry"}));
    assert_eq!(received(&mut rx).len(), 1, "only the first request was kept");
}

#[test]
fn settings_defaults() {
    let d = OtlpReceiverSettings::default();
    assert_eq!(d.endpoint, "127.0.0.1:4318");
    assert_eq!(d.max_request_body_size, ByteSize(10 * 1024 * 1024));
    assert_eq!(d.max_spans_per_request, 20_000);
    let e = OtlpReceiverSettings { max_spans_per_request: 0, ..Default::default() }
        .check(std::path::Path::new("."))
        .expect_err("zero");
    assert_eq!(e.key, "max_spans_per_request");
}
