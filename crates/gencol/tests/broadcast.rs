//! End to end: the shipped `pipelines/broadcast-all.yaml` fans one generation out to an
//! OTLP backend, Ramp and Raindrop (each a test destination on 127.0.0.1). Everyone gets
//! it; only Raindrop, in privacy mode, gets it without content; no key reaches a log. Its
//! fourth destination takes a 10% sample of traces: only a trace the rule keeps reaches it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use gencol_testkit::{OtlpSink, RaindropSink, ReceivedSpan, SinkOptions};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);
const OTLP_AUTH: &str = "Bearer otlp-Tok3n-abcdef";
const RAMP_KEY: &str = "rk_live_Broadcast4242";
const RAINDROP_KEY: &str = "rd_write_Broadcast8888";
const CONTENT_KEYS: [&str; 4] =
    ["gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.prompt", "gen_ai.completion"];

fn pipeline() -> PathBuf {
    repo_root().join("pipelines/broadcast-all.yaml")
}

struct Destinations {
    otlp: OtlpSink,
    sampled: OtlpSink,
    ramp: OtlpSink,
    raindrop: RaindropSink,
}

impl Destinations {
    async fn start() -> Destinations {
        Destinations {
            otlp: OtlpSink::start_with(SinkOptions::default().expect_header("authorization", OTLP_AUTH)).await.unwrap(),
            sampled: OtlpSink::start().await.unwrap(),
            ramp: OtlpSink::start_with(SinkOptions::ramp(RAMP_KEY)).await.unwrap(),
            raindrop: RaindropSink::start(RAINDROP_KEY).await.unwrap(),
        }
    }

    /// The variables the pipeline's header comment tells users to set.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OTLP_ENDPOINT", self.otlp.url()),
            ("OTLP_AUTH", OTLP_AUTH.to_owned()),
            ("SAMPLED_OTLP_ENDPOINT", self.sampled.url()),
            ("RAMP_API_KEY", RAMP_KEY.to_owned()),
            ("RAMP_BASE_URL", self.ramp.url()),
            ("RAINDROP_WRITE_KEY", RAINDROP_KEY.to_owned()),
            ("RAINDROP_BASE_URL", self.raindrop.url()),
        ]
    }
}

fn assert_no_secret(logs: &str) {
    for secret in [OTLP_AUTH, "otlp-Tok3n-abcdef", RAMP_KEY, RAINDROP_KEY] {
        assert!(!logs.contains(secret), "a secret is in the logs:\n{logs}");
    }
}

fn generation_span(spans: &[ReceivedSpan]) -> &ReceivedSpan {
    spans.iter().find(|s| s.span.name == "Analyze Report").unwrap_or_else(|| panic!("no generation span: {spans:#?}"))
}

#[tokio::test]
async fn one_generation_reaches_all_three_and_only_raindrop_lacks_content() {
    let d = Destinations::start().await;
    let env = d.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let overrides = "receivers:\n  generations:\n    endpoint: 127.0.0.1:{GEN_PORT}\nprocessors:\n  hierarchy:\n    group_window: 300ms\nservice:\n  shutdown_timeout: 5s\n";
    let mut gencol = Gencol::start_configs(&[&pipeline()], overrides, &["--log-level", "debug"], &env);

    let record = example("ramp-seed.json");
    let (status, body) = post_json(&gencol.generations_url(), &record).await;
    assert_eq!((status, body), (202, json!({"accepted": 1, "rejected": []})));

    // OTLP and Ramp: the same span tree, content included.
    for (name, sink) in [("otlp", &d.otlp), ("ramp", &d.ramp)] {
        let spans = sink.wait_for_spans(2, WAIT).await;
        assert_eq!(spans.len(), 2, "{name}: root + generation: {spans:#?}");
        let g = generation_span(&spans);
        assert_eq!(g.trace_id_hex(), "a5475f808fa6162b8e6ef2f8c7720f77", "{name}");
        assert_eq!(g.attr_str("user.id"), Some("user_12345"), "{name}");
        assert_eq!(g.attr_str("session.id"), Some("session_abc"), "{name}");
        assert_eq!(g.attr_str("trace.metadata.department"), Some("finance"), "{name}");
        assert_eq!(g.attr_f64("gen_ai.usage.total_cost"), Some(0.00273), "{name}");
        for key in CONTENT_KEYS {
            assert!(g.attr_str(key).is_some(), "{name} gets {key}");
        }
    }
    assert!(d.otlp.requests().iter().all(|r| r.header("authorization") == Some(OTLP_AUTH)));
    let ramp_auth = format!("Bearer {RAMP_KEY}");
    assert!(d.ramp.requests().iter().all(|r| r.header("authorization") == Some(ramp_auth.as_str())));

    // Raindrop: one event, usage and metadata, no input or output.
    let events = d.raindrop.wait_for_events(1, WAIT).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["event_id"], record["id"]);
    assert_eq!(event["user_id"], "user_12345");
    assert_eq!(event["ai_data"]["convo_id"], "session_abc");
    assert_eq!(event["properties"]["department"], "finance");
    assert_eq!(event["properties"]["cost_center"], "CC-1234");
    assert_eq!(event["properties"]["total_cost"], 0.00273);
    assert_eq!(event["properties"]["prompt_tokens"], 236);
    assert!(event["ai_data"].get("input").is_none() && event["ai_data"].get("output").is_none(), "{event:#}");
    let text = event.to_string();
    assert!(!text.contains("expense auditor") && !text.contains("ER-2026-1147"), "content reached Raindrop: {text}");
    assert!(
        d.raindrop.requests().iter().all(|r| r.header("authorization") == Some(&*format!("Bearer {RAINDROP_KEY}")))
    );

    // The sampled destination: the seed's trace (R = 0x6ef2f8c7720f77, 43% of 2^56) is
    // not in a 10% share; a trace whose id ends in 0xff… is in every share, whole.
    let mut kept = example("ramp-seed.json");
    kept["id"] = json!("gen-kept-by-sampling");
    kept["request"]["trace"]["trace_id"] = json!("0123456789abcdef00ffffffffffffff");
    let (status, _) = post_json(&gencol.generations_url(), &kept).await;
    assert_eq!(status, 202);
    let spans = d.sampled.wait_for_spans(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans_now = d.sampled.spans();
    assert_eq!(spans_now.len(), 2, "root + generation of the kept trace only: {spans:#?}");
    assert!(spans_now.iter().all(|s| s.trace_id_hex() == "0123456789abcdef00ffffffffffffff"));
    assert_eq!(d.otlp.wait_for_spans(4, WAIT).await.len(), 4, "the full-rate OTLP backend gets both traces");

    assert!(gencol.stop(), "{}", gencol.stderr());
    assert_no_secret(&format!("{}\n{}", gencol.stdout(), gencol.stderr()));
}

