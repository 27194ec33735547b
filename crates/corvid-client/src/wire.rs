//! One binary-protocol connection to one server: the handshake, and the task that writes
//! requests and routes every frame the server sends to the request waiting for it (or, for
//! events, to the [`EventRouter`]).
//!
//! Requests are pipelined: each waits on its own oneshot, keyed by its request id, so any
//! number can be in flight and answers may come back in any order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corvid_core::{ApiError, ErrorCode, Request, Response, SubscribeFrom};
use corvid_wire::{
    ClientHello, Frame, HelloStatus, ServerHello, HELLO_LEN, MIN_VERSION, OLDEST_UNREAD_VERSION,
    VERSION,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::events::EventRouter;
use crate::tls::TlsConfig;
use crate::ClientError;

/// A byte stream to a server: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
type BoxedStream = Box<dyn Stream>;

/// How many encoded requests may queue for the writer before callers wait.
const OUTGOING_QUEUE: usize = 1024;
/// The writer gathers queued requests into one write of at most about this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

type Reply = Result<Response, ClientError>;

/// The requests waiting for an answer on one connection.
struct Pending {
    waiters: HashMap<u32, oneshot::Sender<Reply>>,
    /// False once the connection task has ended: no new waiter may register.
    open: bool,
}

type SharedPending = Arc<Mutex<Pending>>;

fn lock(pending: &SharedPending) -> MutexGuard<'_, Pending> {
    // Every update is a single map operation, so a poisoned map is still consistent.
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A handshaken connection and the handle to its task. Dropping it stops the task.
pub(crate) struct WireConnection {
    address: String,
    /// The protocol version the handshake agreed on.
    version: u16,
    outgoing: mpsc::Sender<Bytes>,
    pending: SharedPending,
    /// Cancelled when the connection ends, whoever ends it.
    closed: CancellationToken,
}

impl WireConnection {
    /// Connects to `address`, does the handshake and starts the connection task.
    pub(crate) async fn open(
        address: &str,
        tls: Option<&TlsConfig>,
        connect_timeout: Duration,
        max_frame_len: usize,
        router: Arc<EventRouter>,
    ) -> Result<WireConnection, ClientError> {
        let (stream, version) = tokio::time::timeout(connect_timeout, handshake(address, tls))
            .await
            .map_err(|_| {
                ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{address}: no answer within {connect_timeout:?}"),
                ))
            })??;
        let (reader, writer) = tokio::io::split(stream);
        let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
        let pending = Arc::new(Mutex::new(Pending {
            waiters: HashMap::new(),
            open: true,
        }));
        let closed = CancellationToken::new();
        let task = ConnectionTask {
            address: address.to_string(),
            version,
            pending: pending.clone(),
            router,
            max_frame_len,
            connection_error: None,
        };
        tokio::spawn(task.run(reader, writer, queue, closed.clone()));
        Ok(WireConnection {
            address: address.to_string(),
            version,
            outgoing,
            pending,
            closed,
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// A token cancelled when this connection ends.
    pub(crate) fn closed_token(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Ends the connection; requests still waiting on it fail with [`ClientError::Closed`].
    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    /// Sends `request` as request `id` and waits at most `timeout` for its answer.
    pub(crate) async fn request(&self, id: u32, request: Request, timeout: Duration) -> Reply {
        if let Request::Subscribe {
            from: SubscribeFrom::OldestUnread,
            ..
        } = request
        {
            if self.version < OLDEST_UNREAD_VERSION {
                return Err(ClientError::Api(ApiError::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "{} speaks protocol version {}, which cannot subscribe from the oldest unread message",
                        self.address, self.version
                    ),
                )));
            }
        }
        let mut bytes = BytesMut::new();
        corvid_wire::encode(&Frame::Request { id, request }, &mut bytes)
            .map_err(|err| ClientError::Protocol(format!("cannot encode the request: {err}")))?;
        let (reply, answer) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if !pending.open {
                return Err(ClientError::Closed);
            }
            pending.waiters.insert(id, reply);
        }
        // Removes the waiter however this future ends: answered, timed out or dropped.
        let _waiter = WaiterGuard {
            pending: &self.pending,
            id,
        };
        let exchange = async {
            self.outgoing
                .send(bytes.freeze())
                .await
                .map_err(|_| ClientError::Closed)?;
            answer.await.unwrap_or(Err(ClientError::Closed))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }
}

impl Drop for WireConnection {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

struct WaiterGuard<'a> {
    pending: &'a SharedPending,
    id: u32,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).waiters.remove(&self.id);
    }
}

/// Connects with the newest protocol version; a server that only speaks an older one that
/// this client also speaks is connected to again with that one. Returns the version the
/// connection speaks.
async fn handshake(
    address: &str,
    tls: Option<&TlsConfig>,
) -> Result<(BoxedStream, u16), ClientError> {
    match connect(address, tls, VERSION).await? {
        Hello::Agreed(stream) => Ok((stream, VERSION)),
        Hello::Refused(older) if (MIN_VERSION..VERSION).contains(&older) => {
            match connect(address, tls, older).await? {
                Hello::Agreed(stream) => Ok((stream, older)),
                Hello::Refused(version) => Err(unsupported(address, version)),
            }
        }
        Hello::Refused(version) => Err(unsupported(address, version)),
    }
}

/// The server's answer to a hello.
enum Hello {
    Agreed(BoxedStream),
    /// The server does not speak the version asked for; it speaks this one.
    Refused(u16),
}

