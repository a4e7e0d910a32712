//! The etcd KV service: Range, Put, DeleteRange, Txn, Compact. With auth
//! enabled each request is checked against the caller's key permissions
//! first (Compact is open to all callers, as in etcd 3.4). A Txn is checked
//! in full (shape, bounds, duplicate keys, size) before anything else; one
//! that writes nothing is served as a read, never put in the log.

use std::sync::Arc;

use ballast_storage::StorageError;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::command::{Op, ReplyKind};
use crate::convert;
use crate::error::ServerError;
use crate::node::{expect_reply, Node};
use crate::pb::etcdserverpb::{self as pb, kv_server::Kv};

pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        KvService { node }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let caller = auth::caller_of(&self.node, &req).await?;
        let req = req.into_inner();
        auth::check_read(&self.node, &caller, &req.key, &req.range_end)?;
        if !req.serializable {
            self.node.linearizable().await?;
        }
        let store_req = convert::range_from_pb(&req);
        match self.node.store.range(&store_req) {
            Ok(r) => {
                let header = self.node.header(self.node.store.current_revision());
                Ok(Response::new(convert::range_to_pb(r, header)))
            }
            // etcd answers an empty range when range_end sorts before key.
            Err(StorageError::InvalidRange) => Ok(Response::new(pb::RangeResponse {
                header: Some(self.node.current_header()),
                ..Default::default()
            })),
            Err(e) => Err(ServerError::from(e).into()),
        }
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let caller = auth::caller_of(&self.node, &req).await?;
        let req = req.into_inner();
        auth::check_put(&self.node, &caller, &req)?;
        let reply = auth::write(&self.node, &caller, Op::Put(req)).await?;
        expect_reply(reply, |r| match r {
            ReplyKind::Put(p) => Some(p),
            _ => None,
        })
        .map(Response::new)
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let caller = auth::caller_of(&self.node, &req).await?;
        let req = req.into_inner();
        auth::check_delete(&self.node, &caller, &req)?;
        if !req.key.is_empty()
            && !req.range_end.is_empty()
            && req.range_end != [0]
            && req.range_end < req.key
        {
            return Ok(Response::new(pb::DeleteRangeResponse {
                header: Some(self.node.current_header()),
                ..Default::default()
            }));
        }
        let reply = auth::write(&self.node, &caller, Op::DeleteRange(req)).await?;
        expect_reply(reply, |r| match r {
            ReplyKind::DeleteRange(d) => Some(d),
            _ => None,
        })
        .map(Response::new)
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let caller = auth::caller_of(&self.node, &req).await?;
        let req = req.into_inner();
        let txn = self.node.check_txn(&req)?;
        auth::check_txn(&self.node, &caller, &req)?;
        if txn.is_read_only() {
            return self.node.read_txn(&req, &txn).await.map(Response::new);
        }
        let reply = auth::write(&self.node, &caller, Op::Txn(req)).await?;
        expect_reply(reply, |r| match r {
            ReplyKind::Txn(t) => Some(t),
            _ => None,
        })
        .map(Response::new)
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let reply = self.node.write(Op::Compaction(req.into_inner())).await?;
        expect_reply(reply, |r| match r {
            ReplyKind::Compaction(c) => Some(c),
            _ => None,
        })
        .map(Response::new)
    }
}
