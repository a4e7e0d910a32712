//! `ballast up`: a whole cluster on this machine — three storage members
//! (real `ballast server` processes on etcd's local-cluster ports) and an
//! apiserver over them, with a kubeconfig written beside the data. All data
//! and logs live under one directory. Ctrl-C or SIGTERM stops every
//! process; running it again on the same directory brings the same cluster
//! back. The controllers, scheduler and kubelets come with issue 6.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

#[derive(Args)]
pub struct UpArgs {
    /// Where every member keeps its data and logs.
    #[arg(long, default_value = "./ballast-data")]
    data_dir: PathBuf,
    /// Start only the three storage members.
    #[arg(long)]
    storage_only: bool,
    /// Plain-HTTP port of the apiserver on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    apiserver_port: u16,
}

/// (name, client port, peer port): etcd's own local-cluster layout.
const MEMBERS: [(&str, u16, u16); 3] = [
    ("member-1", 2379, 2380),
    ("member-2", 22379, 22380),
    ("member-3", 32379, 32380),
];

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// One GET over HTTP/1.1; true on a 200.
async fn http_ok(port: u16, path: &str) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(6), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn spawn_member(exe: &Path, data_dir: &Path, i: usize) -> anyhow::Result<Child> {
    let (name, client, peer) = MEMBERS[i];
    let cluster: Vec<String> = MEMBERS
        .iter()
        .map(|(n, _, p)| format!("{n}={}", url(*p)))
        .collect();
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    Command::new(exe)
        .arg("server")
        .args(["--name", name])
        .arg("--data-dir")
        .arg(data_dir.join(name))
        .args(["--listen-client-urls", &url(client)])
        .args(["--advertise-client-urls", &url(client)])
        .args(["--listen-peer-urls", &url(peer)])
        .args(["--initial-advertise-peer-urls", &url(peer)])
        .args(["--initial-cluster", &cluster.join(",")])
        .args(["--initial-cluster-token", "ballast-up"])
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

fn spawn_apiserver(exe: &Path, data_dir: &Path, port: u16) -> anyhow::Result<Child> {
    let etcd: Vec<String> = MEMBERS.iter().map(|(_, c, _)| url(*c)).collect();
    let log = std::fs::File::create(data_dir.join("logs").join("apiserver.log"))?;
    Command::new(exe)
        .arg("apiserver")
        .args(["--etcd-servers", &etcd.join(",")])
        .args(["--bind-address", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the apiserver")
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

async fn stop(children: &mut [Child]) {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for c in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(15), c.wait())
            .await
            .is_err()
        {
            let _ = c.kill().await;
        }
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let exe = std::env::current_exe()?;
    println!("ballast up: data in {}", data_dir.display());
    let mut children = Vec::new();
    for i in 0..MEMBERS.len() {
        children.push(spawn_member(&exe, &data_dir, i)?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, (name, client, _)) in MEMBERS.iter().enumerate() {
        loop {
            if http_ok(*client, "/health").await {
                println!("  {name} healthy on {}", url(*client));
                break;
            }
            if let Ok(Some(status)) = children[i].try_wait() {
                stop(&mut children).await;
                bail!(
                    "{name} exited ({status}); see {}",
                    data_dir.join("logs").join(format!("{name}.log")).display()
                );
            }
            if Instant::now() > deadline {
                stop(&mut children).await;
                bail!("{name} did not become healthy within 60s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let endpoints: Vec<String> = MEMBERS.iter().map(|(_, c, _)| url(*c)).collect();
    println!("storage cluster ready. Try:");
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={} endpoint status -w table",
        endpoints.join(",")
    );
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={} put hello world",
        endpoints[0]
    );
    if !args.storage_only {
        children.push(spawn_apiserver(&exe, &data_dir, args.apiserver_port)?);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_ok(args.apiserver_port, "/readyz").await {
            if let Ok(Some(status)) = children.last_mut().expect("just pushed").try_wait() {
                stop(&mut children).await;
                bail!(
                    "the apiserver exited ({status}); see {}",
                    data_dir.join("logs").join("apiserver.log").display()
                );
            }
            if Instant::now() > deadline {
                stop(&mut children).await;
                bail!("the apiserver did not become ready within 60s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let kubeconfig = write_kubeconfig(&data_dir, args.apiserver_port)?;
        println!(
            "  apiserver ready on http://127.0.0.1:{}",
            args.apiserver_port
        );
        println!("apiserver ready. Try:");
        println!(
            "  kubectl --kubeconfig {} get namespaces",
            kubeconfig.display()
        );
    }
    println!("cluster ready (controllers, scheduler and kubelets are not part of Ballast yet); Ctrl-C stops everything");

    tokio::select! {
        _ = crate::shutdown_signal() => {}
        (status, i) = async {
            loop {
                for (i, c) in children.iter_mut().enumerate() {
                    if let Ok(Some(s)) = c.try_wait() {
                        return (s, i);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        } => {
            let name = MEMBERS.get(i).map_or("the apiserver", |m| m.0);
            eprintln!("{name} exited unexpectedly ({status}); stopping the cluster");
        }
    }
    println!("stopping…");
    stop(&mut children).await;
    println!("stopped");
    Ok(())
}
