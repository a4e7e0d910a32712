//! The custom resources served now, next to the static built-ins of
//! [`RESOURCES`](crate::resources::RESOURCES).
//!
//! Two layers, because handlers hold `&'static Resource`s across awaits:
//!
//! - **Identities** (process-wide, never freed): one leaked [`Resource`]
//!   per distinct served version of a CustomResourceDefinition — its
//!   names, scope, categories, storage version, `status` and `scale`
//!   subresources and printer columns. A CRD updated back and forth
//!   between two shapes reuses the same two identities, so the leak is
//!   bounded by the distinct definitions ever served, not by the
//!   updates (schemas are not part of it: they live in the snapshot). What a
//!   [`Resource`] method needs to know about a custom resource
//!   ([`custom`]) is here.
//! - **The served set** (per apiserver, [`Served`]): a [`Snapshot`] of the
//!   served versions, each with its watch cache and structural schema,
//!   swapped as a whole when the CRDs change (`handlers::crds` rebuilds
//!   it from the CRD cache). A
//!   request parses its path against one snapshot; a version whose CRD
//!   goes away meanwhile still answers from etcd.
//!
//! Worked example: `crontabs.stable.example.com` with versions `v1`
//! (storage) and `v1beta1` gives two identities, two caches over the one
//! etcd prefix `/registry/stable.example.com/crontabs/`, and objects
//! stored as `stable.example.com/v1` read back through `v1beta1` with only
//! `apiVersion` rewritten (`None` conversion, `conversion`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use serde_json::Value;

use crate::cache::{CacheConfig, WatchCache};
use crate::crd_schema::Schema;
use crate::registry::Registry;
use crate::resources::{Resource, RESOURCES};

/// One printer column of a CRD version (`additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    /// A simple JSONPath: `.spec.cronSpec`, `.status.replicas`.
    pub json_path: String,
}

/// The `scale` subresource of a CRD version: where its replicas and
/// selector live (simple JSONPaths such as `.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    /// Empty when the CRD names none.
    pub label_selector: String,
}

/// Everything that makes one served version of a custom resource what it
/// is; equal identities share one [`Resource`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// The version objects are stored at.
    pub storage_version: String,
    /// Whether the version has a `status` subresource.
    pub status: bool,
    /// The version's `scale` subresource, if it has one.
    pub scale: Option<ScalePaths>,
    pub columns: Vec<Column>,
}

/// What [`Resource`] methods know of a custom resource.
#[derive(Debug)]
pub struct Custom {
    pub resource: &'static Resource,
    /// The same resource at its storage version.
    pub storage: &'static Resource,
    pub categories: &'static [&'static str],
    pub status: bool,
    pub scale: Option<ScalePaths>,
    pub columns: Vec<Column>,
}

#[derive(Default)]
struct Interned {
    by_identity: HashMap<Identity, &'static Custom>,
    /// Keyed by the address of `Custom::resource`.
    by_address: HashMap<usize, &'static Custom>,
}

fn interned() -> &'static RwLock<Interned> {
    static INTERNED: OnceLock<RwLock<Interned>> = OnceLock::new();
    INTERNED.get_or_init(Default::default)
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn leak_all(v: &[String]) -> &'static [&'static str] {
    Box::leak(
        v.iter()
            .map(|s| leak(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

/// The one [`Resource`] of `id`, made (and leaked) the first time.
pub fn intern(id: &Identity) -> &'static Resource {
    if let Some(c) = interned().read().by_identity.get(id) {
        return c.resource;
    }
    let storage = (id.version != id.storage_version).then(|| {
        intern(&Identity {
            version: id.storage_version.clone(),
            ..id.clone()
        })
    });
    let mut table = interned().write();
    if let Some(c) = table.by_identity.get(id) {
        return c.resource;
    }
    let resource: &'static Resource = Box::leak(Box::new(Resource {
        name: leak(&id.plural),
        singular: leak(&id.singular),
        kind: leak(&id.kind),
        group: leak(&id.group),
        version: leak(&id.version),
        namespaced: id.namespaced,
        short_names: leak_all(&id.short_names),
    }));
    let custom: &'static Custom = Box::leak(Box::new(Custom {
        resource,
        storage: storage.unwrap_or(resource),
        categories: leak_all(&id.categories),
        status: id.status,
        scale: id.scale.clone(),
        columns: id.columns.clone(),
    }));
    table.by_identity.insert(id.clone(), custom);
    table
        .by_address
        .insert(resource as *const Resource as usize, custom);
    resource
}

