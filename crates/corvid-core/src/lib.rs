//! Corvid's core: the replicated chat state machine and the protocol-neutral API.
//!
//! This crate does not touch the outside world. It has no clock, no randomness, no sockets
//! and no files: the leader stamps time, tokens and password hashes into a [`Command`]
//! before it enters the log, and [`apply`] turns a command plus the current tables into an
//! [`Applied`] outcome, the same on every server. Storage is abstracted by the [`Tables`]
//! traits so that the state can live in a real database (corvid-store) or in a `BTreeMap`
//! ([`MemTables`]) for tests.

pub mod api;
mod apply;
pub mod check;
pub mod command;
pub mod error;
pub mod pattern;
pub mod query;
mod records;
pub mod tables;
pub mod types;
pub mod validate;
pub mod write_back;

pub use api::{AccountRow, AccountsPage, Event, HistoryPage, Request, Response, SubscribeFrom};
pub use apply::apply;
pub use command::{Applied, Command, Effect, Outcome, SessionPolicy};
pub use error::{ApiError, ErrorCode, LeaderAddrs, Rejection};
pub use pattern::{Pattern, PatternSyntax};
pub use tables::{MemTables, StorageFault, Table, Tables, TablesMut};
pub use types::{
    AccountId, EndReason, Message, MessageId, ReceiptStatus, SessionKey, Timestamp, Token,
};
pub use write_back::WriteBack;
