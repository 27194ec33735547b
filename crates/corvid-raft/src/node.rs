//! One Corvid server's Raft node: the store, openraft, and the network, assembled.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corvid_core::{Command, Outcome, Tables};
use corvid_store::typ::{
    CheckIsLeaderError, Entry, Fatal, ForwardToLeader, InitializeError, Member, NodeId, Raft,
    RaftConfig, RaftError,
};
use corvid_store::{
    Closed, ClusterId, EffectSink, LogReader, StateDigest, Store, StoreError, StoreMetrics,
    StoreReader,
};
use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::SnapshotPolicy;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::formation::Formation;
use crate::leader_watch::{watch_leader, HeldBack};
use crate::network::{LinkError, Network, Peers, SNAPSHOT_CHUNK_BYTES};
use crate::peer::{MembershipChange, NodeStatus, PeerCall, PeerService, PresenceReport, Refusal};
use crate::presence::{Presence, PRESENCE_EVERY};
use crate::proposer::Proposer;

/// How long `shutdown` waits for openraft to release the store.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// openraft's timing: how often a leader sends heartbeats, and how long a follower waits
/// without one before it stands for election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl RaftTiming {
    /// A single server's: it never waits for anyone, and elects itself at once on start.
    pub const SINGLE_SERVER: RaftTiming = RaftTiming {
        heartbeat_ms: 200,
        election_timeout_min_ms: 1000,
        election_timeout_max_ms: 2000,
    };
}

/// Where and as whom a node runs.
#[derive(Clone)]
pub struct NodeConfig {
    /// Holds `log/`, `state.redb` and `snapshots/`.
    pub data_dir: PathBuf,
    /// This server's id in the cluster; a single server is node 1.
    pub node_id: u64,
    /// This server's member record: where the other servers and redirected clients reach
    /// it. It goes into the membership when this node initializes a cluster.
    pub member: Member,
    /// The cluster this server must belong to, or `None` to take whichever its data
    /// directory belongs to. A directory of another cluster is refused at open; a cluster
    /// this node initializes gets this id (a fresh random one if `None`).
    pub cluster_id: Option<ClusterId>,
    /// Log entries between snapshots: [`SNAPSHOT_EVERY`], or fewer in tests that want
    /// snapshots and log purges to happen all the time.
    pub snapshot_every: u64,
    /// Bytes the log may grow by before a snapshot is taken anyway: [`SNAPSHOT_LOG_BYTES`].
    pub snapshot_log_bytes: u64,
    /// Writes are refused (`NodeError::Store(StoreError::StorageFull)`) while less than this
    /// is free on the data directory's disk: [`corvid_store::disk::DEFAULT_MIN_FREE_BYTES`].
    pub min_free_bytes: u64,
    /// How this server reaches the others ([`Peers::none`] for a single server).
    pub peers: Peers,
    /// openraft's heartbeat and election timing.
    pub timing: RaftTiming,
    /// Bytes of entries one append request may carry (see `network`).
    pub max_append_bytes: u64,
}

impl NodeConfig {
    /// A single server in `data_dir` (node 1, no peers, the single server's timing and
    /// limits), with no client addresses in its member record: what tests and tools that
    /// open a node on its own start from.
    pub fn single_server(data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            data_dir,
            node_id: 1,
            member: Member::default(),
            cluster_id: None,
            snapshot_every: SNAPSHOT_EVERY,
            snapshot_log_bytes: SNAPSHOT_LOG_BYTES,
            min_free_bytes: corvid_store::disk::DEFAULT_MIN_FREE_BYTES,
            peers: Peers::none(),
            timing: RaftTiming::SINGLE_SERVER,
            max_append_bytes: DEFAULT_MAX_APPEND_BYTES,
        }
    }
}

/// Bytes of entries one append request carries by default (see `network`): a follower far
/// behind gets its entries in pieces of this size.
pub const DEFAULT_MAX_APPEND_BYTES: u64 = 1 << 20;

