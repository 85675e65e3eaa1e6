//! The `hierarchy` journal: what a crash must not take from [`super::SpanHierarchy`]
//! when its pipeline has a disk queue (SPEC §7).
//!
//! One file, `journal`, of records `[len u32 LE][crc32 u32 LE][protobuf entry]`:
//! - `Held`: a trace's shared spans not sent yet, as they stand after a generation joined
//!   them (the last one of a trace wins), and when its window closes (wall clock);
//! - `Released`: ids of a trace's shared spans that are fsynced in every disk queue of the
//!   pipeline, and until when to remember them.
//!
//! `Held` entries are written before the receiver's 202 and fsynced with it (group
//! commit). `Released` entries are written only once the released spans are fsynced in
//! the exporters' queues, so a crash can at worst send a root again (same id, same range),
//! never lose it. When the file grows, it is rewritten from the live state (written
//! beside it, fsynced, renamed over it).
//!
//! Entries are written at the end of the last good one (not appended): a write cut short
//! (disk full) is cut off the file and the next entry takes its place, so no partial entry
//! ever sits between good ones.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use gencol_engine::{AckToken, GroupSync};
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

/// What an earlier run left: held traces and remembered span ids, with wall-clock times.
#[derive(Default)]
pub(crate) struct Restored {
    pub held: HashMap<TraceId, (u64, Vec<SpanItem>)>,
    pub remembered: HashMap<TraceId, (u64, Vec<SpanId>)>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) struct Journal {
    dir: PathBuf,
    file: Arc<Mutex<File>>,
    sync: GroupSync,
    /// End of the entries: where the next one is written.
    len: u64,
    /// A failed write left bytes past `len` that could not be cut off yet.
    debris: bool,
    /// Size of the journal right after its last rewrite.
    live_len: u64,
    /// Entries of the current batch, written with one `write` at [`Journal::write`].
    buf: Vec<u8>,
    /// Something was written since the last `hold`.
    unsynced: bool,
    /// Rewrites so far, to name the replaced journals.
    rewrites: u64,
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
        let file = open_rw(&path)?;
        let file = Arc::new(Mutex::new(file));
        let synced = file.clone();
        let sync = GroupSync::start(
            &format!("the hierarchy journal {}", path.display()),
            Box::new(move || {
                let f = synced.lock().unwrap_or_else(|p| p.into_inner()).try_clone()?;
                f.sync_data()
            }),
            None,
        )
        .map_err(|e| format!("cannot start the journal's fsync thread: {e}"))?;
        let mut journal = Journal {
            dir: dir.to_owned(),
            file,
            sync,
            len: 0,
            debris: false,
            live_len: 0,
            buf: Vec::new(),
            unsynced: false,
            rewrites: 0,
        };
        // Start from a clean file: the live state only, without a torn tail or old entries.
        journal.rewrite(&restored, &[]).map_err(|e| format!("cannot rewrite {}: {e}", path.display()))?;
        Ok((journal, restored))
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
        if self.buf.is_empty() {
            return Ok(());
        }
        let end = self.len + self.buf.len() as u64;
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        self.unsynced = true;
        // A failed write whose bytes could not be cut off is cut off first: until then,
        // stale bytes past the end could read as entries at the next start.
        let mut result = if self.debris { file.set_len(self.len) } else { Ok(()) };
        if result.is_ok() {
            self.debris = false;
            result = file.write_all_at(&self.buf, self.len);
            if result.is_err()
                && let Err(e) = file.set_len(self.len)
            {
                tracing::error!(file = %self.dir.join(JOURNAL).display(), "hierarchy journal: cannot cut off a failed write ({e}); cut off before the next write");
                self.debris = true;
            }
        }
        drop(file);
        self.buf.clear();
        if result.is_ok() {
            self.len = end;
        }
        result
    }

    /// Holds `ack` until what was written so far is fsynced.
    pub(crate) fn hold(&mut self, acks: &[AckToken]) {
        if std::mem::take(&mut self.unsynced) {
            self.sync.hold(acks.iter().cloned());
        }
    }

    /// Whether the journal has grown enough to be rewritten from the live state.
    pub(crate) fn wants_rewrite(&self) -> bool {
        self.len > COMPACT_AT.max(4 * self.live_len)
    }

    /// Replaces the journal by the live state: `state` as `Held`/`Released` entries,
    /// then `pending` (released, not yet durable in the queues) as `Held` again.
    pub(crate) fn rewrite(&mut self, state: &Restored, pending: &[(TraceId, Vec<SpanItem>)]) -> std::io::Result<()> {
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
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
        self.len = buf.len() as u64;
        self.live_len = self.len;
        self.debris = false;
        File::open(&self.dir)?.sync_all()?;
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
        let rw = std::mem::replace(&mut *journal.file.lock().unwrap(), File::open(&path).unwrap());
        // A handle that cannot write (as a full or failing disk): the write and the cut
        // both fail, so the cut is owed to the next write.
        journal.released(&[2; 16], 20, &[[2; 8]]);
        assert!(journal.write().is_err());
        assert!(journal.debris);
        *journal.file.lock().unwrap() = rw;
        journal.released(&[3; 16], 30, &[[3; 8]]);
        journal.write().unwrap();
        assert!(!journal.debris);
        let restored = read_entries(&path, File::open(&path).unwrap());
        let mut traces: Vec<_> = restored.remembered.keys().map(|t| t[0]).collect();
        traces.sort_unstable();
        assert_eq!(traces, [1, 3], "the failed entry is not there, the next one is");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), journal.len);
    }
}
