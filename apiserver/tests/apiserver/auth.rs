//! Authentication and authorization end to end: HTTPS with client
//! certificates (and the real kubectl), token-file bearer tokens, anonymous
//! requests, RBAC (Roles, ClusterRoles, bindings, resourceNames,
//! subresources), the Node authorizer, and the access-review APIs. Each
//! test runs an in-process apiserver on the shared real etcd.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{start_secure, SecureApi};
use ballast_apiserver::{AuthConfig, AuthorizationMode, TokenFile};
use serde_json::{json, Value};

fn rbac() -> AuthConfig {
    AuthConfig {
        modes: vec![AuthorizationMode::Rbac],
        ..AuthConfig::default()
    }
}

/// Creates `obj` at `path` on the trusted plain port (201, or 409 when an
/// earlier run left it).
async fn create(api: &SecureApi, path: &str, obj: Value) {
    let (code, body) = api.plain.call("POST", path, Some(obj)).await;
    assert!(code == 201 || code == 409, "POST {path}: {code} {body}");
}

fn role(ns: &str, name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
           "metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn binding(
    kind: &str,
    ns: Option<&str>,
    name: &str,
    role_kind: &str,
    role: &str,
    subjects: Value,
) -> Value {
    let mut meta = json!({"name": name});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
           "subjects": subjects})
}

