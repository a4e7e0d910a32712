//! A pod's own network, UTS and IPC namespaces (process runtime,
//! `--pod-namespaces`, a root kubelet): the sandbox Kubernetes' pause
//! container holds, shared by every container of the pod, its exec probes,
//! hooks, `kubectl exec` and port-forward.
//!
//! **The holder.** The kubelet starts `ballast image sandbox` (see
//! [`holder_main`]) in a process group of its own. It `unshare`s the
//! namespaces the pod does not take from the host ([`Kinds::for_pod`]:
//! `hostNetwork` keeps the host's network and UTS namespaces, `hostIPC` its
//! IPC namespace), sets the pod's hostname (`spec.hostname` or the pod's
//! name, as kubelet), marks itself ready and sleeps until killed. The
//! namespaces live exactly as long as it (and the containers in them) do,
//! so nothing is left on the host when the pod, or the machine's last
//! process of it, goes. Its pid and `/proc` start time are recorded in the
//! pod's `pod.json` ([`PodNamespaces`]); a pid is only ever used after
//! checking that start time, so a recycled pid is never mistaken for it.
//! Containers join the namespaces through `ballast image exec
//! --namespaces PID:START:KINDS`, which `setns`es into
//! `/proc/<pid>/ns/{net,uts,ipc}` while still root ([`PodNamespaces::join`]).
//!
//! **The network** (pod IP `127.1.0.2` from a node CIDR `127.1.0.0/16`
//! whose first address, `127.1.0.1`, is the node's side of every link):
//!
//! ```text
//! root namespace                             pod namespace
//!   bp<hash of pod uid>  ─── veth pair ───     eth0  127.1.0.2/32
//!     route_localnet=1, forwarding=1             route_localnet=1
//!   table local:                               table local:
//!     local 127.0.0.0/8 dev lo  (untouched)      local 127.0.0.1 dev lo  (the /8 removed)
//!     127.1.0.2 dev bp… src 127.1.0.1          default via 127.1.0.1 dev eth0 onlink src 127.1.0.2
//! ```
//!
//! In the root namespace the pod's /32 in the *local* table is more
//! specific than `local 127.0.0.0/8`, so the kubelet (probes), `ballast
//! proxy` and the other pods reach the pod through its veth, while the
//! host's own routes stay as they are. Inside the pod only `127.0.0.1` is
//! local: its localhost is its own, and every other loopback address —
//! the node's services, cluster IPs, other pods — goes out `eth0` to the
//! root namespace, which delivers it locally or forwards it to the other
//! pod's veth (`forwarding` is set on the pods' veths alone, not host-wide).
//! `route_localnet` lets 127/8 packets cross the veths. The links are made
//! with iproute2's `ip` (as the chaos suite's test hosts are; no netlink
//! library to build), run inside the pod's namespace from a thread that
//! has `setns`ed into it. Killing the holder (and the containers) ends the
//! namespace, its `eth0`, the veth's root end and its route; the kubelet
//! also deletes the root end at once, so the pod's IP is free to reuse.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Which namespaces a pod has of its own (the others are the host's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kinds {
    pub net: bool,
    pub uts: bool,
    pub ipc: bool,
}

impl Kinds {
    /// As kubelet: `hostNetwork` shares the host's network and UTS
    /// namespaces, `hostIPC` its IPC namespace.
    pub fn for_pod(pod: &Pod) -> Kinds {
        let spec = pod.spec.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let host_ipc = spec.and_then(|s| s.host_ipc).unwrap_or(false);
        Kinds {
            net: !host_network,
            uts: !host_network,
            ipc: !host_ipc,
        }
    }

    /// Whether the pod has any namespace of its own.
    pub fn any(self) -> bool {
        self.net || self.uts || self.ipc
    }

    /// The `/proc/<pid>/ns/` names and `setns` flags of these kinds.
    fn each(self) -> impl Iterator<Item = (&'static str, CloneFlags)> {
        [
            (self.net, "net", CloneFlags::CLONE_NEWNET),
            (self.uts, "uts", CloneFlags::CLONE_NEWUTS),
            (self.ipc, "ipc", CloneFlags::CLONE_NEWIPC),
        ]
        .into_iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, name, flag)| (name, flag))
    }

    fn flags(self) -> CloneFlags {
        self.each()
            .fold(CloneFlags::empty(), |all, (_, flag)| all | flag)
    }

    /// `net,uts,ipc` (the kinds that are on).
    fn to_arg(self) -> String {
        self.each()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn parse(s: &str) -> Result<Kinds, String> {
        let mut k = Kinds::default();
        for name in s.split(',').filter(|n| !n.is_empty()) {
            match name {
                "net" => k.net = true,
                "uts" => k.uts = true,
                "ipc" => k.ipc = true,
                other => return Err(format!("unknown namespace {other:?} (net, uts, ipc)")),
            }
        }
        Ok(k)
    }
}

