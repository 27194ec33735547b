//! The Raft log and vote: [`LogStore`] (openraft's `RaftLogStorage`) and [`LogReader`].
//!
//! # Group commit
//!
//! One thread, the *log writer*, owns every write to `raft_log` and `raft_meta`. The store's
//! methods only enqueue a request; the writer takes everything that is queued, writes all of
//! it in one redb write transaction, commits it with [`redb::Durability::Immediate`] (one
//! fsync), and only then completes the requests, in queue order: append callbacks fire, and
//! `save_vote` / `truncate` / `purge` return. Whatever arrives while an fsync is under way
//! therefore shares the next one.
//!
//! Because every write goes through the one queue, all log I/O is serialised as openraft
//! requires (a vote saved after an append is never durable before it).
//!
//! openraft 0.9's core waits for each append's callback before it appends again, so on a
//! leader the queue rarely holds two appends: there, client writes share an fsync by
//! sharing a log entry (corvid-raft's proposer puts many commands in one entry). The writer
//! still merges a committed-index update into the next append, and takes whole
//! `append_entries` batches on a follower in one transaction.
//!
//! `save_committed` does not wait: it is queued (so it stays ordered) and returns at once,
//! and a batch made only of such requests commits without fsync. The committed index is a
//! hint for restart (it lets openraft re-apply committed entries before serving); losing its
//! last value in a crash is safe, the leader commits those entries again.
//!
//! # Reads see every returned append
//!
//! `append` puts its entries in an in-memory map of *recent* entries before it queues them,
//! and an entry leaves the map only after its transaction has committed (or with the
//! truncate or purge that removes it from the log). Readers look at the map first and at the
//! database second, so an entry is always found in one or the other (or both, and then the
//! map's copy wins). Reads therefore never wait for an fsync, which lets a leader replicate
//! an entry while its own fsync of it is still under way.
//!
//! Committed entries stay in the map too, the newest [`RECENT_BYTES`] of them: the state
//! machine reads each entry back right after it is written, to apply it, and a read served
//! from the map skips a read transaction and decoding every command again.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Durability, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::schema::{decode, encode, get_meta, COMMITTED, LAST_PURGED, RAFT_LOG, RAFT_META, VOTE};
use crate::store::Shared;
use crate::typ::{Entry, LogId, LogState, StorageError, TypeConfig, Vote};

/// The most requests one log transaction takes; the rest wait for the next one.
const MAX_BATCH: usize = 4096;
/// Encoded bytes of committed entries kept in memory for readers (see the module docs).
const RECENT_BYTES: usize = 8 << 20;

/// Called once appended entries are durable (or could not be written).
type OnFlushed = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

