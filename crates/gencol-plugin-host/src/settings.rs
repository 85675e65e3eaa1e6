//! From a plugin's error path (`url`, `headers.X-Api-Key`, `targets[2].url`) back to the
//! line and column of the YAML it is about.

use gencol_config::{Loc, Located, Node};

/// Where the setting at `path` was written: the deepest node the path reaches (the
/// exporter's map when the key is missing, e.g. "missing key `url`"). An unknown key
/// is pointed at the key itself.
pub fn locate<'a>(root: &'a Located<Node>, path: &str, message: &str) -> &'a Loc {
    let mut here = root;
    let mut rest = path;
    let mut last_key: Option<&Loc> = None;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let Some((index, tail)) = after.split_once(']') else { break };
            let item = index.parse::<usize>().ok().and_then(|i| here.value.as_seq().and_then(|s| s.get(i)));
            let Some(item) = item else { break };
            here = item;
            last_key = None;
            rest = tail.strip_prefix('.').unwrap_or(tail);
            continue;
        }
        // Keys may contain dots (`headers.X.Y`): the longest key that fits wins.
        let Some(entries) = here.value.as_map() else { break };
        let fits = |key: &str| {
            rest.strip_prefix(key).is_some_and(|tail| tail.is_empty() || tail.starts_with('.') || tail.starts_with('['))
        };
        let Some((key, value)) = entries.iter().filter(|(k, _)| fits(&k.value)).max_by_key(|(k, _)| k.value.len())
        else {
            break;
        };
        here = value;
        last_key = Some(&key.loc);
        let tail = &rest[key.value.len()..];
        rest = tail.strip_prefix('.').unwrap_or(tail);
    }
    match last_key {
        Some(key) if rest.is_empty() && message.starts_with("unknown key") => key,
        _ => &here.loc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml() -> Located<Node> {
        let text = "exporters:\n  webhook:\n    url: ftp://x\n    headers:\n      X.Key: v\n    targets:\n      - {url: a}\n      - {url: b}\n    urll: 1\n";
        let root = gencol_config::load_str("t.yaml", text, &|_| None).unwrap();
        root.value.get("exporters").and_then(|e| e.value.get("webhook")).cloned().unwrap()
    }

    fn at(path: &str, message: &str) -> (u32, u32) {
        let config = yaml();
        let loc = locate(&config, path, message);
        (loc.line, loc.column)
    }

    #[test]
    fn paths_lead_to_their_lines() {
        assert_eq!(at("url", "bad"), (3, 10));
        assert_eq!(at("headers.X.Key", "bad"), (5, 14));
        assert_eq!(at("targets[1].url", "bad"), (8, 15));
        assert_eq!(at("urll", "unknown key `urll`"), (9, 5));
        // A missing key or an unknown path points at the deepest place reached.
        assert_eq!(at("", "missing key `url`"), at("nope", "missing"));
        assert_eq!(at("headers.Other", "bad").0, 5);
        assert_eq!(at("targets[9]", "bad").0, 7);
    }
}
