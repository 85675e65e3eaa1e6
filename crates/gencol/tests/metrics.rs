//! gencol's own metrics (SPEC §12) against the real binary: `GET /metrics` counts
//! exactly what was received, refused and delivered, and `metrics.otlp` pushes them
//! with its headers.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use gencol_testkit::{Answer, OtlpSink, SinkOptions};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "tok-metrics-5e1f";

/// One scrape: series (`name` and its labels) → value.
type Scrape = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> Scrape {
    let mut series = Scrape::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (key, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = match key.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (key, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once("=\"").expect("label=\"value\"");
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        series.insert((name.to_owned(), labels), value.parse().expect("a number"));
    }
    series
}

fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    scrape.get(&(name.to_owned(), labels)).copied()
}

async fn scrape(url: &str) -> (reqwest::StatusCode, String, Scrape) {
    let resp = reqwest::get(url).await.expect("the metrics listener answers");
    let status = resp.status();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = resp.text().await.unwrap_or_default();
    let series = if status.is_success() { parse(&text) } else { Scrape::new() };
    (status, content_type, series)
}

/// Scrapes until `done` holds for a scrape, or panics with the last one after [`WAIT`].
async fn scrape_until(url: &str, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, _, series) = scrape(url).await;
        if done(&series) {
            return series;
        }
        assert!(Instant::now() < deadline, "{what} not seen within {WAIT:?}; last scrape:\n{series:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn traced(id: &str, trace_id: &str) -> serde_json::Value {
    let mut g = generation(id);
    g["request"]["trace"] = json!({"trace_id": trace_id, "trace_name": "Checkout"});
    g
}

