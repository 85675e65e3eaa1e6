//! The handle a receiver hands its data to: every pipeline the receiver feeds, all or
//! nothing, so a 503 means nothing of that request was kept.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use gencol_model::SpanItem;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::telemetry::ReceiverStats;

/// Received bytes (request bodies, uncompressed) a pipeline holds before its exporters'
/// queues have taken them; beyond it its receivers answer 503. Spans take a few times
/// their body's size in memory, so this bounds a pipeline to tens of MiB under overload
/// whatever the batch size, and still holds well over a second of a busy gateway's traffic.
pub const PIPELINE_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// One batch on its way into a pipeline.
pub struct PipelineMessage {
    pub items: Vec<SpanItem>,
    /// Released once every exporter of the pipeline holds the batch in its queue; a
    /// receiver that waits on it answers only when the data is safe (with a disk
    /// queue: on disk).
    pub ack: Option<AckToken>,
    /// This batch's share of the pipeline's budget, given back when it is dropped.
    pub budget: Option<OwnedSemaphorePermit>,
    /// Traces whose held state the processors drop ([`crate::Processor::give_up`]),
    /// before the batch's items are processed.
    pub give_up: Vec<Vec<u8>>,
}

/// Shared by the copies of one batch (one per pipeline, one per disk queue waiting for
/// its fsync); when the last copy is released, the waiting receiver learns the outcome:
/// kept, or failed with the first reason given (the receiver then answers 503).
#[derive(Clone)]
pub struct AckToken(Arc<AckInner>);

struct AckInner(std::sync::Mutex<AckState>);

struct AckState {
    waiter: Option<oneshot::Sender<Result<(), String>>>,
    failure: Option<String>,
}

impl Drop for AckInner {
    fn drop(&mut self) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = state.waiter.take() {
            let _ = tx.send(state.failure.take().map_or(Ok(()), Err));
        }
    }
}

impl AckToken {
    /// A token and the wait that completes when every clone of it is dropped.
    pub fn new() -> (AckToken, AckWait) {
        let (tx, rx) = oneshot::channel();
        let state = AckState { waiter: Some(tx), failure: None };
        (AckToken(Arc::new(AckInner(std::sync::Mutex::new(state)))), AckWait(rx))
    }

    /// The batch could not be kept everywhere it was meant to go; the first reason wins.
    pub fn fail(&self, reason: &str) {
        let mut state = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if state.failure.is_none() {
            state.failure = Some(reason.to_owned());
        }
    }
}

/// A receiver's wait for its batch to be kept (with a disk queue: fsynced).
pub struct AckWait(oneshot::Receiver<Result<(), String>>);

impl AckWait {
    /// `Ok` once every pipeline's queues hold the batch; `Err` with the reason when one
    /// could not keep it, or when that took longer than `patience` (then the sender
    /// retries, and whatever was kept is delivered twice, with the same span ids).
    pub async fn wait(self, patience: Duration) -> Result<(), String> {
        match tokio::time::timeout(patience, self.0).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("the pipeline stopped before the batch was kept".to_owned()),
            Err(_) => Err(format!("the batch was not on disk within {patience:?}")),
        }
    }
}

/// Every pipeline fed by one receiver was full: the receiver answers 503.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("pipeline `{pipeline}` is full")]
pub struct Backpressure {
    pub pipeline: String,
}

/// The way into one pipeline: its channel and its budget of bytes in flight, shared by
/// every receiver that feeds it.
#[derive(Clone)]
pub struct PipelineInput {
    name: String,
    tx: mpsc::Sender<PipelineMessage>,
    budget: Arc<Semaphore>,
    /// Some exporter of the pipeline has a disk queue: receivers wait for the fsync.
    durable: bool,
    /// The longest a processor of the pipeline holds a span back (`hierarchy`'s window).
    hold: Option<Duration>,
}

impl PipelineInput {
    pub fn new(name: impl Into<String>, tx: mpsc::Sender<PipelineMessage>) -> Self {
        PipelineInput {
            name: name.into(),
            tx,
            budget: Arc::new(Semaphore::new(PIPELINE_BUDGET_BYTES)),
            durable: false,
            hold: None,
        }
    }

    /// The longest a processor of this pipeline holds spans back after the last of a
    /// group arrived ([`crate::ProcessorConfig::releases_after`]).
    pub fn holding(mut self, hold: Option<Duration>) -> Self {
        self.hold = hold;
        self
    }

    /// Receivers feeding this pipeline answer only once its disk queues hold their batch.
    /// Whether receivers wait for the batch to be kept (see [`PipelineInput::durable`]).
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }
}

