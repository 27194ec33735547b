//! Request latency and throughput of the binary protocol and of gRPC, through the same
//! client library against the same server. Prints the Markdown table of docs/protocols.md.
//!
//! ```text
//! cargo run --release -p corvid-server --example protocol_speed
//! ```
//!
//! Each protocol gets a fresh in-process server (one process, so server and client share
//! the machine's cores, as they do on a laptop) and one `corvid_client::Client`:
//! sequential `Ping`s and `Send`s for latency, then many concurrent calls for a fixed
//! time for throughput. A `Send` is durable (fsync'd) before it is answered, so its
//! latency is mostly the disk's; `Ping` shows the protocol's own cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corvid_client::{Client, ClientConfig, Protocol};

const PASSWORD: &str = "correct horse battery";
const SEQUENTIAL_PINGS: usize = 5_000;
const SEQUENTIAL_SENDS: usize = 500;
const CONCURRENCY: usize = 64;
const THROUGHPUT_TIME: Duration = Duration::from_secs(5);
/// Each protocol is measured this many times, alternating; each cell is the median run.
const RUNS: usize = 3;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

#[derive(Clone, Copy)]
struct Results {
    ping: (Duration, Duration),
    send: (Duration, Duration),
    pings_per_sec: f64,
    sends_per_sec: f64,
}

async fn measure(transport: Protocol) -> Results {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = corvid_server::Config::ephemeral(dir.path());
    config.log.level = "warn".into();
    config.limits.requests_per_second = 1_000_000_000;
    config.limits.request_burst = 1_000_000_000;
    config.limits.max_in_flight = 1024;
    let server = corvid_server::start(config).await.expect("server");
    let address = match transport {
        Protocol::Wire => server.wire_addr(),
        Protocol::Grpc => server.grpc_addr().expect("grpc"),
    };
    let mut client_config = ClientConfig::new(&[address.to_string()]);
    client_config.transport = transport;
    let client = Client::connect_with(client_config).await.expect("connect");
    client.create_account("alice", "", PASSWORD).await.unwrap();
    client.create_account("bob", "", PASSWORD).await.unwrap();
    let token = client.login("alice", PASSWORD).await.unwrap().token;

    for _ in 0..200 {
        client.ping().await.unwrap();
    }
    let mut pings: Vec<Duration> = Vec::with_capacity(SEQUENTIAL_PINGS);
    for _ in 0..SEQUENTIAL_PINGS {
        let start = Instant::now();
        client.ping().await.unwrap();
        pings.push(start.elapsed());
    }
    pings.sort();
    let mut sends: Vec<Duration> = Vec::with_capacity(SEQUENTIAL_SENDS);
    for i in 0..SEQUENTIAL_SENDS {
        let start = Instant::now();
        client
            .send(token, "bob", "lunch at noon? the usual place", i as u64 + 1)
            .await
            .unwrap();
        sends.push(start.elapsed());
    }
    sends.sort();

    let pings_per_sec = throughput(
        &client,
        |client, _| async move { client.ping().await.is_ok() },
    )
    .await;
    let next_id = Arc::new(AtomicU64::new(1_000_000));
    let sends_per_sec = throughput(&client, move |client, _| {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        async move {
            client
                .send(token, "bob", "lunch at noon? the usual place", id)
                .await
                .is_ok()
        }
    })
    .await;
    drop(client);
    server.shutdown().await.expect("shutdown");
    Results {
        ping: (percentile(&pings, 0.5), percentile(&pings, 0.99)),
        send: (percentile(&sends, 0.5), percentile(&sends, 0.99)),
        pings_per_sec,
        sends_per_sec,
    }
}

/// Calls per second with `CONCURRENCY` tasks calling `call` back to back for
/// `THROUGHPUT_TIME`, on one client (one connection).
async fn throughput<F, Fut>(client: &Client, call: F) -> f64
where
    F: Fn(Client, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + THROUGHPUT_TIME;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..CONCURRENCY {
        let (client, call, done) = (client.clone(), call.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if call(client.clone(), task).await {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The median of each measure over several runs.
fn median(runs: &[Results]) -> Results {
    fn mid<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
        values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
        values[values.len() / 2]
    }
    Results {
        ping: (
            mid(runs.iter().map(|r| r.ping.0).collect()),
            mid(runs.iter().map(|r| r.ping.1).collect()),
        ),
        send: (
            mid(runs.iter().map(|r| r.send.0).collect()),
            mid(runs.iter().map(|r| r.send.1).collect()),
        ),
        pings_per_sec: mid(runs.iter().map(|r| r.pings_per_sec).collect()),
        sends_per_sec: mid(runs.iter().map(|r| r.sends_per_sec).collect()),
    }
}

#[tokio::main]
async fn main() {
    let (mut wire_runs, mut grpc_runs) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        wire_runs.push(measure(Protocol::Wire).await);
        grpc_runs.push(measure(Protocol::Grpc).await);
    }
    let (wire, grpc) = (median(&wire_runs), median(&grpc_runs));
    println!("## Latency and throughput\n");
    println!(
        "One client, one connection; latency over {SEQUENTIAL_PINGS} sequential pings and \
         {SEQUENTIAL_SENDS} sequential sends; throughput with {CONCURRENCY} concurrent calls \
         for {} s. Each cell is the median of {RUNS} runs.\n",
        THROUGHPUT_TIME.as_secs()
    );
    println!("| measure | binary protocol | gRPC |");
    println!("| --- | ---: | ---: |");
    let rows = [
        ("Ping latency, median", wire.ping.0, grpc.ping.0),
        ("Ping latency, 99th percentile", wire.ping.1, grpc.ping.1),
        ("Send latency, median", wire.send.0, grpc.send.0),
        ("Send latency, 99th percentile", wire.send.1, grpc.send.1),
    ];
    for (label, wire, grpc) in rows {
        println!("| {label} | {} | {} |", micros(wire), micros(grpc));
    }
    println!(
        "| Ping throughput | {:.0} /s | {:.0} /s |",
        wire.pings_per_sec, grpc.pings_per_sec
    );
    println!(
        "| Send throughput (durable) | {:.0} /s | {:.0} /s |",
        wire.sends_per_sec, grpc.sends_per_sec
    );
}
