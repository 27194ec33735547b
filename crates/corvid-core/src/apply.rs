//! Applying one command to the tables: the only code that changes Corvid's state.
//!
//! Every rule a client can observe lives here. A command is checked completely before its
//! first business write, so a rejection leaves the state as it was (except that a session
//! found expired is removed, which is itself deterministic).

use std::collections::BTreeSet;
use std::ops::Bound;

use crate::command::{Applied, Command, Effect, Outcome, SessionPolicy};
use crate::error::{ErrorCode, Rejection};
use crate::query::{self, account, account_id_by_name, message, session, to_message};
use crate::records::{encode, AccountRecord, MessageRecord, SessionRecord};
use crate::tables::{inbox, key, StorageFault, Table, TablesMut};
use crate::types::{AccountId, EndReason, MessageId, ReceiptStatus, SessionKey, Timestamp};
use crate::validate;

pub(crate) const NEXT_ACCOUNT: &[u8] = b"next_account";
pub(crate) const NEXT_MESSAGE: &[u8] = b"next_message";
/// The greatest `now` any applied command carried: the state's clock. Commands are stamped
/// by whichever server proposes them, and after a leader change that server's wall clock
/// may be behind the last one's; applying at `max(command.now, clock)` keeps every time
/// the state records (`sent_at`, session activity, expiry) from going backwards.
pub(crate) const CLOCK: &[u8] = b"clock";
/// A session's last activity is rewritten at most this often (or a tenth of its idle
/// timeout, if smaller), so that a busy sender does not rewrite its session on every send.
const TOUCH_GRANULARITY_MS: u64 = 60_000;

/// Why a command did not complete: a business rejection (an outcome) or a storage fault.
enum Fail {
    Reject(Rejection),
    Fault(StorageFault),
}

impl From<StorageFault> for Fail {
    fn from(fault: StorageFault) -> Fail {
        Fail::Fault(fault)
    }
}

impl From<ErrorCode> for Fail {
    fn from(code: ErrorCode) -> Fail {
        Fail::Reject(Rejection::new(code))
    }
}

impl From<Rejection> for Fail {
    fn from(rejection: Rejection) -> Fail {
        Fail::Reject(rejection)
    }
}

/// Applies `command` to `tables`. Deterministic: the same command on the same state gives
/// the same state, outcome and effects on every server. An `Err` means storage failed and
/// the caller must abandon the transaction.
pub fn apply<T: TablesMut + ?Sized>(
    command: &Command,
    tables: &mut T,
) -> Result<Applied, StorageFault> {
    let mut effects = Vec::new();
    let mut state = State {
        t: tables,
        effects: &mut effects,
    };
    let now = state.advance_clock(command.now())?;
    let result = match command {
        Command::CreateAccount {
            username,
            display_name,
            password_hash,
            ..
        } => state.create_account(username, display_name, password_hash, now),
        Command::Login {
            account,
            session,
            policy,
            ..
        } => state.login(*account, session, policy, now),
        Command::Logout { session, .. } => state.logout(session, now),
        Command::DeleteAccount {
            session,
            account,
            force,
            ..
        } => state.delete_account(session, *account, *force, now),
        Command::Send {
            session,
            to,
            text,
            client_id,
            ..
        } => state.send(session, to, text, *client_id, now),
        Command::MarkRead { session, ids, .. } => state.mark_read(session, ids, now),
        Command::MarkDelivered { account, ids, .. } => state.mark_delivered(*account, ids),
        Command::DeleteMessages { session, ids, .. } => state.delete_messages(session, ids, now),
        Command::Touch { session, .. } => {
            state.authenticate(session, now).map(|_| Outcome::Touched)
        }
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(Fail::Reject(rejection)) => Outcome::Rejected(rejection),
        Err(Fail::Fault(fault)) => return Err(fault),
    };
    Ok(Applied {
        outcome: Some(outcome),
        effects,
    })
}

struct State<'a, T: TablesMut + ?Sized> {
    t: &'a mut T,
    effects: &'a mut Vec<Effect>,
}

