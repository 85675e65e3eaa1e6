//! From request body to generations: the three body forms (object, array, NDJSON),
//! the JSON Schema, and the checks the schema cannot express, with errors that name
//! the record index and field path (`[3].request.model: missing`).
//!
//! Records are decoded one at a time, straight from the body: each is counted and its
//! parse paid for ([`Meter`]) before it is read, so a body of millions of tiny records
//! or one record of millions of tiny values is refused before it is allocated; and only
//! the first [`MAX_LISTED_REJECTIONS`] rejected records are kept with their errors.

use std::mem::size_of;
use std::sync::Arc;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde::Deserialize;
use serde::de::{self, Deserializer as _, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::budget::{Exceeded, Meter, size};
use crate::generation::{Generation, Timestamp};
use crate::schema::schema;
use crate::span::{Origin, RESERVED_TRACE_KEYS, SpanItem, generation_span};

/// The most rejected records a decoded body lists with their errors; the others are
/// only counted, so the answer to a body of a million bad records stays small.
pub const MAX_LISTED_REJECTIONS: usize = 100;

/// The longest error text kept for one record (a record can break every rule at once).
const MAX_ERROR_LEN: usize = 512;

/// Problems listed for one record before the rest are summed up.
const MAX_PROBLEMS: usize = 8;

/// The body as a whole could not be read as records.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("body is empty: send one generation object, an array of them, or NDJSON")]
    Empty,
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body must be a JSON object or an array of objects, got {0}")]
    NotRecords(&'static str),
    /// Too many records, or more memory than the request may use.
    #[error(transparent)]
    Exceeded(Exceeded),
}

/// One record that was rejected; `error` already carries the `[index]` prefix.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RecordError {
    pub index: usize,
    pub error: String,
}

/// The records of one body: the valid ones (with their index) and the rejected ones.
#[derive(Debug, Default)]
pub struct DecodedBatch {
    pub generations: Vec<Generation>,
    /// The first [`MAX_LISTED_REJECTIONS`] rejected records.
    pub rejected: Vec<RecordError>,
    /// Every rejected record, listed or not.
    pub rejected_total: usize,
}

/// The generation spans of one body, and the records that were not valid.
#[derive(Debug, Default)]
pub struct DecodedSpans {
    pub spans: Vec<SpanItem>,
    /// The first [`MAX_LISTED_REJECTIONS`] rejected records.
    pub rejected: Vec<RecordError>,
    /// Every rejected record, listed or not.
    pub rejected_total: usize,
}

/// Decodes a request body. `ndjson` selects one-object-a-line; otherwise the body is
/// one JSON object or an array of objects. One bad record never sinks the others.
pub fn decode_body(body: &[u8], ndjson: bool) -> Result<DecodedBatch, DecodeError> {
    let mut out = DecodedBatch::default();
    each_record(body, ndjson, &mut Meter::unlimited(), &mut |record, _| {
        match record {
            Ok(g) => out.generations.push(g),
            Err(e) => reject(&mut out.rejected, &mut out.rejected_total, e),
        }
        Ok(())
    })?;
    Ok(out)
}

/// Decodes a request body into one generation span per valid record (under `origin`),
/// as [`decode_body`] reads it. `meter` counts the records and pays for each record's
/// parse while it lasts and for its span from then on; the first refusal ends decoding.
pub fn decode_spans(
    body: &[u8],
    ndjson: bool,
    origin: &Arc<Origin>,
    meter: &mut Meter,
) -> Result<DecodedSpans, DecodeError> {
    let mut out = DecodedSpans::default();
    each_record(body, ndjson, meter, &mut |record, meter| {
        match record {
            Ok(g) => {
                let span = generation_span(&g, origin);
                meter.pay(size::span_item(&span))?;
                out.spans.push(span);
            }
            Err(e) => reject(&mut out.rejected, &mut out.rejected_total, e),
        }
        Ok(())
    })?;
    Ok(out)
}

fn reject(listed: &mut Vec<RecordError>, total: &mut usize, e: RecordError) {
    *total += 1;
    if listed.len() < MAX_LISTED_REJECTIONS {
        listed.push(e);
    }
}

