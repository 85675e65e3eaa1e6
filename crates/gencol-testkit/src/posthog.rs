//! A PostHog-like capture endpoint (`POST /batch/`) that checks every `$ai_generation` event
//! against PostHog's documented schema and keeps everything it receives.
//!
//! The batch envelope is the capture API's (https://posthog.com/docs/api/capture): the
//! project API key in the body, a `batch` of events, bodies under 20 MiB. Event properties
//! follow LLM analytics' manual-capture schema
//! (https://posthog.com/docs/llm-analytics/manual-capture). The real capture answers 200
//! for anything it can parse and drops bad events later, where nobody sees them; this
//! endpoint is stricter on purpose so an exporter's mistakes show in tests: an unknown key
//! at the top or in an event, an unknown `$` property, a wrong value type, a missing field
//! or a timestamp not in gencol's form is refused with 400 naming the place
//! (`batch[1].properties.$ai_input_tokens: must be an integer`). A key of the wrong shape
//! gets capture's 401 (`API key is not valid: personal_api_key`, PostHog/posthog
//! `rust/capture/src/token.rs`); so does a well-formed key other than the expected one,
//! where the real capture would answer 200 and drop the events (PostHog/posthog#54670).
//! Accepted batches get capture's `200 {"status": 1}`; like every sink here, it can be
//! scripted to answer 429/5xx (with `Retry-After`), slowly, or not at all.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::events::{EventsRequest, EventsSink, Ingest, cut};
use crate::raindrop::is_utc_millis;
use crate::server::{Answer, Gate, Rejection, RequestHead, decode_content_encoding, media_type};

/// The capture route for a batch of events.
pub const POSTHOG_BATCH_PATH: &str = "/batch/";
/// Largest body the batch endpoint takes ("less than 20MB", the capture API docs); bigger
/// ones get 413.
pub const POSTHOG_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

const TOP_KEYS: [&str; 4] = ["api_key", "batch", "historical_migration", "sent_at"];
const EVENT_KEYS: [&str; 5] = ["event", "distinct_id", "timestamp", "uuid", "properties"];
const EVENT_NAMES: [&str; 2] = ["$ai_generation", "gencol_test_connection"];
const MESSAGE_KEYS: [&str; 3] = ["role", "content", "name"];
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
/// The characters PostHog allows in `$ai_trace_id` besides letters and digits.
const TRACE_ID_SYMBOLS: &str = "-_~.@()!':|";

/// The `$` properties an event may carry, and the type each must have.
const PROPERTY_TYPES: [(&str, Kind); 29] = [
    ("$ai_trace_id", Kind::TraceId),
    ("$ai_session_id", Kind::Text),
    ("$ai_span_id", Kind::Text),
    ("$ai_parent_id", Kind::Text),
    ("$ai_span_name", Kind::Text),
    ("$ai_model", Kind::Text),
    ("$ai_provider", Kind::Text),
    ("$ai_base_url", Kind::Text),
    ("$ai_request_url", Kind::Text),
    ("$ai_input", Kind::Messages),
    ("$ai_output_choices", Kind::Messages),
    ("$ai_tools", Kind::Array),
    ("$ai_input_tokens", Kind::Count),
    ("$ai_output_tokens", Kind::Count),
    ("$ai_cache_read_input_tokens", Kind::Count),
    ("$ai_cache_creation_input_tokens", Kind::Count),
    ("$ai_reasoning_tokens", Kind::Count),
    ("$ai_input_cost_usd", Kind::Amount),
    ("$ai_output_cost_usd", Kind::Amount),
    ("$ai_total_cost_usd", Kind::Amount),
    ("$ai_latency", Kind::Amount),
    ("$ai_time_to_first_token", Kind::Amount),
    ("$ai_stream", Kind::Flag),
    ("$ai_http_status", Kind::HttpStatus),
    ("$ai_is_error", Kind::Flag),
    ("$ai_error", Kind::TextOrObject),
    ("$process_person_profile", Kind::Flag),
    ("$lib", Kind::Text),
    ("$lib_version", Kind::Text),
];