impl<T: TablesMut + ?Sized> State<'_, T> {
    fn create_account(
        &mut self,
        username: &str,
        display_name: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<Outcome, Fail> {
        validate::username(username)?;
        validate::display_name(display_name)?;
        if password_hash.is_empty() {
            return Err(ErrorCode::InvalidPassword.into());
        }
        if account_id_by_name(self.t, username)?.is_some() {
            return Err(ErrorCode::UsernameTaken.into());
        }
        let id = AccountId(self.next(NEXT_ACCOUNT)?);
        let record = AccountRecord {
            username: username.to_string(),
            display_name: display_name.to_string(),
            password_hash: password_hash.to_string(),
            created_at: now,
            unread: 0,
            unread_from: 0,
        };
        self.put_account(id, &record)?;
        self.t.put(
            Table::UsernameAccount,
            validate::fold(username).as_bytes(),
            &key::id(id.0),
        )?;
        Ok(Outcome::AccountCreated {
            account: id,
            username: username.to_string(),
        })
    }

    fn login(
        &mut self,
        id: AccountId,
        key: &SessionKey,
        policy: &SessionPolicy,
        now: Timestamp,
    ) -> Result<Outcome, Fail> {
        // The account may have been deleted between the password check and this entry.
        let record = account(self.t, id)?.ok_or(ErrorCode::InvalidCredentials)?;
        for (old_key, old) in self.sessions_of(id)? {
            if policy.single_session {
                self.end_session(id, &old_key, EndReason::ReplacedByNewLogin)?;
            } else if !old.is_live(now) {
                self.end_session(id, &old_key, EndReason::Expired)?;
            }
        }
        let session = SessionRecord {
            account: id,
            created_at: now,
            last_active: now,
            idle_timeout_ms: policy.idle_timeout_ms,
            expires_at: now.saturating_add(policy.max_lifetime_ms),
        };
        self.t
            .put(Table::Session, &key.0, &encode(&key.0, &session))?;
        self.t
            .put(Table::AccountSession, &account_session_key(id, key), &[])?;
        Ok(Outcome::LoggedIn {
            account: id,
            username: record.username,
            unread: record.unread,
        })
    }

    fn logout(&mut self, key: &SessionKey, now: Timestamp) -> Result<Outcome, Fail> {
        let (id, _) = self.authenticate(key, now)?;
        self.end_session(id, key, EndReason::LoggedOut)?;
        Ok(Outcome::LoggedOut)
    }

    fn delete_account(
        &mut self,
        key: &SessionKey,
        expected: AccountId,
        force: bool,
        now: Timestamp,
    ) -> Result<Outcome, Fail> {
        let (id, record) = self.authenticate(key, now)?;
        if id != expected {
            return Err(ErrorCode::Unauthenticated.into());
        }
        if record.unread > 0 && !force {
            return Err(Rejection {
                code: ErrorCode::UnreadMessages,
                detail: record.unread,
            }
            .into());
        }
        for (session_key, _) in self.sessions_of(id)? {
            self.end_session(id, &session_key, EndReason::AccountDeleted)?;
        }
        // Every message in the account's view, both directions, leaves that view; a message
        // nobody can see any more is erased. Its conversations are keyed by the lower
        // account id first: those where it is the lower one are one range, the others are
        // found through its `peer` rows.
        let all = usize::MAX;
        let mut viewed = query::scan_ids(
            self.t,
            Table::Conversation,
            &key::triple(id.0, 0, 0),
            &key::triple(id.0, u64::MAX, u64::MAX),
            2,
            false,
            all,
        )?;
        let lower_peers = query::scan_ids(
            self.t,
            Table::Peer,
            &key::pair(id.0, 0),
            &key::pair(id.0, u64::MAX),
            1,
            false,
            all,
        )?;
        for peer in &lower_peers {
            viewed.extend(query::scan_ids(
                self.t,
                Table::Conversation,
                &key::triple(*peer, id.0, 0),
                &key::triple(*peer, id.0, u64::MAX),
                2,
                false,
                all,
            )?);
        }
        for message_id in viewed {
            self.hide(id, MessageId(message_id))?;
        }
        for peer in lower_peers {
            self.t.delete(Table::Peer, &key::pair(id.0, peer))?;
        }
        // Retries of this account's sends can no longer arrive: forget their client ids.
        let mut dedup = Vec::new();
        self.t.scan(
            Table::Dedup,
            Bound::Included(&key::pair(id.0, 0)),
            Bound::Included(&key::pair(id.0, u64::MAX)),
            false,
            &mut |k, _| {
                dedup.push(k.to_vec());
                true
            },
        )?;
        for k in dedup {
            self.t.delete(Table::Dedup, &k)?;
        }
        let folded = validate::fold(&record.username);
        self.t.delete(Table::UsernameAccount, folded.as_bytes())?;
        // Its peers keep reading their conversation with it by its old name.
        self.t.put(
            Table::FormerUsername,
            &key::former_username(&folded, id.0),
            &[],
        )?;
        self.t.delete(Table::Account, &key::id(id.0))?;
        Ok(Outcome::AccountDeleted)
    }

    fn send(
        &mut self,
        key: &SessionKey,
        to: &str,
        text: &str,
        client_id: u64,
        now: Timestamp,
    ) -> Result<Outcome, Fail> {
        let (me, sender) = self.authenticate(key, now)?;
        if client_id != 0 {
            if let Some(original) = self.deduplicated(me, client_id)? {
                return Ok(Outcome::Sent {
                    message: original,
                    duplicate: true,
                });
            }
        }
        validate::text(text, validate::HARD_MAX_TEXT)?;
        let recipient_id = account_id_by_name(self.t, to)?.ok_or(ErrorCode::UnknownRecipient)?;
        let mut recipient = if recipient_id == me {
            sender.clone()
        } else {
            account(self.t, recipient_id)?.ok_or(ErrorCode::UnknownRecipient)?
        };
        let id = MessageId(self.next(NEXT_MESSAGE)?);
        let record = MessageRecord {
            from: me,
            to: recipient_id,
            from_name: sender.username,
            to_name: recipient.username.clone(),
            text: text.to_string(),
            sent_at: now,
            client_id,
            status: ReceiptStatus::Sent,
            sender_sees: true,
            recipient_sees: true,
        };
        self.t.put(
            Table::Message,
            &key::id(id.0),
            &encode(&key::id(id.0), &record),
        )?;
        self.t.put(
            Table::Conversation,
            &key::conversation(me.0, recipient_id.0, id.0),
            &[],
        )?;
        self.meet(me, recipient_id)?;
        self.t.put(
            Table::Inbox,
            &key::pair(recipient_id.0, id.0),
            inbox::UNREAD,
        )?;
        recipient.unread += 1;
        self.put_account(recipient_id, &recipient)?;
        if client_id != 0 {
            self.t
                .put(Table::Dedup, &key::pair(me.0, client_id), &key::id(id.0))?;
        }
        let message = to_message(id, record);
        self.effects.push(Effect::Message {
            to: recipient_id,
            message: message.clone(),
        });
        Ok(Outcome::Sent {
            message,
            duplicate: false,
        })
    }

    fn mark_read(
        &mut self,
        key: &SessionKey,
        ids: &[MessageId],
        now: Timestamp,
    ) -> Result<Outcome, Fail> {
        let (me, mut record) = self.authenticate(key, now)?;
        validate::id_count(ids.len())?;
        let mut count = 0;
        for id in ids.iter().collect::<BTreeSet<_>>() {
            let inbox_key = key::pair(me.0, id.0);
            if self.t.get(Table::Inbox, &inbox_key)?.as_deref() != Some(inbox::UNREAD) {
                continue;
            }
            self.t.put(Table::Inbox, &inbox_key, inbox::READ)?;
            count += 1;
            self.advance_status(*id, ReceiptStatus::Read)?;
        }
        if count > 0 {
            record.unread = record.unread.saturating_sub(count);
            record.unread_from = self.first_unread(me, &record)?;
            self.put_account(me, &record)?;
        }
        Ok(Outcome::MarkedRead { count })
    }

    fn mark_delivered(&mut self, me: AccountId, ids: &[MessageId]) -> Result<Outcome, Fail> {
        let mut count = 0;
        for id in ids.iter().collect::<BTreeSet<_>>() {
            let Some(record) = message(self.t, *id)? else {
                continue;
            };
            if record.to == me
                && record.recipient_sees
                && self.advance(*id, record, ReceiptStatus::Delivered)?
            {
                count += 1;
            }
        }
        Ok(Outcome::MarkedDelivered { count })
    }

    fn delete_messages(
        &mut self,
        key: &SessionKey,
        ids: &[MessageId],
        now: Timestamp,
    ) -> Result<Outcome, Fail> {
        let (me, _) = self.authenticate(key, now)?;
        validate::id_count(ids.len())?;
        let mut count = 0;
        for id in ids.iter().collect::<BTreeSet<_>>() {
            if self.hide(me, *id)? {
                count += 1;
            }
        }
        Ok(Outcome::MessagesDeleted { count })
    }

    /// Checks that `key` names a live session and returns its account. Activity extends
    /// the session; an expired session is removed.
    fn authenticate(
        &mut self,
        key: &SessionKey,
        now: Timestamp,
    ) -> Result<(AccountId, AccountRecord), Fail> {
        let mut record = session(self.t, key)?.ok_or(ErrorCode::Unauthenticated)?;
        if !record.is_live(now) {
            self.end_session(record.account, key, EndReason::Expired)?;
            return Err(ErrorCode::Unauthenticated.into());
        }
        let granularity = TOUCH_GRANULARITY_MS.min(record.idle_timeout_ms / 10);
        if now.saturating_sub(record.last_active) >= granularity.max(1) {
            record.last_active = now;
            self.t
                .put(Table::Session, &key.0, &encode(&key.0, &record))?;
        }
        let account = account(self.t, record.account)?.ok_or(ErrorCode::Unauthenticated)?;
        Ok((record.account, account))
    }

    fn sessions_of(&self, id: AccountId) -> Result<Vec<(SessionKey, SessionRecord)>, Fail> {
        let mut keys = Vec::new();
        self.t.scan(
            Table::AccountSession,
            Bound::Included(&account_session_key(id, &SessionKey([0; 32]))),
            Bound::Included(&account_session_key(id, &SessionKey([0xff; 32]))),
            false,
            &mut |k, _| {
                let mut session_key = [0u8; 32];
                session_key.copy_from_slice(&k[8..40]);
                keys.push(SessionKey(session_key));
                true
            },
        )?;
        let mut sessions = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(record) = session(self.t, &k)? {
                sessions.push((k, record));
            }
        }
        Ok(sessions)
    }

    fn end_session(
        &mut self,
        account: AccountId,
        key: &SessionKey,
        reason: EndReason,
    ) -> Result<(), Fail> {
        self.t.delete(Table::Session, &key.0)?;
        self.t
            .delete(Table::AccountSession, &account_session_key(account, key))?;
        self.effects.push(Effect::SessionEnded {
            account,
            session: *key,
            reason,
        });
        Ok(())
    }

    /// The message a retried send refers to, if the client id was seen.
    fn deduplicated(
        &self,
        me: AccountId,
        client_id: u64,
    ) -> Result<Option<crate::types::Message>, Fail> {
        let Some(bytes) = self.t.get(Table::Dedup, &key::pair(me.0, client_id))? else {
            return Ok(None);
        };
        if bytes.len() != 8 {
            return Err(StorageFault("corrupt dedup row".into()).into());
        }
        let id = MessageId(key::part(&bytes, 0));
        Ok(message(self.t, id)?.map(|record| to_message(id, record)))
    }

    /// Moves a message's status forward to `status`, telling its sender. Returns whether
    /// it changed.
    fn advance_status(&mut self, id: MessageId, status: ReceiptStatus) -> Result<bool, Fail> {
        match message(self.t, id)? {
            Some(record) => self.advance(id, record, status),
            None => Ok(false),
        }
    }

    /// [`Self::advance_status`] of a message record already read.
    fn advance(
        &mut self,
        id: MessageId,
        mut record: MessageRecord,
        status: ReceiptStatus,
    ) -> Result<bool, Fail> {
        if record.status >= status {
            return Ok(false);
        }
        record.status = status;
        self.t.put(
            Table::Message,
            &key::id(id.0),
            &encode(&key::id(id.0), &record),
        )?;
        self.effects.push(Effect::Receipt {
            to: record.from,
            id,
            status,
        });
        Ok(true)
    }

    /// Removes message `id` from `me`'s view. Erases it once nobody can see it.
    /// Returns whether it was in the view.
    fn hide(&mut self, me: AccountId, id: MessageId) -> Result<bool, Fail> {
        let Some(mut record) = message(self.t, id)? else {
            return Ok(false);
        };
        let mut hidden = false;
        if record.from == me && record.sender_sees {
            record.sender_sees = false;
            hidden = true;
        }
        if record.to == me && record.recipient_sees {
            record.recipient_sees = false;
            let inbox_key = key::pair(me.0, id.0);
            let was_unread =
                self.t.get(Table::Inbox, &inbox_key)?.as_deref() == Some(inbox::UNREAD);
            self.t.delete(Table::Inbox, &inbox_key)?;
            if was_unread {
                if let Some(mut account) = account(self.t, me)? {
                    account.unread = account.unread.saturating_sub(1);
                    account.unread_from = self.first_unread(me, &account)?;
                    self.put_account(me, &account)?;
                }
            }
            hidden = true;
        }
        if !hidden {
            return Ok(false);
        }
        if record.sender_sees || record.recipient_sees {
            self.t.put(
                Table::Message,
                &key::id(id.0),
                &encode(&key::id(id.0), &record),
            )?;
        } else {
            self.t.delete(Table::Message, &key::id(id.0))?;
            self.t.delete(
                Table::Conversation,
                &key::conversation(record.from.0, record.to.0, id.0),
            )?;
            let dedup_key = key::pair(record.from.0, record.client_id);
            if record.client_id != 0
                && self.t.get(Table::Dedup, &dedup_key)?.as_deref() == Some(&key::id(id.0)[..])
            {
                self.t.delete(Table::Dedup, &dedup_key)?;
            }
        }
        Ok(true)
    }

    /// Records that `a` and `b` have exchanged a message, unless already known: a `peer`
    /// row under the higher id naming the lower one (the lower one finds the conversation
    /// by its own id, see `delete_account`).
    fn meet(&mut self, a: AccountId, b: AccountId) -> Result<(), Fail> {
        if a == b {
            return Ok(());
        }
        let row = key::pair(a.0.max(b.0), a.0.min(b.0));
        if self.t.get(Table::Peer, &row)?.is_none() {
            self.t.put(Table::Peer, &row, &[])?;
        }
        Ok(())
    }

    /// Where `me`'s oldest unread message may be, at the earliest: a new `unread_from` after
    /// messages stopped being unread. Walks forward over read rows from the current one, at
    /// most [`query::UNREAD_SCAN_BUDGET`] of them per call (the hint only ever moves forward,
    /// so each row is walked over once); with nothing unread, it jumps past the newest row.
    fn first_unread(&self, me: AccountId, record: &AccountRecord) -> Result<u64, Fail> {
        if record.unread == 0 {
            return Ok(query::last_inbox_id(self.t, me)?.0.saturating_add(1));
        }
        let mut next = record.unread_from;
        let mut examined = 0;
        self.t.scan(
            Table::Inbox,
            Bound::Included(&key::pair(me.0, record.unread_from)),
            Bound::Included(&key::pair(me.0, u64::MAX)),
            false,
            &mut |k, v| {
                let id = key::part(k, 1);
                if v == inbox::UNREAD {
                    next = id;
                    return false;
                }
                // Everything up to this read row is read (or gone).
                next = id.saturating_add(1);
                examined += 1;
                examined < query::UNREAD_SCAN_BUDGET
            },
        )?;
        Ok(next)
    }

    fn put_account(&mut self, id: AccountId, record: &AccountRecord) -> Result<(), Fail> {
        Ok(self.t.put(
            Table::Account,
            &key::id(id.0),
            &encode(&key::id(id.0), record),
        )?)
    }

    /// Moves the state's clock forward to `now` if it is behind, and returns the time the
    /// command takes effect at: the later of the two.
    fn advance_clock(&mut self, now: Timestamp) -> Result<Timestamp, StorageFault> {
        let clock = query::meta(self.t, CLOCK)?;
        if now > clock {
            self.t.put(Table::Meta, CLOCK, &key::id(now))?;
        }
        Ok(now.max(clock))
    }

    fn next(&mut self, name: &[u8]) -> Result<u64, Fail> {
        let next = query::meta(self.t, name)? + 1;
        self.t.put(Table::Meta, name, &key::id(next))?;
        Ok(next)
    }
}

fn account_session_key(account: AccountId, session: &SessionKey) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&key::id(account.0));
    k[8..].copy_from_slice(&session.0);
    k
}
