//! `corvid-bench`: runs a workload against a Corvid server (one it starts, or `--server`),
//! prints a table and a JSON line per run, appends the line to the results file, and
//! exits non-zero when a message was lost or duplicated (or the run failed otherwise).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use corvid_bench::cluster::{ClusterOptions, StartedCluster};
use corvid_bench::report::{self, Report};
use corvid_bench::target::{ProtocolArg, ServerOptions, StartedServer, Target};
use corvid_bench::workload::connections::{self, ConnectionsParams};
use corvid_bench::workload::failover::{self, FailoverParams};
use corvid_bench::workload::login_flood::{self, LoginFloodParams};
use corvid_bench::workload::offline::{self, OfflineParams};
use corvid_bench::workload::online::{self, OnlineParams};
use corvid_bench::workload::recovery::{self, RecoveryParams};
use corvid_bench::workload::Common;

#[derive(Debug, Parser)]
#[command(name = "corvid-bench", version, about = "Load generator for Corvid")]
struct Cli {
    /// Load a running server at this address (its binary-protocol or gRPC address, as
    /// `--transport` says) instead of starting one.
    #[arg(long, global = true)]
    server: Option<String>,
    /// The pid of the `--server`, to read its memory and CPU time from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Start a cluster of this many servers (each a `corvid serve` process) instead of one
    /// server; users connect to the servers in turn.
    #[arg(long, global = true, default_value_t = 1)]
    servers: usize,
    /// The started cluster's `heartbeat_ms` [default: the server's].
    #[arg(long, global = true)]
    heartbeat_ms: Option<u64>,
    /// The started cluster's election timeout, `MIN,MAX` milliseconds [default: the
    /// server's].
    #[arg(long, global = true, value_parser = parse_range)]
    election_timeout_ms: Option<(u64, u64)>,
    /// The `corvid` binary to start [default: `corvid` next to this binary].
    #[arg(long, global = true)]
    corvid: Option<PathBuf>,
    /// The protocol the load uses.
    #[arg(long, global = true, value_enum, default_value = "wire")]
    transport: ProtocolArg,
    /// The started server's admin listener: an address, or `off` for a server that
    /// records no metrics (to measure what recording costs).
    // Not global: the hidden `serve` subcommand has a flag of the same name.
    #[arg(
        long = "admin-listen",
        id = "bench_admin_listen",
        value_name = "ADDR|off",
        default_value = "127.0.0.1:0"
    )]
    admin_listen: String,
    /// Seconds after which the measured part of a run stops, finished or not.
    #[arg(long, global = true, default_value_t = 300)]
    deadline: u64,
    /// Bytes of text per message.
    #[arg(long, global = true, default_value_t = 64)]
    text_bytes: usize,
    /// Where each run's JSON line is appended.
    #[arg(long, global = true, default_value = "bench-results.jsonl")]
    results: PathBuf,
    /// A note stored with each result (e.g. the commit measured).
    #[arg(long, global = true)]
    label: Option<String>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// U users connected; each sends M messages to random others, W unacknowledged at most.
    Online {
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
    },
    /// R recipients offline while S senders send K each; then the recipients drain.
    Offline {
        #[arg(long, default_value_t = 100)]
        recipients: usize,
        #[arg(long, default_value_t = 100)]
        senders: usize,
        #[arg(long, default_value_t = 100)]
        messages: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
    },
    /// 2 users, window 1: the latency floor.
    Unloaded {
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// The two users take turns, so that one message is in flight in all (reported as
        /// `unloaded-alternate`). Without it each keeps one send unacknowledged, and a
        /// message may wait for the other user's fsync.
        #[arg(long)]
        alternate: bool,
    },
    /// N idle logged-in (subscribed) connections: server memory per connection.
    Connections {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Accounts whose sessions the connections share (each login costs a hash).
        #[arg(long, default_value_t = 100)]
        accounts: usize,
    },
    /// Store N messages, restart the server, time until it serves a request again.
    Recovery {
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        #[arg(long, default_value_t = 50)]
        senders: usize,
        #[arg(long, default_value_t = 50)]
        recipients: usize,
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Kill the server with SIGKILL instead of stopping it with SIGTERM.
        #[arg(long)]
        crash: bool,
    },
    /// C connections pipelining wrong-password logins while another client pings: the
    /// server's peak memory and the pinger's latency. Not part of `all`.
    LoginFlood {
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Logins each connection keeps in flight.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Seconds the flood lasts.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Milliseconds between the pinger's pings.
        #[arg(long, default_value_t = 10)]
        ping_interval_ms: u64,
        /// Every attempt names a fresh unknown user (password spraying), not one account.
        #[arg(long)]
        spray: bool,
        /// Stop the flood (and fail the run) once the server's memory passes this many MiB.
        #[arg(long, default_value_t = 4096)]
        max_rss_mib: u64,
        /// Start the server with its failed-login throttle lifted, so that every attempt
        /// reaches the password-hashing pool (as from many addresses at once).
        #[arg(long)]
        no_throttle: bool,
    },
    /// On a cluster (`--servers 3` or more): SIGKILL the leader, time until each writer's
    /// next write is acknowledged, restart the killed server, wait until it has caught up;
    /// `trials` times. Not part of `all`.
    Failover {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Milliseconds the writers write before each kill.
        #[arg(long, default_value_t = 200)]
        settle_ms: u64,
    },
    /// Every workload with its defaults, one after the other, each on a fresh server.
    All,
    /// Runs a server exactly as `corvid serve` does. The bench's own tests start this
    /// binary as their servers, having no `corvid` binary of their own to start.
    #[command(hide = true)]
    Serve(corvid_server::ServeArgs),
    /// Write-and-fsync loop in DIR: the disk's durable commits per second.
    Fsync {
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Write over blocks already written and fsync'd instead of appending.
        #[arg(long, conflicts_with = "preallocate")]
        overwrite: bool,
        /// Write in place into a file sized up front, as the log's chunks are: `sparse`
        /// (`set_len`) or `fallocate` (its space reserved, as the log does).
        #[arg(long, value_enum)]
        preallocate: Option<corvid_bench::disk::Preallocate>,
    },
    /// Draws the latest result of each workload in RESULTS as an SVG.
    Plot { results: PathBuf, output: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Workload::Serve(args) = &cli.command {
        return serve(args);
    }
    // The client library's own logs (its retries and failovers), when RUST_LOG asks.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("corvid-bench: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("corvid-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// `corvid serve`, on a runtime sized as the configuration says.
fn serve(args: &corvid_server::ServeArgs) -> ExitCode {
    let served = args.config().and_then(|config| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.runtime_threads())
            .enable_all()
            .build()?
            .block_on(corvid_server::run(config))
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("corvid-bench serve: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `MIN,MAX`.
fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (min, max) = text
        .split_once(',')
        .ok_or_else(|| format!("`{text}` is not MIN,MAX"))?;
    let number = |n: &str| n.trim().parse::<u64>().map_err(|e| format!("`{n}`: {e}"));
    Ok((number(min)?, number(max)?))
}

/// Runs the command; `Ok(false)` when a run found a problem.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    if let Workload::Plot { results, output } = &cli.command {
        let lines = std::fs::read_to_string(results)
            .with_context(|| format!("cannot read {}", results.display()))?;
        std::fs::write(output, corvid_bench::plot::svg(&lines))
            .with_context(|| format!("cannot write {}", output.display()))?;
        println!("wrote {}", output.display());
        return Ok(true);
    }
    if let Workload::Fsync {
        count,
        dir,
        overwrite,
        preallocate,
    } = &cli.command
    {
        let report = corvid_bench::disk::fsync_loop(dir, *count, *overwrite, *preallocate)?;
        let context = report::context("none", "none", cli.label.as_deref());
        let line = report.to_json(&context);
        print!("{}", report.table());
        println!("{line}");
        report::append(&cli.results, &line)
            .with_context(|| format!("cannot append to {}", cli.results.display()))?;
        return Ok(report.passed());
    }
    corvid_bench::target::raise_fd_limit();
    let options = cli_view(&cli);
    let workloads = match cli.command {
        Workload::All => vec![
            Workload::Unloaded {
                messages: 2000,
                alternate: false,
            },
            Workload::Online {
                users: 200,
                messages: 200,
                window: 16,
            },
            Workload::Offline {
                recipients: 100,
                senders: 100,
                messages: 100,
                window: 16,
            },
            Workload::Connections {
                connections: 10_000,
                accounts: 100,
            },
            Workload::Recovery {
                messages: 1_000_000,
                senders: 50,
                recipients: 50,
                window: 64,
                crash: false,
            },
        ],
        one => vec![one],
    };
    let mut all_passed = true;
    for workload in workloads {
        let report = run_one(&options, workload).await?;
        all_passed &= report.passed();
    }
    Ok(all_passed)
}

