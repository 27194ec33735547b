use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::mpsc::Receiver;
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;

use log::debug;
use log::info;

use crate::Config;
use crate::WalTypes;
use crate::wal::atomic_flush_metrics::AtomicFlushMetrics;
use crate::wal::batch_metrics::BatchMetrics;
use crate::wal::callback::Callback;
use crate::wal::file_entry::FileEntry;
use crate::wal::file_persisted::ChunkPersisted;
use crate::wal::flush_request::FlushStat;
use crate::wal::flush_request::SeqRequest;
use crate::wal::flush_request::WorkerRequest;
use crate::wal::queued_bytes::QueuedBytes;
use crate::wal::queued_write::QueuedWrite;
use crate::wal::write_batch::WriteBatch;

#[derive(Debug)]
pub(crate) enum WorkerStatus {
    Running,
    Failed(io::Error),
}

#[derive(Debug)]
struct WorkerProgress {
    done_seq: u64,
    status: WorkerStatus,
}

/// Flow control shared by the WAL and its flush worker.
///
/// The WAL waits here for completion and failure reports, and for queued
/// write memory to be freed.
#[derive(Debug)]
pub(crate) struct WorkerState {
    progress: Mutex<WorkerProgress>,
    changed: Condvar,
    queued_bytes: QueuedBytes,
}

impl WorkerState {
    pub(crate) fn new(queue_max_bytes: usize) -> Self {
        Self {
            progress: Mutex::new(WorkerProgress {
                done_seq: 0,
                status: WorkerStatus::Running,
            }),
            changed: Condvar::new(),
            queued_bytes: QueuedBytes::new(queue_max_bytes),
        }
    }

    pub(crate) fn queued_bytes(&self) -> &QueuedBytes {
        &self.queued_bytes
    }

    pub(crate) fn done_seq(&self) -> u64 {
        self.progress.lock().unwrap().done_seq
    }

    pub(crate) fn complete(&self, seq: u64) {
        let mut progress = self.progress.lock().unwrap();
        progress.done_seq = progress.done_seq.max(seq);
        self.changed.notify_all();
    }

    /// Returns the failure that stopped the worker, if any.
    ///
    /// Corvid patch: lets an inline flush refuse requests once it failed, as
    /// the closed channel of a stopped worker thread does.
    pub(crate) fn failure(&self) -> Result<(), io::Error> {
        status_error(&self.progress.lock().unwrap().status)
    }

    /// Returns at once whether every request up to `target_seq` is done.
    ///
    /// Corvid patch: an inline flush finishes each request before its send
    /// returns, so it never has anything to wait for; a request neither done
    /// nor failed would be a bug, reported instead of waited on forever.
    pub(crate) fn check_done(&self, target_seq: u64) -> Result<(), io::Error> {
        let progress = self.progress.lock().unwrap();
        if progress.done_seq >= target_seq {
            return Ok(());
        }

        status_error(&progress.status)?;
        Err(io::Error::other(format!(
            "inline flush: request {} is not done, last done is {}",
            target_seq, progress.done_seq
        )))
    }

    pub(crate) fn fail(&self, err: io::Error) {
        let mut progress = self.progress.lock().unwrap();
        progress.status = WorkerStatus::Failed(err);
        self.changed.notify_all();
    }

    pub(crate) fn wait_for(&self, target_seq: u64) -> Result<(), io::Error> {
        let mut progress = self.progress.lock().unwrap();
        loop {
            if progress.done_seq >= target_seq {
                return Ok(());
            }

            status_error(&progress.status)?;
            progress = self.changed.wait(progress).unwrap();
        }
    }
}

fn status_error(status: &WorkerStatus) -> Result<(), io::Error> {
    match status {
        WorkerStatus::Running => Ok(()),
        WorkerStatus::Failed(err) => {
            Err(io::Error::new(err.kind(), err.to_string()))
        }
    }
}

