//! What a component is to the engine: a factory per type that validates its settings
//! (a pure step, no I/O) into a config that can later be built and started. The
//! engine knows these traits only; concrete components register factories.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gencol_config::{ComponentId, Diagnostic, Located, Node};
use gencol_model::SpanItem;
use gencol_model::budget::MemoryBudget;
use tokio_util::sync::CancellationToken;

use crate::consumer::{AckToken, Consumer};
use crate::telemetry::Telemetry;

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a factory knows while validating: the component's id, and the directory of
/// the config file it was written in (relative paths resolve against it).
#[derive(Clone, Debug)]
pub struct ComponentContext {
    pub id: ComponentId,
    pub base_dir: PathBuf,
}

/// Makes receivers of one type (`generations`, `otlp`).
pub trait ReceiverFactory: Send + Sync + 'static {
    /// The type as written in YAML.
    fn kind(&self) -> &str;
    /// One line for `gencol components`.
    fn about(&self) -> &str;
    /// Checks the settings (no I/O) and returns what `start` will use.
    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ReceiverConfig>, Vec<Diagnostic>>;
}

/// A validated receiver, ready to start.
pub trait ReceiverConfig: Send + Sync {
    /// The listen addresses (`host:port`; `otlp` has one per protocol), used to detect an
    /// exporter sending back into gencol's own receiver (a delivery loop).
    fn listen_addrs(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether it produces generation spans (whose pipelines want `namespace`).
    fn emits_generations(&self) -> bool {
        false
    }
    /// For `gencol test-connection`: a receiver that connects out to its source (`nats`)
    /// checks it can, and says what it found. `None`: nothing to test (it listens).
    fn test_connection(&self) -> Option<BoxFuture<'static, Result<String, String>>> {
        None
    }
    /// Binds and starts serving in the background; returns once bound, so a port in
    /// use stops startup instead of half-starting. Serves until `shutdown` is
    /// cancelled, then stops accepting and finishes requests in flight. Every byte a
    /// request holds while it is received and decoded is taken from `memory`, which all
    /// receivers share (`service.limits.max_inflight_memory`).
    fn start(
        &self,
        consumer: Consumer,
        memory: MemoryBudget,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<tokio::task::JoinHandle<()>, String>>;
}

/// Makes processors of one type (`hierarchy`, `namespace`, `privacy`).
pub trait ProcessorFactory: Send + Sync + 'static {
    fn kind(&self) -> &str;
    fn about(&self) -> &str;
    /// True for the processor that turns request-level names (user, session, custom
    /// metadata) into attributes; `gencol validate` warns when a pipeline fed with
    /// generations has none.
    fn adds_request_attributes(&self) -> bool {
        false
    }
    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ProcessorConfig>, Vec<Diagnostic>>;
}

