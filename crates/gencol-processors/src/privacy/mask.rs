//! Pattern masking: the core of the `privacy` processor (SPEC §5, §10 `privacy`).
//!
//! A [`Masker`] is compiled once, when the pipeline is built, because [`Masker::mask`] runs
//! on every content and metadata string of every generation. The hot path is shaped around
//! the common case, a string with nothing to hide: one [`RegexSet`] scan decides that, and
//! the string comes back as [`Cow::Borrowed`] without any allocation.
//!
//! Rules run in a fixed order (credit_card, api_key, email, ip, phone, then the custom rules
//! in the order given). Each rule only ever sees the text that earlier rules left unmasked,
//! split into segments around what they took, so an earlier rule's marker is never matched
//! again, and a marker already present in the input (`[REDACTED:email]` from an upstream
//! collector) is kept as it is. A segment edge counts as a text edge, also for `^`, `$` and
//! `\b` in custom rules.
//!
//! The regex crate has no look-around, so the built-in rules find candidates with a regex
//! and then check the characters around them (and Luhn, octet ranges, IPv6 syntax) in code.

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A built-in pattern a user can name in `patterns:`.
///
/// Built-ins exist because these are the leaks that matter in LLM traffic and they are hard
/// to get right with one regex (Luhn, octet ranges, phone shapes versus dates and versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinPattern {
    /// E-mail addresses (Unicode local part and labels, letter-only top-level domain).
    /// Retina image names such as `icon@2x.png` are left alone.
    Email,
    /// `+`, a country code and 8–15 digits in any grouping, or the North American 3-3-4 shape
    /// with separators (`(415) 555-0100`, `415.555.0100`). Other national formats
    /// (`020 7946 0958`) are not recognised: without the `+` they are indistinguishable from
    /// ordinary groups of numbers.
    Phone,
    /// 13–19 digits that pass Luhn and start with 2–6 (the card networks), written as one
    /// group or as 4 digits then groups of 3–6 with one kind of separator (space or dash).
    CreditCard,
    /// `Bearer <token>` (only the token is masked: `Bearer [REDACTED:api_key]`, so the reader
    /// still sees that a credential was there) and the well-known key shapes: `sk-` (OpenAI,
    /// Anthropic, OpenRouter), `xaat-`/`xapt-` (Axiom), GitHub, AWS `AKIA`/`ASIA`, Slack
    /// `xox?-`, Google `AIza`, Stripe `sk_live_`/`rk_live_`, and JWTs.
    ApiKey,
    /// IPv4 (each octet ≤ 255, not inside a longer dotted number) and IPv6 in every form the
    /// standard library parses. Four-part version numbers (`1.2.3.4`) and Python slices such
    /// as `[1::2]` are masked too: they cannot be told apart from addresses.
    Ip,
}

impl BuiltinPattern {
    /// Every name `patterns:` accepts, for config validation and "did you mean" hints.
    pub const ALL: [&'static str; 5] = ["email", "phone", "credit_card", "api_key", "ip"];

    /// Parses a `patterns:` entry; `None` lets the config layer report an unknown name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "email" => Some(Self::Email),
            "phone" => Some(Self::Phone),
            "credit_card" => Some(Self::CreditCard),
            "api_key" => Some(Self::ApiKey),
            "ip" => Some(Self::Ip),
            _ => None,
        }
    }

    /// The config name, which is also the `<name>` written in `[REDACTED:<name>]`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::CreditCard => "credit_card",
            Self::ApiKey => "api_key",
            Self::Ip => "ip",
        }
    }
}

impl fmt::Display for BuiltinPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a [`Masker`] could not be built; raised at config time so a bad rule never reaches
/// the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskError {
    /// The custom rule's name cannot be written inside `[REDACTED:<name>]` (it must be 1–64
    /// characters of `A-Z a-z 0-9 _ . -`, so markers stay recognisable and are never re-masked).
    InvalidName {
        /// The rejected name.
        rule: String,
    },
    /// The custom rule's regex does not compile.
    InvalidRegex {
        /// The rule's `name`.
        rule: String,
        /// The rule's `regex`, as written.
        regex: String,
        /// The regex crate's reason, on one line.
        error: String,
    },
    /// Every rule compiles on its own, but together they exceed the regex size limit.
    TooLarge {
        /// The regex crate's reason.
        error: String,
    },
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { rule } => {
                write!(f, "custom rule name {rule:?} is invalid: use 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'")
            }
            Self::InvalidRegex { rule, regex, error } => {
                write!(f, "custom rule {rule:?} has an invalid regex {regex:?}: {error}")
            }
            Self::TooLarge { error } => write!(f, "privacy rules are too large together: {error}"),
        }
    }
}

impl std::error::Error for MaskError {}

/// Compiled masking rules: built once at config time, used on the hot path.
#[derive(Debug, Clone)]
pub struct Masker {
    /// Pattern 0 is [`MARKER`], pattern `i + 1` is `matchers[i]`; `None` when there are no
    /// rules, so an empty masker costs nothing.
    prefilter: Option<RegexSet>,
    /// Only built-in rules: [`may_match_builtin`] can rule a string out before the set scan.
    builtins_only: bool,
    /// Finds markers that were already in the input, so they are kept, never re-masked.
    marker: Regex,
    matchers: Vec<Matcher>,
    /// `[REDACTED:<name>]`, written once here instead of formatted per match.
    labels: Vec<String>,
}

/// Markers already present in the input (the name charset is what [`Masker::new`] allows).
const MARKER: &str = r"\[REDACTED:[A-Za-z0-9_.\-]{1,64}\]";

