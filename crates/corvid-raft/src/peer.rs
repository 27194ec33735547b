//! The server side of server-to-server traffic: what each call between servers carries, and
//! [`PeerService`], which answers them. The gRPC listener and the in-memory router of the
//! tests both hand it the same encoded bodies, so tests exercise the code that serves.
//!
//! Every body is postcard: a call's request type in, `Result<answer, Refusal>` (or
//! openraft's own result type) out. The bytes come from an authenticated peer, but they
//! are still decoded as untrusted input: a body that does not decode is refused, never
//! trusted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use corvid_core::{Command, Outcome};
use corvid_store::typ::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteError, InstallSnapshotRequest, Member,
    NodeId, Raft, RaftError, VoteRequest, VoteResponse,
};
use corvid_store::{StoreError, StoreReader};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::leader_watch::Heard;
use crate::presence::Presence;

/// How long a refusal for want of disk space waits before it answers (see
/// `PeerService::check_room`).
const ROOM_REFUSAL_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The calls one server makes to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerCall {
    Append,
    Vote,
    InstallSnapshot,
    ForwardWrite,
    ReadIndex,
    Presence,
    Status,
    ChangeMembership,
}

/// Why a server did not do what a peer asked. The variants say whether the request was
/// acted on: only [`Refusal::Unknown`] leaves that open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// This server does not lead; nothing was proposed. `leader` is the one it knows of.
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<(NodeId, Member)> },
    /// Nothing was done: the disk of the leader is full.
    #[error("the leader's disk is full ({available} bytes free, {min_free} needed)")]
    StorageFull { available: u64, min_free: u64 },
    /// Nothing was done: this server is no longer a member of the cluster.
    #[error("this server was removed from the cluster")]
    Removed,
    /// Nothing was done, for the reason given.
    #[error("{0}")]
    Unavailable(String),
    /// The request was taken up and then failed: it may or may not have taken effect.
    #[error("{0}")]
    Unknown(String),
}

/// What a server reports of the users with a live subscription on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceReport {
    pub from: NodeId,
    /// Folded usernames (see `corvid_core::validate::fold`).
    pub usernames: Vec<String>,
}

/// A membership change, run by the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a learner, waits until it has caught up with the log, then makes it a voter.
    Add { id: NodeId, member: Member },
    /// Removes a server from the voters and from the cluster.
    Remove { id: NodeId },
}

/// One server's view of itself and of the cluster (`corvid cluster status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub role: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Every member of the membership this server knows: id, record, whether it votes.
    pub members: Vec<(NodeId, Member, bool)>,
    /// Whether this server has found itself removed from the cluster.
    pub removed: bool,
}

/// A body that could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[error("peer call {call:?}: {reason}")]
pub struct PeerError {
    pub call: PeerCall,
    pub reason: String,
}

