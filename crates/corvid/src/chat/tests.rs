//! Tests of `corvid chat` without a terminal: the update logic driven by inputs, and the
//! screens drawn on ratatui's `TestBackend` and compared with the text fixtures in
//! `snapshots/` (`CORVID_BLESS=1 cargo test -p corvid chat::` rewrites them after a
//! deliberate change; review the diff).

use corvid_core::{
    AccountRow, AccountsPage, EndReason, Event, HistoryPage, Message, MessageId, ReceiptStatus,
};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::model::{App, Focus, Older, Screen, MAX_CONVERSATIONS, MAX_LOADED};
use super::update::{update, Effect, Input, Reply};
use super::view::view;

/// 2026-11-21 17:30:02 UTC.
const NOON: u64 = 1_795_282_202_000;

fn key(code: KeyCode) -> Input {
    Input::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Input {
    Input::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

/// Types `text` a key at a time; returns every effect the keys asked for.
fn type_text(app: &mut App, text: &str) -> Vec<Effect> {
    text.chars()
        .flat_map(|c| update(app, key(KeyCode::Char(c))))
        .collect()
}

fn press(app: &mut App, code: KeyCode) -> Vec<Effect> {
    update(app, key(code))
}

fn message(id: u64, from: &str, to: &str, text: &str, status: ReceiptStatus) -> Message {
    Message {
        id: MessageId(id),
        from: from.to_string(),
        to: to.to_string(),
        text: text.to_string(),
        sent_at: NOON + id * 60_000,
        status,
    }
}

fn push(app: &mut App, message: Message) -> Vec<Effect> {
    update(app, Input::Pushed(Event::Message(message)))
}

fn reply(app: &mut App, reply: Reply) -> Vec<Effect> {
    update(app, Input::Reply(reply))
}

fn alice() -> App {
    App::chat("127.0.0.1:7070 (wire)", "alice")
}

fn chat(app: &App) -> &super::model::Chat {
    app.chat_state().expect("the chat screen")
}

fn unread(app: &App) -> Vec<(String, u64)> {
    chat(app)
        .conversations
        .iter()
        .map(|conversation| (conversation.with.clone(), conversation.unread))
        .collect()
}

fn shown_texts(app: &App) -> Vec<String> {
    let open = chat(app).open.as_ref().expect("an open conversation");
    open.messages
        .iter()
        .map(|message| message.text.clone())
        .chain(open.pending.iter().map(|pending| pending.text.clone()))
        .collect()
}

/// Alice with a conversation with Bob open, showing `page`, its unread marked read.
fn alice_with_bob_open(page: Vec<Message>, next_before: Option<MessageId>) -> App {
    let mut app = alice();
    let effects = type_text(&mut app, "/bob");
    assert!(effects.is_empty());
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        [Effect::Search {
            pattern: "bob".into()
        }]
    );
    reply(
        &mut app,
        Reply::Accounts {
            pattern: "bob".into(),
            page: AccountsPage {
                rows: vec![AccountRow {
                    username: "bob".into(),
                    display_name: "Bob".into(),
                    online: true,
                }],
                next_cursor: None,
            },
        },
    );
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        [Effect::History {
            with: "bob".into(),
            before: None
        }]
    );
    reply(
        &mut app,
        Reply::History {
            with: "bob".into(),
            page: HistoryPage {
                messages: page,
                next_before,
            },
        },
    );
    app
}

// ---- The update logic, driven by inputs ----

#[test]
fn the_login_screen_logs_in_with_what_was_typed_and_a_refusal_keeps_the_name() {
    let mut app = App::login("127.0.0.1:7070 (wire)");
    assert!(type_text(&mut app, "alice").is_empty());
    // Enter without a password moves to the password instead of asking the server.
    assert!(press(&mut app, KeyCode::Enter).is_empty());
    assert!(type_text(&mut app, "wrong password").is_empty());
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        [Effect::Login {
            username: "alice".into(),
            password: "wrong password".into()
        }]
    );
    // While the login is under way, keys wait.
    assert!(type_text(&mut app, "x").is_empty());
    let effects = reply(
        &mut app,
        Reply::LoginFailed {
            error: "error: wrong username or password (invalid_credentials)".into(),
        },
    );
    assert!(effects.is_empty());
    let Screen::Login(form) = &app.screen else {
        panic!("still the login screen");
    };
    assert_eq!(form.username, "alice");
    assert_eq!(form.password, "", "a refused password is cleared");
    assert!(app.notice.as_ref().is_some_and(|notice| notice.error));

    type_text(&mut app, "correct horse battery");
    assert!(matches!(
        press(&mut app, KeyCode::Enter).as_slice(),
        [Effect::Login { password, .. }] if password == "correct horse battery"
    ));
    let effects = reply(
        &mut app,
        Reply::LoggedIn {
            username: "Alice".into(),
            unread: 3,
        },
    );
    assert_eq!(effects, [Effect::Subscribe { after: None }]);
    assert_eq!(chat(&app).me, "Alice");
}

