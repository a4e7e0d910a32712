//! The cluster a soak runs on, with every process id and directory the
//! recorder reads.
//!
//! Either the soak starts one itself — the parts `ballast up --insecure
//! --runtime sim` starts (three storage members, the apiserver, the
//! controller manager, the scheduler, one kubelet process hosting the
//! simulated nodes), the same arguments, logs in `<data-dir>/logs/`, but on
//! free loopback ports (so it never collides with another cluster on the
//! machine) and with the apiserver's `--event-ttl` and
//! `--etcd-compaction-interval` set by the soak — or it attaches to a
//! running `ballast up` found by its data directory: the storage members
//! are the `ballast server` processes whose `--data-dir` lies in it, and
//! the other parts are their siblings (children of the same `ballast up`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ballast_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ballast_proto::etcdserverpb::StatusRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use tokio::process::{Child, Command};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long any one part may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the soak's cluster comes from.
#[derive(Debug, Clone)]
pub enum ClusterSource {
    /// Start a new cluster.
    Spawn(SpawnConfig),
    /// Attach to the running `ballast up` whose `--data-dir` is this.
    Attach { data_dir: PathBuf },
}

/// A cluster the soak starts and stops itself.
#[derive(Debug, Clone)]
pub struct SpawnConfig {
    /// The `ballast` binary.
    pub exe: PathBuf,
    /// The data directory (must be new or empty); `None`: a new one under
    /// the system's temporary directory.
    pub data_dir: Option<PathBuf>,
    /// Simulated nodes.
    pub nodes: u32,
    /// The apiserver's `--event-ttl`.
    pub event_ttl: Duration,
    /// The apiserver's `--etcd-compaction-interval` (zero: off).
    pub compaction_interval: Duration,
    /// Leave the data directory in place at the end.
    pub keep: bool,
}

/// One storage member.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// Its client URL.
    pub endpoint: String,
    pub pid: Option<u32>,
    /// Its `--data-dir`.
    pub dir: PathBuf,
}

/// Process ids of the control plane's parts (`None` when not found).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pids {
    pub apiserver: Option<u32>,
    pub controller_manager: Option<u32>,
    pub scheduler: Option<u32>,
    pub kubelet: Option<u32>,
}

/// A running cluster: how to reach it and where its processes and files are.
pub struct Cluster {
    pub data_dir: PathBuf,
    pub members: Vec<Member>,
    /// One lazily connected gRPC channel per member, in `members` order.
    pub storage: Vec<Channel>,
    pub pids: Pids,
    pub kube: Option<kube::Client>,
    /// The simulated nodes expected Ready.
    pub nodes: usize,
    /// What was started or found, for the report.
    pub description: String,
    /// Processes this soak started (name, child, log), oldest first.
    children: Vec<(String, Child, PathBuf)>,
    remove_dir: bool,
    tls: Option<ClientTlsConfig>,
}

impl Cluster {
    /// Starts or finds the cluster `source` names.
    pub async fn open(source: &ClusterSource) -> anyhow::Result<Cluster> {
        match source {
            ClusterSource::Spawn(config) => spawn(config).await,
            ClusterSource::Attach { data_dir } => attach(data_dir).await,
        }
    }

    /// The kube client (set once the apiserver is up).
    pub fn client(&self) -> kube::Client {
        self.kube.clone().expect("the cluster has an apiserver")
    }

