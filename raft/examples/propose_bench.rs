//! Proposal throughput and commit latency of a three-node cluster on
//! loopback gRPC with fsync on.
//!
//! ```text
//! cargo run --release -p ballast-raft --example propose_bench -- [seconds-per-level] [dir]
//! ```
//!
//! For 1, 64 and 1,024 concurrent proposers it prints proposals/s and p50/p99
//! latency (propose → applied on the leader), after the raw fsync rate of the
//! disk under `dir` (default: a temp dir under `target/`).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_raft::{
    grpc_service, Committed, Error, GrpcTransport, GrpcTransportConfig, Member, NodeConfig,
    RaftNode, Role, StateMachine,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// A state machine that only counts: the benchmark measures replication.
struct Counter {
    applied: u64,
}

impl StateMachine for Counter {
    type Output = ();

    fn apply(&mut self, entries: &[Committed]) -> Vec<()> {
        if let Some(e) = entries.last() {
            self.applied = self.applied.max(e.index);
        }
        vec![(); entries.len()]
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn sync(&mut self) -> Result<(), Error> {
        // A count the benchmark never restarts from: nothing to keep.
        Ok(())
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64, Error> {
        out.write_all(&self.applied.to_le_bytes())?;
        Ok(self.applied)
    }

    fn restore(&mut self, index: u64, _image: &ballast_raft::SnapshotImage) -> Result<(), Error> {
        self.applied = index;
        Ok(())
    }
}

fn fsync_rate(dir: &Path, secs: f64) -> std::io::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(rate)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5.0);
    let tmp = match args.get(2) {
        Some(d) => tempfile::tempdir_in(d)?,
        // Under target/ so the data is on the build disk and out of git's way.
        None => tempfile::tempdir_in(if Path::new("target").is_dir() {
            "target"
        } else {
            "."
        })?,
    };
    let dir = tmp.path();

    println!(
        "raw fsync (4 KiB write + fdatasync): {:.0}/s",
        fsync_rate(dir, 2.0)?
    );

    let mut listeners = Vec::new();
    let mut peers = Vec::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        peers.push(Member::voter(id, format!("http://{}", l.local_addr()?)));
        listeners.push(l);
    }
    let mut nodes = Vec::new();
    let mut joins = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let mut cfg = NodeConfig::new(id, dir.join(format!("n{id}")));
        cfg.initial_peers = peers.clone();
        cfg.sync_log = true;
        let transport = GrpcTransport::new(id, GrpcTransportConfig::default())?;
        let (node, join) = RaftNode::start(cfg, Counter { applied: 0 }, transport)?;
        let svc = grpc_service(node.inbox());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(l))
                .await;
        });
        nodes.push(node);
        joins.push(join);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            break n.clone();
        }
        if Instant::now() > deadline {
            return Err("no leader".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("leader: node {}", leader.id());
    let payload = vec![0xabu8; 256];

    println!("proposers  proposals/s  p50       p99       (256-byte proposals, {secs}s each)");
    for concurrency in [1usize, 64, 1024] {
        let stop = Arc::new(AtomicBool::new(false));
        let fsyncs_before = leader.metrics().fsyncs;
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let node = leader.clone();
                let stop = stop.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        if node.propose(payload.clone()).await.is_ok() {
                            lat.push(t.elapsed());
                        }
                    }
                    lat
                })
            })
            .collect();
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await?);
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_unstable();
        let fsyncs = leader.metrics().fsyncs - fsyncs_before;
        println!(
            "{concurrency:>9}  {:>11.0}  {:>8.2?}  {:>8.2?}  ({} fsyncs on the leader, {:.1} proposals per fsync)",
            all.len() as f64 / elapsed,
            percentile(&all, 0.50),
            percentile(&all, 0.99),
            fsyncs,
            all.len() as f64 / fsyncs.max(1) as f64,
        );
    }
    for n in &nodes {
        n.shutdown().await;
    }
    for j in joins {
        let _ = j.await;
    }
    Ok(())
}
