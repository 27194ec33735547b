//! Corvid's durable storage: the Raft log and the vote in a write-ahead log (`raft-log`), the
//! state machine in a redb file.
//!
//! `Store::open(dir, effects)` opens `dir/log/`, `dir/state.redb` (and `dir/snapshots/`)
//! and returns the two halves openraft drives — [`LogStore`] (`RaftLogStorage`, storage-v2)
//! and [`StateMachine`] (`RaftStateMachine`) — plus a [`StoreReader`] the server keeps for
//! queries. The type configuration is in [`typ`]; the tables are listed in `schema`.
//!
//! # What the directory says about itself
//!
//! openraft's node type is Corvid's [`Member`] record, written in a layout that also reads
//! the `BasicNode` of directories made before it (see `member`). The state meta records the
//! directory's data-format version, checked at open (a newer one is refused, an older one
//! upgraded), and the [`ClusterId`] of the cluster it belongs to (see [`identity`]).
//!
//! # Durability
//!
//! What is fsync'd, and when:
//!
//! * **Log appends, vote, truncate, purge** (`log/`): appended as records to the write-ahead
//!   log and fsync'd by its flush thread *before* an append's callback fires or
//!   `save_vote`/`truncate`/`purge` return (see [`log`]). openraft only counts an entry as
//!   accepted (and so only commits and acknowledges it) after its callback. A log entry
//!   carries a batch of commands (see [`typ::TypeConfig`]), so one fsync covers many client
//!   writes.
//! * **`save_committed`**: buffered, not awaited; written (and fsync'd) with the next flush.
//! * **State machine `apply`** (`state.redb`): one transaction per batch, committed with
//!   `Durability::None` (no fsync), except the first batch after
//!   [`state::SYNC_INTERVAL`] (1 s), committed with `Durability::Immediate`.
//! * **Snapshots**: the file is written, fsync'd, renamed and its directory fsync'd; then the
//!   pointer to it (`sm_meta.snapshot`) is committed with fsync, and only then are older
//!   snapshot files deleted. Installing a snapshot replaces the state tables and
//!   last-applied/membership in one fsync'd transaction.
//!
//! Why the mostly unsynced state machine is safe (checked in redb 4.5's source,
//! `transactions.rs`, `page_manager.rs` and `cached_file.rs`):
//!
//! 1. redb commits are totally ordered within a file, and a transaction always starts from
//!    the latest commit, durable or not. A durable commit writes the newest root, which
//!    contains every earlier non-durable commit, and flushes their pages: "commits with
//!    [`Durability::None`](redb::Durability::None) will not be persisted to disk unless
//!    followed by a commit with `Immediate`" — and then they are.
//! 2. After a crash redb opens at the last durable commit, which is consistent: pages freed
//!    by non-durable commits are not reused until a durable commit, so that commit's tree is
//!    intact. A clean close (drop of the database) makes pending non-durable commits durable.
//!
//! So after a crash `state.redb` holds the state applied up to some `A` (its last durable
//! commit, at most about a second old), and the log holds every entry it acknowledged.
//! Every entry in `(A, committed]` is still in the log because of the **architecture
//! invariant: the log is never purged past an entry whose application is not durable.**
//! openraft purges only up to a snapshot's last log id `S`; the snapshot was read from a
//! committed state transaction, and before openraft learns of the snapshot the pointer to
//! it is committed to `state.redb` with fsync, which makes all state up to at least `S`
//! durable. Applied entries are committed, so never truncated. On restart openraft reads
//! `committed` (`read_committed`, which may lag: openraft then takes `A`) and re-applies
//! `(A, committed]` from the log before serving; entries after `committed` are committed
//! again by the leader. An acknowledged write is never lost: it was acknowledged after
//! apply, apply came after commit, and commit after the fsync of its log entry (on a
//! quorum).
//!
//! Re-applying after a crash runs the effect sink again for those entries; at startup no
//! client is connected yet, so nothing is pushed twice to a live session.
//!
//! Crash recovery cost: state transactions use redb's default 1-phase commit with checksums,
//! so after a crash redb repairs `state.redb` on open by walking it, which takes time
//! proportional to its size; the log is replayed (its records checked and indexed, the
//! payloads left encoded) on every open. Both are measured by `corvid-bench recovery`.
//!
//! # Why the log is not in redb
//!
//! The log and the state are apart so that a log fsync never holds up `apply` and writes only
//! log records, while the state's dirty pages (the same B-tree leaves, rewritten by many
//! batches) are written once per [`state::SYNC_INTERVAL`]. And the log is not a B-tree at
//! all: appending one entry to redb rewrote about eleven scattered pages before its fsync,
//! where the write-ahead log appends one record (see [`log`]).

pub mod check;
pub mod disk;
pub mod error;
pub mod identity;
pub mod log;
mod member;
pub mod metrics;
pub mod replay;
mod schema;
mod snapshot;
pub mod state;
pub mod store;
pub mod tables;
pub mod typ;

pub use error::StoreError;
pub use identity::{ClusterId, FORMAT_VERSION};
pub use log::{LogReader, LogStore};
pub use member::{ClientAddrs, Member};
pub use snapshot::SnapshotFile;
pub use state::{SnapshotBuilder, StateMachine};
pub use store::{
    Closed, StateDigest, Store, StoreMetrics, StoreReader, LOG_DIR, SNAPSHOT_DIR, STATE_FILE,
};
pub use tables::{ReadTables, WriteTables};

/// Receives the effects of each applied batch, in log order, once the batch is applied and
/// before its transaction commits (its entries are committed in the log already; see the
/// `state` module). The server pushes messages and receipts to its connected clients from
/// here; it must not block for long (it runs on the thread applying the batch).
pub type EffectSink = std::sync::Arc<dyn Fn(&[corvid_core::Effect]) + Send + Sync>;

/// An effect sink that drops everything, for tools and tests.
pub fn no_effects() -> EffectSink {
    std::sync::Arc::new(|_: &[corvid_core::Effect]| {})
}
