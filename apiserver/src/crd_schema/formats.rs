//! String formats (kube's `apiextensions` validation knows strfmt's
//! registry): a string of a known format that does not parse is a type
//! error; unknown formats are not checked, as in kube.

use base64::Engine;

/// Whether `s` is a valid `format` (true for formats not checked).
pub fn valid(format: &str, s: &str) -> bool {
    match format {
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "date" => date(s),
        "date-time" | "datetime" => date_time(s),
        "uuid" => uuid(s, None),
        "uuid3" => uuid(s, Some('3')),
        "uuid4" => uuid(s, Some('4')),
        "uuid5" => uuid(s, Some('5')),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => cidr(s),
        "mac" => mac(s),
        "hostname" => hostname(s),
        "email" => email(s),
        "duration" => duration(s),
        _ => true,
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

fn date(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(y), Some(m), Some(d)) = (digits(y, 4), digits(m, 2), digits(d, 2)) else {
        return false;
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// RFC 3339: `2006-01-02T15:04:05Z`, fractions and offsets allowed.
fn date_time(s: &str) -> bool {
    // Byte offsets below split only ASCII text (never inside a character).
    if !s.is_ascii() {
        return false;
    }
    let Some((day, time)) = s.split_once(['T', 't', ' ']) else {
        return false;
    };
    if !date(day) || time.len() < 8 {
        return false;
    }
    let (clock, mut rest) = time.split_at(8);
    let mut hms = clock.split(':');
    let ok = match (hms.next(), hms.next(), hms.next(), hms.next()) {
        (Some(h), Some(m), Some(sec), None) => {
            digits(h, 2).is_some_and(|h| h < 24)
                && digits(m, 2).is_some_and(|m| m < 60)
                && digits(sec, 2).is_some_and(|s| s <= 60)
        }
        _ => false,
    };
    if !ok {
        return false;
    }
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        "Z" | "z" => true,
        offset if offset.len() == 6 && (offset.starts_with('+') || offset.starts_with('-')) => {
            let (h, m) = (&offset[1..3], &offset[4..]);
            &offset[3..4] == ":"
                && digits(h, 2).is_some_and(|h| h < 24)
                && digits(m, 2).is_some_and(|m| m < 60)
        }
        _ => false,
    }
}

fn uuid(s: &str, version: Option<char>) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
        && version.is_none_or(|v| groups[2].starts_with(v))
}

fn cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn mac(s: &str) -> bool {
    let sep = if s.contains(':') { ':' } else { '-' };
    let parts: Vec<&str> = s.split(sep).collect();
    matches!(parts.len(), 6 | 8 | 20)
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.trim_end_matches('.').split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

fn email(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && !local.contains(' ') && hostname(domain),
        None => false,
    }
}

/// Go's `time.ParseDuration` units, and strfmt's days and weeks.
fn duration(s: &str) -> bool {
    let mut rest = s.trim_start_matches(['+', '-']);
    if rest == "0" {
        return true;
    }
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let n = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h", "d", "w"]
            .iter()
            .find(|u| rest.starts_with(**u) && !(**u == "m" && rest.starts_with("ms")));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_as_kube_reads_them() {
        assert!(valid("date-time", "2024-02-29T10:00:00Z"));
        assert!(valid("date-time", "2024-01-01T10:00:00.123+02:00"));
        assert!(!valid("date-time", "2023-02-29T10:00:00Z"));
        assert!(!valid("date-time", "yesterday"));
        assert!(!valid("date-time", "2024-01-01T0000000é"));
        assert!(!valid("date-time", "2024-01-01T10:00:00+0é:00"));
        assert!(valid("date", "2024-12-31"));
        assert!(!valid("date", "2024-13-01"));
        assert!(valid("byte", "aGVsbG8="));
        assert!(!valid("byte", "not base64!"));
        assert!(valid("uuid", "123e4567-e89b-42d3-a456-426614174000"));
        assert!(!valid("uuid5", "123e4567-e89b-42d3-a456-426614174000"));
        assert!(valid("ipv4", "10.0.0.1") && !valid("ipv4", "10.0.0.300"));
        assert!(
            valid("ipv6", "::1") && valid("cidr", "10.0.0.0/8") && !valid("cidr", "10.0.0.0/33")
        );
        assert!(valid("mac", "00:1a:2b:3c:4d:5e") && !valid("mac", "00:1a"));
        assert!(valid("hostname", "a.example.com") && !valid("hostname", "-a"));
        assert!(valid("email", "a@example.com") && !valid("email", "nobody"));
        assert!(
            valid("duration", "1h30m") && valid("duration", "300ms") && !valid("duration", "soon")
        );
        assert!(valid("password", "anything") && valid("int32", "x"));
    }
}
