//! The contract between replication and the replicated state machine.

use std::io::Write;

use bytes::Bytes;

use crate::error::Error;
use crate::membership::{Member, MemberChange};
use crate::snapshot::SnapshotImage;

/// The replicated state machine (the server implements it over the MVCC store).
///
/// It runs on a thread of its own, so its methods may block on disk I/O. It
/// may write without fsync: after a crash the node restores the latest
/// snapshot if the state machine is behind it, then replays the log from
/// [`applied_index`](StateMachine::applied_index). Every `snapshot_count`
/// entries the node calls [`sync`](StateMachine::sync) and then compacts the
/// log below the synced index: the state machine's own durable data is the
/// checkpoint, so no image of it is built. Images
/// ([`snapshot`](StateMachine::snapshot)) are taken only when a follower
/// needs one.
pub trait StateMachine: Send + 'static {
    /// What applying one entry answers to its proposer.
    type Output: Send + 'static;

    /// Applies committed entries in log order, as one batch.
    ///
    /// Called with *every* committed entry, including leader no-ops and
    /// membership changes (see [`EntryKind`]), so the state machine can persist
    /// its applied index in the same write as the data. Entries at or below
    /// [`applied_index`](StateMachine::applied_index) must be no-ops: they are
    /// replays after a crash. Returns one output per entry, in order.
    fn apply(&mut self, entries: &[Committed]) -> Vec<Self::Output>;

    /// The highest index whose effects are in the state machine (durable or
    /// not; what matters is that it is consistent with the data).
    fn applied_index(&self) -> u64;

    /// Makes every applied entry durable (fsync): after it returns, a crash
    /// leaves [`applied_index`](StateMachine::applied_index) at least where it
    /// is now, because the log below it may then be discarded.
    fn sync(&mut self) -> Result<(), Error>;

    /// Writes a consistent point-in-time image of the whole state to `out`
    /// (a snapshot file) and returns the index it reflects, which must be
    /// `applied_index()`. Stream it: the image may be larger than memory.
    fn snapshot(&self, out: &mut dyn Write) -> Result<u64, Error>;

    /// Replaces the whole state with `image` (checksummed already), taken at
    /// `index`. Afterwards `applied_index()` is `index`. The image can be
    /// read as many times as needed (e.g. verify, then install).
    fn restore(&mut self, index: u64, image: &SnapshotImage) -> Result<(), Error>;
}

/// One committed log entry handed to [`StateMachine::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The log index.
    pub index: u64,
    /// The term of the leader that appended it.
    pub term: u64,
    /// What the entry is.
    pub kind: EntryKind,
    /// The proposed bytes (empty for no-ops; raft's encoded `ConfChange` for
    /// membership changes, already decoded in `kind`).
    pub data: Bytes,
}

/// What a committed entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A proposal from [`RaftNode::propose`](crate::RaftNode::propose).
    Normal,
    /// The empty entry a new leader appends to commit its term.
    LeaderNoop,
    /// A membership change. Raft's configuration has already changed when the
    /// state machine sees it; `members` is the configuration after it.
    /// `rejected` is set when raft refused the change (it then had no effect).
    ConfChange {
        change: MemberChange,
        members: Vec<Member>,
        rejected: bool,
    },
}
