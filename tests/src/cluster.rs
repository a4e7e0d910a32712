//! Multi-process clusters on 127.0.0.1: real etcd and Ballast, both
//! started with the very same etcd command-line flags, over plain HTTP or
//! (opt-in, [`ClusterOptions::tls`]) over TLS with client-cert auth on the
//! client and peer URLs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use ballast_pki::{Ca, CertSpec};

use crate::etcdctl::{ClientTls, Etcdctl};
use crate::process::{self, Io, Launch};

/// How long a cluster (or a restarted member) may take to become healthy.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(45);

/// Which server implementation a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterKind {
    /// Real etcd: `$ETCD_BIN` or `/usr/bin/etcd`.
    Etcd,
    /// Ballast: `ballast server` from this workspace's build (run the tests
    /// with `cargo test --workspace`, which builds it first).
    Ballast,
}

impl ClusterKind {
    /// A short lower-case name (`etcd`), used in directory names.
    pub fn name(self) -> &'static str {
        match self {
            ClusterKind::Etcd => "etcd",
            ClusterKind::Ballast => "ballast",
        }
    }

    /// The process that runs `member`. Every kind gets the same etcd flags
    /// ([`Member::etcd_flags`]); a new kind is one more match arm here, e.g.
    /// `ClusterKind::Ballast => Launch::new(ballast_bin()).arg("server")`.
    fn launch(self, member: &Member) -> Launch {
        let launch = match self {
            ClusterKind::Etcd => Launch::new(
                std::env::var_os("ETCD_BIN")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd")),
            ),
            ClusterKind::Ballast => Launch::new(workspace_bin("ballast")).arg("server"),
        };
        launch
            .args(member.etcd_flags())
            .io(Io::Log(member.log_path.clone()))
    }
}

/// A binary this workspace builds (`target/<profile>/<name>`), found next to
/// the running test executable (`target/<profile>/deps/<test>`). For a
/// `ClusterKind::Ballast` arm: `Launch::new(workspace_bin("ballast")).arg("server")`.
/// `cargo test --workspace` builds the `cli` package's binary first.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// How to start a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Number of members.
    pub size: usize,
    /// Serve client and peer URLs over `https://`: a fresh CA in the
    /// cluster's directory, a certificate per member (server, client and
    /// peer), `--client-cert-auth` and `--peer-client-cert-auth` on, and a
    /// `root` client certificate for etcdctl.
    pub tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            size: 3,
            tls: false,
        }
    }
}

/// A TLS cluster's CA and the client credentials its etcdctl uses.
#[derive(Debug)]
pub struct ClusterTls {
    /// The CA that signs every member's and client's certificate.
    pub ca: Ca,
    /// Where TLS files are written (`<cluster dir>/tls`).
    pub dir: PathBuf,
    /// `ca.crt` in `dir`.
    pub ca_file: PathBuf,
    /// `--cacert`, and a `root` client certificate and key.
    pub client: ClientTls,
}

impl ClusterTls {
    fn new(dir: PathBuf) -> ClusterTls {
        let ca = Ca::new("ballast-test-ca").expect("make a CA");
        let ca_file = ca.write(&dir).expect("write the CA");
        let (cert, key) = ca
            .issue(&CertSpec::client("root", &[]))
            .and_then(|c| c.write(&dir, "client-root"))
            .expect("issue the client certificate");
        ClusterTls {
            ca,
            client: ClientTls {
                cacert: Some(ca_file.clone()),
                cert: Some(cert),
                key: Some(key),
            },
            dir,
            ca_file,
        }
    }

    /// Issues `name`'s certificate (server, client and peer use; loopback)
    /// and returns the member's TLS files.
    pub fn member(&self, name: &str) -> MemberTls {
        let (cert, key) = self
            .ca
            .issue(&CertSpec::loopback_server(name, &[]))
            .and_then(|c| c.write(&self.dir, name))
            .expect("issue a member certificate");
        MemberTls {
            cert_file: cert.clone(),
            key_file: key.clone(),
            trusted_ca_file: self.ca_file.clone(),
            peer_cert_file: cert,
            peer_key_file: key,
            peer_trusted_ca_file: self.ca_file.clone(),
        }
    }
}

/// A member's TLS flags (files), client-cert auth on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: PathBuf,
    pub peer_cert_file: PathBuf,
    pub peer_key_file: PathBuf,
    pub peer_trusted_ca_file: PathBuf,
}

