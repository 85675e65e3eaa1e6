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

mod metrics;
use metrics::OwnMetrics;

/// jemalloc instead of the system allocator: gencol allocates and frees many prompt- and
/// completion-sized strings per generation, which glibc malloc handled slowly.
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod health;

const DEFAULT_PIPELINE: &str = include_str!("default.yaml");
const DEFAULT_PIPELINE_NAME: &str = "<embedded default pipeline>";

#[derive(Parser)]
#[command(
    name = "gencol",
    version,
    about = "The generation collector: broadcast every LLM generation as traces and events."
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace; default: the config's
    /// `service.telemetry.logs.level`, else info); RUST_LOG overrides it.
    #[arg(long, global = true)]
    log_level: Option<String>,
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
        /// Start only if every exporter's Test Connection passes (and, on a reload,
        /// take the new config only if its tests pass).
        #[arg(long)]
        test_connections: bool,
        /// Reload when a --config file changes (checked every second), as on SIGHUP.
        #[arg(long)]
        watch: bool,
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
    /// List every receiver, processor and exporter type, with the plugins' exporter
    /// types when a --config lists plugins.
    Components {
        /// Pipeline YAML whose `plugins:` to load; several merge in order.
        #[arg(long = "config", value_name = "FILE")]
        config: Vec<PathBuf>,
    },
    /// Print a JSON Schema.
    Schema {
        #[arg(value_enum)]
        what: SchemaKind,
    },
    /// Look into disk queues.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Per queue under DIR (a queue directory, or `<data_dir>/queues`): records not yet
    /// delivered, bytes on disk, age of the oldest record, corrupt records skipped.
    /// Reads only: safe while gencol runs.
    Inspect {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaKind {
    /// The generation record the `generations` receiver accepts.
    Generation,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level.as_deref());
    match cli.command {
        Command::Components { config } => components(&config),
        Command::Schema { what: SchemaKind::Generation } => {
            print_out(&format!("{}\n", gencol_model::SCHEMA_JSON.trim_end()));
            ExitCode::SUCCESS
        }
        Command::Validate { config } => validate(&config),
        Command::Queue { command: QueueCommand::Inspect { dir } } => inspect_queues(&dir),
        Command::Run { config, test_connections, watch } => {
            if watch && config.is_empty() {
                eprintln!("error: --watch needs --config FILE: the embedded default pipeline does not change");
                return ExitCode::FAILURE;
            }
            block_on(run(&config, test_connections, watch))
        }
        Command::TestConnection { config, exporters } => block_on(test_connection(&config, &exporters)),
    }
}

/// `gencol queue inspect DIR`: one block per queue found.
fn inspect_queues(dir: &Path) -> ExitCode {
    let queues = match gencol_queue::inspect(dir) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if queues.is_empty() {
        eprintln!("error: no disk queue under {} (a queue directory holds *.seg files)", dir.display());
        return ExitCode::FAILURE;
    }
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut out = String::new();
    for q in &queues {
        let age = match q.oldest_time_ms {
            Some(t) => humantime::format_duration(Duration::from_secs(now_ms.saturating_sub(t) / 1000)).to_string(),
            None => "-".to_owned(),
        };
        out.push_str(&format!(
            "{}\n  records: {}\n  bytes: {}\n  oldest record age: {age}\n  corrupt records skipped: {}\n",
            q.dir.display(),
            q.records,
            q.bytes,
            q.corrupt_records
        ));
        if q.torn_tails > 0 {
            out.push_str(&format!("  records cut short by a crash (never acknowledged): {}\n", q.torn_tails));
        }
        for f in &q.foreign_files {
            out.push_str(&format!("  not a queue file (ignored): {}\n", f.display()));
        }
    }
    print_out(&out);
    ExitCode::SUCCESS
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start the async runtime")
}

