//! The HTTP side of the `raindrop` exporter: one POST of one body to the track endpoint,
//! its answer classified as RAINDROP.md says (2xx ok; 429 and 5xx retried, honouring
//! `Retry-After`; any other answer permanent).

use bytes::Bytes;
use gencol_engine::ExportError;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use super::config::RaindropSettings;
use crate::http::{Destination, http_client, send_once};

/// Posts event batches to `{base_url}/v1/events/track` over a pooled keep-alive client
/// that never follows a redirect (it would turn the POST into a GET, losing the batch,
/// or carry the key to another host; a moved endpoint is the user's to fix in base_url).
pub struct EventsClient {
    client: reqwest::Client,
    /// The endpoint, as messages show it, and the write key to mask in answers that
    /// quote it back.
    destination: Destination,
    /// Marked sensitive, so no `Debug` of the request can show it.
    authorization: HeaderValue,
}

impl EventsClient {
    pub fn new(settings: &RaindropSettings) -> Result<Self, String> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", settings.write_key))
            .map_err(|_| "write_key cannot be sent in an HTTP header (it must be visible ASCII)".to_owned())?;
        authorization.set_sensitive(true);
        Ok(EventsClient {
            client: http_client(&Default::default())?,
            destination: Destination::new(settings.endpoint.clone(), "base_url", [settings.write_key.clone()]),
            authorization,
        })
    }

    /// Sends one JSON array body once; `test` marks it `X-Test-Connection: true`. Returns
    /// the status line on success.
    pub async fn post(&self, body: Vec<u8>, test: bool) -> Result<String, ExportError> {
        let mut request = self
            .client
            .post(self.destination.url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json");
        if test {
            request = request.header("x-test-connection", "true");
        }
        let answer = send_once(request.body(Bytes::from(body)), &self.destination).await?;
        if answer.status.is_success() {
            return Ok(answer.status_line());
        }
        // RAINDROP.md: 429 and every 5xx are retried; other 4xx are permanent.
        let retryable = answer.status.as_u16() == 429 || answer.status.is_server_error();
        Err(answer.into_error(retryable, &self.destination))
    }
}
