//! A plugin's exporter type seen through the engine's traits, so it gets the same
//! queue, retry, timeout and `privacy_mode` as a built-in one. Every call into the
//! plugin runs on tokio's blocking pool: a plugin that blocks or hangs never stalls the
//! async runtime, and the engine's `timeout` abandons a call that takes too long.
//!
//! A plugin's messages often quote its destination's answer, which may echo a
//! credential back. So every text a plugin returns is passed through a [`SecretMask`]
//! built from the exporter's settings (see [`settings_secrets`]) and only then cut to
//! [`MAX_MESSAGE_BYTES`], the same guarantee the built-in exporters give.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gencol_config::{ComponentId, Diagnostic, Located, Node};
use gencol_engine::secrets::{header_secrets, url_secrets};
use gencol_engine::{BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory, SecretMask};
use gencol_model::SpanItem;
use gencol_plugin_abi::result_kind;
use tokio::sync::{Semaphore, TryAcquireError};

use crate::library::{CreateError, Instance, Outcome, PluginLibrary};
use crate::settings::locate;

/// Calls running inside one plugin exporter at most, counting abandoned ones that have
/// not returned yet. An abandoned call keeps its thread until the plugin returns; this
/// bound keeps a hanging plugin from taking every thread of tokio's blocking pool (which
/// DNS lookups and file I/O of the other exporters need too).
const MAX_CALLS_IN_FLIGHT: usize = 4;

/// How often the "calls still running" warning may repeat for one exporter.
const BUSY_WARNING_EVERY: Duration = Duration::from_secs(30);

/// Most bytes of a plugin's message that reach a log line or `test-connection`'s
/// output, cut after the secrets in it were masked.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// Setting names whose string values are taken for credentials (case-insensitive, any
/// part of the name: `api_key`, `writeKey`, `access_token`, `password`...).
const SECRET_SETTING_WORDS: [&str; 8] = ["key", "token", "secret", "pass", "auth", "credential", "signature", "cookie"];

/// What to mask in a plugin's messages, from its settings (as JSON): every string under
/// a `headers` map or under a setting whose name says credential (with the credential
/// alone of `Bearer ...` and the decoded `user:password` of `Basic ...`), and the
/// userinfo and query values of every URL. gencol cannot know a plugin's settings, so
/// it errs towards masking: a masked word in an error costs little, a shown key a lot.
pub fn settings_secrets(settings: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, secret: bool, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(s) => {
                if secret {
                    out.extend(header_secrets(s));
                }
                if s.contains("://") {
                    out.extend(url_secrets(s));
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, secret, out)),
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    let name = key.to_ascii_lowercase();
                    let credential =
                        secret || name == "headers" || SECRET_SETTING_WORDS.iter().any(|word| name.contains(word));
                    walk(v, credential, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(settings, false, &mut out);
    out
}

/// The mask for settings kept as JSON bytes (the settings the plugin accepted).
fn mask_of(settings: &[u8]) -> SecretMask {
    match serde_json::from_slice::<serde_json::Value>(settings) {
        Ok(value) => SecretMask::new(settings_secrets(&value)),
        Err(_) => SecretMask::default(),
    }
}

/// Makes exporters of one type a plugin offers.
pub struct PluginExporterFactory {
    pub(crate) library: Arc<PluginLibrary>,
    pub(crate) kind: String,
    pub(crate) about: String,
}

/// The JSON context the plugin's `validate` gets (see the ABI's JSON formats).
fn context_json(ctx: &ComponentContext) -> Vec<u8> {
    // A relative base (the config given as `gencol.yaml`) is made absolute: the plugin
    // has no idea of gencol's working directory.
    let base: &Path = if ctx.base_dir.as_os_str().is_empty() { Path::new(".") } else { &ctx.base_dir };
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    serde_json::json!({"id": ctx.id.to_string(), "type": ctx.id.kind, "base_dir": base}).to_string().into_bytes()
}

impl ExporterFactory for PluginExporterFactory {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn about(&self) -> &str {
        &self.about
    }

    /// Hands the settings to the plugin's `validate` and destroys the instance it made:
    /// `gencol validate` must see the plugin's own errors, at their lines.
    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>> {
        let json = config.value.to_json();
        let mask = SecretMask::new(settings_secrets(&json));
        let settings = json.to_string().into_bytes();
        let context = context_json(ctx);
        match self.library.create(&self.kind, &settings, &context) {
            Ok(instance) => drop(instance),
            Err(CreateError::Invalid(errors)) => {
                return Err(errors
                    .iter()
                    .map(|(path, message)| {
                        let shown = setting_of(path, message);
                        let message = mask.excerpt(message, MAX_MESSAGE_BYTES);
                        let text = if shown.is_empty() { message.clone() } else { format!("{shown}: {message}") };
                        Diagnostic::error(locate(config, path, &message), text)
                    })
                    .collect());
            }
            Err(CreateError::Failed(message)) => {
                let message = mask.excerpt(&message, MAX_MESSAGE_BYTES);
                let text = format!("plugin `{}` refused the settings of `{}`: {message}", self.library.name, ctx.id);
                return Err(vec![Diagnostic::error(&config.loc, text)]);
            }
        }
        Ok(Box::new(PluginExporterConfig { library: self.library.clone(), kind: self.kind.clone(), settings, context }))
    }
}

/// The setting a message is about, as shown before it: for "unknown key `x`" that is
/// the map holding `x` (the message names `x` itself, and is reported at its key).
fn setting_of<'a>(path: &'a str, message: &str) -> &'a str {
    let unknown = message.strip_prefix("unknown key `").and_then(|rest| rest.split_once('`')).map(|(name, _)| name);
    match unknown.and_then(|name| path.strip_suffix(name)) {
        Some(parent) => parent.strip_suffix('.').unwrap_or(parent),
        None => path,
    }
}

