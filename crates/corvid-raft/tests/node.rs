//! A single-server node, in process: writes, linearizable reads, restarts, concurrency.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corvid_core::{query, AccountId, Command, Effect, MessageId, Outcome, Token};
mod common;

use common::{alice_and_bob, config, create, login, send, start};
use corvid_raft::{Node, NodeConfig, NodeError};
use corvid_store::{no_effects, ClusterId, EffectSink};

fn sent_id(outcome: Outcome) -> MessageId {
    match outcome {
        Outcome::Sent {
            message,
            duplicate: false,
        } => message.id,
        other => panic!("not sent: {other:?}"),
    }
}

async fn unread_texts(node: &Node, account: AccountId) -> Vec<String> {
    node.read(|t| query::fetch_unread(t, account, 1000))
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect()
}

#[tokio::test]
async fn writes_and_reads_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Token([1; 16]);
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let sink_pushed = pushed.clone();
    let effects: EffectSink =
        Arc::new(move |effects: &[Effect]| sink_pushed.lock().unwrap().extend_from_slice(effects));

    let node = start(config(dir.path()), effects).await.unwrap();
    assert_eq!(node.raft().current_leader().await, Some(1));
    let bob = alice_and_bob(&node, alice).await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(sent_id(
            node.write(send(alice, "bob", text, 0)).await.unwrap(),
        ));
    }
    assert_eq!(ids, [MessageId(1), MessageId(2), MessageId(3)]);
    assert_eq!(unread_texts(&node, bob).await, ["one", "two", "three"]);
    let pushed_ids: Vec<MessageId> = pushed
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Effect::Message { to, message } if *to == bob => Some(message.id),
            _ => None,
        })
        .collect();
    assert_eq!(pushed_ids, ids);
    let last_log = node.raft().metrics().borrow().last_log_index;
    node.shutdown().await.unwrap();
    // Shutting down twice is harmless, and the node refuses work once down.
    node.shutdown().await.unwrap();
    assert!(matches!(
        node.write(send(alice, "bob", "late", 0)).await,
        Err(NodeError::Unavailable(_))
    ));

    let node = start(config(dir.path()), no_effects()).await.unwrap();
    let metrics = node.raft().metrics().borrow().clone();
    assert_eq!(metrics.current_leader, Some(1));
    assert!(metrics.last_log_index >= last_log, "the log is intact");
    assert_eq!(unread_texts(&node, bob).await, ["one", "two", "three"]);
    let (id, name) = node
        .read(|t| query::authenticate(t, &alice.session_key(), 3_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((id, name.as_str()), (AccountId(1), "alice"));
    // New writes continue after the old ones.
    let next = sent_id(node.write(send(alice, "bob", "four", 0)).await.unwrap());
    assert_eq!(next, MessageId(4));
    assert_eq!(
        unread_texts(&node, bob).await,
        ["one", "two", "three", "four"]
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(config(dir.path()), no_effects()).await.unwrap();
    let second = Node::open(config(dir.path()), no_effects()).await;
    assert!(matches!(second, Err(NodeError::Store(_))));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_all_land_and_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Token([7; 16]);
    let node = Arc::new(start(config(dir.path()), no_effects()).await.unwrap());
    let bob = alice_and_bob(&node, alice).await;

    let writes = 500usize;
    let before = node.store_metrics();
    let mut tasks = Vec::new();
    for i in 0..writes {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            node.write(send(alice, "bob", &format!("message {i}"), 0))
                .await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(sent_id(task.await.unwrap().unwrap()));
    }
    let after = node.store_metrics();

    ids.sort();
    let expected: Vec<MessageId> = (1..=writes as u64).map(MessageId).collect();
    assert_eq!(ids, expected, "every message got its own id, none lost");
    assert_eq!(unread_texts(&node, bob).await.len(), writes);
    let commits = after.log_commits - before.log_commits;
    eprintln!(
        "{writes} writes: {commits} fsync'd log commits, {} appends, {} apply batches",
        after.log_appends - before.log_appends,
        after.apply_batches - before.apply_batches,
    );
    assert!(
        (commits as usize) < writes,
        "{writes} writes took {commits} log commits"
    );
    node.shutdown().await.unwrap();
}

/// A crash after an entry is committed (its fsync done) but before its application became
/// durable leaves the entry in the log only. The next start re-applies it.
#[tokio::test]
async fn committed_entries_missing_from_the_state_are_reapplied_at_start() {
    use corvid_store::typ::{Entry, EntryPayload, LogId, Membership, Vote};
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::CommittedLeaderId;

    let dir = tempfile::tempdir().unwrap();
    let alice = Token([3; 16]);
    let log_id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
    let normal = |index, commands: Vec<Command>| Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(commands),
    };
    {
        let store = corvid_store::Store::open(dir.path(), no_effects()).unwrap();
        let mut log = store.log;
        let members = std::collections::BTreeSet::from([1u64]);
        let entries = vec![
            // `initialize` writes the first membership at index 0.
            Entry {
                log_id: log_id(0),
                payload: EntryPayload::Membership(Membership::new(vec![members], None)),
            },
            normal(1, vec![create("alice"), create("bob")]),
            normal(2, vec![login(AccountId(1), alice)]),
            normal(3, vec![send(alice, "bob", "from the log", 0)]),
        ];
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        log.blocking_append(entries).await.unwrap();
        log.save_committed(Some(log_id(3))).await.unwrap();
        log.sync().await.unwrap();
        assert_eq!(store.reader.last_applied().unwrap(), None);
        drop((log, store.state_machine, store.reader));
        store.closed.wait().await;
    }
    let node = start(config(dir.path()), no_effects()).await.unwrap();
    assert_eq!(unread_texts(&node, AccountId(2)).await, ["from the log"]);
    let next = sent_id(node.write(send(alice, "bob", "after", 0)).await.unwrap());
    assert_eq!(next, MessageId(2));
    node.shutdown().await.unwrap();
}

/// Entries vary in size, so the entry count alone does not bound the log: once it has grown
/// by `snapshot_log_bytes`, a snapshot is taken (and the log can be purged behind it) long
/// before `snapshot_every` entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_log_is_snapshotted_by_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        snapshot_log_bytes: 64 << 10,
        ..config(dir.path())
    };
    let node = start(config, no_effects()).await.unwrap();
    let alice = Token([5; 16]);
    alice_and_bob(&node, alice).await;
    assert_eq!(node.raft().metrics().borrow().snapshot, None);
    let text = "x".repeat(1000);
    for _ in 0..100 {
        node.write(send(alice, "bob", &text, 0)).await.unwrap();
    }
    let log_bytes = node.store_metrics().log_bytes;
    assert!(log_bytes > 100 << 10, "the log holds {log_bytes} bytes");
    let snapshot = node
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some(), "a snapshot")
        .await
        .unwrap()
        .snapshot;
    let last_log = node.raft().metrics().borrow().last_log_index.unwrap();
    assert!(last_log < corvid_raft::SNAPSHOT_EVERY, "{last_log} entries");
    assert!(snapshot.unwrap().index > 3, "{snapshot:?}");
    node.shutdown().await.unwrap();
}

