//! `ballast up`: a whole cluster on this machine — three storage members
//! (real `ballast server` processes on etcd's local-cluster ports), an
//! apiserver over them, the controller manager, the scheduler and kubelets
//! (`--nodes` processes with the process runtime, or one process hosting
//! every node with `--runtime sim`), with a kubeconfig written beside the
//! data, and (with the process runtime) one `ballast proxy` for the
//! machine: every node shares its loopback network, so one proxy serves
//! the cluster IPs and NodePorts of all (see the ballast-proxy crate).
//! `ballast dns` answers cluster DNS on 127.0.0.10 (port 53 when it may
//! bind it, else 10053, else a free port), and the kubelets know it
//! (`--cluster-dns`, `--cluster-domain`). The controller manager gives
//! every Node its pod CIDR (a /24 of 127.128.0.0/9,
//! `--allocate-node-cidrs`); the kubelets, simulated ones too, are started
//! without `--pod-cidr` and take their Node's.
//! All data and logs live under one directory. Ctrl-C or SIGTERM
//! stops every process; running it again on the same directory brings the
//! same cluster back.
//!
//! Secure by default (see [`security`]): mutual TLS between the members and
//! to them, the apiserver on HTTPS with client-certificate authentication
//! and `--authorization-mode=Node,RBAC`, every component with its own
//! certificate; the kubelet APIs on HTTPS, reached by the apiserver with
//! its kubelet client certificate, every other caller authorized by a
//! SubjectAccessReview (`--anonymous-auth=false
//! --authorization-mode=Webhook`). `--insecure` runs everything on plain
//! HTTP instead.

mod security;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use tokio::process::{Child, Command};

use security::{CertFiles, Pki, SIM_KUBELET_USER};

