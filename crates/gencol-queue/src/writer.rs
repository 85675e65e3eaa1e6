//! Appending records: one write per record, whole or cut back, and a cheap handle for
//! making them durable on another thread.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::format::{
    MAX_PAYLOAD, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, encode_record, reused_segment_header, segment_file_name,
    segment_header,
};
use crate::{Options, QueueError, SegmentState, Shared, lock};

/// The producing side of an open queue. Each record goes to the newest segment in a single
/// write, and becomes visible to the [`crate::Reader`] only once that write completed.
pub struct Writer {
    dir: PathBuf,
    opts: Options,
    shared: Arc<Mutex<Shared>>,
    /// `None` right after open (old segments are never appended to) and after a failed write
    /// that could not be cut back: the next append starts a new segment.
    active: Option<ActiveSegment>,
    next_seq: u64,
    last_seq: u64,
    /// Every segment written since the last sync point.
    unsynced: Vec<Arc<File>>,
    created_segment: bool,
    buf: Vec<u8>,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

struct ActiveSegment {
    first_seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// The length up to which it holds whole records.
    len: u64,
    in_unsynced: bool,
}

/// Failures the tests inject where a disk would fail.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Faults {
    /// The next record write stops after this many bytes and fails.
    pub fail_write_after: Option<usize>,
    /// Cutting the segment back after a failed write fails too.
    pub fail_truncate: bool,
}

/// What must reach the disk for every record appended before it was taken to be durable:
/// taken cheaply by the writer, synced on another thread while the writer keeps appending.
pub struct SyncPoint {
    files: Vec<Arc<File>>,
    dir: Option<PathBuf>,
    upto: u64,
}

