//! The HTTP edge: routing, request decoding, and the one place where
//! [`Error`]s become `Status` responses. Every request first passes
//! [`authenticate_and_authorize`] (401/403 before any routing, as in
//! kube-apiserver's filter chain).
//!
//! Paths under `/api/v1` and `/apis/<group>/<version>` are parsed by hand
//! (the namespaced and cluster-scoped shapes overlap, e.g.
//! `/api/v1/namespaces/x` is the namespace `x`, `/api/v1/namespaces/x/pods`
//! its pods), against the built-ins and the custom resources served now.

mod apply;
mod controllerrevisions;
mod crds;
mod cronjobs;
mod daemonsets;
mod delete;
mod discovery;
mod endpointslices;
mod events;
mod eviction;
mod exec;
mod fields;
pub mod fuzz_api;
mod jobs;
mod kubernetes_service;
mod meta;
mod namespaces;
mod openapi;
mod patch;
mod pdbs;
mod portforward;
mod protobuf;
mod rest;
mod scale;
mod schema;
mod secrets;
mod serviceaccounts;
mod services;
mod statefulsets;
mod subresources;
mod table;
mod validation;
mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

pub(crate) use meta::{new_uid, parse_query, watch_flag};
use serde_json::Value;

use crate::auth::{self, Attributes, Auth, Denied, User};
use crate::cache::WatchCache;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::resources::{Resource, RESOURCES};

pub use discovery::KUBE_VERSION;

/// The largest request body accepted (kube-apiserver's 3 MiB).
pub const MAX_BODY: usize = 3 << 20;

/// What every handler shares.
pub(crate) struct AppState {
    pub registry: Registry,
    /// One cache per entry of [`RESOURCES`], in the same order.
    pub caches: Vec<WatchCache>,
    /// The custom resources served now, each with its cache.
    pub served: crate::served::Served,
    /// Whether the default namespaces exist (checked once at start).
    pub namespaces_ready: AtomicBool,
    /// Authentication and authorization.
    pub auth: Auth,
    /// Whether the bootstrap RBAC policy exists (or RBAC is off).
    pub rbac_ready: AtomicBool,
    /// How `pods/log` reaches kubelets (plain HTTP, or TLS with a client
    /// certificate).
    pub kubelet: crate::kubelet_client::KubeletClient,
    /// Whether the ServiceAccount admission plugin runs on pod creates.
    pub service_account_admission: bool,
    /// The ranges Services get their ClusterIPs and NodePorts from.
    pub services: crate::registry::ServiceRanges,
    /// Where the `kubernetes` Service points for this apiserver.
    pub advertise: Option<std::net::SocketAddr>,
}

impl AppState {
    /// Creates the default namespaces and, with RBAC on, the bootstrap
    /// policy that are missing (in the background).
    pub fn bootstrap(self: &Arc<Self>) {
        let s = self.clone();
        tokio::spawn(async move { namespaces::bootstrap(&s).await });
        let weak = Arc::downgrade(self);
        tokio::spawn(kubernetes_service::keep(weak, self.advertise));
        tokio::spawn(crds::run(Arc::downgrade(self)));
        if self.auth.rbac_enabled() {
            let s = self.clone();
            tokio::spawn(async move { rbac_bootstrap(&s).await });
        } else {
            self.rbac_ready.store(true, Ordering::Release);
        }
    }
}

