//! The gRPC listener against clients that misuse HTTP/2, spoken to with raw HTTP/2 (the
//! `h2` crate, or bare frames) where the generated client cannot express the misuse:
//! answers never read, unfinished bodies, many streams, requests no handler sees, and
//! streams the server must reset.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use corvid_core::ErrorCode;
use corvid_grpc::pb::chat_client::ChatClient;
use corvid_grpc::{pb, status};
use corvid_server::RunningServer;

use common::{eventually, start, status_code};

/// How long a test waits for something that must happen; never reached when it works.
const WAIT: Duration = Duration::from_secs(20);

fn address(server: &RunningServer) -> SocketAddr {
    server.grpc_addr().expect("gRPC is on")
}

/// One gRPC message: uncompressed flag, big-endian length, the bytes.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = vec![0];
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
        .unwrap()
}

/// A raw HTTP/2 connection; the flag is set when the server has ended it.
async fn raw_connection(
    address: SocketAddr,
    builder: h2::client::Builder,
) -> (h2::client::SendRequest<Bytes>, Arc<AtomicBool>) {
    let tcp = TcpStream::connect(address).await.unwrap();
    let (send, connection) = builder.handshake(tcp).await.unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let closed = closed.clone();
        async move {
            let _ = connection.await;
            closed.store(true, Ordering::SeqCst);
        }
    });
    (send, closed)
}

