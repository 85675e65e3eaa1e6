//! One pipeline's task: take batches from the bounded channel, run the processors in
//! order, hand the result to every exporter's queue. It owns its processors, so they
//! need no locks; held-back items are released on the processors' own deadlines.

use std::time::Instant;

use gencol_model::SpanItem;
use tokio::sync::mpsc;

use crate::component::Processor;
use crate::consumer::{AckToken, PipelineMessage};
use crate::delivery::{ExporterHandle, Queue, encoded_bytes};
use crate::routing::Router;

/// At most this many waiting batches are processed as one group, whose receivers share
/// one fsync of each file the group wrote. A group forms only when batches wait (the
/// pipeline is busy), so an idle pipeline adds no delay; the bound keeps the first
/// batch's wait for its sync short.
const GROUP: usize = 16;

/// `exclusive`: no other pipeline feeds this one's exporters.
pub(crate) async fn run_pipeline(
    mut input: mpsc::Receiver<PipelineMessage>,
    mut processors: Vec<Box<dyn Processor>>,
    exporters: Vec<ExporterHandle>,
    exclusive: bool,
) {
    let hold = processors.iter().filter_map(|p| p.releases_after()).max();
    let mut router = Router::new(exporters.iter().map(|e| e.route.clone()).collect(), hold);
    let mut out = Outlet { exporters: &exporters, router: &mut router };
    // Processors that keep state on disk (`hierarchy`) learn when what they released is
    // fsynced in the disk queues, so they can forget it durably.
    let (durable_tx, mut durable_rx) = mpsc::unbounded_channel::<u64>();
    let mut epoch = 0u64;
    if exclusive {
        let released = read_back(&mut processors, &exporters);
        out.fan_out(released, None).await;
        epoch += 1;
        if let Some(wait) = seal(&mut processors, &exporters, epoch) {
            notify_when_durable(wait, durable_tx.clone(), epoch);
        }
    }
    // Until here the disk queues kept what they delivered (see `read_back`).
    for e in &exporters {
        if let Queue::Disk(queue) = &*e.queue {
            queue.read_back_done();
        }
    }
    let mut messages = Vec::with_capacity(GROUP);
    loop {
        let deadline = processors.iter().filter_map(|p| p.next_deadline()).min();
        tokio::select! {
            n = input.recv_many(&mut messages, GROUP) => {
                if n == 0 {
                    break;
                }
                let mut acks = Vec::new();
                for PipelineMessage { mut items, ack, budget, give_up } in messages.drain(..) {
                    if !give_up.is_empty() {
                        processors.iter_mut().for_each(|p| p.give_up(&give_up));
                    }
                    if let Some(ack) = &ack
                        && let Some(reason) = refused_by_a_disk_queue(&exporters, &items)
                    {
                        // Before the processors: a batch the receiver answers 503 for must
                        // leave no trace (no `hierarchy` state) that its retry would repeat.
                        ack.fail(&reason);
                        continue;
                    }
                    run_from(&mut processors, 0, &mut items, Instant::now(), &exporters);
                    out.fan_out(items, ack.as_ref()).await;
                    drop(budget);
                    acks.extend(ack);
                }
                // The group's acks wait for one sync of each file it wrote (group commit).
                if !acks.is_empty() {
                    processors.iter_mut().for_each(|p| p.hold_until_durable(&acks));
                    exporters.iter().for_each(|e| e.queue.hold_acks(&acks));
                }
                drop(acks);
                epoch += 1;
                if let Some(wait) = seal(&mut processors, &exporters, epoch) {
                    notify_when_durable(wait, durable_tx.clone(), epoch);
                }
            }
            Some(done) = durable_rx.recv() => {
                processors.iter_mut().for_each(|p| p.durable(done));
            }
            _ = tokio::time::sleep_until(deadline.map(tokio::time::Instant::from_std).unwrap_or_else(far_future)), if deadline.is_some() => {
                let released = flush(&mut processors, Instant::now(), false, &exporters);
                out.fan_out(released, None).await;
                epoch += 1;
                if let Some(wait) = seal(&mut processors, &exporters, epoch) {
                    notify_when_durable(wait, durable_tx.clone(), epoch);
                }
            }
        }
    }
    // Input closed (receivers stopped): release everything still held (what a processor
    // keeps on disk stays there for the next start), and wait for it to be durable.
    let released = flush(&mut processors, Instant::now(), true, &exporters);
    out.fan_out(released, None).await;
    epoch += 1;
    if let Some(wait) = seal(&mut processors, &exporters, epoch)
        && wait.await
    {
        processors.iter_mut().for_each(|p| p.durable(epoch));
    }
}