impl SyncPoint {
    /// The highest seq this point covers (0 if no record was appended yet).
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// Blocking: syncs every file's data, and the directory when a segment file was created
    /// or deleted. Returns [`SyncPoint::upto`].
    pub fn sync(&self) -> io::Result<u64> {
        for file in &self.files {
            file.sync_data()?;
        }
        if let Some(dir) = &self.dir {
            sync_dir(dir)?;
        }
        Ok(self.upto)
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Elsewhere a directory cannot be opened as a file, and its entries are durable with the files.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

impl Writer {
    pub(crate) fn new(dir: &Path, opts: Options, shared: Arc<Mutex<Shared>>, next_seq: u64) -> Self {
        Writer {
            dir: dir.to_path_buf(),
            opts,
            shared,
            active: None,
            next_seq,
            last_seq: 0,
            unsynced: Vec::new(),
            created_segment: false,
            buf: Vec::new(),
            #[cfg(test)]
            faults: Faults::default(),
        }
    }

    /// Appends one record and returns its seq. It goes to the segment in one write, so a
    /// concurrent reader or a crash sees all of it or a torn tail. [`QueueError::Full`] when
    /// the bytes on disk and this record would pass `max_bytes`, unless no record is waiting
    /// (an empty queue always takes one, however large). On an I/O error the segment is cut
    /// back to its length before the record, or if that fails too, the next record starts a
    /// new segment; either way no partial record is ever read.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, QueueError> {
        let record_len = record_len(payload.len())?;
        self.check_room(record_len)?;
        let seq = self.next_seq;
        let mut active = match self.active.take() {
            Some(active) if !self.should_roll(&active) => active,
            _ => self.create_segment(seq)?,
        };
        encode_record(&mut self.buf, seq, now_ms(), payload);
        if let Err(e) = self.write_record(&active.file, active.len) {
            let path = active.path.clone();
            self.cut_back(active, record_len);
            // The next record starts a new segment, so this one can be deleted once its
            // records are delivered: on a full disk, that is how space comes back.
            self.retire_active();
            return Err(QueueError::io(path, e));
        }
        active.len += record_len;
        if !active.in_unsynced {
            self.unsynced.push(Arc::clone(&active.file));
            active.in_unsynced = true;
        }
        self.next_seq = seq.saturating_add(1);
        self.last_seq = seq;
        let mut shared = lock(&self.shared);
        if let Some(segment) = shared.segments.get_mut(&active.first_seq) {
            segment.limit = Some(active.len);
            segment.bytes += record_len;
            shared.bytes += record_len;
        }
        shared.next_seq = Some(self.next_seq);
        drop(shared);
        self.active = Some(active);
        Ok(seq)
    }

    /// Whether a record of `payload_len` bytes would be taken now, so a caller can check
    /// every queue before writing to any.
    pub fn has_room(&self, payload_len: usize) -> bool {
        record_len(payload_len).is_ok_and(|len| self.check_room(len).is_ok())
    }

    /// Whether the next record goes to a new segment: the active one is full, or every
    /// record in it was delivered and it is large enough that freeing it is worth a new
    /// file (a queue that keeps up would otherwise never give its only segment's space back).
    fn should_roll(&self, active: &ActiveSegment) -> bool {
        active.len >= self.opts.segment_bytes
            || (active.len >= ROLL_WHEN_DELIVERED.min(self.opts.max_bytes / 4)
                && lock(&self.shared).acked_upto >= self.last_seq)
    }

    /// Stops appending to the active segment (after a failed write). One that holds no
    /// record is removed, so the next segment, which starts at the same seq, can take its name.
    fn retire_active(&mut self) {
        let Some(active) = self.active.take() else { return };
        let mut shared = lock(&self.shared);
        if shared.active == Some(active.first_seq) {
            shared.active = None;
        }
        if active.len <= SEGMENT_HEADER_LEN && fs::remove_file(&active.path).is_ok() {
            if let Some(segment) = shared.segments.remove(&active.first_seq) {
                shared.bytes = shared.bytes.saturating_sub(segment.bytes);
            }
            shared.dir_changed = true;
        }
    }

    fn check_room(&self, record_len: u64) -> Result<(), QueueError> {
        let rolls = self.active.as_ref().is_none_or(|active| self.should_roll(active));
        let needed = record_len + if rolls { SEGMENT_HEADER_LEN } else { 0 };
        let shared = lock(&self.shared);
        // Taking one record into an empty queue whatever its size keeps a record larger than
        // max_bytes from blocking the queue forever.
        let empty = shared.acked_upto.saturating_add(1) >= self.next_seq;
        if empty || shared.bytes.saturating_add(needed) <= self.opts.max_bytes {
            Ok(())
        } else {
            Err(QueueError::Full { bytes: shared.bytes, max_bytes: self.opts.max_bytes })
        }
    }

    /// What to sync so that every record appended so far is durable: the segments written
    /// since the last sync point, and the directory if a segment file was created or deleted.
    pub fn sync_point(&mut self) -> SyncPoint {
        if let Some(active) = &mut self.active {
            active.in_unsynced = false;
        }
        let dir_changed = std::mem::take(&mut lock(&self.shared).dir_changed);
        let dir_changed = std::mem::take(&mut self.created_segment) || dir_changed;
        SyncPoint {
            files: std::mem::take(&mut self.unsynced),
            dir: dir_changed.then(|| self.dir.clone()),
            upto: self.last_seq,
        }
    }

    /// A sync of `point` failed: what it was to make durable is synced again by the next
    /// sync point (the files, and the directory), so a record acknowledged after a later
    /// sync does not sit in a segment whose data or directory entry never reached the disk.
    pub fn sync_failed(&mut self, point: SyncPoint) {
        for file in point.files {
            if let Some(active) = self.active.as_mut().filter(|a| Arc::ptr_eq(&a.file, &file))
                && std::mem::replace(&mut active.in_unsynced, true)
            {
                continue;
            }
            if !self.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
                self.unsynced.push(file);
            }
        }
        if point.dir.is_some() {
            self.created_segment = true;
        }
    }

    /// Bytes of the queue's live segment files.
    pub fn bytes(&self) -> u64 {
        lock(&self.shared).bytes
    }

