//! gencol's own metrics (SPEC §12), made with the OpenTelemetry metrics API.
//!
//! Nothing here runs per span: components count into plain atomics they already keep
//! ([`DeliveryStats`], [`ReceiverStats`], [`HeldTraces`]) and observable instruments read
//! them when a reader collects (a Prometheus scrape, an OTLP push). The only instrument
//! recorded as it happens is the send-duration histogram, once per request to a
//! destination. These metrics go to the reader the binary installs, never into gencol's
//! own pipelines.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};

use crate::delivery::{DeliveryStats, Queue};

/// Why a receiver refused records: the `reason` label of
/// `gencol_receiver_refused_records_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedReason {
    /// Records that did not decode or were not valid (400, or rejected in a 202/200).
    Invalid,
    /// A request without a valid bearer token (401).
    Unauthorized,
    /// A body over `max_request_body_size` (413).
    TooLarge,
    /// A `Content-Type` or `Content-Encoding` the receiver does not read (415).
    UnsupportedMediaType,
    /// A full pipeline, or records that could not be kept (503).
    Backpressure,
}

impl RefusedReason {
    const ALL: [RefusedReason; 5] = [
        RefusedReason::Invalid,
        RefusedReason::Unauthorized,
        RefusedReason::TooLarge,
        RefusedReason::UnsupportedMediaType,
        RefusedReason::Backpressure,
    ];

    fn label(self) -> &'static str {
        match self {
            RefusedReason::Invalid => "invalid",
            RefusedReason::Unauthorized => "unauthorized",
            RefusedReason::TooLarge => "too_large",
            RefusedReason::UnsupportedMediaType => "unsupported_media_type",
            RefusedReason::Backpressure => "backpressure",
        }
    }
}

/// What one receiver accepted and refused, in records (generation records, or spans for
/// `otlp`). A request refused before its body is read (401, 413, 415, a full pipeline)
/// counts as one record: its records were never looked at.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    accepted: AtomicU64,
    refused: [AtomicU64; 5],
}

impl ReceiverStats {
    /// Records handed to the pipelines (answered 2xx).
    pub fn accepted(&self, records: usize) {
        self.accepted.fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Records refused for `reason`, in the answer or with it.
    pub fn refused(&self, reason: RefusedReason, records: usize) {
        self.refused[reason as usize].fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Accepted, then refused in the order of [`RefusedReason`]'s variants.
    pub fn snapshot(&self) -> (u64, [u64; 5]) {
        (self.accepted.load(Ordering::Relaxed), self.refused.each_ref().map(|a| a.load(Ordering::Relaxed)))
    }
}

/// One processor's share of `gencol_hierarchy_held_traces`: it sets its own count, and
/// the gauge shows the sum over every pipeline. Its share is taken back when dropped.
#[derive(Debug)]
pub struct HeldTraces {
    total: Arc<AtomicI64>,
    own: i64,
}

impl HeldTraces {
    /// Sets this processor's count (a few instructions when it did not change).
    pub fn set(&mut self, held: usize) {
        let held = i64::try_from(held).unwrap_or(i64::MAX);
        if held != self.own {
            self.total.fetch_add(held - self.own, Ordering::Relaxed);
            self.own = held;
        }
    }
}

impl Drop for HeldTraces {
    fn drop(&mut self) {
        self.total.fetch_sub(self.own, Ordering::Relaxed);
    }
}

struct ExporterView {
    attribute: [KeyValue; 1],
    stats: Arc<DeliveryStats>,
    queue: Arc<Queue>,
}

#[derive(Default)]
struct Shared {
    receivers: Mutex<Vec<([KeyValue; 1], Arc<ReceiverStats>)>>,
    exporters: Mutex<Vec<ExporterView>>,
    held_traces: Arc<AtomicI64>,
    /// Config reloads that took effect, and that were refused (the old config kept).
    reloads: [AtomicU64; 2],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section pushes or reads; a poisoned list is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The recorded part of one exporter's metrics: its send-duration histogram with the
/// exporter's label, built once.
#[derive(Clone)]
pub(crate) struct SendTimer {
    histogram: Histogram<f64>,
    attribute: Arc<[KeyValue; 1]>,
}

impl SendTimer {
    pub(crate) fn record(&self, took: Duration) {
        self.histogram.record(took.as_secs_f64(), self.attribute.as_slice());
    }
}

impl std::fmt::Debug for SendTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendTimer")
    }
}

/// gencol's metrics: handed to the service, which registers each receiver and exporter
/// it starts. Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    shared: Arc<Shared>,
    /// `None` when metrics are off: nothing is timed.
    send_duration: Option<Histogram<f64>>,
}

