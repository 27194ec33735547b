//! The binary-protocol frontend: a TCP listener speaking corvid-wire (docs/protocol.md).
//!
//! Each connection is one task. Requests are read as they arrive and served concurrently
//! (up to `max_in_flight`), and their answers are written in request order; pushed events
//! of a subscription are written between answers. The task flushes once per burst of
//! ready frames, not once per frame. With TLS on, the protocol runs inside a TLS session.
//! Connections come through the server's front door (`admission`), which keeps their
//! slots and deadlines; the one deadline that needs the protocol's framing, a frame begun
//! and not finished, is kept here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use tokio::io::ReadHalf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use corvid_core::{ApiError, ErrorCode, Request, Response};
use corvid_wire::{
    ClientHello, CodecError, DecodeError, Frame, HelloStatus, ServerHello, WireCodec, HELLO_LEN,
};

use crate::admission::{
    proves_session, Admission, Connection, ConnectionIo, ConnectionState, ConnectionStream,
    Frontend, Protocol,
};
use crate::config::Limits;
use crate::service::{Service, SessionEvents};

/// What serving one request produced, in the order the requests came.
enum Reply {
    Frame(Frame),
    Subscribed {
        id: u32,
        subscription: Box<SessionEvents>,
    },
    /// A subscribe that failed: its error frame.
    SubscribeRefused(Frame),
    /// Write this frame, then close the connection (framing was lost).
    Close(Frame),
}

impl Reply {
    /// Whether this answers a `Subscribe`.
    fn answers_subscribe(&self) -> bool {
        matches!(self, Reply::Subscribed { .. } | Reply::SubscribeRefused(_))
    }
}

type PendingReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Events written per turn of a connection's loop before it looks at requests again.
const EVENT_BURST: usize = 64;
/// Initial size of a connection's read and write buffers, in bytes.
const INITIAL_BUFFER: usize = 512;
/// Bytes of encoded frames a connection buffers before it writes them out mid-burst.
const WRITE_BOUNDARY: usize = 8 * 1024;

/// Accepts binary-protocol connections on `listener` through the server's front door until
/// `shutdown` is cancelled; open connections then answer what they were asked and close.
/// With `tls`, every connection starts with a TLS handshake, and the protocol runs inside.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
) {
    let frontend = Arc::new(WireFrontend {
        service,
        limits: admission.limits().clone(),
        shutdown,
    });
    admission.serve(listener, tls, frontend).await;
}

/// The binary protocol as a frontend of the front door.
struct WireFrontend {
    service: Arc<Service>,
    limits: Limits,
    shutdown: CancellationToken,
}

impl Frontend for WireFrontend {
    const PROTOCOL: Protocol = Protocol {
        name: crate::metrics::WIRE,
        handshake_bytes: HELLO_LEN,
        closes_when_idle: false,
    };
    const EXPLAINS_REFUSAL: bool = true;

    async fn serve(self: Arc<Self>, connection: Connection) {
        let peer = connection.peer;
        if let Err(err) = serve_connection(connection, &self).await {
            tracing::debug!(%peer, %err, "connection ended with an error");
        }
    }

    async fn refuse(self: Arc<Self>, stream: ConnectionStream) {
        // docs/protocol.md: the client's hello is answered, then the error frame says why
        // the connection closes.
        let _ = refuse(stream, &self.limits).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("handshake: {0}")]
    Handshake(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Reads the client's hello and answers it. Returns the protocol version agreed on, or
/// `None` when no frames may follow.
async fn hello<S>(stream: &mut S) -> Result<Option<u16>, ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello).await?;
    let client =
        ClientHello::decode(hello).map_err(|e| ConnectionError::Handshake(e.to_string()))?;
    let answer = ServerHello::answer(&client);
    stream.write_all(&answer.encode()).await?;
    Ok((answer.status == HelloStatus::Ok).then_some(answer.version))
}

/// Tells a connection with no slot that the server is full, then closes it.
async fn refuse(mut stream: ConnectionStream, limits: &Limits) -> Result<(), ConnectionError> {
    let Some(version) = hello(&mut stream).await? else {
        return Ok(());
    };
    let codec = WireCodec::new(limits.max_frame_bytes).with_version(version);
    let mut output = FramedWrite::new(stream, codec);
    let error = ApiError::from(ErrorCode::TooManyConnections);
    SinkExt::<Frame>::send(&mut output, Frame::Error { id: 0, error }).await?;
    Ok(())
}

