//! One data-driven test per state-machine operation: its success and each of its errors.

use corvid_core::query::{self, QueryError};
use corvid_core::{
    apply, AccountId, Command, Effect, EndReason, ErrorCode, MemTables, MessageId, Outcome,
    Pattern, PatternSyntax, ReceiptStatus, Rejection, SessionKey, SessionPolicy, Token,
};

/// A state machine in memory with a hand-driven clock.
struct Chat {
    tables: MemTables,
    now: u64,
    tokens: u8,
    effects: Vec<Effect>,
}

impl Chat {
    fn new() -> Chat {
        Chat {
            tables: MemTables::new(),
            now: 1_000_000,
            tokens: 0,
            effects: Vec::new(),
        }
    }

    fn run(&mut self, command: Command) -> Outcome {
        let applied = apply(&command, &mut self.tables).expect("memory tables do not fail");
        self.effects = applied.effects.clone();
        applied.outcome().clone()
    }

    fn create(&mut self, name: &str) -> Outcome {
        self.run(Command::CreateAccount {
            username: name.into(),
            display_name: format!("{name} display"),
            password_hash: "$argon2id$fake".into(),
            now: self.now,
        })
    }

    fn id(&self, name: &str) -> AccountId {
        query::credentials(&self.tables, name)
            .unwrap()
            .expect("account exists")
            .0
    }

    fn login_with(&mut self, name: &str, policy: SessionPolicy) -> SessionKey {
        self.tokens += 1;
        let session = Token([self.tokens; 16]).session_key();
        let account = self.id(name);
        let outcome = self.run(Command::Login {
            account,
            session,
            policy,
            now: self.now,
        });
        assert!(matches!(outcome, Outcome::LoggedIn { .. }), "{outcome:?}");
        session
    }

    fn login(&mut self, name: &str) -> SessionKey {
        self.login_with(name, SessionPolicy::default())
    }

    fn send(&mut self, session: SessionKey, to: &str, text: &str, client_id: u64) -> Outcome {
        self.run(Command::Send {
            session,
            to: to.into(),
            text: text.into(),
            client_id,
            now: self.now,
        })
    }

    fn sent_id(&mut self, session: SessionKey, to: &str, text: &str) -> MessageId {
        match self.send(session, to, text, 0) {
            Outcome::Sent {
                message,
                duplicate: false,
            } => message.id,
            other => panic!("send failed: {other:?}"),
        }
    }

    fn unread_texts(&self, name: &str) -> Vec<String> {
        query::fetch_unread(&self.tables, self.id(name), 100)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect()
    }

    fn history_texts(&self, name: &str, with: &str) -> Vec<String> {
        query::history(&self.tables, self.id(name), with, None, 100)
            .unwrap()
            .messages
            .into_iter()
            .map(|m| m.text)
            .collect()
    }
}

fn rejected(code: ErrorCode) -> Outcome {
    Outcome::Rejected(Rejection::new(code))
}

#[test]
fn create_account() {
    let mut chat = Chat::new();
    assert!(matches!(
        chat.create("Alice"),
        Outcome::AccountCreated {
            account: AccountId(1),
            ..
        }
    ));
    let cases: &[(&str, &str, Outcome)] = &[
        ("alice", "", rejected(ErrorCode::UsernameTaken)),
        ("ALICE", "", rejected(ErrorCode::UsernameTaken)),
        ("", "", rejected(ErrorCode::InvalidUsername)),
        ("bad name", "", rejected(ErrorCode::InvalidUsername)),
        (&"x".repeat(33), "", rejected(ErrorCode::InvalidUsername)),
        (
            "bob",
            &"d".repeat(65),
            rejected(ErrorCode::InvalidDisplayName),
        ),
    ];
    for (name, display, expected) in cases {
        let outcome = chat.run(Command::CreateAccount {
            username: name.to_string(),
            display_name: display.to_string(),
            password_hash: "h".into(),
            now: 1,
        });
        assert_eq!(&outcome, expected, "{name:?}");
    }
    let outcome = chat.run(Command::CreateAccount {
        username: "bob".into(),
        display_name: String::new(),
        password_hash: String::new(),
        now: 1,
    });
    assert_eq!(outcome, rejected(ErrorCode::InvalidPassword));
    // The name is shown as typed; ids are never reused.
    assert!(matches!(
        chat.create("bob"),
        Outcome::AccountCreated {
            account: AccountId(2),
            ..
        }
    ));
    let page = query::list_accounts(
        &chat.tables,
        &Pattern::compile("*", PatternSyntax::Glob).unwrap(),
        None,
        10,
    )
    .unwrap();
    let names: Vec<_> = page.rows.iter().map(|r| r.username.as_str()).collect();
    assert_eq!(names, ["Alice", "bob"]);
}

