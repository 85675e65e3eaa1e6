//! The disk queue in front of one exporter (SPEC §7): every batch is one record of a
//! `gencol-queue` log; a receiver's 202 waits until the record is fsynced. The process's
//! fsync thread ([`GroupSync`]) fsyncs for everyone waiting (group commit): while one
//! fsync runs, the records written meanwhile gather and share the next one.
//!
//! Sends read records back from disk (the page cache, usually) one batch at a time, so
//! a backlog of any size replays in bounded memory. The newest records written (up to
//! [`RECENT_BYTES`]) are also kept as they were handed over, so a sender that keeps up
//! reads their bytes (and checks their CRC) but does not decode them again. A record is
//! acknowledged once its batch was sent or refused for good; acknowledged segments are
//! deleted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gencol_model::SpanItem;
use gencol_model::stored::{decode_batch, encode_batch};
use gencol_queue::{Options, QueueError, Read, Reader, Writer};
use tokio::sync::Notify;

use super::{BatchLimit, QueueSettings, Refused, SyncMode, Taken, WhenFull, take_or_wait};
use crate::consumer::AckToken;
use crate::group_sync::GroupSync;

/// How often the acknowledged position is written down (and done segments deleted): a
/// crash replays at most this much already-sent data again.
const PERSIST_ACKS_EVERY: Duration = Duration::from_millis(200);

/// Records written but not read yet are also kept decoded, up to this many bytes of
/// record payloads (decoded spans take more memory than their payload): a sender that keeps up takes its
/// batches from here instead of decoding them again. A backlog beyond this is read from
/// disk as before, so a long outage costs no more memory than this.
const RECENT_BYTES: usize = 8 * 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its state whole, so a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct DiskQueue {
    id: String,
    dir: PathBuf,
    writer: Arc<Mutex<Writer>>,
    reading: Mutex<Reading>,
    not_empty: Notify,
    when_full: WhenFull,
    sync: SyncMode,
    max_bytes: u64,
    syncer: GroupSync,
    /// The newest records written this run, decoded, oldest first; sequence numbers rise.
    recent: Mutex<Recent>,
    /// The last sequence number written, for the queue length.
    written: AtomicU64,
    closed: AtomicBool,
    /// Its pipeline has not read it back yet ([`DiskQueue::read_back`]): what is delivered
    /// is not written down, so nothing is forgotten before.
    reading_back: AtomicBool,
}

#[derive(Default)]
struct Recent {
    records: VecDeque<(u64, Vec<SpanItem>, usize)>,
    bytes: usize,
}

impl Recent {
    /// Keeps a record just written, unless the bound is reached (a sender that does not keep
    /// up decodes from disk whatever was not kept; records are matched by sequence number,
    /// so a gap costs a decode, never a record).
    fn keep(&mut self, seq: u64, items: Vec<SpanItem>, bytes: usize) {
        if self.bytes + bytes > RECENT_BYTES {
            return;
        }
        self.bytes += bytes;
        self.records.push_back((seq, items, bytes));
    }

    /// Record `seq`'s items, when kept; records before it are never read again.
    fn take(&mut self, seq: u64) -> Option<Vec<SpanItem>> {
        while let Some(&(first, ..)) = self.records.front() {
            if first > seq {
                return None;
            }
            let (first, items, bytes) = self.records.pop_front()?;
            self.bytes -= bytes;
            if first == seq {
                return Some(items);
            }
        }
        None
    }
}

struct Reading {
    reader: Reader,
    /// A record read but left for the next batch (it did not fit this one).
    peeked: Option<(u64, Vec<SpanItem>, usize)>,
    last_persist: Instant,
}

