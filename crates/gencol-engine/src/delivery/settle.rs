//! What becomes of a batch taken from the queue, once per batch around the send layers:
//! sent, or refused for good (counted, and let go of), or split when the destination
//! refused its content so that one bad span never sinks the others, or kept for later
//! (disk) or lost and counted (memory) when retries ran out or shutdown came.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tower::{Layer, Service, ServiceExt};

use super::send::{Batch, Failure};
use super::{DeliveryStats, Lost, Queue, Taken};
use crate::component::{BoxFuture, ExportError};

/// How one send of a batch (or a part of it) ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The destination took it.
    Sent,
    /// The destination refused it for good (a 4xx other than 429): sending it again would
    /// fail the same way.
    Rejected,
    /// The destination refused its content (400, 413, 422): a part of it may pass.
    Refused(String),
    /// Retries were off, or the next wait would pass `max_elapsed_time`.
    GaveUp,
    /// `shutdown_timeout` ran out before an answer.
    Stopped,
}

impl From<Result<(), Failure>> for Outcome {
    fn from(answer: Result<(), Failure>) -> Self {
        match answer {
            Ok(()) => Outcome::Sent,
            Err(Failure::Export(ExportError::Permanent { .. })) => Outcome::Rejected,
            Err(Failure::Export(ExportError::Refused { message })) => Outcome::Refused(message),
            // Retryable answers reach here only when no retry layer is composed.
            Err(Failure::Export(ExportError::Retryable { .. }) | Failure::GaveUp) => Outcome::GaveUp,
            Err(Failure::Stopped) => Outcome::Stopped,
        }
    }
}

#[derive(Clone)]
pub(crate) struct SettleLayer {
    exporter: Arc<str>,
    queue: Arc<Queue>,
    stats: Arc<DeliveryStats>,
    /// How long a disk-queued batch waits after retries ran out before it is tried again.
    pause: Duration,
    stop: CancellationToken,
}

impl SettleLayer {
    pub(crate) fn new(
        exporter: &str,
        queue: Arc<Queue>,
        stats: Arc<DeliveryStats>,
        pause: Duration,
        stop: CancellationToken,
    ) -> Self {
        SettleLayer { exporter: Arc::from(exporter), queue, stats, pause: pause.max(Duration::from_secs(1)), stop }
    }
}

impl<S> Layer<S> for SettleLayer {
    type Service = Settle<S>;

    fn layer(&self, send: S) -> Settle<S> {
        Settle { settings: self.clone(), send }
    }
}

#[derive(Clone)]
pub(crate) struct Settle<S> {
    settings: SettleLayer,
    send: S,
}

impl<S> Service<Taken> for Settle<S>
where
    S: Service<Batch, Response = (), Error = Failure> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<(), std::convert::Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The send layers are always ready; the concurrency limit outside waits for a slot.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, taken: Taken) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            this.settle(taken).await;
            Ok(())
        })
    }
}

