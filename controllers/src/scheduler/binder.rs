//! The scheduler's writes: the binding (`POST pods/<name>/binding`, a
//! core/v1 Binding naming the node), the PodScheduled=False condition of an
//! unschedulable pod (`PATCH pods/<name>/status`), and the Scheduled /
//! FailedScheduling events.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use tokio::sync::mpsc;

use crate::events::{EventType, Recorder};

/// Why a write failed; `Gone` and `Conflict` mean the pod needs no more
/// work from this attempt (deleted, or bound by someone else).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the pod is gone: {0}")]
    Gone(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Other(String),
}

impl From<kube::Error> for WriteError {
    fn from(e: kube::Error) -> WriteError {
        match &e {
            kube::Error::Api(s) if s.code == 404 => WriteError::Gone(s.message.clone()),
            kube::Error::Api(s) if s.code == 409 => WriteError::Conflict(s.message.clone()),
            _ => WriteError::Other(e.to_string()),
        }
    }
}

/// Which pod a write is about.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl PodRef {
    fn object_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        }
    }
}

/// Binds `pod` to `node` through the pods/binding subresource.
pub async fn bind(client: &Client, pod: &PodRef, node: &str) -> Result<(), WriteError> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: pod.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.to_string()),
            ..ObjectReference::default()
        },
    };
    let body = serde_json::to_vec(&binding).map_err(|e| WriteError::Other(e.to_string()))?;
    // The answer (a Status, in Kubernetes) is not needed: any 2xx is a
    // binding, so the body is read as text and not decoded.
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", pod.namespace))
        .create_subresource("binding", &pod.name, &PostParams::default(), body)
        .map_err(|e| WriteError::Other(e.to_string()))?;
    client.request_text(request).await?;
    Ok(())
}

/// Sets the pod's PodScheduled condition to False/Unschedulable with
/// `message`.
pub async fn mark_unschedulable(
    client: &Client,
    pod: &PodRef,
    message: &str,
) -> Result<(), WriteError> {
    let now = Timestamp::now().to_string();
    let patch = serde_json::json!({
        "status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": now,
        }]}
    });
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    api.patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    Ok(())
}

/// Events queued for writing at low priority: a bounded queue drained by
/// one task with a few writes in flight, so events never hold up bindings.
/// When the queue is full, events are dropped (logged at debug), as
/// client-go's event broadcaster drops them under pressure.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<(PodRef, EventType, &'static str, String)>,
}

impl EventSink {
    /// Starts the writer task; `capacity` events may wait, `concurrency`
    /// are written at once.
    pub fn start(recorder: Recorder, capacity: usize, concurrency: usize) -> EventSink {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let events =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
        tokio::spawn(events.for_each_concurrent(
            concurrency.max(1),
            move |(pod, kind, reason, message): (PodRef, EventType, &'static str, String)| {
                let recorder = recorder.clone();
                async move {
                    recorder
                        .publish_about(pod.object_reference(), kind, reason, &message)
                        .await;
                }
            },
        ));
        EventSink { tx }
    }

    fn send(&self, pod: &PodRef, kind: EventType, reason: &'static str, message: String) {
        if self
            .tx
            .try_send((pod.clone(), kind, reason, message))
            .is_err()
        {
            tracing::debug!(pod = %pod.name, reason, "event dropped: queue full");
        }
    }

    /// `Scheduled`: "Successfully assigned ns/pod to node".
    pub fn scheduled(&self, pod: &PodRef, node: &str) {
        let message = format!(
            "Successfully assigned {}/{} to {node}",
            pod.namespace, pod.name
        );
        self.send(pod, EventType::Normal, "Scheduled", message);
    }

    /// `FailedScheduling` with the diagnosis.
    pub fn failed(&self, pod: &PodRef, message: &str) {
        self.send(
            pod,
            EventType::Warning,
            "FailedScheduling",
            message.to_string(),
        );
    }
}
