//! `corvid check`: verification of a stopped server's data directory, without changing it.
//!
//! * **The log** (`log/`): every record is read back through `raft-log`'s dump, which
//!   checks each record's checksum; every entry's payload must decode; entry indexes must
//!   follow each other, the vote and the committed id must never go back, and no entry may
//!   carry a term newer than the vote.
//! * **The state** (`state.redb`), opened read-only: the store's own rows decode, and
//!   `corvid_core::check` verifies every table (record checksums, row shapes, the tables'
//!   agreement). The state must not have applied entries the log does not hold, nor the log
//!   be purged past what the state has applied.
//! * **The current snapshot** (`snapshots/`): its header, every row (checksums of the
//!   checked records), its end marker and row count.
//!
//! The log directory is locked for the whole check, as the server locks it: a running
//! server makes the check refuse to run rather than read files being written.

use std::path::Path;
use std::sync::Arc;

use corvid_core::check::{check_row, check_state, StateSummary};
use raft_log::{DumpApi, RaftLogAction, WALRecord};
use redb::{ReadOnlyDatabase, ReadableDatabase};

use crate::log::{config, Payload, Wal};
use crate::schema::{get_meta, SnapshotRecord, LAST_APPLIED, LAST_MEMBERSHIP, SM_META, SNAPSHOT};
use crate::snapshot;
use crate::store::{LOG_DIR, SNAPSHOT_DIR, STATE_FILE};
use crate::tables::ReadTables;
use crate::typ::{EntryPayload, LogId, StoredMembership, Vote};

/// Why a data directory could not be checked at all (as opposed to problems found in it).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0} is not a Corvid data directory (no {LOG_DIR}/ or {STATE_FILE})")]
    NotADataDirectory(String),
    #[error("{0} is in use: a running server holds it; stop the server first")]
    InUse(String),
    #[error(
        "{STATE_FILE} was not closed cleanly (a crash): start the server once, which \
         repairs it, stop it, and check again"
    )]
    NeedsRecovery,
    #[error("cannot read {what}: {error}")]
    Unreadable { what: String, error: String },
}

/// What a check found besides problems.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckSummary {
    /// Log records read (entries, votes, commits, truncations, purges, checkpoints).
    pub log_records: u64,
    /// Entries in the log after the last purge.
    pub log_entries: u64,
    pub state: StateSummary,
    /// Rows in the current snapshot file, if there is one.
    pub snapshot_rows: Option<u64>,
    /// Problems found, each reported as one line.
    pub problems: u64,
}

/// What the log says once all its records are read.
#[derive(Default)]
struct LogFacts {
    vote: Option<Vote>,
    last: Option<LogId>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

/// Checks the data directory `dir`, handing each problem found to `report` as one line.
pub fn check_data_dir(
    dir: &Path,
    report: &mut dyn FnMut(String),
) -> Result<CheckSummary, CheckError> {
    let log_dir = dir.join(LOG_DIR);
    let state_file = dir.join(STATE_FILE);
    if !log_dir.is_dir() || !state_file.is_file() {
        return Err(CheckError::NotADataDirectory(dir.display().to_string()));
    }
    let mut summary = CheckSummary::default();
    let mut problem = |line: String| {
        summary.problems += 1;
        report(line);
    };
    // Held until the end: the server cannot start on the directory while it is checked.
    let dump = raft_log::Dump::<Wal>::new(Arc::new(config(&log_dir))).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            CheckError::InUse(dir.display().to_string())
        } else {
            unreadable("the log", e)
        }
    })?;
    let (log, log_records, log_entries) = check_log(&dump, &mut problem)?;

    let db = ReadOnlyDatabase::open(&state_file).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => CheckError::InUse(dir.display().to_string()),
        redb::DatabaseError::RepairAborted => CheckError::NeedsRecovery,
        e => unreadable(STATE_FILE, e),
    })?;
    let txn = db.begin_read().map_err(|e| unreadable(STATE_FILE, e))?;
    let (last_applied, current) = check_state_meta(&txn, &mut problem)?;
    let tables = ReadTables::new(&txn);
    let state = check_state(&tables, &mut problem).map_err(|e| unreadable(STATE_FILE, e))?;

    let applied = last_applied.map(|id| id.index);
    if let (Some(purged), applied) = (log.purged, applied) {
        if applied.is_none_or(|applied| applied < purged.index) {
            problem(format!(
                "log: purged up to entry {} but the state has applied only up to {}: the \
                 entries between are lost",
                purged.index,
                applied.map_or("none".into(), |a| a.to_string())
            ));
        }
    }
    if let Some(applied) = applied {
        if log.last.is_none_or(|last| last.index < applied) {
            problem(format!(
                "log: ends at entry {} but the state has applied entry {applied}",
                log.last.map_or("none".into(), |l| l.index.to_string())
            ));
        }
    }
    if let (Some(committed), Some(last)) = (log.committed, log.last) {
        if committed.index > last.index {
            problem(format!(
                "log: committed entry {} is past the last entry {}",
                committed.index, last.index
            ));
        }
    }

    let snapshot_rows = match current {
        Some(record) => check_snapshot(&dir.join(SNAPSHOT_DIR), &record, &mut problem),
        None => None,
    };
    summary.log_records = log_records;
    summary.log_entries = log_entries;
    summary.snapshot_rows = snapshot_rows;
    summary.state = state;
    Ok(summary)
}

fn unreadable(what: &str, error: impl std::fmt::Display) -> CheckError {
    CheckError::Unreadable {
        what: what.to_string(),
        error: error.to_string(),
    }
}

