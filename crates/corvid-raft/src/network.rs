//! The network between the servers of a cluster: how one server calls another.
//!
//! Every call between servers — openraft's append, vote and snapshot chunks, and Corvid's
//! own forward-write, read-index, presence, status and membership calls — is one request
//! and one answer of postcard bytes (see `peer`), sent over a [`Links`]: the gRPC
//! transport of a real cluster ([`grpc`], on a listener of its own, apart from the client
//! APIs), or the in-memory [`router`] that lets tests run a cluster in one process with no
//! sockets and cut any server off. Protobuf is only gRPC's envelope: the Raft log and the
//! disk never see it.
//!
//! Why these choices:
//! - **Bounded appends.** openraft bounds an append by its entry count, but an entry is a
//!   batch of up to a thousand commands, so [`RaftLink`] measures the encoded request and,
//!   past `max_append_bytes`, answers openraft `PayloadTooLarge` with a smaller entry count
//!   to try: a follower far behind gets its entries in pieces a message can carry.
//! - **Every call has a deadline**: openraft's `hard_ttl` for Raft calls, fixed ones for
//!   Corvid's. A call that was never sent ([`LinkError::NotSent`]: refused connection, or
//!   a peer in back-off) is told apart from one whose answer was lost
//!   ([`LinkError::Lost`]), because only the first is always safe to send again.
//! - **Addresses from this server's own configuration win** over the member records of the
//!   membership, so an operator (or a test putting a proxy on each link) decides where
//!   this server dials; a member with no configured address is dialled at its record's
//!   `raft_addr`.
//! - **The listener is bounded for strangers.** Anyone who reaches the server-to-server
//!   port can connect, so a call is authenticated from its headers before its body is
//!   read, and [`listener`] caps the open connections and closes those that make no
//!   authenticated call in time, without letting a flood keep the servers' own out.

pub mod grpc;
pub mod listener;
pub mod router;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corvid_store::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, Member, NodeId, RPCError, RaftError, TypeConfig, VoteRequest,
    VoteResponse,
};
use futures::future::BoxFuture;
use openraft::error::{NetworkError, PayloadTooLarge, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::peer::{decode, encode, PeerCall};

/// The most bytes one call or answer between servers may carry (the largest single log
/// entry, a proposer batch, fits well within it).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Bytes of one snapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// Why a call to another server failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkError {
    /// The request never left this server (no connection could be made, or the peer is in
    /// back-off after failures): sending it again cannot act twice.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The request may have arrived; its answer did not (a deadline, a broken connection).
    #[error("no answer: {0}")]
    Lost(String),
    /// The peer refused the request itself (authentication, a body it could not decode).
    #[error("refused: {0}")]
    Refused(String),
}

/// A way to call the other servers.
pub trait Links: Send + Sync + 'static {
    /// Sends `body` as `call` to server `target`, dialled at `address`; waits at most
    /// `timeout` for the answer.
    fn call<'a>(
        &'a self,
        target: NodeId,
        address: &'a str,
        call: PeerCall,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, LinkError>>;
}

/// The links of a single server, which has no peers: every call is `NotSent`.
pub struct NoLinks;

impl Links for NoLinks {
    fn call<'a>(
        &'a self,
        target: NodeId,
        address: &'a str,
        _call: PeerCall,
        _body: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, LinkError>> {
        Box::pin(async move {
            Err(LinkError::NotSent(format!(
                "a single server has no peers (node {target} at {address})"
            )))
        })
    }
}

/// This server's way to the others: the links, and the addresses its configuration gives.
#[derive(Clone)]
pub struct Peers {
    links: Arc<dyn Links>,
    addresses: Arc<BTreeMap<NodeId, String>>,
}

impl Peers {
    /// `addresses` are the server-to-server addresses of this server's configuration; they
    /// take precedence over the membership's member records.
    pub fn new(links: Arc<dyn Links>, addresses: BTreeMap<NodeId, String>) -> Peers {
        Peers {
            links,
            addresses: Arc::new(addresses),
        }
    }

    /// A single server's: no peers.
    pub fn none() -> Peers {
        Peers::new(Arc::new(NoLinks), BTreeMap::new())
    }

    /// Every server this server's configuration names, with its server-to-server address.
    pub fn configured(&self) -> impl Iterator<Item = (NodeId, &str)> {
        self.addresses
            .iter()
            .map(|(id, address)| (*id, address.as_str()))
    }

