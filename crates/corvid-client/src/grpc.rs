//! One gRPC channel to one server (`corvid.v1.Chat`, proto/corvid.proto).
//!
//! A core `Request` becomes the protobuf message of its RPC, and the answer or status
//! comes back as a core `Response` or `ClientError`, so the [`Client`](crate::Client) above
//! does not know which protocol it speaks. A subscription is a `Subscribe` stream read by
//! a task that hands its events to the [`EventRouter`]; the stream's end is what the client
//! waits on to resubscribe, as the end of a wire connection is for the binary protocol.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use corvid_core::{Event, Request, Response};
use corvid_grpc::convert::{Call, RpcResponse, StreamItem};
use corvid_grpc::pb;
use corvid_grpc::pb::chat_client::ChatClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::events::EventRouter;
use crate::tls::TlsConfig;
use crate::ClientError;

type Reply = Result<Response, ClientError>;

/// A connected channel, and the subscription stream it carries, if any.
pub(crate) struct GrpcChannel {
    address: String,
    chat: ChatClient<Channel>,
    router: Arc<EventRouter>,
    /// Cancelled when the channel is given up, or found broken.
    closed: CancellationToken,
    /// Cancelled when the live `Subscribe` stream ends (or is replaced).
    subscription: Mutex<CancellationToken>,
}

impl GrpcChannel {
    /// Connects to `address` (`host:port`): the channel is up before this returns, so an
    /// unreachable server fails here, as it does for the binary protocol.
    pub(crate) async fn open(
        address: &str,
        tls: Option<&TlsConfig>,
        connect_timeout: Duration,
        max_frame_len: usize,
        router: Arc<EventRouter>,
    ) -> Result<GrpcChannel, ClientError> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|err| invalid_address(address, err))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            let name = tls.server_name(address)?.to_str().into_owned();
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .domain_name(name);
            endpoint = endpoint
                .tls_config(config)
                .map_err(|err| ClientError::Tls(format!("{address}: {}", error_chain(&err))))?;
        }
        let channel = tokio::time::timeout(connect_timeout, endpoint.connect())
            .await
            .map_err(|_| {
                ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{address}: no answer within {connect_timeout:?}"),
                ))
            })?
            .map_err(|err| {
                ClientError::Io(std::io::Error::other(format!(
                    "{address}: {}",
                    error_chain(&err)
                )))
            })?;
        let chat = ChatClient::new(channel).max_decoding_message_size(max_frame_len);
        let ended = CancellationToken::new();
        ended.cancel();
        Ok(GrpcChannel {
            address: address.to_string(),
            chat,
            router,
            closed: CancellationToken::new(),
            subscription: Mutex::new(ended),
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    /// A token cancelled when the live subscription stream ends.
    pub(crate) fn subscription_ended(&self) -> CancellationToken {
        lock(&self.subscription).clone()
    }

    /// Calls the RPC of `request` and waits at most `timeout` for its answer.
    pub(crate) async fn request(&self, request: Request, timeout: Duration) -> Reply {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        let answer = tokio::time::timeout(timeout, self.call(Call::from(request))).await;
        let reply = answer.unwrap_or(Err(ClientError::Timeout));
        if matches!(reply, Err(ClientError::Io(_) | ClientError::Closed)) {
            // The channel is broken: let the client move on to the next server.
            self.close();
        }
        reply
    }

    async fn call(&self, call: Call) -> Reply {
        let mut chat = self.chat.clone();
        match call {
            Call::Ping(m) => answer(chat.ping(m).await),
            Call::CreateAccount(m) => answer(chat.create_account(m).await),
            Call::Login(m) => answer(chat.login(m).await),
            Call::Logout(m) => answer(chat.logout(m).await),
            Call::DeleteAccount(m) => answer(chat.delete_account(m).await),
            Call::ListAccounts(m) => answer(chat.list_accounts(m).await),
            Call::Send(m) => answer(chat.send(m).await),
            Call::FetchUnread(m) => answer(chat.fetch_unread(m).await),
            Call::MarkRead(m) => answer(chat.mark_read(m).await),
            Call::History(m) => answer(chat.history(m).await),
            Call::DeleteMessages(m) => answer(chat.delete_messages(m).await),
            Call::Subscribe(m) => self.subscribe(m).await,
        }
    }

    /// Opens a `Subscribe` stream, waits for its first item, and leaves a task reading
    /// the rest. A new subscription replaces the one before, as on a wire connection.
    async fn subscribe(&self, request: pb::SubscribeRequest) -> Reply {
        let mut stream = self
            .chat
            .clone()
            .subscribe(request)
            .await
            .map_err(error)?
            .into_inner();
        let last_id = match stream.message().await.map_err(error)? {
            Some(first) => match StreamItem::try_from(first) {
                Ok(StreamItem::Subscribed { last_id }) => last_id,
                Ok(other) => {
                    return Err(ClientError::Protocol(format!(
                        "a subscription began with {other:?}"
                    )))
                }
                Err(malformed) => return Err(ClientError::Protocol(malformed.to_string())),
            },
            None => return Err(ClientError::Closed),
        };
        let ended = self.closed.child_token();
        let previous = std::mem::replace(&mut *lock(&self.subscription), ended.clone());
        previous.cancel();
        tokio::spawn(read_events(
            stream,
            self.router.clone(),
            self.address.clone(),
            ended,
            self.closed.clone(),
        ));
        Ok(Response::Subscribed { last_id })
    }
}

impl Drop for GrpcChannel {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// Hands the events of a subscription stream to the router until the stream ends, then
/// cancels `ended`. A broken stream means a broken channel: `closed` is cancelled too.
async fn read_events(
    mut stream: Streaming<pb::SubscribeEvent>,
    router: Arc<EventRouter>,
    address: String,
    ended: CancellationToken,
    closed: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            () = ended.cancelled() => break,
            item = stream.message() => item,
        };
        match item {
            Ok(Some(item)) => match StreamItem::try_from(item) {
                Ok(StreamItem::Event(event)) => {
                    let last = matches!(event, Event::SessionEnded { .. });
                    router.deliver(event);
                    if last {
                        break;
                    }
                }
                Ok(StreamItem::Subscribed { .. }) => {
                    tracing::debug!(%address, "a second `subscribed` in one stream");
                }
                // Like a wire frame with a bad body: skipped.
                Err(malformed) => tracing::debug!(%address, %malformed, "bad event skipped"),
            },
            Ok(None) => {
                tracing::debug!(%address, "the server ended the subscription stream");
                break;
            }
            Err(status) => {
                tracing::debug!(%address, %status, "the subscription stream broke");
                if corvid_grpc::status::from_status(&status).is_none() {
                    closed.cancel();
                }
                break;
            }
        }
    }
    ended.cancel();
}

