//! What a client call can fail with, and which failures are worth another server.

use corvid_core::{ApiError, ErrorCode};

use crate::Protocol;

/// Why a [`Client`](crate::Client) call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server rejected the request; `code` is stable across protocols and versions.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No server could be reached, or the connection failed while in use.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The connection closed before the answer arrived.
    #[error("connection closed")]
    Closed,
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer arrived within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The client was given no server address.
    #[error("no server address given")]
    NoServers,
    /// The TLS settings cannot work (an unreadable CA file, a bad server name).
    #[error("TLS: {0}")]
    Tls(String),
}

impl ClientError {
    /// The server's error code, when the server rejected the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(error) => Some(error.code),
            _ => None,
        }
    }

    /// Whether another attempt, possibly on another server, may succeed where this one
    /// failed: the connection broke, or the server said it cannot serve the request now.
    pub(crate) fn is_failover(&self) -> bool {
        match self {
            ClientError::Api(error) => matches!(
                error.code,
                ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::TooManyConnections
            ),
            ClientError::Io(_) | ClientError::Closed => true,
            ClientError::Protocol(_)
            | ClientError::Timeout
            | ClientError::NoServers
            | ClientError::Tls(_) => false,
        }
    }

    /// The address, for `transport`, of the leader that a `not_leader` answer named.
    pub(crate) fn leader(&self, transport: Protocol) -> Option<String> {
        let ClientError::Api(error) = self else {
            return None;
        };
        let leader = error
            .leader
            .as_ref()
            .filter(|_| error.code == ErrorCode::NotLeader)?;
        match transport {
            Protocol::Wire => leader.wire.clone(),
            Protocol::Grpc => leader.grpc.clone(),
        }
    }

    /// Whether the same connection should be asked again after a pause: the server only
    /// said this connection sends too fast.
    pub(crate) fn is_slow_down(&self) -> bool {
        self.code() == Some(ErrorCode::RateLimited)
    }
}
