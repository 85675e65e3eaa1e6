//! What every processor's `configure` does the same way: decode its settings, where a
//! component written without settings (`hierarchy:`) means all defaults, and point an error
//! at the setting that caused it.

use gencol_config::{Diagnostic, Loc, Located, Node, decode};
use serde::de::DeserializeOwned;

/// Decodes a processor's settings; `Node::Null` (nothing written) gives the defaults.
pub(crate) fn decode_or_default<T: DeserializeOwned + Default>(config: &Located<Node>) -> Result<T, Vec<Diagnostic>> {
    match config.value {
        Node::Null => Ok(T::default()),
        _ => decode(config).map_err(|d| vec![d]),
    }
}

/// Where `key` is written among the settings, else where the settings are, so an error
/// about a defaulted value still points somewhere useful.
pub(crate) fn setting_loc(config: &Located<Node>, key: &str) -> Loc {
    setting(config, key).map(|n| n.loc.clone()).unwrap_or_else(|| config.loc.clone())
}

/// The value under `key`, when the settings are a map that has it.
pub(crate) fn setting<'a>(config: &'a Located<Node>, key: &str) -> Option<&'a Located<Node>> {
    match &config.value {
        Node::Map(_) => config.value.get(key),
        _ => None,
    }
}

/// Located trees built by hand, as the YAML loader would make them, for the tests of each
/// processor's `configure`: every value carries the line it is "written" on.
#[cfg(test)]
pub(crate) mod written {
    use gencol_config::{ComponentId, Loc, Located, Node};
    use gencol_engine::ComponentContext;

    pub(crate) fn at(line: u32, value: Node) -> Located<Node> {
        Located { value, loc: Loc { file: "gencol.yaml".into(), line, column: 5 } }
    }

    pub(crate) fn text(line: u32, value: &str) -> Located<Node> {
        at(line, Node::String(value.to_owned()))
    }

    pub(crate) fn map(line: u32, entries: Vec<(&str, Located<Node>)>) -> Located<Node> {
        let entries = entries
            .into_iter()
            .map(|(key, value)| {
                let key = Located { value: key.to_owned(), loc: Loc { column: 3, ..value.loc.clone() } };
                (key, value)
            })
            .collect();
        at(line, Node::Map(entries))
    }

    pub(crate) fn seq(line: u32, items: Vec<Located<Node>>) -> Located<Node> {
        at(line, Node::Seq(items))
    }

    pub(crate) fn context(kind: &str) -> ComponentContext {
        ComponentContext { id: ComponentId { kind: kind.to_owned(), name: None }, base_dir: ".".into() }
    }
}
