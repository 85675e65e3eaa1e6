//! `gencol queue inspect`: what queues hold, read without the lock, writing nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::open::{list_dir, read_ack};
use crate::{QueueError, Read, Reader, SegmentState, Shared};

/// What one queue directory holds: records not yet acknowledged, their bytes and the age of
/// the oldest, records lost to damage (torn tails, left by crashes, counted apart), and
/// files that do not belong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    pub dir: PathBuf,
    pub records: u64,
    pub bytes: u64,
    pub oldest_time_ms: Option<u64>,
    pub corrupt_records: u64,
    pub torn_tails: u64,
    pub foreign_files: Vec<PathBuf>,
    pub acked_upto: u64,
}

/// Inspects `dir` and every directory below it that holds a segment or an ack file. Read
/// only: it takes no lock (so it works beside a running gencol, whose newest record may
/// then show as a torn tail), and writes and deletes nothing.
pub fn inspect(dir: &Path) -> Result<Vec<Inspection>, QueueError> {
    let mut found = Vec::new();
    walk(dir, &mut found)?;
    Ok(found)
}

/// A reader of the records in `dir` not acknowledged yet (after its ack file's position),
/// over the segment files there now. Read only, like [`inspect`]: it takes no lock and
/// never deletes. A running gencol reads its own queues back with it at start (for the
/// `hierarchy` journal: the records written since its last `Mark`, less a margin), before
/// it forgets anything delivered.
pub fn read_back(dir: &Path) -> Result<Reader, QueueError> {
    Ok(snapshot_reader(dir, list_dir(dir)?.segments.into_iter().map(|s| (s.first_seq, s.path, s.len))))
}

fn snapshot_reader(dir: &Path, segments: impl Iterator<Item = (u64, PathBuf, u64)>) -> Reader {
    // A corrupt ack file reads as 0 here as it would at open: everything counts as waiting.
    let acked_upto = read_ack(dir).ok().flatten().unwrap_or(0);
    let segments: BTreeMap<u64, SegmentState> =
        segments.map(|(first_seq, path, bytes)| (first_seq, SegmentState { path, bytes, limit: None })).collect();
    let shared = Shared {
        bytes: segments.values().map(|s| s.bytes).sum(),
        segments,
        active: None,
        next_seq: None,
        acked_upto,
        dir_changed: false,
        spares: Vec::new(),
        _lock: None,
    };
    Reader::new(dir, Arc::new(Mutex::new(shared)), acked_upto)
}

fn walk(dir: &Path, found: &mut Vec<Inspection>) -> Result<(), QueueError> {
    let listing = list_dir(dir)?;
    if !listing.segments.is_empty() || listing.has_ack {
        let mut reader = snapshot_reader(dir, listing.segments.iter().map(|s| (s.first_seq, s.path.clone(), s.len)));
        let mut inspection = Inspection {
            dir: dir.to_path_buf(),
            bytes: listing.segments.iter().map(|s| s.len).sum(),
            foreign_files: listing.foreign_files,
            acked_upto: reader.acked_upto(),
            ..Inspection::default()
        };
        loop {
            match reader.next()? {
                Read::Record { time_ms, .. } => {
                    inspection.records += 1;
                    inspection.oldest_time_ms = Some(inspection.oldest_time_ms.map_or(time_ms, |t| t.min(time_ms)));
                }
                Read::Skipped(skipped) if skipped.torn_tail => inspection.torn_tails += 1,
                Read::Skipped(skipped) => inspection.corrupt_records += skipped.records_lost,
                Read::End => break,
            }
        }
        found.push(inspection);
    }
    for subdir in listing.subdirs {
        walk(&subdir, found)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
    use crate::test_support::{payload, read_all};
    use crate::{Opened, Options, open};
    use std::fs;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn now_ms() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    /// Every file below `dir` with its contents.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).expect("ls") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files.extend(snapshot(&path));
            } else {
                files.push((path.clone(), fs::read(&path).expect("read")));
            }
        }
        files.sort();
        files
    }

    #[test]
    fn inspect_counts_records_bytes_age_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = now_ms();
        {
            let Opened { mut writer, mut reader, .. } = open(dir.path(), Options::default()).expect("open");
            for i in 1..=10 {
                writer.append(&payload(i)).expect("append");
            }
            read_all(&mut reader);
            (1..=3).for_each(|seq| reader.ack(seq));
            reader.persist_acks().expect("persist");
        }
        let after = now_ms();
        let segment = dir.path().join("00000000000000000001.seg");
        let offset_of =
            |seq: u64| SEGMENT_HEADER_LEN + (1..seq).map(|i| RECORD_HEADER_LEN + payload(i).len() as u64).sum::<u64>();
        let mut bytes = fs::read(&segment).expect("read");
        bytes[offset_of(6) as usize + 30] ^= 0xff;
        bytes.truncate(offset_of(10) as usize + 20);
        fs::write(&segment, &bytes).expect("write");

        let found = inspect(dir.path()).expect("inspect");
        assert_eq!(found.len(), 1);
        let queue = &found[0];
        assert_eq!(queue.dir, dir.path());
        assert_eq!((queue.records, queue.corrupt_records, queue.torn_tails), (5, 1, 1), "4, 5, 7, 8, 9 left");
        assert_eq!((queue.bytes, queue.acked_upto), (bytes.len() as u64, 3));
        let oldest = queue.oldest_time_ms.expect("oldest");
        assert!((before..=after).contains(&oldest), "{before} <= {oldest} <= {after}");
    }

    #[test]
    fn inspect_finds_nested_queues_and_changes_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let (otlp, axiom) = (root.path().join("otlp"), root.path().join("otlp/axiom"));
        for (dir, n) in [(&otlp, 2), (&axiom, 1)] {
            let Opened { mut writer, .. } = open(dir, Options::default()).expect("open");
            (1..=n).try_for_each(|i| writer.append(&payload(i)).map(drop)).expect("append");
        }
        fs::create_dir(root.path().join("not-a-queue")).expect("mkdir");
        fs::write(otlp.join("notes.txt"), "mine").expect("write");
        let files = snapshot(root.path());
        // Also beside a running gencol: inspect takes no lock.
        let _running = open(&otlp, Options::default()).expect("open");

        let found = inspect(root.path()).expect("inspect");
        let summary: Vec<_> = found.iter().map(|q| (q.dir.clone(), q.records)).collect();
        assert_eq!(summary, vec![(otlp.clone(), 2), (axiom, 1)]);
        assert_eq!(found[0].foreign_files, vec![otlp.join("notes.txt")]);
        assert_eq!(snapshot(root.path()), files);
    }
}
