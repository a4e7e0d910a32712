//! Test hosts: one Linux network namespace per storage member plus one for
//! the clients, joined by veth links to a bridge in a "switch" namespace.
//!
//! Every host uses a `127.77.0.x/32` address on its `eth0` (loopback-range
//! addresses only, as the project requires): inside each namespace
//! `route_localnet=1` lets 127/8 packets cross a non-loopback interface, and
//! the namespace's `local 127.0.0.0/8` route is removed (only
//! `127.0.0.1` stays local) so the peers' 127.77.0.x addresses route over
//! `eth0` instead of being swallowed by `lo`. The root namespace is never
//! touched.
//!
//! Partitions are routes on one host: `blackhole` (packets vanish) or
//! `prohibit` (the sender gets an error at once) towards a peer's /32.
//!
//! Namespaces are named `bchaos<pid>-<n>-…`. [`TestNet`]'s `Drop` deletes
//! them; a detached `sh` deletes them after this process exits (a panic
//! that aborts, a SIGKILL); and [`TestNet::create`] first sweeps those of
//! dead processes.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use nix::sched::{setns, CloneFlags};

/// Prefix of every namespace the chaos suite creates.
pub const NS_PREFIX: &str = "bchaos";

/// The /24 every test host lives in.
pub const SUBNET: [u8; 3] = [127, 77, 0];

/// One test host: a namespace and its address.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub addr: Ipv4Addr,
}

/// A partition route kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Packets are dropped silently (a cut cable).
    Blackhole,
    /// The sender gets EACCES at once (a firewall rejecting).
    Prohibit,
}

impl Block {
    fn word(self) -> &'static str {
        match self {
            Block::Blackhole => "blackhole",
            Block::Prohibit => "prohibit",
        }
    }
}

/// The namespaces of one chaos run; dropping it deletes them all.
#[derive(Debug)]
pub struct TestNet {
    switch: String,
    /// The storage members' hosts, member `i` at `127.77.0.(i+1)`.
    pub members: Vec<Host>,
    /// The clients' host, `127.77.0.100`.
    pub client: Host,
    routes: Mutex<Vec<(usize, Block, Ipv4Addr)>>,
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> io::Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Fails with a clear message unless this process can create network
/// namespaces (root and a working `ip netns`).
pub fn preflight() -> Result<(), String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Err(format!(
            "the chaos suite needs root (effective uid is {uid:?}): it creates network \
             namespaces with `ip netns add`; run the test as root"
        ));
    }
    for tool in ["ip", "nsenter", "sysctl"] {
        let ok = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            return Err(format!("the chaos suite needs `{tool}` on PATH"));
        }
    }
    ip(&["netns", "list"]).map_err(|e| format!("`ip netns` is unavailable: {e}"))
}

/// Deletes namespaces with [`NS_PREFIX`] whose creating process is gone.
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let pid = name
            .strip_prefix(NS_PREFIX)
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
}

impl TestNet {
    /// Creates `members` member hosts and a client host on one bridge.
    pub fn create(members: usize) -> io::Result<TestNet> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let id = format!(
            "{NS_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let addr = |last: u8| Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], last);
        let net = TestNet {
            switch: format!("{id}-sw"),
            members: (0..members)
                .map(|i| Host {
                    ns: format!("{id}-m{i}"),
                    addr: addr(i as u8 + 1),
                })
                .collect(),
            client: Host {
                ns: format!("{id}-c"),
                addr: addr(100),
            },
            routes: Mutex::new(Vec::new()),
        };
        // From here on, Drop (or the detached reaper) cleans up whatever
        // part was created.
        net.spawn_reaper();
        ip(&["netns", "add", &net.switch])?;
        ip(&["-n", &net.switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &net.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.switch, "link", "set", "br0", "up"])?;
        let hosts: Vec<Host> = net.members.iter().chain([&net.client]).cloned().collect();
        for (i, h) in hosts.iter().enumerate() {
            net.add_host(i, h)?;
        }
        Ok(net)
    }

    fn add_host(&self, i: usize, h: &Host) -> io::Result<()> {
        let port = format!("p{i}");
        let ns = h.ns.as_str();
        ip(&["netns", "add", ns])?;
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ])?;
        ip(&["-n", &self.switch, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &self.switch, "link", "set", &port, "up"])?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.route_localnet=1",
                "net.ipv4.conf.default.route_localnet=1",
                "net.ipv4.conf.lo.route_localnet=1",
                "net.ipv4.conf.eth0.route_localnet=1",
            ],
        )?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        let a = h.addr.to_string();
        ip(&["-n", ns, "addr", "add", &format!("{a}/32"), "dev", "eth0"])?;
        ip(&[
            "-n",
            ns,
            "route",
            "del",
            "table",
            "local",
            "local",
            "127.0.0.0/8",
            "dev",
            "lo",
        ])?;
        let subnet = format!("{}.{}.{}.0/24", SUBNET[0], SUBNET[1], SUBNET[2]);
        ip(&["-n", ns, "route", "add", &subnet, "dev", "eth0", "src", &a])
    }

    fn all_namespaces(&self) -> Vec<String> {
        self.members
            .iter()
            .chain([&self.client])
            .map(|h| h.ns.clone())
            .chain([self.switch.clone()])
            .collect()
    }

    /// A detached `sh` that deletes this net's namespaces once this process
    /// has exited, however it exits.
    fn spawn_reaper(&self) {
        let dels: Vec<String> = self
            .all_namespaces()
            .iter()
            .map(|n| format!("ip netns del {n} 2>/dev/null"))
            .collect();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {}; true",
            dels.join("; "),
            pid = std::process::id()
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Adds a `kind` route on member `from`'s host towards `to`'s address.
    pub fn block(&self, from: usize, to: Ipv4Addr, kind: Block) -> io::Result<()> {
        let dst = format!("{to}/32");
        ip(&[
            "-n",
            &self.members[from].ns,
            "route",
            "add",
            kind.word(),
            &dst,
        ])?;
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((from, kind, to));
        Ok(())
    }

    /// Removes every partition route added by [`block`](TestNet::block).
    pub fn heal(&self) -> io::Result<()> {
        let routes = std::mem::take(&mut *self.routes.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first_err = None;
        for (from, kind, to) in routes {
            let dst = format!("{to}/32");
            if let Err(e) = ip(&[
                "-n",
                &self.members[from].ns,
                "route",
                "del",
                kind.word(),
                &dst,
            ]) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in self.all_namespaces() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// Moves the calling thread into namespace `ns` (sockets it creates from
/// now on live there; other threads are unaffected).
pub fn enter(ns: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{ns}"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Whether namespace `ns` exists.
pub fn exists(ns: &str) -> bool {
    std::path::Path::new(&format!("/run/netns/{ns}")).exists()
}
