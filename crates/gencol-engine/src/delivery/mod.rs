//! Delivery, written once for every exporter (SPEC §7): a bounded queue in front of
//! each exporter so a slow destination never delays another (in memory, or on disk where
//! a 202 means fsynced), batching (take what is queued, up to a batch size; a partial
//! batch waits a few milliseconds for more), and a stack of `tower` layers every batch
//! goes through, outermost first:
//!
//! | layer | concern |
//! |---|---|
//! | `tower::limit::ConcurrencyLimit` | at most `queue.consumers` batches in flight; a slot before a batch is taken |
//! | [`settle::SettleLayer`] | what becomes of a batch: counted, split when refused, kept on disk or lost |
//! | [`stop::StopLayer`] | `shutdown_timeout` ends a send that is still waiting |
//! | `tower::retry::Retry` with [`retry::RetryPolicy`] | backoff, `Retry-After` in full, `max_elapsed_time` |
//! | [`telemetry::TelemetryLayer`] | each attempt's duration |
//! | [`timeout::TimeoutLayer`] | no answer within `timeout` reads as retryable |
//! | [`send::ExportService`] | the exporter sends once |

mod disk;
mod memory;
mod retry;
mod send;
mod settle;
mod stop;
mod telemetry;
mod timeout;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gencol_config::{ByteSize, Duration as ConfigDuration};
use gencol_model::SpanItem;
use prost::Message;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::limit::ConcurrencyLimitLayer;
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::component::Exporter;
use crate::consumer::AckToken;
use crate::routing::{FilterRulesSettings, Route, Verdict};
use crate::telemetry::SendTimer;
pub(crate) use disk::DiskQueue;
pub(crate) use memory::MemoryQueue;
use retry::RetryPolicy;
use send::ExportService;
use settle::SettleLayer;
use stop::StopLayer;
use telemetry::TelemetryLayer;
use timeout::TimeoutLayer;

/// The keys every exporter accepts besides its own.
pub const DELIVERY_KEYS: [&str; 7] =
    ["timeout", "retry", "queue", "privacy_mode", "sampling_rate", "api_keys", "filter_rules"];

/// What one export request carries at most: spans, and their encoded size (protobuf,
/// as the queue counts it). Small spans go out 1,024 at a time; generation spans with
/// their content (several KiB each) stop at 4 MiB, which keeps a request under backends'
/// limits and a send in flight, holding its spans and their encoding, to a few MiB.
const MAX_BATCH: BatchLimit = BatchLimit { spans: 1024, bytes: 4 * 1024 * 1024 };

#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchLimit {
    pub(crate) spans: usize,
    pub(crate) bytes: usize,
}

impl BatchLimit {
    /// What is left of this limit after a batch of `spans` spans and `bytes` bytes.
    fn after(self, spans: usize, bytes: usize) -> BatchLimit {
        BatchLimit { spans: self.spans.saturating_sub(spans), bytes: self.bytes.saturating_sub(bytes) }
    }
}

/// How long a partial batch waits for more spans before it is sent: short next to a
/// backend's own ingest delay, long enough that a steady trickle goes out in batches.
const BATCH_LINGER: Duration = Duration::from_millis(10);

/// [`BATCH_LINGER`] for a batch receivers wait on before they answer (an exporter that
/// `confirms_delivery`): measured with `gencol-bench scale-out` at 1,500 generations/s,
/// 10 ms added 8 ms to the median answer, no linger doubled the CPU per generation of
/// every tier (a publish and a pull per record); 2 ms keeps most of the batching.
const ACK_LINGER: Duration = Duration::from_millis(2);

