//! The form a batch of [`SpanItem`]s takes at rest (in a disk queue record, in the
//! `hierarchy` journal): protobuf, so it reuses the OTLP messages as they are and stays
//! readable by later versions (unknown fields are skipped, missing ones default).
//!
//! A batch keeps what exporters need after the processors ran: each span, the resource
//! and scope it was reported under (stored once per distinct origin, so spans that shared
//! an `Arc<Origin>` share one again after reading), and the generation context that event
//! exporters (Raindrop) read. Custom metadata values are stored as JSON text.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::span::{GenerationContext, Origin, SpanItem};

/// Version of the stored form; a reader refuses a batch written by a newer, incompatible one.
const STORED_VERSION: u32 = 1;

#[derive(Clone, PartialEq, Message)]
struct StoredBatch {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, repeated, tag = "2")]
    origins: Vec<StoredOrigin>,
    #[prost(message, repeated, tag = "3")]
    items: Vec<StoredItem>,
}

#[derive(Clone, PartialEq, Message)]
struct StoredOrigin {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(string, tag = "2")]
    resource_schema_url: String,
    #[prost(message, optional, tag = "3")]
    scope: Option<InstrumentationScope>,
    #[prost(string, tag = "4")]
    scope_schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
struct StoredItem {
    #[prost(uint32, tag = "1")]
    origin: u32,
    #[prost(message, optional, tag = "2")]
    span: Option<Span>,
    #[prost(message, optional, tag = "3")]
    generation: Option<StoredGeneration>,
}

#[derive(Clone, PartialEq, Message)]
struct StoredGeneration {
    #[prost(string, tag = "1")]
    generation_id: String,
    #[prost(string, optional, tag = "2")]
    trace_id_raw: Option<String>,
    #[prost(string, optional, tag = "3")]
    trace_name: Option<String>,
    #[prost(string, optional, tag = "4")]
    span_name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    parent_span_id: Option<Vec<u8>>,
    #[prost(string, optional, tag = "6")]
    user: Option<String>,
    #[prost(string, optional, tag = "7")]
    session_id: Option<String>,
    #[prost(message, repeated, tag = "8")]
    metadata: Vec<StoredMetadata>,
}

#[derive(Clone, PartialEq, Message)]
struct StoredMetadata {
    #[prost(string, tag = "1")]
    key: String,
    /// The value as JSON text.
    #[prost(string, tag = "2")]
    json: String,
}

/// Why stored bytes could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error("not a stored span batch: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stored span batch of version {0}, newer than this gencol reads ({STORED_VERSION}): upgrade gencol")]
    Version(u32),
    #[error("stored span batch is inconsistent: {0}")]
    Invalid(&'static str),
}

/// Encodes a batch, appending to `out`. Written field by field, so the spans (several KiB
/// of content each) are encoded from where they are instead of being cloned into a
/// `StoredItem` first; the bytes are what `StoredBatch` would encode.
pub fn encode_batch(items: &[SpanItem], out: &mut Vec<u8>) {
    encode_items(items.iter(), out);
}

/// [`encode_batch`] for items that are not side by side (a batch's spans of one partition,
/// say); the bytes are the same as for a slice of them.
pub fn encode_items<'a, I>(items: I, out: &mut Vec<u8>)
where
    I: Iterator<Item = &'a SpanItem> + Clone,
{
    use prost::encoding::{WireType, encode_key, encode_varint, message, uint32};

    let mut origins: Vec<&Arc<Origin>> = Vec::new();
    let mut indexes = Vec::with_capacity(items.size_hint().0);
    for item in items.clone() {
        // Batches hold one or a few origins: a linear search by pointer is the cheap way.
        let index = match origins.iter().position(|o| Arc::ptr_eq(o, &item.origin)) {
            Some(i) => i,
            None => {
                origins.push(&item.origin);
                origins.len() - 1
            }
        };
        indexes.push(index as u32);
    }
    uint32::encode(1, &STORED_VERSION, out);
    for o in origins {
        let origin = StoredOrigin {
            resource: Some(o.resource.clone()),
            resource_schema_url: o.resource_schema_url.clone(),
            scope: Some(o.scope.clone()),
            scope_schema_url: o.scope_schema_url.clone(),
        };
        message::encode(2, &origin, out);
    }
    for (item, index) in items.zip(indexes) {
        let generation = item.generation.as_deref().map(store_generation);
        let len = if index == 0 { 0 } else { uint32::encoded_len(1, &index) }
            + message::encoded_len(2, &item.span)
            + generation.as_ref().map_or(0, |g| message::encoded_len(3, g));
        encode_key(3, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        if index != 0 {
            uint32::encode(1, &index, out);
        }
        message::encode(2, &item.span, out);
        if let Some(g) = &generation {
            message::encode(3, g, out);
        }
    }
}

/// Decodes what [`encode_batch`] wrote.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<SpanItem>, StoredError> {
    let batch = StoredBatch::decode(bytes)?;
    if batch.version > STORED_VERSION {
        return Err(StoredError::Version(batch.version));
    }
    let origins: Vec<Arc<Origin>> = batch
        .origins
        .into_iter()
        .map(|o| {
            Arc::new(Origin {
                resource: o.resource.unwrap_or_default(),
                resource_schema_url: o.resource_schema_url,
                scope: o.scope.unwrap_or_default(),
                scope_schema_url: o.scope_schema_url,
            })
        })
        .collect();
    batch
        .items
        .into_iter()
        .map(|item| {
            let origin = origins.get(item.origin as usize).ok_or(StoredError::Invalid("origin index out of range"))?;
            Ok(SpanItem {
                origin: origin.clone(),
                span: item.span.unwrap_or_default(),
                generation: item.generation.map(load_generation).transpose()?.map(Arc::new),
            })
        })
        .collect()
}