    /// Stops the processes this soak started (SIGTERM, newest first; SIGKILL
    /// after 15 s) and removes the data directory unless it is kept. An
    /// attached cluster is left alone.
    pub async fn stop(&mut self) {
        for (_, child, _) in self.children.iter().rev() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for (_, child, _) in self.children.iter_mut().rev() {
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        self.children.clear();
        if self.remove_dir {
            if let Err(e) = std::fs::remove_dir_all(&self.data_dir) {
                eprintln!("soak: could not remove {}: {e}", self.data_dir.display());
            }
        }
    }

    /// An error naming the first part this soak started that has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child, log) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited ({status}); see {}", log.display());
            }
        }
        Ok(())
    }

    fn spawn_part(&mut self, exe: &Path, name: &str, args: &[String]) -> anyhow::Result<u32> {
        let logs = self.data_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{name}.log"));
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({})", exe.display()))?;
        let pid = child.id().context("the child has no pid")?;
        self.children.push((name.to_string(), child, log));
        Ok(pid)
    }

    /// Polls `ready` until it holds, a started part exits, or READY_TIMEOUT
    /// passes.
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
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    fn channel(&self, endpoint: &str) -> anyhow::Result<Channel> {
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .with_context(|| format!("storage endpoint {endpoint:?}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20));
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.clone())?;
        }
        Ok(ep.connect_lazy())
    }
}

/// Whether the member behind `channel` answers a Status call.
async fn storage_healthy(channel: &Channel) -> bool {
    let mut client = MaintenanceClient::new(channel.clone());
    let call = client.status(StatusRequest {});
    matches!(
        tokio::time::timeout(Duration::from_secs(5), call).await,
        Ok(Ok(_))
    )
}

/// Whether the apiserver answers `/readyz` with `ok`.
async fn apiserver_ready(port: u16, client: &kube::Client) -> bool {
    if tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        return false;
    }
    let Ok(request) = hyper::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    let answer = tokio::time::timeout(Duration::from_secs(6), client.request_text(request)).await;
    matches!(answer, Ok(Ok(body)) if body.trim() == "ok")
}

