//! `raindrop`: one Raindrop event per generation span (SPEC §6, RAINDROP.md), POSTed in JSON
//! array batches to `{base_url}/v1/events/track`.
//!
//! Events are made from span attributes, so GenAI spans received over OTLP become events
//! too. `privacy_mode` needs nothing here: the engine removes the content attributes before
//! the batch arrives, so input and output are simply absent.

mod client;
mod config;
mod encoder;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gencol_config::{ComponentId, Diagnostic, Located, Node, decode};
use gencol_engine::{BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory};
use gencol_model::{SpanItem, Timestamp};

use client::EventsClient;
pub use config::{RaindropExporterSettings, RaindropSettings};
use encoder::{EventMapper, bodies, encode};

pub struct RaindropExporterFactory;

impl ExporterFactory for RaindropExporterFactory {
    fn kind(&self) -> &str {
        "raindrop"
    }
    fn about(&self) -> &str {
        "Raindrop events (api.raindrop.ai): one event per generation with input, output, user, conversation and metadata"
    }
    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>> {
        let settings: RaindropExporterSettings = decode(config).map_err(|d| vec![d])?;
        let settings = settings.check(config)?;
        Ok(Box::new(RaindropExporterConfig { settings }))
    }
}

struct RaindropExporterConfig {
    settings: RaindropSettings,
}

impl ExporterConfig for RaindropExporterConfig {
    fn target_addr(&self) -> Option<String> {
        let u = &self.settings.endpoint;
        Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
    }
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(RaindropExporter::new(&id.to_string(), &self.settings)?))
    }
}

/// Sends the generation spans of each batch as events, in as many requests as the
/// ingest's limits need.
pub struct RaindropExporter {
    id: String,
    client: EventsClient,
    mapper: EventMapper,
    batch_size: usize,
    /// Events that could not be sent at any size; they are not the engine's to count,
    /// since the rest of their batch was delivered.
    too_large: AtomicU64,
}

impl RaindropExporter {
    pub fn new(id: &str, settings: &RaindropSettings) -> Result<Self, String> {
        Ok(RaindropExporter {
            id: id.to_owned(),
            client: EventsClient::new(settings)?,
            mapper: EventMapper::new(&settings.event_name, &settings.anonymous_user_id),
            batch_size: settings.batch_size,
            too_large: AtomicU64::new(0),
        })
    }

    async fn send(&self, batch: &[SpanItem]) -> Result<(), ExportError> {
        let mut events = Vec::with_capacity(batch.len());
        for event in batch.iter().filter_map(|item| self.mapper.event(item)) {
            match encode(event) {
                Ok(encoded) => events.push(encoded),
                Err(too_large) => {
                    let total = self.too_large.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::error!(exporter = %self.id, event_id = %too_large.event_id, dropped_total = total, "event not sent: {too_large}");
                }
            }
        }
        let bodies = bodies(&events, self.batch_size);
        let requests = bodies.len();
        let mut rejected: Vec<String> = Vec::new();
        let mut only_content = true;
        for body in bodies {
            match self.client.post(body, false).await {
                Ok(_) => {}
                // Resending the whole batch repeats the requests that were accepted; they carry
                // the same event ids, so Raindrop keeps one of each.
                Err(retry @ ExportError::Retryable { .. }) => return Err(retry),
                // The other requests of the batch may be fine: send them before reporting.
                Err(ExportError::Refused { message }) => rejected.push(message),
                Err(ExportError::Permanent { message }) => {
                    only_content = false;
                    rejected.push(message);
                }
            }
        }
        let message = match rejected.as_slice() {
            [] => return Ok(()),
            [one] if requests == 1 => one.clone(),
            [first, ..] => format!("{} of {requests} requests rejected; the first: {first}", rejected.len()),
        };
        // Refused for their content only: the engine splits the batch to find the events
        // refused (the accepted ones go again, with the same event ids).
        Err(if only_content { ExportError::refused(message) } else { ExportError::permanent(message) })
    }

    async fn test(&self) -> Result<String, ExportError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let suffix = format!("{:016x}", fastrand::u64(..));
        let event = self.mapper.test_connection_event(Timestamp(now.as_nanos() as u64), &suffix);
        let encoded = encode(event).map_err(|e| ExportError::permanent(e.to_string()))?;
        let body = bodies(std::slice::from_ref(&encoded), 1).concat();
        self.client.post(body, true).await
    }
}

impl Exporter for RaindropExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.send(batch))
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(self.test())
    }
}
