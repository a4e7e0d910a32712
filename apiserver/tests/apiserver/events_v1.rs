//! events.k8s.io/v1 Events: one set of stored Events seen through two API
//! groups, as kube-apiserver serves them. An Event created through either
//! group is read, listed, watched, updated and deleted through the other
//! in that group's form (`note` ↔ `message`, `regarding` ↔
//! `involvedObject`, `deprecatedCount` ↔ `count`, …), each group with its
//! own field-selector labels; events.k8s.io/v1 writes are validated as
//! Kubernetes validates them (422 with its messages), and Events written
//! through either group share the `--event-ttl` leases. Then the real
//! `kubectl` (`get events.v1.events.k8s.io`, `events`, `get events -o
//! wide`) and the official Python client (`EventsV1Api` and `CoreV1Api`),
//! a client nobody on the team wrote.

use crate::common;

use std::path::Path;
use std::time::Duration;

use crate::common::{endpoints, kubectl_ok, namespace, plain_kubeconfig, python_client, KUBECTL};
use ballast_apiserver::{CacheConfig, Etcd};
use ballast_tests::ClusterKind;
use serde_json::{json, Value};

/// How long one watch event is waited for.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_groups_view_the_same_events_on_etcd() {
    both_groups_view_the_same_events(ClusterKind::Etcd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_groups_view_the_same_events_on_ballast() {
    both_groups_view_the_same_events(ClusterKind::Ballast).await
}

fn v1_path(ns: &str) -> String {
    format!("/apis/events.k8s.io/v1/namespaces/{ns}/events")
}

fn core_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/events")
}

/// A new-style Event as events.k8s.io/v1 clients write it.
fn v1_event(name: &str, ns: &str, about: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "eventTime": "2026-01-01T00:00:00.000001Z",
        "reportingController": "example.com/tester", "reportingInstance": "tester-0",
        "action": "Testing", "reason": "Tested", "type": "Normal",
        "note": "made through events.k8s.io",
        "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": about},
        "related": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
    })
}

/// An old-style Event as `kubectl create` or client-go's `record` write it.
fn core_event(name: &str, ns: &str, about: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": about},
        "reason": "BackOff", "message": "made through core/v1", "type": "Warning",
        "source": {"component": "kubelet", "host": "n1"}, "count": 3,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:05:00Z",
    })
}

