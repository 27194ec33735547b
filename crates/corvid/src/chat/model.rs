//! The state of `corvid chat`: everything the screen shows, and nothing else.
//!
//! The screen is a pure function of an [`App`] (`view.rs`), and only `update.rs` changes
//! one, so both are tested without a terminal. The session token is not here: it stays
//! with the runtime, which is the only part that talks to the server.

use std::collections::VecDeque;

use corvid_core::{AccountRow, Message, MessageId, ReceiptStatus};

/// At most this many conversations are listed; the least recent go first. Their unread
/// messages stay unread on the server and come back with the next message or start.
pub const MAX_CONVERSATIONS: usize = 200;
/// At most this many messages of the open conversation are held; older ones are paged in
/// from the server again when scrolled to.
pub const MAX_LOADED: usize = 1000;
/// Messages asked for per history page.
pub const HISTORY_PAGE: u32 = 50;
/// Accounts asked for per search.
pub const SEARCH_PAGE: u32 = 50;
/// The longest text the input line holds, in bytes: the server's default message limit
/// (a server configured for less answers with its own error).
pub const MAX_INPUT_BYTES: usize = 4096;
/// The longest username (the product's rule) and password (its 128-byte limit).
pub const MAX_USERNAME_CHARS: usize = 32;
pub const MAX_PASSWORD_BYTES: usize = 128;

/// The whole state of the client.
#[derive(Clone, Debug)]
pub struct App {
    /// Where the client is connected, as shown on screen ("127.0.0.1:7070, wire").
    pub server_label: String,
    pub screen: Screen,
    /// A line for the user: the last error, or what just happened.
    pub notice: Option<Notice>,
    /// False while pushed events have stopped (the client is reconnecting).
    pub online: bool,
    /// True once the user asked to leave.
    pub quit: bool,
}

#[derive(Clone, Debug)]
pub enum Screen {
    Login(LoginForm),
    Chat(Box<Chat>),
}

/// The login screen's fields.
#[derive(Clone, Debug, Default)]
pub struct LoginForm {
    pub username: String,
    pub password: String,
    pub field: LoginField,
    /// A login request is under way; keys other than quit wait for it.
    pub busy: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoginField {
    #[default]
    Username,
    Password,
}

/// The logged-in screen: the conversation list, the open conversation, the input line.
#[derive(Clone, Debug)]
pub struct Chat {
    /// The logged-in user's name, as the server spells it.
    pub me: String,
    /// Most recent first.
    pub conversations: Vec<Conversation>,
    /// Index into `conversations` of the highlighted row.
    pub selected: usize,
    /// The user has moved the highlight (or opened a conversation): from then on it
    /// follows its row as rows move; before, it stays on the newest.
    pub chosen: bool,
    pub open: Option<OpenConversation>,
    pub focus: Focus,
    /// The message being typed to the open conversation.
    pub input: String,
    pub search: Search,
    /// The last message id seen in a pushed event, where a new subscription resumes.
    pub last_seen: Option<MessageId>,
    /// Numbers each send, to match the server's answer to the line shown as sending.
    pub next_local_id: u64,
}

/// Which part of the chat screen keys go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    List,
    Input,
    Search,
}

/// One row of the conversation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The other user's name.
    pub with: String,
    /// Messages from them not yet marked read.
    pub unread: u64,
    /// The newest message's text, for the list.
    pub preview: String,
}

/// The conversation on the right: a window of its history, newest at the bottom.
#[derive(Clone, Debug)]
pub struct OpenConversation {
    pub with: String,
    /// Stored messages in id order (which is the order they were sent), at most
    /// [`MAX_LOADED`].
    pub messages: VecDeque<Message>,
    /// Our lines the server has not stored (yet), shown below the messages.
    pub pending: Vec<Pending>,
    pub older: Older,
    /// How many of the newest lines (messages, then pending) are scrolled out below the
    /// bottom of the pane.
    pub scroll_back: usize,
}

/// A message of ours on its way, or one the server refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub local_id: u64,
    pub text: String,
    pub failed: bool,
}

/// What lies before the oldest loaded entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Older {
    /// The first page has not arrived yet.
    Loading,
    /// A page of older messages is on its way.
    LoadingBefore(MessageId),
    /// More messages exist before this id.
    Before(MessageId),
    /// This is the start of the conversation.
    None,
}

/// Finding people: the pattern being typed and the last answer.
#[derive(Clone, Debug, Default)]
pub struct Search {
    pub pattern: String,
    /// The pattern the shown results are for; `None` before the first search.
    pub searched: Option<String>,
    pub results: Vec<AccountRow>,
    /// More accounts match than were shown.
    pub more: bool,
    pub selected: usize,
}

/// A line at the bottom of the screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
}

impl Notice {
    pub fn info(text: impl Into<String>) -> Notice {
        Notice {
            text: text.into(),
            error: false,
        }
    }

    pub fn error(text: impl Into<String>) -> Notice {
        Notice {
            text: text.into(),
            error: true,
        }
    }
}

impl App {
    /// A client not logged in: the login screen.
    pub fn login(server_label: impl Into<String>) -> App {
        App {
            server_label: server_label.into(),
            screen: Screen::Login(LoginForm::default()),
            notice: None,
            online: true,
            quit: false,
        }
    }

    /// A client logged in as `me` (from a saved session or a login just made).
    pub fn chat(server_label: impl Into<String>, me: impl Into<String>) -> App {
        App {
            server_label: server_label.into(),
            screen: Screen::Chat(Box::new(Chat::new(me.into()))),
            notice: None,
            online: true,
            quit: false,
        }
    }

