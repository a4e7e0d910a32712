//! The REST API and the watch cache against real storage: every scenario
//! runs against a real etcd 3.4 cluster and against a Ballast cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{names, namespace, pod, rv, start, Api};
use ballast_apiserver::{CacheConfig, Filter, LabelSelector, WatchFrom};
use ballast_tests::ClusterKind;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

/// Runs each scenario once per storage kind.
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
    crud_verbs_and_errors,
    list_selectors_and_pagination,
    watch_resumes_from_a_resource_version,
    watch_older_than_the_window_is_expired,
    consistent_list_through_a_second_apiserver,
    stalled_watcher_is_closed_others_keep_receiving,
    watch_bookmarks_and_timeout,
    patch_verbs,
    table_output,
    stalled_http_watcher_is_closed,
    status_subresource_and_pod_immutability,
);

fn ns_for(kind: ClusterKind, test: &str) -> String {
    format!("{}-{}", kind.name(), test)
}

async fn crud_verbs_and_errors(kind: ClusterKind) {
    let api = start(kind, CacheConfig::default()).await;
    let ns = namespace(&api, &ns_for(kind, "crud")).await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");

    // create → 201 with server-set metadata.
    let (code, created) = api
        .call("POST", &pods, Some(pod("web", json!({"app": "web"}), "")))
        .await;
    assert_eq!(code, 201, "{created}");
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], ns.as_str());
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    let rv1 = rv(&created);

    // create twice → 409 AlreadyExists.
    let (code, status) = api
        .call("POST", &pods, Some(pod("web", json!({}), "")))
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("AlreadyExists")),
        "{status}"
    );
    assert_eq!(status["details"], json!({"name": "web", "kind": "pods"}));

    // get → 200, the same object.
    let (code, got) = api.call("GET", &format!("{pods}/web"), None).await;
    assert_eq!(code, 200);
    assert_eq!(got, created);

    // generateName.
    let mut generated = pod("", json!({}), "");
    generated["metadata"] = json!({"generateName": "gen-"});
    let (code, g) = api.call("POST", &pods, Some(generated)).await;
    assert_eq!(code, 201, "{g}");
    assert!(g["metadata"]["name"].as_str().unwrap().starts_with("gen-"));
    assert_eq!(g["metadata"]["name"].as_str().unwrap().len(), 9);

    // update with the current resourceVersion → 200 and a newer one.
    let mut changed = got.clone();
    changed["metadata"]["labels"] = json!({"app": "web", "v": "2"});
    let (code, updated) = api
        .call("PUT", &format!("{pods}/web"), Some(changed.clone()))
        .await;
    assert_eq!(code, 200, "{updated}");
    assert!(rv(&updated) > rv1);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(updated["metadata"]["labels"]["v"], "2");

    // update with a stale resourceVersion → 409 Conflict, nothing stored.
    changed["metadata"]["labels"] = json!({"stale": "yes"});
    let (code, status) = api.call("PUT", &format!("{pods}/web"), Some(changed)).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("Conflict")),
        "{status}"
    );
    let (_, now) = api.call("GET", &format!("{pods}/web"), None).await;
    assert_eq!(now["metadata"]["labels"]["v"], "2");

    // 404s: object, namespace, path.
    let (code, status) = api.call("GET", &format!("{pods}/nope"), None).await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(status["message"], "pods \"nope\" not found");
    let (code, status) = api
        .call(
            "POST",
            "/api/v1/namespaces/no-such-ns/configmaps",
            Some(json!({"metadata": {"name": "x"}})),
        )
        .await;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["details"]["kind"], "namespaces");
    let (code, _) = api.call("GET", "/api/v1/widgets", None).await;
    assert_eq!(code, 404);

    // 422: a bad name, a pod without containers.
    let (code, status) = api
        .call("POST", &pods, Some(pod("Bad_Name", json!({}), "")))
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
    let (code, status) = api
        .call(
            "POST",
            &pods,
            Some(json!({"metadata": {"name": "empty"}, "spec": {}})),
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(status["details"]["causes"][0]["field"], "spec.containers");

    // 400: malformed JSON, kind mismatch, namespace mismatch.
    let (code, status) = api
        .raw(
            "POST",
            &pods,
            Some(Bytes::from_static(b"{\"metadata\":")),
            "application/json",
        )
        .await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    let mut wrong_kind = pod("wk", json!({}), "");
    wrong_kind["kind"] = json!("Service");
    assert_eq!(api.call("POST", &pods, Some(wrong_kind)).await.0, 400);
    let mut wrong_ns = pod("wn", json!({}), "");
    wrong_ns["metadata"]["namespace"] = json!("elsewhere");
    assert_eq!(api.call("POST", &pods, Some(wrong_ns)).await.0, 400);

    // 415: not JSON. 413: over 3 MiB.
    let (code, status) = api
        .raw(
            "POST",
            &pods,
            Some(Bytes::from_static(b"a: b")),
            "application/yaml",
        )
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let big = json!({"metadata": {"name": "big"}, "data": {"x": "y".repeat(4 << 20)}});
    let (code, status) = api
        .oversized(
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            big.to_string(),
        )
        .await;
    assert_eq!(code, 413, "{status}");
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    assert_eq!(
        api.call(
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps/big"),
            None
        )
        .await
        .0,
        404
    );

    // delete with a wrong precondition → 409; then delete → 200, then 404.
    let (code, _) = api
        .call(
            "DELETE",
            &format!("{pods}/web"),
            Some(json!({"preconditions": {"uid": "not-it"}})),
        )
        .await;
    assert_eq!(code, 409);
    let (code, deleted) = api.call("DELETE", &format!("{pods}/web"), None).await;
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(deleted["metadata"]["name"], "web");
    assert_eq!(api.call("GET", &format!("{pods}/web"), None).await.0, 404);
    assert_eq!(
        api.call("DELETE", &format!("{pods}/web"), None).await.0,
        404
    );

    // Services (DNS-1035 names) and apps/v1 deployments.
    let svc = json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}});
    assert_eq!(
        api.call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/services"),
            Some(svc)
        )
        .await
        .0,
        422
    );
    let svc = json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}});
    let (code, s) = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/services"),
            Some(svc),
        )
        .await;
    assert_eq!(code, 201, "{s}");
    assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let (code, d) = api
        .call(
            "POST",
            &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            Some(deploy),
        )
        .await;
    assert_eq!(code, 201, "{d}");
    assert_eq!(
        (
            d["spec"]["replicas"].as_i64(),
            d["metadata"]["generation"].as_i64()
        ),
        (Some(1), Some(1))
    );

    // Deleting the namespace marks it Terminating (its `kubernetes`
    // finalizer waits for the namespace controller, which is not running
    // here, to empty it): what is in it stays, nothing new gets in.
    assert_eq!(
        api.call("DELETE", &format!("/api/v1/namespaces/{ns}"), None)
            .await
            .0,
        200
    );
    let (code, got) = api
        .call("GET", &format!("/api/v1/namespaces/{ns}"), None)
        .await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["status"]["phase"], "Terminating", "{got}");
    assert_eq!(got["spec"]["finalizers"], json!(["kubernetes"]), "{got}");
    let (_, svcs) = api
        .call("GET", &format!("/api/v1/namespaces/{ns}/services"), None)
        .await;
    assert_eq!(names(&svcs).len(), 1, "{svcs}");
    let (code, status) = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            Some(json!({"metadata": {"name": "late"}})),
        )
        .await;
    assert_eq!(code, 403, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("because it is being terminated"),
        "{status}"
    );
}

