//! The store's own guarantees, beyond openraft's suite: what survives a reopen, what a
//! batch applies and emits, and that appended entries are readable before their fsync.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use corvid_core::query;
use corvid_core::{AccountId, Command, Effect, MessageId, Outcome, SessionPolicy, Table, Token};
use corvid_store::typ::{
    Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use corvid_store::{no_effects, EffectSink, Store, StoreError, FORMAT_VERSION};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, RaftLogReader, RaftSnapshotBuilder};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(vec![command]),
    }
}

/// Several commands proposed together in one entry.
fn batch_entry(term: u64, index: u64, commands: Vec<Command>) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(commands),
    }
}

fn membership_entry(term: u64, index: u64) -> Entry {
    let members = BTreeSet::from([1u64]);
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![members], None)),
    }
}

fn create(name: &str, now: u64) -> Command {
    Command::CreateAccount {
        username: name.into(),
        display_name: name.into(),
        password_hash: HASH.into(),
        now,
    }
}

fn token(n: u8) -> Token {
    Token([n; 16])
}

fn login(account: u64, n: u8, now: u64) -> Command {
    Command::Login {
        account: AccountId(account),
        session: token(n).session_key(),
        policy: SessionPolicy::default(),
        now,
    }
}

fn send(n: u8, to: &str, text: &str, now: u64) -> Command {
    Command::Send {
        session: token(n).session_key(),
        to: to.into(),
        text: text.into(),
        client_id: 0,
        now,
    }
}

/// alice (1) and bob (2), alice logged in with token 1, then `texts` sent from alice to bob,
/// as entries 2.. after a membership entry at 1.
fn conversation(texts: &[&str]) -> Vec<Entry> {
    let mut commands = vec![create("alice", 10), create("bob", 11), login(1, 1, 12)];
    for (i, text) in texts.iter().enumerate() {
        commands.push(send(1, "bob", text, 20 + i as u64));
    }
    let mut entries = vec![membership_entry(1, 1)];
    for (i, command) in commands.into_iter().enumerate() {
        entries.push(entry(1, 2 + i as u64, command));
    }
    entries
}

fn collecting_sink() -> (EffectSink, Arc<Mutex<Vec<Effect>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let sink: EffectSink =
        Arc::new(move |effects: &[Effect]| sink_seen.lock().unwrap().extend_from_slice(effects));
    (sink, seen)
}

fn bob_unread(store: &corvid_store::StoreReader) -> Vec<String> {
    store
        .read(|t| query::fetch_unread(t, AccountId(2), 100))
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect()
}

/// Closes `store` and waits until the file is released, so that it can be opened again.
async fn close(store: Store) {
    let Store {
        log,
        state_machine,
        reader,
        closed,
    } = store;
    drop((log, state_machine, reader));
    closed.wait().await;
}

fn open(dir: &Path) -> Store {
    Store::open(dir, no_effects()).unwrap()
}