/// What a property's value must be.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    TraceId,
    TextOrObject,
    /// A non-negative integer.
    Count,
    /// A non-negative number.
    Amount,
    Flag,
    HttpStatus,
    Array,
    /// `[{role, content}]`.
    Messages,
}

/// Settings of a [`PostHogSink`].
#[derive(Clone)]
pub struct PostHogOptions {
    /// Address to bind; port 0 picks a free port so parallel tests never collide.
    pub addr: SocketAddr,
    /// The project API key every body must carry as `api_key`, else 401.
    pub api_key: String,
    /// The answer used whenever no scripted answer is queued; `None` gives the normal
    /// verdict.
    pub fallback: Option<Answer>,
}

impl std::fmt::Debug for PostHogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostHogOptions")
            .field("addr", &self.addr)
            .field("api_key", &"***")
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl PostHogOptions {
    /// On `127.0.0.1` with a free port, accepting `api_key`.
    pub fn new(api_key: impl Into<String>) -> Self {
        PostHogOptions { addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), api_key: api_key.into(), fallback: None }
    }

    /// Sets [`PostHogOptions::addr`].
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Sets [`PostHogOptions::fallback`].
    pub fn fallback(mut self, answer: Answer) -> Self {
        self.fallback = Some(answer);
        self
    }
}

/// One request as the PostHog-like sink saw it; its `events` are the batch's events.
pub type PostHogRequest = EventsRequest;

/// A running PostHog-like capture endpoint on the loopback interface; what it received and
/// how it answered is read through [`EventsSink`], which it dereferences to. Dropping it (or
/// calling [`PostHogSink::shutdown`]) stops the server.
#[derive(Debug)]
pub struct PostHogSink {
    sink: EventsSink,
}

impl PostHogSink {
    /// Starts a sink on `127.0.0.1` with a free port, accepting `api_key`.
    pub async fn start(api_key: &str) -> std::io::Result<PostHogSink> {
        PostHogSink::start_with(PostHogOptions::new(api_key)).await
    }

    /// Starts a sink with the given options.
    pub async fn start_with(opts: PostHogOptions) -> std::io::Result<PostHogSink> {
        let gate = Gate { path: POSTHOG_BATCH_PATH.to_owned(), expect_header: None };
        let ingest = PostHogIngest { api_key: opts.api_key };
        let sink = EventsSink::start(opts.addr, gate, opts.fallback, Box::new(ingest)).await?;
        Ok(PostHogSink { sink })
    }

    /// The full batch URL (`{url}/batch/`); the exporter's `host` is [`EventsSink::url`].
    pub fn batch_url(&self) -> String {
        format!("{}{POSTHOG_BATCH_PATH}", self.url())
    }

    /// Stops the server; same as dropping the sink.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Deref for PostHogSink {
    type Target = EventsSink;

    fn deref(&self) -> &EventsSink {
        &self.sink
    }
}

/// PostHog's capture rules, made strict (see the module docs).
struct PostHogIngest {
    api_key: String,
}

impl std::fmt::Debug for PostHogIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostHogIngest").field("api_key", &"***").finish()
    }
}

impl Ingest for PostHogIngest {
    fn verdict(&self, head: &RequestHead, raw: &Result<Bytes, Rejection>) -> Result<Vec<Value>, Rejection> {
        let raw = raw.as_ref().map_err(Clone::clone)?;
        if raw.len() > POSTHOG_MAX_BODY_BYTES {
            return Err(Rejection::new(
                413,
                format!("body is {} bytes, over the limit of {POSTHOG_MAX_BODY_BYTES}", raw.len()),
            ));
        }
        match head.header("content-type").map(media_type) {
            Some(t) if t == "application/json" => {}
            Some(t) => return Err(Rejection::new(400, format!("Content-Type must be application/json, got {t}"))),
            None => return Err(Rejection::new(400, "Content-Type must be application/json")),
        }
        let body = decode_content_encoding(head.header("content-encoding"), raw, POSTHOG_MAX_BODY_BYTES)?;
        check_request(&body, &self.api_key)
    }

