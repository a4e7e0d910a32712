//! The crate's one error type, and its Kubernetes `Status` form.
//!
//! Every failure a request can meet is a variant here; the HTTP layer turns
//! it into a `Status` object (`kind: Status`, `reason`, `details`, `code`)
//! exactly once, in [`Error::status`], so clients that switch on `reason`
//! (client-go's `IsNotFound`, kube-rs' `ErrorResponse`) behave as against
//! kube-apiserver.

use serde_json::{json, Value};

/// One field-level problem inside a 422 Invalid answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The path of the field, e.g. `metadata.name`.
    pub field: String,
    /// Kubernetes' cause type: `FieldValueInvalid`, `FieldValueRequired`, …
    pub reason: &'static str,
    /// Human-readable detail, e.g. `Invalid value: "A": a lowercase RFC 1123 …`.
    pub message: String,
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404: the object (or its namespace) does not exist.
    #[error("{} \"{name}\" not found", qualified(resource, group))]
    NotFound {
        group: &'static str,
        resource: &'static str,
        name: String,
    },
    /// 409: create of a name that is taken.
    #[error("{} \"{name}\" already exists", qualified(resource, group))]
    AlreadyExists {
        group: &'static str,
        resource: &'static str,
        name: String,
    },
    /// 409: a resourceVersion or uid precondition did not hold.
    #[error(
        "Operation cannot be fulfilled on {} \"{name}\": {detail}",
        qualified(resource, group)
    )]
    Conflict {
        group: &'static str,
        resource: &'static str,
        name: String,
        detail: String,
    },
    /// 403: the request is refused (a terminating namespace, an immortal
    /// namespace).
    #[error("{} \"{name}\" is forbidden: {detail}", qualified(resource, group))]
    Forbidden {
        group: &'static str,
        resource: &'static str,
        name: String,
        detail: String,
    },
    /// 410: the requested resourceVersion is older than what is kept.
    #[error("{0}")]
    Expired(String),
    /// 422: the object fails validation.
    #[error("{} \"{name}\" is invalid: {}", qualified(kind, group), causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", "))]
    Invalid {
        group: &'static str,
        kind: &'static str,
        name: String,
        causes: Vec<Cause>,
    },
    /// 404: no such path.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// 422: a patch that cannot be applied (a failed JSON-patch test, a
    /// missing path).
    #[error("the server rejected our request due to an error in our request: {0}")]
    UnprocessablePatch(String),
    /// 400: the request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 405: the verb is not supported on this path.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 406: no media type the client accepts can be written (the list
    /// says which can).
    #[error("only the following media types are accepted: {0}")]
    NotAcceptable(String),
    /// 413: the body is larger than the limit.
    #[error("Request entity too large: limit is {0}")]
    TooLarge(usize),
    /// 413: the request is over a limit other than its size (e.g. the
    /// operations of a JSON patch).
    #[error("Request entity too large: {0}")]
    TooLargeRequest(String),
    /// 415: the body is not JSON.
    #[error("the body of the request was in an unknown format - accepted media types include: application/json; got {0}")]
    UnsupportedMediaType(String),
    /// 504: waited too long (e.g. for the cache to reach a resourceVersion).
    #[error("{0}")]
    Timeout(String),
    /// An error answer of a backend this server proxies to (the kubelet,
    /// for `pods/log`), passed on with its code and text.
    #[error("{message}")]
    Proxied { code: u16, message: String },
    /// 500: the etcd v3 API failed.
    #[error("etcd: {0}")]
    Etcd(tonic::Status),
    /// 500: connecting to etcd failed.
    #[error("etcd transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// 500: anything else that should not happen.
    #[error("{0}")]
    Internal(String),
}

/// etcd's answer to a request over its `--max-request-bytes`.
const ETCD_TOO_LARGE: &str = "etcdserver: request is too large";