async fn serve_connection(
    connection: Connection,
    frontend: &WireFrontend,
) -> Result<(), ConnectionError> {
    let Connection {
        io: mut stream,
        peer,
        limiter,
        state,
    } = connection;
    let (service, limits, shutdown) = (&frontend.service, &frontend.limits, &frontend.shutdown);
    // The stream's handshake deadline bounds the hello.
    let Some(version) = hello(&mut stream).await? else {
        return Ok(());
    };

    let (read, write) = tokio::io::split(stream);
    // Most connections are idle most of the time: start both buffers small (they grow to
    // fit a burst), but keep the write side's flush threshold at its usual 8 KiB.
    // The connection speaks the version the hello agreed on.
    let codec = WireCodec::new(limits.max_frame_bytes).with_version(version);
    let mut input = FramedRead::with_capacity(read, codec, INITIAL_BUFFER);
    let mut output = FramedWrite::with_capacity(write, codec, INITIAL_BUFFER);
    output.set_backpressure_boundary(WRITE_BOUNDARY);

    let frame_timeout = Duration::from_secs(limits.frame_timeout_secs);
    let mut pending: FuturesOrdered<PendingReply> = FuturesOrdered::new();
    let mut subscription: Option<Box<SessionEvents>> = None;
    // A subscribe is being served (read, not yet answered).
    let mut subscribing = false;
    let mut reading = true;
    // Set while a frame has begun to arrive: when it must be complete.
    let mut frame_deadline: Option<Pin<Box<Sleep>>> = None;

    loop {
        // While a subscribe is being served nothing more is read: a second one would
        // register before the first is answered (and so replaced), and count twice against
        // the account's subscriptions.
        let may_read = reading && !subscribing && pending.len() < limits.max_in_flight;
        if !may_read {
            // Reading paused for answers owed does not count against the client.
            frame_deadline = None;
        }
        tokio::select! {
            // Shutting down: read no more requests and end the subscription, but write the
            // answers owed (a send may be durable already); the server's grace period and
            // then `close_all` bound how long that may take.
            _ = shutdown.cancelled(), if reading || subscription.is_some() => {
                reading = false;
                subscription = None;
            }
            frame = next_frame(&mut input, &mut frame_deadline, frame_timeout), if may_read => {
                let Some(frame) = frame else {
                    tracing::debug!("closing a connection that sent part of a frame and stopped");
                    break;
                };
                match frame {
                    None => {
                        // The client closed its side: answer what it asked, then close; its
                        // subscription (if any) ends now, so it is no longer online.
                        reading = false;
                        subscription = None;
                    }
                    Some(Ok(Ok(Frame::Request { id, request }))) => {
                        if limiter.check().is_err() {
                            pending.push_back(ready(error_frame(id, ErrorCode::RateLimited.into())));
                        } else {
                            if matches!(request, Request::Subscribe { .. }) {
                                // A second subscribe on one connection replaces the first:
                                // end the first now, so that it does not count against the
                                // account's subscriptions while the second starts.
                                subscription = None;
                                subscribing = true;
                            }
                            pending.push_back(serve_request(service, peer, id, request));
                        }
                    }
                    Some(Ok(Ok(other))) => {
                        let error = ApiError::new(ErrorCode::Malformed, "a client may only send requests");
                        pending.push_back(ready(error_frame(other.request_id(), error)));
                    }
                    Some(Ok(Err(malformed))) => {
                        pending.push_back(ready(Reply::Frame(DecodeError::Malformed(malformed).error_frame())));
                    }
                    Some(Err(CodecError::Decode(fatal))) => {
                        pending.push_back(ready(Reply::Close(fatal.error_frame())));
                        reading = false;
                    }
                    Some(Err(err)) => return Err(err.into()),
                }
            }
            Some(reply) = pending.next() => {
                subscribing &= !reply.answers_subscribe();
                if !write_reply(reply, &mut output, &mut subscription, &state).await? {
                    break;
                }
                // Answers that are ready too go out in the same write.
                while let Some(Some(reply)) = pending.next().now_or_never() {
                    subscribing &= !reply.answers_subscribe();
                    if !write_reply(reply, &mut output, &mut subscription, &state).await? {
                        return Ok(SinkExt::<Frame>::flush(&mut output).await?);
                    }
                }
            }
            event = next_event(&mut subscription) => {
                match event {
                    Some(event) => {
                        feed(&mut output, Frame::Event(event)).await?;
                        for _ in 1..EVENT_BURST {
                            match next_event(&mut subscription).now_or_never() {
                                Some(Some(event)) => feed(&mut output, Frame::Event(event)).await?,
                                Some(None) => { subscription = None; reading = false; break; }
                                None => break,
                            }
                        }
                    }
                    None => {
                        // The session ended or the subscriber fell behind: finish the answers
                        // already owed, then close, so the client resubscribes from its last id.
                        subscription = None;
                        reading = false;
                    }
                }
            }
            else => break,
        }
        SinkExt::<Frame>::flush(&mut output).await?;
        if !reading && pending.is_empty() && subscription.is_none() {
            break;
        }
    }
    SinkExt::<Frame>::flush(&mut output).await?;
    Ok(())
}

