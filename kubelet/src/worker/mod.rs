//! Pod workers: one task per pod, following the Kubernetes pod lifecycle.
//!
//! ```text
//! sandbox (pod IP) → image pull per imagePullPolicy (ErrImagePull → ImagePullBackOff)
//!   → each container's config before it is created (CreateContainerConfigError:
//!     waiting, not a restart, tried again until it can be made)
//!   → init containers, one at a time, in order (retried per restartPolicy);
//!     a native sidecar (`restartPolicy: Always`) is started, and the next
//!     one waits until it has started (postStart done, startupProbe passed);
//!     it keeps running, restarted with back-off, next to the app containers
//!   → app containers, each: start → postStart hook (Running after it)
//!        → startupProbe → livenessProbe + readinessProbe → exit → restart
//!          per restartPolicy with back-off (CrashLoopBackOff); an image
//!          changed in the spec restarts the container with the new image
//!   → all app containers done (Never/OnFailure): sidecars stopped, last
//!     first; the phase follows the app containers
//! activeDeadlineSeconds past startTime → every container killed, Failed
//!   with reason DeadlineExceeded
//! deletionTimestamp → preStop, SIGTERM, grace period, SIGKILL (app
//!   containers, then sidecars in reverse order) → final status
//!   → DELETE with gracePeriodSeconds=0 and a uid precondition
//! pod gone from the watch → kill at once
//! ```
//!
//! The worker keeps a [`state::PodState`]; a status task turns it into a
//! PodStatus and writes it through `pods/status` when it changed.

pub mod backoff;
pub mod state;
mod status;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ballast_controllers::events::{reference, EventType, Recorder};
use ballast_controllers::informer::Cache;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectReference, Pod, Probe, Secret, Service,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::Client;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::config::KubeletConfig;
use crate::env::{self, ConfigMaps};
use crate::images::ImageConfig;
use crate::runtime::{
    ProbeKind, ProbeResult, Running, Runtime, Sandbox, StartError, StartRequest, StopSignal,
    CREATE_CONTAINER_CONFIG_ERROR,
};
use backoff::{go_duration, Backoff};
use state::{CState, PodState};
use status::StatusSync;

/// What every worker of one node shares.
pub struct NodeCtx {
    pub name: String,
    pub client: Client,
    pub config: Arc<KubeletConfig>,
    pub runtime: Runtime,
    pub recorder: Option<Recorder>,
    pub host_ip: String,
    /// The Services the containers' Service variables come from.
    pub services: Cache<Service>,
}

/// One event about a pod, queued for publishing.
struct PendingEvent {
    field: Option<String>,
    kind: EventType,
    reason: String,
    message: String,
}

/// Publishes a pod's events in order, off the worker's path: one queue
/// and task per pod, so pods do not wait on each other.
fn event_queue(
    recorder: Option<Recorder>,
    pod: &Pod,
) -> Option<mpsc::UnboundedSender<PendingEvent>> {
    let recorder = recorder?;
    let regarding = reference(pod);
    let (tx, mut rx) = mpsc::unbounded_channel::<PendingEvent>();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let mut r = regarding.clone();
            r.field_path = e.field;
            recorder
                .publish_about(r, e.kind, &e.reason, &e.message)
                .await;
        }
    });
    Some(tx)
}

/// Why a worker stopped running its pod.
enum Stop {
    /// `deletionTimestamp` is set: terminate gracefully, then delete.
    Deleted(Arc<Pod>),
    /// The pod is gone from the apiserver: kill at once.
    Vanished,
    /// The kubelet is shutting down.
    Shutdown,
}

/// Which container of the pod.
#[derive(Debug, Clone, Copy)]
enum Which {
    Init(usize),
    /// A native sidecar: init container `i` with `restartPolicy: Always`.
    Sidecar(usize),
    App(usize),
}

/// How one container instance ended, for the restart decision.
struct Ran {
    code: i32,
    /// How long it ran (resets the back-off after 10 minutes).
    ran: Duration,
    /// Killed because its image changed in the spec: restarted at once,
    /// whatever the restart policy.
    spec_changed: bool,
}

/// Whether `c` is a native sidecar.
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Drives the sidecars' run loops; never returns (a sidecar's loop never
/// ends, and an empty set waits forever).
async fn drive<F: Future<Output = ()>>(sidecars: &mut FuturesUnordered<F>) -> Infallible {
    loop {
        if sidecars.next().await.is_none() {
            return std::future::pending().await;
        }
    }
}

/// kubelet's `activeDeadlineSeconds` verdict.
const DEADLINE_REASON: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// One pod's worker.
pub struct PodWorker {
    ctx: Arc<NodeCtx>,
    pod: Arc<Pod>,
    pod_rx: watch::Receiver<Option<Arc<Pod>>>,
    shutdown: watch::Receiver<bool>,
    state: Arc<Mutex<PodState>>,
    notify: Arc<Notify>,
    sync: Arc<StatusSync>,
    sandbox: OnceLock<Sandbox>,
    /// The live instance of each container, by name, so termination can
    /// reach them after the lifecycle future is dropped.
    running: Mutex<HashMap<String, Arc<Running>>>,
    events: Option<mpsc::UnboundedSender<PendingEvent>>,
    /// Ticks on every state change, for waits on the state (a sidecar
    /// started); `notify` is the status writer's alone.
    changed: watch::Sender<()>,
}