/// Carries out write, sync and chunk requests, in the order they were sent.
///
/// Corvid patch: the worker no longer owns the request channel. On its own
/// thread (the default, [`FlushWorker::spawn`]) it reads requests from the
/// channel; with `Config::inline_flush` the `FlushClient` owns it and hands it
/// each request as it is sent ([`FlushWorker::run_one`]). Both go through
/// [`FlushWorker::process_batch`].
pub(crate) struct FlushWorker<W>
where W: WalTypes
{
    files: Vec<FileEntry<W>>,
    metrics: Arc<AtomicFlushMetrics>,
    config: Arc<Config>,
    worker_state: Arc<WorkerState>,
}

impl<W> FlushWorker<W>
where W: WalTypes
{
    /// When starting, there is at most one open chunk file that is not sync.
    pub(crate) fn spawn(self, rx: Receiver<SeqRequest<W>>) -> JoinHandle<()> {
        std::thread::Builder::new()
            .name("chunked_wal_flush_worker".to_string())
            .spawn(move || {
                self.run(rx);
            })
            .expect("Failed to start sync worker thread")
    }

    pub(crate) fn new(
        file_entry: FileEntry<W>,
        worker_state: Arc<WorkerState>,
        metrics: Arc<AtomicFlushMetrics>,
        config: Arc<Config>,
    ) -> Self {
        Self {
            files: vec![file_entry],
            metrics,
            config,
            worker_state,
        }
    }

    /// Runs the worker and records any failure in the shared worker state.
    ///
    /// User code runs on this thread through the write and chunk-persisted
    /// callbacks. Catching its panics keeps a panicking callback from
    /// unwinding the thread silently, which would leave every
    /// `wait_worker_idle` caller blocked forever.
    fn run(mut self, rx: Receiver<SeqRequest<W>>) {
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.run_inner(&rx)
        }));

        self.stop(res);
    }

    /// Carries out one request on the caller's thread, as the worker thread
    /// would: for `Config::inline_flush`.
    ///
    /// There is nothing to gather a batch from: every earlier request was
    /// carried out by the call that sent it. A failure, or a panic in a
    /// callback, is recorded in the worker state exactly as when it stops the
    /// worker thread; the caller must then send nothing more.
    ///
    /// Corvid patch.
    pub(crate) fn run_one(
        &mut self,
        batch: &mut WriteBatch<W>,
        seq_req: SeqRequest<W>,
    ) {
        batch.reset();
        batch.push_seq_request(seq_req);

        let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.process_batch(batch, Duration::ZERO)
        }));

        if !matches!(res, Ok(Ok(()))) {
            self.stop(res);
        }
    }

    /// Records why the worker stopped, and frees what it held queued.
    fn stop(&self, res: std::thread::Result<Result<(), io::Error>>) {
        // A stopped worker never frees queued write memory again. Release it
        // so a sender blocked on the byte limit wakes and sees the closed
        // channel instead of waiting forever.
        self.worker_state.queued_bytes().release_all();

        let err = match res {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(payload) => io::Error::other(format!(
                "FlushWorker panicked: {}",
                panic_message(payload.as_ref())
            )),
        };

        log::error!("FlushWorker failed: {}", err);
        self.worker_state.fail(err);
    }

    fn run_inner(
        &mut self,
        rx: &Receiver<SeqRequest<W>>,
    ) -> Result<(), io::Error> {
        // Write requests should be batched to maximize throughput. One batch
        // serves every iteration so its write vector is allocated once.
        let mut batch = WriteBatch::new(self.config.flush_batch_max_items());

        loop {
            batch.reset();

            let req = rx.recv();
            let Ok(seq_req) = req else {
                log::info!("FlushWorker input channel closed, quit");
                return Ok(());
            };

            let group_wait = if batch.push_seq_request(seq_req) {
                self.collect_write_batch(rx, &mut batch)
            } else {
                Duration::ZERO
            };

            self.process_batch(&mut batch, group_wait)?;
        }
    }

    /// Carries out a batch: its writes, if any, then the request that ended
    /// it, if any, and reports them done.
    ///
    /// A batch without writes holds one other request, which is carried out
    /// alone. Corvid patch: taken out of `run_inner` so that an inline flush
    /// runs the same code.
    pub(crate) fn process_batch(
        &mut self,
        batch: &mut WriteBatch<W>,
        group_wait: Duration,
    ) -> Result<(), io::Error> {
        if batch.writes.is_empty() {
            let Some(SeqRequest { seq, req, .. }) =
                batch.last_non_flush.take()
            else {
                return Ok(());
            };
            self.handle_non_flush_request(req)?;
            self.worker_state.complete(seq);
            return Ok(());
        }

        debug!("batched write: {}", batch.writes.len());

        let batch_bytes: usize =
            batch.writes.iter().map(|w| w.write.data.len()).sum();

        let sync_result = {
            let last = self.files.last().unwrap();
            let batch_start = Instant::now();
            let mut batch_metrics =
                BatchMetrics::new(batch.writes.len(), group_wait);
            for w in &batch.writes {
                batch_metrics.record_queued_write(batch_start, w);
            }

            let write_start = Instant::now();
            let write_res =
                write_batch_at(&last.f, last.starting_offset, &batch.writes);
            batch_metrics.record_write_time(write_start);

            let need_sync = batch.writes.iter().any(|w| w.write.sync);

            let sync_result = match write_res {
                Ok(()) if need_sync => {
                    let upto_offset =
                        batch.writes.last().unwrap().write.upto_offset;
                    let sync_start = Instant::now();
                    let res = self.sync_data_files(upto_offset);
                    batch_metrics.record_sync_time(sync_start);
                    if let Err(ref e) = res {
                        log::error!(
                            "Failed to flush upto offset {}: {}",
                            upto_offset,
                            e
                        );
                    }
                    res
                }
                Ok(()) => Ok(()),
                Err(e) => Err(e),
            };

            batch_metrics.record_batch_time(batch_start);
            self.metrics.record_batch(batch_metrics);

            sync_result
        };

        let mut max_seq = batch.max_seq;
        let last_non_flush = batch.last_non_flush.take();

        for w in batch.writes.drain(..) {
            if let Some(cb) = w.write.callback {
                match &sync_result {
                    Ok(()) => cb.send(Ok(())),
                    Err(e) => {
                        cb.send(Err(io::Error::new(
                            e.kind(),
                            e.to_string(),
                        )));
                    }
                }
            }
        }

        self.worker_state.queued_bytes().release(batch_bytes);

        sync_result?;

        // Handle the last non-flush request
        if let Some(SeqRequest {
            seq: nf_seq,
            req: last,
            ..
        }) = last_non_flush
        {
            self.handle_non_flush_request(last)?;
            max_seq = max_seq.max(nf_seq);
        }

        self.worker_state.complete(max_seq);

        Ok(())
    }

    fn collect_write_batch(
        &self,
        rx: &Receiver<SeqRequest<W>>,
        batch: &mut WriteBatch<W>,
    ) -> Duration {
        let loop_started_at = Instant::now();
        let loop_deadline = loop_started_at + self.config.flush_batch_wait();

        while batch.last_non_flush.is_none()
            && batch.writes.len() < batch.max_size
        {
            let now = Instant::now();
            if loop_deadline <= now {
                break;
            }

            let remaining = loop_deadline - now;
            match rx.recv_timeout(remaining) {
                Ok(seq_req) => {
                    if !batch.push_seq_request(seq_req) {
                        break;
                    }
                }
                Err(
                    RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected,
                ) => break,
            }
        }

        loop_started_at.elapsed()
    }

    fn handle_non_flush_request(
        &mut self,
        req: WorkerRequest<W>,
    ) -> Result<(), io::Error> {
        match req {
            WorkerRequest::AppendFile(file_entry) => {
                info!("FlushWorker: AppendFile: {}", file_entry);
                // Corvid patch: the chunk being closed was sized to its maximum
                // when created; cut it to what was written before its successor
                // gets a record. All its writes came before this request and
                // the last of them was synced, and until the successor has its
                // first record, recovery drops the successor and treats this
                // chunk as the tail, whose zero tail it accepts.
                if let Some(closing) = self.files.last() {
                    let len = file_entry.starting_offset - closing.starting_offset;
                    closing.f.set_len(len)?;
                    closing.f.sync_all()?;
                }
                self.files.push(file_entry);
            }
            WorkerRequest::Write(_) => {
                unreachable!("Write request should be handled in run()");
            }
            WorkerRequest::GetFlushStat { tx } => {
                let stat = self
                    .files
                    .iter()
                    .map(|f| {
                        Ok(FlushStat {
                            starting_offset: f.starting_offset,
                            sync_id: f.sync_id,
                            ino: f.f.metadata()?.ino(),
                        })
                    })
                    .collect::<Result<Vec<_>, io::Error>>()?;
                let _ = tx.send(stat);
            }
            WorkerRequest::RemoveChunks { chunk_paths } => {
                info!("FlushWorker: RemoveChunks: {:?}", chunk_paths);
                let removed_any = !chunk_paths.is_empty();
                for path in chunk_paths {
                    std::fs::remove_file(path)?;
                }
                if removed_any {
                    // Commit the unlinks so a removed chunk cannot reappear
                    // after power loss.
                    self.config.sync_dir()?;
                }
            }
        }

        Ok(())
    }

    pub fn sync_data_files(&mut self, offset: u64) -> Result<(), io::Error> {
        let files = &mut self.files;

        if files.is_empty() {
            return Ok(());
        }

        // Append-only WAL flushes only need file data durability. Metadata
        // changes such as recovery truncation are synchronized at the call
        // site that performs the metadata update.
        while files.len() > 1 {
            let f = files.remove(0);
            f.f.sync_data()?;
        }

        let f = &mut files[0];
        f.f.sync_data()?;
        f.on_persisted.call(ChunkPersisted {
            starting_offset: f.starting_offset,
            synced_offset: offset,
        });
        f.sync_id = offset;

        Ok(())
    }
}

