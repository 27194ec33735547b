//! The state machine: openraft's `RaftStateMachine` over the state tables, and snapshots.
//!
//! `apply` runs a whole batch of entries in one redb write transaction of `state.redb`,
//! committed with [`Durability::None`] (no fsync), except that the first batch after
//! [`SYNC_INTERVAL`] is committed with fsync, which makes every earlier one durable too. The
//! log holds every entry after the last durable batch (see the crate documentation for why
//! that is safe).
//!
//! The core's effects (pushes, receipts, ended sessions) are handed to the effect sink as
//! soon as the whole batch has been applied inside the transaction, before it commits: the
//! entries are already committed in the log, so whatever a push shows will exist after any
//! restart (a failed commit stops the server, and replay applies the same entries to the
//! same result). A read that must see a pushed message is linearizable, and waits until
//! openraft knows the batch is applied, which is after the commit. This takes the commit
//! and a thread hand-off off the push path.
//!
//! Installing a snapshot applies no entries, so it emits no effects for them; it emits
//! [`Effect::StateReplaced`] instead, after the new state is committed.

use std::fs::File;
use std::io::SeekFrom;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corvid_core::{Effect, Outcome, WriteBack};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Durability, ReadableDatabase};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::error::{join_error, StoreError};
use crate::schema::{
    encode, get_meta, state_table, SnapshotRecord, LAST_APPLIED, LAST_MEMBERSHIP, SM_META, SNAPSHOT,
};
use crate::snapshot::{self, SnapshotDir, SnapshotFile};
use crate::store::Shared;
use crate::tables::{ReadTables, WriteTables};
use crate::typ::{
    Entry, LogId, Snapshot, SnapshotData, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::EffectSink;

/// How long applied state may stay without an fsync. It bounds how much of the log a
/// restart after a crash applies again, and how long redb keeps pages freed since the last
/// durable commit from being reused.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The state machine. Owned by openraft's state machine task.
pub struct StateMachine {
    shared: Arc<Shared>,
    effects: EffectSink,
    snapshots: Arc<SnapshotDir>,
    /// When a state transaction was last committed with fsync.
    last_sync: tokio::time::Instant,
}

/// Builds a snapshot from a read transaction, concurrently with `apply`.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    snapshots: Arc<SnapshotDir>,
}

impl StateMachine {
    pub(crate) fn new(
        shared: Arc<Shared>,
        effects: EffectSink,
        snapshots: Arc<SnapshotDir>,
    ) -> StateMachine {
        StateMachine {
            shared,
            effects,
            snapshots,
            last_sync: tokio::time::Instant::now(),
        }
    }
}

/// Applies `entries` in one transaction, fsync'd if `sync`, and hands their effects to
/// `sink` (in order) before the commit. Returns the outcomes of each entry (one per
/// command).
fn apply_batch(
    shared: &Shared,
    entries: &[Entry],
    sync: bool,
    sink: &EffectSink,
) -> Result<Vec<Vec<Outcome>>, StoreError> {
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut effects: Vec<Effect> = Vec::new();
    let mut txn = shared.state_db.begin_write()?;
    if !sync {
        txn.set_durability(Durability::None)?;
    }
    {
        // Counters, accounts and sessions are reread and rewritten by most commands: keep
        // them in memory for the batch and write each changed row once.
        let mut tables = WriteBack::new(WriteTables::new(&txn));
        let mut meta = txn.open_table(SM_META)?;
        let mut last_applied = None;
        for entry in entries {
            match &entry.payload {
                EntryPayload::Blank => outcomes.push(Vec::new()),
                EntryPayload::Normal(commands) => {
                    let mut entry_outcomes = Vec::with_capacity(commands.len());
                    for command in commands {
                        // A fault drops the transaction (redb aborts it): nothing of the
                        // batch is applied, and openraft stops this server.
                        let applied = corvid_core::apply(command, &mut tables)?;
                        entry_outcomes.push(applied.outcome.unwrap_or(Outcome::Nothing));
                        effects.extend(applied.effects);
                    }
                    outcomes.push(entry_outcomes);
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(entry.log_id), membership.clone());
                    meta.insert(LAST_MEMBERSHIP, encode(&stored)?.as_slice())?;
                    outcomes.push(Vec::new());
                }
            }
            last_applied = Some(entry.log_id);
        }
        if !effects.is_empty() {
            sink(&effects);
        }
        tables.finish()?;
        meta.insert(LAST_APPLIED, encode(&last_applied)?.as_slice())?;
    }
    let start = Instant::now();
    txn.commit()?;
    if sync {
        shared
            .counters
            .histograms
            .state_sync_seconds
            .observe_duration(start.elapsed());
        tracing::debug!(
            entries = entries.len(),
            elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
            "state fsync"
        );
    }
    Ok(outcomes)
}

