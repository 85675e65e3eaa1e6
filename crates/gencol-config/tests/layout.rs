//! The layout check and broken configs: every message with its exact place.

use std::time::Duration;

use gencol_config::{ComponentId, Diagnostics, PipelineId, ServiceConfig, load_str};

fn env(name: &str) -> Option<String> {
    match name {
        "GENCOL_TOKEN" => Some("s3cr3t-t0ken".into()),
        "GENCOL_SALT" => Some("pepper".into()),
        _ => None,
    }
}

/// Loads and checks `text` as `c.yaml`; the findings as `validate` prints them.
fn problems(text: &str) -> Vec<String> {
    let result = load_str("c.yaml", text, &env).and_then(|root| ServiceConfig::from_node(&root));
    match result {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(diags) => lines(&diags),
    }
}

fn lines(diags: &Diagnostics) -> Vec<String> {
    diags.iter().map(ToString::to_string).collect()
}

fn check(text: &str) -> ServiceConfig {
    let root = load_str("c.yaml", text, &env).unwrap_or_else(|d| panic!("{d}"));
    ServiceConfig::from_node(&root).unwrap_or_else(|d| panic!("{d}"))
}

/// One problem, the exact line.
fn only(text: &str) -> String {
    let all = problems(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().unwrap_or_default()
}

const SPEC_EXAMPLE: &str = r#"plugins: [./plugins/libgencol_webhook.so]
receivers:
  generations:
    endpoint: 127.0.0.1:4320
    auth: {bearer_tokens: ["${env:GENCOL_TOKEN}"]}
    max_request_body_size: 10MiB
  otlp:
    endpoint: 127.0.0.1:4318
processors:
  hierarchy: {group_window: 5s, remember_for: 10m, max_traces: 100000}
  namespace: {metadata_prefix: "trace.metadata.", user_attribute: user.id, session_attribute: session.id}
  privacy:
    drop_content: false
    patterns: [email, phone, credit_card, api_key, ip]
    custom: [{name: ticket, regex: "TCK-[0-9]{6}"}]
    hash_user_id: false
    salt: "${env:GENCOL_SALT}"
exporters:
  otlp/axiom: {endpoint: "https://api.axiom.co", headers: {}, encoding: json, compression: gzip, timeout: 10s}
  debug:
service:
  shutdown_timeout: 3s
  telemetry:
    logs: {level: debug, format: json}
  pipelines:
    traces:
      receivers: [generations]
      processors: [hierarchy, namespace]
      exporters: [otlp/axiom, debug]
    traces/raw:
      receivers: [generations, otlp]
      exporters: [debug]
"#;

#[test]
fn the_spec_example_is_accepted() {
    let config = check(SPEC_EXAMPLE);
    assert_eq!(config.plugins.len(), 1);
    assert_eq!(config.plugins[0].value, "./plugins/libgencol_webhook.so");
    assert_eq!(config.plugins[0].loc.line, 1);
    let ids =
        |entries: &[gencol_config::ComponentEntry]| entries.iter().map(|e| e.id.value.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&config.receivers), ["generations", "otlp"]);
    assert_eq!(ids(&config.processors), ["hierarchy", "namespace", "privacy"]);
    assert_eq!(ids(&config.exporters), ["otlp/axiom", "debug"]);
    assert_eq!(config.exporters[0].id.value, ComponentId { kind: "otlp".into(), name: Some("axiom".into()) });
    assert_eq!(config.exporters[0].id.loc.line, 19);
    assert!(config.exporters[1].config.value.is_null());
    assert_eq!(config.shutdown_timeout, Duration::from_secs(3));
    assert_eq!(config.log_level.as_deref(), Some("debug"));
    assert_eq!(config.log_format.as_deref(), Some("json"));
    assert_eq!(config.pipelines.len(), 2);
    let main = &config.pipelines[0];
    assert_eq!(main.id.value, PipelineId::parse("traces").unwrap());
    assert_eq!(main.id.loc.line, 26);
    assert_eq!(main.processors.iter().map(|p| p.value.to_string()).collect::<Vec<_>>(), ["hierarchy", "namespace"]);
    assert_eq!(main.exporters[0].loc.line, 29);
    let raw = &config.pipelines[1];
    assert_eq!(raw.id.value.to_string(), "traces/raw");
    assert!(raw.processors.is_empty());
    assert_eq!(config.root.line, 1);
}

