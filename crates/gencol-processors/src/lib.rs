//! gencol's built-in processors, each one step of a pipeline that owns its state (no locks):
//!
//! - `hierarchy` adds the root and intermediate spans a generation sits under (SPEC §3) and
//!   sends each of them once per trace, however many generations join it;
//! - `namespace` turns request-level names (user, session, custom `trace` metadata) into
//!   span attributes (SPEC §4);
//! - `privacy` removes prompt and completion content, masks personal data and hashes user
//!   ids before anything leaves the pipeline (SPEC §5);
//! - `filter` and `sample` keep the spans filter rules match, or a share of traces, for
//!   the whole pipeline (SPEC §11's rules, which exporters also apply one by one).
//!
//! Every processor module is laid out alike: `mod.rs` (factory), `config.rs` (settings and
//! their checks), `processor.rs` (the runtime part) and `tests.rs`.

mod filter;
mod hierarchy;
mod namespace;
mod privacy;
mod sample;
mod settings;

use std::sync::Arc;

use gencol_engine::ProcessorFactory;

pub use filter::{FilterAction, FilterFactory, FilterSettings, SpanFilter};
pub use hierarchy::{HierarchyFactory, HierarchySettings, SpanHierarchy};
pub use namespace::{NamespaceFactory, NamespaceSettings, RequestAttributes};
pub use privacy::{
    BuiltinPattern, CustomPattern, MaskError, Masker, PrivacyConfigError, PrivacyFactory, PrivacyFilter, PrivacyRules,
    PrivacySettings, SettingPath, hash_user_id,
};
pub use sample::{SampleFactory, SampleSettings, TraceSampler};

/// The built-in processor factories, for the registry.
pub fn factories() -> Vec<Arc<dyn ProcessorFactory>> {
    vec![
        Arc::new(HierarchyFactory),
        Arc::new(NamespaceFactory),
        Arc::new(PrivacyFactory),
        Arc::new(FilterFactory),
        Arc::new(SampleFactory),
    ]
}
