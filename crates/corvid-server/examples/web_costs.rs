//! What the web API (JSON over WebSocket, docs/web-api.md) costs: bytes per operation,
//! typical and worst case, and its latency and throughput on one connection. Prints the
//! web column of docs/protocols.md.
//!
//! ```text
//! cargo run --release -p corvid-server --example web_costs
//! ```
//!
//! The inputs are those of `protocol_costs` (typical: 5-character names, a 30-byte
//! message, pages of 5, one id; worst: 32-character names, 4,096-byte messages, pages of
//! 100, 1,000 ids). Bytes are counted on the socket as WebSocket frames: each text
//! message is its JSON plus a 2-, 4- or 10-byte frame header, and a client's also a
//! 4-byte mask (RFC 6455, section 5.2; no extension is negotiated, so nothing else is
//! added). Like the other rows, the second run of each operation is counted. Speed is
//! measured like `protocol_speed`: 5,000 sequential pings, 500 sequential sends, then 64
//! requests kept in flight for 5 s; each figure is the median of 3 runs.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

#[path = "common/cases.rs"]
mod cases;
use cases::{cases, name, Case, PASSWORD};

const SEQUENTIAL_PINGS: usize = 5_000;
const SEQUENTIAL_SENDS: usize = 500;
const CONCURRENCY: usize = 64;
const THROUGHPUT_TIME: Duration = Duration::from_secs(5);
const RUNS: usize = 3;

struct Ws {
    socket: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Socket bytes: client to server, server to client.
    up: u64,
    down: u64,
}