#[test]
fn defaults_when_unwritten() {
    let config = check(
        "exporters: {debug: }\nreceivers: {otlp: }\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n",
    );
    assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(config.max_inflight_memory, 256 * 1024 * 1024);
    assert_eq!((config.log_level, config.log_format), (None, None));
    assert!(config.plugins.is_empty());
    assert!(config.processors.is_empty());
}

#[test]
fn component_ids() {
    assert_eq!(ComponentId::parse("otlp"), Ok(ComponentId { kind: "otlp".into(), name: None }));
    assert_eq!(ComponentId::parse("otlp/axiom"), Ok(ComponentId { kind: "otlp".into(), name: Some("axiom".into()) }));
    assert_eq!(ComponentId::parse("my_exp2/a/b").map(|id| id.to_string()), Ok("my_exp2/a/b".into()));
    for bad in ["", "OTLP", "otlp/", "2otlp", "ot-lp", "/name", "otlp/a b"] {
        assert!(ComponentId::parse(bad).is_err(), "{bad:?}");
    }
    assert!(ComponentId::parse("Otlp").unwrap_err().contains("lowercase"));
    assert_eq!(PipelineId::parse("traces/x").map(|p| p.to_string()), Ok("traces/x".into()));
    assert!(PipelineId::parse("metrics").unwrap_err().contains("traces only"));
    assert!(PipelineId::parse("trace").unwrap_err().contains("did you mean `traces`?"));
}

// --- Broken configs: each asserts the exact FILE:LINE:COLUMN prefix. ---

const PIPELINE: &str = "service:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n";

#[test]
fn unknown_top_level_key_with_suggestion() {
    let text = format!("recievers:\n  otlp:\n{PIPELINE}");
    assert_eq!(
        only(&text),
        "c.yaml:1:1: unknown key `recievers`, did you mean `receivers`? \
         (expected one of: plugins, extensions, receivers, processors, exporters, service)"
    );
}

#[test]
fn duplicate_key_points_at_the_second() {
    let text = format!("exporters:\n  debug:\n  debug:\n{PIPELINE}");
    assert_eq!(only(&text), "c.yaml:3:3: duplicate key `debug`: a key may appear only once in a map");
}

#[test]
fn yaml_syntax_error() {
    let line = only("receivers:\n  otlp: {endpoint: [oops}\n");
    assert!(line.starts_with("c.yaml:2:"), "{line}");
    assert!(line.contains("invalid YAML"), "{line}");
    let line = only("receivers:\n\totlp:\n");
    assert!(line.starts_with("c.yaml:2:"), "{line}");
}

#[test]
fn metrics_pipeline_says_traces_only() {
    let text = "service:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n    metrics:\n      receivers: [otlp]\n      exporters: [debug]\n";
    assert_eq!(
        only(text),
        "c.yaml:4:5: service.pipelines: pipeline `metrics`: gencol carries traces only; \
         name the pipeline `traces` or `traces/NAME`"
    );
}

#[test]
fn pipeline_without_exporters() {
    let text = "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n";
    assert_eq!(only(text), "c.yaml:3:5: pipeline `traces` has no exporters: add at least one");
}

#[test]
fn pipeline_with_empty_receivers() {
    let text = "service:\n  pipelines:\n    traces/a:\n      receivers: []\n      exporters: [debug]\n";
    assert_eq!(only(text), "c.yaml:4:18: pipeline `traces/a` has no receivers: add at least one");
}

#[test]
fn empty_pipeline_lacks_both() {
    let text = "service:\n  pipelines:\n    traces:\n";
    assert_eq!(
        problems(text),
        [
            "c.yaml:3:5: pipeline `traces` has no receivers: add at least one",
            "c.yaml:3:5: pipeline `traces` has no exporters: add at least one",
        ]
    );
}

#[test]
fn same_component_twice_in_one_list() {
    let text =
        "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug, otlp/a, debug]\n";
    assert_eq!(only(text), "c.yaml:5:34: pipeline `traces` lists `debug` twice in exporters: remove one");
}

