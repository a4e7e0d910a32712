//! `/metrics` on an in-process apiserver with RBAC on the shared real
//! etcd: only users the bootstrap policy lets read it (`system:monitoring`,
//! as in Kubernetes), Kubernetes' series and labels, requests counted with
//! the served resource's labels and never with made-up paths.

use crate::common;

use crate::common::start_secure;
use ballast_apiserver::{AuthConfig, AuthorizationMode};
use serde_json::{json, Value};

/// The value of the sample `series` (name and labels exactly as written)
/// in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

fn text(body: Value) -> String {
    match body {
        Value::String(s) => s,
        other => panic!("/metrics answered JSON: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_for_monitoring_and_count_requests_by_served_resource() {
    let api = start_secure(AuthConfig {
        modes: vec![AuthorizationMode::Rbac],
        ..AuthConfig::default()
    })
    .await;
    let nobody = api.cert_client("metrics-nobody", &[]);
    let (code, body) = nobody.eventually("GET", "/metrics", None, 403).await;
    assert_eq!(code, 403, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#"User "metrics-nobody" cannot get path "/metrics""#),
        "{body}"
    );

    let prometheus = api.cert_client("prometheus", &["system:monitoring"]);
    let (code, body) = prometheus.eventually("GET", "/metrics", None, 200).await;
    assert_eq!(code, 200, "{body}");
    let before = text(body);
    for line in [
        "# TYPE apiserver_request_total counter",
        "# TYPE apiserver_request_duration_seconds histogram",
        "# TYPE apiserver_storage_objects gauge",
        "# TYPE apiserver_registered_watchers gauge",
        "# TYPE apiserver_watch_cache_events_received_total counter",
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        assert!(before.lines().any(|l| l == line), "{line} in\n{before}");
    }
    // The scrape itself is a read-only request in flight.
    let in_flight = sample(
        &before,
        r#"apiserver_current_inflight_requests{request_kind="readOnly"}"#,
    );
    assert!(in_flight >= Some(1.0), "{in_flight:?}");
    // The default namespaces are created while the apiserver starts; the
    // gauge counts them once its watch cache has seen them.
    let namespaces_series = r#"apiserver_storage_objects{resource="namespaces"}"#;
    let mut namespaces = sample(&before, namespaces_series);
    for _ in 0..100 {
        if namespaces >= Some(4.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (_, body) = prometheus.call("GET", "/metrics", None).await;
        namespaces = sample(&text(body), namespaces_series);
    }
    assert!(
        namespaces >= Some(4.0),
        "the default namespaces: {namespaces:?}"
    );

    let ns = common::namespace(&api.plain, "metrics-count").await;
    let created = r#"apiserver_request_total{verb="POST",dry_run="",group="",version="v1",resource="configmaps",subresource="",scope="resource",component="apiserver",code="201"}"#;
    let was = sample(&before, created).unwrap_or(0.0);
    for i in 0..3 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("m{i}-{}", std::process::id())}});
        let (code, body) = api
            .plain
            .call(
                "POST",
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                Some(cm),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    // Paths that are not served are counted without their made-up names.
    let (code, _) = api
        .plain
        .call("GET", "/apis/made.up/v1/namespaces/x/madeupthings", None)
        .await;
    assert_eq!(code, 404);
    let (_, body) = prometheus.call("GET", "/metrics", None).await;
    let after = text(body);
    assert!(
        sample(&after, created) >= Some(was + 3.0),
        "three creates counted: {was} then {:?}",
        sample(&after, created)
    );
    assert!(!after.contains("madeupthings") && !after.contains("made.up"));
    let timed = r#"apiserver_request_duration_seconds_count{verb="POST",dry_run="",group="",version="v1",resource="configmaps",subresource="",scope="resource",component="apiserver"}"#;
    assert!(sample(&after, timed) >= Some(3.0), "{after}");
}
