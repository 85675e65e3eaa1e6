//! Masking of configured secrets in texts that come back from a destination.
//!
//! A destination may quote a request back in an error: `invalid key rk_live_…`, the
//! `Authorization` header as JSON (`"Bearer abc\/def"`), a Basic credential as base64, the
//! URL it was called with (`%2F`), or the key lower-cased. Those texts end up in logs and
//! in `gencol test-connection` output, so every exporter builds one [`SecretMask`] from its
//! settings when it is built, and passes every destination text through it before the text
//! reaches a message. Building is the costly part (an Aho-Corasick automaton over every
//! form of every secret); masking runs only on error and partial-success texts, never on
//! the path of a delivered batch.
//!
//! How: the text is first *normalized* (JSON escapes `\/`, `\\`, `\"` and `\u00XX`, and
//! percent-escapes `%XX` in either case, are decoded, each decoded byte remembering where
//! it came from), then searched ASCII-case-insensitively for each secret as written and
//! normalized, and for its base64 forms (standard and URL-safe, padded or not, at each of
//! the three alignments it can have inside a longer encoded text). Each match masks the
//! whole stretch of the original text it came from, escapes included, with `***`. So any
//! mix of escapes and letter case is found, without listing every combination.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, STANDARD_PAD_INDIFFERENT, URL_SAFE, URL_SAFE_NO_PAD};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets (and forms of them) shorter than this are not masked: they would garble
/// ordinary text, and no credential is that short.
pub const MIN_SECRET_LEN: usize = 4;

/// How many bytes of text one character of a secret can take when escaped (`\u002f`).
const WIDEST_ESCAPE: usize = 6;

/// The secrets of one component, ready to be masked in any text. Cheap to clone.
#[derive(Clone, Default)]
pub struct SecretMask {
    inner: Option<Arc<Matcher>>,
}

struct Matcher {
    automaton: AhoCorasick,
    /// Bytes of the longest needle, normalized.
    longest: usize,
}

/// Never shows the secrets, only how many forms are searched for.
impl std::fmt::Debug for SecretMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let forms = self.inner.as_ref().map_or(0, |m| m.automaton.patterns_len());
        f.debug_struct("SecretMask").field("forms", &forms).finish()
    }
}

impl SecretMask {
    /// A mask for `secrets` (whitespace around each is ignored; those shorter than
    /// [`MIN_SECRET_LEN`] are left out). Use [`header_secrets`] and [`url_secrets`] to
    /// turn settings into secrets.
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> SecretMask {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref().trim().as_bytes();
            if secret.len() < MIN_SECRET_LEN {
                continue;
            }
            // As written, and decoded (a key written `%2F`-escaped in a URL is echoed
            // as `/`). Base64 forms hold no escapes.
            needles.push(secret.to_vec());
            needles.push(normalize(secret).0);
            needles.extend(base64_forms(secret));
        }
        needles.retain(|n| n.len() >= MIN_SECRET_LEN);
        needles.sort();
        needles.dedup();
        if needles.is_empty() {
            return SecretMask::default();
        }
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        // Standard semantics: every match is reported, overlapping ones too, so a secret
        // that begins inside another is masked whole as well.
        let automaton =
            AhoCorasickBuilder::new().ascii_case_insensitive(true).match_kind(MatchKind::Standard).build(&needles);
        match automaton {
            Ok(automaton) => SecretMask { inner: Some(Arc::new(Matcher { automaton, longest })) },
            // Only a set of needles too large for the automaton fails; then mask everything
            // rather than risk showing a secret.
            Err(_) => SecretMask { inner: Some(Arc::new(Matcher::everything())) },
        }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// Bytes of text one secret can span at most in its widest escaped form. A text cut
    /// short (a body read only in part) may end in the start of a secret that cannot be
    /// recognised: drop this many bytes from its end before masking.
    pub fn margin(&self) -> usize {
        self.inner.as_ref().map_or(0, |m| m.longest * WIDEST_ESCAPE)
    }

