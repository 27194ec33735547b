//! `corvid-bench fsync`: how many durable commits this disk allows per second, measured
//! with the smallest possible loop (write 4 KiB, fsync), next to which a server's commit
//! rate can be judged: a durable write can be acknowledged no faster than its fsync.
//!
//! By default each write appends, as a log does, so each fsync also makes the file's new
//! length durable (on ext4, a journal commit). `--overwrite` writes over blocks already
//! written and fsync'd, so only the data itself goes to the disk: the difference is what a
//! log preallocating its files would gain. Both use `fdatasync`, like the server's log.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::report::{self, Report};

/// Writes and fsyncs `count` times in a file under `dir` (a temporary file: it is removed),
/// appending, or with `overwrite` over blocks written before the clock starts.
pub fn fsync_loop(dir: &Path, count: usize, overwrite: bool) -> anyhow::Result<Report> {
    let mut file = tempfile::tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let block = vec![0x5a_u8; 4096];
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
    report.set("secs", report::secs(elapsed));
    report.set("fsyncs_per_sec", report::rate(count as u64, elapsed));
    report.set("latency", report::latency_json(&latency));
    if elapsed > Duration::from_secs(600) {
        report.problem("the disk took over 10 minutes");
    }
    Ok(report)
}
