//! Corvid's server: configuration, the service core shared by every frontend, the push
//! hub, and the frontends themselves.
//!
//! [`start`] assembles a running server from a [`Config`] (tests use it with port 0);
//! [`run`] is `corvid serve`: flags over the config file, logs, signals.

pub mod admin;
pub mod admission;
mod cluster;
pub mod config;
pub mod grpc;
pub mod hub;
pub mod metrics;
mod password;
pub mod service;
pub mod tcp;
pub mod tls;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use corvid_store::{ClientAddrs, Member};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use admission::Admission;
pub use config::{Config, OptionalAddress};
use hub::{Hub, HubLimits};
use service::{Service, ServiceConfig};

/// Flags of `corvid serve`. Every flag overrides the same setting of the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (see docs/configuration in the README).
    #[arg(long, env = "CORVID_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./corvid-data].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Address of the binary-protocol listener [default: 127.0.0.1:7070].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address of the gRPC listener, or `off` [default: 127.0.0.1:7071].
    #[arg(long, value_name = "ADDR|off")]
    pub grpc_listen: Option<OptionalAddress>,
    /// Address of the HTTP listener (web UI and WebSocket API), or `off`
    /// [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR|off")]
    pub http_listen: Option<OptionalAddress>,
    /// Address of the admin HTTP listener (metrics, health, status), or `off`, which also
    /// stops recording metrics [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR|off")]
    pub admin_listen: Option<OptionalAddress>,
    /// Log format: `text` for people, `json` for one JSON object per line [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<config::LogFormat>,
    /// PEM certificate (chain) for TLS on every client listener; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// End older sessions of an account when it logs in again.
    #[arg(long)]
    pub single_session: bool,
    /// Run as this member of the configuration's `[cluster]`: its addresses and data
    /// directory become this server's (flags still override them).
    #[arg(long)]
    pub id: Option<u64>,
    /// With --id: this server is being added to a running cluster (`corvid cluster add`);
    /// its new data directory waits to be sent the cluster instead of forming it.
    #[arg(long, requires = "id")]
    pub join: bool,
}

