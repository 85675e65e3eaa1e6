//! The top-level layout of a gencol config: `plugins`, `receivers`, `processors`,
//! `exporters`, `service.pipelines`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::diagnostic::{Diagnostic, Diagnostics, closest_name};
use crate::node::{Loc, Located, Node, decode};
use crate::units::{ByteSize, Duration};

/// A component id, `type` or `type/name` (`otlp/axiom`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    /// The component type (`otlp`), which picks the factory.
    pub kind: String,
    /// The part after `/` (`axiom`), so one type can be configured several times.
    pub name: Option<String>,
}

impl ComponentId {
    /// Parses `type[/name]`; the type is `[a-z][a-z0-9_]*`, the name is non-empty.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty component id: write `type` or `type/name`, e.g. `otlp/axiom`".to_owned());
        }
        let (kind, name) = match s.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (s, None),
        };
        let mut chars = kind.chars();
        let type_ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !type_ok {
            return Err(format!(
                "invalid component id `{s}`: the type `{kind}` must be lowercase letters, digits and `_`, \
                 starting with a letter"
            ));
        }
        match name {
            Some("") => Err(format!("invalid component id `{s}`: the name after `/` is empty")),
            Some(n) if n.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Err(format!("invalid component id `{s}`: the name after `/` must not contain spaces"))
            }
            _ => Ok(ComponentId { kind: kind.to_owned(), name: name.map(str::to_owned) }),
        }
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.kind, n),
            None => f.write_str(&self.kind),
        }
    }
}

/// The signal a pipeline carries; gencol has traces only (`traces` or `traces/NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Spans: each generation becomes one or more spans.
    Traces,
}

/// A pipeline id, `traces` or `traces/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineId {
    /// Always [`Signal::Traces`].
    pub signal: Signal,
    /// The part after `traces/`, if any.
    pub name: Option<String>,
}

/// Signals of the OpenTelemetry Collector that gencol does not carry; named so the
/// error says "traces only" instead of "invalid id".
const OTHER_SIGNALS: [&str; 3] = ["metrics", "logs", "profiles"];

impl PipelineId {
    /// Parses `traces` or `traces/NAME`; the error is a complete message.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (signal, name) = match s.split_once('/') {
            Some((signal, name)) => (signal, Some(name)),
            None => (s, None),
        };
        if signal != "traces" {
            if OTHER_SIGNALS.contains(&signal) {
                return Err(format!(
                    "pipeline `{s}`: gencol carries traces only; name the pipeline `traces` or `traces/NAME`"
                ));
            }
            let hint = match closest_name(signal, ["traces"]) {
                Some(_) => ", did you mean `traces`?",
                None => "",
            };
            return Err(format!("invalid pipeline id `{s}`{hint} (write `traces` or `traces/NAME`)"));
        }
        match name {
            Some("") => Err(format!("invalid pipeline id `{s}`: the name after `/` is empty")),
            _ => Ok(PipelineId { signal: Signal::Traces, name: name.map(str::to_owned) }),
        }
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "traces/{n}"),
            None => f.write_str("traces"),
        }
    }
}

/// One entry of `receivers`, `processors` or `exporters`: its id, and its settings
/// (`Node::Null` when written as `debug:` with nothing after it).
#[derive(Clone, Debug)]
pub struct ComponentEntry {
    /// The id as written, located at its key.
    pub id: Located<ComponentId>,
    /// The settings below the id, for the component's factory to decode.
    pub config: Located<Node>,
}

/// One entry of `service.pipelines`.
#[derive(Clone, Debug)]
pub struct PipelineEntry {
    /// The id as written, located at its key.
    pub id: Located<PipelineId>,
    /// Where generations come from; at least one.
    pub receivers: Vec<Located<ComponentId>>,
    /// Applied in order; may be empty.
    pub processors: Vec<Located<ComponentId>>,
    /// Where the result goes; at least one.
    pub exporters: Vec<Located<ComponentId>>,
}

