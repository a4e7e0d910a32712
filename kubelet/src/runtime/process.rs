//! The process runtime: every container is a real process group on this
//! machine.
//!
//! Layout of a pod's sandbox, `<root>/pods/<uid>/` (also the default
//! working directory of its containers):
//!
//! ```text
//! pod.json                          namespace, name, uid, IP
//! containers/<name>/state.json      the current instance: attempt, pid, /proc start time, env, cwd
//! containers/<name>/<attempt>.log   its output, CRI format (crate::logs); the previous one is kept
//! containers/<name>/<attempt>.log.<time>  rotated output (crate::logs::RotatingLog)
//! containers/<name>/<attempt>.exit  its exit code, written by the shim
//! containers/<name>/termination-log where `/dev/termination-log` points
//! ```
//!
//! Each container runs under a shim, `ballast image shim [--log-max-size
//! BYTES --log-max-files N] <exit> <log> -- <argv…>`, started in a new
//! process group (the container's process is in it too). The shim writes
//! the output to the log, rotating it by those limits, records the exit
//! code and ignores SIGTERM/SIGINT/SIGHUP itself, so it outlives a kubelet
//! restart: the next kubelet finds the shim by pid, checks the pid is the
//! same process (`/proc/<pid>/stat` start time) and adopts it. Stopping a
//! container signals the whole group.

use std::collections::HashSet;
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

use super::{
    Exit, ProbeResult, Running, RunningKind, Sandbox, StartError, StartRequest, StopSignal,
};
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
    pulled: Mutex<HashSet<String>>,
    log_rotation: Option<logs::Rotation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PodFile {
    namespace: String,
    name: String,
    uid: String,
    ip: Ipv4Addr,
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
}

/// A process container's handle: its group and the context exec probes
/// and hooks run in.
#[derive(Debug)]
pub struct ProcessContainer {
    pid: i32,
    proc_start: u64,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    ip: Ipv4Addr,
    dir: PathBuf,
    attempt: u32,
}

