//! `gencol`, the generation collector: receives every LLM generation a gateway
//! makes and broadcasts it as traces and events to OTLP backends, Ramp, Raindrop and
//! plugins. This binary wires the built-in components into the engine and offers
//! the CLI of SPEC §8.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use gencol_config::{Diagnostics, Located, Node, ServiceConfig, load_files, load_str, process_env};
use gencol_engine::{Provenance, Registry, ValidatedService};

const DEFAULT_PIPELINE: &str = include_str!("default.yaml");
const DEFAULT_PIPELINE_NAME: &str = "<embedded default pipeline>";

#[derive(Parser)]
#[command(
    name = "gencol",
    version,
    about = "The generation collector: broadcast every LLM generation as traces and events."
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines (the embedded default when no --config is given).
    Run {
        /// Pipeline YAML; several merge in order.
        #[arg(long = "config", value_name = "FILE")]
        config: Vec<PathBuf>,
        /// Start only if every exporter's Test Connection passes.
        #[arg(long)]
        test_connections: bool,
    },
    /// Check a config: every error as FILE:LINE:COLUMN: message.
    Validate {
        #[arg(long = "config", value_name = "FILE", required = true)]
        config: Vec<PathBuf>,
    },
    /// Send a test span or event to each destination and report ok / FAILED.
    TestConnection {
        #[arg(long = "config", value_name = "FILE", required = true)]
        config: Vec<PathBuf>,
        /// Exporter ids to test (default: all).
        exporters: Vec<String>,
    },
    /// List every receiver, processor and exporter type.
    Components,
    /// Print a JSON Schema.
    Schema {
        #[arg(value_enum)]
        what: SchemaKind,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaKind {
    /// The generation record the `generations` receiver accepts.
    Generation,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.command {
        Command::Components => components(),
        Command::Schema { what: SchemaKind::Generation } => {
            print_out(&format!("{}\n", gencol_model::SCHEMA_JSON.trim_end()));
            ExitCode::SUCCESS
        }
        Command::Validate { config } => validate(&config),
        Command::Run { config, test_connections } => runtime().block_on(run(&config, test_connections)),
        Command::TestConnection { config, exporters } => runtime().block_on(test_connection(&config, &exporters)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start the async runtime")
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// Every built-in component type.
fn registry() -> Registry {
    let mut r = Registry::new();
    let built_in = || Provenance::BuiltIn;
    // Built-in names are distinct by construction; a clash is a bug to see at once.
    for f in gencol_receivers::factories() {
        r.add_receiver(f, built_in()).expect("built-in receiver types are unique");
    }
    for f in gencol_processors::factories() {
        r.add_processor(f, built_in()).expect("built-in processor types are unique");
    }
    for f in gencol_exporters::factories() {
        r.add_exporter(f, built_in()).expect("built-in exporter types are unique");
    }
    r
}

fn print_diagnostics(d: &Diagnostics) {
    for line in &d.0 {
        eprintln!("{line}");
    }
}

/// Loads, merges and checks the config; prints every finding.
fn load(paths: &[PathBuf], registry: &Registry) -> Result<ValidatedService, ()> {
    let root: Result<Located<Node>, Diagnostics> = if paths.is_empty() {
        load_str(DEFAULT_PIPELINE_NAME, DEFAULT_PIPELINE, &process_env)
    } else {
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        load_files(&paths, &process_env)
    };
    let checked =
        root.and_then(|root| ServiceConfig::from_node(&root)).and_then(|c| ValidatedService::validate(registry, &c));
    match checked {
        Ok(service) => {
            print_diagnostics(&service.warnings);
            Ok(service)
        }
        Err(diags) => {
            print_diagnostics(&diags);
            let errors = diags.0.iter().filter(|d| d.is_error()).count();
            eprintln!("{errors} error{} in the configuration", if errors == 1 { "" } else { "s" });
            Err(())
        }
    }
}

/// Writes to stdout; a closed pipe (`gencol schema generation | head`) is not an error.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn components() -> ExitCode {
    let mut out = String::new();
    for c in registry().components() {
        let origin = match c.provenance {
            Provenance::BuiltIn => "built-in".to_owned(),
            Provenance::Plugin { path, version } => format!("plugin {path} {version}"),
        };
        out.push_str(&format!("{:<10} {:<12} {:<9} {}\n", c.role, c.kind, origin, c.about));
    }
    print_out(&out);
    ExitCode::SUCCESS
}

fn validate(paths: &[PathBuf]) -> ExitCode {
    match load(paths, &registry()) {
        Ok(_) => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(()) => ExitCode::FAILURE,
    }
}

async fn run(paths: &[PathBuf], test_first: bool) -> ExitCode {
    let Ok(service) = load(paths, &registry()) else { return ExitCode::FAILURE };
    if test_first && !test_all(&service, &[]).await {
        eprintln!("not starting: a Test Connection failed (fix the destination or its settings, then run again)");
        return ExitCode::FAILURE;
    }
    let running = match service.start().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(version = gencol_model::VERSION, "gencol is running; stop with Ctrl-C or SIGTERM");
    wait_for_signal().await;
    tracing::info!("stopping: no new data accepted, draining exporters");
    running.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn test_connection(paths: &[PathBuf], only: &[String]) -> ExitCode {
    let Ok(service) = load(paths, &registry()) else { return ExitCode::FAILURE };
    if test_all(&service, only).await { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Tests each (or each named) exporter; prints `ID: ok` or `ID: FAILED: ...`.
async fn test_all(service: &ValidatedService, only: &[String]) -> bool {
    let exporters = service.build_exporters();
    let mut all_ok = true;
    for name in only {
        if !exporters.iter().any(|(id, _)| &id.to_string() == name) {
            println!("{name}: FAILED: no exporter `{name}` in the configuration");
            all_ok = false;
        }
    }
    for (id, built) in exporters {
        let id = id.to_string();
        if !only.is_empty() && !only.contains(&id) {
            continue;
        }
        let outcome = match built {
            Err(e) => Err(e),
            Ok(exporter) => match tokio::time::timeout(Duration::from_secs(15), exporter.test_connection()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("no answer within 15s".to_owned()),
            },
        };
        match outcome {
            Ok(detail) => println!("{id}: ok ({detail})"),
            Err(e) => {
                all_ok = false;
                println!("{id}: FAILED: {e}");
            }
        }
    }
    all_ok
}
