//! Who is online on the other servers: each server tells its peers the usernames with a
//! live subscription on it, and forgets a peer's list when it stops hearing from it. Not
//! replicated: it is a few seconds' knowledge, rebuilt by the next reports after any
//! change or restart.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use corvid_store::typ::NodeId;

/// How often a server sends its list to each peer.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// A peer's list is dropped after this long without a report (it stopped, or cannot be
/// reached): three reports missed.
pub const PRESENCE_EXPIRES: Duration = Duration::from_secs(3);

/// The lists the other servers reported.
#[derive(Default)]
pub struct Presence {
    reports: Mutex<HashMap<NodeId, (Instant, HashSet<String>)>>,
}

impl Presence {
    /// Replaces what `from` said before.
    pub(crate) fn record(&self, from: NodeId, usernames: Vec<String>) {
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        reports.insert(from, (Instant::now(), usernames.into_iter().collect()));
    }

    /// Whether `username` has a live subscription on another server that reported lately.
    pub fn is_online_elsewhere(&self, username: &str) -> bool {
        let folded = corvid_core::validate::fold(username);
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        reports.retain(|_, (at, _)| at.elapsed() < PRESENCE_EXPIRES);
        reports.values().any(|(_, names)| names.contains(&folded))
    }
}
