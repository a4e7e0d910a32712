//! The process runtime: every container is a real process group on this
//! machine.
//!
//! Layout of a pod's directory, `<root>/pods/<uid>/` (the root, `pods/`
//! and everything but `sandbox/` are the kubelet's alone, 0700/0600):
//!
//! ```text
//! pod.json                          namespace, name, uid, IP, the pod's namespaces (holder pid and start time)
//! resolv.conf, etc-hosts            the pod's resolver configuration and hosts file (crate::dns)
//! containers/<name>/state.json      the current instance: attempt, pid, /proc start time, env, user, working dir
//! containers/<name>/<attempt>.log   its output, CRI format (crate::logs); the previous one is kept
//! containers/<name>/<attempt>.log.<time>  rotated output (crate::logs::RotatingLog)
//! containers/<name>/<attempt>.exit  its exit code, written by the shim
//! sandbox/                          the pod's shared directory, 1777 (as /tmp)
//! sandbox/<name>/                   the container's sandbox, 0700, owned by its user: its
//!                                   HOME and working directory, and its "/" for
//!                                   `workingDir` and `terminationMessagePath`
//!                                   (`/dev/termination-log` is `sandbox/<name>/dev/termination-log`)
//! ```
//!
//! Who a container runs as and what it can reach: [`super::confine`].
//!
//! Each container runs under a shim, `ballast image shim [--log-max-size
//! BYTES --log-max-files N] <exit> <log> -- <argv…>`, started in a new
//! process group (the container's process is in it too). The shim writes
//! the output to the log, rotating it by those limits, records the exit
//! code and ignores SIGTERM/SIGINT/SIGHUP itself, so it outlives a kubelet
//! restart: the next kubelet finds the shim by pid, checks the pid is the
//! same process (`/proc/<pid>/stat` start time) and adopts it. Stopping a
//! container signals the whole group, and only after checking, again in
//! `/proc/<pid>/stat`, that the recorded pid still is that shim (start time)
//! and leads its group. The shim runs as the kubelet's user and starts the
//! container's process as the container's (see [`super::confine`]), so a
//! container can neither write the files the kubelet reads pids from nor
//! signal its shim.
//!
//! Where the kubelet has cgroups ([`crate::cgroups`]), each instance gets a
//! leaf with the container's limits; the shim gets `--cgroup DIR` for each
//! of its directories and moves the container's process into them just
//! before `exec` (exec probes and hooks join them too). An instance whose
//! leaf saw an OOM kill ends with reason `OOMKilled`.
//!
//! With pod namespaces (`--pod-namespaces`, as root) each pod's sandbox
//! also holds a network, UTS and IPC namespace ([`super::netns`]); the
//! shim gets `--namespaces PID:START:KINDS` and the container's process
//! (and every exec probe, hook and `kubectl exec`) joins them before it
//! drops privileges.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use super::confine::{self, Create, RunAs};
use super::netns::{self, PodNamespaces};
use super::{
    Exit, ProbeResult, Running, RunningKind, Sandbox, StartError, StartRequest, StopSignal,
};
use crate::cgroups::{self, Cgroups};
use crate::images::{self, ImageConfig};
use crate::ipam::Allocator;
use crate::{env, logs, probe};

/// The most of a termination message kept (Kubernetes: 4096 bytes; 80
/// lines or 2048 bytes of log with `FallbackToLogsOnError`).
const MAX_MESSAGE: usize = 4096;

/// Runs containers as process groups under `<root>/pods`.
#[derive(Debug)]
pub struct ProcessRuntime {
    root: PathBuf,
    ballast_exe: PathBuf,
    ipam: Allocator,
    log_rotation: Option<logs::Rotation>,
    default_user: RunAs,
    cgroups: Option<Cgroups>,
    /// Containers get a mount namespace with their volumes (as root).
    mount_namespaces: bool,
    /// Pods get network, UTS and IPC namespaces of their own (as root).
    pod_namespaces: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct PodFile {
    namespace: String,
    name: String,
    uid: String,
    ip: Ipv4Addr,
    /// The pod's namespaces, when it has its own.
    #[serde(default)]
    namespaces: Option<PodNamespaces>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    id: String,
    attempt: u32,
    pid: i32,
    proc_start: u64,
    started_at: String,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    ip: Ipv4Addr,
    /// The container's sandbox and its working directory beneath it.
    #[serde(default)]
    sandbox: PathBuf,
    #[serde(default)]
    workdir: PathBuf,
    #[serde(default)]
    run_as: Option<RunAs>,
    /// The instance's cgroup leaf, one directory per hierarchy.
    #[serde(default)]
    cgroup: Vec<PathBuf>,
    /// Its mount namespace's spec ([`super::mounts`]), when it has one.
    #[serde(default)]
    mounts: Option<PathBuf>,
    /// The `ballast` binary that runs its helpers (`ballast image exec`).
    #[serde(default)]
    ballast_exe: PathBuf,
    /// The pod's namespaces it joined ([`super::netns`]).
    #[serde(default)]
    namespaces: Option<PodNamespaces>,
}

/// A process container's handle: its group and the context exec probes
/// and hooks run in.
#[derive(Debug)]
pub struct ProcessContainer {
    pid: i32,
    proc_start: u64,
    env: Vec<(String, String)>,
    ip: Ipv4Addr,
    dir: PathBuf,
    attempt: u32,
    sandbox: PathBuf,
    workdir: PathBuf,
    run_as: Option<RunAs>,
    cgroup: Vec<PathBuf>,
    mounts: Option<PathBuf>,
    ballast_exe: PathBuf,
    namespaces: Option<PodNamespaces>,
}

impl ProcessRuntime {
    /// A runtime under `root`, reserving the IPs of sandboxes found there.
    pub fn new(
        root: &Path,
        ballast_exe: &Path,
        ipam: Allocator,
    ) -> std::io::Result<ProcessRuntime> {
        std::fs::create_dir_all(root.join("pods"))?;
        private_dir(root)?;
        private_dir(&root.join("pods"))?;
        let rt = ProcessRuntime {
            root: root.to_path_buf(),
            ballast_exe: ballast_exe.to_path_buf(),
            ipam,
            log_rotation: None,
            default_user: RunAs::NOBODY,
            cgroups: None,
            mount_namespaces: false,
            pod_namespaces: false,
        };
        for (_, dir) in rt.sandboxes() {
            if let Some(pf) = read_pod_file(&dir) {
                rt.ipam.reserve(pf.ip);
            }
        }
        Ok(rt)
    }

    /// Rotates the logs of the containers it starts from now on (`None`:
    /// never).
    pub fn with_log_rotation(mut self, rotation: Option<logs::Rotation>) -> ProcessRuntime {
        self.log_rotation = rotation;
        self
    }

    /// Runs containers without a `runAsUser` as `user` (when the kubelet
    /// is root; default [`RunAs::NOBODY`]).
    pub fn with_container_user(mut self, user: RunAs) -> ProcessRuntime {
        self.default_user = user;
        self
    }

    /// Gives each container a mount namespace of its own with the pod's
    /// volumes ([`super::mounts`]); off, volumes are not mounted.
    pub fn with_mount_namespaces(mut self, on: bool) -> ProcessRuntime {
        self.mount_namespaces = on;
        self
    }

