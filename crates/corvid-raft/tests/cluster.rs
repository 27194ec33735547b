//! Clusters of nodes in one process over the in-memory router (no sockets): forming,
//! forwarding, linearizable reads on followers, catch-up by snapshot, membership changes,
//! appends bounded in bytes, and elections after a leader stops or a server restarts.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corvid_core::{query, AccountId, Outcome, Token};
use corvid_raft::network::router::Router;
use corvid_raft::network::{LinkError, Links};
use corvid_raft::peer::{MembershipChange, PeerCall};
use corvid_raft::{Node, NodeConfig, NodeError, Peers, RaftTiming};
use corvid_store::typ::NodeId;
use corvid_store::{no_effects, ClientAddrs, ClusterId, Member};
use futures::future::BoxFuture;

use common::{alice_and_bob, send};

/// Bounds every wait for the cluster to reach a state.
const DEADLINE: Duration = Duration::from_secs(20);
const CLUSTER: ClusterId = ClusterId([7; 16]);
/// Quick elections, as a cluster on loopback runs them.
const TIMING: RaftTiming = RaftTiming {
    heartbeat_ms: 50,
    election_timeout_min_ms: 300,
    election_timeout_max_ms: 600,
};

fn member(id: NodeId) -> Member {
    Member {
        raft_addr: format!("node-{id}"),
        client: ClientAddrs {
            wire: Some(format!("127.0.0.1:{}", 7000 + id)),
            ..ClientAddrs::default()
        },
    }
}

fn members(ids: &[NodeId]) -> BTreeMap<NodeId, Member> {
    ids.iter().map(|id| (*id, member(*id))).collect()
}

/// Servers of one cluster, each in its own directory, over one router.
struct Cluster {
    router: Arc<Router>,
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    nodes: BTreeMap<NodeId, Node>,
    snapshot_every: u64,
    max_append_bytes: u64,
    /// Wraps each server's links (to watch what they send).
    wrap: fn(Arc<dyn Links>) -> Arc<dyn Links>,
    timing: RaftTiming,
}

impl Cluster {
    fn new(snapshot_every: u64) -> Cluster {
        Cluster {
            router: Router::new(),
            dirs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            snapshot_every,
            max_append_bytes: 1 << 20,
            wrap: |links| links,
            timing: TIMING,
        }
    }

