//! The server in-process over real loopback sockets, spoken to in raw protocol frames:
//! chat flows, push, resume, pipelining, limits and bad input.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use corvid_core::{
    ApiError, EndReason, ErrorCode, Event, MessageId, PatternSyntax, ReceiptStatus, Request,
    Response, SubscribeFrom, Token,
};
use corvid_server::RunningServer;
use corvid_wire::{ClientHello, Frame, HelloStatus, ServerHello, WireCodec, HELLO_LEN};

use common::{closed_by_server, eventually, start, PASSWORD};

const WAIT: Duration = Duration::from_secs(10);

/// A raw protocol connection.
struct Conn {
    framed: Framed<TcpStream, WireCodec>,
    next_id: u32,
    events: VecDeque<Event>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn::open_version(addr, ClientHello::CURRENT.version).await
    }

    /// A connection that speaks protocol `version`.
    async fn open_version(addr: SocketAddr, version: u16) -> Conn {
        Conn::handshake(TcpStream::connect(addr).await.unwrap(), version).await
    }

    /// The handshake, in the current version, on a connected stream.
    async fn open_on(stream: TcpStream) -> Conn {
        Conn::handshake(stream, ClientHello::CURRENT.version).await
    }

    async fn handshake(mut stream: TcpStream, version: u16) -> Conn {
        stream
            .write_all(&ClientHello { version, flags: 0 }.encode())
            .await
            .unwrap();
        let mut hello = [0u8; HELLO_LEN];
        stream.read_exact(&mut hello).await.unwrap();
        assert_eq!(
            ServerHello::decode(hello).unwrap(),
            ServerHello {
                version,
                status: HelloStatus::Ok
            }
        );
        Conn {
            framed: Framed::new(stream, WireCodec::default().with_version(version)),
            next_id: 1,
            events: VecDeque::new(),
        }
    }

    async fn send_request(&mut self, request: Request) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.framed
            .send(Frame::Request { id, request })
            .await
            .unwrap();
        id
    }

    /// The next frame that is not an event (events are queued).
    async fn answer(&mut self) -> Frame {
        loop {
            let frame = tokio::time::timeout(WAIT, self.framed.next())
                .await
                .expect("an answer in time")
                .expect("connection open")
                .expect("valid frame")
                .expect("well-formed frame");
            match frame {
                Frame::Event(event) => self.events.push_back(event),
                other => return other,
            }
        }
    }

    async fn call(&mut self, request: Request) -> Result<Response, ApiError> {
        let id = self.send_request(request).await;
        match self.answer().await {
            Frame::Response { id: got, response } => {
                assert_eq!(got, id);
                Ok(response)
            }
            Frame::Error { id: got, error } => {
                assert_eq!(got, id);
                Err(error)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn event(&mut self) -> Event {
        if let Some(event) = self.events.pop_front() {
            return event;
        }
        match self.answer_or_event().await {
            Frame::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    async fn answer_or_event(&mut self) -> Frame {
        tokio::time::timeout(WAIT, self.framed.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("valid frame")
            .expect("well-formed frame")
    }

    /// Asserts that no event arrives within a short grace period.
    async fn no_event(&mut self) {
        assert!(self.events.is_empty(), "unexpected {:?}", self.events);
        let got = tokio::time::timeout(Duration::from_millis(300), self.framed.next()).await;
        assert!(got.is_err(), "unexpected {got:?}");
    }

    async fn register(&mut self, name: &str) {
        let request = Request::CreateAccount {
            username: name.into(),
            display_name: format!("{name} (display)"),
            password: PASSWORD.into(),
        };
        assert_eq!(
            self.call(request).await,
            Ok(Response::AccountCreated {
                username: name.into()
            })
        );
    }

    async fn login(&mut self, name: &str) -> (Token, u64) {
        match self
            .call(Request::Login {
                username: name.into(),
                password: PASSWORD.into(),
            })
            .await
        {
            Ok(Response::LoggedIn { token, unread, .. }) => (token, unread),
            other => panic!("login failed: {other:?}"),
        }
    }

    /// Subscribes this connection to `token`'s events from now on.
    async fn subscribe(&mut self, token: Token) {
        let answer = self
            .call(Request::Subscribe {
                token,
                from: SubscribeFrom::Now,
            })
            .await;
        assert!(
            matches!(answer, Ok(Response::Subscribed { .. })),
            "{answer:?}"
        );
    }

    async fn send(&mut self, token: Token, to: &str, text: &str) -> MessageId {
        let request = Request::Send {
            token,
            to: to.into(),
            text: text.into(),
            client_id: 0,
        };
        match self.call(request).await {
            Ok(Response::Sent {
                message,
                duplicate: false,
            }) => message.id,
            other => panic!("send failed: {other:?}"),
        }
    }
}

/// Alice and bob, registered and logged in, each on a connection of their own.
async fn alice_and_bob(server: &RunningServer) -> ((Conn, Token), (Conn, Token)) {
    let mut alice = Conn::open(server.wire_addr()).await;
    let mut bob = Conn::open(server.wire_addr()).await;
    alice.register("alice").await;
    bob.register("bob").await;
    let (alice_token, _) = alice.login("alice").await;
    let (bob_token, unread) = bob.login("bob").await;
    assert_eq!(unread, 0);
    ((alice, alice_token), (bob, bob_token))
}

fn code<T: std::fmt::Debug>(result: Result<T, ApiError>) -> ErrorCode {
    result.expect_err("an error").code
}

#[tokio::test]
async fn two_users_chat_with_live_push_and_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let ((mut alice, alice_token), (mut bob, bob_token)) = alice_and_bob(&server).await;
    bob.subscribe(bob_token).await;
    alice.subscribe(alice_token).await;

    let id = alice.send(alice_token, "BOB", "hi bob").await;
    let Event::Message(pushed) = bob.event().await else {
        panic!("expected a message")
    };
    assert_eq!(
        (pushed.id, pushed.from.as_str(), pushed.text.as_str()),
        (id, "alice", "hi bob")
    );
    // The push counts as delivery, and the sender is told live.
    assert_eq!(
        alice.event().await,
        Event::Receipt {
            id,
            status: ReceiptStatus::Delivered
        }
    );
    assert_eq!(
        bob.call(Request::MarkRead {
            token: bob_token,
            ids: vec![id]
        })
        .await,
        Ok(Response::MarkedRead { count: 1 })
    );
    assert_eq!(
        alice.event().await,
        Event::Receipt {
            id,
            status: ReceiptStatus::Read
        }
    );

    // Listing shows who is online.
    let listing = alice
        .call(Request::ListAccounts {
            token: alice_token,
            pattern: "*".into(),
            syntax: PatternSyntax::Glob,
            limit: None,
            cursor: None,
        })
        .await;
    let Ok(Response::Accounts(page)) = listing else {
        panic!("{listing:?}")
    };
    let rows: Vec<_> = page
        .rows
        .iter()
        .map(|r| (r.username.as_str(), r.online))
        .collect();
    assert_eq!(rows, [("alice", true), ("bob", true)]);
    drop(bob);
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.service().hub().is_online("bob") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob still online after disconnecting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.shutdown().await.unwrap();
}

/// A push leaves the server before the state transaction that stores the message has
/// committed; a read made on receiving it must still see the message.
#[tokio::test]
async fn a_pushed_message_is_already_in_the_recipients_history_and_unread() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let ((mut alice, alice_token), (mut bob, bob_token)) = alice_and_bob(&server).await;
    bob.subscribe(bob_token).await;
    for round in 0..100 {
        let text = format!("message {round}");
        // Not waiting for the answer: bob reads as soon as the push arrives.
        alice
            .send_request(Request::Send {
                token: alice_token,
                to: "bob".into(),
                text: text.clone(),
                client_id: 0,
            })
            .await;
        let Event::Message(pushed) = bob.event().await else {
            panic!("expected a message")
        };
        assert_eq!(pushed.text, text);
        let history = bob
            .call(Request::History {
                token: bob_token,
                with: "alice".into(),
                before: None,
                limit: Some(1),
            })
            .await;
        let Ok(Response::History(page)) = history else {
            panic!("{history:?}")
        };
        assert_eq!(
            page.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            [pushed.id],
            "round {round}: the newest message in bob's history"
        );
        let unread = bob
            .call(Request::FetchUnread {
                token: bob_token,
                limit: None,
            })
            .await;
        let Ok(Response::Messages { messages }) = unread else {
            panic!("{unread:?}")
        };
        assert!(
            messages.iter().any(|m| m.id == pushed.id),
            "round {round}: the pushed message is unread"
        );
        assert_eq!(
            bob.call(Request::MarkRead {
                token: bob_token,
                ids: vec![pushed.id]
            })
            .await,
            Ok(Response::MarkedRead { count: 1 })
        );
        assert!(matches!(alice.answer().await, Frame::Response { .. }));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn offline_messages_wait_and_a_resubscribe_resumes_after_the_last_seen_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut alice = Conn::open(server.wire_addr()).await;
    alice.register("alice").await;
    alice.register("bob").await;
    let (alice_token, _) = alice.login("alice").await;
    let ids = [
        alice.send(alice_token, "bob", "one").await,
        alice.send(alice_token, "bob", "two").await,
        alice.send(alice_token, "bob", "three").await,
    ];

    let mut bob = Conn::open(server.wire_addr()).await;
    let (bob_token, unread) = bob.login("bob").await;
    assert_eq!(unread, 3);
    // Bob saw "one" on an earlier connection: he resumes after it.
    let answer = bob
        .call(Request::Subscribe {
            token: bob_token,
            from: SubscribeFrom::After(ids[0]),
        })
        .await;
    assert_eq!(answer, Ok(Response::Subscribed { last_id: ids[2] }));
    for expected in &ids[1..] {
        let Event::Message(message) = bob.event().await else {
            panic!()
        };
        assert_eq!(message.id, *expected);
    }
    let live = alice.send(alice_token, "bob", "four").await;
    let Event::Message(message) = bob.event().await else {
        panic!()
    };
    assert_eq!(message.id, live);
    bob.no_event().await;

    // Reading on demand: oldest first, N at a time.
    let unread = bob
        .call(Request::FetchUnread {
            token: bob_token,
            limit: Some(2),
        })
        .await;
    let Ok(Response::Messages { messages }) = unread else {
        panic!("{unread:?}")
    };
    assert_eq!(
        messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscribing_from_the_oldest_unread_gets_every_unread_message_once_then_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let ((mut alice, alice_token), (mut bob, bob_token)) = alice_and_bob(&server).await;
    // Read before this session: not replayed.
    let read = alice.send(alice_token, "bob", "already read").await;
    let marked = bob
        .call(Request::MarkRead {
            token: bob_token,
            ids: vec![read],
        })
        .await;
    assert_eq!(marked, Ok(Response::MarkedRead { count: 1 }));
    // Bob logs in again on a fresh connection; a message lands between his login and his
    // subscribe, and more keep arriving while the subscribe is under way.
    let mut phone = Conn::open(server.wire_addr()).await;
    let (phone_token, unread) = phone.login("bob").await;
    assert_eq!(unread, 0);
    let between = alice.send(alice_token, "bob", "between").await;
    let mut sent = vec![between];
    let mut texts = Vec::new();
    for i in 0..40 {
        texts.push(format!("racing {i}"));
    }
    for text in &texts {
        alice
            .send_request(Request::Send {
                token: alice_token,
                to: "bob".into(),
                text: text.clone(),
                client_id: 0,
            })
            .await;
    }
    let subscribed = phone
        .call(Request::Subscribe {
            token: phone_token,
            from: SubscribeFrom::OldestUnread,
        })
        .await;
    assert!(
        matches!(subscribed, Ok(Response::Subscribed { .. })),
        "{subscribed:?}"
    );
    for _ in &texts {
        let Frame::Response {
            response: Response::Sent { message, .. },
            ..
        } = alice.answer().await
        else {
            panic!("a send failed")
        };
        sent.push(message.id);
    }
    let last = alice.send(alice_token, "bob", "after").await;
    sent.push(last);
    // Every message, once, in order: the replay and the live stream meet exactly.
    let mut received = Vec::new();
    while received.last() != Some(&last) {
        match phone.event().await {
            Event::Message(message) => received.push(message.id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, sent);
    // Still unread: a push does not mark a message read.
    let (_, unread) = bob.login("bob").await;
    assert_eq!(unread, sent.len() as u64);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_second_subscribe_on_a_connection_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let ((mut alice, alice_token), (mut bob, bob_token)) = alice_and_bob(&server).await;
    let first = alice.send(alice_token, "bob", "first").await;
    bob.subscribe(bob_token).await;
    // The second one replays the inbox after id 0; the first one is gone.
    let again = bob
        .call(Request::Subscribe {
            token: bob_token,
            from: SubscribeFrom::After(MessageId(0)),
        })
        .await;
    assert_eq!(again, Ok(Response::Subscribed { last_id: first }));
    let Event::Message(replayed) = bob.event().await else {
        panic!("expected the replay")
    };
    assert_eq!(replayed.id, first);
    // A live message comes once, not once per subscribe.
    let live = alice.send(alice_token, "bob", "live").await;
    let marker = alice.send(alice_token, "bob", "marker").await;
    let mut received = Vec::new();
    while received.last() != Some(&marker) {
        match bob.event().await {
            Event::Message(message) => received.push(message.id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, [live, marker]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_id_0_is_malformed_and_version_1_clients_keep_their_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut conn = Conn::open(server.wire_addr()).await;
    conn.framed
        .send(Frame::Request {
            id: 0,
            request: Request::Ping,
        })
        .await
        .unwrap();
    let Frame::Error { id: 0, error } = conn.answer().await else {
        panic!("request id 0 must be answered with an error about id 0")
    };
    assert_eq!(error.code, ErrorCode::Malformed);
    assert_eq!(conn.call(Request::Ping).await, Ok(Response::Pong));

    // A version-1 client is served in version 1: its Subscribe means what it always did,
    // and the start that version 2 added is malformed there.
    let mut old = Conn::open_version(server.wire_addr(), 1).await;
    old.register("alice").await;
    let (token, _) = old.login("alice").await;
    let refused = old
        .call(Request::Subscribe {
            token,
            from: SubscribeFrom::OldestUnread,
        })
        .await;
    assert_eq!(code(refused), ErrorCode::Malformed);
    let subscribed = old
        .call(Request::Subscribe {
            token,
            from: SubscribeFrom::After(MessageId(0)),
        })
        .await;
    assert_eq!(
        subscribed,
        Ok(Response::Subscribed {
            last_id: MessageId(0)
        })
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut conn = Conn::open(server.wire_addr()).await;
    conn.register("alice").await;
    conn.register("bob").await;
    let (token, _) = conn.login("alice").await;
    conn.send(token, "bob", "before restart").await;
    drop(conn);
    server.shutdown().await.unwrap();

    let server = start(dir.path(), |_| {}).await;
    let mut conn = Conn::open(server.wire_addr()).await;
    // The session survives the restart too.
    let history = conn
        .call(Request::History {
            token,
            with: "bob".into(),
            before: None,
            limit: None,
        })
        .await;
    let Ok(Response::History(page)) = history else {
        panic!("{history:?}")
    };
    assert_eq!(page.messages.len(), 1);
    let (bob_token, unread) = conn.login("bob").await;
    assert_eq!(unread, 1);
    let id = conn.send(bob_token, "alice", "after restart").await;
    assert!(
        id > page.messages[0].id,
        "message ids keep increasing across restarts"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn requests_can_be_pipelined_and_answers_come_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut conn = Conn::open(server.wire_addr()).await;
    conn.register("alice").await;
    conn.register("bob").await;
    let (token, _) = conn.login("alice").await;
    let mut sent = Vec::new();
    for i in 0..50 {
        let request = Request::Send {
            token,
            to: "bob".into(),
            text: format!("m{i}"),
            client_id: 1000 + i,
        };
        sent.push(conn.send_request(request).await);
    }
    let mut last = MessageId(0);
    for id in sent {
        let Frame::Response {
            id: got,
            response: Response::Sent { message, .. },
        } = conn.answer().await
        else {
            panic!()
        };
        assert_eq!(got, id);
        assert!(message.id > last, "messages keep their send order");
        last = message.id;
    }
    // A retry with a used client id returns the original.
    let retry = conn
        .call(Request::Send {
            token,
            to: "bob".into(),
            text: "m0".into(),
            client_id: 1000,
        })
        .await;
    let Ok(Response::Sent {
        message,
        duplicate: true,
    }) = retry
    else {
        panic!("{retry:?}")
    };
    assert_eq!(message.text, "m0");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_are_clear_codes_and_logins_do_not_reveal_users() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.limits.max_text_bytes = 10).await;
    let mut conn = Conn::open(server.wire_addr()).await;
    conn.register("alice").await;
    let taken = Request::CreateAccount {
        username: "ALICE".into(),
        display_name: String::new(),
        password: PASSWORD.into(),
    };
    assert_eq!(code(conn.call(taken).await), ErrorCode::UsernameTaken);
    let short = Request::CreateAccount {
        username: "bob".into(),
        display_name: String::new(),
        password: "short".into(),
    };
    assert_eq!(code(conn.call(short).await), ErrorCode::InvalidPassword);
    let wrong = conn
        .call(Request::Login {
            username: "alice".into(),
            password: "wrong password".into(),
        })
        .await;
    let unknown = conn
        .call(Request::Login {
            username: "nobody".into(),
            password: PASSWORD.into(),
        })
        .await;
    assert_eq!(
        wrong.clone().unwrap_err(),
        unknown.unwrap_err(),
        "same error for both"
    );
    assert_eq!(code(wrong), ErrorCode::InvalidCredentials);
    let (token, _) = conn.login("alice").await;
    let send = |to: &str, text: &str| Request::Send {
        token,
        to: to.into(),
        text: text.into(),
        client_id: 0,
    };
    assert_eq!(
        code(conn.call(send("nobody", "hi")).await),
        ErrorCode::UnknownRecipient
    );
    let too_long = conn
        .call(send("alice", "more than ten bytes"))
        .await
        .unwrap_err();
    assert_eq!(too_long.code, ErrorCode::InvalidText);
    assert!(
        too_long.message.contains("10 bytes"),
        "{}",
        too_long.message
    );
    let bad_pattern = Request::ListAccounts {
        token,
        pattern: "(".into(),
        syntax: PatternSyntax::Regex,
        limit: None,
        cursor: None,
    };
    assert_eq!(
        code(conn.call(bad_pattern).await),
        ErrorCode::InvalidPattern
    );
    let bad_limit = Request::FetchUnread {
        token,
        limit: Some(0),
    };
    assert_eq!(code(conn.call(bad_limit).await), ErrorCode::InvalidLimit);
    let stranger = Request::FetchUnread {
        token: Token([7; 16]),
        limit: None,
    };
    assert_eq!(code(conn.call(stranger).await), ErrorCode::Unauthenticated);
    // Delete-account checks the password again, then the unread count.
    conn.send(token, "alice", "note").await;
    let delete = |password: &str, force| Request::DeleteAccount {
        token,
        password: password.into(),
        force,
    };
    assert_eq!(
        code(conn.call(delete("wrong password", true)).await),
        ErrorCode::InvalidCredentials
    );
    let refused = conn.call(delete(PASSWORD, false)).await.unwrap_err();
    assert_eq!(
        (refused.code, refused.detail),
        (ErrorCode::UnreadMessages, 1)
    );
    assert_eq!(
        conn.call(delete(PASSWORD, true)).await,
        Ok(Response::AccountDeleted)
    );
    assert_eq!(
        code(conn.call(Request::Logout { token }).await),
        ErrorCode::Unauthenticated
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn single_session_policy_ends_the_older_session_and_tells_it_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.sessions.single_session = true).await;
    let mut phone = Conn::open(server.wire_addr()).await;
    phone.register("alice").await;
    let (old, _) = phone.login("alice").await;
    assert!(phone
        .call(Request::Subscribe {
            token: old,
            from: SubscribeFrom::Now,
        })
        .await
        .is_ok());
    let mut laptop = Conn::open(server.wire_addr()).await;
    let (new, _) = laptop.login("alice").await;
    assert_eq!(
        phone.event().await,
        Event::SessionEnded {
            reason: EndReason::ReplacedByNewLogin
        }
    );
    assert_eq!(
        code(
            laptop
                .call(Request::FetchUnread {
                    token: old,
                    limit: None
                })
                .await
        ),
        ErrorCode::Unauthenticated
    );
    assert!(laptop
        .call(Request::FetchUnread {
            token: new,
            limit: None
        })
        .await
        .is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_frames_get_errors_and_oversized_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.limits.max_frame_bytes = 64 * 1024).await;
    let mut conn = Conn::open(server.wire_addr()).await;
    // An unknown opcode with request id 9: an error for that id, and the connection goes on.
    conn.framed
        .get_mut()
        .write_all(&[0, 0, 0, 5, 0x3e, 0, 0, 0, 9])
        .await
        .unwrap();
    let Frame::Error { id: 9, error } = conn.answer().await else {
        panic!()
    };
    assert_eq!(error.code, ErrorCode::Malformed);
    assert_eq!(conn.call(Request::Ping).await, Ok(Response::Pong));

    // A frame announcing 16 MiB: an error about the connection, then it is closed.
    let mut other = Conn::open(server.wire_addr()).await;
    other
        .framed
        .get_mut()
        .write_all(&[1, 0, 0, 0, 1, 0, 0, 0, 1])
        .await
        .unwrap();
    let Frame::Error { id: 0, error } = other.answer_or_event().await else {
        panic!()
    };
    assert_eq!(error.code, ErrorCode::FrameTooLarge);
    let closed = tokio::time::timeout(WAIT, other.framed.next())
        .await
        .unwrap();
    assert!(closed.is_none(), "the connection is closed");

    // Garbage instead of a handshake is closed without an answer.
    let mut garbage = TcpStream::connect(server.wire_addr()).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(garbage.read(&mut buf).await.unwrap_or(0), 0);
    // A future version is answered with "unsupported".
    let mut future = TcpStream::connect(server.wire_addr()).await.unwrap();
    future
        .write_all(
            &ClientHello {
                version: 99,
                flags: 0,
            }
            .encode(),
        )
        .await
        .unwrap();
    future.read_exact(&mut buf).await.unwrap();
    assert_eq!(
        ServerHello::decode(buf).unwrap().status,
        HelloStatus::UnsupportedVersion
    );

    // Everyone else is still served.
    assert_eq!(conn.call(Request::Ping).await, Ok(Response::Pong));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rate_and_connection_limits_apply_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.limits.requests_per_second = 1;
        c.limits.request_burst = 5;
        c.limits.max_connections = 1;
    })
    .await;
    let mut conn = Conn::open(server.wire_addr()).await;
    for _ in 0..5 {
        conn.send_request(Request::Ping).await;
    }
    let sixth = conn.send_request(Request::Ping).await;
    for _ in 0..5 {
        assert!(matches!(
            conn.answer().await,
            Frame::Response {
                response: Response::Pong,
                ..
            }
        ));
    }
    let Frame::Error { id, error } = conn.answer().await else {
        panic!()
    };
    assert_eq!((id, error.code), (sixth, ErrorCode::RateLimited));

    let mut second = Conn::open(server.wire_addr()).await;
    let Frame::Error { id: 0, error } = second.answer_or_event().await else {
        panic!()
    };
    assert_eq!(error.code, ErrorCode::TooManyConnections);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_dropped_and_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.limits.max_text_bytes = 64 * 1024;
        c.limits.write_timeout_secs = 1;
        c.limits.shutdown_grace_secs = 1;
        c.limits.subscriber_queue_bytes = 256 * 1024;
    })
    .await;
    let ((mut alice, alice_token), (_bob, bob_token)) = alice_and_bob(&server).await;
    // Bob subscribes from a connection that then reads nothing.
    let _stuck = subscriber_that_never_reads(&server, bob_token).await;
    let text = "x".repeat(64 * 1024);
    send_pipelined(&mut alice, alice_token, &text, 200).await;
    // Its queue overflowed: the hub dropped it, and its connection goes once the write
    // deadline passes.
    eventually("the stuck subscriber dropped", || {
        server.service().hub().subscribers() == 0
    })
    .await;
    eventually("the stuck connection closed", || {
        server.open_connections() == 2
    })
    .await;
    assert_eq!(alice.call(Request::Ping).await, Ok(Response::Pong));

    // A second one that stops reading is still open when the server shuts down.
    let _stuck = subscriber_that_never_reads(&server, bob_token).await;
    send_pipelined(&mut alice, alice_token, &text, 100).await;
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown is bounded whatever clients do")
        .unwrap();
}

#[tokio::test]
async fn half_a_frame_or_no_login_does_not_hold_a_connection_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        c.limits.max_connections = 3;
        c.limits.frame_timeout_secs = 1;
        c.limits.login_timeout_secs = 2;
    })
    .await;
    let ((mut alice, _), (mut bob, _)) = alice_and_bob(&server).await;
    // Bob, logged in, sends the first 5 bytes of a 9-byte frame and stops.
    bob.framed
        .get_mut()
        .write_all(&[0, 0, 0, 5, 1])
        .await
        .unwrap();
    closed_by_server(bob.framed.get_mut()).await;
    // A client that says hello and never logs in is closed at the login deadline.
    let mut silent = Conn::open(server.wire_addr()).await;
    closed_by_server(silent.framed.get_mut()).await;
    // Their slots are free again: a new client is served.
    let mut carol = Conn::open(server.wire_addr()).await;
    assert_eq!(carol.call(Request::Ping).await, Ok(Response::Pong));
    // Alice, logged in and sending whole frames, was never at risk.
    assert_eq!(alice.call(Request::Ping).await, Ok(Response::Pong));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_account_holds_a_bounded_number_of_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.limits.max_subscriptions_per_account = 2).await;
    let ((mut alice, alice_token), (mut bob, bob_token)) = alice_and_bob(&server).await;
    bob.subscribe(bob_token).await;
    // Subscribing again on the same connection replaces the first subscription.
    bob.subscribe(bob_token).await;
    let mut second = Conn::open(server.wire_addr()).await;
    second.subscribe(bob_token).await;
    let mut third = Conn::open(server.wire_addr()).await;
    let refused = third
        .call(Request::Subscribe {
            token: bob_token,
            from: SubscribeFrom::Now,
        })
        .await;
    assert_eq!(code(refused), ErrorCode::TooManySubscriptions);
    // Another account is not affected.
    alice.subscribe(alice_token).await;
    drop(second);
    eventually("the second subscription ended", || {
        server.service().hub().subscribers() == 2
    })
    .await;
    third.subscribe(bob_token).await;
    server.shutdown().await.unwrap();
}

/// A connection subscribed as `token` that then reads nothing, with a small receive buffer
/// so that the server's writes to it back up soon.
async fn subscriber_that_never_reads(server: &RunningServer, token: Token) -> Conn {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.wire_addr()).await.unwrap();
    let mut stuck = Conn::open_on(stream).await;
    stuck.subscribe(token).await;
    stuck
}

/// Sends `count` messages of `text` to bob, pipelined a window at a time. The sender takes
/// its answers after each window: a client that only writes, never reading its answers, is
/// itself a client that does not read: once its receive buffer is full (each small answer
/// takes far more of it than its bytes), the write deadline closes it too.
async fn send_pipelined(sender: &mut Conn, token: Token, text: &str, count: usize) {
    const WINDOW: usize = 16;
    let mut left = count;
    while left > 0 {
        let window = left.min(WINDOW);
        for _ in 0..window {
            sender
                .send_request(Request::Send {
                    token,
                    to: "bob".into(),
                    text: text.to_string(),
                    client_id: 0,
                })
                .await;
        }
        for _ in 0..window {
            assert!(matches!(sender.answer().await, Frame::Response { .. }));
        }
        left -= window;
    }
}

/// Subscribes pipelined on one connection replace each other one by one: at no moment do
/// two of them count against the account, so even at a cap of one every one succeeds.
#[tokio::test]
async fn pipelined_subscribes_replace_each_other_without_counting_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.limits.max_subscriptions_per_account = 1).await;
    let (_, (mut bob, bob_token)) = alice_and_bob(&server).await;
    let subscribe = Request::Subscribe {
        token: bob_token,
        from: SubscribeFrom::Now,
    };
    for _ in 0..20 {
        bob.send_request(subscribe.clone()).await;
    }
    for round in 0..20 {
        let answer = bob.answer().await;
        assert!(
            matches!(
                answer,
                Frame::Response {
                    response: Response::Subscribed { .. },
                    ..
                }
            ),
            "subscribe {round} of 20: {answer:?}"
        );
    }
    eventually("one live subscription", || {
        server.service().hub().subscribers() == 1
    })
    .await;
    server.shutdown().await.unwrap();
}
