//! Reading files, substituting `${env:...}`, merging.

use std::path::Path;
use std::sync::Arc;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::node::{Loc, Located, Node};
use crate::yaml;

/// Looks up an environment variable; tests pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Parses each file, substitutes `${env:VAR}` and `${env:VAR:-default}` in every string
/// scalar (a value that is exactly one reference takes the YAML type of what it expands
/// to: `${env:PORT}` → 4318 is an integer), and deep-merges the files in order (maps
/// merge key by key, a later scalar or list replaces an earlier one). All problems
/// (unreadable file, YAML syntax, undefined variable without default) are reported
/// together.
pub fn load_files(paths: &[&Path], env: EnvLookup<'_>) -> Result<Located<Node>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut merged: Option<Located<Node>> = None;
    for path in paths {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                diags.push(Diagnostic::file_error(name, format!("cannot read config file: {e}")));
                continue;
            }
        };
        // Keep going after a broken file: the user wants every problem in one run.
        if let Ok(node) = load_one(&name, &text, env, &mut diags) {
            merged = Some(match merged {
                Some(base) => merge(base, node),
                None => node,
            });
        }
    }
    if diags.has_errors() {
        return Err(diags);
    }
    // No files at all is an empty config; the layout check then says what is missing.
    Ok(merged.unwrap_or_else(|| Located {
        value: Node::Map(Vec::new()),
        loc: Loc { file: "(no config file)".into(), line: 1, column: 1 },
    }))
}

/// Like [`load_files`] for one document held in memory; `name` is what messages call it.
pub fn load_str(name: &str, text: &str, env: EnvLookup<'_>) -> Result<Located<Node>, Diagnostics> {
    let mut diags = Diagnostics::default();
    match load_one(name, text, env, &mut diags) {
        Ok(node) if !diags.has_errors() => Ok(node),
        _ => Err(diags),
    }
}

/// Parses and substitutes one document, adding its problems to `diags`; `Err` when
/// the document had any error.
fn load_one(name: &str, text: &str, env: EnvLookup<'_>, diags: &mut Diagnostics) -> Result<Located<Node>, ()> {
    let file: Arc<str> = name.into();
    let mut node = yaml::parse(&file, text).map_err(|d| diags.push(d))?;
    let before = diags.0.len();
    substitute(&mut node, env, diags);
    if diags.0[before..].iter().any(Diagnostic::is_error) { Err(()) } else { Ok(node) }
}

/// Deep merge: maps merge key by key (keeping the earlier key order, new keys after),
/// anything else is replaced by the later value. The result carries the later
/// file's locations, because that is the text that decided the value.
pub(crate) fn merge(base: Located<Node>, over: Located<Node>) -> Located<Node> {
    match (base.value, over.value) {
        (Node::Map(mut entries), Node::Map(later)) => {
            for (key, value) in later {
                match entries.iter().position(|(k, _)| k.value == key.value) {
                    Some(i) => {
                        let (_, old) = entries.remove(i);
                        entries.insert(i, (key, merge(old, value)));
                    }
                    None => entries.push((key, value)),
                }
            }
            Located { value: Node::Map(entries), loc: over.loc }
        }
        (_, value) => Located { value, loc: over.loc },
    }
}

/// Replaces `${env:...}` in every string scalar below `node` (map keys are left as
/// written: ids and setting names are not secrets and must stay checkable).
fn substitute(node: &mut Located<Node>, env: EnvLookup<'_>, diags: &mut Diagnostics) {
    match &mut node.value {
        Node::String(text) => match expand(text, env) {
            Ok(Expansion::Unchanged) => {}
            Ok(Expansion::Text(expanded)) => node.value = Node::String(expanded),
            Ok(Expansion::Whole(expanded)) => node.value = typed_scalar(expanded),
            Err(messages) => {
                for message in messages {
                    diags.push(Diagnostic::error(&node.loc, message));
                }
            }
        },
        Node::Seq(items) => items.iter_mut().for_each(|item| substitute(item, env, diags)),
        Node::Map(entries) => entries.iter_mut().for_each(|(_, value)| substitute(value, env, diags)),
        Node::Null | Node::Bool(_) | Node::Int(_) | Node::Float(_) => {}
    }
}

