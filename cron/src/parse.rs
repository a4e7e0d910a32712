//! The grammar of a standard schedule, with robfig/cron v3's error
//! messages (kube-apiserver returns them verbatim):
//!
//! ```text
//! [TZ=<zone> | CRON_TZ=<zone>] ( <minute> <hour> <day-of-month> <month> <day-of-week>
//!                              | @yearly | @annually | @monthly | @weekly
//!                              | @daily | @midnight | @hourly | @every <go duration> )
//! field  = range ("," range)*
//! range  = ("*" | "?" | value ["-" value]) ["/" step]      a lone value with a step runs to the maximum
//! value  = number | jan…dec (months) | sun…sat (weekdays), any case
//! ```

use crate::{Fields, Kind, ParseError, Schedule};

/// A field's bounds and names.
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DAYS_OF_MONTH: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DAYS_OF_WEEK: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

fn err(message: String) -> ParseError {
    ParseError(message)
}

pub(crate) fn parse(spec: &str) -> Result<Schedule, ParseError> {
    if spec.is_empty() {
        return Err(err("empty spec string".into()));
    }
    let mut spec = spec;
    let mut zone = None;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let (head, rest) = spec.split_once(' ').unwrap_or((spec, ""));
        let name = head.split_once('=').map_or("", |(_, n)| n);
        let tz = crate::zone::time_zone(name)
            .map_err(|e| err(format!("provided bad location {name}: {e}")))?;
        zone = Some(tz);
        spec = rest.trim();
    }
    let kind = if spec.starts_with('@') {
        descriptor(spec)?
    } else {
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            )));
        }
        let (minute, _) = field(fields[0], &MINUTES)?;
        let (hour, _) = field(fields[1], &HOURS)?;
        let (dom, dom_star) = field(fields[2], &DAYS_OF_MONTH)?;
        let (month, _) = field(fields[3], &MONTHS)?;
        let (dow, dow_star) = field(fields[4], &DAYS_OF_WEEK)?;
        Kind::Fields(Fields {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        })
    };
    Ok(Schedule { kind, zone })
}

fn descriptor(spec: &str) -> Result<Kind, ParseError> {
    let standard = match spec {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            if let Some(d) = spec.strip_prefix("@every ") {
                let nanos = go_duration(d)
                    .map_err(|e| err(format!("failed to parse duration {spec}: {e}")))?;
                // robfig: whole seconds, at least one.
                return Ok(Kind::Every((nanos / 1_000_000_000).max(1) as i64));
            }
            return Err(err(format!("unrecognized descriptor: {spec}")));
        }
    };
    Ok(parse(standard)?.kind)
}

/// A comma-separated field: its bit set, and whether it holds a `*`.
fn field(expr: &str, b: &Bounds) -> Result<(u64, bool), ParseError> {
    let mut bits = 0;
    let mut star = false;
    for part in expr.split(',') {
        let (b, s) = range(part, b)?;
        bits |= b;
        star |= s;
    }
    Ok((bits, star))
}

fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), ParseError> {
    let slashes: Vec<&str> = expr.split('/').collect();
    let hyphens: Vec<&str> = slashes[0].split('-').collect();
    let (start, mut end, mut star) = if matches!(hyphens[0], "*" | "?") {
        (b.min, b.max, true)
    } else {
        let start = int_or_name(hyphens[0], b)?;
        match hyphens.len() {
            1 => (start, start, false),
            2 => (start, int_or_name(hyphens[1], b)?, false),
            _ => return Err(err(format!("too many hyphens: {expr}"))),
        }
    };
    let step = match slashes.len() {
        1 => 1,
        2 => {
            let step = number(slashes[1])?;
            if hyphens.len() == 1 {
                // `N/step` runs from N to the maximum.
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(err(format!("too many slashes: {expr}"))),
    };
    if start < b.min {
        return Err(err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        )));
    }
    if end > b.max {
        return Err(err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        )));
    }
    if start > end {
        return Err(err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(err(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    let bits = (start..=end)
        .step_by(step as usize)
        .fold(0u64, |acc, v| acc | 1 << v);
    Ok((bits, star))
}

fn int_or_name(expr: &str, b: &Bounds) -> Result<u32, ParseError> {
    let lower = expr.to_ascii_lowercase();
    match b.names.iter().find(|(n, _)| *n == lower) {
        Some((_, v)) => Ok(*v),
        None => number(expr),
    }
}

/// Go's `strconv.Atoi`, non-negative.
fn number(expr: &str) -> Result<u32, ParseError> {
    let fail = |why: &str| {
        err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: {why}"
        ))
    };
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(fail("invalid syntax"));
    }
    let n: i64 = expr.parse().map_err(|_| fail("value out of range"))?;
    if n < 0 {
        return Err(err(format!("negative number ({n}) not allowed: {expr}")));
    }
    // Larger values are beyond every field's maximum anyway.
    Ok(n.min(i64::from(u32::MAX)) as u32)
}