#[tokio::test]
async fn a_batch_applies_in_one_go_and_emits_messages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, seen) = collecting_sink();
    let mut store = Store::open(dir.path(), sink).unwrap();
    let mut entries = conversation(&["one", "two"]);
    // The last entry carries two commands, as a leader's batch does.
    entries.push(batch_entry(
        1,
        7,
        vec![send(1, "bob", "three", 30), send(1, "bob", "four", 31)],
    ));
    let outcomes = store.state_machine.apply(entries.clone()).await.unwrap();

    assert_eq!(outcomes.len(), entries.len(), "one result per entry");
    assert_eq!(outcomes[0], Vec::<Outcome>::new(), "a membership entry");
    assert!(matches!(
        outcomes[1][..],
        [Outcome::AccountCreated {
            account: AccountId(1),
            ..
        }]
    ));
    assert!(matches!(
        outcomes[3][..],
        [Outcome::LoggedIn {
            account: AccountId(1),
            ..
        }]
    ));
    let sent: Vec<(MessageId, String)> = outcomes[4..]
        .iter()
        .flatten()
        .map(|o| match o {
            Outcome::Sent {
                message,
                duplicate: false,
            } => (message.id, message.text.clone()),
            other => panic!("not sent: {other:?}"),
        })
        .collect();
    let expected: Vec<(MessageId, String)> = ["one", "two", "three", "four"]
        .iter()
        .enumerate()
        .map(|(i, text)| (MessageId(i as u64 + 1), text.to_string()))
        .collect();
    assert_eq!(sent, expected);

    let pushed: Vec<(AccountId, MessageId)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            Effect::Message { to, message } => (*to, message.id),
            other => panic!("unexpected effect {other:?}"),
        })
        .collect();
    let expected: Vec<(AccountId, MessageId)> =
        (1..=4).map(|id| (AccountId(2), MessageId(id))).collect();
    assert_eq!(pushed, expected, "effects in log order, after the commit");
    assert_eq!(bob_unread(&store.reader), ["one", "two", "three", "four"]);
    let (applied, membership) = store.state_machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 7)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
    let metrics = store.reader.metrics();
    assert_eq!(
        (
            metrics.apply_batches,
            metrics.applied_entries,
            metrics.applied_commands
        ),
        (1, 7, 7),
        "7 entries: a membership, 5 single commands and a pair"
    );
}

#[tokio::test]
async fn a_rejection_is_an_outcome_and_the_batch_still_applies() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let entries = vec![
        entry(1, 1, create("carol", 1)),
        entry(1, 2, create("carol", 2)),
    ];
    let outcomes = store.state_machine.apply(entries).await.unwrap();
    assert!(matches!(outcomes[1][..], [Outcome::Rejected(_)]));
    let accounts = store
        .reader
        .read(|t| {
            let mut n = 0;
            t.scan(
                Table::Account,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                false,
                &mut |_, _| {
                    n += 1;
                    true
                },
            )
            .map(|_| n)
        })
        .unwrap()
        .unwrap();
    assert_eq!(accounts, 1);
}

#[tokio::test]
async fn vote_log_and_state_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let entries = conversation(&["hello", "again"]);
    {
        let mut store = open(dir.path());
        store.log.save_vote(&Vote::new(3, 1)).await.unwrap();
        store.log.blocking_append(entries.clone()).await.unwrap();
        store.log.save_committed(Some(log_id(1, 6))).await.unwrap();
        store.state_machine.apply(entries.clone()).await.unwrap();
        close(store).await;
    }
    let mut store = open(dir.path());
    assert_eq!(store.log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    assert_eq!(
        store.log.read_committed().await.unwrap(),
        Some(log_id(1, 6))
    );
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(state.last_log_id, Some(log_id(1, 6)));
    let read = store.log.try_get_log_entries(1..=6).await.unwrap();
    assert_eq!(read, entries);
    assert_eq!(
        store.state_machine.applied_state().await.unwrap().0,
        Some(log_id(1, 6))
    );
    assert_eq!(bob_unread(&store.reader), ["hello", "again"]);
}

