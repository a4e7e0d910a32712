//! The resources this apiserver serves, and where each keeps its objects.
//!
//! Worked example of the key layout (values are JSON, without
//! `metadata.resourceVersion`, which is the key's etcd `mod_revision`):
//!
//! ```text
//! /registry/namespaces/default            cluster-scoped: /registry/<resource>/<name>
//! /registry/pods/default/web-0            namespaced:     /registry/<resource>/<namespace>/<name>
//! /registry/deployments/default/web
//! /registry/events/default/web.17f3a        core/v1 and events.k8s.io/v1 Events alike
//! /registry/stable.example.com/crontabs/default/x   custom: /registry/<group>/<plural>/…
//! ```
//!
//! The built-ins are the static [`RESOURCES`]; custom resources are served
//! for CustomResourceDefinitions at run time (`served`), each version one
//! leaked [`Resource`] that the methods here recognise by its address.
//!
//! A resource may be a view of another's objects, as kube-apiserver's
//! cohabiting resources are: events.k8s.io/v1 Events are the core/v1 Events
//! under `/registry/events/`, stored in the core/v1 form and converted on
//! every read and write (`conversion`), so each group lists what the other
//! wrote and both share the Events' expiry leases.

/// One REST resource: its names, group/version and scope.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// Plural, lower-case: the URL segment and the etcd key segment.
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
}