/// Go's `time.ParseDuration`, in nanoseconds (negative durations allowed,
/// as Go does; `@every` then runs every second).
fn go_duration(s: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {s:?}"));
        }
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        let whole: i128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| invalid())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(invalid)?;
        if !frac.is_empty() {
            let digits = frac.len().min(30) as u32;
            let f: i128 = frac[..digits as usize].parse().map_err(|_| invalid())?;
            value += f * scale / 10i128.pow(digits);
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
        rest = after;
    }
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(spec: &str) -> Fields {
        match parse(spec).unwrap().kind {
            Kind::Fields(f) => f,
            k => panic!("{spec}: {k:?}"),
        }
    }

    fn message(spec: &str) -> String {
        parse(spec).unwrap_err().0
    }

    #[test]
    fn fields_ranges_steps_and_names() {
        let f = fields("*/15 6-16/4 1,15 jan-MAR mon-fri");
        assert_eq!(f.minute, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(f.hour, 1 << 6 | 1 << 10 | 1 << 14);
        assert_eq!(f.dom, 1 << 1 | 1 << 15);
        assert_eq!(f.month, 0b1110);
        assert_eq!(f.dow, 0b11_1110);
        assert!(!f.dom_star && !f.dow_star);
        // A lone value with a step runs to the maximum.
        assert_eq!(fields("50/5 * * * *").minute, 1 << 50 | 1 << 55);
        // `*` and `?` (step 1) mark the day fields as unrestricted; `*/2` does not.
        let f = fields("0 0 ? * */2");
        assert!(f.dom_star && !f.dow_star);
        assert_eq!(f.dow, 1 | 1 << 2 | 1 << 4 | 1 << 6);
        assert_eq!(fields("@weekly"), fields("0 0 * * 0"));
        assert_eq!(fields("@annually"), fields("0 0 1 1 *"));
        assert_eq!(fields("@midnight"), fields("0 0 * * *"));
        assert_eq!(fields("  1   2 3 4 5 "), fields("1 2 3 4 5"));
    }

    #[test]
    fn every_takes_go_durations() {
        assert_eq!(parse("@every 1h30m").unwrap().kind, Kind::Every(5400));
        assert_eq!(parse("@every 1.5s").unwrap().kind, Kind::Every(1));
        assert_eq!(parse("@every 10ms").unwrap().kind, Kind::Every(1));
        assert_eq!(
            message("@every 5"),
            "failed to parse duration @every 5: time: missing unit in duration \"5\""
        );
        assert_eq!(
            message("@every 1d"),
            "failed to parse duration @every 1d: time: unknown unit \"d\" in duration \"1d\""
        );
        assert_eq!(message("@every"), "unrecognized descriptor: @every");
    }

    #[test]
    fn errors_carry_robfig_messages() {
        assert_eq!(message(""), "empty spec string");
        assert_eq!(
            message("* * * *"),
            "expected exactly 5 fields, found 4: [* * * *]"
        );
        assert_eq!(
            message("0 0 * * * *"),
            "expected exactly 5 fields, found 6: [0 0 * * * *]"
        );
        assert_eq!(
            message("60 * * * *"),
            "end of range (60) above maximum (59): 60"
        );
        assert_eq!(
            message("* * 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            message("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            message("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(message("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(message("*/2/3 * * * *"), "too many slashes: */2/3");
        assert_eq!(
            message("x * * * *"),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            message("* * * * 7"),
            "end of range (7) above maximum (6): 7"
        );
        assert_eq!(message("@often"), "unrecognized descriptor: @often");
        assert_eq!(
            message("TZ=Nowhere/Atlantis * * * * *"),
            "provided bad location Nowhere/Atlantis: unknown time zone Nowhere/Atlantis"
        );
        assert!(parse("CRON_TZ=Europe/Berlin 0 9 * * *").unwrap().has_zone());
    }
}
