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
use tokio::task::JoinHandle;

use crate::http::{ReceiverError, serve};
use crate::settings::{ServerSettings, decode_settings, locate};
use config::OtlpReceiverSettings;
use service::OtlpService;

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
        let server = settings.check().map_err(|e| locate(config, e))?;
        Ok(Box::new(OtlpReceiverConfig { id: ctx.id.to_string(), server }))
    }
}

/// A checked `otlp` receiver, ready to start.
#[derive(Clone)]
pub(crate) struct OtlpReceiverConfig {
    id: String,
    server: ServerSettings,
}

impl OtlpReceiverConfig {
    /// Binds and serves; returns the bound address (the real port for `:0`).
    pub(crate) async fn bind(
        &self,
        consumer: Consumer,
        shutdown: CancellationToken,
    ) -> Result<(SocketAddr, JoinHandle<()>), ReceiverError> {
        let service = OtlpService { consumer, auth: self.server.auth.clone(), max_body: self.server.max_body };
        let (addr, task) = serve(&self.server.endpoint, Arc::new(service), shutdown).await?;
        tracing::info!(receiver = %self.id, address = %addr, "listening");
        Ok((addr, task))
    }
}

impl ReceiverConfig for OtlpReceiverConfig {
    fn listen_addr(&self) -> Option<String> {
        Some(self.server.endpoint.clone())
    }

    fn start(
        &self,
        consumer: Consumer,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<JoinHandle<()>, String>> {
        let this = self.clone();
        Box::pin(async move { this.bind(consumer, shutdown).await.map(|(_, task)| task).map_err(|e| e.to_string()) })
    }
}