fn causes(status: &Value) -> Vec<(String, String)> {
    status["details"]["causes"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or_default().to_string(),
                        c["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn both_groups_view_the_same_events(kind: ClusterKind) {
    let eps = tokio::task::spawn_blocking(move || endpoints(kind))
        .await
        .expect("cluster");
    let etcd = Etcd::connect(&eps).expect("etcd client");
    let api = common::start_on(eps, CacheConfig::default()).await;
    let ns = namespace(&api, &format!("evv1-{}", kind.name())).await;
    let (v1, core) = (v1_path(&ns), core_path(&ns));

    // Discovery lists the group and the resource.
    let (code, groups) = api.call("GET", "/apis", None).await;
    assert_eq!(code, 200);
    assert!(
        groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .any(|g| g["name"] == "events.k8s.io"),
        "{groups}"
    );
    let (code, list) = api.call("GET", "/apis/events.k8s.io/v1", None).await;
    assert_eq!(code, 200, "{list}");
    let events = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "events")
        .expect("events in events.k8s.io/v1")
        .clone();
    assert_eq!(events["kind"], "Event");
    assert_eq!(events["namespaced"], true);

    // A watch through events.k8s.io from before any write.
    let (code, listed) = api.call("GET", &v1, None).await;
    assert_eq!(code, 200, "{listed}");
    assert_eq!(listed["kind"], "EventList");
    assert_eq!(listed["apiVersion"], "events.k8s.io/v1");
    let from = listed["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let mut watch = api
        .watch(&format!("{v1}?watch=true&resourceVersion={from}"))
        .await;

    // Created through events.k8s.io, read through core/v1.
    let (code, made) = api
        .call("POST", &v1, Some(v1_event("new", &ns, "web")))
        .await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["apiVersion"], "events.k8s.io/v1");
    assert_eq!(made["note"], "made through events.k8s.io");
    assert_eq!(made["regarding"]["name"], "web");
    assert!(made.get("message").is_none(), "{made}");
    let (code, as_core) = api.call("GET", &format!("{core}/new"), None).await;
    assert_eq!(code, 200, "{as_core}");
    assert_eq!(as_core["apiVersion"], "v1");
    assert_eq!(as_core["message"], "made through events.k8s.io");
    assert_eq!(as_core["involvedObject"]["name"], "web");
    assert_eq!(as_core["reportingComponent"], "example.com/tester");
    assert_eq!(as_core["reportingInstance"], "tester-0");
    assert_eq!(as_core["related"]["kind"], "Node");
    assert_eq!(as_core["eventTime"], "2026-01-01T00:00:00.000001Z");
    for v1_only in ["note", "regarding", "reportingController"] {
        assert!(as_core.get(v1_only).is_none(), "{v1_only}: {as_core}");
    }
    assert_eq!(
        as_core["metadata"]["resourceVersion"], made["metadata"]["resourceVersion"],
        "one object"
    );
    assert_eq!(as_core["metadata"]["uid"], made["metadata"]["uid"]);
    // Stored once, in the core/v1 form, with an expiry lease.
    let key = format!("/registry/events/{ns}/new");
    let stored = etcd.get(&key).await.expect("etcd get").expect("stored");
    let raw: Value = serde_json::from_slice(&stored.value).expect("JSON");
    assert_eq!(raw["apiVersion"], "v1");
    assert_eq!(raw["message"], "made through events.k8s.io");
    assert_ne!(stored.lease, 0, "an events.k8s.io Event expires too");

    // Created through core/v1, read through events.k8s.io.
    let (code, old) = api
        .call("POST", &core, Some(core_event("old", &ns, "web")))
        .await;
    assert_eq!(code, 201, "{old}");
    let (code, as_v1) = api.call("GET", &format!("{v1}/old"), None).await;
    assert_eq!(code, 200, "{as_v1}");
    assert_eq!(as_v1["apiVersion"], "events.k8s.io/v1");
    assert_eq!(as_v1["note"], "made through core/v1");
    assert_eq!(as_v1["regarding"]["name"], "web");
    assert_eq!(as_v1["deprecatedCount"], 3);
    assert_eq!(as_v1["deprecatedSource"]["component"], "kubelet");
    assert_eq!(as_v1["deprecatedFirstTimestamp"], "2026-01-01T00:00:00Z");
    assert_eq!(as_v1["deprecatedLastTimestamp"], "2026-01-01T00:05:00Z");
    for core_only in ["message", "involvedObject", "count", "source"] {
        assert!(as_v1.get(core_only).is_none(), "{core_only}: {as_v1}");
    }
    let old_lease = etcd
        .get(&format!("/registry/events/{ns}/old"))
        .await
        .expect("etcd get")
        .expect("stored")
        .lease;
    assert_eq!(
        old_lease, stored.lease,
        "Events written in one window share a lease, whichever group wrote them"
    );

    // The watch saw both, in its group's form.
    for (name, note) in [
        ("new", "made through events.k8s.io"),
        ("old", "made through core/v1"),
    ] {
        let e = watch.next_event(WAIT).await.expect("a watch event");
        assert_eq!(e["type"], "ADDED", "{e}");
        assert_eq!(e["object"]["metadata"]["name"], name);
        assert_eq!(e["object"]["apiVersion"], "events.k8s.io/v1");
        assert_eq!(e["object"]["note"], note);
    }

    // Lists: each group, each with its own field labels.
    let names = |list: &Value| -> Vec<String> {
        let mut n = common::names(list);
        n.sort();
        n
    };
    let (code, all) = api.call("GET", &v1, None).await;
    assert_eq!(code, 200);
    assert_eq!(names(&all), ["new", "old"]);
    assert!(all["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["apiVersion"] == "events.k8s.io/v1"));
    let (code, all) = api.call("GET", &core, None).await;
    assert_eq!(code, 200);
    assert_eq!(names(&all), ["new", "old"]);
    for (path, selector, want) in [
        (&v1, "regarding.name=web,type=Normal", "new"),
        (&v1, "reportingController=example.com/tester", "new"),
        (&v1, "source=kubelet", "old"),
        (&v1, "regarding.kind=Pod,reason!=Tested", "old"),
        (&core, "involvedObject.name=web,type=Warning", "old"),
        (&core, "reportingComponent=example.com/tester", "new"),
        // A new-style Event's source is its reporting controller.
        (&core, "source=example.com/tester", "new"),
    ] {
        let (code, list) = api
            .call("GET", &format!("{path}?fieldSelector={selector}"), None)
            .await;
        assert_eq!(code, 200, "{selector}: {list}");
        assert_eq!(names(&list), [want], "{path}?fieldSelector={selector}");
    }
    for (path, label) in [(&v1, "involvedObject.name"), (&core, "regarding.name")] {
        let (code, status) = api
            .call("GET", &format!("{path}?fieldSelector={label}=web"), None)
            .await;
        assert_eq!(code, 400, "{status}");
        assert_eq!(
            status["message"],
            format!("field label not supported: {label}")
        );
    }

    // Updates: a series through events.k8s.io shows through core/v1; the
    // rest of an events.k8s.io Event is immutable there.
    let series = json!({"series": {"count": 4, "lastObservedTime": "2026-01-01T00:10:00.000000Z"}});
    let (code, patched) = api.merge_patch(&format!("{v1}/new"), series).await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["series"]["count"], 4);
    let (_, as_core) = api.call("GET", &format!("{core}/new"), None).await;
    assert_eq!(as_core["series"]["count"], 4);
    let (code, status) = api
        .merge_patch(
            &format!("{v1}/new"),
            json!({"note": "changed", "series": {"count": 1}}),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["group"], "events.k8s.io");
    assert_eq!(
        causes(&status),
        [
            (
                "series.count".to_string(),
                "Invalid value: \"\": should be at least 2".to_string()
            ),
            (
                "message".to_string(),
                "Invalid value: \"changed\": field is immutable".to_string()
            ),
        ]
    );
    // Through core/v1 an old-style update may change the message.
    let (code, body) = api
        .merge_patch(
            &format!("{core}/old"),
            json!({"message": "edited", "count": 4}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, as_v1) = api.call("GET", &format!("{v1}/old"), None).await;
    assert_eq!(
        (&as_v1["note"], &as_v1["deprecatedCount"]),
        (&json!("edited"), &json!(4))
    );
    let e = watch.next_event(WAIT).await.expect("MODIFIED");
    assert_eq!(
        (&e["type"], &e["object"]["series"]["count"]),
        (&json!("MODIFIED"), &json!(4))
    );

    // Tables print either group the way `kubectl get events` does.
    let (code, table) = api
        .get_accept(&v1, "application/json;as=Table;v=v1;g=meta.k8s.io")
        .await;
    assert_eq!(code, 200, "{table}");
    let rows = table["rows"].as_array().expect("rows");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["cells"][9] == name)
            .unwrap_or_else(|| panic!("no row {name}: {table}"))["cells"]
            .clone()
    };
    assert_eq!(row("new")[3], "pod/web");
    assert_eq!(row("new")[5], "example.com/tester, tester-0");
    assert_eq!(row("new")[8], 4, "the series' count");
    assert_eq!(row("old")[5], "kubelet, n1");
    assert_eq!(row("old")[8], 4);

    // Deleted through one group, gone from both.
    let (code, body) = api.call("DELETE", &format!("{v1}/old"), None).await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = api.call("GET", &format!("{core}/old"), None).await;
    assert_eq!(code, 404);
    let (code, status) = api.call("GET", &format!("{v1}/old"), None).await;
    assert_eq!(code, 404);
    assert_eq!(status["message"], "events.events.k8s.io \"old\" not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_k8s_io_writes_are_validated_as_kubernetes_does() {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Etcd))
        .await
        .expect("cluster");
    let api = common::start_on(eps, CacheConfig::default()).await;
    let ns = namespace(&api, "evv1-invalid").await;
    let v1 = v1_path(&ns);

    // An old-style Event is refused by events.k8s.io/v1 ...
    let mut old_style = core_event("legacy", &ns, "web");
    old_style["apiVersion"] = json!("events.k8s.io/v1");
    for (core_name, v1_name) in [
        ("involvedObject", "regarding"),
        ("message", "note"),
        ("source", "deprecatedSource"),
        ("count", "deprecatedCount"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
    ] {
        let v = old_style
            .as_object_mut()
            .unwrap()
            .remove(core_name)
            .unwrap();
        old_style[v1_name] = v;
    }
    let (code, status) = api.call("POST", &v1, Some(old_style.clone())).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        causes(&status),
        [
            ("eventTime", "Required value"),
            ("firstTimestamp", "Invalid value: \"\": needs to be unset"),
            ("lastTimestamp", "Invalid value: \"\": needs to be unset"),
            ("count", "Invalid value: \"\": needs to be unset"),
            ("source", "Invalid value: \"\": needs to be unset"),
        ]
        .map(|(f, m)| (f.to_string(), m.to_string()))
    );
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Event.events.k8s.io \"legacy\" is invalid: eventTime: Required value"),
        "{message}"
    );
    // ... and nothing was stored.
    let (code, _) = api.call("GET", &format!("{v1}/legacy"), None).await;
    assert_eq!(code, 404);

    // A new-style Event missing what new-style Events need.
    let mut thin = v1_event("thin", &ns, "web");
    for field in ["reportingController", "reportingInstance", "action"] {
        thin.as_object_mut().unwrap().remove(field);
    }
    thin["type"] = json!("Info");
    thin["series"] = json!({"count": 1});
    let (code, status) = api.call("POST", &v1, Some(thin)).await;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<String> = causes(&status).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "reportingController",
            "reportingController",
            "reportingController",
            "reportingInstance",
            "action",
            "series.count",
            "series.lastObservedTime",
            "type",
        ]
    );

    // A wrong type is a 400 naming the events.k8s.io field.
    let mut wrong = v1_event("wrong", &ns, "web");
    wrong["regarding"] = json!("web");
    let (code, status) = api.call("POST", &v1, Some(wrong)).await;
    assert_eq!(code, 400, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Event in version \"v1\" cannot be handled as a Event: regarding:"),
        "{message}"
    );

    // The same old-style Event is fine through core/v1; a new-style one
    // there still needs its reporter.
    let (code, body) = api
        .call(
            "POST",
            &core_path(&ns),
            Some(core_event("legacy", &ns, "web")),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let mut half_new = core_event("half", &ns, "web");
    half_new["eventTime"] = json!("2026-01-01T00:00:00.000000Z");
    let (code, status) = api.call("POST", &core_path(&ns), Some(half_new)).await;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<String> = causes(&status).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields[..3],
        [
            "reportingController",
            "reportingController",
            "reportingController"
        ]
    );
    assert!(fields.contains(&"action".to_string()), "{fields:?}");
    let (code, status) = api
        .call(
            "POST",
            &core_path("default"),
            Some(core_event("elsewhere", &ns, "web")),
        )
        .await;
    assert_eq!(code, 400, "namespace of the body vs the URL: {status}");
    let mut mismatched = core_event("mismatched", &ns, "web");
    mismatched["involvedObject"]["namespace"] = json!("kube-system");
    let (code, status) = api.call("POST", &core_path(&ns), Some(mismatched)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        [(
            "involvedObject.namespace".to_string(),
            "Invalid value: \"kube-system\": does not match event.namespace".to_string()
        )]
    );
}

