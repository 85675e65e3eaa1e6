//! `namespace` settings (SPEC §10):
//! `{metadata_prefix: "trace.metadata.", user_attribute: user.id, session_attribute: session.id}`.

use gencol_config::{Diagnostic, Located, Node};
use serde::Deserialize;

use crate::settings::setting_loc;

/// The attribute names request-level facts are written under.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceSettings {
    /// Put before every custom `trace` key; may be empty (keys as written, as Raindrop
    /// shows them).
    pub metadata_prefix: String,
    /// The attribute `request.user` goes to; OpenRouter's Broadcast writes `user.id`.
    pub user_attribute: String,
    /// The attribute `request.session_id` goes to (besides `gen_ai.conversation.id`).
    pub session_attribute: String,
}

impl Default for NamespaceSettings {
    fn default() -> Self {
        Self {
            metadata_prefix: "trace.metadata.".to_owned(),
            user_attribute: "user.id".to_owned(),
            session_attribute: "session.id".to_owned(),
        }
    }
}

impl NamespaceSettings {
    /// An empty attribute name is refused: backends drop or reject such attributes, so the
    /// value would be lost without a word.
    pub(crate) fn check(&self, config: &Located<Node>) -> Result<(), Vec<Diagnostic>> {
        let errors: Vec<Diagnostic> =
            [("user_attribute", &self.user_attribute), ("session_attribute", &self.session_attribute)]
                .into_iter()
                .filter(|(_, name)| name.trim().is_empty())
                .map(|(key, _)| Diagnostic::error(&setting_loc(config, key), format!("{key} must not be empty")))
                .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}