    /// Opens server `id` (in its directory of any earlier run) and puts it on the router.
    async fn open(&mut self, id: NodeId) -> &Node {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().unwrap());
        let config = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            node_id: id,
            member: member(id),
            cluster_id: Some(CLUSTER),
            snapshot_every: self.snapshot_every,
            snapshot_log_bytes: corvid_raft::SNAPSHOT_LOG_BYTES,
            min_free_bytes: corvid_store::disk::DEFAULT_MIN_FREE_BYTES,
            peers: Peers::new((self.wrap)(self.router.links(id)), BTreeMap::new()),
            timing: self.timing,
            max_append_bytes: self.max_append_bytes,
        };
        let node = Node::open(config, no_effects()).await.unwrap();
        self.router.add(id, node.peer_service());
        self.nodes.insert(id, node);
        &self.nodes[&id]
    }

    /// Opens every server of `all`, one after the other.
    async fn start_all(&mut self, all: &[NodeId]) {
        for &id in all {
            self.start(id, all).await;
        }
    }

    /// Opens server `id` as `corvid serve` does for a configured member: a new one
    /// initializes the cluster with every configured member.
    async fn start(&mut self, id: NodeId, all: &[NodeId]) {
        let node = self.open(id).await;
        if !node.is_initialized().await.unwrap() {
            node.initialize(members(all)).await.unwrap();
        }
    }

    async fn stop(&mut self, id: NodeId) {
        self.router.remove(id);
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await.unwrap();
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    /// Waits until every running server knows the same leader; returns it.
    async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let leaders: Vec<Option<NodeId>> = self
                .nodes
                .values()
                .map(|n| n.raft().metrics().borrow().current_leader)
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader)) && self.nodes.contains_key(leader) {
                    return *leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the running servers other than `old` agree on a leader other than it.
    async fn new_leader(&self, old: NodeId) -> NodeId {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let leaders: Vec<Option<NodeId>> = self
                .nodes
                .iter()
                .filter(|(id, _)| **id != old)
                .map(|(_, n)| n.raft().metrics().borrow().current_leader)
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if *leader != old && leaders.iter().all(|l| *l == Some(*leader)) {
                    return *leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no new leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn follower(&self, leader: NodeId) -> NodeId {
        *self.nodes.keys().find(|id| **id != leader).unwrap()
    }

    async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

async fn unread_texts(node: &Node, account: AccountId) -> Result<Vec<String>, NodeError> {
    let texts = node
        .read(|t| query::fetch_unread(t, account, 1000))
        .await?
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    Ok(texts)
}

/// Whatever order the servers start in, one cluster forms, a follower's writes are
/// forwarded to the leader and applied once, and a restart of every server needs no step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cluster_forms_in_any_start_order_and_followers_forward_writes() {
    let all = [1, 2, 3];
    let mut cluster = Cluster::new(corvid_raft::SNAPSHOT_EVERY);
    // The last server of the list comes first, and is alone for a while: no quorum.
    cluster.start(3, &all).await;
    assert!(cluster
        .node(3)
        .wait_ready(Duration::from_millis(800))
        .await
        .is_err());
    cluster.start(1, &all).await;
    cluster.start(2, &all).await;
    let leader = cluster.leader().await;
    for node in cluster.nodes.values() {
        assert_eq!(node.cluster_id().unwrap(), Some(CLUSTER));
        let voters: Vec<NodeId> = node
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        assert_eq!(voters, all);
    }
    let follower = cluster.follower(leader);
    let alice = Token([1; 16]);
    let bob = alice_and_bob(cluster.node(follower), alice).await;
    for i in 0..20 {
        let outcome = cluster
            .node(follower)
            .write(send(alice, "bob", &format!("m{i}"), i + 1))
            .await
            .unwrap();
        assert!(matches!(
            outcome,
            Outcome::Sent {
                duplicate: false,
                ..
            }
        ));
    }
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for node in cluster.nodes.values() {
        assert_eq!(unread_texts(node, bob).await.unwrap(), expected);
    }

    // Every server restarts; nobody initializes anything; the same cluster resumes.
    let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
    for id in &ids {
        cluster.stop(*id).await;
    }
    for id in [2, 3, 1] {
        cluster.start(id, &all).await;
    }
    let leader = cluster.leader().await;
    let follower = cluster.follower(leader);
    cluster
        .node(follower)
        .write(send(alice, "bob", "after", 100))
        .await
        .unwrap();
    let mut expected = expected;
    expected.push("after".into());
    assert_eq!(
        unread_texts(cluster.node(follower), bob).await.unwrap(),
        expected
    );
    cluster.shutdown().await;
}

/// When the leader stops, the followers do not wait for openraft's election timers (they
/// are switched off here): once the leader lease has passed and the leader does not
/// answer, the follower with the longest log stands, and wins in the first round, even
/// when another follower has the higher id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_is_replaced_by_the_follower_with_the_longest_log_in_one_round() {
    let all = [1, 2, 3];
    let mut cluster = Cluster::new(corvid_raft::SNAPSHOT_EVERY);
    cluster.start_all(&all).await;
    let old = cluster.leader().await;
    let alice = Token([3; 16]);
    let bob = alice_and_bob(cluster.node(old), alice).await;
    let followers: Vec<NodeId> = all.iter().copied().filter(|id| *id != old).collect();
    let (longer, shorter) = (followers[0], followers[1]);
    // The follower with the higher id misses the last write.
    cluster.router.isolate(shorter);
    cluster
        .node(old)
        .write(send(alice, "bob", "last", 1))
        .await
        .unwrap();
    let term = cluster.node(old).raft().metrics().borrow().current_term;
    for node in cluster.nodes.values() {
        node.raft().runtime_config().elect(false);
    }
    cluster.stop(old).await;
    cluster.router.heal(shorter);

    let new = cluster.new_leader(old).await;
    assert_eq!(new, longer, "the follower with the longest log leads");
    for id in followers {
        let metrics = cluster.node(id).raft().metrics().borrow().clone();
        assert_eq!(metrics.current_term, term + 1, "server {id}: one round");
    }
    cluster
        .node(shorter)
        .write(send(alice, "bob", "after", 2))
        .await
        .unwrap();
    assert_eq!(
        unread_texts(cluster.node(shorter), bob).await.unwrap(),
        ["last", "after"]
    );
    cluster.shutdown().await;
}

/// A server that restarts is reached by the leader before its election timeout runs out,
/// so it never stands (and, once reached, never deposes the leader with its higher term):
/// the leader and the term stay the same through three restarts, with the cluster's
/// default timing, where a follower that knows a leader stands 250-300 ms after it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reached_before_it_stands_for_election() {
    let all = [1, 2, 3];
    let mut cluster = Cluster::new(corvid_raft::SNAPSHOT_EVERY);
    cluster.timing = RaftTiming {
        heartbeat_ms: 40,
        election_timeout_min_ms: 100,
        election_timeout_max_ms: 150,
    };
    cluster.start_all(&all).await;
    let leader = cluster.leader().await;
    let term = cluster.node(leader).raft().metrics().borrow().current_term;
    let alice = Token([4; 16]);
    alice_and_bob(cluster.node(leader), alice).await;
    let restarted = cluster.follower(leader);
    for round in 0..3 {
        cluster.stop(restarted).await;
        // Written while the server is down: the leader finds it unreachable.
        cluster
            .node(leader)
            .write(send(
                alice,
                "bob",
                &format!("while down {round}"),
                round + 1,
            ))
            .await
            .unwrap();
        let last = cluster
            .node(leader)
            .raft()
            .metrics()
            .borrow()
            .last_log_index;
        cluster.open(restarted).await;
        cluster
            .node(restarted)
            .raft()
            .wait(Some(DEADLINE))
            .applied_index_at_least(last, "caught up")
            .await
            .unwrap();
        for (id, node) in &cluster.nodes {
            let metrics = node.raft().metrics().borrow().clone();
            assert_eq!(
                (metrics.current_leader, metrics.current_term),
                (Some(leader), term),
                "server {id} after restart {round}"
            );
        }
    }
    cluster.shutdown().await;
}

