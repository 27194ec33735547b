//! One typed method per request, each a [`Client::call`] plus the match on its answer.

use std::time::{Duration, Instant};

use corvid_core::{
    AccountsPage, HistoryPage, Message, MessageId, PatternSyntax, Request, Response, Token,
};

use crate::{Client, ClientError};

/// The answer to a successful login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedIn {
    /// The session token: a credential, to be kept secret.
    pub token: Token,
    /// The username as it was registered (its case may differ from what was typed).
    pub username: String,
    /// Unread messages waiting in the inbox.
    pub unread: u64,
}

/// The answer to a send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The stored message, with its id and timestamp.
    pub message: Message,
    /// True when the server had already stored this client id: `message` is the original.
    pub duplicate: bool,
}

/// The error for an answer of the wrong kind.
pub(crate) fn unexpected(request: &str, response: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected answer to {request}: {response:?}"))
}

impl Client {
    /// Round trip to the server; returns how long it took.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        match self.call(Request::Ping).await? {
            Response::Pong => Ok(start.elapsed()),
            other => Err(unexpected("ping", &other)),
        }
    }

    /// Creates an account; returns its username as stored.
    pub async fn create_account(
        &self,
        username: &str,
        display_name: &str,
        password: &str,
    ) -> Result<String, ClientError> {
        let request = Request::CreateAccount {
            username: username.to_string(),
            display_name: display_name.to_string(),
            password: password.to_string(),
        };
        match self.call(request).await? {
            Response::AccountCreated { username } => Ok(username),
            other => Err(unexpected("create_account", &other)),
        }
    }

    /// Logs in and returns the new session.
    pub async fn login(&self, username: &str, password: &str) -> Result<LoggedIn, ClientError> {
        let request = Request::Login {
            username: username.to_string(),
            password: password.to_string(),
        };
        match self.call(request).await? {
            Response::LoggedIn {
                token,
                username,
                unread,
            } => Ok(LoggedIn {
                token,
                username,
                unread,
            }),
            other => Err(unexpected("login", &other)),
        }
    }

    /// Ends the session of `token`.
    pub async fn logout(&self, token: Token) -> Result<(), ClientError> {
        match self.call(Request::Logout { token }).await? {
            Response::LoggedOut => Ok(()),
            other => Err(unexpected("logout", &other)),
        }
    }

    /// Deletes the account of the session. Without `force`, an account with unread
    /// messages is kept and the error's `detail` is their count.
    pub async fn delete_account(
        &self,
        token: Token,
        password: &str,
        force: bool,
    ) -> Result<(), ClientError> {
        let request = Request::DeleteAccount {
            token,
            password: password.to_string(),
            force,
        };
        match self.call(request).await? {
            Response::AccountDeleted => Ok(()),
            other => Err(unexpected("delete_account", &other)),
        }
    }

    /// One page of the accounts whose names match `pattern`.
    pub async fn list_accounts(
        &self,
        token: Token,
        pattern: &str,
        syntax: PatternSyntax,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<AccountsPage, ClientError> {
        let request = Request::ListAccounts {
            token,
            pattern: pattern.to_string(),
            syntax,
            limit,
            cursor,
        };
        match self.call(request).await? {
            Response::Accounts(page) => Ok(page),
            other => Err(unexpected("list_accounts", &other)),
        }
    }

    /// Sends `text` to `to`. `client_id` names this message for deduplication: use one
    /// fresh random value per message, and the same one to retry it.
    pub async fn send(
        &self,
        token: Token,
        to: &str,
        text: &str,
        client_id: u64,
    ) -> Result<Sent, ClientError> {
        let request = Request::Send {
            token,
            to: to.to_string(),
            text: text.to_string(),
            client_id,
        };
        match self.call(request).await? {
            Response::Sent { message, duplicate } => Ok(Sent { message, duplicate }),
            other => Err(unexpected("send", &other)),
        }
    }

    /// The oldest unread messages, at most `limit` (server default 50). Does not mark them.
    pub async fn fetch_unread(
        &self,
        token: Token,
        limit: Option<u32>,
    ) -> Result<Vec<Message>, ClientError> {
        match self.call(Request::FetchUnread { token, limit }).await? {
            Response::Messages { messages } => Ok(messages),
            other => Err(unexpected("fetch_unread", &other)),
        }
    }

    /// Marks messages read; returns how many were unread.
    pub async fn mark_read(&self, token: Token, ids: Vec<MessageId>) -> Result<u64, ClientError> {
        match self.call(Request::MarkRead { token, ids }).await? {
            Response::MarkedRead { count } => Ok(count),
            other => Err(unexpected("mark_read", &other)),
        }
    }

    /// One page of the conversation with `with`, oldest first, older than `before`.
    pub async fn history(
        &self,
        token: Token,
        with: &str,
        before: Option<MessageId>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ClientError> {
        let request = Request::History {
            token,
            with: with.to_string(),
            before,
            limit,
        };
        match self.call(request).await? {
            Response::History(page) => Ok(page),
            other => Err(unexpected("history", &other)),
        }
    }

    /// Deletes messages from this user's view; returns how many were deleted.
    pub async fn delete_messages(
        &self,
        token: Token,
        ids: Vec<MessageId>,
    ) -> Result<u64, ClientError> {
        match self.call(Request::DeleteMessages { token, ids }).await? {
            Response::MessagesDeleted { count } => Ok(count),
            other => Err(unexpected("delete_messages", &other)),
        }
    }
}
