//! Human-readable summaries of what a sink received, for the `gencol-testkit` command: a user
//! trying a pipeline offline wants to see each delivery and its spans at a glance, without
//! ever printing the credentials the pipeline sends.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::otlp_sink::{Encoding, ReceivedRequest, RpcStatus, to_hex};
use crate::server::{Outcome, masked_header_value};

/// Longest string value printed in full; longer ones (prompts, completions) are cut so a
/// delivery stays readable, with their full length noted.
const MAX_STRING_CHARS: usize = 240;

/// Renders one request: a summary line (number, time since `since`, status, encoding,
/// sizes, span count), its headers with secrets masked, and, when it was accepted, its spans
/// as a tree per trace with their attributes. Ends with a newline.
pub fn render_request(req: &ReceivedRequest, number: usize, since: Instant) -> String {
    let mut out = String::new();
    let elapsed = req.received_at.saturating_duration_since(since).as_secs_f64();
    let answer = match &req.answer {
        Outcome::Replied { status, .. } => status.to_string(),
        Outcome::Closed => "closed (no response, as scripted)".to_owned(),
        Outcome::Abandoned => "abandoned (client went away before the answer)".to_owned(),
        Outcome::Pending => "pending".to_owned(),
    };
    let encoding = req.encoding.map_or_else(
        || req.content_type.clone().unwrap_or_else(|| "no content-type".to_owned()),
        |e| e.as_str().to_owned(),
    );
    let compression = match &req.content_encoding {
        Some(ce) => format!(
            " {ce} {} B -> {}",
            req.raw_len,
            req.decompressed_len.map_or_else(|| "?".to_owned(), |n| format!("{n} B"))
        ),
        None => format!(" {} B", req.raw_len),
    };
    let _ = writeln!(
        out,
        "#{number} +{elapsed:.3}s {} {} -> {answer} | {encoding}{compression} | {} spans",
        req.method,
        req.path,
        req.span_count()
    );
    let headers: Vec<String> =
        req.headers.iter().map(|(name, value)| format!("{name}={}", masked_header_value(name, value))).collect();
    let _ = writeln!(out, "   headers: {}", headers.join(", "));
    let message = answer_message(req);
    if let Some(message) = &message {
        let _ = writeln!(out, "   answer: {message}");
    }
    if req.is_success() {
        if let Some(decoded) = &req.decoded {
            render_spans(&mut out, decoded);
        }
    } else if let Some(error) = &req.decode_error {
        // A scripted or auth failure hides why the body itself would have been refused.
        if message.as_deref() != Some(truncate(error).as_str()) {
            let _ = writeln!(out, "   body refused: {error}");
        }
    }
    out
}

/// The message of a non-2xx answer, or of a partial success, for the summary.
fn answer_message(req: &ReceivedRequest) -> Option<String> {
    let Outcome::Replied { status, body, .. } = &req.answer else {
        return None;
    };
    if body.is_empty() {
        return None;
    }
    if (200..300).contains(status) {
        // Only a partial success is worth a line; "{}" or an empty message is not.
        let text = std::str::from_utf8(body).ok()?;
        return text.contains("partialSuccess").then(|| text.to_owned());
    }
    let proto_status =
        (req.encoding == Some(Encoding::Protobuf)).then(|| RpcStatus::decode(body.as_ref()).ok()).flatten();
    if let Some(status) = proto_status {
        return Some(truncate(&status.message));
    }
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    Some(truncate(&message))
}

fn render_spans(
    out: &mut String,
    decoded: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    for rs in &decoded.resource_spans {
        let resource = rs.resource.as_ref().map(|r| format_attrs(&r.attributes)).unwrap_or_default();
        let _ = writeln!(out, "   resource: {resource}");
        for ss in &rs.scope_spans {
            let scope =
                ss.scope.as_ref().map(|s| format!("{} {}", s.name, s.version).trim().to_owned()).unwrap_or_default();
            let _ = writeln!(out, "   scope: {scope}");
            render_trees(out, &ss.spans);
        }
    }
}

