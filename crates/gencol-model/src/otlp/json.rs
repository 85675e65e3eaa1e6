//! OTLP/JSON written and read by hand-picked code instead of the proto types' serde
//! derives, because those sit on every span's path and are slow where it hurts: every
//! attribute value is `#[serde(flatten)]`, which makes serde buffer each value (prompt
//! and completion text included) into an intermediate tree and copy it again, on the
//! way in and on the way out.
//!
//! The output means exactly what the serde encoding means (hex ids, camelCase keys,
//! enums as integers, 64-bit integers as strings, compact); it leaves out fields that
//! hold their default value, as the OTLP/JSON spec allows and as the OpenTelemetry
//! Collector does, so any OTLP/JSON reader decodes it to the same spans. The reader
//! accepts exactly what the derives accept, with the same field rules (unknown keys
//! ignored, missing fields defaulted, ids hex with an optional `0x`, 64-bit integers as
//! strings or numbers). The tests below hold both to the serde encoding.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::Group;
use crate::budget::{
    ARRAY_VALUE_COST, ATTRIBUTE_COST, ENTITY_REF_COST, EVENT_COST, Exceeded, LINK_COST, Meter, RESOURCE_SPANS_COST,
    SCOPE_SPANS_COST, SPAN_COST, STRING_ITEM_COST,
};
use crate::json_write::write_list;

// ---------------------------------------------------------------------------------------
// Writing

/// Appends the export request holding `groups` to `out`.
pub(super) fn write_request(out: &mut Vec<u8>, groups: &[Group<'_>]) {
    write_request_with(out, groups, write_span);
}

/// [`write_request`], with each span written by `span_writer` (which may write nothing
/// and note where the span goes instead, as [`super::JsonItemsWriter`] does).
pub(super) fn write_request_with<'a>(
    out: &mut Vec<u8>,
    groups: &[Group<'a>],
    mut span_writer: impl FnMut(&mut Vec<u8>, &'a Span),
) {
    write_object(out, |f| {
        f.key(b"resourceSpans");
        write_list(f.out, groups, |out, g| {
            write_object(out, |f| {
                if let Some(r) = g.resource {
                    f.key(b"resource");
                    write_resource(f.out, r);
                }
                f.key(b"scopeSpans");
                write_list(f.out, &g.scopes, |out, s| {
                    write_object(out, |f| {
                        if let Some(scope) = s.scope {
                            f.key(b"scope");
                            write_scope(f.out, scope);
                        }
                        f.key(b"spans");
                        write_list(f.out, &s.spans, |out, span| span_writer(out, span));
                        f.string_if_set(b"schemaUrl", s.schema_url);
                    })
                });
                f.string_if_set(b"schemaUrl", g.schema_url);
            })
        });
    });
}

/// `{`, the members `write` adds, `}`.
fn write_object(out: &mut Vec<u8>, write: impl FnOnce(&mut Fields<'_>)) {
    out.push(b'{');
    write(&mut Fields::new(out));
    out.push(b'}');
}

/// Writes the members of one JSON object, commas between them.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Fields { out, first: true }
    }

    /// `"name":`, with the comma before it when needed.
    fn key(&mut self, name: &[u8]) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b"\":");
    }

    fn string_if_set(&mut self, name: &[u8], value: &str) {
        if !value.is_empty() {
            self.key(name);
            write_str(self.out, value);
        }
    }

    fn hex_if_set(&mut self, name: &[u8], bytes: &[u8]) {
        if !bytes.is_empty() {
            self.key(name);
            write_hex(self.out, bytes);
        }
    }

    fn number_if_set(&mut self, name: &[u8], value: i64) {
        if value != 0 {
            self.key(name);
            write_display(self.out, value);
        }
    }

    /// 64-bit integers are strings in OTLP/JSON, so JavaScript readers keep every digit.
    fn u64_if_set(&mut self, name: &[u8], value: u64) {
        if value != 0 {
            self.key(name);
            self.out.push(b'"');
            write_display(self.out, value);
            self.out.push(b'"');
        }
    }

    fn attributes_if_set(&mut self, attributes: &[KeyValue]) {
        if !attributes.is_empty() {
            self.key(b"attributes");
            write_key_values(self.out, attributes);
        }
    }
}

fn write_resource(out: &mut Vec<u8>, r: &Resource) {
    write_object(out, |f| {
        f.attributes_if_set(&r.attributes);
        f.number_if_set(b"droppedAttributesCount", i64::from(r.dropped_attributes_count));
        if !r.entity_refs.is_empty() {
            f.key(b"entityRefs");
            write_serde::<[EntityRef]>(f.out, &r.entity_refs);
        }
    });
}

