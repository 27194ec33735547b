//! The workloads end to end against an in-process server, or a cluster of server processes,
//! at toy sizes: they finish by themselves, count every message once, and report what they
//! measured. Correctness only; the numbers mean nothing at this size and are not checked.

use std::time::Duration;

use corvid_bench::cluster::{ClusterOptions, StartedCluster};
use corvid_bench::target::ServerOptions;
use corvid_bench::workload::failover::{self, FailoverParams};
use corvid_bench::workload::login_flood::{self, LoginFloodParams};
use corvid_bench::workload::offline::{self, OfflineParams};
use corvid_bench::workload::online::{self, OnlineParams};
use corvid_bench::workload::Common;
use corvid_bench::Target;

async fn server(dir: &std::path::Path) -> corvid_server::RunningServer {
    let mut config = corvid_server::Config::ephemeral(dir);
    config.limits.requests_per_second = 1_000_000;
    config.limits.request_burst = 1_000_000;
    corvid_server::start(config).await.unwrap()
}

fn common() -> Common {
    Common {
        deadline: Duration::from_secs(60),
        text_bytes: 40,
        progress: false,
        transport: corvid_bench::ProtocolArg::Wire,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_unloaded_deliver_every_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let target = Target::Running {
        addr: server.wire_addr().to_string(),
        pid: None,
    };
    let params = OnlineParams {
        users: 3,
        messages: 20,
        window: 4,
        alternate: false,
    };
    let report = online::run(&target, &common(), &params, "online")
        .await
        .unwrap();
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.get("delivered").unwrap(), 60);
    assert_eq!(report.get("lost").unwrap(), 0);
    assert!(report.get("latency").unwrap()["p50_ms"].as_f64().unwrap() > 0.0);

    let mut params = OnlineParams {
        users: 2,
        messages: 10,
        window: 1,
        alternate: false,
    };
    let report = online::run(&target, &common(), &params, "unloaded")
        .await
        .unwrap();
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.get("delivered").unwrap(), 20);

    // Taking turns, each send waits for the previous message to arrive: the run still
    // ends by itself with every message delivered once.
    params.alternate = true;
    let report = online::run(&target, &common(), &params, "unloaded-alternate")
        .await
        .unwrap();
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.get("delivered").unwrap(), 20);
    assert_eq!(report.get("alternate").unwrap(), true);
    assert_eq!(report.get("max_in_flight").unwrap(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_drains_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let target = Target::Running {
        addr: server.wire_addr().to_string(),
        pid: None,
    };
    let params = OfflineParams {
        recipients: 2,
        senders: 2,
        messages: 30,
        window: 8,
    };
    let report = offline::run(&target, &common(), &params).await.unwrap();
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.get("sent").unwrap(), 60);
    assert_eq!(report.get("delivered").unwrap(), 60);
    assert!(report.get("drain_per_sec").unwrap().as_f64().unwrap() > 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_over_grpc_delivers_every_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let target = Target::Running {
        addr: server.grpc_addr().unwrap().to_string(),
        pid: None,
    };
    let common = Common {
        transport: corvid_bench::ProtocolArg::Grpc,
        ..common()
    };
    let params = OnlineParams {
        users: 3,
        messages: 10,
        window: 4,
        alternate: false,
    };
    let report = online::run(&target, &common, &params, "online")
        .await
        .unwrap();
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.get("delivered").unwrap(), 30);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flood_counts_every_answer_and_stops_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    // The server runs in this process, so this process's memory is the server's.
    let target = Target::Running {
        addr: server.wire_addr().to_string(),
        pid: Some(std::process::id()),
    };
    let params = LoginFloodParams {
        connections: 2,
        window: 8,
        duration: Duration::from_millis(500),
        ping_interval: Duration::from_millis(10),
        spray: false,
        max_rss_mib: 1 << 20,
    };
    let report = login_flood::run(&target, &common(), &params).await.unwrap();
    assert!(report.passed(), "{}", report.table());
    let answers = report.get("answers").unwrap();
    let count = |code: &str| answers[code].as_u64().unwrap();
    let answered = count("invalid_credentials") + count("too_many_attempts") + count("busy");
    assert_eq!(report.get("attempts").unwrap().as_u64().unwrap(), answered);
    assert!(count("too_many_attempts") > 0, "{}", report.table());
    assert!(report.get("ping").unwrap()["count"].as_u64().unwrap() > 0);
    assert!(report.get("server_rss_peak_mib").is_some());
    server.shutdown().await.unwrap();
}

/// Three servers, each a process of this package's binary (its hidden `serve` is `corvid
/// serve`), as `--servers 3` starts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_cluster_serves_online_and_failover_kills_and_restarts_its_leaders() {
    let options = ServerOptions {
        binary: env!("CARGO_BIN_EXE_corvid-bench").into(),
        max_connections: 1000,
        admin_listen: "off".into(),
        extra_config: String::new(),
    };
    let cluster = ClusterOptions {
        servers: 3,
        heartbeat_ms: Some(50),
        election_timeout_ms: Some((300, 600)),
    };
    let cluster = StartedCluster::start(options, &cluster).await.unwrap();
    let first_leader = cluster
        .leader(tokio::time::Instant::now() + Duration::from_secs(30))
        .await
        .unwrap();
    let mut target = Target::Cluster(Box::new(cluster));
    assert_eq!(
        target
            .endpoint(corvid_bench::ProtocolArg::Wire)
            .servers
            .len(),
        3
    );

    // Users on every server: each message crosses to its recipient's server.
    let params = OnlineParams {
        users: 3,
        messages: 10,
        window: 2,
        alternate: false,
    };
    let report = online::run(&target, &common(), &params, "online")
        .await
        .unwrap();
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.get("delivered").unwrap(), 30);
    assert_eq!(
        report
            .get("servers_rss_mib")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(report.get("term_changes").is_some(), "{}", report.table());

    let params = FailoverParams {
        trials: 2,
        settle: Duration::from_millis(50),
    };
    let report = failover::run(&mut target, &common(), &params)
        .await
        .unwrap();
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.get("failover").unwrap()["count"], 2);
    assert_eq!(report.get("lost").unwrap(), 0);
    assert_eq!(report.get("duplicated").unwrap(), 0);
    assert!(report.get("sent").unwrap().as_u64().unwrap() > 0);
    // Each kill made a new leader, in a later term.
    let terms: Vec<u64> = report
        .get("terms")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|term| term.as_u64().unwrap())
        .collect();
    assert!(
        first_leader.term < terms[0] && terms[0] < terms[1],
        "{terms:?}"
    );
    // Every server came back: all three processes run at the end.
    assert_eq!(target.pids().len(), 3);
    target.stop().await.unwrap();
}
