//! Time zones by IANA name, as Go's `time.LoadLocation` finds them.

use jiff::tz::TimeZone;

/// The zone named `name` from the system's tz database: `""` and `UTC`
/// are UTC; the name must match a zone exactly (case too, as the
/// database's file names do); else `unknown time zone <name>`, Go's error.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() || name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    let unknown = || format!("unknown time zone {name}");
    let plausible =
        !name.starts_with('/') && !name.contains("..") && !name.contains('\\') && name.len() <= 255;
    if !plausible {
        return Err(unknown());
    }
    match TimeZone::get(name) {
        Ok(tz) if tz.iana_name() == Some(name) => Ok(tz),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_by_exact_name() {
        assert_eq!(time_zone("").unwrap(), TimeZone::UTC);
        assert_eq!(time_zone("UTC").unwrap(), TimeZone::UTC);
        let ny = time_zone("America/New_York").unwrap();
        assert_eq!(ny.iana_name(), Some("America/New_York"));
        assert_eq!(
            time_zone("america/new_york").unwrap_err(),
            "unknown time zone america/new_york"
        );
        assert_eq!(
            time_zone("Mars/Olympus_Mons").unwrap_err(),
            "unknown time zone Mars/Olympus_Mons"
        );
        assert!(time_zone("../../etc/passwd").is_err());
        assert!(time_zone("/etc/localtime").is_err());
    }
}
