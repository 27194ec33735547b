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
//! later starts it resumes its log and elects itself at once. The [`network`] module is
//! where the transport for 3- and 5-server clusters goes.

pub mod network;
mod node;
pub mod proposer;

pub use corvid_store::typ;
pub use node::{raft_config, Node, NodeConfig, NodeError, SNAPSHOT_EVERY, SNAPSHOT_LOG_BYTES};