/// What is known of `r` if it is a custom resource; `None` for built-ins.
pub fn custom(r: &Resource) -> Option<&'static Custom> {
    if RESOURCES.as_ptr_range().contains(&(r as *const Resource)) {
        return None;
    }
    interned()
        .read()
        .by_address
        .get(&(r as *const Resource as usize))
        .copied()
}

/// One served version of a custom resource.
pub struct Entry {
    pub resource: &'static Resource,
    pub cache: WatchCache,
    /// The CRD is being deleted: no creates.
    pub terminating: bool,
    /// The version's structural schema (validation, defaulting, pruning).
    pub schema: Option<Arc<Schema>>,
}

/// One served version as the CRDs describe it.
pub struct Definition {
    pub id: Identity,
    /// Its CRD is being deleted.
    pub terminating: bool,
    pub schema: Option<Arc<Schema>>,
}

/// The custom resources served at one moment.
#[derive(Default)]
pub struct Snapshot {
    pub entries: Vec<Entry>,
    /// Each custom group with its served versions, highest priority
    /// (kube's version order: GA, beta, alpha, other) first; the groups
    /// in the order discovery lists them.
    pub groups: Vec<(String, Vec<String>)>,
}

impl Snapshot {
    /// The served version `version` of `plural` in `group`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.resource.group == group && e.resource.version == version && e.resource.name == plural
        })
    }

    /// The entry serving `r`.
    pub fn entry(&self, r: &Resource) -> Option<&Entry> {
        self.entries.iter().find(|e| std::ptr::eq(e.resource, r))
    }

    /// The structural schema of the custom resource `r`, if served: what
    /// server-side apply reads `x-kubernetes-list-type` and
    /// `x-kubernetes-list-map-keys` from (`Schema::root`).
    pub fn schema(&self, r: &Resource) -> Option<Arc<Schema>> {
        self.entry(r).and_then(|e| e.schema.clone())
    }

    /// The served versions of a custom group.
    pub fn versions(&self, group: &str) -> Option<&[String]> {
        self.groups
            .iter()
            .find(|(g, _)| g == group)
            .map(|(_, v)| v.as_slice())
    }
}

/// One apiserver's served custom resources.
pub struct Served {
    current: RwLock<Arc<Snapshot>>,
    registry: Registry,
    config: CacheConfig,
    /// Whether the CRDs in storage have been read once (for `/readyz`).
    ready: AtomicBool,
    /// Held while the served set is rebuilt and the CRDs reconciled, so
    /// an older rebuild never replaces a newer one.
    pub reconciling: tokio::sync::Mutex<()>,
}

