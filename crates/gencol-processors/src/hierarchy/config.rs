//! `hierarchy` settings (SPEC §10): `{group_window: 5s, remember_for: 10m, max_traces: 100000}`.

use std::time::Duration as StdDuration;

use gencol_config::{Diagnostic, Duration, Located, Node};
use serde::Deserialize;

use crate::settings::setting_loc;

/// How long `hierarchy` waits for more generations of a trace, and how much it remembers.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HierarchySettings {
    /// A trace's shared spans are sent once no generation has joined them for this long,
    /// so generations that arrive close together get one root, not one each.
    pub group_window: Duration,
    /// How long the ids of sent shared spans are remembered, so a late generation attaches
    /// to them without sending them again.
    pub remember_for: Duration,
    /// The most traces held back and the most remembered (each bound separately); beyond
    /// it the oldest is released early or forgotten, so memory stays bounded.
    pub max_traces: usize,
}

impl Default for HierarchySettings {
    fn default() -> Self {
        Self {
            group_window: Duration(StdDuration::from_secs(5)),
            remember_for: Duration(StdDuration::from_secs(600)),
            max_traces: 100_000,
        }
    }
}

impl HierarchySettings {
    /// Checks what serde cannot. `max_traces: 0` is refused: it would release every
    /// shared span at once and never group a trace, which nobody means to ask for.
    pub(crate) fn check(&self, config: &Located<Node>) -> Result<(), Vec<Diagnostic>> {
        if self.max_traces == 0 {
            return Err(vec![Diagnostic::error(&setting_loc(config, "max_traces"), "max_traces must be at least 1")]);
        }
        Ok(())
    }
}
