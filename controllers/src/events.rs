//! Events as `kubectl describe` shows them: core/v1 Events about an object,
//! written by every component (controllers, scheduler, kubelet).
//!
//! Publishing is best effort, as in Kubernetes: a failed write is logged and
//! never fails the caller's work.
//!
//! Before writing, a recorder correlates the event with those it wrote
//! before, as client-go's `EventCorrelator` does (`correlator.rs`): a
//! repeat becomes a merge patch of the first Event's `count` and
//! `lastTimestamp`, many similar events one combined Event, and a noisy
//! object is rate limited. The memory is shared by a recorder's clones and
//! bounded (`lru.rs`).
//!
//! Each Event is written in both APIs' terms: the core/v1 fields
//! (`source`, `count`, `firstTimestamp`, `lastTimestamp`) and the
//! events.k8s.io/v1 ones (`eventTime`, `reportingController`,
//! `reportingInstance`, `action`, and on a repeat `series`). client-go's
//! `record` package counts repeats in `count` only, its newer `events`
//! package in `series` only (and patches it on a 30-minute heartbeat);
//! Kubernetes' printers prefer `series` when present, so a repeat here
//! sets both, with the same count, on every write: `kubectl get events`
//! (`-o wide`: Count), `kubectl events` (`(x5 over 10m)`) and
//! `kubectl describe` all show it, through either API group. Being
//! new-style Events (an `eventTime`), they keep to Kubernetes' limits: a
//! message of at most 1024 bytes and a reporting instance of at most 128
//! are cut to fit.

mod correlator;
mod lru;

use std::sync::Arc;

use correlator::{Action, Correlator};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};

/// `Normal` or `Warning`, as `kubectl describe` groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Writes Events on behalf of one component (`deployment-controller`,
/// `default-scheduler`, `kubelet` on a host, …).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    correlator: Arc<parking_lot::Mutex<Correlator>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.component)
            .field("host", &self.host)
            .finish()
    }
}

impl Recorder {
    /// A recorder for `component`; `host` is the node name for kubelets.
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
            correlator: Arc::default(),
        }
    }

    /// A recorder for the same component on another `host`, sharing this
    /// one's correlator: a process that runs many (simulated) nodes keeps
    /// one set of bounded caches, not one per node. The caches are keyed
    /// by source, host included, so nodes' events stay apart.
    pub fn for_host(&self, host: &str) -> Recorder {
        Recorder {
            host: Some(host.to_string()),
            ..self.clone()
        }
    }

    /// Records an event about `object`.
    pub async fn publish<K>(&self, object: &K, kind: EventType, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish_about(reference(object), kind, reason, message)
            .await
    }

    /// Records an event about the object `regarding` refers to; events
    /// about cluster-scoped objects go to the `default` namespace.
    pub async fn publish_about(
        &self,
        regarding: ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        let now = Timestamp::now();
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or("unknown"),
            now.as_nanosecond()
        );
        let instance = self.host.as_deref().unwrap_or(&self.component);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: regarding,
            reason: Some(reason.to_string()),
            message: Some(cut(message, MAX_MESSAGE).to_string()),
            type_: Some(kind.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(cut(instance, MAX_REPORTING_INSTANCE).to_string()),
            action: Some(reason.to_string()),
            ..Event::default()
        };
        let action = self.correlator.lock().correlate(event, now);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let written = match action {
            Action::Drop => {
                tracing::debug!(reason, "event dropped by the rate limit");
                return;
            }
            Action::Create(event) => match api.create(&PostParams::default(), &event).await {
                // A concurrent repeat created it first: count on it.
                Err(kube::Error::Api(s)) if s.code == 409 => update(&api, &event).await,
                done => done.map(drop),
            },
            Action::Update(event) => match update(&api, &event).await {
                // Expired or deleted since: write it again, count kept.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    api.create(&PostParams::default(), &event).await.map(drop)
                }
                done => done,
            },
        };
        if let Err(e) = written {
            tracing::debug!(reason, error = %e, "event not recorded");
        }
    }
}

/// Kubernetes' longest message of a new-style Event (its `note`).
const MAX_MESSAGE: usize = 1024;
/// Kubernetes' longest `reportingInstance`.
const MAX_REPORTING_INSTANCE: usize = 128;

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A merge patch of what a repeat changes: count and series, last time,
/// message.
async fn update(api: &Api<Event>, event: &Event) -> kube::Result<()> {
    let patch = update_patch(event);
    let name = event.metadata.name.as_deref().unwrap_or_default();
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

fn update_patch(event: &Event) -> serde_json::Value {
    serde_json::json!({
        "count": event.count,
        "series": event.series,
        "lastTimestamp": event.last_timestamp,
        "message": event.message,
    })
}

/// An ObjectReference to `object` (kind, apiVersion, namespace, name, uid,
/// resourceVersion), as Events carry it.
pub fn reference<K>(object: &K) -> ObjectReference
where
    K: Resource<DynamicType = ()>,
{
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        namespace: object.namespace(),
        name: Some(object.name_any()),
        uid: object.uid(),
        resource_version: object.resource_version(),
        field_path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EventSeries;

    #[tokio::test]
    async fn recorders_for_other_hosts_share_one_correlator() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let base = Recorder::new(client, "kubelet", None);
        let (a, b) = (base.for_host("node-1"), base.for_host("node-2"));
        assert_eq!(a.host.as_deref(), Some("node-1"));
        assert_eq!(b.host.as_deref(), Some("node-2"));
        assert!(Arc::ptr_eq(&a.correlator, &b.correlator));
        let other = Recorder::new(a.client.clone(), "kubelet", Some("node-1"));
        assert!(!Arc::ptr_eq(&a.correlator, &other.correlator));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 1024), "short");
        let long = "é".repeat(600);
        let c = cut(&long, MAX_MESSAGE);
        assert_eq!(c.len(), 1024);
        let odd = format!("a{long}");
        assert_eq!(cut(&odd, MAX_MESSAGE).len(), 1023);
    }

    #[test]
    fn a_repeat_patches_count_and_series_together() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let e = Event {
            count: Some(3),
            series: Some(EventSeries {
                count: Some(3),
                last_observed_time: Some(MicroTime(now)),
            }),
            last_timestamp: Some(Time(now)),
            message: Some("m".into()),
            ..Event::default()
        };
        let p = update_patch(&e);
        assert_eq!(p["count"], 3);
        assert_eq!(p["series"]["count"], 3);
        assert!(p["series"]["lastObservedTime"]
            .as_str()
            .unwrap()
            .starts_with("2027-01-15T08:00:00"));
        assert_eq!(p["message"], "m");
    }
}
