//! The HTTP listener in-process over real loopback sockets: the WebSocket JSON API
//! (docs/web-api.md) spoken by a real WebSocket client, every operation and error, bad
//! input and limits; a message crossing the three protocols; the page's files and headers.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use corvid_client::{Client, ClientConfig, Protocol};
use corvid_server::RunningServer;

use common::{start, PASSWORD};

const WAIT: Duration = Duration::from_secs(10);

fn http_addr(server: &RunningServer) -> SocketAddr {
    server.http_addr().expect("HTTP is on")
}

/// A WebSocket client of the web API.
struct Ws {
    socket: WebSocketStream<TcpStream>,
    next_id: u64,
    events: VecDeque<Value>,
}

impl Ws {
    async fn open(addr: SocketAddr) -> Ws {
        Ws::try_open(addr).await.expect("the WebSocket opens")
    }

    async fn try_open(addr: SocketAddr) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let stream = TcpStream::connect(addr).await?;
        let (socket, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/api/ws"), stream).await?;
        Ok(Ws {
            socket,
            next_id: 1,
            events: VecDeque::new(),
        })
    }

    async fn send_text(&mut self, text: impl Into<String>) {
        self.socket
            .send(WsMessage::text(text.into()))
            .await
            .unwrap();
    }

    /// The next JSON message from the server.
    async fn receive(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("an answer in time")
                .expect("the socket is open")
                .expect("a message");
            match message {
                WsMessage::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                WsMessage::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// The answer to the request with `id`; events that come first are kept.
    async fn answer(&mut self, id: Value) -> Value {
        loop {
            let message = self.receive().await;
            if message.get("event").is_some() {
                self.events.push_back(message["event"].clone());
                continue;
            }
            assert_eq!(message["id"], id, "{message}");
            return message;
        }
    }

    /// Sends `request` with the next id; returns its whole answer.
    async fn call(&mut self, mut request: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.send_text(request.to_string()).await;
        self.answer(json!(id)).await
    }

    async fn ok(&mut self, request: Value) -> Value {
        let answer = self.call(request.clone()).await;
        assert!(answer.get("result").is_some(), "{request} -> {answer}");
        answer["result"].clone()
    }

    /// The name of the error `request` gets.
    async fn error(&mut self, request: Value) -> String {
        let answer = self.call(request.clone()).await;
        let error = &answer["error"];
        assert!(error.is_object(), "{request} -> {answer}");
        assert_eq!(
            error["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .and_then(corvid_core::ErrorCode::from_u16)
                .map(|c| c.name()),
            error["name"].as_str(),
            "the code and the name agree: {answer}"
        );
        error["name"].as_str().unwrap().to_string()
    }

    async fn event(&mut self) -> Value {
        if let Some(event) = self.events.pop_front() {
            return event;
        }
        let message = self.receive().await;
        assert!(message.get("event").is_some(), "{message}");
        message["event"].clone()
    }

    /// Creates `name` and logs in; returns the token.
    async fn account(&mut self, name: &str) -> String {
        self.ok(json!({"op": "create_account", "username": name, "password": PASSWORD}))
            .await;
        let login = self
            .ok(json!({"op": "login", "username": name, "password": PASSWORD}))
            .await;
        login["token"].as_str().unwrap().to_string()
    }

    /// The close frame the server ends the session with.
    async fn close_code(&mut self) -> Option<CloseCode> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the server closes in time");
            match message {
                Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }
}

#[tokio::test]
async fn every_operation_answers_over_the_websocket_api_with_the_binary_protocols_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let addr = http_addr(&server);
    let mut alice = Ws::open(addr).await;
    let mut bob = Ws::open(addr).await;

    assert_eq!(alice.ok(json!({"op": "ping"})).await["type"], "pong");
    let created = alice
        .ok(json!({"op": "create_account", "username": "alice", "display_name": "Alice A.", "password": PASSWORD}))
        .await;
    assert_eq!(
        created,
        json!({"type": "account_created", "username": "alice"})
    );
    assert_eq!(
        alice
            .error(json!({"op": "create_account", "username": "ALICE", "password": PASSWORD}))
            .await,
        "username_taken"
    );
    assert_eq!(
        alice
            .error(json!({"op": "create_account", "username": "a b", "password": PASSWORD}))
            .await,
        "invalid_username"
    );
    assert_eq!(
        alice
            .error(json!({"op": "create_account", "username": "ab", "password": "short"}))
            .await,
        "invalid_password"
    );
    assert_eq!(
        alice
            .error(json!({"op": "login", "username": "alice", "password": "wrong password"}))
            .await,
        "invalid_credentials"
    );
    let login = alice
        .ok(json!({"op": "login", "username": "alice", "password": PASSWORD}))
        .await;
    assert_eq!(login["type"], "logged_in");
    assert_eq!(login["unread"], 0);
    let a = login["token"].as_str().unwrap().to_string();
    let b = bob.account("bob").await;

    // Finding people.
    let accounts = alice
        .ok(json!({"op": "list_accounts", "token": a, "pattern": "A*"}))
        .await;
    assert_eq!(
        accounts,
        json!({"type": "accounts", "accounts": [{"username": "alice", "display_name": "Alice A.", "online": false}], "next_cursor": null})
    );
    let page = alice
        .ok(json!({"op": "list_accounts", "token": a, "pattern": "^b", "syntax": "regex", "limit": 1}))
        .await;
    assert_eq!(page["accounts"][0]["username"], "bob");
    assert_eq!(
        alice
            .error(json!({"op": "list_accounts", "token": a, "pattern": "(", "syntax": "regex"}))
            .await,
        "invalid_pattern"
    );
    assert_eq!(
        alice
            .error(json!({"op": "list_accounts", "token": a, "limit": 0}))
            .await,
        "invalid_limit"
    );

    // Sending, with a retry that is not a second copy.
    let sent = alice
        .ok(json!({"op": "send", "token": a, "to": "bob", "text": "first", "client_id": 1}))
        .await;
    assert_eq!(sent["type"], "sent");
    assert_eq!(sent["duplicate"], false);
    assert_eq!(sent["message"]["status"], "sent");
    let first = sent["message"]["id"].as_u64().unwrap();
    let retry = alice
        .ok(json!({"op": "send", "token": a, "to": "bob", "text": "first", "client_id": 1}))
        .await;
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["message"]["id"], first);
    assert_eq!(
        alice
            .error(json!({"op": "send", "token": a, "to": "nobody", "text": "x", "client_id": 2}))
            .await,
        "unknown_recipient"
    );
    assert_eq!(
        alice
            .error(json!({"op": "send", "token": a, "to": "bob", "text": "", "client_id": 3}))
            .await,
        "invalid_text"
    );

    // Bob subscribes from his oldest unread: the waiting message, then live ones; alice
    // sees her message delivered, then read.
    let subscribed = alice
        .ok(json!({"op": "subscribe", "token": a, "from": "now"}))
        .await;
    assert_eq!(subscribed["type"], "subscribed");
    let subscribed = bob
        .ok(json!({"op": "subscribe", "token": b, "from": "oldest_unread"}))
        .await;
    assert_eq!(subscribed["last_id"], first);
    let replayed = bob.event().await;
    assert_eq!(replayed["type"], "message");
    assert_eq!(replayed["message"]["text"], "first");
    assert_eq!(replayed["message"]["from"], "alice");
    assert_eq!(
        alice.event().await,
        json!({"type": "receipt", "id": first, "status": "delivered"})
    );
    let second = alice
        .ok(json!({"op": "send", "token": a, "to": "bob", "text": "<script>alert(1)</script>", "client_id": 4}))
        .await["message"]["id"]
        .as_u64()
        .unwrap();
    let live = bob.event().await;
    assert_eq!(live["message"]["id"], second);
    assert_eq!(live["message"]["text"], "<script>alert(1)</script>");

    let unread = bob
        .ok(json!({"op": "fetch_unread", "token": b, "limit": 10}))
        .await;
    assert_eq!(unread["messages"].as_array().unwrap().len(), 2);
    let marked = bob
        .ok(json!({"op": "mark_read", "token": b, "ids": [first, second]}))
        .await;
    assert_eq!(marked, json!({"type": "marked_read", "count": 2}));
    // Both go to read; the delivered receipt of the second may or may not come first,
    // since marking it read can overtake its delivery note.
    let mut statuses = Vec::new();
    while !(statuses.contains(&(first, "read".to_string()))
        && statuses.contains(&(second, "read".to_string())))
    {
        let receipt = alice.event().await;
        assert_eq!(receipt["type"], "receipt", "{receipt}");
        statuses.push((
            receipt["id"].as_u64().unwrap(),
            receipt["status"].as_str().unwrap().to_string(),
        ));
    }

    // History, paged backwards.
    let history = alice
        .ok(json!({"op": "history", "token": a, "with": "bob", "limit": 1}))
        .await;
    assert_eq!(history["messages"][0]["id"], second);
    assert_eq!(history["next_before"], second);
    let older = alice
        .ok(json!({"op": "history", "token": a, "with": "bob", "before": second}))
        .await;
    assert_eq!(older["messages"][0]["id"], first);
    assert_eq!(older["next_before"], Value::Null);
    assert_eq!(
        alice
            .error(json!({"op": "history", "token": a, "with": "nobody"}))
            .await,
        "unknown_user"
    );

    // Deleting messages from one's own view.
    let deleted = bob
        .ok(json!({"op": "delete_messages", "token": b, "ids": [first]}))
        .await;
    assert_eq!(deleted, json!({"type": "messages_deleted", "count": 1}));
    let too_many: Vec<u64> = (1..=1001).collect();
    assert_eq!(
        bob.error(json!({"op": "delete_messages", "token": b, "ids": too_many}))
            .await,
        "too_many_ids"
    );

    // Deleting an account with unread messages needs force.
    alice
        .ok(json!({"op": "send", "token": a, "to": "bob", "text": "unread", "client_id": 5}))
        .await;
    assert_eq!(bob.event().await["type"], "message");
    let refused = bob
        .call(json!({"op": "delete_account", "token": b, "password": PASSWORD}))
        .await;
    assert_eq!(refused["error"]["name"], "unread_messages");
    assert_eq!(refused["error"]["detail"], 1);

    // Logging out ends the session and its stream: the event, then the close.
    assert_eq!(
        alice.ok(json!({"op": "logout", "token": a})).await,
        json!({"type": "logged_out"})
    );
    // Receipts of the last message (delivered) may come first.
    let ended = loop {
        let event = alice.event().await;
        if event["type"] != "receipt" {
            break event;
        }
    };
    assert_eq!(
        ended,
        json!({"type": "session_ended", "reason": "logged_out", "message": "logged out"})
    );
    assert_eq!(alice.close_code().await, Some(CloseCode::Normal));
    let mut alice = Ws::open(addr).await;
    assert_eq!(
        alice.error(json!({"op": "fetch_unread", "token": a})).await,
        "unauthenticated"
    );

    let deleted = bob
        .ok(json!({"op": "delete_account", "token": b, "password": PASSWORD, "force": true}))
        .await;
    assert_eq!(deleted, json!({"type": "account_deleted"}));
    assert_eq!(bob.event().await["reason"], "account_deleted");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_session_and_everyone_else_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let addr = http_addr(&server);
    let mut bystander = Ws::open(addr).await;
    let mut ws = Ws::open(addr).await;
    let cases: [(&str, Value, &str); 9] = [
        ("{not json", Value::Null, "not JSON"),
        ("[1, 2]", Value::Null, "JSON object"),
        (r#"{"op": "ping"}"#, Value::Null, "`id`"),
        (r#"{"id": 0, "op": "ping"}"#, Value::Null, "`id`"),
        (r#"{"id": "7", "op": "ping"}"#, Value::Null, "`id`"),
        (r#"{"id": 7}"#, json!(7), "`op`"),
        (
            r#"{"id": 8, "op": "teleport"}"#,
            json!(8),
            "unknown operation `teleport`",
        ),
        (
            r#"{"id": 9, "op": "send", "token": "00"}"#,
            json!(9),
            "32 hexadecimal digits",
        ),
        (
            r#"{"id": 10, "op": "login", "username": "x"}"#,
            json!(10),
            "missing field `password`",
        ),
    ];
    for (text, id, says) in cases {
        ws.send_text(text).await;
        let answer = ws.receive().await;
        assert_eq!(answer["id"], id, "{text} -> {answer}");
        assert_eq!(answer["error"]["name"], "malformed", "{text} -> {answer}");
        assert_eq!(answer["error"]["code"], 1);
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{text} -> {message}");
    }
    ws.socket
        .send(WsMessage::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    let answer = ws.receive().await;
    assert_eq!(answer["error"]["name"], "malformed");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("text messages"));
    assert_eq!(ws.ok(json!({"op": "ping"})).await["type"], "pong");
    assert_eq!(bystander.ok(json!({"op": "ping"})).await["type"], "pong");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_closes_its_socket_with_1009_and_others_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.limits.max_text_bytes = 1024;
        config.limits.max_frame_bytes = 4096;
    })
    .await;
    let addr = http_addr(&server);
    let mut bystander = Ws::open(addr).await;
    let mut ws = Ws::open(addr).await;
    let text = json!({"id": 1, "op": "ping", "padding": "x".repeat(5000)}).to_string();
    ws.send_text(text).await;
    assert_eq!(ws.close_code().await, Some(CloseCode::Size));
    assert_eq!(bystander.ok(json!({"op": "ping"})).await["type"], "pong");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_begun_and_not_finished_closes_its_socket_after_the_frame_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| config.limits.frame_timeout_secs = 1).await;
    let mut ws = Ws::open(http_addr(&server)).await;
    // The first two bytes of a masked text frame of 100 bytes, and nothing more.
    ws.socket
        .get_mut()
        .write_all(&[0x81, 0x80 | 100])
        .await
        .unwrap();
    assert_eq!(ws.close_code().await, Some(CloseCode::Policy));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn requests_past_the_rate_limit_are_answered_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.limits.requests_per_second = 1;
        config.limits.request_burst = 3;
    })
    .await;
    let mut ws = Ws::open(http_addr(&server)).await;
    let mut limited = 0;
    for _ in 0..6 {
        let answer = ws.call(json!({"op": "ping"})).await;
        if answer["error"]["name"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= 2, "{limited} of 6 were limited");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_connection_limit_covers_the_web_listener_and_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| config.limits.max_connections = 1).await;
    let addr = http_addr(&server);
    let wire = TcpStream::connect(server.wire_addr()).await.unwrap();
    // Wait until the front door holds the binary-protocol connection.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.open_connections() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection is never admitted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        Ws::try_open(addr).await.is_err(),
        "no slot is left for HTTP"
    );
    drop(wire);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut ws = loop {
        if let Ok(ws) = Ws::try_open(addr).await {
            break ws;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never comes free"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ws.ok(json!({"op": "ping"})).await["type"], "pong");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_socket_that_does_not_log_in_is_closed_after_the_login_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| config.limits.login_timeout_secs = 1).await;
    let mut ws = Ws::open(http_addr(&server)).await;
    assert_eq!(ws.ok(json!({"op": "ping"})).await["type"], "pong");
    assert_eq!(ws.close_code().await, None, "the stream just ends");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn resuming_after_the_last_message_id_misses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let addr = http_addr(&server);
    let mut alice = Ws::open(addr).await;
    let a = alice.account("alice").await;
    let mut bob = Ws::open(addr).await;
    let b = bob.account("bob").await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let sent = alice
            .ok(json!({"op": "send", "token": a, "to": "bob", "text": format!("m{n}"), "client_id": n + 1}))
            .await;
        ids.push(sent["message"]["id"].as_u64().unwrap());
    }
    // Bob saw the first two before his connection dropped.
    bob.ok(json!({"op": "subscribe", "token": b, "from": {"after": ids[1]}}))
        .await;
    let texts = [bob.event().await, bob.event().await]
        .map(|event| event["message"]["text"].as_str().unwrap().to_string());
    assert_eq!(texts, ["m2", "m3"]);
    alice
        .ok(json!({"op": "send", "token": a, "to": "bob", "text": "m4", "client_id": 9}))
        .await;
    assert_eq!(bob.event().await["message"]["text"], "m4");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_crosses_websocket_binary_protocol_and_grpc_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut web = Ws::open(http_addr(&server)).await;
    let w = web.account("webby").await;
    web.ok(json!({"op": "subscribe", "token": w, "from": "now"}))
        .await;
    let wire = Client::connect(&[server.wire_addr().to_string()])
        .await
        .unwrap();
    wire.create_account("wiry", "", PASSWORD).await.unwrap();
    let wire_token = wire.login("wiry", PASSWORD).await.unwrap().token;
    let grpc_config = ClientConfig {
        transport: Protocol::Grpc,
        ..ClientConfig::new(&[server.grpc_addr().unwrap().to_string()])
    };
    let grpc = Client::connect_with(grpc_config).await.unwrap();
    grpc.create_account("grpcy", "", PASSWORD).await.unwrap();
    let grpc_token = grpc.login("grpcy", PASSWORD).await.unwrap().token;

    web.ok(json!({"op": "send", "token": w, "to": "wiry", "text": "from the web", "client_id": 1}))
        .await;
    let got = wire.fetch_unread(wire_token, None).await.unwrap();
    assert_eq!(got[0].text, "from the web");
    assert_eq!(got[0].from, "webby");
    wire.send(
        wire_token,
        "grpcy",
        &format!("{} (via wire)", got[0].text),
        1,
    )
    .await
    .unwrap();
    let got = grpc.fetch_unread(grpc_token, None).await.unwrap();
    assert_eq!(got[0].text, "from the web (via wire)");
    grpc.send(
        grpc_token,
        "webby",
        &format!("{} (via grpc)", got[0].text),
        1,
    )
    .await
    .unwrap();
    // The receipt of webby's own message (delivered) may come first.
    let event = loop {
        let event = web.event().await;
        if event["type"] != "receipt" {
            break event;
        }
    };
    assert_eq!(event["type"], "message");
    assert_eq!(event["message"]["from"], "grpcy");
    assert_eq!(
        event["message"]["text"],
        "from the web (via wire) (via grpc)"
    );
    // The same message, the same id, whatever the protocol that reads it.
    let history = grpc.history(grpc_token, "webby", None, None).await.unwrap();
    let last = history.messages.last().unwrap();
    assert_eq!(json!(last.id.0), event["message"]["id"]);
    server.shutdown().await.unwrap();
}

