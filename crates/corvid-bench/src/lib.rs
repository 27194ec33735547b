//! Corvid's load generator: the workloads behind the `corvid-bench` binary, the report each
//! run prints and appends to a results file, and the SVG plot made from those results.
//!
//! A workload runs against a [`target::Target`]: a server this process starts (the
//! `corvid` binary in a temporary data directory, limits raised for load), a local
//! [`cluster`] of them, or one already running. Every workload is bounded by a deadline and stops by itself; every message it
//! sends carries a [`tally::Tag`] so that the receiving side can count losses and
//! duplicates and measure end-to-end latency without a shared clock table.

pub mod cluster;
pub mod disk;
pub mod plot;
pub mod progress;
pub mod report;
pub mod tally;
pub mod target;
pub mod users;
pub mod workload;

pub use report::Report;
pub use target::{ProtocolArg, Target};
