//! YAML text → located tree, through `serde-saphyr`'s `Spanned` values.
//!
//! `serde-saphyr` reports a location for every value wrapped in `Spanned<T>`, so a
//! private tree whose every key and value is spanned gives us the location of
//! everything; it is then converted to the public [`Node`] with the file name.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned};

use crate::diagnostic::Diagnostic;
use crate::node::{Loc, Located, Node};

/// A YAML value as `serde-saphyr` hands it over, before it gets its file name.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Key>, Spanned<Raw>)>),
}

/// A map key as text. YAML allows `1:` or `true:` as keys; they are names like any
/// other here, so they are kept as written. A null key (`~:`) is refused.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key (a name)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key(v.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
        Err(E::custom("a map key cannot be null or empty: write a name"))
    }

    fn visit_none<E: de::Error>(self) -> Result<Key, E> {
        self.visit_unit()
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large (at most {})", i64::MAX)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        i64::try_from(v).map(Raw::Int).map_err(|_| E::custom(format!("integer {v} does not fit in 64 bits")))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i64::try_from(v).map(Raw::Int).map_err(|_| E::custom(format!("integer {v} does not fit in 64 bits")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        // Duplicate keys never reach here: serde-saphyr's default policy rejects the
        // second one with its location.
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(entry) = map.next_entry::<Spanned<Key>, Spanned<Raw>>()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}

fn loc_of(file: &Arc<str>, at: &serde_saphyr::Location) -> Loc {
    // Line 0 means "unknown"; clamp so a message still has a usable place.
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX).max(1);
    Loc { file: file.clone(), line: clamp(at.line()), column: clamp(at.column()) }
}

fn convert(file: &Arc<str>, raw: Spanned<Raw>) -> Located<Node> {
    let loc = loc_of(file, &raw.referenced);
    let value = match raw.value {
        Raw::Null => Node::Null,
        Raw::Bool(b) => Node::Bool(b),
        Raw::Int(i) => Node::Int(i),
        Raw::Float(f) => Node::Float(f),
        Raw::Str(s) => Node::String(s),
        Raw::Seq(items) => Node::Seq(items.into_iter().map(|i| convert(file, i)).collect()),
        Raw::Map(entries) => Node::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Located { loc: loc_of(file, &k.referenced), value: k.value.0 }, convert(file, v)))
                .collect(),
        ),
    };
    Located { value, loc }
}

/// Parses one YAML document. An empty document (nothing, or only comments) is an
/// empty map, so an empty file is a valid, empty config.
pub(crate) fn parse(file: &Arc<str>, text: &str) -> Result<Located<Node>, Diagnostic> {
    let start = Loc { file: file.clone(), line: 1, column: 1 };
    if is_blank(text) {
        return Ok(Located { value: Node::Map(Vec::new()), loc: start });
    }
    // YAML 1.2 core scalars, like the OpenTelemetry Collector's parser: `yes`/`on`
    // stay strings, and `007` or `1_000` stay text (a token must not lose digits).
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        with_snippet: false,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => {
            let node = convert(file, raw);
            Ok(match node.value {
                Node::Null => Located { value: Node::Map(Vec::new()), loc: start },
                _ => node,
            })
        }
        Err(err) => {
            let loc = err.location().map_or(start, |at| loc_of(file, &at));
            Err(Diagnostic::error(&loc, yaml_message(&err)))
        }
    }
}

/// Whether `text` holds no YAML node at all (only whitespace, comments, `---`).
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// The error's message without serde-saphyr's own " at line X, column Y" suffix or
/// snippet: our diagnostics carry the place in front.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error;
    let mut err = err;
    // The wrappers only add a snippet or the alias site; the cause is inside.
    while let Error::WithSnippet { error, .. } | Error::AliasError { error, .. } = err {
        err = error;
    }
    // The library's own wording for these names Rust APIs; say it in config terms.
    match err {
        Error::DuplicateMappingKey { key: Some(key), .. } => {
            return format!("duplicate key `{key}`: a key may appear only once in a map");
        }
        Error::DuplicateMappingKey { key: None, .. } => {
            return "duplicate key: a key may appear only once in a map".to_owned();
        }
        Error::MultipleDocuments { .. } => {
            return "more than one YAML document (`---`) in one file: put each in its own file \
                    and pass several --config"
                .to_owned();
        }
        _ => {}
    }
    let text = serde_saphyr::DefaultMessageFormatter.format_message(err).into_owned();
    // The formatter's contract is "no location suffix", but strip one defensively.
    let text = match text.rfind(" at line ") {
        Some(i) if text[i..].contains("column") => text[..i].to_owned(),
        _ => text,
    };
    // Messages are one line each in `validate`'s output.
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    format!("invalid YAML: {text}")
}
