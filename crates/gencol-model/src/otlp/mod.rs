//! Between [`SpanItem`]s and OTLP requests: grouping spans back under their resource
//! and scope, and the two OTLP/HTTP encodings.
//!
//! Exporters encode straight from the items they hold ([`encode_items_json`],
//! [`encode_items_proto`]) instead of building an [`ExportTraceServiceRequest`] first:
//! that would copy every span, prompt and completion included, once per send.

mod json;
mod wire;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::budget::{Exceeded, FIRST_SPAN_ITEM, Meter, size};
use crate::span::{Origin, SpanItem};

/// Groups items into one request, one `ResourceSpans` per origin, in first-seen order.
pub fn to_request<'a>(items: impl IntoIterator<Item = &'a SpanItem>) -> ExportTraceServiceRequest {
    let mut groups: Vec<(*const Origin, ResourceSpans)> = Vec::new();
    for item in items {
        let key = Arc::as_ptr(&item.origin);
        let slot = match groups.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let o = &item.origin;
                groups.push((
                    key,
                    ResourceSpans {
                        resource: Some(o.resource.clone()),
                        scope_spans: vec![ScopeSpans {
                            scope: Some(o.scope.clone()),
                            spans: Vec::new(),
                            schema_url: o.scope_schema_url.clone(),
                        }],
                        schema_url: o.resource_schema_url.clone(),
                    },
                ));
                groups.len() - 1
            }
        };
        groups[slot].1.scope_spans[0].spans.push(item.span.clone());
    }
    ExportTraceServiceRequest { resource_spans: groups.into_iter().map(|(_, rs)| rs).collect() }
}

/// Splits a request into items, one shared origin per resource and scope.
pub fn from_request(req: ExportTraceServiceRequest) -> Vec<SpanItem> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        // A scope without spans needs no origin (and no copy of the resource).
        for ss in rs.scope_spans.into_iter().filter(|ss| !ss.spans.is_empty()) {
            let origin = Arc::new(Origin {
                resource: resource.clone(),
                resource_schema_url: rs.schema_url.clone(),
                scope: ss.scope.unwrap_or_default(),
                scope_schema_url: ss.schema_url,
            });
            out.extend(ss.spans.into_iter().map(|span| SpanItem { origin: origin.clone(), span, generation: None }));
        }
    }
    out
}

/// Spans of one resource, by scope, borrowed from a request or from items.
struct Group<'a> {
    resource: Option<&'a Resource>,
    schema_url: &'a str,
    scopes: Vec<ScopeGroup<'a>>,
}

struct ScopeGroup<'a> {
    scope: Option<&'a InstrumentationScope>,
    schema_url: &'a str,
    spans: Vec<&'a Span>,
}