#[test]
fn unknown_pipeline_key() {
    let text = "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporter: [debug]\n      exporters: [debug]\n";
    assert_eq!(
        only(text),
        "c.yaml:5:7: service.pipelines.traces: unknown key `exporter`, did you mean `exporters`? \
         (expected one of: receivers, processors, exporters)"
    );
}

#[test]
fn missing_pipelines_is_reported_at_the_root() {
    assert_eq!(only("receivers:\n  otlp:\n"), "c.yaml:1:1: no pipelines: add service.pipelines.traces");
    assert_eq!(only(""), "c.yaml:1:1: no pipelines: add service.pipelines.traces");
    assert_eq!(only("service:\n  shutdown_timeout: 5s\n"), "c.yaml:1:1: no pipelines: add service.pipelines.traces");
    assert_eq!(only("service:\n  pipelines: {}\n"), "c.yaml:2:14: no pipelines: add service.pipelines.traces");
}

#[test]
fn invalid_component_ids() {
    let text = format!("exporters:\n  OTLP/x: {{}}\n  otlp/: {{}}\n{PIPELINE}");
    assert_eq!(
        problems(&text),
        [
            "c.yaml:2:3: exporters: invalid component id `OTLP/x`: the type `OTLP` must be lowercase letters, \
             digits and `_`, starting with a letter",
            "c.yaml:3:3: exporters: invalid component id `otlp/`: the name after `/` is empty",
        ]
    );
    let text = "service:\n  pipelines:\n    traces: {receivers: [Otlp], exporters: [debug, 5]}\n";
    let all = problems(text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all[0].starts_with("c.yaml:3:26: pipeline `traces`: invalid component id `Otlp`"), "{}", all[0]);
    assert_eq!(all[1], "c.yaml:3:52: pipeline `traces`: exporters lists an integer, expected a component id");
}

#[test]
fn shutdown_timeout_without_unit() {
    let text = "service:\n  shutdown_timeout: 10\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n";
    assert_eq!(
        only(text),
        "c.yaml:2:21: service.shutdown_timeout: duration `10` has no unit: add one, e.g. `10s` or `10ms`"
    );
}

#[test]
fn bad_telemetry() {
    let text = format!(
        "{PIPELINE}  telemetry:\n    logs: {{level: verbose, format: jsn, colour: no}}\n    metrics: {{level: none}}\n"
    );
    assert_eq!(
        problems(&text),
        [
            "c.yaml:5:19: service.telemetry.logs.level: unknown level `verbose` \
             (expected one of: trace, debug, info, warn, error)",
            "c.yaml:5:36: service.telemetry.logs.format: unknown format `jsn`, did you mean `json`? \
             (expected one of: text, json)",
            "c.yaml:5:41: service.telemetry.logs: unknown key `colour` (expected one of: level, format)",
            "c.yaml:6:15: service.telemetry.metrics: unknown key `level` (expected one of: prometheus, otlp)",
        ]
    );
}

#[test]
fn service_limits() {
    let config = check(&format!("{PIPELINE}  limits: {{max_inflight_memory: 64MiB}}\n"));
    assert_eq!(config.max_inflight_memory, 64 * 1024 * 1024);
    let text = format!("{PIPELINE}  limits:\n    max_inflight_memory: 0\n    max_memory: 1GiB\n    \n");
    assert_eq!(
        problems(&text),
        [
            "c.yaml:5:26: service.limits.max_inflight_memory must be larger than 0 (e.g. 256MiB): requests hold \
             their bodies in it",
            "c.yaml:6:5: service.limits: unknown key `max_memory` (expected one of: max_inflight_memory)",
        ]
    );
    let text = format!("{PIPELINE}  limits: {{max_inflight_memory: lots}}\n");
    assert_eq!(
        only(&text),
        "c.yaml:4:33: service.limits.max_inflight_memory: invalid size \"lots\": write a number of bytes (4096) or a \
         number with a unit (512KiB, 10MiB, 1GB)"
    );
}