/// The size trigger counts the log since its purged point, not since the process started:
/// a log that grows by less than `snapshot_log_bytes` in each of many short runs is
/// snapshotted as soon as a run starts with more than that unsnapshotted, so what a
/// restart has to replay stays bounded however often the server restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_grown_over_many_restarts_is_snapshotted_by_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 << 10;
    let config = NodeConfig {
        snapshot_log_bytes: limit,
        ..config(dir.path())
    };
    let alice = Token([6; 16]);
    let text = "x".repeat(4000);
    let mut runs_over_the_limit = 0;
    for run in 0..8 {
        let node = start(config.clone(), no_effects()).await.unwrap();
        let metrics = node.raft().metrics().borrow().clone();
        let at_open = node.store_metrics().log_bytes;
        if at_open >= limit {
            // Everything earlier runs wrote is in a snapshot soon after the start.
            runs_over_the_limit += 1;
            let last = metrics.last_log_index.unwrap();
            node.raft()
                .wait(Some(Duration::from_secs(10)))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= last),
                    "a snapshot of the earlier runs",
                )
                .await
                .unwrap_or_else(|e| panic!("run {run}, {at_open} log bytes at start: {e}"));
        }
        if run == 0 {
            alice_and_bob(&node, alice).await;
        }
        for _ in 0..6 {
            node.write(send(alice, "bob", &text, 0)).await.unwrap();
        }
        let grown = node.store_metrics().log_bytes - at_open;
        assert!(grown < limit, "run {run} grew the log by {grown} bytes");
        node.shutdown().await.unwrap();
    }
    assert!(runs_over_the_limit >= 4, "{runs_over_the_limit} runs");
}

