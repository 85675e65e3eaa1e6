//! The facts of one LLM call, read from its span, for the exporters that turn each call into
//! one event (`raindrop`, `posthog`).
//!
//! Everything is read from span attributes, so a GenAI span that came through the `otlp`
//! receiver (OpenRouter's own Broadcast, any app instrumented with the OpenTelemetry GenAI
//! conventions) reads the same as one made from a generation record. The
//! [`GenerationContext`] of the latter only adds what the client sent verbatim: the
//! generation id, its trace id and name as written, user, session, and metadata with its
//! nesting intact.

use gencol_model::attributes as attr;
use gencol_model::{GenerationContext, SpanItem};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as AttrValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Map, Number, Value};

/// Where `namespace` (and OpenRouter's Broadcast) put custom `trace` keys on a span.
const METADATA_PREFIX: &str = "trace.metadata.";

/// A span that is an LLM call, with the two attributes that made it one.
#[derive(Clone, Copy, Debug)]
pub struct GenerationSpan<'a> {
    /// The span itself.
    pub span: &'a Span,
    /// Present when the span was made from a generation record.
    pub ctx: Option<&'a GenerationContext>,
    /// `gen_ai.request.model`.
    pub request_model: Option<&'a str>,
    /// `gen_ai.operation.name`.
    pub operation: Option<&'a str>,
}

impl<'a> GenerationSpan<'a> {
    /// The generation in `item`; `None` for spans that are not LLM calls (the root and
    /// intermediate spans `hierarchy` adds, an app's HTTP spans), which an events product
    /// has no place for.
    pub fn of(item: &'a SpanItem) -> Option<Self> {
        let a = &item.span.attributes;
        let request_model = text(a, "gen_ai.request.model");
        let operation = text(a, "gen_ai.operation.name");
        if request_model.is_none() && operation.is_none() {
            return None;
        }
        Some(GenerationSpan { span: &item.span, ctx: item.generation.as_deref(), request_model, operation })
    }

