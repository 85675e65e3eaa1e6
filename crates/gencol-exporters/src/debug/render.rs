//! Span trees as text.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use gencol_model::SpanItem;
use gencol_model::attributes as attr;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};

/// Renders a batch as one tree per trace. A span whose parent is not in the batch
/// (sent earlier, or by another service) starts a tree and says whose child it is.
pub fn render_trees(batch: &[SpanItem], detailed: bool) -> String {
    let mut traces: BTreeMap<Vec<u8>, Vec<&SpanItem>> = BTreeMap::new();
    for item in batch {
        traces.entry(item.span.trace_id.clone()).or_default().push(item);
    }
    let mut out = String::new();
    for (trace_id, items) in traces {
        let _ = writeln!(out, "trace {}", hex::encode(&trace_id));
        let ids: HashSet<&[u8]> = items.iter().map(|i| i.span.span_id.as_slice()).collect();
        let roots = items.iter().filter(|i| !ids.contains(i.span.parent_span_id.as_slice()));
        for root in roots {
            render(&mut out, root, &items, 1, detailed, true);
        }
    }
    out
}

fn render(out: &mut String, item: &SpanItem, all: &[&SpanItem], depth: usize, detailed: bool, top: bool) {
    let s = &item.span;
    let indent = "  ".repeat(depth);
    let kind = match s.kind {
        1 => "INTERNAL",
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => "UNSPECIFIED",
    };
    let ms = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6;
    let _ = write!(out, "{indent}{} [{kind}] span={} {ms:.0}ms", s.name, hex::encode(&s.span_id));
    if top && !s.parent_span_id.is_empty() {
        let _ = write!(out, " parent={}", hex::encode(&s.parent_span_id));
    }
    let a = &s.attributes;
    if let Some(m) = attr::get_str(a, "gen_ai.response.model").or_else(|| attr::get_str(a, "gen_ai.request.model")) {
        let _ = write!(out, " model={m}");
    }
    if let Some(t) = attr::get_i64(a, "gen_ai.usage.total_tokens") {
        let _ = write!(out, " tokens={t}");
    }
    if let Some(c) = attr::get_f64(a, "gen_ai.usage.total_cost") {
        let _ = write!(out, " cost=${c}");
    }
    if s.status.as_ref().is_some_and(|st| st.code == 2) {
        let _ = write!(out, " ERROR");
    }
    out.push('\n');
    if detailed {
        for kv in a {
            let _ = writeln!(out, "{indent}    {} = {}", kv.key, show(kv.value.as_ref()));
        }
    }
    for child in all.iter().filter(|c| c.span.parent_span_id == s.span_id) {
        render(out, child, all, depth + 1, detailed, false);
    }
}

fn show(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(a)) => {
            format!("[{}]", a.values.iter().map(|v| show(Some(v))).collect::<Vec<_>>().join(", "))
        }
        Some(other) => format!("{other:?}"),
        None => "(empty)".into(),
    }
}
