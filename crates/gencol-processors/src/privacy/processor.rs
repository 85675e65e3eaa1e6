//! [`PrivacyFilter`]: removes content, masks personal data and hashes user ids in place.
//!
//! It runs on every span of a pipeline, so the common case (nothing to hide) must cost one
//! prefilter scan per string and no allocation: [`Masker::mask`] answers borrowed then, and
//! a span's [`GenerationContext`] is only copied (`Arc::make_mut`) when something in it
//! actually changes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use gencol_engine::Processor;
use gencol_model::attributes::{STRUCTURAL_KEYS, strip_content};
use gencol_model::{GenerationContext, SpanItem};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as AttrValue};
use serde_json::Value;

use super::PrivacyRules;
use super::mask::{Masker, hash_user_id};

/// Attributes holding JSON text. Masking their parsed strings instead of the raw text means
/// a custom regex can never cut through quotes or brackets and leave broken JSON behind.
const JSON_KEYS: [&str; 5] = [
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.definitions",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
];

/// Attributes that carry the end user's id: `user.id` as OpenRouter and gencol write it,
/// and `enduser.id`, the older OpenTelemetry name for the same thing.
const USER_ID_KEYS: [&str; 2] = ["user.id", "enduser.id"];

/// The `privacy` processor of one pipeline.
pub struct PrivacyFilter {
    drop_content: bool,
    /// Its own copy per pipeline: a cloned regex gets its own match caches, so pipelines
    /// never wait on each other's.
    masker: Masker,
    user_id_salt: Option<String>,
}

impl PrivacyFilter {
    /// A filter applying `rules`.
    pub fn new(rules: &PrivacyRules) -> Self {
        Self {
            drop_content: rules.drop_content,
            masker: rules.masker.clone(),
            user_id_salt: rules.user_id_salt.clone(),
        }
    }

    fn filter(&self, item: &mut SpanItem) {
        let span = &mut item.span;
        self.filter_attributes(&mut span.attributes);
        for event in &mut span.events {
            self.filter_attributes(&mut event.attributes);
        }
        // Provider errors often quote the request back.
        if let Some(status) = &mut span.status {
            mask_in_place(&self.masker, &mut status.message);
        }
        if let Some(ctx) = &mut item.generation {
            self.filter_context(ctx);
        }
    }

    fn filter_attributes(&self, attributes: &mut Vec<KeyValue>) {
        if self.drop_content {
            strip_content(attributes);
        }
        let hashing = self.user_id_salt.as_deref();
        let masking = !self.masker.is_empty();
        if hashing.is_none() && !masking {
            return;
        }
        for kv in attributes.iter_mut() {
            let key = kv.key.as_str();
            let Some(value) = kv.value.as_mut().and_then(|v| v.value.as_mut()) else {
                continue;
            };
            if let Some(salt) = hashing
                && USER_ID_KEYS.contains(&key)
            {
                // Hashed before masking, so two users whose ids are e-mail addresses keep
                // two pseudonyms instead of sharing the hash of one marker.
                if let AttrValue::StringValue(user) = value {
                    *user = hash_user_id(salt, user);
                }
                continue;
            }
            if masking && !STRUCTURAL_KEYS.contains(&key) {
                self.mask_value(value, JSON_KEYS.contains(&key));
            }
        }
    }

    fn mask_value(&self, value: &mut AttrValue, json_key: bool) {
        match value {
            AttrValue::StringValue(text) => {
                if json_key || looks_like_json(text) {
                    mask_json_text(&self.masker, text);
                } else {
                    mask_in_place(&self.masker, text);
                }
            }
            AttrValue::ArrayValue(array) => self.mask_values(&mut array.values),
            AttrValue::KvlistValue(list) => {
                for kv in &mut list.values {
                    if let Some(value) = kv.value.as_mut().and_then(|v| v.value.as_mut()) {
                        self.mask_value(value, false);
                    }
                }
            }
            // Numbers, booleans, bytes and string-table indexes carry no text to mask.
            _ => {}
        }
    }

    fn mask_values(&self, values: &mut [AnyValue]) {
        for value in values.iter_mut().filter_map(|v| v.value.as_mut()) {
            self.mask_value(value, false);
        }
    }

    /// Masks user, session and custom metadata, which `namespace` (possibly later in the
    /// pipeline) and event exporters such as Raindrop read from here, not from attributes.
    fn filter_context(&self, ctx: &mut Arc<GenerationContext>) {
        let user = match (&self.user_id_salt, ctx.user.as_deref()) {
            (Some(salt), Some(user)) => Some(hash_user_id(salt, user)),
            (None, Some(user)) => owned(self.masker.mask(user)),
            (_, None) => None,
        };
        let session = ctx.session_id.as_deref().and_then(|s| owned(self.masker.mask(s)));
        let first_metadata = ctx.metadata.iter().position(|(_, v)| json_has_match(&self.masker, v));
        if user.is_none() && session.is_none() && first_metadata.is_none() {
            return;
        }

        let ctx = Arc::make_mut(ctx);
        if user.is_some() {
            ctx.user = user;
        }
        if session.is_some() {
            ctx.session_id = session;
        }
        if let Some(first) = first_metadata {
            for (_, value) in &mut ctx.metadata[first..] {
                self.masker.mask_json(value);
            }
        }
    }
}

impl Processor for PrivacyFilter {
    fn process(&mut self, items: &mut Vec<SpanItem>, _now: Instant) {
        for item in items.iter_mut() {
            self.filter(item);
        }
    }
}

fn owned(text: Cow<'_, str>) -> Option<String> {
    match text {
        Cow::Owned(s) => Some(s),
        Cow::Borrowed(_) => None,
    }
}

fn mask_in_place(masker: &Masker, text: &mut String) {
    if let Some(masked) = owned(masker.mask(text)) {
        *text = masked;
    }
}

/// Masks the strings inside JSON text and writes it back, but only when the raw text has
/// something to mask: parsing every message list would cost far more than the scan. Text
/// that is not JSON after all (a plain `gen_ai.prompt`) is masked as text.
fn mask_json_text(masker: &Masker, text: &mut String) {
    let Some(masked_text) = owned(masker.mask(text)) else {
        return;
    };
    match serde_json::from_str::<Value>(text) {
        Ok(mut json) => {
            // Nothing inside a string matched: the match spanned JSON syntax (quotes, keys),
            // which is not data, and rewriting it would break the JSON.
            if masker.mask_json(&mut json) {
                *text = json.to_string();
            }
        }
        Err(_) => *text = masked_text,
    }
}

/// Metadata that became a JSON string (`[1, {"x": 2}]`) must stay valid JSON too.
fn looks_like_json(text: &str) -> bool {
    matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['))
}

/// Whether any string inside `value` has something to mask, without changing it.
fn json_has_match(masker: &Masker, value: &Value) -> bool {
    match value {
        Value::String(s) => matches!(masker.mask(s), Cow::Owned(_)),
        Value::Array(items) => items.iter().any(|v| json_has_match(masker, v)),
        Value::Object(map) => map.values().any(|v| json_has_match(masker, v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}