#[tokio::test]
async fn metrics_count_what_was_received_refused_and_delivered() {
    let sink = OtlpSink::start().await.unwrap();
    let denied = OtlpSink::start_with(SinkOptions::default().fallback(Answer::status(401))).await.unwrap();
    let metrics_port = free_port();
    let yaml = format!(
        r#"
receivers:
  generations:
    endpoint: 127.0.0.1:{{GEN_PORT}}
    auth: {{bearer_tokens: ["${{env:TEST_GENCOL_TOKEN}}"]}}
  otlp:
    endpoint: 127.0.0.1:{{OTLP_PORT}}
processors:
  hierarchy: {{group_window: 1h}}
exporters:
  otlp/sink: {{endpoint: "{sink}"}}
  otlp/denied: {{endpoint: "{denied}"}}
service:
  telemetry:
    metrics:
      prometheus: {{endpoint: "127.0.0.1:{metrics_port}"}}
  pipelines:
    traces: {{receivers: [generations, otlp], processors: [hierarchy], exporters: [otlp/sink, otlp/denied]}}
"#,
        sink = sink.url(),
        denied = denied.url(),
    );
    let gencol = Gencol::start_with_env(&yaml, &[("TEST_GENCOL_TOKEN", TOKEN)]);
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let url = gencol.generations_url();
    let auth = format!("Bearer {TOKEN}");
    let auth = [("authorization", auth.as_str())];
    let body = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();

    // 3 accepted (two traces, held by `hierarchy`).
    let three = json!([traced("m-1", "t-a"), traced("m-2", "t-a"), traced("m-3", "t-b")]);
    let (st, b, _) = post(&url, "application/json", body(three), &auth).await;
    assert_eq!((st, b), (202, json!({"accepted": 3, "rejected": []})));
    // 2 accepted, 1 invalid (partial).
    let mut bad = generation("m-bad");
    bad["request"].as_object_mut().unwrap().remove("model");
    let (st, b, _) =
        post(&url, "application/json", body(json!([generation("m-4"), bad.clone(), generation("m-5")])), &auth).await;
    assert_eq!((st, b["accepted"].clone()), (202, json!(2)));
    // Nothing valid: 400, 1 invalid.
    let (st, _, _) = post(&url, "application/json", body(bad), &auth).await;
    assert_eq!(st, 400);
    // A wrong token: 401, 1 unauthorized (the body is never read).
    let (st, _, _) = post(&url, "application/json", body(generation("m-6")), &[("authorization", "Bearer nope")]).await;
    assert_eq!(st, 401);
    // 415.
    let (st, _, _) = post(&url, "text/plain", body(generation("m-7")), &auth).await;
    assert_eq!(st, 415);

    // The otlp receiver: one span accepted, then a body with no usable span (400).
    let span = json!({"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "chat",
        "startTimeUnixNano": "1795341600000000000", "endTimeUnixNano": "1795341601000000000"});
    let (st, _) = post_json(&gencol.otlp_url(), &json!({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})).await;
    assert_eq!(st, 200);
    let snake = json!({"resource_spans": [{"scope_spans": [{"spans": [{"name": "x"}]}]}]});
    let (st, _) = post_json(&gencol.otlp_url(), &snake).await;
    assert_eq!(st, 400);

    let sent = sink.wait_for_spans(6, WAIT).await;
    assert_eq!(sent.len(), 6, "the five accepted generations and the OTLP span reach the sink");
    let series = scrape_until(&metrics_url, "the 401 destination's failures", |s| {
        value(s, "gencol_exporter_failed_spans_total", &[("exporter", "otlp/denied")]) == Some(6.0)
            && value(s, "gencol_exporter_sent_spans_total", &[("exporter", "otlp/sink")]) == Some(6.0)
    })
    .await;
    let receiver = |name: &str, reason: Option<&str>| {
        let mut labels = vec![("receiver", "generations")];
        labels.extend(reason.map(|r| ("reason", r)));
        value(&series, name, &labels)
    };
    assert_eq!(receiver("gencol_receiver_accepted_records_total", None), Some(5.0));
    let otlp = |name: &str, reason: Option<&str>| {
        let mut labels = vec![("receiver", "otlp")];
        labels.extend(reason.map(|r| ("reason", r)));
        value(&series, name, &labels)
    };
    assert_eq!(otlp("gencol_receiver_accepted_records_total", None), Some(1.0));
    assert_eq!(otlp("gencol_receiver_refused_records_total", Some("invalid")), Some(1.0));
    assert_eq!(otlp("gencol_receiver_refused_records_total", Some("unauthorized")), Some(0.0));
    let refused = "gencol_receiver_refused_records_total";
    assert_eq!(receiver(refused, Some("invalid")), Some(2.0));
    assert_eq!(receiver(refused, Some("unauthorized")), Some(1.0));
    assert_eq!(receiver(refused, Some("unsupported_media_type")), Some(1.0));
    assert_eq!(receiver(refused, Some("too_large")), Some(0.0));
    assert_eq!(receiver(refused, Some("backpressure")), Some(0.0));

    let exporter = |name: &str, id: &str, reason: Option<&str>| {
        let mut labels = vec![("exporter", id)];
        labels.extend(reason.map(|r| ("reason", r)));
        value(&series, name, &labels)
    };
    let dropped = "gencol_exporter_dropped_spans_total";
    assert_eq!(exporter("gencol_exporter_failed_spans_total", "otlp/sink", None), Some(0.0));
    assert_eq!(exporter("gencol_exporter_sent_spans_total", "otlp/denied", None), Some(0.0));
    assert_eq!(exporter(dropped, "otlp/denied", Some("permanent_error")), Some(6.0));
    for reason in ["queue_full", "retries_exhausted", "sampled_out", "filtered"] {
        assert_eq!(exporter(dropped, "otlp/denied", Some(reason)), Some(0.0), "{reason}");
        assert_eq!(exporter(dropped, "otlp/sink", Some(reason)), Some(0.0), "{reason}");
    }
    assert_eq!(exporter("gencol_exporter_retries_total", "otlp/denied", None), Some(0.0), "a 401 is not retried");
    for id in ["otlp/sink", "otlp/denied"] {
        assert_eq!(exporter("gencol_exporter_queue_spans", id, None), Some(0.0), "{id}: everything was taken");
        assert!(exporter("gencol_exporter_queue_bytes", id, None).is_some(), "{id}: queue bytes shown");
        let sends = exporter("gencol_exporter_send_duration_seconds_count", id, None).unwrap_or(0.0);
        let requests = if id == "otlp/sink" { sink.requests().len() } else { denied.requests().len() };
        assert_eq!(sends, requests as f64, "{id}: one observation per request the destination received");
        assert!(exporter("gencol_exporter_send_duration_seconds_sum", id, None).is_some());
        let mut inf = vec![("exporter", id), ("le", "+Inf")];
        inf.sort();
        assert_eq!(value(&series, "gencol_exporter_send_duration_seconds_bucket", &inf), Some(sends));
    }
    assert_eq!(value(&series, "gencol_hierarchy_held_traces", &[]), Some(2.0), "traces t-a and t-b are held");
    assert_eq!(value(&series, "gencol_config_reloads_total", &[("result", "success")]), Some(0.0));

    // The listener serves nothing else.
    let (status, _, _) = scrape(&format!("http://127.0.0.1:{metrics_port}/")).await;
    assert_eq!(status, 404);
    let (status, content_type, _) = scrape(&metrics_url).await;
    assert_eq!((status.as_u16(), content_type.as_str()), (200, "text/plain; version=0.0.4"));
    // gencol's own metrics never enter its pipelines: after all these scrapes the sink
    // still holds just the six spans sent to gencol.
    assert_eq!(sink.spans().len(), 6);
}

