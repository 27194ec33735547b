//! What each protocol costs on the wire: bytes per operation, typical and worst case, and
//! the lines of code of each frontend. Prints the Markdown tables of docs/protocols.md.
//!
//! ```text
//! cargo run --release -p corvid-server --example protocol_costs
//! ```
//!
//! For each protocol it starts a fresh in-process server and puts a byte-counting TCP
//! proxy between it and each client (`corvid_client::Client`, the library the CLI uses).
//! Every operation runs once to warm the connection (TCP, HTTP/2 settings, HPACK header
//! tables), then again with inputs of the same sizes, and that second run is counted:
//! request plus answer, as read from the sockets. The columns "binary frame" and
//! "protobuf alone" are the encoded sizes of the same request and answer, computed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use corvid_client::{Client, ClientConfig, Protocol};
use corvid_core::{ApiError, Event, MessageId, PatternSyntax, Request, Response};
use corvid_grpc::convert::{Call, RpcResponse, StreamItem};
use corvid_grpc::pb;
use corvid_wire::Frame;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "common/cases.rs"]
mod cases;
use cases::{cases, name, Case};

/// Bytes through one proxy, client to server and back.
#[derive(Clone, Default)]
struct Counters {
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Counters {
    fn total(&self) -> u64 {
        self.up.load(Ordering::SeqCst) + self.down.load(Ordering::SeqCst)
    }

    /// Waits until nothing has moved for a while, so stragglers (HTTP/2 window updates)
    /// are counted with the operation that caused them.
    async fn settled(&self) -> u64 {
        let mut last = self.total();
        loop {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let now = self.total();
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// A TCP proxy to `upstream` that counts every byte it forwards.
async fn counting_proxy(upstream: SocketAddr) -> (SocketAddr, Counters) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let counters = Counters::default();
    let shared = counters.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, shared.up.clone()));
            tokio::spawn(pump(server_read, client_write, shared.down.clone()));
        }
    });
    (address, counters)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 || to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        count.fetch_add(read as u64, Ordering::SeqCst);
    }
    let _ = to.shutdown().await;
}

/// One measured operation: its name, the binary protocol's request and answer frames,
/// the protobuf request and answer messages alone, and the bytes on the socket.
struct Row {
    operation: String,
    frame: usize,
    protobuf: usize,
    socket: u64,
}

/// What answered a request.
enum Answer {
    Response(Response),
    Error(ApiError),
    /// Nothing was asked: a pushed event.
    Event(Event),
}

impl Row {
    fn new(operation: &str, request: Option<&Request>, answer: &Answer, socket: u64) -> Row {
        let (mut frame, mut protobuf) = match request {
            Some(request) => (
                frame_len(&Frame::Request {
                    id: 1,
                    request: request.clone(),
                }),
                Call::from(request.clone()).encode_to_vec().len(),
            ),
            None => (0, 0),
        };
        match answer {
            Answer::Response(response) => {
                frame += frame_len(&Frame::Response {
                    id: 1,
                    response: response.clone(),
                });
                protobuf += protobuf_answer_len(response);
            }
            // A gRPC error has no message body: it is all in the trailers.
            Answer::Error(error) => {
                frame += frame_len(&Frame::Error {
                    id: 1,
                    error: error.clone(),
                });
            }
            Answer::Event(event) => {
                frame += frame_len(&Frame::Event(event.clone()));
                protobuf +=
                    pb::SubscribeEvent::from(StreamItem::Event(event.clone())).encoded_len();
            }
        }
        Row {
            operation: operation.to_string(),
            frame,
            protobuf,
            socket,
        }
    }
}

fn frame_len(frame: &Frame) -> usize {
    let mut bytes = BytesMut::new();
    corvid_wire::encode(frame, &mut bytes).expect("encodable");
    bytes.len()
}

fn protobuf_answer_len(response: &Response) -> usize {
    fn len<M: RpcResponse + prost::Message>(response: &Response) -> usize {
        M::from_response(response.clone()).map_or(0, |m| m.encoded_len())
    }
    match response {
        Response::Pong => len::<pb::PingResponse>(response),
        Response::AccountCreated { .. } => len::<pb::CreateAccountResponse>(response),
        Response::LoggedIn { .. } => len::<pb::LoginResponse>(response),
        Response::LoggedOut => len::<pb::LogoutResponse>(response),
        Response::AccountDeleted => len::<pb::DeleteAccountResponse>(response),
        Response::Accounts(_) => len::<pb::ListAccountsResponse>(response),
        Response::Sent { .. } => len::<pb::SendResponse>(response),
        Response::Messages { .. } => len::<pb::FetchUnreadResponse>(response),
        Response::MarkedRead { .. } => len::<pb::MarkReadResponse>(response),
        Response::History(_) => len::<pb::HistoryResponse>(response),
        Response::MessagesDeleted { .. } => len::<pb::DeleteMessagesResponse>(response),
        Response::Subscribed { last_id } => {
            pb::SubscribeEvent::from(StreamItem::Subscribed { last_id: *last_id }).encoded_len()
        }
    }
}

