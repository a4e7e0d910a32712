//! The root CA publisher, as kube-controller-manager's
//! `root-ca-cert-publisher`: every active namespace has the ConfigMap
//! `kube-root-ca.crt` whose `ca.crt` is the cluster's CA bundle (the
//! manager's `--root-ca-file`, or its kubeconfig's CA), so a pod can verify
//! the apiserver; the ServiceAccount admission's `kube-api-access-*`
//! volume projects it next to the pod's token.
//!
//! A namespace's key is queued when the namespace appears or changes and
//! when its `kube-root-ca.crt` is changed or deleted; the sync creates the
//! ConfigMap, or puts back its data and description when they differ
//! (other fields and annotations are left alone, as kube).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::informer::{Cache, Informer};
use crate::queue::{Queue, Requeue};
use crate::Error;

/// The ConfigMap every namespace gets.
pub const CONFIG_MAP: &str = "kube-root-ca.crt";
/// Its key holding the CA bundle.
pub const KEY: &str = "ca.crt";
/// The annotation kube sets on it, and its text.
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The root CA publisher; see the module doc.
pub struct RootCaPublisher {
    client: Client,
    ca: String,
    namespaces: Informer<Namespace>,
    config_maps: Informer<ConfigMap>,
    /// Only this namespace, when the manager is confined to one.
    only: Option<String>,
}

impl RootCaPublisher {
    /// The publisher of the PEM bundle `ca`, with its own informers (the
    /// ConfigMap one only sees `kube-root-ca.crt`); `only` confines it to
    /// one namespace.
    pub fn new(client: Client, ca: &str, only: Option<&str>) -> RootCaPublisher {
        let config_maps = match only {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let by_name = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
        RootCaPublisher {
            namespaces: Informer::new(Api::all(client.clone()), watcher::Config::default()),
            config_maps: Informer::new(config_maps, by_name),
            client,
            ca: ca.to_string(),
            only: only.map(str::to_string),
        }
    }

    /// Watches and syncs with `workers` tasks until dropped.
    pub async fn run(mut self, workers: usize) {
        let queue: Queue<String> = Queue::new();
        let only = self.only.clone();
        let wanted = move |ns: &str| only.as_deref().is_none_or(|o| o == ns);
        let (q, w) = (queue.clone(), wanted.clone());
        self.namespaces.on_change(move |_, new| {
            if let Some(ns) = new.map(|n| n.name_any()).filter(|n| w(n)) {
                q.add(ns);
            }
        });
        let q = queue.clone();
        self.config_maps.on_change(move |old, new| {
            // A change of our own making is seen too; the sync is a no-op then.
            if let Some(cm) = old.or(new) {
                let ns = cm.namespace().unwrap_or_default();
                if cm.name_any() == CONFIG_MAP && wanted(&ns) {
                    q.add(ns);
                }
            }
        });
        let sync = Sync {
            client: self.client.clone(),
            ca: self.ca.clone(),
            namespaces: self.namespaces.cache(),
            config_maps: self.config_maps.cache(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.namespaces.run());
        tasks.spawn(self.config_maps.run());
        sync.namespaces.wait_ready().await;
        sync.config_maps.wait_ready().await;
        queue
            .run(workers, move |ns| {
                let sync = sync.clone();
                async move { sync.sync(ns).await }
            })
            .await;
    }
}

#[derive(Clone)]
struct Sync {
    client: Client,
    ca: String,
    namespaces: Cache<Namespace>,
    config_maps: Cache<ConfigMap>,
}

impl Sync {
    async fn sync(&self, ns: String) -> Result<Requeue, Error> {
        let Some(namespace) = self.namespaces.get("", &ns) else {
            return Ok(None);
        };
        if namespace.metadata.deletion_timestamp.is_some()
            || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
        {
            return Ok(None);
        }
        let data = BTreeMap::from([(KEY.to_string(), self.ca.clone())]);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        let result = match self.config_maps.get(&ns, CONFIG_MAP) {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(CONFIG_MAP.into()),
                        namespace: Some(ns.clone()),
                        annotations: Some(BTreeMap::from([(
                            DESCRIPTION_ANNOTATION.to_string(),
                            DESCRIPTION.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                api.create(&PostParams::default(), &cm).await.map(drop)
            }
            Some(cm) => {
                let described = cm
                    .annotations()
                    .get(DESCRIPTION_ANNOTATION)
                    .map(String::as_str)
                    == Some(DESCRIPTION);
                if cm.data.as_ref() == Some(&data) && described {
                    return Ok(None);
                }
                let mut cm = (*cm).clone();
                cm.data = Some(data);
                cm.annotations_mut()
                    .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
                api.replace(CONFIG_MAP, &PostParams::default(), &cm)
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => Ok(None),
            // Created meanwhile, or changed since the cache saw it: the
            // watch event queues the namespace again.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("terminat") => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
