//! The web API's JSON messages (docs/web-api.md): a request in, its answer, error or the
//! pushed events out, and their conversion to and from the core `Request`/`Response`/
//! `Event`. Errors reach JSON in exactly one function, [`error`].

use serde::Deserialize;
use serde_json::{json, Value};

use corvid_core::{
    AccountRow, ApiError, EndReason, ErrorCode, Event, Message, MessageId, PatternSyntax, Request,
    Response, SubscribeFrom, Token,
};

/// The largest request id: the largest whole number a JavaScript number holds exactly.
pub const MAX_REQUEST_ID: u64 = (1 << 53) - 1;

/// A request that could not be turned into a core request: the error to answer, and the
/// request id to answer it under when the request had a usable one.
#[derive(Debug)]
pub struct Rejected {
    pub id: Option<u64>,
    pub error: ApiError,
}

/// Parses one text message into its request id and core request.
pub fn parse_request(text: &str) -> Result<(u64, Request), Rejected> {
    let malformed = |id, message: String| Rejected {
        id,
        error: ApiError::new(ErrorCode::Malformed, message),
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|err| malformed(None, format!("the message is not JSON: {err}")))?;
    let Some(object) = value.as_object() else {
        return Err(malformed(None, "a request is a JSON object".into()));
    };
    let id = match object.get("id").and_then(Value::as_u64) {
        Some(id) if (1..=MAX_REQUEST_ID).contains(&id) => id,
        _ => {
            return Err(malformed(
                None,
                "a request needs an `id`: a whole number from 1 to 2^53-1".into(),
            ))
        }
    };
    let Some(op) = object.get("op").and_then(Value::as_str) else {
        return Err(malformed(Some(id), "a request needs an `op` string".into()));
    };
    if !OPERATIONS.contains(&op) {
        let op: String = op.chars().take(64).collect();
        return Err(malformed(Some(id), format!("unknown operation `{op}`")));
    }
    let operation = Operation::deserialize(&value)
        .map_err(|err| malformed(Some(id), format!("`{op}`: {err}")))?;
    Ok((id, operation.into_request()))
}

/// Every operation's name, as the `op` field gives it.
pub const OPERATIONS: [&str; 12] = [
    "ping",
    "create_account",
    "login",
    "logout",
    "delete_account",
    "list_accounts",
    "send",
    "fetch_unread",
    "mark_read",
    "history",
    "delete_messages",
    "subscribe",
];

/// A request as JSON names it; fields the operation does not know are ignored, so that a
/// newer client's additions do not break an older server.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Operation {
    Ping,
    CreateAccount {
        username: String,
        #[serde(default)]
        display_name: String,
        password: String,
    },
    Login {
        username: String,
        password: String,
    },
    Logout {
        token: WebToken,
    },
    DeleteAccount {
        token: WebToken,
        password: String,
        #[serde(default)]
        force: bool,
    },
    ListAccounts {
        token: WebToken,
        #[serde(default = "every_account")]
        pattern: String,
        #[serde(default)]
        syntax: Syntax,
        limit: Option<u32>,
        cursor: Option<String>,
    },
    Send {
        token: WebToken,
        to: String,
        text: String,
        client_id: u64,
    },
    FetchUnread {
        token: WebToken,
        limit: Option<u32>,
    },
    MarkRead {
        token: WebToken,
        ids: Vec<u64>,
    },
    History {
        token: WebToken,
        with: String,
        before: Option<u64>,
        limit: Option<u32>,
    },
    DeleteMessages {
        token: WebToken,
        ids: Vec<u64>,
    },
    Subscribe {
        token: WebToken,
        #[serde(default)]
        from: From,
    },
}

fn every_account() -> String {
    "*".into()
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Syntax {
    #[default]
    Glob,
    Regex,
}

/// `"now"`, `"oldest_unread"` or `{"after": 41}`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum From {
    #[default]
    Now,
    OldestUnread,
    After(u64),
}

/// A session token as 32 hexadecimal digits.
struct WebToken(Token);

impl<'de> Deserialize<'de> for WebToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<WebToken, D::Error> {
        let text = String::deserialize(deserializer)?;
        Token::from_hex(&text)
            .map(WebToken)
            .ok_or_else(|| serde::de::Error::custom("a token is 32 hexadecimal digits"))
    }
}

fn message_ids(ids: Vec<u64>) -> Vec<MessageId> {
    ids.into_iter().map(MessageId).collect()
}

