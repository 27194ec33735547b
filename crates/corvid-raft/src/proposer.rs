//! Group commit of client writes: concurrent [`Node::write`](crate::Node::write) calls are
//! proposed together, as one log entry, so that they share one append and one fsync.
//!
//! The storage cannot do this alone with openraft 0.9: its core appends one entry at a time
//! and waits for that append's fsync before it appends the next (`RaftCore::append_to_log`
//! awaits the flush callback), so every entry costs its own fsync. The proposer therefore
//! batches above openraft: it keeps at most [`MAX_IN_FLIGHT`] entries inside openraft;
//! while they are written and applied, new commands queue here, and the next entry takes
//! all of them (up to [`MAX_COMMANDS`] / [`MAX_BYTES`]). A lone write is proposed at once.
//!
//! Entries are handed to openraft in the order their first command arrived, so writes keep
//! their submission order. When an entry this server proposed fails (its leadership moved
//! before it committed), the commands queued behind it fail too rather than go on to the
//! next leader: applied there, they would land ahead of the failed ones, which their
//! clients send again.
//!
//! On a follower the same batch goes to the leader over forward-write, and the leader
//! proposes it as one entry. When a forward's answer is lost (a deadline, a leader that
//! died), the batch may or may not have been applied: only commands that cannot act twice
//! are sent again — a `Send` with a client id (the state machine answers a repeat with
//! the original message), `MarkRead`, `MarkDelivered`, `DeleteMessages` and `Touch`
//! (applying them twice is applying them once). The others (a `Send` without a client id,
//! account and session commands) are answered `unavailable`: the client decides.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corvid_core::{Command, Outcome};
use corvid_store::typ::{ClientWriteError, NodeId, Raft, RaftError};
use corvid_store::StoreError;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::network::{LinkError, Peers};
use crate::node::{pause, wait_for_leader, NodeError};
use crate::peer::{PeerCall, Refusal};

/// Entries proposed and not yet applied, at most. Two lets one entry be fsync'd while the
/// previous one is applied.
pub const MAX_IN_FLIGHT: usize = 2;
/// Commands in one entry, at most.
pub const MAX_COMMANDS: usize = 1024;
/// Approximate bytes of commands in one entry, at most (one large message still fits).
pub const MAX_BYTES: usize = 4 << 20;
/// How long a follower keeps trying to get a batch to a leader (through an election)
/// before it answers `unavailable`.
const FORWARD_DEADLINE: Duration = Duration::from_secs(5);
/// How long one forward-write call may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

type Reply = oneshot::Sender<Result<Outcome, NodeError>>;

struct Pending {
    command: Command,
    reply: Reply,
    /// Numbers the commands in their order of submission.
    seq: u64,
}

/// Submission numbers: the next one to give, and the last one that must not be proposed
/// because an entry proposed before it failed.
#[derive(Default)]
struct Order {
    next: AtomicU64,
    failed_upto: AtomicU64,
}

impl Order {
    /// Marks every command submitted so far as queued behind a failed entry.
    fn entry_failed(&self) {
        let submitted = self.next.load(Ordering::SeqCst);
        self.failed_upto.fetch_max(submitted, Ordering::SeqCst);
    }

    fn behind_a_failure(&self, pending: &Pending) -> bool {
        pending.seq <= self.failed_upto.load(Ordering::SeqCst)
    }
}

/// The queue of commands waiting to be proposed.
pub(crate) struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
    order: Arc<Order>,
}

impl Proposer {
    /// Starts the proposing task of node `id`. It ends when the proposer is dropped.
    pub(crate) fn start(raft: Raft, id: NodeId, peers: Peers) -> Proposer {
        let (queue, pending) = mpsc::unbounded_channel();
        let order = Arc::new(Order::default());
        tokio::spawn(run(raft, id, peers, pending, order.clone()));
        Proposer { queue, order }
    }

