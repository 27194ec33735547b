//! Round trips of every frame kind and both hellos, and the exact bytes of the examples
//! in docs/protocol.md, so that the specification and the code cannot drift apart.

use std::collections::BTreeSet;

use bytes::BytesMut;
use corvid_core::{
    ApiError, ErrorCode, Event, LeaderAddrs, Message, MessageId, ReceiptStatus, Request, Response,
    SubscribeFrom, Token,
};
use corvid_wire::fuzzing::{sample_message, sample_token, samples};
use corvid_wire::{
    decode, decode_version, encode, encode_version, opcode, ClientHello, DecodeError, Frame,
    HelloError, HelloStatus, ServerHello, DEFAULT_MAX_FRAME, MAGIC, VERSION,
};

fn encoded(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(frame, &mut buf).unwrap();
    buf
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses hex digits separated by whitespace; `#` starts a comment that runs to the end of
/// the line.
fn unhex(text: &str) -> Vec<u8> {
    text.lines()
        .flat_map(|line| line.split('#').next().unwrap_or("").split_whitespace())
        .map(|pair| u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex {pair:?}")))
        .collect()
}

#[test]
fn every_sample_round_trips_alone_and_pipelined() {
    let mut pipelined = BytesMut::new();
    for (name, frame) in samples() {
        let mut buf = encoded(&frame);
        assert_eq!(
            frame.opcode(),
            buf[4],
            "{name}: opcode byte follows the length"
        );
        assert_eq!(
            buf.len() - 4,
            u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize,
            "{name}: length prefix counts the bytes after it"
        );
        pipelined.extend_from_slice(&buf);
        let decoded = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decoded.as_ref(), Some(&frame), "{name}");
        assert!(buf.is_empty(), "{name}: the whole frame was consumed");
    }
    for (name, frame) in samples() {
        let decoded = decode(&mut pipelined, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decoded, Some(frame), "{name} in a pipelined buffer");
    }
    assert!(pipelined.is_empty());
    assert_eq!(decode(&mut pipelined, DEFAULT_MAX_FRAME), Ok(None));
}

#[test]
fn samples_cover_every_opcode_and_every_opcode_is_in_its_range() {
    let covered: BTreeSet<u8> = samples().iter().map(|(_, frame)| frame.opcode()).collect();
    let all: BTreeSet<u8> = opcode::ALL.into_iter().collect();
    assert_eq!(covered, all);
    for (name, frame) in samples() {
        let code = frame.opcode();
        let range_ok = match frame {
            Frame::Request { .. } => opcode::REQUESTS.contains(&code),
            Frame::Response { .. } => opcode::RESPONSES.contains(&code),
            Frame::Event(_) => opcode::EVENTS.contains(&code),
            Frame::Error { .. } => code == opcode::ERROR,
        };
        assert!(range_ok, "{name}: opcode {code:#04x} outside its range");
    }
}

#[test]
fn a_response_opcode_is_its_request_opcode_with_the_high_bit() {
    let pairs = [
        (opcode::PING, opcode::PONG),
        (opcode::CREATE_ACCOUNT, opcode::ACCOUNT_CREATED),
        (opcode::LOGIN, opcode::LOGGED_IN),
        (opcode::LOGOUT, opcode::LOGGED_OUT),
        (opcode::DELETE_ACCOUNT, opcode::ACCOUNT_DELETED),
        (opcode::LIST_ACCOUNTS, opcode::ACCOUNTS),
        (opcode::SEND, opcode::SENT),
        (opcode::FETCH_UNREAD, opcode::MESSAGES),
        (opcode::MARK_READ, opcode::MARKED_READ),
        (opcode::HISTORY, opcode::HISTORY_PAGE),
        (opcode::DELETE_MESSAGES, opcode::MESSAGES_DELETED),
        (opcode::SUBSCRIBE, opcode::SUBSCRIBED),
    ];
    for (request, response) in pairs {
        assert_eq!(request | 0x80, response);
    }
}

#[test]
fn every_error_code_round_trips_with_its_detail_and_message() {
    for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
        let frame = Frame::Error {
            id: i as u32,
            error: ApiError {
                code,
                detail: u64::MAX - i as u64,
                message: code.describe().to_string(),
                leader: None,
            },
        };
        let mut buf = encoded(&frame);
        assert_eq!(u16::from_be_bytes([buf[9], buf[10]]), code.as_u16());
        assert_eq!(decode(&mut buf, DEFAULT_MAX_FRAME), Ok(Some(frame)));
    }
}

