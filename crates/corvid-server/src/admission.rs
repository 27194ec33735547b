//! The front door every frontend shares: accepting connections, one pool of connection
//! slots for the whole server, TLS under a deadline, and the deadlines each connection
//! then lives under.
//!
//! A frontend ([`Frontend`]) only says how its protocol starts and what it does with a
//! connection; everything that protects the server from its clients is here, once:
//!
//! - **Slots.** One semaphore of `max_connections` for every listener. A connection with no
//!   slot is closed at once; a frontend may first explain why (the binary protocol sends
//!   `too_many_connections`), under the handshake deadline and only a few at a time.
//! - **Accept errors** (out of file descriptors) back off, from a few milliseconds up to a
//!   second, and are logged once in a while with a count, not once each.
//! - **Deadlines**, kept by [`ConnectionIo`], the byte stream every frontend reads and
//!   writes: the handshake (TLS, then the protocol's first bytes: the hello or the HTTP/2
//!   preface), logging in, writing (a client that takes none of the bytes the server has
//!   for it), and for HTTP/2 being idle with no call in progress. Past one, the stream
//!   fails with an I/O error, which ends the connection whatever the protocol code on top
//!   is waiting for.
//! - **Shutdown.** Every connection task runs in one task tracker; [`Admission::close_all`]
//!   fails every open stream at once, so that a shutdown is bounded whatever clients do.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use corvid_core::Response;

use crate::config::Limits;
use crate::metrics::{Live, Metrics};

/// Refused connections that may be told why at once; more are closed without a word.
const REFUSALS_AT_ONCE: usize = 64;
/// The first pause after a failed accept; it doubles with each failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause after a failed accept.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Failed accepts are logged at most once per this interval, with how many there were.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the front door needs to know about a frontend's protocol.
#[derive(Clone, Copy, Debug)]
pub struct Protocol {
    /// A name for logs.
    pub name: &'static str,
    /// Bytes the client sends first (the binary protocol's hello, the HTTP/2 preface);
    /// until they have all arrived the handshake deadline applies.
    pub handshake_bytes: usize,
    /// Whether a connection with no call in progress is closed after the idle timeout
    /// (HTTP/2, whose calls are its streams).
    pub closes_when_idle: bool,
}

/// A network frontend: how its connections are served, once admitted.
pub trait Frontend: Send + Sync + 'static {
    /// What the front door needs to know about this frontend's protocol.
    const PROTOCOL: Protocol;

    /// Serves an admitted connection until it ends.
    fn serve(self: Arc<Self>, connection: Connection) -> impl Future<Output = ()> + Send;

    /// Tells a connection that found no free slot why it is being closed, if the
    /// protocol has a way to. It runs under the handshake deadline.
    fn refuse(self: Arc<Self>, stream: ConnectionStream) -> impl Future<Output = ()> + Send {
        drop(stream);
        async {}
    }

    /// Whether [`Frontend::refuse`] has anything to say; if not, a connection with no slot
    /// is closed without its TLS handshake.
    const EXPLAINS_REFUSAL: bool = false;
}

/// The deadlines of a connection, from [`Limits`].
#[derive(Clone, Copy, Debug)]
struct Deadlines {
    handshake: Duration,
    login: Duration,
    write: Duration,
    idle: Duration,
    shutdown_grace: Duration,
}

impl Deadlines {
    fn new(limits: &Limits) -> Deadlines {
        Deadlines {
            handshake: Duration::from_secs(limits.handshake_timeout_secs),
            login: Duration::from_secs(limits.login_timeout_secs),
            write: Duration::from_secs(limits.write_timeout_secs),
            idle: Duration::from_secs(limits.grpc_idle_timeout_secs),
            shutdown_grace: Duration::from_secs(limits.shutdown_grace_secs),
        }
    }
}

/// The server's front door, shared by every listener.
pub struct Admission {
    limits: Limits,
    deadlines: Deadlines,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    open: Arc<OpenConnections>,
    metrics: Metrics,
}

