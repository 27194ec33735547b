//! Random command sequences against a deliberately simple reference model of the chat
//! rules. The state machine must agree with the model on every outcome and on every
//! inbox and conversation afterwards; restoring a snapshot must give the same state.

use std::collections::{BTreeMap, BTreeSet};

use corvid_core::{
    apply, query, AccountId, Command, ErrorCode, MemTables, MessageId, Outcome, Rejection,
    SessionKey, SessionPolicy, Tables, TablesMut, Token,
};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["ann", "Bob", "cy", "dee"];

#[derive(Clone, Debug)]
enum Action {
    Create(usize),
    Login(usize),
    Logout(usize),
    Send {
        session: usize,
        to: usize,
        shout: bool,
        client_id: u64,
    },
    MarkRead {
        session: usize,
        ids: Vec<u64>,
    },
    Delete {
        session: usize,
        ids: Vec<u64>,
    },
    DeleteAccount {
        session: usize,
        force: bool,
    },
}

/// Every sequence starts with all accounts created and logged in, so that the random part
/// exercises messages rather than mostly failing authentication.
fn actions(max: usize) -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(action(), 1..max).prop_map(|random| {
        let mut all: Vec<Action> = (0..4)
            .map(Action::Create)
            .chain((0..4).map(Action::Login))
            .collect();
        all.extend(random);
        all
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (0..4usize).prop_map(Action::Create),
        3 => (0..4usize).prop_map(Action::Login),
        1 => (0..8usize).prop_map(Action::Logout),
        8 => (0..8usize, 0..5usize, any::<bool>(), 0..4u64)
            .prop_map(|(session, to, shout, client_id)| Action::Send { session, to, shout, client_id }),
        3 => (0..8usize, prop::collection::vec(1..12u64, 0..4))
            .prop_map(|(session, ids)| Action::MarkRead { session, ids }),
        3 => (0..8usize, prop::collection::vec(1..12u64, 0..4))
            .prop_map(|(session, ids)| Action::Delete { session, ids }),
        1 => (0..8usize, any::<bool>()).prop_map(|(session, force)| Action::DeleteAccount { session, force }),
    ]
}

/// What the model expects, in the terms both sides can be reduced to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Created(u64),
    LoggedIn(u64),
    Done,
    Sent { id: u64, duplicate: bool },
    Count(u64),
    Rejected(ErrorCode, u64),
}

fn reduce(outcome: &Outcome) -> Expect {
    match outcome {
        Outcome::AccountCreated { account, .. } => Expect::Created(account.0),
        Outcome::LoggedIn { unread, .. } => Expect::LoggedIn(*unread),
        Outcome::LoggedOut | Outcome::AccountDeleted | Outcome::Touched | Outcome::Nothing => {
            Expect::Done
        }
        Outcome::Sent { message, duplicate } => Expect::Sent {
            id: message.id.0,
            duplicate: *duplicate,
        },
        Outcome::MarkedRead { count }
        | Outcome::MarkedDelivered { count }
        | Outcome::MessagesDeleted { count } => Expect::Count(*count),
        Outcome::Rejected(Rejection { code, detail }) => Expect::Rejected(*code, *detail),
    }
}

#[derive(Clone, Debug)]
struct ModelMessage {
    from: u64,
    to: u64,
    client_id: u64,
    sender_sees: bool,
    recipient_sees: bool,
    unread: bool,
    /// The recipient marked it read (its receipt status is `read`).
    read: bool,
}

#[derive(Default)]
struct Model {
    /// Folded name -> (account id, name as typed).
    accounts: BTreeMap<String, u64>,
    next_account: u64,
    /// Every session ever opened: its account and whether it is still open.
    sessions: Vec<(u64, bool)>,
    messages: BTreeMap<u64, ModelMessage>,
    next_message: u64,
    dedup: BTreeMap<(u64, u64), u64>,
    /// The greatest time stamped on any command so far: the time commands take effect at.
    clock: u64,
}

impl Model {
    fn session(&self, index: usize) -> Option<u64> {
        self.sessions
            .get(index)
            .filter(|(_, open)| *open)
            .map(|(account, _)| *account)
    }