#[test]
fn metrics_settings() {
    let text = format!(
        "{PIPELINE}  telemetry:\n    metrics:\n      prometheus: {{endpoint: 0.0.0.0:9464}}\n      otlp:\n        endpoint: https://otlp.example.com/v1/metrics\n        headers: {{x-api-key: \"${{env:GENCOL_TOKEN}}\"}}\n        interval: 5s\n"
    );
    let config = check(&text);
    assert_eq!(config.metrics.prometheus.as_deref(), Some("0.0.0.0:9464"));
    let otlp = config.metrics.otlp.expect("otlp push configured");
    assert_eq!(otlp.endpoint, "https://otlp.example.com/v1/metrics");
    assert_eq!(otlp.headers.get("x-api-key").map(String::as_str), Some("s3cr3t-t0ken"));
    assert_eq!(otlp.interval, Duration::from_secs(5));
    assert!(!format!("{otlp:?}").contains("s3cr3t"), "header values are secrets: {otlp:?}");
}

#[test]
fn metrics_defaults() {
    let config = check(&format!(
        "{PIPELINE}  telemetry:\n    metrics:\n      prometheus:\n      otlp: {{endpoint: http://127.0.0.1:4318/v1/metrics}}\n"
    ));
    assert_eq!(config.metrics.prometheus.as_deref(), Some("127.0.0.1:8888"));
    let otlp = config.metrics.otlp.expect("otlp push configured");
    assert_eq!(otlp.interval, Duration::from_secs(30));
    assert!(otlp.headers.is_empty());
    let none = check(PIPELINE);
    assert!(none.metrics.prometheus.is_none() && none.metrics.otlp.is_none());
}

#[test]
fn bad_metrics_endpoint() {
    let text = format!("{PIPELINE}  telemetry:\n    metrics:\n      prometheus: {{endpoint: localhost}}\n");
    assert_eq!(
        only(&text),
        "c.yaml:6:30: service.telemetry.metrics.prometheus.endpoint: endpoint `localhost` has no port: \
         write host:port, e.g. 127.0.0.1:4318 or 0.0.0.0:4318"
    );
    let text = format!("{PIPELINE}  telemetry:\n    metrics:\n      otlp: {{endpoint: \"otlp.example.com:4318\"}}\n");
    assert_eq!(
        only(&text),
        "c.yaml:6:24: service.telemetry.metrics.otlp.endpoint: the URL is not an http:// or https:// URL \
         (scheme: no scheme): write the full URL, e.g. https://otlp.example.com/v1/metrics"
    );
    // A URL can carry a key in its query: the error names the problem, not the URL.
    let text = format!(
        "{PIPELINE}  telemetry:\n    metrics:\n      otlp: {{endpoint: \"ftp://otlp.example.com/v1/metrics?api_key=s3cret-9\"}}\n"
    );
    let error = only(&text);
    assert!(error.contains("(scheme: ftp)") && !error.contains("s3cret-9"), "{error}");
    let text = format!(
        "{PIPELINE}  telemetry:\n    metrics:\n      otlp: {{endpoint: \"https://me:${{env:GENCOL_TOKEN}}@otlp.example.com\"}}\n"
    );
    let line = only(&text);
    assert!(line.contains("put credentials in `headers`") && !line.contains("s3cr3t"), "{line}");
}

#[test]
fn unknown_metrics_key() {
    let text = format!(
        "{PIPELINE}  telemetry:\n    metrics:\n      otlp: {{endpoint: \"http://127.0.0.1:1/v1/metrics\", intervall: 5s}}\n"
    );
    assert_eq!(
        only(&text),
        "c.yaml:6:57: service.telemetry.metrics: otlp: unknown key `intervall`, did you mean `interval`? \
         (expected one of: endpoint, headers, interval)"
    );
}

#[test]
fn bad_metrics_interval() {
    let text = format!(
        "{PIPELINE}  telemetry:\n    metrics:\n      otlp: {{endpoint: \"http://127.0.0.1:1/v1/metrics\", interval: 30}}\n"
    );
    assert_eq!(
        only(&text),
        "c.yaml:6:67: service.telemetry.metrics: otlp.interval: duration `30` has no unit: add one, e.g. `30s` or `30ms`"
    );
    let text = format!(
        "{PIPELINE}  telemetry:\n    metrics:\n      otlp: {{endpoint: \"http://127.0.0.1:1/v1/metrics\", interval: 100ms}}\n"
    );
    assert_eq!(
        only(&text),
        "c.yaml:6:67: service.telemetry.metrics.otlp.interval: `100ms` is too short: push at most once a second (e.g. `30s`)"
    );
}