impl<'a> Group<'a> {
    fn of_request(req: &'a ExportTraceServiceRequest) -> Vec<Group<'a>> {
        req.resource_spans
            .iter()
            .map(|rs| Group {
                resource: rs.resource.as_ref(),
                schema_url: &rs.schema_url,
                scopes: rs
                    .scope_spans
                    .iter()
                    .map(|ss| ScopeGroup {
                        scope: ss.scope.as_ref(),
                        schema_url: &ss.schema_url,
                        spans: ss.spans.iter().collect(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The grouping [`to_request`] makes: one group per origin, in first-seen order.
    fn of_items(items: &'a [SpanItem]) -> Vec<Group<'a>> {
        let mut keys: Vec<*const Origin> = Vec::new();
        let mut groups: Vec<Group<'a>> = Vec::new();
        for item in items {
            let key = Arc::as_ptr(&item.origin);
            let slot = match keys.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    let o = &item.origin;
                    keys.push(key);
                    groups.push(Group {
                        resource: Some(&o.resource),
                        schema_url: &o.resource_schema_url,
                        scopes: vec![ScopeGroup {
                            scope: Some(&o.scope),
                            schema_url: &o.scope_schema_url,
                            spans: Vec::new(),
                        }],
                    });
                    groups.len() - 1
                }
            };
            groups[slot].scopes[0].spans.push(&item.span);
        }
        groups
    }
}

/// OTLP/JSON (`application/json`): hex ids, camelCase keys, enums as integers,
/// 64-bit integers as strings, compact.
pub fn encode_json(req: &ExportTraceServiceRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(req.encoded_len() * 5 / 4 + 64);
    json::write_request(&mut out, &Group::of_request(req));
    out
}

/// OTLP/protobuf (`application/x-protobuf`).
pub fn encode_proto(req: &ExportTraceServiceRequest) -> Vec<u8> {
    req.encode_to_vec()
}

/// `encode_json(&to_request(items))`, without copying the spans.
pub fn encode_items_json(items: &[SpanItem]) -> Vec<u8> {
    // OTLP/JSON runs about a third longer than protobuf; sizing the buffer once saves
    // growing (and copying) it several times for a large batch.
    let proto_len: usize = items.iter().map(|i| i.span.encoded_len()).sum();
    let mut out = Vec::with_capacity(proto_len * 3 / 2 + 256);
    json::write_request(&mut out, &Group::of_items(items));
    out
}

/// [`encode_items_json`] a part at a time: an exporter can compress each part and let
/// other work run between parts, instead of holding a thread for a whole large batch.
/// The parts joined are byte for byte what [`encode_items_json`] writes.
pub struct JsonItemsWriter<'a> {
    /// The request with every span left out, and where each span goes.
    skeleton: Vec<u8>,
    holes: Vec<(usize, &'a Span)>,
    next: usize,
    copied: usize,
}

impl<'a> JsonItemsWriter<'a> {
    pub fn new(items: &'a [SpanItem]) -> Self {
        let mut skeleton = Vec::with_capacity(256 + 64 * items.len());
        let mut holes = Vec::with_capacity(items.len());
        json::write_request_with(&mut skeleton, &Group::of_items(items), |out, span| holes.push((out.len(), span)));
        JsonItemsWriter { skeleton, holes, next: 0, copied: 0 }
    }

    /// Spans written so far.
    pub fn spans_written(&self) -> usize {
        self.next
    }

    /// Appends the next part, spans until `out` has grown by `budget` bytes or more;
    /// `true` once the request is complete.
    pub fn write_some(&mut self, out: &mut Vec<u8>, budget: usize) -> bool {
        let start = out.len();
        while let Some(&(at, span)) = self.holes.get(self.next) {
            out.extend_from_slice(&self.skeleton[self.copied..at]);
            self.copied = at;
            json::write_span(out, span);
            self.next += 1;
            if out.len() - start >= budget {
                return false;
            }
        }
        out.extend_from_slice(&self.skeleton[self.copied..]);
        self.copied = self.skeleton.len();
        true
    }
}

/// `encode_proto(&to_request(items))`, byte for byte, without copying the spans.
pub fn encode_items_proto(items: &[SpanItem]) -> Vec<u8> {
    let groups = Group::of_items(items);
    // Every nested message is preceded by its length: work them out first.
    let span_lens: Vec<Vec<Vec<usize>>> = groups
        .iter()
        .map(|g| g.scopes.iter().map(|s| s.spans.iter().map(|span| span.encoded_len()).collect()).collect())
        .collect();
    let delimited = |len: usize| encoded_len_varint(len as u64) + len;
    let scope_len = |s: &ScopeGroup<'_>, lens: &[usize]| {
        s.scope.map_or(0, |m| key_len(1) + delimited(m.encoded_len()))
            + lens.iter().map(|l| key_len(2) + delimited(*l)).sum::<usize>()
            + if s.schema_url.is_empty() { 0 } else { key_len(3) + delimited(s.schema_url.len()) }
    };
    let group_len = |g: &Group<'_>, lens: &[Vec<usize>]| {
        g.resource.map_or(0, |m| key_len(1) + delimited(m.encoded_len()))
            + g.scopes.iter().zip(lens).map(|(s, l)| key_len(2) + delimited(scope_len(s, l))).sum::<usize>()
            + if g.schema_url.is_empty() { 0 } else { key_len(3) + delimited(g.schema_url.len()) }
    };
    let total: usize = groups.iter().zip(&span_lens).map(|(g, l)| key_len(1) + delimited(group_len(g, l))).sum();

    let mut out = Vec::with_capacity(total);
    for (g, lens) in groups.iter().zip(&span_lens) {
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(group_len(g, lens) as u64, &mut out);
        if let Some(r) = g.resource {
            prost::encoding::message::encode(1, r, &mut out);
        }
        for (s, lens) in g.scopes.iter().zip(lens) {
            encode_key(2, WireType::LengthDelimited, &mut out);
            encode_varint(scope_len(s, lens) as u64, &mut out);
            if let Some(scope) = s.scope {
                prost::encoding::message::encode(1, scope, &mut out);
            }
            for span in &s.spans {
                prost::encoding::message::encode(2, *span, &mut out);
            }
            put_str(3, s.schema_url, &mut out);
        }
        put_str(3, g.schema_url, &mut out);
    }
    out
}

/// A string field, left out when empty as prost does.
fn put_str(tag: u32, s: &str, out: &mut Vec<u8>) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(s.len() as u64, out);
        out.extend_from_slice(s.as_bytes());
    }
}

/// Decodes OTLP/JSON; `None` fields and unknown keys are ignored as the spec says.
pub fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    json::read_request(body).map_err(|e| e.to_string())
}

/// Decodes OTLP/protobuf.
pub fn decode_proto(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
}

/// Why a body was not decoded: it would cost more than its meter allows, or it is not
/// an OTLP request.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DecodeFailure {
    #[error(transparent)]
    Exceeded(Exceeded),
    #[error("{0}")]
    Invalid(String),
}

