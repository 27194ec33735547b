//! The bodies of request frames (client to server), mapped to [`corvid_core::Request`].
//!
//! Each request's fields are listed once in `write` and once in `read`, in wire order;
//! docs/protocol.md is the byte-level description of the same layouts.

use corvid_core::{PatternSyntax, Request, SubscribeFrom};

use crate::opcode;
use crate::primitive::{FieldError, ReadResult, Reader, WriteResult, Writer};

/// Smallest encoded item of a `list<u64>`.
const MESSAGE_ID_SIZE: usize = 8;

/// The tags of `Subscribe.from`. 0 and 1 are the `opt<u64>` `after` of version 1, byte
/// for byte, so a version-1 Subscribe means the same in version 2.
const FROM_NOW: u8 = 0;
const FROM_AFTER: u8 = 1;
const FROM_OLDEST_UNREAD: u8 = 2;

/// The protocol version that introduced `Subscribe.from` = oldest unread.
pub const OLDEST_UNREAD_VERSION: u16 = 2;

pub(crate) fn opcode(request: &Request) -> u8 {
    match request {
        Request::Ping => opcode::PING,
        Request::CreateAccount { .. } => opcode::CREATE_ACCOUNT,
        Request::Login { .. } => opcode::LOGIN,
        Request::Logout { .. } => opcode::LOGOUT,
        Request::DeleteAccount { .. } => opcode::DELETE_ACCOUNT,
        Request::ListAccounts { .. } => opcode::LIST_ACCOUNTS,
        Request::Send { .. } => opcode::SEND,
        Request::FetchUnread { .. } => opcode::FETCH_UNREAD,
        Request::MarkRead { .. } => opcode::MARK_READ,
        Request::History { .. } => opcode::HISTORY,
        Request::DeleteMessages { .. } => opcode::DELETE_MESSAGES,
        Request::Subscribe { .. } => opcode::SUBSCRIBE,
    }
}

pub(crate) fn write(w: &mut Writer<'_>, request: &Request) -> WriteResult {
    match request {
        Request::Ping => {}
        Request::CreateAccount {
            username,
            display_name,
            password,
        } => {
            w.str("username", username)?;
            w.str("display_name", display_name)?;
            w.str("password", password)?;
        }
        Request::Login { username, password } => {
            w.str("username", username)?;
            w.str("password", password)?;
        }
        Request::Logout { token } => w.token(token),
        Request::DeleteAccount {
            token,
            password,
            force,
        } => {
            w.token(token);
            w.str("password", password)?;
            w.bool(*force);
        }
        Request::ListAccounts {
            token,
            pattern,
            syntax,
            limit,
            cursor,
        } => {
            w.token(token);
            w.str("pattern", pattern)?;
            w.u8(*syntax as u8);
            w.opt_u32(*limit);
            w.opt(cursor.as_ref(), |w, cursor| w.str("cursor", cursor))?;
        }
        Request::Send {
            token,
            to,
            text,
            client_id,
        } => {
            w.token(token);
            w.str("to", to)?;
            w.u64(*client_id);
            w.text("text", text)?;
        }
        Request::FetchUnread { token, limit } => {
            w.token(token);
            w.opt_u32(*limit);
        }
        Request::MarkRead { token, ids } => {
            w.token(token);
            w.message_ids("ids", ids)?;
        }
        Request::History {
            token,
            with,
            before,
            limit,
        } => {
            w.token(token);
            w.str("with", with)?;
            w.opt_u64(before.map(|before| before.0));
            w.opt_u32(*limit);
        }
        Request::DeleteMessages { token, ids } => {
            w.token(token);
            w.message_ids("ids", ids)?;
        }
        Request::Subscribe { token, from } => {
            w.token(token);
            match from {
                SubscribeFrom::Now => w.u8(FROM_NOW),
                SubscribeFrom::After(after) => {
                    w.u8(FROM_AFTER);
                    w.u64(after.0);
                }
                SubscribeFrom::OldestUnread => w.u8(FROM_OLDEST_UNREAD),
            }
        }
    }
    Ok(())
}

