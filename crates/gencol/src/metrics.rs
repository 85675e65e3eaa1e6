//! gencol's own metrics (SPEC §12): the OpenTelemetry SDK's meter provider with a
//! Prometheus reader served on `GET /metrics`, and/or a periodic OTLP/HTTP push. They
//! leave gencol only through these two ways, never through its own pipelines.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gencol_config::{MetricsConfig, OtlpMetricsConfig};
use gencol_engine::secrets::{header_secrets, url_secrets};
use gencol_engine::{CancellationToken, SecretMask, Telemetry};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long one push may take: well under the shortest interval's worth of metrics
/// piling up, long enough for a distant backend.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// A scraper that opens a connection and sends nothing is let go after this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The running metrics: what components count into, and where it goes.
pub struct OwnMetrics {
    /// Handed to the service, which registers each component it starts.
    pub telemetry: Telemetry,
    provider: Option<SdkMeterProvider>,
    server: Option<(JoinHandle<()>, CancellationToken)>,
}

impl OwnMetrics {
    /// Builds the meter provider `config` asks for and binds the `/metrics` listener.
    /// With neither configured, the instruments record nothing.
    pub async fn start(config: &MetricsConfig) -> Result<OwnMetrics, String> {
        if config.prometheus.is_none() && config.otlp.is_none() {
            return Ok(OwnMetrics { telemetry: Telemetry::disabled(), provider: None, server: None });
        }
        let resource = Resource::builder()
            .with_service_name("gencol")
            .with_attribute(KeyValue::new("service.version", gencol_model::VERSION))
            .build();
        let mut builder = SdkMeterProvider::builder().with_resource(resource);
        let mut scrape = None;
        if let Some(endpoint) = &config.prometheus {
            let registry = prometheus::Registry::new();
            // No otel_scope_* labels: every metric comes from the one `gencol` meter.
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .scope_info_enabled(false)
                .build()
                .map_err(|e| format!("cannot set up the Prometheus metrics: {e}"))?;
            builder = builder.with_reader(exporter);
            let listener = TcpListener::bind(endpoint).await.map_err(|e| {
                format!(
                    "service.telemetry.metrics.prometheus: cannot listen on {endpoint}: {e} (is another process using it? pick another port)"
                )
            })?;
            scrape = Some((listener, registry));
        }
        if let Some(otlp) = &config.otlp {
            let exporter = otlp_exporter(otlp)?;
            builder = builder.with_reader(PeriodicReader::builder(exporter).with_interval(otlp.interval).build());
        }
        let provider = builder.build();
        let telemetry = Telemetry::new(&provider.meter("gencol"));
        let server = scrape.map(|(listener, registry)| {
            let stop = CancellationToken::new();
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "serving gencol's metrics on GET /metrics");
            }
            (tokio::spawn(serve(listener, Arc::new(registry), stop.clone())), stop)
        });
        Ok(OwnMetrics { telemetry, provider: Some(provider), server })
    }

    /// Stops the listener and pushes one last time (the final counts of a run).
    pub async fn shutdown(self) {
        if let Some((task, stop)) = self.server {
            stop.cancel();
            let _ = task.await;
        }
        if let Some(provider) = self.provider {
            // The SDK's shutdown blocks on its reader thread (the final push).
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::debug!("metrics provider shutdown: {e}");
            }
        }
    }
}

/// The OTLP/HTTP metric exporter: protobuf, cumulative (as Prometheus shows them), the
/// configured headers, and a client that follows no redirect (the headers hold API keys,
/// which must not be sent on to another origin).
fn otlp_exporter(otlp: &OtlpMetricsConfig) -> Result<Logged, String> {
    let client = std::thread::spawn(|| {
        reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(PUSH_TIMEOUT).build()
    })
    .join()
    .map_err(|_| "cannot set up the OTLP metrics client".to_owned())?
    .map_err(|e| format!("cannot set up the OTLP metrics client: {e}"))?;
    let headers: HashMap<String, String> = otlp.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(otlp.endpoint.clone())
        .with_headers(headers)
        .with_timeout(PUSH_TIMEOUT)
        .with_temporality(Temporality::Cumulative)
        .build()
        // The SDK's message names the setting, never a header value.
        .map_err(|e| format!("service.telemetry.metrics.otlp: {e}"))?;
    let mut secrets: Vec<String> = otlp.headers.values().flat_map(|v| header_secrets(v)).collect();
    secrets.extend(url_secrets(&otlp.endpoint));
    Ok(Logged { inner: exporter, endpoint: otlp.endpoint.clone(), mask: SecretMask::new(secrets) })
}

/// Says when a push fails (the SDK itself logs nothing here), with header values masked
/// out of whatever the backend answered.
struct Logged {
    inner: opentelemetry_otlp::MetricExporter,
    endpoint: String,
    mask: SecretMask,
}

impl PushMetricExporter for Logged {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if let Err(e) = &result {
            let reason = self.mask.excerpt(&e.to_string(), 512);
            tracing::warn!(endpoint = %self.endpoint, "pushing gencol's metrics failed: {reason}");
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

type Body = Full<Bytes>;

/// Serves `GET /metrics` until `stop`; other paths are 404, other methods 405.
async fn serve(listener: TcpListener, registry: Arc<prometheus::Registry>, stop: CancellationToken) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true).timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer): (_, SocketAddr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let registry = registry.clone();
                let conn = http.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| {
                        let registry = registry.clone();
                        async move { Ok::<_, Infallible>(answer(&req, &registry)) }
                    }),
                );
                let stop = stop.clone();
                connections.spawn(async move {
                    tokio::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        () = stop.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "metrics connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

fn answer(req: &Request<Incoming>, registry: &prometheus::Registry) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: gencol's metrics are at GET /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n".into());
        resp.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather());
    match text {
        Ok(text) => plain(StatusCode::OK, text),
        Err(e) => {
            tracing::error!("encoding gencol's metrics failed: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n".into())
        }
    }
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(prometheus::TEXT_FORMAT));
    resp
}
