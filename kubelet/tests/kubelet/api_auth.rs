//! The kubelet API's authentication and authorization against a real
//! apiserver with `--authorization-mode=Node,RBAC` (in process, over the
//! shared real etcd): a simulated kubelet serving HTTPS with
//! `--client-ca-file`, `--anonymous-auth=false` and
//! `--authorization-mode=Webhook`, asked by TLS clients holding various
//! certificates.

use std::sync::Arc;
use std::time::Duration;

use ballast_apiserver::{
    Apiserver, AuthConfig, AuthorizationMode, CacheConfig, Config, KubeletClient, Options,
};
use ballast_kubelet::{ApiSecurity, Kubelet, KubeletConfig, KubeletHandle, RuntimeKind};
use ballast_pki::{Ca, CertSpec, Issued};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, DeleteParams, LogParams, ObjectMeta, PostParams};
use kube::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(40);

fn etcd_endpoints() -> Vec<String> {
    ballast_tests::Cluster::shared(ballast_tests::ClusterKind::Etcd)
        .endpoints()
        .into_iter()
        .map(|e| {
            if e.contains("://") {
                e
            } else {
                format!("http://{e}")
            }
        })
        .collect()
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{:x}", std::process::id() % 100000, nanos)
}

/// An apiserver with Node,RBAC reaching kubelets with `kubelet`; the
/// returned client is on its plain port (trusted as `system:masters`),
/// once the bootstrap policy is in.
async fn rbac_apiserver(kubelet: KubeletClient) -> Client {
    let eps = tokio::task::spawn_blocking(etcd_endpoints)
        .await
        .expect("etcd");
    let options = Options {
        auth: AuthConfig {
            modes: vec![AuthorizationMode::Node, AuthorizationMode::Rbac],
            ..AuthConfig::default()
        },
        kubelet_client: kubelet,
        ..Options::default()
    };
    let apiserver = Apiserver::with_options(
        Config {
            etcd_servers: eps,
            cache: CacheConfig::default(),
        },
        options,
    )
    .expect("apiserver");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(apiserver.serve(listener, std::future::pending()));
    let client = Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
        .expect("client");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    poll("the bootstrap RBAC policy", || async {
        matches!(roles.get_opt("cluster-admin").await, Ok(Some(_)))
    })
    .await;
    client
}

