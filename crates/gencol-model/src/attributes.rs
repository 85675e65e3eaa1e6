//! Attribute names gencol writes, and small helpers to build and read OTLP
//! key-values without repeating the nesting of the generated proto types.

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};

/// Attributes that carry prompt or completion content. `privacy_mode` and
/// `privacy.drop_content` remove exactly these (SPEC §5).
pub const CONTENT_KEYS: [&str; 6] = [
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
];

/// Attributes that name things rather than carry user text; pattern masks leave
/// them alone so a model called `x@y` or a response id is never rewritten.
pub const STRUCTURAL_KEYS: [&str; 8] = [
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.id",
    "gen_ai.response.finish_reasons",
    "gen_ai.response.finish_reason",
];

/// Marks a test span or event sent by `gencol test-connection`.
pub const TEST_CONNECTION: &str = "gencol.test_connection";

pub fn string(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

pub fn int(key: &str, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

pub fn double(key: &str, value: f64) -> KeyValue {
    kv(key, Value::DoubleValue(value))
}

pub fn boolean(key: &str, value: bool) -> KeyValue {
    kv(key, Value::BoolValue(value))
}

pub fn string_array(key: &str, values: impl IntoIterator<Item = String>) -> KeyValue {
    let values = values.into_iter().map(|s| AnyValue { value: Some(Value::StringValue(s)) }).collect();
    kv(key, Value::ArrayValue(ArrayValue { values }))
}

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// The value of `key` among `attributes`.
pub fn get<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

pub fn get_str<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match get(attributes, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

pub fn get_i64(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match get(attributes, key)? {
        Value::IntValue(i) => Some(*i),
        Value::DoubleValue(d) => Some(*d as i64),
        Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

pub fn get_f64(attributes: &[KeyValue], key: &str) -> Option<f64> {
    match get(attributes, key)? {
        Value::DoubleValue(d) => Some(*d),
        Value::IntValue(i) => Some(*i as f64),
        Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

/// A JSON value as an attribute value: scalars as scalars, arrays of scalars as
/// arrays, anything else as its JSON text (SPEC §4 `trace.metadata.*`).
pub fn from_json(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    fn scalar(v: &J) -> Option<Value> {
        Some(match v {
            J::String(s) => Value::StringValue(s.clone()),
            J::Bool(b) => Value::BoolValue(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::IntValue(i),
                None => Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => return None,
        })
    }
    if let Some(v) = scalar(value) {
        return v;
    }
    if let J::Array(items) = value
        && let Some(values) = items.iter().map(|i| scalar(i).map(|v| AnyValue { value: Some(v) })).collect()
    {
        return Value::ArrayValue(ArrayValue { values });
    }
    Value::StringValue(crate::content::json_text(value))
}

/// Removes prompt and completion content (`privacy_mode`, `drop_content`).
pub fn strip_content(attributes: &mut Vec<KeyValue>) {
    attributes.retain(|kv| !CONTENT_KEYS.contains(&kv.key.as_str()));
}