    /// Capture's answer: `200 {"status": 1}`.
    fn accepted(&self) -> (u16, Vec<(String, String)>, Bytes) {
        (200, vec![("content-type".to_owned(), "application/json".to_owned())], Bytes::from_static(b"{\"status\":1}"))
    }

    /// Capture answers its errors as plain text.
    fn refusal(&self, message: &str) -> (Vec<(String, String)>, Bytes) {
        (vec![("content-type".to_owned(), "text/plain; charset=utf-8".to_owned())], Bytes::from(message.to_owned()))
    }

    fn describer(&self) -> fn(&mut String, &Value) {
        render_event
    }
}

fn render_event(out: &mut String, event: &Value) {
    let field = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("?");
    let _ = writeln!(
        out,
        "   event {} {:?} distinct_id={} at {}",
        field("uuid"),
        field("event"),
        field("distinct_id"),
        field("timestamp")
    );
    let Some(properties) = event.get("properties").and_then(Value::as_object) else { return };
    let mut rest = properties.clone();
    for key in ["$ai_input", "$ai_output_choices"] {
        if let Some(messages) = rest.remove(key) {
            let _ = writeln!(out, "     {key}: {}", cut(&messages.to_string()));
        }
    }
    let _ = writeln!(out, "     properties: {}", cut(&Value::Object(rest).to_string()));
}

/// Checks a request body against the endpoint's rules; the batch's events when it passes,
/// else the refusal: 401 for the key, 400 naming the place for anything else.
pub(crate) fn check_request(body: &[u8], expected_key: &str) -> Result<Vec<Value>, Rejection> {
    let bad = |message: String| Rejection::new(400, message);
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("failed to parse request: {e}")))?;
    let Value::Object(request) = value else {
        return Err(bad("the body must be a JSON object with api_key and batch".to_owned()));
    };
    if let Some(key) = request.keys().find(|k| !TOP_KEYS.contains(&k.as_str())) {
        return Err(bad(format!("{key}: unknown key (allowed: {})", TOP_KEYS.join(", "))));
    }
    check_key(request.get("api_key"), expected_key)?;
    if request.get("historical_migration").is_some_and(|v| !v.is_boolean()) {
        return Err(bad("historical_migration: must be a boolean".to_owned()));
    }
    if request.get("sent_at").is_some_and(|v| !v.is_string()) {
        return Err(bad("sent_at: must be a string".to_owned()));
    }
    let events = match request.get("batch") {
        None => return Err(bad("batch: missing".to_owned())),
        Some(Value::Array(events)) if events.is_empty() => return Err(bad("request holds no event".to_owned())),
        Some(Value::Array(events)) => events,
        Some(_) => return Err(bad("batch: must be an array of events".to_owned())),
    };
    for (i, event) in events.iter().enumerate() {
        check_event(event).map_err(|problem| bad(format!("batch[{i}]{problem}")))?;
    }
    Ok(events.clone())
}

/// Capture's key checks (`validate_token`), then the one key this endpoint knows.
fn check_key(key: Option<&Value>, expected: &str) -> Result<(), Rejection> {
    let invalid = |reason: &str| Err(Rejection::new(401, format!("API key is not valid: {reason}")));
    let Some(Value::String(key)) = key else {
        return Err(Rejection::new(401, "event submitted without an api_key"));
    };
    let key = key.trim();
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > 64 {
        return invalid("too_long");
    }
    if !key.is_ascii() {
        return invalid("not_ascii");
    }
    if key.starts_with("phx_") {
        return invalid("personal_api_key");
    }
    if key != expected {
        return invalid("not this project's key (gencol-testkit knows only the key it was started with)");
    }
    Ok(())
}