async fn poll<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {DEADLINE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A simulated kubelet serving its API over TLS with `ca` as client CA,
/// anonymous requests refused, Webhook authorization.
/// `block` picks the node's own /24, as two Nodes never share a range.
async fn secure_kubelet(client: &Client, ca: &Ca, node: &str, block: u8) -> KubeletHandle {
    let serving = ca
        .issue(&CertSpec::loopback_server(
            &format!("system:node:{node}"),
            &[],
        ))
        .unwrap();
    let mut config = KubeletConfig::new(node, ballast_tests::workspace_bin("ballast"));
    // The sim runtime keeps nothing under its root.
    config.runtime = RuntimeKind::Sim;
    config.root_dir = std::env::temp_dir().join(node);
    config.pod_cidr = format!("127.250.{block}.0/24");
    config.record_events = false;
    config.api = ApiSecurity {
        tls: Some((serving.cert_pem.into_bytes(), serving.key_pem.into_bytes())),
        client_ca: Some(ca.cert_pem().as_bytes().to_vec()),
        anonymous: false,
        authorization: ballast_kubelet::AuthorizationMode::Webhook,
        ..ApiSecurity::default()
    };
    Kubelet::start(client.clone(), config)
        .await
        .expect("kubelet start")
}

/// A TLS client trusting `ca`, presenting `cert` when given.
fn tls_client(ca: &Ca, cert: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// `GET path` over TLS: (status, body), or the connection's error.
async fn get(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Whether the apiserver (not the kubelet) allows `user` `get nodes/proxy`.
async fn apiserver_allows(client: &Client, user: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(vec!["system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("get".into()),
                resource: Some("nodes".into()),
                subresource: Some("proxy".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .expect("review");
    answer.status.is_some_and(|s| s.allowed)
}

/// Grants `user` get on nodes/proxy; returns the binding's name.
async fn grant_proxy(client: &Client, user: &str) -> String {
    let name = unique("kubelet-proxy");
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["nodes/proxy".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            namespace: None,
        }]),
    };
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("cluster role");
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    name
}

#[tokio::test]
async fn the_kubelet_api_authenticates_by_certificate_and_authorizes_by_review() {
    let client = rbac_apiserver(KubeletClient::default()).await;
    let ca = Ca::new("kubelet-api-test-ca").unwrap();
    let node = unique("api-node");
    let kubelet = secure_kubelet(&client, &ca, &node, 0).await;
    let port = kubelet.port();
    let logs = "/containerLogs/default/no-such-pod/c";

    // No certificate: 401, whatever the path.
    let anonymous = tls_client(&ca, None);
    for path in ["/healthz", logs, "/logs/", "/exec/default/p/c"] {
        assert_eq!(
            get(port, &anonymous, path).await.unwrap(),
            (401, "Unauthorized".to_string()),
            "{path}"
        );
    }

    // A certificate from a CA the kubelet does not trust: no handshake.
    let stranger_ca = Ca::new("stranger").unwrap();
    let stranger = stranger_ca
        .issue(&CertSpec::client("mallory", &["system:masters"]))
        .unwrap();
    assert!(get(port, &tls_client(&ca, Some(&stranger)), "/healthz")
        .await
        .is_err());

    // The apiserver's kubelet client (system:masters): through to the routes.
    let apiserver = ca
        .issue(&CertSpec::client(
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        ))
        .unwrap();
    let apiserver = tls_client(&ca, Some(&apiserver));
    assert_eq!(
        get(port, &apiserver, "/healthz").await.unwrap(),
        (200, "ok".to_string())
    );
    let (code, body) = get(port, &apiserver, logs).await.unwrap();
    assert_eq!(code, 404, "{body}");

    // A user without RBAC rights on nodes/*: 403 with the kubelet's text.
    let nobody = ca.issue(&CertSpec::client(&unique("nobody"), &[])).unwrap();
    let nobody_name = cn_of(&nobody);
    let nobody = tls_client(&ca, Some(&nobody));
    let forbidden = |subs: &str| {
        format!("Forbidden (user={nobody_name}, verb=get, resource=nodes, subresource(s)=[{subs}])")
    };
    assert_eq!(
        get(port, &nobody, logs).await.unwrap(),
        (403, forbidden("proxy"))
    );
    assert_eq!(
        get(port, &nobody, "/healthz").await.unwrap(),
        (403, forbidden("healthz proxy"))
    );
    assert_eq!(
        get(port, &nobody, "/logs/syslog").await.unwrap(),
        (403, forbidden("log"))
    );

    // Another node's kubelet: the Node authorizer gives it nothing here.
    let other = ca
        .issue(&CertSpec::client("system:node:other", &["system:nodes"]))
        .unwrap();
    let (code, body) = get(port, &tls_client(&ca, Some(&other)), logs)
        .await
        .unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(
        body.starts_with("Forbidden (user=system:node:other, verb=get"),
        "{body}"
    );

    // The denial is cached (30 s): granted at the apiserver, still refused
    // by the kubelet.
    let binding = grant_proxy(&client, &nobody_name).await;
    poll("the grant to reach the apiserver's RBAC", || {
        apiserver_allows(&client, &nobody_name)
    })
    .await;
    assert_eq!(
        get(port, &nobody, logs).await.unwrap(),
        (403, forbidden("proxy"))
    );

    // A fresh user granted first is let through, and the approval is
    // cached (5 m): revoked at the apiserver, still allowed here.
    let granted = ca
        .issue(&CertSpec::client(&unique("granted"), &[]))
        .unwrap();
    let granted_name = cn_of(&granted);
    let granted = tls_client(&ca, Some(&granted));
    let granted_binding = grant_proxy(&client, &granted_name).await;
    poll("the grant to reach the apiserver's RBAC", || {
        apiserver_allows(&client, &granted_name)
    })
    .await;
    assert_eq!(get(port, &granted, logs).await.unwrap().0, 404);
    Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&granted_binding, &DeleteParams::default())
        .await
        .expect("revoke");
    poll("the revocation to reach the apiserver's RBAC", || async {
        !apiserver_allows(&client, &granted_name).await
    })
    .await;
    assert_eq!(get(port, &granted, logs).await.unwrap().0, 404);
    // The grant is for nodes/proxy only: /logs/ is nodes/log.
    assert_eq!(get(port, &granted, "/logs/x").await.unwrap().0, 403);

    for name in [binding, granted_binding] {
        let _ = Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRole>::all(client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
    }
    kubelet.stop().await;
}

/// `pods/log` through apiservers with different kubelet client settings
/// towards one secure kubelet: with the kubelet client certificate and
/// the right CA the logs come through; with a CA that did not sign the
/// kubelet's serving certificate the handshake is refused; without a
/// client certificate the kubelet answers 401, passed on.
#[tokio::test]
async fn the_apiserver_reaches_the_kubelet_with_its_client_certificate() {
    let ca = Ca::new("kubelet-client-test-ca").unwrap();
    let cert = ca
        .issue(&CertSpec::client(
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        ))
        .unwrap();
    let (cert_pem, key_pem) = (cert.cert_pem.as_bytes(), cert.key_pem.as_bytes());
    let ca_pem = ca.cert_pem().as_bytes();
    let good = KubeletClient::tls(Some(cert_pem), Some(key_pem), Some(ca_pem)).unwrap();
    let client = rbac_apiserver(good).await;
    let node = unique("logs-node");
    let kubelet = secure_kubelet(&client, &ca, &node, 1).await;

    let name = unique("sim-pod");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let params = LogParams {
        container: Some("c".into()),
        ..LogParams::default()
    };
    // 404 from the kubelet until its worker has the pod; then its (empty,
    // simulated) log.
    poll("pods/log through the kubelet", || async {
        pods.logs(&name, &params).await.is_ok()
    })
    .await;

    // Another CA: the kubelet's serving certificate is not trusted.
    let stranger = Ca::new("stranger").unwrap();
    let wrong_ca = KubeletClient::tls(
        Some(cert_pem),
        Some(key_pem),
        Some(stranger.cert_pem().as_bytes()),
    )
    .unwrap();
    let other: Api<Pod> = Api::namespaced(rbac_apiserver(wrong_ca).await, "default");
    let err = other.logs(&name, &params).await.unwrap_err().to_string();
    assert!(
        err.contains("unable to reach the kubelet") && err.contains("TLS handshake"),
        "{err}"
    );

    // TLS, the right CA, no client certificate: the kubelet's 401.
    let anonymous = KubeletClient::tls(None, None, Some(ca_pem)).unwrap();
    let other: Api<Pod> = Api::namespaced(rbac_apiserver(anonymous).await, "default");
    let err = other.logs(&name, &params).await.unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 401, "{status:?}");
            assert!(status.message.contains("Unauthorized"), "{status:?}");
        }
        other => panic!("expected the kubelet's 401, got {other}"),
    }

    let _ = pods.delete(&name, &DeleteParams::default()).await;
    kubelet.stop().await;
}

/// The CN a test certificate was issued for.
fn cn_of(issued: &Issued) -> String {
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    cn.as_str().unwrap().to_string()
}