/// Validated settings, kept as the JSON the plugin accepted.
struct PluginExporterConfig {
    library: Arc<PluginLibrary>,
    kind: String,
    settings: Vec<u8>,
    context: Vec<u8>,
}

impl ExporterConfig for PluginExporterConfig {
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Exporter>, String> {
        let mask = mask_of(&self.settings);
        let instance = match self.library.create(&self.kind, &self.settings, &self.context) {
            Ok(i) => i,
            Err(CreateError::Invalid(errors)) => {
                let list: Vec<String> = errors.into_iter().map(|(p, m)| format!("{p}: {m}")).collect();
                let list = mask.excerpt(&list.join("; "), MAX_MESSAGE_BYTES);
                return Err(format!("plugin `{}` refused its settings: {list}", self.library.name));
            }
            Err(CreateError::Failed(message)) => {
                return Err(format!("plugin `{}`: {}", self.library.name, mask.excerpt(&message, MAX_MESSAGE_BYTES)));
            }
        };
        Ok(Arc::new(PluginExporter {
            id: id.to_string(),
            plugin: self.library.name.clone(),
            mask,
            instance: Arc::new(instance),
            calls: Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT)),
            panics: AtomicU64::new(0),
            last_busy_warning: Mutex::new(None),
        }))
    }
}

/// A running plugin exporter.
struct PluginExporter {
    id: String,
    plugin: String,
    /// The exporter's secrets, masked in every message the plugin returns.
    mask: SecretMask,
    instance: Arc<Instance>,
    calls: Arc<Semaphore>,
    /// Panics caught so far, for the log.
    panics: AtomicU64,
    last_busy_warning: Mutex<Option<Instant>>,
}

