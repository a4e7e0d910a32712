//! Resource limits through Linux control groups, and pods' QoS classes.
//!
//! A kubelet running as root on a host with writable cgroups gives every
//! pod a cgroup and every container instance a leaf beneath it, nested in
//! the kubelet's own cgroup (per controller on cgroup v1):
//!
//! ```text
//! <own cgroup>/ballast/<node>-<hash of the root dir>/pod<uid>/<container>.<attempt>
//! ```
//!
//! The values are kubelet's (`pkg/kubelet/cm/helpers_linux.go`):
//! `requests.cpu` → `cpu.shares` (milliCPU × 1024 / 1000, at least 2; on
//! v2 `cpu.weight` from those shares), `limits.cpu` → a CFS quota per
//! 100 ms period, `limits.memory` → the memory limit (v1 also bounds
//! memory + swap by it, so the container is killed rather than swapped).
//! The pod's cgroup holds the sums (a cpu or memory limit only when every
//! container declares one; an init container's value when it is larger),
//! as for `--cgroups-per-qos`; a BestEffort pod gets the minimum shares.
//!
//! The container's process joins its leaf before `exec` ([`join`]); when
//! the instance ends, the leaf's OOM kill count makes its terminated reason
//! `OOMKilled` ([`oom_killed`]), and processes left in the leaf are killed,
//! as a runtime ends a container's whole cgroup.
//!
//! `--cgroups auto` (the default) uses v2 where `/sys/fs/cgroup` is a
//! cgroup2 mount whose controllers include memory and cpu, else v1 where
//! the memory and cpu hierarchies are mounted; `v1`/`v2` insist on one;
//! `none` runs without limits. A kubelet that is not root, or whose
//! cgroups are not writable, runs without limits and says so once.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_controllers::scheduler::{parse_milli, parse_units};
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The CFS period limits are expressed in (kubelet's default, 100 ms).
pub const CPU_PERIOD_US: i64 = 100_000;
/// The fewest shares a cgroup gets (kubelet's `MinShares`).
pub const MIN_SHARES: u64 = 2;
/// The most shares a cgroup gets (kubelet's `MaxShares`).
pub const MAX_SHARES: u64 = 262_144;
/// The smallest CFS quota (kubelet's `MinQuotaPeriod`, 1 ms).
pub const MIN_QUOTA_US: i64 = 1_000;

/// Which cgroup hierarchy the kubelet uses (`--cgroups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// v2 where usable, else v1, else none.
    #[default]
    Auto,
    V1,
    V2,
    /// No cgroups: limits are not enforced.
    None,
}

impl std::str::FromStr for CgroupMode {
    type Err = String;
    fn from_str(s: &str) -> Result<CgroupMode, String> {
        match s {
            "auto" => Ok(CgroupMode::Auto),
            "v1" => Ok(CgroupMode::V1),
            "v2" => Ok(CgroupMode::V2),
            "none" => Ok(CgroupMode::None),
            _ => Err(format!("{s:?}: want auto, v1, v2 or none")),
        }
    }
}

/// What a cgroup is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `cpu.shares` (v2: converted to `cpu.weight`).
    pub cpu_shares: u64,
    /// The CFS quota in µs per [`CPU_PERIOD_US`] (`None`: unlimited).
    pub cpu_quota_us: Option<i64>,
    /// The memory limit in bytes (`None`: unlimited).
    pub memory_bytes: Option<i64>,
}

