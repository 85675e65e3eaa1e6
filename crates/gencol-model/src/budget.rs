//! What a request may cost in memory, paid before it is spent.
//!
//! A receiver holds a request's body, its decompressed form and what decoding makes of
//! it, all at once. A hostile sender can make each of these far larger than what gencol
//! keeps: a 10 MiB body of empty spans decodes into millions of structs, a small gzip
//! body expands a thousandfold. So every byte a request will hold is taken from one
//! process-wide [`MemoryBudget`] first, through the request's [`Charge`]; decoders pay
//! through a [`Meter`], which also counts the spans or records a request may hold. What
//! cannot be paid for is refused ([`Exceeded`]) before it is allocated.
//!
//! The costs are upper bounds of what each decoded element occupies, not its encoded
//! size: an element sits in a `Vec` that may have grown to twice what it needs, so its
//! struct is counted twice, plus the small heap parts (ids, keys) it usually brings.
//! Decoded text (strings, ids, content) is not paid for element by element: it is never
//! longer than the decompressed body it was read from, which is paid for as a whole.

use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::Value;

use crate::span::{GenerationContext, Origin, SpanItem};

/// Heap bytes the short strings of one element (a key, a name, an id) may take beyond
/// their length: a non-empty string or byte string holds at least 8 bytes.
const SMALL_ALLOCATION: usize = 48;

/// One element of type `T` in a `Vec`: twice its size (the `Vec` may have doubled past
/// it) and its short strings.
pub(crate) const fn slot<T>() -> usize {
    2 * size_of::<T>() + SMALL_ALLOCATION
}

/// What the first element of a list costs beyond [`slot`]: a `Vec`'s first allocation
/// holds four elements, two more than the doubling bound counts.
pub(crate) const fn first_slot<T>() -> usize {
    2 * size_of::<T>()
}

/// One decoded OTLP span: the span in its request, and the [`SpanItem`] it becomes, both
/// alive while the request is turned into items.
pub const SPAN_COST: usize = slot::<Span>() + slot::<SpanItem>();
/// One attribute (key-value pair), wherever it is.
pub const ATTRIBUTE_COST: usize = slot::<KeyValue>();
/// One value of an attribute array.
pub const ARRAY_VALUE_COST: usize = slot::<AnyValue>();
pub(crate) const EVENT_COST: usize = slot::<Event>();
/// The extra cost of the first span, attribute, ... of a list (see [`first_slot`]).
pub(crate) const FIRST_SPAN: usize = first_slot::<Span>();
pub(crate) const FIRST_ATTRIBUTE: usize = first_slot::<KeyValue>();
pub(crate) const FIRST_ARRAY_VALUE: usize = first_slot::<AnyValue>();
pub(crate) const FIRST_EVENT: usize = first_slot::<Event>();
pub(crate) const FIRST_LINK: usize = first_slot::<Link>();
pub(crate) const FIRST_RESOURCE_SPANS: usize = first_slot::<ResourceSpans>();
pub(crate) const FIRST_SCOPE_SPANS: usize = first_slot::<ScopeSpans>();
pub(crate) const FIRST_ENTITY_REF: usize = first_slot::<EntityRef>();
pub(crate) const FIRST_STRING_ITEM: usize = first_slot::<String>();
/// The list of items one request becomes: its first allocation, paid once.
pub(crate) const FIRST_SPAN_ITEM: usize = first_slot::<SpanItem>();
pub(crate) const LINK_COST: usize = slot::<Link>();
pub(crate) const RESOURCE_SPANS_COST: usize = slot::<ResourceSpans>();
pub(crate) const SCOPE_SPANS_COST: usize = slot::<ScopeSpans>();
pub(crate) const ENTITY_REF_COST: usize = slot::<EntityRef>();
pub(crate) const STRING_ITEM_COST: usize = slot::<String>();

/// Why a request was refused before it was decoded in full.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Exceeded {
    /// More spans or records than one request may hold: the sender should split it.
    #[error("the request holds more than {limit} {what} ({setting}): send smaller batches")]
    Items { what: &'static str, limit: usize, setting: &'static str },
    /// The request alone needs more memory than all requests together may hold.
    #[error(
        "the request needs more than {limit} bytes of memory to receive and decode, more than all requests together \
         may hold (service.limits.max_inflight_memory): send smaller batches"
    )]
    TooLarge { limit: usize },
    /// The requests in flight hold all of the budget now; retrying later will work.
    #[error("gencol is receiving as many request bytes as it allows (service.limits.max_inflight_memory): retry later")]
    Busy,
}

