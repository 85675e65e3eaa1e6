//! Compact JSON text, byte for byte what `serde_json::to_writer` writes, with a string
//! escaper that skips clean runs eight bytes at a time. Prompt and completion text is
//! written twice per span (as the message JSON, then escaped again inside the OTLP/JSON
//! body), and serde_json's byte-at-a-time escape loop was the largest single cost of both.

use serde_json::Value;

/// Writes `s` as a JSON string: quotes, `\"`, `\\`, the short escapes `\b \f \n \r \t`,
/// and `\u00XX` (lower-case hex) for the other control characters, as serde_json does.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time; the lowest flagged byte of a chunk is exactly the first
        // one to escape, so a chunk with an escape costs one step, not eight.
        if let Some(chunk) = bytes.get(i..i + 8) {
            let flags = escape_flags(u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
            if flags == 0 {
                i += 8;
                continue;
            }
            i += (flags.trailing_zeros() / 8) as usize;
        }
        let b = bytes[i];
        if let Some(escape) = escape_of(b) {
            out.extend_from_slice(&bytes[start..i]);
            match escape {
                Escape::Short(c) => out.extend_from_slice(&[b'\\', c]),
                Escape::Unicode => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ]);
                }
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes `value` as compact JSON (object keys in the map's order: sorted, as serde_json's
/// default map keeps them).
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's own number forms (itoa, ryu); numbers are rare next to text.
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => write_array(out, items),
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, v);
            }
            out.push(b'}');
        }
    }
}

/// Writes `items` as a compact JSON array.
pub fn write_array(out: &mut Vec<u8>, items: &[Value]) {
    write_list(out, items, write_value);
}

/// `[`, each item as `write` writes it, commas between, `]`.
pub fn write_list<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

/// Writes JSON text that is already valid (a [`serde_json::value::RawValue`]'s) compactly:
/// whitespace between tokens dropped, strings and numbers copied as they are. Returns
/// `false`, with nothing written, when a string holds an escape that [`write_str`] would not
/// write (`\/`, or `\u` for anything but a control character): such text must be parsed
/// and written again, so that what later stages (the privacy rules) search is the plain
/// characters, not `\u0040` for `@`.
pub fn write_raw_compact(out: &mut Vec<u8>, raw: &str) -> bool {
    let start = out.len();
    let bytes = raw.as_bytes();
    out.reserve(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            b'"' => match string_end(bytes, i) {
                Some(end) => {
                    out.extend_from_slice(&bytes[i..end]);
                    i = end;
                }
                None => {
                    out.truncate(start);
                    return false;
                }
            },
            _ => {
                let run = bytes[i..].iter().position(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | b'"'));
                let end = run.map_or(bytes.len(), |n| i + n);
                out.extend_from_slice(&bytes[i..end]);
                i = end;
            }
        }
    }
    true
}

/// The end (one past the closing quote) of the JSON string opening at `open`, if every
/// escape in it is one [`write_str`] writes.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        if bytes[i] == b'"' {
            return Some(i + 1);
        }
        match &bytes[i + 1..] {
            [b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't', ..] => i += 2,
            [b'u', b'0', b'0', b'0' | b'1', h, ..] if h.is_ascii_hexdigit() => i += 6,
            _ => return None,
        }
    }
}

enum Escape {
    Short(u8),
    Unicode,
}

fn escape_of(b: u8) -> Option<Escape> {
    Some(match b {
        b'"' => Escape::Short(b'"'),
        b'\\' => Escape::Short(b'\\'),
        b'\n' => Escape::Short(b'n'),
        b'\r' => Escape::Short(b'r'),
        b'\t' => Escape::Short(b't'),
        0x08 => Escape::Short(b'b'),
        0x0c => Escape::Short(b'f'),
        0x00..=0x1f => Escape::Unicode,
        _ => return None,
    })
}

/// The high bit of each of the eight bytes (little-endian) that is a control character,
/// `"` or `\`, by the classic "has a zero byte" and "has a byte less than n" bit tricks.
/// A borrow can flag a byte above a flagged one that needs no escape, never one below:
/// the lowest flag is exact (so the first byte to escape is found at once), and a later
/// false flag only costs the byte-wise look at that byte.
fn escape_flags(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
    below_space | zero_bytes(x ^ (ONES * u64::from(b'"'))) | zero_bytes(x ^ (ONES * u64::from(b'\\')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn strings_match_serde_json_byte_for_byte() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain text longer than eight bytes".into(),
            "quote \" and backslash \\ and tab\t and newline\n".into(),
            "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}\u{7f} é ü 日本語 🎉".into(),
            "{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"hi\"}]}".into(),
        ];
        // Every byte value below 0x80 at every offset of a 17-byte string.
        for b in 0u8..0x80 {
            for at in 0..17 {
                let mut s = "abcdefghijklmnopq".to_owned().into_bytes();
                s[at] = b;
                cases.push(String::from_utf8(s).expect("ASCII"));
            }
        }
        for s in cases {
            assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }

    /// Two bytes side by side at every offset: a chunk's first escape is found by its lowest
    /// flag, and a byte after a control character can be flagged falsely (a borrow), so
    /// neighbours must come out right whichever of them needs the escape.
    #[test]
    fn neighbouring_bytes_match_serde_json() {
        for a in 0u8..0x80 {
            for b in 0u8..0x80 {
                for at in [0, 5, 7, 8, 14] {
                    let mut s = "abcdefghijklmnopq".to_owned().into_bytes();
                    s[at] = a;
                    s[at + 1] = b;
                    let s = String::from_utf8(s).expect("ASCII");
                    assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn values_match_serde_json_byte_for_byte() {
        let v = json!([{"role": "user", "parts": [{"type": "text", "content": "a \"quoted\"\nline"}], "n": 1.5,
            "i": -3, "big": 18446744073709551615u64, "f": 1e300, "z": 0.1, "ok": true, "none": null, "e": {}, "a": []}]);
        let mut out = Vec::new();
        write_value(&mut out, &v);
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
    }

    fn compact(raw: &str) -> Option<String> {
        let mut out = b"kept".to_vec();
        let written = write_raw_compact(&mut out, raw);
        let text = String::from_utf8(out).expect("UTF-8");
        let rest = text.strip_prefix("kept").expect("what was there stays");
        if written {
            Some(rest.to_owned())
        } else {
            assert_eq!(rest, "", "nothing written on refusal");
            None
        }
    }

    #[test]
    fn raw_json_is_compacted_to_what_serde_json_writes() {
        // Keys already in serde_json's (sorted) order, so the bytes must match exactly.
        let cases = [
            "{ \"content\" : \"a b\\n\\\"c\\\"\\t\\u001f\\\\\" ,\n \"role\":\"user\" }",
            "[ 1 , -2 , true , false , null , { } , [ ] , \"x y\" ]",
            "\t{\"a\":[{\"b\":\"  spaces  stay  \"}],\"c\":\"é 日本\"}\r\n",
            "\"ends with an escaped quote \\\"\"",
        ];
        for raw in cases {
            let value: Value = serde_json::from_str(raw).expect("valid JSON");
            assert_eq!(compact(raw).as_deref(), Some(serde_json::to_string(&value).unwrap().as_str()), "{raw}");
        }
    }

    #[test]
    fn raw_json_with_escapes_serde_json_would_not_write_is_refused() {
        for raw in ["\"a\\/b\"", "{\"e\":\"me\\u0040example.com\"}", "[\"\\ud83c\\udf89\"]", "\"\\u00e9\""] {
            assert_eq!(compact(raw), None, "{raw}");
        }
    }
}
