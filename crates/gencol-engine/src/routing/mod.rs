//! Per-destination routing (SPEC §11), as OpenRouter's destination settings: each
//! exporter may take a sampled share of traces (`sampling_rate`), only some API keys
//! (`api_keys`) and only the generations its `filter_rules` match. The engine applies
//! them for every exporter type, plugins included, where the pipeline hands spans to its
//! exporters ([`Router`]); the `filter` and `sample` processors reuse the same parts
//! pipeline-wide.

mod fields;
mod router;
mod rules;
mod sample;

use std::collections::HashSet;

use gencol_config::{Diagnostic, Located, Node};
use gencol_model::SpanItem;

pub use fields::{FIELD_NAMES, Field, FieldValue};
pub(crate) use router::{MAX_ROUTED_EXPORTERS, Router};
pub use rules::{FilterRules, FilterRulesSettings, GroupSettings, Logic, Operator, RuleSettings};
pub use sample::{MIN_RATE, Sampler};

/// The attribute holding the SHA-256 of the gateway's API key (SPEC §4).
pub const API_KEY_HASH: &str = "api_key.hash";

/// Why a span does not go to a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Its trace is not in the destination's `sampling_rate` share.
    SampledOut,
    /// Its API key is not in `api_keys`, or no group of `filter_rules` matches it.
    Filtered,
}

/// One exporter's routing, compiled.
#[derive(Clone, Debug)]
pub struct Route {
    sampler: Sampler,
    /// Lower-case hex SHA-256 hashes.
    api_keys: Option<HashSet<String>>,
    rules: Option<FilterRules>,
    /// What it was compiled from, to tell whether a reload changed it.
    source: RouteSource,
}

type RouteSource = (f64, Option<Vec<String>>, Option<FilterRulesSettings>);

impl Route {
    /// Compiles an exporter's routing keys, read from its settings `node` for locations.
    /// `None` when the exporter takes everything.
    pub fn compile(
        sampling_rate: f64,
        api_keys: Option<&[String]>,
        filter_rules: Option<&FilterRulesSettings>,
        node: &Located<Node>,
    ) -> Result<Option<Route>, Vec<Diagnostic>> {
        let at = |key: &str| node.value.get(key).map_or(node.loc.clone(), |n| n.loc.clone());
        let mut errors = Vec::new();
        let sampler = Sampler::new(sampling_rate).map_err(|m| Diagnostic::error(&at("sampling_rate"), m));
        let api_keys = api_keys.map(|keys| {
            let list = node.value.get("api_keys");
            let mut set = HashSet::new();
            for (i, key) in keys.iter().enumerate() {
                let hash = key.trim().to_ascii_lowercase();
                if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    set.insert(hash);
                } else {
                    let loc = match list.map(|l| &l.value) {
                        Some(Node::Seq(items)) => items.get(i).map_or(at("api_keys"), |n| n.loc.clone()),
                        _ => at("api_keys"),
                    };
                    // Never echoed: it may be a raw key pasted by mistake.
                    errors.push(Diagnostic::error(
                        &loc,
                        format!(
                            "api_keys[{i}] is not a SHA-256 hash (64 hex digits, {} characters found): list the hashes of the gateway's API keys, never the keys (`printf %s \"$KEY\" | sha256sum`)",
                            key.trim().chars().count()
                        ),
                    ));
                }
            }
            set
        });
        let rules = match (filter_rules, node.value.get("filter_rules")) {
            (Some(settings), Some(rules_node)) => {
                FilterRules::compile(settings, rules_node, "filter_rules").map_err(|e| errors.extend(e)).ok().flatten()
            }
            _ => None,
        };
        let sampler = match sampler {
            Ok(s) if errors.is_empty() => s,
            Ok(_) => return Err(errors),
            Err(e) => return Err(std::iter::once(e).chain(errors).collect()),
        };
        if sampler.keeps_all() && api_keys.is_none() && rules.is_none() {
            return Ok(None);
        }
        let source = (sampling_rate, sorted(api_keys.as_ref()), filter_rules.cloned());
        Ok(Some(Route { sampler, api_keys, rules, source }))
    }

    /// Whether two exporters' routing (either taking everything) is the same.
    pub fn same(a: Option<&Route>, b: Option<&Route>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.source == b.source,
            _ => false,
        }
    }

    /// Whether the trace is in this destination's sampled share.
    pub fn samples(&self, trace_id: &[u8]) -> bool {
        self.sampler.keeps(trace_id)
    }

    /// Where `item` stands with this destination, judged on its own fields.
    pub fn judge(&self, item: &SpanItem) -> Verdict {
        if !self.sampler.keeps(&item.span.trace_id) {
            return Verdict::SampledOut;
        }
        if let Some(keys) = &self.api_keys {
            let hash = gencol_model::attributes::get_str(&item.span.attributes, API_KEY_HASH);
            if !hash.is_some_and(|h| keys.contains(h)) {
                return Verdict::Filtered;
            }
        }
        if let Some(rules) = &self.rules
            && !rules.matches(item)
        {
            return Verdict::Filtered;
        }
        Verdict::Keep
    }
}

/// The hashes as compiled, in order, for comparing two configurations.
fn sorted(compiled: Option<&HashSet<String>>) -> Option<Vec<String>> {
    compiled.map(|set| {
        let mut keys: Vec<String> = set.iter().cloned().collect();
        keys.sort();
        keys
    })
}