/// A pod's namespaces: the holder process keeping them, checked by its
/// `/proc` start time before its pid is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaces {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`.
    pub start: u64,
    pub kinds: Kinds,
}

impl PodNamespaces {
    /// Whether the holder is still the live process recorded.
    pub fn alive(&self) -> bool {
        super::process::alive(self.pid, self.start)
    }

    /// `PID:START:KINDS`, as `ballast image exec --namespaces` takes it.
    pub fn to_arg(&self) -> String {
        format!("{}:{}:{}", self.pid, self.start, self.kinds.to_arg())
    }

    /// Reads [`PodNamespaces::to_arg`]'s form.
    pub fn parse(s: &str) -> Result<PodNamespaces, String> {
        let bad = || format!("--namespaces {s:?}: want PID:START:net,uts,ipc");
        let mut parts = s.splitn(3, ':');
        let pid = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let start = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let kinds = Kinds::parse(parts.next().ok_or_else(bad)?)?;
        Ok(PodNamespaces { pid, start, kinds })
    }

    /// Opens the holder's namespace `name`, checking afterwards that the
    /// pid still is the holder (a pid reused in between has another start
    /// time).
    fn open(&self, name: &str) -> io::Result<OwnedFd> {
        let file = std::fs::File::open(format!("/proc/{}/ns/{name}", self.pid))?;
        if !self.alive() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the pod's sandbox (pid {}) is gone", self.pid),
            ));
        }
        Ok(OwnedFd::from(file))
    }

    /// Moves the calling thread into the pod's namespaces (a process that
    /// then `exec`s keeps them). Needs root.
    pub fn join(&self) -> io::Result<()> {
        let fds = self
            .kinds
            .each()
            .map(|(name, flag)| Ok((self.open(name)?, flag, name)))
            .collect::<io::Result<Vec<_>>>()?;
        for (fd, flag, name) in fds {
            setns(&fd, flag).map_err(|e| {
                io::Error::other(format!("joining the pod's {name} namespace: {e}"))
            })?;
        }
        Ok(())
    }

    /// Runs `f` on a thread of its own inside the pod's network namespace:
    /// sockets it opens and programs it starts live there.
    fn in_network<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let fd = self.open("net")?;
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    io::Error::other(format!("joining the pod's network namespace: {e}"))
                })?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
        })
    }

    /// Connects to `addr` from inside the pod's network namespace (its
    /// `127.0.0.1` is the pod's own), within `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<tokio::net::TcpStream> {
        let ns = *self;
        let stream = tokio::task::spawn_blocking(move || {
            // A thread of its own: the blocking pool's threads are reused.
            ns.in_network(|| std::net::TcpStream::connect_timeout(&addr, timeout))
        })
        .await
        .map_err(io::Error::other)??;
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }

    /// Kills the holder, if it still is the recorded process.
    pub fn kill(&self) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// This process's effective uid (pod namespaces need 0).
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The root namespace's end of pod `uid`'s veth: `bp` and 13 hex digits
/// of a hash of the uid (15 characters, the most an interface name has).
pub fn veth_name(uid: &str) -> String {
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let hash = uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("bp{:013x}", hash & ((1 << 52) - 1))
}

/// How long the holder may take to make its namespaces.
const READY_WAIT: Duration = Duration::from_secs(10);