async fn list_selectors_and_pagination(kind: ClusterKind) {
    let api = start(kind, CacheConfig::default()).await;
    let ns = namespace(&api, &ns_for(kind, "list")).await;
    let other = namespace(&api, &ns_for(kind, "list-other")).await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let specs = [
        ("a", json!({"app": "web", "env": "prod"}), "n1"),
        ("b", json!({"app": "web", "env": "qa"}), "n2"),
        ("c", json!({"app": "db", "env": "prod"}), "n1"),
        ("d", json!({"app": "db"}), "n2"),
        ("e", json!({"tier": "x"}), ""),
        ("f", json!({"app": "web"}), "n1"),
        ("g", json!({"app": "cache", "env": "dev"}), "n2"),
    ];
    for (name, labels, node) in &specs {
        let (code, b) = api
            .call("POST", &pods, Some(pod(name, labels.clone(), node)))
            .await;
        assert_eq!(code, 201, "{b}");
    }
    let (code, _) = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{other}/pods"),
            Some(pod("a", json!({"app": "web"}), "n1")),
        )
        .await;
    assert_eq!(code, 201);

    let select = |q: &str| {
        let url = format!("{pods}?{q}");
        let api = &api;
        async move {
            let (code, list) = api.call("GET", &url, None).await;
            assert_eq!(code, 200, "{url}: {list}");
            assert_eq!(list["kind"], "PodList");
            names(&list).join(",")
        }
    };
    assert_eq!(select("").await, "a,b,c,d,e,f,g");
    assert_eq!(select("labelSelector=app%3Dweb").await, "a,b,f");
    assert_eq!(select("labelSelector=app%3D%3Dweb").await, "a,b,f");
    assert_eq!(select("labelSelector=app!%3Dweb").await, "c,d,e,g");
    assert_eq!(select("labelSelector=env+in+(prod,qa)").await, "a,b,c");
    assert_eq!(select("labelSelector=env+notin+(prod)").await, "b,d,e,f,g");
    assert_eq!(select("labelSelector=env").await, "a,b,c,g");
    assert_eq!(select("labelSelector=!env").await, "d,e,f");
    assert_eq!(select("labelSelector=app%3Dweb,env!%3Dqa").await, "a,f");
    assert_eq!(select("fieldSelector=spec.nodeName%3Dn1").await, "a,c,f");
    assert_eq!(
        select("fieldSelector=spec.nodeName%3Dn1,metadata.name!%3Da").await,
        "c,f"
    );
    assert_eq!(select("fieldSelector=metadata.name%3Dd").await, "d");
    assert_eq!(select("fieldSelector=metadata.namespace%3Dnope").await, "");
    // The same from etcd (an exact-revision read) and at "any" revision.
    let (_, all) = api.call("GET", &pods, None).await;
    let at = rv(&json!({"metadata": all["metadata"]}));
    assert_eq!(
        select(&format!(
            "resourceVersion={at}&resourceVersionMatch=Exact&labelSelector=app%3Dweb"
        ))
        .await,
        "a,b,f"
    );
    assert_eq!(
        select("resourceVersion=0&fieldSelector=spec.nodeName%3Dn2").await,
        "b,d,g"
    );

    // Across namespaces.
    let (_, across) = api
        .call(
            "GET",
            "/api/v1/pods?fieldSelector=metadata.name%3Da,spec.nodeName%3Dn1",
            None,
        )
        .await;
    let nss: BTreeSet<String> = across["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["namespace"].as_str().unwrap().to_string())
        .collect();
    assert!(nss.contains(&ns) && nss.contains(&other), "{across}");

    // limit + continue walks every item once, in order, at one revision.
    for q in ["", "labelSelector=app"] {
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut revisions = BTreeSet::new();
        for _ in 0..10 {
            let url = match &token {
                None => format!("{pods}?limit=2&{q}"),
                Some(t) => format!("{pods}?limit=2&continue={t}&{q}"),
            };
            let (code, page) = api.call("GET", &url, None).await;
            assert_eq!(code, 200, "{url}: {page}");
            assert!(names(&page).len() <= 2);
            seen.extend(names(&page));
            revisions.insert(
                page["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            token = page["metadata"]["continue"].as_str().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let want = if q.is_empty() {
            "a,b,c,d,e,f,g"
        } else {
            "a,b,c,d,f,g"
        };
        assert_eq!(seen.join(","), want, "pages of {q:?}");
        assert_eq!(revisions.len(), 1, "every page at one revision");
    }

    // Bad selectors and tokens → 400.
    for q in [
        "labelSelector=app+~+web",
        "fieldSelector=spec.foo%3D1",
        "continue=garbage",
        "limit=x",
    ] {
        let (code, status) = api.call("GET", &format!("{pods}?{q}"), None).await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (400, Some("BadRequest")),
            "{q}: {status}"
        );
    }
}

async fn watch_resumes_from_a_resource_version(kind: ClusterKind) {
    let api = start(kind, CacheConfig::default()).await;
    let ns = namespace(&api, &ns_for(kind, "resume")).await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    let (code, cm) = api
        .call(
            "POST",
            &cms,
            Some(json!({"metadata": {"name": "cm"}, "data": {"n": "0"}})),
        )
        .await;
    assert_eq!(code, 201);
    let start_rv = rv(&cm);
    let mut cur = cm;
    for i in 1..=3 {
        cur["data"]["n"] = json!(i.to_string());
        let (code, next) = api
            .call("PUT", &format!("{cms}/cm"), Some(cur.clone()))
            .await;
        assert_eq!(code, 200, "{next}");
        cur = next;
    }
    let (code, _) = api.call("DELETE", &format!("{cms}/cm"), None).await;
    assert_eq!(code, 200);

    // Resume from the create: the three updates and the delete, in order.
    let mut w = api
        .watch(&format!("{cms}?watch=true&resourceVersion={start_rv}"))
        .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let e = w
            .next_event(Duration::from_secs(10))
            .await
            .expect("an event");
        got.push((
            e["type"].as_str().unwrap().to_string(),
            e["object"]["data"]["n"].as_str().unwrap().to_string(),
            rv(&e["object"]),
        ));
    }
    let kinds: Vec<_> = got.iter().map(|g| format!("{}:{}", g.0, g.1)).collect();
    assert_eq!(
        kinds,
        ["MODIFIED:1", "MODIFIED:2", "MODIFIED:3", "DELETED:3"]
    );
    assert!(
        got.windows(2).all(|p| p[0].2 < p[1].2),
        "increasing revisions: {got:?}"
    );

    // A watch without a version starts with the current state, then goes on live.
    let (code, _) = api
        .call("POST", &cms, Some(json!({"metadata": {"name": "a"}})))
        .await;
    assert_eq!(code, 201);
    let mut w = api.watch(&format!("{cms}?watch=1")).await;
    let first = w
        .next_event(Duration::from_secs(10))
        .await
        .expect("initial ADDED");
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );
    let (code, _) = api
        .call("POST", &cms, Some(json!({"metadata": {"name": "b"}})))
        .await;
    assert_eq!(code, 201);
    let live = w
        .next_event(Duration::from_secs(10))
        .await
        .expect("live ADDED");
    assert_eq!(live["object"]["metadata"]["name"], "b");

    // A label-selected watch sees an object enter and leave its selection.
    let mut w = api
        .watch(&format!("{cms}?watch=1&labelSelector=sel%3Dyes"))
        .await;
    let (_, a) = api.call("GET", &format!("{cms}/a"), None).await;
    let mut a2 = a.clone();
    a2["metadata"]["labels"] = json!({"sel": "yes"});
    let (_, a2) = api.call("PUT", &format!("{cms}/a"), Some(a2)).await;
    let mut a3 = a2.clone();
    a3["metadata"]["labels"] = json!({"sel": "no"});
    assert_eq!(api.call("PUT", &format!("{cms}/a"), Some(a3)).await.0, 200);
    let e1 = w.next_event(Duration::from_secs(10)).await.expect("enter");
    let e2 = w.next_event(Duration::from_secs(10)).await.expect("leave");
    assert_eq!(
        (e1["type"].as_str(), e2["type"].as_str()),
        (Some("ADDED"), Some("DELETED"))
    );
}

