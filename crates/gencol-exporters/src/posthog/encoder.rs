//! Generation spans → PostHog `$ai_generation` events, and events → `/batch/` request
//! bodies within PostHog's limits.
//!
//! The property names and shapes are PostHog's LLM analytics manual-capture schema
//! (https://posthog.com/docs/llm-analytics/manual-capture,
//! https://posthog.com/docs/llm-analytics/generations); the envelope is the capture API's
//! batch (https://posthog.com/docs/api/capture). Spans are read through
//! [`GenerationSpan`], so GenAI spans received over OTLP become events the same way as
//! generation records.

use gencol_model::attributes as attr;
use gencol_model::{SpanItem, Timestamp};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as AttrValue};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::Serialize;
use serde_json::{Map, Number, Value, json};
use sha2::{Digest, Sha256};

use crate::events::limits::{BodyShape, cut_longest, json_len};
use crate::events::{EventTooLarge, GenerationSpan, non_empty};

/// The event PostHog's LLM analytics reads a generation from.
pub const GENERATION_EVENT: &str = "$ai_generation";
/// The event `gencol test-connection` sends, kept out of LLM analytics.
pub const TEST_CONNECTION_EVENT: &str = "gencol_test_connection";
/// Largest request body sent: PostHog's Python SDK's batch ceiling (PostHog/posthog-python
/// #108), well under the 20 MB the batch endpoint documents
/// (https://posthog.com/docs/api/capture), so a retried request stays cheap.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// Largest serialized event: capture refuses an event over about 1 MB, the Kafka message
/// limit behind it ("maximum event size exceeded", PostHog/posthog#66092); the Python SDK
/// keeps events under 900 KiB for the same reason (PostHog/posthog-python#108).
pub const MAX_EVENT_BYTES: usize = 900 * 1024;
/// The properties that carry prompt and completion content: cut, longest text first, when
/// an event is over [`MAX_EVENT_BYTES`].
const CONTENT_PROPERTIES: [&str; 3] = ["$ai_input", "$ai_output_choices", "$ai_tools"];
/// Keys inside content whose values are names, not text: never cut.
const NAME_KEYS: [&str; 4] = ["role", "type", "name", "id"];
/// The characters PostHog allows in `$ai_trace_id` besides letters and digits.
const TRACE_ID_SYMBOLS: &str = "-_~.@()!':|";

/// One event of a batch: exactly the capture API's keys, a struct so no other can be
/// written by mistake.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub event: String,
    pub distinct_id: String,
    /// RFC 3339 UTC with milliseconds: when the generation started.
    pub timestamp: String,
    /// Derived from the generation id, so a generation sent twice is one event: PostHog
    /// dedupes events that share a uuid (the SDKs' `uuid` option, `@posthog/types`).
    pub uuid: String,
    pub properties: Map<String, Value>,
}

/// Turns spans into events with the exporter's default `distinct_id`.
#[derive(Clone, Debug)]
pub struct EventMapper {
    anonymous_distinct_id: String,
}

impl EventMapper {
    pub fn new(anonymous_distinct_id: impl Into<String>) -> Self {
        EventMapper { anonymous_distinct_id: anonymous_distinct_id.into() }
    }

    /// The `$ai_generation` event for a generation span; `None` for spans that are not LLM
    /// calls.
    pub fn event(&self, item: &SpanItem) -> Option<Event> {
        let g = GenerationSpan::of(item)?;
        let id = g.id();
        let user = g.user();
        Some(Event {
            event: GENERATION_EVENT.to_owned(),
            distinct_id: user.unwrap_or(&self.anonymous_distinct_id).to_owned(),
            timestamp: Timestamp(g.span.start_time_unix_nano).to_rfc3339_millis(),
            uuid: generation_uuid(&id),
            properties: properties(&g, user.is_some()),
        })
    }

    /// The one event `gencol test-connection` sends: its own event name (so it never shows
    /// as a generation), marked, under the anonymous `distinct_id` without a person profile.
    pub fn test_connection_event(&self, now: Timestamp, random: [u8; 16]) -> Event {
        let mut properties = Map::new();
        properties.insert(attr::TEST_CONNECTION.to_owned(), Value::Bool(true));
        properties.insert("$process_person_profile".to_owned(), Value::Bool(false));
        library(&mut properties);
        Event {
            event: TEST_CONNECTION_EVENT.to_owned(),
            distinct_id: self.anonymous_distinct_id.clone(),
            timestamp: now.to_rfc3339_millis(),
            uuid: uuid_text(random, 4),
            properties,
        }
    }
}