impl From<tonic::Status> for Error {
    /// An object the storage refuses for its size is the client's error
    /// (413), not the server's: kube-apiserver answers 500 here
    /// (kubernetes issue 112152), which clients retry for nothing.
    fn from(s: tonic::Status) -> Self {
        if s.code() == tonic::Code::InvalidArgument && s.message() == ETCD_TOO_LARGE {
            return Error::TooLargeRequest(format!(
                "the object is larger than the storage accepts ({ETCD_TOO_LARGE})"
            ));
        }
        Error::Etcd(s)
    }
}

impl Error {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            Error::NotFound { .. } | Error::NoRoute => 404,
            Error::AlreadyExists { .. } | Error::Conflict { .. } => 409,
            Error::Forbidden { .. } => 403,
            Error::Expired(_) => 410,
            Error::Invalid { .. } | Error::UnprocessablePatch(_) => 422,
            Error::BadRequest(_) => 400,
            Error::MethodNotAllowed(_) => 405,
            Error::NotAcceptable(_) => 406,
            Error::TooLarge(_) | Error::TooLargeRequest(_) => 413,
            Error::UnsupportedMediaType(_) => 415,
            Error::Timeout(_) => 504,
            Error::Proxied { code, .. } => *code,
            Error::Etcd(_) | Error::Transport(_) | Error::Internal(_) => 500,
        }
    }

    /// Kubernetes' `StatusReason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } | Error::NoRoute => "NotFound",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Conflict { .. } => "Conflict",
            Error::Forbidden { .. } => "Forbidden",
            Error::Expired(_) => "Expired",
            Error::Invalid { .. } | Error::UnprocessablePatch(_) => "Invalid",
            Error::BadRequest(_) => "BadRequest",
            Error::MethodNotAllowed(_) => "MethodNotAllowed",
            Error::NotAcceptable(_) => "NotAcceptable",
            Error::TooLarge(_) | Error::TooLargeRequest(_) => "RequestEntityTooLarge",
            Error::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Error::Timeout(_) => "Timeout",
            Error::Proxied { code, .. } => match code {
                400 => "BadRequest",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                429 => "TooManyRequests",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "InternalError",
            },
            Error::Etcd(_) | Error::Transport(_) | Error::Internal(_) => "InternalError",
        }
    }

    /// The `Status` object (`apiVersion: v1, kind: Status`).
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            Error::NotFound {
                group,
                resource,
                name,
            }
            | Error::AlreadyExists {
                group,
                resource,
                name,
            }
            | Error::Conflict {
                group,
                resource,
                name,
                ..
            }
            | Error::Forbidden {
                group,
                resource,
                name,
                ..
            } => Some(details(name, group, resource)),
            Error::Invalid {
                group,
                kind,
                name,
                causes,
            } => {
                let mut d = details(name, group, kind);
                d["causes"] = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                Some(d)
            }
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

/// `deployments.apps`, `Deployment.apps`, or just `pods` in the core group,
/// as Kubernetes names a resource in messages.
fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_matches_kubernetes() {
        let e = Error::NotFound {
            group: "",
            resource: "pods",
            name: "web".into(),
        };
        let s = e.status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "pods \"web\" not found");
        assert_eq!(s["details"], json!({"name": "web", "kind": "pods"}));
        let apps = Error::NotFound {
            group: "apps",
            resource: "deployments",
            name: "web".into(),
        };
        assert_eq!(apps.to_string(), "deployments.apps \"web\" not found");
    }

    #[test]
    fn invalid_status_lists_causes() {
        let e = Error::Invalid {
            group: "",
            kind: "Pod",
            name: "A".into(),
            causes: vec![Cause {
                field: "metadata.name".into(),
                reason: "FieldValueInvalid",
                message: "Invalid value: \"A\": bad".into(),
            }],
        };
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
        assert_eq!(
            s["message"],
            "Pod \"A\" is invalid: metadata.name: Invalid value: \"A\": bad"
        );
    }
}
