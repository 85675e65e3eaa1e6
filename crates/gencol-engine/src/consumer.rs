//! The handle a receiver hands its data to: every pipeline the receiver feeds, all or
//! nothing, so a 503 means nothing of that request was kept.

use std::sync::Arc;

use gencol_model::SpanItem;
use tokio::sync::{mpsc, oneshot};

/// One batch on its way into a pipeline.
pub struct PipelineMessage {
    pub items: Vec<SpanItem>,
    /// Released once every exporter of the pipeline holds the batch in its queue; a
    /// receiver that waits on it answers only when the data is safe (with a disk
    /// queue: on disk).
    pub ack: Option<AckToken>,
}

/// Shared by the copies of one batch; when the last copy is released, the waiter learns it.
#[derive(Clone)]
pub struct AckToken(#[allow(dead_code)] Arc<AckInner>);

struct AckInner(std::sync::Mutex<Option<oneshot::Sender<()>>>);

impl Drop for AckInner {
    fn drop(&mut self) {
        if let Some(tx) = self.0.lock().ok().and_then(|mut g| g.take()) {
            let _ = tx.send(());
        }
    }
}

impl AckToken {
    /// A token and the receiver that completes when every clone of it is dropped.
    pub fn new() -> (AckToken, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (AckToken(Arc::new(AckInner(std::sync::Mutex::new(Some(tx))))), rx)
    }
}

/// Every pipeline fed by one receiver was full: the receiver answers 503.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("pipeline `{pipeline}` is full")]
pub struct Backpressure {
    pub pipeline: String,
}

/// A receiver's way into its pipelines. Cheap to clone.
#[derive(Clone)]
pub struct Consumer {
    pipelines: Arc<[(String, mpsc::Sender<PipelineMessage>)]>,
}

impl Consumer {
    pub fn new(pipelines: Vec<(String, mpsc::Sender<PipelineMessage>)>) -> Self {
        Consumer { pipelines: pipelines.into() }
    }

    /// Hands `items` to every pipeline, or to none: capacity is reserved in all of
    /// them before anything is sent.
    pub fn try_consume(&self, items: Vec<SpanItem>, ack: Option<AckToken>) -> Result<(), Backpressure> {
        let mut permits = Vec::with_capacity(self.pipelines.len());
        for (name, tx) in self.pipelines.iter() {
            match tx.try_reserve() {
                Ok(p) => permits.push(p),
                Err(_) => return Err(Backpressure { pipeline: name.clone() }),
            }
        }
        let last = permits.len().saturating_sub(1);
        let mut items = Some(items);
        for (i, permit) in permits.into_iter().enumerate() {
            let batch = if i == last { items.take().unwrap_or_default() } else { items.clone().unwrap_or_default() };
            permit.send(PipelineMessage { items: batch, ack: ack.clone() });
        }
        Ok(())
    }
}
