//! `sample`: keeps a `sampling_rate` share of traces for the whole pipeline, by SPEC
//! §11's consistent rule on the trace id, so every span of a kept trace is kept (roots and
//! generations alike), every gencol keeps the same traces, and an exporter's own
//! `sampling_rate` further on keeps a subset of them.

#[cfg(test)]
mod tests;

use std::time::Instant;

use gencol_config::{Diagnostic, Located, Node};
use gencol_engine::routing::{Sampler, Verdict};
use gencol_engine::{ComponentContext, Processor, ProcessorConfig, ProcessorContext, ProcessorFactory};
use gencol_model::SpanItem;
use serde::Deserialize;

use crate::settings::setting_loc;

/// Makes `sample` processors.
pub struct SampleFactory;

/// `sample` settings: `{sampling_rate: 0.0001 ..= 1}` (required).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SampleSettings {
    pub sampling_rate: f64,
}

#[derive(Clone, Copy, Debug)]
struct CompiledSample(Sampler);

impl ProcessorFactory for SampleFactory {
    fn kind(&self) -> &str {
        "sample"
    }

    fn about(&self) -> &str {
        "keeps a sampling_rate share of traces (consistent by trace id), pipeline-wide"
    }

    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ProcessorConfig>, Vec<Diagnostic>> {
        if matches!(config.value, Node::Null) {
            return Err(vec![Diagnostic::error(
                &config.loc,
                "the sample processor needs `sampling_rate` (the share of traces to keep, 0.0001 to 1)",
            )]);
        }
        let settings: SampleSettings = gencol_config::decode(config).map_err(|d| vec![d])?;
        let sampler = Sampler::new(settings.sampling_rate)
            .map_err(|m| vec![Diagnostic::error(&setting_loc(config, "sampling_rate"), m)])?;
        Ok(Box::new(CompiledSample(sampler)))
    }
}

impl ProcessorConfig for CompiledSample {
    fn build(&self, _ctx: &ProcessorContext) -> Result<Box<dyn Processor>, String> {
        Ok(Box::new(TraceSampler(self.0)))
    }
}

/// The `sample` processor of one pipeline.
pub struct TraceSampler(Sampler);

impl TraceSampler {
    pub fn new(sampler: Sampler) -> Self {
        TraceSampler(sampler)
    }
}

impl Processor for TraceSampler {
    fn process(&mut self, items: &mut Vec<SpanItem>, _now: Instant) {
        items.retain(|item| self.0.keeps(&item.span.trace_id));
    }

    fn drops_as(&self) -> Option<Verdict> {
        Some(Verdict::SampledOut)
    }
}
