//! One span as one flat JSON object: what a person reading the file with `jq` wants
//! (hex ids first, plain attribute values, the duration) rather than OTLP's nesting.

use gencol_plugin_sdk::otlp::{SpanRef, attributes_to_json, hex_id};
use serde::Serialize;
use serde_json::{Map, Value};

/// The line, field by field in the order written (a struct keeps the order; a JSON map
/// would sort the keys and put `attributes` first).
#[derive(Serialize)]
pub struct SpanLine {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    name: String,
    kind: i32,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    duration_ms: f64,
    status: Option<Status>,
    attributes: Map<String, Value>,
    events: Vec<Event>,
    resource: Map<String, Value>,
    scope: Option<Scope>,
}

#[derive(Serialize)]
struct Status {
    code: i32,
    message: String,
}

#[derive(Serialize)]
struct Event {
    name: String,
    time_unix_nano: u64,
    attributes: Map<String, Value>,
}

#[derive(Serialize)]
struct Scope {
    name: String,
    version: String,
}

/// The line written for `s`.
pub fn span_line(s: &SpanRef<'_>) -> SpanLine {
    let span = s.span;
    SpanLine {
        trace_id: hex_id(&span.trace_id),
        span_id: hex_id(&span.span_id),
        parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex_id(&span.parent_span_id)),
        name: span.name.clone(),
        kind: span.kind,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        duration_ms: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e6,
        status: span.status.as_ref().map(|st| Status { code: st.code, message: st.message.clone() }),
        attributes: attributes_to_json(&span.attributes),
        events: span
            .events
            .iter()
            .map(|e| Event {
                name: e.name.clone(),
                time_unix_nano: e.time_unix_nano,
                attributes: attributes_to_json(&e.attributes),
            })
            .collect(),
        resource: s.resource.map(|r| attributes_to_json(&r.attributes)).unwrap_or_default(),
        scope: s.scope.map(|sc| Scope { name: sc.name.clone(), version: sc.version.clone() }),
    }
}
