//! Hostile HTTP/2 clients against the gRPC listener, each on one connection, while a
//! second client measures its own latency. Prints, per attack, the server's resident
//! memory and the other client's p99; docs/benchmarks.md records the figures.
//!
//! ```text
//! cargo run --release -p corvid-server --example h2_attacks            # every attack
//! cargo run --release -p corvid-server --example h2_attacks -- unread  # one of them
//! ```
//!
//! The server runs in a child process (this program, started again with `--serve`) with
//! the default configuration, so its memory is measured apart from the attacker's. The
//! attacks:
//! - `unread`: History pages of 100 × 4 KiB asked on a connection whose stream window is
//!   0, at 1,500 requests per second (under the default rate limit), answers never read.
//! - `streams`: as many never-finished request streams as the server lets one
//!   connection open.
//! - `bodies`: four connections with 64 streams each, every stream sending ≈ 1 MiB of a
//!   request body and never finishing it.
//! - `flood`: reflection requests, then undecodable requests, as fast as one connection
//!   gets answers; counts answers that were served rather than refused.
//!
//! The other client pings over its own connection every 10 ms throughout.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::net::TcpStream;

use corvid_grpc::pb;
use corvid_grpc::pb::chat_client::ChatClient;

const PASSWORD: &str = "correct horse battery";
const ATTACK_TIME: Duration = Duration::from_secs(6);
const UNREAD_RATE: u32 = 1_500;
const MAX_STREAMS: usize = 600_000;
const BODY_CONNECTIONS: usize = 4;
const BODY_STREAMS: usize = 64;
const BODY_BYTES: usize = 1_000_000;
const FLOOD_TIME: Duration = Duration::from_secs(3);
const FLOOD_CONCURRENCY: usize = 32;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        return serve_child();
    }
    let which = args.first().cloned().unwrap_or_else(|| "all".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let attacks: &[&str] = match which.as_str() {
        "all" => &["unread", "streams", "bodies", "flood"],
        "unread" => &["unread"],
        "streams" => &["streams"],
        "bodies" => &["bodies"],
        "flood" => &["flood"],
        other => anyhow::bail!("unknown attack `{other}`: unread, streams, bodies, flood or all"),
    };
    println!("| attack | what the attacker got | server RSS before → peak (MB) | other client's ping p99 |");
    println!("|---|---|---|---|");
    for attack in attacks {
        runtime.block_on(run(attack))?;
    }
    Ok(())
}

/// The child: a server with the default limits on a free port, until stdin closes.
fn serve_child() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = corvid_server::Config::ephemeral(dir.path());
        config.log.level = "error".into();
        let server = corvid_server::start(config).await?;
        let address = server
            .grpc_addr()
            .ok_or_else(|| anyhow::anyhow!("no gRPC"))?;
        println!("grpc {address}");
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        server.shutdown().await
    })
}

