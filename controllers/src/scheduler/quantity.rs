//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1e3`) parsed to
//! the integers the scheduler adds up: milli-units for cpu, units (bytes)
//! for memory and counts.
//!
//! The grammar is apimachinery's:
//!
//! ```text
//! quantity = sign? digits ("." digits?)? suffix?  |  sign? "." digits suffix?
//! suffix   = "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"      (powers of 1024)
//!          | "n" | "u" | "m" | "" | "k" | "M" | "G" | "T" | "P" | "E"
//!          | ("e" | "E") sign? digits                   (a power of ten)
//! ```
//!
//! Worked examples: `100m` cpu = 100 millicores; `1.5` cpu = 1500; `1e3` =
//! 1000 units; `128Mi` = 134217728 bytes. Values round *up* to the unit asked
//! for (`MilliValue`/`Value` in apimachinery do the same), and values too
//! large for an `i64` saturate at `i64::MAX`.

/// Why a string is not a quantity; the message is apimachinery's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

/// A parsed quantity: `mantissa * 10^exp10 * 2^exp2`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// Parses `s` and returns its value in milli-units, rounded up.
pub fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    parse(s).map(|p| p.scaled(3))
}

/// Parses `s` and returns its value in units, rounded up.
pub fn parse_units(s: &str) -> Result<i64, QuantityError> {
    parse(s).map(|p| p.scaled(0))
}

fn parse(s: &str) -> Result<Parsed, QuantityError> {
    let err = || QuantityError(s.to_string());
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if let Some(&c) = bytes.first() {
        if c == b'+' || c == b'-' {
            negative = c == b'-';
            i = 1;
        }
    }
    let mut mantissa: u128 = 0;
    let mut exp10: i32 = 0;
    let mut digits = 0usize;
    let mut seen_dot = false;
    // Digits beyond what a u128 holds only shift the exponent; the value is
    // saturated later anyway.
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() {
            digits += 1;
            if mantissa < u128::MAX / 100 {
                mantissa = mantissa * 10 + u128::from(c - b'0');
                if seen_dot {
                    exp10 -= 1;
                }
            } else if !seen_dot {
                exp10 += 1;
            }
        } else if c == b'.' && !seen_dot {
            seen_dot = true;
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return Err(err());
    }
    let suffix = &s[i..];
    let mut exp2 = 0u32;
    match suffix {
        "" => {}
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(err)?;
            let (sign, num) = match rest.as_bytes().first() {
                Some(b'-') => (-1, &rest[1..]),
                Some(b'+') => (1, &rest[1..]),
                _ => (1, rest),
            };
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            // Exponents past a few hundred only saturate or vanish.
            let e: i32 = num.parse::<i32>().unwrap_or(i32::MAX / 4).min(1000);
            exp10 += sign * e;
        }
    }
    Ok(Parsed {
        negative,
        mantissa,
        exp10,
        exp2,
    })
}

