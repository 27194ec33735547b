//! Reads of the state: everything a client can ask that changes nothing.
//!
//! Each function reads through a [`Tables`] view and touches only the rows it returns (plus,
//! for listings with a pattern that has no literal prefix, a bounded number of index rows).

use std::ops::Bound;

use crate::api::{AccountsPage, HistoryPage};
use crate::error::{ErrorCode, Rejection};
use crate::pattern::Pattern;
use crate::records::{decode, AccountRecord, MessageRecord, SessionRecord};
use crate::tables::{inbox, key, StorageFault, Table, Tables};
use crate::types::{AccountId, Message, MessageId, SessionKey, Timestamp};
use crate::validate;

/// A read failed: either the request is refused, or the storage failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("rejected: {}", .0.code)]
    Rejected(Rejection),
    #[error(transparent)]
    Fault(#[from] StorageFault),
}

impl From<ErrorCode> for QueryError {
    fn from(code: ErrorCode) -> QueryError {
        QueryError::Rejected(Rejection::new(code))
    }
}

/// How many read inbox rows one command walks over to move `unread_from` forward.
pub const UNREAD_SCAN_BUDGET: usize = 10_000;

/// How many conversation rows one history page may examine before it returns what it has
/// found.
pub const HISTORY_SCAN_BUDGET: usize = 10_000;

/// How many index rows one listing page may examine before it returns what it has found,
/// with a cursor to go on. Keeps a page cheap even for a pattern that matches almost nothing.
pub const LIST_SCAN_BUDGET: usize = 10_000;

pub(crate) fn meta<T: Tables + ?Sized>(t: &T, name: &[u8]) -> Result<u64, StorageFault> {
    Ok(match t.get(Table::Meta, name)? {
        Some(bytes) if bytes.len() == 8 => key::part(&bytes, 0),
        Some(_) => return Err(StorageFault("corrupt meta row".into())),
        None => 0,
    })
}

pub(crate) fn account<T: Tables + ?Sized>(
    t: &T,
    id: AccountId,
) -> Result<Option<AccountRecord>, StorageFault> {
    let key = key::id(id.0);
    t.get(Table::Account, &key)?
        .map(|v| decode(&key, &v))
        .transpose()
}

pub(crate) fn account_id_by_name<T: Tables + ?Sized>(
    t: &T,
    username: &str,
) -> Result<Option<AccountId>, StorageFault> {
    if validate::username(username).is_err() {
        return Ok(None);
    }
    match t.get(Table::UsernameAccount, validate::fold(username).as_bytes())? {
        Some(bytes) if bytes.len() == 8 => Ok(Some(AccountId(key::part(&bytes, 0)))),
        Some(_) => Err(StorageFault("corrupt username index row".into())),
        None => Ok(None),
    }
}

pub(crate) fn session<T: Tables + ?Sized>(
    t: &T,
    session: &SessionKey,
) -> Result<Option<SessionRecord>, StorageFault> {
    t.get(Table::Session, &session.0)?
        .map(|v| decode(&session.0, &v))
        .transpose()
}

pub(crate) fn message<T: Tables + ?Sized>(
    t: &T,
    id: MessageId,
) -> Result<Option<MessageRecord>, StorageFault> {
    let key = key::id(id.0);
    t.get(Table::Message, &key)?
        .map(|v| decode(&key, &v))
        .transpose()
}

pub(crate) fn to_message(id: MessageId, record: MessageRecord) -> Message {
    Message {
        id,
        from: record.from_name,
        to: record.to_name,
        text: record.text,
        sent_at: record.sent_at,
        status: record.status,
    }
}

/// Loads the messages whose ids are the last key part of rows visited in `table`.
fn load_messages<T: Tables + ?Sized>(t: &T, ids: Vec<u64>) -> Result<Vec<Message>, StorageFault> {
    let mut messages = Vec::with_capacity(ids.len());
    for id in ids {
        let record = message(t, MessageId(id))?
            .ok_or_else(|| StorageFault(format!("index names missing message {id}")))?;
        messages.push(to_message(MessageId(id), record));
    }
    Ok(messages)
}