/// Prints spans as trees per trace: children under their parent, in start-time order; spans
/// whose parent is not in this batch are printed as roots with their parent id shown.
fn render_trees(out: &mut String, spans: &[Span]) {
    let mut by_trace: BTreeMap<Vec<u8>, Vec<&Span>> = BTreeMap::new();
    for span in spans {
        by_trace.entry(span.trace_id.clone()).or_default().push(span);
    }
    for (trace_id, mut spans) in by_trace {
        spans.sort_by_key(|s| s.start_time_unix_nano);
        let _ = writeln!(out, "     trace {}", to_hex(&trace_id));
        let ids: HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
        let mut printed: HashSet<&[u8]> = HashSet::new();
        for span in &spans {
            let is_root = span.parent_span_id.is_empty() || !ids.contains(span.parent_span_id.as_slice());
            if is_root {
                render_subtree(out, span, &spans, 0, &mut printed);
            }
        }
        // Spans caught in a parent cycle are never reached from a root; print them anyway.
        for span in &spans {
            if !printed.contains(span.span_id.as_slice()) {
                render_subtree(out, span, &spans, 0, &mut printed);
            }
        }
    }
}

fn render_subtree<'a>(
    out: &mut String,
    span: &'a Span,
    all: &[&'a Span],
    depth: usize,
    printed: &mut HashSet<&'a [u8]>,
) {
    if !printed.insert(span.span_id.as_slice()) {
        return;
    }
    let indent = "  ".repeat(depth);
    let parent = if span.parent_span_id.is_empty() { "-".to_owned() } else { to_hex(&span.parent_span_id) };
    let duration_ms = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1_000_000.0;
    let mut line = format!(
        "       {indent}- {} span={} parent={parent} kind={} {duration_ms:.1}ms",
        span.name,
        to_hex(&span.span_id),
        kind_name(span.kind),
    );
    if let Some(status) = &span.status {
        let _ = write!(line, " status={}", status_name(status.code));
        if !status.message.is_empty() {
            let _ = write!(line, "({})", truncate(&status.message));
        }
    }
    let _ = writeln!(out, "{line}");
    for kv in &span.attributes {
        let _ = writeln!(out, "       {indent}    {}", format_kv(kv));
    }
    for event in &span.events {
        let _ = writeln!(out, "       {indent}    event {} {}", event.name, format_attrs(&event.attributes));
    }
    for child in all {
        if child.parent_span_id == span.span_id {
            render_subtree(out, child, all, depth + 1, printed);
        }
    }
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

fn format_attrs(attrs: &[KeyValue]) -> String {
    attrs.iter().map(format_kv).collect::<Vec<_>>().join(" ")
}

fn format_kv(kv: &KeyValue) -> String {
    let value = kv.value.as_ref().map_or_else(|| "null".to_owned(), format_value);
    format!("{}={value}", kv.key)
}

/// Formats an attribute value compactly: strings JSON-quoted (so types are visible: `"1"` is
/// not `1`), arrays in brackets, maps in braces, bytes as hex.
pub fn format_value(value: &AnyValue) -> String {
    match &value.value {
        None => "null".to_owned(),
        Some(any_value::Value::StringValue(s)) => serde_json::Value::String(truncate(s)).to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format!("{d:?}"),
        Some(any_value::Value::BytesValue(b)) => format!("0x{}", to_hex(b)),
        Some(any_value::Value::ArrayValue(a)) => {
            format!("[{}]", a.values.iter().map(format_value).collect::<Vec<_>>().join(", "))
        }
        Some(any_value::Value::KvlistValue(kv)) => format!("{{{}}}", format_attrs(&kv.values)),
        Some(any_value::Value::StringValueStrindex(i)) => format!("strindex:{i}"),
    }
}

fn truncate(s: &str) -> String {
    let count = s.chars().count();
    if count <= MAX_STRING_CHARS {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX_STRING_CHARS).collect();
        format!("{head}…({count} chars)")
    }
}
