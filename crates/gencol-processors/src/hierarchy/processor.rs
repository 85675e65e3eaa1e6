//! [`SpanHierarchy`]: makes the shared spans above each generation and sends each once.
//!
//! State, per pipeline (the pipeline task owns it, so no locks):
//! - `held`: per trace, the shared spans not sent yet, widened as generations join them.
//!   A trace is released when `group_window` has passed since a generation last joined
//!   any of its shared spans (`release_order` orders traces by that time, so the next
//!   deadline and the oldest trace are both the first entry).
//! - `remembered`: per trace, the ids of shared spans already sent, until `remember_for`
//!   has passed since the trace's last release (`forget_order`).
//!
//! Both maps hold at most `max_traces` traces: a new trace beyond it releases the held trace
//! that has waited longest since its last join (early, but nothing is lost), or forgets the
//! remembered trace closest to expiry (a later generation of it then re-sends its shared
//! spans, with the same ids, which backends treat as the same span again).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gencol_engine::{AckToken, HeldTraces, Processor};
use gencol_model::{Origin, SpanItem, ids};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};

use super::HierarchySettings;
use super::journal::{Journal, Restored, now_ms};

pub(crate) type TraceId = [u8; 16];
pub(crate) type SpanId = [u8; 8];

/// A due time made unique by a sequence number, so it can key an ordered map and an entry
/// can be found again to reschedule it.
type DueKey = (Instant, u64);

/// Longer durations are cut to this, so `now + duration` can never overflow an `Instant`.
const LONGEST_WAIT: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The `hierarchy` processor of one pipeline.
pub struct SpanHierarchy {
    group_window: Duration,
    remember_for: Duration,
    max_traces: usize,
    held: HashMap<TraceId, HeldTrace>,
    release_order: BTreeMap<DueKey, TraceId>,
    remembered: HashMap<TraceId, RememberedTrace>,
    forget_order: BTreeMap<DueKey, TraceId>,
    seq: u64,
    /// With a disk-queued pipeline: what survives a crash (see `journal.rs`).
    journal: Option<Journal>,
    /// Released shared spans not yet known to be fsynced in the exporters' queues, with
    /// the epoch they went out with once sealed.
    pending: Vec<PendingRelease>,
    /// Why the journal could not be written, for the acks of the batch that tried.
    journal_error: Option<String>,
    /// Wall clock and monotonic clock read together, to store deadlines as wall time.
    clock: (Instant, u64),
    /// This processor's share of `gencol_hierarchy_held_traces`, set once per batch.
    held_gauge: Option<HeldTraces>,
}

struct PendingRelease {
    epoch: Option<u64>,
    trace_id: TraceId,
    spans: Vec<SpanItem>,
    until: Instant,
}

/// Shared spans of one trace waiting for more generations.
struct HeldTrace {
    /// When to release them; `None` only while the trace is being created.
    due: Option<DueKey>,
    /// Parents before children (in the order generations made them), so a backend that
    /// builds trees as spans arrive sees the parent first.
    spans: Vec<SpanItem>,
}

/// Ids of one trace's shared spans that were already sent.
struct RememberedTrace {
    until: DueKey,
    span_ids: Vec<SpanId>,
}

/// A shared span one generation sits under, before it is known whether it is new.
#[derive(Clone, Copy)]
struct Shared<'a> {
    id: SpanId,
    parent: Option<SpanId>,
    name: &'a str,
}

impl SpanHierarchy {
    /// An empty hierarchy with the given settings.
    pub fn new(settings: &HierarchySettings) -> Self {
        Self {
            group_window: settings.group_window.0.min(LONGEST_WAIT),
            remember_for: settings.remember_for.0.min(LONGEST_WAIT),
            max_traces: settings.max_traces.max(1),
            held: HashMap::new(),
            release_order: BTreeMap::new(),
            remembered: HashMap::new(),
            forget_order: BTreeMap::new(),
            seq: 0,
            journal: None,
            pending: Vec::new(),
            journal_error: None,
            clock: (Instant::now(), now_ms()),
            held_gauge: None,
        }
    }