// Candidate regexes. They are deliberately loose where code can check better (Luhn, octet
// ranges, IPv6 syntax, surrounding characters) and contain no anchors or `\b`, so a match in
// a segment is also a match in the whole text and the prefilter never hides one.

/// 13+ digits, optionally split by single spaces or dashes; [`card_windows`] picks the card.
const CARD: &str = r"[0-9](?:[ \-]?[0-9]){12,}";

/// Bearer tokens (the whole `Bearer xyz` is found; only the token is masked) and the
/// well-known key prefixes, each with enough length that ordinary words never qualify.
const API_KEY: &str = concat!(
    r"(?i:bearer)[ \t]+[A-Za-z0-9\-._~+/]+=*",
    r"|sk-[A-Za-z0-9_\-]{20,}", // OpenAI (sk-proj-), Anthropic (sk-ant-), OpenRouter (sk-or-v1-)
    r"|xa[ap]t-[A-Za-z0-9\-]{20,}", // Axiom API and personal tokens
    r"|gh[pousr]_[A-Za-z0-9]{30,}", // GitHub
    r"|github_pat_[A-Za-z0-9_]{30,}", // GitHub fine-grained
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}", // AWS access key ids
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}", // Slack
    r"|AIza[0-9A-Za-z_\-]{35}", // Google
    r"|[rs]k_(?:live|test)_[0-9A-Za-z]{16,}", // Stripe secret and restricted keys
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*", // JWTs
);

/// Unicode letters are allowed in the local part and the domain labels so `jörg@firma.de`
/// is masked whole instead of leaving `jö` behind.
const EMAIL: &str = r"[\w.%+\-]+@(?:[\w\-]+\.)+[A-Za-z]{2,63}";

/// Full form, full form ending in IPv4, and every `::` form; [`Ipv6Addr`] has the last word.
/// Requiring `::` or eight groups is what keeps `10:00:00` and MAC addresses out.
const IPV6: &str = concat!(
    r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
    r"|(?:[0-9A-Fa-f]{1,4}:){6}[0-9]{1,3}(?:\.[0-9]{1,3}){3}",
    r"|(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::",
    r"(?:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?",
);

const IPV4: &str = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}";

/// `+` and a country code, then digit groups; [`phone_intl`] wants 8–15 digits (E.164).
const PHONE_INTL: &str = r"\+[1-9][0-9]{0,2}(?:[ .\-]?\(?[0-9]{1,5}\)?){1,6}";

/// North American 3-3-4 with separators (an optional leading `1`); area code and exchange
/// start with 2–9 as in the numbering plan, which keeps `100 200 3000`-style numbers out.
const PHONE_NANP: &str = r"(?:1[ .\-])?(?:\([2-9][0-9]{2}\)[ .\-]?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}";

impl Masker {
    /// Compiles the chosen built-ins and custom `(name, regex)` rules.
    ///
    /// Built-ins always run in the fixed order credit_card, api_key, email, ip, phone
    /// (whatever order `builtins` lists them in, duplicates ignored) so card digits are gone
    /// before the phone rule looks; custom rules follow in the order given.
    pub fn new(builtins: &[BuiltinPattern], custom: &[(String, String)]) -> Result<Masker, MaskError> {
        let mut labels = Vec::new();
        let mut matchers = Vec::new();
        let mut patterns = vec![MARKER.to_owned()];

        let order = [
            (BuiltinPattern::CreditCard, &[(CARD, Check::CreditCard)][..]),
            (BuiltinPattern::ApiKey, &[(API_KEY, Check::ApiKey)][..]),
            (BuiltinPattern::Email, &[(EMAIL, Check::Email)][..]),
            // IPv6 first: `::ffff:10.0.0.1` is one address, not an IPv4 with a prefix.
            (BuiltinPattern::Ip, &[(IPV6, Check::Ipv6), (IPV4, Check::Ipv4)][..]),
            (BuiltinPattern::Phone, &[(PHONE_INTL, Check::PhoneIntl), (PHONE_NANP, Check::PhoneNanp)][..]),
        ];
        for (pattern, parts) in order {
            if !builtins.contains(&pattern) {
                continue;
            }
            let label = labels.len();
            labels.push(format!("[REDACTED:{}]", pattern.name()));
            for &(source, check) in parts {
                // Constant patterns, covered by the tests: failing here is a bug in this file.
                let regex = Regex::new(source).expect("built-in pattern compiles");
                patterns.push(source.to_owned());
                matchers.push(Matcher { label, regex, check, edge_sensitive: false });
            }
        }

        for (name, source) in custom {
            if !valid_name(name) {
                return Err(MaskError::InvalidName { rule: name.clone() });
            }
            let regex = RegexBuilder::new(source).build().map_err(|e| MaskError::InvalidRegex {
                rule: name.clone(),
                regex: source.clone(),
                error: one_line(&e),
            })?;
            let label = labels.len();
            labels.push(format!("[REDACTED:{name}]"));
            patterns.push(source.clone());
            matchers.push(Matcher { label, regex, check: Check::Plain, edge_sensitive: edge_sensitive(source) });
        }

        let prefilter = if matchers.is_empty() {
            None
        } else {
            let set =
                RegexSetBuilder::new(&patterns).build().map_err(|e| MaskError::TooLarge { error: one_line(&e) })?;
            Some(set)
        };
        let marker = Regex::new(MARKER).expect("marker pattern compiles");
        Ok(Masker { prefilter, builtins_only: custom.is_empty(), marker, matchers, labels })
    }