async fn watch_older_than_the_window_is_expired(kind: ClusterKind) {
    // A tiny window; only this test writes services in this process.
    let api = start(
        kind,
        CacheConfig {
            window: 3,
            ..CacheConfig::default()
        },
    )
    .await;
    let ns = namespace(&api, &ns_for(kind, "expired")).await;
    let svcs = format!("/api/v1/namespaces/{ns}/services");
    let mut first_rv = 0;
    for i in 0..6 {
        let body =
            json!({"metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}});
        let (code, s) = api.call("POST", &svcs, Some(body)).await;
        assert_eq!(code, 201, "{s}");
        if i == 0 {
            first_rv = rv(&s);
        }
    }
    // Wait until the cache has all six.
    let (_, list) = api.call("GET", &svcs, None).await;
    assert_eq!(names(&list).len(), 6);
    let mut w = api
        .watch(&format!("{svcs}?watch=1&resourceVersion={first_rv}"))
        .await;
    let e = w
        .next(Duration::from_secs(10))
        .await
        .expect("an ERROR event");
    assert_eq!(e["type"], "ERROR", "{e}");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(
        w.next(Duration::from_secs(2)).await.is_none(),
        "the stream ends"
    );
    // Inside the window it still replays.
    let (_, s4) = api.call("GET", &format!("{svcs}/s4"), None).await;
    let mut w = api
        .watch(&format!("{svcs}?watch=1&resourceVersion={}", rv(&s4)))
        .await;
    let e = w.next_event(Duration::from_secs(10)).await.expect("s5");
    assert_eq!(e["object"]["metadata"]["name"], "s5");
}

async fn consistent_list_through_a_second_apiserver(kind: ClusterKind) {
    let a = start(kind, CacheConfig::default()).await;
    let b = start(kind, CacheConfig::default()).await;
    let ns = namespace(&a, &ns_for(kind, "consistent")).await;
    for i in 0..15 {
        let name = format!("cm{i}");
        let (code, created) = a
            .call(
                "POST",
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                Some(json!({"metadata": {"name": name}})),
            )
            .await;
        assert_eq!(code, 201, "{created}");
        // Right after the write, through the other apiserver's cache.
        let (code, list) = b
            .call("GET", &format!("/api/v1/namespaces/{ns}/configmaps"), None)
            .await;
        assert_eq!(code, 200);
        assert!(names(&list).contains(&name), "B missed {name}: {list}");
        assert!(rv(&json!({"metadata": list["metadata"]})) >= rv(&created));
    }
    // A resource nobody writes catches up through a progress report: the
    // list's revision is the store's current one, not the last deployment's.
    let (_, cm) = a
        .call(
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps/cm14"),
            None,
        )
        .await;
    let (code, list) = b.call("GET", "/apis/apps/v1/deployments", None).await;
    assert_eq!(code, 200, "{list}");
    assert!(
        rv(&json!({"metadata": list["metadata"]})) >= rv(&cm),
        "{list}"
    );
    // "Not older than N" from the second apiserver.
    let (code, list) = b
        .call(
            "GET",
            &format!(
                "/api/v1/namespaces/{ns}/configmaps?resourceVersion={}",
                rv(&cm)
            ),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(names(&list).len(), 15);
}

async fn stalled_watcher_is_closed_others_keep_receiving(kind: ClusterKind) {
    // Every watcher has this buffer. The writes below wait for the healthy
    // watcher to take each event before the next, so only the stalled one
    // fills its buffer, however busy the machine (a reader task not
    // scheduled for 16 writes closed the healthy one too, now and then).
    const BUFFER: usize = 16;
    const WRITES: usize = 40;
    let api = start(
        kind,
        CacheConfig {
            watcher_buffer: BUFFER,
            ..CacheConfig::default()
        },
    )
    .await;
    let ns = namespace(&api, &ns_for(kind, "stalled")).await;
    let cache = api
        .server
        .as_ref()
        .unwrap()
        .cache("configmaps")
        .unwrap()
        .clone();
    let filter = Filter {
        namespace: Some(ns.clone()),
        labels: LabelSelector::default(),
        ..Default::default()
    };
    let from = WatchFrom::Revision(cache.revision());
    // Never polled: its buffer fills up.
    let mut stalled = cache
        .watch(from, filter.clone(), false, false)
        .expect("watch");
    let mut healthy = cache.watch(from, filter, false, false).expect("watch");
    let mut http = api
        .watch(&format!(
            "/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={}",
            cache.revision()
        ))
        .await;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut n = 0;
            while let Some(line) = tokio::time::timeout(Duration::from_secs(10), healthy.next())
                .await
                .ok()
                .flatten()
            {
                let e: serde_json::Value = serde_json::from_slice(&line).unwrap();
                assert_eq!(e["type"], "ADDED");
                n += 1;
                seen.store(n, std::sync::atomic::Ordering::SeqCst);
                if n == WRITES {
                    break;
                }
            }
            n
        }
    });
    for i in 0..WRITES {
        let (code, _) = api
            .call(
                "POST",
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                Some(json!({"metadata": {"name": format!("c{i}")}})),
            )
            .await;
        assert_eq!(code, 201);
        // Bounded: a healthy watcher that was closed fails the check below.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.load(std::sync::atomic::Ordering::SeqCst) <= i
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(
        reader.await.unwrap(),
        WRITES,
        "the healthy watcher got every event"
    );
    for i in 0..WRITES {
        let e = http
            .next_event(Duration::from_secs(10))
            .await
            .expect("HTTP watcher event");
        assert_eq!(e["object"]["metadata"]["name"], format!("c{i}"));
    }
    // The stalled one: what fitted in its buffer, then the end.
    let mut buffered = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), stalled.next()).await {
        buffered += 1;
        assert!(buffered <= BUFFER, "more than the buffer was delivered");
    }
    assert_eq!(buffered, BUFFER, "closed after its buffer filled");
}

