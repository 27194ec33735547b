//! The catalogue of every redb table of `state.redb`, besides the state tables that
//! `corvid_core::Table` lists, and the encoding of the values the store itself writes. (The
//! Raft log is not in redb: see `log`.)
//!
//! | table       | key                 | value                                     |
//! |-------------|---------------------|-------------------------------------------|
//! | `sm_meta`   | `last_applied`      | postcard `Option<LogId>`                  |
//! |             | `last_membership`   | postcard `StoredMembership`               |
//! |             | `snapshot`          | postcard `SnapshotRecord` (current one)   |
//! |             | `format_version`    | postcard `u32` (see `identity`; absent: 1) |
//! |             | `cluster_id`        | postcard `ClusterId` (absent until the node is initialized) |
//! |             | `member_id`         | postcard `u64`: the cluster member whose directory this is (absent on a single server, and before it was recorded) |
//! | one per `corvid_core::Table` (`Table::name()`) | `&[u8]` | `&[u8]`          |

use corvid_core::Table;
use redb::TableDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::identity;
use crate::typ::SnapshotMeta;

pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");

pub(crate) const LAST_APPLIED: &str = "last_applied";
pub(crate) const LAST_MEMBERSHIP: &str = "last_membership";
pub(crate) const SNAPSHOT: &str = "snapshot";
pub(crate) const FORMAT_VERSION: &str = "format_version";
pub(crate) const CLUSTER_ID: &str = "cluster_id";
pub(crate) const MEMBER_ID: &str = "member_id";

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

/// Reads and decodes one metadata row of `sm_meta`.
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

/// Checks the directory's data-format version, then creates the state machine's tables
/// (so that readers never meet a missing one) and records the current version, in one
/// transaction. Returns the version the directory had. A newer version than this server
/// knows is refused before anything is written.
pub(crate) fn prepare(db: &redb::Database) -> Result<u32, StoreError> {
    let txn = db.begin_write()?;
    let found = {
        let mut meta = txn.open_table(SM_META)?;
        let found = get_meta::<u32, _>(&meta, FORMAT_VERSION)?;
        match found {
            // Dropping the transaction aborts it: nothing of this server is written.
            Some(version) if version > identity::FORMAT_VERSION => {
                return Err(StoreError::NewerFormat { found: version })
            }
            Some(version) if version == identity::FORMAT_VERSION => {}
            // Version 1 reads as version 2 (see `identity`): recording it is the upgrade.
            _ => {
                meta.insert(
                    FORMAT_VERSION,
                    encode(&identity::FORMAT_VERSION)?.as_slice(),
                )?;
            }
        }
        found.unwrap_or(identity::UNVERSIONED)
    };
    for table in Table::ALL {
        txn.open_table(state_table(table))?;
    }
    txn.commit()?;
    Ok(found)
}
