//! Restart and image-pull back-off: `base`, doubling to `max`, reset once
//! a container ran `2 × max` (Kubernetes: 10 s → 300 s, reset after 10 min).
//! As in kubelet, a container's first restart is immediate; the back-off
//! applies from the second one on.

use std::time::Duration;

/// One container's (or one image's) back-off.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Option<Duration>,
    /// Whether the first attempt after a reset goes without delay.
    immediate_first: bool,
    primed: bool,
}

impl Backoff {
    /// A back-off whose first delay is `base` (image pulls).
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            current: None,
            immediate_first: false,
            primed: false,
        }
    }

    /// A back-off whose first retry is immediate (container restarts).
    pub fn restarts(base: Duration, max: Duration) -> Backoff {
        Backoff {
            immediate_first: true,
            ..Backoff::new(base, max)
        }
    }

    /// The delay before the next attempt, after an instance that ran `ran_for`.
    pub fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.max * 2 {
            self.current = None;
            self.primed = false;
        }
        if self.immediate_first && !self.primed {
            self.primed = true;
            return Duration::ZERO;
        }
        let next = match self.current {
            None => self.base,
            Some(d) => (d * 2).min(self.max),
        };
        self.current = Some(next);
        next
    }
}

/// A duration as Go prints it (`10s`, `2m40s`, `5m0s`, `250ms`), as
/// kubelet's messages show it.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    let fmt_secs = |s: f64| {
        if s.fract() == 0.0 {
            format!("{}s", s as u64)
        } else {
            format!("{}s", (s * 1000.0).round() / 1000.0)
        }
    };
    if secs < 60.0 {
        return fmt_secs(secs);
    }
    let minutes = (secs / 60.0).floor() as u64;
    let rest = secs - (minutes * 60) as f64;
    if minutes < 60 {
        return format!("{minutes}m{}", fmt_secs(rest));
    }
    format!("{}h{}m{}", minutes / 60, minutes % 60, fmt_secs(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(10), s(300));
        let delays: Vec<u64> = (0..7).map(|_| b.next(s(1)).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.next(s(600)), s(10));
        let mut r = Backoff::restarts(s(10), s(300));
        assert_eq!(
            [r.next(s(1)), r.next(s(1)), r.next(s(1))],
            [s(0), s(10), s(20)]
        );
        assert_eq!(r.next(s(600)), s(0));
        assert_eq!(go_duration(s(10)), "10s");
        assert_eq!(go_duration(s(160)), "2m40s");
        assert_eq!(go_duration(s(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(200)), "200ms");
    }
}
