//! Helpers shared by the tests of every module.

use crate::{Options, Read, Reader, Skipped};

/// Small segments, so a few records already span several files.
pub fn small_segments() -> Options {
    Options { max_bytes: 1 << 30, segment_bytes: 256 }
}

/// Reads until End: the records as (seq, payload), and the skipped regions.
pub fn read_all(reader: &mut Reader) -> (Vec<(u64, Vec<u8>)>, Vec<Skipped>) {
    let (mut records, mut skipped) = (Vec::new(), Vec::new());
    loop {
        match reader.next().expect("read") {
            Read::Record { seq, payload, .. } => records.push((seq, payload)),
            Read::Skipped(s) => skipped.push(s),
            Read::End => return (records, skipped),
        }
    }
}

pub fn payload(i: u64) -> Vec<u8> {
    format!("record number {i} {}", "x".repeat((i % 7) as usize * 10)).into_bytes()
}
