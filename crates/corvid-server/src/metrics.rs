//! Prometheus metrics: what the server counts as it works (requests, messages, pushes,
//! connections) and the exposition of those counts, with the store's, Raft's and the
//! process's figures read at each scrape.
//!
//! Recording is a relaxed atomic add (a counter) or one uncontended lock (a latency
//! histogram, one per operation and protocol); figures that already exist elsewhere (Raft's
//! indexes, the store's counters, the process's memory) are read only when scraped. With
//! the admin listener off, [`Metrics::off`] records nothing. docs/benchmarks.md measures
//! what recording costs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use corvid_core::{ApiError, Request};
use corvid_raft::network::listener::ListenerStats;
use corvid_store::metrics::HistogramSnapshot;

use crate::service::Service;

/// The name the binary protocol's metrics carry in their `protocol` label.
pub const WIRE: &str = "wire";
/// The name gRPC's metrics carry in their `protocol` label.
pub const GRPC: &str = "grpc";
/// The name the web listener's WebSocket API's metrics carry in their `protocol` label.
pub const WEB: &str = "web";

/// Upper bounds, in seconds, of the request latency buckets: from a ping on loopback to a
/// login's password hash on a busy server.
const REQUEST_SECONDS_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    protocol: &'static str,
    /// `ok`, or the error code's name.
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_SECONDS_BOUNDS)
}

/// What the server records as it works. Cloning shares the recorders.
#[derive(Clone, Debug, Default)]
pub struct Metrics(Option<Arc<Recorders>>);

#[derive(Debug)]
struct Recorders {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<OperationLabels, Histogram, fn() -> Histogram>,
    messages_sent: Counter,
    messages_pushed: Counter,
    messages_fetched: Counter,
    push_queue_drops: Counter,
    subscriptions: Family<ProtocolLabels, Gauge>,
    connections: Family<ProtocolLabels, Gauge>,
    /// Open connections over every protocol, for `/status`.
    all_connections: Gauge,
    connections_rejected: Family<ProtocolLabels, Counter>,
    rate_limited: Family<ProtocolLabels, Counter>,
    /// The server-to-server listener's counts, read at each scrape (a cluster member's).
    peer_listener: std::sync::OnceLock<Arc<ListenerStats>>,
}

