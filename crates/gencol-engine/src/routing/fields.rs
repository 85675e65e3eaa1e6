//! The fields a filter rule reads (SPEC §11), and where each is on a span: an attribute
//! of SPEC §4, else (for the user, the session and custom metadata, which the `namespace`
//! processor writes later in a pipeline) the generation's own context, so a rule reads the
//! same value wherever it runs.

use std::borrow::Cow;

use gencol_model::SpanItem;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// A field of a filter rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Model,
    Provider,
    SessionId,
    UserId,
    ApiKeyName,
    FinishReason,
    Input,
    Output,
    TotalCost,
    TotalTokens,
    PromptTokens,
    CompletionTokens,
    /// `metadata.<key>`: the record's `trace.metadata.<key>`.
    Metadata(String),
}

/// The field names a rule may use, besides `metadata.<key>`.
pub const FIELD_NAMES: [&str; 12] = [
    "model",
    "provider",
    "session_id",
    "user_id",
    "api_key_name",
    "finish_reason",
    "input",
    "output",
    "total_cost",
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
];

/// What a field holds on one span.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Text(Cow<'a, str>),
    Number(f64),
}

impl FieldValue<'_> {
    /// The value as a number: numbers, and text that reads as one.
    pub fn number(&self) -> Option<f64> {
        match self {
            FieldValue::Number(n) => Some(*n),
            FieldValue::Text(t) => t.trim().parse().ok(),
        }
    }

    /// The value as text: numbers as they are usually written (`5`, `0.25`).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            FieldValue::Text(t) => Cow::Borrowed(t.as_ref()),
            FieldValue::Number(n) => Cow::Owned(number_text(*n)),
        }
    }
}

/// `5` rather than `5.0` for whole numbers.
pub(crate) fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { n.to_string() }
}

impl Field {
    /// Reads a field name; `Err` says what is allowed, with the closest name.
    pub fn parse(name: &str) -> Result<Field, String> {
        let field = match name {
            "model" => Field::Model,
            "provider" => Field::Provider,
            "session_id" => Field::SessionId,
            "user_id" => Field::UserId,
            "api_key_name" => Field::ApiKeyName,
            "finish_reason" => Field::FinishReason,
            "input" => Field::Input,
            "output" => Field::Output,
            "total_cost" => Field::TotalCost,
            "total_tokens" => Field::TotalTokens,
            "prompt_tokens" => Field::PromptTokens,
            "completion_tokens" => Field::CompletionTokens,
            _ => match name.strip_prefix("metadata.") {
                Some(key) if !key.is_empty() => Field::Metadata(key.to_owned()),
                _ => {
                    let closest = gencol_config::closest_name(name, FIELD_NAMES)
                        .map(|f| format!(" (did you mean `{f}`?)"))
                        .unwrap_or_default();
                    return Err(format!(
                        "unknown filter field `{name}`{closest}: use one of {}, or `metadata.<key>` for custom metadata",
                        FIELD_NAMES.join(", ")
                    ));
                }
            },
        };
        Ok(field)
    }

    /// Whether the field holds a number (`equals` then compares numerically, and a rule's
    /// value must be a number).
    pub fn is_number(&self) -> bool {
        matches!(self, Field::TotalCost | Field::TotalTokens | Field::PromptTokens | Field::CompletionTokens)
    }

    /// The attributes that hold the field, the first present one winning.
    fn keys(&self) -> &'static [&'static str] {
        match self {
            Field::Model => &["gen_ai.request.model"],
            Field::Provider => &["gen_ai.provider.name"],
            Field::SessionId => &["session.id"],
            Field::UserId => &["user.id"],
            Field::ApiKeyName => &["api_key.name"],
            Field::FinishReason => &["gen_ai.response.finish_reason"],
            Field::Input => &["gen_ai.input.messages", "gen_ai.prompt"],
            Field::Output => &["gen_ai.output.messages", "gen_ai.completion"],
            Field::TotalCost => &["gen_ai.usage.total_cost"],
            Field::TotalTokens => &["gen_ai.usage.total_tokens"],
            Field::PromptTokens => &["gen_ai.usage.input_tokens"],
            Field::CompletionTokens => &["gen_ai.usage.output_tokens"],
            Field::Metadata(_) => &[],
        }
    }

    /// The field's value on `item`, if it has one.
    pub fn read<'a>(&self, item: &'a SpanItem) -> Option<FieldValue<'a>> {
        let attributes = &item.span.attributes;
        let found = match self {
            Field::Metadata(key) => {
                attributes.iter().find(|kv| kv.key.strip_prefix("trace.metadata.").is_some_and(|k| k == key))
            }
            _ => self.keys().iter().find_map(|key| attributes.iter().find(|kv| kv.key == *key)),
        };
        if let Some(value) = found.and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref()) {
            return attribute_value(value);
        }
        let ctx = item.generation.as_deref()?;
        match self {
            Field::UserId => ctx.user.as_deref().map(|u| FieldValue::Text(Cow::Borrowed(u))),
            Field::SessionId => ctx.session_id.as_deref().map(|s| FieldValue::Text(Cow::Borrowed(s))),
            Field::Metadata(key) => ctx.metadata.iter().find(|(k, _)| k == key).and_then(|(_, v)| json_value(v)),
            _ => None,
        }
    }
}

fn attribute_value(value: &Value) -> Option<FieldValue<'_>> {
    Some(match value {
        Value::StringValue(s) => FieldValue::Text(Cow::Borrowed(s)),
        Value::IntValue(i) => FieldValue::Number(*i as f64),
        Value::DoubleValue(d) => FieldValue::Number(*d),
        Value::BoolValue(b) => FieldValue::Text(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::ArrayValue(a) => {
            let parts: Vec<String> = a
                .values
                .iter()
                .filter_map(|v| v.value.as_ref().and_then(attribute_value))
                .map(|v| v.text().into_owned())
                .collect();
            FieldValue::Text(Cow::Owned(parts.join(",")))
        }
        _ => return None,
    })
}

fn json_value(value: &serde_json::Value) -> Option<FieldValue<'_>> {
    use serde_json::Value as J;
    Some(match value {
        J::Null => return None,
        J::String(s) => FieldValue::Text(Cow::Borrowed(s)),
        J::Number(n) => FieldValue::Number(n.as_f64()?),
        J::Bool(b) => FieldValue::Text(Cow::Borrowed(if *b { "true" } else { "false" })),
        other => FieldValue::Text(Cow::Owned(other.to_string())),
    })
}
