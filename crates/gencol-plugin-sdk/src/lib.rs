//! Write a gencol exporter plugin in safe Rust.
//!
//! A plugin is a `cdylib` crate that implements [`ExporterPlugin`] for each exporter type
//! it offers and calls [`export_plugin!`] once. The macro writes the C functions of
//! [`gencol_plugin_abi`]: it catches every panic, decodes each batch into
//! [`ExportTraceServiceRequest`], turns results into the ABI's result codes and frees
//! memory on the side that allocated it. A plugin author writes no `unsafe`.
//!
//! ```no_run
//! use gencol_plugin_sdk::config::decode;
//! use gencol_plugin_sdk::{ConfigError, ExportError, ExportTraceServiceRequest, ExporterContext, ExporterPlugin};
//! use serde_json::Value;
//!
//! /// `stdout`: one line per span, model included, after an optional prefix.
//! struct StdoutExporter {
//!     prefix: String,
//! }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     #[serde(default)]
//!     prefix: String,
//! }
//!
//! impl ExporterPlugin for StdoutExporter {
//!     const TYPE: &'static str = "stdout";
//!     const ABOUT: &'static str = "one line per span on stdout";
//!
//!     fn validate(config: &Value, _ctx: &ExporterContext) -> Result<Self, Vec<ConfigError>> {
//!         let s: Settings = decode(config)?; // unknown keys, wrong types: reported at their line
//!         if s.prefix.len() > 20 {
//!             return Err(vec![ConfigError::new("prefix", "at most 20 characters")]);
//!         }
//!         Ok(StdoutExporter { prefix: s.prefix })
//!     }
//!
//!     fn export(&self, batch: &ExportTraceServiceRequest) -> Result<(), ExportError> {
//!         for s in gencol_plugin_sdk::otlp::spans(batch) {
//!             let attributes = gencol_plugin_sdk::otlp::attributes_to_json(&s.span.attributes);
//!             let model = attributes.get("gen_ai.request.model").unwrap_or(&Value::Null);
//!             println!("{}{} model={model}", self.prefix, s.span.name);
//!         }
//!         Ok(())
//!     }
//!
//!     fn test_connection(&self) -> Result<String, ExportError> {
//!         Ok("stdout is always there".into())
//!     }
//! }
//!
//! gencol_plugin_sdk::export_plugin! {
//!     name: "stdout",
//!     version: env!("CARGO_PKG_VERSION"),
//!     exporters: [StdoutExporter],
//! }
//! ```
//!
//! gencol gives a plugin exporter the same queue, retry, timeout and `privacy_mode` as a
//! built-in one; the plugin only sends a batch once and says whether a failure is
//! worth retrying. Calls come from gencol's worker threads, several at once, and may
//! block; a call still running when gencol's `timeout` is over is abandoned (the batch
//! is retried) but keeps its thread until it returns, so bound your own I/O too.
//!
//! A panic in your code is caught and reported to gencol, which logs and counts it and
//! retries the batch; this needs unwinding, so never build a plugin with
//! `panic = "abort"`.

pub mod config;
pub mod otlp;

#[doc(hidden)]
pub mod __private;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use gencol_plugin_abi as abi;
/// The whole `opentelemetry-proto` crate, for anything the short paths above leave out.
pub use opentelemetry_proto;
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
/// The OTLP types of a batch: `trace::Span`, `common::AnyValue`, `resource::Resource`...
pub use opentelemetry_proto::tonic::common::v1 as common;
pub use opentelemetry_proto::tonic::resource::v1 as resource;
pub use opentelemetry_proto::tonic::trace::v1 as trace;
pub use serde_json;

/// One exporter type a plugin offers (`webhook`, `jsonl`). gencol creates one value per
/// configured exporter (`webhook/prod`, `webhook/staging`) and shares it between its
/// sending threads, hence `Send + Sync` and `&self`.
pub trait ExporterPlugin: Sized + Send + Sync + 'static {
    /// The type as written under `exporters:` in YAML: lowercase letters, digits and
    /// `_`, starting with a letter. Must not clash with a built-in or another plugin.
    const TYPE: &'static str;
    /// One line for `gencol components`.
    const ABOUT: &'static str;

    /// Checks the exporter's settings (the JSON form of its YAML map, `null` when none
    /// were written, gencol's own `timeout`/`retry`/`queue`/`privacy_mode` already
    /// taken out) and builds the exporter. Runs for `gencol validate` too, so it must do
    /// no I/O: open files and connections on first use. Each [`ConfigError`] names the
    /// setting it is about, and gencol reports it at that line of the YAML;
    /// [`config::decode`] does this for a `serde` struct.
    fn validate(config: &serde_json::Value, ctx: &ExporterContext) -> Result<Self, Vec<ConfigError>>;

    /// Sends one batch, once. Return [`ExportError::Retryable`] when trying again may
    /// help (the destination is down, rate limited, timed out) and
    /// [`ExportError::Permanent`] when it cannot (the destination rejected the data).
    fn export(&self, batch: &ExportTraceServiceRequest) -> Result<(), ExportError>;

    /// `gencol test-connection`: sends something the destination can tell apart from
    /// real data (header `X-Test-Connection: true`, attribute
    /// `gencol.test_connection=true`) and describes the answer.
    fn test_connection(&self) -> Result<String, ExportError>;

    /// Called once when gencol stops using the exporter, after its last call returned:
    /// flush and close here.
    fn shutdown(&self) {}
}