#[test]
fn pushed_messages_are_counted_unread_per_sender_most_recent_first() {
    let mut app = alice();
    for (id, from) in [(1, "bob"), (2, "carol"), (3, "bob"), (4, "dave")] {
        let effects = push(
            &mut app,
            message(id, from, "alice", "hi", ReceiptStatus::Delivered),
        );
        assert!(effects.is_empty(), "nothing is marked read unless open");
    }
    assert_eq!(
        unread(&app),
        [("dave".into(), 1), ("bob".into(), 2), ("carol".into(), 1)]
    );
    // The highlight stays on the newest row until the user moves it; then it follows
    // its row as rows move.
    let highlighted = |app: &App| chat(app).conversations[chat(app).selected].with.clone();
    assert_eq!(highlighted(&app), "dave");
    press(&mut app, KeyCode::Down);
    assert_eq!(highlighted(&app), "bob");
    push(
        &mut app,
        message(5, "carol", "alice", "again", ReceiptStatus::Delivered),
    );
    assert_eq!(highlighted(&app), "bob");
    assert_eq!(chat(&app).conversations[0].preview, "again");
}

#[test]
fn opening_a_conversation_loads_its_history_and_marks_what_it_shows_read() {
    let mut app = alice();
    push(
        &mut app,
        message(1, "bob", "alice", "one", ReceiptStatus::Delivered),
    );
    push(
        &mut app,
        message(3, "bob", "alice", "three", ReceiptStatus::Delivered),
    );
    assert_eq!(unread(&app), [("bob".into(), 2)]);
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        [Effect::History {
            with: "bob".into(),
            before: None
        }]
    );
    assert_eq!(chat(&app).focus, Focus::Input);
    let page = vec![
        message(1, "bob", "alice", "one", ReceiptStatus::Delivered),
        message(2, "alice", "bob", "two", ReceiptStatus::Read),
        message(3, "bob", "alice", "three", ReceiptStatus::Delivered),
    ];
    let effects = reply(
        &mut app,
        Reply::History {
            with: "bob".into(),
            page: HistoryPage {
                messages: page,
                next_before: None,
            },
        },
    );
    assert_eq!(
        effects,
        [Effect::MarkRead {
            with: "bob".into(),
            ids: vec![MessageId(1), MessageId(3)]
        }]
    );
    assert_eq!(shown_texts(&app), ["one", "two", "three"]);
    reply(
        &mut app,
        Reply::MarkedRead {
            with: "bob".into(),
            count: 2,
        },
    );
    assert_eq!(unread(&app), [("bob".into(), 0)]);
}

#[test]
fn a_live_message_in_the_open_conversation_shows_at_once_and_is_marked_read() {
    let mut app = alice_with_bob_open(Vec::new(), None);
    let effects = push(
        &mut app,
        message(7, "bob", "alice", "live", ReceiptStatus::Delivered),
    );
    assert_eq!(
        effects,
        [Effect::MarkRead {
            with: "bob".into(),
            ids: vec![MessageId(7)]
        }]
    );
    assert_eq!(shown_texts(&app), ["live"]);
    reply(
        &mut app,
        Reply::MarkedRead {
            with: "bob".into(),
            count: 1,
        },
    );
    // The same message again (a replay that overlapped the history page) is shown once.
    assert!(push(
        &mut app,
        message(7, "bob", "alice", "live", ReceiptStatus::Delivered)
    )
    .is_empty());
    assert_eq!(shown_texts(&app), ["live"]);
    // Someone else's message waits in the list.
    assert!(push(
        &mut app,
        message(8, "carol", "alice", "psst", ReceiptStatus::Delivered)
    )
    .is_empty());
    assert_eq!(unread(&app), [("carol".into(), 1), ("bob".into(), 0)]);
    assert_eq!(shown_texts(&app), ["live"]);
}