/// Everything served, core/v1 first.
pub static RESOURCES: &[Resource] = &[
    Resource {
        name: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        group: "",
        version: "v1",
        namespaced: false,
        short_names: &["ns"],
    },
    Resource {
        name: "pods",
        singular: "pod",
        kind: "Pod",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["po"],
    },
    Resource {
        name: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["cm"],
    },
    Resource {
        name: "secrets",
        singular: "secret",
        kind: "Secret",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    Resource {
        name: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["sa"],
    },
    Resource {
        name: "services",
        singular: "service",
        kind: "Service",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["svc"],
    },
    Resource {
        name: "nodes",
        singular: "node",
        kind: "Node",
        group: "",
        version: "v1",
        namespaced: false,
        short_names: &["no"],
    },
    Resource {
        name: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["ep"],
    },
    Resource {
        name: "events",
        singular: "event",
        kind: "Event",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["ev"],
    },
    Resource {
        name: "deployments",
        singular: "deployment",
        kind: "Deployment",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["deploy"],
    },
    Resource {
        name: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["rs"],
    },
    Resource {
        name: "controllerrevisions",
        singular: "controllerrevision",
        kind: "ControllerRevision",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    Resource {
        name: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["ds"],
    },
    Resource {
        name: "events",
        singular: "event",
        kind: "Event",
        group: "events.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &["ev"],
    },
    Resource {
        name: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["sts"],
    },
    Resource {
        name: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        group: "discovery.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    Resource {
        name: "jobs",
        singular: "job",
        kind: "Job",
        group: "batch",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    Resource {
        name: "cronjobs",
        singular: "cronjob",
        kind: "CronJob",
        group: "batch",
        version: "v1",
        namespaced: true,
        short_names: &["cj"],
    },
    Resource {
        name: "leases",
        singular: "lease",
        kind: "Lease",
        group: "coordination.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    Resource {
        name: "roles",
        singular: "role",
        kind: "Role",
        group: "rbac.authorization.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    Resource {
        name: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        group: "rbac.authorization.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    Resource {
        name: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        group: "rbac.authorization.k8s.io",
        version: "v1",
        namespaced: false,
        short_names: &[],
    },
    Resource {
        name: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        group: "rbac.authorization.k8s.io",
        version: "v1",
        namespaced: false,
        short_names: &[],
    },
    Resource {
        name: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        group: "policy",
        version: "v1",
        namespaced: true,
        short_names: &["pdb"],
    },
    Resource {
        name: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        group: "apiextensions.k8s.io",
        version: "v1",
        namespaced: false,
        short_names: &["crd", "crds"],
    },
];

impl Resource {
    /// Looks a resource up by group and plural name.
    pub fn find(group: &str, name: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.name == name)
    }

    /// The Namespace resource.
    pub fn namespaces() -> &'static Resource {
        &RESOURCES[0]
    }

    /// The discovery categories the resource belongs to: `all` (what
    /// `kubectl get all` lists) for the workloads and services, as
    /// kube-apiserver has them; a custom resource's from its CRD.
    pub fn categories(&self) -> &'static [&'static str] {
        if let Some(c) = crate::served::custom(self) {
            return c.categories;
        }
        match self.name {
            "pods" | "services" | "deployments" | "replicasets" | "jobs" => &["all"],
            "statefulsets" => &["all"],
            "daemonsets" => &["all"],
            "cronjobs" => &["all"],
            _ => &[],
        }
    }

    /// The resource whose objects this one's are, in storage: itself, or
    /// the core/v1 Events for events.k8s.io/v1 Events (same keys, the
    /// core/v1 form, the same expiry leases).
    /// A custom resource's is the same resource at its CRD's storage
    /// version.
    pub fn storage(&'static self) -> &'static Resource {
        if let Some(c) = crate::served::custom(self) {
            return c.storage;
        }
        match (self.group, self.name) {
            (crate::conversion::EVENTS_GROUP, "events") => {
                Resource::find("", "events").expect("core/v1 Events are served")
            }
            _ => self,
        }
    }

    /// The name field selectors know the resource by: its plural, or
    /// `events.events.k8s.io` for the events.k8s.io/v1 view, whose field
    /// labels differ from core/v1's (`regarding.name`, not
    /// `involvedObject.name`). Custom resources have only the metadata
    /// fields, whatever their plural.
    pub fn field_set(&self) -> &'static str {
        if self.is_custom() {
            return "customresources";
        }
        match (self.group, self.name) {
            (crate::conversion::EVENTS_GROUP, "events") => crate::conversion::EVENTS_V1_FIELD_SET,
            _ => self.name,
        }
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the resource is served for a CustomResourceDefinition.
    pub fn is_custom(&self) -> bool {
        !RESOURCES
            .as_ptr_range()
            .contains(&(self as *const Resource))
    }

    /// The key segment under `/registry/`: the plural for built-ins,
    /// `<group>/<plural>` for custom resources (kube's layout, so two
    /// groups' `crontabs` never share keys).
    pub fn root(&self) -> String {
        if self.is_custom() {
            format!("{}/{}", self.group, self.name)
        } else {
            self.name.to_string()
        }
    }

    /// `/registry/<root>/`: every object of this resource.
    pub fn prefix(&self) -> String {
        format!("/registry/{}/", self.root())
    }

    /// The prefix of one namespace's objects, or of all of them.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.root(), ns),
            _ => self.prefix(),
        }
    }

    /// The key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/{}", self.root(), ns, name),
            _ => format!("/registry/{}/{}", self.root(), name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_registry_layout() {
        let pods = Resource::find("", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(pods.list_prefix(Some("default")), "/registry/pods/default/");
        let ns = Resource::namespaces();
        assert_eq!(ns.key(None, "default"), "/registry/namespaces/default");
        assert_eq!(ns.list_prefix(Some("x")), "/registry/namespaces/");
        assert_eq!(
            Resource::find("apps", "deployments").unwrap().api_version(),
            "apps/v1"
        );
        let jobs = Resource::find("batch", "jobs").unwrap();
        assert_eq!(jobs.api_version(), "batch/v1");
        assert_eq!(jobs.key(Some("ns"), "pi"), "/registry/jobs/ns/pi");
        assert_eq!(jobs.categories(), &["all"]);
        assert!(Resource::find("", "configmaps")
            .unwrap()
            .categories()
            .is_empty());
    }

    #[test]
    fn events_k8s_io_events_are_stored_as_the_core_events() {
        let core = Resource::find("", "events").unwrap();
        let v1 = Resource::find("events.k8s.io", "events").unwrap();
        assert!(std::ptr::eq(v1.storage(), core));
        assert!(std::ptr::eq(core.storage(), core));
        assert_eq!(v1.key(Some("ns"), "e"), core.key(Some("ns"), "e"));
        assert_eq!(v1.api_version(), "events.k8s.io/v1");
        assert_eq!(v1.field_set(), "events.events.k8s.io");
        assert_eq!(core.field_set(), "events");
    }
}