    /// Where to dial `target`: this server's configuration first, then its member record.
    pub fn address(&self, target: NodeId, member: Option<&Member>) -> String {
        match self.addresses.get(&target) {
            Some(address) => address.clone(),
            None => member.map(|m| m.raft_addr.clone()).unwrap_or_default(),
        }
    }

    /// Calls `target` with `request` and decodes its answer.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        target: NodeId,
        address: &str,
        call: PeerCall,
        request: &Q,
        timeout: Duration,
    ) -> Result<A, LinkError> {
        let body = encode(call, request).map_err(|e| LinkError::NotSent(e.to_string()))?;
        self.call_raw(target, address, call, body, timeout).await
    }

    async fn call_raw<A: DeserializeOwned>(
        &self,
        target: NodeId,
        address: &str,
        call: PeerCall,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<A, LinkError> {
        let answer = self
            .links
            .call(target, address, call, body, timeout)
            .await?;
        decode(call, &answer).map_err(|e| LinkError::Refused(e.to_string()))
    }
}

/// Makes openraft's client to each peer.
pub struct Network {
    peers: Peers,
    max_append_bytes: u64,
    retry_every: Duration,
}

impl Network {
    /// `retry_every`: how long openraft waits before it calls again a peer that could not
    /// be reached (the heartbeat interval).
    pub fn new(peers: Peers, max_append_bytes: u64, retry_every: Duration) -> Network {
        Network {
            peers,
            max_append_bytes,
            retry_every,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = RaftLink;

    async fn new_client(&mut self, target: NodeId, member: &Member) -> RaftLink {
        RaftLink {
            target,
            address: self.peers.address(target, Some(member)),
            peers: self.peers.clone(),
            max_append_bytes: self.max_append_bytes,
            retry_every: self.retry_every,
        }
    }
}

/// openraft's client to one peer.
pub struct RaftLink {
    target: NodeId,
    address: String,
    peers: Peers,
    max_append_bytes: u64,
    retry_every: Duration,
}

impl RaftLink {
    async fn send<Q: Serialize, A: DeserializeOwned, E>(
        &self,
        call: PeerCall,
        request: &Q,
        option: &RPCOption,
    ) -> Result<A, RPCError<E>>
    where
        E: std::error::Error + DeserializeOwned,
        Result<A, RaftError<E>>: DeserializeOwned,
    {
        let body = encode(call, request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send_encoded(call, body, option).await
    }

    async fn send_encoded<A, E>(
        &self,
        call: PeerCall,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<A, RPCError<E>>
    where
        E: std::error::Error,
        Result<A, RaftError<E>>: DeserializeOwned,
    {
        let answer: Result<A, RaftError<E>> = self
            .peers
            .call_raw(self.target, &self.address, call, body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                LinkError::NotSent(_) => RPCError::Unreachable(Unreachable::new(&e)),
                LinkError::Lost(_) | LinkError::Refused(_) => {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// How many of `entries` entries, encoded in `bytes`, fit in `limit` bytes (at least one).
fn entries_within(entries: usize, bytes: usize, limit: u64) -> u64 {
    let fitting = (entries as u128 * limit as u128 / bytes.max(1) as u128) as u64;
    fitting.clamp(1, entries.saturating_sub(1).max(1) as u64)
}

impl RaftNetwork<TypeConfig> for RaftLink {
    /// openraft's own pause after an unreachable peer is half a second, longer than a
    /// follower's election timeout: a server restarted after a crash would stand for
    /// election (and, once reached, depose the leader with its higher term) before the
    /// leader's first heartbeat got to it. A refused connection costs little, so the
    /// leader tries again each heartbeat interval.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.retry_every))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        let body =
            encode(PeerCall::Append, &rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if body.len() as u64 > self.max_append_bytes && rpc.entries.len() > 1 {
            let hint = entries_within(rpc.entries.len(), body.len(), self.max_append_bytes);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        self.send_encoded(PeerCall::Append, body, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<InstallSnapshotError>> {
        self.send(PeerCall::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.send(PeerCall::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::entries_within;

    #[test]
    fn an_oversized_append_is_retried_with_the_entries_that_fit() {
        assert_eq!(entries_within(10, 2000, 1000), 5);
        assert_eq!(entries_within(10, 100_000, 1000), 1);
        // Always fewer than were refused, so that openraft makes progress.
        assert_eq!(entries_within(2, 1001, 1000), 1);
    }
}