    /// `text` with every form of every secret replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        self.mask_spans(text).0
    }

    /// One line for a message: `text` masked, *then* cut to at most `max_bytes` (plus a
    /// mask the cut would split, and `…` when cut), with control characters (line
    /// breaks, terminal escapes) turned into spaces and surrounding whitespace trimmed.
    /// Masking first means a secret across the cut is masked whole, not shown minus its
    /// last characters.
    pub fn excerpt(&self, text: &str, max_bytes: usize) -> String {
        let (masked, masks) = self.mask_spans(text);
        // Masks are not whitespace, so trimming the start never enters one.
        let lead = masked.len() - masked.trim_start().len();
        let body = &masked[lead..];
        let mut cut = body.len();
        if body.len() > max_bytes {
            cut = max_bytes;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Some(&(_, end)) = masks.iter().find(|&&(start, end)| start - lead < cut && cut < end - lead) {
                cut = end - lead;
            }
        }
        let mut shown: String = body[..cut].trim_end().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        if cut < body.len() {
            shown.push('…');
        }
        shown
    }

    /// The masked text and where each `***` stands in it.
    fn mask_spans(&self, text: &str) -> (String, Vec<(usize, usize)>) {
        let Some(matcher) = &self.inner else { return (text.to_owned(), Vec::new()) };
        let ranges = matcher.ranges(text);
        let mut out = String::with_capacity(text.len());
        let mut masks = Vec::with_capacity(ranges.len());
        let mut at = 0;
        for (start, end) in ranges {
            out.push_str(&text[at..start]);
            masks.push((out.len(), out.len() + MASK.len()));
            out.push_str(MASK);
            at = end;
        }
        out.push_str(&text[at..]);
        (out, masks)
    }
}

impl Matcher {
    /// Matches every character: used only if the real automaton cannot be built.
    fn everything() -> Matcher {
        let all: Vec<[u8; 1]> = (0..=255u8).map(|b| [b]).collect();
        let automaton = AhoCorasick::new(all).expect("256 one-byte patterns always build");
        Matcher { automaton, longest: 1 }
    }

