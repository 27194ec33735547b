//! Verification of a whole stored state, for `corvid check`: every checked record's
//! checksum, every row's shape, and the agreements between tables that are cheap to check.
//!
//! Pure like the rest of the core: it reads through [`Tables`] and reports each problem as
//! one line naming the row. It never stops at the first problem, and reads a table a page
//! at a time, so it runs in memory proportional to the number of accounts.

use std::collections::HashMap;
use std::ops::Bound;

use crate::apply::{CLOCK, NEXT_ACCOUNT, NEXT_MESSAGE};
use crate::records::{
    decode, describe_row, is_checked, AccountRecord, MessageRecord, Record, SessionRecord,
};
use crate::tables::{inbox, key, StorageFault, Table, Tables};
use crate::validate;

/// Rows read from a table in one scan, between the checks that need other tables.
const PAGE: usize = 1024;

/// What a check of the state found besides problems.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateSummary {
    pub accounts: u64,
    pub sessions: u64,
    pub messages: u64,
    /// Records still in the format older than checksums (see `records`): read, but not
    /// protected against a changed byte until they are next rewritten.
    pub unchecked_records: u64,
    pub problems: u64,
}

/// What the check remembers of each account while it reads the other tables.
struct AccountFacts {
    folded: String,
    unread: u64,
    unread_from: u64,
    /// Counted from the `inbox` rows.
    unread_rows: u64,
    oldest_unread: Option<u64>,
}

struct Checker<'a, T: Tables + ?Sized> {
    t: &'a T,
    report: &'a mut dyn FnMut(String),
    summary: StateSummary,
    accounts: HashMap<u64, AccountFacts>,
}

/// Checks the whole state in `t`, handing each problem found to `report` as one line.
/// `Err` means the storage could not be read at all (not a problem in the data).
pub fn check_state<T: Tables + ?Sized>(
    t: &T,
    report: &mut dyn FnMut(String),
) -> Result<StateSummary, StorageFault> {
    let mut checker = Checker {
        t,
        report,
        summary: StateSummary::default(),
        accounts: HashMap::new(),
    };
    checker.run()?;
    Ok(checker.summary)
}

/// Visits every row of `table` a page at a time, so that `visit` may read other tables.
fn for_each_row<T: Tables + ?Sized>(
    t: &T,
    table: Table,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StorageFault>,
) -> Result<(), StorageFault> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut page: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(PAGE);
        let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        t.scan(table, start, Bound::Unbounded, false, &mut |k, v| {
            page.push((k.to_vec(), v.to_vec()));
            page.len() < PAGE
        })?;
        for (k, v) in &page {
            visit(k, v)?;
        }
        if page.len() < PAGE {
            return Ok(());
        }
        after = page.pop().map(|(k, _)| k);
    }
}

fn id_of(k: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(k).ok().map(u64::from_be_bytes)
}

