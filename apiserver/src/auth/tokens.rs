//! Bound service account tokens, as kube-apiserver mints and checks them
//! (`pkg/serviceaccount/{jwt,claims}.go`): JWTs signed with
//! `--service-account-signing-key-file`, issued by the first
//! `--service-account-issuer`, verified against every
//! `--service-account-key-file` key and accepted from any of the issuers.
//!
//! A token's claims, as kube lays them out:
//!
//! ```json
//! {"aud": ["https://kubernetes.default.svc"], "exp": 1767229200, "iat": 1767225600,
//!  "iss": "https://kubernetes.default.svc", "jti": "5f1c…", "nbf": 1767225600,
//!  "sub": "system:serviceaccount:default:builder",
//!  "kubernetes.io": {"namespace": "default",
//!                    "serviceaccount": {"name": "builder", "uid": "9a0e…"},
//!                    "pod": {"name": "web-0", "uid": "41b2…"},
//!                    "node": {"name": "node-1", "uid": "77c3…"}}}
//! ```
//!
//! Checking one, in kube's order: a token that is no JWT, or names an
//! issuer not ours, is left to other authenticators; then the signature,
//! `exp`/`nbf`/`iat` with go-jose's 60 s leeway, the audiences (one must be
//! among the API audiences, or a TokenReview's), and with
//! `--service-account-lookup` the ServiceAccount and the bound Pod or
//! Secret must still exist with the uid of the claim and not be deleted
//! for longer than the leeway. The lookups read the watch caches (the
//! TokenRequest handler waits until the caches hold what it read, so a
//! fresh token works at once).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::jwt::{self, JwtError, SigningKey, VerifyingKey};
use super::User;
use crate::cache::WatchCache;
use crate::selector::{FieldSelector, Filter};

/// go-jose's leeway on `exp`, `nbf` and `iat`.
const LEEWAY: i64 = 60;
/// The group of every service account.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// `extra` keys of a service account user (kube's
/// `k8s.io/apiserver/pkg/authentication/serviceaccount`).
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// The apiserver flags of service account tokens.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `--service-account-issuer`: the first one signs, all are accepted.
    pub issuers: Vec<String>,
    /// `--service-account-signing-key-file`: a private key, PEM.
    pub signing_key_file: Option<PathBuf>,
    /// `--service-account-key-file`: public (or private) keys, PEM, that
    /// verify; the signing key's when none is given.
    pub key_files: Vec<PathBuf>,
    /// `--service-account-max-token-expiration`; zero: no cap.
    pub max_expiration: Duration,
    /// `--api-audiences`; the issuers when empty.
    pub api_audiences: Vec<String>,
    /// `--service-account-lookup`.
    pub lookup: bool,
    /// `--service-account-jwks-uri`.
    pub jwks_uri: Option<String>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            issuers: Vec::new(),
            signing_key_file: None,
            key_files: Vec::new(),
            max_expiration: Duration::ZERO,
            api_audiences: Vec::new(),
            lookup: true,
            jwks_uri: None,
        }
    }
}

/// The loaded keys and rules.
#[derive(Debug)]
pub struct ServiceAccountTokens {
    issuers: Vec<String>,
    signer: Option<SigningKey>,
    keys: Vec<VerifyingKey>,
    max_expiration: Option<i64>,
    api_audiences: Vec<String>,
    lookup: bool,
    jwks_uri: Option<String>,
}

/// What a TokenRequest binds a token to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Pod {
        name: String,
        uid: String,
        /// The node the pod is scheduled to, and its uid when known.
        node: Option<(String, String)>,
    },
    Secret {
        name: String,
        uid: String,
    },
}

/// A minted token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// Unix seconds.
    pub expires: i64,
}

/// A token's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a service account token of ours: other authenticators may try.
    NotMine,
    /// Ours and valid: the user, and the audiences it was accepted for.
    Valid(User, Vec<String>),
    /// Ours and refused, with kube's reason.
    Invalid(String),
}

