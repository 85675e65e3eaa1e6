//! `gencol-bench`: what gencol costs beside a gateway, measured against the limit (a null
//! HTTP server that reads and discards the same bodies) and a peer (rotel, a Rust
//! OpenTelemetry collector), as ratios from one run on one machine, because shared
//! machines are too noisy for absolute figures to compare across runs.
//!
//! `gencol-bench all` builds the release `gencol`, installs rotel into a venv under
//! `target/bench/` if needed, runs every scenario, and writes `BENCHMARKS.md`,
//! `bench-results/runs.json` and `bench-results/throughput-latency.svg`.

mod load;
mod null_server;
mod payload;
mod process;
mod report;
mod scale_out;
mod scenario;
mod sink;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::load::Pace;
use crate::scenario::{Bench, PlanSettings, plan};

#[derive(Parser)]
#[command(
    name = "gencol-bench",
    about = "Benchmarks gencol against a null HTTP server and rotel, and writes BENCHMARKS.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every scenario and write the report.
    All(Box<AllArgs>),
    /// The null server (started by `all`, pinned like the other targets).
    NullServer {
        #[arg(long)]
        listen: String,
    },
    /// Two tiers on NATS JetStream (gateway → stream → 1, 2 and 3 processing gencols)
    /// against one gencol doing the same work; writes bench-results/scale-out.md.
    ScaleOut(ScaleOutArgs),
}

#[derive(clap::Args, Clone)]
struct ScaleOutArgs {
    /// Offered generations a second (open loop).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Measured time per configuration.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Processing instances to measure, one configuration each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    processing: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The gencol binary; default: the release build beside this program, built first.
    #[arg(long)]
    gencol: Option<PathBuf>,
    /// nats-server 2.11+; default: `target/test-venv/bin/nats-server` (scripts/test-venv.sh).
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Where bench-results/scale-out.md goes; default: the repository root.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    target_core: usize,
    #[arg(long, default_value_t = 1)]
    generator_core: usize,
}

#[derive(clap::Args, Clone)]
struct AllArgs {
    /// Measured time per run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load sent before measuring, per run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Runs per point; the report shows medians.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Keep-alive connections for closed-loop points.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Keep-alive connections for open-loop points (enough that a request rarely waits
    /// for a free one).
    #[arg(long, default_value_t = 64)]
    open_connections: usize,
    /// Offered loads of scenario C, generations a second.
    #[arg(long, value_delimiter = ',', default_value = "1000,2500,5000,10000,20000")]
    rates: Vec<f64>,
    /// Only these scenarios (A, B, C, D).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these batch sizes of the closed-loop points (1, 10, 100).
    #[arg(long, value_delimiter = ',')]
    batches: Vec<usize>,
    /// Only these targets (gencol, rotel, null).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// The gencol binary; default: the release build beside this program, built first.
    #[arg(long)]
    gencol: Option<PathBuf>,
    /// The rotel-agent binary; default: from a venv under target/bench (pip install rotel).
    #[arg(long)]
    rotel: Option<PathBuf>,
    /// Leave rotel out.
    #[arg(long)]
    no_rotel: bool,
    /// Where BENCHMARKS.md and bench-results/ go; default: the repository root.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Record a perf profile (DWARF call graphs) of every gencol run into this directory.
    /// Profiling costs the generator's core: use it to find hot spots, not for figures.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Core for the process under test.
    #[arg(long, default_value_t = 0)]
    target_core: usize,
    /// Core for the load generator and the sink.
    #[arg(long, default_value_t = 1)]
    generator_core: usize,
}

