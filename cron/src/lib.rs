//! # ballast-cron
//!
//! Cron schedules as Kubernetes CronJobs read them (kube's
//! `cron.ParseStandard`, robfig/cron v3): five fields, the `@` macros and
//! `@every <duration>`, and the next run time in an IANA time zone. The
//! apiserver validates `spec.schedule` and `spec.timeZone` with it; the
//! CronJob controller computes run times with it.
//!
//! # Layout
//! - `parse` — the grammar: fields into bit sets, macros, Go durations;
//!   errors carry robfig/cron's messages, which kube-apiserver returns.
//! - `next` — [`Schedule::next`]: the first matching minute after a time,
//!   walked on the zone's wall clock.
//! - `zone` — [`time_zone`]: Go's `time.LoadLocation` over the system's
//!   tz database (`/usr/share/zoneinfo`).
//!
//! # Worked example
//! `30 6-16/4 * * 1-5` is minutes {30}, hours {6, 10, 14}, every day of the
//! month (`*`), every month, Monday to Friday. Because the day-of-month is
//! `*`, a day must match the weekday; were both restricted (`0 0 1 * 1`)
//! either would do (the 1st, or any Monday), as in every cron since Vixie's.
//! After Friday 14:30 the next run is Monday 06:30 in the schedule's zone.

mod next;
mod parse;
mod zone;

pub use jiff;
pub use zone::time_zone;

/// A schedule that does not parse; the message is robfig/cron's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
    /// The zone of a `TZ=`/`CRON_TZ=` prefix; it overrides the caller's.
    zone: Option<jiff::tz::TimeZone>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Fields(Fields),
    /// `@every d`: whole seconds, at least one.
    Every(i64),
}

/// One bit per allowed value of each field; `*_star` when the field was
/// `*` or `?` (without a step above 1), which changes how the two day
/// fields combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

impl std::str::FromStr for Schedule {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Schedule, ParseError> {
        parse::parse(s)
    }
}

impl Schedule {
    /// Parses a standard schedule (see the crate doc).
    pub fn parse(spec: &str) -> Result<Schedule, ParseError> {
        parse::parse(spec)
    }

    /// Whether `spec` names a zone with `TZ=` or `CRON_TZ=`.
    pub fn has_zone(&self) -> bool {
        self.zone.is_some()
    }
}
