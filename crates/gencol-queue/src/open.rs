//! Opening a queue directory: the lock, what the files say, where the writer goes on.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::format::{is_spare_file_name, parse_ack, parse_segment_file_name};
use crate::segment::{holds_no_record, last_seq_used};
use crate::{MAX_SPARES, Options, QueueError, Reader, SegmentState, Shared, Writer, lock};

/// An open queue: its writer and reader (which may live on different threads) and what
/// opening found.
pub struct Opened {
    pub writer: Writer,
    pub reader: Reader,
    pub report: OpenReport,
}

/// What was found at open, for the log: live segments and their bytes, the ack position,
/// the seq the writer goes on with, files that do not belong (left alone), and problems
/// that were worked around (a corrupt ack file, an unreadable segment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub bytes: u64,
    pub acked_upto: u64,
    pub next_seq: u64,
    pub foreign_files: Vec<PathBuf>,
    pub problems: Vec<String>,
}

/// Opens (creating if missing) the queue in `dir` and locks it, so two gencols never share
/// a queue. Segments wholly acknowledged are deleted, and the writer starts a new segment
/// after the last seq any file used.
pub fn open(dir: &Path, opts: Options) -> Result<Opened, QueueError> {
    fs::create_dir_all(dir).map_err(|e| QueueError::io(dir, e))?;
    let lock_file = lock_dir(dir)?;
    let listing = list_dir(dir)?;
    let mut problems = Vec::new();
    let acked_upto = match read_ack(dir) {
        Ok(Some(acked)) => acked,
        Ok(None) => {
            if let Some(first) = listing.segments.first().filter(|s| s.first_seq > 1) {
                problems.push(format!(
                    "ack file missing though segments before seq {} were deleted; its records are delivered again",
                    first.first_seq
                ));
            }
            0
        }
        Err(problem) => {
            problems.push(problem);
            0
        }
    };

    let mut segments = BTreeMap::new();
    for file in listing.segments {
        if holds_no_record(&file.path, file.first_seq, file.len) && fs::remove_file(&file.path).is_ok() {
            continue;
        }
        segments.insert(file.first_seq, SegmentState { path: file.path, bytes: file.len, limit: None });
    }
    let last_used = match segments.last_key_value() {
        None => 0,
        Some((&first_seq, newest)) => match last_seq_used(&newest.path, first_seq) {
            Ok(last) => last.unwrap_or(first_seq),
            Err(e) => {
                problems.push(format!("cannot read segment {}: {e}", newest.path.display()));
                first_seq
            }
        },
    };
    let next_seq = acked_upto.max(last_used).saturating_add(1);

    let shared = Shared {
        bytes: segments.values().map(|s| s.bytes).sum(),
        segments,
        active: None,
        next_seq: Some(next_seq),
        acked_upto,
        dir_changed: false,
        spares: Vec::new(),
        _lock: Some(lock_file),
    };
    let shared = Arc::new(Mutex::new(shared));
    let mut reader = Reader::new(dir, Arc::clone(&shared), acked_upto);
    // Spares beyond the bound (a crash while renaming can leave one more) are deleted.
    let mut spares = listing.spares;
    for extra in spares.split_off(spares.len().min(MAX_SPARES)) {
        reader.delete_file(extra);
    }
    lock(&shared).spares = spares;
    reader.delete_acked_segments(acked_upto);
    if let Err(e) = reader.wait_for_deletes() {
        problems.push(e.to_string());
    }
    let (segments, bytes) = {
        let shared = lock(&shared);
        (shared.segments.len(), shared.bytes)
    };
    let report = OpenReport { segments, bytes, acked_upto, next_seq, foreign_files: listing.foreign_files, problems };
    Ok(Opened { writer: Writer::new(dir, opts, shared, next_seq), reader, report })
}

fn lock_dir(dir: &Path) -> Result<File, QueueError> {
    let path = dir.join("lock");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path);
    let file = file.map_err(|e| QueueError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(QueueError::Locked { dir: dir.to_path_buf() }),
        Err(TryLockError::Error(e)) => Err(QueueError::io(path, e)),
    }
}

/// A file named like a segment.
pub(crate) struct SegmentFile {
    pub first_seq: u64,
    pub path: PathBuf,
    pub len: u64,
}

/// What a queue directory holds, each kind sorted.
pub(crate) struct Listing {
    pub segments: Vec<SegmentFile>,
    /// Delivered segments kept for reuse.
    pub spares: Vec<PathBuf>,
    pub has_ack: bool,
    pub foreign_files: Vec<PathBuf>,
    pub subdirs: Vec<PathBuf>,
}

