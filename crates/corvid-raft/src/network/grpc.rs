//! Server-to-server calls over gRPC (`proto/peer.proto`, package `corvid.peer.v1`): the
//! client side ([`GrpcLinks`]: one lazily connected channel per peer address, deadlines,
//! back-off after failures) and the listener ([`serve`]), both checking the cluster id and
//! the shared secret ([`PeerAuth`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corvid_store::typ::NodeId;
use corvid_store::ClusterId;
use futures::future::BoxFuture;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::listener::{self, ConnectionState, ListenerLimits, ListenerStats};
use super::{LinkError, Links, MAX_MESSAGE_BYTES};
use crate::peer::{PeerCall, PeerService};

/// The generated gRPC types and stubs.
#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("corvid.peer.v1");
}

use proto::peer_client::PeerClient;
use proto::peer_server::{Peer, PeerServer};
use proto::Body;

const CLUSTER_ID_KEY: &str = "corvid-cluster-id";
const SECRET_KEY: &str = "corvid-cluster-secret-bin";
/// Calls one connection to the server-to-server listener may have served at once.
const PEER_CALLS_PER_CONNECTION: usize = 256;
/// Header bytes of one call: the cluster id, the secret and gRPC's own fit many times over.
const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
/// Request bytes a connection may send that no call has read yet (HTTP/2 flow control);
/// hyper's default, stated here because it bounds what an unauthenticated client holds.
const CONNECTION_WINDOW_BYTES: u32 = 1 << 20;
/// How often the listener pings a connection's other end, and how long it waits for the
/// answer before it closes the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams a connection may reset by sending bad frames before it is closed (GOAWAY);
/// hyper's own default, which tonic leaves unset (no limit).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The first pause after a failed call to a peer; it doubles with each further failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause: a peer that comes back is dialled again within this.
const MAX_BACKOFF: Duration = Duration::from_millis(800);

/// What proves a call comes from a server of this cluster: the cluster id, and the
/// shared secret when the cluster has one.
#[derive(Clone)]
pub struct PeerAuth {
    cluster: ClusterId,
    secret: Option<Vec<u8>>,
}

impl PeerAuth {
    pub fn new(cluster: ClusterId, secret: Option<Vec<u8>>) -> PeerAuth {
        PeerAuth { cluster, secret }
    }

    fn stamp(&self, metadata: &mut MetadataMap) {
        if let Ok(value) = AsciiMetadataValue::try_from(self.cluster.to_string()) {
            metadata.insert(CLUSTER_ID_KEY, value);
        }
        if let Some(secret) = &self.secret {
            metadata.insert_bin(SECRET_KEY, BinaryMetadataValue::from_bytes(secret));
        }
    }

    fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let cluster = metadata
            .get(CLUSTER_ID_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if cluster != self.cluster.to_string() {
            return Err(Status::permission_denied(
                "this server belongs to another cluster",
            ));
        }
        if let Some(secret) = &self.secret {
            let given = metadata
                .get_bin(SECRET_KEY)
                .and_then(|v| v.to_bytes().ok())
                .unwrap_or_default();
            // Constant time, so that timing tells an attacker nothing about the secret.
            if !bool::from(given.as_ref().ct_eq(secret.as_slice())) {
                return Err(Status::unauthenticated("wrong cluster secret"));
            }
        }
        Ok(())
    }
}

