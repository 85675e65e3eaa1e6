//! A Ramp-like destination: Ramp takes OTLP/HTTP traces at one path and requires the
//! Ramp API key as `Authorization: Bearer <key>`, so it is the OTLP sink with that path
//! and that header required (401 otherwise), not a server of its own. Everything the
//! sink offers (decoded spans, the request journal, scripted 429/5xx/slow answers)
//! works the same way.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use gencol_testkit::{OtlpSink, SinkOptions};
//!
//! let ramp = OtlpSink::start_with(SinkOptions::ramp("rk_test_key")).await?;
//! // base_url for the `ramp` exporter:
//! assert!(ramp.url().ends_with("/developer/v1/ai-usage/openrouter"));
//! # Ok(())
//! # }
//! ```

use crate::otlp_sink::SinkOptions;

/// The path of Ramp's OTLP endpoint (`https://api.ramp.com/developer/v1/ai-usage/openrouter`),
/// kept so that a `base_url` pointed at the test destination differs from the real one
/// only in scheme, host and port.
pub const RAMP_PATH: &str = "/developer/v1/ai-usage/openrouter";

impl SinkOptions {
    /// A Ramp-like endpoint on `127.0.0.1` (free port): [`RAMP_PATH`], and 401 for any
    /// request without `Authorization: Bearer <api_key>`.
    pub fn ramp(api_key: &str) -> SinkOptions {
        SinkOptions::default().path(RAMP_PATH).expect_header("authorization", format!("Bearer {api_key}"))
    }
}