/// What the log writer is asked to do.
enum Request {
    Append {
        entries: Vec<(LogId, Vec<u8>)>,
        flushed: OnFlushed,
    },
    SaveVote {
        vote: Vec<u8>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    SaveCommitted {
        committed: Vec<u8>,
    },
    /// Delete the entries at and after `since`.
    Truncate {
        since: u64,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Delete the entries up to and including `upto`.
    Purge {
        upto: LogId,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Nothing to write, but everything before it must be durable when it completes.
    Sync {
        done: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl Request {
    fn needs_fsync(&self) -> bool {
        !matches!(self, Request::SaveCommitted { .. })
    }

    fn complete(self, result: Result<(), &str>) {
        let error = |reason: &str| StoreError::LogWriter(reason.to_string());
        match self {
            Request::Append { flushed, .. } => {
                flushed(result.map_err(|r| error(r).into_io()));
            }
            Request::SaveVote { done, .. }
            | Request::Truncate { done, .. }
            | Request::Purge { done, .. }
            | Request::Sync { done } => {
                // The caller may have gone away (shutdown); nothing is owed to it then.
                let _ = done.send(result.map_err(error));
            }
            Request::SaveCommitted { .. } => {}
        }
    }
}

/// State shared by the log store, its readers and the writer thread.
struct LogShared {
    store: Arc<Shared>,
    /// The newest entries: all that the writer has not committed yet, and the newest
    /// committed ones.
    recent: Mutex<Recent>,
    /// The last committed log id given to `save_committed`, durable or not yet.
    committed: Mutex<Option<LogId>>,
}

/// The newest log entries, in memory (see the module docs).
#[derive(Default)]
struct Recent {
    entries: BTreeMap<u64, Cached>,
    /// Encoded bytes of `entries`.
    bytes: usize,
}

struct Cached {
    entry: Entry,
    /// Its encoded size.
    bytes: usize,
    /// Committed to the database: may leave memory.
    flushed: bool,
}

impl Recent {
    fn insert(&mut self, entry: Entry, bytes: usize) {
        let cached = Cached {
            entry,
            bytes,
            flushed: false,
        };
        if let Some(old) = self.entries.insert(cached.entry.log_id.index, cached) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
    }

    /// Every entry of `start..end`, if all of them are here.
    fn all_of(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let mut all = Vec::new();
        let mut expected = start;
        for (index, cached) in self.entries.range(start..end) {
            if *index != expected {
                return None;
            }
            all.push(cached.entry.clone());
            expected += 1;
        }
        (expected == end).then_some(all)
    }

    /// Accounts for entries taken out of the map.
    fn forget(&mut self, removed: BTreeMap<u64, Cached>) {
        self.bytes -= removed.values().map(|c| c.bytes).sum::<usize>();
    }

    /// Bookkeeping after `batch` committed: its entries are in the database, its truncations
    /// and purges are done.
    fn committed(&mut self, batch: &[Request]) {
        for request in batch {
            match request {
                Request::Append { entries, .. } => {
                    for (log_id, _) in entries {
                        // An entry replaced since (same index, newer log id) is not flushed.
                        if let Some(cached) = self.entries.get_mut(&log_id.index) {
                            if cached.entry.log_id == *log_id {
                                cached.flushed = true;
                            }
                        }
                    }
                }
                Request::Truncate { since, .. } => {
                    let removed = self.entries.split_off(since);
                    self.forget(removed);
                }
                Request::Purge { upto, .. } => {
                    let kept = match upto.index.checked_add(1) {
                        Some(first_kept) => self.entries.split_off(&first_kept),
                        None => BTreeMap::new(),
                    };
                    let removed = std::mem::replace(&mut self.entries, kept);
                    self.forget(removed);
                }
                Request::SaveVote { .. } | Request::SaveCommitted { .. } | Request::Sync { .. } => {
                }
            }
        }
        while self.bytes > RECENT_BYTES {
            match self.entries.first_entry() {
                Some(oldest) if oldest.get().flushed => {
                    self.bytes -= oldest.remove().bytes;
                }
                _ => break,
            }
        }
    }
}

impl LogShared {
    fn recent(&self) -> MutexGuard<'_, Recent> {
        // A poisoned lock only means another thread panicked while holding it; the map
        // itself is always left consistent (single inserts and removes).
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<Entry>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        // The map first, then the database: an entry leaves the map only after it is in the
        // database, so nothing falls between the two reads.
        let unflushed: Vec<Entry> = {
            let recent = self.recent();
            if let Some(all) = recent.all_of(start, end) {
                return Ok(all);
            }
            recent
                .entries
                .range(start..end)
                .map(|(_, cached)| cached.entry.clone())
                .collect()
        };
        let txn = self.store.log_db.begin_read()?;
        let log = txn.open_table(RAFT_LOG)?;
        let mut entries = Vec::new();
        for item in log.range(start..end)? {
            let (_, value) = item?;
            entries.push(decode::<Entry>(value.value())?);
        }
        if unflushed.is_empty() {
            return Ok(entries);
        }
        let mut merged: BTreeMap<u64, Entry> =
            entries.into_iter().map(|e| (e.log_id.index, e)).collect();
        merged.extend(unflushed.into_iter().map(|e| (e.log_id.index, e)));
        Ok(merged.into_values().collect())
    }

    fn log_state(&self) -> Result<LogState, StoreError> {
        let unflushed_last = self
            .recent()
            .entries
            .last_key_value()
            .map(|(_, cached)| cached.entry.log_id);
        let txn = self.store.log_db.begin_read()?;
        let meta = txn.open_table(RAFT_META)?;
        let last_purged: Option<LogId> = get_meta(&meta, LAST_PURGED)?;
        let last_log_id = match unflushed_last {
            Some(id) => Some(id),
            None => {
                let log = txn.open_table(RAFT_LOG)?;
                let last = log.last()?;
                match last {
                    Some((_, value)) => Some(decode::<Entry>(value.value())?.log_id),
                    None => last_purged,
                }
            }
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }
}

/// The Raft log storage. Owned by openraft's core, which calls it one method at a time.
pub struct LogStore {
    log: Arc<LogShared>,
    writer: mpsc::Sender<Request>,
}

/// A reader of the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    log: Arc<LogShared>,
}

impl LogStore {
    pub(crate) fn open(store: Arc<Shared>) -> Result<LogStore, StoreError> {
        let committed = {
            let txn = store.log_db.begin_read()?;
            let meta = txn.open_table(RAFT_META)?;
            get_meta::<Option<LogId>, _>(&meta, COMMITTED)?.flatten()
        };
        let log = Arc::new(LogShared {
            store,
            recent: Mutex::new(Recent::default()),
            committed: Mutex::new(committed),
        });
        let (writer, requests) = mpsc::channel();
        let writer_log = log.clone();
        std::thread::Builder::new()
            .name("corvid-log-writer".into())
            .spawn(move || run_writer(&writer_log, requests))?;
        Ok(LogStore { log, writer })
    }

    /// How many fsync'd transactions the log writer has committed so far.
    pub fn log_commits(&self) -> u64 {
        self.log.store.counters.log_commits.load(Ordering::Relaxed)
    }

    /// Appends `entries` and returns at once: they are readable from now on, and `flushed`
    /// is called (on the writer thread) once they are durable, or could not be written.
    /// This is what openraft's `append` does; it is public for tools and tests.
    pub fn append_then(
        &self,
        entries: Vec<Entry>,
        flushed: impl FnOnce(Result<(), std::io::Error>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in &entries {
            encoded.push((entry.log_id, encode(entry)?));
        }
        let counters = &self.log.store.counters;
        counters.log_appends.fetch_add(1, Ordering::Relaxed);
        counters
            .log_entries
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        // Readable from now on, before the writer has even seen them.
        {
            let mut recent = self.log.recent();
            for (entry, (_, bytes)) in entries.into_iter().zip(&encoded) {
                recent.insert(entry, bytes.len());
            }
        }
        self.send(Request::Append {
            entries: encoded,
            flushed: Box::new(flushed),
        })
    }

    /// Waits until everything queued before this call is durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Request::Sync { done })?;
        wait_for(wait).await
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.writer
            .send(request)
            .map_err(|_| StoreError::LogWriter("the writer thread has exited".into()))
    }
}

async fn wait_for(wait: oneshot::Receiver<Result<(), StoreError>>) -> Result<(), StoreError> {
    match wait.await {
        Ok(result) => result,
        Err(_) => Err(StoreError::LogWriter(
            "the writer thread dropped a request".into(),
        )),
    }
}

/// Turns any range of log indexes into `start..end`.
fn index_range<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = index_range(&range);
        self.log.entries(start, end).map_err(StoreError::read_logs)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = index_range(&range);
        self.log.entries(start, end).map_err(StoreError::read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        self.log.log_state().map_err(StoreError::read_logs)
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            log: self.log.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = encode(vote).map_err(StoreError::write_vote)?;
        let (done, wait) = oneshot::channel();
        self.send(Request::SaveVote { vote, done })
            .map_err(StoreError::write_vote)?;
        wait_for(wait).await.map_err(StoreError::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        // `save_vote` returns only once its transaction has committed: the database has it.
        let read = || -> Result<Option<Vote>, StoreError> {
            let txn = self.log.store.log_db.begin_read()?;
            let meta = txn.open_table(RAFT_META)?;
            get_meta(&meta, VOTE)
        };
        read().map_err(StoreError::read_vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *self.log.committed.lock().unwrap_or_else(|e| e.into_inner()) = committed;
        let committed = encode(&committed).map_err(StoreError::write_logs)?;
        self.send(Request::SaveCommitted { committed })
            .map_err(StoreError::write_logs)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(*self.log.committed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.append_then(entries, move |result| callback.log_io_completed(result))
            .map_err(StoreError::write_logs)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let (done, wait) = oneshot::channel();
        self.send(Request::Truncate {
            since: log_id.index,
            done,
        })
        .map_err(StoreError::write_logs)?;
        wait_for(wait).await.map_err(StoreError::write_logs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let (done, wait) = oneshot::channel();
        self.send(Request::Purge { upto: log_id, done })
            .map_err(StoreError::write_logs)?;
        wait_for(wait).await.map_err(StoreError::write_logs)
    }
}

/// The log writer: batches queued requests into transactions until the store is dropped.
/// After a failed transaction it fails every later request: a log with a lost write in the
/// middle must not go on as if nothing happened.
fn run_writer(log: &LogShared, requests: mpsc::Receiver<Request>) {
    let mut failure: Option<String> = None;
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if let Some(reason) = &failure {
            for request in batch {
                request.complete(Err(reason));
            }
            continue;
        }
        let result = write_batch(log, &batch);
        if result.is_ok() {
            log.recent().committed(&batch);
        }
        match result {
            Ok(()) => {
                for request in batch {
                    request.complete(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "log write failed; the log store stops here");
                let reason = e.to_string();
                for request in batch {
                    request.complete(Err(&reason));
                }
                failure = Some(reason);
            }
        }
    }
}

/// Writes one batch in one transaction; fsyncs unless it only moves the committed index.
fn write_batch(log: &LogShared, batch: &[Request]) -> Result<(), StoreError> {
    let durable = batch.iter().any(Request::needs_fsync);
    let mut txn = log.store.log_db.begin_write()?;
    if !durable {
        txn.set_durability(Durability::None)?;
    }
    {
        let mut entries = txn.open_table(RAFT_LOG)?;
        let mut meta = txn.open_table(RAFT_META)?;
        for request in batch {
            match request {
                Request::Append { entries: new, .. } => {
                    for (log_id, bytes) in new {
                        entries.insert(log_id.index, bytes.as_slice())?;
                    }
                }
                Request::SaveVote { vote, .. } => {
                    meta.insert(VOTE, vote.as_slice())?;
                }
                Request::SaveCommitted { committed } => {
                    meta.insert(COMMITTED, committed.as_slice())?;
                }
                Request::Truncate { since, .. } => {
                    entries.retain_in(*since.., |_, _| false)?;
                }
                Request::Purge { upto, .. } => {
                    let previous: Option<LogId> = get_meta(&meta, LAST_PURGED)?;
                    if previous.is_none_or(|p| p < *upto) {
                        meta.insert(LAST_PURGED, encode(upto)?.as_slice())?;
                    }
                    entries.retain_in(..=upto.index, |_, _| false)?;
                }
                Request::Sync { .. } => {}
            }
        }
    }
    txn.commit()?;
    if durable {
        log.store
            .counters
            .log_commits
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn appended(indexes: std::ops::Range<u64>) -> Request {
        Request::Append {
            entries: indexes.map(|i| (entry(i).log_id, Vec::new())).collect(),
            flushed: Box::new(|_| {}),
        }
    }

    /// Committed entries leave memory oldest first once over the budget; entries not yet
    /// committed never do, however large.
    #[test]
    fn recent_entries_are_bounded_but_never_drop_an_unflushed_one() {
        let mut recent = Recent::default();
        let size = RECENT_BYTES / 4;
        for i in 0..8 {
            recent.insert(entry(i), size);
        }
        // Nothing committed yet: all eight stay, over the budget.
        recent.committed(&[]);
        assert_eq!(recent.entries.len(), 8);
        // 0..6 committed: the oldest go until the budget holds (6 and 7 are unflushed).
        recent.committed(&[appended(0..6)]);
        assert_eq!(
            recent.entries.keys().copied().collect::<Vec<_>>(),
            [4, 5, 6, 7]
        );
        assert_eq!(recent.bytes, 4 * size);
        assert!(recent.all_of(4, 8).is_some());
        assert!(
            recent.all_of(3, 8).is_none(),
            "3 must be read from the database"
        );
        // Truncation and purge take entries out whatever their state.
        recent.committed(&[Request::Truncate {
            since: 7,
            done: oneshot::channel().0,
        }]);
        recent.committed(&[Request::Purge {
            upto: entry(4).log_id,
            done: oneshot::channel().0,
        }]);
        assert_eq!(recent.entries.keys().copied().collect::<Vec<_>>(), [5, 6]);
        assert_eq!(recent.bytes, 2 * size);
    }
}
