//! Request bodies that look like a gateway's traffic, so that no figure is flattered by
//! an unrealistic body: generation records with 1–2 KB of prompt and completion text,
//! the usual request and usage fields and custom trace metadata; OTLP/JSON spans of
//! about 2.6 KB as a GenAI-instrumented app sends them.
//!
//! Every body differs from the next (text drawn from a vocabulary, numbers, models,
//! users), and every record gets fresh ids at send time, so a gzip exporter cannot win
//! by compressing one body sent again and again, and the `hierarchy` processor sees
//! traces come and go as in production (four generations per trace).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use gencol_model::attributes as attr;
use gencol_model::otlp::encode_json;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::{Value, json};

/// What a body holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// A JSON array of generation records for `POST /v1/generations`.
    Generations,
    /// An OTLP/JSON export request for `POST /v1/traces`.
    OtlpJson,
}

impl BodyKind {
    pub fn path(self) -> &'static str {
        match self {
            BodyKind::Generations => "/v1/generations",
            BodyKind::OtlpJson => "/v1/traces",
        }
    }
}

/// Generations of one trace: an agent run or a short conversation.
const GENERATIONS_PER_TRACE: u64 = 4;

/// Placeholders written where ids go, replaced at send time. Neither character occurs in
/// generated text, and hex ids of these widths are what the destinations expect.
const GENERATION_ID_SLOT: &[u8] = b"~~~~~~~~~~~~~~~~";
const TRACE_KEY_SLOT: &[u8] = b"^^^^^^^^^^^^^^^^";
/// OTLP ids are hex of bytes; these byte values give runs that no text contains.
const OTLP_TRACE_ID_BYTE: u8 = 0xee;
const OTLP_SPAN_ID_BYTE: u8 = 0xdd;

/// Where one id goes in a body: `width` hex digits of `(sequence of the record) / divisor + 1`.
#[derive(Clone, Copy, Debug)]
struct Slot {
    at: usize,
    width: usize,
    record: u64,
    divisor: u64,
}

/// One body with the places its ids go.
#[derive(Clone, Debug)]
pub struct Template {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
    records: u64,
}

impl Template {
    /// Finds every `marker` (one per record, in record order) and records it as a slot.
    fn new(bytes: Vec<u8>, records: u64, markers: &[(&[u8], u64)]) -> Template {
        let mut slots = Vec::new();
        for (marker, divisor) in markers {
            let found: Vec<usize> = find_all(&bytes, marker);
            assert_eq!(found.len() as u64, records, "one id slot per record");
            slots.extend(found.into_iter().enumerate().map(|(record, at)| Slot {
                at,
                width: marker.len(),
                record: record as u64,
                divisor: *divisor,
            }));
        }
        Template { bytes, slots, records }
    }

    /// The body with the ids of records `first_sequence..first_sequence + records`.
    pub fn fill(&self, first_sequence: u64) -> Bytes {
        let mut out = self.bytes.clone();
        for slot in &self.slots {
            let value = (first_sequence + slot.record) / slot.divisor + 1;
            write_hex(&mut out[slot.at..slot.at + slot.width], value);
        }
        Bytes::from(out)
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if &haystack[i..i + needle.len()] == needle {
            out.push(i);
            i += needle.len();
        } else {
            i += 1;
        }
    }
    out
}

