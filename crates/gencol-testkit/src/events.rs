//! What the events endpoints (Raindrop-like, PostHog-like) share: the running server, the
//! record of every request, scripted answers, and printing. An endpoint only says what its
//! ingest accepts, how it answers, and how to print one event ([`Ingest`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::server::{
    Answer, DEFAULT_MAX_BODY_BYTES, Gate, Handler, Journal, Listener, Outcome, PendingGuard, ReadRequest, Rejection,
    Reply, RequestHead, Script, masked_header_value,
};

/// Longest string printed in full by [`EventsRequest::render`].
const MAX_PRINTED_CHARS: usize = 240;

/// The rules of one destination's events ingest.
pub(crate) trait Ingest: Send + Sync + std::fmt::Debug + 'static {
    /// The ingest's verdict on a request that got past the path and method checks: its
    /// events, or why it is refused.
    fn verdict(&self, head: &RequestHead, body: &Result<Bytes, Rejection>) -> Result<Vec<Value>, Rejection>;
    /// Headers and body of the answer to an accepted request, and its usual status.
    fn accepted(&self) -> (u16, Vec<(String, String)>, Bytes);
    /// Headers and body of a refusal saying `message`.
    fn refusal(&self, message: &str) -> (Vec<(String, String)>, Bytes);
    /// Writes the lines [`EventsRequest::render`] prints for one event.
    fn describer(&self) -> fn(&mut String, &Value);
}

/// One request as an events endpoint saw it, kept whatever the answer was.
#[derive(Clone, Debug)]
pub struct EventsRequest {
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
    /// What the endpoint answered.
    pub answer: Outcome,
    describe: fn(&mut String, &Value),
}

impl EventsRequest {
    /// A header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The HTTP status answered, if a response was sent.
    pub fn status(&self) -> Option<u16> {
        self.answer.status()
    }

    /// Whether the endpoint told the client its events were accepted (2xx).
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
            (self.describe)(&mut out, event);
        }
        out
    }
}

/// Long strings (prompts, completions) cut so a delivery stays readable, with their length.
pub(crate) fn cut(s: &str) -> String {
    let count = s.chars().count();
    if count <= MAX_PRINTED_CHARS {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX_PRINTED_CHARS).collect();
        format!("{head}…({count} chars)")
    }
}

fn accepted_events(requests: &[EventsRequest]) -> Vec<Value> {
    requests.iter().filter(|r| r.is_success()).filter_map(|r| r.events.as_ref()).flatten().cloned().collect()
}

/// A running events endpoint on the loopback interface; the destination-specific sinks
/// ([`crate::RaindropSink`], [`crate::PostHogSink`]) dereference to it. Dropping it stops the
/// server and closes open connections.
#[derive(Debug)]
pub struct EventsSink {
    listener: Listener,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gate: Gate,
    script: Script,
    journal: Journal<EventsRequest>,
    ingest: Box<dyn Ingest>,
}

impl EventsSink {
    /// Serves `gate.path` on `addr` with `ingest`'s rules; `fallback` answers whenever no
    /// scripted answer is queued (`None`: the ingest's own verdict).
    pub(crate) async fn start(
        addr: SocketAddr,
        gate: Gate,
        fallback: Option<Answer>,
        ingest: Box<dyn Ingest>,
    ) -> std::io::Result<EventsSink> {
        let inner = Arc::new(Inner { gate, script: Script::new(fallback), journal: Journal::new(), ingest });
        let handler_inner = inner.clone();
        let handler: Handler = Arc::new(move |req| Box::pin(handle(handler_inner.clone(), req)));
        // The listener reads far more than any ingest's limit so an oversized body is
        // recorded with its real size (tests assert on it) before being refused with 413.
        let listener = Listener::start(addr, DEFAULT_MAX_BODY_BYTES, handler).await?;
        Ok(EventsSink { listener, inner })
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// The base URL to configure in the exporter (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Queues answers for the next requests that pass the path and method checks, in
    /// order; once used up, the fallback (normally the ingest's own verdict) applies again.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.script.push(answers);
    }

    /// Every request received so far, in arrival order, including refused ones.
    pub fn requests(&self) -> Vec<EventsRequest> {
        self.inner.journal.snapshot()
    }

    /// Events of the requests that were answered 2xx: what the destination would have
    /// stored. Retried batches that were refused first appear once per successful delivery.
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
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<EventsRequest> {
        self.inner.journal.wait_for_answered(n, timeout).await
    }

    /// Waits for the `index`-th request (0-based) to be answered; `None` if it has not been
    /// by `timeout`. Lets a printer follow requests one by one.
    pub async fn wait_for_request(&self, index: usize, timeout: Duration) -> Option<EventsRequest> {
        self.inner.journal.wait_for_index(index, timeout).await
    }
}

/// The response for a request that passed the gate, given the scripted (or default) answer.
fn compose(ingest: &dyn Ingest, answer: Answer, verdict: &Result<Vec<Value>, Rejection>) -> Reply {
    let (status, (mut headers, mut body)) = match (answer.status, verdict) {
        (Some(status), _) if (200..300).contains(&status) => {
            let (_, headers, body) = ingest.accepted();
            (status, (headers, body))
        }
        (Some(status), _) => (status, ingest.refusal(&format!("gencol-testkit: scripted status {status}"))),
        (None, Ok(_)) => {
            let (status, headers, body) = ingest.accepted();
            (status, (headers, body))
        }
        (None, Err(rejection)) => (rejection.status, ingest.refusal(&rejection.message)),
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

fn set_answer(request: &mut EventsRequest, outcome: Outcome) {
    request.answer = outcome;
}

async fn handle(inner: Arc<Inner>, req: ReadRequest) -> Reply {
    let ReadRequest { head, body: raw } = req;
    let verdict = inner.ingest.verdict(&head, &raw);
    let body = raw.unwrap_or_default();
    let record = EventsRequest {
        method: head.method.clone(),
        path: head.path.clone(),
        headers: head.headers.clone(),
        body_len: body.len(),
        body,
        events: verdict.as_ref().ok().cloned(),
        error: verdict.as_ref().err().map(|r| r.message.clone()),
        received_at: head.received_at,
        answer: Outcome::Pending,
        describe: inner.ingest.describer(),
    };
    let index = inner.journal.push(record);
    let guard = PendingGuard::new(&inner.journal, index, set_answer);

    let reply = if let Some(rejection) = inner.gate.check(&head) {
        let (headers, body) = inner.ingest.refusal(&rejection.message);
        Reply::Respond { status: rejection.status, headers, body }
    } else {
        let answer = inner.script.next().unwrap_or_default();
        if let Some(delay) = answer.delay {
            tokio::time::sleep(delay).await;
        }
        if answer.close { Reply::Close } else { compose(inner.ingest.as_ref(), answer, &verdict) }
    };
    guard.finish(reply.outcome());
    reply
}

impl crate::server::Answered for EventsRequest {
    fn outcome(&self) -> &Outcome {
        &self.answer
    }
}
