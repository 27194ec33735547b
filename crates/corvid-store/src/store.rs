//! Opening the data directory, and the handles the rest of the server keeps: the
//! [`StoreReader`] for queries and metrics, and [`Closed`] to know the file is released.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use corvid_core::{Table, Tables};
use redb::ReadableDatabase;
use tokio::sync::oneshot;

use crate::disk::DiskGuard;
use crate::error::StoreError;
use crate::identity::{ClusterId, FORMAT_VERSION};
use crate::log::LogStore;
use crate::metrics::{StoreHistogramSnapshots, StoreHistograms};
use crate::schema::{
    encode, get_meta, prepare, SnapshotRecord, CLUSTER_ID, LAST_APPLIED, MEMBER_ID, SM_META,
    SNAPSHOT,
};
use crate::snapshot::SnapshotDir;
use crate::state::StateMachine;
use crate::tables::ReadTables;
use crate::typ::LogId;
use crate::EffectSink;

/// The directory of the Raft log (entries, vote, committed), inside the data directory.
pub const LOG_DIR: &str = "log";
/// The state machine's database file (the state tables, last applied, the current
/// snapshot), inside the data directory.
pub const STATE_FILE: &str = "state.redb";
/// The directory, inside the data directory, that holds snapshot files.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// Counters kept by the store, for tests and metrics.
#[derive(Default)]
pub(crate) struct Counters {
    pub log_commits: AtomicU64,
    pub log_appends: AtomicU64,
    pub log_entries: AtomicU64,
    pub apply_batches: AtomicU64,
    pub applied_entries: AtomicU64,
    pub applied_commands: AtomicU64,
    pub state_syncs: AtomicU64,
    pub log_bytes: AtomicU64,
    pub writes_refused: AtomicU64,
    pub committed_index: AtomicU64,
    pub snapshots: AtomicU64,
    pub histograms: StoreHistograms,
}

/// A copy of the store's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Log flushes completed with fsync (each carries one append, vote, truncate or purge,
    /// and the committed ids saved since the previous one).
    pub log_commits: u64,
    /// `append` calls made by openraft.
    pub log_appends: u64,
    /// Entries appended to the log.
    pub log_entries: u64,
    /// State machine transactions (one per `apply` call).
    pub apply_batches: u64,
    /// Entries applied to the state machine.
    pub applied_entries: u64,
    /// Commands applied (an entry carries one or more).
    pub applied_commands: u64,
    /// State transactions committed with fsync (see `state`: about one a second under load).
    pub state_syncs: u64,
    /// Bytes of the log's chunk files, as of its last write. Purged entries leave only with
    /// their whole chunk.
    pub log_bytes: u64,
    /// Writes refused because the disk is too full (see [`crate::disk`]).
    pub writes_refused: u64,
    /// The index of the last entry openraft told the log is committed (0 before any).
    pub committed_index: u64,
    /// Snapshots made current since the store opened (built here or received).
    pub snapshots: u64,
}

/// What the log and the state machine share: the state database and the counters.
pub(crate) struct Shared {
    pub state_db: redb::Database,
    pub counters: Counters,
    pub disk: DiskGuard,
    /// Dropped right after the databases (fields drop in order): tells [`Closed`] the file is released.
    _closed: oneshot::Sender<()>,
}

/// Resolves once every handle to the database is gone and the file is closed, so that the
/// same directory can be opened again (redb refuses a second open of a live database).
pub struct Closed(oneshot::Receiver<()>);

impl Closed {
    pub async fn wait(self) {
        // The sender is never used: its drop is the signal.
        let _ = self.0.await;
    }
}

/// The parts of an open store. openraft takes `log` and `state_machine` (which keep the
/// database open); the server keeps `reader` and `closed`.
pub struct Store {
    pub log: LogStore,
    pub state_machine: StateMachine,
    pub reader: StoreReader,
    pub closed: Closed,
}

