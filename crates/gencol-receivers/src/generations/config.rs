//! `generations` receiver settings (SPEC §10).

use gencol_config::ByteSize;
use serde::Deserialize;

use crate::settings::{AuthSettings, DEFAULT_MAX_BODY, ServerSettings, SettingsError};

/// Where gateways post generation records unless told otherwise.
pub(crate) const DEFAULT_ENDPOINT: &str = "127.0.0.1:4320";

/// The `service.name` generation spans are reported under by default.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "gencol";

/// As written in YAML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationsSettings {
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    #[serde(default)]
    pub auth: Option<AuthSettings>,
    #[serde(default = "default_max_body")]
    pub max_request_body_size: ByteSize,
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

impl Default for GenerationsSettings {
    fn default() -> Self {
        GenerationsSettings {
            endpoint: default_endpoint(),
            auth: None,
            max_request_body_size: DEFAULT_MAX_BODY,
            service_name: default_service_name(),
        }
    }
}

/// The checked settings the receiver runs with.
#[derive(Clone, Debug)]
pub(crate) struct CheckedSettings {
    pub server: ServerSettings,
    pub service_name: String,
}

impl GenerationsSettings {
    /// Checks what serde cannot; pure, so `gencol validate` can run it.
    pub fn check(self) -> Result<CheckedSettings, SettingsError> {
        if self.service_name.trim().is_empty() {
            return Err(SettingsError { key: "service_name", message: "service_name must not be empty".into() });
        }
        let server = ServerSettings::check(self.endpoint, self.auth, self.max_request_body_size)?;
        Ok(CheckedSettings { server, service_name: self.service_name })
    }
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_owned()
}

fn default_max_body() -> ByteSize {
    DEFAULT_MAX_BODY
}

fn default_service_name() -> String {
    DEFAULT_SERVICE_NAME.to_owned()
}