#[tokio::test]
async fn test_connection_passes_for_all_three() {
    let d = Destinations::start().await;
    let env = d.env();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(gencol_bin());
        cmd.arg("test-connection").arg("--config").arg(pipeline()).env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for (line, id) in lines.iter().zip(["otlp/collector", "otlp/sampled", "raindrop", "ramp"]) {
        assert!(line.starts_with(&format!("{id}: ok (")), "{stdout}");
    }
    assert_eq!(d.otlp.requests()[0].header("x-test-connection"), Some("true"));
    assert_eq!(d.sampled.requests()[0].header("x-test-connection"), Some("true"));
    assert_eq!(d.ramp.requests()[0].header("x-test-connection"), Some("true"));
    assert_eq!(d.raindrop.requests()[0].header("x-test-connection"), Some("true"));
    assert_no_secret(&format!("{stdout}{stderr}"));
}

/// A vendor's ready pipeline run as its header says (keys in the environment, the endpoint
/// overridden to a local sink at the vendor's path): the sink checks the path and the
/// credential header; the other headers are checked on every request; no key in a log line.
async fn ready_pipeline(
    file: &str,
    path: &str,
    credential: (&str, &str),
    headers: &[(&str, &str)],
    env: &[(&str, &str)],
) {
    let sink = OtlpSink::start_with(SinkOptions::default().path(path).expect_header(credential.0, credential.1))
        .await
        .unwrap();
    let endpoint = sink.url();
    assert!(endpoint.ends_with(path), "{endpoint}");
    let endpoint_var =
        env.iter().find(|(k, _)| k.ends_with("_ENDPOINT")).map(|(k, _)| *k).expect("an endpoint variable");
    let mut vars: Vec<(&str, &str)> = env.iter().filter(|(k, _)| *k != endpoint_var).copied().collect();
    vars.push((endpoint_var, &endpoint));
    let gencol = Gencol::start_configs(
        &[&repo_root().join("pipelines").join(file)],
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{GEN_PORT}\nprocessors:\n  hierarchy: {group_window: 1s}\n",
        &[],
        &vars,
    );
    let (status, _) = post_json(&gencol.generations_url(), &example("ramp-seed.json")).await;
    assert_eq!(status, 202, "{file}: {}", gencol.stderr());
    let spans = sink.wait_for_spans(2, Duration::from_secs(20)).await;
    assert!(spans.iter().any(|s| s.span.name == "Analyze Report"), "{file}: {spans:#?}");
    for r in sink.requests() {
        assert!(r.is_success(), "{file}: the path and {} were right", credential.0);
        for (name, value) in headers {
            assert_eq!(r.header(name), Some(*value), "{file}: header {name}");
        }
    }
    for log in [gencol.stderr(), gencol.stdout()] {
        for (k, v) in env {
            if !k.ends_with("_ENDPOINT") && v.len() > 8 {
                assert!(!log.contains(v), "{file}: {k} is in the logs:\n{log}");
            }
        }
        assert!(!log.contains(credential.1), "{file}: the credential is in the logs");
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn the_langfuse_pipeline_sends_basic_auth_built_from_the_two_keys() {
    let auth = basic("pk-lf-1234abcd", "sk-lf-5678efgh");
    let env = [
        ("LANGFUSE_PUBLIC_KEY", "pk-lf-1234abcd"),
        ("LANGFUSE_SECRET_KEY", "sk-lf-5678efgh"),
        ("LANGFUSE_OTLP_ENDPOINT", ""),
    ];
    let headers = [("x-langfuse-ingestion-version", "4"), ("content-type", "application/x-protobuf")];
    ready_pipeline("langfuse.yaml", "/api/public/otel/v1/traces", ("authorization", &auth), &headers, &env).await;
}

#[tokio::test]
async fn the_grafana_cloud_pipeline_sends_basic_auth_from_instance_and_token() {
    let auth = basic("123456", "glc_test_token_abcdef");
    let env = [
        ("GRAFANA_INSTANCE_ID", "123456"),
        ("GRAFANA_API_TOKEN", "glc_test_token_abcdef"),
        ("GRAFANA_OTLP_ENDPOINT", ""),
    ];
    ready_pipeline("grafana-cloud.yaml", "/otlp/v1/traces", ("authorization", &auth), &[], &env).await;
}

#[tokio::test]
async fn the_honeycomb_pipeline_sends_the_team_key() {
    let env = [("HONEYCOMB_API_KEY", "hcaik_test_0123456789"), ("HONEYCOMB_OTLP_ENDPOINT", "")];
    let headers = [("content-encoding", "gzip")];
    ready_pipeline("honeycomb.yaml", "/v1/traces", ("x-honeycomb-team", "hcaik_test_0123456789"), &headers, &env).await;
}

#[tokio::test]
async fn the_new_relic_pipeline_sends_the_license_key() {
    let env = [("NEW_RELIC_LICENSE_KEY", "nr-license-0123456789abcdef"), ("NEW_RELIC_OTLP_ENDPOINT", "")];
    ready_pipeline("new-relic.yaml", "/v1/traces", ("api-key", "nr-license-0123456789abcdef"), &[], &env).await;
}

#[tokio::test]
async fn the_datadog_pipeline_sends_the_api_key_to_llm_observability() {
    let env =
        [("DD_API_KEY", "dd-api-0123456789abcdef"), ("DD_LLMOBS_ML_APP", "chatbot"), ("DATADOG_OTLP_ENDPOINT", "")];
    let headers = [("dd-otlp-source", "llmobs"), ("dd-ml-app", "chatbot"), ("content-type", "application/x-protobuf")];
    ready_pipeline("datadog.yaml", "/v1/traces", ("dd-api-key", "dd-api-0123456789abcdef"), &headers, &env).await;
}

#[tokio::test]
async fn the_arize_phoenix_pipeline_sends_the_api_key_as_a_bearer_token() {
    let env = [("PHOENIX_API_KEY", "phx-key-0123456789abcdef"), ("PHOENIX_OTLP_ENDPOINT", "")];
    let headers = [("content-type", "application/x-protobuf")];
    let auth = "Bearer phx-key-0123456789abcdef";
    ready_pipeline("arize-phoenix.yaml", "/s/my-space/v1/traces", ("authorization", auth), &headers, &env).await;
}

#[tokio::test]
async fn the_braintrust_pipeline_sends_the_key_and_the_project_as_parent() {
    let env = [
        ("BRAINTRUST_API_KEY", "bt-key-0123456789abcdef"),
        ("BRAINTRUST_PARENT", "project_name:support-bot"),
        ("BRAINTRUST_OTLP_ENDPOINT", ""),
    ];
    let headers = [("x-bt-parent", "project_name:support-bot")];
    let auth = "Bearer bt-key-0123456789abcdef";
    ready_pipeline("braintrust.yaml", "/otel/v1/traces", ("authorization", auth), &headers, &env).await;
}

#[tokio::test]
async fn the_langsmith_pipeline_sends_the_key_and_the_project() {
    let env = [("LANGSMITH_API_KEY", "lsv2_pt_0123456789abcdef"), ("LANGSMITH_OTLP_ENDPOINT", "")];
    let headers = [("langsmith-project", "gencol")];
    ready_pipeline("langsmith.yaml", "/otel/v1/traces", ("x-api-key", "lsv2_pt_0123456789abcdef"), &headers, &env)
        .await;
}

#[tokio::test]
async fn the_sentry_pipeline_sends_the_public_key_in_x_sentry_auth() {
    let env = [("SENTRY_PUBLIC_KEY", "0123456789abcdef0123456789abcdef"), ("SENTRY_OTLP_ENDPOINT", "")];
    let auth = "sentry sentry_key=0123456789abcdef0123456789abcdef";
    ready_pipeline("sentry.yaml", "/api/4509/integration/otlp/v1/traces", ("x-sentry-auth", auth), &[], &env).await;
}