/// The global options, apart from the subcommand.
struct Options {
    server: Option<String>,
    server_pid: Option<u32>,
    cluster: ClusterOptions,
    corvid: Option<PathBuf>,
    admin_listen: String,
    transport: ProtocolArg,
    common: Common,
    results: PathBuf,
    label: Option<String>,
}

fn cli_view(cli: &Cli) -> Options {
    Options {
        server: cli.server.clone(),
        server_pid: cli.server_pid,
        cluster: ClusterOptions {
            servers: cli.servers,
            heartbeat_ms: cli.heartbeat_ms,
            election_timeout_ms: cli.election_timeout_ms,
        },
        corvid: cli.corvid.clone(),
        admin_listen: cli.admin_listen.clone(),
        transport: cli.transport,
        common: Common {
            deadline: Duration::from_secs(cli.deadline),
            text_bytes: cli.text_bytes,
            progress: !cli.quiet,
            transport: cli.transport,
        },
        results: cli.results.clone(),
        label: cli.label.clone(),
    }
}

async fn run_one(options: &Options, workload: Workload) -> anyhow::Result<Report> {
    let max_connections = match &workload {
        Workload::Connections { connections, .. } => connections + 1000,
        _ => 20_000,
    };
    let extra_config = match &workload {
        Workload::LoginFlood {
            no_throttle: true, ..
        } => login_flood::NO_THROTTLE_CONFIG.to_string(),
        _ => String::new(),
    };
    let server_options = || {
        Ok::<_, anyhow::Error>(ServerOptions {
            binary: corvid_binary(options.corvid.as_deref())?,
            max_connections,
            admin_listen: options.admin_listen.clone(),
            extra_config: extra_config.clone(),
        })
    };
    let mut target = match &options.server {
        Some(addr) => Target::Running {
            addr: addr.clone(),
            pid: options.server_pid,
        },
        None if options.cluster.servers > 1 => Target::Cluster(Box::new(
            StartedCluster::start(server_options()?, &options.cluster).await?,
        )),
        None => Target::Started(Box::new(StartedServer::start(server_options()?).await?)),
    };
    let common = &options.common;
    let report = match workload {
        Workload::Online {
            users,
            messages,
            window,
        } => {
            let params = OnlineParams {
                users,
                messages,
                window,
                alternate: false,
            };
            online::run(&target, common, &params, "online").await?
        }
        Workload::Unloaded {
            messages,
            alternate,
        } => {
            let params = OnlineParams {
                users: 2,
                messages,
                window: 1,
                alternate,
            };
            let name = if alternate {
                "unloaded-alternate"
            } else {
                "unloaded"
            };
            online::run(&target, common, &params, name).await?
        }
        Workload::Offline {
            recipients,
            senders,
            messages,
            window,
        } => {
            let params = OfflineParams {
                recipients,
                senders,
                messages,
                window,
            };
            offline::run(&target, common, &params).await?
        }
        Workload::Connections {
            connections,
            accounts,
        } => {
            connections::run(
                &target,
                common,
                &ConnectionsParams {
                    connections,
                    accounts,
                },
            )
            .await?
        }
        Workload::Recovery {
            messages,
            senders,
            recipients,
            window,
            crash,
        } => {
            let params = RecoveryParams {
                messages,
                senders,
                recipients,
                window,
                crash,
            };
            recovery::run(&mut target, common, &params).await?
        }
        Workload::LoginFlood {
            connections,
            window,
            seconds,
            ping_interval_ms,
            spray,
            max_rss_mib,
            no_throttle: _,
        } => {
            let params = LoginFloodParams {
                connections,
                window,
                duration: Duration::from_secs(seconds),
                ping_interval: Duration::from_millis(ping_interval_ms),
                spray,
                max_rss_mib,
            };
            login_flood::run(&target, common, &params).await?
        }
        Workload::Failover { trials, settle_ms } => {
            let params = FailoverParams {
                trials,
                settle: Duration::from_millis(settle_ms),
            };
            failover::run(&mut target, common, &params).await?
        }
        Workload::All | Workload::Plot { .. } | Workload::Fsync { .. } | Workload::Serve(_) => {
            unreachable!("handled by the caller")
        }
    };
    let context = report::context(
        options.transport.name(),
        target.kind(),
        options.label.as_deref(),
    );
    let line = report.to_json(&context);
    print!("{}", report.table());
    println!("{line}");
    report::append(&options.results, &line)
        .with_context(|| format!("cannot append to {}", options.results.display()))?;
    target.stop().await?;
    Ok(report)
}

/// The `corvid` binary: as given, or the one built next to this binary.
fn corvid_binary(given: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let me = std::env::current_exe().context("cannot find this binary's path")?;
    Ok(me.with_file_name("corvid"))
}