#[test]
fn login_counts_unread_and_rejects_deleted_accounts() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    chat.sent_id(alice, "bob", "one");
    chat.sent_id(alice, "bob", "two");
    let bob_id = chat.id("bob");
    let outcome = chat.run(Command::Login {
        account: bob_id,
        session: Token([99; 16]).session_key(),
        policy: SessionPolicy::default(),
        now: chat.now,
    });
    assert_eq!(
        outcome,
        Outcome::LoggedIn {
            account: bob_id,
            username: "bob".into(),
            unread: 2
        }
    );
    let outcome = chat.run(Command::Login {
        account: AccountId(77),
        session: Token([98; 16]).session_key(),
        policy: SessionPolicy::default(),
        now: chat.now,
    });
    assert_eq!(outcome, rejected(ErrorCode::InvalidCredentials));
}

#[test]
fn sessions_expire_when_idle_or_too_old_and_activity_extends_them() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let policy = SessionPolicy {
        idle_timeout_ms: 10_000,
        max_lifetime_ms: 25_000,
        single_session: false,
    };
    let alice = chat.login_with("alice", policy);
    // Activity every 8 s keeps the session alive past its idle timeout...
    for _ in 0..2 {
        chat.now += 8_000;
        assert_eq!(
            chat.run(Command::Touch {
                session: alice,
                now: chat.now
            }),
            Outcome::Touched
        );
    }
    // ...but not past its absolute lifetime.
    chat.now += 9_000;
    assert_eq!(
        chat.run(Command::Touch {
            session: alice,
            now: chat.now
        }),
        rejected(ErrorCode::Unauthenticated)
    );
    assert!(chat.effects.contains(&Effect::SessionEnded {
        account: chat.id("alice"),
        session: alice,
        reason: EndReason::Expired
    }));
    // Idle expiry.
    let alice = chat.login_with("alice", policy);
    chat.now += 10_000;
    assert_eq!(
        chat.send(alice, "bob", "late", 0),
        rejected(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        query::authenticate(&chat.tables, &alice, chat.now),
        Err(QueryError::Rejected(Rejection::new(
            ErrorCode::Unauthenticated
        )))
    );
}

#[test]
fn time_never_goes_backwards_when_a_proposer_stamps_an_earlier_now() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let policy = SessionPolicy {
        idle_timeout_ms: 10_000,
        max_lifetime_ms: 1_000_000,
        single_session: false,
    };
    let start = chat.now;
    let alice = chat.login_with("alice", policy);
    let bob = chat.login("bob");
    chat.now = start + 5_000;
    let first = chat.send(bob, "alice", "first", 0);
    // A server whose clock is 4 s behind the last one's proposes next.
    chat.now = start + 1_000;
    let second = chat.send(bob, "alice", "second", 0);
    let (
        Outcome::Sent { message: first, .. },
        Outcome::Sent {
            message: second, ..
        },
    ) = (first, second)
    else {
        panic!("both sends succeed");
    };
    assert!(second.id > first.id);
    assert_eq!(
        second.sent_at,
        start + 5_000,
        "sent_at never goes backwards"
    );

    // Once the state has seen a time past alice's idle timeout, an earlier stamp does not
    // bring her session back.
    chat.now = start + 11_000;
    chat.sent_id(bob, "alice", "third");
    chat.now = start + 6_000;
    assert_eq!(
        chat.send(alice, "bob", "too late", 0),
        rejected(ErrorCode::Unauthenticated)
    );
}

#[test]
fn several_sessions_by_default_single_session_ends_the_older_ones() {
    let mut chat = Chat::new();
    chat.create("alice");
    let first = chat.login("alice");
    let second = chat.login("alice");
    assert_eq!(
        chat.run(Command::Touch {
            session: first,
            now: chat.now
        }),
        Outcome::Touched
    );
    assert_eq!(
        chat.run(Command::Touch {
            session: second,
            now: chat.now
        }),
        Outcome::Touched
    );
    let policy = SessionPolicy {
        single_session: true,
        ..SessionPolicy::default()
    };
    let third = chat.login_with("alice", policy);
    let ended: Vec<_> = chat
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::SessionEnded {
                session,
                reason: EndReason::ReplacedByNewLogin,
                ..
            } => Some(*session),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 2);
    assert!(ended.contains(&first) && ended.contains(&second));
    assert_eq!(
        chat.run(Command::Touch {
            session: first,
            now: chat.now
        }),
        rejected(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        chat.run(Command::Touch {
            session: third,
            now: chat.now
        }),
        Outcome::Touched
    );
}

