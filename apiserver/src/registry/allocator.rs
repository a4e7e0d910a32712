//! Service addresses: ClusterIPs from `--service-cluster-ip-range` and
//! NodePorts from `--service-node-port-range`, unique across every
//! apiserver on one etcd.
//!
//! One key per address held, written in the same etcd `Txn` as the
//! Service holding it, its value naming the owner:
//!
//! ```text
//! /registry/ipaddresses/127.96.0.1       {"owner":{"namespace":"default","name":"kubernetes","uid":"…"}}
//! /registry/ipaddresses/127.96.201.7     {"owner":{"namespace":"shop","name":"web","uid":"…"}}
//! /registry/servicenodeports/30080       {"owner":{"namespace":"shop","name":"web","uid":"…"}}
//!
//! create  Txn(If CreateRevision(svc)=0 ∧ CreateRevision(ip)=0 ∧ CreateRevision(port)=0
//!             Then Put(svc) Put(ip) Put(port)   Else Get(svc) Get(ip) Get(port))
//! update  Txn(If ModRevision(svc)=rv ∧ CreateRevision(new keys)=0
//!             Then Put(svc) Put(new keys) Txn(If Value(released)=record Then Delete(released)))
//! delete  Txn(If ModRevision(svc)=rv Then Delete(svc) Txn(If Value(k)=record Then Delete(k)) …)
//! ```
//!
//! Why keys and not kube-apiserver's classic bitmap (one `RangeAllocation`
//! per range, rewritten by compare-and-swap on every allocation): the
//! Service and its addresses commit together, so a failed or interrupted
//! create leaks nothing and no Service is ever stored without its
//! addresses; apiservers allocating at once contend only when they pick
//! the same address, not on one hot key (rewriting 8 KiB for a /16 each
//! time); and each record names its owner, so [`Registry::repair_service_allocations`]
//! can release what a Service removed outside the API left behind (a
//! namespace's contents removed by prefix). kube-apiserver's newer
//! allocator (IPAddress objects, KEP-1880) chose the same shape. A restart
//! reads the keys again: nothing held is handed out twice.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ballast_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use serde_json::{json, Value};

use super::{encode_for_storage, not_found, prefix_end, Registry};
use crate::error::{Error, Result};
use crate::object::Object;
use crate::resources::Resource;

/// Where ClusterIP records live.
pub const IP_PREFIX: &str = "/registry/ipaddresses/";
/// Where NodePort records live.
pub const NODE_PORT_PREFIX: &str = "/registry/servicenodeports/";

/// An IPv4 CIDR such as `127.96.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    base: u32,
    bits: u8,
}

impl Ipv4Cidr {
    /// How many addresses the range spans (network and broadcast included).
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.bits)
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip >= self.base && u64::from(ip - self.base) < self.size()
    }

    /// Whether `ip` may be handed to a Service: inside, and neither the
    /// network nor the broadcast address (as kube-apiserver).
    pub fn usable(&self, ip: Ipv4Addr) -> bool {
        let off = u64::from(u32::from(ip).wrapping_sub(self.base));
        self.contains(ip) && off != 0 && off != self.size() - 1
    }

    /// The address `offset` past the network address.
    pub fn nth(&self, offset: u64) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(offset as u32))
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        self.nth(1)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    /// `a.b.c.d/n` with 12 ≤ n ≤ 30 (kube-apiserver refuses ranges wider
    /// than /12; a /31 or /32 has no usable address); host bits must be 0.
    fn from_str(s: &str) -> std::result::Result<Ipv4Cidr, String> {
        let bad = || format!("invalid CIDR {s:?}: want an IPv4 range such as 127.96.0.0/16");
        let (ip, bits) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let bits: u8 = bits.parse().map_err(|_| bad())?;
        if !(12..=30).contains(&bits) {
            return Err(format!(
                "service CIDR {s:?}: the prefix length must be between 12 and 30"
            ));
        }
        let base = u32::from(ip);
        let mask = u32::MAX << (32 - bits);
        if base & !mask != 0 {
            return Err(format!(
                "service CIDR {s:?}: host bits must be zero (did you mean {}/{bits}?)",
                Ipv4Addr::from(base & mask)
            ));
        }
        Ok(Ipv4Cidr { base, bits })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.bits)
    }
}

