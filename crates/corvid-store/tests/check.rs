//! `check_data_dir` on a store written through its own API: a snapshot, and a snapshot file
//! damaged on disk.

use std::collections::BTreeSet;
use std::path::Path;

use corvid_core::{AccountId, Command, SessionPolicy, Token};
use corvid_store::check::check_data_dir;
use corvid_store::typ::{Entry, EntryPayload, LogId, Membership, Vote};
use corvid_store::{no_effects, Store, SNAPSHOT_DIR};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, RaftSnapshotBuilder};

fn entry(index: u64, payload: EntryPayload) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload,
    }
}

/// alice and bob, alice logged in, and one message from alice to bob, as log entries 1..=5.
fn conversation() -> Vec<Entry> {
    let create = |name: &str| Command::CreateAccount {
        username: name.into(),
        display_name: String::new(),
        password_hash: "$argon2id$fake".into(),
        now: 10,
    };
    let session = Token([1; 16]).session_key();
    let commands = vec![
        create("alice"),
        create("bob"),
        Command::Login {
            account: AccountId(1),
            session,
            policy: SessionPolicy::default(),
            now: 11,
        },
        Command::Send {
            session,
            to: "bob".into(),
            text: "kept in the snapshot".into(),
            client_id: 0,
            now: 12,
        },
    ];
    let members = BTreeSet::from([1u64]);
    let mut entries = vec![entry(
        1,
        EntryPayload::Membership(Membership::new(vec![members], None)),
    )];
    for (i, command) in commands.into_iter().enumerate() {
        entries.push(entry(2 + i as u64, EntryPayload::Normal(vec![command])));
    }
    entries
}

fn problems(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let summary = check_data_dir(dir, &mut |line| found.push(line)).unwrap();
    assert_eq!(summary.problems as usize, found.len());
    found
}

#[tokio::test]
async fn a_damaged_row_of_the_current_snapshot_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let Store {
            mut log,
            mut state_machine,
            reader,
            closed,
        } = Store::open(dir.path(), no_effects()).unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.blocking_append(conversation()).await.unwrap();
        state_machine.apply(conversation()).await.unwrap();
        let mut builder = state_machine.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
        drop((log, state_machine, reader, builder));
        closed.wait().await;
    }
    assert_eq!(problems(dir.path()), Vec::<String>::new());

    let snapshots = dir.path().join(SNAPSHOT_DIR);
    let file = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "snap"))
        .expect("a snapshot file");
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = b"kept in the snapshot";
    let at = bytes
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("the message is in the snapshot");
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();

    let found = problems(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("snapshot ") && found[0].ends_with(": message 1: checksum mismatch"),
        "{found:?}"
    );
}