impl Served {
    pub fn new(registry: Registry, config: CacheConfig) -> Served {
        Served {
            current: Default::default(),
            registry,
            config,
            ready: AtomicBool::new(false),
            reconciling: Default::default(),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().clone()
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Serves what `definitions` describe (each identity with whether its
    /// CRD is being deleted), keeping the caches of versions that stay the
    /// same; marks the set ready.
    pub fn replace(&self, definitions: Vec<Definition>) {
        let mut current = self.current.write();
        let mut entries = Vec::with_capacity(definitions.len());
        for Definition {
            id,
            terminating,
            schema,
        } in definitions
        {
            let resource = intern(&id);
            let cache = match current.entry(resource) {
                Some(e) => e.cache.clone(),
                None => WatchCache::start(resource, self.registry.clone(), self.config.clone()),
            };
            entries.push(Entry {
                resource,
                cache,
                terminating,
                schema,
            });
        }
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for e in &entries {
            let (group, version) = (e.resource.group, e.resource.version.to_string());
            match groups.iter_mut().find(|(g, _)| g == group) {
                Some((_, versions)) if !versions.contains(&version) => versions.push(version),
                Some(_) => {}
                None => groups.push((group.to_string(), vec![version])),
            }
        }
        for (_, versions) in &mut groups {
            versions.sort_by(|a, b| version_order(a, b));
        }
        // As kube's aggregator lists CRD groups (all of one priority): by
        // their APIService's name, `<preferred version>.<group>`.
        groups.sort_by_cached_key(|(group, versions)| format!("{}.{group}", versions[0]));
        *current = Arc::new(Snapshot { entries, groups });
        self.ready.store(true, Ordering::Release);
    }

    /// A cache for a custom resource no longer served (a request that
    /// parsed its path just before its CRD went): a transient one, read
    /// from etcd.
    pub fn transient_cache(&self, r: &'static Resource) -> WatchCache {
        WatchCache::start(r, self.registry.clone(), self.config.clone())
    }
}

/// Kubernetes' version priority (`version.CompareKubeAwareVersionStrings`):
/// `v2` before `v1` before `v1beta2` before `v1beta1` before `v1alpha1`,
/// then anything else alphabetically.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn rank(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        let (class, minor) = if let Some(m) = tail.strip_prefix("beta") {
            (2, m)
        } else if let Some(m) = tail.strip_prefix("alpha") {
            (1, m)
        } else {
            return None;
        };
        Some((class, major, minor.parse().ok()?))
    }
    match (rank(a), rank(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Every version of a stored CRD as an identity, each with whether it is
/// served; `None` when the CRD has no storage version.
pub fn identities(crd: &Value) -> Option<Vec<(Identity, bool)>> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec["versions"].as_array()?;
    let storage_version = versions
        .iter()
        .find(|v| v["storage"] == true)
        .map(|v| text(&v["name"]))?;
    let kind = text(&names["kind"]);
    let singular = match names["singular"].as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => kind.to_lowercase(),
    };
    let mut out = Vec::new();
    for v in versions {
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| Column {
                        name: text(&c["name"]),
                        kind: text(&c["type"]),
                        format: text(&c["format"]),
                        description: text(&c["description"]),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        json_path: text(&c["jsonPath"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let scale = &v["subresources"]["scale"];
        let id = Identity {
            group: text(&spec["group"]),
            version: text(&v["name"]),
            plural: text(&names["plural"]),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced: spec["scope"] == "Namespaced",
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            storage_version: storage_version.clone(),
            status: v["subresources"]["status"].is_object(),
            scale: scale.is_object().then(|| ScalePaths {
                spec_replicas: text(&scale["specReplicasPath"]),
                status_replicas: text(&scale["statusReplicasPath"]),
                label_selector: text(&scale["labelSelectorPath"]),
            }),
            columns,
        };
        out.push((id, v["served"] == true));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crontab(version: &str, storage: &str) -> Identity {
        Identity {
            group: "stable.example.com".into(),
            version: version.into(),
            plural: "crontabs".into(),
            singular: "crontab".into(),
            kind: "CronTab".into(),
            namespaced: true,
            short_names: vec!["ct".into()],
            categories: vec![],
            storage_version: storage.into(),
            status: false,
            scale: None,
            columns: vec![],
        }
    }

    #[test]
    fn identities_are_interned_and_keyed_by_group() {
        let v1 = intern(&crontab("v1", "v1"));
        assert!(std::ptr::eq(v1, intern(&crontab("v1", "v1"))));
        let beta = intern(&crontab("v1beta1", "v1"));
        let c = custom(beta).unwrap();
        assert!(std::ptr::eq(c.storage, v1));
        assert!(std::ptr::eq(custom(v1).unwrap().storage, v1));
        assert_eq!(
            beta.key(Some("ns"), "x"),
            "/registry/stable.example.com/crontabs/ns/x"
        );
        assert_eq!(beta.api_version(), "stable.example.com/v1beta1");
        assert!(custom(Resource::find("", "pods").unwrap()).is_none());
    }

    #[test]
    fn versions_sort_as_kubernetes_sorts_them() {
        let mut v = vec!["v1alpha1", "foo", "v1beta1", "v1", "v2", "v1beta2", "bar"];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            v,
            ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"]
        );
    }
}
