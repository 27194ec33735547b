//! The property the fuzzer checks, and sample frames that seed its corpus and the tests.
//!
//! [`check`] is called by `fuzz/fuzz_targets/decode.rs` and by the test that replays the
//! committed corpus, so a crash found by the fuzzer stays fixed.
//!
//! Running the fuzzer needs `cargo install cargo-fuzz`; on a stable toolchain,
//! `RUSTC_BOOTSTRAP=1` lets it pass the sanitizer flags it needs. From `crates/corvid-wire`:
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run -O decode -- -max_total_time=60
//! RUSTC_BOOTSTRAP=1 cargo fuzz cmin -O decode -- -use_counters=0   # keep the corpus small
//! cargo run -p corvid-wire --example write_fuzz_seeds              # re-add the seeds
//! ```

use bytes::BytesMut;
use corvid_core::{
    AccountRow, AccountsPage, ApiError, EndReason, ErrorCode, Event, HistoryPage, Message,
    MessageId, PatternSyntax, ReceiptStatus, Request, Response, SubscribeFrom, Token,
};

use crate::error::DecodeError;
use crate::frame::{decode, encode, Frame, DEFAULT_MAX_FRAME, LENGTH_PREFIX};
use crate::hello::{ClientHello, ServerHello, HELLO_LEN};

/// Where the error code sits in an error frame: after the length, opcode and request id.
const ERROR_CODE_OFFSET: usize = LENGTH_PREFIX + 1 + 4;

/// Decodes `data` as a stream of frames and panics if the codec misbehaves.
///
/// For every frame decoded, its encoding must be the bytes it came from (except an unknown
/// error code, which becomes [`ErrorCode::Internal`]) and must decode to the same frame. A
/// malformed frame must be consumed whole; an incomplete or fatal one must consume nothing.
/// The first eight bytes are also tried as either hello.
pub fn check(data: &[u8]) {
    if let Some(bytes) = data.first_chunk::<HELLO_LEN>() {
        if let Ok(hello) = ClientHello::decode(*bytes) {
            assert_eq!(
                &hello.encode(),
                bytes,
                "client hello re-encodes differently"
            );
        }
        if let Ok(hello) = ServerHello::decode(*bytes) {
            assert_eq!(
                &hello.encode(),
                bytes,
                "server hello re-encodes differently"
            );
        }
    }

    let mut src = BytesMut::from(data);
    let mut offset = 0;
    loop {
        let before = src.len();
        let result = decode(&mut src, DEFAULT_MAX_FRAME);
        let consumed = before - src.len();
        match result {
            Ok(Some(frame)) => check_frame(&frame, &data[offset..offset + consumed]),
            Ok(None) => {
                assert_eq!(consumed, 0, "an incomplete frame was consumed");
                return;
            }
            Err(DecodeError::Malformed(malformed)) => {
                let frame = &data[offset..offset + consumed];
                assert!(consumed >= 9, "a malformed frame was not consumed whole");
                assert_eq!(malformed.opcode, frame[LENGTH_PREFIX]);
            }
            Err(fatal) => {
                assert!(fatal.is_fatal());
                assert_eq!(consumed, 0, "a frame with a bad length was consumed");
                return;
            }
        }
        offset += consumed;
    }
}

fn check_frame(frame: &Frame, original: &[u8]) {
    let mut encoded = BytesMut::new();
    if let Err(err) = encode(frame, &mut encoded) {
        panic!("a decoded frame could not be encoded: {err}");
    }
    if encoded[..] != original[..] {
        // The one lossy mapping: an error code this version does not know.
        let mut expected = original.to_vec();
        let code = ErrorCode::Internal.as_u16().to_be_bytes();
        expected[ERROR_CODE_OFFSET..ERROR_CODE_OFFSET + 2].copy_from_slice(&code);
        assert!(
            matches!(frame, Frame::Error { error, .. } if error.code == ErrorCode::Internal),
            "{frame:?} re-encodes to different bytes"
        );
        assert_eq!(
            encoded[..],
            expected[..],
            "{frame:?} re-encodes differently"
        );
    }
    match decode(&mut encoded, usize::MAX) {
        Ok(Some(again)) => assert_eq!(&again, frame, "encode then decode changed the frame"),
        other => panic!("an encoded frame did not decode: {other:?}"),
    }
    assert!(
        encoded.is_empty(),
        "decoding left bytes of an encoded frame"
    );
}

/// A token whose bytes are 00 01 .. 0f, easy to spot in a hex dump.
pub fn sample_token() -> Token {
    Token(std::array::from_fn(|i| i as u8))
}

/// The message the samples and the documentation's examples use.
pub fn sample_message() -> Message {
    Message {
        id: MessageId(42),
        from: "alice".into(),
        to: "bob".into(),
        text: "hi bob".into(),
        sent_at: 1_700_000_000_000,
        status: ReceiptStatus::Sent,
    }
}