impl DiskQueue {
    /// Opens (or creates) the queue directory; what an earlier run left there is
    /// delivered first.
    pub(crate) fn open(id: &str, dir: &Path, settings: &QueueSettings) -> Result<DiskQueue, String> {
        let options = Options { max_bytes: settings.max_bytes(), ..Options::default() };
        let opened = gencol_queue::open(dir, options).map_err(|e| format!("disk queue {}: {e}", dir.display()))?;
        let report = &opened.report;
        for file in &report.foreign_files {
            tracing::error!(exporter = id, file = %file.display(), "a file that is not a queue segment is in the disk queue directory: ignored (move it elsewhere)");
        }
        for problem in &report.problems {
            tracing::error!(exporter = id, dir = %dir.display(), "disk queue: {problem}");
        }
        if report.bytes > 0 {
            // Counted in bytes: sequence numbers would count a foreign or corrupt segment's name.
            tracing::info!(
                exporter = id,
                dir = %dir.display(),
                segments = report.segments,
                bytes = report.bytes,
                "disk queue holds records from an earlier run: delivering them first"
            );
        }
        let written = AtomicU64::new(report.next_seq.saturating_sub(1));
        let writer = Arc::new(Mutex::new(opened.writer));
        Ok(DiskQueue {
            id: id.to_owned(),
            dir: dir.to_owned(),
            syncer: start_syncer(id, dir, writer.clone(), settings.sync)?,
            writer,
            recent: Mutex::new(Recent::default()),
            reading: Mutex::new(Reading { reader: opened.reader, peeked: None, last_persist: Instant::now() }),
            not_empty: Notify::new(),
            when_full: settings.when_full,
            sync: settings.sync,
            max_bytes: settings.max_bytes(),
            written,
            closed: AtomicBool::new(false),
            reading_back: AtomicBool::new(true),
        })
    }

    /// Whether the receivers' 202 waits for this queue's fsync (`sync: always`).
    pub(crate) fn syncs_before_ack(&self) -> bool {
        self.sync == SyncMode::Always
    }

    /// Why a batch of about `bytes` would not be taken now (only with `block`).
    pub(crate) fn refuses(&self, bytes: usize) -> Option<String> {
        if self.when_full != WhenFull::Block {
            return None;
        }
        let w = lock(&self.writer);
        if w.has_room(bytes) {
            return None;
        }
        Some(format!(
            "disk queue {} is full ({} of queue.max_bytes {} bytes): the destination is not taking data; it resumes as it does, or raise queue.max_bytes",
            self.dir.display(),
            w.bytes(),
            self.max_bytes
        ))
    }