/// Every open connection, so that a shutdown can close them all.
#[derive(Default)]
struct OpenConnections {
    by_id: Mutex<HashMap<u64, Weak<ConnectionState>>>,
    next_id: AtomicU64,
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<ConnectionState>>> {
        // Each update is a single insert or remove, so a poisoned map is still whole.
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Admission {
    /// A front door admitting at most `limits.max_connections` connections at once, over
    /// every listener, until `shutdown` is cancelled.
    pub fn new(limits: &Limits, shutdown: CancellationToken) -> Arc<Admission> {
        Admission::with_metrics(limits, shutdown, Metrics::off())
    }

    /// [`Admission::new`], counting open and refused connections and rate-limited requests
    /// in `metrics`.
    pub fn with_metrics(
        limits: &Limits,
        shutdown: CancellationToken,
        metrics: Metrics,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            limits: limits.clone(),
            deadlines: Deadlines::new(limits),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
            shutdown,
            tracker: TaskTracker::new(),
            open: Arc::new(OpenConnections::default()),
            metrics,
        })
    }

    /// The limits every connection is held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How long a shutdown waits for connections to finish by themselves.
    pub fn shutdown_grace(&self) -> Duration {
        self.deadlines.shutdown_grace
    }

    /// Connections open now, over every listener.
    pub fn open_connections(&self) -> usize {
        self.limits.max_connections - self.slots.available_permits()
    }

    /// Accepts connections on `listener` until shutdown, handing each admitted one to
    /// `frontend` in a task of its own. With `tls`, every connection starts with a TLS
    /// handshake, done in that task under the handshake deadline.
    pub async fn serve<F: Frontend>(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        frontend: Arc<F>,
    ) {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut errors = AcceptErrors::default();
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    accepted
                }
                Err(err) => {
                    // Out of file descriptors, most likely: the waiting connection stays
                    // in the kernel's queue, and slots come free as connections end or
                    // pass their deadlines. Pause rather than spin, and keep the log short.
                    errors.note(F::PROTOCOL.name, &err);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                self.refuse(stream, peer, tls.clone(), frontend.clone());
                continue;
            };
            let admission = self.clone();
            let (tls, frontend) = (tls.clone(), frontend.clone());
            self.tracker.spawn(async move {
                let started = Instant::now();
                let Some(transport) = admission.handshake(stream, peer, tls).await else {
                    return;
                };
                let connection = admission.connection::<F>(transport, peer, permit, started);
                frontend.serve(connection).await;
            });
        }
    }

    /// Closes a connection that found no free slot, after the frontend's explanation if it
    /// has one and there is room to give it.
    fn refuse<F: Frontend>(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        frontend: Arc<F>,
    ) {
        tracing::debug!(%peer, protocol = F::PROTOCOL.name, "no room for another connection");
        self.metrics.connection_rejected(F::PROTOCOL.name);
        if !F::EXPLAINS_REFUSAL {
            return;
        }
        let Ok(refusal) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        let deadline = self.deadlines.handshake;
        self.tracker.spawn(async move {
            let explain = async {
                let transport = match tls {
                    None => ConnectionStream::Plain(stream),
                    Some(tls) => ConnectionStream::Tls(Box::new(tls.accept(stream).await.ok()?)),
                };
                frontend.refuse(transport).await;
                Some(())
            };
            let _ = tokio::time::timeout(deadline, explain).await;
            drop(refusal);
        });
    }

    /// The TLS handshake, under the handshake deadline, or the plain stream.
    async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
    ) -> Option<ConnectionStream> {
        let Some(tls) = tls else {
            return Some(ConnectionStream::Plain(stream));
        };
        let handshake = tokio::select! {
            _ = self.shutdown.cancelled() => return None,
            handshake = tokio::time::timeout(self.deadlines.handshake, tls.accept(stream)) => handshake,
        };
        match handshake {
            Ok(Ok(stream)) => Some(ConnectionStream::Tls(Box::new(stream))),
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }

    fn connection<F: Frontend>(
        &self,
        transport: ConnectionStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        started: Instant,
    ) -> Connection {
        let id = self.open.next_id.fetch_add(1, Ordering::Relaxed);
        let state = ConnectionState::new(started);
        self.open.lock().insert(id, Arc::downgrade(&state));
        let io = ConnectionIo {
            inner: transport,
            state: state.clone(),
            deadlines: self.deadlines,
            protocol: F::PROTOCOL,
            started,
            handshake_left: F::PROTOCOL.handshake_bytes,
            read_timer: Box::pin(tokio::time::sleep_until(started)),
            read_deadline: None,
            write_timer: None,
            _slot: Slot {
                id,
                open: self.open.clone(),
                _permit: permit,
                _live: self.metrics.connection(F::PROTOCOL.name),
            },
        };
        Connection {
            io,
            peer,
            limiter: Arc::new(RequestRate::new(
                &self.limits,
                self.metrics.clone(),
                F::PROTOCOL.name,
            )),
            state,
        }
    }

    /// Fails every open connection's stream now: what a shutdown does to connections that
    /// did not finish within [`Admission::shutdown_grace`].
    pub fn close_all(&self) {
        let open: Vec<_> = self
            .open
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        if !open.is_empty() {
            tracing::info!(
                connections = open.len(),
                "closing the connections still open"
            );
        }
        for state in open {
            state.close();
        }
    }

    /// Waits until every connection task has ended. Call once every listener has stopped.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Whether a successful answer shows that the client holds a session, which lifts the
/// login deadline: every answer but those of the requests that need none.
pub fn proves_session(response: &Response) -> bool {
    !matches!(response, Response::Pong | Response::AccountCreated { .. })
}

/// Counts failed accepts between two log lines.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    /// Counts a failed accept, and logs it if the last log line is old enough. Returns
    /// whether it logged.
    fn note(&mut self, protocol: &str, err: &io::Error) -> bool {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY);
        if due {
            tracing::warn!(protocol, %err, failures = self.unlogged, "accepting connections fails; backing off");
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        }
        due
    }
}