    fn create_segment(&mut self, first_seq: u64) -> Result<ActiveSegment, QueueError> {
        let path = self.dir.join(segment_file_name(first_seq));
        let spare = lock(&self.shared).spares.pop();
        let file = match spare.and_then(|spare| reuse(&spare, &path, first_seq)) {
            Some(file) => file,
            None => {
                // create_new: a name clash must never overwrite records.
                let file = OpenOptions::new().write(true).create_new(true).open(&path);
                let file = file.map_err(|e| QueueError::io(&path, e))?;
                if let Err(e) = write_at(&file, &segment_header(first_seq), 0) {
                    // Left behind, a file shorter than its header is deleted at the next open anyway.
                    let _ = fs::remove_file(&path);
                    return Err(QueueError::io(path, e));
                }
                file
            }
        };
        let file = Arc::new(file);
        self.unsynced.push(Arc::clone(&file));
        self.created_segment = true;
        let mut shared = lock(&self.shared);
        let state = SegmentState { path: path.clone(), bytes: SEGMENT_HEADER_LEN, limit: Some(SEGMENT_HEADER_LEN) };
        shared.segments.insert(first_seq, state);
        shared.active = Some(first_seq);
        shared.bytes += SEGMENT_HEADER_LEN;
        Ok(ActiveSegment { first_seq, path, file, len: SEGMENT_HEADER_LEN, in_unsynced: true })
    }

    fn write_record(&mut self, file: &File, at: u64) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.faults.fail_write_after.take() {
            write_at(file, &self.buf[..n.min(self.buf.len())], at)?;
            return Err(io::Error::other("injected write failure"));
        }
        write_at(file, &self.buf, at)
    }

    /// After a failed write, removes whatever part of the record reached the file.
    fn cut_back(&mut self, active: ActiveSegment, record_len: u64) {
        #[cfg(test)]
        let truncated = if self.faults.fail_truncate {
            Err(io::Error::other("injected truncate failure"))
        } else {
            active.file.set_len(active.len)
        };
        #[cfg(not(test))]
        let truncated = active.file.set_len(active.len);
        let Err(e) = truncated else {
            self.active = Some(active);
            return;
        };
        // The debris stays past the published length, where the reader never looks; after a
        // restart it reads as damage, and a whole record there is out of order with the next
        // segment's first seq, so it is not delivered twice.
        tracing::warn!(
            segment = %active.path.display(),
            error = %e,
            "cannot cut a failed write back out of a disk queue segment; the next record starts a new segment"
        );
        let on_disk = active.file.metadata().map_or(active.len + record_len, |m| m.len()).max(active.len);
        let mut shared = lock(&self.shared);
        if let Some(segment) = shared.segments.get_mut(&active.first_seq) {
            segment.bytes += on_disk - active.len;
            shared.bytes += on_disk - active.len;
        }
        shared.active = None;
    }
}

/// Turns a spare (a delivered segment kept for this) into the segment `path`: its header
/// is rewritten and records go over the old ones. Writing over blocks the file already
/// has makes an fdatasync cheaper than appending (no block allocation, no size change to
/// write: 0.27 against 0.50 ms a sync measured on the benchmark machine), and no new file
/// means no block to free later. `None` (the spare is dropped) when any step fails.
fn reuse(spare: &Path, path: &Path, first_seq: u64) -> Option<File> {
    let file = OpenOptions::new().write(true).open(spare).ok()?;
    let reused = write_at(&file, &reused_segment_header(first_seq), 0).and_then(|()| fs::rename(spare, path));
    if reused.is_err() {
        let _ = fs::remove_file(spare);
        return None;
    }
    Some(file)
}

/// Writes all of `buf` at `pos`.
#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], pos: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, pos)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, buf: &[u8], pos: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(pos))?;
    file.write_all(buf)
}

/// A segment whose records were all delivered is closed once it is this large, or a
/// quarter of `max_bytes` when that is less. Only a queue much smaller than its segments
/// needs it (a roll costs a new file and a directory fsync), and a full disk gets its space
/// back through [`Writer::retire_active`] instead.
const ROLL_WHEN_DELIVERED: u64 = 8 * 1024 * 1024;