fn lock(token: &Mutex<CancellationToken>) -> MutexGuard<'_, CancellationToken> {
    // A token is replaced in one assignment, so a poisoned lock still holds a valid one.
    token
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The core response of a unary RPC's answer.
fn answer<A: RpcResponse>(result: Result<tonic::Response<A>, Status>) -> Reply {
    let message = result.map_err(error)?.into_inner();
    message
        .into_response()
        .map_err(|malformed| ClientError::Protocol(malformed.to_string()))
}

/// A status as a client error: the Corvid error it carries, else what its gRPC code
/// says about the transport.
fn error(status: Status) -> ClientError {
    if let Some(error) = corvid_grpc::status::from_status(&status) {
        return ClientError::Api(error);
    }
    match status.code() {
        Code::DeadlineExceeded => ClientError::Timeout,
        // Connection refused or reset, a dropped channel: the transport, not the request.
        Code::Unavailable | Code::Cancelled | Code::Unknown => {
            ClientError::Io(std::io::Error::other(status_text(&status)))
        }
        // What a plain HTTP/2 client reads from a TLS listener (or from something that is
        // not gRPC at all): the connection, not the request, is wrong.
        Code::Internal if status_text(&status).contains("h2 protocol error") => {
            ClientError::Io(std::io::Error::other(format!(
                "the server does not speak plain gRPC here (does it want TLS?): {}",
                status.message()
            )))
        }
        _ => ClientError::Protocol(status_text(&status)),
    }
}

fn status_text(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&error_chain(source));
    }
    text
}

/// An error and its causes, `a: b: c`, so that "connection refused" is not hidden
/// behind "transport error".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn invalid_address(address: &str, err: impl std::fmt::Display) -> ClientError {
    ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{address}: not a valid address: {err}"),
    ))
}