/// A client of `transport` through its own counting proxy.
async fn client(transport: Protocol, upstream: SocketAddr) -> (Client, Counters) {
    let (address, counters) = counting_proxy(upstream).await;
    let mut config = ClientConfig::new(&[address.to_string()]);
    config.transport = transport;
    config.max_attempts = 1;
    let client = Client::connect_with(config).await.expect("connect");
    (client, counters)
}

/// Runs every operation of `case` over `transport` against a fresh server, twice, and
/// returns the second run's measurements.
async fn run(transport: Protocol, case: &Case) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = corvid_server::Config::ephemeral(dir.path());
    config.log.level = "warn".into();
    config.limits.requests_per_second = 1_000_000;
    config.limits.request_burst = 1_000_000;
    let server = corvid_server::start(config).await.expect("server");
    let upstream = match transport {
        Protocol::Wire => server.wire_addr(),
        Protocol::Grpc => server.grpc_addr().expect("grpc"),
    };
    let (sender, counters) = client(transport, upstream).await;
    let (receiver, receiver_counters) = client(transport, upstream).await;

    // Accounts to list, and the pair that talks: the same sizes in both passes.
    for seed in 0..2 * case.page {
        let _ = sender
            .create_account(
                &name(case.name_len, 1000 + seed),
                &case.display_name,
                &case.password,
            )
            .await;
    }
    let mut rows = Vec::new();
    for pass in 0..2 {
        let from = name(case.name_len, 10 * pass);
        let to = name(case.name_len, 10 * pass + 1);
        let measure = |operation: &str, request: Request| {
            let (sender, counters) = (&sender, &counters);
            let operation = operation.to_string();
            async move {
                let before = counters.settled().await;
                let answer = sender.call(request.clone()).await;
                let after = counters.settled().await;
                let response = match answer {
                    Ok(response) => response,
                    Err(error) => panic!("{operation}: {error}"),
                };
                let row = Row::new(
                    &operation,
                    Some(&request),
                    &Answer::Response(response.clone()),
                    after - before,
                );
                (row, response)
            }
        };
        let mut pass_rows = Vec::new();
        pass_rows.push(measure("Ping", Request::Ping).await.0);
        for user in [&from, &to] {
            let create = Request::CreateAccount {
                username: user.clone(),
                display_name: case.display_name.clone(),
                password: case.password.clone(),
            };
            let row = measure("CreateAccount", create).await.0;
            if user == &from {
                pass_rows.push(row);
            }
        }
        let login = |user: &String| Request::Login {
            username: user.clone(),
            password: case.password.clone(),
        };
        let (row, response) = measure("Login", login(&from)).await;
        let Response::LoggedIn { token, .. } = response else {
            panic!("login")
        };
        pass_rows.push(row);
        let Ok(Response::LoggedIn {
            token: their_token, ..
        }) = receiver.call(login(&to)).await
        else {
            panic!("login")
        };
        let list = Request::ListAccounts {
            token,
            pattern: "u1*".into(),
            syntax: PatternSyntax::Glob,
            limit: Some(case.page as u32),
            cursor: None,
        };
        pass_rows.push(measure("ListAccounts", list).await.0);

        // Pushed events, read off the receiver's socket.
        let mut events = receiver
            .subscribe(their_token, None)
            .await
            .expect("subscribe")
            .events;
        let send = |client_id| Request::Send {
            token,
            to: to.clone(),
            text: case.text.clone(),
            client_id,
        };
        let before_push = receiver_counters.settled().await;
        pass_rows.push(measure("Send", send(1)).await.0);
        let pushed = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        let Ok(Some(Ok(pushed @ Event::Message(_)))) = pushed else {
            panic!("no push: {pushed:?}");
        };
        let push_bytes = receiver_counters.settled().await - before_push;
        pass_rows.push(Row::new(
            "Message event (pushed)",
            None,
            &Answer::Event(pushed),
            push_bytes,
        ));
        for client_id in 2..=case.page as u64 {
            sender.call(send(client_id)).await.expect("send");
        }
        // The receiver's events carry receipts too; they are not measured here.
        drop(events);
        let unknown = Request::Send {
            token,
            to: name(case.name_len, 9999),
            text: case.text.clone(),
            client_id: 0,
        };
        let before = counters.settled().await;
        let error = sender
            .call(unknown.clone())
            .await
            .expect_err("unknown recipient");
        let error_bytes = counters.settled().await - before;
        let corvid_client::ClientError::Api(error) = error else {
            panic!("{error}");
        };
        pass_rows.push(Row::new(
            "Send → unknown_recipient",
            Some(&unknown),
            &Answer::Error(error),
            error_bytes,
        ));

        let fetch = Request::FetchUnread {
            token: their_token,
            limit: Some(case.page as u32),
        };
        let before = receiver_counters.settled().await;
        let fetched = receiver.call(fetch.clone()).await.expect("fetch");
        let fetch_bytes = receiver_counters.settled().await - before;
        pass_rows.push(Row::new(
            "FetchUnread",
            Some(&fetch),
            &Answer::Response(fetched.clone()),
            fetch_bytes,
        ));
        let history = Request::History {
            token,
            with: to.clone(),
            before: None,
            limit: Some(case.page as u32),
        };
        pass_rows.push(measure("History", history).await.0);
        let first_id = match &fetched {
            Response::Messages { messages } => messages[0].id.0,
            other => panic!("{other:?}"),
        };
        let ids: Vec<MessageId> = (0..case.ids as u64)
            .map(|i| MessageId(first_id + i))
            .collect();
        let mark = Request::MarkRead {
            token: their_token,
            ids: ids.clone(),
        };
        let before = receiver_counters.settled().await;
        let marked = receiver.call(mark.clone()).await.expect("mark read");
        let mark_bytes = receiver_counters.settled().await - before;
        pass_rows.push(Row::new(
            "MarkRead",
            Some(&mark),
            &Answer::Response(marked),
            mark_bytes,
        ));
        let delete = Request::DeleteMessages { token, ids };
        pass_rows.push(measure("DeleteMessages", delete).await.0);
        pass_rows.push(measure("Logout", Request::Logout { token }).await.0);
        let Ok(Response::LoggedIn { token, .. }) = sender.call(login(&from)).await else {
            panic!("login")
        };
        let delete_account = Request::DeleteAccount {
            token,
            password: case.password.clone(),
            force: true,
        };
        pass_rows.push(measure("DeleteAccount", delete_account).await.0);

        if pass == 1 {
            rows = pass_rows;
        }
    }
    server.shutdown().await.expect("shutdown");
    rows
}