/// A read on any server sees every write acknowledged before it began, across a change
/// of leader; a leader cut off from the others serves no read, rather than a stale one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_read_across_a_leader_change() {
    let all = [1, 2, 3];
    let mut cluster = Cluster::new(corvid_raft::SNAPSHOT_EVERY);
    cluster.start_all(&all).await;
    let old = cluster.leader().await;
    let alice = Token([2; 16]);
    let bob = alice_and_bob(cluster.node(old), alice).await;
    cluster
        .node(old)
        .write(send(alice, "bob", "before", 1))
        .await
        .unwrap();

    cluster.router.isolate(old);
    let new = cluster.new_leader(old).await;
    let follower = *all.iter().find(|id| **id != old && **id != new).unwrap();
    cluster
        .node(follower)
        .write(send(alice, "bob", "after", 2))
        .await
        .unwrap();
    for id in [new, follower] {
        assert_eq!(
            unread_texts(cluster.node(id), bob).await.unwrap(),
            ["before", "after"],
            "server {id}"
        );
    }
    // The old leader still believes it leads for a moment, and has not seen "after":
    // a read there must fail, not answer without it.
    match unread_texts(cluster.node(old), bob).await {
        Err(NodeError::Unavailable(_) | NodeError::NotLeader { .. }) => {}
        other => panic!("the cut-off leader answered a read: {other:?}"),
    }

    cluster.router.heal(old);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match unread_texts(cluster.node(old), bob).await {
            Ok(texts) => {
                assert_eq!(texts, ["before", "after"]);
                break;
            }
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
        }
    }
    cluster.shutdown().await;
}

/// A server down while the others wrote far past their snapshot (the log behind it
/// purged) catches up from a snapshot sent in chunks, and then serves reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_for_long_catches_up_by_snapshot() {
    let all = [1, 2, 3];
    let mut cluster = Cluster::new(10);
    cluster.start_all(&all).await;
    let leader = cluster.leader().await;
    let away = cluster.follower(leader);
    cluster.stop(away).await;
    let alice = Token([3; 16]);
    let bob = alice_and_bob(cluster.node(leader), alice).await;
    for i in 0..60 {
        cluster
            .node(leader)
            .write(send(alice, "bob", &format!("m{i}"), i + 1))
            .await
            .unwrap();
    }
    let purged = cluster
        .node(leader)
        .raft()
        .wait(Some(DEADLINE))
        .metrics(|m| m.purged.is_some(), "a purged log")
        .await
        .unwrap()
        .purged;
    assert!(purged.unwrap().index > 10, "{purged:?}");

    cluster.start(away, &all).await;
    let last = cluster
        .node(leader)
        .raft()
        .metrics()
        .borrow()
        .last_log_index;
    let caught_up = cluster
        .node(away)
        .raft()
        .wait(Some(DEADLINE))
        .metrics(
            |m| m.last_applied.map(|id| id.index) >= last && m.snapshot.is_some(),
            "caught up by a snapshot",
        )
        .await
        .unwrap();
    assert!(caught_up.snapshot.is_some());
    let expected: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    assert_eq!(
        unread_texts(cluster.node(away), bob).await.unwrap(),
        expected
    );
    cluster.shutdown().await;
}