impl Metrics {
    /// Metrics that record.
    pub fn on() -> Metrics {
        let recorders = Recorders {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram),
            messages_sent: Counter::default(),
            messages_pushed: Counter::default(),
            messages_fetched: Counter::default(),
            push_queue_drops: Counter::default(),
            subscriptions: Family::default(),
            connections: Family::default(),
            all_connections: Gauge::default(),
            connections_rejected: Family::default(),
            rate_limited: Family::default(),
            peer_listener: std::sync::OnceLock::new(),
        };
        // Every protocol's series exists from the start, at zero, so that a rate over it
        // is defined before its first event.
        for protocol in [WIRE, GRPC, WEB] {
            let labels = ProtocolLabels { protocol };
            drop(recorders.subscriptions.get_or_create(&labels));
            drop(recorders.connections.get_or_create(&labels));
            drop(recorders.connections_rejected.get_or_create(&labels));
            drop(recorders.rate_limited.get_or_create(&labels));
        }
        Metrics(Some(Arc::new(recorders)))
    }

    /// Metrics that record nothing: the admin listener is off, so nobody could read them.
    pub fn off() -> Metrics {
        Metrics(None)
    }

    /// Reads the server-to-server listener's counts at each scrape (see
    /// `corvid_raft::network::listener`). Set once, before the registry is made.
    pub fn peer_listener(&self, stats: Arc<ListenerStats>) {
        if let Some(recorders) = &self.0 {
            let _ = recorders.peer_listener.set(stats);
        }
    }

    /// A request answered by the service core.
    pub fn request(
        &self,
        protocol: &'static str,
        operation: &'static str,
        result: Result<(), &ApiError>,
        elapsed: Duration,
    ) {
        let Some(recorders) = &self.0 else { return };
        let code = match result {
            Ok(()) => "ok",
            Err(error) => error.code.name(),
        };
        recorders
            .requests
            .get_or_create(&RequestLabels {
                operation,
                protocol,
                code,
            })
            .inc();
        recorders
            .request_seconds
            .get_or_create(&OperationLabels {
                operation,
                protocol,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A message was accepted (a new one, not a retried send answered from the first).
    pub fn message_sent(&self) {
        if let Some(recorders) = &self.0 {
            recorders.messages_sent.inc();
        }
    }

    /// `count` messages were queued for live subscribers.
    pub fn messages_pushed(&self, count: u64) {
        if let (Some(recorders), 1..) = (&self.0, count) {
            recorders.messages_pushed.inc_by(count);
        }
    }

    /// `count` messages were read on demand (fetch unread).
    pub fn messages_fetched(&self, count: u64) {
        if let (Some(recorders), 1..) = (&self.0, count) {
            recorders.messages_fetched.inc_by(count);
        }
    }

    /// A subscriber was dropped because its push queue was full.
    pub fn push_queue_drop(&self) {
        if let Some(recorders) = &self.0 {
            recorders.push_queue_drops.inc();
        }
    }

    /// Counts a live subscription over `protocol` until the returned guard is dropped.
    pub fn subscription(&self, protocol: &'static str) -> Live {
        let Some(recorders) = &self.0 else {
            return Live::none();
        };
        let labels = ProtocolLabels { protocol };
        Live::started(vec![recorders.subscriptions.get_or_create_owned(&labels)])
    }

    /// Counts an open connection over `protocol` until the returned guard is dropped.
    pub fn connection(&self, protocol: &'static str) -> Live {
        let Some(recorders) = &self.0 else {
            return Live::none();
        };
        let labels = ProtocolLabels { protocol };
        Live::started(vec![
            recorders.connections.get_or_create_owned(&labels),
            recorders.all_connections.clone(),
        ])
    }

    /// A connection found no free slot and was closed.
    pub fn connection_rejected(&self, protocol: &'static str) {
        if let Some(recorders) = &self.0 {
            recorders
                .connections_rejected
                .get_or_create(&ProtocolLabels { protocol })
                .inc();
        }
    }

    /// A request was refused by its connection's rate limit.
    pub fn rate_limited(&self, protocol: &'static str) {
        if let Some(recorders) = &self.0 {
            recorders
                .rate_limited
                .get_or_create(&ProtocolLabels { protocol })
                .inc();
        }
    }

    /// Open connections over every protocol, as counted here (0 when off).
    pub fn open_connections(&self) -> i64 {
        self.0.as_ref().map_or(0, |r| r.all_connections.get())
    }

    /// Messages accepted since the start (0 when off).
    pub fn messages_sent_total(&self) -> u64 {
        self.0.as_ref().map_or(0, |r| r.messages_sent.get())
    }

    /// The registry the admin listener encodes: the recorders here and, read at each
    /// scrape, what `service`'s node, store and process report.
    pub fn registry(&self, service: &Arc<Service>, data_dir: std::path::PathBuf) -> Registry {
        let mut registry = Registry::default();
        if let Some(r) = &self.0 {
            registry.register(
                "corvid_requests",
                "Requests answered by the service, by operation, protocol and result code",
                r.requests.clone(),
            );
            registry.register(
                "corvid_request_duration_seconds",
                "Time from a decoded request to its answer, by operation and protocol",
                r.request_seconds.clone(),
            );
            registry.register(
                "corvid_messages_sent",
                "Messages accepted (a retried send is counted once)",
                r.messages_sent.clone(),
            );
            registry.register(
                "corvid_messages_pushed",
                "Messages queued for live subscribers of this server",
                r.messages_pushed.clone(),
            );
            registry.register(
                "corvid_messages_fetched",
                "Messages read on demand (fetch unread)",
                r.messages_fetched.clone(),
            );
            registry.register(
                "corvid_push_queue_drops",
                "Subscribers dropped because their push queue was full",
                r.push_queue_drops.clone(),
            );
            registry.register(
                "corvid_subscriptions",
                "Live subscriptions on this server, by protocol",
                r.subscriptions.clone(),
            );
            registry.register(
                "corvid_connections",
                "Open client connections, by protocol",
                r.connections.clone(),
            );
            registry.register(
                "corvid_connections_rejected",
                "Connections closed at once for want of a free slot, by protocol",
                r.connections_rejected.clone(),
            );
            registry.register(
                "corvid_rate_limited_requests",
                "Requests refused by their connection's rate limit, by protocol",
                r.rate_limited.clone(),
            );
            if let Some(stats) = r.peer_listener.get() {
                registry.register_collector(Box::new(PeerListenerCounts(stats.clone())));
            }
        }
        registry.register_collector(Box::new(ScrapeTime {
            service: Arc::downgrade(service),
            data_dir,
            started: SystemTime::now(),
        }));
        registry
    }
}

/// Keeps its gauges one higher while it lives.
#[derive(Debug)]
pub struct Live(Vec<Gauge>);

impl Live {
    /// A guard that counts nothing.
    pub fn none() -> Live {
        Live(Vec::new())
    }

    fn started(gauges: Vec<Gauge>) -> Live {
        for gauge in &gauges {
            gauge.inc();
        }
        Live(gauges)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        for gauge in &self.0 {
            gauge.dec();
        }
    }
}

/// The name of a request's operation, as the `operation` label gives it.
pub fn operation(request: &Request) -> &'static str {
    match request {
        Request::Ping => "ping",
        Request::CreateAccount { .. } => "create_account",
        Request::Login { .. } => "login",
        Request::Logout { .. } => "logout",
        Request::DeleteAccount { .. } => "delete_account",
        Request::ListAccounts { .. } => "list_accounts",
        Request::Send { .. } => "send",
        Request::FetchUnread { .. } => "fetch_unread",
        Request::MarkRead { .. } => "mark_read",
        Request::History { .. } => "history",
        Request::DeleteMessages { .. } => "delete_messages",
        Request::Subscribe { .. } => "subscribe",
    }
}

/// Figures read when the metrics are scraped: Raft's, the store's, the process's.
#[derive(Debug)]
struct ScrapeTime {
    service: std::sync::Weak<Service>,
    data_dir: std::path::PathBuf,
    started: SystemTime,
}

impl prometheus_client::collector::Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        gauge_with(
            &mut encoder,
            "corvid_build_info",
            "The running version (the value is always 1)",
            &version,
            1,
        )?;
        let started = self.started.duration_since(UNIX_EPOCH).unwrap_or_default();
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "When the server started, in seconds since the Unix epoch",
            started.as_secs_f64(),
        )?;
        if let Some(process) = ProcessFigures::read() {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory of the server process",
                process.resident_bytes as f64,
            )?;
            gauge(
                &mut encoder,
                "process_open_fds",
                "File descriptors the server process holds open",
                process.open_fds as f64,
            )?;
        }
        let disk = DataDirFigures::read(&self.data_dir);
        gauge(
            &mut encoder,
            "corvid_data_dir_bytes",
            "Bytes of the files in the data directory",
            disk.total_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "corvid_snapshot_bytes",
            "Bytes of the snapshot files in the data directory",
            disk.snapshot_bytes as f64,
        )?;

        let Some(service) = self.service.upgrade() else {
            return Ok(());
        };
        let node = service.node();
        let store = node.store_metrics();
        for (name, help, value) in [
            (
                "corvid_log_appends_total",
                "Appends of entries to the Raft log",
                store.log_appends,
            ),
            (
                "corvid_log_entries_total",
                "Entries appended to the Raft log",
                store.log_entries,
            ),
            (
                "corvid_log_fsyncs_total",
                "Flushes of the Raft log completed with fsync",
                store.log_commits,
            ),
            (
                "corvid_state_syncs_total",
                "Commits of the state database completed with fsync",
                store.state_syncs,
            ),
            (
                "corvid_applied_commands_total",
                "Commands applied to the state machine",
                store.applied_commands,
            ),
            (
                "corvid_snapshots_total",
                "Snapshots made current since the start (built here or received)",
                store.snapshots,
            ),
        ] {
            counter(&mut encoder, name, help, value)?;
        }
        gauge(
            &mut encoder,
            "corvid_log_bytes",
            "Bytes of the Raft log's files",
            store.log_bytes as f64,
        )?;
        let histograms = node.store_histograms();
        histogram(
            &mut encoder,
            "corvid_log_fsync_duration_seconds",
            "Time from handing a Raft log flush to the disk until it is fsync'd",
            &histograms.log_fsync_seconds,
        )?;
        histogram(
            &mut encoder,
            "corvid_log_entries_per_flush",
            "Entries written by each Raft log flush that appends",
            &histograms.entries_per_flush,
        )?;
        histogram(
            &mut encoder,
            "corvid_state_sync_duration_seconds",
            "Time of each fsync'd commit of the state database",
            &histograms.state_sync_seconds,
        )?;

        let raft = RaftFigures::read(node, store.committed_index);
        for (name, help, value) in [
            (
                "corvid_raft_node_id",
                "This server's Raft node id",
                raft.node_id as f64,
            ),
            (
                "corvid_raft_term",
                "The current Raft term",
                raft.term as f64,
            ),
            (
                "corvid_raft_leader_id",
                "The node id of the leader this server knows, or -1 when it knows none",
                raft.leader.map_or(-1.0, |id| id as f64),
            ),
            (
                "corvid_raft_last_log_index",
                "Index of the last entry in this server's Raft log",
                raft.last_log_index as f64,
            ),
            (
                "corvid_raft_committed_index",
                "Index of the last entry this server knows to be committed",
                raft.committed_index as f64,
            ),
            (
                "corvid_raft_applied_index",
                "Index of the last entry applied to this server's state",
                raft.applied_index as f64,
            ),
            (
                "corvid_raft_snapshot_index",
                "Index of the last entry the current snapshot holds",
                raft.snapshot_index as f64,
            ),
        ] {
            gauge(&mut encoder, name, help, value)?;
        }
        let role = [("role", raft.role)];
        gauge_with(
            &mut encoder,
            "corvid_raft_role",
            "This server's Raft role (the value is always 1)",
            &role,
            1,
        )?;
        if !raft.followers.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "corvid_raft_follower_matched_index",
                "On the leader: index of the last entry each follower holds",
                None,
                MetricType::Gauge,
            )?;
            for (peer, matched) in &raft.followers {
                let peer = peer.to_string();
                let labels = [("peer", peer.as_str())];
                ConstGauge::new(*matched as f64).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The server-to-server listener's counts, read when scraped.
#[derive(Debug)]
struct PeerListenerCounts(Arc<ListenerStats>);

impl prometheus_client::collector::Collector for PeerListenerCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = self.0.figures();
        gauge(
            &mut encoder,
            "corvid_peer_connections",
            "Connections open on the server-to-server listener, authenticated or not",
            figures.open as f64,
        )?;
        let mut metric = encoder.encode_descriptor(
            "corvid_peer_connections_closed",
            "Server-to-server connections closed by the listener's limits: `full` (every slot \
             held by an authenticated connection), `evicted` (an unauthenticated one closed to \
             make room), `auth_timeout` (no authenticated call within the deadline)",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in [
            ("full", figures.refused_full),
            ("evicted", figures.evicted),
            ("auth_timeout", figures.auth_timeouts),
        ] {
            let labels = [("reason", reason)];
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
        counter(
            &mut encoder,
            "corvid_peer_calls_refused_total",
            "Server-to-server calls refused from their headers: another cluster's id or a \
             wrong secret",
            figures.calls_refused,
        )
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    // The text encoder adds `_total` to a counter's name.
    let name = name.strip_suffix("_total").unwrap_or(name);
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn gauge_with(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    value: i64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric.encode_family(&labels)?)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    // The encoder adds the `+Inf` bucket itself.
    let finite: Vec<(f64, u64)> = snapshot
        .buckets
        .iter()
        .copied()
        .filter(|(bound, _)| bound.is_finite())
        .collect();
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        snapshot.sum,
        snapshot.count,
        &finite,
        None,
    )
}

/// What Raft reports about this server, read from openraft's metrics and the store.
#[derive(Clone, Debug, PartialEq)]
pub struct RaftFigures {
    pub node_id: u64,
    pub term: u64,
    pub leader: Option<u64>,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    /// On the leader: each follower's node id and the index of the last entry it holds.
    pub followers: Vec<(u64, u64)>,
    /// Why openraft stopped, if it did.
    pub stopped: Option<String>,
}

impl RaftFigures {
    pub fn read(node: &corvid_raft::Node, committed_index: u64) -> RaftFigures {
        use openraft::ServerState;
        let metrics = node.raft().metrics();
        let metrics = metrics.borrow();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let followers = metrics
            .replication
            .iter()
            .flatten()
            .filter(|(peer, _)| **peer != metrics.id)
            .map(|(peer, matched)| (*peer, matched.map_or(0, |id| id.index)))
            .collect();
        RaftFigures {
            node_id: metrics.id,
            term: metrics.current_term,
            leader: metrics.current_leader,
            role,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            // openraft saves the committed id before it applies up to it, so this is
            // never behind; the applied index covers a store that has not been told yet.
            committed_index: committed_index.max(metrics.last_applied.map_or(0, |id| id.index)),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            followers,
            stopped: metrics.running_state.as_ref().err().map(|e| e.to_string()),
        }
    }
}

/// The process's memory and open files, from `/proc/self` (Linux only).
struct ProcessFigures {
    resident_bytes: u64,
    open_fds: u64,
}

impl ProcessFigures {
    fn read() -> Option<ProcessFigures> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let resident_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(ProcessFigures {
            resident_bytes: resident_kib * 1024,
            open_fds,
        })
    }
}

/// Bytes of the files in a data directory, and of its snapshots.
#[derive(Clone, Copy, Debug, Default)]
pub struct DataDirFigures {
    pub total_bytes: u64,
    pub snapshot_bytes: u64,
}

impl DataDirFigures {
    /// Walks the directory (a few dozen files: the log's chunks, the state file, the
    /// snapshots); what cannot be read counts as nothing.
    pub fn read(dir: &std::path::Path) -> DataDirFigures {
        let snapshot_bytes = dir_bytes(&dir.join(corvid_store::SNAPSHOT_DIR), 0);
        DataDirFigures {
            total_bytes: dir_bytes(dir, 0),
            snapshot_bytes,
        }
    }
}

/// How deep the data directory's walk goes: it holds directories two levels deep at most.
const MAX_DEPTH: usize = 4;

fn dir_bytes(dir: &std::path::Path, depth: usize) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() && depth < MAX_DEPTH => dir_bytes(&entry.path(), depth + 1),
            Ok(meta) if meta.is_file() => meta.len(),
            _ => 0,
        })
        .sum()
}