/// Sends one whole request and returns the Corvid error its answer carries, from the
/// headers of a trailers-only answer or from the trailers.
async fn raw_call(
    send: &mut h2::client::SendRequest<Bytes>,
    address: SocketAddr,
    path: &str,
    body: Bytes,
) -> Option<Status> {
    let ready = send.clone().ready().await.unwrap();
    *send = ready;
    let (response, mut stream) = send.send_request(post(address, path), false).unwrap();
    stream.send_data(body, true).unwrap();
    let response = tokio::time::timeout(WAIT, response)
        .await
        .expect("an answer in time")
        .unwrap();
    if let Some(status) = Status::from_header_map(response.headers()) {
        return (status.code() != Code::Ok).then(|| status_with_metadata(response.headers()));
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    let status = Status::from_header_map(&trailers).expect("a grpc-status");
    (status.code() != Code::Ok).then(|| status_with_metadata(&trailers))
}

fn status_with_metadata(headers: &http::HeaderMap) -> Status {
    let status = Status::from_header_map(headers).unwrap();
    Status::with_metadata(
        status.code(),
        status.message(),
        tonic::metadata::MetadataMap::from_headers(headers.clone()),
    )
}

#[tokio::test]
async fn a_client_that_takes_no_answer_is_disconnected_after_the_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| config.limits.write_timeout_secs = 1).await;
    let address = address(&server);
    // A stream window of 0: the server may send headers, never data.
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (send, closed) = raw_connection(address, builder).await;
    let mut send = send.ready().await.unwrap();
    let (response, mut body) = send
        .send_request(post(address, "/corvid.v1.Chat/Ping"), false)
        .unwrap();
    body.send_data(grpc_frame(&pb::PingRequest {}.encode_to_vec()), true)
        .unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the call was answered");
    eventually("the connection closes", || closed.load(Ordering::SeqCst)).await;

    // Others are unaffected.
    let mut chat = ChatClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    chat.ping(pb::PingRequest {}).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_server_advertises_the_configured_stream_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| config.limits.grpc_max_streams = 7).await;
    let address = address(&server);
    let (mut send, _closed) = raw_connection(address, h2::client::Builder::new()).await;
    // One call, so the server's SETTINGS have been read.
    let ping = grpc_frame(&pb::PingRequest {}.encode_to_vec());
    assert!(raw_call(&mut send, address, "/corvid.v1.Chat/Ping", ping)
        .await
        .is_none());
    assert_eq!(send.current_max_send_streams(), 7);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_request_body_that_never_finishes_fails_after_the_body_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.limits.grpc_body_timeout_secs = 1
    })
    .await;
    let address = address(&server);
    let (send, _closed) = raw_connection(address, h2::client::Builder::new()).await;
    let mut send = send.ready().await.unwrap();
    let (response, mut body) = send
        .send_request(post(address, "/corvid.v1.Chat/Send"), false)
        .unwrap();
    // A message header announcing 100 bytes, then 10 of them, and nothing more.
    let mut partial = vec![0, 0, 0, 0, 100];
    partial.extend_from_slice(&[0x55; 10]);
    body.send_data(partial.into(), false).unwrap();
    let response = tokio::time::timeout(WAIT, response)
        .await
        .expect("an answer in time")
        .unwrap();
    let status = status_with_metadata(response.headers());
    assert_eq!(status_code(&status), ErrorCode::Malformed);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn undecodable_and_reflection_requests_count_against_the_rate_limit() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.limits.requests_per_second = 1;
        config.limits.request_burst = 3;
        config.limits.max_connections = 1;
    })
    .await;
    let address = address(&server);

    // Undecodable requests never reach a handler, and still count.
    let (mut send, _closed) = raw_connection(address, h2::client::Builder::new()).await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let undecodable = grpc_frame(&[0xff, 0xff, 0xff]);
        let status = raw_call(&mut send, address, "/corvid.v1.Chat/Ping", undecodable)
            .await
            .expect("an error");
        codes.push(status_code(&status));
    }
    assert!(codes.contains(&ErrorCode::RateLimited), "{codes:?}");
    drop(send);

    // Reflection too, on a connection of its own (each connection has its own rate).
    let mut refused = None;
    for _ in 0..100 {
        let channel = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut reflection = ServerReflectionClient::new(channel);
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            match reflection
                .server_reflection_info(futures::stream::iter([request]))
                .await
            {
                Ok(answers) => {
                    let answers: Vec<_> = answers.into_inner().collect().await;
                    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
                }
                Err(status) => statuses.push(status),
            }
        }
        // The first connection may still hold the only slot while it closes; then
        // every request is refused with `too_many_connections`: try again.
        let codes: Vec<_> = statuses.iter().map(status_code).collect();
        if codes.contains(&ErrorCode::TooManyConnections) {
            assert!(codes.iter().all(|c| *c == ErrorCode::TooManyConnections));
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        refused = Some(codes);
        break;
    }
    let codes = refused.expect("a connection with a slot");
    assert!(codes.contains(&ErrorCode::RateLimited), "{codes:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflection_gets_nothing_on_a_connection_without_a_slot() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| config.limits.max_connections = 1).await;
    let address = address(&server);
    let mut first = ChatClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    first.ping(pb::PingRequest {}).await.unwrap();
    // The front door closes a connection it has no slot for at once: the reflection
    // call gets no answer at all, only a closed connection.
    let Ok(channel) = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
    else {
        server.shutdown().await.unwrap();
        return;
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let refused = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect_err("no slot, no answer");
    assert!(
        status::from_status(&refused).is_none(),
        "answered by the service instead of closed: {refused:?}"
    );
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "the connection was closed: {refused:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversize_and_undecodable_requests_get_corvid_errors_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let address = address(&server);
    let mut chat = ChatClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let oversize = chat
        .send(pb::SendRequest {
            token: vec![0; 16],
            to: "bob".into(),
            client_id: 1,
            text: "x".repeat(2 << 20),
        })
        .await
        .expect_err("over the size limit");
    assert_eq!(status_code(&oversize), ErrorCode::FrameTooLarge);

    let (mut send, _closed) = raw_connection(address, h2::client::Builder::new()).await;
    let undecodable = grpc_frame(&[0xff, 0xff, 0xff]);
    let status = raw_call(&mut send, address, "/corvid.v1.Chat/Ping", undecodable)
        .await
        .expect("an error");
    assert_eq!(status_code(&status), ErrorCode::Malformed);
    server.shutdown().await.unwrap();
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn a_client_that_makes_the_server_reset_streams_is_sent_away() {
    const HEADERS: u8 = 0x1;
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut tcp = TcpStream::connect(address(&server)).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(SETTINGS, 0, 0, &[]));
    // Each request carries `connection: x`, which HTTP/2 forbids: the server resets the
    // stream itself (PROTOCOL_ERROR).
    let mut block = vec![0x83, 0x86, 0x84, 0x00, 10];
    block.extend_from_slice(b"connection");
    block.extend_from_slice(&[1, b'x']);
    for stream in 0..2_000u32 {
        out.extend(h2_frame(HEADERS, 0x5, stream * 2 + 1, &block));
    }
    let (mut reader, mut writer) = tcp.split();
    let writing = async {
        // The server may close the connection before all is written.
        let _ = writer.write_all(&out).await;
    };
    let reading = async {
        let mut input = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = reader.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            input.extend_from_slice(&buf[..n]);
            // Walk the frames received so far, looking for GOAWAY.
            let mut at = 0;
            while input.len() >= at + 9 {
                let length = u32::from_be_bytes([0, input[at], input[at + 1], input[at + 2]]);
                let end = at + 9 + length as usize;
                if input.len() < end {
                    break;
                }
                if input[at + 3] == GOAWAY {
                    let code = &input[at + 13..at + 17];
                    return Some(u32::from_be_bytes(code.try_into().unwrap()));
                }
                at = end;
            }
        }
    };
    let (_, goaway) = tokio::time::timeout(WAIT, async { tokio::join!(writing, reading) })
        .await
        .expect("the server ends the connection in time");
    assert_eq!(goaway, Some(ENHANCE_YOUR_CALM));
    drop(tcp);
    server.shutdown().await.unwrap();
}