/// Delivery settings of one exporter.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Time one send may take before it counts as a retryable failure.
    pub timeout: ConfigDuration,
    pub retry: RetrySettings,
    pub queue: QueueSettings,
    /// This destination gets no prompt or completion content (SPEC §5).
    pub privacy_mode: bool,
    /// The share of traces this destination gets (SPEC §11), 0.0001 ..= 1.
    pub sampling_rate: f64,
    /// Only generations whose `api_key_hash` is listed (SHA-256, hex); absent: all.
    pub api_keys: Option<Vec<String>>,
    /// Only generations a group of these rules matches.
    pub filter_rules: Option<FilterRulesSettings>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            timeout: ConfigDuration(Duration::from_secs(10)),
            retry: RetrySettings::default(),
            queue: QueueSettings::default(),
            privacy_mode: false,
            sampling_rate: 1.0,
            api_keys: None,
            filter_rules: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    pub enabled: bool,
    pub initial_interval: ConfigDuration,
    pub max_interval: ConfigDuration,
    /// Give up on a batch after this long (logged and counted as failed).
    pub max_elapsed_time: ConfigDuration,
    pub multiplier: f64,
    /// Each wait is randomised by ± this fraction, so many gencols do not retry in step.
    pub jitter: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            enabled: true,
            initial_interval: ConfigDuration(Duration::from_secs(1)),
            max_interval: ConfigDuration(Duration::from_secs(30)),
            max_elapsed_time: ConfigDuration(Duration::from_secs(300)),
            multiplier: 1.5,
            jitter: 0.5,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    Memory,
    Disk,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Push back: nothing answered 2xx is dropped. A full memory queue makes its
    /// pipeline wait, so receivers answer 503 once the pipeline is full too; a full disk
    /// queue makes receivers answer 503 at once.
    Block,
    /// Refuse the new batch for this exporter only (logged and counted): lossy, for
    /// best-effort destinations.
    DropNewest,
}

/// When a disk queue fsyncs (`queue.sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Before the receiver answers 202; concurrent requests share one fsync.
    Always,
    /// On a timer: a 202 means written, and fsynced within this long (weaker: a power
    /// loss can take the last interval; a crash of gencol alone cannot).
    Every(Duration),
}

impl<'de> Deserialize<'de> for SyncMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "always" {
            return Ok(SyncMode::Always);
        }
        match ConfigDuration::parse(&text) {
            Ok(every) if !every.0.is_zero() => Ok(SyncMode::Every(every.0)),
            _ => Err(serde::de::Error::custom(format!(
                "queue.sync: expected `always` or a duration such as `100ms`, found `{text}`"
            ))),
        }
    }
}

/// Memory queue bound in bytes when `max_bytes` is not written.
const MEMORY_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Disk queue bound (bytes on disk) when `max_bytes` is not written (SPEC §7).
const DISK_MAX_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    pub kind: QueueKind,
    /// Spans held at most (memory queue).
    pub max_items: usize,
    /// Memory: encoded span bytes held at most (default 64MiB). Disk: bytes of queue
    /// files on disk at most (default 1GiB).
    pub max_bytes: Option<ByteSize>,
    pub when_full: WhenFull,
    /// Disk queue directory; default `<service.data_dir>/queues/<exporter id>`.
    pub dir: Option<String>,
    pub sync: SyncMode,
    /// Sends in flight at once.
    pub consumers: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            kind: QueueKind::Memory,
            max_items: 100_000,
            max_bytes: None,
            // Nothing answered 2xx is dropped by default: an exporter that falls behind
            // pushes back. `drop_newest` is the explicit, lossy choice.
            when_full: WhenFull::Block,
            dir: None,
            sync: SyncMode::Always,
            consumers: 4,
        }
    }
}

impl QueueSettings {
    /// The byte bound in force for this queue kind.
    pub fn max_bytes(&self) -> u64 {
        match (self.max_bytes, self.kind) {
            (Some(b), _) => b.0,
            (None, QueueKind::Memory) => MEMORY_MAX_BYTES,
            (None, QueueKind::Disk) => DISK_MAX_BYTES,
        }
    }

    /// Whether a queue made with `other` holds and bounds spans as one made with these
    /// settings would: a reload keeps such a queue (`consumers` is a sender setting).
    pub fn same_storage(&self, other: &QueueSettings) -> bool {
        QueueSettings { consumers: other.consumers, ..self.clone() } == *other
    }

    /// The disk queue directory of exporter `id`.
    pub fn disk_dir(&self, data_dir: &Path, id: &str) -> PathBuf {
        match &self.dir {
            Some(dir) => PathBuf::from(dir),
            None => data_dir.join("queues").join(id),
        }
    }
}

