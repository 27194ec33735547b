//! How results look: human lines and JSON objects for messages, receipts, accounts and
//! session ends, and UTC timestamps without a date-time dependency.

use corvid_core::{AccountRow, EndReason, Message, MessageId, ReceiptStatus};
use serde_json::{json, Value};

/// `2026-11-21 17:30:02`: milliseconds since the epoch as a UTC date and time.
pub fn format_time(ms: u64) -> String {
    let (date, (hour, minute, second), _) = split_time(ms);
    format!("{date} {hour:02}:{minute:02}:{second:02}")
}

/// `2026-11-21T17:30:02.123Z`: the same instant in RFC 3339, for JSON.
pub fn format_rfc3339(ms: u64) -> String {
    let (date, (hour, minute, second), millis) = split_time(ms);
    format!("{date}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

fn split_time(ms: u64) -> (String, (u64, u64, u64), u64) {
    let seconds = ms / 1000;
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        (of_day / 3600, of_day % 3600 / 60, of_day % 60),
        ms % 1000,
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Text from other people, made safe for a terminal: control characters (escape
/// sequences, line breaks) are shown escaped instead of acting on the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `[2026-11-21 17:30:02] alice → bob #42: hi`. With `status`, the receipt follows the id:
/// `#42 (read)`.
pub fn message_line(message: &Message, show_status: bool) -> String {
    let status = if show_status {
        format!(" ({})", message.status.name())
    } else {
        String::new()
    };
    format!(
        "[{}] {} → {} #{}{status}: {}",
        format_time(message.sent_at),
        printable(&message.from),
        printable(&message.to),
        message.id.0,
        printable(&message.text)
    )
}

pub fn message_json(message: &Message) -> Value {
    json!({
        "type": "message",
        "id": message.id.0,
        "from": message.from,
        "to": message.to,
        "text": message.text,
        "sent_at": message.sent_at,
        "time": format_rfc3339(message.sent_at),
        "status": message.status.name(),
    })
}

/// `#42 read`.
pub fn receipt_line(id: MessageId, status: ReceiptStatus) -> String {
    format!("#{} {}", id.0, status.name())
}

pub fn receipt_json(id: MessageId, status: ReceiptStatus) -> Value {
    json!({ "type": "receipt", "id": id.0, "status": status.name() })
}

pub fn end_reason_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::LoggedOut => "logged_out",
        EndReason::ReplacedByNewLogin => "replaced_by_new_login",
        EndReason::AccountDeleted => "account_deleted",
        EndReason::Expired => "expired",
    }
}

pub fn session_ended_line(reason: EndReason) -> String {
    format!("session ended: {}", reason.describe())
}

pub fn session_ended_json(reason: EndReason) -> Value {
    json!({
        "type": "session_ended",
        "reason": end_reason_name(reason),
        "description": reason.describe(),
    })
}

/// Account rows in aligned columns: username, online or not, display name.
pub fn account_lines(rows: &[AccountRow]) -> Vec<String> {
    let width = rows
        .iter()
        .map(|row| row.username.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|row| {
            let presence = if row.online { "online" } else { "-" };
            let line = format!(
                "{:width$}  {presence:6}  {}",
                printable(&row.username),
                printable(&row.display_name)
            );
            line.trim_end().to_string()
        })
        .collect()
}

pub fn account_json(row: &AccountRow) -> Value {
    json!({
        "username": row.username,
        "display_name": row.display_name,
        "online": row.online,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_utc() {
        let cases = [
            (0, "1970-01-01 00:00:00", "1970-01-01T00:00:00.000Z"),
            (
                951_782_400_000,
                "2000-02-29 00:00:00",
                "2000-02-29T00:00:00.000Z",
            ),
            (
                1_795_282_202_123,
                "2026-11-21 17:30:02",
                "2026-11-21T17:30:02.123Z",
            ),
            (
                4_107_542_399_999,
                "2100-02-28 23:59:59",
                "2100-02-28T23:59:59.999Z",
            ),
            (
                253_402_300_799_000,
                "9999-12-31 23:59:59",
                "9999-12-31T23:59:59.000Z",
            ),
        ];
        for (ms, human, rfc) in cases {
            assert_eq!(format_time(ms), human, "{ms}");
            assert_eq!(format_rfc3339(ms), rfc, "{ms}");
        }
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        let mut previous = civil_from_days(0);
        for days in 1..200_000 {
            let (year, month, day) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = (year, month, day) == (py, pm, pd + 1);
            let next_month = (year, month, day) == (py, pm + 1, 1);
            let next_year = (year, month, day) == (py + 1, 1, 1) && (pm, pd) == (12, 31);
            assert!(
                next_day || next_month || next_year,
                "{previous:?} -> {:?}",
                (year, month, day)
            );
            previous = (year, month, day);
        }
    }

    fn message() -> Message {
        Message {
            id: MessageId(42),
            from: "alice".to_string(),
            to: "bob".to_string(),
            text: "hi\x1b[2J\nthere".to_string(),
            sent_at: 1_795_282_202_000,
            status: ReceiptStatus::Read,
        }
    }

    #[test]
    fn a_message_line_escapes_control_characters() {
        assert_eq!(
            message_line(&message(), false),
            "[2026-11-21 17:30:02] alice → bob #42: hi\\u{1b}[2J\\nthere"
        );
        assert_eq!(
            message_line(&message(), true),
            "[2026-11-21 17:30:02] alice → bob #42 (read): hi\\u{1b}[2J\\nthere"
        );
    }

    #[test]
    fn message_json_keeps_the_text_as_sent() {
        let value = message_json(&message());
        assert_eq!(value["text"], "hi\x1b[2J\nthere");
        assert_eq!(value["id"], 42);
        assert_eq!(value["status"], "read");
        assert_eq!(value["time"], "2026-11-21T17:30:02.000Z");
    }

    #[test]
    fn accounts_line_up() {
        let rows = [
            AccountRow {
                username: "al".to_string(),
                display_name: "Al".to_string(),
                online: true,
            },
            AccountRow {
                username: "bobby".to_string(),
                display_name: String::new(),
                online: false,
            },
        ];
        assert_eq!(account_lines(&rows), ["al     online  Al", "bobby  -"]);
    }
}
