//! Conversions between the generated protobuf types and the core API, in both directions.
//!
//! Decoding is strict where the binary protocol is strict: a token that is not 16 bytes,
//! an enum number that is not defined, or a missing message field is [`Malformed`], which
//! clients see as `ErrorCode::Malformed`. Encoding cannot fail.

use corvid_core::{
    AccountRow, AccountsPage, ApiError, EndReason, ErrorCode, Event, HistoryPage, Message,
    MessageId, PatternSyntax, ReceiptStatus, Request, Response, SubscribeFrom, Token,
};

use crate::pb;
use crate::pb::subscribe_event::Event as PbEvent;

/// A protobuf message that does not make a valid request, response or event. The text
/// names what was wrong, for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed: {0}")]
pub struct Malformed(pub String);

impl From<Malformed> for ApiError {
    fn from(malformed: Malformed) -> ApiError {
        ApiError::new(ErrorCode::Malformed, malformed.to_string())
    }
}

/// A session token from its protobuf `bytes` field: exactly 16 bytes.
pub fn token(bytes: &[u8]) -> Result<Token, Malformed> {
    <[u8; 16]>::try_from(bytes)
        .map(Token)
        .map_err(|_| Malformed(format!("a token is 16 bytes, not {}", bytes.len())))
}

fn pattern_syntax(value: i32) -> Result<PatternSyntax, Malformed> {
    match pb::PatternSyntax::try_from(value) {
        Ok(pb::PatternSyntax::Glob) => Ok(PatternSyntax::Glob),
        Ok(pb::PatternSyntax::Regex) => Ok(PatternSyntax::Regex),
        Err(_) => Err(Malformed(format!("unknown pattern syntax {value}"))),
    }
}

fn pb_pattern_syntax(syntax: PatternSyntax) -> pb::PatternSyntax {
    match syntax {
        PatternSyntax::Glob => pb::PatternSyntax::Glob,
        PatternSyntax::Regex => pb::PatternSyntax::Regex,
    }
}

fn receipt_status(value: i32) -> Result<ReceiptStatus, Malformed> {
    match pb::ReceiptStatus::try_from(value) {
        Ok(pb::ReceiptStatus::Sent) => Ok(ReceiptStatus::Sent),
        Ok(pb::ReceiptStatus::Delivered) => Ok(ReceiptStatus::Delivered),
        Ok(pb::ReceiptStatus::Read) => Ok(ReceiptStatus::Read),
        Err(_) => Err(Malformed(format!("unknown receipt status {value}"))),
    }
}

fn pb_receipt_status(status: ReceiptStatus) -> pb::ReceiptStatus {
    match status {
        ReceiptStatus::Sent => pb::ReceiptStatus::Sent,
        ReceiptStatus::Delivered => pb::ReceiptStatus::Delivered,
        ReceiptStatus::Read => pb::ReceiptStatus::Read,
    }
}

fn end_reason(value: i32) -> Result<EndReason, Malformed> {
    match pb::EndReason::try_from(value) {
        Ok(pb::EndReason::LoggedOut) => Ok(EndReason::LoggedOut),
        Ok(pb::EndReason::ReplacedByNewLogin) => Ok(EndReason::ReplacedByNewLogin),
        Ok(pb::EndReason::AccountDeleted) => Ok(EndReason::AccountDeleted),
        Ok(pb::EndReason::Expired) => Ok(EndReason::Expired),
        Err(_) => Err(Malformed(format!("unknown session end reason {value}"))),
    }
}

fn pb_end_reason(reason: EndReason) -> pb::EndReason {
    match reason {
        EndReason::LoggedOut => pb::EndReason::LoggedOut,
        EndReason::ReplacedByNewLogin => pb::EndReason::ReplacedByNewLogin,
        EndReason::AccountDeleted => pb::EndReason::AccountDeleted,
        EndReason::Expired => pb::EndReason::Expired,
    }
}

