//! Container runtimes behind the pod workers: real processes
//! ([`process`], with per-pod namespaces from [`netns`]) or simulated
//! containers ([`sim`]). The workers see one
//! interface — sandbox, pull, start, adopt, probe, hook — and a
//! [`Running`] handle per container instance.

pub mod confine;
pub mod mounts;
pub mod netns;
pub mod process;
pub mod sim;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::env::ConfigMaps;
use crate::images::ImageConfig;

/// A pod's sandbox: its IP and (process runtime) its directory and the
/// namespaces its containers share ([`netns`]).
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub uid: String,
    pub ip: Ipv4Addr,
    pub dir: Option<PathBuf>,
    pub namespaces: Option<netns::PodNamespaces>,
}

/// How a container instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub finished_at: Timestamp,
    /// The terminated reason when not kubelet's `Completed`/`Error` by
    /// exit code (`OOMKilled`).
    pub reason: Option<&'static str>,
}

/// Which probe is running (for messages and for the sim runtime's answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// A probe's verdict; a failure carries kubelet's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    Failure(String),
}

/// The signals the kubelet sends to a container's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Kill,
}

/// Why a container could not be started (kubelet's reason and message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    pub reason: &'static str,
    pub message: String,
}

/// kubelet's `ErrCreateContainerConfig`: the container's config could not
/// be made, so nothing was created. The container stays waiting with this
/// reason and is tried again; it does not count as a restart.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

impl StartError {
    /// A [`CREATE_CONTAINER_CONFIG_ERROR`] with kubelet's message.
    pub fn config(message: String) -> StartError {
        StartError {
            reason: CREATE_CONTAINER_CONFIG_ERROR,
            message,
        }
    }

    /// Whether nothing was created (the container waits and is retried),
    /// rather than a created container that failed to start.
    pub fn is_config_error(&self) -> bool {
        self.reason == CREATE_CONTAINER_CONFIG_ERROR
    }
}

/// Everything the runtime needs to start one container instance.
#[derive(Debug)]
pub struct StartRequest<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ImageConfig,
    pub sandbox: &'a Sandbox,
    pub host_ip: &'a str,
    /// The ConfigMaps the container's environment refers to.
    pub config_maps: &'a ConfigMaps,
    /// The restart count of this instance.
    pub attempt: u32,
}

/// One running (or just exited) container instance.
#[derive(Debug)]
pub struct Running {
    /// `containerID` as the status shows it.
    pub id: String,
    pub started_at: Timestamp,
    pub attempt: u32,
    exit: watch::Receiver<Option<Exit>>,
    kind: RunningKind,
}

#[derive(Debug)]
enum RunningKind {
    Process(process::ProcessContainer),
    Sim(sim::SimContainer),
}

impl Running {
    /// Waits until the instance has exited.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.clone();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The waiter is gone without a verdict: treat as killed.
                return rx.borrow().clone().unwrap_or(Exit {
                    code: 137,
                    finished_at: Timestamp::now(),
                    reason: None,
                });
            }
        }
    }

    /// The exit, once the instance has ended.
    pub fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Sends `signal` to the whole container (its process group).
    pub fn signal(&self, signal: StopSignal) {
        if self.exited().is_some() {
            return;
        }
        match &self.kind {
            RunningKind::Process(p) => p.signal(signal),
            RunningKind::Sim(s) => s.signal(signal),
        }
    }
}

/// The runtime a kubelet uses for all its pods.
#[derive(Debug)]
pub enum Runtime {
    Process(process::ProcessRuntime),
    Sim(sim::SimRuntime),
}

impl Runtime {
    /// Creates (or finds again) the pod's sandbox.
    pub fn create_sandbox(&self, pod: &Pod) -> Result<Sandbox, String> {
        match self {
            Runtime::Process(r) => r.create_sandbox(pod),
            Runtime::Sim(r) => r.create_sandbox(pod),
        }
    }

    /// Releases the sandbox's IP and removes its directory.
    pub fn remove_sandbox(&self, sandbox: &Sandbox) {
        match self {
            Runtime::Process(r) => r.remove_sandbox(sandbox),
            Runtime::Sim(r) => r.remove_sandbox(sandbox),
        }
    }

    /// Whether `image` was pulled on this node already.
    pub fn image_present(&self, image: &str) -> bool {
        match self {
            Runtime::Process(r) => r.image_present(image),
            Runtime::Sim(r) => r.image_present(image),
        }
    }

    /// Pulls `image`; the error is the message of `Failed to pull image`.
    pub async fn pull(&self, pod: &Pod, image: &str) -> Result<ImageConfig, String> {
        match self {
            Runtime::Process(r) => r.pull(image),
            Runtime::Sim(r) => r.pull(pod, image).await,
        }
    }

    /// The image config of an image already present.
    pub fn image_config(&self, image: &str) -> Option<ImageConfig> {
        match self {
            Runtime::Process(r) => r.image_config(image),
            Runtime::Sim(_) => Some(sim::image_config(image)),
        }
    }

    /// Starts one container instance.
    pub async fn start(&self, req: StartRequest<'_>) -> Result<Running, StartError> {
        match self {
            Runtime::Process(r) => r.start(req),
            Runtime::Sim(r) => r.start(req).await,
        }
    }

    /// The container's last instance from before a kubelet restart, if
    /// its process still belongs to it (or its exit was recorded).
    pub fn adopt(&self, sandbox: &Sandbox, container: &str) -> Option<Running> {
        match self {
            Runtime::Process(r) => r.adopt(sandbox, container),
            Runtime::Sim(_) => None,
        }
    }

    /// Runs one probe against a running instance.
    pub async fn probe(
        &self,
        kind: ProbeKind,
        probe: &Probe,
        running: &Running,
        container: &Container,
    ) -> ProbeResult {
        match (&running.kind, self) {
            (RunningKind::Process(p), Runtime::Process(r)) => r.probe(probe, p, container).await,
            (RunningKind::Sim(s), _) => s.probe(kind),
            _ => ProbeResult::Failure("container from another runtime".into()),
        }
    }

    /// Runs a postStart/preStop handler; the error is kubelet's message.
    pub async fn hook(
        &self,
        handler: &LifecycleHandler,
        running: &Running,
        container: &Container,
        pod_label: &str,
        post_start: bool,
    ) -> Result<(), String> {
        match &running.kind {
            RunningKind::Process(p) => match self {
                Runtime::Process(r) => r.hook(handler, p, container, pod_label).await,
                Runtime::Sim(_) => Ok(()),
            },
            RunningKind::Sim(s) => s.hook(post_start),
        }
    }

    /// The termination message of an exited instance (file, or the log's
    /// tail under `FallbackToLogsOnError` when it failed).
    pub fn termination_message(
        &self,
        running: &Running,
        container: &Container,
        code: i32,
    ) -> Option<String> {
        match &running.kind {
            RunningKind::Process(p) => p.termination_message(container, code),
            RunningKind::Sim(_) => None,
        }
    }

    /// A sandbox's readiness delay the sim runtime imposes without a probe.
    pub fn implicit_ready_delay(&self, running: &Running) -> Option<std::time::Duration> {
        match &running.kind {
            RunningKind::Sim(s) => s.ready_delay(),
            RunningKind::Process(_) => None,
        }
    }
}
