//! The settings every listener has (`endpoint`, `auth`, `max_request_body_size`,
//! `read_timeout`, `read_idle_timeout`, `max_connections`), their checks, and the step
//! from a located YAML node to a component's settings with errors pointing at the key
//! to fix. Both receivers' `config.rs` build on it.

use std::time::Duration;

use gencol_config::{ByteSize, Diagnostic, Located, Node, decode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::http::{BearerAuth, BodyLimits, ConnectionLimits};
use crate::tls::{Alpn, ServerTls, TlsFiles, TlsSettings};

/// `max_request_body_size` when none is written (SPEC §10).
pub(crate) const DEFAULT_MAX_BODY: ByteSize = ByteSize(10 * 1024 * 1024);

/// `read_timeout` when none is written: long enough for a 10 MiB body over a slow
/// link (about 3 Mbit/s), short enough that a stalled upload lets go of its memory.
pub(crate) const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `read_idle_timeout` when none is written: no sender that is still sending pauses
/// this long between two parts of a body.
pub(crate) const DEFAULT_READ_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors `max_connections` leaves to the rest of gencol by default
/// (exporters' connections, disk queue files, plugins, the standard streams).
const RESERVED_FILE_DESCRIPTORS: u64 = 128;

/// The largest default `max_connections`: a gateway fleet keeps far fewer connections
/// open, and each costs a task and up to 64 KiB of buffers.
const MAX_DEFAULT_CONNECTIONS: u64 = 4096;

/// The smallest default `max_connections`, however low the open files limit.
const MIN_DEFAULT_CONNECTIONS: u64 = 16;

/// `max_connections` when none is written: half of what the open files limit
/// (`RLIMIT_NOFILE`, soft) leaves after [`RESERVED_FILE_DESCRIPTORS`], so the two
/// receivers of a pipeline together stay under it and refuse connections before
/// `accept` fails for want of a descriptor; between 16 and 4,096.
pub(crate) fn default_max_connections() -> usize {
    let limit = open_files_limit().unwrap_or(1024);
    let share = limit.saturating_sub(RESERVED_FILE_DESCRIPTORS) / 2;
    usize::try_from(share.clamp(MIN_DEFAULT_CONNECTIONS, MAX_DEFAULT_CONNECTIONS)).unwrap_or(4096)
}

/// The soft open files limit; `None` when unlimited or unknown.
#[cfg(unix)]
fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
fn open_files_limit() -> Option<u64> {
    None
}

/// serde defaults for the keys every listener has.
pub(crate) mod defaults {
    pub fn max_body() -> gencol_config::ByteSize {
        super::DEFAULT_MAX_BODY
    }
    pub fn read_timeout() -> gencol_config::Duration {
        gencol_config::Duration(super::DEFAULT_READ_TIMEOUT)
    }
    pub fn read_idle_timeout() -> gencol_config::Duration {
        gencol_config::Duration(super::DEFAULT_READ_IDLE_TIMEOUT)
    }
    pub fn max_connections() -> usize {
        super::default_max_connections()
    }
}

/// `auth:` as written in YAML.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSettings {
    pub bearer_tokens: Vec<String>,
}

/// Tokens are secrets: a settings dump in a log must not show them.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthSettings({} bearer tokens)", self.bearer_tokens.len())
    }
}

/// The listener keys as written; each receiver's settings struct has them beside its
/// own keys (serde's `flatten` would lose `deny_unknown_fields`).
#[derive(Clone, Debug)]
pub(crate) struct ListenerKeys {
    pub endpoint: String,
    pub auth: Option<AuthSettings>,
    pub max_request_body_size: ByteSize,
    pub read_timeout: Duration,
    pub read_idle_timeout: Duration,
    pub max_connections: usize,
}

/// The checked settings every listener has; both receivers' `config.rs` produce one.
#[derive(Clone, Debug)]
pub(crate) struct ServerSettings {
    pub endpoint: String,
    pub auth: Option<BearerAuth>,
    pub body: BodyLimits,
    pub connections: ConnectionLimits,
    /// `tls`, its files checked ([`ServerSettings::with_tls`]).
    pub tls: Option<TlsFiles>,
}

/// A settings problem and the YAML key it belongs to, so `configure` can point at
/// that key's line.
#[derive(Debug, PartialEq)]
pub(crate) struct SettingsError {
    pub key: &'static str,
    pub message: String,
}

impl SettingsError {
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        SettingsError { key, message: message.into() }
    }
}

impl ServerSettings {
    /// Checks what serde cannot (no I/O: the endpoint's host is resolved at bind).
    pub fn check(keys: ListenerKeys) -> Result<Self, SettingsError> {
        gencol_config::check_host_port(&keys.endpoint).map_err(|message| SettingsError::new("endpoint", message))?;
        let auth = match keys.auth {
            None => None,
            Some(a) => Some(BearerAuth::new(a.bearer_tokens).map_err(|message| SettingsError::new("auth", message))?),
        };
        if keys.max_request_body_size.0 == 0 {
            return Err(SettingsError::new("max_request_body_size", "max_request_body_size must be larger than 0"));
        }
        for (key, value) in [("read_timeout", keys.read_timeout), ("read_idle_timeout", keys.read_idle_timeout)] {
            if value.is_zero() {
                return Err(SettingsError::new(key, format!("{key} must be longer than 0 (e.g. 10s)")));
            }
        }
        if keys.max_connections == 0 {
            return Err(SettingsError::new("max_connections", "max_connections must be at least 1"));
        }
        // On a 32-bit target a limit above usize::MAX is the same as no limit there.
        let max_body = usize::try_from(keys.max_request_body_size.0).unwrap_or(usize::MAX);
        Ok(ServerSettings {
            endpoint: keys.endpoint,
            auth,
            body: BodyLimits { max_body, read_timeout: keys.read_timeout, read_idle_timeout: keys.read_idle_timeout },
            connections: ConnectionLimits { max_connections: keys.max_connections, header_timeout: keys.read_timeout },
            tls: None,
        })
    }