/// The protobuf enum value of an error code (the numbers are the same).
pub fn pb_error_code(code: ErrorCode) -> pb::ErrorCode {
    pb::ErrorCode::try_from(i32::from(code.as_u16())).unwrap_or(pb::ErrorCode::Internal)
}

impl From<Message> for pb::Message {
    fn from(message: Message) -> pb::Message {
        pb::Message {
            id: message.id.0,
            sent_at: message.sent_at,
            status: pb_receipt_status(message.status).into(),
            sender: message.from,
            recipient: message.to,
            text: message.text,
        }
    }
}

impl TryFrom<pb::Message> for Message {
    type Error = Malformed;

    fn try_from(message: pb::Message) -> Result<Message, Malformed> {
        Ok(Message {
            id: MessageId(message.id),
            from: message.sender,
            to: message.recipient,
            text: message.text,
            sent_at: message.sent_at,
            status: receipt_status(message.status)?,
        })
    }
}

fn messages(list: Vec<pb::Message>) -> Result<Vec<Message>, Malformed> {
    list.into_iter().map(Message::try_from).collect()
}

fn pb_messages(list: Vec<Message>) -> Vec<pb::Message> {
    list.into_iter().map(pb::Message::from).collect()
}

fn ids(list: Vec<u64>) -> Vec<MessageId> {
    list.into_iter().map(MessageId).collect()
}

fn pb_ids(list: Vec<MessageId>) -> Vec<u64> {
    list.into_iter().map(|id| id.0).collect()
}

/// A request message of one RPC: it decodes into a core [`Request`].
pub trait RpcRequest: Sized {
    fn into_request(self) -> Result<Request, Malformed>;
}

/// A response message of one RPC: the core [`Response`] it carries, and back.
pub trait RpcResponse: Sized {
    /// This RPC's message for `response`, or `None` if the response belongs to
    /// another RPC.
    fn from_response(response: Response) -> Option<Self>;
    fn into_response(self) -> Result<Response, Malformed>;
}

impl RpcRequest for pb::PingRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::Ping)
    }
}

impl RpcRequest for pb::CreateAccountRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::CreateAccount {
            username: self.username,
            display_name: self.display_name,
            password: self.password,
        })
    }
}

impl RpcRequest for pb::LoginRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::Login {
            username: self.username,
            password: self.password,
        })
    }
}

impl RpcRequest for pb::LogoutRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::Logout {
            token: token(&self.token)?,
        })
    }
}

impl RpcRequest for pb::DeleteAccountRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::DeleteAccount {
            token: token(&self.token)?,
            password: self.password,
            force: self.force,
        })
    }
}

impl RpcRequest for pb::ListAccountsRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::ListAccounts {
            token: token(&self.token)?,
            pattern: self.pattern,
            syntax: pattern_syntax(self.syntax)?,
            limit: self.limit,
            cursor: self.cursor,
        })
    }
}

impl RpcRequest for pb::SendRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::Send {
            token: token(&self.token)?,
            to: self.to,
            text: self.text,
            client_id: self.client_id,
        })
    }
}

impl RpcRequest for pb::FetchUnreadRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::FetchUnread {
            token: token(&self.token)?,
            limit: self.limit,
        })
    }
}

impl RpcRequest for pb::MarkReadRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::MarkRead {
            token: token(&self.token)?,
            ids: ids(self.ids),
        })
    }
}

impl RpcRequest for pb::HistoryRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::History {
            token: token(&self.token)?,
            with: self.with_user,
            before: self.before.map(MessageId),
            limit: self.limit,
        })
    }
}

impl RpcRequest for pb::DeleteMessagesRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        Ok(Request::DeleteMessages {
            token: token(&self.token)?,
            ids: ids(self.ids),
        })
    }
}