/// A UUID (RFC 9562 version 8, the version for names hashed with SHA-256) from the
/// generation id: the same generation always has the same event uuid.
pub fn generation_uuid(generation_id: &str) -> String {
    let digest = Sha256::new().chain_update(b"gencol:event:").chain_update(generation_id.as_bytes()).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid_text(bytes, 8)
}

/// `bytes` as a UUID of `version` with the RFC 9562 variant, in the 8-4-4-4-12 form.
fn uuid_text(mut bytes: [u8; 16], version: u8) -> String {
    bytes[6] = (bytes[6] & 0x0f) | (version << 4);
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The event's properties: custom metadata first, so the generation's own facts win a name
/// clash.
fn properties(g: &GenerationSpan<'_>, has_user: bool) -> Map<String, Value> {
    let a = g.attributes();
    let mut p = Map::new();
    for (key, value) in g.metadata() {
        p.insert(custom_key(key), value);
    }
    if let Some(name) = g.ctx.and_then(|c| non_empty(c.trace_name.as_deref())) {
        // As OpenRouter's Broadcast sends it: a plain property, not an `$ai_*` one.
        p.insert("trace_name".to_owned(), Value::from(name));
    }
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            p.insert(key.to_owned(), v);
        }
    };
    let number = |v: Option<f64>| v.and_then(Number::from_f64).map(Value::Number);
    // A count below zero is a broken instrumentation's, not a count.
    let count = |n: Option<i64>| n.filter(|n| *n >= 0).map(Value::from);
    let int = |key: &str, fallback: &str| attr::get_i64(a, key).or_else(|| attr::get_i64(a, fallback));

    put("$ai_trace_id", Some(Value::from(trace_id(g))));
    put("$ai_session_id", g.session().map(Value::from));
    put("$ai_span_id", Some(Value::from(hex::encode(&g.span.span_id))));
    let parent = &g.span.parent_span_id;
    put("$ai_parent_id", parent.iter().any(|b| *b != 0).then(|| Value::from(hex::encode(parent))));
    put("$ai_span_name", g.chosen_name().map(Value::from));
    put("$ai_model", g.model().map(Value::from));
    put("$ai_provider", g.provider().map(Value::from));
    put("$ai_input", input_messages(a));
    put("$ai_output_choices", output_choices(a));
    put("$ai_tools", json_attribute(a, "gen_ai.tool.definitions").filter(Value::is_array));
    put("$ai_input_tokens", count(g.input_tokens()));
    put("$ai_output_tokens", count(g.output_tokens()));
    put(
        "$ai_cache_read_input_tokens",
        count(int("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.input_tokens.cached")),
    );
    put(
        "$ai_reasoning_tokens",
        count(int("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.output_tokens.reasoning")),
    );
    put("$ai_input_cost_usd", number(attr::get_f64(a, "gen_ai.usage.input_cost")));
    put("$ai_output_cost_usd", number(attr::get_f64(a, "gen_ai.usage.output_cost")));
    put("$ai_total_cost_usd", number(g.total_cost()));
    put("$ai_latency", number(g.duration_nanos().map(|ns| ns as f64 / 1e9)));
    put("$ai_time_to_first_token", number(attr::get_f64(a, "gen_ai.response.time_to_first_chunk")));
    if let Some(AttrValue::BoolValue(stream)) = attr::get(a, "gen_ai.request.stream") {
        put("$ai_stream", Some(Value::Bool(*stream)));
    }
    put("$ai_http_status", http_status(a).map(Value::from));
    let error = error_message(g);
    put("$ai_is_error", Some(Value::Bool(error.is_some())));
    put("$ai_error", error.map(Value::from));
    if !has_user {
        // No person to attach it to: an anonymous event, which creates no person profile
        // (https://posthog.com/docs/product-analytics/installation/api).
        put("$process_person_profile", Some(Value::Bool(false)));
    }
    library(&mut p);
    p
}

