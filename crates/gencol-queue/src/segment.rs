//! Reading one segment file: its records in order, and the damaged regions between them.
//! Policy (what a region costs, whether to report it) is the reader's; this only finds them.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _, Seek, SeekFrom};
use std::path::Path;

use crate::format::{
    MAX_PAYLOAD, RECORD_HEADER_LEN, RECORD_MAGIC, SEGMENT_HEADER_LEN, parse_record_header, parse_segment_header,
    record_crc,
};

/// What the next stretch of a segment holds.
pub(crate) enum Item {
    Record { seq: u64, time_ms: u64, payload: Vec<u8> },
    Bad(BadRegion),
    End,
}

/// Bytes that hold no record that checks out, up to the next one that does or the limit.
pub(crate) struct BadRegion {
    pub offset: u64,
    pub bytes: u64,
    /// The seq of the good record right after the region, if the region does not run to the limit.
    pub next_seq: Option<u64>,
    /// The region is one record whose length runs past the limit: a write cut off.
    pub cut_short: bool,
    pub reason: String,
}

/// The seqs a record here may carry: a record out of order is as damaged as one with a bad
/// checksum, since handing it out would break the order acknowledgements rely on.
#[derive(Clone, Copy)]
pub(crate) struct SeqRange {
    pub after: u64,
    pub before: u64,
}

struct GoodRecord {
    seq: u64,
    time_ms: u64,
    payload: Vec<u8>,
}

/// Why the bytes at a position are not a record.
enum Flaw {
    Magic,
    TooLong(u32),
    CutShort,
    Crc,
    OutOfOrder { seq: u64, range: SeqRange },
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flaw::Magic => f.write_str("bad record magic"),
            Flaw::TooLong(len) => write!(f, "record length {len} is over the {MAX_PAYLOAD}-byte limit"),
            Flaw::CutShort => f.write_str("record cut short by the end of the file"),
            Flaw::Crc => f.write_str("record checksum mismatch"),
            Flaw::OutOfOrder { seq, range } => {
                write!(f, "record seq {seq} out of order (expected after {} and before {})", range.after, range.before)
            }
        }
    }
}

/// An open segment file and how far into it reading has come.
pub(crate) struct SegmentCursor {
    file: File,
    /// Where the file's own position is, so sequential reads need no seek.
    pos: Option<u64>,
    /// The next byte to read.
    pub offset: u64,
    pub file_len: u64,
    /// Written over a delivered segment: what follows the last record is the old bytes.
    reused: bool,
}