/// The account behind a live session, without extending it.
pub fn authenticate<T: Tables + ?Sized>(
    t: &T,
    key: &SessionKey,
    now: Timestamp,
) -> Result<(AccountId, String), QueryError> {
    let record = session(t, key)?
        .filter(|s| s.is_live(now))
        .ok_or(ErrorCode::Unauthenticated)?;
    let account = account(t, record.account)?.ok_or(ErrorCode::Unauthenticated)?;
    Ok((record.account, account.username))
}

/// What login needs to check a password: the account id and its password hash.
pub fn credentials<T: Tables + ?Sized>(
    t: &T,
    username: &str,
) -> Result<Option<(AccountId, String)>, StorageFault> {
    let Some(id) = account_id_by_name(t, username)? else {
        return Ok(None);
    };
    Ok(account(t, id)?.map(|a| (id, a.password_hash)))
}

/// The password hash of an account, for checks such as delete-account.
pub fn password_hash<T: Tables + ?Sized>(
    t: &T,
    id: AccountId,
) -> Result<Option<String>, StorageFault> {
    Ok(account(t, id)?.map(|a| a.password_hash))
}

pub fn unread_count<T: Tables + ?Sized>(t: &T, id: AccountId) -> Result<u64, StorageFault> {
    Ok(account(t, id)?.map(|a| a.unread).unwrap_or(0))
}

/// The oldest `limit` unread messages of `account`, oldest first. The walk starts at the
/// account's `unread_from`, below which nothing is unread.
pub fn fetch_unread<T: Tables + ?Sized>(
    t: &T,
    account_id: AccountId,
    limit: u32,
) -> Result<Vec<Message>, StorageFault> {
    let Some(record) = account(t, account_id)? else {
        return Ok(Vec::new());
    };
    let mut ids = Vec::new();
    if limit > 0 && record.unread > 0 {
        t.scan(
            Table::Inbox,
            Bound::Included(&key::pair(account_id.0, record.unread_from)),
            Bound::Included(&key::pair(account_id.0, u64::MAX)),
            false,
            &mut |k, v| {
                if v == inbox::UNREAD {
                    ids.push(key::part(k, 1));
                }
                ids.len() < limit as usize
            },
        )?;
    }
    load_messages(t, ids)
}

/// Messages received by `account` with ids greater than `after`, oldest first: what a
/// reconnecting subscriber missed.
pub fn inbox_after<T: Tables + ?Sized>(
    t: &T,
    account: AccountId,
    after: MessageId,
    limit: usize,
) -> Result<Vec<Message>, StorageFault> {
    let start = key::pair(account.0, after.0.saturating_add(1));
    let end = key::pair(account.0, u64::MAX);
    let ids = scan_ids(t, Table::Inbox, &start, &end, 1, false, limit)?;
    load_messages(t, ids)
}

/// Unread messages received by `account` with ids greater than `after` and at most
/// `through`, oldest first: the replay of a subscription that starts from the oldest
/// unread message. Examines at most [`UNREAD_SCAN_BUDGET`] inbox rows; the second value is
/// where to go on (the last id examined), `None` once `through` is reached.
pub fn unread_between<T: Tables + ?Sized>(
    t: &T,
    account_id: AccountId,
    after: MessageId,
    through: MessageId,
    limit: usize,
) -> Result<(Vec<Message>, Option<MessageId>), StorageFault> {
    let Some(record) = account(t, account_id)? else {
        return Ok((Vec::new(), None));
    };
    let first = after.0.saturating_add(1).max(record.unread_from);
    if limit == 0 || record.unread == 0 || first > through.0 {
        return Ok((Vec::new(), None));
    }
    let mut ids = Vec::new();
    let mut examined = 0usize;
    let mut last_examined = None;
    let mut more = false;
    t.scan(
        Table::Inbox,
        Bound::Included(&key::pair(account_id.0, first)),
        Bound::Included(&key::pair(account_id.0, through.0)),
        false,
        &mut |k, v| {
            if ids.len() == limit || examined == UNREAD_SCAN_BUDGET {
                more = true;
                return false;
            }
            examined += 1;
            let id = key::part(k, 1);
            last_examined = Some(MessageId(id));
            if v == inbox::UNREAD {
                ids.push(id);
            }
            true
        },
    )?;
    let next = last_examined.filter(|id| more && *id < through);
    Ok((load_messages(t, ids)?, next))
}

