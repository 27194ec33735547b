//! The Raft log and vote: [`LogStore`] (openraft's `RaftLogStorage`) and [`LogReader`], kept
//! in a write-ahead log made for Raft, the `raft-log` crate, in `log/` of the data directory.
//!
//! # Why not a B-tree
//!
//! A Raft log is appended at the end, cut at the end (truncate) and dropped from the front
//! (purge), and a leader waits for each append to be durable before it can commit. In a
//! copy-on-write B-tree (redb) one appended entry rewrote about eleven scattered pages
//! (the leaf, its branches, the table and free-page trees) and cost ≈ 100 µs of CPU before
//! its fsync; the fsync itself then had all those pages to write. `raft-log` appends one
//! checksummed record per action to a chunk file and fsyncs it: on this project's machine
//! an append plus its fsync takes 0.18 ms where the B-tree commit took ≈ 0.45 ms, and that
//! time is on every write's path.
//!
//! # What happens where
//!
//! `raft-log` keeps the log's index, its state (vote, last, committed, purged) and a cache of
//! recent payloads in memory; each call buffers one record (`append`, `save_vote`,
//! `commit`, `truncate`, `purge`), and `flush` hands the buffer to its flush thread, which
//! writes it, fsyncs the chunk file and then calls the flush's callback. So:
//!
//! * `append` buffers the entries, flushes, and returns; openraft's callback fires after the
//!   fsync. The entries are readable at once (from the cache), before they are durable,
//!   which lets a leader replicate an entry while its own fsync of it is under way.
//! * `save_vote`, `truncate` and `purge` flush and wait for the fsync before they return.
//! * `save_committed` only buffers its record: the next flush writes it. The committed index
//!   is a hint for restart (openraft re-applies committed entries before serving); losing
//!   its last value in a crash is safe, the leader commits those entries again.
//!
//! The flush thread takes one flush at a time (`flush_batch_wait` is zero: a wait would
//! delay every lone write). openraft 0.9's leader waits for each append's callback before it
//! appends again, so there is rarely a second flush queued anyway: client writes share an
//! fsync by sharing an entry (corvid-raft's proposer puts many commands in one entry).
//!
//! Records are in chunk files of at most [`CHUNK_BYTES`]; a purge deletes whole chunks once
//! every entry in them is purged and the purge record is durable. After a crash `raft-log`
//! drops a torn record at the end of the last chunk, and rebuilds its index by reading every
//! chunk left, so the log's length after the last purge bounds the time to open it.
//!
//! # Chunks written in place
//!
//! The chunk files come from `chunked-wal`, patched (vendor/chunked-wal/PATCH.md): a chunk
//! is sized to [`CHUNK_BYTES`] when created and written in place, and cut to its records
//! when closed. Each fsync then flushes data alone; after an append it must also commit
//! the file's new length to the filesystem journal (on this project's machine ≈ 0.14 ms
//! against ≈ 0.2 ms a flush). Opening the log cuts the zero tail of the last chunk and
//! starts a new chunk.

use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use raft_log::RaftLog;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::store::Shared;
use crate::typ::{Entry, EntryPayload, LogId, LogState, StorageError, TypeConfig, Vote};

/// The largest chunk file; the log is dropped a chunk at a time after a purge.
pub const CHUNK_BYTES: usize = 32 << 20;
/// Payloads of recent entries kept in memory: the state machine reads each entry right
/// after it is written, and followers catching up read the recent ones.
const CACHE_BYTES: usize = 32 << 20;
const CACHE_ENTRIES: usize = 100_000;
/// The largest encoded value a record may hold; a longer length read back is corruption,
/// not something to allocate. An entry carries at most a few MiB of commands.
const MAX_VALUE_BYTES: usize = 256 << 20;

/// The types `raft-log` stores: openraft's, encoded with postcard.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Wal;

impl raft_log::Types for Wal {
    type LogId = Stored<LogId>;
    type LogPayload = Payload;
    type Vote = Stored<Vote>;
    type Callback = Flushed;
    type UserData = ();

