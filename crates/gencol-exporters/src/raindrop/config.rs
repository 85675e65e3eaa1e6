//! `raindrop` exporter settings (SPEC §10) and their checks.

use std::fmt;

use gencol_config::{Diagnostic, Located, Node};
use serde::Deserialize;

use crate::events::{endpoint_below, pasted_key};
use crate::http::parse_http_url;

/// Where Raindrop's ingest lives unless the user runs a custom endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.raindrop.ai";
/// The path every batch of events is POSTed to, below `base_url`.
pub const TRACK_PATH: &str = "/v1/events/track";

/// As written in YAML. `Debug` is written by hand so the write key can never reach a log.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaindropExporterSettings {
    /// The project's Write Key (Raindrop: Settings). A secret: keep it in `${env:...}`.
    pub write_key: String,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Most events in one request; requests are also kept under 1 MiB whatever this says.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The event name for generations that were not given a `generation_name`.
    #[serde(default = "default_event_name")]
    pub event_name: String,
    /// The `user_id` of generations sent without `request.user`: Raindrop requires one.
    #[serde(default = "default_anonymous_user_id")]
    pub anonymous_user_id: String,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

fn default_batch_size() -> usize {
    50
}

fn default_event_name() -> String {
    "ai_generation".to_owned()
}

fn default_anonymous_user_id() -> String {
    "anonymous".to_owned()
}

impl fmt::Debug for RaindropExporterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaindropExporterSettings")
            .field("write_key", &"***")
            .field("base_url", &self.base_url)
            .field("batch_size", &self.batch_size)
            .field("event_name", &self.event_name)
            .field("anonymous_user_id", &self.anonymous_user_id)
            .finish()
    }
}

/// Checked settings, what the exporter is built from.
#[derive(Clone)]
pub struct RaindropSettings {
    /// `{base_url}/v1/events/track`.
    pub endpoint: reqwest::Url,
    /// Secret; only ever turned into a sensitive `Authorization` header.
    pub write_key: String,
    pub batch_size: usize,
    pub event_name: String,
    pub anonymous_user_id: String,
}

impl fmt::Debug for RaindropSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaindropSettings")
            .field("endpoint", &self.endpoint.as_str())
            .field("write_key", &"***")
            .field("batch_size", &self.batch_size)
            .field("event_name", &self.event_name)
            .field("anonymous_user_id", &self.anonymous_user_id)
            .finish()
    }
}

impl RaindropExporterSettings {
    /// Checks what serde cannot (a usable key, the URL, sizes and names), reporting every
    /// problem at its line; a pure step, so `gencol validate` catches every mistake before
    /// anything is sent. No message shows the key.
    pub fn check(self, config: &Located<Node>) -> Result<RaindropSettings, Vec<Diagnostic>> {
        let at = |key: &str| config.value.get(key).map(|n| n.loc.clone()).unwrap_or_else(|| config.loc.clone());
        let mut errors = Vec::new();
        let write_key =
            check_write_key(&self.write_key).map_err(|m| errors.push(Diagnostic::error(&at("write_key"), m))).ok();
        let endpoint =
            track_endpoint(&self.base_url).map_err(|m| errors.push(Diagnostic::error(&at("base_url"), m))).ok();
        if self.batch_size == 0 {
            errors.push(Diagnostic::error(&at("batch_size"), "batch_size must be at least 1"));
        }
        if self.event_name.trim().is_empty() {
            errors.push(Diagnostic::error(&at("event_name"), "event_name must not be empty: Raindrop requires one"));
        }
        if self.anonymous_user_id.trim().is_empty() {
            errors.push(Diagnostic::error(
                &at("anonymous_user_id"),
                "anonymous_user_id must not be empty: Raindrop requires a user_id on every event",
            ));
        }
        match (write_key, endpoint) {
            (Some(write_key), Some(endpoint)) if errors.is_empty() => Ok(RaindropSettings {
                endpoint,
                write_key: write_key.to_owned(),
                batch_size: self.batch_size,
                event_name: self.event_name,
                anonymous_user_id: self.anonymous_user_id,
            }),
            _ => Err(errors),
        }
    }
}

/// The key, trimmed, as it can go into a header. Messages say what is wrong with it, never
/// what it is.
pub fn check_write_key(raw: &str) -> Result<&str, String> {
    let trimmed = raw.trim();
    if trimmed.get(..7).is_some_and(|prefix| prefix.eq_ignore_ascii_case("bearer ")) {
        return Err("write_key must be the key alone: gencol adds the `Bearer ` prefix itself".to_owned());
    }
    pasted_key(
        raw,
        "write_key",
        "set it to your project's Write Key from Raindrop (Settings), e.g. write_key: \"${env:RAINDROP_WRITE_KEY}\"",
    )
}

/// `{base_url}/v1/events/track`, keeping the path of a custom endpoint. Userinfo is
/// refused: reqwest would send it as a second `Authorization`, and the key belongs in
/// `write_key`.
pub fn track_endpoint(base_url: &str) -> Result<reqwest::Url, String> {
    let url = parse_http_url(
        "base_url",
        base_url.trim(),
        &format!("leave base_url out to use {DEFAULT_BASE_URL}, or write your custom endpoint's base URL"),
        "put the write key in `write_key`",
    )?;
    Ok(endpoint_below(url, TRACK_PATH))
}
