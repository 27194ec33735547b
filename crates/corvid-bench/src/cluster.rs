//! A local cluster of `corvid serve` processes under load: one configuration file with a
//! `[cluster]` section on free loopback ports, one temporary data directory per server, and
//! the operator's view of the cluster (each server's status: role, leader, term, indexes),
//! asked over the server-to-server network as `corvid cluster status` asks it.
//!
//! Each server is its own process, so that its memory and CPU can be read apart from the
//! load generator's and the others', and so that `failover` can SIGKILL the leader and
//! start it again on its data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use corvid_raft::network::grpc::{GrpcLinks, PeerAuth};
use corvid_raft::network::LinkError;
use corvid_raft::peer::{NodeStatus, PeerCall};
use corvid_raft::Peers;
use tokio::process::Child;
use tokio::time::Instant;

use crate::target::{self, Endpoint, ProtocolArg, ServerOptions, START_DEADLINE};

/// The cluster's name in its configuration (its id, which every server-to-server call
/// carries, is derived from it).
const CLUSTER_NAME: &str = "corvid-bench";
/// How long one status call may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the cluster's status is asked while waiting for a state.
const POLL: Duration = Duration::from_millis(5);

/// How the cluster is made: its size and, when given, its Raft timing (the servers'
/// defaults otherwise).
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    pub servers: usize,
    pub heartbeat_ms: Option<u64>,
    pub election_timeout_ms: Option<(u64, u64)>,
}

/// One server of the cluster.
struct Member {
    id: u64,
    raft: String,
    wire: String,
    grpc: String,
    /// `None` while the server is killed.
    child: Option<Child>,
}

/// The leader, as the servers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leader {
    pub id: u64,
    pub term: u64,
}

/// A cluster of `corvid serve` child processes and their data directories (removed when
/// this is dropped; the processes are killed then too).
pub struct StartedCluster {
    options: ServerOptions,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    members: Vec<Member>,
    peers: Peers,
}

impl StartedCluster {
    /// Starts `cluster.servers` servers on fresh data directories and free loopback ports,
    /// and returns once every one of them serves (a leader is known to each).
    pub async fn start(
        options: ServerOptions,
        cluster: &ClusterOptions,
    ) -> anyhow::Result<StartedCluster> {
        anyhow::ensure!(
            (1..=corvid_server::config::MAX_CLUSTER_MEMBERS).contains(&cluster.servers),
            "a cluster has 1 to {} servers",
            corvid_server::config::MAX_CLUSTER_MEMBERS
        );
        let dir = tempfile::Builder::new()
            .prefix("corvid-bench-cluster-")
            .tempdir()
            .context("cannot create a directory for the cluster")?;
        let addresses = free_addresses(3 * cluster.servers)?;
        let mut members: Vec<Member> = addresses
            .chunks(3)
            .zip(1..)
            .map(|(ports, id)| Member {
                id,
                raft: ports[0].clone(),
                wire: ports[1].clone(),
                grpc: ports[2].clone(),
                child: None,
            })
            .collect();
        let config_path = dir.path().join("cluster.toml");
        let text = cluster_config(&options, cluster, dir.path(), &members);
        std::fs::write(&config_path, text).context("cannot write the cluster config")?;
        // The servers' own parser and checks: a file they would refuse fails here, once.
        let config = corvid_server::Config::from_file(&config_path)?.as_member(1)?;
        config.validate()?;
        let cluster_config = config
            .cluster
            .context("the generated configuration has no [cluster] section")?;
        let raft_addresses = members.iter().map(|m| (m.id, m.raft.clone())).collect();
        let peers = Peers::new(
            GrpcLinks::new(PeerAuth::new(cluster_config.id(), None)),
            raft_addresses,
        );
        // Every server prints its ready line once a leader is known, which needs a
        // majority of them running: they are started together.
        let started = futures::future::join_all(
            members
                .iter()
                .map(|m| launch(&options, &config_path, dir.path(), m.id)),
        )
        .await;
        for (member, child) in members.iter_mut().zip(started) {
            member.child = Some(child?);
        }
        Ok(StartedCluster {
            options,
            dir,
            config_path,
            members,
            peers,
        })
    }

    /// The servers' ids.
    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// Every server, in id order, over `transport`.
    pub fn endpoint(&self, transport: ProtocolArg) -> Endpoint {
        let servers = self
            .members
            .iter()
            .map(|m| match transport {
                ProtocolArg::Wire => m.wire.clone(),
                ProtocolArg::Grpc => m.grpc.clone(),
            })
            .collect();
        Endpoint { servers, transport }
    }