/// The official Python client, both ways, and its view of a validation
/// error. Prints one line per check; exits non-zero on a failed one.
const PYTHON_CLIENT: &str = r#"
import datetime, json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
ns = sys.argv[2]
ev1, core = client.EventsV1Api(), client.CoreV1Api()
now = datetime.datetime.now(datetime.timezone.utc)

made = ev1.create_namespaced_event(ns, client.EventsV1Event(
    metadata=client.V1ObjectMeta(name="py-v1"),
    event_time=now, reporting_controller="example.com/py", reporting_instance="py-0",
    action="Probe", reason="Probed", type="Warning", note="from EventsV1Api",
    regarding=client.V1ObjectReference(api_version="v1", kind="Pod", namespace=ns, name="web")))
seen = core.read_namespaced_event("py-v1", ns)
print("core-read", seen.message, seen.involved_object.name, seen.reporting_component,
      seen.metadata.uid == made.metadata.uid)

core.create_namespaced_event(ns, client.CoreV1Event(
    metadata=client.V1ObjectMeta(name="py-core"),
    involved_object=client.V1ObjectReference(api_version="v1", kind="Pod", namespace=ns, name="web"),
    event_time=now, reporting_component="py-core", reporting_instance="py-1", action="Probe",
    reason="Probed", type="Normal", message="from CoreV1Api", count=2,
    source=client.V1EventSource(component="py-core", host="h1"),
    first_timestamp=now, last_timestamp=now))