/// A receiver's way into its pipelines. Cheap to clone; every clone follows a
/// [`Consumer::retarget`], so a reload can point a running receiver at new pipelines
/// without touching its socket.
#[derive(Clone)]
pub struct Consumer {
    pipelines: Arc<ArcSwap<Vec<PipelineInput>>>,
    stats: Arc<ReceiverStats>,
}

impl Consumer {
    pub fn new(pipelines: Vec<PipelineInput>) -> Self {
        Consumer { pipelines: Arc::new(ArcSwap::from_pointee(pipelines)), stats: Arc::default() }
    }

    /// Sends what comes next into `pipelines`. Requests that reserved room before keep
    /// it in the pipelines they reserved in; a pipeline no receiver feeds any more ends
    /// once those are in.
    pub fn retarget(&self, pipelines: Vec<PipelineInput>) {
        self.pipelines.store(Arc::new(pipelines));
    }

    /// Counts into `stats` (shown as this receiver's metrics).
    pub fn with_stats(mut self, stats: Arc<ReceiverStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The longest a processor of these pipelines holds spans back after the last of a
    /// group arrived: a receiver that acknowledges its source only once everything made
    /// from a message is out (`nats`) waits this long after a trace's last record.
    pub fn hold(&self) -> Option<Duration> {
        self.pipelines.load().iter().filter_map(|p| p.hold).max()
    }

    /// Tells every pipeline's processors to drop what they hold of `trace_ids` without
    /// releasing it ([`crate::Processor::give_up`]): their records are another gencol's
    /// now. Waits for room in each pipeline.
    pub async fn give_up(&self, trace_ids: Vec<Vec<u8>>) {
        if trace_ids.is_empty() {
            return;
        }
        for p in self.pipelines.load().iter() {
            let message = PipelineMessage { items: Vec::new(), ack: None, budget: None, give_up: trace_ids.clone() };
            if p.tx.send(message).await.is_err() {
                tracing::debug!(pipeline = %p.name, "pipeline stopped; nothing to give up");
            }
        }
    }

    /// Where the receiver counts what it accepted and refused, where it decides the answer.
    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// Reserves room for one batch in every pipeline, or in none: a channel slot and
    /// `bytes` of each pipeline's budget, `bytes` being the size of what the batch is
    /// decoded from (the uncompressed request body). Receivers reserve before decoding,
    /// so an overloaded gencol answers 503 without spending the work first.
    pub fn try_reserve(&self, bytes: usize) -> Result<Reservation, Backpressure> {
        let weight = weight(bytes);
        let pipelines = self.pipelines.load();
        if pipelines.is_empty() {
            return Err(Backpressure { pipeline: "(none: gencol is stopping)".to_owned() });
        }
        let mut reserved = Vec::with_capacity(pipelines.len());
        for p in pipelines.iter() {
            let full = || Backpressure { pipeline: p.name.clone() };
            let budget = p.budget.clone().try_acquire_many_owned(weight).map_err(|_| full())?;
            let slot = p.tx.clone().try_reserve_owned().map_err(|_| full())?;
            reserved.push((slot, budget));
        }
        let durable = pipelines.iter().any(|p| p.durable);
        Ok(Reservation { reserved, durable })
    }

    /// [`Consumer::try_reserve`], waiting up to `patience` for room when a pipeline is
    /// full. A short wait absorbs a burst, and under sustained overload it keeps clients
    /// from retrying in a tight loop, each retry costing a body read for nothing.
    pub async fn reserve(&self, bytes: usize, patience: Duration) -> Result<Reservation, Backpressure> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let full = match self.try_reserve(bytes) {
                Ok(r) => return Ok(r),
                Err(full) => full,
            };
            let pipelines = self.pipelines.load_full();
            let Some(p) = pipelines.iter().find(|p| p.name == full.pipeline) else { return Err(full) };
            // Waits in line for the full pipeline's room, hands it back, and tries all
            // pipelines again (all or nothing, so nothing is held while waiting on another).
            let room = async {
                drop(p.budget.acquire_many(weight(bytes)).await);
                drop(p.tx.reserve().await);
            };
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(full);
            }
        }
    }
}

/// A body's share of a pipeline's budget. One larger than the whole budget waits for an
/// empty pipeline instead of never fitting.
fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes.clamp(1, PIPELINE_BUDGET_BYTES)).unwrap_or(u32::MAX)
}