fn write_scope(out: &mut Vec<u8>, s: &InstrumentationScope) {
    write_object(out, |f| {
        f.string_if_set(b"name", &s.name);
        f.string_if_set(b"version", &s.version);
        f.attributes_if_set(&s.attributes);
        f.number_if_set(b"droppedAttributesCount", i64::from(s.dropped_attributes_count));
    });
}

pub(super) fn write_span(out: &mut Vec<u8>, s: &Span) {
    write_object(out, |f| {
        f.hex_if_set(b"traceId", &s.trace_id);
        f.hex_if_set(b"spanId", &s.span_id);
        f.string_if_set(b"traceState", &s.trace_state);
        f.hex_if_set(b"parentSpanId", &s.parent_span_id);
        f.number_if_set(b"flags", i64::from(s.flags));
        f.string_if_set(b"name", &s.name);
        f.number_if_set(b"kind", i64::from(s.kind));
        f.u64_if_set(b"startTimeUnixNano", s.start_time_unix_nano);
        f.u64_if_set(b"endTimeUnixNano", s.end_time_unix_nano);
        f.attributes_if_set(&s.attributes);
        f.number_if_set(b"droppedAttributesCount", i64::from(s.dropped_attributes_count));
        if !s.events.is_empty() {
            f.key(b"events");
            write_list(f.out, &s.events, |out, e| {
                write_object(out, |f| {
                    f.u64_if_set(b"timeUnixNano", e.time_unix_nano);
                    f.string_if_set(b"name", &e.name);
                    f.attributes_if_set(&e.attributes);
                    f.number_if_set(b"droppedAttributesCount", i64::from(e.dropped_attributes_count));
                })
            });
        }
        f.number_if_set(b"droppedEventsCount", i64::from(s.dropped_events_count));
        if !s.links.is_empty() {
            f.key(b"links");
            write_list(f.out, &s.links, |out, l| {
                write_object(out, |f| {
                    f.hex_if_set(b"traceId", &l.trace_id);
                    f.hex_if_set(b"spanId", &l.span_id);
                    f.string_if_set(b"traceState", &l.trace_state);
                    f.attributes_if_set(&l.attributes);
                    f.number_if_set(b"droppedAttributesCount", i64::from(l.dropped_attributes_count));
                    f.number_if_set(b"flags", i64::from(l.flags));
                })
            });
        }
        f.number_if_set(b"droppedLinksCount", i64::from(s.dropped_links_count));
        if let Some(status) = &s.status {
            f.key(b"status");
            write_object(f.out, |f| {
                f.string_if_set(b"message", &status.message);
                f.number_if_set(b"code", i64::from(status.code));
            });
        }
    });
}

fn write_key_values(out: &mut Vec<u8>, kvs: &[KeyValue]) {
    write_list(out, kvs, |out, kv| {
        // `key` is required by readers, even when empty.
        out.extend_from_slice(b"{\"key\":");
        write_str(out, &kv.key);
        if let Some(v) = &kv.value {
            out.extend_from_slice(b",\"value\":");
            write_any_value(out, v);
        }
        if kv.key_strindex != 0 {
            out.extend_from_slice(b",\"keyStrindex\":");
            write_display(out, kv.key_strindex);
        }
        out.push(b'}');
    });
}

fn write_any_value(out: &mut Vec<u8>, v: &AnyValue) {
    match &v.value {
        None => out.extend_from_slice(b"{}"),
        Some(Value::StringValue(s)) => {
            out.extend_from_slice(b"{\"stringValue\":");
            write_str(out, s);
            out.push(b'}');
        }
        Some(Value::BoolValue(b)) => {
            out.extend_from_slice(if *b { b"{\"boolValue\":true}" } else { b"{\"boolValue\":false}" });
        }
        Some(Value::IntValue(i)) => {
            out.extend_from_slice(b"{\"intValue\":\"");
            write_display(out, i);
            out.extend_from_slice(b"\"}");
        }
        Some(Value::DoubleValue(d)) => {
            out.extend_from_slice(b"{\"doubleValue\":");
            // serde_json's own number form (and `null` for NaN and infinities), so a
            // double reads back exactly as the serde encoding would give it.
            write_serde(out, d);
            out.push(b'}');
        }
        Some(Value::ArrayValue(a)) => {
            out.extend_from_slice(b"{\"arrayValue\":{\"values\":");
            write_list(out, &a.values, write_any_value);
            out.extend_from_slice(b"}}");
        }
        Some(Value::KvlistValue(l)) => {
            out.extend_from_slice(b"{\"kvlistValue\":{\"values\":");
            write_key_values(out, &l.values);
            out.extend_from_slice(b"}}");
        }
        // Rare in traces: bytes (base64) and profiling string-table references keep the
        // serde form exactly.
        Some(Value::BytesValue(_) | Value::StringValueStrindex(_)) => write_serde(out, v),
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    crate::json_write::write_str(out, s);
}

fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
    out.push(b'"');
}