impl Store {
    /// Opens (or creates) the store in `dir`: `dir/log/`, `dir/state.redb` and
    /// `dir/snapshots/`. `effects` receives the effects of every applied batch, just
    /// before it commits.
    ///
    /// The directory's data-format version is checked first: one newer than this server
    /// reads is refused ([`StoreError::NewerFormat`]) before the log is opened or anything
    /// is written; an older one is upgraded (see `identity`).
    pub fn open(dir: impl AsRef<Path>, effects: EffectSink) -> Result<Store, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let state_db = redb::Database::create(dir.join(STATE_FILE))?;
        let found = prepare(&state_db)?;
        if found != FORMAT_VERSION {
            tracing::info!(
                from = found,
                to = FORMAT_VERSION,
                dir = %dir.display(),
                "recorded the data directory's format version"
            );
        }
        let current: Option<SnapshotRecord> = {
            let txn = state_db.begin_read()?;
            let meta = txn.open_table(SM_META)?;
            get_meta(&meta, SNAPSHOT)?
        };
        let snapshots = SnapshotDir::open(dir.join(SNAPSHOT_DIR), current)?;
        let (closed_tx, closed_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            state_db,
            counters: Counters::default(),
            disk: DiskGuard::new(dir.to_path_buf()),
            _closed: closed_tx,
        });
        Ok(Store {
            log: LogStore::open(&dir.join(LOG_DIR), shared.clone())?,
            state_machine: StateMachine::new(shared.clone(), effects, Arc::new(snapshots)),
            reader: StoreReader {
                shared: Arc::downgrade(&shared),
            },
            closed: Closed(closed_rx),
        })
    }
}

/// The state tables' digest as of one applied entry (see [`StoreReader::state_digest`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateDigest {
    /// The last entry applied to the state digested.
    pub last_applied: Option<LogId>,
    pub digest: u64,
}

/// Reads of the state, for the server's queries. Cheap to clone.
///
/// A reader does not keep the database open: the log store and the state machine do. Once
/// both are dropped (openraft has shut down), reads fail with [`StoreError::Closed`] and the
/// file is released, so that it can be opened again.
#[derive(Clone)]
pub struct StoreReader {
    shared: Weak<Shared>,
}

impl StoreReader {
    fn shared(&self) -> Result<Arc<Shared>, StoreError> {
        self.shared.upgrade().ok_or(StoreError::Closed)
    }

    /// Runs `f` on a consistent read transaction of the state tables. It sees every applied
    /// entry (committed or not yet fsync'd) and never blocks writers.
    pub fn read<R>(&self, f: impl FnOnce(&dyn Tables) -> R) -> Result<R, StoreError> {
        // Held until the transaction ends, so the database outlives it.
        let shared = self.shared()?;
        let txn = shared.state_db.begin_read()?;
        let tables = ReadTables::new(&txn);
        Ok(f(&tables))
    }

    /// Refuses writes with [`StoreError::StorageFull`] while less than `bytes` is free on the
    /// data directory's disk (see [`crate::disk`]); the default is
    /// [`crate::disk::DEFAULT_MIN_FREE_BYTES`].
    pub fn set_min_free_bytes(&self, bytes: u64) {
        if let Ok(shared) = self.shared() {
            shared.disk.set_min_free(bytes);
        }
    }

    /// `Ok` if there is room on the disk for a write, [`StoreError::StorageFull`] if not.
    /// A closed store has nothing to guard: the write then fails as any write to a node
    /// that has shut down.
    pub fn check_free_space(&self) -> Result<(), StoreError> {
        match self.shared.upgrade() {
            Some(shared) => shared.disk.check().inspect_err(|_| {
                shared
                    .counters
                    .writes_refused
                    .fetch_add(1, Ordering::Relaxed);
            }),
            None => Ok(()),
        }
    }

    /// The id of the last entry applied to the state.
    pub fn last_applied(&self) -> Result<Option<LogId>, StoreError> {
        let shared = self.shared()?;
        let txn = shared.state_db.begin_read()?;
        let meta = txn.open_table(SM_META)?;
        Ok(get_meta::<Option<LogId>, _>(&meta, LAST_APPLIED)?.flatten())
    }

