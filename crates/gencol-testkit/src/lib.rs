//! Fake destinations for gencol, usable from tests and from the command line.
//!
//! gencol's value is in delivering spans correctly to remote backends; those backends are not
//! available offline or in CI, and they cannot be told to fail on cue. This crate provides
//! loopback HTTP servers that decode what they receive, record every request (including
//! refused ones) and can be scripted to misbehave (errors, `Retry-After`, slowness, dropped
//! connections), so exporters' retry and error paths can be tested end to end.
//!
//! Today: [`OtlpSink`], an OTLP/HTTP traces sink, which [`SinkOptions::ramp`] turns into a
//! Ramp-like endpoint (Ramp's path, bearer API key required), [`RaindropSink`], a
//! Raindrop-like events ingest that refuses what the real one refuses, and [`PostHogSink`],
//! a PostHog-like capture endpoint that checks every `$ai_generation` event against
//! PostHog's schema. The listener, scripting and journal machinery is shared so every
//! endpoint behaves the same way; the two events endpoints share [`EventsSink`] too.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use gencol_testkit::{Answer, OtlpSink};
//!
//! let sink = OtlpSink::start().await?;
//! sink.script([Answer::status(503).retry_after(1)]);
//! // ... point an exporter at sink.url() and send one span ...
//! let spans = sink.wait_for_spans(1, Duration::from_secs(10)).await;
//! assert_eq!(sink.requests()[0].status(), Some(503));
//! assert_eq!(spans.len(), 1);
//! # Ok(())
//! # }
//! ```

mod events;
mod otlp_json;
pub mod otlp_sink;
pub mod posthog;
pub mod pretty;
pub mod raindrop;
pub mod ramp;
mod server;

pub use events::{EventsRequest, EventsSink};
pub use otlp_sink::{DEFAULT_TRACES_PATH, Encoding, OtlpSink, ReceivedRequest, ReceivedSpan, SinkOptions, TlsIdentity};
pub use posthog::{POSTHOG_BATCH_PATH, POSTHOG_MAX_BODY_BYTES, PostHogOptions, PostHogRequest, PostHogSink};
pub use raindrop::{
    RAINDROP_MAX_BODY_BYTES, RAINDROP_MAX_TEXT_CHARS, RAINDROP_TRACK_PATH, RaindropOptions, RaindropRequest,
    RaindropSink,
};
pub use ramp::RAMP_PATH;
pub use server::{Answer, DEFAULT_MAX_BODY_BYTES, Outcome, is_secret_header, masked_header_value};
