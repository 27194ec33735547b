use std::io;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::WalTypes;
use crate::wal::flush_request::SeqRequest;
use crate::wal::flush_request::WorkerRequest;
use crate::wal::flush_worker::FlushWorker;
use crate::wal::flush_worker::WorkerState;
use crate::wal::write_batch::WriteBatch;

/// Where the flush worker runs.
///
/// Corvid patch: the worker either runs on its own thread (the default) or,
/// with `Config::inline_flush`, is owned here and carries out each request
/// inside [`FlushClient::send`].
enum Flusher<W>
where W: WalTypes
{
    /// The worker runs on its own thread and reads requests from a channel.
    Thread {
        /// Channel for sending ordered requests to the flush worker.
        ///
        /// `None` after [`FlushClient::close`], which rejects further
        /// requests.
        tx: Option<SyncSender<SeqRequest<W>>>,

        /// Handle of the worker thread, joined by [`FlushClient::close`].
        handle: Option<JoinHandle<()>>,
    },

    /// The worker carries out each request on the sender's thread.
    Inline {
        /// `None` after [`FlushClient::close`], which rejects further
        /// requests.
        worker: Option<FlushWorker<W>>,

        /// The one-request batch the worker is handed, kept so its write
        /// vector is allocated once.
        batch: WriteBatch<W>,
    },
}

/// Sends sequenced requests to the flush worker and tracks its progress.
pub(super) struct FlushClient<W>
where W: WalTypes
{
    flusher: Flusher<W>,

    /// Sequence number assigned to the most recent request.
    sent_seq: u64,

    /// Shared completion and failure state reported by the flush worker.
    state: Arc<WorkerState>,
}

impl<W> FlushClient<W>
where W: WalTypes
{
    /// Creates a client of a worker thread, with no requests assigned.
    pub(super) fn new(
        tx: SyncSender<SeqRequest<W>>,
        handle: JoinHandle<()>,
        state: Arc<WorkerState>,
    ) -> Self {
        Self {
            flusher: Flusher::Thread {
                tx: Some(tx),
                handle: Some(handle),
            },
            sent_seq: 0,
            state,
        }
    }

    /// Creates a client that carries out each request as it is sent, on the
    /// sender's thread, with no requests assigned.
    ///
    /// Corvid patch: for `Config::inline_flush`.
    pub(super) fn new_inline(
        worker: FlushWorker<W>,
        state: Arc<WorkerState>,
    ) -> Self {
        Self {
            flusher: Flusher::Inline {
                worker: Some(worker),
                // A batch holds one request here, never more.
                batch: WriteBatch::new(1),
            },
            sent_seq: 0,
            state,
        }
    }

    /// Assigns the next sequence number and sends the request to the worker.
    ///
    /// With an inline worker the request is carried out before this returns:
    /// written, synced if asked, its callbacks called and its sequence marked
    /// done. Its outcome is reported as a worker thread reports it, through
    /// the callbacks and [`FlushClient::wait_idle`]; this returns `Ok` once
    /// the request was accepted. After a failure, every further request is
    /// refused, as by a stopped worker thread.
    pub(super) fn send(
        &mut self,
        req: WorkerRequest<W>,
    ) -> Result<(), io::Error> {
        if self.is_closed() {
            return Err(io::Error::other(
                "Failed to send request: WAL is shut down",
            ));
        }

        // A stopped worker thread leaves a closed channel, whose send fails
        // with `Other`; a failed inline worker refuses the same way.
        if let Flusher::Inline { .. } = self.flusher {
            self.state.failure().map_err(|e| {
                io::Error::other(format!(
                    "Failed to send request: WAL failed: {}",
                    e
                ))
            })?;
        }

        // Reserve the request's memory before queueing it, so a slow worker
        // throttles the sender instead of letting queued data grow without
        // bound. An inline worker has released everything by the time the
        // next request comes, so this never blocks it.
        let reserved = match &req {
            WorkerRequest::Write(write) => write.data.len(),
            _ => 0,
        };
        self.state.queued_bytes().acquire(reserved);

        self.sent_seq += 1;
        let seq_req = SeqRequest {
            seq: self.sent_seq,
            queued_at: Instant::now(),
            req,
        };

        match &mut self.flusher {
            Flusher::Thread { tx, .. } => {
                let Some(tx) = tx.as_ref() else {
                    unreachable!("a closed client sends nothing");
                };
                let res = tx.send(seq_req).map_err(|e| {
                    io::Error::other(format!("Failed to send request: {}", e))
                });

                if res.is_err() {
                    self.state.queued_bytes().release(reserved);
                }

                res
            }
            Flusher::Inline { worker, batch } => {
                let Some(worker) = worker.as_mut() else {
                    unreachable!("a closed client sends nothing");
                };
                worker.run_one(batch, seq_req);
                Ok(())
            }
        }
    }

    /// Returns whether [`FlushClient::close`] was called.
    pub(super) fn is_closed(&self) -> bool {
        match &self.flusher {
            Flusher::Thread { tx, .. } => tx.is_none(),
            Flusher::Inline { worker, .. } => worker.is_none(),
        }
    }

    /// Rejects further requests and stops the worker once its queue is
    /// drained: joins the worker thread, or drops the inline worker.
    pub(super) fn close(&mut self) -> Result<(), io::Error> {
        match &mut self.flusher {
            Flusher::Thread { tx, handle } => {
                // Drop the sender so the worker returns once its queue is
                // drained.
                *tx = None;

                let Some(handle) = handle.take() else {
                    return Ok(());
                };
                handle.join().map_err(|_panic| {
                    io::Error::other("flush worker thread panicked")
                })
            }
            Flusher::Inline { worker, .. } => {
                *worker = None;
                Ok(())
            }
        }
    }

    /// Waits until the worker reaches the current sequence or reports failure.
    ///
    /// An inline worker has carried out every request already, so this
    /// returns at once.
    pub(super) fn wait_idle(&self) -> Result<(), io::Error> {
        match self.flusher {
            Flusher::Thread { .. } => self.state.wait_for(self.sent_seq),
            Flusher::Inline { .. } => self.state.check_done(self.sent_seq),
        }
    }

    /// Returns the sequence number assigned to the most recent request.
    pub(super) fn sent_seq(&self) -> u64 {
        self.sent_seq
    }

    /// Returns the highest sequence number completed by the worker.
    pub(super) fn done_seq(&self) -> u64 {
        self.state.done_seq()
    }

    /// Returns the bytes of write requests reserved and not yet released.
    #[cfg(test)]
    pub(super) fn queued_bytes_used(&self) -> usize {
        self.state.queued_bytes().used()
    }
}