#[test]
fn enter_sends_and_receipts_move_the_message_from_sent_to_delivered_to_read() {
    let mut app = alice_with_bob_open(Vec::new(), None);
    assert!(type_text(&mut app, "hello bob").is_empty());
    let effects = press(&mut app, KeyCode::Enter);
    assert_eq!(
        effects,
        [Effect::Send {
            to: "bob".into(),
            text: "hello bob".into(),
            local_id: 1
        }]
    );
    assert_eq!(chat(&app).input, "", "the input line is emptied");
    assert_eq!(shown_texts(&app), ["hello bob"], "shown while sending");
    // An empty line sends nothing.
    assert!(press(&mut app, KeyCode::Enter).is_empty());

    reply(
        &mut app,
        Reply::Sent {
            local_id: 1,
            message: message(9, "alice", "bob", "hello bob", ReceiptStatus::Sent),
        },
    );
    let status = |app: &App| {
        let open = chat(app).open.as_ref().unwrap();
        assert!(open.pending.is_empty());
        open.messages[0].status
    };
    assert_eq!(status(&app), ReceiptStatus::Sent);
    for (event, expected) in [
        (ReceiptStatus::Delivered, ReceiptStatus::Delivered),
        (ReceiptStatus::Read, ReceiptStatus::Read),
        // A late receipt never takes the status back.
        (ReceiptStatus::Delivered, ReceiptStatus::Read),
    ] {
        update(
            &mut app,
            Input::Pushed(Event::Receipt {
                id: MessageId(9),
                status: event,
            }),
        );
        assert_eq!(status(&app), expected);
    }
}

#[test]
fn a_refused_send_stays_on_screen_as_not_sent_with_the_reason() {
    let mut app = alice_with_bob_open(Vec::new(), None);
    type_text(&mut app, "x");
    press(&mut app, KeyCode::Enter);
    reply(
        &mut app,
        Reply::SendFailed {
            to: "bob".into(),
            local_id: 1,
            error: "error: no such recipient (unknown_recipient)".into(),
        },
    );
    let open = chat(&app).open.as_ref().unwrap();
    assert!(open.pending[0].failed);
    assert_eq!(
        app.notice.as_ref().map(|notice| notice.text.as_str()),
        Some("error: no such recipient (unknown_recipient)")
    );
}

#[test]
fn scrolling_back_pages_in_older_history_once_and_keeps_the_view() {
    let page: Vec<Message> = (51..=100)
        .map(|id| message(id, "bob", "alice", &format!("m{id}"), ReceiptStatus::Read))
        .collect();
    let mut app = alice_with_bob_open(page, Some(MessageId(51)));
    let mut asked = Vec::new();
    for _ in 0..5 {
        asked.extend(press(&mut app, KeyCode::PageUp));
    }
    assert_eq!(
        asked,
        [Effect::History {
            with: "bob".into(),
            before: Some(MessageId(51))
        }],
        "one request for the older page, however often PgUp is pressed"
    );
    let before = chat(&app).open.as_ref().unwrap().scroll_back;
    reply(
        &mut app,
        Reply::History {
            with: "bob".into(),
            page: HistoryPage {
                messages: (1..=50)
                    .map(|id| message(id, "bob", "alice", &format!("m{id}"), ReceiptStatus::Read))
                    .collect(),
                next_before: None,
            },
        },
    );
    let open = chat(&app).open.as_ref().unwrap();
    assert_eq!(open.messages.len(), 100);
    assert_eq!(open.older, Older::None);
    assert_eq!(open.scroll_back, before, "the lines in view stay in view");
    // Back down to the newest.
    press(&mut app, KeyCode::End);
    assert_eq!(chat(&app).open.as_ref().unwrap().scroll_back, 0);
}

