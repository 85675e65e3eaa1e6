//! Generation spans → Raindrop events (RAINDROP.md), and events → request bodies within the
//! ingest's limits.
//!
//! Spans are read through [`GenerationSpan`], so a span that came through the `otlp` receiver
//! (OpenRouter's own Broadcast, any GenAI-instrumented app) becomes an event the same way as
//! one made from a generation record.

use gencol_model::attributes as attr;
use gencol_model::{SpanItem, Timestamp, first_output_text, latest_user_text};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use serde::Serialize;
use serde_json::{Map, Number, Value, json};

use crate::events::limits::{BodyShape, cut_longest, json_len, truncate_chars};
use crate::events::{EventTooLarge, GenerationSpan, non_empty};

/// Longest `ai_data.input` / `ai_data.output` the ingest takes, in characters.
pub const MAX_TEXT_CHARS: usize = 1_000_000;
/// Largest request body (and so largest batch) the ingest takes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A batch is a JSON array of events.
const BODY: BodyShape<'static> = BodyShape { open: b"[", close: b"]", max_bytes: MAX_BODY_BYTES };
/// Largest serialized event: an event alone in a body still needs the array's brackets.
pub const MAX_EVENT_BYTES: usize = MAX_BODY_BYTES - 2;

/// One event, exactly the keys the ingest accepts: a struct rather than a map so an
/// unknown top-level key, which the ingest rejects, cannot be written by mistake.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub event_id: String,
    pub user_id: String,
    pub event: String,
    pub timestamp: String,
    pub properties: Map<String, Value>,
    pub ai_data: AiData,
    /// Always empty: a generation carries no files or code blocks to attach.
    pub attachments: Vec<Value>,
}

/// `ai_data`, whose keys the ingest also checks; absent values are left out, never null.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AiData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convo_id: Option<String>,
}

/// Turns spans into events with the exporter's defaults for missing names.
#[derive(Clone, Debug)]
pub struct EventMapper {
    event_name: String,
    anonymous_user_id: String,
}

impl EventMapper {
    pub fn new(event_name: impl Into<String>, anonymous_user_id: impl Into<String>) -> Self {
        EventMapper { event_name: event_name.into(), anonymous_user_id: anonymous_user_id.into() }
    }

    /// The event for a generation span; `None` for spans that are not LLM calls, which
    /// Raindrop, an events product, has no place for.
    pub fn event(&self, item: &SpanItem) -> Option<Event> {
        let g = GenerationSpan::of(item)?;
        let a = g.attributes();
        let ai_data = AiData {
            model: g.model().map(str::to_owned),
            input: input_text(a).map(|t| truncate_chars(t, MAX_TEXT_CHARS)),
            output: output_text(a).map(|t| truncate_chars(t, MAX_TEXT_CHARS)),
            convo_id: g.session().map(str::to_owned),
        };
        Some(Event {
            // The generation id first, so a re-sent generation is the same event at Raindrop.
            event_id: g.id(),
            user_id: g.user().unwrap_or(&self.anonymous_user_id).to_owned(),
            event: g.chosen_name().unwrap_or(&self.event_name).to_owned(),
            timestamp: Timestamp(g.span.start_time_unix_nano).to_rfc3339_millis(),
            properties: properties(&g),
            ai_data,
            attachments: Vec::new(),
        })
    }

    /// The one event `gencol test-connection` sends: marked so it can be told apart from
    /// real data, under the anonymous user, with an id of its own so it never replaces one.
    pub fn test_connection_event(&self, now: Timestamp, suffix: &str) -> Event {
        let mut properties = Map::new();
        properties.insert(attr::TEST_CONNECTION.to_owned(), Value::Bool(true));
        properties.insert("$context".to_owned(), library_context());
        Event {
            event_id: format!("gencol-test-{suffix}"),
            user_id: self.anonymous_user_id.clone(),
            event: "gencol_test_connection".to_owned(),
            timestamp: now.to_rfc3339_millis(),
            properties,
            ai_data: AiData::default(),
            attachments: Vec::new(),
        }
    }
}

