//! How `corvid chat` reacts: an [`Input`] (a key, a pushed event, a server's answer)
//! changes the [`App`] and returns the [`Effect`]s the runtime must carry out.
//!
//! Nothing here waits or talks to the server, so every reaction is tested as a plain
//! function call.

use corvid_core::{AccountsPage, EndReason, Event, HistoryPage, Message, MessageId};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::{
    App, Chat, Focus, LoginField, Notice, Older, OpenConversation, Pending, Screen, HISTORY_PAGE,
    MAX_INPUT_BYTES, MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS,
};

/// Everything that can happen to the client.
#[derive(Clone, Debug)]
pub enum Input {
    Key(KeyEvent),
    /// The terminal changed size: nothing to change, the next frame fits itself.
    Resize,
    /// An event pushed by the server.
    Pushed(Event),
    /// Pushed events stopped (the connection and every retry failed); `error` says why.
    Offline {
        error: String,
    },
    /// A subscription (re)started: events flow again.
    Subscribed,
    Reply(Reply),
}

/// The server's answer to an [`Effect`].
#[derive(Clone, Debug)]
pub enum Reply {
    LoggedIn {
        username: String,
        unread: u64,
    },
    LoginFailed {
        error: String,
    },
    History {
        with: String,
        page: HistoryPage,
    },
    MarkedRead {
        with: String,
        count: u64,
    },
    Sent {
        local_id: u64,
        message: Message,
    },
    SendFailed {
        to: String,
        local_id: u64,
        error: String,
    },
    Accounts {
        pattern: String,
        page: AccountsPage,
    },
    /// A page of history did not come; `error` is the line to show.
    HistoryFailed {
        with: String,
        error: String,
    },
    /// A request other than login or send failed; `error` is the line to show.
    Failed {
        error: String,
    },
    /// The server no longer knows the session: back to the login screen.
    SessionEnded,
}

/// Work for the runtime; its outcome comes back as an [`Input`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Login {
        username: String,
        password: String,
    },
    /// Start pushed events: after `after`, or from the oldest unread message.
    Subscribe {
        after: Option<MessageId>,
    },
    /// One page of the conversation with `with`, older than `before` (or the newest).
    History {
        with: String,
        before: Option<MessageId>,
    },
    MarkRead {
        with: String,
        ids: Vec<MessageId>,
    },
    Send {
        to: String,
        text: String,
        local_id: u64,
    },
    Search {
        pattern: String,
    },
    /// The session is over: forget it (the saved session file) before showing login.
    ForgetSession,
}

/// Applies `input` to `app`; returns what the runtime must do next.
pub fn update(app: &mut App, input: Input) -> Vec<Effect> {
    if let Input::Key(key) = &input {
        if is_ctrl_c(key) {
            app.quit = true;
            return Vec::new();
        }
    }
    match input {
        Input::Key(key) => {
            // A notice has been seen once the user acts.
            app.notice = None;
            match &mut app.screen {
                Screen::Login(_) => login_key(app, key),
                Screen::Chat(_) => chat_key(app, key),
            }
        }
        Input::Resize => Vec::new(),
        Input::Pushed(event) => pushed(app, event),
        Input::Offline { error } => {
            if app.chat_state().is_none() {
                // Events of a session already over; the login screen has its own news.
                return Vec::new();
            }
            app.online = false;
            app.notice = Some(Notice::error(format!("offline, reconnecting: {error}")));
            let after = app.chat_state().and_then(|chat| chat.last_seen);
            match app.screen {
                Screen::Chat(_) => vec![Effect::Subscribe { after }],
                Screen::Login(_) => Vec::new(),
            }
        }
        Input::Subscribed => {
            if !app.online {
                app.notice = Some(Notice::info("back online"));
            }
            app.online = true;
            Vec::new()
        }
        Input::Reply(reply) => replied(app, reply),
    }
}

fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c'))
}

/// A printable character typed, if the key is one (Shift is part of typing).
fn typed(key: &KeyEvent) -> Option<char> {
    match key.code {
        KeyCode::Char(c)
            if !key
                .modifiers
                .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
        {
            Some(c)
        }
        _ => None,
    }
}

