//! `generations` receiver settings (SPEC §10).

use gencol_config::{ByteSize, Duration};
use serde::Deserialize;

use crate::settings::{
    AuthSettings, ListenerKeys, ServerSettings, SettingsError, check_max_items, default_max_connections, defaults,
};
use crate::tls::TlsSettings;

/// Where gateways post generation records unless told otherwise.
pub(crate) const DEFAULT_ENDPOINT: &str = "127.0.0.1:4320";

/// The `service.name` generation spans are reported under by default.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "gencol";

/// `max_records_per_request` when none is written: gateways post a record at a time or
/// batches of hundreds; a real record is at least a few hundred bytes, so 10,000 of them
/// is about what `max_request_body_size` holds anyway.
pub(crate) const DEFAULT_MAX_RECORDS: usize = 10_000;

/// As written in YAML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationsSettings {
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
    #[serde(default = "default_max_records")]
    pub max_records_per_request: usize,
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

impl Default for GenerationsSettings {
    fn default() -> Self {
        GenerationsSettings {
            endpoint: default_endpoint(),
            auth: None,
            max_request_body_size: defaults::max_body(),
            read_timeout: defaults::read_timeout(),
            read_idle_timeout: defaults::read_idle_timeout(),
            max_connections: default_max_connections(),
            tls: None,
            max_records_per_request: DEFAULT_MAX_RECORDS,
            service_name: default_service_name(),
        }
    }
}

/// The checked settings the receiver runs with.
#[derive(Clone, Debug)]
pub(crate) struct CheckedSettings {
    pub server: ServerSettings,
    pub max_records: usize,
    pub service_name: String,
}

impl GenerationsSettings {
    /// Checks what serde cannot, reading the `tls` files (relative to `base_dir`, the
    /// config file's folder); `gencol validate` runs it.
    pub fn check(self, base_dir: &std::path::Path) -> Result<CheckedSettings, SettingsError> {
        if self.service_name.trim().is_empty() {
            return Err(SettingsError::new("service_name", "service_name must not be empty"));
        }
        let server = ServerSettings::check(ListenerKeys {
            endpoint: self.endpoint,
            auth: self.auth,
            max_request_body_size: self.max_request_body_size,
            read_timeout: self.read_timeout.0,
            read_idle_timeout: self.read_idle_timeout.0,
            max_connections: self.max_connections,
        })?
        .with_tls(self.tls, base_dir)?;
        let max_records = check_max_items("max_records_per_request", self.max_records_per_request)?;
        Ok(CheckedSettings { server, max_records, service_name: self.service_name })
    }
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_owned()
}

fn default_max_records() -> usize {
    DEFAULT_MAX_RECORDS
}

fn default_service_name() -> String {
    DEFAULT_SERVICE_NAME.to_owned()
}
