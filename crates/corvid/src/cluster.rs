//! `corvid cluster`: the operator's view of a cluster and its membership changes, spoken
//! to each server's server-to-server listener with the cluster's id and secret, as the
//! servers speak to each other.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use corvid_raft::network::grpc::{GrpcLinks, PeerAuth};
use corvid_raft::network::LinkError;
use corvid_raft::peer::{MembershipChange, NodeStatus, PeerCall, Refusal};
use corvid_raft::Peers;
use corvid_server::config::Cluster;
use corvid_server::Config;
use corvid_store::{ClientAddrs, Member};

use crate::commands::print_line;
use crate::error::CliError;

/// How long a server may take to answer a status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a membership change may take: adding waits until the new server caught up.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// The cluster's configuration file (its [cluster] section names the servers); before
    /// or after the action. Required: clap cannot require a flag that is also global, so
    /// `config_file` checks it.
    #[arg(long, global = true, env = "CORVID_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: ClusterAction,
}

impl ClusterArgs {
    /// The configuration file named by `--config` or `CORVID_CONFIG`.
    pub fn config_file(&self) -> Result<&Path, CliError> {
        self.config.as_deref().ok_or_else(|| {
            CliError::usage("corvid cluster needs --config FILE (or CORVID_CONFIG=FILE)")
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Members, roles, leader, term, and each server's last log index, applied index and lag
    Status,
    /// Add a server: a learner until it has caught up with the log, then a voter
    Add {
        /// The new server's id (never used before in this cluster)
        id: u64,
        /// Its server-to-server address
        #[arg(long, value_name = "ADDR")]
        raft: String,
        /// Its binary-protocol address
        #[arg(long, value_name = "ADDR")]
        wire: SocketAddr,
        /// Its gRPC address
        #[arg(long, value_name = "ADDR")]
        grpc: Option<SocketAddr>,
    },
    /// Remove a server from the cluster (it stops serving)
    Remove {
        /// The server's id
        id: u64,
    },
}

fn failed(message: impl Into<String>) -> CliError {
    CliError::local("cluster", message)
}

/// The servers to ask: every configured member, by id, at its server-to-server address.
fn servers(cluster: &Cluster) -> BTreeMap<u64, String> {
    cluster
        .members
        .iter()
        .map(|member| (member.id, member.raft.clone()))
        .collect()
}

pub async fn run(args: ClusterArgs) -> Result<(), CliError> {
    let path = args.config_file()?;
    let config = Config::from_file(path).map_err(|e| failed(e.to_string()))?;
    let Some(cluster) = config.cluster else {
        return Err(failed(format!(
            "{} has no [cluster] section",
            path.display()
        )));
    };
    let secret = cluster.secret().map_err(|e| failed(e.to_string()))?;
    let peers = Peers::new(
        GrpcLinks::new(PeerAuth::new(cluster.id(), secret)),
        servers(&cluster),
    );
    match args.action {
        ClusterAction::Status => status(&cluster, &peers).await,
        ClusterAction::Add {
            id,
            raft,
            wire,
            grpc,
        } => {
            let member = Member {
                raft_addr: raft,
                client: ClientAddrs {
                    wire: Some(wire.to_string()),
                    grpc: grpc.map(|address| address.to_string()),
                    http: None,
                },
            };
            change(&cluster, &peers, MembershipChange::Add { id, member }).await?;
            print_line(format!("server {id} added: caught up, and a voter"))
        }
        ClusterAction::Remove { id } => {
            change(&cluster, &peers, MembershipChange::Remove { id }).await?;
            print_line(format!("server {id} removed"))
        }
    }
}

async fn status(cluster: &Cluster, peers: &Peers) -> Result<(), CliError> {
    let mut answers: BTreeMap<u64, Result<NodeStatus, LinkError>> = BTreeMap::new();
    let mut addresses = servers(cluster);
    for (id, address) in &addresses {
        let answer = peers
            .call(*id, address, PeerCall::Status, &(), STATUS_TIMEOUT)
            .await;
        answers.insert(*id, answer);
    }
    // Servers added since the configuration was written are asked too.
    let known: Vec<(u64, Member)> = answers
        .values()
        .filter_map(|answer| answer.as_ref().ok())
        .flat_map(|status| status.members.iter().map(|(id, m, _)| (*id, m.clone())))
        .collect();
    for (id, member) in known {
        if let std::collections::btree_map::Entry::Vacant(entry) = addresses.entry(id) {
            let answer = peers
                .call(id, &member.raft_addr, PeerCall::Status, &(), STATUS_TIMEOUT)
                .await;
            entry.insert(member.raft_addr.clone());
            answers.insert(id, answer);
        }
    }
    let leader_status = answers
        .values()
        .filter_map(|answer| answer.as_ref().ok())
        .find(|status| status.leader == Some(status.id));
    let leader_last = leader_status.and_then(|status| status.last_log_index);
    let voters: Vec<u64> = leader_status
        .map(|status| {
            status
                .members
                .iter()
                .filter(|(_, _, voter)| *voter)
                .map(|(id, _, _)| *id)
                .collect()
        })
        .unwrap_or_default();
    // Written out at once, with an error rather than a panic when stdout is closed (as
    // by `| head -1`).
    let leader_line = match leader_status {
        Some(status) => format!(
            "leader {} (term {}), voters {:?}",
            status.id, status.term, voters
        ),
        None => "no leader known to any server that answered".to_string(),
    };
    let header = format!(
        "{:>4}  {:<22} {:<10} {:>6} {:>8} {:>10} {:>10} {:>6}",
        "id", "raft", "role", "leader", "term", "last log", "applied", "lag"
    );
    let mut lines = vec![leader_line, header];
    let show = |index: Option<u64>| index.map_or("-".to_string(), |i| i.to_string());
    for (id, address) in &addresses {
        match &answers[id] {
            Ok(status) => {
                let lag = match (leader_last, status.applied_index) {
                    (Some(last), applied) => last.saturating_sub(applied.unwrap_or(0)).to_string(),
                    _ => "-".to_string(),
                };
                let role = if status.removed {
                    "removed".to_string()
                } else {
                    status.role.clone()
                };
                lines.push(format!(
                    "{:>4}  {:<22} {:<10} {:>6} {:>8} {:>10} {:>10} {:>6}",
                    id,
                    address,
                    role,
                    show(status.leader),
                    status.term,
                    show(status.last_log_index),
                    show(status.applied_index),
                    lag
                ));
            }
            Err(e) => lines.push(format!("{id:>4}  {address:<22} unreachable: {e}")),
        }
    }
    print_line(lines.join("\n"))
}

/// Sends `change` to the leader: to each configured server in turn until one leads or
/// names the leader.
async fn change(
    cluster: &Cluster,
    peers: &Peers,
    change: MembershipChange,
) -> Result<(), CliError> {
    let mut last_error = String::from("no server answered");
    let mut targets: Vec<(u64, String)> = servers(cluster).into_iter().collect();
    let mut tried = 0;
    while let Some((id, address)) = targets.get(tried).cloned() {
        tried += 1;
        let answer: Result<Result<(), Refusal>, LinkError> = peers
            .call(
                id,
                &address,
                PeerCall::ChangeMembership,
                &change,
                CHANGE_TIMEOUT,
            )
            .await;
        match answer {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(Refusal::NotLeader {
                leader: Some((leader, member)),
            })) if tried <= 2 * cluster.members.len() => {
                let address = peers.address(leader, Some(&member));
                targets.insert(tried, (leader, address));
            }
            Ok(Err(refusal)) => last_error = format!("server {id}: {refusal}"),
            Err(e) => last_error = format!("server {id}: {e}"),
        }
    }
    Err(failed(last_error))
}