/// kubelet's `MilliCPUToShares`.
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    ((milli as u64).saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// kubelet's `MilliCPUToQuota`: µs of cpu time per `period_us`, at least
/// [`MIN_QUOTA_US`]; `None` for no limit.
pub fn milli_cpu_to_quota(milli: i64, period_us: i64) -> Option<i64> {
    (milli > 0).then(|| (milli.saturating_mul(period_us) / 1000).max(MIN_QUOTA_US))
}

/// runc's conversion of `cpu.shares` to cgroup v2's `cpu.weight` (1–10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

fn quantity(
    list: Option<&std::collections::BTreeMap<String, Quantity>>,
    name: &str,
    milli: bool,
) -> i64 {
    list.and_then(|l| l.get(name))
        .and_then(|q| {
            if milli {
                parse_milli(&q.0)
            } else {
                parse_units(&q.0)
            }
            .ok()
        })
        .unwrap_or(0)
        .max(0)
}

/// `(cpu request, cpu limit)` in milliCPU and `(memory request, memory
/// limit)` in bytes; 0 where unset. A limit without a request stands for
/// the request too (the apiserver's defaulting).
fn resources(r: Option<&ResourceRequirements>) -> ((i64, i64), (i64, i64)) {
    let requests = r.and_then(|r| r.requests.as_ref());
    let limits = r.and_then(|r| r.limits.as_ref());
    let pair = |name: &str, milli: bool| {
        let limit = quantity(limits, name, milli);
        let request = quantity(requests, name, milli);
        let has_request = requests.is_some_and(|l| l.contains_key(name));
        (if has_request { request } else { limit }, limit)
    };
    (pair("cpu", true), pair("memory", false))
}

/// A container's limits (kubelet's container resource config).
pub fn container_limits(c: &Container) -> Limits {
    let ((cpu_request, cpu_limit), (_, memory_limit)) = resources(c.resources.as_ref());
    Limits {
        cpu_shares: milli_cpu_to_shares(cpu_request),
        cpu_quota_us: milli_cpu_to_quota(cpu_limit, CPU_PERIOD_US),
        memory_bytes: (memory_limit > 0).then_some(memory_limit),
    }
}

/// A pod's QoS class, as Kubernetes computes it (`GetPodQOS`): from the
/// cpu and memory requests and limits of all containers, init containers
/// included.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let (mut any, mut guaranteed) = (false, true);
    let (mut cpu, mut memory) = ((0i64, 0i64), (0i64, 0i64));
    for c in all {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        let limits = r.and_then(|r| r.limits.as_ref());
        let req_cpu = quantity(requests, "cpu", true);
        let req_mem = quantity(requests, "memory", false);
        let lim_cpu = quantity(limits, "cpu", true);
        let lim_mem = quantity(limits, "memory", false);
        any |= req_cpu > 0 || req_mem > 0 || lim_cpu > 0 || lim_mem > 0;
        guaranteed &= lim_cpu > 0 && lim_mem > 0;
        // Unset requests default to the limits (the apiserver's defaulting).
        let has = |name: &str| requests.is_some_and(|l| l.contains_key(name));
        cpu.0 += if has("cpu") { req_cpu } else { lim_cpu };
        memory.0 += if has("memory") { req_mem } else { lim_mem };
        cpu.1 += lim_cpu;
        memory.1 += lim_mem;
    }
    if !any {
        "BestEffort"
    } else if guaranteed && cpu.0 == cpu.1 && memory.0 == memory.1 {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A pod's limits (kubelet's `ResourceConfigForPod`): the sum over its
/// containers, or an init container's value where larger; cpu quota and
/// memory limit only when every container declares one; minimum shares
/// for a BestEffort pod.
pub fn pod_limits(pod: &Pod) -> Limits {
    let qos = qos_class(pod);
    let Some(spec) = pod.spec.as_ref().filter(|_| qos != "BestEffort") else {
        return Limits {
            cpu_shares: MIN_SHARES,
            cpu_quota_us: None,
            memory_bytes: None,
        };
    };
    let (mut cpu_declared, mut memory_declared) = (true, true);
    let mut sum = [0i64; 3];
    let mut take = |c: &Container| {
        let ((cpu_request, cpu_limit), (_, memory_limit)) = resources(c.resources.as_ref());
        cpu_declared &= cpu_limit > 0;
        memory_declared &= memory_limit > 0;
        [cpu_request, cpu_limit, memory_limit]
    };
    for c in &spec.containers {
        for (s, v) in sum.iter_mut().zip(take(c)) {
            *s = s.saturating_add(v);
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (s, v) in sum.iter_mut().zip(take(c)) {
            *s = (*s).max(v);
        }
    }
    let [cpu_request, cpu_limit, memory_limit] = sum;
    let guaranteed = qos == "Guaranteed";
    Limits {
        cpu_shares: milli_cpu_to_shares(cpu_request),
        cpu_quota_us: milli_cpu_to_quota(cpu_limit, CPU_PERIOD_US)
            .filter(|_| guaranteed || cpu_declared),
        memory_bytes: (memory_limit > 0 && (guaranteed || memory_declared)).then_some(memory_limit),
    }
}

/// The hierarchy in use and where this kubelet's cgroups live.
#[derive(Debug, Clone)]
enum Hierarchy {
    /// One directory per controller: memory, cpu and (where mounted) pids.
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: Option<PathBuf>,
    },
    /// The unified hierarchy.
    V2 { base: PathBuf },
}

/// This kubelet's cgroups: one per pod, one leaf per container instance.
#[derive(Debug, Clone)]
pub struct Cgroups {
    hierarchy: Hierarchy,
}

impl Cgroups {
    /// The cgroups of the kubelet of `node` with root directory `root_dir`,
    /// or `None` (logged once) when `mode` is `none` or the host offers no
    /// writable cgroups of that kind to this process.
    pub fn detect(mode: CgroupMode, node: &str, root_dir: &Path) -> Option<Cgroups> {
        if mode == CgroupMode::None {
            tracing::info!("--cgroups none: container resource limits are not enforced");
            return None;
        }
        if !nix::unistd::geteuid().is_root() {
            tracing::warn!("the kubelet is not root: container resource limits are not enforced");
            return None;
        }
        let name = format!(
            "{}-{:08x}",
            sanitize(node),
            fnv1a(root_dir.as_os_str().as_encoded_bytes())
        );
        let found = match mode {
            CgroupMode::V2 => v2(&name),
            CgroupMode::V1 => v1(&name),
            _ => v2(&name).or_else(|_| v1(&name)),
        };
        match found {
            Ok(hierarchy) => {
                let cg = Cgroups { hierarchy };
                tracing::info!(cgroups = ?cg.hierarchy, "container resource limits through cgroups");
                Some(cg)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no usable cgroups: container resource limits are not enforced");
                None
            }
        }
    }

    /// Whether this is the v2 hierarchy.
    pub fn is_v2(&self) -> bool {
        matches!(self.hierarchy, Hierarchy::V2 { .. })
    }

    /// The kubelet's directories, one per hierarchy (v1: memory first).
    fn bases(&self) -> Vec<&Path> {
        match &self.hierarchy {
            Hierarchy::V1 { memory, cpu, pids } => {
                let mut v = vec![memory.as_path(), cpu.as_path()];
                v.extend(pids.as_deref());
                v
            }
            Hierarchy::V2 { base } => vec![base.as_path()],
        }
    }

    /// The directories of pod `uid`'s cgroup.
    pub fn pod_dirs(&self, uid: &str) -> Vec<PathBuf> {
        self.bases()
            .iter()
            .map(|b| b.join(format!("pod{uid}")))
            .collect()
    }

    /// Creates (or updates) pod `uid`'s cgroup with `limits`.
    pub fn create_pod(&self, uid: &str, limits: &Limits) -> std::io::Result<()> {
        for dir in self.pod_dirs(uid) {
            make_dir(&dir)?;
            if self.is_v2() {
                enable_controllers(&dir)?;
            }
        }
        self.apply(&self.pod_dirs(uid), limits)
    }

    /// Creates the leaf of one container instance with `limits` and returns
    /// its directories (what the shim joins, [`join`]).
    pub fn create_container(
        &self,
        uid: &str,
        container: &str,
        attempt: u32,
        limits: &Limits,
    ) -> std::io::Result<Vec<PathBuf>> {
        let leaf = format!("{container}.{attempt}");
        let dirs: Vec<PathBuf> = self.pod_dirs(uid).iter().map(|d| d.join(&leaf)).collect();
        for dir in &dirs {
            if dir.exists() {
                // A leaf of an earlier kubelet's attempt with that number.
                kill_and_remove(dir);
            }
            make_dir(dir)?;
        }
        self.apply(&dirs, limits)?;
        Ok(dirs)
    }

    fn apply(&self, dirs: &[PathBuf], l: &Limits) -> std::io::Result<()> {
        match &self.hierarchy {
            Hierarchy::V1 { .. } => {
                let (memory, cpu) = (&dirs[0], &dirs[1]);
                let bytes = l.memory_bytes.unwrap_or(-1).to_string();
                write(&memory.join("memory.limit_in_bytes"), &bytes)?;
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &bytes)?;
                }
                write(&cpu.join("cpu.shares"), &l.cpu_shares.to_string())?;
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(
                    &cpu.join("cpu.cfs_quota_us"),
                    &l.cpu_quota_us.unwrap_or(-1).to_string(),
                )
            }
            Hierarchy::V2 { .. } => {
                let dir = &dirs[0];
                let max = |v: Option<i64>| v.map_or("max".to_string(), |v| v.to_string());
                write(&dir.join("memory.max"), &max(l.memory_bytes))?;
                if l.memory_bytes.is_some() && dir.join("memory.swap.max").exists() {
                    write(&dir.join("memory.swap.max"), "0")?;
                }
                write(
                    &dir.join("cpu.weight"),
                    &shares_to_weight(l.cpu_shares).to_string(),
                )?;
                write(
                    &dir.join("cpu.max"),
                    &format!("{} {CPU_PERIOD_US}", max(l.cpu_quota_us)),
                )
            }
        }
    }

    /// Kills what is left in pod `uid`'s cgroup and removes it, in the
    /// background (processes take a moment to go).
    pub fn remove_pod(&self, uid: &str) {
        let dirs = self.pod_dirs(uid);
        std::thread::spawn(move || {
            for dir in dirs {
                kill_and_remove(&dir);
            }
        });
    }

    /// Removes every cgroup of this kubelet that no process is left in,
    /// and its own directories when they end up empty.
    pub fn remove_empty(&self) {
        fn remove(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten().filter(|e| e.path().is_dir()) {
                    remove(&e.path());
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        for base in self.bases() {
            remove(base);
            if let Some(parent) = base.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }

    /// Removes the pod cgroups whose uid is not in `keep` (pods gone while
    /// no kubelet ran), killing what is left in them.
    pub fn sweep(&self, keep: &HashSet<String>) {
        for base in self.bases() {
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stale = name
                    .strip_prefix("pod")
                    .is_some_and(|uid| !keep.contains(uid));
                if stale && e.path().is_dir() {
                    tracing::info!(cgroup = %e.path().display(), "removing a stale pod cgroup");
                    kill_and_remove(&e.path());
                }
            }
        }
    }
}

/// Moves the calling process into the cgroups `dirs` (one directory per
/// hierarchy): the container's process does this before it gives up its
/// privileges and `exec`s.
pub fn join(dirs: &[PathBuf]) -> std::io::Result<()> {
    dirs.iter()
        .try_for_each(|d| write(&d.join("cgroup.procs"), "0"))
}

/// Whether a process of the container instance whose leaf is `dirs` was
/// killed for running out of memory (v1 `memory.oom_control`, v2
/// `memory.events`: `oom_kill`).
pub fn oom_killed(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| {
        ["memory.oom_control", "memory.events"].iter().any(|f| {
            std::fs::read_to_string(d.join(f))
                .ok()
                .and_then(|text| field(&text, "oom_kill"))
                .is_some_and(|n| n > 0)
        })
    })
}

