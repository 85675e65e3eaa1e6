//! `otlp` exporter settings.

use std::collections::BTreeMap;

use gencol_config::{Diagnostic, Located, Node};
use serde::Deserialize;

use super::grpc::{OtlpGrpcSettings, check_metadata};
use crate::http::{OtlpHttpSettings, TlsSettings, check_headers, parse_http_url};

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Json,
    Proto,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// `protocol`: OTLP/HTTP (as OpenRouter sends) or OTLP/gRPC.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Grpc,
}

/// How the checked exporter sends.
#[derive(Clone, Debug)]
pub enum OtlpPlan {
    Http(OtlpHttpSettings),
    Grpc(OtlpGrpcSettings),
}

/// As written in YAML (SPEC §10).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterSettings {
    /// Full URL of the traces path, e.g. `https://api.axiom.co/v1/traces`; for
    /// `protocol: grpc`, `http(s)://host:port`.
    pub endpoint: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// Sent with every request. A header whose value is empty or null is not sent, so
    /// `${env:VAR:-}` makes a header optional.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// OTLP/HTTP only: gRPC is always protobuf.
    #[serde(default)]
    pub encoding: Option<Encoding>,
    #[serde(default)]
    pub compression: Compression,
    /// A private CA, a client certificate (mTLS), or `insecure_skip_verify` (tests only).
    #[serde(default)]
    pub tls: TlsSettings,
    /// Credentials gencol turns into the `Authorization` header.
    #[serde(default)]
    pub auth: Option<ExporterAuth>,
}

/// `auth:` of the `otlp` exporter.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExporterAuth {
    /// HTTP Basic from two keys (Langfuse: public key and secret key), so nobody has to
    /// base64 them by hand.
    pub basic: BasicAuth,
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

/// Both are credentials: never shown.
impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(***)")
    }
}

impl OtlpExporterSettings {
    /// Checks what serde cannot: the URL and the headers.
    pub fn check(self, config: &Located<Node>, base_dir: &std::path::Path) -> Result<OtlpPlan, Diagnostic> {
        let at = |key: &str| config.value.get(key).map(|n| n.loc.clone()).unwrap_or_else(|| config.loc.clone());
        let endpoint = match self.protocol {
            Protocol::Http => parse_endpoint(&self.endpoint),
            Protocol::Grpc => parse_grpc_endpoint(&self.endpoint),
        }
        .map_err(|m| Diagnostic::error(&at("endpoint"), m))?;
        if self.protocol == Protocol::Grpc && self.encoding == Some(Encoding::Json) {
            return Err(Diagnostic::error(
                &at("encoding"),
                "encoding: json is OTLP/HTTP only; OTLP/gRPC is always protobuf (leave `encoding` out)",
            ));
        }
        let mut headers: Vec<(String, String)> =
            self.headers.into_iter().filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v))).collect();
        if let Some(ExporterAuth { basic }) = self.auth {
            let auth_at = at("auth");
            for (key, value) in [("username", &basic.username), ("password", &basic.password)] {
                if value.is_empty() {
                    return Err(Diagnostic::error(
                        &auth_at,
                        format!("auth.basic.{key} is empty (is its environment variable set?)"),
                    ));
                }
            }
            if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                return Err(Diagnostic::error(
                    &auth_at,
                    "auth.basic and headers.Authorization both set the Authorization header: keep one",
                ));
            }
            use base64::Engine as _;
            let pair = format!("{}:{}", basic.username, basic.password);
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            headers.push(("Authorization".to_owned(), format!("Basic {encoded}")));
        }
        match self.protocol {
            Protocol::Http => check_headers(&headers).map(drop),
            Protocol::Grpc => check_metadata(&headers).map(drop),
        }
        .map_err(|m| Diagnostic::error(&at("headers"), m))?;
        let tls_at = |key: &str| {
            config.value.get("tls").and_then(|t| t.value.get(key)).map(|n| n.loc.clone()).unwrap_or_else(|| at("tls"))
        };
        let tls = self.tls.load(base_dir).map_err(|(key, m)| Diagnostic::error(&tls_at(key), m))?;
        if self.tls.insecure_skip_verify {
            tracing::warn!(
                endpoint = %crate::http::redacted_url(&endpoint),
                "tls.insecure_skip_verify: the destination's certificate is not checked; anyone on the path can read and change what is sent (use tls.ca_file instead)"
            );
        }
        let gzip = self.compression == Compression::Gzip;
        Ok(match self.protocol {
            Protocol::Http => OtlpPlan::Http(OtlpHttpSettings {
                endpoint,
                endpoint_key: "endpoint",
                headers,
                protobuf: self.encoding == Some(Encoding::Proto),
                gzip,
                tls,
            }),
            Protocol::Grpc => OtlpPlan::Grpc(OtlpGrpcSettings { endpoint, headers, gzip, tls }),
        })
    }
}

/// `http(s)://host:port` for OTLP/gRPC: the service path is gRPC's own, so none is written.
pub fn parse_grpc_endpoint(s: &str) -> Result<reqwest::Url, String> {
    let url = parse_http_url(
        "endpoint",
        s,
        "write the gRPC address with its scheme, e.g. http://127.0.0.1:4317 (https:// for TLS)",
        "send the credential in `headers` instead, e.g. `headers: {authorization: \"Bearer ${env:OTLP_TOKEN}\"}`",
    )?;
    if url.path() != "/" || url.query().is_some() {
        return Err(format!(
            "endpoint `{}` has a path or query: an OTLP/gRPC endpoint is only scheme, host and port (e.g. http://127.0.0.1:4317); the service path is gRPC's own",
            crate::http::redacted_url(&url)
        ));
    }
    Ok(url)
}

/// An `http(s)://host[:port]/path` URL, without userinfo.
pub fn parse_endpoint(s: &str) -> Result<reqwest::Url, String> {
    parse_http_url(
        "endpoint",
        s,
        "write the full traces URL, e.g. http://127.0.0.1:4318/v1/traces",
        "send the credential in `headers` instead, e.g. `headers: {Authorization: \"Basic ${env:OTLP_BASIC_AUTH}\"}` (OTLP_BASIC_AUTH holding base64 of user:password)",
    )
}