#[test]
fn an_unknown_error_code_decodes_as_internal_and_keeps_its_message() {
    // Error frame, request 5, code 999, detail 7, message "from the future".
    let mut bytes = vec![0, 0, 0, 0, 0xff, 0, 0, 0, 5, 0x03, 0xe7];
    bytes.extend_from_slice(&7u64.to_be_bytes());
    bytes.extend_from_slice(&15u16.to_be_bytes());
    bytes.extend_from_slice(b"from the future");
    let len = (bytes.len() - 4) as u32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    let decoded = decode(&mut BytesMut::from(&bytes[..]), DEFAULT_MAX_FRAME);
    assert_eq!(
        decoded,
        Ok(Some(Frame::Error {
            id: 5,
            error: ApiError {
                code: ErrorCode::Internal,
                detail: 7,
                message: "from the future".into(),
                leader: None,
            },
        }))
    );
}

#[test]
fn every_receipt_status_and_end_reason_round_trips() {
    let statuses = [
        ReceiptStatus::Sent,
        ReceiptStatus::Delivered,
        ReceiptStatus::Read,
    ];
    let reasons = [
        corvid_core::EndReason::LoggedOut,
        corvid_core::EndReason::ReplacedByNewLogin,
        corvid_core::EndReason::AccountDeleted,
        corvid_core::EndReason::Expired,
    ];
    let mut frames: Vec<Frame> = statuses
        .into_iter()
        .flat_map(|status| {
            let message = Message {
                status,
                ..sample_message()
            };
            [
                Frame::Event(Event::Receipt {
                    id: MessageId(1),
                    status,
                }),
                Frame::Event(Event::Message(message)),
            ]
        })
        .collect();
    frames.extend(
        reasons
            .into_iter()
            .map(|reason| Frame::Event(Event::SessionEnded { reason })),
    );
    for frame in frames {
        let mut buf = encoded(&frame);
        assert_eq!(decode(&mut buf, DEFAULT_MAX_FRAME), Ok(Some(frame)));
    }
}

#[test]
fn hellos_round_trip_and_refuse_a_foreign_peer() {
    let client = ClientHello::CURRENT;
    assert_eq!(client.encode(), *b"CRVD\x00\x03\x00\x00");
    assert_eq!(ClientHello::decode(client.encode()), Ok(client));
    let future = ClientHello {
        version: 9,
        flags: 0xbeef,
    };
    assert_eq!(ClientHello::decode(future.encode()), Ok(future));

    let ok = ServerHello::answer(&client);
    assert_eq!(
        ok,
        ServerHello {
            version: VERSION,
            status: HelloStatus::Ok
        }
    );
    assert_eq!(ok.encode(), *b"CRVD\x00\x03\x00\x00");
    assert_eq!(ServerHello::decode(ok.encode()), Ok(ok));

    let refused = ServerHello::answer(&future);
    assert_eq!(refused.status, HelloStatus::UnsupportedVersion);
    assert_eq!(refused.encode(), *b"CRVD\x00\x03\x00\x01");
    assert_eq!(ServerHello::decode(refused.encode()), Ok(refused));

    assert_eq!(
        ClientHello::decode(*b"GET / HT"),
        Err(HelloError::BadMagic(*b"GET "))
    );
    assert_eq!(
        ServerHello::decode(*b"CRVD\x00\x01\x00\x07"),
        Err(HelloError::UnknownStatus(7))
    );
}

