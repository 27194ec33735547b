//! A cluster server whose data directory is lost (a disk replaced, a directory wiped) and
//! that is started again with the same id, on real `corvid serve` processes: it must not
//! form a second cluster, crash its leader, or help elect a server that lacks messages it
//! had acknowledged; it learns the log from the leader and serves again. A server started
//! on another member's data directory refuses to start.

#[macro_use]
mod common;
#[path = "common/cluster.rs"]
mod cluster;

use std::time::Duration;

use cluster::{eventually, one_cluster, ProcessCluster};
use common::PASSWORD;
use corvid_client::{Client, ClientConfig};
use corvid_core::Token;

const SERVERS: usize = 3;

/// A client of the servers `servers` only, that keeps trying through elections.
async fn client_of(cluster: &ProcessCluster, servers: &[usize]) -> Client {
    let addresses: Vec<String> = servers
        .iter()
        .map(|i| cluster.ports[*i].wire.to_string())
        .collect();
    let mut config = ClientConfig::new(&addresses);
    config.request_timeout = Duration::from_secs(3);
    config.connect_timeout = Duration::from_secs(1);
    config.max_attempts = 30;
    config.max_backoff = Duration::from_millis(300);
    Client::connect_with(config)
        .await
        .expect("connect to the cluster")
}

/// The texts of alice's messages to bob, oldest first, as bob reads them.
async fn texts_to_bob(client: &Client, bob: Token) -> Vec<String> {
    let mut texts = Vec::new();
    let mut before = None;
    loop {
        let page = client
            .history(bob, "alice", before, Some(100))
            .await
            .expect("history");
        texts.splice(
            0..0,
            page.messages
                .iter()
                .filter(|m| m.from == "alice")
                .map(|m| m.text.clone()),
        );
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    texts
}

/// Alice sends `texts` to bob, each acknowledged before the next.
async fn send_all(client: &Client, alice: Token, texts: &[String], first_id: u64) {
    for (n, text) in texts.iter().enumerate() {
        client
            .send(alice, "bob", text, first_id + n as u64)
            .await
            .expect("an acknowledged send");
    }
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix} {n}")).collect()
}

/// A follower's data directory is wiped and the follower started again: the leader goes on
/// leading (it used to panic when a follower's log went back), no second cluster forms,
/// and the follower learns every message and serves them.
#[test]
fn a_server_whose_data_was_wiped_catches_up_and_the_cluster_goes_on() {
    let _one = one_cluster();
    wiped_follower_catches_up();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ProcessCluster::start(dir.path(), SERVERS).await;
    let everyone: Vec<usize> = (0..SERVERS).collect();
    let setup = client_of(&cluster, &everyone).await;
    for name in ["alice", "bob"] {
        setup.create_account(name, "", PASSWORD).await.unwrap();
    }
    let alice = setup.login("alice", PASSWORD).await.unwrap().token;
    let before = numbered("before the wipe", 20);
    send_all(&setup, alice, &before, 1).await;

    let leader = cluster.wait_for_leader().await;
    let wiped = (leader + 1) % SERVERS;
    let other = (leader + 2) % SERVERS;
    cluster.kill(wiped);
    std::fs::remove_dir_all(cluster.data_path(wiped)).unwrap();
    cluster.restart(wiped);

    // Every server, the wiped one included, reaches the same applied index, in one cluster
    // whose leader did not stop.
    let caught_up = eventually(Duration::from_secs(30), || {
        let applied = cluster.applied_indexes(wiped);
        applied.len() == SERVERS && applied.values().all(|a| Some(a) == applied.values().next())
    })
    .await;
    for i in 0..SERVERS {
        assert!(
            !cluster.has_exited(i),
            "server {} stopped after a follower came back with no data; its log:\n{}",
            i + 1,
            cluster.log(i)
        );
    }
    assert!(
        caught_up,
        "the wiped server did not catch up: {:?}",
        cluster.applied_indexes(wiped)
    );
    let status = String::from_utf8_lossy(&cluster.status(wiped).stdout).to_string();
    assert!(
        status.starts_with(&format!("leader {} ", leader + 1))
            && status.contains("voters [1, 2, 3]"),
        "one cluster, same leader: {status}"
    );

    // With the other follower down, the leader commits only with the wiped server's
    // appends, and the wiped server serves every message, old and new.
    cluster.kill(other);
    let through_wiped = client_of(&cluster, &[wiped]).await;
    let after = numbered("after the wipe", 5);
    send_all(&through_wiped, alice, &after, 100).await;
    let bob = through_wiped.login("bob", PASSWORD).await.unwrap().token;
    let expected: Vec<String> = before.iter().chain(after.iter()).cloned().collect();
    assert_eq!(texts_to_bob(&through_wiped, bob).await, expected);
}

