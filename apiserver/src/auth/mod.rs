//! Authentication and authorization, as kube-apiserver does them.
//!
//! # Layout
//!
//! - `authn` — who: client certificates (CN/O), `--token-auth-file` bearer
//!   tokens, anonymous.
//! - `jwt` — JWS compact signing and verifying (ES256, RS256) and the PEM
//!   keys for it.
//! - `tokens` — bound service account tokens: minting (TokenRequest),
//!   checking (the JWT bearer authenticator, TokenReview) and the OIDC
//!   discovery documents of the issuer.
//! - `request` — what: [`Attributes`] (verb, namespace, group, resource,
//!   subresource, name, or a non-resource path) derived from the request.
//! - `rbac` — the RBAC authorizer over the watch caches of the four RBAC kinds.
//! - `node` — the Node authorizer for kubelets.
//! - `bootstrap` — the default ClusterRoles and ClusterRoleBindings.
//! - `review` — SelfSubjectAccessReview, SubjectAccessReview and
//!   SelfSubjectReview (`kubectl auth can-i`, `kubectl auth whoami`).
//! - `tls` — the TLS listener of `--secure-port`, and who each connection's
//!   client certificate names.
//!
//! Requests on the secure port are authenticated by client certificate,
//! then bearer token (the token file, then service account JWTs), then (with `--anonymous-auth`) as anonymous. The
//! plain loopback port is kube-apiserver's old "insecure port": every
//! request there is `system:unsecured` in `system:masters`, unless a token
//! file is configured, in which case a valid bearer token is required there
//! too. Members of `system:masters` are always allowed; everyone else goes
//! through the `--authorization-mode` chain (AlwaysAllow, AlwaysDeny, Node,
//! RBAC), the first Allow winning.

pub mod authn;
pub mod bootstrap;
pub mod jwt;
pub mod node;
pub mod node_restriction;
pub mod rbac;
pub mod request;
pub mod review;
pub mod tls;
pub mod tokens;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::cache::WatchCache;
pub use authn::TokenFile;
use rbac::{Decision, PolicyCache, RbacCaches};
pub use request::Attributes;

/// The group that is always allowed everything.
pub const MASTERS: &str = "system:masters";
/// The user of the plain (insecure) port when no token file is set.
pub const UNSECURED: &str = "system:unsecured";

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// Further attributes (a service account token's pod, node, token id).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// One `--authorization-mode` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    AlwaysAllow,
    AlwaysDeny,
    Node,
    Rbac,
}

impl FromStr for AuthorizationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "AlwaysAllow" => Ok(AuthorizationMode::AlwaysAllow),
            "AlwaysDeny" => Ok(AuthorizationMode::AlwaysDeny),
            "Node" => Ok(AuthorizationMode::Node),
            "RBAC" => Ok(AuthorizationMode::Rbac),
            other => Err(format!(
                "authorization mode {other:?} is not supported (AlwaysAllow, AlwaysDeny, Node, RBAC)"
            )),
        }
    }
}

/// How requests are authenticated and authorized.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `--token-auth-file`, parsed.
    pub tokens: Option<TokenFile>,
    /// `--anonymous-auth` (secure port only).
    pub anonymous: bool,
    /// `--authorization-mode`, in order.
    pub modes: Vec<AuthorizationMode>,
    /// Service account tokens: minted by TokenRequest, accepted as bearer
    /// tokens. `None`: neither.
    pub service_accounts: Option<Arc<tokens::ServiceAccountTokens>>,
}