/// Counters of one exporter, read at shutdown, by tests and by gencol's metrics.
/// `failed` counts spans whose sending failed for good, `dropped` spans that were never
/// queued; the `drop_*` counters say why each of those will never arrive.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
    drop_queue_full: AtomicU64,
    drop_permanent: AtomicU64,
    drop_exhausted: AtomicU64,
    drop_shutdown: AtomicU64,
    drop_sampled: AtomicU64,
    drop_filtered: AtomicU64,
    /// Times each request to the destination, once metrics are on.
    pub(crate) send_timer: OnceLock<SendTimer>,
}

/// Why spans will never reach a destination.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lost {
    /// The queue was full (`when_full: drop_newest`).
    QueueFull,
    /// The destination refused them for good.
    Permanent,
    /// Retries ran out (memory queue), or the destination went away while a refused
    /// batch was being split.
    Exhausted,
    /// `shutdown_timeout` came first (memory queue).
    Shutdown,
    /// Not in this destination's `sampling_rate` share, or a `sample` processor's.
    SampledOut,
    /// Left out by `api_keys`, `filter_rules` or a `filter` processor.
    Filtered,
}

impl DeliveryStats {
    pub fn snapshot(&self) -> [u64; 4] {
        [&self.sent, &self.failed, &self.dropped, &self.retries].map(|a| a.load(Ordering::Relaxed))
    }

    /// Spans lost by reason: queue_full, permanent_error, retries_exhausted, shutdown,
    /// sampled_out, filtered.
    pub(crate) fn drops(&self) -> [u64; 6] {
        [
            &self.drop_queue_full,
            &self.drop_permanent,
            &self.drop_exhausted,
            &self.drop_shutdown,
            &self.drop_sampled,
            &self.drop_filtered,
        ]
        .map(|a| a.load(Ordering::Relaxed))
    }

