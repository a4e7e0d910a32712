//! `ballast up` as a test fixture: the whole control plane as users run it
//! (three storage members, the apiserver, the controller manager, the
//! scheduler and the kubelets), started once per test and driven with the
//! real `kubectl`.
//!
//! `ballast up` binds etcd's fixed local-cluster ports, so only one can run
//! on the machine at a time: [`Up::start`] first takes a machine-wide lock
//! (a listening socket on [`LOCK_ADDR`], released by the kernel even when a
//! test process dies), so test binaries — and several people's test runs
//! on one machine — queue instead of colliding.
//!
//! ```no_run
//! let dir = tempfile::tempdir().unwrap();
//! let up = ballast_tests::up::Up::start(dir.path(), &["--nodes", "1"]);
//! up.ok(&["create", "deployment", "web", "--image=busybox"]);
//! let pods = up.json(&["get", "pods"]);
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::workspace_bin;

/// The address whose listener is the one-`ballast up`-at-a-time lock.
pub const LOCK_ADDR: &str = "127.0.0.1:2369";

/// How long `start` waits for another `ballast up` to finish, and for its
/// own to print its ready line.
const LOCK_WAIT: Duration = Duration::from_secs(30 * 60);
const READY_WAIT: Duration = Duration::from_secs(120);

/// A running `ballast up`, stopped with SIGTERM when dropped (also when the
/// test fails), then its whole process group killed if it lingers a minute.
pub struct Up {
    child: Child,
    /// The `--data-dir`: member data, `logs/`, the kubeconfig.
    pub data_dir: PathBuf,
    /// The admin kubeconfig `ballast up` wrote.
    pub kubeconfig: PathBuf,
    /// Where `ballast dns` answers (UDP and TCP), as `ballast up` printed it.
    pub dns: Option<SocketAddr>,
    /// Where `ballast dns` serves `/metrics`, `/health` and `/ready`.
    pub dns_status: Option<SocketAddr>,
    /// Held for the life of the cluster; dropped after the child is gone.
    _lock: TcpListener,
}

impl Up {
    /// Starts `ballast up --data-dir <data_dir> <extra…>` and waits for its
    /// `cluster ready` line; panics with what it printed and the tails of
    /// its logs if it is not ready within two minutes.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Up {
        let lock = take_lock();
        // Its own process group, so a last-resort kill reaches every part.
        let mut child = Command::new(workspace_bin("ballast"))
            .args(["up", "--data-dir", data_dir.to_str().expect("UTF-8 path")])
            .args(extra)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ballast up");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut up = Up {
            child,
            data_dir: data_dir.to_path_buf(),
            kubeconfig: data_dir.join("kubeconfig"),
            dns: None,
            dns_status: None,
            _lock: lock,
        };
        let deadline = Instant::now() + READY_WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("cluster ready") => return up,
                Ok(line) => {
                    if let Some(addr) = dns_address(&line) {
                        up.dns = Some(addr);
                        up.dns_status = dns_status_address(&line);
                    }
                    seen.push(line)
                }
                Err(_) => panic!(
                    "ballast up did not become ready within {READY_WAIT:?}; it printed:\n{}\nlogs:\n{}",
                    seen.join("\n"),
                    up.log_tails(20)
                ),
            }
        }
    }

    /// Runs `kubectl --kubeconfig <ours> --request-timeout 30s <args…>`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "30s"])
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl with `stdin` as its standard input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "30s"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = child.stdin.take().expect("piped stdin");
        input
            .write_all(stdin.as_bytes())
            .expect("write kubectl's stdin");
        drop(input);
        child.wait_with_output().expect("wait for kubectl")
    }

    /// Runs kubectl and asserts it succeeded; its stdout. On failure the
    /// panic shows kubectl's stderr and the pods.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        self.assert_ok(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl <args…> -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl printed JSON")
    }

    /// `kubectl create -f -` of `manifest`; asserts it succeeded.
    pub fn create(&self, manifest: &Value) -> String {
        self.stdin_ok(&["create", "-f", "-"], manifest)
    }

    /// `kubectl apply -f -` of `manifest`; asserts it succeeded.
    pub fn apply(&self, manifest: &Value) -> String {
        self.stdin_ok(&["apply", "-f", "-"], manifest)
    }

    fn stdin_ok(&self, args: &[&str], manifest: &Value) -> String {
        let out = self.kubectl_stdin(args, &manifest.to_string());
        self.assert_ok(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn assert_ok(&self, args: &[&str], out: &Output) {
        if out.status.success() {
            return;
        }
        let pods = self.kubectl(&["get", "pods", "-A", "-o", "wide"]);
        panic!(
            "kubectl {args:?} failed: {}\npods:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&pods.stdout)
        );
    }

    /// Polls `check` every 500 ms until it returns `Some`, for up to
    /// `timeout`; panics naming `what` and showing the pods otherwise.
    pub fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; pods:\n{}",
                String::from_utf8_lossy(&self.kubectl(&["get", "pods", "-A", "-o", "wide"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The last `n` lines of one part's log (`logs/<part>.log`, e.g.
    /// `kubelet-node-1`, `apiserver`).
    pub fn log_tail(&self, part: &str, n: usize) -> String {
        let text = std::fs::read_to_string(self.data_dir.join(format!("logs/{part}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The last `n` lines of every part's log, for a failure message.
    pub fn log_tails(&self, n: usize) -> String {
        let mut names: Vec<String> = std::fs::read_dir(self.data_dir.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log").map(str::to_string)
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|part| format!("--- {part}.log\n{}\n", self.log_tail(part, n)))
            .collect()
    }

    /// Stops the cluster with SIGTERM, as a user's Ctrl-C does, and
    /// asserts that it exits within a minute; its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for ballast up") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ballast up did not stop within 60s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return; // already stopped (and reaped)
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// The address of `ballast up`'s line `  cluster DNS on <ip:port> (…`.
fn dns_address(line: &str) -> Option<SocketAddr> {
    let rest = line.trim_start().strip_prefix("cluster DNS on ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The address after `http://` in that line: the DNS's `/metrics`,
/// `/health` and `/ready`.
fn dns_status_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("http://")?;
    rest.split(|c: char| c == ')' || c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

/// Binds [`LOCK_ADDR`], waiting while another `ballast up` holds it.
fn take_lock() -> TcpListener {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match TcpListener::bind(LOCK_ADDR) {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("the one-ballast-up-at-a-time lock {LOCK_ADDR}: {e}"),
        }
    }
}

/// The Python with the official `kubernetes` client that
/// `scripts/setup.sh` installs (`$HOME/.cache/ballast/pyenv`), if present.
pub fn python() -> Option<PathBuf> {
    let py = Path::new(&std::env::var_os("HOME")?).join(".cache/ballast/pyenv/bin/python");
    py.exists().then_some(py)
}
