//! A Raindrop-like events endpoint (`POST /v1/events/track`) that enforces the real ingest's
//! rules and keeps everything it receives.
//!
//! Raindrop's ingest is strict: a batch with one unknown key, a missing field or a badly
//! formatted timestamp is refused whole, and bodies over 1 MiB are refused too. An exporter
//! that is only tested against a lenient fake would lose data in production, so this sink
//! refuses exactly what the ingest refuses (see `RAINDROP.md`), names the offending event and
//! field in its 400, records every request (refused ones included) and, like the OTLP sink,
//! can be scripted to answer 429/5xx, slowly, or not at all.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;

use bytes::Bytes;
use serde_json::Value;

use crate::events::{EventsRequest, EventsSink, Ingest, cut};
use crate::server::{Answer, Gate, Rejection, RequestHead, media_type};

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

/// One request as the Raindrop-like sink saw it.
pub type RaindropRequest = EventsRequest;

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

/// A running Raindrop-like ingest on the loopback interface; what it received and how it
/// answered is read through [`EventsSink`], which it dereferences to. Dropping it (or
/// calling [`RaindropSink::shutdown`]) stops the server and closes open connections.
#[derive(Debug)]
pub struct RaindropSink {
    sink: EventsSink,
}

impl RaindropSink {
    /// Starts a sink on `127.0.0.1` with a free port, accepting `write_key`.
    pub async fn start(write_key: &str) -> std::io::Result<RaindropSink> {
        RaindropSink::start_with(RaindropOptions::new(write_key)).await
    }

    /// Starts a sink with the given options.
    pub async fn start_with(opts: RaindropOptions) -> std::io::Result<RaindropSink> {
        let gate = Gate {
            path: RAINDROP_TRACK_PATH.to_owned(),
            expect_header: Some(("authorization".to_owned(), format!("Bearer {}", opts.write_key))),
        };
        let sink = EventsSink::start(opts.addr, gate, opts.fallback, Box::new(RaindropIngest)).await?;
        Ok(RaindropSink { sink })
    }

    /// The full events URL (`{url}/v1/events/track`).
    pub fn track_url(&self) -> String {
        format!("{}{RAINDROP_TRACK_PATH}", self.url())
    }

    /// Stops the server; same as dropping the sink.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Deref for RaindropSink {
    type Target = EventsSink;

    fn deref(&self) -> &EventsSink {
        &self.sink
    }
}

/// Raindrop's ingest rules (RAINDROP.md).
#[derive(Debug)]
struct RaindropIngest;

impl Ingest for RaindropIngest {
    fn verdict(&self, head: &RequestHead, raw: &Result<Bytes, Rejection>) -> Result<Vec<Value>, Rejection> {
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

    /// 204 without a body.
    fn accepted(&self) -> (u16, Vec<(String, String)>, Bytes) {
        (204, Vec::new(), Bytes::new())
    }

    fn refusal(&self, message: &str) -> (Vec<(String, String)>, Bytes) {
        let body = serde_json::json!({"error": message}).to_string();
        (vec![("content-type".to_owned(), "application/json".to_owned())], Bytes::from(body))
    }

    fn describer(&self) -> fn(&mut String, &Value) {
        render_event
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
