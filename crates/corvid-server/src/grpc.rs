//! The gRPC frontend: `corvid.v1.Chat` (proto/corvid.proto) and server reflection, on
//! their own listener.
//!
//! Each RPC converts its protobuf request into a core `Request`, calls the same
//! [`Service`] as the binary protocol, and converts the answer back; `Subscribe` streams
//! the events of a [`Service::subscribe`] subscription. Errors become statuses in one
//! place, `corvid_grpc::status::to_status`. Connections come through the server's front
//! door (`admission`) rather than tonic's own listener, so that each gets the binary
//! protocol's slot, deadlines and request-rate limiter. `limits` applies the rate limit,
//! and the per-request limits HTTP/2 calls for, to every request of a connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use corvid_core::{ApiError, ErrorCode, Request};
use corvid_grpc::convert::{RpcRequest, RpcResponse, StreamItem};
use corvid_grpc::pb;
use corvid_grpc::pb::chat_server::{Chat, ChatServer};
use corvid_grpc::status::to_status;

use crate::admission::{
    proves_session, Admission, CompanionIo, Connection, ConnectionState, Frontend, Protocol,
    StreamCompanion,
};
use crate::config::Limits;
use crate::service::{Origin, Service};

mod limits;

use limits::{ConnectionLimits, LimitedConnection, RequestLimitLayer, MAX_DATA_FRAME};

/// Streams a connection may reset by sending bad frames before it is closed (GOAWAY);
/// hyper's own default, which tonic leaves unset (no limit).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// HTTP/2 flow-control windows for what a client sends: request bytes a connection
/// holds that no handler has read are bounded by the connection window; what handlers
/// read is bounded by `limits.grpc_request_buffer_bytes`.
const REQUEST_CONNECTION_WINDOW: u32 = 1 << 20;
const REQUEST_STREAM_WINDOW: u32 = 256 << 10;

/// Connections accepted but not yet taken up by the HTTP/2 server.
const ACCEPT_QUEUE: usize = 64;
/// The client connection preface of HTTP/2 (RFC 9113, section 3.4), which the handshake
/// deadline covers.
const HTTP2_PREFACE_LEN: usize = 24;

/// What every request of one connection knows about it (tonic puts it in the request's
/// extensions).
#[derive(Clone)]
pub struct ConnectionInfo {
    limiter: Arc<crate::admission::RequestRate>,
    state: Arc<ConnectionState>,
    /// The client's address, which logins are throttled by.
    peer: std::net::SocketAddr,
}

/// An admitted connection as tonic gets it: its stream keeps its deadlines and slot.
pub type IncomingConnection = CompanionIo<ConnectionInfo>;

impl StreamCompanion for ConnectionInfo {}

impl Connected for IncomingConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.companion.clone()
    }
}

/// Hands the connections the front door admits to the HTTP/2 server.
struct Handoff {
    accepted: mpsc::Sender<io::Result<IncomingConnection>>,
}

impl Frontend for Handoff {
    const PROTOCOL: Protocol = Protocol {
        name: crate::metrics::GRPC,
        handshake_bytes: HTTP2_PREFACE_LEN,
        closes_when_idle: true,
    };

    async fn serve(self: Arc<Self>, connection: Connection) {
        let connection = IncomingConnection::new(
            connection.io,
            ConnectionInfo {
                limiter: connection.limiter,
                state: connection.state,
                peer: connection.peer,
            },
        );
        // The server stopped taking connections: this one closes as it is dropped.
        let _ = self.accepted.send(Ok(connection)).await;
    }
}

