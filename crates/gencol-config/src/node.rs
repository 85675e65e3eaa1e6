//! The located YAML tree and the typed decoder.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::diagnostic::{Diagnostic, closest_name};

/// Where a value was written: file, 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    /// The file name as given to the loader (or the name passed to `load_str`).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

/// `FILE:LINE:COLUMN`, the prefix of every diagnostic.
impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub loc: Loc,
}

impl<T> Located<T> {
    /// Pairs a value with its location.
    pub fn new(value: T, loc: Loc) -> Self {
        Self { value, loc }
    }
}

/// A YAML value with the location of every map key and every value below it.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// `~`, `null` or nothing at all (`debug:`).
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// Any other scalar, after `${env:...}` substitution.
    String(String),
    /// A list.
    Seq(Vec<Located<Node>>),
    /// Keys in document order; a later file's key replaces or merges into an earlier one.
    Map(Vec<(Located<String>, Located<Node>)>),
}

impl Node {
    /// The value under `key` when this is a map.
    pub fn get(&self, key: &str) -> Option<&Located<Node>> {
        self.entry(key).map(|(_, v)| v)
    }

    /// Where `key` itself is written when this is a map (for "unknown key" errors).
    pub fn key_loc(&self, key: &str) -> Option<&Loc> {
        self.entry(key).map(|(k, _)| &k.loc)
    }

    /// The key and value for `key` when this is a map.
    pub fn entry(&self, key: &str) -> Option<(&Located<String>, &Located<Node>)> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k.value == key).map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The entries when this is a map.
    pub fn as_map(&self) -> Option<&[(Located<String>, Located<Node>)]> {
        match self {
            Node::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items when this is a list.
    pub fn as_seq(&self) -> Option<&[Located<Node>]> {
        match self {
            Node::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The text when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// Whether two trees hold the same values, wherever they were written: a reload
    /// keeps a component whose settings are unchanged even when lines above it moved.
    pub fn same_value(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Seq(a), Node::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.value.same_value(&y.value))
            }
            (Node::Map(a), Node::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka.value == kb.value && va.value.same_value(&vb.value))
            }
            (Node::Float(a), Node::Float(b)) => a.to_bits() == b.to_bits(),
            (a, b) => a == b,
        }
    }

    /// Whether this is `Node::Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    /// The same value without locations, as JSON. Keys are unique, so nothing is lost;
    /// their order is `serde_json`'s (sorted unless its `preserve_order` feature is on).
    pub fn to_json(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            // JSON has no infinities or NaN; keep YAML's spelling so a float field
            // reports a clear type error instead of silently reading null.
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or_else(
                || {
                    Value::String(
                        if f.is_nan() {
                            ".nan"
                        } else if *f > 0.0 {
                            ".inf"
                        } else {
                            "-.inf"
                        }
                        .to_owned(),
                    )
                },
                Value::Number,
            ),
            Node::String(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(|i| i.value.to_json()).collect()),
            Node::Map(entries) => {
                Value::Object(entries.iter().map(|(k, v)| (k.value.clone(), v.value.to_json())).collect())
            }
        }
    }

    /// A short word for the value's type, for messages: `map`, `list`, `string`...
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Int(_) => "integer",
            Node::Float(_) => "number",
            Node::String(_) => "string",
            Node::Seq(_) => "list",
            Node::Map(_) => "map",
        }
    }
}

/// Decodes a located node into `T` (typically a `#[serde(deny_unknown_fields)]`
/// struct). On failure the diagnostic points at the deepest value or key that caused
/// it: an unknown key at that key, a bad duration at that value, a missing field at
/// the map that lacks it.
///
/// Two leniencies make YAML feel natural: a number or boolean where a string is wanted
/// is read as its text (`token: 123456`, or `${env:TOKEN}` that expands to digits), and
/// a null where a struct is wanted (`debug:` with nothing after it) is read as an empty
/// map, so defaults apply and missing keys are named.
pub fn decode<T: DeserializeOwned>(node: &Located<Node>) -> Result<T, Diagnostic> {
    let mut json = node.value.to_json();
    // Each retry turns one number, boolean or null into a string or map for good, so
    // there are never more retries than values; the bound only guards against a bug.
    let mut retries_left = count_values(&node.value);
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(&json) {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let path: Vec<Segment> = err.path().iter().cloned().collect();
        let message = err.inner().to_string();
        if retries_left > 0 && retry_leniently(&mut json, &path, &message) {
            retries_left -= 1;
            continue;
        }
        return Err(diagnose(node, &path, &message));
    }
}

/// How many values (scalars, lists, maps) `node` holds, itself included.
fn count_values(node: &Node) -> usize {
    1 + match node {
        Node::Seq(items) => items.iter().map(|i| count_values(&i.value)).sum(),
        Node::Map(entries) => entries.iter().map(|(_, v)| count_values(&v.value)).sum(),
        _ => 0,
    }
}

/// Applies one leniency of [`decode`] at `path` when `message` is the type error it
/// fixes; returns whether the JSON changed (and decoding should be tried again).
fn retry_leniently(json: &mut Value, path: &[Segment], message: &str) -> bool {
    let Some(invalid) = message.strip_prefix("invalid type: ") else {
        return false;
    };
    let Some(target) = json_at_mut(json, path) else {
        return false;
    };
    let wants_string = invalid.ends_with("expected a string");
    let wants_struct = invalid.contains("expected struct ") || invalid.ends_with("expected a map");
    match target {
        Value::Number(n) if wants_string => {
            *target = Value::String(n.to_string());
            true
        }
        Value::Bool(b) if wants_string => {
            *target = Value::String(b.to_string());
            true
        }
        Value::Null if wants_struct => {
            *target = Value::Object(serde_json::Map::new());
            true
        }
        _ => false,
    }
}

