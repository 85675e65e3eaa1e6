//! A Raindrop-like events endpoint (`POST /v1/events/track`) that enforces the real ingest's
//! rules and keeps everything it receives.
//!
//! Raindrop's ingest is strict: a batch with one unknown key, a missing field or a badly
//! formatted timestamp is refused whole, and bodies over 1 MiB are refused too. An exporter
//! that is only tested against a lenient fake would lose data in production, so this sink
//! refuses exactly what the ingest refuses (see `RAINDROP.md`), names the offending event and
//! field in its 400, records every request (refused ones included) and, like the OTLP sink,
//! can be scripted to answer 429/5xx, slowly, or not at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::server::{
    Answer, DEFAULT_MAX_BODY_BYTES, Gate, Handler, Journal, Listener, Outcome, PendingGuard, ReadRequest, Rejection,
    Reply, RequestHead, Script, masked_header_value, media_type,
};

/// The only path the ingest serves for events.
pub const RAINDROP_TRACK_PATH: &str = "/v1/events/track";
/// Largest body the ingest takes; bigger ones get 413.
pub const RAINDROP_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest `ai_data.input` / `ai_data.output`, in characters.
pub const RAINDROP_MAX_TEXT_CHARS: usize = 1_000_000;

const EVENT_KEYS: [&str; 7] = ["event_id", "user_id", "event", "timestamp", "properties", "ai_data", "attachments"];
const REQUIRED_KEYS: [&str; 4] = ["event_id", "user_id", "event", "timestamp"];
const AI_DATA_KEYS: [&str; 4] = ["model", "input", "output", "convo_id"];
const ATTACHMENT_KEYS: [&str; 5] = ["type", "value", "role", "name", "language"];
const ATTACHMENT_TYPES: [&str; 4] = ["code", "text", "image", "iframe"];
const ATTACHMENT_ROLES: [&str; 2] = ["input", "output"];

/// Longest string printed in full by [`RaindropRequest::render`].
const MAX_PRINTED_CHARS: usize = 240;

/// Settings of a [`RaindropSink`].
#[derive(Clone)]
pub struct RaindropOptions {
    /// Address to bind; port 0 picks a free port so parallel tests never collide.
    pub addr: SocketAddr,
    /// The write key every request must carry as `Authorization: Bearer <key>`, else 401.
    pub write_key: String,
    /// The answer used whenever no scripted answer is queued (e.g. `Answer::status(503)` for
    /// "ingest down", `Answer::delay(..)` for "always slow"); `None` gives the normal verdict.
    pub fallback: Option<Answer>,
}

impl std::fmt::Debug for RaindropOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaindropOptions")
            .field("addr", &self.addr)
            .field("write_key", &"***")
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl RaindropOptions {
    /// On `127.0.0.1` with a free port, accepting `write_key`.
    pub fn new(write_key: impl Into<String>) -> Self {
        RaindropOptions {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            write_key: write_key.into(),
            fallback: None,
        }
    }

    /// Sets [`RaindropOptions::addr`].
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Sets [`RaindropOptions::fallback`].
    pub fn fallback(mut self, answer: Answer) -> Self {
        self.fallback = Some(answer);
        self
    }
}

/// One request as the sink saw it, kept whatever the answer was.
#[derive(Clone, Debug)]
pub struct RaindropRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path without the query.
    pub path: String,
    /// Headers with lower-cased names; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The body as received (empty when it was too large to read at all).
    pub body: Bytes,
    /// Length of the body in bytes, as received.
    pub body_len: usize,
    /// The events, when the body obeyed every rule of the ingest.
    pub events: Option<Vec<Value>>,
    /// Why the body breaks the ingest's rules, if it does.
    pub error: Option<String>,
    /// When the request head arrived; differences between retries show the back-off.
    pub received_at: Instant,
    /// What the sink answered.
    pub answer: Outcome,
}

impl RaindropRequest {
    /// A header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The HTTP status answered, if a response was sent.
    pub fn status(&self) -> Option<u16> {
        self.answer.status()
    }

    /// Whether the sink told the client its events were accepted (2xx).
    pub fn is_success(&self) -> bool {
        self.answer.is_success()
    }

    /// Number of valid events in the body (0 when the body broke a rule).
    pub fn event_count(&self) -> usize {
        self.events.as_ref().map_or(0, Vec::len)
    }