#[test]
fn a_version_1_client_is_still_served_in_version_1() {
    let old = ClientHello {
        version: 1,
        flags: 0,
    };
    assert_eq!(
        ServerHello::answer(&old),
        ServerHello {
            version: 1,
            status: HelloStatus::Ok
        }
    );
    assert_eq!(ServerHello::answer(&old).encode(), *b"CRVD\x00\x01\x00\x00");
    let too_old = ClientHello {
        version: 0,
        flags: 0,
    };
    assert_eq!(
        ServerHello::answer(&too_old).status,
        HelloStatus::UnsupportedVersion
    );
}

#[test]
fn version_1_subscribe_bytes_keep_their_meaning_and_oldest_unread_needs_version_2() {
    let token = Token([7; 16]);
    let subscribe = |from| Frame::Request {
        id: 5,
        request: Request::Subscribe { token, from },
    };
    for from in [SubscribeFrom::Now, SubscribeFrom::After(MessageId(9))] {
        let mut buf = encoded(&subscribe(from));
        assert_eq!(
            decode_version(&mut buf, DEFAULT_MAX_FRAME, 1),
            Ok(Some(subscribe(from)))
        );
    }
    let mut buf = encoded(&subscribe(SubscribeFrom::OldestUnread));
    let mut v2 = buf.clone();
    match decode_version(&mut buf, DEFAULT_MAX_FRAME, 1) {
        Err(DecodeError::Malformed(malformed)) => assert_eq!(malformed.request_id, 5),
        other => panic!("a version-1 connection cannot subscribe from unread: {other:?}"),
    }
    assert!(buf.is_empty(), "the frame was consumed");
    assert_eq!(
        decode_version(&mut v2, DEFAULT_MAX_FRAME, 2),
        Ok(Some(subscribe(SubscribeFrom::OldestUnread)))
    );
}

fn not_leader(wire: Option<&str>) -> Frame {
    Frame::Error {
        id: 9,
        error: ApiError::not_leader(wire.map(|wire| LeaderAddrs {
            wire: Some(wire.into()),
            grpc: None,
        })),
    }
}

fn encoded_in(frame: &Frame, version: u16) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_version(frame, &mut buf, version).unwrap();
    buf
}

#[test]
fn not_leader_names_the_leader_from_version_3_and_older_versions_keep_their_bytes() {
    // Versions 1 and 2: the error frame as it always was, whatever the server knows.
    let older = unhex(
        "00 00 00 2e ff 00 00 00 09 00 28 00 00 00 00 00 00 00 00 \
         00 1d 74 68 69 73 20 73 65 72 76 65 72 20 69 73 20 6e 6f 74 20 74 68 65 20 6c 65 61 64 65 72",
    );
    for version in [1, 2] {
        let mut buf = encoded_in(&not_leader(Some("10.0.0.2:7070")), version);
        assert_eq!(hex(&buf), hex(&older), "version {version}");
        assert_eq!(
            decode_version(&mut buf, DEFAULT_MAX_FRAME, version),
            Ok(Some(not_leader(None)))
        );
    }
    // Version 3: followed by the leader's address, empty when unknown.
    let mut named = encoded_in(&not_leader(Some("10.0.0.2:7070")), 3);
    assert_eq!(
        hex(&named[older.len()..]),
        "00 0d 31 30 2e 30 2e 30 2e 32 3a 37 30 37 30"
    );
    let mut unknown = encoded_in(&not_leader(None), 3);
    assert_eq!(hex(&unknown[older.len()..]), "00 00");
    let mut in_v2 = named.clone();
    assert_eq!(
        decode_version(&mut named, DEFAULT_MAX_FRAME, 3),
        Ok(Some(not_leader(Some("10.0.0.2:7070"))))
    );
    assert_eq!(
        decode_version(&mut unknown, DEFAULT_MAX_FRAME, 3),
        Ok(Some(not_leader(None)))
    );
    // Each version reads only its own bytes: the address is trailing bytes in version 2,
    // and a version-2 frame is cut short in version 3.
    assert!(matches!(
        decode_version(&mut in_v2, DEFAULT_MAX_FRAME, 2),
        Err(DecodeError::Malformed(_))
    ));
    let mut short = BytesMut::from(&older[..]);
    assert!(matches!(
        decode_version(&mut short, DEFAULT_MAX_FRAME, 3),
        Err(DecodeError::Malformed(_))
    ));
    // Other errors are the same in every version.
    let other = Frame::Error {
        id: 9,
        error: ApiError::from(ErrorCode::Unavailable),
    };
    assert_eq!(encoded_in(&other, 2), encoded_in(&other, 3));
}