impl RpcRequest for pb::SubscribeRequest {
    fn into_request(self) -> Result<Request, Malformed> {
        let from = match (self.after, self.from_unread) {
            (None, false) => SubscribeFrom::Now,
            (Some(after), false) => SubscribeFrom::After(MessageId(after)),
            (None, true) => SubscribeFrom::OldestUnread,
            (Some(_), true) => {
                return Err(Malformed(
                    "a subscription starts after an id or from the oldest unread, not both".into(),
                ))
            }
        };
        Ok(Request::Subscribe {
            token: token(&self.token)?,
            from,
        })
    }
}

/// A core request as the protobuf message of its RPC: what a client sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Ping(pb::PingRequest),
    CreateAccount(pb::CreateAccountRequest),
    Login(pb::LoginRequest),
    Logout(pb::LogoutRequest),
    DeleteAccount(pb::DeleteAccountRequest),
    ListAccounts(pb::ListAccountsRequest),
    Send(pb::SendRequest),
    FetchUnread(pb::FetchUnreadRequest),
    MarkRead(pb::MarkReadRequest),
    History(pb::HistoryRequest),
    DeleteMessages(pb::DeleteMessagesRequest),
    Subscribe(pb::SubscribeRequest),
}

impl From<Request> for Call {
    fn from(request: Request) -> Call {
        match request {
            Request::Ping => Call::Ping(pb::PingRequest {}),
            Request::CreateAccount {
                username,
                display_name,
                password,
            } => Call::CreateAccount(pb::CreateAccountRequest {
                username,
                display_name,
                password,
            }),
            Request::Login { username, password } => {
                Call::Login(pb::LoginRequest { username, password })
            }
            Request::Logout { token } => Call::Logout(pb::LogoutRequest {
                token: token.0.to_vec(),
            }),
            Request::DeleteAccount {
                token,
                password,
                force,
            } => Call::DeleteAccount(pb::DeleteAccountRequest {
                token: token.0.to_vec(),
                password,
                force,
            }),
            Request::ListAccounts {
                token,
                pattern,
                syntax,
                limit,
                cursor,
            } => Call::ListAccounts(pb::ListAccountsRequest {
                token: token.0.to_vec(),
                pattern,
                syntax: pb_pattern_syntax(syntax).into(),
                limit,
                cursor,
            }),
            Request::Send {
                token,
                to,
                text,
                client_id,
            } => Call::Send(pb::SendRequest {
                token: token.0.to_vec(),
                to,
                client_id,
                text,
            }),
            Request::FetchUnread { token, limit } => Call::FetchUnread(pb::FetchUnreadRequest {
                token: token.0.to_vec(),
                limit,
            }),
            Request::MarkRead { token, ids } => Call::MarkRead(pb::MarkReadRequest {
                token: token.0.to_vec(),
                ids: pb_ids(ids),
            }),
            Request::History {
                token,
                with,
                before,
                limit,
            } => Call::History(pb::HistoryRequest {
                token: token.0.to_vec(),
                with_user: with,
                before: before.map(|id| id.0),
                limit,
            }),
            Request::DeleteMessages { token, ids } => {
                Call::DeleteMessages(pb::DeleteMessagesRequest {
                    token: token.0.to_vec(),
                    ids: pb_ids(ids),
                })
            }
            Request::Subscribe { token, from } => Call::Subscribe(pb::SubscribeRequest {
                token: token.0.to_vec(),
                after: match from {
                    SubscribeFrom::After(after) => Some(after.0),
                    SubscribeFrom::Now | SubscribeFrom::OldestUnread => None,
                },
                from_unread: from == SubscribeFrom::OldestUnread,
            }),
        }
    }
}

