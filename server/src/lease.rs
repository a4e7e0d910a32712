//! The etcd Lease service: grants and revocations go through raft; the
//! leader keeps the clock, so keep-alives and TTL queries reach it. With
//! auth enabled, revoking needs write permission on every attached key
//! (or root), as in etcd; the other calls are open.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth;
use crate::command::{Op, ReplyKind};
use crate::error::ServerError;
use crate::node::{expect_reply, internal_client, Node};
use crate::pb::etcdserverpb::{self as pb, lease_server::Lease};

pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    pub fn new(node: Arc<Node>) -> Self {
        LeaseService { node }
    }
}

/// The leader's view of a lease (TTL left counts only there).
pub(crate) async fn time_to_live(
    node: &Node,
    req: pb::LeaseTimeToLiveRequest,
) -> Result<pb::LeaseTimeToLiveResponse, Status> {
    let remote = node
        .on_leader(|ch| async move {
            let answer = internal_client(ch).lease_time_to_live(req).await?;
            Ok(answer.into_inner())
        })
        .await?;
    if let Some(answer) = remote {
        return Ok(answer);
    }
    let header = node.current_header();
    match node.store.lease_status(req.id, Instant::now(), req.keys) {
        Ok(st) => Ok(pb::LeaseTimeToLiveResponse {
            header: Some(header),
            id: st.id,
            ttl: st.remaining_ttl,
            granted_ttl: st.granted_ttl,
            keys: st.keys,
        }),
        // etcd answers TTL -1 for a lease that does not exist.
        Err(ballast_storage::StorageError::LeaseNotFound { .. }) => {
            Ok(pb::LeaseTimeToLiveResponse {
                header: Some(header),
                id: req.id,
                ttl: -1,
                ..Default::default()
            })
        }
        Err(e) => Err(ServerError::from(e).into()),
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let mut req = req.into_inner();
        req.ttl = req.ttl.max(self.node.min_lease_ttl);
        let reply = self.node.write(Op::LeaseGrant(req)).await?;
        expect_reply(reply, |r| match r {
            ReplyKind::LeaseGrant(g) => Some(g),
            _ => None,
        })
        .map(Response::new)
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = auth::caller_of(&self.node, &req).await?;
        let req = req.into_inner();
        auth::check_lease_keys(&self.node, &caller, req.id)?;
        let reply = auth::write(&self.node, &caller, Op::LeaseRevoke(req)).await?;
        expect_reply(reply, |r| match r {
            ReplyKind::LeaseRevoke(g) => Some(g),
            _ => None,
        })
        .map(Response::new)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let node = self.node.clone();
        let stream = req.into_inner().then(move |msg| {
            let node = node.clone();
            async move {
                let id = msg?.id;
                // etcd answers TTL 0 (not an error) for an unknown lease.
                let ttl = match node.lease_renew(id).await {
                    Ok(ttl) => ttl,
                    Err(s) if s.code() == tonic::Code::NotFound => 0,
                    Err(s) => return Err(s),
                };
                Ok(pb::LeaseKeepAliveResponse {
                    header: Some(node.current_header()),
                    id,
                    ttl,
                })
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        if req.get_ref().keys {
            let caller = auth::caller_of(&self.node, &req).await?;
            auth::check_lease_keys_readable(&self.node, &caller, req.get_ref().id)?;
        }
        time_to_live(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.node.linearizable().await?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.node.current_header()),
            leases: self
                .node
                .store
                .leases()
                .into_iter()
                .map(|id| pb::LeaseStatus { id })
                .collect(),
        }))
    }
}
