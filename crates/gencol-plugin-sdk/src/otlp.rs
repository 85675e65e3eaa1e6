//! Working with a batch: walking its spans without the OTLP nesting, OTLP/JSON as
//! OpenTelemetry backends (and OpenRouter's Broadcast) send it, and attribute values as
//! plain JSON for destinations that are not OTLP.

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Map, Value};

use crate::ExportTraceServiceRequest;

/// One span with the resource and scope it was sent under.
#[derive(Clone, Copy, Debug)]
pub struct SpanRef<'a> {
    /// The span.
    pub span: &'a Span,
    /// The resource of its `ResourceSpans` (`service.name` etc.).
    pub resource: Option<&'a Resource>,
    /// The instrumentation scope of its `ScopeSpans`.
    pub scope: Option<&'a InstrumentationScope>,
}

/// Every span of a batch, in order.
pub fn spans(batch: &ExportTraceServiceRequest) -> impl Iterator<Item = SpanRef<'_>> {
    batch.resource_spans.iter().flat_map(|rs| {
        rs.scope_spans.iter().flat_map(move |ss| {
            ss.spans.iter().map(move |span| SpanRef { span, resource: rs.resource.as_ref(), scope: ss.scope.as_ref() })
        })
    })
}

/// Number of spans in a batch.
pub fn span_count(batch: &ExportTraceServiceRequest) -> usize {
    batch.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

/// OTLP/JSON (`application/json`) as the OTLP/HTTP spec writes it: camelCase keys, hex
/// trace and span ids, enums as integers.
pub fn encode_json(batch: &ExportTraceServiceRequest) -> Vec<u8> {
    // The generated types serialise to a Vec without failing: no non-string map keys.
    serde_json::to_vec(batch).unwrap_or_default()
}

/// Lowercase hex of an id (`trace_id`, `span_id`); empty for an empty id.
pub fn hex_id(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute value as plain JSON: strings, numbers, booleans, lists and maps as
/// themselves, bytes as lowercase hex, an empty value as `null`.
pub fn value_to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex_id(b)),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(value_to_json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes_to_json(&kv.values)),
        // A string-table reference (profiles only) has no meaning in a trace.
        #[allow(unreachable_patterns)]
        Some(_) => Value::Null,
    }
}

/// Attributes as a JSON object, key → plain value (a repeated key keeps the last).
pub fn attributes_to_json(attributes: &[KeyValue]) -> Map<String, Value> {
    attributes.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, value_to_json))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    #[test]
    fn spans_walks_the_nesting_and_values_read_plainly() {
        let span = Span {
            name: "chat".into(),
            trace_id: vec![1; 16],
            attributes: vec![
                kv("model", any_value::Value::StringValue("gpt".into())),
                kv("tokens", any_value::Value::IntValue(15)),
                kv(
                    "tags",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue { value: Some(any_value::Value::BoolValue(true)) }],
                    }),
                ),
            ],
            ..Default::default()
        };
        let batch = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span.clone(), span], ..Default::default() }],
                ..Default::default()
            }],
        };
        assert_eq!(span_count(&batch), 2);
        let first = spans(&batch).next().unwrap();
        assert_eq!(hex_id(&first.span.trace_id), "01".repeat(16));
        let attrs = attributes_to_json(&first.span.attributes);
        assert_eq!(Value::Object(attrs), serde_json::json!({"model": "gpt", "tokens": 15, "tags": [true]}));
        let json: Value = serde_json::from_slice(&encode_json(&batch)).unwrap();
        assert_eq!(json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"], "01".repeat(16));
    }
}