/// The frames of the worked examples in docs/protocol.md, with their exact bytes.
fn golden() -> Vec<(&'static str, Frame, &'static str)> {
    let token = sample_token();
    let message = sample_message();
    vec![
        (
            "ping",
            Frame::Request {
                id: 7,
                request: Request::Ping,
            },
            "00 00 00 05 01 00 00 00 07",
        ),
        (
            "pong",
            Frame::Response {
                id: 7,
                response: Response::Pong,
            },
            "00 00 00 05 81 00 00 00 07",
        ),
        (
            "login",
            Frame::Request {
                id: 1,
                request: Request::Login {
                    username: "alice".into(),
                    password: "correct horse".into(),
                },
            },
            "00 00 00 1b 03 00 00 00 01 \
             00 05 61 6c 69 63 65 \
             00 0d 63 6f 72 72 65 63 74 20 68 6f 72 73 65",
        ),
        (
            "logged_in",
            Frame::Response {
                id: 1,
                response: Response::LoggedIn {
                    token,
                    username: "alice".into(),
                    unread: 0,
                },
            },
            "00 00 00 24 83 00 00 00 01 \
             00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f \
             00 05 61 6c 69 63 65 \
             00 00 00 00 00 00 00 00",
        ),
        (
            "subscribe",
            Frame::Request {
                id: 2,
                request: Request::Subscribe {
                    token,
                    from: SubscribeFrom::Now,
                },
            },
            "00 00 00 16 0c 00 00 00 02 \
             00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f \
             00",
        ),
        (
            "subscribe_after",
            Frame::Request {
                id: 2,
                request: Request::Subscribe {
                    token,
                    from: SubscribeFrom::After(MessageId(41)),
                },
            },
            "00 00 00 1e 0c 00 00 00 02 \
             00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f \
             01 00 00 00 00 00 00 00 29",
        ),
        (
            "subscribe_oldest_unread",
            Frame::Request {
                id: 2,
                request: Request::Subscribe {
                    token,
                    from: SubscribeFrom::OldestUnread,
                },
            },
            "00 00 00 16 0c 00 00 00 02 \
             00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f \
             02",
        ),
        (
            "subscribed",
            Frame::Response {
                id: 2,
                response: Response::Subscribed {
                    last_id: MessageId(41),
                },
            },
            "00 00 00 0d 8c 00 00 00 02 00 00 00 00 00 00 00 29",
        ),
        (
            "send",
            Frame::Request {
                id: 3,
                request: Request::Send {
                    token,
                    to: "bob".into(),
                    client_id: 1,
                    text: "hi bob".into(),
                },
            },
            "00 00 00 2c 07 00 00 00 03 \
             00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f \
             00 03 62 6f 62 \
             00 00 00 00 00 00 00 01 \
             00 00 00 06 68 69 20 62 6f 62",
        ),
        (
            "sent",
            Frame::Response {
                id: 3,
                response: Response::Sent {
                    duplicate: false,
                    message: message.clone(),
                },
            },
            "00 00 00 2d 87 00 00 00 03 \
             00 \
             00 00 00 00 00 00 00 2a \
             00 00 01 8b cf e5 68 00 \
             00 \
             00 05 61 6c 69 63 65 \
             00 03 62 6f 62 \
             00 00 00 06 68 69 20 62 6f 62",
        ),
        (
            "send_unknown_recipient",
            Frame::Error {
                id: 4,
                error: ApiError::from(ErrorCode::UnknownRecipient),
            },
            "00 00 00 22 ff 00 00 00 04 \
             00 14 \
             00 00 00 00 00 00 00 00 \
             00 11 6e 6f 20 73 75 63 68 20 72 65 63 69 70 69 65 6e 74",
        ),
        (
            "not_leader",
            not_leader(Some("10.0.0.2:7070")),
            "00 00 00 3d ff 00 00 00 09 \
             00 28 \
             00 00 00 00 00 00 00 00 \
             00 1d 74 68 69 73 20 73 65 72 76 65 72 20 69 73 20 6e 6f 74 20 74 68 65 20 6c 65 61 64 65 72 \
             00 0d 31 30 2e 30 2e 30 2e 32 3a 37 30 37 30",
        ),
        (
            "event_receipt",
            Frame::Event(Event::Receipt {
                id: MessageId(42),
                status: ReceiptStatus::Delivered,
            }),
            "00 00 00 0e c2 00 00 00 00 00 00 00 00 00 00 00 2a 01",
        ),
        (
            "event_message",
            Frame::Event(Event::Message(Message {
                id: MessageId(43),
                from: "bob".into(),
                to: "alice".into(),
                text: "hi alice".into(),
                sent_at: 1_700_000_001_000,
                status: ReceiptStatus::Sent,
            })),
            "00 00 00 2e c1 00 00 00 00 \
             00 00 00 00 00 00 00 2b \
             00 00 01 8b cf e5 6b e8 \
             00 \
             00 03 62 6f 62 \
             00 05 61 6c 69 63 65 \
             00 00 00 08 68 69 20 61 6c 69 63 65",
        ),
    ]
}