/// What is done with each record once read: a generation, or why it was rejected.
type OnRecord<'a> = dyn FnMut(Result<Generation, RecordError>, &mut Meter) -> Result<(), Exceeded> + 'a;

/// Reads every record of the body in order and hands each to `on_record`.
fn each_record(body: &[u8], ndjson: bool, meter: &mut Meter, on_record: &mut OnRecord<'_>) -> Result<(), DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    if ndjson {
        let lines = body.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
        for (index, line) in lines.enumerate() {
            let outcome = match std::str::from_utf8(line) {
                Ok(text) => read_record(index, text, meter),
                Err(e) => {
                    meter.item().map_err(DecodeError::Exceeded)?;
                    Err(Rejected::NotJson(format!("invalid UTF-8 at byte {}", e.valid_up_to())))
                }
            };
            match outcome {
                Ok(g) => on_record(Ok(g), meter).map_err(DecodeError::Exceeded)?,
                Err(Rejected::Exceeded(e)) => return Err(DecodeError::Exceeded(e)),
                Err(Rejected::NotJson(e)) => {
                    let error = capped(format!("[{index}]: line is not JSON: {e}"));
                    on_record(Err(RecordError { index, error }), meter).map_err(DecodeError::Exceeded)?;
                }
                Err(Rejected::Invalid(error)) => {
                    on_record(Err(RecordError { index, error }), meter).map_err(DecodeError::Exceeded)?;
                }
            }
        }
        return Ok(());
    }
    // UTF-8 is checked once for the whole body instead of string by string.
    let text = std::str::from_utf8(body)
        .map_err(|e| DecodeError::NotJson(format!("invalid UTF-8 at byte {}: send UTF-8 JSON", e.valid_up_to())))?;
    match text.trim_start().as_bytes().first() {
        Some(b'[') => each_array_item(text, meter, on_record),
        Some(b'{') => match read_record(0, text, meter) {
            Ok(g) => on_record(Ok(g), meter).map_err(DecodeError::Exceeded),
            Err(Rejected::Exceeded(e)) => Err(DecodeError::Exceeded(e)),
            Err(Rejected::NotJson(e)) => Err(DecodeError::NotJson(e)),
            Err(Rejected::Invalid(error)) => {
                on_record(Err(RecordError { index: 0, error }), meter).map_err(DecodeError::Exceeded)
            }
        },
        // Not an object or an array: a scalar (one value, small to hold) or not JSON.
        _ => match serde_json::from_str::<IgnoredAny>(text) {
            Err(e) => Err(DecodeError::NotJson(e.to_string())),
            Ok(_) => {
                let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
                Err(DecodeError::NotRecords(json_type(&value)))
            }
        },
    }
}

/// The items of a JSON array body, read one at a time: no list of every item is built
/// first, so the record limit stops a huge array after its first items.
fn each_array_item(text: &str, meter: &mut Meter, on_record: &mut OnRecord<'_>) -> Result<(), DecodeError> {
    struct Items<'m, 'f, 'a> {
        meter: &'m mut Meter,
        on_record: &'f mut OnRecord<'a>,
        refused: Option<Exceeded>,
    }
    impl<'de> Visitor<'de> for &mut Items<'_, '_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of generation records")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0;
            while let Some(raw) = seq.next_element::<&RawValue>()? {
                let record = match read_record(index, raw.get(), self.meter) {
                    Ok(g) => Ok(g),
                    Err(Rejected::Invalid(error)) => Err(RecordError { index, error }),
                    // The array parsed, so each item is JSON and this cannot happen in practice.
                    Err(Rejected::NotJson(e)) => Err(RecordError { index, error: capped(format!("[{index}]: {e}")) }),
                    Err(Rejected::Exceeded(e)) => {
                        self.refused = Some(e.clone());
                        return Err(de::Error::custom(e));
                    }
                };
                if let Err(e) = (self.on_record)(record, self.meter) {
                    self.refused = Some(e.clone());
                    return Err(de::Error::custom(e));
                }
                index += 1;
            }
            Ok(())
        }
    }
    let mut items = Items { meter, on_record, refused: None };
    let mut de = serde_json::Deserializer::from_str(text);
    let read = (&mut de).deserialize_seq(&mut items).and_then(|()| de.end());
    match (read, items.refused) {
        (_, Some(e)) => Err(DecodeError::Exceeded(e)),
        (Err(e), None) => Err(DecodeError::NotJson(e.to_string())),
        (Ok(()), None) => Ok(()),
    }
}

