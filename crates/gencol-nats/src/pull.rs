//! Pulling one partition's consumer as a member of a pinned priority group (JetStream
//! 2.11+, ADR-42): the server hands the partition's messages to one client at a time, the
//! pinned one, and pins another only after the pinned one stopped pulling for the
//! consumer's `priority_timeout` (`consumer.pinned_ttl`). Exclusive ownership with
//! failover, decided by the server; gencol only follows it.
//!
//! async-nats creates streams and publishes, but its pull API neither sets a consumer's
//! `priority_timeout` nor carries the pin id a pinned client must send back, so the
//! consumer is created, and pulled, with the JetStream API's own requests:
//! `$JS.API.CONSUMER.CREATE` and `$JS.API.CONSUMER.MSG.NEXT` with `group` and `id`. A
//! message's `Nats-Pin-Id` header tells a client it is (now) the pinned one; a `423`
//! status tells it that it no longer is.

use std::time::{Duration, Instant};

use async_nats::{Client, Message, Subscriber};
use futures_util::StreamExt;
use serde_json::json;

/// The priority group every gencol of a tier joins.
pub const GROUP: &str = "gencol";

/// Messages asked for by one pull request.
const BATCH: usize = 256;

/// How long one pull request waits on the server for messages.
pub const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// One partition's durable consumer.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    pub stream: String,
    pub name: String,
    pub filter_subject: String,
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
    pub pinned_ttl: Duration,
}

/// Creates the consumer, or updates it to `spec` (the same request does both).
pub async fn create_consumer(client: &Client, spec: &ConsumerSpec) -> Result<(), String> {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let request = json!({
        "stream_name": spec.stream,
        "config": {
            "durable_name": spec.name,
            "name": spec.name,
            "description": "gencol: one partition of the stream, pulled by the instance the server pins",
            "filter_subject": spec.filter_subject,
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "ack_wait": nanos(spec.ack_wait),
            "max_ack_pending": spec.max_ack_pending,
            "max_waiting": 512,
            "replay_policy": "instant",
            "priority_policy": "pinned_client",
            "priority_groups": [GROUP],
            "priority_timeout": nanos(spec.pinned_ttl),
        },
    });
    let subject = format!("$JS.API.CONSUMER.CREATE.{}.{}", spec.stream, spec.name);
    let answer = client
        .request(subject, request.to_string().into())
        .await
        .map_err(|e| format!("cannot create consumer `{}`: {}", spec.name, e.kind()))?;
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("consumer `{}`: unreadable answer from JetStream: {e}", spec.name))?;
    if let Some(error) = answer.get("error") {
        let description = error.get("description").and_then(|d| d.as_str()).unwrap_or("unknown error");
        return Err(format!("cannot create consumer `{}` on stream `{}`: {description}", spec.name, spec.stream));
    }
    Ok(())
}

/// What a pull gave.
#[derive(Debug)]
pub enum Event {
    /// A message of the partition. `owned_now`: this client was not the partition's owner
    /// a moment ago and is now (a new pin, or the old one after a [`Event::Fenced`]).
    Message { message: Message, owned_now: bool },
    /// The server pinned another client: the partition is no longer this one's.
    Unpinned,
    /// The server has not answered this client's pulls for most of `pinned_ttl`: it may
    /// have pinned another client, so this one stops counting itself the owner before the
    /// server could (the next message it is sent makes it the owner again).
    Fenced(Duration),
    /// A pull request ended without a message (none waiting, or expired).
    Idle,
    /// JetStream said something is wrong (a consumer deleted, a leader changing); pulling
    /// goes on after a pause.
    Trouble(String),
}

/// Pulls one consumer: requests, the replies they bring, and the pin.
pub struct Puller {
    client: Client,
    next_subject: String,
    inbox: String,
    replies: Subscriber,
    pin: Option<String>,
    /// Messages the current request may still bring; 0: no request out.
    outstanding: usize,
    /// Whether this client counts itself the partition's owner.
    owned: bool,
    /// When the request out now was sent.
    sent: Instant,
    /// When the latest request the server answered was sent: the server's pin deadline
    /// is `pinned_ttl` after it received a later one, so after this.
    answered: Instant,
    /// Ownership ends here on this side, a fifth of `pinned_ttl` before the server could.
    fence: Duration,
}

impl Puller {
    pub async fn new(client: Client, stream: &str, consumer: &str, pinned_ttl: Duration) -> Result<Puller, String> {
        let inbox = client.new_inbox();
        let replies = client.subscribe(inbox.clone()).await.map_err(|e| format!("cannot subscribe: {e}"))?;
        Ok(Puller {
            next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            client,
            inbox,
            replies,
            pin: None,
            outstanding: 0,
            owned: false,
            sent: Instant::now(),
            answered: Instant::now(),
            fence: pinned_ttl * 4 / 5,
        })
    }

    /// Whether this client counts itself the partition's owner.
    pub fn owns(&self) -> bool {
        self.owned
    }

    /// The next thing the consumer has to say.
    pub async fn next(&mut self) -> Event {
        if self.outstanding == 0 {
            let mut request = json!({
                "batch": BATCH,
                "expires": u64::try_from(PULL_EXPIRES.as_nanos()).unwrap_or(u64::MAX),
                "group": GROUP,
            });
            if let Some(pin) = &self.pin {
                request["id"] = json!(pin);
            }
            let sent = Instant::now();
            if let Err(e) = self
                .client
                .publish_with_reply(self.next_subject.clone(), self.inbox.clone(), request.to_string().into())
                .await
            {
                return Event::Trouble(format!("cannot send a pull request: {e}"));
            }
            self.sent = sent;
            self.outstanding = BATCH;
        }
        // A reply comes before the request expires, unless the connection is down; the
        // wait ends earlier when ownership must be given up meanwhile.
        let mut wait = PULL_EXPIRES + Duration::from_millis(500);
        if self.owned {
            let fence_in = (self.answered + self.fence).saturating_duration_since(Instant::now());
            if fence_in.is_zero() {
                self.owned = false;
                return Event::Fenced(self.answered.elapsed());
            }
            wait = wait.min(fence_in);
        }
        let reply = match tokio::time::timeout(wait, self.replies.next()).await {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                self.outstanding = 0;
                return Event::Trouble("the reply subscription ended".into());
            }
            Err(_) => {
                if self.owned && self.answered.elapsed() >= self.fence {
                    self.owned = false;
                    return Event::Fenced(self.answered.elapsed());
                }
                self.outstanding = 0;
                return Event::Idle;
            }
        };
        // A reply to the request out now (replies to older ones come before it ends).
        self.answered = self.answered.max(self.sent);
        match reply.status.map(|s| s.as_u16()) {
            None | Some(200) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                if let Some(id) = reply.headers.as_ref().and_then(|h| h.get("Nats-Pin-Id")) {
                    self.pin = Some(id.as_str().to_owned());
                }
                let owned_now = !self.owned;
                self.owned = true;
                Event::Message { message: reply, owned_now }
            }
            // Heartbeat: the request is alive.
            Some(100) => Event::Idle,
            Some(404) | Some(408) => {
                self.outstanding = 0;
                Event::Idle
            }
            Some(423) => {
                self.outstanding = 0;
                self.pin = None;
                if std::mem::take(&mut self.owned) { Event::Unpinned } else { Event::Idle }
            }
            Some(code) => {
                self.outstanding = 0;
                Event::Trouble(format!("{code} {}", reply.description.unwrap_or_default()))
            }
        }
    }
}