    /// Gives each pod network, UTS and IPC namespaces of its own, shared
    /// by its containers ([`super::netns`]; needs root).
    pub fn with_pod_namespaces(mut self, on: bool) -> ProcessRuntime {
        self.pod_namespaces = on;
        self
    }

    /// Ends the namespaces of every pod on disk (kubelet exit, when it
    /// stops its containers): the next kubelet makes them again.
    pub fn stop_sandboxes(&self) {
        for (_, dir) in self.sandboxes() {
            end_namespaces(&dir);
        }
    }

    /// Whether containers get mount namespaces (and pods their volumes).
    pub fn mounts_volumes(&self) -> bool {
        self.mount_namespaces
    }

    /// Enforces containers' resource limits through `cgroups` (see
    /// [`crate::cgroups`]), first removing the cgroups of pods that have no
    /// sandbox on disk any more.
    pub fn with_cgroups(mut self, cgroups: Option<Cgroups>) -> ProcessRuntime {
        if let Some(cg) = &cgroups {
            cg.sweep(&self.sandboxes().into_iter().map(|(uid, _)| uid).collect());
        }
        self.cgroups = cgroups;
        self
    }

    /// Removes the cgroups no process is left in (at kubelet exit; the next
    /// kubelet makes them again for the pods it finds).
    pub fn release_cgroups(&self) {
        if let Some(cg) = &self.cgroups {
            cg.remove_empty();
        }
    }

    /// The sandboxes on disk: `(uid, dir)`.
    pub fn sandboxes(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(self.root.join("pods")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
            .collect()
    }

    /// The sandbox directory of pod `uid`, with its namespace and name. A
    /// uid that is not a plain name (see [`is_plain_name`]) is never turned
    /// into a path: it gets a directory no sandbox is ever created in.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        if is_plain_name(uid) {
            self.root.join("pods").join(uid)
        } else {
            self.root.join("pods").join(".invalid-uid")
        }
    }

