//! The client against a fake server: pipelining, events, failover, timeouts.

mod fake_server;

use std::future::Future;
use std::time::Duration;

use corvid_client::{Client, ClientConfig, ClientError};
use corvid_core::{
    ApiError, EndReason, ErrorCode, Event, LeaderAddrs, Message, MessageId, ReceiptStatus, Request,
    Response, SubscribeFrom, Token,
};
use corvid_wire::Frame;
use fake_server::{refusing_address, FakeServer};

const TOKEN: Token = Token([7; 16]);

/// Every test stops by itself, whatever the client does.
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), test)
        .await
        .expect("the test took too long")
}

fn message(id: u64, text: &str) -> Message {
    Message {
        id: MessageId(id),
        from: "alice".to_string(),
        to: "bob".to_string(),
        text: text.to_string(),
        sent_at: 1_700_000_000_000 + id,
        status: ReceiptStatus::Sent,
    }
}

fn quick_config(servers: &[String]) -> ClientConfig {
    let mut config = ClientConfig::new(servers);
    config.initial_backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_millis(50);
    config
}

/// Answers a send request by echoing its text in a stored message.
fn answer_send(id: u32, request: &Request, message_id: u64) -> Frame {
    let Request::Send { text, .. } = request else {
        panic!("expected a send, got {request:?}");
    };
    Frame::Response {
        id,
        response: Response::Sent {
            message: message(message_id, text),
            duplicate: false,
        },
    }
}

#[tokio::test]
async fn pipelined_requests_answered_out_of_order_reach_their_callers() {
    bounded(async {
        let mut server = FakeServer::start().await;
        let client = Client::connect(&[server.address.clone()]).await.unwrap();
        let mut connection = server.accept().await;

        let calls = ["one", "two", "three"].map(|text| {
            let client = client.clone();
            tokio::spawn(async move { client.send(TOKEN, "bob", text, 1).await })
        });
        let mut requests = Vec::new();
        for _ in 0..3 {
            requests.push(connection.request().await);
        }
        let ids: std::collections::HashSet<u32> = requests.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), 3, "every request has its own id");
        assert!(!ids.contains(&0), "id 0 is reserved for events");
        // All three are in flight on one connection; answer the newest first.
        for (n, (id, request)) in requests.iter().enumerate().rev() {
            connection.send(answer_send(*id, request, 100 + n as u64));
        }
        for (call, text) in calls.into_iter().zip(["one", "two", "three"]) {
            let sent = call.await.unwrap().unwrap();
            assert_eq!(sent.message.text, text);
        }
    })
    .await;
}

#[tokio::test]
async fn a_rejection_reaches_the_caller_with_its_code() {
    bounded(async {
        let mut server = FakeServer::start().await;
        let client = Client::connect(&[server.address.clone()]).await.unwrap();
        let mut connection = server.accept().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.send(TOKEN, "nobody", "hi", 1).await }
        });
        let (id, _) = connection.request().await;
        connection.send(Frame::Error {
            id,
            error: ApiError::from(ErrorCode::UnknownRecipient),
        });
        let error = call.await.unwrap().unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::UnknownRecipient), "{error}");
    })
    .await;
}

