//! Decisions that depend on the pods already placed — inter-pod affinity
//! and anti-affinity, topology spread — and on preferred node affinity,
//! checked against kube-scheduler's outcomes and messages. Each test
//! places pods on [`NodeInfo`]s as the cache assumes them and asks the
//! [`Decider`] where the next pod goes.

use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use super::affinity::Namespaces;
use super::algorithm::{Cluster, Decider, Diagnosis};
use super::node_info::{NodeInfo, NodeSpec};
use super::pod_info::PodInfo;
use super::spread::{LABEL_HOSTNAME, LABEL_ZONE};

/// A Ready node of 4 cpu, 8Gi and 110 pods, labelled `labels` and its
/// hostname.
fn node(name: &str, mut labels: Value) -> NodeInfo {
    labels[LABEL_HOSTNAME] = json!(name);
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .expect("node");
    NodeInfo::new(name, Some(NodeSpec::new(&n)))
}

fn zone(name: &str, zone: &str) -> NodeInfo {
    node(name, json!({ "topology.kubernetes.io/zone": zone }))
}

/// Pod `ns/name` labelled `labels`, one container asking 100m and 64Mi;
/// `spec` is merged into its spec.
fn pod(ns: &str, name: &str, labels: Value, spec: Value) -> PodInfo {
    let mut full = json!({"containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]});
    if let (Value::Object(full), Value::Object(extra)) = (&mut full, spec) {
        full.extend(extra);
    }
    PodInfo::new(
        &serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}/{name}"),
                         "labels": labels},
            "spec": full
        }))
        .expect("pod"),
    )
}

/// A plain pod labelled `app=<app>` placed on `node`.
fn place(node: &mut NodeInfo, ns: &str, app: &str) {
    let name = format!("{app}-{}", node.pods);
    node.add(&pod(ns, &name, json!({ "app": app }), json!({})).usage);
}

fn cluster<'a>(nodes: &'a [NodeInfo], namespaces: &'a Namespaces) -> Cluster<'a> {
    Cluster {
        nodes,
        namespaces,
        affinity_pods: nodes.iter().any(|n| !n.affinity_pods.is_empty()),
        zoned: nodes.iter().any(|n| {
            n.spec
                .as_ref()
                .is_some_and(|s| s.labels.contains_key(LABEL_ZONE))
        }),
    }
}

/// Decides for `pod` and places it on the chosen node, as the cache
/// assumes a pod it is binding.
fn schedule(
    d: &mut Decider,
    pod: &PodInfo,
    nodes: &mut [NodeInfo],
    namespaces: &Namespaces,
) -> Result<usize, Diagnosis> {
    let i = d.decide(pod, &cluster(nodes, namespaces))?;
    nodes[i].add(&pod.usage);
    Ok(i)
}

/// A pod (anti-)affinity term selecting `app=<app>` over `key`; `extra`
/// is merged into it.
fn term(app: &str, key: &str, extra: Value) -> Value {
    let mut t = json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key});
    if let (Value::Object(t), Value::Object(extra)) = (&mut t, extra) {
        t.extend(extra);
    }
    t
}

fn required(kind: &str, terms: Value) -> Value {
    json!({"affinity": {kind: {"requiredDuringSchedulingIgnoredDuringExecution": terms}}})
}

/// A spread constraint over `key` counting `selector`.
fn spread(key: &str, when: &str, selector: Value, extra: Value) -> Value {
    let mut c = json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when});
    if !selector.is_null() {
        c["labelSelector"] = selector;
    }
    if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
        c.extend(extra);
    }
    json!({ "topologySpreadConstraints": [c] })
}

fn web() -> Value {
    json!({"matchLabels": {"app": "web"}})
}