/// Runs `f`, then leaves without waiting for the blocking pool: a plugin call that never
/// returns (a hung plugin) holds a blocking thread, and dropping the runtime would wait
/// for it forever instead of exiting.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = runtime();
    let out = rt.block_on(f);
    rt.shutdown_background();
    out
}

/// gencol's own log: set up before the config is read (so its problems are logged), then
/// switched to the config's `service.telemetry.logs` once it is. `RUST_LOG`, then
/// `--log-level`, win over the config's level.
mod logging {
    use std::sync::OnceLock;

    use tracing_subscriber::layer::{Layered, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, reload};

    type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
    type FormatLayer = Box<dyn Layer<Filtered> + Send + Sync>;

    struct Handles {
        filter: reload::Handle<EnvFilter, Registry>,
        format: reload::Handle<FormatLayer, Filtered>,
        /// The level came from `RUST_LOG` or `--log-level`: the config's does not apply.
        level_fixed: bool,
    }

    static HANDLES: OnceLock<Handles> = OnceLock::new();

    fn format_layer(json: bool) -> FormatLayer {
        if json {
            Box::new(fmt::layer().json().with_writer(std::io::stderr).with_target(false))
        } else {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            Box::new(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).with_target(false))
        }
    }

    pub fn init(cli_level: Option<&str>) {
        let from_env = EnvFilter::try_from_default_env().ok();
        let level_fixed = from_env.is_some() || cli_level.is_some();
        let filter = from_env
            .or_else(|| cli_level.and_then(|l| EnvFilter::try_new(l).ok()))
            .unwrap_or_else(|| EnvFilter::new("info"));
        let (filter, filter_handle) = reload::Layer::new(filter);
        let (format, format_handle) = reload::Layer::new(format_layer(false));
        tracing_subscriber::registry().with(filter).with(format).init();
        let _ = HANDLES.set(Handles { filter: filter_handle, format: format_handle, level_fixed });
    }

    /// Applies `service.telemetry.logs` (values already checked by the config layout).
    pub fn apply(level: Option<&str>, format: Option<&str>) {
        let Some(handles) = HANDLES.get() else { return };
        if let Some(level) = level.filter(|_| !handles.level_fixed)
            && let Ok(filter) = EnvFilter::try_new(level)
        {
            let _ = handles.filter.reload(filter);
        }
        if format == Some("json") {
            let _ = handles.format.reload(format_layer(true));
        }
    }
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

/// Loads the config's `plugins:` into `registry` (so their exporter types are checked
/// like built-in ones), then checks the config against it.
fn check(registry: &mut Registry, config: &ServiceConfig) -> Result<ValidatedService, Diagnostics> {
    let mut found = gencol_plugin_host::load_plugins(registry, &config.plugins);
    if found.has_errors() {
        return Err(found);
    }
    match ValidatedService::validate(registry, config) {
        Ok(mut service) => {
            found.extend(std::mem::take(&mut service.warnings));
            service.warnings = found;
            Ok(service)
        }
        Err(errors) => {
            found.extend(errors);
            Err(found)
        }
    }
}

/// A checked config: the service to start, and the settings the binary applies itself.
struct Loaded {
    service: ValidatedService,
    /// Where the health check listens (if on).
    health_check: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
}

impl Loaded {
    fn apply_logging(&self) {
        logging::apply(self.log_level.as_deref(), self.log_format.as_deref());
    }
}

/// Loads, merges and checks the config, plugins included: every finding, or the config.
fn check_config(paths: &[PathBuf], registry: &mut Registry) -> Result<Loaded, Diagnostics> {
    let root: Result<Located<Node>, Diagnostics> = if paths.is_empty() {
        load_str(DEFAULT_PIPELINE_NAME, DEFAULT_PIPELINE, &process_env)
    } else {
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        load_files(&paths, &process_env)
    };
    root.and_then(|root| ServiceConfig::from_node(&root)).and_then(|c| {
        let health_check = c.health_check.as_ref().map(|e| e.value.clone());
        let (log_level, log_format) = (c.log_level.clone(), c.log_format.clone());
        check(registry, &c).map(|service| Loaded { service, health_check, log_level, log_format })
    })
}