/// The id of the newest message in `account`'s inbox, or 0.
pub fn last_inbox_id<T: Tables + ?Sized>(
    t: &T,
    account: AccountId,
) -> Result<MessageId, StorageFault> {
    let ids = scan_ids(
        t,
        Table::Inbox,
        &key::pair(account.0, 0),
        &key::pair(account.0, u64::MAX),
        1,
        true,
        1,
    )?;
    Ok(MessageId(ids.first().copied().unwrap_or(0)))
}

/// The accounts whose conversation with the caller `history(with)` shows, newest first.
///
/// The account that holds the name now, if any: a later account with a reused name
/// inherits nothing, and its conversation is not mixed with its predecessors'. Otherwise
/// every deleted account that had the name, so that the messages they exchanged stay
/// readable, attributed to that name. Their lifetimes did not overlap, so the newest
/// account's messages all have larger ids than an older one's.
fn history_peers<T: Tables + ?Sized>(t: &T, with: &str) -> Result<Vec<AccountId>, QueryError> {
    if let Some(current) = account_id_by_name(t, with)? {
        return Ok(vec![current]);
    }
    if validate::username(with).is_err() {
        return Err(ErrorCode::UnknownUser.into());
    }
    let folded = validate::fold(with);
    let mut former = Vec::new();
    t.scan(
        Table::FormerUsername,
        Bound::Included(&key::former_username(&folded, 0)),
        Bound::Included(&key::former_username(&folded, u64::MAX)),
        true,
        &mut |k, _| {
            if let Some(id) = k.len().checked_sub(8).map(|at| key::part(&k[at..], 0)) {
                former.push(AccountId(id));
            }
            true
        },
    )?;
    if former.is_empty() {
        return Err(ErrorCode::UnknownUser.into());
    }
    Ok(former)
}

/// One page of the conversation between `account` and the user `with`, paged backwards.
///
/// `with` names the account that holds the name now or, if none does, the deleted
/// accounts that had it (see [`history_peers`]). The conversation's rows are shared by both
/// users; rows of messages `account` deleted are skipped. A page examines at most
/// [`HISTORY_SCAN_BUDGET`] rows: if they run out first (only when `account` deleted that
/// many messages its peer kept), the page is short and `next_before` says where to go on.
pub fn history<T: Tables + ?Sized>(
    t: &T,
    account: AccountId,
    with: &str,
    before: Option<MessageId>,
    limit: u32,
) -> Result<HistoryPage, QueryError> {
    let peers = history_peers(t, with)?;
    let newest = before.map_or(u64::MAX, |b| b.0.saturating_sub(1));
    let limit = limit as usize;
    // Newest first; one more than asked tells whether an older page exists.
    let mut page: Vec<(MessageId, MessageRecord)> = Vec::new();
    let mut examined = 0usize;
    let mut oldest_examined = None;
    let mut fault = None;
    for peer in peers {
        if limit == 0 || page.len() > limit || examined == HISTORY_SCAN_BUDGET {
            break;
        }
        let start = key::conversation(account.0, peer.0, 0);
        let end = key::conversation(account.0, peer.0, newest);
        t.scan(
            Table::Conversation,
            Bound::Included(&start),
            Bound::Included(&end),
            true,
            &mut |k, _| {
                if examined == HISTORY_SCAN_BUDGET {
                    return false;
                }
                examined += 1;
                let id = MessageId(key::part(k, 2));
                oldest_examined = Some(id);
                match message(t, id) {
                    Ok(Some(record)) => {
                        if visible_to(&record, account) {
                            page.push((id, record));
                        }
                    }
                    Ok(None) => {
                        fault = Some(StorageFault(format!(
                            "index names missing message {}",
                            id.0
                        )));
                        return false;
                    }
                    Err(e) => {
                        fault = Some(e);
                        return false;
                    }
                }
                page.len() <= limit
            },
        )?;
        if let Some(fault) = fault {
            return Err(fault.into());
        }
    }
    let next_before = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|(id, _)| *id)
    } else if examined == HISTORY_SCAN_BUDGET {
        oldest_examined
    } else {
        None
    };
    page.reverse();
    Ok(HistoryPage {
        messages: page
            .into_iter()
            .map(|(id, record)| to_message(id, record))
            .collect(),
        next_before,
    })
}

