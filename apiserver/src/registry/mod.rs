//! The registry: Kubernetes objects over the etcd v3 API.
//!
//! Create is `Txn(If CreateRevision(key)==0 Then Put)`, update and delete are
//! `Txn(If ModRevision(key)==rv Then …)`: etcd's compare is the optimistic
//! concurrency check, and the revision it returns is the object's new
//! `resourceVersion`. Values are stored without `resourceVersion`; it is
//! injected from `mod_revision` when read.
//!
//! Resources given a TTL ([`Registry::expire_after`]: Events) are written
//! with an etcd lease, shared by the writes of a short window
//! (`lease.rs`); every write re-attaches one, so an object lives its TTL
//! after its last write, and etcd deletes it when the lease expires.
//!
//! Services' ClusterIPs and NodePorts are records of their own, written
//! in the same `Txn` as the Service that holds them (`allocator.rs`).
//!
//! A resource that is a view of another's objects ([`Resource::storage`]:
//! events.k8s.io/v1 Events) reads and writes them through `conversion`
//! here, so callers see only their resource's form, and it shares the
//! stored resource's leases.

mod allocator;
mod compactor;
mod etcd;
mod lease;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

pub use allocator::{
    held_keys, Claimed, Ipv4Cidr, PortRange, ServiceRanges, IP_PREFIX, NODE_PORT_PREFIX,
};
pub use compactor::{Compactor, COMPACT_REV_KEY};
pub use etcd::{prefix_end, Etcd};

use crate::error::{Error, Result};
use crate::object::Object;
use crate::resources::Resource;
use crate::selector::Filter;
use lease::LeaseManager;

/// Most etcd pages one list request reads while filtering.
const MAX_PAGES: usize = 10_000;

/// Typed operations on one etcd cluster.
#[derive(Clone)]
pub struct Registry {
    etcd: Etcd,
    /// The resources whose objects expire, each with its leases.
    expiring: Vec<Arc<Expiring>>,
}

struct Expiring {
    resource: &'static Resource,
    leases: LeaseManager,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Object>,
    /// The revision the list reflects.
    pub revision: i64,
    /// The continue token for the next page, if any.
    pub continue_token: Option<String>,
}

impl Registry {
    pub fn new(etcd: Etcd) -> Registry {
        Registry {
            etcd,
            expiring: Vec::new(),
        }
    }

    /// Objects of `r` are deleted by etcd `ttl` (rounded up to whole
    /// seconds, plus at most a minute of lease sharing) after their last
    /// create or update. A zero `ttl` is refused.
    pub fn expire_after(mut self, r: &'static Resource, ttl: Duration) -> Result<Registry> {
        if ttl.is_zero() {
            return Err(Error::BadRequest(format!(
                "the TTL of {} must be positive",
                r.name
            )));
        }
        self.expiring.retain(|e| !std::ptr::eq(e.resource, r));
        self.expiring.push(Arc::new(Expiring {
            resource: r,
            leases: LeaseManager::new(self.etcd.clone(), ttl),
        }));
        Ok(self)
    }

    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The current object, or 404.
    pub async fn get(&self, r: &'static Resource, ns: Option<&str>, name: &str) -> Result<Object> {
        let key = r.key(ns, name);
        match self.etcd.get(&key).await? {
            Some(kv) => Object::decode_as(r, &kv.key, &kv.value, kv.mod_revision),
            None => Err(not_found(r, name)),
        }
    }

    /// Stores a new object; 409 AlreadyExists when the name is taken.
    pub async fn create(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
    ) -> Result<Object> {
        let key = r.key(ns, name);
        let bytes = encode_for_storage(r, &mut obj)?;
        match self.put(r, &key, bytes, None).await? {
            Some(rev) => Object::from_value(key, &mut obj, rev),
            None => Err(Error::AlreadyExists {
                group: r.group,
                resource: r.name,
                name: name.to_string(),
            }),
        }
    }

    /// Replaces the object if it is still at `rv`; 409 Conflict otherwise.
    pub async fn update(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        rv: i64,
    ) -> Result<Object> {
        let key = r.key(ns, name);
        let bytes = encode_for_storage(r, &mut obj)?;
        match self.put(r, &key, bytes, Some(rv)).await? {
            Some(rev) => Object::from_value(key, &mut obj, rev),
            None => Err(conflict(r, name)),
        }
    }

    /// Creates (`rv` None) or updates `key`, with a lease when `r` expires:
    /// the revision written, or `None` when the compare failed. A lease the
    /// storage no longer knows is dropped and the write retried once with
    /// a fresh one.
    async fn put(
        &self,
        r: &'static Resource,
        key: &str,
        bytes: Vec<u8>,
        rv: Option<i64>,
    ) -> Result<Option<i64>> {
        let write = |bytes, lease| async move {
            match rv {
                None => self.etcd.create(key, bytes, lease).await,
                Some(rv) => self.etcd.update(key, bytes, rv, lease).await,
            }
        };
        let stored = r.storage();
        let Some(expiring) = self
            .expiring
            .iter()
            .find(|e| std::ptr::eq(e.resource, stored))
        else {
            return write(bytes, 0).await;
        };
        let lease = expiring.leases.lease().await?;
        match write(bytes.clone(), lease).await {
            Err(Error::Etcd(s)) if s.message().contains("requested lease not found") => {
                expiring.leases.forget(lease).await;
                let lease = expiring.leases.lease().await?;
                write(bytes, lease).await
            }
            done => done,
        }
    }