/// [`check_config`], printing every finding; applies the config's log settings.
fn load(paths: &[PathBuf], registry: &mut Registry) -> Result<Loaded, ()> {
    let checked = check_config(paths, registry);
    if let Ok(loaded) = &checked {
        loaded.apply_logging();
    }
    match checked {
        Ok(loaded) => {
            print_diagnostics(&loaded.service.warnings);
            Ok(loaded)
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

fn components(paths: &[PathBuf]) -> ExitCode {
    let mut registry = registry();
    if !paths.is_empty() {
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let found = load_files(&paths, &process_env)
            .and_then(|root| ServiceConfig::from_node(&root))
            .map(|c| gencol_plugin_host::load_plugins(&mut registry, &c.plugins));
        let (Ok(found) | Err(found)) = &found;
        print_diagnostics(found);
        if found.has_errors() {
            return ExitCode::FAILURE;
        }
    }
    let mut out = String::new();
    for c in registry.components() {
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
    match load(paths, &mut registry()) {
        Ok(_) => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(()) => ExitCode::FAILURE,
    }
}

async fn run(paths: &[PathBuf], test_first: bool, watch: bool) -> ExitCode {
    let Ok(Loaded { service, health_check, .. }) = load(paths, &mut registry()) else { return ExitCode::FAILURE };
    // The health check listens first, so a probe learns why gencol is not ready yet.
    let health = health::Health::new("starting: opening the receivers");
    let stop_health = tokio_util::sync::CancellationToken::new();
    let _stop_health_on_exit = stop_health.clone().drop_guard();
    if let Some(endpoint) = &health_check
        && let Err(e) = health::serve(endpoint, health.clone(), stop_health.clone()).await
    {
        tracing::error!("cannot start: {e}");
        return ExitCode::FAILURE;
    }
    // Only what will run must pass: an exporter no pipeline uses never sends.
    let used: Vec<String> = service.used_exporters().iter().map(ToString::to_string).collect();
    if test_first {
        health.set(health::State::NotReady("starting: testing the connections to the destinations".into()));
        if !test_all(&service, &used).await {
            eprintln!("not starting: a Test Connection failed (fix the destination or its settings, then run again)");
            return ExitCode::FAILURE;
        }
        health.set(health::State::NotReady("starting: opening the receivers".into()));
    }
    let started_with = Started { health_check, metrics: service.metrics.clone() };
    let metrics = match OwnMetrics::start(&service.metrics).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut running = match service.start(&metrics.telemetry).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            metrics.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    health.set(health::State::Ready);
    tracing::info!(
        version = gencol_model::VERSION,
        "gencol is running; stop with Ctrl-C or SIGTERM, reload with SIGHUP"
    );
    let mut triggers = match reload::Triggers::new(paths, watch) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            running.shutdown().await;
            metrics.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            why = triggers.next() => {
                let reload = reload::Reload { paths, test_first, health: &health, telemetry: &metrics.telemetry, started_with: &started_with };
                reload.run(why, &mut running).await;
                triggers.loaded();
            }
        }
    }
    health.set(health::State::NotReady("draining: stopped accepting, delivering what was accepted".into()));
    tracing::info!("stopping: no new data accepted, draining exporters");
    running.shutdown().await;
    // After the drain, so the last scrape window and the final push hold the final counts.
    metrics.shutdown().await;
    ExitCode::SUCCESS
}

/// What only a restart changes: the health check's and the metrics' endpoints.
struct Started {
    health_check: Option<String>,
    metrics: gencol_config::MetricsConfig,
}

/// Reloading the config on SIGHUP or, with `--watch`, when a config file changes.
mod reload {
    use std::path::PathBuf;
    use std::time::Duration;

    use gencol_engine::{RunningService, Telemetry};

    use crate::health::{Health, State};
    use crate::{Started, check_config, registry, test_results};

    /// How often `--watch` reads the config files.
    const WATCH_EVERY: Duration = Duration::from_secs(1);

    /// What asks for a reload.
    pub struct Triggers {
        #[cfg(unix)]
        hangup: tokio::signal::unix::Signal,
        /// With `--watch`: the files and what they held when last loaded.
        watched: Option<Vec<(PathBuf, Option<Vec<u8>>)>>,
    }

    fn read_all(paths: &[PathBuf]) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        paths.iter().map(|p| (p.clone(), std::fs::read(p).ok())).collect()
    }

    impl Triggers {
        pub fn new(paths: &[PathBuf], watch: bool) -> Result<Triggers, String> {
            Ok(Triggers {
                #[cfg(unix)]
                hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?,
                watched: watch.then(|| read_all(paths)),
            })
        }

        /// Waits for the next reason to reload. The files are compared by content, not
        /// watched with inotify: an editor's rename-over or a Kubernetes ConfigMap's
        /// symlink swap replaces the file a watch was set on, and a read every second
        /// costs nothing next to the traffic.
        pub async fn next(&mut self) -> &'static str {
            let watch = async {
                let Some(watched) = &self.watched else { return std::future::pending().await };
                loop {
                    tokio::time::sleep(WATCH_EVERY).await;
                    let paths: Vec<PathBuf> = watched.iter().map(|(p, _)| p.clone()).collect();
                    if read_all(&paths) != *watched {
                        return "a config file changed";
                    }
                }
            };
            #[cfg(unix)]
            {
                tokio::select! {
                    _ = self.hangup.recv() => "SIGHUP",
                    why = watch => why,
                }
            }
            #[cfg(not(unix))]
            watch.await
        }

        /// The files as they are now count as loaded (whether or not the reload took).
        pub fn loaded(&mut self) {
            if let Some(watched) = &mut self.watched {
                let paths: Vec<PathBuf> = watched.iter().map(|(p, _)| p.clone()).collect();
                *watched = read_all(&paths);
            }
        }
    }

    pub struct Reload<'a> {
        pub paths: &'a [PathBuf],
        pub test_first: bool,
        pub health: &'a Health,
        pub telemetry: &'a Telemetry,
        pub started_with: &'a Started,
    }

    impl Reload<'_> {
        /// Loads, checks and (with `--test-connections`) tests the config, then swaps it
        /// into `running`. Whatever fails, the running config stays, and each error is
        /// logged as `FILE:LINE:COLUMN: message`.
        pub async fn run(&self, why: &str, running: &mut RunningService) {
            tracing::info!("reloading the configuration ({why})");
            let before = self.health.get();
            self.health.set(State::NotReady("reloading: checking the new configuration".into()));
            let loaded = match check_config(self.paths, &mut registry()) {
                Ok(loaded) => loaded,
                Err(diags) => {
                    let errors = diags.0.iter().filter(|d| d.is_error()).count();
                    for d in &diags.0 {
                        if d.is_error() {
                            tracing::error!("{d}");
                        } else {
                            tracing::warn!("{d}");
                        }
                    }
                    let why = format!("{errors} error{} in the configuration", if errors == 1 { "" } else { "s" });
                    return self.refused(why, before);
                }
            };
            for d in &loaded.service.warnings.0 {
                tracing::warn!("{d}");
            }
            if loaded.health_check != self.started_with.health_check
                || loaded.service.metrics != self.started_with.metrics
            {
                tracing::warn!(
                    "extensions.health_check and service.telemetry.metrics changed: they apply at the next restart"
                );
            }
            if self.test_first {
                self.health.set(State::NotReady("reloading: testing the connections to the destinations".into()));
                let used: Vec<String> = loaded.service.used_exporters().iter().map(ToString::to_string).collect();
                let failed: Vec<String> = test_results(&loaded.service, &used)
                    .await
                    .into_iter()
                    .filter_map(|(id, outcome)| outcome.err().map(|e| format!("exporter `{id}`: {e}")))
                    .collect();
                if !failed.is_empty() {
                    for f in &failed {
                        tracing::error!("reload: Test Connection FAILED: {f}");
                    }
                    self.telemetry.count_reload(false);
                    tracing::error!("reload refused: the previous configuration keeps running");
                    // Stays until a reload passes: the config the operator asked for is
                    // not the one running, and a probe should say so.
                    self.health.set(State::NotReady(format!(
                        "reload refused, the previous configuration keeps running: Test Connection failed for {}",
                        failed.join("; ")
                    )));
                    return;
                }
            }
            loaded.apply_logging();
            match running.reload(loaded.service).await {
                Ok(()) => {
                    self.telemetry.count_reload(true);
                    self.health.set(State::Ready);
                    tracing::info!("configuration reloaded");
                }
                Err(e) => self.refused(e, before),
            }
        }

        /// The reload did not happen: the health check says again what it said before.
        fn refused(&self, why: String, before: State) {
            self.telemetry.count_reload(false);
            self.health.set(before);
            tracing::error!("reload refused, the previous configuration keeps running: {why}");
        }
    }
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
    let Ok(Loaded { service, .. }) = load(paths, &mut registry()) else { return ExitCode::FAILURE };
    if test_all(&service, only).await { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Tests each (or each named) exporter once, without retries, bounded by its own
/// `timeout`; prints one line per exporter, in id order:
/// `ID: ok (200 OK)`, `ID: FAILED: <status> <body excerpt> (from <url>)` when the
/// destination answered, `ID: FAILED: <reason>` when it could not be reached in time.
/// Exporters are tested at once, so one dead destination does not make the others
/// wait. Returns whether every test passed.
async fn test_all(service: &ValidatedService, only: &[String]) -> bool {
    let mut all_ok = true;
    for (id, outcome) in test_results(service, only).await {
        match outcome {
            Ok(detail) => print_out(&format!("{id}: ok ({detail})\n")),
            Err(e) => {
                all_ok = false;
                print_out(&format!("{id}: FAILED: {e}\n"));
            }
        }
    }
    all_ok
}

/// The outcome of each exporter's test (see [`test_all`]), in id order; a name in
/// `only` that is no exporter comes first, as failed.
async fn test_results(service: &ValidatedService, only: &[String]) -> Vec<(String, Result<String, String>)> {
    let exporters = service.build_exporters();
    let mut results = Vec::new();
    for name in only {
        if !exporters.iter().any(|(id, _)| &id.to_string() == name) {
            let known: Vec<String> = exporters.iter().map(|(id, _)| id.to_string()).collect();
            let known = known.join(", ");
            results.push((name.clone(), Err(format!("no exporter `{name}` in the configuration (defined: {known})"))));
        }
    }
    let mut tests = Vec::new();
    for (id, built) in exporters {
        if !only.is_empty() && !only.contains(&id.to_string()) {
            continue;
        }
        let timeout = service.exporter_timeout(&id).unwrap_or(Duration::from_secs(10));
        let test = tokio::spawn(async move {
            let exporter = built?;
            match tokio::time::timeout(timeout, exporter.test_connection()).await {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?} (the exporter's timeout)")),
            }
        });
        tests.push((id, test));
    }
    for (id, test) in tests {
        let outcome = test.await.unwrap_or_else(|e| Err(format!("the test stopped unexpectedly: {e}")));
        results.push((id.to_string(), outcome));
    }
    // Receivers that connect out (`nats`), unless only some exporters were named.
    if only.is_empty() {
        for (id, test) in service.receiver_tests() {
            let outcome = match tokio::time::timeout(Duration::from_secs(10), test).await {
                Ok(outcome) => outcome,
                Err(_) => Err("no answer within 10s".to_owned()),
            };
            results.push((format!("{id} (receiver)"), outcome));
        }
    }
    results
}