/// [`decode_json`], paying `meter` for every span, attribute, event, link and array
/// value as it is read, and stopping at the first it refuses.
pub fn decode_json_metered(body: &[u8], meter: &mut Meter) -> Result<ExportTraceServiceRequest, DecodeFailure> {
    json::read_request_metered(body, meter).map_err(|e| match meter.exceeded() {
        Some(refused) => DecodeFailure::Exceeded(refused.clone()),
        None => DecodeFailure::Invalid(e.to_string()),
    })
}

/// [`decode_proto`], with every element paid for before anything is decoded.
pub fn decode_proto_metered(body: &[u8], meter: &mut Meter) -> Result<ExportTraceServiceRequest, DecodeFailure> {
    wire::pay_for_request(body, meter).map_err(DecodeFailure::Exceeded)?;
    decode_proto(body).map_err(DecodeFailure::Invalid)
}

/// [`from_request`], paying first for the origin each scope gets: a copy of its resource
/// and scope, which a request of many scopes under one large resource would otherwise
/// multiply. The spans themselves were paid for when they were decoded.
pub fn from_request_metered(req: ExportTraceServiceRequest, meter: &mut Meter) -> Result<Vec<SpanItem>, Exceeded> {
    meter.pay(FIRST_SPAN_ITEM)?;
    for rs in &req.resource_spans {
        let resource = rs.resource.as_ref().map_or(0, size::resource) + rs.schema_url.len();
        for ss in rs.scope_spans.iter().filter(|ss| !ss.spans.is_empty()) {
            let origin = std::mem::size_of::<Origin>() + 16 + ss.scope.as_ref().map_or(0, size::scope);
            meter.pay(resource + origin + ss.schema_url.len())?;
        }
    }
    Ok(from_request(req))
}

/// Number of spans in a request.
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

