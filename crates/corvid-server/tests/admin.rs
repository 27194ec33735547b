//! The admin listener over a real socket: the Prometheus exposition after a chat (checked
//! by `promtool`), counters that move exactly as a scripted session says, health,
//! readiness and status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use corvid_client::{Client, ClientConfig, Protocol};
use corvid_core::{Event, PatternSyntax};
use corvid_server::admin::{self, AdminState, Status};
use corvid_server::metrics::Metrics;
use corvid_server::service::{Service, ServiceConfig};
use corvid_server::Config;

mod common;
use common::{admin_get as get, sample, scrape as metrics, PASSWORD};

const WAIT: Duration = Duration::from_secs(10);

async fn client(addr: SocketAddr, transport: Protocol) -> Client {
    let mut config = ClientConfig::new(&[addr.to_string()]);
    config.transport = transport;
    Client::connect_with(config).await.unwrap()
}

/// Runs `promtool check metrics` on `text`, which must pass with nothing to say.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's `prometheus` package; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_moves_exactly_its_counters_and_promtool_accepts_the_exposition() {
    let dir = tempfile::tempdir().unwrap();
    let server = corvid_server::start(Config::ephemeral(dir.path()))
        .await
        .unwrap();
    let admin = server.admin_addr().expect("the admin listener is on");
    let wire = client(server.wire_addr(), Protocol::Wire).await;
    let grpc = client(server.grpc_addr().unwrap(), Protocol::Grpc).await;
    wire.create_account("alice", "Alice", PASSWORD)
        .await
        .unwrap();
    wire.create_account("bob", "Bob", PASSWORD).await.unwrap();
    let alice = wire.login("alice", PASSWORD).await.unwrap().token;
    let bob = grpc.login("bob", PASSWORD).await.unwrap().token;
    let mut bob_events = grpc.subscribe(bob, None).await.unwrap().events;

    let before = metrics(admin).await;
    wire.send(alice, "bob", "hello bob", 1).await.unwrap();
    match tokio::time::timeout(WAIT, bob_events.recv()).await {
        Ok(Some(Ok(Event::Message(message)))) => assert_eq!(message.text, "hello bob"),
        other => panic!("bob got {other:?}"),
    }
    let after = metrics(admin).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    let send_ok = [("operation", "send"), ("protocol", "wire"), ("code", "ok")];
    assert_eq!(moved("corvid_requests_total", &send_ok), 1.0);
    assert_eq!(
        moved("corvid_requests_total", &[]),
        1.0,
        "one request in all"
    );
    assert_eq!(
        moved(
            "corvid_request_duration_seconds_count",
            &[("operation", "send"), ("protocol", "wire")]
        ),
        1.0
    );
    assert_eq!(moved("corvid_messages_sent_total", &[]), 1.0);
    assert_eq!(moved("corvid_messages_pushed_total", &[]), 1.0);
    assert_eq!(moved("corvid_messages_fetched_total", &[]), 0.0);
    assert_eq!(moved("corvid_push_queue_drops_total", &[]), 0.0);
    assert!(
        moved("corvid_log_fsyncs_total", &[]) >= 1.0,
        "the send was fsync'd: {after}"
    );
    assert!(moved("corvid_log_fsync_duration_seconds_count", &[]) >= 1.0);

    // A refused send counts under its error code, and sends nothing.
    let refused = wire.send(alice, "nobody", "hello?", 2).await;
    assert!(refused.is_err());
    let later = metrics(admin).await;
    let code = [
        ("operation", "send"),
        ("protocol", "wire"),
        ("code", "unknown_recipient"),
    ];
    assert_eq!(sample(&later, "corvid_requests_total", &code), 1.0);
    assert_eq!(
        sample(&later, "corvid_messages_sent_total", &[]),
        sample(&after, "corvid_messages_sent_total", &[])
    );

    // Fetching reads what waits, counted per message and per protocol.
    grpc.send(bob, "alice", "hi alice", 1).await.unwrap();
    grpc.send(bob, "alice", "still there?", 2).await.unwrap();
    assert_eq!(wire.fetch_unread(alice, None).await.unwrap().len(), 2);
    wire.list_accounts(alice, "*", PatternSyntax::Glob, None, None)
        .await
        .unwrap();
    let text = metrics(admin).await;
    assert_eq!(sample(&text, "corvid_messages_fetched_total", &[]), 2.0);
    assert_eq!(
        sample(
            &text,
            "corvid_requests_total",
            &[("operation", "send"), ("protocol", "grpc"), ("code", "ok")]
        ),
        2.0
    );
    assert_eq!(
        sample(&text, "corvid_subscriptions", &[("protocol", "grpc")]),
        1.0
    );
    assert_eq!(
        sample(&text, "corvid_connections", &[("protocol", "wire")]),
        1.0
    );
    assert_eq!(
        sample(&text, "corvid_connections", &[("protocol", "grpc")]),
        1.0
    );
    assert_eq!(sample(&text, "corvid_raft_leader_id", &[]), 1.0);
    assert_eq!(
        sample(&text, "corvid_raft_role", &[("role", "leader")]),
        1.0
    );
    let applied = sample(&text, "corvid_raft_applied_index", &[]);
    assert!(applied >= 5.0, "applied index {applied}");
    assert!(sample(&text, "corvid_raft_committed_index", &[]) >= applied);
    assert!(sample(&text, "corvid_raft_last_log_index", &[]) >= applied);
    assert!(sample(&text, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(sample(&text, "process_open_fds", &[]) > 0.0);
    assert!(sample(&text, "corvid_data_dir_bytes", &[]) > 0.0);
    promtool_accepts(&text);

    let (code, body) = get(admin, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = get(admin, "/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let (code, body) = get(admin, "/status").await;
    assert_eq!(code, 200);
    let status: Status = serde_json::from_str(&body).unwrap();
    assert_eq!(status.role, "leader");
    assert_eq!(status.leader_id, Some(1));
    assert_eq!(status.not_ready, None);
    assert_eq!(status.connections, 2);
    assert!(status.applied_index >= applied as u64);
    assert!(status.data_dir_bytes > 0);
    let (code, _) = get(admin, "/nothing-here").await;
    assert_eq!(code, 404);

    drop((wire, grpc, bob_events));
    server.shutdown().await.unwrap();
}

/// The names of the series in an exposition.
fn exported_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The dashboard is importable (JSON with panels and a Prometheus data source variable),
/// and every metric it queries is one the server exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_metrics_the_server_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/grafana-dashboard.json"))
            .expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables
        .iter()
        .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"));
    let panels = dashboard["panels"].as_array().expect("a panels array");
    let queried: std::collections::BTreeSet<String> = panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_string))
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|word| word.starts_with("corvid_") || word.starts_with("process_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(queried.len() >= 20, "{queried:?}");
    for title in ["Throughput", "Latency", "Connections", "Storage", "Raft"] {
        assert!(panels.iter().any(|p| p["title"] == title), "a {title} row");
    }

    let dir = tempfile::tempdir().unwrap();
    let server = corvid_server::start(Config::ephemeral(dir.path()))
        .await
        .unwrap();
    let wire = client(server.wire_addr(), Protocol::Wire).await;
    wire.create_account("alice", "Alice", PASSWORD)
        .await
        .unwrap();
    let alice = wire.login("alice", PASSWORD).await.unwrap().token;
    wire.send(alice, "alice", "note to self", 1).await.unwrap();
    let exported = exported_names(&metrics(server.admin_addr().unwrap()).await);
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
    drop(wire);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_the_admin_listener_off_nothing_listens_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.admin_listen = None;
    let server = corvid_server::start(config).await.unwrap();
    assert_eq!(server.admin_addr(), None);
    let wire = client(server.wire_addr(), Protocol::Wire).await;
    wire.ping().await.unwrap();
    assert_eq!(server.service().metrics().messages_sent_total(), 0);
    drop(wire);
    server.shutdown().await.unwrap();
}

/// Polls `/readyz` until it answers `code`, within the deadline; returns the body.
async fn readyz_becomes(addr: SocketAddr, code: u16) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (answered, body) = get(addr, "/readyz").await;
        if answered == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still answers {answered} ({body}), not {code}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server is ready only while a leader is known: a node that belongs to no cluster yet
/// has none (503), becomes ready once it leads its own (200), and is not ready once its
/// Raft has stopped (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_without_a_leader_and_200_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::ephemeral(dir.path());
    let node = corvid_raft::Node::open(
        corvid_raft::NodeConfig {
            min_free_bytes: config.limits.min_free_disk_bytes,
            ..corvid_raft::NodeConfig::single_server(dir.path().to_path_buf())
        },
        corvid_store::no_effects(),
    )
    .await
    .unwrap();
    let metrics = Metrics::on();
    let service = Service::new(
        node,
        Arc::new(corvid_server::hub::Hub::default()),
        ServiceConfig {
            session_policy: config.session_policy(),
            max_text_bytes: config.limits.max_text_bytes,
            login: config.login.clone(),
            metrics: metrics.clone(),
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let state = AdminState::new(service.clone(), metrics, dir.path().to_path_buf());
    let admin = tokio::spawn(admin::serve(listener, state, shutdown.clone()));

    let body = readyz_becomes(addr, 503).await;
    assert!(body.contains("no leader"), "{body}");
    // Health is about the process, not the cluster.
    assert_eq!(get(addr, "/healthz").await.0, 200);

    service.node().initialize_alone().await.unwrap();
    assert_eq!(readyz_becomes(addr, 200).await, "ready\n");

    service.node().shutdown().await.unwrap();
    let body = readyz_becomes(addr, 503).await;
    assert!(body.contains("raft has"), "{body}");

    shutdown.cancel();
    tokio::time::timeout(WAIT, admin)
        .await
        .expect("the admin listener stops at shutdown")
        .unwrap();
}

/// A raw binary-protocol connection that has said hello.
async fn raw_connection(
    addr: SocketAddr,
) -> tokio_util::codec::Framed<TcpStream, corvid_wire::WireCodec> {
    use corvid_wire::{ClientHello, WireCodec, HELLO_LEN};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let hello = ClientHello::CURRENT;
    stream.write_all(&hello.encode()).await.unwrap();
    let mut answer = [0u8; HELLO_LEN];
    stream.read_exact(&mut answer).await.unwrap();
    tokio_util::codec::Framed::new(stream, WireCodec::default().with_version(hello.version))
}

/// Polls the exposition until `name` with `labels` reads `value`, within the deadline.
async fn sample_becomes(addr: SocketAddr, name: &str, labels: &[(&str, &str)], value: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = sample(&metrics(addr).await, name, labels);
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {labels:?} is {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_requests_and_refused_connections_are_counted_per_protocol() {
    use corvid_core::{ErrorCode, Request};
    use corvid_wire::Frame;
    use futures::{SinkExt, StreamExt};

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.limits.max_connections = 1;
    config.limits.requests_per_second = 1;
    config.limits.request_burst = 1;
    let server = corvid_server::start(config).await.unwrap();
    let admin = server.admin_addr().unwrap();
    let wire = [("protocol", "wire")];

    let mut connection = raw_connection(server.wire_addr()).await;
    for id in 1..=3 {
        let request = Request::Ping;
        connection
            .send(Frame::Request { id, request })
            .await
            .unwrap();
    }
    let mut refused = 0.0;
    for _ in 1..=3 {
        match tokio::time::timeout(WAIT, connection.next()).await {
            Ok(Some(Ok(Ok(Frame::Error { error, .. }))))
                if error.code == ErrorCode::RateLimited =>
            {
                refused += 1.0
            }
            Ok(Some(Ok(Ok(Frame::Response { .. })))) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(refused >= 1.0, "a burst of one refuses some of three pings");
    let text = metrics(admin).await;
    assert_eq!(
        sample(&text, "corvid_rate_limited_requests_total", &wire),
        refused
    );
    assert_eq!(
        sample(&text, "corvid_requests_total", &[("operation", "ping")]),
        3.0 - refused,
        "refused requests never reach the service"
    );

    // The one connection slot is taken: the next connection is refused, and counted.
    let second = TcpStream::connect(server.wire_addr()).await.unwrap();
    sample_becomes(admin, "corvid_connections_rejected_total", &wire, 1.0).await;
    drop(second);
    assert_eq!(
        sample(&metrics(admin).await, "corvid_connections", &wire),
        1.0
    );

    drop(connection);
    sample_becomes(admin, "corvid_connections", &wire, 0.0).await;
    server.shutdown().await.unwrap();
}