    /// The span's attributes, for what only one destination reads.
    pub fn attributes(&self) -> &'a [KeyValue] {
        &self.span.attributes
    }

    /// A string attribute, `None` when absent or blank.
    pub fn text(&self, key: &str) -> Option<&'a str> {
        text(self.attributes(), key)
    }

    /// The generation id first, so a re-sent generation is the same event at the
    /// destination; else the response id; else trace id and span id.
    pub fn id(&self) -> String {
        self.ctx
            .map(|c| c.generation_id.as_str())
            .filter(|id| !id.trim().is_empty())
            .or_else(|| self.text("gen_ai.response.id"))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}-{}", hex::encode(&self.span.trace_id), hex::encode(&self.span.span_id)))
    }

    /// `request.user`, else the OTel user attributes.
    pub fn user(&self) -> Option<&'a str> {
        self.ctx
            .and_then(|c| non_empty(c.user.as_deref()))
            .or_else(|| self.text("user.id"))
            .or_else(|| self.text("enduser.id"))
    }

    /// `request.session_id`, else the OTel session or conversation id.
    pub fn session(&self) -> Option<&'a str> {
        self.ctx
            .and_then(|c| non_empty(c.session_id.as_deref()))
            .or_else(|| self.text("session.id"))
            .or_else(|| self.text("gen_ai.conversation.id"))
    }

    /// The model that answered, else the one asked for.
    pub fn model(&self) -> Option<&'a str> {
        self.text("gen_ai.response.model").or(self.request_model)
    }

    /// `provider` as the gateway named it, else the OTel system.
    pub fn provider(&self) -> Option<&'a str> {
        self.text("gen_ai.provider.name").or_else(|| self.text("gen_ai.system"))
    }

    /// The span's name when the client chose it (`generation_name`, an app's own name).
    /// A generation span is otherwise named after its model, and OTel-instrumented apps
    /// name theirs `{operation} {model}`: such names say nothing of their own.
    pub fn chosen_name(&self) -> Option<&'a str> {
        let name = self.span.name.as_str();
        let (model, operation) = (self.request_model, self.operation);
        let generic = name.trim().is_empty()
            || Some(name) == model
            || Some(name) == operation
            || operation
                .zip(model)
                .is_some_and(|(op, m)| name.strip_prefix(op).and_then(|rest| rest.strip_prefix(' ')) == Some(m));
        (!generic).then_some(name)
    }

    /// Custom metadata: the record's non-reserved `trace` keys as sent (nesting kept), else
    /// the span's `trace.metadata.*` attributes with the prefix removed.
    pub fn metadata(&self) -> Map<String, Value> {
        match self.ctx {
            Some(c) => c.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            None => self
                .attributes()
                .iter()
                .filter_map(|kv| {
                    let key = kv.key.strip_prefix(METADATA_PREFIX).filter(|k| !k.is_empty())?;
                    Some((key.to_owned(), kv.value.as_ref().and_then(any_to_json)?))
                })
                .collect(),
        }
    }

    /// What the call cost, in USD.
    pub fn total_cost(&self) -> Option<f64> {
        let a = self.attributes();
        attr::get_f64(a, "gen_ai.usage.total_cost").or_else(|| attr::get_f64(a, "gen_ai.usage.cost"))
    }

    /// Prompt tokens, under the current or the older attribute name.
    pub fn input_tokens(&self) -> Option<i64> {
        let a = self.attributes();
        attr::get_i64(a, "gen_ai.usage.input_tokens").or_else(|| attr::get_i64(a, "gen_ai.usage.prompt_tokens"))
    }

    /// Completion tokens, under the current or the older attribute name.
    pub fn output_tokens(&self) -> Option<i64> {
        let a = self.attributes();
        attr::get_i64(a, "gen_ai.usage.output_tokens").or_else(|| attr::get_i64(a, "gen_ai.usage.completion_tokens"))
    }

    /// As reported, else the sum of input and output when either is known.
    pub fn total_tokens(&self) -> Option<i64> {
        attr::get_i64(self.attributes(), "gen_ai.usage.total_tokens").or_else(|| {
            match (self.input_tokens(), self.output_tokens()) {
                (None, None) => None,
                (i, o) => Some(i.unwrap_or(0) + o.unwrap_or(0)),
            }
        })
    }

    /// End minus start; `None` for a span without an end.
    pub fn duration_nanos(&self) -> Option<u64> {
        let s = self.span;
        s.end_time_unix_nano.checked_sub(s.start_time_unix_nano).filter(|_| s.end_time_unix_nano > 0)
    }

    /// The first choice's finish reason.
    pub fn finish_reason(&self) -> Option<&'a str> {
        self.text("gen_ai.response.finish_reason").or_else(|| {
            match attr::get(self.attributes(), "gen_ai.response.finish_reasons")? {
                AttrValue::ArrayValue(list) => list.values.first().and_then(|v| match v.value.as_ref()? {
                    AttrValue::StringValue(s) => non_empty(Some(s)),
                    _ => None,
                }),
                _ => None,
            }
        })
    }

    /// The span's trace id in hex; `None` when it is all zeros (no trace).
    pub fn trace_id_hex(&self) -> Option<String> {
        self.span.trace_id.iter().any(|b| *b != 0).then(|| hex::encode(&self.span.trace_id))
    }
}

/// `s` unless it is absent or blank: a blank name or id says nothing.
pub fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

fn text<'a>(a: &'a [KeyValue], key: &str) -> Option<&'a str> {
    non_empty(attr::get_str(a, key))
}

/// An attribute value as JSON; `None` for an empty value (there is nothing to report).
pub fn any_to_json(v: &AnyValue) -> Option<Value> {
    Some(match v.value.as_ref()? {
        AttrValue::StringValue(s) => Value::String(s.clone()),
        AttrValue::BoolValue(b) => Value::Bool(*b),
        AttrValue::IntValue(i) => Value::from(*i),
        AttrValue::DoubleValue(d) => Number::from_f64(*d).map_or(Value::Null, Value::Number),
        AttrValue::ArrayValue(list) => Value::Array(list.values.iter().filter_map(any_to_json).collect()),
        AttrValue::KvlistValue(list) => Value::Object(
            list.values
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), kv.value.as_ref().and_then(any_to_json)?)))
                .collect(),
        ),
        AttrValue::BytesValue(b) => Value::String(hex::encode(b)),
        // A profiling string-table index means nothing on a trace span.
        AttrValue::StringValueStrindex(_) => return None,
    })
}