pub(crate) fn read(opcode: u8, r: &mut Reader<'_>) -> ReadResult<Request> {
    let request = match opcode {
        opcode::PING => Request::Ping,
        opcode::CREATE_ACCOUNT => Request::CreateAccount {
            username: r.str("username")?,
            display_name: r.str("display_name")?,
            password: r.str("password")?,
        },
        opcode::LOGIN => Request::Login {
            username: r.str("username")?,
            password: r.str("password")?,
        },
        opcode::LOGOUT => Request::Logout {
            token: r.token("token")?,
        },
        opcode::DELETE_ACCOUNT => Request::DeleteAccount {
            token: r.token("token")?,
            password: r.str("password")?,
            force: r.bool("force")?,
        },
        opcode::LIST_ACCOUNTS => Request::ListAccounts {
            token: r.token("token")?,
            pattern: r.str("pattern")?,
            syntax: pattern_syntax(r)?,
            limit: r.opt("limit", |r| r.u32("limit"))?,
            cursor: r.opt("cursor", |r| r.str("cursor"))?,
        },
        opcode::SEND => Request::Send {
            token: r.token("token")?,
            to: r.str("to")?,
            client_id: r.u64("client_id")?,
            text: r.text("text")?,
        },
        opcode::FETCH_UNREAD => Request::FetchUnread {
            token: r.token("token")?,
            limit: r.opt("limit", |r| r.u32("limit"))?,
        },
        opcode::MARK_READ => Request::MarkRead {
            token: r.token("token")?,
            ids: r.list("ids", MESSAGE_ID_SIZE, |r| r.message_id("ids"))?,
        },
        opcode::HISTORY => Request::History {
            token: r.token("token")?,
            with: r.str("with")?,
            before: r.opt("before", |r| r.message_id("before"))?,
            limit: r.opt("limit", |r| r.u32("limit"))?,
        },
        opcode::DELETE_MESSAGES => Request::DeleteMessages {
            token: r.token("token")?,
            ids: r.list("ids", MESSAGE_ID_SIZE, |r| r.message_id("ids"))?,
        },
        opcode::SUBSCRIBE => Request::Subscribe {
            token: r.token("token")?,
            from: subscribe_from(r)?,
        },
        unknown => return Err(FieldError::UnknownOpcode(unknown)),
    };
    Ok(request)
}

fn subscribe_from(r: &mut Reader<'_>) -> ReadResult<SubscribeFrom> {
    match r.u8("from")? {
        FROM_NOW => Ok(SubscribeFrom::Now),
        FROM_AFTER => Ok(SubscribeFrom::After(r.message_id("after")?)),
        FROM_OLDEST_UNREAD => Ok(SubscribeFrom::OldestUnread),
        value => Err(FieldError::BadEnum {
            field: "from",
            value: value.into(),
        }),
    }
}

/// Refuses what `version` does not have: a Subscribe from the oldest unread message
/// before version 2.
pub(crate) fn check_version(request: &Request, version: u16) -> ReadResult<()> {
    match request {
        Request::Subscribe {
            from: SubscribeFrom::OldestUnread,
            ..
        } if version < OLDEST_UNREAD_VERSION => Err(FieldError::NeedsVersion {
            field: "from",
            value: FROM_OLDEST_UNREAD.into(),
            needed: OLDEST_UNREAD_VERSION,
            version,
        }),
        _ => Ok(()),
    }
}

fn pattern_syntax(r: &mut Reader<'_>) -> ReadResult<PatternSyntax> {
    let value = r.u8("syntax")?;
    PatternSyntax::from_u8(value).ok_or(FieldError::BadEnum {
        field: "syntax",
        value: value.into(),
    })
}