/// Kills what is left in a container instance's leaf and removes it (a
/// runtime ends a container's whole cgroup with it).
pub fn remove_leaf(dirs: &[PathBuf]) {
    for d in dirs {
        kill_and_remove(d);
    }
}

/// `key value` from a flat-keyed cgroup file.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// SIGKILLs every process in `dir` and its children, then removes them,
/// deepest first, trying for about a second.
fn kill_and_remove(dir: &Path) {
    let kill = dir.join("cgroup.kill");
    for _ in 0..50 {
        let children: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|e| {
                e.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        for child in &children {
            kill_and_remove(child);
        }
        if kill.exists() {
            let _ = write(&kill, "1");
        } else if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    tracing::warn!(cgroup = %dir.display(), "could not remove a cgroup");
}

fn make_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(with_path(e, dir)),
        _ => Ok(()),
    }
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| with_path(e, path))
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The controllers v2 needs in the pod and container cgroups.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Lets `dir`'s children use the controllers (`cgroup.subtree_control`).
fn enable_controllers(dir: &Path) -> std::io::Result<()> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enable: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    write(&dir.join("cgroup.subtree_control"), &enable.join(" "))
}

/// The kubelet's base on cgroup v2: `<own>/ballast/<name>`, with the
/// controllers enabled down to it. A cgroup that holds processes cannot
/// pass controllers on, so when the kubelet's own one does, the kubelet
/// first moves itself into a `kubelet` leaf beside `ballast`.
fn v2(name: &str) -> Result<Hierarchy, String> {
    let mount = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(mount.join("cgroup.controllers"))
        .map_err(|_| "/sys/fs/cgroup is not a cgroup v2 mount".to_string())?;
    for needed in ["memory", "cpu"] {
        if !controllers.split_whitespace().any(|c| c == needed) {
            return Err(format!("cgroup v2 has no {needed} controller"));
        }
    }
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
    let own = mount.join(own.trim_start_matches('/'));
    let err = |e: std::io::Error| e.to_string();
    if enable_controllers(&own).is_err() && own != mount {
        let leaf = own.join("kubelet");
        make_dir(&leaf).map_err(err)?;
        write(&leaf.join("cgroup.procs"), "0").map_err(err)?;
        enable_controllers(&own).map_err(err)?;
    }
    let ballast = own.join("ballast");
    let base = ballast.join(name);
    for dir in [&ballast, &base] {
        make_dir(dir).map_err(err)?;
        enable_controllers(dir).map_err(err)?;
    }
    Ok(Hierarchy::V2 { base })
}

