//! One WebSocket session of the web API: JSON requests in, answers and pushed events out.
//!
//! Requests are served concurrently (up to `max_in_flight`) and answered as they finish,
//! each under its request id. While a `subscribe` is being served nothing more is read,
//! as on the binary protocol: a second one would count twice against the account. A
//! message that is not a request gets an error and the session goes on; a message larger
//! than `max_frame_bytes` closes the session with 1009 (too big), one that takes longer
//! than `frame_timeout_secs` to arrive with 1008 (policy).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, SplitSink};
use futures::{Future, FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use corvid_core::{ApiError, ErrorCode, Request, Response};

use super::json;
use super::Arrivals;
use crate::admission::{proves_session, ConnectionState, RequestRate};
use crate::config::Limits;
use crate::service::{Service, SessionEvents};

/// Events written per turn of the session's loop before it looks at requests again.
const EVENT_BURST: usize = 64;

/// What serving one request produced.
enum Reply {
    Answer(String),
    /// A successful answer that proves the client holds a session.
    Authenticated(String),
    Subscribed {
        id: u64,
        subscription: Box<SessionEvents>,
    },
    /// A subscribe that failed: its error.
    SubscribeRefused(String),
}

type PendingReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Why the session closes, as its close frame says.
struct Closing {
    code: CloseCode,
    reason: &'static str,
}

/// What a WebSocket session needs from its connection and the server.
pub(super) struct Session {
    pub service: Arc<Service>,
    pub limits: Limits,
    pub shutdown: CancellationToken,
    pub peer: SocketAddr,
    pub limiter: Arc<RequestRate>,
    pub state: Arc<ConnectionState>,
    pub arrivals: Arc<Arrivals>,
}

impl Session {
    /// Runs the session on the upgraded stream until it closes.
    pub async fn run<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.limits.max_frame_bytes))
            .max_frame_size(Some(self.limits.max_frame_bytes))
            // What the session writes is bounded by its subscriber queue and its
            // in-flight answers; beyond that the client is not reading.
            .max_write_buffer_size(
                self.limits.subscriber_queue_bytes + 2 * self.limits.max_frame_bytes,
            );
        let socket = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
        let (mut output, mut input) = socket.split();
        // The bytes of the upgrade request are not a message.
        self.arrivals.message_done();
        let closing = match self.serve(&mut output, &mut input).await {
            Ok(closing) => closing,
            Err(err) => {
                tracing::debug!(peer = %self.peer, %err, "WebSocket session ended with an error");
                return;
            }
        };
        if let Some(Closing { code, reason }) = closing {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = output.send(WsMessage::Close(Some(frame))).await;
        }
        let _ = output.close().await;
    }

    async fn serve<S>(
        &self,
        output: &mut SplitSink<WebSocketStream<S>, WsMessage>,
        input: &mut futures::stream::SplitStream<WebSocketStream<S>>,
    ) -> Result<Option<Closing>, WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let frame_timeout = Duration::from_secs(self.limits.frame_timeout_secs);
        let mut pending: FuturesUnordered<PendingReply> = FuturesUnordered::new();
        let mut subscription: Option<Box<SessionEvents>> = None;
        let mut subscribing = false;
        let mut reading = true;
        let mut closing: Option<Closing> = None;
        // When the message that began to arrive must be complete.
        let mut frame_deadline: Option<tokio::time::Instant> = None;

        loop {
            let may_read = reading && !subscribing && pending.len() < self.limits.max_in_flight;
            if !may_read {
                // Reading paused for answers owed does not count against the client.
                frame_deadline = None;
            }
            let deadline = frame_deadline;
            tokio::select! {
                _ = self.shutdown.cancelled(), if reading || subscription.is_some() => {
                    // Write the answers owed (a send may be durable already), then close.
                    reading = false;
                    subscription = None;
                    closing = Some(Closing { code: CloseCode::Away, reason: "the server is shutting down" });
                }
                _ = self.arrivals.unfinished(), if may_read && deadline.is_none() => {
                    frame_deadline = Some(tokio::time::Instant::now() + frame_timeout);
                }
                _ = sleep_until(deadline), if may_read && deadline.is_some() => {
                    tracing::debug!(peer = %self.peer, "closing a WebSocket that sent part of a message and stopped");
                    reading = false;
                    subscription = None;
                    closing = Some(Closing { code: CloseCode::Policy, reason: "a message took too long to arrive" });
                }
                message = input.next(), if may_read => {
                    self.arrivals.message_done();
                    frame_deadline = None;
                    match message {
                        None => {
                            reading = false;
                            subscription = None;
                        }
                        Some(Ok(WsMessage::Text(text))) => {
                            if let Some(reply) = self.request(text.as_str(), &mut subscription, &mut subscribing) {
                                pending.push(reply);
                            }
                        }
                        Some(Ok(WsMessage::Binary(_))) => {
                            let error = ApiError::new(ErrorCode::Malformed, "the web API takes JSON in text messages");
                            pending.push(ready(Reply::Answer(json::error(None, &error))));
                        }
                        Some(Ok(WsMessage::Close(_))) => {
                            // tungstenite answers the close; the answers owed still go out.
                            reading = false;
                            subscription = None;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                            reading = false;
                            subscription = None;
                            closing = Some(Closing { code: CloseCode::Size, reason: "message larger than the server accepts" });
                        }
                        Some(Err(WsError::Utf8(_))) => {
                            reading = false;
                            subscription = None;
                            closing = Some(Closing { code: CloseCode::Invalid, reason: "a text message must be UTF-8" });
                        }
                        Some(Err(WsError::Protocol(_))) => {
                            reading = false;
                            subscription = None;
                            closing = Some(Closing { code: CloseCode::Protocol, reason: "WebSocket protocol error" });
                        }
                        Some(Err(err)) => return Err(err),
                    }
                }
                Some(reply) = pending.next() => {
                    self.write_reply(reply, output, &mut subscription, &mut subscribing).await?;
                    while let Some(Some(reply)) = pending.next().now_or_never() {
                        self.write_reply(reply, output, &mut subscription, &mut subscribing).await?;
                    }
                }
                event = next_event(&mut subscription) => {
                    match event {
                        Some(event) => {
                            output.feed(WsMessage::text(json::event(&event))).await?;
                            for _ in 1..EVENT_BURST {
                                match next_event(&mut subscription).now_or_never() {
                                    Some(Some(event)) => output.feed(WsMessage::text(json::event(&event))).await?,
                                    Some(None) => {
                                        // Over, as below: close once the answers owed are out.
                                        subscription = None;
                                        reading = false;
                                        closing.get_or_insert(Closing { code: CloseCode::Normal, reason: "the subscription ended" });
                                        break;
                                    }
                                    None => break,
                                }
                            }
                        }
                        None => {
                            // The session ended (its event went out) or the subscriber fell
                            // behind: the client subscribes again, after its last message id.
                            subscription = None;
                            reading = false;
                            closing.get_or_insert(Closing { code: CloseCode::Normal, reason: "the subscription ended" });
                        }
                    }
                }
            }
            output.flush().await?;
            if !reading && pending.is_empty() && subscription.is_none() {
                break;
            }
        }
        Ok(closing)
    }

    /// Turns one text message into the reply it is owed: at once for a bad one, later for
    /// a request the service serves.
    fn request(
        &self,
        text: &str,
        subscription: &mut Option<Box<SessionEvents>>,
        subscribing: &mut bool,
    ) -> Option<PendingReply> {
        // Every message counts against the rate, a bad one too.
        let limited = self.limiter.check().is_err();
        let (id, request) = match json::parse_request(text) {
            Ok(parsed) => parsed,
            Err(json::Rejected { id, error }) => {
                return Some(ready(Reply::Answer(json::error(id, &error))));
            }
        };
        if limited {
            let error = ApiError::from(ErrorCode::RateLimited);
            return Some(ready(Reply::Answer(json::error(Some(id), &error))));
        }
        let service = self.service.clone();
        let peer = self.peer;
        if let Request::Subscribe { token, from } = request {
            // A second subscribe replaces the first: end the first now, so that it does
            // not count against the account while the second starts.
            *subscription = None;
            *subscribing = true;
            return Some(Box::pin(async move {
                match service
                    .subscribe_over(crate::metrics::WEB, token, from)
                    .await
                {
                    Ok(subscription) => Reply::Subscribed {
                        id,
                        subscription: Box::new(subscription),
                    },
                    Err(error) => Reply::SubscribeRefused(json::error(Some(id), &error)),
                }
            }));
        }
        Some(Box::pin(async move {
            match service
                .serve(crate::metrics::WEB, peer.into(), request)
                .await
            {
                Ok(response) if proves_session(&response) => {
                    Reply::Authenticated(json::response(id, &response))
                }
                Ok(response) => Reply::Answer(json::response(id, &response)),
                Err(error) => Reply::Answer(json::error(Some(id), &error)),
            }
        }))
    }

    async fn write_reply<S>(
        &self,
        reply: Reply,
        output: &mut SplitSink<WebSocketStream<S>, WsMessage>,
        subscription: &mut Option<Box<SessionEvents>>,
        subscribing: &mut bool,
    ) -> Result<(), WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let text = match reply {
            Reply::Answer(text) => text,
            Reply::Authenticated(text) => {
                self.state.authenticated();
                text
            }
            Reply::Subscribed {
                id,
                subscription: new,
            } => {
                *subscribing = false;
                self.state.authenticated();
                let response = Response::Subscribed {
                    last_id: new.last_id(),
                };
                // The answer goes out before the first event of the subscription.
                *subscription = Some(new);
                json::response(id, &response)
            }
            Reply::SubscribeRefused(text) => {
                *subscribing = false;
                text
            }
        };
        output.feed(WsMessage::text(text)).await
    }
}

/// The next event of the subscription; pending forever without one, so `select!` skips it.
async fn next_event(subscription: &mut Option<Box<SessionEvents>>) -> Option<corvid_core::Event> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn ready(reply: Reply) -> PendingReply {
    Box::pin(std::future::ready(reply))
}
