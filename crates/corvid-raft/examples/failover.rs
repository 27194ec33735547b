//! Failover time of an in-process cluster over the in-memory router: the leader is cut off
//! from every other server (to them, as if it had been killed), and a write through another
//! server is timed until it is acknowledged. Prints each trial and the median and maximum.
//!
//! `cargo run --release -p corvid-raft --example failover -- [servers] [trials]
//! [heartbeat_ms] [election_min_ms] [election_max_ms]` (defaults: 3 20 50 150 300, the
//! `[cluster]` defaults). Figures are in docs/benchmarks.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use corvid_core::{Command, Outcome, SessionPolicy, Token};
use corvid_raft::network::router::Router;
use corvid_raft::{Node, NodeConfig, Peers, RaftTiming};
use corvid_store::{no_effects, ClientAddrs, ClusterId, Member};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

fn arg(index: usize, default: u64) -> u64 {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn member(id: u64) -> Member {
    Member {
        raft_addr: format!("node-{id}"),
        client: ClientAddrs::default(),
    }
}

/// The leader all servers but `cut` agree on, other than `cut`.
async fn leader_without(nodes: &BTreeMap<u64, Node>, cut: Option<u64>) -> u64 {
    loop {
        let leaders: Vec<Option<u64>> = nodes
            .iter()
            .filter(|(id, _)| Some(**id) != cut)
            .map(|(_, n)| n.raft().metrics().borrow().current_leader)
            .collect();
        if let Some(Some(leader)) = leaders.first() {
            if Some(*leader) != cut && leaders.iter().all(|l| *l == Some(*leader)) {
                return *leader;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let size = arg(1, 3);
    let trials = arg(2, 20);
    let timing = RaftTiming {
        heartbeat_ms: arg(3, 50),
        election_timeout_min_ms: arg(4, 150),
        election_timeout_max_ms: arg(5, 300),
    };
    let router = Router::new();
    let root = tempfile::tempdir().unwrap();
    let all: BTreeMap<u64, Member> = (1..=size).map(|id| (id, member(id))).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=size {
        let config = NodeConfig {
            data_dir: root.path().join(format!("node-{id}")),
            node_id: id,
            member: member(id),
            cluster_id: Some(ClusterId([3; 16])),
            snapshot_every: corvid_raft::SNAPSHOT_EVERY,
            snapshot_log_bytes: corvid_raft::SNAPSHOT_LOG_BYTES,
            min_free_bytes: corvid_store::disk::DEFAULT_MIN_FREE_BYTES,
            peers: Peers::new(router.links(id), BTreeMap::new()),
            timing,
            max_append_bytes: 1 << 20,
        };
        let node = Node::open(config, no_effects()).await.unwrap();
        node.initialize(all.clone()).await.unwrap();
        router.add(id, node.peer_service());
        nodes.insert(id, node);
    }
    let leader = leader_without(&nodes, None).await;
    let create = Command::CreateAccount {
        username: "alice".into(),
        display_name: "alice".into(),
        password_hash: HASH.into(),
        now: 1,
    };
    let Outcome::AccountCreated { account, .. } = nodes[&leader].write(create).await.unwrap()
    else {
        panic!("alice not created")
    };
    let token = Token([1; 16]);
    let login = Command::Login {
        account,
        session: token.session_key(),
        policy: SessionPolicy::default(),
        now: 1,
    };
    nodes[&leader].write(login).await.unwrap();

    println!(
        "{size} servers, heartbeat {} ms, election timeout {}-{} ms",
        timing.heartbeat_ms, timing.election_timeout_min_ms, timing.election_timeout_max_ms
    );
    let mut times = Vec::new();
    for trial in 0..trials {
        let leader = leader_without(&nodes, None).await;
        let through = *nodes.keys().find(|id| **id != leader).unwrap();
        router.isolate(leader);
        let cut_at = Instant::now();
        let touch = Command::Touch {
            session: token.session_key(),
            now: 2 + trial,
        };
        let elected = {
            let nodes = &nodes;
            async move {
                let new = leader_without(nodes, Some(leader)).await;
                (new, cut_at.elapsed())
            }
        };
        let (written, (new, elected)) = tokio::join!(nodes[&through].write(touch), elected);
        let took = cut_at.elapsed();
        if let Err(e) = written {
            println!("trial {trial:>2}: the write failed: {e}");
        }
        println!(
            "trial {trial:>2}: leader {leader} cut off, new leader {new} known after {:>4} ms, write acknowledged after {:>4} ms",
            elected.as_millis(),
            took.as_millis()
        );
        times.push(took);
        router.heal(leader);
        // Let the old leader learn the new term before the next trial.
        leader_without(&nodes, None).await;
    }
    times.sort();
    println!(
        "failover over {trials} trials: median {} ms, max {} ms",
        times[times.len() / 2].as_millis(),
        times[times.len() - 1].as_millis()
    );
    for node in nodes.values() {
        node.shutdown().await.unwrap();
    }
}