    /// The byte ranges of `text` to mask: sorted, merged, on character boundaries.
    fn ranges(&self, text: &str) -> Vec<(usize, usize)> {
        let (normalized, starts) = normalize(text.as_bytes());
        let mut found: Vec<(usize, usize)> =
            self.automaton.find_overlapping_iter(&normalized).map(|m| (starts[m.start()], starts[m.end()])).collect();
        found.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (mut start, mut end) in found {
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            while !text.is_char_boundary(end) {
                end += 1;
            }
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

/// `text` with JSON escapes (`\/`, `\\`, `\"`, `\u00XX`) and percent-escapes (`%2F`,
/// `%2f`) decoded, left to right as a JSON or URL decoder reads them, and for each
/// decoded byte the offset in `text` it starts at (plus `text.len()` at the end, so
/// `starts[end]` is where a match ending at `end` ends in `text`).
fn normalize(text: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(text.len());
    let mut starts = Vec::with_capacity(text.len() + 1);
    let mut i = 0;
    while i < text.len() {
        let (byte, width) = decode_one(&text[i..]);
        out.push(byte);
        starts.push(i);
        i += width;
    }
    starts.push(text.len());
    (out, starts)
}

/// The first byte `rest` stands for, and how many bytes of `rest` it takes.
fn decode_one(rest: &[u8]) -> (u8, usize) {
    match rest {
        [b'\\', c @ (b'/' | b'\\' | b'"'), ..] => (*c, 2),
        [b'\\', b'u', a, b, c, d, ..] => match (hex(*a), hex(*b), hex(*c), hex(*d)) {
            // Secrets are ASCII (they travel in headers), so only ASCII escapes matter.
            (Some(0), Some(0), Some(hi), Some(lo)) if hi < 8 => ((hi << 4) | lo, 6),
            _ => (b'\\', 1),
        },
        [b'%', a, b, ..] => match (hex(*a), hex(*b)) {
            (Some(hi), Some(lo)) => ((hi << 4) | lo, 3),
            _ => (b'%', 1),
        },
        [first, ..] => (*first, 1),
        [] => (0, 1),
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// How `secret` can look in base64 text: encoded alone (padded or not, standard or
/// URL-safe alphabet), and the characters that encode only its bytes when it sits one or
/// two bytes into a longer encoded value (`Basic base64(user:password)` holds the
/// password at an offset). The one or two characters at either end that mix in
/// neighbouring bytes are left out of those.
fn base64_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    for (padded, unpadded) in [(STANDARD, STANDARD_NO_PAD), (URL_SAFE, URL_SAFE_NO_PAD)] {
        for offset in 0..3usize {
            let mut input = vec![0u8; offset];
            input.extend_from_slice(secret);
            // Characters holding bits of the leading filler bytes.
            let skip = (offset * 8).div_ceil(6);
            // Characters made only of the secret's bits (the last one of an unaligned
            // end also holds bits of whatever follows).
            let whole = (input.len() * 8) / 6;
            let encoded = unpadded.encode(&input).into_bytes();
            forms.push(encoded[skip..whole].to_vec());
            // The secret at the end of the encoded value: its last character, with or
            // without padding.
            forms.push(encoded[skip..].to_vec());
            forms.push(padded.encode(&input).into_bytes()[skip..].to_vec());
        }
    }
    forms
}

/// What to mask for one header value: the value, the credential alone when the value is
/// `<scheme> <credential>` (`Bearer abc`), and for `Basic <base64>` the decoded
/// `user:password` and the password.
pub fn header_secrets(value: &str) -> Vec<String> {
    let value = value.trim();
    let mut secrets = vec![value.to_owned()];
    if let Some((scheme, credential)) = value.split_once(' ') {
        let credential = credential.trim();
        secrets.push(credential.to_owned());
        if scheme.eq_ignore_ascii_case("basic")
            && let Some(decoded) =
                STANDARD_PAD_INDIFFERENT.decode(credential).ok().and_then(|d| String::from_utf8(d).ok())
        {
            if let Some((_, password)) = decoded.split_once(':') {
                secrets.push(password.to_owned());
            }
            secrets.push(decoded);
        }
    }
    secrets
}

/// What to mask for a URL a component sends to: the `user:password` and the password of
/// its userinfo, and each value of its query string (`?api_key=...`; keys can be sent
/// there instead of in a header). Works on the text as written, escapes and all, since
/// [`SecretMask`] decodes escapes in secrets and texts alike.
pub fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let Some((_, rest)) = url.split_once("://") else { return secrets };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some((userinfo, _)) = rest[..authority_end].rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            secrets.push(password.to_owned());
        }
        secrets.push(userinfo.to_owned());
    }
    let without_fragment = rest.split('#').next().unwrap_or_default();
    if let Some((_, query)) = without_fragment.split_once('?') {
        for pair in query.split('&') {
            let value = pair.split_once('=').map_or(pair, |(_, v)| v);
            // A `+` in a query value is a space to a form decoder.
            secrets.push(value.to_owned());
            if value.contains('+') {
                secrets.push(value.replace('+', " "));
            }
        }
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-Live/Abc+Def_0123456789";

    fn mask(secrets: &[&str], text: &str) -> String {
        SecretMask::new(secrets).mask(text)
    }

    fn assert_masked(secrets: &[&str], text: &str, want: &str) {
        assert_eq!(mask(secrets, text), want, "masking {text:?}");
    }

    #[test]
    fn raw_and_case_insensitive() {
        assert_masked(&[KEY], &format!("invalid key {KEY}!"), "invalid key ***!");
        assert_masked(&[KEY], &format!("invalid key {}!", KEY.to_uppercase()), "invalid key ***!");
        assert_masked(&[KEY], &format!("invalid key {}!", KEY.to_lowercase()), "invalid key ***!");
    }

    #[test]
    fn json_escaped_forms() {
        let slash = KEY.replace('/', "\\/");
        assert_masked(&[KEY], &format!(r#"{{"key":"{slash}"}}"#), r#"{"key":"***"}"#);
        let unicode = KEY.replace('/', "\\u002f").replace('+', "\\u002B");
        assert_masked(&[KEY], &format!(r#"{{"key":"{unicode}"}}"#), r#"{"key":"***"}"#);
        // Every character escaped, as some encoders do for "unsafe" text.
        let all: String = KEY.chars().map(|c| format!("\\u{:04X}", c as u32)).collect();
        assert_masked(&[KEY], &format!("[{all}]"), "[***]");
        let quoted = "pa\"ss\\word";
        assert_masked(&[quoted], r#"got "pa\"ss\\word""#, r#"got "***""#);
    }

    #[test]
    fn percent_encoded_forms() {
        let upper = KEY.replace('/', "%2F").replace('+', "%2B");
        let lower = KEY.replace('/', "%2f").replace('+', "%2b");
        assert_masked(&[KEY], &format!("GET /x?key={upper}&a=b"), "GET /x?key=***&a=b");
        assert_masked(&[KEY], &format!("GET /x?key={lower}&a=b"), "GET /x?key=***&a=b");
        // A secret written percent-encoded in the config matches its decoded echo.
        assert_masked(&[upper.as_str()], &format!("key {KEY}"), "key ***");
        // A lone `%` is just a percent sign.
        assert_masked(&[KEY], "100% sure, %zz", "100% sure, %zz");
    }

    #[test]
    fn base64_forms_with_and_without_padding() {
        for secret in [KEY, "abcd", "abcde", "abcdef", "tok-\u{3b1}\u{3b2}"] {
            for encoded in [
                STANDARD.encode(secret),
                STANDARD_NO_PAD.encode(secret),
                URL_SAFE.encode(secret),
                URL_SAFE_NO_PAD.encode(secret),
            ] {
                let text = format!("echo: {encoded}.");
                assert_eq!(mask(&[secret], &text), "echo: ***.", "{secret} as {encoded}");
            }
        }
    }

    #[test]
    fn basic_credentials_from_config() {
        let basic = format!("Basic {}", STANDARD.encode("alice:correct-horse"));
        let secrets = header_secrets(&basic);
        assert!(secrets.contains(&"alice:correct-horse".to_owned()) && secrets.contains(&"correct-horse".to_owned()));
        let mask = SecretMask::new(&secrets);
        for text in [
            basic.clone(),
            STANDARD.encode("alice:correct-horse"),
            "alice:correct-horse".to_owned(),
            "password correct-horse".to_owned(),
            // The password alone, base64 inside a longer value (offset by "bob:").
            STANDARD.encode("bob:correct-horse"),
            URL_SAFE_NO_PAD.encode("mallory:correct-horse"),
        ] {
            let shown = mask.mask(&text);
            assert!(!shown.contains("correct-horse") && shown.contains(MASK), "{text} → {shown}");
            for encoded in [STANDARD.encode("correct-horse"), STANDARD.encode("alice:correct-horse")] {
                assert!(!shown.contains(encoded.trim_end_matches('=')), "{text} → {shown}");
            }
        }
    }

    #[test]
    fn base64_of_a_secret_inside_a_longer_value() {
        for prefix in ["", "x", "xy", "xyz"] {
            let encoded = STANDARD.encode(format!("{prefix}{KEY} and more"));
            let shown = mask(&[KEY], &encoded);
            assert!(shown.contains(MASK), "{prefix:?}: {encoded} → {shown}");
            // All but the (at most two) characters at each end that mix the secret's bits
            // with its neighbours' are masked.
            let kept = shown.len() - MASK.len();
            assert!(kept <= encoded.len() - KEY.len() * 8 / 6 + 4, "{prefix:?}: {encoded} → {shown}");
        }
    }

    #[test]
    fn overlapping_and_nested_secrets_are_masked_whole() {
        let secrets = header_secrets("Bearer rk_live_abcdef");
        let mask = SecretMask::new(&secrets);
        assert_eq!(mask.mask("invalid key rk_live_abcdef (Bearer rk_live_abcdef)"), "invalid key *** (***)");
        // Two secrets overlapping each other: one mask over both.
        assert_masked(&["abcdefgh", "efghijkl"], "x abcdefghijkl y", "x *** y");
    }

    #[test]
    fn short_values_and_empty_masks_leave_text_alone() {
        assert_masked(&["llm", ""], "dataset llm", "dataset llm");
        let empty = SecretMask::new(Vec::<String>::new());
        assert!(empty.is_empty());
        assert_eq!(empty.excerpt("  hello\nworld  ", 512), "hello world");
    }

    #[test]
    fn a_secret_across_the_excerpt_cut_is_masked_whole() {
        for shift in 0..KEY.len() + 2 {
            let filler = "x".repeat(512 - KEY.len() + shift);
            let text = format!("{filler}{KEY}{}", "y".repeat(100));
            let shown = SecretMask::new([KEY]).excerpt(&text, 512);
            for n in MIN_SECRET_LEN..=KEY.len() {
                assert!(!shown.contains(&KEY[..n]), "shift {shift}: {n} chars of the key shown: {shown}");
            }
            assert!(shown.ends_with('…'), "{shown}");
            assert!(shown.len() <= 512 + MASK.len() + '…'.len_utf8(), "{}", shown.len());
        }
        // The mask is never split by the cut.
        let text = format!("{}{KEY}", "x".repeat(511));
        let shown = SecretMask::new([KEY]).excerpt(&text, 512);
        assert!(shown.ends_with("x***"), "{shown}");
    }

    #[test]
    fn excerpts_flatten_control_characters() {
        let shown = SecretMask::new([KEY]).excerpt("line one\r\nforged: \x1b[31mred", 512);
        assert_eq!(shown, "line one  forged:  [31mred");
        let shown = SecretMask::new([KEY]).excerpt(&"é".repeat(400), 512);
        assert!(shown.ends_with('…') && shown.len() <= 512 + 3, "cut on a character boundary");
    }

    #[test]
    fn url_secrets_are_userinfo_and_query_values() {
        let s = url_secrets("https://bob:pa%2Fss@api.example.com:8443/v1/traces?api_key=s3cr3t+x&dataset=llm#frag");
        assert_eq!(s, ["pa%2Fss", "bob:pa%2Fss", "s3cr3t+x", "s3cr3t x", "llm"]);
        assert!(url_secrets("http://host/path").is_empty());
        assert!(url_secrets("not a url").is_empty());
        assert_masked(&s.iter().map(String::as_str).collect::<Vec<_>>(), "denied for pa/ss", "denied for ***");
    }

    #[test]
    fn debug_never_shows_the_secrets() {
        let shown = format!("{:?}", SecretMask::new([KEY]));
        assert!(!shown.contains("Live") && shown.starts_with("SecretMask"), "{shown}");
    }
}
