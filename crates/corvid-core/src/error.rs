//! The one list of error codes shared by every protocol, and the error values built on it.
//!
//! Codes are stable: they are part of the binary protocol, the gRPC API and the web API.
//! A new code may be added; an existing number never changes meaning.

use serde::{Deserialize, Serialize};

/// Every error a client of Corvid can see, whatever the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u16)]
pub enum ErrorCode {
    /// The request could not be decoded.
    Malformed = 1,
    /// The client speaks a protocol version this server does not.
    UnsupportedVersion = 2,
    /// A frame was larger than the server accepts.
    FrameTooLarge = 3,
    /// The connection sent requests faster than its rate limit.
    RateLimited = 4,
    /// The server has no room for another connection.
    TooManyConnections = 5,
    /// A username is empty, longer than 32 characters or has a character outside `A-Z a-z 0-9 _ . -`.
    InvalidUsername = 10,
    /// A display name is longer than 64 characters.
    InvalidDisplayName = 11,
    /// A password is shorter than 8 or longer than 128 bytes.
    InvalidPassword = 12,
    /// Another account already has this username (compared case-insensitively).
    UsernameTaken = 13,
    /// Wrong username or password. Deliberately does not say which.
    InvalidCredentials = 14,
    /// The session token is unknown, logged out or expired.
    Unauthenticated = 15,
    /// Too many failed logins lately for this username or from this address; `detail` is
    /// the number of seconds to wait before the next attempt.
    TooManyAttempts = 16,
    /// No account has the recipient's username.
    UnknownRecipient = 20,
    /// Message text is empty or longer than the server's limit.
    InvalidText = 21,
    /// No account has the username named in a history request.
    UnknownUser = 22,
    /// The account still has unread messages; `detail` is their count. Repeat with `force`.
    UnreadMessages = 23,
    /// A glob or regular expression could not be compiled.
    InvalidPattern = 24,
    /// A page size is outside 1..=100.
    InvalidLimit = 25,
    /// A paging cursor is malformed.
    InvalidCursor = 26,
    /// A request names more message ids than allowed in one call.
    TooManyIds = 27,
    /// The account (or this connection) already has as many live subscriptions as allowed.
    TooManySubscriptions = 28,
    /// This server is not the leader and cannot serve the request; try another server.
    NotLeader = 40,
    /// The service cannot answer right now (no leader, shutting down); retry later.
    Unavailable = 41,
    /// The server is too busy to take this request now (its queue for the work is full);
    /// retry shortly.
    Busy = 42,
    /// The server's disk is full: writes are refused until space is freed, reads still work.
    StorageFull = 43,
    /// An unexpected server fault. Logged on the server.
    Internal = 50,
}

