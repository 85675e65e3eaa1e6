//! The HTTP side of the events exporters: one POST of one JSON body to the destination's
//! ingest, its answer classified the same way for each (2xx ok; 429 and 5xx retried,
//! honouring `Retry-After`; 400, 413 and 422 refuse the content, so the engine splits the
//! batch; any other answer is permanent). Raindrop documents this in RAINDROP.md; PostHog's
//! capture answers 400/413 for what a batch holds, 401 for the key, 429 when rate or billing
//! limited and 503 for a transient failure (`rust/capture/src/api.rs` in PostHog/posthog).

use bytes::Bytes;
use gencol_engine::ExportError;
use reqwest::header::{CONTENT_TYPE, HeaderMap};

use crate::http::{Destination, http_client, send_once};

/// Posts event bodies over a pooled keep-alive client that never follows a redirect (it
/// would turn the POST into a GET, losing the batch, or carry the key to another host; a
/// moved endpoint is the user's to fix in the URL setting).
pub struct EventsClient {
    client: reqwest::Client,
    /// The endpoint, as messages show it, and the keys to mask in answers that quote them.
    destination: Destination,
    /// Sent with every request (a credential among them is marked sensitive, so no `Debug`
    /// of the request can show it).
    headers: HeaderMap,
}

impl EventsClient {
    /// `url_key` is the setting the URL came from, named in hints; `secrets` are masked in
    /// every message made from an answer.
    pub fn new(
        url: reqwest::Url,
        url_key: &'static str,
        secrets: impl IntoIterator<Item = String>,
        headers: HeaderMap,
    ) -> Result<Self, String> {
        Ok(EventsClient {
            client: http_client(&Default::default())?,
            destination: Destination::new(url, url_key, secrets),
            headers,
        })
    }

    /// Sends one JSON body once; `test` marks it `X-Test-Connection: true`. Returns the
    /// status line on success.
    pub async fn post(&self, body: Vec<u8>, test: bool) -> Result<String, ExportError> {
        let mut request = self
            .client
            .post(self.destination.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json");
        if test {
            request = request.header("x-test-connection", "true");
        }
        let answer = send_once(request.body(Bytes::from(body)), &self.destination).await?;
        if answer.status.is_success() {
            return Ok(answer.status_line());
        }
        let retryable = answer.status.as_u16() == 429 || answer.status.is_server_error();
        Err(answer.into_error(retryable, &self.destination))
    }
}