impl Call {
    /// The protobuf encoding of the request message alone (no gRPC or HTTP/2 framing).
    pub fn encode_to_vec(&self) -> Vec<u8> {
        use prost::Message as _;
        match self {
            Call::Ping(m) => m.encode_to_vec(),
            Call::CreateAccount(m) => m.encode_to_vec(),
            Call::Login(m) => m.encode_to_vec(),
            Call::Logout(m) => m.encode_to_vec(),
            Call::DeleteAccount(m) => m.encode_to_vec(),
            Call::ListAccounts(m) => m.encode_to_vec(),
            Call::Send(m) => m.encode_to_vec(),
            Call::FetchUnread(m) => m.encode_to_vec(),
            Call::MarkRead(m) => m.encode_to_vec(),
            Call::History(m) => m.encode_to_vec(),
            Call::DeleteMessages(m) => m.encode_to_vec(),
            Call::Subscribe(m) => m.encode_to_vec(),
        }
    }
}

/// Implements [`RpcResponse`] for a response message that carries no field.
macro_rules! empty_response {
    ($message:ty, $response:expr, $pattern:pat) => {
        impl RpcResponse for $message {
            fn from_response(response: Response) -> Option<Self> {
                matches!(response, $pattern).then_some(Self {})
            }
            fn into_response(self) -> Result<Response, Malformed> {
                Ok($response)
            }
        }
    };
}

empty_response!(pb::PingResponse, Response::Pong, Response::Pong);
empty_response!(pb::LogoutResponse, Response::LoggedOut, Response::LoggedOut);
empty_response!(
    pb::DeleteAccountResponse,
    Response::AccountDeleted,
    Response::AccountDeleted
);

impl RpcResponse for pb::CreateAccountResponse {
    fn from_response(response: Response) -> Option<Self> {
        match response {
            Response::AccountCreated { username } => Some(Self { username }),
            _ => None,
        }
    }
    fn into_response(self) -> Result<Response, Malformed> {
        Ok(Response::AccountCreated {
            username: self.username,
        })
    }
}

impl RpcResponse for pb::LoginResponse {
    fn from_response(response: Response) -> Option<Self> {
        match response {
            Response::LoggedIn {
                token,
                username,
                unread,
            } => Some(Self {
                token: token.0.to_vec(),
                username,
                unread,
            }),
            _ => None,
        }
    }
    fn into_response(self) -> Result<Response, Malformed> {
        Ok(Response::LoggedIn {
            token: token(&self.token)?,
            username: self.username,
            unread: self.unread,
        })
    }
}

impl RpcResponse for pb::ListAccountsResponse {
    fn from_response(response: Response) -> Option<Self> {
        match response {
            Response::Accounts(page) => Some(Self {
                rows: page
                    .rows
                    .into_iter()
                    .map(|row| pb::AccountRow {
                        username: row.username,
                        display_name: row.display_name,
                        online: row.online,
                    })
                    .collect(),
                next_cursor: page.next_cursor,
            }),
            _ => None,
        }
    }
    fn into_response(self) -> Result<Response, Malformed> {
        Ok(Response::Accounts(AccountsPage {
            rows: self
                .rows
                .into_iter()
                .map(|row| AccountRow {
                    username: row.username,
                    display_name: row.display_name,
                    online: row.online,
                })
                .collect(),
            next_cursor: self.next_cursor,
        }))
    }
}

impl RpcResponse for pb::SendResponse {
    fn from_response(response: Response) -> Option<Self> {
        match response {
            Response::Sent { message, duplicate } => Some(Self {
                duplicate,
                message: Some(message.into()),
            }),
            _ => None,
        }
    }
    fn into_response(self) -> Result<Response, Malformed> {
        let message = self
            .message
            .ok_or_else(|| Malformed("a send response without its message".into()))?;
        Ok(Response::Sent {
            message: message.try_into()?,
            duplicate: self.duplicate,
        })
    }
}

impl RpcResponse for pb::FetchUnreadResponse {
    fn from_response(response: Response) -> Option<Self> {
        match response {
            Response::Messages { messages } => Some(Self {
                messages: pb_messages(messages),
            }),
            _ => None,
        }
    }
    fn into_response(self) -> Result<Response, Malformed> {
        Ok(Response::Messages {
            messages: messages(self.messages)?,
        })
    }
}

