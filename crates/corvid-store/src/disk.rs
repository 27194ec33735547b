//! The disk guard: refuses new writes while the data directory's filesystem is nearly full,
//! before the log or the state database would run out of space in the middle of a write.
//!
//! # Why refuse early
//!
//! openraft 0.9 stops its core for good on a storage error, so a write that fails with
//! `ENOSPC` in the log or in `state.redb` ends the server (it then exits, see corvid-server's
//! `run`). So writes are refused with `storage_full` while less than
//! [`DEFAULT_MIN_FREE_BYTES`] (configurable) is free, and reads go on: that leaves room for the
//! next log chunk ([`crate::log::CHUNK_BYTES`], reserved in full when it is created), for
//! redb to commit, and for what writes accepted between two looks add. Writes resume by
//! themselves once space is freed. The free space is looked up with `statvfs` (a system
//! call of about a microsecond) at most every [`RECHECK`] while there is room, and on every
//! refused write while there is not, so that a freed disk is seen at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::StoreError;

/// Free bytes below which writes are refused, by default: two log chunks and room for the
/// state database to grow.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;
/// The least that may be configured: one log chunk (reserved whole when it is created) and
/// room for redb to commit and for the writes accepted before the next look.
pub const LEAST_MIN_FREE_BYTES: u64 = crate::log::CHUNK_BYTES as u64 + (8 << 20);
/// How long a look at the free space is trusted while there is room.
const RECHECK: Duration = Duration::from_millis(100);

/// Watches the free space of the filesystem that holds the data directory.
pub(crate) struct DiskGuard {
    dir: PathBuf,
    min_free: AtomicU64,
    last: Mutex<Option<(Instant, u64)>>,
}

impl DiskGuard {
    pub(crate) fn new(dir: PathBuf) -> DiskGuard {
        DiskGuard {
            dir,
            min_free: AtomicU64::new(DEFAULT_MIN_FREE_BYTES),
            last: Mutex::new(None),
        }
    }

    pub(crate) fn set_min_free(&self, bytes: u64) {
        self.min_free.store(bytes, Ordering::Relaxed);
    }

    /// `Ok` if a write may go ahead, [`StoreError::StorageFull`] if the disk is too full.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        let min_free = self.min_free.load(Ordering::Relaxed);
        // A poisoned lock only holds a number; the next look replaces it.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let available = match *last {
            Some((at, available)) if available >= min_free && at.elapsed() < RECHECK => available,
            _ => match fs2::available_space(&self.dir) {
                Ok(available) => {
                    *last = Some((Instant::now(), available));
                    available
                }
                Err(e) => {
                    // Not knowing is no reason to stop serving: the write goes ahead, and an
                    // ENOSPC it meets stops the server as before the guard existed.
                    tracing::warn!(error = %e, dir = %self.dir.display(), "cannot read the free disk space");
                    return Ok(());
                }
            },
        };
        if available < min_free {
            return Err(StoreError::StorageFull {
                available,
                min_free,
            });
        }
        Ok(())
    }
}
