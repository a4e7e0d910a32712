//! Writing a worker's PodStatus through `pods/status`, only when it changed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::state::PodState;

/// The last status written for one pod, and its condition transition times.
pub struct StatusSync {
    api: Api<Pod>,
    name: String,
    /// Serialises writers (the background task and the worker's flushes).
    last: tokio::sync::Mutex<Option<Value>>,
    /// (phase, Ready) of the recent writes, for `observe`: the watch may
    /// still deliver any of them after a newer one was written.
    written: Mutex<std::collections::VecDeque<(String, String)>>,
    transitions: Mutex<BTreeMap<String, (String, Timestamp)>>,
}

impl StatusSync {
    pub fn new(api: Api<Pod>, name: String) -> StatusSync {
        StatusSync {
            api,
            name,
            last: tokio::sync::Mutex::new(None),
            written: Mutex::new(Default::default()),
            transitions: Mutex::new(BTreeMap::new()),
        }
    }

    /// Writes the current status if it differs from the last one written.
    pub async fn sync(&self, state: &Mutex<PodState>) -> Result<(), kube::Error> {
        let mut last = self.last.lock().await;
        let (status, key) = {
            let st = state.lock().expect("pod state lock");
            let mut t = self.transitions.lock().expect("transitions lock");
            let status = st.to_status(&mut t);
            let ready = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status.clone())
                .unwrap_or_default();
            let key = (status.phase.clone().unwrap_or_default(), ready);
            (serde_json::to_value(&status).unwrap_or(Value::Null), key)
        };
        if last.as_ref() == Some(&status) {
            return Ok(());
        }
        self.api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
        *last = Some(status);
        let mut written = self.written.lock().expect("written lock");
        written.push_back(key);
        if written.len() > 8 {
            written.pop_front();
        }
        Ok(())
    }

    /// Writes now, retrying briefly; used before the final delete.
    pub async fn flush(&self, state: &Mutex<PodState>) {
        for _ in 0..5 {
            match self.sync(state).await {
                Ok(()) => return,
                Err(kube::Error::Api(s)) if s.code == 404 => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Compares the apiserver's copy with what was written last (someone
    /// else, e.g. the node lifecycle controller, may have changed it);
    /// true when the status must be written again.
    pub fn observe(&self, pod: &Pod) -> bool {
        let mut written = self.written.lock().expect("written lock");
        if written.is_empty() {
            return false;
        }
        let status = pod.status.as_ref();
        let their_phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
        let their_ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
            .unwrap_or_default();
        if written
            .iter()
            .any(|(p, r)| *p == their_phase && *r == their_ready)
        {
            return false;
        }
        written.clear();
        if let Ok(mut last) = self.last.try_lock() {
            *last = None;
        }
        true
    }
}

/// Writes the status whenever the worker signals a change; a short pause
/// first folds bursts of changes into one write.
pub async fn writer(sync: Arc<StatusSync>, state: Arc<Mutex<PodState>>, notify: Arc<Notify>) {
    loop {
        notify.notified().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        loop {
            match sync.sync(&state).await {
                Ok(()) => break,
                Err(kube::Error::Api(s)) if s.code == 404 => return,
                Err(e) => {
                    tracing::debug!(pod = %sync.name, error = %e, "status write failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
