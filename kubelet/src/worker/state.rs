//! What a pod worker knows about its pod, and the PodStatus it implies:
//! container states, phase (kubelet's `getPhase`) and conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// One container as the worker tracks it.
#[derive(Debug, Clone)]
pub struct CState {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: ContainerState,
    pub last_state: Option<ContainerState>,
    /// Instances started so far (restartCount = instances − 1).
    pub instances: u32,
    pub ready: bool,
    pub started: bool,
    /// A native sidecar (`initContainers[].restartPolicy: Always`).
    pub sidecar: bool,
}

impl CState {
    pub fn new(name: &str, image: &str) -> CState {
        CState {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            state: waiting("ContainerCreating", None),
            last_state: None,
            instances: 0,
            ready: false,
            started: false,
            sidecar: false,
        }
    }

    pub fn restart_count(&self) -> i32 {
        self.instances.saturating_sub(1) as i32
    }

    pub fn terminated(&self) -> Option<&ContainerStateTerminated> {
        self.state.terminated.as_ref()
    }

    fn to_status(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.clone(),
            state: Some(self.state.clone()),
            last_state: Some(self.last_state.clone().unwrap_or_default()),
            ready: self.ready,
            restart_count: self.restart_count(),
            started: Some(self.started),
            ..ContainerStatus::default()
        }
    }
}

/// A Waiting state.
pub fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..ContainerState::default()
    }
}

/// A Running state.
pub fn running(started_at: Timestamp) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(Time(started_at)),
        }),
        ..ContainerState::default()
    }
}

/// A Terminated state: reason `Completed` for exit 0, else `reason` or `Error`.
pub fn terminated(
    code: i32,
    reason: Option<&str>,
    started_at: Option<Timestamp>,
    finished_at: Timestamp,
    message: Option<String>,
    container_id: Option<String>,
) -> ContainerState {
    let reason = reason.unwrap_or(if code == 0 { "Completed" } else { "Error" });
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.to_string()),
            message,
            started_at: started_at.map(Time),
            finished_at: Some(Time(finished_at)),
            container_id,
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

/// Everything the worker reports about its pod.
#[derive(Debug, Clone)]
pub struct PodState {
    pub init: Vec<CState>,
    pub app: Vec<CState>,
    pub restart_policy: String,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Timestamp,
    pub initialized: bool,
    /// A phase forced by the worker (a failed init container with
    /// `restartPolicy: Never`, an exceeded `activeDeadlineSeconds`, or a
    /// terminated pod being deleted).
    pub terminal: Option<&'static str>,
    /// `status.reason` and `status.message` (`DeadlineExceeded`).
    pub reason: Option<(String, String)>,
}

