//! `generations`: the receiver an LLM gateway posts generation records to
//! (`POST /v1/generations`, SPEC §2). Each valid record becomes one generation span
//! (SPEC §3–4) under one resource shared by every span of the receiver.

mod config;
mod service;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use gencol_config::{Diagnostic, Located, Node};
use gencol_engine::{BoxFuture, CancellationToken, ComponentContext, Consumer, ReceiverConfig, ReceiverFactory};
use gencol_model::Origin;
use gencol_model::budget::MemoryBudget;
use tokio::task::JoinHandle;

use crate::http::{Dialect, ReceiverError, StackSettings, serve, stack};
use crate::settings::{ServerSettings, decode_settings, locate};
use crate::tls::Alpn;
use config::{CheckedSettings, GenerationsSettings};
use service::{Form, GenerationsDialect, GenerationsHandler, Handler, NOT_FOUND, PATH};

/// Registers the `generations` receiver type.
pub struct GenerationsReceiverFactory;

impl ReceiverFactory for GenerationsReceiverFactory {
    fn kind(&self) -> &str {
        "generations"
    }

    fn about(&self) -> &str {
        "generation records from an LLM gateway: POST /v1/generations (JSON object, array or NDJSON)"
    }

    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ReceiverConfig>, Vec<Diagnostic>> {
        let settings: GenerationsSettings = decode_settings(config)?;
        let checked = settings.check(&ctx.base_dir).map_err(|e| locate(config, e))?;
        Ok(Box::new(GenerationsReceiverConfig::new(ctx.id.to_string(), checked)))
    }
}

/// A checked `generations` receiver, ready to start.
#[derive(Clone)]
pub(crate) struct GenerationsReceiverConfig {
    id: String,
    server: ServerSettings,
    max_records: usize,
    origin: Arc<Origin>,
}

impl GenerationsReceiverConfig {
    pub(crate) fn new(id: String, checked: CheckedSettings) -> Self {
        let origin = Arc::new(Origin {
            resource: gencol_model::service_resource(&checked.service_name),
            scope: gencol_model::scope(),
            ..Default::default()
        });
        GenerationsReceiverConfig { id, server: checked.server, max_records: checked.max_records, origin }
    }

    /// Binds and serves; returns the bound address (the real port for `:0`).
    pub(crate) async fn bind(
        &self,
        consumer: Consumer,
        memory: MemoryBudget,
        shutdown: CancellationToken,
    ) -> Result<(SocketAddr, JoinHandle<()>), ReceiverError> {
        let handler = GenerationsHandler(Arc::new(Handler {
            consumer: consumer.clone(),
            origin: self.origin.clone(),
            max_records: self.max_records,
        }));
        let settings = StackSettings {
            dialect: GenerationsDialect,
            path: PATH,
            not_found: NOT_FOUND,
            auth: self.server.auth.clone(),
            content: Form::from_media_type,
            body: self.server.body,
            memory,
        };
        let service = stack(settings, consumer, handler);
        let busy = GenerationsDialect::BUSY_JSON;
        let tls = self.server.start_tls(Alpn::Http1, &self.id, &shutdown)?;
        let (addr, task) = serve(&self.server.endpoint, service, busy, self.server.connections, tls, shutdown).await?;
        tracing::info!(receiver = %self.id, address = %addr, "listening");
        Ok((addr, task))
    }
}

impl ReceiverConfig for GenerationsReceiverConfig {
    fn listen_addrs(&self) -> Vec<String> {
        vec![self.server.endpoint.clone()]
    }

    fn emits_generations(&self) -> bool {
        true
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
