//! `hierarchy`: the root and intermediate spans a generation sits under (SPEC §3), sent
//! once per trace however many generations join them.

mod config;
mod journal;
mod processor;
#[cfg(test)]
mod tests;

use gencol_config::{Diagnostic, Located, Node};
use gencol_engine::{ComponentContext, Processor, ProcessorConfig, ProcessorContext, ProcessorFactory};

pub use config::HierarchySettings;
pub use processor::SpanHierarchy;

use crate::settings::decode_or_default;

/// Makes `hierarchy` processors.
pub struct HierarchyFactory;

impl ProcessorFactory for HierarchyFactory {
    fn kind(&self) -> &str {
        "hierarchy"
    }

    fn about(&self) -> &str {
        "adds one root span (trace_name) and intermediate span (span_name) per trace above its generations"
    }

    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ProcessorConfig>, Vec<Diagnostic>> {
        let settings: HierarchySettings = decode_or_default(config)?;
        settings.check(config)?;
        Ok(Box::new(settings))
    }
}

impl ProcessorConfig for HierarchySettings {
    fn build(&self, ctx: &ProcessorContext) -> Result<Box<dyn Processor>, String> {
        let hierarchy = match &ctx.state_dir {
            Some(dir) => SpanHierarchy::with_journal(self, dir)?,
            None => SpanHierarchy::new(self),
        };
        Ok(Box::new(hierarchy.with_metrics(ctx.telemetry.held_traces())))
    }

    fn releases_after(&self) -> Option<std::time::Duration> {
        Some(self.group_window.0)
    }
}