/// Log entries between snapshots. A snapshot bounds both the log on disk and the replay a
/// lagging follower needs; an entry carries a batch of commands, so this is many more
/// commands.
pub const SNAPSHOT_EVERY: u64 = 50_000;
/// Log growth, in bytes, after which a snapshot is taken even if [`SNAPSHOT_EVERY`] entries
/// have not been written. Entries vary from one command to a thousand, so the entry count
/// alone does not bound the log; the log is read whole when the server starts (about 0.3 s
/// per GiB on the project's machine), and purged only behind a snapshot.
pub const SNAPSHOT_LOG_BYTES: u64 = 1 << 30;
/// How often the log's size is looked at.
const LOG_SIZE_CHECK: Duration = Duration::from_secs(1);
/// Entries kept in the log behind a snapshot, for followers that are only a little behind.
const KEEP_AFTER_SNAPSHOT: u64 = 1000;
/// Entries purged at a time, at least.
const PURGE_BATCH: u64 = 1024;
/// How long a read waits for a leader, its read index and its own state to reach it
/// before it answers `unavailable`: an election on loopback takes well under it.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long one read-index call to the leader may take.
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one presence report to a peer may take.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a server waits to retry a call to the leader that was not served (no leader
/// yet, or the leader just changed), unless the leader changes sooner.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why the node could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Writes and linearizable reads go to the leader: this server is not it. `leader` is the
    /// leader this server knows of, with its member record (its addresses).
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<(u64, Member)> },
    /// The cluster cannot serve right now: no leader yet, no quorum, or shutting down.
    /// Retrying later (or elsewhere) may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This server cannot go on: its storage failed or openraft stopped on an error.
    #[error("fatal: {0}")]
    Fatal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data directory belongs to another cluster than the one this server is
    /// configured for: starting would mix two clusters' data.
    #[error("the data directory belongs to cluster {found}, not to cluster {expected}")]
    WrongCluster {
        expected: ClusterId,
        found: ClusterId,
    },
    /// The data directory is another cluster member's: starting would cast that member's
    /// vote a second time and lose what this one acknowledged.
    #[error("the data directory is member {found}'s, not member {expected}'s: start member {found} on it, and give member {expected} its own directory (an empty one learns the log from the cluster)")]
    WrongMember { expected: u64, found: u64 },
    /// openraft refused the configuration (a bug in [`raft_config`]).
    #[error("invalid raft configuration: {0}")]
    Config(String),
}

impl From<Fatal> for NodeError {
    fn from(fatal: Fatal) -> NodeError {
        match fatal {
            Fatal::Stopped => NodeError::Unavailable("the node is shutting down".into()),
            other => NodeError::Fatal(other.to_string()),
        }
    }
}

impl From<ForwardToLeader> for NodeError {
    fn from(forward: ForwardToLeader) -> NodeError {
        NodeError::NotLeader {
            leader: forward.leader_id.zip(forward.leader_node),
        }
    }
}

impl NodeError {
    /// The same error, for another of the writes that shared its log entry.
    pub(crate) fn share(&self) -> NodeError {
        match self {
            NodeError::NotLeader { leader } => NodeError::NotLeader {
                leader: leader.clone(),
            },
            NodeError::Unavailable(reason) => NodeError::Unavailable(reason.clone()),
            // A full disk is the leader's answer to a forwarded batch: every write of the
            // batch gets it as it is, `storage_full` to its client, not a fault.
            NodeError::Store(StoreError::StorageFull {
                available,
                min_free,
            }) => NodeError::Store(StoreError::StorageFull {
                available: *available,
                min_free: *min_free,
            }),
            other => NodeError::Fatal(other.to_string()),
        }
    }
}

impl From<RaftError<CheckIsLeaderError>> for NodeError {
    fn from(e: RaftError<CheckIsLeaderError>) -> NodeError {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)) => forward.into(),
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)) => {
                NodeError::Unavailable(e.to_string())
            }
            RaftError::Fatal(fatal) => fatal.into(),
        }
    }
}

/// openraft's configuration for Corvid, with a snapshot every `snapshot_every` entries.
pub fn raft_config(snapshot_every: u64, timing: RaftTiming) -> Result<RaftConfig, NodeError> {
    let config = RaftConfig {
        cluster_name: "corvid".into(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_timeout_min_ms,
        election_timeout_max: timing.election_timeout_max_ms,
        // Snapshots go to a follower in chunks a message can carry; each chunk (the last
        // one installs the snapshot) has this long.
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: KEEP_AFTER_SNAPSHOT.min(snapshot_every),
        purge_batch_size: PURGE_BATCH.min(snapshot_every),
        // An entry carries a batch of commands (see `proposer`): replicate fewer per message.
        max_payload_entries: 64,
        ..RaftConfig::default()
    };
    config
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))
}

