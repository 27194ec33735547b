//! Corvid's openraft glue: a [`Node`] assembles the store (`corvid-store`), openraft and the
//! network between servers, and offers the server three things: `write` a command, `read`
//! linearizably, `shutdown`.
//!
//! Today a node is a single server: on its first start it initializes a one-member cluster
//! `{node_id: advertise_addr}` and becomes its leader; on later starts it resumes its log
//! and elects itself at once. The [`network`] module is where the transport for 3- and
//! 5-server clusters goes.

pub mod network;
mod node;
pub mod proposer;

pub use corvid_store::typ;
pub use node::{raft_config, Node, NodeConfig, NodeError, SNAPSHOT_EVERY, SNAPSHOT_LOG_BYTES};