    /// Kills every container left in a sandbox directory and removes it
    /// (a pod deleted while the kubelet was down).
    pub fn destroy_orphan(&self, dir: &Path) {
        kill_all_in(dir, Signal::SIGKILL);
        end_namespaces(dir);
        if let Some(pf) = read_pod_file(dir) {
            self.ipam.release(pf.ip);
        }
        if let (Some(cg), Some(uid)) = (&self.cgroups, dir.file_name()) {
            cg.remove_pod(&uid.to_string_lossy());
        }
        crate::volumes::teardown(dir);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Sends `signal` to every live container group of a sandbox.
    pub fn signal_sandbox(&self, dir: &Path, signal: StopSignal) {
        kill_all_in(dir, to_nix(signal));
    }

    pub fn create_sandbox(&self, pod: &Pod) -> Result<Sandbox, String> {
        let uid = pod.metadata.uid.clone().ok_or("pod has no uid")?;
        if !is_plain_name(&uid) {
            return Err(format!("pod uid {uid:?} is not a plain name"));
        }
        let dir = self.pod_dir(&uid);
        if let Some(cg) = &self.cgroups {
            cg.create_pod(&uid, &cgroups::pod_limits(pod))
                .map_err(|e| format!("creating the pod's cgroup: {e}"))?;
        }
        let mut pf = match read_pod_file(&dir) {
            Some(pf) => {
                pod_dirs(&dir).map_err(|e| format!("the sandbox {}: {e}", dir.display()))?;
                self.ipam.reserve(pf.ip);
                pf
            }
            None => {
                let ip = self
                    .ipam
                    .allocate()
                    .ok_or_else(|| format!("no free pod IP left in {}", self.ipam.cidr()))?;
                let pf = PodFile {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    uid: uid.clone(),
                    ip,
                    namespaces: None,
                };
                let written = pod_dirs(&dir).and_then(|()| write_json(&dir.join("pod.json"), &pf));
                if let Err(e) = written {
                    self.ipam.release(ip);
                    return Err(format!("creating the sandbox {}: {e}", dir.display()));
                }
                pf
            }
        };
        let namespaces = self.pod_namespaces(pod, &dir, &mut pf)?;
        Ok(Sandbox {
            uid,
            ip: pf.ip,
            dir: Some(dir),
            namespaces,
        })
    }

    /// The pod's namespaces for a container about to start (with pod
    /// namespaces on): the sandbox's while their holder lives, else new
    /// ones (see [`ProcessRuntime::pod_namespaces`]), as kubelet makes a
    /// new sandbox for a pod whose sandbox died.
    fn live_namespaces(&self, pod: &Pod, dir: &Path) -> Result<Option<PodNamespaces>, String> {
        if !self.pod_namespaces {
            return Ok(None);
        }
        let mut pf = read_pod_file(dir).ok_or("the pod's sandbox has no pod.json")?;
        self.pod_namespaces(pod, dir, &mut pf)
    }

    /// The pod's namespaces (with pod namespaces on): the recorded ones
    /// while their holder lives, else new ones, recorded in `pod.json`. A
    /// holder found dead takes the pod's containers with it, as a sandbox
    /// that changed takes kube's: they would be in namespaces no other
    /// container of the pod shares.
    fn pod_namespaces(
        &self,
        pod: &Pod,
        dir: &Path,
        pf: &mut PodFile,
    ) -> Result<Option<PodNamespaces>, String> {
        let kinds = netns::Kinds::for_pod(pod);
        if !self.pod_namespaces || !kinds.any() {
            return Ok(None);
        }
        if let Some(ns) = pf.namespaces {
            if ns.alive() {
                return Ok(Some(ns));
            }
            kill_all_in(dir, Signal::SIGKILL);
            netns::remove(&ns, &pf.uid);
        }
        let hostname = if kinds.uts {
            crate::dns::hostname_and_domain(pod, "")?.0
        } else {
            String::new()
        };
        let ns = netns::create(
            &self.ballast_exe,
            dir,
            &pf.uid,
            kinds,
            &hostname,
            pf.ip,
            self.ipam.cidr().node_address(),
        )?;
        pf.namespaces = Some(ns);
        if let Err(e) = write_json(&dir.join("pod.json"), &*pf) {
            netns::remove(&ns, &pf.uid);
            pf.namespaces = None;
            return Err(format!("recording the pod's namespaces: {e}"));
        }
        Ok(Some(ns))
    }

    pub fn remove_sandbox(&self, sandbox: &Sandbox) {
        if let Some(dir) = &sandbox.dir {
            kill_all_in(dir, Signal::SIGKILL);
            end_namespaces(dir);
            crate::volumes::teardown(dir);
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(cg) = &self.cgroups {
            cg.remove_pod(&sandbox.uid);
        }
        self.ipam.release(sandbox.ip);
    }

    /// The built-in images are always present: they are programs on this
    /// machine, not something a pull brings.
    pub fn image_present(&self, image: &str) -> bool {
        images::lookup(image, &self.ballast_exe).is_some()
    }

    pub fn image_config(&self, image: &str) -> Option<ImageConfig> {
        images::lookup(image, &self.ballast_exe)
    }

    pub fn pull(&self, image: &str) -> Result<ImageConfig, String> {
        let config = images::lookup(image, &self.ballast_exe).ok_or_else(|| {
            format!(
                "image {:?} not found: the ballast process runtime knows {}",
                images::normalize(image),
                images::KNOWN
            )
        })?;
        Ok(config)
    }

    pub fn start(&self, req: StartRequest<'_>) -> Result<Running, StartError> {
        let config_error = StartError::config;
        let dir = req
            .sandbox
            .dir
            .clone()
            .ok_or_else(|| config_error("no sandbox directory".into()))?;
        let name = &req.container.name;
        if !is_dns1123_label(name) {
            return Err(config_error(format!(
                "container name {name:?} is not a DNS-1123 label"
            )));
        }
        let user =
            confine::user_for(req.pod, req.container, self.default_user).map_err(config_error)?;
        let namespaces = self
            .live_namespaces(req.pod, &dir)
            .map_err(|e| config_error(format!("Failed to create pod sandbox: {e}")))?;
        let workdir = confine::beneath(
            req.container.working_dir.as_deref().unwrap_or_default(),
            "workingDir",
        )
        .map_err(config_error)?;
        let message_path = termination_path(req.container).map_err(config_error)?;
        let mut volume_mounts = self
            .volume_mounts(req.pod, req.container, &dir)
            .map_err(config_error)?;
        if let Some(m) = volume_mounts.as_mut() {
            // The pod's resolv.conf and hosts file over the host's.
            m.extend(crate::dns::container_mounts(&dir, req.container));
        }
        let ip = req.sandbox.ip.to_string();
        let mut env = env::container_env(
            req.pod,
            req.container,
            req.image,
            &ip,
            req.host_ip,
            req.config_maps,
        )
        .map_err(config_error)?;
        let argv = env::command_line(req.container, req.image, &env);
        let start_error = |message: String| StartError {
            reason: "StartError",
            message,
        };
        let Some(program) = argv.first() else {
            return Err(start_error("no command specified".into()));
        };
        if !findable(program, &env, volume_mounts.is_some()) {
            return Err(start_error(format!(
                "failed to create containerd task: exec: {program:?}: executable file not found in $PATH"
            )));
        }
        let sandbox = container_sandbox(&dir, name, user)
            .map_err(|e| start_error(format!("the container's sandbox: {e}")))?;
        let owned = Create {
            mode: 0o700,
            owner: user,
        };
        confine::open_dir_beneath(&sandbox, &workdir, Some(owned)).map_err(|e| {
            start_error(format!(
                "working directory {:?}: {e}",
                req.container.working_dir.as_deref().unwrap_or_default()
            ))
        })?;
        confine::remove_beneath(&sandbox, &message_path);
        let cwd = sandbox.join(&workdir);
        if !env.iter().any(|(k, _)| k == "HOME") {
            // In its own mount namespace the sandbox is the container's `/`.
            let home = match volume_mounts {
                Some(_) => "/".into(),
                None => sandbox.to_string_lossy().into_owned(),
            };
            env.push(("HOME".into(), home));
        }
        let cdir = dir.join("containers").join(name);
        std::fs::create_dir_all(&cdir)
            .and_then(|()| private_dir(&cdir))
            .map_err(|e| start_error(format!("{}: {e}", cdir.display())))?;
        let mounts = match volume_mounts {
            Some(volumes) => Some(
                self.write_mounts(req.container, &cdir, &sandbox, &message_path, user, volumes)
                    .map_err(|e| start_error(format!("the container's mounts: {e}")))?,
            ),
            None => None,
        };
        let attempt = req.attempt;
        let log = cdir.join(format!("{attempt}.log"));
        let exit = cdir.join(format!("{attempt}.exit"));
        let _ = std::fs::remove_file(&exit);
        prune_logs(&cdir, attempt);
        // The log exists even if the shim is killed before it opens it.
        std::fs::write(&log, b"").map_err(|e| start_error(format!("{}: {e}", log.display())))?;
        let cgroup = match &self.cgroups {
            Some(cg) => cg
                .create_container(
                    &req.sandbox.uid,
                    name,
                    attempt,
                    &cgroups::container_limits(req.container),
                )
                .map_err(|e| start_error(format!("creating the container's cgroup: {e}")))?,
            None => Vec::new(),
        };
        let mut cmd = tokio::process::Command::new(&self.ballast_exe);
        cmd.arg("image").arg("shim");
        if let Some(r) = self.log_rotation {
            cmd.arg("--log-max-size")
                .arg(r.max_size.to_string())
                .arg("--log-max-files")
                .arg(r.max_files.to_string());
        }
        if let Some(u) = user {
            cmd.arg("--run-as").arg(format!("{}:{}", u.uid, u.gid));
        }
        for dir in &cgroup {
            cmd.arg("--cgroup").arg(dir);
        }
        if let Some(m) = &mounts {
            cmd.arg("--mounts").arg(m);
        }
        if let Some(ns) = &namespaces {
            cmd.arg("--namespaces").arg(ns.to_arg());
        }
        cmd.arg("--sandbox")
            .arg(&sandbox)
            .arg("--workdir")
            .arg(&workdir)
            .arg(&exit)
            .arg(&log)
            .arg("--")
            .args(&argv)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&cdir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            cgroups::remove_leaf(&cgroup);
            start_error(format!("starting {}: {e}", self.ballast_exe.display()))
        })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let proc_start = proc_start_time(pid).unwrap_or(0);
        let started_at = Timestamp::now();
        let id = format!(
            "ballast://{}-{}-{attempt}-{pid}",
            short_uid(&req.sandbox.uid),
            req.container.name
        );
        let state = StateFile {
            id: id.clone(),
            attempt,
            pid,
            proc_start,
            started_at: started_at.to_string(),
            env: env.clone(),
            cwd,
            ip: req.sandbox.ip,
            sandbox: sandbox.clone(),
            workdir: workdir.clone(),
            run_as: user,
            cgroup: cgroup.clone(),
            mounts: mounts.clone(),
            ballast_exe: self.ballast_exe.clone(),
            namespaces,
        };
        if let Err(e) = write_json(&cdir.join("state.json"), &state) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            return Err(start_error(format!("recording the container state: {e}")));
        }
        let (tx, rx) = watch::channel(None);
        tokio::spawn(wait_child(child, exit.clone(), cgroup.clone(), tx));
        Ok(Running {
            id,
            started_at,
            attempt,
            exit: rx,
            kind: RunningKind::Process(ProcessContainer {
                pid,
                proc_start,
                env,
                ip: req.sandbox.ip,
                dir: cdir,
                attempt,
                sandbox,
                workdir,
                run_as: user,
                cgroup,
                mounts,
                ballast_exe: self.ballast_exe.clone(),
                namespaces,
            }),
        })
    }

    /// The volume mounts of `container` (`Some`: it gets a mount namespace
    /// of its own, the kubelet being root), or the
    /// `CreateContainerConfigError` message. Without mount namespaces
    /// (the default) volumes are not mounted; a kubelet asked for them
    /// that is not root cannot mount: it refuses volume mounts, all but
    /// the ServiceAccount admission's token volume, which it leaves out.
    fn volume_mounts(
        &self,
        pod: &Pod,
        container: &Container,
        pod_dir: &Path,
    ) -> Result<Option<Vec<super::mounts::Mount>>, String> {
        if !self.mount_namespaces {
            return Ok(None);
        }
        if confine::can_switch_user() {
            return crate::volumes::container_mounts(pod, container, pod_dir).map(Some);
        }
        let mut mounts = container.volume_mounts.iter().flatten();
        if let Some(m) = mounts.find(|m| !crate::volumes::is_api_access(&m.name, &m.mount_path)) {
            return Err(format!(
                "volume {:?} cannot be mounted at {:?}: volumes need a kubelet running as root (the process runtime mounts them in the container's own mount namespace)",
                m.name, m.mount_path
            ));
        }
        Ok(None)
    }

    /// Writes the container's mount namespace spec ([`super::mounts`]) in
    /// `cdir`: its sandbox as `/`, a fresh `/tmp`, the kubelet's root
    /// hidden, the volumes, and the termination message file (made here,
    /// owned by the container's user, 0666 as kubelet makes it).
    fn write_mounts(
        &self,
        container: &Container,
        cdir: &Path,
        sandbox: &Path,
        message_path: &Path,
        user: Option<RunAs>,
        mut mounts: Vec<super::mounts::Mount>,
    ) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let tmp = cdir.join("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))?;
        let scratch = cdir.join("scratch");
        std::fs::create_dir_all(&scratch)?;
        let parent = message_path.parent().unwrap_or(Path::new(""));
        let dir = confine::open_dir_beneath(
            sandbox,
            parent,
            Some(Create {
                mode: 0o755,
                owner: None,
            }),
        )?;
        let name = message_path.file_name().unwrap_or_default();
        let fd = nix::fcntl::openat(
            &dir,
            name,
            nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_TRUNC
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        confine::own(
            &fd,
            Create {
                mode: 0o666,
                owner: user,
            },
        )?;
        mounts.push(super::mounts::Mount {
            source: sandbox.to_path_buf(),
            beneath: Some(message_path.to_path_buf()),
            target: Path::new("/").join(message_path),
            read_only: false,
        });
        let read_only_root = container
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false);
        let spec = super::mounts::Spec {
            root: sandbox.to_path_buf(),
            tmp,
            scratch,
            hide: vec![std::path::absolute(&self.root)?],
            read_only_root,
            mounts,
        };
        let path = cdir.join("mounts.json");
        spec.write(&path)?;
        Ok(path)
    }

    pub fn adopt(&self, sandbox: &Sandbox, container: &str) -> Option<Running> {
        if !is_dns1123_label(container) {
            return None;
        }
        let cdir = sandbox.dir.as_ref()?.join("containers").join(container);
        let state: StateFile = read_json(&cdir.join("state.json"))?;
        // A state file from before sandboxes: its working directory as is.
        let (sandbox, workdir) = if state.sandbox.as_os_str().is_empty() {
            (state.cwd.clone(), PathBuf::new())
        } else {
            (state.sandbox.clone(), state.workdir.clone())
        };
        let started_at = state
            .started_at
            .parse()
            .unwrap_or_else(|_| Timestamp::now());
        let exit_file = cdir.join(format!("{}.exit", state.attempt));
        let (tx, rx) = watch::channel(None);
        if alive(state.pid, state.proc_start) {
            tokio::spawn(watch_adopted(
                state.pid,
                state.proc_start,
                exit_file,
                state.cgroup.clone(),
                tx,
            ));
        } else {
            let code = read_exit(&exit_file).unwrap_or(137);
            let finished_at = std::fs::metadata(&exit_file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| Timestamp::try_from(t).ok())
                .unwrap_or_else(Timestamp::now);
            let _ = tx.send(Some(Exit {
                code,
                finished_at,
                reason: oom_reason(&state.cgroup),
            }));
        }
        Some(Running {
            id: state.id.clone(),
            started_at,
            attempt: state.attempt,
            exit: rx,
            kind: RunningKind::Process(ProcessContainer {
                pid: state.pid,
                proc_start: state.proc_start,
                env: state.env,
                ip: state.ip,
                dir: cdir,
                attempt: state.attempt,
                sandbox,
                workdir,
                run_as: state.run_as,
                cgroup: state.cgroup,
                mounts: state.mounts,
                ballast_exe: self.ballast_exe.clone(),
                namespaces: state.namespaces,
            }),
        })
    }

    pub async fn probe(
        &self,
        p: &Probe,
        c: &ProcessContainer,
        container: &Container,
    ) -> ProbeResult {
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
        if let Some(exec) = &p.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            return match c.exec(&cmd, timeout).await {
                Ok((0, _)) => ProbeResult::Success,
                Ok((code, out)) => ProbeResult::Failure(if out.is_empty() {
                    format!("command {:?} exited with {code}", cmd.join(" "))
                } else {
                    out
                }),
                Err(e) => ProbeResult::Failure(e),
            };
        }
        if let Some(http) = &p.http_get {
            return probe::http_get(http, &c.ip.to_string(), container, timeout).await;
        }
        if let Some(tcp) = &p.tcp_socket {
            return probe::tcp_socket(tcp, &c.ip.to_string(), container, timeout).await;
        }
        ProbeResult::Failure(
            "probe has no exec, httpGet or tcpSocket handler (gRPC probes are not supported)"
                .into(),
        )
    }

    pub async fn hook(
        &self,
        h: &LifecycleHandler,
        c: &ProcessContainer,
        container: &Container,
        pod_label: &str,
    ) -> Result<(), String> {
        if let Some(exec) = &h.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            // Hooks are bounded by the caller (grace period); this cap only
            // keeps a stuck hook from living forever.
            return match c.exec(&cmd, Duration::from_secs(3600)).await {
                Ok((0, _)) => Ok(()),
                Ok((code, out)) => Err(format!(
                    "Exec lifecycle hook ({cmd:?}) for Container {:?} in Pod {pod_label:?} failed - error: command '{}' exited with {code}: {out}, message: {out:?}",
                    container.name,
                    cmd.join(" ")
                )),
                Err(e) => Err(format!(
                    "Exec lifecycle hook ({cmd:?}) for Container {:?} in Pod {pod_label:?} failed - error: {e}",
                    container.name
                )),
            };
        }
        if let Some(http) = &h.http_get {
            return match probe::http_get(http, &c.ip.to_string(), container, Duration::from_secs(10)).await {
                ProbeResult::Success => Ok(()),
                ProbeResult::Failure(m) => Err(format!(
                    "HTTP lifecycle hook ({}) for Container {:?} in Pod {pod_label:?} failed - error: {m}",
                    http.path.clone().unwrap_or_default(),
                    container.name
                )),
            };
        }
        if let Some(sleep) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            return Ok(());
        }
        Err("lifecycle handler has no exec, httpGet or sleep action".into())
    }
}

