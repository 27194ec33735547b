//! Manages the creation, opening, and management of log chunks.
//!
//! A chunk is a segment of the Write-Ahead Log (WAL) that contains a sequence
//! of records. Chunks are used to:
//! - Break down large logs into manageable pieces
//! - Enable efficient record lookup and iteration
//! - Support log truncation and cleanup
//!
//! Each chunk maintains its position in the global log using absolute offsets,
//! which allows for consistent addressing regardless of chunk boundaries.

pub mod chunk_id;
pub mod closed_chunk;
pub mod open_chunk;
pub mod record_iterator;

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use codeq::Decode;
use codeq::OffsetSize;
use codeq::error_context_ext::ErrorContextExt;
use log::debug;
use log::error;
use log::warn;
use record_iterator::RecordIterator;

use crate::Config;
use crate::chunk::chunk_id::ChunkId;
use crate::num::format_pad9_u64;
use crate::types::Segment;

/// Represents a chunk of the Write-Ahead Log containing a sequence of records.
///
/// A chunk maintains:
/// - A file handle for persistent storage
/// - Global offsets for all records it contains
/// - Metadata about its position in the complete log
#[derive(Debug, Clone)]
pub struct Chunk<Rec> {
    /// File handle for the chunk's persistent storage
    pub(crate) f: Arc<File>,

    /// The global offsets of each record in the file.
    ///
    /// Contains N+1 offsets where N is the number of records:
    /// - First offset is the chunk's starting position
    /// - Last offset is the end of the last record
    /// - Offsets are absolute positions in the complete log, not relative to
    ///   chunk start
    global_offsets: Vec<u64>,

    /// Records the original file size if the chunk was truncated due to an
    /// incomplete write.
    ///
    /// This field is primarily used for testing and debugging purposes.
    #[allow(dead_code)]
    truncated: Option<u64>,

    pub(crate) _p: PhantomData<Rec>,
}

impl<Rec> Chunk<Rec> {
    /// Returns the number of records stored in this chunk.
    pub fn records_count(&self) -> usize {
        self.global_offsets.len() - 1
    }

    /// Returns this chunk's globally unique identifier.
    pub fn chunk_id(&self) -> ChunkId {
        ChunkId(self.global_offsets[0])
    }

    /// Returns the segment representing the last record in this chunk.
    pub fn last_segment(&self) -> Segment {
        let offsets = &self.global_offsets;
        let l = offsets.len();

        let start = offsets[l - 2];
        let end = offsets[l - 1];

        Segment::new(start, end - start)
    }

    /// Returns the total size of this chunk in bytes.
    pub fn chunk_size(&self) -> u64 {
        self.end_offset()
    }

    /// Returns the size of this chunk in bytes, calculated as the difference
    /// between its end and start offsets.
    #[allow(dead_code)]
    pub fn end_offset(&self) -> u64 {
        self.global_offsets[self.global_offsets.len() - 1]
            - self.global_offsets[0]
    }

    /// Returns the global offset where this chunk begins.
    pub fn global_start(&self) -> u64 {
        self.global_offsets[0]
    }

    /// Returns the global offset where this chunk ends.
    #[allow(dead_code)]
    pub fn global_end(&self) -> u64 {
        self.global_offsets[self.global_offsets.len() - 1]
    }

    /// Returns the segment for the record at `index`.
    pub fn record_segment(&self, index: usize) -> Segment {
        let start = self.global_offsets[index];
        let end = self.global_offsets[index + 1];
        Segment::new(start, end - start)
    }

    /// Returns whether this chunk was truncated during recovery.
    pub fn is_truncated(&self) -> bool {
        self.truncated.is_some()
    }

    /// Returns the original file size if this chunk was truncated during
    /// recovery.
    pub fn truncated_file_size(&self) -> Option<u64> {
        self.truncated
    }

    /// Appends the size of a new record to the global offsets list.
    pub(crate) fn append_record_size(&mut self, size: u64) {
        let last = self.global_offsets[self.global_offsets.len() - 1];
        self.global_offsets.push(last + size);
    }

    pub fn open_chunk_file(
        config: &Config,
        chunk_id: ChunkId,
    ) -> Result<File, io::Error> {
        let path = config.chunk_path(chunk_id);
        // Reads and writes are positional (Corvid patch: not append mode,
        // whose `pwrite` on Linux ignores the offset).
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .context(|| format!("open {}", chunk_id))?;

        Ok(f)
    }
}

