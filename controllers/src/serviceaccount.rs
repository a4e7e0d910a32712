//! The ServiceAccount controller, as kube-controller-manager's
//! `serviceaccount` controller: every active namespace has a `default`
//! ServiceAccount. A namespace's key is queued when the namespace appears
//! or changes and when one of the ServiceAccounts to ensure is deleted
//! from it; the sync creates what is missing (AlreadyExists is success,
//! and a namespace that is terminating is skipped: the apiserver refuses
//! new objects in it).

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::informer::{Cache, Informer};
use crate::queue::{Queue, Requeue};
use crate::Error;

/// The ServiceAccounts every namespace gets (kube's
/// `ServiceAccountsToEnsure`).
pub const ENSURED: &[&str] = &["default"];

/// The ServiceAccount controller; see the module doc.
pub struct ServiceAccountController {
    client: Client,
    namespaces: Informer<Namespace>,
    accounts: Informer<ServiceAccount>,
    /// Only this namespace, when the manager is confined to one.
    only: Option<String>,
}

impl ServiceAccountController {
    /// The controller with its own namespace and ServiceAccount informers
    /// (no other controller watches either); `only` confines it to one
    /// namespace.
    pub fn new(client: Client, only: Option<&str>) -> ServiceAccountController {
        let accounts = match only {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        ServiceAccountController {
            namespaces: Informer::new(Api::all(client.clone()), watcher::Config::default()),
            accounts: Informer::new(accounts, watcher::Config::default()),
            client,
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
        self.accounts.on_change(move |old, new| {
            if let (Some(sa), None) = (old, new) {
                let ns = sa.namespace().unwrap_or_default();
                if ENSURED.contains(&sa.name_any().as_str()) && wanted(&ns) {
                    q.add(ns);
                }
            }
        });
        let sync = Sync {
            client: self.client.clone(),
            namespaces: self.namespaces.cache(),
            accounts: self.accounts.cache(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.namespaces.run());
        tasks.spawn(self.accounts.run());
        sync.namespaces.wait_ready().await;
        sync.accounts.wait_ready().await;
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
    namespaces: Cache<Namespace>,
    accounts: Cache<ServiceAccount>,
}

impl Sync {
    async fn sync(&self, ns: String) -> Result<Requeue, Error> {
        let Some(namespace) = self.namespaces.get("", &ns) else {
            return Ok(None);
        };
        let terminating = namespace.metadata.deletion_timestamp.is_some()
            || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
        if terminating {
            return Ok(None);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        for name in ENSURED {
            if self.accounts.get(&ns, name).is_some() {
                continue;
            }
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(ns.clone()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            };
            match api.create(&PostParams::default(), &sa).await {
                Ok(_) => tracing::debug!(namespace = %ns, name, "created service account"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                // The namespace is being deleted: nothing to ensure.
                Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("terminat") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}