#[test]
fn golden_frames_have_exactly_these_bytes() {
    for (name, frame, expected) in golden() {
        let expected = unhex(expected);
        let mut buf = encoded(&frame);
        assert_eq!(hex(&buf), hex(&expected), "{name}: encoding");
        assert_eq!(
            decode(&mut buf, DEFAULT_MAX_FRAME),
            Ok(Some(frame)),
            "{name}: decoding"
        );
    }
}

/// The byte sequences of the ```hex blocks in docs/protocol.md.
fn doc_hex_blocks() -> Vec<Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim()) {
            (None, "```hex") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(unhex(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unterminated ```hex block");
    blocks
}

#[test]
fn the_protocol_document_shows_the_golden_bytes_and_only_valid_ones() {
    let blocks = doc_hex_blocks();
    for (name, _, expected) in golden() {
        let expected = unhex(expected);
        assert!(
            blocks.contains(&expected),
            "docs/protocol.md has no ```hex block for {name}: {}",
            hex(&expected)
        );
    }
    for block in &blocks {
        if block.starts_with(&MAGIC) {
            let hello: [u8; 8] = block[..]
                .try_into()
                .unwrap_or_else(|_| panic!("a hello is 8 bytes: {}", hex(block)));
            assert!(
                ClientHello::decode(hello).is_ok() && ServerHello::decode(hello).is_ok(),
                "{}",
                hex(block)
            );
            continue;
        }
        let mut buf = BytesMut::from(&block[..]);
        let frame = decode(&mut buf, DEFAULT_MAX_FRAME);
        assert!(
            matches!(frame, Ok(Some(_))) && buf.is_empty(),
            "a ```hex block in docs/protocol.md is not exactly one frame: {} ({frame:?})",
            hex(block)
        );
        assert_eq!(encoded(&frame.unwrap().unwrap())[..], block[..]);
    }
}
