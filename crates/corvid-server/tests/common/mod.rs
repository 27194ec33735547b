//! Set-up the server's integration tests share: a server on free loopback ports, waiting
//! for a state with a deadline, what a connection or a failed gRPC call shows, and what
//! the admin listener answers.

#![allow(dead_code)]

use std::time::Duration;

use corvid_core::ErrorCode;
use corvid_grpc::status;
use corvid_server::{Config, RunningServer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::Status;

pub const PASSWORD: &str = "correct horse battery";

/// Bounds every wait for a state in [`eventually`] and [`closed_by_server`].
const DEADLINE: Duration = Duration::from_secs(20);

/// A server in `dir` on free loopback ports, with `tune` applied to its configuration.
pub async fn start(dir: &std::path::Path, tune: impl FnOnce(&mut Config)) -> RunningServer {
    let mut config = Config::ephemeral(dir);
    tune(&mut config);
    corvid_server::start(config).await.expect("server starts")
}

/// Polls `condition` until it holds, failing the test at the deadline.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until the server closes the connection; fails the test if it stays open.
pub async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection is still open"),
        }
    }
}

/// The Corvid code a gRPC status carries, checked against its gRPC code.
pub fn status_code(status: &Status) -> ErrorCode {
    let error =
        status::from_status(status).unwrap_or_else(|| panic!("no Corvid error in {status:?}"));
    assert_eq!(status.code(), status::grpc_code(error.code), "{status:?}");
    error.code
}

/// The Corvid code of a call that must have failed.
pub fn corvid_code<T: std::fmt::Debug>(result: Result<T, Status>) -> ErrorCode {
    status_code(&result.expect_err("an error"))
}

/// One HTTP/1.1 GET to an admin listener: the status code and the body.
pub async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
        .await
        .expect("the admin listener answers in time")
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole HTTP answer");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (code, body.to_string())
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest),
                None => (series, ""),
            };
            (series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// The admin listener's `/metrics` text.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let (code, text) = admin_get(addr, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    text
}
