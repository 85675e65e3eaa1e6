//! The YAML keys of the `nats` exporter and receiver, their checks, and the connection.
//!
//! ```yaml
//! urls: [nats://10.0.0.1:4222, nats://10.0.0.2:4222]   # or url: nats://127.0.0.1:4222
//! credentials_file: ./gencol.creds     # or token: ${env:NATS_TOKEN}
//! stream: GENCOL                       # created if absent
//! subject: gencol.spans                # messages go to gencol.spans.<partition>
//! partitions: 16
//! replicas: 1                          # 3 on a 3-node cluster
//! max_age: 24h
//! max_bytes: 10GiB
//! consumer: {name: gencol, pinned_ttl: 10s, ack_wait: 60s}   # receiver only
//! ```
//!
//! Secrets (the token, what the credentials file holds) never reach a log line or an
//! error: URLs with `user:password@` are refused at load, messages name URLs without them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gencol_config::{ByteSize, Duration as ConfigDuration};
use serde::Deserialize;

/// Where gencol connects when no `url` or `urls` is written.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// As written in YAML, for both the exporter and the receiver.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub credentials_file: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_stream")]
    pub stream: String,
    #[serde(default = "default_subject")]
    pub subject: String,
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    #[serde(default = "default_max_age")]
    pub max_age: ConfigDuration,
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// The receiver's consumers; refused on the exporter.
    #[serde(default)]
    pub consumer: Option<ConsumerSettings>,
}

/// `consumer:` of the receiver: the durable consumers (one per partition) it pulls from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Consumers are named `<name>-<partition>`.
    #[serde(default = "default_consumer")]
    pub name: String,
    /// How long a partition stays with an instance that stopped pulling before another
    /// takes it over (the failover bound, with the 2 s a pull waits). Longer than
    /// `ack_wait`, so that what the old owner held unacknowledged is due for redelivery
    /// before the new owner pulls, and comes to it first, ahead of newer messages.
    #[serde(default = "default_pinned_ttl")]
    pub pinned_ttl: ConfigDuration,
    /// How long a message may stay unacknowledged before JetStream delivers it again.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: ConfigDuration,
    /// Messages of one partition out at once, not yet acknowledged.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            name: default_consumer(),
            pinned_ttl: default_pinned_ttl(),
            ack_wait: default_ack_wait(),
            max_ack_pending: default_max_ack_pending(),
        }
    }
}

/// Not `Debug`-derived: the token is a secret.
impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("urls", &self.urls)
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("partitions", &self.partitions)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

fn default_stream() -> String {
    "GENCOL".into()
}
fn default_subject() -> String {
    "gencol.spans".into()
}
fn default_partitions() -> u32 {
    16
}
fn default_replicas() -> usize {
    1
}
fn default_max_age() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(24 * 3600))
}
fn default_consumer() -> String {
    "gencol".into()
}
fn default_pinned_ttl() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(15))
}
fn default_ack_wait() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_max_ack_pending() -> i64 {
    20_000
}

/// A settings problem and the key it belongs to.
#[derive(Debug, PartialEq)]
pub struct SettingsError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError { key, message: message.into() }
}

/// Checked settings: what to connect to, and the stream.
#[derive(Clone)]
pub struct NatsTarget {
    pub urls: Vec<String>,
    pub credentials_file: Option<PathBuf>,
    token: Option<String>,
    pub stream: String,
    pub subject: String,
    pub partitions: u32,
    pub replicas: usize,
    pub max_age: Duration,
    pub max_bytes: Option<u64>,
    pub consumer: ConsumerSettings,
}

impl std::fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTarget")
            .field("urls", &self.urls)
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// Which component the settings are for: only the receiver has `consumer`.
#[derive(Clone, Copy, PartialEq)]
pub enum Side {
    Exporter,
    Receiver,
}