    /// `n` spans whose sending failed for good.
    pub(crate) fn failed(&self, n: u64, why: Lost) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        self.lost(n, why);
    }

    /// `n` spans that were never queued; returns the dropped total.
    pub(crate) fn dropped(&self, n: u64, why: Lost) -> u64 {
        self.lost(n, why);
        self.dropped.fetch_add(n, Ordering::Relaxed) + n
    }

    /// `n` spans that will never reach the destination, by reason only: what routing
    /// leaves out is neither failed nor dropped, it was never meant for it.
    pub(crate) fn lost(&self, n: u64, why: Lost) {
        let counter = match why {
            Lost::QueueFull => &self.drop_queue_full,
            Lost::Permanent => &self.drop_permanent,
            Lost::Exhausted => &self.drop_exhausted,
            Lost::Shutdown => &self.drop_shutdown,
            Lost::SampledOut => &self.drop_sampled,
            Lost::Filtered => &self.drop_filtered,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The queue in front of one exporter.
pub(crate) enum Queue {
    Memory(MemoryQueue),
    // Boxed: one queue per exporter, made once; the size difference is not worth carrying.
    Disk(Box<DiskQueue>),
}

/// Spans taken from a queue for one send; `seqs` are the disk records they came from,
/// `acks` the receivers waiting for this send (an exporter that `confirms_delivery`).
pub(crate) struct Taken {
    items: Vec<SpanItem>,
    bytes: usize,
    seqs: Vec<u64>,
    acks: Vec<AckToken>,
}

/// Why a queue did not take a batch.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Full, with `when_full: drop_newest`: dropped for this exporter (counted).
    Dropped,
    /// Full with `block` (disk), or the disk cannot be written: the receiver answers 503.
    Unavailable(String),
    /// Shutting down.
    Closed,
}

impl Queue {
    async fn pop(&self, limit: BatchLimit) -> Option<Taken> {
        match self {
            Queue::Memory(q) => {
                q.pop(limit).await.map(|(items, bytes, acks)| Taken { items, bytes, seqs: Vec::new(), acks })
            }
            Queue::Disk(q) => q.pop(limit).await,
        }
    }

    fn take(&self, limit: BatchLimit) -> Option<Taken> {
        match self {
            Queue::Memory(q) => {
                q.take(limit).map(|(items, bytes, acks)| Taken { items, bytes, seqs: Vec::new(), acks })
            }
            Queue::Disk(q) => q.take(limit),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Queue::Memory(q) => q.is_closed(),
            Queue::Disk(q) => q.is_closed(),
        }
    }

    pub(crate) fn close(&self) {
        match self {
            Queue::Memory(q) => q.close(),
            Queue::Disk(q) => q.close(),
        }
    }

    /// Spans (memory) or records (disk) not delivered yet.
    pub(crate) fn len(&self) -> usize {
        match self {
            Queue::Memory(q) => q.len(),
            Queue::Disk(q) => q.len(),
        }
    }

    /// Bytes held: encoded spans (memory), or live segment files (disk).
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Queue::Memory(q) => q.bytes() as u64,
            Queue::Disk(q) => q.bytes(),
        }
    }

    /// Why a batch of about `bytes` encoded bytes cannot be taken now: only a disk queue
    /// with `block` refuses (a memory queue waits for room instead; `drop_newest` drops).
    pub(crate) fn refuses(&self, bytes: usize) -> Option<String> {
        match self {
            Queue::Disk(q) => q.refuses(bytes),
            Queue::Memory(_) => None,
        }
    }

    /// Adds a batch. `ack` (with a disk queue and `sync: always`) is held until the batch
    /// is fsynced, and failed if it cannot be. A disk queue with `block` takes the batch
    /// even when full: the pipeline checked for room before it ran its processors, and
    /// what they release later (`hierarchy` roots) has no sender that could retry it.
    async fn push(&self, items: Vec<SpanItem>, confirm: Option<&AckToken>) -> Result<(), Refused> {
        match self {
            Queue::Memory(q) => {
                if q.push(items, confirm.cloned()).await {
                    Ok(())
                } else if q.is_closed() {
                    Err(Refused::Closed)
                } else {
                    Err(Refused::Dropped)
                }
            }
            Queue::Disk(q) => q.push(items),
        }
    }

    /// Holds the acks of what was just pushed until it is durable as `queue.sync` says
    /// (a memory queue has nothing to wait for).
    pub(crate) fn hold_acks(&self, acks: &[AckToken]) {
        if let Queue::Disk(q) = self {
            q.hold_acks(acks);
        }
    }

    /// Holds `ack` until everything written to this queue so far is fsynced (a memory
    /// queue has nothing to wait for).
    pub(crate) fn hold_until_synced(&self, ack: &AckToken) {
        if let Queue::Disk(q) = self {
            q.hold_until_synced(ack);
        }
    }

    /// Marks the disk records of a taken batch done (sent, or refused for good).
    fn done(&self, seqs: &[u64]) {
        if let Queue::Disk(q) = self {
            q.done(seqs);
        }
    }
}

