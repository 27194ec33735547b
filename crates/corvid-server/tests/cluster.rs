//! Three real servers (`corvid_server::start`) of one cluster over loopback TCP: any server
//! serves every operation, pushes cross servers, the cluster goes on when its leader
//! stops, presence is cluster-wide, a peer without the secret is refused, and a flood of
//! connections to the server-to-server port is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use corvid_client::Client;
use corvid_core::{Event, PatternSyntax};
use corvid_raft::network::grpc::{GrpcLinks, PeerAuth};
use corvid_raft::network::LinkError;
use corvid_raft::peer::{NodeStatus, PeerCall};
use corvid_raft::Peers;
use corvid_server::config::{Cluster, ClusterMember};
use corvid_server::{Config, RunningServer};

mod common;
use common::PASSWORD;

/// Bounds every wait for the cluster to reach a state.
const DEADLINE: Duration = Duration::from_secs(20);

/// A free loopback port (bound, then released for the server to take).
fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Servers {
    root: tempfile::TempDir,
    cluster: Cluster,
    servers: BTreeMap<u64, RunningServer>,
}

impl Servers {
    /// A cluster of `size` servers, each with its own ports and directory, none started.
    fn new(size: u64, secret: Option<&[u8]>) -> Servers {
        let root = tempfile::tempdir().unwrap();
        let secret_file = secret.map(|secret| {
            let path = root.path().join("cluster.secret");
            std::fs::write(&path, secret).unwrap();
            path
        });
        let members = (1..=size)
            .map(|id| ClusterMember {
                id,
                raft: free_address().to_string(),
                raft_listen: None,
                wire: free_address(),
                grpc: None,
                http: None,
                admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                data: Some(root.path().join(format!("corvid-data-{id}"))),
            })
            .collect();
        let cluster = Cluster {
            name: "test".into(),
            secret_file,
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            max_append_bytes: 1 << 20,
            max_peer_connections: 64,
            peer_auth_timeout_secs: 10,
            members,
            serve_as: None,
            join: false,
        };
        Servers {
            root,
            cluster,
            servers: BTreeMap::new(),
        }
    }

    async fn start(&mut self, id: u64) {
        let config = Config {
            cluster: Some(self.cluster.clone()),
            ..Config::ephemeral(self.root.path())
        }
        .as_member(id)
        .unwrap();
        let server = corvid_server::start(config).await.unwrap();
        self.servers.insert(id, server);
    }

    async fn ready(&self) {
        for server in self.servers.values() {
            server.wait_ready(DEADLINE).await.unwrap();
        }
    }

    fn wire(&self, id: u64) -> String {
        self.servers[&id].wire_addr().to_string()
    }

    /// The leader every running server agrees on.
    async fn leader(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let leaders: Vec<Option<u64>> = self
                .servers
                .values()
                .map(|s| s.service().node().status().leader)
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader)) && self.servers.contains_key(leader)
                {
                    return *leader;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.servers.keys().copied().collect();
        for id in ids {
            self.servers.remove(&id).unwrap().shutdown().await.unwrap();
        }
    }
}

async fn registered(server: &str, name: &str) -> (Client, corvid_core::Token) {
    let client = Client::connect(&[server.to_string()]).await.unwrap();
    client.create_account(name, name, PASSWORD).await.unwrap();
    let token = client.login(name, PASSWORD).await.unwrap().token;
    (client, token)
}

async fn next_message(events: &mut corvid_client::Events) -> String {
    loop {
        let event = tokio::time::timeout(DEADLINE, events.recv())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("no error");
        if let Event::Message(message) = event {
            return message.text;
        }
    }
}

/// A user on server 2 sends to a user subscribed on server 3, and it is pushed; server 1,
/// where the recipient is not connected, lists them online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_through_one_server_is_pushed_by_another_and_presence_is_shared() {
    let mut servers = Servers::new(3, None);
    // The servers start in any order, and return before a leader is known.
    for id in [3, 1, 2] {
        servers.start(id).await;
    }
    servers.ready().await;
    let (alice, alice_token) = registered(&servers.wire(2), "alice").await;
    let (bob, bob_token) = registered(&servers.wire(3), "bob").await;
    let mut events = bob.subscribe(bob_token, None).await.unwrap().events;
    alice
        .send(alice_token, "bob", "hello across servers", 1)
        .await
        .unwrap();
    assert_eq!(next_message(&mut events).await, "hello across servers");

    let (carol, carol_token) = registered(&servers.wire(1), "carol").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let page = carol
            .list_accounts(carol_token, "bob", PatternSyntax::Glob, None, None)
            .await
            .unwrap();
        if page
            .rows
            .iter()
            .any(|row| row.username == "bob" && row.online)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob is not shown online on server 1: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    servers.shutdown().await;
}