/// The JSON value a serde path leads to, for the leniencies of [`decode`].
fn json_at_mut<'a>(mut json: &'a mut Value, path: &[Segment]) -> Option<&'a mut Value> {
    for segment in path {
        json = match (segment, json) {
            (Segment::Map { key }, Value::Object(map)) => map.get_mut(key)?,
            (Segment::Seq { index }, Value::Array(items)) => items.get_mut(*index)?,
            // An externally tagged enum is `{variant: content}` or the bare string.
            (Segment::Enum { variant }, Value::Object(map)) => map.get_mut(variant)?,
            (Segment::Enum { .. }, other @ Value::String(_)) => other,
            _ => return None,
        };
    }
    Some(json)
}

/// Follows `path` through the located tree as far as it goes. Returns the deepest node
/// reached, its parent (for key locations) and the path parts leading to it.
fn locate<'a>(root: &'a Located<Node>, path: &[Segment]) -> (&'a Located<Node>, Option<&'a Node>, Vec<String>) {
    let mut here = root;
    let mut parent = None;
    let mut parts = Vec::new();
    for segment in path {
        let next = match (segment, &here.value) {
            (Segment::Map { key }, node @ Node::Map(_)) => node.get(key).map(|n| (n, key.clone())),
            (Segment::Enum { variant }, node @ Node::Map(_)) => node.get(variant).map(|n| (n, variant.clone())),
            // A unit variant is the string itself; nothing deeper to point at.
            (Segment::Enum { .. }, _) => None,
            (Segment::Seq { index }, Node::Seq(items)) => items.get(*index).map(|n| (n, format!("[{index}]"))),
            _ => None,
        };
        let Some((node, part)) = next else { break };
        parts.push(part);
        parent = Some(&here.value);
        here = node;
    }
    (here, parent, parts)
}

/// `["receivers", "otlp", "[0]"]` → `receivers.otlp[0]`.
fn join_path(parts: &[String]) -> String {
    let mut out = String::new();
    for part in parts {
        if !out.is_empty() && !part.starts_with('[') {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

/// The names between backticks in a serde message (`one of `a`, `b``).
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// " (expected one of: a, b)" for an unknown key or value, with a suggestion first.
fn expected_list(name: &str, rest: &str, what: &str) -> String {
    let expected = backticked(rest);
    let mut out = String::new();
    if let Some(best) = closest_name(name, expected.iter().copied()) {
        out.push_str(&format!(", did you mean `{best}`?"));
    }
    if expected.is_empty() {
        out.push_str(&format!(" (no {what}s are allowed here)"));
    } else {
        out.push_str(&format!(" (expected one of: {})", expected.join(", ")));
    }
    out
}

/// Turns a serde failure at `path` into a message at the right place.
fn diagnose(root: &Located<Node>, path: &[Segment], message: &str) -> Diagnostic {
    let (node, parent, parts) = locate(root, path);
    let dotted = join_path(&parts);
    let prefixed = |dotted: &str, text: String| if dotted.is_empty() { text } else { format!("{dotted}: {text}") };

    // serde: "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or
    // "there are no fields"); serde_path_to_error's path ends with `x` itself.
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, rest)) = rest.split_once('`')
    {
        let reached_key = matches!(path.last(), Some(Segment::Map { key }) if key == name);
        let (loc, map_path) = match parent.and_then(|p| p.key_loc(name)) {
            Some(key_loc) if reached_key => (key_loc, join_path(&parts[..parts.len().saturating_sub(1)])),
            _ => (&node.loc, dotted.clone()),
        };
        let text = format!("unknown key `{name}`{}", expected_list(name, rest, "key"));
        return Diagnostic::error(loc, prefixed(&map_path, text));
    }

    // serde: "unknown variant `x`, expected one of `a`, `b`" at the value itself.
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((name, rest)) = rest.split_once('`')
    {
        let text = format!("unknown value `{name}`{}", expected_list(name, rest, "value"));
        return Diagnostic::error(&node.loc, prefixed(&dotted, text));
    }

    // serde: "missing field `x`", raised by the map that lacks it.
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        return Diagnostic::error(&node.loc, prefixed(&dotted, format!("missing key `{name}`")));
    }

    // serde: "invalid type: string \"abc\", expected u64". The found value is dropped:
    // it may be a secret that ended up under the wrong key.
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        let found = found.split(['`', '"']).next().unwrap_or(found).trim();
        let found = match found {
            "sequence" => "list",
            "floating point" => "number",
            "unit" => "null",
            other => other,
        };
        return Diagnostic::error(&node.loc, prefixed(&dotted, format!("expected {expected}, found {found}")));
    }

    Diagnostic::error(&node.loc, prefixed(&dotted, message.to_owned()))
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    fn section(text: &str, key: &str) -> super::Node {
        let root = load_str("t.yaml", text, &|_| None).expect("valid yaml");
        root.value.get(key).expect("the key").value.clone()
    }

    #[test]
    fn same_value_ignores_where_things_are_written() {
        let a = section("a: {x: 1, y: [true, 2.5, \"s\"]}\n", "a");
        let b = section("\n\n\nb: 0\na:\n  x: 1\n  y:\n    - true\n    - 2.5\n    - s\n", "a");
        assert!(a.same_value(&b));
        assert_ne!(a, b, "the locations differ");
        let c = section("a: {x: 1, y: [true, 2.5, \"t\"]}\n", "a");
        assert!(!a.same_value(&c));
        let d = section("a: {y: [true, 2.5, \"s\"], x: 1}\n", "a");
        assert!(!a.same_value(&d), "key order is kept: a reload restarts a reordered component, which is safe");
    }
}
