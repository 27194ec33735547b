//! The bodies of response and error frames (server to client), mapped to
//! [`corvid_core::Response`] and [`corvid_core::ApiError`].

use corvid_core::{
    AccountRow, AccountsPage, ApiError, ErrorCode, HistoryPage, LeaderAddrs, MessageId, Response,
};

use crate::opcode;
use crate::primitive::{FieldError, ReadResult, Reader, WriteResult, Writer, MIN_MESSAGE_SIZE};

/// Smallest encoded account row: two empty `str` and a bool.
const MIN_ACCOUNT_ROW_SIZE: usize = 2 + 2 + 1;

pub(crate) fn opcode(response: &Response) -> u8 {
    match response {
        Response::Pong => opcode::PONG,
        Response::AccountCreated { .. } => opcode::ACCOUNT_CREATED,
        Response::LoggedIn { .. } => opcode::LOGGED_IN,
        Response::LoggedOut => opcode::LOGGED_OUT,
        Response::AccountDeleted => opcode::ACCOUNT_DELETED,
        Response::Accounts(_) => opcode::ACCOUNTS,
        Response::Sent { .. } => opcode::SENT,
        Response::Messages { .. } => opcode::MESSAGES,
        Response::MarkedRead { .. } => opcode::MARKED_READ,
        Response::History(_) => opcode::HISTORY_PAGE,
        Response::MessagesDeleted { .. } => opcode::MESSAGES_DELETED,
        Response::Subscribed { .. } => opcode::SUBSCRIBED,
    }
}

pub(crate) fn write(w: &mut Writer<'_>, response: &Response) -> WriteResult {
    match response {
        Response::Pong | Response::LoggedOut | Response::AccountDeleted => {}
        Response::AccountCreated { username } => w.str("username", username)?,
        Response::LoggedIn {
            token,
            username,
            unread,
        } => {
            w.token(token);
            w.str("username", username)?;
            w.u64(*unread);
        }
        Response::Accounts(page) => {
            w.list("rows", &page.rows, |w, row| {
                w.str("rows.username", &row.username)?;
                w.str("rows.display_name", &row.display_name)?;
                w.bool(row.online);
                Ok(())
            })?;
            w.opt(page.next_cursor.as_ref(), |w, cursor| {
                w.str("next_cursor", cursor)
            })?;
        }
        Response::Sent { message, duplicate } => {
            w.bool(*duplicate);
            w.message(message)?;
        }
        Response::Messages { messages } => {
            w.list("messages", messages, |w, message| w.message(message))?;
        }
        Response::MarkedRead { count } | Response::MessagesDeleted { count } => w.u64(*count),
        Response::History(page) => {
            w.list("messages", &page.messages, |w, message| w.message(message))?;
            w.opt_u64(page.next_before.map(|before| before.0));
        }
        Response::Subscribed { last_id } => w.u64(last_id.0),
    }
    Ok(())
}

pub(crate) fn read(opcode: u8, r: &mut Reader<'_>) -> ReadResult<Response> {
    let response = match opcode {
        opcode::PONG => Response::Pong,
        opcode::ACCOUNT_CREATED => Response::AccountCreated {
            username: r.str("username")?,
        },
        opcode::LOGGED_IN => Response::LoggedIn {
            token: r.token("token")?,
            username: r.str("username")?,
            unread: r.u64("unread")?,
        },
        opcode::LOGGED_OUT => Response::LoggedOut,
        opcode::ACCOUNT_DELETED => Response::AccountDeleted,
        opcode::ACCOUNTS => Response::Accounts(AccountsPage {
            rows: r.list("rows", MIN_ACCOUNT_ROW_SIZE, |r| {
                Ok(AccountRow {
                    username: r.str("rows.username")?,
                    display_name: r.str("rows.display_name")?,
                    online: r.bool("rows.online")?,
                })
            })?,
            next_cursor: r.opt("next_cursor", |r| r.str("next_cursor"))?,
        }),
        opcode::SENT => Response::Sent {
            duplicate: r.bool("duplicate")?,
            message: r.message()?,
        },
        opcode::MESSAGES => Response::Messages {
            messages: r.list("messages", MIN_MESSAGE_SIZE, Reader::message)?,
        },
        opcode::MARKED_READ => Response::MarkedRead {
            count: r.u64("count")?,
        },
        opcode::HISTORY_PAGE => Response::History(HistoryPage {
            messages: r.list("messages", MIN_MESSAGE_SIZE, Reader::message)?,
            next_before: r.opt("next_before", |r| r.message_id("next_before"))?,
        }),
        opcode::MESSAGES_DELETED => Response::MessagesDeleted {
            count: r.u64("count")?,
        },
        opcode::SUBSCRIBED => Response::Subscribed {
            last_id: MessageId(r.u64("last_id")?),
        },
        unknown => return Err(FieldError::UnknownOpcode(unknown)),
    };
    Ok(response)
}

/// The protocol version whose `not_leader` error frame ends with the leader's address.
pub const LEADER_ADDRESS_VERSION: u16 = 3;

/// Writes an error body for a connection of protocol `version`: from version 3, a
/// `not_leader` error ends with `leader: str`, the leader's binary-protocol address, empty
/// when unknown.
pub(crate) fn write_error(w: &mut Writer<'_>, error: &ApiError, version: u16) -> WriteResult {
    w.u16(error.code.as_u16());
    w.u64(error.detail);
    w.str("message", &error.message)?;
    if error.code == ErrorCode::NotLeader && version >= LEADER_ADDRESS_VERSION {
        let leader = error.leader.as_ref().and_then(|l| l.wire.as_deref());
        w.str("leader", leader.unwrap_or(""))?;
    }
    Ok(())
}

/// Reads an error body of protocol `version`. A code number this version does not know
/// becomes [`ErrorCode::Internal`] with its message kept, so that a newer server's codes
/// still reach the user as a sentence instead of breaking the connection.
pub(crate) fn read_error(r: &mut Reader<'_>, version: u16) -> ReadResult<ApiError> {
    let code = r.u16("code")?;
    let mut error = ApiError {
        code: ErrorCode::from_u16(code).unwrap_or(ErrorCode::Internal),
        detail: r.u64("detail")?,
        message: r.str("message")?,
        leader: None,
    };
    if error.code == ErrorCode::NotLeader && version >= LEADER_ADDRESS_VERSION {
        let leader = r.str("leader")?;
        error.leader = Some(leader)
            .filter(|l| !l.is_empty())
            .map(|wire| LeaderAddrs {
                wire: Some(wire),
                grpc: None,
            });
    }
    Ok(error)
}
