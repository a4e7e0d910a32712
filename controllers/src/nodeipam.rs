//! Node IPAM, as kube-controller-manager's `nodeipam` controller with
//! `--allocate-node-cidrs` and the range allocator: every Node gets its own
//! `spec.podCIDR` out of `--cluster-cidr`, cut into blocks of
//! `--node-cidr-mask-size` bits.
//!
//! The blocks are a bitmap ([`CidrSet`]). At start it is rebuilt from the
//! Nodes that exist (their `spec.podCIDRs` are marked used), and the
//! Service range, where it overlaps, is marked used for good. Then each
//! Node without a range gets the next free block after the last one handed
//! out (round robin, as kube's `AllocateNext`, so a block just freed is not
//! reused at once while others are free), written with a merge patch of
//! `spec.podCIDR` and `spec.podCIDRs`. A deleted Node's block — or the
//! old block of a Node whose range was edited — is freed unless another
//! Node still holds a range in it.
//!
//! When no block is left the Node gets an Event `CIDRNotAvailable` ("Node
//! <name> status is now: CIDRNotAvailable", as kube's `cidrAllocator`); it
//! is tried again with back-off and as soon as a block is freed. Like kube's
//! range allocator it sets no Node condition: `NetworkUnavailable` belongs
//! to the route controller and the kubelet's status posts.
//!
//! Worked example: cluster CIDR `127.200.0.0/22`, mask size 24 → four
//! blocks `127.200.{0,1,2,3}.0/24`. Nodes a, b, c, d get blocks 0..3; e
//! finds none (Event); b is deleted, block 1 is free, and e gets
//! `127.200.1.0/24`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::informer::{Cache, Informer};
use crate::queue::{Queue, Requeue};
use crate::util::is_not_found;
use crate::Error;

/// Kube's limit on the number of blocks: the mask size may exceed the
/// cluster prefix by at most this many bits.
const MAX_BLOCK_BITS: u8 = 16;

/// Node updates in flight at once (kube's `cidrUpdateWorkers`).
const WORKERS: usize = 30;

/// The reason of the Event and the condition of a Node left without a range.
pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";