impl Operation {
    fn into_request(self) -> Request {
        match self {
            Operation::Ping => Request::Ping,
            Operation::CreateAccount {
                username,
                display_name,
                password,
            } => Request::CreateAccount {
                username,
                display_name,
                password,
            },
            Operation::Login { username, password } => Request::Login { username, password },
            Operation::Logout { token } => Request::Logout { token: token.0 },
            Operation::DeleteAccount {
                token,
                password,
                force,
            } => Request::DeleteAccount {
                token: token.0,
                password,
                force,
            },
            Operation::ListAccounts {
                token,
                pattern,
                syntax,
                limit,
                cursor,
            } => Request::ListAccounts {
                token: token.0,
                pattern,
                syntax: match syntax {
                    Syntax::Glob => PatternSyntax::Glob,
                    Syntax::Regex => PatternSyntax::Regex,
                },
                limit,
                cursor,
            },
            Operation::Send {
                token,
                to,
                text,
                client_id,
            } => Request::Send {
                token: token.0,
                to,
                text,
                client_id,
            },
            Operation::FetchUnread { token, limit } => Request::FetchUnread {
                token: token.0,
                limit,
            },
            Operation::MarkRead { token, ids } => Request::MarkRead {
                token: token.0,
                ids: message_ids(ids),
            },
            Operation::History {
                token,
                with,
                before,
                limit,
            } => Request::History {
                token: token.0,
                with,
                before: before.map(MessageId),
                limit,
            },
            Operation::DeleteMessages { token, ids } => Request::DeleteMessages {
                token: token.0,
                ids: message_ids(ids),
            },
            Operation::Subscribe { token, from } => Request::Subscribe {
                token: token.0,
                from: match from {
                    From::Now => SubscribeFrom::Now,
                    From::OldestUnread => SubscribeFrom::OldestUnread,
                    From::After(id) => SubscribeFrom::After(MessageId(id)),
                },
            },
        }
    }
}

/// `{"id": 7, "result": {"type": ..., ...}}`.
pub fn response(id: u64, response: &Response) -> String {
    let result = match response {
        Response::Pong => json!({"type": "pong"}),
        Response::AccountCreated { username } => {
            json!({"type": "account_created", "username": username})
        }
        Response::LoggedIn {
            token,
            username,
            unread,
        } => json!({
            "type": "logged_in",
            "token": token.to_hex(),
            "username": username,
            "unread": unread,
        }),
        Response::LoggedOut => json!({"type": "logged_out"}),
        Response::AccountDeleted => json!({"type": "account_deleted"}),
        Response::Accounts(page) => json!({
            "type": "accounts",
            "accounts": page.rows.iter().map(account).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        }),
        Response::Sent { message, duplicate } => json!({
            "type": "sent",
            "message": self::message(message),
            "duplicate": duplicate,
        }),
        Response::Messages { messages } => json!({
            "type": "messages",
            "messages": messages.iter().map(message).collect::<Vec<_>>(),
        }),
        Response::MarkedRead { count } => json!({"type": "marked_read", "count": count}),
        Response::History(page) => json!({
            "type": "history",
            "messages": page.messages.iter().map(message).collect::<Vec<_>>(),
            "next_before": page.next_before.map(|id| id.0),
        }),
        Response::MessagesDeleted { count } => {
            json!({"type": "messages_deleted", "count": count})
        }
        Response::Subscribed { last_id } => json!({"type": "subscribed", "last_id": last_id.0}),
    };
    json!({"id": id, "result": result}).to_string()
}

/// `{"id": 7, "error": {"code": 20, "name": "unknown_recipient", ...}}`; `"id": null` when
/// the request had no usable id. The one place an error takes its JSON form.
pub fn error(id: Option<u64>, error: &ApiError) -> String {
    json!({
        "id": id,
        "error": {
            "code": error.code.as_u16(),
            "name": error.code.name(),
            "message": error.message,
            "detail": error.detail,
        },
    })
    .to_string()
}

/// `{"event": {"type": ..., ...}}`.
pub fn event(event: &Event) -> String {
    let event = match event {
        Event::Message(message) => json!({"type": "message", "message": self::message(message)}),
        Event::Receipt { id, status } => {
            json!({"type": "receipt", "id": id.0, "status": status.name()})
        }
        Event::SessionEnded { reason } => json!({
            "type": "session_ended",
            "reason": end_reason(*reason),
            "message": reason.describe(),
        }),
    };
    json!({ "event": event }).to_string()
}

fn message(message: &Message) -> Value {
    json!({
        "id": message.id.0,
        "from": message.from,
        "to": message.to,
        "text": message.text,
        "sent_at": message.sent_at,
        "status": message.status.name(),
    })
}