impl ServiceAccountTokens {
    /// Reads the key files and checks the flags as kube-apiserver does.
    pub fn load(s: &TokenSettings) -> Result<ServiceAccountTokens, String> {
        if s.issuers.iter().any(|i| i.is_empty()) {
            return Err("--service-account-issuer may not be empty".into());
        }
        if let Some(i) = s
            .issuers
            .iter()
            .find(|i| i.contains(':') && !i.starts_with("https://"))
        {
            return Err(format!(
                "--service-account-issuer {i:?} contained a ':' but is not an https URL"
            ));
        }
        let signer = match &s.signing_key_file {
            Some(path) => {
                if s.issuers.is_empty() {
                    return Err(
                        "--service-account-signing-key-file needs --service-account-issuer".into(),
                    );
                }
                let pem = std::fs::read(path).map_err(|e| {
                    format!("--service-account-signing-key-file {}: {e}", path.display())
                })?;
                Some(SigningKey::from_pem(&pem).map_err(|e| {
                    format!("--service-account-signing-key-file {}: {e}", path.display())
                })?)
            }
            None => None,
        };
        let mut keys = Vec::new();
        for path in &s.key_files {
            let pem = std::fs::read(path)
                .map_err(|e| format!("--service-account-key-file {}: {e}", path.display()))?;
            keys.extend(
                VerifyingKey::all_from_pem(&pem)
                    .map_err(|e| format!("--service-account-key-file {}: {e}", path.display()))?,
            );
        }
        if let Some(signer) = &signer {
            if s.key_files.is_empty() {
                keys.push(signer.verifying_key().clone());
            } else if !keys.contains(signer.verifying_key()) {
                return Err("--service-account-key-file must include the public key of --service-account-signing-key-file".into());
            }
        }
        if !s.issuers.is_empty() && keys.is_empty() {
            return Err("--service-account-issuer needs --service-account-key-file or --service-account-signing-key-file".into());
        }
        let max = s.max_expiration.as_secs() as i64;
        if max != 0 && max < 3600 {
            return Err(format!(
                "the service-account-max-token-expiration must be set longer than 3600 seconds (currently {max})"
            ));
        }
        let api_audiences = if s.api_audiences.is_empty() {
            s.issuers.clone()
        } else {
            s.api_audiences.clone()
        };
        Ok(ServiceAccountTokens {
            issuers: s.issuers.clone(),
            signer,
            keys,
            max_expiration: (max != 0).then_some(max),
            api_audiences,
            lookup: s.lookup,
            jwks_uri: s.jwks_uri.clone(),
        })
    }

    /// Whether tokens can be minted here.
    pub fn can_issue(&self) -> bool {
        self.signer.is_some()
    }

    /// The audiences a token gets when its request names none.
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// The validity actually granted for `requested` seconds.
    pub fn capped(&self, requested: i64) -> i64 {
        match self.max_expiration {
            Some(max) => requested.min(max),
            None => requested,
        }
    }

    /// Signs a token for the ServiceAccount `sa` (its object), valid for
    /// `seconds` from now.
    pub fn issue(
        &self,
        sa: &Value,
        bound: Option<&Bound>,
        audiences: &[String],
        seconds: i64,
    ) -> Result<Issued, String> {
        let signer = self
            .signer
            .as_ref()
            .ok_or("no --service-account-signing-key-file is configured")?;
        let meta = &sa["metadata"];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (ns, name) = (s(&meta["namespace"]), s(&meta["name"]));
        let now = unix_now();
        let mut k8s = json!({
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": s(&meta["uid"])},
        });
        match bound {
            Some(Bound::Pod { name, uid, node }) => {
                k8s["pod"] = json!({"name": name, "uid": uid});
                if let Some((node, node_uid)) = node {
                    k8s["node"] = json!({"name": node, "uid": node_uid});
                }
            }
            Some(Bound::Secret { name, uid }) => {
                k8s["secret"] = json!({"name": name, "uid": uid});
            }
            None => {}
        }
        let claims = json!({
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "iss": self.issuers[0],
            "jti": crate::handlers::new_uid(),
            "kubernetes.io": k8s,
            "nbf": now,
            "sub": username(&ns, &name),
        });
        let token = signer.sign(&claims).map_err(|e| e.to_string())?;
        Ok(Issued {
            token,
            expires: now + seconds,
        })
    }

    /// Checks `token` for a request to `audiences` (the API audiences
    /// when empty); `caches` are the apiserver's watch caches.
    pub fn authenticate(
        &self,
        token: &str,
        audiences: &[String],
        caches: &[WatchCache],
    ) -> Verdict {
        let Ok(unverified) = jwt::peek_claims(token) else {
            return Verdict::NotMine;
        };
        let ours = unverified["iss"]
            .as_str()
            .is_some_and(|iss| self.issuers.iter().any(|i| i == iss));
        if !ours {
            return Verdict::NotMine;
        }
        let claims = match jwt::verify(token, &self.keys) {
            Ok(c) => c,
            Err(JwtError::Signature) => {
                return Verdict::Invalid("go-jose/go-jose: error in cryptographic primitive".into())
            }
            Err(e) => return Verdict::Invalid(e.to_string()),
        };
        match self.validate(&claims, audiences, caches, unix_now()) {
            Ok((user, auds)) => Verdict::Valid(user, auds),
            Err(why) => Verdict::Invalid(why),
        }
    }

