//! Who may use the kubelet API, decided as the kubelet decides it.
//!
//! Authentication (`--client-ca-file`, `--anonymous-auth`): a client
//! certificate verified during the TLS handshake names the user (CN) and
//! its groups (O), plus `system:authenticated`; without one the request is
//! `system:anonymous` in `system:unauthenticated` when anonymous requests
//! are allowed, else it is answered `401 Unauthorized`. With
//! `--authentication-token-webhook`, a request without a certificate that
//! carries `Authorization: Bearer <token>` is checked with a TokenReview
//! to the apiserver: the user it names, or `401` when the token is not
//! authenticated (or the review fails). Reviews are cached as the
//! kubelet's webhook authenticator caches them: each answer for
//! `--authentication-token-webhook-cache-ttl` (2m), a failed review not at
//! all, at most [`CACHE_CAPACITY`] tokens. Without the flag a token counts
//! for nothing.
//!
//! Authorization (`--authorization-mode`): `AlwaysAllow`, or `Webhook`: a
//! SubjectAccessReview to the apiserver for the request's attributes, the
//! way the kubelet maps them — verb from the HTTP method (GET → get, POST
//! → create, …), resource `nodes`, name the node, and the subresource by
//! path:
//!
//! | path | subresource(s), first allowed wins |
//! |---|---|
//! | `/stats/…` | `stats` |
//! | `/metrics/…` | `metrics` |
//! | `/logs/…` | `log` |
//! | `/checkpoint/…` | `checkpoint` |
//! | `/pods`, `/runningpods/` | `pods`, then `proxy` |
//! | `/healthz/…` | `healthz`, then `proxy` |
//! | `/configz`, `/statusz` | `configz`/`statusz`, then `proxy` |
//! | anything else (`/containerLogs/…`, `/exec/…`) | `proxy` |
//!
//! (the `pods`/`healthz`/`configz` split is Kubernetes 1.33's fine-grained
//! kubelet authorization, on by default). A denial is `403` with the
//! kubelet's text, `Forbidden (user=…, verb=…, resource=nodes,
//! subresource(s)=[…])`; a review that fails is `500 Authorization error
//! (…)`. Answers are cached as the kubelet's webhook authorizer caches them:
//! allowed for `--authorization-webhook-cache-authorized-ttl` (5m),
//! denied for `--authorization-webhook-cache-unauthorized-ttl` (30s); a
//! zero TTL caches nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::tls::Peer;

/// The user of an anonymous request.
pub const ANONYMOUS: &str = "system:anonymous";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// Decisions the webhook cache holds at most; past that, expired ones are
/// dropped, and if none expired, all of them.
const CACHE_CAPACITY: usize = 8192;
/// How long one SubjectAccessReview may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// A user as authentication found it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// How requests are authorized (`--authorization-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Every authenticated (or anonymous, if allowed) request.
    AlwaysAllow,
    /// A SubjectAccessReview to the apiserver decides.
    Webhook,
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "AlwaysAllow" => Ok(AuthorizationMode::AlwaysAllow),
            "Webhook" => Ok(AuthorizationMode::Webhook),
            other => Err(format!(
                "authorization mode {other:?} is not supported (AlwaysAllow, Webhook)"
            )),
        }
    }
}

/// The kubelet API's security: TLS, authentication and authorization.
/// The default is the kubelet's without a configuration: plain HTTP here
/// (the kubelet would self-sign a certificate), anonymous requests
/// allowed, `AlwaysAllow`.
#[derive(Debug, Clone)]
pub struct ApiSecurity {
    /// The serving certificate chain and key, PEM: HTTPS when set.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// The CA client certificates must chain to, PEM (needs `tls`).
    pub client_ca: Option<Vec<u8>>,
    /// Serve requests without credentials as `system:anonymous`.
    pub anonymous: bool,
    pub authorization: AuthorizationMode,
    /// How long an allowed / a denied webhook decision is reused.
    pub authorized_ttl: Duration,
    pub unauthorized_ttl: Duration,
    /// Check bearer tokens with a TokenReview
    /// (`--authentication-token-webhook`).
    pub token_webhook: bool,
    /// How long a TokenReview's answer is reused.
    pub token_cache_ttl: Duration,
}

impl Default for ApiSecurity {
    fn default() -> Self {
        ApiSecurity {
            tls: None,
            client_ca: None,
            anonymous: true,
            authorization: AuthorizationMode::AlwaysAllow,
            authorized_ttl: Duration::from_secs(5 * 60),
            unauthorized_ttl: Duration::from_secs(30),
            token_webhook: false,
            token_cache_ttl: Duration::from_secs(2 * 60),
        }
    }
}

/// One authorization question: the kubelet's attributes of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub node: String,
    pub subresource: &'static str,
}