fn write_display(out: &mut Vec<u8>, n: impl fmt::Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// serde_json's own writer, for string escapes and number forms.
fn write_serde<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serialising plain values into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

// ---------------------------------------------------------------------------------------
// Reading

/// Decodes OTLP/JSON into the proto types, paying `meter` for every span, attribute,
/// event, link and array value before it is made; a refusal ends decoding with an error
/// and is kept in the meter.
pub(super) fn read_request_metered(
    body: &[u8],
    meter: &mut Meter,
) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    // The readers below are called by serde's derives, which pass no state along: the
    // meter waits for them in a thread-local for the length of this (synchronous) call.
    struct PutBack<'a>(&'a mut Meter);
    impl Drop for PutBack<'_> {
        fn drop(&mut self) {
            if let Some(m) = METER.take() {
                *self.0 = m;
            }
        }
    }
    METER.set(Some(std::mem::replace(meter, Meter::unlimited())));
    let _put_back = PutBack(meter);
    read_request(body)
}

thread_local! {
    static METER: RefCell<Option<Meter>> = const { RefCell::new(None) };
}

/// Pays the installed meter (none: decoding is free).
fn pay(bytes: usize, is_span: bool) -> Result<(), Exceeded> {
    METER.with_borrow_mut(|meter| match meter {
        Some(m) if is_span => m.item().and_then(|()| m.pay(bytes)),
        Some(m) => m.pay(bytes),
        None => Ok(()),
    })
}

/// A JSON array read element by element, each paid for (`cost`) before it is kept.
fn metered_vec<'de, D, W, T>(d: D, cost: usize, is_span: bool, unwrap: fn(W) -> T) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    W: Deserialize<'de>,
{
    struct V<W, T> {
        cost: usize,
        is_span: bool,
        unwrap: fn(W) -> T,
    }
    impl<'de, W: Deserialize<'de>, T> Visitor<'de> for V<W, T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(w) = seq.next_element::<W>()? {
                // The list's first allocation holds four elements.
                let first = if out.is_empty() { 2 * std::mem::size_of::<T>() } else { 0 };
                pay(self.cost + first, self.is_span).map_err(de::Error::custom)?;
                out.push((self.unwrap)(w));
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V { cost, is_span, unwrap })
}

/// Decodes OTLP/JSON into the proto types.
pub(super) fn read_request(body: &[u8]) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    // UTF-8 checked once for the whole body, not string by string; a body that is not
    // UTF-8 is read as bytes so the error says where.
    match std::str::from_utf8(body) {
        Ok(text) => read_from(serde_json::Deserializer::from_str(text)),
        Err(_) => read_from(serde_json::Deserializer::from_slice(body)),
    }
}

fn read_from<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    let req = RequestDef::deserialize(&mut de)?;
    de.end()?;
    Ok(req)
}

/// `Vec<T>` of a remote-derived type, which serde cannot compose by itself; each element
/// paid for as it is read.
macro_rules! remote_vec {
    ($name:ident, $ty:ty, $def:literal, $cost:expr) => {
        remote_vec!($name, $ty, $def, $cost, false);
    };
    ($name:ident, $ty:ty, $def:literal, $cost:expr, $is_span:expr) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<$ty>, D::Error> {
            #[derive(Deserialize)]
            struct W(#[serde(with = $def)] $ty);
            metered_vec(d, $cost, $is_span, |w: W| w.0)
        }
    };
}

/// `Option<T>` of a remote-derived type.
macro_rules! remote_opt {
    ($name:ident, $ty:ty, $def:literal) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
            #[derive(Deserialize)]
            struct W(#[serde(with = $def)] $ty);
            Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
        }
    };
}

remote_vec!(resource_spans_vec, ResourceSpans, "ResourceSpansDef", RESOURCE_SPANS_COST);
remote_opt!(resource_opt, Resource, "ResourceDef");
remote_vec!(scope_spans_vec, ScopeSpans, "ScopeSpansDef", SCOPE_SPANS_COST);
remote_opt!(scope_opt, InstrumentationScope, "ScopeDef");
remote_vec!(span_vec, Span, "SpanDef", SPAN_COST, true);
remote_vec!(event_vec, Event, "EventDef", EVENT_COST);
remote_vec!(link_vec, Link, "LinkDef", LINK_COST);
remote_vec!(key_value_vec, KeyValue, "KeyValueDef", ATTRIBUTE_COST);
remote_vec!(entity_ref_vec, EntityRef, "EntityRefDef", ENTITY_REF_COST);

