//! The `hierarchy` journal: what a crash must not take from [`super::SpanHierarchy`]
//! when its pipeline has a disk queue (SPEC §7).
//!
//! One file, `journal`, of records `[len u32 LE][crc32 u32 LE][protobuf entry]`:
//! - `Held`: a trace's shared spans not sent yet, as they stand after a generation joined
//!   them (the last one of a trace wins), and when its window closes (wall clock);
//! - `Released`: ids of a trace's shared spans that are fsynced in every disk queue of the
//!   pipeline, and until when to remember them.
//!
//! - `Mark`: every generation in a record the pipeline's disk queues wrote before this
//!   wall-clock time is in the entries before it.
//!
//! `Held` entries are written before the receiver's 202. When every exporter of the
//! pipeline keeps what it gets in a disk queue fsynced before the 202 (no routing, its
//! own; the default pipeline), the journal is not fsynced before the 202 ("riding on the
//! queues"): after a crash it reads back the records written since its last durable
//! `Mark` and joins their generations again, and the queues forget delivered records only
//! after the journal made a `Mark` durable ([`gencol_engine::QueueBacked`]). Otherwise its
//! entries are fsynced with the 202 (group commit). `Released` entries are written only once
//! the released spans are fsynced in the exporters' queues, so a crash can at worst send a
//! root again (same id, same range), never lose it. When the file grows, it is rewritten
//! from the live state (written beside it, fsynced, renamed over it).
//!
//! Entries are written at the end of the last good one (not appended): a write cut short
//! (disk full) is cut off the file and the next entry takes its place, so no partial entry
//! ever sits between good ones.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gencol_engine::{AckToken, GroupSync, QueueBacked, register_queue_backed};
use gencol_model::SpanItem;
use gencol_model::stored::{decode_batch, encode_batch};
use prost::Message;

use super::processor::{SpanId, TraceId};

const JOURNAL: &str = "journal";
const JOURNAL_TMP: &str = "journal.tmp";
/// An entry longer than this is corruption (a held trace is two small spans).
const MAX_ENTRY: usize = 16 * 1024 * 1024;
/// Rewrite the journal once it is this large and four times its live state.
const COMPACT_AT: u64 = 8 * 1024 * 1024;

#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(bytes = "vec", tag = "2")]
    trace_id: Vec<u8>,
    /// `Held`: when the group window closes; `Released`: until when the ids are remembered.
    #[prost(uint64, tag = "3")]
    at_ms: u64,
    /// `Held`: the shared spans, in gencol's stored batch form.
    #[prost(bytes = "vec", tag = "4")]
    spans: Vec<u8>,
    /// `Released`: the span ids sent.
    #[prost(bytes = "vec", repeated, tag = "5")]
    span_ids: Vec<Vec<u8>>,
}

const HELD: u32 = 1;
const RELEASED: u32 = 2;
const MARK: u32 = 3;

/// How often a journal riding on the queues is fsynced when nothing asks (the queues ask
/// before each `ack`, at most every 200 ms while they deliver).
const RIDING_SYNC_EVERY: Duration = Duration::from_secs(1);
/// How often, at most, a journal fsynced before each 202 writes a `Mark` (with entries).
const MARK_EVERY: Duration = Duration::from_secs(1);
/// Records are read back from this long before the last `Mark`, in case the wall clock was
/// set back meanwhile (a step back of more than this can leave records unread).
const MARK_MARGIN_MS: u64 = 2_000;

/// What an earlier run left: held traces and remembered span ids, with wall-clock times,
/// and the last `Mark`.
#[derive(Default)]
pub(crate) struct Restored {
    pub held: HashMap<TraceId, (u64, Vec<SpanItem>)>,
    pub remembered: HashMap<TraceId, (u64, Vec<SpanId>)>,
    pub mark_ms: Option<u64>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) struct Journal {
    dir: PathBuf,
    file: Arc<JournalFile>,
    sync: GroupSync,
    /// Size of the journal right after its last rewrite.
    live_len: u64,
    /// Entries of the current batch, written with one `write` at [`Journal::write`].
    buf: Vec<u8>,
    /// Something was written since the last `hold`.
    unsynced: bool,
    /// Rewrites so far, to name the replaced journals.
    rewrites: u64,
    /// The last `Mark` read at open (or written then, for a journal without one).
    mark_ms: u64,
    /// Riding on the queues ([`Journal::ride_on_queues`]).
    riding: bool,
    /// The records were read back ([`Journal::replay_done`]); `Mark`s of now are allowed
    /// once what they added is written.
    replay_done: bool,
    replay_written: bool,
    /// When the last `Mark` was written, while not riding.
    last_mark: Instant,
}

