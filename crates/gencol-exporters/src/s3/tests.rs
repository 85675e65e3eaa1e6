use std::io::Read;
use std::sync::Arc;

use gencol_config::{Located, Node};
use gencol_model::{Origin, SpanItem, attributes as attr};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::config::{PartitionBy, S3ExporterSettings, SpanSelection};
use super::object::{Layout, is_generation};
use super::*;

const HOUR_NS: u64 = 3_600_000_000_000;
/// 2026-12-04T03:00:00Z.
const T0: u64 = 1_796_353_200_000_000_000;

fn item(trace: u8, span: u8, start: u64, generation: bool) -> SpanItem {
    let mut attributes = vec![attr::string("gencol.test", "x")];
    if generation {
        attributes.push(attr::string("gen_ai.request.model", "openai/gpt-4o"));
    }
    SpanItem {
        origin: Arc::new(Origin { resource: gencol_model::service_resource("gateway"), ..Default::default() }),
        span: Span {
            trace_id: vec![trace; 16],
            span_id: vec![span; 8],
            name: "chat".into(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000,
            attributes,
            ..Default::default()
        },
        generation: None,
    }
}

fn gunzip(body: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(body).read_to_string(&mut out).expect("gzip");
    out
}

fn layout(partition_by: PartitionBy, spans: SpanSelection) -> Layout {
    Layout { prefix: "gen/".into(), partition_by, spans }
}

#[test]
fn a_batch_becomes_one_object_per_hour_of_generation_lines_keyed_by_its_spans() {
    let batch = vec![
        item(1, 1, T0 + 5_000_000_000, true),
        item(1, 2, T0 + HOUR_NS + 1, true),
        item(1, 3, T0 + 1, false),
        item(2, 4, T0 + 2, true),
    ];
    let objects = layout(PartitionBy::Hour, SpanSelection::Generations).objects(&batch);
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0].starts_with("gen/year=2026/month=12/day=04/hour=03/20261204T030000Z-"), "{keys:?}");
    assert!(keys[1].starts_with("gen/year=2026/month=12/day=04/hour=04/20261204T040000Z-"), "{keys:?}");
    assert!(keys.iter().all(|k| k.ends_with(".ndjson.gz")));
    let first = gunzip(&objects[0].body);
    let lines: Vec<serde_json::Value> = first.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    // The root span (not a generation) is left out; each line is a one-span request.
    assert_eq!(lines.len(), 2);
    assert_eq!(objects[0].spans, 2);
    for line in &lines {
        let rs = &line["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["value"]["stringValue"], "gateway");
        assert_eq!(rs["scopeSpans"][0]["spans"].as_array().unwrap().len(), 1);
    }
    assert_eq!(lines[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"], "0101010101010101");

    // The same batch gives the same keys and bytes; other spans, another key.
    let again = layout(PartitionBy::Hour, SpanSelection::Generations).objects(&batch);
    assert_eq!(again.iter().map(|o| &o.key).collect::<Vec<_>>(), objects.iter().map(|o| &o.key).collect::<Vec<_>>());
    let other = layout(PartitionBy::Hour, SpanSelection::Generations).objects(&batch[..1]);
    assert_ne!(other[0].key, objects[0].key);
}

#[test]
fn partitions_by_day_or_not_at_all_and_all_spans_on_request() {
    let batch = vec![item(1, 1, T0, true), item(1, 2, T0 + HOUR_NS, false)];
    let day = layout(PartitionBy::Day, SpanSelection::All).objects(&batch);
    assert_eq!(day.len(), 1);
    assert!(day[0].key.starts_with("gen/year=2026/month=12/day=04/2026"), "{}", day[0].key);
    assert_eq!(gunzip(&day[0].body).lines().count(), 2);
    let flat = layout(PartitionBy::None, SpanSelection::All).objects(&batch);
    assert!(flat[0].key.starts_with("gen/20261204T030000Z-"), "{}", flat[0].key);
    assert!(layout(PartitionBy::Hour, SpanSelection::Generations).objects(&batch[1..]).is_empty());
    assert!(is_generation(&batch[0]) && !is_generation(&batch[1]));
}

fn settings(yaml: &str) -> Result<S3Settings, Vec<String>> {
    let node: Located<Node> = gencol_config::load_str("s3.yaml", yaml, &|_| None).expect("yaml");
    let raw: S3ExporterSettings = gencol_config::decode(&node).map_err(|d| vec![d.to_string()])?;
    raw.check(&node).map_err(|ds| ds.iter().map(|d| d.to_string()).collect())
}

#[test]
fn settings_mistakes_are_named_at_their_line_without_the_keys() {
    let errors = settings(
        "bucket: Not_A_Bucket\nprefix: /x\nendpoint: http://user:pw@minio:9000\nsecret_access_key: sekrit-value\nmax_object_spans: 0\nmax_object_age: 2h\n",
    )
    .unwrap_err();
    let all = errors.join("\n");
    assert!(all.contains("s3.yaml:1") && all.contains("not a valid bucket name"), "{all}");
    assert!(all.contains("s3.yaml:2") && all.contains("must not start with `/`"), "{all}");
    assert!(all.contains("s3.yaml:3") && all.contains("user name or password"), "{all}");
    assert!(all.contains("access_key_id is missing"), "{all}");
    assert!(all.contains("s3.yaml:5") && all.contains("max_object_spans"), "{all}");
    assert!(all.contains("s3.yaml:6") && all.contains("max_object_age"), "{all}");
    assert!(!all.contains("sekrit-value") && !all.contains("pw@"), "{all}");

    let s = settings("bucket: archive\nprefix: gencol\naccess_key_id: AKIAEXAMPLE\nsecret_access_key: sekrit-value\n")
        .unwrap();
    assert_eq!(s.prefix, "gencol/");
    assert_eq!((s.max_object_spans, s.max_object_bytes, s.max_object_age.as_secs()), (10_000, 8 << 20, 60));
    let shown = format!("{s:?}");
    assert!(!shown.contains("sekrit") && !shown.contains("AKIAEXAMPLE"), "{shown}");
}

#[test]
fn store_errors_are_classified_by_status_and_read_from_the_xml() {
    let s = settings(
        "bucket: archive\nendpoint: http://127.0.0.1:1\naccess_key_id: AKIAEXAMPLE\nsecret_access_key: sekrit-value\n",
    )
    .unwrap();
    let exporter = S3Exporter::new("s3", &s, |_| None).expect("built");
    assert_eq!(exporter.batching().map(|b| b.max_spans), Some(10_000));
    let denied = object_store::Error::PermissionDenied {
        path: "k".into(),
        source: "Server returned non-2xx status code: 403 Forbidden: <Error><Code>InvalidAccessKeyId</Code><Message>No such key AKIAEXAMPLE</Message></Error>".into(),
    };
    let e = exporter.classify("k", denied);
    let text = e.to_string();
    assert!(matches!(e, ExportError::Permanent { .. }));
    assert!(text.contains("403 InvalidAccessKeyId: No such key ***"), "{text}");
    assert!(text.contains("s3://archive/ at http://127.0.0.1:1"), "{text}");
    let slow = object_store::Error::Generic {
        store: "S3",
        source: "Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>".into(),
    };
    assert!(matches!(exporter.classify("k", slow), ExportError::Retryable { .. }));
    let aborted = object_store::Error::Generic {
        store: "S3",
        source: "Server returned non-2xx status code: 400 Bad Request: <Error><Code>RequestTimeout</Code></Error>"
            .into(),
    };
    assert!(matches!(exporter.classify("k", aborted), ExportError::Retryable { .. }));
    let moved = object_store::Error::Generic {
        store: "S3",
        source: "Received redirect without LOCATION, this normally indicates an incorrectly configured region".into(),
    };
    let moved = exporter.classify("k", moved);
    assert!(matches!(moved, ExportError::Permanent { .. }) && moved.to_string().contains("set `region`"), "{moved}");
    let bad = object_store::Error::Generic {
        store: "S3",
        source: "Server returned non-2xx status code: 400 Bad Request: x".into(),
    };
    assert!(matches!(exporter.classify("k", bad), ExportError::Permanent { .. }));
    let refused =
        object_store::Error::Generic { store: "S3", source: "error sending request: connection refused".into() };
    assert!(matches!(exporter.classify("k", refused), ExportError::Retryable { .. }));
}