/// The leader stops: a client connected to it goes on through another server, both its
/// writes and its subscription, with nothing missed and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_subscriptions_go_on_when_the_leader_stops() {
    let mut servers = Servers::new(3, None);
    for id in 1..=3 {
        servers.start(id).await;
    }
    servers.ready().await;
    let leader = servers.leader().await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let mut list = vec![servers.wire(leader)];
    list.extend(others.iter().map(|id| servers.wire(*id)));
    let (bob_first, _) = registered(&servers.wire(leader), "bob").await;
    drop(bob_first);
    let bob = Client::connect(&list).await.unwrap();
    let bob_token = bob.login("bob", PASSWORD).await.unwrap().token;
    let mut events = bob.subscribe(bob_token, None).await.unwrap().events;
    let (alice, alice_token) = registered(&servers.wire(others[0]), "alice").await;
    alice.send(alice_token, "bob", "one", 1).await.unwrap();
    assert_eq!(next_message(&mut events).await, "one");

    servers
        .servers
        .remove(&leader)
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    // Sent through a follower while the cluster elects: forwarded once a leader is known.
    alice.send(alice_token, "bob", "two", 2).await.unwrap();
    bob.send(bob_token, "alice", "from bob", 1).await.unwrap();
    assert_eq!(next_message(&mut events).await, "two");
    let unread = alice.fetch_unread(alice_token, None).await.unwrap();
    assert_eq!(
        unread.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["from bob"]
    );
    servers.shutdown().await;
}

/// The server-to-server listener answers only callers with the cluster's id and secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_secret_is_refused() {
    let secret = b"a secret of thirty-two bytes!!!!";
    let mut servers = Servers::new(1, Some(secret));
    servers.start(1).await;
    servers.ready().await;
    let address = servers.servers[&1].peer_addr().unwrap().to_string();
    let cluster = servers.cluster.id();
    let ask = |secret: Option<Vec<u8>>, cluster| {
        let address = address.clone();
        async move {
            let peers = Peers::new(
                GrpcLinks::new(PeerAuth::new(cluster, secret)),
                BTreeMap::new(),
            );
            let status: Result<NodeStatus, LinkError> = peers
                .call(1, &address, PeerCall::Status, &(), Duration::from_secs(5))
                .await;
            status
        }
    };
    let status = ask(Some(secret.to_vec()), cluster).await.unwrap();
    assert_eq!(status.leader, Some(1));
    for (secret, cluster) in [
        (Some(b"a wrong secret of thirty-two b!!".to_vec()), cluster),
        (None, cluster),
        (Some(secret.to_vec()), corvid_store::ClusterId([9; 16])),
    ] {
        match ask(secret, cluster).await {
            Err(LinkError::Refused(_)) => {}
            other => panic!("not refused: {other:?}"),
        }
    }
    servers.shutdown().await;
}

