//! Generation spans → Raindrop events (RAINDROP.md), and events → request bodies within the
//! ingest's limits.
//!
//! Spans are read from their attributes, so a span that came through the `otlp` receiver
//! (OpenRouter's own Broadcast, any GenAI-instrumented app) becomes an event the same way as
//! one made from a generation record; the [`GenerationContext`] of the latter only adds what
//! the client sent verbatim (its trace id and name, metadata with nesting intact).

use gencol_model::attributes as attr;
use gencol_model::{GenerationContext, SpanItem, Timestamp, first_output_text, latest_user_text};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as AttrValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde::Serialize;
use serde_json::{Map, Number, Value, json};

/// Longest `ai_data.input` / `ai_data.output` the ingest takes, in characters.
pub const MAX_TEXT_CHARS: usize = 1_000_000;
/// Ends a text that was cut, counted inside the limits, so a reader sees it is incomplete.
pub const TRUNCATION_MARKER: &str = "...[truncated by gencol]";
/// Largest request body (and so largest batch) the ingest takes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest serialized event: an event alone in a body still needs the array's brackets.
pub const MAX_EVENT_BYTES: usize = MAX_BODY_BYTES - 2;
/// Where `namespace` (and OpenRouter's Broadcast) put custom `trace` keys on a span.
const METADATA_PREFIX: &str = "trace.metadata.";

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

    /// The event for a generation span; `None` for spans that are not LLM calls (the root
    /// and intermediate spans `hierarchy` adds, an app's HTTP spans), which Raindrop, an
    /// events product, has no place for.
    pub fn event(&self, item: &SpanItem) -> Option<Event> {
        let span = &item.span;
        let a = &span.attributes;
        let request_model = text(a, "gen_ai.request.model");
        let operation = text(a, "gen_ai.operation.name");
        if request_model.is_none() && operation.is_none() {
            return None;
        }
        let ctx = item.generation.as_deref();

        // The generation id first, so a re-sent generation is the same event at Raindrop.
        let event_id = ctx
            .map(|c| c.generation_id.as_str())
            .filter(|id| !id.trim().is_empty())
            .or_else(|| text(a, "gen_ai.response.id"))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}-{}", hex::encode(&span.trace_id), hex::encode(&span.span_id)));
        let user_id = ctx
            .and_then(|c| non_empty(c.user.as_deref()))
            .or_else(|| text(a, "user.id"))
            .or_else(|| text(a, "enduser.id"))
            .unwrap_or(&self.anonymous_user_id)
            .to_owned();
        let convo_id = ctx
            .and_then(|c| non_empty(c.session_id.as_deref()))
            .or_else(|| text(a, "session.id"))
            .or_else(|| text(a, "gen_ai.conversation.id"))
            .map(str::to_owned);

        let ai_data = AiData {
            model: text(a, "gen_ai.response.model").or(request_model).map(str::to_owned),
            input: input_text(a).map(|t| truncate_chars(t, MAX_TEXT_CHARS)),
            output: output_text(a).map(|t| truncate_chars(t, MAX_TEXT_CHARS)),
            convo_id,
        };
        Some(Event {
            event_id,
            user_id,
            event: self.event_name_for(&span.name, request_model, operation).to_owned(),
            timestamp: Timestamp(span.start_time_unix_nano).to_rfc3339_millis(),
            properties: properties(span, ctx, request_model),
            ai_data,
            attachments: Vec::new(),
        })
    }

    /// A generation span is named `generation_name` when the client gave one, else after its
    /// model; OTel-instrumented apps name theirs `{operation} {model}`. Only a name the client
    /// chose is worth an event name of its own.
    fn event_name_for<'a>(&'a self, name: &'a str, model: Option<&str>, operation: Option<&str>) -> &'a str {
        let generic = name.trim().is_empty()
            || Some(name) == model
            || Some(name) == operation
            || operation
                .zip(model)
                .is_some_and(|(op, m)| name.strip_prefix(op).and_then(|rest| rest.strip_prefix(' ')) == Some(m));
        if generic { &self.event_name } else { name }
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

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

fn text<'a>(a: &'a [KeyValue], key: &str) -> Option<&'a str> {
    non_empty(attr::get_str(a, key))
}

