//! What `corvid chat` draws: a pure function from an [`App`] to a frame.
//!
//! Wide terminals show the conversation list beside the open conversation; narrow ones
//! show one of the two, whichever has the keys. The last two rows are a status line and
//! the keys that work right now.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::model::{App, Chat, Focus, LoginField, LoginForm, Older, OpenConversation, Screen};
use crate::output::{format_time, printable};

/// Below this size nothing useful fits; the screen says so instead.
pub const MIN_WIDTH: u16 = 30;
pub const MIN_HEIGHT: u16 = 8;
/// From this width on, the list and the conversation are side by side.
pub const SIDE_BY_SIDE_WIDTH: u16 = 60;
/// The conversation list's width when side by side.
const LIST_WIDTH: u16 = 26;

const KEYS_LOGIN: &str = "Tab next field · Enter log in · Esc quit";
const KEYS_LIST: &str = "↑↓ choose · Enter open · / find people · Tab write · q quit";
const KEYS_INPUT: &str = "Enter send · PgUp/PgDn scroll · Ctrl-F find · Esc list · Ctrl-C quit";
const KEYS_SEARCH: &str = "Enter search, then open · ↑↓ choose · Esc back · Ctrl-C quit";
/// The same keys, shorter, for terminals narrower than the long lines.
const KEYS_LOGIN_SHORT: &str = "Tab field · Enter log in · Esc quit";
const KEYS_LIST_SHORT: &str = "↑↓ Enter open · / find · q quit";
const KEYS_INPUT_SHORT: &str = "Enter send · PgUp/Dn · ^F find · Esc";
const KEYS_SEARCH_SHORT: &str = "Enter search/open · ↑↓ · Esc back";

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

fn highlight() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// Draws the whole screen for `app`.
pub fn view(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!("Make the terminal at least {MIN_WIDTH}×{MIN_HEIGHT}. Ctrl-C quits.");
        frame.render_widget(
            Paragraph::new(wrap(&text, area.width.into(), area.width.into()).join("\n")),
            area,
        );
        return;
    }
    let [main, status, keys] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let (long, short) = match &app.screen {
        Screen::Login(form) => {
            login(app, form, frame, main);
            (KEYS_LOGIN, KEYS_LOGIN_SHORT)
        }
        Screen::Chat(chat) => {
            chat_screen(chat, frame, main);
            match chat.focus {
                Focus::List => (KEYS_LIST, KEYS_LIST_SHORT),
                Focus::Input => (KEYS_INPUT, KEYS_INPUT_SHORT),
                Focus::Search => (KEYS_SEARCH, KEYS_SEARCH_SHORT),
            }
        }
    };
    let keys_text = if long.width() <= usize::from(area.width) {
        long
    } else {
        short
    };
    frame.render_widget(status_line(app), status);
    frame.render_widget(Paragraph::new(Line::styled(keys_text, dim())), keys);
}

fn status_line(app: &App) -> Paragraph<'static> {
    if let Some(notice) = &app.notice {
        let style = if notice.error {
            Style::new().fg(Color::Red)
        } else {
            Style::new().fg(Color::Green)
        };
        return Paragraph::new(Line::styled(printable(&notice.text), style));
    }
    let mut spans = Vec::new();
    if let Some(chat) = app.chat_state() {
        spans.push(Span::styled(
            printable(&chat.me),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(" on "));
    }
    spans.push(Span::raw(app.server_label.clone()));
    if !app.online {
        spans.push(Span::styled(" · offline", Style::new().fg(Color::Red)));
    }
    Paragraph::new(Line::from(spans))
}

