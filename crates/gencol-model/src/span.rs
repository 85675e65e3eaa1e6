//! The unit every pipeline moves: one OTLP span with where it came from, and, for a
//! span made from a generation, the request-level facts processors still need.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};
use serde_json::Value;

use crate::attributes as attr;
use crate::content;
use crate::generation::Generation;
use crate::ids;

/// One span in flight. `origin` is shared by every span of one resource and scope, so
/// exporters can group spans back into `ResourceSpans` without comparing attributes.
#[derive(Clone, Debug)]
pub struct SpanItem {
    pub origin: Arc<Origin>,
    pub span: Span,
    pub generation: Option<Arc<GenerationContext>>,
}

/// The resource and instrumentation scope a span was reported under.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origin {
    pub resource: Resource,
    pub resource_schema_url: String,
    pub scope: InstrumentationScope,
    pub scope_schema_url: String,
}

/// What a generation span still owes to later stages: the names `hierarchy` turns
/// into parent spans, and the user, session and custom metadata `namespace` turns
/// into attributes (SPEC §3–4).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationContext {
    pub generation_id: String,
    /// `trace.trace_id` as the client sent it (Raindrop reports it as is).
    pub trace_id_raw: Option<String>,
    pub trace_name: Option<String>,
    pub span_name: Option<String>,
    /// `trace.parent_span_id`, already turned into span id bytes.
    pub parent_span_id: Option<[u8; 8]>,
    pub user: Option<String>,
    pub session_id: Option<String>,
    /// Every non-reserved key of `request.trace`, in the order written.
    pub metadata: Vec<(String, Value)>,
}

pub(crate) const RESERVED_TRACE_KEYS: [&str; 5] =
    ["trace_id", "trace_name", "span_name", "generation_name", "parent_span_id"];

/// The resource gencol reports generation spans under.
pub fn service_resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![attr::string("service.name", service_name), attr::string("service.version", crate::VERSION)],
        ..Default::default()
    }
}

/// The instrumentation scope of spans gencol makes.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "gencol".into(), version: crate::VERSION.into(), ..Default::default() }
}