#[test]
fn logout() {
    let mut chat = Chat::new();
    chat.create("alice");
    let alice = chat.login("alice");
    assert_eq!(
        chat.run(Command::Logout {
            session: alice,
            now: chat.now
        }),
        Outcome::LoggedOut
    );
    assert_eq!(
        chat.effects,
        vec![Effect::SessionEnded {
            account: chat.id("alice"),
            session: alice,
            reason: EndReason::LoggedOut
        }]
    );
    assert_eq!(
        chat.run(Command::Logout {
            session: alice,
            now: chat.now
        }),
        rejected(ErrorCode::Unauthenticated)
    );
}

#[test]
fn send_delivers_to_the_inbox_and_history_of_both() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("Bob");
    let alice = chat.login("alice");
    let outcome = chat.send(alice, "bob", "hello", 7);
    let Outcome::Sent {
        message,
        duplicate: false,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (message.from.as_str(), message.to.as_str(), message.status),
        ("alice", "Bob", ReceiptStatus::Sent)
    );
    assert_eq!(
        chat.effects,
        vec![Effect::Message {
            to: chat.id("bob"),
            message: message.clone()
        }]
    );
    assert_eq!(chat.unread_texts("bob"), ["hello"]);
    assert_eq!(chat.history_texts("alice", "bob"), ["hello"]);
    assert_eq!(chat.history_texts("bob", "alice"), ["hello"]);

    let cases: &[(&str, &str, ErrorCode)] = &[
        ("nobody", "hi", ErrorCode::UnknownRecipient),
        ("not a name", "hi", ErrorCode::UnknownRecipient),
        ("bob", "", ErrorCode::InvalidText),
    ];
    for (to, text, code) in cases {
        assert_eq!(
            chat.send(alice, to, text, 0),
            rejected(*code),
            "{to} {text}"
        );
    }
    let huge = "x".repeat(corvid_core::validate::HARD_MAX_TEXT + 1);
    assert_eq!(
        chat.send(alice, "bob", &huge, 0),
        rejected(ErrorCode::InvalidText)
    );
    assert_eq!(
        chat.send(Token([50; 16]).session_key(), "bob", "hi", 0),
        rejected(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        chat.unread_texts("bob"),
        ["hello"],
        "rejected sends store nothing"
    );
}

#[test]
fn a_retried_send_returns_the_original_message() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let Outcome::Sent { message: first, .. } = chat.send(alice, "bob", "once", 42) else {
        panic!()
    };
    chat.now += 5_000;
    let outcome = chat.send(alice, "bob", "once", 42);
    assert_eq!(
        outcome,
        Outcome::Sent {
            message: first.clone(),
            duplicate: true
        }
    );
    assert!(chat.effects.is_empty(), "a duplicate pushes nothing");
    // The same client id from another device of the same account is the same message.
    let other_device = chat.login("alice");
    assert_eq!(
        chat.send(other_device, "bob", "once", 42),
        Outcome::Sent {
            message: first,
            duplicate: true
        }
    );
    // Client id 0 opts out of retry protection.
    chat.sent_id(alice, "bob", "zero");
    chat.sent_id(alice, "bob", "zero");
    assert_eq!(chat.unread_texts("bob"), ["once", "zero", "zero"]);
}

#[test]
fn a_client_id_is_remembered_as_long_as_its_message_exists() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let Outcome::Sent { message: first, .. } = chat.send(alice, "bob", "once", 7) else {
        panic!()
    };
    // Much later, and after the sender deleted her copy: the recipient still has it, so
    // a retry still returns it.
    chat.now += 365 * 24 * 3600 * 1000;
    let (alice, bob) = (chat.login("alice"), chat.login("bob"));
    let delete = |session, chat: &Chat| Command::DeleteMessages {
        session,
        ids: vec![first.id],
        now: chat.now,
    };
    chat.run(delete(alice, &chat));
    assert_eq!(
        chat.send(alice, "bob", "once", 7),
        Outcome::Sent {
            message: first.clone(),
            duplicate: true
        }
    );
    // Once nobody sees the message it is erased, and its client id with it.
    chat.run(delete(bob, &chat));
    assert!(matches!(
        chat.send(alice, "bob", "again", 7),
        Outcome::Sent { duplicate: false, message } if message.id != first.id
    ));
}

