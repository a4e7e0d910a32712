//! A randomized fault schedule — kills, restarts, partitions (also one-way),
//! message loss, delay and duplication — while clients append and read. The
//! recorded history must be linearizable and every acknowledged append must
//! be in the final state of every node.
//!
//! The schedule follows a seed, printed at start; rerun one with
//! `BALLAST_SEED=<seed> cargo test --release --workspace --test raft -- faults::`
//! (thread timing still differs between runs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{append_via, nodes_of, shared_nodes, Nodes};
use ballast_raft::testing::{check, Cluster, ClusterConfig, History, OpKind, OpResult, Operation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{sleep, Instant};

const NODES: u64 = 3;
const KEYS: u64 = 6;
const CLIENTS: u64 = 4;
const FAULT_PHASE: Duration = Duration::from_secs(25);

fn seed() -> u64 {
    match std::env::var("BALLAST_SEED") {
        Ok(s) => s.parse().expect("BALLAST_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

async fn client(id: u64, nodes: Nodes, history: History, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id * 0x9e37_79b9));
    let mut seq = 0u64;
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < FAULT_PHASE * 3 {
        let key = rng.random_range(0..KEYS);
        if rng.random_bool(0.5) {
            seq += 1;
            let value = (id << 32) | seq;
            let call = history.now();
            let result = append_via(&nodes, key, value, Duration::from_secs(4)).await;
            history.record(Operation {
                client: id,
                key,
                kind: OpKind::Append(value),
                result: if result.is_ok() {
                    OpResult::Appended
                } else {
                    OpResult::Unknown
                },
                call,
                ret: history.now(),
            });
        } else {
            let target = {
                let map = nodes.read();
                let ids: Vec<u64> = map.keys().copied().collect();
                if ids.is_empty() {
                    None
                } else {
                    map.get(&ids[rng.random_range(0..ids.len())]).cloned()
                }
            };
            let Some((node, reader)) = target else {
                sleep(Duration::from_millis(20)).await;
                continue;
            };
            let call = history.now();
            if node.read_index().await.is_ok() {
                let values = reader.get(key);
                history.record(Operation {
                    client: id,
                    key,
                    kind: OpKind::Read,
                    result: OpResult::Read(values),
                    call,
                    ret: history.now(),
                });
            }
        }
        sleep(Duration::from_millis(rng.random_range(0..4))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_faults_keep_history_linearizable() {
    let seed = seed();
    println!("BALLAST_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig {
        seed,
        snapshot_count: 150,
        snapshot_catch_up_entries: 30,
        flush_every: 9,
        request_timeout: Duration::from_secs(3),
        ..ClusterConfig::default()
    };
    let mut c = Cluster::start(dir.path(), NODES, cfg).await.unwrap();
    c.wait_leader(Duration::from_secs(15)).await.unwrap();

    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let nodes = shared_nodes(&c);
    let clients: Vec<_> = (1..=CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                nodes.clone(),
                history.clone(),
                stop.clone(),
                seed,
            ))
        })
        .collect();

    let started = Instant::now();
    let mut log = Vec::new();
    while started.elapsed() < FAULT_PHASE {
        sleep(Duration::from_millis(rng.random_range(400..1200))).await;
        let live = c.live();
        let dead: Vec<u64> = c
            .ids()
            .into_iter()
            .filter(|id| !live.contains(id))
            .collect();
        let pick = |rng: &mut StdRng, ids: &[u64]| ids[rng.random_range(0..ids.len())];
        let action = rng.random_range(0..100);
        let what = match action {
            0..=19 if live.len() == NODES as usize => {
                let id = pick(&mut rng, &live);
                c.kill(id).await.unwrap();
                format!("kill {id}")
            }
            0..=34 if !dead.is_empty() => {
                let id = pick(&mut rng, &dead);
                c.start_node(id).unwrap();
                format!("restart {id}")
            }
            35..=49 => {
                let id = rng.random_range(1..=NODES);
                let others: Vec<u64> = (1..=NODES).filter(|&o| o != id).collect();
                c.net().isolate(id, &others);
                format!("isolate {id}")
            }
            50..=59 => {
                let from = rng.random_range(1..=NODES);
                let to = (from % NODES) + 1;
                c.net().block(from, to);
                format!("block {from}->{to}")
            }
            60..=69 => {
                c.net().heal();
                "heal".to_string()
            }
            70..=77 => match c.wait_leader(Duration::from_secs(1)).await {
                Ok(leader) if live.len() > 1 => {
                    let others: Vec<u64> =
                        live.iter().copied().filter(|&id| id != leader).collect();
                    let to = pick(&mut rng, &others);
                    let node = c.node(leader).expect("leader is live");
                    let r = tokio::time::timeout(Duration::from_secs(2), node.transfer_leader(to))
                        .await;
                    format!(
                        "transfer {leader}->{to}: {}",
                        if matches!(r, Ok(Ok(()))) {
                            "done"
                        } else {
                            "not done"
                        }
                    )
                }
                _ => "transfer skipped (no leader)".to_string(),
            },
            _ => {
                let loss = rng.random_range(0.0..0.15);
                let dup = rng.random_range(0.0..0.1);
                let delay = Duration::from_millis(rng.random_range(0..20));
                c.net().set_drop_rate(loss);
                c.net().set_duplicate_rate(dup);
                c.net().set_delay(Duration::ZERO, delay);
                format!("loss {loss:.2} dup {dup:.2} delay<={delay:?}")
            }
        };
        *nodes.write() = nodes_of(&c);
        log.push(format!("{:>6.2}s {what}", started.elapsed().as_secs_f64()));
    }
    println!("fault schedule:\n{}", log.join("\n"));

    // Heal everything and let the clients run a little on a healthy cluster.
    c.net().clear_faults();
    for id in c.ids() {
        c.start_node(id).unwrap();
    }
    *nodes.write() = nodes_of(&c);
    sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for cl in clients {
        cl.await.unwrap();
    }

    c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let state = c.wait_converged(Duration::from_secs(60)).await.unwrap();
    // Final reads through every node, part of the history.
    for id in c.live() {
        for key in 0..KEYS {
            let call = history.now();
            let values = c.read(id, key).await.unwrap();
            assert_eq!(
                values,
                state.data.get(&key).cloned().unwrap_or_default(),
                "node {id} key {key}"
            );
            history.record(Operation {
                client: 100 + id,
                key,
                kind: OpKind::Read,
                result: OpResult::Read(values),
                call,
                ret: history.now(),
            });
        }
    }

    let ops = history.ops();
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &ops {
        let k = match (&o.kind, &o.result) {
            (OpKind::Append(_), OpResult::Appended) => "append ok",
            (OpKind::Append(_), _) => "append unknown",
            _ => "read",
        };
        *per_kind.entry(k).or_default() += 1;
    }
    println!("history: {per_kind:?}, seed {seed}");
    assert!(
        per_kind.get("append ok").copied().unwrap_or(0) > 50,
        "{per_kind:?}"
    );

    for o in &ops {
        if let (OpKind::Append(v), OpResult::Appended) = (&o.kind, &o.result) {
            let list = state.data.get(&o.key).cloned().unwrap_or_default();
            assert!(
                list.contains(v),
                "acknowledged append {v} to key {} lost (seed {seed})",
                o.key
            );
        }
    }
    let checked = Instant::now();
    if let Err(v) = check(&ops) {
        panic!("linearizability violation (seed {seed}): {v}");
    }
    println!("linearizability checked in {:?}", checked.elapsed());
    c.shutdown().await;
}
