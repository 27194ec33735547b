//! The network between the servers of a cluster, as openraft sees it.
//!
//! A single server has no peers: openraft never asks to reach one, and if it did (a
//! membership naming another node), every RPC fails as `Unreachable`, which openraft treats
//! as "back off and retry later". The 3/5-server cluster replaces [`PeerClient`]'s bodies
//! with a real transport (a TCP or gRPC client to the member's `raft_addr`, sending the `typ` request types
//! encoded by their own codec, not the log's on-disk encoding), and `Network::new_client`
//! with a connection pool keyed by node id.

use corvid_store::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, Member, NodeId, RPCError, TypeConfig, VoteRequest, VoteResponse,
};
use openraft::error::Unreachable;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};

/// Makes the clients this server uses to reach the others.
#[derive(Clone, Debug, Default)]
pub struct Network {}

impl Network {
    pub fn new() -> Network {
        Network {}
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, member: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: member.raft_addr.clone(),
        }
    }
}

/// Why a peer cannot be reached: there is no transport between servers yet.
#[derive(Debug, thiserror::Error)]
#[error("no network between servers: cannot reach node {target} at {addr}")]
pub struct NoTransport {
    pub target: NodeId,
    pub addr: String,
}

/// The connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
}

impl PeerClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<E> {
        RPCError::Unreachable(Unreachable::new(&NoTransport {
            target: self.target,
            addr: self.addr.clone(),
        }))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<InstallSnapshotError>> {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest,
        _option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        Err(self.unreachable())
    }
}