/// What the test's OTLP metrics backend received: each push, decoded, with its headers.
#[derive(Default)]
struct Pushes(Mutex<Vec<(http::HeaderMap, ExportMetricsServiceRequest)>>);

/// A minimal OTLP/HTTP metrics backend on 127.0.0.1: decodes every `POST /v1/metrics`
/// (protobuf) and answers `status`, with a body echoing the request's `x-api-key` as a
/// careless backend's error page would.
async fn metrics_backend(status: u16) -> (String, Arc<Pushes>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/metrics", listener.local_addr().unwrap());
    let pushes = Arc::new(Pushes::default());
    let kept = pushes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let kept = kept.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let key = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                        let status = match ExportMetricsServiceRequest::decode(bytes) {
                            Ok(decoded) if parts.uri.path() == "/v1/metrics" => {
                                kept.0.lock().unwrap().push((parts.headers, decoded));
                                status
                            }
                            _ => 400,
                        };
                        let answer = if status == 200 {
                            ExportMetricsServiceResponse::default().encode_to_vec()
                        } else {
                            format!("bad key {key}").into_bytes()
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from(answer)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        resp.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (url, pushes)
}

/// The value of a sum metric's data point with `receiver=generations`, in one push.
fn accepted_in(push: &ExportMetricsServiceRequest) -> Option<i64> {
    let metrics = push.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics);
    let metric = metrics.into_iter().find(|m| m.name == "gencol_receiver_accepted_records")?;
    let Some(metric::Data::Sum(sum)) = &metric.data else { return None };
    sum.data_points.iter().find_map(|p| {
        let ours = p.attributes.iter().any(|kv| {
            kv.key == "receiver"
                && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(any_value::Value::StringValue(s)) if s == "generations")
        });
        match p.value {
            Some(number_data_point::Value::AsInt(n)) if ours => Some(n),
            _ => None,
        }
    })
}

