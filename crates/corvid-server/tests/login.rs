//! Login floods against the server in-process over loopback sockets: wrong passwords are
//! throttled before they are hashed, the hashing queue answers `busy` past its bound, and
//! the real user still logs in from an address that has not been failing. Clients bind to
//! different loopback addresses (127.0.0.1, 127.0.0.2) to come from different places.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;

use corvid_client::{Client, ClientConfig, Protocol};
use corvid_core::{ApiError, ErrorCode, Request, Response};
use corvid_server::{Config, RunningServer};
use corvid_wire::{ClientHello, Frame, HelloStatus, ServerHello, WireCodec, HELLO_LEN};

use common::PASSWORD;

const WRONG: &str = "wrong horse battery";
const WAIT: Duration = Duration::from_secs(30);

/// A server whose per-connection rate limit is lifted: the floods here are of logins.
async fn start(dir: &std::path::Path, tune: impl FnOnce(&mut Config)) -> RunningServer {
    common::start(dir, |config| {
        config.limits.requests_per_second = 1_000_000;
        config.limits.request_burst = 1_000_000;
        tune(config);
    })
    .await
}

/// A raw binary-protocol connection from a chosen local address.
struct Conn {
    framed: Framed<TcpStream, WireCodec>,
    next_id: u32,
}

impl Conn {
    async fn open_from(local: &str, server: SocketAddr) -> Conn {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(server).await.unwrap();
        stream
            .write_all(&ClientHello::CURRENT.encode())
            .await
            .unwrap();
        let mut hello = [0u8; HELLO_LEN];
        stream.read_exact(&mut hello).await.unwrap();
        assert_eq!(ServerHello::decode(hello).unwrap().status, HelloStatus::Ok);
        Conn {
            framed: Framed::new(stream, WireCodec::default()),
            next_id: 1,
        }
    }

    /// Sends every request at once (pipelined), then reads their answers in order.
    async fn pipeline(&mut self, requests: Vec<Request>) -> Vec<Result<Response, ApiError>> {
        let first = self.next_id;
        for request in requests.iter().cloned() {
            let id = self.next_id;
            self.next_id += 1;
            self.framed
                .feed(Frame::Request { id, request })
                .await
                .unwrap();
        }
        SinkExt::<Frame>::flush(&mut self.framed).await.unwrap();
        let mut answers = Vec::new();
        for expected in first..self.next_id {
            let frame = tokio::time::timeout(WAIT, self.framed.next())
                .await
                .expect("an answer in time")
                .expect("connection open")
                .expect("valid frame")
                .expect("well-formed frame");
            answers.push(match frame {
                Frame::Response { id, response } if id == expected => Ok(response),
                Frame::Error { id, error } if id == expected => Err(error),
                other => panic!("unexpected {other:?}"),
            });
        }
        answers
    }

    async fn call(&mut self, request: Request) -> Result<Response, ApiError> {
        self.pipeline(vec![request]).await.remove(0)
    }
}

fn login(username: &str, password: &str) -> Request {
    Request::Login {
        username: username.into(),
        password: password.into(),
    }
}

async fn register(conn: &mut Conn, username: &str) {
    let created = conn
        .call(Request::CreateAccount {
            username: username.into(),
            display_name: String::new(),
            password: PASSWORD.into(),
        })
        .await;
    assert!(created.is_ok(), "{created:?}");
}

/// How a flood's attempts were answered.
#[derive(Debug, Default)]
struct Answers {
    invalid_credentials: usize,
    too_many_attempts: usize,
    busy: usize,
}

