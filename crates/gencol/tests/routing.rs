//! End to end: per-destination routing (SPEC §11) through the real binary to real OTLP
//! sinks: `sampling_rate` keeps exactly the traces the consistent rule selects, each
//! whole, in one gencol or two; `api_keys` keeps only listed keys; every filter operator
//! matches and does not; a root released after the group window goes only where its
//! generations went; broken routing configs are refused at their `FILE:LINE:COLUMN`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::*;
use gencol_testkit::{OtlpSink, ReceivedSpan};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// SHA-256 of `key`, hex: what a gateway sends as `api_key_hash`.
fn key_hash(key: &str) -> String {
    sha_hex(key, 32)
}

/// SPEC §11: R = the last 7 bytes of the trace id; kept iff R >= round((1 - rate) · 2^56).
fn kept_at(trace_id_hex: &str, rate: f64) -> bool {
    let bytes = hex::decode(trace_id_hex).expect("hex trace id");
    let mut r = [0u8; 8];
    r[1..].copy_from_slice(&bytes[9..16]);
    u64::from_be_bytes(r) >= ((1.0 - rate) * (1u64 << 56) as f64).round() as u64
}

/// generations → hierarchy → namespace → `exporters` (YAML under `exporters:`, named in
/// `names`); metrics on `metrics_port` when given.
fn config(exporters: &str, names: &[&str], window: &str, metrics_port: Option<u16>) -> String {
    let metrics = metrics_port
        .map(|p| format!("  telemetry:\n    metrics:\n      prometheus: {{endpoint: \"127.0.0.1:{p}\"}}\n"))
        .unwrap_or_default();
    format!(
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{{GEN_PORT}}\nprocessors:\n  hierarchy:\n    group_window: {window}\n  namespace: {{}}\nexporters:\n{exporters}service:\n  shutdown_timeout: 5s\n{metrics}  pipelines:\n    traces:\n      receivers: [generations]\n      processors: [hierarchy, namespace]\n      exporters: [{}]\n",
        names.join(", ")
    )
}

/// An OTLP exporter to `sink` with extra settings (indented under it).
fn otlp(name: &str, sink: &OtlpSink, extra: &str) -> String {
    format!("  otlp/{name}:\n    endpoint: {}\n    retry: {{initial_interval: 100ms}}\n{extra}", sink.url())
}

/// A generation of its own trace, under a root span (SPEC §3: made when `trace_name` is given).
fn rooted(id: &str) -> Value {
    let mut r = generation(id);
    r["request"]["trace"] = json!({"trace_name": "chat"});
    r
}

/// Posts `records` as NDJSON, 200 a request; every request must be taken whole.
async fn post_all(gencol: &Gencol, records: &[Value]) {
    for chunk in records.chunks(200) {
        let body: String = chunk.iter().map(|r| format!("{r}\n")).collect();
        let (status, answer, _) = post(&gencol.generations_url(), "application/x-ndjson", body.into_bytes(), &[]).await;
        assert_eq!(status, 202, "{answer}");
    }
}

/// Per trace id, the span ids a sink holds.
fn traces(spans: &[ReceivedSpan]) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_trace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in spans {
        by_trace.entry(s.trace_id_hex()).or_default().insert(s.span_id_hex());
    }
    by_trace
}

