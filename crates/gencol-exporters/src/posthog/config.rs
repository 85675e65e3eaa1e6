//! `posthog` exporter settings and their checks.

use std::fmt;

use gencol_config::{Diagnostic, Located, Node};
use serde::Deserialize;

use crate::events::{endpoint_below, pasted_key};
use crate::http::parse_http_url;

/// PostHog Cloud US; EU Cloud is `https://eu.i.posthog.com`, a self-hosted PostHog its
/// own domain (https://posthog.com/docs/api/capture).
pub const DEFAULT_HOST: &str = "https://us.i.posthog.com";
/// The capture route for many events in one request, below `host`.
pub const BATCH_PATH: &str = "/batch/";
/// PostHog's capture refuses longer keys (`validate_token` in PostHog/posthog
/// `rust/capture/src/token.rs`).
const MAX_KEY_LEN: usize = 64;

/// As written in YAML. `Debug` is written by hand so the API key can never reach a log.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostHogExporterSettings {
    /// The project API key (`phc_...`, PostHog: Project settings). A secret: keep it in
    /// `${env:...}`.
    pub api_key: String,
    #[serde(default = "default_host")]
    pub host: String,
    /// Most events in one request; requests are also kept under 5 MiB whatever this says.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The `distinct_id` of generations sent without `request.user`: PostHog requires one.
    #[serde(default = "default_anonymous_distinct_id")]
    pub anonymous_distinct_id: String,
}

fn default_host() -> String {
    DEFAULT_HOST.to_owned()
}

fn default_batch_size() -> usize {
    100
}

fn default_anonymous_distinct_id() -> String {
    "anonymous".to_owned()
}

impl fmt::Debug for PostHogExporterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostHogExporterSettings")
            .field("api_key", &"***")
            .field("host", &self.host)
            .field("batch_size", &self.batch_size)
            .field("anonymous_distinct_id", &self.anonymous_distinct_id)
            .finish()
    }
}

/// Checked settings, what the exporter is built from.
#[derive(Clone)]
pub struct PostHogSettings {
    /// `{host}/batch/`.
    pub endpoint: reqwest::Url,
    /// Secret; only ever written into request bodies, which are never logged.
    pub api_key: String,
    pub batch_size: usize,
    pub anonymous_distinct_id: String,
}

impl fmt::Debug for PostHogSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostHogSettings")
            .field("endpoint", &self.endpoint.as_str())
            .field("api_key", &"***")
            .field("batch_size", &self.batch_size)
            .field("anonymous_distinct_id", &self.anonymous_distinct_id)
            .finish()
    }
}

impl PostHogExporterSettings {
    /// Checks what serde cannot (a key PostHog's capture takes, the URL, sizes and names),
    /// reporting every problem at its line; a pure step, so `gencol validate` catches every
    /// mistake before anything is sent. No message shows the key.
    pub fn check(self, config: &Located<Node>) -> Result<PostHogSettings, Vec<Diagnostic>> {
        let at = |key: &str| config.value.get(key).map(|n| n.loc.clone()).unwrap_or_else(|| config.loc.clone());
        let mut errors = Vec::new();
        let api_key = check_api_key(&self.api_key).map_err(|m| errors.push(Diagnostic::error(&at("api_key"), m))).ok();
        let endpoint = batch_endpoint(&self.host).map_err(|m| errors.push(Diagnostic::error(&at("host"), m))).ok();
        if self.batch_size == 0 {
            errors.push(Diagnostic::error(&at("batch_size"), "batch_size must be at least 1"));
        }
        if self.anonymous_distinct_id.trim().is_empty() {
            errors.push(Diagnostic::error(
                &at("anonymous_distinct_id"),
                "anonymous_distinct_id must not be empty: PostHog requires a distinct_id on every event",
            ));
        }
        match (api_key, endpoint) {
            (Some(api_key), Some(endpoint)) if errors.is_empty() => Ok(PostHogSettings {
                endpoint,
                api_key: api_key.to_owned(),
                batch_size: self.batch_size,
                anonymous_distinct_id: self.anonymous_distinct_id,
            }),
            _ => Err(errors),
        }
    }
}

/// The key, trimmed, if PostHog's capture would take it: the checks of its
/// `validate_token`. Messages say what is wrong with it, never what it is.
pub fn check_api_key(raw: &str) -> Result<&str, String> {
    let key = pasted_key(
        raw,
        "api_key",
        "set it to your PostHog project API key (Project settings; it starts with phc_), e.g. \
         api_key: \"${env:POSTHOG_API_KEY}\"",
    )?;
    if key.starts_with("phx_") {
        return Err("api_key is a personal API key (phx_...), which PostHog's capture refuses: use the project API \
                    key (phc_...) from Project settings"
            .to_owned());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "api_key is {} characters, over the {MAX_KEY_LEN} PostHog's capture takes: check how it was copied",
            key.len()
        ));
    }
    Ok(key)
}

/// `{host}/batch/`, keeping the path of a host behind a reverse proxy. Userinfo is refused:
/// reqwest would send it as Basic auth, and the key belongs in `api_key`.
pub fn batch_endpoint(host: &str) -> Result<reqwest::Url, String> {
    let url = parse_http_url(
        "host",
        host.trim(),
        &format!(
            "leave host out to use {DEFAULT_HOST} (US Cloud), or write https://eu.i.posthog.com (EU Cloud) or your \
             self-hosted PostHog's URL"
        ),
        "put the project API key in `api_key`",
    )?;
    Ok(endpoint_below(url, BATCH_PATH))
}
