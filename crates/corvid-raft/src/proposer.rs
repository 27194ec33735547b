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
//! their submission order.

use std::sync::Arc;

use corvid_core::{Command, Outcome};
use corvid_store::typ::{ClientWriteError, Raft};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::node::NodeError;

/// Entries proposed and not yet applied, at most. Two lets one entry be fsync'd while the
/// previous one is applied.
pub const MAX_IN_FLIGHT: usize = 2;
/// Commands in one entry, at most.
pub const MAX_COMMANDS: usize = 1024;
/// Approximate bytes of commands in one entry, at most (one large message still fits).
pub const MAX_BYTES: usize = 4 << 20;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Outcome, NodeError>>,
}

/// The queue of commands waiting to be proposed.
pub(crate) struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the proposing task. It ends when the proposer is dropped.
    pub(crate) fn start(raft: Raft) -> Proposer {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, pending));
        Proposer { queue }
    }

    /// Proposes `command`; returns its outcome once its entry is committed and applied.
    pub(crate) async fn propose(&self, command: Command) -> Result<Outcome, NodeError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending { command, reply })
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

async fn run(raft: Raft, mut pending: mpsc::UnboundedReceiver<Pending>) {
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
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        match raft.client_write_ff(commands).await {
            Ok(response) => {
                tokio::spawn(async move {
                    let result = response.await;
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

fn client_write_error(e: ClientWriteError) -> NodeError {
    match e {
        ClientWriteError::ForwardToLeader(forward) => forward.into(),
        ClientWriteError::ChangeMembershipError(e) => NodeError::Unavailable(e.to_string()),
    }
}

fn deliver(outcomes: Vec<Outcome>, replies: Vec<oneshot::Sender<Result<Outcome, NodeError>>>) {
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

fn fail(error: NodeError, replies: Vec<oneshot::Sender<Result<Outcome, NodeError>>>) {
    for reply in replies {
        let _ = reply.send(Err(error.share()));
    }
}
