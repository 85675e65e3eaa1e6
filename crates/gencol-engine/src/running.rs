//! A started service, and how a new config is swapped into it (SPEC §12, reload).
//!
//! Starting is a reload from nothing. A reload keeps what did not change and never lets
//! go of accepted data:
//! - an unchanged receiver keeps its socket and its connections; it is pointed at the
//!   new pipelines ([`Consumer::retarget`]);
//! - an unchanged exporter keeps its queue and its sender; a changed one whose queue
//!   settings are the same keeps its queue, and a sender built from the new settings
//!   takes it over (the old one finishes the sends it has in flight);
//! - a pipeline whose processors and exporters are unchanged keeps running; one that
//!   changed is built anew, and the old one ends once its receivers have let go of it,
//!   after handing on everything it holds;
//! - an exporter that went away (or got a queue with other settings) delivers what its
//!   queue holds before it stops (a disk queue keeps the rest on disk).
//!
//! Everything that can fail (building exporters, opening queues, building processors,
//! binding new ports) happens before anything running is touched: a reload that fails
//! leaves the old config running as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use gencol_config::{ComponentId, Node};
use gencol_model::budget::MemoryBudget;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{Exporter, Processor, ProcessorConfig, ProcessorContext};
use crate::consumer::{Consumer, PipelineInput, PipelineMessage};
use crate::delivery::{
    DeliverySettings, DeliveryStats, DiskQueue, ExporterHandle, MemoryQueue, Queue, QueueKind, run_exporter,
};
use crate::pipeline::run_pipeline;
use crate::service::{PipelinePlan, ValidatedService};
use crate::telemetry::Telemetry;

/// Batches a pipeline's channel holds before its receivers answer 503; what they hold
/// is bounded in bytes by [`crate::consumer::PIPELINE_BUDGET_BYTES`].
const PIPELINE_CAPACITY: usize = 1024;

/// How long a receiver restarted on the same address waits for its old self to let go
/// of the port.
const REBIND_PATIENCE: Duration = Duration::from_secs(2);

/// Completes when a task has ended; can be awaited from several places.
type Done = Shared<BoxFuture<'static, ()>>;

fn done_when(task: JoinHandle<()>) -> Done {
    async move {
        let _ = task.await;
    }
    .boxed()
    .shared()
}

struct RunningReceiver {
    config: Node,
    listen: Vec<String>,
    consumer: Consumer,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct RunningPipeline {
    processors: Vec<(ComponentId, Node)>,
    exporters: Vec<ComponentId>,
    durable: bool,
    /// No other pipeline feeds its exporters (its processors may read their queues back).
    exclusive: bool,
    data_dir: PathBuf,
    input: PipelineInput,
    done: Done,
}

struct RunningExporter {
    config: Node,
    delivery: DeliverySettings,
    /// The disk queue's directory.
    dir: Option<PathBuf>,
    handle: ExporterHandle,
    handover: CancellationToken,
    task: ExporterTask,
}

struct ExporterTask {
    id: String,
    task: JoinHandle<()>,
    queue: Arc<Queue>,
    stats: Arc<DeliveryStats>,
    /// Its queue went on to the exporter built by a reload (which reports it).
    handed_over: bool,
}

/// What a reload does with one exporter.
enum ExporterChange {
    Keep,
    /// Same queue, new sender.
    Handover {
        exporter: Arc<dyn Exporter>,
        handle: ExporterHandle,
    },
    /// New queue (the old one, if any, delivers what it holds and stops).
    New {
        exporter: Arc<dyn Exporter>,
        handle: ExporterHandle,
        dir: Option<PathBuf>,
    },
}

impl ExporterChange {
    /// Whether pipelines feeding this exporter can keep running as they are.
    fn keeps_pipelines(&self, old: Option<&RunningExporter>) -> bool {
        match self {
            ExporterChange::Keep => true,
            ExporterChange::Handover { handle, .. } => {
                old.is_some_and(|o| o.handle.same_handling(handle.privacy_mode, handle.route.as_ref()))
            }
            ExporterChange::New { .. } => false,
        }
    }