#[test]
fn a_failed_page_of_older_history_is_asked_again_by_the_next_page_up() {
    let page: Vec<Message> = (51..=100)
        .map(|id| message(id, "bob", "alice", "m", ReceiptStatus::Read))
        .collect();
    let mut app = alice_with_bob_open(page, Some(MessageId(51)));
    let asked = |app: &mut App| -> Vec<Effect> {
        (0..5).flat_map(|_| press(app, KeyCode::PageUp)).collect()
    };
    let older = Effect::History {
        with: "bob".into(),
        before: Some(MessageId(51)),
    };
    assert_eq!(asked(&mut app), std::slice::from_ref(&older));
    reply(
        &mut app,
        Reply::HistoryFailed {
            with: "bob".into(),
            error: "error: the server did not answer in time (timeout)".into(),
        },
    );
    assert!(app.notice.as_ref().is_some_and(|notice| notice.error));
    assert_eq!(asked(&mut app), [older]);
}

#[test]
fn the_open_conversation_and_the_list_stay_within_their_bounds() {
    let mut app = alice_with_bob_open(Vec::new(), None);
    for id in 1..=(MAX_LOADED as u64 + 10) {
        push(
            &mut app,
            message(id, "bob", "alice", "spam", ReceiptStatus::Read),
        );
    }
    let open = chat(&app).open.as_ref().unwrap();
    assert_eq!(open.messages.len(), MAX_LOADED);
    assert_eq!(
        open.messages.back().unwrap().id,
        MessageId(MAX_LOADED as u64 + 10)
    );
    assert_eq!(open.older, Older::Before(MessageId(11)));

    for id in 0..(MAX_CONVERSATIONS as u64 + 20) {
        push(
            &mut app,
            message(
                5000 + id,
                &format!("user{id}"),
                "alice",
                "hi",
                ReceiptStatus::Delivered,
            ),
        );
    }
    let chat = chat(&app);
    assert_eq!(chat.conversations.len(), MAX_CONVERSATIONS);
    assert!(
        chat.position("bob").is_some(),
        "the open conversation stays"
    );
}

#[test]
fn search_lists_people_and_enter_opens_the_one_chosen() {
    let mut app = alice();
    press(&mut app, KeyCode::Char('/'));
    assert_eq!(chat(&app).focus, Focus::Search);
    // An empty pattern lists everyone.
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        [Effect::Search {
            pattern: "*".into()
        }]
    );
    type_text(&mut app, "*o*");
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        [Effect::Search {
            pattern: "*o*".into()
        }]
    );
    let row = |name: &str, online| AccountRow {
        username: name.into(),
        display_name: String::new(),
        online,
    };
    reply(
        &mut app,
        Reply::Accounts {
            pattern: "*o*".into(),
            page: AccountsPage {
                rows: vec![row("bob", true), row("dora", false)],
                next_cursor: None,
            },
        },
    );
    press(&mut app, KeyCode::Down);
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        [Effect::History {
            with: "dora".into(),
            before: None
        }]
    );
    assert_eq!(chat(&app).focus, Focus::Input);
    assert_eq!(unread(&app), [("dora".into(), 0)]);
    // Editing the pattern makes Enter search again rather than open.
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('/'));
    assert_eq!(chat(&app).focus, Focus::Search);
    press(&mut app, KeyCode::Backspace);
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        [Effect::Search {
            pattern: "*o".into()
        }]
    );
}

#[test]
fn a_session_ended_by_the_server_goes_back_to_login_and_forgets_the_session() {
    let mut app = alice();
    let effects = update(
        &mut app,
        Input::Pushed(Event::SessionEnded {
            reason: EndReason::ReplacedByNewLogin,
        }),
    );
    assert_eq!(effects, [Effect::ForgetSession]);
    assert!(matches!(app.screen, Screen::Login(_)));
    assert!(app
        .notice
        .as_ref()
        .is_some_and(|notice| notice.text.contains("logged in elsewhere")));
    // A request refused as unauthenticated does the same.
    let mut app = alice();
    assert_eq!(
        reply(&mut app, Reply::SessionEnded),
        [Effect::ForgetSession]
    );
    assert!(matches!(app.screen, Screen::Login(_)));
}