    /// A digest of every state table, with the id of the last entry applied to them, read
    /// in one transaction: servers that applied the same entries have the same digest. It
    /// reads the whole state, so it is for comparing the servers of one process in tests,
    /// never a value to store or send (the hash is only stable within one build).
    pub fn state_digest(&self) -> Result<StateDigest, StoreError> {
        let shared = self.shared()?;
        let txn = shared.state_db.begin_read()?;
        let meta = txn.open_table(SM_META)?;
        let last_applied = get_meta::<Option<LogId>, _>(&meta, LAST_APPLIED)?.flatten();
        let tables = ReadTables::new(&txn);
        let mut hasher = DefaultHasher::new();
        for table in Table::ALL {
            table.tag().hash(&mut hasher);
            tables.for_each(table, |key, value| {
                key.hash(&mut hasher);
                value.hash(&mut hasher);
                Ok(())
            })?;
        }
        Ok(StateDigest {
            last_applied,
            digest: hasher.finish(),
        })
    }

    /// The cluster this directory belongs to; `None` until the node is initialized (or
    /// joins a cluster).
    pub fn cluster_id(&self) -> Result<Option<ClusterId>, StoreError> {
        let shared = self.shared()?;
        let txn = shared.state_db.begin_read()?;
        let meta = txn.open_table(SM_META)?;
        get_meta(&meta, CLUSTER_ID)
    }

    /// Records, durably, that this directory belongs to cluster `id`, unless it belongs to
    /// one already; returns the cluster it belongs to. This is the one write outside
    /// openraft: the id is not part of the replicated state machine, it says whose state
    /// this is.
    pub fn record_cluster_id(&self, id: ClusterId) -> Result<ClusterId, StoreError> {
        let shared = self.shared()?;
        let txn = shared.state_db.begin_write()?;
        let recorded = {
            let mut meta = txn.open_table(SM_META)?;
            match get_meta(&meta, CLUSTER_ID)? {
                Some(existing) => existing,
                None => {
                    meta.insert(CLUSTER_ID, encode(&id)?.as_slice())?;
                    id
                }
            }
        };
        // Default durability: fsync'd before this returns.
        txn.commit()?;
        Ok(recorded)
    }

    /// Records, durably, that this directory is cluster member `id`'s, unless it is a
    /// member's already; returns the member whose directory it is. A directory started by
    /// the wrong member holds another server's vote and log: the vote would be cast twice,
    /// and what this member acknowledged would be missing.
    pub fn record_member_id(&self, id: u64) -> Result<u64, StoreError> {
        let shared = self.shared()?;
        let txn = shared.state_db.begin_write()?;
        let recorded = {
            let mut meta = txn.open_table(SM_META)?;
            match get_meta(&meta, MEMBER_ID)? {
                Some(existing) => existing,
                None => {
                    meta.insert(MEMBER_ID, encode(&id)?.as_slice())?;
                    id
                }
            }
        };
        // Default durability: fsync'd before this returns.
        txn.commit()?;
        Ok(recorded)
    }

    /// The store's counters (all zero once the store is closed).
    pub fn metrics(&self) -> StoreMetrics {
        let Ok(shared) = self.shared() else {
            return StoreMetrics::default();
        };
        let c = &shared.counters;
        StoreMetrics {
            log_commits: c.log_commits.load(Ordering::Relaxed),
            log_appends: c.log_appends.load(Ordering::Relaxed),
            log_entries: c.log_entries.load(Ordering::Relaxed),
            apply_batches: c.apply_batches.load(Ordering::Relaxed),
            applied_entries: c.applied_entries.load(Ordering::Relaxed),
            applied_commands: c.applied_commands.load(Ordering::Relaxed),
            state_syncs: c.state_syncs.load(Ordering::Relaxed),
            log_bytes: c.log_bytes.load(Ordering::Relaxed),
            writes_refused: c.writes_refused.load(Ordering::Relaxed),
            committed_index: c.committed_index.load(Ordering::Relaxed),
            snapshots: c.snapshots.load(Ordering::Relaxed),
        }
    }

    /// Copies of the store's latency and batch-size histograms (empty once it is closed).
    pub fn histograms(&self) -> StoreHistogramSnapshots {
        match self.shared() {
            Ok(shared) => shared.counters.histograms.snapshot(),
            Err(_) => StoreHistograms::default().snapshot(),
        }
    }
}
