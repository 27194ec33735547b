//! The inline flush mode (`Config::inline_flush`), seen from outside.
//!
//! Corvid patch: these tests check that an inline WAL starts no thread and
//! writes the very files a WAL with a flush worker thread writes, which that
//! WAL then reopens.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::Command;

use chunked_wal::Config;
use common::append_action;
use common::flush;
use common::open_wal;

/// Names the mode the child process of the thread test runs its WAL in.
const THREAD_CHECK_MODE_ENV: &str = "CHUNKED_WAL_THREAD_CHECK_MODE";

/// Directory the child process of the thread test opens its WAL in.
const THREAD_CHECK_DIR_ENV: &str = "CHUNKED_WAL_THREAD_CHECK_DIR";

/// Name of the flush worker thread as the kernel keeps it: 15 bytes.
const WORKER_THREAD_COMM: &str = "chunked_wal_flu";

const VALUES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];

fn config(dir: &Path, inline: bool) -> Config {
    let mut config = Config::new(dir.to_str().unwrap());
    // Corvid patch: chunks are preallocated; keep the files small.
    config.chunk_max_size = Some(1 << 16);
    // Several chunks, so rotations go through the worker too.
    config.chunk_max_records = Some(3);
    config.inline_flush = Some(inline);
    config
}

/// Appends [`VALUES`] in `dir`, flushing after each one and syncing every
/// other one, and removes the first chunk once it is no longer needed.
fn write_values(config: &Config) -> Result<(), io::Error> {
    let (mut wal, mut sm) = open_wal(config)?;
    for (i, value) in VALUES.iter().enumerate() {
        append_action(&mut wal, &mut sm, value)?;
        flush(&mut wal, i % 2 == 1)?;
    }

    let drained =
        wal.drain_closed_chunks_while(|checkpoint| checkpoint == "a,b");
    assert_eq!(1, drained.len());
    wal.send_remove_chunks(drained)?;
    wal.shutdown()
}

/// Counts this process's threads named like the flush worker.
fn worker_threads() -> Result<usize, io::Error> {
    let mut count = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let comm = std::fs::read_to_string(task?.path().join("comm"))?;
        if comm.trim_end() == WORKER_THREAD_COMM {
            count += 1;
        }
    }
    Ok(count)
}

/// In a child process (so other tests' WALs do not count): opens a WAL in
/// the given mode, writes through it, and exits with the number of flush
/// worker threads seen while it was open.
fn thread_check_child(mode: &str) -> ! {
    let dir = std::env::var(THREAD_CHECK_DIR_ENV).expect("dir must be set");
    let config = config(Path::new(&dir), mode == "inline");

    let (mut wal, mut sm) = open_wal(&config).expect("child must open");
    for value in VALUES {
        append_action(&mut wal, &mut sm, value).expect("child must append");
        flush(&mut wal, true).expect("child must flush");
    }
    let threads = worker_threads().expect("child must list its threads");
    wal.shutdown().expect("child must shut down");

    std::process::exit(threads as i32);
}

/// Returns how many flush worker threads a child saw with its WAL in `mode`.
fn worker_threads_of_a_wal_in(mode: &str) -> Result<i32, io::Error> {
    let td = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let status = Command::new(exe)
        .args(["--exact", "test_inline_flush_starts_no_thread"])
        .env(THREAD_CHECK_MODE_ENV, mode)
        .env(THREAD_CHECK_DIR_ENV, td.path())
        .status()?;

    status
        .code()
        .ok_or_else(|| io::Error::other(format!("child ended by {status}")))
}

#[test]
fn test_inline_flush_starts_no_thread() -> Result<(), io::Error> {
    if let Ok(mode) = std::env::var(THREAD_CHECK_MODE_ENV) {
        thread_check_child(&mode);
    }

    // The thread mode's worker is seen, so the count is a real one.
    assert_eq!(1, worker_threads_of_a_wal_in("thread")?);
    assert_eq!(0, worker_threads_of_a_wal_in("inline")?);
    Ok(())
}

/// Reads every file of a WAL directory but the lock file.
fn chunk_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, io::Error> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".wal") {
            files.insert(name, std::fs::read(entry.path())?);
        }
    }
    Ok(files)
}

#[test]
fn test_inline_flush_writes_what_the_worker_thread_writes()
-> Result<(), io::Error> {
    let thread_dir = tempfile::tempdir()?;
    let inline_dir = tempfile::tempdir()?;

    write_values(&config(thread_dir.path(), false))?;
    write_values(&config(inline_dir.path(), true))?;

    // The same chunks, byte for byte: the same on-disk format.
    let thread_files = chunk_files(thread_dir.path())?;
    assert_eq!(3, thread_files.len());
    assert_eq!(thread_files, chunk_files(inline_dir.path())?);

    // A WAL with a worker thread reopens what the inline one wrote.
    let (mut wal, sm) = open_wal(&config(inline_dir.path(), false))?;
    wal.shutdown()?;
    assert_eq!(VALUES.to_vec(), sm.values);
    Ok(())
}
