//! The HTTP frontend: the web UI at `/` and its WebSocket JSON API at `/api/ws`
//! (docs/web-api.md), on their own listener.
//!
//! Connections come through the server's front door (`admission`) like those of the other
//! two protocols: one pool of slots, the TLS, handshake, login and write deadlines, and a
//! request-rate limiter per connection that counts every HTTP request and every WebSocket
//! message. hyper serves HTTP/1.1 on each admitted connection and axum routes it. A
//! WebSocket upgrade hands the connection's stream back to the connection's own task
//! (the front door's task tracker, so a shutdown waits for it), which then runs the
//! WebSocket session (`socket`) on the same stream and under the same deadlines.

mod assets;
mod json;
mod socket;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, CompanionIo, Connection, Frontend, Protocol, StreamCompanion};
use crate::config::Limits;
use crate::service::Service;

/// The shortest request line a client can open with (`GET / HTTP/1.1\r\n`); until it has
/// arrived the handshake deadline applies.
const REQUEST_LINE_MIN: usize = 16;
/// The most bytes of request line and headers hyper buffers for one request.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves the web UI and its WebSocket API on `listener` (inside TLS with `tls`) through
/// the server's front door until `shutdown` is cancelled; open WebSocket sessions then
/// write the answers they owe and close with "going away".
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
) {
    let frontend = Arc::new(WebFrontend {
        service,
        limits: admission.limits().clone(),
        shutdown,
        router: router(),
    });
    admission.serve(listener, tls, frontend).await;
}

/// The routes of the HTTP listener: the UI's files and the WebSocket endpoint.
pub fn router() -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .route("/api/ws", get(upgrade))
        .fallback(assets::not_found)
}

/// HTTP as a frontend of the front door.
struct WebFrontend {
    service: Arc<Service>,
    limits: Limits,
    shutdown: CancellationToken,
    router: Router,
}

/// What a request's handler can hand back to its connection: the stream of a WebSocket
/// upgrade, once hyper has written the `101` answer.
#[derive(Clone, Default)]
struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    fn put(&self, upgrade: OnUpgrade) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(upgrade);
    }

    fn take(&self) -> Option<OnUpgrade> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

impl Frontend for WebFrontend {
    const PROTOCOL: Protocol = Protocol {
        name: crate::metrics::WEB,
        handshake_bytes: REQUEST_LINE_MIN,
        closes_when_idle: false,
    };

    async fn serve(self: Arc<Self>, connection: Connection) {
        let Connection {
            io,
            peer,
            limiter,
            state,
        } = connection;
        let arrivals = Arc::new(Arrivals::default());
        let io = CompanionIo::new(io, arrivals.clone());
        let upgrade = UpgradeSlot::default();
        let router = self.router.clone();
        let slot = upgrade.clone();
        let http_limiter = limiter.clone();
        let handle = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            let mut router = router.clone();
            let limited = http_limiter.check().is_err();
            request.extensions_mut().insert(slot.clone());
            async move {
                if limited {
                    return Ok(too_many_requests());
                }
                let request = request.map(Body::new);
                tower_service::Service::call(&mut router, request).await
            }
        });
        let http = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(self.limits.frame_timeout_secs))
            .max_buf_size(MAX_HEADER_BYTES)
            .serve_connection(TokioIo::new(io), handle)
            .with_upgrades();
        let mut http = std::pin::pin!(http);
        let served = tokio::select! {
            served = http.as_mut() => served,
            _ = self.shutdown.cancelled() => {
                http.as_mut().graceful_shutdown();
                http.await
            }
        };
        if let Err(err) = served {
            tracing::debug!(%peer, %err, "HTTP connection ended with an error");
        }
        let Some(upgrade) = upgrade.take() else {
            return;
        };
        let stream = match upgrade.await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(%peer, %err, "WebSocket upgrade failed");
                return;
            }
        };
        let session = socket::Session {
            service: self.service.clone(),
            limits: self.limits.clone(),
            shutdown: self.shutdown.clone(),
            peer,
            limiter,
            state,
            arrivals,
        };
        session.run(TokioIo::new(stream)).await;
    }
}

/// `GET /api/ws`: checks the WebSocket handshake (RFC 6455, section 4.2.1) and answers
/// `101 Switching Protocols`; the connection's task takes the stream from there.
async fn upgrade(mut request: Request) -> Response {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket (docs/web-api.md)\n",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut response = plain(StatusCode::BAD_REQUEST, "WebSocket version 13 only\n");
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key\n");
    };
    if !same_origin(headers) {
        // A page of another site may not drive the API with the browser of someone who
        // visits it.
        return plain(StatusCode::FORBIDDEN, "cross-origin WebSocket refused\n");
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let (Some(slot), Some(on_upgrade)) = (
        request.extensions().get::<UpgradeSlot>().cloned(),
        request.extensions_mut().remove::<OnUpgrade>(),
    ) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot upgrade\n");
    };
    slot.put(on_upgrade);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response_headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        response_headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Whether a request's `Origin`, if it has one, names the host it was sent to. Browsers
/// always send it with a WebSocket handshake; other clients need not.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|origin| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
    });
    matches!((origin_host, host), (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    assets::common_headers(response.headers_mut());
    response
}

fn too_many_requests() -> Response {
    plain(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests; slow down\n",
    )
}

/// Whether bytes have arrived since the last whole WebSocket message: the start of a
/// message that must then complete within the frame deadline.
#[derive(Default)]
struct Arrivals {
    unfinished: AtomicBool,
    notify: Notify,
}

impl Arrivals {
    fn arrived(&self) {
        if !self.unfinished.swap(true, Ordering::Relaxed) {
            self.notify.notify_one();
        }
    }

    /// A whole message arrived.
    fn message_done(&self) {
        self.unfinished.store(false, Ordering::Relaxed);
    }

    /// Completes once bytes of a message have arrived and it is not finished.
    async fn unfinished(&self) {
        loop {
            let notified = self.notify.notified();
            if self.unfinished.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    }
}

/// A connection's stream notes the arrival of bytes, for the frame deadline.
impl StreamCompanion for Arc<Arrivals> {
    fn bytes_arrived(&self) {
        self.arrived();
    }
}
