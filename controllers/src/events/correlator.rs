//! What to write for each event a component records, as client-go's
//! `EventCorrelator` decides it: a probe failing every second for a day is
//! one Event with a count, not 86,400 objects.
//!
//! Each event passes three steps, in this order:
//!
//! 1. **Aggregation.** Events alike but for their message (same source,
//!    object, type and reason) are *similar*. The distinct messages seen
//!    within 10 minutes of the previous similar event are remembered; from
//!    the 10th on, the event is replaced by one Event keyed without its
//!    message, `(combined from similar events): <latest message>`.
//! 2. **De-duplication.** An event equal to one seen within the last 10
//!    minutes (source, object with field path, type, reason, message) is
//!    written as an update of that Event: `count` + 1, a new
//!    `lastTimestamp`, `firstTimestamp`, `eventTime` and name kept, and a
//!    `series` of the same count observed last now (the events.k8s.io
//!    form of the repetition, which Kubernetes' printers prefer).
//! 3. **Rate limit.** Each (source, object) has a token bucket of 25,
//!    refilled one token every 5 minutes; an event without a token is
//!    dropped. Its occurrence still counts: the next update carries it.
//!
//! Worked example, one pod's probe failing with changing messages:
//!
//! ```text
//! t=0s    Unhealthy "a"           create  p.1 count 1
//! t=1s    Unhealthy "a"           update  p.1 count 2
//! t=2..9s Unhealthy "b".."i"      create  p.2 .. p.9 (9 distinct so far)
//! t=10s   Unhealthy "j"           create  p.10 "(combined from similar events): j"
//! t=11s   Unhealthy "k"           update  p.10 count 2, message "... k"
//! ```
//!
//! Every cache is an LRU of 4096 entries, as client-go's.

use k8s_openapi::api::core::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

use super::lru::Lru;

/// Entries per cache (client-go's `maxLruCacheEntries`).
const CACHE_ENTRIES: usize = 4096;
/// Distinct messages of similar events before they are combined.
const AGGREGATE_MAX_EVENTS: usize = 10;
/// How long similar events are remembered after the last one.
const AGGREGATE_WINDOW_MS: i64 = 10 * 60 * 1000;
/// How long after its last occurrence an event is counted rather than
/// written anew.
const DEDUP_WINDOW_MS: i64 = 10 * 60 * 1000;
/// Events per (source, object) allowed at once.
const SPAM_BURST: f64 = 25.0;
/// Milliseconds to earn one more token.
const SPAM_REFILL_MS: f64 = 5.0 * 60.0 * 1000.0;
/// The message prefix of combined events (client-go's).
pub(super) const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// What to write for one recorded event.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    /// A new Event.
    Create(Event),
    /// An update of the Event of this name (its `count`, `lastTimestamp`
    /// and `message` changed); the whole event, to create it again if it
    /// is gone (expired, deleted).
    Update(Event),
    /// Nothing: the rate limit dropped it.
    Drop,
}

/// The correlator's memory, bounded by its LRU caches.
pub(super) struct Correlator {
    /// Similar events: the distinct messages seen and when the last came.
    similar: Lru<String, Similar>,
    /// Events written: by their de-duplication key.
    written: Lru<String, Written>,
    /// Token buckets by (source, object).
    buckets: Lru<String, Bucket>,
}

struct Similar {
    messages: std::collections::HashSet<String>,
    last: Timestamp,
}

struct Written {
    name: String,
    count: i32,
    first: Timestamp,
    last: Timestamp,
}

struct Bucket {
    tokens: f64,
    at: Timestamp,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator {
            similar: Lru::new(CACHE_ENTRIES),
            written: Lru::new(CACHE_ENTRIES),
            buckets: Lru::new(CACHE_ENTRIES),
        }
    }
}

