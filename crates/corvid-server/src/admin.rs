//! The admin listener: `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! supervisors and load balancers, `/status` (JSON) for `corvid status`.
//!
//! It is apart from the client listeners and their front door (`admission.rs`): it serves
//! operators, on loopback by default, and must answer while clients fill every client
//! connection slot. It is bounded all the same: at most [`MAX_CONNECTIONS`] at once (more
//! are closed at once), one request per connection, and [`CONNECTION_DEADLINE`] for the
//! whole exchange.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::{DataDirFigures, Metrics, RaftFigures};
use crate::service::Service;

/// Admin connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long one admin connection may take, from accept to the end of its answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// How far back `messages_per_second` looks.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How often the sent-message count is sampled for `messages_per_second`.
const RATE_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    service: Arc<Service>,
    metrics: Metrics,
    registry: Arc<Registry>,
    data_dir: PathBuf,
    started: Instant,
    readiness: Arc<Readiness>,
    sent_samples: Arc<Mutex<VecDeque<(Instant, u64)>>>,
}

impl AdminState {
    pub fn new(service: Arc<Service>, metrics: Metrics, data_dir: PathBuf) -> AdminState {
        let registry = Arc::new(metrics.registry(&service, data_dir.clone()));
        AdminState {
            service,
            metrics,
            registry,
            data_dir,
            started: Instant::now(),
            readiness: Arc::new(Readiness::default()),
            sent_samples: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// Samples the sent-message count once a second, for `messages_per_second`, until
    /// `shutdown`.
    pub fn sample_rates(
        &self,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> {
        let state = self.clone();
        async move {
            let mut every = tokio::time::interval(RATE_SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => state.sample_sent(),
                }
            }
        }
    }

    fn sample_sent(&self) {
        let now = Instant::now();
        let mut samples = self.sent_samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.push_back((now, self.metrics.messages_sent_total()));
        // One sample older than the window is kept, so that the rate covers all of it.
        while samples.len() > 2 && now.duration_since(samples[1].0) >= RATE_WINDOW {
            samples.pop_front();
        }
    }

    /// Messages accepted per second over the last minute (or since the start, if shorter).
    fn messages_per_second(&self) -> f64 {
        let now = Instant::now();
        let sent = self.metrics.messages_sent_total();
        let samples = self.sent_samples.lock().unwrap_or_else(|e| e.into_inner());
        match samples.front() {
            Some(&(at, count)) => {
                let seconds = now.duration_since(at).as_secs_f64();
                if seconds > 0.0 {
                    sent.saturating_sub(count) as f64 / seconds
                } else {
                    0.0
                }
            }
            None => 0.0,
        }
    }
}

/// The admin endpoints, without a socket (tests call it with `tower`'s `oneshot`).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let node = state.service.node();
    let store = node.store_metrics();
    let raft = RaftFigures::read(node, store.committed_index);
    let disk_full = node.check_free_space().is_err();
    match state.readiness.check(&raft, disk_full) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

/// What `/status` answers, and `corvid status` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: f64,
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// `None` when ready, else why not (as `/readyz` says).
    pub not_ready: Option<String>,
    pub connections: i64,
    pub messages_per_second: f64,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub data_dir: String,
    pub data_dir_bytes: u64,
}

async fn status(State(state): State<AdminState>) -> Json<Status> {
    let node = state.service.node();
    let store = node.store_metrics();
    let raft = RaftFigures::read(node, store.committed_index);
    let disk_full = node.check_free_space().is_err();
    let not_ready = state.readiness.check(&raft, disk_full).err();
    Json(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        node_id: raft.node_id,
        role: raft.role.to_string(),
        leader_id: raft.leader,
        term: raft.term,
        not_ready,
        connections: state.metrics.open_connections(),
        messages_per_second: state.messages_per_second(),
        last_log_index: raft.last_log_index,
        committed_index: raft.committed_index,
        applied_index: raft.applied_index,
        data_dir: state.data_dir.display().to_string(),
        data_dir_bytes: DataDirFigures::read(&state.data_dir).total_bytes,
    })
}

/// Whether this server can serve writes and linearizable reads now.
///
/// It can when Raft runs, a leader is known (this server or another: writes and
/// linearizable reads go through the leader), the disk has room for writes, and it has
/// applied every entry that was committed when it started (before that, its state is older
/// than what clients were already told). The last condition, once met, stays met. Every
/// figure comes from openraft's metrics and the store, so the check is the same on a
/// single server and on a cluster member.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The committed index to apply before the first ready answer, fixed at the first
    /// check made with a leader known.
    catch_up_to: OnceLock<u64>,
    caught_up: std::sync::atomic::AtomicBool,
}

impl Readiness {
    /// `Ok` when ready, else the reason.
    pub fn check(&self, raft: &RaftFigures, disk_full: bool) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        if let Some(reason) = &raft.stopped {
            return Err(format!("raft has stopped: {reason}"));
        }
        if raft.role == "shutdown" {
            return Err("raft has shut down".into());
        }
        let Some(leader) = raft.leader else {
            return Err(format!("no leader is known (term {})", raft.term));
        };
        if disk_full {
            return Err("the data directory's disk is full; writes are refused".into());
        }
        if !self.caught_up.load(Ordering::Relaxed) {
            let target = *self.catch_up_to.get_or_init(|| raft.committed_index);
            if raft.applied_index < target {
                return Err(format!(
                    "applying the log: {} of {} entries committed at the start (leader {leader})",
                    raft.applied_index, target
                ));
            }
            self.caught_up.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    let app = router(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, most likely: pause rather than spin.
                    tracing::debug!(%err, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "admin listener: no room for another connection");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_DEADLINE, connection) => {}
            }
            drop(slot);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Binds the admin listener, if `address` is one.
pub async fn bind(address: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    use anyhow::Context;
    match address {
        Some(address) => Ok(Some(TcpListener::bind(address).await.with_context(
            || format!("cannot listen for admin requests on {address}"),
        )?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> RaftFigures {
        RaftFigures {
            node_id: 1,
            term: 3,
            leader: Some(1),
            role: "leader",
            last_log_index: 10,
            committed_index: 10,
            applied_index: 10,
            snapshot_index: 0,
            followers: Vec::new(),
            stopped: None,
        }
    }

    #[test]
    fn ready_needs_a_leader_room_on_disk_and_what_was_committed_at_the_start_applied() {
        let readiness = Readiness::default();
        let no_leader = RaftFigures {
            leader: None,
            role: "follower",
            ..figures()
        };
        let reason = readiness.check(&no_leader, false).unwrap_err();
        assert!(reason.contains("no leader"), "{reason}");
        // A leader is known, but this server has applied less than was committed when it
        // started: not yet.
        let behind = RaftFigures {
            applied_index: 7,
            ..figures()
        };
        let reason = readiness.check(&behind, false).unwrap_err();
        assert!(reason.contains("7 of 10"), "{reason}");
        readiness.check(&figures(), false).unwrap();
        // Caught up once is caught up: a follower that trails the leader by the entries in
        // flight stays ready.
        readiness.check(&behind, false).unwrap();
        let reason = readiness.check(&figures(), true).unwrap_err();
        assert!(reason.contains("disk is full"), "{reason}");
        let reason = readiness.check(&no_leader, false).unwrap_err();
        assert!(reason.contains("no leader"), "{reason}");
        let stopped = RaftFigures {
            stopped: Some("storage error".into()),
            ..figures()
        };
        assert!(readiness.check(&stopped, false).is_err());
        readiness.check(&figures(), false).unwrap();
    }
}
