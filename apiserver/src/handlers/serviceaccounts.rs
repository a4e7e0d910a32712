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
//!
//! Also the ServiceAccount token endpoints: the `token` subresource
//! (TokenRequest, `kubectl create token`), TokenReview, and the issuer's
//! OIDC discovery documents (`/.well-known/openid-configuration`,
//! `/openid/v1/jwks`); the tokens themselves are `auth::tokens`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{json, Value};

use super::AppState;
use crate::auth::tokens::Bound;
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
    if let Some(account) = cached_account(s, accounts, ns, &sa) {
        mount_api_access(s, obj, &account);
        return Ok(());
    }
    let tries = if sa == DEFAULT { DEFAULT_LOOKUPS } else { 1 };
    let mut found: Result<Value> = Err(Error::Internal(String::new()));
    for i in 0..tries {
        if i > 0 {
            let ms = rand::rng().random_range(100..200);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        found = match s.registry.get(accounts, Some(ns), &sa).await {
            Ok(account) => account.value(),
            Err(e) => Err(e),
        };
        if !matches!(found, Err(Error::NotFound { .. })) {
            break;
        }
    }
    let detail = match found {
        Ok(account) => {
            mount_api_access(s, obj, &account);
            return Ok(());
        }
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

/// The ServiceAccount `ns/name` if the watch cache holds it.
fn cached_account(
    s: &AppState,
    accounts: &'static Resource,
    ns: &str,
    name: &str,
) -> Option<Value> {
    let filter = Filter {
        namespace: Some(ns.to_string()),
        ..Filter::default()
    };
    s.cache(accounts)
        .list(&filter, 0)
        .items
        .iter()
        .find(|o| o.name == name)
        .and_then(|o| o.value().ok())
}

/// Where the token volume is mounted in every container.
const API_ACCESS_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The token volume's name prefix (a random 5-character suffix follows).
const API_ACCESS_VOLUME: &str = "kube-api-access";
/// kube's token volume validity: an hour and 7 s (the 7 s tell the
/// authenticator the token came from this volume).
const API_ACCESS_EXPIRATION: i64 = 3607;

/// kube's `mountServiceAccountToken`: unless `automountServiceAccountToken`
/// is false (the pod's, else the ServiceAccount's), every container and
/// init container without a mount at [`API_ACCESS_PATH`] mounts the pod's
/// `kube-api-access-<5 random>` projected volume there read-only (the
/// token, `kube-root-ca.crt`'s `ca.crt`, the namespace), added to the pod
/// when some container needs it. Only when this apiserver can mint tokens.
fn mount_api_access(s: &AppState, pod: &mut Value, account: &Value) {
    if !s
        .auth
        .config
        .service_accounts
        .as_ref()
        .is_some_and(|t| t.can_issue())
    {
        return;
    }
    let spec = &mut pod["spec"];
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if !automount {
        return;
    }
    let existing = spec["volumes"].as_array().and_then(|v| {
        v.iter()
            .filter_map(|v| v["name"].as_str())
            .find(|n| n.starts_with(&format!("{API_ACCESS_VOLUME}-")))
            .map(str::to_string)
    });
    let name = existing.clone().unwrap_or_else(|| {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut rng = rand::rng();
        let suffix: String = (0..5)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        format!("{API_ACCESS_VOLUME}-{suffix}")
    });
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec[list].as_array_mut() else {
            continue;
        };
        for c in containers {
            let mounts = &mut c["volumeMounts"];
            let has = mounts
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["mountPath"] == API_ACCESS_PATH));
            if has {
                continue;
            }
            if mounts.is_null() {
                *mounts = json!([]);
            }
            if let Some(m) = mounts.as_array_mut() {
                m.push(json!({"name": name, "readOnly": true, "mountPath": API_ACCESS_PATH}));
                needed = true;
            }
        }
    }
    if !needed || existing.is_some() {
        return;
    }
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": API_ACCESS_EXPIRATION, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    if spec["volumes"].is_null() {
        spec["volumes"] = json!([]);
    }
    if let Some(v) = spec["volumes"].as_array_mut() {
        v.push(volume);
    }
}

/// kube's default `spec.expirationSeconds` of a TokenRequest.
const DEFAULT_EXPIRATION: i64 = 60 * 60;
/// The shortest validity a TokenRequest may ask for.
const MIN_EXPIRATION: i64 = 10 * 60;
/// The longest validity a TokenRequest may ask for.
const MAX_EXPIRATION: i64 = 1 << 32;

