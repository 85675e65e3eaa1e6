//! `privacy`: removes prompt and completion content, masks personal data in content and
//! metadata, and hashes user ids, for every destination of a pipeline (SPEC §5).

mod config;
mod mask;
mod processor;
#[cfg(test)]
mod tests;

use gencol_config::{Diagnostic, Loc, Located, Node};
use gencol_engine::{ComponentContext, Processor, ProcessorConfig, ProcessorContext, ProcessorFactory};

pub use config::{CustomPattern, PrivacyConfigError, PrivacyRules, PrivacySettings, SettingPath};
pub use mask::{BuiltinPattern, MaskError, Masker, hash_user_id};
pub use processor::PrivacyFilter;

use crate::settings::{decode_or_default, setting};

/// Makes `privacy` processors.
pub struct PrivacyFactory;

impl ProcessorFactory for PrivacyFactory {
    fn kind(&self) -> &str {
        "privacy"
    }

    fn about(&self) -> &str {
        "masks e-mails, phones, cards, API keys, IPs and custom patterns; drop_content, hash_user_id"
    }

    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ProcessorConfig>, Vec<Diagnostic>> {
        let settings: PrivacySettings = decode_or_default(config)?;
        let rules = settings.compile().map_err(|errors| {
            errors
                .iter()
                .map(|e| Diagnostic::error(&locate(config, e.path(&settings)), e.to_string()))
                .collect::<Vec<_>>()
        })?;
        Ok(Box::new(rules))
    }
}

impl ProcessorConfig for PrivacyRules {
    fn build(&self, _ctx: &ProcessorContext) -> Result<Box<dyn Processor>, String> {
        Ok(Box::new(PrivacyFilter::new(self)))
    }
}

/// The deepest written node on `path`: the entry's field, else the entry, else the key.
fn locate(config: &Located<Node>, path: SettingPath) -> Loc {
    let Some(value) = setting(config, path.key) else {
        return config.loc.clone();
    };
    let entry = match (&value.value, path.index) {
        (Node::Seq(items), Some(i)) => items.get(i),
        _ => None,
    };
    let Some(entry) = entry else {
        return value.loc.clone();
    };
    path.field.and_then(|f| setting(entry, f)).unwrap_or(entry).loc.clone()
}
