use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use codeq::Encode;

use crate::ChunkId;
use crate::Config;
use crate::chunk::Chunk;
use crate::types::Segment;

#[derive(Debug)]
pub(crate) struct OpenChunk<Rec> {
    pending_data: Vec<u8>,
    pub(crate) chunk: Chunk<Rec>,
}

impl<Rec> OpenChunk<Rec> {
    /// Creates a new open chunk from an existing chunk.
    pub(crate) fn new(chunk: Chunk<Rec>) -> Self {
        Self {
            pending_data: Vec::new(),
            chunk,
        }
    }

    /// Hands the encoded pending records to the caller.
    ///
    /// The replacement buffer keeps the capacity the previous one reached, so
    /// a steady batch size stops re-growing the buffer on every flush.
    pub(crate) fn take_pending_data(&mut self) -> Vec<u8> {
        let capacity = self.pending_data.capacity();
        let replacement = Vec::with_capacity(capacity);
        std::mem::replace(&mut self.pending_data, replacement)
    }
}

impl<Rec> OpenChunk<Rec>
where Rec: Encode
{
    pub(crate) fn create_empty(
        config: Arc<Config>,
        chunk_id: ChunkId,
    ) -> Result<Self, io::Error> {
        let f = Self::create_file(config.clone(), chunk_id)?;

        let open = Self::from_file(chunk_id, f)?;

        Ok(open)
    }

    pub(crate) fn from_file(
        chunk_id: ChunkId,
        f: Arc<File>,
    ) -> Result<Self, io::Error> {
        let record_offsets = vec![*chunk_id];

        let chunk = Chunk {
            f,
            global_offsets: record_offsets,
            truncated: None,
            _p: Default::default(),
        };

        let open = Self {
            pending_data: Vec::new(),
            chunk,
        };

        Ok(open)
    }

    /// Create a new open chunk and append an initial record to it.
    /// But does not fsync it.
    pub(crate) fn create_with_initial_record(
        config: Arc<Config>,
        chunk_id: ChunkId,
        initial_record: Rec,
    ) -> Result<Self, io::Error> {
        let mut open = Self::create_empty(config, chunk_id)?;

        open.append_record(&initial_record)?;
        open.chunk.f.write_all_at(&open.pending_data, 0)?;
        open.pending_data.clear();

        Ok(open)
    }

    pub(crate) fn create_file(
        config: Arc<Config>,
        chunk_id: ChunkId,
    ) -> Result<Arc<File>, io::Error> {
        let path = config.chunk_path(chunk_id);
        // Corvid patch: the file is given its full size up front (its tail
        // reads as zeros) and written in place, at the cursor, which only
        // the first record's write and then the flush worker move; reads are
        // positional. An fdatasync then flushes the data alone, where after an
        // append it must also commit the file's new length (on ext4 a journal
        // commit: ~0.2 ms against ~0.14 ms a flush). Recovery already reads a
        // zero tail as the end of the last chunk; the flush worker cuts a
        // chunk to its length once it is closed (`FlushWorker`, `AppendFile`).
        let f = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)?;
        // Corvid patch: the space is reserved (`fallocate`), not left sparse,
        // so that a full disk fails here, where the chunk is created, and
        // never in the middle of writing a record into it. A chunk that could
        // not be given its space is removed again (recovery would remove it
        // anyway: it has no first record).
        if let Err(e) = Self::reserve(&f, config.chunk_max_size() as u64) {
            drop(f);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        f.sync_all()?;

        // Commit the new file name before any of its records can be
        // acknowledged as durable.
        config.sync_dir()?;

        Ok(Arc::new(f))
    }

    /// Reserves `len` bytes of disk for `f` and sets its length (Corvid
    /// patch). `posix_fallocate` returns its error instead of setting `errno`
    /// (which `fs2`'s `allocate` reads, reporting ENOSPC as "Success"), and
    /// refuses a zero length.
    fn reserve(f: &File, len: u64) -> Result<(), io::Error> {
        use std::os::unix::io::AsRawFd;

        if len == 0 {
            return Ok(());
        }
        let len = libc::off_t::try_from(len)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `f` is an open file descriptor for the whole call.
        let ret = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        Ok(())
    }

    pub(crate) fn append_record(
        &mut self,
        rec: &Rec,
    ) -> Result<Segment, io::Error> {
        let size = rec.encode(&mut self.pending_data)?;

        self.chunk.append_record_size(size as u64);

        Ok(self.chunk.last_segment())
    }
}