back = ev1.read_namespaced_event("py-core", ns)
print("v1-read", back.note, back.regarding.name, back.reporting_controller,
      back.deprecated_count, back.deprecated_source.component)

ev1.patch_namespaced_event("py-v1", ns, {"series": {"count": 2, "lastObservedTime": now.isoformat()}})
print("series", core.read_namespaced_event("py-v1", ns).series.count)

listed = ev1.list_namespaced_event(ns, field_selector="regarding.name=web,type=Warning")
print("v1-list", ",".join(sorted(e.metadata.name for e in listed.items)))
listed = core.list_namespaced_event(ns, field_selector="involvedObject.name=web")
print("core-list", ",".join(sorted(e.metadata.name for e in listed.items)))

try:
    ev1.create_namespaced_event(ns, {"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "py-bad"}, "reason": "Probed", "type": "Normal"})
    print("invalid-accepted")
except ApiException as e:
    status = json.loads(e.body)
    print("invalid", e.status, status["reason"],
          ",".join(c["field"] for c in status["details"]["causes"]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_the_python_client_see_both_groups() {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Ballast))
        .await
        .expect("cluster");
    let api = common::start_on(eps, CacheConfig::default()).await;
    let ns = namespace(&api, "evv1-clients").await;
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);

    // A repeated Event (a series of 4) through events.k8s.io, a counted
    // old-style one through core/v1.
    let mut repeated = v1_event("repeated", &ns, "web");
    repeated["series"] = json!({"count": 4, "lastObservedTime": "2026-01-01T00:10:00.000000Z"});
    let (code, body) = api.call("POST", &v1_path(&ns), Some(repeated)).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = api
        .call(
            "POST",
            &core_path(&ns),
            Some(core_event("counted", &ns, "db")),
        )
        .await;
    assert_eq!(code, 201, "{body}");

    let path = dir.path().to_path_buf();
    let ns2 = ns.clone();
    tokio::task::spawn_blocking(move || kubectl_checks(&path, &ns2))
        .await
        .expect("kubectl checks");

    let Some(lines) = python_client(PYTHON_CLIENT, &dir.path().join("kubeconfig"), &ns).await
    else {
        return;
    };
    assert_eq!(
        lines,
        [
            "core-read from EventsV1Api web example.com/py True",
            "v1-read from CoreV1Api web py-core 2 py-core",
            "series 2",
            // `repeated` is Normal, `counted` about another pod.
            "v1-list py-v1",
            "core-list py-core,py-v1,repeated",
            // Old-style (no eventTime): its namespace, then what
            // events.k8s.io/v1 adds.
            "invalid 422 Invalid involvedObject.namespace,eventTime",
        ]
    );
}

fn kubectl_checks(dir: &Path, ns: &str) {
    if !Path::new(KUBECTL).exists() {
        println!("SKIPPED the kubectl half: {KUBECTL} is not installed");
        return;
    }
    let resources = kubectl_ok(dir, &["api-resources", "--api-group=events.k8s.io"]);
    assert!(resources.contains("events.k8s.io/v1"), "{resources}");

    // The events.k8s.io view, explicitly, as a Table.
    let got = kubectl_ok(dir, &["get", "events.v1.events.k8s.io", "-n", ns]);
    let header: Vec<&str> = got
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert!(
        got.contains("pod/web") && got.contains("made through events.k8s.io"),
        "{got}"
    );
    assert!(
        got.contains("pod/db") && got.contains("made through core/v1"),
        "{got}"
    );
    let json: Value = serde_json::from_str(&kubectl_ok(
        dir,
        &["get", "events.events.k8s.io", "-n", ns, "-o", "json"],
    ))
    .expect("JSON");
    let items = json["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{json}");
    assert!(items.iter().all(|i| i["apiVersion"] == "events.k8s.io/v1"));
    let counted = items
        .iter()
        .find(|i| i["metadata"]["name"] == "counted")
        .expect("counted");
    assert_eq!(counted["note"], "made through core/v1");
    assert_eq!(counted["deprecatedCount"], 3);

    // `kubectl get events -o wide` (core/v1): the Count column, the
    // series' count for the repeated one.
    let wide = kubectl_ok(dir, &["get", "events", "-n", ns, "-o", "wide"]);
    let header = wide.lines().next().unwrap_or_default();
    assert!(
        header.contains("COUNT") && header.contains("SOURCE"),
        "{wide}"
    );
    let line = |name: &str| {
        wide.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name} in {wide}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let repeated = line("made through events.k8s.io");
    assert!(repeated.contains(&"4".to_string()), "{repeated:?}");
    assert!(
        repeated.contains(&"example.com/tester,".to_string()),
        "{repeated:?}"
    );
    let counted = line("made through core/v1");
    assert!(counted.contains(&"3".to_string()), "{counted:?}");

    // `kubectl events`: the repetition as `(xN over …)`, and --for.
    let events = kubectl_ok(dir, &["events", "-n", ns]);
    let repeated = events
        .lines()
        .find(|l| l.contains("made through events.k8s.io"))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(repeated.contains("(x4 over"), "{repeated}");
    let counted = events
        .lines()
        .find(|l| l.contains("made through core/v1"))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(counted.contains("(x3 over"), "{counted}");
    let for_web = kubectl_ok(dir, &["events", "-n", ns, "--for", "pod/web"]);
    assert!(for_web.contains("made through events.k8s.io"), "{for_web}");
    assert!(!for_web.contains("made through core/v1"), "{for_web}");
}
