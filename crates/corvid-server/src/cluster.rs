//! A server as a member of a `[cluster]`: its member record, the links to the others
//! (addresses from this server's own configuration first), and the server-to-server
//! listener, bound before the node opens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use corvid_raft::network::grpc::{GrpcLinks, PeerAuth};
use corvid_raft::network::listener::{ListenerLimits, ListenerStats};
use corvid_raft::peer::PeerService;
use corvid_raft::{NodeConfig, Peers, RaftTiming};
use corvid_store::{ClientAddrs, Member};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Cluster, ClusterMember};

/// The server-to-server listener, bound and not yet serving.
pub(crate) struct Peering {
    pub address: SocketAddr,
    listener: TcpListener,
    auth: PeerAuth,
    limits: ListenerLimits,
    stats: Arc<ListenerStats>,
}

impl Peering {
    /// What the listener counts, for the metrics.
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }

    /// Serves the other servers until `shutdown`.
    pub async fn serve(self, service: Arc<PeerService>, shutdown: CancellationToken) {
        if let Err(e) = corvid_raft::network::grpc::serve(
            self.listener,
            service,
            self.auth,
            self.limits,
            self.stats,
            shutdown,
        )
        .await
        {
            tracing::error!(error = %e, "the server-to-server listener failed");
        }
    }
}

/// The member record of a configured member.
fn record(member: &ClusterMember) -> Member {
    Member {
        raft_addr: member.raft.clone(),
        client: ClientAddrs {
            wire: Some(member.wire.to_string()),
            grpc: member.grpc.map(|address| address.to_string()),
            http: member.http.clone(),
        },
    }
}

/// Every configured member's record: the membership a new cluster starts with.
pub(crate) fn members(cluster: &Cluster) -> BTreeMap<u64, Member> {
    cluster
        .members
        .iter()
        .map(|member| (member.id, record(member)))
        .collect()
}

/// Makes `node` this member of `cluster` and binds its server-to-server listener. Client
/// addresses given as port 0 are recorded with the port actually bound.
pub(crate) async fn prepare(
    cluster: &Cluster,
    node: &mut NodeConfig,
    wire_addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
) -> anyhow::Result<Peering> {
    let me = cluster
        .this_member()
        .context("a [cluster] server needs --id: which member it is")?;
    let secret = cluster.secret()?;
    let bind = me.raft_bind()?;
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen for the other servers on {bind}"))?;
    let address = listener.local_addr()?;
    let auth = PeerAuth::new(cluster.id(), secret);
    let addresses = cluster
        .members
        .iter()
        .map(|member| (member.id, member.raft.clone()))
        .collect();
    let mut member = record(me);
    if me.wire.port() == 0 {
        member.client.wire = Some(wire_addr.to_string());
    }
    if me.grpc.is_some_and(|address| address.port() == 0) {
        member.client.grpc = grpc_addr.map(|address| address.to_string());
    }
    node.node_id = me.id;
    node.member = member;
    node.cluster_id = Some(cluster.id());
    node.peers = Peers::new(GrpcLinks::new(auth.clone()), addresses);
    node.timing = RaftTiming {
        heartbeat_ms: cluster.heartbeat_ms,
        election_timeout_min_ms: cluster.election_timeout_min_ms,
        election_timeout_max_ms: cluster.election_timeout_max_ms,
    };
    node.max_append_bytes = cluster.max_append_bytes;
    Ok(Peering {
        address,
        listener,
        auth,
        limits: ListenerLimits {
            max_connections: cluster.max_peer_connections,
            auth_timeout: Duration::from_secs(cluster.peer_auth_timeout_secs),
        },
        stats: Arc::default(),
    })
}