/// The kubelet's bases on cgroup v1: `<own>/ballast/<name>` in the memory,
/// cpu and (where mounted) pids hierarchies.
fn v1(name: &str) -> Result<Hierarchy, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let base = |controller: &str| -> Result<PathBuf, String> {
        let dir = v1_dir(&mountinfo, &own, controller)
            .ok_or_else(|| format!("no cgroup v1 {controller} hierarchy"))?;
        let base = dir.join("ballast").join(name);
        std::fs::create_dir_all(&base).map_err(|e| with_path(e, &base).to_string())?;
        Ok(base)
    };
    Ok(Hierarchy::V1 {
        memory: base("memory")?,
        cpu: base("cpu")?,
        pids: base("pids").ok(),
    })
}

/// The directory of this process's cgroup in the v1 hierarchy of
/// `controller`, from `/proc/self/mountinfo` and `/proc/self/cgroup`.
fn v1_dir(mountinfo: &str, own: &str, controller: &str) -> Option<PathBuf> {
    let has = |list: &str| list.split(',').any(|c| c == controller);
    let (root, mount) = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut right = right.split_whitespace();
        let (fstype, options) = (right.next()?, right.nth(1)?);
        let left: Vec<&str> = left.split_whitespace().collect();
        if fstype != "cgroup" || !has(options) {
            return None;
        }
        Some((left.get(3)?.to_string(), left.get(4)?.to_string()))
    })?;
    let path = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        has(controllers).then(|| path.to_string())
    })?;
    let rel = path.strip_prefix(root.as_str()).unwrap_or(&path);
    Some(Path::new(&mount).join(rel.trim_start_matches('/')))
}