#[test]
fn ctrl_c_quits_anywhere_and_q_quits_only_from_the_list() {
    let mut app = alice_with_bob_open(Vec::new(), None);
    type_text(&mut app, "q");
    assert!(!app.quit, "q is text in the input line");
    assert_eq!(chat(&app).input, "q");
    press(&mut app, KeyCode::Esc);
    assert_eq!(chat(&app).focus, Focus::List);
    press(&mut app, KeyCode::Char('q'));
    assert!(app.quit);

    for mut app in [App::login("x"), alice_with_bob_open(Vec::new(), None)] {
        update(&mut app, ctrl('c'));
        assert!(app.quit);
    }
}

#[test]
fn lost_events_resubscribe_after_the_last_message_seen() {
    let mut app = alice();
    push(
        &mut app,
        message(41, "bob", "alice", "hi", ReceiptStatus::Delivered),
    );
    let effects = update(
        &mut app,
        Input::Offline {
            error: "the connection closed".into(),
        },
    );
    assert_eq!(
        effects,
        [Effect::Subscribe {
            after: Some(MessageId(41))
        }]
    );
    assert!(!app.online);
    update(&mut app, Input::Subscribed);
    assert!(app.online);
}

// ---- The screens, drawn on a TestBackend ----

/// The screen as text, one line per row, trailing blanks trimmed.
fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| view(app, frame)).unwrap();
    let buffer = terminal.backend().buffer();
    let mut lines = Vec::new();
    for y in 0..buffer.area.height {
        let mut line = String::new();
        for x in 0..buffer.area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        lines.push(line.trim_end().to_string());
    }
    lines.join("\n") + "\n"
}

/// Compares `screen` with `snapshots/<name>.txt`; `CORVID_BLESS=1` writes it instead.
fn check_snapshot(name: &str, screen: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/chat/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("CORVID_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, screen).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err}; run with CORVID_BLESS=1", path.display()));
    assert!(
        expected == screen,
        "{name} differs from {}\n--- expected\n{expected}--- drawn\n{screen}",
        path.display()
    );
}

fn rows(screen: &str) -> Vec<&str> {
    screen.lines().collect()
}

#[test]
fn the_login_screen_masks_the_password() {
    let mut app = App::login("127.0.0.1:7070 (wire)");
    type_text(&mut app, "alice");
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "secret12");
    let screen = render(&app, 80, 24);
    check_snapshot("login_80x24", &screen);
    assert!(screen.contains("Username  alice"));
    assert!(screen.contains("Password  ••••••••"));
    assert!(!screen.contains("secret12"));
    assert!(rows(&screen)[23].contains("Enter log in"));
}

/// Alice's list: Bob with two unread, Carol with one, Dave read.
fn alice_with_a_list() -> App {
    let mut app = alice();
    for (id, from, status) in [
        (1, "dave", ReceiptStatus::Read),
        (2, "carol", ReceiptStatus::Delivered),
        (3, "bob", ReceiptStatus::Delivered),
        (4, "bob", ReceiptStatus::Delivered),
    ] {
        push(&mut app, message(id, from, "alice", "hi", status));
    }
    app
}

#[test]
fn the_conversation_list_shows_unread_counts() {
    let app = alice_with_a_list();
    let screen = render(&app, 80, 24);
    check_snapshot("list_80x24", &screen);
    let lines = rows(&screen);
    let row = |name: &str| {
        lines
            .iter()
            .find(|line| {
                let row: String = line.chars().skip(2).collect();
                row.starts_with(&format!("{name} "))
            })
            .map(|line| line.chars().take(26).collect::<String>())
            .unwrap_or_else(|| panic!("no row for {name}:\n{screen}"))
    };
    assert!(row("bob").ends_with("2│"), "{}", row("bob"));
    assert!(
        screen.contains("│›bob"),
        "the highlight is on the newest row"
    );
    assert!(row("carol").ends_with("1│"), "{}", row("carol"));
    assert!(row("dave").ends_with(" │"), "{}", row("dave"));
    assert!(lines[23].contains("/ find people"));
}

/// Alice and Bob's conversation: Bob's two messages and three of Alice's, one of each
/// receipt status, and one still sending.
fn alice_and_bob_talking() -> App {
    let mut app = alice_with_bob_open(
        vec![
            message(
                1,
                "bob",
                "alice",
                "hi alice, lunch today?",
                ReceiptStatus::Read,
            ),
            message(2, "alice", "bob", "yes! where?", ReceiptStatus::Read),
            message(
                3,
                "bob",
                "alice",
                "the noodle place on the corner, the one with the long queue at noon",
                ReceiptStatus::Read,
            ),
            message(
                4,
                "alice",
                "bob",
                "see you at 12:30",
                ReceiptStatus::Delivered,
            ),
            message(5, "alice", "bob", "bring an umbrella", ReceiptStatus::Sent),
        ],
        None,
    );
    type_text(&mut app, "running late");
    press(&mut app, KeyCode::Enter);
    type_text(&mut app, "by 5 min");
    app
}

