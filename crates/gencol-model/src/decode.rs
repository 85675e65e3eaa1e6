//! From request body to generations: the three body forms (object, array, NDJSON),
//! the JSON Schema, and the checks the schema cannot express, with errors that name
//! the record index and field path (`[3].request.model: missing`).

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::generation::{Generation, Timestamp};
use crate::schema::schema;
use crate::span::RESERVED_TRACE_KEYS;

/// The body as a whole could not be read as records.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("body is empty: send one generation object, an array of them, or NDJSON")]
    Empty,
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body must be a JSON object or an array of objects, got {0}")]
    NotRecords(&'static str),
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
    pub rejected: Vec<RecordError>,
}

/// Decodes a request body. `ndjson` selects one-object-a-line; otherwise the body is
/// one JSON object or an array of objects. One bad record never sinks the others.
pub fn decode_body(body: &[u8], ndjson: bool) -> Result<DecodedBatch, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let mut out = DecodedBatch::default();
    // UTF-8 is checked once for the whole body instead of string by string; a body
    // that is not UTF-8 is read as a JSON tree, whose parser says where it breaks.
    let Ok(text) = std::str::from_utf8(body) else {
        return decode_tree(body, ndjson, out);
    };
    if ndjson {
        let lines = text.split('\n').filter(|l| !l.bytes().all(|b| b.is_ascii_whitespace()));
        for (index, line) in lines.enumerate() {
            if let Err(e) = decode_text(&mut out, index, line) {
                out.rejected.push(not_json_line(index, &e));
            }
        }
        return Ok(out);
    }
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            if let Ok(records) = serde_json::from_str::<Vec<&RawValue>>(text) {
                for (index, raw) in records.into_iter().enumerate() {
                    // The array parsed, so each item is JSON and this cannot fail in practice.
                    if let Err(e) = decode_text(&mut out, index, raw.get()) {
                        out.rejected.push(RecordError { index, error: format!("[{index}]: {e}") });
                    }
                }
                return Ok(out);
            }
        }
        Some(b'{') => {
            if let Some(g) = fast_record(text) {
                out.generations.push(g);
                return Ok(out);
            }
        }
        _ => {}
    }
    // Everything else (an invalid record, a body that is not JSON or not records) gets
    // the tree path's exact verdict.
    decode_tree(body, ndjson, out)
}

/// One record's text: the fast path, else the schema path with its errors; `Err` only
/// when the text is not JSON.
fn decode_text(out: &mut DecodedBatch, index: usize, text: &str) -> serde_json::Result<()> {
    match fast_record(text) {
        Some(g) => out.generations.push(g),
        None => push(out, index, serde_json::from_str(text)?),
    }
    Ok(())
}

/// The fast path for one record: typed straight from the text, no JSON tree, no schema
/// walk. `None` unless the record is certainly valid, so every record it does not take
/// goes through [`decode_record`] and gets exactly that function's verdict and errors.
fn fast_record(text: &str) -> Option<Generation> {
    let g: Generation = serde_json::from_str(text).ok()?;
    conforms(&g).then_some(g)
}

/// The tree path: the body as JSON values, each record checked against the schema.
fn decode_tree(body: &[u8], ndjson: bool, mut out: DecodedBatch) -> Result<DecodedBatch, DecodeError> {
    if ndjson {
        let lines = body.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
        for (index, line) in lines.enumerate() {
            match serde_json::from_slice(line) {
                Ok(v) => push(&mut out, index, v),
                Err(e) => out.rejected.push(not_json_line(index, &e)),
            }
        }
        return Ok(out);
    }
    match serde_json::from_slice(body).map_err(|e| DecodeError::NotJson(e.to_string()))? {
        Value::Array(items) => {
            for (index, v) in items.into_iter().enumerate() {
                push(&mut out, index, v);
            }
        }
        v @ Value::Object(_) => push(&mut out, 0, v),
        other => return Err(DecodeError::NotRecords(json_type(&other))),
    }
    Ok(out)
}

fn not_json_line(index: usize, e: &serde_json::Error) -> RecordError {
    RecordError { index, error: format!("[{index}]: line is not JSON: {e}") }
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
        && trace_ok
        && response_ok
}

fn push(out: &mut DecodedBatch, index: usize, value: Value) {
    match decode_record(index, value) {
        Ok(g) => out.generations.push(g),
        Err(error) => out.rejected.push(RecordError { index, error }),
    }
}

/// Validates one record against the schema and the rules the schema cannot say,
/// then types it. The error lists every problem found, each as `[index].path: what`.
pub fn decode_record(index: usize, value: Value) -> Result<Generation, String> {
    if !value.is_object() {
        return Err(format!("[{index}]: expected a generation object, got {}", json_type(&value)));
    }
    // Most records are valid: the yes/no check stops at nothing and allocates nothing;
    // the full error walk runs only for records that fail it.
    let mut problems: Vec<String> = if schema().is_valid(&value) {
        Vec::new()
    } else {
        schema().iter_errors(&value).map(|e| describe(index, &e)).collect()
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

    #[test]
    fn whole_body_errors() {
        assert_eq!(decode_body(b"  ", false).unwrap_err(), DecodeError::Empty);
        assert!(matches!(decode_body(b"{", false).unwrap_err(), DecodeError::NotJson(_)));
        assert_eq!(decode_body(b"42", false).unwrap_err(), DecodeError::NotRecords("integer"));
    }
}