#[derive(Args)]
pub struct UpArgs {
    /// Where every part keeps its data and logs.
    #[arg(long, default_value = "./ballast-data")]
    data_dir: PathBuf,
    /// Start only the three storage members.
    #[arg(long)]
    storage_only: bool,
    /// The apiserver's port on 127.0.0.1 (default 6443 for HTTPS, 8080
    /// with --insecure).
    #[arg(long)]
    apiserver_port: Option<u16>,
    /// No TLS, authentication or authorization anywhere: plain HTTP on
    /// loopback, as in Kubernetes' old insecure port.
    #[arg(long)]
    insecure: bool,
    /// How the kubelets run containers: real local processes, or simulated.
    #[arg(long, value_enum, default_value_t = Runtime::Process)]
    runtime: Runtime,
    /// Number of nodes (kubelets; each process-runtime node is a process
    /// of its own, so at most 150 of those).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    nodes: u32,
    /// Process-runtime kubelets give each container a mount namespace of
    /// its own, with the pod's volumes (`ballast kubelet
    /// --mount-namespaces`; needs root).
    #[arg(long)]
    mount_namespaces: bool,
    /// Process-runtime kubelets give each pod network, UTS and IPC
    /// namespaces of its own (`ballast kubelet --pod-namespaces`; needs root).
    #[arg(long)]
    pod_namespaces: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Runtime {
    Process,
    Sim,
}

/// (name, client port, peer port): etcd's own local-cluster layout.
const MEMBERS: [(&str, u16, u16); 3] = [
    ("member-1", 2379, 2380),
    ("member-2", 22379, 22380),
    ("member-3", 32379, 32380),
];

/// The address every kubelet reports as its node's InternalIP (and
/// serves its API on).
const NODE_ADDRESS: &str = "127.0.0.1";
/// The service account token issuer, kubeadm's default.
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Where the proxy serves `/healthz` (kube-proxy's port, on loopback).
const PROXY_HEALTHZ: &str = "127.0.0.1:10256";
/// Where the proxy serves `/metrics` (kube-proxy's default).
const PROXY_METRICS: &str = "127.0.0.1:10249";

/// Where `ballast dns` listens (the port is chosen at start).
const DNS_ADDRESS: &str = "127.0.0.10";
/// The cluster domain.
const CLUSTER_DOMAIN: &str = "cluster.local";
/// The range Nodes' pod CIDRs are cut from, apart from the Services'
/// 127.96.0.0/16 and from 127.0.0.1.
const CLUSTER_CIDR: &str = "127.128.0.0/9";
/// `ballast dns`'s user, as kube-dns's.
const DNS_USER: &str = "system:kube-dns";

/// How long any one part may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

fn url(scheme: &str, port: u16) -> String {
    format!("{scheme}://127.0.0.1:{port}")
}

/// Whether the storage member at `endpoint` answers a Status call.
async fn storage_healthy(endpoint: &str, tls: Option<&tonic::transport::ClientTlsConfig>) -> bool {
    use ballast_proto::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
    let attempt = async {
        let mut ep = tonic::transport::Endpoint::from_shared(endpoint.to_string()).ok()?;
        if let Some(tls) = tls {
            ep = ep.tls_config(tls.clone()).ok()?;
        }
        let channel = ep.connect().await.ok()?;
        MaintenanceClient::new(channel)
            .status(StatusRequest {})
            .await
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(6), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// Whether the apiserver on `port` answers `/readyz` with 200.
async fn apiserver_ready(port: u16, client: &kube::Client) -> bool {
    // Only ask once it listens: kube's client logs every refused connection.
    if tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        return false;
    }
    let request = hyper::Request::get("/readyz").body(Vec::new());
    let Ok(request) = request else { return false };
    // A 500 while the apiserver starts is the expected "not yet"; kube's
    // client would log each as an error, so the poll runs unlogged.
    use tracing::instrument::WithSubscriber;
    let quiet = client
        .request_text(request)
        .with_subscriber(tracing::subscriber::NoSubscriber::default());
    let answer = tokio::time::timeout(Duration::from_secs(6), quiet).await;
    matches!(answer, Ok(Ok(body)) if body.trim() == "ok")
}

/// Whether the proxy answers `/healthz` with 200 (it has synced).
async fn proxy_healthy() -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(PROXY_HEALTHZ).await.ok()?;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    let answer = tokio::time::timeout(Duration::from_secs(6), attempt).await;
    matches!(answer, Ok(Some(true)))
}

/// The first of ports 53 (root, or CAP_NET_BIND_SERVICE) and 10053 free
/// for both UDP and TCP on [`DNS_ADDRESS`], else one the kernel picks free
/// for both. Probed, then let go for `ballast dns` to bind.
fn dns_port() -> anyhow::Result<u16> {
    let ip: std::net::IpAddr = DNS_ADDRESS.parse().expect("an address");
    let free_for_both = |port: u16| -> Option<u16> {
        let tcp = std::net::TcpListener::bind((ip, port)).ok()?;
        let port = tcp.local_addr().ok()?.port();
        std::net::UdpSocket::bind((ip, port)).ok().map(|_| port)
    };
    [53, 10053]
        .into_iter()
        .find_map(free_for_both)
        .or_else(|| (0..16).find_map(|_| free_for_both(0)))
        .with_context(|| format!("no port free for both UDP and TCP on {DNS_ADDRESS}"))
}

/// Where the cluster DNS serves its status: CoreDNS's metrics port on
/// [`DNS_ADDRESS`] when free, else one the kernel picks (probed, then let
/// go for `ballast dns` to bind).
fn dns_status_address() -> anyhow::Result<std::net::SocketAddr> {
    let ip: std::net::IpAddr = DNS_ADDRESS.parse().expect("an address");
    let free = |port: u16| {
        std::net::TcpListener::bind((ip, port))
            .and_then(|l| l.local_addr())
            .ok()
    };
    free(crate::dns::STATUS_PORT)
        .or_else(|| free(0))
        .with_context(|| format!("no TCP port free on {DNS_ADDRESS}"))
}

/// Whether the cluster DNS answers the `kubernetes` Service's name.
async fn dns_ready(addr: std::net::SocketAddr) -> bool {
    let name = format!("kubernetes.default.svc.{CLUSTER_DOMAIN}.");
    let answer = ballast_dns::client::query(addr, &name, ballast_dns::RecordType::A, false).await;
    matches!(answer, Ok(m) if m.metadata.response_code == ballast_dns::ResponseCode::NoError && !m.answers.is_empty())
}

/// The ClusterRole `system:kube-dns` (kube's, plus the EndpointSlices,
/// pods and namespaces `ballast dns` reads, as CoreDNS's role has them),
/// bound to the DNS server's user. Existing objects are left alone.
async fn bind_dns(admin: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
    };
    let meta = || kube::api::ObjectMeta {
        name: Some(DNS_USER.into()),
        ..Default::default()
    };
    let rule = |group: &str, resources: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: vec!["list".into(), "watch".into()],
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: meta(),
        rules: Some(vec![
            rule("", &["endpoints", "services", "pods", "namespaces"]),
            rule("discovery.k8s.io", &["endpointslices"]),
        ]),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: DNS_USER.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: DNS_USER.into(),
            namespace: None,
        }]),
    };
    let created = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => other,
    };
    let roles: kube::Api<ClusterRole> = kube::Api::all(admin.clone());
    created(roles.create(&Default::default(), &role).await.map(drop))
        .context("creating the ClusterRole system:kube-dns")?;
    let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(admin.clone());
    created(
        bindings
            .create(&Default::default(), &binding)
            .await
            .map(drop),
    )
    .context("binding system:kube-dns")?;
    Ok(())
}

