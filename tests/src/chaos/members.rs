//! The storage members of a chaos run: `ballast server` processes, each
//! started inside its own test host's namespace (through `nsenter`, which
//! execs, so the child's pid is the server's), with a [`Proxy`] in front of
//! its peer port.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Child;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::net::TestNet;
use super::proxy::{LinkFault, Proxy};
use crate::process::{self, Io, Launch};

/// Client port on every member host (each host has its own port space).
pub const CLIENT_PORT: u16 = 2379;
/// The peer port members advertise: the proxy's.
pub const PEER_PORT: u16 = 2380;
/// The port the server really listens on for peers, behind the proxy.
pub const PEER_PORT_INTERNAL: u16 = 2381;

/// The running members; dropping it SIGKILLs them and stops the proxies.
#[derive(Debug)]
pub struct Members {
    bin: PathBuf,
    addrs: Vec<Ipv4Addr>,
    namespaces: Vec<String>,
    children: Vec<Option<Child>>,
    proxies: Vec<Proxy>,
    token: String,
    // Dropped after the processes (fields drop in order).
    dir: tempfile::TempDir,
}

impl Members {
    /// Starts the proxies and one `ballast server` per member host of `net`.
    pub fn start(net: &TestNet, bin: PathBuf, seed: u64) -> std::io::Result<Members> {
        let dir = process::cluster_dir("chaos");
        let token = format!(
            "chaos-{}",
            dir.path().file_name().unwrap_or_default().to_string_lossy()
        );
        let mut proxies = Vec::new();
        for (i, h) in net.members.iter().enumerate() {
            proxies.push(Proxy::start(
                &h.ns,
                SocketAddr::V4(SocketAddrV4::new(h.addr, PEER_PORT)),
                SocketAddr::V4(SocketAddrV4::new(h.addr, PEER_PORT_INTERNAL)),
                seed ^ (i as u64 + 1),
            )?);
        }
        let mut m = Members {
            bin,
            addrs: net.members.iter().map(|h| h.addr).collect(),
            namespaces: net.members.iter().map(|h| h.ns.clone()).collect(),
            children: net.members.iter().map(|_| None).collect(),
            proxies,
            token,
            dir,
        };
        for i in 0..m.len() {
            m.spawn(i)?;
        }
        Ok(m)
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Member `i`'s host address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.addrs[i]
    }

    /// Member `i`'s client URL (reachable from the client host).
    pub fn client_url(&self, i: usize) -> String {
        format!("http://{}:{CLIENT_PORT}", self.addrs[i])
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    /// The last `n` log lines of every member.
    pub fn log_tails(&self, n: usize) -> String {
        (0..self.len())
            .map(|i| {
                let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "---- m{i} ----\n{}\n",
                    lines[lines.len().saturating_sub(n)..].join("\n")
                )
            })
            .collect()
    }

    /// Starts member `i` (again) on its data directory.
    pub fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        if self.is_running(i) {
            return Ok(());
        }
        let initial = (0..self.len())
            .map(|j| format!("m{j}=http://{}:{PEER_PORT}", self.addrs[j]))
            .collect::<Vec<_>>()
            .join(",");
        let a = self.addrs[i];
        let launch = Launch::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.namespaces[i]))
            .arg("--")
            .arg(&self.bin)
            .arg("server")
            .args([
                format!("--name=m{i}"),
                format!(
                    "--data-dir={}",
                    self.dir.path().join(format!("m{i}.data")).display()
                ),
                format!("--listen-client-urls=http://{a}:{CLIENT_PORT}"),
                format!("--advertise-client-urls=http://{a}:{CLIENT_PORT}"),
                format!("--listen-peer-urls=http://{a}:{PEER_PORT_INTERNAL}"),
                format!("--initial-advertise-peer-urls=http://{a}:{PEER_PORT}"),
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=new".to_string(),
                format!("--initial-cluster-token={}", self.token),
            ])
            .io(Io::Log(self.log_path(i)));
        self.children[i] = Some(process::spawn(launch)?);
        Ok(())
    }

    /// Whether member `i`'s process runs (reaps it if it exited).
    pub fn is_running(&mut self, i: usize) -> bool {
        match &mut self.children[i] {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs member `i` (a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            process::kill(&mut c);
        }
    }

    /// Sends `sig` (SIGSTOP, SIGCONT) to member `i` if it runs.
    pub fn signal(&self, i: usize, sig: Signal) {
        if let Some(c) = &self.children[i] {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }

    /// Sets link fault `fault` on member `target`'s links: on its own proxy
    /// (connections from anyone) and on the other proxies (connections from
    /// `target` only).
    pub fn set_link_fault(&self, target: usize, fault: LinkFault) {
        for (j, p) in self.proxies.iter().enumerate() {
            if j == target {
                p.set(fault, None);
            } else {
                p.set(fault, Some(self.addrs[target]));
            }
        }
    }

    /// Clears every link fault.
    pub fn clear_link_faults(&self) {
        for p in &self.proxies {
            p.set(LinkFault::None, None);
        }
    }

    /// Proxy counters summed over members: (connections, stalls, resets).
    pub fn proxy_totals(&self) -> (u64, u64, u64) {
        self.proxies.iter().fold((0, 0, 0), |(c, s, r), p| {
            let st = p.stats();
            (c + st.connections, s + st.stalls, r + st.resets)
        })
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for i in 0..self.len() {
            // A stopped process dies of SIGKILL too; continue it anyway.
            self.signal(i, Signal::SIGCONT);
            self.kill(i);
        }
    }
}