fn account(row: &AccountRow) -> Value {
    json!({
        "username": row.username,
        "display_name": row.display_name,
        "online": row.online,
    })
}

fn end_reason(reason: EndReason) -> &'static str {
    match reason {
        EndReason::LoggedOut => "logged_out",
        EndReason::ReplacedByNewLogin => "replaced_by_new_login",
        EndReason::AccountDeleted => "account_deleted",
        EndReason::Expired => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> Rejected {
        parse_request(text).expect_err(text)
    }

    #[test]
    fn every_operation_parses_from_its_documented_example() {
        let token = "00112233445566778899aabbccddeeff";
        let examples = [
            r#"{"id":1,"op":"ping"}"#.to_string(),
            r#"{"id":1,"op":"create_account","username":"alice","password":"correct horse"}"#
                .to_string(),
            r#"{"id":1,"op":"login","username":"alice","password":"correct horse"}"#.to_string(),
            format!(r#"{{"id":1,"op":"logout","token":"{token}"}}"#),
            format!(
                r#"{{"id":1,"op":"delete_account","token":"{token}","password":"p","force":true}}"#
            ),
            format!(r#"{{"id":1,"op":"list_accounts","token":"{token}","pattern":"a*"}}"#),
            format!(
                r#"{{"id":1,"op":"send","token":"{token}","to":"bob","text":"hi","client_id":5}}"#
            ),
            format!(r#"{{"id":1,"op":"fetch_unread","token":"{token}","limit":10}}"#),
            format!(r#"{{"id":1,"op":"mark_read","token":"{token}","ids":[1,2]}}"#),
            format!(r#"{{"id":1,"op":"history","token":"{token}","with":"bob","before":9}}"#),
            format!(r#"{{"id":1,"op":"delete_messages","token":"{token}","ids":[3]}}"#),
            format!(r#"{{"id":1,"op":"subscribe","token":"{token}","from":{{"after":41}}}}"#),
        ];
        for (example, op) in examples.iter().zip(OPERATIONS) {
            assert!(example.contains(&format!("\"op\":\"{op}\"")), "{example}");
            let (id, _) = parse_request(example).unwrap_or_else(|e| panic!("{example}: {e:?}"));
            assert_eq!(id, 1);
        }
        let (_, request) = parse_request(&format!(
            r#"{{"id":2,"op":"subscribe","token":"{token}","from":"oldest_unread"}}"#
        ))
        .unwrap();
        assert!(matches!(
            request,
            Request::Subscribe {
                from: SubscribeFrom::OldestUnread,
                ..
            }
        ));
    }

    #[test]
    fn bad_requests_are_malformed_with_the_id_when_there_is_one() {
        for text in [
            "",
            "{",
            "[1]",
            "null",
            r#"{"op":"ping"}"#,
            r#"{"id":0,"op":"ping"}"#,
            r#"{"id":-1,"op":"ping"}"#,
            r#"{"id":9007199254740992,"op":"ping"}"#,
        ] {
            let rejected = rejected(text);
            assert_eq!(rejected.id, None, "{text}");
            assert_eq!(rejected.error.code, ErrorCode::Malformed, "{text}");
        }
        let unknown = rejected(r#"{"id":3,"op":"fly"}"#);
        assert_eq!(unknown.id, Some(3));
        assert!(unknown.error.message.contains("unknown operation `fly`"));
        let no_op = rejected(r#"{"id":4}"#);
        assert_eq!(no_op.id, Some(4));
        let bad_token = rejected(r#"{"id":5,"op":"logout","token":"abc"}"#);
        assert!(
            bad_token.error.message.contains("32 hexadecimal"),
            "{:?}",
            bad_token
        );
        let missing = rejected(r#"{"id":6,"op":"login","username":"a"}"#);
        assert!(missing.error.message.contains("password"), "{:?}", missing);
    }

    #[test]
    fn the_web_api_document_has_a_section_for_every_operation() {
        let document = include_str!("../../../../docs/web-api.md");
        for op in OPERATIONS {
            assert!(
                document.contains(&format!("\n### {op}\n")),
                "docs/web-api.md does not document `{op}`"
            );
        }
    }

    #[test]
    fn an_error_carries_the_binary_protocols_code_and_name() {
        let text = error(Some(9), &ApiError::from(ErrorCode::UnknownRecipient));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["id"], 9);
        assert_eq!(value["error"]["code"], 20);
        assert_eq!(value["error"]["name"], "unknown_recipient");
    }
}