/// A server is added (a learner until it has caught up, then a voter) and another is
/// removed; the removed one stops serving and the cluster goes on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_added_and_removed() {
    let all = [1, 2, 3];
    let mut cluster = Cluster::new(corvid_raft::SNAPSHOT_EVERY);
    cluster.start_all(&all).await;
    let leader = cluster.leader().await;
    let alice = Token([4; 16]);
    let bob = alice_and_bob(cluster.node(leader), alice).await;
    cluster
        .node(leader)
        .write(send(alice, "bob", "first", 1))
        .await
        .unwrap();

    // A new server is opened uninitialized, and added through a follower.
    cluster.open(4).await;
    let follower = cluster.follower(leader);
    cluster
        .node(follower)
        .change_membership(MembershipChange::Add {
            id: 4,
            member: member(4),
        })
        .await
        .unwrap();
    let voters: Vec<NodeId> = cluster
        .node(leader)
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, [1, 2, 3, 4]);
    assert_eq!(unread_texts(cluster.node(4), bob).await.unwrap(), ["first"]);

    // A follower is removed: it says so to whoever asks it, and the others go on.
    let removed = *all.iter().find(|id| **id != leader).unwrap();
    cluster
        .node(leader)
        .change_membership(MembershipChange::Remove { id: removed })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match unread_texts(cluster.node(removed), bob).await {
            Err(NodeError::Unavailable(reason)) if reason.contains("removed") => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "the removed server still serves: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cluster.node(removed).status().removed);
    match cluster
        .node(removed)
        .write(send(alice, "bob", "x", 99))
        .await
    {
        Err(NodeError::Unavailable(reason)) => assert!(reason.contains("removed"), "{reason}"),
        other => panic!("the removed server took a write: {other:?}"),
    }
    let stay = *[1, 2, 3, 4]
        .iter()
        .find(|id| **id != leader && **id != removed)
        .unwrap();
    cluster
        .node(stay)
        .write(send(alice, "bob", "second", 2))
        .await
        .unwrap();
    assert_eq!(
        unread_texts(cluster.node(4), bob).await.unwrap(),
        ["first", "second"]
    );
    cluster.shutdown().await;
}

/// The largest append body any server sent, watched on the way out.
static LARGEST_APPEND: AtomicUsize = AtomicUsize::new(0);

struct Watched(Arc<dyn Links>);

impl Links for Watched {
    fn call<'a>(
        &'a self,
        target: NodeId,
        address: &'a str,
        call: PeerCall,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, LinkError>> {
        if call == PeerCall::Append {
            LARGEST_APPEND.fetch_max(body.len(), Ordering::Relaxed);
        }
        self.0.call(target, address, call, body, timeout)
    }
}

/// A follower far behind is sent its entries in appends bounded in bytes, not only in
/// entries, and still catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_bounded_in_bytes() {
    let all = [1, 2, 3];
    let mut cluster = Cluster::new(corvid_raft::SNAPSHOT_EVERY);
    cluster.max_append_bytes = 64 << 10;
    cluster.wrap = |links| Arc::new(Watched(links));
    cluster.start_all(&all).await;
    let leader = cluster.leader().await;
    let behind = cluster.follower(leader);
    cluster.router.isolate(behind);
    let alice = Token([5; 16]);
    let bob = alice_and_bob(cluster.node(leader), alice).await;
    let text = "x".repeat(8000);
    for i in 0..40 {
        cluster
            .node(leader)
            .write(send(alice, "bob", &text, i + 1))
            .await
            .unwrap();
    }
    cluster.router.heal(behind);
    let last = cluster
        .node(leader)
        .raft()
        .metrics()
        .borrow()
        .last_log_index;
    cluster
        .node(behind)
        .raft()
        .wait(Some(DEADLINE))
        .applied_index_at_least(last, "caught up")
        .await
        .unwrap();
    assert_eq!(
        unread_texts(cluster.node(behind), bob).await.unwrap().len(),
        40
    );
    // 40 entries of 8 KB were owed; each append carried at most the limit and one entry.
    let largest = LARGEST_APPEND.load(Ordering::Relaxed);
    assert!(largest <= (64 << 10) + 9000, "an append of {largest} bytes");
    cluster.shutdown().await;
}
