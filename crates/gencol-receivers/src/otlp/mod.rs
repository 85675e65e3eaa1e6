//! `otlp`: standard OTLP/HTTP traces (`POST /v1/traces`, JSON or protobuf, gzip), so
//! OpenRouter's own Broadcast or any app instrumented with OpenTelemetry can feed the
//! same pipelines as generation records. Spans keep the resource and scope they were
//! sent with.

mod config;
mod service;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use gencol_config::{Diagnostic, Located, Node};
use gencol_engine::{BoxFuture, CancellationToken, ComponentContext, Consumer, ReceiverConfig, ReceiverFactory};
use gencol_model::budget::MemoryBudget;
use tokio::task::JoinHandle;

use crate::http::{Dialect, ReceiverError, StackSettings, serve, stack};
use crate::settings::{decode_settings, locate};
use config::{CheckedSettings, OtlpReceiverSettings};
use service::{Encoding, Handler, NOT_FOUND, OtlpDialect, OtlpHandler, PATH};

/// Registers the `otlp` receiver type.
pub struct OtlpReceiverFactory;

impl ReceiverFactory for OtlpReceiverFactory {
    fn kind(&self) -> &str {
        "otlp"
    }

    fn about(&self) -> &str {
        "OTLP/HTTP traces: POST /v1/traces (JSON or protobuf, gzip)"
    }

    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ReceiverConfig>, Vec<Diagnostic>> {
        let settings: OtlpReceiverSettings = decode_settings(config)?;
        let checked = settings.check().map_err(|e| locate(config, e))?;
        Ok(Box::new(OtlpReceiverConfig { id: ctx.id.to_string(), checked }))
    }
}

/// A checked `otlp` receiver, ready to start.
#[derive(Clone)]
pub(crate) struct OtlpReceiverConfig {
    id: String,
    checked: CheckedSettings,
}

impl OtlpReceiverConfig {
    /// Binds and serves; returns the bound address (the real port for `:0`).
    pub(crate) async fn bind(
        &self,
        consumer: Consumer,
        memory: MemoryBudget,
        shutdown: CancellationToken,
    ) -> Result<(SocketAddr, JoinHandle<()>), ReceiverError> {
        let server = &self.checked.server;
        let handler = OtlpHandler(Arc::new(Handler { consumer: consumer.clone(), max_spans: self.checked.max_spans }));
        let settings = StackSettings {
            dialect: OtlpDialect,
            path: PATH,
            not_found: NOT_FOUND,
            auth: server.auth.clone(),
            content: Encoding::required,
            body: server.body,
            memory,
        };
        let service = stack(settings, consumer, handler);
        let (addr, task) =
            serve(&server.endpoint, service, OtlpDialect::BUSY_JSON, server.connections, shutdown).await?;
        tracing::info!(receiver = %self.id, address = %addr, "listening");
        Ok((addr, task))
    }
}

impl ReceiverConfig for OtlpReceiverConfig {
    fn listen_addr(&self) -> Option<String> {
        Some(self.checked.server.endpoint.clone())
    }

    fn start(
        &self,
        consumer: Consumer,
        memory: MemoryBudget,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<JoinHandle<()>, String>> {
        let this = self.clone();
        Box::pin(
            async move { this.bind(consumer, memory, shutdown).await.map(|(_, task)| task).map_err(|e| e.to_string()) },
        )
    }
}
