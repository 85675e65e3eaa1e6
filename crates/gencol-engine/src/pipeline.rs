//! One pipeline's task: take batches from the bounded channel, run the processors in
//! order, hand the result to every exporter's queue. It owns its processors, so they
//! need no locks; held-back items are released on the processors' own deadlines.

use std::time::Instant;

use gencol_model::SpanItem;
use tokio::sync::mpsc;

use crate::component::Processor;
use crate::consumer::PipelineMessage;
use crate::delivery::ExporterHandle;

pub(crate) async fn run_pipeline(
    mut input: mpsc::Receiver<PipelineMessage>,
    mut processors: Vec<Box<dyn Processor>>,
    exporters: Vec<ExporterHandle>,
) {
    loop {
        let deadline = processors.iter().filter_map(|p| p.next_deadline()).min();
        tokio::select! {
            message = input.recv() => {
                let Some(PipelineMessage { mut items, ack, budget }) = message else { break };
                run_from(&mut processors, 0, &mut items, Instant::now());
                fan_out(&exporters, items).await;
                drop((ack, budget));
            }
            _ = tokio::time::sleep_until(deadline.map(tokio::time::Instant::from_std).unwrap_or_else(far_future)), if deadline.is_some() => {
                let released = flush(&mut processors, Instant::now(), false);
                fan_out(&exporters, released).await;
            }
        }
    }
    // Input closed (receivers stopped): release everything still held.
    let released = flush(&mut processors, Instant::now(), true);
    fan_out(&exporters, released).await;
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400)
}

fn run_from(processors: &mut [Box<dyn Processor>], start: usize, items: &mut Vec<SpanItem>, now: Instant) {
    for p in &mut processors[start..] {
        if items.is_empty() {
            return;
        }
        p.process(items, now);
    }
}

/// Items a processor releases continue through the processors after it.
fn flush(processors: &mut [Box<dyn Processor>], now: Instant, force: bool) -> Vec<SpanItem> {
    let mut all = Vec::new();
    for i in 0..processors.len() {
        let mut out = Vec::new();
        processors[i].flush(now, force, &mut out);
        if !out.is_empty() {
            run_from(processors, i + 1, &mut out, now);
            all.append(&mut out);
        }
    }
    all
}

async fn fan_out(exporters: &[ExporterHandle], items: Vec<SpanItem>) {
    if items.is_empty() {
        return;
    }
    let Some((last, rest)) = exporters.split_last() else { return };
    for e in rest {
        e.deliver(items.clone()).await;
    }
    last.deliver(items).await;
}
