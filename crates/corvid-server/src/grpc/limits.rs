//! Per-request limits of the gRPC frontend: admission and the request rate for every
//! request of a connection, requests in flight until their answer is written, request
//! bodies bounded in time and bytes, answers the client does not take, and the Corvid
//! form of the errors tonic makes itself.
//!
//! One HTTP/2 connection carries many streams, so a limit kept per request can be
//! stepped around by opening more of them. Everything here is therefore counted per
//! connection, in [`ConnectionLimits`], which each request finds in its extensions
//! (tonic puts a connection's `connect_info` there), and enforced by one tower layer,
//! [`RequestLimitLayer`], around the whole router: the Chat service, reflection, and
//! requests that never reach a handler because they cannot be decoded.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tonic::body::Body;
use tonic::transport::server::Connected;
use tonic::Status;

use corvid_core::{ApiError, ErrorCode};
use corvid_grpc::status::{edge_error, to_status, CODE_KEY};

use super::{ConnectionInfo, IncomingConnection};
use crate::config::Limits;

/// The largest HTTP/2 DATA frame a client may send (the protocol's default, which the
/// server advertises). A request body reserves this much of its connection's request
/// buffer before it reads a frame, so a frame read is always paid for.
pub const MAX_DATA_FRAME: u32 = 16 * 1024;

/// The most bytes of a response handed to HTTP/2 at once. tonic encodes a whole message
/// into one buffer; handing it over in slices keeps what HTTP/2 holds for a stream the
/// client does not read to one slice, and lets a stalled slice be noticed.
const RESPONSE_SLICE: usize = 16 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the limits of one connection share: the accept path's slot and rate limiter,
/// and the budgets its requests draw from.
#[derive(Clone)]
pub struct ConnectionLimits {
    connection: ConnectionInfo,
    in_flight: Arc<Semaphore>,
    request_buffer: Arc<Semaphore>,
    body_timeout: Duration,
    stalls: Arc<Stalls>,
}

impl ConnectionLimits {
    /// What the front door knows of the connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.connection
    }

    fn new(connection: ConnectionInfo, limits: &Limits) -> ConnectionLimits {
        ConnectionLimits {
            connection,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            request_buffer: Arc::new(Semaphore::new(limits.grpc_request_buffer_bytes)),
            body_timeout: Duration::from_secs(limits.grpc_body_timeout_secs),
            stalls: Arc::new(Stalls::new(Duration::from_secs(limits.write_timeout_secs))),
        }
    }
}

/// Answers handed to HTTP/2 and not yet taken: each must be taken (the client granted
/// flow-control window for it) before its deadline, or the connection is closed.
///
/// A response body cannot act while HTTP/2 holds its slice waiting for window: nobody
/// polls it. The connection's socket is polled all along, so [`LimitedConnection`]
/// keeps the timer and fails the socket when the oldest slice is overdue.
struct Stalls {
    timeout: Duration,
    state: Mutex<StallState>,
}

#[derive(Default)]
struct StallState {
    next_id: u64,
    /// Slices handed over and not yet taken, with their deadlines (at most one per
    /// response in flight, so a short list).
    pending: Vec<(u64, Instant)>,
    /// The connection's task, woken when a first deadline appears.
    waker: Option<Waker>,
}

