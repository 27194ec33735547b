//! Corvid's async client library: the binary protocol or gRPC, pipelined, with failover.
//!
//! ```no_run
//! # async fn demo() -> Result<(), corvid_client::ClientError> {
//! use corvid_client::Client;
//!
//! let client = Client::connect(&["127.0.0.1:7070".to_string()]).await?;
//! let session = client.login("alice", "correct horse").await?;
//! let sent = client.send(session.token, "bob", "hi", 42).await?;
//! println!("sent #{}", sent.message.id.0);
//! # Ok(())
//! # }
//! ```
//!
//! A [`Client`] keeps one connection to one server of its list. Every call gets a fresh
//! request id and waits for the answer with that id, so calls from many tasks share the
//! connection concurrently. A lost connection or a `not_leader`/`unavailable` answer moves
//! the client to the next server, and the call is retried there.
//!
//! [`ClientConfig::transport`] chooses the protocol. Over gRPC each call is its RPC on one
//! HTTP/2 channel (HTTP/2 multiplexes them), and pushed events come from the `Subscribe`
//! stream; everything else, failover and resubscription included, is the same.

mod calls;
mod client;
mod connection;
mod error;
mod events;
mod grpc;
mod tls;
mod wire;

pub use calls::{LoggedIn, Sent};
pub use client::{Client, ClientConfig, Subscription};
pub use connection::Protocol;
pub use error::ClientError;
pub use events::{EventItem, Events};
pub use tls::TlsConfig;