#[tokio::test]
async fn events_are_delivered_in_order_and_end_with_the_session() {
    bounded(async {
        let mut server = FakeServer::start().await;
        let client = Client::connect(&[server.address.clone()]).await.unwrap();
        let mut connection = server.accept().await;
        let subscribe = tokio::spawn({
            let client = client.clone();
            async move { client.subscribe(TOKEN, None).await }
        });
        let (id, request) = connection.request().await;
        assert_eq!(
            request,
            Request::Subscribe {
                token: TOKEN,
                from: SubscribeFrom::OldestUnread,
            }
        );
        connection.send(Frame::Response {
            id,
            response: Response::Subscribed {
                last_id: MessageId(5),
            },
        });
        let pushed = [
            Event::Message(message(6, "hello")),
            Event::Receipt {
                id: MessageId(3),
                status: ReceiptStatus::Read,
            },
            Event::SessionEnded {
                reason: EndReason::LoggedOut,
            },
        ];
        for event in pushed.clone() {
            connection.send(Frame::Event(event));
        }
        let mut subscription = subscribe.await.unwrap().unwrap();
        assert_eq!(subscription.last_id, MessageId(5));
        for expected in pushed {
            let event = subscription.events.recv().await.unwrap().unwrap();
            assert_eq!(event, expected);
        }
        assert!(
            subscription.events.recv().await.is_none(),
            "the stream ends with the session"
        );
    })
    .await;
}

#[tokio::test]
async fn connect_skips_a_server_that_refuses() {
    bounded(async {
        let mut server = FakeServer::start().await;
        let servers = [refusing_address().await, server.address.clone()];
        let client = Client::connect(&servers).await.unwrap();
        let _connection = server.accept().await;
        assert_eq!(client.server().await, Some(server.address.clone()));
    })
    .await;
}

#[tokio::test]
async fn connect_fails_with_an_io_error_when_no_server_answers() {
    bounded(async {
        let servers = [refusing_address().await, refusing_address().await];
        let error = Client::connect(&servers).await.unwrap_err();
        assert!(matches!(error, ClientError::Io(_)), "{error:?}");
        let error = Client::connect(&[]).await.unwrap_err();
        assert!(matches!(error, ClientError::NoServers), "{error:?}");
    })
    .await;
}

#[tokio::test]
async fn a_dropped_connection_fails_over_and_the_retry_keeps_its_client_id() {
    bounded(async {
        let mut first = FakeServer::start().await;
        let mut second = FakeServer::start().await;
        let servers = [first.address.clone(), second.address.clone()];
        let client = Client::connect_with(quick_config(&servers)).await.unwrap();
        let mut connection = first.accept().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.send(TOKEN, "bob", "hi", 4242).await }
        });
        let (_, request) = connection.request().await;
        drop(connection);

        let mut connection = second.accept().await;
        let (id, retried) = connection.request().await;
        assert_eq!(retried, request, "the retry is the same request");
        connection.send(answer_send(id, &retried, 9));
        let sent = call.await.unwrap().unwrap();
        assert_eq!(sent.message.id, MessageId(9));
        assert_eq!(client.server().await, Some(second.address.clone()));
    })
    .await;
}

#[tokio::test]
async fn not_leader_moves_the_request_to_the_next_server() {
    bounded(async {
        let mut first = FakeServer::start().await;
        let mut second = FakeServer::start().await;
        let servers = [first.address.clone(), second.address.clone()];
        let client = Client::connect_with(quick_config(&servers)).await.unwrap();
        let mut follower = first.accept().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.ping().await }
        });
        let (id, _) = follower.request().await;
        follower.send(Frame::Error {
            id,
            error: ApiError::from(ErrorCode::NotLeader),
        });
        assert!(
            follower.closed_by_client().await,
            "the client leaves the follower"
        );

        let mut leader = second.accept().await;
        let (id, request) = leader.request().await;
        assert_eq!(request, Request::Ping);
        leader.send(Frame::Response {
            id,
            response: Response::Pong,
        });
        call.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn not_leader_naming_the_leader_sends_the_retry_there_even_off_the_list() {
    bounded(async {
        let mut follower = FakeServer::start().await;
        let listed = FakeServer::start().await;
        // The leader is not in the client's list; round-robin would go to `listed`.
        let mut leader = FakeServer::start().await;
        let servers = [follower.address.clone(), listed.address.clone()];
        let client = Client::connect_with(quick_config(&servers)).await.unwrap();
        let mut connection = follower.accept().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.ping().await }
        });
        let (id, _) = connection.request().await;
        connection.send(Frame::Error {
            id,
            error: ApiError::not_leader(Some(LeaderAddrs {
                wire: Some(leader.address.clone()),
                grpc: None,
            })),
        });

        let mut at_leader = leader.accept().await;
        let (id, request) = at_leader.request().await;
        assert_eq!(request, Request::Ping);
        at_leader.send(Frame::Response {
            id,
            response: Response::Pong,
        });
        call.await.unwrap().unwrap();
        assert_eq!(client.server().await, Some(leader.address.clone()));
    })
    .await;
}

