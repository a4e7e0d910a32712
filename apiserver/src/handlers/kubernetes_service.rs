//! The default `kubernetes` Service, kept by every apiserver as
//! kube-apiserver keeps it: in `default`, ClusterIP the range's first
//! address, port 443 (`https`) to the apiservers' port; each apiserver
//! announces its advertised address under `/registry/masterleases/`
//! (with an etcd lease, refreshed every few seconds: kube's lease
//! endpoint reconciler), and the `kubernetes` Endpoints and EndpointSlice
//! list every announced apiserver. The same loop releases, once a
//! minute, addresses whose Service was removed outside the API.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::services::create;
use super::AppState;
use crate::error::{Error, Result};
use crate::resources::Resource;

/// Where each apiserver announces the address the `kubernetes` Service
/// points at (kube-apiserver's master leases), with an etcd lease.
const MASTER_LEASES: &str = "/registry/masterleases/";
/// How long an apiserver's announcement lives without a refresh.
const MASTER_LEASE_TTL: i64 = 15;
const MASTER_LEASE_REFRESH: Duration = Duration::from_secs(5);
/// Addresses whose Service is gone (removed outside the API) are
/// released every this many refreshes (a minute).
const REPAIR_EVERY: u64 = 12;

fn services() -> &'static Resource {
    Resource::find("", "services").expect("services are served")
}

/// The `kubernetes` Service as kube-apiserver keeps it.
fn kubernetes_service(s: &AppState, target_port: u16) -> Value {
    let ip = s.services.cluster_ip.first().to_string();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "uid": super::meta::new_uid(),
            "creationTimestamp": super::meta::now_rfc3339(),
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": target_port}],
        },
        "status": {"loadBalancer": {}},
    })
}

/// Keeps the default `kubernetes` Service (ClusterIP = the range's first
/// address, 443 → the apiservers' port) and, with an advertised address,
/// this apiserver's announcement and the `kubernetes` Endpoints and
/// EndpointSlice listing every announced apiserver. Runs until the
/// apiserver goes.
pub(crate) async fn keep(s: std::sync::Weak<AppState>, advertise: Option<SocketAddr>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(state) = s.upgrade() else { return };
        let done = match ensure_service(&state, advertise).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "creating the kubernetes service");
                false
            }
        };
        drop(state);
        if done {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    for round in 0u64.. {
        let Some(state) = s.upgrade() else { return };
        if let Some(addr) = advertise {
            if let Err(e) = reconcile_endpoints(&state, addr).await {
                tracing::debug!(error = %e, "reconciling the kubernetes endpoints");
            }
        }
        if round % REPAIR_EVERY == 0 {
            if let Err(e) = state.registry.repair_service_allocations().await {
                tracing::debug!(error = %e, "repairing service allocations");
            }
        }
        drop(state);
        tokio::time::sleep(MASTER_LEASE_REFRESH).await;
    }
}

async fn ensure_service(s: &AppState, advertise: Option<SocketAddr>) -> Result<()> {
    let r = services();
    // The namespace comes first (it is created at start too).
    let target = advertise.map(|a| a.port()).unwrap_or(443);
    match s.registry.get(r, Some("default"), "kubernetes").await {
        Ok(o) => {
            let mut v = o.value()?;
            let want = kubernetes_service(s, target);
            if v["spec"]["ports"] != want["spec"]["ports"] {
                v["spec"]["ports"] = want["spec"]["ports"].clone();
                let held: Vec<String> = Vec::new();
                s.registry
                    .update_claiming(
                        r,
                        Some("default"),
                        "kubernetes",
                        v,
                        o.resource_version,
                        &held,
                        &held,
                    )
                    .await?;
            }
            Ok(())
        }
        Err(Error::NotFound { .. }) => {
            let v = kubernetes_service(s, target);
            match create(s, "default", "kubernetes", v, false).await {
                Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Announces `addr` (a master lease), then makes the `kubernetes`
/// Endpoints and EndpointSlice list every announced apiserver.
async fn reconcile_endpoints(s: &AppState, addr: SocketAddr) -> Result<()> {
    let etcd = s.registry.etcd();
    let lease = etcd.grant_lease(MASTER_LEASE_TTL).await?;
    let key = format!("{MASTER_LEASES}{addr}");
    etcd.txn_request(ballast_proto::etcdserverpb::TxnRequest {
        compare: vec![],
        success: vec![ballast_proto::etcdserverpb::RequestOp {
            request: Some(
                ballast_proto::etcdserverpb::request_op::Request::RequestPut(
                    ballast_proto::etcdserverpb::PutRequest {
                        key: key.into_bytes(),
                        value: addr.to_string().into_bytes(),
                        lease,
                        ..Default::default()
                    },
                ),
            ),
        }],
        failure: vec![],
    })
    .await?;
    let announced = s.registry.held(MASTER_LEASES).await?;
    let mut by_port: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for a in announced {
        if let Ok(a) = a.parse::<SocketAddr>() {
            by_port
                .entry(a.port())
                .or_default()
                .push(a.ip().to_string());
        }
    }
    for ips in by_port.values_mut() {
        ips.sort();
    }
    let subsets: Vec<Value> = by_port
        .iter()
        .map(|(port, ips)| {
            json!({
                "addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            })
        })
        .collect();
    let labels = json!({"endpointslice.kubernetes.io/skip-mirror": "true"});
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "subsets": subsets,
    });
    put_if_changed(s, "endpoints", "", endpoints, &["subsets"]).await?;
    if let Some(r) = Resource::find("discovery.k8s.io", "endpointslices") {
        for (i, (port, ips)) in by_port.iter().enumerate() {
            let name = if i == 0 {
                "kubernetes".to_string()
            } else {
                format!("kubernetes-{port}")
            };
            let slice = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": "IPv4",
                "endpoints": ips.iter().map(|ip| json!({
                    "addresses": [ip],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                })).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            });
            put_if_changed(s, r.name, r.group, slice, &["endpoints", "ports"]).await?;
        }
    }
    Ok(())
}

/// Creates `obj` or updates the stored one when any of `fields` differ.
async fn put_if_changed(
    s: &AppState,
    resource: &str,
    group: &str,
    mut obj: Value,
    fields: &[&str],
) -> Result<()> {
    let Some(r) = Resource::find(group, resource) else {
        return Ok(());
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match s.registry.get(r, Some("default"), &name).await {
        Ok(o) => {
            let mut v = o.value()?;
            if fields.iter().all(|f| v[*f] == obj[*f]) {
                return Ok(());
            }
            for f in fields {
                v[*f] = obj[*f].clone();
            }
            s.registry
                .update(r, Some("default"), &name, v, o.resource_version)
                .await?;
        }
        Err(Error::NotFound { .. }) => {
            obj["metadata"]["uid"] = json!(super::meta::new_uid());
            obj["metadata"]["creationTimestamp"] = json!(super::meta::now_rfc3339());
            match s.registry.create(r, Some("default"), &name, obj).await {
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    Ok(())
}
