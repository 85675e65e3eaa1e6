//! gencol's side of exporter plugins: loads the dynamic libraries listed under
//! `plugins:` and registers each exporter type they offer, so that a plugin exporter is
//! configured, validated, queued, retried and timed out exactly like a built-in one.
//!
//! The boundary is the C ABI of [`gencol_plugin_abi`]; this crate is the only place in
//! gencol that calls across it. Loading checks the ABI version before anything else
//! and never unloads a library (code of an unloaded library may still be referenced by
//! a thread a hanging call left behind). Every call into a plugin runs on tokio's
//! blocking pool, bounded per exporter; a panic inside the plugin is caught on its side
//! and arrives as a retryable failure that is logged and counted.
//!
//! A plugin runs inside gencol with gencol's privileges: only load plugins you trust.

mod exporter;
mod library;
mod settings;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gencol_config::{Diagnostic, Diagnostics, Located};
use gencol_engine::{Provenance, Registry};

pub use exporter::PluginExporterFactory;
pub use library::LoadError;

/// Where a `plugins:` entry points: relative paths are relative to the config file
/// that lists them, as SPEC §10 says.
pub fn resolve(entry: &Located<String>) -> PathBuf {
    let written = Path::new(&entry.value);
    if written.is_absolute() {
        return written.to_path_buf();
    }
    let dir = Path::new(&*entry.loc.file).parent().unwrap_or(Path::new(""));
    dir.join(written)
}

/// Loads every listed plugin and registers its exporter types. Each problem (missing
/// file, not a gencol plugin, another ABI version, a type already registered) is
/// reported at its entry of the `plugins:` list; the other plugins still load. Returns
/// every finding; the caller stops when any is an error.
pub fn load_plugins(registry: &mut Registry, plugins: &[Located<String>]) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let mut seen = Vec::new();
    for (i, entry) in plugins.iter().enumerate() {
        let error = |message: String| Diagnostic::error(&entry.loc, format!("plugins[{i}]: {message}"));
        let library = match library::load(&resolve(entry)) {
            Ok(l) => l,
            Err(e) => {
                diags.push(error(e.to_string()));
                continue;
            }
        };
        if seen.iter().any(|l| Arc::ptr_eq(l, &library)) {
            diags.push(Diagnostic::warning(
                &entry.loc,
                format!("plugins[{i}]: {} is listed twice; it is loaded once", library.path),
            ));
            continue;
        }
        seen.push(library.clone());
        for t in &library.exporters {
            let factory = Arc::new(PluginExporterFactory {
                library: library.clone(),
                kind: t.kind.clone(),
                about: t.about.clone(),
            });
            let provenance = Provenance::Plugin { path: library.path.clone(), version: library.version.clone() };
            if let Err(dup) = registry.add_exporter(factory, provenance) {
                diags.push(error(format!("{dup}: remove one of them from `plugins`")));
            }
        }
        tracing::debug!(plugin = %library.name, version = %library.version, path = %library.path, "plugin loaded");
    }
    diags
}
