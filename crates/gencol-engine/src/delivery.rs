//! Delivery, written once for every exporter (SPEC §7): a bounded queue in front of
//! each exporter so a slow destination never delays another, batching (take what is
//! queued, up to a batch size; a partial batch waits a few milliseconds for more), a few
//! sends in flight, and send → timeout → retry with backoff that honours `Retry-After`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gencol_config::{ByteSize, Duration as ConfigDuration};
use gencol_model::SpanItem;
use prost::Message;
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::component::{ExportError, Exporter};

/// The keys every exporter accepts besides its own.
pub const DELIVERY_KEYS: [&str; 4] = ["timeout", "retry", "queue", "privacy_mode"];

/// What one export request carries at most: spans, and their encoded size (protobuf,
/// as the queue counts it). Small spans go out 1,024 at a time; generation spans with
/// their content (several KiB each) stop at 4 MiB, which keeps a request under backends'
/// limits and a send in flight, holding its spans and their encoding, to a few MiB.
const MAX_BATCH: BatchLimit = BatchLimit { spans: 1024, bytes: 4 * 1024 * 1024 };

#[derive(Clone, Copy, Debug)]
struct BatchLimit {
    spans: usize,
    bytes: usize,
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
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            timeout: ConfigDuration(Duration::from_secs(10)),
            retry: RetrySettings::default(),
            queue: QueueSettings::default(),
            privacy_mode: false,
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
    /// Wait for room: backpressure reaches the receiver, which answers 503.
    Block,
    /// Refuse the new batch for this exporter only (logged and counted).
    DropNewest,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    pub kind: QueueKind,
    /// Spans held at most.
    pub max_items: usize,
    /// Encoded span bytes held at most.
    pub max_bytes: ByteSize,
    pub when_full: WhenFull,
    pub dir: Option<String>,
    /// Sends in flight at once.
    pub consumers: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            kind: QueueKind::Memory,
            max_items: 100_000,
            max_bytes: ByteSize(64 * 1024 * 1024),
            // Isolation first: a dead destination must not stall the others (SPEC §7).
            when_full: WhenFull::DropNewest,
            dir: None,
            consumers: 4,
        }
    }
}

/// Counters of one exporter, read at shutdown and by tests.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
}

impl DeliveryStats {
    pub fn snapshot(&self) -> [u64; 4] {
        [&self.sent, &self.failed, &self.dropped, &self.retries].map(|a| a.load(Ordering::Relaxed))
    }
}

struct QueueState {
    jobs: VecDeque<(Vec<SpanItem>, usize)>,
    items: usize,
    bytes: usize,
    closed: bool,
}

/// The bounded queue in front of one exporter. Locked once per batch, never per span.
pub(crate) struct ExporterQueue {
    state: Mutex<QueueState>,
    not_empty: Notify,
    not_full: Notify,
    max_items: usize,
    max_bytes: usize,
    when_full: WhenFull,
}