/// Builds the generation span (SPEC §3 ids and name, §4 `gen_ai.*` attributes). Its
/// parent is the given `parent_span_id`, if any; `hierarchy` may re-parent it.
pub fn generation_span(g: &Generation, origin: &Arc<Origin>) -> SpanItem {
    let trace = g.request.trace.as_ref();
    let reserved = |k: &str| trace.and_then(|t| t.get(k)).and_then(Value::as_str).map(str::to_owned);
    let trace_id_raw = reserved("trace_id");
    let parent_span_id = reserved("parent_span_id").map(|p| ids::parent_span_id(&p));
    let name = reserved("generation_name").unwrap_or_else(|| g.request.model.clone());

    let mut span = Span {
        trace_id: ids::trace_id(trace_id_raw.as_deref(), &g.id).to_vec(),
        span_id: ids::generation_span_id(&g.id).to_vec(),
        parent_span_id: parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name,
        kind: SpanKind::Client as i32,
        start_time_unix_nano: g.created_at.0,
        end_time_unix_nano: g.completed_at.0,
        attributes: generation_attributes(g),
        ..Default::default()
    };
    if let Some(err) = &g.error {
        let message = err.message.clone().unwrap_or_default();
        span.status = Some(Status { code: StatusCode::Error as i32, message });
    }

    let metadata = trace
        .map(|t| {
            t.iter()
                .filter(|(k, _)| !RESERVED_TRACE_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let context = GenerationContext {
        generation_id: g.id.clone(),
        trace_id_raw,
        trace_name: reserved("trace_name"),
        span_name: reserved("span_name"),
        parent_span_id,
        user: g.request.user.clone(),
        session_id: g.request.session_id.clone(),
        metadata,
    };
    SpanItem { origin: origin.clone(), span, generation: Some(Arc::new(context)) }
}

fn generation_attributes(g: &Generation) -> Vec<KeyValue> {
    let req = &g.request;
    let resp = g.response.as_ref();
    let usage = resp.and_then(|r| r.usage.as_ref());
    let mut a = Vec::with_capacity(32);

    let operation = if req.messages.is_some() {
        "chat"
    } else if req.prompt.is_some() {
        "text_completion"
    } else if req.input.is_some() {
        "responses"
    } else {
        "chat"
    };
    a.push(attr::string("gen_ai.operation.name", operation));
    if let Some(p) = &g.provider {
        a.push(attr::string("gen_ai.provider.name", p));
        a.push(attr::string("gen_ai.system", p));
    }
    a.push(attr::string("gen_ai.request.model", &req.model));
    if let Some(name) = &g.api_key_name {
        a.push(attr::string("api_key.name", name));
    }
    if let Some(hash) = &g.api_key_hash {
        a.push(attr::string("api_key.hash", hash));
    }
    if let Some(m) = resp.and_then(|r| r.model.as_ref()) {
        a.push(attr::string("gen_ai.response.model", m));
    }
    a.push(attr::string("gen_ai.response.id", &g.id));
    let choices = resp.and_then(|r| r.choices.as_deref()).map(content::Choices::read);
    let finish_reasons = choices.as_ref().map(content::Choices::finish_reasons).unwrap_or_default();
    if let Some(first) = finish_reasons.first() {
        a.push(attr::string("gen_ai.response.finish_reason", first));
        a.push(attr::string_array("gen_ai.response.finish_reasons", finish_reasons.clone()));
    }

    if let Some(v) = req.temperature {
        a.push(attr::double("gen_ai.request.temperature", v));
    }
    if let Some(v) = req.max_tokens.or(req.max_completion_tokens).or(req.max_output_tokens) {
        a.push(attr::int("gen_ai.request.max_tokens", v));
    }
    if let Some(v) = req.top_p {
        a.push(attr::double("gen_ai.request.top_p", v));
    }
    if let Some(v) = req.top_k {
        a.push(attr::double("gen_ai.request.top_k", v as f64));
    }
    if let Some(v) = req.frequency_penalty {
        a.push(attr::double("gen_ai.request.frequency_penalty", v));
    }
    if let Some(v) = req.presence_penalty {
        a.push(attr::double("gen_ai.request.presence_penalty", v));
    }
    if let Some(v) = req.seed {
        a.push(attr::int("gen_ai.request.seed", v));
    }
    if let Some(v) = req.stream {
        a.push(attr::boolean("gen_ai.request.stream", v));
    }

    if let Some(u) = usage {
        let input = u.prompt_tokens.or(u.input_tokens);
        let output = u.completion_tokens.or(u.output_tokens);
        if let Some(v) = input {
            a.push(attr::int("gen_ai.usage.input_tokens", v));
        }
        if let Some(v) = output {
            a.push(attr::int("gen_ai.usage.output_tokens", v));
        }
        let total = u
            .total_tokens
            .or_else(|| (input.is_some() || output.is_some()).then(|| input.unwrap_or(0) + output.unwrap_or(0)));
        if let Some(v) = total {
            a.push(attr::int("gen_ai.usage.total_tokens", v));
        }
        let detail = |maps: [&Option<serde_json::Map<String, Value>>; 2], key: &str| {
            maps.iter().find_map(|m| m.as_ref().and_then(|m| m.get(key)).and_then(Value::as_i64))
        };
        if let Some(v) = detail([&u.prompt_tokens_details, &u.input_tokens_details], "cached_tokens") {
            a.push(attr::int("gen_ai.usage.input_tokens.cached", v));
            a.push(attr::int("gen_ai.usage.cache_read.input_tokens", v));
        }
        if let Some(v) = detail([&u.completion_tokens_details, &u.output_tokens_details], "reasoning_tokens") {
            a.push(attr::int("gen_ai.usage.output_tokens.reasoning", v));
            a.push(attr::int("gen_ai.usage.reasoning.output_tokens", v));
        }
        if let Some(v) = u.cost {
            a.push(attr::double("gen_ai.usage.total_cost", v));
        }
        if let Some(d) = &u.cost_details {
            let pick = |keys: [&str; 3]| keys.iter().find_map(|k| d.get(*k).and_then(Value::as_f64));
            if let Some(v) = pick(["input_cost", "prompt_cost", "upstream_inference_prompt_cost"]) {
                a.push(attr::double("gen_ai.usage.input_cost", v));
            }
            if let Some(v) = pick(["output_cost", "completion_cost", "upstream_inference_completions_cost"]) {
                a.push(attr::double("gen_ai.usage.output_cost", v));
            }
        }
    }

    if let Some(first) = g.first_token_at {
        let secs = first.0.saturating_sub(g.created_at.0) as f64 / 1e9;
        a.push(attr::double("gen_ai.response.time_to_first_chunk", secs));
    }
    a.push(attr::int("gen_ai.latency_ms", ((g.completed_at.0 - g.created_at.0) / 1_000_000) as i64));

    if let Some(m) = content::input_messages(req) {
        a.push(attr::string("gen_ai.input.messages", m));
    }
    if let Some(m) = content::system_instructions(req) {
        a.push(attr::string("gen_ai.system_instructions", content::json_text(&m)));
    }
    if let Some(m) = resp.and_then(|r| content::output_messages(r, choices.as_ref())) {
        a.push(attr::string("gen_ai.output.messages", m));
    }
    if let Some(p) = content::legacy_prompt(req) {
        a.push(attr::string("gen_ai.prompt", p));
    }
    if let Some(c) = resp.and_then(|r| content::completion_text(r, choices.as_ref())) {
        a.push(attr::string("gen_ai.completion", c));
    }
    if let Some(tools) = &req.tools {
        a.push(attr::string("gen_ai.tool.definitions", content::raw_array_text(tools)));
    }

    if let Some(err) = &g.error {
        let kind = err.kind.clone().or_else(|| err.status.map(|s| s.to_string())).unwrap_or_else(|| "error".into());
        a.push(attr::string("error.type", kind));
    }
    a
}

pub use content::{first_output_text, latest_user_text};