fn login_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    let Screen::Login(form) = &mut app.screen else {
        return Vec::new();
    };
    if key.code == KeyCode::Esc {
        app.quit = true;
        return Vec::new();
    }
    if form.busy {
        return Vec::new();
    }
    match key.code {
        KeyCode::Tab | KeyCode::BackTab | KeyCode::Up | KeyCode::Down => {
            form.field = match form.field {
                LoginField::Username => LoginField::Password,
                LoginField::Password => LoginField::Username,
            };
        }
        KeyCode::Backspace => {
            match form.field {
                LoginField::Username => form.username.pop(),
                LoginField::Password => form.password.pop(),
            };
        }
        KeyCode::Enter => {
            if form.username.is_empty() {
                form.field = LoginField::Username;
            } else if form.password.is_empty() {
                form.field = LoginField::Password;
            } else {
                form.busy = true;
                app.notice = Some(Notice::info("logging in…"));
                return vec![Effect::Login {
                    username: form.username.clone(),
                    password: form.password.clone(),
                }];
            }
        }
        _ => {
            if let Some(c) = typed(&key) {
                match form.field {
                    LoginField::Username => {
                        if form.username.chars().count() < MAX_USERNAME_CHARS {
                            form.username.push(c);
                        }
                    }
                    LoginField::Password => {
                        if form.password.len() + c.len_utf8() <= MAX_PASSWORD_BYTES {
                            form.password.push(c);
                        }
                    }
                }
            }
        }
    }
    Vec::new()
}

fn chat_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    let Screen::Chat(chat) = &mut app.screen else {
        return Vec::new();
    };
    match chat.focus {
        Focus::List => list_key(app, key),
        Focus::Input => input_key(chat, key),
        Focus::Search => search_key(chat, key),
    }
}

fn list_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    let Screen::Chat(chat) = &mut app.screen else {
        return Vec::new();
    };
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => app.quit = true,
        KeyCode::Up | KeyCode::Char('k') => {
            chat.selected = chat.selected.saturating_sub(1);
            chat.chosen = true;
        }
        KeyCode::Down | KeyCode::Char('j') => {
            if chat.selected + 1 < chat.conversations.len() {
                chat.selected += 1;
            }
            chat.chosen = true;
        }
        KeyCode::Char('/') => {
            chat.focus = Focus::Search;
        }
        KeyCode::Tab | KeyCode::Right if chat.open.is_some() => chat.focus = Focus::Input,
        KeyCode::Enter => {
            if let Some(with) = chat
                .conversations
                .get(chat.selected)
                .map(|conversation| conversation.with.clone())
            {
                return open(chat, &with);
            }
        }
        _ => {}
    }
    Vec::new()
}

/// Opens the conversation with `with` and asks for its newest page.
fn open(chat: &mut Chat, with: &str) -> Vec<Effect> {
    chat.focus = Focus::Input;
    chat.chosen = true;
    if let Some(open) = chat
        .open
        .as_ref()
        .filter(|open| open.with.eq_ignore_ascii_case(with))
    {
        // Opening it again retries a first page that never came.
        if open.older != Older::Loading {
            return Vec::new();
        }
        return vec![Effect::History {
            with: open.with.clone(),
            before: None,
        }];
    }
    chat.open = Some(OpenConversation::new(with.to_string()));
    if chat.position(with).is_none() {
        chat.touch(with);
    }
    chat.selected = chat.position(with).unwrap_or(0);
    vec![Effect::History {
        with: with.to_string(),
        before: None,
    }]
}

fn input_key(chat: &mut Chat, key: KeyEvent) -> Vec<Effect> {
    match key.code {
        KeyCode::Esc | KeyCode::Tab => chat.focus = Focus::List,
        KeyCode::Enter => return send(chat),
        KeyCode::Backspace => {
            chat.input.pop();
        }
        KeyCode::PageUp => return scroll(chat, 10),
        KeyCode::Up => return scroll(chat, 1),
        KeyCode::PageDown => unscroll(chat, 10),
        KeyCode::Down => unscroll(chat, 1),
        KeyCode::End => unscroll(chat, usize::MAX),
        KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => chat.input.clear(),
        KeyCode::Char('f') if key.modifiers.contains(KeyModifiers::CONTROL) => {
            chat.focus = Focus::Search;
        }
        _ => {
            if let Some(c) = typed(&key) {
                if chat.input.len() + c.len_utf8() <= MAX_INPUT_BYTES {
                    chat.input.push(c);
                }
            }
        }
    }
    Vec::new()
}

fn send(chat: &mut Chat) -> Vec<Effect> {
    let Some(open) = chat.open.as_mut() else {
        return Vec::new();
    };
    if chat.input.trim().is_empty() {
        return Vec::new();
    }
    let text = std::mem::take(&mut chat.input);
    let local_id = chat.next_local_id;
    chat.next_local_id += 1;
    open.pending.push(Pending {
        local_id,
        text: text.clone(),
        failed: false,
    });
    // Sending brings the newest lines back into view.
    open.scroll_back = 0;
    let to = open.with.clone();
    vec![Effect::Send { to, text, local_id }]
}

