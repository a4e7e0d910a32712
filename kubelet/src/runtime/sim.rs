//! The sim runtime: containers are timers, so one process can host
//! thousands of pods on a thousand nodes. The pod workers are the same as
//! for real processes; only what a container does is simulated.
//!
//! Per pod, through annotations (all optional; every container of the pod
//! behaves alike):
//!
//! | Annotation | Meaning | Default |
//! |---|---|---|
//! | `sim.ballast.dev/pull-ms` | how long an image pull takes | 0 |
//! | `sim.ballast.dev/pull-error` | `"true"`: every pull fails (`ErrImagePull`) | pulls succeed |
//! | `sim.ballast.dev/start-ms` | how long a container takes to start | random 10–50 ms |
//! | `sim.ballast.dev/run-ms` | the container exits after running this long | runs until stopped |
//! | `sim.ballast.dev/exit-code` | its exit code then (alone: exits at once) | 0 |
//! | `sim.ballast.dev/ready-after-ms` | readiness probes (or, with none, readiness itself) wait this long | ready at start |
//! | `sim.ballast.dev/liveness-fail-after-ms` | liveness probes fail after this long | succeed |
//! | `sim.ballast.dev/startup-fail` | `"true"`: startup probes fail | succeed |
//! | `sim.ballast.dev/post-start-fail` | `"true"`: postStart hooks fail | succeed |
//! | `sim.ballast.dev/ignore-sigterm` | `"true"`: only SIGKILL stops it (exit 137) | SIGTERM → exit 0 |
//!
//! Sim containers have no output; their logs are empty.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{
    Exit, ProbeKind, ProbeResult, Running, RunningKind, Sandbox, StartError, StartRequest,
    StopSignal,
};
use crate::images::{self, ImageConfig};
use crate::ipam::Allocator;

const PREFIX: &str = "sim.ballast.dev/";

/// The simulated runtime of one node.
#[derive(Debug)]
pub struct SimRuntime {
    ipam: Allocator,
    pulled: Mutex<std::collections::HashSet<String>>,
}

/// What a sim pod's containers do, from its annotations.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    pull_ms: u64,
    pull_error: bool,
    start_ms: Option<u64>,
    run_ms: Option<u64>,
    exit_code: Option<i32>,
    ready_after_ms: Option<u64>,
    liveness_fail_after_ms: Option<u64>,
    startup_fail: bool,
    post_start_fail: bool,
    ignore_sigterm: bool,
}

impl Behaviour {
    fn of(pod: &Pod) -> Behaviour {
        let empty = BTreeMap::new();
        let a = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        let get = |k: &str| a.get(&format!("{PREFIX}{k}"));
        let num = |k: &str| get(k).and_then(|v| v.trim().parse::<u64>().ok());
        let flag = |k: &str| get(k).is_some_and(|v| v.trim() == "true");
        Behaviour {
            pull_ms: num("pull-ms").unwrap_or(0),
            pull_error: flag("pull-error"),
            start_ms: num("start-ms"),
            run_ms: num("run-ms"),
            exit_code: get("exit-code").and_then(|v| v.trim().parse().ok()),
            ready_after_ms: num("ready-after-ms"),
            liveness_fail_after_ms: num("liveness-fail-after-ms"),
            startup_fail: flag("startup-fail"),
            post_start_fail: flag("post-start-fail"),
            ignore_sigterm: flag("ignore-sigterm"),
        }
    }
}

/// A sim container's handle.
#[derive(Debug)]
pub struct SimContainer {
    behaviour: Behaviour,
    started: Instant,
    signals: mpsc::UnboundedSender<StopSignal>,
}

/// The config of any image in the sim runtime (every image exists).
pub fn image_config(image: &str) -> ImageConfig {
    ImageConfig {
        name: images::normalize(image),
        entrypoint: vec![],
        cmd: vec![],
        env: vec![],
    }
}

impl SimRuntime {
    pub fn new(ipam: Allocator) -> SimRuntime {
        SimRuntime {
            ipam,
            pulled: Mutex::new(Default::default()),
        }
    }

    pub fn create_sandbox(&self, pod: &Pod) -> Result<Sandbox, String> {
        let uid = pod.metadata.uid.clone().ok_or("pod has no uid")?;
        // A pod re-seen after a kubelet restart keeps the IP it reported.
        let known: Option<Ipv4Addr> = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let ip = match known {
            Some(ip) => {
                self.ipam.reserve(ip);
                ip
            }
            None => self
                .ipam
                .allocate()
                .ok_or_else(|| format!("no free pod IP left in {}", self.ipam.cidr()))?,
        };
        Ok(Sandbox {
            uid,
            ip,
            dir: None,
            namespaces: None,
        })
    }