fn write_hex(slot: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in slot.iter_mut().rev() {
        *b = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Distinct bodies of one kind and batch size, handed out in turn with fresh ids.
pub struct BodyPool {
    pub kind: BodyKind,
    pub batch: usize,
    templates: Vec<Template>,
    next: AtomicUsize,
    sequence: AtomicU64,
}

impl BodyPool {
    /// Enough distinct bodies that a gzip window (32 KiB) never sees a repeat, and a few
    /// thousand records in all whatever the batch size.
    pub fn new(kind: BodyKind, batch: usize, seed: u64) -> BodyPool {
        let count = (4096 / batch).max(48);
        let mut rng = fastrand::Rng::with_seed(seed ^ ((batch as u64) << 32));
        let templates = (0..count).map(|_| template(kind, batch, &mut rng)).collect();
        BodyPool { kind, batch, templates, next: AtomicUsize::new(0), sequence: AtomicU64::new(0) }
    }

    /// The next body, with ids no earlier body had.
    pub fn next_body(&self) -> Bytes {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.templates.len();
        let t = &self.templates[i];
        let first = self.sequence.fetch_add(t.records, Ordering::Relaxed);
        t.fill(first)
    }

    /// Average body size in bytes.
    pub fn mean_body_bytes(&self) -> usize {
        self.templates.iter().map(Template::len).sum::<usize>() / self.templates.len().max(1)
    }
}

fn template(kind: BodyKind, batch: usize, rng: &mut fastrand::Rng) -> Template {
    match kind {
        BodyKind::Generations => {
            let records: Vec<Value> = (0..batch).map(|_| generation_record(rng)).collect();
            let bytes = serde_json::to_vec(&records).expect("JSON values serialise");
            Template::new(bytes, batch as u64, &[(GENERATION_ID_SLOT, 1), (TRACE_KEY_SLOT, GENERATIONS_PER_TRACE)])
        }
        BodyKind::OtlpJson => {
            let spans = (0..batch).map(|_| genai_span(rng)).collect();
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            attr::string("service.name", "llm-gateway"),
                            attr::string("service.version", "2.14.0"),
                            attr::string("deployment.environment", "production"),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "opentelemetry.instrumentation.openai".into(),
                            version: "0.48.0".into(),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            let trace_slot = hex_run(OTLP_TRACE_ID_BYTE, 16);
            let span_slot = hex_run(OTLP_SPAN_ID_BYTE, 8);
            Template::new(encode_json(&request), batch as u64, &[(&trace_slot, GENERATIONS_PER_TRACE), (&span_slot, 1)])
        }
    }
}

fn hex_run(byte: u8, n: usize) -> Vec<u8> {
    hex_of(&vec![byte; n]).into_bytes()
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One generation record as a gateway posts it (SPEC §2), ids left as slots.
pub fn generation_record(rng: &mut fastrand::Rng) -> Value {
    let c = Conversation::draw(rng);
    let created_ms = rng.u64(0..86_000_000);
    let first_token_ms = created_ms + rng.u64(150..1_200);
    let completed_ms = first_token_ms + rng.u64(300..9_000);
    let mut messages = vec![json!({"role": "system", "content": c.system}), json!({"role": "user", "content": c.user})];
    if rng.u8(0..4) == 0 {
        // A follow-up turn: the earlier answer comes back as context.
        let earlier = text(rng, 80, 200);
        messages.insert(1, json!({"role": "user", "content": text(rng, 40, 120)}));
        messages.insert(2, json!({"role": "assistant", "content": earlier}));
    }
    json!({
        "id": format!("gen-{}", std::str::from_utf8(GENERATION_ID_SLOT).expect("ASCII")),
        "created_at": timestamp(created_ms),
        "completed_at": timestamp(completed_ms),
        "first_token_at": timestamp(first_token_ms),
        "provider": c.provider,
        "api_key_name": pick(rng, &["prod-backend", "staging-chat", "finance-automation", "support-bot"]),
        "request": {
            "model": c.model,
            "messages": messages,
            "temperature": f64::from(rng.u8(0..=100)) / 100.0,
            "max_tokens": pick(rng, &[256, 512, 1024, 2048]),
            "stream": rng.bool(),
            "user": format!("user_{}", rng.u32(1..5_000)),
            "session_id": format!("session_{:08x}", rng.u32(..)),
            "trace": {
                "trace_id": format!("run-{}", std::str::from_utf8(TRACE_KEY_SLOT).expect("ASCII")),
                "trace_name": pick(rng, &["Expense Processing Pipeline", "Support Triage", "Code Review Agent", "Search Answer"]),
                "generation_name": pick(rng, &["Analyze Report", "Classify Ticket", "Draft Reply", "Summarise Diff", "Rank Results"]),
                "department": pick(rng, &["finance", "support", "engineering", "sales"]),
                "cost_center": format!("CC-{}", rng.u16(1000..9999)),
                "feature": pick(rng, &["auto-triage", "expense-audit", "pr-review", "answer-box"]),
                "tags": [pick(rng, &["beta", "ga", "internal"]), pick(rng, &["eu", "us", "apac"])],
                "tenant": {"id": format!("t_{}", rng.u32(1..900)), "plan": pick(rng, &["free", "team", "enterprise"])}
            }
        },
        "response": {
            "id": format!("chatcmpl-{}", alnum(rng, 24)),
            "model": c.response_model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.completion}, "finish_reason": if rng.u8(0..10) == 0 { "length" } else { "stop" }}],
            "usage": {
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "total_tokens": c.prompt_tokens + c.completion_tokens,
                "cost": f64::from(c.prompt_tokens * 5 + c.completion_tokens * 15) / 1_000_000.0,
                "prompt_tokens_details": {"cached_tokens": rng.u32(0..=c.prompt_tokens / 2)},
                "completion_tokens_details": {"reasoning_tokens": 0}
            }
        }
    })
}