impl Correlator {
    /// Decides what to write for `event` (a fresh Event: unique name,
    /// count 1) recorded at `now`.
    pub(super) fn correlate(&mut self, event: Event, now: Timestamp) -> Action {
        let (event, key) = self.aggregate(event, now);
        let action = self.observe(event, key, now);
        if self.allow(&action, now) {
            action
        } else {
            Action::Drop
        }
    }

    /// Step 1: the event, or the combined event replacing it, and its
    /// de-duplication key.
    fn aggregate(&mut self, event: Event, now: Timestamp) -> (Event, String) {
        let similar_key = similar_key(&event);
        let message = event.message.clone().unwrap_or_default();
        let fresh = || Similar {
            messages: Default::default(),
            last: now,
        };
        let record = match self.similar.get_mut(&similar_key) {
            Some(r) if millis(r.last, now) <= AGGREGATE_WINDOW_MS => r,
            _ => {
                self.similar.insert(similar_key.clone(), fresh());
                self.similar
                    .get_mut(&similar_key)
                    .expect("inserted just now")
            }
        };
        record.last = now;
        record.messages.insert(message.clone());
        if record.messages.len() < AGGREGATE_MAX_EVENTS {
            let key = dedup_key(&event);
            return (event, key);
        }
        // Keep the set bounded; which message goes does not matter.
        if let Some(any) = record.messages.iter().next().cloned() {
            record.messages.remove(&any);
        }
        let mut combined = event;
        combined.message = Some(format!("{COMBINED_PREFIX}{message}"));
        combined.involved_object.field_path = None;
        (combined, similar_key)
    }

    /// Step 2: create the event, or count it on the one written before.
    fn observe(&mut self, mut event: Event, key: String, now: Timestamp) -> Action {
        match self.written.get_mut(&key) {
            Some(w) if millis(w.last, now) <= DEDUP_WINDOW_MS => {
                w.count = w.count.saturating_add(1);
                w.last = now;
                event.metadata.name = Some(w.name.clone());
                event.count = Some(w.count);
                event.first_timestamp = Some(Time(w.first));
                event.last_timestamp = Some(Time(now));
                event.event_time = Some(MicroTime(w.first));
                event.series = Some(EventSeries {
                    count: Some(w.count),
                    last_observed_time: Some(MicroTime(now)),
                });
                Action::Update(event)
            }
            _ => {
                self.written.insert(
                    key,
                    Written {
                        name: event.metadata.name.clone().unwrap_or_default(),
                        count: 1,
                        first: now,
                        last: now,
                    },
                );
                event.count = Some(1);
                event.first_timestamp = Some(Time(now));
                event.last_timestamp = Some(Time(now));
                event.event_time = Some(MicroTime(now));
                event.series = None;
                Action::Create(event)
            }
        }
    }