/// Whether `path` is `base` or below it (`/stats` and `/stats/summary`,
/// not `/statsx`).
fn is_subpath(path: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The subresources a request on `path` is authorized as, in order: the
/// first one allowed lets it through.
pub fn subresources(path: &str) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(2);
    let fine = [
        ("/pods", "pods"),
        ("/healthz", "healthz"),
        ("/configz", "configz"),
        ("/statusz", "statusz"),
        ("/runningpods/", "pods"),
    ];
    if let Some((_, s)) = fine.iter().find(|(base, _)| is_subpath(path, base)) {
        out.push(*s);
    }
    let coarse = [
        ("/stats/", "stats"),
        ("/metrics", "metrics"),
        ("/logs/", "log"),
        ("/checkpoint", "checkpoint"),
    ];
    match coarse.iter().find(|(base, _)| is_subpath(path, base)) {
        Some((_, s)) => out.push(*s),
        None => out.push("proxy"),
    }
    out
}

/// The API verb of an HTTP method, as the kubelet maps it (`""` for
/// others, which no rule grants).
pub fn verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// A decision kept until `expires`.
#[derive(Debug, Clone, Copy)]
struct Cached {
    allowed: bool,
    expires: Instant,
}

/// The authenticator and authorizer in front of the API's routes.
pub struct ApiAuth {
    anonymous: bool,
    mode: AuthorizationMode,
    /// The node requests are authorized against.
    node: String,
    client: kube::Client,
    authorized_ttl: Duration,
    unauthorized_ttl: Duration,
    /// Webhook decisions by (user, groups, attributes); a plain map under
    /// a lock, bounded by [`CACHE_CAPACITY`]: reviews are rare next to
    /// lookups, and a lookup is one hash.
    cache: Mutex<HashMap<CacheKey, Cached>>,
    token_webhook: bool,
    token_cache_ttl: Duration,
    /// TokenReview answers by token (`None`: not authenticated), bounded
    /// by [`CACHE_CAPACITY`] as the decisions are.
    tokens: Mutex<HashMap<String, (Option<User>, Instant)>>,
}

/// A webhook decision's key: the user, its groups and the attributes.
type CacheKey = (String, Vec<String>, Attributes);

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("anonymous", &self.anonymous)
            .field("mode", &self.mode)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Why a request goes no further.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no acceptable credentials.
    Unauthenticated,
    /// 403: every attribute set was denied.
    Forbidden(String),
    /// 500: the review could not be made.
    Error(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated => (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
            Refusal::Forbidden(m) => (StatusCode::FORBIDDEN, m).into_response(),
            Refusal::Error(m) => (StatusCode::INTERNAL_SERVER_ERROR, m).into_response(),
        }
    }
}

impl ApiAuth {
    /// Authorizes for `node` (the kubelet's node; a simulated kubelet
    /// hosting many uses its name prefix), reviewing through `client`.
    pub fn new(security: &ApiSecurity, node: &str, client: kube::Client) -> ApiAuth {
        ApiAuth {
            anonymous: security.anonymous,
            mode: security.authorization,
            node: node.to_string(),
            client,
            authorized_ttl: security.authorized_ttl,
            unauthorized_ttl: security.unauthorized_ttl,
            cache: Mutex::new(HashMap::new()),
            token_webhook: security.token_webhook,
            token_cache_ttl: security.token_cache_ttl,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Who made a request over a connection with `peer`'s certificate and
    /// the `authorization` header: the certificate's user, else (with the
    /// token webhook) the bearer token's, else anonymous if allowed.
    pub async fn authenticate(
        &self,
        peer: Option<&Peer>,
        authorization: Option<&str>,
    ) -> Result<User, Refusal> {
        if let Some(mut user) = peer.and_then(|p| p.user.clone()) {
            if !user.groups.iter().any(|g| g == AUTHENTICATED) {
                user.groups.push(AUTHENTICATED.to_string());
            }
            return Ok(user);
        }
        if let Some(token) = authorization
            .and_then(bearer_token)
            .filter(|_| self.token_webhook)
        {
            return self.token_user(token).await;
        }
        if self.anonymous {
            return Ok(User {
                name: ANONYMOUS.to_string(),
                uid: String::new(),
                groups: vec![UNAUTHENTICATED.to_string()],
            });
        }
        Err(Refusal::Unauthenticated)
    }

    /// The user of a bearer token, from the cache while fresh, else by a
    /// TokenReview; 401 when it is not authenticated or cannot be checked.
    async fn token_user(&self, token: &str) -> Result<User, Refusal> {
        let now = Instant::now();
        if let Some((user, expires)) = self.tokens.lock().expect("token cache").get(token) {
            if *expires > now {
                return user.clone().ok_or(Refusal::Unauthenticated);
            }
        }
        let user = match self.token_review(token).await {
            Ok(user) => user,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API token review failed");
                return Err(Refusal::Unauthenticated);
            }
        };
        if !self.token_cache_ttl.is_zero() {
            let mut cache = self.tokens.lock().expect("token cache");
            if cache.len() >= CACHE_CAPACITY {
                let now = Instant::now();
                cache.retain(|_, (_, expires)| *expires > now);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(
                token.to_string(),
                (user.clone(), Instant::now() + self.token_cache_ttl),
            );
        }
        user.ok_or(Refusal::Unauthenticated)
    }

    /// One TokenReview (for the API audiences): the user, or `None` when
    /// the apiserver does not authenticate the token.
    async fn token_review(&self, token: &str) -> Result<Option<User>, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| "the TokenReview timed out".to_string())?
                .map_err(|e| e.to_string())?;
        let status = answer
            .status
            .ok_or_else(|| "the TokenReview came back without a status".to_string())?;
        if !status.authenticated.unwrap_or(false) {
            if let Some(e) = status.error.filter(|e| !e.is_empty()) {
                tracing::debug!(error = %e, "kubelet API bearer token refused");
            }
            return Ok(None);
        }
        let info = status.user.unwrap_or_default();
        Ok(Some(User {
            name: info.username.unwrap_or_default(),
            uid: info.uid.unwrap_or_default(),
            groups: info.groups.unwrap_or_default(),
        }))
    }