    /// Writes `items` as one record. With `sync: always`, the receiver's ack is then held
    /// by [`DiskQueue::hold_acks`] until the record is fsynced.
    pub(crate) fn push(&self, items: Vec<SpanItem>) -> Result<(), Refused> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let mut payload = Vec::new();
        encode_batch(&items, &mut payload);
        {
            let mut w = lock(&self.writer);
            if self.when_full == WhenFull::DropNewest && !w.has_room(payload.len()) {
                return Err(Refused::Dropped);
            }
            let seq = match w.append(&payload) {
                Ok(seq) => seq,
                // Only `drop_newest` checks for room here; a full `block` queue was
                // refused before the processors ran.
                Err(QueueError::Full { .. }) => return Err(Refused::Dropped),
                Err(e) => return Err(Refused::Unavailable(format!("cannot write the disk queue: {e}"))),
            };
            // Under the writer's lock, so records are kept in the order of their numbers.
            lock(&self.recent).keep(seq, items, payload.len());
            self.written.store(seq, Ordering::Release);
        }
        self.not_empty.notify_one();
        Ok(())
    }

    /// With `sync: always`, holds the receivers' acks of what was pushed until it is
    /// fsynced (one group commit for all of them); with a timed sync, 202 means written.
    pub(crate) fn hold_acks(&self, acks: &[AckToken]) {
        if self.sync == SyncMode::Always {
            self.syncer.hold(acks.iter().cloned());
        }
    }

    /// Holds `ack` until everything written so far is fsynced.
    pub(crate) fn hold_until_synced(&self, ack: &AckToken) {
        self.syncer.hold([ack.clone()]);
    }

    pub(crate) async fn pop(&self, limit: BatchLimit) -> Option<Taken> {
        take_or_wait(&self.not_empty, || self.take(limit), || self.is_closed()).await
    }

    /// Reads whole records up to `limit` (at least one when any is there) without waiting.
    pub(crate) fn take(&self, limit: BatchLimit) -> Option<Taken> {
        if limit.spans == 0 || limit.bytes == 0 {
            return None;
        }
        let mut guard = lock(&self.reading);
        let r = &mut *guard;
        let mut taken = Taken { items: Vec::new(), bytes: 0, seqs: Vec::new(), acks: Vec::new() };
        loop {
            let (seq, items, bytes) = match r.peeked.take() {
                Some(peeked) => peeked,
                None => match r.reader.next() {
                    Ok(Read::Record { seq, payload, .. }) => {
                        match lock(&self.recent).take(seq).map_or_else(|| decode_batch(&payload), Ok) {
                            Ok(items) => (seq, items, payload.len()),
                            Err(e) => {
                                tracing::error!(exporter = %self.id, dir = %self.dir.display(), seq, "a disk queue record could not be decoded, skipping it (1 record lost): {e}");
                                r.reader.ack(seq);
                                continue;
                            }
                        }
                    }
                    Ok(Read::Skipped(s)) => {
                        // SPEC §7: an error naming the file and the records lost, and on.
                        let cause = if s.torn_tail {
                            "a record cut short, as a crash while writing leaves it (such a record was never acknowledged to its sender)".to_owned()
                        } else {
                            s.reason.clone()
                        };
                        tracing::error!(exporter = %self.id, file = %s.file.display(), offset = s.offset, bytes = s.bytes, records_lost = s.records_lost, "disk queue: skipped unreadable data in {}: {cause}", s.file.display());
                        continue;
                    }
                    Ok(Read::End) => break,
                    Err(e) => {
                        tracing::error!(exporter = %self.id, "cannot read the disk queue: {e}");
                        break;
                    }
                },
            };
            let fits = taken.items.len() + items.len() <= limit.spans && taken.bytes + bytes <= limit.bytes;
            if !taken.seqs.is_empty() && !fits {
                r.peeked = Some((seq, items, bytes));
                break;
            }
            taken.items.extend(items);
            taken.bytes += bytes;
            taken.seqs.push(seq);
            if !fits {
                break;
            }
        }
        (!taken.seqs.is_empty()).then_some(taken)
    }

    /// The records of a sent (or refused) batch are done: never read again.
    pub(crate) fn done(&self, seqs: &[u64]) {
        let mut r = lock(&self.reading);
        for &seq in seqs {
            r.reader.ack(seq);
        }
        // Also at once when nothing is left to deliver: no later delivery would come to
        // write it down, and a full disk or queue only gets its space back this way.
        if r.last_persist.elapsed() >= PERSIST_ACKS_EVERY || r.reader.outstanding() == 0 {
            r.last_persist = Instant::now();
            self.persist(&mut r.reader);
        }
    }

    /// Writes down what was delivered, once the state that rides on the queues (the
    /// `hierarchy` journal) is durable: until then its records must stay.
    fn persist(&self, reader: &mut Reader) {
        if self.reading_back.load(Ordering::Acquire) {
            return;
        }
        match crate::queue_backed::all_durable() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(exporter = %self.id, "delivered disk queue records are kept until the hierarchy journal can be fsynced: {e}");
                return;
            }
        }
        if let Err(e) = reader.persist_acks() {
            tracing::warn!(exporter = %self.id, "cannot record delivered disk queue records (they may be sent again after a restart): {e}");
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops taking batches; the syncer makes what was written durable and stops; the
    /// delivered position is written down. What is left stays for the next start.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.not_empty.notify_waiters();
        self.syncer.stop();
        self.persist_acks();
    }

    /// Writes down what was delivered (after the last sends of a shutdown), so a restart
    /// does not send it again.
    pub(crate) fn persist_acks(&self) {
        self.persist(&mut lock(&self.reading).reader);
    }

    /// The pipeline read this queue back (or had no need to): delivered records may be
    /// written down as such, and their files deleted.
    pub(crate) fn read_back_done(&self) {
        if self.reading_back.swap(false, Ordering::AcqRel) {
            self.persist_acks();
        }
    }

    /// Reads back the records not delivered yet that were written at `since_ms` (wall
    /// clock) or later, oldest first, as the pipeline handed them over (see
    /// [`crate::Processor::read_back_from`]). Damaged records are skipped (the sender
    /// reports them when it reaches them).
    pub(crate) fn read_back(&self, since_ms: u64, mut each: impl FnMut(Vec<SpanItem>, u64)) {
        let mut reader = match gencol_queue::read_back(&self.dir) {
            Ok(reader) => reader,
            Err(e) => {
                tracing::error!(exporter = %self.id, "cannot read the disk queue back: {e}");
                return;
            }
        };
        let mut errors = 0;
        loop {
            match reader.next() {
                Ok(Read::Record { time_ms, payload, .. }) if time_ms >= since_ms => match decode_batch(&payload) {
                    Ok(items) => each(items, time_ms),
                    Err(e) => tracing::debug!(exporter = %self.id, "a record read back could not be decoded: {e}"),
                },
                Ok(Read::Record { .. } | Read::Skipped(_)) => {}
                Ok(Read::End) => break,
                // The reader gives up a file that fails a few times in a row (`Skipped`);
                // the bound only guards against a reader that never does.
                Err(e) if errors < 100 => {
                    errors += 1;
                    tracing::warn!(exporter = %self.id, "reading the disk queue back: {e}");
                }
                Err(e) => {
                    tracing::error!(exporter = %self.id, "cannot read the disk queue back, the rest is not read: {e}");
                    break;
                }
            }
        }
    }

    /// Records not delivered yet (read or not).
    pub(crate) fn len(&self) -> usize {
        let acked = lock(&self.reading).reader.acked_upto();
        usize::try_from(self.written.load(Ordering::Acquire).saturating_sub(acked)).unwrap_or(usize::MAX)
    }

    /// Bytes of the live segment files.
    pub(crate) fn bytes(&self) -> u64 {
        lock(&self.writer).bytes()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The queue's group commit: one fsync covers every record written before it started.
fn start_syncer(id: &str, dir: &Path, writer: Arc<Mutex<Writer>>, mode: SyncMode) -> Result<GroupSync, String> {
    let sync = Box::new(move || {
        // The sync point is taken under the lock (cheap); the fsync runs without it, so
        // writers keep appending meanwhile.
        let point = lock(&writer).sync_point();
        point.sync().map(drop).inspect_err(|_| lock(&writer).sync_failed(point))
    });
    let every = match mode {
        SyncMode::Always => None,
        SyncMode::Every(every) => Some(every),
    };
    GroupSync::start(&format!("the disk queue of exporter `{id}` ({})", dir.display()), sync, every)
        .map_err(|e| format!("cannot start the disk queue's fsync thread: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gencol_config::ByteSize;
    use gencol_model::Origin;

    use super::*;
    use crate::delivery::{MAX_BATCH, QueueKind};

    fn spans(names: &[&str]) -> Vec<SpanItem> {
        let origin = Arc::new(Origin::default());
        names
            .iter()
            .map(|n| {
                let span = opentelemetry_proto::tonic::trace::v1::Span { name: (*n).into(), ..Default::default() };
                SpanItem { origin: origin.clone(), span, generation: None }
            })
            .collect()
    }

    /// A queue whose pipeline has read it back, as it has once running.
    fn opened(dir: &Path, settings: &QueueSettings) -> DiskQueue {
        let q = DiskQueue::open("otlp", dir, settings).unwrap();
        q.read_back_done();
        q
    }

    fn settings() -> QueueSettings {
        QueueSettings { kind: QueueKind::Disk, ..QueueSettings::default() }
    }

    fn names(t: &Taken) -> Vec<&str> {
        t.items.iter().map(|i| i.span.name.as_str()).collect()
    }

    #[tokio::test]
    async fn an_ack_waits_for_the_fsync_and_what_was_not_delivered_comes_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = opened(dir.path(), &settings());
            let (ack, wait) = AckToken::new();
            q.push(spans(&["a", "b"])).unwrap();
            q.push(spans(&["c"])).unwrap();
            q.hold_acks(&[ack]);
            assert_eq!(wait.wait(Duration::from_secs(5)).await, Ok(()), "fsynced, then acknowledged");
            let first = q.take(BatchLimit { spans: 2, bytes: usize::MAX }).unwrap();
            assert_eq!(names(&first), ["a", "b"], "whole records, within the limit");
            q.done(&first.seqs);
            q.close();
            assert_eq!(q.len(), 1);
        }
        // As after a crash or a restart: only what was not delivered is read again.
        let q = opened(dir.path(), &settings());
        let again = q.pop(MAX_BATCH).await.unwrap();
        assert_eq!(names(&again), ["c"]);
        q.close();
    }

    #[tokio::test]
    async fn a_full_queue_refuses_with_block_and_drops_with_drop_newest() {
        let dir = tempfile::tempdir().unwrap();
        let small = QueueSettings { max_bytes: Some(ByteSize(200)), ..settings() };
        let q = opened(dir.path(), &small);
        q.push(spans(&[&"x".repeat(150)])).unwrap();
        let refusal = q.refuses(150).expect("full");
        assert!(refusal.contains("queue.max_bytes"), "{refusal}");
        q.close();

        let dir = tempfile::tempdir().unwrap();
        let dropping = QueueSettings { when_full: WhenFull::DropNewest, ..small };
        let q = opened(dir.path(), &dropping);
        assert!(q.refuses(150).is_none(), "drop_newest never refuses a request");
        q.push(spans(&[&"x".repeat(150)])).unwrap();
        assert!(matches!(q.push(spans(&[&"y".repeat(150)])), Err(Refused::Dropped)));
        q.close();
    }

    #[test]
    fn records_kept_in_memory_stay_a_bounded_run_and_are_taken_once() {
        let mut recent = Recent::default();
        let half = RECENT_BYTES / 2 + 1;
        recent.keep(1, spans(&["a"]), half);
        recent.keep(2, spans(&["b"]), half);
        assert_eq!(recent.records.len(), 1, "past the bound a record is read from disk instead");
        recent.keep(3, spans(&["c"]), 10);
        assert!(recent.take(0).is_none());
        assert_eq!(recent.take(1).unwrap()[0].span.name, "a");
        assert!(recent.take(2).is_none(), "2 was not kept");
        assert_eq!(recent.take(3).unwrap()[0].span.name, "c");
        assert!(recent.take(3).is_none(), "taken once");
        assert_eq!(recent.bytes, 0);

        recent.keep(5, spans(&["e"]), 10);
        recent.keep(6, spans(&["f"]), 10);
        // A record skipped by the reader (say, corrupt) passes over what was kept for it.
        assert_eq!(recent.take(6).unwrap()[0].span.name, "f");
        assert!(recent.records.is_empty() && recent.bytes == 0);
    }

    #[tokio::test]
    async fn what_a_sender_takes_from_memory_is_what_it_would_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let q = opened(dir.path(), &settings());
        q.push(spans(&["a", "b"])).unwrap();
        q.push(spans(&["c"])).unwrap();
        let from_memory = q.take(MAX_BATCH).unwrap();
        assert_eq!(names(&from_memory), ["a", "b", "c"]);
        assert!(lock(&q.recent).records.is_empty(), "taken from memory");
        q.close();
        drop(q);
        let q = opened(dir.path(), &settings());
        let from_disk = q.take(MAX_BATCH).unwrap();
        assert_eq!(from_disk.seqs, from_memory.seqs);
        for (m, d) in from_memory.items.iter().zip(&from_disk.items) {
            assert_eq!((&m.span, &*m.origin, &m.generation), (&d.span, &*d.origin, &d.generation));
        }
        q.close();
    }

    #[tokio::test]
    async fn a_second_gencol_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let q = opened(dir.path(), &settings());
        let second = DiskQueue::open("otlp", dir.path(), &settings()).err().unwrap();
        assert!(second.contains(&dir.path().display().to_string()), "{second}");
        q.close();
    }
}