#[test]
fn hostname_anti_affinity_leaves_a_fourth_replica_unschedulable() {
    let ns = Namespaces::new();
    let mut nodes: Vec<NodeInfo> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|n| node(n, json!({})))
        .collect();
    let anti = required(
        "podAntiAffinity",
        json!([term("web", LABEL_HOSTNAME, json!({}))]),
    );
    let replica = |i: usize| {
        pod(
            "ns",
            &format!("web-{i}"),
            json!({"app": "web"}),
            anti.clone(),
        )
    };
    let mut d = Decider::new(1);
    let mut used: Vec<usize> = (0..3)
        .map(|i| schedule(&mut d, &replica(i), &mut nodes, &ns).expect("fits"))
        .collect();
    used.sort_unstable();
    assert_eq!(used, [0, 1, 2], "one replica per node");
    let e = schedule(&mut d, &replica(3), &mut nodes, &ns).expect_err("no node left");
    assert_eq!(
        e.message(),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
    // The terms select pods of their own namespace only: the same replica
    // elsewhere fits, and so does another app here.
    let elsewhere = pod("other", "web-0", json!({"app": "web"}), anti.clone());
    assert!(d.decide(&elsewhere, &cluster(&nodes, &ns)).is_ok());
    let db = pod("ns", "db", json!({"app": "db"}), json!({}));
    assert!(d.decide(&db, &cluster(&nodes, &ns)).is_ok());
}

#[test]
fn required_affinity_co_locates_by_topology() {
    let ns = Namespaces::new();
    let mut nodes = vec![zone("a1", "a"), zone("a2", "a"), zone("b1", "b")];
    let web = pod(
        "ns",
        "web",
        json!({"app": "web"}),
        required("podAffinity", json!([term("db", LABEL_ZONE, json!({}))])),
    );
    let mut d = Decider::new(2);
    assert_eq!(
        d.decide(&web, &cluster(&nodes, &ns))
            .expect_err("no db pod yet")
            .message(),
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules."
    );
    place(&mut nodes[2], "ns", "db");
    for _ in 0..20 {
        assert_eq!(d.decide(&web, &cluster(&nodes, &ns)), Ok(2));
    }
    // The pair is the zone, not the node: a db pod on a2 admits a1 too.
    let mut nodes = vec![zone("a1", "a"), zone("a2", "a"), zone("b1", "b")];
    place(&mut nodes[1], "ns", "db");
    for _ in 0..20 {
        let i = d.decide(&web, &cluster(&nodes, &ns)).expect("zone a");
        assert_ne!(i, 2, "zone b has no db pod");
    }
    // The first pod of a group with affinity to itself goes anywhere; the
    // rest follow it.
    let mut nodes = vec![zone("a1", "a"), zone("b1", "b")];
    let member = |i: usize| {
        pod(
            "ns",
            &format!("cache-{i}"),
            json!({"app": "cache"}),
            required("podAffinity", json!([term("cache", LABEL_ZONE, json!({}))])),
        )
    };
    let first = schedule(&mut d, &member(0), &mut nodes, &ns).expect("the first fits");
    for i in 1..6 {
        assert_eq!(schedule(&mut d, &member(i), &mut nodes, &ns), Ok(first));
    }
}

#[test]
fn an_existing_pods_anti_affinity_repels_the_incoming_pod() {
    let ns = Namespaces::new();
    let mut nodes = vec![node("n1", json!({})), node("n2", json!({}))];
    let guard = pod(
        "ns",
        "guard",
        json!({"app": "guard"}),
        required(
            "podAntiAffinity",
            json!([term("web", LABEL_HOSTNAME, json!({}))]),
        ),
    );
    nodes[0].add(&guard.usage);
    // The incoming pod has no affinity of its own.
    let web = pod("ns", "web", json!({"app": "web"}), json!({}));
    let mut d = Decider::new(3);
    for _ in 0..20 {
        assert_eq!(d.decide(&web, &cluster(&nodes, &ns)), Ok(1));
    }
    assert_eq!(
        d.decide(&web, &cluster(&nodes[..1], &ns))
            .expect_err("repelled")
            .message(),
        "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules."
    );
    let db = pod("ns", "db", json!({"app": "db"}), json!({}));
    assert_eq!(d.decide(&db, &cluster(&nodes[..1], &ns)), Ok(0));
}

#[test]
fn zone_spread_with_max_skew_one_filters_the_fuller_zones() {
    let ns = Namespaces::new();
    let mut nodes = vec![
        zone("a1", "a"),
        zone("b1", "b"),
        zone("c1", "c"),
        node("x1", json!({})),
    ];
    place(&mut nodes[0], "ns", "web");
    place(&mut nodes[0], "ns", "web");
    place(&mut nodes[1], "ns", "web");
    // Pods of other namespaces and labels do not count.
    place(&mut nodes[2], "other", "web");
    place(&mut nodes[2], "ns", "db");
    let p = pod(
        "ns",
        "web",
        json!({"app": "web"}),
        spread(LABEL_ZONE, "DoNotSchedule", web(), json!({})),
    );
    let mut d = Decider::new(4);
    // a: 2 + 1 − 0 = 3 > 1, b: 2 > 1, c: 1; x1 has no zone.
    for _ in 0..20 {
        assert_eq!(d.decide(&p, &cluster(&nodes, &ns)), Ok(2));
    }
    let hog = pod(
        "ns",
        "hog",
        json!({}),
        json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "4"}}}]}),
    );
    nodes[2].add(&hog.usage);
    assert_eq!(
        d.decide(&p, &cluster(&nodes, &ns))
            .expect_err("c1 is full")
            .message(),
        "0/4 nodes are available: 1 Insufficient cpu, \
         1 node(s) didn't match pod topology spread constraints (missing required label), \
         2 node(s) didn't match pod topology spread constraints."
    );
}

