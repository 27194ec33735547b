//! How a member of a configured cluster starts when its data directory holds no cluster:
//! it forms the cluster with the other members, or, once the cluster has formed, learns
//! the log from the leader before it votes.
//!
//! An empty directory on a cluster member means one of two things: the cluster is new, or
//! the cluster has run and this server's data was lost (a disk replaced, a directory
//! wiped). The second is dangerous. The server may have acknowledged entries that it no
//! longer holds, counted by a leader in the majority that committed them; with an empty
//! log it would grant its vote to any candidate, and a candidate that never received those
//! entries could then win with it and overwrite them on the servers that hold them. So a
//! server that starts empty asks the others first:
//! - when a majority (itself included) answer that they hold no cluster either, or one
//!   holds the cluster but its log has nothing past the first membership (the cluster is
//!   forming), it forms the cluster with every configured member, as on a first start;
//! - when any of them holds a log that has run further, it does not form one: it waits for the leader's
//!   appends, grants no vote and does not stand for election until it has applied the
//!   leader's read index, which covers every entry committed before it asked (the same
//!   read index a follower's linearizable read waits for). From then on its log holds
//!   everything it could have acknowledged before, and it votes as any server does.
//!
//! A server that starts late into a new cluster takes the second way too, which costs it
//! nothing: it catches up before it votes instead of after. What this cannot see is a
//! member whose log stopped at the first membership while the others ran on (cut off
//! since the cluster formed): with the servers that ran on all down, a server that lost
//! its data forms with that one as on a first start. Losing a disk and the servers that
//! ran on at once is beyond what a majority of three or five tolerates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corvid_store::typ::{Member, NodeId, Raft};
use corvid_store::{ClusterId, StoreReader};
use tokio::time::Instant;

use crate::network::{LinkError, Peers};
use crate::node::{initialize, wait_for_leader};
use crate::peer::{NodeStatus, PeerCall, Refusal};

/// How often the others are asked again while too few of them answer.
const ASK_EVERY: Duration = Duration::from_millis(200);

/// How long one status or read index call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a log has run past the first membership (index 0, which every member writes
/// itself when the cluster forms): only then can a server have acknowledged anything.
fn has_run(last_log_index: Option<u64>) -> bool {
    last_log_index.is_some_and(|index| index > 0)
}

/// What a member whose data directory holds no cluster needs to form or join it.
pub(crate) struct Formation {
    pub id: NodeId,
    pub raft: Raft,
    pub reader: StoreReader,
    pub expected_cluster: Option<ClusterId>,
    pub peers: Peers,
    pub holding_vote: Arc<AtomicBool>,
    pub members: BTreeMap<NodeId, Member>,
}

impl Formation {
    /// Forms the cluster or catches up with it (see the module docs), then lets this server
    /// vote. Runs until then, or until the node stops.
    pub async fn run(self, join: bool) {
        if !join {
            match self.form_unless_formed().await {
                Ok(true) => {
                    self.release_vote();
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot initialize the cluster");
                    return;
                }
            }
        }
        self.catch_up().await;
        self.release_vote();
        tracing::info!(
            node = self.id,
            "caught up with the leader: this server votes again"
        );
    }

    /// Forms the cluster once a majority of the members hold none, or once one of them has
    /// formed it and nothing was committed yet (its log holds only the first membership);
    /// returns `false`, having formed nothing, once a member's log or this server's holds
    /// more.
    async fn form_unless_formed(&self) -> Result<bool, crate::NodeError> {
        let majority = self.members.len() / 2 + 1;
        let mut said_waiting = false;
        loop {
            // A leader may have reached this server meanwhile.
            if self.raft.is_initialized().await? {
                let last_log = self.raft.metrics().borrow().last_log_index;
                if has_run(last_log) {
                    self.say_catching_up(None);
                    return Ok(false);
                }
                return Ok(true);
            }
            let mut empty = 1;
            let mut forming = false;
            for (peer, address) in self.peers.configured() {
                if peer == self.id {
                    continue;
                }
                let status: Result<NodeStatus, LinkError> = self
                    .peers
                    .call(peer, address, PeerCall::Status, &(), CALL_TIMEOUT)
                    .await;
                match status {
                    Ok(status) if has_run(status.last_log_index) => {
                        self.say_catching_up(Some(peer));
                        return Ok(false);
                    }
                    Ok(status) if status.members.is_empty() => empty += 1,
                    Ok(_) => forming = true,
                    Err(_) => {}
                }
            }
            if forming || empty >= majority {
                initialize(
                    &self.raft,
                    &self.reader,
                    self.expected_cluster,
                    self.id,
                    self.members.clone(),
                )
                .await?;
                return Ok(true);
            }
            if !said_waiting {
                said_waiting = true;
                tracing::info!(
                    node = self.id,
                    answered = empty,
                    majority,
                    "this data directory holds no cluster: waiting for a majority of the members to answer before forming it"
                );
            }
            tokio::time::sleep(ASK_EVERY).await;
        }
    }

    fn say_catching_up(&self, member: Option<NodeId>) {
        tracing::warn!(
            node = self.id,
            ?member,
            "this data directory holds no cluster but the cluster has formed (it is new here, or its data was lost): learning the log from the leader, and voting only once caught up"
        );
    }

    /// Waits until this server has applied a leader's read index.
    async fn catch_up(&self) {
        loop {
            let deadline = Instant::now() + CALL_TIMEOUT;
            if let Some((leader, member)) = wait_for_leader(&self.raft, deadline).await {
                if leader != self.id {
                    let address = self.peers.address(leader, Some(&member));
                    let index: Result<Result<Option<u64>, Refusal>, LinkError> = self
                        .peers
                        .call(leader, &address, PeerCall::ReadIndex, &(), CALL_TIMEOUT)
                        .await;
                    if let Ok(Ok(index)) = index {
                        let caught_up = self
                            .raft
                            .wait(Some(Duration::from_secs(10)))
                            .applied_index_at_least(index, "the leader's read index")
                            .await;
                        if caught_up.is_ok() {
                            return;
                        }
                    }
                }
            }
            tokio::time::sleep(ASK_EVERY).await;
        }
    }

    fn release_vote(&self) {
        self.raft.runtime_config().elect(true);
        self.holding_vote.store(false, Ordering::SeqCst);
    }
}