    fn log_index(log_id: &Stored<LogId>) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &Payload) -> u64 {
        match payload {
            Payload::Decoded(payload) => {
                postcard::experimental::serialized_size(payload).map_or(0, |n| n as u64)
            }
            Payload::Encoded(bytes) => bytes.len() as u64,
        }
    }
}

/// A value in a log record: its postcard encoding, after its length (see [`write_value`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stored<T>(pub(crate) T);

impl<T: Serialize> Encode for Stored<T> {
    fn encode<W: Write>(&self, w: W) -> Result<usize, io::Error> {
        let bytes = postcard::to_allocvec(&self.0).map_err(io::Error::other)?;
        write_value(w, &bytes)
    }
}

impl<T: DeserializeOwned> Decode for Stored<T> {
    fn decode<R: Read>(r: R) -> Result<Self, io::Error> {
        postcard::from_bytes(&read_value(r)?)
            .map(Stored)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// An entry's payload as `raft-log` holds it. Entries appended by this process stay decoded
/// (the state machine reads each one right after it is written); entries read back from disk
/// stay encoded until something reads them, so that opening the log only checks and indexes
/// its records instead of decoding every command in it.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Decoded(EntryPayload),
    /// Postcard bytes of an `EntryPayload`.
    Encoded(Arc<[u8]>),
}

impl Payload {
    fn into_payload(self) -> io::Result<EntryPayload> {
        match self {
            Payload::Decoded(payload) => Ok(payload),
            Payload::Encoded(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

impl Encode for Payload {
    fn encode<W: Write>(&self, w: W) -> Result<usize, io::Error> {
        match self {
            Payload::Decoded(payload) => {
                let bytes = postcard::to_allocvec(payload).map_err(io::Error::other)?;
                write_value(w, &bytes)
            }
            Payload::Encoded(bytes) => write_value(w, bytes),
        }
    }
}

impl Decode for Payload {
    fn decode<R: Read>(r: R) -> Result<Self, io::Error> {
        Ok(Payload::Encoded(read_value(r)?.into()))
    }
}

/// Writes `bytes` after their length (u32, big-endian).
fn write_value<W: Write>(mut w: W, bytes: &[u8]) -> io::Result<usize> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&n| n as usize <= MAX_VALUE_BYTES)
        .ok_or_else(|| io::Error::other(format!("a {} byte log value", bytes.len())))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)?;
    Ok(4 + bytes.len())
}

/// Reads what [`write_value`] wrote, refusing a length over [`MAX_VALUE_BYTES`] before
/// allocating for it.
fn read_value<R: Read>(mut r: R) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_VALUE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a log value claims {len} bytes"),
        ));
    }
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// What to do once a flush is durable (or failed): called on the flush thread.
pub(crate) struct Flushed(Box<dyn FnOnce(io::Result<()>) + Send>);

impl raft_log::Callback for Flushed {
    fn send(self, result: io::Result<()>) {
        (self.0)(result)
    }
}

/// The `raft-log` configuration for the log in `dir`.
pub(crate) fn config(dir: &std::path::Path) -> raft_log::Config {
    let mut config = raft_log::Config::new(dir.display());
    config.wal.chunk_max_size = Some(CHUNK_BYTES);
    config.wal.flush_batch_wait = Some(std::time::Duration::ZERO);
    config.log_cache_capacity = Some(CACHE_BYTES);
    config.log_cache_max_items = Some(CACHE_ENTRIES);
    // In replay mode, no flush thread: each flush is written and fsync'd inside the call
    // that hands it over (see `crate::replay`).
    config.wal.inline_flush = Some(crate::replay::is_enabled());
    config
}

/// State shared by the log store and its readers.
struct LogShared {
    /// Dropped first (fields drop in order): closing joins the flush thread and releases the
    /// directory lock before `store` can tell anyone the store is closed.
    wal: Mutex<RaftLog<Wal>>,
    store: Arc<Shared>,
}

