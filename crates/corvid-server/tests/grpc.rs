//! The gRPC frontend in-process over real loopback sockets, spoken to with the generated
//! tonic client: the chat flow, error statuses and their metadata, malformed fields,
//! limits, reflection, and messages crossing between gRPC and the binary protocol.

mod common;

use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use corvid_client::Client;
use corvid_core::{ErrorCode, Event, MessageId};
use corvid_grpc::pb::chat_client::ChatClient;
use corvid_grpc::pb::subscribe_event::Event as PbEvent;
use corvid_grpc::{pb, status};
use corvid_server::RunningServer;

use common::{closed_by_server, corvid_code, eventually, start, PASSWORD};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(server: &RunningServer) -> ChatClient<Channel> {
    let address = server.grpc_addr().expect("gRPC is on");
    ChatClient::connect(format!("http://{address}"))
        .await
        .expect("gRPC connects")
}

async fn register(chat: &mut ChatClient<Channel>, name: &str) {
    let created = chat
        .create_account(pb::CreateAccountRequest {
            username: name.into(),
            display_name: format!("{name} (display)"),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.username, name);
}

async fn login(chat: &mut ChatClient<Channel>, name: &str) -> Vec<u8> {
    let logged_in = chat
        .login(pb::LoginRequest {
            username: name.into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(logged_in.token.len(), 16);
    logged_in.token
}

async fn send(chat: &mut ChatClient<Channel>, token: &[u8], to: &str, text: &str) -> pb::Message {
    chat.send(pb::SendRequest {
        token: token.to_vec(),
        to: to.into(),
        client_id: 0,
        text: text.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .message
    .expect("the stored message")
}

async fn subscribe(
    chat: &mut ChatClient<Channel>,
    token: &[u8],
    after: Option<u64>,
) -> (u64, Streaming<pb::SubscribeEvent>) {
    let mut stream = chat
        .subscribe(pb::SubscribeRequest {
            token: token.to_vec(),
            after,
            from_unread: false,
        })
        .await
        .unwrap()
        .into_inner();
    match next(&mut stream).await {
        PbEvent::Subscribed(subscribed) => (subscribed.last_id, stream),
        other => panic!("the first item is not `subscribed`: {other:?}"),
    }
}

async fn next(stream: &mut Streaming<pb::SubscribeEvent>) -> PbEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("not an error")
        .event
        .expect("a non-empty event")
}

#[tokio::test]
async fn two_users_chat_over_grpc_with_push_receipts_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut chat = connect(&server).await;
    chat.ping(pb::PingRequest {}).await.unwrap();
    register(&mut chat, "alice").await;
    register(&mut chat, "bob").await;
    let alice = login(&mut chat, "alice").await;
    let bob = login(&mut chat, "bob").await;

    // Offline, then fetched: the sender gets a `delivered` receipt on her stream.
    let (_, mut alice_events) = subscribe(&mut chat, &alice, None).await;
    let first = send(&mut chat, &alice, "bob", "hello bob").await;
    assert_eq!(first.status, pb::ReceiptStatus::Sent as i32);
    assert_eq!(
        (first.sender.as_str(), first.recipient.as_str()),
        ("alice", "bob")
    );
    let unread = chat
        .fetch_unread(pb::FetchUnreadRequest {
            token: bob.clone(),
            limit: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unread.messages.len(), 1);
    assert_eq!(unread.messages[0].text, "hello bob");
    assert_eq!(
        next(&mut alice_events).await,
        PbEvent::Receipt(pb::Receipt {
            id: first.id,
            status: pb::ReceiptStatus::Delivered as i32
        })
    );
    let marked = chat
        .mark_read(pb::MarkReadRequest {
            token: bob.clone(),
            ids: vec![first.id],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(marked.count, 1);
    assert_eq!(
        next(&mut alice_events).await,
        PbEvent::Receipt(pb::Receipt {
            id: first.id,
            status: pb::ReceiptStatus::Read as i32
        })
    );

    // Live: pushed on Bob's stream at once.
    let (last_id, mut bob_events) = subscribe(&mut chat, &bob, None).await;
    assert_eq!(last_id, first.id);
    let live = send(&mut chat, &alice, "bob", "are you there?").await;
    match next(&mut bob_events).await {
        PbEvent::Message(message) => assert_eq!(message, live),
        other => panic!("expected the message, got {other:?}"),
    }
    drop(bob_events);

    // Resume: a new stream after the last seen id replays exactly what was missed.
    let missed = send(&mut chat, &alice, "bob", "while away").await;
    let (_, mut bob_events) = subscribe(&mut chat, &bob, Some(live.id)).await;
    match next(&mut bob_events).await {
        PbEvent::Message(message) => assert_eq!(message.id, missed.id),
        other => panic!("expected the replay, got {other:?}"),
    }

    // Listing, history, deleting.
    let page = chat
        .list_accounts(pb::ListAccountsRequest {
            token: alice.clone(),
            pattern: "B*".into(),
            syntax: pb::PatternSyntax::Glob as i32,
            limit: Some(10),
            cursor: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.rows.len(), 1);
    assert_eq!(page.rows[0].username, "bob");
    assert!(page.rows[0].online, "bob has a live stream");
    let history = chat
        .history(pb::HistoryRequest {
            token: alice.clone(),
            with_user: "bob".into(),
            before: None,
            limit: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    let texts: Vec<_> = history.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["are you there?", "while away"]);
    assert_eq!(history.next_before, Some(live.id));
    let deleted = chat
        .delete_messages(pb::DeleteMessagesRequest {
            token: alice.clone(),
            ids: vec![first.id, 999_999],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.count, 1);

    // Deleting an account with unread messages needs `force`; the count is the detail.
    let refused = chat
        .delete_account(pb::DeleteAccountRequest {
            token: bob.clone(),
            password: PASSWORD.into(),
            force: false,
        })
        .await
        .unwrap_err();
    let error = status::from_status(&refused).unwrap();
    assert_eq!(error.code, ErrorCode::UnreadMessages);
    assert_eq!(error.detail, 2);
    assert_eq!(refused.code(), Code::FailedPrecondition);
    chat.delete_account(pb::DeleteAccountRequest {
        token: bob.clone(),
        password: PASSWORD.into(),
        force: true,
    })
    .await
    .unwrap();
    assert_eq!(
        next(&mut bob_events).await,
        PbEvent::SessionEnded(pb::SessionEnded {
            reason: pb::EndReason::AccountDeleted as i32
        })
    );
    let end = tokio::time::timeout(WAIT, bob_events.next()).await.unwrap();
    assert!(
        end.is_none(),
        "the stream ends after session_ended: {end:?}"
    );

    chat.logout(pb::LogoutRequest {
        token: alice.clone(),
    })
    .await
    .unwrap();
    // Receipts for the messages pushed to Bob come first.
    let ended = loop {
        match next(&mut alice_events).await {
            PbEvent::Receipt(_) => continue,
            other => break other,
        }
    };
    assert_eq!(
        ended,
        PbEvent::SessionEnded(pb::SessionEnded {
            reason: pb::EndReason::LoggedOut as i32
        })
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_are_statuses_with_the_corvid_code_in_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut chat = connect(&server).await;
    register(&mut chat, "alice").await;
    let alice = login(&mut chat, "alice").await;

    let taken = chat
        .create_account(pb::CreateAccountRequest {
            username: "ALICE".into(),
            display_name: String::new(),
            password: PASSWORD.into(),
        })
        .await;
    assert_eq!(corvid_code(taken), ErrorCode::UsernameTaken);
    let bad_name = chat
        .create_account(pb::CreateAccountRequest {
            username: "no spaces".into(),
            display_name: String::new(),
            password: PASSWORD.into(),
        })
        .await;
    assert_eq!(corvid_code(bad_name), ErrorCode::InvalidUsername);
    for (username, password) in [("alice", "wrong password"), ("nobody", PASSWORD)] {
        let login = chat
            .login(pb::LoginRequest {
                username: username.into(),
                password: password.into(),
            })
            .await;
        assert_eq!(corvid_code(login), ErrorCode::InvalidCredentials);
    }
    let unknown = chat
        .send(pb::SendRequest {
            token: alice.clone(),
            to: "nobody".into(),
            client_id: 0,
            text: "hi".into(),
        })
        .await;
    let status = unknown.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let metadata = status.metadata();
    assert_eq!(metadata.get(status::CODE_KEY).unwrap(), "20");
    assert_eq!(metadata.get(status::NAME_KEY).unwrap(), "unknown_recipient");
    assert_eq!(metadata.get(status::DETAIL_KEY).unwrap(), "0");
    assert_eq!(status.message(), "no such recipient");

    let bad_pattern = chat
        .list_accounts(pb::ListAccountsRequest {
            token: alice.clone(),
            pattern: "(".into(),
            syntax: pb::PatternSyntax::Regex as i32,
            limit: None,
            cursor: None,
        })
        .await;
    assert_eq!(corvid_code(bad_pattern), ErrorCode::InvalidPattern);
    let zero_limit = chat
        .fetch_unread(pb::FetchUnreadRequest {
            token: alice.clone(),
            limit: Some(0),
        })
        .await;
    assert_eq!(corvid_code(zero_limit), ErrorCode::InvalidLimit);
    let unknown_user = chat
        .history(pb::HistoryRequest {
            token: alice.clone(),
            with_user: "nobody".into(),
            before: None,
            limit: None,
        })
        .await;
    assert_eq!(corvid_code(unknown_user), ErrorCode::UnknownUser);

    // Malformed fields: a token of the wrong length, an unknown enum number.
    let short_token = chat
        .fetch_unread(pb::FetchUnreadRequest {
            token: vec![1, 2, 3],
            limit: None,
        })
        .await;
    assert_eq!(corvid_code(short_token), ErrorCode::Malformed);
    let no_token = chat
        .subscribe(pb::SubscribeRequest {
            token: Vec::new(),
            after: None,
            from_unread: false,
        })
        .await;
    assert_eq!(corvid_code(no_token), ErrorCode::Malformed);
    let unknown_syntax = chat
        .list_accounts(pb::ListAccountsRequest {
            token: alice.clone(),
            pattern: "*".into(),
            syntax: 7,
            limit: None,
            cursor: None,
        })
        .await;
    assert_eq!(corvid_code(unknown_syntax), ErrorCode::Malformed);
    let stranger = chat
        .subscribe(pb::SubscribeRequest {
            token: vec![0; 16],
            after: None,
            from_unread: false,
        })
        .await;
    assert_eq!(corvid_code(stranger), ErrorCode::Unauthenticated);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_connection_over_its_rate_is_refused_and_one_beyond_the_connection_limit_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.limits.requests_per_second = 1;
        config.limits.request_burst = 3;
        config.limits.max_connections = 1;
    })
    .await;
    let mut chat = connect(&server).await;
    let mut refused = None;
    for _ in 0..10 {
        if let Err(status) = chat.ping(pb::PingRequest {}).await {
            refused = Some(status);
            break;
        }
    }
    assert_eq!(
        corvid_code::<()>(Err(refused.expect("the rate limit bites"))),
        ErrorCode::RateLimited
    );
    // A connection with no slot is closed at once, before HTTP/2 starts.
    let mut second = TcpStream::connect(server.grpc_addr().unwrap())
        .await
        .unwrap();
    closed_by_server(&mut second).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_connection_limit_holds_for_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| config.limits.max_connections = 1).await;
    let wire = TcpStream::connect(server.wire_addr()).await.unwrap();
    eventually("the binary connection admitted", || {
        server.open_connections() == 1
    })
    .await;
    // The binary-protocol connection holds the server's only slot.
    let mut grpc = TcpStream::connect(server.grpc_addr().unwrap())
        .await
        .unwrap();
    closed_by_server(&mut grpc).await;
    drop(wire);
    eventually("the slot freed", || server.open_connections() == 0).await;
    let mut chat = connect(&server).await;
    chat.ping(pb::PingRequest {}).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_connections_without_the_preface_or_a_login_or_a_call_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.limits.handshake_timeout_secs = 1;
        config.limits.login_timeout_secs = 2;
        config.limits.grpc_idle_timeout_secs = 1;
    })
    .await;
    let address = server.grpc_addr().unwrap();
    // No preface at all, and half of it.
    let mut silent = TcpStream::connect(address).await.unwrap();
    let mut half = TcpStream::connect(address).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    closed_by_server(&mut silent).await;
    closed_by_server(&mut half).await;
    eventually("the slots freed", || server.open_connections() == 0).await;

    // An HTTP/2 connection that never logs in, and one that logs in and then has no call
    // in progress, are closed; one with a live Subscribe stream stays.
    let mut listener = connect(&server).await;
    register(&mut listener, "alice").await;
    let alice = login(&mut listener, "alice").await;
    let (_, mut events) = subscribe(&mut listener, &alice, None).await;
    let mut idle = connect(&server).await;
    login(&mut idle, "alice").await;
    let _never_logs_in = connect(&server).await;
    eventually("the connections closed", || server.open_connections() == 1).await;
    let mut sender = connect(&server).await;
    let sent = send(&mut sender, &alice, "alice", "still here?").await;
    match next(&mut events).await {
        PbEvent::Message(message) => assert_eq!(message.id, sent.id),
        other => panic!("expected the message, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

async fn stalled_channel(server: &RunningServer) -> Channel {
    let address = server.grpc_addr().expect("gRPC is on");
    // A stream window of 0: the server cannot send a byte of data on a stream until the
    // client reads it, which this client never does.
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .initial_stream_window_size(0)
        .connect()
        .await
        .expect("gRPC connects")
}

#[tokio::test]
async fn stalled_subscribe_streams_are_capped_ended_and_do_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |config| {
        config.limits.max_subscriptions_per_connection = 3;
        config.limits.subscriber_queue_bytes = 64 * 1024;
        config.limits.write_timeout_secs = 1;
        config.limits.shutdown_grace_secs = 1;
    })
    .await;
    let mut chat = connect(&server).await;
    register(&mut chat, "alice").await;
    register(&mut chat, "bob").await;
    let alice = login(&mut chat, "alice").await;
    let bob = login(&mut chat, "bob").await;

    let stalled = stalled_channel(&server).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = ChatClient::new(stalled.clone())
            .subscribe(pb::SubscribeRequest {
                token: bob.clone(),
                after: None,
                from_unread: false,
            })
            .await
            .unwrap();
        streams.push(stream);
    }
    let fourth = ChatClient::new(stalled.clone())
        .subscribe(pb::SubscribeRequest {
            token: bob.clone(),
            after: None,
            from_unread: false,
        })
        .await;
    assert_eq!(corvid_code(fourth), ErrorCode::TooManySubscriptions);

    // Messages pile up for the stalled streams until the hub drops them; the connection
    // that does not read them is then closed, and its slot freed.
    let text = "x".repeat(4096);
    for _ in 0..40 {
        send(&mut chat, &alice, "bob", &text).await;
    }
    eventually("the stalled subscriptions dropped", || {
        server.service().hub().subscribers() == 0
    })
    .await;
    eventually("the stalled connection closed", || {
        server.open_connections() == 1
    })
    .await;

    // Stalled streams that are still live when the server shuts down do not hold it up.
    let stalled = stalled_channel(&server).await;
    let _stream = ChatClient::new(stalled)
        .subscribe(pb::SubscribeRequest {
            token: bob.clone(),
            after: None,
            from_unread: false,
        })
        .await
        .unwrap();
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown is bounded whatever clients do")
        .unwrap();
}

#[tokio::test]
async fn reflection_lists_the_chat_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let address = server.grpc_addr().unwrap();
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&corvid_grpc::SERVICE_NAME), "{names:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_crosses_between_grpc_and_the_binary_protocol_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut chat = connect(&server).await;
    let wire = Client::connect(&[server.wire_addr().to_string()])
        .await
        .unwrap();
    register(&mut chat, "grace").await;
    wire.create_account("wendy", "", PASSWORD).await.unwrap();
    let grace = login(&mut chat, "grace").await;
    let wendy = wire.login("wendy", PASSWORD).await.unwrap().token;

    // gRPC → binary protocol: pushed on Wendy's wire subscription.
    let mut wendy_events = wire.subscribe(wendy, None).await.unwrap().events;
    let sent = send(&mut chat, &grace, "wendy", "from grpc").await;
    let pushed = tokio::time::timeout(WAIT, wendy_events.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Event::Message(message) = pushed else {
        panic!("expected a message, got {pushed:?}");
    };
    assert_eq!(
        (message.id, message.text.as_str(), message.from.as_str()),
        (MessageId(sent.id), "from grpc", "grace")
    );

    // Binary protocol → gRPC: pushed on Grace's gRPC stream (a receipt for her own
    // message may come first).
    let (_, mut grace_events) = subscribe(&mut chat, &grace, None).await;
    let reply = wire.send(wendy, "grace", "from the wire", 1).await.unwrap();
    loop {
        match next(&mut grace_events).await {
            PbEvent::Message(message) => {
                assert_eq!(message.id, reply.message.id.0);
                assert_eq!(message.text, "from the wire");
                assert_eq!(message.sender, "wendy");
                break;
            }
            PbEvent::Receipt(receipt) => assert_eq!(receipt.id, sent.id),
            other => panic!("unexpected {other:?}"),
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscribing_from_unread_over_grpc_gets_every_unread_message_once_then_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut chat = connect(&server).await;
    register(&mut chat, "alice").await;
    register(&mut chat, "bob").await;
    let alice = login(&mut chat, "alice").await;
    let bob = login(&mut chat, "bob").await;
    // Read before this session: not replayed.
    let read = send(&mut chat, &alice, "bob", "already read").await;
    chat.mark_read(pb::MarkReadRequest {
        token: bob.clone(),
        ids: vec![read.id],
    })
    .await
    .unwrap();
    // A new session; a message lands between its login and its subscribe, and more keep
    // arriving while the subscribe is under way.
    let phone = login(&mut chat, "bob").await;
    let between = send(&mut chat, &alice, "bob", "between").await;
    let racing = tokio::spawn({
        let mut chat = chat.clone();
        let alice = alice.clone();
        async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                ids.push(
                    send(&mut chat, &alice, "bob", &format!("racing {i}"))
                        .await
                        .id,
                );
            }
            ids
        }
    });
    let mut stream = chat
        .subscribe(pb::SubscribeRequest {
            token: phone.clone(),
            after: None,
            from_unread: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut stream).await, PbEvent::Subscribed(_)));
    let mut sent = vec![between.id];
    sent.extend(racing.await.unwrap());
    let last = send(&mut chat, &alice, "bob", "after").await.id;
    sent.push(last);
    // Every message, once, in order: the replay and the live stream meet exactly.
    let mut received = Vec::new();
    while received.last() != Some(&last) {
        match next(&mut stream).await {
            PbEvent::Message(message) => received.push(message.id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, sent);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_subscribe_with_both_after_and_from_unread_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut chat = connect(&server).await;
    register(&mut chat, "alice").await;
    let alice = login(&mut chat, "alice").await;
    let both = chat
        .subscribe(pb::SubscribeRequest {
            token: alice,
            after: Some(1),
            from_unread: true,
        })
        .await;
    assert_eq!(corvid_code(both), ErrorCode::Malformed);
    server.shutdown().await.unwrap();
}
