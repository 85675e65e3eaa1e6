//! `nats`: publishes what the pipeline carries to a JetStream stream, for a processing tier
//! of gencols to consume (docs/scale-out.md). Each batch is split by trace, and each
//! trace's part goes to its partition's subject (`hash(trace id) mod partitions`) as one
//! message in gencol's stored form with a content `Nats-Msg-Id`, so a batch published
//! again after a lost acknowledgement is dropped by JetStream as a duplicate.
//!
//! A 202 from a receiver feeding this exporter means JetStream acknowledged the publish
//! (`confirms_delivery`): the receiver waits for it, and answers 503 + `Retry-After` when
//! NATS cannot be reached.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use gencol_config::{ComponentId, Diagnostic, Located, Node};
use gencol_engine::{BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory};
use gencol_model::SpanItem;
use gencol_nats::wire::{self, WIRE_FORM, WIRE_HEADER};
use gencol_nats::{NatsTarget, Side};
use tokio::sync::OnceCell;

/// How long connecting may take before a send fails (and is retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Room left in a message for its headers and subject under the server's `max_payload`.
const HEADROOM: usize = 4096;

pub struct NatsExporterFactory;

impl ExporterFactory for NatsExporterFactory {
    fn kind(&self) -> &str {
        "nats"
    }
    fn about(&self) -> &str {
        "NATS JetStream: hands spans to a processing tier of gencols, partitioned by trace"
    }
    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>> {
        let target = gencol_nats::configure(config, Side::Exporter, &ctx.base_dir).map_err(|d| vec![d])?;
        Ok(Box::new(NatsExporterConfig { target }))
    }
}

struct NatsExporterConfig {
    target: NatsTarget,
}

impl ExporterConfig for NatsExporterConfig {
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(NatsExporter { id: id.to_string(), target: self.target.clone(), connection: OnceCell::new() }))
    }

    fn confirms_delivery(&self) -> bool {
        true
    }

    fn hands_on_generations(&self) -> bool {
        true
    }
}

struct NatsExporter {
    id: String,
    target: NatsTarget,
    /// Connected (and the stream made sure of) at the first send; the client reconnects
    /// by itself after that.
    connection: OnceCell<(async_nats::Client, jetstream::Context)>,
}

impl NatsExporter {
    async fn connection(&self) -> Result<&(async_nats::Client, jetstream::Context), ExportError> {
        self.connection
            .get_or_try_init(|| async {
                let client = self.target.connect(&format!("gencol {}", self.id), CONNECT_TIMEOUT).await?;
                let js = jetstream::new(client.clone());
                gencol_nats::stream::ensure(&js, &self.target).await?;
                Ok::<_, String>((client, js))
            })
            .await
            .map_err(ExportError::retryable)
    }

    /// Publishes `batch`, a message per trace (more when one is over the server's limit),
    /// and waits for every acknowledgement.
    async fn publish(&self, batch: &[SpanItem]) -> Result<(), ExportError> {
        let (client, js) = self.connection().await?;
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(ExportError::retryable(format!("not connected to NATS at {}", self.target.shown())));
        }
        let limit = client.server_info().max_payload.saturating_sub(HEADROOM);
        // A message per trace: a processing instance acknowledges a trace's messages
        // together, once the trace is settled, so a failover never hands the next owner a
        // part of a trace whose root is already out.
        let mut by_trace: BTreeMap<&[u8], Vec<&SpanItem>> = BTreeMap::new();
        for item in batch {
            by_trace.entry(item.span.trace_id.as_slice()).or_default().push(item);
        }
        let mut acks = Vec::new();
        for (trace, items) in by_trace {
            let subject = self.target.partition_subject(wire::partition(trace, self.target.partitions));
            for encoded in encode_within(&items, limit)? {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(WIRE_HEADER, WIRE_FORM);
                headers.insert("Nats-Msg-Id", encoded.msg_id.as_str());
                let ack = js
                    .publish_with_headers(subject.clone(), headers, encoded.payload)
                    .await
                    .map_err(|e| ExportError::retryable(format!("cannot publish to {subject}: {e}")))?;
                acks.push(ack);
            }
        }
        for ack in futures_util::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.map_err(|e| {
                let message =
                    format!("JetStream did not acknowledge a message for stream `{}`: {e}", self.target.stream);
                ExportError::retryable(message)
            })?;
        }
        Ok(())
    }
}

/// One message for `items`, or several when one would be over `limit` bytes.
fn encode_within(items: &[&SpanItem], limit: usize) -> Result<Vec<wire::Encoded>, ExportError> {
    let encoded = wire::encode(items.iter().copied());
    if encoded.payload.len() <= limit {
        return Ok(vec![encoded]);
    }
    if items.len() == 1 {
        return Err(ExportError::refused(format!(
            "a span of {} bytes is over the NATS server's max_payload ({limit} bytes with headers); raise max_payload in nats-server",
            encoded.payload.len()
        )));
    }
    let (a, b) = items.split_at(items.len() / 2);
    let mut out = encode_within(a, limit)?;
    out.extend(encode_within(b, limit)?);
    Ok(out)
}

impl Exporter for NatsExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(self.publish(batch))
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(async move {
            let (client, js) = self.connection().await?;
            let mut stream = js
                .get_stream(&self.target.stream)
                .await
                .map_err(|e| ExportError::retryable(format!("stream `{}`: {e}", self.target.stream)))?;
            let info = stream.info().await.map_err(|e| ExportError::retryable(format!("stream info: {e}")))?;
            Ok(format!(
                "stream {} on {} ({} messages, {} replicas, {} partitions)",
                info.config.name,
                client.server_info().server_name,
                info.state.messages,
                info.config.num_replicas,
                self.target.partitions
            ))
        })
    }
}