#[cfg(test)]
mod tests {
    //! The hand-written OTLP/JSON codec and the item encoders, held to the serde
    //! derives of the proto types: what one writes, the other reads the same.

    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, EntityRef, KeyValue, KeyValueList, any_value::Value,
    };
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{Status, status::StatusCode};

    use super::*;

    fn serde_decode(body: &[u8]) -> Result<ExportTraceServiceRequest, serde_json::Error> {
        serde_json::from_slice(body)
    }

    fn kv(key: &str, value: Option<Value>) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value }), ..Default::default() }
    }

    /// Every field and every kind of attribute value, with awkward text.
    fn rich_request() -> ExportTraceServiceRequest {
        let values = vec![
            kv(
                "s",
                Some(Value::StringValue("quote \" backslash \\ newline \n tab \t nul \u{0} é 😀 </script>".into())),
            ),
            kv("b", Some(Value::BoolValue(true))),
            kv("f", Some(Value::BoolValue(false))),
            kv("i", Some(Value::IntValue(-9_223_372_036_854_775_808))),
            kv("i2", Some(Value::IntValue(42))),
            kv("d", Some(Value::DoubleValue(0.1 + 0.2))),
            kv("d2", Some(Value::DoubleValue(-0.0))),
            kv("d3", Some(Value::DoubleValue(1e300))),
            kv("nan", Some(Value::DoubleValue(f64::NAN))),
            kv("inf", Some(Value::DoubleValue(f64::INFINITY))),
            kv("bytes", Some(Value::BytesValue(vec![0, 1, 2, 250, 255]))),
            kv("strindex", Some(Value::StringValueStrindex(7))),
            kv("empty", None),
            KeyValue { key: "no value".into(), value: None, key_strindex: 3 },
            kv(
                "array",
                Some(Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue { value: Some(Value::StringValue("a".into())) },
                        AnyValue { value: None },
                        AnyValue {
                            value: Some(Value::ArrayValue(ArrayValue {
                                values: vec![AnyValue { value: Some(Value::IntValue(1)) }],
                            })),
                        },
                    ],
                })),
            ),
            kv("empty array", Some(Value::ArrayValue(ArrayValue::default()))),
            kv(
                "kvlist",
                Some(Value::KvlistValue(KeyValueList {
                    values: vec![kv("inner", Some(Value::DoubleValue(2.5))), kv("", None)],
                })),
            ),
        ];
        let span = Span {
            trace_id: (1..=16).collect(),
            span_id: vec![0xab; 8],
            trace_state: "vendor=x".into(),
            parent_span_id: vec![0x01; 8],
            flags: 257,
            name: "chat gpt-4o".into(),
            kind: 3,
            start_time_unix_nano: 1_795_341_600_123_456_789,
            end_time_unix_nano: u64::MAX,
            attributes: values.clone(),
            dropped_attributes_count: 2,
            events: vec![
                Event {
                    time_unix_nano: 5,
                    name: "e".into(),
                    attributes: values[..3].to_vec(),
                    dropped_attributes_count: 1,
                },
                Event::default(),
            ],
            dropped_events_count: 3,
            links: vec![
                Link {
                    trace_id: vec![9; 16],
                    span_id: vec![8; 8],
                    trace_state: "t".into(),
                    attributes: values[3..5].to_vec(),
                    dropped_attributes_count: 4,
                    flags: 1,
                },
                Link::default(),
            ],
            dropped_links_count: 5,
            status: Some(Status { message: "rate limited".into(), code: StatusCode::Error as i32 }),
        };
        let bare = Span { status: Some(Status::default()), ..Default::default() };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: values[..2].to_vec(),
                        dropped_attributes_count: 1,
                        entity_refs: vec![EntityRef {
                            schema_url: "u".into(),
                            r#type: "service".into(),
                            id_keys: vec!["service.name".into()],
                            description_keys: vec![],
                        }],
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "gencol".into(),
                                version: "0.1.0".into(),
                                attributes: values[5..7].to_vec(),
                                dropped_attributes_count: 6,
                            }),
                            spans: vec![span, bare.clone()],
                            schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                        },
                        ScopeSpans { scope: None, spans: vec![], schema_url: String::new() },
                    ],
                    schema_url: "https://example.com/r".into(),
                },
                ResourceSpans {
                    resource: Some(Resource::default()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope::default()),
                        spans: vec![Span::default(), bare],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                },
                ResourceSpans::default(),
            ],
        }
    }

    #[test]
    fn json_writer_reads_back_as_the_serde_encoding_does() {
        let req = rich_request();
        let ours = encode_json(&req);
        let theirs = serde_json::to_vec(&req).expect("serialises");
        let by_serde = serde_decode(&theirs).expect("serde reads its own");
        // Both readers, on both encodings, give the same spans.
        assert_eq!(serde_decode(&ours).expect("serde reads ours"), by_serde);
        assert_eq!(decode_json(&ours).expect("we read ours"), by_serde);
        assert_eq!(decode_json(&theirs).expect("we read serde's"), by_serde);
        // NaN and infinities become empty values, as with serde, and no OTLP/JSON reader
        // takes a profiling string-table index for traces; everything else survives.
        let mut expected = req.clone();
        let attributes = &mut expected.resource_spans[0].scope_spans[0].spans[0].attributes;
        for kv in attributes.iter_mut().filter(|kv| ["nan", "inf", "strindex"].contains(&kv.key.as_str())) {
            kv.value = Some(AnyValue { value: None });
        }
        assert_eq!(decode_json(&ours).unwrap(), expected);
        // Smaller, because defaults are left out.
        assert!(ours.len() < theirs.len(), "{} vs {}", ours.len(), theirs.len());
    }

    #[test]
    fn json_reader_accepts_and_refuses_what_serde_does() {
        let cases: &[&str] = &[
            "{}",
            r#"{"resourceSpans":[]}"#,
            r#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"00"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0x4BF92F3577B34DA6A3CE929D0E0E4736","spanId":"0X00f067aa0ba902b7"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"4bf9z"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"4bf"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":null}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":123,"endTimeUnixNano":"456"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":-1}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":1.5}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_CLIENT"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":2,"flags":-1}]}]}]}"#,
            r#"{"resourceSpans":[{"resource":null,"scopeSpans":[{"scope":null,"spans":[{"status":null}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":null}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"intValue":"12"}},{"key":"b","value":{"intValue":12}},{"key":"c","value":{"intValue":1.5}},{"key":"d","value":{"intValue":"x"}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"intValue":18446744073709551615}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"intValue":"12"}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"stringValue":"x","boolValue":true}},{"key":"b","value":{"stringValue":null}},{"key":"c","value":{"future":{"deep":[1]},"stringValue":"y"}},{"key":"d","value":{}},{"key":"e","value":null},{"key":"f"}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"value":{"stringValue":"no key"}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"arrayValue":{}}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"arrayValue":{"values":[{"stringValue":"x"},{},null]}}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"arrayValue":{"values":[{"stringValue":"x"},{"doubleValue":2}]}}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"kvlistValue":{"values":[{"key":"k","value":{"boolValue":false}}]}}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"bytesValue":"AAEC+v8="}},{"key":"b","value":{"bytesValue":"not base64!"}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"bytesValue":"AAEC+v8="}}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":"plain"}]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"a","name":"b"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"events":[{"timeUnixNano":"7","name":"x","attributes":[]}],"links":[{"traceId":"0102","flags":3}]}]}]}]}"#,
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}],"entityRefs":[{"type":"t"}]}}]}"#,
            r#"{"resourceSpans":[]} trailing"#,
            r#"[]"#,
            r#""#,
        ];
        for case in cases {
            let ours = decode_json(case.as_bytes());
            let theirs = serde_decode(case.as_bytes());
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{case}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{case}: ours {ours:?}, serde {theirs:?}"),
            }
        }
    }

    fn items() -> Vec<SpanItem> {
        let req = rich_request();
        let mut a = from_request(req.clone());
        let b = from_request(req);
        // Interleave two copies of each origin: grouping must gather them back.
        a.extend(b);
        a.rotate_left(3);
        a
    }

    #[test]
    fn item_encoders_match_encoding_the_built_request() {
        let items = items();
        assert_eq!(encode_items_proto(&items), encode_proto(&to_request(&items)));
        assert_eq!(decode_json(&encode_items_json(&items)), decode_json(&encode_json(&to_request(&items))));
        assert_eq!(encode_items_proto(&[]), encode_proto(&to_request(&[])));
        assert_eq!(decode_json(&encode_items_json(&[])).unwrap(), ExportTraceServiceRequest::default());
    }

    #[test]
    fn json_written_in_parts_is_the_whole_encoding() {
        for items in [items(), Vec::new()] {
            let whole = encode_items_json(&items);
            for budget in [0, 1, 200, 5_000, usize::MAX] {
                let mut writer = JsonItemsWriter::new(&items);
                let (mut joined, mut parts) = (Vec::new(), 0);
                loop {
                    parts += 1;
                    let mut part = Vec::new();
                    let done = writer.write_some(&mut part, budget);
                    joined.extend(part);
                    if done {
                        break;
                    }
                }
                assert_eq!(joined, whole, "budget {budget}");
                if budget <= 1 {
                    assert_eq!(parts, items.len() + 1, "one span a part, then the closing part");
                }
            }
        }
    }

    fn meter(budget: &crate::budget::MemoryBudget, max_spans: usize) -> Meter {
        Meter::new(crate::budget::Charge::new(budget), max_spans, "spans", "max_spans_per_request")
    }

    /// What both decoders paid covers what they made, the rich request included.
    #[test]
    fn metered_decoding_pays_for_what_it_makes() {
        let req = rich_request();
        let budget = crate::budget::MemoryBudget::new(64 << 20);
        for (encoding, body) in [("json", encode_json(&req)), ("proto", encode_proto(&req))] {
            let mut m = meter(&budget, 100);
            let decoded = match encoding {
                "json" => decode_json_metered(&body, &mut m),
                _ => decode_proto_metered(&body, &mut m),
            }
            .expect("decodes");
            // The same as decoding without a meter (NaN is not equal to itself: compare encodings).
            let unmetered = if encoding == "json" { decode_json(&body) } else { decode_proto(&body) };
            assert_eq!(encode_proto(&decoded), encode_proto(&unmetered.expect("decodes")), "{encoding}");
            // Text (strings, ids) is paid for as the body's length by the receiver.
            assert!(m.spent() + body.len() >= size::request(&decoded), "{encoding}: {} + {}", m.spent(), body.len());
            let items = from_request_metered(decoded, &mut m).expect("fits");
            let made: usize = items.iter().map(|i| size::span(&i.span)).sum::<usize>()
                + items.iter().map(|i| size::origin(&i.origin)).sum::<usize>();
            assert!(m.spent() + 2 * body.len() >= made, "{encoding}: {} for {made}", m.spent());
        }
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_body_of_empty_spans_is_refused_at_the_span_limit() {
        let json = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}{{}}]}}]}}]}}"#, "{},".repeat(500_000));
        let empty = Span::default();
        let proto = encode_proto(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![empty; 500_000], ..Default::default() }],
                ..Default::default()
            }],
        });
        let budget = crate::budget::MemoryBudget::new(256 << 20);
        let refused =
            DecodeFailure::Exceeded(Exceeded::Items { what: "spans", limit: 1000, setting: "max_spans_per_request" });
        let mut m = meter(&budget, 1000);
        assert_eq!(decode_json_metered(json.as_bytes(), &mut m), Err(refused.clone()));
        assert!(m.spent() < 2 << 20, "refused early: paid {}", m.spent());
        let mut m = meter(&budget, 1000);
        assert_eq!(decode_proto_metered(&proto, &mut m), Err(refused));
        assert!(m.spent() < 2 << 20, "refused early: paid {}", m.spent());
    }

    /// Tiny elements packed tightly (an empty attribute is 2 bytes of protobuf) are paid
    /// for at what they take decoded, so a small budget refuses them before prost runs.
    #[test]
    fn an_attribute_bomb_is_refused_by_the_budget() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![KeyValue::default(); 200_000],
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        };
        let body = encode_proto(&req);
        assert!(body.len() < 500_000);
        let budget = crate::budget::MemoryBudget::new(8 << 20);
        let too_large = DecodeFailure::Exceeded(Exceeded::TooLarge { limit: 8 << 20 });
        assert_eq!(decode_proto_metered(&body, &mut meter(&budget, 10)), Err(too_large.clone()));
        assert_eq!(decode_json_metered(&encode_json(&req), &mut meter(&budget, 10)), Err(too_large));
        assert_eq!(budget.in_use(), 0);
    }

    /// A hundred thousand scopes under one large resource: each scope's origin copies the
    /// resource, and is paid for before it is made.
    #[test]
    fn origins_are_paid_for_before_they_copy_the_resource() {
        let resource =
            Resource { attributes: vec![crate::attributes::string("big", "x".repeat(100_000))], ..Default::default() };
        let one = Span { trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans { spans: vec![one], ..Default::default() }; 1_000],
                ..Default::default()
            }],
        };
        let budget = crate::budget::MemoryBudget::new(32 << 20);
        let mut m = meter(&budget, 10_000);
        let decoded = decode_proto_metered(&encode_proto(&req), &mut m).expect("decodes");
        assert_eq!(from_request_metered(decoded, &mut m).err(), Some(Exceeded::TooLarge { limit: 32 << 20 }));
        // Scopes without spans get no origin at all.
        let empty_scopes = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans::default(); 3], ..Default::default() }],
        };
        assert!(from_request(empty_scopes).is_empty());
    }
}
