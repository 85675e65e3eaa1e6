//! The decoders a hostile sender reaches (generation records, OTLP/JSON, OTLP/protobuf),
//! fed arbitrary bytes, random requests and random requests with bytes flipped, cut or
//! inserted: they never panic; what they make is covered by what their meter paid (the
//! receiver also pays the body's length, the most text a body decodes into); what they
//! pay is bounded by the input's length and the item limit; and the item limit holds.

use std::sync::Arc;

use gencol_model::budget::{Charge, MemoryBudget, Meter, SPAN_COST, size};
use gencol_model::otlp::{
    DecodeFailure, decode_json_metered, decode_proto_metered, encode_json, encode_proto, from_request_metered,
};
use gencol_model::{DecodeError, MAX_LISTED_REJECTIONS, Origin, decode_spans, scope, service_resource};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The most an OTLP element other than a span costs per byte of protobuf: a scope's
/// spans list (272 bytes paid) can be 2 bytes on the wire.
const OTLP_COST_PER_BYTE: usize = 140;

/// A generation span is a few KiB of fixed parts (its attributes' keys and slots), plus
/// copies of its record's text (input and output messages, prompt, completion, metadata).
const SPAN_FIXED_COST: usize = 8 * 1024;
const SPAN_COST_PER_BYTE: usize = 8;

fn meter(max_items: usize, what: &'static str) -> Meter {
    Meter::new(Charge::new(&MemoryBudget::new(1 << 30)), max_items, what, "max_items")
}

/// Decodes an OTLP body either way and checks the properties; returns the spans kept.
fn check_otlp(body: &[u8], proto: bool, max_spans: usize) -> Result<usize, TestCaseError> {
    let mut m = meter(max_spans, "spans");
    let decoded = if proto { decode_proto_metered(body, &mut m) } else { decode_json_metered(body, &mut m) };
    let paid_bound = max_spans.saturating_add(1) * SPAN_COST + OTLP_COST_PER_BYTE * body.len() + 4096;
    prop_assert!(m.spent() <= paid_bound, "paid {} for {} bytes", m.spent(), body.len());
    let request = match decoded {
        Ok(r) => r,
        Err(DecodeFailure::Exceeded(_)) => {
            prop_assert!(m.exceeded().is_some());
            return Ok(0);
        }
        Err(DecodeFailure::Invalid(_)) => return Ok(0),
    };
    let spans: usize = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
    prop_assert!(spans <= max_spans, "{spans} spans decoded, at most {max_spans} allowed");
    let made = size::request(&request);
    prop_assert!(made <= m.spent() + body.len(), "made {made}, paid {} + body {}", m.spent(), body.len());
    if let Ok(items) = from_request_metered(request, &mut m) {
        let made: usize =
            items.iter().map(|i| size::span_item(i) + size::origin(&i.origin)).sum::<usize>() + body.len();
        prop_assert!(made <= m.spent() + 2 * body.len(), "items: made {made}, paid {}", m.spent());
    }
    Ok(spans)
}

/// Decodes a generations body and checks the properties.
fn check_generations(body: &[u8], ndjson: bool, max_records: usize) -> Result<(), TestCaseError> {
    let origin = Arc::new(Origin { resource: service_resource("gencol"), scope: scope(), ..Default::default() });
    let mut m = meter(max_records, "records");
    match decode_spans(body, ndjson, &origin, &mut m) {
        Ok(out) => {
            let records = out.spans.len() + out.rejected_total;
            prop_assert!(records <= max_records);
            prop_assert!(out.rejected.len() <= MAX_LISTED_REJECTIONS.min(out.rejected_total));
            for r in &out.rejected {
                prop_assert!(r.error.len() <= 520, "an error of {} bytes", r.error.len());
            }
            let made: usize = out.spans.iter().map(size::span_item).sum();
            prop_assert!(made <= m.spent(), "made {made}, paid {}", m.spent());
            let bound = records * SPAN_FIXED_COST + SPAN_COST_PER_BYTE * body.len();
            prop_assert!(m.spent() <= bound, "paid {} for {records} records in {} bytes", m.spent(), body.len());
        }
        Err(DecodeError::Exceeded(_)) => prop_assert!(m.exceeded().is_some()),
        Err(_) => {}
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z]{1,3}", "[ -~]{0,40}", "\\PC{0,8}"]
}

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), len..=len),
        1 => prop::collection::vec(any::<u8>(), 0..20),
    ]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(None),
        text().prop_map(|s| Some(any_value::Value::StringValue(s))),
        any::<i64>().prop_map(|i| Some(any_value::Value::IntValue(i))),
        any::<bool>().prop_map(|b| Some(any_value::Value::BoolValue(b))),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Some(any_value::Value::BytesValue(b))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop::collection::vec(inner, 0..6)
            .prop_map(|values| AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values })) })
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(
        (text(), prop::option::of(any_value())).prop_map(|(key, value)| KeyValue { key, value, key_strindex: 0 }),
        0..6,
    )
}