/// Why one record's text gave no generation.
enum Rejected {
    /// Not JSON (a line of NDJSON, or the only record of the body).
    NotJson(String),
    /// JSON, but not a valid record: the error, prefixed with the index.
    Invalid(String),
    Exceeded(Exceeded),
}

/// Counts one record, pays for parsing it, and parses it: the fast path, else the
/// schema path with its errors. The parse's cost is refunded once it is over: what the
/// caller keeps of the record (its span) is paid for by the caller.
fn read_record(index: usize, text: &str, meter: &mut Meter) -> Result<Generation, Rejected> {
    meter.item().map_err(Rejected::Exceeded)?;
    let cost = parse_cost(text);
    meter.pay(cost).map_err(Rejected::Exceeded)?;
    let record = match fast_record(text) {
        Some(g) => Ok(g),
        None => match serde_json::from_str(text) {
            Ok(value) => decode_record(index, value).map_err(|e| Rejected::Invalid(capped(e))),
            Err(e) => Err(Rejected::NotJson(e.to_string())),
        },
    };
    meter.refund(cost);
    record
}

/// An upper bound of what parsing one record's text may allocate until it is dropped:
/// the [`Generation`] twice (typed, and moved), its text twice (a JSON tree's strings,
/// then the record's), a B-tree leaf per object (serde_json keeps maps in a `BTreeMap`;
/// the fast path's typed structs need less), a slot per value and a small allocation
/// per string. Counted from the text's structure, outside strings, before parsing.
fn parse_cost(text: &str) -> usize {
    const OBJECT: usize = 11 * (size_of::<String>() + size_of::<Value>()) + 64;
    const VALUE: usize = 80;
    const STRING: usize = 16;
    let bytes = text.as_bytes();
    let (mut objects, mut values, mut strings) = (0usize, 1usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                strings += 1;
                // Jump to the closing quote, past escaped characters (and to the end of
                // the text when the string never closes).
                i += 1;
                loop {
                    match bytes.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
                        Some(at) if bytes[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                        None => {
                            i = bytes.len();
                            break;
                        }
                    }
                }
            }
            b'{' => objects += 1,
            b'[' | b',' | b':' => values += 1,
            _ => {}
        }
        i += 1;
    }
    2 * size_of::<Generation>() + 2 * text.len() + objects * OBJECT + values * VALUE + strings * STRING
}

/// Keeps an error text short; the index and the first problems come first, so what is
/// cut is the least useful part.
fn capped(mut error: String) -> String {
    if error.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
        error.push('…');
    }
    error
}

/// The fast path for one record: typed straight from the text, no JSON tree, no schema
/// walk. `None` unless the record is certainly valid, so every record it does not take
/// goes through [`decode_record`] and gets exactly that function's verdict and errors.
fn fast_record(text: &str) -> Option<Generation> {
    let g: Generation = serde_json::from_str(text).ok()?;
    conforms(&g).then_some(g)
}