/// Room for one batch in every pipeline of a receiver; dropping it gives the room back.
pub struct Reservation {
    reserved: Vec<(mpsc::OwnedPermit<PipelineMessage>, OwnedSemaphorePermit)>,
    durable: bool,
}

impl Reservation {
    /// Hands `items` to every pipeline reserved for. When one of them has a disk queue,
    /// the returned wait tells when the batch is on disk (SPEC §7: a 202 means fsynced);
    /// otherwise the batch is kept (in memory) as soon as this returns.
    pub fn send(self, items: Vec<SpanItem>) -> Option<AckWait> {
        let (ack, wait) = if self.durable {
            let (token, wait) = AckToken::new();
            (Some(token), Some(wait))
        } else {
            (None, None)
        };
        let last = self.reserved.len().saturating_sub(1);
        let mut items = Some(items);
        for (i, (slot, budget)) in self.reserved.into_iter().enumerate() {
            let batch = if i == last { items.take().unwrap_or_default() } else { items.clone().unwrap_or_default() };
            slot.send(PipelineMessage { items: batch, ack: ack.clone(), budget: Some(budget), give_up: Vec::new() });
        }
        wait
    }
}

impl Reservation {
    /// [`Reservation::send`], with a wait that completes once every exporter of every
    /// pipeline holds the batch in its queue (memory or disk) even when no receiver needs
    /// it for its answer: for a receiver that acknowledges its source (`nats`) only then.
    pub fn send_confirmed(mut self, items: Vec<SpanItem>) -> AckWait {
        self.durable = true;
        self.send(items).unwrap_or_else(|| AckToken::new().1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Consumer {
        fn try_consume(&self, items: Vec<SpanItem>, bytes: usize) -> Result<(), Backpressure> {
            self.try_reserve(bytes).map(|r| drop(r.send(items)))
        }
    }

    #[test]
    fn a_pipeline_holds_a_bounded_number_of_bytes_not_of_batches() {
        let (tx, mut rx) = mpsc::channel(1024);
        let consumer = Consumer::new(vec![PipelineInput::new("traces", tx)]);
        let half = PIPELINE_BUDGET_BYTES / 2;
        assert!(consumer.try_consume(Vec::new(), half).is_ok());
        assert!(consumer.try_consume(Vec::new(), half).is_ok());
        // The channel has room for 1,022 more batches; the byte budget has none.
        assert_eq!(consumer.try_consume(Vec::new(), 1), Err(Backpressure { pipeline: "traces".into() }));
        // Once the pipeline is done with a batch, its bytes are free again.
        drop(rx.try_recv().expect("a batch"));
        assert!(consumer.try_consume(Vec::new(), half).is_ok());
        // A body larger than the whole budget fits into an empty pipeline, and only then.
        assert!(consumer.try_consume(Vec::new(), 3 * PIPELINE_BUDGET_BYTES).is_err());
        while rx.try_recv().is_ok() {}
        assert!(consumer.try_consume(Vec::new(), 3 * PIPELINE_BUDGET_BYTES).is_ok());
    }

    #[tokio::test]
    async fn a_request_waits_a_little_for_room_then_gets_it_or_is_refused() {
        let (tx, mut rx) = mpsc::channel(8);
        let consumer = Consumer::new(vec![PipelineInput::new("traces", tx)]);
        assert!(consumer.try_consume(Vec::new(), PIPELINE_BUDGET_BYTES).is_ok());
        // Nobody frees room: refused once patience runs out.
        let refused = consumer.reserve(1, Duration::from_millis(50)).await;
        assert_eq!(refused.err(), Some(Backpressure { pipeline: "traces".into() }));
        // The pipeline takes its batch 30 ms in: the waiting request gets in.
        let taker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(rx.recv().await);
            rx
        });
        assert!(consumer.reserve(1, Duration::from_secs(5)).await.is_ok());
        drop(taker.await);
    }

    #[test]
    fn all_or_nothing_across_pipelines() {
        let (a_tx, mut a_rx) = mpsc::channel(8);
        let (b_tx, _b_rx) = mpsc::channel(8);
        let b = PipelineInput::new("b", b_tx);
        // Another receiver fills pipeline `b`'s budget.
        let other = Consumer::new(vec![b.clone()]);
        assert!(other.try_consume(Vec::new(), PIPELINE_BUDGET_BYTES).is_ok());
        let consumer = Consumer::new(vec![PipelineInput::new("a", a_tx), b]);
        assert_eq!(consumer.try_consume(Vec::new(), 10), Err(Backpressure { pipeline: "b".into() }));
        assert!(a_rx.try_recv().is_err(), "nothing reached `a` either");
    }
}