/// An IPv4 network `base/prefix` with the host bits of `base` zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/n`, as Go's `net.ParseCIDR` (host bits are masked off).
    pub fn parse(s: &str) -> Result<Ipv4Cidr, String> {
        let invalid = || format!("invalid CIDR address: {s}");
        let (ip, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(invalid)?;
        Ok(Ipv4Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask(prefix)),
            prefix,
        })
    }

    /// The first and last address as integers.
    fn bounds(&self) -> (u32, u32) {
        let first = u32::from(self.base);
        (first, first | !mask(self.prefix))
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let (a0, a1) = self.bounds();
        let (b0, b1) = other.bounds();
        a0 <= b1 && b0 <= a1
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The blocks of one cluster CIDR and which are in use (kube's `cidrset`).
#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: Ipv4Cidr,
    mask_size: u8,
    used: Vec<bool>,
    /// Where the next search starts: one past the last block handed out.
    next_candidate: usize,
}

impl CidrSet {
    /// The blocks of `mask_size` bits in `cluster`; refused as kube does
    /// when the mask is shorter than the cluster's prefix or makes more
    /// than 2^16 blocks.
    pub fn new(cluster: Ipv4Cidr, mask_size: u8) -> Result<CidrSet, String> {
        if mask_size < cluster.prefix || mask_size > 32 {
            return Err(format!(
                "--node-cidr-mask-size {mask_size} must be between the cluster CIDR's prefix /{} and 32",
                cluster.prefix
            ));
        }
        if mask_size - cluster.prefix > MAX_BLOCK_BITS {
            return Err(format!(
                "New CIDR set failed; the node CIDR size is too big: --node-cidr-mask-size {mask_size} \
                 cuts {cluster} into more than 2^{MAX_BLOCK_BITS} blocks"
            ));
        }
        Ok(CidrSet {
            cluster,
            mask_size,
            used: vec![false; 1 << (mask_size - cluster.prefix)],
            next_candidate: 0,
        })
    }

    fn block(&self, i: usize) -> Ipv4Cidr {
        let step = 1u64 << (32 - u32::from(self.mask_size));
        Ipv4Cidr {
            base: Ipv4Addr::from(
                (u64::from(u32::from(self.cluster.base)) + i as u64 * step) as u32,
            ),
            prefix: self.mask_size,
        }
    }

    /// The blocks `cidr` touches, or `None` when it lies outside the
    /// cluster CIDR.
    fn indices(&self, cidr: &Ipv4Cidr) -> Option<std::ops::RangeInclusive<usize>> {
        if !self.cluster.overlaps(cidr) {
            return None;
        }
        let (c0, c1) = self.cluster.bounds();
        let (a0, a1) = cidr.bounds();
        let shift = 32 - u32::from(self.mask_size);
        let first = (a0.max(c0) - c0).checked_shr(shift).unwrap_or(0);
        let last = (a1.min(c1) - c0).checked_shr(shift).unwrap_or(0);
        Some(first as usize..=last as usize)
    }

    /// The next free block after the last one handed out, marked used.
    pub fn allocate_next(&mut self) -> Option<Ipv4Cidr> {
        let n = self.used.len();
        let i = (0..n)
            .map(|k| (self.next_candidate + k) % n)
            .find(|i| !self.used[*i])?;
        self.used[i] = true;
        self.next_candidate = (i + 1) % n;
        Some(self.block(i))
    }

    /// Marks the blocks `cidr` covers as used; false when it lies outside.
    pub fn occupy(&mut self, cidr: &Ipv4Cidr) -> bool {
        let Some(range) = self.indices(cidr) else {
            return false;
        };
        for i in range {
            self.used[i] = true;
        }
        true
    }

    /// Frees the blocks `cidr` covers (nothing when it lies outside).
    pub fn release(&mut self, cidr: &Ipv4Cidr) {
        if let Some(range) = self.indices(cidr) {
            for i in range {
                self.used[i] = false;
            }
        }
    }

    /// Blocks in use.
    pub fn used(&self) -> usize {
        self.used.iter().filter(|u| **u).count()
    }
}

/// `--cluster-cidr`, `--node-cidr-mask-size` and the Service range kept out.
#[derive(Debug, Clone)]
pub struct NodeIpamConfig {
    pub cluster_cidr: Ipv4Cidr,
    pub node_cidr_mask_size: u8,
    /// `--service-cluster-ip-range`: blocks overlapping it are never handed out.
    pub service_cidr: Option<Ipv4Cidr>,
}

impl NodeIpamConfig {
    /// The empty block set of this configuration, the Service range taken.
    pub fn cidr_set(&self) -> Result<CidrSet, String> {
        let mut set = CidrSet::new(self.cluster_cidr, self.node_cidr_mask_size)?;
        if let Some(service) = &self.service_cidr {
            set.occupy(service);
        }
        Ok(set)
    }
}

/// The pod CIDRs a Node holds.
fn node_cidrs(node: &Node) -> Vec<Ipv4Cidr> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let listed = spec.pod_cidrs.clone().unwrap_or_default();
    let all = if listed.is_empty() {
        spec.pod_cidr.iter().cloned().collect()
    } else {
        listed
    };
    all.iter().filter_map(|c| Ipv4Cidr::parse(c).ok()).collect()
}

/// Frees the blocks of `dropped`, then marks used again the blocks of
/// every range `nodes` (the Nodes as they are now) hold: two Nodes may
/// share a block (ranges smaller than a block, or set by hand), and one
/// leaving must not free it under the other.
fn release_unheld(set: &mut CidrSet, dropped: &[Ipv4Cidr], nodes: &[Arc<Node>]) {
    for cidr in dropped {
        set.release(cidr);
    }
    for held in nodes.iter().flat_map(|n| node_cidrs(n)) {
        set.occupy(&held);
    }
}

/// The node IPAM controller; see the module doc.
pub struct NodeIpamController {
    client: Client,
    nodes: Cache<Node>,
    set: Arc<Mutex<CidrSet>>,
    queue: Queue<String>,
    recorder: Recorder,
    cluster_cidr: Ipv4Cidr,
}

