//! Corvid's openraft glue: a [`Node`] assembles the store (`corvid-store`), openraft and the
//! network between servers, and offers the server three things: `write` a command, `read`
//! linearizably, `shutdown`.
//!
//! Starting a node is three steps, so that a server of a cluster can bind its listeners and
//! join without deciding anything alone: [`Node::open`] checks the data directory (its
//! format version and cluster id) and starts Raft, resuming the log of an initialized node;
//! the caller decides whether to [`Node::initialize`] a new cluster; [`Node::wait_ready`]
//! waits until a leader is known. A single server (the only kind today) initializes itself
//! as a cluster of one on its first start ([`Node::initialize_alone`]) and leads it; on
//! later starts it resumes its log and elects itself at once. A server of a cluster
//! initializes the cluster with every configured member (openraft makes doing so on several
//! servers safe), and reaches the others through the [`network`]; [`peer`] answers them.
//!
//! Any server serves every operation: a follower's proposer sends its batch to the leader
//! (forward-write), and a follower's read asks the leader for a read index, waits until it
//! has applied that far, and reads its own state (see [`Node::write`], [`Node::read`]).

mod formation;
mod leader_watch;
pub mod network;
mod node;
pub mod peer;
pub mod presence;
pub mod proposer;

pub use corvid_store::typ;
pub use network::Peers;
pub use node::{
    raft_config, Node, NodeConfig, NodeError, RaftTiming, DEFAULT_MAX_APPEND_BYTES, SNAPSHOT_EVERY,
    SNAPSHOT_LOG_BYTES,
};