fn record_len(payload_len: usize) -> Result<u64, QueueError> {
    if payload_len > MAX_PAYLOAD {
        return Err(QueueError::TooLarge { len: payload_len, max: MAX_PAYLOAD });
    }
    Ok(RECORD_HEADER_LEN + payload_len as u64)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::read_all;
    use crate::{Opened, Read, Reader, open};

    fn len_of(path: &Path) -> u64 {
        fs::metadata(path).expect("stat").len()
    }

    #[test]
    fn failed_write_is_cut_back_and_leaves_no_partial_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { mut writer, mut reader, .. } = open(dir.path(), Options::default()).expect("open");
        writer.append(b"one").expect("append");
        let segment = dir.path().join(segment_file_name(1));
        let (len, bytes) = (len_of(&segment), writer.bytes());
        writer.faults.fail_write_after = Some(10);
        assert!(matches!(writer.append(b"two"), Err(QueueError::Io { .. })));
        assert_eq!((len_of(&segment), writer.bytes()), (len, bytes));
        assert_eq!(writer.append(b"three").expect("append"), 2, "the failed record's seq goes to the next");
        let expected = vec![(1, b"one".to_vec()), (2, b"three".to_vec())];
        assert_eq!(read_all(&mut reader), (expected.clone(), vec![]));
        drop((writer, reader));
        let Opened { mut reader, .. } = open(dir.path(), Options::default()).expect("reopen");
        assert_eq!(read_all(&mut reader), (expected, vec![]));
    }

    #[test]
    fn a_failed_write_retires_the_segment_so_its_space_comes_back_once_delivered() {
        // As on a full disk: the only segment must become deletable, or space never returns.
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { mut writer, mut reader, .. } = open(dir.path(), Options::default()).expect("open");
        writer.append(&[1; 100]).expect("append");
        writer.faults.fail_write_after = Some(10);
        assert!(matches!(writer.append(&[2; 100]), Err(QueueError::Io { .. })));
        let (records, _) = read_all(&mut reader);
        records.iter().for_each(|(seq, _)| reader.ack(*seq));
        reader.persist_acks().expect("persist");
        reader.wait_for_deletes().expect("deleted");
        assert!(!dir.path().join(segment_file_name(1)).exists(), "delivered and no longer active: deleted");
        assert_eq!(writer.bytes(), 0);
        assert_eq!(writer.append(b"three").expect("append"), 2);
        assert_eq!(read_all(&mut reader).0, vec![(2, b"three".to_vec())]);
    }

    #[test]
    fn a_failed_write_into_a_new_segment_leaves_no_empty_file_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { mut writer, mut reader, .. } = open(dir.path(), Options::default()).expect("open");
        writer.faults.fail_write_after = Some(0);
        assert!(matches!(writer.append(b"one"), Err(QueueError::Io { .. })));
        assert!(!dir.path().join(segment_file_name(1)).exists());
        assert_eq!(writer.append(b"one").expect("the next segment takes the same name"), 1);
        assert_eq!(read_all(&mut reader).0, vec![(1, b"one".to_vec())]);
    }

    #[test]
    fn a_delivered_segment_is_closed_at_a_quarter_of_max_bytes_so_a_small_queue_frees_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = Options { max_bytes: 4 * 1024 * 1024, ..Options::default() };
        let Opened { mut writer, mut reader, .. } = open(dir.path(), opts).expect("open");
        let record = vec![7u8; 64 * 1024];
        for _ in 0..40 {
            writer.append(&record).expect("append");
            while let Ok(Read::Record { seq, .. }) = reader.next() {
                reader.ack(seq);
            }
            reader.persist_acks().expect("persist");
        }
        // 40 × 64 KiB delivered as written: segments are closed at ~1 MiB and deleted, far
        // below the 8 MiB a segment could reach.
        assert!(writer.bytes() <= 1024 * 1024 + 2 * 64 * 1024, "{} bytes still on disk", writer.bytes());
    }

    #[test]
    fn failed_cut_back_starts_a_new_segment_and_the_debris_is_never_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { mut writer, mut reader, .. } = open(dir.path(), Options::default()).expect("open");
        writer.append(b"one").expect("append");
        writer.faults = Faults { fail_write_after: Some(40), fail_truncate: true };
        assert!(matches!(writer.append(&[2; 30]), Err(QueueError::Io { .. })));
        writer.faults.fail_truncate = false;
        assert_eq!(writer.append(b"three").expect("append"), 2);
        let (first, second) = (dir.path().join(segment_file_name(1)), dir.path().join(segment_file_name(2)));
        assert_eq!(writer.bytes(), len_of(&first) + len_of(&second), "the debris counts against max_bytes");
        let expected = vec![(1, b"one".to_vec()), (2, b"three".to_vec())];
        assert_eq!(read_all(&mut reader), (expected.clone(), vec![]));
        drop((writer, reader));
        // After a restart the debris is a torn tail that cost no record.
        let Opened { mut reader, .. } = open(dir.path(), Options::default()).expect("reopen");
        let (records, skipped) = read_all(&mut reader);
        assert_eq!(records, expected);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!((skipped[0].offset, skipped[0].bytes), (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 3, 40));
        assert_eq!((skipped[0].records_lost, skipped[0].torn_tail), (0, true));
    }

    #[test]
    fn sync_point_covers_each_written_segment_once_and_the_dir_when_files_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = Options { max_bytes: 1 << 20, segment_bytes: 100 };
        let Opened { mut writer, .. } = open(dir.path(), opts).expect("open");
        let point = writer.sync_point();
        assert_eq!((point.files.len(), point.dir.is_some(), point.upto()), (0, false, 0));
        writer.append(&[1; 10]).expect("append");
        let point = writer.sync_point();
        assert_eq!((point.files.len(), point.dir.is_some(), point.upto()), (1, true, 1));
        assert_eq!(point.sync().expect("sync"), 1);
        let point = writer.sync_point();
        assert_eq!((point.files.len(), point.dir.is_some(), point.upto()), (0, false, 1));
        writer.append(&[2; 10]).expect("append");
        let point = writer.sync_point();
        assert_eq!((point.files.len(), point.dir.is_some(), point.upto()), (1, false, 2));
        // Past segment_bytes: the old segment and the new one, and the new file's directory entry.
        writer.append(&[3; 60]).expect("append");
        writer.append(&[4; 10]).expect("append");
        let point = writer.sync_point();
        assert_eq!((point.files.len(), point.dir.is_some(), point.upto()), (2, true, 4));
        assert_eq!(point.sync().expect("sync"), 4);
    }

    #[test]
    fn what_a_failed_sync_covered_is_in_the_next_sync_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = Options { max_bytes: 1 << 20, segment_bytes: 100 };
        let Opened { mut writer, .. } = open(dir.path(), opts).expect("open");
        writer.append(&[1; 60]).expect("append");
        writer.append(&[2; 60]).expect("append");
        let failed = writer.sync_point();
        assert_eq!((failed.files.len(), failed.dir.is_some()), (2, true));
        // The fsync failed (say, EIO): nothing it covered may count as durable.
        writer.sync_failed(failed);
        writer.append(&[3; 10]).expect("append");
        let point = writer.sync_point();
        // The two segments the failed sync covered, the third one just created, and the dir.
        assert_eq!((point.files.len(), point.dir.is_some(), point.upto()), (3, true, 3));
        point.sync().expect("sync");
        assert_eq!(writer.sync_point().files.len(), 0);
    }

    #[test]
    fn oversized_payload_is_refused_without_touching_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { mut writer, .. } = open(dir.path(), Options::default()).expect("open");
        assert!(!writer.has_room(MAX_PAYLOAD + 1));
        let err = writer.append(&vec![0; MAX_PAYLOAD + 1]).expect_err("too large");
        assert!(matches!(err, QueueError::TooLarge { .. }), "{err}");
        assert_eq!(writer.bytes(), 0);
    }

    #[test]
    fn writer_reader_and_sync_point_can_move_to_other_threads() {
        fn send<T: Send>() {}
        send::<Writer>();
        send::<Reader>();
        send::<SyncPoint>();
    }
}
