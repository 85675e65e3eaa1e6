//! `otlp`: OTLP/HTTP traces to any backend (SPEC §6), JSON by default as OpenRouter
//! sends, or protobuf; gzip by default.

mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use gencol_config::{ComponentId, Diagnostic, Located, Node, decode};
use gencol_engine::{BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory};
use gencol_model::SpanItem;

use crate::http::{OtlpHttpSender, OtlpHttpSettings};
pub use config::OtlpExporterSettings;

pub struct OtlpExporterFactory;

impl ExporterFactory for OtlpExporterFactory {
    fn kind(&self) -> &str {
        "otlp"
    }
    fn about(&self) -> &str {
        "OTLP/HTTP traces to any OpenTelemetry backend (Axiom, Jaeger, Tempo, Honeycomb, a collector)"
    }
    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>> {
        let settings: OtlpExporterSettings = decode(config).map_err(|d| vec![d])?;
        let http = settings.check(config, &ctx.base_dir).map_err(|d| vec![d])?;
        Ok(Box::new(OtlpExporterConfig { http }))
    }
}

struct OtlpExporterConfig {
    http: OtlpHttpSettings,
}

impl ExporterConfig for OtlpExporterConfig {
    fn target_addr(&self) -> Option<String> {
        self.http.target_addr()
    }
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(OtlpExporter { sender: OtlpHttpSender::new(&id.to_string(), &self.http)? }))
    }
}

struct OtlpExporter {
    sender: OtlpHttpSender,
}

impl Exporter for OtlpExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.sender.send_items(batch))
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(async move { self.sender.send(&crate::test_connection_request(), true).await })
    }
}
