//! The binary-protocol frontend: a TCP listener speaking corvid-wire (docs/protocol.md).
//!
//! Each connection is one task. Requests are read as they arrive and served concurrently
//! (up to `max_in_flight`), and their answers are written in request order; pushed events
//! of a subscription are written between answers. The task flushes once per burst of
//! ready frames, not once per frame. With TLS on, the protocol runs inside a TLS session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, SinkExt, StreamExt};
use governor::RateLimiter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use corvid_core::{ApiError, ErrorCode, Request, Response};
use corvid_wire::{
    ClientHello, CodecError, DecodeError, Frame, HelloStatus, ServerHello, WireCodec, HELLO_LEN,
};

use crate::config::Limits;
use crate::service::{Service, Subscription};

/// What serving one request produced, in the order the requests came.
enum Reply {
    Frame(Frame),
    Subscribed {
        id: u32,
        subscription: Box<Subscription>,
    },
    /// Write this frame, then close the connection (framing was lost).
    Close(Frame),
}

type PendingReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Events written per turn of a connection's loop before it looks at requests again.
const EVENT_BURST: usize = 64;
/// Initial size of a connection's read and write buffers, in bytes.
const INITIAL_BUFFER: usize = 512;
/// Bytes of encoded frames a connection buffers before it writes them out mid-burst.
const WRITE_BOUNDARY: usize = 8 * 1024;

/// Accepts connections on `listener` until `shutdown` is cancelled, then closes them all.
/// With `tls`, every connection starts with a TLS handshake, and the protocol runs inside.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let limits = Arc::new(limits);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Running out of file descriptors must not end the server: wait and retry.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let permit = connections.clone().try_acquire_owned().ok();
        let (service, limits, shutdown) = (service.clone(), limits.clone(), shutdown.clone());
        let tls = tls.clone();
        tracker.spawn(async move {
            let admitted = permit.is_some();
            // Every task is as large as its largest state; boxing each protocol's future
            // keeps a plain-TCP connection from carrying the room a TLS session needs.
            let result = match tls {
                None => {
                    Box::pin(connection(
                        stream, peer, service, &limits, admitted, shutdown,
                    ))
                    .await
                }
                Some(tls) => {
                    let timeout = std::time::Duration::from_secs(limits.handshake_timeout_secs);
                    match tokio::time::timeout(timeout, Box::pin(tls.accept(stream))).await {
                        Ok(Ok(stream)) => {
                            Box::pin(connection(
                                stream, peer, service, &limits, admitted, shutdown,
                            ))
                            .await
                        }
                        Ok(Err(err)) => Err(ConnectionError::Handshake(format!("TLS: {err}"))),
                        Err(_) => Err(ConnectionError::Handshake("TLS timed out".into())),
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
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

async fn connection<S>(
    mut stream: S,
    peer: std::net::SocketAddr,
    service: Arc<Service>,
    limits: &Limits,
    admitted: bool,
    shutdown: CancellationToken,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut hello = [0u8; HELLO_LEN];
    let timeout = std::time::Duration::from_secs(limits.handshake_timeout_secs);
    tokio::time::timeout(timeout, stream.read_exact(&mut hello))
        .await
        .map_err(|_| ConnectionError::Handshake("timed out".into()))??;
    let client =
        ClientHello::decode(hello).map_err(|e| ConnectionError::Handshake(e.to_string()))?;
    let answer = ServerHello::answer(&client);
    stream.write_all(&answer.encode()).await?;
    if answer.status != HelloStatus::Ok {
        return Ok(());
    }

    let (read, write) = tokio::io::split(stream);
    // Most connections are idle most of the time: start both buffers small (they grow to
    // fit a burst), but keep the write side's flush threshold at its usual 8 KiB.
    let mut input =
        FramedRead::with_capacity(read, WireCodec::new(limits.max_frame_bytes), INITIAL_BUFFER);
    let mut output = FramedWrite::with_capacity(
        write,
        WireCodec::new(limits.max_frame_bytes),
        INITIAL_BUFFER,
    );
    output.set_backpressure_boundary(WRITE_BOUNDARY);
    if !admitted {
        let error = ApiError::from(ErrorCode::TooManyConnections);
        SinkExt::<Frame>::send(&mut output, Frame::Error { id: 0, error }).await?;
        return Ok(());
    }

    let limiter = RateLimiter::direct(limits.rate_quota());
    let mut pending: FuturesOrdered<PendingReply> = FuturesOrdered::new();
    let mut subscription: Option<Box<Subscription>> = None;
    let mut reading = true;

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            frame = input.next(), if reading && pending.len() < limits.max_in_flight => {
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
                            pending.push_back(serve_request(&service, peer, id, request));
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
                if !write_reply(reply, &mut output, &mut subscription).await? {
                    break;
                }
                // Answers that are ready too go out in the same write.
                while let Some(Some(reply)) = pending.next().now_or_never() {
                    if !write_reply(reply, &mut output, &mut subscription).await? {
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

/// The next event of the subscription; pending forever without one, so `select!` skips it.
async fn next_event(subscription: &mut Option<Box<Subscription>>) -> Option<corvid_core::Event> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

/// Writes one reply. Returns false when the connection must close.
async fn write_reply<W>(
    reply: Reply,
    output: &mut FramedWrite<W, WireCodec>,
    subscription: &mut Option<Box<Subscription>>,
) -> Result<bool, ConnectionError>
where
    W: AsyncWrite + Unpin,
{
    match reply {
        Reply::Frame(frame) => feed(output, frame).await?,
        Reply::Subscribed {
            id,
            subscription: new,
        } => {
            let response = Response::Subscribed {
                last_id: new.last_id(),
            };
            feed(output, Frame::Response { id, response }).await?;
            // A second subscribe on one connection replaces the first.
            *subscription = Some(new);
        }
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
            Request::Subscribe { token, after } => match service.subscribe(token, after).await {
                Ok(subscription) => Reply::Subscribed {
                    id,
                    subscription: Box::new(subscription),
                },
                Err(error) => error_frame(id, error),
            },
            request => match service.handle_from(peer.into(), request).await {
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
