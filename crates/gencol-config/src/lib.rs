//! Pipeline YAML for gencol: loading files with `serde-saphyr`, `${env:VAR}` /
//! `${env:VAR:-default}` substitution, merging several files in order, and turning
//! parts of the tree into typed component configs while keeping every value's
//! `FILE:LINE:COLUMN`, so that every error a user sees points at the line to fix.
//!
//! The crate knows nothing about components: it offers a located YAML tree
//! ([`Node`]), a typed decoder that reports errors at the right place ([`decode`]),
//! the top-level layout of a gencol config ([`ServiceConfig`]), and the value types
//! shared by components ([`Duration`], [`ByteSize`]).

// Every public item is documented; keep it that way.
#![warn(missing_docs)]

mod diagnostic;
mod layout;
mod load;
mod node;
mod units;
mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, Severity, closest_name};
pub use layout::{
    ComponentEntry, ComponentId, DEFAULT_PROMETHEUS_ENDPOINT, DEFAULT_PUSH_INTERVAL, MetricsConfig, OtlpMetricsConfig,
    PipelineEntry, PipelineId, ServiceConfig, Signal, check_host_port,
};
pub use load::{EnvLookup, load_files, load_str, process_env};
pub use node::{Loc, Located, Node, decode};
pub use units::{ByteSize, Duration};