fn applied_state(shared: &Shared) -> Result<(Option<LogId>, StoredMembership), StoreError> {
    let txn = shared.state_db.begin_read()?;
    let meta = txn.open_table(SM_META)?;
    let last_applied = get_meta::<Option<LogId>, _>(&meta, LAST_APPLIED)?.flatten();
    let membership = get_meta(&meta, LAST_MEMBERSHIP)?.unwrap_or_default();
    Ok((last_applied, membership))
}

/// Makes `record` the current snapshot, in the database (durably, before any older file is
/// deleted) and in memory, unless the current one is newer.
fn make_current(
    shared: &Shared,
    snapshots: &SnapshotDir,
    record: SnapshotRecord,
) -> Result<(), StoreError> {
    let _changing = snapshots.lock_changes();
    if let Some(current) = snapshots.current() {
        if current.meta.last_log_id > record.meta.last_log_id {
            return Ok(());
        }
    }
    let txn = shared.state_db.begin_write()?;
    {
        let mut meta = txn.open_table(SM_META)?;
        meta.insert(SNAPSHOT, encode(&record)?.as_slice())?;
    }
    txn.commit()?;
    snapshots.set_current(record)?;
    shared.counters.snapshots.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn build_snapshot(shared: &Shared, snapshots: &SnapshotDir) -> Result<SnapshotRecord, StoreError> {
    // One read transaction gives the rows and the log id they correspond to, while `apply`
    // goes on writing newer versions.
    let txn = shared.state_db.begin_read()?;
    let (last_applied, membership) = {
        let meta = txn.open_table(SM_META)?;
        let last_applied = get_meta::<Option<LogId>, _>(&meta, LAST_APPLIED)?.flatten();
        let membership = get_meta(&meta, LAST_MEMBERSHIP)?.unwrap_or_default();
        (last_applied, membership)
    };
    let tables = ReadTables::new(&txn);
    let seq = snapshots.next_seq();
    let snapshot_id = match last_applied {
        Some(id) => format!(
            "{}-{}-{}-{seq}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => format!("0-0-0-{seq}"),
    };
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id,
    };
    let file = snapshots.write_file(seq, |out| snapshot::write(out, &meta, &tables).map(|_| ()))?;
    drop(tables);
    drop(txn);
    let record = SnapshotRecord { meta, file };
    make_current(shared, snapshots, record.clone())?;
    Ok(record)
}

/// Stores a received snapshot as a file of ours, then replaces the state with its rows in
/// one fsync'd transaction, and tells `sink` that the state was replaced: the entries the
/// snapshot covers are never applied here, so their effects were never emitted.
fn install_snapshot(
    shared: &Shared,
    snapshots: &SnapshotDir,
    meta: SnapshotMeta,
    mut received: File,
    sink: &EffectSink,
) -> Result<(), StoreError> {
    let file = snapshots.write_file(snapshots.next_seq(), |out| {
        std::io::copy(&mut received, out)?;
        Ok(())
    })?;
    let result = load_snapshot(shared, snapshots, meta, &file);
    match &result {
        // Only now, with the new state committed, can a subscription reread it.
        Ok(()) => sink(&[Effect::StateReplaced]),
        // Not current, so nothing refers to it.
        Err(_) => {
            let _ = std::fs::remove_file(snapshots.path().join(&file));
        }
    }
    result
}

/// Replaces the state with the rows of snapshot `file`, and makes it current.
fn load_snapshot(
    shared: &Shared,
    snapshots: &SnapshotDir,
    meta: SnapshotMeta,
    file: &str,
) -> Result<(), StoreError> {
    let mut input = snapshots.open_file(file)?;
    let header = snapshot::read_header(&mut input)?;
    if header.last_log_id != meta.last_log_id {
        return Err(StoreError::Corrupt(format!(
            "snapshot file is at {:?}, its metadata says {:?}",
            header.last_log_id, meta.last_log_id
        )));
    }
    let _changing = snapshots.lock_changes();
    let txn = shared.state_db.begin_write()?;
    for table in corvid_core::Table::ALL {
        // Emptied by recreating: a table the snapshot has no rows for must still exist.
        txn.delete_table(state_table(table))?;
        txn.open_table(state_table(table))?;
    }
    {
        let mut tables = WriteTables::new(&txn);
        snapshot::read_rows(&mut input, |table, key, value| {
            Ok(corvid_core::TablesMut::put(&mut tables, table, key, value)?)
        })?;
        let mut sm_meta = txn.open_table(SM_META)?;
        sm_meta.insert(LAST_APPLIED, encode(&meta.last_log_id)?.as_slice())?;
        sm_meta.insert(LAST_MEMBERSHIP, encode(&meta.last_membership)?.as_slice())?;
        let record = SnapshotRecord {
            meta: meta.clone(),
            file: file.to_string(),
        };
        sm_meta.insert(SNAPSHOT, encode(&record)?.as_slice())?;
    }
    txn.commit()?;
    snapshots.set_current(SnapshotRecord {
        meta,
        file: file.to_string(),
    })
}

/// Opens a snapshot file as openraft's snapshot data.
async fn open_snapshot(
    snapshots: &SnapshotDir,
    record: SnapshotRecord,
) -> Result<Option<Snapshot>, StoreError> {
    match SnapshotFile::open(snapshots.path().join(&record.file)).await {
        Ok(file) => Ok(Some(Snapshot {
            meta: record.meta,
            snapshot: Box::new(file),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(file = %record.file, "the current snapshot file is missing");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (shared, snapshots) = (self.shared.clone(), self.snapshots.clone());
        let record = crate::replay::blocking(move || build_snapshot(&shared, &snapshots))
            .await
            .map_err(|e| join_error(e).write_snapshot())?
            .map_err(StoreError::write_snapshot)?;
        // The file was just written; if a newer snapshot replaced it meanwhile, it may be gone.
        open_snapshot(&self.snapshots, record.clone())
            .await
            .map_err(StoreError::read_snapshot)?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("snapshot {} vanished", record.file)).read_snapshot()
            })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        applied_state(&self.shared).map_err(StoreError::read_state_machine)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let count = entries.len() as u64;
        let commands: usize = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(commands) => commands.len(),
                _ => 0,
            })
            .sum();
        let sync = self.last_sync.elapsed() >= SYNC_INTERVAL;
        let shared = self.shared.clone();
        let sink = self.effects.clone();
        let outcomes = crate::replay::blocking(move || apply_batch(&shared, &entries, sync, &sink))
            .await
            .map_err(|e| join_error(e).write_state_machine())?
            .map_err(StoreError::write_state_machine)?;
        let counters = &self.shared.counters;
        if sync {
            self.last_sync = tokio::time::Instant::now();
            counters.state_syncs.fetch_add(1, Ordering::Relaxed);
        }
        counters.apply_batches.fetch_add(1, Ordering::Relaxed);
        counters.applied_entries.fetch_add(count, Ordering::Relaxed);
        counters
            .applied_commands
            .fetch_add(commands as u64, Ordering::Relaxed);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        // An anonymous file in the snapshot directory: it vanishes by itself if the transfer
        // is abandoned, and `install_snapshot` copies it into a named file.
        let file = tempfile::tempfile_in(self.snapshots.path())
            .map_err(|e| StoreError::Io(e).write_snapshot())?;
        Ok(Box::new(SnapshotFile::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let mut received = *snapshot;
        let rewind = async {
            received.flush().await?;
            received.seek(SeekFrom::Start(0)).await?;
            Ok::<_, std::io::Error>(())
        };
        rewind
            .await
            .map_err(|e| StoreError::Io(e).read_snapshot())?;
        let received = received.into_std().await;
        let (shared, snapshots, meta) = (self.shared.clone(), self.snapshots.clone(), meta.clone());
        let sink = self.effects.clone();
        crate::replay::blocking(move || {
            install_snapshot(&shared, &snapshots, meta, received, &sink)
        })
        .await
        .map_err(|e| join_error(e).write_snapshot())?
        .map_err(StoreError::write_snapshot)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        match self.snapshots.current() {
            Some(record) => open_snapshot(&self.snapshots, record)
                .await
                .map_err(StoreError::read_snapshot),
            None => Ok(None),
        }
    }
}
