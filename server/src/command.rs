//! What a raft entry carries: one [`Command`] (`proto/ballast/internal.proto`),
//! reusing etcd's request messages; the state machine turns them into
//! storage writes on apply, so every member decides the same.

pub use crate::pb::ballast::server::command::Op;
pub use crate::pb::ballast::server::reply::Reply as ReplyKind;
pub use crate::pb::ballast::server::{Command, MemberAttributes};

use prost::Message;

impl Command {
    pub fn from_op(op: Op) -> Self {
        Command {
            op: Some(op),
            header: None,
        }
    }

    pub fn decode_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Command::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb as pb;

    #[test]
    fn round_trip_and_garbage() {
        let cmd = Command::from_op(Op::Put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }));
        let back = Command::decode_bytes(&cmd.encode_to_vec()).unwrap();
        assert_eq!(back, cmd);
        assert!(Command::decode_bytes(&[0xff, 0xff]).is_err());
    }
}