impl PodWorker {
    pub fn new(
        ctx: Arc<NodeCtx>,
        pod: Arc<Pod>,
        pod_rx: watch::Receiver<Option<Arc<Pod>>>,
        shutdown: watch::Receiver<bool>,
    ) -> PodWorker {
        let spec = pod.spec.clone().unwrap_or_default();
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        let state = PodState {
            init: spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| CState {
                    sidecar: is_sidecar(c),
                    ..CState::new(&c.name, c.image.as_deref().unwrap_or_default())
                })
                .collect(),
            app: spec
                .containers
                .iter()
                .map(|c| {
                    let mut s = CState::new(&c.name, c.image.as_deref().unwrap_or_default());
                    if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
                        s.state = state::waiting("PodInitializing", None);
                    }
                    s
                })
                .collect(),
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            pod_ip: None,
            host_ip: ctx.host_ip.clone(),
            start_time,
            initialized: spec.init_containers.as_ref().is_none_or(|i| i.is_empty()),
            terminal: None,
            reason: None,
        };
        let api: Api<Pod> = Api::namespaced(
            ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let sync = Arc::new(StatusSync::new(
            api,
            pod.metadata.name.clone().unwrap_or_default(),
        ));
        let events = event_queue(ctx.recorder.clone(), &pod);
        PodWorker {
            ctx,
            pod,
            pod_rx,
            shutdown,
            state: Arc::new(Mutex::new(state)),
            notify: Arc::new(Notify::new()),
            sync,
            sandbox: OnceLock::new(),
            running: Mutex::new(HashMap::new()),
            events,
            changed: watch::channel(()).0,
        }
    }

    /// Runs the pod until it is deleted, vanishes, or the kubelet stops.
    pub async fn run(self) {
        let writer = tokio::spawn(status::writer(
            self.sync.clone(),
            self.state.clone(),
            self.notify.clone(),
        ));
        let phase = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let finished = phase == "Succeeded" || phase == "Failed";
        let stop = if finished || self.pod.metadata.deletion_timestamp.is_some() {
            // Nothing to (re)start: a finished pod keeps its reported status.
            if finished {
                writer.abort();
            }
            self.wait_stop().await
        } else {
            tokio::select! {
                () = self.lifecycle() => self.wait_stop().await,
                stop = self.wait_stop() => stop,
                () = self.active_deadline() => {
                    self.deadline_exceeded().await;
                    self.wait_stop().await
                }
            }
        };
        match stop {
            Stop::Deleted(pod) => {
                self.terminate(&pod, None).await;
                if !finished {
                    self.sync.flush(&self.state).await;
                }
                writer.abort();
                self.final_delete(&pod).await;
                self.remove_sandbox();
            }
            Stop::Vanished => {
                writer.abort();
                for r in self.live() {
                    r.signal(StopSignal::Kill);
                }
                self.remove_sandbox();
            }
            Stop::Shutdown => {
                writer.abort();
                if self.ctx.config.stop_containers_on_exit {
                    let live = self.live();
                    for r in &live {
                        r.signal(StopSignal::Term);
                    }
                    let grace = self.ctx.config.shutdown_grace;
                    let all = join_all(live.iter().map(|r| r.wait()));
                    if tokio::time::timeout(grace, all).await.is_err() {
                        for r in &live {
                            r.signal(StopSignal::Kill);
                        }
                    }
                }
            }
        }
    }

    fn live(&self) -> Vec<Arc<Running>> {
        self.running
            .lock()
            .expect("running lock")
            .values()
            .cloned()
            .collect()
    }

    fn remove_sandbox(&self) {
        match self.sandbox.get() {
            Some(sandbox) => self.ctx.runtime.remove_sandbox(sandbox),
            None => {
                if let (Runtime::Process(p), Some(uid)) =
                    (&self.ctx.runtime, &self.pod.metadata.uid)
                {
                    let dir = p.pod_dir(uid);
                    if dir.exists() {
                        p.destroy_orphan(&dir);
                    }
                }
            }
        }
    }

    fn pod_label(&self) -> String {
        format!(
            "{}_{}({})",
            self.pod.metadata.name.as_deref().unwrap_or_default(),
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.pod.metadata.uid.as_deref().unwrap_or_default()
        )
    }

    /// Waits for a deletion, the pod's disappearance or the shutdown.
    async fn wait_stop(&self) -> Stop {
        let mut pod_rx = self.pod_rx.clone();
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow_and_update() {
                return Stop::Shutdown;
            }
            let current = pod_rx.borrow_and_update().clone();
            match current {
                None => return Stop::Vanished,
                Some(p) if p.metadata.deletion_timestamp.is_some() => return Stop::Deleted(p),
                Some(p) => {
                    if self.sync.observe(&p) {
                        self.notify.notify_one();
                    }
                }
            }
            tokio::select! {
                r = pod_rx.changed() => if r.is_err() { return Stop::Shutdown },
                r = shutdown.changed() => if r.is_err() { return Stop::Shutdown },
            }
        }
    }

    fn update<R>(&self, f: impl FnOnce(&mut PodState) -> R) -> R {
        let r = f(&mut self.state.lock().expect("pod state lock"));
        self.notify.notify_one();
        self.changed.send_replace(());
        r
    }

    fn update_c<R>(&self, which: Which, f: impl FnOnce(&mut CState) -> R) -> R {
        self.update(|s| match which {
            Which::Init(i) | Which::Sidecar(i) => f(&mut s.init[i]),
            Which::App(i) => f(&mut s.app[i]),
        })
    }

    fn read_c<R>(&self, which: Which, f: impl FnOnce(&CState) -> R) -> R {
        let s = self.state.lock().expect("pod state lock");
        match which {
            Which::Init(i) | Which::Sidecar(i) => f(&s.init[i]),
            Which::App(i) => f(&s.app[i]),
        }
    }

    /// The container's image in the newest spec the watch delivered (pod
    /// updates may change images, nothing else of a container).
    fn current_image(&self, which: Which, c: &Container) -> String {
        let latest = self.pod_rx.borrow().clone();
        let spec = latest.as_ref().and_then(|p| p.spec.as_ref());
        let list = match which {
            Which::App(_) => spec.map(|s| s.containers.as_slice()),
            Which::Init(_) | Which::Sidecar(_) => spec.and_then(|s| s.init_containers.as_deref()),
        };
        list.into_iter()
            .flatten()
            .find(|x| x.name == c.name)
            .and_then(|x| x.image.clone())
            .or_else(|| c.image.clone())
            .unwrap_or_default()
    }

    /// Resolves once the spec's image for `c` differs from `image`.
    async fn image_changed(&self, which: Which, c: &Container, image: &str) {
        let mut rx = self.pod_rx.clone();
        loop {
            if self.current_image(which, c) != image {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Sleeps `delay`, or less when `c`'s image changes meanwhile.
    async fn sleep_unless_image_changes(
        &self,
        which: Which,
        c: &Container,
        image: &str,
        delay: Duration,
    ) {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.image_changed(which, c, image) => {}
        }
    }

    /// Waits until sidecar `i` has started.
    async fn sidecar_started(&self, i: usize) {
        let mut rx = self.changed.subscribe();
        while !self.read_c(Which::Sidecar(i), |cs| cs.started) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves once `activeDeadlineSeconds` (read from the newest spec:
    /// it may be set or lowered on a running pod) has passed since the
    /// pod's `startTime`.
    async fn active_deadline(&self) {
        let mut rx = self.pod_rx.clone();
        let start = self.state.lock().expect("pod state lock").start_time;
        loop {
            let secs = rx
                .borrow_and_update()
                .as_ref()
                .and_then(|p| p.spec.as_ref()?.active_deadline_seconds);
            let wait = secs.map(|secs| {
                let elapsed = Timestamp::now().duration_since(start).as_millis().max(0) as u64;
                let limit = u64::try_from(secs).unwrap_or(0).saturating_mul(1000);
                Duration::from_millis(limit.saturating_sub(elapsed)).min(MAX_GRACE)
            });
            match wait {
                Some(d) if d.is_zero() => return,
                Some(d) => tokio::select! {
                    () = tokio::time::sleep(d) => return,
                    r = rx.changed() => if r.is_err() { return std::future::pending().await },
                },
                None => {
                    if rx.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }

    /// kubelet's active deadline handling: the event, every container
    /// killed with the pod's grace period, then phase Failed with reason
    /// `DeadlineExceeded` (reported once the containers have stopped).
    async fn deadline_exceeded(&self) {
        self.pod_event(
            None,
            EventType::Normal,
            DEADLINE_REASON,
            DEADLINE_MESSAGE.into(),
        );
        let pod = self.pod_rx.borrow().clone().unwrap_or(self.pod.clone());
        self.terminate(&pod, Some((DEADLINE_REASON, DEADLINE_MESSAGE)))
            .await;
    }

    fn pod_event(&self, field: Option<String>, kind: EventType, reason: &str, message: String) {
        if let Some(q) = &self.events {
            let _ = q.send(PendingEvent {
                field,
                kind,
                reason: reason.to_string(),
                message,
            });
        }
    }

    fn event(&self, which: Which, c: &Container, kind: EventType, reason: &str, message: String) {
        let field = match which {
            Which::Init(_) | Which::Sidecar(_) => format!("spec.initContainers{{{}}}", c.name),
            Which::App(_) => format!("spec.containers{{{}}}", c.name),
        };
        self.pod_event(Some(field), kind, reason, message);
    }

    /// The pod's whole life up to a terminal phase.
    async fn lifecycle(&self) {
        let pod = self.pod.clone();
        let sandbox = loop {
            let made = self
                .ctx
                .runtime
                .create_sandbox(&pod)
                .and_then(|s| self.write_pod_files(&pod, &s).map(|()| s));
            match made {
                Ok(s) => break s,
                Err(e) => {
                    self.pod_event(
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        let sandbox = self.sandbox.get_or_init(|| sandbox).clone();
        self.update(|s| s.pod_ip = Some(sandbox.ip.to_string()));
        let _volumes = self.mount_volumes(&pod, &sandbox).await;
        let spec = pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let apps = spec.containers.clone();
        // Instances that outlived a kubelet restart.
        let mut adopted: HashMap<String, Running> = inits
            .iter()
            .chain(apps.iter())
            .filter_map(|c| Some((c.name.clone(), self.ctx.runtime.adopt(&sandbox, &c.name)?)))
            .collect();
        self.restore_counts(&adopted);
        let apps_started = apps.iter().any(|c| adopted.contains_key(&c.name));
        // The sidecars' run loops, driven alongside whatever runs next.
        let mut sidecars = FuturesUnordered::new();
        if !apps_started {
            for (i, c) in inits.iter().enumerate() {
                let a = adopted.remove(&c.name);
                if is_sidecar(c) {
                    sidecars.push(self.run_restarting(Which::Sidecar(i), c, a));
                    tokio::select! {
                        () = self.sidecar_started(i) => {}
                        never = drive(&mut sidecars) => match never {},
                    }
                    continue;
                }
                let ok = tokio::select! {
                    ok = self.run_init(i, c, a) => ok,
                    never = drive(&mut sidecars) => match never {},
                };
                if !ok {
                    drop(sidecars);
                    self.stop_sidecars(&inits).await;
                    self.update(|s| s.terminal = Some("Failed"));
                    return;
                }
            }
        } else {
            for (i, c) in inits.iter().enumerate().filter(|(_, c)| is_sidecar(c)) {
                sidecars.push(self.run_restarting(Which::Sidecar(i), c, adopted.remove(&c.name)));
            }
            self.update(|s| {
                for c in s.init.iter_mut().filter(|c| !c.sidecar) {
                    if c.state.terminated.is_none() {
                        c.state = state::terminated(
                            0,
                            None,
                            None,
                            Timestamp::now(),
                            None,
                            c.container_id.clone(),
                        );
                    }
                }
            });
        }
        self.update(|s| {
            s.initialized = true;
            for c in &mut s.app {
                if c.instances == 0 {
                    c.state = state::waiting("ContainerCreating", None);
                }
            }
        });
        let apps_done = join_all(
            apps.iter()
                .enumerate()
                .map(|(i, c)| self.run_restarting(Which::App(i), c, adopted.remove(&c.name))),
        );
        tokio::select! {
            _ = apps_done => {}
            never = drive(&mut sidecars) => match never {},
        }
        // Every app container is done for good (Never/OnFailure): the
        // sidecars' loops stop here, and the sidecars themselves, last
        // first.
        drop(sidecars);
        self.stop_sidecars(&inits).await;
    }

    /// Stops the running sidecars in reverse order, each with the pod's
    /// grace period, and records how they ended.
    async fn stop_sidecars(&self, inits: &[Container]) {
        let grace = self.termination_grace(&self.pod);
        for (i, c) in inits
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, c)| is_sidecar(c))
        {
            let live = self.running.lock().expect("running lock").remove(&c.name);
            let Some(r) = live else {
                continue;
            };
            self.stop_container(Which::Sidecar(i), c, &r, grace, true)
                .await;
            let exit = r.wait().await;
            self.update_c(Which::Sidecar(i), |cs| {
                cs.state = state::terminated(
                    exit.code,
                    exit.reason,
                    Some(r.started_at),
                    exit.finished_at,
                    None,
                    Some(r.id.clone()),
                );
                cs.ready = false;
                cs.started = false;
            });
        }
    }

    /// Writes the pod's resolv.conf and hosts file into its directory
    /// (process runtime; see [`crate::dns`]) and records the events the
    /// DNS configurer asks for; the error fails the sandbox, as kubelet's
    /// sandbox config does.
    fn write_pod_files(&self, pod: &Pod, sandbox: &Sandbox) -> Result<(), String> {
        let Some(dir) = &sandbox.dir else {
            return Ok(());
        };
        let configurer = self.ctx.config.dns();
        let notices = crate::dns::write_pod_files(&configurer, pod, &sandbox.ip.to_string(), dir)?;
        for n in notices {
            if !n.about_node {
                self.pod_event(None, EventType::Warning, n.reason, n.message);
                continue;
            }
            let Some(recorder) = self.ctx.recorder.clone() else {
                continue;
            };
            // kubelet's node reference: the node's name as its uid.
            let node = ObjectReference {
                kind: Some("Node".into()),
                name: Some(self.ctx.name.clone()),
                uid: Some(self.ctx.name.clone()),
                ..Default::default()
            };
            tokio::spawn(async move {
                recorder
                    .publish_about(node, EventType::Warning, n.reason, &n.message)
                    .await;
            });
        }
        Ok(())
    }

    /// Sets up the pod's volumes before any container starts (kubelet's
    /// `WaitForAttachAndMount`), retrying with a `FailedMount` event until
    /// they are, and keeps them synced while the returned guard lives. Only
    /// the process runtime of a root kubelet mounts volumes.
    async fn mount_volumes(&self, pod: &Pod, sandbox: &Sandbox) -> Option<crate::volumes::Resync> {
        let dir = sandbox.dir.as_ref()?;
        let has_volumes = pod
            .spec
            .as_ref()
            .is_some_and(|s| s.volumes.as_ref().is_some_and(|v| !v.is_empty()));
        if !matches!(&self.ctx.runtime, Runtime::Process(p) if p.mounts_volumes())
            || !has_volumes
            || !crate::runtime::confine::can_switch_user()
        {
            return None;
        }
        let config = &self.ctx.config;
        let allocatable = (
            ballast_controllers::scheduler::parse_milli(&config.cpu).unwrap_or(0),
            ballast_controllers::scheduler::parse_units(&config.memory).unwrap_or(0),
        );
        let volumes = Arc::new(crate::volumes::PodVolumes::new(
            self.ctx.client.clone(),
            pod,
            dir,
            &self.ctx.host_ip,
            allocatable,
        ));
        while let Err(e) = volumes.sync().await {
            self.pod_event(None, EventType::Warning, "FailedMount", e);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Some(volumes.keep_synced(self.pod_rx.clone()))
    }

    /// Restores restart counts and last states of adopted containers from
    /// the status the previous kubelet reported.
    fn restore_counts(&self, adopted: &HashMap<String, Running>) {
        let reported = self.pod.status.clone().unwrap_or_default();
        let all_reported: Vec<_> = reported
            .init_container_statuses
            .unwrap_or_default()
            .into_iter()
            .chain(reported.container_statuses.unwrap_or_default())
            .collect();
        self.update(|s| {
            for c in s.init.iter_mut().chain(s.app.iter_mut()) {
                let Some(r) = adopted.get(&c.name) else {
                    continue;
                };
                c.instances = r.attempt + 1;
                c.container_id = Some(r.id.clone());
                c.state = state::running(r.started_at);
                if let Some(prev) = all_reported.iter().find(|p| p.name == c.name) {
                    c.last_state = prev.last_state.clone().filter(|l| l.terminated.is_some());
                    c.image_id = prev.image_id.clone();
                }
            }
        });
    }

    /// Runs init container `i` until it succeeds; false when it failed for
    /// good (`restartPolicy: Never`).
    async fn run_init(&self, i: usize, c: &Container, mut adopted: Option<Running>) -> bool {
        let cfg = &self.ctx.config;
        let mut backoff = Backoff::restarts(cfg.backoff_base, cfg.backoff_max);
        loop {
            let Ran { code, ran, .. } = self.run_once(Which::Init(i), c, adopted.take()).await;
            if code == 0 {
                return true;
            }
            if self.state.lock().expect("pod state lock").restart_policy == "Never" {
                return false;
            }
            self.back_off(Which::Init(i), c, &mut backoff, ran).await;
        }
    }

    /// Runs an app container (restarted per the pod's restart policy) or
    /// a sidecar (always restarted); a spec change restarts it at once.
    async fn run_restarting(&self, which: Which, c: &Container, mut adopted: Option<Running>) {
        let cfg = &self.ctx.config;
        let mut backoff = Backoff::restarts(cfg.backoff_base, cfg.backoff_max);
        loop {
            let ran = self.run_once(which, c, adopted.take()).await;
            if ran.spec_changed {
                self.update_c(which, |cs| cs.last_state = Some(cs.state.clone()));
                continue;
            }
            let policy = self
                .state
                .lock()
                .expect("pod state lock")
                .restart_policy
                .clone();
            let restart = match (which, policy.as_str()) {
                (Which::Sidecar(_), _) => true,
                (_, "Never") => false,
                (_, "OnFailure") => ran.code != 0,
                _ => true,
            };
            if !restart {
                return;
            }
            self.back_off(which, c, &mut backoff, ran.ran).await;
        }
    }

    async fn back_off(&self, which: Which, c: &Container, backoff: &mut Backoff, ran: Duration) {
        let delay = backoff.next(ran);
        if delay.is_zero() {
            // The first restart is immediate: no CrashLoopBackOff.
            self.update_c(which, |cs| cs.last_state = Some(cs.state.clone()));
            return;
        }
        let label = self.pod_label();
        self.update_c(which, |cs| {
            cs.last_state = Some(cs.state.clone());
            cs.state = state::waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {} restarting failed container={} pod={label}",
                    go_duration(delay),
                    c.name
                )),
            );
        });
        self.event(
            which,
            c,
            EventType::Warning,
            "BackOff",
            format!(
                "Back-off restarting failed container {} in pod {label}",
                c.name
            ),
        );
        let image = self.read_c(which, |cs| cs.image.clone());
        self.sleep_unless_image_changes(which, c, &image, delay)
            .await;
    }

    /// Pulls the container's image (the newest spec's) per its
    /// imagePullPolicy, retrying with back-off (ErrImagePull, then
    /// ImagePullBackOff; ErrImageNeverPull under `Never`) until it is
    /// there; a new image in the spec starts over without back-off.
    async fn ensure_image(&self, which: Which, c: &Container) -> ImageConfig {
        let cfg = &self.ctx.config;
        let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max);
        let rt = &self.ctx.runtime;
        let mut last_image = None;
        loop {
            let image = self.current_image(which, c);
            if last_image.as_ref() != Some(&image) {
                backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max);
                last_image = Some(image.clone());
            }
            let policy = c
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| default_pull_policy(&image).into());
            let present = rt.image_present(&image);
            if policy == "Never" || (policy == "IfNotPresent" && present) {
                if let Some(config) = rt.image_config(&image).filter(|_| present) {
                    self.event(
                        which,
                        c,
                        EventType::Normal,
                        "Pulled",
                        format!("Container image {image:?} already present on machine"),
                    );
                    self.update_c(which, |cs| {
                        cs.image = image.clone();
                        cs.image_id = format!("ballast.dev/images/{}", config.name)
                    });
                    return config;
                }
                let msg =
                    format!("Container image {image:?} is not present with pull policy of Never");
                self.update_c(which, |cs| {
                    cs.state = state::waiting("ErrImageNeverPull", Some(msg.clone()))
                });
                self.event(which, c, EventType::Warning, "ErrImageNeverPull", msg);
                let delay = backoff.next(Duration::ZERO);
                self.sleep_unless_image_changes(which, c, &image, delay)
                    .await;
                continue;
            }
            self.event(
                which,
                c,
                EventType::Normal,
                "Pulling",
                format!("Pulling image {image:?}"),
            );
            let t0 = Instant::now();
            match rt.pull(&self.pod, &image).await {
                Ok(config) => {
                    let took = go_duration(t0.elapsed());
                    self.event(
                        which,
                        c,
                        EventType::Normal,
                        "Pulled",
                        format!("Successfully pulled image {image:?} in {took} ({took} including waiting). Image size: 0 bytes."),
                    );
                    self.update_c(which, |cs| {
                        cs.image = image.clone();
                        cs.image_id = format!("ballast.dev/images/{}", config.name)
                    });
                    return config;
                }
                Err(e) => {
                    self.update_c(which, |cs| {
                        cs.state = state::waiting("ErrImagePull", Some(e.clone()))
                    });
                    self.event(
                        which,
                        c,
                        EventType::Warning,
                        "Failed",
                        format!("Failed to pull image {image:?}: {e}"),
                    );
                    self.event(
                        which,
                        c,
                        EventType::Warning,
                        "Failed",
                        "Error: ErrImagePull".into(),
                    );
                    // Let ErrImagePull be seen before the back-off starts.
                    self.sync.flush(&self.state).await;
                    let delay = backoff.next(Duration::ZERO);
                    self.update_c(which, |cs| {
                        cs.state = state::waiting(
                            "ImagePullBackOff",
                            Some(format!(
                                "Back-off pulling image {image:?}: ErrImagePull: {e}"
                            )),
                        )
                    });
                    self.event(
                        which,
                        c,
                        EventType::Normal,
                        "BackOff",
                        format!("Back-off pulling image {image:?}"),
                    );
                    self.event(
                        which,
                        c,
                        EventType::Warning,
                        "Failed",
                        "Error: ImagePullBackOff".into(),
                    );
                    self.sleep_unless_image_changes(which, c, &image, delay)
                        .await;
                }
            }
        }
    }

    /// Runs one instance of a container (or follows an adopted one) to its
    /// end; returns its exit code, how long it ran, and whether it was
    /// stopped for a new image.
    async fn run_once(&self, which: Which, c: &Container, adopted: Option<Running>) -> Ran {
        let fresh = adopted.is_none();
        let running = match adopted {
            Some(r) => r,
            None => match self.create_and_start(which, c).await {
                Ok(r) => r,
                Err(e) => {
                    self.event(
                        which,
                        c,
                        EventType::Warning,
                        "Failed",
                        format!("Error: {}", e.message),
                    );
                    let now = Timestamp::now();
                    self.update_c(which, |cs| {
                        cs.state = state::terminated(
                            128,
                            Some(e.reason),
                            Some(now),
                            now,
                            Some(e.message.clone()),
                            None,
                        );
                        cs.ready = false;
                        cs.started = false;
                    });
                    return Ran {
                        code: 128,
                        ran: Duration::ZERO,
                        spec_changed: false,
                    };
                }
            },
        };
        let running = Arc::new(running);
        self.running
            .lock()
            .expect("running lock")
            .insert(c.name.clone(), running.clone());
        // A fresh instance with a postStart hook is reported Running once
        // the hook is done (see `supervise`).
        let hook_pending = fresh
            && !matches!(which, Which::Init(_))
            && c.lifecycle.as_ref().is_some_and(|l| l.post_start.is_some());
        self.update_c(which, |cs| {
            cs.container_id = Some(running.id.clone());
            if hook_pending {
                cs.state = state::waiting("ContainerCreating", None);
            } else {
                cs.state = state::running(running.started_at);
                cs.started = !matches!(which, Which::Init(_)) && c.startup_probe.is_none();
            }
            cs.ready = false;
        });
        let (exit, spec_changed) = self.supervise(which, c, &running, hook_pending).await;
        self.running.lock().expect("running lock").remove(&c.name);
        let message = self.ctx.runtime.termination_message(&running, c, exit.code);
        self.update_c(which, |cs| {
            cs.state = state::terminated(
                exit.code,
                exit.reason,
                Some(running.started_at),
                exit.finished_at,
                message,
                Some(running.id.clone()),
            );
            cs.ready = false;
            cs.started = false;
        });
        let ran = Duration::from_millis(
            exit.finished_at
                .duration_since(running.started_at)
                .as_millis()
                .max(0) as u64,
        );
        Ran {
            code: exit.code,
            ran,
            spec_changed,
        }
    }

    /// Pulls the image, makes the container's config and starts a new
    /// instance. A config that cannot be made (kubelet's
    /// `CreateContainerConfigError`: a missing ConfigMap or key, a user
    /// `runAsNonRoot` forbids, a path leaving the sandbox) creates nothing:
    /// the container waits with that reason and message, restartCount
    /// stays, and the start is tried again after kubelet's pod worker
    /// back-off (`backoff_base`, 10 s, jittered by up to half), so fixing
    /// the cause lets it start. Any other error is a created container
    /// that failed to start (a restart, reported terminated).
    async fn create_and_start(&self, which: Which, c: &Container) -> Result<Running, StartError> {
        loop {
            let image = self.ensure_image(which, c).await;
            if *self.shutdown.borrow() {
                // The kubelet is stopping: start nothing new.
                return std::future::pending().await;
            }
            let sandbox = self
                .sandbox
                .get()
                .expect("sandbox before containers")
                .clone();
            // The instance's number; it counts only once something is created.
            let attempt = self.read_c(which, |cs| cs.instances);
            let started = match self.config_maps(c).await {
                Ok(config_maps) => {
                    for message in env::invalid_env_from_keys(&self.pod, c, &config_maps) {
                        self.pod_event(
                            None,
                            EventType::Warning,
                            "InvalidEnvironmentVariableNames",
                            message,
                        );
                    }
                    let req = StartRequest {
                        pod: &self.pod,
                        container: c,
                        image: &image,
                        sandbox: &sandbox,
                        host_ip: &self.ctx.host_ip,
                        config_maps: &config_maps,
                        attempt,
                    };
                    self.ctx.runtime.start(req).await
                }
                Err(message) => Err(StartError::config(message)),
            };
            match started {
                Err(e) if e.is_config_error() => {
                    self.event(
                        which,
                        c,
                        EventType::Warning,
                        "Failed",
                        format!("Error: {}", e.message),
                    );
                    self.update_c(which, |cs| {
                        if cs.state.terminated.is_some() {
                            cs.last_state = Some(cs.state.clone());
                        }
                        cs.state = state::waiting(CREATE_CONTAINER_CONFIG_ERROR, Some(e.message));
                        cs.ready = false;
                        cs.started = false;
                    });
                    let base = self.ctx.config.backoff_base;
                    let jitter = base.mul_f64(rand::random_range(0.0..0.5));
                    tokio::time::sleep(base + jitter).await;
                }
                other => {
                    self.update_c(which, |cs| cs.instances = attempt + 1);
                    let r = other?;
                    self.event(
                        which,
                        c,
                        EventType::Normal,
                        "Created",
                        format!("Created container: {}", c.name),
                    );
                    self.event(
                        which,
                        c,
                        EventType::Normal,
                        "Started",
                        format!("Started container {}", c.name),
                    );
                    return Ok(r);
                }
            }
        }
    }

    /// Reads the ConfigMaps and Secrets `c`'s environment refers to (404
    /// is recorded as absent; whether that is an error depends on
    /// `optional`), and the Service variables from the Service informer
    /// (which must have listed once, as kubelet requires). The error is a
    /// `CreateContainerConfigError` message. Secret values are never logged.
    async fn config_maps(&self, c: &Container) -> Result<ConfigMaps, String> {
        let mut out = ConfigMaps::new();
        let namespace = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let services = &self.ctx.services;
        let listed = tokio::time::timeout(Duration::from_secs(1), services.wait_ready()).await;
        if listed.is_err() {
            return Err(
                "services have not yet been read at least once, cannot construct envvars".into(),
            );
        }
        let links = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let mut visible = services.namespace(namespace);
        visible.extend(services.get("default", "kubernetes"));
        out.services = env::service_env(visible.iter().map(|s| s.as_ref()), namespace, links);
        let names = env::config_map_names(c);
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), namespace);
        for name in names {
            if !env::is_dns1123_subdomain(&name) {
                return Err(format!(
                    "configMap name {name:?} is not a DNS-1123 subdomain"
                ));
            }
            let data = match api.get_opt(&name).await {
                Ok(cm) => cm.map(|cm| cm.data.unwrap_or_default()),
                Err(kube::Error::Api(s)) => return Err(s.message),
                Err(e) => return Err(format!("couldn't get configMap {name:?}: {e}")),
            };
            out.config_maps.insert(name, data);
        }
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
        for name in env::secret_names(c) {
            if !env::is_dns1123_subdomain(&name) {
                return Err(format!("secret name {name:?} is not a DNS-1123 subdomain"));
            }
            let data = match api.get_opt(&name).await {
                Ok(s) => s.map(|s| {
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect()
                }),
                Err(kube::Error::Api(s)) => return Err(s.message),
                Err(e) => return Err(format!("couldn't get secret {name:?}: {e}")),
            };
            out.secrets.insert(name, data);
        }
        Ok(out)
    }

    /// Hooks and probes around one running instance, until it exits;
    /// true with the exit when it was stopped because the spec's image
    /// changed. `run_post_start`: run the postStart hook first, and
    /// report the instance Running only after it.
    async fn supervise(
        &self,
        which: Which,
        c: &Container,
        running: &Arc<Running>,
        run_post_start: bool,
    ) -> (crate::runtime::Exit, bool) {
        if let Which::Init(_) = which {
            return (running.wait().await, false);
        }
        let grace = self.termination_grace(&self.pod);
        let hook = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref());
        if let Some(hook) = hook.filter(|_| run_post_start) {
            let rt = &self.ctx.runtime;
            let label = self.pod_label();
            tokio::select! {
                r = rt.hook(hook, running, c, &label, true) => {
                    if let Err(e) = r {
                        tracing::info!(pod = %label, container = %c.name, error = %e, "postStart hook failed");
                        self.event(which, c, EventType::Warning, "FailedPostStartHook", format!("PostStartHook failed: {e}"));
                        self.stop_container(which, c, running, grace, false).await;
                        return (running.wait().await, false);
                    }
                }
                exit = running.wait() => return (exit, false),
            }
            self.update_c(which, |cs| {
                cs.state = state::running(running.started_at);
                cs.started = c.startup_probe.is_none();
            });
        }
        let image = self.read_c(which, |cs| cs.image.clone());
        tokio::select! {
            exit = running.wait() => (exit, false),
            kind = self.probe_chain(which, c, running) => {
                self.event(which, c, EventType::Normal, "Killing",
                    format!("Container {} failed {} probe, will be restarted", c.name, kind.name().to_lowercase()));
                self.stop_container(which, c, running, grace, true).await;
                (running.wait().await, false)
            }
            () = self.image_changed(which, c, &image) => {
                self.event(which, c, EventType::Normal, "Killing",
                    format!("Container {} definition changed, will be restarted", c.name));
                self.stop_container(which, c, running, grace, true).await;
                (running.wait().await, true)
            }
        }
    }

    /// startupProbe, then livenessProbe alongside readiness; returns the
    /// probe whose failures mean the container must be restarted.
    async fn probe_chain(&self, which: Which, c: &Container, running: &Running) -> ProbeKind {
        let started_at = Instant::now();
        if let Some(p) = &c.startup_probe {
            if !self
                .probe_until(which, c, running, ProbeKind::Startup, p, started_at)
                .await
            {
                return ProbeKind::Startup;
            }
            self.update_c(which, |cs| cs.started = true);
        }
        let liveness = async {
            match &c.liveness_probe {
                Some(p) => {
                    self.probe_until(which, c, running, ProbeKind::Liveness, p, started_at)
                        .await;
                    ProbeKind::Liveness
                }
                None => std::future::pending().await,
            }
        };
        let readiness = self.readiness(which, c, running, started_at);
        tokio::select! {
            kind = liveness => kind,
            never = readiness => never,
        }
    }

    /// Startup: runs until success (true) or failureThreshold (false).
    /// Liveness: runs until failureThreshold (returns false).
    async fn probe_until(
        &self,
        which: Which,
        c: &Container,
        running: &Running,
        kind: ProbeKind,
        p: &Probe,
        started_at: Instant,
    ) -> bool {
        let (period, threshold) = timing(p);
        sleep_until(started_at, p.initial_delay_seconds).await;
        let mut failures = 0;
        loop {
            match self.probe_once(which, c, running, kind, p).await {
                true if kind == ProbeKind::Startup => return true,
                true => failures = 0,
                false => {
                    failures += 1;
                    if failures >= threshold {
                        return false;
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Keeps `ready` current; never returns.
    async fn readiness<T>(
        &self,
        which: Which,
        c: &Container,
        running: &Running,
        started_at: Instant,
    ) -> T {
        let Some(p) = &c.readiness_probe else {
            if let Some(delay) = self.ctx.runtime.implicit_ready_delay(running) {
                tokio::time::sleep(delay).await;
            }
            self.update_c(which, |cs| cs.ready = true);
            return std::future::pending().await;
        };
        let (period, failure_threshold) = timing(p);
        let success_threshold = p.success_threshold.unwrap_or(1).max(1);
        sleep_until(started_at, p.initial_delay_seconds).await;
        let (mut ok, mut bad) = (0, 0);
        loop {
            if self
                .probe_once(which, c, running, ProbeKind::Readiness, p)
                .await
            {
                ok += 1;
                bad = 0;
                if ok >= success_threshold {
                    self.update_c(which, |cs| cs.ready = true);
                }
            } else {
                bad += 1;
                ok = 0;
                if bad >= failure_threshold {
                    self.update_c(which, |cs| cs.ready = false);
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    async fn probe_once(
        &self,
        which: Which,
        c: &Container,
        running: &Running,
        kind: ProbeKind,
        p: &Probe,
    ) -> bool {
        match self.ctx.runtime.probe(kind, p, running, c).await {
            ProbeResult::Success => true,
            ProbeResult::Failure(msg) => {
                self.event(
                    which,
                    c,
                    EventType::Warning,
                    "Unhealthy",
                    format!("{} probe failed: {msg}", kind.name()),
                );
                false
            }
        }
    }

    fn termination_grace(&self, pod: &Pod) -> Duration {
        grace_period(pod)
    }

    /// preStop (optionally), SIGTERM, up to `grace`, SIGKILL.
    async fn stop_container(
        &self,
        which: Which,
        c: &Container,
        running: &Running,
        grace: Duration,
        pre_stop: bool,
    ) {
        let deadline = Instant::now() + grace;
        self.event(
            which,
            c,
            EventType::Normal,
            "Killing",
            format!("Stopping container {}", c.name),
        );
        let hook = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .filter(|_| pre_stop);
        let mut ran_hook = false;
        if let Some(hook) = hook {
            if running.exited().is_none() {
                ran_hook = true;
                let label = self.pod_label();
                let run = self.ctx.runtime.hook(hook, running, c, &label, false);
                let failed = match tokio::time::timeout_at(deadline, run).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("PreStopHook for Container {:?} in Pod {label:?} did not complete within the grace period", c.name)),
                };
                if let Some(e) = failed {
                    self.event(
                        which,
                        c,
                        EventType::Warning,
                        "FailedPreStopHook",
                        format!("PreStopHook failed: {e}"),
                    );
                }
            }
        }
        running.signal(StopSignal::Term);
        // Kubernetes gives SIGTERM at least 2 s after a preStop hook.
        let min = Instant::now() + Duration::from_secs(2);
        let deadline = if ran_hook {
            deadline.max(min)
        } else {
            deadline
        };
        if tokio::time::timeout_at(deadline, running.wait())
            .await
            .is_err()
        {
            running.signal(StopSignal::Kill);
        }
    }

    /// Graceful termination of every live container of a deleted pod:
    /// the app containers (and a running init container) at once, then
    /// the sidecars one by one in reverse order, all within one grace
    /// period. The terminal phase (Failed with `failure`'s reason and
    /// message when given) is set in the same update that reports the
    /// containers terminated: as kubelet's status manager, a pod never
    /// shows a terminal phase while its containers may still run.
    async fn terminate(&self, pod: &Arc<Pod>, failure: Option<(&str, &str)>) {
        let grace = self.termination_grace(pod);
        let deadline = Instant::now() + grace;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let live: HashMap<String, Arc<Running>> =
            self.running.lock().expect("running lock").clone();
        let first = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| self.stop_by(Which::App(i), c, live.get(&c.name).cloned(), deadline))
            .chain(
                inits
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !is_sidecar(c))
                    .map(|(i, c)| {
                        self.stop_by(Which::Init(i), c, live.get(&c.name).cloned(), deadline)
                    }),
            );
        let mut results: Vec<_> = join_all(first).await.into_iter().flatten().collect();
        for (i, c) in inits
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, c)| is_sidecar(c))
        {
            results.extend(
                self.stop_by(Which::Sidecar(i), c, live.get(&c.name).cloned(), deadline)
                    .await,
            );
        }
        self.running
            .lock()
            .expect("running lock")
            .retain(|name, _| !results.iter().any(|(n, _, _)| n == name));
        let spec_apps: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
        self.update(|s| {
            for (name, r, exit) in &results {
                for cs in s
                    .init
                    .iter_mut()
                    .chain(s.app.iter_mut())
                    .filter(|cs| &cs.name == name)
                {
                    cs.state = state::terminated(
                        exit.code,
                        exit.reason,
                        Some(r.started_at),
                        exit.finished_at,
                        None,
                        Some(r.id.clone()),
                    );
                    cs.ready = false;
                    cs.started = false;
                }
            }
            for cs in &mut s.app {
                cs.ready = false;
                if cs.state.waiting.is_some() {
                    let code = cs
                        .last_state
                        .as_ref()
                        .and_then(|l| l.terminated.as_ref())
                        .map(|t| t.exit_code);
                    cs.state = state::terminated(
                        code.unwrap_or(137),
                        Some("ContainerStatusUnknown"),
                        None,
                        Timestamp::now(),
                        Some(
                            "The container could not be located when the pod was terminated".into(),
                        ),
                        None,
                    );
                }
            }
            let all_ok = !spec_apps.is_empty()
                && s.app
                    .iter()
                    .all(|c| c.terminated().is_some_and(|t| t.exit_code == 0));
            match failure {
                Some((reason, message)) => {
                    s.terminal = Some("Failed");
                    s.reason = Some((reason.into(), message.into()));
                }
                None => {
                    s.terminal
                        .get_or_insert(if all_ok { "Succeeded" } else { "Failed" });
                }
            }
        });
    }

    /// Stops `running` (if any) of `c` by `deadline`, for [`Self::terminate`].
    async fn stop_by(
        &self,
        which: Which,
        c: &Container,
        running: Option<Arc<Running>>,
        deadline: Instant,
    ) -> Option<(String, Arc<Running>, crate::runtime::Exit)> {
        let r = running?;
        let grace = deadline.saturating_duration_since(Instant::now());
        self.stop_container(which, c, &r, grace, true).await;
        let exit = r.wait().await;
        Some((c.name.clone(), r, exit))
    }

    /// The kubelet's final DELETE: grace period 0, only for this uid.
    async fn final_delete(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        for _ in 0..5 {
            match api.delete(&name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "final delete failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Kubernetes' default imagePullPolicy: `Always` for an untagged or
/// `:latest` image, else `IfNotPresent` (a digest counts as a tag).
fn default_pull_policy(image: &str) -> &'static str {
    let tagged = image
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
        || image.contains('@');
    if tagged && !image.ends_with(":latest") {
        "IfNotPresent"
    } else {
        "Always"
    }
}

/// A probe's period and failure threshold (Kubernetes' defaults: 10 s, 3).
fn timing(p: &Probe) -> (Duration, i32) {
    (
        Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64),
        p.failure_threshold.unwrap_or(3).max(1),
    )
}

async fn sleep_until(start: Instant, delay_seconds: Option<i32>) {
    let delay = Duration::from_secs(delay_seconds.unwrap_or(0).max(0) as u64);
    tokio::time::sleep_until(start + delay).await;
}

/// The longest grace period honoured: a century. A pod may carry any int64
/// (an apiserver that did not range-check it, an old stored object), and
/// `Instant + Duration` panics past what the clock can represent.
const MAX_GRACE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A pod's grace period: `metadata.deletionGracePeriodSeconds`, else
/// `spec.terminationGracePeriodSeconds`, else 30 s; negative counts as 0
/// and anything past [`MAX_GRACE`] as `MAX_GRACE`.
fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0)).min(MAX_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(deletion: Option<i64>, spec: Option<i64>) -> Pod {
        let mut p = Pod::default();
        p.metadata.deletion_grace_period_seconds = deletion;
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            termination_grace_period_seconds: spec,
            ..Default::default()
        });
        p
    }

    #[test]
    fn grace_period_saturates_instead_of_overflowing() {
        assert_eq!(grace_period(&pod(None, None)), Duration::from_secs(30));
        assert_eq!(grace_period(&pod(None, Some(5))), Duration::from_secs(5));
        assert_eq!(grace_period(&pod(Some(0), Some(5))), Duration::ZERO);
        assert_eq!(grace_period(&pod(None, Some(-7))), Duration::ZERO);
        for huge in [i64::MAX, i64::MAX / 2, 1 << 40] {
            let grace = grace_period(&pod(None, Some(huge)));
            assert_eq!(grace, MAX_GRACE, "{huge}");
            // What stop_container does with it: no overflow panic.
            let _deadline = tokio::time::Instant::now() + grace;
            let _deadline = std::time::Instant::now() + grace;
        }
        assert_eq!(grace_period(&pod(Some(i64::MAX), Some(1))), MAX_GRACE);
    }
}