impl ProcessContainer {
    pub(super) fn signal(&self, signal: StopSignal) {
        signal_group(self.pid, self.proc_start, to_nix(signal));
    }

    /// Runs `cmd` as an exec into this container would: its env and
    /// working directory, its own process group, killed at `timeout`.
    /// Returns the exit code and the combined output.
    async fn exec(&self, cmd: &[String], timeout: Duration) -> Result<(i32, String), String> {
        let Some(program) = cmd.first() else {
            return Err("exec: no command".into());
        };
        if !findable(program, &self.env, self.mounts.is_some()) {
            return Err(format!(
                "exec: {program:?}: executable file not found in $PATH"
            ));
        }
        let mut helper = tokio::process::Command::new(&self.ballast_exe);
        helper.arg("image").arg("exec");
        if let Some(u) = self.run_as {
            helper.arg("--run-as").arg(format!("{}:{}", u.uid, u.gid));
        }
        for dir in &self.cgroup {
            helper.arg("--cgroup").arg(dir);
        }
        if let Some(m) = &self.mounts {
            helper.arg("--mounts").arg(m);
        }
        if let Some(ns) = &self.namespaces {
            helper.arg("--namespaces").arg(ns.to_arg());
        }
        let child = helper
            .arg("--sandbox")
            .arg(&self.sandbox)
            .arg("--workdir")
            .arg(&self.workdir)
            .arg("--")
            .args(cmd)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("exec {program:?}: {e}"))?;
        let pid = child.id().map(|p| p as i32);
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).to_string();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                Ok((exit_code(out.status), text.trim_end().to_string()))
            }
            Ok(Err(e)) => Err(format!("exec {program:?}: {e}")),
            Err(_) => {
                if let Some(pid) = pid {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                Err(format!("command {:?} timed out", cmd.join(" ")))
            }
        }
    }

    pub(super) fn termination_message(&self, container: &Container, code: i32) -> Option<String> {
        let mut message = termination_path(container)
            .ok()
            .and_then(|rel| confine::read_beneath(&self.sandbox, &rel, MAX_MESSAGE))
            .unwrap_or_default();
        let fallback =
            container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        if message.is_empty() && fallback && code != 0 {
            let raw = read_tail(&self.dir.join(format!("{}.log", self.attempt)), 80);
            let mut tail = logs::render(
                &raw,
                &logs::LogOptions {
                    tail_lines: Some(80),
                    ..Default::default()
                },
            );
            let cut = tail.len().saturating_sub(2048);
            tail.drain(..cut);
            message = tail;
        }
        (!message.is_empty()).then(|| String::from_utf8_lossy(&message).to_string())
    }
}