impl LogShared {
    fn wal(&self) -> MutexGuard<'_, RaftLog<Wal>> {
        // A poisoned lock means a thread panicked holding it; `raft-log` rejects a record
        // before changing anything, so the log itself is consistent.
        self.wal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `write` (which buffers records) and flushes them; `then` runs on the flush
    /// thread once they are on disk.
    fn write_then(
        &self,
        write: impl FnOnce(&mut RaftLog<Wal>) -> io::Result<()>,
        then: impl FnOnce(io::Result<()>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let store = self.store.clone();
        let handed_over = std::time::Instant::now();
        let flushed = Flushed(Box::new(move |result: io::Result<()>| {
            if result.is_ok() {
                let counters = &store.counters;
                counters.log_commits.fetch_add(1, Ordering::Relaxed);
                counters
                    .histograms
                    .log_fsync_seconds
                    .observe_duration(handed_over.elapsed());
            }
            then(result)
        }));
        let mut wal = self.wal();
        write(&mut wal)?;
        wal.flush(true, Some(flushed))?;
        self.store
            .counters
            .log_bytes
            .store(wal.on_disk_size(), Ordering::Relaxed);
        Ok(())
    }

    /// Runs `write` and waits until its records are on disk.
    async fn write_durably(
        &self,
        write: impl FnOnce(&mut RaftLog<Wal>) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.write_then(write, move |result| {
            // The caller may have gone away (shutdown); nothing is owed to it then.
            let _ = done.send(result);
        })?;
        match wait.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(io::Error::other("the log's flush thread dropped a flush").into()),
        }
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<Entry>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let wal = self.wal();
        let entries = wal
            .read(start, end)
            .map(|read| {
                let (log_id, payload) = read?;
                Ok(Entry {
                    log_id: log_id.0,
                    payload: payload.into_payload()?,
                })
            })
            .collect::<io::Result<Vec<Entry>>>()?;
        Ok(entries)
    }

    fn log_state(&self) -> LogState {
        let wal = self.wal();
        let state = wal.log_state();
        LogState {
            last_purged_log_id: state.purged().map(|id| id.0),
            // `raft-log` keeps `last` at the purged id once everything is purged, as
            // openraft expects.
            last_log_id: state.last().map(|id| id.0),
        }
    }
}

/// The Raft log storage. Owned by openraft's core, which calls it one method at a time.
pub struct LogStore {
    log: Arc<LogShared>,
}

/// A reader of the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    log: Arc<LogShared>,
}

impl LogStore {
    /// Opens the log in `dir` (created if missing), replaying what is there.
    pub(crate) fn open(dir: &std::path::Path, store: Arc<Shared>) -> Result<LogStore, StoreError> {
        std::fs::create_dir_all(dir)?;
        let wal = RaftLog::open(Arc::new(config(dir)))?;
        store
            .counters
            .log_bytes
            .store(wal.on_disk_size(), Ordering::Relaxed);
        // What was committed when the server started: a restarted server is ready once it
        // has applied that much (see corvid-server's readiness check).
        let committed = wal
            .log_state()
            .committed()
            .map_or(0, |id: &Stored<LogId>| id.0.index);
        store
            .counters
            .committed_index
            .store(committed, Ordering::Relaxed);
        Ok(LogStore {
            log: Arc::new(LogShared {
                wal: Mutex::new(wal),
                store,
            }),
        })
    }

    /// How many fsync'd flushes the log has completed so far.
    pub fn log_commits(&self) -> u64 {
        self.log.store.counters.log_commits.load(Ordering::Relaxed)
    }

