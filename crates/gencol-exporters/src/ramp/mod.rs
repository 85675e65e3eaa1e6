//! `ramp`: AI spend tracking in Ramp (SPEC §6, seed "Ramp"). Ramp takes the same
//! OTLP/HTTP JSON spans as any OTLP backend, POSTed to its `base_url` with
//! `Authorization: Bearer <api_key>`, and reads `gen_ai.request.model`, the
//! `gen_ai.usage.*` tokens and `gen_ai.usage.total_cost`, `user.id` and the
//! `trace.metadata.*` keys from them. So this exporter is only settings: the sending
//! is the shared [`OtlpHttpSender`], with the OTLP spec's retry classification.

mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use gencol_config::{ComponentId, Diagnostic, Located, Node, decode};
use gencol_engine::{BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory};
use gencol_model::SpanItem;

use crate::http::{OtlpHttpSender, OtlpHttpSettings};
use config::RampExporterSettings;

pub struct RampExporterFactory;

impl ExporterFactory for RampExporterFactory {
    fn kind(&self) -> &str {
        "ramp"
    }
    fn about(&self) -> &str {
        "Ramp AI spend tracking: OTLP/HTTP JSON traces with your Ramp API key (api_key, base_url, headers)"
    }
    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>> {
        let settings: RampExporterSettings = decode(config).map_err(|d| vec![d])?;
        let http = settings.check(config)?;
        Ok(Box::new(RampExporterConfig { http }))
    }
}

struct RampExporterConfig {
    http: OtlpHttpSettings,
}

impl ExporterConfig for RampExporterConfig {
    fn target_addr(&self) -> Option<String> {
        self.http.target_addr()
    }
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(RampExporter { sender: OtlpHttpSender::new(&id.to_string(), &self.http)? }))
    }
}

struct RampExporter {
    sender: OtlpHttpSender,
}

impl Exporter for RampExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.sender.send_items(batch))
    }

    /// Ramp's own form only saves after this passes: a wrong key answers 401 here
    /// instead of dropping real usage later.
    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(async move { self.sender.send(&crate::test_connection_request(), true).await })
    }
}
