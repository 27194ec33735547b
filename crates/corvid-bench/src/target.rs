//! Where the load goes: a `corvid serve` process this bench starts in a temporary data
//! directory with limits raised for load, or a server that is already running.
//!
//! A started server is a separate process so that its memory (`VmRSS`) and CPU time can
//! be read from `/proc` apart from the load generator's, and so that `recovery` can stop
//! and restart it on the same data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use crate::cluster::StartedCluster;

/// The protocol the load uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolArg {
    /// The binary protocol (docs/protocol.md).
    Wire,
    /// gRPC (proto/corvid.proto).
    Grpc,
}

impl ProtocolArg {
    pub fn name(self) -> &'static str {
        self.client().name()
    }

    /// The client library's name for it.
    pub fn client(self) -> corvid_client::Protocol {
        match self {
            ProtocolArg::Wire => corvid_client::Protocol::Wire,
            ProtocolArg::Grpc => corvid_client::Protocol::Grpc,
        }
    }
}

/// Where to reach the server (or the servers of a cluster, in the order a client tries
/// them) and the protocol spoken there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub servers: Vec<String>,
    pub transport: ProtocolArg,
}

impl Endpoint {
    /// One server's endpoint.
    pub fn one(addr: String, transport: ProtocolArg) -> Endpoint {
        Endpoint {
            servers: vec![addr],
            transport,
        }
    }

    /// The same servers, tried from the `index`-th (modulo their number) onwards: clients
    /// numbered 0, 1, 2, ... connect to the servers in turn, and each can fail over to all.
    pub fn starting_at(&self, index: usize) -> Endpoint {
        let mut servers = self.servers.clone();
        if !servers.is_empty() {
            let len = servers.len();
            servers.rotate_left(index % len);
        }
        Endpoint {
            servers,
            transport: self.transport,
        }
    }
}

/// How long a started server may take to print its listening line.
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(120);

/// A server under load.
pub enum Target {
    Started(Box<StartedServer>),
    /// A cluster of `corvid serve` processes this bench started.
    Cluster(Box<StartedCluster>),
    /// A server (or, with several comma-separated addresses, a cluster) someone else runs,
    /// at `addr` for the run's transport. With its pid, its memory and CPU can still be read.
    Running {
        addr: String,
        pid: Option<u32>,
    },
}

impl Target {
    /// Where to reach the server, or every server of a cluster, over `transport`.
    pub fn endpoint(&self, transport: ProtocolArg) -> Endpoint {
        match self {
            Target::Started(server) => server.endpoint(transport),
            Target::Cluster(cluster) => cluster.endpoint(transport),
            Target::Running { addr, .. } => Endpoint {
                servers: addr.split(',').map(|a| a.trim().to_string()).collect(),
                transport,
            },
        }
    }

    /// The server processes whose memory and CPU can be read: one per server.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Target::Started(server) => server.pid().into_iter().collect(),
            Target::Cluster(cluster) => cluster.pids(),
            Target::Running { pid, .. } => pid.iter().copied().collect(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Started(_) => "started",
            Target::Cluster(_) => "cluster",
            Target::Running { .. } => "running",
        }
    }

    /// The servers' resident memory, added up, if their pids are known.
    pub fn rss_bytes(&self) -> Option<u64> {
        let each: Vec<u64> = self
            .pids()
            .into_iter()
            .filter_map(|pid| rss_bytes(pid).ok())
            .collect();
        (!each.is_empty()).then(|| each.iter().sum())
    }

    /// CPU seconds (user + system) the servers have used, added up, if their pids are known.
    pub fn cpu_secs(&self) -> Option<f64> {
        let each: Vec<f64> = self
            .pids()
            .into_iter()
            .filter_map(|pid| cpu_secs(pid).ok())
            .collect();
        (!each.is_empty()).then(|| each.iter().sum())
    }

    /// Stops a started server or cluster; a running one is left alone.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self {
            Target::Started(mut server) => server.stop(false).await.map(|_| ()),
            Target::Cluster(cluster) => cluster.stop().await,
            Target::Running { .. } => Ok(()),
        }
    }
}

/// What a started server is given.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The `corvid` binary.
    pub binary: PathBuf,
    /// Most connections the server accepts.
    pub max_connections: usize,
    /// Its admin listener's address, or `off` (no metrics recorded).
    pub admin_listen: String,
    /// TOML appended to the server's configuration file (whole sections).
    pub extra_config: String,
}

/// A `corvid serve` child process and its data directory (removed when this is dropped;
/// the process is killed then too).
pub struct StartedServer {
    options: ServerOptions,
    dir: tempfile::TempDir,
    child: Child,
    addr: String,
    grpc_addr: String,
}

impl StartedServer {
    /// Starts a server on a fresh data directory and a free loopback port.
    pub async fn start(options: ServerOptions) -> anyhow::Result<StartedServer> {
        let dir = tempfile::Builder::new()
            .prefix("corvid-bench-")
            .tempdir()
            .context("cannot create a data directory")?;
        let (child, addr, grpc_addr) =
            launch(&options, dir.path(), "127.0.0.1:0", "127.0.0.1:0").await?;
        Ok(StartedServer {
            options,
            dir,
            child,
            addr,
            grpc_addr,
        })
    }