impl NodeIpamController {
    /// The controller over the shared Node informer; fails on a
    /// configuration kube would refuse.
    pub fn new(
        client: Client,
        nodes: &mut Informer<Node>,
        config: &NodeIpamConfig,
    ) -> Result<NodeIpamController, Error> {
        let set = Arc::new(Mutex::new(config.cidr_set().map_err(Error::Other)?));
        let queue: Queue<String> = Queue::named("nodeipam");
        let (q, s, cache) = (queue.clone(), set.clone(), nodes.cache());
        nodes.on_change(move |old, new| {
            // The ranges `old` held that `new` (none when deleted) does not.
            let dropped: Vec<Ipv4Cidr> = match old {
                Some(old) => {
                    let kept = new.map(node_cidrs).unwrap_or_default();
                    node_cidrs(old)
                        .into_iter()
                        .filter(|c| !kept.contains(c))
                        .collect()
                }
                None => Vec::new(),
            };
            if !dropped.is_empty() {
                release_unheld(&mut s.lock(), &dropped, &cache.all());
                // A Node waiting for a block may have one now.
                for waiting in cache.all() {
                    if node_cidrs(&waiting).is_empty() {
                        q.add(waiting.name_any());
                    }
                }
            }
            if let Some(node) = new {
                q.add(node.name_any());
            }
        });
        Ok(NodeIpamController {
            recorder: Recorder::new(client.clone(), "cidrAllocator", None),
            client,
            nodes: nodes.cache(),
            set,
            queue,
            cluster_cidr: config.cluster_cidr,
        })
    }

    /// Rebuilds the bitmap from the listed Nodes, then allocates until dropped.
    pub async fn run(self) {
        self.nodes.wait_ready().await;
        {
            let mut set = self.set.lock();
            for node in self.nodes.all() {
                for cidr in node_cidrs(&node) {
                    set.occupy(&cidr);
                }
            }
            tracing::info!(cluster_cidr = %self.cluster_cidr, used = set.used(), "node IPAM running");
        }
        let queue = self.queue.clone();
        let this = Arc::new(self);
        queue
            .run(WORKERS, move |name| {
                let this = this.clone();
                async move { this.sync(&name).await }
            })
            .await;
    }