fn span() -> impl Strategy<Value = Span> {
    (
        id(16),
        id(8),
        id(8),
        text(),
        attributes(),
        prop::collection::vec((any::<u64>(), text(), attributes()), 0..3),
        prop::collection::vec((id(16), id(8), attributes()), 0..2),
    )
        .prop_map(|(trace_id, span_id, parent_span_id, name, attributes, events, links)| Span {
            trace_id,
            span_id,
            parent_span_id,
            name,
            attributes,
            events: events
                .into_iter()
                .map(|(time_unix_nano, name, attributes)| Event {
                    time_unix_nano,
                    name,
                    attributes,
                    ..Default::default()
                })
                .collect(),
            links: links
                .into_iter()
                .map(|(trace_id, span_id, attributes)| Link { trace_id, span_id, attributes, ..Default::default() })
                .collect(),
            ..Default::default()
        })
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = prop::collection::vec(span(), 0..8).prop_map(|spans| ScopeSpans { spans, ..Default::default() });
    let resource_spans =
        (attributes(), prop::collection::vec(scope_spans, 0..3)).prop_map(|(attributes, scopes)| ResourceSpans {
            resource: Some(Resource { attributes, ..Default::default() }),
            scope_spans: scopes,
            ..Default::default()
        });
    prop::collection::vec(resource_spans, 0..3).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, Vec<u8>),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
    ];
    prop::collection::vec(one, 0..4)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Flip(at, mask) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
            Mutation::Insert(at, inserted) => {
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, inserted.iter().copied());
            }
            Mutation::Flip(..) => {}
        }
    }
    bytes
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A generation record, valid or not: a good one with fields replaced by random values,
/// removed, or added.
fn record() -> impl Strategy<Value = Value> {
    let fields = prop::collection::vec(
        (
            prop::sample::select(vec![
                "/id",
                "/created_at",
                "/request/model",
                "/request/messages",
                "/request/prompt",
                "/request/trace",
                "/response/choices",
                "/response/usage",
                "/error",
                "/extra",
            ]),
            prop::option::of(json_value()),
        ),
        0..4,
    );
    (text(), fields).prop_map(|(id, fields)| {
        let mut r = json!({
            "id": if id.is_empty() { "g".to_owned() } else { id },
            "created_at": "2026-11-22T10:00:00Z", "completed_at": 1_800_000_000_000_000_000u64,
            "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                        "trace": {"trace_name": "t", "team": "a"}},
            "response": {"choices": [{"message": {"role": "assistant", "content": "yo"}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 2, "cost": 0.1}}
        });
        for (path, value) in fields {
            let (parent, key) = path.rsplit_once('/').expect("a path");
            if let Some(Value::Object(map)) = r.pointer_mut(if parent.is_empty() { "" } else { parent }) {
                match value {
                    Some(v) => map.insert(key.to_owned(), v),
                    None => map.remove(key),
                };
            }
        }
        r
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn arbitrary_bytes_never_panic_and_cost_what_they_are(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        max_items in 1..50usize,
    ) {
        check_otlp(&bytes, true, max_items)?;
        check_otlp(&bytes, false, max_items)?;
        check_generations(&bytes, false, max_items)?;
        check_generations(&bytes, true, max_items)?;
    }

    #[test]
    fn otlp_requests_whole_or_damaged(
        req in request(),
        mutations in mutations(),
        max_spans in 1..40usize,
    ) {
        let proto = mutate(encode_proto(&req), &mutations);
        check_otlp(&proto, true, max_spans)?;
        let json = mutate(encode_json(&req), &mutations);
        check_otlp(&json, false, max_spans)?;
        // Undamaged and under the limit, both decode every span.
        if mutations.is_empty() {
            let spans = req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum::<usize>();
            let limit = spans.max(1);
            prop_assert_eq!(check_otlp(&encode_proto(&req), true, limit)?, spans);
            prop_assert_eq!(check_otlp(&encode_json(&req), false, limit)?, spans);
        }
    }

    #[test]
    fn generation_bodies_whole_or_damaged(
        records in prop::collection::vec(record(), 0..12),
        mutations in mutations(),
        max_records in 1..16usize,
    ) {
        let array = mutate(serde_json::to_vec(&records).expect("JSON"), &mutations);
        check_generations(&array, false, max_records)?;
        let mut lines = Vec::new();
        for r in &records {
            lines.extend(serde_json::to_vec(r).expect("JSON"));
            lines.push(b'\n');
        }
        check_generations(&mutate(lines, &mutations), true, max_records)?;
        if let Some(one) = records.first() {
            check_generations(&mutate(serde_json::to_vec(one).expect("JSON"), &mutations), false, max_records)?;
        }
    }
}
