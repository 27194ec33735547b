//! `kill -9` loses no acknowledged write and corrupts nothing.
//!
//! The test runs itself again as a child process that writes to a node as fast as it can
//! and prints every write it got an answer for; the parent kills it (SIGKILL) in the middle,
//! reopens the directory and checks that every acknowledged message is there. State-machine
//! writes that were not yet fsync'd are lost by the kill, so this exercises the re-apply from
//! the log on restart. The second test snapshots every few entries, so that the log is
//! purged all the time while the state lags behind it: it checks that no purge ever goes
//! past state that a crash could lose.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corvid_core::{query, AccountId, Command, Outcome, SessionPolicy, Token};
mod common;

use common::{start, HASH};
use corvid_raft::{Node, NodeConfig};
use corvid_store::no_effects;

const CHILD_DIR: &str = "CORVID_CRASH_TEST_DIR";
const ROUNDS: usize = 3;
/// Acknowledged writes to wait for before each kill.
const ACKS_BEFORE_KILL: usize = 300;
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
const WRITERS: usize = 8;

fn config(dir: &Path, snapshot_every: u64) -> NodeConfig {
    NodeConfig {
        snapshot_every,
        ..common::config(dir)
    }
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    kill_rounds(
        "kill_9_loses_no_acknowledged_write",
        corvid_raft::SNAPSHOT_EVERY,
    );
}

#[test]
fn kill_9_while_snapshots_purge_the_log_loses_no_acknowledged_write() {
    let dir = kill_rounds(
        "kill_9_while_snapshots_purge_the_log_loses_no_acknowledged_write",
        SMALL_SNAPSHOT_EVERY,
    );
    // The test is only worth something if the log really was purged.
    let purged = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let node = Node::open(config(dir.path(), SMALL_SNAPSHOT_EVERY), no_effects())
            .await
            .unwrap();
        let purged = node.raft().metrics().borrow().purged;
        node.shutdown().await.unwrap();
        purged
    });
    assert!(purged.is_some_and(|p| p.index > 50), "purged: {purged:?}");
}

/// Snapshots this often (in entries) make openraft purge the log every few writes.
const SMALL_SNAPSHOT_EVERY: u64 = 8;

/// Runs `ROUNDS` child processes of test `name` writing to one directory, killing each
/// mid-write, and checks after each that every acknowledged message is stored. Returns the
/// directory. In the child, writes until killed.
fn kill_rounds(name: &str, snapshot_every: u64) -> tempfile::TempDir {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        write_until_killed(Path::new(&dir), snapshot_every);
        unreachable!("the writers never stop");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut child = Process::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (lines, acks) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(text) = line.strip_prefix("ack ") {
                    if lines.send(text.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let deadline = Instant::now() + ROUND_DEADLINE;
        let mut this_round = 0;
        while this_round < ACKS_BEFORE_KILL {
            let left = deadline.saturating_duration_since(Instant::now());
            match acks.recv_timeout(left) {
                Ok(text) => {
                    acknowledged.insert(text);
                    this_round += 1;
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("round {round}: only {this_round} acknowledged writes: {e}");
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Acknowledgements already in the pipe when the child died count too.
        acknowledged.extend(acks.try_iter());

        let stored = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(stored_texts(dir.path(), snapshot_every));
        let missing: Vec<&String> = acknowledged.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged messages lost, e.g. {:?}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
    }
    dir
}

/// Every text in bob's inbox, after a restart.
async fn stored_texts(dir: &Path, snapshot_every: u64) -> BTreeSet<String> {
    let node = start(config(dir, snapshot_every), no_effects())
        .await
        .unwrap();
    let texts = node
        .read(|t| {
            let bob = query::credentials(t, "bob")?.map(|(id, _)| id);
            match bob {
                Some(bob) => query::inbox_after(t, bob, corvid_core::MessageId(0), usize::MAX),
                None => Ok(Vec::new()),
            }
        })
        .await
        .unwrap()
        .unwrap();
    node.shutdown().await.unwrap();
    texts.into_iter().map(|m| m.text).collect()
}

/// The child: opens the node and sends messages from several tasks until it is killed.
fn write_until_killed(dir: &Path, snapshot_every: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let node = std::sync::Arc::new(
            start(config(dir, snapshot_every), no_effects())
                .await
                .unwrap(),
        );
        for name in ["alice", "bob"] {
            let outcome = node
                .write(Command::CreateAccount {
                    username: name.into(),
                    display_name: name.into(),
                    password_hash: HASH.into(),
                    now: 1,
                })
                .await
                .unwrap();
            // Created now, or in an earlier round.
            assert!(matches!(
                outcome,
                Outcome::AccountCreated { .. } | Outcome::Rejected(_)
            ));
        }
        let alice = node
            .read(|t| query::credentials(t, "alice"))
            .await
            .unwrap()
            .unwrap()
            .map(|(id, _)| id)
            .unwrap_or(AccountId(1));
        let token = Token([9; 16]);
        let login = Command::Login {
            account: alice,
            session: token.session_key(),
            policy: SessionPolicy::default(),
            now: 2,
        };
        assert!(matches!(
            node.write(login).await.unwrap(),
            Outcome::LoggedIn { .. }
        ));
        let pid = std::process::id();
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let node = node.clone();
            writers.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let text = format!("{pid}-{writer}-{n}");
                    let send = Command::Send {
                        session: token.session_key(),
                        to: "bob".into(),
                        text: text.clone(),
                        client_id: 0,
                        now: 3,
                    };
                    match node.write(send).await {
                        Ok(Outcome::Sent { .. }) => println!("ack {text}"),
                        other => panic!("send failed: {other:?}"),
                    }
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    });
}