#[test]
fn fetch_unread_pages_oldest_first_and_mark_read_sends_receipts() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let ids: Vec<_> = (0..5)
        .map(|i| chat.sent_id(alice, "bob", &format!("m{i}")))
        .collect();
    let first_two = query::fetch_unread(&chat.tables, chat.id("bob"), 2).unwrap();
    assert_eq!(first_two.iter().map(|m| m.id).collect::<Vec<_>>(), ids[..2]);
    let outcome = chat.run(Command::MarkRead {
        session: bob,
        ids: vec![ids[0], ids[1], ids[1], MessageId(999)],
        now: chat.now,
    });
    assert_eq!(outcome, Outcome::MarkedRead { count: 2 });
    let alice_id = chat.id("alice");
    assert_eq!(
        chat.effects,
        vec![
            Effect::Receipt {
                to: alice_id,
                id: ids[0],
                status: ReceiptStatus::Read
            },
            Effect::Receipt {
                to: alice_id,
                id: ids[1],
                status: ReceiptStatus::Read
            },
        ]
    );
    assert_eq!(chat.unread_texts("bob"), ["m2", "m3", "m4"]);
    assert_eq!(
        query::unread_count(&chat.tables, chat.id("bob")).unwrap(),
        3
    );
    // Alice cannot mark Bob's messages read.
    assert_eq!(
        chat.run(Command::MarkRead {
            session: alice,
            ids: vec![ids[2]],
            now: chat.now
        }),
        Outcome::MarkedRead { count: 0 }
    );
    let too_many = vec![MessageId(1); corvid_core::validate::MAX_IDS + 1];
    assert_eq!(
        chat.run(Command::MarkRead {
            session: bob,
            ids: too_many,
            now: chat.now
        }),
        rejected(ErrorCode::TooManyIds)
    );
}

#[test]
fn the_oldest_unread_are_found_after_long_runs_of_read_ones() {
    // Bob reads everything but the first and the last two, then the first: the walk to the
    // next unread message is longer than one command may take, and nothing is missed.
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let ids: Vec<MessageId> = (0..query::UNREAD_SCAN_BUDGET + 10)
        .map(|i| chat.sent_id(alice, "bob", &format!("m{i}")))
        .collect();
    let last = ids.len() - 2;
    for chunk in ids[1..last].chunks(1000) {
        let outcome = chat.run(Command::MarkRead {
            session: bob,
            ids: chunk.to_vec(),
            now: chat.now,
        });
        assert_eq!(
            outcome,
            Outcome::MarkedRead {
                count: chunk.len() as u64
            }
        );
    }
    let expected_last: Vec<String> = (last..ids.len()).map(|i| format!("m{i}")).collect();
    let mut expected = vec!["m0".to_string()];
    expected.extend(expected_last.iter().cloned());
    assert_eq!(chat.unread_texts("bob"), expected);
    chat.run(Command::MarkRead {
        session: bob,
        ids: vec![ids[0]],
        now: chat.now,
    });
    assert_eq!(chat.unread_texts("bob"), expected_last);
    // Once nothing is unread, a new message is found at once.
    chat.run(Command::MarkRead {
        session: bob,
        ids: ids[last..].to_vec(),
        now: chat.now,
    });
    assert!(chat.unread_texts("bob").is_empty());
    chat.sent_id(alice, "bob", "new");
    assert_eq!(chat.unread_texts("bob"), ["new"]);
}

#[test]
fn mark_delivered_moves_status_forward_only() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let a = chat.sent_id(alice, "bob", "a");
    let b = chat.sent_id(alice, "bob", "b");
    let bob_id = chat.id("bob");
    chat.run(Command::MarkRead {
        session: bob,
        ids: vec![b],
        now: chat.now,
    });
    let outcome = chat.run(Command::MarkDelivered {
        account: bob_id,
        ids: vec![a, b],
        now: chat.now,
    });
    assert_eq!(outcome, Outcome::MarkedDelivered { count: 1 });
    assert_eq!(
        chat.effects,
        vec![Effect::Receipt {
            to: chat.id("alice"),
            id: a,
            status: ReceiptStatus::Delivered
        }]
    );
    // Only the recipient's deliveries count.
    let outcome = chat.run(Command::MarkDelivered {
        account: chat.id("alice"),
        ids: vec![a],
        now: chat.now,
    });
    assert_eq!(outcome, Outcome::MarkedDelivered { count: 0 });
    let statuses: Vec<_> = query::history(&chat.tables, chat.id("alice"), "bob", None, 10)
        .unwrap()
        .messages
        .iter()
        .map(|m| m.status)
        .collect();
    assert_eq!(statuses, [ReceiptStatus::Delivered, ReceiptStatus::Read]);
}

