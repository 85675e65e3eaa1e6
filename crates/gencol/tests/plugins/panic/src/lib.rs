//! A plugin whose exporter panics: gencol must catch it, log and count it, retry the
//! batch per its retry policy, and keep every other exporter delivering.
//!
//! Settings: `panics` (how many exports panic before they start to succeed; default:
//! all of them) and `delivered_file` (where a successful export appends one line per
//! span, so a test can see that the retried batch was not lost).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use gencol_plugin_sdk::{ConfigError, ExportError, ExportTraceServiceRequest, ExporterContext, ExporterPlugin};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    panics: Option<u64>,
    #[serde(default)]
    delivered_file: Option<String>,
}

struct PanickingExporter {
    panics_left: AtomicU64,
    delivered_file: Option<PathBuf>,
}

impl ExporterPlugin for PanickingExporter {
    const TYPE: &'static str = "panicking";
    const ABOUT: &'static str = "test plugin: panics on export";

    fn validate(config: &serde_json::Value, ctx: &ExporterContext) -> Result<Self, Vec<ConfigError>> {
        let s: Settings = gencol_plugin_sdk::config::decode(config)?;
        Ok(PanickingExporter {
            panics_left: AtomicU64::new(s.panics.unwrap_or(u64::MAX)),
            delivered_file: s.delivered_file.map(|p| ctx.resolve_path(p)),
        })
    }

    fn export(&self, batch: &ExportTraceServiceRequest) -> Result<(), ExportError> {
        let left = self.panics_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_ok() {
            panic!("test plugin panics on purpose");
        }
        if let Some(path) = &self.delivered_file {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| ExportError::retryable(e.to_string()))?;
            for s in gencol_plugin_sdk::otlp::spans(batch) {
                writeln!(file, "{}", s.span.name).map_err(|e| ExportError::retryable(e.to_string()))?;
            }
        }
        Ok(())
    }

    fn test_connection(&self) -> Result<String, ExportError> {
        panic!("test plugin panics in test_connection too");
    }
}

gencol_plugin_sdk::export_plugin! {
    name: "panic-test",
    version: env!("CARGO_PKG_VERSION"),
    exporters: [PanickingExporter],
}