pub(crate) fn list_dir(dir: &Path) -> Result<Listing, QueueError> {
    let io_err = |e| QueueError::io(dir, e);
    let mut listing = Listing {
        segments: Vec::new(),
        spares: Vec::new(),
        has_ack: false,
        foreign_files: Vec::new(),
        subdirs: Vec::new(),
    };
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let path = entry.path();
        // Not following symlinks: a link is foreign whatever it points to.
        let kind = entry.file_type().map_err(|e| QueueError::io(&path, e))?;
        if kind.is_dir() {
            listing.subdirs.push(path);
            continue;
        }
        let name = entry.file_name();
        // A name that is not UTF-8 is no name of ours: foreign.
        let name = name.to_str().unwrap_or_default();
        match (name, parse_segment_file_name(name)) {
            ("ack", _) => listing.has_ack = true,
            ("ack.tmp" | "lock", _) => {}
            (name, None) if kind.is_file() && is_spare_file_name(name) => listing.spares.push(path),
            (_, Some(first_seq)) if kind.is_file() => {
                let len = entry.metadata().map_err(|e| QueueError::io(&path, e))?.len();
                listing.segments.push(SegmentFile { first_seq, path, len });
            }
            _ => listing.foreign_files.push(path),
        }
    }
    listing.segments.sort_by_key(|s| s.first_seq);
    listing.foreign_files.sort();
    listing.spares.sort();
    listing.subdirs.sort();
    Ok(listing)
}