/// The result of substituting one string scalar.
#[derive(Debug, PartialEq)]
enum Expansion {
    /// No reference and no escape: keep the string as it is.
    Unchanged,
    /// References and text mixed (or escapes): the result is a string.
    Text(String),
    /// The scalar was exactly one reference: the result gets a YAML scalar type.
    Whole(String),
}

/// Expands `${env:VAR}` / `${env:VAR:-default}` and `$${` (a literal `${`). Errors
/// name the variable and the fix, never a value.
fn expand(text: &str, env: EnvLookup<'_>) -> Result<Expansion, Vec<String>> {
    if !text.contains("${") {
        return Ok(Expansion::Unchanged);
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    let mut whole = false;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let here = &rest[i..];
        if let Some(after) = here.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body) = here.strip_prefix("${") else {
            out.push('$');
            rest = &here[1..];
            continue;
        };
        let Some(end) = body.find('}') else {
            errors.push("unterminated `${`: close it with `}`, or write `$${` for a literal `${`".to_owned());
            out.push_str(here);
            rest = "";
            break;
        };
        let inner = &body[..end];
        let after = &body[end + 1..];
        match reference(inner, env) {
            Ok(Some(value)) => {
                // Exactly one reference and nothing around it: the value is typed.
                whole = here.len() == text.len() && after.is_empty();
                out.push_str(&value);
            }
            Ok(None) => {
                out.push_str("${");
                out.push_str(inner);
                out.push('}');
            }
            Err(message) => errors.push(message),
        }
        rest = after;
    }
    out.push_str(rest);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(if whole { Expansion::Whole(out) } else { Expansion::Text(out) })
}