/// The bytes that requests in flight may hold at once, shared by every receiver of the
/// process (`service.limits.max_inflight_memory`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct MemoryBudget(Arc<BudgetInner>);

#[derive(Debug)]
struct BudgetInner {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        MemoryBudget(Arc::new(BudgetInner { limit, used: AtomicUsize::new(0) }))
    }

    /// A budget that never refuses, for decoding outside a receiver (tests, benchmarks).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Bytes held by requests right now.
    pub fn in_use(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, bytes: usize) -> bool {
        let limit = self.0.limit;
        self.0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.0.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The bytes one request holds of a [`MemoryBudget`]; all given back when it is dropped.
#[derive(Debug)]
pub struct Charge {
    budget: MemoryBudget,
    held: usize,
}

impl Charge {
    pub fn new(budget: &MemoryBudget) -> Self {
        Charge { budget: budget.clone(), held: 0 }
    }

    /// Takes `bytes` more, or says why not: [`Exceeded::TooLarge`] when the request would
    /// hold more than the whole budget, [`Exceeded::Busy`] when others hold the rest.
    pub fn take(&mut self, bytes: usize) -> Result<(), Exceeded> {
        let wanted = self.held.saturating_add(bytes);
        if wanted > self.budget.limit() {
            return Err(Exceeded::TooLarge { limit: self.budget.limit() });
        }
        if !self.budget.try_take(bytes) {
            return Err(Exceeded::Busy);
        }
        self.held = wanted;
        Ok(())
    }

    /// Gives back bytes no longer held (at most what is held).
    pub fn give_back(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.budget.give_back(bytes);
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

/// Pays for decoding one request: counts its spans or records against a maximum and
/// takes the memory of what is decoded from the request's [`Charge`]. Remembers the
/// first refusal, so a decoder whose errors become text (serde) still tells why.
#[derive(Debug)]
pub struct Meter {
    charge: Charge,
    /// Taken from the budget but not yet spent: the budget is shared by every thread,
    /// so it is taken from in steps of [`Meter::STEP`], not element by element.
    credit: usize,
    items: usize,
    max_items: usize,
    what: &'static str,
    setting: &'static str,
    exceeded: Option<Exceeded>,
}

impl Meter {
    const STEP: usize = 64 * 1024;

    /// A meter allowing `max_items` items, named `what` (`spans`) after the `setting`
    /// that sets the maximum (`max_spans_per_request`) so a refusal says what to change.
    pub fn new(charge: Charge, max_items: usize, what: &'static str, setting: &'static str) -> Self {
        Meter { charge, credit: 0, items: 0, max_items, what, setting, exceeded: None }
    }

    /// No maximum and an unlimited budget.
    pub fn unlimited() -> Self {
        Self::new(Charge::new(&MemoryBudget::unlimited()), usize::MAX, "items", "none")
    }

    /// Counts one more item.
    pub fn item(&mut self) -> Result<(), Exceeded> {
        self.items += 1;
        if self.items > self.max_items {
            return Err(self.refuse(Exceeded::Items { what: self.what, limit: self.max_items, setting: self.setting }));
        }
        Ok(())
    }

    /// Pays for `bytes` about to be allocated.
    pub fn pay(&mut self, bytes: usize) -> Result<(), Exceeded> {
        if let Some(e) = &self.exceeded {
            return Err(e.clone());
        }
        if bytes <= self.credit {
            self.credit -= bytes;
            return Ok(());
        }
        let missing = bytes - self.credit;
        // A full step when there is room for it; otherwise exactly what is missing, so
        // the last bytes of the budget can still be used.
        let step = missing.max(Self::STEP);
        let taken = match self.charge.take(step) {
            Ok(()) => step,
            Err(_) => match self.charge.take(missing) {
                Ok(()) => missing,
                Err(e) => return Err(self.refuse(e)),
            },
        };
        self.credit = self.credit + taken - bytes;
        Ok(())
    }

    /// Gives back `bytes` paid for earlier and freed since (a record's transient parse).
    pub fn refund(&mut self, bytes: usize) {
        self.credit += bytes;
        if self.credit > Self::STEP {
            let extra = self.credit - Self::STEP;
            self.charge.give_back(extra);
            self.credit = Self::STEP;
        }
    }

    /// Items counted so far.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Bytes paid for and still held (credit not yet spent excluded).
    pub fn spent(&self) -> usize {
        self.charge.held() - self.credit
    }

    /// The first refusal, if any.
    pub fn exceeded(&self) -> Option<&Exceeded> {
        self.exceeded.as_ref()
    }

    /// The request's charge, for the receiver to hold until it lets go of what was decoded.
    pub fn into_charge(self) -> Charge {
        self.charge
    }

    fn refuse(&mut self, e: Exceeded) -> Exceeded {
        self.exceeded.get_or_insert(e).clone()
    }
}

/// What values occupy in memory: their struct and the heap they own, by capacity. Used
/// to pay for what is built from a record (its exact size is known once built), and by
/// tests to check that what a decoder paid for covers what it made.
pub mod size {
    use super::*;

    /// A span item, as it sits in a `Vec`: its slot, the span's heap and its generation
    /// context (the shared [`Origin`] is counted once per request, see [`origin`]).
    pub fn span_item(item: &SpanItem) -> usize {
        slot::<SpanItem>() + span(&item.span) + item.generation.as_deref().map_or(0, generation_context)
    }

    /// The heap a span owns.
    pub fn span(s: &Span) -> usize {
        s.trace_id.capacity()
            + s.span_id.capacity()
            + s.parent_span_id.capacity()
            + s.trace_state.capacity()
            + s.name.capacity()
            + key_values(&s.attributes)
            + vec_slots(&s.events)
            + s.events.iter().map(|e| e.name.capacity() + key_values(&e.attributes)).sum::<usize>()
            + vec_slots(&s.links)
            + s.links
                .iter()
                .map(|l| {
                    l.trace_id.capacity() + l.span_id.capacity() + l.trace_state.capacity() + key_values(&l.attributes)
                })
                .sum::<usize>()
            + s.status.as_ref().map_or(0, |st| st.message.capacity())
    }

    /// An origin behind its `Arc`.
    pub fn origin(o: &Origin) -> usize {
        size_of::<Origin>()
            + SMALL_ALLOCATION
            + resource(&o.resource)
            + scope(&o.scope)
            + o.resource_schema_url.capacity()
            + o.scope_schema_url.capacity()
    }

    /// The heap a resource owns.
    pub fn resource(r: &Resource) -> usize {
        key_values(&r.attributes)
            + vec_slots(&r.entity_refs)
            + r.entity_refs
                .iter()
                .map(|e| {
                    e.schema_url.capacity() + e.r#type.capacity() + strings(&e.id_keys) + strings(&e.description_keys)
                })
                .sum::<usize>()
    }

    /// The heap a scope owns.
    pub fn scope(s: &InstrumentationScope) -> usize {
        s.name.capacity() + s.version.capacity() + key_values(&s.attributes)
    }

    /// The heap a decoded request owns.
    pub fn request(r: &ExportTraceServiceRequest) -> usize {
        vec_slots(&r.resource_spans)
            + r.resource_spans
                .iter()
                .map(|rs| {
                    rs.resource.as_ref().map_or(0, resource)
                        + rs.schema_url.capacity()
                        + vec_slots(&rs.scope_spans)
                        + rs.scope_spans
                            .iter()
                            .map(|ss| {
                                ss.scope.as_ref().map_or(0, scope)
                                    + ss.schema_url.capacity()
                                    + vec_slots(&ss.spans)
                                    + ss.spans.iter().map(span).sum::<usize>()
                            })
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    /// The heap a list of attributes owns.
    pub fn key_values(kvs: &Vec<KeyValue>) -> usize {
        vec_slots(kvs) + kvs.iter().map(|kv| kv.key.capacity() + kv.value.as_ref().map_or(0, any_value)).sum::<usize>()
    }

    /// The heap an attribute value owns.
    pub fn any_value(v: &AnyValue) -> usize {
        match &v.value {
            Some(any_value::Value::StringValue(s)) => s.capacity(),
            Some(any_value::Value::BytesValue(b)) => b.capacity(),
            Some(any_value::Value::ArrayValue(a)) => {
                vec_slots(&a.values) + a.values.iter().map(any_value).sum::<usize>()
            }
            Some(any_value::Value::KvlistValue(l)) => key_values(&l.values),
            _ => 0,
        }
    }

    /// The heap a JSON value owns. A map counts a B-tree leaf per 11 entries (serde_json
    /// keeps objects in a `BTreeMap`), which is what makes small objects expensive.
    pub fn json_value(v: &Value) -> usize {
        match v {
            Value::String(s) => s.capacity(),
            Value::Array(items) => vec_slots(items) + items.iter().map(json_value).sum::<usize>(),
            Value::Object(map) => {
                let leaves = map.len().div_ceil(11).max(usize::from(!map.is_empty()));
                leaves * BTREE_LEAF + map.iter().map(|(k, v)| k.capacity() + json_value(v)).sum::<usize>()
            }
            _ => 0,
        }
    }

    /// A B-tree node of serde_json's map: 11 keys and values, and its bookkeeping.
    const BTREE_LEAF: usize = 11 * (size_of::<String>() + size_of::<Value>()) + 64;

    fn generation_context(c: &GenerationContext) -> usize {
        size_of::<GenerationContext>()
            + SMALL_ALLOCATION
            + c.generation_id.capacity()
            + [&c.trace_id_raw, &c.trace_name, &c.span_name, &c.user, &c.session_id]
                .into_iter()
                .map(|s| s.as_ref().map_or(0, String::capacity))
                .sum::<usize>()
            + vec_slots(&c.metadata)
            + c.metadata.iter().map(|(k, v)| k.capacity() + json_value(v)).sum::<usize>()
    }

    fn strings(v: &Vec<String>) -> usize {
        vec_slots(v) + v.iter().map(String::capacity).sum::<usize>()
    }

    fn vec_slots<T>(v: &Vec<T>) -> usize {
        v.capacity() * size_of::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_holds_its_bytes_until_dropped() {
        let budget = MemoryBudget::new(1000);
        let mut a = Charge::new(&budget);
        a.take(600).expect("fits");
        let mut b = Charge::new(&budget);
        assert_eq!(b.take(500), Err(Exceeded::Busy));
        assert_eq!(b.take(1001), Err(Exceeded::TooLarge { limit: 1000 }));
        b.take(400).expect("the rest fits");
        assert_eq!(budget.in_use(), 1000);
        a.give_back(100);
        assert_eq!(budget.in_use(), 900);
        drop(a);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_meter_counts_items_and_pays_in_steps() {
        let budget = MemoryBudget::new(10 * Meter::STEP);
        let mut meter = Meter::new(Charge::new(&budget), 2, "spans", "max_spans_per_request");
        meter.item().expect("one");
        meter.item().expect("two");
        let e = meter.item().expect_err("three is too many");
        assert_eq!(e, Exceeded::Items { what: "spans", limit: 2, setting: "max_spans_per_request" });
        assert!(e.to_string().contains("more than 2 spans (max_spans_per_request)"), "{e}");

        let mut meter = Meter::new(Charge::new(&budget), 10, "spans", "max_spans_per_request");
        meter.pay(10).expect("small");
        assert_eq!(budget.in_use(), Meter::STEP, "one step taken");
        assert_eq!(meter.spent(), 10);
        // Another request holds all but the last few bytes: they can still be paid for.
        let mut other = Charge::new(&budget);
        other.take(9 * Meter::STEP - 5).expect("fits");
        meter.pay(Meter::STEP - 10 + 5).expect("the last bytes");
        assert_eq!(meter.pay(1), Err(Exceeded::Busy));
        assert_eq!(meter.exceeded(), Some(&Exceeded::Busy));
        assert_eq!(meter.pay(11 * Meter::STEP), Err(Exceeded::Busy), "the first refusal sticks");
        drop(other);
        meter.refund(meter.spent());
        assert_eq!(meter.spent(), 0);
        assert!(budget.in_use() <= Meter::STEP, "what is refunded beyond one step goes back");
        drop(meter);
        assert_eq!(budget.in_use(), 0);
    }
}