/// Pushes are handed out before the state transaction commits (the entry is already in the
/// log), so a push can come before the state shows its message; a linearizable read made on
/// receiving the push waits for the commit and sees the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_precedes_the_state_commit_and_a_read_after_it_sees_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Token([1; 16]);
    let (pushes, mut pushed) = tokio::sync::mpsc::unbounded_channel();
    let effects: EffectSink = Arc::new(move |effects: &[Effect]| {
        for effect in effects {
            if let Effect::Message { message, .. } = effect {
                let _ = pushes.send(message.id);
                // Hold the commit back while the test reads.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    });
    let node = Arc::new(start(config(dir.path()), effects).await.unwrap());
    let bob = alice_and_bob(&node, alice).await;
    let unread_ids = |t: &dyn corvid_core::Tables| {
        query::fetch_unread(t, bob, 10).map(|m| m.into_iter().map(|m| m.id).collect::<Vec<_>>())
    };
    for round in 0..3 {
        let writer = node.clone();
        let write = tokio::spawn(async move { writer.write(send(alice, "bob", "hi", 0)).await });
        let id = pushed.recv().await.unwrap();
        let before_commit = node.read_local(unread_ids).unwrap().unwrap();
        assert!(
            !before_commit.contains(&id),
            "round {round}: the push came after the commit"
        );
        let read = node.read(unread_ids).await.unwrap().unwrap();
        assert!(read.contains(&id), "round {round}: {read:?} lacks {id:?}");
        assert_eq!(sent_id(write.await.unwrap().unwrap()), id);
    }
    node.shutdown().await.unwrap();
}

/// Opening a node decides nothing: a fresh one stays uninitialized and leaderless (writes
/// are refused, not queued) until its caller initializes it, so that a server meant to join
/// a cluster never founds one of its own, and a server can bind its listeners first.
#[tokio::test]
async fn open_neither_initializes_nor_waits_for_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path()), no_effects()).await.unwrap();
    assert!(!node.is_initialized().await.unwrap());
    assert_eq!(node.cluster_id().unwrap(), None);
    assert_eq!(node.raft().metrics().borrow().current_leader, None);
    assert!(matches!(
        node.write(create("alice")).await,
        Err(NodeError::NotLeader { leader: None })
    ));
    assert!(matches!(
        node.wait_ready(Duration::from_millis(200)).await,
        Err(NodeError::Unavailable(_))
    ));

    let cluster = node.initialize_alone().await.unwrap();
    node.wait_ready(common::READY_DEADLINE).await.unwrap();
    assert_eq!(node.cluster_id().unwrap(), Some(cluster));
    assert!(matches!(
        node.write(create("alice")).await.unwrap(),
        Outcome::AccountCreated { .. }
    ));
    // The member record went into the membership as given.
    let metrics = node.raft().metrics().borrow().clone();
    let member = metrics.membership_config.membership().get_node(&1).cloned();
    assert_eq!(member, Some(config(dir.path()).member));
    node.shutdown().await.unwrap();

    // Reopened, it resumes (no second initialization) and leads again, same cluster.
    let node = Node::open(config(dir.path()), no_effects()).await.unwrap();
    assert!(node.is_initialized().await.unwrap());
    node.wait_ready(common::READY_DEADLINE).await.unwrap();
    assert_eq!(node.cluster_id().unwrap(), Some(cluster));
    assert_eq!(node.initialize_alone().await.unwrap(), cluster);
    node.shutdown().await.unwrap();
}

/// A node configured for one cluster refuses a data directory of another, before Raft
/// reads anything of it; with no cluster configured it takes the directory's.
#[tokio::test]
async fn a_data_directory_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ClusterId([1; 16]);
    let theirs = ClusterId([2; 16]);
    let configured = |cluster_id| NodeConfig {
        cluster_id,
        ..config(dir.path())
    };
    let node = start(configured(Some(ours)), no_effects()).await.unwrap();
    assert_eq!(node.cluster_id().unwrap(), Some(ours), "the configured id");
    node.shutdown().await.unwrap();

    let refused = Node::open(configured(Some(theirs)), no_effects()).await;
    match refused {
        Err(e @ NodeError::WrongCluster { .. }) => assert_eq!(
            e.to_string(),
            format!("the data directory belongs to cluster {ours}, not to cluster {theirs}")
        ),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("another cluster's directory was opened"),
    }
    // The refusal released the directory, and changed nothing.
    for cluster_id in [Some(ours), None] {
        let node = start(configured(cluster_id), no_effects()).await.unwrap();
        assert_eq!(node.cluster_id().unwrap(), Some(ours));
        node.shutdown().await.unwrap();
    }
}