    /// A hierarchy whose state survives a crash: kept in a journal in `dir`, and read
    /// back from it (traces whose window passed while gencol was down are released at
    /// the first flush).
    pub fn with_journal(settings: &HierarchySettings, dir: &std::path::Path) -> Result<Self, String> {
        let mut h = SpanHierarchy::new(settings);
        let (journal, restored) = Journal::open(dir)?;
        let now = Instant::now();
        h.clock = (now, now_ms());
        let (held, remembered) = (restored.held.len(), restored.remembered.len());
        for (trace_id, (until_ms, span_ids)) in restored.remembered {
            // One whose time passed while gencol was down is kept until the first batch:
            // the records read back before it must not make its shared spans again.
            let until = h.next_key(h.instant_of(until_ms).unwrap_or(now).max(now));
            h.remembered.insert(trace_id, RememberedTrace { until, span_ids });
            h.forget_order.insert(until, trace_id);
        }
        for (trace_id, (due_ms, spans)) in restored.held {
            let due = h.next_key(h.instant_of(due_ms).unwrap_or(now));
            h.held.insert(trace_id, HeldTrace { due: Some(due), spans });
            h.release_order.insert(due, trace_id);
        }
        if held > 0 {
            tracing::info!(traces = held, remembered, dir = %dir.display(), "hierarchy: shared spans of traces held before the last stop are held again");
        }
        h.journal = Some(journal);
        Ok(h)
    }

    /// `at_ms` (wall clock) as an `Instant`; a time already past is now.
    fn instant_of(&self, at_ms: u64) -> Option<Instant> {
        let (now, now_ms) = self.clock;
        now.checked_add(Duration::from_millis(at_ms.saturating_sub(now_ms)))
    }

    /// `at_ms` (wall clock) as an `Instant`, also when it is past.
    fn instant_at(&self, at_ms: u64) -> Instant {
        let (now, now_ms) = self.clock;
        if at_ms >= now_ms {
            self.instant_of(at_ms).unwrap_or(now)
        } else {
            now.checked_sub(Duration::from_millis(now_ms - at_ms)).unwrap_or(now)
        }
    }

    /// `at` as wall-clock milliseconds.
    fn ms_of(&self, at: Instant) -> u64 {
        let (now, now_ms) = self.clock;
        match at.checked_duration_since(now) {
            Some(ahead) => now_ms.saturating_add(ahead.as_millis() as u64),
            None => now_ms.saturating_sub(now.duration_since(at).as_millis() as u64),
        }
    }

    /// Writes what this batch recorded; a failure fails the batch's acknowledgement.
    fn write_journal(&mut self) {
        if let Some(journal) = &mut self.journal
            && let Err(e) = journal.write()
        {
            tracing::error!("hierarchy: cannot write the journal (receivers answer 503): {e}");
            self.journal_error = Some(format!("cannot write the hierarchy journal: {e}"));
        }
    }

    /// Rewrites the journal from the live state when it has grown large, or after a
    /// failed fsync (nothing written before is known durable until then).
    fn rewrite_journal_if_large(&mut self) {
        if !self.journal.as_ref().is_some_and(Journal::wants_rewrite) {
            return;
        }
        let mut state = Restored::default();
        for (trace_id, held) in &self.held {
            let due = held.due.map(|(d, _)| self.ms_of(d)).unwrap_or(self.clock.1);
            state.held.insert(*trace_id, (due, held.spans.clone()));
        }
        let pending_ids: Vec<SpanId> = self
            .pending
            .iter()
            .flat_map(|p| p.spans.iter().filter_map(|s| SpanId::try_from(s.span.span_id.as_slice()).ok()))
            .collect();
        for (trace_id, r) in &self.remembered {
            let ids: Vec<SpanId> = r.span_ids.iter().filter(|id| !pending_ids.contains(id)).copied().collect();
            if !ids.is_empty() {
                state.remembered.insert(*trace_id, (self.ms_of(r.until.0), ids));
            }
        }
        let pending: Vec<(TraceId, Vec<SpanItem>)> =
            self.pending.iter().map(|p| (p.trace_id, p.spans.clone())).collect();
        if let Some(journal) = &mut self.journal
            && let Err(e) = journal.rewrite(&state, &pending, journal.mark_for_rewrite())
        {
            tracing::error!("hierarchy: cannot rewrite the journal (it keeps growing until this works): {e}");
        }
    }

