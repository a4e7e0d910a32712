//! Conversions between the etcd wire messages and the storage types.

use ballast_storage as st;

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

pub fn kv_to_pb(kv: st::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event_to_pb(ev: &st::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match ev.kind {
            st::EventKind::Put => mvccpb::event::EventType::Put as i32,
            st::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_to_pb(ev.kv.clone())),
        prev_kv: ev.prev_kv.clone().map(kv_to_pb),
    }
}

pub fn range_from_pb(r: &pb::RangeRequest) -> st::RangeRequest {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    st::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order: match O::try_from(r.sort_order).unwrap_or(O::None) {
            O::None => st::SortOrder::None,
            O::Ascend => st::SortOrder::Ascend,
            O::Descend => st::SortOrder::Descend,
        },
        sort_target: match T::try_from(r.sort_target).unwrap_or(T::Key) {
            T::Key => st::SortTarget::Key,
            T::Version => st::SortTarget::Version,
            T::Create => st::SortTarget::Create,
            T::Mod => st::SortTarget::Mod,
            T::Value => st::SortTarget::Value,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn range_to_pb(r: st::RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_from_pb(p: &pb::PutRequest) -> st::PutRequest {
    st::PutRequest {
        key: p.key.clone(),
        value: p.value.clone(),
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

pub fn delete_from_pb(d: &pb::DeleteRangeRequest) -> st::DeleteRangeRequest {
    st::DeleteRangeRequest {
        key: d.key.clone(),
        range_end: d.range_end.clone(),
        prev_kv: d.prev_kv,
    }
}

pub fn txn_from_pb(t: &pb::TxnRequest) -> st::TxnRequest {
    st::TxnRequest {
        compare: t.compare.iter().map(compare_from_pb).collect(),
        success: t.success.iter().filter_map(op_from_pb).collect(),
        failure: t.failure.iter().filter_map(op_from_pb).collect(),
    }
}

fn compare_from_pb(c: &pb::Compare) -> st::Compare {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result).unwrap_or(R::Equal) {
        R::Equal => st::CompareResult::Equal,
        R::Greater => st::CompareResult::Greater,
        R::Less => st::CompareResult::Less,
        R::NotEqual => st::CompareResult::NotEqual,
    };
    // The union carries the value; the target says which field (etcd reads
    // the target and takes the matching union member, zero when absent).
    let int = |want: fn(&U) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let target = match T::try_from(c.target).unwrap_or(T::Version) {
        T::Version => st::CompareTarget::Version(int(|u| match u {
            U::Version(v) => Some(*v),
            _ => None,
        })),
        T::Create => st::CompareTarget::Create(int(|u| match u {
            U::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        T::Mod => st::CompareTarget::Mod(int(|u| match u {
            U::ModRevision(v) => Some(*v),
            _ => None,
        })),
        T::Lease => st::CompareTarget::Lease(int(|u| match u {
            U::Lease(v) => Some(*v),
            _ => None,
        })),
        T::Value => st::CompareTarget::Value(match &c.target_union {
            Some(U::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
    };
    st::Compare {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        result,
        target,
    }
}

fn op_from_pb(op: &pb::RequestOp) -> Option<st::RequestOp> {
    use pb::request_op::Request as R;
    Some(match op.request.as_ref()? {
        R::RequestRange(r) => st::RequestOp::Range(range_from_pb(r)),
        R::RequestPut(p) => st::RequestOp::Put(put_from_pb(p)),
        R::RequestDeleteRange(d) => st::RequestOp::DeleteRange(delete_from_pb(d)),
        R::RequestTxn(t) => st::RequestOp::Txn(txn_from_pb(t)),
    })
}

pub fn put_to_pb(p: st::PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        prev_kv: p.prev_kv.map(kv_to_pb),
    }
}

pub fn delete_to_pb(
    d: st::DeleteRangeResponse,
    header: pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: d.deleted,
        prev_kvs: d.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

pub fn txn_to_pb(t: st::TxnResponse, header: &pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    pb::TxnResponse {
        header: Some(*header),
        succeeded: t.succeeded,
        responses: t
            .responses
            .into_iter()
            .map(|r| pb::ResponseOp {
                response: Some(match r {
                    st::ResponseOp::Range(r) => R::ResponseRange(range_to_pb(r, *header)),
                    st::ResponseOp::Put(p) => R::ResponsePut(put_to_pb(p, *header)),
                    st::ResponseOp::DeleteRange(d) => {
                        R::ResponseDeleteRange(delete_to_pb(d, *header))
                    }
                    st::ResponseOp::Txn(t) => R::ResponseTxn(txn_to_pb(t, header)),
                }),
            })
            .collect(),
    }
}
