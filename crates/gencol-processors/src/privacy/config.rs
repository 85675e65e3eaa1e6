//! `privacy` settings (SPEC §10) and their compilation into [`PrivacyRules`].

use gencol_config::closest_name;
use serde::Deserialize;

use super::mask::{BuiltinPattern, MaskError, Masker};

/// What the `privacy` processor removes, masks and hashes, as written in YAML.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Remove prompt and completion content (the attributes `privacy_mode` removes) for
    /// every destination of the pipeline.
    pub drop_content: bool,
    /// Built-in patterns to mask (`email`, `phone`, `credit_card`, `api_key`, `ip`). Left
    /// out, all of them: a `privacy` step written without settings should protect, not
    /// silently pass everything; `patterns: []` turns masking off.
    pub patterns: Option<Vec<String>>,
    /// Extra patterns, each masked as `[REDACTED:<name>]`.
    pub custom: Vec<CustomPattern>,
    /// Replace user ids with SHA-256 of `salt` + id: per-user analytics keep working at the
    /// destination without it learning who the user is.
    pub hash_user_id: bool,
    /// Required with `hash_user_id`; without a secret salt a hash of a guessable id
    /// (`user_12345`) is easily reversed.
    pub salt: Option<String>,
}

/// One `custom:` entry: `{name: ticket, regex: "TCK-[0-9]{6}"}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    pub name: String,
    pub regex: String,
}

/// Checked and compiled settings, shared by every pipeline that lists the processor.
#[derive(Clone, Debug)]
pub struct PrivacyRules {
    pub(crate) drop_content: bool,
    pub(crate) masker: Masker,
    /// The salt when `hash_user_id` is on.
    pub(crate) user_id_salt: Option<String>,
}

/// A setting that cannot work, with where it is (for `FILE:LINE:COLUMN`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PrivacyConfigError {
    #[error("unknown pattern `{name}`{hint}; the built-in patterns are: {known}", hint = did_you_mean(.suggestion), known = BuiltinPattern::ALL.join(", "))]
    UnknownPattern { index: usize, name: String, suggestion: Option<&'static str> },
    #[error("{error}")]
    Custom { index: usize, error: MaskError },
    /// Every rule compiles alone, but not all of them together (the regex size limit).
    #[error("{error}")]
    Combined { error: MaskError },
    #[error("hash_user_id needs a non-empty salt (e.g. salt: \"${{env:GENCOL_SALT}}\")")]
    MissingSalt,
}

/// Where a [`PrivacyConfigError`] points: a top-level key, maybe one list entry of it, maybe
/// one field of that entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingPath {
    pub key: &'static str,
    pub index: Option<usize>,
    pub field: Option<&'static str>,
}

impl PrivacyConfigError {
    /// The setting to point at.
    pub fn path(&self, settings: &PrivacySettings) -> SettingPath {
        let at = |key, index, field| SettingPath { key, index, field };
        match self {
            Self::UnknownPattern { index, .. } => at("patterns", Some(*index), None),
            Self::Custom { index, error: MaskError::InvalidName { .. } } => at("custom", Some(*index), Some("name")),
            Self::Custom { index, .. } => at("custom", Some(*index), Some("regex")),
            Self::Combined { .. } => at("custom", None, None),
            Self::MissingSalt if settings.salt.is_some() => at("salt", None, None),
            Self::MissingSalt => at("hash_user_id", None, None),
        }
    }
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    suggestion.map(|s| format!(", did you mean `{s}`?")).unwrap_or_default()
}

impl PrivacySettings {
    /// Checks every setting (all errors, not just the first) and compiles the masks once,
    /// so a bad rule is a config error and never reaches the hot path.
    pub fn compile(&self) -> Result<PrivacyRules, Vec<PrivacyConfigError>> {
        let mut errors = Vec::new();

        let builtins: Vec<BuiltinPattern> = match &self.patterns {
            None => BuiltinPattern::ALL.iter().filter_map(|n| BuiltinPattern::parse(n)).collect(),
            Some(names) => names
                .iter()
                .enumerate()
                .filter_map(|(index, name)| {
                    let parsed = BuiltinPattern::parse(name);
                    if parsed.is_none() {
                        let suggestion = closest_name(name, BuiltinPattern::ALL);
                        errors.push(PrivacyConfigError::UnknownPattern { index, name: name.clone(), suggestion });
                    }
                    parsed
                })
                .collect(),
        };

        // Each custom rule on its own first, so every bad entry is reported at its place.
        let custom: Vec<(String, String)> = self.custom.iter().map(|c| (c.name.clone(), c.regex.clone())).collect();
        for (index, rule) in custom.iter().enumerate() {
            if let Err(error) = Masker::new(&[], std::slice::from_ref(rule)) {
                errors.push(PrivacyConfigError::Custom { index, error });
            }
        }

        let user_id_salt = match (&self.salt, self.hash_user_id) {
            (Some(salt), true) if !salt.is_empty() => Some(salt.clone()),
            (_, true) => {
                errors.push(PrivacyConfigError::MissingSalt);
                None
            }
            (_, false) => None,
        };

        if !errors.is_empty() {
            return Err(errors);
        }
        // Each custom rule compiled on its own above; only all of them together can fail here.
        let masker = Masker::new(&builtins, &custom).map_err(|error| vec![PrivacyConfigError::Combined { error }])?;
        Ok(PrivacyRules { drop_content: self.drop_content, masker, user_id_salt })
    }
}