/// Messages are acknowledged by the leader and one follower while the third server is cut
/// off. Then the leader and that follower go down, and the follower comes back with its
/// data directory wiped, beside the server that never got the messages. The wiped server
/// must not vote for it (with an empty log it would, and the messages would be overwritten
/// once the old leader returns): the two wait, and when the old leader is back, every
/// acknowledged message is there.
#[test]
fn a_server_that_lost_its_data_helps_elect_no_leader_until_it_has_caught_up() {
    let _one = one_cluster();
    lost_data_does_not_vote();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn lost_data_does_not_vote() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ProcessCluster::start(dir.path(), SERVERS).await;
    let everyone: Vec<usize> = (0..SERVERS).collect();
    let setup = client_of(&cluster, &everyone).await;
    for name in ["alice", "bob"] {
        setup.create_account(name, "", PASSWORD).await.unwrap();
    }
    let leader = cluster.wait_for_leader().await;
    let wiped = (leader + 1) % SERVERS;
    let behind = (leader + 2) % SERVERS;

    cluster.partition(&[behind]);
    let majority = client_of(&cluster, &[leader, wiped]).await;
    let alice = majority.login("alice", PASSWORD).await.unwrap().token;
    let acknowledged = numbered("while cut off", 10);
    send_all(&majority, alice, &acknowledged, 1).await;
    drop(majority);

    cluster.kill(leader);
    cluster.kill(wiped);
    std::fs::remove_dir_all(cluster.data_path(wiped)).unwrap();
    cluster.heal();
    let _ready = cluster.restart_unready(wiped);
    // Either the two elect a leader (the wiped server voting with its empty log) or the
    // wiped server says it waits to catch up before voting.
    let settled = eventually(Duration::from_secs(30), || {
        cluster.leader().is_some() || cluster.log(wiped).contains("voting only once caught up")
    })
    .await;
    assert!(
        settled,
        "neither a leader nor a wiped server holding its vote"
    );

    cluster.restart(leader);
    cluster.wait_for_leader().await;
    let reader = client_of(&cluster, &everyone).await;
    let bob = reader.login("bob", PASSWORD).await.unwrap().token;
    assert_eq!(
        texts_to_bob(&reader, bob).await,
        acknowledged,
        "every acknowledged message survives a server that lost its data"
    );
    // And the wiped server has caught up and serves them too.
    let through_wiped = client_of(&cluster, &[wiped]).await;
    assert_eq!(texts_to_bob(&through_wiped, bob).await, acknowledged);
}

/// Two followers' data directories are swapped while they are down: each is another
/// member's, holding that member's vote and log. A server started on one refuses, with one
/// line saying what to do, rather than cast the other member's vote again.
#[test]
fn a_server_started_on_another_members_data_directory_refuses_with_one_line() {
    let _one = one_cluster();
    swapped_directories_are_refused();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ProcessCluster::start(dir.path(), SERVERS).await;
    let leader = cluster.wait_for_leader().await;
    let (first, second) = ((leader + 1) % SERVERS, (leader + 2) % SERVERS);
    cluster.kill(first);
    cluster.kill(second);
    let aside = dir.path().join("aside");
    std::fs::rename(cluster.data_path(first), &aside).unwrap();
    std::fs::rename(cluster.data_path(second), cluster.data_path(first)).unwrap();
    std::fs::rename(&aside, cluster.data_path(second)).unwrap();

    let _ready = cluster.restart_unready(first);
    let refused = eventually(Duration::from_secs(20), || cluster.has_exited(first)).await;
    let log = cluster.log(first);
    assert!(
        refused,
        "a server on another member's directory started; its log:\n{log}"
    );
    let expected = format!(
        "the data directory is member {}'s, not member {}'s",
        second + 1,
        first + 1
    );
    assert_eq!(
        log.lines().filter(|line| line.contains(&expected)).count(),
        1,
        "one line saying whose directory it is; the log:\n{log}"
    );
}