fn tally(answers: Vec<Result<Response, ApiError>>) -> Answers {
    let mut tally = Answers::default();
    for answer in answers {
        match answer {
            Err(error) if error.code == ErrorCode::InvalidCredentials => {
                tally.invalid_credentials += 1
            }
            Err(error) if error.code == ErrorCode::TooManyAttempts => {
                assert!(error.detail >= 1, "seconds to wait: {error:?}");
                tally.too_many_attempts += 1
            }
            Err(error) if error.code == ErrorCode::Busy => tally.busy += 1,
            other => panic!("a wrong password answered {other:?}"),
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_throttled_and_the_user_still_logs_in_from_a_clean_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let pair_burst = Config::default().login.user_address_burst as usize;
    let addr = server.wire_addr();
    register(&mut Conn::open_from("127.0.0.2", addr).await, "alice").await;

    // Three connections from one address pipeline wrong passwords for alice.
    let floods = (0..3).map(|_| async move {
        let mut conn = Conn::open_from("127.0.0.1", addr).await;
        conn.pipeline((0..20).map(|_| login("alice", WRONG)).collect())
            .await
    });
    let answers = tally(futures::future::join_all(floods).await.concat());
    assert!(
        answers.invalid_credentials <= pair_burst,
        "at most the per-pair burst of guesses is hashed: {answers:?}"
    );
    assert!(answers.too_many_attempts > 0, "{answers:?}");

    // The attacker's address is refused even the right password now, before a hash...
    let mut attacker = Conn::open_from("127.0.0.1", addr).await;
    let refused = attacker.call(login("alice", PASSWORD)).await;
    assert_eq!(refused.unwrap_err().code, ErrorCode::TooManyAttempts);
    // ...and so is gRPC from that address: its frontend passes the peer's address on.
    let grpc = server.grpc_addr().unwrap().to_string();
    let mut config = ClientConfig::new(&[grpc]);
    config.transport = Protocol::Grpc;
    let grpc_client = Client::connect_with(config).await.unwrap();
    let refused = grpc_client.login("alice", WRONG).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::TooManyAttempts));

    // Alice, from another address, logs in.
    let mut alice = Conn::open_from("127.0.0.2", addr).await;
    match alice.call(login("alice", PASSWORD)).await {
        Ok(Response::LoggedIn { username, .. }) => assert_eq!(username, "alice"),
        other => panic!("alice could not log in: {other:?}"),
    }
    // An unknown username is throttled exactly like alice: nobody learns who exists.
    let unknown = attacker
        .pipeline(
            (0..pair_burst + 1)
                .map(|_| login("nobody", WRONG))
                .collect(),
        )
        .await;
    let unknown = tally(unknown);
    assert_eq!(unknown.invalid_credentials, pair_burst, "{unknown:?}");
    assert_eq!(unknown.too_many_attempts, 1, "{unknown:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_hashing_queue_logins_are_answered_busy_and_the_pool_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.login.hash_threads = 1;
        config.login.hash_queue = 1;
        // Throttle lifted: as if the flood came from many addresses.
        config.login.address_burst = 1_000_000;
        config.login.user_address_burst = 1_000_000;
        config.login.user_burst = 1_000_000;
    })
    .await;
    let addr = server.wire_addr();
    let mut conn = Conn::open_from("127.0.0.1", addr).await;
    register(&mut conn, "alice").await;

    let flood = (0..40)
        .map(|i| login(&format!("nobody{i}"), WRONG))
        .collect();
    let answers = tally(conn.pipeline(flood).await);
    assert!(answers.busy > 0, "{answers:?}");
    assert!(answers.invalid_credentials >= 1, "{answers:?}");

    // Busy is not a failure, and the pool works through its queue: alice logs in.
    let mut alice = Conn::open_from("127.0.0.2", addr).await;
    let logged_in = alice.call(login("alice", PASSWORD)).await;
    assert!(
        matches!(logged_in, Ok(Response::LoggedIn { .. })),
        "{logged_in:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_is_throttled_like_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| config.login.user_address_burst = 2).await;
    let mut conn = Conn::open_from("127.0.0.1", server.wire_addr()).await;
    register(&mut conn, "alice").await;
    let Ok(Response::LoggedIn { token, .. }) = conn.call(login("alice", PASSWORD)).await else {
        panic!("alice logs in");
    };
    let delete = |password: &str| Request::DeleteAccount {
        token,
        password: password.into(),
        force: true,
    };
    // A stolen session cannot guess the password faster than a login could.
    let answers = tally(
        conn.pipeline(vec![delete(WRONG), delete(WRONG), delete(WRONG)])
            .await,
    );
    assert_eq!(answers.invalid_credentials, 2, "{answers:?}");
    assert_eq!(answers.too_many_attempts, 1, "{answers:?}");
    let refused = conn.call(delete(PASSWORD)).await;
    assert_eq!(refused.unwrap_err().code, ErrorCode::TooManyAttempts);
    server.shutdown().await.unwrap();
}
