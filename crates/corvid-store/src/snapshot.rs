//! The snapshot file format, and the `snapshots/` directory that holds the current one.
//!
//! A snapshot file, version 1, all integers little-endian:
//!
//! ```text
//! magic    8 bytes  "CORVIDSS"
//! version  u32      1
//! meta     u32 length, then postcard SnapshotMeta (last log id, membership, id); its
//!          member records in either layout `member` reads (BasicNode's or Member's)
//! rows     repeated: table tag u8 (corvid_core::Table::tag), key u32 length + bytes,
//!                    value u32 length + bytes
//! end      0xFF, then u64 number of rows
//! ```
//!
//! Rows come table by table in key order. The end marker and row count make a truncated
//! file (a transfer cut short) fail to install instead of installing part of a state.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use corvid_core::Table;

use crate::error::StoreError;
use crate::schema::{decode, encode, SnapshotRecord};
use crate::tables::ReadTables;
use crate::typ::SnapshotMeta;

const MAGIC: &[u8; 8] = b"CORVIDSS";
const VERSION: u32 = 1;
const END: u8 = 0xFF;
/// No key, value or header is this large; a length above it means a corrupt file.
const MAX_FIELD: u32 = 64 << 20;
const SUFFIX: &str = ".snap";
const PARTIAL_SUFFIX: &str = ".partial";

/// Writes a whole snapshot of `tables`, described by `meta`. Returns the number of rows.
pub(crate) fn write(
    out: &mut impl Write,
    meta: &SnapshotMeta,
    tables: &ReadTables,
) -> Result<u64, StoreError> {
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    write_field(out, &encode(meta)?)?;
    let mut rows = 0u64;
    for table in Table::ALL {
        tables.for_each(table, |key, value| {
            out.write_all(&[table.tag()])?;
            write_field(out, key)?;
            write_field(out, value)?;
            rows += 1;
            Ok(())
        })?;
    }
    out.write_all(&[END])?;
    out.write_all(&rows.to_le_bytes())?;
    Ok(rows)
}

fn write_field(out: &mut impl Write, bytes: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len <= MAX_FIELD)
        .ok_or_else(|| StoreError::Corrupt(format!("a {} byte field", bytes.len())))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("snapshot file: {what}"))
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), StoreError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => corrupt(&format!("ends inside {what}")),
        _ => StoreError::Io(e),
    })
}

