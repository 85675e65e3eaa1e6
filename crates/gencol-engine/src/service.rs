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

use crate::component::{ComponentContext, Exporter, ExporterConfig, ProcessorConfig, ReceiverConfig};
use crate::delivery::{DELIVERY_KEYS, DeliverySettings, QueueKind};
use crate::registry::Registry;
use crate::routing::{MAX_ROUTED_EXPORTERS, Route};
use crate::running::RunningService;
use crate::telemetry::Telemetry;

/// A role, its config section, a pipeline's references to it, and the section's entries.
type Section<'a> = (&'a str, &'a str, &'a [Located<ComponentId>], &'a [ComponentEntry]);

/// An exporter made for `test-connection`, or why it could not be made.
pub type BuiltExporter = Result<Arc<dyn Exporter>, String>;

pub(crate) struct ExporterPlan {
    pub(crate) config: Box<dyn ExporterConfig>,
    pub(crate) delivery: DeliverySettings,
    /// Which spans it gets (SPEC §11); `None`: all.
    pub(crate) route: Option<Arc<Route>>,
}

pub(crate) struct PipelinePlan {
    pub(crate) name: String,
    pub(crate) receivers: Vec<ComponentId>,
    pub(crate) processors: Vec<ComponentId>,
    pub(crate) exporters: Vec<ComponentId>,
}

/// A config that passed every check; `start` only does I/O.
pub struct ValidatedService {
    pub(crate) receivers: BTreeMap<ComponentId, Box<dyn ReceiverConfig>>,
    pub(crate) processors: BTreeMap<ComponentId, Arc<dyn ProcessorConfig>>,
    pub(crate) exporters: BTreeMap<ComponentId, ExporterPlan>,
    /// Each component's settings as written, for a reload to tell what changed.
    pub(crate) written: BTreeMap<(&'static str, ComponentId), Node>,
    pub(crate) pipelines: Vec<PipelinePlan>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) data_dir: PathBuf,
    /// `service.limits.max_inflight_memory`.
    pub(crate) max_inflight_memory: u64,
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
        let mut written = BTreeMap::new();
        for (role, list) in
            [("receiver", &config.receivers), ("processor", &config.processors), ("exporter", &config.exporters)]
        {
            for e in list {
                written.insert((role, e.id.value.clone()), e.config.value.clone());
            }
        }

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
                    processors.insert(id, Arc::from(c));
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
            let route = match &delivery {
                Some(d) => {
                    match Route::compile(
                        d.sampling_rate,
                        d.api_keys.as_deref(),
                        d.filter_rules.as_ref(),
                        &delivery_node,
                    ) {
                        Ok(r) => Some(r.map(Arc::new)),
                        Err(errors) => {
                            errors.into_iter().for_each(|e| diags.push(e));
                            None
                        }
                    }
                }
                None => None,
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
            match (factory.configure(&ctx, &own), delivery, route) {
                (Ok(c), Some(delivery), Some(route)) => {
                    exporters.insert(id, ExporterPlan { config: c, delivery, route });
                }
                (Err(errors), ..) => errors.into_iter().for_each(|d| diags.push(d)),
                (Ok(_), ..) => {}
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
            // A gateway tier hands generations on whole (`nats`): the next tier names them.
            let hands_on = !p.exporters.is_empty()
                && p.exporters.iter().all(|e| exporters.get(&e.value).is_some_and(|x| x.config.hands_on_generations()));
            if fed_generations && !has_namespace && !hands_on {
                diags.push(Diagnostic::warning(
                    &p.id.loc,
                    format!("pipeline `{name}` receives generations but has no `namespace` processor: spans will carry no user, session or custom metadata attributes"),
                ));
            }
            let routed = p.exporters.iter().any(|r| exporters.get(&r.value).is_some_and(|e| e.route.is_some()));
            if routed && p.exporters.len() > MAX_ROUTED_EXPORTERS {
                diags.push(Diagnostic::error(
                    &p.id.loc,
                    format!(
                        "pipeline `{name}` has {} exporters, and routing (sampling_rate, api_keys, filter_rules) handles at most {MAX_ROUTED_EXPORTERS} in one pipeline: split it into two pipelines",
                        p.exporters.len()
                    ),
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
            written,
            pipelines,
            shutdown_timeout: config.shutdown_timeout,
            data_dir: config.data_dir.clone(),
            max_inflight_memory: config.max_inflight_memory,
            warnings: diags,
            metrics: config.metrics.clone(),
        })
    }

    /// The validated exporters, for `gencol test-connection`.
    /// The Test Connection of each receiver that has one ([`ReceiverConfig::test_connection`]), in id order.
    pub fn receiver_tests(&self) -> Vec<(ComponentId, crate::BoxFuture<'static, Result<String, String>>)> {
        self.receivers.iter().filter_map(|(id, r)| r.test_connection().map(|t| (id.clone(), t))).collect()
    }

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
        let memory = MemoryBudget::new(usize::try_from(self.max_inflight_memory).unwrap_or(usize::MAX));
        let mut running = RunningService::empty(telemetry.clone(), memory, self.max_inflight_memory);
        running.apply(self).await.map(|()| running)
    }

    pub(crate) fn written(&self, role: &'static str, id: &ComponentId) -> &Node {
        &self.written[&(role, id.clone())]
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
                    let listens = receivers.get(&r.value).map(|x| x.listen_addrs()).unwrap_or_default();
                    if listens.iter().any(|l| same_endpoint(l, &target)) {
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
