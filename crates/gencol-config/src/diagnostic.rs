//! Errors and warnings with a place: `FILE:LINE:COLUMN: message`.

use std::fmt;

use crate::node::Loc;

/// Whether a finding stops the config from being used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The config cannot be used until this is fixed.
    Error,
    /// The config works, but probably not as the user meant (e.g. an unused component).
    Warning,
}

/// One finding about a config. Displays as `FILE:LINE:COLUMN: message`
/// (warnings as `FILE:LINE:COLUMN: warning: message`); without a location, as
/// `FILE: message` or just `message`.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where the problem was written, when it has a place in a file.
    pub loc: Option<Loc>,
    /// File name when there is no line (e.g. the file could not be read).
    pub file: Option<String>,
    /// What is wrong and, where possible, how to fix it. Never holds a secret.
    pub message: String,
}

impl Diagnostic {
    /// An error at `loc`.
    pub fn error(loc: &Loc, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, loc: Some(loc.clone()), file: None, message: message.into() }
    }
    /// A warning at `loc`.
    pub fn warning(loc: &Loc, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, loc: Some(loc.clone()), file: None, message: message.into() }
    }
    /// An error about a whole file (it could not be read), without a line.
    pub fn file_error(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, loc: None, file: Some(file.into()), message: message.into() }
    }
    /// `true` for errors, `false` for warnings.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.loc, &self.file) {
            (Some(loc), _) => write!(f, "{loc}: ")?,
            (None, Some(file)) => write!(f, "{file}: ")?,
            (None, None) => {}
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every finding of one check, errors and warnings, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one finding.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    /// Whether any finding is an error (warnings alone do not fail a check).
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    /// Whether there are no findings at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The findings in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
    /// Adds every finding of `other` after the ones already here.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// One finding per line, as `gencol validate` prints them.
impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The candidate closest to `name` (Jaro-Winkler or Levenshtein), when it is close
/// enough to be a likely typo; used for "unknown type `otpl`, did you mean `otlp`?".
pub fn closest_name<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted = name.to_lowercase();
    // Optimal string alignment counts a swap of two neighbours (`otpl`/`otlp`) as one
    // edit, which is the most common typo. A third of the length (at least one edit)
    // keeps "ramp" from being suggested for "raindrop" while still catching real slips.
    let budget = (wanted.chars().count() / 3).max(1);
    let mut best: Option<(&'a str, usize, f64)> = None;
    for candidate in candidates {
        let lower = candidate.to_lowercase();
        let distance = strsim::osa_distance(&wanted, &lower);
        let similarity = strsim::jaro_winkler(&wanted, &lower);
        // A long shared prefix (`max_request_size` vs `max_request_body_size`) is a
        // typo even when the edit distance is over budget.
        let plausible = distance <= budget || similarity >= 0.92;
        if !plausible {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, d, s)) => distance < d || (distance == d && similarity > s),
        };
        if better {
            best = Some((candidate, distance, similarity));
        }
    }
    best.map(|(c, _, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> Loc {
        Loc { file: "a.yaml".into(), line: 3, column: 7 }
    }

    #[test]
    fn display_forms() {
        assert_eq!(Diagnostic::error(&loc(), "bad").to_string(), "a.yaml:3:7: bad");
        assert_eq!(Diagnostic::warning(&loc(), "unused").to_string(), "a.yaml:3:7: warning: unused");
        assert_eq!(Diagnostic::file_error("b.yaml", "cannot read").to_string(), "b.yaml: cannot read");
        let bare = Diagnostic { severity: Severity::Error, loc: None, file: None, message: "m".into() };
        assert_eq!(bare.to_string(), "m");
    }

    #[test]
    fn diagnostics_errors_and_warnings() {
        let mut all = Diagnostics::default();
        assert!(!all.has_errors());
        all.push(Diagnostic::warning(&loc(), "w"));
        assert!(!all.has_errors());
        all.push(Diagnostic::error(&loc(), "e"));
        assert!(all.has_errors());
        assert_eq!(all.to_string(), "a.yaml:3:7: warning: w\na.yaml:3:7: e");
    }

    #[test]
    fn closest_name_finds_typos() {
        let known = ["otlp", "debug", "ramp", "raindrop", "generations"];
        assert_eq!(closest_name("otpl", known), Some("otlp"));
        assert_eq!(closest_name("OTLP", known), Some("otlp"));
        assert_eq!(closest_name("debg", known), Some("debug"));
        assert_eq!(closest_name("generation", known), Some("generations"));
        assert_eq!(closest_name("raindrp", known), Some("raindrop"));
        assert_eq!(
            closest_name("max_request_size", ["endpoint", "auth", "max_request_body_size"]),
            Some("max_request_body_size")
        );
    }

    #[test]
    fn closest_name_stays_quiet_when_nothing_is_close() {
        let known = ["otlp", "debug", "ramp", "raindrop"];
        assert_eq!(closest_name("kafka", known), None);
        assert_eq!(closest_name("zipkin", known), None);
        assert_eq!(closest_name("x", known), None);
        assert_eq!(closest_name("otlp", std::iter::empty()), None);
    }
}