#[test]
fn history_pages_backwards_over_both_directions() {
    let mut chat = Chat::new();
    for name in ["alice", "bob", "carol"] {
        chat.create(name);
    }
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    for i in 0..5 {
        chat.sent_id(alice, "bob", &format!("a{i}"));
        chat.sent_id(bob, "alice", &format!("b{i}"));
        chat.sent_id(alice, "carol", "other conversation");
    }
    let me = chat.id("alice");
    let page = query::history(&chat.tables, me, "BOB", None, 4).unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["a3", "b3", "a4", "b4"]
    );
    let page2 = query::history(&chat.tables, me, "bob", page.next_before, 4).unwrap();
    assert_eq!(
        page2
            .messages
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["a1", "b1", "a2", "b2"]
    );
    let page3 = query::history(&chat.tables, me, "bob", page2.next_before, 4).unwrap();
    assert_eq!(
        page3
            .messages
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["a0", "b0"]
    );
    assert_eq!(page3.next_before, None);
    assert_eq!(
        query::history(&chat.tables, me, "nobody", None, 4),
        Err(QueryError::Rejected(Rejection::new(ErrorCode::UnknownUser)))
    );
}

#[test]
fn a_history_page_examines_a_bounded_number_of_rows() {
    // Bob deleted more messages than one page may skip; alice kept them all.
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    chat.sent_id(alice, "bob", "old");
    let hidden: Vec<MessageId> = (0..query::HISTORY_SCAN_BUDGET + 5)
        .map(|i| chat.sent_id(alice, "bob", &format!("hidden {i}")))
        .collect();
    chat.sent_id(alice, "bob", "new");
    for ids in hidden.chunks(1000) {
        chat.run(Command::DeleteMessages {
            session: bob,
            ids: ids.to_vec(),
            now: chat.now,
        });
    }
    let me = chat.id("bob");
    let texts = |page: &corvid_core::HistoryPage| -> Vec<String> {
        page.messages.iter().map(|m| m.text.clone()).collect()
    };
    // The first page finds "new", then runs out of budget among the deleted ones: it is
    // short, and its cursor points into them rather than past them.
    let first = query::history(&chat.tables, me, "alice", None, 10).unwrap();
    assert_eq!(texts(&first), ["new"]);
    let cursor = first
        .next_before
        .expect("a short page still says where to go on");
    assert!(hidden.contains(&cursor));
    // Following the cursor reaches the old message, and the end.
    let second = query::history(&chat.tables, me, "alice", Some(cursor), 10).unwrap();
    assert_eq!(texts(&second), ["old"]);
    assert_eq!(second.next_before, None);
    // Alice, who deleted nothing, sees full pages.
    let alice_page = query::history(&chat.tables, chat.id("alice"), "bob", None, 10).unwrap();
    assert_eq!(alice_page.messages.len(), 10);
}

#[test]
fn delete_messages_hides_them_for_one_user_and_erases_when_nobody_sees_them() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let keep = chat.sent_id(alice, "bob", "keep");
    let gone = chat.sent_id(alice, "bob", "gone");
    let outcome = chat.run(Command::DeleteMessages {
        session: bob,
        ids: vec![gone, MessageId(12345)],
        now: chat.now,
    });
    assert_eq!(outcome, Outcome::MessagesDeleted { count: 1 });
    assert_eq!(
        chat.unread_texts("bob"),
        ["keep"],
        "a deleted unread message is no longer unread"
    );
    assert_eq!(
        query::unread_count(&chat.tables, chat.id("bob")).unwrap(),
        1
    );
    assert_eq!(chat.history_texts("bob", "alice"), ["keep"]);
    assert_eq!(
        chat.history_texts("alice", "bob"),
        ["keep", "gone"],
        "the sender still sees it"
    );
    let before = chat.tables.len();
    assert_eq!(
        chat.run(Command::DeleteMessages {
            session: alice,
            ids: vec![gone],
            now: chat.now
        }),
        Outcome::MessagesDeleted { count: 1 }
    );
    assert!(chat.tables.len() < before);
    assert_eq!(chat.history_texts("alice", "bob"), ["keep"]);
    assert!(
        chat.tables
            .rows()
            .all(|(_, _, v)| !String::from_utf8_lossy(v).contains("gone")),
        "erased from storage"
    );
    // Deleting again, or someone else's message, changes nothing.
    assert_eq!(
        chat.run(Command::DeleteMessages {
            session: alice,
            ids: vec![gone],
            now: chat.now
        }),
        Outcome::MessagesDeleted { count: 0 }
    );
    chat.create("eve");
    let eve = chat.login("eve");
    assert_eq!(
        chat.run(Command::DeleteMessages {
            session: eve,
            ids: vec![keep],
            now: chat.now
        }),
        Outcome::MessagesDeleted { count: 0 }
    );
    assert_eq!(chat.history_texts("bob", "alice"), ["keep"]);
}