#[tokio::test]
async fn attempts_are_bounded_when_every_server_is_gone() {
    bounded(async {
        let mut server = FakeServer::start().await;
        let mut config = quick_config(&[server.address.clone()]);
        config.max_attempts = 3;
        let client = Client::connect_with(config).await.unwrap();
        drop(server.accept().await);
        drop(server);
        let error = client.ping().await.unwrap_err();
        assert!(
            matches!(error, ClientError::Io(_) | ClientError::Closed),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_request_without_an_answer_times_out() {
    bounded(async {
        let mut server = FakeServer::start().await;
        let mut config = quick_config(&[server.address.clone()]);
        config.request_timeout = Duration::from_millis(200);
        let client = Client::connect_with(config).await.unwrap();
        let mut connection = server.accept().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.ping().await }
        });
        let _ignored = connection.request().await;
        let error = call.await.unwrap().unwrap_err();
        assert!(matches!(error, ClientError::Timeout), "{error:?}");

        // The connection is still usable afterwards.
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.ping().await }
        });
        let (id, _) = connection.request().await;
        connection.send(Frame::Response {
            id,
            response: Response::Pong,
        });
        call.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_subscription_resumes_on_the_next_server_without_duplicates() {
    bounded(async {
        let mut first = FakeServer::start().await;
        let mut second = FakeServer::start().await;
        let servers = [first.address.clone(), second.address.clone()];
        let client = Client::connect_with(quick_config(&servers)).await.unwrap();
        let mut connection = first.accept().await;
        let subscribe = tokio::spawn({
            let client = client.clone();
            async move { client.subscribe(TOKEN, None).await }
        });
        let (id, _) = connection.request().await;
        connection.send(Frame::Response {
            id,
            response: Response::Subscribed {
                last_id: MessageId(3),
            },
        });
        connection.send(Frame::Event(Event::Message(message(4, "four"))));
        let mut subscription = subscribe.await.unwrap().unwrap();
        let event = subscription.events.recv().await.unwrap().unwrap();
        assert_eq!(event, Event::Message(message(4, "four")));
        drop(connection);

        // The client subscribes again by itself, after the last message it delivered.
        let mut connection = second.accept().await;
        let (id, request) = connection.request().await;
        assert_eq!(
            request,
            Request::Subscribe {
                token: TOKEN,
                from: SubscribeFrom::After(MessageId(4)),
            }
        );
        connection.send(Frame::Response {
            id,
            response: Response::Subscribed {
                last_id: MessageId(5),
            },
        });
        // A server may replay a message the client has; it is delivered once.
        connection.send(Frame::Event(Event::Message(message(4, "four"))));
        connection.send(Frame::Event(Event::Message(message(5, "five"))));
        let event = subscription.events.recv().await.unwrap().unwrap();
        assert_eq!(event, Event::Message(message(5, "five")));
    })
    .await;
}

#[tokio::test]
async fn a_subscription_from_the_oldest_unread_resumes_after_what_it_delivered() {
    bounded(async {
        let mut first = FakeServer::start().await;
        let mut second = FakeServer::start().await;
        let servers = [first.address.clone(), second.address.clone()];
        let client = Client::connect_with(quick_config(&servers)).await.unwrap();
        let mut connection = first.accept().await;
        let subscribe = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .subscribe_from(TOKEN, SubscribeFrom::OldestUnread)
                    .await
            }
        });
        let (id, request) = connection.request().await;
        let from_unread = Request::Subscribe {
            token: TOKEN,
            from: SubscribeFrom::OldestUnread,
        };
        assert_eq!(request, from_unread);
        connection.send(Frame::Response {
            id,
            response: Response::Subscribed {
                last_id: MessageId(9),
            },
        });
        let mut subscription = subscribe.await.unwrap().unwrap();
        // Lost before the replay delivered anything: the same start again.
        drop(connection);
        let mut connection = second.accept().await;
        let (id, request) = connection.request().await;
        assert_eq!(request, from_unread);
        connection.send(Frame::Response {
            id,
            response: Response::Subscribed {
                last_id: MessageId(9),
            },
        });
        connection.send(Frame::Event(Event::Message(message(7, "seven"))));
        let event = subscription.events.recv().await.unwrap().unwrap();
        assert_eq!(event, Event::Message(message(7, "seven")));
        // Lost after delivering 7: resume after it, whatever has been read meanwhile.
        drop(connection);
        let mut connection = first.accept().await;
        let (_, request) = connection.request().await;
        assert_eq!(
            request,
            Request::Subscribe {
                token: TOKEN,
                from: SubscribeFrom::After(MessageId(7)),
            }
        );
    })
    .await;
}