/// `properties`: custom metadata first, so the generation's own facts win a name clash.
fn properties(span: &Span, ctx: Option<&GenerationContext>, request_model: Option<&str>) -> Map<String, Value> {
    let a = &span.attributes;
    let mut p = Map::new();
    match ctx {
        Some(c) => {
            for (key, value) in &c.metadata {
                p.insert(key.clone(), value.clone());
            }
        }
        None => {
            for kv in a {
                if let Some(key) = kv.key.strip_prefix(METADATA_PREFIX).filter(|k| !k.is_empty())
                    && let Some(value) = kv.value.as_ref().and_then(any_to_json)
                {
                    p.insert(key.to_owned(), value);
                }
            }
        }
    }
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            p.insert(key.to_owned(), v);
        }
    };
    put("model", request_model.map(Value::from));
    put("provider", text(a, "gen_ai.provider.name").or_else(|| text(a, "gen_ai.system")).map(Value::from));
    put(
        "total_cost",
        attr::get_f64(a, "gen_ai.usage.total_cost")
            .or_else(|| attr::get_f64(a, "gen_ai.usage.cost"))
            .and_then(Number::from_f64)
            .map(Value::Number),
    );
    let prompt =
        attr::get_i64(a, "gen_ai.usage.input_tokens").or_else(|| attr::get_i64(a, "gen_ai.usage.prompt_tokens"));
    let completion =
        attr::get_i64(a, "gen_ai.usage.output_tokens").or_else(|| attr::get_i64(a, "gen_ai.usage.completion_tokens"));
    let total = attr::get_i64(a, "gen_ai.usage.total_tokens").or_else(|| match (prompt, completion) {
        (None, None) => None,
        (p, c) => Some(p.unwrap_or(0) + c.unwrap_or(0)),
    });
    put("prompt_tokens", prompt.map(Value::from));
    put("completion_tokens", completion.map(Value::from));
    put("total_tokens", total.map(Value::from));
    let duration =
        span.end_time_unix_nano.checked_sub(span.start_time_unix_nano).filter(|_| span.end_time_unix_nano > 0);
    put("duration_ms", duration.map(|ns| Value::from(ns / 1_000_000)));
    put("finish_reason", finish_reason(a).map(Value::from));
    let (trace_id, trace_name) = match ctx {
        // As the client sent them; a generation without a trace id has none to report.
        Some(c) => (non_empty(c.trace_id_raw.as_deref()).map(str::to_owned), non_empty(c.trace_name.as_deref())),
        // An OTLP span has only its trace id, and its root's name is not known here.
        None => ((span.trace_id.iter().any(|b| *b != 0)).then(|| hex::encode(&span.trace_id)), None),
    };
    put("trace_id", trace_id.map(Value::from));
    put("trace_name", trace_name.map(Value::from));
    p.insert("$context".to_owned(), library_context());
    p
}

fn library_context() -> Value {
    json!({"library": {"name": "gencol", "version": gencol_model::VERSION}})
}

fn finish_reason(a: &[KeyValue]) -> Option<&str> {
    text(a, "gen_ai.response.finish_reason").or_else(|| match attr::get(a, "gen_ai.response.finish_reasons")? {
        AttrValue::ArrayValue(list) => list.values.first().and_then(|v| match v.value.as_ref()? {
            AttrValue::StringValue(s) => non_empty(Some(s)),
            _ => None,
        }),
        _ => None,
    })
}

/// An attribute value as JSON; `None` for an empty value (there is nothing to report).
fn any_to_json(v: &AnyValue) -> Option<Value> {
    Some(match v.value.as_ref()? {
        AttrValue::StringValue(s) => Value::String(s.clone()),
        AttrValue::BoolValue(b) => Value::Bool(*b),
        AttrValue::IntValue(i) => Value::from(*i),
        AttrValue::DoubleValue(d) => Number::from_f64(*d).map_or(Value::Null, Value::Number),
        AttrValue::ArrayValue(list) => Value::Array(list.values.iter().filter_map(any_to_json).collect()),
        AttrValue::KvlistValue(list) => Value::Object(
            list.values
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), kv.value.as_ref().and_then(any_to_json)?)))
                .collect(),
        ),
        AttrValue::BytesValue(b) => Value::String(hex::encode(b)),
        // A profiling string-table index means nothing on a trace span.
        AttrValue::StringValueStrindex(_) => return None,
    })
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

