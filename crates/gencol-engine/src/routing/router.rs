//! Where a pipeline hands its spans to its exporters: which exporter gets which span.
//! A generation goes to the exporters whose route keeps it; a span of a trace whose
//! generations went out before (the root and intermediate spans `hierarchy` releases
//! after its group window) goes exactly where at least one of them went; any other span
//! (OTLP spans, or a root released after a restart, whose generations this process did
//! not see) is judged on its own fields.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gencol_model::SpanItem;

use super::{Route, Verdict};

/// The most exporters one pipeline with routing may have: a span's destinations are one
/// bit each in a `u64`.
pub(crate) const MAX_ROUTED_EXPORTERS: usize = 64;

/// Traces remembered at most, about 60 bytes each.
const MEMO_TRACES: usize = 200_000;

/// One pipeline's routing.
pub(crate) struct Router {
    /// Per exporter, in the pipeline's order; `None` takes everything.
    routes: Vec<Option<Arc<Route>>>,
    active: bool,
    /// Which exporters got a generation of each recent trace; `None` when no processor
    /// of the pipeline releases spans after their generations.
    memo: Option<TraceMemo>,
}

/// What routing decided for one batch.
pub(crate) struct Routed {
    /// Per span, the exporters it goes to (bit `i` is exporter `i`).
    pub masks: Vec<u64>,
    /// Per exporter, spans not sent to it: sampled out, filtered.
    pub away: Vec<[u64; 2]>,
}

impl Router {
    /// `hold`: how long after its last generation a processor of the pipeline may release
    /// spans of a trace (`hierarchy`'s group window); `None` when none does.
    pub(crate) fn new(routes: Vec<Option<Arc<Route>>>, hold: Option<Duration>) -> Self {
        let active = routes.iter().any(Option::is_some);
        let memo = hold.filter(|_| active).map(TraceMemo::new);
        Router { routes, active, memo }
    }

    /// Whether any exporter routes: else every span goes everywhere.
    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    pub(crate) fn route(&mut self, items: &[SpanItem], now: Instant) -> Routed {
        let n = self.routes.len();
        let mut away = vec![[0u64; 2]; n];
        let mut masks = Vec::with_capacity(items.len());
        for item in items {
            let trace = <[u8; 16]>::try_from(item.span.trace_id.as_slice()).ok();
            let remembered = match (&self.memo, item.generation.is_some(), trace) {
                (Some(memo), false, Some(id)) => memo.get(&id),
                _ => None,
            };
            let mut mask = 0u64;
            for (i, route) in self.routes.iter().enumerate() {
                let verdict = match (route, remembered) {
                    (None, _) => Verdict::Keep,
                    (Some(_), Some(m)) if m & (1 << i) != 0 => Verdict::Keep,
                    (Some(r), Some(_)) if !r.samples(&item.span.trace_id) => Verdict::SampledOut,
                    (Some(_), Some(_)) => Verdict::Filtered,
                    (Some(r), None) => r.judge(item),
                };
                match verdict {
                    Verdict::Keep => mask |= 1 << i,
                    Verdict::SampledOut => away[i][0] += 1,
                    Verdict::Filtered => away[i][1] += 1,
                }
            }
            if item.generation.is_some()
                && let (Some(memo), Some(id)) = (&mut self.memo, trace)
            {
                memo.note(id, mask, now);
            }
            masks.push(mask);
        }
        Routed { masks, away }
    }
}

/// Per trace, the exporters its generations went to, kept from the trace's first
/// generation until well after `hierarchy` releases its spans (twice the hold, plus a
/// minute), and for [`MEMO_TRACES`] traces at most (the oldest go first).
struct TraceMemo {
    keep: Duration,
    traces: HashMap<[u8; 16], (u64, Instant)>,
    /// When each trace was (re)noted, oldest first; a trace may be listed more than once,
    /// its map entry says which listing is current.
    order: VecDeque<(Instant, [u8; 16])>,
}

