//! The memory queue in front of one exporter: bounded in spans and bytes, locked once
//! per batch, never per span. What it holds is lost on a crash (SPEC §7).

use std::collections::VecDeque;
use std::sync::Mutex;

use gencol_model::SpanItem;
use prost::Message;
use tokio::sync::Notify;

use super::{BatchLimit, QueueSettings, WhenFull, take_or_wait};
use crate::consumer::AckToken;

/// One pushed batch: its spans, their encoded bytes, and the receiver's ack when it waits
/// for this exporter's destination to confirm the batch (`confirms_delivery`).
type Job = (Vec<SpanItem>, usize, Option<AckToken>);

/// Spans taken for one send, their bytes, and the acks of the batches they came from.
pub(crate) type TakenJob = (Vec<SpanItem>, usize, Vec<AckToken>);

struct QueueState {
    jobs: VecDeque<Job>,
    items: usize,
    bytes: usize,
    closed: bool,
}

/// The bounded queue in front of one exporter. Locked once per batch, never per span.
pub(crate) struct MemoryQueue {
    state: Mutex<QueueState>,
    not_empty: Notify,
    not_full: Notify,
    max_items: usize,
    max_bytes: usize,
    when_full: WhenFull,
}

impl MemoryQueue {
    pub(crate) fn new(s: &QueueSettings) -> Self {
        MemoryQueue {
            state: Mutex::new(QueueState { jobs: VecDeque::new(), items: 0, bytes: 0, closed: false }),
            not_empty: Notify::new(),
            not_full: Notify::new(),
            max_items: s.max_items.max(1),
            max_bytes: usize::try_from(s.max_bytes()).unwrap_or(usize::MAX).max(1),
            when_full: s.when_full,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue half-updated (each
        // critical section is a few assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a batch; false when it was refused (full with `drop_newest`, or closed).
    /// `ack` goes with its spans until they are sent (or given up on).
    pub(crate) async fn push(&self, items: Vec<SpanItem>, ack: Option<AckToken>) -> bool {
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
                    s.jobs.push_back((items, bytes, ack));
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
    pub(crate) async fn pop(&self, limit: BatchLimit) -> Option<TakenJob> {
        take_or_wait(&self.not_empty, || self.take(limit), || self.is_closed()).await
    }

    /// Takes queued spans within `limit` (at least one span when any is queued and the
    /// limit is not used up), with their byte count, without waiting.
    pub(crate) fn take(&self, limit: BatchLimit) -> Option<TakenJob> {
        if limit.spans == 0 || limit.bytes == 0 {
            return None;
        }
        let mut s = self.lock();
        let (mut first, first_bytes, ack) = s.jobs.pop_front()?;
        let mut acks: Vec<AckToken> = Vec::new();
        let mut bytes = first_bytes;
        // A job over the limit is split; its bytes are shared out by span count, and its
        // ack goes with both parts (it completes when both are sent).
        let by_bytes = if first_bytes > limit.bytes { first.len() * limit.bytes / first_bytes } else { first.len() };
        let keep = first.len().min(limit.spans).min(by_bytes).max(1);
        if first.len() > keep {
            let rest = first.split_off(keep);
            let rest_bytes = first_bytes.saturating_sub(first_bytes * keep / (keep + rest.len()));
            bytes = first_bytes - rest_bytes;
            s.jobs.push_front((rest, rest_bytes, ack.clone()));
        }
        acks.extend(ack);
        while let Some((next, next_bytes, _)) = s.jobs.front() {
            if first.len() + next.len() > limit.spans || bytes + next_bytes > limit.bytes {
                break;
            }
            let (next, b, ack) = s.jobs.pop_front().unwrap_or_default();
            bytes += b;
            first.extend(next);
            acks.extend(ack);
        }
        s.items -= first.len();
        s.bytes = s.bytes.saturating_sub(bytes);
        drop(s);
        self.not_full.notify_waiters();
        Some((first, bytes, acks))
    }

    pub(crate) fn is_closed(&self) -> bool {
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

    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use gencol_model::Origin;

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
        let q = MemoryQueue::new(&QueueSettings::default());
        // 100-byte names: 102 encoded bytes a span.
        q.push(named(10, &"x".repeat(100)), None).await;
        let (batch, bytes, _) = q.pop(BatchLimit { spans: 100, bytes: 350 }).await.unwrap();
        assert_eq!((batch.len(), bytes), (3, 306));
        q.push(named(2, &"y".repeat(100)), None).await;
        // The 7 left of the first job (714 bytes) fit 800 bytes; the next job (204) would not.
        let (batch, _, _) = q.pop(BatchLimit { spans: 100, bytes: 800 }).await.unwrap();
        assert_eq!(batch.len(), 7);
        // A span larger than the whole limit still goes, alone.
        let (batch, _, _) = q.pop(BatchLimit { spans: 100, bytes: 10 }).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert!(q.take(BatchLimit { spans: 0, bytes: 10 }).is_none());
    }

    #[tokio::test]
    async fn drop_newest_refuses_when_full_and_block_waits() {
        let q =
            MemoryQueue::new(&QueueSettings { max_items: 3, when_full: WhenFull::DropNewest, ..Default::default() });
        assert!(q.push(items(2), None).await);
        assert!(!q.push(items(2), None).await);
        assert_eq!(q.len(), 2);
        let q = Arc::new(MemoryQueue::new(&QueueSettings {
            max_items: 3,
            when_full: WhenFull::Block,
            ..Default::default()
        }));
        assert!(q.push(items(2), None).await);
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(items(2), None).await });
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished());
        assert_eq!(q.pop(spans(10)).await.unwrap().0.len(), 2);
        assert!(pusher.await.unwrap());
        assert_eq!(q.len(), 2);
    }

    #[tokio::test]
    async fn pop_batches_and_splits() {
        let q = MemoryQueue::new(&QueueSettings::default());
        q.push(items(3), None).await;
        q.push(items(4), None).await;
        q.push(items(10), None).await;
        assert_eq!(q.pop(spans(8)).await.unwrap().0.len(), 7);
        assert_eq!(q.pop(spans(8)).await.unwrap().0.len(), 8);
        assert_eq!(q.pop(spans(8)).await.unwrap().0.len(), 2);
        q.close();
        assert!(q.pop(spans(8)).await.is_none());
    }

    #[tokio::test]
    async fn an_ack_goes_with_its_spans_and_completes_when_all_are_taken_and_dropped() {
        let q = MemoryQueue::new(&QueueSettings::default());
        let (ack, wait) = AckToken::new();
        assert!(q.push(items(5), Some(ack)).await);
        assert!(q.push(items(1), None).await);
        let (first, _, first_acks) = q.pop(spans(3)).await.unwrap();
        assert_eq!((first.len(), first_acks.len()), (3, 1));
        let (second, _, second_acks) = q.pop(spans(10)).await.unwrap();
        assert_eq!((second.len(), second_acks.len()), (3, 1), "the rest of the batch and the next one");
        drop(first_acks);
        let waiting = tokio::spawn(wait.wait(std::time::Duration::from_secs(5)));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "half the batch is still out");
        second_acks[0].fail("destination refused");
        drop(second_acks);
        assert_eq!(waiting.await.unwrap(), Err("destination refused".to_owned()));
    }
}