impl ProcessRuntime {
    /// A runtime under `root`, reserving the IPs of sandboxes found there.
    pub fn new(
        root: &Path,
        ballast_exe: &Path,
        ipam: Allocator,
    ) -> std::io::Result<ProcessRuntime> {
        std::fs::create_dir_all(root.join("pods"))?;
        let rt = ProcessRuntime {
            root: root.to_path_buf(),
            ballast_exe: ballast_exe.to_path_buf(),
            ipam,
            pulled: Mutex::new(HashSet::new()),
            log_rotation: None,
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

    /// The sandbox directory of pod `uid`, with its namespace and name.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    /// Kills every container left in a sandbox directory and removes it
    /// (a pod deleted while the kubelet was down).
    pub fn destroy_orphan(&self, dir: &Path) {
        kill_all_in(dir, Signal::SIGKILL);
        if let Some(pf) = read_pod_file(dir) {
            self.ipam.release(pf.ip);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Sends `signal` to every live container group of a sandbox.
    pub fn signal_sandbox(&self, dir: &Path, signal: StopSignal) {
        kill_all_in(dir, to_nix(signal));
    }

    pub fn create_sandbox(&self, pod: &Pod) -> Result<Sandbox, String> {
        let uid = pod.metadata.uid.clone().ok_or("pod has no uid")?;
        let dir = self.pod_dir(&uid);
        if let Some(pf) = read_pod_file(&dir) {
            self.ipam.reserve(pf.ip);
            return Ok(Sandbox {
                uid,
                ip: pf.ip,
                dir: Some(dir),
            });
        }
        let ip = self
            .ipam
            .allocate()
            .ok_or_else(|| format!("no free pod IP left in {}", self.ipam.cidr()))?;
        let pf = PodFile {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
            ip,
        };
        let written = std::fs::create_dir_all(dir.join("containers"))
            .and_then(|()| write_json(&dir.join("pod.json"), &pf));
        if let Err(e) = written {
            self.ipam.release(ip);
            return Err(format!("creating the sandbox {}: {e}", dir.display()));
        }
        Ok(Sandbox {
            uid,
            ip,
            dir: Some(dir),
        })
    }

    pub fn remove_sandbox(&self, sandbox: &Sandbox) {
        if let Some(dir) = &sandbox.dir {
            kill_all_in(dir, Signal::SIGKILL);
            let _ = std::fs::remove_dir_all(dir);
        }
        self.ipam.release(sandbox.ip);
    }

    pub fn image_present(&self, image: &str) -> bool {
        self.pulled
            .lock()
            .expect("pulled lock")
            .contains(&images::normalize(image))
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
        self.pulled
            .lock()
            .expect("pulled lock")
            .insert(images::normalize(image));
        Ok(config)
    }

    pub fn start(&self, req: StartRequest<'_>) -> Result<Running, StartError> {
        let config_error = |message: String| StartError {
            reason: "CreateContainerConfigError",
            message,
        };
        let dir = req
            .sandbox
            .dir
            .clone()
            .ok_or_else(|| config_error("no sandbox directory".into()))?;
        let ip = req.sandbox.ip.to_string();
        let env = env::container_env(req.pod, req.container, req.image, &ip, req.host_ip)
            .map_err(config_error)?;
        let argv = env::command_line(req.container, req.image, &env);
        let start_error = |message: String| StartError {
            reason: "StartError",
            message,
        };
        let Some(program) = argv.first() else {
            return Err(start_error("no command specified".into()));
        };
        if resolve(program, &env).is_none() {
            return Err(start_error(format!(
                "failed to create containerd task: exec: {program:?}: executable file not found in $PATH"
            )));
        }
        let cwd = match &req.container.working_dir {
            Some(w) if !w.is_empty() => {
                let w = PathBuf::from(w);
                std::fs::create_dir_all(&w)
                    .map_err(|e| start_error(format!("working directory {}: {e}", w.display())))?;
                w
            }
            _ => dir.clone(),
        };
        let cdir = dir.join("containers").join(&req.container.name);
        std::fs::create_dir_all(&cdir)
            .map_err(|e| start_error(format!("{}: {e}", cdir.display())))?;
        let attempt = req.attempt;
        let log = cdir.join(format!("{attempt}.log"));
        let exit = cdir.join(format!("{attempt}.exit"));
        let _ = std::fs::remove_file(&exit);
        let _ = std::fs::remove_file(cdir.join("termination-log"));
        prune_logs(&cdir, attempt);
        // The log exists even if the shim is killed before it opens it.
        std::fs::write(&log, b"").map_err(|e| start_error(format!("{}: {e}", log.display())))?;
        let mut cmd = tokio::process::Command::new(&self.ballast_exe);
        cmd.arg("image").arg("shim");
        if let Some(r) = self.log_rotation {
            cmd.arg("--log-max-size")
                .arg(r.max_size.to_string())
                .arg("--log-max-files")
                .arg(r.max_files.to_string());
        }
        cmd.arg(&exit)
            .arg(&log)
            .arg("--")
            .args(&argv)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&cwd)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| start_error(format!("starting {}: {e}", self.ballast_exe.display())))?;
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
            cwd: cwd.clone(),
            ip: req.sandbox.ip,
        };
        if let Err(e) = write_json(&cdir.join("state.json"), &state) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            return Err(start_error(format!("recording the container state: {e}")));
        }
        let (tx, rx) = watch::channel(None);
        tokio::spawn(wait_child(child, exit.clone(), tx));
        Ok(Running {
            id,
            started_at,
            attempt,
            exit: rx,
            kind: RunningKind::Process(ProcessContainer {
                pid,
                proc_start,
                env,
                cwd,
                ip: req.sandbox.ip,
                dir: cdir,
                attempt,
            }),
        })
    }