    /// A summary for people: status, size, headers with secrets masked, why it was refused,
    /// and each event with long texts cut. Ends with a newline.
    pub fn render(&self, number: usize, since: Instant) -> String {
        let mut out = String::new();
        let elapsed = self.received_at.saturating_duration_since(since).as_secs_f64();
        let answer = match &self.answer {
            Outcome::Replied { status, .. } => status.to_string(),
            Outcome::Closed => "closed (no response, as scripted)".to_owned(),
            Outcome::Abandoned => "abandoned (client went away before the answer)".to_owned(),
            Outcome::Pending => "pending".to_owned(),
        };
        let _ = writeln!(
            out,
            "#{number} +{elapsed:.3}s {} {} -> {answer} | {} B | {} events",
            self.method,
            self.path,
            self.body_len,
            self.event_count()
        );
        let headers: Vec<String> =
            self.headers.iter().map(|(name, value)| format!("{name}={}", masked_header_value(name, value))).collect();
        let _ = writeln!(out, "   headers: {}", headers.join(", "));
        if let Outcome::Replied { status, body, .. } = &self.answer
            && !(200..300).contains(status)
            && !body.is_empty()
        {
            let _ = writeln!(out, "   answer: {}", cut(String::from_utf8_lossy(body).trim()));
        }
        if let Some(error) = &self.error
            && self.is_success()
        {
            let _ = writeln!(out, "   body breaks the ingest's rules (accepted only because scripted): {error}");
        }
        for event in self.events.iter().flatten() {
            render_event(&mut out, event);
        }
        out
    }
}

fn render_event(out: &mut String, event: &Value) {
    let field = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("?");
    let _ = writeln!(
        out,
        "   event {} {:?} user={} at {}",
        field("event_id"),
        field("event"),
        field("user_id"),
        field("timestamp")
    );
    if let Some(ai_data) = event.get("ai_data").and_then(Value::as_object) {
        for (key, value) in ai_data {
            let _ = writeln!(out, "     ai_data.{key}: {}", cut(value.as_str().unwrap_or_default()));
        }
    }
    if let Some(properties) = event.get("properties") {
        let _ = writeln!(out, "     properties: {}", cut(&properties.to_string()));
    }
}

/// Long strings (prompts, completions) cut so a delivery stays readable, with their length.
fn cut(s: &str) -> String {
    let count = s.chars().count();
    if count <= MAX_PRINTED_CHARS {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX_PRINTED_CHARS).collect();
        format!("{head}…({count} chars)")
    }
}

/// Checks a request body against the ingest's rules; the events when it passes, else a
/// message naming the event index and field (`[2].ai_data.prompt: unknown key`).
pub fn check_batch(body: &[u8]) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Array(events) = value else {
        return Err("body must be a JSON array of events".to_owned());
    };
    for (i, event) in events.iter().enumerate() {
        check_event(event).map_err(|problem| format!("[{i}]{problem}"))?;
    }
    Ok(events)
}

fn check_event(event: &Value) -> Result<(), String> {
    let Value::Object(event) = event else {
        return Err(": an event must be a JSON object".to_owned());
    };
    if let Some(key) = event.keys().find(|k| !EVENT_KEYS.contains(&k.as_str())) {
        return Err(format!(".{key}: unknown key (allowed: {})", EVENT_KEYS.join(", ")));
    }
    for key in REQUIRED_KEYS {
        match event.get(key) {
            None | Some(Value::Null) => return Err(format!(".{key}: missing")),
            Some(Value::String(s)) if s.trim().is_empty() => return Err(format!(".{key}: must not be empty")),
            Some(Value::String(_)) => {}
            Some(_) => return Err(format!(".{key}: must be a string")),
        }
    }
    if let Some(Value::String(ts)) = event.get("timestamp")
        && !is_utc_millis(ts)
    {
        return Err(format!(".timestamp: {ts:?} is not RFC 3339 UTC with milliseconds (2026-11-22T10:00:00.000Z)"));
    }
    if let Some(properties) = event.get("properties")
        && !properties.is_object()
    {
        return Err(".properties: must be an object".to_owned());
    }
    if let Some(ai_data) = event.get("ai_data") {
        check_ai_data(ai_data)?;
    }
    if let Some(attachments) = event.get("attachments") {
        let Value::Array(items) = attachments else {
            return Err(".attachments: must be an array".to_owned());
        };
        for (j, item) in items.iter().enumerate() {
            check_attachment(item).map_err(|problem| format!(".attachments[{j}]{problem}"))?;
        }
    }
    Ok(())
}

