//! The store's one error type, and its conversions into the errors openraft expects.

use corvid_core::StorageFault;
use openraft::AnyError;

use crate::typ::{StorageError, StorageIOError};

/// Storage failed: the disk, the database file, or the encoding of what it holds.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("encoding: {0}")]
    Codec(#[source] postcard::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Fault(#[from] StorageFault),
    /// The data directory was written by a newer server, in a format this one does not read.
    #[error(
        "the data directory is in format version {found}, newer than this server reads \
         (up to {}): run a newer corvid on it",
        crate::identity::FORMAT_VERSION
    )]
    NewerFormat { found: u32 },
    /// The data directory's disk is nearly full: the write was refused before it reached the
    /// log (see [`crate::disk`]).
    #[error("the disk is full: {available} bytes free, writes need {min_free}")]
    StorageFull { available: u64, min_free: u64 },
    /// The store has been closed (openraft shut down and dropped it).
    #[error("the store is closed")]
    Closed,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Db(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl StoreError {
    fn any(&self) -> AnyError {
        AnyError::new(self)
    }

    pub(crate) fn read_logs(self) -> StorageError {
        StorageIOError::read_logs(self.any()).into()
    }

    pub(crate) fn write_logs(self) -> StorageError {
        StorageIOError::write_logs(self.any()).into()
    }

    pub(crate) fn write_vote(self) -> StorageError {
        StorageIOError::write_vote(self.any()).into()
    }

    pub(crate) fn read_state_machine(self) -> StorageError {
        StorageIOError::read_state_machine(self.any()).into()
    }

    pub(crate) fn write_state_machine(self) -> StorageError {
        StorageIOError::write_state_machine(self.any()).into()
    }

    pub(crate) fn read_snapshot(self) -> StorageError {
        StorageIOError::read_snapshot(None, self.any()).into()
    }

    pub(crate) fn write_snapshot(self) -> StorageError {
        StorageIOError::write_snapshot(None, self.any()).into()
    }
}

/// A blocking task of the store did not finish (it panicked, or the runtime is shutting down).
pub(crate) fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(std::io::Error::other(format!("storage task failed: {e}")))
}