fn login(app: &App, form: &LoginForm, frame: &mut Frame, area: Rect) {
    let width = area.width.min(56);
    let height = area.height.min(9);
    let boxed = area.centered(Constraint::Length(width), Constraint::Length(height));
    let block = Block::bordered().title(" Log in to Corvid ");
    let inner = block.inner(boxed);
    frame.render_widget(block, boxed);
    let field = |label: &str, value: String, active: bool| {
        let style = if active {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        Line::from(vec![
            Span::styled(format!("{label:<10}"), style),
            Span::raw(value),
        ])
    };
    let lines = vec![
        field("Server", app.server_label.clone(), false),
        Line::raw(""),
        field(
            "Username",
            printable(&form.username),
            form.field == LoginField::Username,
        ),
        field(
            "Password",
            "•".repeat(form.password.chars().count()),
            form.field == LoginField::Password,
        ),
        Line::raw(""),
        Line::styled("No account? corvid register NAME", dim()),
    ];
    frame.render_widget(Paragraph::new(lines), inner);
    if !form.busy {
        let (row, typed) = match form.field {
            LoginField::Username => (2, printable(&form.username).width()),
            LoginField::Password => (3, form.password.chars().count()),
        };
        let x = inner.x + 10 + u16::try_from(typed).unwrap_or(u16::MAX);
        if row < inner.height && x < inner.right() {
            frame.set_cursor_position((x, inner.y + row));
        }
    }
}

fn chat_screen(chat: &Chat, frame: &mut Frame, area: Rect) {
    let [panes, input] = Layout::vertical([Constraint::Min(1), Constraint::Length(3)]).areas(area);
    if area.width >= SIDE_BY_SIDE_WIDTH {
        let [list, right] =
            Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(1)]).areas(panes);
        conversation_list(chat, frame, list);
        right_pane(chat, frame, right);
    } else if chat.focus == Focus::List {
        conversation_list(chat, frame, panes);
    } else {
        right_pane(chat, frame, panes);
    }
    input_box(chat, frame, input);
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(title);
    if focused {
        block.border_style(Style::new().fg(Color::Cyan))
    } else {
        block
    }
}