fn string_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    metered_vec(d, STRING_ITEM_COST, false, |s: String| s)
}

#[derive(Deserialize)]
struct ArrayDe(#[serde(with = "ArrayValueDef")] ArrayValue);

#[derive(Deserialize)]
struct KvlistDe(#[serde(with = "KeyValueListDef")] KeyValueList);

// The field lists below repeat the proto types' serde attributes for reading:
// camelCase, every field defaulted (the types are `#[serde(default)]`) except where
// noted, ids hex, 64-bit times as strings or numbers.

#[derive(Deserialize)]
#[serde(remote = "ExportTraceServiceRequest", rename_all = "camelCase")]
struct RequestDef {
    #[serde(default, deserialize_with = "resource_spans_vec")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Deserialize)]
#[serde(remote = "ResourceSpans", rename_all = "camelCase")]
struct ResourceSpansDef {
    #[serde(default, deserialize_with = "resource_opt")]
    resource: Option<Resource>,
    #[serde(default, deserialize_with = "scope_spans_vec")]
    scope_spans: Vec<ScopeSpans>,
    #[serde(default)]
    schema_url: String,
}

#[derive(Deserialize)]
#[serde(remote = "Resource", rename_all = "camelCase")]
struct ResourceDef {
    #[serde(default, deserialize_with = "key_value_vec")]
    attributes: Vec<KeyValue>,
    #[serde(default)]
    dropped_attributes_count: u32,
    #[serde(default, deserialize_with = "entity_ref_vec")]
    entity_refs: Vec<EntityRef>,
}

/// Every field required, as in the proto type (which is not `#[serde(default)]`).
#[derive(Deserialize)]
#[serde(remote = "EntityRef", rename_all = "camelCase")]
struct EntityRefDef {
    schema_url: String,
    r#type: String,
    #[serde(deserialize_with = "string_vec")]
    id_keys: Vec<String>,
    #[serde(deserialize_with = "string_vec")]
    description_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(remote = "ScopeSpans", rename_all = "camelCase")]
struct ScopeSpansDef {
    #[serde(default, deserialize_with = "scope_opt")]
    scope: Option<InstrumentationScope>,
    #[serde(default, deserialize_with = "span_vec")]
    spans: Vec<Span>,
    #[serde(default)]
    schema_url: String,
}

#[derive(Deserialize)]
#[serde(remote = "InstrumentationScope", rename_all = "camelCase")]
struct ScopeDef {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default, deserialize_with = "key_value_vec")]
    attributes: Vec<KeyValue>,
    #[serde(default)]
    dropped_attributes_count: u32,
}

#[derive(Deserialize)]
#[serde(remote = "Span", rename_all = "camelCase")]
struct SpanDef {
    #[serde(default, deserialize_with = "hex_bytes")]
    trace_id: Vec<u8>,
    #[serde(default, deserialize_with = "hex_bytes")]
    span_id: Vec<u8>,
    #[serde(default)]
    trace_state: String,
    #[serde(default, deserialize_with = "hex_bytes")]
    parent_span_id: Vec<u8>,
    #[serde(default)]
    flags: u32,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: i32,
    #[serde(default, deserialize_with = "u64_text_or_number")]
    start_time_unix_nano: u64,
    #[serde(default, deserialize_with = "u64_text_or_number")]
    end_time_unix_nano: u64,
    #[serde(default, deserialize_with = "key_value_vec")]
    attributes: Vec<KeyValue>,
    #[serde(default)]
    dropped_attributes_count: u32,
    #[serde(default, deserialize_with = "event_vec")]
    events: Vec<Event>,
    #[serde(default)]
    dropped_events_count: u32,
    #[serde(default, deserialize_with = "link_vec")]
    links: Vec<Link>,
    #[serde(default)]
    dropped_links_count: u32,
    // Status holds no attribute, so its own derive is already direct.
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(remote = "Event", rename_all = "camelCase")]
struct EventDef {
    #[serde(default, deserialize_with = "u64_text_or_number")]
    time_unix_nano: u64,
    #[serde(default)]
    name: String,
    #[serde(default, deserialize_with = "key_value_vec")]
    attributes: Vec<KeyValue>,
    #[serde(default)]
    dropped_attributes_count: u32,
}

#[derive(Deserialize)]
#[serde(remote = "Link", rename_all = "camelCase")]
struct LinkDef {
    #[serde(default, deserialize_with = "hex_bytes")]
    trace_id: Vec<u8>,
    #[serde(default, deserialize_with = "hex_bytes")]
    span_id: Vec<u8>,
    #[serde(default)]
    trace_state: String,
    #[serde(default, deserialize_with = "key_value_vec")]
    attributes: Vec<KeyValue>,
    #[serde(default)]
    dropped_attributes_count: u32,
    #[serde(default)]
    flags: u32,
}

/// `key` is required, as in the proto type (which is not `#[serde(default)]`).
#[derive(Deserialize)]
#[serde(remote = "KeyValue", rename_all = "camelCase")]
struct KeyValueDef {
    key: String,
    #[serde(default, deserialize_with = "any_value_opt")]
    value: Option<AnyValue>,
    #[serde(default)]
    key_strindex: i32,
}

/// `values` is required, as in the proto type.
#[derive(Deserialize)]
#[serde(remote = "ArrayValue", rename_all = "camelCase")]
struct ArrayValueDef {
    #[serde(deserialize_with = "any_value_vec")]
    values: Vec<AnyValue>,
}

/// `values` is required, as in the proto type.
#[derive(Deserialize)]
#[serde(remote = "KeyValueList", rename_all = "camelCase")]
struct KeyValueListDef {
    #[serde(deserialize_with = "key_value_vec")]
    values: Vec<KeyValue>,
}

fn any_value_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AnyValue>, D::Error> {
    Ok(Option::<AnyValueDe>::deserialize(d)?.map(|v| v.0))
}

fn any_value_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AnyValue>, D::Error> {
    metered_vec(d, ARRAY_VALUE_COST, false, |v: AnyValueDe| v.0)
}

/// An attribute value read straight from its object: `{"stringValue": "..."}` and the
/// like. Same rules as the proto type's reader: the last known key wins, unknown keys
/// and `null` values are skipped, `{}` is an empty value, `intValue` is a number or a
/// string.
struct AnyValueDe(AnyValue);

impl<'de> Deserialize<'de> for AnyValueDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(AnyValueVisitor)
    }
}