    /// The running servers' pids, in id order.
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().and_then(Child::id))
            .collect()
    }

    /// Where server `id`'s log (its stderr) goes.
    pub fn log_path(&self, id: u64) -> PathBuf {
        log_path(self.dir.path(), id)
    }

    /// What server `id` says of itself and of the cluster.
    pub async fn status(&self, id: u64) -> anyhow::Result<NodeStatus> {
        let member = self.member(id)?;
        let status: Result<NodeStatus, LinkError> = self
            .peers
            .call(id, &member.raft, PeerCall::Status, &(), STATUS_TIMEOUT)
            .await;
        status.with_context(|| format!("no status from server {id}"))
    }

    /// The statuses of the running servers that answer.
    async fn statuses(&self) -> Vec<NodeStatus> {
        let running = self.members.iter().filter(|m| m.child.is_some());
        let answers = futures::future::join_all(running.map(|member| self.status(member.id))).await;
        answers.into_iter().filter_map(Result::ok).collect()
    }

    /// The highest term any running server reports.
    pub async fn term(&self) -> Option<u64> {
        self.statuses().await.iter().map(|s| s.term).max()
    }

    /// Waits, until `deadline`, for a running server that leads in the highest term any
    /// server reports, and for a majority of the servers to follow it.
    pub async fn leader(&self, deadline: Instant) -> anyhow::Result<Leader> {
        let majority = self.members.len() / 2 + 1;
        loop {
            let statuses = self.statuses().await;
            let term = statuses.iter().map(|s| s.term).max().unwrap_or(0);
            let leader = statuses
                .iter()
                .find(|s| s.role == "Leader" && s.term == term && !s.removed);
            if let Some(leader) = leader {
                let following = statuses
                    .iter()
                    .filter(|s| s.term == term && s.leader == Some(leader.id))
                    .count();
                if following >= majority {
                    return Ok(Leader {
                        id: leader.id,
                        term,
                    });
                }
            }
            if Instant::now() >= deadline {
                bail!("no leader followed by a majority before the deadline");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs server `id` and reaps it.
    pub async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let log = self.log_path(id);
        let member = self.member_mut(id)?;
        let Some(mut child) = member.child.take() else {
            bail!("server {id} is not running");
        };
        target::stop_child(&mut child, true, &log).await?;
        Ok(())
    }

    /// Starts server `id` again on its data and ports; returns once it serves.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let child = launch(&self.options, &self.config_path, self.dir.path(), id).await?;
        self.member_mut(id)?.child = Some(child);
        Ok(())
    }

    /// Waits, until `deadline`, until server `id` has applied every entry the leader had
    /// in its log when this was called.
    pub async fn wait_caught_up(&self, id: u64, deadline: Instant) -> anyhow::Result<()> {
        let leader = self.leader(deadline).await?;
        let target = self.status(leader.id).await?.last_log_index;
        loop {
            if let Ok(status) = self.status(id).await {
                if status.applied_index >= target {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("server {id} did not catch up with the leader before the deadline");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops every running server cleanly (SIGTERM), all at once.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let dir = self.dir.path().to_path_buf();
        let stops = self.members.iter_mut().filter_map(|member| {
            let log = log_path(&dir, member.id);
            member
                .child
                .as_mut()
                .map(|child| async move { target::stop_child(child, false, &log).await })
        });
        for stopped in futures::future::join_all(stops).await {
            stopped?;
        }
        Ok(())
    }

    fn member(&self, id: u64) -> anyhow::Result<&Member> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .with_context(|| format!("no server {id} in the cluster"))
    }

    fn member_mut(&mut self, id: u64) -> anyhow::Result<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .with_context(|| format!("no server {id} in the cluster"))
    }
}

fn log_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("server-{id}.log"))
}

/// Starts member `id` of the cluster configured in `config_path`.
async fn launch(
    options: &ServerOptions,
    config_path: &Path,
    dir: &Path,
    id: u64,
) -> anyhow::Result<Child> {
    let args = ["--id".to_string(), id.to_string()];
    let (child, _, _) = target::serve(
        &options.binary,
        config_path,
        &args,
        &log_path(dir, id),
        START_DEADLINE,
    )
    .await
    .with_context(|| format!("starting server {id}"))?;
    Ok(child)
}

/// The configuration file every server of the cluster shares.
fn cluster_config(
    options: &ServerOptions,
    cluster: &ClusterOptions,
    dir: &Path,
    members: &[Member],
) -> String {
    // `--id` replaces the listen addresses and the data directory with the member's.
    let mut text = target::load_config(options, &dir.join("unused"), "127.0.0.1:0", "off");
    text.push_str(&format!("\n[cluster]\nname = {CLUSTER_NAME:?}\n"));
    if let Some(heartbeat) = cluster.heartbeat_ms {
        text.push_str(&format!("heartbeat_ms = {heartbeat}\n"));
    }
    if let Some((min, max)) = cluster.election_timeout_ms {
        text.push_str(&format!(
            "election_timeout_min_ms = {min}\nelection_timeout_max_ms = {max}\n"
        ));
    }
    for member in members {
        let data = dir.join(format!("data-{}", member.id));
        text.push_str(&format!(
            "\n[[cluster.members]]\nid = {}\nraft = {:?}\nwire = {:?}\ngrpc = {:?}\ndata = {data:?}\n",
            member.id, member.raft, member.wire, member.grpc
        ));
    }
    text
}

/// `count` distinct free loopback addresses: all bound at once, then released for the
/// servers to take.
fn free_addresses(count: usize) -> anyhow::Result<Vec<String>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.to_string()))
        .collect()
}