/// A NodePort range such as `30000-32767` (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: i64) -> bool {
        (i64::from(self.first)..=i64::from(self.last)).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// `first-last` or a single port, as kube-apiserver's flag.
    fn from_str(s: &str) -> std::result::Result<PortRange, String> {
        let bad = || format!("invalid port range {s:?}: want first-last, e.g. 30000-32767");
        let (a, b) = s.trim().split_once('-').unwrap_or((s.trim(), s.trim()));
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The address ranges Services are given addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRanges {
    /// `--service-cluster-ip-range` (default `127.96.0.0/16`: inside
    /// loopback, away from the nodes' pod CIDRs `127.1.0.0/16` and
    /// `127.101.0.0/16`…).
    pub cluster_ip: Ipv4Cidr,
    /// `--service-node-port-range` (default `30000-32767`).
    pub node_ports: PortRange,
}

impl Default for ServiceRanges {
    fn default() -> ServiceRanges {
        ServiceRanges {
            cluster_ip: "127.96.0.0/16".parse().expect("a valid default"),
            node_ports: PortRange {
                first: 30000,
                last: 32767,
            },
        }
    }
}

/// The key of a ClusterIP's record.
pub fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_PREFIX}{ip}")
}

/// The key of a NodePort's record.
pub fn node_port_key(port: i64) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

/// The record every key a Service holds carries: who holds it.
pub fn owner_record(svc: &Value) -> Vec<u8> {
    let m = &svc["metadata"];
    json!({"owner": {
        "resource": "services",
        "namespace": m["namespace"].as_str().unwrap_or_default(),
        "name": m["name"].as_str().unwrap_or_default(),
        "uid": m["uid"].as_str().unwrap_or_default(),
    }})
    .to_string()
    .into_bytes()
}

/// The keys a stored Service holds: its ClusterIPs (not `None`) and its
/// NodePorts, each once.
pub fn held_keys(svc: &Value) -> Vec<String> {
    let spec = &svc["spec"];
    let mut keys = Vec::new();
    let mut ips: Vec<&str> = spec["clusterIPs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec["clusterIP"].as_str());
    }
    for ip in ips {
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            keys.push(ip_key(ip));
        }
    }
    for p in spec["ports"].as_array().into_iter().flatten() {
        if let Some(n) = p["nodePort"].as_i64().filter(|n| *n > 0) {
            keys.push(node_port_key(n));
        }
    }
    if let Some(n) = spec["healthCheckNodePort"].as_i64().filter(|n| *n > 0) {
        keys.push(node_port_key(n));
    }
    let mut seen = HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    keys
}

fn op(r: Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

fn put(key: &str, value: Vec<u8>) -> RequestOp {
    op(Request::RequestPut(PutRequest {
        key: key.as_bytes().to_vec(),
        value,
        ..Default::default()
    }))
}

fn get(key: &str) -> RequestOp {
    op(Request::RequestRange(RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }))
}

fn compare(key: &str, target: CompareTarget, value: TargetUnion) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        range_end: vec![],
        target_union: Some(value),
    }
}

fn absent(key: &str) -> Compare {
    compare(key, CompareTarget::Create, TargetUnion::CreateRevision(0))
}

/// Deletes `key` only while it still holds `record`: a nested Txn, so a
/// record another Service took over meanwhile stays.
fn release(key: &str, record: &[u8]) -> RequestOp {
    op(Request::RequestTxn(TxnRequest {
        compare: vec![compare(
            key,
            CompareTarget::Value,
            TargetUnion::Value(record.to_vec()),
        )],
        success: vec![op(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }))],
        failure: vec![],
    }))
}

/// What a write that claims keys met.
#[derive(Debug)]
pub enum Claimed {
    /// Written: the object as stored.
    Stored(Object),
    /// These keys (of those claimed) are held already; nothing written.
    Taken(Vec<String>),
}

