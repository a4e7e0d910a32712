//! The ServiceAccount controller against an in-process apiserver over the
//! shared real etcd: the namespace gets its `default` ServiceAccount, and
//! gets it back when it is deleted; other ServiceAccounts are left alone.

use crate::common::{env, eventually, quick_nodes};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_has_a_default_service_account() {
    let mut env = env("sa-controller").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
    for name in ["default", "robot"] {
        let _ = accounts.delete(name, &DeleteParams::default()).await;
    }
    eventually("the old default gone", || async {
        accounts
            .get_opt("default")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    env.start(&["serviceaccount"], quick_nodes());
    let first = eventually("default created", || async {
        accounts.get_opt("default").await.ok()?
    })
    .await;
    let robot: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "robot"}})).expect("sa");
    accounts
        .create(&PostParams::default(), &robot)
        .await
        .expect("create robot");
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete default");
    let second = eventually("default made again", || async {
        let sa = accounts.get_opt("default").await.ok()??;
        (sa.metadata.uid != first.metadata.uid).then_some(sa)
    })
    .await;
    assert_eq!(second.metadata.name.as_deref(), Some("default"));
    accounts
        .delete("robot", &DeleteParams::default())
        .await
        .expect("delete robot");
    // Only the ensured ones come back: a sync after robot's deletion
    // (queued by default's) leaves it gone.
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete default again");
    eventually("default made a third time", || async {
        let sa = accounts.get_opt("default").await.ok()??;
        (sa.metadata.uid != second.metadata.uid).then_some(())
    })
    .await;
    assert!(accounts.get_opt("robot").await.expect("get").is_none());
}