/// Whether the server still holds this connection open: reading finds no end of stream.
fn is_open(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut buffer = [0; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Opens `count` connections to `address` that never say a word.
fn flood(address: SocketAddr, count: usize) -> Vec<std::net::TcpStream> {
    (0..count)
        .map(|_| {
            let stream = std::net::TcpStream::connect(address).unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect()
}

/// How many of `streams` the server still holds open.
fn open_count(streams: &mut [std::net::TcpStream]) -> usize {
    streams.iter_mut().map(is_open).filter(|open| *open).count()
}

/// Anyone can connect to the server-to-server port: a flood of connections that never
/// authenticate holds at most `max_peer_connections` of them open, while the cluster goes
/// on serving (a write through a follower is forwarded to the leader) and a new caller
/// with the cluster's id gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_to_the_peer_port_is_bounded_and_the_cluster_serves() {
    const LIMIT: usize = 8;
    const FLOOD: usize = 40;
    let mut servers = Servers::new(3, None);
    servers.cluster.max_peer_connections = LIMIT;
    // Long enough that only the connection limit can close the flood during the test.
    servers.cluster.peer_auth_timeout_secs = 300;
    for id in 1..=3 {
        servers.start(id).await;
    }
    servers.ready().await;
    let leader = servers.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let (alice, alice_token) = registered(&servers.wire(follower), "alice").await;
    let (_bob, _) = registered(&servers.wire(leader), "bob").await;

    let peer_addresses: BTreeMap<u64, SocketAddr> = servers
        .servers
        .iter()
        .map(|(id, server)| (*id, server.peer_addr().unwrap()))
        .collect();
    let mut floods: BTreeMap<u64, Vec<std::net::TcpStream>> = peer_addresses
        .iter()
        .map(|(id, address)| (*id, flood(*address, FLOOD)))
        .collect();

    // With every slot taken by the flood, a caller with the cluster's id gets in, and a
    // write through a follower is forwarded to the leader and acknowledged.
    let links = Peers::new(
        GrpcLinks::new(PeerAuth::new(servers.cluster.id(), None)),
        BTreeMap::new(),
    );
    for (id, address) in &peer_addresses {
        let status: NodeStatus = links
            .call(*id, &address.to_string(), PeerCall::Status, &(), DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("server {id} refused a peer during the flood: {e}"));
        assert_eq!(status.leader, Some(leader));
    }
    alice
        .send(alice_token, "bob", "through the flood", 1)
        .await
        .unwrap();

    // Each server holds at most its limit of the flood: the rest were closed.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let open: BTreeMap<u64, usize> = floods
            .iter_mut()
            .map(|(id, flood)| (*id, open_count(flood)))
            .collect();
        if open.values().all(|n| *n <= LIMIT) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "more than {LIMIT} unauthenticated connections held open: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And each server's metrics say so: connections evicted to make room, no more open
    // than the limit.
    for (id, server) in &servers.servers {
        let text = common::scrape(server.admin_addr().unwrap()).await;
        let evicted = common::sample(
            &text,
            "corvid_peer_connections_closed_total",
            &[("reason", "evicted")],
        );
        assert!(
            evicted >= (FLOOD - LIMIT) as f64,
            "server {id} counted {evicted} evictions of a flood of {FLOOD} over {LIMIT} slots"
        );
        let open = common::sample(&text, "corvid_peer_connections", &[]);
        assert!(open <= LIMIT as f64, "server {id} reports {open} open");
    }
    alice
        .send(alice_token, "bob", "after the flood", 2)
        .await
        .unwrap();
    servers.shutdown().await;
}

/// A connection to the server-to-server port that makes no call with the cluster's id
/// within `peer_auth_timeout_secs` is closed; one that did stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_connection_that_does_not_authenticate_is_closed_after_the_deadline() {
    let mut servers = Servers::new(1, None);
    servers.cluster.peer_auth_timeout_secs = 1;
    servers.start(1).await;
    servers.ready().await;
    let address = servers.servers[&1].peer_addr().unwrap();
    let links = Peers::new(
        GrpcLinks::new(PeerAuth::new(servers.cluster.id(), None)),
        BTreeMap::new(),
    );
    let target = address.to_string();
    let ask = || links.call::<_, NodeStatus>(1, &target, PeerCall::Status, &(), DEADLINE);
    ask().await.unwrap();
    let mut silent = flood(address, 4);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while open_count(&mut silent) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a connection that never authenticated is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ask().await.unwrap();
    let text = common::scrape(servers.servers[&1].admin_addr().unwrap()).await;
    let timed_out = common::sample(
        &text,
        "corvid_peer_connections_closed_total",
        &[("reason", "auth_timeout")],
    );
    assert_eq!(timed_out, 4.0, "{text}");
    servers.shutdown().await;
}

/// A call to the server-to-server port without the cluster's id is refused from its
/// headers: the server answers it while its body is still unfinished, so an
/// unauthenticated client makes it read and hold no request body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_peer_call_is_refused_before_its_body_is_read() {
    let mut servers = Servers::new(1, None);
    servers.start(1).await;
    servers.ready().await;
    let address = servers.servers[&1].peer_addr().unwrap();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}/corvid.peer.v1.Peer/Status"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    // A gRPC message header announcing a megabyte, and then nothing: the body never ends.
    // Sending it fails if the server has already answered from the headers and closed the
    // stream, which is what this test wants to see anyway.
    let mut start = vec![0];
    start.extend_from_slice(&(1u32 << 20).to_be_bytes());
    let _ = body.send_data(start.into(), false);
    let response = tokio::time::timeout(DEADLINE / 4, response)
        .await
        .expect("an answer while the body is unfinished")
        .unwrap();
    let status = tonic::Status::from_header_map(response.headers()).expect("a grpc-status");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let text = common::scrape(servers.servers[&1].admin_addr().unwrap()).await;
    assert_eq!(
        common::sample(&text, "corvid_peer_calls_refused_total", &[]),
        1.0,
        "{text}"
    );
    servers.shutdown().await;
}
