//! End to end: generations posted to the real gencol binary come out at a real OTLP
//! sink (decoded with opentelemetry-proto) as exactly the spans of SPEC §3–4.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use gencol_testkit::{OtlpSink, ReceivedSpan};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn by_name(spans: &[ReceivedSpan]) -> BTreeMap<String, ReceivedSpan> {
    spans.iter().map(|s| (s.span.name.clone(), s.clone())).collect()
}

/// Every attribute as a comparable (key → value) map.
fn attrs(s: &ReceivedSpan) -> BTreeMap<String, Value> {
    s.span
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().and_then(|v| v.value).expect("value set")))
        .collect()
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

#[tokio::test]
async fn ramp_seed_gives_the_documented_spans_ids_and_attributes() {
    let sink = OtlpSink::start().await.unwrap();
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "300ms", "", ""));
    let record = example("ramp-seed.json");
    let (status, body) = post_json(&gencol.generations_url(), &record).await;
    assert_eq!((status, body), (202, json!({"accepted": 1, "rejected": []})));

    let spans = sink.wait_for_spans(2, WAIT).await;
    assert_eq!(spans.len(), 2, "root + generation: {spans:#?}");
    let by = by_name(&spans);
    let root = &by["Expense Processing Pipeline"];
    let gen_span = &by["Analyze Report"];

    let trace = sha_hex("expense_analysis_001", 16);
    assert_eq!(trace, "a5475f808fa6162b8e6ef2f8c7720f77");
    assert_eq!(root.trace_id_hex(), trace);
    assert_eq!(gen_span.trace_id_hex(), trace);
    assert_eq!(root.span_id_hex(), sha_hex(&format!("gencol:root:{trace}:Expense Processing Pipeline"), 8));
    assert_eq!(root.parent_span_id_hex(), None);
    assert_eq!(root.span.kind, 1);
    assert_eq!(gen_span.span_id_hex(), sha_hex("gencol:gen:gen-1795341600-43CzMb3qCVLsC4YzMQ3U", 8));
    assert_eq!(gen_span.parent_span_id_hex(), Some(root.span_id_hex()));
    assert_eq!(gen_span.span.kind, 3);
    // 2026-11-22T10:00:00.000Z .. 10:00:03.118Z
    assert_eq!(gen_span.span.start_time_unix_nano, 1_795_341_600_000_000_000);
    assert_eq!(gen_span.span.end_time_unix_nano, 1_795_341_603_118_000_000);
    assert_eq!(
        (root.span.start_time_unix_nano, root.span.end_time_unix_nano),
        (gen_span.span.start_time_unix_nano, gen_span.span.end_time_unix_nano)
    );
    assert!(root.span.attributes.is_empty());
    assert_eq!(gen_span.resource_attr_str("service.name"), Some("gencol"));
    assert_eq!(gen_span.scope_name(), Some("gencol"));

    let a = attrs(gen_span);
    let expected_scalars: Vec<(&str, Value)> = vec![
        ("gen_ai.operation.name", s("chat")),
        ("gen_ai.provider.name", s("OpenAI")),
        ("gen_ai.system", s("OpenAI")),
        ("gen_ai.request.model", s("openai/gpt-4o")),
        // SPEC §4: the record's `api_key_name` (the seed sends no `api_key_hash`).
        ("api_key.name", s("finance-automation")),
        ("gen_ai.response.model", s("openai/gpt-4o-2024-08-06")),
        ("gen_ai.response.id", s("gen-1795341600-43CzMb3qCVLsC4YzMQ3U")),
        ("gen_ai.response.finish_reason", s("stop")),
        ("gen_ai.request.temperature", Value::DoubleValue(0.2)),
        ("gen_ai.request.max_tokens", Value::IntValue(512)),
        ("gen_ai.usage.input_tokens", Value::IntValue(236)),
        ("gen_ai.usage.output_tokens", Value::IntValue(214)),
        ("gen_ai.usage.total_tokens", Value::IntValue(450)),
        ("gen_ai.usage.input_tokens.cached", Value::IntValue(0)),
        ("gen_ai.usage.cache_read.input_tokens", Value::IntValue(0)),
        ("gen_ai.usage.output_tokens.reasoning", Value::IntValue(0)),
        ("gen_ai.usage.reasoning.output_tokens", Value::IntValue(0)),
        ("gen_ai.usage.total_cost", Value::DoubleValue(0.00273)),
        ("gen_ai.response.time_to_first_chunk", Value::DoubleValue(0.412)),
        ("gen_ai.latency_ms", Value::IntValue(3118)),
        ("user.id", s("user_12345")),
        ("session.id", s("session_abc")),
        ("gen_ai.conversation.id", s("session_abc")),
        ("trace.metadata.department", s("finance")),
        ("trace.metadata.cost_center", s("CC-1234")),
    ];
    for (k, v) in &expected_scalars {
        assert_eq!(a.get(*k), Some(v), "attribute {k}");
    }
    assert_eq!(gen_span.attr_str_array("gen_ai.response.finish_reasons"), Some(vec!["stop"]));
    let input: serde_json::Value = serde_json::from_str(gen_span.attr_str("gen_ai.input.messages").unwrap()).unwrap();
    assert_eq!(input[1]["role"], "user");
    assert!(input[1]["parts"][0]["content"].as_str().unwrap().starts_with("Analyze this expense report"));
    let output: serde_json::Value = serde_json::from_str(gen_span.attr_str("gen_ai.output.messages").unwrap()).unwrap();
    assert_eq!(output[0]["role"], "assistant");
    assert_eq!(output[0]["finish_reason"], "stop");
    assert!(gen_span.attr_str("gen_ai.completion").unwrap().starts_with("Report ER-2026-1147"));
    let prompt: serde_json::Value = serde_json::from_str(gen_span.attr_str("gen_ai.prompt").unwrap()).unwrap();
    assert_eq!(prompt, record["request"]["messages"]);
    // Nothing beyond the table: the reserved trace keys are not metadata.
    let extra: Vec<&String> = a.keys().filter(|k| !expected_scalars.iter().any(|(e, _)| e == k)).collect();
    assert_eq!(
        extra,
        vec![
            "gen_ai.completion",
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.prompt",
            "gen_ai.response.finish_reasons"
        ]
    );
}

