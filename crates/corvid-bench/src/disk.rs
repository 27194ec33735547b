//! `corvid-bench fsync`: how many durable commits this disk allows per second, measured
//! with the smallest possible loop (write 4 KiB, fsync), next to which a server's commit
//! rate can be judged: a durable write can be acknowledged no faster than its fsync.
//!
//! By default each write appends, as a log does, so each fsync also makes the file's new
//! length durable (on ext4, a journal commit). `--overwrite` writes over blocks already
//! written and fsync'd, so only the data itself goes to the disk: the difference is what a
//! log preallocating its files would gain. `--preallocate sparse|fallocate` writes in place
//! into a file sized up front, as the log's chunk files are (since they are `fallocate`d,
//! the first write to each block also marks it written). All use `fdatasync`, like the
//! server's log.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::report::{self, Report};

/// How the file of [`fsync_loop`] is sized before the clock starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preallocate {
    /// `set_len`: the file has its length, but no blocks.
    Sparse,
    /// `fallocate`: its blocks are reserved, not yet written.
    Fallocate,
}

/// Writes and fsyncs `count` times in a file under `dir` (a temporary file: it is removed),
/// appending, with `overwrite` over blocks written before the clock starts, or with
/// `preallocate` in place into a file sized before it starts.
pub fn fsync_loop(
    dir: &Path,
    count: usize,
    overwrite: bool,
    preallocate: Option<Preallocate>,
) -> anyhow::Result<Report> {
    let mut file = tempfile::tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let block = vec![0x5a_u8; 4096];
    let size = (count * block.len()) as u64;
    match preallocate {
        Some(Preallocate::Sparse) => file.set_len(size)?,
        Some(Preallocate::Fallocate) => fs2::FileExt::allocate(&file, size)?,
        None => {}
    }
    if preallocate.is_some() {
        file.sync_all()?;
    }
    if overwrite {
        let zeros = vec![0_u8; 4096];
        for _ in 0..count {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        file.seek(SeekFrom::Start(0))?;
    }
    let mut latency = report::histogram();
    let start = Instant::now();
    for _ in 0..count {
        let one = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        report::record(&mut latency, one.elapsed());
    }
    let elapsed = start.elapsed();
    let mut report = Report::new("fsync");
    report.set("dir", dir.display().to_string());
    report.set("fsyncs", count as u64);
    report.set("overwrite", overwrite);
    if let Some(preallocate) = preallocate {
        report.set("preallocate", format!("{preallocate:?}").to_lowercase());
    }
    report.set("secs", report::secs(elapsed));
    report.set("fsyncs_per_sec", report::rate(count as u64, elapsed));
    report.set("latency", report::latency_json(&latency));
    if elapsed > Duration::from_secs(600) {
        report.problem("the disk took over 10 minutes");
    }
    Ok(report)
}
