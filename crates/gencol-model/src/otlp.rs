//! Between [`SpanItem`]s and OTLP requests: grouping spans back under their resource
//! and scope, and the two OTLP/HTTP encodings.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;

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
        for ss in rs.scope_spans {
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

/// OTLP/JSON (`application/json`): hex ids, camelCase keys, enums as integers,
/// 64-bit integers as strings, compact.
pub fn encode_json(req: &ExportTraceServiceRequest) -> Vec<u8> {
    // Serialising generated proto types to a Vec cannot fail: no maps with non-string keys.
    serde_json::to_vec(req).unwrap_or_default()
}

/// OTLP/protobuf (`application/x-protobuf`).
pub fn encode_proto(req: &ExportTraceServiceRequest) -> Vec<u8> {
    req.encode_to_vec()
}

/// Decodes OTLP/JSON; `None` fields and unknown keys are ignored as the spec says.
pub fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// Decodes OTLP/protobuf.
pub fn decode_proto(body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
}

/// Number of spans in a request.
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}