#[test]
fn an_empty_label_selector_counts_every_pod_and_a_missing_one_none() {
    let ns = Namespaces::new();
    let mut nodes = vec![zone("a1", "a"), zone("b1", "b")];
    place(&mut nodes[0], "ns", "db");
    place(&mut nodes[0], "ns", "cache");
    // b1 is busier, but with pods of another namespace: least allocated
    // prefers a1, spread does not count them.
    for _ in 0..4 {
        place(&mut nodes[1], "other", "db");
    }
    let mut d = Decider::new(5);
    let everything = pod(
        "ns",
        "p",
        json!({"app": "web"}),
        spread(LABEL_ZONE, "DoNotSchedule", json!({}), json!({})),
    );
    for _ in 0..10 {
        assert_eq!(d.decide(&everything, &cluster(&nodes, &ns)), Ok(1));
    }
    let nothing = pod(
        "ns",
        "p",
        json!({"app": "web"}),
        spread(LABEL_ZONE, "DoNotSchedule", Value::Null, json!({})),
    );
    for _ in 0..10 {
        assert_eq!(d.decide(&nothing, &cluster(&nodes, &ns)), Ok(0));
    }
}

#[test]
fn schedule_anyway_prefers_the_emptier_domain() {
    let ns = Namespaces::new();
    let mut nodes = vec![zone("a1", "a"), zone("b1", "b")];
    place(&mut nodes[0], "ns", "web");
    place(&mut nodes[0], "ns", "web");
    for _ in 0..3 {
        place(&mut nodes[1], "ns", "other");
    }
    let mut d = Decider::new(6);
    // Without the constraint, least allocated picks a1 (fewer pods).
    let plain = pod("ns", "web", json!({"app": "web"}), json!({}));
    assert_eq!(d.decide(&plain, &cluster(&nodes, &ns)), Ok(0));
    let soft = pod(
        "ns",
        "web",
        json!({"app": "web"}),
        spread(LABEL_ZONE, "ScheduleAnyway", web(), json!({})),
    );
    for _ in 0..20 {
        assert_eq!(d.decide(&soft, &cluster(&nodes, &ns)), Ok(1));
    }
    // A score, not a filter: with zone b gone the pod still fits.
    assert_eq!(d.decide(&soft, &cluster(&nodes[..1], &ns)), Ok(0));
}

#[test]
fn min_domains_counts_missing_domains_as_empty() {
    let ns = Namespaces::new();
    let mut nodes = vec![zone("a1", "a"), zone("b1", "b")];
    place(&mut nodes[0], "ns", "web");
    place(&mut nodes[1], "ns", "web");
    let with_min = |min: Value| {
        pod(
            "ns",
            "web",
            json!({"app": "web"}),
            spread(LABEL_ZONE, "DoNotSchedule", web(), min),
        )
    };
    let mut d = Decider::new(7);
    // Two domains of one pod each: skew 1 anywhere.
    assert!(d
        .decide(&with_min(json!({})), &cluster(&nodes, &ns))
        .is_ok());
    // Fewer domains than minDomains: the minimum counts as 0.
    let three = with_min(json!({"minDomains": 3}));
    assert_eq!(
        d.decide(&three, &cluster(&nodes, &ns))
            .expect_err("too few zones")
            .message(),
        "0/2 nodes are available: 2 node(s) didn't match pod topology spread constraints."
    );
    nodes.push(zone("c1", "c"));
    for _ in 0..10 {
        assert_eq!(d.decide(&three, &cluster(&nodes, &ns)), Ok(2));
    }
}

