//! A connection to one server over either protocol: the [`Client`](crate::Client) sees
//! one interface, and each transport does the same job its own way.

use std::sync::Arc;
use std::time::Duration;

use corvid_core::{Request, Response};
use tokio_util::sync::CancellationToken;

use crate::events::EventRouter;
use crate::grpc::GrpcChannel;
use crate::wire::WireConnection;
use crate::{ClientConfig, ClientError};

/// Which protocol a client speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The binary protocol (docs/protocol.md); servers listen on port 7070 by default.
    #[default]
    Wire,
    /// gRPC (proto/corvid.proto); servers listen on port 7071 by default.
    Grpc,
}

impl Protocol {
    /// `wire` or `grpc`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Wire => "wire",
            Protocol::Grpc => "grpc",
        }
    }

    /// The address of a server on this machine with the default port of this transport.
    pub fn default_server(self) -> &'static str {
        match self {
            Protocol::Wire => "127.0.0.1:7070",
            Protocol::Grpc => "127.0.0.1:7071",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Protocol, String> {
        match text {
            "wire" => Ok(Protocol::Wire),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(format!("unknown transport `{other}`: use wire or grpc")),
        }
    }
}

pub(crate) enum Connection {
    Wire(WireConnection),
    Grpc(GrpcChannel),
}

impl Connection {
    /// Connects to `address` with `transport`; events go to `router`.
    pub(crate) async fn open(
        config: &ClientConfig,
        address: &str,
        router: Arc<EventRouter>,
    ) -> Result<Connection, ClientError> {
        let tls = config.tls.as_ref();
        let (timeout, max_frame_len) = (config.connect_timeout, config.max_frame_len);
        Ok(match config.transport {
            Protocol::Wire => Connection::Wire(
                WireConnection::open(address, tls, timeout, max_frame_len, router).await?,
            ),
            Protocol::Grpc => Connection::Grpc(
                GrpcChannel::open(address, tls, timeout, max_frame_len, router).await?,
            ),
        })
    }

    pub(crate) fn address(&self) -> &str {
        match self {
            Connection::Wire(connection) => connection.address(),
            Connection::Grpc(connection) => connection.address(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Connection::Wire(connection) => connection.is_closed(),
            Connection::Grpc(connection) => connection.is_closed(),
        }
    }

    /// Ends the connection; requests still waiting on it fail.
    pub(crate) fn close(&self) {
        match self {
            Connection::Wire(connection) => connection.close(),
            Connection::Grpc(connection) => connection.close(),
        }
    }

    /// A token cancelled when the subscription this connection carries ends: with the
    /// binary protocol, the connection itself; with gRPC, the `Subscribe` stream.
    pub(crate) fn subscription_ended(&self) -> CancellationToken {
        match self {
            Connection::Wire(connection) => connection.closed_token(),
            Connection::Grpc(connection) => connection.subscription_ended(),
        }
    }

    /// Sends `request` (as request `id` where the protocol numbers requests) and waits at
    /// most `timeout` for its answer.
    pub(crate) async fn request(
        &self,
        id: u32,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        match self {
            Connection::Wire(connection) => connection.request(id, request, timeout).await,
            Connection::Grpc(connection) => connection.request(request, timeout).await,
        }
    }
}