pub(crate) fn encode<T: Serialize>(call: PeerCall, value: &T) -> Result<Vec<u8>, PeerError> {
    postcard::to_allocvec(value).map_err(|e| PeerError {
        call,
        reason: format!("cannot encode: {e}"),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(call: PeerCall, bytes: &[u8]) -> Result<T, PeerError> {
    postcard::from_bytes(bytes).map_err(|e| PeerError {
        call,
        reason: format!("malformed body: {e}"),
    })
}

/// Answers the calls of the other servers for one node.
pub struct PeerService {
    id: NodeId,
    raft: Raft,
    reader: StoreReader,
    presence: Arc<Presence>,
    removed: Arc<AtomicBool>,
    /// Set while this server grants no vote (see `formation`).
    holding_vote: Arc<AtomicBool>,
    /// Set while this server refuses entries for want of disk space (see `check_room`).
    refusing_for_room: AtomicBool,
    /// The last append this server accepted from a leader, for `leader_watch`.
    heard: watch::Sender<Option<Heard>>,
}

impl PeerService {
    pub(crate) fn new(
        id: NodeId,
        raft: Raft,
        reader: StoreReader,
        presence: Arc<Presence>,
        removed: Arc<AtomicBool>,
        holding_vote: Arc<AtomicBool>,
        heard: watch::Sender<Option<Heard>>,
    ) -> PeerService {
        PeerService {
            id,
            raft,
            reader,
            presence,
            removed,
            holding_vote,
            refusing_for_room: AtomicBool::new(false),
            heard,
        }
    }

    /// Decodes a call's body, serves it, and encodes the answer.
    pub async fn handle(&self, call: PeerCall, body: &[u8]) -> Result<Vec<u8>, PeerError> {
        match call {
            PeerCall::Append => {
                let request: AppendEntriesRequest = decode(call, body)?;
                if !request.entries.is_empty() {
                    self.check_room(call).await?;
                }
                let leader = request.vote.leader_id;
                let answer = self.raft.append_entries(request).await;
                // Any answer but a higher vote means openraft took the sender as its
                // leader (and renewed the leader lease).
                if matches!(&answer, Ok(response) if !matches!(response, AppendEntriesResponse::HigherVote(_)))
                {
                    self.heard.send_replace(Some(Heard {
                        at: Instant::now(),
                        leader: leader.node_id,
                        term: leader.term,
                    }));
                }
                encode(call, &answer)
            }
            PeerCall::Vote => {
                let request: VoteRequest = decode(call, body)?;
                if self.holding_vote.load(Ordering::SeqCst) {
                    // Refused without telling openraft, which would grant it: this
                    // server's log may lack entries it acknowledged before (see
                    // `formation`). The answer carries the vote this server holds, lower
                    // than the candidate's, which the candidate counts as a refusal.
                    let vote = self.raft.metrics().borrow().vote;
                    let refused: Result<VoteResponse, RaftError> =
                        Ok(VoteResponse::new(vote, None, false));
                    return encode(call, &refused);
                }
                encode(call, &self.raft.vote(request).await)
            }
            PeerCall::InstallSnapshot => {
                let request: InstallSnapshotRequest = decode(call, body)?;
                self.check_room(call).await?;
                encode(call, &self.raft.install_snapshot(request).await)
            }
            PeerCall::ForwardWrite => {
                let commands: Vec<Command> = decode(call, body)?;
                encode(call, &self.forward_write(commands).await)
            }
            PeerCall::ReadIndex => {
                let () = decode(call, body)?;
                encode(call, &self.read_index().await)
            }
            PeerCall::Presence => {
                let report: PresenceReport = decode(call, body)?;
                if self.is_member(report.from) {
                    self.presence.record(report.from, report.usernames);
                }
                encode(call, &())
            }
            PeerCall::Status => {
                let () = decode(call, body)?;
                encode(call, &self.status())
            }
            PeerCall::ChangeMembership => {
                let change: MembershipChange = decode(call, body)?;
                encode(call, &self.change_membership(change).await)
            }
        }
    }

    /// Refuses what would write to the log or the state while the disk is below its
    /// margin. openraft stops for good on a storage error, so a follower that took entries
    /// with its disk full would stop serving; refused here, the call fails as if the network
    /// had, the leader offers it again each heartbeat (see `network`), and it goes through
    /// by itself once there is room. Meanwhile this server does not stand for election: it
    /// could not take the log it would lead with.
    async fn check_room(&self, call: PeerCall) -> Result<(), PeerError> {
        match self.reader.check_free_space() {
            Err(StoreError::StorageFull {
                available,
                min_free,
            }) => {
                if !self.refusing_for_room.swap(true, Ordering::SeqCst) {
                    self.raft.runtime_config().elect(false);
                    tracing::warn!(
                        available,
                        min_free,
                        "the disk is full: refusing the leader's entries until there is room"
                    );
                }
                // openraft offers the entries again as soon as a refusal comes back: the
                // refusal waits a little, so that a full disk does not turn into a busy loop
                // of calls between the two servers.
                tokio::time::sleep(ROOM_REFUSAL_PAUSE).await;
                Err(PeerError {
                    call,
                    reason: format!(
                        "this server's disk is full ({available} bytes free, {min_free} needed)"
                    ),
                })
            }
            _ => {
                if self.refusing_for_room.swap(false, Ordering::SeqCst) {
                    if !self.holding_vote.load(Ordering::SeqCst) {
                        self.raft.runtime_config().elect(true);
                    }
                    tracing::info!("the disk has room again: taking the leader's entries");
                }
                Ok(())
            }
        }
    }

    fn is_member(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    /// Refuses unless this server leads now; says who does.
    fn check_leader(&self) -> Result<(), Refusal> {
        if self.removed.load(Ordering::Relaxed) {
            return Err(Refusal::Removed);
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        match metrics.current_leader {
            Some(leader) if leader == self.id => Ok(()),
            leader => Err(Refusal::NotLeader {
                leader: leader.and_then(|id| {
                    let member = metrics.membership_config.membership().get_node(&id)?;
                    Some((id, member.clone()))
                }),
            }),
        }
    }

    /// Proposes a follower's batch as one entry.
    async fn forward_write(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, Refusal> {
        self.check_leader()?;
        match self.reader.check_free_space() {
            Ok(()) => {}
            Err(StoreError::StorageFull {
                available,
                min_free,
            }) => {
                return Err(Refusal::StorageFull {
                    available,
                    min_free,
                })
            }
            Err(e) => return Err(Refusal::Unavailable(e.to_string())),
        }
        match self.raft.client_write(commands).await {
            Ok(response) => Ok(response.data),
            // openraft refuses a write before appending it when this node does not lead.
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(Refusal::NotLeader {
                    leader: forward.leader_id.zip(forward.leader_node),
                })
            }
            Err(e) => Err(Refusal::Unknown(e.to_string())),
        }
    }

    /// The leader's read index: the log index a linearizable read must see applied,
    /// confirmed by a quorum's heartbeat answers.
    async fn read_index(&self) -> Result<Option<u64>, Refusal> {
        self.check_leader()?;
        match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(read_log_id.map(|id| id.index)),
            Err(e) => Err(Refusal::Unavailable(e.to_string())),
        }
    }

    pub(crate) fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        NodeStatus {
            id: self.id,
            role: format!("{:?}", metrics.state),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|id| id.index),
            members: membership
                .nodes()
                .map(|(id, member)| (*id, member.clone(), voters.contains(id)))
                .collect(),
            removed: self.removed.load(Ordering::Relaxed),
        }
    }

    async fn change_membership(&self, change: MembershipChange) -> Result<(), Refusal> {
        self.check_leader()?;
        let voters: BTreeSet<NodeId> = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics.membership_config.membership().voter_ids().collect()
        };
        let unknown = |e: RaftError<ClientWriteError>| Refusal::Unknown(e.to_string());
        match change {
            MembershipChange::Add { id, member } => {
                // Blocking: returns once the learner has caught up with the log, so that
                // making it a voter does not leave the cluster waiting on a slow newcomer.
                self.raft
                    .add_learner(id, member, true)
                    .await
                    .map_err(unknown)?;
                let mut voters = voters;
                voters.insert(id);
                self.raft
                    .change_membership(voters, false)
                    .await
                    .map_err(unknown)?;
            }
            MembershipChange::Remove { id } => {
                if !voters.contains(&id) {
                    let nodes: BTreeMap<NodeId, Member> = {
                        let metrics = self.raft.metrics();
                        let metrics = metrics.borrow();
                        metrics
                            .membership_config
                            .membership()
                            .nodes()
                            .map(|(id, m)| (*id, m.clone()))
                            .collect()
                    };
                    if !nodes.contains_key(&id) {
                        return Err(Refusal::Unavailable(format!("server {id} is not a member")));
                    }
                }
                let mut voters = voters;
                voters.remove(&id);
                if voters.is_empty() {
                    return Err(Refusal::Unavailable(
                        "the last voter cannot be removed".into(),
                    ));
                }
                self.raft
                    .change_membership(voters, false)
                    .await
                    .map_err(unknown)?;
            }
        }
        Ok(())
    }
}
