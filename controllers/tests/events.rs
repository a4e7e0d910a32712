//! The event recorder against an in-process apiserver over a real etcd:
//! repeats are counted on one object, similar events combined, and a
//! counted Event deleted meanwhile is written again with its count.
//! `publish_about` returns once its write is answered, so each check
//! reads the API right after.

mod common;

use ballast_controllers::events::{EventType, Recorder};
use common::*;
use k8s_openapi::api::core::v1::{Event, ObjectReference};
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