impl Registry {
    /// The keys under `prefix` (a record prefix), without the prefix.
    pub async fn held(&self, prefix: &str) -> Result<HashSet<String>> {
        let end = prefix_end(prefix);
        let mut out = HashSet::new();
        let mut start = prefix.to_string();
        // A /12 holds at most ~1M records: bounded pages.
        for _ in 0..2048 {
            let page = self.etcd.range(&start, &end, 0, 1000).await?;
            for kv in &page.kvs {
                if let Some(rest) = kv.key.strip_prefix(prefix.as_bytes()) {
                    out.insert(String::from_utf8_lossy(rest).into_owned());
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => {
                    let mut next = last.key.clone();
                    next.push(0);
                    start = String::from_utf8_lossy(&next).into_owned();
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Creates a Service together with the records of `claims` (all absent
    /// or nothing is written): 409 AlreadyExists when the name is taken,
    /// [`Claimed::Taken`] naming the records held already.
    pub async fn create_claiming(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        claims: &[String],
    ) -> Result<Claimed> {
        let key = r.key(ns, name);
        let record = owner_record(&obj);
        let bytes = encode_for_storage(r, &mut obj)?;
        let mut cmp = vec![absent(&key)];
        let mut success = vec![put(&key, bytes)];
        let mut failure = vec![get(&key)];
        for k in claims {
            cmp.push(absent(k));
            success.push(put(k, record.clone()));
            failure.push(get(k));
        }
        let resp = self
            .etcd
            .txn_request(TxnRequest {
                compare: cmp,
                success,
                failure,
            })
            .await?;
        let revision = resp.header.as_ref().map(|h| h.revision).unwrap_or_default();
        if resp.succeeded {
            return Ok(Claimed::Stored(Object::from_value(
                key, &mut obj, revision,
            )?));
        }
        let found = found_keys(&resp.responses);
        if found.contains(&key) {
            return Err(Error::AlreadyExists {
                group: r.group,
                resource: r.name,
                name: name.to_string(),
            });
        }
        Ok(Claimed::Taken(found))
    }

    /// Replaces a Service still at `rv`, claiming the records of `claims`
    /// and releasing those of `releases` (while they still name it) in the
    /// same Txn: 409 Conflict when it moved on, [`Claimed::Taken`] naming
    /// claimed records held already.
    #[allow(clippy::too_many_arguments)] // the keys claimed and released
    pub async fn update_claiming(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        rv: i64,
        claims: &[String],
        releases: &[String],
    ) -> Result<Claimed> {
        let key = r.key(ns, name);
        let record = owner_record(&obj);
        let bytes = encode_for_storage(r, &mut obj)?;
        let mut cmp = vec![compare(
            &key,
            CompareTarget::Mod,
            TargetUnion::ModRevision(rv),
        )];
        let mut success = vec![put(&key, bytes)];
        let mut failure = vec![get(&key)];
        for k in claims {
            cmp.push(absent(k));
            success.push(put(k, record.clone()));
            failure.push(get(k));
        }
        success.extend(releases.iter().map(|k| release(k, &record)));
        let resp = self
            .etcd
            .txn_request(TxnRequest {
                compare: cmp,
                success,
                failure,
            })
            .await?;
        let revision = resp.header.as_ref().map(|h| h.revision).unwrap_or_default();
        if resp.succeeded {
            return Ok(Claimed::Stored(Object::from_value(
                key, &mut obj, revision,
            )?));
        }
        let mut found = found_keys(&resp.responses);
        let current = resp.responses.first().and_then(|r| match &r.response {
            Some(Response::ResponseRange(g)) => g.kvs.first().map(|kv| kv.mod_revision),
            _ => None,
        });
        if current != Some(rv) {
            return Err(super::conflict(r, name));
        }
        found.retain(|k| *k != key);
        Ok(Claimed::Taken(found))
    }

    /// Deletes a Service still at `rv` and releases the records it holds,
    /// in one Txn: the deletion's revision, or `None` when it changed.
    pub(super) async fn delete_service(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        rv: i64,
    ) -> Result<Option<i64>> {
        let key = r.key(ns, name);
        let Some(kv) = self.etcd.get(&key).await? else {
            return Err(not_found(r, name));
        };
        if kv.mod_revision != rv {
            return Ok(None);
        }
        let stored: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| Error::Internal(format!("stored object at {key} is not JSON: {e}")))?;
        let record = owner_record(&stored);
        let mut success = vec![op(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }))];
        success.extend(held_keys(&stored).iter().map(|k| release(k, &record)));
        let resp = self
            .etcd
            .txn_request(TxnRequest {
                compare: vec![compare(
                    &key,
                    CompareTarget::Mod,
                    TargetUnion::ModRevision(rv),
                )],
                success,
                failure: vec![],
            })
            .await?;
        Ok(resp
            .succeeded
            .then(|| resp.header.as_ref().map(|h| h.revision).unwrap_or_default()))
    }

    /// Releases every ClusterIP and NodePort record whose owner Service no
    /// longer exists (by namespace, name and uid); how many. Safe while
    /// Services are written: a record is only ever created with its
    /// Service, and a release compares the record's value.
    pub async fn repair_service_allocations(&self) -> Result<usize> {
        let mut records = Vec::new();
        for prefix in [IP_PREFIX, NODE_PORT_PREFIX] {
            let end = prefix_end(prefix);
            let mut start = prefix.to_string();
            for _ in 0..2048 {
                let page = self.etcd.range(&start, &end, 0, 1000).await?;
                for kv in &page.kvs {
                    records.push((kv.key.clone(), kv.value.clone()));
                }
                match page.kvs.last() {
                    Some(last) if page.more => {
                        let mut next = last.key.clone();
                        next.push(0);
                        start = String::from_utf8_lossy(&next).into_owned();
                    }
                    _ => break,
                }
            }
        }
        if records.is_empty() {
            return Ok(0);
        }
        // Read after the records: a Service alive then is in this list.
        let services = Resource::find("", "services").expect("services are served");
        let list = self
            .list(services, &crate::selector::Filter::default(), 0, None, 0)
            .await?;
        let alive: HashSet<Vec<u8>> = list
            .items
            .iter()
            .filter_map(|o| o.value().ok())
            .map(|v| owner_record(&v))
            .collect();
        let mut released = 0;
        for (key, value) in records {
            if alive.contains(&value) {
                continue;
            }
            let key = String::from_utf8_lossy(&key).into_owned();
            let resp = self
                .etcd
                .txn_request(TxnRequest {
                    compare: vec![],
                    success: vec![release(&key, &value)],
                    failure: vec![],
                })
                .await?;
            let deleted = resp.responses.first().is_some_and(
                |r| matches!(&r.response, Some(Response::ResponseTxn(t)) if t.succeeded),
            );
            if deleted {
                tracing::info!(key, "released an address whose Service is gone");
                released += 1;
            }
        }
        Ok(released)
    }
}

/// The keys a failed Txn's `Get`s found.
fn found_keys(responses: &[ballast_proto::etcdserverpb::ResponseOp]) -> Vec<String> {
    responses
        .iter()
        .filter_map(|r| match &r.response {
            Some(Response::ResponseRange(g)) => g.kvs.first(),
            _ => None,
        })
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_port_ranges_parse_as_the_flags() {
        let c: Ipv4Cidr = "127.96.0.0/16".parse().unwrap();
        assert_eq!(c.to_string(), "127.96.0.0/16");
        assert_eq!(c.first(), Ipv4Addr::new(127, 96, 0, 1));
        assert!(c.usable("127.96.255.254".parse().unwrap()));
        assert!(!c.usable("127.96.255.255".parse().unwrap()));
        assert!(!c.usable("127.96.0.0".parse().unwrap()));
        assert!(!c.contains("127.97.0.1".parse().unwrap()));
        assert!(!c.contains("127.95.255.255".parse().unwrap()));
        assert!("127.96.0.1/16".parse::<Ipv4Cidr>().is_err());
        assert!("127.0.0.0/8".parse::<Ipv4Cidr>().is_err());
        assert!("::1/120".parse::<Ipv4Cidr>().is_err());
        let p: PortRange = "30000-32767".parse().unwrap();
        assert!(p.contains(30000) && p.contains(32767) && !p.contains(32768));
        assert_eq!(p.to_string(), "30000-32767");
        assert!("5-4".parse::<PortRange>().is_err());
        assert!("x".parse::<PortRange>().is_err());
    }

    #[test]
    fn a_service_holds_its_ips_and_node_ports_once() {
        let svc = json!({"spec": {"clusterIP": "127.96.0.9", "clusterIPs": ["127.96.0.9"],
            "ports": [{"port": 53, "protocol": "TCP", "nodePort": 30053},
                      {"port": 53, "protocol": "UDP", "nodePort": 30053}]}});
        assert_eq!(
            held_keys(&svc),
            [
                "/registry/ipaddresses/127.96.0.9",
                "/registry/servicenodeports/30053"
            ]
        );
        let headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        assert!(held_keys(&headless).is_empty());
    }
}