/// Scrolls `lines` messages further back, asking for an older page when the view nears
/// the oldest loaded message.
fn scroll(chat: &mut Chat, lines: usize) -> Vec<Effect> {
    let Some(open) = chat.open.as_mut() else {
        return Vec::new();
    };
    let most = open.line_count().saturating_sub(1);
    open.scroll_back = open.scroll_back.saturating_add(lines).min(most);
    let above = open.line_count().saturating_sub(open.scroll_back + 1);
    match open.older {
        Older::Before(before) if above < HISTORY_PAGE as usize / 2 => {
            open.older = Older::LoadingBefore(before);
            vec![Effect::History {
                with: open.with.clone(),
                before: Some(before),
            }]
        }
        _ => Vec::new(),
    }
}

fn unscroll(chat: &mut Chat, lines: usize) {
    if let Some(open) = chat.open.as_mut() {
        open.scroll_back = open.scroll_back.saturating_sub(lines);
    }
}

fn search_key(chat: &mut Chat, key: KeyEvent) -> Vec<Effect> {
    let search = &mut chat.search;
    match key.code {
        KeyCode::Esc => {
            chat.focus = if chat.open.is_some() {
                Focus::Input
            } else {
                Focus::List
            };
        }
        KeyCode::Up => search.selected = search.selected.saturating_sub(1),
        KeyCode::Down => {
            if search.selected + 1 < search.results.len() {
                search.selected += 1;
            }
        }
        KeyCode::Backspace => {
            search.pattern.pop();
        }
        KeyCode::Enter => {
            let current = search.searched.as_deref() == Some(search.pattern.as_str());
            if current && !search.results.is_empty() {
                let with = search.results[search.selected.min(search.results.len() - 1)]
                    .username
                    .clone();
                return open(chat, &with);
            }
            return vec![Effect::Search {
                pattern: search_pattern(&search.pattern),
            }];
        }
        _ => {
            if let Some(c) = typed(&key) {
                // The server limits patterns to 256 bytes.
                if search.pattern.len() + c.len_utf8() <= 256 {
                    search.pattern.push(c);
                }
            }
        }
    }
    Vec::new()
}

/// What is asked of the server for the pattern typed: an empty one lists everyone.
fn search_pattern(typed: &str) -> String {
    match typed.trim() {
        "" => "*".to_string(),
        pattern => pattern.to_string(),
    }
}

fn pushed(app: &mut App, event: Event) -> Vec<Effect> {
    let Screen::Chat(chat) = &mut app.screen else {
        return Vec::new();
    };
    match event {
        Event::Message(message) => incoming(chat, message),
        Event::Receipt { id, status } => {
            if let Some(open) = chat.open.as_mut() {
                open.set_status(id, status);
            }
            Vec::new()
        }
        Event::SessionEnded { reason } => session_ended(app, Some(reason)),
    }
}

/// A message pushed to us: into the open conversation (and marked read), or counted
/// unread in the list.
fn incoming(chat: &mut Chat, message: Message) -> Vec<Effect> {
    chat.last_seen = Some(
        chat.last_seen
            .map_or(message.id, |seen| seen.max(message.id)),
    );
    let with = chat.other(&message).to_string();
    let to_me = chat.is_to_me(&message);
    if let Some(open) = chat.open.as_ref() {
        if open.with.eq_ignore_ascii_case(&with) && open.contains(message.id) {
            // Already shown (and marked) from a history page.
            return Vec::new();
        }
    }
    let conversation = chat.touch(&with);
    conversation.preview = message.text.clone();
    let unread = to_me && message.status < corvid_core::ReceiptStatus::Read;
    if unread {
        conversation.unread += 1;
    }
    let Some(open) = chat
        .open
        .as_mut()
        .filter(|open| open.with.eq_ignore_ascii_case(&with))
    else {
        return Vec::new();
    };
    let id = message.id;
    open.push(message);
    if unread {
        vec![Effect::MarkRead {
            with,
            ids: vec![id],
        }]
    } else {
        Vec::new()
    }
}

