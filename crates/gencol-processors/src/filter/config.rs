//! `filter` settings: `{action: include | exclude, groups: [{logic, rules}]}`; the groups
//! are those of SPEC §11's `filter_rules`.

use gencol_config::{Diagnostic, Located, Node};
use gencol_engine::routing::{FilterRules, FilterRulesSettings, GroupSettings};
use serde::Deserialize;

/// What the processor does with the spans its rules match.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Keep only the matching spans.
    #[default]
    Include,
    /// Drop the matching spans.
    Exclude,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilterSettings {
    pub action: FilterAction,
    pub groups: Vec<GroupSettings>,
}

/// A checked `filter`, its rules compiled once.
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    pub(crate) action: FilterAction,
    pub(crate) rules: FilterRules,
}

impl FilterSettings {
    /// Compiles the groups, every error at its place in `config`.
    pub(crate) fn compile(&self, config: &Located<Node>) -> Result<CompiledFilter, Vec<Diagnostic>> {
        let settings = FilterRulesSettings { enabled: true, groups: self.groups.clone() };
        let rules = FilterRules::compile(&settings, config, "the filter processor")?;
        let rules = rules.unwrap_or_else(|| unreachable!("enabled rules always compile to rules"));
        Ok(CompiledFilter { action: self.action, rules })
    }
}