impl PluginExporter {
    /// Runs `call` on the blocking pool once a slot is free. If the engine's timeout
    /// drops this future, the call goes on until the plugin returns, holding its slot.
    async fn call(
        &self,
        what: &'static str,
        call: impl FnOnce(&Instance) -> Outcome + Send + 'static,
    ) -> Result<String, ExportError> {
        let permit = match self.calls.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                self.warn_busy();
                self.calls
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ExportError::retryable("plugin exporter is shutting down"))?
            }
            Err(TryAcquireError::Closed) => return Err(ExportError::retryable("plugin exporter is shutting down")),
        };
        let instance = self.instance.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = call(&instance);
            drop(permit);
            outcome
        })
        .await;
        let outcome = joined.map_err(|e| ExportError::retryable(format!("plugin call did not complete: {e}")))?;
        self.classify(what, outcome)
    }

    fn warn_busy(&self) {
        let mut last = self.last_busy_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= BUSY_WARNING_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                exporter = %self.id,
                plugin = %self.plugin,
                "{MAX_CALLS_IN_FLIGHT} calls are still running inside the plugin (it does not return); new batches wait for one to finish"
            );
        }
    }

    /// The outcome as the engine sees it, the plugin's message masked and cut (an `OK`
    /// message is printed by `test-connection` too).
    fn classify(&self, what: &str, o: Outcome) -> Result<String, ExportError> {
        let message = self.mask.excerpt(&o.message, MAX_MESSAGE_BYTES);
        match o.kind {
            result_kind::OK => Ok(message),
            result_kind::RETRYABLE => Err(ExportError::Retryable { message, retry_after: o.retry_after }),
            result_kind::PERMANENT => Err(ExportError::permanent(message)),
            result_kind::PANICKED => {
                let total = self.panics.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    exporter = %self.id,
                    plugin = %self.plugin,
                    panics_total = total,
                    "plugin panicked in {what} (caught; gencol keeps running): {message}"
                );
                Err(ExportError::retryable(format!("plugin `{}` panicked in {what}: {message}", self.plugin)))
            }
            other => Err(ExportError::permanent(format!(
                "plugin `{}` returned an unknown result kind {other} from {what}",
                self.plugin
            ))),
        }
    }
}

impl Exporter for PluginExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        // Encoded here, so the plugin gets plain OTLP protobuf and the batch stays with
        // the engine (to retry it) whatever the plugin does.
        let bytes = gencol_model::otlp::encode_proto(&gencol_model::otlp::to_request(batch));
        Box::pin(async move { self.call("export", move |i| i.export(&bytes)).await.map(drop) })
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(self.call("test_connection", |i| i.test_connection()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_in_settings_are_found_wherever_a_plugin_keeps_them() {
        let settings = json!({
            "url": "https://hook.example.com/in?token=url-token-123&mode=fast",
            "method": "POST",
            "headers": {"X-Api-Key": "hdr-key-456", "Authorization": "Bearer bearer-789"},
            "writeKey": "write-key-abc",
            "targets": [{"password": "pw-in-a-list"}],
            "batch_size": 10,
            "note": "not a secret",
        });
        let secrets = settings_secrets(&settings);
        for want in ["url-token-123", "hdr-key-456", "bearer-789", "Bearer bearer-789", "write-key-abc", "pw-in-a-list"]
        {
            assert!(secrets.iter().any(|s| s == want), "{want} missing from {secrets:?}");
        }
        assert!(!secrets.iter().any(|s| s == "not a secret" || s == "POST"), "{secrets:?}");
    }

    #[test]
    fn a_plugin_message_is_masked_before_it_is_cut() {
        let settings = json!({"url": "https://hook.example.com/in", "headers": {"X-Api-Key": "hdr-key-456789"}});
        let mask = mask_of(settings.to_string().as_bytes());
        let long = format!("rejected: {}hdr-key-456789 and more", "x".repeat(MAX_MESSAGE_BYTES - 20));
        let shown = mask.excerpt(&long, MAX_MESSAGE_BYTES);
        assert!(!shown.contains("hdr-key") && shown.contains("x***"), "{shown}");
        assert_eq!(
            mask.excerpt("HTTP 401: {\"key\":\"HDR-KEY-456789\"}", MAX_MESSAGE_BYTES),
            "HTTP 401: {\"key\":\"***\"}"
        );
        assert!(mask_of(b"not json").is_empty());
    }
}
