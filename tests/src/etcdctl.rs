//! Running the real `etcdctl` (v3 API) against a cluster.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::process::{self, Launch};

/// The `etcdctl` binary: `$ETCDCTL_BIN` or `/usr/bin/etcdctl`.
pub fn etcdctl_bin() -> PathBuf {
    std::env::var_os("ETCDCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"))
}

/// What one `etcdctl` run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit code; -1 if it was killed by a signal (e.g. after a timeout).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The run hit its deadline and was killed.
    pub timed_out: bool,
}

impl Output {
    /// Panics (showing everything) unless the exit code is 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert!(
            self.code == 0 && !self.timed_out,
            "etcdctl failed: {self:#?}"
        );
        self
    }

    /// Panics unless the run failed with exit code `code` and stderr
    /// contains `needle`.
    #[track_caller]
    pub fn fails_with(&self, code: i32, needle: &str) -> &Self {
        assert!(
            self.code == code && !self.timed_out && self.stderr.contains(needle),
            "expected exit code {code} and stderr containing {needle:?}, got {self:#?}"
        );
        self
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// stdout parsed as one JSON document per non-empty line (`watch -w json`).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}): {self:#?}"))
            })
            .collect()
    }

    /// The `Error: …` line etcdctl prints last on failure, if any.
    pub fn error_line(&self) -> Option<&str> {
        self.stderr.lines().rev().find(|l| l.starts_with("Error:"))
    }
}

/// TLS files for `etcdctl --cacert/--cert/--key`; each is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// `--cacert`: the CA that signs the servers' certificates.
    pub cacert: Option<PathBuf>,
    /// `--cert`: the client certificate.
    pub cert: Option<PathBuf>,
    /// `--key`: the client certificate's key.
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// The `--cacert=… --cert=… --key=…` flags for the files that are set.
    pub fn flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (flag, v) in [
            ("cacert", &self.cacert),
            ("cert", &self.cert),
            ("key", &self.key),
        ] {
            if let Some(p) = v {
                out.push(format!("--{flag}={}", p.display()));
            }
        }
        out
    }
}

/// Runs `etcdctl` with `ETCDCTL_API=3` against a fixed set of endpoints.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    endpoints: Vec<String>,
    timeout: Duration,
    tls: ClientTls,
}

impl Etcdctl {
    /// `endpoints` are `host:port` (or URLs), passed as `--endpoints=a,b,c`.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Etcdctl {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(30),
            tls: ClientTls::default(),
        }
    }

    /// Passes `--cacert`, `--cert` and `--key` (those set) on every run.
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS files passed on every run.
    pub fn tls(&self) -> &ClientTls {
        &self.tls
    }

    /// The deadline for one run (default 30 s); past it the run is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn launch(&self, args: &[&str]) -> Launch {
        let mut l = Launch::new(etcdctl_bin());
        // A developer's ETCDCTL_* settings must not leak into the suite.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                l = l.env_remove(k);
            }
        }
        l.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .args(self.tls.flags())
            .args(args.iter().copied())
    }

    /// Runs `etcdctl --endpoints=… ARGS` with stdin closed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, Vec::new())
    }

    /// Runs `etcdctl --endpoints=… ARGS`, writing `stdin` to it and then
    /// closing it (`txn -i`, `put KEY` reading the value from stdin).
    pub fn run_with_stdin(&self, args: &[&str], stdin: impl Into<Vec<u8>>) -> Output {
        let mut child = process::spawn(self.launch(args))
            .unwrap_or_else(|e| panic!("spawn {}: {e}", etcdctl_bin().display()));
        let input = stdin.into();
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let writer = thread::spawn(move || {
            // A child that exits early closes the pipe; that's not our error.
            let _ = pipe.write_all(&input);
        });
        let out = read_all(child.stdout.take().expect("stdout is piped"));
        let err = read_all(child.stderr.take().expect("stderr is piped"));
        let status = process::wait_timeout(&mut child, self.timeout);
        let timed_out = status.is_none();
        if timed_out {
            process::kill(&mut child);
        }
        let _ = writer.join();
        Output {
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout: join_text(out),
            stderr: join_text(err),
            timed_out,
        }
    }

    /// Starts a long-running command (`watch …`, `lease keep-alive …`)
    /// whose stdout is collected line by line as it arrives.
    pub fn spawn(&self, args: &[&str]) -> Stream {
        let mut child = process::spawn(self.launch(args))
            .unwrap_or_else(|e| panic!("spawn {}: {e}", etcdctl_bin().display()));
        drop(child.stdin.take());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().expect("stdout is piped");
        let out = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => sink.lock().unwrap_or_else(|e| e.into_inner()).push(l),
                    Err(_) => break,
                }
            }
        });
        let err = read_all(child.stderr.take().expect("stderr is piped"));
        Stream {
            child: Some(child),
            lines,
            out: Some(out),
            err: Some(err),
        }
    }

    /// Runs a streaming command until it printed `lines` lines of stdout or
    /// `timeout` passed, then kills it. `timed_out` tells which.
    pub fn stream(&self, args: &[&str], lines: usize, timeout: Duration) -> Output {
        let s = self.spawn(args);
        let got = s.wait_for_lines(lines, timeout);
        let mut out = s.stop();
        out.timed_out = got.is_none();
        out
    }
}

/// A running streaming `etcdctl`; killed when stopped or dropped.
#[derive(Debug)]
pub struct Stream {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    out: Option<JoinHandle<()>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

impl Stream {
    /// The stdout lines read so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `pred` holds for the lines read so far, polling until
    /// `timeout`; returns those lines, or `None` on timeout.
    pub fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if pred(&lines) {
                return Some(lines);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` lines were read (bounded by `timeout`).
    pub fn wait_for_lines(&self, n: usize, timeout: Duration) -> Option<Vec<String>> {
        self.wait_until(timeout, |l| l.len() >= n)
    }

    /// Kills the process and returns everything it printed. `code` is the
    /// exit code if it had already exited by itself, else -1.
    pub fn stop(mut self) -> Output {
        let mut child = self.child.take().expect("stream is running");
        let exited = child.try_wait().ok().flatten();
        if exited.is_none() {
            process::kill(&mut child);
        }
        if let Some(h) = self.out.take() {
            let _ = h.join();
        }
        let stderr = self.err.take().map(join_text).unwrap_or_default();
        let mut stdout = self.lines().join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        Output {
            code: exited.and_then(|s| s.code()).unwrap_or(-1),
            stdout,
            stderr,
            timed_out: false,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill(&mut child);
        }
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_text(h: JoinHandle<Vec<u8>>) -> String {
    String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
}
