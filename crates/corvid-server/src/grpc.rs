//! The gRPC frontend: `corvid.v1.Chat` (proto/corvid.proto) and server reflection, on
//! their own listener.
//!
//! Each RPC converts its protobuf request into a core `Request`, calls the same
//! [`Service`] as the binary protocol, and converts the answer back; `Subscribe` streams
//! the events of a [`Service::subscribe`] subscription. Errors become statuses in one
//! place, `corvid_grpc::status::to_status`. Connections are accepted here rather than by
//! tonic so that each gets the limits of the binary protocol: a connection slot and its
//! own request-rate limiter, which every RPC checks first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use corvid_core::{ApiError, ErrorCode, Request};
use corvid_grpc::convert::{RpcRequest, RpcResponse, StreamItem};
use corvid_grpc::pb;
use corvid_grpc::pb::chat_server::{Chat, ChatServer};
use corvid_grpc::status::to_status;

use crate::config::Limits;
use crate::service::{Origin, Service};

/// Connections accepted but not yet taken up by the HTTP/2 server.
const ACCEPT_QUEUE: usize = 64;

/// What every request of one connection knows about it (tonic puts it in the request's
/// extensions).
#[derive(Clone)]
pub struct ConnectionInfo {
    /// False when the server had no room for this connection: every request is refused.
    admitted: bool,
    limiter: Arc<DefaultDirectRateLimiter>,
    /// The client's address, which logins are throttled by.
    peer: std::net::SocketAddr,
}

/// A connection's byte stream: plain TCP, or TLS over it.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection, holding its connection slot for as long as it is open.
pub struct GrpcConnection {
    stream: Transport,
    info: ConnectionInfo,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connected for GrpcConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// Runs `$body` with `$io` bound to the pinned stream, whichever transport it is.
macro_rules! with_stream {
    ($connection:expr, $io:ident => $body:expr) => {
        match &mut $connection.stream {
            Transport::Plain(stream) => {
                let $io = Pin::new(stream);
                $body
            }
            Transport::Tls(stream) => {
                let $io = Pin::new(stream.as_mut());
                $body
            }
        }
    };
}

impl AsyncRead for GrpcConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        with_stream!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for GrpcConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_stream!(self, io => io.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self, io => io.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with_stream!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

/// Serves gRPC on `listener` (inside TLS with `tls`, whose ALPN must offer `h2`) until
/// `shutdown` is cancelled; then live `Subscribe` streams end and the server stops once
/// the open calls are answered.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let (accepted, mut incoming) = mpsc::channel::<io::Result<GrpcConnection>>(ACCEPT_QUEUE);
    let accepting = accept(listener, tls, limits.clone(), accepted, shutdown.clone());
    let incoming = futures::stream::poll_fn(move |cx| incoming.poll_recv(cx));

    let chat = ChatServer::new(GrpcFrontend {
        service,
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(limits.max_frame_bytes);
    let mut router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(limits.max_in_flight)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
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

/// Accepts connections and hands them to the HTTP/2 server, each with its slot and rate
/// limiter, until `shutdown`. TLS handshakes run in their own tasks, so a slow client
/// does not hold up the others.
async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    accepted: mpsc::Sender<io::Result<GrpcConnection>>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let handshake_timeout = Duration::from_secs(limits.handshake_timeout_secs);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Running out of file descriptors must not end the server: wait and retry.
                    tracing::warn!(%err, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let permit = slots.clone().try_acquire_owned().ok();
        if permit.is_none() {
            tracing::debug!(%peer, "no room for another gRPC connection");
        }
        let info = ConnectionInfo {
            admitted: permit.is_some(),
            limiter: Arc::new(RateLimiter::direct(limits.rate_quota())),
            peer,
        };
        let Some(tls) = tls.clone() else {
            let connection = GrpcConnection {
                stream: Transport::Plain(stream),
                info,
                _permit: permit,
            };
            if accepted.send(Ok(connection)).await.is_err() {
                return;
            }
            continue;
        };
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return tracing::debug!(%peer, %err, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let connection = GrpcConnection {
                stream: Transport::Tls(Box::new(stream)),
                info,
                _permit: permit,
            };
            let _ = accepted.send(Ok(connection)).await;
        });
    }
}

/// The `Chat` service over the service core.
struct GrpcFrontend {
    service: Arc<Service>,
    shutdown: CancellationToken,
}

fn status(error: ApiError) -> Status {
    to_status(&error)
}

impl GrpcFrontend {
    /// Refuses a request of a connection that has no slot or is over its rate.
    fn admit<T>(&self, request: &GrpcRequest<T>) -> Result<(), Status> {
        let Some(info) = request.extensions().get::<ConnectionInfo>() else {
            return Ok(());
        };
        if !info.admitted {
            return Err(status(ErrorCode::TooManyConnections.into()));
        }
        if info.limiter.check().is_err() {
            return Err(status(ErrorCode::RateLimited.into()));
        }
        Ok(())
    }

    /// Serves one unary RPC: decode, the service core, encode.
    async fn unary<Q: RpcRequest, A: RpcResponse>(
        &self,
        request: GrpcRequest<Q>,
    ) -> Result<GrpcResponse<A>, Status> {
        self.admit(&request)?;
        let origin = match request.extensions().get::<ConnectionInfo>() {
            Some(info) => Origin::from(info.peer),
            None => Origin::UNKNOWN,
        };
        let request = request
            .into_inner()
            .into_request()
            .map_err(|malformed| status(malformed.into()))?;
        let response = self
            .service
            .handle_from(origin, request)
            .await
            .map_err(status)?;
        match A::from_response(response) {
            Some(answer) => Ok(GrpcResponse::new(answer)),
            None => {
                tracing::error!("the service answered with another operation's response");
                Err(status(ErrorCode::Internal.into()))
            }
        }
    }
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
        self.admit(&request)?;
        let request = request
            .into_inner()
            .into_request()
            .map_err(|malformed| status(malformed.into()))?;
        let Request::Subscribe { token, after } = request else {
            return Err(status(ErrorCode::Internal.into()));
        };
        let subscription = self.service.subscribe(token, after).await.map_err(status)?;
        let first = StreamItem::Subscribed {
            last_id: subscription.last_id(),
        };
        // The stream ends with the subscription (session ended, or the subscriber fell
        // behind and must resubscribe), when the server shuts down, or when the client
        // goes away and tonic drops it, which ends the subscription.
        let shutdown = self.shutdown.clone();
        let events = futures::stream::unfold(subscription, move |mut subscription| {
            let shutdown = shutdown.clone();
            async move {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    event = subscription.next() => event,
                }?;
                let item = pb::SubscribeEvent::from(StreamItem::Event(event));
                Some((Ok(item), subscription))
            }
        });
        let stream = futures::stream::once(std::future::ready(Ok(first.into()))).chain(events);
        Ok(GrpcResponse::new(Box::pin(stream)))
    }
}
