//! `debug`: prints each batch as span trees on stdout, to see what a pipeline makes
//! before pointing it at a real backend.

mod render;

use std::io::Write;
use std::sync::Arc;

use gencol_config::{ComponentId, Diagnostic, Located, Node, decode};
use gencol_engine::{BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory};
use gencol_model::SpanItem;
use serde::Deserialize;

pub use render::render_trees;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per span: name, kind, ids, duration, model, tokens, cost.
    #[default]
    Basic,
    /// Also every attribute and the resource.
    Detailed,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DebugSettings {
    verbosity: Verbosity,
}

pub struct DebugExporterFactory;

impl ExporterFactory for DebugExporterFactory {
    fn kind(&self) -> &str {
        "debug"
    }
    fn about(&self) -> &str {
        "prints span trees to stdout (verbosity: basic|detailed)"
    }
    fn configure(
        &self,
        _ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>> {
        let settings: DebugSettings = match &config.value {
            Node::Null => DebugSettings::default(),
            _ => decode(config).map_err(|d| vec![d])?,
        };
        Ok(Box::new(settings))
    }
}

impl ExporterConfig for DebugSettings {
    fn build(&self, _id: &ComponentId) -> Result<Arc<dyn Exporter>, String> {
        Ok(Arc::new(DebugExporter { verbosity: self.verbosity }))
    }
}

struct DebugExporter {
    verbosity: Verbosity,
}

impl Exporter for DebugExporter {
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let text = render_trees(batch, self.verbosity == Verbosity::Detailed);
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| ExportError::permanent(format!("cannot write to stdout: {e}")))
        })
    }

    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>> {
        Box::pin(async { Ok("stdout".to_owned()) })
    }
}
