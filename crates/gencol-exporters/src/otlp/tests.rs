use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gencol_config::{ComponentId, load_str};
use gencol_engine::{ComponentContext, ExportError, Exporter, ExporterFactory};
use gencol_testkit::{Answer, OtlpSink, SinkOptions};

use super::OtlpExporterFactory;
use super::config::parse_endpoint;

const TOKEN: &str = "otlp-tok/EN+9f8e7d6c";

#[test]
fn endpoint_must_be_http_url() {
    assert!(parse_endpoint("https://api.axiom.co/v1/traces").is_ok());
    assert!(parse_endpoint("api.axiom.co/v1/traces").unwrap_err().contains("not a URL"));
    assert!(parse_endpoint("ftp://x/v1/traces").unwrap_err().contains("http://"));
    let userinfo = parse_endpoint("https://bob:hunter2pw@api.axiom.co/v1/traces").unwrap_err();
    assert!(userinfo.starts_with("endpoint `https://api.axiom.co/v1/traces` must not contain a user name or password"));
    assert!(userinfo.contains("Authorization: \"Basic ${env:") && !userinfo.contains("hunter2pw"), "{userinfo}");
}

/// An `otlp` exporter for `yaml` (its settings), built as gencol builds it.
fn exporter(yaml: &str) -> Arc<dyn Exporter> {
    let ctx = ComponentContext { id: ComponentId { kind: "otlp".into(), name: None }, base_dir: ".".into() };
    let node = load_str("otlp.yaml", yaml, &|_| None).expect("valid YAML");
    let config = OtlpExporterFactory.configure(&ctx, &node).unwrap_or_else(|d| panic!("{d:?}"));
    config.build(&ctx.id).expect("builds")
}

fn with_token(url: &str) -> Arc<dyn Exporter> {
    exporter(&format!("endpoint: {url}\nheaders: {{Authorization: \"Bearer {TOKEN}\"}}"))
}

/// Log lines written while the guard lives (on this thread), without colours.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Single-threaded runtime (the default): the exporter logs on the test's own thread,
// where the capturing subscriber is set.
#[tokio::test]
async fn partial_success_with_rejected_spans_as_a_string_is_logged_masked() {
    let sink = OtlpSink::start().await.unwrap();
    let body =
        format!(r#"{{"partialSuccess":{{"rejectedSpans":"1","errorMessage":"span 2 refused for token {TOKEN}"}}}}"#);
    sink.script([
        Answer::status(200).body(body).header("content-type", "application/json"),
        // As a number, with the token JSON-escaped.
        Answer::status(200)
            .body(format!(
                r#"{{"partialSuccess":{{"rejectedSpans":2,"errorMessage":"bad \"Bearer {}\""}}}}"#,
                TOKEN.replace('/', "\\/")
            ))
            .header("content-type", "application/json"),
        // A plain success logs nothing.
        Answer::status(200),
    ]);
    let exporter = with_token(&sink.url());
    let (log, _guard) = Captured::start();
    for _ in 0..3 {
        assert_eq!(exporter.test_connection().await, Ok("200 OK".to_owned()), "partial success is still success");
    }
    let text = log.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("accepted the batch partially")).collect();
    assert_eq!(lines.len(), 2, "one line per partial answer:\n{text}");
    assert!(
        lines[0].contains("rejected_spans=1") && lines[0].contains("partially: span 2 refused for token *** "),
        "{text}"
    );
    assert!(lines[1].contains("rejected_spans=2") && lines[1].contains("partially: bad \"***\" "), "{text}");
    assert!(!text.contains("9f8e7d6c"), "{text}");
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_its_target_gets_nothing() {
    let target = OtlpSink::start().await.unwrap();
    let port = target.url().split(':').nth(2).and_then(|p| p.split('/').next()).unwrap().to_owned();
    let redirecting = OtlpSink::start_with(
        SinkOptions::default()
            .fallback(Answer::status(307).header("location", &format!("{}?token={TOKEN}", target.url()))),
    )
    .await
    .unwrap();
    let exporter = with_token(&format!("{}?api_key=query-secret-77", redirecting.url()));
    let err = exporter.test_connection().await.unwrap_err();
    let ExportError::Permanent { message } = &err else { panic!("a redirect is permanent: {err:?}") };
    assert_eq!(
        message,
        &format!(
            "307 Temporary Redirect (redirect to http://127.0.0.1:{port} not followed: exporters do not follow redirects; set endpoint to the final URL) (from {}?***)",
            redirecting.url()
        )
    );
    // An export follows the same path.
    let err = exporter.export(&[]).await.unwrap_err();
    assert!(matches!(err, ExportError::Permanent { .. }), "{err:?}");
    assert_eq!(redirecting.wait_for_requests(2, Duration::from_secs(5)).await.len(), 2);
    assert!(target.requests().is_empty(), "the redirect target got {} requests", target.requests().len());
}

#[tokio::test]
async fn echoed_headers_are_masked_in_every_form() {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-Passw0rd");
    let sink = OtlpSink::start().await.unwrap();
    let echoes = [
        format!("you sent x-api-key: {TOKEN}"),
        format!(r#"{{"error":"bad key \"{}\""}}"#, TOKEN.replace('/', "\\u002F")),
        format!("bad key {}", TOKEN.to_uppercase()),
        format!("GET /?k={}", TOKEN.replace('/', "%2f").replace('+', "%2B")),
        format!("Authorization: Basic {basic}"),
        "user alice:s3cret-Passw0rd denied".to_owned(),
    ];
    sink.script(echoes.iter().map(|e| Answer::status(401).body(e.clone())));
    let exporter = exporter(&format!(
        "endpoint: {}\nheaders: {{X-Api-Key: \"{TOKEN}\", Authorization: \"Basic {basic}\"}}",
        sink.url()
    ));
    for echo in &echoes {
        let message = exporter.test_connection().await.unwrap_err().to_string();
        assert!(message.starts_with("401 ") && message.contains("***"), "{echo} → {message}");
        for secret in ["9f8e7d6c", "s3cret-Passw0rd", "S3CRET", &basic[..basic.len() - 2]] {
            assert!(!message.contains(secret), "{echo} → {message}");
        }
    }
}