    /// Appends `entries` and returns at once: they are readable from now on, and `flushed`
    /// is called (on the flush thread) once they are durable, or could not be written.
    /// This is what openraft's `append` does; it is public for tools and tests.
    pub fn append_then(
        &self,
        entries: Vec<Entry>,
        flushed: impl FnOnce(Result<(), io::Error>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let counters = &self.log.store.counters;
        counters.log_appends.fetch_add(1, Ordering::Relaxed);
        counters
            .log_entries
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        counters
            .histograms
            .entries_per_flush
            .observe(entries.len() as f64);
        self.log.write_then(
            |wal| {
                // openraft purges only applied entries, so one at or below the purged id is
                // in the state already: appending it again changes nothing (openraft's
                // storage suite does it; `raft-log` refuses an id below its last).
                let purged = wal.log_state().purged().map(|id| id.0.index);
                let new = entries
                    .into_iter()
                    .filter(|e| purged.is_none_or(|purged| e.log_id.index > purged))
                    .map(|e| (Stored(e.log_id), Payload::Decoded(e.payload)));
                wal.append(new).map(drop)
            },
            flushed,
        )
    }

    /// Waits until everything written before this call is durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.log.write_durably(|_| Ok(())).await
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
        Ok(self.log.log_state())
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            log: self.log.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = Stored(*vote);
        self.log
            .write_durably(|wal| wal.save_vote(vote).map(drop))
            .await
            .map_err(StoreError::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.log.wal().log_state().vote().map(|vote| vote.0))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Buffered: the next flush writes it (see the module docs). openraft never moves the
        // committed id back to nothing.
        if let Some(committed) = committed {
            self.log
                .store
                .counters
                .committed_index
                .fetch_max(committed.index, Ordering::Relaxed);
            self.log
                .wal()
                .commit(Stored(committed))
                .map_err(|e| StoreError::Io(e).write_logs())?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.log.wal().log_state().committed().map(|id| id.0))
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
        self.log
            .write_durably(|wal| wal.truncate(log_id.index).map(drop))
            .await
            .map_err(StoreError::write_logs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.log
            .write_durably(|wal| wal.purge(Stored(log_id)).map(drop))
            .await
            .map_err(StoreError::write_logs)
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use raft_log::Types;

    use super::*;

    /// A record's value reads back as it was written, and a length past the bound is
    /// refused before anything is allocated for it.
    #[test]
    fn stored_values_round_trip_and_lengths_are_bounded() {
        let log_id = LogId::new(CommittedLeaderId::new(3, 7), 42);
        let mut bytes = Vec::new();
        let written = Stored(log_id).encode(&mut bytes).unwrap();
        assert_eq!(written, bytes.len());
        let read: Stored<LogId> = Stored::decode(bytes.as_slice()).unwrap();
        assert_eq!(read.0, log_id);

        let mut huge = ((MAX_VALUE_BYTES + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let err = Stored::<LogId>::decode(huge.as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // A record cut short is an error, not a default value.
        assert!(Stored::<LogId>::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// Chunk files are sized up front and written in place (vendor/chunked-wal): a log over
    /// many chunks, each closed one cut to its records, reads back whole after a reopen,
    /// which cuts the zero tail of the last one and starts a new chunk.
    #[test]
    fn a_log_over_many_preallocated_chunks_reads_back_whole_after_reopen() {
        use corvid_core::{Command, SessionKey};
        use raft_log::api::raft_log_writer::RaftLogWriter;

        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.wal.chunk_max_size = Some(4096);
        config.wal.chunk_max_records = Some(9);
        let config = Arc::new(config);
        let command = |i: u64| Command::Touch {
            session: SessionKey([i as u8; 32]),
            now: i,
        };
        let chunk_sizes = || {
            let mut chunks: Vec<(String, u64)> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, e.metadata().unwrap().len())
                })
                .collect();
            chunks.sort();
            chunks
        };
        {
            let mut wal = RaftLog::<Wal>::open(config.clone()).unwrap();
            for i in 1..=100 {
                let log_id = LogId::new(CommittedLeaderId::new(1, 1), i);
                let payload = EntryPayload::Normal(vec![command(i)]);
                wal.append([(Stored(log_id), Payload::Decoded(payload))])
                    .unwrap();
            }
            let (done, flushed) = std::sync::mpsc::channel();
            let callback = Flushed(Box::new(move |result| done.send(result).unwrap()));
            wal.flush(true, Some(callback)).unwrap();
            flushed.recv().unwrap().unwrap();
            let chunks = chunk_sizes();
            assert!(chunks.len() > 10, "{chunks:?}");
            let (open, closed) = chunks.split_last().unwrap();
            assert_eq!(open.1, 4096, "the open chunk is preallocated");
            for (name, len) in closed {
                // Nine records of ~110 bytes: well under the preallocated size.
                assert!(
                    *len < 2048,
                    "closed chunk {name} not cut to its records: {len}"
                );
            }
        }
        let before = chunk_sizes();
        let wal = RaftLog::<Wal>::open(config.clone()).unwrap();
        let after = chunk_sizes();
        assert_eq!(
            after.len(),
            before.len() + 1,
            "reopening starts a new chunk"
        );
        assert!(
            after[before.len() - 1].1 < 2048,
            "the old tail was cut: {after:?}"
        );
        let read: Vec<(u64, String)> = wal
            .read(1, 101)
            .map(|item| {
                let (log_id, payload) = item.unwrap();
                (
                    log_id.0.index,
                    format!("{:?}", payload.into_payload().unwrap()),
                )
            })
            .collect();
        let written: Vec<(u64, String)> = (1..=100)
            .map(|i| (i, format!("{:?}", EntryPayload::Normal(vec![command(i)]))))
            .collect();
        assert_eq!(read, written);
    }

    /// A log in a fresh directory with one 1 MiB chunk: small entries `1..=3`, then entry 4
    /// of about 40 KiB, then `extra` small entries. Returns the chunk file's name and bytes,
    /// and where entry 4's record is in it.
    fn log_image(extra: u64) -> (String, Vec<u8>, std::ops::Range<usize>) {
        use corvid_core::{Command, SessionKey};

        let dir = tempfile::tempdir().unwrap();
        let mut wal = RaftLog::<Wal>::open(Arc::new(small_chunks(dir.path()))).unwrap();
        let entry = |index: u64, commands: u64| {
            let payload = EntryPayload::Normal(
                (0..commands)
                    .map(|i| Command::Touch {
                        session: SessionKey([(i % 251 + 1) as u8; 32]),
                        now: i,
                    })
                    .collect(),
            );
            let log_id = LogId::new(CommittedLeaderId::new(1, 1), index);
            (Stored(log_id), Payload::Decoded(payload))
        };
        let flush = |wal: &mut RaftLog<Wal>| {
            let (done, flushed) = std::sync::mpsc::channel();
            let callback = Flushed(Box::new(move |result| done.send(result).unwrap()));
            wal.flush(true, Some(callback)).unwrap();
            flushed.recv().unwrap().unwrap();
            wal.on_disk_size() as usize
        };
        wal.append((1..=3).map(|i| entry(i, 1))).unwrap();
        let start = flush(&mut wal);
        wal.append([entry(4, 1000)]).unwrap();
        let end = flush(&mut wal);
        wal.append((5..5 + extra).map(|i| entry(i, 1))).unwrap();
        flush(&mut wal);
        drop(wal);
        let mut chunks: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        assert_eq!(chunks.len(), 1, "{chunks:?}");
        let path = chunks.pop().unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            end - start > 32 << 10,
            "entry 4 takes {} bytes",
            end - start
        );
        (name, std::fs::read(&path).unwrap(), start..end)
    }

    fn small_chunks(dir: &std::path::Path) -> raft_log::Config {
        let mut config = config(dir);
        config.wal.chunk_max_size = Some(1 << 20);
        config
    }

    /// Opens a log whose one chunk file holds `bytes`.
    fn open_image(name: &str, bytes: &[u8]) -> io::Result<RaftLog<Wal>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), bytes).unwrap();
        RaftLog::<Wal>::open(Arc::new(small_chunks(dir.path())))
    }