impl<T: Tables + ?Sized> Checker<'_, T> {
    fn problem(&mut self, table: Table, k: &[u8], what: impl std::fmt::Display) {
        self.summary.problems += 1;
        (self.report)(format!("state: {}: {what}", describe_row(table, k)));
    }

    /// Decodes a checked record, reporting it if it is damaged.
    fn record<R: Record>(&mut self, k: &[u8], v: &[u8]) -> Option<R> {
        if !is_checked(v) {
            self.summary.unchecked_records += 1;
        }
        match decode::<R>(k, v) {
            Ok(record) => Some(record),
            Err(fault) => {
                self.summary.problems += 1;
                (self.report)(format!("state: {}", fault.0));
                None
            }
        }
    }

    fn run(&mut self) -> Result<(), StorageFault> {
        let next_account = self.meta(NEXT_ACCOUNT)?;
        let next_message = self.meta(NEXT_MESSAGE)?;
        // The clock is a u64 like the counters; nothing else bounds it.
        self.meta(CLOCK)?;
        self.accounts(next_account)?;
        self.username_index()?;
        self.sessions()?;
        self.messages(next_message)?;
        self.inbox()?;
        self.conversations()?;
        self.dedup()?;
        self.peers()?;
        let mut unread_problems = Vec::new();
        for (id, facts) in &self.accounts {
            if facts.unread != facts.unread_rows {
                unread_problems.push((
                    *id,
                    format!(
                        "unread count {} but {} unread inbox rows",
                        facts.unread, facts.unread_rows
                    ),
                ));
            }
            if let Some(oldest) = facts.oldest_unread.filter(|o| *o < facts.unread_from) {
                unread_problems.push((
                    *id,
                    format!(
                        "unread message {oldest} lies below unread_from {}",
                        facts.unread_from
                    ),
                ));
            }
        }
        unread_problems.sort();
        for (id, what) in unread_problems {
            self.problem(Table::Account, &key::id(id), what);
        }
        Ok(())
    }

    fn meta(&mut self, name: &[u8]) -> Result<u64, StorageFault> {
        Ok(match self.t.get(Table::Meta, name)? {
            Some(v) if v.len() == 8 => key::part(&v, 0),
            Some(v) => {
                self.problem(Table::Meta, name, format!("a {} byte counter", v.len()));
                u64::MAX
            }
            None => 0,
        })
    }

    fn accounts(&mut self, next_account: u64) -> Result<(), StorageFault> {
        let t = self.t;
        for_each_row(t, Table::Account, |k, v| {
            self.summary.accounts += 1;
            let Some(id) = id_of(k) else {
                self.problem(Table::Account, k, "key is not an account id");
                return Ok(());
            };
            if id == 0 || id > next_account {
                self.problem(Table::Account, k, "id beyond the account counter");
            }
            let Some(record) = self.record::<AccountRecord>(k, v) else {
                return Ok(());
            };
            self.accounts.insert(
                id,
                AccountFacts {
                    folded: validate::fold(&record.username),
                    unread: record.unread,
                    unread_from: record.unread_from,
                    unread_rows: 0,
                    oldest_unread: None,
                },
            );
            match t.get(
                Table::UsernameAccount,
                validate::fold(&record.username).as_bytes(),
            )? {
                Some(index) if id_of(&index) == Some(id) => {}
                _ => self.problem(
                    Table::Account,
                    k,
                    format!("username {:?} is not indexed to it", record.username),
                ),
            }
            Ok(())
        })
    }

    fn username_index(&mut self) -> Result<(), StorageFault> {
        for_each_row(self.t, Table::UsernameAccount, |k, v| {
            let name = std::str::from_utf8(k).unwrap_or("");
            if validate::username(name).is_err() || validate::fold(name) != name {
                self.problem(Table::UsernameAccount, k, "key is not a folded username");
            }
            let Some(id) = id_of(v) else {
                self.problem(Table::UsernameAccount, k, "value is not an account id");
                return Ok(());
            };
            match self.accounts.get(&id) {
                Some(facts) if facts.folded.as_bytes() == k => {}
                Some(_) => self.problem(
                    Table::UsernameAccount,
                    k,
                    format!("names account {id}, whose username differs"),
                ),
                None => self.problem(
                    Table::UsernameAccount,
                    k,
                    format!("names account {id}, which does not exist"),
                ),
            }
            Ok(())
        })
    }

    fn sessions(&mut self) -> Result<(), StorageFault> {
        let t = self.t;
        for_each_row(t, Table::Session, |k, v| {
            self.summary.sessions += 1;
            if k.len() != 32 {
                self.problem(Table::Session, k, "key is not a session key");
            }
            let Some(record) = self.record::<SessionRecord>(k, v) else {
                return Ok(());
            };
            let account = record.account.0;
            if !self.accounts.contains_key(&account) {
                self.problem(
                    Table::Session,
                    k,
                    format!("belongs to account {account}, which does not exist"),
                );
            }
            let mut index = key::id(account).to_vec();
            index.extend_from_slice(k);
            if t.get(Table::AccountSession, &index)?.is_none() {
                self.problem(Table::Session, k, "missing from account_session");
            }
            Ok(())
        })?;
        for_each_row(t, Table::AccountSession, |k, v| {
            if k.len() != 40 || !v.is_empty() {
                self.problem(Table::AccountSession, k, "malformed row");
                return Ok(());
            }
            let account = key::part(k, 0);
            match t.get(Table::Session, &k[8..])? {
                None => self.problem(Table::AccountSession, k, "names a missing session"),
                Some(v) => {
                    // A damaged session record was reported above.
                    if let Ok(record) = decode::<SessionRecord>(&k[8..], &v) {
                        if record.account.0 != account {
                            self.problem(
                                Table::AccountSession,
                                k,
                                "names a session of another account",
                            );
                        }
                    }
                }
            }
            Ok(())
        })
    }

    fn messages(&mut self, next_message: u64) -> Result<(), StorageFault> {
        let t = self.t;
        for_each_row(t, Table::Message, |k, v| {
            self.summary.messages += 1;
            let Some(id) = id_of(k) else {
                self.problem(Table::Message, k, "key is not a message id");
                return Ok(());
            };
            if id == 0 || id > next_message {
                self.problem(Table::Message, k, "id beyond the message counter");
            }
            let Some(record) = self.record::<MessageRecord>(k, v) else {
                return Ok(());
            };
            if !record.sender_sees && !record.recipient_sees {
                self.problem(Table::Message, k, "seen by no one but not erased");
            }
            let conversation = key::conversation(record.from.0, record.to.0, id);
            if t.get(Table::Conversation, &conversation)?.is_none() {
                self.problem(Table::Message, k, "missing from its conversation");
            }
            if record.recipient_sees && t.get(Table::Inbox, &key::pair(record.to.0, id))?.is_none()
            {
                self.problem(Table::Message, k, "missing from its recipient's inbox");
            }
            Ok(())
        })
    }

    fn inbox(&mut self) -> Result<(), StorageFault> {
        let t = self.t;
        for_each_row(t, Table::Inbox, |k, v| {
            if k.len() != 16 || (v != inbox::UNREAD && v != inbox::READ) {
                self.problem(Table::Inbox, k, "malformed row");
                return Ok(());
            }
            let (account, id) = (key::part(k, 0), key::part(k, 1));
            match self.accounts.get_mut(&account) {
                Some(facts) => {
                    if v == inbox::UNREAD {
                        facts.unread_rows += 1;
                        facts.oldest_unread.get_or_insert(id);
                    }
                }
                None => self.problem(
                    Table::Inbox,
                    k,
                    format!("inbox of account {account}, which does not exist"),
                ),
            }
            match message_row(t, id)? {
                Some(Ok(record)) if record.to.0 == account && record.recipient_sees => {}
                Some(Ok(_)) => self.problem(
                    Table::Inbox,
                    k,
                    format!("message {id} is not in this account's view"),
                ),
                Some(Err(())) => {}
                None => self.problem(Table::Inbox, k, format!("message {id} does not exist")),
            }
            Ok(())
        })
    }

    fn conversations(&mut self) -> Result<(), StorageFault> {
        let t = self.t;
        for_each_row(t, Table::Conversation, |k, v| {
            if k.len() != 24 || !v.is_empty() {
                self.problem(Table::Conversation, k, "malformed row");
                return Ok(());
            }
            let (low, high, id) = (key::part(k, 0), key::part(k, 1), key::part(k, 2));
            match message_row(t, id)? {
                Some(Ok(record))
                    if key::conversation(record.from.0, record.to.0, id)
                        == key::triple(low, high, id) => {}
                Some(Ok(_)) => self.problem(
                    Table::Conversation,
                    k,
                    format!("message {id} is not between accounts {low} and {high}"),
                ),
                Some(Err(())) => {}
                None => self.problem(
                    Table::Conversation,
                    k,
                    format!("message {id} does not exist"),
                ),
            }
            Ok(())
        })
    }

    fn dedup(&mut self) -> Result<(), StorageFault> {
        let t = self.t;
        for_each_row(t, Table::Dedup, |k, v| {
            let (Some(id), 16) = (id_of(v), k.len()) else {
                self.problem(Table::Dedup, k, "malformed row");
                return Ok(());
            };
            let (sender, client_id) = (key::part(k, 0), key::part(k, 1));
            match message_row(t, id)? {
                Some(Ok(record)) if record.from.0 == sender && record.client_id == client_id => {}
                Some(Ok(_)) => self.problem(
                    Table::Dedup,
                    k,
                    format!("message {id} has another sender or client id"),
                ),
                Some(Err(())) => {}
                None => self.problem(Table::Dedup, k, format!("message {id} does not exist")),
            }
            Ok(())
        })
    }

    fn peers(&mut self) -> Result<(), StorageFault> {
        for_each_row(self.t, Table::Peer, |k, v| {
            if k.len() != 16 || !v.is_empty() || key::part(k, 0) < key::part(k, 1) {
                self.problem(Table::Peer, k, "malformed row");
                return Ok(());
            }
            let higher = key::part(k, 0);
            if !self.accounts.contains_key(&higher) {
                self.problem(
                    Table::Peer,
                    k,
                    format!("under account {higher}, which does not exist"),
                );
            }
            Ok(())
        })
    }
}