impl SegmentCursor {
    /// Opens a segment and checks its header against the first seq its name gives;
    /// `Ok(Err(reason))` when the header is bad.
    pub fn open(path: &Path, first_seq: u64) -> io::Result<Result<Self, String>> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let mut cursor = SegmentCursor { file, pos: None, offset: SEGMENT_HEADER_LEN, file_len, reused: false };
        if file_len < SEGMENT_HEADER_LEN {
            return Ok(Err(format!("file of {file_len} bytes is shorter than a segment header")));
        }
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        cursor.read_at(0, &mut header)?;
        Ok(match parse_segment_header(&header) {
            None => Err("bad segment header (magic or checksum)".to_string()),
            Some((seq, _)) if seq != first_seq => {
                Err(format!("segment header says first seq {seq}, its name {first_seq}"))
            }
            Some((_, reused)) => {
                cursor.reused = reused;
                Ok(cursor)
            }
        })
    }

    /// The next record before `limit`, or the damaged region in its place.
    pub fn next(&mut self, limit: u64, range: SeqRange) -> io::Result<Item> {
        let start = self.offset;
        if start >= limit {
            return Ok(Item::End);
        }
        let flaw = match self.record_at(start, limit, range)? {
            Ok(GoodRecord { seq, time_ms, payload }) => {
                self.offset = start + RECORD_HEADER_LEN + payload.len() as u64;
                return Ok(Item::Record { seq, time_ms, payload });
            }
            Err(flaw) => flaw,
        };
        let next = self.find_record(start + 1, limit, range)?;
        let end = next.map_or(limit, |(pos, _)| pos);
        self.offset = end;
        // In a reused segment, what runs to the end without a record after it is the old
        // segment's bytes, unless it starts as the next record would: a write cut off.
        let torn_reuse = next.is_none() && self.reused && self.starts_next_record(start, limit, range)?;
        if next.is_none() && self.reused && !torn_reuse {
            return Ok(Item::End);
        }
        Ok(Item::Bad(BadRegion {
            offset: start,
            bytes: end - start,
            next_seq: next.map(|(_, seq)| seq),
            cut_short: next.is_none() && (torn_reuse || matches!(flaw, Flaw::CutShort)),
            reason: flaw.to_string(),
        }))
    }

    /// The record at `pos` if it checks out; loads at most that one record.
    fn record_at(&mut self, pos: u64, limit: u64, range: SeqRange) -> io::Result<Result<GoodRecord, Flaw>> {
        let available = limit - pos;
        if available < RECORD_HEADER_LEN {
            // A header cut short still starts with (part of) the magic; anything else is damage.
            let mut head = [0u8; 4];
            let n = available.min(4) as usize;
            self.read_at(pos, &mut head[..n])?;
            return Ok(Err(if head[..n] == RECORD_MAGIC[..n] { Flaw::CutShort } else { Flaw::Magic }));
        }
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        self.read_at(pos, &mut header)?;
        let Some(fields) = parse_record_header(&header) else { return Ok(Err(Flaw::Magic)) };
        if fields.len as usize > MAX_PAYLOAD {
            return Ok(Err(Flaw::TooLong(fields.len)));
        }
        if u64::from(fields.len) > available - RECORD_HEADER_LEN {
            return Ok(Err(Flaw::CutShort));
        }
        let mut payload = vec![0u8; fields.len as usize];
        self.read_at(pos + RECORD_HEADER_LEN, &mut payload)?;
        if record_crc(&header, &payload) != fields.crc {
            return Ok(Err(Flaw::Crc));
        }
        if fields.seq <= range.after || fields.seq >= range.before {
            return Ok(Err(Flaw::OutOfOrder { seq: fields.seq, range }));
        }
        Ok(Ok(GoodRecord { seq: fields.seq, time_ms: fields.time_ms, payload }))
    }

    /// Whether the bytes at `pos` begin the header of the record that would come next.
    fn starts_next_record(&mut self, pos: u64, limit: u64, range: SeqRange) -> io::Result<bool> {
        if limit.saturating_sub(pos) < RECORD_HEADER_LEN {
            return Ok(false);
        }
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        self.read_at(pos, &mut header)?;
        Ok(parse_record_header(&header).is_some_and(|h| h.seq == range.after.saturating_add(1)))
    }

    /// The position and seq of the first record from `from` on that checks out, trying
    /// every place the magic occurs.
    fn find_record(&mut self, from: u64, limit: u64, range: SeqRange) -> io::Result<Option<(u64, u64)>> {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut start = from;
        while limit.saturating_sub(start) >= RECORD_HEADER_LEN {
            let n = (limit - start).min(chunk.len() as u64) as usize;
            self.read_at(start, &mut chunk[..n])?;
            for i in 0..=n - RECORD_MAGIC.len() {
                if chunk[i..i + RECORD_MAGIC.len()] == RECORD_MAGIC
                    && let Ok(GoodRecord { seq, .. }) = self.record_at(start + i as u64, limit, range)?
                {
                    return Ok(Some((start + i as u64, seq)));
                }
            }
            // The last three bytes may begin a magic that the next chunk completes.
            start += (n - (RECORD_MAGIC.len() - 1)) as u64;
        }
        Ok(None)
    }

    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.pos != Some(pos) {
            self.pos = None;
            self.file.seek(SeekFrom::Start(pos))?;
        }
        self.pos = None;
        self.file.read_exact(buf)?;
        self.pos = Some(pos + buf.len() as u64);
        Ok(())
    }
}

/// The last seq a segment found at open used, so the writer's next one comes after it:
/// a damaged region at the end counts as one more (the record there took a seq). `None`
/// when the header is bad.
pub(crate) fn last_seq_used(path: &Path, first_seq: u64) -> io::Result<Option<u64>> {
    let Ok(mut cursor) = SegmentCursor::open(path, first_seq)? else { return Ok(None) };
    let limit = cursor.file_len;
    let mut last = first_seq.saturating_sub(1);
    loop {
        match cursor.next(limit, SeqRange { after: last, before: u64::MAX })? {
            Item::Record { seq, .. } => last = seq,
            Item::Bad(BadRegion { next_seq: Some(next), .. }) => last = next - 1,
            Item::Bad(_) => return Ok(Some(last.saturating_add(1))),
            Item::End => return Ok(Some(last)),
        }
    }
}

/// Whether a file holds nothing but (a prefix of) its own segment header: a crash right
/// after creating it. Such a file holds no record, so it can go.
pub(crate) fn holds_no_record(path: &Path, first_seq: u64, len: u64) -> bool {
    len <= SEGMENT_HEADER_LEN
        && std::fs::read(path).is_ok_and(|bytes| crate::format::segment_header(first_seq).starts_with(&bytes))
}
