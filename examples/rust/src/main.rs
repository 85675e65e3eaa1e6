//! What an LLM gateway written in Rust does after each call: build one generation
//! record (the request the app sent, the provider's response, timing, usage, cost)
//! and post it to gencol's `generations` receiver, which broadcasts it as spans.
//!
//! ```text
//! gencol run                                    # embedded default pipeline
//! cargo run -p gencol-example-client
//! ```
//!
//! `GENCOL_URL` is the receiver (a base URL or the full `/v1/generations` URL; default
//! `http://127.0.0.1:4320/v1/generations`); `GENCOL_TOKEN`, when set, is sent as a bearer
//! token. The exit code is non-zero unless gencol answers 2xx.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DEFAULT_URL: &str = "http://127.0.0.1:4320/v1/generations";
const GENERATIONS_PATH: &str = "/v1/generations";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode, String> {
    let url = generations_url(&std::env::var("GENCOL_URL").unwrap_or_else(|_| DEFAULT_URL.into()));
    let record = build_generation().await?;
    // The workspace's reqwest has no `json` feature, so the body is serialized here and
    // the content type set by hand; gencol answers 415 to any other content type.
    let body = serde_json::to_vec(&record).map_err(|e| format!("serializing the record: {e}"))?;

    let mut request = reqwest::Client::new()
        .post(&url)
        .header(CONTENT_TYPE, "application/json")
        // A gateway must never stall on its telemetry: give up on gencol after 10s.
        .timeout(Duration::from_secs(10))
        .body(body);
    // Secrets only from the environment, never from code or arguments.
    if let Some(token) = std::env::var("GENCOL_TOKEN").ok().filter(|t| !t.is_empty()) {
        request = request.bearer_auth(token);
    }

    println!("posting generation {} to {url}", record["id"].as_str().unwrap_or_default());
    let response = request.send().await.map_err(|e| format!("cannot reach {url} (is `gencol run` listening?): {e}"))?;
    let status = response.status();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await.unwrap_or_default();

    println!("HTTP {status}");
    if !text.is_empty() {
        println!("{text}");
    }
    if let Some(seconds) = retry_after.filter(|_| status.as_u16() == 503) {
        // Backpressure: nothing of the request was kept, so a real gateway would wait
        // this long and post the same body again (the id keeps it idempotent).
        eprintln!("gencol is full; retry after {seconds}s");
    }
    Ok(if status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Accepts a base URL (`http://host:4320`) or the full `/v1/generations` URL.
fn generations_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with(GENERATIONS_PATH) { url.to_owned() } else { format!("{url}{GENERATIONS_PATH}") }
}

/// Runs one (simulated) upstream call and returns its generation record.
async fn build_generation() -> Result<Value, String> {
    // The body as the app sent it to the gateway: gencol reads `user`, `session_id`
    // and `trace` from it and keeps every other field as is.
    let request = json!({
        "model": "openai/gpt-4o",
        "messages": [
            {"role": "user", "content": "Hello!"}
        ],
        "user": "user_12345",
        "session_id": "session_abc",
        "trace": {
            "trace_id": "app_trace_001",
            "trace_name": "Chat Handler",
            "generation_name": "Generate Response",
            "environment": "staging",
            "deployment": "us-east-1"
        }
    });

    // A real gateway streams from the provider here and notes when the first chunk
    // arrives; the sleeps only make the timings in the record plausible.
    let created_at = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let first_token_at = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(380)).await;
    let completed_at = OffsetDateTime::now_utc();

    let rfc3339 = |t: OffsetDateTime| t.format(&Rfc3339).map_err(|e| format!("formatting a timestamp: {e}"));

    Ok(json!({
        // Unique per call: gencol derives span ids from it, so re-posting the same
        // record after a timeout updates the same spans instead of duplicating them.
        "id": generation_id(created_at),
        "created_at": rfc3339(created_at)?,
        "completed_at": rfc3339(completed_at)?,
        "first_token_at": rfc3339(first_token_at)?,
        "provider": "OpenAI",
        "api_key_name": "staging-chat",
        "request": request,
        "response": {
            "id": format!("chatcmpl-{:x}", created_at.unix_timestamp_nanos()),
            "model": "openai/gpt-4o-2024-08-06",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 10,
                "total_tokens": 19,
                // USD, as the gateway priced it: 9 x $2.50/M + 10 x $10/M.
                "cost": 0.0001225,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0}
            }
        }
    }))
}

/// `gen-<unix seconds>-<suffix>`, like OpenRouter's ids. The suffix joins the clock's
/// nanoseconds with the process id so two clients started together still differ.
fn generation_id(created_at: OffsetDateTime) -> String {
    format!("gen-{}-{:09}{:08x}", created_at.unix_timestamp(), created_at.nanosecond(), std::process::id())
}
