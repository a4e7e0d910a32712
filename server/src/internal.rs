//! The internal service on the peer URL: the leader's side of forwarding
//! lease requests, which follow the leader's lease clock (writes are
//! forwarded through raft). It never forwards again: a member that is not
//! the leader answers "leader changed" and the caller's client retries.
//! Any member also answers its HashKV, for the corruption checks.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::lease::time_to_live;
use crate::node::Node;
use crate::pb::ballast::server::internal_server::Internal;
use crate::pb::etcdserverpb as pb;

pub struct InternalService {
    node: Arc<Node>,
}

impl InternalService {
    pub fn new(node: Arc<Node>) -> Self {
        InternalService { node }
    }

    fn require_leader(&self) -> Result<(), Status> {
        if self.node.is_leader() {
            Ok(())
        } else {
            Err(ServerError::LeaderChanged.into())
        }
    }
}

#[tonic::async_trait]
impl Internal for InternalService {
    async fn lease_renew(
        &self,
        req: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        self.require_leader()?;
        let id = req.into_inner().id;
        let ttl = self
            .node
            .store
            .lease_renew(id, Instant::now())
            .map_err(ServerError::from)?;
        Ok(Response::new(pb::LeaseKeepAliveResponse {
            header: Some(self.node.current_header()),
            id,
            ttl,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let revision = req.into_inner().revision;
        Ok(Response::new(
            crate::maintenance::hash_kv(&self.node, revision).await?,
        ))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        self.require_leader()?;
        time_to_live(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }
}
