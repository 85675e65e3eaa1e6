//! What the exporters that send one event per generation (`raindrop`, `posthog`) share:
//! reading a generation from its span ([`GenerationSpan`]), keeping events and requests
//! within the destination's limits ([`limits`]), posting a body and classifying the answer
//! ([`EventsClient`]), and sending a batch's requests so that one refused request neither
//! hides nor stops the others ([`send_bodies`]).

mod client;
pub mod limits;
mod span;
#[cfg(test)]
pub mod test_support;

use std::sync::atomic::{AtomicU64, Ordering};

use gencol_engine::ExportError;

pub use client::EventsClient;
pub use span::{GenerationSpan, non_empty};

/// A key as pasted into a setting, trimmed (a key copied from a terminal often ends in a
/// newline); refused when empty (`empty_hint` says where to find it) or when it is not one
/// token of visible ASCII. Messages say what is wrong with it, never what it is.
pub fn pasted_key<'a>(raw: &'a str, setting: &str, empty_hint: &str) -> Result<&'a str, String> {
    let key = raw.trim();
    if key.is_empty() {
        return Err(format!("{setting} is empty: {empty_hint}"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{setting} must be one token of visible ASCII characters (no spaces, newlines or other characters \
             inside): check how it was copied"
        ));
    }
    Ok(key)
}

/// The events URL: `path` below the base URL's own path (a custom endpoint's or a reverse
/// proxy's path is kept), without a fragment.
pub fn endpoint_below(mut base: reqwest::Url, path: &str) -> reqwest::Url {
    let full = format!("{}{path}", base.path().trim_end_matches('/'));
    base.set_path(&full);
    base.set_fragment(None);
    base
}

/// An event that cannot be sent: even with its input and output cut to the marker it is
/// over the destination's limit, so its metadata alone is too large.
#[derive(Clone, Debug, PartialEq)]
pub struct EventTooLarge {
    pub event_id: String,
    /// Its size with input and output at their smallest.
    pub bytes: usize,
    /// The destination's limit for one event.
    pub limit: usize,
    /// The destination, as messages name it (`Raindrop`).
    pub destination: &'static str,
}

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {} is {} bytes even with its input and output cut, over {}'s limit of {} bytes",
            self.event_id, self.bytes, self.destination, self.limit
        )
    }
}

/// Encodes `events` in order, leaving out those too large to send at any size: each is
/// logged and counted in `dropped` (they are not the engine's to count, since the rest of
/// their batch is delivered).
pub fn encode_all<E>(
    exporter: &str,
    events: impl Iterator<Item = E>,
    encode: impl Fn(E) -> Result<Vec<u8>, EventTooLarge>,
    dropped: &AtomicU64,
) -> Vec<Vec<u8>> {
    let mut encoded = Vec::new();
    for event in events {
        match encode(event) {
            Ok(bytes) => encoded.push(bytes),
            Err(too_large) => {
                let total = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(exporter, event_id = %too_large.event_id, dropped_total = total, "event not sent: {too_large}");
            }
        }
    }
    encoded
}

/// Sends every body of one batch with `post`, and sums the answers up for the engine.
///
/// A retryable failure ends the batch at once: the engine resends all of it, and the
/// requests already accepted carry the same event ids again, which the destination keeps
/// once. Refusals do not stop the other requests (they may be fine); the batch then fails
/// with the first refusal's message, as `Refused` when every refusal was for the content
/// (the engine splits the batch to find the events refused), else as `Permanent`.
pub async fn send_bodies<F>(bodies: Vec<Vec<u8>>, post: impl Fn(Vec<u8>) -> F) -> Result<(), ExportError>
where
    F: Future<Output = Result<String, ExportError>>,
{
    let requests = bodies.len();
    let mut rejected: Vec<String> = Vec::new();
    let mut only_content = true;
    for body in bodies {
        match post(body).await {
            Ok(_) => {}
            Err(retry @ ExportError::Retryable { .. }) => return Err(retry),
            Err(ExportError::Refused { message }) => rejected.push(message),
            Err(ExportError::Permanent { message }) => {
                only_content = false;
                rejected.push(message);
            }
        }
    }
    let message = match rejected.as_slice() {
        [] => return Ok(()),
        [one] if requests == 1 => one.clone(),
        [first, ..] => format!("{} of {requests} requests rejected; the first: {first}", rejected.len()),
    };
    Err(if only_content { ExportError::refused(message) } else { ExportError::permanent(message) })
}
