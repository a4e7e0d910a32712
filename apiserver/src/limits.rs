//! kube-apiserver's max-in-flight filter: `--max-requests-inflight` and
//! `--max-mutating-requests-inflight`.
//!
//! Requests are counted in two pools, as kube's `WithMaxInFlightLimit`
//! counts them: verbs `get`, `list` (and `watch`) are read-only, every
//! other verb (`create`, `update`, `patch`, `delete`, `deletecollection`,
//! and non-resource methods other than GET) is mutating. Long-running
//! requests — verb `watch`, and the `log`, `exec`, `attach`, `portforward`
//! and `proxy` subresources (kube's `BasicLongRunningRequestCheck`) — are
//! never counted: they last as long as the client wants.
//!
//! A request that finds its pool full is answered at once (no queueing)
//! 429 TooManyRequests with `Retry-After: 1`, unless its user is in
//! `system:masters` ("a super-admin or a loopback connection … should
//! always get an answer"), who is served past the limit. A limit of 0
//! turns its pool off.
//!
//! A slot is held until the response body is finished or dropped, not
//! only until the handler returns: kube's handler writes its body before
//! it returns, so a client reading a large list slowly keeps its slot in
//! both.
//!
//! kube-apiserver writes the 429 as `text/plain`; here it is a `Status`
//! with the same message (reason TooManyRequests, `retryAfterSeconds: 1`),
//! which client-go and kube-rs read as the same error.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{Attributes, User, MASTERS};

/// kube-apiserver's message for a request over the limit.
pub(crate) const TOO_MANY_REQUESTS: &str = "Too many requests, please try again later.";
/// Seconds a refused client is told to wait (kube's constant `retryAfter`).
const RETRY_AFTER_SECONDS: u32 = 1;

/// How a request is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Never counted (watches, logs, streams).
    LongRunning,
    /// `get`, `list`.
    ReadOnly,
    /// Every other verb.
    Mutating,
}

impl Kind {
    /// How kube's filter counts `method path?query` (the verb and
    /// subresource the authorizer sees).
    pub(crate) fn of(method: &str, path: &str, query: &str) -> Kind {
        let a = Attributes::from_request(User::default(), method, path, query);
        let long_running = matches!(a.verb.as_str(), "watch" | "proxy")
            || (a.resource_request
                && matches!(
                    a.subresource.as_str(),
                    "log" | "exec" | "attach" | "portforward" | "proxy"
                ));
        if long_running {
            Kind::LongRunning
        } else if matches!(a.verb.as_str(), "get" | "list") {
            Kind::ReadOnly
        } else {
            Kind::Mutating
        }
    }
}

/// The two pools. Clones share them (one apiserver on several ports has
/// one capacity).
#[derive(Debug, Clone)]
pub(crate) struct MaxInFlight {
    /// `None`: that pool is unlimited.
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
}

/// What [`MaxInFlight::admit`] decides for one request.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Served; the slot (if the request is counted) is freed when dropped.
    Admitted(Option<OwnedSemaphorePermit>),
    /// Its pool is full.
    Full,
}

impl MaxInFlight {
    /// Pools of `read_only` and `mutating` slots; 0 leaves a pool unlimited.
    pub(crate) fn new(read_only: usize, mutating: usize) -> MaxInFlight {
        let pool = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        MaxInFlight {
            read_only: pool(read_only),
            mutating: pool(mutating),
        }
    }

    /// Takes a slot of `kind`'s pool if one is free, without waiting.
    pub(crate) fn admit(&self, kind: Kind) -> Admission {
        let pool = match kind {
            Kind::LongRunning => None,
            Kind::ReadOnly => self.read_only.as_ref(),
            Kind::Mutating => self.mutating.as_ref(),
        };
        match pool {
            None => Admission::Admitted(None),
            Some(p) => match p.clone().try_acquire_owned() {
                Ok(permit) => Admission::Admitted(Some(permit)),
                Err(_) => Admission::Full,
            },
        }
    }
}

/// The middleware: runs after authentication (it needs the user) and
/// holds the request's slot until its response body is done.
pub(crate) async fn max_in_flight(
    State(limits): State<MaxInFlight>,
    req: Request,
    next: Next,
) -> Response {
    let kind = Kind::of(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query().unwrap_or_default(),
    );
    let slot = match limits.admit(kind) {
        Admission::Admitted(slot) => slot,
        Admission::Full => {
            let master = req
                .extensions()
                .get::<User>()
                .is_some_and(|u| u.groups.iter().any(|g| g == MASTERS));
            if !master {
                tracing::debug!(method = %req.method(), path = req.uri().path(), ?kind,
                    "max in-flight reached: 429");
                return too_many_requests();
            }
            None
        }
    };
    let resp = next.run(req).await;
    match slot {
        Some(slot) => resp.map(|body| {
            Body::new(Holding {
                body,
                slot: Some(slot),
            })
        }),
        None => resp,
    }
}

/// 429 with `Retry-After: 1` and a `Status` body.
pub(crate) fn too_many_requests() -> Response {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": TOO_MANY_REQUESTS,
        "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": RETRY_AFTER_SECONDS},
        "code": 429,
    });
    let mut resp = Response::new(Body::from(status.to_string()));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    resp
}