/// A node name as a cgroup name: anything but `[A-Za-z0-9._-]` becomes `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// 32-bit FNV-1a: a stable short name for a root directory.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
            .unwrap()
    }

    fn c(name: &str, resources: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"name": name, "image": "busybox", "resources": resources})
    }

    #[test]
    fn cpu_conversions_are_kubelets() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(i64::MAX), MAX_SHARES);
        assert_eq!(milli_cpu_to_quota(0, CPU_PERIOD_US), None);
        assert_eq!(milli_cpu_to_quota(5, CPU_PERIOD_US), Some(MIN_QUOTA_US));
        assert_eq!(milli_cpu_to_quota(250, CPU_PERIOD_US), Some(25_000));
        assert_eq!(milli_cpu_to_quota(2000, CPU_PERIOD_US), Some(200_000));
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(MAX_SHARES), 10_000);
    }

    #[test]
    fn qos_classes() {
        let best = pod(serde_json::json!({"containers": [c("a", serde_json::json!({}))]}));
        assert_eq!(qos_class(&best), "BestEffort");
        let guaranteed = pod(serde_json::json!({"containers": [
            c("a", serde_json::json!({"limits": {"cpu": "1", "memory": "64Mi"}})),
            c("b", serde_json::json!({"requests": {"cpu": "1000m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "67108864"}})),
        ]}));
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let only_memory = pod(serde_json::json!({"containers": [
            c("a", serde_json::json!({"limits": {"memory": "64Mi"}})),
        ]}));
        assert_eq!(qos_class(&only_memory), "Burstable");
        let lower_request = pod(serde_json::json!({"containers": [
            c("a", serde_json::json!({"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "memory": "1Gi"}})),
        ]}));
        assert_eq!(qos_class(&lower_request), "Burstable");
        // An init container without limits makes the pod Burstable.
        let init = pod(serde_json::json!({
            "initContainers": [c("i", serde_json::json!({}))],
            "containers": [c("a", serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}}))],
        }));
        assert_eq!(qos_class(&init), "Burstable");
        // Zero requests count as none.
        let zero = pod(serde_json::json!({"containers": [
            c("a", serde_json::json!({"requests": {"cpu": "0"}})),
        ]}));
        assert_eq!(qos_class(&zero), "BestEffort");
    }

    #[test]
    fn container_and_pod_limits() {
        let a = c(
            "a",
            serde_json::json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "32Mi"}}),
        );
        let b = c(
            "b",
            serde_json::json!({"limits": {"cpu": "1", "memory": "64Mi"}}),
        );
        let p = pod(serde_json::json!({
            "initContainers": [c("i", serde_json::json!({"limits": {"cpu": "4", "memory": "16Mi"}}))],
            "containers": [a, b],
        }));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            container_limits(&spec.containers[0]),
            Limits {
                cpu_shares: 256,
                cpu_quota_us: Some(50_000),
                memory_bytes: Some(32 << 20)
            }
        );
        // The request defaults to the limit.
        assert_eq!(container_limits(&spec.containers[1]).cpu_shares, 1024);
        // Sums of the app containers; the init container's cpu is larger.
        assert_eq!(
            pod_limits(&p),
            Limits {
                cpu_shares: 4096,
                cpu_quota_us: Some(400_000),
                memory_bytes: Some(96 << 20)
            }
        );
        // One container without a memory limit: no pod memory limit.
        let partial = pod(serde_json::json!({"containers": [
            c("a", serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}})),
            c("b", serde_json::json!({"limits": {"cpu": "1"}})),
        ]}));
        assert_eq!(
            pod_limits(&partial),
            Limits {
                cpu_shares: 2048,
                cpu_quota_us: Some(200_000),
                memory_bytes: None
            }
        );
        let best = pod(serde_json::json!({"containers": [c("a", serde_json::json!({}))]}));
        assert_eq!(
            pod_limits(&best),
            Limits {
                cpu_shares: 2,
                cpu_quota_us: None,
                memory_bytes: None
            }
        );
    }

    #[test]
    fn v1_directories_follow_mountinfo_and_own_cgroup() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
            35 31 0:30 /outer /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
        let own = "4:memory:/outer/inner\n1:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            v1_dir(mountinfo, own, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/inner"))
        );
        assert_eq!(
            v1_dir(mountinfo, own, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(v1_dir(mountinfo, own, "pids"), None);
        assert_eq!(
            field("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(field("low 0\noom 1\noom_kill 0\n", "oom_kill"), Some(0));
        assert_eq!(sanitize("node/1 x"), "node_1_x");
        assert_eq!("v2".parse::<CgroupMode>(), Ok(CgroupMode::V2));
        assert!("v3".parse::<CgroupMode>().is_err());
    }
}
