//! `raindrop`: one Raindrop event per generation span (SPEC §6, RAINDROP.md), POSTed in JSON
//! array batches to `{base_url}/v1/events/track`.
//!
//! Events are made from span attributes, so GenAI spans received over OTLP become events
//! too. `privacy_mode` needs nothing here: the engine removes the content attributes before
//! the batch arrives, so input and output are simply absent.

mod config;
mod encoder;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use gencol_config::{ComponentId, Diagnostic, Located, Node, decode};
use gencol_engine::{BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory};
use gencol_model::{SpanItem, Timestamp};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

pub use config::{RaindropExporterSettings, RaindropSettings};
use encoder::{EventMapper, bodies, encode};

use crate::events::{EventsClient, encode_all, send_bodies};

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
            client: events_client(settings)?,
            mapper: EventMapper::new(&settings.event_name, &settings.anonymous_user_id),
            batch_size: settings.batch_size,
            too_large: AtomicU64::new(0),
        })
    }

    async fn send(&self, batch: &[SpanItem]) -> Result<(), ExportError> {
        let events = batch.iter().filter_map(|item| self.mapper.event(item));
        let events = encode_all(&self.id, events, encode, &self.too_large);
        let client = &self.client;
        send_bodies(bodies(&events, self.batch_size), |body| client.post(body, false)).await
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

/// Posts to `{base_url}/v1/events/track` with `Authorization: Bearer <write_key>`, the
/// header marked sensitive so no `Debug` of a request shows it.
fn events_client(settings: &RaindropSettings) -> Result<EventsClient, String> {
    let mut authorization = HeaderValue::from_str(&format!("Bearer {}", settings.write_key))
        .map_err(|_| "write_key cannot be sent in an HTTP header (it must be visible ASCII)".to_owned())?;
    authorization.set_sensitive(true);
    let headers = HeaderMap::from_iter([(AUTHORIZATION, authorization)]);
    EventsClient::new(settings.endpoint.clone(), "base_url", [settings.write_key.clone()], headers)
}

impl Exporter for RaindropExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.send(batch))
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(self.test())
    }
}
