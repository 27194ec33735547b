//! The protocol-neutral API: what a client asks, what it gets back, what is pushed to it.
//!
//! Every frontend (binary protocol, gRPC, web) decodes into [`Request`] and encodes
//! [`Response`] and [`Event`]; none of them has behaviour of its own.

use serde::{Deserialize, Serialize};

use crate::pattern::PatternSyntax;
use crate::types::{EndReason, Message, MessageId, ReceiptStatus, Token};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Open a protocol session; answered with [`Response::Pong`]. Useful to measure latency.
    Ping,
    CreateAccount {
        username: String,
        display_name: String,
        password: String,
    },
    Login {
        username: String,
        password: String,
    },
    Logout {
        token: Token,
    },
    DeleteAccount {
        token: Token,
        password: String,
        force: bool,
    },
    /// `cursor` is the `next_cursor` of the previous page.
    ListAccounts {
        token: Token,
        pattern: String,
        syntax: PatternSyntax,
        limit: Option<u32>,
        cursor: Option<String>,
    },
    Send {
        token: Token,
        to: String,
        text: String,
        client_id: u64,
    },
    /// The oldest unread messages, at most `limit`. Does not mark them read.
    FetchUnread {
        token: Token,
        limit: Option<u32>,
    },
    MarkRead {
        token: Token,
        ids: Vec<MessageId>,
    },
    /// The conversation with `with`, both directions, newest page first:
    /// messages older than `before` (or the newest ones), returned oldest first.
    History {
        token: Token,
        with: String,
        before: Option<MessageId>,
        limit: Option<u32>,
    },
    DeleteMessages {
        token: Token,
        ids: Vec<MessageId>,
    },
    /// Start pushed events on this connection, first replaying what `from` names; see
    /// [`SubscribeFrom`].
    Subscribe {
        token: Token,
        from: SubscribeFrom,
    },
}

/// Where a subscription starts: which messages already in the inbox it replays before it
/// goes live. In every case the replay and the live events meet with no gap and no repeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SubscribeFrom {
    /// Replay nothing: only messages that arrive after the subscription started.
    #[default]
    Now,
    /// Replay every message still in the inbox (read or unread) with an id greater than
    /// this one: how a client that saved the id of the last message it saw resumes.
    After(MessageId),
    /// Replay every unread message, oldest first: how a client with no saved position
    /// starts.
    OldestUnread,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Pong,
    AccountCreated {
        username: String,
    },
    LoggedIn {
        token: Token,
        username: String,
        unread: u64,
    },
    LoggedOut,
    AccountDeleted,
    Accounts(AccountsPage),
    /// `duplicate` is true when this answers a retry: `message` is the original.
    Sent {
        message: Message,
        duplicate: bool,
    },
    Messages {
        messages: Vec<Message>,
    },
    MarkedRead {
        count: u64,
    },
    History(HistoryPage),
    MessagesDeleted {
        count: u64,
    },
    /// Events follow on this connection. `last_id` is the newest message id in the inbox
    /// when the subscription started (0 if empty).
    Subscribed {
        last_id: MessageId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRow {
    pub username: String,
    pub display_name: String,
    pub online: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountsPage {
    pub rows: Vec<AccountRow>,
    /// Present when more accounts may match: pass it back to get the next page.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Present when older messages exist: pass it as `before` to page further back.
    pub next_before: Option<MessageId>,
}

/// Pushed to a subscribed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Message(Message),
    /// A message this user sent changed status.
    Receipt {
        id: MessageId,
        status: ReceiptStatus,
    },
    /// The session ended; no more events follow.
    SessionEnded {
        reason: EndReason,
    },
}
