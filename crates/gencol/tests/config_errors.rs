//! `gencol validate` on broken configs: each error as `FILE:LINE:COLUMN: message`,
//! all errors at once, non-zero exit; and `gencol run` never half-starts.

mod common;

use std::process::Command;

use common::*;

/// Runs `gencol validate` on `yaml`; returns (exit code, stderr, file path).
fn validate(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(gencol_bin())
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .env_remove("NOT_SET_ANYWHERE")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), path.display().to_string())
}

const GOOD_TAIL: &str = "service:\n  pipelines:\n    traces:\n      receivers: [generations]\n      processors: [namespace]\n      exporters: [debug]\n";
const GOOD_HEAD: &str = "receivers:\n  generations: {}\nprocessors:\n  namespace: {}\nexporters:\n  debug: {}\n";

/// Asserts that validation fails and reports `message` at `line:column`.
fn assert_error(yaml: &str, line: u32, column: u32, message: &str) {
    let (code, stderr, file) = validate(yaml);
    assert_ne!(code, 0, "validate must fail:\n{yaml}");
    let want = format!("{file}:{line}:{column}: ");
    let hit = stderr.lines().find(|l| l.starts_with(&want));
    assert!(hit.is_some_and(|l| l.contains(message)), "expected `{want}...{message}` in:\n{stderr}\nfor:\n{yaml}");
}

