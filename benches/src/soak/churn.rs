//! The soak's workload, all in one namespace of its own:
//!
//! - `churn-0` … `churn-{n-1}`: Deployments scaled to random sizes
//!   (0 ..= `max_replicas`) as fast as it takes to hold `rate` pod
//!   creations plus deletions per second, as this process's watch sees
//!   them; every `recreate_every` one of them is deleted (its ReplicaSet
//!   and pods go by garbage collection) and created again once its pods
//!   are gone. Scale steps wait while many changes are still pending, so
//!   the work is bounded however slow the cluster is.
//! - `probe-readiness`: pods whose readiness probe fails every second for
//!   ever (`sim.ballast.dev/ready-after-ms`): one `Unhealthy` Event per
//!   pod, repeated — the event correlator's and the Event TTL's path.
//! - `probe-liveness`: pods whose liveness probe starts failing 5 s after
//!   each start: `Unhealthy`, `Killing`, restarts and `BackOff` Events.
//!
//! Node Lease renewals come from the simulated kubelets on their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ExecAction, Namespace, Pod, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

/// What the churn does.
#[derive(Debug, Clone)]
pub struct ChurnConfig {
    /// The namespace everything is created in (created here).
    pub namespace: String,
    /// Pod creations plus deletions per second to hold.
    pub rate: u32,
    /// Deployments scaled and recreated.
    pub deployments: usize,
    /// The most replicas one of them is scaled to.
    pub max_replicas: i32,
    /// Replicas of each of the two probe-failing Deployments (0: none).
    pub probe_replicas: i32,
    /// How often one Deployment is deleted and created again.
    pub recreate_every: Duration,
}

/// What the churn did so far; read by the recorder while it runs.
#[derive(Debug, Default)]
pub struct ChurnCounters {
    /// Pods this process's watch saw appear.
    pub creates: AtomicU64,
    /// Pods this process's watch saw disappear.
    pub deletes: AtomicU64,
    /// Re-lists of the pod watch after the first list (e.g. 410 Gone after
    /// a compaction).
    pub relists: AtomicU64,
    /// Scale changes sent.
    pub scale_steps: AtomicU64,
    /// Deployments deleted and created again.
    pub recreates: AtomicU64,
    /// Requests of the churn that failed.
    pub errors: AtomicU64,
    /// The first such failure, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl ChurnCounters {
    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(format!("{what}: {e}"));
        }
    }
}

/// The pods of the namespace as the watch saw them: name → `app` label.
#[derive(Debug, Default)]
struct Live {
    pods: HashMap<String, String>,
    /// Objects of a re-list in progress.
    relisting: Option<HashMap<String, String>>,
    lists: u64,
}

impl Live {
    fn per_app(&self) -> HashMap<String, i64> {
        let mut out = HashMap::new();
        for app in self.pods.values() {
            *out.entry(app.clone()).or_insert(0) += 1;
        }
        out
    }
}

/// A small xorshift generator: the workload needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn app_of(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app"))
        .cloned()
        .unwrap_or_default()
}

/// A Deployment of sim pods labelled `app=name`, with `annotations` on the
/// pods and `probe` as the readiness or liveness probe.
fn deployment(
    name: &str,
    replicas: i32,
    annotations: BTreeMap<String, String>,
    readiness: Option<Probe>,
    liveness: Option<Probe>,
) -> Deployment {
    let labels: BTreeMap<String, String> = [("app".to_string(), name.to_string())].into();
    let requests = [
        ("cpu".to_string(), Quantity("10m".into())),
        ("memory".to_string(), Quantity("16Mi".into())),
    ];
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("busybox".into()),
                        command: Some(vec!["sleep".into(), "3600".into()]),
                        resources: Some(ResourceRequirements {
                            requests: Some(requests.into()),
                            ..ResourceRequirements::default()
                        }),
                        readiness_probe: readiness,
                        liveness_probe: liveness,
                        ..Container::default()
                    }],
                    termination_grace_period_seconds: Some(0),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// A probe run every second that the sim runtime answers from annotations.
fn every_second() -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["true".into()]),
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Probe::default()
    }
}

fn churn_name(i: usize) -> String {
    format!("churn-{i}")
}

