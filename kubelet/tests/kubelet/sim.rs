//! The sim runtime: many nodes in one process, behaviour from annotations.

use crate::common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sim_nodes_run_pods() {
    let mut env = env("sim").await;
    // `BALLAST_SIM_NODES=1000` runs the same test with more nodes.
    let count: usize = std::env::var("BALLAST_SIM_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40)
        .max(8);
    let config = env.sim_config(count);
    let t0 = std::time::Instant::now();
    env.start(config).await;
    eprintln!("{count} sim nodes registered in {:?}", t0.elapsed());
    let names: Vec<String> = env.kubelet.as_ref().unwrap().node_names().to_vec();
    assert_eq!(names.len(), count);
    let last = count - 1;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let n = nodes.get(&names[last]).await.unwrap();
    let status = n.status.unwrap();
    assert_eq!(status.allocatable.unwrap()["pods"].0, "110");
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(
        status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port,
        i32::from(env.kubelet.as_ref().unwrap().port())
    );
    assert!(n.spec.unwrap().pod_cidr.unwrap().ends_with("/24"));
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), ballast_kubelet::LEASE_NAMESPACE);
    poll("leases", || async {
        leases
            .get_opt(&names[last])
            .await
            .ok()
            .flatten()
            .is_some_and(|l| {
                let s = l.spec.unwrap();
                s.holder_identity.as_deref() == Some(names[last].as_str())
                    && s.lease_duration_seconds == Some(40)
            })
    })
    .await;
    // 120 pods over the nodes, all Running and Ready.
    for i in 0..120 {
        let mut manifest = json!({
            "metadata": {"name": format!("p{i}")},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}
        });
        let pods = env.pods();
        manifest["spec"]["nodeName"] = json!(names[i % names.len()]);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(manifest).unwrap();
        pods.create(&Default::default(), &pod).await.unwrap();
    }
    let pods = env.pods();
    let t1 = std::time::Instant::now();
    poll("120 pods Running and Ready", || async {
        let list = pods.list(&Default::default()).await.unwrap();
        list.items
            .iter()
            .filter(|p| phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True"))
            .count()
            == 120
    })
    .await;
    eprintln!("120 pods Running and Ready in {:?}", t1.elapsed());
    let list = pods.list(&Default::default()).await.unwrap();
    let mut ips: Vec<String> = list
        .items
        .iter()
        .map(|p| p.status.clone().unwrap().pod_ip.unwrap())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 120, "every pod has its own IP");
    // Behaviour from annotations: an exit code, late readiness, pull errors.
    env.node = names[7].clone();
    for (name, annotations, policy, image) in [
        (
            "fails",
            json!({"sim.ballast.dev/exit-code": "2", "sim.ballast.dev/run-ms": "50"}),
            "Never",
            "app:v1",
        ),
        (
            "late",
            json!({"sim.ballast.dev/ready-after-ms": "800"}),
            "Always",
            "app:v1",
        ),
        (
            "pullerr",
            json!({"sim.ballast.dev/pull-error": "true"}),
            "Always",
            "other",
        ),
    ] {
        env.create_pod(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"restartPolicy": policy, "containers": [{"name": "c", "image": image}]}
        }))
        .await;
    }
    let pod = env
        .wait_pod("fails", "Failed", |p| phase(p) == "Failed")
        .await;
    let t = cstatus(&pod, "c")
        .unwrap()
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 2);
    env.wait_pod("late", "Running", |p| phase(p) == "Running")
        .await;
    env.wait_pod("late", "Ready", |p| {
        condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    env.wait_pod("pullerr", "ErrImagePull", |p| {
        matches!(
            waiting_reason(p, "c").as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
    })
    .await;
    // Graceful deletion completes through the kubelet.
    pods.delete("p0", &DeleteParams::default()).await.unwrap();
    env.wait_gone("p0").await;
}