impl ServeArgs {
    /// The configuration: defaults, then the file, then the flags.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(id) = self.id {
            config = config.as_member(id)?;
            if let Some(cluster) = &mut config.cluster {
                cluster.join = self.join;
            }
        }
        if let Some(data) = &self.data {
            config.data_dir = data.clone();
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(OptionalAddress(grpc_listen)) = self.grpc_listen {
            config.grpc_listen = grpc_listen;
        }
        if let Some(OptionalAddress(http_listen)) = self.http_listen {
            config.http_listen = http_listen;
        }
        if let Some(OptionalAddress(admin_listen)) = self.admin_listen {
            config.admin_listen = admin_listen;
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if self.single_session {
            config.sessions.single_session = true;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls.cert = Some(cert.clone());
            config.tls.key = Some(key.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

/// A server that is up: listening, with its node started.
pub struct RunningServer {
    wire_addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    /// The listeners' tasks, until they have ended.
    wire: Option<tokio::task::JoinHandle<()>>,
    grpc: Option<tokio::task::JoinHandle<()>>,
    /// The server-to-server listener of a cluster member, and where it listens.
    peer: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    http: Option<tokio::task::JoinHandle<()>>,
    admin: Option<tokio::task::JoinHandle<()>>,
    admission: Arc<Admission>,
    service: Arc<Service>,
}

impl RunningServer {
    /// Where the binary protocol listens (with the real port when 0 was asked).
    pub fn wire_addr(&self) -> SocketAddr {
        self.wire_addr
    }

    /// Where gRPC listens, unless it is off.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// Where the web UI and its WebSocket API listen, unless HTTP is off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Where the admin listener (metrics, health, status) listens, unless it is off.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Where the server-to-server listener listens, for a cluster member.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.as_ref().map(|(address, _)| *address)
    }

    /// Waits, at most `timeout`, until the cluster has a leader this server knows (a single
    /// server is ready when [`start`] returns).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), corvid_raft::NodeError> {
        self.service.node().wait_ready(timeout).await
    }

    /// Connections open now, over every listener.
    pub fn open_connections(&self) -> usize {
        self.admission.open_connections()
    }

    /// Stops accepting, closes every connection, and shuts the node down cleanly. Open
    /// connections get `shutdown_grace_secs` to take their last answers; then whatever is
    /// still open is closed, so this returns in bounded time whatever clients do.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let grace = self.admission.shutdown_grace();
        if tokio::time::timeout(grace, self.connections_closed())
            .await
            .is_err()
        {
            self.admission.close_all();
            // A closed connection's stream fails at once; its task ends at its next poll.
            if tokio::time::timeout(grace, self.connections_closed())
                .await
                .is_err()
            {
                tracing::error!("connections still open after they were closed; leaving them");
                let listeners = [self.wire.take(), self.grpc.take(), self.http.take()];
                for listener in listeners.into_iter().flatten() {
                    listener.abort();
                }
            }
        }
        if let Some((_, peer)) = self.peer.take() {
            // Peers hold long-lived connections: past the grace, the listener is dropped.
            if tokio::time::timeout(grace, peer).await.is_err() {
                tracing::warn!("the server-to-server listener did not stop in time");
            }
        }
        if let Some(admin) = self.admin.take() {
            // It stops at the shutdown signal; its connections are cut there too.
            let _ = admin.await;
        }
        let m = self.service.node().store_metrics();
        tracing::info!(
            log_commits = m.log_commits,
            log_entries = m.log_entries,
            apply_batches = m.apply_batches,
            applied_commands = m.applied_commands,
            state_syncs = m.state_syncs,
            "storage since start"
        );
        self.service
            .node()
            .shutdown()
            .await
            .context("shutting down the node")?;
        Ok(())
    }
}

impl RunningServer {
    /// Waits until every listener has stopped and every connection has ended.
    async fn connections_closed(&mut self) {
        // A task's handle is awaited once: an ended listener is forgotten.
        if let Some(wire) = &mut self.wire {
            let _ = wire.await;
            self.wire = None;
        }
        if let Some(grpc) = &mut self.grpc {
            let _ = grpc.await;
            self.grpc = None;
        }
        if let Some(http) = &mut self.http {
            let _ = http.await;
            self.http = None;
        }
        self.admission.wait().await;
    }
}

/// The node id of a single server (a cluster of one).
const SINGLE_SERVER_ID: u64 = 1;
/// How often a cluster member still waiting for a leader says so.
const CLUSTER_READY_NOTICE: Duration = Duration::from_secs(10);
/// How long a starting server waits for its node to lead (a single server elects itself at
/// once; reading the log back comes before, in `Node::open`).
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// Opens the data directory, starts the node and the listeners, and returns once the node
/// is ready (it leads). A member of a `[cluster]` returns as soon as it listens (its
/// readiness, a leader known, needs a quorum of the others: see
/// [`RunningServer::wait_ready`]).
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    config.validate()?;
    // Read before anything listens, so that a bad certificate stops the start.
    let wire_tls = tls::acceptor(&config.tls, &[])?;
    let grpc_tls = tls::acceptor(&config.tls, &[tls::ALPN_H2])?;
    let http_tls = tls::acceptor(&config.tls, &[tls::ALPN_HTTP1])?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let wire_addr = listener.local_addr()?;
    let grpc_listener = match config.grpc_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for gRPC on {address}"))?,
        ),
        None => None,
    };
    let grpc_addr = match &grpc_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let http_listener = match config.http_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for HTTP on {address}"))?,
        ),
        None => None,
    };
    let http_addr = match &http_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let admin_listener = admin::bind(config.admin_listen).await?;
    let admin_addr = match &admin_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    // With nobody to read them, metrics are not recorded at all.
    let metrics = match admin_addr {
        Some(_) => metrics::Metrics::on(),
        None => metrics::Metrics::off(),
    };

    let hub = Arc::new(
        Hub::new(HubLimits {
            queue_bytes: config.limits.subscriber_queue_bytes,
            subscriptions_per_account: config.limits.max_subscriptions_per_account,
        })
        .with_metrics(metrics.clone()),
    );
    let sink_hub = hub.clone();
    let effects: corvid_store::EffectSink = Arc::new(move |effects| sink_hub.dispatch(effects));
    // A single server has no peers, so no server-to-server address; its record names the
    // addresses clients reach it at.
    let member = Member {
        raft_addr: String::new(),
        client: ClientAddrs {
            wire: Some(wire_addr.to_string()),
            grpc: grpc_addr.map(|address| address.to_string()),
            http: http_addr.map(|address| address.to_string()),
        },
    };
    let mut node_config = corvid_raft::NodeConfig {
        node_id: SINGLE_SERVER_ID,
        member,
        min_free_bytes: config.limits.min_free_disk_bytes,
        ..corvid_raft::NodeConfig::single_server(config.data_dir.clone())
    };
    let peering = match &config.cluster {
        Some(cluster) => {
            let peering = cluster::prepare(cluster, &mut node_config, wire_addr, grpc_addr).await?;
            metrics.peer_listener(peering.stats());
            Some(peering)
        }
        None => None,
    };
    let node = corvid_raft::Node::open(node_config, effects)
        .await
        .with_context(|| format!("cannot open the node in {}", config.data_dir.display()))?;
    // A single server is a cluster of one, and makes itself one on its first start. A
    // cluster member with no cluster in its directory forms the configured cluster with
    // the others, or learns the log from the leader when the cluster has formed (a server
    // being added always does); it asks the others in the background, before its
    // server-to-server listener serves (see `corvid_raft::Node::form_or_catch_up`).
    let initialized = async {
        if !node.is_initialized().await? {
            match &config.cluster {
                Some(cluster) => node.form_or_catch_up(cluster::members(cluster), cluster.join),
                None => {
                    node.initialize_alone().await?;
                }
            }
        }
        Ok::<_, corvid_raft::NodeError>(())
    };
    if let Err(e) = initialized.await {
        if let Err(shutdown) = node.shutdown().await {
            tracing::warn!(error = %shutdown, "shutting down a node that failed to start");
        }
        return Err(e).context("cannot initialize the node");
    }
    let shutdown = CancellationToken::new();
    let peer = peering.map(|peering| {
        let online = hub.clone();
        node.report_presence(Arc::new(move || online.online_usernames()));
        let address = peering.address;
        (
            address,
            tokio::spawn(peering.serve(node.peer_service(), shutdown.clone())),
        )
    });
    let service = Service::new(
        node,
        hub,
        ServiceConfig {
            session_policy: config.session_policy(),
            max_text_bytes: config.limits.max_text_bytes,
            login: config.login.clone(),
            metrics: metrics.clone(),
        },
    )?;

    // One front door for every listener: one pool of connection slots, one set of deadlines.
    let admission = Admission::with_metrics(&config.limits, shutdown.clone(), metrics.clone());
    let wire = tokio::spawn(tcp::serve(
        listener,
        wire_tls,
        service.clone(),
        admission.clone(),
        shutdown.clone(),
    ));
    let grpc = grpc_listener.map(|listener| {
        tokio::spawn(grpc::serve(
            listener,
            grpc_tls,
            service.clone(),
            admission.clone(),
            shutdown.clone(),
        ))
    });
    let http = http_listener.map(|listener| {
        tokio::spawn(web::serve(
            listener,
            http_tls,
            service.clone(),
            admission.clone(),
            shutdown.clone(),
        ))
    });
    // The admin listener answers from now on: `/readyz` says 503 until the node leads.
    let admin = admin_listener.map(|listener| {
        let state = admin::AdminState::new(service.clone(), metrics, config.data_dir.clone());
        tokio::spawn(state.sample_rates(shutdown.clone()));
        tokio::spawn(admin::serve(listener, state, shutdown.clone()))
    });
    let server = RunningServer {
        wire_addr,
        grpc_addr,
        http_addr,
        shutdown,
        wire: Some(wire),
        grpc,
        peer,
        http,
        admin_addr,
        admin,
        admission,
        service,
    };
    if let Some(cluster) = &config.cluster {
        tracing::info!(
            member = cluster.serve_as,
            %wire_addr,
            ?grpc_addr,
            raft = ?server.peer_addr(),
            "listening; the cluster serves once a leader is known"
        );
        return Ok(server);
    }
    // The listeners answer already (writes fail as not-leader until now); the server is
    // ready, and says so, once its node leads.
    if let Err(e) = server.service.node().wait_ready(READY_DEADLINE).await {
        if let Err(shutdown) = server.shutdown().await {
            tracing::warn!(error = %shutdown, "shutting down a server that failed to start");
        }
        return Err(e).context("the node found no leader");
    }
    let tls_on = config.tls.files().is_some();
    tracing::info!(%wire_addr, ?grpc_addr, ?http_addr, ?admin_addr, tls = tls_on, data_dir = %config.data_dir.display(), "corvid is serving");
    Ok(server)
}