    fn indexes(wal: &RaftLog<Wal>) -> Vec<u64> {
        let last = wal.log_state().last().map_or(0, |id| id.0.index);
        wal.read(1, last + 1)
            .map(|item| item.unwrap().0 .0.index)
            .collect()
    }

    /// A crash while a record is being written leaves the record's first pages and zeros
    /// after them (chunks are sized up front, so the file is not short), or, on a file that
    /// grew, a short file. Cut at every page boundary inside a large last record, either
    /// way the log opens, without that record and with every one before it.
    #[test]
    fn a_record_torn_at_any_page_boundary_is_cut_and_the_log_opens() {
        let (name, image, record) = log_image(0);
        let first_page = record.start / 4096 + 1;
        let cuts: Vec<usize> = (first_page..)
            .map(|page| page * 4096)
            .take_while(|&cut| cut < record.end)
            .collect();
        assert!(cuts.len() >= 8, "{cuts:?}");
        for cut in cuts {
            let mut zeroed = image.clone();
            zeroed[cut..].fill(0);
            let wal = open_image(&name, &zeroed)
                .unwrap_or_else(|e| panic!("zeros from {cut}: the log does not open: {e}"));
            assert_eq!(indexes(&wal), [1, 2, 3], "zeros from {cut}");
            drop(wal);

            let wal = open_image(&name, &image[..cut])
                .unwrap_or_else(|e| panic!("cut at {cut}: the log does not open: {e}"));
            assert_eq!(indexes(&wal), [1, 2, 3], "cut at {cut}");
        }
        // Untouched, the record is there.
        assert_eq!(indexes(&open_image(&name, &image).unwrap()), [1, 2, 3, 4]);
    }

