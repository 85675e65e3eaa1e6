//! What is measured: the scenarios of the issue (A–D), the targets each runs against,
//! and one measured point from process start to counted spans.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::load::{self, LoadPlan, Pace, quantile_ms};
use crate::payload::{BodyKind, BodyPool};
use crate::process::{Rotel, UnderTest, free_port, own_cpu_seconds};
use crate::sink::{Sink, count_spans};

/// What gencol runs in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pipeline {
    /// `generations` → `hierarchy`, `namespace`, `privacy` → `otlp` (JSON, gzip).
    Generations,
    /// The same with `queue.kind: disk` (`sync: always`, the default): every 202 waits
    /// for an fsync.
    GenerationsDisk,
    /// `otlp` → `otlp` (gzip), protobuf out as rotel sends, or JSON out.
    PassThrough { proto: bool },
    /// `generations` → the three processors → three `otlp` exporters: JSON, protobuf,
    /// and JSON with `privacy_mode`.
    FanOut,
    /// [`Pipeline::FanOut`] with routing on every exporter (SPEC §11): `sampling_rate: 1`
    /// and one group of three rules that every generation passes, one of them reading the
    /// prompt. The same spans go out: the difference is what routing costs.
    FanOutRouted,
}

/// The process under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Gencol(Pipeline),
    Rotel,
    Null,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::Gencol(Pipeline::PassThrough { proto: false }) => "gencol (JSON out)",
            Target::Gencol(Pipeline::GenerationsDisk) => "gencol (disk queue)",
            Target::Gencol(Pipeline::FanOutRouted) => "gencol (routed)",
            Target::Gencol(_) => "gencol",
            Target::Rotel => "rotel",
            Target::Null => "null",
        }
    }
}

/// One point of the plan: a target under one load.
#[derive(Clone, Debug)]
pub struct Point {
    pub scenario: &'static str,
    pub target: Target,
    pub kind: BodyKind,
    pub batch: usize,
    pub pace: Pace,
    pub connections: usize,
}

/// Settings every point shares.
pub struct PlanSettings {
    pub closed_connections: usize,
    pub open_connections: usize,
    pub rates: Vec<f64>,
    pub rotel: bool,
}

/// The scenarios, in report order.
pub const SCENARIOS: [(&str, &str); 4] = [
    ("A", "generations → hierarchy, namespace, privacy → OTLP/JSON gzip (closed loop)"),
    ("B", "OTLP/HTTP JSON in → OTLP out, gzip: the work rotel does (closed loop)"),
    ("C", "scenario A's pipeline at fixed offered loads (open loop, batch 1)"),
    ("D", "generations → processors → three destinations: JSON, protobuf, JSON with privacy_mode (closed loop)"),
];

/// Every point, scenarios in order, targets side by side.
pub fn plan(s: &PlanSettings, only: &[String]) -> Vec<Point> {
    let wanted = |id: &str| only.is_empty() || only.iter().any(|o| o.eq_ignore_ascii_case(id));
    let closed = |scenario, target, kind, batch| Point {
        scenario,
        target,
        kind,
        batch,
        pace: Pace::Closed,
        connections: s.closed_connections,
    };
    let mut points = Vec::new();
    let with_disk = [Target::Gencol(Pipeline::Generations), Target::Gencol(Pipeline::GenerationsDisk), Target::Null];
    if wanted("A") {
        for batch in [1, 10, 100] {
            for target in with_disk {
                points.push(closed("A", target, BodyKind::Generations, batch));
            }
        }
    }
    if wanted("B") {
        for batch in [1, 10, 100] {
            let mut targets = vec![
                Target::Gencol(Pipeline::PassThrough { proto: true }),
                Target::Gencol(Pipeline::PassThrough { proto: false }),
            ];
            if s.rotel {
                targets.push(Target::Rotel);
            }
            targets.push(Target::Null);
            for target in targets {
                points.push(closed("B", target, BodyKind::OtlpJson, batch));
            }
        }
    }
    if wanted("C") {
        for &per_second in &s.rates {
            for target in with_disk {
                points.push(Point {
                    scenario: "C",
                    target,
                    kind: BodyKind::Generations,
                    batch: 1,
                    pace: Pace::Open { per_second },
                    connections: s.open_connections,
                });
            }
        }
    }
    if wanted("D") {
        for target in [Target::Gencol(Pipeline::FanOut), Target::Gencol(Pipeline::FanOutRouted), Target::Null] {
            points.push(closed("D", target, BodyKind::Generations, 10));
        }
    }
    points
}