    fn unread(&self, account: u64) -> u64 {
        self.messages
            .values()
            .filter(|m| m.to == account && m.unread)
            .count() as u64
    }

    /// Removes `id` from `me`'s view; erases it when nobody sees it. Whether it was visible.
    fn hide(&mut self, me: u64, id: u64) -> bool {
        let Some(m) = self.messages.get_mut(&id) else {
            return false;
        };
        let mut hidden = false;
        if m.from == me && m.sender_sees {
            m.sender_sees = false;
            hidden = true;
        }
        if m.to == me && m.recipient_sees {
            m.recipient_sees = false;
            m.unread = false;
            hidden = true;
        }
        if hidden && !m.sender_sees && !m.recipient_sees {
            let (from, client_id) = (m.from, m.client_id);
            self.messages.remove(&id);
            if self.dedup.get(&(from, client_id)) == Some(&id) {
                self.dedup.remove(&(from, client_id));
            }
        }
        hidden
    }

    fn step(&mut self, action: &Action) -> Expect {
        let unauthenticated = Expect::Rejected(ErrorCode::Unauthenticated, 0);
        match action {
            Action::Create(n) => {
                let folded = NAMES[*n].to_ascii_lowercase();
                if self.accounts.contains_key(&folded) {
                    return Expect::Rejected(ErrorCode::UsernameTaken, 0);
                }
                self.next_account += 1;
                self.accounts.insert(folded, self.next_account);
                Expect::Created(self.next_account)
            }
            Action::Login(n) => match self.accounts.get(&NAMES[*n].to_ascii_lowercase()) {
                Some(&account) => {
                    self.sessions.push((account, true));
                    Expect::LoggedIn(self.unread(account))
                }
                None => {
                    // The command names an account id that does not exist; no session opens,
                    // but the harness still counts the token it made.
                    self.sessions.push((0, false));
                    Expect::Rejected(ErrorCode::InvalidCredentials, 0)
                }
            },
            Action::Logout(s) => {
                let Some(_) = self.session(*s) else {
                    return unauthenticated;
                };
                self.sessions[*s].1 = false;
                Expect::Done
            }
            Action::Send {
                session,
                to,
                client_id,
                ..
            } => {
                let Some(me) = self.session(*session) else {
                    return unauthenticated;
                };
                if *client_id != 0 {
                    if let Some(id) = self.dedup.get(&(me, *client_id)) {
                        return Expect::Sent {
                            id: *id,
                            duplicate: true,
                        };
                    }
                }
                let Some(&to) = NAMES
                    .get(*to)
                    .and_then(|n| self.accounts.get(&n.to_ascii_lowercase()))
                else {
                    return Expect::Rejected(ErrorCode::UnknownRecipient, 0);
                };
                self.next_message += 1;
                let id = self.next_message;
                self.messages.insert(
                    id,
                    ModelMessage {
                        from: me,
                        to,
                        client_id: *client_id,
                        sender_sees: true,
                        recipient_sees: true,
                        unread: true,
                        read: false,
                    },
                );
                if *client_id != 0 {
                    self.dedup.insert((me, *client_id), id);
                }
                Expect::Sent {
                    id,
                    duplicate: false,
                }
            }
            Action::MarkRead { session, ids } => {
                let Some(me) = self.session(*session) else {
                    return unauthenticated;
                };
                let mut count = 0;
                for id in ids.iter().collect::<BTreeSet<_>>() {
                    if let Some(m) = self.messages.get_mut(id) {
                        if m.to == me && m.unread {
                            m.unread = false;
                            m.read = true;
                            count += 1;
                        }
                    }
                }
                Expect::Count(count)
            }
            Action::Delete { session, ids } => {
                let Some(me) = self.session(*session) else {
                    return unauthenticated;
                };
                let count = ids
                    .iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter(|id| self.hide(me, **id))
                    .count();
                Expect::Count(count as u64)
            }
            Action::DeleteAccount { session, force } => {
                let Some(me) = self.session(*session) else {
                    return unauthenticated;
                };
                let unread = self.unread(me);
                if unread > 0 && !force {
                    return Expect::Rejected(ErrorCode::UnreadMessages, unread);
                }
                for s in &mut self.sessions {
                    if s.0 == me {
                        s.1 = false;
                    }
                }
                let ids: Vec<u64> = self.messages.keys().copied().collect();
                for id in ids {
                    self.hide(me, id);
                }
                self.dedup.retain(|(from, _), _| *from != me);
                self.accounts.retain(|_, id| *id != me);
                Expect::Done
            }
        }
    }
}