/// Refuses a data directory that belongs to another cluster than `expected`.
fn check_cluster(expected: ClusterId, found: Option<ClusterId>) -> Result<(), NodeError> {
    match found {
        Some(found) if found != expected => Err(NodeError::WrongCluster { expected, found }),
        _ => Ok(()),
    }
}

/// A running Raft node over its store.
pub struct Node {
    id: u64,
    /// This server's member record, for a cluster it initializes.
    member: Member,
    /// The cluster this node must belong to (see [`NodeConfig::cluster_id`]).
    expected_cluster: Option<ClusterId>,
    raft: Raft,
    proposer: Proposer,
    reader: StoreReader,
    /// Reads this server's own log, for checks of what it holds; released at shutdown.
    log_reader: std::sync::Mutex<Option<LogReader>>,
    peers: Peers,
    /// What the other servers reported of their subscribers.
    presence: Arc<Presence>,
    /// Set once this server finds itself out of the cluster's membership.
    removed: Arc<AtomicBool>,
    /// Set while this server holds back its vote (see [`Node::form_or_catch_up`]).
    holding_vote: Arc<AtomicBool>,
    /// Answers the other servers.
    peer_service: Arc<PeerService>,
    /// Stops this node's background tasks.
    stop: CancellationToken,
    /// Taken by the first `shutdown`.
    closed: tokio::sync::Mutex<Option<Closed>>,
}

