//! # ballast-proto
//!
//! The etcd v3 API as generated Rust: messages, gRPC servers and clients,
//! generated from `etcd/` (etcd's packages, services, messages and field
//! numbers, so the wire format is etcd's own). Shared by the storage
//! member, the apiserver's etcd client, the load generators and the tests.
//!
//! Module names follow etcd's protobuf packages, so the gRPC method paths are
//! etcd's own (`/etcdserverpb.KV/Range`, `/etcdserverpb.Watch/Watch`, …) and
//! the generated code's `super::mvccpb` / `super::authpb` references resolve
//! to the sibling modules here.
//!
//! Naming: prost snake-cases etcd's camelCase fields, so `TTL` is `ttl`, `ID`
//! is `id`, `peerURLs` is `peer_ur_ls` and `clientURLs` is `client_ur_ls`.

/// `mvccpb`: `KeyValue` and watch `Event`.
#[allow(clippy::all)] // generated code
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// `authpb`: users, roles and permissions.
#[allow(clippy::all)] // generated code
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// `etcdserverpb`: the KV, Watch, Lease, Cluster, Maintenance and Auth
/// services with their request and response messages.
#[allow(clippy::all)] // generated code
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// `grpc.health.v1`: the standard gRPC health service, which etcd serves on
/// its client URLs (the empty service name is the whole server).
#[allow(clippy::all)] // generated code
pub mod grpc_health_v1 {
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}

#[cfg(test)]
mod tests {
    use super::etcdserverpb::{
        range_request::{SortOrder, SortTarget},
        Compare, LeaseGrantRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
    };
    use prost::Message;

    #[test]
    fn range_request_wire_bytes() {
        let req = RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 5,
            revision: 7,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            serializable: true,
            keys_only: true,
            count_only: true,
            min_mod_revision: 1,
            max_mod_revision: 2,
            min_create_revision: 3,
            max_create_revision: 4,
        };
        // (field << 3 | wire type), then payload; wire type 2 = length-delimited, 0 = varint.
        let want: &[u8] = &[
            0x0a, 1, b'a', // 1 key
            0x12, 1, b'b', // 2 range_end
            0x18, 5, // 3 limit
            0x20, 7, // 4 revision
            0x28, 2, // 5 sort_order = DESCEND
            0x30, 3, // 6 sort_target = MOD
            0x38, 1, // 7 serializable
            0x40, 1, // 8 keys_only
            0x48, 1, // 9 count_only
            0x50, 1, // 10 min_mod_revision
            0x58, 2, // 11 max_mod_revision
            0x60, 3, // 12 min_create_revision
            0x68, 4, // 13 max_create_revision
        ];
        assert_eq!(req.encode_to_vec(), want);
        assert_eq!(RangeRequest::decode(want).unwrap(), req);
    }

    #[test]
    fn put_request_wire_bytes() {
        let req = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 0x1234,
            prev_kv: true,
            ignore_value: true,
            ignore_lease: true,
        };
        let want: &[u8] = &[
            0x0a, 1, b'k', // 1 key
            0x12, 1, b'v', // 2 value
            0x18, 0xb4, 0x24, // 3 lease = 0x1234 as varint
            0x20, 1, // 4 prev_kv
            0x28, 1, // 5 ignore_value
            0x30, 1, // 6 ignore_lease
        ];
        assert_eq!(req.encode_to_vec(), want);
    }

    #[test]
    fn compare_range_end_is_field_64_and_watch_fields() {
        let cmp = Compare {
            range_end: b"z".to_vec(),
            ..Default::default()
        };
        // Field 64, wire type 2 → tag 0x202 → varint 0x82 0x04.
        assert_eq!(cmp.encode_to_vec(), [0x82, 0x04, 1, b'z']);

        let watch = WatchRequest {
            request_union: Some(
                super::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        watch_id: 3,
                        fragment: true,
                        ..Default::default()
                    },
                ),
            ),
        };
        assert_eq!(
            watch.encode_to_vec(),
            [0x0a, 4, 0x38, 3, 0x40, 1] // create_request { 7 watch_id, 8 fragment }
        );

        let grant = LeaseGrantRequest { ttl: 60, id: 9 };
        assert_eq!(grant.encode_to_vec(), [0x08, 60, 0x10, 9]);
    }
}