impl ExporterQueue {
    pub(crate) fn new(s: &QueueSettings) -> Self {
        ExporterQueue {
            state: Mutex::new(QueueState { jobs: VecDeque::new(), items: 0, bytes: 0, closed: false }),
            not_empty: Notify::new(),
            not_full: Notify::new(),
            max_items: s.max_items.max(1),
            max_bytes: usize::try_from(s.max_bytes.0).unwrap_or(usize::MAX).max(1),
            when_full: s.when_full,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue half-updated (each
        // critical section is a few assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a batch; false when it was refused (full with `drop_newest`, or closed).
    pub(crate) async fn push(&self, items: Vec<SpanItem>) -> bool {
        let bytes: usize = items.iter().map(|i| i.span.encoded_len()).sum();
        let mut items = Some(items);
        loop {
            let notified = self.not_full.notified();
            {
                let mut s = self.lock();
                if s.closed {
                    return false;
                }
                // An empty queue always takes a batch, however large, or it could never move.
                let fits = s.jobs.is_empty()
                    || (s.items + items.as_ref().map_or(0, Vec::len) <= self.max_items
                        && s.bytes + bytes <= self.max_bytes);
                if fits {
                    let items = items.take().unwrap_or_default();
                    s.items += items.len();
                    s.bytes += bytes;
                    s.jobs.push_back((items, bytes));
                    drop(s);
                    self.not_empty.notify_one();
                    return true;
                }
                if self.when_full == WhenFull::DropNewest {
                    return false;
                }
            }
            notified.await;
        }
    }

    /// Takes a batch within `limit`; waits while empty; `None` once closed and drained.
    async fn pop(&self, limit: BatchLimit) -> Option<(Vec<SpanItem>, usize)> {
        loop {
            let notified = self.not_empty.notified();
            if let Some(batch) = self.take(limit) {
                return Some(batch);
            }
            if self.is_closed() {
                return None;
            }
            notified.await;
        }
    }

    /// Takes queued spans within `limit` (at least one span when any is queued and the
    /// limit is not used up), with their byte count, without waiting.
    fn take(&self, limit: BatchLimit) -> Option<(Vec<SpanItem>, usize)> {
        if limit.spans == 0 || limit.bytes == 0 {
            return None;
        }
        let mut s = self.lock();
        let (mut first, first_bytes) = s.jobs.pop_front()?;
        let mut bytes = first_bytes;
        // A job over the limit is split; its bytes are shared out by span count.
        let by_bytes = if first_bytes > limit.bytes { first.len() * limit.bytes / first_bytes } else { first.len() };
        let keep = first.len().min(limit.spans).min(by_bytes).max(1);
        if first.len() > keep {
            let rest = first.split_off(keep);
            let rest_bytes = first_bytes.saturating_sub(first_bytes * keep / (keep + rest.len()));
            bytes = first_bytes - rest_bytes;
            s.jobs.push_front((rest, rest_bytes));
        }
        while let Some((next, next_bytes)) = s.jobs.front() {
            if first.len() + next.len() > limit.spans || bytes + next_bytes > limit.bytes {
                break;
            }
            let (next, b) = s.jobs.pop_front().unwrap_or_default();
            bytes += b;
            first.extend(next);
        }
        s.items -= first.len();
        s.bytes = s.bytes.saturating_sub(bytes);
        drop(s);
        self.not_full.notify_waiters();
        Some((first, bytes))
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_waiters();
        self.not_full.notify_waiters();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items
    }
}

/// Drains one exporter's queue until it is closed and empty, or `stop` is cancelled.
pub(crate) async fn run_exporter(
    id: String,
    exporter: Arc<dyn Exporter>,
    queue: Arc<ExporterQueue>,
    settings: DeliverySettings,
    stats: Arc<DeliveryStats>,
    stop: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(settings.queue.consumers.max(1)));
    let mut sends = JoinSet::new();
    loop {
        // A send slot first, then the batch: while every slot is busy, spans gather in
        // the queue and go out together, instead of being taken early in small batches.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let batch = tokio::select! {
            b = queue.pop(MAX_BATCH) => b,
            _ = stop.cancelled() => None,
        };
        let Some((mut batch, mut bytes)) = batch else { break };
        // A trickle (a few generations a millisecond) would otherwise go out a span or
        // two per request, and each request costs far more than the spans in it. What
        // arrives within BATCH_LINGER joins this batch; a full batch, and shutdown,
        // never wait.
        if batch.len() < MAX_BATCH.spans && bytes < MAX_BATCH.bytes && !queue.is_closed() {
            tokio::select! {
                _ = tokio::time::sleep(BATCH_LINGER) => {}
                _ = stop.cancelled() => {}
            }
            while let Some((more, more_bytes)) = queue.take(MAX_BATCH.after(batch.len(), bytes)) {
                batch.extend(more);
                bytes += more_bytes;
            }
        }
        let (id, exporter, settings, stats, stop) =
            (id.clone(), exporter.clone(), settings.clone(), stats.clone(), stop.clone());
        sends.spawn(async move {
            send_with_retry(&id, exporter.as_ref(), &batch, &settings, &stats, &stop).await;
            drop(permit);
        });
        while sends.try_join_next().is_some() {}
    }
    while sends.join_next().await.is_some() {}
}

async fn send_with_retry(
    id: &str,
    exporter: &dyn Exporter,
    batch: &[SpanItem],
    settings: &DeliverySettings,
    stats: &DeliveryStats,
    stop: &CancellationToken,
) {
    let n = batch.len() as u64;
    let started = Instant::now();
    let retry = &settings.retry;
    let mut interval = retry.initial_interval.0;
    loop {
        let attempt = tokio::time::timeout(settings.timeout.0, exporter.export(batch));
        let outcome = tokio::select! {
            r = attempt => match r {
                Ok(r) => r,
                Err(_) => Err(ExportError::retryable(format!("no answer within {:?}", settings.timeout.0))),
            },
            // shutdown_timeout is over: an answer that comes later cannot be waited for.
            _ = stop.cancelled() => {
                stats.failed.fetch_add(n, Ordering::Relaxed);
                tracing::error!(exporter = id, spans = n, "shutdown_timeout reached while sending: batch not delivered");
                return;
            }
        };
        let (message, retry_after) = match outcome {
            Ok(()) => {
                stats.sent.fetch_add(n, Ordering::Relaxed);
                return;
            }
            Err(ExportError::Permanent { message }) => {
                stats.failed.fetch_add(n, Ordering::Relaxed);
                tracing::error!(exporter = id, spans = n, "destination rejected the batch, not retrying: {message}");
                return;
            }
            Err(ExportError::Retryable { message, retry_after }) => (message, retry_after),
        };
        let wait = retry_after.map(|d| d.min(retry.max_interval.0)).unwrap_or_else(|| jittered(interval, retry.jitter));
        if !retry.enabled || started.elapsed() + wait > retry.max_elapsed_time.0 {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            tracing::error!(exporter = id, spans = n, elapsed = ?started.elapsed(), "giving up on the batch: {message}");
            return;
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(exporter = id, spans = n, retry_in = ?wait, "send failed, will retry: {message}");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {
                stats.failed.fetch_add(n, Ordering::Relaxed);
                tracing::error!(exporter = id, spans = n, "shutting down while retrying: batch not delivered");
                return;
            }
        }
        interval = Duration::from_secs_f64(
            (interval.as_secs_f64() * retry.multiplier).min(retry.max_interval.0.as_secs_f64()),
        );
    }
}

fn jittered(d: Duration, jitter: f64) -> Duration {
    let j = jitter.clamp(0.0, 1.0);
    let factor = 1.0 - j + fastrand::f64() * 2.0 * j;
    d.mul_f64(factor)
}

/// What the pipeline uses to hand a batch to one exporter.
#[derive(Clone)]
pub(crate) struct ExporterHandle {
    pub id: String,
    pub queue: Arc<ExporterQueue>,
    pub privacy_mode: bool,
    pub stats: Arc<DeliveryStats>,
    last_warning: Arc<Mutex<Option<Instant>>>,
}

impl ExporterHandle {
    pub(crate) fn new(id: String, queue: Arc<ExporterQueue>, privacy_mode: bool, stats: Arc<DeliveryStats>) -> Self {
        ExporterHandle { id, queue, privacy_mode, stats, last_warning: Arc::default() }
    }

