//! `WireCodec` under tokio-util's `FramedRead`/`FramedWrite`, on in-memory byte streams:
//! a malformed frame must not end the stream, a fatal one must.

use bytes::BytesMut;
use corvid_core::{Request, Response};
use corvid_wire::fuzzing::samples;
use corvid_wire::{encode, CodecError, DecodeError, Frame, WireCodec, DEFAULT_MAX_FRAME};
use futures::executor::block_on;
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{Decoder, FramedRead, FramedWrite};

fn ping(id: u32) -> Frame {
    Frame::Request {
        id,
        request: Request::Ping,
    }
}

fn bytes_of(frames: &[Frame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for frame in frames {
        encode(frame, &mut buf).unwrap();
    }
    buf.to_vec()
}

#[test]
fn framed_write_then_framed_read_gives_back_every_frame() {
    let frames: Vec<Frame> = samples().into_iter().map(|(_, frame)| frame).collect();
    let mut sink = FramedWrite::new(Vec::new(), WireCodec::default());
    block_on(async {
        for frame in &frames {
            sink.send(frame).await.unwrap();
        }
    });
    let written = sink.into_inner();
    assert_eq!(written, bytes_of(&frames));

    let stream = FramedRead::new(&written[..], WireCodec::default());
    let read: Vec<Frame> = block_on(stream.map(|item| item.unwrap().unwrap()).collect());
    assert_eq!(read, frames);
}

#[test]
fn a_malformed_frame_is_an_item_and_the_stream_goes_on() {
    let mut input = bytes_of(&[ping(1)]);
    // Opcode 0x40 is unassigned.
    input.extend_from_slice(&[0, 0, 0, 5, 0x40, 0, 0, 0, 2]);
    input.extend_from_slice(&bytes_of(&[ping(3)]));

    let mut stream = FramedRead::new(&input[..], WireCodec::default());
    block_on(async {
        assert_eq!(stream.next().await.unwrap().unwrap(), Ok(ping(1)));
        let malformed = stream.next().await.unwrap().unwrap().unwrap_err();
        assert_eq!((malformed.request_id, malformed.opcode), (2, 0x40));
        assert_eq!(stream.next().await.unwrap().unwrap(), Ok(ping(3)));
        assert!(stream.next().await.is_none());
    });
}

#[test]
fn an_oversized_frame_is_a_fatal_stream_error() {
    let mut input = bytes_of(&[ping(1)]);
    input.extend_from_slice(&[0, 0, 0x10, 0, 0x01, 0, 0, 0, 2]);
    let mut stream = FramedRead::new(&input[..], WireCodec::new(1024));
    block_on(async {
        assert_eq!(stream.next().await.unwrap().unwrap(), Ok(ping(1)));
        match stream.next().await {
            Some(Err(CodecError::Decode(err @ DecodeError::FrameTooLarge { .. }))) => {
                assert!(err.is_fatal());
                assert_eq!(
                    err,
                    DecodeError::FrameTooLarge {
                        len: 4096,
                        max: 1024
                    }
                );
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    });
}

#[test]
fn a_stream_that_ends_inside_a_frame_is_an_io_error() {
    let input = bytes_of(&[Frame::Response {
        id: 1,
        response: Response::Pong,
    }]);
    let mut stream = FramedRead::new(&input[..6], WireCodec::default());
    block_on(async {
        assert!(matches!(stream.next().await, Some(Err(CodecError::Io(_)))));
    });
}

#[test]
fn the_default_codec_accepts_one_mebibyte() {
    let mut codec = WireCodec::default();
    assert_eq!(codec.max_len(), DEFAULT_MAX_FRAME);
    assert_eq!(DEFAULT_MAX_FRAME, 1 << 20);
    let mut buf = BytesMut::from(&((1u32 << 20) + 1).to_be_bytes()[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::Decode(DecodeError::FrameTooLarge { .. }))
    ));
}
