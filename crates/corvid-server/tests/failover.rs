//! The client library across a server restart: a server stops and starts again on the same
//! data directory and addresses while one client listens and another sends, over each
//! protocol.

use std::time::Duration;

use corvid_client::{Client, ClientConfig, Protocol};
use corvid_core::{Event, MessageId};
use corvid_server::{Config, RunningServer};

const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(20);

async fn start(config: Config) -> RunningServer {
    corvid_server::start(config).await.expect("server starts")
}

/// A client that keeps retrying for as long as a restart takes.
async fn client(server: &RunningServer, transport: Protocol) -> Client {
    let address = match transport {
        Protocol::Wire => server.wire_addr(),
        Protocol::Grpc => server.grpc_addr().expect("gRPC listens"),
    };
    let mut config = ClientConfig::new(&[address.to_string()]);
    config.transport = transport;
    config.initial_backoff = Duration::from_millis(20);
    config.max_backoff = Duration::from_millis(200);
    config.max_attempts = 200;
    Client::connect_with(config).await.expect("client connects")
}

async fn next_text(events: &mut corvid_client::Events) -> (MessageId, String) {
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("no error");
        if let Event::Message(message) = event {
            return (message.id, message.text);
        }
    }
}

async fn a_restart_loses_no_session_no_message_and_repeats_none(transport: Protocol) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(Config::ephemeral(dir.path())).await;
    let (wire_addr, grpc_addr) = (server.wire_addr(), server.grpc_addr());
    let sender = client(&server, transport).await;
    let listener = client(&server, transport).await;
    for name in ["alice", "bob"] {
        sender.create_account(name, name, PASSWORD).await.unwrap();
    }
    let alice = sender.login("alice", PASSWORD).await.unwrap().token;
    let bob = listener.login("bob", PASSWORD).await.unwrap().token;
    let mut events = listener.subscribe(bob, None).await.unwrap().events;
    let first = sender.send(alice, "bob", "before", 1).await.unwrap();
    assert_eq!(
        next_text(&mut events).await,
        (first.message.id, "before".into())
    );

    // The server stops; a send made meanwhile waits for it and goes through once it is back.
    server.shutdown().await.unwrap();
    let pending = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send(alice, "bob", "during", 2).await }
    });
    let mut config = Config::ephemeral(dir.path());
    config.listen = wire_addr;
    config.grpc_listen = grpc_addr;
    let server = start(config).await;
    let during = tokio::time::timeout(WAIT, pending)
        .await
        .expect("the pending send completes")
        .unwrap()
        .expect("the pending send succeeds");
    assert!(!during.duplicate);

    // Both sessions survived: the sender sends, and a retry of an acknowledged send is
    // recognised by its client id.
    let after = sender.send(alice, "bob", "after", 3).await.unwrap();
    let retried = sender.send(alice, "bob", "during", 2).await.unwrap();
    assert_eq!(
        (retried.message.id, retried.duplicate),
        (during.message.id, true)
    );

    // The listener resumed after the last message it saw: no gap, no repeat.
    assert_eq!(
        next_text(&mut events).await,
        (during.message.id, "during".into())
    );
    assert_eq!(
        next_text(&mut events).await,
        (after.message.id, "after".into())
    );
    let more = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
    assert!(more.is_err(), "nothing more: {more:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restart_loses_no_session_no_message_and_repeats_none_over_wire() {
    a_restart_loses_no_session_no_message_and_repeats_none(Protocol::Wire).await;
}

#[tokio::test]
async fn a_restart_loses_no_session_no_message_and_repeats_none_over_grpc() {
    a_restart_loses_no_session_no_message_and_repeats_none(Protocol::Grpc).await;
}
