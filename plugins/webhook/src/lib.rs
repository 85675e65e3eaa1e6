//! `webhook`, an example gencol exporter plugin and OpenRouter Broadcast's Webhook
//! destination: each batch is sent as OTLP/JSON (what OpenRouter sends) with `POST` or
//! `PUT` to any URL, with the headers you configure. Test Connection sends an empty
//! OTLP payload (`{"resourceSpans":[]}`) with `X-Test-Connection: true`.
//!
//! ```yaml
//! plugins: [../target/release/libgencol_webhook.so]
//! exporters:
//!   webhook:
//!     url: https://example.com/hooks/llm
//!     method: POST                      # or PUT
//!     headers: {Authorization: "Bearer ${env:HOOK_TOKEN}"}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use gencol_plugin_sdk::config::decode;
use gencol_plugin_sdk::{ConfigError, ExportError, ExportTraceServiceRequest, ExporterContext, ExporterPlugin};
use serde::Deserialize;
use ureq::http::{HeaderName, HeaderValue, Uri};

/// How long one request may take in total. gencol's own `timeout` (default 10s) decides
/// when a batch is retried; this bound frees the thread of a call gencol gave up on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a response body is read into a message. gencol masks the exporter's
/// secrets in a plugin's message and only then cuts it to 2 KiB, so the body is read
/// well past that: a key the destination echoes across gencol's cut is still whole here.
const BODY_EXCERPT: u64 = 16 * 1024;
/// OTLP/JSON with no spans: what Test Connection sends.
const EMPTY_PAYLOAD: &[u8] = br#"{"resourceSpans":[]}"#;

/// `method:`, POST (the default) or PUT.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
enum Method {
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
}

/// The settings as written in YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: String,
    #[serde(default)]
    method: Method,
    /// A header whose value is empty or null is not sent, so `${env:VAR:-}` makes a
    /// header optional.
    #[serde(default)]
    headers: BTreeMap<String, Option<String>>,
}

/// One configured `webhook` exporter; the agent's connection pool is shared by all of
/// gencol's sending threads.
pub struct WebhookExporter {
    url: String,
    /// The URL as messages show it (see [`check_url`]).
    shown_url: String,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    agent: ureq::Agent,
}

/// Checks for an `http://` or `https://` URL with a host and no user or password, and
/// returns it as messages show it: without query, where webhook URLs often carry a token.
fn check_url(url: &str) -> Result<String, String> {
    let uri: Uri = url.parse().map_err(|_| "not a URL: write e.g. https://example.com/hook".to_owned())?;
    match (uri.scheme_str(), uri.host()) {
        (Some(scheme @ ("http" | "https")), Some(host)) if !host.is_empty() => {
            let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
            let shown = format!("{scheme}://{host}{port}{}", uri.path());
            if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                return Err(format!(
                    "`{shown}` must not contain a user name or password (`user:password@`): remove them and send the credential in `headers` instead, e.g. Authorization: \"Basic ${{env:HOOK_BASIC_AUTH}}\""
                ));
            }
            Ok(shown)
        }
        (Some(scheme), _) => Err(format!("must be an http:// or https:// URL with a host, not {scheme}://")),
        (None, _) => Err("must be an http:// or https:// URL with a host".to_owned()),
    }
}

impl WebhookExporter {
    /// Sends `body` once and classifies the answer like gencol's `otlp` exporter:
    /// 2xx is delivered; 408, 429, 500, 502, 503, 504 and network errors are worth
    /// retrying (honouring `Retry-After`); any other status is permanent. A redirect is
    /// not followed (it would carry the headers elsewhere, or turn the PUT into a GET):
    /// it is permanent, naming only where it pointed (scheme, host, port).
    fn send(&self, body: &[u8], test: bool) -> Result<String, ExportError> {
        let mut request = match self.method {
            Method::Post => self.agent.post(&self.url),
            Method::Put => self.agent.put(&self.url),
        };
        request = request.header("Content-Type", "application/json");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if test {
            request = request.header("X-Test-Connection", "true");
        }
        let mut response = request.send(body).map_err(|e| match e {
            // The request could not even be built: the same batch would fail the same way.
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                ExportError::permanent(format!("cannot send to {}: {e}", self.shown_url))
            }
            e => ExportError::retryable(format!("cannot reach {}: {e}", self.shown_url)),
        })?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let target = response.headers().get("location").and_then(|l| l.to_str().ok()).map(origin_of);
            let target = target.map_or_else(|| "redirect".to_owned(), |t| format!("redirect to {t}"));
            return Err(ExportError::permanent(format!(
                "{} answered HTTP {status} ({target} not followed: exporters do not follow redirects; set url to the final URL)",
                self.shown_url
            )));
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.body_mut().with_config().limit(BODY_EXCERPT).lossy_utf8(true).read_to_string();
        let text = text.unwrap_or_default();
        let answer =
            if text.trim().is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {}", text.trim()) };
        match status {
            200..=299 => Ok(answer),
            408 | 429 | 500 | 502 | 503 | 504 => {
                Err(ExportError::Retryable { message: format!("{} answered {answer}", self.shown_url), retry_after })
            }
            _ => Err(ExportError::permanent(format!("{} rejected the batch: {answer}", self.shown_url))),
        }
    }
}

