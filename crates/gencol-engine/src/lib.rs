//! gencol's pipeline engine, shaped like the OpenTelemetry Collector's: component
//! factories in a registry, a pipeline graph checked before anything starts,
//! receivers → bounded channel → processors → fan-out → one bounded queue per
//! exporter, each exporter's sends passing through the same `tower` layers (concurrency
//! limit, settle, stop, retry, telemetry, timeout: see the `delivery` module).
//!
//! The engine knows no concrete component: receivers, processors and exporters
//! register factories ([`Registry`]).

mod component;
mod consumer;

pub use component::{
    Batching, BoxFuture, ComponentContext, ExportError, Exporter, ExporterConfig, ExporterFactory, Processor,
    ProcessorConfig, ProcessorContext, ProcessorFactory, ReceiverConfig, ReceiverFactory,
};
pub use consumer::{
    AckToken, AckWait, Backpressure, Consumer, PIPELINE_BUDGET_BYTES, PipelineInput, PipelineMessage, Reservation,
};
pub use tokio_util::sync::CancellationToken;

mod delivery;
mod group_sync;
mod pipeline;
mod queue_backed;
mod registry;
pub mod routing;
mod running;
pub mod secrets;
mod service;
mod telemetry;

pub use delivery::{
    DELIVERY_KEYS, DeliverySettings, DeliveryStats, QueueKind, QueueSettings, RetrySettings, SyncMode, WhenFull,
};
pub use group_sync::{GroupSync, SyncFn};
pub use queue_backed::{QueueBacked, register_queue_backed};
pub use registry::{ComponentInfo, DuplicateType, Provenance, Registry};
pub use running::RunningService;
pub use secrets::SecretMask;
pub use service::{BuiltExporter, ValidatedService};
pub use telemetry::{HeldTraces, ReceiverStats, RefusedReason, Telemetry};
