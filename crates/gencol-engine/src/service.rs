//! The service: a config checked against the registry as a whole (every error at
//! once, no I/O), then started exporters-first and stopped receivers-first, so no
//! component ever sends into one that is not running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gencol_config::{
    ComponentEntry, ComponentId, Diagnostic, Diagnostics, Located, MetricsConfig, Node, ServiceConfig, closest_name,
    decode,
};
use gencol_model::budget::MemoryBudget;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ComponentContext, Exporter, ExporterConfig, ProcessorConfig, ProcessorContext, ReceiverConfig};
use crate::consumer::{Consumer, PipelineInput};
use crate::delivery::{
    DELIVERY_KEYS, DeliverySettings, DeliveryStats, DiskQueue, ExporterHandle, MemoryQueue, Queue, QueueKind,
    run_exporter,
};
use crate::pipeline::run_pipeline;
use crate::registry::Registry;
use crate::telemetry::Telemetry;

/// Batches a pipeline's channel holds before its receivers answer 503; what they hold
/// is bounded in bytes by [`crate::consumer::PIPELINE_BUDGET_BYTES`].
const PIPELINE_CAPACITY: usize = 1024;

/// A role, its config section, a pipeline's references to it, and the section's entries.
type Section<'a> = (&'a str, &'a str, &'a [Located<ComponentId>], &'a [ComponentEntry]);

/// An exporter made for `test-connection`, or why it could not be made.
pub type BuiltExporter = Result<Arc<dyn Exporter>, String>;

struct ExporterPlan {
    config: Box<dyn ExporterConfig>,
    delivery: DeliverySettings,
}

struct PipelinePlan {
    name: String,
    receivers: Vec<ComponentId>,
    processors: Vec<ComponentId>,
    exporters: Vec<ComponentId>,
}

/// A config that passed every check; `start` only does I/O.
pub struct ValidatedService {
    receivers: BTreeMap<ComponentId, Box<dyn ReceiverConfig>>,
    processors: BTreeMap<ComponentId, Box<dyn ProcessorConfig>>,
    exporters: BTreeMap<ComponentId, ExporterPlan>,
    pipelines: Vec<PipelinePlan>,
    shutdown_timeout: Duration,
    data_dir: PathBuf,
    /// `service.limits.max_inflight_memory`.
    max_inflight_memory: u64,
    /// Findings that do not stop gencol (unused components, missing `namespace`).
    pub warnings: Diagnostics,
    /// `service.telemetry.metrics`, for the binary to set up before [`Self::start`].
    pub metrics: MetricsConfig,
}