/// Whether a record that typed cleanly also meets every rule of the shipped schema and
/// the rules beside it (the typed form already enforces the JSON types it declares, and
/// rejects `null` where the schema does). Anything in doubt answers `false`, which only
/// sends the record down the slow path.
fn conforms(g: &Generation) -> bool {
    let chars_within = |s: &str, min: usize, max: usize| {
        // Byte length bounds the character count from above, and by 4× from below.
        let n = if s.len() <= max { s.chars().count() } else { s.chars().take(max + 1).count() };
        (min..=max).contains(&n)
    };
    let non_negative = |v: Option<i64>| v.is_none_or(|v| v >= 0);
    let all_objects = |items: &Option<Vec<Box<RawValue>>>| {
        items.as_ref().is_none_or(|v| v.iter().all(|raw| raw.get().trim_start().starts_with('{')))
    };
    let text_or_array = |v: &Option<Value>| v.as_ref().is_none_or(|v| v.is_string() || v.is_array());
    let r = &g.request;
    let trace_ok = r.trace.as_ref().is_none_or(|t| {
        RESERVED_TRACE_KEYS.iter().all(|k| t.get(*k).is_none_or(|v| v.as_str().is_some_and(|s| !s.is_empty())))
    });
    let response_ok = g.response.as_ref().is_none_or(|resp| {
        all_objects(&resp.choices)
            && resp.usage.as_ref().is_none_or(|u| {
                [u.prompt_tokens, u.completion_tokens, u.total_tokens, u.input_tokens, u.output_tokens]
                    .into_iter()
                    .all(non_negative)
            })
    });
    chars_within(&g.id, 1, 256)
        && g.completed_at >= g.created_at
        // `response` may be absent only when `error` is set; a `null` response without an
        // error is valid but rare, and is left to the slow path, which can tell the two apart.
        && (g.error.is_some() || g.response.is_some())
        && !r.model.is_empty()
        && all_objects(&r.messages)
        && text_or_array(&r.prompt)
        && text_or_array(&r.input)
        && [r.max_tokens, r.max_completion_tokens, r.max_output_tokens].into_iter().all(non_negative)
        && r.user.as_deref().is_none_or(|s| chars_within(s, 0, 128))
        && r.session_id.as_deref().is_none_or(|s| chars_within(s, 0, 256))
        && g.api_key_hash.as_deref().is_none_or(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        && trace_ok
        && response_ok
}

/// Validates one record against the schema and the rules the schema cannot say,
/// then types it. The error lists the problems found (the first few when there are
/// many), each as `[index].path: what`.
pub fn decode_record(index: usize, value: Value) -> Result<Generation, String> {
    if !value.is_object() {
        return Err(format!("[{index}]: expected a generation object, got {}", json_type(&value)));
    }
    // Most records are valid: the yes/no check stops at nothing and allocates nothing;
    // the full error walk runs only for records that fail it.
    let mut problems: Vec<String> = if schema().is_valid(&value) {
        Vec::new()
    } else {
        // A record can break one rule a million times (an array of a million wrong
        // items): the first problems say what to fix.
        let mut errors = schema().iter_errors(&value);
        let mut listed: Vec<String> = errors.by_ref().take(MAX_PROBLEMS).map(|e| describe(index, &e)).collect();
        if errors.next().is_some() {
            listed.push(format!("[{index}]: more problems not shown"));
        }
        listed
    };
    for field in ["created_at", "completed_at", "first_token_at"] {
        if let Some(Value::String(s)) = value.get(field)
            && Timestamp::parse_rfc3339(s).is_none()
        {
            problems.push(format!(
                "[{index}].{field}: invalid timestamp {s:?}: expected RFC 3339 (2026-11-22T10:00:00.000Z) or integer epoch nanoseconds"
            ));
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        return Err(problems.join("; "));
    }
    // By value: prompt and completion text move into the record instead of being copied.
    let generation = Generation::deserialize(value).map_err(|e| format!("[{index}]: {e}"))?;
    if generation.completed_at < generation.created_at {
        return Err(format!("[{index}].completed_at: before created_at"));
    }
    Ok(generation)
}

fn describe(index: usize, e: &jsonschema::ValidationError<'_>) -> String {
    let mut path = format!("[{index}]");
    for segment in e.instance_path().as_str().split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.bytes().all(|b| b.is_ascii_digit()) && !segment.is_empty() {
            path.push_str(&format!("[{segment}]"));
        } else {
            path.push('.');
            path.push_str(&segment);
        }
    }
    let what = match e.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().map(str::to_owned).unwrap_or_else(|| property.to_string());
            return format!("{path}.{name}: missing");
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
            };
            format!("expected {expected}, got {}", json_type(e.instance()))
        }
        ValidationErrorKind::MaxLength { limit } => format!("longer than {limit} characters"),
        ValidationErrorKind::MinLength { limit } if *limit == 1 => "must not be empty".to_owned(),
        ValidationErrorKind::MinLength { limit } => format!("shorter than {limit} characters"),
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        _ => e.to_string(),
    };
    format!("{path}: {what}")
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good(id: &str) -> Value {
        json!({
            "id": id, "created_at": "2026-11-22T10:00:00Z", "completed_at": "2026-11-22T10:00:01Z",
            "request": {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "extra": 1},
            "response": {"choices": []}
        })
    }

    #[test]
    fn names_index_and_field_path() {
        let mut bad = good("b");
        bad["request"].as_object_mut().unwrap().remove("model");
        let body = serde_json::to_vec(&json!([good("a"), good("c"), good("d"), bad])).unwrap();
        let out = decode_body(&body, false).unwrap();
        assert_eq!(out.generations.len(), 3);
        assert_eq!(out.rejected, vec![RecordError { index: 3, error: "[3].request.model: missing".into() }]);
    }

    #[test]
    fn schema_rules_and_semantic_rules() {
        let mut v = good("x");
        v["request"]["user"] = json!("u".repeat(129));
        assert_eq!(decode_record(0, v).unwrap_err(), "[0].request.user: longer than 128 characters");
        let mut v = good("x");
        v["completed_at"] = json!("2026-11-22T09:00:00Z");
        assert_eq!(decode_record(1, v).unwrap_err(), "[1].completed_at: before created_at");
        let mut v = good("x");
        v.as_object_mut().unwrap().remove("response");
        assert_eq!(decode_record(2, v.clone()).unwrap_err(), "[2].response: missing");
        v["error"] = json!({"status": 429, "message": "rate limited"});
        assert!(decode_record(2, v).is_ok());
        let mut v = good("x");
        v["request"]["temperature"] = json!("hot");
        assert_eq!(decode_record(0, v).unwrap_err(), "[0].request.temperature: expected null or number, got string");
        let mut v = good("x");
        v["created_at"] = json!("noon");
        assert!(decode_record(0, v).unwrap_err().starts_with("[0].created_at: invalid timestamp"));
    }

    /// The fast path takes a record only when the schema path would: for each variant,
    /// valid or not, both paths give the same verdict, and the common valid forms do
    /// take the fast path.
    #[test]
    fn fast_path_agrees_with_the_schema() {
        let full = json!({
            "id": "full", "created_at": "2026-11-22T10:00:00.5Z", "completed_at": 1_800_000_000_000_000_000u64,
            "first_token_at": null, "provider": "OpenAI", "api_key_name": null,
            "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 1,
                "top_k": 3, "max_tokens": 0, "stream": false, "tools": null, "user": "u", "session_id": "s",
                "trace": {"trace_id": "t", "trace_name": "n", "feature": {"a": [1, 2]}}, "unknown": {"x": 1}},
            "response": {"id": null, "model": "m", "choices": [{"finish_reason": "stop"}], "output": null,
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": null, "cost": 0.5,
                    "cost_details": {}, "prompt_tokens_details": {"cached_tokens": 1}}}
        });
        let set = |path: &[&str], v: Value| {
            let mut g = full.clone();
            let mut at = &mut g;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at[path[path.len() - 1]] = v;
            g
        };
        let drop = |path: &[&str]| {
            let mut g = full.clone();
            let mut at = &mut g;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at.as_object_mut().unwrap().remove(path[path.len() - 1]);
            g
        };
        let cases: Vec<(Value, bool)> = vec![
            (full.clone(), true),
            (good("plain"), true),
            (set(&["request", "prompt"], json!("text")), true),
            (set(&["request", "input"], json!([{"role": "user"}])), true),
            (set(&["error"], json!({"status": 500})), true),
            (set(&["id"], json!("")), false),
            (set(&["id"], json!("é".repeat(256))), true),
            (set(&["id"], json!("é".repeat(257))), false),
            (set(&["created_at"], json!(-1)), false),
            (set(&["created_at"], json!("noon")), false),
            (set(&["completed_at"], json!("2026-11-22T09:00:00Z")), false),
            (set(&["request", "model"], json!("")), false),
            (drop(&["request", "model"]), false),
            (set(&["request", "messages"], json!(null)), false),
            (set(&["request", "messages"], json!(["not an object"])), false),
            (set(&["request", "prompt"], json!(null)), false),
            (set(&["request", "prompt"], json!(3)), false),
            (set(&["request", "input"], json!({"a": 1})), false),
            (set(&["request", "max_tokens"], json!(-1)), false),
            (set(&["request", "temperature"], json!("hot")), false),
            (set(&["request", "user"], json!("u".repeat(128))), true),
            (set(&["request", "user"], json!("u".repeat(129))), false),
            (set(&["request", "session_id"], json!("s".repeat(257))), false),
            (set(&["request", "trace", "trace_name"], json!("")), false),
            (set(&["request", "trace", "span_name"], json!(7)), false),
            (set(&["request", "trace"], json!(null)), true),
            (set(&["request", "trace"], json!([1])), false),
            (set(&["response", "choices"], json!([1])), false),
            (set(&["response", "usage", "completion_tokens"], json!(-2)), false),
            (set(&["response"], json!(null)), true),
            (drop(&["response"]), false),
            (set(&["error"], json!("boom")), false),
            (set(&["provider"], json!(1)), false),
            (set(&["api_key_hash"], json!("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")), true),
            (set(&["api_key_hash"], json!("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08")), false),
            (set(&["api_key_hash"], json!("sk-or-v1-raw-key")), false),
            (set(&["api_key_hash"], json!(null)), true),
        ];
        for (i, (v, valid)) in cases.into_iter().enumerate() {
            let text = v.to_string();
            let fast = fast_record(&text).is_some();
            let slow = decode_record(0, v.clone());
            assert_eq!(slow.is_ok(), valid, "case {i}: schema path on {v}: {slow:?}");
            assert!(!fast || valid, "case {i}: the fast path took an invalid record: {v}");
            let through_body = decode_body(text.as_bytes(), false).unwrap();
            assert_eq!(through_body.generations.len(), usize::from(valid), "case {i}");
            assert_eq!(through_body.rejected.first().map(|r| &r.error), slow.as_ref().err(), "case {i}");
        }
        // The forms gateways send go the fast way.
        for v in [full.clone(), good("plain"), set(&["error"], json!({"status": 500}))] {
            assert!(fast_record(&v.to_string()).is_some(), "not on the fast path: {v}");
        }
    }

    #[test]
    fn ndjson_keeps_good_lines_around_a_broken_one() {
        let body = format!("{}\n{{not json\n{}\n", good("a"), good("b"));
        let out = decode_body(body.as_bytes(), true).unwrap();
        assert_eq!(out.generations.len(), 2);
        assert_eq!(out.rejected[0].index, 1);
    }

    fn meter(budget: &crate::budget::MemoryBudget, max_records: usize) -> Meter {
        Meter::new(crate::budget::Charge::new(budget), max_records, "records", "max_records_per_request")
    }

    fn origin() -> Arc<Origin> {
        Arc::new(Origin::default())
    }

    #[test]
    fn a_body_of_more_records_than_allowed_is_refused_after_the_limit() {
        let budget = crate::budget::MemoryBudget::new(64 << 20);
        // A million empty records: refused once the eleventh is reached, not after reading them all.
        let body = format!("[{}{{}}]", "{},".repeat(1_000_000));
        let mut m = meter(&budget, 10);
        let e = decode_spans(body.as_bytes(), false, &origin(), &mut m).expect_err("too many");
        assert_eq!(
            e,
            DecodeError::Exceeded(Exceeded::Items { what: "records", limit: 10, setting: "max_records_per_request" })
        );
        assert_eq!(m.items(), 11);
        drop(m);
        let lines = format!("{}\n", good("a")).repeat(11);
        let e = decode_spans(lines.as_bytes(), true, &origin(), &mut meter(&budget, 10)).expect_err("too many");
        assert!(matches!(e, DecodeError::Exceeded(Exceeded::Items { limit: 10, .. })), "{e:?}");
        // Exactly the limit is fine, and what is kept is paid for.
        let ten = serde_json::to_vec(&(0..10).map(|i| good(&format!("g{i}"))).collect::<Vec<_>>()).unwrap();
        let mut m = meter(&budget, 10);
        let out = decode_spans(&ten, false, &origin(), &mut m).expect("ten fit");
        assert_eq!(out.spans.len(), 10);
        let kept: usize = out.spans.iter().map(size::span_item).sum();
        assert!(m.spent() >= kept, "paid {} for {kept}", m.spent());
        assert!(budget.in_use() >= kept);
        drop(m);
        assert_eq!(budget.in_use(), 0, "everything is given back with the meter");
    }

    #[test]
    fn a_record_is_refused_when_its_parse_would_not_fit() {
        // One record whose array of empty objects would become a JSON tree of ~700 bytes per 3.
        let mut record = good("big");
        record["request"]["prompt"] = Value::Array(vec![json!({}); 20_000]);
        let text = serde_json::to_vec(&record).unwrap();
        assert!(text.len() < 64 * 1024);
        let budget = crate::budget::MemoryBudget::new(4 << 20);
        let e = decode_spans(&text, false, &origin(), &mut meter(&budget, 10)).expect_err("does not fit");
        assert_eq!(e, DecodeError::Exceeded(Exceeded::TooLarge { limit: 4 << 20 }));
        assert_eq!(budget.in_use(), 0);
        // With room, it decodes, and its parse is given back once its span is built.
        let budget = crate::budget::MemoryBudget::new(64 << 20);
        let mut m = meter(&budget, 10);
        let out = decode_spans(&text, false, &origin(), &mut m).expect("fits");
        assert_eq!(out.spans.len() + out.rejected_total, 1);
        assert!(m.spent() < 2 * text.len() + 64 * 1024, "the parse was refunded: {}", m.spent());
    }

    #[test]
    fn only_the_first_rejections_are_listed_each_kept_short() {
        let body = format!("[{}]", vec!["{}"; 250].join(","));
        let out = decode_body(body.as_bytes(), false).unwrap();
        assert_eq!(out.rejected.len(), MAX_LISTED_REJECTIONS);
        assert_eq!(out.rejected_total, 250);
        assert_eq!(out.rejected[99].index, 99);
        assert_eq!(
            out.rejected[0].error,
            "[0].id: missing; [0].created_at: missing; [0].completed_at: missing; [0].request: missing; \
             [0].response: missing"
        );

        // A record that breaks one rule ten thousand times gets a short error.
        let mut bad = good("x");
        bad["request"]["messages"] = Value::Array(vec![json!(1); 10_000]);
        let out = decode_body(&serde_json::to_vec(&bad).unwrap(), false).unwrap();
        let error = &out.rejected[0].error;
        assert!(error.len() <= MAX_ERROR_LEN + '…'.len_utf8(), "{} bytes", error.len());
        assert!(error.starts_with("[0].request.messages[0]: expected object, got integer"), "{error}");
    }

    #[test]
    fn bodies_that_are_not_utf8() {
        let e = decode_body(b"[{\"id\": \"\xff\"}]", false).unwrap_err();
        assert_eq!(e, DecodeError::NotJson("invalid UTF-8 at byte 9: send UTF-8 JSON".into()));
        let mut lines = serde_json::to_vec(&good("a")).unwrap();
        lines.extend_from_slice(b"\n\xff\xfe\n");
        lines.extend_from_slice(&serde_json::to_vec(&good("b")).unwrap());
        let out = decode_body(&lines, true).unwrap();
        assert_eq!(out.generations.len(), 2);
        assert_eq!(
            out.rejected,
            vec![RecordError { index: 1, error: "[1]: line is not JSON: invalid UTF-8 at byte 0".into() }]
        );
    }

    #[test]
    fn whole_body_errors() {
        assert_eq!(decode_body(b"  ", false).unwrap_err(), DecodeError::Empty);
        assert!(matches!(decode_body(b"{", false).unwrap_err(), DecodeError::NotJson(_)));
        assert_eq!(decode_body(b"42", false).unwrap_err(), DecodeError::NotRecords("integer"));
        // A string cut after a backslash (found by the decoders' fuzz test).
        assert!(matches!(decode_body(b"{\"a\": \"\\", false).unwrap_err(), DecodeError::NotJson(_)));
    }
}