    /// Reports the number of held traces to gencol's metrics from now on.
    pub fn with_metrics(mut self, mut held: HeldTraces) -> Self {
        held.set(self.held.len());
        self.held_gauge = Some(held);
        self
    }

    fn update_gauge(&mut self) {
        if let Some(gauge) = &mut self.held_gauge {
            gauge.set(self.held.len());
        }
    }

    /// The journal made durable as a disk queue asks before its `ack`; its length then.
    #[cfg(test)]
    pub(crate) fn journal_made_durable(&self) -> u64 {
        self.journal.as_ref().expect("a journal").made_durable()
    }

    /// How many traces have shared spans waiting to be sent.
    pub fn held_traces(&self) -> usize {
        self.held.len()
    }

    /// How many traces have sent shared spans whose ids are still remembered.
    pub fn remembered_traces(&self) -> usize {
        self.remembered.len()
    }

    fn next_key(&mut self, at: Instant) -> DueKey {
        self.seq += 1;
        (at, self.seq)
    }

    /// Re-parents a generation span under its shared spans and holds the ones not sent yet.
    fn place(&mut self, item: &mut SpanItem, now: Instant, released: &mut Vec<SpanItem>) {
        let Some(ctx) = item.generation.as_deref() else {
            return;
        };
        if ctx.trace_name.is_none() && ctx.span_name.is_none() {
            return;
        }
        let Ok(trace_id) = TraceId::try_from(item.span.trace_id.as_slice()) else {
            return;
        };

        let mut trace_buf = [0u8; 32];
        let trace_hex = hex(&trace_id, &mut trace_buf);
        let mut shared: [Option<Shared>; 2] = [None, None];
        let mut above = ctx.parent_span_id;
        if let Some(name) = ctx.trace_name.as_deref() {
            let mut buf = [0u8; 16];
            let parent_hex = ctx.parent_span_id.as_ref().map(|p| hex(p, &mut buf));
            let id = ids::root_span_id(trace_hex, name, parent_hex);
            shared[0] = Some(Shared { id, parent: above, name });
            above = Some(id);
        }
        if let Some(name) = ctx.span_name.as_deref() {
            let mut buf = [0u8; 16];
            let parent_hex = match &above {
                Some(p) => hex(p, &mut buf),
                None => "",
            };
            let id = ids::intermediate_span_id(trace_hex, parent_hex, name);
            shared[1] = Some(Shared { id, parent: above, name });
            above = Some(id);
        }
        if let Some(parent) = above {
            item.span.parent_span_id.clear();
            item.span.parent_span_id.extend_from_slice(&parent);
        }

        let (start, end) = (item.span.start_time_unix_nano, item.span.end_time_unix_nano);
        self.join(trace_id, shared, &item.origin, (start, end), now, released);
    }

    /// Holds or widens the shared spans of one generation that were not sent yet.
    fn join(
        &mut self,
        trace_id: TraceId,
        mut shared: [Option<Shared>; 2],
        origin: &Arc<Origin>,
        (start, end): (u64, u64),
        now: Instant,
        released: &mut Vec<SpanItem>,
    ) {
        if let Some(sent) = self.remembered.get(&trace_id) {
            for s in &mut shared {
                if s.is_some_and(|s| sent.span_ids.contains(&s.id)) {
                    *s = None;
                }
            }
        }
        if shared.iter().all(Option::is_none) {
            return;
        }

        let group = match self.held.entry(trace_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(HeldTrace { due: None, spans: Vec::with_capacity(2) }),
        };
        for s in shared.into_iter().flatten() {
            match group.spans.iter_mut().find(|held| held.span.span_id == s.id) {
                Some(held) => {
                    let span = &mut held.span;
                    span.start_time_unix_nano = span.start_time_unix_nano.min(start);
                    span.end_time_unix_nano = span.end_time_unix_nano.max(end);
                }
                None => group.spans.push(shared_span(trace_id, s, origin, start, end)),
            }
        }

        self.seq += 1;
        let due = (now + self.group_window, self.seq);
        if let Some(previous) = group.due.replace(due) {
            self.release_order.remove(&previous);
        }
        self.release_order.insert(due, trace_id);
        if let Some(journal) = &mut self.journal {
            let (clock, clock_ms) = self.clock;
            let due_ms = clock_ms.saturating_add(due.0.saturating_duration_since(clock).as_millis() as u64);
            journal.held(&trace_id, due_ms, &group.spans);
        }

        while self.held.len() > self.max_traces {
            let Some((_, oldest)) = self.release_order.pop_first() else {
                break;
            };
            tracing::debug!(max_traces = self.max_traces, "hierarchy: releasing the oldest held trace early");
            self.release(oldest, now, released);
        }
    }