/// The ack position in `dir`, `None` without an ack file, or the problem with it.
pub(crate) fn read_ack(dir: &Path) -> Result<Option<u64>, String> {
    let path = dir.join("ack");
    match fs::read(&path) {
        Ok(bytes) => parse_ack(&bytes).map(Some).ok_or_else(|| {
            format!(
                "ack file {} is corrupt; starting from 0, so records still on disk are delivered again",
                path.display()
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read ack file {}: {e}; starting from 0, so records still on disk are delivered again",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::segment_file_name;
    use crate::test_support::{payload, read_all, small_segments};

    fn segment_paths(dir: &Path) -> Vec<PathBuf> {
        list_dir(dir).expect("list").segments.into_iter().map(|s| s.path).collect()
    }

    #[test]
    fn reopen_delivers_unacked_records_again_but_not_acked_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let Opened { mut writer, mut reader, .. } = open(dir.path(), small_segments()).expect("open");
            for i in 1..=20 {
                assert_eq!(writer.append(&payload(i)).expect("append"), i);
            }
            let (records, _) = read_all(&mut reader);
            assert_eq!(records.len(), 20);
            (1..=12).for_each(|seq| reader.ack(seq));
            reader.persist_acks().expect("persist");
        }
        let Opened { mut writer, mut reader, report } = open(dir.path(), small_segments()).expect("reopen");
        assert_eq!((report.acked_upto, report.next_seq), (12, 21));
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let (records, skipped) = read_all(&mut reader);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(records, (13..=20).map(|i| (i, payload(i))).collect::<Vec<_>>());
        // The writer goes on in a new segment, after the last seq used.
        let before = segment_paths(dir.path());
        assert_eq!(writer.append(b"after reopen").expect("append"), 21);
        assert_eq!(segment_paths(dir.path()).len(), before.len() + 1);
        assert_eq!(read_all(&mut reader).0, vec![(21, b"after reopen".to_vec())]);
    }

    /// Nine 60-byte records in three segments, delivered; then records 10 and 11 (40 bytes
    /// each), which go over a delivered segment; 10 is delivered, then a crash.
    fn reuse_then_crash(dir: &Path) {
        let Opened { mut writer, mut reader, .. } = open(dir, small_segments()).expect("open");
        for i in 1..=9 {
            assert_eq!(writer.append(&[b'o'; 60]).expect("append"), i);
        }
        let (records, _) = read_all(&mut reader);
        records.iter().for_each(|(seq, _)| reader.ack(*seq));
        reader.persist_acks().expect("persist");
        reader.wait_for_deletes().expect("deleted");
        let spares = |dir: &Path| {
            fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".spare")).count()
        };
        assert_eq!(spares(dir), 2, "delivered segments are kept to be written over, not deleted");
        assert_eq!(writer.append(&[b'n'; 40]).expect("append"), 10);
        assert_eq!(writer.append(&[b'n'; 40]).expect("append"), 11);
        assert_eq!(spares(dir), 1, "the new segment took one");
        let reused = fs::read(dir.join(segment_file_name(10))).expect("segment 10");
        assert_eq!(&reused[..8], b"GCQSEG1R", "written over a delivered segment, and says so");
        assert_eq!(reused.len(), 20 + 3 * 88, "the old records' bytes are still past the new ones");
        let (records, skipped) = read_all(&mut reader);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(records, vec![(10, vec![b'n'; 40]), (11, vec![b'n'; 40])], "only the new records");
        reader.ack(10);
        reader.persist_acks().expect("persist");
        writer.sync_point().sync().expect("sync");
        // Dropped without acknowledging 11: as after a crash.
    }

    #[test]
    fn a_segment_written_over_a_delivered_one_reads_back_only_its_own_records_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        reuse_then_crash(dir.path());
        let Opened { mut writer, mut reader, report } = open(dir.path(), small_segments()).expect("reopen");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.foreign_files.is_empty(), "spares are not foreign: {:?}", report.foreign_files);
        assert_eq!(report.next_seq, 12);
        let (records, skipped) = read_all(&mut reader);
        assert!(skipped.is_empty(), "the old bytes are not damage: {skipped:?}");
        assert_eq!(records, vec![(11, vec![b'n'; 40])]);
        assert_eq!(writer.append(b"after").expect("append"), 12);
        assert_eq!(read_all(&mut reader).0, vec![(12, b"after".to_vec())]);
    }

    #[test]
    fn a_write_cut_off_in_a_reused_segment_is_still_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        reuse_then_crash(dir.path());
        // Record 11 (offset 88, payload at 116) cut off: its payload is not what its CRC says.
        let path = dir.path().join(segment_file_name(10));
        let mut bytes = fs::read(&path).expect("read");
        bytes[120] ^= 0xff;
        fs::write(&path, bytes).expect("write");
        let Opened { mut reader, .. } = open(dir.path(), small_segments()).expect("reopen");
        let (records, skipped) = read_all(&mut reader);
        assert!(records.is_empty(), "{records:?}");
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].torn_tail && skipped[0].records_lost == 1, "{skipped:?}");
    }

    #[test]
    fn out_of_order_acks_advance_only_the_contiguous_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { mut writer, mut reader, .. } = open(dir.path(), small_segments()).expect("open");
        for i in 1..=5 {
            writer.append(&payload(i)).expect("append");
        }
        read_all(&mut reader);
        for seq in [2, 4, 5] {
            reader.ack(seq);
        }
        assert_eq!(reader.acked_upto(), 0);
        assert_eq!(reader.outstanding(), 2);
        reader.ack(1);
        assert_eq!(reader.acked_upto(), 2);
        reader.ack(3);
        assert_eq!(reader.acked_upto(), 5);
        assert_eq!(reader.outstanding(), 0);
    }

    #[test]
    fn persist_acks_deletes_wholly_acked_segments_and_lowers_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { mut writer, mut reader, .. } = open(dir.path(), small_segments()).expect("open");
        for i in 1..=30 {
            writer.append(&payload(i)).expect("append");
        }
        let segments = segment_paths(dir.path()).len();
        assert!(segments >= 4, "{segments} segments");
        let on_disk = |dir: &Path| segment_paths(dir).iter().map(|p| fs::metadata(p).expect("stat").len()).sum::<u64>();
        assert_eq!(writer.bytes(), on_disk(dir.path()));
        let (records, _) = read_all(&mut reader);
        records.iter().for_each(|(seq, _)| reader.ack(*seq));
        reader.persist_acks().expect("persist");
        reader.wait_for_deletes().expect("deleted");
        // Everything is acknowledged; only the writer's active segment stays.
        assert_eq!(segment_paths(dir.path()).len(), 1);
        assert_eq!(writer.bytes(), on_disk(dir.path()));
        assert_eq!(read_ack(dir.path()), Ok(Some(30)));
    }

    #[test]
    fn full_until_acks_are_persisted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = Options { max_bytes: 1000, segment_bytes: 200 };
        let Opened { mut writer, mut reader, .. } = open(dir.path(), opts).expect("open");
        let record = [7u8; 72]; // 100 bytes with its header
        let mut appended = 0;
        while writer.has_room(record.len()) {
            writer.append(&record).expect("append while there is room");
            appended += 1;
        }
        assert!(appended >= 5, "{appended}");
        match writer.append(&record) {
            Err(QueueError::Full { bytes, max_bytes: 1000 }) => assert_eq!(bytes, writer.bytes()),
            other => panic!("expected Full, got {other:?}"),
        }
        let (records, _) = read_all(&mut reader);
        // All but the newest: with none waiting the queue would count as empty.
        records[..records.len() - 1].iter().for_each(|(seq, _)| reader.ack(*seq));
        assert!(!writer.has_room(record.len()), "acks alone free no disk");
        reader.persist_acks().expect("persist");
        assert!(writer.has_room(record.len()));
        writer.append(&record).expect("room again");
    }

    #[test]
    fn empty_queue_takes_one_record_larger_than_max_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { mut writer, .. } = open(dir.path(), Options { max_bytes: 10, segment_bytes: 10 }).expect("open");
        assert!(writer.has_room(500));
        writer.append(&[1; 500]).expect("first record");
        assert!(!writer.has_room(1));
        assert!(matches!(writer.append(&[1]), Err(QueueError::Full { .. })));
    }

    #[test]
    fn second_open_of_a_dir_is_locked_until_the_first_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = open(dir.path(), Options::default()).expect("open");
        match open(dir.path(), Options::default()) {
            Err(e @ QueueError::Locked { .. }) => assert!(e.to_string().contains("another gencol uses it"), "{e}"),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("expected Locked, got a second open queue"),
        }
        // The lock lives until both halves are gone.
        let Opened { writer, reader, .. } = first;
        drop(writer);
        assert!(matches!(open(dir.path(), Options::default()), Err(QueueError::Locked { .. })));
        drop(reader);
        open(dir.path(), Options::default()).expect("open after close");
    }

    #[test]
    fn garbage_segment_and_foreign_file_are_reported_and_the_rest_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let Opened { mut writer, .. } = open(dir.path(), small_segments()).expect("open");
            for i in 1..=10 {
                writer.append(&payload(i)).expect("append");
            }
        }
        let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        fs::write(dir.path().join("00000000000000000099.seg"), &garbage).expect("write garbage");
        fs::write(dir.path().join("notes.txt"), "mine").expect("write notes");
        fs::create_dir(dir.path().join("axiom")).expect("nested queue dir");

        let Opened { mut writer, mut reader, report } = open(dir.path(), small_segments()).expect("open");
        assert_eq!(report.foreign_files, vec![dir.path().join("notes.txt")]);
        assert_eq!(report.next_seq, 100, "after the seq the garbage file's name claims");
        writer.append(b"new").expect("append");
        let (records, skipped) = read_all(&mut reader);
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=10).chain([100]).collect::<Vec<_>>());
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].file, dir.path().join("00000000000000000099.seg"));
        assert_eq!((skipped[0].offset, skipped[0].bytes, skipped[0].records_lost), (0, 5000, 89));
        assert_eq!(fs::read(dir.path().join("notes.txt")).expect("notes"), b"mine");
    }

    #[test]
    fn corrupt_ack_file_counts_as_zero_with_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let Opened { mut writer, mut reader, .. } = open(dir.path(), small_segments()).expect("open");
            for i in 1..=12 {
                writer.append(&payload(i)).expect("append");
            }
            read_all(&mut reader);
            (1..=10).for_each(|seq| reader.ack(seq));
            reader.persist_acks().expect("persist");
        }
        let first_left = list_dir(dir.path()).expect("list").segments[0].first_seq;
        assert!(first_left > 1, "acknowledged segments were deleted");
        fs::write(dir.path().join("ack"), b"not an ack").expect("corrupt ack");
        let Opened { mut reader, report, .. } = open(dir.path(), small_segments()).expect("open");
        assert_eq!(report.acked_upto, 0);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].contains("ack file"), "{:?}", report.problems);
        // Whatever is still on disk is delivered again, acknowledged or not.
        let seqs: Vec<u64> = read_all(&mut reader).0.into_iter().map(|r| r.0).collect();
        assert_eq!(seqs, (first_left..=12).collect::<Vec<_>>());
    }

    #[test]
    fn open_removes_segments_that_hold_no_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A crash between creating a segment and writing its header, or its first record.
        let torn_header = &crate::format::segment_header(5)[..9];
        fs::write(dir.path().join("00000000000000000005.seg"), torn_header).expect("write");
        let Opened { report, .. } = open(dir.path(), Options::default()).expect("open");
        assert_eq!((report.segments, report.next_seq), (0, 1));
        assert!(segment_paths(dir.path()).is_empty());
    }
}
