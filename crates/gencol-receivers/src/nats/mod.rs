//! `nats`: the receiver of a processing tier. It consumes the stream the `nats` exporter of
//! the gateway tier publishes to (docs/scale-out.md), one durable consumer per partition,
//! each pulled as a member of a pinned priority group, so that a partition is processed by
//! one instance at a time and passes to another when its owner stops pulling
//! (`consumer.pinned_ttl`).
//!
//! A message is acknowledged only once nothing made from it can be lost with this
//! instance: every exporter of its pipelines holds its spans (fsynced, with a disk queue),
//! and every trace in it has been quiet for the pipelines' hold (`hierarchy`'s
//! `group_window`) plus a margin, so that the trace's root is out too. Until then the
//! message stays unacknowledged (its deadline pushed on with progress acks), and if this
//! instance dies JetStream delivers it again to the next owner, whose `hierarchy` rebuilds
//! the trace from all of its generations and emits its one root (the same SPEC §3 id)
//! with the full time range. Spans already out are sent again then: duplicates, with the
//! same span ids, which backends merge.

mod book;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::Client;
use gencol_config::{Diagnostic, Located, Node};
use gencol_engine::{BoxFuture, CancellationToken, ComponentContext, Consumer, ReceiverConfig, ReceiverFactory};
use gencol_model::budget::MemoryBudget;
use gencol_nats::pull::{ConsumerSpec, Event, Puller, create_consumer};
use gencol_nats::wire::{self, WIRE_HEADER};
use gencol_nats::{NatsTarget, Side};
use tokio::task::JoinHandle;

use book::Book;

/// How long connecting may take before it is tried again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the book of unacknowledged messages is gone through.
const SETTLE_EVERY: Duration = Duration::from_millis(200);

/// Registers the `nats` receiver type.
pub struct NatsReceiverFactory;

impl ReceiverFactory for NatsReceiverFactory {
    fn kind(&self) -> &str {
        "nats"
    }

    fn about(&self) -> &str {
        "NATS JetStream: a processing tier's share of the gateway tier's spans (a partition per instance at a time)"
    }

    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ReceiverConfig>, Vec<Diagnostic>> {
        let target = gencol_nats::configure(config, Side::Receiver, &ctx.base_dir).map_err(|d| vec![d])?;
        Ok(Box::new(NatsReceiverConfig { id: ctx.id.to_string(), target }))
    }
}

#[derive(Clone)]
struct NatsReceiverConfig {
    id: String,
    target: NatsTarget,
}

impl ReceiverConfig for NatsReceiverConfig {
    /// The gateway tier's generation spans, with their generation context.
    fn emits_generations(&self) -> bool {
        true
    }

    /// Connects, makes sure of the stream and reports it and its consumers.
    fn test_connection(&self) -> Option<BoxFuture<'static, Result<String, String>>> {
        let this = self.clone();
        Some(Box::pin(async move {
            let client = this.target.connect(&format!("gencol {} test", this.id), CONNECT_TIMEOUT).await?;
            let js = async_nats::jetstream::new(client.clone());
            let info = gencol_nats::stream::ensure(&js, &this.target).await?;
            Ok(format!(
                "stream {} on {} ({} messages waiting, {} consumers, {} partitions)",
                info.config.name,
                client.server_info().server_name,
                info.state.messages,
                info.state.consumer_count,
                this.target.partitions
            ))
        }))
    }

    fn start(
        &self,
        consumer: Consumer,
        _memory: MemoryBudget,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<JoinHandle<()>, String>> {
        let this = self.clone();
        Box::pin(async move { Ok(tokio::spawn(this.run(consumer, shutdown))) })
    }
}