/// A GenAI span as an instrumented app sends it over OTLP (about 2.6 KB as OTLP/JSON):
/// the semantic-convention attributes, custom metadata, and the structured messages.
fn genai_span(rng: &mut fastrand::Rng) -> Span {
    let c = Conversation::draw(rng);
    let start = 1_795_341_600_000_000_000 + rng.u64(0..86_000_000_000_000);
    let end = start + rng.u64(400_000_000..9_000_000_000);
    let input = json!([
        {"role": "system", "parts": [{"type": "text", "content": c.system}]},
        {"role": "user", "parts": [{"type": "text", "content": c.user}]}
    ]);
    let output =
        json!([{"role": "assistant", "parts": [{"type": "text", "content": c.completion}], "finish_reason": "stop"}]);
    Span {
        trace_id: vec![OTLP_TRACE_ID_BYTE; 16],
        span_id: vec![OTLP_SPAN_ID_BYTE; 8],
        name: format!("chat {}", c.model),
        kind: 3,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: vec![
            attr::string("gen_ai.operation.name", "chat"),
            attr::string("gen_ai.provider.name", c.provider),
            attr::string("gen_ai.request.model", c.model),
            attr::string("gen_ai.response.model", c.response_model),
            attr::string("gen_ai.response.id", format!("chatcmpl-{}", alnum(rng, 24))),
            attr::string_array("gen_ai.response.finish_reasons", ["stop".to_owned()]),
            attr::double("gen_ai.request.temperature", f64::from(rng.u8(0..=100)) / 100.0),
            attr::int("gen_ai.request.max_tokens", 1024),
            attr::int("gen_ai.usage.input_tokens", i64::from(c.prompt_tokens)),
            attr::int("gen_ai.usage.output_tokens", i64::from(c.completion_tokens)),
            attr::double("gen_ai.usage.total_cost", f64::from(c.prompt_tokens * 5 + c.completion_tokens * 15) / 1e6),
            attr::string("user.id", format!("user_{}", rng.u32(1..5_000))),
            attr::string("session.id", format!("session_{:08x}", rng.u32(..))),
            attr::string("trace.metadata.department", pick(rng, &["finance", "support", "engineering"])),
            attr::string("trace.metadata.feature", pick(rng, &["auto-triage", "expense-audit", "pr-review"])),
            attr::string("gen_ai.input.messages", input.to_string()),
            attr::string("gen_ai.output.messages", output.to_string()),
        ],
        ..Default::default()
    }
}