fn base_dir(loc_file: &str) -> PathBuf {
    Path::new(loc_file).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Splits an exporter's settings into the delivery part the engine owns and the part
/// its factory checks.
fn split_delivery(config: &Located<Node>) -> (Located<Node>, Located<Node>) {
    let (mut delivery, mut own) = (Vec::new(), Vec::new());
    if let Node::Map(entries) = &config.value {
        for (k, v) in entries {
            if DELIVERY_KEYS.contains(&k.value.as_str()) {
                delivery.push((k.clone(), v.clone()));
            } else {
                own.push((k.clone(), v.clone()));
            }
        }
    } else if !matches!(config.value, Node::Null) {
        // Not a map: let the factory report the type error at its place.
        return (Located { value: Node::Map(vec![]), loc: config.loc.clone() }, config.clone());
    }
    let at = |entries| Located { value: Node::Map(entries), loc: config.loc.clone() };
    (at(delivery), at(own))
}

impl ValidatedService {
    /// Checks a whole config against the registry. Errors and warnings are all
    /// reported; `Err` holds both when any error was found.
    pub fn validate(registry: &Registry, config: &ServiceConfig) -> Result<ValidatedService, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut receivers = BTreeMap::new();
        let mut processors = BTreeMap::new();
        let mut exporters = BTreeMap::new();
        let mut emits_generations = BTreeSet::new();
        let mut adds_request_attributes = BTreeSet::new();
        let mut disk_dirs: BTreeMap<PathBuf, ComponentId> = BTreeMap::new();

        let unknown = |role: &str, entry: &ComponentEntry, diags: &mut Diagnostics| {
            let kind = &entry.id.value.kind;
            let known = registry.kinds(role);
            let hint = match closest_name(kind, known.iter().copied()) {
                Some(c) => format!(" (did you mean `{c}`?)"),
                None => String::new(),
            };
            diags.push(Diagnostic::error(
                &entry.id.loc,
                format!("unknown {role} type `{kind}`{hint}; known {role} types: {}", known.join(", ")),
            ));
        };

        for entry in &config.receivers {
            let id = entry.id.value.clone();
            let Some(factory) = registry.receiver(&id.kind) else {
                unknown("receiver", entry, &mut diags);
                continue;
            };
            let ctx = ComponentContext { id: id.clone(), base_dir: base_dir(&entry.config.loc.file) };
            match factory.configure(&ctx, &entry.config) {
                Ok(c) => {
                    if c.emits_generations() {
                        emits_generations.insert(id.clone());
                    }
                    receivers.insert(id, c);
                }
                Err(errors) => errors.into_iter().for_each(|d| diags.push(d)),
            }
        }
        for entry in &config.processors {
            let id = entry.id.value.clone();
            let Some(factory) = registry.processor(&id.kind) else {
                unknown("processor", entry, &mut diags);
                continue;
            };
            let ctx = ComponentContext { id: id.clone(), base_dir: base_dir(&entry.config.loc.file) };
            match factory.configure(&ctx, &entry.config) {
                Ok(c) => {
                    if factory.adds_request_attributes() {
                        adds_request_attributes.insert(id.clone());
                    }
                    processors.insert(id, c);
                }
                Err(errors) => errors.into_iter().for_each(|d| diags.push(d)),
            }
        }
        for entry in &config.exporters {
            let id = entry.id.value.clone();
            let Some(factory) = registry.exporter(&id.kind) else {
                unknown("exporter", entry, &mut diags);
                continue;
            };
            let (delivery_node, own) = split_delivery(&entry.config);
            let delivery = match decode::<DeliverySettings>(&delivery_node) {
                Ok(d) => Some(d),
                Err(d) => {
                    diags.push(d);
                    None
                }
            };
            if let Some(d) = &delivery
                && d.queue.kind == QueueKind::Disk
            {
                let dir = d.queue.disk_dir(&config.data_dir, &id.to_string());
                let loc = delivery_node.value.get("queue").map(|q| q.loc.clone()).unwrap_or(entry.id.loc.clone());
                if let Some(other) = disk_dirs.insert(dir.clone(), id.clone()) {
                    diags.push(Diagnostic::error(
                        &loc,
                        format!(
                            "exporter `{id}` uses the disk queue directory {} of exporter `{other}`: give each exporter its own queue.dir",
                            dir.display()
                        ),
                    ));
                }
            }
            let ctx = ComponentContext { id: id.clone(), base_dir: base_dir(&entry.config.loc.file) };
            match (factory.configure(&ctx, &own), delivery) {
                (Ok(c), Some(delivery)) => {
                    exporters.insert(id, ExporterPlan { config: c, delivery });
                }
                (Err(errors), _) => errors.into_iter().for_each(|d| diags.push(d)),
                (Ok(_), None) => {}
            }
        }

        // Pipelines: every name defined, in the right section.
        let defined = |list: &[ComponentEntry], id: &ComponentId| list.iter().any(|e| &e.id.value == id);
        let mut used = BTreeSet::new();
        let mut pipelines = Vec::new();
        for p in &config.pipelines {
            let name = p.id.value.to_string();
            let sections: [Section<'_>; 3] = [
                ("receiver", "receivers", &p.receivers, &config.receivers),
                ("processor", "processors", &p.processors, &config.processors),
                ("exporter", "exporters", &p.exporters, &config.exporters),
            ];
            for (role, section, refs, entries) in sections {
                for r in refs {
                    used.insert((role, r.value.clone()));
                    if !defined(entries, &r.value) {
                        let names: Vec<String> = entries.iter().map(|e| e.id.value.to_string()).collect();
                        let hint = closest_name(&r.value.to_string(), names.iter().map(String::as_str))
                            .map(|c| format!(" (did you mean `{c}`?)"))
                            .unwrap_or_default();
                        diags.push(Diagnostic::error(
                            &r.loc,
                            format!(
                                "pipeline `{name}` uses {role} `{}`, which is not defined under `{section}`{hint}",
                                r.value
                            ),
                        ));
                    }
                }
            }
            let fed_generations = p.receivers.iter().any(|r| emits_generations.contains(&r.value));
            let has_namespace = p.processors.iter().any(|r| adds_request_attributes.contains(&r.value));
            if fed_generations && !has_namespace {
                diags.push(Diagnostic::warning(
                    &p.id.loc,
                    format!("pipeline `{name}` receives generations but has no `namespace` processor: spans will carry no user, session or custom metadata attributes"),
                ));
            }
            pipelines.push(PipelinePlan {
                name,
                receivers: p.receivers.iter().map(|r| r.value.clone()).collect(),
                processors: p.processors.iter().map(|r| r.value.clone()).collect(),
                exporters: p.exporters.iter().map(|r| r.value.clone()).collect(),
            });
        }
        for (role, list) in
            [("receiver", &config.receivers), ("processor", &config.processors), ("exporter", &config.exporters)]
        {
            for e in list {
                if !used.contains(&(role, e.id.value.clone())) {
                    diags.push(Diagnostic::warning(
                        &e.id.loc,
                        format!("{role} `{}` is defined but no pipeline uses it: it will not run", e.id.value),
                    ));
                }
            }
        }

        check_delivery_loops(config, &receivers, &exporters, &mut diags);

        if diags.has_errors() {
            return Err(diags);
        }
        Ok(ValidatedService {
            receivers,
            processors,
            exporters,
            pipelines,
            shutdown_timeout: config.shutdown_timeout,
            data_dir: config.data_dir.clone(),
            max_inflight_memory: config.max_inflight_memory,
            warnings: diags,
            metrics: config.metrics.clone(),
        })
    }

    /// The validated exporters, for `gencol test-connection`.
    pub fn build_exporters(&self) -> Vec<(ComponentId, BuiltExporter)> {
        self.exporters.iter().map(|(id, plan)| (id.clone(), plan.config.build(id))).collect()
    }

    /// Exporters some pipeline uses (the ones `start` runs), in id order.
    pub fn used_exporters(&self) -> Vec<ComponentId> {
        let used: BTreeSet<&ComponentId> = self.pipelines.iter().flat_map(|p| &p.exporters).collect();
        used.into_iter().cloned().collect()
    }

    /// An exporter's configured `timeout`, which also bounds its Test Connection: a
    /// destination that answers tests more slowly than real sends would let through is
    /// not one that works.
    pub fn exporter_timeout(&self, id: &ComponentId) -> Option<Duration> {
        self.exporters.get(id).map(|plan| plan.delivery.timeout.0)
    }

    /// Starts everything: exporters, then pipelines, then receivers. If any part fails
    /// to start (a port in use), what was started is stopped again and the error
    /// returned: gencol never half-starts. Each component counts into `telemetry`.
    pub async fn start(self, telemetry: &Telemetry) -> Result<RunningService, String> {
        let used_exporters: BTreeSet<&ComponentId> = self.pipelines.iter().flat_map(|p| &p.exporters).collect();
        let delivery_stop = CancellationToken::new();
        let mut exporter_tasks = Vec::new();
        let mut handles = BTreeMap::new();
        for id in used_exporters {
            let plan = &self.exporters[id];
            let exporter = match plan.config.build(id) {
                Ok(e) => e,
                Err(e) => {
                    delivery_stop.cancel();
                    close_all(&exporter_tasks);
                    return Err(format!("exporter `{id}`: {e}"));
                }
            };
            let queue = match plan.delivery.queue.kind {
                QueueKind::Memory => Queue::Memory(MemoryQueue::new(&plan.delivery.queue)),
                QueueKind::Disk => {
                    let dir = plan.delivery.queue.disk_dir(&self.data_dir, &id.to_string());
                    match DiskQueue::open(&id.to_string(), &dir, &plan.delivery.queue) {
                        Ok(q) => Queue::Disk(Box::new(q)),
                        Err(e) => {
                            delivery_stop.cancel();
                            close_all(&exporter_tasks);
                            return Err(format!("exporter `{id}`: {e}"));
                        }
                    }
                }
            };
            let queue = Arc::new(queue);
            let stats = Arc::new(DeliveryStats::default());
            if let Some(timer) = telemetry.add_exporter(&id.to_string(), stats.clone(), queue.clone()) {
                let _ = stats.send_timer.set(timer);
            }
            let task = tokio::spawn(run_exporter(
                id.to_string(),
                exporter,
                queue.clone(),
                plan.delivery.clone(),
                stats.clone(),
                delivery_stop.clone(),
            ));
            handles.insert(
                id.clone(),
                ExporterHandle::new(id.to_string(), queue.clone(), plan.delivery.privacy_mode, stats.clone()),
            );
            exporter_tasks.push(ExporterTask { id: id.to_string(), task, queue, stats });
        }

        let mut pipeline_tasks = Vec::new();
        let mut inputs: BTreeMap<ComponentId, Vec<PipelineInput>> = BTreeMap::new();
        for p in &self.pipelines {
            let (tx, rx) = mpsc::channel(PIPELINE_CAPACITY);
            let durable = p.exporters.iter().any(|id| handles[id].is_durable());
            let mut processors = Vec::with_capacity(p.processors.len());
            for id in &p.processors {
                let ctx = ProcessorContext {
                    id: id.clone(),
                    pipeline: p.name.clone(),
                    state_dir: durable.then(|| self.data_dir.join("state").join(&p.name).join(id.to_string())),
                    telemetry: telemetry.clone(),
                };
                match self.processors[id].build(&ctx) {
                    Ok(processor) => processors.push(processor),
                    Err(e) => {
                        delivery_stop.cancel();
                        close_all(&exporter_tasks);
                        return Err(format!("processor `{id}` of pipeline `{}`: {e}", p.name));
                    }
                }
            }
            let exporters: Vec<ExporterHandle> = p.exporters.iter().map(|id| handles[id].clone()).collect();
            pipeline_tasks.push(tokio::spawn(run_pipeline(rx, processors, exporters)));
            let input = PipelineInput::new(p.name.clone(), tx).durable(durable);
            for r in &p.receivers {
                inputs.entry(r.clone()).or_default().push(input.clone());
            }
        }

        let receiver_stop = CancellationToken::new();
        let mut receiver_tasks = Vec::new();
        // One budget for every receiver: what bounds memory is the process, not a port.
        let memory = MemoryBudget::new(usize::try_from(self.max_inflight_memory).unwrap_or(usize::MAX));
        for (id, senders) in inputs {
            let consumer = Consumer::new(senders).with_stats(telemetry.add_receiver(&id.to_string()));
            match self.receivers[&id].start(consumer, memory.clone(), receiver_stop.clone()).await {
                Ok(task) => receiver_tasks.push(task),
                Err(e) => {
                    let running = RunningService {
                        receiver_stop,
                        receiver_tasks,
                        pipeline_tasks,
                        exporter_tasks,
                        delivery_stop,
                        shutdown_timeout: Duration::from_secs(1),
                    };
                    running.shutdown().await;
                    return Err(format!("receiver `{id}`: {e}"));
                }
            }
        }
        Ok(RunningService {
            receiver_stop,
            receiver_tasks,
            pipeline_tasks,
            exporter_tasks,
            delivery_stop,
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// An exporter sending into gencol's own receiver would loop data forever.
fn check_delivery_loops(
    config: &ServiceConfig,
    receivers: &BTreeMap<ComponentId, Box<dyn ReceiverConfig>>,
    exporters: &BTreeMap<ComponentId, ExporterPlan>,
    diags: &mut Diagnostics,
) {
    // Edges: pipeline → pipelines fed by a receiver that one of its exporters targets.
    let n = config.pipelines.len();
    let mut edges: Vec<Vec<(usize, Located<ComponentId>, ComponentId)>> = vec![Vec::new(); n];
    for (i, p) in config.pipelines.iter().enumerate() {
        for e in &p.exporters {
            let Some(target) = exporters.get(&e.value).and_then(|x| x.config.target_addr()) else { continue };
            for (j, q) in config.pipelines.iter().enumerate() {
                for r in &q.receivers {
                    let listens = receivers.get(&r.value).and_then(|x| x.listen_addr());
                    if listens.is_some_and(|l| same_endpoint(&l, &target)) {
                        edges[i].push((j, e.clone(), r.value.clone()));
                    }
                }
            }
        }
    }
    // A loop exists when a pipeline can reach itself; report each closing edge once.
    for start in 0..n {
        let mut seen = vec![false; n];
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for (j, exporter, receiver) in &edges[i] {
                if *j == start {
                    diags.push(Diagnostic::error(
                        &exporter.loc,
                        format!(
                            "delivery loop: exporter `{}` sends to receiver `{receiver}`, which feeds pipeline `{}` back into it; point the exporter at another endpoint",
                            exporter.value, config.pipelines[start].id.value
                        ),
                    ));
                } else if !seen[*j] {
                    seen[*j] = true;
                    stack.push(*j);
                }
            }
        }
    }
}

/// Whether an exporter's `host:port` reaches a receiver listening on `listen`.
fn same_endpoint(listen: &str, target: &str) -> bool {
    fn split(s: &str) -> Option<(String, &str)> {
        let (host, port) = s.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let host = if host == "localhost" || host == "::1" { "127.0.0.1".to_owned() } else { host };
        Some((host, port))
    }
    let (Some((lh, lp)), Some((th, tp))) = (split(listen), split(target)) else { return false };
    lp == tp && (lh == th || ((lh == "0.0.0.0" || lh == "::") && (th.starts_with("127.") || th == "0.0.0.0")))
}

struct ExporterTask {
    id: String,
    task: JoinHandle<()>,
    queue: Arc<Queue>,
    stats: Arc<DeliveryStats>,
}

/// Closes the queues of exporters started before a failure: a disk queue's fsync thread
/// ends and its directory lock is released.
fn close_all(tasks: &[ExporterTask]) {
    tasks.iter().for_each(|e| e.queue.close());
}

/// A started service. Stop it with [`RunningService::shutdown`].
pub struct RunningService {
    receiver_stop: CancellationToken,
    receiver_tasks: Vec<JoinHandle<()>>,
    pipeline_tasks: Vec<JoinHandle<()>>,
    exporter_tasks: Vec<ExporterTask>,
    delivery_stop: CancellationToken,
    shutdown_timeout: Duration,
}

impl RunningService {
    /// Stops accepting, lets pipelines release what they hold, and drains exporter
    /// queues for up to `shutdown_timeout`; what is left then is logged as lost.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        self.receiver_stop.cancel();
        for t in self.receiver_tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                tracing::warn!("a receiver did not finish its requests before shutdown_timeout");
            }
        }
        // Pipelines end once their receivers are gone; one blocked on a full `block`
        // queue is released by closing the queues at the deadline.
        for mut t in self.pipeline_tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                self.exporter_tasks.iter().for_each(|e| e.queue.close());
                let _ = t.await;
            }
        }
        for e in &self.exporter_tasks {
            e.queue.close();
        }
        for mut e in self.exporter_tasks {
            if tokio::time::timeout_at(deadline, &mut e.task).await.is_err() {
                self.delivery_stop.cancel();
                let _ = e.task.await;
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

#[cfg(test)]
mod tests {
    use super::same_endpoint;

    #[test]
    fn loop_detection_matches_loopback_forms() {
        assert!(same_endpoint("127.0.0.1:4318", "localhost:4318"));
        assert!(same_endpoint("0.0.0.0:4318", "127.0.0.1:4318"));
        assert!(!same_endpoint("127.0.0.1:4318", "127.0.0.1:4319"));
        assert!(!same_endpoint("127.0.0.1:4318", "collector:4318"));
    }
}
