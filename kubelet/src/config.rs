//! The kubelet's configuration: what `ballast kubelet`'s flags fill in and
//! what `ballast up` and the benchmarks build directly.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::ApiSecurity;

/// Which runtime runs the containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Real child processes built from the image catalogue ([`crate::images`]).
    Process,
    /// Simulated containers ([`crate::runtime::sim`]): timers, no processes.
    Sim,
}

/// Everything a [`crate::Kubelet`] needs besides its client.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The Node's name; with `nodes > 1` (sim only) the prefix of
    /// `<name>-000`, `<name>-001`, ….
    pub node_name: String,
    /// How many nodes this process hosts (sim runtime only; process: 1).
    pub nodes: usize,
    pub runtime: RuntimeKind,
    /// Sandboxes, logs and container state live under `<root_dir>/pods/<uid>`.
    pub root_dir: PathBuf,
    /// The HTTP server's port on 127.0.0.1 (`0`: any free one); reported in
    /// the Node's `status.daemonEndpoints.kubeletEndpoint.Port`.
    pub port: u16,
    /// The node's pod CIDR inside 127.0.0.0/8 (process: e.g. `127.1.0.0/16`).
    /// With several sim nodes, node `i` takes the `i`-th /24 of it. Empty:
    /// each node takes the `spec.podCIDR` the controller manager gives its
    /// Node (`--allocate-node-cidrs`), waiting at most `pod_cidr_wait`.
    pub pod_cidr: String,
    /// How long a node without `pod_cidr` waits for its Node's `spec.podCIDR`.
    pub pod_cidr_wait: Duration,
    /// The cluster DNS servers ClusterFirst pods resolve with
    /// (`--cluster-dns`; none: they fall back to Default, with a
    /// `MissingClusterDNS` warning), and the cluster domain their search
    /// list starts from (`--cluster-domain`, default `cluster.local`;
    /// empty: none). See [`crate::dns`].
    pub cluster_dns: Vec<std::net::IpAddr>,
    pub cluster_domain: String,
    /// The node's resolver configuration, the base of pods' resolv.conf
    /// (`--resolv-conf`, default `/etc/resolv.conf`; `None`: the flag
    /// empty, a resolver on this machine).
    pub resolv_conf: Option<PathBuf>,
    /// Capacity and allocatable: cpu (a quantity, `"4"`), memory (`"8Gi"`), pods.
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// How often the node status is computed (posted when it changed).
    pub node_status_update_frequency: Duration,
    /// How often the node status is posted even when unchanged (heartbeat).
    pub node_status_report_frequency: Duration,
    /// How often the node's Lease is renewed.
    pub lease_renew_interval: Duration,
    /// The Lease's `leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// Restart back-off (CrashLoopBackOff and ImagePullBackOff): first delay
    /// and cap; the back-off resets after a container ran `2 × backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The `ballast` executable: the container shim and the `ballast/httpd`
    /// image run it (`ballast image …`).
    pub ballast_exe: PathBuf,
    /// On shutdown, stop this node's containers (SIGTERM, then SIGKILL after
    /// `shutdown_grace`). When false they keep running and the next kubelet
    /// on the same root dir adopts them.
    pub stop_containers_on_exit: bool,
    pub shutdown_grace: Duration,
    /// Write core/v1 Events (Pulling, Started, Unhealthy, …).
    pub record_events: bool,
    /// Container log rotation (process runtime): a log is rotated before a
    /// write would take it past this many bytes (`None`: never), keeping at
    /// most `container_log_max_files` files (≥ 2), the live one included.
    pub container_log_max_size: Option<u64>,
    pub container_log_max_files: usize,
    /// The user and group of containers without `runAsUser`/`runAsGroup`
    /// when the kubelet runs as root (process runtime; default 65534,
    /// `nobody`). A kubelet that is not root runs them as itself.
    pub container_user: crate::runtime::confine::RunAs,
    /// Which cgroups enforce containers' resource limits (process runtime,
    /// as root; default: detected).
    pub cgroups: crate::cgroups::CgroupMode,
    /// Each container in a mount namespace of its own, with the pod's
    /// volumes (process runtime, as root); off: volumes are not mounted.
    pub mount_namespaces: bool,
    /// Each pod in network, UTS and IPC namespaces of its own, shared by
    /// its containers (process runtime, as root; see
    /// [`crate::runtime::netns`]); off: containers share the host's.
    pub pod_namespaces: bool,
    /// The API's TLS, authentication and authorization (default: plain
    /// HTTP, anonymous allowed, AlwaysAllow — the kubelet's flag defaults).
    pub api: ApiSecurity,
    /// How long a port-forward connection may be idle before it is closed
    /// (`--streaming-connection-idle-timeout`, default 4 h; zero: never).
    pub streaming_connection_idle_timeout: Duration,
}

impl KubeletConfig {
    /// Defaults for a process-runtime node named `node_name` (Kubernetes'
    /// timings: status every 10 s, heartbeat every 5 min, Lease every 10 s
    /// for 40 s, back-off 10 s doubling to 300 s; logs rotated at 10Mi, 5
    /// files).
    pub fn new(node_name: &str, ballast_exe: PathBuf) -> KubeletConfig {
        KubeletConfig {
            node_name: node_name.to_string(),
            nodes: 1,
            runtime: RuntimeKind::Process,
            root_dir: PathBuf::from("ballast-kubelet").join(node_name),
            port: 0,
            pod_cidr: "127.1.0.0/16".to_string(),
            pod_cidr_wait: Duration::from_secs(120),
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".to_string(),
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            cpu: std::thread::available_parallelism()
                .map(|n| n.get().to_string())
                .unwrap_or_else(|_| "1".to_string()),
            memory: host_memory().unwrap_or_else(|| "4Gi".to_string()),
            max_pods: 110,
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            ballast_exe,
            stop_containers_on_exit: true,
            shutdown_grace: Duration::from_secs(2),
            record_events: true,
            container_log_max_size: Some(10 << 20),
            container_log_max_files: 5,
            container_user: crate::runtime::confine::RunAs::NOBODY,
            cgroups: crate::cgroups::CgroupMode::Auto,
            mount_namespaces: false,
            pod_namespaces: false,
            api: ApiSecurity::default(),
            streaming_connection_idle_timeout: crate::portforward::DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// The DNS configurer of its pods (see [`crate::dns`]).
    pub fn dns(&self) -> crate::dns::Configurer {
        crate::dns::Configurer {
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            resolv_conf: self.resolv_conf.clone(),
        }
    }

    /// The names of the nodes this kubelet hosts.
    pub fn node_names(&self) -> Vec<String> {
        if self.runtime == RuntimeKind::Sim && self.nodes > 1 {
            let width = (self.nodes - 1).to_string().len().max(3);
            (0..self.nodes)
                .map(|i| format!("{}-{:0width$}", self.node_name, i))
                .collect()
        } else {
            vec![self.node_name.clone()]
        }
    }
}

/// `MemTotal` from /proc/meminfo as a `Ki` quantity.
fn host_memory() -> Option<String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{kib}Ki"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_nodes_are_numbered() {
        let mut c = KubeletConfig::new("sim", PathBuf::from("/bin/false"));
        assert_eq!(c.node_names(), vec!["sim"]);
        c.runtime = RuntimeKind::Sim;
        c.nodes = 3;
        assert_eq!(c.node_names(), vec!["sim-000", "sim-001", "sim-002"]);
        c.nodes = 1000;
        assert_eq!(c.node_names()[999], "sim-999");
    }
}
