//! `ramp` exporter settings (SPEC §6, §10): the three fields Ramp's Broadcast form asks
//! for (API key, base URL, headers); `privacy_mode`, `timeout`, `retry` and `queue`
//! are the engine's.

use std::collections::BTreeMap;

use gencol_config::{Diagnostic, Located, Node};
use serde::Deserialize;

use crate::http::{OtlpHttpSettings, check_headers, parse_http_url};

/// Where Ramp takes AI usage as OTLP traces, unless Ramp directs otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.ramp.com/developer/v1/ai-usage/openrouter";

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

/// As written in YAML. No `Debug`: it holds the API key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampExporterSettings {
    /// The key generated in Ramp (Settings > Integrations > OpenRouter > Generate API
    /// Key); sent as `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// The full URL spans are POSTed to.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Extra headers for every request. As for `otlp`, a header whose value is empty or
    /// null is not sent, so `${env:VAR:-}` makes a header optional.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
}

impl RampExporterSettings {
    /// Checks what serde cannot, reporting every problem at its line. No message shows
    /// the key or a header value: they are credentials.
    pub fn check(self, config: &Located<Node>) -> Result<OtlpHttpSettings, Vec<Diagnostic>> {
        let at = |key: &str| config.value.get(key).map(|n| n.loc.clone()).unwrap_or_else(|| config.loc.clone());
        let mut errors = Vec::new();

        let endpoint = parse_http_url(
            "base_url",
            &self.base_url,
            &format!("leave base_url out to use {DEFAULT_BASE_URL}, or write the full URL Ramp gave you"),
            "put the Ramp key in `api_key` (other credentials go in `headers`)",
        )
        .map_err(|m| errors.push(Diagnostic::error(&at("base_url"), m)))
        .ok();

        let api_key = check_api_key(&self.api_key).map_err(|m| errors.push(Diagnostic::error(&at("api_key"), m))).ok();

        let mut headers: Vec<(String, String)> =
            self.headers.into_iter().filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v))).collect();
        if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
            // Two sources for one credential would leave the reader guessing which is sent.
            errors.push(Diagnostic::error(
                &at("headers"),
                "headers must not set `Authorization`: the ramp exporter sends `Authorization: Bearer <api_key>`; put the Ramp key in `api_key`",
            ));
        } else if let Err(m) = check_headers(&headers) {
            errors.push(Diagnostic::error(&at("headers"), m));
        }

        match (endpoint, api_key) {
            (Some(endpoint), Some(api_key)) if errors.is_empty() => {
                headers.push(("Authorization".to_owned(), format!("Bearer {api_key}")));
                Ok(OtlpHttpSettings {
                    endpoint,
                    endpoint_key: "base_url",
                    headers,
                    // The seed specifies OTLP/HTTP with JSON encoding, which is what
                    // OpenRouter's Broadcast sends Ramp, uncompressed. Ramp documents no
                    // other encoding or Content-Encoding, so sending only what it is known
                    // to accept beats saving a few bytes on spans that are small anyway.
                    protobuf: false,
                    gzip: false,
                    tls: Default::default(),
                })
            }
            _ => Err(errors),
        }
    }
}

/// The key, trimmed, as it can go into a header. A key pasted with its `Bearer ` prefix
/// or with a stray space or newline (copied from a terminal) gets a message saying so.
pub fn check_api_key(raw: &str) -> Result<&str, String> {
    let key = raw.trim();
    if key.is_empty() {
        return Err("api_key is empty: set it to the API key generated in Ramp (Settings > Integrations > OpenRouter > Generate API Key), e.g. api_key: \"${env:RAMP_API_KEY}\"".into());
    }
    if key.get(..7).is_some_and(|prefix| prefix.eq_ignore_ascii_case("bearer ")) {
        return Err("api_key must be the key alone: gencol adds the `Bearer ` prefix itself".into());
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("api_key must be one token of visible ASCII characters (no spaces, newlines or other characters inside): check how it was copied".into());
    }
    Ok(key)
}