async fn watch_bookmarks_and_timeout(kind: ClusterKind) {
    let cfg = CacheConfig {
        bookmark_interval: Duration::from_millis(200),
        ..CacheConfig::default()
    };
    let api: Api = start(kind, cfg).await;
    let ns = namespace(&api, &ns_for(kind, "bookmarks")).await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    let (_, list) = api.call("GET", &cms, None).await;
    let at = rv(&json!({"metadata": list["metadata"]}));
    let mut w = api
        .watch(&format!(
            "{cms}?watch=1&resourceVersion={at}&allowWatchBookmarks=true&timeoutSeconds=2"
        ))
        .await;
    let e = w.next(Duration::from_secs(5)).await.expect("a bookmark");
    assert_eq!(e["type"], "BOOKMARK", "{e}");
    assert_eq!(e["object"]["kind"], "ConfigMap");
    assert!(rv(&e["object"]) >= at);
    // timeoutSeconds ends the stream.
    let started = std::time::Instant::now();
    while w.next(Duration::from_secs(5)).await.is_some() {}
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the watch ended by its timeout"
    );

    // Without allowWatchBookmarks: none. With sendInitialEvents: the
    // initial-events-end bookmark.
    let (code, _) = api
        .call("POST", &cms, Some(json!({"metadata": {"name": "x"}})))
        .await;
    assert_eq!(code, 201);
    let mut w = api.watch(&format!("{cms}?watch=1&timeoutSeconds=1")).await;
    let mut types = Vec::new();
    while let Some(e) = w.next(Duration::from_secs(3)).await {
        types.push(e["type"].as_str().unwrap().to_string());
    }
    assert_eq!(types, ["ADDED"]);
    let mut w = api
        .watch(&format!("{cms}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"))
        .await;
    let first = w.next(Duration::from_secs(3)).await.unwrap();
    let second = w.next(Duration::from_secs(3)).await.unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(second["type"], "BOOKMARK");
    assert_eq!(
        second["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

async fn patch_verbs(kind: ClusterKind) {
    let api = start(kind, CacheConfig::default()).await;
    let ns = namespace(&api, &ns_for(kind, "patch")).await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let mut p = pod("p", json!({"app": "web"}), "");
    p["spec"]["containers"] = json!([
        {"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "y:1"}
    ]);
    let (code, created) = api.call("POST", &pods, Some(p)).await;
    assert_eq!(code, 201, "{created}");
    let url = format!("{pods}/p");
    let send = |ct: &'static str, body: serde_json::Value| {
        let api = &api;
        let url = url.clone();
        async move {
            api.raw("PATCH", &url, Some(Bytes::from(body.to_string())), ct)
                .await
        }
    };
    // Merge patch: add and remove labels.
    let (code, o) = send(
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": null, "x": "1"}}}),
    )
    .await;
    assert_eq!(code, 200, "{o}");
    assert_eq!(o["metadata"]["labels"], json!({"x": "1"}));
    assert!(rv(&o) > rv(&created));
    // Strategic merge: one container changes, the other stays.
    let (code, o) = send(
        "application/strategic-merge-patch+json",
        json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}}),
    )
    .await;
    assert_eq!(code, 200, "{o}");
    assert_eq!(o["spec"]["containers"][0]["image"], "x:2");
    assert_eq!(o["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
    assert_eq!(o["spec"]["containers"][1]["image"], "y:1");
    // JSON patch, and a failing test operation → 422, nothing stored.
    let (code, o) = send(
        "application/json-patch+json",
        json!([{"op": "add", "path": "/metadata/labels/y", "value": "2"}]),
    )
    .await;
    assert_eq!(code, 200, "{o}");
    let before = rv(&o);
    let (code, status) = send(
        "application/json-patch+json",
        json!([{"op": "test", "path": "/metadata/labels/y", "value": "nope"}, {"op": "remove", "path": "/metadata/labels"}]),
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    let (_, now) = api.call("GET", &url, None).await;
    assert_eq!(rv(&now), before);
    // A stale resourceVersion in the patch → 409; an unknown patch type →
    // 415; an apply without a fieldManager → 422, as kube answers.
    let (code, _) = send(
        "application/merge-patch+json",
        json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}),
    )
    .await;
    assert_eq!(code, 409);
    let (code, _) = send("application/x-unknown-patch+json", json!({})).await;
    assert_eq!(code, 415);
    let (code, body) = send("application/apply-patch+yaml", json!({})).await;
    assert_eq!(code, 422, "{body}");
    // Patching something that is not there → 404; a patch making the object invalid → 422.
    let (code, _) = api
        .raw(
            "PATCH",
            &format!("{pods}/missing"),
            Some(Bytes::from("{}")),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = send(
        "application/merge-patch+json",
        json!({"spec": {"containers": []}}),
    )
    .await;
    assert_eq!(code, 422);
}

async fn table_output(kind: ClusterKind) {
    let api = start(kind, CacheConfig::default()).await;
    let ns = namespace(&api, &ns_for(kind, "table")).await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let (code, _) = api
        .call("POST", &pods, Some(pod("t", json!({}), "n9")))
        .await;
    assert_eq!(code, 201);
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (code, table) = api.get_accept(&pods, accept).await;
    assert_eq!(code, 200, "{table}");
    assert_eq!(table["kind"], "Table");
    let columns: Vec<_> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        columns,
        ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]
    );
    assert_eq!(table["rows"][0]["cells"][0], "t");
    assert_eq!(table["rows"][0]["cells"][2], "Pending");
    assert_eq!(table["rows"][0]["cells"][6], "n9");
    assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "t");
    let (code, one) = api.get_accept(&format!("{pods}/t"), accept).await;
    assert_eq!((code, one["rows"].as_array().map(Vec::len)), (200, Some(1)));
}