fn unsupported(address: &str, version: u16) -> ClientError {
    ClientError::Api(ApiError::new(
        ErrorCode::UnsupportedVersion,
        format!("{address} speaks protocol version {version}, this client versions {MIN_VERSION} to {VERSION}"),
    ))
}

async fn connect(
    address: &str,
    tls: Option<&TlsConfig>,
    version: u16,
) -> Result<Hello, ClientError> {
    let with_address =
        |err: std::io::Error| std::io::Error::new(err.kind(), format!("{address}: {err}"));
    let tcp = TcpStream::connect(address).await.map_err(with_address)?;
    tcp.set_nodelay(true).map_err(with_address)?;
    let mut stream: BoxedStream = match tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = tls.server_name(address)?;
            let stream = tls.connector()?.connect(name, tcp).await.map_err(|err| {
                std::io::Error::new(err.kind(), format!("{address}: TLS handshake: {err}"))
            })?;
            Box::new(stream)
        }
    };
    stream
        .write_all(&ClientHello { version, flags: 0 }.encode())
        .await
        .map_err(with_address)?;
    let mut answer = [0u8; HELLO_LEN];
    stream.read_exact(&mut answer).await.map_err(|err| {
        if tls.is_none() && err.kind() == std::io::ErrorKind::UnexpectedEof {
            // A TLS listener hangs up on a plain hello: say what probably happened.
            std::io::Error::new(
                err.kind(),
                format!("{address}: the server hung up during the handshake (does it want TLS?)"),
            )
        } else {
            with_address(err)
        }
    })?;
    let hello = ServerHello::decode(answer)
        .map_err(|err| ClientError::Protocol(format!("{address}: {err}")))?;
    match hello.status {
        HelloStatus::Ok => Ok(Hello::Agreed(stream)),
        HelloStatus::UnsupportedVersion => Ok(Hello::Refused(hello.version)),
    }
}

/// The state of the task that owns the socket.
struct ConnectionTask {
    address: String,
    /// The protocol version the handshake agreed on: frames are read as it has them.
    version: u16,
    pending: SharedPending,
    router: Arc<EventRouter>,
    max_frame_len: usize,
    /// An error frame with request id 0: the server's reason for closing, if it gave one.
    connection_error: Option<ApiError>,
}

impl ConnectionTask {
    async fn run(
        mut self,
        reader: ReadHalf<BoxedStream>,
        writer: WriteHalf<BoxedStream>,
        queue: mpsc::Receiver<Bytes>,
        closed: CancellationToken,
    ) {
        let address = self.address.clone();
        let outcome = tokio::select! {
            outcome = self.read_frames(reader) => outcome,
            outcome = write_requests(writer, queue) => outcome,
            () = closed.cancelled() => Ok(()),
        };
        if let Err(reason) = outcome {
            tracing::debug!(%address, %reason, "connection ended");
        }
        closed.cancel();
        let waiters = {
            let mut pending = lock(&self.pending);
            pending.open = false;
            std::mem::take(&mut pending.waiters)
        };
        for (_, waiter) in waiters {
            let error = match &self.connection_error {
                Some(error) => ClientError::Api(error.clone()),
                None => ClientError::Closed,
            };
            let _ = waiter.send(Err(error));
        }
    }

    /// Reads and routes frames until the server closes or breaks the protocol.
    async fn read_frames(&mut self, mut reader: ReadHalf<BoxedStream>) -> Result<(), String> {
        let mut buffer = BytesMut::with_capacity(16 * 1024);
        loop {
            loop {
                match corvid_wire::decode_version(&mut buffer, self.max_frame_len, self.version) {
                    Ok(Some(frame)) => self.route(frame)?,
                    Ok(None) => break,
                    Err(err) if err.is_fatal() => return Err(err.to_string()),
                    Err(err) => self.answer(
                        err.request_id(),
                        Err(ClientError::Protocol(err.to_string())),
                    ),
                }
            }
            let read = reader
                .read_buf(&mut buffer)
                .await
                .map_err(|err| err.to_string())?;
            if read == 0 {
                return if buffer.is_empty() {
                    Err("closed by the server".to_string())
                } else {
                    Err("closed by the server in the middle of a frame".to_string())
                };
            }
        }
    }

    fn route(&mut self, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Response { id, response } => self.answer(id, Ok(response)),
            Frame::Error { id: 0, error } => {
                tracing::debug!(address = %self.address, %error, "connection error from the server");
                self.connection_error = Some(error);
            }
            Frame::Error { id, error } => self.answer(id, Err(ClientError::Api(error))),
            Frame::Event(event) => self.router.deliver(event),
            Frame::Request { id, .. } => {
                return Err(format!("the server sent a request frame (id {id})"));
            }
        }
        Ok(())
    }

    fn answer(&self, id: u32, reply: Reply) {
        let waiter = lock(&self.pending).waiters.remove(&id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(reply);
            }
            // Timed out and gone, or an answer to a request this client never sent.
            None => tracing::debug!(address = %self.address, id, "answer with no waiter"),
        }
    }
}

/// Writes queued requests, gathering those already queued into one write.
async fn write_requests(
    mut writer: WriteHalf<BoxedStream>,
    mut queue: mpsc::Receiver<Bytes>,
) -> Result<(), String> {
    let mut batch = BytesMut::new();
    while let Some(first) = queue.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        writer
            .write_all(&batch)
            .await
            .map_err(|err| err.to_string())?;
        batch.clear();
    }
    // Every sender is gone: the client dropped this connection.
    Ok(())
}