impl NatsReceiverConfig {
    /// Connects (trying again until it can), makes sure of the stream and the consumers,
    /// and pulls every partition until shutdown.
    async fn run(self, consumer: Consumer, shutdown: CancellationToken) {
        let Some(client) = self.connect(&shutdown).await else { return };
        let js = async_nats::jetstream::new(client.clone());
        let mut reported = None::<Instant>;
        loop {
            match gencol_nats::stream::ensure(&js, &self.target).await {
                Ok(_) => break,
                Err(e) => {
                    if reported.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::error!(receiver = %self.id, "{e}; trying again");
                        reported = Some(Instant::now());
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        tracing::info!(
            receiver = %self.id,
            stream = %self.target.stream,
            partitions = self.target.partitions,
            "nats: pulling every partition; the server pins each to one instance of the tier"
        );
        let mut partitions = tokio::task::JoinSet::new();
        for p in 0..self.target.partitions {
            partitions.spawn(pull_partition(self.clone(), client.clone(), p, consumer.clone(), shutdown.clone()));
        }
        while partitions.join_next().await.is_some() {}
        // What was acknowledged is out; the rest goes to the next owner.
        if let Err(e) = client.flush().await {
            tracing::debug!(receiver = %self.id, error = %e, "nats: flushing acknowledgements at shutdown");
        }
    }

    async fn connect(&self, shutdown: &CancellationToken) -> Option<Client> {
        let mut reported = None::<Instant>;
        loop {
            match self.target.connect(&format!("gencol {}", self.id), CONNECT_TIMEOUT).await {
                Ok(client) => return Some(client),
                Err(e) => {
                    if reported.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(receiver = %self.id, "nats: {e}; trying again");
                        reported = Some(Instant::now());
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    fn spec(&self, partition: u32) -> ConsumerSpec {
        let c = &self.target.consumer;
        ConsumerSpec {
            stream: self.target.stream.clone(),
            name: format!("{}-{partition}", c.name),
            filter_subject: self.target.partition_subject(partition),
            ack_wait: c.ack_wait.0,
            max_ack_pending: c.max_ack_pending,
            pinned_ttl: c.pinned_ttl.0,
        }
    }
}

/// Pulls one partition until shutdown: hands each message's spans to the pipelines,
/// acknowledges them once settled ([`Book`]), and says when the partition comes here or
/// goes elsewhere.
async fn pull_partition(
    config: NatsReceiverConfig,
    client: Client,
    partition: u32,
    consumer: Consumer,
    shutdown: CancellationToken,
) {
    let id = config.id.as_str();
    let spec = config.spec(partition);
    loop {
        match create_consumer(&client, &spec).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(receiver = id, partition, "nats: {e}; trying again");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
    let mut puller = match Puller::new(client.clone(), &spec.stream, &spec.name, spec.pinned_ttl).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(receiver = id, partition, "nats: {e}");
            return;
        }
    };
    let mut book = Book::new(client.clone(), spec.ack_wait);
    let mut settle = tokio::time::interval(SETTLE_EVERY);
    settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_trouble = None::<Instant>;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = settle.tick() => book.settle(consumer.hold(), Instant::now()).await,
            event = puller.next() => match event {
                Event::Message { message, owned_now } => {
                    if owned_now {
                        tracing::info!(receiver = id, partition, "nats: partition {partition} is pulled here now (pinned to this instance)");
                    }
                    if !take(id, partition, message, &consumer, &mut book, &shutdown).await {
                        break;
                    }
                }
                Event::Unpinned => {
                    tracing::info!(receiver = id, partition, "nats: partition {partition} is pinned to another instance now");
                    hand_over(&mut book, &consumer).await;
                }
                Event::Fenced(silent) => {
                    tracing::info!(
                        receiver = id,
                        partition,
                        "nats: partition {partition} is pinned to another instance now, maybe: no answer to pulls for {silent:?}"
                    );
                    hand_over(&mut book, &consumer).await;
                }
                Event::Idle => {}
                Event::Trouble(why) => {
                    if last_trouble.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(receiver = id, partition, "nats: {why}; pulling again");
                        last_trouble = Some(Instant::now());
                    }
                    if why.contains("Consumer Deleted") {
                        let _ = create_consumer(&client, &spec).await;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            },
        }
    }
    // Settled messages are acknowledged; the others are left for the next owner (or for
    // this instance after its restart), and the pipelines give up those traces, so that
    // their shutdown flush does not send a root made from part of a trace's generations.
    book.settle(consumer.hold(), Instant::now()).await;
    hand_over(&mut book, &consumer).await;
}

/// The partition is another instance's now: what this one has not acknowledged goes to
/// that one (JetStream delivers it again), which makes the traces' roots from all of their
/// generations; so the pipelines drop what they hold of those traces, unreleased.
async fn hand_over(book: &mut Book, consumer: &Consumer) {
    consumer.give_up(book.forget()).await;
}

/// Hands one message's spans to the pipelines, waiting for room as long as it takes (the
/// stream holds the backlog meanwhile). `false` when shutdown came first.
async fn take(
    id: &str,
    partition: u32,
    message: async_nats::Message,
    consumer: &Consumer,
    book: &mut Book,
    shutdown: &CancellationToken,
) -> bool {
    let form = message.headers.as_ref().and_then(|h| h.get(WIRE_HEADER)).map(|v| v.as_str().to_owned());
    let items = match wire::decode(form.as_deref(), &message.payload) {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(
                receiver = id,
                partition,
                bytes = message.payload.len(),
                "nats: a message cannot be read and is dropped ({e})"
            );
            book.terminate(&message).await;
            return true;
        }
    };
    let traces: HashSet<Vec<u8>> = items.iter().map(|i| i.span.trace_id.clone()).collect();
    let bytes = message.payload.len();
    let reservation = loop {
        match consumer.reserve(bytes, Duration::from_secs(1)).await {
            Ok(r) => break r,
            Err(_) if shutdown.is_cancelled() => return false,
            // While the pipelines are full, what waits is still acknowledged when due.
            Err(_) => book.settle(consumer.hold(), Instant::now()).await,
        }
    };
    consumer.stats().accepted(items.len());
    let kept = reservation.send_confirmed(items);
    book.add(message, traces.into_iter().collect(), kept, Instant::now());
    true
}
