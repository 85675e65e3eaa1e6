//! gencol's built-in exporters: `otlp` (any OTLP/HTTP backend: Axiom, Jaeger, Tempo,
//! Honeycomb, an OpenTelemetry Collector), `ramp` (Ramp AI spend tracking, the same
//! spans with a Ramp API key), `raindrop` (events), `posthog` (PostHog LLM analytics
//! `$ai_generation` events), `s3` (gzip NDJSON objects in any
//! S3-compatible store), `nats` (a processing tier over JetStream) and `debug` (span trees
//! on stdout).
//!
//! Each exporter only sends once and classifies failures; queueing, timeout, retry
//! and `privacy_mode` are the engine's, the same for every exporter.

mod debug;
mod events;
mod http;
mod nats;
mod otlp;
mod posthog;
mod raindrop;
mod ramp;
mod s3;

use std::sync::Arc;

use gencol_engine::ExporterFactory;

pub use http::{OtlpHttpSender, OtlpHttpSettings};

/// The built-in exporter factories.
pub fn factories() -> Vec<Arc<dyn ExporterFactory>> {
    vec![
        Arc::new(otlp::OtlpExporterFactory),
        Arc::new(ramp::RampExporterFactory),
        Arc::new(raindrop::RaindropExporterFactory),
        Arc::new(posthog::PostHogExporterFactory),
        Arc::new(debug::DebugExporterFactory),
        Arc::new(nats::NatsExporterFactory),
        Arc::new(s3::S3ExporterFactory),
    ]
}

/// The one span `gencol test-connection` sends: marked `gencol.test_connection=true`,
/// in its own random trace so it never joins real data.
pub fn test_connection_request() -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use gencol_model::{Origin, SpanItem, attributes as attr};
    use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let origin = Arc::new(Origin {
        resource: gencol_model::service_resource("gencol"),
        scope: gencol_model::scope(),
        ..Default::default()
    });
    let span = Span {
        trace_id: fastrand_bytes::<16>(),
        span_id: fastrand_bytes::<8>(),
        name: "gencol test connection".into(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: now,
        end_time_unix_nano: now,
        attributes: vec![attr::boolean(attr::TEST_CONNECTION, true)],
        ..Default::default()
    };
    gencol_model::otlp::to_request(&[SpanItem { origin, span, generation: None }])
}

fn fastrand_bytes<const N: usize>() -> Vec<u8> {
    let mut b = [0u8; N];
    fastrand::fill(&mut b);
    if b == [0u8; N] {
        b[0] = 1;
    }
    b.to_vec()
}