impl Node {
    /// Opens the store in `config.data_dir`, checks that it belongs to the configured
    /// cluster, starts Raft and returns: it neither waits for a leader nor initializes a
    /// cluster. An initialized node resumes its log (a sole voter stands for election at
    /// once); an uninitialized one waits for its caller to [`initialize`](Self::initialize)
    /// it, or for a cluster to add it. Readiness is [`wait_ready`](Self::wait_ready).
    pub async fn open(config: NodeConfig, effects: EffectSink) -> Result<Node, NodeError> {
        // Opening may repair the file after a crash, which reads all of it.
        let dir = config.data_dir.clone();
        let store = corvid_store::replay::blocking(move || Store::open(dir, effects))
            .await
            .map_err(|e| NodeError::Fatal(format!("opening the store failed: {e}")))??;
        let Store {
            mut log,
            state_machine,
            reader,
            closed,
        } = store;
        let log_reader = log.get_log_reader().await;
        // Checked before openraft reads anything: another cluster's log must not be
        // replayed, nor its vote used. Dropping the store on error releases the directory.
        if let Some(expected) = config.cluster_id {
            check_cluster(expected, reader.cluster_id()?)?;
            let (recorder, id) = (reader.clone(), config.node_id);
            // A durable write: off the runtime's threads.
            let found = corvid_store::replay::blocking(move || recorder.record_member_id(id))
                .await
                .map_err(|e| NodeError::Fatal(format!("recording the member id failed: {e}")))??;
            if found != config.node_id {
                return Err(NodeError::WrongMember {
                    expected: config.node_id,
                    found,
                });
            }
        }
        reader.set_min_free_bytes(config.min_free_bytes);
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config(config.snapshot_every, config.timing)?),
            Network::new(
                config.peers.clone(),
                config.max_append_bytes,
                Duration::from_millis(config.timing.heartbeat_ms),
            ),
            log,
            state_machine,
        )
        .await?;
        tokio::spawn(snapshot_when_the_log_grows(
            raft.clone(),
            reader.clone(),
            config.snapshot_log_bytes,
        ));
        let presence = Arc::new(Presence::default());
        let removed = Arc::new(AtomicBool::new(false));
        let holding_vote = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (heard, heard_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(watch_leader(
            config.node_id,
            raft.clone(),
            config.peers.clone(),
            config.timing,
            heard_rx,
            HeldBack {
                removed: removed.clone(),
                holding_vote: holding_vote.clone(),
            },
            stop.clone(),
        ));
        tokio::spawn(notice_removal(
            config.node_id,
            raft.clone(),
            config.peers.clone(),
            removed.clone(),
            stop.clone(),
        ));
        let node = Node {
            id: config.node_id,
            member: config.member.clone(),
            expected_cluster: config.cluster_id,
            proposer: Proposer::start(raft.clone(), config.node_id, config.peers.clone()),
            peer_service: Arc::new(PeerService::new(
                config.node_id,
                raft.clone(),
                reader.clone(),
                presence.clone(),
                removed.clone(),
                holding_vote.clone(),
                heard,
            )),
            raft,
            reader,
            log_reader: std::sync::Mutex::new(Some(log_reader)),
            peers: config.peers,
            presence,
            removed,
            holding_vote,
            stop,
            closed: tokio::sync::Mutex::new(Some(closed)),
        };
        if let Err(e) = node.resume().await {
            // Release the store: the caller may want to open the directory again.
            if let Err(shutdown) = node.shutdown().await {
                tracing::warn!(error = %shutdown, "shutting down a node that failed to start");
            }
            return Err(e);
        }
        Ok(node)
    }

    /// Picks up an initialized node where it stopped.
    async fn resume(&self) -> Result<(), NodeError> {
        if !self.raft.is_initialized().await? {
            return Ok(());
        }
        if self.reader.cluster_id()?.is_none() {
            // Initialized but with no cluster id: a directory from before ids (format
            // version 1), always a single server that initialized itself. It gets its id
            // now: the configured one, if any, as if it were initializing.
            let cluster = record_cluster_id(&self.reader, self.expected_cluster).await?;
            tracing::info!(%cluster, "recorded a cluster id for this data directory");
        }
        if self.is_sole_voter() && self.raft.current_leader().await != Some(self.id) {
            // openraft resumes leadership at once when its saved vote is its own committed
            // one. Otherwise (it crashed mid-election), alone there is nobody to wait for:
            // stand for election now rather than after an election timeout.
            self.raft.trigger().elect().await?;
        }
        Ok(())
    }

    /// Whether this node belongs to a cluster yet (has a membership in its log or state).
    pub async fn is_initialized(&self) -> Result<bool, NodeError> {
        Ok(self.raft.is_initialized().await?)
    }

    /// Makes a new cluster of `members` (for a single server: itself alone), with this node
    /// as its first member, and returns the cluster's id: the configured one, or a fresh
    /// random one. The id is recorded durably before openraft writes the first membership,
    /// so a crash between the two leaves a directory that the next `initialize` finishes
    /// under the same id. On a node already initialized, this only returns its id.
    ///
    /// Whether to initialize is the caller's decision: a server that is to join an existing
    /// cluster must not, or it would found a cluster of its own.
    pub async fn initialize(&self, members: BTreeMap<u64, Member>) -> Result<ClusterId, NodeError> {
        initialize(
            &self.raft,
            &self.reader,
            self.expected_cluster,
            self.id,
            members,
        )
        .await
    }

    /// Makes this node a cluster of one, itself its only voter: what a single server does
    /// on its first start (see [`initialize`](Self::initialize)).
    pub async fn initialize_alone(&self) -> Result<ClusterId, NodeError> {
        self.initialize(BTreeMap::from([(self.id, self.member.clone())]))
            .await
    }

    /// Starts a member of a configured cluster whose data directory holds no cluster yet,
    /// in the background: it forms the cluster of `members` with the others when a
    /// majority of them answer that they hold none either, and otherwise (the cluster has
    /// formed: this directory is new, or its data was lost) learns the log from the leader.
    /// `join` (a server being added) never forms one.
    ///
    /// Until it has formed the cluster or caught up with a leader, this server grants no
    /// vote and does not stand for election: a server that lost its data may have
    /// acknowledged entries it no longer holds, and voting with its empty log could elect a
    /// server without them (see `formation`). Call it before the server-to-server listener
    /// serves, so that no append arrives before the vote is held.
    pub fn form_or_catch_up(&self, members: BTreeMap<u64, Member>, join: bool) {
        self.holding_vote.store(true, Ordering::SeqCst);
        self.raft.runtime_config().elect(false);
        let formation = Formation {
            id: self.id,
            raft: self.raft.clone(),
            reader: self.reader.clone(),
            expected_cluster: self.expected_cluster,
            peers: self.peers.clone(),
            holding_vote: self.holding_vote.clone(),
            members,
        };
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = formation.run(join) => {}
            }
        });
    }

    /// Waits, at most `timeout`, until a leader is known: for a single server, until it
    /// leads. Before then writes and linearizable reads fail (`NotLeader` with no leader,
    /// or `Unavailable`), so a server binds its listeners first and announces itself as
    /// ready only after this.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), NodeError> {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|e| NodeError::Unavailable(format!("no leader: {e}")))?;
        Ok(())
    }

    /// The cluster this node's data directory belongs to; `None` until it is initialized.
    pub fn cluster_id(&self) -> Result<Option<ClusterId>, NodeError> {
        Ok(self.reader.cluster_id()?)
    }

    fn is_sole_voter(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        voters == [self.id]
    }

    /// Proposes a command; returns once it is committed (durable on a quorum) and applied.
    /// Concurrent writes share a log entry, and so an fsync (see `proposer`). On a follower
    /// the batch is forwarded to the leader, which proposes it as one entry.
    pub async fn write(&self, command: Command) -> Result<Outcome, NodeError> {
        self.check_member()?;
        // A full disk refuses the write here, before openraft could meet ENOSPC.
        self.reader.check_free_space()?;
        self.proposer.propose(command).await
    }

    /// Changes the free space below which writes are refused (see
    /// [`NodeConfig::min_free_bytes`]); tests raise it to see writes refused without
    /// filling a disk.
    pub fn set_min_free_bytes(&self, bytes: u64) {
        self.reader.set_min_free_bytes(bytes);
    }

    /// A linearizable read: sees every write acknowledged before it began, on any server.
    ///
    /// The leader confirms its leadership with a quorum and waits until everything
    /// committed before the call is applied (openraft's `ensure_linearizable`). A follower
    /// asks the leader for that same read index, waits until it has applied that far
    /// itself, and reads its own state. Either then runs `f` on a read transaction.
    pub async fn read<R>(&self, f: impl FnOnce(&dyn Tables) -> R) -> Result<R, NodeError> {
        self.check_member()?;
        self.wait_linearizable().await?;
        Ok(self.reader.read(f)?)
    }

    async fn wait_linearizable(&self) -> Result<(), NodeError> {
        if self.is_sole_voter() {
            self.raft.ensure_linearizable().await?;
            return Ok(());
        }
        let deadline = Instant::now() + READ_DEADLINE;
        loop {
            let Some((leader, member)) = wait_for_leader(&self.raft, deadline).await else {
                return Err(NodeError::Unavailable("no leader is known".into()));
            };
            if leader == self.id {
                match self.raft.ensure_linearizable().await {
                    Ok(_) => return Ok(()),
                    // Leadership moved while confirming it: ask the new leader.
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                let address = self.peers.address(leader, Some(&member));
                let index: Result<Result<Option<u64>, Refusal>, LinkError> = self
                    .peers
                    .call(
                        leader,
                        &address,
                        PeerCall::ReadIndex,
                        &(),
                        READ_INDEX_TIMEOUT.min(deadline - Instant::now()),
                    )
                    .await;
                match index {
                    Ok(Ok(index)) => return self.wait_applied(index, deadline).await,
                    Ok(Err(refusal)) => {
                        tracing::debug!(%refusal, leader, "read index refused; retrying")
                    }
                    Err(LinkError::Refused(reason)) => {
                        return Err(NodeError::Unavailable(format!(
                            "the leader refused a read index: {reason}"
                        )))
                    }
                    Err(e) => tracing::debug!(error = %e, leader, "no read index; retrying"),
                }
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Unavailable(
                    "no read index from a leader in time".into(),
                ));
            }
            pause(&self.raft, deadline).await?;
        }
    }

    /// Waits until this server has applied the log up to `index`.
    async fn wait_applied(&self, index: Option<u64>, deadline: Instant) -> Result<(), NodeError> {
        let Some(index) = index else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "the read index")
            .await
            .map_err(|e| {
                NodeError::Unavailable(format!("this server did not catch up in time: {e}"))
            })?;
        Ok(())
    }

    /// Refuses to serve once this server is no longer a member of its cluster.
    fn check_member(&self) -> Result<(), NodeError> {
        if self.removed.load(Ordering::Relaxed) {
            return Err(NodeError::Unavailable(
                "this server was removed from the cluster".into(),
            ));
        }
        Ok(())
    }

    /// The server-to-server service of this node, for the listener (or a test's router).
    pub fn peer_service(&self) -> Arc<PeerService> {
        self.peer_service.clone()
    }

    /// This server's role, term, indexes and membership.
    pub fn status(&self) -> NodeStatus {
        self.peer_service.status()
    }

    /// Whether `username` has a live subscription on another server of the cluster (as
    /// that server reported within the last few seconds).
    pub fn is_online_elsewhere(&self, username: &str) -> bool {
        self.presence.is_online_elsewhere(username)
    }

    /// Sends `local()` (the folded usernames with a live subscription on this server) to
    /// every other member each [`PRESENCE_EVERY`], until the node shuts down.
    pub fn report_presence(&self, local: Arc<dyn Fn() -> Vec<String> + Send + Sync>) {
        let raft = self.raft.clone();
        let peers = self.peers.clone();
        let id = self.id;
        let stop = self.stop.clone();
        let removed = self.removed.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(PRESENCE_EVERY);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = interval.tick() => {}
                }
                if removed.load(Ordering::Relaxed) {
                    continue;
                }
                let others: Vec<(NodeId, Member)> = {
                    let metrics = raft.metrics();
                    let metrics = metrics.borrow();
                    metrics
                        .membership_config
                        .membership()
                        .nodes()
                        .filter(|(other, _)| **other != id)
                        .map(|(other, member)| (*other, member.clone()))
                        .collect()
                };
                if others.is_empty() {
                    continue;
                }
                let report = PresenceReport {
                    from: id,
                    usernames: local(),
                };
                let calls = others.iter().map(|(other, member)| {
                    let address = peers.address(*other, Some(member));
                    let peers = &peers;
                    let report = &report;
                    async move {
                        let sent: Result<(), LinkError> = peers
                            .call(
                                *other,
                                &address,
                                PeerCall::Presence,
                                report,
                                PRESENCE_TIMEOUT,
                            )
                            .await;
                        if let Err(e) = sent {
                            tracing::debug!(peer = other, error = %e, "presence not sent");
                        }
                    }
                });
                futures::future::join_all(calls).await;
            }
        });
    }

    /// Adds a server (a learner first, a voter once caught up) or removes one, on the
    /// leader: here if this server leads, else through it.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), NodeError> {
        let deadline = Instant::now() + READ_DEADLINE;
        let Some((leader, member)) = wait_for_leader(&self.raft, deadline).await else {
            return Err(NodeError::Unavailable("no leader is known".into()));
        };
        let address = self.peers.address(leader, Some(&member));
        let answer: Result<Result<(), Refusal>, LinkError> = if leader == self.id {
            let body = crate::peer::encode(PeerCall::ChangeMembership, &change)
                .map_err(|e| NodeError::Fatal(e.to_string()))?;
            let answer = self
                .peer_service
                .handle(PeerCall::ChangeMembership, &body)
                .await
                .map_err(|e| NodeError::Fatal(e.to_string()))?;
            Ok(crate::peer::decode(PeerCall::ChangeMembership, &answer)
                .map_err(|e| NodeError::Fatal(e.to_string()))?)
        } else {
            self.peers
                .call(
                    leader,
                    &address,
                    PeerCall::ChangeMembership,
                    &change,
                    Duration::from_secs(600),
                )
                .await
        };
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(NodeError::Unavailable(refusal.to_string())),
            Err(e) => Err(NodeError::Unavailable(e.to_string())),
        }
    }

    /// A read of this server's own state, without asking the cluster: it may be stale on a
    /// follower. For checks that a later write re-validates.
    pub fn read_local<R>(&self, f: impl FnOnce(&dyn Tables) -> R) -> Result<R, NodeError> {
        Ok(self.reader.read(f)?)
    }

    /// Stops Raft and waits until the store is closed, so that the data directory can be
    /// opened again. Later calls do nothing.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let Some(closed) = self.closed.lock().await.take() else {
            return Ok(());
        };
        self.stop.cancel();
        // The reader holds the store open; the store must close.
        self.log_reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.raft
            .shutdown()
            .await
            .map_err(|e| NodeError::Fatal(format!("the raft task failed: {e}")))?;
        tokio::time::timeout(CLOSE_DEADLINE, closed.wait())
            .await
            .map_err(|_| NodeError::Fatal("the store is still open after shutdown".into()))
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The openraft handle, for metrics and cluster administration.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The entries of this server's own log within `indexes` (those it holds: purged ones
    /// are left out), whether committed or not. For checks that compare servers.
    pub async fn log_entries(&self, indexes: RangeInclusive<u64>) -> Result<Vec<Entry>, NodeError> {
        let reader = self
            .log_reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(mut reader) = reader else {
            return Err(NodeError::Unavailable("the node is shut down".into()));
        };
        reader
            .try_get_log_entries(indexes)
            .await
            .map_err(|e| NodeError::Fatal(e.to_string()))
    }

    /// A digest of this server's state tables with the last entry applied to them (see
    /// [`StoreReader::state_digest`]): servers at the same applied entry must agree.
    pub fn state_digest(&self) -> Result<StateDigest, NodeError> {
        Ok(self.reader.state_digest()?)
    }

    /// The store's counters: log commits (fsyncs), appends, applied batches.
    pub fn store_metrics(&self) -> StoreMetrics {
        self.reader.metrics()
    }

    /// The store's fsync latency and entries-per-flush histograms.
    pub fn store_histograms(&self) -> corvid_store::metrics::StoreHistogramSnapshots {
        self.reader.histograms()
    }

    /// Whether the data directory's disk has room for writes (see [`corvid_store::disk`]).
    pub fn check_free_space(&self) -> Result<(), NodeError> {
        Ok(self.reader.check_free_space()?)
    }
}