/// `POST …/serviceaccounts/{name}/token` (kube's
/// `pkg/registry/core/serviceaccount/storage/token.go`): mints a token for
/// the ServiceAccount, optionally bound to a Pod or Secret of its
/// namespace; 201 with the TokenRequest and its `status.token`. Served
/// only with a signing key (404 otherwise, as kube does not install the
/// subresource then).
pub(super) async fn token_request(
    s: &AppState,
    ns: &str,
    name: &str,
    body: &[u8],
) -> Result<Response> {
    let tokens = s
        .auth
        .config
        .service_accounts
        .clone()
        .filter(|t| t.can_issue())
        .ok_or(Error::NoRoute)?;
    let mut req: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("the body is not a valid TokenRequest: {e}")))?;
    if !req.is_object() || !(req["spec"].is_object() || req["spec"].is_null()) {
        return Err(Error::BadRequest(
            "the body is not a valid TokenRequest".into(),
        ));
    }
    let spec = &req["spec"];
    let requested = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION,
        v => v
            .as_i64()
            .ok_or_else(|| Error::BadRequest("spec.expirationSeconds must be an integer".into()))?,
    };
    let invalid = |msg: &str| Error::Invalid {
        group: "authentication.k8s.io",
        kind: "TokenRequest",
        name: String::new(),
        causes: vec![crate::error::Cause {
            field: "spec.expirationSeconds".into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {requested}: {msg}"),
        }],
    };
    if requested < MIN_EXPIRATION {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if requested > MAX_EXPIRATION {
        return Err(invalid(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    if audiences.is_empty() {
        audiences = tokens.api_audiences().to_vec();
    }
    let accounts = Resource::find("", "serviceaccounts").expect("serviceaccounts are served");
    let account = s.registry.get(accounts, Some(ns), name).await?;
    let mut fresh = vec![(accounts, account.resource_version)];
    let account = account.value()?;
    let bound_ref = spec["boundObjectRef"].clone();
    let bound = if bound_ref.is_object() {
        let (bound, r, rv) = bound_object(s, ns, name, &bound_ref).await?;
        fresh.push((r, rv));
        Some(bound)
    } else {
        None
    };
    let seconds = tokens.capped(requested);
    let issued = tokens
        .issue(&account, bound.as_ref(), &audiences, seconds)
        .map_err(Error::Internal)?;
    // The authenticator reads the caches: a token works once they hold
    // what it was minted from.
    for (r, rv) in fresh {
        s.cache(r).wait_fresh(Some(rv)).await?;
    }
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({
        "name": name,
        "namespace": ns,
        "creationTimestamp": super::meta::now_rfc3339(),
    });
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(seconds);
    if !bound_ref.is_object() {
        req["spec"]["boundObjectRef"] = Value::Null;
    }
    req["status"] = json!({
        "token": issued.token,
        "expirationTimestamp": super::meta::rfc3339(issued.expires),
    });
    Ok(super::json_response(201, req.to_string().into()))
}

/// The object a TokenRequest's `boundObjectRef` names (a Pod running as
/// the ServiceAccount `sa`, or a Secret), checked as kube checks it, with
/// its resource and resourceVersion.
async fn bound_object(
    s: &AppState,
    ns: &str,
    sa: &str,
    reference: &Value,
) -> Result<(Bound, &'static Resource, i64)> {
    let text = |k: &str| reference[k].as_str().unwrap_or_default().to_string();
    let (kind, api_version, name, uid) =
        (text("kind"), text("apiVersion"), text("name"), text("uid"));
    let resource = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Pod") => "pods",
        ("v1", "Secret") => "secrets",
        _ => {
            let (group, version) = api_version
                .rsplit_once('/')
                .unwrap_or(("", api_version.as_str()));
            return Err(Error::BadRequest(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
    };
    let r = Resource::find("", resource).expect("pods and secrets are served");
    let object = s.registry.get(r, Some(ns), &name).await?;
    let rv = object.resource_version;
    let object = object.value()?;
    let actual_uid = object["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !uid.is_empty() && uid != actual_uid {
        return Err(Error::Conflict {
            group: "",
            resource: r.name,
            name,
            detail: format!(
                "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        });
    }
    let bound = if resource == "pods" {
        let runs_as = object["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or_default();
        if runs_as != sa {
            return Err(Error::BadRequest(format!(
                "cannot bind token for serviceaccount {sa:?} to pod running with different serviceaccount name."
            )));
        }
        let node = match object["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            Some(node) => {
                let nodes = Resource::find("", "nodes").expect("nodes are served");
                let node_uid = match s.registry.get(nodes, None, node).await {
                    Ok(n) => n.value()?["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    Err(Error::NotFound { .. }) => String::new(),
                    Err(e) => return Err(e),
                };
                Some((node.to_string(), node_uid))
            }
            None => None,
        };
        Bound::Pod {
            name,
            uid: actual_uid,
            node,
        }
    } else {
        Bound::Secret {
            name,
            uid: actual_uid,
        }
    };
    Ok((bound, r, rv))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub(super) async fn token_review(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    super::created(
        async {
            let (ct, body) = super::review_body(&headers, body).await?;
            crate::auth::review::token_review(&s.auth, &s.caches, &ct, &body)
        }
        .await,
    )
}

/// `GET /.well-known/openid-configuration`: the issuer's OIDC discovery
/// document (404 unless the issuer is an https URL or
/// `--service-account-jwks-uri` is set).
pub(super) async fn openid_configuration(State(s): State<Arc<AppState>>) -> Response {
    let doc = s
        .auth
        .config
        .service_accounts
        .as_ref()
        .and_then(|t| t.openid_configuration());
    match doc {
        Some(doc) => discovery_response(doc, "application/json"),
        None => Error::NoRoute.into_response(),
    }
}

/// `GET /openid/v1/jwks`: the keys that verify service account tokens.
pub(super) async fn jwks(State(s): State<Arc<AppState>>) -> Response {
    let keys = s
        .auth
        .config
        .service_accounts
        .as_ref()
        .filter(|t| t.openid_configuration().is_some())
        .map(|t| t.jwks());
    match keys {
        Some(keys) => discovery_response(keys, "application/jwk-set+json"),
        None => Error::NoRoute.into_response(),
    }
}

/// A discovery document, cacheable for an hour as kube serves them.
fn discovery_response(doc: Value, content_type: &'static str) -> Response {
    let mut resp = super::json_response(200, doc.to_string().into());
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}