/// Serves gRPC on `listener` (inside TLS with `tls`, whose ALPN must offer `h2`) through the
/// server's front door until `shutdown` is cancelled; then live `Subscribe` streams end and
/// the server stops once the open calls are answered.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
) {
    let limits = admission.limits().clone();
    let (accepted, mut incoming) = mpsc::channel::<io::Result<IncomingConnection>>(ACCEPT_QUEUE);
    let accepting = admission.serve(listener, tls, Arc::new(Handoff { accepted }));
    let request_limits = limits.clone();
    let incoming = futures::stream::poll_fn(move |cx| incoming.poll_recv(cx))
        .map(move |accepted| accepted.map(|c| LimitedConnection::new(c, &request_limits)));

    let chat = ChatServer::new(GrpcFrontend {
        service,
        shutdown: shutdown.clone(),
        limits: limits.clone(),
    })
    .max_decoding_message_size(limits.max_frame_bytes);
    // Requests in flight are counted by `RequestLimitLayer`, whose permit lives until
    // the answer is written; tonic's own per-connection limit frees its slot as soon as
    // the handler returns.
    let mut router = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.grpc_max_streams)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .initial_connection_window_size(REQUEST_CONNECTION_WINDOW)
        .initial_stream_window_size(REQUEST_STREAM_WINDOW)
        .max_frame_size(MAX_DATA_FRAME)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(RequestLimitLayer)
        .add_service(chat);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(corvid_grpc::FILE_DESCRIPTOR_SET)
    };
    // Both versions: grpcurl and others still ask v1alpha.
    match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => router = router.add_service(v1).add_service(v1alpha),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(%err, "gRPC reflection is off: the descriptor set is invalid");
        }
    }
    let serving = router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned());
    let ((), served) = tokio::join!(accepting, serving);
    if let Err(err) = served {
        tracing::error!(%err, "the gRPC server failed");
    }
}

/// The `Chat` service over the service core.
struct GrpcFrontend {
    service: Arc<Service>,
    shutdown: CancellationToken,
    limits: Limits,
}

fn status(error: ApiError) -> Status {
    to_status(&error)
}

impl GrpcFrontend {
    /// Serves one unary RPC: decode, the service core, encode. The rate limit was applied
    /// to the request before it got here (`limits`).
    async fn unary<Q: RpcRequest, A: RpcResponse>(
        &self,
        request: GrpcRequest<Q>,
    ) -> Result<GrpcResponse<A>, Status> {
        let state = connection_state(&request);
        // The connection is not idle while a call is in progress.
        let _call = state.as_ref().map(|state| state.call_started());
        let origin = match request.extensions().get::<ConnectionLimits>() {
            Some(limits) => Origin::from(limits.info().peer),
            None => Origin::UNKNOWN,
        };
        let request = request
            .into_inner()
            .into_request()
            .map_err(|malformed| status(malformed.into()))?;
        let response = self
            .service
            .serve(crate::metrics::GRPC, origin, request)
            .await
            .map_err(status)?;
        if let Some(state) = &state {
            if proves_session(&response) {
                state.authenticated();
            }
        }
        match A::from_response(response) {
            Some(answer) => Ok(GrpcResponse::new(answer)),
            None => {
                tracing::error!("the service answered with another operation's response");
                Err(status(ErrorCode::Internal.into()))
            }
        }
    }
}

