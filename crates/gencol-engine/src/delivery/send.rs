//! One send to a destination as a `tower` service, and the layers every exporter's sends
//! pass through, inside out: the exporter's own send ([`ExportService`]), a deadline
//! ([`super::timeout`]), its duration recorded ([`super::telemetry`]), retries with
//! backoff and `Retry-After` ([`super::retry`]), and shutdown ([`super::stop`]). Around
//! them, per taken batch, [`super::settle`] decides what becomes of it, under a
//! concurrency limit (`queue.consumers`).

use std::ops::Range;
use std::sync::Arc;
use std::task::{Context, Poll};

use gencol_model::SpanItem;
use tower::Service;

use crate::component::{BoxFuture, ExportError, Exporter};

/// The spans of one send: a batch taken from the queue, or a part of it (a refused batch
/// is split). Cheap to clone, so a retry sends the same spans again.
#[derive(Clone)]
pub(crate) struct Batch {
    items: Arc<Vec<SpanItem>>,
    range: Range<usize>,
}

impl Batch {
    pub(crate) fn new(items: Vec<SpanItem>) -> Self {
        let range = 0..items.len();
        Batch { items: Arc::new(items), range }
    }

    /// `range` of this batch's spans (indices relative to this batch).
    pub(crate) fn part(&self, range: Range<usize>) -> Batch {
        let start = self.range.start + range.start;
        Batch { items: self.items.clone(), range: start..(self.range.start + range.end).min(self.range.end) }
    }

    pub(crate) fn len(&self) -> usize {
        self.range.len()
    }

    pub(crate) fn spans(&self) -> &[SpanItem] {
        &self.items[self.range.clone()]
    }
}

/// Why a send did not deliver its batch.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Failure {
    /// What the destination answered (a timeout reads as a retryable answer).
    Export(ExportError),
    /// Retries were off, or the next wait would pass `retry.max_elapsed_time`.
    GaveUp,
    /// `shutdown_timeout` ran out before an answer.
    Stopped,
}

/// The innermost service: the exporter sends the batch once.
#[derive(Clone)]
pub(crate) struct ExportService {
    exporter: Arc<dyn Exporter>,
}

impl ExportService {
    pub(crate) fn new(exporter: Arc<dyn Exporter>) -> Self {
        ExportService { exporter }
    }
}

impl Service<Batch> for ExportService {
    type Response = ();
    type Error = Failure;
    type Future = BoxFuture<'static, Result<(), Failure>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let exporter = self.exporter.clone();
        Box::pin(async move { exporter.export(batch.spans()).await.map_err(Failure::Export) })
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the delivery layers' tests share.

    use std::sync::Arc;

    use gencol_model::{Origin, SpanItem};

    use super::Batch;

    /// `n` spans named `s0`, `s1`, …, with `bad` indices named `bad<i>` instead.
    pub(crate) fn spans(n: usize, bad: &[usize]) -> Vec<SpanItem> {
        let origin = Arc::new(Origin::default());
        (0..n)
            .map(|i| {
                let name = if bad.contains(&i) { format!("bad{i}") } else { format!("s{i}") };
                let span = opentelemetry_proto::tonic::trace::v1::Span { name, ..Default::default() };
                SpanItem { origin: origin.clone(), span, generation: None }
            })
            .collect()
    }

    pub(crate) fn batch(n: usize) -> Batch {
        Batch::new(spans(n, &[]))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::spans;
    use super::*;

    #[test]
    fn parts_of_a_batch_are_relative_to_it() {
        let batch = Batch::new(spans(10, &[]));
        let back = batch.part(5..10);
        assert_eq!(back.len(), 5);
        let quarter = back.part(3..5);
        let names: Vec<&str> = quarter.spans().iter().map(|i| i.span.name.as_str()).collect();
        assert_eq!(names, ["s8", "s9"]);
    }
}