impl ErrorCode {
    /// All codes, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::FrameTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::TooManyConnections,
        ErrorCode::InvalidUsername,
        ErrorCode::InvalidDisplayName,
        ErrorCode::InvalidPassword,
        ErrorCode::UsernameTaken,
        ErrorCode::InvalidCredentials,
        ErrorCode::Unauthenticated,
        ErrorCode::TooManyAttempts,
        ErrorCode::UnknownRecipient,
        ErrorCode::InvalidText,
        ErrorCode::UnknownUser,
        ErrorCode::UnreadMessages,
        ErrorCode::InvalidPattern,
        ErrorCode::InvalidLimit,
        ErrorCode::InvalidCursor,
        ErrorCode::TooManyIds,
        ErrorCode::TooManySubscriptions,
        ErrorCode::NotLeader,
        ErrorCode::Unavailable,
        ErrorCode::Busy,
        ErrorCode::StorageFull,
        ErrorCode::Internal,
    ];

    /// The stable number of this code on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code with this wire number, if there is one.
    pub fn from_u16(value: u16) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_u16() == value)
    }

    /// A short, stable, machine-friendly name (`unknown_recipient`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::InvalidUsername => "invalid_username",
            ErrorCode::InvalidDisplayName => "invalid_display_name",
            ErrorCode::InvalidPassword => "invalid_password",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::UnknownRecipient => "unknown_recipient",
            ErrorCode::InvalidText => "invalid_text",
            ErrorCode::UnknownUser => "unknown_user",
            ErrorCode::UnreadMessages => "unread_messages",
            ErrorCode::InvalidPattern => "invalid_pattern",
            ErrorCode::InvalidLimit => "invalid_limit",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::TooManyIds => "too_many_ids",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::Internal => "internal",
        }
    }

    /// The default human sentence for this code.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "the request could not be decoded",
            ErrorCode::UnsupportedVersion => "unsupported protocol version",
            ErrorCode::FrameTooLarge => "frame larger than the server accepts",
            ErrorCode::RateLimited => "too many requests; slow down",
            ErrorCode::TooManyConnections => "the server has no room for another connection",
            ErrorCode::InvalidUsername => {
                "a username is 1-32 characters of A-Z a-z 0-9 _ . - (no spaces)"
            }
            ErrorCode::InvalidDisplayName => "a display name is at most 64 characters",
            ErrorCode::InvalidPassword => "a password is 8-128 bytes",
            ErrorCode::UsernameTaken => "that username is taken",
            ErrorCode::InvalidCredentials => "wrong username or password",
            ErrorCode::Unauthenticated => "not logged in, or the session has expired",
            ErrorCode::TooManyAttempts => "too many failed logins; wait before trying again",
            ErrorCode::UnknownRecipient => "no such recipient",
            ErrorCode::InvalidText => "message text must be 1 byte up to the server's limit",
            ErrorCode::UnknownUser => "no such user",
            ErrorCode::UnreadMessages => "the account has unread messages; use force to delete it",
            ErrorCode::InvalidPattern => "invalid pattern",
            ErrorCode::InvalidLimit => "limit must be between 1 and 100",
            ErrorCode::InvalidCursor => "invalid cursor",
            ErrorCode::TooManyIds => "too many message ids in one request",
            ErrorCode::TooManySubscriptions => "too many live subscriptions",
            ErrorCode::NotLeader => "this server is not the leader",
            ErrorCode::Unavailable => "service unavailable; retry",
            ErrorCode::Busy => "the server is busy; retry shortly",
            ErrorCode::StorageFull => {
                "the server's disk is full; writes are refused until space is freed"
            }
            ErrorCode::Internal => "internal server error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A business rejection decided by the state machine: deterministic and replicated.
///
/// `detail` carries one number where the code has one (the unread count of
/// [`ErrorCode::UnreadMessages`]); it is 0 otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: ErrorCode,
    pub detail: u64,
}

impl Rejection {
    pub fn new(code: ErrorCode) -> Rejection {
        Rejection { code, detail: 0 }
    }
}

impl From<ErrorCode> for Rejection {
    fn from(code: ErrorCode) -> Rejection {
        Rejection::new(code)
    }
}

/// An error as a client receives it: a stable code, a number, and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: u64,
    pub message: String,
    /// With [`ErrorCode::NotLeader`]: where clients reach the leader, when this server
    /// knows it. Each protocol carries the address of its own listener.
    pub leader: Option<LeaderAddrs>,
}

/// Where clients reach the leader, per protocol; `None` for a protocol whose address is
/// unknown (or that the error's protocol does not carry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderAddrs {
    /// The leader's binary-protocol listener.
    pub wire: Option<String>,
    /// The leader's gRPC listener.
    pub grpc: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            detail: 0,
            message: message.into(),
            leader: None,
        }
    }

    /// `not_leader`, naming the leader's addresses if known.
    pub fn not_leader(leader: Option<LeaderAddrs>) -> ApiError {
        ApiError {
            leader,
            ..ErrorCode::NotLeader.into()
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> ApiError {
        ApiError::new(code, code.describe())
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        let message = match rejection.code {
            ErrorCode::UnreadMessages => format!(
                "the account has {} unread message(s); use force to delete it anyway",
                rejection.detail
            ),
            code => code.describe().to_string(),
        };
        ApiError {
            code: rejection.code,
            detail: rejection.detail,
            message,
            leader: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_number_and_has_a_unique_name() {
        let mut names = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
            names.insert(code.name());
        }
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(999), None);
    }

    #[test]
    fn unread_rejection_says_the_count() {
        let err = ApiError::from(Rejection {
            code: ErrorCode::UnreadMessages,
            detail: 3,
        });
        assert!(err.message.contains("3 unread"), "{}", err.message);
        assert_eq!(err.detail, 3);
    }
}
