//! `otlp` receiver settings (SPEC §10): the same keys as `generations` but for
//! `service_name`, because OTLP spans bring their own resource.

use gencol_config::ByteSize;
use serde::Deserialize;

use crate::settings::{AuthSettings, DEFAULT_MAX_BODY, ServerSettings, SettingsError};

/// The OTLP/HTTP port every OpenTelemetry SDK sends to by default.
pub(crate) const DEFAULT_ENDPOINT: &str = "127.0.0.1:4318";

/// As written in YAML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtlpReceiverSettings {
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    #[serde(default)]
    pub auth: Option<AuthSettings>,
    #[serde(default = "default_max_body")]
    pub max_request_body_size: ByteSize,
}

impl Default for OtlpReceiverSettings {
    fn default() -> Self {
        OtlpReceiverSettings { endpoint: default_endpoint(), auth: None, max_request_body_size: DEFAULT_MAX_BODY }
    }
}

impl OtlpReceiverSettings {
    /// Checks what serde cannot; pure, so `gencol validate` can run it.
    pub fn check(self) -> Result<ServerSettings, SettingsError> {
        ServerSettings::check(self.endpoint, self.auth, self.max_request_body_size)
    }
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_owned()
}

fn default_max_body() -> ByteSize {
    DEFAULT_MAX_BODY
}