    /// Damage that no crash leaves behind is reported, not cut: a bad record followed by
    /// good ones, or a changed byte in the last record, stops the log from opening, with a
    /// message that says so and names the file.
    #[test]
    fn a_damaged_record_is_refused_with_a_clear_error() {
        let (name, image, record) = log_image(2);
        let refused = |bytes: &[u8], what: &str| {
            let err = open_image(&name, bytes)
                .err()
                .unwrap_or_else(|| panic!("{what}: the damaged log opened"));
            let message = err.to_string();
            assert!(message.contains("damaged record"), "{what}: {message}");
            assert!(message.contains(&name), "{what}: {message}");
        };

        let mut page_lost = image.clone();
        let page = (record.start / 4096 + 1) * 4096;
        page_lost[page..page + 4096].fill(0);
        refused(&page_lost, "a zeroed page with records after it");

        let end = image.iter().rposition(|b| *b != 0).unwrap() + 1;
        let mut flipped = image.clone();
        flipped[end - 20] ^= 0x10;
        refused(&flipped, "a changed byte in the last record");

        let mut flipped = image.clone();
        flipped[record.start + (record.end - record.start) / 2] ^= 0x10;
        refused(&flipped, "a changed byte in a record before others");
    }

    /// A payload written decoded reads back encoded (nothing is decoded while the log is
    /// opened), and decodes to what was written; its size is the same either way.
    #[test]
    fn payloads_read_back_encoded_and_decode_to_what_was_written() {
        use corvid_core::{Command, SessionKey};
        let payload = EntryPayload::Normal(vec![Command::Touch {
            session: SessionKey([7; 32]),
            now: 1_700_000_000_000,
        }]);
        let written = Payload::Decoded(payload.clone());
        let mut bytes = Vec::new();
        written.encode(&mut bytes).unwrap();
        let read = <Payload as Decode>::decode(bytes.as_slice()).unwrap();
        assert!(matches!(read, Payload::Encoded(_)));
        assert_eq!(Wal::payload_size(&read), Wal::payload_size(&written));
        let decoded = read.into_payload().unwrap();
        assert_eq!(format!("{decoded:?}"), format!("{payload:?}"));
    }
}