/// One peer's channel, and its back-off after failures.
struct PeerChannel {
    channel: Channel,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Calls other servers over gRPC.
pub struct GrpcLinks {
    auth: PeerAuth,
    channels: Mutex<HashMap<String, PeerChannel>>,
}

impl GrpcLinks {
    pub fn new(auth: PeerAuth) -> Arc<GrpcLinks> {
        Arc::new(GrpcLinks {
            auth,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// The channel to `address`; refused while the peer is in back-off, unless `call` is
    /// one of openraft's, whose replication pauses after failures by itself (see
    /// `RaftLink::backoff`): gating it here too would keep a leader from a restarted
    /// server for up to [`MAX_BACKOFF`].
    fn channel(&self, address: &str, call: PeerCall) -> Result<Channel, LinkError> {
        let raft_call = matches!(
            call,
            PeerCall::Append | PeerCall::Vote | PeerCall::InstallSnapshot
        );
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = channels.get(address) {
            if let Some(retry_at) = peer.retry_at.filter(|_| !raft_call) {
                if Instant::now() < retry_at {
                    return Err(LinkError::NotSent(format!(
                        "{address} failed lately; backing off"
                    )));
                }
            }
            return Ok(peer.channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| LinkError::NotSent(format!("bad peer address {address}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(
            address.to_string(),
            PeerChannel {
                channel: channel.clone(),
                failures: 0,
                retry_at: None,
            },
        );
        Ok(channel)
    }

    fn record(&self, address: &str, failed: bool) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = channels.get_mut(address) {
            if failed {
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << peer.failures.min(16))
                    .min(MAX_BACKOFF);
                peer.failures = peer.failures.saturating_add(1);
                peer.retry_at = Some(Instant::now() + backoff);
            } else {
                peer.failures = 0;
                peer.retry_at = None;
            }
        }
    }
}

/// Whether a failed call never reached the peer: its connection was refused.
fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = error.source();
    }
    false
}

impl Links for GrpcLinks {
    fn call<'a>(
        &'a self,
        _target: NodeId,
        address: &'a str,
        call: PeerCall,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, LinkError>> {
        Box::pin(async move {
            let channel = self.channel(address, call)?;
            let mut client = PeerClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            let mut request = Request::new(Body { data: body });
            request.set_timeout(timeout);
            self.auth.stamp(request.metadata_mut());
            let answer = tokio::time::timeout(timeout, async {
                match call {
                    PeerCall::Append => client.append(request).await,
                    PeerCall::Vote => client.vote(request).await,
                    PeerCall::InstallSnapshot => client.install_snapshot(request).await,
                    PeerCall::ForwardWrite => client.forward_write(request).await,
                    PeerCall::ReadIndex => client.read_index(request).await,
                    PeerCall::Presence => client.presence(request).await,
                    PeerCall::Status => client.status(request).await,
                    PeerCall::ChangeMembership => client.change_membership(request).await,
                }
            })
            .await;
            match answer {
                Ok(Ok(response)) => {
                    self.record(address, false);
                    Ok(response.into_inner().data)
                }
                Ok(Err(status)) => match status.code() {
                    tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::InvalidArgument => {
                        Err(LinkError::Refused(status.message().to_string()))
                    }
                    _ => {
                        self.record(address, true);
                        if never_sent(&status) {
                            Err(LinkError::NotSent(format!("{address}: {status}")))
                        } else {
                            Err(LinkError::Lost(format!("{address}: {status}")))
                        }
                    }
                },
                Err(_) => {
                    self.record(address, true);
                    Err(LinkError::Lost(format!(
                        "{address} did not answer {call:?} within {timeout:?}"
                    )))
                }
            }
        })
    }
}

/// The gRPC face of a [`PeerService`]; its calls were authenticated before they got here.
struct GrpcPeer {
    service: Arc<PeerService>,
}

impl GrpcPeer {
    async fn serve(
        &self,
        call: PeerCall,
        request: Request<Body>,
    ) -> Result<Response<Body>, Status> {
        let body = request.into_inner().data;
        match self.service.handle(call, &body).await {
            Ok(data) => Ok(Response::new(Body { data })),
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        }
    }
}

#[tonic::async_trait]
impl Peer for GrpcPeer {
    async fn append(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        self.serve(PeerCall::Append, request).await
    }
    async fn vote(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        self.serve(PeerCall::Vote, request).await
    }
    async fn install_snapshot(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        self.serve(PeerCall::InstallSnapshot, request).await
    }
    async fn forward_write(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        self.serve(PeerCall::ForwardWrite, request).await
    }
    async fn read_index(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        self.serve(PeerCall::ReadIndex, request).await
    }
    async fn presence(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        self.serve(PeerCall::Presence, request).await
    }
    async fn status(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        self.serve(PeerCall::Status, request).await
    }
    async fn change_membership(&self, request: Request<Body>) -> Result<Response<Body>, Status> {
        self.serve(PeerCall::ChangeMembership, request).await
    }
}

/// Serves `service` to the other servers on `listener` until `shutdown`, holding the
/// connections of unauthenticated clients to `limits` (see [`super::listener`]) and
/// counting what the limits refused in `stats`.
pub async fn serve(
    listener: TcpListener,
    service: Arc<PeerService>,
    auth: PeerAuth,
    limits: ListenerLimits,
    stats: Arc<ListenerStats>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let peer = PeerServer::new(GrpcPeer { service })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // A call is authenticated from its headers, before its body is read: an
    // unauthenticated client makes the server decode nothing.
    let refused = stats.clone();
    let peer = InterceptedService::new(peer, move |request: Request<()>| {
        if let Err(status) = auth.check(request.metadata()) {
            refused.call_refused();
            return Err(status);
        }
        if let Some(connection) = request.extensions().get::<Arc<ConnectionState>>() {
            connection.authenticated();
        }
        Ok(request)
    });
    let mut incoming = listener::admit(listener, limits, stats, shutdown.clone());
    let incoming = futures::stream::poll_fn(move |cx| incoming.poll_recv(cx));
    tonic::transport::Server::builder()
        // A peer's calls are few at a time (a replication stream, elections, forwards);
        // this bounds what one connection, authenticated or not, can have served at once.
        .concurrency_limit_per_connection(PEER_CALLS_PER_CONNECTION)
        // What one connection can make the server hold before its calls are authenticated:
        // streams (a peer's client waits for a free one rather than failing), header bytes,
        // and request bytes no call has read (the connection's flow-control window).
        .max_concurrent_streams(PEER_CALLS_PER_CONNECTION as u32)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(CONNECTION_WINDOW_BYTES)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        // A peer that vanished without closing its connection (its machine lost power)
        // would hold an authenticated slot for good; pings find it out.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(peer)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