/// The context an exec into a running container starts in: the one its
/// exec probes and hooks run in (user, env, sandbox and working directory,
/// cgroup).
#[derive(Debug, Clone)]
pub struct ExecContext {
    env: Vec<(String, String)>,
    sandbox: PathBuf,
    workdir: PathBuf,
    run_as: Option<RunAs>,
    cgroup: Vec<PathBuf>,
    /// The container's mount namespace spec: exec sees what it sees.
    mounts: Option<PathBuf>,
    /// The `ballast` binary that runs the helper.
    ballast_exe: PathBuf,
    /// The pod's namespaces the container joined.
    namespaces: Option<PodNamespaces>,
}

/// The exec context of the running instance of `container` in the pod
/// whose sandbox directory is `pod_dir`; `None` when it is not running.
pub fn exec_context(pod_dir: &Path, container: &str) -> Option<ExecContext> {
    if !is_dns1123_label(container) {
        return None;
    }
    let cdir = pod_dir.join("containers").join(container);
    let state: StateFile = read_json(&cdir.join("state.json"))?;
    if !alive(state.pid, state.proc_start) {
        return None;
    }
    let (sandbox, workdir) = if state.sandbox.as_os_str().is_empty() {
        (state.cwd, PathBuf::new())
    } else {
        (state.sandbox, state.workdir)
    };
    // A state file from before it was recorded: the shim's own binary.
    let ballast_exe = if state.ballast_exe.as_os_str().is_empty() {
        PathBuf::from(format!("/proc/{}/exe", state.pid))
    } else {
        state.ballast_exe
    };
    Some(ExecContext {
        env: state.env,
        sandbox,
        workdir,
        run_as: state.run_as,
        cgroup: state.cgroup,
        mounts: state.mounts,
        ballast_exe,
        namespaces: state.namespaces,
    })
}

impl ExecContext {
    /// `ballast image exec` running `argv` in this context, killed when
    /// dropped, in a process group of its own: a new one, or with `tty` a
    /// new session whose controlling terminal is the helper's standard
    /// input (`TERM=xterm` unless the container sets it, as runc does).
    /// Standard I/O is the caller's to set. An error when `argv`'s program
    /// is not on the container's `PATH` (in its own mount namespace the
    /// helper finds that out, and fails with exit code 128).
    pub fn command(&self, argv: &[String], tty: bool) -> Result<tokio::process::Command, String> {
        let Some(program) = argv.first() else {
            return Err("no command specified".into());
        };
        if !findable(program, &self.env, self.mounts.is_some()) {
            return Err(format!(
                "exec: {program:?}: executable file not found in $PATH"
            ));
        }
        let mut cmd = tokio::process::Command::new(&self.ballast_exe);
        cmd.arg("image").arg("exec");
        if tty {
            cmd.arg("--tty");
        } else {
            cmd.process_group(0);
        }
        if let Some(u) = self.run_as {
            cmd.arg("--run-as").arg(format!("{}:{}", u.uid, u.gid));
        }
        for dir in &self.cgroup {
            cmd.arg("--cgroup").arg(dir);
        }
        if let Some(m) = &self.mounts {
            cmd.arg("--mounts").arg(m);
        }
        if let Some(ns) = &self.namespaces {
            cmd.arg("--namespaces").arg(ns.to_arg());
        }
        cmd.arg("--sandbox")
            .arg(&self.sandbox)
            .arg("--workdir")
            .arg(&self.workdir)
            .arg("--")
            .args(argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .kill_on_drop(true);
        if tty && !self.env.iter().any(|(k, _)| k == "TERM") {
            cmd.env("TERM", "xterm");
        }
        Ok(cmd)
    }
}

fn to_nix(signal: StopSignal) -> Signal {
    match signal {
        StopSignal::Term => Signal::SIGTERM,
        StopSignal::Kill => Signal::SIGKILL,
    }
}

/// The exit code of a process, `128 + n` when signal `n` killed it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

async fn wait_child(
    mut child: tokio::process::Child,
    exit_file: PathBuf,
    cgroup: Vec<PathBuf>,
    tx: watch::Sender<Option<Exit>>,
) {
    let code = match child.wait().await {
        Ok(status) => read_exit(&exit_file).unwrap_or_else(|| exit_code(status)),
        Err(_) => 137,
    };
    ended(code, cgroup, tx).await;
}

async fn watch_adopted(
    pid: i32,
    proc_start: u64,
    exit_file: PathBuf,
    cgroup: Vec<PathBuf>,
    tx: watch::Sender<Option<Exit>>,
) {
    while alive(pid, proc_start) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tx.is_closed() {
            return;
        }
    }
    let code = read_exit(&exit_file).unwrap_or(137);
    ended(code, cgroup, tx).await;
}

/// Reports an instance's exit (`OOMKilled` when its cgroup saw an OOM
/// kill), then ends what is left in its cgroup leaf.
async fn ended(code: i32, cgroup: Vec<PathBuf>, tx: watch::Sender<Option<Exit>>) {
    let _ = tx.send(Some(Exit {
        code,
        finished_at: Timestamp::now(),
        reason: oom_reason(&cgroup),
    }));
    if !cgroup.is_empty() {
        let _ = tokio::task::spawn_blocking(move || cgroups::remove_leaf(&cgroup)).await;
    }
}

/// kubelet's `OOMKilled` reason when the cgroup leaf saw an OOM kill.
fn oom_reason(cgroup: &[PathBuf]) -> Option<&'static str> {
    cgroups::oom_killed(cgroup).then_some("OOMKilled")
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// Field 22: start time in clock ticks since boot.
    start: u64,
    zombie: bool,
    /// Field 5: its process group.
    pgrp: i32,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(ProcStat {
        start: fields.get(19)?.parse().ok()?,
        zombie: matches!(fields.first(), Some(&"Z") | Some(&"X")),
        pgrp: fields.get(2)?.parse().ok()?,
    })
}

