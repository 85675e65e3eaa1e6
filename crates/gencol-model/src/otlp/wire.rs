//! Paying for an OTLP/protobuf request before prost decodes it.
//!
//! prost decodes a whole message at once and cannot be stopped half way, and protobuf
//! packs elements tightly: an empty span is 2 bytes on the wire and about 0.5 KiB in
//! memory, so a 10 MiB body could decode into gigabytes. This walk reads the wire format
//! without keeping anything, finds every span, attribute, event, link and array value the
//! request holds, and pays for each ([`crate::budget`]) before prost runs.
//!
//! Only the parts prost reads the same way are followed; where the bytes stop making
//! sense the walk stops too, having paid for everything before that point, which is all
//! prost can decode before it reports the same error.

use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use crate::budget::{
    ARRAY_VALUE_COST, ATTRIBUTE_COST, ENTITY_REF_COST, EVENT_COST, Exceeded, FIRST_ARRAY_VALUE, FIRST_ATTRIBUTE,
    FIRST_ENTITY_REF, FIRST_EVENT, FIRST_LINK, FIRST_RESOURCE_SPANS, FIRST_SCOPE_SPANS, FIRST_SPAN, FIRST_STRING_ITEM,
    LINK_COST, Meter, RESOURCE_SPANS_COST, SCOPE_SPANS_COST, SPAN_COST, STRING_ITEM_COST,
};

/// The messages of an export request that hold repeated elements.
#[derive(Clone, Copy)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    EntityRef,
}

/// What a length-delimited field of a message is.
enum Field {
    /// A nested message: what each one costs, what the first of its list costs on top
    /// (both 0 when it is held inline, not in a `Vec`), and whether it is a span
    /// (counted against the maximum).
    Message(Msg, usize, usize, bool),
    /// An element of a repeated string field.
    StringItem,
    /// Text or bytes held inline: no element to pay for.
    Other,
}

fn field(msg: Msg, tag: u32) -> Field {
    use Field::{Message, Other, StringItem};
    match (msg, tag) {
        (Msg::Request, 1) => Message(Msg::ResourceSpans, RESOURCE_SPANS_COST, FIRST_RESOURCE_SPANS, false),
        (Msg::ResourceSpans, 1) => Message(Msg::Resource, 0, 0, false),
        (Msg::ResourceSpans, 2) => Message(Msg::ScopeSpans, SCOPE_SPANS_COST, FIRST_SCOPE_SPANS, false),
        (Msg::Resource, 1) | (Msg::Scope, 3) | (Msg::Span, 9) | (Msg::Event, 3) | (Msg::Link, 4) => {
            Message(Msg::KeyValue, ATTRIBUTE_COST, FIRST_ATTRIBUTE, false)
        }
        (Msg::Resource, 3) => Message(Msg::EntityRef, ENTITY_REF_COST, FIRST_ENTITY_REF, false),
        (Msg::ScopeSpans, 1) => Message(Msg::Scope, 0, 0, false),
        (Msg::ScopeSpans, 2) => Message(Msg::Span, SPAN_COST, FIRST_SPAN, true),
        (Msg::Span, 11) => Message(Msg::Event, EVENT_COST, FIRST_EVENT, false),
        (Msg::Span, 13) => Message(Msg::Link, LINK_COST, FIRST_LINK, false),
        (Msg::KeyValue, 2) => Message(Msg::AnyValue, 0, 0, false),
        (Msg::AnyValue, 5) => Message(Msg::ArrayValue, 0, 0, false),
        (Msg::AnyValue, 6) => Message(Msg::KeyValueList, 0, 0, false),
        (Msg::ArrayValue, 1) => Message(Msg::AnyValue, ARRAY_VALUE_COST, FIRST_ARRAY_VALUE, false),
        (Msg::KeyValueList, 1) => Message(Msg::KeyValue, ATTRIBUTE_COST, FIRST_ATTRIBUTE, false),
        (Msg::EntityRef, 3 | 4) => StringItem,
        _ => Other,
    }
}

/// Deeper than prost's own recursion limit (100), so prost refuses a request before the
/// walk would stop following it.
const MAX_DEPTH: usize = 128;

/// Pays `meter` for every element of the request in `body`. `Err` only when the meter
/// refuses; a body that is not valid protobuf is left for prost to report.
pub(super) fn pay_for_request(body: &[u8], meter: &mut Meter) -> Result<(), Exceeded> {
    let mut buf = body;
    match walk(&mut buf, Msg::Request, meter, 0) {
        Ok(()) | Err(Stop::Malformed) => Ok(()),
        Err(Stop::Refused(e)) => Err(e),
    }
}

enum Stop {
    Malformed,
    Refused(Exceeded),
}

/// Walks the fields of one message, `buf` holding exactly its bytes.
fn walk(buf: &mut &[u8], msg: Msg, meter: &mut Meter, depth: usize) -> Result<(), Stop> {
    if depth > MAX_DEPTH {
        return Err(Stop::Malformed);
    }
    // The repeated fields of this message met so far: each list's first element costs more.
    let mut lists_started = 0u32;
    let mut first_of_list = |tag: u32| {
        let bit = 1u32.checked_shl(tag).unwrap_or(0);
        let first = lists_started & bit == 0;
        lists_started |= bit;
        first
    };
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(buf).map_err(|_| Stop::Malformed)?;
        match wire_type {
            WireType::LengthDelimited => {
                let len = decode_varint(buf).map_err(|_| Stop::Malformed)?;
                let len = usize::try_from(len).ok().filter(|l| *l <= buf.len()).ok_or(Stop::Malformed)?;
                let (mut inner, rest) = buf.split_at(len);
                *buf = rest;
                match field(msg, tag) {
                    Field::Message(child, cost, first, is_span) => {
                        if is_span {
                            meter.item().map_err(Stop::Refused)?;
                        }
                        let first = if cost > 0 && first_of_list(tag) { first } else { 0 };
                        meter.pay(cost + first).map_err(Stop::Refused)?;
                        walk(&mut inner, child, meter, depth + 1)?;
                    }
                    Field::StringItem => {
                        let first = if first_of_list(tag) { FIRST_STRING_ITEM } else { 0 };
                        meter.pay(STRING_ITEM_COST + first).map_err(Stop::Refused)?;
                    }
                    Field::Other => {}
                }
            }
            // Scalars, and (deprecated) groups skipped as prost skips an unknown field:
            // nothing in them is kept, so nothing is charged.
            other => skip_field(other, tag, buf, DecodeContext::default()).map_err(|_| Stop::Malformed)?,
        }
    }
    Ok(())
}
