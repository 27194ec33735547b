//! Server configuration: one TOML file, a sane default for every setting, flags on top.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use governor::Quota;

use serde::{Deserialize, Serialize};

use corvid_core::SessionPolicy;

/// The default port of the binary protocol.
pub const DEFAULT_PORT: u16 = 7070;
/// The default port of gRPC.
pub const DEFAULT_GRPC_PORT: u16 = corvid_grpc::DEFAULT_PORT;
/// The default port of the HTTP listener (the web UI and its WebSocket API).
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// The default port of the admin listener (metrics, health, status).
pub const DEFAULT_ADMIN_PORT: u16 = 9090;

/// Everything `corvid serve` can be told. Field docs are the reference for the TOML file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the database, the Raft log and snapshots.
    pub data_dir: PathBuf,
    /// Address of the binary-protocol listener. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address of the gRPC listener, or `"off"` for no gRPC. Port 0 picks a free port.
    #[serde(with = "optional_address")]
    pub grpc_listen: Option<SocketAddr>,
    /// Address of the HTTP listener (the web UI at `/`, its WebSocket API at `/api/ws`),
    /// or `"off"` for none. Port 0 picks a free port.
    #[serde(with = "optional_address")]
    pub http_listen: Option<SocketAddr>,
    /// Address of the admin HTTP listener (`/metrics` for Prometheus, `/healthz`,
    /// `/readyz`, `/status`), or `"off"`, which also stops recording metrics. It has no
    /// authentication: keep it on loopback or a private network. Port 0 picks a free port.
    #[serde(with = "optional_address")]
    pub admin_listen: Option<SocketAddr>,
    /// Threads of the async runtime, which serves connections and runs Raft. 0 (the
    /// default) means one fewer than the machine's cores, at least one: the state machine
    /// applies on a thread of its own, and the log fsyncs on another.
    pub worker_threads: usize,
    pub limits: Limits,
    pub sessions: Sessions,
    pub log: Log,
    pub tls: Tls,
    pub login: Login,
    /// The servers of a cluster, shared by all of them; absent for a single server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

/// The longest connection deadline a configuration may set (a day).
pub const MAX_DEADLINE_SECS: u64 = 24 * 3600;
/// The smallest subscriber queue a configuration may set.
pub const MIN_SUBSCRIBER_QUEUE_BYTES: usize = 4096;

/// The most runtime threads a configuration may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;

impl Config {
    /// The number of runtime threads to start (see [`Config::worker_threads`]).
    pub fn runtime_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.saturating_sub(1).max(1)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame a client may send, in bytes; a larger one closes the connection.
    pub max_frame_bytes: usize,
    /// Most connections served at once; more are told `too_many_connections` and closed.
    pub max_connections: usize,
    /// Sustained requests per second allowed on one connection.
    pub requests_per_second: u32,
    /// Requests one connection may send in a burst above the sustained rate.
    pub request_burst: u32,
    /// Requests one connection may have in flight before the server stops reading from it.
    pub max_in_flight: usize,
    /// Largest message text, in bytes (at most 1 MiB).
    pub max_text_bytes: usize,
    /// Seconds a new connection has to complete its handshakes (TLS, then the binary
    /// protocol's hello or the HTTP/2 preface); else it is closed.
    pub handshake_timeout_secs: u64,
    /// Seconds a binary-protocol frame may take to arrive once its first byte has; a client
    /// that sends part of a frame and stops is disconnected.
    pub frame_timeout_secs: u64,
    /// Seconds a connection has to log in (a successful `Login`, or any request with a
    /// valid session token); else it is closed.
    pub login_timeout_secs: u64,
    /// Seconds a client may leave unread what the server has to send it before it is
    /// disconnected.
    pub write_timeout_secs: u64,
    /// Seconds a shutdown (SIGTERM) waits for open connections to take their last answers
    /// before it closes them.
    pub shutdown_grace_secs: u64,
    /// Seconds a gRPC (HTTP/2) connection may stay open with no call in progress.
    pub grpc_idle_timeout_secs: u64,
    /// Bytes of pushed events queued for one subscriber; a subscriber that falls further
    /// behind is dropped and resubscribes from its last message id.
    pub subscriber_queue_bytes: usize,
    /// Live subscriptions one account may hold on this server.
    pub max_subscriptions_per_account: usize,
    /// Live `Subscribe` streams one gRPC connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Most calls (HTTP/2 streams) one gRPC connection may have open at once; the
    /// server advertises it as `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub grpc_max_streams: u32,
    /// Seconds a gRPC request's body has to arrive whole; then the call fails.
    pub grpc_body_timeout_secs: u64,
    /// Bytes of unfinished request bodies one gRPC connection may have read at once;
    /// past it the server stops reading them until others finish. At least
    /// `max_frame_bytes` + 65536.
    pub grpc_request_buffer_bytes: usize,
    /// Writes are refused with `storage_full` while the data directory's disk has less than
    /// this many bytes free; reads go on, and writes resume once space is freed. It leaves
    /// room for the next log chunk (32 MiB, reserved whole) and for the state to commit; at
    /// least 40 MiB.
    pub min_free_disk_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sessions {
    /// A session ends after this many seconds without activity.
    pub idle_timeout_secs: u64,
    /// A session ends this many seconds after login, whatever the activity.
    pub max_lifetime_secs: u64,
    /// When true, a new login ends the account's older sessions, which are told why.
    pub single_session: bool,
}

/// TLS for both listeners (the binary protocol and gRPC). Without a certificate and key
/// both speak plain TCP, which suits loopback; give both to serve TLS only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM file with the server's certificate, followed by any intermediates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl Tls {
    /// The certificate and key files, when TLS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }
}