#[tokio::test]
async fn a_state_file_from_before_the_former_username_table_opens_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = conversation(&["hello bob"]);
    {
        let mut store = open(dir.path());
        store.state_machine.apply(entries.clone()).await.unwrap();
        close(store).await;
    }
    // A data directory written before the table existed has every other table.
    {
        let db = redb::Database::create(dir.path().join(corvid_store::STATE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let former: redb::TableDefinition<&[u8], &[u8]> =
            redb::TableDefinition::new(Table::FormerUsername.name());
        assert!(txn.delete_table(former).unwrap());
        txn.commit().unwrap();
    }
    let mut store = open(dir.path());
    assert_eq!(bob_unread(&store.reader), ["hello bob"]);
    // A read that looks for a former holder of a name finds none, and no storage fault.
    let unknown = store
        .reader
        .read(|t| query::history(t, AccountId(1), "carol", None, 10))
        .unwrap();
    assert!(
        matches!(&unknown, Err(query::QueryError::Rejected(r)) if r.code == corvid_core::ErrorCode::UnknownUser),
        "{unknown:?}"
    );
    // Bob deletes his account; Alice still reads their conversation by his old name.
    let next = entries.len() as u64 + 1;
    let bob_session = token(2).session_key();
    entries = vec![
        entry(1, next, login(2, 2, 30)),
        entry(
            1,
            next + 1,
            Command::DeleteAccount {
                session: bob_session,
                account: AccountId(2),
                force: true,
                now: 31,
            },
        ),
    ];
    let outcomes = store.state_machine.apply(entries).await.unwrap();
    assert_eq!(outcomes[1], vec![Outcome::AccountDeleted]);
    let history = store
        .reader
        .read(|t| query::history(t, AccountId(1), "bob", None, 10))
        .unwrap()
        .unwrap();
    assert_eq!(
        history
            .messages
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["hello bob"]
    );
}

#[tokio::test]
async fn purge_and_truncate_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(dir.path());
        let entries: Vec<Entry> = (1..=20).map(|i| entry(1, i, create("x", i))).collect();
        store.log.blocking_append(entries).await.unwrap();
        store.log.purge(log_id(1, 5)).await.unwrap();
        store.log.truncate(log_id(1, 15)).await.unwrap();
        // Entries after a truncation continue with a new term.
        store
            .log
            .blocking_append([entry(2, 15, create("y", 15))])
            .await
            .unwrap();
        close(store).await;
    }
    let mut store = open(dir.path());
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(2, 15)));
    let indexes: Vec<u64> = store
        .log
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(indexes, (6..=15).collect::<Vec<_>>());

    // Purging everything leaves the purged id as the last one.
    store.log.purge(log_id(2, 15)).await.unwrap();
    let state = store.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 15)));
    assert_eq!(state.last_log_id, Some(log_id(2, 15)));
}

#[tokio::test]
async fn appended_entries_are_readable_before_they_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let (done, wait) = tokio::sync::oneshot::channel();
    let entries: Vec<Entry> = (1..=3).map(|i| entry(1, i, create("x", i))).collect();
    store
        .log
        .append_then(entries.clone(), move |r| {
            let _ = done.send(r);
        })
        .unwrap();
    // Whether or not the writer got to them yet, they are all there.
    assert_eq!(store.log.try_get_log_entries(1..4).await.unwrap(), entries);
    assert_eq!(
        store.log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 3))
    );
    wait.await.unwrap().unwrap();
    assert_eq!(store.log.try_get_log_entries(1..4).await.unwrap(), entries);
}