fn check_ai_data(ai_data: &Value) -> Result<(), String> {
    let Value::Object(ai_data) = ai_data else {
        return Err(".ai_data: must be an object".to_owned());
    };
    for (key, value) in ai_data {
        if !AI_DATA_KEYS.contains(&key.as_str()) {
            return Err(format!(".ai_data.{key}: unknown key (allowed: {})", AI_DATA_KEYS.join(", ")));
        }
        let Value::String(text) = value else {
            return Err(format!(".ai_data.{key}: must be a string"));
        };
        if matches!(key.as_str(), "input" | "output") {
            let chars = text.chars().count();
            if chars > RAINDROP_MAX_TEXT_CHARS {
                return Err(format!(".ai_data.{key}: {chars} characters, over the limit of {RAINDROP_MAX_TEXT_CHARS}"));
            }
        }
    }
    Ok(())
}

fn check_attachment(item: &Value) -> Result<(), String> {
    let Value::Object(item) = item else {
        return Err(": must be an object".to_owned());
    };
    if let Some(key) = item.keys().find(|k| !ATTACHMENT_KEYS.contains(&k.as_str())) {
        return Err(format!(".{key}: unknown key (allowed: {})", ATTACHMENT_KEYS.join(", ")));
    }
    let text = |key: &str, required: bool| -> Result<Option<&str>, String> {
        match item.get(key) {
            None if !required => Ok(None),
            None => Err(format!(".{key}: missing")),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!(".{key}: must be a string")),
        }
    };
    let kind = text("type", true)?.unwrap_or_default();
    if !ATTACHMENT_TYPES.contains(&kind) {
        return Err(format!(".type: {kind:?} is not one of {}", ATTACHMENT_TYPES.join(", ")));
    }
    text("value", true)?;
    let role = text("role", true)?.unwrap_or_default();
    if !ATTACHMENT_ROLES.contains(&role) {
        return Err(format!(".role: {role:?} is not one of {}", ATTACHMENT_ROLES.join(", ")));
    }
    text("name", false)?;
    text("language", false)?;
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` and a real date and time: the only form the ingest takes.
pub fn is_utc_millis(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 24 {
        return false;
    }
    let shape_ok = b.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        10 => *c == b'T',
        13 | 16 => *c == b':',
        19 => *c == b'.',
        23 => *c == b'Z',
        _ => c.is_ascii_digit(),
    });
    if !shape_ok {
        return false;
    }
    let num = |from: usize, to: usize| s[from..to].parse::<u32>().unwrap_or(u32::MAX);
    let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day) && num(11, 13) < 24 && num(14, 16) < 60 && num(17, 19) < 60
}

fn accepted_events(requests: &[RaindropRequest]) -> Vec<Value> {
    requests.iter().filter(|r| r.is_success()).filter_map(|r| r.events.as_ref()).flatten().cloned().collect()
}

/// A running Raindrop-like ingest on the loopback interface. Dropping it (or calling
/// [`RaindropSink::shutdown`]) stops the server and closes open connections.
#[derive(Debug)]
pub struct RaindropSink {
    listener: Listener,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gate: Gate,
    script: Script,
    journal: Journal<RaindropRequest>,
}

impl RaindropSink {
    /// Starts a sink on `127.0.0.1` with a free port, accepting `write_key`.
    pub async fn start(write_key: &str) -> std::io::Result<RaindropSink> {
        RaindropSink::start_with(RaindropOptions::new(write_key)).await
    }

    /// Starts a sink with the given options.
    pub async fn start_with(opts: RaindropOptions) -> std::io::Result<RaindropSink> {
        let inner = Arc::new(Inner {
            gate: Gate {
                path: RAINDROP_TRACK_PATH.to_owned(),
                expect_header: Some(("authorization".to_owned(), format!("Bearer {}", opts.write_key))),
            },
            script: Script::new(opts.fallback),
            journal: Journal::new(),
        });
        let handler_inner = inner.clone();
        let handler: Handler = Arc::new(move |req| Box::pin(handle(handler_inner.clone(), req)));
        // The listener reads far more than 1 MiB so an oversized body is recorded with its
        // real size (tests assert on it) before being refused with 413.
        let listener = Listener::start(opts.addr, DEFAULT_MAX_BODY_BYTES, handler).await?;
        Ok(RaindropSink { listener, inner })
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// The base URL to configure as the exporter's `base_url` (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The full events URL (`{url}/v1/events/track`).
    pub fn track_url(&self) -> String {
        format!("{}{RAINDROP_TRACK_PATH}", self.url())
    }

    /// Queues answers for the next requests that pass the path/method/key checks, in order;
    /// once used up, the fallback (normally the ingest's own verdict) applies again.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.script.push(answers);
    }

    /// Every request received so far, in arrival order, including refused ones.
    pub fn requests(&self) -> Vec<RaindropRequest> {
        self.inner.journal.snapshot()
    }

    /// Events of the requests that were answered 2xx: what Raindrop would have stored.
    /// Retried batches that were refused first appear once per successful delivery.
    pub fn events(&self) -> Vec<Value> {
        accepted_events(&self.inner.journal.snapshot())
    }

    /// Waits until at least `n` events were accepted, or `timeout` passed; returns the
    /// accepted events either way, so the test's own assertion explains what is missing.
    pub async fn wait_for_events(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let found = self
            .inner
            .journal
            .wait_until(timeout, |requests| {
                let events = accepted_events(requests);
                (events.len() >= n).then_some(events)
            })
            .await;
        found.unwrap_or_else(|| self.events())
    }

    /// Waits until at least `n` requests were received and answered, or `timeout` passed;
    /// returns all requests either way.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RaindropRequest> {
        self.inner.journal.wait_for_answered(n, timeout).await
    }

    /// Waits for the `index`-th request (0-based) to be answered; `None` if it has not been
    /// by `timeout`. Lets a printer follow requests one by one.
    pub async fn wait_for_request(&self, index: usize, timeout: Duration) -> Option<RaindropRequest> {
        self.inner.journal.wait_for_index(index, timeout).await
    }

    /// Stops the server; same as dropping the sink.
    pub fn shutdown(self) {
        drop(self);
    }
}

/// The ingest's verdict on a body that got past the path, method and key checks.
fn verdict(head: &RequestHead, raw: &Result<Bytes, Rejection>) -> Result<Vec<Value>, Rejection> {
    let body = raw.as_ref().map_err(Clone::clone)?;
    if body.len() > RAINDROP_MAX_BODY_BYTES {
        return Err(Rejection::new(
            413,
            format!("body is {} bytes, over the limit of {RAINDROP_MAX_BODY_BYTES}", body.len()),
        ));
    }
    match head.header("content-type").map(media_type) {
        Some(t) if t == "application/json" => {}
        Some(t) => return Err(Rejection::new(400, format!("Content-Type must be application/json, got {t}"))),
        None => return Err(Rejection::new(400, "Content-Type must be application/json")),
    }
    if let Some(encoding) = head.header("content-encoding").filter(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err(Rejection::new(400, format!("Content-Encoding {encoding} is not accepted: send plain JSON")));
    }
    check_batch(body).map_err(|message| Rejection::new(400, message))
}

fn error_body(message: &str) -> (Vec<(String, String)>, Bytes) {
    let body = serde_json::json!({"error": message}).to_string();
    (vec![("content-type".to_owned(), "application/json".to_owned())], Bytes::from(body))
}

/// The response for a request that passed the gate, given the scripted (or default) answer.
fn compose(answer: Answer, verdict: &Result<Vec<Value>, Rejection>) -> Reply {
    let (status, (mut headers, mut body)) = match (answer.status, verdict) {
        (Some(status), _) if (200..300).contains(&status) => (status, (Vec::new(), Bytes::new())),
        (Some(status), _) => (status, error_body(&format!("gencol-testkit: scripted status {status}"))),
        (None, Ok(_)) => (204, (Vec::new(), Bytes::new())),
        (None, Err(rejection)) => (rejection.status, error_body(&rejection.message)),
    };
    if let Some(custom) = answer.body {
        body = custom;
        headers = vec![("content-type".to_owned(), "text/plain; charset=utf-8".to_owned())];
    }
    if answer.headers.iter().any(|(n, _)| n == "content-type") {
        headers.retain(|(n, _)| n != "content-type");
    }
    headers.extend(answer.headers);
    Reply::Respond { status, headers, body }
}

fn set_answer(request: &mut RaindropRequest, outcome: Outcome) {
    request.answer = outcome;
}

async fn handle(inner: Arc<Inner>, req: ReadRequest) -> Reply {
    let ReadRequest { head, body: raw } = req;
    let verdict = verdict(&head, &raw);
    let body = raw.unwrap_or_default();
    let record = RaindropRequest {
        method: head.method.clone(),
        path: head.path.clone(),
        headers: head.headers.clone(),
        body_len: body.len(),
        body,
        events: verdict.as_ref().ok().cloned(),
        error: verdict.as_ref().err().map(|r| r.message.clone()),
        received_at: head.received_at,
        answer: Outcome::Pending,
    };
    let index = inner.journal.push(record);
    let guard = PendingGuard::new(&inner.journal, index, set_answer);

    let reply = if let Some(rejection) = inner.gate.check(&head) {
        let (headers, body) = error_body(&rejection.message);
        Reply::Respond { status: rejection.status, headers, body }
    } else {
        let answer = inner.script.next().unwrap_or_default();
        if let Some(delay) = answer.delay {
            tokio::time::sleep(delay).await;
        }
        if answer.close { Reply::Close } else { compose(answer, &verdict) }
    };
    guard.finish(reply.outcome());
    reply
}

impl crate::server::Answered for RaindropRequest {
    fn outcome(&self) -> &Outcome {
        &self.answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"event_id": "gen-1", "user_id": "user_35", "event": "ai_generation",
               "timestamp": "2026-11-22T10:00:00.000Z",
               "properties": {"feature": "assistant", "nested": {"a": [1, 2]}},
               "ai_data": {"model": "m", "input": "What time is it?", "output": "Ten.", "convo_id": "session_abc"},
               "attachments": [{"type": "text", "value": "v", "role": "input", "name": "n"}]})
    }

    fn with(mut e: Value, path: &[&str], value: Option<Value>) -> Value {
        let (last, parents) = path.split_last().expect("a path");
        let mut target = &mut e;
        for p in parents {
            target = &mut target[*p];
        }
        let map = target.as_object_mut().expect("an object");
        match value {
            Some(v) => map.insert((*last).to_owned(), v),
            None => map.remove(*last),
        };
        e
    }

    fn refused(e: Value) -> String {
        check_batch(json!([event(), e]).to_string().as_bytes()).expect_err("refused")
    }

    #[test]
    fn accepts_the_documented_event_and_minimal_ones() {
        let minimal = json!({"event_id": "e", "user_id": "u", "event": "x", "timestamp": "2024-02-29T23:59:59.999Z"});
        let events = check_batch(json!([event(), minimal]).to_string().as_bytes()).expect("valid");
        assert_eq!(events.len(), 2);
        assert_eq!(check_batch(b"[]").expect("an empty batch is valid"), Vec::<Value>::new());
    }

    #[test]
    fn refuses_what_the_ingest_refuses_naming_the_place() {
        assert!(check_batch(b"{\"event_id\": \"e\"}").unwrap_err().contains("JSON array"));
        assert!(check_batch(b"not json").unwrap_err().contains("not JSON"));
        assert!(refused(json!("e")).starts_with("[1]: an event must be a JSON object"));
        assert!(refused(with(event(), &["extra"], Some(json!(1)))).starts_with("[1].extra: unknown key"));
        assert!(refused(with(event(), &["ai_data", "prompt"], Some(json!("x")))).starts_with("[1].ai_data.prompt"));
        for key in REQUIRED_KEYS {
            assert_eq!(refused(with(event(), &[key], None)), format!("[1].{key}: missing"));
            assert_eq!(refused(with(event(), &[key], Some(json!(" ")))), format!("[1].{key}: must not be empty"));
            assert_eq!(refused(with(event(), &[key], Some(json!(7)))), format!("[1].{key}: must be a string"));
        }
        for ts in [
            "2026-11-22T10:00:00Z",
            "2026-11-22T10:00:00.000+00:00",
            "2026-11-22 10:00:00.000Z",
            "2026-02-30T10:00:00.000Z",
            "2026-11-22T24:00:00.000Z",
        ] {
            assert!(refused(with(event(), &["timestamp"], Some(json!(ts)))).starts_with("[1].timestamp"), "{ts}");
        }
        assert!(refused(with(event(), &["ai_data", "input"], Some(Value::Null))).contains("must be a string"));
        assert!(refused(with(event(), &["ai_data", "model"], Some(json!(3)))).contains("must be a string"));
        assert!(refused(with(event(), &["properties"], Some(json!([])))).contains("must be an object"));
        assert!(refused(with(event(), &["attachments"], Some(json!({})))).contains("must be an array"));
        let bad_item = json!([{"type": "video", "value": "v", "role": "input"}]);
        assert!(refused(with(event(), &["attachments"], Some(bad_item))).starts_with("[1].attachments[0].type"));
        let no_role = json!([{"type": "code", "value": "v"}]);
        assert_eq!(refused(with(event(), &["attachments"], Some(no_role))), "[1].attachments[0].role: missing");
    }

    #[test]
    fn texts_are_limited_in_characters_not_bytes() {
        let at_limit = "é".repeat(RAINDROP_MAX_TEXT_CHARS);
        let ok = with(event(), &["ai_data", "output"], Some(json!(at_limit)));
        assert!(check_batch(json!([ok]).to_string().as_bytes()).is_ok());
        let over = "a".repeat(RAINDROP_MAX_TEXT_CHARS + 1);
        assert!(refused(with(event(), &["ai_data", "input"], Some(json!(over)))).contains("over the limit"));
    }
}
