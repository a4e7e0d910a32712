//! The event recorder against an in-process apiserver over a real etcd:
//! repeats are counted on one object, similar events combined, and a
//! counted Event deleted meanwhile is written again with its count.
//! A repeat also carries the events.k8s.io `series` (count and last
//! observed time), read back through both API groups. `publish_about`
//! returns once its write is answered, so each check reads the API right
//! after.

use crate::common::*;
use ballast_controllers::events::{EventType, Recorder};
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::api::events::v1 as events_v1;
use kube::api::{Api, DeleteParams, ListParams};

fn pod(ns: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        field_path: Some("spec.containers{web}".into()),
        ..ObjectReference::default()
    }
}

async fn events_about(api: &Api<Event>, name: &str) -> Vec<Event> {
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_is_one_object_with_a_count() {
    let env = env("events-repeat").await;
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let recorder = Recorder::new(env.client.clone(), "events-test", Some("node-1"));
    for _ in 0..5 {
        // A clone shares the memory of what was written.
        recorder
            .clone()
            .publish_about(
                pod(&env.ns, "web"),
                EventType::Warning,
                "Unhealthy",
                "Liveness probe failed: connection refused",
            )
            .await;
    }
    let events = events_about(&api, "web").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.count, Some(5));
    assert_eq!(e.reason.as_deref(), Some("Unhealthy"));
    let (first, last) = (
        e.first_timestamp.clone().expect("first"),
        e.last_timestamp.clone().expect("last"),
    );
    assert!(first.0 <= last.0, "{first:?} {last:?}");
    // The series counts as count does; eventTime is the first occurrence.
    let series = e.series.clone().expect("a repeated event has a series");
    assert_eq!(series.count, Some(5));
    let observed = series.last_observed_time.expect("lastObservedTime").0;
    // (lastTimestamp and firstTimestamp are whole seconds.)
    assert_eq!(
        observed.as_second(),
        last.0.as_second(),
        "observed when last seen"
    );
    let event_time = e.event_time.clone().expect("eventTime").0;
    assert_eq!(event_time.as_second(), first.0.as_second());

    // The same Event through events.k8s.io/v1.
    let v1: Api<events_v1::Event> = Api::namespaced(env.client.clone(), &env.ns);
    let name = e.metadata.name.clone().expect("name");
    let same = v1.get(&name).await.expect("read through events.k8s.io/v1");
    assert_eq!(same.deprecated_count, Some(5));
    assert_eq!(same.series.as_ref().map(|s| s.count), Some(5));
    assert_eq!(
        same.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("web")
    );
    assert_eq!(same.reporting_controller.as_deref(), Some("events-test"));
    assert_eq!(same.reporting_instance.as_deref(), Some("node-1"));

    // Deleted (as expiry would), the next repeat writes it again, counted.
    let name = e.metadata.name.clone().expect("name");
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    recorder
        .publish_about(
            pod(&env.ns, "web"),
            EventType::Warning,
            "Unhealthy",
            "Liveness probe failed: connection refused",
        )
        .await;
    let events = events_about(&api, "web").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(events[0].count, Some(6));
    let series = events[0]
        .series
        .clone()
        .expect("written again with its series");
    assert_eq!(series.count, Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_event_has_no_series_and_long_messages_are_cut() {
    let env = env("events-single").await;
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let recorder = Recorder::new(env.client.clone(), "events-test", None);
    let long = format!("pull failed: {}", "x".repeat(2000));
    recorder
        .publish_about(pod(&env.ns, "img"), EventType::Warning, "Failed", &long)
        .await;
    let events = events_about(&api, "img").await;
    assert_eq!(events.len(), 1, "recorded although too long: {events:#?}");
    let e = &events[0];
    assert_eq!(e.series, None);
    assert_eq!(e.count, Some(1));
    let message = e.message.clone().unwrap_or_default();
    assert_eq!(message.len(), 1024);
    assert!(long.starts_with(&message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_events_are_combined() {
    let env = env("events-similar").await;
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let recorder = Recorder::new(env.client.clone(), "events-test", None);
    for n in 1..=12 {
        recorder
            .publish_about(
                pod(&env.ns, "db"),
                EventType::Warning,
                "FailedMount",
                &format!("volume {n} not found"),
            )
            .await;
    }
    let events = events_about(&api, "db").await;
    assert_eq!(events.len(), 10, "9 alone and 1 combined: {events:#?}");
    let combined: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("(combined from similar events): "))
        })
        .collect();
    assert_eq!(combined.len(), 1, "{events:#?}");
    assert_eq!(combined[0].count, Some(3));
    assert_eq!(
        combined[0].message.as_deref(),
        Some("(combined from similar events): volume 12 not found")
    );
}
