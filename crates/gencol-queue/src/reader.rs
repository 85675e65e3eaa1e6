//! Handing records out in seq order, stepping over damage, and turning acknowledgements
//! (in any order) into the ack file and deleted segments.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::deleter::Deleter;
use crate::format::{encode_ack, spare_file_name};
use crate::segment::{Item, SegmentCursor, SeqRange};
use crate::{MAX_SPARES, QueueError, Shared, lock};

/// An I/O error on the same segment this many times in a row gives it up as damaged, so a
/// bad sector cannot stall the queue forever.
const GIVE_UP_AFTER: u32 = 3;

/// What [`Reader::next`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Record { seq: u64, time_ms: u64, payload: Vec<u8> },
    Skipped(Skipped),
    End,
}

/// A damaged region the reader stepped over, reported once: where it is, how large, and how
/// many records were lost with it. A torn tail is a write cut off by a crash, which nobody
/// upstream was ever told had succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub file: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub records_lost: u64,
    pub torn_tail: bool,
    pub reason: String,
}

/// The consuming side of an open queue: reads records in seq order, streaming, never past
/// what the [`crate::Writer`] has completely written, and deletes segments once acknowledged.
pub struct Reader {
    dir: PathBuf,
    shared: Arc<Mutex<Shared>>,
    /// The ack position found at open: records up to it were delivered by an earlier run.
    floor: u64,
    /// The segment being read, by first seq.
    cursor: Option<(u64, SegmentCursor)>,
    /// The last segment read to its end; the next one comes after it.
    done_through: Option<u64>,
    /// The highest seq read or known lost; the next record must come after it.
    last_good: u64,
    /// The highest seq handed out or skipped.
    handed_upto: u64,
    outstanding: BTreeSet<u64>,
    persisted: u64,
    io_failures: u32,
    deleter: Deleter,
}

/// One segment as the shared state shows it at one instant.
struct SegmentView {
    first_seq: u64,
    path: PathBuf,
    limit: Option<u64>,
    /// The next segment's first seq: once there is one, this segment is complete.
    later: Option<u64>,
    /// The first seq after this segment's records, if known: the next segment's, or the writer's next.
    next_known: Option<u64>,
}

impl Reader {
    pub(crate) fn new(dir: &Path, shared: Arc<Mutex<Shared>>, acked_upto: u64) -> Self {
        Reader {
            dir: dir.to_path_buf(),
            shared,
            floor: acked_upto,
            cursor: None,
            done_through: None,
            last_good: 0,
            handed_upto: acked_upto,
            outstanding: BTreeSet::new(),
            persisted: acked_upto,
            io_failures: 0,
            deleter: Deleter::start(),
        }
    }

    /// The next record not handed out yet, in seq order, streaming (never more than one record
    /// in memory). Records at or below the ack position found at open are skipped silently.
    /// Damage is never an error: it comes back once as [`Read::Skipped`] and reading goes on
    /// after it. [`Read::End`] means everything written so far was handed out; call again
    /// later. An `Err` is a real I/O error; calling again retries, and after a few failures in
    /// a row the rest of that file is given up as a [`Read::Skipped`].
    #[allow(clippy::should_implement_trait)] // fallible and never-ending: not an Iterator
    pub fn next(&mut self) -> Result<Read, QueueError> {
        let read = self.next_unpublished();
        self.publish();
        read
    }

