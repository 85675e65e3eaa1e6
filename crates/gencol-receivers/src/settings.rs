//! The settings every listener has (`endpoint`, `auth`, `max_request_body_size`),
//! their checks, and the step from a located YAML node to a component's settings
//! with errors pointing at the key to fix. Both receivers' `config.rs` build on it.

use gencol_config::{ByteSize, Diagnostic, Located, Node, decode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::http::BearerAuth;

/// `max_request_body_size` when none is written (SPEC §10).
pub(crate) const DEFAULT_MAX_BODY: ByteSize = ByteSize(10 * 1024 * 1024);

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

/// The checked settings every listener has; both receivers' `config.rs` produce one.
#[derive(Clone, Debug)]
pub(crate) struct ServerSettings {
    pub endpoint: String,
    pub auth: Option<BearerAuth>,
    pub max_body: usize,
}

/// A settings problem and the YAML key it belongs to, so `configure` can point at
/// that key's line.
#[derive(Debug, PartialEq)]
pub(crate) struct SettingsError {
    pub key: &'static str,
    pub message: String,
}

impl ServerSettings {
    /// Checks what serde cannot (no I/O: the endpoint's host is resolved at bind).
    pub fn check(endpoint: String, auth: Option<AuthSettings>, max_body: ByteSize) -> Result<Self, SettingsError> {
        check_endpoint(&endpoint).map_err(|message| SettingsError { key: "endpoint", message })?;
        let auth = match auth {
            None => None,
            Some(a) => {
                Some(BearerAuth::new(a.bearer_tokens).map_err(|message| SettingsError { key: "auth", message })?)
            }
        };
        if max_body.0 == 0 {
            return Err(SettingsError {
                key: "max_request_body_size",
                message: "max_request_body_size must be larger than 0".into(),
            });
        }
        // On a 32-bit target a limit above usize::MAX is the same as no limit there.
        let max_body = usize::try_from(max_body.0).unwrap_or(usize::MAX);
        Ok(ServerSettings { endpoint, auth, max_body })
    }
}

/// `host:port`, `[v6]:port`; port 0 asks the OS for a free one (tests).
fn check_endpoint(endpoint: &str) -> Result<(), String> {
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

    #[test]
    fn settings_checks() {
        let ok = ServerSettings::check("127.0.0.1:0".into(), None, DEFAULT_MAX_BODY).expect("valid");
        assert_eq!(ok.max_body, 10 * 1024 * 1024);
        assert!(ServerSettings::check("[::1]:4318".into(), None, DEFAULT_MAX_BODY).is_ok());
        assert!(ServerSettings::check("localhost:4318".into(), None, DEFAULT_MAX_BODY).is_ok());
        for bad in ["127.0.0.1", ":4318", "127.0.0.1:http", "::1:4318", "127.0.0.1:70000"] {
            let e = ServerSettings::check(bad.into(), None, DEFAULT_MAX_BODY).expect_err(bad);
            assert_eq!(e.key, "endpoint", "{bad}");
        }
        let e =
            ServerSettings::check("127.0.0.1:1".into(), Some(AuthSettings { bearer_tokens: vec![] }), DEFAULT_MAX_BODY)
                .expect_err("no tokens");
        assert_eq!(e.key, "auth");
        let e = ServerSettings::check(
            "127.0.0.1:1".into(),
            Some(AuthSettings { bearer_tokens: vec!["a".into(), "".into()] }),
            DEFAULT_MAX_BODY,
        )
        .expect_err("empty token");
        assert!(e.message.contains("bearer_tokens[1]"), "{}", e.message);
        let e = ServerSettings::check("127.0.0.1:1".into(), None, ByteSize(0)).expect_err("zero");
        assert_eq!(e.key, "max_request_body_size");
    }
}
