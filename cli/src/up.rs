//! `ballast up`: a whole cluster on this machine — three storage members
//! (real `ballast server` processes on etcd's local-cluster ports), an
//! apiserver over them, the controller manager, the scheduler and kubelets
//! (`--nodes` processes with the process runtime, or one process hosting
//! every node with `--runtime sim`), with a kubeconfig written beside the
//! data. All data and logs live under one directory. Ctrl-C or SIGTERM
//! stops every process; running it again on the same directory brings the
//! same cluster back.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

#[derive(Args)]
pub struct UpArgs {
    /// Where every part keeps its data and logs.
    #[arg(long, default_value = "./ballast-data")]
    data_dir: PathBuf,
    /// Start only the three storage members.
    #[arg(long)]
    storage_only: bool,
    /// Plain-HTTP port of the apiserver on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    apiserver_port: u16,
    /// How the kubelets run containers: real local processes, or simulated.
    #[arg(long, value_enum, default_value_t = Runtime::Process)]
    runtime: Runtime,
    /// Number of nodes (kubelets; each process-runtime node takes one
    /// 127.N.0.0/16 for its pods, so at most 150 of those).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    nodes: u32,
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

/// How long any one part may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// One GET over HTTP/1.0 (so the answer is never chunked): the status
/// code and body, or None if the server did not answer in time.
async fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
        Some((status, buf.split_off(head_end + 4)))
    };
    tokio::time::timeout(Duration::from_secs(6), attempt)
        .await
        .ok()
        .flatten()
}

async fn http_ok(port: u16, path: &str) -> bool {
    matches!(http_get(port, path).await, Some((200, _)))
}

/// How many Nodes the apiserver reports Ready.
async fn ready_nodes(apiserver_port: u16) -> usize {
    let Some((200, body)) = http_get(apiserver_port, "/api/v1/nodes").await else {
        return 0;
    };
    let Ok(list) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return 0;
    };
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    items
        .iter()
        .filter(|node| {
            node["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count()
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
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{name}.log"));
        let child = Command::new(&self.exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
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

fn member_args(data_dir: &Path, i: usize) -> Vec<String> {
    let (name, client, peer) = MEMBERS[i];
    let cluster: Vec<String> = MEMBERS
        .iter()
        .map(|(n, _, p)| format!("{n}={}", url(*p)))
        .collect();
    [
        "server",
        "--name",
        name,
        "--data-dir",
        &data_dir.join(name).to_string_lossy(),
        "--listen-client-urls",
        &url(client),
        "--advertise-client-urls",
        &url(client),
        "--listen-peer-urls",
        &url(peer),
        "--initial-advertise-peer-urls",
        &url(peer),
        "--initial-cluster",
        &cluster.join(","),
        "--initial-cluster-token",
        "ballast-up",
    ]
    .map(String::from)
    .to_vec()
}

/// A kubeconfig for the local apiserver (plain HTTP on loopback).
fn write_kubeconfig(data_dir: &Path, port: u16) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ballast\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         contexts:\n- name: ballast\n  context:\n    cluster: ballast\n    user: ballast\n\
         current-context: ballast\nusers:\n- name: ballast\n  user: {{}}\n"
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.runtime == Runtime::Process && args.nodes > 150 {
        bail!("--nodes {}: the process runtime takes at most 150 nodes (one 127.N.0.0/16 each); use --runtime sim for more", args.nodes);
    }
    std::fs::create_dir_all(&args.data_dir)?;
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

/// Starts every part in order, each once the one before it is ready.
async fn start(parts: &mut Parts, args: &UpArgs, data_dir: &Path) -> anyhow::Result<()> {
    for (i, (name, _, _)) in MEMBERS.iter().enumerate() {
        parts.spawn(name, &member_args(data_dir, i))?;
    }
    for (name, client, _) in MEMBERS {
        parts.wait_for(name, || http_ok(client, "/health")).await?;
        println!("  {name} healthy on {}", url(client));
    }
    let endpoints: Vec<String> = MEMBERS.iter().map(|(_, c, _)| url(*c)).collect();
    println!("storage cluster ready. Try:");
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={} endpoint status -w table",
        endpoints.join(",")
    );
    if args.storage_only {
        return Ok(());
    }

    let port = args.apiserver_port;
    let apiserver_args = [
        "apiserver".to_string(),
        "--etcd-servers".into(),
        endpoints.join(","),
        "--bind-address".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
    ];
    parts.spawn("apiserver", &apiserver_args)?;
    parts
        .wait_for("the apiserver", || http_ok(port, "/readyz"))
        .await?;
    let kubeconfig = write_kubeconfig(data_dir, port)?;
    println!("  apiserver ready on {}", url(port));

    let client = |cmd: &str| {
        vec![
            cmd.to_string(),
            "--kubeconfig".into(),
            kubeconfig.to_string_lossy().into_owned(),
        ]
    };
    parts.spawn("controller-manager", &client("controller-manager"))?;
    parts.spawn("scheduler", &client("scheduler"))?;
    let kubelets = data_dir.join("kubelet");
    match args.runtime {
        Runtime::Process => {
            for i in 1..=args.nodes {
                let node = format!("node-{i}");
                let mut kubelet = client("kubelet");
                kubelet.extend([
                    "--node-name".into(),
                    node.clone(),
                    "--runtime".into(),
                    "process".into(),
                    "--root-dir".into(),
                    kubelets.join(&node).to_string_lossy().into_owned(),
                    // Each node's pods get addresses of their own in 127.0.0.0/8.
                    "--pod-cidr".into(),
                    format!("127.{}.0.0/16", 100 + i),
                    // Each kubelet's API (logs) on a free port, published in its Node.
                    "--port".into(),
                    "0".into(),
                ]);
                parts.spawn(&format!("kubelet-{node}"), &kubelet)?;
            }
        }
        Runtime::Sim => {
            let mut kubelet = client("kubelet");
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
            parts.spawn("kubelet-sim", &kubelet)?;
        }
    }
    let want = args.nodes as usize;
    parts
        .wait_for(&format!("{want} nodes"), || async {
            ready_nodes(port).await >= want
        })
        .await?;
    println!("  controller-manager, scheduler and {want} kubelets running; {want} nodes Ready");
    println!("Try:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get nodes");
    println!("  kubectl apply -f examples/web.yaml && kubectl get pods -o wide");
    Ok(())
}
