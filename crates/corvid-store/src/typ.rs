//! The openraft type configuration of Corvid, and short aliases for the openraft types it
//! instantiates, so that no other module spells out `openraft::X<NodeId, Member>`.

use corvid_core::{Command, Outcome};

pub use crate::member::{ClientAddrs, Member};

openraft::declare_raft_types!(
    /// Corvid's Raft. A normal log entry carries the [`Command`]s its leader proposed
    /// together, applied in order; applying it yields one [`Outcome`] per command (none for
    /// blank and membership entries). A snapshot is a file on disk (see `snapshot`).
    ///
    /// Entries carry several commands because openraft 0.9's core waits for the fsync of
    /// each `append` before it appends again: concurrent client writes can only share an
    /// fsync by sharing an entry (corvid-raft batches them).
    ///
    /// openraft's node type is Corvid's [`Member`] record (see `member` for its on-disk
    /// layout, which also reads the `BasicNode` of older data directories).
    pub TypeConfig:
        D = Vec<Command>,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Member>;
/// openraft's settings (named apart from the server's own `Config`).
pub type RaftConfig = openraft::Config;

pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
pub type LogState = openraft::LogState<TypeConfig>;

pub type Membership = openraft::Membership<NodeId, Member>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;

pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type SnapshotData = crate::snapshot::SnapshotFile;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;

pub type StorageError = openraft::StorageError<NodeId>;
pub type StorageIOError = openraft::StorageIOError<NodeId>;

pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
pub type RPCError<E = openraft::error::Infallible> =
    openraft::error::RPCError<NodeId, Member, RaftError<E>>;
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Member>;
pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Member>;
pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, Member>;
pub type InitializeError = openraft::error::InitializeError<NodeId, Member>;
pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
pub type Fatal = openraft::error::Fatal<NodeId>;

pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
pub type SnapshotResponse = openraft::raft::SnapshotResponse<NodeId>;
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