#[tokio::test]
async fn raindrop_and_otel_seeds_name_their_spans_from_the_trace_keys() {
    let sink = OtlpSink::start().await.unwrap();
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "300ms", "", ""));
    for name in ["raindrop-seed.json", "otlp-seed.json"] {
        let (status, _) = post_json(&gencol.generations_url(), &example(name)).await;
        assert_eq!(status, 202);
    }
    let spans = sink.wait_for_spans(4, WAIT).await;
    let by = by_name(&spans);
    assert_eq!(by.len(), 4, "{:?}", by.keys());

    // Raindrop seed: no trace_id, no generation_name: the trace id comes from the generation id,
    // and the generation span is named after the model.
    let rd = example("raindrop-seed.json");
    let rd_id = rd["id"].as_str().unwrap();
    let time_check = &by["Time Check"];
    let rd_gen = &by["anthropic/claude-sonnet-4"];
    let rd_trace = sha_hex(&format!("gencol:trace:{rd_id}"), 16);
    assert_eq!(time_check.trace_id_hex(), rd_trace);
    assert_eq!(rd_gen.parent_span_id_hex(), Some(time_check.span_id_hex()));
    assert_eq!(time_check.span_id_hex(), sha_hex(&format!("gencol:root:{rd_trace}:Time Check"), 8));
    assert_eq!(rd_gen.attr_str("trace.metadata.feature"), Some("assistant"));
    assert_eq!(rd_gen.attr_str("user.id"), Some("user_35"));

    // OpenTelemetry Collector seed.
    let chat = &by["Chat Handler"];
    let gen_span = &by["Generate Response"];
    let trace = sha_hex("app_trace_001", 16);
    assert_eq!(chat.trace_id_hex(), trace);
    assert_eq!(gen_span.parent_span_id_hex(), Some(chat.span_id_hex()));
    assert_eq!(gen_span.attr_str("trace.metadata.environment"), Some("staging"));
    assert_eq!(gen_span.attr_str("trace.metadata.deployment"), Some("us-east-1"));
    assert_eq!(gen_span.attr_str("session.id"), Some("session_abc"));
}

