//! Strict field-name check for OTLP/JSON trace requests.
//!
//! The serde impls of `opentelemetry-proto` silently ignore unknown keys, so a body written
//! with snake_case keys (`trace_id`, `resource_spans`) "decodes" into empty or id-less spans
//! and a real backend would drop the data without an error. A test sink must say so loudly:
//! OTLP/JSON requires lowerCamelCase keys and forbids the original proto field names.

use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    /// A scalar or list of scalars: not descended into.
    Leaf,
}

fn fields(msg: Msg) -> &'static [(&'static str, Msg)] {
    use Msg::*;
    match msg {
        Request => &[("resourceSpans", ResourceSpans)],
        ResourceSpans => &[("resource", Resource), ("scopeSpans", ScopeSpans), ("schemaUrl", Leaf)],
        Resource => &[("attributes", KeyValue), ("droppedAttributesCount", Leaf), ("entityRefs", EntityRef)],
        EntityRef => &[("schemaUrl", Leaf), ("type", Leaf), ("idKeys", Leaf), ("descriptionKeys", Leaf)],
        ScopeSpans => &[("scope", Scope), ("spans", Span), ("schemaUrl", Leaf)],
        Scope => &[("name", Leaf), ("version", Leaf), ("attributes", KeyValue), ("droppedAttributesCount", Leaf)],
        Span => &[
            ("traceId", Leaf),
            ("spanId", Leaf),
            ("traceState", Leaf),
            ("parentSpanId", Leaf),
            ("flags", Leaf),
            ("name", Leaf),
            ("kind", Leaf),
            ("startTimeUnixNano", Leaf),
            ("endTimeUnixNano", Leaf),
            ("attributes", KeyValue),
            ("droppedAttributesCount", Leaf),
            ("events", Event),
            ("droppedEventsCount", Leaf),
            ("links", Link),
            ("droppedLinksCount", Leaf),
            ("status", Status),
        ],
        Event => &[("timeUnixNano", Leaf), ("name", Leaf), ("attributes", KeyValue), ("droppedAttributesCount", Leaf)],
        Link => &[
            ("traceId", Leaf),
            ("spanId", Leaf),
            ("traceState", Leaf),
            ("attributes", KeyValue),
            ("droppedAttributesCount", Leaf),
            ("flags", Leaf),
        ],
        Status => &[("message", Leaf), ("code", Leaf)],
        KeyValue => &[("key", Leaf), ("value", AnyValue), ("keyStrindex", Leaf)],
        AnyValue => &[
            ("stringValue", Leaf),
            ("boolValue", Leaf),
            ("intValue", Leaf),
            ("doubleValue", Leaf),
            ("arrayValue", ArrayValue),
            ("kvlistValue", KeyValueList),
            ("bytesValue", Leaf),
            ("stringValueStrindex", Leaf),
        ],
        ArrayValue => &[("values", AnyValue)],
        KeyValueList => &[("values", KeyValue)],
        Leaf => &[],
    }
}

/// Returns a description of the first key that is not an OTLP/JSON field name of the
/// message at its position, with its JSON path, e.g.
/// `unknown field "trace_id" at resourceSpans[0].scopeSpans[0].spans[0]`.
pub(crate) fn first_unknown_field(body: &Value) -> Option<String> {
    let mut path = String::new();
    walk(body, Msg::Request, &mut path)
}

fn walk(value: &Value, msg: Msg, path: &mut String) -> Option<String> {
    match value {
        Value::Object(map) => {
            let known = fields(msg);
            for (key, child) in map {
                let Some((_, child_msg)) = known.iter().find(|(name, _)| name == key) else {
                    let at = if path.is_empty() { "top level" } else { path };
                    let hint = if key.contains('_') { " (OTLP/JSON keys are lowerCamelCase)" } else { "" };
                    return Some(format!("unknown field {key:?} at {at}{hint}"));
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                let found = walk(child, *child_msg, path);
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        Value::Array(items) if !matches!(msg, Msg::Leaf) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, msg, path);
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_camel_case_and_reports_snake_case_with_path() {
        let good = json!({"resourceSpans":[{"resource":{"attributes":[{"key":"a","value":{"kvlistValue":{"values":[{"key":"b","value":{"arrayValue":{"values":[{"intValue":"1"}]}}}]}}}]},
            "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"00","spanId":"01","name":"x","status":{"code":1},"events":[{"name":"e"}]}]}]}]});
        assert_eq!(first_unknown_field(&good), None);

        let bad = json!({"resourceSpans":[{"scopeSpans":[{"spans":[{"trace_id":"00"}]}]}]});
        assert_eq!(
            first_unknown_field(&bad).as_deref(),
            Some(
                "unknown field \"trace_id\" at resourceSpans[0].scopeSpans[0].spans[0] (OTLP/JSON keys are lowerCamelCase)"
            )
        );
        let top = json!({"resource_spans":[]});
        assert!(first_unknown_field(&top).is_some_and(|m| m.contains("resource_spans") && m.contains("top level")));
    }
}