    fn handle<'a>(&'a self, old: Option<&'a RunningExporter>) -> &'a ExporterHandle {
        match (self, old) {
            (ExporterChange::Handover { handle, .. } | ExporterChange::New { handle, .. }, _) => handle,
            (ExporterChange::Keep, Some(old)) => &old.handle,
            (ExporterChange::Keep, None) => unreachable!("only a running exporter is kept"),
        }
    }
}

/// How a pipeline of the new config comes about.
enum PipelineChange {
    Keep,
    Build { input: PipelineInput, rx: mpsc::Receiver<PipelineMessage>, processors: ProcessorsFor },
}

/// A new pipeline's processors: built already, or built once the pipeline it replaces
/// has let go of their state on disk.
enum ProcessorsFor {
    Built(Vec<Box<dyn Processor>>),
    AfterOld(Vec<(Arc<dyn ProcessorConfig>, ProcessorContext)>),
}

/// What a reload does with one receiver.
enum ReceiverChange {
    Keep,
    /// Started already (new, or moved to another address), fed once the swap is made.
    Started(RunningReceiver),
    /// Changed on the same address: restarted after the old one let go of the port.
    Restart,
}

/// A started service. Stop it with [`RunningService::shutdown`]; give it a new config
/// with [`RunningService::reload`].
pub struct RunningService {
    receivers: BTreeMap<ComponentId, RunningReceiver>,
    pipelines: BTreeMap<String, RunningPipeline>,
    exporters: BTreeMap<ComponentId, RunningExporter>,
    /// Receivers, pipelines and exporters a reload replaced, finishing their work.
    retiring_receivers: Vec<JoinHandle<()>>,
    retiring_pipelines: Vec<Done>,
    retiring_exporters: Vec<(Option<PathBuf>, ExporterTask)>,
    receiver_stop: CancellationToken,
    delivery_stop: CancellationToken,
    telemetry: Telemetry,
    memory: MemoryBudget,
    max_inflight_memory: u64,
    shutdown_timeout: Duration,
}

impl RunningService {
    pub(crate) fn empty(telemetry: Telemetry, memory: MemoryBudget, max_inflight_memory: u64) -> Self {
        RunningService {
            receivers: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            exporters: BTreeMap::new(),
            retiring_receivers: Vec::new(),
            retiring_pipelines: Vec::new(),
            retiring_exporters: Vec::new(),
            receiver_stop: CancellationToken::new(),
            delivery_stop: CancellationToken::new(),
            telemetry,
            memory,
            max_inflight_memory,
            shutdown_timeout: Duration::from_secs(1),
        }
    }

    /// Swaps `new` in (see the module's comment). `Err` means nothing changed and the
    /// running config goes on as it was, except for a receiver that had to be restarted
    /// on its own address and could not be (said in the error; the rest did change).
    pub async fn reload(&mut self, new: ValidatedService) -> Result<(), String> {
        if new.max_inflight_memory != self.max_inflight_memory {
            tracing::warn!(
                "service.limits.max_inflight_memory changed: the new value applies at the next restart (a reload keeps {} bytes)",
                self.max_inflight_memory
            );
        }
        self.apply(new).await
    }

