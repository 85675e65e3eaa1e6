//! The messages of one partition not acknowledged yet, and when each may be: once every
//! exporter holds its spans, and once every trace in it has been quiet for the pipelines'
//! hold plus [`MARGIN`] (so the trace's root, released `group_window` after its last
//! generation, is out as well). Until then each message's deadline (`ack_wait`) is pushed
//! on with a progress ack, so JetStream does not deliver it again while it waits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_nats::{Client, Message, Subject};
use bytes::Bytes;
use gencol_engine::AckWait;
use tokio::task::JoinHandle;

/// Time after a trace's hold for its released spans to reach the exporters' queues.
pub(crate) const MARGIN: Duration = Duration::from_secs(2);

/// How long a message waits for its spans to be held by every exporter (a full disk
/// queue can take a while); then it is given back to JetStream.
const KEPT_PATIENCE: Duration = Duration::from_secs(600);

/// How long a quiet trace is remembered after it could last have mattered.
const FORGET_AFTER: Duration = Duration::from_secs(60);

enum Kept {
    Waiting(JoinHandle<Result<(), String>>),
    Done,
}

struct Pending {
    reply: Option<Subject>,
    traces: Vec<Vec<u8>>,
    kept: Kept,
    /// When its deadline was last pushed on (or it arrived).
    touched: Instant,
}

pub(crate) struct Book {
    client: Client,
    ack_wait: Duration,
    pending: VecDeque<Pending>,
    /// When each trace's latest record arrived.
    last_seen: HashMap<Vec<u8>, Instant>,
}

impl Book {
    pub fn new(client: Client, ack_wait: Duration) -> Self {
        Book { client, ack_wait, pending: VecDeque::new(), last_seen: HashMap::new() }
    }

    /// A message whose spans went to the pipelines; `kept` completes once every exporter
    /// holds them.
    pub fn add(&mut self, message: Message, traces: Vec<Vec<u8>>, kept: AckWait, now: Instant) {
        for t in &traces {
            self.last_seen.insert(t.clone(), now);
        }
        let kept = Kept::Waiting(tokio::spawn(kept.wait(KEPT_PATIENCE)));
        self.pending.push_back(Pending { reply: message.reply, traces, kept, touched: now });
    }

    /// Acknowledges what may be, gives back what could not be kept, and pushes on the
    /// deadlines of the rest. `hold`: the pipelines' longest hold (`None`: no processor
    /// holds spans back).
    pub async fn settle(&mut self, hold: Option<Duration>, now: Instant) {
        let quiet_for = hold.map_or(Duration::ZERO, |h| h + MARGIN);
        let mut waiting = VecDeque::with_capacity(self.pending.len());
        while let Some(mut p) = self.pending.pop_front() {
            if let Kept::Waiting(handle) = &mut p.kept
                && handle.is_finished()
            {
                match handle.await {
                    Ok(Ok(())) => p.kept = Kept::Done,
                    Ok(Err(reason)) => {
                        tracing::debug!("nats: spans not kept ({reason}); the message is delivered again");
                        self.reply(&p.reply, b"-NAK").await;
                        continue;
                    }
                    Err(_) => {
                        self.reply(&p.reply, b"-NAK").await;
                        continue;
                    }
                }
            }
            let quiet = p
                .traces
                .iter()
                .all(|t| self.last_seen.get(t).is_none_or(|seen| now.saturating_duration_since(*seen) >= quiet_for));
            if matches!(p.kept, Kept::Done) && quiet {
                self.reply(&p.reply, b"+ACK").await;
                continue;
            }
            if now.saturating_duration_since(p.touched) >= self.ack_wait / 3 {
                self.reply(&p.reply, b"+WPI").await;
                p.touched = now;
            }
            waiting.push_back(p);
        }
        self.pending = waiting;
        self.last_seen.retain(|_, seen| now.saturating_duration_since(*seen) < quiet_for + FORGET_AFTER);
    }

    /// Drops what is waiting without acknowledging it: the partition went to another
    /// instance, which gets those messages again. Returns the traces they held, for the
    /// pipelines to give up.
    pub fn forget(&mut self) -> Vec<Vec<u8>> {
        let mut traces: Vec<Vec<u8>> = self.pending.drain(..).flat_map(|p| p.traces).collect();
        traces.sort();
        traces.dedup();
        self.last_seen.clear();
        traces
    }

    /// A message that can never be read: JetStream is told not to deliver it again.
    pub async fn terminate(&mut self, message: &Message) {
        self.reply(&message.reply, b"+TERM").await;
    }

    async fn reply(&self, reply: &Option<Subject>, what: &'static [u8]) {
        if let Some(reply) = reply
            && let Err(e) = self.client.publish(reply.clone(), Bytes::from_static(what)).await
        {
            tracing::debug!(error = %e, "nats: cannot send an acknowledgement; the message may be delivered again");
        }
    }
}