impl NatsSettings {
    /// Checks what serde cannot; the credentials file must be readable (relative paths
    /// are read from `base_dir`, the config file's folder).
    pub fn check(self, side: Side, base_dir: &Path) -> Result<NatsTarget, SettingsError> {
        let mut urls = self.urls;
        if let Some(url) = self.url {
            if !urls.is_empty() {
                return Err(err("url", "write either `url` or `urls`, not both"));
            }
            urls.push(url);
        }
        if urls.is_empty() {
            urls.push(DEFAULT_URL.to_owned());
        }
        for url in &urls {
            check_url(url).map_err(|m| err(if urls.len() == 1 { "url" } else { "urls" }, m))?;
        }
        if self.credentials_file.is_some() && self.token.is_some() {
            return Err(err("token", "write either `credentials_file` or `token`, not both"));
        }
        if let Some(token) = &self.token
            && token.trim().is_empty()
        {
            return Err(err("token", "token is empty (is its environment variable set?)"));
        }
        let credentials_file = match self.credentials_file {
            None => None,
            Some(file) => {
                let path = base_dir.join(&file);
                std::fs::metadata(&path).map_err(|e| err("credentials_file", format!("cannot read {file}: {e}")))?;
                Some(path)
            }
        };
        check_name(&self.stream).map_err(|m| err("stream", format!("stream `{}`: {m}", self.stream)))?;
        check_subject(&self.subject).map_err(|m| err("subject", format!("subject `{}`: {m}", self.subject)))?;
        if !(1..=4096).contains(&self.partitions) {
            return Err(err("partitions", "partitions must be between 1 and 4096"));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(err("replicas", "replicas must be between 1 and 5 (JetStream's limit)"));
        }
        if self.max_age.0.is_zero() {
            return Err(err("max_age", "max_age must be longer than 0 (e.g. 24h)"));
        }
        let consumer = match (side, self.consumer) {
            (Side::Exporter, Some(_)) => {
                return Err(err("consumer", "`consumer` is a setting of the nats receiver, not of the exporter"));
            }
            (_, consumer) => consumer.unwrap_or_default(),
        };
        if side == Side::Receiver {
            check_name(&consumer.name)
                .map_err(|m| err("consumer", format!("consumer.name `{}`: {m}", consumer.name)))?;
            if consumer.pinned_ttl.0 < Duration::from_secs(1) {
                return Err(err("consumer", "consumer.pinned_ttl must be at least 1s"));
            }
            if consumer.ack_wait.0 < Duration::from_secs(3) {
                return Err(err("consumer", "consumer.ack_wait must be at least 3s"));
            }
            if consumer.pinned_ttl.0 <= consumer.ack_wait.0 {
                return Err(err(
                    "consumer",
                    format!(
                        "consumer.pinned_ttl ({}) must be longer than consumer.ack_wait ({}): a partition's new owner must get what the old one left unacknowledged before newer messages, or a trace's root could miss generations",
                        humantime::format_duration(consumer.pinned_ttl.0),
                        humantime::format_duration(consumer.ack_wait.0)
                    ),
                ));
            }
            if consumer.max_ack_pending < 1 {
                return Err(err("consumer", "consumer.max_ack_pending must be at least 1"));
            }
        }
        Ok(NatsTarget {
            urls,
            credentials_file,
            token: self.token,
            stream: self.stream,
            subject: self.subject,
            partitions: self.partitions,
            replicas: self.replicas,
            max_age: self.max_age.0,
            max_bytes: self.max_bytes.map(|b| b.0),
            consumer,
        })
    }
}

/// `nats://host:port` (or `tls://`), without credentials in it.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
        .ok_or_else(|| format!("`{url}` is not a NATS URL: write nats://host:port (tls://host:port for TLS)"))?;
    if rest.contains('@') {
        return Err(
            "a NATS URL with credentials in it is refused (they would show in logs): use `token` or `credentials_file`"
                .into(),
        );
    }
    gencol_config::check_host_port(rest.trim_end_matches('/')).map_err(|m| format!("`{url}`: {m}"))
}

/// A stream or consumer name: JetStream refuses spaces, `.`, `*`, `>`, path separators.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\')) {
        return Err(format!("must not contain `{c}`"));
    }
    Ok(())
}

/// A subject prefix: dot-separated tokens, no wildcards.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.split('.').any(|t| t.is_empty() || t.contains(['*', '>']) || t.contains(char::is_whitespace)) {
        return Err("write dot-separated tokens without wildcards or spaces, e.g. gencol.spans".into());
    }
    Ok(())
}