/// Password hashing and the failed-login throttle. The throttle counts failures per
/// source address (IPv4, or IPv6 /64), per username and address, and per username; see
/// `crates/corvid-server/src/password/throttle.rs` for the rules. It is per server, in
/// memory, and not replicated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Login {
    /// Threads that hash and check passwords (each keeps a 19 MiB argon2 block). 0 (the
    /// default) means one per core.
    pub hash_threads: usize,
    /// Password checks that may wait for a hashing thread; one more is answered `busy`.
    pub hash_queue: usize,
    /// Failed logins one source address may make in a burst.
    pub address_burst: u32,
    /// Seconds after which a source address may fail once more.
    pub address_refill_secs: u64,
    /// Failed logins one source address may make in a burst for one username.
    pub user_address_burst: u32,
    /// Seconds after which a source address may fail once more for one username.
    pub user_address_refill_secs: u64,
    /// Failed logins for one username, from every address, in a burst. Past it only
    /// addresses that have not failed for that username may try, so that an attacker
    /// cannot lock its owner out.
    pub user_burst: u32,
    /// Seconds after which a username may fail once more, from any address.
    pub user_refill_secs: u64,
    /// Entries each of the throttle's three tables keeps (the least recently used is
    /// forgotten first); about 100 bytes each.
    pub throttle_entries: usize,
}

/// The most password-hashing threads a configuration may ask for.
pub const MAX_HASH_THREADS: usize = 256;