#[test]
fn preferred_node_affinity_breaks_a_tie() {
    let ns = Namespaces::new();
    let nodes = vec![
        node("n1", json!({"disk": "hdd"})),
        node("n2", json!({"disk": "ssd"})),
        node("n3", json!({"disk": "ssd", "gpu": "1"})),
    ];
    let preferring = |terms: Value| {
        pod(
            "ns",
            "p",
            json!({}),
            json!({"affinity": {"nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": terms}}}),
        )
    };
    let pref = |weight: i32, key: &str, op: &str, values: Value| {
        json!({"weight": weight, "preference": {"matchExpressions": [
            {"key": key, "operator": op, "values": values}]}})
    };
    let mut d = Decider::new(8);
    let mut seen = [0u32; 3];
    let plain = pod("ns", "p", json!({}), json!({}));
    for _ in 0..60 {
        seen[d.decide(&plain, &cluster(&nodes, &ns)).expect("fits")] += 1;
    }
    assert!(seen.iter().all(|n| *n > 0), "equal nodes share: {seen:?}");
    let ssd = preferring(json!([pref(10, "disk", "In", json!(["ssd"]))]));
    let mut seen = [0u32; 3];
    for _ in 0..60 {
        seen[d.decide(&ssd, &cluster(&nodes, &ns)).expect("fits")] += 1;
    }
    assert_eq!(seen[0], 0, "{seen:?}");
    assert!(
        seen[1] > 0 && seen[2] > 0,
        "a tie between ssd nodes: {seen:?}"
    );
    let ssd_gpu = preferring(json!([
        pref(10, "disk", "In", json!(["ssd"])),
        pref(5, "gpu", "Exists", json!([]))
    ]));
    let hdd = preferring(json!([pref(1, "disk", "NotIn", json!(["ssd"]))]));
    for _ in 0..20 {
        assert_eq!(d.decide(&ssd_gpu, &cluster(&nodes, &ns)), Ok(2));
        assert_eq!(d.decide(&hdd, &cluster(&nodes, &ns)), Ok(0));
    }
}

#[test]
fn namespace_selectors_pick_terms_namespaces_by_label() {
    let namespaces: Namespaces = [("team-a", "a"), ("team-b", "b")]
        .into_iter()
        .map(|(ns, team)| {
            (
                ns.to_string(),
                [("team".to_string(), team.to_string())].into(),
            )
        })
        .collect();
    let mut nodes = vec![node("n1", json!({})), node("n2", json!({}))];
    place(&mut nodes[0], "team-a", "db");
    place(&mut nodes[1], "team-b", "db");
    let near = |kind: &str, ns_selector: Value| {
        pod(
            "web",
            "p",
            json!({"app": "web"}),
            required(
                kind,
                json!([term(
                    "db",
                    LABEL_HOSTNAME,
                    json!({ "namespaceSelector": ns_selector })
                )]),
            ),
        )
    };
    let team = |t: &str| json!({"matchLabels": {"team": t}});
    let mut d = Decider::new(9);
    for _ in 0..10 {
        let c = cluster(&nodes, &namespaces);
        assert_eq!(d.decide(&near("podAffinity", team("a")), &c), Ok(0));
        assert_eq!(d.decide(&near("podAffinity", team("b")), &c), Ok(1));
        assert_eq!(d.decide(&near("podAntiAffinity", team("a")), &c), Ok(1));
    }
    // `{}` selects every namespace: both nodes hold a db pod.
    assert!(d
        .decide(
            &near("podAffinity", json!({})),
            &cluster(&nodes, &namespaces)
        )
        .is_ok());
    assert_eq!(
        d.decide(
            &near("podAntiAffinity", json!({})),
            &cluster(&nodes, &namespaces)
        )
        .expect_err("db everywhere")
        .message(),
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    );
    // Without a namespaceSelector the term looks at its own namespace.
    let own = pod(
        "web",
        "p",
        json!({"app": "web"}),
        required(
            "podAffinity",
            json!([term("db", LABEL_HOSTNAME, json!({}))]),
        ),
    );
    assert_eq!(
        d.decide(&own, &cluster(&nodes, &namespaces))
            .expect_err("no db pod in web")
            .message(),
        "0/2 nodes are available: 2 node(s) didn't match pod affinity rules."
    );
    // Namespaces the scheduler has no labels for match no selector.
    assert!(d
        .decide(
            &near("podAffinity", team("a")),
            &cluster(&nodes, &Namespaces::new())
        )
        .is_err());
}
