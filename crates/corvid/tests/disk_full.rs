//! A full disk: writes are refused with `storage_full` while reads are still served, writes
//! resume by themselves once space is freed, and after a crash the server starts without
//! repair with every acknowledged message. The data directory is on a small tmpfs of the
//! test's own, so the real disk is never filled; mounting it needs root. Without root the
//! test says loudly that it could not run, and fails where `CI` is set.
//!
//! In a cluster, a follower whose disk fills does not hold up the others: the cluster
//! goes on through them, the full follower keeps answering (and refusing the entries it
//! has no room for), and it catches up by itself once space is freed.

#[macro_use]
mod common;
#[path = "common/cluster.rs"]
mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, Transport, PASSWORD};
use corvid_client::{Client, ClientConfig, ClientError};
use corvid_core::{ErrorCode, Token};

/// The test filesystem: room for the log's first chunk (32 MiB, reserved whole), the state,
/// and a filler file.
const FS_SIZE: &str = "96m";
/// The server's `min_free_disk_bytes`: the least allowed.
const MIN_FREE: u64 = 40 << 20;
/// Free space left by the filler: less than `MIN_FREE`, but room for what is in flight.
const LEFT_FREE: u64 = 16 << 20;
const DEADLINE: Duration = Duration::from_secs(20);

/// A tmpfs mounted on a directory, unmounted when dropped (also when the test fails).
struct Mount(PathBuf);

impl Mount {
    fn new(dir: &Path) -> Mount {
        Mount::sized(dir, FS_SIZE)
    }

