//! Trace and span ids (SPEC §3). Every id is derived from the record, so a re-sent
//! generation produces the same spans, and users can compute ids on their side
//! (`expense_analysis_001` → `a5475f808fa6162b8e6ef2f8c7720f77`, as OpenRouter users see).

use sha2::{Digest, Sha256};

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn first<const N: usize>(digest: [u8; 32]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&digest[..N]);
    out
}

/// `s` as N bytes when it is exactly 2N hex digits and not all zero.
fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    (out != [0u8; N]).then_some(out)
}

/// The trace id: `trace.trace_id` as is when it is 32 hex digits (not all zero), else
/// the first 16 bytes of SHA-256 of it; without one, of `"gencol:trace:" + id`.
pub fn trace_id(raw: Option<&str>, generation_id: &str) -> [u8; 16] {
    match raw {
        Some(raw) => hex_id(raw).unwrap_or_else(|| first(sha256(&[raw.as_bytes()]))),
        None => first(sha256(&[b"gencol:trace:", generation_id.as_bytes()])),
    }
}

/// The parent span id: 16 hex digits (not all zero) as is, else the first 8 bytes of
/// SHA-256 of the value.
pub fn parent_span_id(raw: &str) -> [u8; 8] {
    hex_id(raw).unwrap_or_else(|| first(sha256(&[raw.as_bytes()])))
}

/// The generation span: `"gencol:gen:" + id`.
pub fn generation_span_id(generation_id: &str) -> [u8; 8] {
    first(sha256(&[b"gencol:gen:", generation_id.as_bytes()]))
}

/// The root span: `"gencol:root:" + traceIdHex + ":" + trace_name (+ ":" + parentSpanIdHex)`.
pub fn root_span_id(trace_id_hex: &str, trace_name: &str, parent_hex: Option<&str>) -> [u8; 8] {
    match parent_hex {
        Some(p) => {
            first(sha256(&[b"gencol:root:", trace_id_hex.as_bytes(), b":", trace_name.as_bytes(), b":", p.as_bytes()]))
        }
        None => first(sha256(&[b"gencol:root:", trace_id_hex.as_bytes(), b":", trace_name.as_bytes()])),
    }
}

/// The intermediate span: `"gencol:span:" + traceIdHex + ":" + parentIdHex + ":" + span_name`,
/// parentIdHex empty when nothing is above it.
pub fn intermediate_span_id(trace_id_hex: &str, parent_hex: &str, span_name: &str) -> [u8; 8] {
    first(sha256(&[b"gencol:span:", trace_id_hex.as_bytes(), b":", parent_hex.as_bytes(), b":", span_name.as_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_hex_trace_id_hashes_like_openrouter() {
        assert_eq!(hex::encode(trace_id(Some("expense_analysis_001"), "g")), "a5475f808fa6162b8e6ef2f8c7720f77");
    }

    #[test]
    fn hex_ids_are_used_lower_cased_unless_zero() {
        let t = "4BF92F3577B34DA6A3CE929D0E0E4736";
        assert_eq!(hex::encode(trace_id(Some(t), "g")), t.to_lowercase());
        let zero = "00000000000000000000000000000000";
        assert_ne!(trace_id(Some(zero), "g"), [0; 16]);
        assert_eq!(hex::encode(parent_span_id("0123456789abcdef")), "0123456789abcdef");
        assert_ne!(hex::encode(parent_span_id("0123456789abcdeg")), "0123456789abcdeg");
        assert_ne!(parent_span_id("0000000000000000"), [0; 8]);
    }

    #[test]
    fn missing_trace_id_derives_from_generation_id() {
        let mut h = Sha256::new();
        h.update(b"gencol:trace:gen-1");
        let d: [u8; 32] = h.finalize().into();
        assert_eq!(trace_id(None, "gen-1").as_slice(), &d[..16]);
    }
}
