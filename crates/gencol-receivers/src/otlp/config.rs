//! `otlp` receiver settings (SPEC §10): the same keys as `generations` but for
//! `service_name`, because OTLP spans bring their own resource, and with a maximum of
//! spans per request instead of records.

use gencol_config::{ByteSize, Duration};
use serde::Deserialize;

use crate::settings::{
    AuthSettings, ListenerKeys, ServerSettings, SettingsError, check_max_items, default_max_connections, defaults,
};
use crate::tls::TlsSettings;

/// The OTLP/HTTP port every OpenTelemetry SDK sends to by default.
pub(crate) const DEFAULT_ENDPOINT: &str = "127.0.0.1:4318";

/// The OTLP/gRPC port every OpenTelemetry SDK sends to by default.
pub(crate) const DEFAULT_GRPC_ENDPOINT: &str = "127.0.0.1:4317";

/// `max_spans_per_request` when none is written: more than twice the largest batch
/// common senders make (the Collector's batch processor sends 8,192 spans), and small
/// enough that a body of empty spans is refused after a few tens of MiB of decoding.
pub(crate) const DEFAULT_MAX_SPANS: usize = 20_000;

/// As written in YAML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtlpReceiverSettings {
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    #[serde(default)]
    pub auth: Option<AuthSettings>,
    #[serde(default = "defaults::max_body")]
    pub max_request_body_size: ByteSize,
    #[serde(default = "defaults::read_timeout")]
    pub read_timeout: Duration,
    #[serde(default = "defaults::read_idle_timeout")]
    pub read_idle_timeout: Duration,
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// TLS (and with `client_ca_file`, mTLS) on this receiver's ports.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    #[serde(default = "default_max_spans")]
    pub max_spans_per_request: usize,
    /// OTLP/gRPC beside OTLP/HTTP, with the same auth, limits and `tls`.
    #[serde(default)]
    pub grpc: Option<GrpcSettings>,
}

/// `grpc:` as written in YAML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrpcSettings {
    #[serde(default = "default_grpc_endpoint")]
    pub endpoint: String,
}

impl Default for OtlpReceiverSettings {
    fn default() -> Self {
        OtlpReceiverSettings {
            endpoint: default_endpoint(),
            auth: None,
            max_request_body_size: defaults::max_body(),
            read_timeout: defaults::read_timeout(),
            read_idle_timeout: defaults::read_idle_timeout(),
            max_connections: default_max_connections(),
            tls: None,
            max_spans_per_request: DEFAULT_MAX_SPANS,
            grpc: None,
        }
    }
}

/// The checked settings the receiver runs with.
#[derive(Clone, Debug)]
pub(crate) struct CheckedSettings {
    pub server: ServerSettings,
    pub max_spans: usize,
    /// Where OTLP/gRPC is served, when it is.
    pub grpc_endpoint: Option<String>,
}

impl OtlpReceiverSettings {
    /// Checks what serde cannot, reading the `tls` files (relative to `base_dir`, the
    /// config file's folder); `gencol validate` runs it.
    pub fn check(self, base_dir: &std::path::Path) -> Result<CheckedSettings, SettingsError> {
        let server = ServerSettings::check(ListenerKeys {
            endpoint: self.endpoint,
            auth: self.auth,
            max_request_body_size: self.max_request_body_size,
            read_timeout: self.read_timeout.0,
            read_idle_timeout: self.read_idle_timeout.0,
            max_connections: self.max_connections,
        })?
        .with_tls(self.tls, base_dir)?;
        let max_spans = check_max_items("max_spans_per_request", self.max_spans_per_request)?;
        let grpc_endpoint = match self.grpc {
            None => None,
            Some(g) => {
                gencol_config::check_host_port(&g.endpoint)
                    .map_err(|m| SettingsError::new("grpc", format!("grpc.endpoint: {m}")))?;
                if g.endpoint == server.endpoint && !g.endpoint.ends_with(":0") {
                    return Err(SettingsError::new(
                        "grpc",
                        format!(
                            "grpc.endpoint {} is the HTTP endpoint too: give gRPC its own port (OTLP/gRPC's is 4317)",
                            g.endpoint
                        ),
                    ));
                }
                Some(g.endpoint)
            }
        };
        Ok(CheckedSettings { server, max_spans, grpc_endpoint })
    }
}

fn default_grpc_endpoint() -> String {
    DEFAULT_GRPC_ENDPOINT.to_owned()
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_owned()
}

fn default_max_spans() -> usize {
    DEFAULT_MAX_SPANS
}
