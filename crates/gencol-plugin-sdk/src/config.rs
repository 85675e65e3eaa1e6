//! Reading an exporter's settings the way gencol reads its own: a `serde` struct with
//! `deny_unknown_fields`, errors naming the setting they are about (so gencol reports
//! them at the right YAML line) and never quoting a value (it may be a secret), and
//! sizes written as `4096`, `512KiB` or `10MiB`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::ConfigError;

/// Decodes `config` into `T`; `null` (no settings written) reads as an empty map, so
/// defaults apply and missing required keys are named.
pub fn decode<T: DeserializeOwned>(config: &Value) -> Result<T, Vec<ConfigError>> {
    let empty = Value::Object(serde_json::Map::new());
    let value = if config.is_null() { &empty } else { config };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![ConfigError { path, message: readable(&e.inner().to_string()) }]
    })
}

/// serde's wording, turned into gencol's: `unknown key`, `missing key`, and type errors
/// without the value that was found.
fn readable(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, rest)) = rest.split_once('`')
    {
        let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        return if expected.is_empty() {
            format!("unknown key `{name}` (no keys are allowed here)")
        } else {
            format!("unknown key `{name}` (expected one of: {})", expected.join(", "))
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return format!("missing key `{}", rest);
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        // "string \"hunter2\"" → "string": the value may be a secret under the wrong key.
        let found = found.split([' ', '`', '"']).next().unwrap_or(found);
        let found = match found {
            "sequence" => "list",
            "floating" => "number",
            "unit" => "null",
            other => other,
        };
        return format!("expected {expected}, found {found}");
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((_, expected)) = rest.rsplit_once(", expected ")
    {
        return format!("invalid value, expected {expected}");
    }
    message.to_owned()
}

/// A size in bytes, written as a number (`4096`) or with a unit (`512KiB`, `10MiB`,
/// `1GB`), as gencol's own settings are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as 4096, 512KiB or 10MiB")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                parse_byte_size(text).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses `4096`, `512KiB`, `10 MiB`, `1GB` (units B, KB, KiB, MB, MiB, GB, GiB).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size: write e.g. 4096, 512KiB or 10MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown size unit `{other}` in `{text}` (use B, KB, KiB, MB, MiB, GB or GiB)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("size `{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        url: String,
        #[serde(default)]
        retries: u32,
        #[serde(default)]
        headers: std::collections::BTreeMap<String, String>,
        max_size: Option<ByteSize>,
    }

    fn err(v: Value) -> ConfigError {
        decode::<Settings>(&v).unwrap_err().remove(0)
    }

    #[test]
    fn errors_name_the_setting_and_never_the_value() {
        assert_eq!(err(json!(null)), ConfigError::new("", "missing key `url`"));
        assert_eq!(
            err(json!({"url": "x", "urll": 1})),
            ConfigError::new("urll", "unknown key `urll` (expected one of: url, retries, headers, max_size)")
        );
        let e = err(json!({"url": "x", "retries": "hunter2"}));
        assert_eq!(e.path, "retries");
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        let e = err(json!({"url": "x", "headers": {"X-Key": 5}}));
        assert_eq!(e.path, "headers.X-Key");
        assert_eq!(err(json!({"url": "x", "max_size": "5 parsecs"})).path, "max_size");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert_eq!(parse_byte_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_byte_size("10 MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_byte_size("1GB"), Ok(1_000_000_000));
        assert!(parse_byte_size("ten").is_err());
        assert!(parse_byte_size("5XB").is_err());
        let s: Settings = decode(&json!({"url": "u", "max_size": "1KiB"})).unwrap();
        assert_eq!(s.max_size, Some(ByteSize(1024)));
    }
}