#[test]
fn delete_account_needs_force_with_unread_and_leaves_sent_messages_with_recipients() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let alice_id = chat.id("alice");
    chat.sent_id(alice, "bob", "from alice");
    chat.sent_id(bob, "alice", "unread by alice");
    let outcome = chat.run(Command::DeleteAccount {
        session: alice,
        account: alice_id,
        force: false,
        now: chat.now,
    });
    assert_eq!(
        outcome,
        Outcome::Rejected(Rejection {
            code: ErrorCode::UnreadMessages,
            detail: 1
        })
    );
    let outcome = chat.run(Command::DeleteAccount {
        session: alice,
        account: chat.id("bob"),
        force: true,
        now: chat.now,
    });
    assert_eq!(
        outcome,
        rejected(ErrorCode::Unauthenticated),
        "a session deletes only its own account"
    );
    let outcome = chat.run(Command::DeleteAccount {
        session: alice,
        account: alice_id,
        force: true,
        now: chat.now,
    });
    assert_eq!(outcome, Outcome::AccountDeleted);
    assert!(chat.effects.contains(&Effect::SessionEnded {
        account: alice_id,
        session: alice,
        reason: EndReason::AccountDeleted
    }));
    assert_eq!(
        chat.run(Command::Touch {
            session: alice,
            now: chat.now
        }),
        rejected(ErrorCode::Unauthenticated)
    );
    // Bob keeps what Alice sent, attributed to her old name.
    let bob_view = query::fetch_unread(&chat.tables, chat.id("bob"), 10).unwrap();
    assert_eq!(
        bob_view
            .iter()
            .map(|m| (m.from.as_str(), m.text.as_str()))
            .collect::<Vec<_>>(),
        [("alice", "from alice")]
    );
    // Bob still reads his conversation with Alice by her old name, both directions.
    assert_eq!(
        chat.history_texts("bob", "alice"),
        ["from alice", "unread by alice"]
    );
    assert_eq!(
        chat.send(bob, "alice", "anyone?", 0),
        rejected(ErrorCode::UnknownRecipient)
    );
    // A new account with the old name inherits nothing.
    assert!(matches!(
        chat.create("alice"),
        Outcome::AccountCreated {
            account: AccountId(3),
            ..
        }
    ));
    assert!(chat.unread_texts("alice").is_empty());
    let alice2 = chat.login("alice");
    assert_eq!(chat.history_texts("alice", "bob"), Vec::<String>::new());
    assert!(matches!(
        chat.send(alice2, "bob", "hi again", 0),
        Outcome::Sent { .. }
    ));
}

