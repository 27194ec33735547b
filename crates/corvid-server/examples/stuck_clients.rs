//! What clients that misbehave on purpose cost an in-process server, for
//! docs/benchmarks.md. Prints numbers; asserts nothing.
//!
//! ```text
//! cargo run -p corvid-server --example stuck_clients -- subscribers [N] [M]
//! cargo run -p corvid-server --example stuck_clients -- grpc-subscribers [N] [M]
//! cargo run -p corvid-server --example stuck_clients -- slowloris [N]
//! ```
//!
//! `subscribers`: N binary-protocol connections subscribe to one account and then never
//! read; another account sends it M messages of 4 KiB. Prints the process's resident
//! memory before and after, and how long `RunningServer::shutdown` (what SIGTERM runs)
//! takes, given up on after 60 s. `grpc-subscribers`: the same with N `Subscribe` streams
//! on one gRPC connection that never reads them. `slowloris`: with `max_connections = 50`,
//! N connections of each kind that stall (a binary-protocol connection that sends half a
//! frame, one that sends nothing after its hello, a gRPC connection that never sends the
//! HTTP/2 preface), then how long until a new client of each protocol is served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use corvid_core::{Request, Response, SubscribeFrom, Token};
use corvid_grpc::pb;
use corvid_grpc::pb::chat_client::ChatClient;
use corvid_wire::{ClientHello, Frame, WireCodec, HELLO_LEN};

const PASSWORD: &str = "correct horse battery";
const TEXT_BYTES: usize = 4096;
/// How long the program waits for a shutdown or a new client before it gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

type Conn = Framed<TcpStream, WireCodec>;

async fn open(address: SocketAddr) -> Conn {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(&ClientHello::CURRENT.encode())
        .await
        .expect("hello");
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello).await.expect("server hello");
    Framed::new(stream, WireCodec::default())
}

async fn call(conn: &mut Conn, request: Request) -> Response {
    let answer = try_call(conn, request).await;
    answer.unwrap_or_else(|| panic!("no answer"))
}

/// The answer, or `None` if the server answered with an error or closed the connection.
async fn try_call(conn: &mut Conn, request: Request) -> Option<Response> {
    conn.send(Frame::Request { id: 1, request }).await.ok()?;
    loop {
        match conn.next().await {
            Some(Ok(Ok(Frame::Response { response, .. }))) => return Some(response),
            Some(Ok(Ok(Frame::Event(_)))) => continue,
            _ => return None,
        }
    }
}

async fn account(conn: &mut Conn, name: &str) -> Token {
    call(
        conn,
        Request::CreateAccount {
            username: name.into(),
            display_name: String::new(),
            password: PASSWORD.into(),
        },
    )
    .await;
    match call(
        conn,
        Request::Login {
            username: name.into(),
            password: PASSWORD.into(),
        },
    )
    .await
    {
        Response::LoggedIn { token, .. } => token,
        other => panic!("login failed: {other:?}"),
    }
}