/// One measured run of one point: everything `runs.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub scenario: &'static str,
    pub target: &'static str,
    pub batch: usize,
    /// Offered requests a second (open loop); `None` for closed loop.
    pub offered_per_s: Option<f64>,
    pub connections: usize,
    pub repeat: usize,
    pub window_s: f64,
    pub mean_body_bytes: usize,
    /// 2xx answers a second.
    pub requests_per_s: f64,
    /// Records (generations or spans) in 2xx-answered requests, a second.
    pub records_per_s: f64,
    /// Spans the sink received in the window, a second (`None` for the null server).
    pub spans_per_s: Option<f64>,
    /// Export requests the sink received in the window, a second.
    pub exports_per_s: Option<f64>,
    /// Spans the sink received over the whole run, and records accepted over it.
    pub spans_delivered_total: u64,
    pub records_accepted_total: u64,
    pub refused: u64,
    /// Requests released in the window that were still unanswered 2 s after it.
    pub late: u64,
    pub errors: u64,
    /// CPU seconds of the process under test in the window, all threads.
    pub cpu_s: f64,
    /// CPU microseconds of the process under test per accepted record.
    pub cpu_us_per_record: f64,
    /// Share of its core the process under test used.
    pub core_busy: f64,
    /// Share of its core the generator and sink used; near 1.0 the generator, not the
    /// target, set the pace.
    pub generator_busy: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub peak_rss_mib: Option<f64>,
    /// Bytes the process under test sent to storage over the whole run
    /// (`/proc/PID/io` `write_bytes`), per accepted record (disk queue only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes_per_record: Option<f64>,
}

/// What every point needs: where things are, the sink, the bodies.
pub struct Bench {
    pub gencol: PathBuf,
    pub rotel: Option<Rotel>,
    pub work: PathBuf,
    pub target_core: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub sink: Sink,
    /// Record a `perf` profile of every gencol run's window into this directory.
    pub perf: Option<PathBuf>,
    pools: HashMap<(BodyKind, usize), Arc<BodyPool>>,
}

impl Bench {
    pub fn new(
        gencol: PathBuf,
        rotel: Option<Rotel>,
        work: PathBuf,
        target_core: usize,
        warmup: Duration,
        measure: Duration,
        sink: Sink,
    ) -> Bench {
        Bench { gencol, rotel, work, target_core, warmup, measure, sink, perf: None, pools: HashMap::new() }
    }

    /// Builds every body pool the plan uses, before anything is timed.
    pub fn prepare(&mut self, points: &[Point]) {
        for p in points {
            self.pools
                .entry((p.kind, p.batch))
                .or_insert_with(|| Arc::new(BodyPool::new(p.kind, p.batch, 0x6765_6e63_6f6c)));
        }
    }

