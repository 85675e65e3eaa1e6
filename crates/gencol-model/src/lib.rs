//! The data gencol carries: the generation record a gateway posts (and its JSON
//! Schema), the span ids derived from it (SPEC §3), and the span form every pipeline
//! moves ([`SpanItem`]): an OTLP span plus, for spans made from a generation, the
//! request-level facts that processors and event exporters still need.
//!
//! Everything here is pure: no I/O, no runtime, so every other crate can use it.

pub mod attributes;
pub mod budget;
mod content;
mod decode;
mod generation;
pub mod ids;
pub mod json_write;
pub mod otlp;
mod schema;
mod span;
pub mod stored;

pub use decode::{
    DecodeError, DecodedBatch, DecodedSpans, MAX_LISTED_REJECTIONS, RecordError, decode_body, decode_record,
    decode_spans,
};
pub use generation::{Generation, GenerationError, Request, Response, Timestamp};
pub use schema::{SCHEMA_JSON, schema};
pub use span::{
    GenerationContext, Origin, SpanItem, first_output_text, generation_span, latest_user_text, scope, service_resource,
};

/// The crate version, which gencol reports as `service.version` and scope version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