#[test]
fn a_good_config_validates() {
    let (code, stderr, _) = validate(&format!("{GOOD_HEAD}{GOOD_TAIL}"));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn unknown_key_in_a_component() {
    assert_error(
        &format!(
            "receivers:\n  generations:\n    endpiont: 127.0.0.1:4320\nprocessors:\n  namespace: {{}}\nexporters:\n  debug: {{}}\n{GOOD_TAIL}"
        ),
        3,
        5,
        "unknown key `endpiont`",
    );
}

#[test]
fn unknown_component_type_suggests_the_closest() {
    let yaml = format!("{GOOD_HEAD}  otpl/axiom:\n    endpoint: http://127.0.0.1:1/v1/traces\n{GOOD_TAIL}")
        .replace("exporters: [debug]", "exporters: [debug, otpl/axiom]");
    assert_error(&yaml, 7, 3, "unknown exporter type `otpl` (did you mean `otlp`?)");
}

#[test]
fn pipeline_names_an_undefined_component() {
    let yaml = format!("{GOOD_HEAD}{GOOD_TAIL}").replace("exporters: [debug]", "exporters: [debug, otlp/missing]");
    assert_error(&yaml, 12, 26, "exporter `otlp/missing`, which is not defined under `exporters`");
}

#[test]
fn empty_pipeline() {
    let yaml = format!("{GOOD_HEAD}{GOOD_TAIL}").replace("exporters: [debug]", "exporters: []");
    let (code, stderr, file) = validate(&yaml);
    assert_ne!(code, 0);
    assert!(stderr.lines().any(|l| l.starts_with(&format!("{file}:")) && l.contains("no exporters")), "{stderr}");
}

#[test]
fn bad_duration() {
    let yaml = format!("receivers:\n  generations: {{}}\nprocessors:\n  namespace: {{}}\n  hierarchy:\n    group_window: 5 parsecs\nexporters:\n  debug: {{}}\n{GOOD_TAIL}")
        .replace("processors: [namespace]", "processors: [hierarchy, namespace]");
    assert_error(&yaml, 6, 19, "5 parsecs");
}

#[test]
fn bad_size() {
    let yaml = format!(
        "receivers:\n  generations:\n    max_request_body_size: lots\nprocessors:\n  namespace: {{}}\nexporters:\n  debug: {{}}\n{GOOD_TAIL}"
    );
    assert_error(&yaml, 3, 28, "lots");
}

#[test]
fn undefined_environment_variable() {
    let yaml = format!("{GOOD_HEAD}  otlp/x:\n    endpoint: ${{env:NOT_SET_ANYWHERE}}\n{GOOD_TAIL}")
        .replace("exporters: [debug]", "exporters: [debug, otlp/x]");
    assert_error(&yaml, 8, 15, "NOT_SET_ANYWHERE");
}

#[test]
fn yaml_syntax_error() {
    let (code, stderr, file) = validate("receivers:\n  generations: {endpoint: [oops}\n");
    assert_ne!(code, 0);
    assert!(stderr.lines().any(|l| l.starts_with(&format!("{file}:2:"))), "{stderr}");
}

#[test]
fn unknown_top_level_key() {
    assert_error(&format!("{GOOD_HEAD}{GOOD_TAIL}servce: {{}}\n"), 13, 1, "servce");
}

#[test]
fn bad_enum_value() {
    let yaml =
        format!("{GOOD_HEAD}  otlp/x:\n    endpoint: http://127.0.0.1:9/v1/traces\n    encoding: xml\n{GOOD_TAIL}")
            .replace("exporters: [debug]", "exporters: [debug, otlp/x]");
    assert_error(&yaml, 9, 15, "xml");
}

#[test]
fn missing_required_setting() {
    let yaml = format!("{GOOD_HEAD}  otlp/x:\n    compression: none\n{GOOD_TAIL}")
        .replace("exporters: [debug]", "exporters: [debug, otlp/x]");
    assert_error(&yaml, 8, 5, "endpoint");
}

#[test]
fn not_a_url() {
    let yaml = format!("{GOOD_HEAD}  otlp/x:\n    endpoint: collector:4318\n{GOOD_TAIL}")
        .replace("exporters: [debug]", "exporters: [debug, otlp/x]");
    assert_error(&yaml, 8, 15, "http://");
}

#[test]
fn userinfo_in_a_destination_url_is_refused_without_printing_the_password() {
    let yaml = format!(
        "{GOOD_HEAD}  otlp/x:\n    endpoint: http://alice:Hunter2-pw@127.0.0.1:4318/v1/traces?api_key=q-Secret9\n  ramp:\n    api_key: rk_test_abcd1234\n    base_url: https://bob:Ramp-pw7@api.ramp.example/ai\n  raindrop:\n    write_key: rd_test_abcd1234\n    base_url: https://carol@api.raindrop.example\n{GOOD_TAIL}"
    )
    .replace("exporters: [debug]", "exporters: [debug, otlp/x, ramp, raindrop]");
    let (code, stderr, file) = validate(&yaml);
    assert_ne!(code, 0, "{stderr}");
    let at = |line: u32, column: u32, message: &str| {
        let want = format!("{file}:{line}:{column}: ");
        assert!(
            stderr.lines().any(|l| l.starts_with(&want) && l.contains(message)),
            "expected `{want}...{message}` in:\n{stderr}"
        );
    };
    at(
        8,
        15,
        "endpoint `http://127.0.0.1:4318/v1/traces?***` must not contain a user name or password (`user:password@`): remove them and send the credential in `headers` instead, e.g. `headers: {Authorization: \"Basic ${env:OTLP_BASIC_AUTH}\"}`",
    );
    at(11, 15, "base_url `https://api.ramp.example/ai` must not contain a user name or password");
    at(11, 15, "put the Ramp key in `api_key`");
    at(14, 15, "base_url `https://api.raindrop.example/` must not contain a user name or password");
    for secret in ["Hunter2-pw", "alice", "q-Secret9", "Ramp-pw7", "bob:", "carol"] {
        assert!(!stderr.contains(secret), "{secret} printed:\n{stderr}");
    }

    // `gencol run` refuses the same config before anything listens.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("userinfo.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let out = Command::new(gencol_bin()).arg("run").arg("--config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(":8:15: endpoint `http://127.0.0.1:4318/v1/traces?***` must not contain"), "{stderr}");
    assert!(!stderr.contains("Hunter2-pw") && !stderr.contains("Ramp-pw7"), "{stderr}");
}

#[test]
fn bad_privacy_regex_and_pattern() {
    let yaml = format!(
        "receivers:\n  generations: {{}}\nprocessors:\n  namespace: {{}}\n  privacy:\n    patterns: [emial]\n    custom: [{{name: t, regex: \"TCK-[0-9\"}}]\nexporters:\n  debug: {{}}\n{GOOD_TAIL}"
    )
    .replace("processors: [namespace]", "processors: [namespace, privacy]");
    let (code, stderr, file) = validate(&yaml);
    assert_ne!(code, 0);
    assert!(
        stderr.lines().any(|l| l.starts_with(&format!("{file}:6:")) && l.contains("emial") && l.contains("email")),
        "{stderr}"
    );
    assert!(stderr.lines().any(|l| l.starts_with(&format!("{file}:7:")) && l.contains("regex")), "{stderr}");
}

#[test]
fn delivery_loop_into_our_own_receiver() {
    let yaml = "receivers:\n  otlp: {endpoint: 127.0.0.1:4318}\nexporters:\n  otlp/back: {endpoint: http://localhost:4318/v1/traces}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp/back]\n";
    assert_error(yaml, 9, 19, "delivery loop");
}

#[test]
fn every_error_is_reported_at_once() {
    let yaml = format!(
        "receivers:\n  generations:\n    endpiont: x\nprocessors:\n  namespace: {{}}\nexporters:\n  debug: {{verbosity: loud}}\n  otpl: {{}}\n{GOOD_TAIL}"
    );
    let (code, stderr, file) = validate(&yaml);
    assert_ne!(code, 0);
    let located = stderr.lines().filter(|l| l.starts_with(&format!("{file}:"))).count();
    assert!(located >= 3, "three errors, each located:\n{stderr}");
    assert!(stderr.contains("3 errors"), "{stderr}");
}

#[test]
fn unused_component_is_a_warning_and_missing_namespace_too() {
    let yaml = "receivers:\n  generations: {}\n  otlp: {}\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    traces:\n      receivers: [generations]\n      exporters: [debug]\n";
    let (code, stderr, _) = validate(yaml);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("warning") && stderr.contains("`otlp`") && stderr.contains("namespace"), "{stderr}");
}