fn frame_header(len: usize) -> u64 {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

impl Ws {
    async fn open(addr: std::net::SocketAddr) -> Ws {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/api/ws"), stream)
            .await
            .expect("WebSocket");
        Ws {
            socket,
            next_id: 1,
            up: 0,
            down: 0,
        }
    }

    async fn send(&mut self, mut request: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        let text = request.to_string();
        self.up += frame_header(text.len()) + 4 + text.len() as u64;
        self.socket.send(WsMessage::text(text)).await.expect("send");
        id
    }

    async fn receive(&mut self) -> Value {
        loop {
            match self.socket.next().await.expect("open").expect("message") {
                WsMessage::Text(text) => {
                    self.down += frame_header(text.len()) + text.len() as u64;
                    return serde_json::from_str(text.as_str()).expect("JSON");
                }
                WsMessage::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
    }

    async fn call(&mut self, request: Value) -> Value {
        let id = self.send(request).await;
        loop {
            let answer = self.receive().await;
            if answer["id"] == id {
                return answer;
            }
        }
    }

    /// The socket bytes of one request and its answer.
    async fn measure(&mut self, request: Value) -> (u64, Value) {
        let before = self.up + self.down;
        let answer = self.call(request).await;
        (self.up + self.down - before, answer)
    }
}

async fn server(dir: &std::path::Path) -> corvid_server::RunningServer {
    let mut config = corvid_server::Config::ephemeral(dir);
    config.log.level = "warn".into();
    config.limits.requests_per_second = 1_000_000;
    config.limits.request_burst = 1_000_000;
    corvid_server::start(config).await.expect("server")
}

/// The bytes of every operation of `case`, second pass, as `(operation, bytes)`.
async fn bytes(case: &Case) -> Vec<(String, u64)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let addr = server.http_addr().expect("http");
    let mut sender = Ws::open(addr).await;
    let mut receiver = Ws::open(addr).await;
    for seed in 0..2 * case.page {
        sender
            .call(
                json!({"op": "create_account", "username": name(case.name_len, 1000 + seed),
                         "display_name": case.display_name, "password": case.password}),
            )
            .await;
    }
    let mut rows = Vec::new();
    for pass in 0..2 {
        let from = name(case.name_len, 10 * pass);
        let to = name(case.name_len, 10 * pass + 1);
        let mut pass_rows = Vec::new();
        let mut row = |operation: &str, bytes: u64| pass_rows.push((operation.to_string(), bytes));
        row("Ping", sender.measure(json!({"op": "ping"})).await.0);
        for user in [&from, &to] {
            let (bytes, _) = sender
                .measure(json!({"op": "create_account", "username": user,
                                "display_name": case.display_name, "password": case.password}))
                .await;
            if user == &from {
                row("CreateAccount", bytes);
            }
        }
        let (bytes, login) = sender
            .measure(json!({"op": "login", "username": from, "password": case.password}))
            .await;
        row("Login", bytes);
        let token = login["result"]["token"].clone();
        let theirs = receiver
            .call(json!({"op": "login", "username": to, "password": case.password}))
            .await["result"]["token"]
            .clone();
        let (bytes, _) = sender
            .measure(json!({"op": "list_accounts", "token": token, "pattern": "u1*", "limit": case.page}))
            .await;
        row("ListAccounts", bytes);
        // Pushed events go to a WebSocket of their own, so that none lands in the bytes of
        // the receiver's requests.
        let mut listener = Ws::open(addr).await;
        listener
            .call(json!({"op": "subscribe", "token": theirs, "from": "now"}))
            .await;
        let mut ids = Vec::new();
        for n in 0..case.page {
            let before = listener.down;
            let (bytes, sent) = sender
                .measure(
                    json!({"op": "send", "token": token, "to": to, "text": case.text,
                                "client_id": pass * 1000 + n + 1}),
                )
                .await;
            ids.push(sent["result"]["message"]["id"].as_u64().expect("id"));
            let event = listener.receive().await;
            assert_eq!(event["event"]["type"], "message");
            if n == 0 {
                row("Send", bytes);
                row("Message event (pushed)", listener.down - before);
            }
        }
        let (bytes, _) = sender
            .measure(json!({"op": "send", "token": token, "to": "nobody", "text": case.text, "client_id": 99_999}))
            .await;
        row("Send → unknown_recipient", bytes);
        let (bytes, _) = receiver
            .measure(json!({"op": "fetch_unread", "token": theirs, "limit": case.page}))
            .await;
        row("FetchUnread", bytes);
        let (bytes, _) = receiver
            .measure(json!({"op": "history", "token": theirs, "with": from, "limit": case.page}))
            .await;
        row("History", bytes);
        let many: Vec<u64> = (0..case.ids as u64).map(|i| ids[0] + i).collect();
        let (bytes, _) = receiver
            .measure(json!({"op": "mark_read", "token": theirs, "ids": many}))
            .await;
        row("MarkRead", bytes);
        let (bytes, _) = receiver
            .measure(json!({"op": "delete_messages", "token": theirs, "ids": many}))
            .await;
        row("DeleteMessages", bytes);
        let (bytes, _) = sender
            .measure(json!({"op": "logout", "token": token}))
            .await;
        row("Logout", bytes);
        let (bytes, _) = receiver
            .measure(json!({"op": "delete_account", "token": theirs, "password": case.password, "force": true}))
            .await;
        row("DeleteAccount", bytes);
        rows = pass_rows;
    }
    server.shutdown().await.expect("shutdown");
    rows
}

struct Speed {
    ping_p50: Duration,
    ping_p99: Duration,
    send_p50: Duration,
    send_p99: Duration,
    ping_rate: f64,
    send_rate: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn speed() -> Speed {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let mut ws = Ws::open(server.http_addr().expect("http")).await;
    ws.call(json!({"op": "create_account", "username": "alice", "password": PASSWORD}))
        .await;
    ws.call(json!({"op": "create_account", "username": "bob", "password": PASSWORD}))
        .await;
    let token = ws
        .call(json!({"op": "login", "username": "alice", "password": PASSWORD}))
        .await["result"]["token"]
        .clone();
    let mut pings = Vec::with_capacity(SEQUENTIAL_PINGS);
    for _ in 0..SEQUENTIAL_PINGS {
        let start = Instant::now();
        ws.call(json!({"op": "ping"})).await;
        pings.push(start.elapsed());
    }
    let mut sends = Vec::with_capacity(SEQUENTIAL_SENDS);
    let mut client_id = 0u64;
    for _ in 0..SEQUENTIAL_SENDS {
        client_id += 1;
        let start = Instant::now();
        ws.call(json!({"op": "send", "token": token, "to": "bob", "text": "lunch at noon? the usual place", "client_id": client_id}))
            .await;
        sends.push(start.elapsed());
    }
    pings.sort();
    sends.sort();
    let ping_rate = throughput(&mut ws, |_| json!({"op": "ping"})).await;
    let send_rate = throughput(&mut ws, |n| {
        json!({"op": "send", "token": token, "to": "bob", "text": "lunch at noon? the usual place", "client_id": 1_000_000 + n})
    })
    .await;
    server.shutdown().await.expect("shutdown");
    Speed {
        ping_p50: percentile(&pings, 0.5),
        ping_p99: percentile(&pings, 0.99),
        send_p50: percentile(&sends, 0.5),
        send_p99: percentile(&sends, 0.99),
        ping_rate,
        send_rate,
    }
}

/// Answers a second with `CONCURRENCY` requests kept in flight on one WebSocket.
async fn throughput(ws: &mut Ws, request: impl Fn(u64) -> Value) -> f64 {
    let mut sent = 0u64;
    for _ in 0..CONCURRENCY {
        ws.send(request(sent)).await;
        sent += 1;
    }
    let start = Instant::now();
    let mut answered = 0u64;
    while start.elapsed() < THROUGHPUT_TIME {
        let answer = ws.receive().await;
        assert!(answer.get("result").is_some(), "{answer}");
        answered += 1;
        ws.send(request(sent)).await;
        sent += 1;
    }
    let rate = answered as f64 / start.elapsed().as_secs_f64();
    for _ in answered..sent {
        ws.receive().await;
    }
    rate
}

fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let cases = cases();
    println!("| operation | case | web (JSON over WebSocket), socket |");
    println!("| --- | --- | ---: |");
    for case in &cases {
        for (operation, bytes) in bytes(case).await {
            println!("| {operation} | {} | {bytes} |", case.label);
        }
    }
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        runs.push(speed().await);
    }
    let micros = |pick: fn(&Speed) -> Duration| {
        median(runs.iter().map(|s| pick(s).as_micros()).collect::<Vec<_>>())
    };
    let rate = |pick: fn(&Speed) -> f64| median(runs.iter().map(pick).collect::<Vec<_>>());
    println!();
    println!("| measure | web |");
    println!("| --- | ---: |");
    println!("| Ping latency, median | {} µs |", micros(|s| s.ping_p50));
    println!(
        "| Ping latency, 99th percentile | {} µs |",
        micros(|s| s.ping_p99)
    );
    println!("| Send latency, median | {} µs |", micros(|s| s.send_p50));
    println!(
        "| Send latency, 99th percentile | {} µs |",
        micros(|s| s.send_p99)
    );
    println!("| Ping throughput | {:.0} /s |", rate(|s| s.ping_rate));
    println!(
        "| Send throughput (durable) | {:.0} /s |",
        rate(|s| s.send_rate)
    );
}
