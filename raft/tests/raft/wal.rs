//! A member's raft WAL after damage, through `RaftNode::start`: a torn
//! final record (a write a crash interrupted) is dropped and the member
//! comes back with everything it acknowledged; any other bad record stops
//! the start with `Error::Corrupt` naming the segment file and offset.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::SERIAL;
use ballast_raft::testing::{Cluster, ClusterConfig};
use ballast_raft::Error;

const LEADER_WAIT: Duration = Duration::from_secs(15);

/// The segment files, oldest first.
fn segments(wal: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    out.sort();
    out
}

/// The records of a segment: (offset, length of kind and payload).
fn frames(path: &Path) -> Vec<(u64, u64)> {
    let raw = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= raw.len() {
        let len = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push((at as u64, len as u64));
        at += 8 + len;
    }
    out
}

fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
}

fn expect_corrupt(c: &mut Cluster, id: u64, file: &Path, offset: u64) {
    match c.start_node(id) {
        Err(Error::Corrupt(m)) => {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                m.contains(&name) && m.contains(&format!("at offset {offset}")),
                "{m}"
            );
        }
        Err(e) => panic!("start failed, but not as Corrupt: {e}"),
        Ok(()) => panic!("a member started on a damaged WAL"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_restarts_and_damage_refuses_to_start() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig {
        sync_log: true,
        ..ClusterConfig::default()
    };
    let mut c = Cluster::start(dir.path(), 1, cfg).await.unwrap();
    c.wait_leader(LEADER_WAIT).await.unwrap();
    for v in 0..10 {
        c.append(1, v).await.unwrap();
    }
    c.kill(1).await.unwrap();
    let wal = c.node_dir(1).join("raft").join("wal");

    // A crash in the middle of the next write: a record header and the
    // first sector of a 3,000-byte record reached the disk.
    let last = segments(&wal).pop().unwrap();
    let (at, len) = *frames(&last).last().unwrap();
    let end = at + 8 + len;
    let mut torn = 3000u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xab; 4]);
    let mut to_sector_end = 512 - (end % 512) as usize;
    if to_sector_end < 16 {
        to_sector_end += 512;
    }
    torn.resize(to_sector_end, 0x5c);
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .write_all_at(&torn, end)
        .unwrap();
    c.start_node(1).unwrap();
    c.wait_leader(LEADER_WAIT).await.unwrap();
    assert_eq!(c.read(1, 1).await.unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(fs::metadata(&last).unwrap().len(), end, "trimmed");
    c.append(1, 10).await.unwrap();
    c.kill(1).await.unwrap();

    // A byte changed in a record with records after it, in the last
    // segment: refused, and nothing is trimmed.
    let all = segments(&wal);
    assert!(all.len() >= 2, "{all:?}");
    let last = all.last().unwrap();
    let records = frames(last);
    assert!(records.len() >= 3, "{records:?}");
    // (Its kind byte: every record has one.)
    let (at, _) = records[records.len() / 2];
    let size = fs::metadata(last).unwrap().len();
    flip(last, at + 8);
    expect_corrupt(&mut c, 1, last, at);
    assert_eq!(fs::metadata(last).unwrap().len(), size);
    // Undone, the member starts again with everything.
    flip(last, at + 8);
    c.start_node(1).unwrap();
    c.wait_leader(LEADER_WAIT).await.unwrap();
    assert_eq!(c.read(1, 1).await.unwrap(), (0..11).collect::<Vec<_>>());
    c.kill(1).await.unwrap();

    // A byte changed in the oldest segment, now closed.
    let first = segments(&wal).remove(0);
    let (at, _) = *frames(&first).last().unwrap();
    flip(&first, at + 8);
    expect_corrupt(&mut c, 1, &first, at);
    c.shutdown().await;
}
