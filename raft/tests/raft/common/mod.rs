//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_raft::testing::{encode_append, Cluster, KvNode, KvReader};
use ballast_raft::{Error, Role};
use parking_lot::RwLock;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

/// Cluster tests in one binary run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Handles of the running nodes, shared with client tasks so they never
/// hold the cluster itself while it is being changed.
pub type Nodes = Arc<RwLock<BTreeMap<u64, (KvNode, KvReader)>>>;

pub fn nodes_of(c: &Cluster) -> BTreeMap<u64, (KvNode, KvReader)> {
    c.live()
        .into_iter()
        .filter_map(|id| Some((id, (c.node(id)?, c.reader(id)?))))
        .collect()
}

pub fn shared_nodes(c: &Cluster) -> Nodes {
    Arc::new(RwLock::new(nodes_of(c)))
}

/// Appends through whichever node leads, retrying only definite failures
/// (NotLeader, ProposalDropped). `Ok` = acknowledged; `Err` = unknown.
pub async fn append_via(
    nodes: &Nodes,
    key: u64,
    value: u64,
    give_up: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + give_up;
    let mut hint: Option<u64> = None;
    loop {
        let node = {
            let map = nodes.read();
            hint.and_then(|id| map.get(&id).map(|(n, _)| n.clone()))
                .or_else(|| {
                    map.values()
                        .filter(|(n, _)| n.status().role == Role::Leader)
                        .max_by_key(|(n, _)| n.status().term)
                        .map(|(n, _)| n.clone())
                })
        };
        match node {
            None => sleep(Duration::from_millis(20)).await,
            Some(node) => match node.propose(encode_append(key, value)).await {
                Ok(_) => return Ok(()),
                Err(Error::NotLeader { leader }) => {
                    hint = leader;
                    if leader.is_none() {
                        sleep(Duration::from_millis(20)).await;
                    }
                }
                Err(Error::ProposalDropped) => {
                    hint = None;
                    sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            },
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout);
        }
    }
}

/// A client appending 1, 2, 3, … to `key` until `stop`; returns the values
/// that were acknowledged.
pub fn acked_writer(nodes: Nodes, key: u64, stop: Arc<AtomicBool>) -> JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut v = 0;
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
            v += 1;
            if append_via(&nodes, key, v, Duration::from_secs(5))
                .await
                .is_ok()
            {
                acked.push(v);
            }
            sleep(Duration::from_millis(2)).await;
        }
        acked
    })
}