impl RpcResponse for pb::MarkReadResponse {
    fn from_response(response: Response) -> Option<Self> {
        match response {
            Response::MarkedRead { count } => Some(Self { count }),
            _ => None,
        }
    }
    fn into_response(self) -> Result<Response, Malformed> {
        Ok(Response::MarkedRead { count: self.count })
    }
}

impl RpcResponse for pb::HistoryResponse {
    fn from_response(response: Response) -> Option<Self> {
        match response {
            Response::History(page) => Some(Self {
                messages: pb_messages(page.messages),
                next_before: page.next_before.map(|id| id.0),
            }),
            _ => None,
        }
    }
    fn into_response(self) -> Result<Response, Malformed> {
        Ok(Response::History(HistoryPage {
            messages: messages(self.messages)?,
            next_before: self.next_before.map(MessageId),
        }))
    }
}

impl RpcResponse for pb::DeleteMessagesResponse {
    fn from_response(response: Response) -> Option<Self> {
        match response {
            Response::MessagesDeleted { count } => Some(Self { count }),
            _ => None,
        }
    }
    fn into_response(self) -> Result<Response, Malformed> {
        Ok(Response::MessagesDeleted { count: self.count })
    }
}

/// One item of a `Subscribe` stream, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamItem {
    /// The first item: the newest inbox id when the subscription started.
    Subscribed {
        last_id: MessageId,
    },
    Event(Event),
}

impl From<StreamItem> for pb::SubscribeEvent {
    fn from(item: StreamItem) -> pb::SubscribeEvent {
        let event = match item {
            StreamItem::Subscribed { last_id } => {
                PbEvent::Subscribed(pb::Subscribed { last_id: last_id.0 })
            }
            StreamItem::Event(Event::Message(message)) => PbEvent::Message(message.into()),
            StreamItem::Event(Event::Receipt { id, status }) => PbEvent::Receipt(pb::Receipt {
                id: id.0,
                status: pb_receipt_status(status).into(),
            }),
            StreamItem::Event(Event::SessionEnded { reason }) => {
                PbEvent::SessionEnded(pb::SessionEnded {
                    reason: pb_end_reason(reason).into(),
                })
            }
        };
        pb::SubscribeEvent { event: Some(event) }
    }
}

impl TryFrom<pb::SubscribeEvent> for StreamItem {
    type Error = Malformed;