/// Creates each bootstrap ClusterRole and ClusterRoleBinding that is
/// missing; retries (capped backoff) until storage answers.
async fn rbac_bootstrap(s: &AppState) {
    let objects = auth::bootstrap::cluster_roles()
        .into_iter()
        .map(|o| ("clusterroles", o))
        .chain(
            auth::bootstrap::cluster_role_bindings()
                .into_iter()
                .map(|o| ("clusterrolebindings", o)),
        );
    for (resource, mut obj) in objects {
        let Some(r) = Resource::find(auth::rbac::GROUP, resource) else {
            continue;
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        obj["metadata"]["uid"] = meta::new_uid().into();
        obj["metadata"]["creationTimestamp"] = meta::now_rfc3339().into();
        let mut backoff = std::time::Duration::from_millis(50);
        loop {
            let done = match s.registry.get(r, None, &name).await {
                Ok(_) => true,
                Err(Error::NotFound { .. }) => {
                    match s.registry.create(r, None, &name, obj.clone()).await {
                        Ok(_) | Err(Error::AlreadyExists { .. }) => true,
                        Err(e) => {
                            tracing::debug!(error = %e, name, "creating bootstrap RBAC policy");
                            false
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, name, "reading bootstrap RBAC policy");
                    false
                }
            };
            if done {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
        }
    }
    // The authorizer reads the caches: ready once they hold the policy.
    for resource in ["clusterroles", "clusterrolebindings"] {
        let Some(r) = Resource::find(auth::rbac::GROUP, resource) else {
            continue;
        };
        while let Err(e) = s.cache(r).wait_fresh(None).await {
            tracing::debug!(error = %e, resource, "waiting for the RBAC cache");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    s.rbac_ready.store(true, Ordering::Release);
}

impl AppState {
    /// The watch cache of `r`: a built-in's, or a served custom
    /// resource's (a transient one when its CRD went meanwhile).
    fn cache(&self, r: &'static Resource) -> WatchCache {
        if let Some(i) = RESOURCES.iter().position(|x| std::ptr::eq(x, r)) {
            return self.caches[i].clone();
        }
        match self.served.snapshot().entry(r) {
            Some(e) => e.cache.clone(),
            None => self.served.transient_cache(r),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.code() >= 500 {
            tracing::warn!(error = %self, "request failed");
        }
        json_response(self.code(), self.status().to_string().into())
    }
}

pub(crate) fn json_response(code: u16, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn value_response(v: Value) -> Response {
    json_response(200, v.to_string().into())
}

/// Every request is authenticated and authorized first, then counted
/// against `limits` (it needs the user: `system:masters` is never refused).
pub(crate) fn router(state: Arc<AppState>, limits: crate::limits::MaxInFlight) -> Router {
    let ok = || async { "ok" };
    Router::new()
        .route(
            "/version",
            get(|| async { value_response(discovery::version()) }),
        )
        .route(
            "/version/",
            get(|| async { value_response(discovery::version()) }),
        )
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::serve))
        .route("/api", get(api_root))
        .route("/api/", get(api_root))
        .route("/apis", get(apis_root))
        .route("/apis/", get(apis_root))
        .route(
            "/openapi/v3",
            get(|State(s): State<Arc<AppState>>| async move {
                value_response(openapi::root(&s.served.snapshot()))
            }),
        )
        .route("/openapi/v3/{*gv}", get(openapi_group_version))
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            post(self_subject_access_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(subject_access_review),
        )
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            post(self_subject_review),
        )
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(serviceaccounts::token_review),
        )
        .route(
            "/.well-known/openid-configuration",
            get(serviceaccounts::openid_configuration),
        )
        .route("/openid/v1/jwks", get(serviceaccounts::jwks))
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            get(exec::exec).post(exec::exec),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/attach",
            get(exec::attach).post(exec::attach),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/portforward",
            get(portforward::port_forward).post(portforward::port_forward),
        )
        .fallback(api)
        .layer(axum::middleware::from_fn_with_state(
            limits,
            crate::limits::max_in_flight,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate_and_authorize,
        ))
        .with_state(state)
}

/// Authenticates the request (the TLS connection's [`auth::tls::Peer`], if
/// any, and its bearer token) and authorizes its [`Attributes`]; 401 or 403
/// `Status` answers stop it here. The user travels on as an extension.
async fn authenticate_and_authorize(
    State(s): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<auth::tls::Peer>>()
        .map(|c| &c.0);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = match s.auth.authenticate(peer, authorization, &s.caches) {
        Ok(u) => u,
        Err(_) => return json_response(401, auth::unauthorized_status().to_string().into()),
    };
    let headers = req.headers();
    let header_text = |name: &str| -> Result<Vec<String>> {
        headers
            .get_all(name)
            .iter()
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| Error::BadRequest(format!("the {name} header is not valid text")))
            })
            .collect()
    };
    // As Kubernetes: one user at most, and groups only together with a user.
    let impersonation = header_text("impersonate-user").and_then(|users| {
        let groups = header_text("impersonate-group")?;
        match users.as_slice() {
            [_, _, ..] => Err(Error::BadRequest(
                "only one Impersonate-User header may be given".into(),
            )),
            [] if !groups.is_empty() => Err(Error::BadRequest(
                "requested impersonation of groups without impersonating a user".into(),
            )),
            _ => Ok((users.into_iter().next(), groups)),
        }
    });
    let (as_user, as_groups) = match impersonation {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let as_groups: Vec<&str> = as_groups.iter().map(String::as_str).collect();
    let user = match s
        .auth
        .impersonate(user, as_user.as_deref(), &as_groups, &s.caches)
    {
        Ok(u) => u,
        Err(denied) => {
            let (a, reason) = *denied;
            return json_response(403, auth::forbidden_status(&a, &reason).to_string().into());
        }
    };
    tracing::Span::current().record("user", user.name.as_str());
    let attrs = Attributes::from_request(
        user,
        req.method().as_str(),
        req.uri().path(),
        req.uri().query().unwrap_or_default(),
    );
    if let Err(denied) = s.auth.authorize(&attrs, &s.caches) {
        let reason = match denied {
            Denied::Forbidden(reason) => reason,
            Denied::Unauthorized => String::new(),
        };
        return json_response(
            403,
            auth::forbidden_status(&attrs, &reason).to_string().into(),
        );
    }
    let escalation = auth::escalation_checks(&attrs);
    if let Some(first) = escalation.first() {
        let denied = escalation
            .iter()
            .map(|extra| s.auth.authorize(extra, &s.caches))
            .all(|r| r.is_err());
        if denied {
            let reason = "writing RBAC objects needs the escalate (roles) or bind (bindings) verb";
            return json_response(
                403,
                auth::forbidden_status(first, reason).to_string().into(),
            );
        }
    }
    if let Err(e) = auth::node_restriction::admit_request(&s.auth, &attrs, &s.caches) {
        return e.into_response();
    }
    req.extensions_mut().insert(attrs.user);
    next.run(req).await
}