/// How many Nodes the apiserver reports Ready.
async fn ready_nodes(client: &kube::Client) -> usize {
    use k8s_openapi::api::core::v1::Node;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let list = tokio::time::timeout(Duration::from_secs(6), nodes.list(&Default::default())).await;
    let Ok(Ok(list)) = list else { return 0 };
    list.items
        .iter()
        .filter(|node| {
            let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

/// Whether the ServiceAccount `default/default` exists.
async fn default_service_account(client: &kube::Client) -> bool {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), "default");
    let got = tokio::time::timeout(Duration::from_secs(6), accounts.get_opt("default")).await;
    matches!(got, Ok(Ok(Some(_))))
}

/// One running part of the cluster: a child process and its log file.
struct Part {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The processes of the cluster, stopped together.
struct Parts {
    exe: PathBuf,
    data_dir: PathBuf,
    running: Vec<Part>,
}

impl Parts {
    /// Starts `ballast <args>` as the part `name`, logging to logs/<name>.log.
    fn spawn(&mut self, name: &str, args: &[String]) -> anyhow::Result<()> {
        let logs = self.data_dir.join("logs");
        security::private_dir(&logs)?;
        let log = logs.join(format!("{name}.log"));
        let child = Command::new(&self.exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(security::private_file(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.running.push(Part {
            name: name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    /// An error if some part has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for part in &mut self.running {
            if let Ok(Some(status)) = part.child.try_wait() {
                bail!(
                    "{} exited ({status}); see {}",
                    part.name,
                    part.log.display()
                );
            }
        }
        Ok(())
    }

    /// Polls `ready` until it holds, a part exits, or READY_TIMEOUT passes.
    async fn wait_for<F, Fut>(&mut self, what: &str, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready().await {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("{what} not ready within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// SIGTERM to every part, newest first (kubelets before the apiserver,
    /// the apiserver before storage); SIGKILL after 15 s, and then the
    /// containers of a killed kubelet are killed too, so nothing is left.
    async fn stop(&mut self) {
        for part in self.running.iter().rev() {
            if let Some(pid) = part.child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for part in self.running.iter_mut().rev() {
            if tokio::time::timeout(Duration::from_secs(15), part.child.wait())
                .await
                .is_err()
            {
                let _ = part.child.kill().await;
                // A kubelet's root is kubelet/<node> (see `start`).
                if let Some(node) = part.name.strip_prefix("kubelet-") {
                    let root = self.data_dir.join("kubelet").join(node);
                    ballast_kubelet::runtime::process::kill_all(&root);
                }
            }
        }
    }

    /// Resolves when any part exits, with its name.
    async fn first_exit(&mut self) -> (String, std::process::ExitStatus) {
        loop {
            for part in &mut self.running {
                if let Ok(Some(status)) = part.child.try_wait() {
                    return (part.name.clone(), status);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// How the parts reach each other: plain HTTP, or TLS with the cluster's
/// certificates — the Kubernetes side's and the storage's own.
struct Security {
    pki: Option<Pki>,
    storage: Option<Pki>,
}

impl Security {
    fn scheme(&self) -> &'static str {
        if self.pki.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// `--flag path` pairs naming the files of `cert` and the CA of `pki`.
fn tls_flags(pki: &Pki, pairs: &[(&str, TlsFile)], cert: &CertFiles) -> Vec<String> {
    let mut out = Vec::new();
    for (flag, file) in pairs {
        let path = match file {
            TlsFile::Cert => cert.cert.clone(),
            TlsFile::Key => cert.key.clone(),
            TlsFile::Ca => pki.ca_file(),
        };
        out.push(flag.to_string());
        out.push(path.to_string_lossy().into_owned());
    }
    out
}

#[derive(Clone, Copy)]
enum TlsFile {
    Cert,
    Key,
    Ca,
}

fn member_args(data_dir: &Path, i: usize, security: &Security) -> anyhow::Result<Vec<String>> {
    let (name, client, peer) = MEMBERS[i];
    let scheme = security.scheme();
    let cluster: Vec<String> = MEMBERS
        .iter()
        .map(|(n, _, p)| format!("{n}={}", url(scheme, *p)))
        .collect();
    let mut args: Vec<String> = [
        "server",
        "--name",
        name,
        "--data-dir",
        &data_dir.join(name).to_string_lossy(),
        "--listen-client-urls",
        &url(scheme, client),
        "--advertise-client-urls",
        &url(scheme, client),
        "--listen-peer-urls",
        &url(scheme, peer),
        "--initial-advertise-peer-urls",
        &url(scheme, peer),
        "--initial-cluster",
        &cluster.join(","),
        "--initial-cluster-token",
        "ballast-up",
    ]
    .map(String::from)
    .to_vec();
    if let Some(pki) = &security.storage {
        let cert = pki.member(name)?;
        args.extend(tls_flags(
            pki,
            &[
                ("--cert-file", TlsFile::Cert),
                ("--key-file", TlsFile::Key),
                ("--trusted-ca-file", TlsFile::Ca),
                ("--peer-cert-file", TlsFile::Cert),
                ("--peer-key-file", TlsFile::Key),
                ("--peer-trusted-ca-file", TlsFile::Ca),
            ],
            &cert,
        ));
        args.extend([
            "--client-cert-auth".into(),
            "--peer-client-cert-auth".into(),
        ]);
    }
    Ok(args)
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.runtime == Runtime::Process && args.nodes > 150 {
        bail!("--nodes {}: the process runtime takes at most 150 nodes (a kubelet process each); use --runtime sim for more", args.nodes);
    }
    // Keys, kubeconfigs, storage and the kubelets' pods: the owner's alone,
    // so no container (run as another user) can reach them.
    security::private_dir(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    println!("ballast up: data in {}", data_dir.display());
    let mut parts = Parts {
        exe: std::env::current_exe()?,
        data_dir: data_dir.clone(),
        running: Vec::new(),
    };
    let started = tokio::select! {
        started = start(&mut parts, &args, &data_dir) => started,
        _ = crate::shutdown_signal() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    if let Err(e) = started {
        parts.stop().await;
        return Err(e);
    }
    println!("cluster ready; Ctrl-C stops everything");

    tokio::select! {
        _ = crate::shutdown_signal() => {}
        (name, status) = parts.first_exit() => {
            eprintln!("{name} exited unexpectedly ({status}); stopping the cluster");
        }
    }
    println!("stopping…");
    parts.stop().await;
    println!("stopped");
    Ok(())
}

/// A kube client for the apiserver from the kubeconfig at `path`.
async fn kube_client(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Lets the simulated kubelet act for all its nodes: the Node authorizer
/// only knows one node per identity, so `up` binds it to `cluster-admin`.
async fn bind_sim_kubelet(admin: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(SIM_KUBELET_USER.replace(':', "-")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: SIM_KUBELET_USER.into(),
            namespace: None,
        }]),
    };
    let api: kube::Api<ClusterRoleBinding> = kube::Api::all(admin.clone());
    match api.create(&Default::default(), &binding).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e).context("binding the simulated kubelet to cluster-admin"),
    }
}

/// Starts every part in order, each once the one before it is ready.
async fn start(parts: &mut Parts, args: &UpArgs, data_dir: &Path) -> anyhow::Result<()> {
    let security = if args.insecure {
        Security {
            pki: None,
            storage: None,
        }
    } else {
        Security {
            pki: Some(Pki::open(data_dir)?),
            storage: Some(Pki::open_storage(data_dir)?),
        }
    };
    let scheme = security.scheme();
    for (i, (name, _, _)) in MEMBERS.iter().enumerate() {
        // A member's data (its WAL, its database, auth.pb) is root's alone
        // even should the data dir be opened: the member itself creates
        // its files with the umask's modes.
        security::private_dir(&data_dir.join(name))?;
        parts.spawn(name, &member_args(data_dir, i, &security)?)?;
    }
    let etcdctl_cert = match &security.storage {
        Some(pki) => Some(pki.client("etcdctl", "root", &[])?),
        None => None,
    };
    let storage_tls = match (&security.storage, &etcdctl_cert) {
        (Some(pki), Some(cert)) => Some(security::storage_tls(pki, cert)?),
        _ => None,
    };
    for (name, client, _) in MEMBERS {
        let endpoint = url(scheme, client);
        parts
            .wait_for(name, || storage_healthy(&endpoint, storage_tls.as_ref()))
            .await?;
        println!("  {name} healthy on {endpoint}");
    }
    let endpoints: Vec<String> = MEMBERS.iter().map(|(_, c, _)| url(scheme, *c)).collect();
    println!("storage cluster ready. Try:");
    let tls_args = match (&security.storage, &etcdctl_cert) {
        (Some(pki), Some(cert)) => format!(
            " --cacert {} --cert {} --key {}",
            pki.ca_file().display(),
            cert.cert.display(),
            cert.key.display()
        ),
        _ => String::new(),
    };
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={}{tls_args} endpoint status -w table",
        endpoints.join(",")
    );
    if args.storage_only {
        return Ok(());
    }

    let port = args
        .apiserver_port
        .unwrap_or(if args.insecure { 8080 } else { 6443 });
    let mut apiserver_args = vec![
        "apiserver".to_string(),
        "--etcd-servers".into(),
        endpoints.join(","),
        "--bind-address".into(),
        "127.0.0.1".into(),
        // Service addresses in loopback, apart from the nodes' pod CIDRs
        // (/24s of 127.128.0.0/9).
        "--service-cluster-ip-range".into(),
        "127.96.0.0/16".into(),
    ];
    let apiserver_url = url(scheme, port);
    let kubeconfig = data_dir.join("kubeconfig");
    let kubeconfigs = data_dir.join("kubeconfigs");
    // The kubeconfig of one identity (secure) or the shared plain one.
    let identity = |name: &str, user: &str, groups: &[&str]| -> anyhow::Result<PathBuf> {
        match &security.pki {
            Some(pki) => {
                let path = kubeconfigs.join(format!("{name}.kubeconfig"));
                let cert = pki.client(name, user, groups)?;
                pki.write_kubeconfig(&path, &apiserver_url, &cert)?;
                Ok(path)
            }
            None => Ok(kubeconfig.clone()),
        }
    };
    match (&security.pki, &security.storage) {
        (Some(pki), Some(storage)) => {
            let serving = pki.ensure(
                "apiserver",
                &ballast_pki::CertSpec::loopback_server("kube-apiserver", &[]),
            )?;
            let etcd_client =
                storage.client("apiserver-etcd-client", "kube-apiserver-etcd-client", &[])?;
            // HTTPS only: no trusted plain-HTTP port.
            apiserver_args.extend([
                "--secure-port".into(),
                port.to_string(),
                "--port".into(),
                "0".into(),
            ]);
            apiserver_args.extend(tls_flags(
                pki,
                &[
                    ("--tls-cert-file", TlsFile::Cert),
                    ("--tls-private-key-file", TlsFile::Key),
                    ("--client-ca-file", TlsFile::Ca),
                ],
                &serving,
            ));
            apiserver_args.extend(tls_flags(
                storage,
                &[
                    ("--etcd-certfile", TlsFile::Cert),
                    ("--etcd-keyfile", TlsFile::Key),
                    ("--etcd-cafile", TlsFile::Ca),
                ],
                &etcd_client,
            ));
            // HTTPS to the kubelets, as kubeadm's apiserver: its own
            // client certificate, their serving certificates checked.
            let kubelet_client = pki.apiserver_kubelet_client()?;
            apiserver_args.extend(tls_flags(
                pki,
                &[
                    ("--kubelet-client-certificate", TlsFile::Cert),
                    ("--kubelet-client-key", TlsFile::Key),
                    ("--kubelet-certificate-authority", TlsFile::Ca),
                ],
                &kubelet_client,
            ));
            apiserver_args.extend([
                "--authorization-mode".into(),
                "Node,RBAC".into(),
                "--anonymous-auth".into(),
                "false".into(),
            ]);
            // Service account tokens, as kubeadm sets them up.
            let sa = pki.service_account_key()?;
            apiserver_args.extend([
                "--service-account-issuer".into(),
                SERVICE_ACCOUNT_ISSUER.into(),
                "--service-account-signing-key-file".into(),
                sa.key.to_string_lossy().into_owned(),
                "--service-account-key-file".into(),
                sa.cert.to_string_lossy().into_owned(),
            ]);
            let admin = pki.client("admin", "ballast-admin", &["system:masters"])?;
            pki.write_kubeconfig(&kubeconfig, &apiserver_url, &admin)?;
        }
        _ => {
            apiserver_args.extend(["--port".into(), port.to_string()]);
            security::write_plain_kubeconfig(&kubeconfig, &apiserver_url)?;
        }
    }
    parts.spawn("apiserver", &apiserver_args)?;
    let admin = kube_client(&kubeconfig).await?;
    parts
        .wait_for("the apiserver", || apiserver_ready(port, &admin))
        .await?;
    println!("  apiserver ready on {apiserver_url}");

    let component = |cmd: &str, kubeconfig: &Path| {
        vec![
            cmd.to_string(),
            "--kubeconfig".into(),
            kubeconfig.to_string_lossy().into_owned(),
        ]
    };
    let controller_manager = identity("controller-manager", "system:kube-controller-manager", &[])?;
    let mut controller_manager = component("controller-manager", &controller_manager);
    // Every Node's pod CIDR from the cluster CIDR (kubeadm's podSubnet).
    controller_manager.extend(
        [
            "--allocate-node-cidrs",
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--service-cluster-ip-range",
            "127.96.0.0/16",
        ]
        .map(String::from),
    );
    parts.spawn("controller-manager", &controller_manager)?;
    let scheduler = identity("scheduler", "system:kube-scheduler", &[])?;
    parts.spawn("scheduler", &component("scheduler", &scheduler))?;
    // The cluster DNS, before the kubelets that point pods at it.
    if security.pki.is_some() {
        bind_dns(&admin).await?;
    }
    let dns_addr = std::net::SocketAddr::new(DNS_ADDRESS.parse().expect("an address"), dns_port()?);
    let dns_status = dns_status_address()?;
    let dns = identity("dns", DNS_USER, &[])?;
    let mut dns_args = component("dns", &dns);
    dns_args.extend([
        "--listen".into(),
        dns_addr.to_string(),
        "--status-address".into(),
        dns_status.to_string(),
        "--cluster-domain".into(),
        CLUSTER_DOMAIN.into(),
    ]);
    parts.spawn("dns", &dns_args)?;
    // A resolv.conf names no port: pods resolve through the cluster DNS
    // only when it has port 53 (else ClusterFirst pods fall back to the
    // node's resolver, with kube's MissingClusterDNS warning).
    let mut cluster_dns = vec!["--cluster-domain".to_string(), CLUSTER_DOMAIN.to_string()];
    if dns_addr.port() == 53 {
        cluster_dns.extend(["--cluster-dns".to_string(), DNS_ADDRESS.to_string()]);
    }
    let kubelets = data_dir.join("kubelet");
    // The kubelet API of `node` (serving on the node's address) as
    // kubeadm's kubelets have it: HTTPS, client certificates from the
    // cluster CA, no anonymous requests, each request reviewed by the
    // apiserver (SubjectAccessReview on nodes/proxy, nodes/log, …).
    let kubelet_api = |node: &str| -> anyhow::Result<Vec<String>> {
        let Some(pki) = &security.pki else {
            return Ok(Vec::new());
        };
        let serving = pki.kubelet_serving(node, NODE_ADDRESS)?;
        let mut flags = tls_flags(
            pki,
            &[
                ("--tls-cert-file", TlsFile::Cert),
                ("--tls-private-key-file", TlsFile::Key),
                ("--client-ca-file", TlsFile::Ca),
            ],
            &serving,
        );
        flags.extend([
            "--anonymous-auth=false".into(),
            "--authentication-token-webhook=true".into(),
            "--authorization-mode".into(),
            "Webhook".into(),
        ]);
        Ok(flags)
    };
    match args.runtime {
        Runtime::Process => {
            for i in 1..=args.nodes {
                let node = format!("node-{i}");
                let user = format!("system:node:{node}");
                let config = identity(&format!("kubelet-{node}"), &user, &["system:nodes"])?;
                let mut kubelet = component("kubelet", &config);
                kubelet.extend([
                    "--node-name".into(),
                    node.clone(),
                    "--runtime".into(),
                    "process".into(),
                    "--root-dir".into(),
                    kubelets.join(&node).to_string_lossy().into_owned(),
                    // Each kubelet's API (logs) on a free port, published in its Node.
                    "--port".into(),
                    "0".into(),
                ]);
                if args.mount_namespaces {
                    kubelet.push("--mount-namespaces".into());
                }
                if args.pod_namespaces {
                    kubelet.push("--pod-namespaces".into());
                }
                kubelet.extend(cluster_dns.clone());
                kubelet.extend(kubelet_api(&node)?);
                parts.spawn(&format!("kubelet-{node}"), &kubelet)?;
            }
            // One proxy for the machine, acting for node-1: the nodes share
            // this loopback network, their cluster IPs and NodePorts.
            let config = identity("proxy", "system:kube-proxy", &[])?;
            let mut proxy = component("proxy", &config);
            proxy.extend(
                [
                    "--hostname-override",
                    "node-1",
                    "--nodeport-addresses",
                    NODE_ADDRESS,
                    "--healthz-bind-address",
                    PROXY_HEALTHZ,
                    "--metrics-bind-address",
                    PROXY_METRICS,
                ]
                .map(String::from),
            );
            parts.spawn("proxy", &proxy)?;
        }
        Runtime::Sim => {
            if security.pki.is_some() {
                bind_sim_kubelet(&admin).await?;
            }
            let config = identity("kubelet-sim", SIM_KUBELET_USER, &[])?;
            let mut kubelet = component("kubelet", &config);
            kubelet.extend([
                "--runtime".into(),
                "sim".into(),
                "--nodes".into(),
                args.nodes.to_string(),
                "--node-name".into(),
                "sim".into(),
                "--root-dir".into(),
                kubelets.join("sim").to_string_lossy().into_owned(),
                "--port".into(),
                "0".into(),
            ]);
            kubelet.extend(cluster_dns.clone());
            kubelet.extend(kubelet_api("sim")?);
            parts.spawn("kubelet-sim", &kubelet)?;
        }
    }
    let want = args.nodes as usize;
    parts
        .wait_for(&format!("{want} nodes"), || async {
            ready_nodes(&admin).await >= want
        })
        .await?;
    // Until the controller manager has made it, the ServiceAccount
    // admission refuses pods in `default`.
    parts
        .wait_for("the default ServiceAccount", || async {
            default_service_account(&admin).await
        })
        .await?;
    println!("  controller-manager, scheduler and {want} kubelets running; {want} nodes Ready");
    if args.runtime == Runtime::Process {
        parts.wait_for("the proxy", proxy_healthy).await?;
        println!(
            "  proxy serving Service cluster IPs (127.96.0.0/16) and NodePorts on {NODE_ADDRESS}"
        );
    }
    parts
        .wait_for("the cluster DNS", || dns_ready(dns_addr))
        .await?;
    println!(
        "  cluster DNS on {dns_addr} (UDP and TCP, {CLUSTER_DOMAIN} only, no recursion; /metrics, /health and /ready on http://{dns_status}); try:\n    dig @{} -p {} kubernetes.default.svc.{CLUSTER_DOMAIN}",
        dns_addr.ip(),
        dns_addr.port()
    );
    if dns_addr.port() != 53 {
        println!(
            "  (not on port 53: pods' resolv.conf cannot name it, so their ClusterFirst falls back to the node's resolver)"
        );
    }
    println!("Try:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get nodes");
    println!("  kubectl apply -f examples/web.yaml && kubectl get pods -o wide");
    Ok(())
}
