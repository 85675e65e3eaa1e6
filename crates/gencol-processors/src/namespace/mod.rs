//! `namespace`: the request-level names of a generation (user, session, custom `trace`
//! metadata) as span attributes (SPEC §4).

mod config;
mod processor;
#[cfg(test)]
mod tests;

use gencol_config::{Diagnostic, Located, Node};
use gencol_engine::{ComponentContext, Processor, ProcessorConfig, ProcessorContext, ProcessorFactory};

pub use config::NamespaceSettings;
pub use processor::RequestAttributes;

use crate::settings::decode_or_default;

/// Makes `namespace` processors.
pub struct NamespaceFactory;

impl ProcessorFactory for NamespaceFactory {
    fn kind(&self) -> &str {
        "namespace"
    }

    fn about(&self) -> &str {
        "adds user.id, session.id and trace.metadata.* attributes to generation spans"
    }

    fn adds_request_attributes(&self) -> bool {
        true
    }

    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ProcessorConfig>, Vec<Diagnostic>> {
        let settings: NamespaceSettings = decode_or_default(config)?;
        settings.check(config)?;
        Ok(Box::new(settings))
    }
}

impl ProcessorConfig for NamespaceSettings {
    fn build(&self, _ctx: &ProcessorContext) -> Result<Box<dyn Processor>, String> {
        Ok(Box::new(RequestAttributes::new(self)))
    }
}