/// Renders a caught panic payload as text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        return (*message).to_string();
    }

    if let Some(message) = payload.downcast_ref::<String>() {
        return message.clone();
    }

    "unknown panic payload".to_string()
}

/// Writes the batch in place: each write at its own position in the chunk
/// starting at global offset `file_start` (it ends at its `upto_offset`),
/// contiguous writes gathered into one `pwrite`.
///
/// Corvid patch: chunks are preallocated, so the end of the file is not where
/// the next record goes, and positional writes (like the reads) cannot be
/// misplaced by a moved cursor on the shared file description.
fn write_batch_at<W>(
    file: &File,
    file_start: u64,
    writes: &[QueuedWrite<W>],
) -> Result<(), io::Error>
where
    W: WalTypes,
{
    let start_of = |w: &QueuedWrite<W>| {
        w.write.upto_offset - w.write.data.len() as u64 - file_start
    };
    let mut nonempty = writes.iter().filter(|w| !w.write.data.is_empty());
    if let (Some(only), None) = (nonempty.next(), nonempty.next()) {
        return file.write_all_at(&only.write.data, start_of(only));
    }

    let mut run: Vec<u8> = Vec::new();
    let mut run_start = 0;

    for w in writes.iter().filter(|w| !w.write.data.is_empty()) {
        let data = &w.write.data;
        let start = start_of(w);
        if !run.is_empty() && run_start + run.len() as u64 != start {
            file.write_all_at(&run, run_start)?;
            run.clear();
        }
        if run.is_empty() {
            run_start = start;
        }
        run.extend_from_slice(data);
    }

    if !run.is_empty() {
        file.write_all_at(&run, run_start)?;
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;
    use std::sync::mpsc::SyncSender;
    use std::sync::mpsc::sync_channel;
    use std::time::Duration;
    use std::time::Instant;

    use crate::Config;
    use crate::WalTypes;
    use crate::wal::atomic_flush_metrics::AtomicFlushMetrics;
    use crate::wal::flush_request::SeqRequest;
    use crate::wal::flush_request::WorkerRequest;
    use crate::wal::flush_request::WriteRequest;
    use crate::wal::flush_worker::FlushWorker;
    use crate::wal::flush_worker::WorkerState;
    use crate::wal::write_batch::WriteBatch;

    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    struct TestWal;

    impl WalTypes for TestWal {
        type Action = String;
        type Checkpoint = String;
        type Callback = SyncSender<Result<(), io::Error>>;
    }

    fn worker(flush_batch_wait: Duration) -> FlushWorker<TestWal> {
        let mut config = Config::new("no-such-dir");
        config.flush_batch_wait = Some(flush_batch_wait);
        config.flush_batch_max_items = Some(8);

        FlushWorker {
            files: Vec::new(),
            metrics: Arc::new(AtomicFlushMetrics::default()),
            config: Arc::new(config),
            worker_state: Arc::new(WorkerState::new(1024)),
        }
    }

    fn write_request(seq: u64) -> SeqRequest<TestWal> {
        SeqRequest {
            seq,
            queued_at: Instant::now(),
            req: WorkerRequest::Write(WriteRequest {
                upto_offset: seq,
                data: vec![seq as u8],
                sync: false,
                callback: None,
            }),
        }
    }

    #[test]
    fn test_worker_state_waits_for_completion() -> Result<(), io::Error> {
        let state = WorkerState::new(1024);

        state.complete(3);

        assert_eq!(3, state.done_seq());
        state.wait_for(2)?;
        state.wait_for(3)?;
        Ok(())
    }

    #[test]
    fn test_worker_state_wait_returns_failure() {
        let state = WorkerState::new(1024);
        let err = io::Error::new(io::ErrorKind::PermissionDenied, "no write");

        state.fail(err);

        let got = state.wait_for(1).unwrap_err();
        assert_eq!(io::ErrorKind::PermissionDenied, got.kind());
        assert_eq!("no write", got.to_string());
    }

    #[test]
    fn test_sync_data_files_empty_file_list() -> Result<(), io::Error> {
        let mut worker = worker(Duration::ZERO);

        worker.sync_data_files(10)?;

        assert!(worker.files.is_empty());
        Ok(())
    }

    #[test]
    fn test_collect_write_batch_stops_at_deadline() {
        let (_tx, rx) = sync_channel(1);
        let worker = worker(Duration::ZERO);
        let mut batch = WriteBatch::new(8);
        assert!(batch.push_seq_request(write_request(1)));

        worker.collect_write_batch(&rx, &mut batch);

        assert_eq!(1, batch.writes.len());
        assert_eq!(1, batch.max_seq);
        assert!(batch.last_non_flush.is_none());
    }

    #[test]
    fn test_collect_write_batch_stops_at_non_write_request() {
        let (tx, rx) = sync_channel(1);
        tx.send(SeqRequest {
            seq: 2,
            queued_at: Instant::now(),
            req: WorkerRequest::RemoveChunks {
                chunk_paths: vec!["obsolete".to_string()],
            },
        })
        .unwrap();

        let worker = worker(Duration::from_secs(1));
        let mut batch = WriteBatch::new(8);
        assert!(batch.push_seq_request(write_request(1)));

        worker.collect_write_batch(&rx, &mut batch);

        assert_eq!(1, batch.writes.len());
        assert_eq!(1, batch.max_seq);
        let last = batch.last_non_flush.unwrap();
        assert_eq!(2, last.seq);
        assert!(matches!(
            last.req,
            WorkerRequest::RemoveChunks { chunk_paths }
                if chunk_paths == vec!["obsolete".to_string()]
        ));
    }
}