impl MemberTls {
    /// etcd's TLS flags for these files.
    pub fn flags(&self) -> Vec<String> {
        let f = |name: &str, p: &Path| format!("--{name}={}", p.display());
        vec![
            f("cert-file", &self.cert_file),
            f("key-file", &self.key_file),
            f("trusted-ca-file", &self.trusted_ca_file),
            "--client-cert-auth".to_string(),
            f("peer-cert-file", &self.peer_cert_file),
            f("peer-key-file", &self.peer_key_file),
            f("peer-trusted-ca-file", &self.peer_trusted_ca_file),
            "--peer-client-cert-auth".to_string(),
        ]
    }
}

/// One member: its ports, directories and (while running) its process.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// `--initial-cluster` for this member's first start.
    pub initial_cluster: String,
    /// `--initial-cluster-state`: `new`, or `existing` for a member added later.
    pub initial_cluster_state: String,
    pub initial_cluster_token: String,
    /// Started at least once (a prepared member is not an endpoint before).
    pub started: bool,
    /// Removed from the cluster: not an endpoint any more, never restarted.
    pub removed: bool,
    /// TLS files when the member serves `https://` (set before starting
    /// it to change them, e.g. a peer certificate from another CA).
    pub tls: Option<MemberTls>,
    /// More flags for the member's next starts, after the etcd flags.
    pub extra_flags: Vec<String>,
    child: Option<Child>,
}

impl Member {
    /// `127.0.0.1:PORT` (`https://127.0.0.1:PORT` with TLS), the form
    /// `etcdctl --endpoints` takes.
    pub fn endpoint(&self) -> String {
        match self.tls {
            Some(_) => self.client_url(),
            None => format!("127.0.0.1:{}", self.client_port),
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.peer_port)
    }

    /// The etcd flags every kind of server is started with.
    pub fn etcd_flags(&self) -> Vec<String> {
        let mut flags = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={}", self.client_url()),
            format!("--advertise-client-urls={}", self.client_url()),
            format!("--listen-peer-urls={}", self.peer_url()),
            format!("--initial-advertise-peer-urls={}", self.peer_url()),
            format!("--initial-cluster={}", self.initial_cluster),
            format!("--initial-cluster-state={}", self.initial_cluster_state),
            format!("--initial-cluster-token={}", self.initial_cluster_token),
        ];
        if let Some(tls) = &self.tls {
            flags.extend(tls.flags());
        }
        flags.extend(self.extra_flags.iter().cloned());
        flags
    }

    /// Whether the process is running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last `n` lines of this member's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A cluster of real server processes on 127.0.0.1. Dropping it SIGKILLs
/// every member and deletes its directory.
#[derive(Debug)]
pub struct Cluster {
    kind: ClusterKind,
    members: Vec<Member>,
    token: String,
    tls: Option<ClusterTls>,
    // Dropped last (fields drop in order), after the processes are dead.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a three-member cluster and waits until it is healthy.
    pub fn start(kind: ClusterKind) -> Cluster {
        Cluster::start_with_size(kind, 3)
    }

    /// Starts a `size`-member cluster and waits until it is healthy.
    pub fn start_with_size(kind: ClusterKind, size: usize) -> Cluster {
        Cluster::start_with(
            kind,
            ClusterOptions {
                size,
                ..ClusterOptions::default()
            },
        )
    }

    /// Starts a cluster as `options` say and waits until it is healthy.
    pub fn start_with(kind: ClusterKind, options: ClusterOptions) -> Cluster {
        let size = options.size;
        assert!(size > 0, "a cluster needs at least one member");
        let dir = process::cluster_dir(kind.name());
        let token = format!(
            "ballast-test-{}",
            dir.path().file_name().unwrap_or_default().to_string_lossy()
        );
        let tls = options.tls.then(|| ClusterTls::new(dir.path().join("tls")));
        let ports = process::free_ports(2 * size);
        let mut members: Vec<Member> = (0..size)
            .map(|i| {
                let name = format!("m{i}");
                let mut m = new_member(dir.path(), &name, ports[2 * i], ports[2 * i + 1], &token);
                m.tls = tls.as_ref().map(|t| t.member(&name));
                m
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = initial.clone();
            m.initial_cluster_state = "new".into();
        }
        let mut cluster = Cluster {
            kind,
            members,
            token,
            tls,
            dir,
        };
        for i in 0..size {
            cluster.spawn_member(i);
        }
        cluster.wait_healthy(HEALTHY_TIMEOUT);
        cluster
    }

    /// A three-member cluster of `kind` shared by every test in this process
    /// that asks for one. It is never dropped: its members die with the test
    /// process (see [`process::spawn`]). Tests sharing it must use distinct
    /// key prefixes and must not kill members, compact, or change membership.
    pub fn shared(kind: ClusterKind) -> &'static Cluster {
        static SHARED: Mutex<Vec<(ClusterKind, &'static Cluster)>> = Mutex::new(Vec::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = shared.iter().find(|(k, _)| *k == kind) {
            return c;
        }
        let c: &'static Cluster = Box::leak(Box::new(Cluster::start(kind)));
        process::remove_dir_after_exit(c.dir());
        shared.push((kind, c));
        c
    }