/// Why a send failed, and whether sending again may help.
///
/// gencol masks the exporter's secrets in every message a plugin returns (values under
/// `headers`, settings named like `*key*`, `*token*`, `*secret*`, `*password*`, `*auth*`,
/// and URL userinfo and query values; in any case, JSON or percent escaping, or base64)
/// and only then cuts it to 2 KiB. So quote the destination's answer generously (the
/// webhook example reads 16 KiB) rather than cutting it yourself: a key the destination
/// echoes across your own cut would reach gencol too short to be recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportError {
    /// Try again later, after `retry_after` when the destination said so.
    Retryable {
        /// What happened, for gencol's log. Never put a secret here.
        message: String,
        /// The destination's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Sending the same batch again would fail the same way; gencol drops it and logs why.
    Permanent {
        /// What happened, for gencol's log. Never put a secret here.
        message: String,
    },
}

impl ExportError {
    /// A retryable failure with gencol's own backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        ExportError::Retryable { message: message.into(), retry_after: None }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        ExportError::Permanent { message: message.into() }
    }
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Retryable { message, .. } | ExportError::Permanent { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for ExportError {}

/// A problem with one setting. `path` names it as keys joined with `.` and list items
/// as `[i]` (`url`, `headers.Authorization`, `targets[2].url`), or is empty for the
/// whole map; gencol turns it into `FILE:LINE:COLUMN: path: message`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigError {
    /// The setting, e.g. `headers.Authorization`; empty for the exporter's whole map.
    pub path: String,
    /// What is wrong and how to fix it. Never include a secret value.
    pub message: String,
}

impl ConfigError {
    /// An error about the setting at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

/// What gencol tells an exporter about where it runs.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ExporterContext {
    /// The exporter's id as written in YAML (`webhook/prod`), for messages.
    pub id: String,
    /// The exporter's type (`webhook`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The directory of the config file that configured the exporter.
    pub base_dir: PathBuf,
}

impl ExporterContext {
    /// `path` as written in the config, resolved against the config file's directory
    /// when relative (as gencol resolves its own paths).
    pub fn resolve_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }
}

/// Exports a plugin: its name, its version and the [`ExporterPlugin`] types it offers.
/// Call it once, at the root of a `cdylib` crate (`plugins/webhook` and `plugins/jsonl`
/// are complete, tested examples):
///
/// ```text
/// gencol_plugin_sdk::export_plugin! {
///     name: "webhook",
///     version: env!("CARGO_PKG_VERSION"),
///     exporters: [WebhookExporter],
/// }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, exporters: [$($exporter:ty),+ $(,)?] $(,)?) => {
        #[doc(hidden)]
        static __GENCOL_PLUGIN: $crate::__private::Plugin = $crate::__private::Plugin {
            name: $name,
            version: $version,
            exporters: &[$($crate::__private::ExporterEntry::of::<$exporter>()),+],
        };

        /// The plugin ABI version this library was built for; gencol reads it first.
        #[unsafe(no_mangle)]
        pub extern "C" fn gencol_plugin_abi_version() -> u32 {
            $crate::abi::GENCOL_PLUGIN_ABI_VERSION
        }

        /// The plugin's name, version and exporter types, as JSON.
        #[unsafe(no_mangle)]
        pub extern "C" fn gencol_plugin_describe() -> $crate::abi::PluginBuffer {
            $crate::__private::describe(&__GENCOL_PLUGIN)
        }

        /// Frees a buffer this plugin returned.
        ///
        /// # Safety
        ///
        /// `buffer` must come from this plugin, unchanged, and be freed only once.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn gencol_plugin_free_buffer(buffer: $crate::abi::PluginBuffer) {
            // SAFETY: forwarded from this function's own contract.
            unsafe { $crate::__private::free_buffer(buffer) }
        }

        /// Validates an exporter's settings and creates an instance.
        ///
        /// # Safety
        ///
        /// The slices must be readable for the call; `instance` must be writable.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn gencol_plugin_create(
            kind: $crate::abi::PluginSlice,
            config: $crate::abi::PluginSlice,
            context: $crate::abi::PluginSlice,
            instance: *mut *mut ::std::ffi::c_void,
        ) -> $crate::abi::PluginResult {
            // SAFETY: forwarded from this function's own contract.
            unsafe { $crate::__private::create(&__GENCOL_PLUGIN, kind, config, context, instance) }
        }

        /// Sends one OTLP protobuf batch.
        ///
        /// # Safety
        ///
        /// `instance` must come from `gencol_plugin_create` and not be destroyed;
        /// `batch` must be readable for the call.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn gencol_plugin_export(
            instance: *mut ::std::ffi::c_void,
            batch: $crate::abi::PluginSlice,
        ) -> $crate::abi::PluginResult {
            // SAFETY: forwarded from this function's own contract.
            unsafe { $crate::__private::export(instance, batch) }
        }

        /// Sends a test payload.
        ///
        /// # Safety
        ///
        /// `instance` must come from `gencol_plugin_create` and not be destroyed.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn gencol_plugin_test_connection(
            instance: *mut ::std::ffi::c_void,
        ) -> $crate::abi::PluginResult {
            // SAFETY: forwarded from this function's own contract.
            unsafe { $crate::__private::test_connection(instance) }
        }

        /// Shuts an instance down and frees it.
        ///
        /// # Safety
        ///
        /// `instance` must come from `gencol_plugin_create`, have no call running, and
        /// not be used again.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn gencol_plugin_destroy(instance: *mut ::std::ffi::c_void) {
            // SAFETY: forwarded from this function's own contract.
            unsafe { $crate::__private::destroy(instance) }
        }
    };
}
