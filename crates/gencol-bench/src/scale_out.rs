//! `gencol-bench scale-out`: the two-tier topology of docs/scale-out.md against one gencol
//! doing the same work, at one open-loop rate of generation records.
//!
//! Every process under test (nats-server, the gateway gencol, 1 to 3 processing gencols;
//! or the single gencol of the baseline) runs on the target core, the load generator and
//! the sink on the other, so the figures are CPU time per generation on each tier (what a
//! core of each costs), not a throughput that rises with instances: this machine has two
//! cores. The hop's added latency is the gateway's answer time (a 202 waits for
//! JetStream's publish acknowledgement) against the single gencol's (a 202 at once, memory
//! queue), p50 and p99 at the same rate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{self, LoadPlan, Pace, quantile_ms};
use crate::payload::{BodyKind, BodyPool};
use crate::process::{UnderTest, cpu_seconds_of, free_port};
use crate::sink::{Sink, count_spans};

/// What one configuration measured.
pub struct ScaleRun {
    pub label: String,
    pub accepted_per_s: f64,
    pub delivered: u64,
    pub accepted_total: u64,
    /// CPU µs per accepted generation: (tier, µs).
    pub cpu_us: Vec<(String, f64)>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub refused: u64,
}

pub struct ScaleSettings {
    pub gencol: PathBuf,
    pub nats_server: PathBuf,
    pub work: PathBuf,
    pub target_core: usize,
    pub rate: f64,
    pub warmup: Duration,
    pub measure: Duration,
    pub connections: usize,
}

const PARTITIONS: u32 = 12;

fn processing_yaml(nats: &str, health: u16, sink: SocketAddr) -> String {
    format!(
        "extensions:\n  health_check: {{endpoint: \"127.0.0.1:{health}\"}}\n\
receivers:\n  nats: {{url: \"{nats}\", partitions: {PARTITIONS}}}\n\
processors:\n  hierarchy: {{group_window: 5s}}\n  namespace: {{}}\n\
exporters:\n  otlp/sink: {{endpoint: \"http://{sink}/v1/traces\", encoding: proto}}\n\
service:\n  extensions: [health_check]\n  telemetry: {{logs: {{level: warn}}}}\n  pipelines:\n    traces: {{receivers: [nats], processors: [hierarchy, namespace], exporters: [otlp/sink]}}\n"
    )
}

fn gateway_yaml(nats: &str, port: u16) -> String {
    format!(
        "receivers:\n  generations: {{endpoint: \"127.0.0.1:{port}\"}}\n\
exporters:\n  nats: {{url: \"{nats}\", partitions: {PARTITIONS}}}\n\
service:\n  telemetry: {{logs: {{level: warn}}}}\n  pipelines:\n    traces: {{receivers: [generations], exporters: [nats]}}\n"
    )
}

fn single_yaml(port: u16, sink: SocketAddr) -> String {
    format!(
        "receivers:\n  generations: {{endpoint: \"127.0.0.1:{port}\"}}\n\
processors:\n  hierarchy: {{group_window: 5s}}\n  namespace: {{}}\n\
exporters:\n  otlp/sink: {{endpoint: \"http://{sink}/v1/traces\", encoding: proto}}\n\
service:\n  telemetry: {{logs: {{level: warn}}}}\n  pipelines:\n    traces: {{receivers: [generations], processors: [hierarchy, namespace], exporters: [otlp/sink]}}\n"
    )
}