/// The journal file, shared with its fsync (which runs on other threads).
struct JournalFile {
    path: PathBuf,
    inner: Mutex<FileState>,
}

struct FileState {
    file: File,
    /// End of the entries: where the next one is written.
    len: u64,
    /// A failed write left bytes past `len` that could not be cut off yet.
    debris: bool,
    /// Writes so far, and how many of them are known durable.
    writes: u64,
    durable: u64,
    /// A rewrite renamed a new file into place and the directory was not fsynced since:
    /// until it is, a power loss could bring the replaced file back.
    dir_unsynced: bool,
    /// An fsync failed: the kernel may have dropped what it could not write, so nothing
    /// written is known durable until a rewrite from the live state.
    failed: Option<String>,
    /// Riding on the queues: what the records read back added is written, so a `Mark`
    /// of now is true.
    marks_allowed: bool,
    /// When the last `Mark` was written by [`JournalFile::make_durable`].
    last_mark: Instant,
}

impl JournalFile {
    fn lock(&self) -> MutexGuard<'_, FileState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bytes` at the end of the entries. A failed write is cut off, so the next
    /// one takes its place; when even that fails, it is cut off before the next write.
    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = self.lock();
        let w = &mut *w;
        // Until a failed write's bytes are cut off, they could read as entries.
        let mut result = if w.debris { w.file.set_len(w.len) } else { Ok(()) };
        if result.is_ok() {
            w.debris = false;
            result = w.file.write_all_at(bytes, w.len);
            if result.is_err()
                && let Err(e) = w.file.set_len(w.len)
            {
                tracing::error!(file = %self.path.display(), "hierarchy journal: cannot cut off a failed write ({e}); cut off before the next write");
                w.debris = true;
            }
        }
        if result.is_ok() {
            w.len += bytes.len() as u64;
            w.writes += 1;
        }
        result
    }

    /// fsyncs what was written so far (and the directory after a rewrite's rename).
    fn sync(&self) -> std::io::Result<()> {
        let (file, writes, dir) = {
            let w = self.lock();
            if let Some(failed) = &w.failed {
                return Err(std::io::Error::other(format!("an earlier fsync failed ({failed})")));
            }
            if w.durable == w.writes && !w.dir_unsynced {
                return Ok(());
            }
            (w.file.try_clone()?, w.writes, w.dir_unsynced)
        };
        let synced = file.sync_data().and_then(|()| match (dir, self.path.parent()) {
            (true, Some(parent)) => File::open(parent)?.sync_all(),
            _ => Ok(()),
        });
        let mut w = self.lock();
        match synced {
            Ok(()) => {
                w.durable = w.durable.max(writes);
                // Only a rewrite sets it, and it counts as a write: a later one is not covered.
                if w.writes == writes {
                    w.dir_unsynced = false;
                }
                Ok(())
            }
            Err(e) => {
                w.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Whether an fsync failed since the last rewrite (the next one is owed now).
    fn failed(&self) -> bool {
        self.lock().failed.is_some()
    }
}

/// A journal riding on the queues writes a `Mark` at least this often while a queue asks
/// or its timer runs, even with nothing new in it, so that a start reads back little.
const IDLE_MARK_EVERY: Duration = Duration::from_secs(10);

impl QueueBacked for JournalFile {
    /// Writes a `Mark` of now (every record written before now had its entries written
    /// before it) and fsyncs; not before the records were read back after a start. A
    /// `Mark` that cannot be written (disk full) is left out: the entries fsynced without
    /// it are as durable, and a start then reads back from the last one.
    fn make_durable(&self) -> Result<bool, String> {
        let describe = |e: std::io::Error| format!("hierarchy journal {}: {e}", self.path.display());
        {
            let w = self.lock();
            if !w.marks_allowed {
                return Ok(false);
            }
            if w.durable == w.writes && !w.dir_unsynced && w.failed.is_none() && w.last_mark.elapsed() < IDLE_MARK_EVERY
            {
                return Ok(true);
            }
        }
        let mut mark = Vec::new();
        frame(&mark_entry(now_ms()), &mut mark);
        if self.append(&mark).is_ok() {
            self.lock().last_mark = Instant::now();
        }
        self.sync().map_err(describe)?;
        Ok(true)
    }
}

fn mark_entry(at_ms: u64) -> Entry {
    Entry { kind: MARK, trace_id: vec![], at_ms, spans: vec![], span_ids: vec![] }
}

/// The journal's fsync before each 202 (by the process's fsync thread, grouped).
fn before_each_ack(file: &Arc<JournalFile>) -> Result<GroupSync, String> {
    let synced = file.clone();
    GroupSync::start(&format!("the hierarchy journal {}", file.path.display()), Box::new(move || synced.sync()), None)
        .map_err(|e| format!("cannot start the journal's fsync thread: {e}"))
}

impl Journal {
    /// Opens the journal in `dir` (creating it), reading back what it holds.
    pub(crate) fn open(dir: &Path) -> Result<(Journal, Restored), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(JOURNAL);
        remove_old_journals(dir);
        let restored = match File::open(&path) {
            Ok(f) => read_entries(&path, f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Restored::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let file = Arc::new(JournalFile {
            path: path.clone(),
            inner: Mutex::new(FileState {
                file: open_rw(&path)?,
                len: 0,
                debris: false,
                writes: 0,
                durable: 0,
                dir_unsynced: false,
                failed: None,
                marks_allowed: false,
                last_mark: Instant::now(),
            }),
        });
        let sync = before_each_ack(&file)?;
        // A journal without a `Mark` was fsynced before every 202 (or is new): it holds
        // every generation of every record in the queues.
        let mark_ms = restored.mark_ms.unwrap_or_else(now_ms);
        let mut journal = Journal {
            dir: dir.to_owned(),
            file,
            sync,
            live_len: 0,
            buf: Vec::new(),
            unsynced: false,
            rewrites: 0,
            mark_ms,
            riding: false,
            replay_done: false,
            replay_written: false,
            last_mark: Instant::now(),
        };
        // Start from a clean file: the live state only, without a torn tail or old entries.
        journal.rewrite(&restored, &[], mark_ms).map_err(|e| format!("cannot rewrite {}: {e}", path.display()))?;
        Ok((journal, restored))
    }

    /// From when (wall clock, ms) the records of the pipeline's disk queues are to be read
    /// back: the last `Mark`, less a margin for a clock set back.
    pub(crate) fn read_back_from(&self) -> u64 {
        self.mark_ms.saturating_sub(MARK_MARGIN_MS)
    }

    /// Stops fsyncing before each 202 and rides on the pipeline's disk queues (see the
    /// module docs); [`Journal::replay_done`] once their records were read back.
    pub(crate) fn ride_on_queues(&mut self) -> Result<(), String> {
        let file = self.file.clone();
        let sync = GroupSync::start(
            &format!("the hierarchy journal {}", self.file.path.display()),
            Box::new(move || file.make_durable().map(|_| ()).map_err(std::io::Error::other)),
            Some(RIDING_SYNC_EVERY),
        )
        .map_err(|e| format!("cannot start the journal's fsync thread: {e}"))?;
        // The fsync before each 202 ends here; what waits for it is released by its stop.
        std::mem::replace(&mut self.sync, sync).stop();
        let backed: Arc<dyn QueueBacked> = self.file.clone();
        register_queue_backed(Arc::downgrade(&backed));
        self.riding = true;
        Ok(())
    }

    /// The records were read back: once what they added is written, `Mark`s may be written.
    pub(crate) fn replay_done(&mut self) {
        self.replay_done = true;
    }

    /// Makes the journal durable as a disk queue asks before its `ack`; its length then.
    #[cfg(test)]
    pub(crate) fn made_durable(&self) -> u64 {
        assert!(self.file.make_durable().expect("fsync"), "records were read back");
        self.file.lock().len
    }

    /// The `Mark` a rewrite from the live state may carry: now, unless records are still
    /// to be read back (then the state holds no more than the last `Mark` said).
    pub(crate) fn mark_for_rewrite(&self) -> u64 {
        if self.riding && !self.replay_done { self.mark_ms } else { now_ms() }
    }

    /// Adds a `Held` entry to the current batch.
    pub(crate) fn held(&mut self, trace_id: &TraceId, due_ms: u64, spans: &[SpanItem]) {
        let mut encoded = Vec::new();
        encode_batch(spans, &mut encoded);
        let entry = Entry { kind: HELD, trace_id: trace_id.to_vec(), at_ms: due_ms, spans: encoded, span_ids: vec![] };
        frame(&entry, &mut self.buf);
    }

    /// Adds a `Released` entry to the current batch.
    pub(crate) fn released(&mut self, trace_id: &TraceId, until_ms: u64, ids: &[SpanId]) {
        let entry = Entry {
            kind: RELEASED,
            trace_id: trace_id.to_vec(),
            at_ms: until_ms,
            spans: vec![],
            span_ids: ids.iter().map(|i| i.to_vec()).collect(),
        };
        frame(&entry, &mut self.buf);
    }

    /// Writes the current batch (one `write`). A failure is logged: the receiver's ack
    /// is failed by [`Journal::hold`] so the sender retries, and what was written of the
    /// batch is cut off, so the next batch is written in its place.
    pub(crate) fn write(&mut self) -> std::io::Result<()> {
        if !self.riding && self.last_mark.elapsed() >= MARK_EVERY && !self.buf.is_empty() {
            // Every record written so far had its entries written before (and fsynced with
            // its 202 or before); the `Mark` itself is fsynced with this batch.
            frame(&mark_entry(now_ms()), &mut self.buf);
            self.last_mark = Instant::now();
        }
        // The entries of the records read back have no sender to retry them: kept until
        // written, and no `Mark` of now before.
        let read_back_owed = self.replay_done && !self.replay_written;
        if !self.buf.is_empty() {
            let written = self.file.append(&self.buf);
            if written.is_err() && read_back_owed {
                return written;
            }
            self.buf.clear();
            written?;
            self.unsynced = true;
        }
        if read_back_owed {
            self.file.lock().marks_allowed = true;
            self.replay_written = true;
        }
        Ok(())
    }

    /// Holds `ack` until what was written so far is fsynced (not when riding on the
    /// queues: they hold it).
    pub(crate) fn hold(&mut self, acks: &[AckToken]) {
        if std::mem::take(&mut self.unsynced) && !self.riding {
            self.sync.hold(acks.iter().cloned());
        }
    }

    /// Whether the journal has grown enough to be rewritten from the live state, or must
    /// be after a failed fsync.
    pub(crate) fn wants_rewrite(&self) -> bool {
        self.file.failed() || self.file.lock().len > COMPACT_AT.max(4 * self.live_len)
    }

    /// Replaces the journal by the live state: `state` as `Held`/`Released` entries,
    /// then `pending` (released, not yet durable in the queues) as `Held` again, then a
    /// `Mark` of `mark_ms` (the records written before it are in the state).
    pub(crate) fn rewrite(
        &mut self,
        state: &Restored,
        pending: &[(TraceId, Vec<SpanItem>)],
        mark_ms: u64,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for (trace_id, (until_ms, ids)) in &state.remembered {
            let entry = Entry {
                kind: RELEASED,
                trace_id: trace_id.to_vec(),
                at_ms: *until_ms,
                spans: vec![],
                span_ids: ids.iter().map(|i| i.to_vec()).collect(),
            };
            frame(&entry, &mut buf);
        }
        let now = now_ms();
        let held = state.held.iter().map(|(t, (due, spans))| (t, *due, spans.as_slice()));
        let pending = pending.iter().map(|(t, spans)| (t, now, spans.as_slice()));
        for (trace_id, due_ms, spans) in held.chain(pending) {
            let mut encoded = Vec::new();
            encode_batch(spans, &mut encoded);
            let entry =
                Entry { kind: HELD, trace_id: trace_id.to_vec(), at_ms: due_ms, spans: encoded, span_ids: vec![] };
            frame(&entry, &mut buf);
        }
        frame(&mark_entry(mark_ms), &mut buf);
        let tmp = self.dir.join(JOURNAL_TMP);
        let mut file = File::create(&tmp)?;
        file.write_all(&buf)?;
        file.sync_data()?;
        let path = self.dir.join(JOURNAL);
        // The replaced journal keeps a second name until a thread of its own deletes it:
        // freeing its blocks can wait for the device (a filesystem mounted with `discard`
        // trims them, 12–16 ms per 8 MiB measured), and this runs on the pipeline's task.
        self.rewrites += 1;
        let old = self.dir.join(format!("journal.{}{OLD_SUFFIX}", self.rewrites));
        let linked = std::fs::hard_link(&path, &old).is_ok();
        // Once the rename is done, the journal written to is the one at `path` (an entry
        // written to the replaced one would be lost with it at the next start).
        std::fs::rename(&tmp, &path)?;
        {
            let mut w = self.file.lock();
            w.file = file;
            w.len = buf.len() as u64;
            w.debris = false;
            w.writes += 1;
            // The new file holds the whole live state, fsynced: what failed before is moot.
            w.failed = None;
            w.dir_unsynced = true;
        }
        self.live_len = buf.len() as u64;
        // The rename is durable, and the journal with it, once the directory is fsynced.
        self.file.sync()?;
        if linked {
            let spawned = std::thread::Builder::new().name("gencol-journal-rm".to_owned()).spawn({
                let old = old.clone();
                move || {
                    let _ = std::fs::remove_file(old);
                }
            });
            if spawned.is_err() {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(())
    }
}

/// Replaced journals waiting to be deleted end in this; one left by a crash is deleted at open.
const OLD_SUFFIX: &str = ".old";

fn remove_old_journals(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("journal.") && name.ends_with(OLD_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn open_rw(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn frame(entry: &Entry, out: &mut Vec<u8>) {
    let payload = entry.encode_to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Reads every entry up to the end or the first one that does not check out (a torn
/// tail after a crash; anything after it is logged as lost).
fn read_entries(path: &Path, file: File) -> Restored {
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::new(file);
    let mut restored = Restored::default();
    let mut offset = 0u64;
    let mut entries = 0u64;
    loop {
        let mut header = [0u8; 8];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                if offset < total {
                    tracing::warn!(file = %path.display(), offset, bytes = total - offset, "hierarchy journal: an entry cut short by a crash was skipped (its batch was never acknowledged)");
                }
                break;
            }
            Err(e) => {
                tracing::error!(file = %path.display(), offset, "hierarchy journal: cannot read: {e}");
                break;
            }
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut payload = vec![0u8; len.min(MAX_ENTRY)];
        let complete = len <= MAX_ENTRY && reader.read_exact(&mut payload).is_ok();
        let entry = (complete && crc32fast::hash(&payload) == crc).then(|| Entry::decode(&*payload));
        let Some(Ok(entry)) = entry else {
            let rest = total.saturating_sub(offset);
            if offset + 8 + len as u64 > total && len <= MAX_ENTRY {
                tracing::warn!(file = %path.display(), offset, bytes = rest, "hierarchy journal: an entry cut short by a crash was skipped (its batch was never acknowledged)");
            } else {
                tracing::error!(file = %path.display(), offset, bytes = rest, entries_read = entries, "hierarchy journal: corrupt entry; it and the rest of the file are skipped (roots of those traces may be sent with a partial time range)");
            }
            break;
        };
        offset += 8 + len as u64;
        entries += 1;
        apply(&mut restored, entry);
    }
    restored
}

fn apply(state: &mut Restored, entry: Entry) {
    if entry.kind == MARK {
        state.mark_ms = Some(entry.at_ms);
        return;
    }
    let Ok(trace_id) = TraceId::try_from(entry.trace_id.as_slice()) else { return };
    match entry.kind {
        HELD => {
            if let Ok(spans) = decode_batch(&entry.spans) {
                state.held.insert(trace_id, (entry.at_ms, spans));
            }
        }
        RELEASED => {
            let ids: Vec<SpanId> = entry.span_ids.iter().filter_map(|i| SpanId::try_from(i.as_slice()).ok()).collect();
            // Only the spans released: a trace may hold newer shared spans (a new
            // `span_name`) that joined after this release.
            if let Some((_, held)) = state.held.get_mut(&trace_id) {
                held.retain(|s| SpanId::try_from(s.span.span_id.as_slice()).is_ok_and(|id| !ids.contains(&id)));
                if held.is_empty() {
                    state.held.remove(&trace_id);
                }
            }
            let remembered = state.remembered.entry(trace_id).or_default();
            remembered.0 = remembered.0.max(entry.at_ms);
            for id in ids {
                if !remembered.1.contains(&id) {
                    remembered.1.push(id);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_entry_behind_and_the_next_one_takes_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL);
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        journal.released(&[1; 16], 10, &[[1; 8]]);
        journal.write().unwrap();
        let rw = std::mem::replace(&mut journal.file.lock().file, File::open(&path).unwrap());
        // A handle that cannot write (as a full or failing disk): the write and the cut
        // both fail, so the cut is owed to the next write.
        journal.released(&[2; 16], 20, &[[2; 8]]);
        assert!(journal.write().is_err());
        assert!(journal.file.lock().debris);
        journal.file.lock().file = rw;
        journal.released(&[3; 16], 30, &[[3; 8]]);
        journal.write().unwrap();
        assert!(!journal.file.lock().debris);
        let restored = read_entries(&path, File::open(&path).unwrap());
        let mut traces: Vec<_> = restored.remembered.keys().map(|t| t[0]).collect();
        traces.sort_unstable();
        assert_eq!(traces, [1, 3], "the failed entry is not there, the next one is");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), journal.file.lock().len);
    }
}
