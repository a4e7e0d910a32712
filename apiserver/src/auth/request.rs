//! Request attributes for authorization, derived from the method, path and
//! query the way kube-apiserver's `RequestInfoFactory` derives them — before
//! routing, so a request for a resource that does not exist is authorized
//! (and refused) like any other.
//!
//! ```text
//! GET    /api/v1/namespaces/a/pods              list   pods        ns a
//! GET    /api/v1/namespaces/a/pods?watch=true   watch  pods        ns a
//! GET    /api/v1/namespaces/a/pods/x            get    pods   x    ns a
//! PATCH  /api/v1/namespaces/a/pods/x/status     patch  pods/status x
//! DELETE /apis/apps/v1/namespaces/a/replicasets deletecollection
//! GET    /api/v1/namespaces/a                   get    namespaces a ns a
//! GET    /healthz                               get    path /healthz (non-resource)
//! ```

use super::User;

/// What a request asks to do, as the authorizers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: User,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for non-resource requests the lower-case method.
    pub verb: String,
    /// An API object (`/api/v1/…`, `/apis/<g>/<v>/…`) rather than a path.
    pub resource_request: bool,
    /// The request path (what non-resource rules match).
    pub path: String,
    pub namespace: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Sub-paths of a namespace that are its subresources, not resources in it.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl Attributes {
    /// The attributes of `method path?query` made by `user`.
    pub fn from_request(user: User, method: &str, path: &str, query: &str) -> Attributes {
        let mut a = Attributes {
            user,
            verb: method.to_ascii_lowercase(),
            resource_request: false,
            path: path.to_string(),
            namespace: String::new(),
            api_group: String::new(),
            api_version: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        // /api/v1/<…> or /apis/<group>/<version>/<…>; discovery documents
        // (`/api`, `/api/v1`, `/apis/apps/v1`) stay non-resource paths.
        let rest = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => {
                a.api_version = version.to_string();
                rest
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                a.api_group = group.to_string();
                a.api_version = version.to_string();
                rest
            }
            _ => return a,
        };
        a.resource_request = true;
        a.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
        let mut rest = rest;
        if rest[0] == "namespaces" && rest.len() > 1 {
            a.namespace = rest[1].to_string();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        a.resource = rest[0].to_string();
        a.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
        a.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
        if a.name.is_empty() {
            match a.verb.as_str() {
                "get" if watch_requested(query) => a.verb = "watch".into(),
                "get" => a.verb = "list".into(),
                "delete" => a.verb = "deletecollection".into(),
                _ => {}
            }
        }
        a
    }

    /// `pods` or `pods/status`.
    pub fn resource_and_sub(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// `watch=true` (or `1`) in the query: read exactly as the list handler
/// reads it (percent-decoded, the first `watch` wins), so a request is never
/// authorized as a list and then served as a watch.
fn watch_requested(query: &str) -> bool {
    crate::handlers::watch_flag(&crate::handlers::parse_query(query))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, query: &str) -> Attributes {
        Attributes::from_request(User::default(), method, path, query)
    }

    #[test]
    fn verbs_follow_method_and_shape() {
        let a = attrs("GET", "/api/v1/namespaces/a/pods", "");
        assert_eq!((a.verb.as_str(), a.resource.as_str()), ("list", "pods"));
        assert_eq!(a.namespace, "a");
        assert!(a.resource_request);
        assert_eq!(
            attrs("GET", "/api/v1/namespaces/a/pods", "watch=true&x=1").verb,
            "watch"
        );
        // Read as the handler reads it: percent-decoded, the first one wins.
        for query in ["watch=%74rue", "wat%63h=1", "watch=true&watch=false"] {
            assert_eq!(attrs("GET", "/api/v1/pods", query).verb, "watch", "{query}");
        }
        assert_eq!(
            attrs("GET", "/api/v1/pods", "watch=false&watch=true").verb,
            "list"
        );
        let a = attrs("GET", "/api/v1/namespaces/a/pods/x", "");
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("get", "x"));
        let a = attrs("PATCH", "/api/v1/namespaces/a/pods/x/status", "");
        assert_eq!(a.resource_and_sub(), "pods/status");
        assert_eq!(a.verb, "patch");
        let a = attrs("DELETE", "/apis/apps/v1/namespaces/a/replicasets", "");
        assert_eq!(a.verb, "deletecollection");
        assert_eq!(a.api_group, "apps");
        assert_eq!(
            attrs("POST", "/api/v1/namespaces/a/pods", "").verb,
            "create"
        );
        assert_eq!(
            attrs("PUT", "/api/v1/nodes/n1/status", "").subresource,
            "status"
        );
    }

    #[test]
    fn namespaces_are_their_own_namespace() {
        let a = attrs("GET", "/api/v1/namespaces/a", "");
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "a", "a")
        );
        let a = attrs("PUT", "/api/v1/namespaces/a/status", "");
        assert_eq!(
            (a.resource.as_str(), a.subresource.as_str()),
            ("namespaces", "status")
        );
        let a = attrs("GET", "/api/v1/namespaces", "");
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", ""));
    }

    #[test]
    fn discovery_and_health_are_paths() {
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps/v1",
            "/healthz",
            "/version",
        ] {
            let a = attrs("GET", p, "");
            assert!(!a.resource_request, "{p}");
            assert_eq!(a.verb, "get");
            assert_eq!(a.path, p);
        }
    }
}
