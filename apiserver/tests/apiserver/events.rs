//! Events expire through etcd leases (`--event-ttl`), once on etcd and once
//! on Ballast, each scenario on a one-member cluster of its own so the
//! storage's lease list is this test's alone. Expiry is awaited with
//! bounded polls; nothing asserts how soon it happens, only that the Event
//! goes, the watch cache reports it DELETED, and a Pod written beside it
//! stays.

use crate::common;

use std::time::Duration;

use crate::common::{namespace, pod, start_on_with, urls, Api};
use ballast_apiserver::{Etcd, Options};
use ballast_proto::etcdserverpb::{
    alarm_request::AlarmAction, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    AlarmRequest, AlarmType, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    StatusRequest,
};
use ballast_tests::{Cluster, ClusterKind};
use serde_json::{json, Value};

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ballast_tests::ClusterKind::Etcd).await
                }
            )*
        }
        mod ballast {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ballast_tests::ClusterKind::Ballast).await
                }
            )*
        }
    };
}

on_both!(
    an_event_expires_and_watchers_see_it_deleted_while_a_pod_stays,
    events_written_together_share_one_lease,
    an_event_updated_lives_its_ttl_after_its_last_update,
    a_write_on_a_lease_gone_from_storage_is_retried_on_a_new_one,
    a_refused_lease_grant_is_an_error_answer,
);

/// The longest any one condition is polled for.
const WAIT: Duration = Duration::from_secs(60);

/// A one-member cluster of its own, an etcd client and its endpoints.
struct Storage {
    _cluster: Cluster,
    etcd: Etcd,
    endpoints: Vec<String>,
}

async fn storage(kind: ClusterKind) -> Storage {
    let cluster = tokio::task::spawn_blocking(move || Cluster::start_with_size(kind, 1))
        .await
        .expect("cluster start");
    let endpoints = urls(&cluster);
    let etcd = Etcd::connect(&endpoints).expect("etcd client");
    Storage {
        _cluster: cluster,
        etcd,
        endpoints,
    }
}

async fn apiserver(s: &Storage, event_ttl: Duration) -> Api {
    let options = Options {
        event_ttl,
        etcd_compaction_interval: Duration::ZERO,
        ..Options::default()
    };
    start_on_with(s.endpoints.clone(), options).await
}

async fn leases(s: &Storage) -> LeaseClient<tonic::transport::Channel> {
    LeaseClient::connect(s.endpoints[0].clone())
        .await
        .expect("lease client")
}

fn event(name: &str, ns: &str, about: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": about, "apiVersion": "v1"},
        "reason": "Testing", "message": "about a pod", "type": "Normal",
        "source": {"component": "events-test"}, "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
    })
}

/// The lease `key` is attached to (0: none), or `None` when it is gone.
async fn lease_of(s: &Storage, key: &str) -> Option<i64> {
    s.etcd.get(key).await.expect("etcd get").map(|kv| kv.lease)
}

