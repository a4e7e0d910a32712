//! The next run time of a schedule.
//!
//! Fields schedules are walked on the wall clock of the zone, coarsest
//! field first: a month that does not match jumps to the next month's
//! first midnight, a day to the next midnight, an hour to the next hour,
//! a minute to the next minute. Each step moves strictly forward in
//! absolute time, so a wall-clock hour repeated when DST ends is run once
//! per matching instant, and one skipped when it starts is not run that
//! day (as robfig/cron, which kube-controller-manager uses).

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::{Fields, Kind, Schedule};

/// Searches at most this far ahead (robfig/cron: five years), so a
/// schedule that can never match (`0 0 30 2 *`) ends the search.
const HORIZON_YEARS: i16 = 5;

impl Schedule {
    /// The first run time strictly after `after`, on `zone`'s wall clock
    /// (a `TZ=` prefix in the schedule wins); `None` when nothing matches
    /// within five years.
    pub fn next(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        match &self.kind {
            // robfig: whole seconds after the last run, truncated.
            Kind::Every(secs) => Timestamp::from_second(after.as_second().checked_add(*secs)?).ok(),
            Kind::Fields(f) => next_fields(f, after, self.zone.as_ref().unwrap_or(zone)),
        }
    }
}

fn bit(set: u64, v: i8) -> bool {
    v >= 0 && set & (1 << v) != 0
}

fn day_matches(f: &Fields, dt: DateTime) -> bool {
    let dom = bit(f.dom, dt.day());
    let dow = bit(f.dow, dt.weekday().to_sunday_zero_offset());
    if f.dom_star || f.dow_star {
        dom && dow
    } else {
        dom || dow
    }
}

/// The instant of a wall-clock time (the later side of a gap, the earlier
/// of a fold), kept after `t` so the walk never goes back.
fn forward(zone: &TimeZone, dt: DateTime, t: Timestamp) -> Option<Timestamp> {
    let at = zone.to_timestamp(dt).ok()?;
    if at > t {
        Some(at)
    } else {
        t.checked_add(SignedDuration::from_mins(1)).ok()
    }
}

fn next_fields(f: &Fields, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
    // The start of the wall-clock minute after `after`.
    let now = zone.to_datetime(after);
    let into_minute = SignedDuration::from_secs(i64::from(now.second()))
        + SignedDuration::from_nanos(i64::from(now.subsec_nanosecond()));
    let mut t = after
        .checked_sub(into_minute)
        .ok()?
        .checked_add(SignedDuration::from_mins(1))
        .ok()?;
    let limit = now.year().saturating_add(HORIZON_YEARS);
    // Each pass moves forward by at least a minute and a matching minute
    // is found within an hour of a matching hour, so this bound is loose.
    for _ in 0..200_000 {
        let dt = zone.to_datetime(t);
        if dt.year() > limit {
            return None;
        }
        if !bit(f.month, dt.month()) {
            let first = dt.date().first_of_month();
            let next = first.checked_add(jiff::Span::new().months(1)).ok()?;
            t = forward(zone, next.at(0, 0, 0, 0), t)?;
            continue;
        }
        if !day_matches(f, dt) {
            let next = dt.date().tomorrow().ok()?;
            t = forward(zone, next.at(0, 0, 0, 0), t)?;
            continue;
        }
        if !bit(f.hour, dt.hour()) {
            let to_next_hour = 60 - i64::from(dt.minute());
            t = t
                .checked_add(SignedDuration::from_mins(to_next_hour))
                .ok()?;
            continue;
        }
        if !bit(f.minute, dt.minute()) {
            t = t.checked_add(SignedDuration::from_mins(1)).ok()?;
            continue;
        }
        return Some(t);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str, zone: &str) -> Option<String> {
        let tz = crate::time_zone(zone).unwrap();
        Schedule::parse(spec)
            .unwrap()
            .next(at(after), &tz)
            .map(|t| t.to_string())
    }

    #[test]
    fn utc_schedules() {
        let n = |spec, after| next(spec, after, "UTC").unwrap();
        assert_eq!(
            n("*/1 * * * *", "2026-12-07T00:00:00Z"),
            "2026-12-07T00:01:00Z"
        );
        assert_eq!(
            n("*/1 * * * *", "2026-12-07T00:00:59.9Z"),
            "2026-12-07T00:01:00Z"
        );
        assert_eq!(
            n("*/15 * * * *", "2026-12-07T00:15:00Z"),
            "2026-12-07T00:30:00Z"
        );
        assert_eq!(n("@hourly", "2026-12-07T23:10:00Z"), "2026-12-08T00:00:00Z");
        assert_eq!(n("@yearly", "2026-12-07T00:00:00Z"), "2027-01-01T00:00:00Z");
        // Friday 2026-12-11 14:30 → Monday 06:30.
        assert_eq!(
            n("30 6-16/4 * * 1-5", "2026-12-11T14:30:00Z"),
            "2026-12-14T06:30:00Z"
        );
        // Both day fields restricted: either matches (the 1st, or a Monday).
        assert_eq!(
            n("0 0 1 * 1", "2026-12-07T00:00:00Z"),
            "2026-12-14T00:00:00Z"
        );
        assert_eq!(
            n("0 0 1 * 1", "2026-12-28T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        // Leap day.
        assert_eq!(
            n("0 12 29 2 *", "2026-12-07T00:00:00Z"),
            "2028-02-29T12:00:00Z"
        );
        assert_eq!(
            n("@every 90s", "2026-12-07T00:00:00Z"),
            "2026-12-07T00:01:30Z"
        );
        // Never: Feb 30th.
        assert_eq!(next("0 0 30 2 *", "2026-12-07T00:00:00Z", "UTC"), None);
    }

    #[test]
    fn zoned_schedules_follow_the_wall_clock() {
        // 09:00 in New York is 14:00 UTC in winter, 13:00 in summer.
        assert_eq!(
            next("0 9 * * *", "2026-12-07T00:00:00Z", "America/New_York").unwrap(),
            "2026-12-07T14:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", "2026-07-01T00:00:00Z", "America/New_York").unwrap(),
            "2026-07-01T13:00:00Z"
        );
        // Half-hour offsets: 00:00 in Kolkata is 18:30 UTC.
        assert_eq!(
            next("@daily", "2026-12-07T00:00:00Z", "Asia/Kolkata").unwrap(),
            "2026-12-07T18:30:00Z"
        );
        // 2026-03-08 02:30 does not exist in New York: that day is skipped.
        assert_eq!(
            next("30 2 * * *", "2026-03-08T00:00:00Z", "America/New_York").unwrap(),
            "2026-03-09T06:30:00Z"
        );
        // 2026-11-01 01:30 happens twice in New York: both run.
        let first = next("30 1 * * *", "2026-11-01T00:00:00Z", "America/New_York").unwrap();
        assert_eq!(first, "2026-11-01T05:30:00Z");
        assert_eq!(
            next("30 1 * * *", &first, "America/New_York").unwrap(),
            "2026-11-01T06:30:00Z"
        );
        // A TZ= prefix wins over the caller's zone.
        assert_eq!(
            next("TZ=Asia/Tokyo 0 9 * * *", "2026-12-07T00:00:00Z", "UTC").unwrap(),
            "2026-12-08T00:00:00Z"
        );
    }
}