/// Drains one exporter's queue until it is closed and empty, or `stop` is cancelled.
/// `handover` (a reload that changed the exporter but kept its queue) makes it take no
/// more batches: the sends in flight finish, with their retries, and the exporter built
/// from the new settings takes the queue from there.
pub(crate) async fn run_exporter(
    id: String,
    exporter: Arc<dyn Exporter>,
    queue: Arc<Queue>,
    settings: DeliverySettings,
    stats: Arc<DeliveryStats>,
    stop: CancellationToken,
    handover: CancellationToken,
) {
    let pause = settings.retry.max_interval.0;
    let asked = exporter.batching();
    let limit = asked.map_or(MAX_BATCH, |b| BatchLimit { spans: b.max_spans.max(1), bytes: b.max_bytes.max(1) });
    let mut delivery = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(settings.queue.consumers.max(1)))
        .layer(SettleLayer::new(&id, queue.clone(), stats.clone(), pause, stop.clone()))
        .layer(StopLayer::new(stop.clone()))
        .layer(RetryLayer::new(RetryPolicy::new(&id, &settings.retry, stats.clone())))
        .layer(TelemetryLayer::new(stats.clone()))
        .layer(TimeoutLayer::new(settings.timeout.0))
        .service(ExportService::new(exporter));
    let mut sends = JoinSet::new();
    loop {
        // A send slot first, then the batch: while every slot is busy, spans gather in
        // the queue and go out together, instead of being taken early in small batches.
        let ready = tokio::select! {
            r = ServiceExt::<Taken>::ready(&mut delivery) => r.is_ok(),
            _ = stop.cancelled() => false,
            _ = handover.cancelled() => false,
        };
        if !ready {
            break;
        }
        let taken = tokio::select! {
            b = queue.pop(limit) => b,
            _ = stop.cancelled() => None,
            _ = handover.cancelled() => None,
        };
        let Some(mut taken) = taken else { break };
        // A trickle (a few generations a millisecond) would otherwise go out a span or
        // two per request, and each request costs far more than the spans in it. What
        // arrives within BATCH_LINGER joins this batch; a full batch, and shutdown,
        // never wait. A batch receivers are waiting on (`confirms_delivery`) waits less,
        // ACK_LINGER: their answers wait with it.
        if taken.items.len() < limit.spans && taken.bytes < limit.bytes && !queue.is_closed() {
            match asked {
                // An exporter's own wait (an object store's object age) is long: the batch
                // goes as soon as it is full, so the queue is looked at while it waits.
                Some(b) => {
                    let now = tokio::time::Instant::now();
                    let due = now.checked_add(b.max_wait).unwrap_or(now + Duration::from_secs(86_400));
                    loop {
                        gather(&queue, limit, &mut taken);
                        if taken.items.len() >= limit.spans || taken.bytes >= limit.bytes || queue.is_closed() {
                            break;
                        }
                        let wake = due.min(tokio::time::Instant::now() + GATHER_POLL);
                        let waited = tokio::select! {
                            _ = tokio::time::sleep_until(wake) => wake < due,
                            _ = stop.cancelled() => false,
                            _ = handover.cancelled() => false,
                        };
                        if !waited {
                            gather(&queue, limit, &mut taken);
                            break;
                        }
                    }
                }
                None => {
                    let linger = if taken.acks.is_empty() { BATCH_LINGER } else { ACK_LINGER };
                    tokio::select! {
                        _ = tokio::time::sleep(linger) => {}
                        _ = stop.cancelled() => {}
                        _ = handover.cancelled() => {}
                    }
                    gather(&queue, limit, &mut taken);
                }
            }
        }
        // The future holds the send slot until the batch is settled.
        sends.spawn(delivery.call(taken));
        while sends.try_join_next().is_some() {}
    }
    while sends.join_next().await.is_some() {}
}

/// How often a batch waiting for an exporter's own [`crate::Batching::max_wait`] looks for more.
const GATHER_POLL: Duration = Duration::from_millis(50);

/// Adds to `taken` what the queue holds, up to `limit`.
fn gather(queue: &Queue, limit: BatchLimit, taken: &mut Taken) {
    while let Some(more) = queue.take(limit.after(taken.items.len(), taken.bytes)) {
        taken.items.extend(more.items);
        taken.bytes += more.bytes;
        taken.seqs.extend(more.seqs);
        taken.acks.extend(more.acks);
    }
}

/// What the pipeline uses to hand a batch to one exporter.
#[derive(Clone)]
pub(crate) struct ExporterHandle {
    pub id: String,
    pub queue: Arc<Queue>,
    pub privacy_mode: bool,
    /// Which spans this exporter gets (SPEC §11); `None`: all.
    pub route: Option<Arc<Route>>,
    pub stats: Arc<DeliveryStats>,
    /// The receivers' 202 waits for the destination to confirm the spans
    /// ([`crate::ExporterConfig::confirms_delivery`]) when the queue is in memory.
    pub confirms_delivery: bool,
    last_warning: Arc<Mutex<Option<Instant>>>,
    /// When routing was last reported, and the totals then.
    last_route_report: Arc<Mutex<(Option<Instant>, [u64; 2])>>,
}