    /// Where to reach the server over `transport`.
    pub fn endpoint(&self, transport: ProtocolArg) -> Endpoint {
        let addr = match transport {
            ProtocolArg::Wire => self.addr.clone(),
            ProtocolArg::Grpc => self.grpc_addr.clone(),
        };
        Endpoint::one(addr, transport)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server: SIGTERM (a clean shutdown) or, with `crash`, SIGKILL. Returns how
    /// long it took to exit.
    pub async fn stop(&mut self, crash: bool) -> anyhow::Result<Duration> {
        let log = self.log_path();
        stop_child(&mut self.child, crash, &log).await
    }

    /// Starts the server again on the same data and port. Returns when it printed its
    /// listening line, with the time that took.
    pub async fn restart(&mut self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let (child, addr, grpc_addr) =
            launch(&self.options, self.dir.path(), &self.addr, &self.grpc_addr).await?;
        self.child = child;
        self.addr = addr;
        self.grpc_addr = grpc_addr;
        Ok(start.elapsed())
    }

    /// Where the server's log (its stderr) goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

/// Writes the config and starts `corvid serve`; returns the child and its binary-protocol
/// and gRPC addresses.
async fn launch(
    options: &ServerOptions,
    dir: &Path,
    listen: &str,
    grpc_listen: &str,
) -> anyhow::Result<(Child, String, String)> {
    let config_path = dir.join("corvid.toml");
    let config = load_config(options, &dir.join("data"), listen, grpc_listen);
    std::fs::write(&config_path, config).context("cannot write the server config")?;
    serve(
        &options.binary,
        &config_path,
        &[],
        &dir.join("server.log"),
        START_DEADLINE,
    )
    .await
}

/// The configuration of a server under load, before any `[cluster]` section.
pub(crate) fn load_config(
    options: &ServerOptions,
    data: &Path,
    listen: &str,
    grpc_listen: &str,
) -> String {
    // Load comes from few connections at high rates: lift the per-connection limits. The
    // `connections` workload shares a few accounts between many subscribed connections.
    format!(
        "data_dir = {data:?}\nlisten = {listen:?}\ngrpc_listen = {grpc_listen:?}\nhttp_listen = \"off\"\nadmin_listen = {:?}\n\n\
         [limits]\nmax_connections = {}\n\
         requests_per_second = 1000000000\nrequest_burst = 1000000000\nmax_in_flight = 1024\n\
         max_subscriptions_per_account = 1000000\n\
         grpc_max_streams = 1024\n\n\
         [log]\nlevel = \"warn\"\n{}",
        options.admin_listen, options.max_connections, options.extra_config
    )
}

/// Starts `binary serve --config config_path args...` with its log (stderr) appended to
/// `log_path`; returns once it printed its ready line (within `deadline`), with its
/// binary-protocol and gRPC addresses.
pub(crate) async fn serve(
    binary: &Path,
    config_path: &Path,
    args: &[String],
    log_path: &Path,
    deadline: Duration,
) -> anyhow::Result<(Child, String, String)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .context("cannot open the server log")?;
    let mut child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (build it with `cargo build --release -p corvid`, or pass --corvid)",
                binary.display()
            )
        })?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(deadline, lines.next_line())
        .await
        .with_context(|| {
            format!(
                "the server did not start in time; see {}",
                log_path.display()
            )
        })?
        .context("reading the server's output")?;
    let Some(line) = line else {
        bail!(
            "the server exited before listening; see {}",
            log_path.display()
        );
    };
    let (addr, grpc_addr) = parse_ready_line(&line)
        .with_context(|| format!("unexpected first line from the server: {line}"))?;
    // Keep reading so that the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr, grpc_addr))
}

/// Stops a server process: SIGTERM (a clean shutdown, which must succeed) or, with
/// `crash`, SIGKILL. Returns how long it took to exit.
pub(crate) async fn stop_child(
    child: &mut Child,
    crash: bool,
    log_path: &Path,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let Some(pid) = child.id() else {
        return Ok(Duration::ZERO);
    };
    let signal = if crash { libc::SIGKILL } else { libc::SIGTERM };
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: `kill` has no memory effects; `pid` is our own child, not yet reaped.
    if unsafe { libc::kill(pid, signal) } != 0 {
        bail!(
            "cannot signal the server: {}",
            std::io::Error::last_os_error()
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .context("the server did not exit within 60 s")??;
    if !crash && !status.success() {
        bail!(
            "the server exited with {status}; see {}",
            log_path.display()
        );
    }
    Ok(start.elapsed())
}

/// The addresses in `corvid serving on 127.0.0.1:7070 (grpc 127.0.0.1:7071, data in ...)`.
fn parse_ready_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("corvid serving on ")?;
    let (addr, rest) = rest.split_once(' ')?;
    let grpc = rest.strip_prefix("(grpc ")?.split([',', ')']).next()?;
    Some((addr.to_string(), grpc.to_string()))
}

/// `VmRSS` of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).context("no VmRSS line")
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU seconds of process `pid` (all its threads).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks_per_sec())
        .context("cannot parse /proc/<pid>/stat")
}

/// CPU seconds this process has used.
pub fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id()).unwrap_or(0.0)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Lifts this process's open-file limit to its hard limit (children inherit it).
pub fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let status = "Name:\tcorvid\nVmPeak:\t 9000 kB\nVmRSS:\t   12345 kB\nThreads: 4\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let stat = "42 (tokio (w) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        assert!(own_cpu_secs() >= 0.0);
        assert_eq!(
            parse_ready_line("corvid serving on 127.0.0.1:1 (grpc 127.0.0.1:2, data in x)"),
            Some(("127.0.0.1:1".into(), "127.0.0.1:2".into()))
        );
        assert_eq!(parse_ready_line("hello"), None);
    }
}