    /// Proposes `command`; returns its outcome once its entry is committed and applied.
    pub(crate) async fn propose(&self, command: Command) -> Result<Outcome, NodeError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending {
                command,
                reply,
                seq: self.order.next.fetch_add(1, Ordering::SeqCst) + 1,
            })
            .map_err(|_| NodeError::Unavailable("the node is shutting down".into()))?;
        outcome.await.map_err(|_| {
            NodeError::Unavailable("the node stopped before the write completed".into())
        })?
    }
}

/// Roughly how many bytes `command` adds to an entry.
fn size(command: &Command) -> usize {
    const FIXED: usize = 64;
    FIXED
        + match command {
            Command::CreateAccount {
                username,
                display_name,
                password_hash,
                ..
            } => username.len() + display_name.len() + password_hash.len(),
            Command::Send { to, text, .. } => to.len() + text.len(),
            Command::MarkRead { ids, .. }
            | Command::MarkDelivered { ids, .. }
            | Command::DeleteMessages { ids, .. } => 8 * ids.len(),
            Command::Login { .. }
            | Command::Logout { .. }
            | Command::DeleteAccount { .. }
            | Command::Touch { .. } => 0,
        }
}

/// Whether a command may be proposed again when it is unknown whether it was applied.
pub fn is_retry_safe(command: &Command) -> bool {
    match command {
        Command::Send { client_id, .. } => *client_id != 0,
        Command::MarkRead { .. }
        | Command::MarkDelivered { .. }
        | Command::DeleteMessages { .. }
        | Command::Touch { .. } => true,
        Command::CreateAccount { .. }
        | Command::Login { .. }
        | Command::Logout { .. }
        | Command::DeleteAccount { .. } => false,
    }
}

/// Whether this node should hand its batch to another server: another leads, or nobody is
/// known to lead in a cluster of several, where the forward waits for an election. A
/// single server, and a node not initialized yet, propose to themselves as ever (refused
/// at once when they do not lead).
fn forwards(raft: &Raft, id: NodeId) -> bool {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    match metrics.current_leader {
        Some(leader) => leader != id,
        None => metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|voter| voter != id),
    }
}

async fn run(
    raft: Raft,
    id: NodeId,
    peers: Peers,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    order: Arc<Order>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A command that did not fit in the previous entry starts the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match pending.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Wait for room first: whatever queues meanwhile joins this entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = size(&first.command);
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS {
            let Ok(next) = pending.try_recv() else { break };
            bytes += size(&next.command);
            if bytes > MAX_BYTES {
                carried = Some(next);
                break;
            }
            batch.push(next);
        }
        let (behind, batch): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| order.behind_a_failure(p));
        fail_pending(
            NodeError::Unavailable(
                "an earlier write on this server failed as the leadership moved; this one was \
                 not proposed, so that writes keep their order"
                    .into(),
            ),
            behind,
        );
        if batch.is_empty() {
            continue;
        }
        if forwards(&raft, id) {
            tokio::spawn(forward(raft.clone(), id, peers.clone(), batch, permit));
            continue;
        }
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        match raft.client_write_ff(commands).await {
            Ok(response) => {
                let order = order.clone();
                tokio::spawn(async move {
                    let result = response.await;
                    if !matches!(result, Ok(Ok(_))) {
                        // Before the permit goes: the next batch must see it.
                        order.entry_failed();
                    }
                    drop(permit);
                    match result {
                        Ok(Ok(response)) => deliver(response.data, replies),
                        Ok(Err(e)) => fail(client_write_error(e), replies),
                        Err(_) => fail(
                            NodeError::Unavailable("the node stopped before answering".into()),
                            replies,
                        ),
                    }
                });
            }
            Err(fatal) => fail(fatal.into(), replies),
        }
    }
}