#[tokio::test]
async fn a_snapshot_survives_a_reopen_and_installs_elsewhere() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let meta = {
        let mut store = open(leader_dir.path());
        store
            .state_machine
            .apply(conversation(&["a", "b"]))
            .await
            .unwrap();
        let snapshot = store
            .state_machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 6)));
        // A later state does not change a built snapshot.
        store
            .state_machine
            .apply(vec![entry(1, 7, send(1, "bob", "c", 30))])
            .await
            .unwrap();
        close(store).await;
        snapshot.meta
    };

    let mut leader = open(leader_dir.path());
    let current = leader
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("the snapshot is still current");
    assert_eq!(current.meta, meta);
    let snapshot_files = std::fs::read_dir(leader_dir.path().join(corvid_store::SNAPSHOT_DIR))
        .unwrap()
        .count();
    assert_eq!(snapshot_files, 1);

    let mut follower = open(follower_dir.path());
    let mut receiving = follower
        .state_machine
        .begin_receiving_snapshot()
        .await
        .unwrap();
    let mut source = *current.snapshot;
    tokio::io::copy(&mut source, &mut *receiving).await.unwrap();
    follower
        .state_machine
        .install_snapshot(&meta, receiving)
        .await
        .unwrap();
    assert_eq!(bob_unread(&follower.reader), ["a", "b"]);
    assert_eq!(
        follower.state_machine.applied_state().await.unwrap(),
        (meta.last_log_id, meta.last_membership.clone())
    );
    let installed = follower
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(installed.meta, meta);

    // The follower's state is exactly the snapshot's: every row of every table matches a
    // store that applied the same entries (so without message "c").
    let rows = |reader: &corvid_store::StoreReader| {
        reader
            .read(|t| {
                let mut rows = Vec::new();
                for table in Table::ALL {
                    t.scan(
                        table,
                        std::ops::Bound::Unbounded,
                        std::ops::Bound::Unbounded,
                        false,
                        &mut |k, v| {
                            rows.push((table, k.to_vec(), v.to_vec()));
                            true
                        },
                    )
                    .unwrap();
                }
                rows
            })
            .unwrap()
    };
    let model_dir = tempfile::tempdir().unwrap();
    let mut model = open(model_dir.path());
    model
        .state_machine
        .apply(conversation(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(rows(&follower.reader), rows(&model.reader));
    assert_eq!(bob_unread(&leader.reader), ["a", "b", "c"]);
}

/// Sends `text` from alice to bob as entry `index`, stamped `now`; its message.
async fn send_message(store: &mut Store, index: u64, text: &str, now: u64) -> corvid_core::Message {
    let outcomes = store
        .state_machine
        .apply(vec![entry(2, index, send(1, "bob", text, now))])
        .await
        .unwrap();
    match &outcomes[0][..] {
        [Outcome::Sent { message, .. }] => message.clone(),
        other => panic!("not sent: {other:?}"),
    }
}

#[tokio::test]
async fn installing_a_snapshot_announces_the_replaced_state_and_ids_and_time_go_on() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = open(leader_dir.path());
    let mut entries = conversation(&["a", "b"]);
    entries.push(entry(1, 7, send(1, "bob", "late", 5_000)));
    leader.state_machine.apply(entries).await.unwrap();
    let snapshot = leader
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let (sink, seen) = collecting_sink();
    let mut follower = Store::open(follower_dir.path(), sink).unwrap();
    let mut receiving = follower
        .state_machine
        .begin_receiving_snapshot()
        .await
        .unwrap();
    let mut source = *snapshot.snapshot;
    tokio::io::copy(&mut source, &mut *receiving).await.unwrap();
    follower
        .state_machine
        .install_snapshot(&snapshot.meta, receiving)
        .await
        .unwrap();
    // No message was pushed for what the snapshot covers: the notice says so.
    assert_eq!(*seen.lock().unwrap(), [Effect::StateReplaced]);

    // A new leader whose clock is behind the last one's proposes next: ids go on from the
    // snapshot's, and time does not go back, here and after a restart.
    let message = send_message(&mut follower, 8, "next", 100).await;
    assert_eq!((message.id, message.sent_at), (MessageId(4), 5_000));
    close(follower).await;
    let mut follower = open(follower_dir.path());
    let message = send_message(&mut follower, 9, "after restart", 200).await;
    assert_eq!((message.id, message.sent_at), (MessageId(5), 5_000));
}

/// A snapshot file written by hand, following the format documented in `snapshot.rs`.
fn snapshot_file(meta: &SnapshotMeta, rows: &[(Table, &[u8], &[u8])]) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = b"CORVIDSS".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    field(&mut out, &postcard::to_allocvec(meta).unwrap());
    for (table, key, value) in rows {
        out.push(table.tag());
        field(&mut out, key);
        field(&mut out, value);
    }
    out.push(0xFF);
    out.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    out
}