/// Set when this program re-ran itself pinned to the generator core.
const PINNED_ENV: &str = "GENCOL_BENCH_PINNED";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::NullServer { listen } => match null_server::serve(&listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("null server: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::ScaleOut(args) => match run_scale_out(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gencol-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::All(args) => match run_all(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gencol-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Re-runs this program pinned to `generator_core` (once), so the generator, the sink and
/// every thread they start stay off the target's core. Children are re-pinned by
/// `taskset -c <target core>`.
fn pin_self(generator_core: usize) -> Result<usize, String> {
    let cores = online_cpus();
    if std::env::var_os(PINNED_ENV).is_none() {
        if cores < 2 {
            return Err("needs two cores: one for the process under test, one for the load generator".into());
        }
        let me = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let err = Command::new("taskset")
            .arg("-c")
            .arg(generator_core.to_string())
            .arg(me)
            .args(std::env::args_os().skip(1))
            .env(PINNED_ENV, "1")
            .exec();
        return Err(format!("cannot re-run under taskset (is util-linux installed?): {err}"));
    }
    Ok(cores)
}

/// Where this program is, its cargo target directory, the bench's work directory (made)
/// and the repository.
struct Dirs {
    exe_dir: PathBuf,
    target_dir: PathBuf,
    work: PathBuf,
    repo: PathBuf,
}

fn dirs() -> Result<Dirs, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let exe_dir = exe.parent().ok_or("this program has no directory")?.to_path_buf();
    let target_dir = exe_dir.parent().ok_or("this program is not in a cargo target directory")?.to_path_buf();
    let work = target_dir.join("bench");
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    Ok(Dirs { exe_dir, target_dir, work, repo: Path::new(env!("CARGO_MANIFEST_DIR")).join("../..") })
}

fn run_scale_out(args: ScaleOutArgs) -> Result<(), String> {
    pin_self(args.generator_core)?;
    let Dirs { exe_dir, target_dir, work, repo } = dirs()?;
    let gencol = match &args.gencol {
        Some(p) => p.clone(),
        None => {
            build_gencol(&repo)?;
            exe_dir.join("gencol")
        }
    };
    let nats_server = args.nats_server.clone().unwrap_or_else(|| target_dir.join("test-venv/bin/nats-server"));
    if !nats_server.exists() {
        return Err(format!(
            "no nats-server at {} (run scripts/test-venv.sh, or pass --nats-server)",
            nats_server.display()
        ));
    }
    let settings = scale_out::ScaleSettings {
        gencol,
        nats_server,
        work,
        target_core: args.target_core,
        rate: args.rate,
        warmup: args.warmup,
        measure: args.duration,
        connections: args.connections,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let runs = runtime.block_on(async {
        let sink = sink::Sink::start().await.map_err(|e| format!("cannot start the sink: {e}"))?;
        let mut runs = Vec::new();
        for n in std::iter::once(0).chain(args.processing.iter().copied()) {
            let r = scale_out::run(&settings, &sink, n).await?;
            eprintln!(
                "{:<55} {:>7.0} gen/s p50 {:>6.2} ms p99 {:>7.2} ms cpu {:?}",
                r.label, r.accepted_per_s, r.p50_ms, r.p99_ms, r.cpu_us
            );
            runs.push(r);
        }
        Ok::<_, String>(runs)
    })?;
    let info = format!("commit {}, {}", commit(&repo), cpu_model());
    let text = scale_out::report(&runs, &settings, &info);
    let out = args.out.clone().unwrap_or(repo).join("bench-results");
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    std::fs::write(out.join("scale-out.md"), &text).map_err(|e| format!("cannot write scale-out.md: {e}"))?;
    println!("{text}");
    Ok(())
}

fn run_all(args: AllArgs) -> Result<(), String> {
    let cores = pin_self(args.generator_core)?;

    let Dirs { exe_dir, work, repo, .. } = dirs()?;
    let out = args.out.clone().unwrap_or(repo.clone());

    let gencol = match &args.gencol {
        Some(p) => p.clone(),
        None => {
            build_gencol(&repo)?;
            exe_dir.join("gencol")
        }
    };
    let rotel = if args.no_rotel {
        Err("left out (--no-rotel)".to_owned())
    } else {
        process::find_or_install_rotel(args.rotel.as_deref(), &work)
    };
    match &rotel {
        Ok(r) => eprintln!("peer: {} ({})", r.version, r.agent.display()),
        Err(e) => eprintln!("peer: rotel unavailable: {e}"),
    }

    let settings = PlanSettings {
        closed_connections: args.connections,
        open_connections: args.open_connections,
        rates: args.rates.clone(),
        rotel: rotel.is_ok(),
    };
    let mut points = plan(&settings, &args.only);
    if !args.targets.is_empty() {
        points.retain(|p| args.targets.iter().any(|t| p.target.label().starts_with(t.as_str())));
    }
    if !args.batches.is_empty() {
        points.retain(|p| !matches!(p.pace, Pace::Closed) || args.batches.contains(&p.batch));
    }
    let info = report::RunInfo {
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        commit: commit(&repo),
        cpu: cpu_model(),
        cores,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        load_before: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        target_core: args.target_core,
        generator_core: args.generator_core,
        warmup_s: args.warmup.as_secs_f64(),
        measure_s: args.duration.as_secs_f64(),
        repeats: args.repeats,
        closed_connections: args.connections,
        open_connections: args.open_connections,
        rotel: rotel.as_ref().map(|r| r.version.clone()).map_err(Clone::clone),
        command: "cargo run --release -p gencol-bench -- all".into(),
    };
    let per_run = args.warmup + args.duration + Duration::from_secs(1);
    eprintln!(
        "{} points × {} repeats, about {} min",
        points.len(),
        args.repeats,
        (per_run * (points.len() * args.repeats) as u32).as_secs().div_ceil(60)
    );

    // One thread: the generator and the sink share a core, and a single-threaded
    // runtime spends none of it on work stealing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let (runs, failures) = runtime.block_on(async {
        let sink = sink::Sink::start().await.map_err(|e| format!("cannot start the sink: {e}"))?;
        let mut bench = Bench::new(gencol, rotel.ok(), work, args.target_core, args.warmup, args.duration, sink);
        if let Some(dir) = &args.perf {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        bench.perf = args.perf.clone();
        bench.prepare(&points);
        let mut runs = Vec::new();
        let mut failures = Vec::new();
        // Repeats go round the whole plan, so a slow minute on a shared machine touches
        // one run of many points rather than every run of one point.
        for repeat in 0..args.repeats {
            for p in &points {
                match bench.run_point(p, repeat).await {
                    Ok(r) => {
                        eprintln!(
                            "{} {:<18} batch {:>3} {:>7} req/s {:>8.0} rec/s {:>6.1} µs/rec core {:>3.0}% gen {:>3.0}% p99 {:>6.2} ms rss {:>5.1} MiB exports/s {:.0} refused {} late {} errors {}",
                            r.scenario,
                            r.target,
                            r.batch,
                            format!("{:.0}", r.requests_per_s),
                            r.records_per_s,
                            r.cpu_us_per_record,
                            100.0 * r.core_busy,
                            100.0 * r.generator_busy,
                            r.p99_ms,
                            r.peak_rss_mib.unwrap_or(f64::NAN),
                            r.exports_per_s.unwrap_or(f64::NAN),
                        r.refused,
                        r.late,
                        r.errors,
                        );
                        runs.push(r);
                    }
                    Err(e) => {
                        let what = format!("{} {} batch {} (repeat {}): {e}", p.scenario, p.target.label(), p.batch, repeat + 1);
                        eprintln!("FAILED {what}");
                        failures.push(what);
                    }
                }
            }
        }
        Ok::<_, String>((runs, failures))
    })?;

    let medians = report::medians(&runs);
    let verdicts = report::verdicts(&medians);
    let results = out.join("bench-results");
    std::fs::create_dir_all(&results).map_err(|e| format!("cannot create {}: {e}", results.display()))?;
    let json = serde_json::json!({
        "info": info,
        "verdicts": verdicts,
        "medians": medians,
        "runs": runs,
        "failures": failures,
    });
    write(&results.join("runs.json"), &serde_json::to_vec_pretty(&json).map_err(|e| e.to_string())?)?;
    report::plot(&medians, &results.join("throughput-latency.svg"))?;
    let mut md = report::markdown(&info, &medians, &verdicts, &failures);
    // Before/after figures of hot-path changes are measured by hand (two binaries,
    // alternated) and kept in this file, so a new run keeps stating them.
    if let Ok(kept) = std::fs::read_to_string(results.join(BEFORE_AFTER)) {
        md.push('\n');
        md.push_str(&kept);
    }
    write(&out.join("BENCHMARKS.md"), md.as_bytes())?;
    for v in &verdicts {
        let holds = match v.holds {
            Some(true) => "holds",
            Some(false) => "MISSED",
            None => "not measured",
        };
        eprintln!("{holds}: {} — {}", v.target, v.figure);
    }
    eprintln!("wrote {}", out.join("BENCHMARKS.md").display());
    Ok(())
}

/// Under `bench-results/`: the hand-measured before/after section appended to BENCHMARKS.md.
const BEFORE_AFTER: &str = "before-after.md";

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `cargo build --release -p gencol`, so the one command measures the current code.
fn build_gencol(repo: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building gencol (cargo build --release -p gencol)");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "gencol"])
        .current_dir(repo)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("cargo build --release -p gencol failed: {status}")) }
}

fn commit(repo: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) if git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) => {
            format!("{rev} with uncommitted changes")
        }
        Some(rev) => rev,
        None => "unknown".into(),
    }
}

/// CPUs online (`/sys/devices/system/cpu/online`, e.g. `0-1`), whatever this process is
/// pinned to.
fn online_cpus() -> usize {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    online
        .trim()
        .split(',')
        .filter_map(|range| match range.split_once('-') {
            Some((a, b)) => Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?),
            None => range.parse::<usize>().ok().map(|_| 1),
        })
        .sum()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_else(|| "unknown CPU".into())
}