    pub(crate) async fn apply(&mut self, new: ValidatedService) -> Result<(), String> {
        let used: BTreeSet<ComponentId> = new.pipelines.iter().flat_map(|p| p.exporters.iter().cloned()).collect();

        // 1. Exporters: build what is new or changed; open new queues.
        let mut changes: BTreeMap<ComponentId, ExporterChange> = BTreeMap::new();
        let fail = |changes: &BTreeMap<ComponentId, ExporterChange>, e: String| {
            close_new_queues(changes);
            Err(e)
        };
        for id in &used {
            let plan = &new.exporters[id];
            let written = new.written("exporter", id);
            let dir = (plan.delivery.queue.kind == QueueKind::Disk)
                .then(|| plan.delivery.queue.disk_dir(&new.data_dir, &id.to_string()));
            let old = self.exporters.get(id);
            if let Some(old) = old
                && old.config.same_value(written)
                && old.dir == dir
            {
                changes.insert(id.clone(), ExporterChange::Keep);
                continue;
            }
            let exporter = match plan.config.build(id) {
                Ok(e) => e,
                Err(e) => return fail(&changes, format!("exporter `{id}`: {e}")),
            };
            let (privacy, route) = (plan.delivery.privacy_mode, plan.route.clone());
            if let Some(old) = old
                && old.delivery.queue.same_storage(&plan.delivery.queue)
                && old.dir == dir
            {
                let handle = if old.handle.same_handling(privacy, route.as_ref()) {
                    old.handle.clone()
                } else {
                    let (queue, stats) = (old.task.queue.clone(), old.task.stats.clone());
                    ExporterHandle::new(id.to_string(), queue, privacy, route, stats)
                        .confirming(plan.config.confirms_delivery())
                };
                changes.insert(id.clone(), ExporterChange::Handover { exporter, handle });
                continue;
            }
            let queue = match &dir {
                None => Queue::Memory(MemoryQueue::new(&plan.delivery.queue)),
                Some(dir) => {
                    if let Some(holder) = self.disk_queue_holder(dir) {
                        return fail(
                            &changes,
                            format!(
                                "exporter `{id}`: its disk queue {} is open in exporter `{holder}` with other settings; a disk queue's settings change with a restart, not a reload",
                                dir.display()
                            ),
                        );
                    }
                    match DiskQueue::open(&id.to_string(), dir, &plan.delivery.queue) {
                        Ok(q) => Queue::Disk(Box::new(q)),
                        Err(e) => return fail(&changes, format!("exporter `{id}`: {e}")),
                    }
                }
            };
            // Counters go on across reloads: the same id keeps its statistics.
            let stats = old.map(|o| o.task.stats.clone()).unwrap_or_default();
            let handle = ExporterHandle::new(id.to_string(), Arc::new(queue), privacy, route, stats)
                .confirming(plan.config.confirms_delivery());
            changes.insert(id.clone(), ExporterChange::New { exporter, handle, dir });
        }

        // 2. Pipelines: keep the unchanged ones, build the others.
        let mut pipeline_changes = Vec::with_capacity(new.pipelines.len());
        for p in &new.pipelines {
            let handles: Vec<ExporterHandle> =
                p.exporters.iter().map(|id| changes[id].handle(self.exporters.get(id)).clone()).collect();
            let durable = handles.iter().any(ExporterHandle::is_durable);
            let exclusive = feeds_alone(&new, p);
            // Receivers wait for the disk queues' fsync, or for destinations that confirm.
            let holds_receivers = handles.iter().any(ExporterHandle::holds_receivers);
            let processors: Vec<(ComponentId, Node)> =
                p.processors.iter().map(|id| (id.clone(), new.written("processor", id).clone())).collect();
            let old = self.pipelines.get(&p.name);
            let unchanged = old.is_some_and(|o| {
                o.exporters == p.exporters
                    && o.durable == durable
                    && o.exclusive == exclusive
                    && o.input.is_durable() == holds_receivers
                    && o.data_dir == new.data_dir
                    && o.processors.len() == processors.len()
                    && o.processors.iter().zip(&processors).all(|(a, b)| a.0 == b.0 && a.1.same_value(&b.1))
                    && p.exporters.iter().all(|id| changes[id].keeps_pipelines(self.exporters.get(id)))
            });
            if unchanged {
                pipeline_changes.push((handles, PipelineChange::Keep));
                continue;
            }
            let contexts: Vec<(Arc<dyn ProcessorConfig>, ProcessorContext)> = p
                .processors
                .iter()
                .map(|id| {
                    let ctx = ProcessorContext {
                        id: id.clone(),
                        pipeline: p.name.clone(),
                        state_dir: durable.then(|| new.data_dir.join("state").join(&p.name).join(id.to_string())),
                        telemetry: self.telemetry.clone(),
                    };
                    (new.processors[id].clone(), ctx)
                })
                .collect();
            // A processor's state on disk is the old pipeline's until that one ends.
            let shares_state = old.is_some_and(|o| o.durable && durable && o.data_dir == new.data_dir);
            let processors = if shares_state {
                ProcessorsFor::AfterOld(contexts)
            } else {
                let mut built = Vec::with_capacity(contexts.len());
                for (config, ctx) in &contexts {
                    match config.build(ctx) {
                        Ok(processor) => built.push(processor),
                        Err(e) => {
                            return fail(&changes, format!("processor `{}` of pipeline `{}`: {e}", ctx.id, p.name));
                        }
                    }
                }
                ProcessorsFor::Built(built)
            };
            let (tx, rx) = mpsc::channel(PIPELINE_CAPACITY);
            let hold = p.processors.iter().filter_map(|id| new.processors[id].releases_after()).max();
            let input = PipelineInput::new(p.name.clone(), tx).durable(holds_receivers).holding(hold);
            pipeline_changes.push((handles, PipelineChange::Build { input, rx, processors }));
        }
        let inputs_of = |pipeline: usize, changes: &[(Vec<ExporterHandle>, PipelineChange)]| match &changes[pipeline].1
        {
            PipelineChange::Keep => self.pipelines[&new.pipelines[pipeline].name].input.clone(),
            PipelineChange::Build { input, .. } => input.clone(),
        };
        let mut receiver_inputs: BTreeMap<ComponentId, Vec<PipelineInput>> = BTreeMap::new();
        for (i, p) in new.pipelines.iter().enumerate() {
            for r in &p.receivers {
                receiver_inputs.entry(r.clone()).or_default().push(inputs_of(i, &pipeline_changes));
            }
        }

        // 3. Receivers: start new ones (fed nothing until the swap: they answer 503).
        let mut receiver_changes: BTreeMap<ComponentId, ReceiverChange> = BTreeMap::new();
        for id in receiver_inputs.keys() {
            let config = &new.receivers[id];
            let written = new.written("receiver", id);
            let listen = config.listen_addrs();
            let change = match self.receivers.get(id) {
                Some(old) if old.config.same_value(written) => ReceiverChange::Keep,
                Some(old) if !old.listen.is_empty() && old.listen == listen => ReceiverChange::Restart,
                _ => match self.start_receiver(&new, id, false).await {
                    Ok(r) => ReceiverChange::Started(r),
                    Err(e) => {
                        for (_, change) in receiver_changes {
                            if let ReceiverChange::Started(r) = change {
                                r.stop.cancel();
                            }
                        }
                        return fail(&changes, format!("receiver `{id}`: {e}"));
                    }
                },
            };
            receiver_changes.insert(id.clone(), change);
        }

        // Nothing can fail from here on but a receiver's restart on its own address.
        // 4. Exporters: start the new senders; retire what is not used any more.
        let mut old_exporters = std::mem::take(&mut self.exporters);
        let mut retired_queues: Vec<Arc<Queue>> = Vec::new();
        for (id, change) in changes {
            let plan = &new.exporters[&id];
            let old = old_exporters.remove(&id);
            let (exporter, handle, dir) = match change {
                ExporterChange::Keep => {
                    let kept = old.expect("a kept exporter is running");
                    self.exporters.insert(id, kept);
                    continue;
                }
                ExporterChange::Handover { exporter, handle } => {
                    let old = old.expect("a handed-over exporter is running");
                    old.handover.cancel();
                    let mut task = old.task;
                    task.handed_over = true;
                    // The directory stays with the new sender, which holds the same queue.
                    self.retiring_exporters.push((None, task));
                    (exporter, handle, old.dir)
                }
                ExporterChange::New { exporter, handle, dir } => {
                    if let Some(old) = old {
                        retired_queues.push(old.task.queue.clone());
                        self.retiring_exporters.push((old.dir, old.task));
                    }
                    if let Some(timer) =
                        self.telemetry.add_exporter(&id.to_string(), handle.stats.clone(), handle.queue.clone())
                    {
                        let _ = handle.stats.send_timer.set(timer);
                    }
                    (exporter, handle, dir)
                }
            };
            let (handover, task) = self.spawn_exporter(&id, exporter, handle.clone(), &plan.delivery);
            let config = new.written("exporter", &id).clone();
            let delivery = plan.delivery.clone();
            self.exporters.insert(id, RunningExporter { config, delivery, dir, handle, handover, task });
        }
        for (id, old) in old_exporters {
            tracing::info!(exporter = %id, queued = old.task.queue.len(), "exporter removed by the reload: it delivers what its queue holds, then stops");
            retired_queues.push(old.task.queue.clone());
            self.retiring_exporters.push((old.dir, old.task));
        }

        // 5. Pipelines: start the new ones; the replaced ones end once no receiver feeds them.
        let mut old_pipelines = std::mem::take(&mut self.pipelines);
        let mut replaced: Vec<Done> = Vec::new();
        for (p, (handles, change)) in new.pipelines.iter().zip(pipeline_changes) {
            let old = old_pipelines.remove(&p.name);
            let processors = p.processors.iter().map(|id| (id.clone(), new.written("processor", id).clone())).collect();
            let durable = handles.iter().any(ExporterHandle::is_durable);
            let exclusive = feeds_alone(&new, p);
            let (input, done) = match change {
                PipelineChange::Keep => {
                    let kept = old.expect("a kept pipeline is running");
                    (kept.input, kept.done)
                }
                PipelineChange::Build { input, rx, processors } => {
                    let before = old.map(|o| o.done);
                    if let Some(before) = &before {
                        replaced.push(before.clone());
                        self.retiring_pipelines.push(before.clone());
                    }
                    let name = p.name.clone();
                    let task = tokio::spawn(async move {
                        let processors = match processors {
                            ProcessorsFor::Built(p) => p,
                            ProcessorsFor::AfterOld(contexts) => {
                                if let Some(before) = before {
                                    before.await;
                                }
                                match build_all(&contexts) {
                                    Ok(p) => p,
                                    Err(e) => {
                                        tracing::error!(pipeline = %name, "cannot start the pipeline after the reload, its receivers answer 503 until the next reload or restart: {e}");
                                        refuse_all(rx, &e).await;
                                        return;
                                    }
                                }
                            }
                        };
                        run_pipeline(rx, processors, handles, exclusive).await;
                    });
                    (input, done_when(task))
                }
            };
            let pipeline = RunningPipeline {
                processors,
                exporters: p.exporters.clone(),
                durable,
                exclusive,
                data_dir: new.data_dir.clone(),
                input,
                done,
            };
            self.pipelines.insert(p.name.clone(), pipeline);
        }
        for (_, old) in old_pipelines {
            replaced.push(old.done.clone());
            self.retiring_pipelines.push(old.done);
        }

        // 6. Receivers: point them at the new pipelines; stop the ones gone or changed.
        let mut old_receivers = std::mem::take(&mut self.receivers);
        let mut restart = Vec::new();
        for (id, change) in receiver_changes {
            let inputs = receiver_inputs.remove(&id).unwrap_or_default();
            let mut running = match change {
                ReceiverChange::Keep => old_receivers.remove(&id).expect("a kept receiver is running"),
                ReceiverChange::Started(r) => r,
                ReceiverChange::Restart => {
                    restart.push((id, inputs));
                    continue;
                }
            };
            running.config = new.written("receiver", &id).clone();
            running.consumer.retarget(inputs);
            self.receivers.insert(id, running);
        }
        for (id, old) in old_receivers {
            tracing::debug!(receiver = %id, "receiver stopped by the reload");
            old.stop.cancel();
            old.consumer.retarget(Vec::new());
            self.retiring_receivers.push(old.task);
        }
        let mut errors = Vec::new();
        for (id, inputs) in restart {
            match self.start_receiver(&new, &id, true).await {
                Ok(r) => {
                    r.consumer.retarget(inputs);
                    self.receivers.insert(id, r);
                }
                Err(e) => errors.push(format!(
                    "receiver `{id}` could not be restarted with its new settings and is not running: {e}"
                )),
            }
        }

        // 7. Retired queues take nothing more once the pipelines that fed them ended.
        if !retired_queues.is_empty() {
            tokio::spawn(async move {
                futures_util::future::join_all(replaced).await;
                retired_queues.iter().for_each(|q| q.close());
            });
        }
        self.retiring_exporters.retain(|(_, e)| !e.task.is_finished());
        self.retiring_receivers.retain(|t| !t.is_finished());
        self.shutdown_timeout = new.shutdown_timeout;
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// The exporter (running or finishing) whose disk queue is open in `dir`.
    fn disk_queue_holder(&self, dir: &std::path::Path) -> Option<String> {
        let running = self.exporters.values().filter(|e| e.dir.as_deref() == Some(dir)).map(|e| e.task.id.clone());
        let retiring = self
            .retiring_exporters
            .iter()
            .filter(|(d, e)| d.as_deref() == Some(dir) && !e.task.is_finished())
            .map(|(_, e)| e.id.clone());
        running.chain(retiring).next()
    }

    fn spawn_exporter(
        &self,
        id: &ComponentId,
        exporter: Arc<dyn Exporter>,
        handle: ExporterHandle,
        delivery: &DeliverySettings,
    ) -> (CancellationToken, ExporterTask) {
        let handover = CancellationToken::new();
        let task = tokio::spawn(run_exporter(
            id.to_string(),
            exporter,
            handle.queue.clone(),
            delivery.clone(),
            handle.stats.clone(),
            self.delivery_stop.clone(),
            handover.clone(),
        ));
        let task =
            ExporterTask { id: id.to_string(), task, queue: handle.queue, stats: handle.stats, handed_over: false };
        (handover, task)
    }

    /// Starts receiver `id` of `new`, feeding nothing yet. `rebind`: its old self just
    /// let go of the same address, which the kernel may not have freed yet.
    async fn start_receiver(
        &self,
        new: &ValidatedService,
        id: &ComponentId,
        rebind: bool,
    ) -> Result<RunningReceiver, String> {
        let config = &new.receivers[id];
        let consumer = Consumer::new(Vec::new()).with_stats(self.telemetry.add_receiver(&id.to_string()));
        let stop = self.receiver_stop.child_token();
        let deadline = tokio::time::Instant::now() + REBIND_PATIENCE;
        loop {
            match config.start(consumer.clone(), self.memory.clone(), stop.clone()).await {
                Ok(task) => {
                    return Ok(RunningReceiver {
                        config: new.written("receiver", id).clone(),
                        listen: config.listen_addrs(),
                        consumer,
                        stop,
                        task,
                    });
                }
                Err(e) if !rebind || tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Stops accepting, lets pipelines release what they hold, and drains exporter
    /// queues for up to `shutdown_timeout`; what is left then is logged as lost (memory
    /// queue) or kept on disk for the next start.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        self.receiver_stop.cancel();
        let mut consumers = Vec::new();
        let mut tasks = self.retiring_receivers;
        for (_, r) in self.receivers {
            consumers.push(r.consumer);
            tasks.push(r.task);
        }
        for t in tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                tracing::warn!("a receiver did not finish its requests before shutdown_timeout");
            }
        }
        // The pipelines' channels close once no receiver holds a way into them.
        consumers.iter().for_each(|c| c.retarget(Vec::new()));
        drop(consumers);
        let mut pipelines = self.retiring_pipelines;
        for (_, p) in self.pipelines {
            pipelines.push(p.done);
        }
        let mut exporters: Vec<ExporterTask> = self.exporters.into_values().map(|e| e.task).collect();
        exporters.extend(self.retiring_exporters.into_iter().map(|(_, e)| e));
        // Pipelines end once their receivers are gone; one blocked on a full `block`
        // queue is released by closing the queues at the deadline.
        for done in pipelines {
            if tokio::time::timeout_at(deadline, done.clone()).await.is_err() {
                exporters.iter().for_each(|e| e.queue.close());
                done.await;
            }
        }
        for e in &exporters {
            e.queue.close();
        }
        for mut e in exporters {
            if tokio::time::timeout_at(deadline, &mut e.task).await.is_err() {
                self.delivery_stop.cancel();
                let _ = e.task.await;
            }
            if e.handed_over {
                continue;
            }
            if let Queue::Disk(q) = &*e.queue {
                q.persist_acks();
            }
            let [sent, failed, dropped, retries] = e.stats.snapshot();
            let left = e.queue.len();
            match &*e.queue {
                Queue::Memory(_) if left > 0 => {
                    tracing::error!(exporter = %e.id, spans = left, "not delivered before shutdown_timeout: lost (memory queue)");
                }
                Queue::Disk(q) if left > 0 => {
                    tracing::info!(exporter = %e.id, records = left, dir = %q.dir().display(), "not delivered before shutdown_timeout: kept on disk for the next start");
                }
                _ => {}
            }
            tracing::info!(exporter = %e.id, sent, failed, dropped, retries, "exporter stopped");
        }
        self.delivery_stop.cancel();
    }
}

fn build_all(contexts: &[(Arc<dyn ProcessorConfig>, ProcessorContext)]) -> Result<Vec<Box<dyn Processor>>, String> {
    contexts.iter().map(|(config, ctx)| config.build(ctx).map_err(|e| format!("processor `{}`: {e}", ctx.id))).collect()
}

/// A pipeline that could not be built answers every batch as not kept (receivers
/// answer 503, senders retry) instead of taking data it cannot process.
async fn refuse_all(mut rx: mpsc::Receiver<PipelineMessage>, reason: &str) {
    while let Some(message) = rx.recv().await {
        if let Some(ack) = &message.ack {
            ack.fail(reason);
        }
    }
}

/// Closes the queues opened for a reload that did not happen.
fn close_new_queues(changes: &BTreeMap<ComponentId, ExporterChange>) {
    for change in changes.values() {
        if let ExporterChange::New { handle, .. } = change {
            handle.queue.close();
        }
    }
}

/// Whether no other pipeline of `service` feeds `pipeline`'s exporters.
fn feeds_alone(service: &ValidatedService, pipeline: &PipelinePlan) -> bool {
    pipeline
        .exporters
        .iter()
        .all(|id| service.pipelines.iter().filter(|other| other.exporters.contains(id)).count() == 1)
}
