//! Replay mode: what a run of whole servers on one thread needs to happen the same way
//! every time it is started with the same seed.
//!
//! Corvid's fault simulation runs five servers, their clients and the network between them
//! on one tokio current-thread runtime with paused time. Such a run is replayable only if
//! nothing in it depends on another thread's timing or on the operating system's
//! randomness. Two things in the servers do, and this module is where each has a second
//! way to run:
//!
//! - **Work handed to other threads**: the state machine's batches and snapshots, opening
//!   the store (tokio's blocking pool, through [`blocking`]), the log's fsyncs (its flush
//!   thread) and password hashes (their pool). In replay mode each runs to completion on
//!   the calling thread, so its result is there before anything else is polled.
//! - **Randomness**: session tokens, password salts and cluster ids come from
//!   [`fill_random`], which in replay mode draws from a generator seeded by the run.
//! - **The wall clock**: the time servers stamp into commands comes from [`unix_millis`],
//!   which in replay mode is a fixed date plus the run's (paused, virtual) time. Durations
//!   are measured with tokio's clock everywhere, which a paused runtime already controls.
//!
//! Servers never turn it on. A simulation calls [`start`] on the thread that runs it (a
//! current-thread runtime's), before any of its servers opens, and [`stop`] at the end:
//! replay mode belongs to that thread, so that runs of different seeds can go on side by
//! side on threads of their own.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::{OsRng, StdRng};
use rand::{RngCore, SeedableRng};

/// The wall-clock time at which every run starts: 2026-01-01T00:00:00Z, in milliseconds.
const RUN_EPOCH_MILLIS: u64 = 1_767_225_600_000;

/// The run this thread is replaying, if any.
struct Run {
    random: StdRng,
    /// When the run started, on the runtime's clock.
    started: tokio::time::Instant,
}

thread_local! {
    static RUN: RefCell<Option<Run>> = const { RefCell::new(None) };
}

/// Starts replay mode on this thread: randomness drawn from `seed`, the wall clock at
/// [`RUN_EPOCH_MILLIS`], blocking work on this thread. Called on the run's runtime.
pub fn start(seed: u64) {
    RUN.with(|run| {
        *run.borrow_mut() = Some(Run {
            random: StdRng::seed_from_u64(seed),
            started: tokio::time::Instant::now(),
        })
    });
}

/// Ends replay mode on this thread.
pub fn stop() {
    RUN.with(|run| *run.borrow_mut() = None);
}

/// Whether this thread is replaying a run.
pub fn is_enabled() -> bool {
    RUN.with(|run| run.borrow().is_some())
}

/// Runs `work`, which blocks, off the async threads; in replay mode, on this thread at once.
pub async fn blocking<T, F>(work: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if is_enabled() {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

/// Fills `bytes` with random bytes: the operating system's, or in replay mode the run's
/// seeded sequence's next.
pub fn fill_random(bytes: &mut [u8]) {
    let seeded = RUN.with(|run| match run.borrow_mut().as_mut() {
        Some(run) => {
            run.random.fill_bytes(bytes);
            true
        }
        None => false,
    });
    if !seeded {
        OsRng.fill_bytes(bytes);
    }
}

/// Milliseconds since the Unix epoch: the system's clock, or in replay mode the run's.
pub fn unix_millis() -> u64 {
    let replayed = RUN.with(|run| {
        run.borrow()
            .as_ref()
            .map(|run| RUN_EPOCH_MILLIS + run.started.elapsed().as_millis() as u64)
    });
    replayed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}