/// Records the configured cluster id, or a fresh random one, unless the directory belongs
/// to a cluster already; returns the one it belongs to.
async fn record_cluster_id(
    reader: &StoreReader,
    expected: Option<ClusterId>,
) -> Result<ClusterId, NodeError> {
    let id = expected.unwrap_or_else(|| {
        let mut id = [0; 16];
        corvid_store::replay::fill_random(&mut id);
        ClusterId(id)
    });
    let reader = reader.clone();
    // A durable write: off the runtime's threads.
    let recorded = corvid_store::replay::blocking(move || reader.record_cluster_id(id))
        .await
        .map_err(|e| NodeError::Fatal(format!("recording the cluster id failed: {e}")))??;
    Ok(recorded)
}

/// See [`Node::initialize`].
pub(crate) async fn initialize(
    raft: &Raft,
    reader: &StoreReader,
    expected: Option<ClusterId>,
    id: NodeId,
    members: BTreeMap<u64, Member>,
) -> Result<ClusterId, NodeError> {
    let cluster = record_cluster_id(reader, expected).await?;
    match raft.initialize(members).await {
        Ok(()) => tracing::info!(node = id, %cluster, "initialized a cluster"),
        // Initialized already (an earlier start, or a leader reached it first): the
        // cluster exists, which is the goal.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
        Err(RaftError::APIError(e)) => return Err(NodeError::Fatal(e.to_string())),
        Err(RaftError::Fatal(fatal)) => return Err(fatal.into()),
    }
    Ok(cluster)
}