pub(super) fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start)
}

/// Whether `pid` is still the live process that started at `proc_start`.
pub(super) fn alive(pid: i32, proc_start: u64) -> bool {
    matches!(proc_stat(pid), Some(s) if s.start == proc_start && !s.zombie)
}

/// Signals the process group of a container's shim, only if `pid` is still
/// that shim (same start time) and still leads its own group: a recorded
/// pid never makes the kubelet signal some other process.
fn signal_group(pid: i32, proc_start: u64, signal: Signal) -> bool {
    match proc_stat(pid) {
        Some(s) if s.start == proc_start && !s.zombie && s.pgrp == pid => {
            killpg(Pid::from_raw(pid), signal).is_ok()
        }
        _ => false,
    }
}

fn kill_all_in(pod_dir: &Path, signal: Signal) {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("containers")) else {
        return;
    };
    for e in entries.flatten() {
        if let Some(state) = read_json::<StateFile>(&e.path().join("state.json")) {
            signal_group(state.pid, state.proc_start, signal);
        }
    }
}

/// Ends the pod namespaces recorded in a sandbox directory (their holder
/// and the root end of its veth).
fn end_namespaces(pod_dir: &Path) {
    if let Some(pf) = read_pod_file(pod_dir) {
        if let Some(ns) = pf.namespaces {
            netns::remove(&ns, &pf.uid);
        }
    }
}

/// Makes `dir` the kubelet's alone (0700), whatever it was.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates (or re-moded) a pod directory: private, with its private
/// `containers/` and its shared `sandbox/` (1777: every container may add
/// files, only their owner may remove them).
fn pod_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("containers"))?;
    std::fs::create_dir_all(dir.join("sandbox"))?;
    private_dir(dir)?;
    private_dir(&dir.join("containers"))?;
    std::fs::set_permissions(dir.join("sandbox"), std::fs::Permissions::from_mode(0o1777))
}

/// The sandbox of container `name` in the pod directory `dir`: created
/// (or taken over, never through a symbolic link) as a 0700 directory
/// owned by `user`.
fn container_sandbox(dir: &Path, name: &str, user: Option<RunAs>) -> std::io::Result<PathBuf> {
    pod_dirs(dir)?;
    let create = Create {
        mode: 0o700,
        owner: user,
    };
    let fd = confine::open_dir_beneath(&dir.join("sandbox"), Path::new(name), Some(create))?;
    confine::own(&fd, create)?;
    Ok(dir.join("sandbox").join(name))
}

/// Where the termination message is read, beneath the container's sandbox.
fn termination_path(container: &Container) -> Result<PathBuf, String> {
    let path = container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("/dev/termination-log");
    let rel = confine::beneath(path, "terminationMessagePath")?;
    if rel.as_os_str().is_empty() {
        return Err(format!("terminationMessagePath {path:?} names no file"));
    }
    Ok(rel)
}

/// Whether `s` can name a directory of its own: non-empty, at most 255
/// bytes, only ASCII letters, digits, `-` and `_` (so never `/`, `.` or
/// `..`). Pod uids are checked with it before they become paths.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
/// Container names are checked with it before they become paths.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn read_exit(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_pod_file(dir: &Path) -> Option<PodFile> {
    read_json(&dir.join("pod.json"))
}

/// The pod IP recorded in a sandbox directory.
pub fn sandbox_ip(dir: &Path) -> Option<Ipv4Addr> {
    read_pod_file(dir).map(|p| p.ip)
}

/// The live network namespace of the pod whose sandbox directory is `dir`,
/// when it has one of its own.
pub fn sandbox_network(dir: &Path) -> Option<PodNamespaces> {
    read_pod_file(dir)?
        .namespaces
        .filter(|ns| ns.kinds.net && ns.alive())
}

/// The namespace and name recorded in a sandbox directory.
pub fn sandbox_pod(dir: &Path) -> Option<(String, String)> {
    read_pod_file(dir).map(|p| (p.namespace, p.name))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes JSON atomically (temporary file, then rename).
fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(value).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

/// The stored lines holding the last `n` lines of a log file (empty when
/// it cannot be read), read from its end.
fn read_tail(path: &Path, n: usize) -> Vec<u8> {
    use std::io::{Read, Seek};
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        let end = file.metadata()?.len();
        let start = logs::tail_offset(&file, end, n)?;
        file.seek(std::io::SeekFrom::Start(start))?;
        let mut raw = Vec::new();
        file.take(end - start).read_to_end(&mut raw)?;
        Ok(raw)
    };
    read().unwrap_or_default()
}

