//! Durations (`250ms`, `5s`, `10m`) and sizes (`4096`, `512KiB`, `10MiB`) as written in YAML.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// A duration written as a string with a unit: `250ms`, `5s`, `10m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

/// A size: a number of bytes or a unit string (`512KiB`, `10MiB`, `1GB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// What every duration message ends with, so the user sees the accepted form.
const DURATION_HINT: &str = "write a number with a unit, e.g. 250ms, 5s, 10m or 1h30m";
/// What every size message ends with.
const SIZE_HINT: &str = "write a number of bytes (4096) or a number with a unit (512KiB, 10MiB, 1GB)";

impl Duration {
    /// Parses the YAML form (`250ms`, `5s`, `1h30m`); the error is a complete message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(format!("empty duration: {DURATION_HINT}"));
        }
        // A bare number is the most common mistake (seconds? milliseconds?); say so
        // plainly instead of humantime's wording.
        if trimmed.parse::<f64>().is_ok() {
            return Err(no_unit(trimmed));
        }
        humantime::parse_duration(trimmed).map(Duration).map_err(|e| {
            // humantime's own wording speaks of byte offsets; say what to change instead.
            let reason = match e {
                humantime::DurationError::UnknownUnit { unit, .. } if !unit.is_empty() => {
                    format!("unknown unit {unit:?}; ")
                }
                humantime::DurationError::NumberOverflow => "too large; ".to_owned(),
                _ => String::new(),
            };
            format!("invalid duration {trimmed:?}: {reason}{DURATION_HINT}")
        })
    }

    /// The standard library duration.
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }
}

fn no_unit(number: impl fmt::Display) -> String {
    format!("duration `{number}` has no unit: add one, e.g. `{number}s` or `{number}ms`")
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

/// Shows the duration the way it can be written back (`1h 30m`, `250ms`).
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit (250ms, 5s, 10m)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(no_unit(v)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(no_unit(v)))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(no_unit(v)))
            }
        }

        // `deserialize_any` so that a bare number reaches the visitor and gets the
        // "add a unit" message rather than a generic type error.
        d.deserialize_any(DurationVisitor)
    }
}

impl ByteSize {
    /// Parses the YAML string form (`4096`, `512KiB`, `10 MiB`, `1GB`); the error is a
    /// complete message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(format!("empty size: {SIZE_HINT}"));
        }
        if trimmed.starts_with('-') {
            return Err(format!("invalid size {trimmed:?}: a size cannot be negative"));
        }
        match trimmed.parse::<bytesize::ByteSize>() {
            // `bytesize` saturates on overflow; a size of u64::MAX is never meant.
            Ok(size) if size.as_u64() == u64::MAX => Err(format!("invalid size {trimmed:?}: too large")),
            Ok(size) => Ok(ByteSize(size.as_u64())),
            Err(_) => Err(format!("invalid size {trimmed:?}: {SIZE_HINT}")),
        }
    }

    /// The size in bytes.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// Shows the size in binary units (`10.0 MiB`).
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size with a unit (512KiB, 10MiB)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: a size cannot be negative")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!("invalid size {v}: a number of bytes must be a whole number; {SIZE_HINT}")))
            }
        }

        d.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    fn dur(json: serde_json::Value) -> Result<Duration, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    fn size(json: serde_json::Value) -> Result<ByteSize, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_with_units() {
        assert_eq!(dur("250ms".into()), Ok(Duration(Std::from_millis(250))));
        assert_eq!(dur("5s".into()), Ok(Duration(Std::from_secs(5))));
        assert_eq!(dur("10m".into()), Ok(Duration(Std::from_secs(600))));
        assert_eq!(dur("1h".into()), Ok(Duration(Std::from_secs(3600))));
        assert_eq!(dur("1h30m".into()), Ok(Duration(Std::from_secs(5400))));
        assert_eq!(dur("1h 30m".into()), Ok(Duration(Std::from_secs(5400))));
        assert_eq!(dur("0s".into()), Ok(Duration(Std::ZERO)));
    }

    #[test]
    fn durations_without_unit_say_add_a_unit() {
        let e = dur(5.into()).unwrap_err();
        assert!(e.contains("duration `5` has no unit: add one, e.g. `5s`"), "{e}");
        let e = dur("30".into()).unwrap_err();
        assert!(e.contains("`30` has no unit"), "{e}");
        let e = dur(1.5.into()).unwrap_err();
        assert!(e.contains("no unit"), "{e}");
    }

    #[test]
    fn bad_durations() {
        let e = dur("5 parsecs".into()).unwrap_err();
        assert_eq!(
            e,
            "invalid duration \"5 parsecs\": unknown unit \"parsecs\"; write a number with a unit, e.g. 250ms, 5s, 10m or 1h30m"
        );
        let e = dur("soon".into()).unwrap_err();
        assert_eq!(e, "invalid duration \"soon\": write a number with a unit, e.g. 250ms, 5s, 10m or 1h30m");
        assert!(e.contains("250ms"), "{e}");
        assert!(dur("".into()).unwrap_err().contains("empty duration"));
        assert!(dur("-5s".into()).is_err());
        assert!(dur("fast".into()).is_err());
        assert!(dur(true.into()).is_err());
    }

    #[test]
    fn sizes_good() {
        assert_eq!(size(4096.into()), Ok(ByteSize(4096)));
        assert_eq!(size("4096".into()), Ok(ByteSize(4096)));
        assert_eq!(size("512KiB".into()), Ok(ByteSize(512 * 1024)));
        assert_eq!(size("10MiB".into()), Ok(ByteSize(10 * 1024 * 1024)));
        assert_eq!(size("10 MiB".into()), Ok(ByteSize(10 * 1024 * 1024)));
        assert_eq!(size("1GB".into()), Ok(ByteSize(1_000_000_000)));
        assert_eq!(size("0".into()), Ok(ByteSize(0)));
    }

    #[test]
    fn sizes_bad() {
        let e = size("10 mebibytes".into()).unwrap_err();
        assert!(e.starts_with("invalid size \"10 mebibytes\": write a number of bytes"), "{e}");
        assert!(size((-1).into()).unwrap_err().contains("cannot be negative"));
        assert!(size("-1KiB".into()).unwrap_err().contains("cannot be negative"));
        assert!(size(1.5.into()).unwrap_err().contains("whole number"));
        assert!(size("".into()).unwrap_err().contains("empty size"));
        assert!(size("lots".into()).is_err());
        assert!(size("99999999999999EiB".into()).unwrap_err().contains("too large"));
        assert!(size(serde_json::json!([1])).is_err());
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(Duration(Std::from_secs(5400)).to_string(), "1h 30m");
        assert_eq!(Duration::parse(&Duration(Std::from_millis(250)).to_string()), Ok(Duration(Std::from_millis(250))));
        assert_eq!(ByteSize::parse(&ByteSize(10 * 1024 * 1024).to_string()), Ok(ByteSize(10 * 1024 * 1024)));
    }
}
