use std::time::Duration;

use gencol_config::{ComponentId, Located, Node, load_str};
use gencol_engine::{ComponentContext, ExportError, ExporterFactory};
use gencol_testkit::{OtlpSink, SinkOptions};

use crate::http::OtlpHttpSettings;

use super::RampExporterFactory;
use super::config::{DEFAULT_BASE_URL, RampExporterSettings, check_api_key};

const KEY: &str = "rk_test_4f9a1c2b";

fn node(yaml: &str) -> Located<Node> {
    load_str("ramp.yaml", yaml, &|_| None).expect("valid YAML")
}

/// The errors of a config, one line each, as `gencol validate` prints them.
fn errors(yaml: &str) -> String {
    let ctx = ComponentContext { id: ComponentId { kind: "ramp".into(), name: None }, base_dir: ".".into() };
    match RampExporterFactory.configure(&ctx, &node(yaml)) {
        Ok(_) => String::new(),
        Err(diags) => diags.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
    }
}

fn settings(yaml: &str) -> OtlpHttpSettings {
    let n = node(yaml);
    let s: RampExporterSettings = gencol_config::decode(&n).expect("decodes");
    s.check(&n).unwrap_or_else(|d| panic!("{d:?}"))
}

#[test]
fn defaults_follow_the_seed() {
    let s = settings(&format!("api_key: {KEY}"));
    assert_eq!(s.endpoint.as_str(), DEFAULT_BASE_URL);
    assert_eq!(s.headers, vec![("Authorization".to_owned(), format!("Bearer {KEY}"))]);
    assert!(!s.protobuf && !s.gzip, "OTLP JSON, uncompressed");
}

#[test]
fn user_headers_are_kept_and_empty_ones_dropped() {
    let s = settings(&format!(
        "api_key: {KEY}\nbase_url: http://127.0.0.1:9/x\nheaders: {{X-Team: finance, X-Empty: '', X-Null: null}}"
    ));
    assert_eq!(s.endpoint.as_str(), "http://127.0.0.1:9/x");
    assert_eq!(
        s.headers,
        vec![("X-Team".to_owned(), "finance".to_owned()), ("Authorization".to_owned(), format!("Bearer {KEY}"))]
    );
}

#[test]
fn api_key_is_required_and_checked_without_showing_it() {
    let missing = errors("base_url: https://api.ramp.com/x");
    assert!(missing.contains("api_key"), "{missing}");
    assert!(errors("api_key: ''").contains("api_key is empty"));
    let prefixed = errors(&format!("api_key: 'Bearer {KEY}'"));
    assert!(prefixed.contains("gencol adds the `Bearer ` prefix"), "{prefixed}");
    let spaced = errors("api_key: 'rk_test 4f9a'");
    assert!(spaced.contains("visible ASCII"), "{spaced}");
    for e in [prefixed, spaced] {
        assert!(!e.contains("rk_test") && !e.contains("4f9a"), "the key leaked: {e}");
    }
    // Surrounding whitespace (a pasted newline) is forgiven.
    assert_eq!(check_api_key(&format!("  {KEY}\n")), Ok(KEY));
}

#[test]
fn authorization_header_is_refused_in_favour_of_api_key() {
    let e = errors(&format!("api_key: {KEY}\nheaders: {{authorization: 'Bearer other-secret'}}"));
    assert!(e.contains("put the Ramp key in `api_key`"), "{e}");
    assert!(!e.contains("other-secret"), "{e}");
}

#[test]
fn every_problem_is_reported_at_its_line() {
    let e = errors("api_key: ''\nbase_url: 'ramp.com/x?key=s3cret'\n");
    assert!(e.contains("ramp.yaml:1:") && e.contains("api_key is empty"), "{e}");
    assert!(e.contains("ramp.yaml:2:") && e.contains("base_url `ramp.com/x?***` is not a URL"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
}

#[test]
fn unknown_keys_are_errors() {
    let e = errors(&format!("api_key: {KEY}\nendpoint: https://api.ramp.com"));
    assert!(e.contains("unknown key `endpoint`"), "{e}");
}

async fn exporter_for(url: &str) -> std::sync::Arc<dyn gencol_engine::Exporter> {
    let ctx = ComponentContext { id: ComponentId { kind: "ramp".into(), name: None }, base_dir: ".".into() };
    let config =
        RampExporterFactory.configure(&ctx, &node(&format!("api_key: {KEY}\nbase_url: {url}"))).expect("valid config");
    config.build(&ctx.id).expect("builds")
}

#[tokio::test]
async fn test_connection_sends_a_marked_span_with_the_bearer_key() {
    let sink = OtlpSink::start_with(
        SinkOptions::default()
            .path("/developer/v1/ai-usage/openrouter")
            .expect_header("authorization", format!("Bearer {KEY}")),
    )
    .await
    .unwrap();
    let exporter = exporter_for(&sink.url()).await;
    assert_eq!(exporter.test_connection().await, Ok("200 OK".to_owned()));
    let requests = sink.wait_for_requests(1, Duration::from_secs(5)).await;
    let r = &requests[0];
    assert_eq!(r.header("x-test-connection"), Some("true"));
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.content_encoding, None);
    assert_eq!(r.spans()[0].attr_bool("gencol.test_connection"), Some(true));
}

#[tokio::test]
async fn a_wrong_key_fails_with_status_first_and_no_secret() {
    let sink = OtlpSink::start_with(
        SinkOptions::default().path("/ramp").expect_header("authorization", "Bearer the-right-key"),
    )
    .await
    .unwrap();
    let exporter = exporter_for(&format!("{}?token=query-secret", sink.url())).await;
    let err = exporter.test_connection().await.unwrap_err();
    let ExportError::Permanent { message } = &err else { panic!("401 is permanent: {err:?}") };
    assert!(message.starts_with("401 "), "{message}");
    assert!(message.ends_with(&format!("(from {}?***)", sink.url())), "{message}");
    assert!(!message.contains(KEY) && !message.contains("query-secret"), "{message}");
}

#[tokio::test]
async fn an_unreachable_destination_is_retryable_and_names_no_secret() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let exporter = exporter_for(&format!("http://127.0.0.1:{port}/x?api_key=query-secret")).await;
    let err = exporter.test_connection().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ExportError::Retryable { .. }), "{err:?}");
    assert!(message.starts_with(&format!("cannot reach http://127.0.0.1:{port}/x?***: ")), "{message}");
    assert!(!message.contains("query-secret"), "{message}");
}
