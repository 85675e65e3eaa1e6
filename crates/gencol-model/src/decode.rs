//! From request body to generations: the three body forms (object, array, NDJSON),
//! the JSON Schema, and the checks the schema cannot express, with errors that name
//! the record index and field path (`[3].request.model: missing`).

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde::Deserialize;
use serde_json::Value;

use crate::generation::{Generation, Timestamp};
use crate::schema::schema;

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
    if ndjson {
        let lines = body.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
        for (index, line) in lines.enumerate() {
            match parse(line) {
                Ok(v) => push(&mut out, index, v),
                Err(e) => out.rejected.push(RecordError { index, error: format!("[{index}]: line is not JSON: {e}") }),
            }
        }
        return Ok(out);
    }
    match parse(body).map_err(|e| DecodeError::NotJson(e.to_string()))? {
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

/// Parses JSON with UTF-8 checked once for the whole input instead of string by string;
/// input that is not UTF-8 is parsed as bytes so the error says where.
fn parse(bytes: &[u8]) -> serde_json::Result<Value> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
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
