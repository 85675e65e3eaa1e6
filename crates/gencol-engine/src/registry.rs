//! The factories gencol knows, by type. Registering a type twice is an error, so two
//! plugins can never silently shadow each other or a built-in.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::component::{ExporterFactory, ProcessorFactory, ReceiverFactory};

/// Where a component type comes from, for `gencol components`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provenance {
    BuiltIn,
    Plugin { path: String, version: String },
}

/// A type registered twice.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{role} type `{kind}` is registered twice ({first} and {second})")]
pub struct DuplicateType {
    pub role: &'static str,
    pub kind: String,
    pub first: String,
    pub second: String,
}

struct Entry<F: ?Sized> {
    factory: Arc<F>,
    provenance: Provenance,
}

/// Every known receiver, processor and exporter type.
#[derive(Default)]
pub struct Registry {
    receivers: BTreeMap<String, Entry<dyn ReceiverFactory>>,
    processors: BTreeMap<String, Entry<dyn ProcessorFactory>>,
    exporters: BTreeMap<String, Entry<dyn ExporterFactory>>,
}

/// One line of `gencol components`.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentInfo {
    pub role: &'static str,
    pub kind: String,
    pub about: String,
    pub provenance: Provenance,
}

fn describe(p: &Provenance) -> String {
    match p {
        Provenance::BuiltIn => "built-in".into(),
        Provenance::Plugin { path, .. } => format!("plugin {path}"),
    }
}

fn insert<F: ?Sized>(
    map: &mut BTreeMap<String, Entry<F>>,
    role: &'static str,
    kind: &str,
    factory: Arc<F>,
    provenance: Provenance,
) -> Result<(), DuplicateType> {
    if let Some(existing) = map.get(kind) {
        return Err(DuplicateType {
            role,
            kind: kind.to_owned(),
            first: describe(&existing.provenance),
            second: describe(&provenance),
        });
    }
    map.insert(kind.to_owned(), Entry { factory, provenance });
    Ok(())
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_receiver(&mut self, f: Arc<dyn ReceiverFactory>, p: Provenance) -> Result<(), DuplicateType> {
        let kind = f.kind().to_owned();
        insert(&mut self.receivers, "receiver", &kind, f, p)
    }

    pub fn add_processor(&mut self, f: Arc<dyn ProcessorFactory>, p: Provenance) -> Result<(), DuplicateType> {
        let kind = f.kind().to_owned();
        insert(&mut self.processors, "processor", &kind, f, p)
    }

    pub fn add_exporter(&mut self, f: Arc<dyn ExporterFactory>, p: Provenance) -> Result<(), DuplicateType> {
        let kind = f.kind().to_owned();
        insert(&mut self.exporters, "exporter", &kind, f, p)
    }

    pub fn receiver(&self, kind: &str) -> Option<&Arc<dyn ReceiverFactory>> {
        self.receivers.get(kind).map(|e| &e.factory)
    }

    pub fn processor(&self, kind: &str) -> Option<&Arc<dyn ProcessorFactory>> {
        self.processors.get(kind).map(|e| &e.factory)
    }

    pub fn exporter(&self, kind: &str) -> Option<&Arc<dyn ExporterFactory>> {
        self.exporters.get(kind).map(|e| &e.factory)
    }

    /// Type names of one role, for "did you mean" suggestions.
    pub fn kinds(&self, role: &str) -> Vec<&str> {
        match role {
            "receiver" => self.receivers.keys().map(String::as_str).collect(),
            "processor" => self.processors.keys().map(String::as_str).collect(),
            _ => self.exporters.keys().map(String::as_str).collect(),
        }
    }

    /// Every type, receivers then processors then exporters, each sorted by name.
    pub fn components(&self) -> Vec<ComponentInfo> {
        let mut out = Vec::new();
        for (k, e) in &self.receivers {
            out.push(ComponentInfo {
                role: "receiver",
                kind: k.clone(),
                about: e.factory.about().into(),
                provenance: e.provenance.clone(),
            });
        }
        for (k, e) in &self.processors {
            out.push(ComponentInfo {
                role: "processor",
                kind: k.clone(),
                about: e.factory.about().into(),
                provenance: e.provenance.clone(),
            });
        }
        for (k, e) in &self.exporters {
            out.push(ComponentInfo {
                role: "exporter",
                kind: k.clone(),
                about: e.factory.about().into(),
                provenance: e.provenance.clone(),
            });
        }
        out
    }
}