#[test]
fn run_refuses_to_half_start_when_a_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let free = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!("receivers:\n  generations: {{endpoint: 127.0.0.1:{free}}}\n  otlp: {{endpoint: 127.0.0.1:{port}}}\nprocessors:\n  namespace: {{}}\nexporters:\n  debug: {{}}\nservice:\n  pipelines:\n    traces: {{receivers: [generations, otlp], processors: [namespace], exporters: [debug]}}\n"),
    )
    .unwrap();
    let out = Command::new(gencol_bin()).arg("run").arg("--config").arg(&path).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&port.to_string()), "{stderr}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", free)).is_ok(), "the other receiver was stopped again");
}

#[test]
fn several_config_files_merge_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.yaml");
    let over = dir.path().join("override.yaml");
    std::fs::write(&base, format!("{GOOD_HEAD}{GOOD_TAIL}")).unwrap();
    std::fs::write(&over, "exporters:\n  debug:\n    verbosity: loud\n").unwrap();
    let out = Command::new(gencol_bin())
        .args(["validate", "--config"])
        .arg(&base)
        .arg("--config")
        .arg(&over)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.lines().any(|l| l.starts_with(&format!("{}:3:", over.display())) && l.contains("loud")),
        "the later file's value is checked, at its place:\n{stderr}"
    );
}

#[test]
fn shipped_pipelines_validate() {
    // Every file in pipelines/, so a new one is checked without anyone listing it here.
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        // These load plugins, which tests/plugins.rs builds and then validates them with.
        .filter(|n| !["webhook.yaml", "jsonl.yaml"].contains(&n.as_str()))
        .collect();
    names.sort();
    for must in
        ["quickstart.yaml", "otlp-collector.yaml", "axiom.yaml", "ramp.yaml", "raindrop.yaml", "broadcast-all.yaml"]
    {
        assert!(names.iter().any(|n| n == must), "pipelines/{must} is missing: {names:?}");
    }
    for name in &names {
        let path = repo_root().join("pipelines").join(name);
        let out = Command::new(gencol_bin())
            .arg("validate")
            .arg("--config")
            .arg(&path)
            .env("AXIOM_TOKEN", "xaat-test")
            .env("AXIOM_DATASET", "test")
            .env("RAMP_API_KEY", "rk-test")
            .env("RAINDROP_WRITE_KEY", "rd-test")
            .env("POSTHOG_API_KEY", "phc_test")
            .env("LANGFUSE_PUBLIC_KEY", "pk-lf-test")
            .env("LANGFUSE_SECRET_KEY", "sk-lf-test")
            .env("HONEYCOMB_API_KEY", "hc-test")
            .env("NEW_RELIC_LICENSE_KEY", "nr-test")
            .env("GRAFANA_OTLP_ENDPOINT", "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/v1/traces")
            .env("GRAFANA_INSTANCE_ID", "123456")
            .env("GRAFANA_API_TOKEN", "glc_test")
            .env("DD_API_KEY", "dd-test")
            .env("PHOENIX_OTLP_ENDPOINT", "https://app.phoenix.arize.com/s/test/v1/traces")
            .env("PHOENIX_API_KEY", "phx-test")
            .env("BRAINTRUST_API_KEY", "bt-test")
            .env("LANGSMITH_API_KEY", "ls-test")
            .env("SENTRY_OTLP_ENDPOINT", "https://o1.ingest.sentry.io/api/2/integration/otlp/v1/traces")
            .env("SENTRY_PUBLIC_KEY", "sentry-test")
            .env("S3_BUCKET", "gencol-archive")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn otlp_basic_auth_mistakes_are_refused_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let head = "receivers:\n  generations: {}\nexporters:\n  otlp/lf:\n    endpoint: https://cloud.langfuse.com/api/public/otel/v1/traces\n";
    let tail = "service:\n  pipelines:\n    traces: {receivers: [generations], exporters: [otlp/lf]}\n";
    let cases = [
        ("    auth: {basic: {username: \"\", password: sk-lf-secret-1}}\n", "auth.basic.username is empty"),
        (
            "    auth: {basic: {username: pk-lf-1, password: sk-lf-secret-1}}\n    headers: {authorization: \"Basic eA==\"}\n",
            "both set the Authorization header",
        ),
        ("    auth: {bearer: x}\n", "bearer"),
    ];
    for (auth, message) in cases {
        let stderr =
            assert_refused_at(&dir.path().join("gencol.yaml"), &format!("{head}{auth}{tail}"), &[], 6, message);
        assert!(!stderr.contains("sk-lf-secret-1"), "{stderr}");
    }
}
