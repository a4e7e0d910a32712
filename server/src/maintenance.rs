//! The etcd Maintenance service: status, alarms, defragment, hashes,
//! snapshots and leader transfer. With auth enabled, defragment, hashes and
//! snapshots need root, refused with etcd 3.4's raw `auth: …` errors (code
//! Unknown); status, alarms and leader transfer are open, as in etcd 3.4.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::command::{Op, ReplyKind};
use crate::error::{AuthError, ServerError};
use crate::node::{Node, ETCD_VERSION};
use crate::pb::etcdserverpb::{self as pb, maintenance_server::Maintenance};

/// Bytes per snapshot message (etcd sends 32 KiB chunks).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>) -> Self {
        MaintenanceService { node }
    }

    /// Root only (etcd's `authMaintenanceServer.isAuthenticated`).
    async fn require_root<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let caller = auth::caller(&self.node, &auth::Credentials::of(req))
            .await
            .map_err(AuthError::raw_status)?;
        auth::check_admin(&self.node, &caller).map_err(AuthError::raw_status)
    }
}

fn alarm_name(a: i32) -> &'static str {
    match pb::AlarmType::try_from(a) {
        Ok(pb::AlarmType::Nospace) => "NOSPACE",
        Ok(pb::AlarmType::Corrupt) => "CORRUPT",
        _ => "NONE",
    }
}

/// The snapshot as etcd clients expect it on the wire: the image with its
/// length in front, zero-padded to a multiple of 512 bytes (a database page)
/// and followed by the SHA-256 of all that, which etcdctl checks.
pub fn snapshot_blob(image: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut blob = Vec::with_capacity(image.len() + 8 + 512 + 32);
    blob.extend_from_slice(&(image.len() as u64).to_be_bytes());
    blob.extend_from_slice(image);
    blob.resize(blob.len().div_ceil(512) * 512, 0);
    let digest = Sha256::digest(&blob);
    blob.extend_from_slice(&digest);
    blob
}

