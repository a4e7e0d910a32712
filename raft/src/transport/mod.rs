//! Moving raft messages between nodes.
//!
//! A [`Transport`] carries the messages one node's driver emits; whatever a
//! transport receives for a node goes into that node's [`Inbox`]. Sending
//! never blocks the driver: a transport queues per peer, and drops messages
//! to a dead or slow peer (raft retries) instead of growing memory.
//!
//! - [`grpc`]: the production transport (tonic streams, chunked snapshots).
//! - [`memory`]: an in-process network for tests that drops, delays,
//!   duplicates and partitions messages on command.

pub(crate) mod grpc;
pub(crate) mod memory;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::prelude::Message;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::membership::Member;
use crate::snapshot::{self, Incoming, SnapshotImage};

/// Carries raft messages from one node to its peers.
pub trait Transport: Send + Sync + 'static {
    /// Connects the transport to its node. Called once by
    /// [`RaftNode::start`](crate::RaftNode::start), before any `send`; the
    /// transport reports undeliverable messages through `inbox`.
    fn bind(&self, inbox: Inbox);

    /// Queues messages for their recipients (`Message::to`). Must not block.
    /// A message that cannot be queued is dropped; a dropped `MsgSnapshot`
    /// must be reported with [`Inbox::report_snapshot`]`(to, false)` or the
    /// leader waits for it forever.
    fn send(&self, msgs: Vec<Message>);

    /// The cluster's members changed (also called once at start). A network
    /// transport learns peer addresses from the member contexts here.
    fn update_members(&self, _members: &[Member]) {}
}

/// What a transport hands to a node.
#[derive(Debug)]
pub(crate) enum PeerEvent {
    Messages(Vec<Message>),
    Unreachable(u64),
    SnapshotStatus { peer: u64, ok: bool },
}

/// Capacity of a node's inbox, in events (each a batch of messages).
pub(crate) const INBOX_CAPACITY: usize = 4096;

/// The receiving end of a node, cheap to clone: transports deliver messages
/// and snapshot images and report peers' trouble here. Obtained from
/// [`RaftNode::inbox`](crate::RaftNode::inbox).
#[derive(Debug, Clone)]
pub struct Inbox {
    id: u64,
    tx: mpsc::Sender<PeerEvent>,
    /// The node's snapshot folder: images it sends are read from here,
    /// images it receives are written here.
    snap_dir: Arc<Path>,
}

impl Inbox {
    pub(crate) fn new(id: u64, tx: mpsc::Sender<PeerEvent>, snap_dir: PathBuf) -> Self {
        Inbox {
            id,
            tx,
            snap_dir: snap_dir.into(),
        }
    }

    /// The image of a snapshot this node sends (`m` is its `MsgSnapshot`).
    pub(crate) fn outgoing_image(&self, m: &Message) -> Result<SnapshotImage, Error> {
        let snap = m.get_snapshot();
        let meta = snap.get_metadata();
        snapshot::image(&self.snap_dir, meta.index, meta.term, &snap.data)
    }

    /// Starts receiving the image of the snapshot `m` (a `MsgSnapshot`)
    /// carries into this node's snapshot folder; deliver `m` once the image
    /// is [finished](Incoming::finish). A snapshot addressed to another
    /// node is refused before anything is written: the image would only
    /// sit in this node's folder, and a peer could fill the disk with them.
    pub(crate) fn incoming_image(&self, m: &Message, max_bytes: u64) -> Result<Incoming, Error> {
        if m.to != self.id {
            return Err(Error::Transport(format!(
                "snapshot for member {:x} sent to member {:x}",
                m.to, self.id
            )));
        }
        snapshot::Incoming::start(&self.snap_dir, m.get_snapshot(), max_bytes)
    }

    /// The id of the node this inbox belongs to.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hands received messages to the node without waiting. Messages not
    /// addressed to this node are discarded. Fails with
    /// [`Error::Transport`] when the node is saturated (the messages are
    /// dropped; raft retries) and [`Error::Stopped`] when it has stopped.
    pub fn deliver(&self, mut msgs: Vec<Message>) -> Result<(), Error> {
        msgs.retain(|m| m.to == self.id);
        if msgs.is_empty() {
            return Ok(());
        }
        self.tx
            .try_send(PeerEvent::Messages(msgs))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::Transport("inbox full".into()),
                mpsc::error::TrySendError::Closed(_) => Error::Stopped,
            })
    }

    /// Like [`deliver`](Inbox::deliver) but waits for room; for snapshots,
    /// which are expensive to resend.
    pub async fn deliver_wait(&self, mut msgs: Vec<Message>) -> Result<(), Error> {
        msgs.retain(|m| m.to == self.id);
        if msgs.is_empty() {
            return Ok(());
        }
        self.tx
            .send(PeerEvent::Messages(msgs))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Tells raft that messages to `peer` are not getting through, so the
    /// leader probes it instead of streaming appends.
    pub fn report_unreachable(&self, peer: u64) {
        let _ = self.tx.try_send(PeerEvent::Unreachable(peer));
    }

    /// Tells raft whether a snapshot sent to `peer` arrived.
    pub fn report_snapshot(&self, peer: u64, ok: bool) {
        let tx = self.tx.clone();
        if let Err(mpsc::error::TrySendError::Full(ev)) =
            tx.try_send(PeerEvent::SnapshotStatus { peer, ok })
        {
            // Must not be lost: a leader waits for this report. Deliver it
            // as soon as there is room, from a task when there is a runtime.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = tx.send(ev).await;
                });
            }
        }
    }
}

/// Copies the image of the snapshot `m` carries from the sender's snapshot
/// folder to the recipient's (an in-process transport's whole transfer).
pub(crate) fn copy_image(from: &Inbox, to: &Inbox, m: &Message) -> Result<(), Error> {
    let image = from.outgoing_image(m)?;
    let mut incoming = to.incoming_image(m, u64::MAX)?;
    let mut reader = image.reader()?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        incoming.write(&buf[..n])?;
    }
    incoming.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::MessageType;

    #[test]
    fn a_snapshot_for_another_node_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let inbox = Inbox::new(2, tx, dir.path().to_path_buf());
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 3;
        m.mut_snapshot().mut_metadata().index = 5;
        let e = inbox.incoming_image(&m, 1 << 20).err().expect("refused");
        assert_eq!(
            e.to_string(),
            "transport: snapshot for member 3 sent to member 2"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