    pub(crate) async fn deliver(&self, mut items: Vec<SpanItem>) {
        if self.privacy_mode {
            for item in &mut items {
                gencol_model::attributes::strip_content(&mut item.span.attributes);
            }
        }
        let n = items.len() as u64;
        if !self.queue.push(items).await {
            let total = self.stats.dropped.fetch_add(n, Ordering::Relaxed) + n;
            // One warning per 10 s at most: a dead destination must not flood the log.
            let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                *last = Some(Instant::now());
                tracing::warn!(exporter = %self.id, dropped_total = total, "exporter queue full: dropping new spans for this destination (raise queue.max_items or use queue.when_full: block)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gencol_model::{Origin, SpanItem};

    fn items(n: usize) -> Vec<SpanItem> {
        named(n, "")
    }

    fn named(n: usize, name: &str) -> Vec<SpanItem> {
        let origin = Arc::new(Origin::default());
        let span = opentelemetry_proto::tonic::trace::v1::Span { name: name.to_owned(), ..Default::default() };
        (0..n).map(|_| SpanItem { origin: origin.clone(), span: span.clone(), generation: None }).collect()
    }

    fn spans(n: usize) -> BatchLimit {
        BatchLimit { spans: n, bytes: usize::MAX }
    }

    #[tokio::test]
    async fn batches_stop_at_the_byte_limit_too() {
        let q = ExporterQueue::new(&QueueSettings::default());
        // 100-byte names: 102 encoded bytes a span.
        q.push(named(10, &"x".repeat(100))).await;
        let (batch, bytes) = q.pop(BatchLimit { spans: 100, bytes: 350 }).await.unwrap();
        assert_eq!((batch.len(), bytes), (3, 306));
        q.push(named(2, &"y".repeat(100))).await;
        // The 7 left of the first job (714 bytes) fit 800 bytes; the next job (204) would not.
        let (batch, _) = q.pop(BatchLimit { spans: 100, bytes: 800 }).await.unwrap();
        assert_eq!(batch.len(), 7);
        // A span larger than the whole limit still goes, alone.
        let (batch, _) = q.pop(BatchLimit { spans: 100, bytes: 10 }).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert!(q.take(BatchLimit { spans: 0, bytes: 10 }).is_none());
    }

    #[tokio::test]
    async fn drop_newest_refuses_when_full_and_block_waits() {
        let q = ExporterQueue::new(&QueueSettings { max_items: 3, ..Default::default() });
        assert!(q.push(items(2)).await);
        assert!(!q.push(items(2)).await);
        assert_eq!(q.len(), 2);
        let q = Arc::new(ExporterQueue::new(&QueueSettings {
            max_items: 3,
            when_full: WhenFull::Block,
            ..Default::default()
        }));
        assert!(q.push(items(2)).await);
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(items(2)).await });
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished());
        assert_eq!(q.pop(spans(10)).await.unwrap().0.len(), 2);
        assert!(pusher.await.unwrap());
        assert_eq!(q.len(), 2);
    }

    #[tokio::test]
    async fn pop_batches_and_splits() {
        let q = ExporterQueue::new(&QueueSettings::default());
        q.push(items(3)).await;
        q.push(items(4)).await;
        q.push(items(10)).await;
        assert_eq!(q.pop(spans(8)).await.unwrap().0.len(), 7);
        assert_eq!(q.pop(spans(8)).await.unwrap().0.len(), 8);
        assert_eq!(q.pop(spans(8)).await.unwrap().0.len(), 2);
        q.close();
        assert!(q.pop(spans(8)).await.is_none());
    }
}