impl<Rec> Chunk<Rec>
where Rec: Decode + 'static
{
    pub(crate) fn open_with_truncate(
        config: Arc<Config>,
        chunk_id: ChunkId,
        allow_truncate: bool,
    ) -> Result<(Self, Vec<Rec>), io::Error> {
        let f = Self::open_chunk_file(&config, chunk_id)?;
        let arc_f = Arc::new(f);
        let file_size = arc_f.metadata()?.len();
        // Corvid patch: the iterator is kept to ask where a bad record's
        // decoding stopped (`handle_record_error`).
        let mut it = Self::record_iterator(&config, arc_f.clone(), chunk_id)?;

        let mut record_offsets = vec![chunk_id.offset()];
        let mut records = Vec::new();
        let mut truncate = false;

        while let Some(res) = it.next() {
            match res {
                Ok((seg, record)) => {
                    record_offsets.push(chunk_id.offset() + seg.end().0);
                    records.push(record);
                }
                Err(io_err) => {
                    let global_offset = record_offsets.last().copied().unwrap();
                    truncate = Self::handle_record_error(
                        io_err,
                        arc_f.clone(),
                        global_offset,
                        it.offset(),
                        chunk_id,
                        &config,
                        allow_truncate,
                    )?;
                    break;
                }
            };
        }

        let truncated = if truncate {
            arc_f
                .set_len(*record_offsets.last().unwrap() - chunk_id.offset())?;
            arc_f.sync_all()?;
            Some(file_size)
        } else {
            None
        };

        let chunk = Self {
            f: arc_f,
            global_offsets: record_offsets,
            truncated,
            _p: Default::default(),
        };

        Ok((chunk, records))
    }

    /// Handles a record read error and determines if truncation should occur.
    ///
    /// Returns `Ok(true)` if the file should be truncated at the error
    /// position. Returns `Err` if the error is unrecoverable.
    ///
    /// `read_end` is the offset in the file where decoding the bad record
    /// stopped (Corvid patch, see [`Self::is_torn_record`]).
    fn handle_record_error(
        io_err: io::Error,
        file: Arc<File>,
        global_offset: u64,
        read_end: u64,
        chunk_id: ChunkId,
        config: &Config,
        allow_truncate: bool,
    ) -> Result<bool, io::Error> {
        let at = format!(
            "at offset {} in chunk {}",
            format_pad9_u64(global_offset),
            chunk_id
        );
        // Corvid patch: a zero tail is what every chunk written in place has
        // after its last record: in the last chunk it is cut off whether or
        // not incomplete records may be, and reported at debug level. (Earlier
        // chunks are cut to their records when closed.) Upstream checked for
        // trailing zeros too (EXT4 `data=writeback` can leave them), but
        // truncated them only where incomplete records may be cut.
        let eof = io_err.kind() == io::ErrorKind::UnexpectedEof;
        let record_start = global_offset - chunk_id.offset();
        let zero_tail = !eof
            && Self::verify_trailing_zeros(
                file.clone(),
                record_start,
                chunk_id,
            )?;
        if zero_tail && allow_truncate {
            debug!("End of records {at}, zeros after it; truncating");
            return Ok(true);
        }

        // Corvid patch: a record torn by a crash while it was being written.
        // Its write was never followed by a completed fsync, so nobody was
        // told it is durable, and cutting it loses nothing acknowledged.
        if !eof
            && allow_truncate
            && Self::is_torn_record(&file, record_start, read_end)?
        {
            warn!(
                "Torn record {at} (written up to a page boundary, zeros after \
                 it): a write cut short by a crash; truncating"
            );
            return Ok(true);
        }

        error!(
            "Error reading record {at}: {}, error kind: {:?}; trying to recover...",
            io_err,
            io_err.kind()
        );

        // UnexpectedEof: incomplete record, can truncate if enabled
        if eof {
            if config.truncate_incomplete_record() && allow_truncate {
                warn!("UnexpectedEof {at}; truncating");
                return Ok(true);
            }
            error!("UnexpectedEof {at}; truncate disabled");
            return Err(io_err);
        }

        if zero_tail {
            error!("Trailing zeros {at} in a chunk that is not the last");
            return Err(io_err);
        }
        error!("Damaged record({}) {at}", io_err);
        // Corvid patch: say plainly why opening stops, with the file to look
        // at: this is not what a crash leaves behind.
        Err(io::Error::new(
            io_err.kind(),
            format!(
                "damaged record {at} of {}: not a write cut short by a crash \
                 (data follows it, or it is not the last chunk); refusing to \
                 open a corrupt log: {io_err}",
                config.chunk_path(chunk_id)
            ),
        ))
    }

    /// Whether the bad record at `record_start`, whose decoding stopped at
    /// `read_end`, is a write cut short by a crash (Corvid patch).
    ///
    /// Chunks are sized up front, so a crash in the middle of writing a record
    /// does not leave a short file: the record's header and the first part of
    /// its payload are there and the rest reads as zeros. The kernel copies a
    /// write into the page cache a page at a time and stops between pages
    /// when the process is killed, so what reached the file is a prefix of the
    /// write ending on a page boundary. Decoding such a record fails only
    /// after it has read past that boundary (every byte before it is right).
    /// So the record is torn when everything from some page boundary before
    /// `read_end` to the end of the file is zero. A damaged record (a flipped
    /// bit, or data after it) does not look like that and stays an error.
    pub(crate) fn is_torn_record(
        file: &Arc<File>,
        record_start: u64,
        read_end: u64,
    ) -> Result<bool, io::Error> {
        const PAGE: u64 = 4096;
        let file_size = file.metadata()?.len();
        if read_end <= record_start || read_end > file_size {
            return Ok(false);
        }
        if !Self::is_zero(file, read_end, file_size)? {
            return Ok(false);
        }
        let Some(last_non_zero) =
            Self::last_non_zero(file, record_start, read_end)?
        else {
            return Ok(false);
        };
        let page_end = (last_non_zero / PAGE + 1) * PAGE;
        Ok(page_end < read_end)
    }

    /// Whether the bytes of `file` in `start..end` are all zeros.
    fn is_zero(file: &File, start: u64, end: u64) -> Result<bool, io::Error> {
        Ok(Self::last_non_zero(file, start, end)?.is_none())
    }

    /// The offset of the last non-zero byte of `file` in `start..end`.
    fn last_non_zero(
        file: &File,
        start: u64,
        end: u64,
    ) -> Result<Option<u64>, io::Error> {
        const READ_SIZE: u64 = 1 << 20;
        let mut buffer = vec![0u8; READ_SIZE as usize];
        let mut last = None;
        let mut offset = start;
        while offset < end {
            let len = READ_SIZE.min(end - offset) as usize;
            file.read_exact_at(&mut buffer[..len], offset)?;
            if let Some(i) = buffer[..len].iter().rposition(|b| *b != 0) {
                last = Some(offset + i as u64);
            }
            offset += len as u64;
        }
        Ok(last)
    }

    /// Checks if a file contains only zero bytes from a specified offset to the
    /// end.
    ///
    /// This function is used to detect and validate partially written or
    /// corrupted data. It reads the file in chunks and verifies that all
    /// bytes after the given offset are zeros. This is particularly useful
    /// for detecting incomplete or interrupted writes where the remaining
    /// space may have been zero-filled.
    pub(crate) fn verify_trailing_zeros(
        file: Arc<File>,
        mut start_offset: u64,
        chunk_id: ChunkId,
    ) -> Result<bool, io::Error> {
        let file_size = file.metadata()?.len();

        if start_offset > file_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Start offset {} exceeds file size {}",
                    start_offset, file_size
                ),
            ));
        }

        if file_size == start_offset {
            return Ok(true);
        }

        // Corvid patch: a chunk written in place ends in up to its whole
        // preallocated size of zeros, so that is neither worth a warning nor
        // read a kilobyte at a time.
        const READ_CHUNK_SIZE: usize = 1 << 20;
        static ZEROS: [u8; READ_CHUNK_SIZE] = [0; READ_CHUNK_SIZE];
        let mut buffer = vec![0u8; READ_CHUNK_SIZE];

        loop {
            let n = file.read_at(&mut buffer, start_offset)?;
            if n == 0 {
                break;
            }

            // A slice comparison is a memcmp, fast even in a debug build.
            if buffer[..n] == ZEROS[..n] {
                start_offset += n as u64;
                continue;
            }

            for (i, byt) in buffer.iter().enumerate().take(n) {
                if *byt != 0 {
                    error!(
                        "Non-zero byte detected at offset {} in chunk {}",
                        start_offset + i as u64,
                        chunk_id
                    );
                    return Ok(false);
                }
            }

            start_offset += n as u64;
        }
        Ok(true)
    }

    #[allow(clippy::type_complexity)]
    pub fn dump(
        config: &Config,
        chunk_id: ChunkId,
    ) -> Result<Vec<Result<(Segment, Rec), io::Error>>, io::Error> {
        let f = Arc::new(Self::open_chunk_file(config, chunk_id)?);
        let it = Self::load_records_iter(config, f.clone(), chunk_id)?;

        // Corvid patch: a chunk written in place ends in zeros after its last
        // record; that is the end of the records, not a damaged one.
        let mut records = Vec::new();
        let mut end = 0;
        for res in it {
            match res {
                Ok((seg, record)) => {
                    end = seg.end().0;
                    records.push(Ok((seg, record)));
                }
                Err(e) => {
                    if !Self::verify_trailing_zeros(f.clone(), end, chunk_id)? {
                        records.push(Err(e));
                    }
                    break;
                }
            }
        }
        Ok(records)
    }

    /// Returns an iterator of `start, end, record` or error.
    ///
    /// This method requires a newly opened file whose position is at the
    /// beginning, because the returned iterator reads sequentially from
    /// the current file position via `BufReader`.
    pub fn load_records_iter(
        config: &Config,
        f: Arc<File>,
        chunk_id: ChunkId,
    ) -> Result<
        impl Iterator<Item = Result<(Segment, Rec), io::Error>> + '_,
        io::Error,
    > {
        Self::record_iterator(config, f, chunk_id)
    }

    /// The iterator behind [`Self::load_records_iter`], which also tells how
    /// far it read (Corvid patch).
    pub(crate) fn record_iterator(
        config: &Config,
        f: Arc<File>,
        chunk_id: ChunkId,
    ) -> Result<RecordIterator<io::BufReader<Arc<File>>, Rec>, io::Error> {
        let file_size = f
            .metadata()
            .context(|| format!("get file size of {chunk_id}"))?
            .len();

        let br = io::BufReader::with_capacity(config.read_buffer_size(), f);
        Ok(RecordIterator::new(br, file_size, chunk_id))
    }

    /// Read a record from the chunk at the specified segment.
    ///
    /// Uses `pread` (positional read) to atomically read from a specific offset
    /// without changing the file position. This avoids race conditions when
    /// multiple threads read from the same chunk concurrently.
    pub fn read_record(&self, segment: Segment) -> Result<Rec, io::Error> {
        #[cfg(debug_assertions)]
        self.debug_assert_valid_segment(segment);

        let offset = segment.offset().0 - self.global_start();
        let size = *segment.size() as usize;

        let mut buf = vec![0u8; size];
        self.f.read_exact_at(&mut buf, offset)?;

        Rec::decode(&buf[..]).context(|| {
            format!("decode Record {:?} in {}", segment, self.chunk_id())
        })
    }

    #[cfg(debug_assertions)]
    fn debug_assert_valid_segment(&self, segment: Segment) {
        let start = segment.offset().0;
        let end = segment.end().0;

        let found = self
            .global_offsets
            .binary_search(&start)
            .is_ok_and(|i| self.global_offsets.get(i + 1) == Some(&end));

        debug_assert!(
            found,
            "segment {:?} is not in {}",
            segment,
            self.chunk_id()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io;
    use std::io::Write;
    use std::sync::Arc;

    use crate::Chunk;
    use crate::ChunkId;
    use crate::Config;
    use crate::Segment;

    fn temp_file(bytes: &[u8]) -> Result<Arc<File>, io::Error> {
        let mut file = tempfile::tempfile()?;
        file.write_all(bytes)?;
        Ok(Arc::new(file))
    }

    fn config(truncate_incomplete_record: bool) -> Config {
        let mut config = Config::new("unused");
        config.truncate_incomplete_record = Some(truncate_incomplete_record);
        config
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "is not in ChunkId")]
    fn test_read_record_rejects_unknown_segment() {
        let chunk = Chunk::<String> {
            f: temp_file(&[]).unwrap(),
            global_offsets: vec![10, 20],
            truncated: None,
            _p: Default::default(),
        };

        let _ = chunk.read_record(Segment::new(11, 1));
    }

    #[test]
    fn test_verify_trailing_zeros() -> Result<(), io::Error> {
        let file = temp_file(&[0, 0, 0, 0])?;

        assert!(Chunk::<String>::verify_trailing_zeros(
            file.clone(),
            2,
            ChunkId(0)
        )?);
        assert!(Chunk::<String>::verify_trailing_zeros(
            file.clone(),
            4,
            ChunkId(0)
        )?);

        let err =
            Chunk::<String>::verify_trailing_zeros(file.clone(), 5, ChunkId(0))
                .unwrap_err();
        assert_eq!(io::ErrorKind::InvalidInput, err.kind());
        assert_eq!("Start offset 5 exceeds file size 4", err.to_string());

        let file = temp_file(&[0, 0, 7, 0])?;
        assert!(!Chunk::<String>::verify_trailing_zeros(
            file,
            0,
            ChunkId(0)
        )?);

        Ok(())
    }

    #[test]
    fn test_verify_trailing_zeros_accepts_large_zero_tail()
    -> Result<(), io::Error> {
        let file = temp_file(&vec![0; 64 * 1024 + 1])?;

        assert!(Chunk::<String>::verify_trailing_zeros(file, 0, ChunkId(0))?);

        Ok(())
    }

    #[test]
    fn test_handle_record_error_for_unexpected_eof() -> Result<(), io::Error> {
        let file = temp_file(&[])?;
        let err = io::Error::new(io::ErrorKind::UnexpectedEof, "short record");

        assert!(Chunk::<String>::handle_record_error(
            err,
            file.clone(),
            0,
            0,
            ChunkId(0),
            &config(true),
            true,
        )?);

        let err = io::Error::new(io::ErrorKind::UnexpectedEof, "short record");
        let got = Chunk::<String>::handle_record_error(
            err,
            file,
            0,
            0,
            ChunkId(0),
            &config(false),
            true,
        )
        .unwrap_err();
        assert_eq!(io::ErrorKind::UnexpectedEof, got.kind());

        Ok(())
    }

    #[test]
    fn test_handle_record_error_for_trailing_zeros() -> Result<(), io::Error> {
        let file = temp_file(&[0, 0])?;
        let err = io::Error::new(io::ErrorKind::InvalidData, "bad record");

        assert!(Chunk::<String>::handle_record_error(
            err,
            file.clone(),
            0,
            0,
            ChunkId(0),
            &config(true),
            true,
        )?);

        // Corvid patch: a zero tail in the last chunk is the end of a chunk
        // written in place, cut even where incomplete records are kept...
        let err = io::Error::new(io::ErrorKind::InvalidData, "bad record");
        assert!(Chunk::<String>::handle_record_error(
            err,
            file.clone(),
            0,
            0,
            ChunkId(0),
            &config(false),
            true,
        )?);

        // ...but not in an earlier chunk, which was cut when it was closed.
        let err = io::Error::new(io::ErrorKind::InvalidData, "bad record");
        let got = Chunk::<String>::handle_record_error(
            err,
            file,
            0,
            0,
            ChunkId(0),
            &config(true),
            false,
        )
        .unwrap_err();
        assert_eq!(io::ErrorKind::InvalidData, got.kind());

        Ok(())
    }

    #[test]
    fn test_handle_record_error_rejects_non_zero_tail() -> Result<(), io::Error>
    {
        let file = temp_file(&[0, 1])?;
        let err = io::Error::new(io::ErrorKind::InvalidData, "bad record");

        let got = Chunk::<String>::handle_record_error(
            err,
            file,
            0,
            0,
            ChunkId(0),
            &config(true),
            true,
        )
        .unwrap_err();
        assert_eq!(io::ErrorKind::InvalidData, got.kind());

        Ok(())
    }

    #[test]
    fn test_read_record_adds_decode_context() -> Result<(), io::Error> {
        let chunk = Chunk::<String> {
            f: temp_file(&[0, 0, 0])?,
            global_offsets: vec![12, 15],
            truncated: None,
            _p: Default::default(),
        };

        let err = chunk.read_record(Segment::new(12, 3)).unwrap_err();

        assert_eq!(io::ErrorKind::UnexpectedEof, err.kind());
        assert!(err.to_string().contains("decode Record"));
        assert!(err.to_string().contains("ChunkId"));

        Ok(())
    }
}