fn user(name: &str) -> Value {
    json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_roles_bindings_names_and_subresources() {
    let api = start_secure(rbac()).await;
    for ns in ["authz-a", "authz-b"] {
        common::namespace(&api.plain, ns).await;
    }
    create(
        &api,
        "/api/v1/namespaces/authz-a/pods",
        common::pod("p", json!({}), ""),
    )
    .await;
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-a/roles",
        role(
            "authz-a",
            "pod-reader",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
        ),
    )
    .await;
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-a/rolebindings",
        binding(
            "RoleBinding",
            Some("authz-a"),
            "alice-reads",
            "Role",
            "pod-reader",
            user("alice"),
        ),
    )
    .await;

    let alice = api.cert_client("alice", &["dev"]);
    let (code, list) = alice
        .eventually("GET", "/api/v1/namespaces/authz-a/pods", None, 200)
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(common::names(&list), vec!["p"]);
    assert_eq!(
        alice
            .call("GET", "/api/v1/namespaces/authz-a/pods/p", None)
            .await
            .0,
        200
    );

    let (code, status) = alice
        .call("GET", "/api/v1/namespaces/authz-b/pods", None)
        .await;
    assert_eq!(code, 403);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"authz-b\""
    );
    let (code, status) = alice
        .call("GET", "/api/v1/namespaces/authz-b/pods/x", None)
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "pods \"x\" is forbidden: User \"alice\" cannot get resource \"pods\" in API group \"\" in the namespace \"authz-b\""
    );
    assert_eq!(status["details"], json!({"name": "x", "kind": "pods"}));
    let (code, status) = alice
        .call(
            "POST",
            "/api/v1/namespaces/authz-a/pods",
            Some(common::pod("q", json!({}), "")),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"alice\" cannot create resource \"pods\" in API group \"\" in the namespace \"authz-a\""
    );
    // Watches are their own verb.
    let (code, status) = alice
        .call("GET", "/api/v1/namespaces/authz-a/pods?watch=true", None)
        .await;
    assert_eq!(code, 403, "{status}");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("cannot watch resource"));

    // A ClusterRoleBinding to alice's group.
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"metadata": {"name": "authz-node-reader"},
               "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]}),
    )
    .await;
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        binding(
            "ClusterRoleBinding",
            None,
            "authz-dev-nodes",
            "ClusterRole",
            "authz-node-reader",
            json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "dev"}]),
        ),
    )
    .await;
    assert_eq!(
        alice.eventually("GET", "/api/v1/nodes", None, 200).await.0,
        200
    );
    let bob = api.cert_client("bob", &[]);
    let (code, status) = bob.call("GET", "/api/v1/nodes", None).await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "nodes is forbidden: User \"bob\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );

    // resourceNames: one ConfigMap only.
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-a/roles",
        role("authz-a", "cm-one", json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["one"]}])),
    )
    .await;
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-a/rolebindings",
        binding(
            "RoleBinding",
            Some("authz-a"),
            "bob-cm-one",
            "Role",
            "cm-one",
            user("bob"),
        ),
    )
    .await;
    for name in ["one", "two"] {
        create(
            &api,
            "/api/v1/namespaces/authz-a/configmaps",
            json!({"metadata": {"name": name}, "data": {"k": "v"}}),
        )
        .await;
    }
    let (code, cm) = bob
        .eventually(
            "GET",
            "/api/v1/namespaces/authz-a/configmaps/one",
            None,
            200,
        )
        .await;
    assert_eq!(code, 200, "{cm}");
    assert_eq!(cm["data"]["k"], "v");
    assert_eq!(
        bob.call("GET", "/api/v1/namespaces/authz-a/configmaps/two", None)
            .await
            .0,
        403
    );
    assert_eq!(
        bob.call("GET", "/api/v1/namespaces/authz-a/configmaps", None)
            .await
            .0,
        403
    );

    // A subresource rule: pods/status only.
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-a/roles",
        role(
            "authz-a",
            "status-writer",
            json!([{"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "patch"]}]),
        ),
    )
    .await;
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-a/rolebindings",
        binding(
            "RoleBinding",
            Some("authz-a"),
            "carol-status",
            "Role",
            "status-writer",
            user("carol"),
        ),
    )
    .await;
    let carol = api.cert_client("carol", &[]);
    let (code, body) = carol
        .eventually("GET", "/api/v1/namespaces/authz-a/pods/p/status", None, 200)
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = carol
        .merge_patch(
            "/api/v1/namespaces/authz-a/pods/p/status",
            json!({"status": {"message": "hi"}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, status) = carol
        .call("GET", "/api/v1/namespaces/authz-a/pods/p", None)
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "pods \"p\" is forbidden: User \"carol\" cannot get resource \"pods\" in API group \"\" in the namespace \"authz-a\""
    );
    let (code, status) = carol
        .merge_patch(
            "/api/v1/namespaces/authz-a/pods/p",
            json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .await;
    assert_eq!(code, 403, "{status}");

    // Deleting the binding takes alice's access away.
    let (code, body) = api
        .plain
        .call(
            "DELETE",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-a/rolebindings/alice-reads",
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = alice
        .eventually("GET", "/api/v1/namespaces/authz-a/pods", None, 403)
        .await;
    assert_eq!(code, 403);

    // A binding to a missing role says so.
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-b/rolebindings",
        binding(
            "RoleBinding",
            Some("authz-b"),
            "dangling",
            "Role",
            "missing",
            user("dave"),
        ),
    )
    .await;
    let dave = api.cert_client("dave", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, status) = dave
            .call("GET", "/api/v1/namespaces/authz-b/pods", None)
            .await;
        assert_eq!(code, 403);
        let msg = status["message"].as_str().unwrap_or_default().to_string();
        if msg.contains("role.rbac.authorization.k8s.io \"missing\" not found") {
            break;
        }
        assert!(Instant::now() < deadline, "no RBAC reason in {msg}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writing RBAC objects cannot grant more than the writer may: a namespace
/// administrator who may write RoleBindings still cannot bind cluster-admin
/// or write a Role without the `bind` / `escalate` verbs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_writes_need_bind_or_escalate() {
    let api = start_secure(rbac()).await;
    let ns = "authz-escalate";
    common::namespace(&api.plain, ns).await;
    let rbac_writer = json!([{"apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["roles", "rolebindings"], "verbs": ["create", "get", "list"]}]);
    create(
        &api,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
        role(ns, "rbac-writer", rbac_writer),
    )
    .await;
    create(
        &api,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        binding(
            "RoleBinding",
            Some(ns),
            "mallory-writes",
            "Role",
            "rbac-writer",
            user("mallory"),
        ),
    )
    .await;
    let mallory = api.cert_client("mallory", &[]);
    let bindings = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings");
    // Wait until the writer's own binding is in force (lists are allowed).
    mallory.eventually("GET", &bindings, None, 200).await;
    let grab = binding(
        "RoleBinding",
        Some(ns),
        "grab",
        "ClusterRole",
        "cluster-admin",
        user("mallory"),
    );
    let (code, status) = mallory.call("POST", &bindings, Some(grab.clone())).await;
    assert_eq!(code, 403, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot bind resource"),
        "{status}"
    );
    let roles = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles");
    let everything = role(
        ns,
        "everything",
        json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
    );
    let (code, status) = mallory.call("POST", &roles, Some(everything.clone())).await;
    assert_eq!(code, 403, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot escalate resource"),
        "{status}"
    );
    // Granted the verbs, the same writes go through.
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "authz-escalate-binder"},
               "rules": [{"apiGroups": ["rbac.authorization.k8s.io"],
                          "resources": ["roles", "clusterroles"], "verbs": ["bind", "escalate"]}]}),
    )
    .await;
    create(
        &api,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        binding(
            "RoleBinding",
            Some(ns),
            "mallory-binds",
            "ClusterRole",
            "authz-escalate-binder",
            user("mallory"),
        ),
    )
    .await;
    let (code, body) = mallory
        .eventually("POST", &roles, Some(everything), 201)
        .await;
    assert!(code == 201 || code == 409, "{code} {body}");
    let (code, body) = mallory.call("POST", &bindings, Some(grab)).await;
    assert!(code == 201 || code == 409, "{code} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rbac_objects_are_422() {
    let api = start_secure(rbac()).await;
    common::namespace(&api.plain, "authz-invalid").await;
    let (code, status) = api
        .plain
        .call(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            Some(binding(
                "ClusterRoleBinding",
                None,
                "bad",
                "Role",
                "x",
                json!([{"kind": "Robot", "name": "r"}]),
            )),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"roleRef.kind") && fields.contains(&"subjects[0].kind"),
        "{status}"
    );
    let (code, status) = api
        .plain
        .call(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-invalid/roles",
            Some(role(
                "authz-invalid",
                "urls",
                json!([{"nonResourceURLs": ["/x"], "verbs": ["get"]}]),
            )),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    // A roleRef cannot change.
    let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/authz-invalid/rolebindings";
    create(
        &api,
        path,
        binding(
            "RoleBinding",
            Some("authz-invalid"),
            "fixed",
            "ClusterRole",
            "view",
            user("x"),
        ),
    )
    .await;
    let (code, status) = api
        .plain
        .merge_patch(
            &format!("{path}/fixed"),
            json!({"roleRef": {"name": "edit"}}),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "roleRef");
    let (code, _) = api
        .plain
        .merge_patch(
            &format!("{path}/fixed"),
            json!({"subjects": [{"kind": "User", "name": "y"}]}),
        )
        .await;
    assert_eq!(code, 200);
    // Colons are fine in RBAC names.
    create(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"metadata": {"name": "authz:colon"}, "rules": []}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_anonymous_and_the_plain_port() {
    let tokens = TokenFile::parse("tok-alice,alice,uid-1,\"dev,ops\"\n").unwrap();
    // Anonymous allowed: RBAC decides, a bad token is still 401.
    let api = start_secure(AuthConfig {
        tokens: Some(tokens.clone()),
        ..rbac()
    })
    .await;
    let anon = api.anonymous_client();
    assert_eq!(anon.call("GET", "/healthz", None).await.0, 200);
    let (code, status) = anon.call("GET", "/api", None).await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "forbidden: User \"system:anonymous\" cannot get path \"/api\""
    );
    let (code, status) = api
        .token_client("wrong")
        .call("GET", "/healthz", None)
        .await;
    assert_eq!(code, 401);
    assert_eq!(
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    let alice = api.token_client("tok-alice");
    let (code, me) = alice
        .call(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 201, "{me}");
    assert_eq!(
        me["status"]["userInfo"],
        json!({"username": "alice", "uid": "uid-1", "groups": ["dev", "ops", "system:authenticated"]})
    );
    assert_eq!(alice.call("GET", "/api", None).await.0, 200);
    // The plain port wants a token too once a token file is set.
    let (code, status) = api.plain.call("GET", "/api/v1/namespaces", None).await;
    assert_eq!(code, 401, "{status}");
    drop(api);

    // Anonymous off: no credentials is 401.
    let api = start_secure(AuthConfig {
        tokens: Some(tokens),
        anonymous: false,
        ..rbac()
    })
    .await;
    assert_eq!(
        api.anonymous_client().call("GET", "/healthz", None).await.0,
        401
    );
    assert_eq!(
        api.token_client("tok-alice")
            .call("GET", "/healthz", None)
            .await
            .0,
        200
    );
    assert_eq!(
        api.token_client("nope")
            .call("GET", "/healthz", None)
            .await
            .0,
        401
    );
    // A certificate still works.
    let (code, me) = api
        .cert_client("erin", &["team"])
        .call(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 201);
    assert_eq!(me["status"]["userInfo"]["username"], "erin");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        json!(["team", "system:authenticated"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_authorizer_scopes_kubelets_to_their_node() {
    let api = start_secure(AuthConfig {
        modes: vec![AuthorizationMode::Node, AuthorizationMode::Rbac],
        ..AuthConfig::default()
    })
    .await;
    let ns = common::namespace(&api.plain, "authz-node").await;
    for node in ["authz-node-1", "authz-node-2"] {
        create(&api, "/api/v1/nodes", json!({"metadata": {"name": node}})).await;
    }
    create(
        &api,
        &format!("/api/v1/namespaces/{ns}/pods"),
        common::pod("on-1", json!({}), "authz-node-1"),
    )
    .await;
    create(
        &api,
        &format!("/api/v1/namespaces/{ns}/pods"),
        common::pod("on-2", json!({}), "authz-node-2"),
    )
    .await;
    let kubelet = api.cert_client("system:node:authz-node-1", &["system:nodes"]);

    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let (code, body) = kubelet
        .merge_patch("/api/v1/nodes/authz-node-1/status", ready.clone())
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["conditions"][0]["type"], "Ready");
    let (code, status) = kubelet
        .merge_patch("/api/v1/nodes/authz-node-2/status", ready)
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "nodes \"authz-node-2\" is forbidden: User \"system:node:authz-node-1\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope: node \"authz-node-1\" is not allowed to modify node \"authz-node-2\""
    );
    assert_eq!(kubelet.call("GET", "/api/v1/nodes", None).await.0, 200);

    let running = json!({"status": {"phase": "Running"}});
    let (code, body) = kubelet
        .merge_patch(
            &format!("/api/v1/namespaces/{ns}/pods/on-1/status"),
            running.clone(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["phase"], "Running");
    let (code, status) = kubelet
        .merge_patch(
            &format!("/api/v1/namespaces/{ns}/pods/on-2/status"),
            running,
        )
        .await;
    assert_eq!(code, 403);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("no relationship found between node 'authz-node-1' and this object"),
        "{status}"
    );
    assert_eq!(
        kubelet
            .call(
                "DELETE",
                &format!("/api/v1/namespaces/{ns}/pods/on-2"),
                None
            )
            .await
            .0,
        403
    );
    let pods = "/api/v1/pods?fieldSelector=spec.nodeName%3Dauthz-node-1";
    let (code, list) = kubelet.call("GET", pods, None).await;
    assert_eq!(code, 200);
    assert_eq!(common::names(&list), vec!["on-1"]);
    // Not a kubelet's business.
    let (code, _) = kubelet
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            Some(json!({"metadata": {"name": "c"}})),
        )
        .await;
    assert_eq!(code, 403);
    // Its own lease only.
    let lease = |name: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": name, "namespace": "kube-node-lease"},
               "spec": {"holderIdentity": name}})
    };
    let (code, body) = kubelet
        .call(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Some(lease("authz-node-1")),
        )
        .await;
    assert!(code == 201 || code == 409, "{code} {body}");
    assert_eq!(
        kubelet
            .call(
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/authz-node-1",
                None
            )
            .await
            .0,
        200
    );
    assert_eq!(
        kubelet
            .call(
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/authz-node-2",
                Some(lease("authz-node-2"))
            )
            .await
            .0,
        403
    );
    // Another node's kubelet can now delete... only its own pods.
    let other = api.cert_client("system:node:authz-node-2", &["system:nodes"]);
    let (code, body) = other
        .call(
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/pods/on-2"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // A node name without the group is just a user (RBAC: nothing).
    let impostor = api.cert_client("system:node:authz-node-1", &[]);
    assert_eq!(impostor.call("GET", "/api/v1/nodes", None).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_reviews() {
    let api = start_secure(rbac()).await;
    let ns = common::namespace(&api.plain, "authz-review").await;
    create(
        &api,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
        role(
            &ns,
            "creator",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]),
        ),
    )
    .await;
    create(
        &api,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        binding(
            "RoleBinding",
            Some(&ns),
            "frank-creates",
            "Role",
            "creator",
            user("frank"),
        ),
    )
    .await;
    let frank = api.cert_client("frank", &[]);
    let review = |ns: &str, verb: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "resource": "pods"}}})
    };
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, r) = frank.call("POST", path, Some(review(&ns, "create"))).await;
        assert_eq!(code, 201, "{r}");
        if r["status"]["allowed"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "never allowed: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, r) = frank.call("POST", path, Some(review(&ns, "delete"))).await;
    assert_eq!(r["status"]["allowed"], false);
    let (_, r) = frank
        .call("POST", path, Some(review("default", "create")))
        .await;
    assert_eq!(r["status"]["allowed"], false);
    let (code, _) = frank.call("POST", path, Some(json!({"spec": {}}))).await;
    assert_eq!(code, 422);

    // SubjectAccessReview: for admins, about others.
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "frank", "resourceAttributes": {"namespace": ns, "verb": "create", "resource": "pods"}}});
    let sar_path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let admin = api.cert_client("root", &["system:masters"]);
    let (code, r) = admin.call("POST", sar_path, Some(sar.clone())).await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["status"]["allowed"], true);
    assert_eq!(frank.call("POST", sar_path, Some(sar)).await.0, 403);
    // Impersonation: admins may act as frank; frank may not act as others.
    let as_frank = api
        .cert_client("root", &["system:masters"])
        .with_header("Impersonate-User", "frank");
    let (code, r) = as_frank
        .call("POST", path, Some(review(&ns, "create")))
        .await;
    assert_eq!(code, 201);
    assert_eq!(r["status"]["allowed"], true, "{r}");
    let (code, status) = as_frank
        .call("GET", &format!("/api/v1/namespaces/{ns}/pods"), None)
        .await;
    assert_eq!(code, 403);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("User \"frank\" cannot list"),
        "{status}"
    );
    let (code, status) = api
        .cert_client("frank", &[])
        .with_header("Impersonate-User", "root")
        .call("GET", "/api", None)
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "users \"root\" is forbidden: User \"frank\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    // Two users, or groups without a user: 400, as Kubernetes answers.
    let (code, status) = api
        .cert_client("root", &["system:masters"])
        .with_header("Impersonate-User", "frank")
        .with_header("Impersonate-User", "grace")
        .call("GET", "/api", None)
        .await;
    assert_eq!(code, 400, "{status}");
    let (code, status) = api
        .cert_client("root", &["system:masters"])
        .with_header("Impersonate-Group", "system:masters")
        .call("GET", "/api", None)
        .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "requested impersonation of groups without impersonating a user"
    );
    // Discovery lists the review APIs.
    let (code, list) = frank
        .call("GET", "/apis/authorization.k8s.io/v1", None)
        .await;
    assert_eq!(code, 200);
    assert!(list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "selfsubjectaccessreviews"));
}

