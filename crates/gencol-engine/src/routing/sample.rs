//! Consistent probability sampling by trace id (SPEC §11, OpenTelemetry's rule): R is the
//! last 7 bytes of the 16-byte trace id as a big-endian 56-bit number, and a trace is
//! kept iff `R >= round((1 - rate) · 2^56)`. Every gencol, and a restarted one, keeps the
//! same traces, and a trace kept at rate p is kept at every rate above p.

/// The smallest rate accepted (SPEC §11).
pub const MIN_RATE: f64 = 0.0001;

/// Keeps a `rate` share of traces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    threshold: u64,
}

impl Sampler {
    /// `Err` says the allowed range.
    pub fn new(rate: f64) -> Result<Sampler, String> {
        if !(MIN_RATE..=1.0).contains(&rate) {
            return Err(format!("sampling_rate must be between {MIN_RATE} and 1 (a share of traces), found {rate}"));
        }
        let threshold = ((1.0 - rate) * (1u64 << 56) as f64).round() as u64;
        Ok(Sampler { threshold })
    }

    /// Whether every trace is kept (rate 1).
    pub fn keeps_all(&self) -> bool {
        self.threshold == 0
    }

    /// Whether the trace is kept. An id that is not 16 bytes (receivers refuse those) is.
    pub fn keeps(&self, trace_id: &[u8]) -> bool {
        let Ok(id) = <&[u8; 16]>::try_from(trace_id) else { return true };
        let mut r = [0u8; 8];
        r[1..].copy_from_slice(&id[9..]);
        u64::from_be_bytes(r) >= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(last7: u64) -> [u8; 16] {
        let mut id = [0xAB; 16];
        id[9..].copy_from_slice(&last7.to_be_bytes()[1..]);
        id
    }

    #[test]
    fn the_rule_of_spec_11() {
        let half = Sampler::new(0.5).expect("valid");
        assert!(!half.keeps(&id((1 << 55) - 1)));
        assert!(half.keeps(&id(1 << 55)));
        assert!(Sampler::new(1.0).expect("valid").keeps(&id(0)));
        assert!(Sampler::new(1.0).expect("valid").keeps_all());
        let quarter = Sampler::new(0.25).expect("valid");
        assert!(quarter.keeps(&id((1 << 56) - 1)));
        assert!(quarter.keeps(&id(3 << 54)));
        assert!(!quarter.keeps(&id((3 << 54) - 1)));
        // Nested: kept at 0.25 means kept at 0.5.
        for r in [0u64, 1 << 40, 3 << 54, (1 << 56) - 1, 0x00AB_CDEF_0123_4567] {
            if quarter.keeps(&id(r)) {
                assert!(half.keeps(&id(r)));
            }
        }
        assert!(Sampler::new(0.0).is_err());
        assert!(Sampler::new(1.5).is_err());
        assert!(Sampler::new(0.0001).is_ok());
    }
}