/// Turns an action into the command the leader would propose.
fn command(action: &Action, model: &Model, tokens: &[SessionKey], now: u64) -> Option<Command> {
    let session = |i: usize| {
        tokens
            .get(i)
            .copied()
            .unwrap_or(Token([0xee; 16]).session_key())
    };
    Some(match action {
        Action::Create(n) => Command::CreateAccount {
            username: NAMES[*n].to_string(),
            display_name: String::new(),
            password_hash: "$argon2id$test".into(),
            now,
        },
        Action::Login(n) => Command::Login {
            account: AccountId(
                model
                    .accounts
                    .get(&NAMES[*n].to_ascii_lowercase())
                    .copied()
                    .unwrap_or(999),
            ),
            session: Token([tokens.len() as u8 + 1; 16]).session_key(),
            policy: SessionPolicy::default(),
            now,
        },
        Action::Logout(s) => Command::Logout {
            session: session(*s),
            now,
        },
        Action::Send {
            session: s,
            to,
            shout,
            client_id,
        } => {
            let name = NAMES.get(*to).map_or("nobody".to_string(), |n| {
                if *shout {
                    n.to_ascii_uppercase()
                } else {
                    n.to_string()
                }
            });
            Command::Send {
                session: session(*s),
                to: name,
                text: format!("text {now}"),
                client_id: *client_id,
                now,
            }
        }
        Action::MarkRead { session: s, ids } => Command::MarkRead {
            session: session(*s),
            ids: ids.iter().map(|i| MessageId(*i)).collect(),
            now,
        },
        Action::Delete { session: s, ids } => Command::DeleteMessages {
            session: session(*s),
            ids: ids.iter().map(|i| MessageId(*i)).collect(),
            now,
        },
        Action::DeleteAccount { session: s, force } => {
            let account = model
                .sessions
                .get(*s)
                .map_or(AccountId(999), |(a, _)| AccountId(*a));
            Command::DeleteAccount {
                session: session(*s),
                account,
                force: *force,
                now,
            }
        }
    })
}

fn copy(tables: &MemTables) -> MemTables {
    let mut restored = MemTables::new();
    for (table, key, value) in tables.rows() {
        restored.put(table, key, value).unwrap();
    }
    restored
}