/// Waits until `sink` holds `n` distinct spans, then a little longer, so that one too many
/// would be seen too.
async fn settle(sink: &OtlpSink, n: usize) -> Vec<ReceivedSpan> {
    sink.wait_for_spans(n, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sink.spans()
}

/// The value of `gencol_exporter_dropped_spans_total` for `exporter` and `reason`.
async fn dropped(metrics_port: u16, exporter: &str, reason: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await.ok()?.text().await.ok()?;
    text.lines()
        .filter(|l| l.starts_with("gencol_exporter_dropped_spans_total{"))
        .filter(|l| l.contains(&format!("exporter=\"{exporter}\"")) && l.contains(&format!("reason=\"{reason}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sampled_destination_gets_exactly_the_traces_the_rule_keeps_each_whole() {
    let started = std::time::Instant::now();
    let all = OtlpSink::start().await.unwrap();
    let quarter = OtlpSink::start().await.unwrap();
    let metrics_port = free_port();
    let exporters = format!("{}{}", otlp("all", &all, ""), otlp("quarter", &quarter, "    sampling_rate: 0.25\n"));
    let gencol = Gencol::start(&config(&exporters, &["otlp/all", "otlp/quarter"], "300ms", Some(metrics_port)));
    let records: Vec<Value> = (0..4000).map(|i| rooted(&format!("sampled-{i}"))).collect();
    post_all(&gencol, &records).await;

    // Rate 1 gets everything: 4,000 traces of a generation and its root.
    let everything = traces(&settle(&all, 8000).await);
    assert_eq!(everything.len(), 4000, "{}", gencol.stderr());
    assert!(everything.values().all(|spans| spans.len() == 2));
    let expected: BTreeMap<&String, &BTreeSet<String>> =
        everything.iter().filter(|(trace, _)| kept_at(trace, 0.25)).collect();
    assert!((850..1150).contains(&expected.len()), "about a quarter: {}", expected.len());

    let sampled = traces(&settle(&quarter, 2 * expected.len()).await);
    let got: BTreeMap<&String, &BTreeSet<String>> = sampled.iter().collect();
    assert_eq!(got.len(), expected.len(), "exactly the traces the rule keeps");
    assert_eq!(got, expected, "each kept trace whole (root and generation), and no other");

    // Counted per exporter and reason: every span of the traces left out.
    let left_out = 2 * (4000 - expected.len()) as u64;
    let mut seen = None;
    for _ in 0..50 {
        seen = dropped(metrics_port, "otlp/quarter", "sampled_out").await;
        if seen == Some(left_out) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(left_out));
    assert_eq!(dropped(metrics_port, "otlp/all", "sampled_out").await, Some(0));
    // Said in a line at most every 10 s (one exporter routes), never per span: thousands of
    // spans were left out.
    let lines = gencol.stderr().lines().filter(|l| l.contains("routing:")).count() as u64;
    let at_most = started.elapsed().as_secs() / 10 + 1;
    assert!(lines >= 1 && lines <= at_most, "{lines} routing lines (at most {at_most}):\n{}", gencol.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gencols_with_the_same_config_keep_the_same_traces() {
    let all = OtlpSink::start().await.unwrap();
    let half = OtlpSink::start().await.unwrap();
    let exporters = format!("{}{}", otlp("all", &all, ""), otlp("half", &half, "    sampling_rate: 0.5\n"));
    let yaml = config(&exporters, &["otlp/all", "otlp/half"], "300ms", None);
    let (first, second) = (Gencol::start(&yaml), Gencol::start(&yaml));
    let records: Vec<Value> = (0..2000).map(|i| rooted(&format!("consistent-{i}"))).collect();
    // Disjoint halves of the traffic, one to each.
    let (a, b) = records.split_at(1000);
    tokio::join!(post_all(&first, a), post_all(&second, b));

    let everything = traces(&settle(&all, 4000).await);
    assert_eq!(everything.len(), 2000);
    let expected: BTreeMap<&String, &BTreeSet<String>> =
        everything.iter().filter(|(trace, _)| kept_at(trace, 0.5)).collect();
    let sampled = traces(&settle(&half, 2 * expected.len()).await);
    let got: BTreeMap<&String, &BTreeSet<String>> = sampled.iter().collect();
    assert_eq!(got, expected, "both instances keep by the same rule, whole traces");
    // Each instance kept its share of its own half (not all from one of them).
    let from_first: BTreeSet<String> = a.iter().map(|r| r["id"].as_str().unwrap_or_default().to_owned()).collect();
    let kept_ids: Vec<String> =
        half.spans().iter().filter_map(|s| s.attr_str("gen_ai.response.id").map(str::to_owned)).collect();
    let by_first = kept_ids.iter().filter(|id| from_first.contains(*id)).count();
    assert!(by_first > 300 && kept_ids.len() - by_first > 300, "{by_first} of {}", kept_ids.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_generations_of_listed_api_keys_reach_an_allowlisted_destination() {
    let all = OtlpSink::start().await.unwrap();
    let prod = OtlpSink::start().await.unwrap();
    let prod_hash = key_hash("sk-prod-key");
    let exporters =
        format!("{}{}", otlp("all", &all, ""), otlp("prod", &prod, &format!("    api_keys: [\"{prod_hash}\"]\n")));
    let gencol = Gencol::start(&config(&exporters, &["otlp/all", "otlp/prod"], "200ms", None));
    let mut records = Vec::new();
    for i in 0..10 {
        let mut r = rooted(&format!("prod-{i}"));
        r["api_key_hash"] = json!(prod_hash);
        r["api_key_name"] = json!("prod");
        records.push(r);
        let mut r = rooted(&format!("staging-{i}"));
        r["api_key_hash"] = json!(key_hash("sk-staging-key"));
        records.push(r);
        records.push(rooted(&format!("nokey-{i}")));
    }
    post_all(&gencol, &records).await;
    assert_eq!(traces(&settle(&all, 60).await).len(), 30);
    let spans = settle(&prod, 20).await;
    let ids: BTreeSet<&str> = spans.iter().filter_map(|s| s.attr_str("gen_ai.response.id")).collect();
    let want: BTreeSet<String> = (0..10).map(|i| format!("prod-{i}")).collect();
    assert_eq!(ids, want.iter().map(String::as_str).collect(), "no staging key, no record without a hash");
    assert_eq!(traces(&spans).len(), 10, "and their roots");
    let generation_span = spans.iter().find(|s| s.attr_str("gen_ai.response.id").is_some()).expect("a generation");
    assert_eq!(generation_span.attr_str("api_key.hash"), Some(prod_hash.as_str()));
    assert_eq!(generation_span.attr_str("api_key.name"), Some("prod"));
}

/// The three generations the operator test routes.
fn operator_records() -> Vec<Value> {
    let mut openai = rooted("op-openai");
    openai["api_key_name"] = json!("prod");
    openai["request"]["user"] = json!("u-1");
    openai["request"]["session_id"] = json!("s-1");
    openai["request"]["trace"] = json!({"trace_name": "chat", "tier": "gold", "n": 5});
    openai["response"]["usage"] =
        json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500, "cost": 0.02});

    let mut anthropic = rooted("op-anthropic");
    anthropic["provider"] = json!("Anthropic");
    anthropic["request"]["model"] = json!("anthropic/claude-3.5-sonnet");
    anthropic["response"]["model"] = json!("anthropic/claude-3.5-sonnet");
    anthropic["response"]["choices"][0]["finish_reason"] = json!("length");
    anthropic["response"]["choices"][0]["message"]["content"] = json!("Bonjour.");
    anthropic["response"]["usage"] =
        json!({"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40, "cost": 0.001});

    let mut bare = rooted("op-bare");
    bare.as_object_mut().expect("object").remove("provider");
    bare["request"]["model"] = json!("meta/llama-3-70b");
    bare["response"] = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Yo."}}]});
    vec![openai, anthropic, bare]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operator_matches_and_does_not_on_text_and_number_fields() {
    // (exporter, its filter_rules groups, the generations it must get)
    let cases: Vec<(&str, &str, &[&str])> = vec![
        ("eq-text", r#"[{rules: [{field: model, operator: equals, value: "openai/gpt-4o"}]}]"#, &["openai"]),
        ("eq-number", "[{rules: [{field: total_cost, operator: equals, value: 0.02}]}]", &["openai"]),
        (
            "ne-text",
            r#"[{rules: [{field: model, operator: not_equals, value: "openai/gpt-4o"}]}]"#,
            &["anthropic", "bare"],
        ),
        (
            "ne-number-absent",
            "[{rules: [{field: total_cost, operator: not_equals, value: 0.02}]}]",
            &["anthropic", "bare"],
        ),
        ("contains", "[{rules: [{field: model, operator: contains, value: claude}]}]", &["anthropic"]),
        (
            "not-contains-absent",
            "[{rules: [{field: user_id, operator: not_contains, value: u-}]}]",
            &["anthropic", "bare"],
        ),
        ("regex", r#"[{rules: [{field: model, operator: regex, value: "^(openai|meta)/"}]}]"#, &["openai", "bare"]),
        ("starts-with", "[{rules: [{field: provider, operator: starts_with, value: Open}]}]", &["openai"]),
        ("ends-with", "[{rules: [{field: model, operator: ends_with, value: 70b}]}]", &["bare"]),
        ("gt", "[{rules: [{field: total_cost, operator: gt, value: 0.01}]}]", &["openai"]),
        ("gt-text-field", "[{rules: [{field: model, operator: gt, value: 1}]}]", &[]),
        ("lt", "[{rules: [{field: total_tokens, operator: lt, value: 100}]}]", &["anthropic"]),
        ("gte", "[{rules: [{field: prompt_tokens, operator: gte, value: 1000}]}]", &["openai"]),
        ("lte", "[{rules: [{field: completion_tokens, operator: lte, value: 10}]}]", &["anthropic"]),
        ("exists", "[{rules: [{field: user_id, operator: exists}]}]", &["openai"]),
        ("not-exists", "[{rules: [{field: total_cost, operator: not_exists}]}]", &["bare"]),
        ("absent-equals", "[{rules: [{field: session_id, operator: equals, value: nope}]}]", &[]),
        ("metadata-text", "[{rules: [{field: metadata.tier, operator: equals, value: gold}]}]", &["openai"]),
        ("metadata-number", "[{rules: [{field: metadata.n, operator: gte, value: 5}]}]", &["openai"]),
        (
            "key-session",
            "[{rules: [{field: api_key_name, operator: equals, value: prod}, {field: session_id, operator: equals, value: s-1}]}]",
            &["openai"],
        ),
        ("finish-reason", "[{rules: [{field: finish_reason, operator: equals, value: length}]}]", &["anthropic"]),
        (
            "input-output",
            "[{rules: [{field: input, operator: contains, value: Hello}, {field: output, operator: contains, value: Bonjour}]}]",
            &["anthropic"],
        ),
        (
            "and-fails",
            "[{logic: and, rules: [{field: provider, operator: equals, value: OpenAI}, {field: total_cost, operator: lt, value: 0.01}]}]",
            &[],
        ),
        (
            "or",
            "[{logic: or, rules: [{field: model, operator: contains, value: claude}, {field: model, operator: contains, value: llama}]}]",
            &["anthropic", "bare"],
        ),
        (
            "two-groups",
            "[{rules: [{field: model, operator: starts_with, value: openai/}]}, {rules: [{field: finish_reason, operator: equals, value: length}]}]",
            &["openai", "anthropic"],
        ),
        (
            "disabled",
            "[{rules: [{field: model, operator: equals, value: none}]}]\n      enabled: false",
            &["openai", "anthropic", "bare"],
        ),
    ];
    let sink = OtlpSink::start().await.unwrap();
    let mut exporters = String::new();
    let mut names = Vec::new();
    for (name, groups, _) in &cases {
        exporters += &otlp(
            name,
            &sink,
            &format!("    headers: {{x-route: {name}}}\n    filter_rules:\n      groups: {groups}\n"),
        );
        names.push(format!("otlp/{name}"));
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let gencol = Gencol::start(&config(&exporters, &names, "200ms", None));
    post_all(&gencol, &operator_records()).await;

    let want_spans: usize = cases.iter().map(|(_, _, want)| 2 * want.len()).sum();
    settle(&sink, want_spans).await;
    let requests = sink.requests();
    for (name, groups, want) in &cases {
        let spans: Vec<ReceivedSpan> = requests
            .iter()
            .filter(|r| r.is_success() && r.header("x-route") == Some(*name))
            .flat_map(|r| r.spans())
            .collect();
        let got: BTreeSet<String> = spans
            .iter()
            .filter_map(|s| s.attr_str("gen_ai.response.id"))
            .map(|id| id.trim_start_matches("op-").to_owned())
            .collect();
        let want: BTreeSet<String> = want.iter().map(|w| w.to_string()).collect();
        assert_eq!(got, want, "exporter {name} with groups {groups}");
        assert_eq!(spans.len(), 2 * want.len(), "exporter {name}: each generation with its root, nothing else");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_released_after_the_group_window_goes_only_where_its_generations_went() {
    let all = OtlpSink::start().await.unwrap();
    let openai = OtlpSink::start().await.unwrap();
    let rules = "    filter_rules:\n      groups: [{rules: [{field: model, operator: starts_with, value: openai/}]}]\n";
    let exporters = format!("{}{}", otlp("all", &all, ""), otlp("openai", &openai, rules));
    let gencol = Gencol::start(&config(&exporters, &["otlp/all", "otlp/openai"], "1s", None));
    let in_trace = |id: &str, trace: &str, model: &str| {
        let mut r = generation(id);
        r["request"]["model"] = json!(model);
        r["request"]["trace"] = json!({"trace_id": trace, "trace_name": "conversation"});
        r
    };
    // Trace A: an openai generation and an anthropic one; trace B: anthropic only. Sent in
    // two requests, so the root is released by its window, after both.
    post_all(&gencol, &[in_trace("a-1", "trace-A", "openai/gpt-4o"), in_trace("b-1", "trace-B", "anthropic/claude")])
        .await;
    post_all(&gencol, &[in_trace("a-2", "trace-A", "anthropic/claude")]).await;
    // Three generations and two roots at the destination that takes everything.
    let spans = settle(&all, 5).await;
    let roots: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.attr_str("gen_ai.response.id").is_none()).collect();
    assert_eq!(roots.len(), 2);
    let trace_a = spans.iter().find(|s| s.attr_str("gen_ai.response.id") == Some("a-1")).expect("a-1").trace_id_hex();
    let spans = settle(&openai, 2).await;
    let got: BTreeSet<(String, Option<&str>)> =
        spans.iter().map(|s| (s.trace_id_hex(), s.attr_str("gen_ai.response.id"))).collect();
    let want: BTreeSet<(String, Option<&str>)> = [(trace_a.clone(), Some("a-1")), (trace_a, None)].into();
    assert_eq!(got, want, "a-1 and trace A's root only; nothing of trace B\n{}", gencol.stderr());
}

/// Runs `gencol validate` on `yaml`; returns (exit code, stderr, file path).
fn validate(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(gencol_bin()).arg("validate").arg("--config").arg(&path).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), path.display().to_string())
}

#[test]
fn broken_routing_configs_are_refused_at_their_place() {
    const HEAD: &str =
        "receivers:\n  generations: {}\nexporters:\n  otlp/x:\n    endpoint: http://127.0.0.1:9/v1/traces\n";
    const TAIL: &str = "service:\n  pipelines:\n    traces: {receivers: [generations], exporters: [otlp/x]}\n";
    let rule = |r: &str| format!("    filter_rules:\n      groups:\n        - rules:\n            - {r}\n");
    let raw_key = "sk-or-v1-0123456789abcdef";
    // (settings under the exporter, line, column, message)
    let cases: Vec<(String, u32, u32, &str)> = vec![
        ("    sampling_rate: 0\n".into(), 6, 20, "sampling_rate must be between 0.0001 and 1"),
        ("    sampling_rate: 1.5\n".into(), 6, 20, "sampling_rate must be between 0.0001 and 1"),
        ("    sampling_rate: half\n".into(), 6, 20, "sampling_rate"),
        (format!("    api_keys: [\"{raw_key}\"]\n"), 6, 16, "api_keys[0] is not a SHA-256 hash"),
        (
            rule("{field: modle, operator: equals, value: x}"),
            9,
            23,
            "unknown filter field `modle` (did you mean `model`?)",
        ),
        (
            rule("{field: model, operator: startswith, value: x}"),
            9,
            40,
            "unknown value `startswith`, did you mean `starts_with`?",
        ),
        (
            rule("{field: model, operator: regex, value: \"([a-z\"}"),
            9,
            54,
            "invalid regex `([a-z`: error: unclosed character class",
        ),
        (rule("{field: total_cost, operator: gt, value: \"cheap\"}"), 9, 56, "`gt` on `total_cost` takes a number"),
        (rule("{field: model, operator: equals}"), 9, 15, "needs a `value`"),
        (rule("{field: user_id, operator: exists, value: x}"), 9, 57, "`exists` on `user_id` takes no `value`"),
        ("    filter_rules:\n      groups: []\n".into(), 7, 15, "has no groups"),
        (
            "    filter_rules:\n      groups:\n        - logic: xor\n          rules: []\n".into(),
            8,
            18,
            "unknown value `xor`, did you mean `or`?",
        ),
    ];
    for (settings, line, column, message) in cases {
        let yaml = format!("{HEAD}{settings}{TAIL}");
        let (code, stderr, file) = validate(&yaml);
        assert_ne!(code, 0, "validate must fail:\n{yaml}");
        let want = format!("{file}:{line}:{column}: ");
        let hit = stderr.lines().find(|l| l.starts_with(&want));
        assert!(hit.is_some_and(|l| l.contains(message)), "expected `{want}...{message}` in:\n{stderr}\nfor:\n{yaml}");
        assert!(!stderr.contains(raw_key), "a key pasted into api_keys is never echoed:\n{stderr}");
    }
}
