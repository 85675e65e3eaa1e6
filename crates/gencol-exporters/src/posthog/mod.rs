//! `posthog`: PostHog LLM analytics. One `$ai_generation` event per generation span
//! (https://posthog.com/docs/llm-analytics/manual-capture), POSTed in batches to
//! `{host}/batch/` with the project API key in the body
//! (https://posthog.com/docs/api/capture).
//!
//! Events are made from span attributes, so GenAI spans received over OTLP become events
//! too. `privacy_mode` needs nothing here: the engine removes the content attributes before
//! the batch arrives, so `$ai_input` and `$ai_output_choices` are simply absent.

mod config;
mod encoder;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use gencol_config::{ComponentId, Diagnostic, Located, Node, decode};
use gencol_engine::{BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory};
use gencol_model::{SpanItem, Timestamp};
use reqwest::header::HeaderMap;

pub use config::{PostHogExporterSettings, PostHogSettings};
use encoder::{EventMapper, body_open, body_shape, encode};

use crate::events::{EventsClient, encode_all, send_bodies};

pub struct PostHogExporterFactory;

impl ExporterFactory for PostHogExporterFactory {
    fn kind(&self) -> &str {
        "posthog"
    }
    fn about(&self) -> &str {
        "PostHog LLM analytics ($ai_generation events): model, input, output, tokens, cost, latency, user, session and metadata (api_key, host)"
    }
    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>> {
        let settings: PostHogExporterSettings = decode(config).map_err(|d| vec![d])?;
        let settings = settings.check(config)?;
        Ok(Box::new(PostHogExporterConfig { settings }))
    }
}

struct PostHogExporterConfig {
    settings: PostHogSettings,
}

impl ExporterConfig for PostHogExporterConfig {
    fn target_addr(&self) -> Option<String> {
        let u = &self.settings.endpoint;
        Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
    }
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(PostHogExporter::new(&id.to_string(), &self.settings)?))
    }
}

/// Sends the generation spans of each batch as `$ai_generation` events, in as many
/// requests as PostHog's limits need.
pub struct PostHogExporter {
    id: String,
    /// No credential header: the key travels in the body, which is never logged, and is
    /// masked in every message made from an answer.
    client: EventsClient,
    mapper: EventMapper,
    batch_size: usize,
    /// `{"api_key":...,"historical_migration":false,"batch":[`, made once.
    body_open: Vec<u8>,
    /// Events that could not be sent at any size; they are not the engine's to count,
    /// since the rest of their batch was delivered.
    too_large: AtomicU64,
}

impl PostHogExporter {
    pub fn new(id: &str, settings: &PostHogSettings) -> Result<Self, String> {
        let client =
            EventsClient::new(settings.endpoint.clone(), "host", [settings.api_key.clone()], HeaderMap::new())?;
        Ok(PostHogExporter {
            id: id.to_owned(),
            client,
            mapper: EventMapper::new(&settings.anonymous_distinct_id),
            batch_size: settings.batch_size,
            body_open: body_open(&settings.api_key),
            too_large: AtomicU64::new(0),
        })
    }

    async fn send(&self, batch: &[SpanItem]) -> Result<(), ExportError> {
        let events = batch.iter().filter_map(|item| self.mapper.event(item));
        let events = encode_all(&self.id, events, encode, &self.too_large);
        let client = &self.client;
        send_bodies(body_shape(&self.body_open).bodies(&events, self.batch_size), |body| client.post(body, false)).await
    }

    async fn test(&self) -> Result<String, ExportError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut random = [0u8; 16];
        fastrand::fill(&mut random);
        let event = self.mapper.test_connection_event(Timestamp(now.as_nanos() as u64), random);
        let encoded = encode(event).map_err(|e| ExportError::permanent(e.to_string()))?;
        let body = body_shape(&self.body_open).bodies(std::slice::from_ref(&encoded), 1).concat();
        self.client.post(body, true).await
    }
}

impl Exporter for PostHogExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.send(batch))
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(self.test())
    }
}