/// `scheme://host[:port]` of a `Location`, or `a relative location` when it names no
/// host (then it points back at the same host, elsewhere on it).
fn origin_of(location: &str) -> String {
    match location.trim().parse::<Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => {
                let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
                format!("{scheme}://{host}{port}")
            }
            _ => "a relative location".to_owned(),
        },
        Err(_) => "an invalid location".to_owned(),
    }
}

impl ExporterPlugin for WebhookExporter {
    const TYPE: &'static str = "webhook";
    const ABOUT: &'static str = "OTLP/JSON POSTed or PUT to any HTTP endpoint (example plugin)";

    fn validate(config: &serde_json::Value, _ctx: &ExporterContext) -> Result<Self, Vec<ConfigError>> {
        let s: Settings = decode(config)?;
        let mut errors = Vec::new();
        let shown_url = check_url(&s.url).unwrap_or_else(|message| {
            errors.push(ConfigError::new("url", message));
            String::new()
        });
        let mut headers = Vec::new();
        for (name, value) in s.headers {
            let path = format!("headers.{name}");
            let Some(value) = value.filter(|v| !v.is_empty()) else { continue };
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                errors.push(ConfigError::new(path, format!("`{name}` is not a valid HTTP header name")));
                continue;
            };
            // The value is never quoted: it is usually a credential.
            match HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.push((header, v));
                }
                Err(_) => errors.push(ConfigError::new(
                    path,
                    "the value is not a valid HTTP header value (no line breaks or control characters)",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("gencol-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(WebhookExporter { url: s.url, shown_url, method: s.method, headers, agent })
    }

    fn export(&self, batch: &ExportTraceServiceRequest) -> Result<(), ExportError> {
        self.send(&gencol_plugin_sdk::otlp::encode_json(batch), false).map(drop)
    }

    fn test_connection(&self) -> Result<String, ExportError> {
        self.send(EMPTY_PAYLOAD, true)
    }
}

gencol_plugin_sdk::export_plugin! {
    name: "webhook",
    version: env!("CARGO_PKG_VERSION"),
    exporters: [WebhookExporter],
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(config: serde_json::Value) -> Vec<ConfigError> {
        match WebhookExporter::validate(&config, &ExporterContext::default()) {
            Ok(_) => Vec::new(),
            Err(e) => e,
        }
    }

    #[test]
    fn settings_are_checked_without_quoting_secrets() {
        assert!(
            errors(json!({"url": "https://example.com/hook", "method": "PUT", "headers": {"X-Key": "k"}})).is_empty()
        );
        assert!(errors(json!({"url": "http://127.0.0.1:9/x", "headers": {"Optional": null, "Empty": ""}})).is_empty());
        assert_eq!(errors(json!({"url": "ftp://example.com"}))[0].path, "url");
        assert_eq!(errors(json!({"url": "not a url"}))[0].path, "url");
        let e = errors(json!({"url": "ftp://example.com/x?token=hunter2"}));
        assert_eq!(e[0].message, "must be an http:// or https:// URL with a host, not ftp://");
        assert_eq!(
            check_url("https://example.com:8443/hook?token=hunter2"),
            Ok("https://example.com:8443/hook".into())
        );
        let userinfo = check_url("https://user:pw-hunter2@example.com:8443/hook?token=hunter2").unwrap_err();
        assert!(userinfo.starts_with("`https://example.com:8443/hook` must not contain a user name or password"));
        assert!(!userinfo.contains("hunter2") && userinfo.contains("`headers`"), "{userinfo}");
        assert_eq!(origin_of("http://u:p@127.0.0.1:9/x?token=t"), "http://127.0.0.1:9");
        assert_eq!(origin_of("/elsewhere?token=t"), "a relative location");
        assert_eq!(errors(json!({"url": "https://x.io", "method": "PATCH"}))[0].path, "method");
        let e = errors(json!({"url": "https://x.io", "headers": {"X-Key": "secret\nvalue", "Bad Name": "v"}}));
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["headers.Bad Name", "headers.X-Key"]);
        assert!(e.iter().all(|e| !e.message.contains("secret")), "{e:?}");
        assert_eq!(errors(json!(null))[0].message, "missing key `url`");
    }

    #[test]
    fn unreachable_destination_is_retryable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let e = WebhookExporter::validate(&json!({"url": url}), &ExporterContext::default()).ok().unwrap();
        assert!(matches!(e.test_connection(), Err(ExportError::Retryable { .. })));
    }
}