impl Login {
    /// The number of hashing threads to start (see [`Login::hash_threads`]).
    pub fn threads(&self) -> usize {
        if self.hash_threads > 0 {
            return self.hash_threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl Default for Login {
    fn default() -> Login {
        Login {
            hash_threads: 0,
            hash_queue: 32,
            address_burst: 30,
            address_refill_secs: 2,
            user_address_burst: 5,
            user_address_refill_secs: 60,
            user_burst: 50,
            user_refill_secs: 30,
            throttle_entries: 100_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `corvid_server=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("corvid-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_GRPC_PORT))),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT))),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT))),
            worker_threads: 0,
            limits: Limits::default(),
            sessions: Sessions::default(),
            log: Log::default(),
            tls: Tls::default(),
            login: Login::default(),
            cluster: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: 1 << 20,
            max_connections: 20_000,
            requests_per_second: 2_000,
            request_burst: 4_000,
            max_in_flight: 64,
            max_text_bytes: corvid_core::validate::DEFAULT_MAX_TEXT,
            handshake_timeout_secs: 10,
            frame_timeout_secs: 30,
            login_timeout_secs: 60,
            write_timeout_secs: 30,
            shutdown_grace_secs: 5,
            grpc_idle_timeout_secs: 300,
            subscriber_queue_bytes: 1 << 20,
            max_subscriptions_per_account: 16,
            max_subscriptions_per_connection: 8,
            grpc_max_streams: 100,
            grpc_body_timeout_secs: 10,
            grpc_request_buffer_bytes: 2 << 20,
            min_free_disk_bytes: corvid_store::disk::DEFAULT_MIN_FREE_BYTES,
        }
    }
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            idle_timeout_secs: 3600,
            max_lifetime_secs: 30 * 24 * 3600,
            single_session: false,
        }
    }
}

impl Default for Log {
    fn default() -> Log {
        Log {
            format: LogFormat::Text,
            level: "info,openraft=warn".into(),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults with data in `data_dir` and every listener on a free loopback port: what a
    /// test or a benchmark that runs several servers side by side wants.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Config {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            data_dir: data_dir.into(),
            listen: any_port,
            grpc_listen: Some(any_port),
            http_listen: Some(any_port),
            admin_listen: Some(any_port),
            ..Config::default()
        }
    }

    /// Reads a TOML file; settings it does not name keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Refuses settings that cannot work, with the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let fail = |what: &str| Err(ConfigError::Invalid(what.to_string()));
        if l.max_text_bytes == 0 || l.max_text_bytes > corvid_core::validate::HARD_MAX_TEXT {
            return fail("limits.max_text_bytes must be 1..=1048576");
        }
        if l.max_frame_bytes < l.max_text_bytes + 1024 {
            return fail("limits.max_frame_bytes must exceed max_text_bytes by at least 1024");
        }
        if l.max_connections == 0 || l.max_in_flight == 0 {
            return fail("limits.max_connections and limits.max_in_flight must be positive");
        }
        if l.requests_per_second == 0 || l.request_burst == 0 {
            return fail("limits.requests_per_second and limits.request_burst must be positive");
        }
        let deadlines = [
            l.handshake_timeout_secs,
            l.frame_timeout_secs,
            l.login_timeout_secs,
            l.write_timeout_secs,
            l.shutdown_grace_secs,
            l.grpc_idle_timeout_secs,
            l.grpc_body_timeout_secs,
        ];
        if deadlines
            .iter()
            .any(|&secs| secs == 0 || secs > MAX_DEADLINE_SECS)
        {
            return fail("limits.*_timeout_secs and shutdown_grace_secs must be 1..=86400");
        }
        if l.subscriber_queue_bytes < MIN_SUBSCRIBER_QUEUE_BYTES {
            return fail("limits.subscriber_queue_bytes must be at least 4096");
        }
        if l.max_subscriptions_per_account == 0 || l.max_subscriptions_per_connection == 0 {
            return fail("limits.max_subscriptions_per_* must be positive");
        }
        // A gRPC Subscribe stream holds one of its connection's calls in flight for as long
        // as it lives: a connection full of streams must still have room for other calls.
        if l.max_subscriptions_per_connection >= l.max_in_flight {
            return fail("limits.max_subscriptions_per_connection must be below max_in_flight");
        }
        if l.grpc_max_streams == 0 {
            return fail("limits.grpc_max_streams must be positive");
        }
        if l.grpc_request_buffer_bytes < l.max_frame_bytes.saturating_add(65_536)
            || l.grpc_request_buffer_bytes > u32::MAX as usize
        {
            return fail(
                "limits.grpc_request_buffer_bytes must be max_frame_bytes + 65536 up to 4 GiB",
            );
        }
        if l.min_free_disk_bytes < corvid_store::disk::LEAST_MIN_FREE_BYTES {
            return fail("limits.min_free_disk_bytes must be at least 41943040 (40 MiB)");
        }
        if self.sessions.idle_timeout_secs == 0 || self.sessions.max_lifetime_secs == 0 {
            return fail("session timeouts must be positive");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return fail("tls.cert and tls.key go together: give both or neither");
        }
        // Two listeners cannot share an address (port 0 picks a free port for each).
        let fixed = |address: &Option<SocketAddr>| address.filter(|a| a.port() != 0);
        if let Some(admin) = fixed(&self.admin_listen) {
            if Some(admin) == fixed(&Some(self.listen)) || Some(admin) == fixed(&self.grpc_listen) {
                return fail("admin_listen must differ from listen and grpc_listen");
            }
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return fail("worker_threads must be 0 (automatic) to 1024");
        }
        self.login.validate()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        Ok(())
    }

    /// This configuration as member `id` of its `[cluster]` runs it (`corvid serve --id`):
    /// the member's client addresses become the listeners, and its data directory, if it
    /// names one, the data directory.
    pub fn as_member(mut self, id: u64) -> Result<Config, ConfigError> {
        let Some(cluster) = &mut self.cluster else {
            return Err(ConfigError::Invalid(
                "--id needs a [cluster] section in the configuration file".into(),
            ));
        };
        let Some(member) = cluster.members.iter().find(|m| m.id == id).cloned() else {
            let ids: Vec<String> = cluster.members.iter().map(|m| m.id.to_string()).collect();
            return Err(ConfigError::Invalid(format!(
                "--id {id} is not a member of the cluster (members: {})",
                ids.join(", ")
            )));
        };
        cluster.serve_as = Some(id);
        self.listen = member.wire;
        self.grpc_listen = member.grpc;
        // The member's web listener when it names a socket address; a host name (a proxy
        // in front) leaves `http_listen` to say what to bind, and none means no web.
        match member.http.as_deref().map(str::parse::<SocketAddr>) {
            Some(Ok(address)) => self.http_listen = Some(address),
            Some(Err(_)) => {}
            None => self.http_listen = None,
        }
        self.admin_listen = member.admin;
        if let Some(data) = member.data {
            self.data_dir = data;
        }
        Ok(self)
    }

    pub fn session_policy(&self) -> SessionPolicy {
        SessionPolicy {
            idle_timeout_ms: self.sessions.idle_timeout_secs.saturating_mul(1000),
            max_lifetime_ms: self.sessions.max_lifetime_secs.saturating_mul(1000),
            single_session: self.sessions.single_session,
        }
    }
}

impl Login {
    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |what: &str| Err(ConfigError::Invalid(what.to_string()));
        if self.hash_threads > MAX_HASH_THREADS {
            return fail("login.hash_threads must be 0 (one per core) to 256");
        }
        if !(1..=65_536).contains(&self.hash_queue) {
            return fail("login.hash_queue must be 1 to 65536");
        }
        if self.address_burst == 0 || self.user_address_burst == 0 || self.user_burst == 0 {
            return fail("login.*_burst must be positive");
        }
        let day = 24 * 3600;
        for refill in [
            self.address_refill_secs,
            self.user_address_refill_secs,
            self.user_refill_secs,
        ] {
            if !(1..=day).contains(&refill) {
                return fail("login.*_refill_secs must be 1 to 86400");
            }
        }
        if !(1..=10_000_000).contains(&self.throttle_entries) {
            return fail("login.throttle_entries must be 1 to 10000000");
        }
        Ok(())
    }
}

impl Limits {
    /// The request rate one connection is allowed, whatever its protocol.
    pub fn rate_quota(&self) -> Quota {
        Quota::per_second(NonZeroU32::new(self.requests_per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(self.request_burst).unwrap_or(NonZeroU32::MIN))
    }
}

/// The most servers a cluster may have. Raft needs a majority for every write, so each
/// server added slows writes; 3 and 5 are the sizes the project tests and measures.
pub const MAX_CLUSTER_MEMBERS: usize = 7;
/// The shortest shared secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// A cluster of servers (`[cluster]`): the same section in every server's file, each server
/// started with `corvid serve --id N`. Without it the server runs alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The cluster's name. Its id (recorded in every data directory) is derived from it, so
    /// a server refuses the data directory of a cluster of another name.
    pub name: String,
    /// File holding the secret every server-to-server request carries (at least 16 bytes;
    /// surrounding whitespace is ignored). Required when any server-to-server address is
    /// not loopback. A relative path is taken from the current directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Milliseconds between a leader's heartbeats. The defaults of the three timings were
    /// chosen by `corvid-bench failover` and `online` on 3 and 5 servers on one machine
    /// (docs/benchmarks.md, "Cluster").
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A follower whose leader has been silent for `election_timeout_max_ms` (openraft's
    /// leader lease, during which the other servers refuse to vote) asks it whether it is
    /// there and, when it is not, the follower with the longest log stands at once. Failing
    /// that, a follower that has heard no leader for `election_timeout_max_ms` plus a random
    /// time between this and `election_timeout_max_ms` milliseconds stands (openraft's own
    /// timer); this is also how long a leader that answers may stay silent.
    #[serde(default = "default_election_timeout_min_ms")]
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    #[serde(default = "default_election_timeout_max_ms")]
    pub election_timeout_max_ms: u64,
    /// Bytes of log entries one append request may carry (a single larger entry still goes
    /// alone): a follower far behind is sent its entries in pieces of this size.
    #[serde(default = "default_max_append_bytes")]
    pub max_append_bytes: u64,
    /// Connections the server-to-server listener holds open at once (at least twice the
    /// number of members). Each server keeps one to each other server; `corvid cluster`
    /// opens one while it runs. A connection past the limit closes the oldest one that has
    /// not yet made a call with the cluster's id and secret, or is closed itself.
    #[serde(default = "default_max_peer_connections")]
    pub max_peer_connections: usize,
    /// Seconds a connection to the server-to-server listener may stay open before its first
    /// call with the cluster's id and secret (1 to 300); then it is closed.
    #[serde(default = "default_peer_auth_timeout_secs")]
    pub peer_auth_timeout_secs: u64,
    /// The servers, 1 to 7 of them.
    pub members: Vec<ClusterMember>,
    /// Which member this server is: set by `corvid serve --id`, never in the file.
    #[serde(skip)]
    pub serve_as: Option<u64>,
    /// Set by `corvid serve --join`: this server is to be added to a running cluster
    /// (`corvid cluster add`), so a new data directory waits for the cluster rather than
    /// forming it.
    #[serde(skip)]
    pub join: bool,
}

/// One server of `[cluster]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMember {
    /// The server's id in the cluster: positive, unique, never reused for another server.
    pub id: u64,
    /// Where the other servers reach this one (`host:port`); bound unless `raft_listen` is set.
    pub raft: String,
    /// The address the server-to-server listener binds, when it differs from `raft` (as
    /// `0.0.0.0:7170` behind a named address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_listen: Option<SocketAddr>,
    /// The binary protocol's listener of this server.
    pub wire: SocketAddr,
    /// The gRPC listener of this server; absent means no gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<SocketAddr>,
    /// Where this server's web listener is, recorded in its member record for clients. A
    /// socket address is also what the server binds; absent means no web listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The admin listener (metrics, health, status) of this server; absent means none, so
    /// that servers sharing a machine do not all claim the default port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<SocketAddr>,
    /// This server's data directory; absent means `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
}

// A dead leader is replaced once its lease (`election_timeout_max_ms`) has passed; openraft
// 0.9's own timer adds the lease to a follower's timeout, so it stands after 250-300 ms of
// silence. Failover figures for these and slower settings are in docs/benchmarks.md.
fn default_heartbeat_ms() -> u64 {
    40
}
fn default_election_timeout_min_ms() -> u64 {
    100
}
fn default_election_timeout_max_ms() -> u64 {
    150
}
fn default_max_append_bytes() -> u64 {
    corvid_raft::DEFAULT_MAX_APPEND_BYTES
}
fn default_max_peer_connections() -> usize {
    corvid_raft::network::listener::ListenerLimits::default().max_connections
}
fn default_peer_auth_timeout_secs() -> u64 {
    corvid_raft::network::listener::ListenerLimits::default()
        .auth_timeout
        .as_secs()
}

impl ClusterMember {
    /// The address the server-to-server listener binds.
    pub fn raft_bind(&self) -> Result<SocketAddr, ConfigError> {
        match self.raft_listen {
            Some(address) => Ok(address),
            None => self.raft.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "cluster member {}: raft = \"{}\" is not an IP address and port; give raft_listen",
                    self.id, self.raft
                ))
            }),
        }
    }

    /// Whether the server-to-server traffic of this member stays on this machine.
    fn raft_is_loopback(&self) -> bool {
        let advertised = match self.raft.parse::<SocketAddr>() {
            Ok(address) => address.ip().is_loopback(),
            Err(_) => self.raft.starts_with("localhost:"),
        };
        advertised && self.raft_listen.is_none_or(|a| a.ip().is_loopback())
    }
}

impl Cluster {
    /// The cluster id recorded in each data directory: the first 16 bytes of the SHA-256
    /// of the name.
    pub fn id(&self) -> corvid_store::ClusterId {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.name.as_bytes());
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        corvid_store::ClusterId(id)
    }

    /// The member this server is (`--id`).
    pub fn this_member(&self) -> Option<&ClusterMember> {
        let id = self.serve_as?;
        self.members.iter().find(|m| m.id == id)
    }

    /// Reads the shared secret, if the cluster has one.
    pub fn secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.secret_file else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let secret = bytes.trim_ascii().to_vec();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::Invalid(format!(
                "{}: the cluster secret must be at least {MIN_SECRET_BYTES} bytes",
                path.display()
            )));
        }
        Ok(Some(secret))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |what: String| Err(ConfigError::Invalid(what));
        if self.name.trim().is_empty() {
            return fail("cluster.name must not be empty".into());
        }
        if self.members.is_empty() || self.members.len() > MAX_CLUSTER_MEMBERS {
            return fail(format!(
                "a cluster has 1 to {MAX_CLUSTER_MEMBERS} members, not {}",
                self.members.len()
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut addresses = std::collections::BTreeSet::new();
        let mut data_dirs = std::collections::BTreeSet::new();
        for member in &self.members {
            if member.id == 0 {
                return fail("cluster member ids must be positive".into());
            }
            if !ids.insert(member.id) {
                return fail(format!("cluster member id {} appears twice", member.id));
            }
            member.raft_bind()?;
            let mut own = vec![member.raft.clone(), member.wire.to_string()];
            own.extend(member.grpc.map(|a| a.to_string()));
            own.extend(member.raft_listen.map(|a| a.to_string()));
            own.extend(member.http.clone());
            own.extend(member.admin.map(|a| a.to_string()));
            for address in own {
                // Port 0 is left to the system, so it cannot clash.
                if !address.ends_with(":0") && !addresses.insert(address.clone()) {
                    return fail(format!("cluster address {address} appears twice"));
                }
            }
            if let Some(data) = &member.data {
                if !data_dirs.insert(data.clone()) {
                    return fail(format!(
                        "cluster data directory {} appears twice",
                        data.display()
                    ));
                }
            }
        }
        if self.secret_file.is_none() && !self.members.iter().all(|m| m.raft_is_loopback()) {
            return fail(
                "a cluster whose servers talk over the network needs cluster.secret_file".into(),
            );
        }
        if self.heartbeat_ms == 0
            || self.election_timeout_min_ms < 2 * self.heartbeat_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
            || self.election_timeout_max_ms > 60_000
        {
            return fail(
                "cluster timing: need 0 < 2 * heartbeat_ms <= election_timeout_min_ms < election_timeout_max_ms <= 60000".into(),
            );
        }
        if !(65_536..=8 << 20).contains(&self.max_append_bytes) {
            return fail("cluster.max_append_bytes must be 65536 to 8388608".into());
        }
        if !(2 * self.members.len()..=65_536).contains(&self.max_peer_connections) {
            return fail(format!(
                "cluster.max_peer_connections must be {} (twice the members) to 65536",
                2 * self.members.len()
            ));
        }
        if !(1..=300).contains(&self.peer_auth_timeout_secs) {
            return fail("cluster.peer_auth_timeout_secs must be 1 to 300".into());
        }
        match self.serve_as {
            None => fail("a [cluster] server is started with --id N (which member it is)".into()),
            Some(id) if !ids.contains(&id) => {
                fail(format!("--id {id} is not a member of the cluster"))
            }
            Some(_) => Ok(()),
        }
    }
}

/// A listener address that can be switched off: `"127.0.0.1:7071"` or `"off"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalAddress(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<OptionalAddress, String> {
        match text.trim() {
            "off" => Ok(OptionalAddress(None)),
            address => address
                .parse()
                .map(|a| OptionalAddress(Some(a)))
                .map_err(|_| format!("`{text}` is neither an address (host:port) nor `off`")),
        }
    }
}