/// The whole config, shape-checked but not yet checked against the known component
/// types (that is the engine's job, through its registry).
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// `plugins:` paths, as written (the engine resolves them against the file).
    pub plugins: Vec<Located<String>>,
    /// `receivers:` in document order.
    pub receivers: Vec<ComponentEntry>,
    /// `processors:` in document order.
    pub processors: Vec<ComponentEntry>,
    /// `exporters:` in document order.
    pub exporters: Vec<ComponentEntry>,
    /// `service.pipelines` in document order.
    pub pipelines: Vec<PipelineEntry>,
    /// `service.shutdown_timeout` (default 10s).
    pub shutdown_timeout: std::time::Duration,
    /// `service.telemetry.logs.level` (`trace`, `debug`, `info`, `warn`, `error`), if written.
    pub log_level: Option<String>,
    /// `service.telemetry.logs.format` (`text` or `json`), if written.
    pub log_format: Option<String>,
    /// Where the `health_check` extension listens, when `service.extensions` lists it.
    pub health_check: Option<Located<String>>,
    /// `service.telemetry.metrics`: gencol's own metrics; nothing is served or pushed
    /// unless it is written.
    pub metrics: MetricsConfig,
    /// `service.data_dir` (default `./gencol-data`; a relative path is taken from the
    /// working directory, as the Collector's storage does); disk queues and `hierarchy`
    /// state live under it.
    pub data_dir: std::path::PathBuf,
    /// `service.limits.max_inflight_memory` (default 256 MiB): the bytes that requests
    /// being received and decoded may hold at once, across every receiver.
    pub max_inflight_memory: u64,
    /// Where the root was written (for errors about a missing section).
    pub root: Loc,
}

impl ServiceConfig {
    /// Checks the layout: unknown top-level or `service` keys, ids that do not parse,
    /// a pipeline without receivers or exporters (empty pipelines), a pipeline key
    /// that is not `receivers`/`processors`/`exporters`, a component listed twice in
    /// one pipeline. Reports every problem at once. Whether the named components
    /// exist is checked by the engine.
    pub fn from_node(root: &Located<Node>) -> Result<Self, Diagnostics> {
        let mut check = Check::default();
        let mut config = ServiceConfig {
            plugins: Vec::new(),
            receivers: Vec::new(),
            processors: Vec::new(),
            exporters: Vec::new(),
            pipelines: Vec::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            log_level: None,
            log_format: None,
            health_check: None,
            metrics: MetricsConfig::default(),
            data_dir: std::path::PathBuf::from(DEFAULT_DATA_DIR),
            max_inflight_memory: DEFAULT_MAX_INFLIGHT_MEMORY,
            root: root.loc.clone(),
        };
        if !matches!(root.value, Node::Map(_) | Node::Null) {
            // Nothing below a non-map root can be checked; one message says it all.
            let message = format!("a gencol config must be a map, found {}", with_article(root.value.kind()));
            check.error(&root.loc, message);
            return Err(check.diags);
        }
        let mut saw_pipelines = false;
        let mut defined_extensions = Vec::new();
        for (key, value) in check.map_entries(root, "", "a gencol config") {
            match key.value.as_str() {
                "plugins" => config.plugins = check.plugins(value),
                "extensions" => defined_extensions = check.extensions(value),
                "receivers" => config.receivers = check.components("receivers", value),
                "processors" => config.processors = check.components("processors", value),
                "exporters" => config.exporters = check.components("exporters", value),
                "service" => saw_pipelines = check.service(value, &mut config),
                other => check.unknown_key(key, "", other, &TOP_KEYS),
            }
        }
        if !saw_pipelines {
            check.error(&root.loc, "no pipelines: add service.pipelines.traces");
        }
        config.health_check = check.enabled_extensions(root, defined_extensions);
        if check.diags.has_errors() { Err(check.diags) } else { Ok(config) }
    }
}

/// `service.shutdown_timeout` when none is written.
const DEFAULT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const TOP_KEYS: [&str; 6] = ["plugins", "extensions", "receivers", "processors", "exporters", "service"];
/// The extensions gencol has.
const EXTENSIONS: [&str; 1] = ["health_check"];
/// `extensions.health_check.endpoint` when none is written (the Collector's default port).
pub const DEFAULT_HEALTH_CHECK_ENDPOINT: &str = "127.0.0.1:13133";
/// `service.data_dir` when none is written (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./gencol-data";
const SERVICE_KEYS: [&str; 6] = ["pipelines", "shutdown_timeout", "telemetry", "data_dir", "extensions", "limits"];
/// `service.limits.max_inflight_memory` when none is written: room for a dozen bodies of
/// the default `max_request_body_size` (10 MiB) being decoded at once, far more than a
/// gateway's steady traffic needs, while a flood of large or stalled requests costs at
/// most this much.
pub const DEFAULT_MAX_INFLIGHT_MEMORY: u64 = 256 * 1024 * 1024;
const LIMITS_KEYS: [&str; 1] = ["max_inflight_memory"];
const PIPELINE_KEYS: [&str; 3] = ["receivers", "processors", "exporters"];
const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];
const LOG_FORMATS: [&str; 2] = ["text", "json"];