/// Runs kubectl with a deadline; (exit code, stdout, stderr).
fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubectl {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let code = out.status.code().unwrap_or(-1);
    println!(
        "$ kubectl {} -> {code}\n{}{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    (code, text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_over_tls_with_a_client_certificate() {
    let api = start_secure(rbac()).await;
    let ns = common::namespace(&api.plain, "authz-kubectl").await;
    create(
        &api,
        &format!("/api/v1/namespaces/{ns}/pods"),
        common::pod("web", json!({}), ""),
    )
    .await;
    create(
        &api,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        binding(
            "RoleBinding",
            Some(&ns),
            "gina-views",
            "ClusterRole",
            "view",
            user("gina"),
        ),
    )
    .await;
    let gina = api.kubeconfig("gina", &["qa"]);
    // The binding reaches the policy asynchronously.
    let probe = api.cert_client("gina", &["qa"]);
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    assert_eq!(probe.eventually("GET", &pods, None, 200).await.0, 200);

    let admin = api.kubeconfig("kubernetes-admin", &["system:masters"]);
    let cfg = gina.clone();
    let ns2 = ns.clone();
    let results = tokio::task::spawn_blocking(move || {
        let get = kubectl(&cfg, &["get", "pods", "-n", &ns2]);
        let denied = kubectl(&cfg, &["get", "pods", "-n", "default"]);
        let can_list = kubectl(
            &cfg,
            &["auth", "can-i", "list", "pods", "--namespace", &ns2],
        );
        let can_create = kubectl(
            &cfg,
            &["auth", "can-i", "create", "pods", "--namespace", &ns2],
        );
        let whoami = kubectl(&cfg, &["auth", "whoami"]);
        let as_gina = kubectl(
            &admin,
            &[
                "auth", "can-i", "create", "pods", "-n", &ns2, "--as", "gina",
            ],
        );
        let as_admin = kubectl(&admin, &["auth", "can-i", "create", "pods", "-n", &ns2]);
        (get, denied, can_list, can_create, whoami, as_gina, as_admin)
    })
    .await
    .unwrap();
    let (get, denied, can_list, can_create, whoami, as_gina, as_admin) = results;
    assert_eq!((as_gina.0, as_gina.1.trim()), (1, "no"), "{}", as_gina.2);
    assert_eq!(
        (as_admin.0, as_admin.1.trim()),
        (0, "yes"),
        "{}",
        as_admin.2
    );
    assert_eq!(get.0, 0, "{}", get.2);
    assert!(get.1.contains("web"), "{}", get.1);
    assert_ne!(denied.0, 0);
    assert!(
        denied.2.contains("pods is forbidden: User \"gina\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        denied.2
    );
    assert_eq!(
        (can_list.0, can_list.1.trim()),
        (0, "yes"),
        "{}",
        can_list.2
    );
    assert_eq!(
        (can_create.0, can_create.1.trim()),
        (1, "no"),
        "{}",
        can_create.2
    );
    assert_eq!(whoami.0, 0, "{}", whoami.2);
    assert!(
        whoami.1.contains("gina") && whoami.1.contains("qa"),
        "{}",
        whoami.1
    );
}