fn store_generation(g: &GenerationContext) -> StoredGeneration {
    StoredGeneration {
        generation_id: g.generation_id.clone(),
        trace_id_raw: g.trace_id_raw.clone(),
        trace_name: g.trace_name.clone(),
        span_name: g.span_name.clone(),
        parent_span_id: g.parent_span_id.map(|p| p.to_vec()),
        user: g.user.clone(),
        session_id: g.session_id.clone(),
        metadata: g.metadata.iter().map(|(k, v)| StoredMetadata { key: k.clone(), json: v.to_string() }).collect(),
    }
}

fn load_generation(g: StoredGeneration) -> Result<GenerationContext, StoredError> {
    let parent_span_id = match g.parent_span_id {
        Some(p) => Some(<[u8; 8]>::try_from(p.as_slice()).map_err(|_| StoredError::Invalid("parent span id length"))?),
        None => None,
    };
    let metadata = g
        .metadata
        .into_iter()
        .map(|m| {
            let value =
                serde_json::from_str(&m.json).map_err(|_| StoredError::Invalid("metadata value is not JSON"))?;
            Ok((m.key, value))
        })
        .collect::<Result<_, StoredError>>()?;
    Ok(GenerationContext {
        generation_id: g.generation_id,
        trace_id_raw: g.trace_id_raw,
        trace_name: g.trace_name,
        span_name: g.span_name,
        parent_span_id,
        user: g.user,
        session_id: g.session_id,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes;

    fn item(origin: &Arc<Origin>, name: &str, generation: Option<GenerationContext>) -> SpanItem {
        let span = Span {
            trace_id: vec![7; 16],
            span_id: vec![9; 8],
            name: name.into(),
            attributes: vec![attributes::string("gen_ai.request.model", "openai/gpt-4o")],
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        };
        SpanItem { origin: origin.clone(), span, generation: generation.map(Arc::new) }
    }

    #[test]
    fn a_batch_reads_back_as_written_with_shared_origins_shared_again() {
        let a = Arc::new(Origin { resource: crate::service_resource("a"), ..Default::default() });
        let b = Arc::new(Origin { scope: crate::scope(), scope_schema_url: "s".into(), ..Default::default() });
        let context = GenerationContext {
            generation_id: "gen-1".into(),
            trace_id_raw: Some("t".into()),
            trace_name: Some("root".into()),
            span_name: None,
            parent_span_id: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            user: Some("u".into()),
            session_id: Some("s".into()),
            metadata: vec![("feature".into(), serde_json::json!({"a": [1, "x"]})), ("n".into(), 3.into())],
        };
        let items = vec![item(&a, "one", Some(context)), item(&b, "two", None), item(&a, "three", None)];
        let mut bytes = Vec::new();
        encode_batch(&items, &mut bytes);
        let back = decode_batch(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        for (x, y) in items.iter().zip(&back) {
            assert_eq!(x.span, y.span);
            assert_eq!(x.origin, y.origin);
            assert_eq!(x.generation, y.generation);
        }
        assert!(Arc::ptr_eq(&back[0].origin, &back[2].origin));
        assert!(!Arc::ptr_eq(&back[0].origin, &back[1].origin));
    }

    #[test]
    fn the_hand_written_encoding_is_the_derived_one() {
        let a = Arc::new(Origin { resource: crate::service_resource("a"), ..Default::default() });
        let b = Arc::new(Origin::default());
        let context = GenerationContext { generation_id: "g".into(), user: Some("u".into()), ..Default::default() };
        let items = vec![item(&a, "one", Some(context.clone())), item(&b, "two", None), item(&a, "three", None)];
        let mut fast = Vec::new();
        encode_batch(&items, &mut fast);
        let derived = StoredBatch {
            version: STORED_VERSION,
            origins: [&a, &b]
                .iter()
                .map(|o| StoredOrigin {
                    resource: Some(o.resource.clone()),
                    resource_schema_url: String::new(),
                    scope: Some(o.scope.clone()),
                    scope_schema_url: String::new(),
                })
                .collect(),
            items: vec![
                StoredItem {
                    origin: 0,
                    span: Some(items[0].span.clone()),
                    generation: Some(store_generation(&context)),
                },
                StoredItem { origin: 1, span: Some(items[1].span.clone()), generation: None },
                StoredItem { origin: 0, span: Some(items[2].span.clone()), generation: None },
            ],
        };
        assert_eq!(fast, derived.encode_to_vec());
    }

    #[test]
    fn garbage_and_newer_versions_are_errors_not_panics() {
        assert!(decode_batch(&[0xff, 0xff, 0xff]).is_err());
        let newer = StoredBatch { version: STORED_VERSION + 1, ..Default::default() };
        assert!(matches!(decode_batch(&newer.encode_to_vec()), Err(StoredError::Version(_))));
        let bad_origin =
            StoredBatch { version: 1, origins: vec![], items: vec![StoredItem { origin: 3, ..Default::default() }] };
        assert!(matches!(decode_batch(&bad_origin.encode_to_vec()), Err(StoredError::Invalid(_))));
    }
}