/// `$lib` and `$lib_version`, as PostHog's own SDKs mark the events they send.
fn library(p: &mut Map<String, Value>) {
    p.insert("$lib".to_owned(), Value::from("gencol"));
    p.insert("$lib_version".to_owned(), Value::from(gencol_model::VERSION));
}

/// PostHog reserves `$` names for its own properties (`$set` even updates the person), so a
/// custom key that starts with one goes as `metadata_<key>`, OpenRouter's name for it.
fn custom_key(key: String) -> String {
    if key.starts_with('$') { format!("metadata_{key}") } else { key }
}

/// The client's `trace_id` when PostHog takes it as is (letters, digits and
/// [`TRACE_ID_SYMBOLS`] only), so the trace shows under the name the client knows; else the
/// span's trace id in hex, which groups the same generations (SPEC §3 derives it from the
/// client's).
fn trace_id(g: &GenerationSpan<'_>) -> String {
    let client = g.ctx.and_then(|c| non_empty(c.trace_id_raw.as_deref())).map(str::trim);
    if let Some(id) = client.filter(|id| id.chars().all(|c| c.is_ascii_alphanumeric() || TRACE_ID_SYMBOLS.contains(c)))
    {
        return id.to_owned();
    }
    g.trace_id_hex().unwrap_or_else(|| generation_uuid(&g.id()))
}

/// The LLM API's HTTP status: the OTel attribute, else a failed generation's `error.status`,
/// which the record's `error.type` carries when no type was given.
fn http_status(a: &[KeyValue]) -> Option<i64> {
    attr::get_i64(a, "http.response.status_code")
        .or_else(|| attr::get_str(a, "error.type").and_then(|t| t.parse::<i64>().ok()))
        .filter(|s| (100..=599).contains(s))
}

/// Why the generation failed: the span status message, else the error type; `None` when it
/// did not.
fn error_message(g: &GenerationSpan<'_>) -> Option<String> {
    let status = g.span.status.as_ref().filter(|s| s.code == StatusCode::Error as i32);
    let error_type = g.text("error.type");
    if status.is_none() && error_type.is_none() {
        return None;
    }
    let message = status.and_then(|s| non_empty(Some(s.message.as_str())));
    Some(message.or(error_type).unwrap_or("error").to_owned())
}

fn json_attribute(a: &[KeyValue], key: &str) -> Option<Value> {
    attr::get_str(a, key).and_then(|s| serde_json::from_str(s).ok())
}

/// `$ai_input`: the system instructions, then the request's messages, each `{role,
/// content}`; from the older `gen_ai.prompt` when the structured form is absent.
fn input_messages(a: &[KeyValue]) -> Option<Value> {
    let mut messages = Vec::new();
    if let Some(Value::Array(parts)) = json_attribute(a, "gen_ai.system_instructions") {
        messages.push(json!({"role": "system", "content": content(&parts)}));
    }
    match json_attribute(a, "gen_ai.input.messages") {
        Some(Value::Array(list)) => messages.extend(list.iter().map(|m| message(m, "user"))),
        _ => messages.extend(attr::get_str(a, "gen_ai.prompt").map(legacy_prompt).unwrap_or_default()),
    }
    (!messages.is_empty()).then_some(Value::Array(messages))
}

/// `$ai_output_choices`: one `{role, content}` per choice; from the older
/// `gen_ai.completion` when the structured form is absent.
fn output_choices(a: &[KeyValue]) -> Option<Value> {
    match json_attribute(a, "gen_ai.output.messages") {
        Some(Value::Array(list)) => Some(Value::Array(list.iter().map(|m| message(m, "assistant")).collect())),
        _ => attr::get_str(a, "gen_ai.completion")
            .filter(|c| !c.is_empty())
            .map(|c| json!([{"role": "assistant", "content": c}])),
    }
}

/// An OTel GenAI message (`{role, parts: [...]}`) as PostHog shows one.
fn message(m: &Value, default_role: &str) -> Value {
    let role = m.get("role").and_then(Value::as_str).filter(|r| !r.trim().is_empty()).unwrap_or(default_role);
    let mut out = Map::new();
    out.insert("role".to_owned(), Value::from(role));
    let content = match m.get("parts") {
        Some(Value::Array(parts)) => content(parts),
        _ => m.get("content").cloned().unwrap_or_else(|| Value::from("")),
    };
    out.insert("content".to_owned(), content);
    if let Some(name) = m.get("name").filter(|n| n.is_string()) {
        out.insert("name".to_owned(), name.clone());
    }
    Value::Object(out)
}