/// The image inside a [`snapshot_blob`], checked; `None` if it is not one.
pub fn image_from_blob(blob: &[u8]) -> Option<&[u8]> {
    use sha2::{Digest, Sha256};
    if blob.len() < 8 + 32 || !(blob.len() - 32).is_multiple_of(512) {
        return None;
    }
    let (body, digest) = blob.split_at(blob.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return None;
    }
    let len = u64::from_be_bytes(body[..8].try_into().ok()?) as usize;
    body.get(8..8usize.checked_add(len)?)
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

/// Snapshot messages produced ahead of the client.
const SNAPSHOT_CHUNKS_AHEAD: usize = 8;

/// Sends a [`snapshot_blob`] of `store` as etcd's snapshot messages, never
/// holding the image in memory: the image is written to an anonymous file
/// in the member's data folder (its size must lead the blob), then read
/// back a chunk at a time, hashed as it goes.
fn stream_snapshot(
    store: &ballast_storage::WatchableStore,
    dir: &std::path::Path,
    header: pb::ResponseHeader,
    tx: &tokio::sync::mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) -> Result<(), Status> {
    use sha2::{Digest, Sha256};
    use std::io::{BufReader, BufWriter, Read, Seek, Write};
    let io = |e: std::io::Error| Status::internal(format!("snapshot: {e}"));
    let mut file = tempfile::tempfile_in(dir).map_err(io)?;
    let mut out = BufWriter::new(&mut file);
    let (len, _) =
        ballast_storage::snapshot::write_snapshot(store, &mut out).map_err(ServerError::from)?;
    out.flush().map_err(io)?;
    drop(out);
    file.rewind().map_err(io)?;
    let body_len = (8 + len).div_ceil(512) * 512;
    let mut body = std::io::Cursor::new(len.to_be_bytes())
        .chain(BufReader::new(file))
        .chain(std::io::repeat(0).take(body_len - 8 - len));
    let mut sha = Sha256::new();
    let mut remaining = body_len + 32;
    loop {
        let mut blob = Vec::with_capacity(SNAPSHOT_CHUNK + 32);
        (&mut body)
            .take(SNAPSHOT_CHUNK as u64)
            .read_to_end(&mut blob)
            .map_err(io)?;
        sha.update(&blob);
        let last = blob.len() < SNAPSHOT_CHUNK;
        if last {
            blob.extend_from_slice(&sha.clone().finalize());
        }
        remaining -= blob.len() as u64;
        let msg = pb::SnapshotResponse {
            header: Some(header),
            remaining_bytes: remaining,
            blob,
            version: ETCD_VERSION.into(),
        };
        // The client went away: nothing more to do.
        if tx.blocking_send(Ok(msg)).is_err() || last {
            return Ok(());
        }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let req = req.into_inner();
        if AlarmAction::try_from(req.action) != Ok(AlarmAction::Get) {
            let reply = self.node.write(Op::Alarm(req)).await?;
            if !matches!(reply, ReplyKind::Done(_)) {
                return Err(Status::internal("etcdserver: unexpected reply kind"));
            }
        }
        let alarms = self
            .node
            .cluster
            .read()
            .alarms
            .iter()
            .map(|(member_id, alarm)| pb::AlarmMember {
                member_id: *member_id,
                alarm: *alarm,
            })
            .collect();
        // etcd 3.4 sends no header here; its etcdctl prints `{}` for none.
        Ok(Response::new(pb::AlarmResponse {
            header: None,
            alarms,
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let st = self.node.raft.status();
        let db_size = self.node.store.size_bytes() as i64;
        let errors = self
            .node
            .cluster
            .read()
            .alarms
            .iter()
            .map(|(m, a)| format!("memberID:{m} alarm:{}", alarm_name(*a)))
            .collect();
        let is_learner = self
            .node
            .raft
            .members()
            .iter()
            .any(|m| m.id == self.node.member_id && m.is_learner);
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.node.current_header()),
            version: ETCD_VERSION.into(),
            db_size,
            leader: st.leader.unwrap_or(0),
            raft_index: st.commit_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors,
            db_size_in_use: db_size,
            is_learner,
            db_size_quota: self.node.config.quota_backend_bytes as i64,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.require_root(&req).await?;
        let store = self.node.store.clone();
        tokio::task::spawn_blocking(move || store.defragment())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(ServerError::from)?;
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.node.current_header()),
        }))
    }

    async fn hash(
        &self,
        req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.require_root(&req).await?;
        let store = self.node.store.clone();
        let (hash, rev) = tokio::task::spawn_blocking(move || store.hash())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(ServerError::from)?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.node.header(rev)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.require_root(&req).await?;
        let revision = req.into_inner().revision;
        Ok(Response::new(hash_kv(&self.node, revision).await?))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.require_root(&req).await?;
        let store = self.node.store.clone();
        let dir = self.node.config.data_dir.clone();
        let header = self.node.current_header();
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_CHUNKS_AHEAD);
        tokio::task::spawn_blocking(move || {
            if let Err(status) = stream_snapshot(&store, &dir, header, &tx) {
                let _ = tx.blocking_send(Err(status));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.require_root(&req).await?;
        let target = req.into_inner().target_id;
        if !self.node.is_leader() {
            return Err(ServerError::NotLeader.into());
        }
        let voter = self
            .node
            .raft
            .members()
            .iter()
            .any(|m| m.id == target && !m.is_learner);
        if !voter {
            return Err(ServerError::BadLeaderTransferee.into());
        }
        if target != self.node.member_id {
            self.node
                .raft
                .transfer_leader(target)
                .await
                .map_err(ServerError::from)?;
        }
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(self.node.current_header()),
        }))
    }

    async fn downgrade(
        &self,
        _req: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(ServerError::Unsupported("downgrade is not supported").into())
    }
}

/// etcd's HashKV of this member's store at `revision` (0: current), off
/// the async workers. Shared by Maintenance and the peers' corruption
/// checks.
pub(crate) async fn hash_kv(node: &Node, revision: i64) -> Result<pb::HashKvResponse, Status> {
    let compacted = node.store.compacted_revision();
    // etcd refuses a hash at the compacted revision itself, too.
    if revision > 0 && revision <= compacted {
        return Err(
            ServerError::from(ballast_storage::StorageError::Compacted { compacted }).into(),
        );
    }
    let store = node.store.clone();
    let (hash, compact_revision, hash_revision) =
        tokio::task::spawn_blocking(move || store.hash_kv(revision))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(ServerError::from)?;
    Ok(pb::HashKvResponse {
        header: Some(node.current_header()),
        hash,
        compact_revision,
        hash_revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_blob_round_trip() {
        for len in [0usize, 1, 503, 504, 505, 5000] {
            let image: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let blob = snapshot_blob(&image);
            assert_eq!(blob.len() % 512, 32, "etcdctl's checksum test");
            assert_eq!(image_from_blob(&blob), Some(image.as_slice()));
            let mut bad = blob.clone();
            bad[8] ^= 1;
            assert_eq!(image_from_blob(&bad), None);
        }
    }
}