type Input = FramedRead<ReadHalf<ConnectionIo>, WireCodec>;

/// The next frame (or end of input) from the client; `None` when a frame that began to
/// arrive did not complete within `timeout`. The deadline starts with a frame's first
/// bytes, and `deadline` keeps it from one call to the next.
fn next_frame<'a>(
    input: &'a mut Input,
    deadline: &'a mut Option<Pin<Box<Sleep>>>,
    timeout: Duration,
) -> impl Future<Output = Option<Option<<Input as Stream>::Item>>> + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(frame) = input.poll_next_unpin(cx) {
            *deadline = None;
            return Poll::Ready(Some(frame));
        }
        if input.read_buffer().is_empty() {
            *deadline = None;
            return Poll::Pending;
        }
        let timer = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// The next event of the subscription; pending forever without one, so `select!` skips it.
async fn next_event(subscription: &mut Option<Box<SessionEvents>>) -> Option<corvid_core::Event> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

/// Writes one reply. Returns false when the connection must close.
async fn write_reply<W>(
    reply: Reply,
    output: &mut FramedWrite<W, WireCodec>,
    subscription: &mut Option<Box<SessionEvents>>,
    state: &ConnectionState,
) -> Result<bool, ConnectionError>
where
    W: AsyncWrite + Unpin,
{
    match reply {
        Reply::Frame(frame) => {
            if let Frame::Response { response, .. } = &frame {
                if proves_session(response) {
                    state.authenticated();
                }
            }
            feed(output, frame).await?
        }
        Reply::Subscribed {
            id,
            subscription: new,
        } => {
            let response = Response::Subscribed {
                last_id: new.last_id(),
            };
            feed(output, Frame::Response { id, response }).await?;
            state.authenticated();
            // A second subscribe on one connection replaces the first.
            *subscription = Some(new);
        }
        Reply::SubscribeRefused(frame) => feed(output, frame).await?,
        Reply::Close(frame) => {
            feed(output, frame).await?;
            return Ok(false);
        }
    }
    Ok(true)
}

/// Encodes a frame; a value too long for the wire becomes an internal error for its request.
async fn feed<W: AsyncWrite + Unpin>(
    output: &mut FramedWrite<W, WireCodec>,
    frame: Frame,
) -> Result<(), ConnectionError> {
    let id = frame.request_id();
    match SinkExt::<Frame>::feed(output, frame).await {
        Err(CodecError::Encode(err)) => {
            tracing::error!(%err, "answer cannot be encoded");
            let error = ApiError::from(ErrorCode::Internal);
            Ok(SinkExt::<Frame>::feed(output, Frame::Error { id, error }).await?)
        }
        other => Ok(other?),
    }
}

fn serve_request(
    service: &Arc<Service>,
    peer: std::net::SocketAddr,
    id: u32,
    request: Request,
) -> PendingReply {
    let service = service.clone();
    Box::pin(async move {
        match request {
            Request::Subscribe { token, from } => match service
                .subscribe_over(crate::metrics::WIRE, token, from)
                .await
            {
                Ok(subscription) => Reply::Subscribed {
                    id,
                    subscription: Box::new(subscription),
                },
                Err(error) => Reply::SubscribeRefused(Frame::Error { id, error }),
            },
            request => match service
                .serve(crate::metrics::WIRE, peer.into(), request)
                .await
            {
                Ok(response) => Reply::Frame(Frame::Response { id, response }),
                Err(error) => error_frame(id, error),
            },
        }
    })
}

fn error_frame(id: u32, error: ApiError) -> Reply {
    Reply::Frame(Frame::Error { id, error })
}

fn ready(reply: Reply) -> PendingReply {
    Box::pin(std::future::ready(reply))
}