/// Runs the baseline (`processing == 0`) or the two tiers with `processing` instances.
pub async fn run(s: &ScaleSettings, sink: &Sink, processing: usize) -> Result<ScaleRun, String> {
    let dir = s.work.join(format!("scale-out-{processing}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    sink.take();
    let mut tiers: Vec<(String, UnderTest)> = Vec::new();
    let stop_all = |tiers: Vec<(String, UnderTest)>| tiers.into_iter().for_each(|(_, t)| t.stop());
    let write = |name: &str, yaml: String| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    };
    let run_args = |config: &Path| vec!["run".to_owned(), "--config".to_owned(), config.display().to_string()];
    let front = free_port();
    let label;
    if processing == 0 {
        label = "one gencol (generations → hierarchy, namespace → sink)".to_owned();
        let config = write("single.yaml", single_yaml(front, sink.addr))?;
        let log = dir.join("single.log");
        let mut g = UnderTest::start(&s.gencol, &run_args(&config), s.target_core, &log)?;
        g.wait_listening(front, &log)?;
        tiers.push(("gencol".into(), g));
    } else {
        label = format!("gateway → JetStream → {processing} processing");
        let nats_port = free_port();
        let nats_url = format!("nats://127.0.0.1:{nats_port}");
        let store = dir.join("jetstream");
        let args: Vec<String> =
            ["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string(), "-sd", &store.display().to_string()]
                .iter()
                .map(|a| a.to_string())
                .collect();
        let log = dir.join("nats.log");
        let mut nats = UnderTest::start(&s.nats_server, &args, s.target_core, &log)?;
        nats.wait_listening(nats_port, &log)?;
        tiers.push(("nats-server".into(), nats));
        for i in 0..processing {
            let health = free_port();
            let config = write(&format!("processing-{i}.yaml"), processing_yaml(&nats_url, health, sink.addr))?;
            let log = dir.join(format!("processing-{i}.log"));
            let mut p = UnderTest::start(&s.gencol, &run_args(&config), s.target_core, &log)?;
            if let Err(e) = p.wait_listening(health, &log) {
                tiers.push((format!("processing {i}"), p));
                stop_all(tiers);
                return Err(e);
            }
            tiers.push((format!("processing {i}"), p));
        }
        let config = write("gateway.yaml", gateway_yaml(&nats_url, front))?;
        let log = dir.join("gateway.log");
        let mut g = UnderTest::start(&s.gencol, &run_args(&config), s.target_core, &log)?;
        if let Err(e) = g.wait_listening(front, &log) {
            stop_all(tiers);
            return Err(e);
        }
        tiers.push(("gateway".into(), g));
        // The processing instances create their consumers before the load starts.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let pool = Arc::new(BodyPool::new(BodyKind::Generations, 1, 0x7363_616c_6531));
    let start = Instant::now() + Duration::from_millis(300);
    let window_start = start + s.warmup;
    let window_end = window_start + s.measure;
    let pids: Vec<u32> = tiers.iter().map(|(_, t)| t.pid).collect();
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let a: Vec<Option<f64>> = pids.iter().map(|p| cpu_seconds_of(*p)).collect();
        tokio::time::sleep_until(window_end.into()).await;
        let b: Vec<Option<f64>> = pids.iter().map(|p| cpu_seconds_of(*p)).collect();
        (a, b)
    });
    let outcome = load::run(LoadPlan {
        addr: SocketAddr::from(([127, 0, 0, 1], front)),
        pool,
        connections: s.connections,
        pace: Pace::Open { per_second: s.rate },
        start,
        warmup: s.warmup,
        measure: s.measure,
    })
    .await;
    let (a, b) = sampler.await.map_err(|e| e.to_string())?;
    // Roots go out a group window (5 s) after their trace's last generation.
    let drain_until = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let quiet = sink.last_arrival().is_none_or(|t| t.elapsed() > Duration::from_secs(6));
        if quiet || Instant::now() > drain_until {
            break;
        }
    }
    stop_all(tiers);
    let mut delivered = 0u64;
    for d in sink.take() {
        delivered += count_spans(&d).map_err(|e| format!("sink: {e}"))? as u64;
    }
    let generations = outcome.records_ok.max(1) as f64;
    let mut cpu: Vec<(String, f64)> = Vec::new();
    let names: Vec<String> = if processing == 0 {
        vec!["gencol".into()]
    } else {
        let mut n = vec!["nats-server".to_owned()];
        n.extend((0..processing).map(|i| format!("processing {i}")));
        n.push("gateway".into());
        n
    };
    let mut processing_total = 0.0;
    for (i, name) in names.iter().enumerate() {
        let used = match (a[i], b[i]) {
            (Some(x), Some(y)) => y - x,
            _ => f64::NAN,
        };
        let us = used * 1e6 / generations;
        if name.starts_with("processing") {
            processing_total += us;
        } else {
            cpu.push((name.clone(), us));
        }
    }
    if processing > 0 {
        cpu.push(("processing tier".into(), processing_total));
    }
    let total: f64 = cpu.iter().map(|(_, us)| us).sum();
    cpu.push(("all".into(), total));
    let mut lat = outcome.latencies_ns;
    lat.sort_unstable();
    Ok(ScaleRun {
        label,
        accepted_per_s: outcome.records_ok as f64 / s.measure.as_secs_f64(),
        delivered,
        accepted_total: outcome.records_ok_total,
        cpu_us: cpu,
        p50_ms: quantile_ms(&lat, 0.5),
        p99_ms: quantile_ms(&lat, 0.99),
        refused: outcome.refused,
    })
}

/// The report, as markdown.
pub fn report(runs: &[ScaleRun], s: &ScaleSettings, info: &str) -> String {
    let mut out = String::from("# Scale-out: the NATS hop\n\n");
    out.push_str(&format!(
        "`gencol-bench scale-out` ({info}): generation records (batch 1) at {:.0}/s open loop for {:?} after {:?} of warm-up, \
         {} connections; every process under test on core {}, the generator and the sink on the other. \
         CPU µs per accepted generation, summed over the window; latency is the gateway's (or the single gencol's) \
         answer time.\n\n",
        s.rate, s.measure, s.warmup, s.connections, s.target_core
    ));
    out.push_str("| configuration | accepted/s | refused | spans at sink / accepted | p50 ms | p99 ms | CPU µs per generation |\n|---|---:|---:|---:|---:|---:|---|\n");
    for r in runs {
        let cpu: Vec<String> = r.cpu_us.iter().map(|(n, us)| format!("{n} {us:.0}")).collect();
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
            r.label,
            r.accepted_per_s,
            r.refused,
            r.delivered as f64 / r.accepted_total.max(1) as f64,
            r.p50_ms,
            r.p99_ms,
            cpu.join(", ")
        ));
    }
    if let (Some(base), Some(hop)) = (runs.iter().find(|r| r.label.starts_with("one gencol")), runs.get(1)) {
        out.push_str(&format!(
            "\nThe hop adds {:.2} ms at p50 and {:.2} ms at p99 to the answer (publish acknowledged by JetStream, file storage, one node).\n",
            hop.p50_ms - base.p50_ms,
            hop.p99_ms - base.p99_ms
        ));
    }
    out
}