#[tokio::test]
async fn one_trace_within_the_window_gives_one_root_spanning_all_generations() {
    let sink = OtlpSink::start().await.unwrap();
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "1s", "", ""));
    let starts = ["2026-11-22T10:00:05.000Z", "2026-11-22T10:00:00.000Z", "2026-11-22T10:00:02.000Z"];
    let ends = ["2026-11-22T10:00:06.000Z", "2026-11-22T10:00:01.000Z", "2026-11-22T10:00:09.500Z"];
    for i in 0..3 {
        let mut g = generation(&format!("gen-window-{i}"));
        g["created_at"] = json!(starts[i]);
        g["completed_at"] = json!(ends[i]);
        g["request"]["trace"] = json!({"trace_id": "order_flow_7", "trace_name": "Order Flow", "span_name": "Plan"});
        let (status, _) = post_json(&gencol.generations_url(), &g).await;
        assert_eq!(status, 202);
    }
    sink.wait_for_spans(5, WAIT).await;
    // Give a duplicate root the chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = sink.spans();
    assert_eq!(
        spans.len(),
        5,
        "1 root + 1 intermediate + 3 generations: {:?}",
        spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
    );
    let roots: Vec<_> = spans.iter().filter(|s| s.span.name == "Order Flow").collect();
    let plans: Vec<_> = spans.iter().filter(|s| s.span.name == "Plan").collect();
    assert_eq!((roots.len(), plans.len()), (1, 1));
    let (root, plan) = (roots[0], plans[0]);
    let trace = sha_hex("order_flow_7", 16);
    assert_eq!(root.span_id_hex(), sha_hex(&format!("gencol:root:{trace}:Order Flow"), 8));
    assert_eq!(plan.span_id_hex(), sha_hex(&format!("gencol:span:{trace}:{}:Plan", root.span_id_hex()), 8));
    assert_eq!(plan.parent_span_id_hex(), Some(root.span_id_hex()));
    for g in spans.iter().filter(|s| s.span.kind == 3) {
        assert_eq!(g.parent_span_id_hex(), Some(plan.span_id_hex()));
        assert_eq!(g.trace_id_hex(), trace);
    }
    let ns = |t: &str| gencol_model_ns(t);
    assert_eq!(root.span.start_time_unix_nano, ns("2026-11-22T10:00:00Z"));
    assert_eq!(root.span.end_time_unix_nano, ns("2026-11-22T10:00:09.5Z"));
    assert_eq!(
        (plan.span.start_time_unix_nano, plan.span.end_time_unix_nano),
        (root.span.start_time_unix_nano, root.span.end_time_unix_nano)
    );

    // A generation after the group was sent attaches to the same ids without re-sending them.
    let mut late = generation("gen-window-late");
    late["request"]["trace"] = json!({"trace_id": "order_flow_7", "trace_name": "Order Flow", "span_name": "Plan"});
    post_json(&gencol.generations_url(), &late).await;
    sink.wait_for_spans(6, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = sink.spans();
    assert_eq!(spans.len(), 6, "only the late generation span is new");
    let late_span = spans
        .iter()
        .find(|s| s.span.name == "openai/gpt-4o" && s.span_id_hex() == sha_hex("gencol:gen:gen-window-late", 8))
        .unwrap();
    assert_eq!(late_span.parent_span_id_hex(), Some(plan.span_id_hex()));
}

fn gencol_model_ns(t: &str) -> u64 {
    let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
    dt.unix_timestamp_nanos() as u64
}

