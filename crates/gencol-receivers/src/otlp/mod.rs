//! `otlp`: standard OTLP/HTTP traces (`POST /v1/traces`, JSON or protobuf, gzip, zstd or
//! deflate) and, with `grpc:`, OTLP/gRPC (`TraceService/Export`, usually on 4317), so
//! OpenRouter's own Broadcast or any app instrumented with OpenTelemetry can feed the
//! same pipelines as generation records. Spans keep the resource and scope they were
//! sent with.

mod config;
mod grpc;
#[cfg(test)]
mod grpc_tests;
mod service;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use gencol_config::{Diagnostic, Located, Node};
use gencol_engine::{BoxFuture, CancellationToken, ComponentContext, Consumer, ReceiverConfig, ReceiverFactory};
use gencol_model::budget::MemoryBudget;
use tokio::task::JoinHandle;

use crate::grpc::guard::GuardLayer;
use crate::grpc::listener::{self, GrpcLimits};
use crate::http::{ACK_PATIENCE, Dialect, ReceiverError, StackSettings, serve, stack};
use crate::settings::{decode_settings, locate};
use crate::tls::Alpn;
use config::{CheckedSettings, OtlpReceiverSettings};
use grpc::TraceService;
pub(crate) use service::grpc_code;
use service::{Encoding, Handler, NOT_FOUND, OtlpDialect, OtlpHandler, PATH};
use tower::Layer;

/// Registers the `otlp` receiver type.
pub struct OtlpReceiverFactory;

impl ReceiverFactory for OtlpReceiverFactory {
    fn kind(&self) -> &str {
        "otlp"
    }

    fn about(&self) -> &str {
        "OTLP traces: HTTP POST /v1/traces (JSON or protobuf) and, with `grpc:`, gRPC TraceService/Export"
    }

    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ReceiverConfig>, Vec<Diagnostic>> {
        let settings: OtlpReceiverSettings = decode_settings(config)?;
        let checked = settings.check(&ctx.base_dir).map_err(|e| locate(config, e))?;
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
    /// Binds and serves; returns the bound address of OTLP/HTTP (the real port for `:0`)
    /// and of OTLP/gRPC when it is served. Both ports are bound before either serves, so a
    /// port in use stops the start with nothing half-started.
    pub(crate) async fn bind(
        &self,
        consumer: Consumer,
        memory: MemoryBudget,
        shutdown: CancellationToken,
    ) -> Result<(SocketAddr, Option<SocketAddr>, JoinHandle<()>), ReceiverError> {
        let server = &self.checked.server;
        let handler = Arc::new(Handler { consumer: consumer.clone(), max_spans: self.checked.max_spans });
        // Stops what this start began if a later step fails.
        let started = shutdown.child_token();
        let stop_on_error = started.clone().drop_guard();
        let grpc = match &self.checked.grpc_endpoint {
            None => None,
            Some(endpoint) => {
                let service = GuardLayer {
                    auth: server.auth.clone(),
                    max_message: server.body.max_body,
                    memory: memory.clone(),
                    consumer: consumer.clone(),
                }
                .layer(TraceService {
                    handler: handler.clone(),
                    memory: memory.clone(),
                    max_message: server.body.max_body,
                });
                let limits = GrpcLimits {
                    max_connections: server.connections.max_connections,
                    request_timeout: server.body.read_timeout + ACK_PATIENCE,
                };
                let tls = server.start_tls(Alpn::H2, &self.id, &started)?;
                Some(listener::serve(endpoint, service, tls, limits, started.clone()).await?)
            }
        };
        let settings = StackSettings {
            dialect: OtlpDialect,
            path: PATH,
            not_found: NOT_FOUND,
            auth: server.auth.clone(),
            content: Encoding::required,
            body: server.body,
            memory,
        };
        let service = stack(settings, consumer, OtlpHandler(handler));
        let tls = server.start_tls(Alpn::Http1, &self.id, &started)?;
        let (addr, http_task) =
            serve(&server.endpoint, service, OtlpDialect::BUSY_JSON, server.connections, tls, started.clone()).await?;
        tracing::info!(receiver = %self.id, address = %addr, protocol = "http", "listening");
        let grpc_addr = grpc.as_ref().map(|(a, _)| *a);
        if let Some(a) = grpc_addr {
            tracing::info!(receiver = %self.id, address = %a, protocol = "grpc", "listening");
        }
        stop_on_error.disarm();
        let task = tokio::spawn(async move {
            let _ = http_task.await;
            if let Some((_, grpc_task)) = grpc {
                let _ = grpc_task.await;
            }
        });
        Ok((addr, grpc_addr, task))
    }
}

impl ReceiverConfig for OtlpReceiverConfig {
    fn listen_addrs(&self) -> Vec<String> {
        std::iter::once(self.checked.server.endpoint.clone()).chain(self.checked.grpc_endpoint.clone()).collect()
    }

    fn start(
        &self,
        consumer: Consumer,
        memory: MemoryBudget,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<JoinHandle<()>, String>> {
        let this = self.clone();
        Box::pin(async move {
            this.bind(consumer, memory, shutdown).await.map(|(_, _, task)| task).map_err(|e| e.to_string())
        })
    }
}