#[tokio::test]
async fn a_version_1_server_is_spoken_to_in_version_1() {
    bounded(async {
        let mut server = FakeServer::start_speaking(1).await;
        let client = Client::connect(&[server.address.clone()]).await.unwrap();
        let mut connection = server.accept().await;
        let ping = tokio::spawn({
            let client = client.clone();
            async move { client.call(Request::Ping).await }
        });
        let (id, request) = connection.request().await;
        assert_eq!(request, Request::Ping);
        connection.send(Frame::Response {
            id,
            response: Response::Pong,
        });
        assert_eq!(ping.await.unwrap().unwrap(), Response::Pong);
        // Version 1 has no start from the oldest unread: refused here, not sent.
        let refused = client
            .subscribe_from(TOKEN, SubscribeFrom::OldestUnread)
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Some(ErrorCode::UnsupportedVersion),
            "{refused}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_subscription_that_cannot_resume_ends_the_stream_with_the_error() {
    bounded(async {
        let mut server = FakeServer::start().await;
        let client = Client::connect_with(quick_config(&[server.address.clone()]))
            .await
            .unwrap();
        let mut connection = server.accept().await;
        let subscribe = tokio::spawn({
            let client = client.clone();
            async move { client.subscribe(TOKEN, Some(MessageId(1))).await }
        });
        let (id, _) = connection.request().await;
        connection.send(Frame::Response {
            id,
            response: Response::Subscribed {
                last_id: MessageId(1),
            },
        });
        let mut subscription = subscribe.await.unwrap().unwrap();
        drop(connection);

        let mut connection = server.accept().await;
        let (id, _) = connection.request().await;
        connection.send(Frame::Error {
            id,
            error: ApiError::from(ErrorCode::Unauthenticated),
        });
        let error = subscription.events.recv().await.unwrap().unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Unauthenticated));
        assert!(subscription.events.recv().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn rate_limited_is_retried_on_the_same_connection_after_a_pause() {
    bounded(async {
        let mut server = FakeServer::start().await;
        let client = Client::connect_with(quick_config(&[server.address.clone()]))
            .await
            .unwrap();
        let mut connection = server.accept().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.ping().await }
        });
        let (id, _) = connection.request().await;
        connection.send(Frame::Error {
            id,
            error: ApiError::from(ErrorCode::RateLimited),
        });
        let (id, request) = connection.request().await;
        assert_eq!(request, Request::Ping);
        connection.send(Frame::Response {
            id,
            response: Response::Pong,
        });
        call.await.unwrap().unwrap();
    })
    .await;
}
