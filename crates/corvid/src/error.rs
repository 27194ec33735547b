//! Every way a command can fail, as the one line it prints and the exit status it returns.

use corvid_client::ClientError;
use corvid_core::{ApiError, ErrorCode};

/// Exit status for a request the server refused, or a local problem.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status for bad arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when no server could be reached or the connection failed.
pub const EXIT_CONNECTION: u8 = 3;

#[derive(Debug)]
pub enum CliError {
    /// The server refused the request.
    Api(ApiError),
    /// A client command that needs a session found none.
    NotLoggedIn,
    /// The session file holds a session the server no longer knows.
    SessionEnded,
    /// No server could be reached, or the connection failed.
    Connection(ClientError),
    /// Bad arguments or input.
    Usage(String),
    /// A local problem, named by a stable code.
    Local { code: &'static str, message: String },
    /// `corvid serve` failed.
    Server(anyhow::Error),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage(message.into())
    }

    pub fn session_file(message: impl Into<String>) -> CliError {
        CliError::Local {
            code: "session_file",
            message: message.into(),
        }
    }

    pub fn local(code: &'static str, message: impl Into<String>) -> CliError {
        CliError::Local {
            code,
            message: message.into(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Api(_)
            | CliError::NotLoggedIn
            | CliError::SessionEnded
            | CliError::Local { .. }
            | CliError::Server(_) => EXIT_REFUSED,
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Connection(_) => EXIT_CONNECTION,
        }
    }

    /// The stable name in parentheses at the end of the line: the server's error code, or
    /// a name for a local failure.
    pub fn code_name(&self) -> &'static str {
        match self {
            CliError::Api(error) => error.code.name(),
            CliError::NotLoggedIn => "not_logged_in",
            CliError::SessionEnded => ErrorCode::Unauthenticated.name(),
            CliError::Connection(error) => match error {
                ClientError::Closed => "connection_closed",
                ClientError::Timeout => "timeout",
                ClientError::Protocol(_) => "protocol_error",
                ClientError::Api(_) | ClientError::Io(_) | ClientError::NoServers => {
                    "connection_failed"
                }
                ClientError::Tls(_) => "tls",
            },
            CliError::Usage(_) => "usage",
            CliError::Local { code, .. } => code,
            CliError::Server(_) => "server",
        }
    }

    pub fn message(&self) -> String {
        match self {
            CliError::Api(error) if error.code == ErrorCode::UnreadMessages => format!(
                "the account has {} unread message(s); repeat with --force to delete it anyway",
                error.detail
            ),
            CliError::Api(error) => error.message.clone(),
            CliError::NotLoggedIn => "not logged in; run corvid login NAME".to_string(),
            CliError::SessionEnded => {
                "the session has ended or expired; run corvid login NAME".to_string()
            }
            CliError::Connection(error) => match error {
                ClientError::Io(err) => format!("cannot reach the server: {err}"),
                ClientError::Closed => {
                    "the connection closed before the server answered".to_string()
                }
                ClientError::Timeout => "the server did not answer in time".to_string(),
                other => other.to_string(),
            },
            CliError::Usage(message) | CliError::Local { message, .. } => message.clone(),
            CliError::Server(error) => format!("{error:#}"),
        }
    }

    /// The one line printed to stderr.
    pub fn line(&self) -> String {
        // A message is one line even if a server sent a line break in it.
        let message = self.message().replace(['\n', '\r'], " ");
        format!("error: {message} ({})", self.code_name())
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        match error {
            ClientError::Api(error) => CliError::Api(error),
            ClientError::NoServers => CliError::usage("no server address given"),
            ClientError::Tls(message) => CliError::local("tls", message),
            other => CliError::Connection(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_prints_one_line_with_its_code_and_exit_status() {
        let cases = [
            (
                CliError::Api(ApiError::from(ErrorCode::UnknownRecipient)),
                "error: no such recipient (unknown_recipient)",
                1,
            ),
            (
                CliError::NotLoggedIn,
                "error: not logged in; run corvid login NAME (not_logged_in)",
                1,
            ),
            (
                CliError::from(ClientError::Timeout),
                "error: the server did not answer in time (timeout)",
                3,
            ),
            (CliError::usage("bad\nthing"), "error: bad thing (usage)", 2),
        ];
        for (error, line, status) in cases {
            assert_eq!(error.line(), line);
            assert_eq!(error.exit_code(), status);
        }
    }

    #[test]
    fn unread_messages_says_how_many_and_which_flag() {
        let error = CliError::Api(ApiError::from(corvid_core::Rejection {
            code: ErrorCode::UnreadMessages,
            detail: 3,
        }));
        assert_eq!(
            error.line(),
            "error: the account has 3 unread message(s); repeat with --force to delete it anyway (unread_messages)"
        );
    }
}