    /// Whether `user` may make a `method` request on `path`.
    pub async fn authorize(&self, user: &User, method: &Method, path: &str) -> Result<(), Refusal> {
        if self.mode == AuthorizationMode::AlwaysAllow {
            return Ok(());
        }
        let verb = verb(method);
        let subs = subresources(path);
        for &sub in &subs {
            let attrs = Attributes {
                verb,
                node: self.node.clone(),
                subresource: sub,
            };
            match self.decide(user, &attrs).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(user = %user.name, verb, subresource = sub, error = %e, "kubelet API authorization error");
                    return Err(Refusal::Error(format!(
                        "Authorization error (user={}, verb={verb}, resource=nodes, subresource(s)=[{}])",
                        user.name,
                        subs.join(" ")
                    )));
                }
            }
        }
        tracing::debug!(user = %user.name, verb, subresources = ?subs, "kubelet API request forbidden");
        Err(Refusal::Forbidden(format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{}])",
            user.name,
            subs.join(" ")
        )))
    }

    /// The webhook's answer for `attrs`, from the cache while it is fresh.
    async fn decide(&self, user: &User, attrs: &Attributes) -> Result<bool, String> {
        let key = (user.name.clone(), user.groups.clone(), attrs.clone());
        let now = Instant::now();
        if let Some(c) = self.cache.lock().expect("auth cache").get(&key) {
            if c.expires > now {
                return Ok(c.allowed);
            }
        }
        let allowed = self.review(user, attrs).await?;
        let ttl = if allowed {
            self.authorized_ttl
        } else {
            self.unauthorized_ttl
        };
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().expect("auth cache");
            if cache.len() >= CACHE_CAPACITY {
                let now = Instant::now();
                cache.retain(|_, c| c.expires > now);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                Cached {
                    allowed,
                    expires: Instant::now() + ttl,
                },
            );
        }
        Ok(allowed)
    }

    /// One SubjectAccessReview: `true` when the apiserver allows.
    async fn review(&self, user: &User, attrs: &Attributes) -> Result<bool, String> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.to_string()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.to_string()),
                    name: Some(attrs.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| "the SubjectAccessReview timed out".to_string())?
                .map_err(|e| e.to_string())?;
        let status = answer
            .status
            .ok_or_else(|| "the SubjectAccessReview came back without a status".to_string())?;
        if let Some(e) = status.evaluation_error.filter(|e| !e.is_empty()) {
            tracing::debug!(error = %e, "SubjectAccessReview evaluation error");
        }
        Ok(status.allowed && !status.denied.unwrap_or(false))
    }

    /// Decisions held in the cache.
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.lock().expect("auth cache").len()
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The filter in front of every route: authenticate, authorize, then the
/// route; 401/403/500 with the kubelet's texts otherwise.
pub async fn filter(State(auth): State<Arc<ApiAuth>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| &c.0);
    let authorization = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = match auth.authenticate(peer, authorization).await {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if let Err(refusal) = auth.authorize(&user, &method, &path).await {
        return refusal.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_kubelets_subresources() {
        let cases: &[(&str, &[&str])] = &[
            ("/containerLogs/ns/pod/c", &["proxy"]),
            ("/exec/ns/pod/c", &["proxy"]),
            ("/run/ns/pod/c", &["proxy"]),
            ("/logs/", &["log"]),
            ("/logs/syslog", &["log"]),
            ("/logs", &["log"]),
            ("/logsx", &["proxy"]),
            ("/stats/summary", &["stats"]),
            ("/metrics", &["metrics"]),
            ("/metrics/cadvisor", &["metrics"]),
            ("/healthz", &["healthz", "proxy"]),
            ("/healthz/ping", &["healthz", "proxy"]),
            ("/healthzx", &["proxy"]),
            ("/pods", &["pods", "proxy"]),
            ("/runningpods/", &["pods", "proxy"]),
            ("/configz", &["configz", "proxy"]),
            ("/checkpoint/ns/pod/c", &["checkpoint"]),
            ("/", &["proxy"]),
        ];
        for (path, want) in cases {
            assert_eq!(subresources(path), *want, "{path}");
        }
    }

    #[test]
    fn methods_map_to_verbs() {
        assert_eq!(verb(&Method::GET), "get");
        assert_eq!(verb(&Method::POST), "create");
        assert_eq!(verb(&Method::PUT), "update");
        assert_eq!(verb(&Method::PATCH), "patch");
        assert_eq!(verb(&Method::DELETE), "delete");
        assert_eq!(verb(&Method::HEAD), "");
    }

    #[test]
    fn modes_parse_as_the_kubelets() {
        assert_eq!(
            "Webhook".parse::<AuthorizationMode>(),
            Ok(AuthorizationMode::Webhook)
        );
        assert_eq!(
            "AlwaysAllow".parse::<AuthorizationMode>(),
            Ok(AuthorizationMode::AlwaysAllow)
        );
        let err = "RBAC".parse::<AuthorizationMode>().unwrap_err();
        assert!(err.contains("not supported"), "{err}");
    }

    /// A client that reaches nothing: authentication never asks it.
    fn unreachable_client() -> kube::Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn anonymous_requests_are_401_unless_allowed() {
        let mut security = ApiSecurity::default();
        let auth = ApiAuth::new(&security, "node-1", unreachable_client());
        let anon = auth.authenticate(None, None).await.unwrap();
        assert_eq!(anon.name, ANONYMOUS);
        assert_eq!(anon.groups, [UNAUTHENTICATED]);
        security.anonymous = false;
        let auth = ApiAuth::new(&security, "node-1", unreachable_client());
        assert_eq!(
            auth.authenticate(None, None).await,
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            auth.authenticate(Some(&Peer::default()), None).await,
            Err(Refusal::Unauthenticated)
        );
        let peer = Peer {
            user: Some(User {
                name: "alice".into(),
                uid: String::new(),
                groups: vec!["dev".into()],
            }),
        };
        let alice = auth.authenticate(Some(&peer), None).await.unwrap();
        assert_eq!(alice.groups, ["dev", AUTHENTICATED]);
        // AlwaysAllow asks nobody.
        assert_eq!(
            auth.authorize(&alice, &Method::GET, "/containerLogs/a/b/c")
                .await,
            Ok(())
        );
    }

    /// A bearer token counts only with the token webhook; a review that
    /// fails is a 401 and is not cached.
    #[tokio::test]
    async fn bearer_tokens_need_the_token_webhook() {
        let mut security = ApiSecurity::default();
        let auth = ApiAuth::new(&security, "node-1", unreachable_client());
        let anon = auth
            .authenticate(None, Some("Bearer some.token.here"))
            .await
            .unwrap();
        assert_eq!(anon.name, ANONYMOUS);
        security.token_webhook = true;
        let auth = ApiAuth::new(&security, "node-1", unreachable_client());
        assert_eq!(
            auth.authenticate(None, Some("Bearer some.token.here"))
                .await,
            Err(Refusal::Unauthenticated)
        );
        assert!(auth.tokens.lock().unwrap().is_empty());
        // Not a bearer header: anonymous, as before.
        assert_eq!(
            auth.authenticate(None, Some("Basic abc"))
                .await
                .unwrap()
                .name,
            ANONYMOUS
        );
        assert_eq!(bearer_token("bearer  t "), Some("t"));
        assert_eq!(bearer_token("Bearer "), None);
    }

    /// A webhook that cannot be reached is a 500 naming the attributes,
    /// and nothing is cached.
    #[tokio::test]
    async fn a_failed_review_is_an_authorization_error() {
        let security = ApiSecurity {
            authorization: AuthorizationMode::Webhook,
            ..ApiSecurity::default()
        };
        let auth = ApiAuth::new(&security, "node-1", unreachable_client());
        let user = auth.authenticate(None, None).await.unwrap();
        let refusal = auth
            .authorize(&user, &Method::GET, "/healthz")
            .await
            .unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Error(
                "Authorization error (user=system:anonymous, verb=get, resource=nodes, subresource(s)=[healthz proxy])".into()
            )
        );
        assert_eq!(auth.cached(), 0);
    }
}
