//! The openraft type configuration of Corvid, and short aliases for the openraft types it
//! instantiates, so that no other module spells out `openraft::X<NodeId, Node>`.

use corvid_core::{Command, Outcome};

openraft::declare_raft_types!(
    /// Corvid's Raft. A normal log entry carries the [`Command`]s its leader proposed
    /// together, applied in order; applying it yields one [`Outcome`] per command (none for
    /// blank and membership entries). A snapshot is a file on disk (see `snapshot`).
    ///
    /// Entries carry several commands because openraft 0.9's core waits for the fsync of
    /// each `append` before it appends again: concurrent client writes can only share an
    /// fsync by sharing an entry (corvid-raft batches them).
    pub TypeConfig:
        D = Vec<Command>,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
pub type Config = openraft::Config;

pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
pub type LogState = openraft::LogState<TypeConfig>;

pub type Membership = openraft::Membership<NodeId, Node>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;

pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type SnapshotData = tokio::fs::File;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;

pub type StorageError = openraft::StorageError<NodeId>;
pub type StorageIOError = openraft::StorageIOError<NodeId>;

pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
pub type RPCError<E = openraft::error::Infallible> =
    openraft::error::RPCError<NodeId, Node, RaftError<E>>;
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, Node>;
pub type InitializeError = openraft::error::InitializeError<NodeId, Node>;
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