async fn stalled_http_watcher_is_closed(kind: ClusterKind) {
    use tokio::io::AsyncWriteExt;
    let api = start(
        kind,
        CacheConfig {
            watcher_buffer: 8,
            ..CacheConfig::default()
        },
    )
    .await;
    let ns = namespace(&api, &ns_for(kind, "stalled-http")).await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    let (_, list) = api.call("GET", &cms, None).await;
    let at = rv(&json!({"metadata": list["metadata"]}));
    let cache = api
        .server
        .as_ref()
        .unwrap()
        .cache("configmaps")
        .unwrap()
        .clone();
    let base = cache.watcher_count();
    let path = format!("{cms}?watch=1&resourceVersion={at}");

    // A client that sends its watch request and then never reads, with a
    // tiny receive buffer so the server's side fills up quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(api.addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\naccept: application/json\r\n\r\n",
        api.addr
    );
    stalled.write_all(req.as_bytes()).await.unwrap();
    let mut healthy = api.watch(&path).await;
    for _ in 0..200 {
        if cache.watcher_count() == base + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cache.watcher_count(), base + 2, "both watchers registered");

    const N: usize = 40;
    let reader = tokio::spawn(async move {
        let mut names = Vec::new();
        while names.len() < N {
            let Some(e) = healthy.next_event(Duration::from_secs(15)).await else {
                break;
            };
            names.push(
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        (names, healthy)
    });
    let blob = "x".repeat(300 << 10);
    for i in 0..N {
        let body = json!({"metadata": {"name": format!("big{i:02}")}, "data": {"blob": blob}});
        let (code, s) = api.call("POST", &cms, Some(body)).await;
        assert_eq!(code, 201, "{s}");
    }
    let (names, healthy) = reader.await.unwrap();
    let want: Vec<String> = (0..N).map(|i| format!("big{i:02}")).collect();
    assert_eq!(
        names, want,
        "the healthy watcher received every event, in order"
    );
    // 12 MiB of events cannot all sit in socket buffers: the stalled
    // watcher's 8-line buffer filled and it was closed.
    for _ in 0..500 {
        if cache.watcher_count() == base + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cache.watcher_count(),
        base + 1,
        "the stalled watcher was closed, the healthy one kept"
    );
    drop((stalled, healthy));
}

async fn status_subresource_and_pod_immutability(kind: ClusterKind) {
    let api = start(kind, CacheConfig::default()).await;
    let ns = namespace(&api, &ns_for(kind, "status")).await;
    let url = format!("/api/v1/namespaces/{ns}/pods/p");
    let (code, created) = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some(pod("p", json!({"a": "1"}), "")),
        )
        .await;
    assert_eq!(code, 201);
    assert_eq!(created["status"]["phase"], "Pending");

    // /status changes status only.
    let mut body = created.clone();
    body["status"] = json!({"phase": "Running"});
    body["metadata"]["labels"] = json!({"a": "changed"});
    let (code, o) = api.call("PUT", &format!("{url}/status"), Some(body)).await;
    assert_eq!(code, 200, "{o}");
    assert_eq!(o["status"]["phase"], "Running");
    assert_eq!(o["metadata"]["labels"]["a"], "1");
    // …with resourceVersion checks.
    let (code, _) = api
        .call("PUT", &format!("{url}/status"), Some(created.clone()))
        .await;
    assert_eq!(code, 409);
    let (code, o) = api
        .raw(
            "PATCH",
            &format!("{url}/status"),
            Some(Bytes::from(
                json!({"status": {"podIP": "10.0.0.7"}}).to_string(),
            )),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 200, "{o}");
    assert_eq!(
        (o["status"]["phase"].as_str(), o["status"]["podIP"].as_str()),
        (Some("Running"), Some("10.0.0.7"))
    );

    // The main resource ignores status.
    let mut main = o.clone();
    main["status"] = json!({"phase": "Failed"});
    main["metadata"]["labels"] = json!({"a": "2"});
    let (code, o) = api.call("PUT", &url, Some(main)).await;
    assert_eq!(code, 200, "{o}");
    assert_eq!(
        (
            o["status"]["phase"].as_str(),
            o["metadata"]["labels"]["a"].as_str()
        ),
        (Some("Running"), Some("2"))
    );

    // Pod spec: the image may change, the restart policy may not.
    let mut image = o.clone();
    image["spec"]["containers"][0]["image"] = json!("busybox:1.37");
    let (code, o) = api.call("PUT", &url, Some(image)).await;
    assert_eq!(code, 200, "{o}");
    let mut policy = o.clone();
    policy["spec"]["restartPolicy"] = json!("Never");
    let (code, status) = api.call("PUT", &url, Some(policy)).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueForbidden"
    );

    // Status patches racing patches of the object (a kubelet's status
    // and a controller's spec, say) are applied again to what is stored
    // then, as kube's guaranteed update does: none is answered 409.
    let racing = (0..4).map(|i| {
        let api = &api;
        let url = url.clone();
        async move {
            let (path, body) = match i % 2 {
                0 => (
                    format!("{url}/status"),
                    json!({"status": {"message": format!("m{i}")}}),
                ),
                _ => (
                    url,
                    json!({"metadata": {"annotations": {format!("a{i}"): "x"}}}),
                ),
            };
            let body = Some(Bytes::from(body.to_string()));
            api.raw("PATCH", &path, body, "application/merge-patch+json")
                .await
        }
    });
    for (code, o) in futures::future::join_all(racing).await {
        assert_eq!(code, 200, "{o}");
    }

    // No status subresource on configmaps.
    let (code, _) = api
        .call(
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps/x/status"),
            None,
        )
        .await;
    assert_eq!(code, 404);
}

