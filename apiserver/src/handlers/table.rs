//! Server-side printing: `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`
//! answers a `meta.k8s.io/v1 Table`, the columns `kubectl get` shows
//! (priority-1 columns only with `-o wide`).

use serde_json::{json, Value};

use super::meta::{parse_rfc3339, unix_now};
use crate::resources::Resource;
use crate::served::Column;

/// Whether the client asked for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// (name, type, priority) of each column.
fn columns(r: &Resource) -> &'static [(&'static str, &'static str, u8)] {
    match r.name {
        "pods" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        "namespaces" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        "configmaps" => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "secrets" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "serviceaccounts" => &[
            ("Name", "string", 0),
            ("Secrets", "integer", 0),
            ("Age", "string", 0),
        ],
        "services" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "deployments" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "replicasets" => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "controllerrevisions" => super::controllerrevisions::COLUMNS,
        "daemonsets" => super::daemonsets::COLUMNS,
        "statefulsets" => super::statefulsets::COLUMNS,
        "poddisruptionbudgets" => super::pdbs::COLUMNS,
        "cronjobs" => super::cronjobs::COLUMNS,
        "endpointslices" => &[
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "jobs" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "nodes" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        "events" => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        "leases" => &[
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        "roles" | "clusterroles" | "customresourcedefinitions" => {
            &[("Name", "string", 0), ("Created At", "date", 0)]
        }
        "rolebindings" | "clusterrolebindings" => &[
            ("Name", "string", 0),
            ("Role", "string", 0),
            ("Age", "string", 0),
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

fn or_none(v: &Value) -> Value {
    match v.as_str() {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!("<none>"),
    }
}

fn joined(items: Option<&Vec<Value>>, f: impl Fn(&Value) -> String) -> String {
    items
        .map(|a| a.iter().map(f).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn selector(map: &Value) -> String {
    map.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn cells(r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let name = o["metadata"]["name"].clone();
    let age = json!(parse_rfc3339(
        o["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
    )
    .map(|t| human_duration(now - t))
    .unwrap_or_else(|| "<unknown>".into()));
    let (spec, status) = (&o["spec"], &o["status"]);
    match r.name {
        "pods" => {
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses = status["containerStatuses"].as_array();
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
            });
            let phase = if o["metadata"]["deletionTimestamp"].is_string() {
                json!("Terminating")
            } else {
                status
                    .get("reason")
                    .cloned()
                    .unwrap_or_else(|| or_none(&status["phase"]))
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                phase,
                json!(restarts.to_string()),
                age,
                or_none(&status["podIP"]),
                or_none(&spec["nodeName"]),
            ]
        }
        "namespaces" => vec![name, or_none(&status["phase"]), age],
        "configmaps" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), age]
        }
        "secrets" => vec![
            name,
            json!(o["type"].as_str().unwrap_or_default()),
            json!(super::secrets::data_count(o)),
            age,
        ],
        "serviceaccounts" => {
            let n = o["secrets"].as_array().map_or(0, Vec::len);
            vec![name, json!(n), age]
        }
        "services" => {
            let ports = joined(spec["ports"].as_array(), |p| {
                format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
            });
            let ports = if ports.is_empty() {
                "<none>".into()
            } else {
                ports
            };
            vec![
                name,
                or_none(&spec["type"]),
                or_none(&spec["clusterIP"]),
                json!("<none>"),
                json!(ports),
                age,
                json!(selector(&spec["selector"])),
            ]
        }
        "deployments" => {
            let containers = spec["template"]["spec"]["containers"].as_array();
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    status["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(0)
                )),
                json!(status["updatedReplicas"].as_i64().unwrap_or(0)),
                json!(status["availableReplicas"].as_i64().unwrap_or(0)),
                age,
                json!(joined(containers, |c| c["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())),
                json!(joined(containers, |c| c["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())),
                json!(selector(&spec["selector"]["matchLabels"])),
            ]
        }
        "replicasets" => {
            let containers = spec["template"]["spec"]["containers"].as_array();
            let n = |v: &Value| json!(v.as_i64().unwrap_or(0));
            vec![
                name,
                n(&spec["replicas"]),
                n(&status["replicas"]),
                n(&status["readyReplicas"]),
                age,
                json!(joined(containers, |c| c["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())),
                json!(joined(containers, |c| c["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())),
                json!(selector(&spec["selector"]["matchLabels"])),
            ]
        }
        "controllerrevisions" => super::controllerrevisions::cells(o, name, age),
        "daemonsets" => super::daemonsets::cells(o, name, age),
        "statefulsets" => super::statefulsets::cells(o, name, age),
        "poddisruptionbudgets" => super::pdbs::cells(o, name, age),
        "cronjobs" => super::cronjobs::cells(o, now),
        "endpointslices" => {
            let [ty, ports, endpoints] = super::endpointslices::cells(o);
            vec![name, ty, ports, endpoints, age]
        }
        "jobs" => {
            let containers = spec["template"]["spec"]["containers"].as_array();
            let succeeded = status["succeeded"].as_i64().unwrap_or(0);
            let completions = match spec["completions"].as_i64() {
                Some(c) => format!("{succeeded}/{c}"),
                None => match spec["parallelism"].as_i64().unwrap_or(0) {
                    p if p > 1 => format!("{succeeded}/1 of {p}"),
                    _ => format!("{succeeded}/1"),
                },
            };
            let time = |f: &str| parse_rfc3339(status[f].as_str().unwrap_or_default());
            let duration = match (time("startTime"), time("completionTime")) {
                (None, _) => String::new(),
                (Some(start), None) => human_duration(now - start),
                (Some(start), Some(end)) => human_duration(end - start),
            };
            let has = |t: &str| {
                status["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
            };
            // kubectl's order of precedence.
            let state = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else if has("Suspended") {
                "Suspended"
            } else if has("FailureTarget") {
                "FailureTarget"
            } else if has("SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else {
                "Running"
            };
            vec![
                name,
                json!(state),
                json!(completions),
                json!(duration),
                age,
                json!(joined(containers, |c| c["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())),
                json!(joined(containers, |c| c["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())),
                json!(selector(&spec["selector"]["matchLabels"])),
            ]
        }
        "nodes" => {
            let ready = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            let mut state = ready.to_string();
            if spec["unschedulable"] == true {
                state += ",SchedulingDisabled";
            }
            let mut roles: Vec<&str> = o["metadata"]["labels"]
                .as_object()
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .filter(|r| !r.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            roles.sort_unstable();
            let address = |t: &str| {
                status["addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|a| a["type"] == t))
                    .map(|a| or_none(&a["address"]))
                    .unwrap_or_else(|| json!("<none>"))
            };
            let info = &status["nodeInfo"];
            vec![
                name,
                json!(state),
                json!(if roles.is_empty() {
                    "<none>".to_string()
                } else {
                    roles.join(",")
                }),
                age,
                json!(info["kubeletVersion"].as_str().unwrap_or_default()),
                address("InternalIP"),
                address("ExternalIP"),
                or_unknown(&info["osImage"]),
                or_unknown(&info["kernelVersion"]),
                or_unknown(&info["containerRuntimeVersion"]),
            ]
        }
        "events" => event_cells(r, o, now),
        "leases" => vec![name, or_none(&spec["holderIdentity"]), age],
        "roles" | "clusterroles" | "customresourcedefinitions" => {
            vec![name, o["metadata"]["creationTimestamp"].clone()]
        }
        "rolebindings" | "clusterrolebindings" => {
            let role = format!(
                "{}/{}",
                o["roleRef"]["kind"].as_str().unwrap_or_default(),
                o["roleRef"]["name"].as_str().unwrap_or_default()
            );
            let subjects = |kind: &str| {
                let names: Vec<String> = o["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["kind"] == kind)
                    .map(|s| match s["namespace"].as_str() {
                        Some(ns) if kind == "ServiceAccount" => {
                            format!("{ns}/{}", s["name"].as_str().unwrap_or_default())
                        }
                        _ => s["name"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect();
                json!(names.join(", "))
            };
            vec![
                name,
                json!(role),
                age,
                subjects("User"),
                subjects("Group"),
                subjects("ServiceAccount"),
            ]
        }
        _ => vec![name, age],
    }
}

/// An Event's row as Kubernetes' `printEvent` prints it (through either
/// group: an events.k8s.io/v1 Event is printed as the core/v1 Event it
/// is): a series' count and last time win over `count` and
/// `lastTimestamp`; `eventTime` stands in for a missing `firstTimestamp`,
/// and the reporting controller and instance for a missing source.
fn event_cells(r: &Resource, o: &Value, now: i64) -> Vec<Value> {
    let converted;
    let o = if crate::conversion::is_events_v1(r) {
        let mut core = o.clone();
        crate::conversion::events_v1_to_core(&mut core);
        converted = core;
        &converted
    } else {
        o
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let ago = |v: &Value| {
        v.as_str()
            .and_then(parse_rfc3339)
            .map(|t| human_duration(now - t))
    };
    let unknown = || "<unknown>".to_string();
    let first = ago(&o["firstTimestamp"])
        .or_else(|| ago(&o["eventTime"]))
        .unwrap_or_else(unknown);
    let mut last = ago(&o["lastTimestamp"]).unwrap_or_else(|| first.clone());
    let series = &o["series"];
    let count = if series.is_object() {
        last = ago(&series["lastObservedTime"]).unwrap_or_else(unknown);
        series["count"].as_i64().unwrap_or(0)
    } else {
        match o["count"].as_i64().unwrap_or(0) {
            // Singleton events of the new API have no count.
            0 => 1,
            n => n,
        }
    };
    let involved = &o["involvedObject"];
    let kind = text(&involved["kind"]).to_lowercase();
    let target = match involved["name"].as_str() {
        Some(n) if !n.is_empty() => format!("{kind}/{n}"),
        _ => kind,
    };
    let or = |a: &Value, b: &Value| match a.as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => text(b),
    };
    let component = or(&o["source"]["component"], &o["reportingComponent"]);
    let instance = or(&o["source"]["host"], &o["reportingInstance"]);
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(text(&o["type"])),
        json!(text(&o["reason"])),
        json!(target),
        json!(text(&involved["fieldPath"])),
        json!(source),
        json!(text(&o["message"]).trim()),
        json!(first),
        json!(count),
        o["metadata"]["name"].clone(),
    ]
}

fn or_unknown(v: &Value) -> Value {
    match v.as_str() {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!("<unknown>"),
    }
}

/// The Table of `objects`, with list metadata `list_meta`.
pub fn table(r: &Resource, objects: &[Value], list_meta: Value) -> Value {
    if let Some(c) = crate::served::custom(r) {
        return custom_table(&c.columns, objects, list_meta);
    }
    let now = unix_now();
    let column_definitions: Vec<Value> = columns(r)
        .iter()
        .map(|(name, ty, priority)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            json!({
                "cells": cells(r, o, now),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

/// A custom resource's Table: `Name`, then its CRD version's
/// `additionalPrinterColumns`, or `Age` when it declares none (kube's
/// default). A `date` column shows the time since its value; a path that
/// finds nothing leaves its cell empty (`<none>` in kubectl).
fn custom_table(declared: &[Column], objects: &[Value], list_meta: Value) -> Value {
    let age = [Column {
        name: "Age".into(),
        kind: "date".into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }];
    let columns = if declared.is_empty() {
        &age[..]
    } else {
        declared
    };
    let mut definitions = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    definitions.extend(columns.iter().map(|c| {
        json!({"name": c.name, "type": c.kind, "format": c.format,
            "description": c.description, "priority": c.priority})
    }));
    let now = unix_now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            cells.extend(columns.iter().map(|c| custom_cell(c, o, now)));
            json!({
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn custom_cell(c: &Column, o: &Value, now: i64) -> Value {
    let Some(v) = json_path(o, &c.json_path) else {
        return Value::Null;
    };
    match (c.kind.as_str(), v) {
        ("date", Value::String(t)) => match parse_rfc3339(t) {
            Some(t) => json!(human_duration(now - t)),
            None => json!(t),
        },
        (_, Value::Object(_) | Value::Array(_)) => json!(v.to_string()),
        _ => v.clone(),
    }
}

/// The value at a simple JSONPath (`.spec.x`, `{.status.items[0].name}`),
/// the subset printer columns use.
pub fn json_path<'a>(o: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let mut at = o;
    for segment in path.strip_prefix('.')?.split('.') {
        let (field, indexes) = match segment.find('[') {
            Some(i) => segment.split_at(i),
            None => (segment, ""),
        };
        if !field.is_empty() {
            at = at.get(field)?;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let i: usize = index.strip_suffix(']')?.parse().ok()?;
            at = at.get(i)?;
        }
    }
    Some(at)
}

/// Kubernetes' `HumanDuration`: `45s`, `5m3s`, `42m`, `3h12m`, `20h`, `3d4h`, `400d`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => {
            if s % 60 == 0 {
                format!("{m}m")
            } else {
                format!("{m}m{}s", s % 60)
            }
        }
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => {
            if m % 60 == 0 {
                format!("{h}h")
            } else {
                format!("{h}h{}m", m % 60)
            }
        }
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 => {
            if h % 24 == 0 {
                format!("{d}d")
            } else {
                format!("{d}d{}h", h % 24)
            }
        }
        _ if d < 365 * 2 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(303), "5m3s");
        assert_eq!(human_duration(42 * 60), "42m");
        assert_eq!(human_duration(3 * 3600 + 12 * 60), "3h12m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(76 * 3600), "3d4h");
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }

    #[test]
    fn pod_rows() {
        let pods = Resource::find("", "pods").unwrap();
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let t = table(pods, &[pod], json!({}));
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
    }

    #[test]
    fn event_rows_as_kubernetes_prints_them() {
        let core = Resource::find("", "events").unwrap();
        let v1 = Resource::find("events.k8s.io", "events").unwrap();
        // Ages whose printed form a second more or less does not change.
        let ago = |mins: i64| super::super::meta::rfc3339(unix_now() - mins * 60 - 5);
        // Counted the old way, then with a series (whose count wins).
        let counted = json!({"metadata": {"name": "p.1"}, "type": "Warning", "reason": "BackOff",
            "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{c}"},
            "source": {"component": "kubelet", "host": "n1"}, "message": "back-off\n",
            "firstTimestamp": ago(30), "lastTimestamp": ago(20), "count": 4});
        let t = table(core, std::slice::from_ref(&counted), json!({}));
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "20m",
                "Warning",
                "BackOff",
                "pod/p",
                "spec.containers{c}",
                "kubelet, n1",
                "back-off",
                "30m",
                4,
                "p.1"
            ])
        );
        let mut series = counted.clone();
        series["series"] = json!({"count": 5, "lastObservedTime": ago(10)});
        let t = table(core, &[series], json!({}));
        assert_eq!(t["rows"][0]["cells"][0], "10m");
        assert_eq!(t["rows"][0]["cells"][8], 5);
        // A new-style singleton through events.k8s.io/v1: eventTime and
        // the reporting controller and instance stand in.
        let single = json!({"apiVersion": "events.k8s.io/v1", "metadata": {"name": "n.1"},
            "eventTime": ago(42), "reportingController": "ctl", "reportingInstance": "ctl-0",
            "type": "Normal", "reason": "Synced", "regarding": {"kind": "Node"}, "note": "ok"});
        let t = table(v1, &[single], json!({}));
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "42m",
                "Normal",
                "Synced",
                "node",
                "",
                "ctl, ctl-0",
                "ok",
                "42m",
                1,
                "n.1"
            ])
        );
    }

    #[test]
    fn job_rows() {
        let jobs = Resource::find("batch", "jobs").unwrap();
        let done = json!({"metadata": {"name": "pi", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"completions": 5, "parallelism": 2,
                     "template": {"spec": {"containers": [{"name": "pi", "image": "busybox"}]}}},
            "status": {"succeeded": 5, "startTime": "2020-01-01T00:00:00Z",
                       "completionTime": "2020-01-01T00:01:03Z",
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                      {"type": "Complete", "status": "True"}]}});
        let queue = json!({"metadata": {"name": "wq"}, "spec": {"parallelism": 3},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        let t = table(jobs, &[done, queue], json!({}));
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            &names[..5],
            ["Name", "Status", "Completions", "Duration", "Age"]
        );
        let row = &t["rows"][0]["cells"];
        assert_eq!(row[1], "Complete");
        assert_eq!(row[2], "5/5");
        assert_eq!(row[3], "63s");
        assert_eq!(row[6], "busybox");
        let row = &t["rows"][1]["cells"];
        assert_eq!(row[1], "Suspended");
        assert_eq!(row[2], "0/1 of 3");
        assert_eq!(row[3], "");
    }
}
