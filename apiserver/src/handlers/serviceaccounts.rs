//! The ServiceAccount admission plugin, as kube-apiserver's
//! (`plugin/pkg/admission/serviceaccount`): a created pod runs as
//! `spec.serviceAccountName`, `default` when it names none, and that
//! ServiceAccount must exist — 403 `pods "x" is forbidden: error looking up
//! service account ns/sa: serviceaccount "sa" not found` otherwise.
//!
//! The ServiceAccount is looked up in the apiserver's ServiceAccount watch
//! cache (kube's plugin reads an informer's lister), so a pod create costs
//! no storage read. Only when the cache does not hold it is storage read:
//! it may have been created a moment ago and not have reached the cache.
//! The `default` ServiceAccount is made by the controller manager's
//! ServiceAccount controller right after its namespace, so for it that
//! read is retried for a moment (as kube: 10 tries, 100–200 ms apart).
//! Mirror pods are left alone (NodeRestriction refuses one that names a
//! ServiceAccount).

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

use super::AppState;
use crate::error::{Error, Result};
use crate::resources::Resource;
use crate::selector::Filter;

/// The ServiceAccount a pod that names none runs as.
pub(crate) const DEFAULT: &str = "default";

/// The annotation that marks a mirror pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How many times the `default` ServiceAccount is looked up before the
/// pod is refused.
const DEFAULT_LOOKUPS: usize = 10;

/// Defaults `spec.serviceAccountName` (and its deprecated twin
/// `spec.serviceAccount`) of a pod being created in `ns` and checks the
/// ServiceAccount exists. `obj` is the request's pod before its name is
/// generated (the error names `generateName`, as kube's).
pub(super) async fn admit_pod(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    obj: &mut Value,
) -> Result<()> {
    if !s.service_account_admission || !r.group.is_empty() || r.name != "pods" {
        return Ok(());
    }
    let Some(ns) = ns else {
        return Ok(());
    };
    if !obj["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
        return Ok(());
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(()); // the typed check refuses it
    };
    let sa = match spec.get("serviceAccountName") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            // kube's older clients send only the deprecated field.
            match spec.get("serviceAccount") {
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                _ => DEFAULT.to_string(),
            }
        }
        Some(_) => return Ok(()), // the typed check refuses it
    };
    spec.insert("serviceAccountName".into(), json!(sa));
    if spec
        .get("serviceAccount")
        .is_none_or(|v| v.as_str() == Some(""))
    {
        spec.insert("serviceAccount".into(), json!(sa));
    }
    let accounts = Resource::find("", "serviceaccounts").expect("serviceaccounts are served");
    if cached(s, accounts, ns, &sa) {
        return Ok(());
    }
    let tries = if sa == DEFAULT { DEFAULT_LOOKUPS } else { 1 };
    let mut found = Err(Error::Internal(String::new()));
    for i in 0..tries {
        if i > 0 {
            let ms = rand::rng().random_range(100..200);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        found = s.registry.get(accounts, Some(ns), &sa).await.map(drop);
        if !matches!(found, Err(Error::NotFound { .. })) {
            break;
        }
    }
    let detail = match found {
        Ok(()) => return Ok(()),
        Err(Error::NotFound { .. }) => format!("serviceaccount \"{sa}\" not found"),
        Err(e) => return Err(e),
    };
    let meta = &obj["metadata"];
    let name = [&meta["name"], &meta["generateName"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find(|n| !n.is_empty())
        .unwrap_or("Unknown");
    Err(Error::Forbidden {
        group: r.group,
        resource: r.name,
        name: name.to_string(),
        detail: format!("error looking up service account {ns}/{sa}: {detail}"),
    })
}

/// Whether the ServiceAccount watch cache holds `ns/name`.
fn cached(s: &AppState, accounts: &'static Resource, ns: &str, name: &str) -> bool {
    let filter = Filter {
        namespace: Some(ns.to_string()),
        ..Filter::default()
    };
    s.cache(accounts)
        .list(&filter, 0)
        .items
        .iter()
        .any(|o| o.name == name)
}