/// Non-blank lines that are not comments, up to a file's `#[cfg(test)]`.
fn code_lines(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .take_while(|line| *line != "#[cfg(test)]")
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .count()
}

fn code_size(files: &[&str]) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    files.iter().map(|file| code_lines(&root.join(file))).sum()
}

fn rust_files(dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<String> = std::fs::read_dir(root.join(dir))
        .expect("source dir")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".rs"))
        .map(|name| format!("{dir}/{name}"))
        .collect();
    files.sort();
    files
}

#[tokio::main]
async fn main() {
    println!("## Bytes per operation\n");
    println!("Request plus answer, in bytes. *Binary frame* and *protobuf alone* are encoded");
    println!("sizes; the two *socket* columns are counted on the TCP connection, after a");
    println!("warm-up run of the same operation on that connection.\n");
    println!("| operation | case | binary frame | protobuf alone | binary protocol, socket | gRPC, socket | gRPC / binary |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for case in cases() {
        let wire = run(Protocol::Wire, &case).await;
        let grpc = run(Protocol::Grpc, &case).await;
        for (wire, grpc) in wire.into_iter().zip(grpc) {
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.1}× |",
                wire.operation,
                case.label,
                wire.frame,
                wire.protobuf,
                wire.socket,
                grpc.socket,
                grpc.socket as f64 / wire.socket.max(1) as f64
            );
        }
    }

    println!("\n## Code size\n");
    println!("Lines that are neither blank nor comments, tests excluded.\n");
    println!("| part | binary protocol | gRPC |");
    println!("| --- | ---: | ---: |");
    let wire_codec = rust_files("crates/corvid-wire/src");
    let grpc_codec = rust_files("crates/corvid-grpc/src");
    let codec = (
        code_size(&wire_codec.iter().map(String::as_str).collect::<Vec<_>>()),
        code_size(&grpc_codec.iter().map(String::as_str).collect::<Vec<_>>())
            + code_size(&["crates/corvid-grpc/build.rs"]),
    );
    let schema = code_size(&["proto/corvid.proto"]);
    let server = (
        code_size(&["crates/corvid-server/src/tcp.rs"]),
        code_size(&["crates/corvid-server/src/grpc.rs"]),
    );
    let client = (
        code_size(&["crates/corvid-client/src/wire.rs"]),
        code_size(&["crates/corvid-client/src/grpc.rs"]),
    );
    println!("| schema | (docs/protocol.md, prose) | {schema} (proto/corvid.proto) |");
    println!("| codec / conversions | {} | {} |", codec.0, codec.1);
    println!("| server frontend | {} | {} |", server.0, server.1);
    println!("| client transport | {} | {} |", client.0, client.1);
    println!(
        "| total Rust | {} | {} |",
        codec.0 + server.0 + client.0,
        codec.1 + server.1 + client.1
    );
}
