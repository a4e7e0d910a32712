//! Process plumbing shared by the harness: spawning children that cannot
//! outlive the test process, free ports, temporary directories, deadlines.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Where a child's standard streams go.
#[derive(Debug)]
pub enum Io {
    /// stdin, stdout and stderr are pipes.
    Piped,
    /// stdin is closed; stdout and stderr are appended to this file.
    Log(PathBuf),
}

/// A program to start: everything [`spawn`] needs, owned and `Send`.
#[derive(Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Extra environment (`None` value = remove the variable).
    pub env: Vec<(OsString, Option<OsString>)>,
    pub io: Io,
}

impl Launch {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Launch {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            io: Io::Piped,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), Some(v.into())));
        self
    }

    pub fn env_remove(mut self, k: impl Into<OsString>) -> Self {
        self.env.push((k.into(), None));
        self
    }

    pub fn io(mut self, io: Io) -> Self {
        self.io = io;
        self
    }

    fn command(self) -> io::Result<Command> {
        let mut cmd = match setpriv() {
            // The kernel sends SIGKILL to the child when the thread that
            // spawned it dies; that thread is the keeper below, which lives
            // as long as the test process.
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args);
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        match self.io {
            Io::Piped => {
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
            Io::Log(path) => {
                let f = File::options().create(true).append(true).open(&path)?;
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::from(f.try_clone()?))
                    .stderr(Stdio::from(f));
            }
        }
        Ok(cmd)
    }
}

fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .as_deref()
}

type SpawnRequest = (Launch, mpsc::Sender<io::Result<Child>>);

/// Starts a child process from the process-wide keeper thread.
///
/// All children are forked by one thread that lives until the test process
/// exits; with `setpriv --pdeathsig KILL` (util-linux) the kernel kills them
/// when it does, including on a panic that aborts or a SIGKILL of the test
/// binary. Without `setpriv` they are still killed by their owners' `Drop`.
pub fn spawn(launch: Launch) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("child-keeper".into())
            .spawn(move || {
                // The sender lives in a static, so this loop runs until exit.
                while let Ok((launch, reply)) = rx.recv() {
                    let child = launch.command().and_then(|mut c| c.spawn());
                    let _ = reply.send(child);
                }
            })
            .expect("spawn the child-keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((launch, reply_tx))
        .map_err(|_| io::Error::other("child-keeper thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("child-keeper thread dropped the request"))?
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` with no standard input and its output captured, killed if
/// it is still running after `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let read_all = |mut pipe: Box<dyn io::Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped")));
    let status = match wait_timeout(&mut child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            child.wait().expect("wait")
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// SIGKILLs `child` and reaps it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = wait_timeout(child, Duration::from_secs(10));
}

/// Sends SIGTERM to `child` (through `kill(1)`: no `unsafe` here), waits up
/// to `grace` for it to exit, then SIGKILLs it.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if sent {
        if let Some(status) = wait_timeout(child, grace) {
            return Some(status);
        }
    }
    kill(child);
    None
}

/// Returns `n` distinct free TCP ports on 127.0.0.1.
///
/// Each port comes from binding port 0; ports handed out earlier in this
/// process are never handed out again, so parallel tests don't collide.
pub fn free_ports(n: usize) -> Vec<u16> {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..(n * 50 + 100) {
        if ports.len() == n {
            break;
        }
        let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if used.insert(port) {
            ports.push(port);
        }
        // Hold every listener until all are picked, so the OS can't hand
        // the same port out twice in this loop.
        held.push(l);
    }
    assert_eq!(ports.len(), n, "could not find {n} free ports");
    ports
}

/// A fresh temporary directory for one cluster, under
/// `$TMPDIR/ballast-tests/`. Its name carries this process's id, so
/// directories left by dead test processes (a shared cluster's is never
/// dropped) are removed the first time this is called in a process.
pub fn cluster_dir(label: &str) -> tempfile::TempDir {
    let root = std::env::temp_dir().join("ballast-tests");
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| sweep(&root));
    std::fs::create_dir_all(&root).expect("create the ballast-tests temp root");
    tempfile::Builder::new()
        .prefix(&format!("p{}-{label}-", std::process::id()))
        .tempdir_in(&root)
        .expect("create a cluster temp dir")
}

/// Removes `dir` once this test process has exited, from a small detached
/// `sh` that outlives it (for directories no destructor will remove, like a
/// shared cluster's). The sweep in [`cluster_dir`] is the fallback.
pub fn remove_dir_after_exit(dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; sleep 1; rm -rf -- \"$0\"",
        pid = std::process::id()
    );
    // Spawned directly, not by the keeper: it must survive this process.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn sweep(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix('p')
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every);
    }
}