#[test]
fn history_with_a_deleted_account_shows_what_the_caller_still_sees() {
    let mut chat = Chat::new();
    for name in ["alice", "Bob", "carol"] {
        chat.create(name);
    }
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let carol = chat.login("carol");
    chat.sent_id(alice, "bob", "a1");
    let hidden = chat.sent_id(bob, "alice", "b1");
    chat.sent_id(alice, "bob", "a2");
    chat.sent_id(carol, "bob", "to bob from carol");
    chat.sent_id(alice, "carol", "not with bob");
    // Alice deletes one message from her view; it stays gone after Bob leaves.
    chat.run(Command::DeleteMessages {
        session: alice,
        ids: vec![hidden],
        now: chat.now,
    });
    let bob_id = chat.id("bob");
    let outcome = chat.run(Command::DeleteAccount {
        session: bob,
        account: bob_id,
        force: true,
        now: chat.now,
    });
    assert_eq!(outcome, Outcome::AccountDeleted);

    // (caller, name asked for, texts shown)
    let cases: &[(&str, &str, &[&str])] = &[
        ("alice", "bob", &["a1", "a2"]),
        ("alice", "BOB", &["a1", "a2"]),
        ("carol", "bob", &["to bob from carol"]),
        ("carol", "alice", &["not with bob"]),
    ];
    for (caller, with, texts) in cases {
        assert_eq!(
            chat.history_texts(caller, with),
            *texts,
            "{caller} with {with}"
        );
    }
    // Attributed to the name the account had, as typed.
    let page = query::history(&chat.tables, chat.id("alice"), "bob", None, 10).unwrap();
    assert!(page
        .messages
        .iter()
        .all(|m| m.to == "Bob" && m.from == "alice"));
    // Paging works across the old conversation as across a live one.
    let newest = query::history(&chat.tables, chat.id("alice"), "bob", None, 1).unwrap();
    assert_eq!(newest.messages[0].text, "a2");
    let older =
        query::history(&chat.tables, chat.id("alice"), "bob", newest.next_before, 1).unwrap();
    assert_eq!(older.messages[0].text, "a1");
    assert_eq!(older.next_before, None);
    // A name nobody ever had is still unknown.
    assert_eq!(
        query::history(&chat.tables, chat.id("alice"), "dave", None, 10),
        Err(QueryError::Rejected(Rejection::new(ErrorCode::UnknownUser)))
    );
}

#[test]
fn a_reused_name_shows_only_the_new_account_and_former_holders_when_it_is_gone() {
    let mut chat = Chat::new();
    chat.create("alice");
    let alice = chat.login("alice");
    // Three accounts named bob, one after the other.
    let mut texts_by_holder = Vec::new();
    for holder in 1..=3 {
        chat.create("bob");
        let bob = chat.login("bob");
        chat.sent_id(alice, "bob", &format!("to bob{holder}"));
        chat.sent_id(bob, "alice", &format!("from bob{holder}"));
        texts_by_holder.push([format!("to bob{holder}"), format!("from bob{holder}")]);
        if holder < 3 {
            let id = chat.id("bob");
            assert_eq!(
                chat.run(Command::DeleteAccount {
                    session: bob,
                    account: id,
                    force: true,
                    now: chat.now,
                }),
                Outcome::AccountDeleted
            );
        }
    }
    // While a bob exists, history with "bob" is the conversation with that account only.
    assert_eq!(chat.history_texts("alice", "bob"), texts_by_holder[2]);
    // And the new bob sees nothing of what the earlier ones exchanged.
    assert_eq!(
        chat.history_texts("bob", "alice"),
        texts_by_holder[2].to_vec()
    );
    // Once no account has the name, history shows every former holder's conversation,
    // oldest first: their lifetimes did not overlap.
    let bob = chat.login("bob");
    let id = chat.id("bob");
    chat.run(Command::DeleteAccount {
        session: bob,
        account: id,
        force: true,
        now: chat.now,
    });
    assert_eq!(chat.history_texts("alice", "bob"), texts_by_holder.concat());
    // Paged backwards two at a time, it crosses from one former holder to the next.
    let mut before = None;
    let mut pages = Vec::new();
    loop {
        let page = query::history(&chat.tables, chat.id("alice"), "bob", before, 2).unwrap();
        pages.push(
            page.messages
                .iter()
                .map(|m| m.text.clone())
                .collect::<Vec<_>>(),
        );
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    pages.reverse();
    let expected: Vec<Vec<String>> = texts_by_holder.iter().map(|pair| pair.to_vec()).collect();
    assert_eq!(pages, expected);
}

#[test]
fn list_accounts_pages_with_a_cursor() {
    let mut chat = Chat::new();
    for name in ["amy", "Alan", "bob", "alice", "al", "zed"] {
        chat.create(name);
    }
    let glob = Pattern::compile("al*", PatternSyntax::Glob).unwrap();
    let page = query::list_accounts(&chat.tables, &glob, None, 2).unwrap();
    assert_eq!(
        page.rows
            .iter()
            .map(|r| r.username.as_str())
            .collect::<Vec<_>>(),
        ["al", "Alan"]
    );
    assert_eq!(page.rows[1].display_name, "Alan display");
    let page = query::list_accounts(&chat.tables, &glob, page.next_cursor.as_deref(), 2).unwrap();
    assert_eq!(
        page.rows
            .iter()
            .map(|r| r.username.as_str())
            .collect::<Vec<_>>(),
        ["alice"]
    );
    assert_eq!(page.next_cursor, None);
    let regex = Pattern::compile("^[ab]", PatternSyntax::Regex).unwrap();
    let page = query::list_accounts(&chat.tables, &regex, None, 100).unwrap();
    assert_eq!(page.rows.len(), 5);
    assert_eq!(
        query::list_accounts(&chat.tables, &glob, Some("NOT folded"), 2),
        Err(QueryError::Rejected(Rejection::new(
            ErrorCode::InvalidCursor
        )))
    );
}

#[test]
fn a_listing_page_examines_a_bounded_number_of_rows() {
    let mut chat = Chat::new();
    let total = query::LIST_SCAN_BUDGET + 5;
    for i in 0..total {
        chat.create(&format!("user{i:06}"));
    }
    chat.create("zz-target");
    let rare = Pattern::compile("*target", PatternSyntax::Glob).unwrap();
    let page = query::list_accounts(&chat.tables, &rare, None, 10).unwrap();
    assert!(page.rows.is_empty(), "the budget ran out before the match");
    let cursor = page.next_cursor.expect("a cursor to continue");
    let page = query::list_accounts(&chat.tables, &rare, Some(&cursor), 10).unwrap();
    assert_eq!(
        page.rows
            .iter()
            .map(|r| r.username.as_str())
            .collect::<Vec<_>>(),
        ["zz-target"]
    );
    assert_eq!(page.next_cursor, None);
}

#[test]
fn subscribers_resume_from_the_last_id_they_saw() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let ids: Vec<_> = (0..4)
        .map(|i| chat.sent_id(alice, "bob", &format!("m{i}")))
        .collect();
    let bob = chat.id("bob");
    let missed = query::inbox_after(&chat.tables, bob, ids[1], 100).unwrap();
    assert_eq!(missed.iter().map(|m| m.id).collect::<Vec<_>>(), ids[2..]);
    assert_eq!(query::last_inbox_id(&chat.tables, bob).unwrap(), ids[3]);
    assert_eq!(
        query::last_inbox_id(&chat.tables, chat.id("alice")).unwrap(),
        MessageId(0)
    );
}

