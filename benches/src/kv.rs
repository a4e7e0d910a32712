//! The KV calls the load generators make, over either client library
//! ([`ClientLibrary`]): the lean one (gRPC frames on `h2`, decoding only
//! what the run needs: see [`conn::UnaryConn`]) or the `etcd-client` crate
//! (tonic, full messages), as most Rust programs talk to etcd.
//!
//! The transactions are the Kubernetes apiserver's ([`Guard`], [`Then`]):
//! a create guarded by the key's absence, an update or delete guarded by
//! the mod_revision the caller last saw, and on a failed guard a Range of
//! the key, so the caller learns the current version in the same round
//! trip (kube's `GuaranteedUpdate` and its conflict path).

use ballast_proto::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use etcd_client::{CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use tonic::Status;

use crate::conn::{self, UnaryConn};
use crate::{ClientLibrary, Config};

const PUT: &str = "/etcdserverpb.KV/Put";
const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";

/// One connection's KV client.
#[derive(Clone)]
pub enum KvConn {
    Lean(UnaryConn),
    EtcdClient(Box<etcd_client::KvClient>),
}

/// What a transaction checks before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The key does not exist (`create_revision == 0`): kube's create.
    Absent,
    /// The key is at this mod_revision: kube's update and delete.
    ModRevision(i64),
}

/// What a transaction writes when its guard holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    Put(Vec<u8>),
    Delete,
}

/// A transaction's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    /// The store's revision after it (the write's, when it wrote).
    pub revision: i64,
    /// On a failed guard: the key's mod_revision now (`None`: absent).
    pub current: Option<i64>,
}

/// A Range's answer, as much of it as the runs look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Got {
    pub kvs: usize,
    /// The first key's mod_revision.
    pub mod_revision: Option<i64>,
}

fn etcd_status(e: etcd_client::Error) -> Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => Status::unknown(other.to_string()),
    }
}

impl KvConn {
    /// Puts `value` at `key`; the revision it was written at.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<i64, Status> {
        match self {
            KvConn::Lean(c) => {
                let req = PutRequest {
                    key,
                    value,
                    ..Default::default()
                };
                let resp: PutResponse = c.call(PUT, &req).await?;
                Ok(resp.header.map_or(0, |h| h.revision))
            }
            KvConn::EtcdClient(c) => {
                let mut kv = etcd_client::KvClient::clone(c);
                let resp = kv.put(key, value, None).await.map_err(etcd_status)?;
                Ok(resp.header().map_or(0, |h| h.revision()))
            }
        }
    }

    /// Ranges from `key` to `end` (`None`: the key alone), at most `limit`
    /// keys (0: all).
    pub async fn get(
        &self,
        key: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: i64,
        serializable: bool,
    ) -> Result<Got, Status> {
        match self {
            KvConn::Lean(c) => {
                let req = RangeRequest {
                    key,
                    range_end: end.unwrap_or_default(),
                    limit,
                    serializable,
                    ..Default::default()
                };
                let resp: RangeResponse = c.call(RANGE, &req).await?;
                Ok(Got {
                    kvs: resp.kvs.len(),
                    mod_revision: resp.kvs.first().map(|kv| kv.mod_revision),
                })
            }
            KvConn::EtcdClient(c) => {
                let mut opts = GetOptions::new().with_limit(limit);
                if let Some(end) = end {
                    opts = opts.with_range(end);
                }
                if serializable {
                    opts = opts.with_serializable();
                }
                let mut kv = etcd_client::KvClient::clone(c);
                let resp = kv.get(key, Some(opts)).await.map_err(etcd_status)?;
                Ok(Got {
                    kvs: resp.kvs().len(),
                    mod_revision: resp.kvs().first().map(|kv| kv.mod_revision()),
                })
            }
        }
    }

    /// `Txn(If guard Then then Else Range(key))`.
    pub async fn txn(&self, key: Vec<u8>, guard: Guard, then: Then) -> Result<TxnOutcome, Status> {
        match self {
            KvConn::Lean(c) => {
                let (target, union) = match guard {
                    Guard::Absent => (
                        compare::CompareTarget::Create,
                        compare::TargetUnion::CreateRevision(0),
                    ),
                    Guard::ModRevision(rev) => (
                        compare::CompareTarget::Mod,
                        compare::TargetUnion::ModRevision(rev),
                    ),
                };
                let write = match then {
                    Then::Put(value) => request_op::Request::RequestPut(PutRequest {
                        key: key.clone(),
                        value,
                        ..Default::default()
                    }),
                    Then::Delete => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    }),
                };
                let req = TxnRequest {
                    compare: vec![Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: target as i32,
                        key: key.clone(),
                        range_end: Vec::new(),
                        target_union: Some(union),
                    }],
                    success: vec![RequestOp {
                        request: Some(write),
                    }],
                    failure: vec![RequestOp {
                        request: Some(request_op::Request::RequestRange(RangeRequest {
                            key,
                            ..Default::default()
                        })),
                    }],
                };
                let resp: TxnResponse = c.call(TXN, &req).await?;
                let current = resp.responses.first().and_then(|r| match &r.response {
                    Some(response_op::Response::ResponseRange(g)) => {
                        g.kvs.first().map(|kv| kv.mod_revision)
                    }
                    _ => None,
                });
                Ok(TxnOutcome {
                    succeeded: resp.succeeded,
                    revision: resp.header.map_or(0, |h| h.revision),
                    current: if resp.succeeded { None } else { current },
                })
            }
            KvConn::EtcdClient(c) => {
                let compare = match guard {
                    Guard::Absent => {
                        etcd_client::Compare::create_revision(key.clone(), CompareOp::Equal, 0)
                    }
                    Guard::ModRevision(rev) => {
                        etcd_client::Compare::mod_revision(key.clone(), CompareOp::Equal, rev)
                    }
                };
                let write = match then {
                    Then::Put(value) => TxnOp::put(key.clone(), value, None),
                    Then::Delete => TxnOp::delete(key.clone(), None),
                };
                let txn = Txn::new()
                    .when([compare])
                    .and_then([write])
                    .or_else([TxnOp::get(key, None)]);
                let mut kv = etcd_client::KvClient::clone(c);
                let resp = kv.txn(txn).await.map_err(etcd_status)?;
                let current = if resp.succeeded() {
                    None
                } else {
                    resp.op_responses().into_iter().find_map(|r| match r {
                        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
                        _ => None,
                    })
                };
                Ok(TxnOutcome {
                    succeeded: resp.succeeded(),
                    revision: resp.header().map_or(0, |h| h.revision()),
                    current,
                })
            }
        }
    }
}

/// `cfg.conns` connections of `cfg.client`'s library; connection `i` goes
/// to endpoint `i % n`.
pub async fn connect_all(cfg: &Config) -> anyhow::Result<Vec<KvConn>> {
    match cfg.client {
        ClientLibrary::Lean => Ok(conn::connect_all_unary(cfg)
            .await?
            .into_iter()
            .map(KvConn::Lean)
            .collect()),
        ClientLibrary::EtcdClient => {
            let mut conns = Vec::with_capacity(cfg.conns);
            for client in conn::connect_all_etcd_client(cfg).await? {
                conns.push(KvConn::EtcdClient(Box::new(client.kv_client())));
            }
            Ok(conns)
        }
    }
}