/// `corvid serve` with `config` (see [`ServeArgs::config`]): runs until SIGTERM or Ctrl-C, then
/// shuts down cleanly.
pub async fn run(config: Config) -> anyhow::Result<()> {
    init_logging(&config.log);
    let data_dir = config.data_dir.clone();
    let clustered = config.cluster.is_some();
    let server = start(config).await?;
    if clustered {
        // A member serves once a leader is known, which needs a quorum of the servers: it
        // keeps trying (and can be stopped) meanwhile.
        loop {
            tokio::select! {
                _ = wait_for_signal() => {
                    tracing::info!("shutting down");
                    return server.shutdown().await;
                }
                ready = server.wait_ready(CLUSTER_READY_NOTICE) => match ready {
                    Ok(()) => break,
                    Err(_) => tracing::warn!(
                        "no leader yet: waiting for a majority of the cluster's servers"
                    ),
                },
            }
        }
    }
    // One line on stdout says where to connect: scripts and tests read it. The binary
    // protocol's address comes first.
    println!("{}", ready_line(&server, &data_dir));
    let raft = server.service.node().raft().clone();
    tokio::select! {
        _ = wait_for_signal() => {}
        reason = node_stopped(raft) => {
            // openraft 0.9 never restarts its core after a storage error (a disk that
            // filled up anyway, a failed fsync): a server that went on would answer pings
            // and nothing else. Exit at once, like a crash, so that a supervisor restarts
            // it: the log is fsync'd and opening it repairs what a crash leaves behind.
            tracing::error!(%reason, "the node stopped on a fatal error; exiting");
            std::process::exit(1);
        }
    }
    tracing::info!("shutting down");
    server.shutdown().await
}