/// Serde for `Option<SocketAddr>` written as an address or `"off"`.
mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::OptionalAddress;

    pub fn serialize<S: Serializer>(
        address: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match address {
            Some(address) => serializer.collect_str(address),
            None => serializer.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<OptionalAddress>()
            .map(|address| address.0)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's configuration block is the reference people copy: every value in it
    /// must be the default, and every name a setting.
    #[test]
    fn the_readme_configuration_block_is_the_default() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .expect("the README has a Configuration section");
        let block = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the Configuration section has a toml block");
        let config = Config::from_toml(block).expect("the README's block parses");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn an_empty_file_is_the_default_and_valid() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        config.validate().unwrap();
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert!(config.listen.ip().is_loopback());
        let grpc = config.grpc_listen.expect("gRPC is on by default");
        assert_eq!(grpc.port(), DEFAULT_GRPC_PORT);
        assert!(grpc.ip().is_loopback());
    }

    #[test]
    fn runtime_threads_leave_a_core_to_the_state_machine_unless_told() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let automatic = Config::default().runtime_threads();
        assert!(automatic >= 1);
        if cores > 1 {
            assert!(automatic < cores, "{automatic} threads on {cores} cores");
        }
        let config = Config::from_toml("worker_threads = 3").unwrap();
        assert_eq!(config.runtime_threads(), 3);
        let absurd = Config::from_toml("worker_threads = 100000").unwrap();
        assert!(absurd.validate().is_err());
    }

    #[test]
    fn tls_needs_both_files() {
        let config = Config::from_toml("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.tls.files(),
            Some((Path::new("c.pem"), Path::new("k.pem")))
        );
        let half = Config::from_toml("[tls]\ncert = \"c.pem\"\n").unwrap();
        assert!(half.validate().is_err());
        assert_eq!(Config::default().tls.files(), None);
    }

    #[test]
    fn the_admin_listener_is_on_loopback_by_default_and_can_be_moved_or_switched_off() {
        let admin = Config::default().admin_listen.expect("on by default");
        assert_eq!(admin.port(), DEFAULT_ADMIN_PORT);
        assert!(admin.ip().is_loopback());
        let config = Config::from_toml("admin_listen = \"off\"").unwrap();
        assert_eq!(config.admin_listen, None);
        config.validate().unwrap();
        let config = Config::from_toml("admin_listen = \"10.0.0.1:9100\"").unwrap();
        assert_eq!(config.admin_listen, Some("10.0.0.1:9100".parse().unwrap()));
        let clash = Config::from_toml("admin_listen = \"127.0.0.1:7070\"").unwrap();
        assert!(clash.validate().is_err());
        let clash = Config::from_toml("admin_listen = \"127.0.0.1:7071\"").unwrap();
        assert!(clash.validate().is_err());
        Config::ephemeral("data").validate().unwrap();
        let config = Config::from_toml("[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn grpc_can_be_moved_or_switched_off() {
        let config = Config::from_toml("grpc_listen = \"0.0.0.0:9000\"").unwrap();
        assert_eq!(config.grpc_listen, Some("0.0.0.0:9000".parse().unwrap()));
        let config = Config::from_toml("grpc_listen = \"off\"").unwrap();
        assert_eq!(config.grpc_listen, None);
        assert!(Config::from_toml("grpc_listen = \"nowhere\"").is_err());
        let text = toml::to_string(&config).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), config);
    }

    #[test]
    fn the_web_listener_is_on_loopback_by_default_and_can_be_moved_or_switched_off() {
        let http = Config::default()
            .http_listen
            .expect("HTTP is on by default");
        assert_eq!(http.port(), DEFAULT_HTTP_PORT);
        assert!(http.ip().is_loopback());
        let config = Config::from_toml("http_listen = \"0.0.0.0:9080\"").unwrap();
        assert_eq!(config.http_listen, Some("0.0.0.0:9080".parse().unwrap()));
        let config = Config::from_toml("http_listen = \"off\"").unwrap();
        assert_eq!(config.http_listen, None);
        assert!(Config::from_toml("http_listen = \"web\"").is_err());
    }

    #[test]
    fn a_file_overrides_what_it_names() {
        let config = Config::from_toml(
            "data_dir = \"/tmp/x\"\n[sessions]\nsingle_session = true\n[limits]\nmax_text_bytes = 100\n",
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert!(config.session_policy().single_session);
        assert_eq!(config.limits.max_text_bytes, 100);
        assert_eq!(
            config.limits.max_connections,
            Limits::default().max_connections
        );
    }

    #[test]
    fn login_settings_default_sanely_and_impossible_ones_are_refused() {
        let config = Config::from_toml("[login]\nhash_threads = 3\nuser_burst = 7\n").unwrap();
        config.validate().unwrap();
        assert_eq!(config.login.threads(), 3);
        assert_eq!(config.login.user_burst, 7);
        assert_eq!(config.login.hash_queue, Login::default().hash_queue);
        assert!(Config::default().login.threads() >= 1);
        for bad in [
            "hash_threads = 1000",
            "hash_queue = 0",
            "address_burst = 0",
            "user_refill_secs = 0",
            "throttle_entries = 0",
        ] {
            let config = Config::from_toml(&format!("[login]\n{bad}\n")).unwrap();
            assert!(config.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn typos_and_impossible_values_are_refused() {
        assert!(Config::from_toml("listn = \"1.2.3.4:5\"").is_err());
        let mut config = Config::default();
        config.limits.max_text_bytes = 2 << 20;
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.limits.max_frame_bytes = 100;
        assert!(config.validate().is_err());
        for tune in [
            |l: &mut Limits| l.handshake_timeout_secs = 0,
            |l: &mut Limits| l.frame_timeout_secs = 0,
            |l: &mut Limits| l.login_timeout_secs = u64::MAX,
            |l: &mut Limits| l.write_timeout_secs = 0,
            |l: &mut Limits| l.shutdown_grace_secs = 0,
            |l: &mut Limits| l.grpc_idle_timeout_secs = 0,
            |l: &mut Limits| l.subscriber_queue_bytes = 10,
            |l: &mut Limits| l.max_subscriptions_per_account = 0,
            |l: &mut Limits| l.max_subscriptions_per_connection = 0,
        ] {
            let mut config = Config::default();
            tune(&mut config.limits);
            assert!(config.validate().is_err(), "{:?}", config.limits);
        }
    }

    #[test]
    fn grpc_limits_are_checked() {
        let mut config = Config::default();
        config.limits.grpc_max_streams = 0;
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.limits.grpc_body_timeout_secs = 0;
        assert!(config.validate().is_err());
        // The buffer must hold the largest request the server accepts.
        let mut config = Config::default();
        config.limits.grpc_request_buffer_bytes = config.limits.max_frame_bytes;
        assert!(config.validate().is_err());
        config.limits.grpc_request_buffer_bytes = config.limits.max_frame_bytes + 65_536;
        config.validate().unwrap();
    }
    const CLUSTER: &str = r#"
[cluster]
name = "example"
[[cluster.members]]
id = 1
raft = "127.0.0.1:7170"
wire = "127.0.0.1:7070"
grpc = "127.0.0.1:7071"
data = "corvid-data-1"
[[cluster.members]]
id = 2
raft = "127.0.0.1:7171"
wire = "127.0.0.1:7072"
data = "corvid-data-2"
[[cluster.members]]
id = 3
raft = "127.0.0.1:7172"
wire = "127.0.0.1:7074"
"#;

    #[test]
    fn a_cluster_member_takes_its_addresses_and_data_directory() {
        let config = Config::from_toml(CLUSTER).unwrap();
        assert!(config.validate().is_err(), "a cluster needs --id");
        let two = config.clone().as_member(2).unwrap();
        two.validate().unwrap();
        assert_eq!(two.listen, "127.0.0.1:7072".parse().unwrap());
        assert_eq!(two.grpc_listen, None);
        assert_eq!(two.data_dir, PathBuf::from("corvid-data-2"));
        let three = config.clone().as_member(3).unwrap();
        assert_eq!(three.data_dir, PathBuf::from("corvid-data"));
        let cluster = three.cluster.as_ref().unwrap();
        assert_eq!(cluster.this_member().unwrap().raft, "127.0.0.1:7172");
        assert_eq!(cluster.heartbeat_ms, 40);
        // Every server of a cluster derives the same id from its name, and no other.
        assert_eq!(cluster.id(), two.cluster.as_ref().unwrap().id());
        let other = Config::from_toml(&CLUSTER.replace("example", "other")).unwrap();
        assert_ne!(other.cluster.unwrap().id(), cluster.id());
        let error = config.as_member(4).unwrap_err().to_string();
        assert!(error.contains("--id 4 is not a member"), "{error}");
        let alone = Config::default().as_member(1).unwrap_err().to_string();
        assert!(alone.contains("[cluster]"), "{alone}");
    }

    #[test]
    fn a_cluster_member_binds_the_admin_listener_it_names_and_none_without_one() {
        let with_admin = CLUSTER.replace(
            "data = \"corvid-data-1\"",
            "data = \"corvid-data-1\"\nadmin = \"127.0.0.1:9191\"",
        );
        let config = Config::from_toml(&with_admin).unwrap();
        let one = config.clone().as_member(1).unwrap();
        assert_eq!(one.admin_listen, Some("127.0.0.1:9191".parse().unwrap()));
        // Three servers on one machine must not all take the default port.
        assert_eq!(config.as_member(2).unwrap().admin_listen, None);
    }

    #[test]
    fn a_cluster_member_binds_the_web_listener_it_names_and_none_without_one() {
        let with_web = CLUSTER.replace(
            "data = \"corvid-data-1\"",
            "data = \"corvid-data-1\"\nhttp = \"127.0.0.1:8081\"",
        );
        let config = Config::from_toml(&with_web).unwrap();
        let one = config.clone().as_member(1).unwrap();
        assert_eq!(one.http_listen, Some("127.0.0.1:8081".parse().unwrap()));
        // Three servers on one machine must not all take the default port.
        assert_eq!(config.as_member(2).unwrap().http_listen, None);
        let named = with_web.replace("127.0.0.1:8081", "chat.example:443");
        let behind_a_proxy = Config::from_toml(&named).unwrap().as_member(1).unwrap();
        assert_eq!(behind_a_proxy.http_listen, Config::default().http_listen);
    }

    #[test]
    fn impossible_clusters_are_refused_with_the_reason() {
        let cases = [
            (CLUSTER.replace("id = 3", "id = 2"), "id 2 appears twice"),
            (
                CLUSTER.replace("127.0.0.1:7172", "127.0.0.1:7170"),
                "127.0.0.1:7170 appears twice",
            ),
            (
                CLUSTER.replace("127.0.0.1:7074", "127.0.0.1:7071"),
                "127.0.0.1:7071 appears twice",
            ),
            (
                CLUSTER.replace("corvid-data-2", "corvid-data-1"),
                "corvid-data-1 appears twice",
            ),
            (
                CLUSTER.replace("127.0.0.1:7171", "10.0.0.2:7171"),
                "needs cluster.secret_file",
            ),
            (
                CLUSTER.replace("127.0.0.1:7171", "peer-two:7171"),
                "raft_listen",
            ),
            (CLUSTER.replace("name = \"example\"", "name = \"\""), "name"),
            (
                CLUSTER.replace("name = \"example\"", "name = \"x\"\nheartbeat_ms = 500"),
                "timing",
            ),
            (
                CLUSTER.replace(
                    "name = \"example\"",
                    "name = \"x\"\nmax_peer_connections = 5",
                ),
                "max_peer_connections must be 6",
            ),
            (
                CLUSTER.replace(
                    "name = \"example\"",
                    "name = \"x\"\npeer_auth_timeout_secs = 0",
                ),
                "peer_auth_timeout_secs",
            ),
        ];
        for (text, reason) in cases {
            let config = Config::from_toml(&text).unwrap().as_member(1).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(reason), "{reason}: {error}");
        }
        let mut eight = String::from("[cluster]\nname = \"big\"\n");
        for id in 1..=8 {
            eight += &format!(
                "[[cluster.members]]\nid = {id}\nraft = \"127.0.0.1:{}\"\nwire = \"127.0.0.1:{}\"\n",
                7100 + id,
                7200 + id
            );
        }
        let config = Config::from_toml(&eight).unwrap().as_member(1).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("1 to 7 members"), "{error}");
        // A secret on another machine's network is accepted, and read at start.
        let remote = CLUSTER.replace("127.0.0.1:7171", "10.0.0.2:7171").replace(
            "name = \"example\"",
            "name = \"example\"\nsecret_file = \"s\"",
        );
        let config = Config::from_toml(&remote).unwrap().as_member(1).unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn the_example_cluster_configurations_are_valid() {
        for (text, members) in [
            (include_str!("../../../examples/cluster-3.toml"), 3),
            (include_str!("../../../examples/cluster-5.toml"), 5),
        ] {
            let config = Config::from_toml(text).unwrap();
            assert_eq!(config.cluster.as_ref().unwrap().members.len(), members);
            for id in 1..=members as u64 {
                let member = config.clone().as_member(id).unwrap();
                member.validate().unwrap();
                assert_eq!(member.data_dir, PathBuf::from(format!("corvid-data-{id}")));
            }
        }
    }
}