#[tokio::test]
async fn metrics_are_pushed_with_otlp_and_the_configured_headers() {
    const KEY: &str = "push-key-8c2b71";
    let (push_url, pushes) = metrics_backend(200).await;
    let sink = OtlpSink::start().await.unwrap();
    let yaml = pushing_config(&push_url, &format!("otlp/sink: {{endpoint: \"{}\"}}", sink.url()), "otlp/sink");
    let mut gencol = Gencol::start_with_env(&yaml, &[("TEST_METRICS_KEY", KEY)]);
    let records = json!([generation("p-1"), generation("p-2"), generation("p-3")]);
    let (st, _) = post_json(&gencol.generations_url(), &records).await;
    assert_eq!(st, 202);

    let deadline = Instant::now() + WAIT;
    let (headers, push) = loop {
        let found = pushes.0.lock().unwrap().iter().find(|(_, p)| accepted_in(p) == Some(3)).cloned();
        if let Some(found) = found {
            break found;
        }
        let seen = pushes.0.lock().unwrap().len();
        assert!(Instant::now() < deadline, "no push with 3 accepted records within {WAIT:?} ({seen} pushes)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(headers.get("x-api-key").and_then(|v| v.to_str().ok()), Some(KEY));
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-protobuf"));
    let service_name = push.resource_metrics[0]
        .resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name").and_then(|kv| kv.value.clone()));
    assert_eq!(service_name.and_then(|v| v.value), Some(any_value::Value::StringValue("gencol".into())));
    assert!(gencol.stop(), "gencol stops cleanly:\n{}", gencol.stderr());
    assert!(!gencol.stderr().contains(KEY), "the header value is a secret");
    // Only generation spans went to the traces destination.
    assert_eq!(sink.wait_for_spans(3, WAIT).await.len(), 3);
}

#[test]
fn a_metrics_port_in_use_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.yaml");
    let yaml = format!(
        "receivers:\n  generations: {{endpoint: 127.0.0.1:0}}\nexporters:\n  debug: {{}}\nservice:\n  telemetry:\n    metrics:\n      prometheus: {{endpoint: 127.0.0.1:{port}}}\n  pipelines:\n    traces: {{receivers: [generations], exporters: [debug]}}\n"
    );
    std::fs::write(&path, yaml).unwrap();
    let mut child = std::process::Command::new(gencol_bin())
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gencol kept running with its metrics port taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    let want = format!("service.telemetry.metrics.prometheus: cannot listen on 127.0.0.1:{port}");
    assert!(stderr.contains(&want), "{stderr}");
    drop(taken);
}

#[tokio::test]
async fn a_failed_push_is_logged_without_the_header_values() {
    const KEY: &str = "push-key-refused-41d0";
    let (push_url, pushes) = metrics_backend(401).await;
    let yaml = pushing_config(&push_url, "debug: {}", "debug");
    let mut gencol = Gencol::start_with_env(&yaml, &[("TEST_METRICS_KEY", KEY)]);
    let deadline = Instant::now() + WAIT;
    while !gencol.stderr().contains("pushing gencol's metrics failed") {
        assert!(Instant::now() < deadline, "no failed push logged within {WAIT:?}:\n{}", gencol.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pushes.0.lock().unwrap().is_empty(), "the backend was reached");
    assert!(gencol.stop(), "a failing push does not stop gencol:\n{}", gencol.stderr());
    let stderr = gencol.stderr();
    let line = stderr.lines().find(|l| l.contains("pushing gencol's metrics failed")).unwrap_or_default();
    assert!(line.contains("401") && line.contains(&push_url), "{line}");
    assert!(!stderr.contains(KEY), "the header value is a secret:\n{stderr}");
}

/// Generations into one exporter (`exporter_yaml`, its id `exporter`), metrics pushed
/// every second to `push_url` with the key from `TEST_METRICS_KEY`.
fn pushing_config(push_url: &str, exporter_yaml: &str, exporter: &str) -> String {
    format!(
        r#"
receivers:
  generations:
    endpoint: 127.0.0.1:{{GEN_PORT}}
exporters:
  {exporter_yaml}
service:
  telemetry:
    metrics:
      otlp:
        endpoint: "{push_url}"
        headers: {{x-api-key: "${{env:TEST_METRICS_KEY}}"}}
        interval: 1s
  pipelines:
    traces: {{receivers: [generations], exporters: [{exporter}]}}
"#
    )
}