#[tokio::test]
async fn trace_and_parent_ids_hex_and_not_hex() {
    let sink = OtlpSink::start().await.unwrap();
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "200ms", "", ""));
    let cases = [
        ("hex", json!({"trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736", "parent_span_id": "00F067AA0BA902B7"})),
        ("text", json!({"trace_id": "expense_analysis_001", "parent_span_id": "checkout-step-3"})),
        ("zero", json!({"trace_id": "00000000000000000000000000000000", "parent_span_id": "0000000000000000"})),
    ];
    for (id, trace) in &cases {
        let mut g = generation(&format!("gen-ids-{id}"));
        g["request"]["trace"] = trace.clone();
        assert_eq!(post_json(&gencol.generations_url(), &g).await.0, 202);
    }
    let spans = sink.wait_for_spans(3, WAIT).await;
    let find =
        |id: &str| spans.iter().find(|s| s.span_id_hex() == sha_hex(&format!("gencol:gen:gen-ids-{id}"), 8)).unwrap();
    assert_eq!(find("hex").trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(find("hex").parent_span_id_hex().as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(find("text").trace_id_hex(), "a5475f808fa6162b8e6ef2f8c7720f77");
    assert_eq!(find("text").parent_span_id_hex(), Some(sha_hex("checkout-step-3", 8)));
    assert_eq!(find("zero").trace_id_hex(), sha_hex("00000000000000000000000000000000", 16));
    assert_eq!(find("zero").parent_span_id_hex(), Some(sha_hex("0000000000000000", 8)));
}

#[tokio::test]
async fn json_and_protobuf_exports_decode_to_the_same_spans() {
    let json_sink = OtlpSink::start().await.unwrap();
    let proto_sink = OtlpSink::start().await.unwrap();
    let yaml = format!(
        r#"
receivers:
  generations: {{endpoint: "127.0.0.1:{{GEN_PORT}}"}}
processors:
  hierarchy: {{group_window: 200ms}}
  namespace: {{}}
exporters:
  otlp/json: {{endpoint: "{}", encoding: json, compression: none}}
  otlp/proto: {{endpoint: "{}", encoding: proto, compression: gzip}}
service:
  pipelines:
    traces: {{receivers: [generations], processors: [hierarchy, namespace], exporters: [otlp/json, otlp/proto]}}
"#,
        json_sink.url(),
        proto_sink.url()
    );
    let gencol = Gencol::start(&yaml);
    let body: Vec<serde_json::Value> =
        ["ramp-seed.json", "raindrop-seed.json", "otlp-seed.json"].iter().map(|n| example(n)).collect();
    assert_eq!(post_json(&gencol.generations_url(), &json!(body)).await.0, 202);
    let mut a = json_sink.wait_for_spans(6, WAIT).await;
    let mut b = proto_sink.wait_for_spans(6, WAIT).await;
    assert_eq!(a.len(), 6);
    a.sort_by(|x, y| x.span.span_id.cmp(&y.span.span_id));
    b.sort_by(|x, y| x.span.span_id.cmp(&y.span.span_id));
    assert_eq!(a, b);
    let reqs = json_sink.requests();
    assert_eq!(reqs[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(reqs[0].content_encoding, None);
    let reqs = proto_sink.requests();
    assert_eq!(reqs[0].content_type.as_deref(), Some("application/x-protobuf"));
    assert_eq!(reqs[0].content_encoding.as_deref(), Some("gzip"));
}

#[tokio::test]
async fn privacy_masks_an_email_in_metadata_and_in_a_message() {
    let sink = OtlpSink::start().await.unwrap();
    let privacy = "  privacy:\n    patterns: [email]\n    custom: [{name: ticket, regex: \"TCK-[0-9]{6}\"}]\n";
    let gencol = Gencol::start(&pipeline_to_sink(&sink.url(), "200ms", privacy, ""));
    let mut g = generation("gen-private");
    g["request"]["messages"] =
        json!([{"role": "user", "content": "Mail jane.doe@example.com about TCK-123456 please"}]);
    g["request"]["trace"] = json!({"owner": "ops lead <lead@example.org>", "nested": {"contact": "bob@example.net"}});
    assert_eq!(post_json(&gencol.generations_url(), &g).await.0, 202);
    let spans = sink.wait_for_spans(1, WAIT).await;
    let span = &spans[0];
    assert_eq!(span.attr_str("trace.metadata.owner"), Some("ops lead <[REDACTED:email]>"));
    assert_eq!(span.attr_str("trace.metadata.nested.contact"), Some("[REDACTED:email]"));
    let input = span.attr_str("gen_ai.input.messages").unwrap();
    let parsed: serde_json::Value = serde_json::from_str(input).expect("masked content is still JSON");
    assert_eq!(parsed[0]["parts"][0]["content"], "Mail [REDACTED:email] about [REDACTED:ticket] please");
    let all_text = format!("{:?}", span.span.attributes);
    assert!(!all_text.contains("jane.doe@example.com") && !all_text.contains("bob@example.net"));
}

#[tokio::test]
async fn privacy_mode_strips_content_for_one_exporter_only() {
    let open = OtlpSink::start().await.unwrap();
    let private = OtlpSink::start().await.unwrap();
    let yaml = format!(
        r#"
receivers:
  generations: {{endpoint: "127.0.0.1:{{GEN_PORT}}"}}
processors:
  namespace: {{}}
exporters:
  otlp/open: {{endpoint: "{}"}}
  otlp/private: {{endpoint: "{}", privacy_mode: true}}
service:
  pipelines:
    traces: {{receivers: [generations], processors: [namespace], exporters: [otlp/open, otlp/private]}}
"#,
        open.url(),
        private.url()
    );
    let gencol = Gencol::start(&yaml);
    assert_eq!(post_json(&gencol.generations_url(), &example("ramp-seed.json")).await.0, 202);
    let a = open.wait_for_spans(1, WAIT).await;
    let b = private.wait_for_spans(1, WAIT).await;
    for key in ["gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.prompt", "gen_ai.completion"] {
        assert!(a[0].attr(key).is_some(), "{key} kept for the open destination");
        assert!(b[0].attr(key).is_none(), "{key} removed for the private destination");
    }
    assert_eq!(b[0].attr_i64("gen_ai.usage.total_tokens"), Some(450));
    assert_eq!(b[0].attr_str("trace.metadata.department"), Some("finance"));
    // Without hierarchy, the generation is one span with no parent.
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].parent_span_id_hex(), None);
}
