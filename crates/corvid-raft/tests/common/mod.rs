//! What the node tests share: a single server's configuration and its start-up, and the
//! commands that make the accounts and messages they work with.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use corvid_core::{AccountId, Command, Outcome, SessionPolicy, Token};
use corvid_raft::{Node, NodeConfig, NodeError};
use corvid_store::{ClientAddrs, EffectSink, Member};

/// An argon2id hash in the stored form; no test logs in with a password.
pub const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

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

pub fn create(name: &str) -> Command {
    Command::CreateAccount {
        username: name.into(),
        display_name: name.into(),
        password_hash: HASH.into(),
        now: 1_000,
    }
}

pub fn login(account: AccountId, token: Token) -> Command {
    Command::Login {
        account,
        session: token.session_key(),
        policy: SessionPolicy::default(),
        now: 1_000,
    }
}

pub fn send(token: Token, to: &str, text: &str, client_id: u64) -> Command {
    Command::Send {
        session: token.session_key(),
        to: to.into(),
        text: text.into(),
        client_id,
        now: 2_000,
    }
}

/// Creates alice and bob through `node` and logs alice in; returns bob's id.
pub async fn alice_and_bob(node: &Node, alice: Token) -> AccountId {
    let Outcome::AccountCreated { account: a, .. } = node.write(create("alice")).await.unwrap()
    else {
        panic!("alice not created")
    };
    let Outcome::AccountCreated { account: b, .. } = node.write(create("bob")).await.unwrap()
    else {
        panic!("bob not created")
    };
    assert!(matches!(
        node.write(login(a, alice)).await.unwrap(),
        Outcome::LoggedIn { .. }
    ));
    b
}