/// Waits, until `deadline`, for a leader whose member record this server knows.
pub(crate) async fn wait_for_leader(raft: &Raft, deadline: Instant) -> Option<(NodeId, Member)> {
    let mut metrics = raft.metrics();
    loop {
        {
            let now = metrics.borrow_and_update();
            if let Some(leader) = now.current_leader {
                if let Some(member) = now.membership_config.membership().get_node(&leader) {
                    return Some((leader, member.clone()));
                }
            }
        }
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

/// Waits a little before a call to the leader is retried: until the leader or the vote
/// changes, [`RETRY_PAUSE`], or `deadline`, whichever comes first. Other changes to the
/// metrics do not end the wait: a leadership check or a call to a leader moves replication
/// figures, and the retry would come back at once, round and round, until the deadline.
/// Fails once this server's Raft has stopped (its metrics end): a retry could only find
/// the same stale leader again.
pub(crate) async fn pause(raft: &Raft, deadline: Instant) -> Result<(), NodeError> {
    let mut metrics = raft.metrics();
    let before = {
        let now = metrics.borrow_and_update();
        (now.current_leader, now.vote)
    };
    let until = deadline.min(Instant::now() + RETRY_PAUSE);
    let moved = metrics.wait_for(|now| (now.current_leader, now.vote) != before);
    let running = tokio::time::timeout_at(until, moved)
        .await
        .map_or(true, |changed| changed.is_ok());
    if running {
        Ok(())
    } else {
        Err(NodeError::Unavailable("this server is stopping".into()))
    }
}

/// Watches the membership: once this server is not in it (it was removed), it stops
/// serving, says so once, and no longer stands for election, so that it does not disturb
/// the cluster it left.
///
/// A removed server is often never sent the membership entry that removes it (the leader
/// stops replicating to it), so it sees only that no leader talks to it any more. While it
/// knows no leader it asks the other members for their status each [`REMOVAL_PROBE`]: one
/// that follows a leader and whose membership lacks this server proves the removal.
async fn notice_removal(
    id: NodeId,
    raft: Raft,
    peers: Peers,
    removed: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut metrics = raft.metrics();
    let mut probe = tokio::time::interval(REMOVAL_PROBE);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (out, others) = {
            let now = metrics.borrow_and_update();
            let membership = now.membership_config.membership();
            let initialized = membership.voter_ids().next().is_some();
            let others: Vec<(NodeId, Member)> = if now.current_leader.is_none() {
                membership
                    .nodes()
                    .filter(|(other, _)| **other != id)
                    .map(|(other, member)| (*other, member.clone()))
                    .collect()
            } else {
                Vec::new()
            };
            (initialized && membership.get_node(&id).is_none(), others)
        };
        let out = out || removed_by_peers(id, &peers, &others).await;
        if out {
            if !removed.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    node = id,
                    "this server was removed from the cluster's membership: it no longer serves \
                     clients or stands for election"
                );
                raft.runtime_config().elect(false);
            }
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = probe.tick() => {}
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// How often a server that knows no leader asks the others whether it was removed.
const REMOVAL_PROBE: Duration = Duration::from_secs(1);

/// Whether one of `others` follows a leader in a membership without server `id`.
async fn removed_by_peers(id: NodeId, peers: &Peers, others: &[(NodeId, Member)]) -> bool {
    for (other, member) in others {
        let address = peers.address(*other, Some(member));
        let status: Result<NodeStatus, LinkError> = peers
            .call(*other, &address, PeerCall::Status, &(), PRESENCE_TIMEOUT)
            .await;
        if let Ok(status) = status {
            if status.leader.is_some()
                && !status.removed
                && !status.members.iter().any(|(member, _, _)| *member == id)
            {
                return true;
            }
        }
    }
    false
}

/// Triggers a snapshot each time the log holds `limit` bytes more than the least it held
/// since the last one, until Raft stops. openraft then purges the log behind the snapshot,
/// as after one made by its entry count.
///
/// The log's size on disk counts from its purged point (a purge drops whole chunk files),
/// so it carries over restarts: the count starts from an empty log, not from the size the
/// log had when this process started, and a log that grew a little in each of many short
/// runs is snapshotted at the first look after it passed `limit`. A purge keeps the last
/// entries behind a snapshot for followers, so the log can stay above `limit` after one;
/// the next trigger then waits until it has grown by `limit` again (or, after a restart,
/// until there is something the last snapshot does not hold).
async fn snapshot_when_the_log_grows(raft: Raft, reader: StoreReader, limit: u64) {
    let mut interval = tokio::time::interval(LOG_SIZE_CHECK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut base = 0;
    loop {
        interval.tick().await;
        let bytes = reader.metrics().log_bytes;
        base = base.min(bytes);
        if bytes - base < limit {
            continue;
        }
        let (applied, snapshot) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            (metrics.last_applied, metrics.snapshot)
        };
        // Just after a start, the entries the log holds past the snapshot may not be
        // applied again yet: look again at the next tick rather than count them as done.
        if applied.map(|id| id.index) <= snapshot.map(|id| id.index) {
            continue;
        }
        tracing::info!(log_bytes = bytes, "the log has grown: taking a snapshot");
        if raft.trigger().snapshot().await.is_err() {
            return; // Raft has stopped.
        }
        base = bytes;
    }
}