impl<S> Settle<S>
where
    S: Service<Batch, Response = (), Error = Failure> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    async fn send(&self, batch: Batch) -> Outcome {
        self.send.clone().oneshot(batch).await.into()
    }

    /// Sends one taken batch and settles it: counted, and (disk) acknowledged so it is not
    /// read again, or kept on disk when retries ran out or shutdown came first.
    async fn settle(&self, taken: Taken) {
        let SettleLayer { exporter: id, queue, stats, pause, stop } = &self.settings;
        let id = &**id;
        let Taken { items, seqs, acks, .. } = taken;
        // Receivers waiting for this send (`confirms_delivery`) learn it failed, and answer
        // 503 so the sender retries; when it succeeds the acks are simply let go.
        let fail = |reason: &str| acks.iter().for_each(|a| a.fail(reason));
        let batch = Batch::new(items);
        let n = batch.len() as u64;
        let on_disk = matches!(**queue, Queue::Disk(_));
        loop {
            match self.send(batch.clone()).await {
                Outcome::Sent => {
                    stats.sent.fetch_add(n, Ordering::Relaxed);
                    queue.done(&seqs);
                    return;
                }
                Outcome::Rejected => {
                    stats.failed(n, Lost::Permanent);
                    fail("the destination rejected the spans");
                    queue.done(&seqs);
                    return;
                }
                Outcome::Refused(reason) => {
                    let isolated = self.isolate_refused(&batch, reason).await;
                    if isolated.unsettled == 0 || !on_disk {
                        // A memory-queued part that could not be settled (the destination
                        // went away meanwhile, or shutdown) is lost: counted with the refused.
                        stats.failed(isolated.unsettled, Lost::Exhausted);
                        if isolated.unsettled > 0 {
                            fail("the destination refused part of the spans");
                        }
                        queue.done(&seqs);
                        return;
                    }
                    // Disk: the record stays; the whole batch is sent again later (the
                    // parts delivered already go again, with the same ids).
                    tokio::select! {
                        _ = tokio::time::sleep(*pause) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                Outcome::GaveUp if on_disk => {
                    // SPEC §7: a disk-queued batch stays on disk for later. It keeps this
                    // send slot and starts a new round of retries after a pause.
                    tracing::warn!(exporter = id, spans = n, "batch kept in the disk queue; trying again in {pause:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(*pause) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                Outcome::GaveUp => {
                    stats.failed(n, Lost::Exhausted);
                    fail("the destination did not take the spans in time");
                    return;
                }
                Outcome::Stopped if on_disk => {
                    tracing::info!(
                        exporter = id,
                        spans = n,
                        "shutdown_timeout reached while sending: batch stays on disk for the next start"
                    );
                    return;
                }
                Outcome::Stopped => {
                    stats.failed(n, Lost::Shutdown);
                    fail("gencol is shutting down");
                    tracing::error!(
                        exporter = id,
                        spans = n,
                        "shutdown_timeout reached while sending: batch lost (memory queue)"
                    );
                    return;
                }
            }
        }
    }

    /// A batch the destination refused for its content (SPEC: one bad record never sinks
    /// its batch): its halves are sent, and the halves of a refused half, until only the
    /// spans the destination refuses on their own are left; those are dropped and
    /// counted, and one line says how many and why. What is still unresolved after
    /// [`ISOLATION_SENDS`] requests is refused as a whole.
    async fn isolate_refused(&self, batch: &Batch, mut reason: String) -> Isolation {
        fn halves(r: std::ops::Range<usize>) -> [std::ops::Range<usize>; 2] {
            let mid = r.start + r.len() / 2;
            // Popped from the back: the first half goes first.
            [mid..r.end, r.start..mid]
        }
        let (id, stats) = (&*self.settings.exporter, &self.settings.stats);
        let (mut sent, mut refused, mut unsettled, mut sends) = (0u64, 0u64, 0u64, 0usize);
        let mut pending = if batch.len() > 1 { halves(0..batch.len()).to_vec() } else { Vec::new() };
        if batch.len() == 1 {
            refused = 1;
        }
        while let Some(part) = pending.pop() {
            let len = part.len() as u64;
            if sends >= ISOLATION_SENDS || unsettled > 0 {
                // Past the bound, or the destination stopped answering: not split further.
                if unsettled > 0 {
                    unsettled += len
                } else {
                    refused += len
                }
                continue;
            }
            sends += 1;
            match self.send(batch.part(part.clone())).await {
                Outcome::Sent => sent += len,
                Outcome::Refused(why) => {
                    reason = why;
                    if part.len() > 1 {
                        pending.extend(halves(part));
                    } else {
                        refused += 1;
                    }
                }
                Outcome::Rejected => refused += len,
                Outcome::GaveUp | Outcome::Stopped => unsettled += len,
            }
        }
        stats.sent.fetch_add(sent, Ordering::Relaxed);
        stats.failed(refused, Lost::Permanent);
        if batch.len() == 1 {
            tracing::error!(exporter = id, spans = 1, "destination refused the span for good, not retrying: {reason}");
            return Isolation { unsettled };
        }
        tracing::error!(
            exporter = id,
            spans = batch.len(),
            refused,
            delivered = sent,
            requests = sends + 1,
            "destination refused {refused} of {} spans of a batch for good; the batch was split so the others could go through: {reason}",
            batch.len()
        );
        Isolation { unsettled }
    }
}

/// At most this many requests go to isolating the spans a destination refuses in one
/// batch: enough for a few bad spans in a full batch (halving finds one among 1,024 in 20
/// requests), and a bound when the destination refuses everything.
const ISOLATION_SENDS: usize = 64;

/// How the split of a refused batch ended, in spans.
struct Isolation {
    /// Spans of parts the destination did not settle (it went away, or shutdown came).
    unsettled: u64,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::delivery::send::testing::spans;
    use crate::delivery::{MemoryQueue, QueueSettings};

    /// Refuses (as a 400 would) every batch holding a span named `bad`; takes the others.
    #[derive(Clone, Default)]
    struct Picky {
        requests: Arc<AtomicUsize>,
        taken: Arc<Mutex<Vec<String>>>,
        refuse_all: bool,
    }

    impl Service<Batch> for Picky {
        type Response = ();
        type Error = Failure;
        type Future = std::future::Ready<Result<(), Failure>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, batch: Batch) -> Self::Future {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let bad = self.refuse_all || batch.spans().iter().any(|i| i.span.name.starts_with("bad"));
            if !bad {
                self.taken.lock().expect("test lock").extend(batch.spans().iter().map(|i| i.span.name.clone()));
            }
            std::future::ready(if bad {
                Err(Failure::Export(ExportError::refused("400 invalid span")))
            } else {
                Ok(())
            })
        }
    }

    fn settle(send: Picky) -> (Settle<Picky>, Arc<DeliveryStats>) {
        let stats = Arc::new(DeliveryStats::default());
        let queue = Arc::new(Queue::Memory(MemoryQueue::new(&QueueSettings::default())));
        let layer = SettleLayer::new("test", queue, stats.clone(), Duration::from_secs(30), CancellationToken::new());
        (layer.layer(send), stats)
    }

    fn taken(n: usize, bad: &[usize]) -> Taken {
        Taken { items: spans(n, bad), bytes: 0, seqs: Vec::new(), acks: Vec::new() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_split_until_only_the_refused_spans_are_left() {
        let exporter = Picky::default();
        let (svc, stats) = settle(exporter.clone());
        svc.oneshot(taken(1024, &[37, 900])).await.expect("settled");
        let [sent, failed, ..] = stats.snapshot();
        assert_eq!((sent, failed), (1022, 2));
        let mut taken = exporter.taken.lock().expect("test lock").clone();
        taken.sort();
        taken.dedup();
        assert_eq!(taken.len(), 1022, "every good span delivered once");
        assert!(!taken.iter().any(|n| n.starts_with("bad")));
        // Halving: about 2·log2(1024) requests per bad span, not one per span.
        let requests = exporter.requests.load(Ordering::SeqCst);
        assert!(requests <= 1 + 2 * 2 * 10 + 2, "{requests} requests");
    }

    #[tokio::test(start_paused = true)]
    async fn a_destination_that_refuses_everything_gets_a_bounded_number_of_requests() {
        let exporter = Picky { refuse_all: true, ..Picky::default() };
        let (svc, stats) = settle(exporter.clone());
        svc.oneshot(taken(1024, &[])).await.expect("settled");
        let [sent, failed, ..] = stats.snapshot();
        assert_eq!((sent, failed), (0, 1024));
        assert_eq!(exporter.requests.load(Ordering::SeqCst), 1 + ISOLATION_SENDS);
        assert_eq!(stats.drops()[1], 1024, "counted as permanent_error");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_sent_or_given_up_on_is_counted() {
        let (svc, stats) = settle(Picky::default());
        svc.oneshot(taken(5, &[])).await.expect("settled");
        assert_eq!(stats.snapshot()[0], 5);

        let stats = Arc::new(DeliveryStats::default());
        let queue = Arc::new(Queue::Memory(MemoryQueue::new(&QueueSettings::default())));
        let gave_up = tower::service_fn(|_b: Batch| async { Err::<(), _>(Failure::GaveUp) });
        let layer = SettleLayer::new("test", queue, stats.clone(), Duration::from_secs(30), CancellationToken::new());
        layer.layer(gave_up).oneshot(taken(3, &[])).await.expect("settled");
        let [sent, failed, ..] = stats.snapshot();
        assert_eq!((sent, failed, stats.drops()[2]), (0, 3, 3), "memory queue: lost as retries_exhausted");
    }
}