/// Plain text when every part is text (PostHog's simplest form), else one entry per part:
/// text as `{type: "text", text}`, a tool call as `{type: "function", id, function: {name,
/// arguments}}`, anything else as it came.
fn content(parts: &[Value]) -> Value {
    let is_text = |p: &Value| p.get("type").and_then(Value::as_str) == Some("text");
    if parts.iter().all(is_text) {
        return Value::from(parts.iter().filter_map(|p| p.get("content").and_then(Value::as_str)).collect::<String>());
    }
    let part = |p: &Value| match p.get("type").and_then(Value::as_str) {
        Some("text") => json!({"type": "text", "text": p.get("content").cloned().unwrap_or_else(|| Value::from(""))}),
        Some("tool_call") => json!({"type": "function", "id": p.get("id"), "function": {
            "name": p.get("name"), "arguments": p.get("arguments")}}),
        _ => p.clone(),
    };
    Value::Array(parts.iter().map(part).collect())
}

/// `gen_ai.prompt`: the request's messages as OpenAI JSON, or the prompt text.
fn legacy_prompt(prompt: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(prompt) {
        Ok(Value::Array(list)) if list.iter().any(|m| m.get("role").is_some()) => list
            .iter()
            .filter(|m| m.is_object())
            .map(|m| {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                json!({"role": role, "content": m.get("content").filter(|c| !c.is_null()).cloned().unwrap_or_else(|| Value::from(""))})
            })
            .collect(),
        _ if !prompt.is_empty() => vec![json!({"role": "user", "content": prompt})],
        _ => Vec::new(),
    }
}

/// Serializes an event within [`MAX_EVENT_BYTES`]: when its content makes it too large,
/// the longest texts in it are cut (each ending with the marker) rather than losing the
/// whole generation.
pub fn encode(mut event: Event) -> Result<Vec<u8>, EventTooLarge> {
    let json = to_json(&event);
    if json.len() <= MAX_EVENT_BYTES {
        return Ok(json);
    }
    let too_large = |event: Event, bytes| EventTooLarge {
        event_id: event.uuid,
        bytes,
        limit: MAX_EVENT_BYTES,
        destination: "PostHog",
    };
    let mut texts: Vec<&mut String> = Vec::new();
    for (_, value) in event.properties.iter_mut().filter(|(k, _)| CONTENT_PROPERTIES.contains(&k.as_str())) {
        texts_in(value, &mut texts);
    }
    let texts_len: usize = texts.iter().map(|t| json_len(t)).sum();
    if let Err(smallest) = cut_longest(&mut texts, json.len() - MAX_EVENT_BYTES) {
        return Err(too_large(event, json.len() - texts_len + smallest));
    }
    let json = to_json(&event);
    if json.len() > MAX_EVENT_BYTES {
        return Err(too_large(event, json.len()));
    }
    Ok(json)
}

/// Every string inside `value` but the names ([`NAME_KEYS`]).
fn texts_in<'a>(value: &'a mut Value, out: &mut Vec<&'a mut String>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter_mut().for_each(|v| texts_in(v, out)),
        Value::Object(map) => {
            map.iter_mut().filter(|(k, _)| !NAME_KEYS.contains(&k.as_str())).for_each(|(_, v)| texts_in(v, out))
        }
        _ => {}
    }
}

fn to_json(event: &Event) -> Vec<u8> {
    // Strings, integers, finite numbers and JSON values with string keys always serialize.
    serde_json::to_vec(event).unwrap_or_default()
}

/// What comes before the first event of every body: the project API key and the batch
/// flag. `historical_migration: false` is the capture API's flag for live events.
pub fn body_open(api_key: &str) -> Vec<u8> {
    let key = Value::from(api_key).to_string();
    format!("{{\"api_key\":{key},\"historical_migration\":false,\"batch\":[").into_bytes()
}

/// The `/batch/` body around events: `{"api_key": ..., "batch": [events]}`, at most
/// [`MAX_BODY_BYTES`].
pub fn body_shape(open: &[u8]) -> BodyShape<'_> {
    BodyShape { open, close: b"]}", max_bytes: MAX_BODY_BYTES }
}