/// A connection's byte stream: plain TCP, or TLS over it.
pub enum ConnectionStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Runs `$body` with `$io` bound to the pinned stream, whichever transport it is.
macro_rules! with_stream {
    ($transport:expr, $io:ident => $body:expr) => {
        match $transport {
            ConnectionStream::Plain(stream) => {
                let $io = Pin::new(stream);
                $body
            }
            ConnectionStream::Tls(stream) => {
                let $io = Pin::new(stream.as_mut());
                $body
            }
        }
    };
}

impl AsyncRead for ConnectionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        with_stream!(self.get_mut(), io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for ConnectionStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_stream!(self.get_mut(), io => io.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self.get_mut(), io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self.get_mut(), io => io.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with_stream!(self.get_mut(), io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ConnectionStream::Plain(stream) => stream.is_write_vectored(),
            ConnectionStream::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

/// An admitted connection, as its frontend gets it.
pub struct Connection {
    /// The byte stream, which keeps the connection's deadlines and holds its slot.
    pub io: ConnectionIo,
    pub peer: SocketAddr,
    /// The connection's own request-rate limiter, whatever its protocol.
    pub limiter: Arc<RequestRate>,
    /// What the frontend tells the deadlines (logged in, calls in progress), and how it
    /// closes the connection.
    pub state: Arc<ConnectionState>,
}

/// What the frontend and the stream of one connection share.
pub struct ConnectionState {
    authenticated: AtomicBool,
    closed: AtomicBool,
    /// Calls in progress (HTTP/2 streams the frontend serves).
    open_calls: AtomicUsize,
    /// Live `Subscribe` streams on this connection.
    subscriptions: AtomicUsize,
    /// When the last call in progress ended (or the connection started).
    idle_since: Mutex<Instant>,
    /// The task reading or writing the stream, woken when a deadline changes.
    waker: AtomicWaker,
}

impl ConnectionState {
    /// The state of a connection that opened at `started`: not logged in, no calls.
    pub(crate) fn new(started: Instant) -> Arc<ConnectionState> {
        Arc::new(ConnectionState {
            authenticated: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            open_calls: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
            idle_since: Mutex::new(started),
            waker: AtomicWaker::new(),
        })
    }

    /// The client proved it holds a session (a successful login, or a request its token
    /// authenticated): the login deadline no longer applies.
    pub fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::Relaxed) {
            self.waker.wake();
        }
    }

    /// Whether the client proved it holds a session.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Closes the connection: its stream fails at its next read or write.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.waker.wake();
    }

    /// A call starts; the connection is not idle until the returned guard is dropped.
    pub fn call_started(self: &Arc<Self>) -> CallInProgress {
        self.open_calls.fetch_add(1, Ordering::Relaxed);
        CallInProgress(self.clone())
    }

    /// Takes one of the connection's `max` subscription places, if one is free.
    pub fn add_subscription(self: &Arc<Self>, max: usize) -> Option<SubscriptionPlace> {
        self.subscriptions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                (live < max).then_some(live + 1)
            })
            .ok()
            .map(|_| SubscriptionPlace(self.clone()))
    }

    fn lock_idle_since(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.idle_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A call in progress on a connection (see [`ConnectionState::call_started`]).
pub struct CallInProgress(Arc<ConnectionState>);

impl Drop for CallInProgress {
    fn drop(&mut self) {
        if self.0.open_calls.fetch_sub(1, Ordering::Relaxed) == 1 {
            *self.0.lock_idle_since() = Instant::now();
            self.0.waker.wake();
        }
    }
}

/// One live subscription's place on its connection.
pub struct SubscriptionPlace(Arc<ConnectionState>);

impl Drop for SubscriptionPlace {
    fn drop(&mut self) {
        self.0.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds a connection's slot; frees it, and forgets the connection, when dropped.
struct Slot {
    id: u64,
    open: Arc<OpenConnections>,
    _permit: OwnedSemaphorePermit,
    /// Counts the connection as open in the metrics while it lasts.
    _live: Live,
}

/// One connection's request-rate limiter, which counts the requests it refuses.
pub struct RequestRate {
    limiter: DefaultDirectRateLimiter,
    metrics: Metrics,
    protocol: &'static str,
}

/// A request over its connection's rate.
#[derive(Debug)]
pub struct OverRate;

impl RequestRate {
    /// The rate `limits` allow one connection, whose refusals count as `protocol`'s.
    pub fn new(limits: &Limits, metrics: Metrics, protocol: &'static str) -> RequestRate {
        RequestRate {
            limiter: RateLimiter::direct(limits.rate_quota()),
            metrics,
            protocol,
        }
    }

    /// Takes one request from the allowance, or says it is spent.
    pub fn check(&self) -> Result<(), OverRate> {
        self.limiter.check().map_err(|_| {
            self.metrics.rate_limited(self.protocol);
            OverRate
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

/// A connection's byte stream with its deadlines: every frontend reads and writes through
/// it. Past a deadline, or once the connection is closed, reads and writes fail.
pub struct ConnectionIo {
    inner: ConnectionStream,
    state: Arc<ConnectionState>,
    deadlines: Deadlines,
    protocol: Protocol,
    started: Instant,
    /// Bytes of the client's opening still to arrive.
    handshake_left: usize,
    read_timer: Pin<Box<Sleep>>,
    /// What `read_timer` is set to, if it is in use.
    read_deadline: Option<Instant>,
    /// Set while a write waits for the client to take bytes.
    write_timer: Option<Pin<Box<Sleep>>>,
    _slot: Slot,
}

/// Which deadline a read waits under.
#[derive(Clone, Copy, Debug)]
enum ReadDeadline {
    Handshake,
    Login,
    Idle,
}

impl ConnectionIo {
    /// The deadline that applies to reading now, if any.
    fn read_deadline(&self) -> Option<(Instant, ReadDeadline)> {
        if self.handshake_left > 0 {
            return Some((
                self.started + self.deadlines.handshake,
                ReadDeadline::Handshake,
            ));
        }
        if !self.state.is_authenticated() {
            return Some((self.started + self.deadlines.login, ReadDeadline::Login));
        }
        if self.protocol.closes_when_idle && self.state.open_calls.load(Ordering::Relaxed) == 0 {
            let idle_since = *self.state.lock_idle_since();
            return Some((idle_since + self.deadlines.idle, ReadDeadline::Idle));
        }
        None
    }

    /// Fails once the connection is closed; otherwise registers the task to be woken when
    /// it is.
    fn check_open(&self, cx: &Context<'_>) -> io::Result<()> {
        self.state.waker.register(cx.waker());
        if self.state.closed.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server closed the connection",
            ));
        }
        Ok(())
    }

    /// Polls the deadline of a read that is waiting for the client.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some((deadline, which)) = self.read_deadline() else {
            self.read_deadline = None;
            return Ok(());
        };
        if self.read_deadline != Some(deadline) {
            self.read_timer.as_mut().reset(deadline);
            self.read_deadline = Some(deadline);
        }
        if self.read_timer.as_mut().poll(cx).is_ready() {
            let what = match which {
                ReadDeadline::Handshake => "the handshake took too long",
                ReadDeadline::Login => "the connection did not log in in time",
                ReadDeadline::Idle => "the connection was idle too long",
            };
            tracing::debug!(protocol = self.protocol.name, what, "closing a connection");
            return Err(io::Error::new(io::ErrorKind::TimedOut, what));
        }
        Ok(())
    }

    /// Tracks a write: progress clears the write deadline, waiting starts it.
    fn poll_write_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_timer = None;
            return polled;
        }
        let write = self.deadlines.write;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(write)));
        if timer.as_mut().poll(cx).is_ready() {
            tracing::debug!(
                protocol = self.protocol.name,
                "closing a connection that does not read"
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read what it was sent in time",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for ConnectionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_open(cx)?;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                this.handshake_left = this.handshake_left.saturating_sub(read);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                this.poll_read_deadline(cx)?;
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_open(cx)?;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.poll_write_deadline(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_open(cx)?;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.poll_write_deadline(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.closed.load(Ordering::Relaxed) {
            // Closed by the server: there is nothing more to say, and the client may not
            // be reading.
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.poll_write_deadline(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_open(cx)?;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.poll_write_deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What a frontend keeps beside a connection's stream, told of every read that brought
/// bytes (the web frontend times the messages they begin; the gRPC one needs nothing).
pub trait StreamCompanion: Unpin {
    /// Bytes arrived on the stream.
    fn bytes_arrived(&self) {}
}

/// A connection's stream as a frontend hands it on (to hyper or tonic), with what the
/// frontend keeps beside it: reads and writes go to the [`ConnectionIo`] unchanged.
pub struct CompanionIo<T> {
    io: ConnectionIo,
    pub companion: T,
}

impl<T: StreamCompanion> CompanionIo<T> {
    pub fn new(io: ConnectionIo, companion: T) -> CompanionIo<T> {
        CompanionIo { io, companion }
    }
}

impl<T: StreamCompanion> AsyncRead for CompanionIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.companion.bytes_arrived();
        }
        polled
    }
}

impl<T: StreamCompanion> AsyncWrite for CompanionIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_file_descriptors_logs_a_line_now_and_then_not_one_per_failure() {
        let mut errors = AcceptErrors::default();
        let emfile = io::Error::from_raw_os_error(24);
        let logged = (0..3_000).filter(|_| errors.note("wire", &emfile)).count();
        assert_eq!(logged, 1);
        assert_eq!(errors.unlogged, 2_999);
    }
}