    pub fn adopt(&self, sandbox: &Sandbox, container: &str) -> Option<Running> {
        let cdir = sandbox.dir.as_ref()?.join("containers").join(container);
        let state: StateFile = read_json(&cdir.join("state.json"))?;
        let started_at = state
            .started_at
            .parse()
            .unwrap_or_else(|_| Timestamp::now());
        let exit_file = cdir.join(format!("{}.exit", state.attempt));
        let (tx, rx) = watch::channel(None);
        if alive(state.pid, state.proc_start) {
            tokio::spawn(watch_adopted(state.pid, state.proc_start, exit_file, tx));
        } else {
            let code = read_exit(&exit_file).unwrap_or(137);
            let finished_at = std::fs::metadata(&exit_file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| Timestamp::try_from(t).ok())
                .unwrap_or_else(Timestamp::now);
            let _ = tx.send(Some(Exit { code, finished_at }));
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
                cwd: state.cwd,
                ip: state.ip,
                dir: cdir,
                attempt: state.attempt,
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
        if alive(self.pid, self.proc_start) {
            let _ = killpg(Pid::from_raw(self.pid), to_nix(signal));
        }
    }

    /// Runs `cmd` as an exec into this container would: its env and
    /// working directory, its own process group, killed at `timeout`.
    /// Returns the exit code and the combined output.
    async fn exec(&self, cmd: &[String], timeout: Duration) -> Result<(i32, String), String> {
        let Some(program) = cmd.first() else {
            return Err("exec: no command".into());
        };
        let Some(path) = resolve(program, &self.env) else {
            return Err(format!(
                "exec: {program:?}: executable file not found in $PATH"
            ));
        };
        let child = tokio::process::Command::new(path)
            .args(&cmd[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.cwd)
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
        let path = match container.termination_message_path.as_deref() {
            None | Some("/dev/termination-log") | Some("") => self.dir.join("termination-log"),
            Some(p) => PathBuf::from(p),
        };
        let mut message = std::fs::read(&path).ok().unwrap_or_default();
        message.truncate(MAX_MESSAGE);
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
    tx: watch::Sender<Option<Exit>>,
) {
    let code = match child.wait().await {
        Ok(status) => read_exit(&exit_file).unwrap_or_else(|| exit_code(status)),
        Err(_) => 137,
    };
    let _ = tx.send(Some(Exit {
        code,
        finished_at: Timestamp::now(),
    }));
}

async fn watch_adopted(
    pid: i32,
    proc_start: u64,
    exit_file: PathBuf,
    tx: watch::Sender<Option<Exit>>,
) {
    while alive(pid, proc_start) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tx.is_closed() {
            return;
        }
    }
    let code = read_exit(&exit_file).unwrap_or(137);
    let _ = tx.send(Some(Exit {
        code,
        finished_at: Timestamp::now(),
    }));
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot)
/// and whether the process is a zombie.
fn proc_stat(pid: i32) -> Option<(u64, bool)> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    Some((fields.get(19)?.parse().ok()?, zombie))
}

fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(t, _)| t)
}

/// Whether `pid` is still the live process that started at `proc_start`.
fn alive(pid: i32, proc_start: u64) -> bool {
    matches!(proc_stat(pid), Some((t, false)) if t == proc_start)
}

fn kill_all_in(pod_dir: &Path, signal: Signal) {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("containers")) else {
        return;
    };
    for e in entries.flatten() {
        if let Some(state) = read_json::<StateFile>(&e.path().join("state.json")) {
            if alive(state.pid, state.proc_start) {
                let _ = killpg(Pid::from_raw(state.pid), signal);
            }
        }
    }
}

fn read_exit(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_pod_file(dir: &Path) -> Option<PodFile> {
    read_json(&dir.join("pod.json"))
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

const SHIM_USAGE: &str = "usage: shim [--log-max-size BYTES --log-max-files N] <exit-file> <log-file> -- <command> [args…]";

/// Splits the shim's `--log-max-size BYTES --log-max-files N` (both or
/// neither) off its arguments.
fn shim_rotation(args: &[String]) -> anyhow::Result<(Option<logs::Rotation>, &[String])> {
    let [flag, size, files_flag, files, rest @ ..] = args else {
        return Ok((None, args));
    };
    if flag != "--log-max-size" {
        return Ok((None, args));
    }
    anyhow::ensure!(files_flag == "--log-max-files", SHIM_USAGE);
    let max_size = size
        .parse()
        .map_err(|_| anyhow::anyhow!("--log-max-size {size:?}: not a number of bytes"))?;
    let max_files: usize = files
        .parse()
        .map_err(|_| anyhow::anyhow!("--log-max-files {files:?}: not a number"))?;
    anyhow::ensure!(max_files > 1, "--log-max-files {max_files}: must be > 1");
    Ok((
        Some(logs::Rotation {
            max_size,
            max_files,
        }),
        rest,
    ))
}

/// `ballast image shim [--log-max-size BYTES --log-max-files N] <exit-file>
/// <log-file> -- <argv…>`: runs the container's process in the shim's
/// process group, writes its output to the log (CRI format, rotated by
/// those limits) and its exit code to the exit file, and exits with that
/// code. The shim itself ignores SIGTERM, SIGINT and SIGHUP (the container,
/// once exec'd, has the default dispositions again).
pub async fn shim_main(args: &[String]) -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let (rotation, args) = shim_rotation(args)?;
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
        rotation,
    )?));
    let write = |log: &Mutex<logs::RotatingLog>, stream: &str, text: &[u8], complete: bool| {
        let entry = logs::format_entry(stream, text, complete);
        let _ = log.lock().expect("log lock").write_entry(&entry);
    };
    let spawned = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
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
    fn own_process_is_alive_and_recognised() {
        let me = std::process::id() as i32;
        let (start, zombie) = proc_stat(me).unwrap();
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
