//! What a message on the stream holds, and which partition it goes to.
//!
//! A message is a batch of span items in gencol's stored form (`gencol_model::stored`,
//! the disk queue's record format: each OTLP span with its resource and scope, and the
//! generation context `hierarchy` and `namespace` read), with two headers:
//!
//! | header | value |
//! |---|---|
//! | `Gencol-Wire` | `stored-batch/1`: the form and its version; a receiver refuses a newer one |
//! | `Nats-Msg-Id` | 32 hex digits of the payload's SHA-256: JetStream drops a copy published again within its duplicate window (a retried batch) |
//!
//! All spans of a message belong to one trace and go to its partition's subject,
//! `partition(trace id)`, so every record of a trace is with one processing instance, and
//! that instance can acknowledge a trace's messages together.

use bytes::Bytes;
use gencol_model::SpanItem;
use gencol_model::stored::{StoredError, decode_batch, encode_items};
use sha2::{Digest, Sha256};

/// The header naming the payload's form.
pub const WIRE_HEADER: &str = "Gencol-Wire";

/// This version's form.
pub const WIRE_FORM: &str = "stored-batch/1";

/// The partition of a trace: its id's first 8 bytes, big-endian, modulo `partitions`.
/// Trace ids are random or hashes (SPEC §3), so this spreads traces evenly; a span with
/// no trace id goes to partition 0.
pub fn partition(trace_id: &[u8], partitions: u32) -> u32 {
    let Some(first) = trace_id.first_chunk::<8>() else { return 0 };
    (u64::from_be_bytes(*first) % u64::from(partitions.max(1))) as u32
}

/// One message's payload and its `Nats-Msg-Id`.
pub struct Encoded {
    pub payload: Bytes,
    pub msg_id: String,
}

/// Encodes `items` (all of one partition).
pub fn encode<'a, I>(items: I) -> Encoded
where
    I: Iterator<Item = &'a SpanItem> + Clone,
{
    let mut out = Vec::new();
    encode_items(items, &mut out);
    let digest = Sha256::digest(&out);
    Encoded { msg_id: hex::encode(&digest[..16]), payload: Bytes::from(out) }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message in form `{0}`, which this gencol does not read (it reads {WIRE_FORM}): upgrade gencol")]
    Form(String),
    #[error(transparent)]
    Stored(#[from] StoredError),
}

/// Decodes a message's payload, given its `Gencol-Wire` header.
pub fn decode(form: Option<&str>, payload: &[u8]) -> Result<Vec<SpanItem>, WireError> {
    match form {
        Some(WIRE_FORM) | None => Ok(decode_batch(payload)?),
        Some(other) => Err(WireError::Form(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gencol_model::Origin;
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    fn item(trace: u8) -> SpanItem {
        SpanItem {
            origin: Arc::new(Origin::default()),
            span: Span { trace_id: vec![trace; 16], span_id: vec![1; 8], name: "chat".into(), ..Default::default() },
            generation: None,
        }
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition(&[0, 0, 0, 0, 0, 0, 0, 5, 9, 9], 4), 1);
        assert_eq!(partition(&[], 4), 0);
        let mut counts = [0usize; 8];
        for t in 0..=255u8 {
            let id: Vec<u8> = (0..16).map(|i| t.wrapping_mul(31).wrapping_add(i * 7)).collect();
            counts[partition(&id, 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 0), "{counts:?}");
    }

    #[test]
    fn a_batch_round_trips_with_a_content_id() {
        let items = [item(1), item(2)];
        let a = encode(items.iter());
        let b = encode(items.iter());
        assert_eq!(a.msg_id, b.msg_id, "the same batch, the same id");
        assert_eq!(a.msg_id.len(), 32);
        assert_ne!(encode(items[..1].iter()).msg_id, a.msg_id);
        let back = decode(Some(WIRE_FORM), &a.payload).expect("decoded");
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].span, items[1].span);
        assert!(matches!(decode(Some("stored-batch/9"), &a.payload), Err(WireError::Form(_))));
    }
}