#[test]
fn wrong_shapes() {
    let text = format!("plugins: ./a.so\nreceivers: [otlp]\nexporters:\n  debug: basic\n{PIPELINE}");
    assert_eq!(
        problems(&text),
        [
            "c.yaml:1:10: plugins must be a list of paths, found a string",
            "c.yaml:2:12: receivers: `receivers` (component id → settings) must be a map, found a list",
            "c.yaml:4:10: exporters.debug: settings must be a map (or nothing for the defaults), found a string",
        ]
    );
    let line = only("service:\n  pipelines:\n    traces:\n      receivers: otlp\n      exporters: [debug]\n");
    assert_eq!(
        line,
        "c.yaml:4:18: pipeline `traces`: receivers must be a list of component ids (e.g. [otlp]), found a string"
    );
    assert_eq!(only("- a\n- b\n"), "c.yaml:1:1: a gencol config must be a map, found a list");
}

#[test]
fn undefined_variable_is_located() {
    let text =
        format!("receivers:\n  generations:\n    auth: {{bearer_tokens: [\"${{env:UNSET_TOKEN}}\"]}}\n{PIPELINE}");
    assert_eq!(
        only(&text),
        "c.yaml:3:28: environment variable UNSET_TOKEN is not set: set UNSET_TOKEN or write ${env:UNSET_TOKEN:-default}"
    );
}

#[test]
fn every_problem_in_one_run() {
    let text = "\
recievers: {}
exporters:
  Debug: {}
service:
  shutdown_timeout: soon
  telemetri: []
  pipelines:
    metrics: {receivers: [otlp], exporters: [debug]}
    traces:
      receivers: [otlp, otlp]
";
    let all = problems(text);
    let prefixes: Vec<&str> = all.iter().map(|l| l.split(": ").next().unwrap_or_default()).collect();
    assert_eq!(
        prefixes,
        ["c.yaml:1:1", "c.yaml:3:3", "c.yaml:5:21", "c.yaml:6:3", "c.yaml:8:5", "c.yaml:10:25", "c.yaml:9:5"],
        "{all:#?}"
    );
    // The secrets the environment holds never show up.
    assert!(all.iter().all(|l| !l.contains("s3cr3t")));
}

#[test]
fn health_check_extension() {
    // Enabled with its default endpoint, or one written.
    let on = check(&format!("extensions:\n  health_check:\n{PIPELINE}  extensions: [health_check]\n"));
    assert_eq!(on.health_check.map(|e| e.value).as_deref(), Some("127.0.0.1:13133"));
    let on = check(&format!(
        "extensions:\n  health_check: {{endpoint: 0.0.0.0:9000}}\n{PIPELINE}  extensions: [health_check]\n"
    ));
    assert_eq!(on.health_check.map(|e| e.value).as_deref(), Some("0.0.0.0:9000"));
    assert!(check(PIPELINE).health_check.is_none(), "off unless enabled");

    // Defined but not enabled, enabled but not defined, unknown names, a bad endpoint.
    assert_eq!(
        problems(&format!("extensions:\n  health_check:\n{PIPELINE}")),
        [
            "c.yaml:2:3: extension `health_check` is defined but not enabled: add it to service.extensions (or remove it)"
        ]
    );
    assert_eq!(
        problems(&format!("{PIPELINE}  extensions: [health_check, healthcheck]\n")),
        [
            "c.yaml:4:16: service.extensions lists `health_check`, which is not defined: define it under \
             `extensions:` (e.g. `extensions: {health_check: {}}`)",
            "c.yaml:4:30: service.extensions lists `healthcheck`, which is not defined: did you mean `health_check`?",
        ]
    );
    assert_eq!(
        problems(&format!(
            "extensions:\n  zpages: {{}}\n  health_check: {{endpoint: localhost, path: /}}\n{PIPELINE}  extensions: [health_check]\n"
        )),
        [
            "c.yaml:2:3: extensions: unknown key `zpages` (expected one of: health_check)",
            "c.yaml:3:28: extensions.health_check.endpoint: endpoint `localhost` has no port: write host:port, \
             e.g. 127.0.0.1:4318 or 0.0.0.0:4318",
            "c.yaml:3:39: extensions.health_check: unknown key `path` (expected one of: endpoint)",
        ]
    );
}