    /// Sends a trace's held shared spans and remembers their ids.
    fn release(&mut self, trace_id: TraceId, now: Instant, out: &mut Vec<SpanItem>) {
        let Some(group) = self.held.remove(&trace_id) else {
            return;
        };
        if let Some(due) = group.due {
            self.release_order.remove(&due);
        }
        if !self.remember_for.is_zero() {
            self.remember(trace_id, &group.spans, now);
        }
        if self.journal.is_some() {
            let until = now + self.remember_for;
            self.pending.push(PendingRelease { epoch: None, trace_id, spans: group.spans.clone(), until });
        }
        out.extend(group.spans);
    }

    fn remember(&mut self, trace_id: TraceId, spans: &[SpanItem], now: Instant) {
        let until = self.next_key(now + self.remember_for);
        let ids = spans.iter().filter_map(|s| SpanId::try_from(s.span.span_id.as_slice()).ok());
        match self.remembered.entry(trace_id) {
            Entry::Occupied(mut e) => {
                let sent = e.get_mut();
                self.forget_order.remove(&sent.until);
                sent.until = until;
                for id in ids {
                    if !sent.span_ids.contains(&id) {
                        sent.span_ids.push(id);
                    }
                }
            }
            Entry::Vacant(e) => {
                e.insert(RememberedTrace { until, span_ids: ids.collect() });
            }
        }
        self.forget_order.insert(until, trace_id);
        while self.remembered.len() > self.max_traces {
            let Some((_, oldest)) = self.forget_order.pop_first() else {
                break;
            };
            self.remembered.remove(&oldest);
        }
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some(entry) = self.forget_order.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let trace_id = entry.remove();
            self.remembered.remove(&trace_id);
        }
    }

    /// Releases every trace whose window has passed (all of them when `force`).
    fn release_due(&mut self, now: Instant, force: bool, out: &mut Vec<SpanItem>) {
        while let Some((&(due, _), &trace_id)) = self.release_order.first_key_value() {
            if !force && due > now {
                break;
            }
            self.release(trace_id, now, out);
        }
    }
}

impl Processor for SpanHierarchy {
    /// Held traces given up are dropped (their root is made by the gencol that gets their
    /// generations again), and forgotten, so that they are new here if they come back.
    fn give_up(&mut self, trace_ids: &[Vec<u8>]) {
        let mut dropped = 0;
        for raw in trace_ids {
            let Ok(trace_id) = TraceId::try_from(raw.as_slice()) else { continue };
            if let Some(group) = self.held.remove(&trace_id) {
                dropped += 1;
                if let Some(due) = group.due {
                    self.release_order.remove(&due);
                }
                if let Some(journal) = &mut self.journal {
                    journal.released(&trace_id, self.clock.1, &[]);
                }
            }
            if let Some(r) = self.remembered.remove(&trace_id) {
                self.forget_order.remove(&r.until);
            }
        }
        if dropped > 0 {
            tracing::debug!(traces = dropped, "hierarchy: held traces given up to another instance");
        }
        self.write_journal();
        self.update_gauge();
    }

    /// A trace's shared spans go out `group_window` after its last generation joined.
    fn releases_after(&self) -> Option<Duration> {
        Some(self.group_window)
    }