    fn validate(
        &self,
        claims: &Value,
        audiences: &[String],
        caches: &[WatchCache],
        now: i64,
    ) -> Result<(User, Vec<String>), String> {
        let time = |k: &str| claims[k].as_f64().map(|t| t as i64);
        if time("exp").is_some_and(|exp| now > exp + LEEWAY) {
            return Err("service account token has expired".into());
        }
        if time("nbf").is_some_and(|nbf| now + LEEWAY < nbf) {
            return Err("service account token is not valid yet".into());
        }
        if time("iat").is_some_and(|iat| now + LEEWAY < iat) {
            return Err("service account token is issued in the future".into());
        }
        let token_auds: Vec<String> = match &claims["aud"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let token_auds = if token_auds.is_empty() {
            self.api_audiences.clone()
        } else {
            token_auds
        };
        let wanted = if audiences.is_empty() {
            &self.api_audiences[..]
        } else {
            audiences
        };
        let accepted: Vec<String> = token_auds
            .iter()
            .filter(|a| wanted.contains(a))
            .cloned()
            .collect();
        if accepted.is_empty() && !self.api_audiences.is_empty() {
            return Err(format!(
                "token audiences {token_auds:?} is invalid for the target audiences {wanted:?}"
            ));
        }
        let k8s = &claims["kubernetes.io"];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let ns = s(&k8s["namespace"]);
        let (sa_name, sa_uid) = (
            s(&k8s["serviceaccount"]["name"]),
            s(&k8s["serviceaccount"]["uid"]),
        );
        if ns.is_empty() || sa_name.is_empty() {
            return Err("token could not be validated.".into());
        }
        let pod = k8s["pod"]
            .is_object()
            .then(|| (s(&k8s["pod"]["name"]), s(&k8s["pod"]["uid"])));
        let secret = k8s["secret"]
            .is_object()
            .then(|| (s(&k8s["secret"]["name"]), s(&k8s["secret"]["uid"])));
        let node = k8s["node"]
            .is_object()
            .then(|| (s(&k8s["node"]["name"]), s(&k8s["node"]["uid"])));
        if self.lookup {
            let deleted_long_ago = |obj: &Value| {
                obj["metadata"]["deletionTimestamp"]
                    .as_str()
                    .and_then(parse_rfc3339)
                    .is_some_and(|t| t < now - LEEWAY)
            };
            let account = cached(caches, "serviceaccounts", Some(&ns), &sa_name)
                .ok_or_else(|| format!("serviceaccounts {sa_name:?} not found"))?;
            if deleted_long_ago(&account) {
                return Err(format!("service account {ns}/{sa_name} has been deleted"));
            }
            let uid = s(&account["metadata"]["uid"]);
            if uid != sa_uid {
                return Err(format!(
                    "service account UID ({uid}) does not match claim ({sa_uid})"
                ));
            }
            for (resource, bound, what) in [("secrets", &secret, "secret"), ("pods", &pod, "pod")] {
                let Some((name, claimed)) = bound else {
                    continue;
                };
                let invalidated = || "service account token has been invalidated".to_string();
                let obj = cached(caches, resource, Some(&ns), name).ok_or_else(invalidated)?;
                if deleted_long_ago(&obj) {
                    return Err(invalidated());
                }
                let uid = s(&obj["metadata"]["uid"]);
                if &uid != claimed {
                    return Err(format!(
                        "{what} UID ({uid}) does not match service account {what} ref claim ({claimed})"
                    ));
                }
            }
        }
        let mut extra = BTreeMap::new();
        if let Some((name, uid)) = &pod {
            extra.insert(POD_NAME_KEY.to_string(), vec![name.clone()]);
            extra.insert(POD_UID_KEY.to_string(), vec![uid.clone()]);
            if let Some((node, node_uid)) = &node {
                extra.insert(NODE_NAME_KEY.to_string(), vec![node.clone()]);
                if !node_uid.is_empty() {
                    extra.insert(NODE_UID_KEY.to_string(), vec![node_uid.clone()]);
                }
            }
        }
        if let Some(jti) = claims["jti"].as_str().filter(|j| !j.is_empty()) {
            extra.insert(CREDENTIAL_ID_KEY.to_string(), vec![format!("JTI={jti}")]);
        }
        let user = User {
            name: username(&ns, &sa_name),
            uid: sa_uid,
            groups: vec![
                SERVICE_ACCOUNTS_GROUP.to_string(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{ns}"),
            ],
            extra,
        };
        Ok((user, accepted))
    }

    /// `/.well-known/openid-configuration`, when the issuer is an https
    /// URL or `--service-account-jwks-uri` is set (kube serves it only
    /// then); `None` otherwise.
    pub fn openid_configuration(&self) -> Option<Value> {
        let issuer = self.issuers.first()?;
        let jwks_uri = match &self.jwks_uri {
            Some(uri) => uri.clone(),
            None if issuer.starts_with("https://") => {
                let rest = &issuer["https://".len()..];
                let host = rest.split('/').next().unwrap_or(rest);
                format!("https://{host}/openid/v1/jwks")
            }
            None => return None,
        };
        let mut algs: Vec<&str> = self.keys.iter().map(|k| k.alg.name()).collect();
        algs.sort_unstable();
        algs.dedup();
        Some(json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
        }))
    }