/// Resolves the inside of one `${...}`: `Some(value)` for an `env:` reference, `None`
/// for text that is not a reference at all (kept literally).
fn reference(inner: &str, env: EnvLookup<'_>) -> Result<Option<String>, String> {
    if let Some(spec) = inner.strip_prefix("env:") {
        let (name, default) = match spec.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (spec, None),
        };
        if !is_var_name(name) {
            return Err(format!(
                "`${{env:{name}}}`: `{name}` is not a valid environment variable name \
                 (letters, digits and `_`, not starting with a digit)"
            ));
        }
        return match (env(name), default) {
            // Like the shell's `:-`, an empty variable also takes the default.
            (Some(value), Some(default)) if value.is_empty() => Ok(Some(default.to_owned())),
            (Some(value), _) => Ok(Some(value)),
            (None, Some(default)) => Ok(Some(default.to_owned())),
            (None, None) => {
                Err(format!("environment variable {name} is not set: set {name} or write ${{env:{name}:-default}}"))
            }
        };
    }
    // `${TOKEN}` is what shells and older collectors accept; silently keeping it as
    // text would send a literal "${TOKEN}" as a credential.
    if is_var_name(inner) {
        return Err(format!(
            "`${{{inner}}}` is not expanded: write ${{env:{inner}}} (or $${{{inner}}} for the literal text)"
        ));
    }
    if let Some((scheme, _)) = inner.split_once(':')
        && !scheme.is_empty()
        && scheme.chars().all(|c| c.is_ascii_lowercase())
    {
        return Err(format!(
            "`${{{scheme}:...}}` is not supported: gencol expands only ${{env:VAR}} (write $${{ for a literal `${{`)"
        ));
    }
    Ok(None)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The YAML scalar type of an expanded value (`4318` → int, `true` → bool, `~` →
/// null). Only spellings that read back identically are typed, so a value that a
/// string field later re-reads as text (`decode` does that) is never altered: a token
/// `007` stays the string "007".
fn typed_scalar(value: String) -> Node {
    match value.as_str() {
        "null" | "~" => return Node::Null,
        "true" => return Node::Bool(true),
        "false" => return Node::Bool(false),
        _ => {}
    }
    if let Ok(i) = value.parse::<i64>()
        && i.to_string() == value
    {
        return Node::Int(i);
    }
    if value.contains('.')
        && let Ok(f) = value.parse::<f64>()
        && f.is_finite()
        && (f.to_string() == value || format!("{f:?}") == value)
    {
        return Node::Float(f);
    }
    Node::String(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("collector.internal".into()),
            "PORT" => Some("4318".into()),
            "RATIO" => Some("0.25".into()),
            "FLAG" => Some("true".into()),
            "NOTHING" => Some("null".into()),
            "EMPTY" => Some(String::new()),
            "ZEROS" => Some("007".into()),
            "GENCOL_TOKEN" => Some("s3cr3t-t0ken".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<Expansion, Vec<String>> {
        expand(text, &env)
    }

    fn text(s: &str) -> Result<Expansion, Vec<String>> {
        Ok(Expansion::Text(s.into()))
    }

    #[test]
    fn plain_strings_are_untouched() {
        assert_eq!(run("no references"), Ok(Expansion::Unchanged));
        assert_eq!(run("costs $5"), Ok(Expansion::Unchanged));
        assert_eq!(run("TCK-[0-9]{6}"), Ok(Expansion::Unchanged));
    }

    #[test]
    fn references_anywhere_and_several() {
        assert_eq!(run("http://${env:HOST}:${env:PORT}/v1"), text("http://collector.internal:4318/v1"));
        assert_eq!(run("Bearer ${env:GENCOL_TOKEN}"), text("Bearer s3cr3t-t0ken"));
        assert_eq!(run("$5 ${env:PORT}"), text("$5 4318"));
    }

    #[test]
    fn whole_reference_is_typed() {
        assert_eq!(run("${env:PORT}"), Ok(Expansion::Whole("4318".into())));
        assert_eq!(typed_scalar("4318".into()), Node::Int(4318));
        assert_eq!(typed_scalar("-3".into()), Node::Int(-3));
        assert_eq!(typed_scalar("0.25".into()), Node::Float(0.25));
        assert_eq!(typed_scalar("2.0".into()), Node::Float(2.0));
        assert_eq!(typed_scalar("true".into()), Node::Bool(true));
        assert_eq!(typed_scalar("false".into()), Node::Bool(false));
        assert_eq!(typed_scalar("null".into()), Node::Null);
        assert_eq!(typed_scalar("~".into()), Node::Null);
        assert_eq!(typed_scalar("collector.internal".into()), Node::String("collector.internal".into()));
        // Spellings that would not read back the same stay text (tokens keep their digits).
        assert_eq!(typed_scalar("007".into()), Node::String("007".into()));
        assert_eq!(typed_scalar("+5".into()), Node::String("+5".into()));
        assert_eq!(typed_scalar("yes".into()), Node::String("yes".into()));
        assert_eq!(typed_scalar("".into()), Node::String(String::new()));
    }

    #[test]
    fn defaults() {
        assert_eq!(run("${env:MISSING:-fallback}"), Ok(Expansion::Whole("fallback".into())));
        assert_eq!(run("${env:MISSING:-}"), Ok(Expansion::Whole(String::new())));
        assert_eq!(run("${env:PORT:-9999}"), Ok(Expansion::Whole("4318".into())));
        // Like the shell, an empty variable takes the default.
        assert_eq!(run("${env:EMPTY:-x}"), Ok(Expansion::Whole("x".into())));
        assert_eq!(run("${env:EMPTY}"), Ok(Expansion::Whole(String::new())));
        assert_eq!(run("a-${env:MISSING:-b:c}-d"), text("a-b:c-d"));
    }

    #[test]
    fn escapes() {
        assert_eq!(run("$${env:GENCOL_TOKEN}"), text("${env:GENCOL_TOKEN}"));
        assert_eq!(run("literal $${env:X} and ${env:PORT}"), text("literal ${env:X} and 4318"));
        // An escaped reference is text, never a typed value.
        assert_eq!(run("$${env:PORT}"), text("${env:PORT}"));
    }

    #[test]
    fn missing_variable_names_the_fix() {
        let errors = run("${env:UNSET_TOKEN}").unwrap_err();
        assert_eq!(
            errors,
            vec!["environment variable UNSET_TOKEN is not set: set UNSET_TOKEN or write ${env:UNSET_TOKEN:-default}"]
        );
        let errors = run("${env:A1} and ${env:B2}").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].contains("A1") && errors[1].contains("B2"));
    }

    #[test]
    fn malformed_references() {
        let e = run("${GENCOL_TOKEN}").unwrap_err();
        assert!(e[0].contains("write ${env:GENCOL_TOKEN}"), "{e:?}");
        let e = run("${env:GENCOL_TOKEN").unwrap_err();
        assert!(e[0].starts_with("unterminated `${`"), "{e:?}");
        let e = run("${env:1BAD}").unwrap_err();
        assert!(e[0].contains("not a valid environment variable name"), "{e:?}");
        let e = run("${file:/etc/passwd}").unwrap_err();
        assert!(e[0].contains("only ${env:VAR}"), "{e:?}");
        // Not a reference at all: kept as written.
        assert_eq!(run("${ a b }"), text("${ a b }"));
    }

    #[test]
    fn messages_never_hold_values() {
        for input in ["${GENCOL_TOKEN}", "${env:GENCOL_TOKEN} ${env:NOPE}", "${env:NOPE:-} ${env:X!}"] {
            let errors = run(input).unwrap_err();
            assert!(errors.iter().all(|e| !e.contains("s3cr3t")), "{errors:?}");
        }
    }

    fn loc(file: &str, line: u32, column: u32) -> Loc {
        Loc { file: file.into(), line, column }
    }

    fn map(entries: Vec<(&str, Located<Node>)>, at: Loc) -> Located<Node> {
        let entries = entries.into_iter().map(|(k, v)| (Located { value: k.to_owned(), loc: v.loc.clone() }, v));
        Located { value: Node::Map(entries.collect()), loc: at }
    }

    fn int(i: i64, at: Loc) -> Located<Node> {
        Located { value: Node::Int(i), loc: at }
    }

    #[test]
    fn merge_is_deep_and_later_wins() {
        let base = map(
            vec![
                ("a", int(1, loc("x", 1, 4))),
                ("m", map(vec![("keep", int(2, loc("x", 3, 9))), ("over", int(3, loc("x", 4, 9)))], loc("x", 3, 3))),
            ],
            loc("x", 1, 1),
        );
        let over = map(
            vec![
                ("m", map(vec![("over", int(30, loc("y", 2, 9))), ("new", int(4, loc("y", 3, 8)))], loc("y", 2, 3))),
                ("b", int(5, loc("y", 4, 4))),
            ],
            loc("y", 1, 1),
        );
        let merged = merge(base, over);
        assert_eq!(merged.loc, loc("y", 1, 1));
        let keys: Vec<_> = merged.value.as_map().unwrap().iter().map(|(k, _)| k.value.as_str()).collect();
        assert_eq!(keys, ["a", "m", "b"]);
        let m = merged.value.get("m").unwrap();
        assert_eq!(m.loc, loc("y", 2, 3));
        assert_eq!(m.value.get("keep").unwrap(), &int(2, loc("x", 3, 9)));
        assert_eq!(m.value.get("over").unwrap(), &int(30, loc("y", 2, 9)));
        assert_eq!(m.value.get("new").unwrap(), &int(4, loc("y", 3, 8)));
        // A later scalar replaces a map and the other way round.
        let replaced = merge(int(1, loc("x", 1, 1)), map(vec![], loc("y", 1, 1)));
        assert_eq!(replaced.value, Node::Map(vec![]));
    }
}
