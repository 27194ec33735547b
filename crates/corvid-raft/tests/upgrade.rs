//! A data directory made by an earlier Corvid still opens, and keeps everything it holds.
//!
//! `fixtures/v1-single-server/` is a real data directory written by the code of commit
//! 707c149 (data-format version 1, before the member record and the format version): a
//! single server (node 1, its address `127.0.0.1:7000` in openraft's `BasicNode`) that
//! created alice and bob, logged alice in (token `[1; 16]`), sent bob "before the snapshot
//! 1..3", took a snapshot, sent "after the snapshot 4..5" and shut down. So its `BasicNode`
//! is in the log's first membership entry, in the state meta's membership and snapshot
//! record, and in the snapshot file's header. Two things keep it small: the log chunk's
//! zero tail is cut (as opening the log does anyway), and `state.redb`, mostly zeros, is
//! kept as its non-zero runs in `state.redb.sparse` (see [`unpack`]).

mod common;

use std::path::Path;

use corvid_core::{query, AccountId, Command, MessageId, Outcome, Token};
use corvid_raft::Node;
use corvid_store::{no_effects, ClientAddrs, Member};

use common::{config, start};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/v1-single-server"
);

/// Copies the fixture into `dir`, writing `state.redb` back from its non-zero runs:
/// a u64 file length, then (u64 offset, u32 length, bytes) per run, little-endian.
fn unpack(dir: &Path) {
    for sub in ["log", "snapshots"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for item in std::fs::read_dir(Path::new(FIXTURE).join(sub)).unwrap() {
            let item = item.unwrap();
            std::fs::copy(item.path(), dir.join(sub).join(item.file_name())).unwrap();
        }
    }
    let sparse = std::fs::read(Path::new(FIXTURE).join("state.redb.sparse")).unwrap();
    let u64_at = |at: usize| u64::from_le_bytes(sparse[at..at + 8].try_into().unwrap()) as usize;
    let mut state = vec![0u8; u64_at(0)];
    let mut at = 8;
    while at < sparse.len() {
        let offset = u64_at(at);
        let len = u32::from_le_bytes(sparse[at + 8..at + 12].try_into().unwrap()) as usize;
        state[offset..offset + len].copy_from_slice(&sparse[at + 12..at + 12 + len]);
        at += 12 + len;
    }
    std::fs::write(dir.join("state.redb"), state).unwrap();
}

async fn bobs_unread(node: &Node) -> Vec<String> {
    node.read(|t| query::fetch_unread(t, AccountId(2), 100))
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect()
}

fn send(text: &str, client_id: u64) -> Command {
    Command::Send {
        session: Token([1; 16]).session_key(),
        to: "bob".into(),
        text: text.into(),
        client_id,
        now: 3_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_made_before_member_records_opens_with_all_it_held() {
    let dir = tempfile::tempdir().unwrap();
    unpack(dir.path());
    let old_member = Member {
        raft_addr: "127.0.0.1:7000".into(),
        client: ClientAddrs::default(),
    };
    let expected = [
        "before the snapshot 1",
        "before the snapshot 2",
        "before the snapshot 3",
        "after the snapshot 4",
        "after the snapshot 5",
    ];

    let node = start(config(dir.path()), no_effects()).await.unwrap();
    let metrics = node.raft().metrics().borrow().clone();
    // The old membership (from the log or the state meta) and snapshot (meta and file).
    assert_eq!(
        metrics.membership_config.membership().get_node(&1),
        Some(&old_member)
    );
    assert_eq!(metrics.snapshot.map(|id| id.index), Some(7));
    assert_eq!(bobs_unread(&node).await, expected);
    // Alice's session survived, and a retried send still finds its original.
    assert!(matches!(
        node.write(send("before the snapshot 1", 1)).await.unwrap(),
        Outcome::Sent {
            duplicate: true,
            ..
        }
    ));
    let Outcome::Sent { message, .. } = node.write(send("after the upgrade", 6)).await.unwrap()
    else {
        panic!("not sent")
    };
    assert_eq!(message.id, MessageId(6));
    // An old directory is a single server's: it gets a cluster id at its first open.
    let cluster = node.cluster_id().unwrap().expect("a cluster id");
    // A snapshot now writes the membership in the new layout; the old one is replaced.
    node.raft().trigger().snapshot().await.unwrap();
    node.raft()
        .wait(Some(common::READY_DEADLINE))
        .metrics(
            |m| m.snapshot.is_some_and(|id| id.index > 7),
            "a new snapshot",
        )
        .await
        .unwrap();
    node.shutdown().await.unwrap();

    // And the upgraded directory opens again, as itself.
    let node = start(config(dir.path()), no_effects()).await.unwrap();
    assert_eq!(node.cluster_id().unwrap(), Some(cluster));
    let mut now_expected = expected.to_vec();
    now_expected.push("after the upgrade");
    assert_eq!(bobs_unread(&node).await, now_expected);
    let membership = node.raft().metrics().borrow().membership_config.clone();
    assert_eq!(membership.membership().get_node(&1), Some(&old_member));
    node.shutdown().await.unwrap();
}