/// Creates pod `uid`'s namespaces (`kinds`): starts the holder with
/// `hostname`, waits until it is ready, and with a network namespace links
/// it to the node, the pod at `ip` and the node's side at `gateway`. On
/// error nothing is left (the holder is killed). `dir` is the pod's
/// private directory (the holder's ready mark goes there).
pub fn create(
    ballast_exe: &Path,
    dir: &Path,
    uid: &str,
    kinds: Kinds,
    hostname: &str,
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<PodNamespaces, String> {
    let ready = dir.join("sandbox.ready");
    let _ = std::fs::remove_file(&ready);
    let mut cmd = tokio::process::Command::new(ballast_exe);
    cmd.arg("image").arg("sandbox");
    for (name, _) in kinds.each() {
        cmd.arg(format!("--{name}"));
    }
    if kinds.uts {
        cmd.arg("--hostname").arg(hostname);
    }
    cmd.arg("--ready")
        .arg(&ready)
        .env_clear()
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the pod's sandbox: {e}"))?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let deadline = std::time::Instant::now() + READY_WAIT;
    let made = loop {
        if ready.exists() {
            break Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("the pod's sandbox exited ({status})"));
        }
        if std::time::Instant::now() > deadline {
            break Err(format!("the pod's sandbox was not ready in {READY_WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Err(e) = made {
        let _ = child.start_kill();
        for _ in 0..100 {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let why = stderr_of(&mut child);
        reap(child);
        return Err(if why.is_empty() {
            e
        } else {
            format!("{e}: {why}")
        });
    }
    let _ = std::fs::remove_file(&ready);
    let start = super::process::proc_start_time(pid).unwrap_or(0);
    // Its error output is not read any more.
    drop(child.stderr.take());
    reap(child);
    let ns = PodNamespaces { pid, start, kinds };
    if kinds.net {
        if let Err(e) = link(&ns, uid, ip, gateway) {
            remove(&ns, uid);
            return Err(format!("setting up the pod's network: {e}"));
        }
    }
    Ok(ns)
}

/// What a holder that failed wrote on its error output (it has exited,
/// so reading ends).
fn stderr_of(child: &mut tokio::process::Child) -> String {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::io::Read;
    let Some(err) = child.stderr.take().and_then(|e| e.into_owned_fd().ok()) else {
        return String::new();
    };
    if fcntl(&err, FcntlArg::F_SETFL(OFlag::empty())).is_err() {
        return String::new();
    }
    let mut text = String::new();
    let _ = std::fs::File::from(err)
        .take(4096)
        .read_to_string(&mut text);
    text.trim().to_string()
}

/// Reaps the holder when it exits (a kubelet restarted meanwhile never
/// does: the holder then belongs to init).
fn reap(mut child: tokio::process::Child) {
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
}

/// Ends a pod's namespaces: kills the holder and deletes the veth's root
/// end (with its route) at once, not when the kernel gets to the
/// namespace. The containers must be gone too for the namespace to end.
pub fn remove(ns: &PodNamespaces, uid: &str) {
    ns.kill();
    if ns.kinds.net {
        let _ = ip(&["link", "del", &veth_name(uid)]);
    }
}

/// Links the pod's network namespace to the root namespace (module doc).
fn link(ns: &PodNamespaces, uid: &str, pod_ip: Ipv4Addr, gateway: Ipv4Addr) -> io::Result<()> {
    let veth = veth_name(uid);
    let ip_s = pod_ip.to_string();
    let gw = gateway.to_string();
    // A root end left by an earlier sandbox of this pod.
    let _ = ip(&["link", "del", &veth]);
    let pod_net = format!("/proc/{}/ns/net", ns.pid);
    ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod_net,
    ])?;
    if !ns.alive() {
        return Err(io::Error::other("the pod's sandbox exited"));
    }
    sysctl(&format!("net/ipv4/conf/{veth}/route_localnet"))?;
    sysctl(&format!("net/ipv4/conf/{veth}/forwarding"))?;
    ip(&["link", "set", &veth, "up"])?;
    ns.in_network(|| {
        for conf in ["all", "default", "eth0"] {
            sysctl(&format!("net/ipv4/conf/{conf}/route_localnet"))?;
        }
        ip(&["link", "set", "lo", "up"])?;
        ip(&[
            "route",
            "del",
            "table",
            "local",
            "local",
            "127.0.0.0/8",
            "dev",
            "lo",
        ])?;
        ip(&["addr", "add", &format!("{ip_s}/32"), "dev", "eth0"])?;
        ip(&["link", "set", "eth0", "up"])?;
        ip(&[
            "route", "add", "default", "via", &gw, "dev", "eth0", "onlink", "src", &ip_s,
        ])
    })?;
    ip(&[
        "route",
        "add",
        &format!("{ip_s}/32"),
        "dev",
        &veth,
        "table",
        "local",
        "src",
        &gw,
    ])
}

/// Sets the sysctl `/proc/sys/<key>` to 1 (in the calling thread's
/// network namespace).
fn sysctl(key: &str) -> io::Result<()> {
    std::fs::write(Path::new("/proc/sys").join(key), "1")
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}: {e}")))
}

/// Runs iproute2's `ip ARGS`, failing with its error output.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running `ip` (iproute2): {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "`ip {}`: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

const HOLDER_USAGE: &str = "usage: sandbox [--net] [--uts] [--ipc] [--hostname NAME] --ready FILE";

/// `ballast image sandbox [--net] [--uts] [--ipc] [--hostname NAME] --ready
/// FILE`: the pod's namespace holder. Makes the namespaces named (the
/// hostname in the new UTS namespace), creates `FILE`, then sleeps until
/// SIGTERM or SIGKILL (SIGINT and SIGHUP are ignored). Runs as root.
pub async fn holder_main(args: &[String]) -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut kinds = Kinds::default();
    let (mut hostname, mut ready) = (None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--net" => kinds.net = true,
            "--uts" => kinds.uts = true,
            "--ipc" => kinds.ipc = true,
            "--hostname" => {
                hostname = Some(it.next().ok_or_else(|| anyhow::anyhow!(HOLDER_USAGE))?)
            }
            "--ready" => ready = Some(it.next().ok_or_else(|| anyhow::anyhow!(HOLDER_USAGE))?),
            _ => anyhow::bail!(HOLDER_USAGE),
        }
    }
    let ready = ready.ok_or_else(|| anyhow::anyhow!(HOLDER_USAGE))?;
    anyhow::ensure!(
        hostname.is_none() || kinds.uts,
        "--hostname needs --uts (the host's hostname is not changed)"
    );
    // This runs on the main thread, before the first await: the thread
    // whose namespaces `/proc/<pid>/ns/*` show.
    unshare(kinds.flags()).map_err(|e| anyhow::anyhow!("unshare: {e} (needs root)"))?;
    if let Some(name) = hostname {
        // The UTS sysctl of the calling thread's (the new) namespace.
        std::fs::write("/proc/sys/kernel/hostname", name)
            .map_err(|e| anyhow::anyhow!("setting the hostname {name:?}: {e}"))?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    std::fs::write(ready, b"")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(0),
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_host_network_and_ipc() {
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"spec": spec})).unwrap()
        };
        let all = Kinds::for_pod(&pod(serde_json::json!({"containers": []})));
        assert_eq!(
            all,
            Kinds {
                net: true,
                uts: true,
                ipc: true
            }
        );
        let host = Kinds::for_pod(&pod(
            serde_json::json!({"containers": [], "hostNetwork": true}),
        ));
        assert_eq!(
            host,
            Kinds {
                net: false,
                uts: false,
                ipc: true
            }
        );
        let none = Kinds::for_pod(&pod(
            serde_json::json!({"containers": [], "hostNetwork": true, "hostIPC": true}),
        ));
        assert!(!none.any());
    }

    #[test]
    fn the_exec_argument_round_trips_and_is_checked() {
        let ns = PodNamespaces {
            pid: 42,
            start: 7,
            kinds: Kinds {
                net: true,
                uts: false,
                ipc: true,
            },
        };
        assert_eq!(ns.to_arg(), "42:7:net,ipc");
        assert_eq!(PodNamespaces::parse("42:7:net,ipc").unwrap(), ns);
        assert!(PodNamespaces::parse("42:x:net").is_err());
        let err = PodNamespaces::parse("42:7:pid").unwrap_err();
        assert_eq!(err, "unknown namespace \"pid\" (net, uts, ipc)");
    }

    #[test]
    fn veth_names_fit_an_interface_name() {
        let a = veth_name("ce7ab8cf-595e-4874-9a52-4af6d4943a1e");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("bp"));
        assert_eq!(a, veth_name("ce7ab8cf-595e-4874-9a52-4af6d4943a1e"));
        assert_ne!(a, veth_name("ce7ab8cf-595e-4874-9a52-4af6d4943a1f"));
    }

    #[test]
    fn a_dead_holder_is_never_joined() {
        let gone = PodNamespaces {
            pid: std::process::id() as i32,
            start: 1,
            kinds: Kinds {
                net: true,
                uts: true,
                ipc: true,
            },
        };
        let err = gone.join().unwrap_err();
        assert!(err.to_string().contains("is gone"), "{err}");
    }
}