impl Default for AuthConfig {
    /// kube-apiserver's defaults: anonymous allowed, AlwaysAllow.
    fn default() -> Self {
        AuthConfig {
            tokens: None,
            anonymous: true,
            modes: vec![AuthorizationMode::AlwaysAllow],
            service_accounts: None,
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no acceptable credentials.
    Unauthorized,
    /// 403, with the authorizers' reasons.
    Forbidden(String),
}

/// The authenticator and authorizer chain of one apiserver.
pub(crate) struct Auth {
    pub config: AuthConfig,
    policy: PolicyCache,
}

impl Auth {
    pub fn new(config: AuthConfig) -> Auth {
        Auth {
            config,
            policy: PolicyCache::default(),
        }
    }

    /// Whether RBAC is among the modes (and the bootstrap policy is due).
    pub fn rbac_enabled(&self) -> bool {
        self.config.modes.contains(&AuthorizationMode::Rbac)
    }

    /// Who makes a request: `peer` is the TLS connection's client
    /// certificate identity (`None` on the plain port), `authorization`
    /// the `Authorization` header; `caches` are the watch caches
    /// (service account tokens are checked against them).
    pub fn authenticate(
        &self,
        peer: Option<&tls::Peer>,
        authorization: Option<&str>,
        caches: &[WatchCache],
    ) -> Result<User, Denied> {
        let token = authorization.and_then(authn::bearer_token);
        let by_token = |token: &str| {
            self.authenticate_token(token, &[], caches)
                .map(|(user, _)| user)
                .map_err(|_| Denied::Unauthorized)
        };
        let Some(peer) = peer else {
            // The plain loopback port.
            return match &self.config.tokens {
                None => Ok(authn::authenticated(User {
                    name: UNSECURED.into(),
                    uid: String::new(),
                    groups: vec![MASTERS.into()],
                    extra: Default::default(),
                })),
                Some(_) => token.ok_or(Denied::Unauthorized).and_then(by_token),
            };
        };
        if let Some(user) = &peer.user {
            return Ok(authn::authenticated(user.clone()));
        }
        if let Some(token) = token {
            if self.config.tokens.is_some() || self.config.service_accounts.is_some() {
                return by_token(token);
            }
        }
        if self.config.anonymous {
            Ok(authn::anonymous())
        } else {
            Err(Denied::Unauthorized)
        }
    }

    /// The bearer token authenticators, in kube's order: the token file,
    /// then service account tokens (for `audiences`, the API audiences
    /// when empty). The user (with `system:authenticated`) and the
    /// audiences it was accepted for; else why not (empty when no
    /// authenticator knows the token).
    pub fn authenticate_token(
        &self,
        token: &str,
        audiences: &[String],
        caches: &[WatchCache],
    ) -> Result<(User, Vec<String>), String> {
        if let Some(user) = self.config.tokens.as_ref().and_then(|t| t.user(token)) {
            return Ok((authn::authenticated(user.clone()), Vec::new()));
        }
        let Some(accounts) = &self.config.service_accounts else {
            return Err(String::new());
        };
        match accounts.authenticate(token, audiences, caches) {
            tokens::Verdict::Valid(user, auds) => Ok((authn::authenticated(user), auds)),
            tokens::Verdict::Invalid(why) => Err(format!("[invalid bearer token, {why}]")),
            tokens::Verdict::NotMine => Err(String::new()),
        }
    }

    /// Applies `Impersonate-User` / `Impersonate-Group` (kubectl `--as`,
    /// `--as-group`): `user` must be allowed to `impersonate` each `users`
    /// and `groups` named; the request then runs as that user, in those
    /// groups (plus `system:authenticated`). `Ok(user)` unchanged when no
    /// header asks for it. `Impersonate-Uid` and `Impersonate-Extra-*` are
    /// not supported (ignored).
    pub fn impersonate(
        &self,
        user: User,
        as_user: Option<&str>,
        as_groups: &[&str],
        caches: &[WatchCache],
    ) -> Result<User, Box<(Attributes, String)>> {
        let Some(name) = as_user else {
            if as_groups.is_empty() {
                return Ok(user);
            }
            let a = impersonation_attributes(user, "groups", as_groups[0]);
            return Err(Box::new((
                a,
                "requested groups without impersonating a user".into(),
            )));
        };
        let mut checks = vec![("users", name)];
        checks.extend(as_groups.iter().map(|g| ("groups", *g)));
        for (resource, target) in checks {
            let a = impersonation_attributes(user.clone(), resource, target);
            if let Err(denied) = self.authorize(&a, caches) {
                let reason = match denied {
                    Denied::Forbidden(r) => r,
                    Denied::Unauthorized => String::new(),
                };
                return Err(Box::new((a, reason)));
            }
        }
        let mut groups: Vec<String> = as_groups.iter().map(|g| g.to_string()).collect();
        if name != authn::ANONYMOUS && !groups.iter().any(|g| g == authn::AUTHENTICATED) {
            groups.push(authn::AUTHENTICATED.into());
        }
        Ok(User {
            name: name.to_string(),
            uid: String::new(),
            groups,
            extra: Default::default(),
        })
    }

    /// Runs the authorizer chain; `caches` are the apiserver's watch caches.
    pub fn authorize(&self, a: &Attributes, caches: &[WatchCache]) -> Result<(), Denied> {
        if a.user.groups.iter().any(|g| g == MASTERS) {
            return Ok(());
        }
        let mut reasons: Vec<String> = Vec::new();
        for mode in &self.config.modes {
            let decision = match mode {
                AuthorizationMode::AlwaysAllow => Decision::Allow,
                AuthorizationMode::AlwaysDeny => {
                    Decision::NoOpinion("Everything is forbidden.".into())
                }
                AuthorizationMode::Node => match find(caches, "", "pods") {
                    Some(pods) => node::authorize(a, pods),
                    None => Decision::NoOpinion(String::new()),
                },
                AuthorizationMode::Rbac => match rbac_caches(caches) {
                    Some(c) => self.policy.policy(&c).authorize(a),
                    None => Decision::NoOpinion(String::new()),
                },
            };
            match decision {
                Decision::Allow => return Ok(()),
                Decision::NoOpinion(why) if !why.is_empty() => reasons.push(why),
                Decision::NoOpinion(_) => {}
            }
        }
        Err(Denied::Forbidden(reasons.join("\n")))
    }
}

/// What else a write to an RBAC object must be allowed: it could grant more
/// than the writer holds. Kubernetes lets it through when the writer has the
/// `escalate` verb on roles, or `bind` on the role a binding refers to, or
/// already holds every permission granted. Ballast asks for the verb (any of
/// the candidates, checked without a name) and does not compute rule
/// coverage: stricter than Kubernetes, never looser. `system:masters`
/// passes, as everywhere.
pub fn escalation_checks(a: &Attributes) -> Vec<Attributes> {
    if !a.resource_request
        || a.api_group != "rbac.authorization.k8s.io"
        || !matches!(a.verb.as_str(), "create" | "update" | "patch")
    {
        return Vec::new();
    }
    let (verb, resources): (&str, &[&str]) = match a.resource.as_str() {
        "roles" => ("escalate", &["roles"]),
        "clusterroles" => ("escalate", &["clusterroles"]),
        "rolebindings" => ("bind", &["roles", "clusterroles"]),
        "clusterrolebindings" => ("bind", &["clusterroles"]),
        _ => return Vec::new(),
    };
    resources
        .iter()
        .map(|r| Attributes {
            verb: verb.into(),
            resource: r.to_string(),
            subresource: String::new(),
            name: String::new(),
            ..a.clone()
        })
        .collect()
}

/// "May `user` impersonate the `resource` (users, groups) `name`?"
fn impersonation_attributes(user: User, resource: &str, name: &str) -> Attributes {
    Attributes {
        user,
        verb: "impersonate".into(),
        resource_request: true,
        path: String::new(),
        namespace: String::new(),
        api_group: String::new(),
        api_version: "v1".into(),
        resource: resource.into(),
        subresource: String::new(),
        name: name.into(),
    }
}

fn find<'a>(caches: &'a [WatchCache], group: &str, name: &str) -> Option<&'a WatchCache> {
    caches
        .iter()
        .find(|c| c.resource().group == group && c.resource().name == name)
}

