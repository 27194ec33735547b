//! The server-to-server listener's front door: how many connections it holds, and how long
//! one may stay open before it proves it comes from a server of this cluster.
//!
//! Anyone who can reach the port can open connections to it, so what an unauthenticated
//! client can hold is bounded here, before HTTP/2 sees a byte:
//!
//! - **Slots.** At most [`ListenerLimits::max_connections`] connections are open at once.
//!   A connection that finds every slot taken closes the oldest connection that has not
//!   authenticated yet and takes its slot; if every open connection has authenticated, the
//!   newcomer is closed. So a flood of connections cannot keep a restarted peer out: its
//!   connection authenticates with its first call, within milliseconds, and a flood would
//!   have to open `max_connections` connections in that time to push it out.
//! - **Authentication deadline.** A connection that has carried no authenticated call
//!   within [`ListenerLimits::auth_timeout`] of being accepted is closed: its reads and
//!   writes fail, which ends the HTTP/2 connection whatever it is waiting for.
//! - **Accept errors** (out of file descriptors) back off instead of spinning.
//!
//! What one connection can make the server hold is bounded by HTTP/2 settings in
//! [`super::grpc::serve`], and an unauthenticated call is refused from its headers,
//! before its body is read.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// The first pause after a failed accept; it doubles with each failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause after a failed accept.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Connections accepted but not yet taken up by the HTTP/2 server.
const ACCEPT_QUEUE: usize = 16;

/// What the server-to-server listener allows an unauthenticated client.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a connection may stay open without an authenticated call.
    pub auth_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> ListenerLimits {
        ListenerLimits {
            max_connections: 64,
            auth_timeout: Duration::from_secs(10),
        }
    }
}

/// What the listener has done since the server started, for the metrics: the connections
/// it holds now, and those it closed or refused because of the limits above.
#[derive(Debug, Default)]
pub struct ListenerStats {
    open: AtomicU64,
    refused_full: AtomicU64,
    evicted: AtomicU64,
    auth_timeouts: AtomicU64,
    calls_refused: AtomicU64,
}

/// A reading of [`ListenerStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerFigures {
    /// Connections open now, authenticated or not.
    pub open: u64,
    /// New connections closed at once: every slot was held by an authenticated one.
    pub refused_full: u64,
    /// Unauthenticated connections closed to make room for a new one.
    pub evicted: u64,
    /// Connections closed because no authenticated call came within the deadline.
    pub auth_timeouts: u64,
    /// Calls refused from their headers: another cluster's id, or a wrong secret.
    pub calls_refused: u64,
}

impl ListenerStats {
    pub fn figures(&self) -> ListenerFigures {
        ListenerFigures {
            open: self.open.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            auth_timeouts: self.auth_timeouts.load(Ordering::Relaxed),
            calls_refused: self.calls_refused.load(Ordering::Relaxed),
        }
    }

    /// A call was refused because it did not authenticate.
    pub(crate) fn call_refused(&self) {
        self.calls_refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a connection and the calls on it share.
pub struct ConnectionState {
    authenticated: AtomicBool,
    closed: AtomicBool,
    /// The task reading or writing the stream, woken when the connection is closed.
    waker: AtomicWaker,
    /// The connection's slot, given back as soon as the connection is closed.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl ConnectionState {
    /// A call on this connection carried the cluster's id and secret: the connection comes
    /// from a server of this cluster, and the authentication deadline no longer applies.
    pub fn authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Closes the connection: its slot is free at once, and its stream fails at its next
    /// read or write.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        drop(self.lock_slot().take());
        self.waker.wake();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn lock_slot(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        // The slot is only ever taken out whole, so a poisoned lock still holds a whole one.
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An admitted connection as the HTTP/2 server gets it.
pub struct PeerConnection {
    stream: TcpStream,
    state: Arc<ConnectionState>,
    stats: Arc<ListenerStats>,
    /// The authentication deadline, until the connection has authenticated.
    auth_deadline: Pin<Box<Sleep>>,
}

impl PeerConnection {
    /// Fails the stream if the connection was closed or missed its authentication
    /// deadline; otherwise arranges to be woken when either happens.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.state.waker.register(cx.waker());
        if self.state.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server-to-server listener closed this connection",
            ));
        }
        if !self.state.is_authenticated() && self.auth_deadline.as_mut().poll(cx).is_ready() {
            self.state.close();
            self.stats.auth_timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no authenticated call within the deadline",
            ));
        }
        Ok(())
    }
}

impl Drop for PeerConnection {
    fn drop(&mut self) {
        // The slot is the connection's, not its calls': it is free once the stream is gone.
        self.state.close();
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for PeerConnection {
    type ConnectInfo = Arc<ConnectionState>;

    fn connect_info(&self) -> Arc<ConnectionState> {
        self.state.clone()
    }
}

impl AsyncRead for PeerConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections on `listener` until `shutdown`, admitting them within `limits` and
/// counting in `stats`; the HTTP/2 server takes them from the returned channel.
pub(crate) fn admit(
    listener: TcpListener,
    limits: ListenerLimits,
    stats: Arc<ListenerStats>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<io::Result<PeerConnection>> {
    let (admitted, incoming) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        // Connections not known to have authenticated, oldest first.
        let mut unproven: VecDeque<Weak<ConnectionState>> = VecDeque::new();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    stream
                }
                Err(error) => {
                    tracing::debug!(%error, "accepting a server-to-server connection failed; backing off");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            unproven.retain(|state| {
                state
                    .upgrade()
                    .is_some_and(|state| !state.is_authenticated() && !state.is_closed())
            });
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    // Full: the oldest connection that has not proved itself makes room.
                    if let Some(oldest) = unproven.pop_front().and_then(|s| s.upgrade()) {
                        tracing::debug!("server-to-server connections full: closing the oldest unauthenticated one");
                        oldest.close();
                        stats.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    match slots.clone().try_acquire_owned() {
                        Ok(slot) => slot,
                        Err(_) => {
                            tracing::debug!("server-to-server connections full: closing a new one");
                            stats.refused_full.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
            };
            let state = Arc::new(ConnectionState {
                authenticated: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                slot: Mutex::new(Some(slot)),
            });
            unproven.push_back(Arc::downgrade(&state));
            stats.open.fetch_add(1, Ordering::Relaxed);
            let connection = PeerConnection {
                stream,
                state,
                stats: stats.clone(),
                auth_deadline: Box::pin(tokio::time::sleep(limits.auth_timeout)),
            };
            if admitted.send(Ok(connection)).await.is_err() {
                // The HTTP/2 server has stopped.
                return;
            }
        }
    });
    incoming
}