fn check_views(tables: &MemTables, model: &Model) {
    for (folded_name, &account) in &model.accounts {
        let unread: Vec<u64> = query::fetch_unread(tables, AccountId(account), 100)
            .unwrap()
            .iter()
            .map(|m| m.id.0)
            .collect();
        let expected: Vec<u64> = model
            .messages
            .iter()
            .filter(|(_, m)| m.to == account && m.unread)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(unread, expected, "unread of {folded_name}");
        assert_eq!(
            query::unread_count(tables, AccountId(account)).unwrap(),
            expected.len() as u64
        );
        for (other_name, &other) in &model.accounts {
            let page = query::history(tables, AccountId(account), other_name, None, 100).unwrap();
            let history: Vec<u64> = page.messages.iter().map(|m| m.id.0).collect();
            for message in &page.messages {
                let read = model.messages[&message.id.0].read;
                assert_eq!(
                    message.status == corvid_core::ReceiptStatus::Read,
                    read,
                    "status of {}",
                    message.id.0
                );
            }
            let expected: Vec<u64> = model
                .messages
                .iter()
                .filter(|(_, m)| {
                    (m.from == account && m.to == other && m.sender_sees)
                        || (m.to == account && m.from == other && m.recipient_sees)
                })
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(
                history, expected,
                "history of {folded_name} with {other_name}"
            );
        }
    }
    // Nothing that nobody can see is left in storage.
    let mut stored = 0;
    tables
        .scan(
            corvid_core::Table::Message,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
            &mut |_, _| {
                stored += 1;
                true
            },
        )
        .unwrap();
    assert_eq!(stored, model.messages.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_state_machine_agrees_with_the_model(
        actions in actions(80),
        stamps in prop::collection::vec(1_000..1_100u64, 100),
    ) {
        let mut model = Model::default();
        let mut tables = MemTables::new();
        let mut tokens: Vec<SessionKey> = Vec::new();
        for (step, action) in actions.iter().enumerate() {
            // Each command is stamped by some server's clock, which may be behind the
            // last one's: the state applies it at the greatest time it has seen.
            let now = stamps[step % stamps.len()];
            let Some(command) = command(action, &model, &tokens, now) else { continue };
            if let Command::Login { session, .. } = &command {
                tokens.push(*session);
            }
            let expected = model.step(action);
            model.clock = model.clock.max(now);
            let applied = apply(&command, &mut tables).unwrap();
            if let Outcome::Sent { message, duplicate: false } = applied.outcome() {
                prop_assert_eq!(message.sent_at, model.clock, "step {} {:?}", step, action);
            }
            prop_assert_eq!(reduce(applied.outcome()), expected, "step {} {:?}", step, action);
        }
        check_views(&tables, &model);

        // Every state the commands reach passes `corvid check`'s checks of the state.
        let mut problems = Vec::new();
        let summary = corvid_core::check::check_state(&tables, &mut |p| problems.push(p)).unwrap();
        prop_assert!(problems.is_empty(), "{:?}", problems);
        prop_assert_eq!(summary.unchecked_records, 0);

        // A snapshot restored elsewhere is the same state and goes on the same way.
        let mut restored = copy(&tables);
        prop_assert_eq!(&restored, &tables);
        let next = Command::Send { session: tokens.first().copied().unwrap_or(SessionKey([0; 32])), to: "ann".into(), text: "after".into(), client_id: 0, now: 99_999 };
        let a = apply(&next, &mut tables).unwrap();
        let b = apply(&next, &mut restored).unwrap();
        prop_assert_eq!(a, b);
        prop_assert_eq!(&restored, &tables);
    }

    #[test]
    fn applying_is_deterministic(actions in actions(40)) {
        let run = || {
            let mut model = Model::default();
            let mut tables = MemTables::new();
            let mut tokens = Vec::new();
            let mut outcomes = Vec::new();
            for (step, action) in actions.iter().enumerate() {
                let Some(command) = command(action, &model, &tokens, step as u64) else { continue };
                if let Command::Login { session, .. } = &command {
                    tokens.push(*session);
                }
                model.step(action);
                outcomes.push(apply(&command, &mut tables).unwrap());
            }
            (tables, outcomes)
        };
        let (first_tables, first_outcomes) = run();
        let (second_tables, second_outcomes) = run();
        prop_assert_eq!(first_outcomes, second_outcomes);
        prop_assert_eq!(first_tables, second_tables);
    }
}

#[test]
fn delete_account_is_refused_with_the_unread_count_unless_forced() {
    let mut model = Model::default();
    let mut tables = MemTables::new();
    let mut tokens = Vec::new();
    let actions = [
        Action::Create(0),
        Action::Create(1),
        Action::Login(0),
        Action::Login(1),
        Action::Send {
            session: 0,
            to: 1,
            shout: true,
            client_id: 1,
        },
        Action::Send {
            session: 0,
            to: 1,
            shout: false,
            client_id: 2,
        },
        Action::DeleteAccount {
            session: 1,
            force: false,
        },
        Action::DeleteAccount {
            session: 1,
            force: true,
        },
    ];
    let mut outcomes = Vec::new();
    for (step, action) in actions.iter().enumerate() {
        let command = command(action, &model, &tokens, step as u64).unwrap();
        if let Command::Login { session, .. } = &command {
            tokens.push(*session);
        }
        let outcome = reduce(apply(&command, &mut tables).unwrap().outcome());
        assert_eq!(outcome, model.step(action), "{action:?}");
        outcomes.push(outcome);
    }
    assert_eq!(outcomes[6], Expect::Rejected(ErrorCode::UnreadMessages, 2));
    assert_eq!(outcomes[7], Expect::Done);
    check_views(&tables, &model);
}