    pub fn chat_state(&self) -> Option<&Chat> {
        match &self.screen {
            Screen::Chat(chat) => Some(chat),
            Screen::Login(_) => None,
        }
    }
}

impl Chat {
    pub fn new(me: String) -> Chat {
        Chat {
            me,
            conversations: Vec::new(),
            selected: 0,
            chosen: false,
            open: None,
            focus: Focus::List,
            input: String::new(),
            search: Search::default(),
            last_seen: None,
            next_local_id: 1,
        }
    }

    /// The other user of a message in a conversation of ours.
    pub fn other<'a>(&self, message: &'a Message) -> &'a str {
        if message.from.eq_ignore_ascii_case(&self.me) {
            &message.to
        } else {
            &message.from
        }
    }

    /// True for a message sent to us (by someone else, or by ourselves to ourselves).
    pub fn is_to_me(&self, message: &Message) -> bool {
        message.to.eq_ignore_ascii_case(&self.me)
    }

    pub fn is_from_me(&self, message: &Message) -> bool {
        message.from.eq_ignore_ascii_case(&self.me)
    }

    pub fn position(&self, with: &str) -> Option<usize> {
        self.conversations
            .iter()
            .position(|conversation| conversation.with.eq_ignore_ascii_case(with))
    }

    pub fn conversation_mut(&mut self, with: &str) -> Option<&mut Conversation> {
        let index = self.position(with)?;
        self.conversations.get_mut(index)
    }

    /// Whether `with` is the open conversation.
    pub fn is_open(&self, with: &str) -> bool {
        self.open
            .as_ref()
            .is_some_and(|open| open.with.eq_ignore_ascii_case(with))
    }

    /// Moves the conversation with `with` to the top of the list (creating it), keeping
    /// the highlight on the row it was on, and the list within [`MAX_CONVERSATIONS`].
    pub fn touch(&mut self, with: &str) -> &mut Conversation {
        let highlighted = self
            .conversations
            .get(self.selected)
            .map(|conversation| conversation.with.clone());
        let conversation = match self.position(with) {
            Some(index) => self.conversations.remove(index),
            None => Conversation {
                with: with.to_string(),
                unread: 0,
                preview: String::new(),
            },
        };
        self.conversations.insert(0, conversation);
        while self.conversations.len() > MAX_CONVERSATIONS {
            // The least recent that is not open goes.
            let victim = (0..self.conversations.len())
                .rev()
                .find(|&index| !self.is_open(&self.conversations[index].with));
            match victim {
                Some(index) => {
                    self.conversations.remove(index);
                }
                None => break,
            }
        }
        self.selected = highlighted
            .filter(|_| self.chosen)
            .and_then(|name| self.position(&name))
            .unwrap_or(0);
        &mut self.conversations[0]
    }
}

impl OpenConversation {
    pub fn new(with: String) -> OpenConversation {
        OpenConversation {
            with,
            messages: VecDeque::new(),
            pending: Vec::new(),
            older: Older::Loading,
            scroll_back: 0,
        }
    }

    /// Messages and pending lines together.
    pub fn line_count(&self) -> usize {
        self.messages.len() + self.pending.len()
    }

    pub fn contains(&self, id: MessageId) -> bool {
        self.index_of(id).is_ok()
    }

    fn index_of(&self, id: MessageId) -> Result<usize, usize> {
        self.messages
            .binary_search_by_key(&id, |message| message.id)
    }

    /// Puts a message in its place by id (or ignores it if already shown), dropping the
    /// oldest past [`MAX_LOADED`].
    pub fn push(&mut self, message: Message) {
        let Err(at) = self.index_of(message.id) else {
            return;
        };
        if at == 0 && self.older != Older::None && !self.messages.is_empty() {
            // Older than the loaded window: it is paged in with its neighbours.
            return;
        }
        if self.scroll_back > 0 && at >= self.line_count() - self.scroll_back {
            // Keep the view still while the user reads further up.
            self.scroll_back += 1;
        }
        self.messages.insert(at, message);
        while self.messages.len() > MAX_LOADED {
            if let Some(oldest) = self.messages.pop_front() {
                if let Some(next) = self.messages.front() {
                    self.older = Older::Before(next.id);
                } else {
                    self.older = Older::Before(oldest.id);
                }
            }
        }
        self.scroll_back = self.scroll_back.min(self.line_count().saturating_sub(1));
    }

    /// Puts a page of older messages (oldest first) above the loaded ones; `next_before`
    /// is the server's cursor to the page before it.
    pub fn prepend(&mut self, page: Vec<Message>, next_before: Option<MessageId>) {
        let room = MAX_LOADED.saturating_sub(self.messages.len());
        let oldest_loaded = self.messages.front().map(|message| message.id);
        let fresh: Vec<Message> = page
            .into_iter()
            .filter(|message| oldest_loaded.is_none_or(|oldest| message.id < oldest))
            .collect();
        // Past the cap, the newest of the page are kept: they join the loaded window.
        let skip = fresh.len().saturating_sub(room);
        self.older = if skip > 0 {
            Older::Before(fresh[skip].id)
        } else {
            next_before.map_or(Older::None, Older::Before)
        };
        for message in fresh.into_iter().skip(skip).rev() {
            self.messages.push_front(message);
        }
    }

    /// Sets the receipt of one of our messages, if it is loaded. Statuses only move
    /// forward, so a late receipt never takes one back.
    pub fn set_status(&mut self, id: MessageId, status: ReceiptStatus) {
        if let Ok(index) = self.index_of(id) {
            let message = &mut self.messages[index];
            if status > message.status {
                message.status = status;
            }
        }
    }
}