    /// Step 3: whether the event's (source, object) has a token left.
    fn allow(&mut self, action: &Action, now: Timestamp) -> bool {
        let (Action::Create(e) | Action::Update(e)) = action else {
            return false;
        };
        let key = spam_key(e);
        let Some(b) = self.buckets.get_mut(&key) else {
            self.buckets.insert(
                key,
                Bucket {
                    tokens: SPAM_BURST - 1.0,
                    at: now,
                },
            );
            return true;
        };
        let earned = millis(b.at, now).max(0) as f64 / SPAM_REFILL_MS;
        b.tokens = (b.tokens + earned).min(SPAM_BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Milliseconds from `then` to `now` (negative if the clock went back).
fn millis(then: Timestamp, now: Timestamp) -> i64 {
    now.as_millisecond().saturating_sub(then.as_millisecond())
}

/// Fields joined by NUL, which none of them holds.
fn join(parts: &[Option<&str>]) -> String {
    parts
        .iter()
        .map(|p| p.unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\0")
}

/// The source and the object, without field path (client-go's spam key).
fn spam_key(e: &Event) -> String {
    let source = e.source.as_ref();
    let o = &e.involved_object;
    join(&[
        source.and_then(|s| s.component.as_deref()),
        source.and_then(|s| s.host.as_deref()),
        o.kind.as_deref(),
        o.namespace.as_deref(),
        o.name.as_deref(),
        o.uid.as_deref(),
        o.api_version.as_deref(),
    ])
}

/// The spam key with type, reason and reporter: events alike but for
/// message and field path.
fn similar_key(e: &Event) -> String {
    join(&[
        Some(&spam_key(e)),
        e.type_.as_deref(),
        e.reason.as_deref(),
        e.reporting_component.as_deref(),
        e.reporting_instance.as_deref(),
    ])
}

/// Everything but time: the same event again.
fn dedup_key(e: &Event) -> String {
    join(&[
        Some(&similar_key(e)),
        e.involved_object.field_path.as_deref(),
        e.message.as_deref(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const T0: i64 = 1_800_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(T0 + secs).expect("a valid time")
    }

    /// A fresh event as the recorder makes it, uniquely named.
    fn event(pod: &str, reason: &str, message: &str, n: usize) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{pod}.{n}")),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                namespace: Some("ns".into()),
                name: Some(pod.into()),
                uid: Some(format!("uid-{pod}")),
                field_path: Some("spec.containers{c}".into()),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("node-1".into()),
            }),
            count: Some(1),
            ..Event::default()
        }
    }

    fn created(a: Action) -> Event {
        match a {
            Action::Create(e) => e,
            other => panic!("expected a create, got {other:?}"),
        }
    }

    fn updated(a: Action) -> Event {
        match a {
            Action::Update(e) => e,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[test]
    fn a_repeated_event_updates_the_first_one_with_a_count() {
        let mut c = Correlator::default();
        let first = created(c.correlate(event("p", "Unhealthy", "probe failed", 1), at(0)));
        assert_eq!(first.metadata.name.as_deref(), Some("p.1"));
        assert_eq!(first.count, Some(1));
        assert_eq!(first.series, None, "a singleton has no series");
        assert_eq!(first.event_time, Some(MicroTime(at(0))));
        for (n, t) in [(2, 1), (3, 60), (4, 600)] {
            let e = updated(c.correlate(event("p", "Unhealthy", "probe failed", n), at(t)));
            assert_eq!(e.metadata.name.as_deref(), Some("p.1"), "the same object");
            assert_eq!(e.count, Some(n as i32));
            assert_eq!(e.first_timestamp, Some(Time(at(0))));
            assert_eq!(e.last_timestamp, Some(Time(at(t))));
            assert_eq!(e.event_time, Some(MicroTime(at(0))), "first seen");
            assert_eq!(
                e.series,
                Some(EventSeries {
                    count: Some(n as i32),
                    last_observed_time: Some(MicroTime(at(t))),
                }),
                "the series counts as count does"
            );
        }
        // Another message, field path, reason or object is another event.
        created(c.correlate(event("p", "Unhealthy", "other", 5), at(601)));
        let mut elsewhere = event("p", "Unhealthy", "probe failed", 6);
        elsewhere.involved_object.field_path = Some("spec.containers{d}".into());
        created(c.correlate(elsewhere, at(601)));
        created(c.correlate(event("p", "Killing", "probe failed", 7), at(601)));
        created(c.correlate(event("q", "Unhealthy", "probe failed", 8), at(601)));
    }

    #[test]
    fn after_ten_quiet_minutes_the_same_event_is_written_anew() {
        let mut c = Correlator::default();
        created(c.correlate(event("p", "Pulled", "pulled", 1), at(0)));
        updated(c.correlate(event("p", "Pulled", "pulled", 2), at(600)));
        let again = created(c.correlate(event("p", "Pulled", "pulled", 3), at(1201)));
        assert_eq!(again.metadata.name.as_deref(), Some("p.3"));
        assert_eq!(again.count, Some(1));
        assert_eq!(
            again.series, None,
            "a new series starts with the next repeat"
        );
        assert_eq!(again.first_timestamp, Some(Time(at(1201))));
    }

    #[test]
    fn the_tenth_similar_message_is_combined_into_one_event() {
        let mut c = Correlator::default();
        for n in 1..=9 {
            let e = created(c.correlate(event("p", "Failed", &format!("m{n}"), n), at(n as i64)));
            assert_eq!(e.message, Some(format!("m{n}")));
        }
        let combined = created(c.correlate(event("p", "Failed", "m10", 10), at(10)));
        assert_eq!(
            combined.message.as_deref(),
            Some("(combined from similar events): m10")
        );
        assert_eq!(combined.metadata.name.as_deref(), Some("p.10"));
        assert_eq!(combined.involved_object.name.as_deref(), Some("p"));
        // Within the object's burst of 25 events.
        for n in 11..=24 {
            let e = updated(c.correlate(event("p", "Failed", &format!("m{n}"), n), at(n as i64)));
            assert_eq!(
                e.metadata.name.as_deref(),
                Some("p.10"),
                "one combined object"
            );
            assert_eq!(e.count, Some(n as i32 - 9));
            assert_eq!(e.message, Some(format!("{COMBINED_PREFIX}m{n}")));
        }
        // Another reason is not similar.
        let other = created(c.correlate(event("p", "BackOff", "m1", 25), at(25)));
        assert_eq!(other.message.as_deref(), Some("m1"));
        assert_eq!(c.similar.len(), 2);
    }

    #[test]
    fn similar_events_ten_minutes_apart_are_not_combined() {
        let mut c = Correlator::default();
        for n in 1..=20 {
            let t = n as i64 * 601;
            let e = created(c.correlate(event("p", "Failed", &format!("m{n}"), n), at(t)));
            assert_eq!(e.message, Some(format!("m{n}")));
        }
    }

    #[test]
    fn an_object_gets_25_events_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        // Distinct reasons: neither combined nor counted, one bucket.
        let reason = |n: usize| format!("Reason{n}");
        for n in 1..=25 {
            created(c.correlate(event("p", &reason(n), "m", n), at(0)));
        }
        assert_eq!(
            c.correlate(event("p", &reason(26), "m", 26), at(0)),
            Action::Drop
        );
        assert_eq!(
            c.correlate(event("p", &reason(27), "m", 27), at(299)),
            Action::Drop
        );
        // Another object has its own bucket.
        created(c.correlate(event("q", "Reason1", "m", 28), at(299)));
        created(c.correlate(event("p", &reason(29), "m", 29), at(301)));
        assert_eq!(
            c.correlate(event("p", &reason(30), "m", 30), at(302)),
            Action::Drop
        );
        // The bucket refills to its burst and no further.
        for n in 0..25 {
            created(c.correlate(event("p", &reason(100 + n), "m", 100 + n), at(1_000_000)));
        }
        assert_eq!(
            c.correlate(event("p", "Reason999", "m", 999), at(1_000_000)),
            Action::Drop
        );
    }

    #[test]
    fn dropped_occurrences_still_count() {
        let mut c = Correlator::default();
        for n in 1..=25 {
            c.correlate(event("p", "Unhealthy", "probe failed", n), at(n as i64));
        }
        for n in 26..=40 {
            let a = c.correlate(event("p", "Unhealthy", "probe failed", n), at(n as i64));
            assert_eq!(a, Action::Drop, "{n}");
        }
        let e = updated(c.correlate(event("p", "Unhealthy", "probe failed", 41), at(341)));
        assert_eq!(e.count, Some(41), "the next write carries every occurrence");
        assert_eq!(e.series.and_then(|s| s.count), Some(41));
    }

    #[test]
    fn the_caches_stay_bounded() {
        let mut c = Correlator::default();
        for n in 0..5000 {
            c.correlate(event(&format!("p{n}"), "Started", "m", n), at(0));
        }
        assert_eq!(c.similar.len(), CACHE_ENTRIES);
        assert_eq!(c.written.len(), CACHE_ENTRIES);
        assert_eq!(c.buckets.len(), CACHE_ENTRIES);
    }
}