#[tokio::test]
async fn a_storage_fault_aborts_the_whole_batch() {
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let (sink, seen) = collecting_sink();
    let mut store = Store::open(dir.path(), sink).unwrap();
    // A state whose account counter is corrupt (not 8 bytes): the core reports a fault.
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 5)),
        last_membership: StoredMembership::default(),
        snapshot_id: "hand-made".into(),
    };
    let bytes = snapshot_file(&meta, &[(Table::Meta, b"next_account", &[1, 2, 3])]);
    let mut receiving = store
        .state_machine
        .begin_receiving_snapshot()
        .await
        .unwrap();
    receiving.write_all(&bytes).await.unwrap();
    store
        .state_machine
        .install_snapshot(&meta, receiving)
        .await
        .unwrap();

    let batch = vec![
        entry(1, 6, create("dave", 1)),
        entry(1, 7, create("erin", 2)),
    ];
    assert!(store.state_machine.apply(batch).await.is_err());
    assert_eq!(
        store.state_machine.applied_state().await.unwrap().0,
        Some(log_id(1, 5))
    );
    let names = store
        .reader
        .read(|t| t.get(Table::UsernameAccount, b"dave").map(|v| v.is_some()))
        .unwrap()
        .unwrap();
    assert!(!names);
    // The install's notice, and nothing of the aborted batch.
    assert_eq!(*seen.lock().unwrap(), [Effect::StateReplaced]);
}

#[tokio::test]
async fn a_truncated_snapshot_is_not_installed() {
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store
        .state_machine
        .apply(conversation(&["kept"]))
        .await
        .unwrap();
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 9)),
        last_membership: StoredMembership::default(),
        snapshot_id: "cut".into(),
    };
    let bytes = snapshot_file(&meta, &[(Table::Meta, b"next_account", &[0; 8])]);
    let mut receiving = store
        .state_machine
        .begin_receiving_snapshot()
        .await
        .unwrap();
    receiving
        .write_all(&bytes[..bytes.len() - 3])
        .await
        .unwrap();
    assert!(store
        .state_machine
        .install_snapshot(&meta, receiving)
        .await
        .is_err());
    assert_eq!(bob_unread(&store.reader), ["kept"]);
    let files = std::fs::read_dir(dir.path().join(corvid_store::SNAPSHOT_DIR))
        .unwrap()
        .count();
    assert_eq!(files, 0, "the refused snapshot's file is removed");
    assert!(store
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .is_none());
}

/// The directory's data-format version row: read, or replaced (`None` removes it, as in
/// directories made before versions were recorded).
fn format_version(dir: &Path, replace: Option<Option<u32>>) -> Option<u32> {
    use redb::{ReadableTable, TableDefinition};
    let meta: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
    let db = redb::Database::create(dir.join(corvid_store::STATE_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    let found = {
        let mut table = txn.open_table(meta).unwrap();
        let found = table
            .get("format_version")
            .unwrap()
            .map(|v| postcard::from_bytes(v.value()).unwrap());
        match replace {
            Some(Some(version)) => {
                let bytes = postcard::to_allocvec(&version).unwrap();
                table.insert("format_version", bytes.as_slice()).unwrap();
            }
            Some(None) => {
                table.remove("format_version").unwrap();
            }
            None => {}
        }
        found
    };
    txn.commit().unwrap();
    found
}

/// A directory written by a newer server is refused with one clear error, and nothing is
/// written to it; a directory with no version (version 1) is upgraded by recording it.
#[tokio::test]
async fn a_newer_data_format_is_refused_with_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), no_effects()).unwrap());
    assert_eq!(format_version(dir.path(), None), Some(FORMAT_VERSION));

    format_version(dir.path(), Some(Some(FORMAT_VERSION + 1)));
    for _ in 0..2 {
        let err = Store::open(dir.path(), no_effects())
            .err()
            .expect("a newer format is refused");
        assert!(matches!(err, StoreError::NewerFormat { found: 3 }));
        assert_eq!(
            err.to_string(),
            "the data directory is in format version 3, newer than this server reads \
             (up to 2): run a newer corvid on it"
        );
    }
    assert_eq!(format_version(dir.path(), None), Some(FORMAT_VERSION + 1));

    format_version(dir.path(), Some(None));
    drop(Store::open(dir.path(), no_effects()).unwrap());
    assert_eq!(format_version(dir.path(), None), Some(FORMAT_VERSION));
}