    async fn sync(&self, name: &str) -> Result<Requeue, Error> {
        let Some(node) = self.nodes.get("", name) else {
            return Ok(None);
        };
        let held = node_cidrs(&node);
        if !held.is_empty() {
            let mut set = self.set.lock();
            for cidr in &held {
                set.occupy(cidr);
            }
            return Ok(None);
        }
        let Some(cidr) = self.set.lock().allocate_next() else {
            self.report_full(&node).await;
            return Err(Error::Other(format!(
                "failed to allocate cidr from cluster cidr {}: CIDR allocation failed; \
                 there are no remaining CIDRs left to allocate in the accepted range",
                self.cluster_cidr
            )));
        };
        let api: Api<Node> = Api::all(self.client.clone());
        // The live Node, not the cache: another writer may have set a
        // range meanwhile (kube's "Node already has a CIDR allocated").
        match api.get(name).await {
            Ok(live) if !node_cidrs(&live).is_empty() => {
                self.set.lock().release(&cidr);
                return Ok(None);
            }
            Ok(_) => {}
            Err(e) => {
                self.set.lock().release(&cidr);
                return if is_not_found(&e) {
                    Ok(None)
                } else {
                    Err(e.into())
                };
            }
        }
        let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = name, cidr = %cidr, "set node pod CIDR");
                Ok(None)
            }
            Err(e) => {
                self.set.lock().release(&cidr);
                if is_not_found(&e) {
                    Ok(None)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// The Event of a Node that found no free block (kube's
    /// `RecordNodeStatusChange`).
    async fn report_full(&self, node: &Node) {
        let name = node.name_any();
        let regarding = ObjectReference {
            kind: Some("Node".into()),
            api_version: Some("v1".into()),
            name: Some(name.clone()),
            uid: Some(name.clone()),
            ..ObjectReference::default()
        };
        self.recorder
            .publish_about(
                regarding,
                EventType::Normal,
                CIDR_NOT_AVAILABLE,
                &format!("Node {name} status is now: {CIDR_NOT_AVAILABLE}"),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(s).unwrap()
    }

    #[test]
    fn parses_like_go() {
        assert_eq!(cidr("127.200.3.7/22").to_string(), "127.200.0.0/22");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in [
            "127.0.0.1",
            "127.0.0.1/33",
            "300.0.0.0/8",
            "x/8",
            "127.0.0.0/-1",
        ] {
            assert_eq!(
                Ipv4Cidr::parse(bad).unwrap_err(),
                format!("invalid CIDR address: {bad}")
            );
        }
        assert!(cidr("127.128.0.0/9").overlaps(&cidr("127.200.1.0/24")));
        assert!(!cidr("127.128.0.0/9").overlaps(&cidr("127.96.0.0/16")));
        assert!(cidr("127.96.5.0/24").overlaps(&cidr("127.96.0.0/16")));
    }

    #[test]
    fn allocates_round_robin_and_reuses_freed_blocks() {
        let mut set = CidrSet::new(cidr("127.200.0.0/22"), 24).unwrap();
        let got: Vec<String> = (0..4)
            .map(|_| set.allocate_next().unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "127.200.0.0/24",
                "127.200.1.0/24",
                "127.200.2.0/24",
                "127.200.3.0/24"
            ]
        );
        assert_eq!(set.allocate_next(), None, "full");
        set.release(&cidr("127.200.1.0/24"));
        assert_eq!(set.allocate_next(), Some(cidr("127.200.1.0/24")));
        // Round robin: after block 1 the search starts at block 2.
        set.release(&cidr("127.200.0.0/24"));
        set.release(&cidr("127.200.3.0/24"));
        assert_eq!(set.allocate_next(), Some(cidr("127.200.3.0/24")));
        assert_eq!(set.allocate_next(), Some(cidr("127.200.0.0/24")));
    }

    #[test]
    fn occupies_what_nodes_hold_and_keeps_the_service_range_out() {
        let config = NodeIpamConfig {
            cluster_cidr: cidr("127.96.0.0/14"),
            node_cidr_mask_size: 16,
            service_cidr: Some(cidr("127.96.0.0/16")),
        };
        let mut set = config.cidr_set().unwrap();
        assert_eq!(set.used(), 1);
        // A larger range marks every block it covers; one outside, none.
        assert!(set.occupy(&cidr("127.98.0.0/15")));
        assert!(!set.occupy(&cidr("127.1.0.0/16")));
        assert_eq!(set.allocate_next(), Some(cidr("127.97.0.0/16")));
        assert_eq!(set.allocate_next(), None);
        // A smaller range marks the block that holds it.
        set.release(&cidr("127.98.0.0/16"));
        assert!(set.occupy(&cidr("127.98.7.0/24")));
        assert_eq!(set.allocate_next(), None);
    }

    fn node(pod_cidr: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": pod_cidr},
                "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}}))
            .unwrap(),
        )
    }

    #[test]
    fn a_block_still_held_by_another_node_stays_used() {
        let mut set = CidrSet::new(cidr("127.200.0.0/22"), 24).unwrap();
        // Two Nodes given halves of block 0 by hand, one of block 1.
        let (a, b, c) = (
            node("127.200.0.0/25"),
            node("127.200.0.128/25"),
            node("127.200.1.0/24"),
        );
        for n in [&a, &b, &c] {
            for held in node_cidrs(n) {
                assert!(set.occupy(&held));
            }
        }
        assert_eq!(set.used(), 2);
        // a leaves: b still holds block 0.
        release_unheld(&mut set, &node_cidrs(&a), &[b.clone(), c.clone()]);
        assert_eq!(set.used(), 2);
        // b leaves too: block 0 is free, block 1 untouched.
        release_unheld(&mut set, &node_cidrs(&b), std::slice::from_ref(&c));
        assert_eq!(set.used(), 1);
        assert_eq!(set.allocate_next(), Some(cidr("127.200.0.0/24")));
    }

    #[test]
    fn refuses_what_kube_refuses() {
        let err = CidrSet::new(cidr("127.0.0.0/8"), 25).unwrap_err();
        assert!(err.contains("too big"), "{err}");
        let err = CidrSet::new(cidr("127.128.0.0/9"), 8).unwrap_err();
        assert!(err.contains("between"), "{err}");
        assert!(CidrSet::new(cidr("127.128.0.0/9"), 24).is_ok());
    }
}