/// Gets a follower's batch applied by the leader, through leader changes, until
/// [`FORWARD_DEADLINE`]; holds `permit` (an entry in flight) meanwhile.
async fn forward(
    raft: Raft,
    id: NodeId,
    peers: Peers,
    mut batch: Vec<Pending>,
    permit: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + FORWARD_DEADLINE;
    loop {
        let Some((leader, member)) = wait_for_leader(&raft, deadline).await else {
            return fail_pending(NodeError::Unavailable("no leader is known".into()), batch);
        };
        let commands: Vec<Command> = batch.iter().map(|p| p.command.clone()).collect();
        if leader == id {
            // This server leads now: propose here.
            let result = raft.client_write(commands).await;
            drop(permit);
            let replies = batch.into_iter().map(|p| p.reply).collect();
            return match result {
                Ok(response) => deliver(response.data, replies),
                Err(RaftError::APIError(e)) => fail(client_write_error(e), replies),
                Err(RaftError::Fatal(fatal)) => fail(fatal.into(), replies),
            };
        }
        let address = peers.address(leader, Some(&member));
        let left = deadline.saturating_duration_since(Instant::now());
        let answer: Result<Result<Vec<Outcome>, Refusal>, LinkError> = peers
            .call(
                leader,
                &address,
                PeerCall::ForwardWrite,
                &commands,
                FORWARD_TIMEOUT.min(left),
            )
            .await;
        match answer {
            Ok(Ok(outcomes)) => {
                drop(permit);
                return deliver(outcomes, batch.into_iter().map(|p| p.reply).collect());
            }
            // Not acted on: the whole batch may go again, to whoever leads next.
            Ok(Err(Refusal::NotLeader { .. } | Refusal::Removed | Refusal::Unavailable(_)))
            | Err(LinkError::NotSent(_)) => {}
            Ok(Err(Refusal::StorageFull {
                available,
                min_free,
            })) => {
                let full = NodeError::Store(StoreError::StorageFull {
                    available,
                    min_free,
                });
                return fail_pending(full, batch);
            }
            Err(LinkError::Refused(reason)) => {
                return fail_pending(
                    NodeError::Unavailable(format!("the leader refused the write: {reason}")),
                    batch,
                )
            }
            Ok(Err(Refusal::Unknown(reason))) | Err(LinkError::Lost(reason)) => {
                // Perhaps applied: only what cannot act twice is sent again.
                let (again, unsure): (Vec<Pending>, Vec<Pending>) =
                    batch.into_iter().partition(|p| is_retry_safe(&p.command));
                fail_pending(
                    NodeError::Unavailable(format!(
                        "the leader's answer was lost ({reason}): the write may or may not \
                         have been applied"
                    )),
                    unsure,
                );
                batch = again;
                if batch.is_empty() {
                    return;
                }
            }
        }
        if Instant::now() >= deadline {
            return fail_pending(
                NodeError::Unavailable("no leader took the write in time".into()),
                batch,
            );
        }
        if let Err(stopping) = pause(&raft, deadline).await {
            return fail_pending(stopping, batch);
        }
    }
}

fn fail_pending(error: NodeError, batch: Vec<Pending>) {
    fail(error, batch.into_iter().map(|p| p.reply).collect());
}

fn client_write_error(e: ClientWriteError) -> NodeError {
    match e {
        ClientWriteError::ForwardToLeader(forward) => forward.into(),
        ClientWriteError::ChangeMembershipError(e) => NodeError::Unavailable(e.to_string()),
    }
}

fn deliver(outcomes: Vec<Outcome>, replies: Vec<Reply>) {
    if outcomes.len() != replies.len() {
        let error = NodeError::Fatal(format!(
            "{} commands were applied with {} outcomes",
            replies.len(),
            outcomes.len()
        ));
        return fail(error, replies);
    }
    for (outcome, reply) in outcomes.into_iter().zip(replies) {
        // The writer may have given up waiting; the command is applied all the same.
        let _ = reply.send(Ok(outcome));
    }
}

fn fail(error: NodeError, replies: Vec<Reply>) {
    for reply in replies {
        let _ = reply.send(Err(error.share()));
    }
}
