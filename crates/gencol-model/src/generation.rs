//! The generation record (SPEC §2) as typed Rust.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// One LLM call as the gateway saw it. Unknown fields are accepted and ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Generation {
    pub id: String,
    pub created_at: Timestamp,
    pub completed_at: Timestamp,
    #[serde(default)]
    pub first_token_at: Option<Timestamp>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub api_key_name: Option<String>,
    /// SHA-256 of the API key, 64 lowercase hex digits (checked by the schema).
    #[serde(default)]
    pub api_key_hash: Option<String>,
    pub request: Request,
    #[serde(default)]
    pub response: Option<Response>,
    #[serde(default)]
    pub error: Option<GenerationError>,
}

/// The OpenAI-compatible request body: chat (`messages`), completions (`prompt`) or
/// responses (`input`, `instructions`). Content stays as JSON: its shapes vary by API.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Request {
    pub model: String,
    #[serde(default, deserialize_with = "non_null")]
    pub messages: Option<Vec<Box<RawValue>>>,
    #[serde(default, deserialize_with = "non_null")]
    pub prompt: Option<Value>,
    #[serde(default, deserialize_with = "non_null")]
    pub input: Option<Value>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub max_output_tokens: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub trace: Option<Map<String, Value>>,
}

/// The response body. `choices` for chat and completions, `output` for the
/// responses API.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    pub output: Option<Vec<Value>>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// Token usage and cost, in OpenAI / OpenRouter names (and the responses API's).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<i64>,
    #[serde(default)]
    pub completion_tokens: Option<i64>,
    #[serde(default)]
    pub total_tokens: Option<i64>,
    #[serde(default)]
    pub input_tokens: Option<i64>,
    #[serde(default)]
    pub output_tokens: Option<i64>,
    #[serde(default)]
    pub cost: Option<f64>,
    #[serde(default)]
    pub cost_details: Option<Map<String, Value>>,
    #[serde(default)]
    pub prompt_tokens_details: Option<Map<String, Value>>,
    #[serde(default)]
    pub input_tokens_details: Option<Map<String, Value>>,
    #[serde(default)]
    pub completion_tokens_details: Option<Map<String, Value>>,
    #[serde(default)]
    pub output_tokens_details: Option<Map<String, Value>>,
}

/// A failed generation: still broadcast, with span status ERROR.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GenerationError {
    #[serde(default)]
    pub status: Option<i64>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// Unix epoch nanoseconds, written as RFC 3339 (any offset, fractional seconds kept
/// to the nanosecond) or as an integer of nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Parses an RFC 3339 string; `None` when it is not one or is before 1970.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        u64::try_from(t.unix_timestamp_nanos()).ok().map(Timestamp)
    }

    /// RFC 3339 in UTC with milliseconds (`2026-11-22T10:00:00.000Z`), as Raindrop wants it.
    pub fn to_rfc3339_millis(self) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let fmt =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        t.format(&fmt).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 string or integer epoch nanoseconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                u64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("epoch nanoseconds must be a non-negative integer"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Timestamp, E> {
                Err(E::custom(format!("invalid timestamp {v}: expected RFC 3339 string or integer epoch nanoseconds")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(s).ok_or_else(|| {
                    E::custom(format!(
                        "invalid timestamp {s:?}: expected RFC 3339 (2026-11-22T10:00:00.000Z) or integer epoch nanoseconds"
                    ))
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// For fields the schema does not let be `null`: present means a value, so a `null`
/// fails to type instead of reading as absent.
fn non_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_keeps_nanoseconds_and_offsets() {
        let a = Timestamp::parse_rfc3339("2026-11-22T10:00:00.123456789Z").unwrap();
        let b = Timestamp::parse_rfc3339("2026-11-22T11:00:00.123456789+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.0 % 1_000_000_000, 123_456_789);
        assert_eq!(a.to_rfc3339_millis(), "2026-11-22T10:00:00.123Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }
}