/// Sends `count` messages of 4 KiB, 64 in flight at a time.
async fn flood(conn: &mut Conn, token: Token, to: &str, count: usize) {
    let text = "x".repeat(TEXT_BYTES);
    let mut in_flight = 0;
    let mut sent = 0;
    while sent < count || in_flight > 0 {
        while sent < count && in_flight < 64 {
            let request = Request::Send {
                token,
                to: to.into(),
                text: text.clone(),
                client_id: 0,
            };
            conn.send(Frame::Request { id: 1, request })
                .await
                .expect("send");
            sent += 1;
            in_flight += 1;
        }
        match conn.next().await {
            Some(Ok(Ok(Frame::Response { .. }))) => in_flight -= 1,
            Some(Ok(Ok(Frame::Event(_)))) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn start(
    dir: &tempfile::TempDir,
    tune: impl FnOnce(&mut corvid_server::Config),
) -> corvid_server::RunningServer {
    let mut config = corvid_server::Config::ephemeral(dir.path());
    config.log.level = "warn".into();
    config.limits.requests_per_second = 1_000_000;
    config.limits.request_burst = 1_000_000;
    tune(&mut config);
    corvid_server::start(config).await.expect("server starts")
}

async fn timed_shutdown(server: corvid_server::RunningServer) {
    let started = Instant::now();
    match tokio::time::timeout(GIVE_UP, server.shutdown()).await {
        Ok(_) => println!("shutdown took {:.2} s", started.elapsed().as_secs_f64()),
        Err(_) => println!("shutdown did not finish within {} s", GIVE_UP.as_secs()),
    }
}

async fn subscribers(count: usize, messages: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, |_| {}).await;
    let address = server.wire_addr();
    let mut sender = open(address).await;
    let alice = account(&mut sender, "alice").await;
    let mut bob_conn = open(address).await;
    let bob = account(&mut bob_conn, "bob").await;
    let before = rss_mib();
    let mut stuck = Vec::new();
    let mut refused = 0;
    for _ in 0..count {
        let mut conn = open(address).await;
        conn.send(Frame::Request {
            id: 1,
            request: Request::Subscribe {
                token: bob,
                from: SubscribeFrom::Now,
            },
        })
        .await
        .expect("subscribe");
        match conn.next().await {
            Some(Ok(Ok(Frame::Response { .. }))) => {}
            _ => refused += 1,
        }
        // From here on this client reads nothing.
        stuck.push(conn);
    }
    let started = Instant::now();
    flood(&mut sender, alice, "bob", messages).await;
    let sending = started.elapsed();
    // Pushes run behind the answers: give them a moment to pile up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{count} non-reading subscribers ({refused} refused), {messages} messages of 4 KiB sent in {:.1} s",
        sending.as_secs_f64()
    );
    println!(
        "resident memory: {before:.0} MiB before, {:.0} MiB after",
        rss_mib()
    );
    timed_shutdown(server).await;
    drop(stuck);
}

async fn grpc_subscribers(count: usize, messages: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, |_| {}).await;
    let mut sender = open(server.wire_addr()).await;
    let alice = account(&mut sender, "alice").await;
    let mut bob_conn = open(server.wire_addr()).await;
    let bob = account(&mut bob_conn, "bob").await;
    let address = server.grpc_addr().expect("gRPC is on");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connects");
    let before = rss_mib();
    let mut streams = Vec::new();
    let mut refused = 0;
    for _ in 0..count {
        let mut chat = ChatClient::new(channel.clone());
        let request = pb::SubscribeRequest {
            token: bob.0.to_vec(),
            after: None,
            from_unread: false,
        };
        match chat.subscribe(request).await {
            // The stream is kept and never read.
            Ok(stream) => streams.push(stream.into_inner()),
            Err(_) => refused += 1,
        }
    }
    let started = Instant::now();
    flood(&mut sender, alice, "bob", messages).await;
    let sending = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{count} unread Subscribe streams on one gRPC connection ({refused} refused), {messages} messages of 4 KiB sent in {:.1} s",
        sending.as_secs_f64()
    );
    println!(
        "resident memory: {before:.0} MiB before, {:.0} MiB after",
        rss_mib()
    );
    timed_shutdown(server).await;
    drop(streams);
}

/// Seconds until a new binary-protocol client gets an answer to `Ping`.
async fn wire_client_served(address: SocketAddr) -> Option<f64> {
    let started = Instant::now();
    while started.elapsed() < GIVE_UP {
        let attempt = async {
            let mut conn = open(address).await;
            matches!(
                try_call(&mut conn, Request::Ping).await,
                Some(Response::Pong)
            )
        };
        if let Ok(true) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Seconds until a new gRPC client gets an answer to `Ping`.
async fn grpc_client_served(address: SocketAddr) -> Option<f64> {
    let started = Instant::now();
    while started.elapsed() < GIVE_UP {
        let attempt = async {
            let mut chat = ChatClient::connect(format!("http://{address}"))
                .await
                .ok()?;
            chat.ping(pb::PingRequest {}).await.ok()
        };
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn seconds(served: Option<f64>) -> String {
    match served {
        Some(seconds) => format!("served after {seconds:.1} s"),
        None => format!("not served within {} s", GIVE_UP.as_secs()),
    }
}

async fn slowloris(count: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, |config| config.limits.max_connections = 50).await;
    let mut stalled = Vec::new();
    for _ in 0..count {
        // Half a frame: a length of 100, then nothing.
        let mut half = open(server.wire_addr()).await.into_inner();
        half.write_all(&[0, 0, 0, 100, 1]).await.expect("write");
        stalled.push(half);
        // A hello, then nothing.
        stalled.push(open(server.wire_addr()).await.into_inner());
        // A gRPC connection that never sends the HTTP/2 preface.
        let address = server.grpc_addr().expect("gRPC is on");
        stalled.push(TcpStream::connect(address).await.expect("connect"));
    }
    println!(
        "{} stalled connections (max_connections = 50)",
        stalled.len()
    );
    let (wire, grpc) = tokio::join!(
        wire_client_served(server.wire_addr()),
        grpc_client_served(server.grpc_addr().expect("gRPC is on"))
    );
    println!("a new binary-protocol client: {}", seconds(wire));
    println!("a new gRPC client: {}", seconds(grpc));
    timed_shutdown(server).await;
    drop(stalled);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |index: usize, default: usize| {
        args.get(index)
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    match args.first().map(String::as_str) {
        Some("subscribers") => subscribers(number(1, 10), number(2, 4200)).await,
        Some("grpc-subscribers") => grpc_subscribers(number(1, 100), number(2, 4200)).await,
        Some("slowloris") => slowloris(number(1, 100)).await,
        _ => eprintln!("usage: stuck_clients subscribers|grpc-subscribers|slowloris [N] [M]"),
    }
}
