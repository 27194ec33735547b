//! Commands: the entries of the replicated log, already stamped by the leader.
//!
//! A command holds everything its effect depends on (time, session keys, password hashes,
//! session policy), so that every server applying it reaches the same state.

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::types::{
    AccountId, EndReason, Message, MessageId, ReceiptStatus, SessionKey, Timestamp,
};

/// How long a new session may live, chosen by the server's configuration at login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPolicy {
    /// The session ends after this long without activity.
    pub idle_timeout_ms: u64,
    /// The session ends this long after login, whatever the activity.
    pub max_lifetime_ms: u64,
    /// A new login ends every older session of the account.
    pub single_session: bool,
}

impl Default for SessionPolicy {
    fn default() -> SessionPolicy {
        SessionPolicy {
            idle_timeout_ms: 60 * 60 * 1000,
            max_lifetime_ms: 30 * 24 * 60 * 60 * 1000,
            single_session: false,
        }
    }
}

/// One state change. Created by the leader, applied by every server in log order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateAccount {
        username: String,
        display_name: String,
        /// An argon2id PHC string computed by the leader. The plaintext never gets here.
        password_hash: String,
        now: Timestamp,
    },
    /// The leader has already checked the password against `account`'s hash.
    Login {
        account: AccountId,
        session: SessionKey,
        policy: SessionPolicy,
        now: Timestamp,
    },
    Logout {
        session: SessionKey,
        now: Timestamp,
    },
    /// The leader has already checked the password again.
    DeleteAccount {
        session: SessionKey,
        account: AccountId,
        force: bool,
        now: Timestamp,
    },
    Send {
        session: SessionKey,
        to: String,
        text: String,
        client_id: u64,
        now: Timestamp,
    },
    MarkRead {
        session: SessionKey,
        ids: Vec<MessageId>,
        now: Timestamp,
    },
    /// Messages reached a session of `account` (pushed or fetched).
    MarkDelivered {
        account: AccountId,
        ids: Vec<MessageId>,
        now: Timestamp,
    },
    DeleteMessages {
        session: SessionKey,
        ids: Vec<MessageId>,
        now: Timestamp,
    },
    /// Activity that is not otherwise a write (a live subscription) keeps the session alive.
    Touch {
        session: SessionKey,
        now: Timestamp,
    },
}

/// What a command did, as its proposer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    AccountCreated {
        account: AccountId,
        username: String,
    },
    LoggedIn {
        account: AccountId,
        username: String,
        unread: u64,
    },
    LoggedOut,
    AccountDeleted,
    /// `duplicate` is true when the client message id had been seen: `message` is the original.
    Sent {
        message: Message,
        duplicate: bool,
    },
    MarkedRead {
        count: u64,
    },
    MarkedDelivered {
        count: u64,
    },
    MessagesDeleted {
        count: u64,
    },
    Touched,
    Rejected(Rejection),
    /// Entries that carry no command (blank entries, membership changes).
    Nothing,
}

/// What every server must tell its own connected clients after applying a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// A new message for `to`: push it to `to`'s live sessions.
    Message { to: AccountId, message: Message },
    /// A message sent by `to` changed status.
    Receipt {
        to: AccountId,
        id: MessageId,
        status: ReceiptStatus,
    },
    /// A session ended: close its live streams, telling them why.
    SessionEnded {
        account: AccountId,
        session: SessionKey,
        reason: EndReason,
    },
    /// The whole state was replaced by a snapshot installed from another server. Never
    /// produced by `apply`: the store emits it alone once the snapshot's state is committed.
    /// The entries the snapshot covers were not applied here, so none of their effects were
    /// emitted; each live subscription rereads what it may have missed.
    StateReplaced,
}

/// The full result of applying one command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Option<Outcome>,
    pub effects: Vec<Effect>,
}

impl Command {
    /// The time its proposer stamped into the command. The state applies it at the later
    /// of this and the greatest time already applied (see `apply`).
    pub fn now(&self) -> Timestamp {
        match self {
            Command::CreateAccount { now, .. }
            | Command::Login { now, .. }
            | Command::Logout { now, .. }
            | Command::DeleteAccount { now, .. }
            | Command::Send { now, .. }
            | Command::MarkRead { now, .. }
            | Command::MarkDelivered { now, .. }
            | Command::DeleteMessages { now, .. }
            | Command::Touch { now, .. } => *now,
        }
    }
}

impl Applied {
    pub fn outcome(&self) -> &Outcome {
        self.outcome.as_ref().unwrap_or(&Outcome::Nothing)
    }
}