struct AnyValueVisitor;

impl<'de> Visitor<'de> for AnyValueVisitor {
    type Value = AnyValueDe;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object for AnyValue")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValueDe, A::Error> {
        let mut value = None;
        while let Some(key) = map.next_key::<KeyName>()? {
            let next = match key.0.as_ref() {
                "stringValue" => map.next_value::<Option<String>>()?.map(Value::StringValue),
                "boolValue" => map.next_value::<Option<bool>>()?.map(Value::BoolValue),
                "intValue" => map.next_value::<Option<IntValue>>()?.map(|i| Value::IntValue(i.0)),
                "doubleValue" => map.next_value::<Option<f64>>()?.map(Value::DoubleValue),
                "arrayValue" => map.next_value::<Option<ArrayDe>>()?.map(|a| Value::ArrayValue(a.0)),
                "kvlistValue" => map.next_value::<Option<KvlistDe>>()?.map(|l| Value::KvlistValue(l.0)),
                "bytesValue" => match map.next_value::<Option<String>>()? {
                    // base64, decoded by the proto type's own reader so the rules match.
                    Some(b64) => {
                        let v = serde_json::from_value::<AnyValue>(serde_json::json!({ "bytesValue": b64 }))
                            .map_err(de::Error::custom)?;
                        v.value
                    }
                    None => None,
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    None
                }
            };
            if next.is_some() {
                value = next;
            }
        }
        Ok(AnyValueDe(AnyValue { value }))
    }
}

/// A map key, borrowed when the input allows.
struct KeyName<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for KeyName<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(KeyName(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(KeyName(v.to_owned().into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// `intValue`: a number, or a string holding one.
struct IntValue(i64);

impl<'de> Deserialize<'de> for IntValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string holding one")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntValue, E> {
                Ok(IntValue(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntValue, E> {
                i64::try_from(v).map(IntValue).map_err(|_| E::custom(format!("{v} is out of range for intValue")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntValue, E> {
                v.parse().map(IntValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Hex ids: `"4bf92f35…"`, an optional `0x`, either case.
fn hex_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string representing hex-encoded bytes")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            let digits = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")).unwrap_or(v);
            hex::decode(digits).map_err(E::custom)
        }
    }
    d.deserialize_str(V)
}

/// 64-bit times: a string of digits, or a non-negative number.
fn u64_text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a u64 integer or a string containing a u64 integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("i64 value {v} is out of range for u64")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}
