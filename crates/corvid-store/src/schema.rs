//! The catalogue of every redb table, besides the state tables that `corvid_core::Table`
//! lists, and the encoding of the values the store itself writes. `raft_log` and `raft_meta`
//! are in `log.redb`; `sm_meta` and the state tables in `state.redb`.
//!
//! | table       | key                 | value                                     |
//! |-------------|---------------------|-------------------------------------------|
//! | `raft_log`  | log index (u64)     | postcard `Entry`                          |
//! | `raft_meta` | `vote`              | postcard `Vote`                           |
//! |             | `committed`         | postcard `Option<LogId>`                  |
//! |             | `last_purged`       | postcard `LogId`                          |
//! | `sm_meta`   | `last_applied`      | postcard `Option<LogId>`                  |
//! |             | `last_membership`   | postcard `StoredMembership`               |
//! |             | `snapshot`          | postcard `SnapshotRecord` (current one)   |
//! | one per `corvid_core::Table` (`Table::name()`) | `&[u8]` | `&[u8]`          |

use corvid_core::Table;
use redb::TableDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::typ::SnapshotMeta;

pub(crate) const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");

pub(crate) const VOTE: &str = "vote";
pub(crate) const COMMITTED: &str = "committed";
pub(crate) const LAST_PURGED: &str = "last_purged";

pub(crate) const LAST_APPLIED: &str = "last_applied";
pub(crate) const LAST_MEMBERSHIP: &str = "last_membership";
pub(crate) const SNAPSHOT: &str = "snapshot";

/// The redb table that holds one state table of the core.
pub(crate) fn state_table(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// The current snapshot: its metadata and the file (under `snapshots/`) that holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub meta: SnapshotMeta,
    pub file: String,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(StoreError::Codec)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(StoreError::Codec)
}

/// Reads and decodes one metadata row of `raft_meta` or `sm_meta`.
pub(crate) fn get_meta<T, M>(table: &M, key: &str) -> Result<Option<T>, StoreError>
where
    T: DeserializeOwned,
    M: redb::ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key)? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// Creates the log's tables, so that readers never meet a missing one.
pub(crate) fn create_log_tables(db: &redb::Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(RAFT_LOG)?;
    txn.open_table(RAFT_META)?;
    txn.commit()?;
    Ok(())
}

/// Creates the state machine's tables, so that readers never meet a missing one.
pub(crate) fn create_state_tables(db: &redb::Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(SM_META)?;
    for table in Table::ALL {
        txn.open_table(state_table(table))?;
    }
    txn.commit()?;
    Ok(())
}