/// The body of a review request, unconverted (they may be protobuf).
async fn review_body(headers: &HeaderMap, body: Body) -> Result<(String, Bytes)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| Error::TooLarge(MAX_BODY))?;
    if bytes.is_empty() {
        return Err(Error::BadRequest("a request body is required".into()));
    }
    Ok((ct, bytes))
}

fn created(v: Result<Value>) -> Response {
    match v {
        Ok(v) => json_response(201, v.to_string().into()),
        Err(e) => e.into_response(),
    }
}

async fn self_subject_access_review(
    State(s): State<Arc<AppState>>,
    Extension(user): Extension<User>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    created(
        async {
            let (ct, body) = review_body(&headers, body).await?;
            auth::review::self_subject_access_review(&s.auth, &s.caches, &user, &ct, &body)
        }
        .await,
    )
}

async fn subject_access_review(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    created(
        async {
            let (ct, body) = review_body(&headers, body).await?;
            auth::review::subject_access_review(&s.auth, &s.caches, &ct, &body)
        }
        .await,
    )
}

async fn self_subject_review(Extension(user): Extension<User>) -> Response {
    created(Ok(auth::review::self_subject_review(&user)))
}

/// `GET /api`: `APIVersions`, or the core group aggregated when the
/// client asks for it.
async fn api_root(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    use discovery::aggregated::{self, Format};
    match aggregated::negotiate(&headers) {
        Ok(Format::Legacy) => {
            aggregated::respond(Format::Legacy, discovery::api_versions(), &headers)
        }
        Ok(f @ Format::Aggregated(v)) => {
            let doc = aggregated::core(v, &s.served.snapshot());
            aggregated::respond(f, doc, &headers)
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /apis`: the `APIGroupList`, or every group aggregated when the
/// client asks for it.
async fn apis_root(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    use discovery::aggregated::{self, Format};
    let served = s.served.snapshot();
    match aggregated::negotiate(&headers) {
        Ok(Format::Legacy) => {
            aggregated::respond(Format::Legacy, discovery::api_group_list(&served), &headers)
        }
        Ok(f @ Format::Aggregated(v)) => {
            aggregated::respond(f, aggregated::apis(v, &served), &headers)
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /openapi/v3/<group-version>` (the `?hash=` is only a cache key).
async fn openapi_group_version(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(gv): axum::extract::Path<String>,
) -> Response {
    match openapi::group_version(&gv, &s.served.snapshot()) {
        Some(doc) => json_response(200, doc),
        None => Error::NoRoute.into_response(),
    }
}

/// 200 once every watch cache has listed; 500 naming those that have not.
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let waiting: Vec<&str> = s
        .caches
        .iter()
        .filter(|c| c.revision() < 0)
        .map(|c| c.resource().name)
        .collect();
    let namespaces = s.namespaces_ready.load(Ordering::Acquire);
    let rbac = s.rbac_ready.load(Ordering::Acquire);
    let crds = s.served.ready();
    if waiting.is_empty() && namespaces && rbac && crds {
        return (StatusCode::OK, "ok").into_response();
    }
    let mut body = String::new();
    if !waiting.is_empty() {
        body += &format!("[-]watch-cache not ready: {}\n", waiting.join(","));
    }
    if !namespaces {
        body += "[-]default-namespaces not created yet\n";
    }
    if !rbac {
        body += "[-]poststarthook/rbac/bootstrap-roles not finished\n";
    }
    if !crds {
        body += "[-]poststarthook/crd-informer-synced not finished\n";
    }
    body += "readyz check failed\n";
    (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
}

/// A parsed request path.
enum Target {
    /// `/api/v1`, `/apis/<group>/<version>`.
    ResourceList(String, String),
    Group(String),
    Collection(&'static Resource, Option<String>),
    Item(&'static Resource, Option<String>, String),
    /// `…/<name>/status`: only `status` changes through it.
    Status(&'static Resource, Option<String>, String),
    /// `…/<name>/<sub>` for the other subresources (`binding`, `scale`, `log`).
    Sub(&'static Resource, Option<String>, String, &'static str),
}

/// The resources with a `status` subresource (a custom resource's from
/// its CRD version).
fn has_status(r: &Resource) -> bool {
    if let Some(c) = crate::served::custom(r) {
        return c.status;
    }
    matches!(
        r.name,
        "customresourcedefinitions"
            | "pods"
            | "deployments"
            | "replicasets"
            | "nodes"
            | "namespaces"
            | "services"
            | "jobs"
            | "cronjobs"
            | "statefulsets"
            | "daemonsets"
            | "poddisruptionbudgets"
    )
}

/// Parses `path` against the built-ins and the custom resources `served`.
fn parse_path(path: &str, served: &crate::served::Snapshot) -> Result<Target> {
    let path = path.trim_end_matches('/');
    let (group, version, rest) = if let Some(rest) = path.strip_prefix("/api/v1") {
        ("", "v1", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/") {
        let (group, rest) = rest.split_once('/').unwrap_or((rest, ""));
        if rest.is_empty() {
            return Ok(Target::Group(group.to_string()));
        }
        let (version, rest) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let builtin = version == "v1" && discovery::groups().contains(&group);
        let custom = served
            .versions(group)
            .is_some_and(|v| v.iter().any(|v| v == version));
        if !builtin && !custom {
            return Err(Error::NoRoute);
        }
        (group, version, rest)
    } else {
        return Err(Error::NoRoute);
    };
    if !rest.is_empty() && !rest.starts_with('/') {
        return Err(Error::NoRoute);
    }
    let seg: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let find = |name: &str| {
        Resource::find(group, name)
            .filter(|r| r.version == version)
            .or_else(|| served.find(group, version, name).map(|e| e.resource))
            .ok_or(Error::NoRoute)
    };
    match seg.as_slice() {
        [] => Ok(Target::ResourceList(group.to_string(), version.to_string())),
        [res] => Ok(Target::Collection(find(res)?, None)),
        // A namespace's own status, not a resource called "status" in it.
        [res @ "namespaces", name, "status"] => {
            let r = find(res)?;
            if !has_status(r) {
                return Err(Error::NoRoute);
            }
            Ok(Target::Status(r, None, name.to_string()))
        }
        // The namespace controller's subresource of a namespace.
        [res @ "namespaces", name, "finalize"] => {
            Ok(Target::Sub(find(res)?, None, name.to_string(), "finalize"))
        }
        ["namespaces", ns, res] => {
            let r = find(res)?;
            if !r.namespaced {
                return Err(Error::NoRoute);
            }
            Ok(Target::Collection(r, Some(ns.to_string())))
        }
        ["namespaces", ns, res, name] => {
            let r = find(res)?;
            if !r.namespaced {
                return Err(Error::NoRoute);
            }
            Ok(Target::Item(r, Some(ns.to_string()), name.to_string()))
        }
        [res, name] => {
            let r = find(res)?;
            if r.namespaced {
                return Err(Error::NoRoute);
            }
            Ok(Target::Item(r, None, name.to_string()))
        }
        ["namespaces", ns, res, name, "status"] => {
            let r = find(res)?;
            if !r.namespaced || !has_status(r) {
                return Err(Error::NoRoute);
            }
            Ok(Target::Status(r, Some(ns.to_string()), name.to_string()))
        }
        [res, name, "status"] => {
            let r = find(res)?;
            if r.namespaced || !has_status(r) {
                return Err(Error::NoRoute);
            }
            Ok(Target::Status(r, None, name.to_string()))
        }
        ["namespaces", ns, res, name, sub] => {
            let r = find(res)?;
            let sub = subresources::SUBRESOURCES
                .iter()
                .find(|(of, s)| *of == r.name && s == sub)
                .map(|(_, s)| *s)
                .or_else(|| (*sub == "scale" && scale::has_scale(r)).then_some("scale"))
                .ok_or(Error::NoRoute)?;
            Ok(Target::Sub(r, Some(ns.to_string()), name.to_string(), sub))
        }
        [res, name, "scale"] => {
            let r = find(res)?;
            if r.namespaced || !scale::has_scale(r) {
                return Err(Error::NoRoute);
            }
            Ok(Target::Sub(r, None, name.to_string(), "scale"))
        }
        _ => Err(Error::NoRoute),
    }
}

async fn api(
    State(s): State<Arc<AppState>>,
    Extension(user): Extension<User>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match serve(&s, &user, method, uri, headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    s: &Arc<AppState>,
    user: &User,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let query = meta::parse_query(uri.query().unwrap_or_default());
    let served = s.served.snapshot();
    let target = parse_path(uri.path(), &served)?;
    let not_allowed = || {
        Error::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource: {method}"
        ))
    };
    match (target, &method) {
        (Target::ResourceList(group, version), &Method::GET) => {
            discovery::resource_list(&group, &version, &served)
                .map(value_response)
                .ok_or(Error::NoRoute)
        }
        (Target::Group(g), &Method::GET) => discovery::api_group(&g, &served)
            .map(value_response)
            .ok_or(Error::NoRoute),
        (Target::Collection(r, ns), &Method::GET) => {
            let q = rest::ListQuery::parse(&query, r, ns)?;
            if q.watch {
                watch::watch(s, r, q, as_table(&headers)).await
            } else {
                rest::list(s, r, q, as_table(&headers)).await
            }
        }
        (Target::Collection(r, ns), &Method::POST) if r.namespaced == ns.is_some() => {
            let body = read_body(&headers, body, true).await?;
            let fv = fields::WriteOptions::parse(&query)?;
            let manager = apply::update_manager(&query, &headers, "CreateOptions")?;
            let record = apply::Record::Update(&manager);
            rest::create(s, r, ns.as_deref(), body, fv, user, record).await
        }
        (Target::Item(r, ns, name), &Method::GET) => {
            rest::get(s, r, ns.as_deref(), &name, as_table(&headers)).await
        }
        (Target::Status(r, ns, name), &Method::GET) => {
            rest::get(s, r, ns.as_deref(), &name, false).await
        }
        (Target::Status(r, ns, name), &Method::PUT) => {
            let body = read_body(&headers, body, true).await?;
            let fv = fields::WriteOptions::parse(&query)?;
            let manager = apply::update_manager(&query, &headers, "UpdateOptions")?;
            rest::update_status(s, r, ns.as_deref(), &name, None, body, fv, &manager).await
        }
        (Target::Status(r, ns, name), &Method::PATCH) if apply::is_apply(&headers) => {
            let body = read_body(&headers, body, true).await?;
            let fv = fields::WriteOptions::parse(&query)?;
            apply::apply_status(s, r, ns.as_deref(), &name, &query, body, fv).await
        }
        (Target::Status(r, ns, name), &Method::PATCH) => {
            let kind = patch_type(&headers)?;
            let body = read_body(&headers, body, true).await?;
            let fv = fields::WriteOptions::parse(&query)?;
            let manager = apply::update_manager(&query, &headers, "PatchOptions")?;
            let ns = ns.as_deref();
            rest::update_status(s, r, ns, &name, Some(kind), body, fv, &manager).await
        }
        (Target::Item(r, ns, name), &Method::PUT) => {
            let body = read_body(&headers, body, true).await?;
            let fv = fields::WriteOptions::parse(&query)?;
            let manager = apply::update_manager(&query, &headers, "UpdateOptions")?;
            rest::update(s, r, ns.as_deref(), &name, body, fv, user, &manager).await
        }
        (Target::Item(r, ns, name), &Method::PATCH) if apply::is_apply(&headers) => {
            let body = read_body(&headers, body, true).await?;
            let fv = fields::WriteOptions::parse(&query)?;
            apply::apply(s, r, ns.as_deref(), &name, &query, body, fv, user).await
        }
        (Target::Item(r, ns, name), &Method::PATCH) => {
            let kind = patch_type(&headers)?;
            let body = read_body(&headers, body, true).await?;
            let fv = fields::WriteOptions::parse(&query)?;
            let manager = apply::update_manager(&query, &headers, "PatchOptions")?;
            let ns = ns.as_deref();
            rest::patch(s, r, ns, &name, kind, body, fv, user, &manager).await
        }
        (Target::Item(r, None, name), &Method::DELETE) if crds::is_crds(r) => {
            let body = read_body(&headers, body, false).await?;
            let opts = delete::Options::parse(&query, &body)?;
            crds::delete(s, &name, opts).await
        }
        (Target::Item(r, ns, name), &Method::DELETE) => {
            let body = read_body(&headers, body, false).await?;
            let opts = delete::Options::parse(&query, &body)?;
            delete::delete(s, r, ns.as_deref(), &name, opts).await
        }
        (Target::Collection(r, None), &Method::DELETE) if crds::is_crds(r) => {
            let q = rest::ListQuery::parse(&query, r, None)?;
            let body = read_body(&headers, body, false).await?;
            let opts = delete::Options::parse(&query, &body)?;
            crds::delete_collection(s, &q.filter, opts).await
        }
        // deletecollection: on a namespace's collection, or on a
        // cluster-scoped one (not on all namespaces, nor on namespaces).
        (Target::Collection(r, ns), &Method::DELETE)
            if r.namespaced == ns.is_some() && r.name != "namespaces" =>
        {
            let q = rest::ListQuery::parse(&query, r, ns)?;
            let body = read_body(&headers, body, false).await?;
            let opts = delete::Options::parse(&query, &body)?;
            delete::delete_collection(s, r, q, opts).await
        }
        (Target::Sub(r, ns, name, "scale"), _) => {
            let ns = ns.as_deref();
            scale::serve(s, r, ns, &name, &method, &headers, body, &query).await
        }
        (Target::Sub(_, ns, name, sub), _) => {
            let ns = ns.unwrap_or_default();
            match (sub, &method) {
                ("binding", &Method::POST) => {
                    let body = read_body(&headers, body, true).await?;
                    subresources::bind(s, &ns, &name, body).await
                }
                ("log", &Method::GET) => subresources::log(s, &ns, &name, &query).await,
                ("eviction", &Method::POST) => {
                    let body = read_body(&headers, body, true).await?;
                    eviction::evict(s, &ns, &name, &query, body).await
                }
                ("token", &Method::POST) => {
                    let body = read_body(&headers, body, true).await?;
                    serviceaccounts::token_request(s, &ns, &name, &body).await
                }
                ("finalize", &Method::PUT) => {
                    let body = read_body(&headers, body, true).await?;
                    namespaces::serve_finalize(s, &name, &body).await
                }
                _ => Err(not_allowed()),
            }
        }
        _ => Err(not_allowed()),
    }
}

/// Whether the client prefers a `meta.k8s.io/v1 Table` (kubectl get).
fn as_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(table::wanted)
}

/// Reads a request body of at most [`MAX_BODY`] bytes as JSON (a
/// protobuf body of a kind [`protobuf`] knows is converted).
async fn read_body(headers: &HeaderMap, body: Body, required: bool) -> Result<Bytes> {
    let mut is_protobuf = false;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let media = ct.split(';').next().unwrap_or_default().trim();
        is_protobuf = media == protobuf::MEDIA_TYPE;
        let json = media == "application/json"
            || media.ends_with("+json")
            || media.is_empty()
            || media == apply::MEDIA_TYPE;
        if !json && !is_protobuf {
            return Err(Error::UnsupportedMediaType(ct.to_string()));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(Error::TooLarge(MAX_BODY));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| Error::TooLarge(MAX_BODY))?;
    if required && bytes.is_empty() {
        return Err(Error::BadRequest("a request body is required".into()));
    }
    if is_protobuf && !bytes.is_empty() {
        return Ok(protobuf::decode(&bytes)?.to_string().into());
    }
    Ok(bytes)
}

/// The patch flavour a PATCH request's Content-Type names.
fn patch_type(headers: &HeaderMap) -> Result<patch::PatchType> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    patch::PatchType::from_media_type(media.split(';').next().unwrap_or_default().trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_items_status_and_subresources() {
        let none = crate::served::Snapshot::default();
        assert!(matches!(
            parse_path("/api/v1/namespaces/a/status", &none),
            Ok(Target::Status(r, None, name)) if r.name == "namespaces" && name == "a"
        ));
        assert!(matches!(
            parse_path("/api/v1/namespaces/a/pods", &none),
            Ok(Target::Collection(r, Some(ns))) if r.name == "pods" && ns == "a"
        ));
        assert!(matches!(
            parse_path("/api/v1/namespaces/a/pods/p/status", &none),
            Ok(Target::Status(r, Some(_), _)) if r.name == "pods"
        ));
        assert!(matches!(
            parse_path("/apis/apps/v1/namespaces/a/deployments/d/scale", &none),
            Ok(Target::Sub(_, Some(_), _, "scale"))
        ));
        assert!(matches!(
            parse_path("/api/v1/namespaces/a/nothing", &none),
            Err(Error::NoRoute)
        ));
        assert!(matches!(
            parse_path("/apis/apps/v2/namespaces/a/deployments", &none),
            Err(Error::NoRoute)
        ));
    }
}