/// Whether `account` still sees the message `record`.
fn visible_to(record: &MessageRecord, account: AccountId) -> bool {
    (record.from == account && record.sender_sees)
        || (record.to == account && record.recipient_sees)
}

/// One page of accounts whose username matches `pattern`, in folded-username order.
/// The `online` flag is left false: presence is not replicated state, the server fills it.
pub fn list_accounts<T: Tables + ?Sized>(
    t: &T,
    pattern: &Pattern,
    cursor: Option<&str>,
    limit: u32,
) -> Result<AccountsPage, QueryError> {
    if let Some(cursor) = cursor {
        if validate::username(cursor).is_err() || cursor != validate::fold(cursor) {
            return Err(ErrorCode::InvalidCursor.into());
        }
    }
    let prefix = pattern.prefix().as_bytes();
    let start = match cursor {
        Some(c) if c.as_bytes() >= prefix => Bound::Excluded(c.as_bytes()),
        _ => Bound::Included(prefix),
    };
    let mut found: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut examined = 0usize;
    let mut last_key: Option<Vec<u8>> = None;
    let mut exhausted = true;
    t.scan(
        Table::UsernameAccount,
        start,
        Bound::Unbounded,
        false,
        &mut |k, v| {
            if !k.starts_with(prefix) {
                return false;
            }
            if found.len() == limit as usize || examined == LIST_SCAN_BUDGET {
                exhausted = false;
                return false;
            }
            examined += 1;
            last_key = Some(k.to_vec());
            // The folded key matches exactly when the typed name does (matching is
            // case-insensitive), so the account row is read only for listed names.
            if std::str::from_utf8(k).is_ok_and(|name| pattern.matches(name)) && v.len() == 8 {
                found.push((k.to_vec(), key::part(v, 0)));
            }
            true
        },
    )?;
    let mut rows = Vec::with_capacity(found.len());
    for (_, id) in &found {
        let account = account(t, AccountId(*id))?
            .ok_or_else(|| StorageFault(format!("index names missing account {id}")))?;
        rows.push(crate::api::AccountRow {
            username: account.username,
            display_name: account.display_name,
            online: false,
        });
    }
    let next_cursor = if exhausted {
        None
    } else {
        last_key.map(|k| String::from_utf8_lossy(&k).into_owned())
    };
    Ok(AccountsPage { rows, next_cursor })
}

/// Collects up to `limit` values of key part `part` from the rows of `table` in `[start, end]`.
pub(crate) fn scan_ids<T: Tables + ?Sized>(
    t: &T,
    table: Table,
    start: &[u8],
    end: &[u8],
    part: usize,
    reverse: bool,
    limit: usize,
) -> Result<Vec<u64>, StorageFault> {
    let mut ids = Vec::new();
    if limit == 0 {
        return Ok(ids);
    }
    t.scan(
        table,
        Bound::Included(start),
        Bound::Included(end),
        reverse,
        &mut |k, _| {
            ids.push(key::part(k, part));
            ids.len() < limit
        },
    )?;
    Ok(ids)
}