fn read_u32(input: &mut impl Read, what: &str) -> Result<u32, StoreError> {
    let mut bytes = [0u8; 4];
    read_exact(input, &mut bytes, what)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_field(input: &mut impl Read, buf: &mut Vec<u8>, what: &str) -> Result<(), StoreError> {
    let len = read_u32(input, what)?;
    if len > MAX_FIELD {
        return Err(corrupt(&format!("{what} of {len} bytes")));
    }
    buf.resize(len as usize, 0);
    read_exact(input, buf, what)
}

/// Reads the header of a snapshot file: its format and metadata.
pub(crate) fn read_header(input: &mut impl Read) -> Result<SnapshotMeta, StoreError> {
    let mut magic = [0u8; 8];
    read_exact(input, &mut magic, "the header")?;
    if &magic != MAGIC {
        return Err(corrupt("not a Corvid snapshot"));
    }
    let version = read_u32(input, "the header")?;
    if version != VERSION {
        return Err(corrupt(&format!("unknown format version {version}")));
    }
    let mut meta = Vec::new();
    read_field(input, &mut meta, "the metadata")?;
    decode(&meta)
}

/// Reads the rows that follow the header, handing each to `row`, and checks the end marker.
pub(crate) fn read_rows(
    input: &mut impl Read,
    mut row: impl FnMut(Table, &[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut rows = 0u64;
    loop {
        let mut tag = [0u8; 1];
        read_exact(input, &mut tag, "a row")?;
        if tag[0] == END {
            let mut count = [0u8; 8];
            read_exact(input, &mut count, "the end marker")?;
            if u64::from_le_bytes(count) != rows {
                return Err(corrupt("row count does not match"));
            }
            if input.read(&mut tag)? != 0 {
                return Err(corrupt("bytes after the end marker"));
            }
            return Ok(rows);
        }
        let table = Table::from_tag(tag[0]).ok_or_else(|| corrupt("unknown table tag"))?;
        read_field(input, &mut key, "a key")?;
        read_field(input, &mut value, "a value")?;
        row(table, &key, &value)?;
        rows += 1;
    }
}

/// The `snapshots/` directory: file naming, durable writes, and the current snapshot.
pub(crate) struct SnapshotDir {
    path: PathBuf,
    next_seq: AtomicU64,
    current: Mutex<Option<SnapshotRecord>>,
    /// Serialises changes of the current snapshot (a build racing an install).
    change: Mutex<()>,
}

impl SnapshotDir {
    /// Opens the directory, removing partial files and every snapshot but `current`.
    pub(crate) fn open(
        path: PathBuf,
        current: Option<SnapshotRecord>,
    ) -> Result<SnapshotDir, StoreError> {
        std::fs::create_dir_all(&path)?;
        let mut max_seq = 0;
        for item in std::fs::read_dir(&path)? {
            let name = item?.file_name().to_string_lossy().into_owned();
            let seq = name
                .strip_suffix(SUFFIX)
                .or_else(|| name.strip_suffix(PARTIAL_SUFFIX))
                .and_then(|stem| stem.parse::<u64>().ok());
            let Some(seq) = seq else { continue };
            max_seq = max_seq.max(seq);
            if current.as_ref().map(|c| c.file.as_str()) != Some(name.as_str()) {
                std::fs::remove_file(path.join(&name))?;
            }
        }
        Ok(SnapshotDir {
            path,
            next_seq: AtomicU64::new(max_seq + 1),
            current: Mutex::new(current),
            change: Mutex::new(()),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh sequence number, for a snapshot's id and file name.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn current(&self) -> Option<SnapshotRecord> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn lock_changes(&self) -> MutexGuard<'_, ()> {
        self.change.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `record` as current (the database already says so) and deletes the other
    /// snapshot files. Call with [`Self::lock_changes`] held.
    pub(crate) fn set_current(&self, record: SnapshotRecord) -> Result<(), StoreError> {
        let keep = record.file.clone();
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
        for item in std::fs::read_dir(&self.path)? {
            let name = item?.file_name().to_string_lossy().into_owned();
            if name.ends_with(SUFFIX) && name != keep {
                // An open handle (a transfer to a follower) keeps reading the unlinked file.
                std::fs::remove_file(self.path.join(&name))?;
            }
        }
        Ok(())
    }

    /// Writes snapshot file number `seq` durably: into a partial file, fsync, rename, fsync
    /// the directory. Returns the final file name.
    pub(crate) fn write_file(
        &self,
        seq: u64,
        fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), StoreError>,
    ) -> Result<String, StoreError> {
        let name = format!("{seq:020}{SUFFIX}");
        let partial = self.path.join(format!("{seq:020}{PARTIAL_SUFFIX}"));
        let result = (|| {
            let mut out = BufWriter::new(File::create(&partial)?);
            fill(&mut out)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&partial, self.path.join(&name))?;
            File::open(&self.path)?.sync_all()?;
            Ok(name)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    /// Opens a snapshot file of this directory for reading.
    pub(crate) fn open_file(&self, name: &str) -> Result<BufReader<File>, StoreError> {
        Ok(BufReader::new(File::open(self.path.join(name))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_core::TablesMut;
    use redb::ReadableDatabase;

    fn sample() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        crate::schema::prepare(&db).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut tables = crate::tables::WriteTables::new(&txn);
            tables
                .put(Table::Meta, b"next_message", &[0, 0, 0, 0, 0, 0, 0, 7])
                .unwrap();
            tables.put(Table::Inbox, &[1; 16], &[]).unwrap();
            tables.put(Table::Dedup, &[2; 16], &[9; 8]).unwrap();
        }
        txn.commit().unwrap();
        (dir, db)
    }

    fn encoded(db: &redb::Database) -> Vec<u8> {
        let txn = db.begin_read().unwrap();
        let tables = ReadTables::new(&txn);
        let mut out = Vec::new();
        write(&mut out, &SnapshotMeta::default(), &tables).unwrap();
        out
    }

    #[test]
    fn rows_round_trip_in_table_order() {
        let (_dir, db) = sample();
        let bytes = encoded(&db);
        let mut input = bytes.as_slice();
        assert_eq!(read_header(&mut input).unwrap(), SnapshotMeta::default());
        let mut rows = Vec::new();
        let count = read_rows(&mut input, |table, key, value| {
            rows.push((table, key.to_vec(), value.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 3);
        let tables: Vec<Table> = rows.iter().map(|r| r.0).collect();
        assert_eq!(tables, vec![Table::Meta, Table::Inbox, Table::Dedup]);
        assert_eq!(rows[2].2, vec![9; 8]);
    }

    #[test]
    fn truncated_or_altered_files_are_refused() {
        let (_dir, db) = sample();
        let bytes = encoded(&db);
        let rows = |bytes: &[u8]| {
            let mut input = bytes;
            read_header(&mut input)?;
            read_rows(&mut input, |_, _, _| Ok(()))
        };
        for cut in [0, 5, 20, bytes.len() - 9, bytes.len() - 1] {
            assert!(rows(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(rows(&longer).is_err());
        let mut bad_tag = bytes.clone();
        let first_row = bytes.len() - 9 - (1 + 4 + 16 + 4 + 8) - (1 + 4 + 16 + 4);
        bad_tag[first_row] = 42;
        assert!(rows(&bad_tag).is_err());
        let mut bad_version = bytes;
        bad_version[8] = 2;
        assert!(rows(&bad_version).is_err());
    }
}

/// openraft's snapshot data: a snapshot file, read and written through tokio's blocking
/// pool, or in replay mode (see [`crate::replay`]) on the calling thread, at once.
#[derive(Debug)]
pub enum SnapshotFile {
    Pooled(tokio::fs::File),
    Inline(File),
}

impl SnapshotFile {
    pub fn from_std(file: File) -> SnapshotFile {
        if crate::replay::is_enabled() {
            SnapshotFile::Inline(file)
        } else {
            SnapshotFile::Pooled(tokio::fs::File::from_std(file))
        }
    }

    pub async fn open(path: PathBuf) -> io::Result<SnapshotFile> {
        let file = crate::replay::blocking(move || File::open(path))
            .await
            .map_err(io::Error::other)??;
        Ok(SnapshotFile::from_std(file))
    }

    /// The file, once every write handed to it is done.
    pub async fn into_std(self) -> File {
        match self {
            SnapshotFile::Pooled(file) => file.into_std().await,
            SnapshotFile::Inline(file) => file,
        }
    }
}

impl tokio::io::AsyncRead for SnapshotFile {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotFile::Pooled(file) => std::pin::Pin::new(file).poll_read(cx, buf),
            SnapshotFile::Inline(file) => {
                let read = file.read(buf.initialize_unfilled())?;
                buf.advance(read);
                std::task::Poll::Ready(Ok(()))
            }
        }
    }
}

impl tokio::io::AsyncWrite for SnapshotFile {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            SnapshotFile::Pooled(file) => std::pin::Pin::new(file).poll_write(cx, data),
            SnapshotFile::Inline(file) => std::task::Poll::Ready(file.write(data)),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotFile::Pooled(file) => std::pin::Pin::new(file).poll_flush(cx),
            SnapshotFile::Inline(file) => std::task::Poll::Ready(file.flush()),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotFile::Pooled(file) => std::pin::Pin::new(file).poll_shutdown(cx),
            SnapshotFile::Inline(file) => std::task::Poll::Ready(file.flush()),
        }
    }
}

impl tokio::io::AsyncSeek for SnapshotFile {
    fn start_seek(self: std::pin::Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            SnapshotFile::Pooled(file) => std::pin::Pin::new(file).start_seek(position),
            SnapshotFile::Inline(file) => io::Seek::seek(file, position).map(drop),
        }
    }

    fn poll_complete(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<u64>> {
        match self.get_mut() {
            SnapshotFile::Pooled(file) => std::pin::Pin::new(file).poll_complete(cx),
            SnapshotFile::Inline(file) => std::task::Poll::Ready(io::Seek::stream_position(file)),
        }
    }
}
