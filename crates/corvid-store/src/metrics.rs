//! The store's histograms: how long log and state fsyncs take and how many entries each
//! log flush carries, kept with atomics so that recording never takes a lock.
//!
//! The server's metrics module exports a [`HistogramSnapshot`] of each in the Prometheus
//! format; this crate knows nothing of that format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the fsync latency buckets: from 50 µs (a disk with a
/// write cache) to 1 s (a disk in trouble).
pub const FSYNC_SECONDS_BOUNDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Upper bounds of the entries-per-flush buckets: a log entry carries a batch of commands
/// (see corvid-raft's proposer), so most flushes carry one or two entries.
pub const ENTRIES_PER_FLUSH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// A histogram with fixed bucket bounds, recorded with relaxed atomic adds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, and a last one for what is above every bound.
    counts: Vec<AtomicU64>,
    /// The sum of every observation, in millionths of the unit (microseconds for seconds).
    sum_micros: AtomicU64,
}

/// A copy of a histogram: each bucket's upper bound with the number of observations at
/// or below it (cumulative, as Prometheus counts them), the last bound being infinity.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = (value.max(0.0) * 1e6).round() as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: cumulative,
        }
    }
}

/// The store's histograms (see [`crate::StoreReader::histograms`]).
#[derive(Debug)]
pub struct StoreHistograms {
    /// Seconds from handing a log flush to the flush thread until it is fsync'd: what an
    /// append waits for its records to be durable.
    pub log_fsync_seconds: Histogram,
    /// Entries written by each log flush that appends entries.
    pub entries_per_flush: Histogram,
    /// Seconds of each fsync'd commit of the state database.
    pub state_sync_seconds: Histogram,
}

impl Default for StoreHistograms {
    fn default() -> StoreHistograms {
        StoreHistograms {
            log_fsync_seconds: Histogram::new(FSYNC_SECONDS_BOUNDS),
            entries_per_flush: Histogram::new(ENTRIES_PER_FLUSH_BOUNDS),
            state_sync_seconds: Histogram::new(FSYNC_SECONDS_BOUNDS),
        }
    }
}

/// Copies of the store's histograms, taken at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreHistogramSnapshots {
    pub log_fsync_seconds: HistogramSnapshot,
    pub entries_per_flush: HistogramSnapshot,
    pub state_sync_seconds: HistogramSnapshot,
}

impl StoreHistograms {
    pub fn snapshot(&self) -> StoreHistogramSnapshots {
        StoreHistogramSnapshots {
            log_fsync_seconds: self.log_fsync_seconds.snapshot(),
            entries_per_flush: self.entries_per_flush.snapshot(),
            state_sync_seconds: self.state_sync_seconds.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_last_takes_everything() {
        let histogram = Histogram::new(&[1.0, 2.0]);
        for value in [0.5, 1.0, 1.5, 7.0] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(
            snapshot.buckets,
            vec![(1.0, 2), (2.0, 3), (f64::INFINITY, 4)]
        );
        assert_eq!(snapshot.count, 4);
        assert!((snapshot.sum - 10.0).abs() < 1e-9);
    }
}
