//! Batches → objects: which spans, under which key, in what bytes.
//!
//! An object is gzip NDJSON, one line per span: an OTLP/JSON `ExportTraceServiceRequest`
//! holding that one span with its resource and scope, the form the OpenTelemetry
//! Collector's `file` exporter writes and its `otlpjsonfile` receiver reads back. The key
//! is made from the spans it holds (the earliest start time and a hash of the span ids),
//! so a batch sent again after a lost answer overwrites the same object instead of
//! adding a copy.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use gencol_model::{SpanItem, attributes as attr, otlp};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::config::{PartitionBy, SpanSelection};

/// Where and what: shared by every batch of one exporter.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Empty, or ends with `/`.
    pub prefix: String,
    pub partition_by: PartitionBy,
    pub spans: SpanSelection,
}

/// One object to write whole.
#[derive(Debug)]
pub struct Object {
    pub key: String,
    /// gzip of the NDJSON lines.
    pub body: Vec<u8>,
    pub spans: usize,
}

/// An LLM call, as the other event exporters decide it; `hierarchy`'s root and
/// intermediate spans are not.
pub fn is_generation(item: &SpanItem) -> bool {
    let a = &item.span.attributes;
    attr::get_str(a, "gen_ai.request.model").is_some() || attr::get_str(a, "gen_ai.operation.name").is_some()
}

impl Layout {
    /// The objects for one batch: one per time partition its spans fall in.
    pub fn objects(&self, batch: &[SpanItem]) -> Vec<Object> {
        let mut parts: BTreeMap<String, Vec<&SpanItem>> = BTreeMap::new();
        for item in batch.iter().filter(|i| self.spans == SpanSelection::All || is_generation(i)) {
            parts.entry(self.partition(item.span.start_time_unix_nano)).or_default().push(item);
        }
        parts.into_iter().map(|(partition, items)| self.object(&partition, &items)).collect()
    }

    /// `{prefix}year=YYYY/month=MM/day=DD/hour=HH/` (UTC) for a span starting at `nanos`.
    fn partition(&self, nanos: u64) -> String {
        let t = utc(nanos);
        let (y, m, d, h) = (t.year(), t.month() as u8, t.day(), t.hour());
        match self.partition_by {
            PartitionBy::Hour => format!("{}year={y:04}/month={m:02}/day={d:02}/hour={h:02}/", self.prefix),
            PartitionBy::Day => format!("{}year={y:04}/month={m:02}/day={d:02}/", self.prefix),
            PartitionBy::None => self.prefix.clone(),
        }
    }

    fn object(&self, partition: &str, items: &[&SpanItem]) -> Object {
        let mut ids = Sha256::new();
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        for item in items {
            ids.update(&item.span.trace_id);
            ids.update(&item.span.span_id);
            let mut line = otlp::encode_items_json(std::slice::from_ref(*item));
            line.push(b'\n');
            // Writing to a Vec cannot fail.
            let _ = gz.write_all(&line);
        }
        let body = gz.finish().unwrap_or_default();
        let earliest = items.iter().map(|i| i.span.start_time_unix_nano).min().unwrap_or(0);
        let hash = hex::encode(&ids.finalize()[..8]);
        Object { key: format!("{partition}{}-{hash}.ndjson.gz", stamp(earliest)), body, spans: items.len() }
    }
}

fn utc(nanos: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `20261204T031500Z`: sorts as time does.
pub fn stamp(nanos: u64) -> String {
    let t = utc(nanos);
    format!("{:04}{:02}{:02}T{:02}{:02}{:02}Z", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
}
