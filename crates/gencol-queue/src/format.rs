//! Where each byte sits in a segment header, a record and the ack file; no I/O here.

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"GCQSEG01";
/// The magic of a segment written over a delivered one: past its last record lie the old
/// segment's bytes, which are not damage.
pub(crate) const SEGMENT_MAGIC_REUSED: [u8; 8] = *b"GCQSEG1R";
pub(crate) const SEGMENT_HEADER_LEN: u64 = 20;
/// The u32 0x31524347 in little-endian order, which reads "GCR1".
pub(crate) const RECORD_MAGIC: [u8; 4] = 0x3152_4347u32.to_le_bytes();
pub(crate) const RECORD_HEADER_LEN: u64 = 28;
const ACK_LEN: usize = 12;

/// The longest payload a record may carry (64 MiB). A longer length field on disk is
/// corruption, which keeps a damaged length from making the reader allocate gigabytes.
pub const MAX_PAYLOAD: usize = 64 << 20;

pub(crate) fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first seq a segment file's name gives, or `None` when the name is not a segment's.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A delivered segment kept for reuse: named after the first seq it held.
pub(crate) fn spare_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.spare")
}

pub(crate) fn is_spare_file_name(name: &str) -> bool {
    name.strip_suffix(".spare").is_some_and(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    header_with(SEGMENT_MAGIC, first_seq)
}

/// The header of a segment written over a delivered one (see [`SEGMENT_MAGIC_REUSED`]).
pub(crate) fn reused_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    header_with(SEGMENT_MAGIC_REUSED, first_seq)
}

fn header_with(magic: [u8; 8], first_seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(&magic);
    header[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&header[..16]);
    header[16..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The first seq a segment header names and whether the segment reuses a delivered one's
/// file, or `None` when its magic or checksum is wrong.
pub(crate) fn parse_segment_header(header: &[u8; SEGMENT_HEADER_LEN as usize]) -> Option<(u64, bool)> {
    let reused = header[..8] == SEGMENT_MAGIC_REUSED;
    let intact = (reused || header[..8] == SEGMENT_MAGIC) && crc32fast::hash(&header[..16]) == u32_at(header, 16);
    intact.then(|| (u64_at(header, 8), reused))
}

/// Replaces `out` with the record's bytes, header and payload, ready for a single write.
pub(crate) fn encode_record(out: &mut Vec<u8>, seq: u64, time_ms: u64, payload: &[u8]) {
    out.clear();
    out.reserve(RECORD_HEADER_LEN as usize + payload.len());
    out.extend_from_slice(&RECORD_MAGIC);
    // The writer refuses payloads over MAX_PAYLOAD, so the length fits a u32.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[4..24]);
    crc.update(payload);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// A record header's fields, read before the payload so its length can be checked first.
pub(crate) struct RecordHeader {
    pub len: u32,
    pub seq: u64,
    pub time_ms: u64,
    pub crc: u32,
}

/// The header's fields, or `None` when the magic is wrong.
pub(crate) fn parse_record_header(header: &[u8; RECORD_HEADER_LEN as usize]) -> Option<RecordHeader> {
    (header[..4] == RECORD_MAGIC).then(|| RecordHeader {
        len: u32_at(header, 4),
        seq: u64_at(header, 8),
        time_ms: u64_at(header, 16),
        crc: u32_at(header, 24),
    })
}

pub(crate) fn record_crc(header: &[u8; RECORD_HEADER_LEN as usize], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[4..24]);
    crc.update(payload);
    crc.finalize()
}

pub(crate) fn encode_ack(seq: u64) -> [u8; ACK_LEN] {
    let mut ack = [0u8; ACK_LEN];
    ack[..8].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&ack[..8]);
    ack[8..].copy_from_slice(&crc.to_le_bytes());
    ack
}

/// The acknowledged seq an ack file holds, or `None` when its length or checksum is wrong.
pub(crate) fn parse_ack(bytes: &[u8]) -> Option<u64> {
    (bytes.len() == ACK_LEN && crc32fast::hash(&bytes[..8]) == u32_at(bytes, 8)).then(|| u64_at(bytes, 0))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut le = [0u8; 4];
    le.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(le)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_magic_reads_gcr1() {
        assert_eq!(&RECORD_MAGIC, b"GCR1");
    }

    #[test]
    fn segment_names_are_twenty_digits_and_nothing_else() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_file_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.seg"), None, "over u64::MAX");
    }

    #[test]
    fn headers_and_acks_round_trip_and_reject_a_flipped_bit() {
        let mut header = segment_header(7);
        assert_eq!(parse_segment_header(&header), Some((7, false)));
        header[9] ^= 1;
        assert_eq!(parse_segment_header(&header), None);
        assert_eq!(parse_segment_header(&reused_segment_header(8)), Some((8, true)));
        let mut ack = encode_ack(99);
        assert_eq!(parse_ack(&ack), Some(99));
        ack[0] ^= 1;
        assert_eq!(parse_ack(&ack), None);
        assert_eq!(parse_ack(&[0; 5]), None);
    }
}