    /// Adds `tls`, reading its files (relative to the config file's folder) to check them.
    pub fn with_tls(mut self, tls: Option<TlsSettings>, base_dir: &std::path::Path) -> Result<Self, SettingsError> {
        self.tls = tls.map(|t| t.check(base_dir)).transpose()?;
        Ok(self)
    }

    /// Starts watching the `tls` files, for a listener that speaks `alpn`.
    pub fn start_tls(
        &self,
        alpn: Alpn,
        receiver: &str,
        shutdown: &gencol_engine::CancellationToken,
    ) -> Result<Option<ServerTls>, crate::http::ReceiverError> {
        let Some(files) = &self.tls else { return Ok(None) };
        ServerTls::start(files, alpn, self.connections.header_timeout, receiver, shutdown.clone())
            .map(Some)
            .map_err(|e| crate::http::ReceiverError::Tls { endpoint: self.endpoint.clone(), message: e.to_string() })
    }
}

/// A count of items one request may hold (`max_spans_per_request`,
/// `max_records_per_request`): at least one.
pub(crate) fn check_max_items(key: &'static str, value: usize) -> Result<usize, SettingsError> {
    if value == 0 {
        return Err(SettingsError::new(key, format!("{key} must be at least 1")));
    }
    Ok(value)
}

/// Decodes a component's settings. A component written with nothing after it
/// (`generations:`) arrives as null and means "all defaults".
pub(crate) fn decode_settings<T: DeserializeOwned>(config: &Located<Node>) -> Result<T, Vec<Diagnostic>> {
    let result = match config.value {
        Node::Null => decode(&Located { value: Node::Map(Vec::new()), loc: config.loc.clone() }),
        _ => decode(config),
    };
    result.map_err(|d| vec![d])
}

/// Turns a check failure into a diagnostic at the offending key's value, or at the
/// component when the key was not written (a default failed).
pub(crate) fn locate(config: &Located<Node>, e: SettingsError) -> Vec<Diagnostic> {
    let loc = match &config.value {
        Node::Map(_) => config.value.get(e.key).map_or(&config.loc, |n| &n.loc),
        _ => &config.loc,
    };
    vec![Diagnostic::error(loc, e.message)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(endpoint: &str) -> ListenerKeys {
        ListenerKeys {
            endpoint: endpoint.into(),
            auth: None,
            max_request_body_size: DEFAULT_MAX_BODY,
            read_timeout: DEFAULT_READ_TIMEOUT,
            read_idle_timeout: DEFAULT_READ_IDLE_TIMEOUT,
            max_connections: 100,
        }
    }

    #[test]
    fn settings_checks() {
        let ok = ServerSettings::check(keys("127.0.0.1:0")).expect("valid");
        assert_eq!(ok.body.max_body, 10 * 1024 * 1024);
        assert_eq!(ok.body.read_idle_timeout, Duration::from_secs(10));
        assert_eq!(ok.connections, ConnectionLimits { max_connections: 100, header_timeout: Duration::from_secs(30) });
        assert!(ServerSettings::check(keys("[::1]:4318")).is_ok());
        assert!(ServerSettings::check(keys("localhost:4318")).is_ok());
        for bad in ["127.0.0.1", ":4318", "127.0.0.1:http", "::1:4318", "127.0.0.1:70000"] {
            let e = ServerSettings::check(keys(bad)).expect_err(bad);
            assert_eq!(e.key, "endpoint", "{bad}");
        }
        let e = ServerSettings::check(ListenerKeys {
            auth: Some(AuthSettings { bearer_tokens: vec![] }),
            ..keys("127.0.0.1:1")
        })
        .expect_err("no tokens");
        assert_eq!(e.key, "auth");
        let e = ServerSettings::check(ListenerKeys {
            auth: Some(AuthSettings { bearer_tokens: vec!["a".into(), "".into()] }),
            ..keys("127.0.0.1:1")
        })
        .expect_err("empty token");
        assert!(e.message.contains("bearer_tokens[1]"), "{}", e.message);
        let e = ServerSettings::check(ListenerKeys { max_request_body_size: ByteSize(0), ..keys("127.0.0.1:1") })
            .expect_err("zero");
        assert_eq!(e.key, "max_request_body_size");
        let e = ServerSettings::check(ListenerKeys { read_idle_timeout: Duration::ZERO, ..keys("127.0.0.1:1") })
            .expect_err("zero");
        assert_eq!(e.key, "read_idle_timeout");
        let e = ServerSettings::check(ListenerKeys { max_connections: 0, ..keys("127.0.0.1:1") }).expect_err("zero");
        assert_eq!(e.key, "max_connections");
        assert_eq!(check_max_items("max_spans_per_request", 0).expect_err("zero").key, "max_spans_per_request");
    }

    #[test]
    fn the_default_connection_limit_follows_the_open_files_limit() {
        let n = default_max_connections();
        assert!((16..=4096).contains(&n), "{n}");
        if let Some(limit) = open_files_limit() {
            assert!((n as u64) * 2 + RESERVED_FILE_DESCRIPTORS <= limit.max(2 * 16 + RESERVED_FILE_DESCRIPTORS));
        }
    }
}