impl Stalls {
    fn new(timeout: Duration) -> Stalls {
        Stalls {
            timeout,
            state: Mutex::new(StallState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StallState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slice was handed over; returns its ticket.
    fn handed(&self) -> u64 {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.pending.push((id, Instant::now() + self.timeout));
        if state.pending.len() == 1 {
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
        }
        id
    }

    /// The slice was taken (or its response is gone).
    fn taken(&self, id: u64) {
        let mut state = self.lock();
        if let Some(index) = state.pending.iter().position(|(pending, _)| *pending == id) {
            state.pending.swap_remove(index);
        }
    }

    /// The earliest deadline, remembering `waker` to be told of a first one.
    fn earliest(&self, waker: &Waker) -> Option<Instant> {
        let mut state = self.lock();
        let earliest = state.pending.iter().map(|(_, deadline)| *deadline).min();
        if earliest.is_none() && !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
        earliest
    }
}

/// An accepted connection with its per-request limits. Fails reads and writes once an
/// answer handed to HTTP/2 has waited past the write timeout, which ends the
/// connection and frees everything its streams held.
pub struct LimitedConnection {
    inner: IncomingConnection,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
}

impl LimitedConnection {
    pub fn new(inner: IncomingConnection, limits: &Limits) -> LimitedConnection {
        let info = inner.connect_info();
        LimitedConnection {
            inner,
            limits: ConnectionLimits::new(info, limits),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    fn check_stalls(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.limits.stalls.earliest(cx.waker()) else {
            return Ok(());
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::debug!("closing a gRPC connection whose client takes no answers");
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took no answer within the write timeout",
                ))
            }
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for LimitedConnection {
    type ConnectInfo = ConnectionLimits;

    fn connect_info(&self) -> ConnectionLimits {
        self.limits.clone()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_stalls(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_stalls(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_stalls(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_stalls(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The tower layer that applies a connection's limits to each of its requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLimitLayer;

impl<S> tower_layer::Layer<S> for RequestLimitLayer {
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> RequestLimit<S> {
        RequestLimit { inner }
    }
}

/// See [`RequestLimitLayer`].
#[derive(Clone, Debug)]
pub struct RequestLimit<S> {
    inner: S,
}

type Response = http::Response<Body>;

impl<S> tower_service::Service<http::Request<Body>> for RequestLimit<S>
where
    S: tower_service::Service<http::Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was made ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(limits) = request.extensions().get::<ConnectionLimits>().cloned() else {
            // Only a connection accepted by `serve` has limits; nothing else reaches here.
            return Box::pin(inner.call(request));
        };
        if limits.connection.limiter.check().is_err() {
            return Box::pin(std::future::ready(Ok(refusal(ErrorCode::RateLimited))));
        }
        let request = request.map(|body| {
            Body::new(LimitedRequestBody::new(
                body,
                &limits.request_buffer,
                limits.body_timeout,
            ))
        });
        Box::pin(async move {
            // The permit is released when the answer has been written (or dropped),
            // not when the handler returns: an answer the client does not read still
            // holds memory.
            let Ok(permit) = limits.in_flight.clone().acquire_owned().await else {
                return Ok(refusal(ErrorCode::Unavailable));
            };
            let response = inner.call(request).await?;
            let (mut parts, body) = response.into_parts();
            to_corvid_error(&mut parts.headers);
            let body = LimitedResponseBody {
                inner: body,
                rest: None,
                permit: Some(permit),
                stalls: limits.stalls,
                handed: None,
            };
            Ok(http::Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// A trailers-only answer refusing a request.
fn refusal(code: ErrorCode) -> Response {
    to_status(&code.into()).into_http()
}

/// Gives a status tonic made itself (a request over the size limit, or one that could
/// not be decoded) the Corvid code and metadata every other error carries. Works on
/// response headers (a trailers-only answer) and on trailers alike.
fn to_corvid_error(headers: &mut http::HeaderMap) {
    if headers.contains_key(CODE_KEY) {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(error) = edge_error(&status) else {
        return;
    };
    headers.remove(Status::GRPC_STATUS);
    headers.remove(Status::GRPC_MESSAGE);
    headers.remove(Status::GRPC_STATUS_DETAILS);
    if let Err(err) = to_status(&error).add_header(headers) {
        tracing::warn!(%err, "cannot write a gRPC error's metadata");
    }
}

/// A request body with a deadline and a share of its connection's request buffer.
///
/// The deadline only bites while the body waits for bytes the client has not sent:
/// a request that waited for an in-flight slot with its body already received is not
/// penalised. Bytes read are paid for from the connection's buffer until the body is
/// dropped (tonic drops it once the message is decoded); a body that cannot reserve
/// room stops reading, so the rest stays in HTTP/2, bounded by the flow-control window.
struct LimitedRequestBody {
    inner: Body,
    budget: PollSemaphore,
    /// Room reserved from the connection's buffer (for bytes read, and `spare`).
    reserved: Option<OwnedSemaphorePermit>,
    /// Reserved room not yet used by bytes read.
    spare: usize,
    deadline: Pin<Box<Sleep>>,
}

impl LimitedRequestBody {
    fn new(inner: Body, budget: &Arc<Semaphore>, timeout: Duration) -> LimitedRequestBody {
        LimitedRequestBody {
            inner,
            budget: PollSemaphore::new(budget.clone()),
            reserved: None,
            spare: 0,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Pending, unless the deadline has passed.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let error = ApiError::new(
                    ErrorCode::Malformed,
                    "the request body did not arrive within the deadline",
                );
                Poll::Ready(Some(Err(Box::new(to_status(&error)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl HttpBody for LimitedRequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame_room = MAX_DATA_FRAME as usize;
        while this.spare < frame_room {
            let wanted = (frame_room - this.spare) as u32;
            match this.budget.poll_acquire_many(cx, wanted) {
                Poll::Ready(Some(permit)) => {
                    this.spare += permit.num_permits();
                    match &mut this.reserved {
                        Some(reserved) => reserved.merge(permit),
                        None => this.reserved = Some(permit),
                    }
                }
                // The budget is never closed; stop reading if it ever is.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return this.wait(cx),
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.spare = this.spare.saturating_sub(data.len());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => this.wait(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's in-flight permit until it is written or
/// dropped, hands its data to HTTP/2 in slices, and reports each slice handed over to
/// the connection's [`Stalls`] until HTTP/2 asks for the next.
struct LimitedResponseBody {
    inner: Body,
    /// What is left of a data frame after the slice handed over.
    rest: Option<Bytes>,
    permit: Option<OwnedSemaphorePermit>,
    stalls: Arc<Stalls>,
    handed: Option<u64>,
}

impl LimitedResponseBody {
    fn hand_over(&mut self, mut data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if data.len() > RESPONSE_SLICE {
            self.rest = Some(data.split_off(RESPONSE_SLICE));
        }
        if !data.is_empty() {
            self.handed = Some(self.stalls.handed());
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl HttpBody for LimitedResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // Being asked for more means the slice handed over was taken.
        if let Some(id) = this.handed.take() {
            this.stalls.taken(id);
        }
        if let Some(rest) = this.rest.take() {
            return this.hand_over(rest);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => this.hand_over(data),
                Err(frame) => match frame.into_trailers() {
                    Ok(mut trailers) => {
                        to_corvid_error(&mut trailers);
                        this.permit = None;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                },
            },
            Poll::Ready(Some(Err(err))) => {
                this.permit = None;
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                this.permit = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.as_ref().map_or(0, |rest| rest.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

impl Drop for LimitedResponseBody {
    fn drop(&mut self) {
        if let Some(id) = self.handed.take() {
            self.stalls.taken(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_layer::Layer;
    use tower_service::Service;

    fn connection_limits(limits: &Limits) -> ConnectionLimits {
        let connection = ConnectionInfo {
            limiter: Arc::new(crate::admission::RequestRate::new(
                limits,
                crate::metrics::Metrics::off(),
                crate::metrics::GRPC,
            )),
            state: crate::admission::ConnectionState::new(tokio::time::Instant::now()),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        ConnectionLimits::new(connection, limits)
    }

    /// A body that yields `frames` data frames of `MAX_DATA_FRAME` bytes, then ends
    /// (or never ends, with `usize::MAX`).
    struct Frames(usize);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            self.0 -= 1;
            let data = Bytes::from(vec![0x55; MAX_DATA_FRAME as usize]);
            Poll::Ready(Some(Ok(Frame::data(data))))
        }
    }

    /// A service answering every request with a 40 KiB body.
    #[derive(Clone)]
    struct Answer;

    impl Service<http::Request<Body>> for Answer {
        type Response = Response;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(Body::new(Frames(3)))))
        }
    }

    async fn read_to_end(body: &mut Body) -> usize {
        let mut read = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        {
            read += frame.unwrap().data_ref().map_or(0, Bytes::len);
        }
        read
    }

    #[tokio::test]
    async fn a_request_stays_in_flight_until_its_answer_is_written_or_dropped() {
        let limits = Limits {
            max_in_flight: 1,
            ..Limits::default()
        };
        let connection = connection_limits(&limits);
        let request = || {
            let mut request = http::Request::new(Body::empty());
            request.extensions_mut().insert(connection.clone());
            request
        };
        let mut service = RequestLimitLayer.layer(Answer);

        // The first answer exists and is not written: the second request waits.
        let first = service.call(request()).await.unwrap();
        let mut second = service.call(request());
        assert!(futures::poll!(&mut second).is_pending());
        // Written to the end: the second is served.
        let mut first = first.into_body();
        assert_eq!(read_to_end(&mut first).await, 3 * MAX_DATA_FRAME as usize);
        let second = second.await.unwrap();

        // Dropped unwritten (the client went away): the third is served.
        let mut third = service.call(request());
        assert!(futures::poll!(&mut third).is_pending());
        drop(second);
        third.await.unwrap();
    }

    #[tokio::test]
    async fn unfinished_request_bodies_of_a_connection_read_at_most_its_buffer() {
        let budget = Arc::new(Semaphore::new(4 * MAX_DATA_FRAME as usize));
        let timeout = Duration::from_secs(3600);
        let mut bodies: Vec<_> = (0..8)
            .map(|_| LimitedRequestBody::new(Body::new(Frames(usize::MAX)), &budget, timeout))
            .collect();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut read_each = |bodies: &mut [LimitedRequestBody]| -> usize {
            let mut read = 0;
            for body in bodies {
                while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut *body).poll_frame(&mut cx) {
                    read += frame.data_ref().map_or(0, Bytes::len);
                }
            }
            read
        };
        assert_eq!(read_each(&mut bodies), 4 * MAX_DATA_FRAME as usize);
        // A finished (dropped) body gives its bytes back to the others.
        bodies.remove(0);
        assert_eq!(read_each(&mut bodies), 4 * MAX_DATA_FRAME as usize);
    }

    #[tokio::test]
    async fn a_request_body_waiting_past_its_deadline_fails_as_malformed() {
        let budget = Arc::new(Semaphore::new(1 << 20));
        let never = Body::new(http_body_never());
        let mut body = LimitedRequestBody::new(never, &budget, Duration::from_millis(100));
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let error = frame.unwrap().unwrap_err();
        let status = error.downcast::<Status>().unwrap();
        let error = corvid_grpc::status::from_status(&status).unwrap();
        assert_eq!(error.code, ErrorCode::Malformed);
    }

    /// A body that never yields anything.
    fn http_body_never() -> impl HttpBody<Data = Bytes, Error = Status> + Send + 'static {
        struct Never;
        impl HttpBody for Never {
            type Data = Bytes;
            type Error = Status;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
                Poll::Pending
            }
        }
        Never
    }
}
