//! `jsonl`, an example gencol exporter plugin: appends one JSON object per span, one per
//! line, to a file, and rotates the file by size (`spans.jsonl` → `spans.jsonl.1` → ...).
//! Easy to `tail -f`, `grep` or `jq`, and a starting point for any file or queue
//! destination.
//!
//! ```yaml
//! plugins: [../target/release/libgencol_jsonl.so]
//! exporters:
//!   jsonl:
//!     path: spans.jsonl        # relative to the config file
//!     max_size: 100MiB         # rotate when the next line would pass this size
//!     max_files: 5             # rotated files kept besides the current one
//! ```

mod line;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use gencol_plugin_sdk::config::{ByteSize, decode};
use gencol_plugin_sdk::{ConfigError, ExportError, ExportTraceServiceRequest, ExporterContext, ExporterPlugin};
use serde::Deserialize;

/// The settings as written in YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The file to append to; relative paths are relative to the config file.
    path: String,
    #[serde(default = "default_max_size")]
    max_size: ByteSize,
    #[serde(default = "default_max_files")]
    max_files: u32,
}

fn default_max_size() -> ByteSize {
    ByteSize(100 * 1024 * 1024)
}

fn default_max_files() -> u32 {
    5
}

/// The open file and how much it holds, so rotation needs no `stat` per line.
struct Output {
    file: BufWriter<File>,
    size: u64,
}

/// One configured `jsonl` exporter. Several gencol threads may export at once; the
/// mutex keeps each batch's lines together and in order.
pub struct JsonlExporter {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    output: Mutex<Option<Output>>,
}

impl JsonlExporter {
    fn lock(&self) -> MutexGuard<'_, Option<Output>> {
        // A panic while writing leaves at worst a partial line; the file is reopened
        // below if the write failed, so the state is still usable.
        self.output.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens (creating) the file for appending, with its parent directories.
    fn open(&self) -> std::io::Result<Output> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let size = file.metadata()?.len();
        Ok(Output { file: BufWriter::new(file), size })
    }

    /// `path.N` for the N-th rotated file (1 is the newest).
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Shifts `path.1` → `path.2` ... (the oldest falls off), moves the current file to
    /// `path.1` and starts an empty one.
    fn rotate(&self, output: &mut Output) -> std::io::Result<()> {
        output.file.flush()?;
        for n in (1..self.max_files).rev() {
            rename_if_exists(&self.rotated(n), &self.rotated(n + 1))?;
        }
        rename_if_exists(&self.path, &self.rotated(1))?;
        *output = self.open()?;
        Ok(())
    }

    fn write_batch(&self, slot: &mut Option<Output>, batch: &ExportTraceServiceRequest) -> std::io::Result<()> {
        let output = match slot {
            Some(o) => o,
            None => slot.insert(self.open()?),
        };
        for span in gencol_plugin_sdk::otlp::spans(batch) {
            // Serialising plain structs and JSON maps cannot fail.
            let mut text = serde_json::to_string(&line::span_line(&span)).unwrap_or_default();
            text.push('\n');
            let len = text.len() as u64;
            if output.size > 0 && output.size + len > self.max_size {
                self.rotate(output)?;
            }
            output.file.write_all(text.as_bytes())?;
            output.size += len;
        }
        output.file.flush()
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl ExporterPlugin for JsonlExporter {
    const TYPE: &'static str = "jsonl";
    const ABOUT: &'static str = "one JSON line per span appended to a file, rotated by size (example plugin)";

    fn validate(config: &serde_json::Value, ctx: &ExporterContext) -> Result<Self, Vec<ConfigError>> {
        let s: Settings = decode(config)?;
        let mut errors = Vec::new();
        if s.path.trim().is_empty() {
            errors.push(ConfigError::new("path", "empty path: name the file to append to, e.g. spans.jsonl"));
        }
        if s.max_size.0 == 0 {
            errors.push(ConfigError::new("max_size", "must be more than 0 bytes, e.g. 100MiB"));
        }
        if s.max_files == 0 {
            errors
                .push(ConfigError::new("max_files", "must be at least 1 (rotated files kept besides the current one)"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(JsonlExporter {
            path: ctx.resolve_path(&s.path),
            max_size: s.max_size.0,
            max_files: s.max_files,
            output: Mutex::new(None),
        })
    }

    fn export(&self, batch: &ExportTraceServiceRequest) -> Result<(), ExportError> {
        let mut slot = self.lock();
        self.write_batch(&mut slot, batch).map_err(|e| {
            // Reopen next time: the disk may have been full or the file moved away. Lines
            // already written stay, so a retried batch may repeat some (at least once).
            *slot = None;
            ExportError::retryable(format!("cannot write to {}: {e}", self.path.display()))
        })
    }

    /// Opens the file for appending without writing to it: a test line would end up
    /// among real spans in every tool reading the file.
    fn test_connection(&self) -> Result<String, ExportError> {
        let mut slot = self.lock();
        if slot.is_none() {
            *slot = Some(
                self.open().map_err(|e| ExportError::permanent(format!("cannot open {}: {e}", self.path.display())))?,
            );
        }
        let size = slot.as_ref().map_or(0, |o| o.size);
        Ok(format!("{} is writable ({size} bytes)", self.path.display()))
    }

    fn shutdown(&self) {
        if let Some(output) = self.lock().as_mut() {
            let _ = output.file.flush();
        }
    }
}

gencol_plugin_sdk::export_plugin! {
    name: "jsonl",
    version: env!("CARGO_PKG_VERSION"),
    exporters: [JsonlExporter],
}

#[cfg(test)]
mod tests {
    use super::*;
    use gencol_plugin_sdk::trace::{ResourceSpans, ScopeSpans, Span};

    fn batch(names: &[&str]) -> ExportTraceServiceRequest {
        let spans = names.iter().map(|n| Span { name: (*n).into(), trace_id: vec![7; 16], ..Default::default() });
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: spans.collect(), ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    fn exporter(dir: &Path, settings: serde_json::Value) -> JsonlExporter {
        let ctx = ExporterContext { base_dir: dir.to_path_buf(), ..Default::default() };
        JsonlExporter::validate(&settings, &ctx).map_err(|e| format!("{e:?}")).unwrap()
    }

    #[test]
    fn appends_one_line_per_span_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let e = exporter(dir.path(), serde_json::json!({"path": "out/spans.jsonl", "max_size": 400, "max_files": 2}));
        for round in 0..6 {
            e.export(&batch(&[&format!("span-{round}-a"), &format!("span-{round}-b")])).unwrap();
        }
        e.shutdown();
        let current = dir.path().join("out/spans.jsonl");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        for p in [current.clone(), dir.path().join("out/spans.jsonl.1"), dir.path().join("out/spans.jsonl.2")] {
            let text = read(&p);
            assert!(!text.is_empty() && text.len() <= 400, "{} holds {} bytes", p.display(), text.len());
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["trace_id"], "07".repeat(16));
            }
        }
        assert!(!dir.path().join("out/spans.jsonl.3").exists(), "only max_files rotated files are kept");
        assert!(read(&current).contains("span-5-b"), "newest lines in the current file");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let ctx = ExporterContext::default();
        let Err(errors) = JsonlExporter::validate(&serde_json::json!({"path": "", "max_files": 0}), &ctx) else {
            panic!("accepted bad settings");
        };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["path", "max_files"]);
        let Err(errors) = JsonlExporter::validate(&serde_json::json!({"max_size": "lots"}), &ctx) else {
            panic!("accepted bad settings");
        };
        assert_eq!(errors[0].path, "max_size");
    }
}