/// Gives the processors that keep state on disk what the disk queues still hold from
/// when they ask ([`Processor::read_back_from`]); returns what they release. The queues
/// forget nothing they delivered before this is done, so a record a processor's state
/// lost to a power loss is still there.
fn read_back(processors: &mut [Box<dyn Processor>], exporters: &[ExporterHandle]) -> Vec<SpanItem> {
    let ride = exporters.iter().all(ExporterHandle::keeps_all_before_ack);
    let mut released = Vec::new();
    for i in 0..processors.len() {
        // A processor after it that drops spans would keep some of what it saw off disk.
        if processors[i + 1..].iter().any(|p| p.drops_as().is_some()) {
            continue;
        }
        let Some(since_ms) = processors[i].read_back_from(ride) else { continue };
        let mut out = Vec::new();
        for e in exporters {
            if let Queue::Disk(queue) = &*e.queue {
                queue.read_back(since_ms, |items, time_ms| processors[i].replay(items, time_ms, &mut out));
            }
        }
        processors[i].replayed();
        run_from(processors, i + 1, &mut out, Instant::now(), exporters);
        released.append(&mut out);
    }
    released
}

fn notify_when_durable(
    wait: impl std::future::Future<Output = bool> + Send + 'static,
    tx: mpsc::UnboundedSender<u64>,
    epoch: u64,
) {
    tokio::spawn(async move {
        if wait.await {
            let _ = tx.send(epoch);
        }
    });
}

/// Tells processors that their releases so far went out with `epoch`; when one wants to
/// know, returns what completes (true) once every disk queue has fsynced them.
fn seal(
    processors: &mut [Box<dyn Processor>],
    exporters: &[ExporterHandle],
    epoch: u64,
) -> Option<impl std::future::Future<Output = bool> + Send + 'static> {
    let mut wanted = false;
    for p in processors.iter_mut() {
        wanted |= p.seal(epoch);
    }
    if !wanted {
        return None;
    }
    let (token, wait) = AckToken::new();
    exporters.iter().for_each(|e| e.queue.hold_until_synced(&token));
    drop(token);
    Some(async move { wait.wait(std::time::Duration::from_secs(3600)).await.is_ok() })
}

/// Why one of the pipeline's disk queues (with `when_full: block`) cannot take this batch.
/// Processors change a batch's size little (`namespace` adds a few attributes); a
/// quarter more is allowed for that.
fn refused_by_a_disk_queue(exporters: &[ExporterHandle], items: &[SpanItem]) -> Option<String> {
    let bytes = encoded_bytes(items);
    let bytes = bytes + bytes / 4;
    exporters.iter().find_map(|e| e.queue.refuses(bytes).map(|r| format!("exporter `{}`: {r}", e.id)))
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400)
}

/// Runs `items` through the processors from `start` on; what a `sample` or `filter`
/// processor removes is counted on every exporter of the pipeline.
fn run_from(
    processors: &mut [Box<dyn Processor>],
    start: usize,
    items: &mut Vec<SpanItem>,
    now: Instant,
    exporters: &[ExporterHandle],
) {
    for p in &mut processors[start..] {
        if items.is_empty() {
            return;
        }
        let before = items.len();
        p.process(items, now);
        if let Some(verdict) = p.drops_as()
            && items.len() < before
        {
            let n = (before - items.len()) as u64;
            exporters.iter().for_each(|e| e.dropped_by_processor(verdict, n));
        }
    }
}

/// Items a processor releases continue through the processors after it.
fn flush(
    processors: &mut [Box<dyn Processor>],
    now: Instant,
    force: bool,
    exporters: &[ExporterHandle],
) -> Vec<SpanItem> {
    let mut all = Vec::new();
    for i in 0..processors.len() {
        let mut out = Vec::new();
        processors[i].flush(now, force, &mut out);
        if !out.is_empty() {
            run_from(processors, i + 1, &mut out, now, exporters);
            all.append(&mut out);
        }
    }
    all
}

/// Where the pipeline's spans leave it: each exporter gets what its routing keeps.
struct Outlet<'a> {
    exporters: &'a [ExporterHandle],
    router: &'a mut Router,
}

impl Outlet<'_> {
    async fn fan_out(&mut self, items: Vec<SpanItem>, ack: Option<&AckToken>) {
        if items.is_empty() {
            return;
        }
        let Some((last, rest)) = self.exporters.split_last() else { return };
        if !self.router.is_active() {
            for e in rest {
                e.deliver(items.clone(), ack).await;
            }
            last.deliver(items, ack).await;
            return;
        }
        let routed = self.router.route(&items, Instant::now());
        for (i, e) in self.exporters.iter().enumerate() {
            e.routed_away(routed.away[i]);
        }
        let takes_all = |i: usize| routed.masks.iter().all(|m| m & (1 << i) != 0);
        let mine = |i: usize| -> Vec<SpanItem> {
            items.iter().zip(&routed.masks).filter(|(_, m)| *m & (1 << i) != 0).map(|(s, _)| s.clone()).collect()
        };
        for (i, e) in rest.iter().enumerate() {
            let batch = if takes_all(i) { items.clone() } else { mine(i) };
            if !batch.is_empty() {
                e.deliver(batch, ack).await;
            }
        }
        let i = rest.len();
        let batch = if takes_all(i) {
            items
        } else {
            items.into_iter().zip(&routed.masks).filter(|(_, m)| *m & (1 << i) != 0).map(|(s, _)| s).collect()
        };
        if !batch.is_empty() {
            last.deliver(batch, ack).await;
        }
    }
}
