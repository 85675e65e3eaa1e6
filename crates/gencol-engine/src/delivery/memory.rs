//! The memory queue in front of one exporter: bounded in spans and bytes, locked once
//! per batch, never per span. What it holds is lost on a crash (SPEC §7).

use std::collections::VecDeque;
use std::sync::Mutex;

use gencol_model::SpanItem;
use prost::Message;
use tokio::sync::Notify;

use super::{BatchLimit, QueueSettings, WhenFull, take_or_wait};

struct QueueState {
    jobs: VecDeque<(Vec<SpanItem>, usize)>,
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
    pub(crate) async fn pop(&self, limit: BatchLimit) -> Option<(Vec<SpanItem>, usize)> {
        take_or_wait(&self.not_empty, || self.take(limit), || self.is_closed()).await
    }

    /// Takes queued spans within `limit` (at least one span when any is queued and the
    /// limit is not used up), with their byte count, without waiting.
    pub(crate) fn take(&self, limit: BatchLimit) -> Option<(Vec<SpanItem>, usize)> {
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
        let q =
            MemoryQueue::new(&QueueSettings { max_items: 3, when_full: WhenFull::DropNewest, ..Default::default() });
        assert!(q.push(items(2)).await);
        assert!(!q.push(items(2)).await);
        assert_eq!(q.len(), 2);
        let q = Arc::new(MemoryQueue::new(&QueueSettings {
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
        let q = MemoryQueue::new(&QueueSettings::default());
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