/// Nodes whose Ready condition is True, and all nodes.
pub async fn node_readiness(client: &kube::Client) -> anyhow::Result<(usize, usize)> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = tokio::time::timeout(
        Duration::from_secs(20),
        nodes.list(&ListParams::default().match_any()),
    )
    .await
    .context("listing nodes: no answer in 20s")??;
    let ready = list
        .items
        .iter()
        .filter(|node| {
            let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    Ok((ready, list.items.len()))
}

/// `n` distinct free TCP ports on 127.0.0.1 (free when asked; the parts bind
/// them a moment later).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A Go duration in whole seconds (`0` for zero), as the apiserver's flags take.
fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        "0".into()
    } else {
        format!("{}s", d.as_secs().max(1))
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

async fn spawn(config: &SpawnConfig) -> anyhow::Result<Cluster> {
    let data_dir = match &config.data_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "ballast-soak-{}-{}",
            unix_secs(),
            std::process::id()
        )),
    };
    if data_dir.exists()
        && std::fs::read_dir(&data_dir)
            .with_context(|| format!("--data-dir {}", data_dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "--data-dir {}: not empty; the soak starts a new cluster in a new or empty directory \
             (use --attach to measure a running `ballast up`)",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let data_dir = data_dir.canonicalize()?;
    let mut cluster = Cluster {
        data_dir,
        members: Vec::new(),
        storage: Vec::new(),
        pids: Pids::default(),
        kube: None,
        nodes: config.nodes as usize,
        description: String::new(),
        children: Vec::new(),
        remove_dir: !config.keep,
        tls: None,
    };
    if let Err(e) = start(&mut cluster, config).await {
        // Keep the logs of a failed start for diagnosis.
        cluster.remove_dir = false;
        cluster.stop().await;
        return Err(e.context(format!(
            "starting the soak's cluster (logs in {})",
            cluster.data_dir.join("logs").display()
        )));
    }
    Ok(cluster)
}

async fn start(cluster: &mut Cluster, config: &SpawnConfig) -> anyhow::Result<()> {
    let ports = free_ports(7)?;
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let names = ["member-1", "member-2", "member-3"];
    let initial: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n}={}", url(ports[3 + i])))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let dir = cluster.data_dir.join(name);
        let (client, peer) = (url(ports[i]), url(ports[3 + i]));
        let args: Vec<String> = [
            "server",
            "--name",
            name,
            "--data-dir",
            &dir.to_string_lossy(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &initial.join(","),
            "--initial-cluster-token",
            "ballast-soak",
        ]
        .map(String::from)
        .to_vec();
        let pid = cluster.spawn_part(&config.exe, name, &args)?;
        cluster.members.push(Member {
            name: name.to_string(),
            endpoint: client.clone(),
            pid: Some(pid),
            dir,
        });
        let channel = cluster.channel(&client)?;
        cluster.storage.push(channel);
    }
    for i in 0..cluster.members.len() {
        let channel = cluster.storage[i].clone();
        let name = cluster.members[i].name.clone();
        cluster
            .wait_for(&name, || storage_healthy(&channel))
            .await?;
    }
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint.clone()).collect();

    let port = ports[6];
    let master = url(port);
    let apiserver: Vec<String> = [
        "apiserver",
        "--etcd-servers",
        &endpoints.join(","),
        "--bind-address",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--event-ttl",
        &go_duration(config.event_ttl),
        "--etcd-compaction-interval",
        &go_duration(config.compaction_interval),
    ]
    .map(String::from)
    .to_vec();
    cluster.pids.apiserver = Some(cluster.spawn_part(&config.exe, "apiserver", &apiserver)?);
    let client = kube::Client::try_from(kube::Config::new(
        master.parse().context("the apiserver's URL")?,
    ))?;
    cluster
        .wait_for("the apiserver", || apiserver_ready(port, &client))
        .await?;
    cluster.kube = Some(client.clone());

    let component = |cmd: &str| vec![cmd.to_string(), "--master".into(), master.clone()];
    cluster.pids.controller_manager = Some(cluster.spawn_part(
        &config.exe,
        "controller-manager",
        &component("controller-manager"),
    )?);
    cluster.pids.scheduler =
        Some(cluster.spawn_part(&config.exe, "scheduler", &component("scheduler"))?);
    let mut kubelet = component("kubelet");
    kubelet.extend([
        "--runtime".into(),
        "sim".into(),
        "--nodes".into(),
        config.nodes.to_string(),
        "--node-name".into(),
        "sim".into(),
        // The sim nodes share one range: no controller allocates them here.
        "--pod-cidr".into(),
        "127.64.0.0/10".into(),
        "--root-dir".into(),
        cluster
            .data_dir
            .join("kubelet")
            .join("sim")
            .to_string_lossy()
            .into_owned(),
        "--port".into(),
        "0".into(),
    ]);
    cluster.pids.kubelet = Some(cluster.spawn_part(&config.exe, "kubelet-sim", &kubelet)?);
    let want = config.nodes as usize;
    cluster
        .wait_for(&format!("{want} Ready nodes"), || async {
            matches!(node_readiness(&client).await, Ok((ready, _)) if ready >= want)
        })
        .await?;
    cluster.description = format!(
        "started: 3 members (ports {}), apiserver on {master} with --event-ttl {} \
         --etcd-compaction-interval {}, controller-manager, scheduler, 1 kubelet with {want} \
         sim nodes; data in {}",
        ports[..3]
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        go_duration(config.event_ttl),
        go_duration(config.compaction_interval),
        cluster.data_dir.display()
    );
    Ok(())
}

/// One process from /proc.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    argv: Vec<String>,
}

/// Every process whose command line and parent can be read.
fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push(Proc { pid, ppid, argv });
    }
    out
}

/// The value of `--flag value` or `--flag=value` in `argv`.
fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    let eq = format!("{flag}=");
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            argv.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