#[test]
fn an_open_conversation_shows_receipts_on_our_messages() {
    let app = alice_and_bob_talking();
    let screen = render(&app, 80, 24);
    check_snapshot("conversation_80x24", &screen);
    for expected in [
        "17:32 alice: yes! where? (read)",
        "17:34 alice: see you at 12:30 (delivered)",
        "17:35 alice: bring an umbrella (sent)",
        "--:-- alice: running late (sending…)",
        "17:31 bob: hi alice, lunch today?",
        "start of the conversation",
    ] {
        assert!(screen.contains(expected), "{expected:?} not in\n{screen}");
    }
    assert!(
        !screen.contains("lunch today? ("),
        "no receipt on Bob's messages"
    );
    assert!(screen.contains("Message to bob"));
    assert!(screen.contains("│by 5 min"));
}

#[test]
fn text_from_others_cannot_drive_the_terminal() {
    // Control characters (escape sequences, line breaks) are shown, never sent to the
    // terminal as they are.
    let mut app = alice_with_bob_open(
        vec![message(
            1,
            "bob",
            "alice",
            "\x1b[2Jgotcha\nline",
            ReceiptStatus::Read,
        )],
        None,
    );
    update(&mut app, ctrl('u'));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("bob: \\u{1b}[2Jgotcha\\nline"), "{screen}");
    assert!(!screen.contains('\x1b'));
}

#[test]
fn search_results_show_who_is_online() {
    let mut app = alice();
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "*o*");
    press(&mut app, KeyCode::Enter);
    let row = |name: &str, display: &str, online| AccountRow {
        username: name.into(),
        display_name: display.into(),
        online,
    };
    reply(
        &mut app,
        Reply::Accounts {
            pattern: "*o*".into(),
            page: AccountsPage {
                rows: vec![
                    row("bob", "Bob Builder", true),
                    row("dora", "", false),
                    row("toby", "Toby T.", true),
                ],
                next_cursor: Some("more".into()),
            },
        },
    );
    let screen = render(&app, 80, 24);
    check_snapshot("search_80x24", &screen);
    assert!(
        screen.contains("›bob   online  Bob Builder"),
        "the first is chosen"
    );
    assert!(screen.contains(" dora  -"));
    assert!(screen.contains("More match"));
    assert!(screen.contains("│*o*"));
}

#[test]
fn a_narrow_terminal_shows_one_pane_at_a_time() {
    let mut app = alice_and_bob_talking();
    let screen = render(&app, 40, 20);
    check_snapshot("conversation_40x20", &screen);
    assert!(!screen.contains("Conversations"), "{screen}");
    assert!(
        screen.contains("│      corner, the one with the long"),
        "wrapped under the text"
    );
    press(&mut app, KeyCode::Esc);
    let screen = render(&app, 40, 20);
    check_snapshot("list_40x20", &screen);
    assert!(screen.contains("Conversations"));
    assert!(rows(&screen)[19].contains("q quit"), "the short keys fit");
}

#[test]
fn every_size_draws_without_losing_the_keys_line() {
    let apps = [
        App::login("127.0.0.1:7070 (wire)"),
        alice_with_a_list(),
        alice_and_bob_talking(),
    ];
    for app in &apps {
        for width in (1..=120).step_by(7) {
            for height in (1..=40).step_by(3) {
                let screen = render(app, width, height);
                let lines = rows(&screen);
                assert_eq!(lines.len(), usize::from(height));
                if width >= 30 && height >= 8 {
                    let keys = lines[usize::from(height) - 1];
                    assert!(
                        keys.contains("Esc") || keys.contains("quit"),
                        "{width}x{height}: {keys:?}"
                    );
                }
            }
        }
    }
    let screen = render(&apps[2], 20, 5);
    check_snapshot("too_small_20x5", &screen);
    assert!(screen.contains("Make the"));
}
