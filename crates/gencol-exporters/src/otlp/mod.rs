//! `otlp`: OTLP traces to any backend (SPEC §6): over HTTP by default, JSON as OpenRouter
//! sends or protobuf, or over gRPC (`protocol: grpc`); gzip by default.

mod config;
mod grpc;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use gencol_config::{ComponentId, Diagnostic, Located, Node, decode};
use gencol_engine::{BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory};
use gencol_model::SpanItem;

use crate::http::OtlpHttpSender;
pub use config::OtlpExporterSettings;
use config::OtlpPlan;
use grpc::OtlpGrpcSender;

pub struct OtlpExporterFactory;

impl ExporterFactory for OtlpExporterFactory {
    fn kind(&self) -> &str {
        "otlp"
    }
    fn about(&self) -> &str {
        "OTLP traces (HTTP or gRPC) to any OpenTelemetry backend (Axiom, Jaeger, Tempo, Honeycomb, a collector)"
    }
    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>> {
        let settings: OtlpExporterSettings = decode(config).map_err(|d| vec![d])?;
        let plan = settings.check(config, &ctx.base_dir).map_err(|d| vec![d])?;
        Ok(Box::new(OtlpExporterConfig { plan }))
    }
}

struct OtlpExporterConfig {
    plan: OtlpPlan,
}

impl ExporterConfig for OtlpExporterConfig {
    fn target_addr(&self) -> Option<String> {
        match &self.plan {
            OtlpPlan::Http(s) => s.target_addr(),
            OtlpPlan::Grpc(s) => s.target_addr(),
        }
    }
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Exporter>, String> {
        let id = id.to_string();
        Ok(match &self.plan {
            OtlpPlan::Http(s) => Arc::new(OtlpHttpExporter(OtlpHttpSender::new(&id, s)?)),
            OtlpPlan::Grpc(s) => Arc::new(OtlpGrpcExporter(OtlpGrpcSender::new(&id, s)?)),
        })
    }
}

struct OtlpHttpExporter(OtlpHttpSender);

impl Exporter for OtlpHttpExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.0.send_items(batch))
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(async move { self.0.send(&crate::test_connection_request(), true).await })
    }
}

struct OtlpGrpcExporter(OtlpGrpcSender);

impl Exporter for OtlpGrpcExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.0.send_items(batch))
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(async move { self.0.send(&crate::test_connection_request(), true).await })
    }
}