    /// Starts the target, loads it, and counts what reached the sink.
    pub async fn run_point(&self, point: &Point, repeat: usize) -> Result<RunRecord, String> {
        self.sink.take();
        let port = free_port();
        let name = format!("{}-{}-b{}", point.scenario, point.target.label().replace([' ', '(', ')'], ""), point.batch);
        let log = self.work.join(format!("{name}.log"));
        let (program, args) = self.command(point, port, &name)?;
        let mut target = UnderTest::start(&program, &args, self.target_core, &log)?;
        if let Err(e) = target.wait_listening(port, &log) {
            target.stop();
            return Err(format!("{}: {e}", point.target.label()));
        }

        let pool = self.pools[&(point.kind, point.batch)].clone();
        let start = Instant::now() + Duration::from_millis(300);
        let window_start = start + self.warmup;
        let window_end = window_start + self.measure;
        let plan = LoadPlan {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pool: pool.clone(),
            connections: point.connections,
            pace: point.pace,
            start,
            warmup: self.warmup,
            measure: self.measure,
        };
        let pid = target.pid;
        let perf = match (&self.perf, point.target) {
            (Some(dir), Target::Gencol(_)) => Some((dir.join(format!("{name}-r{repeat}.perf.data")), self.measure)),
            _ => None,
        };
        let sampler = tokio::spawn(async move {
            let read = || (crate::process::cpu_seconds_of(pid), own_cpu_seconds());
            tokio::time::sleep_until(window_start.into()).await;
            let profiler = perf.and_then(|(file, measure)| crate::process::perf_record(pid, &file, measure));
            let a = read();
            tokio::time::sleep_until(window_end.into()).await;
            let b = read();
            if let Some(mut p) = profiler {
                let _ = tokio::task::spawn_blocking(move || p.wait()).await;
            }
            (a, b)
        });
        let outcome = load::run(plan).await;
        let ((cpu_a, own_a), (cpu_b, own_b)) = sampler.await.map_err(|e| e.to_string())?;

        // Let exporters deliver what they hold: done when nothing came for 400 ms (rotel
        // batches for up to 200 ms), or after 5 s.
        let drain_until = Instant::now() + Duration::from_secs(5);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let quiet = self.sink.last_arrival().is_none_or(|t| t.elapsed() > Duration::from_millis(400));
            if quiet || Instant::now() > drain_until {
                break;
            }
        }
        let peak_rss_mib = target.peak_rss_mib();
        let disk_written = (point.target == Target::Gencol(Pipeline::GenerationsDisk))
            .then(|| crate::process::storage_bytes_written(pid))
            .flatten();
        target.stop();

        let mut in_window = 0u64;
        let mut exports = 0u64;
        let mut total = 0u64;
        for d in self.sink.take() {
            let n = count_spans(&d).map_err(|e| format!("sink: {e}"))? as u64;
            total += n;
            if d.at >= window_start && d.at < window_end {
                in_window += n;
                exports += 1;
            }
        }

        let window_s = self.measure.as_secs_f64();
        let cpu_s = match (cpu_a, cpu_b) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        let own_s = match (own_a, own_b) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        let mut lat = outcome.latencies_ns;
        lat.sort_unstable();
        Ok(RunRecord {
            scenario: point.scenario,
            target: point.target.label(),
            batch: point.batch,
            offered_per_s: match point.pace {
                Pace::Open { per_second } => Some(per_second),
                Pace::Closed => None,
            },
            connections: point.connections,
            repeat,
            window_s,
            mean_body_bytes: pool.mean_body_bytes(),
            requests_per_s: outcome.ok as f64 / window_s,
            records_per_s: outcome.records_ok as f64 / window_s,
            disk_bytes_per_record: disk_written.map(|b| b as f64 / outcome.records_ok_total.max(1) as f64),
            spans_per_s: (point.target != Target::Null).then_some(in_window as f64 / window_s),
            exports_per_s: (point.target != Target::Null).then_some(exports as f64 / window_s),
            spans_delivered_total: total,
            records_accepted_total: outcome.records_ok_total,
            refused: outcome.refused,
            late: outcome.late,
            errors: outcome.errors,
            cpu_s,
            cpu_us_per_record: cpu_s * 1e6 / outcome.records_ok.max(1) as f64,
            core_busy: cpu_s / window_s,
            generator_busy: own_s / window_s,
            p50_ms: quantile_ms(&lat, 0.5),
            p99_ms: quantile_ms(&lat, 0.99),
            p999_ms: quantile_ms(&lat, 0.999),
            peak_rss_mib,
        })
    }

    /// The program and arguments that start `point`'s target on `port`.
    fn command(&self, point: &Point, port: u16, name: &str) -> Result<(PathBuf, Vec<String>), String> {
        let sink = self.sink.addr;
        Ok(match point.target {
            Target::Gencol(pipeline) => {
                let config = self.work.join(format!("{name}.yaml"));
                let data_dir = self.work.join(format!("{name}.data"));
                // Each run starts from an empty queue, not another run's leftovers.
                let _ = std::fs::remove_dir_all(&data_dir);
                std::fs::write(&config, gencol_config(pipeline, port, sink, &data_dir))
                    .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
                let args = vec![
                    "run".into(),
                    "--log-level".into(),
                    "warn".into(),
                    "--config".into(),
                    config.display().to_string(),
                ];
                (self.gencol.clone(), args)
            }
            Target::Rotel => {
                let rotel = self.rotel.as_ref().ok_or("rotel is not available")?;
                let grpc = free_port();
                let args = [
                    "start",
                    "--otlp-http-endpoint",
                    &format!("127.0.0.1:{port}"),
                    "--otlp-grpc-endpoint",
                    &format!("127.0.0.1:{grpc}"),
                    "--exporter",
                    "otlp",
                    "--otlp-exporter-protocol",
                    "http",
                    "--otlp-exporter-endpoint",
                    &format!("http://{sink}"),
                    "--pid-file",
                    &self.work.join(format!("{name}.pid")).display().to_string(),
                    "--log-file",
                    &self.work.join(format!("{name}.rotel.log")).display().to_string(),
                ]
                .map(String::from)
                .to_vec();
                (rotel.agent.clone(), args)
            }
            Target::Null => {
                let me = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
                (me, vec!["null-server".into(), "--listen".into(), format!("127.0.0.1:{port}")])
            }
        })
    }
}