/// `service.telemetry.metrics.otlp.interval` when none is written: the Collector's own
/// default, frequent enough for dashboards, rare enough to cost nothing.
pub const DEFAULT_PUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Pushing more often than this only loads the backend; tests use 1s.
const MIN_PUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// `service.telemetry.metrics.prometheus.endpoint` when `prometheus:` is written
/// without one: the Collector's port for its own metrics, on loopback only.
pub const DEFAULT_PROMETHEUS_ENDPOINT: &str = "127.0.0.1:8888";

/// `service.telemetry.metrics`, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served (`host:port`), if anywhere.
    pub prometheus: Option<String>,
    /// Where metrics are pushed with OTLP/HTTP, if anywhere.
    pub otlp: Option<OtlpMetricsConfig>,
}

/// `service.telemetry.metrics.otlp`.
#[derive(Clone, PartialEq)]
pub struct OtlpMetricsConfig {
    /// The full URL metrics are posted to (`https://host/v1/metrics`).
    pub endpoint: String,
    /// Headers sent with every push; their values are secrets (API keys).
    pub headers: BTreeMap<String, String>,
    /// How often metrics are pushed.
    pub interval: std::time::Duration,
}

/// Header values are secrets: only their names are shown.
impl fmt::Debug for OtlpMetricsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpMetricsConfig")
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("interval", &self.interval)
            .finish()
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSettings {
    prometheus: Option<PrometheusSettings>,
    otlp: Option<OtlpSettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrometheusSettings {
    #[serde(default = "default_prometheus_endpoint")]
    endpoint: String,
}

fn default_prometheus_endpoint() -> String {
    DEFAULT_PROMETHEUS_ENDPOINT.to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtlpSettings {
    endpoint: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_push_interval")]
    interval: Duration,
}

fn default_push_interval() -> Duration {
    Duration(DEFAULT_PUSH_INTERVAL)
}

/// A listening address: `host:port` or `[v6]:port`; port 0 asks the OS for a free one
/// (tests). Used for every address gencol listens on.
pub fn check_host_port(endpoint: &str) -> Result<(), String> {
    let hint = "write host:port, e.g. 127.0.0.1:4318 or 0.0.0.0:4318";
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(format!("endpoint `{endpoint}` has no port: {hint}"));
    };
    if host.is_empty() {
        return Err(format!("endpoint `{endpoint}` has no host: {hint}"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("endpoint `{endpoint}`: put an IPv6 address in brackets, e.g. [::1]:4318"));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("endpoint `{endpoint}` has an invalid port `{port}`: {hint}"));
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host and no userinfo (a password there would
/// end up in logs; put credentials in `headers`).
fn check_metrics_url(url: &str) -> Result<(), String> {
    let hint = "write the full URL, e.g. https://otlp.example.com/v1/metrics";
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        // Not echoed: a URL can carry a key in its query or userinfo.
        let scheme = url.split_once("://").map_or("no scheme", |(scheme, _)| scheme);
        return Err(format!("the URL is not an http:// or https:// URL (scheme: {scheme}): {hint}"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("the URL holds a user name or password: put credentials in `headers` instead".to_owned());
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(format!("the URL has no host: {hint}"));
    }
    Ok(())
}

/// Collects every layout problem; each method checks one section and keeps going.
#[derive(Default)]
struct Check {
    diags: Diagnostics,
}

/// The entries of a map node; nothing (`section:`) counts as an empty map.
type Entries<'a> = &'a [(Located<String>, Located<Node>)];

impl Check {
    fn error(&mut self, loc: &Loc, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(loc, message));
    }

    /// `path: message`, or just `message` at the top level.
    fn at(path: &str, message: String) -> String {
        if path.is_empty() { message } else { format!("{path}: {message}") }
    }

    /// The entries of `node` when it is a map (or empty); reports anything else.
    fn map_entries<'a>(&mut self, node: &'a Located<Node>, path: &str, what: &str) -> Entries<'a> {
        match &node.value {
            Node::Map(entries) => entries,
            Node::Null => &[],
            other => {
                let message = format!("{what} must be a map, found {}", with_article(other.kind()));
                self.error(&node.loc, Self::at(path, message));
                &[]
            }
        }
    }

    fn unknown_key(&mut self, key: &Located<String>, path: &str, name: &str, known: &[&str]) {
        let hint = match closest_name(name, known.iter().copied()) {
            Some(best) => format!(", did you mean `{best}`?"),
            None => String::new(),
        };
        let message = format!("unknown key `{name}`{hint} (expected one of: {})", known.join(", "));
        self.error(&key.loc, Self::at(path, message));
    }

    /// `plugins:`, a list of paths.
    fn plugins(&mut self, node: &Located<Node>) -> Vec<Located<String>> {
        let items = match &node.value {
            Node::Seq(items) => items.as_slice(),
            Node::Null => &[],
            other => {
                let message = format!("plugins must be a list of paths, found {}", with_article(other.kind()));
                self.error(&node.loc, message);
                return Vec::new();
            }
        };
        let mut plugins = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Node::String(path) if !path.trim().is_empty() => {
                    plugins.push(Located { value: path.clone(), loc: item.loc.clone() });
                }
                Node::String(_) => self.error(&item.loc, format!("plugins[{i}]: empty plugin path")),
                other => {
                    let message = format!("plugins[{i}]: expected a plugin path, found {}", with_article(other.kind()));
                    self.error(&item.loc, message);
                }
            }
        }
        plugins
    }

    /// `receivers:`, `processors:` or `exporters:`, a map of id → settings.
    fn components(&mut self, section: &str, node: &Located<Node>) -> Vec<ComponentEntry> {
        let what = format!("`{section}` (component id → settings)");
        let mut entries = Vec::new();
        for (key, value) in self.map_entries(node, section, &what) {
            let id = ComponentId::parse(&key.value);
            if let Err(message) = &id {
                self.error(&key.loc, format!("{section}: {message}"));
            }
            let settings_ok = matches!(value.value, Node::Map(_) | Node::Null);
            if !settings_ok {
                let message = format!(
                    "{section}.{}: settings must be a map (or nothing for the defaults), found {}",
                    key.value,
                    with_article(value.value.kind())
                );
                self.error(&value.loc, message);
            }
            if let (Ok(id), true) = (id, settings_ok) {
                entries.push(ComponentEntry { id: Located { value: id, loc: key.loc.clone() }, config: value.clone() });
            }
        }
        entries
    }

    /// `service:`; returns whether `pipelines` was written.
    fn service(&mut self, node: &Located<Node>, config: &mut ServiceConfig) -> bool {
        let mut saw_pipelines = false;
        for (key, value) in self.map_entries(node, "service", "`service`") {
            match key.value.as_str() {
                "pipelines" => {
                    saw_pipelines = true;
                    config.pipelines = self.pipelines(value);
                }
                "shutdown_timeout" => match decode::<Duration>(value) {
                    Ok(timeout) => config.shutdown_timeout = timeout.0,
                    Err(mut d) => {
                        d.message = format!("service.shutdown_timeout: {}", d.message);
                        self.diags.push(d);
                    }
                },
                "telemetry" => self.telemetry(value, config),
                // Checked against `extensions:` once the whole file is read.
                "extensions" => {}
                "limits" => self.limits(value, config),
                "data_dir" => match &value.value {
                    Node::String(dir) if !dir.is_empty() => config.data_dir = dir.into(),
                    other => self.error(
                        &value.loc,
                        format!(
                            "service.data_dir: expected a directory path (a non-empty string), found {}",
                            with_article(other.kind())
                        ),
                    ),
                },
                other => self.unknown_key(key, "service", other, &SERVICE_KEYS),
            }
        }
        saw_pipelines
    }

    /// `service.limits:`, bounds of the whole process.
    fn limits(&mut self, node: &Located<Node>, config: &mut ServiceConfig) {
        for (key, value) in self.map_entries(node, "service.limits", "`limits`") {
            if key.value != "max_inflight_memory" {
                self.unknown_key(key, "service.limits", &key.value, &LIMITS_KEYS);
                continue;
            }
            match decode::<ByteSize>(value) {
                Ok(ByteSize(0)) => self.error(
                    &value.loc,
                    "service.limits.max_inflight_memory must be larger than 0 (e.g. 256MiB): requests hold their bodies in it",
                ),
                Ok(size) => config.max_inflight_memory = size.0,
                Err(mut d) => {
                    d.message = format!("service.limits.max_inflight_memory: {}", d.message);
                    self.diags.push(d);
                }
            }
        }
    }

    /// `extensions:`, a map of extension → settings; returns each one defined with the
    /// endpoint it listens on.
    fn extensions(&mut self, node: &Located<Node>) -> Vec<(Located<String>, Located<String>)> {
        let mut defined = Vec::new();
        for (key, value) in self.map_entries(node, "extensions", "`extensions` (extension → settings)") {
            if !EXTENSIONS.contains(&key.value.as_str()) {
                self.unknown_key(key, "extensions", &key.value, &EXTENSIONS);
                continue;
            }
            let path = format!("extensions.{}", key.value);
            let mut endpoint = Located { value: DEFAULT_HEALTH_CHECK_ENDPOINT.to_owned(), loc: key.loc.clone() };
            for (setting, v) in self.map_entries(value, &path, &format!("`{}` settings", key.value)) {
                if setting.value != "endpoint" {
                    self.unknown_key(setting, &path, &setting.value, &["endpoint"]);
                    continue;
                }
                match &v.value {
                    Node::String(e) => match check_host_port(e) {
                        Ok(()) => endpoint = Located { value: e.clone(), loc: v.loc.clone() },
                        Err(why) => self.error(&v.loc, format!("{path}.endpoint: {why}")),
                    },
                    other => self.error(
                        &v.loc,
                        format!("{path}.endpoint: expected host:port, found {}", with_article(other.kind())),
                    ),
                }
            }
            defined.push((key.clone(), endpoint));
        }
        defined
    }

    /// `service.extensions:` against `extensions:`: each one listed must be defined, and
    /// each one defined must be listed (an extension defined but not run is a mistake that
    /// would otherwise go unseen). Returns the health check's endpoint when it runs.
    fn enabled_extensions(
        &mut self,
        root: &Located<Node>,
        defined: Vec<(Located<String>, Located<String>)>,
    ) -> Option<Located<String>> {
        let listed_node = root.value.get("service").and_then(|s| s.value.get("extensions"));
        let mut listed: Vec<Located<String>> = Vec::new();
        if let Some(node) = listed_node {
            match &node.value {
                Node::Seq(items) => {
                    for item in items {
                        match item.value.as_str() {
                            Some(name) => listed.push(Located { value: name.to_owned(), loc: item.loc.clone() }),
                            None => self.error(
                                &item.loc,
                                format!(
                                    "service.extensions lists {}, expected an extension name (e.g. health_check)",
                                    with_article(item.value.kind())
                                ),
                            ),
                        }
                    }
                }
                Node::Null => {}
                other => self.error(
                    &node.loc,
                    format!(
                        "service.extensions must be a list of extension names (e.g. [health_check]), found {}",
                        with_article(other.kind())
                    ),
                ),
            }
        }
        for name in &listed {
            if !defined.iter().any(|(d, _)| d.value == name.value) {
                let hint = if EXTENSIONS.contains(&name.value.as_str()) {
                    format!("define it under `extensions:` (e.g. `extensions: {{{}: {{}}}}`)", name.value)
                } else {
                    match closest_name(&name.value, EXTENSIONS.iter().copied()) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => format!("gencol's extensions: {}", EXTENSIONS.join(", ")),
                    }
                };
                self.error(
                    &name.loc,
                    format!("service.extensions lists `{}`, which is not defined: {hint}", name.value),
                );
            }
        }
        let mut health_check = None;
        for (name, endpoint) in defined {
            if listed.iter().any(|l| l.value == name.value) {
                health_check = Some(endpoint);
            } else {
                self.error(
                    &name.loc,
                    format!(
                        "extension `{}` is defined but not enabled: add it to service.extensions (or remove it)",
                        name.value
                    ),
                );
            }
        }
        health_check
    }

    /// `service.telemetry:`: `logs.level`, `logs.format` and `metrics`.
    fn telemetry(&mut self, node: &Located<Node>, config: &mut ServiceConfig) {
        for (key, value) in self.map_entries(node, "service.telemetry", "`telemetry`") {
            match key.value.as_str() {
                "logs" => {
                    for (key, value) in self.map_entries(value, "service.telemetry.logs", "`logs`") {
                        match key.value.as_str() {
                            "level" => {
                                config.log_level =
                                    self.one_of(value, "service.telemetry.logs.level", "level", &LOG_LEVELS)
                            }
                            "format" => {
                                config.log_format =
                                    self.one_of(value, "service.telemetry.logs.format", "format", &LOG_FORMATS)
                            }
                            _ => self.unknown_key(key, "service.telemetry.logs", &key.value, &["level", "format"]),
                        }
                    }
                }
                "metrics" => config.metrics = self.metrics(value),
                _ => self.unknown_key(key, "service.telemetry", &key.value, &["logs", "metrics"]),
            }
        }
    }

    /// `service.telemetry.metrics:`: `prometheus.endpoint` and `otlp`.
    fn metrics(&mut self, node: &Located<Node>) -> MetricsConfig {
        const PATH: &str = "service.telemetry.metrics";
        let settings: MetricsSettings = match node.value {
            Node::Null => MetricsSettings::default(),
            _ => match decode(node) {
                Ok(s) => s,
                Err(mut d) => {
                    d.message = format!("{PATH}: {}", d.message);
                    self.diags.push(d);
                    return MetricsConfig::default();
                }
            },
        };
        let mut config = MetricsConfig::default();
        // `prometheus:` written with nothing after it serves on the default endpoint.
        let written = node.value.get("prometheus").is_some();
        let prometheus = settings
            .prometheus
            .or_else(|| written.then(|| PrometheusSettings { endpoint: default_prometheus_endpoint() }));
        if let Some(prometheus) = prometheus {
            let loc = node.value.get("prometheus").and_then(|p| p.value.get("endpoint")).map_or(&node.loc, |n| &n.loc);
            match check_host_port(&prometheus.endpoint) {
                Ok(()) => config.prometheus = Some(prometheus.endpoint),
                Err(message) => self.error(loc, format!("{PATH}.prometheus.endpoint: {message}")),
            }
        }
        if let Some(otlp) = settings.otlp {
            let otlp_node = node.value.get("otlp");
            let at = |key: &str| otlp_node.and_then(|o| o.value.get(key)).map_or(&node.loc, |n| &n.loc).clone();
            let mut ok = true;
            if let Err(message) = check_metrics_url(&otlp.endpoint) {
                self.error(&at("endpoint"), format!("{PATH}.otlp.endpoint: {message}"));
                ok = false;
            }
            if otlp.interval.0 < MIN_PUSH_INTERVAL {
                let message = format!(
                    "{PATH}.otlp.interval: `{}` is too short: push at most once a second (e.g. `30s`)",
                    otlp.interval
                );
                self.error(&at("interval"), message);
                ok = false;
            }
            if ok {
                config.otlp = Some(OtlpMetricsConfig {
                    endpoint: otlp.endpoint,
                    headers: otlp.headers,
                    interval: otlp.interval.0,
                });
            }
        }
        config
    }

    /// A string that must be one of `allowed`, or an error naming them.
    fn one_of(&mut self, value: &Located<Node>, path: &str, what: &str, allowed: &[&str]) -> Option<String> {
        match &value.value {
            Node::String(l) if allowed.contains(&l.as_str()) => Some(l.clone()),
            other => {
                let written = match other {
                    Node::String(l) => format!("`{l}`"),
                    other => with_article(other.kind()),
                };
                let hint = match other.as_str().and_then(|l| closest_name(l, allowed.iter().copied())) {
                    Some(best) => format!(", did you mean `{best}`?"),
                    None => String::new(),
                };
                let message =
                    format!("{path}: unknown {what} {written}{hint} (expected one of: {})", allowed.join(", "));
                self.error(&value.loc, message);
                None
            }
        }
    }

    /// `service.pipelines:`, a map of pipeline id → pipeline.
    fn pipelines(&mut self, node: &Located<Node>) -> Vec<PipelineEntry> {
        let entries = self.map_entries(node, "service.pipelines", "`pipelines` (pipeline id → pipeline)");
        if entries.is_empty() && matches!(node.value, Node::Map(_) | Node::Null) {
            self.error(&node.loc, "no pipelines: add service.pipelines.traces");
        }
        let mut pipelines = Vec::new();
        for (key, value) in entries {
            let id = PipelineId::parse(&key.value);
            if let Err(message) = &id {
                self.error(&key.loc, format!("service.pipelines: {message}"));
            }
            // Check the body even under a bad id: every problem in one run.
            let body = self.pipeline(key, value);
            if let (Ok(id), Some((receivers, processors, exporters))) = (id, body) {
                pipelines.push(PipelineEntry {
                    id: Located { value: id, loc: key.loc.clone() },
                    receivers,
                    processors,
                    exporters,
                });
            }
        }
        pipelines
    }

    /// One pipeline's lists; `None` when any of them is broken.
    #[allow(clippy::type_complexity)]
    fn pipeline(
        &mut self,
        key: &Located<String>,
        node: &Located<Node>,
    ) -> Option<(Vec<Located<ComponentId>>, Vec<Located<ComponentId>>, Vec<Located<ComponentId>>)> {
        let name = &key.value;
        let path = format!("service.pipelines.{name}");
        let before = self.diags.0.len();
        let mut lists: [Option<Vec<Located<ComponentId>>>; 3] = [None, None, None];
        let what = format!("pipeline `{name}`");
        for (list_key, value) in self.map_entries(node, &path, &what) {
            match PIPELINE_KEYS.iter().position(|k| *k == list_key.value) {
                Some(i) => lists[i] = Some(self.id_list(name, PIPELINE_KEYS[i], value)),
                None => self.unknown_key(list_key, &path, &list_key.value, &PIPELINE_KEYS),
            }
        }
        // A pipeline needs a source and a destination; processors are optional. A body
        // that is not a map was reported already; one message is enough.
        let body_is_map = matches!(node.value, Node::Map(_) | Node::Null);
        for i in [0, 2].into_iter().filter(|_| body_is_map) {
            let field = PIPELINE_KEYS[i];
            // Emptiness as written: an entry with a bad id was reported on its own.
            let written = node.value.get(field);
            let empty = written.is_none_or(|n| match &n.value {
                Node::Seq(items) => items.is_empty(),
                Node::Null => true,
                _ => false,
            });
            if empty {
                let loc = written.map_or(&key.loc, |n| &n.loc);
                self.error(loc, format!("pipeline `{name}` has no {field}: add at least one"));
            }
        }
        let [receivers, processors, exporters] = lists;
        if self.diags.0.len() > before {
            return None;
        }
        Some((receivers.unwrap_or_default(), processors.unwrap_or_default(), exporters.unwrap_or_default()))
    }

    /// One of a pipeline's `receivers`/`processors`/`exporters` lists.
    fn id_list(&mut self, pipeline: &str, field: &str, node: &Located<Node>) -> Vec<Located<ComponentId>> {
        let items = match &node.value {
            Node::Seq(items) => items.as_slice(),
            Node::Null => &[],
            other => {
                let example = other.as_str().map_or_else(|| "[otlp]".to_owned(), |s| format!("[{s}]"));
                let message = format!(
                    "pipeline `{pipeline}`: {field} must be a list of component ids (e.g. {example}), found {}",
                    with_article(other.kind())
                );
                self.error(&node.loc, message);
                return Vec::new();
            }
        };
        let mut ids: Vec<Located<ComponentId>> = Vec::new();
        for item in items {
            let Some(text) = item.value.as_str() else {
                let message = format!(
                    "pipeline `{pipeline}`: {field} lists {}, expected a component id",
                    with_article(item.value.kind())
                );
                self.error(&item.loc, message);
                continue;
            };
            match ComponentId::parse(text) {
                Ok(id) if ids.iter().any(|seen| seen.value == id) => {
                    let message = format!("pipeline `{pipeline}` lists `{id}` twice in {field}: remove one");
                    self.error(&item.loc, message);
                }
                Ok(id) => ids.push(Located { value: id, loc: item.loc.clone() }),
                Err(message) => self.error(&item.loc, format!("pipeline `{pipeline}`: {message}")),
            }
        }
        ids
    }
}

/// "a string", "an integer": for "found ..." in messages.
fn with_article(kind: &str) -> String {
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {kind}")
}