    /// True when no rule is configured, so the processor can skip walking the records.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// Replaces every match with `[REDACTED:<name>]`.
    ///
    /// Returns [`Cow::Borrowed`] when nothing matched, which costs one scan and no
    /// allocation, because most strings carry nothing to hide.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(prefilter) = &self.prefilter else {
            return Cow::Borrowed(text);
        };
        // Cheap necessary conditions first (a few fast byte scans), then a yes/no scan of
        // the set, which may stop early and skips the overlapping-match bookkeeping: "no"
        // is the answer for nearly every string.
        if self.builtins_only && !may_match_builtin(text.as_bytes()) {
            return Cow::Borrowed(text);
        }
        if !prefilter.is_match(text) {
            return Cow::Borrowed(text);
        }
        let hits = prefilter.matches(text);

        // Sorted, disjoint regions already decided: `Some(label)` to replace, `None` for a
        // marker that was in the input and stays as it is.
        let mut taken: Vec<(Range<usize>, Option<usize>)> = Vec::new();
        if hits.matched(0) {
            taken.extend(self.marker.find_iter(text).map(|m| (m.range(), None)));
        }
        let mut found = Vec::new();
        for (i, matcher) in self.matchers.iter().enumerate() {
            // A rule the prefilter did not see in the whole text cannot match in a segment of
            // it, unless it looks at edges, which segmenting creates.
            let may_match = hits.matched(i + 1) || (matcher.edge_sensitive && !taken.is_empty());
            if !may_match {
                continue;
            }
            let mut start = 0;
            for (region, _) in &taken {
                if region.start > start {
                    matcher.find(&text[start..region.start], start, &mut found);
                }
                start = region.end;
            }
            if start < text.len() {
                matcher.find(&text[start..], start, &mut found);
            }
            if !found.is_empty() {
                taken.extend(found.drain(..).map(|r| (r, Some(matcher.label))));
                taken.sort_unstable_by_key(|(r, _)| r.start);
            }
        }
        if taken.iter().all(|(_, label)| label.is_none()) {
            return Cow::Borrowed(text);
        }

        let mut out = String::with_capacity(text.len() + 16 * taken.len());
        let mut pos = 0;
        for (region, label) in &taken {
            out.push_str(&text[pos..region.start]);
            match label {
                Some(label) => out.push_str(&self.labels[*label]),
                None => out.push_str(&text[region.clone()]),
            }
            pos = region.end;
        }
        out.push_str(&text[pos..]);
        Cow::Owned(out)
    }

    /// Masks every string inside a JSON value in place: object values and array items,
    /// recursively. Keys are left alone because they are schema (`role`, `content`), not
    /// data. Returns whether anything changed, so callers can skip re-serialising.
    pub fn mask_json(&self, value: &mut Value) -> bool {
        if self.is_empty() {
            return false;
        }
        match value {
            Value::String(s) => match self.mask(s) {
                Cow::Owned(masked) => {
                    *s = masked;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            Value::Array(items) => items.iter_mut().fold(false, |changed, item| self.mask_json(item) | changed),
            Value::Object(map) => map.values_mut().fold(false, |changed, item| self.mask_json(item) | changed),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
}

/// Literals one of which every [`API_KEY`] match, and every [`MARKER`], contains; the
/// case-insensitive `bearer` is found as any casing of `earer`.
fn literal_finder() -> Option<&'static aho_corasick::packed::Searcher> {
    static FINDER: std::sync::LazyLock<Option<aho_corasick::packed::Searcher>> = std::sync::LazyLock::new(|| {
        let mut b = aho_corasick::packed::Config::new().builder();
        for literal in [
            "sk-",
            "xaat-",
            "xapt-",
            "ghp_",
            "gho_",
            "ghu_",
            "ghs_",
            "ghr_",
            "github_pat_",
            "AKIA",
            "ASIA",
            "xox",
            "AIza",
            "k_live_",
            "k_test_",
            "eyJ",
            "[REDACTED:",
        ] {
            b.add(literal);
        }
        for casing in 0..32u8 {
            let earer: Vec<u8> = b"earer"
                .iter()
                .enumerate()
                .map(|(i, c)| if casing >> i & 1 == 1 { c.to_ascii_uppercase() } else { *c })
                .collect();
            b.add(earer);
        }
        // `None` where the SIMD searcher is unavailable; the quick check is skipped then.
        b.build()
    });
    FINDER.as_ref()
}

/// `false` only when no built-in pattern (nor a marker) can match anywhere in `text`.
///
/// The built-in regexes start with character classes that match almost anywhere (digits,
/// hex letters), which makes the set scan cost a few nanoseconds a byte; what they need is
/// rare and found with byte searches that skip most of the text:
/// - email: an `@`; international phone: `+` and a digit 1–9;
/// - IPv6: `::`, or two colons around a group of 1–4 hex digits with hex digits outside
///   (every form of [`IPV6`] has seven or six colons, or `::`);
/// - API keys and markers: one of the literals of [`literal_finder`];
/// - IPv4: a digit, then `.d.d.d` with 1–3 digits each;
/// - card: 13 digits within 25 bytes (13 digits and at most 12 single separators);
/// - North American phone: 10 digits within 16 bytes (`1-(234) 567-8901`).
fn may_match_builtin(text: &[u8]) -> bool {
    let Some(literals) = literal_finder() else { return true };
    let at = |i: usize| text.get(i).copied().unwrap_or(0);
    if memchr::memchr(b'@', text).is_some() {
        return true;
    }
    if memchr::memchr_iter(b'+', text).any(|i| matches!(at(i + 1), b'1'..=b'9')) {
        return true;
    }
    // `::`, or hex digit, `:`, 1–4 hex digits, `:`, hex digit (so a time like 10:30 is not one).
    let ipv6_like = |i: usize| {
        if at(i + 1) == b':' {
            return true;
        }
        if !i.checked_sub(1).is_some_and(|j| text[j].is_ascii_hexdigit()) {
            return false;
        }
        let group = (1..=4).take_while(|k| at(i + k).is_ascii_hexdigit()).count();
        group > 0 && at(i + group + 1) == b':' && at(i + group + 2).is_ascii_hexdigit()
    };
    if memchr::memchr_iter(b':', text).any(ipv6_like) {
        return true;
    }
    if literals.find(text).is_some() {
        return true;
    }
    digits_may_match(text)
}

/// The digit rules of [`may_match_builtin`]. A card needs 13 digits and a North American
/// phone 10, within 25 bytes; a dotted quad 4 digits and 3 dots within 15. Either lies in
/// two neighbouring 32-byte blocks, so digits and dots are counted block by block (a loop
/// the compiler vectorises), and only pairs of blocks with enough are looked at closely.
fn digits_may_match(text: &[u8]) -> bool {
    const BLOCK: usize = 32;
    let (mut previous_digits, mut previous_dots) = (0u8, 0u8);
    for (k, block) in text.chunks(BLOCK).enumerate() {
        let (mut digits, mut dots) = (0u8, 0u8);
        for &c in block {
            digits += u8::from(c.is_ascii_digit());
            dots += u8::from(c == b'.');
        }
        let (d, p) = (previous_digits + digits, previous_dots + dots);
        if d >= 10 || (d >= 4 && p >= 3) {
            let start = k.saturating_sub(1) * BLOCK;
            let end = ((k + 1) * BLOCK).min(text.len());
            if digits_match_in(&text[start..end]) {
                return true;
            }
        }
        (previous_digits, previous_dots) = (digits, dots);
    }
    false
}

/// The exact digit rules over a short slice: a dotted quad, 13 digits within 25 bytes,
/// 10 within 16.
fn digits_match_in(text: &[u8]) -> bool {
    // Positions of the latest digits, newest last, enough for the densest rule (13).
    let mut recent = [0usize; 13];
    let mut seen = 0usize;
    for (i, c) in text.iter().enumerate() {
        if !c.is_ascii_digit() {
            continue;
        }
        if text.get(i + 1) == Some(&b'.') && dotted_quad_tail(&text[i + 1..], 3) {
            return true;
        }
        recent.copy_within(1.., 0);
        recent[12] = i;
        seen += 1;
        if (seen >= 13 && i - recent[0] < 25) || (seen >= 10 && i - recent[3] < 16) {
            return true;
        }
    }
    false
}

/// Whether `tail` starts with `groups` times `.` and 1–3 digits: with 3, the part of an
/// [`IPV4`] match after its first group (so a decimal like `13.50` is not one).
fn dotted_quad_tail(tail: &[u8], groups: usize) -> bool {
    if groups == 0 {
        return true;
    }
    let Some(after_dot) = tail.strip_prefix(b".") else { return false };
    let digits = after_dot.iter().take(3).take_while(|c| c.is_ascii_digit()).count();
    (1..=digits).any(|n| dotted_quad_tail(&after_dot[n..], groups - 1))
}

/// SHA-256 of salt + user id, lower-case hex (what `hash_user_id: true` writes into
/// `user.id`): the same user keeps one stable pseudonym per salt, so per-user analytics
/// still work at the destination without it learning who the user is.
pub fn hash_user_id(salt: &str, user_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(user_id.as_bytes());
    hex::encode(hasher.finalize())
}

#[derive(Debug, Clone)]
struct Matcher {
    label: usize,
    regex: Regex,
    check: Check,
    /// The custom regex has `^`, `$` or a `\b`-like assertion, so it can match at a segment
    /// edge although the prefilter saw no match in the whole text.
    edge_sensitive: bool,
}

/// What code verifies about a candidate that a look-around-free regex cannot.
#[derive(Debug, Clone, Copy)]
enum Check {
    Plain,
    CreditCard,
    ApiKey,
    Email,
    Ipv6,
    Ipv4,
    PhoneIntl,
    PhoneNanp,
}

impl Matcher {
    /// Pushes the ranges to mask in `segment` (offset by `base`, the segment's position in
    /// the whole text) onto `out`.
    fn find(&self, segment: &str, base: usize, out: &mut Vec<Range<usize>>) {
        for m in self.regex.find_iter(segment) {
            let r = m.range();
            let accepted = match self.check {
                // An empty match would put a marker between every two characters.
                Check::Plain => (!r.is_empty()).then_some(r),
                Check::CreditCard => {
                    card_windows(segment, r, base, out);
                    None
                }
                Check::ApiKey => api_key(segment, r),
                Check::Email => email(segment, r),
                Check::Ipv6 => ipv6(segment, r),
                Check::Ipv4 => ipv4(segment, r),
                Check::PhoneIntl => phone_intl(segment, r),
                Check::PhoneNanp => phone_nanp(segment, r),
            };
            if let Some(r) = accepted {
                out.push(base + r.start..base + r.end);
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Conservative: a false "yes" only costs a scan of the segments.
fn edge_sensitive(source: &str) -> bool {
    source.contains(['^', '$'])
        || source
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b'\\' && matches!(w[1], b'b' | b'B' | b'A' | b'z' | b'<' | b'>'))
}

/// Config errors are reported as `FILE:LINE:COLUMN: message`; the regex crate's multi-line
/// caret diagram would break that, its `error:` line carries the reason.
fn one_line(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn before(hay: &str, i: usize) -> Option<char> {
    hay[..i].chars().next_back()
}

fn after(hay: &str, i: usize) -> Option<char> {
    hay[i..].chars().next()
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// `c` followed by a digit right before `i`, as in `3.` of `3.4111…` (part of a bigger number).
fn number_before(hay: &str, i: usize, seps: &[char]) -> bool {
    before(hay, i).is_some_and(|c| seps.contains(&c)) && is_digit(before(hay, i - 1))
}

/// A separator in `seps` and then a digit right at `i` (the number goes on).
fn number_after(hay: &str, i: usize, seps: &[char]) -> bool {
    after(hay, i).is_some_and(|c| seps.contains(&c)) && is_digit(after(hay, i + 1))
}

/// Luhn over the digits of `s`, ignoring separators.
fn luhn(s: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &b in s.iter().rev().filter(|b| b.is_ascii_digit()) {
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

/// A run of digit groups can hold a card among other numbers (`order 12 4111…`), so every
/// window of whole groups is tried, leftmost then longest. A window is a card when it has
/// 13–19 digits that pass Luhn, starts with 2–6 (the card networks' first digits; this keeps
/// out millisecond timestamps and most ids) and is either one unbroken group or the printed
/// shape: a first group of 4, then groups of 3–6, all with the same separator.
fn card_windows(hay: &str, cand: Range<usize>, base: usize, out: &mut Vec<Range<usize>>) {
    let bytes = hay.as_bytes();
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut seps: Vec<u8> = Vec::new();
    let mut i = cand.start;
    while i < cand.end {
        let start = i;
        while i < cand.end && bytes[i].is_ascii_digit() {
            i += 1;
        }
        groups.push(start..i);
        if i < cand.end {
            seps.push(bytes[i]);
            i += 1;
        }
    }

    let mut first = 0;
    while first < groups.len() {
        let mut best = None;
        if matches!(bytes[groups[first].start], b'2'..=b'6') {
            let mut digits = 0;
            for last in first..groups.len() {
                let len = groups[last].len();
                if last > first
                    && (groups[first].len() != 4 || !(3..=6).contains(&len) || seps[last - 1] != seps[first])
                {
                    break;
                }
                digits += len;
                if digits > 19 {
                    break;
                }
                let window = groups[first].start..groups[last].end;
                if digits >= 13
                    && !is_word(before(hay, window.start))
                    && !number_before(hay, window.start, &['.'])
                    && !is_word(after(hay, window.end))
                    && !number_after(hay, window.end, &['.'])
                    && luhn(&bytes[window.clone()])
                {
                    best = Some((last, window));
                }
            }
        }
        match best {
            Some((last, window)) => {
                out.push(base + window.start..base + window.end);
                first = last + 1;
            }
            None => first += 1,
        }
    }
}

/// For `Bearer`, only the token is masked (`Bearer [REDACTED:api_key]`) so the reader still
/// sees an auth header was there. A bearer token must be 8+ characters with a digit, or 20+
/// characters, so prose like "the Bearer token" or "Bearer authentication" stays. `sk-`
/// must contain a digit so long hyphenated slugs (`sk-learn-…`) stay.
fn api_key(hay: &str, r: Range<usize>) -> Option<Range<usize>> {
    if is_word(before(hay, r.start)) {
        return None;
    }
    let s = &hay[r.clone()];
    if s.len() >= 6 && s[..6].eq_ignore_ascii_case("bearer") {
        let token_start = r.start + 6 + (s[6..].len() - s[6..].trim_start().len());
        // A sentence's full stop is not part of the token.
        let token_end = r.start + s.trim_end_matches('.').len();
        let token = &hay[token_start..token_end];
        let has_digit = token.bytes().any(|b| b.is_ascii_digit());
        let ok = (token.len() >= 8 && has_digit) || token.len() >= 20;
        return ok.then_some(token_start..token_end);
    }
    if is_word(after(hay, r.end)) || after(hay, r.end) == Some('-') {
        return None;
    }
    if s.starts_with("sk-") && !s[3..].bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(r)
}

/// Rejects retina image names (`icon@2x.png`), the common non-address with an `@`.
fn email(hay: &str, r: Range<usize>) -> Option<Range<usize>> {
    let s = &hay[r.clone()];
    let domain = s.rsplit_once('@').map_or("", |(_, d)| d);
    let rest = domain.trim_start_matches(|c: char| c.is_ascii_digit());
    if rest.len() < domain.len() && rest.starts_with("x.") && !rest[2..].contains('.') {
        return None;
    }
    Some(r)
}

fn ipv6(hay: &str, r: Range<usize>) -> Option<Range<usize>> {
    let s = &hay[r.clone()];
    // `::` alone is Rust/C++ path syntax far more often than the unspecified address.
    let has_hex = s.bytes().any(|b| b.is_ascii_hexdigit());
    let prev = before(hay, r.start);
    let next = after(hay, r.end);
    // A `:` right after is fine as punctuation (`2001:db8::1: down`), not before more groups.
    let more_groups = next == Some(':') && after(hay, r.end + 1).is_some_and(|c| c.is_ascii_hexdigit());
    let clean = !is_word(prev) && prev != Some(':') && !is_word(next) && !more_groups;
    (has_hex && clean && s.parse::<Ipv6Addr>().is_ok()).then_some(r)
}

/// Each octet at most 255 and not part of a longer dotted number (`1.2.3.4.5`, `v1.2.3.4`)
/// or a `product/version` token (`Chrome/120.0.0.0` in user agents).
fn ipv4(hay: &str, r: Range<usize>) -> Option<Range<usize>> {
    let prev = before(hay, r.start);
    if is_word(prev)
        || prev == Some('.')
        || (prev == Some('/') && is_word(before(hay, r.start - 1)))
        || is_word(after(hay, r.end))
        || number_after(hay, r.end, &['.'])
    {
        return None;
    }
    let octets_ok = hay[r.clone()].split('.').all(|o| o.parse::<u16>().is_ok_and(|v| v <= 255));
    octets_ok.then_some(r)
}

fn phone_intl(hay: &str, r: Range<usize>) -> Option<Range<usize>> {
    let prev = before(hay, r.start);
    if is_word(prev) || prev == Some('+') || is_word(after(hay, r.end)) {
        return None;
    }
    let digits = hay[r.clone()].bytes().filter(u8::is_ascii_digit).count();
    (8..=15).contains(&digits).then_some(r)
}

/// Separators must agree (`415-555-0100`, `415.555.0100`; `(415) 555-0100` may mix), and the
/// number must stand alone, not be the tail of a date, version or longer number.
fn phone_nanp(hay: &str, r: Range<usize>) -> Option<Range<usize>> {
    let right_ok = !is_word(after(hay, r.end)) && !number_after(hay, r.end, &['.', '-']);
    let left_ok = |start: usize| {
        let prev = before(hay, start);
        !is_word(prev) && !matches!(prev, Some('.' | '-' | '+'))
    };
    let s = hay[r.clone()].as_bytes();
    // Without the optional `1` + separator, a match starts with `(` or a digit 2-9.
    let (start, body) = if s[0] == b'1' {
        // `21 415-555-0100`: the `1` belongs to the number before, the phone is still there.
        if left_ok(r.start) { (r.start, &s[2..]) } else { (r.start + 2, &s[2..]) }
    } else {
        (r.start, s)
    };
    let separators_agree = body[0] == b'(' || body[3] == body[7];
    (right_ok && left_ok(start) && separators_agree).then_some(start..r.end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::LazyLock;

    /// Compiled once: debug-build regex compilation would dominate the test time.
    fn all() -> &'static Masker {
        static ALL: LazyLock<Masker> = LazyLock::new(|| {
            let builtins = [
                BuiltinPattern::Email,
                BuiltinPattern::Phone,
                BuiltinPattern::CreditCard,
                BuiltinPattern::ApiKey,
                BuiltinPattern::Ip,
            ];
            Masker::new(&builtins, &[]).expect("built-ins compile")
        });
        &ALL
    }

    fn only(pattern: BuiltinPattern) -> Masker {
        Masker::new(&[pattern], &[]).expect("built-in compiles")
    }

    /// Asserts `input` masks to `expected` with every built-in on.
    #[track_caller]
    fn masks(input: &str, expected: &str) {
        assert_eq!(all().mask(input), expected, "input: {input:?}");
        assert!(may_match_builtin(input.as_bytes()), "the quick check missed {input:?}");
    }

    /// Asserts `input` comes back untouched and borrowed with every built-in on.
    #[track_caller]
    fn keeps(input: &str) {
        let m = all();
        let out = m.mask(input);
        assert!(matches!(out, Cow::Borrowed(_)), "input {input:?} was changed to {out:?}");
    }

    /// The quick check never rules out a string that a built-in rule would mask: random
    /// strings over an alphabet dense in what the rules look for.
    #[test]
    fn quick_check_never_hides_a_match() {
        let pieces = [
            "0", "1", "2", "5", "9", "12", "345", "6789", "4111", " ", "-", ".", ":", "::", "+", "+4", "@", "a.b",
            "x@y.io", "(", "212)", "Bearer ", "sk-", "AKIA", "fe80", "dead", "é", "\"", "ab", "ZZ", "_", "eyJ",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut masked = 0;
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let s: String = (0..len).map(|_| pieces[(next() % pieces.len() as u64) as usize]).collect();
            if matches!(all().mask(&s), Cow::Owned(_)) {
                masked += 1;
                assert!(may_match_builtin(s.as_bytes()), "the quick check missed {s:?}");
            }
        }
        assert!(masked > 2_000, "the generator should hit the rules often, hit {masked}");
        // And it does rule out ordinary text.
        assert!(!may_match_builtin(b"The invoice from 2026 totals 13.50 EUR; see line 4 of the report: paid."));
    }

    #[test]
    fn builtin_names_round_trip() {
        for name in BuiltinPattern::ALL {
            let p = BuiltinPattern::parse(name).expect("known name");
            assert_eq!(p.name(), name);
            assert_eq!(p.to_string(), name);
        }
        assert_eq!(BuiltinPattern::parse("e-mail"), None);
        let p: BuiltinPattern = serde_json::from_str("\"credit_card\"").expect("deserialises");
        assert_eq!(p, BuiltinPattern::CreditCard);
    }

    #[test]
    fn email_positive() {
        masks("write to jane.doe+x@mail.example.co.uk today", "write to [REDACTED:email] today");
        masks("<bob@example.com>.", "<[REDACTED:email]>.");
        masks("mailto:a_b-c@sub-domain.example.io", "mailto:[REDACTED:email]");
        masks("jörg@firma.de", "[REDACTED:email]");
    }

    #[test]
    fn email_negative() {
        keeps("npm i @types/node and pkg@1.2.3");
        keeps("see icon@2x.png");
        keeps("user at example dot com");
        keeps("@here: deploy @ 10:30");
    }

    #[test]
    fn phone_positive() {
        for (input, expected) in [
            ("call +1 415 555 0100 now", "call [REDACTED:phone] now"),
            ("call +44 20 7946 0958.", "call [REDACTED:phone]."),
            ("call (415) 555-0100", "call [REDACTED:phone]"),
            ("call 415-555-0100", "call [REDACTED:phone]"),
            ("call 415.555.0100", "call [REDACTED:phone]"),
            ("call 1-415-555-0100", "call [REDACTED:phone]"),
            ("call +14155550100", "call [REDACTED:phone]"),
            ("call +1 (415) 555-0100", "call [REDACTED:phone]"),
            ("room 21 415-555-0100", "room 21 [REDACTED:phone]"),
        ] {
            masks(input, expected);
        }
    }

    #[test]
    fn phone_negative() {
        for input in [
            "in 2026 it cost $1,299.99 or 1299 EUR",
            "dial 555-0100 or ext 4410",
            "at 2026-11-22T10:00:00 and 2026-11-22T10:00:00+05:30",
            "version 1.2.3 and 10.20.30",
            "epoch 1732269600 and 1732269600123",
            "values 100 200 3000 and 123-45-6789",
            "1+2 3 4 5 6 7 8 9",
        ] {
            keeps(input);
        }
        // The digits of a card that fails Luhn are not a phone number either.
        keeps("card 4111 1111 1111 1112");
        keeps("card 4111-1111-1111-1112");
        keeps("card 4111111111111112");
        // A valid card is masked as a card, never as a phone.
        masks("4111 1111 1111 1111", "[REDACTED:credit_card]");
    }

    #[test]
    fn luhn_check() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"4111-1111-1111-1111"));
        assert!(luhn(b"378282246310005"));
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"79927398710"));
    }

    #[test]
    fn credit_card_positive() {
        for input in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "3782 822463 10005",
            "5555555555554444",
            "6011111111111117",
        ] {
            masks(&format!("pay with {input}, thanks"), "pay with [REDACTED:credit_card], thanks");
        }
        masks("order 12 4111111111111111", "order 12 [REDACTED:credit_card]");
        masks("4111111111111111 5555555555554444", "[REDACTED:credit_card] [REDACTED:credit_card]");
    }

    #[test]
    fn credit_card_negative() {
        for input in [
            "4111111111111112",
            "4111 1111 1111 1112",
            "id 0000000000000000",
            "ts 1732269600000",
            "pi 0.4111111111111111",
            "abc4111111111111111",
            "4111 1111-1111 1111",
            "41 11 11 11 11 11 11 11",
        ] {
            assert_eq!(only(BuiltinPattern::CreditCard).mask(input), input, "input: {input:?}");
        }
    }

    #[test]
    fn api_key_positive() {
        let m = only(BuiltinPattern::ApiKey);
        for key in [
            "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
            "sk-proj-Ab3dEfGhIjKlMnOpQrStUvWxYz_0123456789-abc",
            "sk-ant-api03-AbCdEfGhIjKlMnOp1234567890",
            "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "xaat-01234567-89ab-cdef-0123-456789abcdef",
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "gho_0123456789abcdefghijABCDEFGHIJ012345",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
            "AIzaSyA1234567890abcdefghijklmnopqrstuv",
            "sk_live_0123456789abcdefABCDEF",
        ] {
            let text = format!("key={key} end");
            assert_eq!(m.mask(&text), "key=[REDACTED:api_key] end", "key: {key}");
        }
        assert_eq!(
            m.mask("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-123."),
            "Authorization: Bearer [REDACTED:api_key]."
        );
        assert_eq!(m.mask("authorization: bearer abc123def456"), "authorization: bearer [REDACTED:api_key]");
    }

    #[test]
    fn api_key_negative() {
        let m = only(BuiltinPattern::ApiKey);
        for input in [
            "send the Bearer token in the header",
            "Bearer authentication is described in RFC 6750",
            "pip install sk-learn-style-hyphenated-package-name",
            "task-management-system-overview-document-2",
            "AKIA is an AWS prefix, AKIASHORT too",
            "ghp_short and xoxb-1 and AIzaShort",
            "risk-0123456789abcdefghijklmnop",
        ] {
            assert_eq!(m.mask(input), input, "input: {input:?}");
        }
    }

    #[test]
    fn ip_positive() {
        for (input, expected) in [
            ("from 192.168.1.10 to 10.0.0.1:8080", "from [REDACTED:ip] to [REDACTED:ip]:8080"),
            ("net 255.255.255.0/24", "net [REDACTED:ip]/24"),
            ("host 2001:db8::1 up", "host [REDACTED:ip] up"),
            ("loopback ::1", "loopback [REDACTED:ip]"),
            ("link fe80::1ff:fe23:4567:890a%eth0", "link [REDACTED:ip]%eth0"),
            ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "full [REDACTED:ip]"),
            ("url http://[::1]:8080/", "url http://[[REDACTED:ip]]:8080/"),
            ("mapped ::ffff:192.168.1.1", "mapped [REDACTED:ip]"),
            ("addr 2001:db8::1: gone", "addr [REDACTED:ip]: gone"),
        ] {
            masks(input, expected);
        }
    }

    #[test]
    fn ip_negative() {
        for input in [
            "version 1.2.3 and 10.2",
            "build 1.2.3.4.5",
            "bad 256.1.1.1 and 1.2.3.999",
            "v1.2.3.4",
            "Mozilla/5.0 Chrome/120.0.0.0 Safari/537.36",
            "at 10:00:00 and 12:30:45.123",
            "use std::vec::Vec; Foo :: bar",
            "mac 00:1a:2b:3c:4d:5e",
        ] {
            assert_eq!(only(BuiltinPattern::Ip).mask(input), input, "input: {input:?}");
        }
    }

    #[test]
    fn custom_rule() {
        let m = Masker::new(&[], &[("ticket".into(), "TCK-[0-9]{6}".into())]).expect("compiles");
        assert!(!m.is_empty());
        assert_eq!(m.mask("see TCK-123456 and TCK-12"), "see [REDACTED:ticket] and TCK-12");
    }

    #[test]
    fn custom_rule_invalid_regex() {
        let err = Masker::new(&[], &[("ticket".into(), "TCK-[0-9".into())]).expect_err("bad regex is rejected");
        assert_eq!(
            err.to_string(),
            "custom rule \"ticket\" has an invalid regex \"TCK-[0-9\": unclosed character class"
        );
        assert!(matches!(err, MaskError::InvalidRegex { ref rule, .. } if rule == "ticket"));
    }

    #[test]
    fn custom_rule_invalid_name() {
        let err = Masker::new(&[], &[("a]b".into(), "x".into())]).expect_err("bad name");
        assert_eq!(err, MaskError::InvalidName { rule: "a]b".into() });
    }

    #[test]
    fn custom_rules_after_builtins_and_in_order() {
        let m = Masker::new(
            &[BuiltinPattern::Email],
            &[("word".into(), "[A-Za-z]+".into()), ("late".into(), "secret".into())],
        )
        .expect("compiles");
        // The email goes first; `word` then takes every word, `late` gets nothing left.
        assert_eq!(m.mask("secret a@b.io"), "[REDACTED:word] [REDACTED:email]");
    }

    #[test]
    fn markers_are_never_masked_again() {
        let m = Masker::new(
            &[BuiltinPattern::CreditCard, BuiltinPattern::Email, BuiltinPattern::Phone],
            &[("caps".into(), "[A-Z_]{3,}".into()), ("tail".into(), r"[a-z:\]]+$".into())],
        )
        .expect("compiles");
        let once = m.mask("jane@x.io paid 4111 1111 1111 1111, VIP");
        assert_eq!(once, "[REDACTED:email] paid [REDACTED:credit_card], [REDACTED:caps]");
        // A second pass (or an upstream collector's markers) changes nothing.
        assert!(matches!(m.mask(&once), Cow::Borrowed(_)));
        assert_eq!(m.mask("[REDACTED:email] and FOO"), "[REDACTED:email] and [REDACTED:caps]");
    }

    #[test]
    fn edge_sensitive_custom_rule_sees_segments() {
        let m = Masker::new(&[BuiltinPattern::Email], &[("lead".into(), "^ x".into())]).expect("compiles");
        // `^ x` is not in the whole text, but it starts the segment after the email.
        assert_eq!(m.mask("a@b.io x"), "[REDACTED:email][REDACTED:lead]");
    }

    #[test]
    fn overlaps_follow_the_fixed_order() {
        masks(
            "call +1 415 555 0100, card 4111-1111-1111-1111, mail ops@example.com from 10.1.2.3",
            "call [REDACTED:phone], card [REDACTED:credit_card], mail [REDACTED:email] from [REDACTED:ip]",
        );
        // An IP-looking domain part inside an address is the email's, not the ip rule's.
        masks("root@10.0.0.1.example.com", "[REDACTED:email]");
    }

    #[test]
    fn nothing_to_mask_is_borrowed() {
        keeps("Hello! How can I help you today? Temperature is 21.5 degrees.");
        keeps("");
        let empty = Masker::new(&[], &[]).expect("empty is fine");
        assert!(empty.is_empty());
        assert!(matches!(empty.mask("jane@x.io"), Cow::Borrowed(_)));
    }

    #[test]
    fn mask_json_nested() {
        let m = all();
        let mut v = json!({
            "jane@x.io": [1, true, null, {"deep": ["ok", {"mail": "to jane@x.io"}]}],
            "n": 4111111111111111u64,
            "plain": "nothing here"
        });
        assert!(m.mask_json(&mut v));
        assert_eq!(
            v,
            json!({
                "jane@x.io": [1, true, null, {"deep": ["ok", {"mail": "to [REDACTED:email]"}]}],
                "n": 4111111111111111u64,
                "plain": "nothing here"
            })
        );
        assert!(!m.mask_json(&mut v), "second pass changes nothing");
    }

    #[test]
    fn mask_json_message_content() {
        let m = all();
        let mut messages = json!([
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Email me at jane.doe@example.com please"},
            {"role": "user", "content": [{"type": "text", "text": "or bob@example.org"}]}
        ]);
        assert!(m.mask_json(&mut messages));
        assert_eq!(messages[1]["content"], "Email me at [REDACTED:email] please");
        assert_eq!(messages[2]["content"][0]["text"], "or [REDACTED:email]");
        assert_eq!(messages[0]["content"], "You are helpful.");
    }

    #[test]
    fn hash_user_id_known_vector() {
        // printf '%s' 'saltuser_1' | sha256sum
        assert_eq!(hash_user_id("salt", "user_1"), "324ef4a9f66f7ca3d545d1abdd1a18b5aefc6e0cd1f2fa7a9691714844a17190");
    }
}