fn rbac_caches(caches: &[WatchCache]) -> Option<RbacCaches<'_>> {
    let f = |name| find(caches, rbac::GROUP, name);
    Some(RbacCaches {
        cluster_roles: f("clusterroles")?,
        roles: f("roles")?,
        cluster_bindings: f("clusterrolebindings")?,
        bindings: f("rolebindings")?,
    })
}

/// The 401 `Status`.
pub fn unauthorized_status() -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    })
}

/// The 403 `Status`, worded as kube-apiserver words it:
/// `pods "x" is forbidden: User "alice" cannot get resource "pods" in API
/// group "" in the namespace "ns"`.
pub fn forbidden_status(a: &Attributes, reason: &str) -> Value {
    let mut msg = if !a.resource_request {
        format!("User {:?} cannot {} path {:?}", a.user.name, a.verb, a.path)
    } else if !a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            a.user.name,
            a.verb,
            a.resource_and_sub(),
            a.api_group,
            a.namespace
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            a.user.name,
            a.verb,
            a.resource_and_sub(),
            a.api_group
        )
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if !a.resource_request || a.resource.is_empty() {
        format!("forbidden: {msg}")
    } else if a.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {:?} is forbidden: {msg}", a.name)
    };
    let mut details = json!({});
    if a.resource_request {
        if !a.name.is_empty() {
            details["name"] = json!(a.name);
        }
        if !a.api_group.is_empty() {
            details["group"] = json!(a.api_group);
        }
        details["kind"] = json!(a.resource);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            name: "alice".into(),
            uid: String::new(),
            groups: vec![authn::AUTHENTICATED.into()],
            extra: Default::default(),
        }
    }

    #[test]
    fn forbidden_messages_match_kubernetes() {
        let a = Attributes::from_request(alice(), "GET", "/api/v1/namespaces/ns/pods/x", "");
        assert_eq!(
            forbidden_status(&a, "")["message"],
            "pods \"x\" is forbidden: User \"alice\" cannot get resource \"pods\" in API group \"\" in the namespace \"ns\""
        );
        let a = Attributes::from_request(alice(), "GET", "/apis/apps/v1/deployments", "");
        assert_eq!(
            forbidden_status(&a, "")["message"],
            "deployments.apps is forbidden: User \"alice\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let a = Attributes::from_request(alice(), "GET", "/healthz", "");
        let s = forbidden_status(&a, "");
        assert_eq!(
            s["message"],
            "forbidden: User \"alice\" cannot get path \"/healthz\""
        );
        assert_eq!(s["code"], 403);
    }

    #[test]
    fn plain_port_trusts_unless_tokens_are_set() {
        let auth = Auth::new(AuthConfig::default());
        let u = auth.authenticate(None, None, &[]).unwrap();
        assert_eq!(u.name, UNSECURED);
        assert!(u.groups.contains(&MASTERS.to_string()));
        let tokens = TokenFile::parse("t1,alice,u1,dev").unwrap();
        let auth = Auth::new(AuthConfig {
            tokens: Some(tokens),
            ..AuthConfig::default()
        });
        assert_eq!(
            auth.authenticate(None, None, &[]),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            auth.authenticate(None, Some("Bearer nope"), &[]),
            Err(Denied::Unauthorized)
        );
        let u = auth.authenticate(None, Some("Bearer t1"), &[]).unwrap();
        assert_eq!(u.groups, vec!["dev", authn::AUTHENTICATED]);
    }

    #[test]
    fn secure_port_order_cert_token_anonymous() {
        let tokens = TokenFile::parse("t1,alice,u1").unwrap();
        let mut config = AuthConfig {
            tokens: Some(tokens),
            ..AuthConfig::default()
        };
        let peer = tls::Peer::default();
        let auth = Auth::new(config.clone());
        assert_eq!(
            auth.authenticate(Some(&peer), None, &[]).unwrap().name,
            authn::ANONYMOUS
        );
        assert_eq!(
            auth.authenticate(Some(&peer), Some("Bearer bad"), &[]),
            Err(Denied::Unauthorized)
        );
        let cert = tls::Peer {
            user: Some(User {
                name: "bob".into(),
                uid: String::new(),
                groups: vec!["g".into()],
                extra: Default::default(),
            }),
        };
        assert_eq!(
            auth.authenticate(Some(&cert), Some("Bearer t1"), &[])
                .unwrap()
                .name,
            "bob"
        );
        config.anonymous = false;
        let auth = Auth::new(config);
        assert_eq!(
            auth.authenticate(Some(&peer), None, &[]),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            auth.authenticate(Some(&peer), Some("Bearer t1"), &[])
                .unwrap()
                .name,
            "alice"
        );
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb() {
        let auth = Auth::new(AuthConfig {
            modes: vec![AuthorizationMode::AlwaysDeny],
            ..AuthConfig::default()
        });
        let admin = User {
            name: "root".into(),
            uid: String::new(),
            groups: vec![MASTERS.into()],
            extra: Default::default(),
        };
        let bob = auth.impersonate(admin, Some("bob"), &["dev"], &[]).unwrap();
        assert_eq!(bob.name, "bob");
        assert_eq!(bob.groups, vec!["dev", authn::AUTHENTICATED]);
        let (a, _) = *auth
            .impersonate(alice(), Some("bob"), &[], &[])
            .unwrap_err();
        assert_eq!(
            forbidden_status(&a, "")["message"],
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        assert_eq!(auth.impersonate(alice(), None, &[], &[]).unwrap(), alice());
    }

    #[test]
    fn modes_parse() {
        assert_eq!("RBAC".parse(), Ok(AuthorizationMode::Rbac));
        assert_eq!("Node".parse(), Ok(AuthorizationMode::Node));
        assert!("Webhook".parse::<AuthorizationMode>().is_err());
    }
}