/// Message `id` for a cross-check: `Some(Err(()))` when its record is damaged (reported
/// once, where the `message` table is checked).
fn message_row<T: Tables + ?Sized>(
    t: &T,
    id: u64,
) -> Result<Option<Result<MessageRecord, ()>>, StorageFault> {
    let k = key::id(id);
    Ok(t.get(Table::Message, &k)?
        .map(|v| decode::<MessageRecord>(&k, &v).map_err(drop)))
}

/// Whether `value` is a valid stored row of `table` under `key`: for the checked records,
/// that its checksum holds. Used to check snapshot files row by row.
pub fn check_row(table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageFault> {
    match table {
        Table::Account => decode::<AccountRecord>(key, value).map(drop),
        Table::Session => decode::<SessionRecord>(key, value).map(drop),
        Table::Message => decode::<MessageRecord>(key, value).map(drop),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{MemTables, TablesMut};
    use crate::{apply, AccountId, Command, MessageId, SessionPolicy, Token};

    /// Two accounts, a session each, and two messages from ann to bob (the first read).
    fn chat() -> MemTables {
        let mut t = MemTables::new();
        let run = |t: &mut MemTables, command: Command| {
            apply(&command, t).unwrap();
        };
        for name in ["ann", "Bob"] {
            run(
                &mut t,
                Command::CreateAccount {
                    username: name.into(),
                    display_name: String::new(),
                    password_hash: "$argon2id$fake".into(),
                    now: 1,
                },
            );
        }
        let ann = Token([1; 16]).session_key();
        let bob = Token([2; 16]).session_key();
        for (account, session) in [(1, ann), (2, bob)] {
            run(
                &mut t,
                Command::Login {
                    account: AccountId(account),
                    session,
                    policy: SessionPolicy::default(),
                    now: 2,
                },
            );
        }
        for (text, client_id) in [("hello", 7), ("meet at noon", 8)] {
            run(
                &mut t,
                Command::Send {
                    session: ann,
                    to: "bob".into(),
                    text: text.into(),
                    client_id,
                    now: 3,
                },
            );
        }
        run(
            &mut t,
            Command::MarkRead {
                session: bob,
                ids: vec![MessageId(1)],
                now: 4,
            },
        );
        t
    }

    fn problems(t: &MemTables) -> Vec<String> {
        let mut found = Vec::new();
        let summary = check_state(t, &mut |p| found.push(p)).unwrap();
        assert_eq!(summary.problems as usize, found.len());
        found
    }

    #[test]
    fn a_clean_state_has_no_problems() {
        let t = chat();
        assert_eq!(problems(&t), Vec::<String>::new());
        let summary = check_state(&t, &mut |_| {}).unwrap();
        assert_eq!(
            (summary.accounts, summary.sessions, summary.messages),
            (2, 2, 2)
        );
    }

    #[test]
    fn a_changed_byte_in_a_message_is_reported_with_its_id() {
        let mut t = chat();
        let k = key::id(2);
        let mut value = t.get(Table::Message, &k).unwrap().unwrap();
        let at = value.len() - 10;
        value[at] ^= 0x20;
        t.put(Table::Message, &k, &value).unwrap();
        assert_eq!(
            problems(&t),
            vec!["state: message 2: checksum mismatch".to_string()]
        );
        assert!(check_row(Table::Message, &k, &value).is_err());
    }

    #[test]
    fn tables_that_disagree_are_reported() {
        let mut t = chat();
        // bob (account 2) loses his unread row for message 2, and an index row points
        // at an account that does not exist.
        t.put(Table::Inbox, &key::pair(2, 2), inbox::READ).unwrap();
        t.put(Table::UsernameAccount, b"ghost", &key::id(9))
            .unwrap();
        t.delete(Table::Conversation, &key::conversation(1, 2, 1))
            .unwrap();
        assert_eq!(
            problems(&t),
            vec![
                "state: username_account row 67686f73…: names account 9, which does not exist",
                "state: message 1: missing from its conversation",
                "state: account 2: unread count 1 but 0 unread inbox rows",
            ]
        );
    }
}