    fn next_unpublished(&mut self) -> Result<Read, QueueError> {
        loop {
            let Some(view) = self.current_segment() else { return Ok(Read::End) };
            let cursor = match &mut self.cursor {
                Some((_, cursor)) => cursor,
                None => match SegmentCursor::open(&view.path, view.first_seq) {
                    Err(e) => return self.io_failure(&view, e),
                    Ok(Err(reason)) => {
                        self.finish_segment(&view);
                        let bytes = fs::metadata(&view.path).map_or(0, |m| m.len());
                        match self.skip(&view.path, 0, bytes, view.next_known, false, reason) {
                            (skipped, false) => return Ok(Read::Skipped(skipped)),
                            (_, true) => continue,
                        }
                    }
                    Ok(Ok(cursor)) => {
                        // The header vouches that this segment starts at first_seq.
                        self.last_good = self.last_good.max(view.first_seq.saturating_sub(1));
                        &mut self.cursor.insert((view.first_seq, cursor)).1
                    }
                },
            };
            let limit = view.limit.unwrap_or(cursor.file_len);
            let range = SeqRange { after: self.last_good, before: view.next_known.unwrap_or(u64::MAX) };
            let item = match cursor.next(limit, range) {
                Ok(item) => item,
                Err(e) => return self.io_failure(&view, e),
            };
            self.io_failures = 0;
            match item {
                Item::End if view.later.is_some() => self.finish_segment(&view),
                Item::End => return Ok(Read::End),
                Item::Record { seq, time_ms, payload } => {
                    self.last_good = seq;
                    self.handed_upto = self.handed_upto.max(seq);
                    if seq > self.floor {
                        self.outstanding.insert(seq);
                        return Ok(Read::Record { seq, time_ms, payload });
                    }
                }
                Item::Bad(bad) => {
                    // Only a file found at open can hold a crash's torn write; the writer of this
                    // process publishes lengths of whole records only.
                    let torn = bad.cut_short && view.limit.is_none();
                    let next = bad.next_seq.or(view.next_known);
                    if let (skipped, false) = self.skip(&view.path, bad.offset, bad.bytes, next, torn, bad.reason) {
                        return Ok(Read::Skipped(skipped));
                    }
                }
            }
        }
    }

    /// Accounts for a damaged region whose next good seq is `next` (if known), and says
    /// whether it is silent: all it lost was acknowledged by an earlier run.
    fn skip(
        &mut self,
        file: &Path,
        offset: u64,
        bytes: u64,
        next: Option<u64>,
        torn_tail: bool,
        reason: String,
    ) -> (Skipped, bool) {
        let records_lost = next.map_or(1, |next| next.saturating_sub(self.last_good).saturating_sub(1));
        let silent = self.last_good.saturating_add(records_lost) <= self.floor;
        if let Some(next) = next {
            self.last_good = self.last_good.max(next.saturating_sub(1));
            self.handed_upto = self.handed_upto.max(next.saturating_sub(1));
        }
        (Skipped { file: file.to_path_buf(), offset, bytes, records_lost, torn_tail, reason }, silent)
    }

    fn io_failure(&mut self, view: &SegmentView, e: io::Error) -> Result<Read, QueueError> {
        self.io_failures += 1;
        if self.io_failures < GIVE_UP_AFTER {
            return Err(QueueError::io(&view.path, e));
        }
        self.io_failures = 0;
        let offset = self.cursor.as_ref().map_or(0, |(_, cursor)| cursor.offset);
        let bytes = fs::metadata(&view.path).map_or(0, |m| m.len().saturating_sub(offset));
        self.finish_segment(view);
        let reason = format!("unreadable after {GIVE_UP_AFTER} tries: {e}");
        Ok(Read::Skipped(self.skip(&view.path, offset, bytes, view.next_known, false, reason).0))
    }

    fn current_segment(&self) -> Option<SegmentView> {
        let shared = lock(&self.shared);
        let from = self.done_through.map_or(Bound::Unbounded, Bound::Excluded);
        let (&first_seq, segment) = shared.segments.range((from, Bound::Unbounded)).next()?;
        let later = shared.segments.range((Bound::Excluded(first_seq), Bound::Unbounded)).next().map(|(&seq, _)| seq);
        Some(SegmentView {
            first_seq,
            path: segment.path.clone(),
            limit: segment.limit,
            later,
            next_known: later.or(shared.next_seq),
        })
    }

    fn finish_segment(&mut self, view: &SegmentView) {
        self.cursor = None;
        self.done_through = Some(view.first_seq);
    }

    /// A handed-out record was delivered, or dropped for good. Any order; seqs not
    /// outstanding are ignored.
    pub fn ack(&mut self, seq: u64) {
        if self.outstanding.remove(&seq) {
            self.publish();
        }
    }

    /// The highest seq such that it and every seq before it were acknowledged (or skipped).
    pub fn acked_upto(&self) -> u64 {
        self.outstanding.first().map_or(self.handed_upto, |&oldest| oldest - 1)
    }

    /// Records handed out and not acknowledged, plus (from seq numbers, so approximately)
    /// records not yet read: for a gauge.
    pub fn outstanding(&self) -> usize {
        let next_seq = lock(&self.shared).next_seq.unwrap_or(0);
        let unread = next_seq.saturating_sub(1).saturating_sub(self.handed_upto);
        self.outstanding.len().saturating_add(usize::try_from(unread).unwrap_or(usize::MAX))
    }