/// Bucket bounds of `gencol_exporter_send_duration_seconds`: from a fast local
/// destination (5 ms) to a send at the default 10 s timeout and beyond.
const SEND_DURATION_BOUNDS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Drop reasons of `gencol_exporter_dropped_spans_total`. `sampled_out` and `filtered`
/// count what routing (SPEC §11) or a `sample`/`filter` processor kept from the
/// destination on purpose.
const DROP_REASONS: [&str; 6] =
    ["queue_full", "permanent_error", "retries_exhausted", "shutdown", "sampled_out", "filtered"];

impl Telemetry {
    /// Creates every instrument on `meter`. Observable ones stay registered for as long
    /// as the meter provider lives.
    pub fn new(meter: &Meter) -> Self {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        meter
            .u64_observable_counter("gencol_receiver_accepted_records")
            .with_description("Records a receiver accepted into its pipelines")
            .with_callback(move |o| {
                for (attribute, stats) in lock(&s.receivers).iter() {
                    o.observe(stats.snapshot().0, attribute);
                }
            })
            .build();
        let s = shared.clone();
        meter
            .u64_observable_counter("gencol_receiver_refused_records")
            .with_description(
                "Records a receiver refused, by reason (a request refused before its body is read counts as one)",
            )
            .with_callback(move |o| {
                for ([receiver], stats) in lock(&s.receivers).iter() {
                    let (_, refused) = stats.snapshot();
                    for (reason, n) in RefusedReason::ALL.iter().zip(refused) {
                        o.observe(n, &[receiver.clone(), KeyValue::new("reason", reason.label())]);
                    }
                }
            })
            .build();
        let counter = |name: &'static str, description: &'static str, read: fn(&DeliveryStats) -> u64| {
            let s = shared.clone();
            meter
                .u64_observable_counter(name)
                .with_description(description)
                .with_callback(move |o| {
                    for e in lock(&s.exporters).iter() {
                        o.observe(read(&e.stats), &e.attribute);
                    }
                })
                .build();
        };
        counter("gencol_exporter_sent_spans", "Spans a destination took", |s| s.sent.load(Ordering::Relaxed));
        counter("gencol_exporter_failed_spans", "Spans whose sending failed for good", |s| {
            s.failed.load(Ordering::Relaxed)
        });
        counter("gencol_exporter_retries", "Sends tried again after a retryable failure", |s| {
            s.retries.load(Ordering::Relaxed)
        });
        let s = shared.clone();
        meter
            .u64_observable_counter("gencol_exporter_dropped_spans")
            .with_description("Spans that will never reach the destination, by reason")
            .with_callback(move |o| {
                for e in lock(&s.exporters).iter() {
                    let counts = e.stats.drops();
                    for (reason, n) in DROP_REASONS.iter().zip(counts) {
                        o.observe(n, &[e.attribute[0].clone(), KeyValue::new("reason", *reason)]);
                    }
                }
            })
            .build();
        let s = shared.clone();
        meter
            .u64_observable_gauge("gencol_exporter_queue_spans")
            .with_description("Spans waiting in an exporter's queue (records, for a disk queue)")
            .with_callback(move |o| {
                for e in lock(&s.exporters).iter() {
                    o.observe(e.queue.len() as u64, &e.attribute);
                }
            })
            .build();
        let s = shared.clone();
        meter
            .u64_observable_gauge("gencol_exporter_queue_bytes")
            .with_description("Bytes an exporter's queue holds (encoded spans; segment files for a disk queue)")
            .with_callback(move |o| {
                for e in lock(&s.exporters).iter() {
                    o.observe(e.queue.bytes(), &e.attribute);
                }
            })
            .build();
        let s = shared.clone();
        meter
            .i64_observable_gauge("gencol_hierarchy_held_traces")
            .with_description("Traces whose shared spans the hierarchy processors hold back")
            .with_callback(move |o| o.observe(s.held_traces.load(Ordering::Relaxed).max(0), &[]))
            .build();
        let s = shared.clone();
        meter
            .u64_observable_counter("gencol_config_reloads")
            .with_description("Config reloads, by result (success, or failure: the previous config kept running)")
            .with_callback(move |o| {
                for (result, n) in ["success", "failure"].into_iter().zip(&s.reloads) {
                    o.observe(n.load(Ordering::Relaxed), &[KeyValue::new("result", result)]);
                }
            })
            .build();
        let send_duration = meter
            .f64_histogram("gencol_exporter_send_duration")
            .with_unit("s")
            .with_description("How long one request to a destination took, answered or timed out")
            .with_boundaries(SEND_DURATION_BOUNDS.to_vec())
            .build();
        Telemetry { shared, send_duration: Some(send_duration) }
    }

