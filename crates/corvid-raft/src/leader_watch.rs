//! Standing for election as soon as the leader is gone: a follower that has heard nothing
//! from its leader for the leader lease asks the leader whether it is there, and when it
//! is not, one follower (the one with the most log) stands at once.
//!
//! openraft 0.9 makes a follower wait the leader lease (`election_timeout_max`, during
//! which the other voters refuse to vote) *plus* its own election timeout before it
//! stands, and lets every follower stand on its own clock: with several followers, a
//! candidate whose log is behind another's is refused and then waits twice the lease
//! before it may stand again. Here the wait is the lease alone, and the followers agree
//! on who stands before anyone does, so the first round is usually won (see
//! docs/benchmarks.md, "Election timing").
//!
//! Raft's safety never depends on when an election starts: this only decides when
//! `raft.trigger().elect()` is called. The lease still holds the voters back, so a
//! follower that merely lost touch with a leader the others still hear cannot win, and a
//! leader that answers its status call is left alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corvid_store::typ::{Member, NodeId, Raft};
use openraft::ServerState;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::network::{LinkError, Peers};
use crate::node::RaftTiming;
use crate::peer::{NodeStatus, PeerCall};

/// When this server last accepted an append (a heartbeat or entries) from a leader, and
/// from which one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Heard {
    pub at: Instant,
    pub leader: NodeId,
    pub term: u64,
}

/// What keeps a server from standing for election whatever the leader does.
pub(crate) struct HeldBack {
    /// Set once this server was removed from the cluster.
    pub removed: Arc<AtomicBool>,
    /// Set while this server holds back its vote (see `formation`).
    pub holding_vote: Arc<AtomicBool>,
}

impl HeldBack {
    fn now(&self) -> bool {
        self.removed.load(Ordering::Relaxed) || self.holding_vote.load(Ordering::SeqCst)
    }
}

/// Watches the appends a follower accepts and, once the leader has been silent for the
/// lease and does not answer, triggers an election on the one follower that should stand.
/// Runs until `stop`.
pub(crate) async fn watch_leader(
    id: NodeId,
    raft: Raft,
    peers: Peers,
    timing: RaftTiming,
    mut heard: watch::Receiver<Option<Heard>>,
    held_back: HeldBack,
    stop: CancellationToken,
) {
    let lease = Duration::from_millis(timing.election_timeout_max_ms);
    // The other voters heard the same last append at about the same time; this margin
    // covers the difference, so that their lease has expired too when the vote asks them.
    let margin = Duration::from_millis(timing.heartbeat_ms / 4);
    // A leader's status call is answered within a heartbeat or so; waiting up to the
    // shortest election timeout before giving up on it is never slower than openraft's
    // own timer.
    let probe_timeout = Duration::from_millis(timing.election_timeout_min_ms);
    let ask_timeout = Duration::from_millis(timing.heartbeat_ms);
    // Looked at no more than once a lease, whatever happens.
    let mut not_before = Instant::now();
    loop {
        let last = *heard.borrow_and_update();
        let Some(last) = last else {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = heard.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let due = (last.at + lease + margin).max(not_before);
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = heard.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep_until(due) => {}
        }
        not_before = Instant::now() + lease;
        if held_back.now() {
            continue;
        }
        let Some(others) = still_following(id, &raft, &last) else {
            continue;
        };
        if leader_answers(&peers, &last, &others, probe_timeout).await {
            continue;
        }
        if !should_stand(id, &raft, &peers, &last, &others, ask_timeout).await {
            continue;
        }
        // Checked again: a vote request may have arrived while the others were asked.
        if still_following(id, &raft, &last).is_none() {
            continue;
        }
        tracing::info!(
            node = id,
            leader = last.leader,
            term = last.term,
            "the leader is silent and does not answer: standing for election"
        );
        if raft.trigger().elect().await.is_err() {
            return; // Raft has stopped.
        }
    }
}

/// The other voters (with their member records), if this server is still a voting
/// follower of the leader it last heard, in that leader's term: nobody has stood since.
fn still_following(id: NodeId, raft: &Raft, last: &Heard) -> Option<Vec<(NodeId, Member)>> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    if metrics.state != ServerState::Follower
        || metrics.current_leader != Some(last.leader)
        || metrics.current_term != last.term
    {
        return None;
    }
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    if !voters.contains(&id) || voters.len() < 2 {
        return None;
    }
    Some(
        voters
            .into_iter()
            .filter(|voter| *voter != id)
            .filter_map(|voter| Some((voter, membership.get_node(&voter)?.clone())))
            .collect(),
    )
}

/// Whether the silent leader still says it leads in its term (its appends to this
/// server are late, or lost on the way): then nobody should stand.
async fn leader_answers(
    peers: &Peers,
    last: &Heard,
    others: &[(NodeId, Member)],
    timeout: Duration,
) -> bool {
    let member = others
        .iter()
        .find(|(other, _)| *other == last.leader)
        .map(|(_, member)| member);
    let address = peers.address(last.leader, member);
    let status: Result<NodeStatus, LinkError> = peers
        .call(last.leader, &address, PeerCall::Status, &(), timeout)
        .await;
    match status {
        Ok(status) => status.leader == Some(last.leader) && status.term == last.term,
        Err(_) => false,
    }
}

/// Whether this server is the one to stand: a majority of the voters (this one included)
/// answer, and of those that answer, this one has the longest log (the highest id among
/// equals). A candidate with less log than a voter is refused by it, so the others leave
/// the election to that one; all of them compare the same figures, so one of them stands.
/// A server that reaches too few voters to win does not stand: its higher term would
/// only disturb the leader the others elect.
async fn should_stand(
    id: NodeId,
    raft: &Raft,
    peers: &Peers,
    last: &Heard,
    others: &[(NodeId, Member)],
    timeout: Duration,
) -> bool {
    let own = raft.metrics().borrow().last_log_index;
    let asked = others
        .iter()
        .filter(|(other, _)| *other != last.leader)
        .map(|(other, member)| async move {
            let address = peers.address(*other, Some(member));
            let status: Result<NodeStatus, LinkError> = peers
                .call(*other, &address, PeerCall::Status, &(), timeout)
                .await;
            status.ok()
        });
    let answers: Vec<NodeStatus> = futures::future::join_all(asked)
        .await
        .into_iter()
        .flatten()
        .collect();
    let voters = others.len() + 1;
    // A majority of the voters, this one included, must answer.
    if answers.len() < voters / 2 {
        return false;
    }
    let mut best = (own, id);
    for status in &answers {
        if status.leader.is_some_and(|leader| leader != last.leader) {
            // A new leader is known already: its appends will reach this server.
            return false;
        }
        best = best.max((status.last_log_index, status.id));
    }
    best == (own, id)
}
