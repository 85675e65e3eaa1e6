//! The HTTP side of the `raindrop` exporter: one POST of one body to the track endpoint,
//! its answer classified as RAINDROP.md says (2xx ok; 429 and 5xx retried, honouring
//! `Retry-After`; any other answer permanent).

use std::time::Duration;

use bytes::Bytes;
use gencol_engine::ExportError;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use super::config::RaindropSettings;
use crate::http::{error_chain, excerpt, mask_secrets, parse_retry_after, redacted_url};

/// Posts event batches to `{base_url}/v1/events/track` over a pooled keep-alive client.
pub struct EventsClient {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    /// The endpoint as messages show it, without userinfo or query.
    shown_endpoint: String,
    /// Marked sensitive, so no `Debug` of the request can show it.
    authorization: HeaderValue,
    /// Kept only to mask it in answers that quote it back.
    secrets: Vec<String>,
}

impl EventsClient {
    pub fn new(settings: &RaindropSettings) -> Result<Self, String> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", settings.write_key))
            .map_err(|_| "write_key cannot be sent in an HTTP header (it must be visible ASCII)".to_owned())?;
        authorization.set_sensitive(true);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("gencol/", env!("CARGO_PKG_VERSION")))
            // A redirect would turn the POST into a GET (losing the batch) or carry the key
            // to another host; a moved endpoint is the user's to fix in base_url.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot create HTTP client: {e}"))?;
        Ok(EventsClient {
            client,
            endpoint: settings.endpoint.clone(),
            shown_endpoint: redacted_url(&settings.endpoint),
            authorization,
            // As for header values, a key under 4 characters would garble ordinary text.
            secrets: Some(settings.write_key.clone()).filter(|k| k.len() >= 4).into_iter().collect(),
        })
    }

    /// Sends one JSON array body once; `test` marks it `X-Test-Connection: true`. Returns
    /// the status line on success.
    pub async fn post(&self, body: Vec<u8>, test: bool) -> Result<String, ExportError> {
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json");
        if test {
            request = request.header("x-test-connection", "true");
        }
        let response = request.body(Bytes::from(body)).send().await.map_err(|e| {
            // reqwest errors name the full URL; show the redacted one.
            ExportError::retryable(format!("cannot reach {}: {}", self.shown_endpoint, error_chain(&e.without_url())))
        })?;
        let status = response.status();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")).trim().to_owned());
        }
        // Status first, the shape every exporter's messages share: `test-connection` prints
        // it as `FAILED: <status> <excerpt>`, delivery logs it with the batch.
        let excerpt = mask_secrets(excerpt(&body), &self.secrets);
        let message = format!("{} {excerpt} (from {})", status.as_u16(), self.shown_endpoint);
        if status.as_u16() == 429 || status.is_server_error() {
            Err(ExportError::Retryable { message, retry_after })
        } else {
            Err(ExportError::permanent(message))
        }
    }
}