struct Server {
    child: Child,
    address: SocketAddr,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("grpc ")
            .ok_or_else(|| anyhow::anyhow!("the server said `{line}`"))?
            .parse()?;
        Ok(Server { child, address })
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Samples the server's RSS every 50 ms and the other client's ping latency every 10 ms
/// until stopped.
struct Observer {
    stop: Arc<AtomicBool>,
    peak_kb: Arc<AtomicU64>,
    pings: tokio::task::JoinHandle<Vec<Duration>>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Observer {
    async fn start(server: &Server) -> anyhow::Result<Observer> {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kb = Arc::new(AtomicU64::new(0));
        let mut chat = ChatClient::connect(format!("http://{}", server.address)).await?;
        let pings = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let answered =
                        tokio::time::timeout(Duration::from_secs(5), chat.ping(pb::PingRequest {}))
                            .await;
                    latencies.push(match answered {
                        Ok(Ok(_)) => start.elapsed(),
                        _ => Duration::from_secs(5),
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                latencies
            }
        });
        let pid = server.child.id();
        let sampler = tokio::spawn({
            let stop = stop.clone();
            let peak_kb = peak_kb.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let status =
                        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    let kb = status
                        .lines()
                        .find_map(|line| line.strip_prefix("VmRSS:"))
                        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(0);
                    peak_kb.fetch_max(kb, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Ok(Observer {
            stop,
            peak_kb,
            pings,
            sampler,
        })
    }

    /// Peak RSS in MB and the ping p99.
    async fn finish(self) -> anyhow::Result<(f64, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = self.pings.await?;
        self.sampler.await?;
        latencies.sort();
        let p99 = latencies
            .get((latencies.len().saturating_sub(1)) * 99 / 100)
            .copied()
            .unwrap_or_default();
        Ok((self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0, p99))
    }
}

async fn run(attack: &str) -> anyhow::Result<()> {
    let server = Server::start()?;
    let history = match attack {
        "unread" => Some(prepare_history(server.address).await?),
        _ => None,
    };
    // Let the start settle before the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_mb();
    let observer = Observer::start(&server).await?;
    let outcome = match attack {
        "unread" => unread(server.address, history.unwrap_or_default()).await?,
        "streams" => streams(server.address).await?,
        "bodies" => bodies(server.address).await?,
        _ => flood(server.address).await?,
    };
    let (peak, p99) = observer.finish().await?;
    println!(
        "| {attack} | {outcome} | {before:.0} → {peak:.0} | {:.1} ms |",
        p99.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Alice and Bob with 100 messages of 4 KiB between them; Alice's History request.
async fn prepare_history(address: SocketAddr) -> anyhow::Result<Bytes> {
    let mut chat = ChatClient::connect(format!("http://{address}")).await?;
    for name in ["alice", "bob"] {
        chat.create_account(pb::CreateAccountRequest {
            username: name.into(),
            display_name: String::new(),
            password: PASSWORD.into(),
        })
        .await?;
    }
    let token = chat
        .login(pb::LoginRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner()
        .token;
    for i in 0..100u64 {
        chat.send(pb::SendRequest {
            token: token.clone(),
            to: "bob".into(),
            client_id: i + 1,
            text: "x".repeat(4096),
        })
        .await?;
    }
    let request = pb::HistoryRequest {
        token,
        with_user: "bob".into(),
        before: None,
        limit: Some(100),
    };
    Ok(grpc_frame(&request.encode_to_vec()))
}

/// One gRPC message: uncompressed flag, big-endian length, the bytes.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame.into()
}

fn post(address: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap_or_default()
}

/// An HTTP/2 connection; `closed` is set when the server ends it.
async fn connect(
    address: SocketAddr,
    builder: h2::client::Builder,
) -> anyhow::Result<(h2::client::SendRequest<Bytes>, Arc<AtomicBool>)> {
    let tcp = TcpStream::connect(address).await?;
    let (send, connection) = builder.handshake(tcp).await?;
    let closed = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let closed = closed.clone();
        async move {
            let _ = connection.await;
            closed.store(true, Ordering::Relaxed);
        }
    });
    Ok((send, closed))
}

/// Waits until the connection may open another stream, or the time is up.
async fn ready(
    send: h2::client::SendRequest<Bytes>,
    until: Instant,
) -> Option<h2::client::SendRequest<Bytes>> {
    tokio::time::timeout_at(until.into(), send.ready())
        .await
        .ok()?
        .ok()
}

async fn unread(address: SocketAddr, history: Bytes) -> anyhow::Result<String> {
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (mut send, closed) = connect(address, builder).await?;
    let start = Instant::now();
    let until = start + ATTACK_TIME;
    let mut open = Vec::new();
    let mut asked = 0u64;
    let mut interval = tokio::time::interval(Duration::from_secs(1) / UNREAD_RATE);
    while Instant::now() < until && !closed.load(Ordering::Relaxed) {
        interval.tick().await;
        let Some(ready_send) = ready(send, until).await else {
            break;
        };
        send = ready_send;
        let Ok((response, mut body)) =
            send.send_request(post(address, "/corvid.v1.Chat/History"), false)
        else {
            break;
        };
        if body.send_data(history.clone(), true).is_err() {
            break;
        }
        open.push(response);
        asked += 1;
    }
    let ended = if closed.load(Ordering::Relaxed) {
        format!(
            "connection closed after {:.1} s",
            start.elapsed().as_secs_f64()
        )
    } else {
        "connection open".into()
    };
    Ok(format!("{asked} pages asked, {ended}"))
}

async fn streams(address: SocketAddr) -> anyhow::Result<String> {
    let (mut send, closed) = connect(address, h2::client::Builder::new()).await?;
    let until = Instant::now() + ATTACK_TIME;
    let mut open = Vec::new();
    while open.len() < MAX_STREAMS && Instant::now() < until && !closed.load(Ordering::Relaxed) {
        let Some(ready_send) = ready(send, until).await else {
            break;
        };
        send = ready_send;
        match send.send_request(post(address, "/corvid.v1.Chat/Ping"), false) {
            Ok(stream) => open.push(stream),
            Err(_) => break,
        }
        if open.len() % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(format!("{} unfinished streams open", open.len()))
}

async fn bodies(address: SocketAddr) -> anyhow::Result<String> {
    let mut held = Vec::new();
    // A message header announcing a bit more than is sent, under the 1 MiB limit.
    let mut first = vec![0u8];
    first.extend_from_slice(&(BODY_BYTES as u32 + 1_000).to_be_bytes());
    first.extend(std::iter::repeat_n(0x55u8, BODY_BYTES - 5));
    let chunk = Bytes::from(first);
    let until = Instant::now() + ATTACK_TIME;
    let mut closed_connections = Vec::new();
    for _ in 0..BODY_CONNECTIONS {
        let (mut send, closed) = connect(address, h2::client::Builder::new()).await?;
        for _ in 0..BODY_STREAMS {
            let Some(ready_send) = ready(send, until).await else {
                break;
            };
            send = ready_send;
            let Ok((response, mut body)) =
                send.send_request(post(address, "/corvid.v1.Chat/Send"), false)
            else {
                break;
            };
            let _ = body.send_data(chunk.clone(), false);
            held.push((response, body));
        }
        closed_connections.push(closed);
    }
    tokio::time::sleep_until(until.into()).await;
    let closed = closed_connections
        .iter()
        .filter(|closed| closed.load(Ordering::Relaxed))
        .count();
    Ok(format!(
        "{} bodies of 1 MB started, {closed} of {BODY_CONNECTIONS} connections closed",
        held.len()
    ))
}

/// What one gRPC answer was.
enum Answer {
    Served,
    Refused,
    Broken,
}

async fn flood(address: SocketAddr) -> anyhow::Result<String> {
    let reflection = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let reflection = (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        grpc_frame(&reflection.encode_to_vec()),
    );
    let undecodable = ("/corvid.v1.Chat/Ping", grpc_frame(&[0xff, 0xff, 0xff]));
    let mut report = Vec::new();
    for (name, (path, body)) in [("reflection", reflection), ("undecodable", undecodable)] {
        let (send, _closed) = connect(address, h2::client::Builder::new()).await?;
        let served = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + FLOOD_TIME;
        let mut workers = Vec::new();
        for _ in 0..FLOOD_CONCURRENCY {
            let (send, body, served, refused) =
                (send.clone(), body.clone(), served.clone(), refused.clone());
            workers.push(tokio::spawn(async move {
                let mut send = send;
                while Instant::now() < until {
                    let Some(ready_send) = ready(send, until).await else {
                        break;
                    };
                    send = ready_send;
                    match ask(&mut send, address, path, body.clone()).await {
                        Answer::Served => served.fetch_add(1, Ordering::Relaxed),
                        Answer::Refused => refused.fetch_add(1, Ordering::Relaxed),
                        Answer::Broken => break,
                    };
                }
            }));
        }
        for worker in workers {
            let _ = worker.await;
        }
        let seconds = FLOOD_TIME.as_secs_f64();
        report.push(format!(
            "{name}: {:.0}/s served, {:.0}/s refused",
            served.load(Ordering::Relaxed) as f64 / seconds,
            refused.load(Ordering::Relaxed) as f64 / seconds
        ));
    }
    Ok(report.join("; "))
}

/// One request and its whole answer. "Refused" is the rate limit or the connection
/// limit; any other answer, even an error status, was served.
async fn ask(
    send: &mut h2::client::SendRequest<Bytes>,
    address: SocketAddr,
    path: &str,
    body: Bytes,
) -> Answer {
    let Ok((response, mut stream)) = send.send_request(post(address, path), false) else {
        return Answer::Broken;
    };
    if stream.send_data(body, true).is_err() {
        return Answer::Broken;
    }
    let Ok(response) = response.await else {
        return Answer::Broken;
    };
    let refused = |headers: &http::HeaderMap| {
        matches!(
            headers
                .get("corvid-error-code")
                .and_then(|v| v.to_str().ok()),
            Some("4") | Some("5")
        )
    };
    if refused(response.headers()) {
        return Answer::Refused;
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let Ok(data) = data else {
            return Answer::Broken;
        };
        let _ = body.flow_control().release_capacity(data.len());
    }
    match body.trailers().await {
        Ok(Some(trailers)) if refused(&trailers) => Answer::Refused,
        Ok(_) => Answer::Served,
        Err(_) => Answer::Broken,
    }
}