/// One HTTP/1.1 request over a fresh connection; the answer's head and body.
async fn http_get(addr: SocketAddr, path: &str, extra: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy_and_cache_tags() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let addr = http_addr(&server);
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
    ] {
        let (head, body) = http_get(addr, path, "").await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert_eq!(header(&head, "content-type"), Some(content_type), "{path}");
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&head, "cache-control"), Some("no-cache"));
        let policy = header(&head, "content-security-policy").expect("a policy");
        assert!(policy.contains("default-src 'self'"), "{policy}");
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(policy.contains(&format!("ws://{addr}")), "{policy}");
        assert!(!body.is_empty());
        let tag = header(&head, "etag").expect("an entity tag").to_string();
        let (head, body) = http_get(addr, path, &format!("If-None-Match: {tag}\r\n")).await;
        assert!(head.starts_with("http/1.1 304"), "{path}: {head}");
        assert!(body.is_empty());
    }
    let (head, _) = http_get(addr, "/index.php", "").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    let (head, _) = http_get(addr, "/api/ws", "").await;
    assert!(head.starts_with("http/1.1 426"), "{head}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_websocket_from_another_sites_page_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let addr = http_addr(&server);
    let mut request = format!("ws://{addr}/api/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let refused = tokio_tungstenite::client_async(request, stream).await;
    assert!(refused.is_err(), "a cross-origin socket opened");
    let mut request = format!("ws://{addr}/api/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", format!("http://{addr}").parse().unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let (socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    drop(socket);
    server.shutdown().await.unwrap();
}