/// Keeps the logs (rotated ones too) of this attempt and the one before it.
fn prune_logs(cdir: &Path, attempt: u32) {
    let Ok(entries) = std::fs::read_dir(cdir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let n = name.split_once('.').and_then(|(n, rest)| {
            let ours = matches!(rest, "log" | "exit" | "exit.tmp") || rest.starts_with("log.");
            n.parse::<u32>().ok().filter(|_| ours)
        });
        if let Some(n) = n {
            if n + 1 < attempt {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Whether the kubelet can tell that `program` is there: on the host's
/// paths, the container's view without a mount namespace. In a mount
/// namespace of its own (`own_view`) the program may be in a volume, so
/// the helper resolves it there, after making the view.
fn findable(program: &str, env: &[(String, String)], own_view: bool) -> bool {
    own_view || resolve(program, env).is_some()
}

/// Finds `program` on the container's `PATH` (or checks a path).
fn resolve(program: &str, env: &[(String, String)]) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    path.split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn short_uid(uid: &str) -> &str {
    &uid[..uid.len().min(8)]
}

/// The log file of a container's current (`previous = false`) or previous
/// instance in a sandbox directory, and whether that instance has exited.
pub fn log_file(pod_dir: &Path, container: &str, previous: bool) -> Option<(PathBuf, bool)> {
    if !is_dns1123_label(container) {
        return None;
    }
    let cdir = pod_dir.join("containers").join(container);
    let mut attempts: Vec<u32> = std::fs::read_dir(&cdir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".log")
                .and_then(|n| n.parse().ok())
        })
        .collect();
    attempts.sort_unstable();
    let current = *attempts.last()?;
    let attempt = if previous {
        *attempts.iter().rev().find(|a| **a < current)?
    } else {
        current
    };
    let exited = cdir.join(format!("{attempt}.exit")).exists()
        || read_json::<StateFile>(&cdir.join("state.json"))
            .is_none_or(|s| s.attempt != attempt || !alive(s.pid, s.proc_start));
    Some((cdir.join(format!("{attempt}.log")), exited))
}

const SHIM_USAGE: &str = "usage: shim [--log-max-size BYTES --log-max-files N] [--run-as UID:GID] [--cgroup DIR…] [--mounts FILE] [--namespaces PID:START:KINDS] [--sandbox DIR [--workdir PATH]] <exit-file> <log-file> -- <command> [args…]";

/// The shim's options, before its positional arguments.
#[derive(Debug, Default, PartialEq)]
struct ShimOptions {
    rotation: Option<logs::Rotation>,
    run_as: Option<RunAs>,
    sandbox: Option<PathBuf>,
    workdir: PathBuf,
    /// The cgroups the container's process joins before `exec`.
    cgroups: Vec<PathBuf>,
    /// The container's mount namespace spec ([`super::mounts`]).
    mounts: Option<PathBuf>,
    /// The pod's namespaces the container's process joins ([`super::netns`]).
    namespaces: Option<PodNamespaces>,
}

/// Splits the shim's options off its arguments (`--log-max-size` and
/// `--log-max-files` come together or not at all).
fn shim_options(mut args: &[String]) -> anyhow::Result<(ShimOptions, &[String])> {
    let mut o = ShimOptions::default();
    let (mut max_size, mut max_files) = (None, None);
    while let [flag, value, rest @ ..] = args {
        match flag.as_str() {
            "--log-max-size" => {
                max_size = Some(value.parse::<u64>().map_err(|_| {
                    anyhow::anyhow!("--log-max-size {value:?}: not a number of bytes")
                })?)
            }
            "--log-max-files" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--log-max-files {value:?}: not a number"))?;
                anyhow::ensure!(n > 1, "--log-max-files {n}: must be > 1");
                max_files = Some(n);
            }
            "--run-as" => {
                let parsed = value
                    .split_once(':')
                    .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
                let Some((uid, gid)) = parsed else {
                    anyhow::bail!("--run-as {value:?}: want UID:GID");
                };
                o.run_as = Some(RunAs { uid, gid });
            }
            "--sandbox" => o.sandbox = Some(PathBuf::from(value)),
            "--cgroup" => o.cgroups.push(PathBuf::from(value)),
            "--mounts" => o.mounts = Some(PathBuf::from(value)),
            "--namespaces" => {
                o.namespaces = Some(PodNamespaces::parse(value).map_err(anyhow::Error::msg)?)
            }
            "--workdir" => {
                o.workdir = confine::beneath(value, "--workdir").map_err(anyhow::Error::msg)?
            }
            _ => break,
        }
        args = rest;
    }
    o.rotation = match (max_size, max_files) {
        (Some(max_size), Some(max_files)) => Some(logs::Rotation {
            max_size,
            max_files,
        }),
        (None, None) => None,
        _ => anyhow::bail!(SHIM_USAGE),
    };
    anyhow::ensure!(
        o.run_as.is_none() || o.sandbox.is_some(),
        "--run-as needs --sandbox"
    );
    Ok((o, args))
}

/// `ballast image shim [--log-max-size BYTES --log-max-files N] [--run-as
/// UID:GID] [--sandbox DIR [--workdir PATH]] <exit-file> <log-file> --
/// <argv…>`: runs the container's process in the shim's process group, as
/// `UID:GID` with no other groups, in `PATH` beneath the sandbox `DIR`
/// ([`confine::command`]); writes its output to the log (CRI format,
/// rotated by those limits) and its exit code to the exit file, and exits
/// with that code. The shim itself keeps its user and ignores SIGTERM,
/// SIGINT and SIGHUP (the container, once exec'd, has the default
/// dispositions again).
pub async fn shim_main(args: &[String]) -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let (options, args) = shim_options(args)?;
    let [exit_file, log_file, dashes, argv @ ..] = args else {
        anyhow::bail!(SHIM_USAGE);
    };
    anyhow::ensure!(dashes == "--" && !argv.is_empty(), SHIM_USAGE);
    // Installing handlers makes the shim survive the group's SIGTERM.
    let _term = signal(SignalKind::terminate())?;
    let _int = signal(SignalKind::interrupt())?;
    let _hup = signal(SignalKind::hangup())?;
    let log = std::sync::Arc::new(Mutex::new(logs::RotatingLog::open(
        Path::new(log_file),
        options.rotation,
    )?));
    let write = |log: &Mutex<logs::RotatingLog>, stream: &str, text: &[u8], complete: bool| {
        let entry = logs::format_entry(stream, text, complete);
        let _ = log.lock().expect("log lock").write_entry(&entry);
    };
    // Entering the sandbox changes the working directory.
    let exit_file = std::path::absolute(exit_file)?;
    let exit_file = exit_file.to_string_lossy();
    let exit_file = exit_file.as_ref();
    let spawned = shim_spawn(&options, argv);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            write(
                &log,
                "stderr",
                format!("exec {:?}: {e}", argv[0]).as_bytes(),
                true,
            );
            std::fs::write(exit_file, "128\n")?;
            return Ok(128);
        }
    };
    let out = tokio::spawn(copy_lines(child.stdout.take(), "stdout", log.clone()));
    let err = tokio::spawn(copy_lines(child.stderr.take(), "stderr", log.clone()));
    let status = child.wait().await?;
    let code = exit_code(status);
    // Output still buffered in the pipes; a background grandchild may hold
    // them open, so do not wait for end-of-file for long.
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        let _ = out.await;
        let _ = err.await;
    })
    .await;
    let tmp = PathBuf::from(format!("{exit_file}.tmp"));
    std::fs::write(&tmp, format!("{code}\n"))?;
    std::fs::rename(&tmp, exit_file)?;
    Ok(code)
}

/// Starts the container's process for the shim, confined as `options` say.
fn shim_spawn(options: &ShimOptions, argv: &[String]) -> std::io::Result<tokio::process::Child> {
    if !options.cgroups.is_empty() || options.mounts.is_some() || options.namespaces.is_some() {
        return helper_spawn(options, argv);
    }
    let (cmd, exe) = confined_command(options, argv, None)?.into_parts();
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn();
    // The program's descriptor is needed until the child has exec'd.
    drop(exe);
    child
}

/// Starts the container's process through `ballast image exec`
/// ([`exec_main`]), which joins the container's cgroups and its pod's
/// namespaces while still privileged and then becomes `argv`, confined as
/// `options` say.
fn helper_spawn(options: &ShimOptions, argv: &[String]) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("image").arg("exec");
    if let Some(u) = options.run_as {
        cmd.arg("--run-as").arg(format!("{}:{}", u.uid, u.gid));
    }
    for dir in &options.cgroups {
        cmd.arg("--cgroup").arg(dir);
    }
    if let Some(m) = &options.mounts {
        cmd.arg("--mounts").arg(m);
    }
    if let Some(ns) = &options.namespaces {
        cmd.arg("--namespaces").arg(ns.to_arg());
    }
    if let Some(sandbox) = &options.sandbox {
        cmd.arg("--sandbox")
            .arg(sandbox)
            .arg("--workdir")
            .arg(&options.workdir);
    }
    cmd.arg("--")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Enters the container's view — its mount namespace ([`super::mounts`],
/// with `terminal` shown in its `/dev/pts`), else its sandbox — and builds
/// the command for `argv`, resolved there on this process's `PATH` (the
/// container's), so a program in a volume is found. The built-in images'
/// program, the `ballast` binary, is resolved and opened on the host's
/// paths first: the container's view need not show it.
fn confined_command(
    options: &ShimOptions,
    argv: &[String],
    terminal: Option<&Path>,
) -> std::io::Result<confine::Confined> {
    let ballast_exe = std::env::current_exe()?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let resolved = || {
        resolve(&argv[0], &env).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "executable file not found in $PATH",
            )
        })
    };
    let Some(mounts) = &options.mounts else {
        let program = resolved()?;
        if let Some(sandbox) = &options.sandbox {
            confine::enter(sandbox, &options.workdir)?;
        }
        return confine::command(&program, &argv[0], &ballast_exe, options.run_as);
    };
    let spec = super::mounts::Spec::read(mounts)?;
    let ballast = ballast_exe.canonicalize()?;
    let built_in = match resolve(&argv[0], &env) {
        Some(p) if p.canonicalize().is_ok_and(|p| p == ballast) => Some(confine::command(
            &p,
            &argv[0],
            &ballast_exe,
            options.run_as,
        )?),
        _ => None,
    };
    super::mounts::setup(&spec, terminal)?;
    std::env::set_current_dir(Path::new("/").join(&options.workdir))?;
    match built_in {
        Some(command) => Ok(command),
        None => confine::command(&resolved()?, &argv[0], &ballast_exe, options.run_as),
    }
}

