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
        if i + 8 <= bytes.len() {
            let chunk = u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
            if !needs_escape(chunk) {
                i += 8;
                continue;
            }
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

/// Whether any of the eight bytes is a control character, `"` or `\` (the classic
/// "has a zero byte" and "has a byte less than n" bit tricks; exact, no false negatives,
/// and false positives only cost the byte-wise look).
fn needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0;
    below_space || has_zero(x ^ (ONES * u64::from(b'"'))) || has_zero(x ^ (ONES * u64::from(b'\\')))
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

    #[test]
    fn values_match_serde_json_byte_for_byte() {
        let v = json!([{"role": "user", "parts": [{"type": "text", "content": "a \"quoted\"\nline"}], "n": 1.5,
            "i": -3, "big": 18446744073709551615u64, "f": 1e300, "z": 0.1, "ok": true, "none": null, "e": {}, "a": []}]);
        let mut out = Vec::new();
        write_value(&mut out, &v);
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
    }
}
