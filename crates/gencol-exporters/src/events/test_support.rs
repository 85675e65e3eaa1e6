//! What the events exporters' tests share: generation spans made from records (the
//! Raindrop seed, the example every events destination is checked against) or as an OTel
//! GenAI-instrumented app sends them, and settings checked as `gencol validate` does.

use std::sync::Arc;

use gencol_config::{ComponentId, Diagnostic, Located, Node, decode, load_str};
use gencol_engine::{ComponentContext, ExporterFactory};
use gencol_model::{Generation, Origin, SpanItem, generation_span};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::de::DeserializeOwned;
use serde_json::Value;

const SEED: &str = include_str!("../../../../examples/generations/raindrop-seed.json");

/// `examples/generations/raindrop-seed.json`.
pub fn seed() -> Value {
    serde_json::from_str(SEED).expect("the seed is JSON")
}

/// The generation span of a record, as the `generations` receiver makes it.
pub fn generation(record: Value) -> SpanItem {
    let g: Generation = serde_json::from_value(record).expect("a generation record");
    generation_span(&g, &Arc::new(Origin::default()))
}

/// A span as an OTel GenAI-instrumented app (or OpenRouter's Broadcast) sends it over OTLP:
/// trace `4b…`, span `0f…`, 750 ms from 2026-11-22T10:00:00Z.
pub fn otlp_span(attributes: Vec<KeyValue>) -> SpanItem {
    SpanItem {
        origin: Arc::new(Origin::default()),
        span: Span {
            trace_id: vec![0x4b; 16],
            span_id: vec![0x0f; 8],
            name: "chat gpt-4o".into(),
            start_time_unix_nano: 1_795_341_600_000_000_000,
            end_time_unix_nano: 1_795_341_600_750_000_000,
            attributes,
            ..Default::default()
        },
        generation: None,
    }
}

fn node(yaml: &str) -> Located<Node> {
    load_str("exporter.yaml", yaml, &|_| None).expect("valid YAML")
}

/// The errors of an exporter's config, one line each, as `gencol validate` prints them;
/// empty when it is valid.
pub fn config_errors(factory: &dyn ExporterFactory, yaml: &str) -> String {
    let ctx = ComponentContext { id: ComponentId { kind: factory.kind().into(), name: None }, base_dir: ".".into() };
    match factory.configure(&ctx, &node(yaml)) {
        Ok(_) => String::new(),
        Err(diags) => diags.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
    }
}

/// Settings decoded and checked; panics with the diagnostics when they are invalid.
pub fn checked<S: DeserializeOwned, T>(
    yaml: &str,
    check: impl FnOnce(S, &Located<Node>) -> Result<T, Vec<Diagnostic>>,
) -> T {
    let n = node(yaml);
    let settings: S = decode(&n).expect("decodes");
    check(settings, &n).unwrap_or_else(|d| panic!("{d:?}"))
}