impl TraceMemo {
    fn new(hold: Duration) -> Self {
        TraceMemo { keep: hold * 2 + Duration::from_secs(60), traces: HashMap::new(), order: VecDeque::new() }
    }

    fn get(&self, trace: &[u8; 16]) -> Option<u64> {
        self.traces.get(trace).map(|(mask, _)| *mask)
    }

    fn note(&mut self, trace: [u8; 16], mask: u64, now: Instant) {
        // Listed when new, and again when half its time is gone, so a trace that keeps
        // getting generations is not forgotten, and is listed only a few times (not once
        // per generation of a batch).
        let listed = match self.traces.entry(trace) {
            Entry::Vacant(v) => {
                v.insert((mask, now));
                true
            }
            Entry::Occupied(mut o) => {
                let (known, noted) = o.get_mut();
                *known |= mask;
                let stale = now.duration_since(*noted) > self.keep / 2;
                if stale {
                    *noted = now;
                }
                stale
            }
        };
        if listed {
            self.order.push_back((now, trace));
        }
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, trace)) = self.order.front() {
            let over = self.traces.len() > MEMO_TRACES;
            if !over && now.duration_since(at) < self.keep {
                break;
            }
            self.order.pop_front();
            if self.traces.get(&trace).is_some_and(|(_, noted)| *noted == at) {
                self.traces.remove(&trace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gencol_model::{GenerationContext, Origin};
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    fn span(trace: u8, generation: bool, model: &str) -> SpanItem {
        let mut trace_id = vec![trace; 16];
        trace_id[15] = trace;
        let attributes = vec![gencol_model::attributes::string("gen_ai.request.model", model)];
        SpanItem {
            origin: Arc::new(Origin::default()),
            span: Span { trace_id, span_id: vec![1; 8], attributes, ..Default::default() },
            generation: generation.then(|| Arc::new(GenerationContext::default())),
        }
    }

    fn openai_only() -> Arc<Route> {
        use crate::routing::rules::FilterRulesSettings;
        let yaml = "filter_rules:\n  groups:\n    - rules:\n        - {field: model, operator: starts_with, value: \"openai/\"}\n";
        let node = gencol_config::load_str("t.yaml", yaml, &|_| None).expect("yaml");
        let settings: FilterRulesSettings =
            gencol_config::decode(node.value.get("filter_rules").expect("present")).expect("shape");
        Arc::new(Route::compile(1.0, None, Some(&settings), &node).expect("valid").expect("routes"))
    }

    #[test]
    fn spans_released_later_follow_their_generations() {
        let mut router = Router::new(vec![None, Some(openai_only())], Some(Duration::from_secs(5)));
        let t0 = Instant::now();
        // Trace 1 has an openai generation, trace 2 only an anthropic one.
        let gens =
            [span(1, true, "openai/gpt-4o"), span(1, true, "anthropic/claude"), span(2, true, "anthropic/claude")];
        let routed = router.route(&gens, t0);
        assert_eq!(routed.masks, [0b11, 0b01, 0b01]);
        assert_eq!(routed.away, [[0, 0], [0, 2]]);
        // Their roots, released after the group window, carry no model.
        let roots = [span(1, false, ""), span(2, false, ""), span(3, false, "")];
        let routed = router.route(&roots, t0 + Duration::from_secs(6));
        assert_eq!(routed.masks[0], 0b11, "a generation of trace 1 went to exporter 1");
        assert_eq!(routed.masks[1], 0b01, "none of trace 2's did");
        assert_eq!(routed.masks[2], 0b01, "an unknown trace is judged on its own fields");
        // Long after (past twice the hold plus a minute), trace 1 is forgotten: judged on
        // its own fields.
        let routed = router.route(&[span(4, true, "x")], t0 + Duration::from_secs(71));
        assert_eq!(routed.masks, [0b01]);
        let routed = router.route(&roots[..1], t0 + Duration::from_secs(72));
        assert_eq!(routed.masks, [0b01]);
    }
}