impl Parsed {
    /// The value times `10^scale`, rounded up (toward +inf), saturating.
    fn scaled(self, scale: i32) -> i64 {
        if self.mantissa == 0 {
            return 0;
        }
        let exp10 = self.exp10 + scale;
        let mut num = self.mantissa;
        let mut overflow = false;
        // num * 2^exp2
        if self.exp2 > 0 {
            if num.leading_zeros() <= self.exp2 {
                overflow = true;
            } else {
                num <<= self.exp2;
            }
        }
        let mut den: u128 = 1;
        if !overflow {
            if exp10 >= 0 {
                for _ in 0..exp10 {
                    match num.checked_mul(10) {
                        Some(n) => num = n,
                        None => {
                            overflow = true;
                            break;
                        }
                    }
                }
            } else {
                for _ in 0..(-exp10) {
                    match den.checked_mul(10) {
                        Some(d) => den = d,
                        None => {
                            // The value is below one unit of the scale.
                            return if self.negative { 0 } else { 1 };
                        }
                    }
                }
            }
        }
        if overflow {
            return if self.negative { i64::MIN } else { i64::MAX };
        }
        let (q, r) = (num / den, num % den);
        if self.negative {
            // -(q + r/den) rounded up is -q.
            i64::try_from(q).map(|v| -v).unwrap_or(i64::MIN)
        } else {
            let v = if r > 0 { q + 1 } else { q };
            i64::try_from(v).unwrap_or(i64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millis() {
        assert_eq!(parse_milli("100m"), Ok(100));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("0.1"), Ok(100));
        assert_eq!(parse_milli(".5"), Ok(500));
        assert_eq!(parse_milli("2."), Ok(2000));
        assert_eq!(parse_milli("250m"), Ok(250));
        assert_eq!(parse_milli("1e3"), Ok(1_000_000));
        assert_eq!(parse_milli("1E3"), Ok(1_000_000));
        assert_eq!(parse_milli("1e-3"), Ok(1));
        assert_eq!(parse_milli("+2"), Ok(2000));
        assert_eq!(parse_milli("0"), Ok(0));
        assert_eq!(parse_milli("0m"), Ok(0));
        // Below a millicore rounds up, as MilliValue does.
        assert_eq!(parse_milli("1u"), Ok(1));
        assert_eq!(parse_milli("1500u"), Ok(2));
        assert_eq!(parse_milli("100n"), Ok(1));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(parse_units("128Mi"), Ok(128 << 20));
        assert_eq!(parse_units("1Gi"), Ok(1 << 30));
        assert_eq!(parse_units("1Ki"), Ok(1024));
        assert_eq!(parse_units("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_units("1Ei"), Ok(1 << 60));
        assert_eq!(parse_units("1k"), Ok(1000));
        assert_eq!(parse_units("1M"), Ok(1_000_000));
        assert_eq!(parse_units("2G"), Ok(2_000_000_000));
        assert_eq!(parse_units("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_units("1P"), Ok(1_000_000_000_000_000));
        assert_eq!(parse_units("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_units("1e3"), Ok(1000));
        assert_eq!(parse_units("1e+3"), Ok(1000));
        assert_eq!(parse_units("129e6"), Ok(129_000_000));
        assert_eq!(parse_units("110"), Ok(110));
        // Fractions of a byte round up.
        assert_eq!(parse_units("100m"), Ok(1));
        assert_eq!(parse_units("1.0001"), Ok(2));
    }

    #[test]
    fn negatives_round_toward_positive_infinity() {
        assert_eq!(parse_milli("-1"), Ok(-1000));
        assert_eq!(parse_units("-1.5"), Ok(-1));
        assert_eq!(parse_units("-100m"), Ok(0));
    }

    #[test]
    fn huge_values_saturate() {
        assert_eq!(parse_units("1e100"), Ok(i64::MAX));
        assert_eq!(parse_milli("10E"), Ok(i64::MAX));
        assert_eq!(parse_units("16Ei"), Ok(i64::MAX));
        assert_eq!(
            parse_units("99999999999999999999999999999999999999999"),
            Ok(i64::MAX)
        );
        assert_eq!(parse_units("-1e100"), Ok(i64::MIN));
        assert_eq!(parse_units("1e-100"), Ok(1));
        assert_eq!(parse_units("1e99999999999"), Ok(i64::MAX));
    }

    #[test]
    fn bad_quantities_are_errors() {
        for bad in [
            "", "m", "Mi", "abc", "1.2.3", "1x", "1mi", "1MiB", "1 Gi", " 1", "1e", "1e+", "1e3.5",
            "--1", "+", ".", "1KI", "0x10", "1Gi1",
        ] {
            let e = parse_units(bad).expect_err(bad);
            assert_eq!(e.0, bad);
            assert!(e.to_string().starts_with("quantities must match"), "{e}");
        }
    }
}