    /// Deletes the object if it is still at `rv`; returns the deletion's
    /// revision, or 409 Conflict.
    pub async fn delete(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        rv: i64,
    ) -> Result<i64> {
        // A Service releases its ClusterIPs and NodePorts with it.
        let deleted = if r.name == "services" && r.group.is_empty() {
            self.delete_service(r, ns, name, rv).await?
        } else {
            self.etcd.delete(&r.key(ns, name), rv).await?
        };
        match deleted {
            Some(rev) => Ok(rev),
            None => Err(conflict(r, name)),
        }
    }

    /// Deletes everything of `r` in namespace `ns`.
    pub async fn delete_namespace_contents(&self, r: &'static Resource, ns: &str) -> Result<i64> {
        self.etcd.delete_prefix(&r.list_prefix(Some(ns))).await
    }

    /// Lists straight from etcd: at `revision` (0 = newest), starting after
    /// the continue token's key if one is given, at most `limit` matching
    /// items (0 = all).
    pub async fn list(
        &self,
        r: &'static Resource,
        filter: &Filter,
        revision: i64,
        continue_token: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        let prefix = r.prefix();
        let list_prefix = r.list_prefix(filter.namespace.as_deref());
        let (mut revision, mut start) = match continue_token {
            Some(t) => {
                let (rv, start) = decode_continue(t)?;
                (rv, format!("{prefix}{start}"))
            }
            None => (revision, list_prefix.clone()),
        };
        if start < list_prefix {
            start = list_prefix.clone();
        }
        let end = prefix_end(&list_prefix);
        let mut items = Vec::new();
        let page_size = if limit == 0 {
            1000
        } else {
            limit.clamp(50, 1000) as i64
        };
        for _ in 0..MAX_PAGES {
            let page = self.etcd.range(&start, &end, revision, page_size).await.map_err(|e| match e {
                Error::Expired(_) if continue_token.is_some() => Error::Expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter."
                        .into(),
                ),
                e => e,
            })?;
            if revision == 0 {
                revision = page.revision;
            }
            let n = page.kvs.len();
            for (i, kv) in page.kvs.iter().enumerate() {
                let o = Object::decode_as(r, &kv.key, &kv.value, kv.mod_revision)?;
                if filter.matches(&o) {
                    items.push(o);
                }
                if limit > 0 && items.len() == limit {
                    let more = i + 1 < n || page.more;
                    let token = more.then(|| {
                        let last = &items[items.len() - 1].key;
                        encode_continue(revision, &format!("{}\0", &last[prefix.len()..]))
                    });
                    return Ok(ListPage {
                        items,
                        revision,
                        continue_token: token,
                    });
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => {
                    let mut next = last.key.clone();
                    next.push(0);
                    start = String::from_utf8(next).map_err(|e| Error::Internal(e.to_string()))?;
                }
                _ => break,
            }
        }
        Ok(ListPage {
            items,
            revision,
            continue_token: None,
        })
    }
}

/// Strips what is never stored (the resourceVersion is the key's revision)
/// and encodes `obj` in its stored form (`obj` itself stays in `r`'s).
fn encode_for_storage(r: &'static Resource, obj: &mut Value) -> Result<Vec<u8>> {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    if std::ptr::eq(r, r.storage()) {
        return serde_json::to_vec(obj).map_err(|e| Error::Internal(e.to_string()));
    }
    let mut stored = obj.clone();
    crate::conversion::to_storage(r, &mut stored);
    serde_json::to_vec(&stored).map_err(|e| Error::Internal(e.to_string()))
}

pub(crate) fn not_found(r: &'static Resource, name: &str) -> Error {
    Error::NotFound {
        group: r.group,
        resource: r.name,
        name: name.to_string(),
    }
}

pub(crate) fn conflict(r: &'static Resource, name: &str) -> Error {
    Error::Conflict {
        group: r.group,
        resource: r.name,
        name: name.to_string(),
        detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

/// A continue token as Kubernetes shapes it: base64 of
/// `{"v":"meta.k8s.io/v1","rv":<revision>,"start":"<key after the prefix>"}`.
pub fn encode_continue(rv: i64, start: &str) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string();
    base64::engine::general_purpose::URL_SAFE.encode(raw)
}

/// The revision and start key of a continue token; 400 when malformed.
pub fn decode_continue(token: &str) -> Result<(i64, String)> {
    let bad = || Error::BadRequest("continue key is not valid".into());
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_i64().filter(|rv| *rv > 0).ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?;
    if start.starts_with('/') || start.contains("..") {
        return Err(bad());
    }
    Ok((rv, start.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "default/web\0");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "default/web\0".to_string())
        );
        assert!(decode_continue("not base64!").is_err());
        let escape = encode_continue(1, "/etc");
        assert!(decode_continue(&escape).is_err());
    }
}