/// gencol's config for `pipeline`. Queues block instead of dropping when full, so
/// every accepted record is delivered and an overloaded gencol answers 503, which the
/// generator counts as refused: throughput is what gets through, never what was
/// dropped. Everything else is the default.
pub fn gencol_config(pipeline: Pipeline, port: u16, sink: SocketAddr, data_dir: &std::path::Path) -> String {
    let exporter = |id: &str, path: &str, encoding: &str, extra: &str| {
        format!(
            "  otlp/{id}:\n    endpoint: http://{sink}{path}/v1/traces\n    encoding: {encoding}\n    compression: gzip\n    queue: {{when_full: block}}\n{extra}"
        )
    };
    let data_dir = data_dir.display();
    let generations = format!(
        "receivers:\n  generations:\n    endpoint: 127.0.0.1:{port}\nprocessors:\n  hierarchy: {{}}\n  namespace: {{}}\n  privacy: {{}}\n"
    );
    match pipeline {
        Pipeline::Generations => format!(
            "{generations}exporters:\n{}service:\n  pipelines:\n    traces:\n      receivers: [generations]\n      processors: [hierarchy, namespace, privacy]\n      exporters: [otlp/sink]\n",
            exporter("sink", "", "json", "")
        ),
        Pipeline::GenerationsDisk => format!(
            "{generations}exporters:\n  otlp/sink:\n    endpoint: http://{sink}/v1/traces\n    encoding: json\n    compression: gzip\n    queue: {{kind: disk}}\nservice:\n  data_dir: \"{data_dir}\"\n  pipelines:\n    traces:\n      receivers: [generations]\n      processors: [hierarchy, namespace, privacy]\n      exporters: [otlp/sink]\n"
        ),
        Pipeline::FanOut | Pipeline::FanOutRouted => {
            let routing = if pipeline == Pipeline::FanOutRouted {
                "    sampling_rate: 1\n    filter_rules:\n      groups:\n        - rules:\n            - {field: model, operator: exists}\n            - {field: total_cost, operator: not_equals, value: -1}\n            - {field: input, operator: not_contains, value: \"never in a prompt\"}\n"
            } else {
                ""
            };
            format!(
                "{generations}exporters:\n{}{}{}service:\n  pipelines:\n    traces:\n      receivers: [generations]\n      processors: [hierarchy, namespace, privacy]\n      exporters: [otlp/json, otlp/proto, otlp/private]\n",
                exporter("json", "/json", "json", routing),
                exporter("proto", "/proto", "proto", routing),
                exporter("private", "/private", "json", &format!("    privacy_mode: true\n{routing}")),
            )
        }
        Pipeline::PassThrough { proto } => format!(
            "receivers:\n  otlp:\n    endpoint: 127.0.0.1:{port}\nexporters:\n{}service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp/sink]\n",
            exporter("sink", "", if proto { "proto" } else { "json" }, "")
        ),
    }
}