#[test]
fn subscribers_from_the_oldest_unread_replay_only_unread_messages_up_to_the_start() {
    let mut chat = Chat::new();
    chat.create("alice");
    chat.create("bob");
    let alice = chat.login("alice");
    let bob = chat.login("bob");
    let ids: Vec<_> = (0..6)
        .map(|i| chat.sent_id(alice, "bob", &format!("m{i}")))
        .collect();
    chat.run(Command::MarkRead {
        session: bob,
        ids: vec![ids[0], ids[2], ids[3]],
        now: chat.now,
    });
    let bob_id = chat.id("bob");
    let replay = |after: MessageId, through: MessageId, limit: usize| {
        let (messages, next) =
            query::unread_between(&chat.tables, bob_id, after, through, limit).unwrap();
        (
            messages.iter().map(|m| m.text.clone()).collect::<Vec<_>>(),
            next,
        )
    };
    // (after, through, limit) -> (texts, where to go on)
    let cases = [
        ((MessageId(0), ids[5], 100), (vec!["m1", "m4", "m5"], None)),
        ((MessageId(0), ids[4], 100), (vec!["m1", "m4"], None)),
        ((ids[1], ids[5], 100), (vec!["m4", "m5"], None)),
        ((MessageId(0), ids[5], 1), (vec!["m1"], Some(ids[1]))),
        ((ids[1], ids[5], 1), (vec!["m4"], Some(ids[4]))),
        ((ids[5], ids[5], 100), (vec![], None)),
    ];
    for ((after, through, limit), (texts, next)) in cases {
        assert_eq!(
            replay(after, through, limit),
            (texts.iter().map(|t| t.to_string()).collect(), next),
            "after {after:?} through {through:?} limit {limit}"
        );
    }
}

#[test]
fn messages_to_oneself_are_a_note_to_self() {
    let mut chat = Chat::new();
    chat.create("alice");
    let alice = chat.login("alice");
    let id = chat.sent_id(alice, "alice", "note");
    assert_eq!(chat.unread_texts("alice"), ["note"]);
    assert_eq!(chat.history_texts("alice", "alice"), ["note"]);
    assert_eq!(
        chat.run(Command::DeleteMessages {
            session: alice,
            ids: vec![id],
            now: chat.now
        }),
        Outcome::MessagesDeleted { count: 1 }
    );
    assert!(chat.unread_texts("alice").is_empty());
    assert_eq!(
        query::unread_count(&chat.tables, chat.id("alice")).unwrap(),
        0
    );
}
