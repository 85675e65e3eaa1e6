//! [`RequestAttributes`]: writes user, session and custom metadata onto generation spans.

use std::time::Instant;

use gencol_engine::Processor;
use gencol_model::attributes::{self as attr, from_json};
use gencol_model::{GenerationContext, SpanItem};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as AttrValue};
use serde_json::Value;

use super::NamespaceSettings;

/// OTel's GenAI name for the conversation a generation belongs to, written beside the
/// configurable session attribute so GenAI-aware backends group turns too.
const CONVERSATION_ID: &str = "gen_ai.conversation.id";

/// The `namespace` processor of one pipeline.
pub struct RequestAttributes {
    metadata_prefix: String,
    user_attribute: String,
    session_attribute: String,
    /// Scratch for `<prefix><key>.<nested>`, reused so flattening does not allocate a
    /// key per level.
    key: String,
}

impl RequestAttributes {
    /// A processor writing under the given names.
    pub fn new(settings: &NamespaceSettings) -> Self {
        Self {
            metadata_prefix: settings.metadata_prefix.clone(),
            user_attribute: settings.user_attribute.clone(),
            session_attribute: settings.session_attribute.clone(),
            key: String::with_capacity(64),
        }
    }

    fn annotate(&mut self, attributes: &mut Vec<KeyValue>, ctx: &GenerationContext) {
        if let Some(user) = &ctx.user {
            add(attributes, &self.user_attribute, || AttrValue::StringValue(user.clone()));
        }
        if let Some(session) = &ctx.session_id {
            add(attributes, &self.session_attribute, || AttrValue::StringValue(session.clone()));
            add(attributes, CONVERSATION_ID, || AttrValue::StringValue(session.clone()));
        }
        for (key, value) in &ctx.metadata {
            self.key.clear();
            self.key.push_str(&self.metadata_prefix);
            self.key.push_str(key);
            flatten(attributes, &mut self.key, value);
        }
    }
}

impl Processor for RequestAttributes {
    fn process(&mut self, items: &mut Vec<SpanItem>, _now: Instant) {
        for item in items.iter_mut() {
            if let Some(ctx) = item.generation.as_deref() {
                self.annotate(&mut item.span.attributes, ctx);
            }
        }
    }
}

/// Nested objects become dotted keys (`a: {b: 1}` → `<key>.b`); everything else is one
/// attribute as [`from_json`] maps it. An empty object stays `{}` so its key is not lost.
fn flatten(attributes: &mut Vec<KeyValue>, key: &mut String, value: &Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let len = key.len();
            for (name, inner) in map {
                key.truncate(len);
                key.push('.');
                key.push_str(name);
                flatten(attributes, key, inner);
            }
            key.truncate(len);
        }
        _ => add(attributes, key, || from_json(value)),
    }
}

/// Adds `key` unless the span already has it: what the sender (or an earlier processor)
/// wrote wins over a derived value.
fn add(attributes: &mut Vec<KeyValue>, key: &str, value: impl FnOnce() -> AttrValue) {
    if attributes.iter().any(|kv| kv.key == key) {
        return;
    }
    attributes.push(attr::kv(key, value()));
}