/// Creates the namespace and the Deployments (the churned ones at 0
/// replicas).
pub async fn setup(client: &kube::Client, config: &ChurnConfig) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .with_context(|| format!("creating namespace {}", config.namespace))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &config.namespace);
    let pp = PostParams::default();
    for i in 0..config.deployments {
        let d = deployment(&churn_name(i), 0, BTreeMap::new(), None, None);
        deployments
            .create(&pp, &d)
            .await
            .with_context(|| format!("creating Deployment {}", churn_name(i)))?;
    }
    if config.probe_replicas > 0 {
        let never_ready = [(
            "sim.ballast.dev/ready-after-ms".to_string(),
            // Far beyond any soak: the readiness probe fails for ever.
            "31536000000".to_string(),
        )];
        let d = deployment(
            "probe-readiness",
            config.probe_replicas,
            never_ready.into(),
            Some(every_second()),
            None,
        );
        deployments
            .create(&pp, &d)
            .await
            .context("creating Deployment probe-readiness")?;
        let dies = [(
            "sim.ballast.dev/liveness-fail-after-ms".to_string(),
            "5000".to_string(),
        )];
        let d = deployment(
            "probe-liveness",
            config.probe_replicas,
            dies.into(),
            None,
            Some(every_second()),
        );
        deployments
            .create(&pp, &d)
            .await
            .context("creating Deployment probe-liveness")?;
    }
    Ok(())
}

/// Deletes the namespace (and so everything the soak made in it).
pub async fn teardown(client: &kube::Client, namespace: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(namespace, &DeleteParams::background())
        .await;
}