    pub fn remove_sandbox(&self, sandbox: &Sandbox) {
        self.ipam.release(sandbox.ip);
    }

    pub fn image_present(&self, image: &str) -> bool {
        self.pulled
            .lock()
            .expect("pulled lock")
            .contains(&images::normalize(image))
    }

    pub async fn pull(&self, pod: &Pod, image: &str) -> Result<ImageConfig, String> {
        let b = Behaviour::of(pod);
        if b.pull_ms > 0 {
            tokio::time::sleep(Duration::from_millis(b.pull_ms)).await;
        }
        if b.pull_error {
            return Err(format!(
                "image {image:?} not found (sim.ballast.dev/pull-error)"
            ));
        }
        self.pulled
            .lock()
            .expect("pulled lock")
            .insert(images::normalize(image));
        Ok(image_config(image))
    }

    pub async fn start(&self, req: StartRequest<'_>) -> Result<Running, StartError> {
        // The environment is made as for a real container, so a bad
        // reference is a CreateContainerConfigError here too.
        crate::env::container_env(
            req.pod,
            req.container,
            req.image,
            &req.sandbox.ip.to_string(),
            req.host_ip,
            req.config_maps,
        )
        .map_err(StartError::config)?;
        let b = Behaviour::of(req.pod);
        let start_ms = b.start_ms.unwrap_or_else(|| rand::random_range(10..=50));
        tokio::time::sleep(Duration::from_millis(start_ms)).await;
        let (tx, rx) = watch::channel(None);
        let (sig_tx, mut sig_rx) = mpsc::unbounded_channel();
        let run = (b.run_ms.is_some() || b.exit_code.is_some()).then(|| {
            (
                Duration::from_millis(b.run_ms.unwrap_or(0)),
                b.exit_code.unwrap_or(0),
            )
        });
        let ignore_term = b.ignore_sigterm;
        tokio::spawn(async move {
            let natural = async {
                match run {
                    Some((after, code)) => {
                        tokio::time::sleep(after).await;
                        code
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(natural);
            let code = loop {
                tokio::select! {
                    code = &mut natural => break code,
                    sig = sig_rx.recv() => match sig {
                        Some(StopSignal::Kill) | None => break 137,
                        Some(StopSignal::Term) if !ignore_term => break 0,
                        Some(StopSignal::Term) => {}
                    },
                }
            };
            let _ = tx.send(Some(Exit {
                code,
                finished_at: Timestamp::now(),
                reason: None,
            }));
        });
        Ok(Running {
            id: format!(
                "sim://{}-{}-{}",
                &req.sandbox.uid[..req.sandbox.uid.len().min(8)],
                req.container.name,
                req.attempt
            ),
            started_at: Timestamp::now(),
            attempt: req.attempt,
            exit: rx,
            kind: RunningKind::Sim(SimContainer {
                behaviour: b,
                started: Instant::now(),
                signals: sig_tx,
            }),
        })
    }
}

impl SimContainer {
    pub(super) fn signal(&self, signal: StopSignal) {
        let _ = self.signals.send(signal);
    }

    pub(super) fn probe(&self, kind: ProbeKind) -> ProbeResult {
        let ran = self.started.elapsed();
        let after = |ms: Option<u64>| ms.is_some_and(|ms| ran >= Duration::from_millis(ms));
        match kind {
            ProbeKind::Startup if self.behaviour.startup_fail => {
                ProbeResult::Failure("simulated startup failure".into())
            }
            ProbeKind::Readiness if !after(self.behaviour.ready_after_ms.or(Some(0))) => {
                ProbeResult::Failure("simulated: not ready yet".into())
            }
            ProbeKind::Liveness if after(self.behaviour.liveness_fail_after_ms) => {
                ProbeResult::Failure("simulated liveness failure".into())
            }
            _ => ProbeResult::Success,
        }
    }

    pub(super) fn hook(&self, post_start: bool) -> Result<(), String> {
        if post_start && self.behaviour.post_start_fail {
            return Err("simulated postStart failure".into());
        }
        Ok(())
    }

    pub(super) fn ready_delay(&self) -> Option<Duration> {
        self.behaviour.ready_after_ms.map(Duration::from_millis)
    }
}