fn conversation_list(chat: &Chat, frame: &mut Frame, area: Rect) {
    let block = pane_block(" Conversations ".to_string(), chat.focus == Focus::List);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    if chat.conversations.is_empty() {
        let text = "No conversations yet. Press / to find people.";
        let lines: Vec<Line> = wrap(text, width, width)
            .into_iter()
            .map(Line::raw)
            .collect();
        frame.render_widget(Paragraph::new(lines).style(dim()), inner);
        return;
    }
    let height = usize::from(inner.height);
    // Keep the highlighted row in view.
    let first = chat.selected.saturating_sub(height.saturating_sub(1));
    let lines: Vec<Line> = chat
        .conversations
        .iter()
        .enumerate()
        .skip(first)
        .take(height)
        .map(|(index, conversation)| {
            let count = if conversation.unread > 0 {
                format!(" {}", conversation.unread)
            } else {
                String::new()
            };
            // The highlight is also a mark, for terminals that show no reverse video.
            let highlighted = index == chat.selected && chat.focus == Focus::List;
            let marker = if highlighted {
                "›"
            } else if chat.is_open(&conversation.with) {
                "▸"
            } else {
                " "
            };
            let name_width = width.saturating_sub(count.width() + 1);
            let name = fit(&printable(&conversation.with), name_width);
            let gap = " ".repeat(name_width.saturating_sub(name.width()));
            let mut style = Style::new();
            if conversation.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            if highlighted {
                style = style.patch(highlight());
            }
            Line::from(vec![
                Span::raw(marker),
                Span::raw(name),
                Span::raw(gap),
                Span::styled(count, Style::new().fg(Color::Yellow)),
            ])
            .style(style)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn right_pane(chat: &Chat, frame: &mut Frame, area: Rect) {
    if chat.focus == Focus::Search {
        search_results(chat, frame, area);
    } else if let Some(open) = &chat.open {
        conversation(chat, open, frame, area);
    } else {
        let block = pane_block(" Corvid ".to_string(), false);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let width = usize::from(inner.width);
        let text = "Choose a conversation (↑↓, Enter) or find people (/).";
        let lines: Vec<Line> = wrap(text, width, width)
            .into_iter()
            .map(Line::raw)
            .collect();
        frame.render_widget(Paragraph::new(lines).style(dim()), inner);
    }
}

fn search_results(chat: &Chat, frame: &mut Frame, area: Rect) {
    let search = &chat.search;
    let block = pane_block(" Find people ".to_string(), true);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    let mut lines: Vec<Line> = Vec::new();
    match &search.searched {
        None => {
            let text = "Type a pattern below and press Enter: al* finds names starting with al, * finds everyone. Online people are marked.";
            lines.extend(wrap(text, width, width).into_iter().map(Line::raw));
            frame.render_widget(Paragraph::new(lines).style(dim()), inner);
            return;
        }
        Some(pattern) if search.results.is_empty() => {
            let text = format!("No one matches {}.", printable(pattern));
            lines.extend(wrap(&text, width, width).into_iter().map(Line::raw));
        }
        Some(_) => {
            let name_width = search
                .results
                .iter()
                .map(|row| printable(&row.username).width())
                .max()
                .unwrap_or(0)
                .min(width / 2);
            let height = usize::from(inner.height).saturating_sub(1);
            let first = search.selected.saturating_sub(height.saturating_sub(1));
            for (index, row) in search.results.iter().enumerate().skip(first).take(height) {
                let name = fit(&printable(&row.username), name_width);
                let gap = " ".repeat(name_width.saturating_sub(name.width()));
                let presence = if row.online {
                    Span::styled("online ", Style::new().fg(Color::Green))
                } else {
                    Span::styled("-      ", dim())
                };
                let rest = width.saturating_sub(name_width + 11);
                let marker = if index == search.selected { "›" } else { " " };
                let mut line = Line::from(vec![
                    Span::raw(marker),
                    Span::raw(name),
                    Span::raw(gap),
                    Span::raw("  "),
                    presence,
                    Span::raw(" "),
                    Span::raw(fit(&printable(&row.display_name), rest)),
                ]);
                if index == search.selected {
                    line = line.style(highlight());
                }
                lines.push(line);
            }
            if search.more {
                lines.push(Line::styled("More match: narrow the pattern.", dim()));
            }
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The open conversation, newest at the bottom, wrapped to the pane.
fn conversation(chat: &Chat, open: &OpenConversation, frame: &mut Frame, area: Rect) {
    let mut title = format!(" {} ", printable(&open.with));
    if open.scroll_back > 0 {
        title.push_str(&format!("· {} newer below ", open.scroll_back));
    }
    let block = pane_block(title, chat.focus == Focus::Input);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    let height = usize::from(inner.height);
    if width == 0 || height == 0 {
        return;
    }
    // Lines are built from the bottom of the view upward until the pane is full.
    let total = open.line_count();
    let bottom = total.saturating_sub(open.scroll_back);
    let mut lines: Vec<Line> = Vec::new();
    for index in (0..bottom).rev() {
        if lines.len() >= height {
            break;
        }
        let mut message_lines = if index < open.messages.len() {
            message_lines(chat, &open.messages[index], width)
        } else {
            let pending = &open.pending[index - open.messages.len()];
            let (tag, style) = if pending.failed {
                ("not sent", Style::new().fg(Color::Red))
            } else {
                ("sending…", dim())
            };
            entry_lines("--:--", &chat.me, true, &pending.text, (tag, style), width)
        };
        message_lines.reverse();
        lines.extend(message_lines);
    }
    if lines.len() < height {
        let top = match open.older {
            Older::Loading => "loading…",
            Older::LoadingBefore(_) => "loading older messages…",
            Older::Before(_) => "older messages: PgUp",
            Older::None if total == 0 => "no messages yet: say hello",
            Older::None => "start of the conversation",
        };
        lines.push(Line::styled(fit(top, width), dim()));
    }
    lines.truncate(height);
    lines.reverse();
    // Bottom-aligned: empty rows above a short conversation.
    let offset = u16::try_from(height - lines.len()).unwrap_or(0);
    let target = Rect {
        y: inner.y + offset,
        height: inner.height - offset,
        ..inner
    };
    frame.render_widget(Paragraph::new(lines), target);
}

fn message_lines(chat: &Chat, message: &corvid_core::Message, width: usize) -> Vec<Line<'static>> {
    let time = format_time(message.sent_at);
    let clock = time.get(11..16).unwrap_or("--:--");
    let mine = chat.is_from_me(message);
    // Receipts matter to the sender: shown on our own messages.
    let tag = if mine {
        let style = match message.status {
            corvid_core::ReceiptStatus::Read => Style::new().fg(Color::Green),
            _ => dim(),
        };
        (message.status.name(), style)
    } else {
        ("", Style::new())
    };
    entry_lines(clock, &message.from, mine, &message.text, tag, width)
}

/// `12:30 alice: text (read)`, wrapped with continuation lines indented under the text.
fn entry_lines(
    clock: &str,
    from: &str,
    mine: bool,
    text: &str,
    (tag, tag_style): (&str, Style),
    width: usize,
) -> Vec<Line<'static>> {
    let name = printable(from);
    let name_style = if mine {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
    };
    let prefix = format!("{clock} {name}: ");
    let indent = 6.min(width.saturating_sub(1));
    let tail = if tag.is_empty() {
        String::new()
    } else {
        format!(" ({tag})")
    };
    let body = format!("{}{tail}", printable(text));
    let first_width = width.saturating_sub(prefix.width()).max(1);
    let wrapped = wrap(&body, first_width, width.saturating_sub(indent).max(1));
    let count = wrapped.len();
    wrapped
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let mut spans = Vec::new();
            if index == 0 {
                spans.push(Span::styled(format!("{clock} "), dim()));
                spans.push(Span::styled(name.clone(), name_style));
                spans.push(Span::raw(": "));
            } else {
                spans.push(Span::raw(" ".repeat(indent)));
            }
            // The receipt, at the end of the last line, gets its colour.
            if index + 1 == count && !tail.is_empty() && chunk.ends_with(&tail) {
                let text_part = &chunk[..chunk.len() - tail.len()];
                spans.push(Span::raw(text_part.to_string()));
                spans.push(Span::styled(tail.clone(), tag_style));
            } else {
                spans.push(Span::raw(chunk));
            }
            Line::from(spans)
        })
        .collect()
}

fn input_box(chat: &Chat, frame: &mut Frame, area: Rect) {
    let (title, text, focused) = match chat.focus {
        Focus::Search => (
            " Find people: pattern (* ?) ".to_string(),
            chat.search.pattern.as_str(),
            true,
        ),
        Focus::Input => {
            let to = chat
                .open
                .as_ref()
                .map(|open| printable(&open.with))
                .unwrap_or_default();
            (format!(" Message to {to} "), chat.input.as_str(), true)
        }
        Focus::List => (" Message ".to_string(), chat.input.as_str(), false),
    };
    let block = pane_block(title, focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    if width == 0 || inner.height == 0 {
        return;
    }
    let shown = printable(text);
    // The end of a long line stays in view, where the typing happens.
    let visible = tail_fitting(&shown, width.saturating_sub(1));
    if !focused && text.is_empty() {
        let hint = if chat.open.is_some() {
            "Tab to write"
        } else {
            "open a conversation to write"
        };
        frame.render_widget(Paragraph::new(Line::styled(fit(hint, width), dim())), inner);
        return;
    }
    frame.render_widget(Paragraph::new(visible.clone()), inner);
    if focused {
        let x = inner.x + u16::try_from(visible.width()).unwrap_or(0);
        frame.set_cursor_position((x.min(inner.right().saturating_sub(1)), inner.y));
    }
}

/// `text` cut to at most `width` columns, with `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// The longest end of `text` that fits in `width` columns.
fn tail_fitting(text: &str, width: usize) -> String {
    let mut used = 0;
    let mut start = text.len();
    for (index, c) in text.char_indices().rev() {
        let w = c.width().unwrap_or(0);
        if used + w > width {
            break;
        }
        used += w;
        start = index;
    }
    text[start..].to_string()
}

/// Splits `text` into lines of at most `first` columns for the first and `rest` for the
/// others, breaking after a space when there is one in the line, else anywhere.
pub fn wrap(text: &str, first: usize, rest: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut used = 0;
    let mut limit = first.max(1);
    // Where the last space in `line` ends, to break there.
    let mut last_space: Option<usize> = None;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > limit && c == ' ' {
            // A space where the line ends is the break itself.
            lines.push(line.trim_end().to_string());
            line = String::new();
            used = 0;
            limit = rest.max(1);
            last_space = None;
            continue;
        }
        if used + w > limit && !line.is_empty() {
            let carried = match last_space {
                // A word longer than a whole line is broken instead of carried.
                Some(at) if at < line.len() && line[at..].width() < rest => line.split_off(at),
                _ => String::new(),
            };
            lines.push(line.trim_end().to_string());
            line = carried;
            used = line.width();
            limit = rest.max(1);
            last_space = None;
        }
        line.push(c);
        used += w;
        if c == ' ' {
            last_space = Some(line.len());
        }
    }
    lines.push(line.trim_end().to_string());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_breaks_at_spaces_and_keeps_every_word() {
        assert_eq!(wrap("hello there world", 11, 11), ["hello there", "world"]);
        assert_eq!(wrap("abcdefghij", 4, 3), ["abcd", "efg", "hij"]);
        assert_eq!(wrap("", 5, 5), [""]);
        assert_eq!(wrap("a b", 5, 5), ["a b"]);
        assert_eq!(fit("alexander", 5), "alex…");
        assert_eq!(fit("al", 5), "al");
        assert_eq!(tail_fitting("hello world", 5), "world");
    }
}
