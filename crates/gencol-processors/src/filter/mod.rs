//! `filter`: keeps (`action: include`) or drops (`action: exclude`) the spans that any of
//! its groups of rules matches, for the whole pipeline (SPEC §11's rules, the same fields
//! and operators as an exporter's `filter_rules`). Put it before `hierarchy`, so the spans
//! `hierarchy` makes exist only for the generations kept.

mod config;
mod processor;
#[cfg(test)]
mod tests;

use gencol_config::{Diagnostic, Located, Node};
use gencol_engine::{ComponentContext, Processor, ProcessorConfig, ProcessorContext, ProcessorFactory};

pub use config::{FilterAction, FilterSettings};
pub use processor::SpanFilter;

use crate::settings::decode_or_default;

/// Makes `filter` processors.
pub struct FilterFactory;

impl ProcessorFactory for FilterFactory {
    fn kind(&self) -> &str {
        "filter"
    }

    fn about(&self) -> &str {
        "keeps (include) or drops (exclude) the spans its filter rules match, pipeline-wide"
    }

    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ProcessorConfig>, Vec<Diagnostic>> {
        let settings: FilterSettings = decode_or_default(config)?;
        Ok(Box::new(settings.compile(config)?))
    }
}

impl ProcessorConfig for config::CompiledFilter {
    fn build(&self, _ctx: &ProcessorContext) -> Result<Box<dyn Processor>, String> {
        Ok(Box::new(SpanFilter::new(self.clone())))
    }
}