    /// No instruments: for a service run without metrics. Components still count into
    /// their atomics (the shutdown summary reads them); nothing is timed.
    pub fn disabled() -> Self {
        Telemetry { shared: Arc::default(), send_duration: None }
    }

    /// The counters of a receiver about to start; a receiver restarted by a reload
    /// counts on from where the one with its id left off.
    pub(crate) fn add_receiver(&self, id: &str) -> Arc<ReceiverStats> {
        let attribute = [KeyValue::new("receiver", id.to_owned())];
        let mut receivers = lock(&self.shared.receivers);
        if let Some((_, stats)) = receivers.iter().find(|(a, _)| a == &attribute) {
            return stats.clone();
        }
        let stats = Arc::new(ReceiverStats::default());
        receivers.push((attribute, stats.clone()));
        stats
    }

    /// Shows an exporter's counters and queue (replacing what was shown for its id:
    /// after a reload, the queue it has now); returns its send timer when metrics are on.
    pub(crate) fn add_exporter(&self, id: &str, stats: Arc<DeliveryStats>, queue: Arc<Queue>) -> Option<SendTimer> {
        let attribute = [KeyValue::new("exporter", id.to_owned())];
        let view = ExporterView { attribute: attribute.clone(), stats, queue };
        let mut exporters = lock(&self.shared.exporters);
        match exporters.iter_mut().find(|e| e.attribute == attribute) {
            Some(e) => *e = view,
            None => exporters.push(view),
        }
        drop(exporters);
        let histogram = self.send_duration.clone()?;
        Some(SendTimer { histogram, attribute: Arc::new(attribute) })
    }

    /// Counts a config reload: taken (`ok`), or refused with the old config kept.
    pub fn count_reload(&self, ok: bool) {
        self.shared.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// A processor's share of `gencol_hierarchy_held_traces`, starting at 0.
    pub fn held_traces(&self) -> HeldTraces {
        HeldTraces { total: self.shared.held_traces.clone(), own: 0 }
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_traces_add_up_over_processors_and_leave_with_them() {
        let telemetry = Telemetry::disabled();
        let (mut a, mut b) = (telemetry.held_traces(), telemetry.held_traces());
        a.set(3);
        b.set(4);
        a.set(1);
        assert_eq!(telemetry.shared.held_traces.load(Ordering::Relaxed), 5);
        drop(b);
        assert_eq!(telemetry.shared.held_traces.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn receiver_counts_by_reason() {
        let stats = ReceiverStats::default();
        stats.accepted(7);
        stats.refused(RefusedReason::Invalid, 2);
        stats.refused(RefusedReason::Backpressure, 1);
        assert_eq!(stats.snapshot(), (7, [2, 0, 0, 0, 1]));
    }
}