/// `properties`: custom metadata first, so the generation's own facts win a name clash.
fn properties(g: &GenerationSpan<'_>) -> Map<String, Value> {
    let mut p = g.metadata();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            p.insert(key.to_owned(), v);
        }
    };
    put("model", g.request_model.map(Value::from));
    put("provider", g.provider().map(Value::from));
    put("total_cost", g.total_cost().and_then(Number::from_f64).map(Value::Number));
    put("prompt_tokens", g.input_tokens().map(Value::from));
    put("completion_tokens", g.output_tokens().map(Value::from));
    put("total_tokens", g.total_tokens().map(Value::from));
    put("duration_ms", g.duration_nanos().map(|ns| Value::from(ns / 1_000_000)));
    put("finish_reason", g.finish_reason().map(Value::from));
    let (trace_id, trace_name) = match g.ctx {
        // As the client sent them; a generation without a trace id has none to report.
        Some(c) => (non_empty(c.trace_id_raw.as_deref()).map(str::to_owned), non_empty(c.trace_name.as_deref())),
        // An OTLP span has only its trace id, and its root's name is not known here.
        None => (g.trace_id_hex(), None),
    };
    put("trace_id", trace_id.map(Value::from));
    put("trace_name", trace_name.map(Value::from));
    p.insert("$context".to_owned(), library_context());
    p
}

fn library_context() -> Value {
    json!({"library": {"name": "gencol", "version": gencol_model::VERSION}})
}

/// The latest user message: from the structured form, else from the older `gen_ai.prompt`
/// that OpenRouter's Broadcast and OpenLLMetry-style instrumentations write.
fn input_text(a: &[KeyValue]) -> Option<String> {
    let structured = attr::get_str(a, "gen_ai.input.messages")
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        .and_then(|m| latest_user_text(&m));
    structured.or_else(|| attr::get_str(a, "gen_ai.prompt").and_then(legacy_user_text))
}

/// The completion: the first output message's text, else the older `gen_ai.completion`.
fn output_text(a: &[KeyValue]) -> Option<String> {
    let structured = attr::get_str(a, "gen_ai.output.messages")
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        .and_then(|m| first_output_text(&m));
    structured.or_else(|| attr::get_str(a, "gen_ai.completion").filter(|c| !c.is_empty()).map(str::to_owned))
}

/// `gen_ai.prompt` is either the prompt text or the request's messages as OpenAI JSON.
fn legacy_user_text(prompt: &str) -> Option<String> {
    match serde_json::from_str::<Value>(prompt) {
        Ok(Value::Array(messages)) if messages.iter().any(|m| m.get("role").is_some()) => {
            let user = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
            match user.get("content")? {
                Value::String(s) => Some(s.clone()),
                Value::Array(parts) => {
                    let texts: Vec<&str> = parts
                        .iter()
                        .filter_map(|p| p.get("text").or_else(|| p.get("content")).and_then(Value::as_str))
                        .collect();
                    (!texts.is_empty()).then(|| texts.concat())
                }
                _ => None,
            }
        }
        _ => (!prompt.is_empty()).then(|| prompt.to_owned()),
    }
}

/// Serializes an event within [`MAX_EVENT_BYTES`]: when the texts (already at most
/// [`MAX_TEXT_CHARS`]) still make it too large (multi-byte or escaped characters, or both
/// texts near the limit), they are cut further, the larger one first, rather than losing
/// the whole generation.
pub fn encode(mut event: Event) -> Result<Vec<u8>, EventTooLarge> {
    let json = to_json(&event);
    if json.len() <= MAX_EVENT_BYTES {
        return Ok(json);
    }
    let mut texts: Vec<&mut String> =
        [event.ai_data.input.as_mut(), event.ai_data.output.as_mut()].into_iter().flatten().collect();
    let texts_len: usize = texts.iter().map(|t| json_len(t)).sum();
    let too_large =
        |event_id, bytes| EventTooLarge { event_id, bytes, limit: MAX_EVENT_BYTES, destination: "Raindrop" };
    if let Err(smallest) = cut_longest(&mut texts, json.len() - MAX_EVENT_BYTES) {
        return Err(too_large(event.event_id, json.len() - texts_len + smallest));
    }
    let json = to_json(&event);
    if json.len() > MAX_EVENT_BYTES {
        return Err(too_large(event.event_id, json.len()));
    }
    Ok(json)
}

fn to_json(event: &Event) -> Vec<u8> {
    // Strings, integers, finite numbers and JSON values with string keys always serialize.
    serde_json::to_vec(event).unwrap_or_default()
}

/// Groups events into JSON array bodies of at most `batch_size` events and
/// [`MAX_BODY_BYTES`] bytes each, in order.
pub fn bodies(events: &[Vec<u8>], batch_size: usize) -> Vec<Vec<u8>> {
    BODY.bodies(events, batch_size)
}
