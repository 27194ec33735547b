//! Codec microbenchmarks: encode and decode of every frame kind (the samples the tests use,
//! one per opcode), plus the frames of the hot path at a realistic size: a `Send` with 64
//! bytes of text, its `Sent` answer, the pushed `Message` event, and a page of 100 messages.
//!
//! Run with `cargo bench -p corvid-wire --bench codec`; criterion prints the time per frame
//! and keeps its reports under target/criterion.

use bytes::BytesMut;
use corvid_core::{Event, Message, MessageId, ReceiptStatus, Request, Response, Token};
use corvid_wire::fuzzing::samples;
use corvid_wire::{decode, encode, Frame, DEFAULT_MAX_FRAME};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

fn hot_path_frames() -> Vec<(&'static str, Frame)> {
    let text = "x".repeat(64);
    let message = Message {
        id: MessageId(1_234_567),
        from: "alice_the_sender".into(),
        to: "bob_the_recipient".into(),
        text: text.clone(),
        sent_at: 1_700_000_000_000,
        status: ReceiptStatus::Sent,
    };
    vec![
        (
            "hot/send_64b",
            Frame::Request {
                id: 9,
                request: Request::Send {
                    token: Token([7; 16]),
                    to: "bob_the_recipient".into(),
                    text,
                    client_id: 42,
                },
            },
        ),
        (
            "hot/sent_64b",
            Frame::Response {
                id: 9,
                response: Response::Sent {
                    message: message.clone(),
                    duplicate: false,
                },
            },
        ),
        (
            "hot/event_message_64b",
            Frame::Event(Event::Message(message.clone())),
        ),
        (
            "hot/messages_page_100",
            Frame::Response {
                id: 10,
                response: Response::Messages {
                    messages: vec![message; 100],
                },
            },
        ),
    ]
}

fn encoded(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(frame, &mut buf).expect("samples encode");
    buf
}

fn codec(c: &mut Criterion) {
    let frames: Vec<_> = samples().into_iter().chain(hot_path_frames()).collect();
    let mut group = c.benchmark_group("encode");
    for (name, frame) in &frames {
        group.throughput(Throughput::Bytes(encoded(frame).len() as u64));
        let mut buf = BytesMut::with_capacity(64 * 1024);
        group.bench_function(*name, |b| {
            b.iter(|| {
                buf.clear();
                encode(black_box(frame), &mut buf).expect("samples encode");
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode");
    for (name, frame) in &frames {
        let bytes = encoded(frame);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(*name, |b| {
            b.iter_batched_ref(
                || bytes.clone(),
                |buf| decode(black_box(buf), DEFAULT_MAX_FRAME),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