    /// Writes the ack file if the ack position moved, then deletes the segment files all of
    /// whose records are at or below it (never the writer's active one), which gives their
    /// bytes back to the writer's budget at once. The files are unlinked on a thread of the
    /// reader's own ([`Reader::wait_for_deletes`] waits for it); a deletion that failed is
    /// returned by a later call.
    pub fn persist_acks(&mut self) -> Result<(), QueueError> {
        let upto = self.acked_upto();
        let written =
            if upto == self.persisted { Ok(()) } else { write_ack(&self.dir, upto).map(|()| self.persisted = upto) };
        // Deleted even when the ack file could not be written: on a full disk that write
        // fails, and deleting delivered segments is what gives the space back. A stale ack
        // file only means a few records are delivered again after a restart.
        self.delete_acked_segments(upto);
        if let Some(failed) = self.deleter.take_failure() {
            return Err(failed);
        }
        written
    }

    /// Waits until the segment files deleted so far are gone from the directory.
    pub fn wait_for_deletes(&self) -> Result<(), QueueError> {
        self.deleter.wait();
        self.deleter.take_failure().map_or(Ok(()), Err)
    }

    pub(crate) fn delete_acked_segments(&mut self, upto: u64) {
        // Bound first: a lock taken in the `for` expression would be held for the whole
        // loop, and the loop locks again.
        let doomed = wholly_acked(&lock(&self.shared), upto);
        for (first_seq, path) in doomed {
            if self.cursor.as_ref().is_some_and(|(seq, _)| *seq == first_seq) {
                // Closed before deleting, which some platforms require.
                self.cursor = None;
            }
            self.done_through = self.done_through.max(Some(first_seq));
            self.recycle_or_delete(first_seq, path);
            let mut shared = lock(&self.shared);
            if let Some(segment) = shared.segments.remove(&first_seq) {
                shared.bytes = shared.bytes.saturating_sub(segment.bytes);
            }
            shared.dir_changed = true;
        }
    }

    pub(crate) fn delete_file(&self, path: PathBuf) {
        self.deleter.delete(path);
    }

    /// Keeps a delivered segment as a spare for the writer to write over (renaming it is
    /// cheap), or has it deleted when enough spares are kept.
    fn recycle_or_delete(&self, first_seq: u64, path: PathBuf) {
        if lock(&self.shared).spares.len() < MAX_SPARES {
            let spare = self.dir.join(spare_file_name(first_seq));
            if fs::rename(&path, &spare).is_ok() {
                lock(&self.shared).spares.push(spare);
                return;
            }
        }
        self.deleter.delete(path);
    }

    fn publish(&self) {
        lock(&self.shared).acked_upto = self.acked_upto();
    }
}

/// The segments, oldest first, whose records all lie at or below `upto`: a segment's records
/// come before the next segment's first seq, or the writer's next seq for the newest one.
fn wholly_acked(shared: &Shared, upto: u64) -> Vec<(u64, PathBuf)> {
    let mut doomed = Vec::new();
    let mut segments = shared.segments.iter().peekable();
    while let Some((&first_seq, segment)) = segments.next() {
        let Some(end) = segments.peek().map(|&(&next, _)| next).or(shared.next_seq) else { break };
        if shared.active == Some(first_seq) || end.saturating_sub(1) > upto {
            break;
        }
        doomed.push((first_seq, segment.path.clone()));
    }
    doomed
}

