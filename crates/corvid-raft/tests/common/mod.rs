//! What the node tests share: a single server's configuration, and its start-up.

use std::path::Path;
use std::time::Duration;

use corvid_raft::{Node, NodeConfig, NodeError};
use corvid_store::{ClientAddrs, EffectSink, Member};

/// Bounds the wait for a single server to lead; it elects itself at once.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);

/// A single server's configuration, over `dir`.
pub fn config(dir: &Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        node_id: 1,
        member: Member {
            raft_addr: String::new(),
            client: ClientAddrs {
                wire: Some("127.0.0.1:7000".into()),
                ..ClientAddrs::default()
            },
        },
        cluster_id: None,
        snapshot_log_bytes: corvid_raft::SNAPSHOT_LOG_BYTES,
        min_free_bytes: corvid_store::disk::DEFAULT_MIN_FREE_BYTES,
        snapshot_every: corvid_raft::SNAPSHOT_EVERY,
        peers: corvid_raft::Peers::none(),
        timing: corvid_raft::RaftTiming::SINGLE_SERVER,
        max_append_bytes: 1 << 20,
    }
}

/// Starts a single server's node as `corvid serve` does: opens it, makes it a cluster of
/// one on its first start, and waits until it leads.
pub async fn start(config: NodeConfig, effects: EffectSink) -> Result<Node, NodeError> {
    let node = Node::open(config, effects).await?;
    if !node.is_initialized().await? {
        node.initialize_alone().await?;
    }
    node.wait_ready(READY_DEADLINE).await?;
    Ok(node)
}
