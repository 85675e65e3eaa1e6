//! [`SpanFilter`]: drops what its rules say, counted by the pipeline as `filtered`.

use std::time::Instant;

use gencol_engine::Processor;
use gencol_engine::routing::Verdict;
use gencol_model::SpanItem;

use super::config::{CompiledFilter, FilterAction};

/// The `filter` processor of one pipeline.
pub struct SpanFilter {
    filter: CompiledFilter,
}

impl SpanFilter {
    pub fn new(filter: CompiledFilter) -> Self {
        SpanFilter { filter }
    }
}

impl Processor for SpanFilter {
    fn process(&mut self, items: &mut Vec<SpanItem>, _now: Instant) {
        let keep_matching = self.filter.action == FilterAction::Include;
        items.retain(|item| self.filter.rules.matches(item) == keep_matching);
    }

    fn drops_as(&self) -> Option<Verdict> {
        Some(Verdict::Filtered)
    }
}