/// A stale ack file only means records are delivered again, so no fsync; the rename keeps
/// a crash from leaving half a file.
fn write_ack(dir: &Path, upto: u64) -> Result<(), QueueError> {
    let tmp = dir.join("ack.tmp");
    fs::write(&tmp, encode_ack(upto)).map_err(|e| QueueError::io(&tmp, e))?;
    let ack = dir.join("ack");
    fs::rename(&tmp, &ack).map_err(|e| QueueError::io(ack, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, encode_record, segment_header};
    use crate::test_support::{payload, read_all, small_segments};
    use crate::{Opened, Options, open};
    use proptest::prelude::*;

    /// A queue of `n` records in one segment, closed again; returns the segment's path.
    fn one_segment_of(dir: &Path, n: u64) -> PathBuf {
        let Opened { mut writer, .. } = open(dir, Options::default()).expect("open");
        for i in 1..=n {
            writer.append(&payload(i)).expect("append");
        }
        dir.join("00000000000000000001.seg")
    }

    /// Where record `seq` starts in a segment written by `one_segment_of`.
    fn offset_of(seq: u64) -> u64 {
        SEGMENT_HEADER_LEN + (1..seq).map(|i| RECORD_HEADER_LEN + payload(i).len() as u64).sum::<u64>()
    }

    #[test]
    fn round_trip_across_segments_with_a_concurrent_reader() {
        const N: u64 = 2000;
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { mut writer, mut reader, .. } = open(dir.path(), small_segments()).expect("open");
        let producer = std::thread::spawn(move || {
            for i in 1..=N {
                assert_eq!(writer.append(&payload(i)).expect("append"), i);
                if i % 100 == 0 {
                    let point = writer.sync_point();
                    assert_eq!(point.sync().expect("sync"), i);
                }
            }
            writer
        });
        let mut next = 1;
        while next <= N {
            match reader.next().expect("read") {
                Read::Record { seq, payload: got, .. } => {
                    assert_eq!((seq, got), (next, payload(next)), "records whole and in order");
                    reader.ack(seq);
                    next += 1;
                    if seq % 50 == 0 {
                        reader.persist_acks().expect("persist");
                    }
                }
                Read::Skipped(skipped) => panic!("a reader beside the writer saw damage: {skipped:?}"),
                Read::End => std::thread::yield_now(),
            }
        }
        let writer = producer.join().expect("writer thread");
        assert_eq!(reader.next().expect("read"), Read::End);
        reader.persist_acks().expect("persist");
        let segments = fs::read_dir(dir.path()).expect("ls").filter_map(Result::ok);
        let live = segments.filter(|e| e.path().extension().is_some_and(|x| x == "seg")).count();
        assert_eq!(live, 1, "only the active segment stays");
        assert!(writer.bytes() <= small_segments().segment_bytes + RECORD_HEADER_LEN + 100);
    }

    #[test]
    fn flipped_bytes_mid_segment_skip_exactly_the_damaged_record() {
        for (what, at) in [("payload", RECORD_HEADER_LEN + 3), ("magic", 1), ("length", 5), ("seq", 9)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let segment = one_segment_of(dir.path(), 10);
            let mut bytes = fs::read(&segment).expect("read");
            bytes[(offset_of(5) + at) as usize] ^= 0x5a;
            fs::write(&segment, &bytes).expect("write");

            let Opened { mut reader, .. } = open(dir.path(), Options::default()).expect("open");
            let (records, skipped) = read_all(&mut reader);
            let seqs: Vec<u64> = records.iter().map(|r| r.0).collect();
            assert_eq!(seqs, [1, 2, 3, 4, 6, 7, 8, 9, 10], "flipped {what}");
            assert_eq!(skipped.len(), 1, "flipped {what}: {skipped:?}");
            let s = &skipped[0];
            assert_eq!((&s.file, s.offset, s.bytes), (&segment, offset_of(5), offset_of(6) - offset_of(5)), "{what}");
            assert_eq!((s.records_lost, s.torn_tail), (1, false), "flipped {what}");
        }
    }

    #[test]
    fn truncated_tail_is_a_torn_tail_and_its_seq_is_not_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment = one_segment_of(dir.path(), 5);
        let file = fs::OpenOptions::new().write(true).open(&segment).expect("open segment");
        file.set_len(offset_of(5) + RECORD_HEADER_LEN + 2).expect("truncate");
        drop(file);

        let Opened { mut writer, mut reader, report } = open(dir.path(), Options::default()).expect("open");
        assert_eq!(report.next_seq, 6, "seq 5 went to the torn record");
        assert_eq!(writer.append(b"after").expect("append"), 6);
        let (records, skipped) = read_all(&mut reader);
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4, 6]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!((skipped[0].offset, skipped[0].records_lost, skipped[0].torn_tail), (offset_of(5), 1, true));
        assert_eq!(reader.acked_upto(), 0);
        (1..=6).for_each(|seq| reader.ack(seq));
        assert_eq!(reader.acked_upto(), 6);
    }

    #[test]
    fn damage_below_the_ack_position_found_at_open_is_silent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment = one_segment_of(dir.path(), 6);
        fs::write(dir.path().join("ack"), crate::format::encode_ack(3)).expect("ack");
        let mut bytes = fs::read(&segment).expect("read");
        bytes[(offset_of(2) + RECORD_HEADER_LEN) as usize] ^= 1;
        fs::write(&segment, &bytes).expect("write");
        let Opened { mut reader, .. } = open(dir.path(), Options::default()).expect("open");
        let (records, skipped) = read_all(&mut reader);
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), [4, 5, 6]);
        assert!(skipped.is_empty(), "{skipped:?}");
    }

    #[test]
    fn unreadable_segment_is_given_up_after_repeated_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let Opened { mut writer, .. } = open(dir.path(), small_segments()).expect("open");
            for i in 1..=12 {
                writer.append(&payload(i)).expect("append");
            }
        }
        let Opened { mut reader, .. } = open(dir.path(), small_segments()).expect("open");
        let mut segments: Vec<_> =
            fs::read_dir(dir.path()).expect("ls").filter_map(Result::ok).map(|e| e.path()).collect();
        segments.retain(|p| p.extension().is_some_and(|x| x == "seg"));
        segments.sort();
        assert!(segments.len() >= 3);
        // Gone after open: opening it fails like a file the disk cannot read.
        fs::remove_file(&segments[1]).expect("remove");
        let (mut seqs, mut errors, mut skipped) = (Vec::new(), 0, Vec::new());
        loop {
            match reader.next() {
                Ok(Read::Record { seq, .. }) => seqs.push(seq),
                Ok(Read::Skipped(s)) => skipped.push(s),
                Ok(Read::End) => break,
                Err(QueueError::Io { path, .. }) => {
                    assert_eq!(path, segments[1]);
                    errors += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(errors, GIVE_UP_AFTER - 1);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        let lost = skipped[0].records_lost as usize;
        assert!(lost > 0);
        assert_eq!(seqs.len() + lost, 12);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    /// Reads a queue holding `segment` (as `00000000000000000001.seg`) to the end, checking
    /// that every record handed out is one that was written whole into the file, in order.
    fn read_checked(contents: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, TestCaseError> {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("00000000000000000001.seg"), contents).expect("write");
        let Opened { mut reader, .. } = open(dir.path(), Options::default()).expect("open");
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut buf = Vec::new();
        for _ in 0..contents.len() + 10 {
            match reader.next().expect("read") {
                Read::Record { seq, time_ms, payload } => {
                    encode_record(&mut buf, seq, time_ms, &payload);
                    prop_assert!(contents.windows(buf.len()).any(|w| w == buf), "seq {seq} was never written");
                    prop_assert!(records.last().is_none_or(|(last, _)| *last < seq), "seq {seq} out of order");
                    records.push((seq, payload));
                }
                Read::Skipped(skipped) => prop_assert!(skipped.bytes > 0 || skipped.offset == 0),
                Read::End => {
                    crate::inspect(dir.path()).expect("inspect");
                    return Ok(records);
                }
            }
        }
        Err(TestCaseError::fail("the reader never reached End"))
    }

    #[derive(Clone, Debug)]
    enum Mutation {
        Flip(prop::sample::Index, u8),
        Truncate(prop::sample::Index),
        Insert(prop::sample::Index, Vec<u8>),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
            any::<prop::sample::Index>().prop_map(Mutation::Truncate),
            (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..40))
                .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_only_written_records_come_out(
            with_header in any::<bool>(),
            // Garbage, with records that check out mixed in at arbitrary seqs.
            pieces in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..80), 0..30u64), 0..10),
        ) {
            let mut contents = if with_header { segment_header(1).to_vec() } else { Vec::new() };
            let mut record = Vec::new();
            for (is_record, bytes, seq) in &pieces {
                if *is_record {
                    encode_record(&mut record, *seq, 0, bytes);
                    contents.extend_from_slice(&record);
                } else {
                    contents.extend_from_slice(bytes);
                }
            }
            read_checked(&contents)?;
        }

        #[test]
        fn mutated_segment_never_panics_and_yields_only_written_records(
            n in 0..12u64,
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let segment = one_segment_of(dir.path(), n);
            let mut contents = fs::read(&segment).unwrap_or_default();
            for m in &mutations {
                match m {
                    Mutation::Flip(at, mask) if !contents.is_empty() => {
                        let at = at.index(contents.len());
                        contents[at] ^= mask;
                    }
                    Mutation::Truncate(at) => contents.truncate(at.index(contents.len() + 1)),
                    Mutation::Insert(at, bytes) => {
                        let at = at.index(contents.len() + 1);
                        contents.splice(at..at, bytes.iter().copied());
                    }
                    Mutation::Flip(..) => {}
                }
            }
            for (seq, got) in read_checked(&contents)? {
                prop_assert!((1..=n).contains(&seq) && got == payload(seq), "seq {seq} is not as written");
            }
        }
    }
}