/// The state of the connection a request came on, if it came through the front door.
fn connection_state<T>(request: &GrpcRequest<T>) -> Option<Arc<ConnectionState>> {
    request
        .extensions()
        .get::<ConnectionLimits>()
        .map(|limits| limits.info().state.clone())
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Chat for GrpcFrontend {
    async fn ping(
        &self,
        request: GrpcRequest<pb::PingRequest>,
    ) -> Result<GrpcResponse<pb::PingResponse>, Status> {
        self.unary(request).await
    }

    async fn create_account(
        &self,
        request: GrpcRequest<pb::CreateAccountRequest>,
    ) -> Result<GrpcResponse<pb::CreateAccountResponse>, Status> {
        self.unary(request).await
    }

    async fn login(
        &self,
        request: GrpcRequest<pb::LoginRequest>,
    ) -> Result<GrpcResponse<pb::LoginResponse>, Status> {
        self.unary(request).await
    }

    async fn logout(
        &self,
        request: GrpcRequest<pb::LogoutRequest>,
    ) -> Result<GrpcResponse<pb::LogoutResponse>, Status> {
        self.unary(request).await
    }

    async fn delete_account(
        &self,
        request: GrpcRequest<pb::DeleteAccountRequest>,
    ) -> Result<GrpcResponse<pb::DeleteAccountResponse>, Status> {
        self.unary(request).await
    }

    async fn list_accounts(
        &self,
        request: GrpcRequest<pb::ListAccountsRequest>,
    ) -> Result<GrpcResponse<pb::ListAccountsResponse>, Status> {
        self.unary(request).await
    }

    async fn send(
        &self,
        request: GrpcRequest<pb::SendRequest>,
    ) -> Result<GrpcResponse<pb::SendResponse>, Status> {
        self.unary(request).await
    }

    async fn fetch_unread(
        &self,
        request: GrpcRequest<pb::FetchUnreadRequest>,
    ) -> Result<GrpcResponse<pb::FetchUnreadResponse>, Status> {
        self.unary(request).await
    }

    async fn mark_read(
        &self,
        request: GrpcRequest<pb::MarkReadRequest>,
    ) -> Result<GrpcResponse<pb::MarkReadResponse>, Status> {
        self.unary(request).await
    }

    async fn history(
        &self,
        request: GrpcRequest<pb::HistoryRequest>,
    ) -> Result<GrpcResponse<pb::HistoryResponse>, Status> {
        self.unary(request).await
    }

    async fn delete_messages(
        &self,
        request: GrpcRequest<pb::DeleteMessagesRequest>,
    ) -> Result<GrpcResponse<pb::DeleteMessagesResponse>, Status> {
        self.unary(request).await
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: GrpcRequest<pb::SubscribeRequest>,
    ) -> Result<GrpcResponse<EventStream>, Status> {
        let state = connection_state(&request);
        let place = match &state {
            Some(state) => {
                let max = self.limits.max_subscriptions_per_connection;
                let place = state.add_subscription(max).ok_or_else(|| {
                    let message = format!("this connection already has {max} live subscriptions");
                    status(ApiError::new(ErrorCode::TooManySubscriptions, message))
                })?;
                Some(place)
            }
            None => None,
        };
        let call = state.as_ref().map(|state| state.call_started());
        let request = request
            .into_inner()
            .into_request()
            .map_err(|malformed| status(malformed.into()))?;
        let Request::Subscribe { token, from } = request else {
            return Err(status(ErrorCode::Internal.into()));
        };
        let subscription = self
            .service
            .subscribe_over(crate::metrics::GRPC, token, from)
            .await
            .map_err(status)?;
        if let Some(state) = &state {
            state.authenticated();
        }
        let first = StreamItem::Subscribed {
            last_id: subscription.last_id(),
        };
        // A subscription the hub drops for falling behind ends its stream, and the client
        // resumes with `after`; but a stream is only polled while the client lets the
        // server send on it (its HTTP/2 window is open). If it has not ended within the
        // write deadline, the client is not reading it, and the connection is closed.
        let stream_ended = CancellationToken::new();
        if let Some(state) = &state {
            let fell_behind = subscription.fell_behind();
            let (ended, state) = (stream_ended.clone(), state.clone());
            let write_timeout = Duration::from_secs(self.limits.write_timeout_secs);
            tokio::spawn(async move {
                tokio::select! {
                    _ = ended.cancelled() => {}
                    _ = async { fell_behind.await; tokio::time::sleep(write_timeout).await } => {
                        tracing::debug!("closing a gRPC connection that does not read its Subscribe stream");
                        state.close();
                    }
                }
            });
        }
        // What the stream holds until it ends: the connection's subscription place, its
        // call in progress, and the end signal of the watch above.
        let held = (place, call, stream_ended.drop_guard());
        // The stream ends with the subscription (session ended, or the subscriber fell
        // behind and must resubscribe), when the server shuts down, or when the client
        // goes away and tonic drops it, which ends the subscription.
        let shutdown = self.shutdown.clone();
        let events =
            futures::stream::unfold((subscription, held), move |(mut subscription, held)| {
                let shutdown = shutdown.clone();
                async move {
                    let event = tokio::select! {
                        _ = shutdown.cancelled() => None,
                        event = subscription.next() => event,
                    }?;
                    let item = pb::SubscribeEvent::from(StreamItem::Event(event));
                    Some((Ok(item), (subscription, held)))
                }
            });
        let stream = futures::stream::once(std::future::ready(Ok(first.into()))).chain(events);
        Ok(GrpcResponse::new(Box::pin(stream)))
    }
}