/// Resolves with the reason once openraft's core has stopped by itself, on a fatal error.
async fn node_stopped(raft: corvid_store::typ::Raft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "the raft core stopped".to_string();
        }
    }
}

/// `corvid serving on 127.0.0.1:7070 (grpc 127.0.0.1:7071, http 127.0.0.1:8080, admin
/// 127.0.0.1:9090, data in ./corvid-data)`.
fn ready_line(server: &RunningServer, data_dir: &std::path::Path) -> String {
    let or_off = |address: Option<SocketAddr>| match address {
        Some(address) => address.to_string(),
        None => "off".to_string(),
    };
    format!(
        "corvid serving on {} (grpc {}, http {}, admin {}, data in {})",
        server.wire_addr(),
        or_off(server.grpc_addr()),
        or_off(server.http_addr()),
        or_off(server.admin_addr()),
        data_dir.display()
    )
}

fn init_logging(log: &config::Log) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests starting several servers) is harmless.
    let _ = match log.format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Text => builder.try_init(),
    };
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn flags_switch_the_admin_listener_off_and_the_logs_to_json() {
        let config = Serve::parse_from(["serve", "--admin-listen", "off", "--log-format", "json"])
            .args
            .config()
            .unwrap();
        assert_eq!(config.admin_listen, None);
        assert_eq!(config.log.format, config::LogFormat::Json);
        let config = Serve::parse_from(["serve", "--admin-listen", "127.0.0.1:9191"])
            .args
            .config()
            .unwrap();
        assert_eq!(config.admin_listen, Some("127.0.0.1:9191".parse().unwrap()));
        assert_eq!(config.log.format, config::LogFormat::Text);
        assert!(Serve::try_parse_from(["serve", "--log-format", "xml"]).is_err());
    }
}