/// Kubernetes lets a client multiplex up to 1000 streams on one HTTP/2
/// connection (`--http2-max-streams-per-connection`); hyper's own default
/// of 200 would hold the 201st watch back until another stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_watches_share_one_http2_connection() {
    use http_body_util::{BodyExt, Empty};
    let api = start(ClusterKind::Etcd, CacheConfig::default()).await;
    let ns = namespace(&api, "etcd-h2-streams").await;
    let tcp = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let path = format!("/api/v1/namespaces/{ns}/configmaps?watch=1");
    let opens = (0..300).map(|_| {
        let mut sender = sender.clone();
        let uri = format!("http://{}{path}", api.addr);
        async move {
            let req = hyper::Request::get(uri).body(Empty::new()).unwrap();
            sender.send_request(req).await
        }
    });
    let responses = tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(opens))
        .await
        .expect("all 300 watches open on one connection");
    let mut bodies = Vec::new();
    for r in responses {
        let r = r.expect("watch response");
        assert_eq!(r.status(), 200);
        bodies.push(r.into_body());
    }
    // Every stream is live: an event reaches the last one opened.
    let (code, _) = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            Some(json!({"metadata": {"name": "cm"}})),
        )
        .await;
    assert_eq!(code, 201);
    let last = bodies.last_mut().unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), last.frame())
        .await
        .expect("an event in time")
        .expect("a frame")
        .expect("no error");
    let data = frame.into_data().expect("data");
    assert!(
        std::str::from_utf8(&data).unwrap().contains("\"ADDED\""),
        "{data:?}"
    );
}