    fn process(&mut self, items: &mut Vec<SpanItem>, now: Instant) {
        if self.journal.is_some() {
            self.clock = (now, now_ms());
        }
        // Traces whose window passed go first, so a generation arriving after its window
        // (before the pipeline's timer fired) counts as late, as it would a moment later.
        self.forget_expired(now);
        let mut released = Vec::new();
        self.release_due(now, false, &mut released);
        for item in items.iter_mut() {
            self.place(item, now, &mut released);
        }
        items.append(&mut released);
        self.write_journal();
        self.rewrite_journal_if_large();
        self.update_gauge();
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.release_order.first_key_value().map(|(&(due, _), _)| due)
    }

    fn flush(&mut self, now: Instant, force: bool, out: &mut Vec<SpanItem>) {
        self.forget_expired(now);
        if force && self.journal.is_some() {
            // Shutdown with a journal: held traces stay on disk and are released, with
            // every generation that joins them meanwhile, after the next start.
            if !self.held.is_empty() {
                tracing::info!(
                    traces = self.held.len(),
                    "hierarchy: shared spans of open traces kept on disk for the next start"
                );
            }
            return;
        }
        self.release_due(now, force, out);
        self.update_gauge();
    }

    fn hold_until_durable(&mut self, acks: &[AckToken]) {
        if let Some(reason) = self.journal_error.take() {
            acks.iter().for_each(|ack| ack.fail(&reason));
        } else if let Some(journal) = &mut self.journal {
            journal.hold(acks);
        }
    }

    /// With a journal: the records written since its last `Mark` are read back (a power
    /// loss may have taken their entries). `ride`: the journal is no longer fsynced before
    /// each 202, since the pipeline's disk queues hold every generation too.
    fn read_back_from(&mut self, ride: bool) -> Option<u64> {
        let journal = self.journal.as_mut()?;
        if ride && let Err(e) = journal.ride_on_queues() {
            tracing::error!("hierarchy: the journal stays fsynced before each 202: {e}");
        }
        self.clock = (Instant::now(), now_ms());
        Some(journal.read_back_from())
    }

    /// A record written after the journal's last durable `Mark`: its generations join
    /// their traces again, as when it was written (joining twice changes nothing; a trace
    /// whose shared spans were sent since is remembered and skipped).
    fn replay(&mut self, mut items: Vec<SpanItem>, time_ms: u64, out: &mut Vec<SpanItem>) {
        let at = self.instant_at(time_ms);
        for item in &mut items {
            self.place(item, at, out);
        }
    }

    fn replayed(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.replay_done();
        }
        self.write_journal();
        // A failed write here is retried with the next batch's, which it must not fail.
        self.journal_error = None;
        self.update_gauge();
    }

    fn seal(&mut self, epoch: u64) -> bool {
        let mut sealed = false;
        for p in self.pending.iter_mut().filter(|p| p.epoch.is_none()) {
            p.epoch = Some(epoch);
            sealed = true;
        }
        sealed
    }

    fn durable(&mut self, epoch: u64) {
        let done: Vec<PendingRelease>;
        (done, self.pending) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.epoch.is_some_and(|e| e <= epoch));
        for p in &done {
            let ids: Vec<SpanId> =
                p.spans.iter().filter_map(|s| SpanId::try_from(s.span.span_id.as_slice()).ok()).collect();
            let until_ms = self.ms_of(p.until);
            if let Some(journal) = &mut self.journal {
                journal.released(&p.trace_id, until_ms, &ids);
            }
        }
        self.write_journal();
        // A failed write of `Released` entries only means roots may be sent again.
        self.journal_error = None;
        self.rewrite_journal_if_large();
    }
}

/// A root or intermediate span: kind INTERNAL, no attributes, status unset, reported under
/// the origin of the first generation that made it.
fn shared_span(trace_id: TraceId, s: Shared, origin: &Arc<Origin>, start: u64, end: u64) -> SpanItem {
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: s.id.to_vec(),
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: s.name.to_owned(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    };
    SpanItem { origin: origin.clone(), span, generation: None }
}

/// Lower-case hex of `bytes` written into `buf` (twice as long), without allocating: ids
/// are hashed from hex text for every generation.
fn hex<'b>(bytes: &[u8], buf: &'b mut [u8]) -> &'b str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let out = &mut buf[..2 * bytes.len()];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Only ASCII hex digits were written, so this never falls back.
    std::str::from_utf8(out).unwrap_or_default()
}
