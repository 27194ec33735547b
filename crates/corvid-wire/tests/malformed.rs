//! Hostile and broken input: incomplete frames, bad lengths, invalid bodies, and values
//! too large to encode. Each case says what the decoder must do, not just that it survives.

use bytes::BytesMut;
use corvid_core::{ErrorCode, MessageId, Request};
use corvid_wire::fuzzing::samples;
use corvid_wire::{decode, encode, DecodeError, EncodeError, Frame, Malformed, DEFAULT_MAX_FRAME};

/// Builds a frame from an opcode, a request id and a body, with a correct length prefix.
fn frame(opcode: u8, request_id: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = ((body.len() + 5) as u32).to_be_bytes().to_vec();
    bytes.push(opcode);
    bytes.extend_from_slice(&request_id.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

const TOKEN: [u8; 16] = [0xaa; 16];

fn ping(id: u32) -> Frame {
    Frame::Request {
        id,
        request: Request::Ping,
    }
}

fn malformed_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let with_token = |rest: &[u8]| [&TOKEN[..], rest].concat();
    vec![
        ("opcode zero", frame(0x00, 11, b""), "unknown opcode 0x00"),
        (
            "gap between ranges",
            frame(0x40, 12, b""),
            "unknown opcode 0x40",
        ),
        (
            "unknown request",
            frame(0x3f, 13, b""),
            "unknown opcode 0x3f",
        ),
        (
            "unknown response",
            frame(0x8d, 14, b""),
            "unknown opcode 0x8d",
        ),
        ("unknown event", frame(0xc0, 0, b""), "unknown opcode 0xc0"),
        (
            "bad utf-8",
            frame(0x03, 15, b"\x00\x02\xff\xfe\x00\x08password"),
            "`username` is not valid UTF-8",
        ),
        (
            "bool 2",
            frame(0x05, 16, &with_token(b"\x00\x08password\x02")),
            "`force` is a bool but holds 2",
        ),
        (
            "opt tag 2",
            frame(0x08, 17, &with_token(b"\x02\x00\x00\x00\x01")),
            "`limit` is an optional value but its tag is 2",
        ),
        (
            "trailing bytes",
            frame(0x01, 18, b"\x00"),
            "1 byte(s) after the last field",
        ),
        (
            "str longer than the frame",
            frame(0x03, 19, b"\x00\x0aabc"),
            "`username` needs 10 byte(s) but only 3 remain",
        ),
        (
            "text length near 4 GiB",
            frame(
                0x07,
                20,
                &with_token(b"\x00\x03bob\x00\x00\x00\x00\x00\x00\x00\x01\xff\xff\xff\xffhi"),
            ),
            "`text` needs 4294967295 byte(s) but only 2 remain",
        ),
        (
            "list count larger than the bytes left",
            frame(
                0x09,
                21,
                &with_token(b"\xff\xff\x00\x00\x00\x00\x00\x00\x00\x01"),
            ),
            "`ids` counts 65535 item(s) but only 8 byte(s) remain",
        ),
        (
            "message list count larger than the bytes left",
            frame(0x88, 22, b"\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01"),
            "`messages` counts 2 item(s) but only 8 byte(s) remain",
        ),
        (
            "missing field",
            frame(0x04, 23, &TOKEN[..10]),
            "`token` needs 16 byte(s) but only 10 remain",
        ),
        (
            "pattern syntax 2",
            frame(0x06, 24, &with_token(b"\x00\x01*\x02\x00\x00")),
            "`syntax` holds 2",
        ),
        (
            "receipt status 3",
            frame(0xc2, 0, b"\x00\x00\x00\x00\x00\x00\x00\x01\x03"),
            "`status` holds 3",
        ),
        ("end reason 9", frame(0xc3, 0, b"\x09"), "`reason` holds 9"),
        (
            "event with a request id",
            frame(0xc3, 25, b"\x00"),
            "a request id of 25 where an event must carry 0",
        ),
        (
            "truncated error frame",
            frame(0xff, 26, b"\x00\x01\x00"),
            "`detail` needs 8 byte(s)",
        ),
        (
            "request with id 0",
            frame(0x01, 0, b""),
            "request id 0 is reserved",
        ),
        (
            "response with id 0",
            frame(0x81, 0, b""),
            "request id 0 is reserved",
        ),
        (
            "subscribe start 3",
            frame(0x0c, 27, &with_token(b"\x03")),
            "`from` holds 3",
        ),
    ]
}

#[test]
fn malformed_frames_are_consumed_and_the_next_frame_still_decodes() {
    for (name, bytes, reason) in malformed_cases() {
        let mut buf = BytesMut::from(&bytes[..]);
        encode(&ping(99), &mut buf).unwrap();
        let request_id = u32::from_be_bytes(bytes[5..9].try_into().unwrap());
        match decode(&mut buf, DEFAULT_MAX_FRAME) {
            Err(DecodeError::Malformed(Malformed {
                request_id: got_id,
                opcode,
                reason: got_reason,
            })) => {
                assert_eq!(got_id, request_id, "{name}: request id");
                assert_eq!(opcode, bytes[4], "{name}: opcode");
                assert!(
                    got_reason.contains(reason),
                    "{name}: reason {got_reason:?} does not contain {reason:?}"
                );
            }
            other => panic!("{name}: expected a malformed frame, got {other:?}"),
        }
        assert_eq!(
            decode(&mut buf, DEFAULT_MAX_FRAME),
            Ok(Some(ping(99))),
            "{name}: the next frame"
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn a_malformed_frame_is_answered_with_its_request_id_and_the_connection_goes_on() {
    let mut buf = BytesMut::from(&frame(0x40, 12, b"")[..]);
    let err = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap_err();
    assert!(!err.is_fatal());
    assert_eq!(err.code(), ErrorCode::Malformed);
    assert_eq!(err.request_id(), 12);
    match err.error_frame() {
        Frame::Error { id: 12, error } => {
            assert_eq!(error.code, ErrorCode::Malformed);
            assert!(
                error.message.contains("unknown opcode 0x40"),
                "{}",
                error.message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_strict_prefix_of_a_frame_is_incomplete_and_consumes_nothing() {
    for (name, frame) in samples() {
        let mut whole = BytesMut::new();
        encode(&frame, &mut whole).unwrap();
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(
                decode(&mut buf, DEFAULT_MAX_FRAME),
                Ok(None),
                "{name} cut at {cut}"
            );
            assert_eq!(
                buf[..],
                whole[..cut],
                "{name} cut at {cut}: nothing consumed"
            );
        }
    }
}

#[test]
fn a_length_over_the_limit_is_fatal_as_soon_as_the_prefix_arrives_and_allocates_nothing() {
    for (len, max) in [(u32::MAX, DEFAULT_MAX_FRAME), (1001, 1000), (6, 5)] {
        let prefix = len.to_be_bytes();
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&prefix);
        let capacity = buf.capacity();
        let err = decode(&mut buf, max).unwrap_err();
        assert_eq!(
            err,
            DecodeError::FrameTooLarge {
                len: len as usize,
                max
            }
        );
        assert!(err.is_fatal());
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
        assert_eq!(buf.capacity(), capacity, "the buffer did not grow");
        assert_eq!(buf[..], prefix, "nothing was consumed");
        assert!(matches!(
            err.error_frame(),
            Frame::Error { id: 0, error } if error.code == ErrorCode::FrameTooLarge
        ));
    }
}

#[test]
fn a_length_at_the_limit_is_accepted() {
    let mut buf = BytesMut::from(&frame(0x01, 1, b"")[..]);
    assert_eq!(decode(&mut buf, 5), Ok(Some(ping(1))));
    // A frame exactly at the limit that has not fully arrived waits for the rest.
    let mut buf = BytesMut::from(&1000u32.to_be_bytes()[..]);
    assert_eq!(decode(&mut buf, 1000), Ok(None));
    assert_eq!(buf.len(), 4);
}

#[test]
fn a_length_under_five_is_fatal() {
    for len in 0..5u32 {
        let mut buf = BytesMut::from(&frame(0x01, 1, b"")[..]);
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let err = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap_err();
        assert_eq!(err, DecodeError::FrameTooShort { len: len as usize });
        assert!(err.is_fatal());
        assert_eq!(err.code(), ErrorCode::Malformed);
        assert_eq!(err.request_id(), 0);
        assert_eq!(buf.len(), 9, "nothing was consumed");
    }
}

#[test]
fn values_too_long_for_their_prefix_are_refused_and_leave_the_buffer_as_it_was() {
    let token = corvid_wire::fuzzing::sample_token();
    let cases = [
        (
            Frame::Request {
                id: 1,
                request: Request::Login {
                    username: "u".repeat(65_536),
                    password: "password".into(),
                },
            },
            EncodeError::TooLong {
                field: "username",
                len: 65_536,
                max: 65_535,
            },
        ),
        (
            Frame::Request {
                id: 2,
                request: Request::MarkRead {
                    token,
                    ids: vec![MessageId(1); 65_536],
                },
            },
            EncodeError::TooLong {
                field: "ids",
                len: 65_536,
                max: 65_535,
            },
        ),
    ];
    for (frame, expected) in cases {
        let mut buf = BytesMut::new();
        encode(&ping(5), &mut buf).unwrap();
        let before = buf.clone();
        assert_eq!(encode(&frame, &mut buf), Err(expected));
        assert_eq!(buf, before);
    }
    // The largest encodable values still round-trip.
    let frame = Frame::Request {
        id: 3,
        request: Request::MarkRead {
            token,
            ids: vec![MessageId(7); 65_535],
        },
    };
    let mut buf = BytesMut::new();
    encode(&frame, &mut buf).unwrap();
    assert_eq!(decode(&mut buf, DEFAULT_MAX_FRAME), Ok(Some(frame)));
}

#[test]
fn a_server_refuses_frames_that_only_servers_send() {
    assert_eq!(ping(3).into_request(), Ok((3, Request::Ping)));
    for (name, frame) in samples() {
        if matches!(frame, Frame::Request { .. }) {
            continue;
        }
        let malformed = frame.clone().into_request().unwrap_err();
        assert_eq!(malformed.request_id, frame.request_id(), "{name}");
        assert_eq!(malformed.opcode, frame.opcode(), "{name}");
    }
}