    /// `/openid/v1/jwks`: every verifying key.
    pub fn jwks(&self) -> Value {
        let keys: Vec<&Value> = self.keys.iter().map(VerifyingKey::jwk).collect();
        json!({"keys": keys})
    }
}

/// `system:serviceaccount:<ns>:<name>`.
pub fn username(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// The object `name` of `resource` (core group) from its watch cache.
pub(crate) fn cached(
    caches: &[WatchCache],
    resource: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<Value> {
    let cache = super::find(caches, "", resource)?;
    let fields = FieldSelector::parse(&format!("metadata.name={name}"), resource).ok()?;
    let filter = Filter {
        namespace: ns.map(str::to_string),
        fields,
        ..Filter::default()
    };
    cache.list(&filter, 1).items.first()?.value().ok()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SS…` (UTC) as Unix seconds.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(lookup: bool) -> (ServiceAccountTokens, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sa.key");
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
        std::fs::write(
            &key,
            format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
        )
        .unwrap();
        let t = ServiceAccountTokens::load(&TokenSettings {
            issuers: vec!["https://kubernetes.default.svc".into(), "old".into()],
            signing_key_file: Some(key),
            lookup,
            ..TokenSettings::default()
        })
        .unwrap();
        (t, dir)
    }

    fn sa() -> Value {
        json!({"metadata": {"namespace": "ns", "name": "builder", "uid": "u-1"}})
    }

    #[test]
    fn a_minted_token_authenticates_as_its_service_account() {
        let (t, _dir) = tokens(false);
        assert_eq!(t.api_audiences(), ["https://kubernetes.default.svc", "old"]);
        let bound = Bound::Pod {
            name: "p".into(),
            uid: "pu".into(),
            node: Some(("n1".into(), "nu".into())),
        };
        let issued = t
            .issue(&sa(), Some(&bound), &["old".to_string()], 600)
            .unwrap();
        let claims = jwt::peek_claims(&issued.token).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:ns:builder");
        assert_eq!(claims["iss"], "https://kubernetes.default.svc");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            600
        );
        assert_eq!(
            claims["kubernetes.io"]["pod"],
            json!({"name": "p", "uid": "pu"})
        );
        let Verdict::Valid(user, auds) = t.authenticate(&issued.token, &[], &[]) else {
            panic!("refused");
        };
        assert_eq!(auds, ["old"]);
        assert_eq!(user.name, "system:serviceaccount:ns:builder");
        assert_eq!(user.uid, "u-1");
        assert_eq!(
            user.groups,
            ["system:serviceaccounts", "system:serviceaccounts:ns"]
        );
        assert_eq!(user.extra[POD_NAME_KEY], ["p"]);
        assert_eq!(user.extra[NODE_NAME_KEY], ["n1"]);
        // A TokenReview for another audience.
        assert_eq!(
            t.authenticate(&issued.token, &["elsewhere".to_string()], &[]),
            Verdict::Invalid(
                "token audiences [\"old\"] is invalid for the target audiences [\"elsewhere\"]"
                    .into()
            )
        );
        // Not ours: another issuer, not a JWT.
        assert_eq!(t.authenticate("abc", &[], &[]), Verdict::NotMine);
    }

    #[test]
    fn time_claims_have_a_minute_of_leeway() {
        let (t, _dir) = tokens(false);
        let now = unix_now();
        let claims = |exp: i64, nbf: i64| {
            json!({"exp": exp, "nbf": nbf, "iat": nbf, "aud": ["old"],
                "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "a", "uid": "u"}}})
        };
        assert!(t
            .validate(&claims(now - 30, now - 100), &[], &[], now)
            .is_ok());
        assert_eq!(
            t.validate(&claims(now - 61, now - 100), &[], &[], now)
                .unwrap_err(),
            "service account token has expired"
        );
        assert_eq!(
            t.validate(&claims(now + 900, now + 61), &[], &[], now)
                .unwrap_err(),
            "service account token is not valid yet"
        );
    }

    #[test]
    fn flags_are_checked_as_kube_apiserver_checks_them() {
        let err = ServiceAccountTokens::load(&TokenSettings {
            signing_key_file: Some("/nonexistent".into()),
            ..TokenSettings::default()
        })
        .unwrap_err();
        assert!(err.contains("needs --service-account-issuer"), "{err}");
        let err = ServiceAccountTokens::load(&TokenSettings {
            issuers: vec!["x".into()],
            ..TokenSettings::default()
        })
        .unwrap_err();
        assert!(err.contains("needs --service-account-key-file"), "{err}");
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86_401));
    }
}