fn check_event(event: &Value) -> Result<(), String> {
    let Value::Object(event) = event else {
        return Err(": an event must be a JSON object".to_owned());
    };
    if let Some(key) = event.keys().find(|k| !EVENT_KEYS.contains(&k.as_str())) {
        return Err(format!(".{key}: unknown key (allowed: {})", EVENT_KEYS.join(", ")));
    }
    let text = |key: &str| match event.get(key) {
        None | Some(Value::Null) => Err(format!(".{key}: missing")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!(".{key}: must not be empty")),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(format!(".{key}: must be a string")),
    };
    let name = text("event")?;
    if !EVENT_NAMES.contains(&name) {
        return Err(format!(
            ".event: {name:?} is not an event gencol sends (expected one of {})",
            EVENT_NAMES.join(", ")
        ));
    }
    text("distinct_id")?;
    let timestamp = text("timestamp")?;
    if !is_utc_millis(timestamp) {
        return Err(format!(
            ".timestamp: {timestamp:?} is not RFC 3339 UTC with milliseconds (2026-11-22T10:00:00.000Z)"
        ));
    }
    let uuid = text("uuid")?;
    if !is_uuid(uuid) {
        return Err(format!(".uuid: {uuid:?} is not a UUID (8-4-4-4-12 hex digits)"));
    }
    let Some(Value::Object(properties)) = event.get("properties") else {
        return Err(".properties: missing or not an object".to_owned());
    };
    check_properties(name, properties).map_err(|problem| format!(".properties{problem}"))
}

fn check_properties(event: &str, properties: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in properties {
        match PROPERTY_TYPES.iter().find(|(name, _)| name == key) {
            Some((_, kind)) => check_value(*kind, value).map_err(|problem| format!(".{key}{problem}"))?,
            None if key.starts_with('$') => return Err(format!(".{key}: not a PostHog property gencol may send")),
            None => {}
        }
    }
    let required: &[&str] = if event == "$ai_generation" { &["$ai_trace_id"] } else { &[] };
    if let Some(missing) = required.iter().find(|k| !properties.contains_key(**k)) {
        return Err(format!(".{missing}: missing"));
    }
    if event == "gencol_test_connection" && properties.get("gencol.test_connection") != Some(&Value::Bool(true)) {
        return Err(".gencol.test_connection: must be true on the test event".to_owned());
    }
    Ok(())
}

fn check_value(kind: Kind, value: &Value) -> Result<(), String> {
    let ok = match kind {
        Kind::Text => value.as_str().is_some_and(|s| !s.trim().is_empty()),
        Kind::TraceId => {
            return match value.as_str() {
                Some(id)
                    if !id.is_empty()
                        && id.chars().all(|c| c.is_ascii_alphanumeric() || TRACE_ID_SYMBOLS.contains(c)) =>
                {
                    Ok(())
                }
                _ => Err(format!(": must be a non-empty string of letters, digits and {TRACE_ID_SYMBOLS}")),
            };
        }
        Kind::TextOrObject => value.is_string() || value.is_object(),
        Kind::Count => value.is_u64(),
        Kind::Amount => value.as_f64().is_some_and(|n| n >= 0.0),
        Kind::Flag => value.is_boolean(),
        Kind::HttpStatus => value.as_u64().is_some_and(|s| (100..=599).contains(&s)),
        Kind::Array => value.is_array(),
        Kind::Messages => return check_messages(value),
    };
    if ok { Ok(()) } else { Err(format!(": must be {}", describe(kind))) }
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Text | Kind::TraceId => "a non-empty string",
        Kind::TextOrObject => "a string or an object",
        Kind::Count => "an integer (0 or more)",
        Kind::Amount => "a number (0 or more)",
        Kind::Flag => "a boolean",
        Kind::HttpStatus => "an HTTP status (an integer from 100 to 599)",
        Kind::Array => "an array",
        Kind::Messages => "an array of {role, content} messages",
    }
}