impl ExporterHandle {
    pub(crate) fn new(
        id: String,
        queue: Arc<Queue>,
        privacy_mode: bool,
        route: Option<Arc<Route>>,
        stats: Arc<DeliveryStats>,
    ) -> Self {
        ExporterHandle {
            id,
            queue,
            privacy_mode,
            route,
            stats,
            confirms_delivery: false,
            last_warning: Arc::default(),
            last_route_report: Arc::default(),
        }
    }

    /// Whether this handle hands the same spans on as `other` (privacy and routing).
    pub(crate) fn same_handling(&self, privacy_mode: bool, route: Option<&Arc<Route>>) -> bool {
        self.privacy_mode == privacy_mode && Route::same(self.route.as_deref(), route.map(|r| &**r))
    }

    /// Counts spans routing kept from this exporter (`away`: sampled out, filtered), and
    /// says so at most every 10 s, never per span.
    pub(crate) fn routed_away(&self, away: [u64; 2]) {
        if away == [0, 0] {
            return;
        }
        self.stats.lost(away[0], Lost::SampledOut);
        self.stats.lost(away[1], Lost::Filtered);
        self.report_drops();
    }

    /// Counts spans a `sample` or `filter` processor of the pipeline dropped.
    pub(crate) fn dropped_by_processor(&self, verdict: Verdict, n: u64) {
        match verdict {
            Verdict::Keep => return,
            Verdict::SampledOut => self.stats.lost(n, Lost::SampledOut),
            Verdict::Filtered => self.stats.lost(n, Lost::Filtered),
        }
        self.report_drops();
    }

    fn report_drops(&self) {
        let mut last = self.last_route_report.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.0.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            return;
        }
        let drops = self.stats.drops();
        let totals = [drops[4], drops[5]];
        let (sampled, filtered) = (totals[0] - last.1[0], totals[1] - last.1[1]);
        *last = (Some(now), totals);
        drop(last);
        tracing::info!(
            exporter = %self.id,
            sampled_out = sampled,
            filtered,
            "routing: {sampled} span(s) not in this destination's sampled share and {filtered} filtered out since the last report (counted in gencol_exporter_dropped_spans_total)"
        );
    }

    /// Whether this exporter's queue fsyncs before a receiver may answer 202.
    pub(crate) fn is_durable(&self) -> bool {
        matches!(&*self.queue, Queue::Disk(_))
    }

    /// Whether everything the pipeline hands this exporter is on disk, fsynced, before the
    /// receiver's 202: a disk queue with `sync: always` and no routing.
    pub(crate) fn keeps_all_before_ack(&self) -> bool {
        self.route.is_none() && matches!(&*self.queue, Queue::Disk(q) if q.syncs_before_ack())
    }

    /// Whether a receiver waits for this exporter before it answers 202: its disk queue's
    /// fsync, or its destination's confirmation.
    pub(crate) fn holds_receivers(&self) -> bool {
        self.is_durable() || self.confirms_delivery
    }

    /// [`ExporterHandle::confirms_delivery`], for an exporter built from a config.
    pub(crate) fn confirming(mut self, confirms: bool) -> Self {
        self.confirms_delivery = confirms && !self.is_durable();
        self
    }

    /// Queues `items` for this exporter. With a disk queue, `ack` is held until they are
    /// fsynced (or failed when they cannot be kept, so the receiver answers 503).
    pub(crate) async fn deliver(&self, mut items: Vec<SpanItem>, ack: Option<&AckToken>) {
        if self.privacy_mode {
            for item in &mut items {
                gencol_model::attributes::strip_content(&mut item.span.attributes);
            }
        }
        let n = items.len() as u64;
        // A receiver waiting on `ack` is answered once the destination confirmed these
        // spans (the memory queue carries the ack to the send), when this exporter does so.
        let confirm = if self.confirms_delivery { ack } else { None };
        match self.queue.push(items, confirm).await {
            Ok(()) => {}
            Err(Refused::Dropped) => {
                // A receiver waiting for this destination's confirmation must not answer
                // 202 for what was dropped: it answers 503 and the sender retries.
                if let Some(ack) = confirm {
                    ack.fail("the exporter's queue is full (queue.when_full: drop_newest)");
                }
                let total = self.stats.dropped(n, Lost::QueueFull);
                self.warn_at_most_every_10s(|| {
                    tracing::warn!(exporter = %self.id, dropped_total = total, "exporter queue full: dropping new spans for this destination (queue.when_full: drop_newest; use block to push back instead)");
                });
            }
            Err(Refused::Unavailable(reason)) => {
                if let Some(ack) = ack {
                    ack.fail(&reason);
                }
                self.warn_at_most_every_10s(|| {
                    tracing::error!(exporter = %self.id, "cannot queue spans for this destination, receivers answer 503: {reason}");
                });
            }
            Err(Refused::Closed) => match ack {
                // The receiver learns it (503): nothing is lost that it was told was kept.
                Some(ack) => ack.fail("gencol is shutting down"),
                // The queue closed at shutdown_timeout. With a disk queue these are spans a
                // processor released (`hierarchy` roots), which its journal releases again
                // after the next start; with a memory queue they were answered 2xx: lost,
                // so counted and said.
                None if self.is_durable() => {
                    tracing::warn!(exporter = %self.id, spans = n, "shutdown_timeout reached before these released spans were written; they are released again after the next start");
                }
                None => {
                    self.stats.dropped(n, Lost::Shutdown);
                    tracing::error!(exporter = %self.id, spans = n, "shutdown_timeout reached before these spans were queued: lost (memory queue)");
                }
            },
        }
    }

    /// One warning per 10 s at most: a dead destination or a full disk must not flood the log.
    fn warn_at_most_every_10s(&self, warn: impl FnOnce()) {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            warn();
        }
    }
}