/// At least one frame of every opcode, with optional fields both present and absent,
/// each with a short name. Seeds the fuzz corpus and the round-trip tests.
pub fn samples() -> Vec<(&'static str, Frame)> {
    let token = sample_token();
    let message = sample_message();
    let reply = Message {
        id: MessageId(43),
        from: "bob".into(),
        to: "alice".into(),
        text: "héllo, ✓ ünïcode\nsecond line".into(),
        sent_at: 1_700_000_000_500,
        status: ReceiptStatus::Read,
    };
    let request = |id, request| Frame::Request { id, request };
    let response = |id, response| Frame::Response { id, response };
    vec![
        ("ping", request(7, Request::Ping)),
        (
            "create_account",
            request(
                1,
                Request::CreateAccount {
                    username: "alice".into(),
                    display_name: "Alice Ångström".into(),
                    password: "correct horse".into(),
                },
            ),
        ),
        (
            "login",
            request(
                2,
                Request::Login {
                    username: "alice".into(),
                    password: "correct horse".into(),
                },
            ),
        ),
        ("logout", request(3, Request::Logout { token })),
        (
            "delete_account",
            request(
                4,
                Request::DeleteAccount {
                    token,
                    password: "correct horse".into(),
                    force: true,
                },
            ),
        ),
        (
            "list_accounts_glob",
            request(
                5,
                Request::ListAccounts {
                    token,
                    pattern: "al*".into(),
                    syntax: PatternSyntax::Glob,
                    limit: None,
                    cursor: None,
                },
            ),
        ),
        (
            "list_accounts_regex",
            request(
                6,
                Request::ListAccounts {
                    token,
                    pattern: "^b.b$".into(),
                    syntax: PatternSyntax::Regex,
                    limit: Some(10),
                    cursor: Some("bob".into()),
                },
            ),
        ),
        (
            "send",
            request(
                8,
                Request::Send {
                    token,
                    to: "bob".into(),
                    text: "hi bob".into(),
                    client_id: 1,
                },
            ),
        ),
        (
            "fetch_unread",
            request(
                9,
                Request::FetchUnread {
                    token,
                    limit: Some(100),
                },
            ),
        ),
        (
            "mark_read",
            request(
                10,
                Request::MarkRead {
                    token,
                    ids: vec![MessageId(1), MessageId(2), MessageId(u64::MAX)],
                },
            ),
        ),
        (
            "history",
            request(
                11,
                Request::History {
                    token,
                    with: "bob".into(),
                    before: Some(MessageId(100)),
                    limit: Some(20),
                },
            ),
        ),
        (
            "history_newest",
            request(
                12,
                Request::History {
                    token,
                    with: "bob".into(),
                    before: None,
                    limit: None,
                },
            ),
        ),
        (
            "delete_messages",
            request(13, Request::DeleteMessages { token, ids: vec![] }),
        ),
        (
            "subscribe",
            request(
                14,
                Request::Subscribe {
                    token,
                    from: SubscribeFrom::Now,
                },
            ),
        ),
        (
            "subscribe_after",
            request(
                15,
                Request::Subscribe {
                    token,
                    from: SubscribeFrom::After(MessageId(41)),
                },
            ),
        ),
        (
            "subscribe_oldest_unread",
            request(
                16,
                Request::Subscribe {
                    token,
                    from: SubscribeFrom::OldestUnread,
                },
            ),
        ),
        ("pong", response(7, Response::Pong)),
        (
            "account_created",
            response(
                1,
                Response::AccountCreated {
                    username: "alice".into(),
                },
            ),
        ),
        (
            "logged_in",
            response(
                2,
                Response::LoggedIn {
                    token,
                    username: "alice".into(),
                    unread: 3,
                },
            ),
        ),
        ("logged_out", response(3, Response::LoggedOut)),
        ("account_deleted", response(4, Response::AccountDeleted)),
        (
            "accounts",
            response(
                6,
                Response::Accounts(AccountsPage {
                    rows: vec![
                        AccountRow {
                            username: "alice".into(),
                            display_name: "Alice Ångström".into(),
                            online: true,
                        },
                        AccountRow {
                            username: "bob".into(),
                            display_name: String::new(),
                            online: false,
                        },
                    ],
                    next_cursor: Some("bob".into()),
                }),
            ),
        ),
        (
            "accounts_empty",
            response(5, Response::Accounts(AccountsPage::default())),
        ),
        (
            "sent",
            response(
                8,
                Response::Sent {
                    message: message.clone(),
                    duplicate: false,
                },
            ),
        ),
        (
            "sent_duplicate",
            response(
                8,
                Response::Sent {
                    message: message.clone(),
                    duplicate: true,
                },
            ),
        ),
        (
            "messages",
            response(
                9,
                Response::Messages {
                    messages: vec![message.clone(), reply.clone()],
                },
            ),
        ),
        (
            "marked_read",
            response(10, Response::MarkedRead { count: 2 }),
        ),
        (
            "history_page",
            response(
                11,
                Response::History(HistoryPage {
                    messages: vec![message.clone(), reply],
                    next_before: Some(MessageId(42)),
                }),
            ),
        ),
        (
            "history_page_last",
            response(12, Response::History(HistoryPage::default())),
        ),
        (
            "messages_deleted",
            response(13, Response::MessagesDeleted { count: 0 }),
        ),
        (
            "subscribed",
            response(
                14,
                Response::Subscribed {
                    last_id: MessageId(42),
                },
            ),
        ),
        (
            "error_unread",
            Frame::Error {
                id: 4,
                error: ApiError::from(corvid_core::Rejection {
                    code: ErrorCode::UnreadMessages,
                    detail: 3,
                }),
            },
        ),
        (
            "error_connection",
            Frame::Error {
                id: 0,
                error: ApiError::from(ErrorCode::FrameTooLarge),
            },
        ),
        ("event_message", Frame::Event(Event::Message(message))),
        (
            "event_receipt",
            Frame::Event(Event::Receipt {
                id: MessageId(42),
                status: ReceiptStatus::Delivered,
            }),
        ),
        (
            "event_session_ended",
            Frame::Event(Event::SessionEnded {
                reason: EndReason::ReplacedByNewLogin,
            }),
        ),
    ]
}