    pub fn kind(&self) -> ClusterKind {
        self.kind
    }

    /// The CA and client credentials of a TLS cluster.
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// All members ever configured, including removed ones (by index).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    pub fn member_mut(&mut self, i: usize) -> &mut Member {
        &mut self.members[i]
    }

    /// The client endpoints of the members that were started and are not
    /// removed (whether or not they run right now).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.started && !m.removed)
            .map(Member::endpoint)
            .collect()
    }

    /// `etcdctl` against every (non-removed) member (with the `root`
    /// client certificate on a TLS cluster).
    pub fn etcdctl(&self) -> Etcdctl {
        self.with_client_tls(Etcdctl::new(self.endpoints()))
    }

    /// `etcdctl` against member `i` only.
    pub fn etcdctl_at(&self, i: usize) -> Etcdctl {
        self.with_client_tls(Etcdctl::new([self.members[i].endpoint()]))
    }

    fn with_client_tls(&self, ctl: Etcdctl) -> Etcdctl {
        match &self.tls {
            Some(t) => ctl.with_tls(t.client.clone()),
            None => ctl,
        }
    }

    /// Waits until `etcdctl endpoint health` passes on every started,
    /// non-removed member; panics with the members' log tails if it doesn't in time.
    pub fn wait_healthy(&self, timeout: Duration) {
        let ctl = self.etcdctl().with_timeout(Duration::from_secs(10));
        self.wait_health_of(&ctl, timeout);
    }

    /// Waits until `etcdctl endpoint health` passes on member `i`.
    pub fn wait_member_healthy(&self, i: usize, timeout: Duration) {
        let ctl = self.etcdctl_at(i).with_timeout(Duration::from_secs(10));
        self.wait_health_of(&ctl, timeout);
    }

    /// Waits until member `i` answers `etcdctl endpoint status` (a learner
    /// does: it only refuses the linearizable read that `endpoint health`
    /// makes).
    pub fn wait_member_up(&self, i: usize, timeout: Duration) {
        let ctl = self.etcdctl_at(i).with_timeout(Duration::from_secs(10));
        self.wait_check(
            &ctl,
            &["endpoint", "status", "--command-timeout=3s"],
            timeout,
        );
    }

    fn wait_health_of(&self, ctl: &Etcdctl, timeout: Duration) {
        self.wait_check(
            ctl,
            &["endpoint", "health", "--command-timeout=3s"],
            timeout,
        );
    }

    fn wait_check(&self, ctl: &Etcdctl, args: &[&str], timeout: Duration) {
        let mut last = None;
        let healthy = process::poll(timeout, Duration::from_millis(200), || {
            let out = ctl.run(args);
            let ok = out.code == 0;
            last = Some(out);
            ok.then_some(())
        });
        if healthy.is_none() {
            panic!(
                "{:?} cluster at {:?}: `etcdctl {}` still failing after {timeout:?}; \
                 last check: {last:#?}\n{}",
                self.kind,
                ctl.endpoints(),
                args.join(" "),
                self.log_tails(40)
            );
        }
    }

    /// The last `n` log lines of every member, for failure messages.
    pub fn log_tails(&self, n: usize) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "---- {} ({}) ----\n{}\n",
                    m.name,
                    m.endpoint(),
                    m.log_tail(n)
                )
            })
            .collect()
    }

    /// Starts member `i` on its data directory without waiting for it (for
    /// a start that is expected to fail, or to be waited for otherwise).
    pub fn spawn_member(&mut self, i: usize) {
        let kind = self.kind;
        let m = &mut self.members[i];
        assert!(!m.removed, "member {} was removed", m.name);
        assert!(!m.is_running(), "member {} is already running", m.name);
        let child = process::spawn(kind.launch(m))
            .unwrap_or_else(|e| panic!("start {:?} member {}: {e}", kind, m.name));
        m.child = Some(child);
        m.started = true;
    }

    /// SIGKILLs member `i` (a crash: no graceful shutdown).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            process::kill(&mut c);
        }
    }

    /// SIGTERMs member `i` and waits up to 20 s for it to exit (then
    /// SIGKILLs it). Returns the exit code if it exited by itself.
    pub fn terminate(&mut self, i: usize) -> Option<i32> {
        let mut c = self.members[i].child.take()?;
        process::terminate(&mut c, Duration::from_secs(20)).and_then(|s| s.code())
    }

    /// Starts member `i` again on its data directory (after [`kill`] or
    /// [`terminate`]) and waits until it is healthy.
    ///
    /// [`kill`]: Cluster::kill
    /// [`terminate`]: Cluster::terminate
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn_member(i);
        self.wait_member_healthy(i, HEALTHY_TIMEOUT);
    }

    /// Reserves ports and directories for a new member named `name` without
    /// starting it; returns its index. Announce it with
    /// `etcdctl member add NAME --peer-urls=<peer_url>`, then start it with
    /// [`start_added_member`](Cluster::start_added_member).
    pub fn prepare_member(&mut self, name: &str) -> usize {
        assert!(
            self.members.iter().all(|m| m.name != name),
            "member name {name} is taken"
        );
        let ports = process::free_ports(2);
        let mut m = new_member(self.dir.path(), name, ports[0], ports[1], &self.token);
        m.tls = self.tls.as_ref().map(|t| t.member(name));
        self.members.push(m);
        self.members.len() - 1
    }

    /// Starts the prepared member `i` with `--initial-cluster-state=existing`
    /// and `initial_cluster` (e.g. the `ETCD_INITIAL_CLUSTER` that
    /// `etcdctl member add` printed), then waits until it answers
    /// `endpoint status` (it may be a learner, see
    /// [`wait_member_up`](Cluster::wait_member_up)).
    pub fn start_added_member(&mut self, i: usize, initial_cluster: &str) {
        let m = &mut self.members[i];
        m.initial_cluster = initial_cluster.to_string();
        m.initial_cluster_state = "existing".into();
        self.spawn_member(i);
        self.wait_member_up(i, HEALTHY_TIMEOUT);
    }

    /// Starts the prepared member `i` like
    /// [`start_added_member`](Cluster::start_added_member) but does not
    /// wait for it (for a member that is expected never to come up).
    pub fn spawn_added_member(&mut self, i: usize, initial_cluster: &str) {
        let m = &mut self.members[i];
        m.initial_cluster = initial_cluster.to_string();
        m.initial_cluster_state = "existing".into();
        self.spawn_member(i);
    }

    /// Marks member `i` removed (after `etcdctl member remove`) and kills
    /// its process if it runs.
    pub fn forget_member(&mut self, i: usize) {
        self.kill(i);
        self.members[i].removed = true;
    }

    /// Member `i`'s id in hex, as `etcdctl member list` prints it, looked up
    /// by name through `etcdctl member list -w json`.
    pub fn member_id_hex(&self, i: usize) -> String {
        let name = &self.members[i].name;
        let out = self.etcdctl().run(&["member", "list", "-w", "json"]);
        let json = out.ok().json();
        let id = json["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"].as_str() == Some(name.as_str()))
            .and_then(|m| m["ID"].as_u64())
            .unwrap_or_else(|| panic!("member {name} not in {json}"));
        format!("{id:x}")
    }

    /// Index of the member the cluster agrees is leader (via
    /// `endpoint status -w json`), by matching member ids.
    pub fn leader(&self) -> Option<usize> {
        let out = self.etcdctl().run(&["endpoint", "status", "-w", "json"]);
        if out.code != 0 {
            return None;
        }
        let json = out.json();
        let statuses = json.as_array()?;
        let leader = statuses.first()?["Status"]["leader"].as_u64()?;
        let by_endpoint: HashMap<String, u64> = statuses
            .iter()
            .filter_map(|s| {
                Some((
                    s["Endpoint"].as_str()?.to_string(),
                    s["Status"]["header"]["member_id"].as_u64()?,
                ))
            })
            .collect();
        self.members
            .iter()
            .position(|m| !m.removed && by_endpoint.get(&m.endpoint()) == Some(&leader))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                process::kill(&mut c);
            }
        }
    }
}

fn new_member(dir: &Path, name: &str, client_port: u16, peer_port: u16, token: &str) -> Member {
    Member {
        name: name.to_string(),
        client_port,
        peer_port,
        data_dir: dir.join(format!("{name}.data")),
        log_path: dir.join(format!("{name}.log")),
        initial_cluster: String::new(),
        initial_cluster_state: "new".into(),
        initial_cluster_token: token.to_string(),
        started: false,
        removed: false,
        tls: None,
        extra_flags: Vec::new(),
        child: None,
    }
}