/// A response body that frees its request's slot when it ends (or is
/// dropped: the client went away).
struct Holding {
    body: Body,
    slot: Option<OwnedSemaphorePermit>,
}

impl HttpBody for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_as_kube_counts_them() {
        let cases = [
            ("GET", "/api/v1/namespaces/a/pods", "", Kind::ReadOnly),
            ("GET", "/api/v1/namespaces/a/pods/p", "", Kind::ReadOnly),
            ("GET", "/api/v1/pods", "watch=true", Kind::LongRunning),
            ("GET", "/api/v1/pods", "watch=1&limit=5", Kind::LongRunning),
            ("GET", "/api/v1/pods", "watch=false", Kind::ReadOnly),
            // A named GET with watch=true is a get to kube too.
            (
                "GET",
                "/api/v1/namespaces/a/pods/p",
                "watch=true",
                Kind::ReadOnly,
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/p/log",
                "",
                Kind::LongRunning,
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/p/log",
                "follow=true",
                Kind::LongRunning,
            ),
            (
                "POST",
                "/api/v1/namespaces/a/pods/p/exec",
                "",
                Kind::LongRunning,
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/p/portforward",
                "",
                Kind::LongRunning,
            ),
            ("GET", "/api/v1/nodes/n/proxy", "", Kind::LongRunning),
            (
                "GET",
                "/api/v1/namespaces/a/pods/p/status",
                "",
                Kind::ReadOnly,
            ),
            ("POST", "/api/v1/namespaces/a/pods", "", Kind::Mutating),
            ("PUT", "/api/v1/namespaces/a/pods/p", "", Kind::Mutating),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                "",
                Kind::Mutating,
            ),
            ("DELETE", "/api/v1/namespaces/a/pods/p", "", Kind::Mutating),
            ("DELETE", "/api/v1/namespaces/a/pods", "", Kind::Mutating),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                "",
                Kind::Mutating,
            ),
            ("GET", "/healthz", "", Kind::ReadOnly),
            ("GET", "/apis", "", Kind::ReadOnly),
            // kube's verb for a non-resource request is the method.
            ("HEAD", "/healthz", "", Kind::Mutating),
        ];
        for (method, path, query, want) in cases {
            assert_eq!(
                Kind::of(method, path, query),
                want,
                "{method} {path}?{query}"
            );
        }
    }

    #[test]
    fn pools_are_apart_and_slots_come_back() {
        let limits = MaxInFlight::new(1, 2);
        let Admission::Admitted(Some(read)) = limits.admit(Kind::ReadOnly) else {
            panic!("first read refused");
        };
        assert!(matches!(limits.admit(Kind::ReadOnly), Admission::Full));
        // Writes and long-running requests are not held up by reads.
        let m1 = limits.admit(Kind::Mutating);
        let m2 = limits.admit(Kind::Mutating);
        assert!(matches!(m1, Admission::Admitted(Some(_))), "{m1:?}");
        assert!(matches!(m2, Admission::Admitted(Some(_))), "{m2:?}");
        assert!(matches!(limits.admit(Kind::Mutating), Admission::Full));
        assert!(matches!(
            limits.admit(Kind::LongRunning),
            Admission::Admitted(None)
        ));
        drop(read);
        assert!(matches!(
            limits.admit(Kind::ReadOnly),
            Admission::Admitted(Some(_))
        ));
        drop((m1, m2));
        assert!(matches!(
            limits.admit(Kind::Mutating),
            Admission::Admitted(Some(_))
        ));
    }

    #[test]
    fn zero_turns_a_pool_off() {
        let limits = MaxInFlight::new(0, 1);
        let reads: Vec<_> = (0..1000).map(|_| limits.admit(Kind::ReadOnly)).collect();
        assert!(reads.iter().all(|a| matches!(a, Admission::Admitted(None))));
        let _m = limits.admit(Kind::Mutating);
        assert!(matches!(limits.admit(Kind::Mutating), Admission::Full));
    }

    #[tokio::test]
    async fn the_slot_is_held_until_the_body_ends() {
        use http_body_util::BodyExt;
        let limits = MaxInFlight::new(1, 0);
        let Admission::Admitted(slot) = limits.admit(Kind::ReadOnly) else {
            panic!("refused");
        };
        let body = Holding {
            body: Body::from("a list"),
            slot,
        };
        assert_eq!(body.size_hint().exact(), Some(6));
        assert!(matches!(limits.admit(Kind::ReadOnly), Admission::Full));
        let mut body = Body::new(body);
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "a list");
        assert!(body.frame().await.is_none());
        drop(body);
        // A body dropped unread (the client went away) frees it too.
        let Admission::Admitted(slot) = limits.admit(Kind::ReadOnly) else {
            panic!("the slot of an ended body was not freed");
        };
        let unread = Holding {
            body: Body::from("x"),
            slot,
        };
        assert!(matches!(limits.admit(Kind::ReadOnly), Admission::Full));
        drop(unread);
        assert!(matches!(
            limits.admit(Kind::ReadOnly),
            Admission::Admitted(Some(_))
        ));
    }

    #[test]
    fn the_answer_is_kubes() {
        let resp = too_many_requests();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