/// Reads every record of the log, checking each and the order of all of them.
fn check_log(
    dump: &raft_log::Dump<Wal>,
    problem: &mut dyn FnMut(String),
) -> Result<(LogFacts, u64, u64), CheckError> {
    let mut log = LogFacts::default();
    let (mut records, mut entries) = (0u64, 0u64);
    dump.write_with(|chunk, index, record| {
        records += 1;
        let (_, record) = match record {
            Ok(record) => record,
            Err(e) => {
                problem(format!("log: {chunk}, record {index}: unreadable: {e}"));
                return Ok(());
            }
        };
        let at = || format!("log: {chunk}, record {index}");
        match record {
            WALRecord::Checkpoint(state) => {
                log.vote = state.vote().map(|v| v.0);
                log.last = state.last().map(|l| l.0);
                log.committed = state.committed().map(|c| c.0);
                log.purged = state.purged().map(|p| p.0);
            }
            WALRecord::Action(RaftLogAction::SaveVote(vote)) => {
                // A vote is only partly ordered: a new one must be at least the old one.
                let forward = |old: &Vote| {
                    matches!(
                        vote.0.partial_cmp(old),
                        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
                    )
                };
                if log.vote.as_ref().is_some_and(|old| !forward(old)) {
                    problem(format!("{}: the vote goes back", at()));
                }
                log.vote = Some(vote.0);
            }
            WALRecord::Action(RaftLogAction::Append(log_id, payload)) => {
                entries += 1;
                let log_id = log_id.0;
                if let Some(last) = log.last {
                    if log_id.index != last.index + 1 {
                        problem(format!(
                            "{}: entry {} follows entry {}",
                            at(),
                            log_id.index,
                            last.index
                        ));
                    }
                    if log_id.leader_id < last.leader_id {
                        problem(format!(
                            "{}: entry {} has an older term",
                            at(),
                            log_id.index
                        ));
                    }
                }
                if let Payload::Encoded(bytes) = payload {
                    if let Err(e) = postcard::from_bytes::<EntryPayload>(&bytes) {
                        problem(format!(
                            "{}: entry {} does not decode: {e}",
                            at(),
                            log_id.index
                        ));
                    }
                }
                log.last = Some(log_id);
            }
            WALRecord::Action(RaftLogAction::Commit(log_id)) => {
                if log.committed.is_some_and(|old| log_id.0 < old) {
                    problem(format!("{}: the committed id goes back", at()));
                }
                log.committed = Some(log_id.0);
            }
            WALRecord::Action(RaftLogAction::TruncateAfter(log_id)) => {
                log.last = log_id.map(|l| l.0);
            }
            WALRecord::Action(RaftLogAction::PurgeUpto(log_id)) => {
                log.purged = Some(log_id.0);
                if log.last.is_none_or(|last| last < log_id.0) {
                    log.last = Some(log_id.0);
                }
            }
        }
        Ok(())
    })
    .map_err(|e| unreadable("the log", e))?;
    if let (Some(vote), Some(last)) = (log.vote, log.last) {
        if last.leader_id.term > vote.leader_id().get_term() {
            problem(format!(
                "log: entry {} has term {}, newer than the vote's term {}",
                last.index,
                last.leader_id.term,
                vote.leader_id().get_term()
            ));
        }
    }
    Ok((log, records, entries))
}

/// Checks the store's own rows of `state.redb`; returns the last applied id and the current
/// snapshot's record.
fn check_state_meta(
    txn: &redb::ReadTransaction,
    problem: &mut dyn FnMut(String),
) -> Result<(Option<LogId>, Option<SnapshotRecord>), CheckError> {
    let meta = txn
        .open_table(SM_META)
        .map_err(|e| unreadable(STATE_FILE, e))?;
    let mut last_applied = None;
    match get_meta::<Option<LogId>, _>(&meta, LAST_APPLIED) {
        Ok(applied) => last_applied = applied.flatten(),
        Err(e) => problem(format!("state: sm_meta {LAST_APPLIED}: {e}")),
    }
    if let Err(e) = get_meta::<StoredMembership, _>(&meta, LAST_MEMBERSHIP) {
        problem(format!("state: sm_meta {LAST_MEMBERSHIP}: {e}"));
    }
    let current = match get_meta::<SnapshotRecord, _>(&meta, SNAPSHOT) {
        Ok(current) => current,
        Err(e) => {
            problem(format!("state: sm_meta {SNAPSHOT}: {e}"));
            None
        }
    };
    Ok((last_applied, current))
}

/// Reads the current snapshot file whole; returns its row count if it is sound.
fn check_snapshot(
    dir: &Path,
    record: &SnapshotRecord,
    problem: &mut dyn FnMut(String),
) -> Option<u64> {
    let name = &record.file;
    let file = match std::fs::File::open(dir.join(name)) {
        Ok(file) => file,
        Err(e) => {
            problem(format!(
                "snapshot {name}: cannot open the current snapshot: {e}"
            ));
            return None;
        }
    };
    let mut input = std::io::BufReader::new(file);
    let meta = match snapshot::read_header(&mut input) {
        Ok(meta) => meta,
        Err(e) => {
            problem(format!("snapshot {name}: {e}"));
            return None;
        }
    };
    if meta != record.meta {
        problem(format!(
            "snapshot {name}: its header does not match the snapshot the state names"
        ));
    }
    let mut damaged = Vec::new();
    let rows = snapshot::read_rows(&mut input, |table, key, value| {
        if let Err(fault) = check_row(table, key, value) {
            damaged.push(fault.0);
        }
        Ok(())
    });
    for fault in damaged {
        problem(format!("snapshot {name}: {fault}"));
    }
    match rows {
        Ok(rows) => Some(rows),
        Err(e) => {
            problem(format!("snapshot {name}: {e}"));
            None
        }
    }
}