/// `ballast image exec [--tty] [--run-as UID:GID] [--cgroup DIR…] [--mounts FILE]
/// [--namespaces PID:START:KINDS] [--sandbox DIR [--workdir PATH]] -- <argv…>`:
/// becomes `argv` as a container's process would be started (the shim's
/// confinement, in its pod's namespaces), for exec probes, hooks and
/// `kubectl exec`.
/// `--tty`: first a new session whose controlling terminal is standard
/// input (a terminal). Returns only on failure, with exit code 128.
pub fn exec_main(args: &[String]) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    let (tty, args) = match args {
        [flag, rest @ ..] if flag == "--tty" => (true, rest),
        _ => (false, args),
    };
    let (options, args) = shim_options(args)?;
    const USAGE: &str = "usage: exec [--tty] [--run-as UID:GID] [--cgroup DIR…] [--mounts FILE] [--namespaces PID:START:KINDS] [--sandbox DIR [--workdir PATH]] -- <command> [args…]";
    let [dashes, argv @ ..] = args else {
        anyhow::bail!(USAGE);
    };
    anyhow::ensure!(dashes == "--" && !argv.is_empty(), USAGE);
    if tty {
        rustix::process::setsid()?;
        rustix::process::ioctl_tiocsctty(std::io::stdin())?;
    }
    cgroups::join(&options.cgroups)?;
    if let Some(ns) = &options.namespaces {
        // This thread is the one that becomes `argv`.
        ns.join()?;
    }
    // The terminal (a pseudo-terminal of the host's `/dev/pts`), to show
    // in the container's `/dev/pts` under the same name.
    let terminal = tty
        .then(|| std::fs::read_link("/proc/self/fd/0").ok())
        .flatten()
        .filter(|p| p.starts_with("/dev/pts/"));
    let err = match confined_command(&options, argv, terminal.as_deref()) {
        Ok(mut c) => c.cmd.args(&argv[1..]).exec(),
        Err(e) => e,
    };
    eprintln!("exec {:?}: {err}", argv[0]);
    Ok(128)
}

/// The longest log entry the shim writes; longer output lines are split into
/// partial (`P`) entries of this size, as CRI runtimes do.
const MAX_LOG_LINE: usize = 16 * 1024;

async fn copy_lines<R: AsyncRead + Unpin>(
    reader: Option<R>,
    stream: &'static str,
    log: std::sync::Arc<Mutex<logs::RotatingLog>>,
) {
    let Some(reader) = reader else { return };
    copy_entries(reader, stream, MAX_LOG_LINE, |entry| {
        let _ = log.lock().expect("log lock").write_entry(entry);
    })
    .await;
}

/// Copies `reader` as CRI log entries to `write`, one per line, splitting
/// lines longer than `cap` bytes into partial entries so memory stays bounded.
async fn copy_entries<R: AsyncRead + Unpin>(
    reader: R,
    stream: &str,
    cap: usize,
    mut write: impl FnMut(&[u8]),
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let room = cap.saturating_sub(line.len()).max(1);
        let window = &buf[..buf.len().min(room)];
        let (used, complete) = match window.iter().position(|b| *b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&window[..i]);
                (i + 1, true)
            }
            None => {
                line.extend_from_slice(window);
                (window.len(), false)
            }
        };
        reader.consume(used);
        if complete || line.len() >= cap {
            write(&logs::format_entry(stream, &line, complete));
            line.clear();
        }
    }
    if !line.is_empty() {
        write(&logs::format_entry(stream, &line, false));
    }
}

/// SIGKILLs every container recorded under a kubelet root directory whose
/// process is still the one recorded (for test clean-up and for tools that
/// must leave nothing behind).
pub fn kill_all(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("pods")) else {
        return;
    };
    for e in entries.flatten() {
        kill_all_in(&e.path(), Signal::SIGKILL);
        end_namespaces(&e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_split_into_partial_entries() {
        let input: &[u8] = b"short\nabcdefghij\nxyz";
        let mut raw = Vec::new();
        copy_entries(input, "stdout", 4, |e| raw.extend_from_slice(e)).await;
        let tags: Vec<(bool, Vec<u8>)> = raw
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let e = logs::parse(l);
                (e.complete, e.text.to_vec())
            })
            .collect();
        let want: Vec<(bool, &[u8])> = vec![
            (false, b"shor"),
            (true, b"t"),
            (false, b"abcd"),
            (false, b"efgh"),
            (true, b"ij"),
            (false, b"xyz"),
        ];
        let want: Vec<(bool, Vec<u8>)> = want.into_iter().map(|(c, t)| (c, t.to_vec())).collect();
        assert_eq!(tags, want);
        // The reader joins partial entries back into whole lines.
        let shown = logs::render(&raw, &logs::LogOptions::default());
        assert_eq!(shown, b"short\nabcdefghij\nxyz");
    }

    #[test]
    fn names_that_would_be_paths_are_refused() {
        for bad in [
            "",
            "..",
            ".",
            "../../x",
            "a/b",
            "A",
            "-a",
            "a-",
            "a.b",
            &"a".repeat(64),
        ] {
            assert!(!is_dns1123_label(bad), "{bad:?}");
        }
        for good in ["a", "app-1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(good), "{good:?}");
        }
        for bad in ["", "..", ".", "a/b", "../x", "a\0b"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        assert!(is_plain_name("ce7ab8cf-595e-4874-9a52-4af6d4943a1e"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("x/containers/c")).unwrap();
        std::fs::write(dir.path().join("x/containers/c/0.log"), "").unwrap();
        let pod_dir = dir.path().join("x/y");
        assert_eq!(log_file(&pod_dir, "../../x/containers/c", false), None);
        assert!(log_file(&dir.path().join("x"), "c", false).is_some());
        let rt = ProcessRuntime::new(
            dir.path(),
            Path::new("/bin/true"),
            Allocator::new(crate::ipam::Cidr::parse("127.250.0.0/24").unwrap()),
        )
        .unwrap();
        assert_eq!(rt.pod_dir("../x"), dir.path().join("pods/.invalid-uid"));
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "../../etc"}
        }))
        .unwrap();
        let err = rt.create_sandbox(&pod).unwrap_err();
        assert_eq!(err, "pod uid \"../../etc\" is not a plain name");
    }

    #[test]
    fn own_process_is_alive_and_recognised() {
        let me = std::process::id() as i32;
        let s = proc_stat(me).unwrap();
        let (start, zombie) = (s.start, s.zombie);
        assert!(!zombie);
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert!(!alive(0, 0));
    }

    #[test]
    fn resolve_uses_the_container_path() {
        let env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        assert!(resolve("sh", &env).is_some());
        assert!(resolve("no-such-program-xyz", &env).is_none());
        assert!(resolve("/bin/sh", &env).is_some());
    }
}