/// Decodes and checks a `nats` component's YAML; an error points at the key to fix.
pub fn configure(
    config: &gencol_config::Located<gencol_config::Node>,
    side: Side,
    base_dir: &Path,
) -> Result<NatsTarget, gencol_config::Diagnostic> {
    use gencol_config::{Located, Node, decode};
    let settings: NatsSettings = match config.value {
        // `nats:` with nothing after it: every default.
        Node::Null => decode(&Located { value: Node::Map(Vec::new()), loc: config.loc.clone() })?,
        _ => decode(config)?,
    };
    settings.check(side, base_dir).map_err(|e| {
        let loc = match &config.value {
            Node::Map(_) => config.value.get(e.key).map_or(&config.loc, |n| &n.loc),
            _ => &config.loc,
        };
        gencol_config::Diagnostic::error(loc, e.message)
    })
}

impl NatsTarget {
    /// The subject of one partition.
    pub fn partition_subject(&self, partition: u32) -> String {
        format!("{}.{partition}", self.subject)
    }

    /// The subjects the stream holds.
    pub fn stream_subjects(&self) -> String {
        format!("{}.*", self.subject)
    }

    /// The URLs, for messages.
    pub fn shown(&self) -> String {
        self.urls.join(",")
    }

    /// Connects (`name` shows in the server's connection list). Fails when no server can
    /// be reached within `timeout`; once connected, the client reconnects by itself.
    pub async fn connect(&self, name: &str, timeout: Duration) -> Result<async_nats::Client, String> {
        let mut options = async_nats::ConnectOptions::new().name(name).connection_timeout(timeout);
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &self.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| format!("credentials_file {}: {}", path.display(), e.kind()))?;
        }
        let servers: Vec<async_nats::ServerAddr> =
            self.urls.iter().map(|u| u.parse()).collect::<Result<_, _>>().map_err(|e| format!("NATS URL: {e}"))?;
        options.connect(servers).await.map_err(|e| format!("cannot reach NATS at {}: {}", self.shown(), e.kind()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> NatsSettings {
        serde_json::from_str(yaml).expect("settings")
    }

    #[test]
    fn defaults_and_checks() {
        let t = settings("{}").check(Side::Exporter, Path::new(".")).expect("defaults");
        assert_eq!(t.urls, [DEFAULT_URL]);
        assert_eq!((t.stream.as_str(), t.subject.as_str(), t.partitions), ("GENCOL", "gencol.spans", 16));
        assert_eq!(t.partition_subject(3), "gencol.spans.3");
        assert_eq!(t.stream_subjects(), "gencol.spans.*");

        let cases = [
            (r#"{"url": "http://x:1"}"#, "url"),
            (r#"{"url": "nats://u:p@x:4222"}"#, "url"),
            (r#"{"url": "nats://x:1", "urls": ["nats://y:1"]}"#, "url"),
            (r#"{"token": ""}"#, "token"),
            (r#"{"stream": "a.b"}"#, "stream"),
            (r#"{"subject": "a.*"}"#, "subject"),
            (r#"{"partitions": 0}"#, "partitions"),
            (r#"{"replicas": 7}"#, "replicas"),
            (r#"{"credentials_file": "missing.creds"}"#, "credentials_file"),
            (r#"{"consumer": {}}"#, "consumer"),
        ];
        for (yaml, key) in cases {
            let e = settings(yaml).check(Side::Exporter, Path::new(".")).err().unwrap_or_else(|| panic!("{yaml}"));
            assert_eq!(e.key, key, "{yaml}: {}", e.message);
        }
        let e = settings(r#"{"url": "nats://user:hunter2@x:4222"}"#).check(Side::Exporter, Path::new(".")).err();
        assert!(!e.expect("refused").message.contains("hunter2"));
        let r = settings(r#"{"consumer": {"pinned_ttl": "12s"}}"#).check(Side::Receiver, Path::new(".")).expect("ok");
        assert_eq!(r.consumer.pinned_ttl.0, Duration::from_secs(12));
        let e = settings(r#"{"consumer": {"pinned_ttl": "5s"}}"#).check(Side::Receiver, Path::new("."));
        assert!(e.expect_err("not over ack_wait").message.contains("longer than consumer.ack_wait"));
        assert_eq!(r.consumer.name, "gencol");
        let e = settings(r#"{"consumer": {"pinned_ttl": "10ms"}}"#).check(Side::Receiver, Path::new("."));
        assert_eq!(e.expect_err("too short").key, "consumer");
        let shown = format!("{:?}", settings(r#"{"token": "s3cret"}"#));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