/// A validated processor; every pipeline that lists it gets its own instance.
pub trait ProcessorConfig: Send + Sync {
    /// Makes the instance for one pipeline (opening its state on disk, if it keeps any).
    fn build(&self, ctx: &ProcessorContext) -> Result<Box<dyn Processor>, String>;
    /// What its instances' [`Processor::releases_after`] will be.
    fn releases_after(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What a processor instance is built for.
#[derive(Clone, Debug)]
pub struct ProcessorContext {
    pub id: ComponentId,
    pub pipeline: String,
    /// Where the instance keeps state that must survive a crash:
    /// `<service.data_dir>/state/<pipeline>/<processor id>`, given when some exporter of
    /// the pipeline has a disk queue (its 202s promise that nothing is lost); `None`
    /// otherwise.
    pub state_dir: Option<PathBuf>,
    /// gencol's own metrics (e.g. [`Telemetry::held_traces`]).
    pub telemetry: Telemetry,
}

/// One step of a pipeline. Runs on the pipeline's task: it owns its state, so no
/// locks. It may hold items back (e.g. to group a trace) and release them later.
pub trait Processor: Send {
    /// Transforms a batch in place; may remove items (held back) or add new ones.
    fn process(&mut self, items: &mut Vec<SpanItem>, now: Instant);
    /// When the processor next wants `flush` called, if it holds anything.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    /// Moves held-back items whose time has come into `out`; all of them when `force`
    /// (shutdown) unless the processor keeps them on disk for the next start.
    fn flush(&mut self, _now: Instant, _force: bool, _out: &mut Vec<SpanItem>) {}
    /// Called after `process` ran for a group of batches whose receivers wait for them
    /// to be on disk: keep a clone of every ack until what `process` recorded for the
    /// group is durable.
    fn hold_until_durable(&mut self, _acks: &[AckToken]) {}
    /// Drops what it holds of these traces without releasing it: their records went to
    /// another gencol (the `nats` receiver lost their partition), which gets them all
    /// again and makes what they need there.
    fn give_up(&mut self, _trace_ids: &[Vec<u8>]) {}
    /// Called after the pipeline handed everything this processor released so far to the
    /// exporters. `true` asks for `durable(epoch)` once all of it is fsynced in every
    /// disk queue of the pipeline.
    fn seal(&mut self, _epoch: u64) -> bool {
        false
    }
    /// What was sealed with `epoch` (and before) is durable in the exporters' queues.
    fn durable(&mut self, _epoch: u64) {}
    /// Called once, at the pipeline's start, when no other pipeline feeds this one's
    /// exporters and no processor after this one drops spans. A processor that keeps
    /// state on disk returns the wall-clock time (ms since the epoch) from which it wants
    /// the records its disk queues still hold read back ([`Processor::replay`]), in case
    /// its state lost some to a power loss. `ride`: every exporter keeps what it gets on
    /// disk, fsynced before the receivers' 202 (a disk queue with `sync: always`, no
    /// routing), so the processor may stop fsyncing its state before each 202 and rely on
    /// those records instead (registering with [`crate::register_queue_backed`]).
    fn read_back_from(&mut self, _ride: bool) -> Option<u64> {
        None
    }
    /// A record the disk queues still hold, written at `time_ms`, as the pipeline handed
    /// it over (after every processor). What the processor releases goes into `out`.
    fn replay(&mut self, _items: Vec<SpanItem>, _time_ms: u64, _out: &mut Vec<SpanItem>) {}
    /// Every record was read back (after [`Processor::read_back_from`]).
    fn replayed(&mut self) {}
    /// How long after a trace's last generation this processor may still release spans
    /// of that trace (`hierarchy`: its group window), so per-destination routing can
    /// send them where the trace's generations went (SPEC §11).
    fn releases_after(&self) -> Option<std::time::Duration> {
        None
    }
    /// Why the spans this processor removes never reach the pipeline's exporters, when it
    /// removes spans on purpose (`sample`, `filter`): counted per exporter.
    fn drops_as(&self) -> Option<crate::routing::Verdict> {
        None
    }
}

/// Makes exporters of one type (`otlp`, `debug`, a plugin's type...).
pub trait ExporterFactory: Send + Sync + 'static {
    fn kind(&self) -> &str;
    fn about(&self) -> &str;
    /// Checks the type's own settings. The delivery settings every exporter shares
    /// (`retry`, `queue`, `timeout`, `privacy_mode`) are taken out by the engine first.
    fn configure(
        &self,
        ctx: &ComponentContext,
        config: &Located<Node>,
    ) -> Result<Box<dyn ExporterConfig>, Vec<Diagnostic>>;
}

/// A validated exporter.
pub trait ExporterConfig: Send + Sync {
    /// `host:port` it sends to, to detect a loop back into gencol's own receivers.
    fn target_addr(&self) -> Option<String> {
        None
    }
    /// Creates the exporter (HTTP clients etc.). Called once per exporter id.
    fn build(&self, id: &ComponentId) -> Result<Arc<dyn Exporter>, String>;
    /// Whether its destination's acceptance is what a 202 promises: with a memory queue,
    /// receivers answer only once `export` succeeded for their spans (the `nats`
    /// exporter: JetStream acknowledged the publish). A disk queue answers at its fsync,
    /// as for every exporter.
    fn confirms_delivery(&self) -> bool {
        false
    }
    /// Whether it passes generation records on whole, with their generation context, to
    /// another gencol that processes them (`nats`): such a pipeline needs no `namespace`.
    fn hands_on_generations(&self) -> bool {
        false
    }
}

/// Sends batches to one destination. The engine wraps every exporter the same way (a
/// queue, then `tower` layers: concurrency limit, retry, telemetry, timeout); an exporter
/// only sends once and says whether a failure is worth retrying.
pub trait Exporter: Send + Sync + 'static {
    /// Sends one batch once.
    fn export<'a>(&'a self, batch: &'a [SpanItem]) -> BoxFuture<'a, Result<(), ExportError>>;
    /// Sends a test span or event marked `gencol.test_connection=true` with header
    /// `X-Test-Connection: true`; `Ok` carries a short description of the answer.
    fn test_connection(&self) -> BoxFuture<'_, Result<String, ExportError>>;
    /// How large a batch may grow and how long it may wait to grow, when the engine's
    /// (1,024 spans or 4 MiB, 10 ms) do not suit the destination: an object store wants
    /// few large objects. The batch stays in the exporter's queue (on disk with a disk
    /// queue) until `export` succeeds, so a long wait loses nothing a 202 promised.
    fn batching(&self) -> Option<Batching> {
        None
    }
}

/// Batch limits an exporter asks for ([`Exporter::batching`]): a batch is sent when it
/// reaches `max_spans` or `max_bytes` (of spans as queued, protobuf-encoded), or when its
/// first span has waited `max_wait`, whichever comes first. Shutdown sends at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    pub max_spans: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

/// Why a send failed, and whether sending again may help.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ExportError {
    /// 429, 502, 503, 504, timeouts, connection errors: try again, after
    /// `retry_after` when the destination said so.
    #[error("{message}")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// Any other rejection: sending the same batch again would fail the same way.
    #[error("{message}")]
    Permanent { message: String },
    /// The destination refused what the batch holds (400, 413, 422): the same batch would
    /// fail the same way, but a part of it may pass. The engine splits the batch to find
    /// the spans refused and delivers the others.
    #[error("{message}")]
    Refused { message: String },
}

impl ExportError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ExportError::Retryable { message: message.into(), retry_after: None }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        ExportError::Permanent { message: message.into() }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        ExportError::Refused { message: message.into() }
    }
}