/// The parts of one LLM call that both body kinds share.
struct Conversation {
    provider: &'static str,
    model: &'static str,
    response_model: &'static str,
    system: String,
    user: String,
    completion: String,
    prompt_tokens: u32,
    completion_tokens: u32,
}

impl Conversation {
    /// 1–2 KB of prompt and completion text in all; a few prompts carry an e-mail
    /// address or a phone number, as real ones do, so `privacy` masks now and then.
    fn draw(rng: &mut fastrand::Rng) -> Conversation {
        let (provider, model, response_model) = pick(
            rng,
            &[
                ("OpenAI", "openai/gpt-4o", "openai/gpt-4o-2024-08-06"),
                ("OpenAI", "openai/gpt-4o-mini", "openai/gpt-4o-mini-2024-07-18"),
                ("Anthropic", "anthropic/claude-sonnet-4", "claude-sonnet-4-20250514"),
                ("Google", "google/gemini-2.5-flash", "gemini-2.5-flash"),
                ("Mistral", "mistralai/mistral-large", "mistral-large-2411"),
            ],
        );
        let system = text(rng, 120, 260);
        let mut user = text(rng, 420, 900);
        match rng.u8(0..40) {
            0 => user.push_str(" Please send the summary to jordan.lee@example.com when done."),
            1 => user.push_str(" Call me back on +1 415 555 0100 if anything is unclear."),
            _ => {}
        }
        let completion = text(rng, 380, 760);
        let prompt_tokens = ((system.len() + user.len()) / 4) as u32;
        let completion_tokens = (completion.len() / 4) as u32;
        Conversation { provider, model, response_model, system, user, completion, prompt_tokens, completion_tokens }
    }
}

fn pick<T: Copy>(rng: &mut fastrand::Rng, from: &[T]) -> T {
    from[rng.usize(..from.len())]
}

fn alnum(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n).map(|_| rng.alphanumeric()).collect()
}