fn replied(app: &mut App, reply: Reply) -> Vec<Effect> {
    match reply {
        Reply::LoggedIn { username, unread } => {
            let mut chat = App::chat(app.server_label.clone(), username.clone());
            chat.notice = Some(Notice::info(format!(
                "logged in as {username}; {unread} unread message(s)"
            )));
            *app = chat;
            vec![Effect::Subscribe { after: None }]
        }
        Reply::LoginFailed { error } => {
            if let Screen::Login(form) = &mut app.screen {
                form.busy = false;
                form.password.clear();
                form.field = LoginField::Password;
            }
            app.notice = Some(Notice::error(error));
            Vec::new()
        }
        Reply::SessionEnded => session_ended(app, None),
        Reply::Failed { error } => {
            app.notice = Some(Notice::error(error));
            Vec::new()
        }
        other => {
            let Screen::Chat(chat) = &mut app.screen else {
                return Vec::new();
            };
            chat_replied(chat, &mut app.notice, other)
        }
    }
}

fn chat_replied(chat: &mut Chat, notice: &mut Option<Notice>, reply: Reply) -> Vec<Effect> {
    match reply {
        Reply::History { with, page } => {
            let Some(open) = chat
                .open
                .as_mut()
                .filter(|open| open.with.eq_ignore_ascii_case(&with))
            else {
                return Vec::new();
            };
            let unread: Vec<MessageId> = page
                .messages
                .iter()
                .filter(|message| {
                    message.to.eq_ignore_ascii_case(&chat.me)
                        && message.status < corvid_core::ReceiptStatus::Read
                })
                .map(|message| message.id)
                .collect();
            let newest = page.messages.last().cloned();
            let first_page = open.older == Older::Loading;
            open.prepend(page.messages, page.next_before);
            if first_page {
                // The server spells the name as registered: show it so.
                if let Some(newest) = &newest {
                    let other = chat.other(newest).to_string();
                    if let Some(open) = chat.open.as_mut() {
                        open.with = other.clone();
                    }
                    if let Some(conversation) = chat.conversation_mut(&with) {
                        conversation.with = other;
                        if conversation.preview.is_empty() {
                            conversation.preview = newest.text.clone();
                        }
                    }
                }
            }
            if unread.is_empty() {
                Vec::new()
            } else {
                vec![Effect::MarkRead { with, ids: unread }]
            }
        }
        Reply::HistoryFailed { with, error } => {
            if let Some(open) = chat
                .open
                .as_mut()
                .filter(|open| open.with.eq_ignore_ascii_case(&with))
            {
                // The next PgUp asks again (a first page is asked again by Enter).
                if let Older::LoadingBefore(before) = open.older {
                    open.older = Older::Before(before);
                }
            }
            *notice = Some(Notice::error(error));
            Vec::new()
        }
        Reply::MarkedRead { with, count } => {
            if let Some(conversation) = chat.conversation_mut(&with) {
                conversation.unread = conversation.unread.saturating_sub(count);
            }
            Vec::new()
        }
        Reply::Sent { local_id, message } => {
            let with = message.to.clone();
            if let Some(open) = chat.open.as_mut() {
                open.pending.retain(|pending| pending.local_id != local_id);
                if open.with.eq_ignore_ascii_case(&with) {
                    open.push(message.clone());
                }
            }
            let conversation = chat.touch(&with);
            conversation.preview = message.text;
            Vec::new()
        }
        Reply::SendFailed {
            to,
            local_id,
            error,
        } => {
            if let Some(open) = chat
                .open
                .as_mut()
                .filter(|open| open.with.eq_ignore_ascii_case(&to))
            {
                for pending in open.pending.iter_mut() {
                    if pending.local_id == local_id {
                        pending.failed = true;
                    }
                }
            }
            *notice = Some(Notice::error(error));
            Vec::new()
        }
        Reply::Accounts { pattern, page } => {
            let search = &mut chat.search;
            // An answer to a pattern since edited is still the best there is to show.
            search.searched = Some(if search_pattern(&search.pattern) == pattern {
                search.pattern.clone()
            } else {
                pattern
            });
            search.results = page.rows;
            search.more = page.next_cursor.is_some();
            search.selected = 0;
            Vec::new()
        }
        Reply::LoggedIn { .. }
        | Reply::LoginFailed { .. }
        | Reply::Failed { .. }
        | Reply::SessionEnded => Vec::new(),
    }
}

/// The session is over (ended by the server, or unknown to it): back to the login screen.
fn session_ended(app: &mut App, reason: Option<EndReason>) -> Vec<Effect> {
    let why = reason.map_or("the session has ended or expired", EndReason::describe);
    let mut login = App::login(app.server_label.clone());
    login.notice = Some(Notice::error(format!("{why}; log in again")));
    *app = login;
    vec![Effect::ForgetSession]
}