/// Follows the namespace's pods, counting creations, deletions and
/// re-lists into `counters`, until `stop` turns true.
async fn follow_pods(
    client: kube::Client,
    namespace: String,
    live: Arc<Mutex<Live>>,
    counters: Arc<ChurnCounters>,
    mut stop: watch::Receiver<bool>,
) {
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            e = events.next() => e,
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                // The watcher backs off and re-lists by itself.
                counters.error("pod watch", e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => return,
        };
        let mut live = live.lock();
        match event {
            watcher::Event::Apply(pod) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if live.pods.insert(name, app_of(&pod)).is_none() {
                    counters.creates.fetch_add(1, Ordering::Relaxed);
                }
            }
            watcher::Event::Delete(pod) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if live.pods.remove(&name).is_some() {
                    counters.deletes.fetch_add(1, Ordering::Relaxed);
                }
            }
            watcher::Event::Init => live.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                live.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(name, app_of(&pod));
            }
            watcher::Event::InitDone => {
                let fresh = live.relisting.take().unwrap_or_default();
                let gone = live.pods.keys().filter(|k| !fresh.contains_key(*k)).count();
                let new = fresh.keys().filter(|k| !live.pods.contains_key(*k)).count();
                counters.deletes.fetch_add(gone as u64, Ordering::Relaxed);
                counters.creates.fetch_add(new as u64, Ordering::Relaxed);
                live.pods = fresh;
                live.lists += 1;
                if live.lists > 1 {
                    counters.relists.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Runs the churn until `stop` turns true; `counters` is updated as it goes.
pub async fn run(
    client: kube::Client,
    config: ChurnConfig,
    counters: Arc<ChurnCounters>,
    stop: watch::Receiver<bool>,
) {
    let live = Arc::new(Mutex::new(Live::default()));
    let follower = tokio::spawn(follow_pods(
        client.clone(),
        config.namespace.clone(),
        live.clone(),
        counters.clone(),
        stop.clone(),
    ));
    drive(client, &config, &live, &counters, stop).await;
    let _ = follower.await;
}

async fn drive(
    client: kube::Client,
    config: &ChurnConfig,
    live: &Mutex<Live>,
    counters: &ChurnCounters,
    mut stop: watch::Receiver<bool>,
) {
    let deployments: Api<Deployment> = Api::namespaced(client, &config.namespace);
    let n = config.deployments;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    let mut desired = vec![0i32; n];
    let mut deleted: Vec<Option<Instant>> = vec![None; n];
    let started = Instant::now();
    let ops_at_start =
        counters.creates.load(Ordering::Relaxed) + counters.deletes.load(Ordering::Relaxed);
    let mut next_recreate = started + config.recreate_every;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rate = f64::from(config.rate);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if n == 0 {
            continue;
        }
        let per_app = live.lock().per_app();
        let live_of = |i: usize| per_app.get(&churn_name(i)).copied().unwrap_or(0);

        // Deleted Deployments come back once their pods are gone (or after
        // two minutes, so a stuck garbage collector does not stop the churn).
        for i in 0..n {
            let Some(at) = deleted[i] else { continue };
            if live_of(i) > 0 && at.elapsed() < Duration::from_secs(120) {
                continue;
            }
            let replicas = 1 + rng.below(config.max_replicas.max(1) as u64) as i32;
            let d = deployment(&churn_name(i), replicas, BTreeMap::new(), None, None);
            match deployments.create(&PostParams::default(), &d).await {
                Ok(_) => {
                    desired[i] = replicas;
                    deleted[i] = None;
                    counters.recreates.fetch_add(1, Ordering::Relaxed);
                }
                // Still being deleted (finalizers): try again on a later tick.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => counters.error("creating a Deployment again", e),
            }
        }

        let pending: i64 = (0..n)
            .map(|i| match deleted[i] {
                Some(_) => live_of(i),
                None => (i64::from(desired[i]) - live_of(i)).abs(),
            })
            .sum();
        let done = counters.creates.load(Ordering::Relaxed)
            + counters.deletes.load(Ordering::Relaxed)
            - ops_at_start;
        let mut budget = rate * started.elapsed().as_secs_f64() - done as f64 - pending as f64;
        // Never more than ~3 s of work outstanding.
        let cap = (rate * 3.0).max(f64::from(config.max_replicas));

        if Instant::now() >= next_recreate {
            next_recreate += config.recreate_every;
            let candidates: Vec<usize> = (0..n)
                .filter(|&i| deleted[i].is_none() && desired[i] > 0)
                .collect();
            if !candidates.is_empty() && (pending as f64) < cap {
                let i = candidates[rng.below(candidates.len() as u64) as usize];
                match deployments
                    .delete(&churn_name(i), &DeleteParams::background())
                    .await
                {
                    Ok(_) => {
                        deleted[i] = Some(Instant::now());
                        desired[i] = 0;
                    }
                    Err(e) => counters.error("deleting a Deployment", e),
                }
                continue;
            }
        }

        let mut steps = 0;
        let mut pending = pending as f64;
        while budget > 0.0 && pending < cap && steps < 4 {
            steps += 1;
            let i = rng.below(n as u64) as usize;
            if deleted[i].is_some() {
                continue;
            }
            let replicas = rng.below(config.max_replicas as u64 + 1) as i32;
            if replicas == desired[i] {
                continue;
            }
            let patch = json!({ "spec": { "replicas": replicas } });
            match deployments
                .patch(
                    &churn_name(i),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    let change = (i64::from(replicas) - live_of(i)).abs() as f64;
                    budget -= change;
                    pending += change;
                    desired[i] = replicas;
                    counters.scale_steps.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => counters.error("scaling a Deployment", e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_stays_below_its_bound_and_varies() {
        let mut rng = Rng(12345);
        let draws: Vec<u64> = (0..1000).map(|_| rng.below(31)).collect();
        assert!(draws.iter().all(|d| *d < 31));
        assert!(draws.contains(&0) && draws.contains(&30));
        assert_eq!(Rng(7).below(0), 0);
    }

    #[test]
    fn probe_deployments_carry_their_annotations_and_probes() {
        let d = deployment(
            "probe-readiness",
            5,
            [(
                "sim.ballast.dev/ready-after-ms".to_string(),
                "1".to_string(),
            )]
            .into(),
            Some(every_second()),
            None,
        );
        let template = d.spec.as_ref().unwrap().template.clone();
        let meta = template.metadata.unwrap();
        assert_eq!(meta.labels.unwrap()["app"], "probe-readiness");
        assert!(meta
            .annotations
            .unwrap()
            .contains_key("sim.ballast.dev/ready-after-ms"));
        let c = &template.spec.unwrap().containers[0];
        assert_eq!(c.readiness_probe.as_ref().unwrap().period_seconds, Some(1));
        assert!(c.liveness_probe.is_none());
        let plain = deployment("churn-0", 0, BTreeMap::new(), None, None);
        let meta = plain.spec.unwrap().template.metadata.unwrap();
        assert!(meta.annotations.is_none());
    }

    #[test]
    fn pods_are_counted_per_app() {
        let mut live = Live::default();
        live.pods.insert("a-1".into(), "churn-0".into());
        live.pods.insert("a-2".into(), "churn-0".into());
        live.pods.insert("b-1".into(), "churn-1".into());
        let per_app = live.per_app();
        assert_eq!(per_app["churn-0"], 2);
        assert_eq!(per_app["churn-1"], 1);
    }
}