/// `[{role, content}]`, content a string or an array of typed parts.
fn check_messages(value: &Value) -> Result<(), String> {
    let Value::Array(messages) = value else {
        return Err(format!(": must be {}", describe(Kind::Messages)));
    };
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(format!("[{i}]: must be an object"));
        };
        if let Some(key) = message.keys().find(|k| !MESSAGE_KEYS.contains(&k.as_str())) {
            return Err(format!("[{i}].{key}: unknown key (allowed: {})", MESSAGE_KEYS.join(", ")));
        }
        match message.get("role").and_then(Value::as_str) {
            Some(role) if ROLES.contains(&role) => {}
            _ => return Err(format!("[{i}].role: must be one of {}", ROLES.join(", "))),
        }
        match message.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                if let Some(j) = parts.iter().position(|p| !p.get("type").is_some_and(Value::is_string)) {
                    return Err(format!("[{i}].content[{j}]: a content part must be an object with a string type"));
                }
            }
            None => return Err(format!("[{i}].content: missing")),
            Some(_) => return Err(format!("[{i}].content: must be a string or an array of parts")),
        }
        if message.get("name").is_some_and(|n| !n.is_string()) {
            return Err(format!("[{i}].name: must be a string"));
        }
    }
    Ok(())
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex digits.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "phc_testkit_4f9a";

    fn generation() -> Value {
        json!({"event": "$ai_generation", "distinct_id": "user_35", "timestamp": "2026-11-22T10:05:12.000Z",
               "uuid": "0f8fad5b-d9cb-469f-a165-70867728950e",
               "properties": {"$ai_trace_id": "expense_analysis_001", "$ai_model": "m", "$ai_provider": "openai",
                              "$ai_input": [{"role": "user", "content": "hi"}],
                              "$ai_output_choices": [{"role": "assistant", "content": [{"type": "text", "text": "yo"}]}],
                              "$ai_input_tokens": 12, "$ai_output_tokens": 3, "$ai_latency": 1.25,
                              "$ai_total_cost_usd": 0.0021, "$ai_is_error": false, "$ai_http_status": 200,
                              "$process_person_profile": false, "feature": "assistant", "team": {"size": 4}}})
    }

    fn body(events: Vec<Value>) -> Vec<u8> {
        json!({"api_key": KEY, "historical_migration": false, "batch": events}).to_string().into_bytes()
    }

    fn refused(event: Value) -> Rejection {
        check_request(&body(vec![generation(), event]), KEY).expect_err("refused")
    }

    fn with(mut event: Value, path: &[&str], value: Option<Value>) -> Value {
        let (last, parents) = path.split_last().expect("a path");
        let mut target = &mut event;
        for p in parents {
            target = &mut target[*p];
        }
        let map = target.as_object_mut().expect("an object");
        match value {
            Some(v) => map.insert((*last).to_owned(), v),
            None => map.remove(*last),
        };
        event
    }

    #[test]
    fn accepts_a_documented_generation_and_the_test_event() {
        let test = json!({"event": "gencol_test_connection", "distinct_id": "anonymous",
            "timestamp": "2026-11-22T10:05:12.000Z", "uuid": "0f8fad5b-d9cb-469f-a165-70867728950f",
            "properties": {"gencol.test_connection": true, "$lib": "gencol"}});
        let events = check_request(&body(vec![generation(), test]), KEY).expect("valid");
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn the_key_is_checked_as_capture_does_with_401() {
        for (key, reason) in [
            (json!(""), "API key is not valid: empty"),
            (json!("phx_personal"), "API key is not valid: personal_api_key"),
            (json!("x".repeat(65)), "API key is not valid: too_long"),
            (json!("phc_other"), "API key is not valid: not this project's key"),
        ] {
            let request = json!({"api_key": key, "batch": [generation()]}).to_string();
            let rejection = check_request(request.as_bytes(), KEY).expect_err("refused");
            assert_eq!(rejection.status, 401);
            assert!(rejection.message.starts_with(reason), "{}", rejection.message);
        }
        let rejection = check_request(json!({"batch": [generation()]}).to_string().as_bytes(), KEY).expect_err("401");
        assert_eq!((rejection.status, rejection.message.as_str()), (401, "event submitted without an api_key"));
    }

    #[test]
    fn refuses_unknown_keys_and_wrong_types_naming_the_place() {
        let top = json!({"api_key": KEY, "batch": [generation()], "token": "x"}).to_string();
        let rejection = check_request(top.as_bytes(), KEY).expect_err("unknown top-level key");
        assert_eq!(rejection.status, 400);
        assert!(rejection.message.starts_with("token: unknown key"), "{}", rejection.message);
        assert_eq!(check_request(&body(Vec::new()), KEY).expect_err("empty").message, "request holds no event");
        assert!(
            refused(with(generation(), &["extra"], Some(json!(1)))).message.starts_with("batch[1].extra: unknown key")
        );
        for key in ["event", "distinct_id", "timestamp", "uuid"] {
            assert_eq!(refused(with(generation(), &[key], None)).message, format!("batch[1].{key}: missing"));
        }
        let cases = [
            (&["event"][..], json!("$pageview"), "batch[1].event: \"$pageview\" is not an event gencol sends"),
            (&["uuid"], json!("gen-1"), "batch[1].uuid"),
            (&["timestamp"], json!("2026-11-22T10:05:12Z"), "batch[1].timestamp"),
            (
                &["properties", "$ai_input_tokens"],
                json!(12.5),
                "batch[1].properties.$ai_input_tokens: must be an integer",
            ),
            (&["properties", "$ai_latency"], json!("1.2"), "batch[1].properties.$ai_latency: must be a number"),
            (&["properties", "$ai_is_error"], json!("false"), "batch[1].properties.$ai_is_error: must be a boolean"),
            (&["properties", "$ai_trace_id"], json!("a b"), "batch[1].properties.$ai_trace_id: must be a non-empty"),
            (&["properties", "$ai_latency_ms"], json!(3), "batch[1].properties.$ai_latency_ms: not a PostHog property"),
            (&["properties", "$ai_input"], json!("hi"), "batch[1].properties.$ai_input: must be an array"),
            (
                &["properties", "$ai_input"],
                json!([{"role": "human", "content": "hi"}]),
                "batch[1].properties.$ai_input[0].role",
            ),
            (
                &["properties", "$ai_input"],
                json!([{"role": "user", "text": "hi"}]),
                "batch[1].properties.$ai_input[0].text: unknown key",
            ),
            (
                &["properties", "$ai_output_choices"],
                json!([{"role": "assistant"}]),
                "batch[1].properties.$ai_output_choices[0].content: missing",
            ),
            (
                &["properties", "$ai_http_status"],
                json!(42),
                "batch[1].properties.$ai_http_status: must be an HTTP status",
            ),
        ];
        for (path, value, expected) in cases {
            let message = refused(with(generation(), path, Some(value))).message;
            assert!(message.starts_with(expected), "{path:?}: {message}");
        }
        let no_trace = with(generation(), &["properties", "$ai_trace_id"], None);
        assert_eq!(refused(no_trace).message, "batch[1].properties.$ai_trace_id: missing");
    }

    #[test]
    fn uuids_are_recognised() {
        assert!(is_uuid("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(!is_uuid("0f8fad5b-d9cb-469f-a165-70867728950"));
        assert!(!is_uuid("0f8fad5bd9cb469fa16570867728950e"));
        assert!(!is_uuid("0f8fad5b-d9cb-469f-a165-70867728950g"));
    }
}