    fn sized(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Still in use (a server that outlived a failed test): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

#[test]
fn a_full_disk_refuses_writes_serves_reads_and_recovers() {
    if !is_root() {
        eprintln!(
            "\n!!! a_full_disk_refuses_writes_serves_reads_and_recovers could NOT run: \
             mounting its small filesystem needs root !!!\n"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "the disk-full test must run in CI: run the tests as root"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::new(&dir.path().join("fs"));
    let config = dir.path().join("corvid.toml");
    std::fs::write(
        &config,
        format!("[limits]\nmin_free_disk_bytes = {MIN_FREE}\n"),
    )
    .unwrap();
    scenario(&mount.0, &config);
    drop(mount);
}

async fn client(server: &Server) -> Client {
    let mut config = ClientConfig::new(&[server.address(Transport::Wire).to_string()]);
    config.max_attempts = 1;
    config.request_timeout = Duration::from_secs(5);
    Client::connect_with(config).await.expect("connect")
}

fn code(result: &Result<impl Sized, ClientError>) -> Option<ErrorCode> {
    match result {
        Err(ClientError::Api(e)) => Some(e.code),
        _ => None,
    }
}

/// Every text bob can read from alice, oldest first.
async fn stored(conn: &Client, bob: Token) -> Vec<String> {
    let mut texts = Vec::new();
    let mut before = None;
    loop {
        let page = conn.history(bob, "alice", before, Some(100)).await.unwrap();
        texts.splice(0..0, page.messages.iter().map(|m| m.text.clone()));
        match page.next_before {
            Some(next) => before = Some(next),
            None => return texts,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn scenario(fs: &Path, config: &Path) {
    let data = fs.join("data");
    let args = ["--config", config.to_str().unwrap()];
    let mut server = Server::start_with(&data, &args, &[]);
    let conn = client(&server).await;
    for name in ["alice", "bob"] {
        conn.create_account(name, "", PASSWORD).await.unwrap();
    }
    let alice = conn.login("alice", PASSWORD).await.unwrap().token;
    let bob = conn.login("bob", PASSWORD).await.unwrap().token;
    let mut acked = Vec::new();
    let mut next = 0u64;
    let mut send = |conn: &Client| {
        next += 1;
        let (conn, text) = (conn.clone(), format!("message {next}"));
        async move {
            let result = conn.send(alice, "bob", &text, next).await;
            (text, result)
        }
    };
    for _ in 0..20 {
        let (text, result) = send(&conn).await;
        result.unwrap();
        acked.push(text);
    }

    // Fill the filesystem until less than `MIN_FREE` is left.
    let available = fs2::available_space(fs).unwrap();
    assert!(available > MIN_FREE, "{available} bytes free at the start");
    let filler = fs.join("filler");
    let file = std::fs::File::create(&filler).unwrap();
    fs2::FileExt::allocate(&file, available - LEFT_FREE).unwrap();
    drop(file);

    // Writes are refused with storage_full (a send racing the fill may still land).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (text, result) = send(&conn).await;
        match code(&result) {
            Some(ErrorCode::StorageFull) => break,
            _ if result.is_ok() => acked.push(text),
            _ => panic!("a send on a full disk: {result:?}"),
        }
        assert!(Instant::now() < deadline, "writes were never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, refused) = send(&conn).await;
    assert_eq!(code(&refused), Some(ErrorCode::StorageFull), "{refused:?}");
    let refused = conn.login("alice", PASSWORD).await;
    assert_eq!(code(&refused), Some(ErrorCode::StorageFull), "{refused:?}");
    // Reads go on.
    assert_eq!(stored(&conn, bob).await, acked);
    let unread = conn.fetch_unread(bob, Some(100)).await.unwrap();
    assert_eq!(unread.len(), acked.len());

    // Once space is freed, writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (text, result) = send(&conn).await;
        match code(&result) {
            None => {
                result.unwrap();
                acked.push(text);
                break;
            }
            Some(ErrorCode::StorageFull) => {}
            _ => panic!("a send after freeing space: {result:?}"),
        }
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        let (text, result) = send(&conn).await;
        result.unwrap();
        acked.push(text);
    }

    // A crash, and a start that needs no repair, with every acknowledged message.
    drop(conn);
    server.kill();
    let server = Server::start_with(&data, &args, &[]);
    let conn = client(&server).await;
    let bob = conn.login("bob", PASSWORD).await.unwrap().token;
    assert_eq!(stored(&conn, bob).await, acked);
}

/// Skips a test that needs root, loudly; fails where `CI` is set.
fn skip_without_root(name: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("\n!!! {name} could NOT run: mounting its small filesystem needs root !!!\n");
    assert!(
        std::env::var_os("CI").is_none(),
        "the disk-full tests must run in CI: run the tests as root"
    );
    true
}

/// The text limit of the cluster test: large messages fill the disk in few sends.
const CLUSTER_TEXT: usize = 200 << 10;

#[test]
fn a_follower_with_a_full_disk_holds_up_nothing_and_catches_up_by_itself() {
    if skip_without_root("a_follower_with_a_full_disk_holds_up_nothing_and_catches_up_by_itself") {
        return;
    }
    let _one = cluster::one_cluster();
    let dir = tempfile::tempdir().unwrap();
    // Server 1's data directory is the small filesystem.
    // Room for two log chunks and the state once the filler is gone.
    let mount = Mount::sized(&dir.path().join("corvid-data-1"), "128m");
    full_follower(dir.path());
    drop(mount);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn full_follower(dir: &Path) {
    use cluster::{eventually, ProcessCluster};
    let limits = format!(
        "[limits]\nmin_free_disk_bytes = {MIN_FREE}\nmax_text_bytes = {CLUSTER_TEXT}\nmax_frame_bytes = {}\n",
        2 * CLUSTER_TEXT
    );
    let mut cluster = ProcessCluster::start_with(dir, 3, &limits).await;
    let full = 0;
    if cluster.wait_for_leader().await == full {
        // The follower is the one whose disk fills: move the leadership away.
        cluster.kill(full);
        cluster.wait_for_leader().await;
        cluster.restart(full);
    }
    let fs = cluster.data_path(full);
    let available = fs2::available_space(&fs).unwrap();
    assert!(available > MIN_FREE, "{available} bytes free at the start");
    let filler = fs.join("filler");
    let file = std::fs::File::create(&filler).unwrap();
    fs2::FileExt::allocate(&file, available - LEFT_FREE).unwrap();
    // Closed, so that removing it frees its space.
    drop(file);

    // Clients of the two others write more than the full server has room for.
    let others: Vec<String> = [1, 2]
        .iter()
        .map(|i| cluster.ports[*i].wire.to_string())
        .collect();
    let mut config = ClientConfig::new(&others);
    config.max_attempts = 20;
    let conn = Client::connect_with(config).await.unwrap();
    for name in ["alice", "bob"] {
        conn.create_account(name, "", PASSWORD).await.unwrap();
    }
    let alice = conn.login("alice", PASSWORD).await.unwrap().token;
    // Half as much again as the room left below the margin.
    let count = 3 * LEFT_FREE as usize / 2 / CLUSTER_TEXT;
    let mut sent = Vec::new();
    for n in 0..count {
        let text = format!("{n} {}", "z".repeat(CLUSTER_TEXT - 16));
        conn.send(alice, "bob", &text, n as u64 + 1)
            .await
            .unwrap_or_else(|e| panic!("send {n} with one follower's disk full: {e}"));
        sent.push(text);
    }
    // The full server is still up and answers: it is behind, not gone.
    assert!(
        !cluster.has_exited(full),
        "the server with the full disk stopped; its log:\n{}",
        cluster.log(full)
    );
    let applied = cluster.applied_indexes(1);
    assert!(
        applied.contains_key(&full) && applied[&full] < applied[&1],
        "the full server answers and is behind: {applied:?}"
    );

    // Space freed: it catches up by itself and serves every message.
    std::fs::remove_file(&filler).unwrap();
    let caught_up = eventually(DEADLINE, || {
        let applied = cluster.applied_indexes(1);
        applied.len() == 3 && applied.values().all(|a| Some(a) == applied.values().next())
    })
    .await;
    assert!(
        caught_up,
        "the server did not catch up once space was freed: {:?}; its log:\n{}",
        cluster.applied_indexes(1),
        cluster.log(full)
    );
    let mut config = ClientConfig::new(&[cluster.ports[full].wire.to_string()]);
    config.max_attempts = 20;
    let through_full = Client::connect_with(config).await.unwrap();
    let bob = through_full.login("bob", PASSWORD).await.unwrap().token;
    assert_eq!(stored(&through_full, bob).await, sent);
    drop(cluster);
}

#[test]
fn a_leader_with_a_full_disk_answers_writes_storage_full_at_once_and_loses_nothing() {
    if skip_without_root(
        "a_leader_with_a_full_disk_answers_writes_storage_full_at_once_and_loses_nothing",
    ) {
        return;
    }
    let _one = cluster::one_cluster();
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::sized(&dir.path().join("corvid-data-1"), "128m");
    full_leader(dir.path());
    drop(mount);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn full_leader(dir: &Path) {
    use cluster::ProcessCluster;
    let limits = format!("[limits]\nmin_free_disk_bytes = {MIN_FREE}\n");
    let mut cluster = ProcessCluster::start_with(dir, 3, &limits).await;
    let full = 0;
    let everyone = cluster.addresses(Transport::Wire);
    let mut config = ClientConfig::new(&everyone);
    config.max_attempts = 20;
    let conn = Client::connect_with(config).await.unwrap();
    for name in ["alice", "bob"] {
        conn.create_account(name, "", PASSWORD).await.unwrap();
    }
    let alice = conn.login("alice", PASSWORD).await.unwrap().token;
    // The server whose disk fills must lead: a write it holds and the third server lacks
    // makes it the only one the third can elect once the leader is gone.
    let first = cluster.wait_for_leader().await;
    if first == full {
        conn.send(alice, "bob", "before", 1).await.unwrap();
    } else {
        let third = 3 - first - full;
        cluster.partition(&[third]);
        conn.send(alice, "bob", "before", 1).await.unwrap();
        cluster.kill(first);
        cluster.heal();
        let moved = cluster::eventually(DEADLINE, || cluster.leader() == Some(full)).await;
        assert!(moved, "server 1 did not take over: {:?}", cluster.leader());
        cluster.restart(first);
    }

    let fs = cluster.data_path(full);
    let filler = fs.join("filler");
    let file = std::fs::File::create(&filler).unwrap();
    fs2::FileExt::allocate(&file, fs2::available_space(&fs).unwrap() - LEFT_FREE).unwrap();
    drop(file);
    // Through the leader and through a follower (which forwards to it) alike. The server
    // looks at its free space at most every 100 ms while it had room, so a write just
    // after the disk filled may still go through: it is retried with its client id (stored
    // once) until refused.
    let mut accepted = Vec::new();
    for (n, server) in [full, 1].into_iter().enumerate() {
        let mut config = ClientConfig::new(&[cluster.ports[server].wire.to_string()]);
        config.max_attempts = 1;
        let pinned = Client::connect_with(config).await.unwrap();
        let text = format!("while full {n}");
        let end = Instant::now() + DEADLINE;
        let refused = loop {
            let result = pinned.send(alice, "bob", &text, 10 + n as u64).await;
            if result.is_err() || Instant::now() >= end {
                break result;
            }
            if !accepted.contains(&text) {
                accepted.push(text.clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            code(&refused),
            Some(ErrorCode::StorageFull),
            "a write through server {} while the leader's disk is full: {refused:?}",
            server + 1
        );
    }

    std::fs::remove_file(&filler).unwrap();
    let after = crate::eventually_ok(|| conn.send(alice, "bob", "after", 2)).await;
    assert!(after.is_ok(), "writes did not resume: {after:?}");
    let bob = conn.login("bob", PASSWORD).await.unwrap().token;
    let mut expected = vec!["before".to_string()];
    expected.extend(accepted);
    expected.push("after".to_string());
    assert_eq!(stored(&conn, bob).await, expected);
    drop(cluster);
}

/// Retries `send` until it succeeds or [`DEADLINE`] passes; returns the last result.
async fn eventually_ok<T, F, Fut>(mut send: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        let result = send().await;
        if result.is_ok() || Instant::now() >= end {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
