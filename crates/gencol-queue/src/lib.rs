//! The on-disk format of gencol's per-exporter disk queues: a segmented append-only log
//! with a checksum per record, a [`Writer`] that appends, a [`Reader`] that hands records
//! out in order and takes acknowledgements in any order, and [`inspect`] for
//! `gencol queue inspect`.
//!
//! # Format
//! A directory is one queue. Segment files are named after the first sequence number they
//! hold, 20 digits zero-padded (`00000000000000000001.seg`), and start with a 20-byte header:
//! the magic `GCQSEG01`, the first seq (u64 LE) and a CRC-32 (IEEE) of those 16 bytes (u32 LE).
//! Records follow back to back, each a 28-byte header — magic `GCR1`, payload length (u32 LE,
//! at most [`MAX_PAYLOAD`]), seq (u64 LE), unix time in milliseconds when written (u64 LE),
//! CRC-32 of length, seq, time and payload (u32 LE) — then the payload. Seqs start at 1 and
//! only grow; they are never reused, not even for a record lost to a crash. The file `ack`
//! holds the highest seq up to which everything was acknowledged (u64 LE and its CRC-32); it
//! is replaced by renaming `ack.tmp` over it. The file `lock` is held locked while a queue is
//! open.
//!
//! Delivered segments are not all deleted: up to two are renamed `<first seq>.spare`, and the
//! writer's next segment is written over one (header magic `GCQSEG1R`: reused). Writing
//! over blocks a file already has makes each fsync cheaper than appending (no allocation,
//! no size change), and no block is freed, which on a filesystem mounted with `discard`
//! waits for the device. Past a reused segment's last record lie the old segment's bytes:
//! its records have older seqs, so they never pass for records of this one, and a reader
//! ends such a segment there silently, unless the bytes start as the next record would (a
//! write cut off, reported as a torn tail). Subdirectories are ignored (they may be other queues); any other file is foreign:
//! reported, never touched.
//!
//! # Failure model
//! A record is appended with one write, so a crash leaves at most one record cut short at the
//! end of a segment; after a restart the writer never appends to an old segment again, so
//! that torn tail stays where the reader can recognise it. A stale ack file only means records
//! are delivered again, so acks are not fsynced; durability of records is the caller's choice,
//! through [`SyncPoint`]. Damage anywhere is never an error and never a panic: the reader
//! steps over it byte by byte to the next record that checks out, says once what it skipped
//! and how many records were lost, and goes on — a queue must not crash-loop on a bad byte.
//! Errors are left for real I/O failures, the queue being full, and the lock being taken.

#![forbid(unsafe_code)]

mod deleter;
mod format;
mod inspect;
mod open;
mod reader;
mod segment;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use format::MAX_PAYLOAD;
pub use inspect::{Inspection, inspect, read_back};
pub use open::{OpenReport, Opened, open};
pub use reader::{Read, Reader, Skipped};
pub use writer::{SyncPoint, Writer};

/// How large a queue may grow on disk and how large each of its segment files gets: a
/// segment is deleted only once all its records are acknowledged, so smaller segments give
/// space back sooner at the cost of more files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Bytes of segment files past which appends are refused (default 1 GiB).
    pub max_bytes: u64,
    /// Size at which the writer moves on to a new segment file (default 8 MiB).
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { max_bytes: 1 << 30, segment_bytes: 8 << 20 }
    }
}

/// Why a queue operation failed; each message says what happened, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The records waiting on disk have reached `max_bytes`: new data must wait or be refused.
    #[error(
        "disk queue is full ({bytes} of max_bytes {max_bytes} bytes): the destination is not taking data; \
         raise queue.max_bytes or fix the destination"
    )]
    Full { bytes: u64, max_bytes: u64 },
    /// Another process holds the queue directory's lock.
    #[error(
        "disk queue directory {} is locked: another gencol uses it; stop that one or give each gencol \
         its own queue directory",
        dir.display()
    )]
    Locked { dir: PathBuf },
    /// Reading or writing a queue file failed.
    #[error("disk queue I/O error on {}: {source}; check the disk (free space, permissions, health)", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A payload longer than a record may be; it can never be written, whatever the room.
    #[error("record of {len} bytes is over the disk queue's limit of {max} bytes per record: send smaller batches")]
    TooLarge { len: usize, max: usize },
}

impl QueueError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        QueueError::Io { path: path.into(), source }
    }
}

/// What the writer and the reader of one open queue both see: the segment files, how far
/// the writer has completely written, and how far the reader has acknowledged.
struct Shared {
    segments: BTreeMap<u64, SegmentState>,
    /// The segment the writer appends to; the reader never deletes it.
    active: Option<u64>,
    /// Bytes of all live segment files.
    bytes: u64,
    /// The seq the writer gives its next record; `None` when there is no writer (inspect).
    next_seq: Option<u64>,
    acked_upto: u64,
    /// A segment file was deleted since the writer's last sync point.
    dir_changed: bool,
    /// Delivered segment files kept for the writer to write over (at most [`MAX_SPARES`]).
    spares: Vec<PathBuf>,
    /// Held for as long as the writer or the reader lives; dropping it releases the lock.
    _lock: Option<File>,
}

/// One segment file, keyed in [`Shared`] by its first seq.
struct SegmentState {
    path: PathBuf,
    bytes: u64,
    /// How far the writer of this process has completely written it; `None` for a file
    /// found at open, which nobody writes any more and is read to its end.
    limit: Option<u64>,
}

/// Delivered segments kept for reuse, at most: one to roll into while the next is
/// delivered. Their bytes are not counted in `max_bytes` (they hold no record).
const MAX_SPARES: usize = 2;

/// A panic elsewhere while holding the lock leaves plain numbers behind, still usable.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod test_support;