impl PodState {
    /// kubelet's `getPhase`.
    pub fn phase(&self) -> &'static str {
        if let Some(p) = self.terminal {
            return p;
        }
        if !self.initialized {
            return "Pending";
        }
        let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
        // A running sidecar counts as running; a stopped one not at all.
        running += self
            .init
            .iter()
            .filter(|c| c.sidecar && c.state.running.is_some())
            .count();
        for c in &self.app {
            if c.state.running.is_some() {
                running += 1;
            } else if let Some(t) = &c.state.terminated {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            } else if c
                .last_state
                .as_ref()
                .is_some_and(|l| l.terminated.is_some())
            {
                stopped += 1;
            } else {
                waiting += 1;
            }
        }
        if waiting > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if stopped > 0 {
            match self.restart_policy.as_str() {
                "Always" => "Running",
                _ if stopped == succeeded => "Succeeded",
                "Never" => "Failed",
                _ => "Running",
            }
        } else {
            "Pending"
        }
    }

    /// The status to report; `transitions` keeps each condition's
    /// lastTransitionTime across calls (it changes only with the status).
    pub fn to_status(&self, transitions: &mut BTreeMap<String, (String, Timestamp)>) -> PodStatus {
        let phase = self.phase();
        let done = phase == "Succeeded" || phase == "Failed";
        let list = |names: Vec<&str>| format!("[{}]", names.join(" "));
        // A sidecar is complete once started; an init container once it
        // exited 0.
        let incomplete: Vec<&str> = self
            .init
            .iter()
            .filter(|c| match c.sidecar {
                true => !c.started,
                false => c.terminated().is_none_or(|t| t.exit_code != 0),
            })
            .map(|c| c.name.as_str())
            .collect();
        // Sidecars count toward readiness, before the app containers.
        let unready: Vec<&str> = self
            .init
            .iter()
            .filter(|c| c.sidecar)
            .chain(&self.app)
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        let mut conds: Vec<(&str, bool, Option<&str>, Option<String>)> =
            vec![("PodScheduled", true, None, None)];
        if self.initialized || incomplete.is_empty() {
            conds.push(("Initialized", true, None, None));
        } else {
            conds.push((
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: {}",
                    list(incomplete)
                )),
            ));
        }
        for ty in ["ContainersReady", "Ready"] {
            if done {
                conds.push((ty, false, Some("PodCompleted"), None));
            } else if unready.is_empty() && self.initialized {
                conds.push((ty, true, None, None));
            } else {
                conds.push((
                    ty,
                    false,
                    Some("ContainersNotReady"),
                    Some(format!(
                        "containers with unready status: {}",
                        list(unready.clone())
                    )),
                ));
            }
        }
        let now = Timestamp::now();
        let conditions = conds
            .into_iter()
            .map(|(ty, ok, reason, message)| {
                let status = if ok { "True" } else { "False" }.to_string();
                let entry = transitions
                    .entry(ty.to_string())
                    .or_insert((status.clone(), now));
                if entry.0 != status {
                    *entry = (status.clone(), now);
                }
                PodCondition {
                    type_: ty.to_string(),
                    status,
                    reason: reason.map(str::to_string),
                    message,
                    last_transition_time: Some(Time(entry.1)),
                    last_probe_time: None,
                    ..PodCondition::default()
                }
            })
            .collect();
        PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: Some(self.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.host_ip.clone(),
            }]),
            pod_ip: self.pod_ip.clone(),
            pod_ips: self.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
            start_time: Some(Time(self.start_time)),
            init_container_statuses: (!self.init.is_empty())
                .then(|| self.init.iter().map(CState::to_status).collect()),
            container_statuses: Some(self.app.iter().map(CState::to_status).collect()),
            reason: self.reason.as_ref().map(|r| r.0.clone()),
            message: self.reason.as_ref().map(|r| r.1.clone()),
            ..PodStatus::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str, states: Vec<ContainerState>) -> PodState {
        PodState {
            init: vec![],
            app: states
                .into_iter()
                .enumerate()
                .map(|(i, s)| CState {
                    state: s,
                    ..CState::new(&format!("c{i}"), "busybox")
                })
                .collect(),
            restart_policy: policy.to_string(),
            pod_ip: None,
            host_ip: "127.0.0.1".into(),
            start_time: Timestamp::now(),
            initialized: true,
            terminal: None,
            reason: None,
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        let now = Timestamp::now();
        let ok = || terminated(0, None, None, now, None, None);
        let bad = || terminated(1, None, None, now, None, None);
        assert_eq!(
            pod("Always", vec![waiting("ContainerCreating", None)]).phase(),
            "Pending"
        );
        assert_eq!(pod("Always", vec![running(now), ok()]).phase(), "Running");
        assert_eq!(pod("Never", vec![ok(), ok()]).phase(), "Succeeded");
        assert_eq!(pod("Never", vec![ok(), bad()]).phase(), "Failed");
        assert_eq!(pod("OnFailure", vec![bad()]).phase(), "Running");
        assert_eq!(pod("OnFailure", vec![ok()]).phase(), "Succeeded");
        assert_eq!(pod("Always", vec![ok()]).phase(), "Running");
        let mut crash = pod("Always", vec![waiting("CrashLoopBackOff", None)]);
        crash.app[0].last_state = Some(bad());
        assert_eq!(crash.phase(), "Running");
        let mut init = pod("Always", vec![waiting("PodInitializing", None)]);
        init.initialized = false;
        init.init = vec![CState::new("setup", "busybox")];
        assert_eq!(init.phase(), "Pending");
        let mut t = BTreeMap::new();
        let status = init.to_status(&mut t);
        let conds = status.conditions.unwrap();
        let initialized = conds.iter().find(|c| c.type_ == "Initialized").unwrap();
        assert_eq!(initialized.status, "False");
        assert_eq!(
            initialized.message.as_deref(),
            Some("containers with incomplete status: [setup]")
        );
    }

    #[test]
    fn sidecars_count_as_kubelet_counts_them() {
        let now = Timestamp::now();
        let mut p = pod("Never", vec![terminated(0, None, None, now, None, None)]);
        let mut sidecar = CState::new("proxy", "busybox");
        sidecar.sidecar = true;
        sidecar.state = running(now);
        sidecar.started = true;
        p.init = vec![sidecar];
        // Apps done, sidecar still running: Running; once stopped, Succeeded.
        assert_eq!(p.phase(), "Running");
        let status = p.to_status(&mut BTreeMap::new());
        let cond = |s: &PodStatus, ty: &str| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == ty)
                .cloned()
                .unwrap()
        };
        assert_eq!(cond(&status, "Initialized").status, "True");
        assert_eq!(
            cond(&status, "ContainersReady").message.as_deref(),
            Some("containers with unready status: [proxy c0]")
        );
        p.init[0].state = terminated(143, None, None, now, None, None);
        assert_eq!(p.phase(), "Succeeded");
        // Not started yet: initialization incomplete.
        let mut q = pod("Always", vec![waiting("PodInitializing", None)]);
        q.initialized = false;
        q.init = vec![CState {
            sidecar: true,
            state: running(now),
            ..CState::new("proxy", "busybox")
        }];
        let status = q.to_status(&mut BTreeMap::new());
        assert_eq!(
            cond(&status, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [proxy]")
        );
    }
}