/// Tries `take` until it yields a batch, waiting on `not_empty` between tries; `None` once
/// `closed` and nothing is left.
async fn take_or_wait<T>(not_empty: &Notify, take: impl Fn() -> Option<T>, closed: impl Fn() -> bool) -> Option<T> {
    loop {
        // Registered before the try, so a push between the try and the wait is not missed.
        let notified = not_empty.notified();
        if let Some(taken) = take() {
            return Some(taken);
        }
        if closed() {
            return None;
        }
        notified.await;
    }
}

/// The encoded size of a batch as the queues count it.
pub(crate) fn encoded_bytes(items: &[SpanItem]) -> usize {
    items.iter().map(|i| i.span.encoded_len()).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::component::{BoxFuture, ExportError};
    use crate::delivery::send::testing::spans;

    #[test]
    fn lost_spans_are_counted_by_reason_and_as_failed_or_dropped() {
        let stats = DeliveryStats::default();
        stats.failed(3, Lost::Permanent);
        stats.failed(2, Lost::Exhausted);
        stats.failed(1, Lost::Shutdown);
        assert_eq!(stats.dropped(4, Lost::QueueFull), 4);
        assert_eq!(stats.dropped(1, Lost::Shutdown), 5);
        let [sent, failed, dropped, _] = stats.snapshot();
        assert_eq!((sent, failed, dropped), (0, 6, 5));
        // queue_full, permanent_error, retries_exhausted, shutdown, sampled_out, filtered.
        assert_eq!(stats.drops(), [4, 3, 2, 2, 0, 0]);
    }

    /// Takes every batch after a second, and tracks how many it holds at once.
    #[derive(Default)]
    struct Slow {
        now: AtomicUsize,
        most: AtomicUsize,
        spans: AtomicUsize,
    }

    impl Exporter for Slow {
        fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
            Box::pin(async move {
                let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.spans.fetch_add(batch.len(), Ordering::SeqCst);
                self.now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        }
        fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
            Box::pin(async { Ok(String::new()) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_queue_consumers_batches_are_in_flight_and_the_rest_gather_in_the_queue() {
        let mut settings = DeliverySettings::default();
        settings.queue.consumers = 2;
        let queue = Arc::new(Queue::Memory(MemoryQueue::new(&settings.queue)));
        let exporter = Arc::new(Slow::default());
        let stats = Arc::new(DeliveryStats::default());
        let (stop, handover) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(run_exporter(
            "slow".into(),
            exporter.clone(),
            queue.clone(),
            settings,
            stats.clone(),
            stop,
            handover,
        ));
        // Ten pushes of 10 spans, 100 ms apart: two batches go out at once, and what
        // arrives while both slots are busy waits and goes out together.
        for _ in 0..10 {
            queue.push(spans(10, &[]), None).await.expect("queued");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        queue.close();
        task.await.expect("drained");
        assert_eq!(exporter.spans.load(Ordering::SeqCst), 100);
        assert_eq!(exporter.most.load(Ordering::SeqCst), 2);
        assert_eq!(stats.snapshot()[0], 100);
        assert!(queue.len() == 0);
    }

    /// Records each batch's size and when it was sent, asking for batches of 25 spans
    /// that may wait 5 s.
    #[derive(Default)]
    struct Objects {
        batches: Mutex<Vec<(usize, tokio::time::Instant)>>,
    }

    impl Exporter for Objects {
        fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
            self.batches.lock().unwrap().push((batch.len(), tokio::time::Instant::now()));
            Box::pin(async { Ok(()) })
        }
        fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
            Box::pin(async { Ok(String::new()) })
        }
        fn batching(&self) -> Option<crate::Batching> {
            Some(crate::Batching { max_spans: 25, max_bytes: 1 << 20, max_wait: Duration::from_secs(5) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_exporters_own_batching_sends_full_batches_at_once_and_partial_ones_after_its_wait() {
        let settings = DeliverySettings::default();
        let queue = Arc::new(Queue::Memory(MemoryQueue::new(&settings.queue)));
        let exporter = Arc::new(Objects::default());
        let (stop, handover) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(run_exporter(
            "objects".into(),
            exporter.clone(),
            queue.clone(),
            settings,
            Arc::default(),
            stop.clone(),
            handover,
        ));
        let start = tokio::time::Instant::now();
        // 60 spans in 200 ms: two full batches go without waiting, 10 wait 5 s.
        for _ in 0..6 {
            queue.push(spans(10, &[]), None).await.expect("queued");
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        {
            let batches = exporter.batches.lock().unwrap();
            let sizes: Vec<usize> = batches.iter().map(|b| b.0).collect();
            assert_eq!(sizes, [25, 25, 10], "batches: {sizes:?}");
            assert!(batches[1].1 - start < Duration::from_millis(400), "full batches are not held");
            let waited = batches[2].1 - start;
            assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6), "waited {waited:?}");
        }
        // At shutdown a partial batch goes at once.
        queue.push(spans(3, &[]), None).await.expect("queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = tokio::time::Instant::now();
        stop.cancel();
        task.await.expect("stopped");
        let batches = exporter.batches.lock().unwrap();
        assert_eq!(batches.last().map(|b| b.0), Some(3));
        assert!(batches.last().unwrap().1 - stopped < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_confirming_exporter_fails_the_ack_of_what_it_drops_or_cannot_send() {
        let mut settings = DeliverySettings::default();
        settings.queue.max_items = 1;
        settings.queue.when_full = WhenFull::DropNewest;
        let queue = Arc::new(Queue::Memory(MemoryQueue::new(&settings.queue)));
        let handle = ExporterHandle::new("nats".into(), queue.clone(), false, None, Arc::default()).confirming(true);
        assert!(handle.holds_receivers());
        // The first batch is queued with its ack; the second is dropped: its ack fails.
        let (first, first_wait) = AckToken::new();
        handle.deliver(spans(1, &[]), Some(&first)).await;
        drop(first);
        let (second, second_wait) = AckToken::new();
        handle.deliver(spans(1, &[]), Some(&second)).await;
        drop(second);
        let refused = second_wait.wait(Duration::from_secs(1)).await;
        assert!(refused.expect_err("dropped").contains("drop_newest"));
        // The first waits for the send; a send that gives up fails it.
        let waiting = tokio::spawn(first_wait.wait(Duration::from_secs(5)));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "held until the destination confirms");
        let taken = queue.take(BatchLimit { spans: 10, bytes: 1 << 20 }).expect("queued");
        assert_eq!(taken.acks.len(), 1);
        taken.acks[0].fail("gave up");
        drop(taken);
        assert_eq!(waiting.await.unwrap(), Err("gave up".to_owned()));
    }
}
