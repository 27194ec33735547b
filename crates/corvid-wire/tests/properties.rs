//! Property tests: any frame round-trips, and no byte string makes the decoder panic or
//! break its consumption rules (checked by `fuzzing::check`).

use bytes::BytesMut;
use corvid_core::{
    AccountRow, AccountsPage, ApiError, EndReason, ErrorCode, Event, HistoryPage, Message,
    MessageId, PatternSyntax, ReceiptStatus, Request, Response, SubscribeFrom, Token,
};
use corvid_wire::{decode, encode, fuzzing, Frame};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

fn string() -> impl Strategy<Value = String> {
    // Any Unicode, including multi-byte characters and control characters.
    proptest::string::string_regex("(?s).{0,24}").unwrap()
}

fn token() -> impl Strategy<Value = Token> {
    any::<[u8; 16]>().prop_map(Token)
}

fn message_id() -> impl Strategy<Value = MessageId> {
    any::<u64>().prop_map(MessageId)
}

fn ids() -> impl Strategy<Value = Vec<MessageId>> {
    vec(message_id(), 0..20)
}

fn status() -> impl Strategy<Value = ReceiptStatus> {
    select(vec![
        ReceiptStatus::Sent,
        ReceiptStatus::Delivered,
        ReceiptStatus::Read,
    ])
}

fn message() -> impl Strategy<Value = Message> {
    (
        message_id(),
        string(),
        string(),
        string(),
        any::<u64>(),
        status(),
    )
        .prop_map(|(id, from, to, text, sent_at, status)| Message {
            id,
            from,
            to,
            text,
            sent_at,
            status,
        })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        (string(), string(), string()).prop_map(|(username, display_name, password)| {
            Request::CreateAccount {
                username,
                display_name,
                password,
            }
        }),
        (string(), string()).prop_map(|(username, password)| Request::Login { username, password }),
        token().prop_map(|token| Request::Logout { token }),
        (token(), string(), any::<bool>()).prop_map(|(token, password, force)| {
            Request::DeleteAccount {
                token,
                password,
                force,
            }
        }),
        (
            token(),
            string(),
            select(vec![PatternSyntax::Glob, PatternSyntax::Regex]),
            any::<Option<u32>>(),
            proptest::option::of(string()),
        )
            .prop_map(|(token, pattern, syntax, limit, cursor)| {
                Request::ListAccounts {
                    token,
                    pattern,
                    syntax,
                    limit,
                    cursor,
                }
            }),
        (token(), string(), string(), any::<u64>()).prop_map(|(token, to, text, client_id)| {
            Request::Send {
                token,
                to,
                text,
                client_id,
            }
        }),
        (token(), any::<Option<u32>>())
            .prop_map(|(token, limit)| Request::FetchUnread { token, limit }),
        (token(), ids()).prop_map(|(token, ids)| Request::MarkRead { token, ids }),
        (
            token(),
            string(),
            proptest::option::of(message_id()),
            any::<Option<u32>>()
        )
            .prop_map(|(token, with, before, limit)| Request::History {
                token,
                with,
                before,
                limit,
            }),
        (token(), ids()).prop_map(|(token, ids)| Request::DeleteMessages { token, ids }),
        (
            token(),
            prop_oneof![
                Just(SubscribeFrom::Now),
                message_id().prop_map(SubscribeFrom::After),
                Just(SubscribeFrom::OldestUnread),
            ]
        )
            .prop_map(|(token, from)| Request::Subscribe { token, from }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let row = (string(), string(), any::<bool>()).prop_map(|(username, display_name, online)| {
        AccountRow {
            username,
            display_name,
            online,
        }
    });
    prop_oneof![
        Just(Response::Pong),
        string().prop_map(|username| Response::AccountCreated { username }),
        (token(), string(), any::<u64>()).prop_map(|(token, username, unread)| {
            Response::LoggedIn {
                token,
                username,
                unread,
            }
        }),
        Just(Response::LoggedOut),
        Just(Response::AccountDeleted),
        (vec(row, 0..6), proptest::option::of(string()))
            .prop_map(|(rows, next_cursor)| Response::Accounts(AccountsPage { rows, next_cursor })),
        (message(), any::<bool>())
            .prop_map(|(message, duplicate)| Response::Sent { message, duplicate }),
        vec(message(), 0..6).prop_map(|messages| Response::Messages { messages }),
        any::<u64>().prop_map(|count| Response::MarkedRead { count }),
        (vec(message(), 0..6), proptest::option::of(message_id())).prop_map(
            |(messages, next_before)| Response::History(HistoryPage {
                messages,
                next_before
            })
        ),
        any::<u64>().prop_map(|count| Response::MessagesDeleted { count }),
        message_id().prop_map(|last_id| Response::Subscribed { last_id }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        message().prop_map(Event::Message),
        (message_id(), status()).prop_map(|(id, status)| Event::Receipt { id, status }),
        select(vec![
            EndReason::LoggedOut,
            EndReason::ReplacedByNewLogin,
            EndReason::AccountDeleted,
            EndReason::Expired,
        ])
        .prop_map(|reason| Event::SessionEnded { reason }),
    ]
}

fn api_error() -> impl Strategy<Value = ApiError> {
    let leader = proptest::option::of("[a-z0-9.:]{1,40}");
    (
        select(ErrorCode::ALL.to_vec()),
        any::<u64>(),
        string(),
        leader,
    )
        .prop_map(|(code, detail, message, leader)| ApiError {
            code,
            detail,
            message,
            // Only `not_leader` carries a leader, and only its binary-protocol address.
            leader: leader.filter(|_| code == ErrorCode::NotLeader).map(|wire| {
                corvid_core::LeaderAddrs {
                    wire: Some(wire),
                    grpc: None,
                }
            }),
        })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (1..=u32::MAX, request()).prop_map(|(id, request)| Frame::Request { id, request }),
        (1..=u32::MAX, response()).prop_map(|(id, response)| Frame::Response { id, response }),
        (any::<u32>(), api_error()).prop_map(|(id, error)| Frame::Error { id, error }),
        event().prop_map(Frame::Event),
    ]
}

fn encoded(frames: &[Frame]) -> BytesMut {
    let mut buf = BytesMut::new();
    for frame in frames {
        encode(frame, &mut buf).unwrap();
    }
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_sequence_of_frames_round_trips(frames in vec(frame(), 1..6)) {
        let mut buf = encoded(&frames);
        for frame in &frames {
            prop_assert_eq!(decode(&mut buf, usize::MAX), Ok(Some(frame.clone())));
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decode(&mut buf, usize::MAX), Ok(None));
    }

    #[test]
    fn arbitrary_bytes_never_break_the_decoder(bytes in vec(any::<u8>(), 0..512)) {
        fuzzing::check(&bytes);
    }

    #[test]
    fn mutated_valid_frames_never_break_the_decoder(
        frames in vec(frame(), 1..4),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        // Random byte edits to real frames reach deeper into the body parsers than
        // random bytes do, since the length prefix and opcode usually stay plausible.
        let mut bytes = encoded(&frames).to_vec();
        for (at, value, kind) in edits {
            let at = at.index(bytes.len().max(1));
            match kind {
                0 if at < bytes.len() => bytes[at] = value,
                1 => bytes.insert(at.min(bytes.len()), value),
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => {}
            }
        }
        fuzzing::check(&bytes);
    }
}