async fn attach(data_dir: &Path) -> anyhow::Result<Cluster> {
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("--attach {}", data_dir.display()))?;
    let procs = processes();
    let mut members = Vec::new();
    for name in ["member-1", "member-2", "member-3"] {
        let dir = data_dir.join(name);
        let found = procs.iter().find(|p| {
            p.argv.get(1).map(String::as_str) == Some("server")
                && flag_value(&p.argv, "--data-dir")
                    .and_then(|d| Path::new(d).canonicalize().ok())
                    .is_some_and(|d| d == dir)
        });
        if let Some(p) = found {
            let endpoint = flag_value(&p.argv, "--listen-client-urls")
                .and_then(|u| u.split(',').next())
                .context("a storage member without --listen-client-urls")?
                .to_string();
            members.push((
                p.clone(),
                Member {
                    name: name.into(),
                    endpoint,
                    pid: Some(p.pid),
                    dir,
                },
            ));
        }
    }
    let Some((first, _)) = members.first() else {
        bail!(
            "--attach {}: no running storage member (`ballast server --data-dir {}/member-N`); \
             start the cluster with `ballast up --runtime sim --nodes 100 --data-dir {}`",
            data_dir.display(),
            data_dir.display(),
            data_dir.display()
        );
    };
    let up = first.ppid;
    let sibling = |cmd: &str| {
        procs
            .iter()
            .find(|p| p.ppid == up && p.argv.get(1).map(String::as_str) == Some(cmd))
            .map(|p| p.pid)
    };
    let pids = Pids {
        apiserver: sibling("apiserver"),
        controller_manager: sibling("controller-manager"),
        scheduler: sibling("scheduler"),
        kubelet: sibling("kubelet"),
    };
    let nodes: usize = procs
        .iter()
        .filter(|p| p.ppid == up && p.argv.get(1).map(String::as_str) == Some("kubelet"))
        .map(|p| {
            flag_value(&p.argv, "--nodes")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1usize)
        })
        .sum();
    let tls = if members.iter().any(|(_, m)| m.endpoint.starts_with("https")) {
        let pki = data_dir.join("pki").join("etcd");
        let read = |f: &str| {
            std::fs::read_to_string(pki.join(f))
                .with_context(|| format!("reading {}", pki.join(f).display()))
        };
        Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read("ca.crt")?))
                .identity(Identity::from_pem(
                    read("etcdctl.crt")?,
                    read("etcdctl.key")?,
                )),
        )
    } else {
        None
    };
    let kubeconfig_path = data_dir.join("kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig_path)
        .with_context(|| format!("reading {}", kubeconfig_path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let mut cluster = Cluster {
        data_dir: data_dir.clone(),
        members: Vec::new(),
        storage: Vec::new(),
        pids,
        kube: Some(client),
        nodes,
        description: String::new(),
        children: Vec::new(),
        remove_dir: false,
        tls,
    };
    for (_, member) in members {
        let channel = cluster.channel(&member.endpoint)?;
        cluster.storage.push(channel);
        cluster.members.push(member);
    }
    cluster.description = format!(
        "attached: `ballast up` pid {up} with data in {} ({} members, {} nodes; apiserver pid {:?}, \
         controller-manager {:?}, scheduler {:?}, kubelet {:?})",
        data_dir.display(),
        cluster.members.len(),
        nodes,
        pids.apiserver,
        pids.controller_manager,
        pids.scheduler,
        pids.kubelet
    );
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_in_both_spellings() {
        let argv: Vec<String> = [
            "ballast",
            "server",
            "--data-dir",
            "/d/m1",
            "--name=member-1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(flag_value(&argv, "--data-dir"), Some("/d/m1"));
        assert_eq!(flag_value(&argv, "--name"), Some("member-1"));
        assert_eq!(flag_value(&argv, "--nodes"), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0");
        assert_eq!(go_duration(Duration::from_secs(300)), "300s");
        assert_eq!(go_duration(Duration::from_millis(10)), "1s");
    }

    #[test]
    fn this_process_is_listed_with_its_parent() {
        let me = std::process::id();
        let procs = processes();
        let found = procs.iter().find(|p| p.pid == me).expect("this process");
        assert!(found.ppid > 0);
        assert!(!found.argv.is_empty());
    }

    #[tokio::test]
    async fn attach_without_a_cluster_says_how_to_start_one() {
        let dir = std::env::temp_dir().join(format!("ballast-soak-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = attach(&dir).await.err().expect("nothing runs there");
        let _ = std::fs::remove_dir_all(&dir);
        let text = format!("{err:#}");
        assert!(text.contains("no running storage member"), "{text}");
        assert!(text.contains("ballast up --runtime sim"), "{text}");
    }
}