/// Cuts `text` to at most `max_chars` characters, the marker included, on a char boundary.
pub fn truncate_chars(mut text: String, max_chars: usize) -> String {
    // Every char takes at least one byte: a short enough byte length needs no counting.
    if text.len() <= max_chars || text.char_indices().nth(max_chars).is_none() {
        return text;
    }
    let keep = max_chars.saturating_sub(TRUNCATION_MARKER.chars().count());
    let cut = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    text.truncate(cut);
    text.push_str(TRUNCATION_MARKER);
    text
}

/// An event that cannot be sent: even with its input and output cut to the marker it is
/// over the ingest's 1 MiB, so its metadata alone is too large.
#[derive(Clone, Debug, PartialEq)]
pub struct EventTooLarge {
    pub event_id: String,
    /// Its size with input and output at their smallest.
    pub bytes: usize,
}

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {} is {} bytes even with its input and output cut, over Raindrop's limit of {} bytes",
            self.event_id, self.bytes, MAX_EVENT_BYTES
        )
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
    let input_len = event.ai_data.input.as_deref().map_or(0, json_len);
    let output_len = event.ai_data.output.as_deref().map_or(0, json_len);
    let fixed = json.len() - input_len - output_len;
    let texts = usize::from(event.ai_data.input.is_some()) + usize::from(event.ai_data.output.is_some());
    if fixed + texts * TRUNCATION_MARKER.len() > MAX_EVENT_BYTES {
        return Err(EventTooLarge { event_id: event.event_id, bytes: fixed + texts * TRUNCATION_MARKER.len() });
    }
    let (input_budget, output_budget) = share(MAX_EVENT_BYTES - fixed, input_len, output_len);
    if let Some(t) = event.ai_data.input.as_mut() {
        cut_to_json_bytes(t, input_budget);
    }
    if let Some(t) = event.ai_data.output.as_mut() {
        cut_to_json_bytes(t, output_budget);
    }
    let json = to_json(&event);
    if json.len() > MAX_EVENT_BYTES {
        return Err(EventTooLarge { event_id: event.event_id, bytes: json.len() });
    }
    Ok(json)
}

fn to_json(event: &Event) -> Vec<u8> {
    // Strings, integers, finite numbers and JSON values with string keys always serialize.
    serde_json::to_vec(event).unwrap_or_default()
}

/// Splits `budget` bytes between two texts: a text that fits in half keeps its size and
/// the other gets the rest.
fn share(budget: usize, a: usize, b: usize) -> (usize, usize) {
    let half = budget / 2;
    if a + b <= budget {
        (a, b)
    } else if a <= half {
        (a, budget - a)
    } else if b <= budget - half {
        (budget - b, b)
    } else {
        (half, budget - half)
    }
}

/// Bytes a char takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

fn json_len(s: &str) -> usize {
    s.chars().map(escaped_len).sum()
}

/// Cuts `text` so that, with the marker, it takes at most `budget` bytes inside JSON.
fn cut_to_json_bytes(text: &mut String, budget: usize) {
    if json_len(text) <= budget {
        return;
    }
    let keep = budget.saturating_sub(TRUNCATION_MARKER.len());
    let (mut used, mut end) = (0, 0);
    for (i, c) in text.char_indices() {
        let len = escaped_len(c);
        if used + len > keep {
            break;
        }
        used += len;
        end = i + c.len_utf8();
    }
    text.truncate(end);
    text.push_str(TRUNCATION_MARKER);
}

/// Groups events into JSON array bodies of at most `batch_size` events and
/// [`MAX_BODY_BYTES`] bytes each, in order.
pub fn bodies(events: &[Vec<u8>], batch_size: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut count = 0;
    for event in events {
        // `,` before the event and the closing `]` after it.
        let full = count >= batch_size.max(1) || body.len() + 1 + event.len() + 1 > MAX_BODY_BYTES;
        if count > 0 && full {
            body.push(b']');
            out.push(std::mem::take(&mut body));
            count = 0;
        }
        body.push(if count == 0 { b'[' } else { b',' });
        body.extend_from_slice(event);
        count += 1;
    }
    if count > 0 {
        body.push(b']');
        out.push(body);
    }
    out
}