async fn an_event_expires_and_watchers_see_it_deleted_while_a_pod_stays(kind: ClusterKind) {
    let s = storage(kind).await;
    let api = apiserver(&s, Duration::from_secs(2)).await;
    let ns = namespace(&api, "expiry").await;
    let events = format!("/api/v1/namespaces/{ns}/events");
    let (code, list) = api.call("GET", &events, None).await;
    assert_eq!(code, 200, "{list}");
    let from = list["metadata"]["resourceVersion"].as_str().expect("rv");
    let mut watch = api
        .watch(&format!("{events}?watch=true&resourceVersion={from}"))
        .await;

    let (code, body) = api
        .call("POST", &events, Some(event("probe", &ns, "web")))
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some(pod("web", json!({}), "")),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let event_key = format!("/registry/events/{ns}/probe");
    let pod_key = format!("/registry/pods/{ns}/web");
    assert_eq!(lease_of(&s, &pod_key).await, Some(0), "pods never expire");
    let created_lease = lease_of(&s, &event_key).await.expect("event stored");
    assert_ne!(created_lease, 0, "an Event is written with a lease");

    // The correlator's count bump: an update must keep a lease, or the
    // key would be detached from it and never expire.
    let (code, body) = api
        .merge_patch(&format!("{events}/probe"), json!({"count": 2}))
        .await;
    assert_eq!(code, 200, "{body}");
    let patched_lease = lease_of(&s, &event_key).await;
    assert!(
        matches!(patched_lease, Some(l) if l != 0) || patched_lease.is_none(),
        "an updated Event keeps a lease: {patched_lease:?}"
    );

    let mut seen = Vec::new();
    let deleted = loop {
        let e = watch
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("no DELETED event within {WAIT:?}; saw {seen:?}"));
        let kind = e["type"].as_str().unwrap_or_default().to_string();
        seen.push(kind.clone());
        if kind == "DELETED" {
            break e;
        }
    };
    assert_eq!(deleted["object"]["metadata"]["name"], "probe");
    assert_eq!(seen[..2], ["ADDED", "MODIFIED"], "{seen:?}");

    let (code, body) = api.call("GET", &format!("{events}/probe"), None).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(lease_of(&s, &event_key).await, None);
    let (code, list) = api.call("GET", &events, None).await;
    assert_eq!(
        (code, list["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (code, body) = api
        .call("GET", &format!("/api/v1/namespaces/{ns}/pods/web"), None)
        .await;
    assert_eq!(code, 200, "the pod outlives the event: {body}");
}

async fn events_written_together_share_one_lease(kind: ClusterKind) {
    const N: usize = 20;
    let s = storage(kind).await;
    let mut lease_api = leases(&s).await;
    let before = lease_api
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner()
        .leases;
    assert_eq!(before.len(), 0, "a fresh cluster has no leases");

    // The default TTL, 1h: one lease serves the writes of a 60 s window.
    let api = apiserver(&s, Duration::from_secs(3600)).await;
    let ns = namespace(&api, "sharing").await;
    let events = format!("/api/v1/namespaces/{ns}/events");
    for i in 0..N {
        let (code, body) = api
            .call("POST", &events, Some(event(&format!("e{i}"), &ns, "web")))
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, body) = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some(pod("web", json!({}), "")),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = api
        .merge_patch(&format!("{events}/e0"), json!({"count": 2}))
        .await;
    assert_eq!(code, 200, "{body}");

    let listed = lease_api
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner()
        .leases;
    assert_eq!(listed.len(), 1, "{N} events and an update share one lease");
    let id = listed[0].id;
    let ttl = lease_api
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!(ttl.granted_ttl, 3600 + 60, "the TTL plus the reuse window");
    assert!(ttl.ttl > 3600, "no event expires early: {}", ttl.ttl);
    let mut keys: Vec<String> = ttl
        .keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    let mut want: Vec<String> = (0..N)
        .map(|i| format!("/registry/events/{ns}/e{i}"))
        .collect();
    want.sort();
    assert_eq!(keys, want, "every event, and nothing else, on the lease");
    assert_eq!(
        lease_of(&s, &format!("/registry/pods/{ns}/web")).await,
        Some(0)
    );
}

async fn an_event_updated_lives_its_ttl_after_its_last_update(kind: ClusterKind) {
    // Long enough that a short stall of this machine between the last
    // update and the check below cannot expire the updated event.
    const TTL: Duration = Duration::from_secs(5);
    let s = storage(kind).await;
    let api = apiserver(&s, TTL).await;
    let ns = namespace(&api, "renewal").await;
    let events = format!("/api/v1/namespaces/{ns}/events");
    let (_, list) = api.call("GET", &events, None).await;
    let from = list["metadata"]["resourceVersion"].as_str().expect("rv");
    let mut watch = api
        .watch(&format!("{events}?watch=true&resourceVersion={from}"))
        .await;
    for name in ["once", "kept"] {
        let (code, body) = api
            .call("POST", &events, Some(event(name, &ns, "web")))
            .await;
        assert_eq!(code, 201, "{body}");
    }

    // Bump `kept` every 250 ms, as a recorder counting a repeated event
    // would, until `once` (written with it) expires; bounded by WAIT.
    let tick = Duration::from_millis(250);
    let mut deleted = None;
    for count in 2..(2 + WAIT.as_millis() / tick.as_millis()) {
        let (code, body) = api
            .merge_patch(&format!("{events}/kept"), json!({"count": count}))
            .await;
        assert_eq!(code, 200, "bump {count}: {body}");
        // Read what the watch says (our own MODIFIED events among it)
        // until the next bump is due.
        let due = tokio::time::Instant::now() + tick;
        for _ in 0..1000 {
            let left = due.saturating_duration_since(tokio::time::Instant::now());
            match watch.next(left).await {
                Some(e) if e["type"] == "DELETED" => {
                    deleted = Some(e);
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        if deleted.is_some() {
            break;
        }
    }
    let deleted = deleted.unwrap_or_else(|| panic!("`once` not deleted within {WAIT:?}"));
    assert_eq!(deleted["object"]["metadata"]["name"], "once");
    let (code, kept) = api.call("GET", &format!("{events}/kept"), None).await;
    assert_eq!(code, 200, "updated within its TTL, it lives on: {kept}");
    assert!(kept["count"].as_i64().unwrap_or(0) >= 2, "{kept}");
    let (code, list) = api.call("GET", &events, None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["metadata"]["name"].as_str())
        .collect();
    assert_eq!((code, names), (200, vec!["kept"]));

    // Left alone, it goes too.
    let deleted = next_deleted(&mut watch).await;
    assert_eq!(deleted["object"]["metadata"]["name"], "kept");
    let (code, body) = api.call("GET", &format!("{events}/kept"), None).await;
    assert_eq!(code, 404, "{body}");
}

/// The next DELETED event of `watch`, skipping others; panics after
/// [`WAIT`] without one.
async fn next_deleted(watch: &mut common::Watch) -> Value {
    for _ in 0..10_000 {
        let e = watch
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("no DELETED event within {WAIT:?}"));
        if e["type"] == "DELETED" {
            return e;
        }
    }
    panic!("no DELETED event among 10000");
}

async fn a_write_on_a_lease_gone_from_storage_is_retried_on_a_new_one(kind: ClusterKind) {
    let s = storage(kind).await;
    let api = apiserver(&s, Duration::from_secs(3600)).await;
    let ns = namespace(&api, "revoked").await;
    let events = format!("/api/v1/namespaces/{ns}/events");
    let (code, body) = api
        .call("POST", &events, Some(event("first", &ns, "web")))
        .await;
    assert_eq!(code, 201, "{body}");
    let first = lease_of(&s, &format!("/registry/events/{ns}/first"))
        .await
        .expect("stored");
    assert_ne!(first, 0);

    // Someone else revokes the lease the apiserver is still handing out
    // (as an expiry during a storage outage would): its keys go with it.
    leases(&s)
        .await
        .lease_revoke(LeaseRevokeRequest { id: first })
        .await
        .expect("revoke");
    assert_eq!(
        lease_of(&s, &format!("/registry/events/{ns}/first")).await,
        None
    );

    // The next write meets `requested lease not found`, takes a new lease
    // and succeeds; so does an update.
    let (code, body) = api
        .call("POST", &events, Some(event("second", &ns, "web")))
        .await;
    assert_eq!(code, 201, "retried on a new lease: {body}");
    let second = lease_of(&s, &format!("/registry/events/{ns}/second"))
        .await
        .expect("stored");
    assert!(second != 0 && second != first, "{first} then {second}");
    let (code, body) = api
        .merge_patch(&format!("{events}/second"), json!({"count": 2}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        lease_of(&s, &format!("/registry/events/{ns}/second")).await,
        Some(second)
    );
    let (code, body) = api.call("GET", &format!("{events}/first"), None).await;
    assert_eq!(code, 404, "{body}");
}

async fn a_refused_lease_grant_is_an_error_answer(kind: ClusterKind) {
    let s = storage(kind).await;
    let api = apiserver(&s, Duration::from_secs(3600)).await;
    let ns = namespace(&api, "refused").await;
    let events = format!("/api/v1/namespaces/{ns}/events");
    let mut maintenance = MaintenanceClient::connect(s.endpoints[0].clone())
        .await
        .expect("maintenance client");
    let member = maintenance
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .header
        .expect("header")
        .member_id;
    let alarm = |action: AlarmAction| AlarmRequest {
        action: action as i32,
        member_id: member,
        alarm: AlarmType::Nospace as i32,
    };

    // Storage full: etcd refuses lease grants (and puts).
    maintenance
        .alarm(alarm(AlarmAction::Activate))
        .await
        .expect("raise NOSPACE");
    let (code, body) = api
        .call("POST", &events, Some(event("refused", &ns, "web")))
        .await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("database space exceeded"), "{body}");
    assert_eq!(
        leases(&s)
            .await
            .lease_leases(LeaseLeasesRequest {})
            .await
            .expect("leases")
            .into_inner()
            .leases
            .len(),
        0
    );

    // The apiserver carries on, and writes events once space is back.
    let (code, list) = api.call("GET", &events, None).await;
    assert_eq!(
        (code, list["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    maintenance
        .alarm(alarm(AlarmAction::Deactivate))
        .await
        .expect("disarm");
    let (code, body) = api
        .call("POST", &events, Some(event("accepted", &ns, "web")))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_ne!(
        lease_of(&s, &format!("/registry/events/{ns}/accepted")).await,
        Some(0)
    );
}

#[tokio::test]
async fn a_zero_event_ttl_is_refused() {
    let options = Options {
        event_ttl: Duration::ZERO,
        ..Options::default()
    };
    let err = ballast_apiserver::Apiserver::with_options(
        ballast_apiserver::Config {
            etcd_servers: vec!["http://127.0.0.1:2379".into()],
            cache: Default::default(),
        },
        options,
    )
    .err()
    .expect("a zero TTL is refused");
    assert!(err.to_string().contains("must be positive"), "{err}");
}