/// `2026-11-22T…Z` at `ms` milliseconds into the day.
fn timestamp(ms: u64) -> String {
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1_000 % 60, ms % 1_000);
    format!("2026-11-22T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Prose of `min..max` bytes: words drawn from a vocabulary of LLM-traffic words, with
/// sentence breaks, figures and line breaks, which gzip compresses about as well as
/// real prompts (3–4×).
fn text(rng: &mut fastrand::Rng, min: usize, max: usize) -> String {
    let target = rng.usize(min..max);
    let mut out = String::with_capacity(target + 16);
    let mut sentence_start = true;
    while out.len() < target {
        if !out.is_empty() {
            out.push(' ');
        }
        let word = pick(rng, WORDS);
        if sentence_start {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(word);
        }
        sentence_start = false;
        match rng.u8(0..40) {
            0..=3 => {
                out.push('.');
                sentence_start = true;
            }
            4 => out.push(','),
            5 => out.push_str(&format!(" ${}.{:02}", rng.u32(1..2_000), rng.u8(0..100))),
            6 => {
                out.push_str(".\n");
                sentence_start = true;
            }
            _ => {}
        }
    }
    out
}

const WORDS: &[&str] = &[
    "the",
    "report",
    "expense",
    "policy",
    "hotel",
    "night",
    "meal",
    "receipt",
    "travel",
    "approve",
    "flag",
    "within",
    "over",
    "limit",
    "customer",
    "ticket",
    "reply",
    "refund",
    "order",
    "shipping",
    "delay",
    "account",
    "password",
    "reset",
    "invoice",
    "payment",
    "card",
    "declined",
    "summary",
    "review",
    "change",
    "function",
    "variable",
    "test",
    "error",
    "stack",
    "trace",
    "deploy",
    "service",
    "latency",
    "request",
    "response",
    "model",
    "prompt",
    "token",
    "answer",
    "question",
    "search",
    "result",
    "rank",
    "document",
    "section",
    "paragraph",
    "table",
    "column",
    "value",
    "total",
    "amount",
    "date",
    "week",
    "month",
    "quarter",
    "budget",
    "forecast",
    "team",
    "manager",
    "engineer",
    "analyst",
    "client",
    "dinner",
    "flight",
    "economy",
    "rideshare",
    "attendees",
    "missing",
    "pending",
    "exception",
    "approved",
    "rejected",
    "because",
    "however",
    "therefore",
    "please",
    "check",
    "whether",
    "should",
    "could",
    "would",
    "which",
    "every",
    "each",
    "other",
    "another",
    "first",
    "second",
    "third",
    "next",
    "last",
    "before",
    "after",
    "during",
    "while",
    "until",
    "since",
    "about",
    "above",
    "below",
    "between",
    "through",
    "against",
    "without",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "few",
    "more",
    "most",
    "some",
    "such",
    "only",
    "own",
    "same",
    "than",
    "too",
    "very",
    "can",
    "will",
    "just",
    "now",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "have",
    "has",
    "had",
    "do",
    "does",
    "did",
    "a",
    "an",
    "and",
    "but",
    "if",
    "or",
    "as",
    "of",
    "at",
    "by",
    "for",
    "with",
    "into",
    "to",
    "from",
    "in",
    "on",
    "off",
    "out",
    "up",
    "down",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "we",
    "you",
    "they",
    "our",
    "your",
    "their",
    "dashboard",
    "metric",
    "alert",
    "incident",
    "outage",
    "database",
    "query",
    "index",
    "cache",
    "queue",
    "retry",
    "timeout",
    "backoff",
    "config",
    "pipeline",
    "exporter",
    "receiver",
    "processor",
    "span",
    "attribute",
    "resource",
    "scope",
    "collector",
    "backend",
    "gateway",
    "provider",
    "usage",
    "cost",
    "cached",
    "reasoning",
    "completion",
    "stream",
    "chunk",
    "context",
    "window",
    "conversation",
    "session",
    "user",
    "assistant",
    "system",
    "tool",
    "call",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_bodies_decode_with_fresh_ids_and_realistic_size() {
        let pool = BodyPool::new(BodyKind::Generations, 10, 7);
        let a = pool.next_body();
        let b = pool.next_body();
        let da = gencol_model::decode_body(&a, false).expect("decodes");
        let db = gencol_model::decode_body(&b, false).expect("decodes");
        assert!(da.rejected.is_empty(), "{:?}", da.rejected);
        assert_eq!(da.generations.len(), 10);
        assert_ne!(da.generations[0].id, db.generations[0].id);
        // Four generations per trace: records 0..4 share one trace key, record 4 starts the next.
        let key = |g: &gencol_model::Generation| g.request.trace.as_ref().unwrap()["trace_id"].clone();
        assert_eq!(key(&da.generations[0]), key(&da.generations[3]));
        assert_ne!(key(&da.generations[3]), key(&da.generations[4]));
        for g in &da.generations {
            let tree = |raw: &serde_json::value::RawValue| serde_json::from_str::<Value>(raw.get()).unwrap();
            let msgs = g.request.messages.as_ref().unwrap();
            let prompt: usize = msgs.iter().map(|m| tree(m)["content"].as_str().unwrap().len()).sum();
            let choice = tree(&g.response.as_ref().unwrap().choices.as_ref().unwrap()[0]);
            let completion = choice["message"]["content"].as_str().unwrap().len();
            assert!((900..2_600).contains(&(prompt + completion)), "{}", prompt + completion);
        }
    }

    #[test]
    fn otlp_bodies_decode_with_valid_distinct_ids() {
        let pool = BodyPool::new(BodyKind::OtlpJson, 10, 7);
        let body = pool.next_body();
        let req = gencol_model::otlp::decode_json(&body).expect("OTLP/JSON");
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 10);
        assert_eq!(spans[0].trace_id.len(), 16);
        assert_ne!(spans[0].span_id, spans[1].span_id);
        let per_span = body.len() / 10;
        assert!((2_000..3_400).contains(&per_span), "{per_span} bytes per span");
    }
}