    fn try_from(item: pb::SubscribeEvent) -> Result<StreamItem, Malformed> {
        match item.event {
            Some(PbEvent::Subscribed(subscribed)) => Ok(StreamItem::Subscribed {
                last_id: MessageId(subscribed.last_id),
            }),
            Some(PbEvent::Message(message)) => {
                Ok(StreamItem::Event(Event::Message(message.try_into()?)))
            }
            Some(PbEvent::Receipt(receipt)) => Ok(StreamItem::Event(Event::Receipt {
                id: MessageId(receipt.id),
                status: receipt_status(receipt.status)?,
            })),
            Some(PbEvent::SessionEnded(ended)) => Ok(StreamItem::Event(Event::SessionEnded {
                reason: end_reason(ended.reason)?,
            })),
            None => Err(Malformed("an empty subscribe event".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: Token = Token([9; 16]);

    fn message(id: u64, status: ReceiptStatus) -> Message {
        Message {
            id: MessageId(id),
            from: "alice".into(),
            to: "bob".into(),
            text: "hi bob".into(),
            sent_at: 1_700_000_000_000,
            status,
        }
    }

    /// Every request, with every optional field both present and absent.
    fn requests() -> Vec<Request> {
        vec![
            Request::Ping,
            Request::CreateAccount {
                username: "alice".into(),
                display_name: "Alice Ä.".into(),
                password: "correct horse".into(),
            },
            Request::Login {
                username: "alice".into(),
                password: "pw".into(),
            },
            Request::Logout { token: TOKEN },
            Request::DeleteAccount {
                token: TOKEN,
                password: "pw".into(),
                force: true,
            },
            Request::ListAccounts {
                token: TOKEN,
                pattern: "a*".into(),
                syntax: PatternSyntax::Glob,
                limit: None,
                cursor: None,
            },
            Request::ListAccounts {
                token: TOKEN,
                pattern: "^a".into(),
                syntax: PatternSyntax::Regex,
                limit: Some(0),
                cursor: Some(String::new()),
            },
            Request::Send {
                token: TOKEN,
                to: "bob".into(),
                text: "hi".into(),
                client_id: u64::MAX,
            },
            Request::FetchUnread {
                token: TOKEN,
                limit: Some(5),
            },
            Request::MarkRead {
                token: TOKEN,
                ids: vec![MessageId(1), MessageId(u64::MAX)],
            },
            Request::History {
                token: TOKEN,
                with: "bob".into(),
                before: Some(MessageId(0)),
                limit: None,
            },
            Request::DeleteMessages {
                token: TOKEN,
                ids: vec![],
            },
            Request::Subscribe {
                token: TOKEN,
                from: SubscribeFrom::After(MessageId(41)),
            },
            Request::Subscribe {
                token: TOKEN,
                from: SubscribeFrom::Now,
            },
            Request::Subscribe {
                token: TOKEN,
                from: SubscribeFrom::OldestUnread,
            },
        ]
    }

    fn decode(call: Call) -> Result<Request, Malformed> {
        match call {
            Call::Ping(m) => m.into_request(),
            Call::CreateAccount(m) => m.into_request(),
            Call::Login(m) => m.into_request(),
            Call::Logout(m) => m.into_request(),
            Call::DeleteAccount(m) => m.into_request(),
            Call::ListAccounts(m) => m.into_request(),
            Call::Send(m) => m.into_request(),
            Call::FetchUnread(m) => m.into_request(),
            Call::MarkRead(m) => m.into_request(),
            Call::History(m) => m.into_request(),
            Call::DeleteMessages(m) => m.into_request(),
            Call::Subscribe(m) => m.into_request(),
        }
    }

    #[test]
    fn every_request_round_trips() {
        for request in requests() {
            assert_eq!(decode(Call::from(request.clone())), Ok(request));
        }
    }

    fn round_trip<M: RpcResponse>(response: Response) {
        let message = M::from_response(response.clone()).expect("its own response");
        assert_eq!(message.into_response(), Ok(response));
    }

    #[test]
    fn every_response_round_trips_through_its_rpc_message_only() {
        round_trip::<pb::PingResponse>(Response::Pong);
        round_trip::<pb::CreateAccountResponse>(Response::AccountCreated {
            username: "Alice".into(),
        });
        round_trip::<pb::LoginResponse>(Response::LoggedIn {
            token: TOKEN,
            username: "alice".into(),
            unread: 3,
        });
        round_trip::<pb::LogoutResponse>(Response::LoggedOut);
        round_trip::<pb::DeleteAccountResponse>(Response::AccountDeleted);
        round_trip::<pb::ListAccountsResponse>(Response::Accounts(AccountsPage {
            rows: vec![AccountRow {
                username: "bob".into(),
                display_name: "Bob".into(),
                online: true,
            }],
            next_cursor: Some("bob".into()),
        }));
        round_trip::<pb::SendResponse>(Response::Sent {
            message: message(42, ReceiptStatus::Sent),
            duplicate: true,
        });
        round_trip::<pb::FetchUnreadResponse>(Response::Messages {
            messages: vec![
                message(1, ReceiptStatus::Delivered),
                message(2, ReceiptStatus::Read),
            ],
        });
        round_trip::<pb::MarkReadResponse>(Response::MarkedRead { count: 7 });
        round_trip::<pb::HistoryResponse>(Response::History(HistoryPage {
            messages: vec![message(5, ReceiptStatus::Read)],
            next_before: Some(MessageId(5)),
        }));
        round_trip::<pb::HistoryResponse>(Response::History(HistoryPage::default()));
        round_trip::<pb::DeleteMessagesResponse>(Response::MessagesDeleted { count: 0 });

        assert_eq!(pb::PingResponse::from_response(Response::LoggedOut), None);
        assert_eq!(
            pb::SendResponse::from_response(Response::MarkedRead { count: 1 }),
            None
        );
    }

    #[test]
    fn every_stream_item_round_trips() {
        let items = [
            StreamItem::Subscribed {
                last_id: MessageId(41),
            },
            StreamItem::Event(Event::Message(message(42, ReceiptStatus::Sent))),
            StreamItem::Event(Event::Receipt {
                id: MessageId(42),
                status: ReceiptStatus::Delivered,
            }),
            StreamItem::Event(Event::SessionEnded {
                reason: EndReason::Expired,
            }),
            StreamItem::Event(Event::SessionEnded {
                reason: EndReason::ReplacedByNewLogin,
            }),
        ];
        for item in items {
            let encoded = pb::SubscribeEvent::from(item.clone());
            assert_eq!(StreamItem::try_from(encoded), Ok(item));
        }
    }

    #[test]
    fn malformed_fields_are_malformed() {
        for length in [0, 15, 17, 32] {
            let request = pb::SendRequest {
                token: vec![1; length],
                to: "bob".into(),
                client_id: 0,
                text: "hi".into(),
            };
            let err = ApiError::from(request.into_request().unwrap_err());
            assert_eq!(err.code, ErrorCode::Malformed);
            assert!(err.message.contains("16 bytes"), "{}", err.message);
        }
        let request = pb::ListAccountsRequest {
            token: TOKEN.0.to_vec(),
            pattern: "*".into(),
            syntax: 2,
            limit: None,
            cursor: None,
        };
        assert!(request.into_request().is_err(), "unknown pattern syntax");
        let both = pb::SubscribeRequest {
            token: TOKEN.0.to_vec(),
            after: Some(1),
            from_unread: true,
        };
        assert!(
            both.into_request().is_err(),
            "after and from_unread at once"
        );
        let mut bad_status = pb::Message::from(message(1, ReceiptStatus::Sent));
        bad_status.status = 3;
        assert!(Message::try_from(bad_status).is_err());
        let bad_reason = pb::SubscribeEvent {
            event: Some(PbEvent::SessionEnded(pb::SessionEnded { reason: -1 })),
        };
        assert!(StreamItem::try_from(bad_reason).is_err());
        assert!(StreamItem::try_from(pb::SubscribeEvent { event: None }).is_err());
        let no_message = pb::SendResponse {
            duplicate: false,
            message: None,
        };
        assert!(no_message.into_response().is_err());
        let short_token = pb::LoginResponse {
            token: vec![1, 2, 3],
            username: "a".into(),
            unread: 0,
        };
        assert!(short_token.into_response().is_err());
    }

    #[test]
    fn enums_have_the_numbers_of_the_binary_protocol() {
        for code in ErrorCode::ALL {
            let pb_code = pb_error_code(code);
            assert_eq!(pb_code as i32, i32::from(code.as_u16()), "{code}");
            let proto_name = format!("ERROR_CODE_{}", code.name().to_uppercase());
            assert_eq!(pb_code.as_str_name(), proto_name);
        }
        for status in [
            ReceiptStatus::Sent,
            ReceiptStatus::Delivered,
            ReceiptStatus::Read,
        ] {
            assert_eq!(pb_receipt_status(status) as i32, status as i32);
        }
        for value in 0..4u8 {
            let reason = EndReason::from_u8(value).unwrap();
            assert_eq!(pb_end_reason(reason) as i32, i32::from(value));
        }
        assert_eq!(pb_pattern_syntax(PatternSyntax::Glob) as i32, 0);
        assert_eq!(pb_pattern_syntax(PatternSyntax::Regex) as i32, 1);
    }
}
